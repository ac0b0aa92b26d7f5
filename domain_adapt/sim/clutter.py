"""Street clutter: garages, fences and garden walls, wheelie bins.

Real streets are lined with objects a car's size and shape that are not cars. On kitti_mini's scans the
sim-trained segmenter painted exactly these as car (docs/domain_adaptation.md, "Street clutter"): a row of 2.4 m
garages, a board fence, a trailer, the low parts of a plaza. The simulator's street had none of them (facades 3.3 m
and taller, hedges, trees), so nothing taught the network that a smooth box 1-2.5 m tall beside the road can be
background. Sizes are those of German residential streets (Karlsruhe, where KITTI drove): single garages 2.6-3.2 m
wide and 2.2-2.9 m tall; fences and garden walls 0.8-2.0 m; 120-240 l wheelie bins 0.48-0.58 m wide, 0.55-0.74 m
deep, 0.93-1.07 m tall.

Everything here draws from its own generator (`Clutter.rng`), spawned from the world's, so a world without
clutter (`WorldConfig.clutter` 0, the default) draws exactly what it drew before: the bundled weights were
trained on those worlds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.materials import FACADE_COLORS, MATERIAL_IDS, MATERIALS, material_color, tint
from domain_adapt.sim.mesh import MeshBuilder
from domain_adapt.sim.road import RoadLayout, place
from domain_adapt.sim.shapes import box_mesh

FENCE_MATERIALS = ("wood", "concrete", "metal")  # a board fence, a garden wall, a sheet-metal fence


@dataclass
class Clutter:
    """What a street's clutter is drawn from: its own generator and a density in [0, 1] (the probability of each
    clutter opportunity: a garden, a gap between buildings)."""

    rng: np.random.Generator
    density: float

    def chance(self) -> bool:
        return bool(self.rng.random() < self.density)


def garage_row(parts: MeshBuilder, clutter: Clutter, layout: RoadLayout, s: float, length: float, sgn: int,
               line: float, z: float) -> float:
    """Single garages side by side from s along the building line |d| = line (side sgn), their doors to the
    street, within `length` m. Each is a flat-roofed box 2.2-2.9 m tall, 5.5-6.5 m deep, its metal door a 0.1 m
    slab on the street side. Returns the frontage used (0 when not even one fits)."""
    rng = clutter.rng
    height, depth = rng.uniform(2.2, 2.9), rng.uniform(5.5, 6.5)
    color = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.9, 1.3)
    refl = float(np.clip(rng.normal(0.40, 0.08), 0.15, 0.7))
    used = 0.0
    while True:
        width = rng.uniform(2.6, 3.2)
        if used + width > length:
            return used
        u = s + used
        # local (x along the road, y away from it); _add mirrors y onto the right side (sgn -1)
        v, t = box_mesh((0.0, 0.1, 0.0), (width, depth, height))  # the body behind its door plane
        _add(parts, layout, v, t, u, sgn, line, z, "facade", "building", color, refl)
        door_w = width - 0.5
        v, t = box_mesh((0.25, 0.0, 0.0), (0.25 + door_w, 0.1, 2.05))  # the door, 0.1 m in front of the body
        _add(parts, layout, v, t, u, sgn, line, z, "metal", "building", None,
             float(np.clip(rng.normal(0.35, 0.1), 0.05, 0.7)))
        used += width


def fence(parts: MeshBuilder, clutter: Clutter, layout: RoadLayout, s: float, length: float, sgn: int, line: float,
          z: float) -> None:
    """A fence or garden wall `length` m long from s, on the line |d| = line: 0.8-2.0 m tall, 0.04-0.25 m thick."""
    rng = clutter.rng
    material = FENCE_MATERIALS[rng.integers(len(FENCE_MATERIALS))]
    thick = 0.04 if material != "concrete" else rng.uniform(0.15, 0.25)
    height = rng.uniform(0.8, 2.0)
    v, t = box_mesh((0.0, 0.0, 0.0), (length, thick, height))
    color = tint(rng, material_color(material), 0.2)
    refl = float(np.clip(rng.normal(MATERIALS[MATERIAL_IDS[material]].reflectance, 0.08), 0.03, 0.8))
    _add(parts, layout, v, t, s, sgn, line, z, material, "fence", color, refl)


def bins(parts: MeshBuilder, clutter: Clutter, layout: RoadLayout, s: float, sgn: int, line: float,
         z: float) -> float:
    """One to four wheelie bins side by side from s, 0.2-0.6 m behind the line |d| = line. Their dark plastic
    returns little (reflectance 0.03-0.35). Returns the frontage used."""
    rng = clutter.rng
    off = rng.uniform(0.2, 0.6)
    used = 0.0
    for _ in range(int(rng.integers(1, 5))):
        w, d, h = rng.uniform(0.48, 0.58), rng.uniform(0.55, 0.74), rng.uniform(0.93, 1.07)
        v, t = box_mesh((0.0, off, 0.0), (w, off + d, h))
        color = tint(rng, (0.03, 0.05, 0.04), 0.5)
        refl = float(rng.uniform(0.03, 0.35))
        _add(parts, layout, v, t, s + used, sgn, line, z, "plastic", "other_object", color, refl)
        used += w + rng.uniform(0.02, 0.15)
    return used


def front_clutter(parts: MeshBuilder, clutter: Clutter, layout: RoadLayout, s: float, width: float, sgn: int,
                  line: float, z: float) -> None:
    """What stands in a front garden of frontage `width` from s: a fence or wall on its street side, bins."""
    if clutter.chance():
        fence(parts, clutter, layout, s, width, sgn, line, z)
    if clutter.chance():
        bins(parts, clutter, layout, s + clutter.rng.uniform(0.2, max(0.3, width - 2.5)), sgn, line, z)


def gap_clutter(parts: MeshBuilder, clutter: Clutter, layout: RoadLayout, s: float, gap: float, sgn: int,
                line: float, z: float) -> None:
    """What stands in a gap between buildings, at its street side: garages, or a fence, and perhaps bins."""
    if clutter.chance():
        used = garage_row(parts, clutter, layout, s + 0.3, gap - 0.6, sgn, line, z)
        if used == 0.0:
            fence(parts, clutter, layout, s, gap, sgn, line, z)
    elif clutter.chance():
        fence(parts, clutter, layout, s, gap, sgn, line, z)
    if clutter.chance():
        bins(parts, clutter, layout, s + clutter.rng.uniform(0.0, max(0.1, gap - 2.5)), sgn, line, z)



def _add(parts: MeshBuilder, layout: RoadLayout, v: np.ndarray, t: np.ndarray, s: float, sgn: int, line: float,
         z: float, material: str, cls: str, color, reflectance: float | None) -> None:
    """Local (x along the road from s, y away from the road from the line, z up) -> the side of sign sgn."""
    v = v * (1.0, float(sgn), 1.0)
    if sgn < 0:  # mirroring flips the winding: keep the triangles facing out
        t = t[:, ::-1]
    parts.add(place(layout, v, s, sgn * line, z), t, material, cls, 0, color, reflectance)
