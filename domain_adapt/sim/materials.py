"""Classes and surface materials of the simulated world, shared by the LiDAR and the camera.

Every triangle of a scene carries a class id (`CLASS_IDS`, the suite's point-label table) and a material
(`MATERIALS`): LiDAR reflectance and ray drop at 905 nm, camera albedo and texture. Objects vary the colour
and reflectance of their *tintable* materials per instance (car paint, clothes, facades, signs, foliage).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from squeeze.classes import POINT_CLASS_IDS

# Point-label classes written to velodyne/*.label: the suite's one table (squeeze.point_labels).
CLASS_IDS = POINT_CLASS_IDS
CLASS_NAMES: dict[int, str] = {v: k for k, v in CLASS_IDS.items()}
THING_CLASSES = ("Car", "Van", "Pedestrian", "Cyclist")  # the classes with instances and KITTI labels


@dataclass(frozen=True)
class Material:
    """Surface properties shared by the LiDAR and the camera."""

    name: str
    reflectance: float  # LiDAR reflectivity at 905 nm, 0..1 (KITTI intensity of a head-on near return)
    color: tuple[float, float, float]  # linear RGB albedo (objects vary it per instance where they are built)
    drop: float = 0.0  # extra ray-drop probability (specular glass returns nothing)
    range_sigma: float = 0.0  # extra range noise in metres (foliage scatters returns in depth)
    texture: float = 0.05  # amplitude of the camera's procedural value noise


MATERIALS: tuple[Material, ...] = (
    Material("asphalt", 0.36, (0.085, 0.085, 0.09), texture=0.25),
    Material("marking", 0.75, (0.70, 0.70, 0.66), texture=0.10),  # retroreflective paint
    Material("concrete", 0.40, (0.30, 0.29, 0.27), texture=0.15),
    Material("curb", 0.42, (0.42, 0.42, 0.40), texture=0.10),
    Material("grass", 0.45, (0.09, 0.16, 0.04), texture=0.35),  # plants are bright in near-IR
    Material("facade", 0.38, (0.45, 0.40, 0.33), texture=0.06),
    Material("glass", 0.06, (0.03, 0.04, 0.05), drop=0.4, texture=0.0),
    Material("roof", 0.25, (0.20, 0.08, 0.06), texture=0.10),
    Material("bark", 0.35, (0.10, 0.07, 0.045), texture=0.20),
    Material("foliage", 0.42, (0.05, 0.12, 0.03), drop=0.10, range_sigma=0.05, texture=0.40),
    Material("metal", 0.40, (0.25, 0.25, 0.26), texture=0.03),
    Material("sign", 0.95, (0.60, 0.08, 0.06), texture=0.0),  # retroreflective sheeting
    Material("paint", 0.25, (0.40, 0.40, 0.40), texture=0.0),  # per-car colour from CAR_COLORS
    Material("car_glass", 0.05, (0.025, 0.03, 0.035), drop=0.3, texture=0.0),
    Material("tyre", 0.04, (0.02, 0.02, 0.02), texture=0.05),
    Material("plate", 0.95, (0.75, 0.75, 0.70), texture=0.0),  # licence plates: retroreflective
    Material("cloth", 0.28, (0.20, 0.20, 0.20), texture=0.08),  # per-person colour
    Material("skin", 0.40, (0.55, 0.38, 0.28), texture=0.02),
    Material("ego", 0.0, (0.05, 0.05, 0.05), drop=1.0, texture=0.0),  # the LiDAR's own car
    # street clutter (domain_adapt.sim.clutter); appended, so the ids above stay those of the written scans
    Material("wood", 0.30, (0.30, 0.20, 0.11), texture=0.30),  # board fences
    Material("plastic", 0.15, (0.03, 0.05, 0.04), texture=0.02),  # wheelie bins; per-bin colour and reflectance
)
MATERIAL_IDS: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}

# Per-material lookup tables, indexed by material id.
MATERIAL_REFLECTANCE = np.array([m.reflectance for m in MATERIALS], np.float32)  # (M,)
MATERIAL_COLOR = np.array([m.color for m in MATERIALS], np.float32)  # (M, 3) linear RGB
# Materials whose colour / reflectance an object's own tint replaces (car paint, clothing, facade, sign).
_TINTABLE = np.array([MATERIAL_IDS[n] for n in ("paint", "cloth", "facade", "sign", "foliage")], np.uint8)
TINTABLE = np.isin(np.arange(256), _TINTABLE)  # (256,) bool, material id -> tintable

# Typical car paints (linear RGB): white, silver, grey, black, dark blue, red, dark green, beige.
CAR_COLORS = np.array([
    (0.72, 0.72, 0.70), (0.45, 0.46, 0.47), (0.16, 0.16, 0.17), (0.025, 0.025, 0.03),
    (0.03, 0.05, 0.14), (0.40, 0.03, 0.03), (0.04, 0.10, 0.05), (0.42, 0.36, 0.26)])
CAR_COLOR_P = np.array([0.22, 0.20, 0.16, 0.16, 0.09, 0.08, 0.04, 0.05])
FACADE_COLORS = np.array([
    (0.55, 0.50, 0.42), (0.60, 0.58, 0.55), (0.45, 0.25, 0.18), (0.58, 0.48, 0.32), (0.35, 0.35, 0.36),
    (0.62, 0.60, 0.50), (0.40, 0.30, 0.25)])
SIGN_COLORS = np.array([(0.60, 0.06, 0.05), (0.05, 0.15, 0.55), (0.75, 0.60, 0.05), (0.75, 0.75, 0.75)])


def material_color(name: str) -> tuple[float, float, float]:
    """The default albedo of a material, by name."""
    return MATERIALS[MATERIAL_IDS[name]].color


def tint(rng: np.random.Generator, base: np.ndarray | tuple, spread: float) -> np.ndarray:
    """(3,) colour varied around `base`: a common brightness factor and a smaller per-channel one (hue)."""
    gain = rng.lognormal(0.0, spread) * (1 + rng.normal(0, spread / 3, 3))
    return np.clip(np.asarray(base, np.float64) * gain, 0.005, 0.95)

