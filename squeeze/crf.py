"""SqueezeSeg's recurrent CRF on the host: squeezeseg.crf.RecurrentCRF's mean-field on numpy arrays, in numba.

A deployed SqueezeSeg can carry its CRF inside the network graph (every runtime, TensorRT included, runs it) or
leave it to the host (`squeeze deploy export --crf host`): the network then returns the conv14 logits and the
runtime calls `apply_crf` with the parameters the sidecar carries. On this project's 2-core CPU the host CRF takes
about 1.9 ms a 64 x 512 frame after an OpenVINO run (1.1 ms warm) against about 3.5 ms for the same CRF inside
OpenVINO's int8 graph (there it is a hundred small ops over (7, 4, 64, 512) tensors, partly in bf16), and it
computes in float32.

The maths is the torch module's, both modes (squeezeseg/crf.py has the equations); tests hold the two to 1e-5 on
the same inputs. How it is fast:
- The bilateral weights exp(-|p_i - p_j|^2 / (2 theta_r^2)) are computed once per frame, for the half of the
  window's offsets after the centre (w(i, j) = w(j, i)) and once per distinct theta_r (two for KITTI's four
  classes), with a polynomial exp that LLVM vectorises (numba has no vector exp without Intel's SVML).
- Each mean-field step works row by row: the 14 neighbour sums of a row are accumulated in a small buffer that
  stays in the L1 cache, then turned into the row's new logits and their softmax for the next step. Rows run on
  numba's threads (prange), one parallel region per step.
It allocates about 4 MB of buffers a frame: a program should call squeeze.allocator.keep_freed_memory() first, as
`squeeze` does, or glibc hands them back to the system and page-faults them in again every frame (2.9-4.2 ms a call
measured so, against 1.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
from numba import prange

from squeeze.jit import exp_nonpositive, njit

__all__ = ["CRF_MODES", "CrfParams", "apply_crf", "gaussian_taps", "gaussian_window", "half_offsets",
           "window_offsets"]

CRF_MODES = ("reference", "textbook")
# numba probes for TBB before settling on OpenMP for its threads, and warns when the TBB it finds (OpenVINO's) is
# older than it wants: nothing a user of the CRF can act on.
warnings.filterwarnings("ignore", message=".*The TBB threading layer", category=numba.NumbaWarning)
# Exponents below this give weight 0: exp(-80) ~ 1.8e-35, just above float32's smallest normal number (denormal
# floats would slow every later product about 10x). The torch module uses the same cut-off.
EXP_CUTOFF = 80.0


def window_offsets(window: tuple[int, int]) -> list[tuple[int, int]]:
    """(drow, dcol) of the kh * kw - 1 neighbours in raster order, the centre excluded (the TF code's order)."""
    kh, kw = window
    return [(r - kh // 2, c - kw // 2) for r in range(kh) for c in range(kw) if (r, c) != (kh // 2, kw // 2)]


def half_offsets(window: tuple[int, int]) -> list[tuple[int, int]]:
    """The offsets after the centre in raster order: one of each pair (o, -o)."""
    return [o for o in window_offsets(window) if o > (0, 0)]


def gaussian_window(window: tuple[int, int], thetas: Sequence[float]) -> np.ndarray:
    """(K, kh, kw) float32 per-class spatial Gaussian exp(-(drow^2 + dcol^2) / (2 theta_c^2)) over the window,
    centre 0; computed in float64 and rounded once. squeezeseg.crf.RecurrentCRF's kernels are these."""
    kh, kw = window
    rows = np.arange(kh, dtype=np.float64) - kh // 2
    cols = np.arange(kw, dtype=np.float64) - kw // 2
    dist2 = rows[:, None] ** 2 + cols[None, :] ** 2
    theta = np.asarray(thetas, np.float64)[:, None, None]
    kernel = np.exp(-dist2[None] / (2.0 * theta**2))
    kernel[:, kh // 2, kw // 2] = 0.0
    return kernel.astype(np.float32)


def gaussian_taps(window: tuple[int, int], thetas: Sequence[float]) -> np.ndarray:
    """(K, M) float32: gaussian_window at each half offset (the same for o and -o)."""
    kernel = gaussian_window(window, thetas)
    kh, kw = window
    return np.stack([kernel[:, kh // 2 + dr, kw // 2 + dc] for dr, dc in half_offsets(window)], axis=1)


@dataclass(frozen=True)
class CrfParams:
    """Everything the CRF computes with (the sidecar's `host_crf`): squeezeseg.crf.RecurrentCRF's settings and its
    trained compatibility matrices, and which normalised input channels hold x, y, z."""

    mode: str  # "reference" (the released TF code) or "textbook" (CRF-as-RNN); squeezeseg/crf.py
    iterations: int  # mean-field steps
    window: tuple[int, int]  # rows x cols of the neighbourhood, odd
    theta_a: tuple[float, ...]  # per class: angular Gaussian scale, pixels
    bilateral_theta_a: tuple[float, ...]  # per class: the bilateral's angular scale, pixels
    theta_r: tuple[float, ...]  # per class: bilateral scale, normalised xyz units
    angular_compat: tuple[tuple[float, ...], ...]  # K x K [message class, target class]
    bilateral_compat: tuple[tuple[float, ...], ...]  # K x K [message class, target class]
    xyz_channels: tuple[int, int, int] = (0, 1, 2)  # channels of the normalised network input holding x, y, z

    def __post_init__(self) -> None:
        k = len(self.theta_r)
        if self.mode not in CRF_MODES:
            raise ValueError(f"CRF mode must be one of {CRF_MODES}, got {self.mode!r}")
        if self.iterations < 1:
            raise ValueError(f"CRF iterations must be >= 1, got {self.iterations}")
        if len(self.window) != 2 or any(s < 1 or s % 2 == 0 for s in self.window):
            raise ValueError(f"CRF window must have two odd positive sides, got {self.window}")
        for name in ("theta_a", "bilateral_theta_a", "theta_r"):
            values = getattr(self, name)
            if len(values) != k or not all(v > 0 and math.isfinite(v) for v in values):
                raise ValueError(f"CRF {name} needs {k} positive values (one per class), got {tuple(values)}")
        for name in ("angular_compat", "bilateral_compat"):
            m = getattr(self, name)
            if len(m) != k or any(len(row) != k for row in m) or not all(math.isfinite(v) for r in m for v in r):
                raise ValueError(f"CRF {name} must be a finite {k} x {k} matrix")
        if len(self.xyz_channels) != 3 or min(self.xyz_channels) < 0:
            raise ValueError(f"CRF xyz_channels must be 3 channel indices, got {self.xyz_channels}")

    @property
    def num_classes(self) -> int:
        return len(self.theta_r)


def apply_crf(logits: np.ndarray, xyz: np.ndarray, mask: np.ndarray, params: CrfParams,
              threads: int | None = None) -> np.ndarray:
    """The CRF's output for one range image: logits (K, H, W), xyz (3, H, W) the *normalised* x, y, z input
    channels, mask (H, W) bool (True where a point is) -> (K, H, W) float32, what the softmax / argmax take.

    threads: numba threads for the rows (default: numba's current setting, all cores).
    """
    logits = np.ascontiguousarray(logits, np.float32)
    xyz = np.ascontiguousarray(xyz, np.float32)
    mask = np.ascontiguousarray(mask, np.bool_)
    k = params.num_classes
    if logits.ndim != 3 or logits.shape[0] != k:
        raise ValueError(f"the CRF takes logits (K={k}, H, W), got {logits.shape}")
    if xyz.shape != (3,) + logits.shape[1:] or mask.shape != logits.shape[1:]:
        raise ValueError(f"the CRF takes xyz (3, H, W) and mask (H, W) of the logits' {logits.shape[1:]}, got "
                         f"{xyz.shape} and {mask.shape}")
    half = np.array(half_offsets(params.window), np.int64).reshape(-1, 2)
    theta_r = np.asarray(params.theta_r, np.float32)
    distinct, group = np.unique(theta_r, return_inverse=True)  # one set of weights per distinct theta_r
    scales = (np.float32(-0.5) / distinct.astype(np.float32) ** 2).astype(np.float32)
    ka = gaussian_taps(params.window, params.theta_a)
    kb = gaussian_taps(params.window, params.bilateral_theta_a)
    m_a = np.asarray(params.angular_compat, np.float32)
    m_b = np.asarray(params.bilateral_compat, np.float32)
    saved = numba.get_num_threads()
    if threads is not None:
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        weights = _bilateral_weights(xyz, mask, half, scales, np.float32(EXP_CUTOFF))
        return _mean_field(logits, mask, weights, half, group.astype(np.int64), ka, kb, m_a, m_b,
                           params.iterations, params.mode == "reference")
    finally:
        numba.set_num_threads(saved)


@njit(fastmath=True, parallel=True)
def _bilateral_weights(xyz, mask, half, scales, cutoff):
    # (M, G, H, W): weights[m, g, i] = exp(scales[g] |p_i - p_(i+o_m)|^2) mask_i mask_(i+o_m), 0 where the exponent
    # is below -cutoff or the neighbour is outside the image. Inner loops run over contiguous row slices (no index
    # arithmetic inside, so they vectorise).
    n_groups, n_half = scales.shape[0], half.shape[0]
    h, w = mask.shape
    maskf = mask.astype(np.float32)
    out = np.zeros((n_half, n_groups, h, w), np.float32)
    for i in prange(h):
        d2 = np.empty(w, np.float32)
        both = np.empty(w, np.float32)
        for m in range(n_half):
            dr, dc = half[m, 0], half[m, 1]
            ii = i + dr
            if ii < 0 or ii >= h:
                continue
            lo, hi = max(0, -dc), min(w, w - dc)
            n = hi - lo
            x0, y0, z0 = xyz[0, i, lo:hi], xyz[1, i, lo:hi], xyz[2, i, lo:hi]
            x1, y1, z1 = xyz[0, ii, lo + dc:hi + dc], xyz[1, ii, lo + dc:hi + dc], xyz[2, ii, lo + dc:hi + dc]
            m0, m1 = maskf[i, lo:hi], maskf[ii, lo + dc:hi + dc]
            for t in range(n):
                dx, dy, dz = x1[t] - x0[t], y1[t] - y0[t], z1[t] - z0[t]
                d2[t] = (dx * dx + dy * dy) + dz * dz
                both[t] = m0[t] * m1[t]
            for g in range(n_groups):
                s = scales[g]
                row = out[m, g, i, lo:hi]
                for t in range(n):
                    e = max(d2[t] * s, -cutoff)
                    row[t] = exp_nonpositive(e) * ((e > -cutoff) * both[t])
    return out


@njit(inline="always", fastmath=True)
def _softmax_row(current, q, q_masked, maskf, i):
    # q[:, i] = softmax over classes of current[:, i], and q_masked[:, i] = q[:, i] * mask[i]
    k, _, w = current.shape
    top = current[0, i].copy()
    for c in range(1, k):
        row = current[c, i]
        for j in range(w):
            top[j] = max(top[j], row[j])
    total = np.zeros(w, np.float32)
    for c in range(k):
        row, qr = current[c, i], q[c, i]
        for j in range(w):
            e = exp_nonpositive(row[j] - top[j])
            qr[j] = e
            total[j] += e
    for c in range(k):
        qr, qm, mr = q[c, i], q_masked[c, i], maskf[i]
        for j in range(w):
            v = qr[j] / total[j]
            qr[j] = v
            qm[j] = v * mr[j]


@njit(fastmath=True, parallel=True)
def _mean_field(logits, mask, weights, half, group, ka, kb, m_a, m_b, iterations, reference):
    # squeezeseg.crf.RecurrentCRF.forward on one image; weights from _bilateral_weights. For neighbour offset -o
    # the weight at pixel i is the one for +o stored at pixel i - o. The softmax of step t + 1 is taken row by row
    # as step t writes its rows, into the other of two buffers (rows of step t are still read by their neighbours):
    # one parallel region per step, each of which wakes numba's threads.
    k, h, w = logits.shape
    n_half = half.shape[0]
    maskf = mask.astype(np.float32)
    current = logits.copy()
    q_both = np.empty((2, k, h, w), np.float32)
    q_masked_both = np.empty((2, k, h, w), np.float32)
    for i in prange(h):
        _softmax_row(logits, q_both[0], q_masked_both[0], maskf, i)
    for step in range(iterations):
        q, q_masked = q_both[step % 2], q_masked_both[step % 2]
        q_next, q_masked_next = q_both[1 - step % 2], q_masked_both[1 - step % 2]
        last = step == iterations - 1
        for i in prange(h):  # neighbour sums of row i, then its new logits
            ang = np.zeros((k, w), np.float32)  # angular Gaussian message
            bil = np.zeros((k, w), np.float32)  # bilateral message (reference: its weighted sum only)
            bi_ang = np.zeros((k, w), np.float32)  # reference: the bilateral's angular Gaussian sum
            for c in range(k):
                g = group[c]
                for m in range(n_half):
                    ta, tb = ka[c, m], kb[c, m]
                    for sign in (1, -1):
                        dr, dc = sign * half[m, 0], sign * half[m, 1]
                        ii = i + dr
                        if ii < 0 or ii >= h:
                            continue
                        lo, hi = max(0, -dc), min(w, w - dc)
                        n = hi - lo
                        a, b = ang[c, lo:hi], bil[c, lo:hi]
                        src = q[c, ii, lo + dc:hi + dc]
                        wr = weights[m, g, i, lo:hi] if sign == 1 else weights[m, g, ii, lo + dc:hi + dc]
                        if reference:
                            ba = bi_ang[c, lo:hi]
                            for t in range(n):
                                a[t] += ta * src[t]
                                ba[t] += tb * src[t]
                                b[t] += wr[t] * src[t]
                        else:
                            src_m = q_masked[c, ii, lo + dc:hi + dc]
                            for t in range(n):
                                a[t] += ta * src_m[t]
                                b[t] += (tb * wr[t]) * src[t]
            if reference:  # bi = [sum_j w_ij mask_j q_j] * biang; current = q + ang @ M_a + bi @ M_b
                for c in range(k):
                    b, ba = bil[c], bi_ang[c]
                    for j in range(w):
                        b[j] *= ba[j]
            for o in range(k):
                out = current[o, i]
                base = q[o, i] if reference else logits[o, i]
                sign_out = np.float32(1.0) if reference else np.float32(-1.0)
                for j in range(w):
                    out[j] = base[j]
                for c in range(k):
                    fa, fb = sign_out * m_a[c, o], sign_out * m_b[c, o]
                    a, b = ang[c], bil[c]
                    for j in range(w):
                        out[j] += fa * a[j] + fb * b[j]
            if not last:
                _softmax_row(current, q_next, q_masked_next, maskf, i)
    return current
