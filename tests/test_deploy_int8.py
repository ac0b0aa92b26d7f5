"""INT8 (deploy.quantize): calibration inputs from dataset folders by the runtimes' pre-processing, a QDQ model with
per-channel int8 weights and uint8 activations whose labels agree with fp32, layers kept in float by name, and the
per-layer sensitivity ranking. The networks are the tiny ONNX graphs of tests/test_deploy_openvino.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, numpy_helper  # noqa: E402

from deploy.quantize import (  # noqa: E402
    CHECK_FRAMES,
    DEFAULT_KEEP_WORST,
    HEAD_INPUT_FRACTIONS,
    HEAD_INPUT_TOLERANCE,
    calibration_files,
    calibration_inputs,
    default_keep_worst,
    head_input_tensors,
    int8_weights,
    layer_names,
    layer_sensitivity,
    quantize_model,
    segmenter_classifier,
    worst_layers,
)
from deploy.sidecar import read_sidecar  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.kitti import write_image  # noqa: E402
from tests.test_deploy_openvino import DET_H, DET_W, MEAN, STD, range_images, tiny_detector, tiny_segmenter  # noqa: E402


def _calib_folder(root, count=8, seed=11):
    (root / "lidar_2d").mkdir(parents=True)
    for i, image in enumerate(range_images(count, seed)):
        np.save(root / "lidar_2d" / f"{i:06d}.npy", image)
    return root


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------ calibration
def test_calibration_feeds_are_the_runtime_preprocessing_of_the_folder_frames(tmp_path):
    model = tiny_segmenter(tmp_path / "seg.onnx")
    folder = _calib_folder(tmp_path / "data", count=10)
    files = calibration_files(folder, "segmentation")
    assert [f.name for f in files] == [f"{i:06d}.npy" for i in range(10)]
    feeds = calibration_inputs(read_sidecar(model), folder, max_frames=4)
    assert len(feeds) == 4  # spread over the folder: frames 0, 3, 6 and 9
    image = np.load(folder / "lidar_2d" / "000006.npy")
    r, c = 2, 5
    assert feeds[2]["range_image"].shape == (1, 5, 8, 16) and feeds[2]["mask"].dtype == bool
    expected = (image[r, c, :5] - np.array(MEAN)) / np.array(STD)
    np.testing.assert_allclose(feeds[2]["range_image"][0, :, r, c], expected, rtol=1e-5)
    assert np.array_equal(feeds[2]["mask"][0], image[..., 4] > 0)


def test_detection_calibration_reads_kitti_camera_images(tmp_path):
    from squeeze.detection import preprocess_image

    model = tiny_detector(tmp_path / "det.onnx")
    images = tmp_path / "kitti" / "training" / "image_2"
    images.mkdir(parents=True)
    rgb = np.random.default_rng(2).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    write_image(images / "000000.png", rgb)
    (feed,) = calibration_inputs(read_sidecar(model), tmp_path / "kitti")
    np.testing.assert_array_equal(feed["image"][0], preprocess_image(rgb, DET_W, DET_H)[0])


def test_calibration_folders_without_frames_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no \.bin, \.npy files in this folder \(nor in training/velodyne/, "
                                         r"velodyne/, lidar_2d/, velodyne_points/data/\)"):
        calibration_files(tmp_path / "empty", "segmentation")
    with pytest.raises(DataError, match=r"empty: no \.png, \.jpg, \.jpeg, \.bmp files in this folder"):
        calibration_files(tmp_path / "empty", "detection")
    drive = tmp_path / "2011_09_26_drive_0001_sync" / "velodyne_points" / "data"  # a KITTI raw drive calibrates too
    drive.mkdir(parents=True)
    np.zeros((4, 4), np.float32).tofile(drive / "0000000000.bin")
    assert calibration_files(drive.parents[1], "segmentation") == [drive / "0000000000.bin"]
    with pytest.raises(DataError, match="must be a dataset folder"):
        calibration_files(tmp_path / "absent", "detection")


# ---------------------------------------------------------------------------------------------------- quantise
def test_quantized_model_is_qdq_with_per_channel_int8_weights_and_agrees_with_fp32(tmp_path):
    model = tiny_segmenter(tmp_path / "seg.onnx")
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(tmp_path / "data"))
    result = quantize_model(model, tmp_path / "seg_int8.onnx", feeds)
    q = onnx.load(str(result.path))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    inits = {t.name: t for t in q.graph.initializer}
    # every conv weight is int8 with one scale per output channel (axis 0)
    weights = int8_weights(q)
    assert result.quantized_layers == len(weights) == 3
    for node in (n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights):
        w = numpy_helper.to_array(inits[node.input[0]])
        scale = numpy_helper.to_array(inits[node.input[1]])
        assert scale.shape == (w.shape[0],) and len(np.unique(scale)) == w.shape[0]
        assert {a.name: a.i for a in node.attribute}.get("axis", 1) == 0
        assert (numpy_helper.to_array(inits[node.input[2]]) == 0).all()  # symmetric weights
    # activations: uint8 zero points
    act_zero_points = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert act_zero_points and all(z.data_type == TensorProto.UINT8 for z in act_zero_points)
    side = json.loads(result.sidecar.read_text())
    assert (side["precision"], side["model_file"], side["export"]["calibration_frames"]) == ("int8", "seg_int8.onnx", 8)
    # the check against fp32 on the calibration frames, counted here another way: the valid pixels whose label changes
    changed = [(_session(model).run(None, f)[0].argmax(1) != _session(result.path).run(None, f)[0].argmax(1))[
        f["mask"]].mean() for f in feeds[:CHECK_FRAMES]]
    assert result.check_frames == CHECK_FRAMES == 8 and result.check_error == pytest.approx(np.mean(changed), abs=1e-12)
    assert side["export"]["calibration_check"] == {"frames": 8, "value": result.check_error,
                                                   "measure": "fraction of valid pixels whose label changes"}
    # labels on frames not used for calibration: measured 98.9% of the valid pixels agree with fp32
    images = range_images(16, seed=99)
    mask = images[..., 4] > 0
    norm = ((images[..., :5] - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(0, 3, 1, 2)
    inputs = {"range_image": np.ascontiguousarray(norm, np.float32), "mask": mask}
    fp32 = _session(model).run(None, inputs)[0].argmax(1)
    int8 = _session(result.path).run(None, inputs)[0].argmax(1)
    agree = (fp32 == int8)[mask].mean()
    assert 0.97 <= agree < 1.0  # < 1: it really is quantised


def test_layers_named_in_keep_float_stay_float(tmp_path):
    model = tiny_segmenter(tmp_path / "seg.onnx")
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(tmp_path / "data", count=3))
    result = quantize_model(model, tmp_path / "q.onnx", feeds, keep_float=["conv14"])
    q = onnx.load(str(result.path))
    assert sorted(w.removesuffix("_quantized") for w in int8_weights(q)) == ["conv1.weight", "fire2.weight"]
    head = next(n for n in q.graph.node if n.name == "node_conv14")
    assert head.input[1] == "conv14.weight"  # read straight from the float initialiser
    assert json.loads(result.sidecar.read_text())["export"]["float_layers"] == ["conv14"]
    with pytest.raises(DataError, match="no quantisable layer named 'conv99'"):
        quantize_model(model, tmp_path / "q2.onnx", feeds, keep_float=["conv99"])
    with pytest.raises(DataError, match="would overwrite the fp32 model"):
        quantize_model(model, model, feeds)
    with pytest.raises(DataError, match="only an fp32 model can be quantised"):
        quantize_model(result.path, tmp_path / "q3.onnx", feeds)


def test_segmenter_classifier_input_gets_the_widest_range_that_quantises_about_as_well_as_the_best(tmp_path):
    model = tiny_segmenter(tmp_path / "seg.onnx")
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(tmp_path / "data"))
    graph = onnx.load(str(model))
    assert segmenter_classifier(graph, "logits").name == "node_conv14"
    assert head_input_tensors(graph, "segmentation") == ["skip"]  # conv14 reads the concatenated skip
    result = quantize_model(model, tmp_path / "q.onnx", feeds)
    record = json.loads(result.sidecar.read_text())["export"]["head_input_range"]
    tried = dict(record["tried"])
    assert tuple(tried) == HEAD_INPUT_FRACTIONS and all(0 <= e < 0.2 for e in tried.values())
    chosen = max(f for f, e in tried.items() if e <= HEAD_INPUT_TOLERANCE * min(tried.values()))
    assert record["fraction"] == chosen
    # the range written is [0, fraction x the calibrated max] (the skip is ReLU outputs, so its low end is 0) ...
    low, high = record["tensors"]["skip"]
    assert low == record["calibrated_min"] == 0.0 and high == pytest.approx(chosen * record["calibrated_max"])
    # ... and it is the range the classifier's input is quantised with: scale = high / 255, zero point 0
    q = onnx.load(str(result.path))
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    quant = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "skip")
    assert float(inits[quant.input[1]]) == pytest.approx(high / 255, rel=1e-6) and int(inits[quant.input[2]]) == 0
    assert len(int8_weights(q)) == 3  # the classifier is int8 too
    # a classifier kept in float, or logits made by other ops after it (a CRF in the graph), get no head range
    kept = quantize_model(model, tmp_path / "k.onnx", feeds, keep_float=["conv14"])
    assert json.loads(kept.sidecar.read_text())["export"]["head_input_range"] == {"tensors": {}}
    graph.graph.node.append(onnx.helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    graph.graph.output[0].name = "probs"
    assert segmenter_classifier(graph, "probs") is None and head_input_tensors(graph, "segmentation", "probs") == []


def test_sensitivity_ranks_every_layer_by_the_labels_it_alone_changes(tmp_path):
    model = tiny_segmenter(tmp_path / "seg.onnx")
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(tmp_path / "data"))
    ranked = layer_sensitivity(model, feeds, frames=4)
    assert sorted(s.layer for s in ranked) == ["conv1", "conv14", "fire2"]
    assert [s.error for s in ranked] == sorted((s.error for s in ranked), reverse=True) and ranked[0].error > 0
    assert layer_names(onnx.load(str(model))) == {"node_conv1": "conv1", "node_fire2": "fire2",
                                                   "node_conv14": "conv14"}
    # the worst layer's figure, measured again by another path: quantise it alone (the others kept float) and count
    # the valid pixels whose label changes on the same four frames
    worst = ranked[0].layer
    others = [s.layer for s in ranked[1:]]
    alone = quantize_model(model, tmp_path / "alone.onnx", feeds, keep_float=others).path
    changed = [(_session(model).run(None, f)[0].argmax(1) != _session(alone).run(None, f)[0].argmax(1))[f["mask"]]
               .mean() for f in feeds[:4]]
    assert worst and ranked[0].error == pytest.approx(float(np.mean(changed)), abs=1e-12)
    names, ranking = worst_layers(model, feeds, 2)
    assert names == [s.layer for s in ranked[:2]] and ranking == ranked
    assert worst_layers(model, feeds, 0) == ([], [])
    for method in ("kl", "entropy"):  # onnxruntime's entropy, as quantize_static builds it, is MinMax (deploy.quantize)
        with pytest.raises(ValueError, match=r"calibration method must be one of \('minmax', 'percentile'\)"):
            quantize_model(model, tmp_path / "m.onnx", feeds, method=method)


# ---------------------------------------------------------------------------------------------------- command
def test_quantize_command_keeps_the_worst_layer_float_and_writes_the_ranking(tmp_path, capsys):
    from squeeze_suite.cli import main

    model = tiny_segmenter(tmp_path / "seg.onnx")
    folder = _calib_folder(tmp_path / "data", count=4)
    out = tmp_path / "int8" / "seg_int8.onnx"
    assert main(["deploy", "quantize", str(model), "--calib", str(folder), "-o", str(out), "--keep-worst", "1",
                 "--sensitivity"]) == 0
    text = capsys.readouterr().out
    ranking = json.loads(out.with_suffix(".sensitivity.json").read_text())
    worst = ranking[0]["layer"]
    assert [r["layer"] for r in ranking] and f"kept in float: {worst}" in text
    assert f"{worst}.weight_quantized" not in int8_weights(onnx.load(str(out)))
    assert len(int8_weights(onnx.load(str(out)))) == 2
    # without --keep-worst nothing stays float: the classifier's input range is chosen instead (default_keep_worst)
    default = tmp_path / "int8" / "default.onnx"
    for target in ("cpu", "tensorrt"):
        assert main(["deploy", "quantize", str(model), "--calib", str(folder), "-o", str(default), "--target",
                     target]) == 0
        text = capsys.readouterr().out
        assert "kept in float: none" in text and len(int8_weights(onnx.load(str(default)))) == 3
        check = json.loads(default.with_suffix(".json").read_text())["export"]["calibration_check"]
        assert f"int8 against fp32 on 4 calibration frames: {check['value']:.2%} of valid pixels change label" in text
        head = json.loads(default.with_suffix(".json").read_text())["export"]["head_input_range"]
        low, high = head["tensors"]["skip"]
        assert (f"conv14 reads skip in int8 range [{low:.4g}, {high:.4g}]: {head['fraction']:g} of the calibrated "
                f"max {head['calibrated_max']:.4g}") in text
    # ... but where ops follow the classifier (a CRF in the graph) no range is chosen, and it keeps the worst layer
    graph = onnx.load(str(model))
    conv14 = next(n for n in graph.graph.node if n.name == "node_conv14")
    conv14.output[0] = "pre_crf"
    graph.graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "crf_gain"))
    graph.graph.node.append(onnx.helper.make_node("Mul", ["pre_crf", "crf_gain"], ["logits"], name="crf"))
    crf = tmp_path / "crf.onnx"
    onnx.save(graph, str(crf))
    crf.with_suffix(".json").write_text(model.with_suffix(".json").read_text().replace('"seg.onnx"', '"crf.onnx"'))
    assert (default_keep_worst(model, read_sidecar(model)), default_keep_worst(crf, read_sidecar(crf))) == (0, 1)
    assert main(["deploy", "quantize", str(crf), "--calib", str(folder), "-o", str(default)]) == 0
    assert "kept in float: none" not in capsys.readouterr().out and len(int8_weights(onnx.load(str(default)))) == 2
    assert DEFAULT_KEEP_WORST == {"segmentation": 1, "detection": 0}
    assert main(["deploy", "quantize", str(model), "--calib", str(folder), "-o", str(out), "--frames", "0"]) == 2
    assert "--frames must be >= 1, got 0" in capsys.readouterr().err
    assert main(["deploy", "quantize", str(model), "--calib", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert "nothing: calibration data must be a dataset folder" in capsys.readouterr().err
