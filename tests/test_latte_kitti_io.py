"""latte.kitti_io: KITTI label_2 rows of velodyne boxes (2D box, truncation, occlusion, alpha), per-point labels,
export (label_2, .label, JSON) and the import round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latte.boxes import POINT_CLASSES, Box, EditError, empty_document
from latte.kitti_io import (
    LABEL_FILE_IDS,
    _ray_box,
    export_frames,
    import_labels,
    kitti_labels,
    occluded_fractions,
    occlusion_levels,
    point_labels,
)
from latte.scene import open_source
from squeeze.errors import DataError
from squeeze.kitti import format_labels, read_labels, read_point_labels
from squeeze.point_labels import squeezeseg_from_point_classes
from tests.test_latte_scene import CALIB, write_object_folder

IMAGE = (1200, 360)  # width, height of the hand calibration's image (principal point 600, 180)


def box(bid: str, cls: str, x: float, y: float, z: float, l: float, w: float, h: float, yaw: float = 0.0,  # noqa: E741
        **kw) -> Box:
    return Box(id=bid, cls=cls, x=x, y=y, z=z, l=l, w=w, h=h, yaw=yaw, **kw)


ELEVATIONS = np.radians(np.arange(-20, 5, 0.4))  # a 64-beam-like fan, 0.4 degrees apart
AZIMUTHS = np.radians(np.arange(-40, 40, 0.2))


def cast(targets: np.ndarray) -> np.ndarray:
    """A LiDAR at the origin: (N, 4) points where rays on the ELEVATIONS x AZIMUTHS grid first enter the (T, 7)
    velodyne boxes (the nearest one along each ray)."""
    el, az = np.meshgrid(ELEVATIONS, AZIMUTHS, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1).reshape(-1, 3)
    t_in, t_out = _ray_box(np.zeros(3), dirs, np.asarray(targets, np.float64).reshape(-1, 7))
    t = np.where(t_out >= np.maximum(t_in, 0), np.maximum(t_in, 0), np.inf).min(axis=1)
    hit = np.isfinite(t)
    xyz = dirs[hit] * t[hit, None]
    return np.hstack([xyz, np.full((len(xyz), 1), 0.5)]).astype(np.float32)


# ------------------------------------------------------------------------------------------------ label rows
def test_box_half_out_of_the_image_by_hand():
    # Centre 10 m ahead, 60/7 m left: the camera sees its centre at u = 600 - 700 * (60/7) / 10 = 0, the left edge.
    b = box("a", "Car", 10.0, 60 / 7, -1.0, 4.0, 2.0, 1.5)
    lab = kitti_labels([b], CALIB, None, IMAGE)
    assert len(lab) == 1 and lab.type[0] == "Car"
    # Camera corners: X = -y -+ w/2 in {-67/7, -53/7}, Z = x -+ l/2 in {8, 12}, Y = -z in [0.25, 1.75].
    # left = 600 - 700 * (67/7) / 8 = -237.5 (cut to 0), right = 600 - 700 * (53/7) / 12 = 158.333,
    # top = 180 + 700 * 0.25 / 12 = 194.583, bottom = 180 + 700 * 1.75 / 8 = 333.125.
    np.testing.assert_allclose(lab.bbox[0], [0.0, 180 + 175 / 12, 600 - 5300 / 12, 333.125], atol=1e-9)
    # truncation = 1 - 158.333 / (158.333 + 237.5) = 0.6 (heights equal)
    assert lab.truncated[0] == pytest.approx(0.6, abs=1e-9)
    np.testing.assert_allclose(lab.dimensions[0], [1.5, 2.0, 4.0])
    np.testing.assert_allclose(lab.location[0], [-60 / 7, 1.75, 10.0], atol=1e-12)
    # yaw 0 = along camera +z: ry = -pi/2; alpha = ry - atan2(x, z)
    assert lab.rotation_y[0] == pytest.approx(-math.pi / 2)
    assert lab.alpha[0] == pytest.approx(-math.pi / 2 - math.atan2(-60 / 7, 10))
    assert lab.occluded[0] == 0
    line = format_labels(lab)
    assert line.startswith("Car 0.60 0 -0.86 0.00 194.58 158.33 333.1") and line.endswith(
        " 1.50 2.00 4.00 -8.57 1.75 10.00 -1.57\n")


def test_boxes_outside_the_image_are_left_out():
    behind = box("b", "Car", -10, 0, -1, 4, 2, 1.5)
    far_left = box("c", "Car", 5, 30, -1, 4, 2, 1.5)  # in front but outside the field of view
    inside = box("d", "Pedestrian", 12, 0, -0.8, 0.8, 0.6, 1.8)
    lab = kitti_labels([behind, far_left, inside], CALIB, None, IMAGE)
    assert lab.type.tolist() == ["Pedestrian"] and lab.truncated[0] == 0.0
    assert len(kitti_labels([], CALIB, None, IMAGE)) == 0
    with pytest.raises(DataError, match="image_size"):
        kitti_labels([inside], CALIB, None, (0, 10))


def test_occlusion_of_a_box_behind_another():
    front = box("f", "Car", 10, 0, -0.9, 4, 1.8, 1.5)
    back = box("b", "Car", 20, 0, -0.9, 4, 1.8, 1.5)
    boxes7 = np.stack([front.array, back.array])
    # Boxes alone: all of the back car's silhouette but a sliver above the front car's roof is hidden.
    frac = occluded_fractions(boxes7, CALIB, None, IMAGE)
    assert frac[0] == 0.0 and frac[1] > 0.85
    # With the scan: the front car's points lie in front of the back one.
    points = cast(boxes7)
    lab = kitti_labels([front, back], CALIB, points, IMAGE)
    assert lab.occluded.tolist() == [0, 2]


def test_occlusion_by_unboxed_points_partly_and_largely():
    car = box("c", "Car", 10, 0, -0.9, 4, 1.8, 1.5)
    assert kitti_labels([car], CALIB, cast(car.array[None]), IMAGE).occluded.tolist() == [0]
    # A wall nobody boxed, 4 m ahead, hiding the car's right (velodyne -y) half: partly occluded.
    half_wall = np.array([6.0, -1.5, -0.5, 0.1, 3.0, 3.0, 0.0])
    frac = occluded_fractions(car.array[None], CALIB, cast(np.stack([car.array, half_wall])), IMAGE)
    assert 0.35 < frac[0] < 0.7
    assert kitti_labels([car], CALIB, cast(np.stack([car.array, half_wall])), IMAGE).occluded.tolist() == [1]
    wall = np.array([6.0, 0.0, -0.5, 0.1, 6.0, 3.0, 0.0])
    assert kitti_labels([car], CALIB, cast(np.stack([car.array, wall])), IMAGE).occluded.tolist() == [2]
    # the road in front of the car (points below GROUND_CLEARANCE above its bottom) does not hide it
    road = np.array([7.0, 0.0, -1.7, 2.0, 6.0, 0.1, 0.0])
    assert kitti_labels([car], CALIB, cast(np.stack([car.array, road])), IMAGE).occluded.tolist() == [0]


def test_occlusion_levels_cut_points():
    np.testing.assert_array_equal(occlusion_levels([0.0, 0.34, 0.35, 0.69, 0.7, 1.0]), [0, 0, 1, 1, 2, 2])


# ------------------------------------------------------------------------------------------------ point labels
def test_point_labels_boxes_tracks_and_brush():
    boxes = [box("car", "Car", 0, 0, 0, 2, 2, 2, track_id=4), box("ped", "Pedestrian", 1.5, 0, 0, 2, 2, 2),
             box("cyc", "Cyclist", 10, 0, 0, 2, 2, 2, yaw=math.pi / 4)]
    points = np.array([[-0.5, 0, 0, 0],  # car only
                       [0.8, 0, 0, 0],  # car and pedestrian: the later box wins
                       [10.95, -0.95, 0, 0],  # in the cyclist box's axis-aligned hull, outside the turned box
                       [10.6, 0.6, 0.9, 0],  # inside the cyclist box (local x = 0.85, y = 0)
                       [50, 0, 0, 0]], np.float32)  # nowhere
    semantic, instance = point_labels(points, boxes, {"indices": [4, 0], "labels": ["misc", "background"]})
    ids = {n: i for i, n in enumerate(POINT_CLASSES)}
    assert semantic.dtype == np.uint16 and instance.dtype == np.uint16
    assert semantic.tolist() == [0, ids["pedestrian"], 0, ids["cyclist"], ids["misc"]]
    # car: track 4 -> 5; untracked boxes after the highest track: 4 + 2 = 6, 7
    assert instance.tolist() == [0, 6, 0, 7, 0]
    semantic, instance = point_labels(points, boxes, None)
    assert semantic[0] == ids["car"] and instance[0] == 5
    empty_sem, empty_inst = point_labels(np.zeros((0, 4), np.float32), boxes, {"indices": [], "labels": []})
    assert empty_sem.shape == (0,) and empty_inst.shape == (0,)


def test_point_labels_refuse_bad_brush():
    points = np.zeros((3, 4), np.float32)
    with pytest.raises(EditError, match="out of range"):
        point_labels(points, [], {"indices": [3], "labels": ["car"]})
    with pytest.raises(EditError, match="'bus' is not one of"):
        point_labels(points, [], {"indices": [0], "labels": ["bus"]})
    with pytest.raises(EditError, match="same length"):
        point_labels(points, [], {"indices": [0, 1], "labels": ["car"]})


def test_label_file_ids_are_the_suites():
    assert set(LABEL_FILE_IDS) == set(POINT_CLASSES) and len(set(LABEL_FILE_IDS.values())) == len(POINT_CLASSES)
    ids = np.array([LABEL_FILE_IDS[n] for n in ("car", "van", "pedestrian", "person_sitting", "cyclist", "truck")])
    assert squeezeseg_from_point_classes(ids).tolist() == [1, 1, 2, 0, 3, 0]  # squeezeseg's car, pedestrian, cyclist


# ------------------------------------------------------------------------------------------------ export
def _document(fid: str, boxes: list[Box], brush=None) -> dict:
    doc = empty_document(fid)
    doc["version"] = 3
    doc["boxes"] = [b.to_dict() for b in boxes]
    if brush is not None:
        doc["brush"] = brush
    return doc


def test_export_writes_label_2_point_labels_and_json(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    (tmp_path / "data" / "training" / "calib" / "000001.txt").unlink()  # frame 1: no calibration, no label_2
    car = box("car", "Car", 10, -1, -0.75, 3.9, 1.6, 1.5, yaw=-math.pi / 2, track_id=0)
    van = box("van", "Van", -3, 0, 0, 3, 4, 4, track_id=2)  # behind the camera: point labels, no label_2 row
    proposal = box("p", "Pedestrian", 12, 2, -0.7, 0.8, 0.6, 1.8, accepted=False, source="one_click")
    docs = {"000001": _document("000001", [], {"indices": [1], "labels": ["misc"]}),
            "000000": _document("000000", [car, van, proposal])}
    out = tmp_path / "export"
    result = export_frames(src, docs, out)
    assert result["frames"] == ["000000", "000001"] and result["label_2"] == ["label_2/000000.txt"]
    assert result["no_label_2"] == ["000001"] and result["json"] == "annotations.json"
    text = (out / "label_2" / "000000.txt").read_text()
    # only the accepted car; KITTI's own layout (parsing and formatting again gives the same bytes)
    assert text.count("\n") == 1 and text.startswith("Car ") and text.endswith(
        " 1.50 1.60 3.90 1.00 1.50 10.00 0.00\n")
    assert format_labels(read_labels(out / "label_2" / "000000.txt")) == text
    points = src.points("000000")
    cls, inst = read_point_labels(out / "velodyne" / "000000.label", len(points))
    inside = (np.abs(points[:, 0] + 3) <= 1.5) & (np.abs(points[:, 1]) <= 2) & (np.abs(points[:, 2]) <= 2)
    assert 0 < inside.sum() < len(points)
    np.testing.assert_array_equal(cls, np.where(inside, LABEL_FILE_IDS["van"], 0))
    np.testing.assert_array_equal(inst, np.where(inside, 3, 0))  # track 2 + 1
    cls1, _ = read_point_labels(out / "velodyne" / "000001.label", len(src.points("000001")))
    assert cls1[1] == LABEL_FILE_IDS["misc"] and np.count_nonzero(cls1) == 1
    dump = json.loads((out / "annotations.json").read_text())
    assert dump["source"] == "data" and dump["label_file_ids"]["pedestrian"] == 2
    assert dump["frames"]["000000"]["boxes"][2]["id"] == "p"  # the JSON keeps proposals
    # with proposals
    export_frames(src, docs, out, only_accepted=False)
    assert read_labels(out / "label_2" / "000000.txt").type.tolist() == ["Car", "Pedestrian"]
    leftovers = [p.name for p in out.rglob("*.tmp")]
    assert leftovers == []


def test_export_refuses_frames_the_source_lacks(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    with pytest.raises(DataError, match="not in this source"):
        export_frames(src, {"000009": _document("000009", [])}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sim_folder(tmp_path_factory):
    from domain_adapt.sim.writer import simulate

    root = tmp_path_factory.mktemp("sim") / "seq"
    simulate(root, frames=1, seed=3, sequence=True, progress=False)
    return root


def test_import_export_round_trip_on_a_simulated_frame(sim_folder, tmp_path):
    src = open_source(sim_folder)
    fid = src.frame_ids()[0]
    boxes = import_labels(src, fid)
    original = read_labels(sim_folder / "training" / "label_2" / f"{fid}.txt")
    original = original.select(original.type != "DontCare")
    assert len(boxes) == len(original) >= 3
    assert [b.id for b in boxes] == [f"imp-{k}" for k in range(len(boxes))]
    assert all(b.source == "imported" and b.accepted for b in boxes)
    export_frames(src, {fid: _document(fid, boxes)}, tmp_path / "out")
    again = read_labels(tmp_path / "out" / "label_2" / f"{fid}.txt")
    assert again.type.tolist() == original.type.tolist()

    def columns(lab):  # the 3D fields as KITTI writes them
        return [" ".join(f"{v:.2f}" for v in (*lab.dimensions[i], *lab.location[i], lab.rotation_y[i]))
                for i in range(len(lab))]

    assert columns(again) == columns(original)
    np.testing.assert_allclose(again.truncated, original.truncated, atol=0.015)
    # 2D boxes come from the 3D box as written (2 decimals), the simulator's from the exact one
    assert np.median(np.abs(again.bbox - original.bbox)) < 0.5
    np.testing.assert_allclose(again.alpha, original.alpha, atol=0.015)
    # occlusion is estimated from points and boxes, the simulator's from its render: most levels agree
    assert np.mean(again.occluded == np.minimum(original.occluded, 2)) >= 0.6


def test_round_trip_on_real_kitti(kitti_mini, tmp_path):
    src = open_source(kitti_mini)
    docs = {fid: _document(fid, import_labels(src, fid)) for fid in src.frame_ids()}
    result = export_frames(src, docs, tmp_path / "out")
    assert result["label_2"] == [f"label_2/{fid}.txt" for fid in src.frame_ids()]
    for fid in src.frame_ids():
        original = read_labels(kitti_mini / "training" / "label_2" / f"{fid}.txt")
        original = original.select(original.type != "DontCare")
        again = read_labels(tmp_path / "out" / "label_2" / f"{fid}.txt")
        assert again.type.tolist() == original.type.tolist()
        np.testing.assert_allclose(again.boxes3d, original.boxes3d, atol=0.0051)  # the written precision
        # KITTI's 2D boxes were drawn by people; the projected ones agree to a few pixels
        assert np.abs(again.bbox - original.bbox).max() < 12
