"""KITTI 2D evaluation on hand-built cases whose AP follows by hand from the devkit's rules.

Most cases use 80 ground-truth boxes per class: with n_gt = 80 the devkit's getThresholds picks the TP
scores of ranks 1, 2, 4, 6, ..., 80 (41 thresholds, one per recall step of 1/40), so threshold m holds
the 2m best TPs (m >= 1) and the arithmetic stays simple. (With fewer than 41 boxes the devkit's curve
does not reach recall 1 even for perfect detections; see test_few_ground_truth_boxes_never_reach_ap_1.)
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from squeeze.errors import DataError, LabelError
from squeeze.kitti import ObjectLabels, write_labels
from squeezedet import kitti_eval
from squeezedet.kitti_eval import (
    DIFFICULTIES,
    KittiEvalResult,
    evaluate_folders,
    evaluate_kitti,
    format_table,
    plot_pr_curves,
    pr_curves_picture,
)

N = 80  # ground-truth boxes per class in the standard scene


def labels(rows: list[tuple], scores: list[float] | None = None) -> ObjectLabels:
    """rows: (type, left, top, right, bottom[, truncated, occluded, alpha])."""
    n = len(rows)
    full = [tuple(r) + (0.0, 0, 0.0)[len(r) - 5:] if len(r) < 8 else tuple(r) for r in rows]
    return ObjectLabels(
        type=np.array([r[0] for r in full], dtype="<U16"),
        truncated=np.array([r[5] for r in full], dtype=np.float64),
        occluded=np.array([r[6] for r in full], dtype=np.int64),
        alpha=np.array([r[7] for r in full], dtype=np.float64),
        bbox=np.array([r[1:5] for r in full], dtype=np.float64).reshape(n, 4),
        dimensions=np.zeros((n, 3)), location=np.zeros((n, 3)), rotation_y=np.zeros(n),
        score=None if scores is None else np.array(scores, dtype=np.float64))


def scene(n: int = N, alpha_offset: float = 0.0) -> tuple[list[ObjectLabels], list[ObjectLabels]]:
    """n frames, each with one Car, one Pedestrian and one Cyclist, all 60 px tall, all detected exactly.

    Scores fall with the frame index (0.9 ... ), so frame f holds the TP of rank f + 1 of every class.
    """
    gts, dts = [], []
    for f in range(n):
        alpha = -1.0 + f * 0.01
        rows = [("Car", 100, 100, 200, 160, 0.0, 0, alpha), ("Pedestrian", 300, 100, 330, 160, 0.0, 0, alpha),
                ("Cyclist", 500, 100, 540, 160, 0.0, 0, alpha)]
        gts.append(labels(rows))
        drows = [r[:7] + (r[7] + alpha_offset,) for r in rows]
        dts.append(labels(drows, [0.9 - f * 0.001] * 3))
    return gts, dts


def add(frame: ObjectLabels, rows: list[tuple], scores: list[float] | None = None) -> ObjectLabels:
    return ObjectLabels.concatenate([frame, labels(rows, scores)])


def assert_all(table: dict, value: float, classes=("Car", "Pedestrian", "Cyclist"), difficulties=DIFFICULTIES):
    for c in classes:
        for d in difficulties:
            assert table[c][d] == pytest.approx(value, abs=1e-12), (c, d, table[c][d])


# ----------------------------------------------------------------------------------------------- golden cases
def test_perfect_detections_score_1_everywhere():
    gts, dts = scene()
    r = evaluate_kitti(gts, dts)
    assert isinstance(r, KittiEvalResult)
    for table in (r.ap11, r.ap40, r.aos11, r.aos40):
        assert_all(table, 1.0)
    assert r.num_gt["Car"] == (N, N, N)
    np.testing.assert_array_equal(r.precision["Car"], np.ones((3, 41)))
    assert r.recall["Car"][0, -1] == 1.0
    assert r.mean_ap("ap40") == 1.0


def test_false_positive_at_top_rank():
    """An FP scored above every TP is counted at all 41 thresholds: precision at threshold m is
    (2m)/(2m+1), whose suffix maximum is the last, 80/81; so AP11 = AP40 = 80/81."""
    gts, dts = scene()
    dts[0] = add(dts[0], [("Car", 700, 100, 800, 160)], [0.95])
    r = evaluate_kitti(gts, dts)
    assert_all(r.ap11, 80 / 81, classes=("Car",))
    assert_all(r.ap40, 80 / 81, classes=("Car",))
    assert_all(r.ap11, 1.0, classes=("Pedestrian", "Cyclist"))


def test_false_positive_between_rank_40_and_41():
    """The FP enters at thresholds whose score is below it: threshold m holds TPs of rank <= 2m (m >= 1), so
    the FP (between TP 40 and TP 41) counts for m >= 21. Monotone precision: 1 at indices 0..20, 80/81 after.
    AP11 = (6 + 5 * 80/81) / 11 (indices 0..20 step 4 are six), AP40 = (20 + 20 * 80/81) / 40."""
    gts, dts = scene()
    fp_score = (0.9 - 39 * 0.001 + 0.9 - 40 * 0.001) / 2  # between the scores of frames 39 and 40
    dts[5] = add(dts[5], [("Car", 700, 100, 800, 160)], [fp_score])
    r = evaluate_kitti(gts, dts)
    expected_curve = np.r_[np.ones(21), np.full(20, 80 / 81)]
    np.testing.assert_allclose(r.precision["Car"][0], expected_curve, rtol=0, atol=1e-15)
    assert_all(r.ap11, (6 + 5 * 80 / 81) / 11, classes=("Car",))
    assert_all(r.ap40, (20 + 20 * 80 / 81) / 40, classes=("Car",))


def test_unmatched_ground_truth_caps_recall():
    """80 cars, only the first 40 detected: 21 thresholds (TP ranks 1, 2, 4, ..., 40), precision 1 at
    indices 0..20 and 0 after. AP11 = 6/11, AP40 = 20/40; the recall reached is 0.5."""
    gts, dts = scene()
    for f in range(40, N):
        keep = dts[f].type != "Car"
        dts[f] = dts[f].select(keep)
    r = evaluate_kitti(gts, dts, classes=("Car",))
    assert_all(r.ap11, 6 / 11, classes=("Car",))
    assert_all(r.ap40, 0.5, classes=("Car",))
    assert np.nanmax(r.recall["Car"][1]) == 0.5
    assert np.count_nonzero(~np.isnan(r.thresholds["Car"][1])) == 21


def test_few_ground_truth_boxes_never_reach_ap_1():
    """The devkit takes one threshold per TP when n_gt < 41, so 10 perfect detections fill indices 0..9 only:
    AP11 = 3/11 (indices 0, 4, 8), AP40 = 9/40. This is the official behaviour, kept on purpose."""
    gts, dts = scene(10)
    r = evaluate_kitti(gts, dts, classes=("Car",))
    assert_all(r.ap11, 3 / 11, classes=("Car",))
    assert_all(r.ap40, 9 / 40, classes=("Car",))


def test_dontcare_region_absorbs_a_false_positive():
    gts, dts = scene()
    gts[3] = add(gts[3], [("DontCare", 600, 50, 900, 250, -1.0, -1, -10.0)])
    inside = add(dts[3], [("Car", 700, 100, 800, 160)], [0.95])  # fully inside: coverage 1 > 0.7
    dts_in = list(dts)
    dts_in[3] = inside
    assert_all(evaluate_kitti(gts, dts_in).ap11, 1.0)
    # Coverage 0.5 (half the box outside the region) is not > 0.7: the detection is a false positive.
    dts_half = list(dts)
    dts_half[3] = add(dts[3], [("Car", 850, 100, 950, 160)], [0.95])
    assert_all(evaluate_kitti(gts, dts_half).ap11, 80 / 81, classes=("Car",))
    # For Pedestrian the threshold is 0.5, and 0.6 coverage suffices.
    dts_ped = list(dts)
    dts_ped[3] = add(dts[3], [("Pedestrian", 840, 100, 940, 160)], [0.95])
    assert_all(evaluate_kitti(gts, dts_ped).ap11, 1.0, classes=("Pedestrian",))


def test_van_detected_as_car_is_ignored_but_truck_is_a_false_positive():
    gts, dts = scene()
    gts[7] = add(gts[7], [("Van", 700, 100, 800, 160)])
    dts_van = list(dts)
    dts_van[7] = add(dts[7], [("Car", 700, 100, 800, 160)], [0.95])
    r = evaluate_kitti(gts, dts_van)
    assert_all(r.ap11, 1.0)
    assert r.num_gt["Car"] == (N, N, N)  # the Van is not in the recall denominator
    gts_truck = list(gts)
    gts_truck[7] = add(gts[7].select(gts[7].type != "Van"), [("Truck", 700, 100, 800, 160)])
    assert_all(evaluate_kitti(gts_truck, dts_van).ap11, 80 / 81, classes=("Car",))


def test_person_sitting_detected_as_pedestrian_is_ignored():
    gts, dts = scene()
    gts[2] = add(gts[2], [("Person_sitting", 700, 100, 730, 160)])
    dts[2] = add(dts[2], [("Pedestrian", 700, 100, 730, 160)], [0.95])
    assert_all(evaluate_kitti(gts, dts).ap11, 1.0)


def test_small_occluded_truncated_ground_truth_is_ignored_by_difficulty():
    """A 30 px car is ignored in Easy (< 40 px) and counted in Moderate/Hard; an occlusion-1 car is ignored in
    Easy only; a truncation-0.4 car only counts in Hard. Detected with top scores, they change no AP;
    undetected, they are misses only where they count."""
    gts, dts = scene()
    extra = [("Car", 700, 100, 800, 130, 0.0, 0, 0.0), ("Car", 850, 100, 950, 160, 0.0, 1, 0.0),
             ("Car", 1000, 100, 1100, 160, 0.4, 0, 0.0)]
    gts[0] = add(gts[0], extra)
    r = evaluate_kitti(gts, dts, classes=("Car",))
    assert r.num_gt["Car"] == (N, N + 2, N + 3)
    assert r.ap11["Car"]["Easy"] == 1.0
    assert r.ap11["Car"]["Moderate"] < 1.0 and r.ap11["Car"]["Hard"] < 1.0
    dts[0] = add(dts[0], [e[:5] for e in extra], [0.99, 0.98, 0.97])
    assert_all(evaluate_kitti(gts, dts, classes=("Car",)).ap11, 1.0, classes=("Car",))


def test_height_boundary_differs_between_the_two_devkits():
    """A ground-truth box exactly 40 px tall: the official devkit ignores it in Easy (height <= 40),
    squeezeDet's copy counts it (height < 40 is ignored)."""
    gts, dts = scene()
    gts[0] = add(gts[0], [("Car", 700, 100, 800, 140)])
    official = evaluate_kitti(gts, dts, classes=("Car",))
    squeezedet = evaluate_kitti(gts, dts, classes=("Car",), ignore_short_detections=False)
    assert official.num_gt["Car"][0] == N and squeezedet.num_gt["Car"][0] == N + 1
    assert official.devkit == "official" and squeezedet.devkit == "squeezedet"


def test_short_detection_is_ignored_only_by_the_official_devkit():
    """A 30 px false positive scored above all TPs: the official devkit ignores it in Easy (shorter than 40 px)
    but counts it in Moderate/Hard; squeezeDet's copy counts it everywhere."""
    gts, dts = scene()
    dts[0] = add(dts[0], [("Car", 700, 100, 800, 130)], [0.95])
    official = evaluate_kitti(gts, dts, classes=("Car",))
    assert official.ap11["Car"]["Easy"] == 1.0
    assert official.ap11["Car"]["Moderate"] == pytest.approx(80 / 81, abs=1e-12)
    squeezedet = evaluate_kitti(gts, dts, classes=("Car",), ignore_short_detections=False)
    assert_all(squeezedet.ap11, 80 / 81, classes=("Car",))


def test_empty_frames_and_dontcare_only_frames_change_nothing():
    gts, dts = scene()
    empty_gt, empty_dt = labels([]), ObjectLabels()  # an empty detection frame needs no score array
    dc = labels([("DontCare", 0, 0, 300, 300, -1.0, -1, -10.0)])
    dc_det = labels([("Car", 10, 10, 100, 100)], [0.99])  # inside the DontCare region
    r = evaluate_kitti(gts + [empty_gt, dc, dc], dts + [empty_dt, empty_dt, dc_det])
    assert_all(r.ap11, 1.0)
    assert_all(r.ap40, 1.0)
    assert r.num_frames == N + 3


def test_no_ground_truth_or_no_detections_give_zero():
    gts, dts = scene()
    r = evaluate_kitti(gts, [ObjectLabels() for _ in dts])
    assert_all(r.ap11, 0.0)
    assert_all(r.ap40, 0.0)
    r = evaluate_kitti([labels([]) for _ in gts], dts)
    assert_all(r.ap11, 0.0)
    assert r.num_gt["Car"] == (0, 0, 0)


def test_iou_threshold_is_strict():
    """A car detection with IoU exactly 0.7 (100x100 gt, 70x100 det inside it) is not a match."""
    gts, dts = scene()
    for f in range(N):
        car = dts[f].type == "Car"
        dts[f].bbox[car] = [100.0, 100.0, 100.0 + 70.0, 160.0]  # IoU = 70/100 exactly
    r = evaluate_kitti(gts, dts, classes=("Car",))
    assert_all(r.ap11, 0.0, classes=("Car",))
    r = evaluate_kitti(gts, dts, classes=("Car",), min_overlap={"Car": 0.69})
    assert_all(r.ap11, 1.0, classes=("Car",))


def test_aos_equals_ap_when_orientations_match_and_drops_when_flipped():
    gts, dts = scene()
    r = evaluate_kitti(gts, dts)
    assert r.aos11 == r.ap11 and r.aos40 == r.ap40
    flipped = evaluate_kitti(*scene(alpha_offset=math.pi))
    assert_all(flipped.ap11, 1.0)
    assert_all(flipped.aos11, 0.0)
    assert_all(flipped.aos40, 0.0)
    quarter = evaluate_kitti(*scene(alpha_offset=math.pi / 2))  # similarity (1 + cos 90deg) / 2 = 0.5
    assert_all(quarter.aos40, 0.5)


def test_aos_is_dropped_like_the_devkit():
    gts, dts = scene()
    assert evaluate_kitti(gts, dts, compute_aos=False).aos11 is None
    dts[4].alpha[0] = -10.0  # the devkit's "invalid orientation" marker disables AOS for the whole set
    r = evaluate_kitti(gts, dts)
    assert r.aos11 is None and r.aos40 is None and r.orientation is None
    with pytest.raises(ValueError, match="aos11"):
        r.mean_ap("aos11")


def test_class_names_are_case_insensitive_like_strcasecmp():
    gts, dts = scene()
    for f in range(N):
        dts[f].type[dts[f].type == "Car"] = "car"
    assert_all(evaluate_kitti(gts, dts, classes=("Car",)).ap11, 1.0, classes=("Car",))


def test_zero_over_zero_precision_is_nan_as_in_the_devkit():
    """The first pass (best score) makes d1 a TP of the Car; the second (best overlap) gives d1 to the Van
    listed first, misses the Car, and the DontCare region swallows d2: 0 TP + 0 FP at the only threshold.
    The devkit divides 0 by 0 and its max filter keeps the NaN at index 0, so AP11 is NaN and AP40 is 0
    (checked against the compiled devkits, both variants)."""
    gt = labels([("Van", 5, 0, 105, 100), ("Car", 0, 0, 100, 100), ("DontCare", 20, 0, 120, 100, -1.0, -1, -10.0)])
    dt = labels([("Car", 4, 0, 104, 100), ("Car", 25, 0, 115, 100)], [0.9, 0.95])
    for ignore_short in (True, False):
        r = evaluate_kitti([gt], [dt], classes=("Car",), ignore_short_detections=ignore_short)
        assert np.isnan(r.precision["Car"][:, 0]).all() and (r.precision["Car"][:, 1:] == 0).all()
        assert all(math.isnan(r.ap11["Car"][d]) and r.ap40["Car"][d] == 0.0 for d in DIFFICULTIES)


# -------------------------------------------------------------------------------------------------- bad input
def test_detections_without_scores_are_rejected():
    gts, dts = scene(3)
    dts[1] = labels([("Car", 100, 100, 200, 160)])
    with pytest.raises(DataError, match="frame 1.*without scores"):
        evaluate_kitti(gts, dts)


def test_other_bad_input_is_rejected():
    gts, dts = scene(3)
    with pytest.raises(DataError, match="3 ground-truth frames but 2"):
        evaluate_kitti(gts, dts[:2])
    bad = labels([("Car", 100, 100, 200, 160)], [float("nan")])
    with pytest.raises(DataError, match="NaN"):
        evaluate_kitti(gts[:1], [bad])
    with pytest.raises(ValueError, match="no IoU threshold.*Van"):
        evaluate_kitti(gts, dts, classes=("Van",))
    with pytest.raises(DataError, match="ObjectLabels"):
        evaluate_kitti(gts, [None] * 3)


# ---------------------------------------------------------------------------------------------------- folders
def write_folders(tmp_path, gts, dts, skip_results=()):
    label_dir, result_dir = tmp_path / "label_2", tmp_path / "results" / "data"
    for f, (g, d) in enumerate(zip(gts, dts, strict=True)):
        write_labels(label_dir / f"{f:06d}.txt", g)
        if f not in skip_results:
            write_labels(result_dir / f"{f:06d}.txt", d)
    return label_dir, tmp_path / "results"


def test_evaluate_folders_matches_in_memory_and_missing_result_means_no_detections(tmp_path):
    gts, dts = scene()
    label_dir, results = write_folders(tmp_path, gts, dts, skip_results={40, 41})
    r = evaluate_folders(label_dir, results)  # results/data is found automatically
    for f in (40, 41):
        dts[f] = ObjectLabels()
    expected = evaluate_kitti(gts, dts)
    assert r.ap11 == expected.ap11 and r.ap40 == expected.ap40
    assert r.ap11["Car"]["Easy"] < 1.0
    subset = evaluate_folders(label_dir, results / "data", frame_ids=[f"{f:06d}" for f in range(10)],
                              classes=("Car",))
    assert subset.num_frames == 10 and subset.num_gt["Car"] == (10, 10, 10)


def test_evaluate_folders_errors_name_the_file(tmp_path):
    gts, dts = scene(2)
    label_dir, results = write_folders(tmp_path, gts, dts)
    no_score = results / "data" / "000001.txt"
    write_labels(no_score, labels([("Car", 100, 100, 200, 160)]))
    with pytest.raises(LabelError, match="000001.txt.*score"):
        evaluate_folders(label_dir, results)
    with pytest.raises(DataError, match="000007.txt.*not found"):
        evaluate_folders(label_dir, results, frame_ids=["000007"])
    empty = tmp_path / "no_results"
    empty.mkdir()
    with pytest.raises(DataError, match="none of the 2 frames"):
        evaluate_folders(label_dir, empty)


def test_table_and_plot(tmp_path):
    gts, dts = scene()
    r = evaluate_kitti(gts, dts)
    table = format_table(r)
    assert "official devkit" in table
    assert "Car" in table and "Cyclist" in table and "100.00" in table
    assert len(table.splitlines()) == 4 + 3 + 1  # 80 boxes each: no warning
    out = tmp_path / "pr.png"
    plot_pr_curves(r, out)
    img = cv2.imread(str(out))[:, :, ::-1]
    np.testing.assert_array_equal(img, pr_curves_picture(r))
    assert img.shape == (380, 3 * 440, 3)
    # Perfect detections: every curve is flat at precision 1, drawn at row 330 - 296 / 1.02 = 39.8 of each panel;
    # Hard (red) is drawn last. Below it, inside the plot, the background is white.
    for k in range(3):
        x = k * 440 + 62 + (426 - 62) // 2
        r_, g_, b_ = (int(v) for v in img[40, x])
        assert r_ > 150 and g_ < 120 and b_ < 120, (k, img[40, x])
        assert (img[150, x] == 255).all()
        assert (img[60:320, k * 440 + 62] < 60).all()  # the left axis, black (below the curves)
        assert (img[5:28, k * 440 + 62:k * 440 + 426] < 100).any()  # the title's dark text


# ------------------------------------------------------------------------------------------ fewer than 41 objects
def test_fewer_than_41_objects_are_flagged_in_result_and_table():
    gts, dts = scene(10)
    r = evaluate_kitti(gts, dts, classes=("Car",))
    warnings = r.few_gt_warnings()
    assert len(warnings) == 3
    assert warnings[1].startswith("Car Moderate: only 10 ground-truth objects (fewer than 41)")
    assert "AP11 27.27 and AP40 22.50" in warnings[1]  # 3/11 and 9/40: what perfect detections score here
    table = format_table(r)
    assert table.count("warning: Car ") == 3 and "41-point recall sampling" in table
    assert evaluate_kitti(*scene(41), classes=("Car",)).few_gt_warnings() == []
    none = evaluate_kitti([labels([])], [ObjectLabels()], classes=("Car",)).few_gt_warnings()
    assert none[0] == ("Car Easy: no ground-truth object counts at this difficulty; its AP is 0 by convention, "
                       "not a measurement")


# ------------------------------------------------------------------------------------------------ the CLI path
def nan_case(tmp_path):
    """The devkit's 0 / 0 case (see test_zero_over_zero_precision_is_nan_as_in_the_devkit) as folders."""
    gt = labels([("Van", 5, 0, 105, 100), ("Car", 0, 0, 100, 100), ("DontCare", 20, 0, 120, 100, -1.0, -1, -10.0)])
    dt = labels([("Car", 4, 0, 104, 100), ("Car", 25, 0, 115, 100)], [0.9, 0.95])
    write_labels(tmp_path / "data" / "label_2" / "000000.txt", gt)
    write_labels(tmp_path / "results" / "data" / "000000.txt", dt)
    return tmp_path / "data", tmp_path / "results"


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_json_is_strict_json_with_null_and_warnings(tmp_path, capsys):
    """metrics.json held a bare NaN (not JSON) where the devkit's AP11 is 0 / 0; now null, plus the warnings."""
    from squeeze_suite.cli import main

    data, results = nan_case(tmp_path)
    assert main(["det", "eval", str(data), "--results", str(results), "--out", str(tmp_path / "out"),
                 "--classes", "Car"]) == 0
    doc = strict_json((tmp_path / "out" / "metrics.json").read_text())
    assert doc["ap11"]["Car"] == {"Easy": None, "Moderate": None, "Hard": None}
    assert doc["ap40"]["Car"]["Easy"] == 0.0
    assert len(doc["warnings"]) == 3 and doc["warnings"][0].startswith("Car Easy: only 1 ground-truth objects")
    assert "warning: Car Easy: only 1 ground-truth objects" in capsys.readouterr().out


def test_eval_results_command_imports_neither_torch_nor_numba_nor_matplotlib(tmp_path):
    """What makes `det eval --results` start fast and stay small (bench/bench_det_eval_cli.py measures it)."""
    data, results = nan_case(tmp_path)
    code = ("import sys\nfrom squeeze_suite.cli import main\n"
            f"assert main(['det', 'eval', {str(data)!r}, '--results', {str(results)!r}, '--out', "
            f"{str(tmp_path / 'out')!r}]) == 0\n"
            "print(sorted(m for m in ('torch', 'numba', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------------------------- the fast reader
ODD_BUT_VALID = {
    # CRLF, tabs, blank lines, no final newline, spellings float() takes: exponent, '+', '5.', '.5', long mantissa
    "000000": "Car 0.00 0 -1.57 10.5 20 110.25 80.75 1.5 1.6 3.9 1 2 3 0.1\r\n\r\n"
              "Pedestrian\t0.3\t1\t.5\t+5.\t1e1\t60.125\t90\t1.7 0.6 0.8 -1 -2 -3 -0.00\n\n",
    "000001": "Cyclist 0.1 2 3.14159265358979 100 100 150.000000000001 160 1 1 1 1 1 1 1",
    "000002": "",
    "000003": "DontCare -1 -1 -10 500.00 100.00 600.00 200.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
              "A_class_name_longer_than_sixteen 0 0 0 1 2 3 4 5 6 7 8 9 10 11\n",
}
ODD_RESULTS = {
    "000000": "Car -1 -1 -1.5 11 21 109 80 -1 -1 -1 -1000 -1000 -1000 -10 9.5e-01\r\n"
              "car -1 -1 -1.5 11 21 109 80 -1 -1 -1 -1000 -1000 -1000 -10 .25",
    "000001": "Cyclist -1 -1 3 100 100 150 160 -1 -1 -1 -1000 -1000 -1000 -10 0.1234567890123456789\n",
    "000003": "\n\n",
}


def write_texts(folder, texts):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / f"{name}.txt").write_bytes(text.encode())


def test_fast_reader_equals_parse_labels_on_odd_but_valid_files(tmp_path):
    write_texts(tmp_path / "label_2", ODD_BUT_VALID)
    write_texts(tmp_path / "results", ODD_RESULTS)
    ids, gt, dt = kitti_eval._result_folders(tmp_path / "label_2", tmp_path / "results", None)
    assert ids == ["000000", "000001", "000002", "000003"]
    slow_gt, slow_dt, found = kitti_eval._read_slowly([tmp_path / "label_2" / f"{i}.txt" for i in ids],
                                                     [tmp_path / "results" / f"{i}.txt" for i in ids])
    assert found == 3
    for fast, slow in ((gt, slow_gt), (dt, slow_dt)):
        for name in ("off", "truncated", "occluded", "alpha", "bbox", "score"):
            a, b = getattr(fast, name), getattr(slow, name)
            assert a.dtype == b.dtype and np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b)), name
        assert fast.type.tolist() == slow.type.tolist()
    assert gt.type.tolist() == [b"car", b"pedestrian", b"cyclist", b"dontcare", b"a_class_name_lon"]
    np.testing.assert_array_equal(gt.bbox[1], [5.0, 10.0, 60.125, 90.0])
    assert dt.score.tolist() == [0.95, 0.25, 0.1234567890123456789]


@pytest.mark.parametrize(("text", "message"), [
    ("Car 0 0 0 1 2 3 4 5 6 7 8 9 10 11 0.5\nCar 0 0 0 1 2 x3 4 5 6 7 8 9 10 11 0.5\n",
     r"000001.txt: line 2, field 7: non-numeric value 'x3'"),
    ("Car 0 0 0 1 2 3 4 5 6 7 8 9 10 11 nan\n", r"000001.txt: line 1, field 16: NaN or infinite value 'nan'"),
    ("Car 0 0 0 1 2 3 4 5 6 7 8 9 10 11\n", r"000001.txt.*a 16th, the score, is required"),
    ("\n\nCar 0 0 0 1 2 3 4 5 6 7 8 9 10 11 0.5 7\n", r"000001.txt: line 3: expected 15 fields"),
    ("Car 0 0 0 1 2 3 4 5 6 7 8 9 10 11 0.5\nCar 0 0 0 1 2 3 4 5 6 7 8 9 10 11\n", r"000001.txt: line 2: 15 fields"),
    ("Car 0 0 0 9 2 3 4 5 6 7 8 9 10 11 0.5\n", r"000001.txt: line 1: Car box left > right"),
    ("Car 0 0.5 0 1 2 3 4 5 6 7 8 9 10 11 0.5\n", r"000001.txt: line 1, field 3 \(occluded\)"),
])
def test_bad_result_files_raise_the_per_file_error(tmp_path, text, message):
    """The fast reader hands anything doubtful to read_labels, whose error names the file and the line."""
    gts, dts = scene(2)
    label_dir, results = write_folders(tmp_path, gts, dts)
    (results / "data" / "000001.txt").write_bytes(text.encode())
    with pytest.raises(DataError, match=message):
        evaluate_folders(label_dir, results)


def test_non_utf8_result_file_and_unsafe_frame_ids(tmp_path):
    gts, dts = scene(2)
    label_dir, results = write_folders(tmp_path, gts, dts)
    (results / "data" / "000001.txt").write_bytes(b"Car\xff 0 0 0 1 2 3 4 5 6 7 8 9 10 11 0.5\n")
    with pytest.raises(LabelError, match="000001.txt.*not a text file"):
        evaluate_folders(label_dir, results)
    with pytest.raises(DataError, match="plain file names"):
        evaluate_folders(label_dir, results, frame_ids=["../label_2/000000"])
