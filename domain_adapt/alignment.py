"""Geodesic correlation alignment (SqueezeSegV2 sec. III-D; Morerio et al., ICLR 2018).

Each training step feeds a labelled source batch and an unlabelled target batch through the same network. The
alignment term is the log-Euclidean distance between the correlation (covariance) matrices of the network's
*outputs* on the two batches, measured on the manifold of symmetric positive-definite matrices:

    L_align = || logm(C_s) - logm(C_t) ||_F^2 / (4 C^2)

with C_s, C_t the (C, C) covariances of the per-pixel logits over the valid pixels of each batch and C the number
of classes (the 1 / 4C^2 scale is Morerio et al.'s, so the weight means the same whatever the class count).
Matching second-order statistics of the outputs pulls the target predictions toward the source's class
co-occurrence structure without target labels; the log map makes the distance a geodesic one (the Euclidean
distance between covariances under-weights small eigenvalues, the rare classes).
"""

from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-3  # added to the diagonal: output covariances of a confident network are nearly singular


def output_covariance(logits: Tensor, mask: Tensor | None = None, eps: float = EPS) -> Tensor:
    """(B, C, H, W) logits, optional (B, H, W) valid mask -> (C, C) covariance over the valid pixels, + eps I.

    Raises ValueError when fewer than two pixels are valid (a covariance needs two samples)."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(logits.shape)}")
    c = logits.shape[1]
    x = logits.permute(0, 2, 3, 1).reshape(-1, c)
    if mask is not None:
        expected = (logits.shape[0], *logits.shape[2:])
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must be (B, H, W) = {expected}, got {tuple(mask.shape)}")
        x = x[mask.reshape(-1).bool()]
    if x.shape[0] < 2:
        raise ValueError(f"need at least 2 valid pixels for a covariance, got {x.shape[0]}")
    x = x.double()  # the eigendecomposition below is ill-conditioned in float32 for confident outputs
    centred = x - x.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (x.shape[0] - 1)
    return cov + eps * torch.eye(c, dtype=cov.dtype, device=cov.device)


def spd_log(matrix: Tensor) -> Tensor:
    """Matrix logarithm of a symmetric positive-definite (C, C) matrix through its eigendecomposition."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    eigenvalues = eigenvalues.clamp_min(torch.finfo(matrix.dtype).tiny)
    return eigenvectors @ torch.diag_embed(eigenvalues.log()) @ eigenvectors.transpose(-1, -2)


def log_euclidean_distance(a: Tensor, b: Tensor) -> Tensor:
    """|| logm(a) - logm(b) ||_F^2 / (4 C^2) for two (C, C) SPD matrices (0 when equal, symmetric)."""
    if a.shape != b.shape or a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected two square matrices of the same size, got {tuple(a.shape)} and {tuple(b.shape)}")
    c = a.shape[0]
    return (spd_log(a) - spd_log(b)).pow(2).sum() / (4 * c * c)


def correlation_alignment_loss(source_logits: Tensor, target_logits: Tensor, source_mask: Tensor | None = None,
                               target_mask: Tensor | None = None, eps: float = EPS) -> Tensor:
    """The geodesic correlation alignment term between a source and a target batch of logits (float32 scalar)."""
    if source_logits.shape[1] != target_logits.shape[1]:
        raise ValueError(f"source and target have {source_logits.shape[1]} and {target_logits.shape[1]} classes")
    loss = log_euclidean_distance(output_covariance(source_logits, source_mask, eps),
                                  output_covariance(target_logits, target_mask, eps))
    return loss.float()  # float32 even under bf16 autocast: the term is small and bf16 keeps 3 digits
