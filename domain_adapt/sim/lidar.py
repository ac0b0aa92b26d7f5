"""A Velodyne HDL-64E beam model, ray-cast against a world scene with Open3D's RaycastingScene (Embree).

What is modelled, and where the numbers come from:
- 64 lasers in two blocks with uneven spacing. Datasheet (HDL-64E S2): +2.0 to -24.8 degrees, the upper
  block's lasers ~1/3 degree apart, the lower block's ~1/2 degree. Measured on the real KITTI scans of
  kitti_mini (rings split at the azimuth wrap; median elevation per ring), the upper block spans +2.4 to
  -8.2 degrees (0.34-degree steps) and the lower block -8.8 to -23.6 (0.48-degree steps); SqueezeSeg's
  published range images agree (row 0 ~ +2.3, row 63 ~ -23.5 degrees, reference/models.md 2.1). The table
  below is KITTI's, since KITTI is the target domain that simulated scans are compared with. These are the
  elevations as seen from the origin at ground distances; the real lasers fire from ~0.2 m (upper block) and
  ~0.12 m (lower block) above it at unevenly spaced angles (+1.94 to -25.0 degrees, steps 0.25-0.65).
  `LidarConfig.vertical_offsets` and a sensor profile's measured geometry (sensor_profile.laser_geometry,
  `squeeze sim --sensor-profile`) simulate that exactly.
- Azimuth: each laser fires every 360 / azimuth_steps degrees. The default, 2083 steps (0.173 deg), is
  the datasheet's ~1.33 M points/s at 10 Hz over 64 lasers; KITTI's scans agree (consecutive points of a
  ring are 0.175-0.182 deg apart, about 2000-2080 firings a turn). The 0.08-degree figure often quoted is
  the 5 Hz mode and would give about twice KITTI's point count. Each laser is offset by a fixed fraction
  of a step (the real sensor has per-laser rotational corrections), which also keeps a step count equal to
  a range image's column count from aliasing onto column edges.
- Mounting height about 1.7 m (KITTI paper, Fig. 3: 1.73 m), drawn per scene with the ground's slopes and
  bumps (`ground.py`, fitted to kitti_mini); max range 120 m (datasheet); returns closer than 2.5 m are
  dropped, as are hits on the recording car's own body (world.ego_body_mesh), which hides the lowest rings
  ahead and behind as in KITTI.
- Range noise: Gaussian, 2 cm (datasheet accuracy < 2 cm), plus a material term (foliage).
- Ray drop: a small base rate plus more at grazing incidence, on specular glass, for weak returns and at
  long range; KITTI's road returns are nearly complete to 40 m (kitti_mini: 2-5% empty pixels per row where
  there is a surface), its holes are mostly sky, glass and the far field.
- Intensity 0..1: reflectance x (0.7 + 0.3 cos(incidence)) x 1 / (1 + (r / 30 m)^5) + noise, quantised to
  0.01 and 0 below a detection threshold. Measured on kitti_mini: median intensity 0.29 within 10 m, 0.30 at
  10-20 m, 0.21 at 20-40 m (ground returns read ~0.3 almost regardless of incidence), and 69% of returns
  beyond 40 m read 0; the simulation gives 0.29, 0.30, 0.20 and 70% with these constants.

Point order is KITTI's (and what squeeze.range_image's ring mode expects): ring by ring from the top laser,
within a ring in firing order from azimuth 0 (ahead) counter-clockwise through +180, wrapping to -180 and on
to just below 0. Dropped rays are simply absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from domain_adapt.sim.materials import MATERIAL_IDS, MATERIALS
from domain_adapt.sim.world import Scene
from squeeze.jit import njit

# HDL-64E elevation table as KITTI's scans show it, ring 0 = top laser (degrees): upper block +2.4 to -8.2
# (~1/3 deg apart), lower block -8.8 to -23.6 (~1/2 deg apart). See the module docstring.
HDL64E_ELEVATIONS: tuple[float, ...] = tuple(
    np.concatenate([np.linspace(2.4, -8.2, 32), np.linspace(-8.8, -23.6, 32)]).round(4).tolist())
HDL64E_AZIMUTH_STEPS = 2083  # ~1.333 M points/s / 10 Hz / 64 lasers (datasheet); 0.173 deg

_MAT_DROP = np.array([m.drop for m in MATERIALS], np.float32)
_MAT_RANGE_SIGMA = np.array([m.range_sigma for m in MATERIALS], np.float32)
_EGO = MATERIAL_IDS["ego"]


@dataclass(frozen=True)
class LidarConfig:
    """A spinning LiDAR. Defaults: a Velodyne HDL-64E as mounted on KITTI's car (see module docstring)."""

    elevations_deg: tuple[float, ...] = HDL64E_ELEVATIONS  # one entry per laser, top first
    # Height (m) above the sensor origin that each laser fires from, one per laser; () = all from the origin.
    # A real HDL-64E's blocks sit ~0.2 and ~0.12 m up (sensor_profile.laser_geometry measures them).
    vertical_offsets: tuple[float, ...] = ()
    azimuth_steps: int = HDL64E_AZIMUTH_STEPS  # firings per laser per revolution
    max_range: float = 120.0  # m, HDL-64E datasheet
    min_range: float = 2.5  # m; closer returns are dropped (ego vehicle, rack)
    range_noise: float = 0.02  # m, Gaussian sigma (datasheet: accuracy < 2 cm)
    drop_base: float = 0.02  # random ray drop everywhere
    drop_grazing: float = 0.5  # extra drop probability as cos(incidence) goes from 0.03 (1.7 deg) to 0
    drop_far: float = 0.25  # extra drop probability at max_range (quadratic in range)
    drop_dark: float = 0.1  # extra drop probability for returns below the detection threshold
    intensity: bool = True  # False: intensity channel left at 0 (like the GTA-LiDAR data set)
    intensity_noise: float = 0.03  # Gaussian sigma on the 0..1 intensity
    intensity_falloff: float = 30.0  # m, range where the reported intensity has halved (kitti_mini)
    intensity_falloff_power: float = 5.0  # steepness of that falloff: 1 / (1 + (r / falloff) ** power)
    intensity_threshold: float = 0.04  # weaker returns read as 0 (about 10% of KITTI's points are 0)
    intensity_quantum: float = 0.01  # KITTI's .bin reflectance comes in steps of 0.01

    def __post_init__(self) -> None:
        if len(self.elevations_deg) < 1:
            raise ValueError("LidarConfig.elevations_deg must list at least one laser")
        if self.vertical_offsets and len(self.vertical_offsets) != len(self.elevations_deg):
            raise ValueError(f"LidarConfig.vertical_offsets needs one entry per laser ({len(self.elevations_deg)}), "
                             f"got {len(self.vertical_offsets)}")
        if self.azimuth_steps < 8:
            raise ValueError(f"LidarConfig.azimuth_steps must be >= 8, got {self.azimuth_steps}")
        if not 0 <= self.min_range < self.max_range:
            raise ValueError(f"need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")

    @property
    def n_rays(self) -> int:
        return len(self.elevations_deg) * self.azimuth_steps


def hdl64e(**overrides) -> LidarConfig:
    """KITTI's Velodyne HDL-64E; keyword arguments override single fields (e.g. azimuth_steps=2048)."""
    return LidarConfig(**overrides)


def laser_azimuth_offsets(n_lasers: int) -> np.ndarray:
    """(L,) fixed per-laser firing offsets as fractions of an azimuth step, in [0.1, 0.9): a golden-ratio
    sequence, so neighbouring lasers never line up and no laser fires exactly at 0 or 180 degrees."""
    return 0.1 + 0.8 * ((0.5 + 0.6180339887 * np.arange(n_lasers)) % 1.0)


@lru_cache(maxsize=8)
def ray_directions(elevations_deg: tuple[float, ...], azimuth_steps: int) -> np.ndarray:
    """(L * A, 3) float32 unit directions in the velodyne frame, ring-major in KITTI's firing order.

    Firing j of laser k points at azimuth (j + offset_k) * 360 / A degrees, counter-clockwise from +x: just
    after 0 first, through +180 (where atan2 jumps to -180) up to just below 360. Ring 0 is the first
    entry of elevations_deg.
    """
    el = np.deg2rad(np.asarray(elevations_deg, np.float64))[:, None]
    offs = laser_azimuth_offsets(len(elevations_deg))[:, None]
    az = (2 * np.pi / azimuth_steps) * (np.arange(azimuth_steps)[None, :] + offs)
    d = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], -1)
    out = d.reshape(-1, 3).astype(np.float32)
    out.flags.writeable = False
    return out


@dataclass
class Scan:
    """One simulated revolution. N points, in KITTI order.

    points:   (N, 4) float32 velodyne x, y, z, intensity (0..1; all 0 when intensity is off)
    cls:      (N,) uint8 class id of the hit triangle (world.CLASS_IDS)
    instance: (N,) uint16 instance id of the hit triangle (0 for stuff)
    ring:     (N,) uint8 laser index, 0 = top
    """

    points: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    ring: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def lidar_rays(config: LidarConfig) -> np.ndarray:
    """(L * A, 6) float32 rays (origin: the sensor, raised by the laser's vertical offset; unit direction) for
    RaycastingScene.cast_rays."""
    return _rays(config.elevations_deg, config.azimuth_steps, config.vertical_offsets)


def laser_origin_heights(config: LidarConfig) -> np.ndarray:
    """(L,) float32 height above the sensor origin each laser fires from (zeros without vertical_offsets)."""
    if not config.vertical_offsets:
        return np.zeros(len(config.elevations_deg), np.float32)
    return np.asarray(config.vertical_offsets, np.float32)


@lru_cache(maxsize=4)
def _rays(elevations_deg: tuple[float, ...], azimuth_steps: int, vertical_offsets: tuple[float, ...]) -> np.ndarray:
    d = ray_directions(elevations_deg, azimuth_steps)
    rays = np.zeros((len(d), 6), np.float32)
    if vertical_offsets:
        rays[:, 2] = np.repeat(np.asarray(vertical_offsets, np.float32), azimuth_steps)
    rays[:, 3:] = d
    rays.flags.writeable = False
    return rays


@njit(cache=True, inline="always")
def _splitmix(x: np.uint64) -> np.uint64:  # pragma: no cover - jitted
    """splitmix64 finaliser (Steele et al. 2014): a well-mixed 64-bit hash of a counter."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, inline="always")
def _uniform(seed: np.uint64, i: int, stream: int) -> float:  # pragma: no cover - jitted
    """Counter-based uniform in (0, 1] for ray i and stream k: same seed, same numbers, no state."""
    x = _splitmix(seed + np.uint64(i * 4 + stream) * np.uint64(0x9E3779B97F4A7C15))
    return (float(x >> np.uint64(11)) + 1.0) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _scan_kernel(t_hit, prim, normals, dirs, origin_z, azimuth_steps, tri_mat, tri_refl, mat_drop, mat_sigma, ego,
                 min_r, max_r, sigma_r, drop_base, drop_grazing, drop_far, drop_dark, with_intensity, sigma_i,
                 falloff, power, threshold, quantum, seed):  # pragma: no cover - jitted
    """One pass over the rays in firing order: keep a hit unless dropped, add range noise, compute the
    intensity. Returns the kept ray indices (K,) and points (K, 4) float32: origin_z[laser] + range * direction,
    the range measured from the laser's own origin as the real sensor measures it."""
    n = t_hit.shape[0]
    idx = np.empty(n, np.int64)
    pts = np.empty((n, 4), np.float32)
    k = 0
    two_pi = 2.0 * np.pi
    for i in range(n):
        t = np.float64(t_hit[i])
        if not (t >= min_r and t <= max_r):  # a miss is inf
            continue
        tri = prim[i]
        m = tri_mat[tri]
        if m == ego:
            continue
        cos_inc = abs(normals[i, 0] * dirs[i, 0] + normals[i, 1] * dirs[i, 1] + normals[i, 2] * dirs[i, 2])
        strength = tri_refl[tri] * (0.7 + 0.3 * cos_inc) / (1.0 + (t / falloff) ** power)
        p = (drop_base + mat_drop[m] + drop_grazing * max(0.0, 1.0 - cos_inc / 0.03)
             + drop_far * (t / max_r) ** 2)
        if strength < threshold:
            p += drop_dark
        if _uniform(seed, i, 0) < p:
            continue
        # Box-Muller: two Gaussians from two uniforms, one for range, one for intensity.
        rad = np.sqrt(-2.0 * np.log(_uniform(seed, i, 1)))
        ang = two_pi * _uniform(seed, i, 2)
        r = t + (sigma_r + mat_sigma[m]) * rad * np.cos(ang)
        if r < min_r:
            continue
        idx[k] = i
        pts[k, 0] = dirs[i, 0] * r
        pts[k, 1] = dirs[i, 1] * r
        pts[k, 2] = origin_z[i // azimuth_steps] + dirs[i, 2] * r
        inten = 0.0
        if with_intensity:
            inten = strength + sigma_i * rad * np.sin(ang)
            if inten < threshold:
                inten = 0.0
            inten = min(0.99, np.round(inten / quantum) * quantum)
        pts[k, 3] = inten
        k += 1
    return idx[:k], pts[:k]


def scan(hits: dict[str, np.ndarray], scene: Scene, config: LidarConfig, rng: np.random.Generator) -> Scan:
    """Turn the ray-cast results of `lidar_rays(config)` into a KITTI-like scan.

    hits: 't_hit' (R,) float32 (inf on a miss), 'primitive_ids' (R,) uint32, 'primitive_normals' (R, 3)
    float32, as returned by open3d's RaycastingScene.cast_rays (converted with .numpy()). The noise comes
    from a counter-based generator seeded by one draw from `rng`, so a frame's scan depends on rng alone.
    """
    mesh = scene.mesh
    dirs = ray_directions(config.elevations_deg, config.azimuth_steps)
    if len(mesh) == 0:
        empty = np.zeros(0, np.uint8)
        return Scan(np.zeros((0, 4), np.float32), empty, np.zeros(0, np.uint16), empty)
    prim = np.where(np.isfinite(hits["t_hit"]), hits["primitive_ids"], 0).astype(np.int64)
    seed = np.uint64(rng.integers(0, 2**63 - 1))
    idx, pts = _scan_kernel(hits["t_hit"], prim, hits["primitive_normals"], dirs, laser_origin_heights(config),
                            config.azimuth_steps, mesh.material, mesh.reflectance, _MAT_DROP, _MAT_RANGE_SIGMA,
                            _EGO, config.min_range, config.max_range, config.range_noise, config.drop_base,
                            config.drop_grazing, config.drop_far, config.drop_dark, config.intensity,
                            config.intensity_noise, config.intensity_falloff, config.intensity_falloff_power,
                            config.intensity_threshold, config.intensity_quantum, seed)
    tri = prim[idx]
    return Scan(points=pts, cls=mesh.cls[tri], instance=mesh.instance[tri],
                ring=(idx // config.azimuth_steps).astype(np.uint8))
