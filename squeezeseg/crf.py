"""Recurrent CRF of SqueezeSeg (Wu et al. 2018, section 3.3; reference/models.md 2.4), mean-field as an RNN.

Two forms, chosen by `mode`:

- "reference": exactly what the released TensorFlow code computes (SqueezeSeg and SqueezeSegV2 share it).
  Per iteration, with Q = softmax(current) and current = the conv14 logits at the start:
    ang_c(i)  = sum_j k_a,c(j) Q_c(j)                                  angular Gaussian, empty pixels included
    biang_c(i) = sum_j k_b,c(j) Q_c(j)                                 the bilateral's angular Gaussian
    bi_c(i)   = mask_i [sum_j w_c(i, j) mask_j Q_c(j)] * biang_c(i)    a product of two sums (quirk)
    current   = Q + ang @ M_a + bi @ M_b                               added to the probabilities (quirk)
  The unary logits are not re-added after the first iteration.
- "textbook": CRF-as-RNN (Zheng et al. 2015) on the same kernels, with empty pixels sending no message:
    ang_c(i)  = sum_j k_a,c(j) mask_j Q_c(j)
    bi_c(i)   = mask_i sum_j k_b,c(j) w_c(i, j) mask_j Q_c(j)          one sum over neighbours of w_ij Q_j
    current   = logits - (ang @ M_a + bi @ M_b)                        unary re-added, Potts sign
  With M initialised to coef * (1 - I), a class loses score where its neighbours are confidently another
  class, which is the Potts model's pull towards agreement.

Kernels over a window of kh x kw pixels (3 x 5) centred on pixel i, the centre excluded (14 neighbours):
  k_c(j) = exp(-(drow^2 + dcol^2) / (2 theta_a,c^2)) in pixel units, and
  w_c(i, j) = exp(-|p_i - p_j|^2 / (2 theta_r,c^2)), p = the *normalised* x, y, z input channels.
Out-of-image neighbours are zero (TF 'SAME' zero padding). M_a, M_b are trainable K x K compatibility
matrices in TF's [in, out] layout (message class -> target class), initialised to coef * (1 - I).

Implementation (CPU cost matters: the CRF must stay a small fraction of the network's time):
- The neighbourhood gather is 14 shifted views of a zero-padded tensor (exactly what F.unfold/im2col would
  produce, minus the copy; measured 3x faster than unfold here). A Python loop runs over the 14 window
  offsets only, never over pixels or classes.
- The bilateral weights are computed once per forward and for half the offsets only (w(i, j) = w(j, i): the
  other half is a shifted view); exponents below -80 give exactly 0 (they are < 2e-35 anyway, and denormal
  floats would slow exp and every later product by about 10x).
- The compatibility transforms are batched (K, K) matrix products fused with the addition (baddbmm).
- The two spatial Gaussian sums are one depthwise conv (one kernel when theta_a == bilateral_theta_a).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squeeze.crf import CRF_MODES, EXP_CUTOFF, CrfParams, half_offsets
from squeeze.crf import gaussian_window as host_gaussian_window


def gaussian_window(window: tuple[int, int], thetas: Sequence[float]) -> Tensor:
    """Per-class spatial Gaussian over the window, centre set to 0: (K, 1, kh, kw) float32 (squeeze.crf's)."""
    return torch.from_numpy(host_gaussian_window(window, thetas))[:, None]


def _shifted(padded: Tensor, offset: tuple[int, int], window: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """View of `padded` (padded by kh // 2, kw // 2) whose pixel i holds the input's pixel i + offset."""
    (dr, dc), (kh, kw), (h, w) = offset, window, size
    return padded[..., kh // 2 + dr:kh // 2 + dr + h, kw // 2 + dc:kw // 2 + dc + w]


def _pad(x: Tensor, window: tuple[int, int]) -> Tensor:
    kh, kw = window
    return F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))


def bilateral_weights(xyz: Tensor, mask: Tensor, window: tuple[int, int], theta_r: Tensor) -> Tensor:
    """w_c(i, i + o) * mask_i * mask_(i+o) for the half offsets o: (M, B, K, H + 2 (kh // 2), W + 2 (kw // 2)).

    xyz: (B, 3, H, W) normalised x, y, z; mask: (B, H, W) bool; theta_r: (K,) per-class range scale.
    Entry m is offset half_offsets(window)[m]; the result is zero-padded like the input of _shifted. The weight
    is symmetric, so the one for -o at pixel i is the one for o at pixel i - o: a shifted view, no copy.
    Empty and out-of-image neighbours get weight 0. No gradient flows into xyz: the weights are data, as in
    the reference (whose input is a placeholder).
    """
    h, w = xyz.shape[-2:]
    xyz = xyz.detach()
    half = half_offsets(window)
    maskf = mask[:, None].to(xyz.dtype)  # (B, 1, H, W) 1.0 where a point is
    xyz_p, mask_p = _pad(xyz, window), _pad(maskf, window)
    near = torch.stack([_shifted(xyz_p, o, window, (h, w)) for o in half])  # (M, B, 3, H, W)
    valid = torch.stack([_shifted(mask_p, o, window, (h, w)) for o in half]).mul_(maskf)  # (M, B, 1, H, W)
    dist2 = (near - xyz).square_().sum(2, keepdim=True)  # (M, B, 1, H, W)
    exponent = dist2 * (-0.5 / theta_r.square()).view(1, 1, -1, 1, 1)  # (M, B, K, H, W)
    keep = (exponent > -EXP_CUTOFF) * valid  # (M, B, K, H, W) 1.0 where the weight is kept
    return _pad(torch.exp(exponent.clamp_(min=-EXP_CUTOFF)).mul_(keep), window)


def bilateral_sum(q: Tensor, half_weights: Tensor, window: tuple[int, int]) -> Tensor:
    """sum_j w(i, j) q(j) over the window: q (B, K, H, W), half_weights from bilateral_weights -> (B, K, H, W)."""
    size = q.shape[-2:]
    q_p = _pad(q, window)
    out = None
    for m, (dr, dc) in enumerate(half_offsets(window)):
        w_p = half_weights[m]
        centre = _shifted(w_p, (0, 0), window, size)  # weight of neighbour i + o at pixel i
        mirror = _shifted(w_p, (-dr, -dc), window, size)  # weight of neighbour i - o at pixel i
        if out is None:
            out = torch.mul(_shifted(q_p, (dr, dc), window, size), centre)
        else:
            out.addcmul_(_shifted(q_p, (dr, dc), window, size), centre)
        out.addcmul_(_shifted(q_p, (-dr, -dc), window, size), mirror)
    return out


class RecurrentCRF(nn.Module):
    """Mean-field CRF over a range image, unrolled for `iterations` steps.

    forward(logits (B, K, H, W), xyz (B, 3, H, W) normalised, mask (B, H, W) bool) -> (B, K, H, W), the
    output that the softmax and the loss are applied to.
    """

    def __init__(self, num_classes: int, iterations: int = 3, window: tuple[int, int] = (3, 5),
                 theta_a: Sequence[float] = (0.9, 0.9, 0.6, 0.6),
                 bilateral_theta_a: Sequence[float] = (0.9, 0.9, 0.6, 0.6),
                 theta_r: Sequence[float] = (0.015, 0.015, 0.01, 0.01),
                 angular_compat: float = 0.02, bilateral_compat: float = 0.1, mode: str = "reference") -> None:
        super().__init__()
        if mode not in CRF_MODES:
            raise ValueError(f"CRF mode must be one of {CRF_MODES}, got {mode!r}")
        if iterations < 1:
            raise ValueError(f"CRF iterations must be >= 1, got {iterations}")
        kh, kw = window
        if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
            raise ValueError(f"CRF window must have odd positive sides, got {window}")
        for name, values in (("theta_a", theta_a), ("bilateral_theta_a", bilateral_theta_a), ("theta_r", theta_r)):
            if len(values) != num_classes:
                raise ValueError(f"CRF {name} has {len(values)} values, expected one per class ({num_classes})")
            if not all(v > 0 and math.isfinite(v) for v in values):
                raise ValueError(f"CRF {name} values must be positive, got {tuple(values)}")
        self.num_classes, self.iterations, self.window, self.mode = num_classes, iterations, (kh, kw), mode
        self.thetas = tuple(tuple(float(v) for v in t) for t in (theta_a, bilateral_theta_a, theta_r))
        # Depthwise Gaussian kernels (K or 2K, 1, kh, kw): k_a per class, then k_b per class if it differs.
        angular, bi_angular = gaussian_window(self.window, theta_a), gaussian_window(self.window, bilateral_theta_a)
        self.shared_gaussian = bool(torch.equal(angular, bi_angular))
        spatial = angular if self.shared_gaussian else torch.stack((angular, bi_angular), 1).flatten(0, 1)
        self.register_buffer("spatial_kernels", spatial, persistent=False)
        self.register_buffer("bi_angular_kernel", bi_angular, persistent=False)  # (K, 1, kh, kw)
        self.register_buffer("theta_r", torch.tensor(list(theta_r), dtype=torch.float32), persistent=False)  # (K,)
        potts = 1.0 - torch.eye(num_classes)
        self.angular_compat = nn.Parameter(potts * angular_compat)  # (K, K) [message class, target class]
        self.bilateral_compat = nn.Parameter(potts * bilateral_compat)  # (K, K) [message class, target class]

    def host_params(self, xyz_channels: tuple[int, int, int] = (0, 1, 2)) -> CrfParams:
        """This CRF's settings and trained compatibility matrices for squeeze.crf.apply_crf (a deployed model's
        host CRF); xyz_channels: the normalised input channels holding x, y, z."""
        def matrix(m: Tensor) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(v) for v in row) for row in m.detach().cpu().float())

        theta_a, bilateral_theta_a, theta_r = self.thetas
        return CrfParams(mode=self.mode, iterations=self.iterations, window=self.window, theta_a=theta_a,
                         bilateral_theta_a=bilateral_theta_a, theta_r=theta_r,
                         angular_compat=matrix(self.angular_compat), bilateral_compat=matrix(self.bilateral_compat),
                         xyz_channels=tuple(xyz_channels))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, iterations={self.iterations}, window={self.window}, mode={self.mode!r}"

    def forward(self, logits: Tensor, xyz: Tensor, mask: Tensor) -> Tensor:
        b, k, h, w = logits.shape
        if k != self.num_classes:
            raise ValueError(f"CRF built for {self.num_classes} classes got logits with {k} channels")
        kh, kw = self.window
        pad = (kh // 2, kw // 2)
        bilateral = bilateral_weights(xyz, mask, self.window, self.theta_r.to(xyz.dtype)).to(logits.dtype)
        spatial = self.spatial_kernels.to(logits.dtype)
        if self.mode == "textbook":  # fold the bilateral's spatial Gaussian into the per-neighbour weights
            taps = self.bi_angular_kernel.to(logits.dtype)[:, 0]  # (K, kh, kw), symmetric: k(o) = k(-o)
            taps = torch.stack([taps[:, kh // 2 + dr, kw // 2 + dc] for dr, dc in half_offsets(self.window)])
            bilateral = bilateral * taps[:, None, :, None, None]  # (M, 1, K, 1, 1) taps
            maskf = mask[:, None].to(logits.dtype)
            spatial = spatial[:k] if self.shared_gaussian else spatial[0::2]
        # Compatibility transforms as batched (K, K) @ (K, H * W) products: out_o = sum_i x_i M[i, o].
        m_ang = self.angular_compat.t().expand(b, k, k)
        m_bi = self.bilateral_compat.t().expand(b, k, k)
        current = logits
        for _ in range(self.iterations):
            q = torch.softmax(current, dim=1)  # (B, K, H, W)
            if self.mode == "reference":
                gauss = F.conv2d(q, spatial, padding=pad, groups=k)
                if self.shared_gaussian:
                    ang = bi_ang = gauss
                else:
                    gauss = gauss.view(b, k, 2, h, w)
                    ang, bi_ang = gauss[:, :, 0], gauss[:, :, 1]
                bi = bilateral_sum(q, bilateral, self.window) * bi_ang
                current = torch.baddbmm(q.view(b, k, -1), m_ang, ang.reshape(b, k, -1))
                current = torch.baddbmm(current, m_bi, bi.view(b, k, -1)).view(b, k, h, w)
            else:
                ang = F.conv2d(q * maskf, spatial, padding=pad, groups=k)
                bi = bilateral_sum(q, bilateral, self.window)
                pairwise = torch.baddbmm(torch.bmm(m_ang, ang.view(b, k, -1)), m_bi, bi.view(b, k, -1))
                current = logits - pairwise.view(b, k, h, w)
        return current
