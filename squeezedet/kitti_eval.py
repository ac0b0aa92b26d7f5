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
index 40 and even perfect detections score below 1 (10 boxes, all found: AP11 = 3/11, AP40 = 9/40).

The kernels are numba loops over column arrays (all frames concatenated, with per-frame offsets),
in the style of kitti-object-eval-python. AP values are fractions in [0, 1]; `format_table` prints percent.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from squeeze.errors import DataError, LabelError
from squeeze.geometry import iou_2d
from squeeze.kitti import ObjectLabels, atomic_write_bytes, read_labels

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


# -------------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True)
def _dontcare_overlap(dt_box, dt_off, gt_box, gt_off, gt_dontcare):  # pragma: no cover - jitted
    """(D,) largest intersection / detection area of each detection with a DontCare box of its frame, 0 if none.

    The devkit's boxoverlap(det, dc, criterion=0): 0 unless the intersection has positive width and height.
    """
    out = np.zeros(dt_box.shape[0])
    for f in range(dt_off.size - 1):
        for j in range(dt_off[f], dt_off[f + 1]):
            best = 0.0
            for k in range(gt_off[f], gt_off[f + 1]):
                if not gt_dontcare[k]:
                    continue
                w = min(dt_box[j, 2], gt_box[k, 2]) - max(dt_box[j, 0], gt_box[k, 0])
                h = min(dt_box[j, 3], gt_box[k, 3]) - max(dt_box[j, 1], gt_box[k, 1])
                if w <= 0 or h <= 0:
                    continue
                o = (w * h) / ((dt_box[j, 2] - dt_box[j, 0]) * (dt_box[j, 3] - dt_box[j, 1]))
                if o > best:
                    best = o
            out[j] = best
    return out


@numba.njit(cache=True)
def _tp_scores(gt_off, dt_off, iou_off, iou, gt_flag, dt_flag, dt_score, min_overlap):  # pragma: no cover
    """First pass (computeStatistics with compute_fp = false): the scores of all true positives.

    gt_flag: 0 counted, 1 ignored, -1 other class. dt_flag: 0 evaluated, 1 ignored (short), -1 other class.
    iou[iou_off[f] + j * n_gt_f + i] is the IoU of detection j and ground truth i of frame f.
    Each ground truth takes the highest-scored unassigned candidate with IoU > min_overlap.
    """
    out = np.empty(gt_flag.size, np.float64)
    n = 0
    max_dt = 0
    for f in range(dt_off.size - 1):
        max_dt = max(max_dt, dt_off[f + 1] - dt_off[f])
    rel = np.empty(max_dt, np.int64)
    assigned = np.zeros(max_dt, np.bool_)
    for f in range(gt_off.size - 1):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = dt_off[f]
        nrel = 0
        for j in range(dt_off[f + 1] - d0):
            if dt_flag[d0 + j] != -1:
                rel[nrel] = j
                nrel += 1
                assigned[j] = False
        if nrel == 0:
            continue
        base = iou_off[f]
        for i in range(ng):
            gf = gt_flag[g0 + i]
            if gf == -1:
                continue
            det = -1
            best = _NO_DETECTION
            for r in range(nrel):
                j = rel[r]
                if assigned[j]:
                    continue
                if iou[base + j * ng + i] > min_overlap and dt_score[d0 + j] > best:
                    det = j
                    best = dt_score[d0 + j]
            if det < 0:
                continue
            assigned[det] = True
            if gf == 0 and dt_flag[d0 + det] == 0:
                out[n] = dt_score[d0 + det]
                n += 1
    return out[:n]


@numba.njit(cache=True)
def _score_thresholds(scores, n_gt):  # pragma: no cover - jitted
    """getThresholds: from the TP scores, the ones closest to recall 0, 1/40, 2/40, ... (same float steps)."""
    v = np.sort(scores)[::-1]
    t = np.empty(v.size, np.float64)
    nt = 0
    n = float(n_gt)
    current = 0.0
    for i in range(v.size):
        left = (i + 1) / n
        right = (i + 2) / n if i < v.size - 1 else left
        if (right - current) < (current - left) and i < v.size - 1:
            continue
        t[nt] = v[i]
        nt += 1
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return t[:nt]


@numba.njit(cache=True)
def _pr_counts(gt_off, dt_off, iou_off, iou, gt_flag, dt_flag, dt_score, dc_over, gt_alpha, dt_alpha,
               min_overlap, thresholds):  # pragma: no cover - jitted
    """Second pass (computeStatistics with compute_fp = true) at every threshold, summed over frames.

    Returns tp, fp, fn (T,) int64 and the summed orientation similarity of the TPs (T,) float64.
    Detections scored below the threshold are skipped; each ground truth takes the unassigned evaluated
    detection of largest IoU (> min_overlap), or else the first ignored (short) one; evaluated detections
    left unassigned are FPs unless a DontCare region covers them (dc_over > min_overlap).
    """
    nt = thresholds.size
    tp = np.zeros(nt, np.int64)
    fp = np.zeros(nt, np.int64)
    fn = np.zeros(nt, np.int64)
    sim = np.zeros(nt, np.float64)
    max_dt = 0
    max_gt = 0
    for f in range(dt_off.size - 1):
        max_dt = max(max_dt, dt_off[f + 1] - dt_off[f])
        max_gt = max(max_gt, gt_off[f + 1] - gt_off[f])
    rel = np.empty(max_dt, np.int64)
    relg = np.empty(max_gt, np.int64)
    assigned = np.zeros(max_dt, np.bool_)
    for f in range(gt_off.size - 1):
        g0 = gt_off[f]
        ng = gt_off[f + 1] - g0
        d0 = dt_off[f]
        base = iou_off[f]
        nrel = 0
        for j in range(dt_off[f + 1] - d0):
            if dt_flag[d0 + j] != -1:
                rel[nrel] = j
                nrel += 1
        nrelg = 0
        nvalid = 0
        for i in range(ng):
            if gt_flag[g0 + i] != -1:
                relg[nrelg] = i
                nrelg += 1
                if gt_flag[g0 + i] == 0:
                    nvalid += 1
        if nrel == 0:  # nothing to match: every counted ground truth is missed at every threshold
            for t in range(nt):
                fn[t] += nvalid
            continue
        for t in range(nt):
            thresh = thresholds[t]
            for r in range(nrel):
                assigned[rel[r]] = False
            ftp = 0
            ffn = 0
            fsim = 0.0
            for q in range(nrelg):
                i = relg[q]
                gf = gt_flag[g0 + i]
                det = -1
                max_overlap = 0.0
                assigned_ignored = False
                for r in range(nrel):
                    j = rel[r]
                    if assigned[j] or dt_score[d0 + j] < thresh:
                        continue
                    ov = iou[base + j * ng + i]
                    if ov > min_overlap:
                        df = dt_flag[d0 + j]
                        if (ov > max_overlap or assigned_ignored) and df == 0:
                            max_overlap = ov
                            det = j
                            assigned_ignored = False
                        elif det < 0 and df == 1:
                            det = j
                            assigned_ignored = True
                if det < 0:
                    if gf == 0:
                        ffn += 1
                elif gf == 1 or dt_flag[d0 + det] == 1:
                    assigned[det] = True
                else:
                    ftp += 1
                    fsim += (1.0 + np.cos(gt_alpha[g0 + i] - dt_alpha[d0 + det])) / 2.0
                    assigned[det] = True
            ffp = 0
            for r in range(nrel):
                j = rel[r]
                if dt_flag[d0 + j] == 0 and not assigned[j] and dt_score[d0 + j] >= thresh:
                    if not dc_over[d0 + j] > min_overlap:
                        ffp += 1
            tp[t] += ftp
            fp[t] += ffp
            fn[t] += ffn
            if ftp > 0 or ffp > 0:
                sim[t] += fsim
    return tp, fp, fn, sim


def _cpp_suffix_max(raw: np.ndarray, n: int) -> np.ndarray:
    """x[i] = *std::max_element(raw + i, raw + 41) for i < n (the devkit's monotone filter, NaN rules included).

    max_element keeps the first element unless a later one compares greater, so a NaN at i stays NaN and
    a NaN further on is skipped.
    """
    out = raw.copy()
    for i in range(n):
        m = raw[i]
        for k in range(i + 1, raw.size):
            if m < raw[k]:
                m = raw[k]
        out[i] = m
    return out


def _mean_at(curve: np.ndarray, indices: np.ndarray) -> float:
    total = 0.0
    for i in indices:  # sequential sum, as the devkit accumulates
        total += float(curve[i])
    return total / len(indices)


# ------------------------------------------------------------------------------------------------- packing
@dataclass
class _Packed:
    """All frames concatenated. *_off: (F + 1,) int64 offsets. iou: flattened per-frame (n_dt, n_gt) matrices."""

    gt_off: np.ndarray
    dt_off: np.ndarray
    iou_off: np.ndarray
    iou: np.ndarray
    gt_type: np.ndarray  # (G,) lower-case class names (the devkit compares with strcasecmp)
    gt_height: np.ndarray  # (G,) float64 bottom - top
    gt_occluded: np.ndarray  # (G,) int64
    gt_truncated: np.ndarray  # (G,) float64
    gt_alpha: np.ndarray  # (G,) float64
    dt_type: np.ndarray  # (D,) lower-case class names
    dt_height: np.ndarray  # (D,) float64 |bottom - top|
    dt_score: np.ndarray  # (D,) float64
    dt_alpha: np.ndarray  # (D,) float64
    dc_over: np.ndarray  # (D,) float64 largest DontCare coverage of each detection


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


def _pack(gt: Sequence[ObjectLabels], dt: Sequence[ObjectLabels]) -> _Packed:
    if len(gt) != len(dt):
        raise DataError("evaluate_kitti", f"{len(gt)} ground-truth frames but {len(dt)} detection frames")
    for i, (g, d) in enumerate(zip(gt, dt, strict=True)):
        _check_frame(g, "ground truth", i, need_score=False)
        _check_frame(d, "detections", i, need_score=True)
    n_gt = np.array([len(g) for g in gt], dtype=np.int64)
    n_dt = np.array([len(d) for d in dt], dtype=np.int64)
    gt_off = np.concatenate([[0], np.cumsum(n_gt)]).astype(np.int64)
    dt_off = np.concatenate([[0], np.cumsum(n_dt)]).astype(np.int64)
    iou_off = np.concatenate([[0], np.cumsum(n_gt * n_dt)]).astype(np.int64)

    def cat(parts: list[np.ndarray], dtype, shape: tuple[int, ...] = ()) -> np.ndarray:
        return np.concatenate([np.zeros((0, *shape), dtype)] + [np.asarray(p, dtype).reshape(-1, *shape)
                                                                  for p in parts])

    gt_box = cat([g.bbox for g in gt], np.float64, (4,))
    dt_box = cat([d.bbox for d in dt], np.float64, (4,))
    # The devkit's boxoverlap(det, gt) equals geometry.iou_2d(det, gt) bit for bit: both compute the
    # intersection only when it has positive width and height, and (det area + gt area) - intersection.
    ious = [iou_2d(d.bbox, g.bbox).ravel() for g, d in zip(gt, dt, strict=True) if len(g) and len(d)]
    iou = np.concatenate([np.zeros(0)] + ious)
    gt_type = np.char.lower(cat([g.type for g in gt], str))
    dt_type = np.char.lower(cat([d.type for d in dt], str))
    dc_over = _dontcare_overlap(dt_box, dt_off, gt_box, gt_off, gt_type == "dontcare")
    return _Packed(
        gt_off=gt_off, dt_off=dt_off, iou_off=iou_off, iou=iou, gt_type=gt_type,
        gt_height=gt_box[:, 3] - gt_box[:, 1],
        gt_occluded=cat([g.occluded for g in gt], np.int64),
        gt_truncated=cat([g.truncated for g in gt], np.float64),
        gt_alpha=cat([g.alpha for g in gt], np.float64),
        dt_type=dt_type, dt_height=np.abs(dt_box[:, 1] - dt_box[:, 3]),
        dt_score=cat([d.score if len(d) else np.zeros(0) for d in dt], np.float64),
        dt_alpha=cat([d.alpha for d in dt], np.float64), dc_over=dc_over)


def _flags(p: _Packed, cls: str, difficulty: int, ignore_short: bool) -> tuple[np.ndarray, np.ndarray]:
    """cleanData: (gt_flag (G,) int8, dt_flag (D,) int8) with 0 evaluated, 1 ignored, -1 other class."""
    name = cls.lower()
    neighbour = NEIGHBOUR_CLASS.get(next((k for k in NEIGHBOUR_CLASS if k.lower() == name), ""), None)
    gt_class = np.full(p.gt_type.shape, -1, np.int8)
    if neighbour is not None:
        gt_class[p.gt_type == neighbour.lower()] = 0
    gt_class[p.gt_type == name] = 1
    min_h = MIN_HEIGHT[difficulty]
    too_small = p.gt_height <= min_h if ignore_short else p.gt_height < min_h
    ignore = (p.gt_occluded > MAX_OCCLUSION[difficulty]) | (p.gt_truncated > MAX_TRUNCATION[difficulty]) | too_small
    gt_flag = np.where((gt_class == 1) & ~ignore, 0, np.where((gt_class == 0) | (gt_class == 1), 1, -1))
    dt_flag = np.where(p.dt_type == name, 0, -1)
    if ignore_short:  # `int32_t height = fabs(y1 - y2); if (height < MIN_HEIGHT)`: truncation keeps h < N exact
        dt_flag = np.where(p.dt_height < min_h, 1, dt_flag)
    return gt_flag.astype(np.int8), dt_flag.astype(np.int8)


# --------------------------------------------------------------------------------------------------- public
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
    if not classes:
        raise ValueError("classes is empty")
    overlaps = dict(MIN_OVERLAP)
    overlaps.update(min_overlap or {})
    for c in classes:
        if c not in overlaps:
            raise ValueError(f"no IoU threshold for class {c!r}: pass min_overlap={{{c!r}: ...}}")
        if not 0.0 < overlaps[c] <= 1.0:
            raise ValueError(f"IoU threshold of {c!r} must be in (0, 1], got {overlaps[c]}")
    p = _pack(gt, dt)
    with_aos = bool(compute_aos) and not np.any(p.dt_alpha == -10)
    if compute_aos and not with_aos:
        log.info("a detection has alpha == -10 (invalid orientation): AOS not computed, as in the devkit")

    ap11, ap40, aos11, aos40 = {}, {}, {}, {}
    precision, orientation, recall, thresholds, num_gt = {}, {}, {}, {}, {}
    for c in classes:
        thr = float(overlaps[c])
        prec_c = np.zeros((3, N_SAMPLE_PTS))
        aos_c = np.zeros((3, N_SAMPLE_PTS))
        rec_c = np.full((3, N_SAMPLE_PTS), np.nan)
        thr_c = np.full((3, N_SAMPLE_PTS), np.nan)
        ngt_c = []
        for d in range(3):
            gt_flag, dt_flag = _flags(p, c, d, ignore_short_detections)
            n_valid = int(np.count_nonzero(gt_flag == 0))
            ngt_c.append(n_valid)
            scores = _tp_scores(p.gt_off, p.dt_off, p.iou_off, p.iou, gt_flag, dt_flag, p.dt_score, thr)
            t = _score_thresholds(scores, n_valid)
            if t.size > N_SAMPLE_PTS:  # cannot happen (see getThresholds); the devkit would write out of bounds
                raise RuntimeError(f"{t.size} score thresholds for {c} {DIFFICULTIES[d]}, expected <= 41")
            tp, fp, fn, sim = _pr_counts(p.gt_off, p.dt_off, p.iou_off, p.iou, gt_flag, dt_flag, p.dt_score,
                                         p.dc_over, p.gt_alpha, p.dt_alpha, thr, t)
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
        name = c
        precision[name], recall[name], thresholds[name] = prec_c, rec_c, thr_c
        num_gt[name] = (ngt_c[0], ngt_c[1], ngt_c[2])
        ap11[name] = {DIFFICULTIES[d]: _mean_at(prec_c[d], AP11_INDICES) for d in range(3)}
        ap40[name] = {DIFFICULTIES[d]: _mean_at(prec_c[d], AP40_INDICES) for d in range(3)}
        if with_aos:
            orientation[name] = aos_c
            aos11[name] = {DIFFICULTIES[d]: _mean_at(aos_c[d], AP11_INDICES) for d in range(3)}
            aos40[name] = {DIFFICULTIES[d]: _mean_at(aos_c[d], AP40_INDICES) for d in range(3)}
    return KittiEvalResult(
        classes=classes, ap11=ap11, ap40=ap40, aos11=aos11 if with_aos else None,
        aos40=aos40 if with_aos else None, precision=precision, orientation=orientation if with_aos else None,
        recall=recall, thresholds=thresholds, num_gt=num_gt, num_frames=len(gt),
        ignore_short_detections=ignore_short_detections)


def read_result_folders(label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[str] | None = None,
                        progress: bool = True) -> tuple[list[str], list[ObjectLabels], list[ObjectLabels]]:
    """(frame_ids, ground truth, detections) from a label_2 folder and a results folder.

    frame_ids default to every `*.txt` in label_dir, sorted. result_dir holds `<frame_id>.txt` files, or
    has them in `data/` (the devkit's layout, used when that subfolder exists). A missing result file
    means no detections; a missing label file is an error, as in the devkit.
    """
    from tqdm import tqdm

    label_dir, result_dir = Path(label_dir), Path(result_dir)
    if not label_dir.is_dir():
        raise DataError(label_dir, "label folder not found")
    if not result_dir.is_dir():
        raise DataError(result_dir, "result folder not found")
    if (result_dir / "data").is_dir():
        result_dir = result_dir / "data"
    if frame_ids is None:
        frame_ids = sorted(p.stem for p in label_dir.glob("*.txt"))
        if not frame_ids:
            raise DataError(label_dir, "no label .txt files")
    frame_ids = [str(f) for f in frame_ids]
    gts, dts, found = [], [], 0
    for fid in tqdm(frame_ids, desc="reading labels", unit="frame", disable=not progress or None):
        gt_path = label_dir / f"{fid}.txt"
        if not gt_path.exists():
            raise DataError(gt_path, "ground-truth label file not found")
        gts.append(read_labels(gt_path))
        dt_path = result_dir / f"{fid}.txt"
        if dt_path.exists():
            det = read_labels(dt_path)
            if len(det) and det.score is None:
                raise LabelError(dt_path, "result lines have 15 fields; a 16th, the score, is required")
            dts.append(det)
            found += 1
        else:
            dts.append(ObjectLabels(score=np.zeros(0)))
    if found == 0:
        raise DataError(result_dir, f"none of the {len(frame_ids)} frames has a result file (<frame_id>.txt)")
    if found < len(frame_ids):
        log.info("%d of %d frames have no result file: counted as frames without detections",
                 len(frame_ids) - found, len(frame_ids))
    return frame_ids, gts, dts


def evaluate_folders(label_dir: str | Path, result_dir: str | Path, frame_ids: Sequence[str] | None = None,
                     classes: Sequence[str] = ("Car", "Pedestrian", "Cyclist"), compute_aos: bool = True,
                     ignore_short_detections: bool = True, min_overlap: Mapping[str, float] | None = None,
                     progress: bool = True) -> KittiEvalResult:
    """evaluate_kitti over a label_2 folder and a results folder (see read_result_folders for the layout)."""
    _, gts, dts = read_result_folders(label_dir, result_dir, frame_ids, progress)
    return evaluate_kitti(gts, dts, classes=classes, compute_aos=compute_aos,
                          ignore_short_detections=ignore_short_detections, min_overlap=min_overlap)


def format_table(result: KittiEvalResult) -> str:
    """A plain-text table in percent: one row per class (and the mean), AP11 / AP40 / AOS11 / AOS40 x E/M/H."""
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
    return "\n".join(lines) + "\n"


def plot_pr_curves(result: KittiEvalResult, path: str | Path) -> None:
    """A PNG with one panel per class: precision (solid) and orientation similarity (dashed) vs recall."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(result.classes)
    fig = Figure(figsize=(4.2 * n, 3.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = ("tab:green", "tab:blue", "tab:red")
    for ax, c in zip(axes, result.classes, strict=True):
        for d, name in enumerate(DIFFICULTIES):
            ax.plot(RECALL_POINTS, result.precision[c][d], color=colours[d],
                    label=f"{name} AP40 {100 * result.ap40[c][name]:.1f}")
            if result.orientation is not None:
                ax.plot(RECALL_POINTS, result.orientation[c][d], color=colours[d], linestyle="--", linewidth=1)
        ax.set_title(c if result.orientation is None else f"{c} (dashed: orientation similarity)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
