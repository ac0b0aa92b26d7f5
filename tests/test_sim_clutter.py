"""Street clutter in the simulated world (domain_adapt.sim.clutter): garages, fences and garden walls, wheelie bins,
the things beside a real street that the sim-trained segmenter painted as car. Their sizes and places, their
labels (background for segmentation), and a world without clutter drawing exactly what it drew before."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from domain_adapt.sim import world
from domain_adapt.sim.clutter import Clutter, bins, fence, garage_row
from domain_adapt.sim.materials import CLASS_IDS
from domain_adapt.sim.mesh import MeshBuilder
from domain_adapt.sim.road import sample_layout
from domain_adapt.sim.simulator import sim_config
from squeeze.classes import POINT_CLASS_TO_SEGMENTATION, map_ids


def _layout():
    return sample_layout(np.random.default_rng(3), 130.0, 0.0)


def _lateral(layout, mesh) -> tuple[np.ndarray, np.ndarray]:
    s, d = layout.to_road(mesh.vertices[:, 0].astype(np.float64), mesh.vertices[:, 1].astype(np.float64))
    return np.asarray(s), np.asarray(d)


@pytest.mark.parametrize("sgn", [1, -1])
def test_fence_bins_and_garages_stand_behind_the_building_line_at_their_sizes(sgn):
    layout = _layout()
    line = layout.edge(0 if sgn < 0 else 1) + layout.sidewalk[0 if sgn < 0 else 1]
    clutter = Clutter(np.random.default_rng(0), 1.0)
    for _ in range(20):
        parts = MeshBuilder()
        fence(parts, clutter, layout, 10.0, 6.0, sgn, line, 0.0)
        m = parts.build()
        s, d = _lateral(layout, m)
        assert 0.8 <= m.vertices[:, 2].max() <= 2.0 and m.vertices[:, 2].min() == 0.0
        assert np.all(sgn * d >= line - 1e-3) and np.all(sgn * d <= line + 0.25 + 1e-3)  # on the line, its side
        assert s.min() == pytest.approx(10.0, abs=1e-3) and s.max() == pytest.approx(16.0, abs=0.05)
        assert set(m.cls.tolist()) == {CLASS_IDS["fence"]}
        parts = MeshBuilder()
        used = bins(parts, clutter, layout, 20.0, sgn, line, 0.0)
        m = parts.build()
        _, d = _lateral(layout, m)
        count = len(m.triangles) // 12  # a box is 12 triangles
        assert 1 <= count <= 4 and 0.48 * count <= used <= 0.73 * count
        assert 0.93 <= m.vertices[:, 2].max() <= 1.07 and np.all(sgn * d >= line + 0.2 - 1e-3)
        assert set(m.cls.tolist()) == {CLASS_IDS["other_object"]} and m.reflectance.max() <= 0.35
        parts = MeshBuilder()
        used = garage_row(parts, clutter, layout, 30.0, 7.0, sgn, line, 0.0)
        m = parts.build()
        assert 2.6 * 2 <= used <= 7.0  # two garages of 2.6-3.2 m fit in 7 m, three never
        assert 2.2 <= m.vertices[:, 2].max() <= 2.9 and set(m.cls.tolist()) == {CLASS_IDS["building"]}
    parts = MeshBuilder()
    assert garage_row(parts, clutter, layout, 30.0, 2.5, sgn, line, 0.0) == 0.0 and len(parts.build()) == 0


def test_clutter_is_background_for_segmentation():
    ids = np.array([CLASS_IDS["fence"], CLASS_IDS["other_object"], CLASS_IDS["Car"]])
    assert map_ids(ids, POINT_CLASS_TO_SEGMENTATION).tolist() == [0, 0, 1]


def _class_triangles(w: world.World) -> dict[int, int]:
    counts: dict[int, int] = {}
    for chunk in w.chunks:
        for cls, n in zip(*np.unique(chunk.mesh.cls, return_counts=True), strict=True):
            counts[int(cls)] = counts.get(int(cls), 0) + int(n)
    return counts


def test_clutter_adds_to_a_world_and_changes_nothing_else():
    """The same seed with and without clutter: the same street, actors and trees; fences, bins and garages on
    top. Clutter draws from its own generator, so worlds without it are those the bundled weights learnt on."""
    config = world.kitti_world()
    plain = world.generate_world(np.random.default_rng(7), 0.0, config)
    again = world.generate_world(np.random.default_rng(7), 0.0, replace(config, clutter=0.0))
    cluttered = world.generate_world(np.random.default_rng(7), 0.0, replace(config, clutter=1.0))
    def actors(w):
        return [(a.instance_id, a.cls, a.size, a.s0, a.d0, a.speed, a.yaw_offset) for a in w.actors]

    assert actors(plain) == actors(again) == actors(cluttered) and len(plain.actors) > 5
    assert plain.ego_lane_d == cluttered.ego_lane_d and plain.ground.sensor_height == cluttered.ground.sensor_height
    before, after = _class_triangles(plain), _class_triangles(cluttered)
    assert before == _class_triangles(again)
    assert CLASS_IDS["fence"] not in before and after[CLASS_IDS["fence"]] > 0 and after[CLASS_IDS["other_object"]] > 0
    assert after[CLASS_IDS["building"]] > before[CLASS_IDS["building"]]  # garages
    for name in ("road", "sidewalk", "vegetation", "pole", "terrain"):
        assert after.get(CLASS_IDS[name]) == before.get(CLASS_IDS[name]), name
    with pytest.raises(ValueError, match=r"clutter must be in \[0, 1\], got 1.5"):
        replace(config, clutter=1.5)
    with pytest.raises(ValueError, match=r"clutter must be in \[0, 1\], got -0.1"):
        sim_config(clutter=-0.1)


def test_sim_command_takes_clutter():
    out = subprocess.run([sys.executable, "-m", "squeeze_suite", "sim", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--clutter P" in out and "(default: 0.0, none" in " ".join(out.split())
