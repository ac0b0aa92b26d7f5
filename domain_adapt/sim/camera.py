"""KITTI's left colour camera (image_2), rendered by ray casting the same scene as the LiDAR.

Calibration: the intrinsics and stereo baselines are KITTI's (drive 2011_09_26, as in the object
benchmark's calib files: fx = fy = 721.5377, cx = 609.5593, cy = 172.854, 1242 x 375). The LiDAR-to-camera
transform is KITTI's lever arm (camera 0.27 m ahead of and 0.076 m below the Velodyne) with the rotation
made an exact axis permutation (velodyne x forward -> camera z, y left -> -x, z up -> -y) and R0_rect the
identity. Real KITTI rotations are a few tenths of a degree off; exact axes keep the simulated boxes
upright in both frames, so labels and point-in-box tests agree to the millimetre.

Rendering: one ray per pixel centre through the pinhole of P2, Lambert shading with a sun and a sky
(hemisphere) term, per-material colours with per-instance variation, procedural value-noise texture fixed
to world coordinates (it does not swim in sequences), a Fresnel sky reflection on glass, distance fog and a
sky gradient. Optional shadow rays (CameraConfig.shadows; off by default, about +25% frame time).
KITTI labels from what this camera sees: `labels.py`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numba
import numpy as np

from domain_adapt.sim.materials import MATERIAL_IDS, MATERIALS
from domain_adapt.sim.world import Scene
from squeeze.jit import njit
from squeeze.kitti import Calibration

# KITTI 2011_09_26 rectified projection matrices (calib_cam_to_cam.txt, P_rect_00..03): cameras 0/1 are the
# grey pair, 2/3 the colour pair; the 4th column holds -fx * baseline (0.54 m stereo base).
_FX, _CX, _CY = 721.5377, 609.5593, 172.854
KITTI_P = {
    "P0": (0.0, 0.0, 0.0),
    "P1": (-387.5744, 0.0, 0.0),
    "P2": (44.85728, 0.2163791, 0.002745884),
    "P3": (-339.5242, 2.199936, 0.002729905),
}
# KITTI 2011_09_26 calib_velo_to_cam.txt translation (m): the camera sits 0.27 m ahead of the Velodyne.
_VELO_TO_CAM_T = (-0.004069766, -0.07631618, -0.2717806)
# calib_imu_to_velo.txt translation (m): the OXTS unit is 0.81 m behind and 0.80 m below the Velodyne.
_IMU_TO_VELO_T = (-0.8086759, 0.3195559, -0.7997231)


def kitti_calibration() -> Calibration:
    """A KITTI-like object-benchmark calibration for the simulated car (see the module docstring)."""
    P = {}
    for key, col in KITTI_P.items():
        m = np.array([[_FX, 0.0, _CX, 0.0], [0.0, _FX, _CY, 0.0], [0.0, 0.0, 1.0, 0.0]])
        m[:, 3] = col
        P[key] = m
    tr = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    tr[:, 3] = _VELO_TO_CAM_T
    imu = np.hstack([np.eye(3), np.array(_IMU_TO_VELO_T)[:, None]])
    return Calibration(P0=P["P0"], P1=P["P1"], P2=P["P2"], P3=P["P3"], R0_rect=np.eye(3), Tr_velo_to_cam=tr,
                       Tr_imu_to_velo=imu)


@dataclass(frozen=True)
class CameraConfig:
    """Image size, lighting and labelling thresholds of the simulated image_2 camera."""

    width: int = 1242  # pixels, KITTI image_2 (drive 2011_09_26)
    height: int = 375  # pixels
    ambient: float = 0.55  # sky (hemisphere) light relative to the sun
    sun_strength: float = 1.0  # direct sunlight
    exposure: float = 1.6  # scales linear radiance before the tone curve
    fog_distance: float = 900.0  # m, e-folding distance of the haze; 0 disables fog
    shadows: bool = False  # shadow rays towards the sun (one any-hit ray per pixel, ~+25% frame time)
    noise: float = 1.2  # sensor noise, std in 8-bit levels
    min_visible_pixels: int = 12  # objects with fewer visible pixels are not labelled
    dontcare_height: float = 10.0  # visible objects whose clipped box is shorter (px) become DontCare

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ValueError(f"camera image must be at least 8 x 8, got {self.width} x {self.height}")


def kitti_camera() -> CameraConfig:
    return CameraConfig()


_CAM_CACHE: dict[bytes, np.ndarray] = {}


def camera_rays(calib: Calibration, width: int, height: int) -> np.ndarray:
    """(H * W, 6) float32 rays in the velodyne frame, row-major from the top-left pixel.

    Each ray starts at image_2's optical centre and passes through a pixel centre (integer u, v: the
    convention of geometry.rect_to_image): with P2 = K [I | t], the centre is -t in rectified coordinates
    and the direction K^-1 [u, v, 1], both moved to the velodyne frame by calib.rect_to_velo.
    """
    key = calib.P2.tobytes() + calib.velo_to_rect.tobytes() + np.array([width, height]).tobytes()
    if key in _CAM_CACHE:
        return _CAM_CACHE[key]
    P = calib.P2
    K = P[:, :3]
    t = np.linalg.solve(K, P[:, 3])
    T = calib.rect_to_velo
    origin = T[:3, :3] @ (-t) + T[:3, 3]
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    d = pix @ np.linalg.inv(K).T @ T[:3, :3].T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    rays = np.empty((len(d), 6), np.float32)
    rays[:, :3] = origin
    rays[:, 3:] = d
    rays.flags.writeable = False
    if len(_CAM_CACHE) > 8:
        _CAM_CACHE.clear()
    _CAM_CACHE[key] = rays
    return rays


@dataclass
class CameraImage:
    """One rendered frame of image_2.

    image:    (H, W, 3) uint8 RGB
    instance: (H, W) uint16 instance id of the surface seen in each pixel, 0 for stuff and sky
    depth:    (H, W) float32 distance along the pixel's ray in metres, inf for sky
    """

    image: np.ndarray
    instance: np.ndarray
    depth: np.ndarray


_MAT_TEXTURE = np.array([m.texture for m in MATERIALS], np.float32)
_GLASS = np.zeros(len(MATERIALS), np.bool_)
_GLASS[[MATERIAL_IDS["glass"], MATERIAL_IDS["car_glass"]]] = True


@njit(cache=True, inline="always")
def _hash01(ix: int, iy: int, iz: int, seed: int) -> float:  # pragma: no cover - jitted
    """A cheap integer hash of a lattice cell -> [0, 1] (procedural texture and sensor noise)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791) ^ (seed * 2654435761)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return (h & 0xFFFF) / 65535.0


@njit(cache=True, inline="always")
def _texture(origin, dx, dy, dz, t, world_rot, world_t, amp):  # pragma: no cover - jitted
    """Value noise at two scales (0.5 m and 8 cm cells) fixed to world coordinates, so it does not swim in
    sequences: the albedo factor 1 +- amp at the hit point origin (3,) + t * (dx, dy, dz), velodyne frame."""
    px = origin[0] + dx * t
    py = origin[1] + dy * t
    pz = origin[2] + dz * t
    wx = world_rot[0, 0] * px + world_rot[0, 1] * py + world_rot[0, 2] * pz + world_t[0]
    wy = world_rot[1, 0] * px + world_rot[1, 1] * py + world_rot[1, 2] * pz + world_t[1]
    wz = world_rot[2, 0] * px + world_rot[2, 1] * py + world_rot[2, 2] * pz + world_t[2]
    coarse = _hash01(int(math.floor(wx * 2.0)), int(math.floor(wy * 2.0)), int(math.floor(wz * 2.0)), 1)
    fine = _hash01(int(math.floor(wx * 12.0)), int(math.floor(wy * 12.0)), int(math.floor(wz * 12.0)), 2)
    return 1.0 + amp * (0.8 * coarse + 1.2 * fine - 1.0)


# Tone curve 1 - exp(-x) then gamma 2.2, tabulated over x in [0, _TONE_MAX): three pow() and three exp()
# per pixel were the slowest part of shading.
_TONE_MAX = 8.0
_TONE_LUT = (255.0 * (1.0 - np.exp(-np.linspace(0, _TONE_MAX, 4096))) ** (1 / 2.2)).astype(np.float32)


@njit(cache=True, parallel=True)
def _shade(t_hit, prim, normals, dirs, origin, world_rot, world_t, tri_color, tri_mat, mat_texture, glass,
           sun, shadow, ambient, sun_strength, exposure, fog, sky_zenith, sky_horizon, lut, noise,
           noise_seed):  # pragma: no cover - jitted
    """Shade every pixel: (H*W,) ray hits -> (H*W, 3) uint8 RGB, sensor noise included."""
    n = t_hit.shape[0]
    out = np.empty((n, 3), np.uint8)
    scale = (lut.shape[0] - 1) / _TONE_MAX * exposure
    amp_noise = noise * 3.4641  # uniform noise of std `noise`: width sqrt(12) * std
    for i in numba.prange(n):
        dx, dy, dz = dirs[i, 0], dirs[i, 1], dirs[i, 2]
        sky_w = min(1.0, max(dz, 0.0) * 4.0)
        sky0 = sky_horizon[0] * (1 - sky_w) + sky_zenith[0] * sky_w
        sky1 = sky_horizon[1] * (1 - sky_w) + sky_zenith[1] * sky_w
        sky2 = sky_horizon[2] * (1 - sky_w) + sky_zenith[2] * sky_w
        t = t_hit[i]
        if not np.isfinite(t):
            r, g, b = sky0, sky1, sky2
        else:
            tri = prim[i]
            nx, ny, nz = normals[i, 0], normals[i, 1], normals[i, 2]
            cosv = nx * dx + ny * dy + nz * dz
            if cosv > 0:  # two-sided: face the camera
                nx, ny, nz = -nx, -ny, -nz
                cosv = -cosv
            lam = max(0.0, nx * sun[0] + ny * sun[1] + nz * sun[2])
            if shadow[i]:
                lam = 0.0
            light = ambient * (0.6 + 0.4 * nz) + sun_strength * lam
            m = tri_mat[tri]
            amp = mat_texture[m]
            tex = 1.0
            if amp > 0:
                tex = _texture(origin, dx, dy, dz, t, world_rot, world_t, amp)
            r = tri_color[tri, 0] * tex * light
            g = tri_color[tri, 1] * tex * light
            b = tri_color[tri, 2] * tex * light
            if glass[m]:  # Schlick's Fresnel term reflecting the sky
                f = 0.04 + 0.96 * (1.0 + cosv) ** 5
                r += f * sky0 * 0.8
                g += f * sky1 * 0.8
                b += f * sky2 * 0.8
            if fog > 0:
                k = math.exp(-t / fog)
                r = r * k + sky_horizon[0] * (1 - k)
                g = g * k + sky_horizon[1] * (1 - k)
                b = b * k + sky_horizon[2] * (1 - k)
        rgb = (r, g, b)
        for c in range(3):
            j = min(int(max(rgb[c], 0.0) * scale), lut.shape[0] - 1)
            v = lut[j] + amp_noise * (_hash01(i, c, 7, noise_seed) - 0.5) + 0.5
            out[i, c] = np.uint8(min(max(v, 0.0), 255.0))
    return out


def render(hits: dict[str, np.ndarray], scene: Scene, config: CameraConfig, rng: np.random.Generator,
           calib: Calibration, shadow_hits: np.ndarray | None = None) -> CameraImage:
    """Shade the ray-cast results of `camera_rays(calib, W, H)` into an image plus instance and depth maps.

    hits: 't_hit', 'primitive_ids', 'primitive_normals' as numpy arrays (see lidar.scan). shadow_hits:
    optional (H*W,) bool, True where the sun is blocked (from `shadow_rays`).
    """
    h, w = config.height, config.width
    rays = camera_rays(calib, w, h)
    t = hits["t_hit"]
    finite = np.isfinite(t)
    mesh = scene.mesh
    if len(mesh) == 0:
        finite[:] = False
        t = np.full_like(t, np.inf)
        tri_color, tri_mat = np.zeros((1, 3), np.float32), np.zeros(1, np.uint8)
        tri_inst = np.zeros(1, np.uint16)
    else:
        tri_color, tri_mat, tri_inst = mesh.color, mesh.material, mesh.instance
    prim = np.where(finite, hits["primitive_ids"], 0).astype(np.int64)
    shadow = np.zeros(len(t), np.bool_) if shadow_hits is None else shadow_hits
    sky_zenith = np.array([0.18, 0.32, 0.62]) * rng.uniform(0.9, 1.1)
    sky_horizon = np.array([0.62, 0.68, 0.75]) * rng.uniform(0.9, 1.1)
    T = scene.world_from_velo
    with warnings.catch_warnings():  # numba probes an old TBB before settling on OpenMP: not our concern
        warnings.filterwarnings("ignore", message=".*The TBB threading layer")
        img = _shade(t, prim, hits["primitive_normals"], rays[:, 3:], rays[0, :3].astype(np.float64),
                     T[:3, :3], T[:3, 3], tri_color, tri_mat, _MAT_TEXTURE, _GLASS,
                     scene.sun.astype(np.float64), shadow, config.ambient, config.sun_strength,
                     config.exposure, config.fog_distance, sky_zenith, sky_horizon, _TONE_LUT, config.noise,
                     int(rng.integers(1 << 30)))
    inst = np.where(finite, tri_inst[prim], 0).astype(np.uint16).reshape(h, w)
    return CameraImage(image=img.reshape(h, w, 3), instance=inst, depth=t.reshape(h, w).astype(np.float32))


def shadow_rays(hits: dict[str, np.ndarray], scene: Scene, calib: Calibration,
                config: CameraConfig) -> np.ndarray:
    """(H*W, 6) float32 rays from each camera hit point towards the sun (misses point up, harmlessly)."""
    rays = camera_rays(calib, config.width, config.height)
    t = np.where(np.isfinite(hits["t_hit"]), hits["t_hit"], 0.0)[:, None]
    n = hits["primitive_normals"]
    flip = np.sign(-(n * rays[:, 3:]).sum(1, keepdims=True))
    out = np.empty_like(rays)
    out[:, :3] = rays[:, :3] + rays[:, 3:] * t + n * flip * 0.02
    out[:, 3:] = scene.sun.astype(np.float32)
    return out
