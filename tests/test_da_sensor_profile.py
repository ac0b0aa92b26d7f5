"""Sensor profile: measured from real scans, applied to simulated ones (issue 13, step 1)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from domain_adapt.readers import find_scans, read_scan
from domain_adapt.sensor_profile import (
    QUANTILES,
    RING_IMAGE_WIDTH,
    SensorProfile,
    apply_sensor_profile,
    calibrate_sensor,
    drop_counts,
    read_profile,
    ring_image,
    write_profile,
)
from squeeze.errors import DataError
from squeeze.range_image import RangeImage, write_range_npy


def _cylinder_scan(rings: int, radius: float, intensity_of_ring, keep=None, width: int = RING_IMAGE_WIDTH):
    """One point per ring image cell on a cylinder around the sensor (a wall at `radius`), cell centres."""
    az = np.pi - (np.arange(width) + 0.5) / width * 2 * np.pi
    pts, ring = [], []
    for r in range(rings):
        z = np.full(width, 1.0 - 0.1 * r)
        p = np.stack([radius * np.cos(az), radius * np.sin(az), z, np.full(width, intensity_of_ring(r))], axis=1)
        pts.append(p)
        ring.append(np.full(width, r))
    pts, ring = np.concatenate(pts).astype(np.float32), np.concatenate(ring)
    if keep is not None:
        pts, ring = pts[keep], ring[keep]
    return pts, ring


def test_ring_image_and_drop_counts_hand_computed():
    pts, ring = _cylinder_scan(2, 10.0, lambda r: 0.5)
    image = ring_image(pts, ring, rings=2)
    assert image.shape == (2, RING_IMAGE_WIDTH) and np.allclose(image, np.hypot(10.0, 1.0 - 0.1 * np.array([[0], [1]])),
                                                                 atol=1e-4)
    # drop every 10th cell of ring 1: 1/10 of its candidate cells are empty; ring 0 drops nothing
    keep = ~((ring == 1) & (np.arange(len(ring)) % 10 == 0))
    dropped, candidates = drop_counts(ring_image(pts[keep], ring[keep], rings=2))
    assert dropped[0].sum() == 0 and candidates[0].sum() == RING_IMAGE_WIDTH
    assert dropped[1].sum() == RING_IMAGE_WIDTH // 10 + 1  # 205 cells at 0, 10, ..., 2040
    assert candidates[1].sum() == RING_IMAGE_WIDTH - 2 * (RING_IMAGE_WIDTH // 10 + 1)  # a gap's neighbours are not
    assert np.all(np.delete(candidates, 1, axis=1) == 0)  # all at 10.05 m: the 10-20 m bin


def test_calibrated_profile_moves_a_simulated_scan_to_the_real_statistics():
    rng = np.random.default_rng(0)
    # "real": ring-dependent intensity (odd rings dark), 20% random ray drop
    real_pts, real_ring = _cylinder_scan(4, 15.0, lambda r: 0.0)
    real_pts[:, 3] = np.where(real_ring % 2 == 0, rng.uniform(0.4, 0.6, len(real_pts)), rng.uniform(0.0, 0.1,
                                                                                                     len(real_pts)))
    keep = rng.random(len(real_pts)) >= 0.2
    profile = calibrate_sensor([(real_pts[keep], real_ring[keep])], rings=4, source="synthetic")
    assert profile.drop_rate[:, 1] == pytest.approx(0.2, abs=0.03)
    assert profile.intensity_quantiles[0, 50] == pytest.approx(0.5, abs=0.02)
    assert profile.intensity_quantiles[1, 50] == pytest.approx(0.05, abs=0.01)
    assert profile.ring_step == pytest.approx(0.45, abs=0.03)
    # "simulated": every laser alike (intensity 0.3 +- noise), no drop
    sim_pts, sim_ring = _cylinder_scan(4, 15.0, lambda r: 0.3)
    sim_pts[:, 3] += rng.normal(0, 0.02, len(sim_pts)).astype(np.float32)
    before = calibrate_sensor([(sim_pts, sim_ring)], rings=4)
    assert before.ring_step < 0.02 and before.drop_rate.max() == 0.0
    kept, out = apply_sensor_profile(sim_pts, sim_ring, profile, np.random.default_rng(1))
    after = calibrate_sensor([(out, sim_ring[kept])], rings=4)
    assert 1 - kept.mean() == pytest.approx(0.2, abs=0.02)
    assert after.drop_rate[:, 1].tolist() == pytest.approx([0.2] * 4, abs=0.045), after.drop_rate
    assert after.ring_step == pytest.approx(profile.ring_step, abs=0.02)
    assert np.abs(after.intensity_quantiles - profile.intensity_quantiles).max() < 0.03
    # rank is kept within a ring: the brightest simulated return of ring 0 is still its brightest
    r0 = sim_ring[kept] == 0
    assert np.argmax(out[r0, 3]) == np.argmax(sim_pts[kept][r0, 3])
    assert np.array_equal(out[:, :3], sim_pts[kept, :3])  # geometry untouched


def test_profile_json_round_trip_and_bad_files(tmp_path):
    q = np.tile(np.linspace(0, 1, QUANTILES, dtype=np.float32), (3, 1))
    profile = SensorProfile(q, np.full((3, 6), 0.25, np.float32), frames=2, source="x")
    write_profile(tmp_path / "p.json", profile)
    back = read_profile(tmp_path / "p.json")
    assert np.allclose(back.intensity_quantiles, q, atol=1e-5) and np.allclose(back.drop_rate, 0.25)
    assert back.frames == 2 and back.rings == 3
    d = json.loads((tmp_path / "p.json").read_text())
    d["intensity_quantiles"][1][5] = -1.0  # no longer non-decreasing
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="bad.json.*non-decreasing"):
        read_profile(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="not a sensor profile"):
        read_profile(tmp_path / "other.json")
    with pytest.raises(DataError, match="no scans"):
        calibrate_sensor([])


def test_readers_find_each_layout(tmp_path):
    # range-image folder: rows are rings
    xyz = np.zeros((64, 512, 3), np.float32)
    xyz[5, 7] = (10.0, 1.0, -1.0)
    xyz[40, 100] = (5.0, -2.0, -1.5)
    rng = np.linalg.norm(xyz, axis=2)
    intensity = np.zeros((64, 512), np.float32)
    intensity[5, 7] = 0.25
    image = RangeImage(xyz=xyz, intensity=intensity, range=rng, mask=rng > 0,
                       point_index=np.where(rng > 0, 0, -1), label=np.zeros((64, 512), np.int32))
    (tmp_path / "gta" / "lidar_2d").mkdir(parents=True)
    write_range_npy(tmp_path / "gta" / "lidar_2d" / "0001.npy", image)
    files = find_scans(tmp_path / "gta")
    points, rings = read_scan(files[0])
    assert rings.tolist() == [5, 40]
    assert points[0].tolist() == pytest.approx([10.0, 1.0, -1.0, 0.25])
    # raw drive layout
    raw = tmp_path / "2011_09_26_drive_0001_sync" / "velodyne_points" / "data"
    raw.mkdir(parents=True)
    np.zeros((3, 4), np.float32).tofile(raw / "0000000000.bin")
    assert find_scans(raw.parent.parent) == [raw / "0000000000.bin"]
    with pytest.raises(DataError, match="no LiDAR scans"):
        find_scans(tmp_path / "2011_09_26_drive_0001_sync" / "velodyne_points")
    with pytest.raises(DataError, match="not a folder"):
        find_scans(tmp_path / "missing")


def test_read_scan_refuses_a_scan_whose_rings_cannot_be_told(tmp_path):
    # The rings of a `.bin` scan come from KITTI's point order. A full ring-ordered scan gives rings 0..63; a
    # camera-FOV crop that kept only the upper 46 lasers, or a shuffled cloud, would put returns on the wrong
    # lasers' rows of every per-ring statistic (sensor profile, renderer, ray drop): refused, saying why.
    from squeeze.errors import RingOrderError
    from tests.test_range_image import ring_ordered_scan

    scan = ring_ordered_scan(n_rings=64, n_az=360)
    ring = np.arange(len(scan)) // 360
    az = np.degrees(np.arctan2(scan[:, 1], scan[:, 0]))
    scan.tofile(tmp_path / "full.bin")
    assert read_scan(tmp_path / "full.bin")[1].tolist() == ring.tolist()
    scan[(np.abs(az) <= 45) & (ring < 46)].tofile(tmp_path / "reduced.bin")
    with pytest.raises(RingOrderError, match=r"reduced.bin: ring mode found 46 rings, in ring order"):
        read_scan(tmp_path / "reduced.bin")
    scan[np.random.default_rng(0).permutation(len(scan))].tofile(tmp_path / "shuffled.bin")
    with pytest.raises(RingOrderError, match="not stored ring by ring"):
        read_scan(tmp_path / "shuffled.bin")
    np.zeros((3, 4), np.float32).tofile(tmp_path / "empty.bin")  # every point at the origin: nothing to refuse
    assert read_scan(tmp_path / "empty.bin")[1].tolist() == [-1, -1, -1]


def test_simulator_applies_the_profile(tmp_path):
    from domain_adapt.sim import simulate

    q = np.tile(np.linspace(0.0, 0.2, QUANTILES, dtype=np.float32), (64, 1))
    q[::2] += 0.5  # even rings bright
    profile = SensorProfile(q, np.zeros((64, 6), np.float32), frames=1, source="test")
    simulate(tmp_path / "sim", frames=1, seed=5, azimuth_steps=256, progress=False, sensor_profile=profile)
    points, rings = read_scan(tmp_path / "sim" / "training" / "velodyne" / "000000.bin")
    even = points[(rings % 2 == 0) & (rings >= 0), 3]
    odd = points[(rings % 2 == 1), 3]
    assert even.min() >= 0.5 - 1e-6 and odd.max() <= 0.2 + 1e-6
    assert json.loads((tmp_path / "sim" / "sim_config.json").read_text())["config"]["sensor_profile"]["frames"] == 1


def _two_block_scan(rng: np.random.Generator, elevations: np.ndarray, offsets: np.ndarray, n: int = 400):
    """Returns of lasers firing from (0, 0, offset) at `elevations` onto surfaces 3-40 m away, any azimuth."""
    pts, ring = [], []
    for k, (el, dz) in enumerate(zip(np.deg2rad(elevations), offsets, strict=True)):
        d = rng.uniform(3, 40, n)  # horizontal distance of each return
        az = rng.uniform(-np.pi, np.pi, n)
        pts.append(np.stack([d * np.cos(az), d * np.sin(az), dz + d * np.tan(el), rng.uniform(0, 1, n)], axis=1))
        ring.append(np.full(n, k))
    return np.concatenate(pts).astype(np.float32), np.concatenate(ring)


def test_laser_geometry_recovers_uneven_elevations_and_the_blocks_heights():
    from domain_adapt.sensor_profile import laser_geometry

    rng = np.random.default_rng(0)
    elevations = np.array([1.94, 1.57, 1.30, -9.57, -10.06, -10.47])  # uneven steps, as KITTI's lasers
    offsets = np.array([0.209, 0.208, 0.208, 0.126, 0.125, 0.125])
    points, ring = _two_block_scan(rng, elevations, offsets)
    points[5, 2] += 3.0  # a return given the wrong ring: refitted away as an outlier
    fitted_el, fitted_dz = laser_geometry(points, ring, rings=7)
    assert np.allclose(fitted_el[:6], elevations, atol=2e-3) and np.allclose(fitted_dz[:6], offsets, atol=3e-4)
    assert np.isnan(fitted_el[6]) and np.isnan(fitted_dz[6])  # ring 6 never returned
    # a ring whose returns all lie at one distance cannot tell the angle from the height: left unfitted
    flat = points.copy()
    flat[ring == 0, :2] *= (20.0 / np.hypot(flat[ring == 0, 0], flat[ring == 0, 1]))[:, None]
    assert np.isnan(laser_geometry(flat, ring, rings=6)[0][0])


def test_profile_geometry_round_trips_and_drives_the_simulated_lasers(tmp_path):
    from domain_adapt.sensor_profile import laser_geometry
    from domain_adapt.sim import simulate

    rng = np.random.default_rng(1)
    elevations = np.concatenate([np.linspace(1.9, -8.3, 32), np.linspace(-9.6, -25.0, 32)])
    elevations[40] -= 0.15  # one laser out of step
    offsets = np.concatenate([np.full(32, 0.2), np.full(32, 0.12)])
    profile = calibrate_sensor([_two_block_scan(rng, elevations, offsets, n=200) for _ in range(2)], source="t")
    # (scattered returns read as heavy ray drop: keep every simulated return)
    profile = dataclasses.replace(profile, drop_rate=np.zeros_like(profile.drop_rate))
    assert np.allclose(profile.elevations_deg, elevations, atol=2e-3)
    write_profile(tmp_path / "p.json", profile)
    back = read_profile(tmp_path / "p.json")
    assert np.allclose(back.elevations_deg, profile.elevations_deg, atol=1e-4)
    assert np.allclose(back.vertical_offsets, offsets, atol=1e-4)
    # the simulator fires its lasers from those heights at those angles: the fit on its scan gives them back
    simulate(tmp_path / "sim", frames=1, seed=5, azimuth_steps=512, progress=False, sensor_profile=back)
    points, rings = read_scan(tmp_path / "sim" / "training" / "velodyne" / "000000.bin")
    fitted_el, fitted_dz = laser_geometry(points, rings)
    ok = np.isfinite(fitted_el)
    assert ok.sum() >= 60
    assert np.allclose(fitted_el[ok], back.elevations_deg[ok], atol=0.01)
    assert np.allclose(fitted_dz[ok], back.vertical_offsets[ok], atol=0.005)
    lidar = json.loads((tmp_path / "sim" / "sim_config.json").read_text())["config"]["lidar"]
    assert lidar["vertical_offsets"][0] == pytest.approx(0.2, abs=1e-4)
    # bad geometry in a profile file is named
    d = json.loads((tmp_path / "p.json").read_text())
    d["vertical_offsets"] = d["vertical_offsets"][:10]
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="bad.json.*vertical_offsets must be 64"):
        read_profile(tmp_path / "bad.json")


def test_calibrate_sensor_on_kitti_finds_the_hdl64e_blocks(kitti_mini):
    # KITTI's HDL-64E: the upper block fires from ~0.2 m above the origin, the lower from ~0.12 m; elevations run
    # from about +2 to -25 degrees in uneven steps
    profile = calibrate_sensor([read_scan(f) for f in find_scans(kitti_mini)[:2]], source="kitti_mini")
    assert np.all(np.abs(profile.vertical_offsets[:32] - 0.2) < 0.015)
    assert np.all(np.abs(profile.vertical_offsets[32:] - 0.12) < 0.01)
    assert 1.5 < profile.elevations_deg[0] < 2.5 and -25.5 < profile.elevations_deg[63] < -24.5
    steps = -np.diff(profile.elevations_deg)
    assert np.all(steps > 0) and steps.max() - steps.min() > 0.2  # falling, and unevenly


def test_sim_command_takes_only_the_laser_geometry_from_a_profile(tmp_path, capsys):
    from domain_adapt.sensor_profile import laser_geometry
    from squeeze_suite.cli import main

    rng = np.random.default_rng(2)
    elevations = np.concatenate([np.linspace(1.9, -8.3, 32), np.linspace(-9.6, -25.0, 32)])
    offsets = np.concatenate([np.full(32, 0.2), np.full(32, 0.12)])
    profile = calibrate_sensor([_two_block_scan(rng, elevations, offsets, n=200)], source="t")
    profile = dataclasses.replace(profile, intensity_quantiles=np.full_like(profile.intensity_quantiles, 0.77))
    write_profile(tmp_path / "p.json", profile)
    assert main(["sim", "--out", str(tmp_path / "sim"), "--frames", "1", "--seed", "3", "--azimuth-steps", "512",
                 "--laser-geometry", str(tmp_path / "p.json"), "--quiet"]) == 0
    points, rings = read_scan(tmp_path / "sim" / "training" / "velodyne" / "000000.bin")
    fitted_el, fitted_dz = laser_geometry(points, rings)
    ok = np.isfinite(fitted_el)
    assert ok.sum() >= 60 and np.allclose(fitted_dz[ok], offsets[ok], atol=0.005)
    assert not np.any(np.isclose(points[:, 3], 0.77))  # the profile's intensities were not applied
    # a profile written before the geometry was measured is refused, saying what to do
    d = json.loads((tmp_path / "p.json").read_text())
    del d["elevations_deg"], d["vertical_offsets"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    assert main(["sim", "--out", str(tmp_path / "sim2"), "--frames", "1", "--laser-geometry",
                 str(tmp_path / "old.json"), "--quiet"]) == 2
    assert "holds no laser geometry" in capsys.readouterr().err


def test_profile_picture_shows_the_laser_geometry_when_measured(tmp_path):
    from PIL import Image

    from domain_adapt.sensor_profile import plot_profile

    q = np.tile(np.linspace(0, 1, QUANTILES, dtype=np.float32), (4, 1))
    plain = SensorProfile(q, np.zeros((4, 6), np.float32), frames=1, source="x")
    plot_profile(plain, tmp_path / "plain.png")
    measured = dataclasses.replace(plain, elevations_deg=np.array([2.0, 1.6, 1.3, 0.9]),
                                   vertical_offsets=np.array([0.2, 0.2, 0.12, 0.12]))
    plot_profile(measured, tmp_path / "geometry.png")
    a, b = (np.asarray(Image.open(tmp_path / n).convert("RGB")) for n in ("plain.png", "geometry.png"))
    assert a.shape[1] == 1100 and b.shape[1] == 1600  # a third panel
    orange = np.all(np.abs(b.astype(int) - (217, 95, 14)) < 8, axis=2)  # the origin-height line
    assert orange[:, 1100:].sum() > 50 and not np.all(np.abs(a.astype(int) - (217, 95, 14)) < 8, axis=2).any()
