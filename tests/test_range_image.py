"""Range projection: hand-placed points, ring order, nearest-wins, numba == numpy, .npy format, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from squeeze.errors import RangeImageError, ScanError
from squeeze.kitti import read_velodyne
from squeeze.range_image import (
    ProjectionConfig,
    full_360,
    project_scan,
    project_scan_numpy,
    range_image_from_array,
    read_range_npy,
    squeezeseg_front,
    squeezeseg_front_uniform,
    write_range_npy,
)


def ring_ordered_scan(n_rings: int = 64, n_az: int = 720, seed: int = 0) -> np.ndarray:
    """A synthetic KITTI-ordered scan: ring by ring from the top, azimuth 0 -> +180 -> -180 -> 0 within a ring."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(2.0, -24.9, n_rings))
    az = np.deg2rad(np.arange(n_az) * 360.0 / n_az + 0.1)
    az = np.where(az > np.pi, az - 2 * np.pi, az)
    pts = []
    for e in elev:
        r = rng.uniform(5, 60, n_az)
        pts.append(np.stack([r * np.cos(e) * np.cos(az), r * np.cos(e) * np.sin(az), r * np.sin(e),
                             rng.uniform(0, 1, n_az)], axis=1))
    return np.concatenate(pts).astype(np.float32)


def test_front_image_places_known_points():
    scan = ring_ordered_scan()
    image, pixel = project_scan(scan, squeezeseg_front())
    assert image.shape == (64, 512)
    # Ring k is row k; azimuth a (degrees) lands in column floor((45 - a) / (90 / 512)).
    n_az = 720
    for ring, k in [(0, 1), (10, 50), (63, 700)]:
        i = ring * n_az + k
        x, y = scan[i, 0], scan[i, 1]
        a = np.degrees(np.arctan2(float(y), float(x)))
        col = int(np.floor((45.0 - a) / (90.0 / 512)))
        if 0 <= col < 512:
            assert pixel[i] == ring * 512 + col
            assert image.point_index[ring, col] == i
            np.testing.assert_allclose(image.range[ring, col], np.linalg.norm(scan[i, :3]), rtol=1e-6)
        else:
            assert pixel[i] == -1
    # Only points within +-45 degrees are kept: 180 of the 720 half-degree azimuths per ring.
    assert image.mask.sum() == 64 * 180


def test_ring_derived_from_wraps_in_real_order():
    scan = ring_ordered_scan(n_rings=64)
    image, _ = project_scan(scan, full_360())
    rows_with_points = np.flatnonzero(image.mask.any(axis=1))
    np.testing.assert_array_equal(rows_with_points, np.arange(64))
    # Mean elevation falls monotonically row by row.
    el = np.degrees(np.arcsin(image.xyz[..., 2] / np.where(image.mask, image.range, 1)))
    mean_el = np.array([el[r][image.mask[r]].mean() for r in range(64)])
    assert np.all(np.diff(mean_el) < 0)


def test_nearest_point_wins_and_ties_keep_lower_index():
    # Three points in the same pixel straight ahead (row 0 via uniform bins): ranges 10, 5, 5.
    pts = np.array([[10, 0, 0, 0.1], [5, 0, 0, 0.2], [5, 0, 0, 0.3]], np.float32)
    cfg = ProjectionConfig(mode="uniform", fov_up_deg=2.0, fov_down_deg=-2.0, height=4)
    image, pixel = project_scan(pts, cfg)
    assert pixel[0] == pixel[1] == pixel[2] >= 0
    r, c = divmod(int(pixel[0]), 512)
    assert image.point_index[r, c] == 1 and image.intensity[r, c] == pytest.approx(0.2)
    assert image.mask.sum() == 1
    ref, ref_pixel = project_scan_numpy(pts, cfg)
    np.testing.assert_array_equal(ref.point_index, image.point_index)


def test_labels_follow_the_shown_point():
    pts = np.array([[10, 0, 0, 0], [5, 0, 0, 0]], np.float32)
    cfg = ProjectionConfig(mode="uniform", fov_up_deg=2.0, fov_down_deg=-2.0, height=4)
    image, _ = project_scan(pts, cfg, labels=np.array([1, 3]))
    assert image.label[image.mask].tolist() == [3]
    arr = image.to_array()
    assert arr.shape == (4, 512, 6) and arr.dtype == np.float32 and arr[image.mask][0, 5] == 3


@pytest.mark.parametrize("make_config", [squeezeseg_front, full_360, squeezeseg_front_uniform])
def test_numba_equals_numpy_on_synthetic(make_config):
    scan = ring_ordered_scan(seed=3)
    a, pa = project_scan(scan, make_config())
    b, pb = project_scan_numpy(scan, make_config())
    np.testing.assert_array_equal(a.to_array(), b.to_array())
    np.testing.assert_array_equal(pa, pb)


@pytest.mark.parametrize("left, right", [(45.0, -45.0), (30.0, -60.0), (100.0, 10.0), (5.0, -5.0), (179.0, -179.0),
                                         (170.0, -5.0), (270.0, 90.0)])
def test_views_off_centre_narrow_and_wide_equal_numpy(left, right):
    """The kernel skips points far outside the view without their azimuth: every view, points on and near its edges
    included, must still give numpy's image and pixels exactly."""
    rng = np.random.default_rng(7)
    az = np.concatenate([rng.uniform(-np.pi, np.pi, 4000),  # everywhere, and crowding both edges
                         np.deg2rad(left) + rng.normal(0, 0.02, 500), np.deg2rad(right) + rng.normal(0, 0.02, 500)])
    r = rng.uniform(2, 60, len(az))
    el = rng.uniform(np.deg2rad(-20), np.deg2rad(1.5), len(az))
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el),
                    rng.random(len(az))], 1).astype(np.float32)
    cfg = ProjectionConfig(width=256, height=16, mode="uniform", fov_left_deg=left, fov_right_deg=right,
                           fov_up_deg=2.0, fov_down_deg=-24.9)
    a, pa = project_scan(pts, cfg)
    b, pb = project_scan_numpy(pts, cfg)
    np.testing.assert_array_equal(a.to_array(), b.to_array())
    np.testing.assert_array_equal(pa, pb)
    assert a.mask.sum() > 50


@pytest.mark.parametrize("make_config", [squeezeseg_front, full_360, squeezeseg_front_uniform])
def test_numba_equals_numpy_on_real_scans(kitti_mini, make_config):
    for path in sorted((kitti_mini / "training" / "velodyne").glob("*.bin")):
        points = read_velodyne(path)
        a, pa = project_scan(points, make_config())
        b, pb = project_scan_numpy(points, make_config())
        np.testing.assert_array_equal(a.point_index, b.point_index)
        np.testing.assert_array_equal(a.to_array(), b.to_array())
        np.testing.assert_array_equal(pa, pb)


def test_real_scan_matches_squeezeseg_statistics(kitti_mini):
    """Ring rows reproduce the published .npy files: row 0 near +2.3 deg, ~13% empty, rows monotone."""
    empties = []
    for path in sorted((kitti_mini / "training" / "velodyne").glob("*.bin")):
        image, _ = project_scan(read_velodyne(path), squeezeseg_front())
        empties.append(1 - image.mask.mean())
        el = np.degrees(np.arcsin(image.xyz[..., 2] / np.where(image.mask, image.range, 1)))
        med = np.array([np.median(el[r][image.mask[r]]) for r in range(64)])
        assert 1.0 < med[0] < 4.0 and -25.0 < med[63] < -22.0
        assert np.sum(np.diff(med) > 0.3) == 0  # no row is clearly above the one before it
    assert 0.05 < np.mean(empties) < 0.2  # SqueezeSeg's samples: 12.7-13.7 %
    # Uniform elevation bins leave stripes (SqueezeSeg issue #37): many more empty pixels.
    image_u, _ = project_scan(read_velodyne(path), squeezeseg_front_uniform())
    assert 1 - image_u.mask.mean() > empties[-1] + 0.05


def test_unordered_cloud_is_rejected_in_ring_mode():
    scan = ring_ordered_scan()
    shuffled = scan[np.random.default_rng(0).permutation(len(scan))]
    with pytest.raises(ScanError, match="not stored ring by ring"):
        project_scan(shuffled, squeezeseg_front(), source="shuffled.bin")
    image, _ = project_scan(shuffled, squeezeseg_front_uniform())  # uniform mode works on any cloud
    assert image.mask.any()


def test_bad_points():
    with pytest.raises(ScanError, match="empty scan"):
        project_scan(np.zeros((0, 4), np.float32))
    with pytest.raises(ScanError, match="NaN/inf"):
        project_scan(np.array([[np.nan, 0, 0, 0]], np.float32))
    with pytest.raises(ScanError, match="expected an \\(N, 4\\) point array"):
        project_scan(np.zeros((5, 2), np.float32))
    with pytest.raises(ScanError, match="3 labels for 1 points"):
        project_scan(np.ones((1, 4), np.float32), squeezeseg_front_uniform(), labels=np.zeros(3))
    with pytest.raises(ValueError, match="mode"):
        ProjectionConfig(mode="bogus")


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 300), st.just(4)),
              elements=st.floats(-80, 80, width=32, allow_nan=False)))
def test_property_uniform_numba_equals_numpy(points):
    a, pa = project_scan(points, squeezeseg_front_uniform())
    b, pb = project_scan_numpy(points, squeezeseg_front_uniform())
    np.testing.assert_array_equal(a.point_index, b.point_index)
    np.testing.assert_array_equal(pa, pb)
    # Every shown point's pixel is the one it maps to, and it is the nearest of the points mapping there.
    for p in np.flatnonzero(a.point_index.ravel() >= 0):
        i = a.point_index.ravel()[p]
        assert pa[i] == p
        rivals = np.flatnonzero(pa == p)
        r = np.linalg.norm(points[rivals, :3].astype(np.float64), axis=1)
        assert np.linalg.norm(points[i, :3].astype(np.float64)) == r.min()


# ------------------------------------------------------------------------------------------- .npy files
def test_npy_round_trip_byte_exact(tmp_path):
    image, _ = project_scan(ring_ordered_scan(), squeezeseg_front(), labels=np.arange(64 * 720) % 4)
    write_range_npy(tmp_path / "a.npy", image)
    back = read_range_npy(tmp_path / "a.npy")
    np.testing.assert_array_equal(back.to_array(), image.to_array())
    write_range_npy(tmp_path / "b.npy", back)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert np.load(tmp_path / "a.npy").shape == (64, 512, 6)


def test_npy_bad_inputs(tmp_path):
    np.save(tmp_path / "shape.npy", np.zeros((64, 512, 5), np.float32))
    with pytest.raises(RangeImageError, match=r"shape\.npy: expected an \(H, W, 6\) array, got shape \(64, 512, 5\)"):
        read_range_npy(tmp_path / "shape.npy")
    np.save(tmp_path / "dtype.npy", np.zeros((64, 512, 6), np.float64))
    with pytest.raises(RangeImageError, match="expected float32, got float64"):
        read_range_npy(tmp_path / "dtype.npy")
    np.save(tmp_path / "size.npy", np.zeros((32, 512, 6), np.float32))
    with pytest.raises(RangeImageError, match=r"expected shape \(64, 512, 6\), got \(32, 512, 6\)"):
        read_range_npy(tmp_path / "size.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(RangeImageError, match="junk.npy"):
        read_range_npy(tmp_path / "junk.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RangeImageError, match="obj.npy"):
        read_range_npy(tmp_path / "obj.npy")
    bad = np.zeros((64, 512, 6), np.float32)
    bad[0, 0, 5] = 1.5
    with pytest.raises(RangeImageError, match="label channel"):
        range_image_from_array(bad)
    bad[0, 0, 5] = np.nan
    with pytest.raises(RangeImageError, match="NaN"):
        range_image_from_array(bad)
