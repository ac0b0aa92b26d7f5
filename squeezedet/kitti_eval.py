"""KITTI 2D object-detection evaluation, exact to the official devkit's `evaluate_object.cpp`.

The protocol (reference/models.md 4.4; Geiger et al., CVPR 2012, and the devkit source):

- Three difficulty levels filter the ground truth by box height, occlusion and truncation
  (Easy 40 px / 0 / 0.15, Moderate 25 px / 1 / 0.30, Hard 25 px / 2 / 0.50). Ground truth that fails
  them is *ignored*, not removed: a detection matched to it is neither a TP nor an FP.
- Neighbouring classes are ignored the same way: Van for Car, Person_sitting for Pedestrian.
- A detection matches when its IoU is *strictly greater* than 0.7 (Car) or 0.5 (Pedestrian, Cyclist).
- An unmatched detection is not a false positive when intersection / detection area with a DontCare
  region is strictly greater than the same threshold.
- Two passes: the first matches each ground truth to the highest-scored candidate and collects the
  scores of the true positives; 41 of them are chosen as thresholds, one per recall step of 1/40. The
  second pass matches again at every threshold (now the candidate of largest overlap) and counts
  TP / FP / FN and the orientation similarity (1 + cos(alpha_gt - alpha_det)) / 2 of each TP.
- Precision and orientation similarity are made monotone (max over higher recalls). AP11 is their mean
  at indices 0, 4, ..., 40 (recall 0, 0.1, ..., 1; the metric of the squeezeDet paper); AP40 the mean at
  indices 1..40 (recall 1/40 .. 1; KITTI's server since October 2019). AOS uses the same indices.

Two devkit variants are supported, chosen by `ignore_short_detections`:

- True (the default) is the official devkit_object (2017 and later): a detection shorter than
  MIN_HEIGHT (|y2 - y1| < 40/25/25 px) is ignored, and ground truth counts only when *taller* than
  MIN_HEIGHT (height <= MIN_HEIGHT is ignored). As in that devkit, a short detection of *any* class
  (not only the evaluated one) may absorb a ground truth box, which then counts as neither TP nor FN.
- False is the copy in squeezeDet (src/dataset/kitti-eval/cpp): detections are never ignored for
  their height (a tiny detection is a false positive in Easy), and ground truth counts when at least
  MIN_HEIGHT tall (height < MIN_HEIGHT is ignored). Use it to reproduce the squeezeDet paper's numbers.

Everything else, including the tie rules (first detection wins on equal scores or overlaps), the
sequence of floating-point operations, and the NaN that the devkit produces when every detection above
a threshold is ignored (0 / 0 precision; the devkit's max filter then keeps that NaN), is reproduced.
The devkit evaluates a class only when it was detected at least once; here every requested class is
evaluated and one without detections scores 0. Note a property of the devkit that matters on small sets:
with fewer than 41 counted ground-truth boxes it takes one threshold per TP, so the curve stops short of
index 40 and even perfect detections score below 1 (10 boxes, all found: AP11 = 3/11, AP40 = 9/40);
`KittiEvalResult.few_gt_warnings` says so wherever it applies.

How it is computed, and why without numba. The devkit's greedy matching walks the ground truth of a frame in
order, and each box may only take a detection whose IoU with it exceeds the threshold. So the matching splits
into independent *groups*: the connected components of the graph whose edges are those (ground truth,
detection) pairs. Nearly all groups are one box and one or two detections, and detections in no group can only
be false positives (counted per threshold from their sorted scores). The groups are padded into a few
fixed-size blocks and the greedy loop runs over the ground-truth rank inside a group, vectorised with numpy over
all groups and all 41 thresholds at once. With numpy alone the whole `squeeze det eval --results` command on a
3,769-frame split (7,538 files, 30 detections a frame) took 0.50 s and 113 MB where the devkit built with g++ -O2
took 0.70 s (bench/bench_det_eval_cli.py); importing numba and loading its cached kernels alone costs 0.6 s and
140 MB. The results equal those of the earlier numba kernels bit for bit (AOS included) on thousands of random
scenes with ties and overlaps. Label and result files are read in a few large blocks and parsed with numpy; a
file the fast reader cannot take (a missing label, odd characters, a bad number) is read again by
`squeeze.kitti.read_labels`, which raises the error that names the file and line.

AP values are fractions in [0, 1]; `format_table` prints percent.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeeze.errors import DataError, LabelError
from squeeze.kitti import ObjectLabels, check_frame_id, read_labels

log = logging.getLogger(__name__)

DIFFICULTIES = ("Easy", "Moderate", "Hard")
MIN_HEIGHT = (40, 25, 25)  # px, minimum 2D box height per difficulty (ground truth; detections in the official devkit)
MAX_OCCLUSION = (0, 1, 2)  # largest occlusion level of ground truth per difficulty
MAX_TRUNCATION = (0.15, 0.30, 0.50)  # largest truncation of ground truth per difficulty
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}  # IoU must be strictly greater
NEIGHBOUR_CLASS = {"Car": "Van", "Pedestrian": "Person_sitting"}  # ground truth of these types is ignored
N_SAMPLE_PTS = 41  # recall sample points 0, 1/40, ..., 1
AP11_INDICES = np.arange(0, N_SAMPLE_PTS, 4)  # recall 0, 0.1, ..., 1
AP40_INDICES = np.arange(1, N_SAMPLE_PTS)  # recall 1/40, ..., 1
RECALL_POINTS = np.linspace(0.0, 1.0, N_SAMPLE_PTS)  # (41,) the recall at which each curve entry is plotted
_NO_DETECTION = -10000000.0  # the devkit's "no candidate yet" score


# --------------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class KittiEvalResult:
    """The devkit's numbers for each class and difficulty.

    AP values are fractions in [0, 1]; NaN only where the devkit itself yields NaN (see the module doc).
    Curves are (3, 41) float64 arrays, rows Easy / Moderate / Hard, entry i at recall i / 40:

    precision:   monotone precision, 0 past the last threshold (the devkit's plot data).
    orientation: monotone orientation similarity (the AOS curve), same layout; None without AOS.
    recall:      recall actually reached at the i-th score threshold; NaN past the last threshold.
    thresholds:  the score thresholds chosen by the first pass; NaN past the last one.
    """

    classes: tuple[str, ...]
    ap11: dict[str, dict[str, float]]
    ap40: dict[str, dict[str, float]]
    aos11: dict[str, dict[str, float]] | None  # None when AOS is off or some detection has alpha == -10
    aos40: dict[str, dict[str, float]] | None
    precision: dict[str, np.ndarray]
    orientation: dict[str, np.ndarray] | None
    recall: dict[str, np.ndarray]
    thresholds: dict[str, np.ndarray]
    num_gt: dict[str, tuple[int, int, int]]  # non-ignored ground truth (recall denominator) per difficulty
    num_frames: int
    ignore_short_detections: bool  # True: official devkit; False: squeezeDet's copy

    @property
    def devkit(self) -> str:
        return "official" if self.ignore_short_detections else "squeezedet"

    def mean_ap(self, metric: str = "ap11") -> float:
        """Mean over classes and difficulties (squeezeDet's mAP is the 11-point one over 3 x 3 entries)."""
        table = getattr(self, metric)
        if table is None:
            raise ValueError(f"{metric} was not computed (AOS is off or a detection has alpha == -10)")
        return float(np.mean([table[c][d] for c in self.classes for d in DIFFICULTIES]))

    def few_gt_warnings(self) -> list[str]:
        """One line per class and difficulty whose AP rests on fewer than 41 counted ground-truth objects.

        With n < 41 the devkit takes one score threshold per true positive, so its 41-point curve stops at
        index n - 1: even perfect detections score AP11 = ceil(n / 4) / 11 and AP40 = (n - 1) / 40. Such an
        AP says more about n than about the detector. Empty when every entry has 41 or more.
        """
        out = []
        for c in self.classes:
            for d, name in enumerate(DIFFICULTIES):
                n = self.num_gt[c][d]
                if n == 0:
                    out.append(f"{c} {name}: no ground-truth object counts at this difficulty; its AP is 0 by "
                               f"convention, not a measurement")
                elif n < N_SAMPLE_PTS:
                    out.append(f"{c} {name}: only {n} ground-truth objects (fewer than {N_SAMPLE_PTS}): the devkit's "
                               f"41-point recall sampling dominates this AP; even perfect detections score AP11 "
                               f"{100 * math.ceil(n / 4) / 11:.2f} and AP40 {100 * (n - 1) / 40:.2f}")
        return out


# ------------------------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class _Columns:
    """The object rows of F frames concatenated; frame f owns rows off[f]:off[f + 1]."""

    off: np.ndarray  # (F + 1,) int64
    type: np.ndarray  # (N,) bytes, lower case (the devkit compares class names with strcasecmp)
    truncated: np.ndarray  # (N,) float64
    occluded: np.ndarray  # (N,) int64
    alpha: np.ndarray  # (N,) float64
    bbox: np.ndarray  # (N, 4) float64 left, top, right, bottom
    score: np.ndarray  # (N,) float64; zeros for ground truth

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.off)


def _check_frame(labels: object, what: str, index: int, need_score: bool) -> None:
    source = f"{what} of frame {index}"
    if not isinstance(labels, ObjectLabels):
        raise DataError(source, f"expected squeeze.kitti.ObjectLabels, got {type(labels).__name__}")
    n = len(labels)
    bbox = np.asarray(labels.bbox)
    if bbox.shape != (n, 4):
        raise DataError(source, f"bbox has shape {bbox.shape}, expected ({n}, 4)")
    if not np.all(np.isfinite(bbox)):
        raise DataError(source, "bbox holds NaN or infinite values")
    for name in ("truncated", "occluded", "alpha"):
        if np.shape(getattr(labels, name)) != (n,):
            raise DataError(source, f"{name} has shape {np.shape(getattr(labels, name))}, expected ({n},)")
    if need_score and n:
        if labels.score is None:
            raise DataError(source, f"{n} detections without scores (result files need a 16th field, the score)")
        score = np.asarray(labels.score, dtype=np.float64)
        if score.shape != (n,):
            raise DataError(source, f"score has shape {score.shape}, expected ({n},)")
        if not np.all(np.isfinite(score)):
            raise DataError(source, "score holds NaN or infinite values")


def _lower_bytes(types: np.ndarray) -> np.ndarray:
    """(N,) class names of any string dtype -> lower-case UTF-8 bytes (the devkit's strcasecmp)."""
    types = np.asarray(types)
    if types.size == 0:
        return np.zeros(0, "S1")
    if types.dtype.kind == "S":
        return np.char.lower(types)
    return np.char.encode(np.char.lower(types.astype(str)), "utf-8")


def _columns_from_labels(frames: Sequence[ObjectLabels], what: str, need_score: bool) -> _Columns:
    for i, labels in enumerate(frames):
        _check_frame(labels, what, i, need_score)
    counts = np.array([len(f) for f in frames], dtype=np.int64)

    def cat(parts, dtype, shape: tuple[int, ...] = ()) -> np.ndarray:
        return np.concatenate([np.zeros((0, *shape), dtype)] + [np.asarray(p, dtype).reshape(-1, *shape)
                                                                  for p in parts])

    return _Columns(
        off=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        type=_lower_bytes(np.concatenate([np.zeros(0, "U1")] + [np.asarray(f.type).astype(str) for f in frames])),
        truncated=cat([f.truncated for f in frames], np.float64),
        occluded=cat([f.occluded for f in frames], np.int64),
        alpha=cat([f.alpha for f in frames], np.float64),
        bbox=cat([f.bbox for f in frames], np.float64, (4,)),
        score=cat([f.score if need_score and len(f) else np.zeros(len(f)) for f in frames], np.float64))


# --------------------------------------------------------------------------------------------- file reading
class _SlowPath(Exception):
    """Input the vectorised reader leaves to `read_labels`, which reads it or raises the error naming file and line."""


_BLOCK_BYTES = 1 << 19  # files are parsed in blocks of about this size: numpy's temporaries stay in the CPU cache
_POW10 = 10.0 ** np.arange(23)  # exact in float64
_MAX_DIGITS = 15  # m / 10**k with m < 10**15 < 2**53 and k <= 22 is correctly rounded, exactly like float()


def _read_bytes(paths: Sequence[str], missing_ok: bool) -> list[bytes | None]:
    """The bytes of each regular file; None for a missing one when missing_ok. _SlowPath on anything else.

    Opened non-blocking and checked to be a regular file on the descriptor, so a FIFO never hangs the read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    out: list[bytes | None] = []
    for path in paths:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if not missing_ok:
                raise _SlowPath from None
            out.append(None)
            continue
        except OSError:
            raise _SlowPath from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _SlowPath
            data = os.read(fd, st.st_size + 1)
            if len(data) > st.st_size:  # the file grew since fstat: read the rest
                parts = [data]
                while chunk := os.read(fd, 1 << 20):
                    parts.append(chunk)
                data = b"".join(parts)
        except OSError:
            raise _SlowPath from None
        finally:
            os.close(fd)
        out.append(data)
    return out


_U64 = np.uint64
# Right-aligned 8-byte windows: the bytes of a token of length L are the top L of the little-endian uint64.
_LIVE = np.array([0] + [(0xFFFFFFFFFFFFFFFF << (8 * (8 - n))) & 0xFFFFFFFFFFFFFFFF for n in range(1, 9)], np.uint64)
_LOW = np.array([(1 << (8 * n)) - 1 for n in range(9)], np.uint64)  # the first n bytes of a left-aligned window


def _parse_short(data: bytes, e: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, plain) of tokens of 1 to 8 bytes ending at e, 8 bytes to a uint64, all tokens at once (SWAR).

    plain: the token is [+-]digits[.digits] with a digit; only those values are meaningful. The digits are read
    as one integer m (the point removed) and divided by 10**k (k digits after the point): m < 10**8, so the one
    division is correctly rounded and equals float(). data needs 8 bytes before the first token.
    """
    windows = np.ndarray(shape=(len(data) - 7,), dtype=np.uint64, buffer=data, strides=(1,))
    x = windows[e - 8]
    live = _LIVE[length]
    x &= live
    x |= _U64(0x3030303030303030) & ~live  # '0' to the left of the token
    b = x.view(np.uint8)
    d = b - np.uint8(48)
    isd = d < 10
    isp = b == 46
    n_point = np.bitwise_count(isp.view(np.uint64))
    n_other = np.bitwise_count((~(isd | isp)).view(np.uint64))
    first = (x >> (_U64(64) - (length.astype(np.uint64) << _U64(3)))) & _U64(0xFF)
    neg = first == 45
    plain = ((n_point <= 1) & ((n_other == 0) | ((n_other == 1) & (neg | (first == 43))))
             & (length > n_point + n_other))
    np.multiply(d, isd, out=d)  # digit values, 0 for the point and the sign
    y = d.view(np.uint64)
    point = isp.view(np.uint64)  # 1 << 8 * (column of the point), or 0
    # Close the point's gap: the bytes left of it (mask m; none without a point) move one column right.
    m = (point - _U64(1)) * (point != 0)
    y = ((y & m) << _U64(8)) | (y & ~m)
    k = ((point * _U64(0x0706050403020100)) >> _U64(56)).astype(np.intp)  # digits after the point: 7 - column
    # Eight digits (most significant in the lowest byte) to an integer: pairs, then quads, then all eight.
    y = y * _U64(10) + (y >> _U64(8))
    y = (((y & _U64(0x000000FF000000FF)) * _U64(100 + (1000000 << 32)))
         + (((y >> _U64(16)) & _U64(0x000000FF000000FF)) * _U64(1 + (10000 << 32)))) >> _U64(32)
    values = y.astype(np.float64)
    values /= _POW10[k]
    np.negative(values, out=values, where=neg)
    return values, plain


def _parse_long(a: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, plain) of longer tokens a[s:e], column by column: up to 15 digits, m / 10**k as in _parse_short."""
    n = s.size
    length = e - s
    width = min(int(length.max(initial=0)), _MAX_DIGITS + 2)
    m = np.zeros(n, np.int64)
    k = np.zeros(n, np.int64)
    ndig = np.zeros(n, np.int64)
    point = np.zeros(n, bool)
    plain = length <= width
    neg = np.zeros(n, bool)
    for c in range(width):
        live = length > c
        ch = a[np.minimum(s + c, a.size - 1)]
        digit = ch - np.uint8(48)
        isd = live & (digit < 10)
        m = np.where(isd, m * 10 + digit, m)
        ndig += isd
        k += isd & point
        isp = live & (ch == 46)
        plain &= ~(isp & point)
        point |= isp
        other = live & ~(isd | isp)
        if c == 0:
            neg = ch == 45
            other &= ~(neg | (ch == 43))
        plain &= ~other
    plain &= (ndig > 0) & (ndig <= _MAX_DIGITS)
    values = m / _POW10[np.minimum(k, 22)]
    return np.where(neg, -values, values), plain


def _parse_numbers(data: bytes, a: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(n,) float64 values of the tokens a[s:e], exactly as float() reads them; _SlowPath unless all are finite.

    Plain decimals ([+-]digits[.digits]) are read with integer arithmetic over all tokens at once; other
    spellings (exponents, more than 15 digits) go through float() one by one.
    """
    length = e - s
    short = length <= 8
    if short.all():
        values, plain = _parse_short(data, e, length)
    else:
        values, plain = np.empty(s.size), np.empty(s.size, bool)
        values[short], plain[short] = _parse_short(data, e[short], length[short])
        values[~short], plain[~short] = _parse_long(a, s[~short], e[~short])
    for i in np.flatnonzero(~plain):
        try:
            v = float(data[s[i]:e[i]])
        except ValueError:
            raise _SlowPath from None
        if not math.isfinite(v):
            raise _SlowPath
        values[i] = v
    return values


def _parse_block(data: bytes, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Label lines of several files joined into `data`: 8 spaces, then each file's text preceded by b"\\n", then
    b"\\n" and padding spaces.

    starts: (k + 1,) offset of each file's leading newline, then of the final newline. Returns per-file row
    counts (k,), per-file field counts (k,) (15 or 16; 0 for a file without rows), the class names (N,) as
    bytes in original case, and the numbers (N, 15) float64 (column 14, the score, NaN on 15-field lines).
    _SlowPath for anything `parse_labels` would refuse or might read differently.
    """
    a = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero((a == 10) | (a == 13))  # line ends: LF, CR
    # Printable ASCII, space, tab, LF and CR only; anything else (other control characters, non-ASCII text,
    # which may hold Unicode spaces) is left to parse_labels.
    if np.any(a > 126) or np.count_nonzero(a < 32) != breaks.size + np.count_nonzero(a == 9):
        raise _SlowPath
    token = a > 32
    # Tokens start and end where `token` changes; data starts with spaces and a newline and ends with spaces.
    change = np.flatnonzero(token[1:] != token[:-1]) + 1
    tok_start, tok_end = change[0::2], change[1::2]
    first = np.searchsorted(tok_start, breaks)  # the first token after each line end
    per_line = np.diff(first)
    nonblank = per_line > 0
    first, fields, line_pos = first[:-1][nonblank], per_line[nonblank], breaks[:-1][nonblank]
    if not np.all((fields == 15) | (fields == 16)):
        raise _SlowPath
    n_files = starts.size - 1
    file_of = np.searchsorted(starts, line_pos, side="right") - 1
    if np.any((file_of[1:] == file_of[:-1]) & (fields[1:] != fields[:-1])):
        raise _SlowPath  # lines of one file with 15 and 16 fields
    rows = np.bincount(file_of, minlength=n_files)
    n_fields = np.zeros(n_files, np.int64)
    n_fields[file_of] = fields
    is_type = np.zeros(tok_start.size, bool)
    is_type[first] = True
    values = _parse_numbers(data, a, tok_start[~is_type], tok_end[~is_type])
    # Line l has l type tokens before it, so its first number is token first[l] - l of `values`.
    index = (first - np.arange(first.size))[:, None] + np.arange(15)
    numbers = values[np.minimum(index, values.size - 1)]
    numbers[fields == 15, 14] = np.nan
    # Class names: at most 16 characters, as parse_labels keeps them ("<U16"); two 8-byte windows each.
    s, length = tok_start[first], tok_end[first] - tok_start[first]
    windows = np.ndarray(shape=(len(data) - 7,), dtype=np.uint64, buffer=data, strides=(1,))
    names = np.stack([windows[s] & _LOW[np.minimum(length, 8)], windows[s + 8] & _LOW[np.clip(length - 8, 0, 8)]],
                     axis=1)
    return rows, n_fields, names.view("S16").ravel(), numbers


def _parse_files(texts: list[bytes | None], need_score: bool) -> tuple[_Columns, np.ndarray]:
    """Columns of the files' label lines (None: a missing file, no rows) and each file's field count (0 if empty)."""
    counts, n_fields, names, numbers = [], [], [], []
    i = 0
    while i < len(texts):
        block, size = [], 0
        while i < len(texts) and (size < _BLOCK_BYTES or not block):
            block.append(texts[i] or b"")
            size += len(block[-1]) + 1
            i += 1
        lengths = np.array([len(t) + 1 for t in block], np.int64)
        starts = 8 + np.concatenate([[0], np.cumsum(lengths)])
        data = b"        \n" + b"\n".join(block) + b"\n" + b" " * (_MAX_DIGITS + 3)
        r, f, t, x = _parse_block(data, starts)
        counts.append(r)
        n_fields.append(f)
        names.append(t)
        numbers.append(x)
    counts_a = np.concatenate([np.zeros(0, np.int64)] + counts)
    fields_a = np.concatenate([np.zeros(0, np.int64)] + n_fields)
    names_a = np.concatenate([np.zeros(0, "S16")] + names)
    x = np.concatenate([np.zeros((0, 15))] + numbers)
    occluded = x[:, 1]
    if np.any(occluded != np.round(occluded)):
        raise _SlowPath  # "expected an integer"
    flipped = (x[:, 3] > x[:, 5]) | (x[:, 4] > x[:, 6])
    if np.any(flipped & (names_a != b"DontCare")):
        raise _SlowPath  # a box with left > right or top > bottom
    if need_score and np.any((fields_a == 15) & (counts_a > 0)):
        raise _SlowPath  # result lines without a score
    lower = names_a.view(np.uint8).copy()
    lower += np.uint8(32) * ((lower >= 65) & (lower <= 90))  # ASCII lower case (the fast path is ASCII only)
    cols = _Columns(off=np.concatenate([[0], np.cumsum(counts_a)]).astype(np.int64), type=lower.view("S16"),
                    truncated=x[:, 0], occluded=occluded.astype(np.int64), alpha=x[:, 2], bbox=x[:, 3:7],
                    score=x[:, 14] if need_score else np.zeros(len(x)))
    return cols, fields_a


def _read_slowly(gt_paths: list[Path], dt_paths: list[Path]) -> tuple[_Columns, _Columns, int]:
    """The per-file reader, in the devkit's order (frame by frame, ground truth first): the first fault raises."""
    gts, dts, found = [], [], 0
    for gt_path, dt_path in zip(gt_paths, dt_paths, strict=True):
        if not gt_path.exists():
            raise DataError(gt_path, "ground-truth label file not found")
        gts.append(read_labels(gt_path))
        if dt_path.exists():
            det = read_labels(dt_path)
            if len(det) and det.score is None:
                raise LabelError(dt_path, "result lines have 15 fields; a 16th, the score, is required")
            dts.append(det)
            found += 1
        else:
            dts.append(ObjectLabels(score=np.zeros(0)))
    return (_columns_from_labels(gts, "ground truth", need_score=False),
            _columns_from_labels(dts, "detections", need_score=True), found)


def _result_folders(label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[str] | None
                    ) -> tuple[list[str], _Columns, _Columns]:
    label_dir, result_dir = Path(label_dir), Path(result_dir)
    if not label_dir.is_dir():
        raise DataError(label_dir, "label folder not found")
    if not result_dir.is_dir():
        raise DataError(result_dir, "result folder not found")
    if (result_dir / "data").is_dir():
        result_dir = result_dir / "data"
    if frame_ids is None:
        frame_ids = sorted(name[:-4] for name in os.listdir(label_dir) if name.endswith(".txt"))
        if not frame_ids:
            raise DataError(label_dir, "no label .txt files")
    frame_ids = [check_frame_id(str(f), label_dir) for f in frame_ids]
    gt_base, dt_base = os.path.join(label_dir, ""), os.path.join(result_dir, "")  # plain strings: 7,000 Paths cost
    try:
        gt, _ = _parse_files(_read_bytes([f"{gt_base}{fid}.txt" for fid in frame_ids], missing_ok=False),
                             need_score=False)
        dt_text = _read_bytes([f"{dt_base}{fid}.txt" for fid in frame_ids], missing_ok=True)
        found = sum(t is not None for t in dt_text)
        dt, _ = _parse_files(dt_text, need_score=True)
        del dt_text  # only the columns stay
    except _SlowPath:
        gt, dt, found = _read_slowly([label_dir / f"{fid}.txt" for fid in frame_ids],
                                     [result_dir / f"{fid}.txt" for fid in frame_ids])
    if found == 0:
        raise DataError(result_dir, f"none of the {len(frame_ids)} frames has a result file (<frame_id>.txt)")
    if found < len(frame_ids):
        log.info("%d of %d frames have no result file: counted as frames without detections",
                 len(frame_ids) - found, len(frame_ids))
    return frame_ids, gt, dt


# ------------------------------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class _Packed:
    """Ground truth and detections of all frames, and every (detection, ground truth) pair of a frame that might
    match: IoU above the lowest class threshold. Edge arrays are (E,); the rest as in _Columns."""

    gt: _Columns
    dt: _Columns
    e_dt: np.ndarray  # (E,) int64 detection row
    e_gt: np.ndarray  # (E,) int64 ground-truth row
    e_iou: np.ndarray  # (E,) float64
    e_sim: np.ndarray | None  # (E,) float64 orientation similarity (1 + cos(alpha_gt - alpha_det)) / 2
    dc_over: np.ndarray  # (D,) float64 largest DontCare coverage of each detection (intersection / its area)
    gt_height: np.ndarray  # (G,) float64 bottom - top
    dt_height: np.ndarray  # (D,) float64 |bottom - top|


def _frame_pairs(na: np.ndarray, nb: np.ndarray, a_off: np.ndarray, b_off: np.ndarray, budget: int = 1 << 17):
    """Yield (a, b) row-index arrays of all pairs in the same frame, a block of frames at a time (memory stays small).

    na, nb: (F,) rows per frame; a_off, b_off: (F,) first row of each frame (each frame's rows are consecutive).
    """
    ends = np.cumsum(na * nb)
    f0 = 0
    while f0 < na.size:
        f1 = max(int(np.searchsorted(ends, (ends[f0 - 1] if f0 else 0) + budget, side="right")), f0 + 1)
        frame = np.repeat(np.arange(f0, f1), na[f0:f1])  # the frame of each a row in the block
        if frame.size:
            run = nb[frame]  # pairs of each a row
            a = np.repeat(np.arange(a_off[f0], a_off[f0] + frame.size), run)
            first = np.cumsum(run) - run
            b = np.arange(a.size) - np.repeat(first - b_off[frame], run)
            yield a, b
        f0 = f1


def _pack(gt: _Columns, dt: _Columns, min_iou: float, with_aos: bool) -> _Packed:
    if gt.off.size != dt.off.size:
        raise DataError("evaluate_kitti", f"{gt.off.size - 1} ground-truth frames but {dt.off.size - 1} detection "
                                          f"frames")
    ng, nd = gt.counts, dt.counts
    gb, db = np.ascontiguousarray(gt.bbox.T), np.ascontiguousarray(dt.bbox.T)  # (4, N): gathers read one row each
    # The devkit's boxoverlap(det, gt) with the operations of squeeze.geometry.iou_2d (bit for bit): intersection
    # only when it has positive width and height, and (det area + gt area) - intersection.
    area_g = np.clip(gb[2] - gb[0], 0, None) * np.clip(gb[3] - gb[1], 0, None)
    area_d = np.clip(db[2] - db[0], 0, None) * np.clip(db[3] - db[1], 0, None)
    e_dt, e_gt, e_iou = [], [], []
    for j, i in _frame_pairs(nd, ng, dt.off[:-1], gt.off[:-1]):
        iw = np.minimum(db[2, j], gb[2, i]) - np.maximum(db[0, j], gb[0, i])
        hit = iw > 0  # most pairs do not overlap: drop them before the rest of the arithmetic
        j, i, iw = j[hit], i[hit], iw[hit]
        ih = np.minimum(db[3, j], gb[3, i]) - np.maximum(db[1, j], gb[1, i])
        inter = iw * np.clip(ih, 0, None)
        union = area_d[j] + area_g[i] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
        keep = iou > min_iou
        e_dt.append(j[keep])
        e_gt.append(i[keep])
        e_iou.append(iou[keep])
    e_dt_a = np.concatenate([np.zeros(0, np.int64)] + e_dt)
    e_gt_a = np.concatenate([np.zeros(0, np.int64)] + e_gt)
    e_sim = None
    if with_aos:  # math.cos, as the devkit's C cos (numpy's vectorised cos may differ in the last bit)
        diff = (gt.alpha[e_gt_a] - dt.alpha[e_dt_a]).tolist()
        e_sim = (1.0 + np.fromiter(map(math.cos, diff), np.float64, len(diff))) / 2.0
    # DontCare coverage, the devkit's boxoverlap(det, dc, criterion 0): 0 unless the intersection has positive
    # width and height; the largest over the frame's DontCare regions.
    dc_over = np.zeros(db.shape[1])
    dc_rows = np.flatnonzero(_type_is(gt.type, "DontCare"))
    if dc_rows.size and db.shape[1]:
        frame_of_dc = np.searchsorted(gt.off, dc_rows, side="right") - 1
        n_dc = np.bincount(frame_of_dc, minlength=ng.size)
        dc_off = np.concatenate([[0], np.cumsum(n_dc)])[:-1]
        for j, k in _frame_pairs(nd, n_dc, dt.off[:-1], dc_off):
            g = dc_rows[k]
            w = np.minimum(db[2, j], gb[2, g]) - np.maximum(db[0, j], gb[0, g])
            h = np.minimum(db[3, j], gb[3, g]) - np.maximum(db[1, j], gb[1, g])
            hit = (w > 0) & (h > 0)
            j, w, h = j[hit], w[hit], h[hit]
            o = (w * h) / ((db[2, j] - db[0, j]) * (db[3, j] - db[1, j]))
            np.maximum.at(dc_over, j, o)
    return _Packed(gt=gt, dt=dt, e_dt=e_dt_a, e_gt=e_gt_a, e_iou=np.concatenate([np.zeros(0)] + e_iou), e_sim=e_sim,
                   dc_over=dc_over, gt_height=gb[3] - gb[1], dt_height=np.abs(db[1] - db[3]))


def _type_is(types: np.ndarray, name: str) -> np.ndarray:
    """(N,) bool: types (lower-case bytes) == name, case-insensitively; 16-byte names compare as two integers."""
    key = name.lower().encode()
    if types.dtype == np.dtype("S16") and types.flags.c_contiguous and len(key) <= 16:
        words = np.frombuffer(key.ljust(16, b"\0"), np.uint64)
        pairs = types.view(np.uint64).reshape(-1, 2)
        return (pairs[:, 0] == words[0]) & (pairs[:, 1] == words[1])
    return types == key


def _flags(p: _Packed, gt_class: np.ndarray, dt_is_class: np.ndarray, difficulty: int, ignore_short: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """cleanData: (gt_flag (G,) int8, dt_flag (D,) int8) with 0 evaluated, 1 ignored, -1 other class.

    gt_class: (G,) int8, 1 the evaluated class, 0 its neighbour class, -1 other; dt_is_class: (D,) bool.
    """
    min_h = MIN_HEIGHT[difficulty]
    too_small = p.gt_height <= min_h if ignore_short else p.gt_height < min_h
    ignore = ((p.gt.occluded > MAX_OCCLUSION[difficulty]) | (p.gt.truncated > MAX_TRUNCATION[difficulty])
              | too_small)
    gt_flag = np.where((gt_class == 1) & ~ignore, 0, np.where(gt_class >= 0, 1, -1)).astype(np.int8)
    dt_flag = np.where(dt_is_class, 0, -1).astype(np.int8)
    if ignore_short:  # `int32_t height = fabs(y1 - y2); if (height < MIN_HEIGHT)`: truncation keeps h < N exact
        dt_flag[p.dt_height < min_h] = 1
    return gt_flag, dt_flag


# ------------------------------------------------------------------------------------------------ matching
@dataclass(frozen=True)
class _Block:
    """C groups padded to Gm ground-truth boxes and Dm detections, both in file order (the devkit's loop order)."""

    gt: np.ndarray  # (C, Gm) int64 ground-truth row, -1 where padded
    dt: np.ndarray  # (C, Dm) int64 detection row, -1 where padded
    edge: np.ndarray  # (C, Gm, Dm) bool: the pair's IoU exceeds the class threshold
    iou: np.ndarray  # (C, Gm, Dm) float64, 0 off the edges
    sim: np.ndarray  # (C, Gm, Dm) float64 orientation similarity, 0 off the edges (or without AOS)


@dataclass(frozen=True)
class _Groups:
    """The connected groups of one class and difficulty's candidate graph.

    Nearly all are one ground truth with one detection: those are kept as plain (S,) arrays and counted with
    closed forms; the others are padded into blocks for the vectorised greedy loop.
    """

    single_gt: np.ndarray  # (S,) int64 ground-truth row of each one-edge group
    single_dt: np.ndarray  # (S,) int64 its detection row
    single_sim: np.ndarray  # (S,) float64 their orientation similarity (0 without AOS)
    blocks: list[_Block]
    g_rows: np.ndarray  # (G',) sorted ground-truth rows in some group
    d_rows: np.ndarray  # (D',) sorted detection rows in some group


def _groups(e_gt: np.ndarray, e_dt: np.ndarray, e_iou: np.ndarray, e_sim: np.ndarray | None, n_gt: int, n_dt: int
            ) -> _Groups:
    """Split the edges into one-edge groups (a box and a detection that touch nothing else) and the rest."""
    single = (np.bincount(e_gt, minlength=n_gt)[e_gt] == 1) & (np.bincount(e_dt, minlength=n_dt)[e_dt] == 1)
    multi = ~single
    blocks, g_multi, d_multi = _blocks(e_gt[multi], e_dt[multi], e_iou[multi], None if e_sim is None else e_sim[multi])
    return _Groups(single_gt=e_gt[single], single_dt=e_dt[single],
                   single_sim=np.zeros(np.count_nonzero(single)) if e_sim is None else e_sim[single], blocks=blocks,
                   g_rows=np.sort(np.concatenate([e_gt[single], g_multi])),
                   d_rows=np.sort(np.concatenate([e_dt[single], d_multi])))


def _rank_in_group(group: np.ndarray, n_groups: int) -> np.ndarray:
    """(N,) rank of each item among the items of its group, in item order (items are sorted by row already)."""
    order = np.argsort(group, kind="stable")
    size = np.bincount(group, minlength=n_groups)
    rank = np.empty(group.size, np.int64)
    rank[order] = np.arange(group.size) - (np.cumsum(size) - size)[group[order]]
    return rank


def _blocks(e_gt: np.ndarray, e_dt: np.ndarray, e_iou: np.ndarray, e_sim: np.ndarray | None
            ) -> tuple[list[_Block], np.ndarray, np.ndarray]:
    """The connected groups of the candidate graph, padded into blocks of power-of-two sizes.

    Also returns the ground-truth and detection rows that are in some group (sorted).
    """
    g_rows, eg = np.unique(e_gt, return_inverse=True)
    d_rows, ed = np.unique(e_dt, return_inverse=True)
    ng = g_rows.size
    # Connected components by min-label propagation with pointer jumping; groups are tiny, so a few rounds.
    label = np.arange(ng + d_rows.size)
    a, b = eg, ed + ng
    while True:
        m = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, label):
            break
        label = new
    _, group = np.unique(label, return_inverse=True)
    n_groups = int(group.max(initial=-1)) + 1
    g_group, d_group = group[:ng], group[ng:]
    g_rank, d_rank = _rank_in_group(g_group, n_groups), _rank_in_group(d_group, n_groups)
    g_size = np.bincount(g_group, minlength=n_groups)
    d_size = np.bincount(d_group, minlength=n_groups)

    def pow2(x: np.ndarray) -> np.ndarray:
        return 1 << np.ceil(np.log2(np.maximum(x, 1))).astype(np.int64)

    key = pow2(g_size) * (1 << 32) + pow2(d_size)
    blocks = []
    for k in np.unique(key):
        members = np.flatnonzero(key == k)
        gm, dm = int(k >> 32), int(k & 0xFFFFFFFF)
        local = np.full(n_groups, -1, np.int64)
        local[members] = np.arange(members.size)
        c = members.size
        gt = np.full((c, gm), -1, np.int64)
        dt = np.full((c, dm), -1, np.int64)
        sel = local[g_group] >= 0
        gt[local[g_group[sel]], g_rank[sel]] = g_rows[sel]
        sel = local[d_group] >= 0
        dt[local[d_group[sel]], d_rank[sel]] = d_rows[sel]
        sel = np.flatnonzero(local[g_group[eg]] >= 0)
        at = (local[g_group[eg[sel]]], g_rank[eg[sel]], d_rank[ed[sel]])
        edge = np.zeros((c, gm, dm), bool)
        iou = np.zeros((c, gm, dm))
        sim = np.zeros((c, gm, dm))
        edge[at] = True
        iou[at] = e_iou[sel]
        if e_sim is not None:
            sim[at] = e_sim[sel]
        blocks.append(_Block(gt=gt, dt=dt, edge=edge, iou=iou, sim=sim))
    return blocks, g_rows, d_rows


def _tp_scores(groups: _Groups, gt_flag: np.ndarray, dt_flag: np.ndarray, score: np.ndarray) -> np.ndarray:
    """First pass (computeStatistics with compute_fp = false): the scores of all true positives.

    Each ground truth, in order, takes the highest-scored unassigned candidate (the first on ties).
    """
    sc = score[groups.single_dt]  # a lone pair: the box takes its detection (scored above the devkit's -1e7)
    out = [sc[(gt_flag[groups.single_gt] == 0) & (dt_flag[groups.single_dt] == 0) & (sc > _NO_DETECTION)]]
    for bl in groups.blocks:
        c = bl.gt.shape[0]
        valid = bl.dt >= 0
        sc = np.where(valid, score[bl.dt], -np.inf)
        df = np.where(valid, dt_flag[bl.dt], -1)
        gf = np.where(bl.gt >= 0, gt_flag[bl.gt], -1)
        assigned = np.zeros(bl.dt.shape, bool)
        rows = np.arange(c)
        for r in range(bl.gt.shape[1]):
            cand = bl.edge[:, r, :] & ~assigned & (sc > _NO_DETECTION)
            pick = np.where(cand, sc, -np.inf).argmax(axis=1)
            has = cand[rows, pick]
            assigned[rows[has], pick[has]] = True
            tp = has & (gf[:, r] == 0) & (df[rows, pick] == 0)
            out.append(sc[rows[tp], pick[tp]])
    return np.concatenate([np.zeros(0)] + out)


def _score_thresholds(scores: np.ndarray, n_gt: int) -> np.ndarray:
    """getThresholds: from the TP scores, the ones closest to recall 0, 1/40, 2/40, ... (same float steps).

    The devkit walks the sorted scores and skips score i while (i + 2) / n is nearer the current recall step
    than (i + 1) / n; the last score is always taken. Here each step finds its first score that is not skipped.
    """
    v = np.sort(scores)[::-1]
    n = v.size
    if n == 0:
        return v
    i = np.arange(n)
    left = (i + 1) / float(n_gt)
    right = (i + 2) / float(n_gt)
    right[-1] = left[-1]
    chosen = []
    current, pos = 0.0, 0
    while pos < n:
        skip = (right[pos:] - current) < (current - left[pos:])
        skip[-1] = False
        pos += int(np.argmin(skip))  # the first score not skipped
        chosen.append(pos)
        pos += 1
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return v[chosen]


def _pr_counts(p: _Packed, groups: _Groups, gt_flag: np.ndarray, dt_flag: np.ndarray, min_overlap: float,
               thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Second pass (computeStatistics with compute_fp = true) at every threshold, summed over frames.

    Returns tp, fp, fn (T,) int64 and the summed orientation similarity of the TPs (T,) float64. Detections
    scored below the threshold are skipped; each ground truth takes the unassigned evaluated detection of
    largest IoU (the first on ties), or else the first ignored (short) one; evaluated detections left
    unassigned are FPs unless a DontCare region covers them (dc_over > min_overlap).
    """
    nt = thresholds.size
    tp = np.zeros(nt, np.int64)
    fp = np.zeros(nt, np.int64)
    dt_score = p.dt.score
    g_rows, d_rows = groups.g_rows, groups.d_rows
    # Outside the groups: a counted ground truth is missed at every threshold, an evaluated detection that no
    # DontCare region covers is a false positive wherever it scores at least the threshold.
    in_group = np.zeros(gt_flag.size, bool)
    in_group[g_rows] = True
    fn = np.full(nt, np.count_nonzero((gt_flag == 0) & ~in_group), np.int64)
    lone = np.ones(dt_flag.size, bool)
    lone[d_rows] = False
    lone_scores = np.sort(dt_score[lone & (dt_flag == 0) & ~(p.dc_over > min_overlap)])
    fp += lone_scores.size - np.searchsorted(lone_scores, thresholds, side="left")
    # Similarity of each grouped ground truth's TP at each threshold; summed below in the devkit's order.
    sims = np.zeros((g_rows.size, nt))
    # A lone pair: from the first threshold at or below the detection's score on (thresholds fall), the box takes
    # it. An evaluated detection then makes a counted box a TP; an ignored one absorbs it. Before, a counted box
    # is missed. The detection is never a false positive.
    first = np.searchsorted(-thresholds, -dt_score[groups.single_dt], side="left")  # (S,) in 0..T
    counted = gt_flag[groups.single_gt] == 0
    hit = counted & (dt_flag[groups.single_dt] == 0)
    tp += np.cumsum(np.bincount(first[hit], minlength=nt + 1))[:nt]
    fn += np.count_nonzero(counted) - np.cumsum(np.bincount(first[counted], minlength=nt + 1))[:nt]
    at = np.searchsorted(g_rows, groups.single_gt[hit])
    sims[at] = np.where(np.arange(nt) >= first[hit][:, None], groups.single_sim[hit][:, None], 0.0)
    for bl in groups.blocks:
        c, gm = bl.gt.shape
        valid = bl.dt >= 0
        above = np.where(valid, dt_score[bl.dt], -np.inf)[:, None, :] >= thresholds[None, :, None]  # (C, T, Dm)
        df = np.where(valid, dt_flag[bl.dt], -1)[:, None, :]
        evaluated, ignored = df == 0, df == 1
        gf = np.where(bl.gt >= 0, gt_flag[bl.gt], -1)
        assigned = np.zeros(above.shape, bool)
        ci, ti = np.indices((c, nt))
        for r in range(gm):
            cand = bl.edge[:, None, r, :] & above & ~assigned
            ev = cand & evaluated
            has_e = ev.any(axis=2)
            pick_e = np.where(ev, bl.iou[:, None, r, :], -1.0).argmax(axis=2)
            ig = cand & ignored
            has = has_e | ig.any(axis=2)
            pick = np.where(has_e, pick_e, ig.argmax(axis=2))
            counted = (gf[:, r] == 0)[:, None]
            fn += np.count_nonzero(~has & counted, axis=0)
            is_tp = has_e & counted
            tp += np.count_nonzero(is_tp, axis=0)
            tc, tt = ci[is_tp], ti[is_tp]
            sims[np.searchsorted(g_rows, bl.gt[tc, r]), tt] = bl.sim[tc, r, pick_e[tc, tt]]
            assigned[ci[has], ti[has], pick[has]] = True
        fp_mask = evaluated & above & ~assigned & ~(np.where(valid, p.dc_over[bl.dt], 0.0) > min_overlap)[:, None, :]
        fp += np.count_nonzero(fp_mask, axis=(0, 2))
    # The devkit sums similarities per frame in ground-truth order, then frame after frame: the same order here
    # (adding the 0.0 of a non-TP changes no sum), so AOS matches it bit for bit.
    n_frames = p.gt.off.size - 1
    frame_sum = np.zeros((n_frames, nt))
    frame = np.searchsorted(p.gt.off, g_rows, side="right") - 1
    rank = np.arange(g_rows.size) - np.searchsorted(frame, frame, side="left")
    for q in range(int(rank.max(initial=-1)) + 1):
        sel = rank == q
        frame_sum[frame[sel]] += sims[sel]
    sim = np.cumsum(frame_sum, axis=0)[-1] if n_frames else np.zeros(nt)
    return tp, fp, fn, sim


def _cpp_suffix_max(raw: np.ndarray, n: int) -> np.ndarray:
    """x[i] = *std::max_element(raw + i, raw + 41) for i < n (the devkit's monotone filter, NaN rules included).

    max_element keeps the first element unless a later one compares greater, so a NaN at i stays NaN and
    a NaN further on is skipped.
    """
    out = raw.copy()
    tail = np.fmax.accumulate(raw[::-1])[::-1]  # max over raw[i:] ignoring NaN
    out[:n] = np.where(np.isnan(raw[:n]), np.nan, tail[:n])
    return out


def _mean_at(curve: np.ndarray, indices: np.ndarray) -> float:
    total = 0.0
    for i in indices:  # sequential sum, as the devkit accumulates
        total += float(curve[i])
    return total / len(indices)


# --------------------------------------------------------------------------------------------------- public
def _check_classes(classes: Sequence[str], min_overlap: Mapping[str, float] | None) -> dict[str, float]:
    if not classes:
        raise ValueError("classes is empty")
    overlaps = dict(MIN_OVERLAP)
    overlaps.update(min_overlap or {})
    for c in classes:
        if c not in overlaps:
            raise ValueError(f"no IoU threshold for class {c!r}: pass min_overlap={{{c!r}: ...}}")
        if not 0.0 < overlaps[c] <= 1.0:
            raise ValueError(f"IoU threshold of {c!r} must be in (0, 1], got {overlaps[c]}")
    return overlaps


def _evaluate(gt: _Columns, dt: _Columns, classes: tuple[str, ...], compute_aos: bool,
              ignore_short_detections: bool, overlaps: dict[str, float]) -> KittiEvalResult:
    with_aos = bool(compute_aos) and not np.any(dt.alpha == -10)
    if compute_aos and not with_aos:
        log.info("a detection has alpha == -10 (invalid orientation): AOS not computed, as in the devkit")
    p = _pack(gt, dt, min(float(overlaps[c]) for c in classes), with_aos)

    ap11, ap40, aos11, aos40 = {}, {}, {}, {}
    precision, orientation, recall, thresholds, num_gt = {}, {}, {}, {}, {}
    for c in classes:
        thr = float(overlaps[c])
        prec_c = np.zeros((3, N_SAMPLE_PTS))
        aos_c = np.zeros((3, N_SAMPLE_PTS))
        rec_c = np.full((3, N_SAMPLE_PTS), np.nan)
        thr_c = np.full((3, N_SAMPLE_PTS), np.nan)
        ngt_c = []
        grouped: dict[bytes, _Groups] = {}
        name = c.lower()
        neighbour = next((v for k, v in NEIGHBOUR_CLASS.items() if k.lower() == name), None)
        gt_class = np.full(p.gt.off[-1], -1, np.int8)
        if neighbour is not None:
            gt_class[_type_is(p.gt.type, neighbour)] = 0
        gt_class[_type_is(p.gt.type, name)] = 1
        dt_is_class = _type_is(p.dt.type, name)
        for d in range(3):
            gt_flag, dt_flag = _flags(p, gt_class, dt_is_class, d, ignore_short_detections)
            n_valid = int(np.count_nonzero(gt_flag == 0))
            ngt_c.append(n_valid)
            # The groups depend on which rows take part (flag != -1), not on the flags' values: Moderate and Hard
            # (and, for squeezeDet's copy, all three) share them.
            keep = (p.e_iou > thr) & (gt_flag[p.e_gt] != -1) & (dt_flag[p.e_dt] != -1)
            key = np.packbits(keep).tobytes()
            if key not in grouped:
                grouped[key] = _groups(p.e_gt[keep], p.e_dt[keep], p.e_iou[keep],
                                       None if p.e_sim is None else p.e_sim[keep], gt_flag.size, dt_flag.size)
            groups = grouped[key]
            t = _score_thresholds(_tp_scores(groups, gt_flag, dt_flag, p.dt.score), n_valid)
            if t.size > N_SAMPLE_PTS:  # cannot happen (see getThresholds); the devkit would write out of bounds
                raise RuntimeError(f"{t.size} score thresholds for {c} {DIFFICULTIES[d]}, expected <= 41")
            tp, fp, fn, sim = _pr_counts(p, groups, gt_flag, dt_flag, thr, t)
            n = t.size
            raw_p = np.zeros(N_SAMPLE_PTS)
            raw_a = np.zeros(N_SAMPLE_PTS)
            with np.errstate(divide="ignore", invalid="ignore"):
                raw_p[:n] = tp / (tp + fp).astype(np.float64)
                raw_a[:n] = sim / (tp + fp).astype(np.float64)
                rec_c[d, :n] = tp / (tp + fn).astype(np.float64)
            thr_c[d, :n] = t
            prec_c[d] = _cpp_suffix_max(raw_p, n)
            aos_c[d] = _cpp_suffix_max(raw_a, n)
        precision[c], recall[c], thresholds[c] = prec_c, rec_c, thr_c
        num_gt[c] = (ngt_c[0], ngt_c[1], ngt_c[2])
        ap11[c] = {DIFFICULTIES[d]: _mean_at(prec_c[d], AP11_INDICES) for d in range(3)}
        ap40[c] = {DIFFICULTIES[d]: _mean_at(prec_c[d], AP40_INDICES) for d in range(3)}
        if with_aos:
            orientation[c] = aos_c
            aos11[c] = {DIFFICULTIES[d]: _mean_at(aos_c[d], AP11_INDICES) for d in range(3)}
            aos40[c] = {DIFFICULTIES[d]: _mean_at(aos_c[d], AP40_INDICES) for d in range(3)}
    return KittiEvalResult(
        classes=classes, ap11=ap11, ap40=ap40, aos11=aos11 if with_aos else None,
        aos40=aos40 if with_aos else None, precision=precision, orientation=orientation if with_aos else None,
        recall=recall, thresholds=thresholds, num_gt=num_gt, num_frames=gt.off.size - 1,
        ignore_short_detections=ignore_short_detections)


def evaluate_kitti(gt: Sequence[ObjectLabels], dt: Sequence[ObjectLabels],
                   classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"), compute_aos: bool = True,
                   ignore_short_detections: bool = True,
                   min_overlap: Mapping[str, float] | None = None) -> KittiEvalResult:
    """The KITTI 2D detection metrics of `dt` against `gt`, one ObjectLabels per frame in each.

    gt: label_2 contents (DontCare rows included). dt: detections with `score` (empty frames may lack it).
    compute_aos: also compute AOS; as in the devkit it is dropped when any detection has alpha == -10.
    ignore_short_detections: True = the official devkit, False = squeezeDet's copy (see the module doc).
    min_overlap: per-class IoU thresholds overriding MIN_OVERLAP (e.g. {"Car": 0.5}), each in (0, 1].
    """
    classes = tuple(classes)
    overlaps = _check_classes(classes, min_overlap)
    if len(gt) != len(dt):
        raise DataError("evaluate_kitti", f"{len(gt)} ground-truth frames but {len(dt)} detection frames")
    return _evaluate(_columns_from_labels(gt, "ground truth", need_score=False),
                     _columns_from_labels(dt, "detections", need_score=True), classes, compute_aos,
                     ignore_short_detections, overlaps)


def evaluate_folders(label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[str] | None = None,
                     classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"), compute_aos: bool = True,
                     ignore_short_detections: bool = True, min_overlap: Mapping[str, float] | None = None
                     ) -> KittiEvalResult:
    """evaluate_kitti over a label_2 folder and a results folder (see read_result_folders for the layout)."""
    classes = tuple(classes)
    overlaps = _check_classes(classes, min_overlap)
    _, gt, dt = _result_folders(label_dir, result_dir, frame_ids)
    return _evaluate(gt, dt, classes, compute_aos, ignore_short_detections, overlaps)


def format_table(result: KittiEvalResult) -> str:
    """A plain-text table in percent: one row per class (and the mean), AP11 / AP40 / AOS11 / AOS40 x E/M/H.

    Followed by a warning line for each class and difficulty with fewer than 41 counted objects.
    """
    metrics = [("AP11", result.ap11), ("AP40", result.ap40)]
    if result.aos11 is not None:
        metrics += [("AOS11", result.aos11), ("AOS40", result.aos40)]
    width = max(12, *(len(c) for c in result.classes))
    head1 = f"{'':<{width}}" + "".join(f" | {m:^22}" for m, _ in metrics)
    head2 = f"{'class':<{width}}" + "".join(" | " + " ".join(f"{d[:4]:>6}" for d in DIFFICULTIES) for _ in metrics)
    lines = [f"KITTI 2D detection, {result.num_frames} frames, {result.devkit} devkit "
             f"({'short detections ignored' if result.ignore_short_detections else 'short detections counted'})",
             head1, head2, "-" * len(head2)]
    for c in result.classes:
        lines.append(f"{c:<{width}}" + "".join(
            " | " + " ".join(f"{100 * table[c][d]:6.2f}" for d in DIFFICULTIES) for _, table in metrics))
    lines.append(f"{'mean':<{width}}" + "".join(
        " | " + " ".join(f"{100 * np.mean([table[c][d] for c in result.classes]):6.2f}" for d in DIFFICULTIES)
        for _, table in metrics))
    lines += [f"warning: {w}" for w in result.few_gt_warnings()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- picture
_DIFFICULTY_RGB = ((30, 150, 60), (40, 90, 200), (210, 50, 40))  # Easy green, Moderate blue, Hard red


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.42, colour=(0, 0, 0),
          anchor: str = "left") -> None:
    """Draw `text` with its baseline at org; anchor 'left', 'centre' or 'right' places org horizontally."""
    import cv2

    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = org[0] - (w // 2 if anchor == "centre" else w if anchor == "right" else 0)
    cv2.putText(img, text, (x, org[1]), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def _curve(img: np.ndarray, points: np.ndarray, colour, dashed: bool, thickness: int) -> None:
    """A polyline through the finite points (N, 2) float px; NaN points break it; dashed: 6 px on, 5 px off."""
    import cv2

    for a, b in zip(points[:-1], points[1:], strict=True):
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            continue
        if not dashed:
            cv2.line(img, tuple(np.round(a).astype(int)), tuple(np.round(b).astype(int)), colour, thickness,
                     cv2.LINE_AA)
            continue
        length = float(np.hypot(*(b - a)))
        for s in np.arange(0.0, length, 11.0):
            p0, p1 = a + (b - a) * (s / max(length, 1e-9)), a + (b - a) * (min(s + 6.0, length) / max(length, 1e-9))
            cv2.line(img, tuple(np.round(p0).astype(int)), tuple(np.round(p1).astype(int)), colour, thickness,
                     cv2.LINE_AA)


def pr_curves_picture(result: KittiEvalResult) -> np.ndarray:
    """(H, W, 3) uint8 RGB: one panel per class, precision (solid) and orientation similarity (dashed) vs recall.

    Axes from 0 to 1 with ticks every 0.2 and a grid, the class as title, and a key naming each difficulty with
    its AP40 and the number of counted ground-truth objects (marked '*' below 41: see few_gt_warnings).
    """
    import cv2

    pw, ph = 440, 380  # panel size
    left, right, top, bottom = 62, 14, 34, 50  # plot margins inside a panel
    img = np.full((ph, pw * len(result.classes), 3), 255, np.uint8)
    for k, c in enumerate(result.classes):
        x0, x1, y0, y1 = k * pw + left, (k + 1) * pw - right, top, ph - bottom

        def to_px(recall: np.ndarray, value: np.ndarray, x0=x0, x1=x1, y0=y0, y1=y1) -> np.ndarray:
            return np.stack([x0 + recall * (x1 - x0), y1 - np.clip(value, 0, 1.02) / 1.02 * (y1 - y0)], axis=1)

        for t in np.linspace(0, 1, 6):
            gx, gy = to_px(np.array([t]), np.array([t]))[0]
            cv2.line(img, (int(round(gx)), y0), (int(round(gx)), y1), (225, 225, 225), 1)
            cv2.line(img, (x0, int(round(gy))), (x1, int(round(gy))), (225, 225, 225), 1)
            cv2.line(img, (int(round(gx)), y1), (int(round(gx)), y1 + 4), (0, 0, 0), 1)
            cv2.line(img, (x0 - 4, int(round(gy))), (x0, int(round(gy))), (0, 0, 0), 1)
            _text(img, f"{t:.1f}", (int(round(gx)), y1 + 18), anchor="centre")
            _text(img, f"{t:.1f}", (x0 - 7, int(round(gy)) + 5), anchor="right")
        cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
        _text(img, "recall", ((x0 + x1) // 2, ph - 12), scale=0.5, anchor="centre")
        label = "precision" if result.orientation is None else "precision / orientation sim."
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        strip = np.full((th + base + 4, tw + 4, 3), 255, np.uint8)
        _text(strip, label, (2, th + 2), scale=0.5)
        strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
        sy = max(0, (y0 + y1) // 2 - strip.shape[0] // 2)
        img[sy:sy + strip.shape[0], k * pw + 4:k * pw + 4 + strip.shape[1]] = strip[:ph - sy]
        title = c if result.orientation is None else f"{c}  (dashed: orientation similarity)"
        _text(img, title, ((x0 + x1) // 2, 22), scale=0.5, anchor="centre")
        for d in range(len(DIFFICULTIES)):
            _curve(img, to_px(RECALL_POINTS, result.precision[c][d]), _DIFFICULTY_RGB[d], False, 2)
            if result.orientation is not None:
                _curve(img, to_px(RECALL_POINTS, result.orientation[c][d]), _DIFFICULTY_RGB[d], True, 1)
        # The key, in the lower-left corner of the plot.
        kx, ky = x0 + 10, y1 - 12 - 18 * (len(DIFFICULTIES) - 1)
        cv2.rectangle(img, (kx - 6, ky - 14), (kx + 236, y1 - 4), (255, 255, 255), -1)
        cv2.rectangle(img, (kx - 6, ky - 14), (kx + 236, y1 - 4), (150, 150, 150), 1)
        for d, name in enumerate(DIFFICULTIES):
            y = ky + 18 * d
            cv2.line(img, (kx, y - 4), (kx + 22, y - 4), _DIFFICULTY_RGB[d], 2, cv2.LINE_AA)
            n = result.num_gt[c][d]
            _text(img, f"{name} AP40 {100 * result.ap40[c][name]:.1f} (n={n}{'*' if n < N_SAMPLE_PTS else ''})",
                  (kx + 30, y))
    return img


def plot_pr_curves(result: KittiEvalResult, path: str | Path) -> None:
    """Write pr_curves_picture(result) as a PNG (atomically)."""
    from squeeze.kitti import write_image

    write_image(path, pr_curves_picture(result))
