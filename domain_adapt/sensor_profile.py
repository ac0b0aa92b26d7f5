"""A LiDAR sensor profile measured from real scans, and its application to simulated ones.

Real HDL-64E scans differ from the simulator's in two ways a segmentation network notices (issue 13): every laser
has its own intensity response (on KITTI the ground's mean intensity changes by 0.08 from one ring to the next,
by 0.001 in the simulator; over half of the real car returns read 0) and returns go missing in patterns (ray drop)
that depend on the laser and the range. The profile holds, per laser ring:

- the intensity distribution as quantiles (`intensity_quantiles`, rings x Q, at probabilities linspace(0, 1, Q)),
- the ray-drop rate per range bin (`drop_rate`, rings x bins): among cells of the 360-degree ring image whose two
  horizontal neighbours returned at similar ranges (a continuous surface, so the cell should have returned too),
  the fraction that are empty. Under independent drops with probability p this estimates p itself,
- the lasers' geometry (`elevations_deg`, `vertical_offsets`, see `laser_geometry`): each beam's elevation and
  the height it fires from. The simulator casts its rays with them (`squeeze sim --sensor-profile`), because a
  real sensor's elevations are not evenly spaced: on KITTI's HDL-64E neighbouring lasers sit 0.25-0.43 degrees
  apart in the upper block and 0.38-0.65 in the lower one, so each ring meets the ground at its own distance,
  a pattern a network trained on evenly spaced simulated rings reads as ring-wide stripes of "objects".

Applying a profile to a simulated scan (`apply_sensor_profile`) drops extra points where the real sensor drops
more than the simulated one (measured the same way on the scan itself) and maps each ring's intensities onto the
real ring's distribution by rank (quantile mapping: a brighter simulated material stays brighter, the values
follow the real laser). No learning: the learned steps (intensity rendering, ray-drop model) refine this.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeeze.atomic import atomic_write_text
from squeeze.errors import DataError

PROFILE_FORMAT = "squeeze-sensor-profile"
PROFILE_VERSION = 1
QUANTILES = 101  # intensity quantiles per ring: every percentile
RANGE_BINS = (0.0, 10.0, 20.0, 30.0, 45.0, 65.0, 200.0)  # m; drop rates rise with range
RING_IMAGE_WIDTH = 2048  # azimuth cells of the ring image (the HDL-64E fires ~2000 times a ring per revolution)
SMOOTH_SURFACE = 0.05  # neighbours within 5% of each other's range: a continuous surface, the cell should return
MIN_CELLS = 50  # a (ring, range bin) with fewer candidate cells borrows the ring's overall drop rate


@dataclass(frozen=True)
class SensorProfile:
    """Per-ring intensity distribution and ray-drop rates of a real LiDAR (module docstring)."""

    intensity_quantiles: np.ndarray  # (rings, QUANTILES) float32, non-decreasing along axis 1
    drop_rate: np.ndarray  # (rings, len(RANGE_BINS) - 1) float32 in [0, 1]
    frames: int  # scans measured
    source: str  # where they came from (a folder name), for the record
    # The lasers' geometry (laser_geometry): per ring, the beam's elevation and the height of its origin above
    # the sensor frame's origin. None when not measured (profiles written before it, or scans without geometry).
    elevations_deg: np.ndarray | None = None  # (rings,) float64, degrees, ring 0 = top
    vertical_offsets: np.ndarray | None = None  # (rings,) float64, metres

    @property
    def rings(self) -> int:
        return int(self.intensity_quantiles.shape[0])

    @property
    def ring_step(self) -> float:
        """Mean absolute change of the median intensity from one ring to the next (the per-laser spread)."""
        return float(np.mean(np.abs(np.diff(self.intensity_quantiles[:, 50])))) if self.rings > 1 else 0.0

    def to_json(self) -> str:
        return json.dumps({
            "format": PROFILE_FORMAT, "version": PROFILE_VERSION, "frames": self.frames, "source": self.source,
            "range_bins": list(RANGE_BINS),
            "intensity_quantiles": np.round(self.intensity_quantiles.astype(np.float64), 5).tolist(),
            "drop_rate": np.round(self.drop_rate.astype(np.float64), 5).tolist(),
            **({} if self.elevations_deg is None else {
                "elevations_deg": np.round(np.asarray(self.elevations_deg, np.float64), 4).tolist(),
                "vertical_offsets": np.round(np.asarray(self.vertical_offsets, np.float64), 5).tolist()})},
            indent=1)

    @staticmethod
    def from_json(text: str, source: str | Path = "<profile>") -> SensorProfile:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(source, f"not JSON: {e}") from None
        if not isinstance(d, dict) or d.get("format") != PROFILE_FORMAT:
            raise DataError(source, f"not a sensor profile (expected format {PROFILE_FORMAT!r})")
        if d.get("version") != PROFILE_VERSION:
            raise DataError(source, f"sensor profile version {d.get('version')!r}, this suite reads {PROFILE_VERSION}")
        if d.get("range_bins") != list(RANGE_BINS):
            raise DataError(source, f"range_bins {d.get('range_bins')} differ from this suite's {list(RANGE_BINS)}")
        try:
            q = np.asarray(d["intensity_quantiles"], dtype=np.float32)
            drop = np.asarray(d["drop_rate"], dtype=np.float32)
            frames = int(d["frames"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(source, f"bad sensor profile field: {e}") from None
        if q.ndim != 2 or q.shape[1] != QUANTILES or not np.all(np.isfinite(q)) or np.any(np.diff(q, axis=1) < 0):
            raise DataError(source, f"intensity_quantiles must be (rings, {QUANTILES}) non-decreasing finite numbers")
        if drop.shape != (q.shape[0], len(RANGE_BINS) - 1) or np.any(~(drop >= 0) | (drop > 1)):
            raise DataError(source, f"drop_rate must be ({q.shape[0]}, {len(RANGE_BINS) - 1}) numbers in [0, 1]")
        elevations = offsets = None
        if "elevations_deg" in d or "vertical_offsets" in d:
            try:
                elevations = np.asarray(d["elevations_deg"], dtype=np.float64)
                offsets = np.asarray(d["vertical_offsets"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(source, f"bad sensor profile field: {e}") from None
            if (elevations.shape != (q.shape[0],) or offsets.shape != (q.shape[0],)
                    or not np.all(np.isfinite(elevations)) or not np.all(np.isfinite(offsets))
                    or np.any(np.abs(elevations) >= 90) or np.any(np.abs(offsets) > 2)):
                raise DataError(source, f"elevations_deg and vertical_offsets must be {q.shape[0]} finite numbers "
                                        "each (degrees within +-90, metres within +-2)")
        return SensorProfile(q, drop, frames, str(d.get("source", "")), elevations, offsets)


def read_profile(path: str | Path) -> SensorProfile:
    p = Path(path)
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise DataError(p, "not a text file") from None
    return SensorProfile.from_json(text, p)


def write_profile(path: str | Path, profile: SensorProfile) -> None:
    atomic_write_text(path, profile.to_json() + "\n")


# ------------------------------------------------------------------------------------------------ measuring
def ring_image(points: np.ndarray, ring: np.ndarray, rings: int, width: int = RING_IMAGE_WIDTH) -> np.ndarray:
    """(N, >=3) points with their (N,) ring ids -> (rings, width) float32 range per cell over 360 degrees, 0 where
    nothing returned (column 0 at azimuth +180, increasing clockwise like the range images). Points with a ring
    outside [0, rings) or at the origin are ignored; of two points in a cell the nearer one is kept."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    ring = np.asarray(ring, dtype=np.int64)
    r = np.sqrt((xyz**2).sum(axis=1))
    ok = (ring >= 0) & (ring < rings) & (r > 0)
    az = np.arctan2(xyz[ok, 1], xyz[ok, 0])
    col = np.clip(((math.pi - az) / (2 * math.pi) * width).astype(np.int64), 0, width - 1)
    flat = ring[ok] * width + col
    image = np.full(rings * width, np.inf)
    np.minimum.at(image, flat, r[ok])
    image[np.isinf(image)] = 0.0
    return image.reshape(rings, width).astype(np.float32)


def drop_counts(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rings, W) ring image -> (dropped, candidates), each (rings, bins) int64: candidate cells are those whose
    left and right neighbours (wrapping around) both returned at ranges within SMOOTH_SURFACE of each other,
    binned by their mean range; dropped ones are the empty candidates."""
    left, right = np.roll(ranges, 1, axis=1), np.roll(ranges, -1, axis=1)
    both = (left > 0) & (right > 0)
    mean = 0.5 * (left + right)
    smooth = both & (np.abs(left - right) <= SMOOTH_SURFACE * mean)
    bins = np.clip(np.digitize(mean, RANGE_BINS) - 1, 0, len(RANGE_BINS) - 2)
    rings, n_bins = ranges.shape[0], len(RANGE_BINS) - 1
    index = np.arange(rings)[:, None] * n_bins + bins
    candidates = np.bincount(index[smooth], minlength=rings * n_bins).reshape(rings, n_bins)
    dropped = np.bincount(index[smooth & (ranges == 0)], minlength=rings * n_bins).reshape(rings, n_bins)
    return dropped, candidates


def drop_rates(dropped: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per (ring, bin) drop rate; bins with fewer than MIN_CELLS candidates take their ring's overall rate."""
    ring_rate = dropped.sum(axis=1) / np.maximum(candidates.sum(axis=1), 1)
    rate = dropped / np.maximum(candidates, 1)
    return np.where(candidates >= MIN_CELLS, rate, ring_rate[:, None]).astype(np.float32)


MIN_HORIZONTAL_RANGE = 2.0  # m; nearer returns (the car's own body, the rack) are left out of the geometry fit
GEOMETRY_INLIER = 0.05  # m; the refit keeps returns within this height of the first fit (mislabelled rings out)


def laser_geometry(points: np.ndarray, ring: np.ndarray, rings: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Each laser's elevation (degrees) and origin height (m) from one scan: (rings,) each, NaN where a ring has
    too few returns (< 50) or too narrow a spread of range to tell the two apart.

    A spinning LiDAR's lasers do not fire from one point: on the HDL-64E the upper block's lasers sit ~0.2 m
    above the sensor frame's origin and the lower block's ~0.12 m (the vertical offset of its per-laser
    calibration). A return at horizontal distance d of laser k lies at z = dz_k + d tan(theta_k), i.e.
    z / d = tan(theta_k) + dz_k / d: a straight line in 1 / d whose intercept gives the elevation and whose
    slope gives the offset, fitted by least squares and refitted on the returns within GEOMETRY_INLIER of the
    first fit. On KITTI's scans the fit leaves a median height residual of 0.2-0.3 mm per ring."""
    pts = np.asarray(points, dtype=np.float64)
    ring = np.asarray(ring, dtype=np.int64)
    d = np.hypot(pts[:, 0], pts[:, 1])
    ok = (ring >= 0) & (ring < rings) & (d > MIN_HORIZONTAL_RANGE)
    elevations = np.full(rings, np.nan)
    offsets = np.full(rings, np.nan)
    for k in np.unique(ring[ok]):
        m = ok & (ring == k)
        inv = 1.0 / d[m]
        if m.sum() < 50 or np.std(inv) < 0.005:  # e.g. all returns at 20-25 m: slope and intercept trade off
            continue
        a = np.stack([np.ones_like(inv), inv], axis=1)
        y = pts[m, 2] / d[m]
        coef = np.linalg.lstsq(a, y, rcond=None)[0]
        inlier = np.abs((y - a @ coef) * d[m]) < GEOMETRY_INLIER
        if inlier.sum() < 50:
            continue
        coef = np.linalg.lstsq(a[inlier], y[inlier], rcond=None)[0]
        elevations[k] = np.degrees(np.arctan(coef[0]))
        offsets[k] = coef[1]
    return elevations, offsets


def calibrate_sensor(scans: Iterable[tuple[np.ndarray, np.ndarray]], rings: int = 64,
                     source: str = "") -> SensorProfile:
    """Measure a profile from real scans, each given as ((N, 4) points, (N,) ring ids; -1 for unknown).

    The laser geometry is the median over scans of each scan's `laser_geometry`; it is left out (None) when
    some ring could not be fitted in any scan."""
    intensities: list[list[np.ndarray]] = [[] for _ in range(rings)]
    dropped = np.zeros((rings, len(RANGE_BINS) - 1), np.int64)
    candidates = np.zeros_like(dropped)
    geometry: list[tuple[np.ndarray, np.ndarray]] = []
    frames = 0
    for points, ring in scans:
        geometry.append(laser_geometry(points, ring, rings))
        ring = np.asarray(ring, dtype=np.int64)
        ok = (ring >= 0) & (ring < rings) & np.any(points[:, :3] != 0, axis=1)
        order = np.argsort(ring[ok], kind="stable")
        values = points[ok, 3][order]
        splits = np.searchsorted(ring[ok][order], np.arange(1, rings))
        for r, chunk in enumerate(np.split(values, splits)):
            intensities[r].append(chunk)
        d, c = drop_counts(ring_image(points, ring, rings))
        dropped += d
        candidates += c
        frames += 1
    if frames == 0:
        raise DataError(source or "<scans>", "no scans to measure a sensor profile from")
    probs = np.linspace(0.0, 1.0, QUANTILES)
    everything = np.concatenate([np.concatenate(v) for v in intensities if v])
    if len(everything) == 0:
        raise DataError(source or "<scans>", "the scans hold no points with a laser ring")
    fallback = np.quantile(everything, probs)  # a ring that never returned borrows the sensor's distribution
    quantiles = np.stack([np.quantile(np.concatenate(v), probs) if sum(map(len, v)) else fallback
                          for v in intensities]).astype(np.float32)
    with warnings.catch_warnings():  # a ring no scan could fit is all-NaN: handled just below
        warnings.simplefilter("ignore", RuntimeWarning)
        elevations = np.nanmedian(np.stack([g[0] for g in geometry]), axis=0) if geometry else None
        offsets = np.nanmedian(np.stack([g[1] for g in geometry]), axis=0) if geometry else None
    if elevations is None or not np.all(np.isfinite(elevations)) or not np.all(np.isfinite(offsets)):
        elevations = offsets = None
    return SensorProfile(quantiles, drop_rates(dropped, candidates), frames, source, elevations, offsets)


# ------------------------------------------------------------------------------------------------ applying
def apply_sensor_profile(points: np.ndarray, ring: np.ndarray, profile: SensorProfile, rng: np.random.Generator,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """A simulated scan as the profiled sensor would have returned it.

    points (N, 4) float32, ring (N,) laser ids (0 = top) -> (kept (N,) bool, new points (K, 4) float32 for the
    kept ones). Extra drops: where the real ring drops more rays at a range than this scan does (measured the
    same way on it), each return is dropped with probability (p_real - p_sim) / (1 - p_sim). Intensities: within
    each ring, a point's rank among the kept returns picks the real ring's quantile at that rank (ties broken at
    random), so the ring's distribution becomes the real one.
    """
    pts = np.asarray(points, dtype=np.float32)
    ring = np.asarray(ring, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] < 4 or len(ring) != len(pts):
        raise ValueError(f"expected (N, 4) points and (N,) rings, got {pts.shape} and {ring.shape}")
    rings = profile.rings
    sim_rate = drop_rates(*drop_counts(ring_image(pts, ring, rings)))
    extra = np.clip((profile.drop_rate - sim_rate) / np.maximum(1.0 - sim_rate, 1e-6), 0.0, 1.0)
    r = np.sqrt((pts[:, :3].astype(np.float64) ** 2).sum(axis=1))
    bins = np.clip(np.digitize(r, RANGE_BINS) - 1, 0, len(RANGE_BINS) - 2)
    known = (ring >= 0) & (ring < rings)
    p_drop = np.where(known, extra[np.clip(ring, 0, rings - 1), bins], 0.0)
    kept = rng.random(len(pts)) >= p_drop
    out = pts[kept].copy()
    out_ring = ring[kept]
    tie_break = rng.random(len(out))
    order = np.lexsort((tie_break, out[:, 3], out_ring))  # by ring, then intensity, ties at random
    sorted_ring = out_ring[order]
    starts = np.searchsorted(sorted_ring, sorted_ring, side="left")
    counts = np.searchsorted(sorted_ring, sorted_ring, side="right") - starts
    rank = (np.arange(len(order)) - starts + 0.5) / np.maximum(counts, 1)  # in (0, 1) within the ring
    position = rank * (QUANTILES - 1)
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, QUANTILES - 1)
    frac = (position - lo).astype(np.float32)
    ring_ok = (sorted_ring >= 0) & (sorted_ring < rings)
    rr = np.clip(sorted_ring, 0, rings - 1)
    q = profile.intensity_quantiles
    mapped = q[rr, lo] * (1 - frac) + q[rr, hi] * frac
    new_intensity = out[order, 3].copy()
    new_intensity[ring_ok] = mapped[ring_ok]
    out[order, 3] = new_intensity
    return kept, out


def plot_profile(profile: SensorProfile, path: str | Path) -> None:
    """A picture of a profile: per ring, the intensity percentiles 10/50/90, the ray-drop rate by range and, when
    measured, the step in elevation to the next laser down and the laser's origin height."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rings = np.arange(profile.rings)
    geometry = profile.elevations_deg is not None
    fig, axes = plt.subplots(1, 3 if geometry else 2, figsize=(16 if geometry else 11, 4), dpi=100)
    a, b = axes[0], axes[1]
    q = profile.intensity_quantiles
    a.fill_between(rings, q[:, 10], q[:, 90], color="#9ecae1", label="10th-90th percentile")
    a.plot(rings, q[:, 50], color="#08519c", label="median")
    a.set(xlabel="laser ring (0 = top)", ylabel="intensity", title="intensity per laser")
    a.legend(loc="upper left")
    for j in range(profile.drop_rate.shape[1]):
        b.plot(rings, profile.drop_rate[:, j], label=f"{RANGE_BINS[j]:g}-{RANGE_BINS[j + 1]:g} m")
    b.set(xlabel="laser ring (0 = top)", ylabel="ray-drop rate", title="ray drop per laser and range")
    b.legend(fontsize=7)
    if geometry:
        c = axes[2]
        c.bar(rings[:-1] + 0.5, -np.diff(profile.elevations_deg), width=0.8, color="#74a9cf",
              label="elevation step to the next laser (deg)")
        c.plot(rings, profile.vertical_offsets, color="#d95f0e", marker=".", label="origin height (m)")
        c.set(xlabel="laser ring (0 = top)", title="laser geometry")
        c.legend(fontsize=7)
    fig.suptitle(f"sensor profile: {profile.frames} scans of {profile.source or 'unknown source'}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
