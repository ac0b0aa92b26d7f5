"""A learned ray-drop model: which LiDAR returns go missing on a real sensor (issue 13, step 3).

Real scans lose returns in patterns: at grazing incidence, on dark or specular surfaces, far away, and more on
some lasers than others. The simulator's own drop rule is a guess; this model is learned from real scans and
applied to simulated ones so the mask channel looks real (LiDARsim and ePointDA learn ray drop the same way, from
real data).

Training cells come from the 360-degree ring image of each real scan (domain_adapt.sensor_profile.ring_image):
a cell whose left and right neighbours returned from one continuous surface (ranges within 5%) should have
returned too, so whether it is empty says whether its ray was dropped. Features per such cell, all from the
neighbours:

- range (the neighbours' mean), its square root, and 1 / range,
- the cosine of the incidence angle: the surface's slope along the ring from the neighbours' range difference,
  cos = r / sqrt(r^2 + (dr / dphi)^2) (a wall seen head-on reads 1, a road far ahead near 0),
- the material proxy: the neighbours' mean intensity (dark surfaces return weakly, and drop),
- the laser ring, one-hot (each laser has its own sensitivity).

The model is a logistic regression on those (fitted by full-batch L-BFGS in torch): few parameters, so three
scans are plenty, and it stays interpretable. Applied to a simulated scan it drops each return with the extra
probability the real sensor has over the simulated one at that cell (both measured the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from domain_adapt.sensor_profile import RING_IMAGE_WIDTH, SMOOTH_SURFACE, ring_image

RINGS = 64
N_NUMERIC = 5  # range/50, sqrt(range/50), 1/range, cos incidence, neighbour intensity


def ring_intensity_image(points: np.ndarray, ring: np.ndarray, rings: int = RINGS,
                         width: int = RING_IMAGE_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """(rings, width) range and intensity images over 360 degrees (the nearer return of a cell wins)."""
    ranges = ring_image(points, ring, rings, width)
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    r = np.sqrt((xyz**2).sum(axis=1))
    ring = np.asarray(ring, dtype=np.int64)
    ok = (ring >= 0) & (ring < rings) & (r > 0)
    az = np.arctan2(xyz[ok, 1], xyz[ok, 0])
    col = np.clip(((math.pi - az) / (2 * math.pi) * width).astype(np.int64), 0, width - 1)
    flat = ring[ok] * width + col
    intensity = np.zeros(rings * width, np.float32)
    # the return kept in ranges is the nearest: take its intensity
    nearest = np.isclose(r[ok].astype(np.float32), ranges.reshape(-1)[flat], rtol=0, atol=1e-6)
    intensity[flat[nearest]] = np.asarray(points, dtype=np.float32)[ok, 3][nearest]
    return ranges, intensity.reshape(rings, width)


MAX_GAP = 4  # cells: a run of up to this many empty cells between two returns of one surface counts as drops


def _nearest_valid(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, the column of the nearest valid cell strictly to its left and strictly to its right in its row
    (-1 where there is none)."""
    rings, width = valid.shape
    cols = np.broadcast_to(np.arange(width), valid.shape)
    marked = np.where(valid, cols, -1)
    left_incl = np.maximum.accumulate(marked, axis=1)
    left = np.concatenate([np.full((rings, 1), -1), left_incl[:, :-1]], axis=1)
    marked_r = np.where(valid, cols, width)
    right_incl = np.minimum.accumulate(marked_r[:, ::-1], axis=1)[:, ::-1]
    right = np.concatenate([right_incl[:, 1:], np.full((rings, 1), width)], axis=1)
    return left, np.where(right >= width, -1, right)


def cell_features(ranges: np.ndarray, intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate cells of a ring image and their features.

    A cell is a candidate when the nearest returns left and right of it in its row
    (within MAX_GAP + 1 cells each) belong to one continuous surface (ranges within SMOOTH_SURFACE of each other).
    Such a cell should have returned; an empty one was dropped. Returns (features (K, N_NUMERIC) float32,
    ring (K,) int64, dropped (K,) bool)."""
    rings, width = ranges.shape
    left, right = _nearest_valid(ranges > 0)
    cols = np.broadcast_to(np.arange(width), ranges.shape)
    row = np.broadcast_to(np.arange(rings)[:, None], ranges.shape)
    has = (left >= 0) & (right >= 0)
    li, ri = np.maximum(left, 0), np.maximum(right, 0)
    rl, rr = ranges[row, li], ranges[row, ri]
    il, ir = intensity[row, li], intensity[row, ri]
    mean = 0.5 * (rl + rr)
    near = has & (cols - left <= MAX_GAP + 1) & (right - cols <= MAX_GAP + 1)
    candidate = near & (np.abs(rl - rr) <= SMOOTH_SURFACE * mean)
    dphi = np.maximum(right - left, 1) * (2 * math.pi / width)
    slope = (rr - rl) / dphi
    cos_inc = mean / np.sqrt(mean**2 + slope**2 + 1e-12)
    r = mean[candidate]
    features = np.stack([r / 50.0, np.sqrt(r / 50.0), 1.0 / np.maximum(r, 1.0), cos_inc[candidate],
                         0.5 * (il + ir)[candidate]], axis=1).astype(np.float32)
    return features, row[candidate].astype(np.int64), ranges[candidate] == 0


@dataclass
class RayDropModel:
    """Logistic regression: logit p(drop) = w . numeric features + ring bias."""

    weights: np.ndarray  # (N_NUMERIC,) float32
    ring_bias: np.ndarray  # (RINGS,) float32

    def probability(self, features: np.ndarray, ring: np.ndarray) -> np.ndarray:
        logit = features @ self.weights + self.ring_bias[np.clip(ring, 0, len(self.ring_bias) - 1)]
        return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)

    def to_dict(self) -> dict:
        return {"kind": "ray_drop_logistic", "weights": self.weights.tolist(), "ring_bias": self.ring_bias.tolist()}

    @staticmethod
    def from_dict(d: dict) -> RayDropModel:
        if not isinstance(d, dict) or d.get("kind") != "ray_drop_logistic":
            raise ValueError("not a ray-drop model (kind != 'ray_drop_logistic')")
        w = np.asarray(d["weights"], np.float32)
        b = np.asarray(d["ring_bias"], np.float32)
        if w.shape != (N_NUMERIC,) or b.ndim != 1 or not np.all(np.isfinite(w)) or not np.all(np.isfinite(b)):
            raise ValueError(f"ray-drop model: expected {N_NUMERIC} finite weights and a finite ring bias per ring")
        return RayDropModel(w, b)


def training_cells(scans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack the candidate cells of (points, ring) scans: (features, ring, dropped)."""
    parts = [cell_features(*ring_intensity_image(points, ring)) for points, ring in scans]
    if not parts:
        raise ValueError("the ray-drop model needs at least one real scan")
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def fit_ray_drop(features: np.ndarray, ring: np.ndarray, dropped: np.ndarray, l2: float = 1e-3,
                 rings: int = RINGS) -> RayDropModel:
    """Maximum-likelihood logistic regression (L2 on the weights, ring biases shrunk toward their mean)."""
    if len(features) == 0:
        raise ValueError("no candidate cells to learn ray drop from")
    x = torch.from_numpy(features.astype(np.float64))
    y = torch.from_numpy(dropped.astype(np.float64))
    rt = torch.from_numpy(np.clip(ring, 0, rings - 1))
    base = float(np.clip(dropped.mean(), 1e-4, 1 - 1e-4))
    w = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.full((rings,), math.log(base / (1 - base)), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logit = x @ w + b[rt]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, y)
        loss = loss + l2 * (w.pow(2).sum() + (b - b.mean()).pow(2).mean())
        loss.backward()
        return loss

    opt.step(closure)
    return RayDropModel(w.detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32))


def log_loss(p: np.ndarray, dropped: np.ndarray) -> float:
    """Mean negative log-likelihood of the observed drops under probabilities p."""
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(dropped, np.log(p), np.log(1 - p))))


def apply_ray_drop(points: np.ndarray, ring: np.ndarray, model: RayDropModel, rng: np.random.Generator,
                   ) -> np.ndarray:
    """(N,) bool: which returns of a simulated scan to keep.

    Each return gets its features from its ring-image neighbours (as in training, but for a return that exists);
    it is dropped with the extra probability (p_real - p_sim) / (1 - p_sim), where p_real is the model's and
    p_sim the simulated scan's own drop rate among candidate cells of that ring."""
    pts = np.asarray(points, dtype=np.float32)
    ring = np.asarray(ring, dtype=np.int64)
    ranges, intensity = ring_intensity_image(pts, ring)
    rings, width = ranges.shape
    feats, cell_ring, dropped = cell_features(ranges, intensity)
    sim_rate = np.zeros(rings)
    np.add.at(sim_rate, cell_ring, dropped)
    counts = np.bincount(cell_ring, minlength=rings)
    sim_rate = np.where(counts > 0, sim_rate / np.maximum(counts, 1), 0.0)
    # features of every cell (not only candidates) for the returns themselves
    left, right = np.roll(ranges, 1, axis=1), np.roll(ranges, -1, axis=1)
    slope = np.where((left > 0) & (right > 0), (right - left) / (2 * (2 * math.pi / width)), 0.0)
    cos_inc = np.where(ranges > 0, ranges / np.sqrt(ranges**2 + slope**2 + 1e-12), 1.0)
    xyz = pts[:, :3].astype(np.float64)
    r = np.sqrt((xyz**2).sum(axis=1))
    ok = (ring >= 0) & (ring < rings) & (r > 0)
    az = np.arctan2(xyz[:, 1], xyz[:, 0])
    col = np.clip(((math.pi - az) / (2 * math.pi) * width).astype(np.int64), 0, width - 1)
    rr = np.clip(ring, 0, rings - 1)
    features = np.stack([r / 50.0, np.sqrt(r / 50.0), 1.0 / np.maximum(r, 1.0), cos_inc[rr, col],
                         pts[:, 3]], axis=1).astype(np.float32)
    p_real = model.probability(features, rr)
    p_sim = sim_rate[rr]
    extra = np.clip((p_real - p_sim) / np.maximum(1.0 - p_sim, 1e-6), 0.0, 1.0)
    return ~(ok & (rng.random(len(pts)) < extra))
