"""Rigid things: cars, vans and cyclists as a LiDAR sees them, inside their KITTI label boxes.

Meshes are local: origin at the box's bottom centre, x forward (length), y left (width), z up. A small bank
of body styles per class is built once per process from fixed seeds (`templates`); a world's randomness
only picks one, scales it to the sampled size and paints it (`thing_mesh`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from domain_adapt.sim.materials import CAR_COLOR_P, CAR_COLORS, CLASS_IDS, MATERIAL_IDS, TINTABLE, tint
from domain_adapt.sim.mesh import MeshBuilder, MeshData
from domain_adapt.sim.shapes import beam_mesh, box_mesh, extrude_mesh, tyre_ring_mesh, wheel_mesh


def car_mesh(rng: np.random.Generator, l: float, w: float, h: float, cls: str) -> MeshData:  # noqa: E741
    """A car (or van) to a LiDAR: chamfered lower body, narrower cabin with slanted windshield and rear
    window, four wheels, licence plates. Everything stays inside the l x w x h label box (origin at its
    bottom centre, x forward). Paint is the material's default: instances recolour it."""
    parts = MeshBuilder()
    van = cls == "Van"
    r_wheel = rng.uniform(0.29, 0.33) if not van else rng.uniform(0.32, 0.36)
    clear = r_wheel * 0.55  # body bottom above the road
    belt = h * (rng.uniform(0.56, 0.62) if not van else rng.uniform(0.45, 0.5))  # bottom of the side windows
    hl = l / 2 - 0.01
    body = np.array([(-hl, clear + 0.1), (-hl + 0.12, clear), (hl - 0.12, clear), (hl, clear + 0.1),
                     (hl, belt - 0.18), (hl - 0.35, belt), (-hl + 0.15, belt), (-hl, belt - 0.1)])
    v, t, _ = extrude_mesh(body, -w / 2 + 0.01, w / 2 - 0.01)
    parts.add(v, t, "paint", cls)
    _add_cabin(parts, rng, cls, hl, w, h, belt)
    _add_wheels(parts, rng, cls, l, w, r_wheel)
    _add_plates(parts, cls, hl, clear, belt)
    return parts.build()


def _add_cabin(parts: MeshBuilder, rng: np.random.Generator, cls: str, hl: float, w: float, h: float,
               belt: float) -> None:
    """The cabin above the belt line: trapezoid side view, windshield ~30 deg from horizontal for cars,
    ~55 deg for vans (cargo vans: glass only at the front and in the cab's side windows)."""
    van = cls == "Van"
    hood = rng.uniform(0.95, 1.25) if not van else rng.uniform(0.5, 0.8)
    x_ws = hl - hood
    slope = math.tan(math.radians(rng.uniform(28, 36) if not van else rng.uniform(55, 65)))
    x_roof_front = x_ws - (h - belt) / slope
    x_rear = -hl + (rng.uniform(0.35, 0.8) if not van else 0.05)
    x_roof_back = x_rear + (rng.uniform(0.35, 0.6) if not van else 0.05)
    cab = np.array([(x_rear, belt - 0.02), (x_ws, belt - 0.02), (x_roof_front, h - 0.005),
                    (x_roof_back, h - 0.005)])
    cw = w / 2 - rng.uniform(0.06, 0.12)
    v, t, edge = extrude_mesh(cab, -cw, cw)
    glass, pm = MATERIAL_IDS["car_glass"], MATERIAL_IDS["paint"]
    # edges: 0 bottom (hidden), 1 windshield, 2 roof, 3 rear window; caps are the side windows.
    mat = np.where(edge == 2, pm, glass)
    if van:
        mat = np.where((edge == 3) | (edge == -1), pm, mat)
        # Side windows of the cab: behind the windshield line, 0.9 m long.
        z0, z1 = belt + 0.08, h - 0.12
        xf0, xf1 = x_ws - 0.05, x_ws - (z1 - belt) / slope - 0.05
        xb = xf0 - 0.95
        window = np.array([(xb, z0), (xf0, z0), (xf1, z1), (xb, z1)])
        wv, wt, _ = extrude_mesh(window, -cw - 0.005, cw + 0.005)
        parts.add(wv, wt, "car_glass", cls)
    parts.add(v, t, mat.astype(np.uint8), cls)


def _add_wheels(parts: MeshBuilder, rng: np.random.Generator, cls: str, l: float, w: float,  # noqa: E741
                r_wheel: float) -> None:
    """Four wheels as 10-gon discs 0.2 m wide, inside the box width."""
    wb = l / 2 - rng.uniform(0.7, 0.85)
    tw = 0.2
    for x in (wb, -wb):
        for side in (-1, 1):
            wv, wt = wheel_mesh(r_wheel, tw, 10)
            wv = wv + (x, side * (w / 2 - tw / 2 - 0.02), r_wheel)
            parts.add(wv, wt, "tyre", cls)


def _add_plates(parts: MeshBuilder, cls: str, hl: float, clear: float, belt: float) -> None:
    """Front and rear licence plates (retroreflective, bright in the LiDAR's intensity)."""
    for x, sgn in ((hl, 1), (-hl, -1)):
        z0 = clear + 0.2 if sgn > 0 else belt - 0.45
        pv = np.array([(x + sgn * 0.004, -0.26, z0), (x + sgn * 0.004, 0.26, z0),
                       (x + sgn * 0.004, 0.26, z0 + 0.11), (x + sgn * 0.004, -0.26, z0 + 0.11)])
        pt = np.array([[0, 1, 2], [0, 2, 3]] if sgn > 0 else [[0, 2, 1], [0, 3, 2]], np.int32)
        parts.add(pv, pt, "plate", cls)


def cyclist_mesh(rng: np.random.Generator, l: float, w: float, h: float) -> MeshData:  # noqa: E741
    """Bicycle (two tyre rings, frame tubes, handlebar) plus a rider leaning forward, inside l x w x h.
    The rider's clothes are the material default: instances recolour them."""
    parts = MeshBuilder()
    r = min(0.345, l / 2 - 0.55)  # 700c / 28" wheel radius ~0.34 m
    seat, bb, bar = _add_bicycle(parts, rng, l, w, r)
    _add_rider(parts, rng, h, seat, bb, bar)
    return parts.build()


def _add_bicycle(parts: MeshBuilder, rng: np.random.Generator, l: float, w: float,  # noqa: E741
                 r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wheels of radius r, a diamond frame and the handlebar. Returns the seat, bottom bracket and
    handlebar centre, (3,) each, where the rider attaches."""
    xf, xr = l / 2 - r - 0.01, -l / 2 + r + 0.01
    frames = np.array([(0.5, 0.05, 0.05), (0.05, 0.05, 0.05), (0.2, 0.3, 0.6), (0.6, 0.6, 0.6)])
    frame_col = tint(rng, frames[rng.integers(len(frames))], 0.05)
    for x in (xf, xr):
        v, t = tyre_ring_mesh(r, 0.04, 12)
        parts.add(v + (x, 0, r), t, "tyre", "Cyclist")
    seat = np.array([xr + 0.38, 0.0, r + 0.6])
    bb = np.array([xr + 0.55, 0.0, r - 0.02])  # bottom bracket
    head = np.array([xf - 0.2, 0.0, r + 0.55])
    rear_hub, front_hub = np.array([xr, 0, r]), np.array([xf, 0, r])
    for a, b in ((rear_hub, bb), (rear_hub, seat), (bb, seat), (bb, head), (seat, head), (head, front_hub)):
        v, t = beam_mesh(a, b, 0.04)
        parts.add(v, t, "metal", "Cyclist", 0, frame_col)
    bar = head + (0.05, 0, 0.12)
    v, t = beam_mesh(bar - (0, w / 2 - 0.03, 0), bar + (0, w / 2 - 0.03, 0), 0.035)
    parts.add(v, t, "metal", "Cyclist")
    return seat, bb, bar


def _add_rider(parts: MeshBuilder, rng: np.random.Generator, h: float, seat: np.ndarray, bb: np.ndarray,
               bar: np.ndarray) -> None:
    """A rider of height h leaning forward: torso, head, arms to the handlebar, legs to the pedals."""
    hip = seat + (0, 0, 0.08)
    shoulder = np.array([hip[0] + 0.35, 0.0, h - 0.3])
    v, t = beam_mesh(hip, shoulder, 0.2, 0.36)
    parts.add(v, t, "cloth", "Cyclist")
    v, t = box_mesh(shoulder + (-0.05, -0.09, 0.05), shoulder + (0.16, 0.09, 0.3 - 0.002))
    parts.add(v, t, "skin", "Cyclist")
    for side in (-1, 1):
        v, t = beam_mesh(shoulder + (0, side * 0.2, -0.04), bar + (0, side * 0.22, 0.02), 0.08)
        parts.add(v, t, "cloth", "Cyclist")
        pedal = bb + (side * 0.12 * rng.uniform(-1, 1), side * 0.1, -0.1 * rng.uniform(0, 1))
        knee = hip + (0.32, side * 0.1, -0.22)
        for a, b in ((hip + (0, side * 0.1, 0), knee), (knee, pedal)):
            v, t = beam_mesh(a, b, 0.12)
            parts.add(v, t, "cloth", "Cyclist")


def _clip_to_box(m: MeshData, l: float, w: float, h: float) -> MeshData:  # noqa: E741
    """Clamp vertices into the label box in place (a few mm of rounding at the faces must not leak out)."""
    v = m.vertices
    v[:, 0] = np.clip(v[:, 0], -l / 2, l / 2)
    v[:, 1] = np.clip(v[:, 1], -w / 2, w / 2)
    v[:, 2] = np.clip(v[:, 2], 0.0, h)
    return m


@dataclass(frozen=True)
class Template:
    """A thing's mesh at a nominal size; instances scale it to their sampled (l, w, h) and recolour it."""

    mesh: MeshData
    size: tuple[float, float, float]  # (l, w, h) the vertices were built for
    tint: np.ndarray  # (T,) bool, triangles an instance recolours (paint, clothes)


_N_TEMPLATES = {"Car": 8, "Van": 4, "Cyclist": 6}  # body styles per class
_NOMINAL = {"Car": (3.88, 1.63, 1.52), "Van": (5.0, 1.9, 2.2), "Cyclist": (1.76, 0.6, 1.74)}  # KITTI means


@lru_cache(maxsize=8)
def templates(cls: str) -> tuple[Template, ...]:
    """A small bank of body styles per class (cabin length, windshield slope, bonnet, wheel size...), built
    once per process from fixed seeds, so a world's randomness only picks, scales and paints them."""
    out = []
    length, width, height = _NOMINAL[cls]
    for k in range(_N_TEMPLATES[cls]):
        rng = np.random.default_rng([7919, CLASS_IDS[cls], k])
        if cls == "Cyclist":
            m = cyclist_mesh(rng, length, width, height)
        else:
            m = car_mesh(rng, length, width, height, cls)
        m = _clip_to_box(m, length, width, height)
        out.append(Template(m, (length, width, height), TINTABLE[m.material]))
    return tuple(out)


def thing_mesh(rng: np.random.Generator, cls: str, size: tuple[float, float, float], iid: int) -> MeshData:
    """A Car, Van or Cyclist instance: a template scaled to `size` (l, w, h) with its own paint or clothes,
    every triangle labelled as instance `iid`."""
    bank = templates(cls)
    tpl = bank[int(rng.integers(len(bank)))]
    m = tpl.mesh
    if cls == "Cyclist":
        color = tint(rng, rng.uniform(0.05, 0.6, 3), 0.05)
        refl = float(np.clip(0.08 + 0.6 * color.mean() + rng.normal(0, 0.04), 0.03, 0.7))
    else:
        color = CAR_COLORS[rng.choice(len(CAR_COLORS), p=CAR_COLOR_P)] * rng.uniform(0.9, 1.1)
        luma = float(color @ [0.3, 0.59, 0.11])
        refl = float(np.clip(0.12 + 0.6 * luma + rng.normal(0, 0.04), 0.04, 0.7))  # dark paint returns little
    col = m.color.copy()
    col[tpl.tint] = color
    r = m.reflectance.copy()
    r[tpl.tint] = refl
    v = (m.vertices * (np.asarray(size) / np.asarray(tpl.size))).astype(np.float32)
    return MeshData(v, m.triangles, m.material, m.cls, np.full(len(m), iid, np.uint16), r, col)
