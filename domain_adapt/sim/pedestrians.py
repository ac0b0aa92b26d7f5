"""Pedestrians: an articulated walker of six boxes, re-posed every frame as its legs and arms swing.

A pedestrian's look (`Outfit`) and walk (`Gait`) are drawn once when the world is made; `pedestrian_mesh`
poses the body at a gait phase.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.materials import CLASS_IDS, MATERIAL_IDS, MATERIAL_REFLECTANCE, material_color, tint
from domain_adapt.sim.mesh import MeshData
from domain_adapt.sim.shapes import BOX_BITS, BOX_TRIS

_MAX_SWING = math.radians(24)  # hip swing amplitude of a walking stride


@dataclass(frozen=True)
class Gait:
    """How a pedestrian walks: the stride's phase at t = 0 (rad) and its cadence (strides per second)."""

    phase: float
    cadence: float

    def phase_at(self, t: float, walking: bool) -> float:
        """The stride phase at time t (s); a standing pedestrian keeps its initial pose."""
        return self.phase + (2 * math.pi * self.cadence * t if walking else 0.0)


@dataclass(frozen=True, eq=False)
class Outfit:
    """Colours (linear RGB, (3,) each) and LiDAR reflectances of a pedestrian's clothes and skin."""

    shirt: np.ndarray
    shirt_reflectance: float
    legs: np.ndarray
    legs_reflectance: float
    skin: np.ndarray


def sample_walker(rng: np.random.Generator, speed: float) -> tuple[Gait, Outfit]:
    """Draw a pedestrian's gait (cadence ~ speed / stride length) and outfit.

    The draws interleave gait and outfit in the order the bundled data sets were generated with.
    """
    shirt = tint(rng, rng.uniform(0.03, 0.6, 3), 0.05)
    phase = float(rng.uniform(0, 2 * math.pi))
    cadence = float(rng.uniform(0.85, 1.0)) * speed / 1.3  # strides per second ~ speed / stride
    shirt_refl = float(np.clip(0.08 + 0.6 * shirt.mean() + rng.normal(0, 0.04), 0.03, 0.7))
    legs = tint(rng, rng.choice([(0.03, 0.04, 0.09), (0.05, 0.05, 0.05), (0.3, 0.27, 0.2)]), 0.05)
    legs_refl = float(np.clip(rng.normal(0.2, 0.06), 0.03, 0.5))
    skin = tint(rng, material_color("skin"), 0.2)
    return Gait(phase, cadence), Outfit(shirt, shirt_refl, legs, legs_refl, skin)


_PED_TRIS = (BOX_TRIS[None] + 8 * np.arange(6)[:, None, None]).reshape(-1, 3)  # (72, 3): six boxes
_PED_MAT = np.repeat(np.array([MATERIAL_IDS[m] for m in ("cloth", "cloth", "cloth", "skin", "cloth",
                                                          "cloth")], np.uint8), 12)
_PED_CLS = np.full(72, CLASS_IDS["Pedestrian"], np.uint8)


def pedestrian_mesh(size: tuple[float, float, float], outfit: Outfit, phase: float, walking: bool,
                    iid: int) -> MeshData:
    """A walker of size (l, w, h) at stride `phase`: six boxes (legs, torso, head, arms), x forward; legs and
    arms swing in opposite phase about hip and shoulder. 48 vertices, 72 triangles, built in one vectorised
    step because it is re-posed every frame."""
    l, w, h = size  # noqa: E741
    leg = 0.47 * h
    hip = leg + 0.02
    shoulder = 0.81 * h
    swing = _MAX_SWING * math.sin(phase) if walking else 0.0
    max_swing = math.asin(min(1.0, (l / 2 - 0.08) / leg))  # the feet stay inside the box length
    swing = float(np.clip(swing, -max_swing, max_swing))
    torso_w = min(0.42, w - 0.26)
    hy = torso_w / 4
    arm = 0.33 * h
    ay = w / 2 - 0.055
    # Per part: pivot (3), box lo (3) and hi (3) around the pivot, pitch angle (forward positive).
    pivot = np.array([[0, hy, hip], [0, -hy, hip], [0, 0, 0], [0, 0, 0], [0, ay, shoulder - 0.03],
                      [0, -ay, shoulder - 0.03]])
    lo = np.array([[-0.07, -0.075, -leg], [-0.07, -0.075, -leg], [-0.11, -torso_w / 2, hip - 0.08],
                   [-0.09, -0.08, shoulder + 0.04], [-0.045, -0.045, -arm], [-0.045, -0.045, -arm]])
    hi = np.array([[0.07, 0.075, 0], [0.07, 0.075, 0], [0.11, torso_w / 2, shoulder], [0.11, 0.08, h - 0.002],
                   [0.045, 0.045, 0], [0.045, 0.045, 0]])
    ang = np.array([swing, -swing, 0, 0, -0.8 * swing, 0.8 * swing])
    v = _pitched_boxes(lo, hi, ang) + pivot[:, None, :]
    o = outfit
    colors = np.array([o.legs, o.legs, o.shirt, o.skin, o.shirt, o.shirt], np.float32)
    refl = np.array([o.legs_reflectance, o.legs_reflectance, o.shirt_reflectance,
                     MATERIAL_REFLECTANCE[MATERIAL_IDS["skin"]], o.shirt_reflectance, o.shirt_reflectance],
                    np.float32)
    return MeshData(v.reshape(-1, 3).astype(np.float32), _PED_TRIS, _PED_MAT, _PED_CLS,
                    np.full(72, iid, np.uint16), np.repeat(refl, 12), np.repeat(colors, 12, axis=0))


def _pitched_boxes(lo: np.ndarray, hi: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(K, 8, 3) corners of K boxes from lo (K, 3) to hi (K, 3), each pitched by angle (K,) rad about +y."""
    c = lo[:, None, :] + BOX_BITS[None] * (hi - lo)[:, None, :]
    ca, sa = np.cos(angle)[:, None], np.sin(angle)[:, None]
    x = c[..., 0] * ca - c[..., 2] * sa
    z = c[..., 0] * sa + c[..., 2] * ca
    return np.stack([x, c[..., 1], z], -1)
