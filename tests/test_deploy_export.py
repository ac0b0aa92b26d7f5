"""deploy: ONNX export of every model kind, checked against torch in onnxruntime; exact BatchNorm folding; the
sidecar; the TensorRT operator check; the formats table and `squeeze deploy` commands; bad options.

Models are untrained (random weights, random BatchNorm statistics) at tiny input sizes, so each export takes
seconds; the bundled trained checkpoints at full size are in tests/test_deploy_runtime.py.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from deploy.export import ExportReport, export_onnx  # noqa: E402
from deploy.fold import ConvMax, ShiftedContextAggregation, fold_post_relu_batch_norm  # noqa: E402
from deploy.formats import FORMATS, format_of_path, get_format, load_predictor  # noqa: E402
from deploy.runtimes.onnxruntime import OnnxDetector, OnnxNetwork, OnnxSegmenter  # noqa: E402
from deploy.sidecar import Sidecar, anchor_grid, read_sidecar  # noqa: E402
from deploy.tensorrt_ops import TENSORRT_ONNX_OPS, check_tensorrt_ops  # noqa: E402
from squeeze.backbone import Backbone, Stage  # noqa: E402
from squeeze.checkpoint import save_checkpoint  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.predictor import Detector, RangeSegmenter, Segmenter  # noqa: E402
from squeeze.range_image import ProjectionConfig  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402

SEG_H, SEG_W = 16, 64  # tiny range images: every trunk divides the width by 16 at most
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------- helpers
def randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Trained-looking BN statistics (eval mode): means and shifts away from 0, variances away from 1, and some
    negative gammas, so that folding has something to get wrong."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=gen) * 2 - 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.3)
                m.weight.copy_(torch.rand(n, generator=gen) * 2 - 0.5)
                m.bias.copy_(torch.rand(n, generator=gen) * 2 - 1)


def seg_checkpoint(path, name: str, **overrides):
    from squeezeseg.data import SegDataConfig
    from squeezeseg.predict import build_model, checkpoint_config

    torch.manual_seed(0)
    model, config = build_model(name, height=SEG_H, width=SEG_W, **overrides)
    randomise_batch_norm(model, 1)
    data = SegDataConfig(projection=ProjectionConfig(height=SEG_H, width=SEG_W))
    save_checkpoint(path, model_state=model.state_dict(), config=checkpoint_config(name, config, data),
                    class_names=config.class_names)
    return path


def det_checkpoint(path, name: str, **overrides):
    from squeezedet.predict import build_model, checkpoint_config, data_config_for

    torch.manual_seed(0)
    model, config = build_model(name, image_width=320, image_height=96, **overrides)
    with torch.no_grad():  # a head that separates its scores (the tiny init std leaves near-ties everywhere)
        torch.nn.init.normal_(model.convdet.weight, std=0.02)
    save_checkpoint(path, model_state=model.state_dict(),
                    config=checkpoint_config(name, config, data_config_for(config)), class_names=config.class_names)
    return path


def torch_seg_logits(checkpoint, raw: np.ndarray, mask: np.ndarray, crf: bool = True) -> np.ndarray:
    from squeeze.segmentation import normalize_channels
    from squeezeseg.predict import load_model

    loaded = load_model(checkpoint)
    if not crf:
        loaded.model.crf = None
    s = loaded.data_config.stats
    inputs = np.stack([normalize_channels(r, s.mean, s.std) for r in raw])
    with torch.no_grad():
        return loaded.model.logits(torch.from_numpy(inputs), torch.from_numpy(mask)).numpy()


def random_range_batch(seed: int, b: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(B, H, W, 5) raw channels of a plausible scan (xyz, intensity, range; 0 where empty) and (B, H, W) masks."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0, 10, (b, SEG_H, SEG_W, 3)).astype(np.float32)
    mask = rng.random((b, SEG_H, SEG_W)) > 0.25
    raw = np.concatenate([xyz, rng.random((b, SEG_H, SEG_W, 1)), np.linalg.norm(xyz, axis=-1, keepdims=True)], -1)
    return (raw * mask[..., None]).astype(np.float32), mask


def assert_seg_parity(onnx_path, checkpoint, crf: bool) -> tuple[float, float]:
    """Max |logit difference| <= 1e-4 and >= 99.9 % equal labels on valid pixels, at batch 3 (the batch is dynamic)."""
    raw, mask = random_range_batch(7)
    segmenter = OnnxSegmenter(onnx_path)
    ours = segmenter.logits(raw, mask)  # the network, and the CRF after it when the sidecar leaves it to the host
    ref = torch_seg_logits(checkpoint, raw, mask, crf)
    diff = float(np.abs(ours - ref).max())
    same = float((ours.argmax(1) == ref.argmax(1))[mask].mean())
    assert diff <= 1e-4, diff
    assert same >= 0.999, same
    return diff, same


def assert_same_detections(a, b) -> None:
    """The same boxes, classes and scores (1e-3 px, 1e-5), one to one. Detections whose scores tie to float precision
    (random heads saturate the sigmoid) may come in either order, so they are matched, not compared by rank."""
    assert len(a) == len(b) and len(a) > 0
    free = np.ones(len(b), bool)
    for box, cls, score in zip(a.boxes, a.classes, a.scores, strict=True):
        hits = np.flatnonzero(free & (b.classes == cls) & (np.abs(b.scores - score) <= 1e-5)
                              & (np.abs(b.boxes - box).max(1) <= 1e-3))
        assert len(hits), (box, cls, score)
        free[hits[0]] = False
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)  # and the same ranking of the scores


def det_parity(onnx_path, checkpoint) -> float:
    """Raw outputs within 1e-4 and the same detections after NMS, on two random images of other sizes."""
    from squeezedet.predict import load_model

    loaded = load_model(checkpoint)
    torch_det, onnx_det = loaded.detector, OnnxDetector(onnx_path)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (150, 500, 3), dtype=np.uint8), rng.integers(0, 256, (96, 320, 3), dtype=np.uint8)]
    from squeeze.detection import preprocess_image

    c = loaded.data_config
    x = np.stack([preprocess_image(im, c.image_width, c.image_height, c.pixel_mean_bgr)[0] for im in images])
    with torch.no_grad():
        ref = [t.numpy() for t in loaded.model.raw_outputs(torch.from_numpy(x))]
    ours = onnx_det.network.run({"image": x})
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, ref, strict=True))
    assert diff <= 1e-4, diff
    for a, b in zip(onnx_det.detect_batch(images), torch_det.detect_batch(images), strict=True):
        assert_same_detections(a, b)
    return diff


# ------------------------------------------------------------------------------------------------ BN folding
SQUEEZE_WIDTHS = {"fire2": 16, "fire3": 16, "fire4": 32, "fire5": 32, "fire6": 48, "fire7": 48, "fire8": 64,
                  "fire9": 64, "fire_deconv10": 64, "fire_deconv11": 32, "fire_deconv12": 16, "fire_deconv13": 16}


@pytest.mark.parametrize("style", ["max", "ones_channel"])
def test_post_relu_batch_norm_folds_exactly_border_pixels_included(style):
    """SqueezeSegV2's BN after the ReLU folds into the following convs: 17 of 26 go, the network computes the same
    logits on every pixel, in either squeeze style. A fold that puts the 3x3 conv's shift into its bias instead
    (ignoring that the zero padding stands for a BN output of 0) is off on the border only: that is what the ones
    channel, or the squeeze computing the BN output itself (max), fixes."""
    from squeezeseg.squeezeseg_v2 import SqueezeSegV2, SqueezeSegV2Config

    torch.manual_seed(0)
    model = SqueezeSegV2(SqueezeSegV2Config(height=SEG_H, width=SEG_W, use_crf=False)).eval()
    randomise_batch_norm(model, 2)
    result = fold_post_relu_batch_norm(model, squeeze_style=style)
    assert (result.folded, result.remaining) == (17, 9)
    extra = 1 if style == "ones_channel" else 0
    assert {n: getattr(result.model, n).squeeze.conv.out_channels for n in SQUEEZE_WIDTHS} == \
        {n: w + extra for n, w in SQUEEZE_WIDTHS.items()}
    assert all(isinstance(getattr(result.model, n).squeeze, ConvMax) == (style == "max") for n in SQUEEZE_WIDTHS)
    x, mask = torch.randn(2, 5, SEG_H, SEG_W), torch.rand(2, SEG_H, SEG_W) > 0.3
    with torch.no_grad():
        ref, folded = model.logits(x, mask), result.model.logits(x, mask)
        assert float((ref - folded).abs().max()) < 2e-5
        # The naive fold of fire2's squeeze BN into its 3x3 expand: shift into the bias, no ones channel.
        fire = model.fire2
        bn = fire.squeeze.bn
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = bn.bias - bn.running_mean * a
        r = fire.squeeze(model.pool1(model.cam1(model.conv1(torch.cat((x, mask[:, None].float()), 1)))))
        r_pre = (r - b.view(1, -1, 1, 1)) / a.view(1, -1, 1, 1)  # the ReLU output before the BN
        e3 = fire.expand.expand3x3
        naive = torch.nn.functional.conv2d(r_pre, e3.weight * a.view(1, -1, 1, 1),
                                           e3.bias + (e3.weight * b.view(1, -1, 1, 1)).sum((1, 2, 3)), padding=1)
        err = (naive - e3(r)).abs()
    assert float(err[..., 1:-1, 1:-1].max()) < 1e-4  # exact inside
    assert float(err[..., 0, :].max()) > 1e-2 and float(err[..., :, -1].max()) > 1e-2  # wrong on the border


def fire_pair(seed: int, scales: torch.Tensor | None = None) -> torch.nn.Module:
    """A Fire (4 -> squeeze 8 -> 6 + 6) into a FireDeconv (12 -> squeeze 8 -> 5 + 5, width x2) with post-ReLU BN,
    trained-looking statistics, shifts b of both signs; `scales` (8,) sets both squeeze BNs' a = gamma / sqrt(var +
    eps), positive by default."""
    from squeeze.fire import BatchNormSpec, Fire, FireDeconv

    torch.manual_seed(seed)
    model = torch.nn.Sequential(Fire(4, 8, 6, 6, bn=BatchNormSpec()), FireDeconv(12, 8, 5, 5, bn=BatchNormSpec()))
    randomise_batch_norm(model, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for fire in model:
            bn = fire.squeeze.bn
            a = torch.rand(8, generator=gen) * 1.5 + 0.2 if scales is None else scales
            bn.weight.copy_(a * torch.sqrt(bn.running_var + bn.eps))
            bn.bias.copy_(torch.linspace(-1.5, 1.5, 8) + bn.running_mean * a)  # b from -1.5 to 1.5
    return model.eval()


def test_max_style_fold_is_exact_on_every_pixel_and_adds_no_channel():
    """The squeeze BN of a Fire and a FireDeconv, every a > 0: a * ReLU(z) + b = max(a * z + b, b), so the squeeze
    computes the BN output itself (conv scaled by a, b in its bias, ReLU -> Max against b) and its readers, the padded
    3x3 expand and the transposed conv included, are untouched: equal on every pixel, the corners too."""
    model = fire_pair(5)
    readers = [p.clone() for p in (model[0].expand.expand1x1.weight, model[0].expand.expand3x3.weight,
                                   model[1].deconv.weight)]
    result = fold_post_relu_batch_norm(model, squeeze_style="max")
    assert (result.folded, result.remaining) == (2, 2)  # the expands' BNs read nothing the fold knows without config
    fire, deconv = result.model
    assert isinstance(fire.squeeze, ConvMax) and isinstance(deconv.squeeze, ConvMax)
    assert fire.squeeze.conv.out_channels == deconv.squeeze.conv.out_channels == 8
    assert fire.squeeze.floor.shape == (1, 8, 1, 1)
    bn = model[0].squeeze.bn
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(fire.squeeze.floor.flatten(), bn.bias - bn.running_mean * a)  # b
    for before, after in zip(readers, (fire.expand.expand1x1.weight, fire.expand.expand3x3.weight,
                                       deconv.deconv.weight), strict=True):
        assert torch.equal(before, after)  # positive scales: the readers are not touched
    x = torch.randn(3, 4, 6, 10) * 2
    with torch.no_grad():
        ref, got = model(x), result.model(x)
        err = (ref - got).abs()
        # the squeezes' BN outputs match too, not only the end result
        torch.testing.assert_close(fire.squeeze(x), model[0].squeeze(x), atol=1e-5, rtol=0)
    assert ref.shape == (3, 10, 6, 20) and float(ref.abs().max()) > 1.0
    assert float(err.max()) < 1e-5
    assert float(err[..., 0, 0].max()) < 1e-5 and float(err[..., -1, -1].max()) < 1e-5  # corners


def test_max_style_handles_negative_and_zero_scales_without_a_channel():
    """Some a < 0 and one a = 0: a * ReLU(z) + b = s * max(|a| * z + s * b, s * b) with s = sign(a) (+1 at 0), the
    signs moved into the readers' input channels (exact with their zero padding: s * 0 = 0). Still no channel added,
    still equal on every pixel; the ones-channel style gets the same numbers with one more channel."""
    scales = torch.tensor([0.7, -0.9, 1.3, -0.25, 0.0, 0.4, -1.6, 2.0])
    model = fire_pair(9, scales)
    x = torch.randn(2, 4, 5, 8) * 2
    with torch.no_grad():
        ref = model(x)
    for style, width in (("max", 8), ("ones_channel", 9)):
        result = fold_post_relu_batch_norm(model, squeeze_style=style)
        fire, deconv = result.model
        assert fire.squeeze.conv.out_channels == deconv.squeeze.conv.out_channels == width
        assert fire.expand.expand3x3.in_channels == deconv.deconv.in_channels == width
        with torch.no_grad():
            assert float((result.model(x) - ref).abs().max()) < 1e-5, style
    folded = fold_post_relu_batch_norm(model, squeeze_style="max").model[0]
    flipped = torch.sign(folded.expand.expand3x3.weight[0, :, 1, 1] / model[0].expand.expand3x3.weight[0, :, 1, 1])
    assert flipped.tolist() == [1, -1, 1, -1, 1, 1, -1, 1]  # the readers' input channels with a < 0 are negated
    with pytest.raises(ValueError, match=r"squeeze_style must be one of \('max', 'ones_channel'\), got 'relu'"):
        fold_post_relu_batch_norm(model, squeeze_style="relu")


def test_positive_batch_norm_scales_fold_through_pools_and_skip_additions():
    """With every BN scale > 0 (trained weights) the decoder's BNs fold too: the scale into the conv before the ReLU,
    the shift through max-pools and skip additions into 1x1 convs, or into the CAM that reads it. 24 of 26 go; the
    two read through the last skip addition (into the padded conv14) keep theirs."""
    from squeezeseg.squeezeseg_v2 import SqueezeSegV2, SqueezeSegV2Config

    torch.manual_seed(0)
    model = SqueezeSegV2(SqueezeSegV2Config(height=SEG_H, width=SEG_W, use_crf=False)).eval()
    randomise_batch_norm(model, 4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.abs_().add_(0.1)
    result = fold_post_relu_batch_norm(model)
    assert (result.folded, result.remaining) == (24, 2)
    left = sorted(n for n, m in result.model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert left == ["conv1_skip.bn", "fire_deconv13.expand.bn"]
    assert all(isinstance(getattr(result.model, n), ShiftedContextAggregation) for n in ("cam1", "cam2", "cam3"))
    x, mask = torch.randn(2, 5, SEG_H, SEG_W), torch.rand(2, SEG_H, SEG_W) > 0.3
    with torch.no_grad():
        assert float((model.logits(x, mask) - result.model.logits(x, mask)).abs().max()) < 2e-5


def test_fold_leaves_models_without_post_relu_batch_norm_alone():
    from squeezeseg.squeezeseg import SqueezeSeg, SqueezeSegConfig

    model = SqueezeSeg(SqueezeSegConfig(height=SEG_H, width=SEG_W, use_crf=False)).eval()
    result = fold_post_relu_batch_norm(model)
    assert (result.folded, result.remaining) == (0, 0)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), result.model.parameters(), strict=True))


# ---------------------------------------------------------------------------------------------------- export
@pytest.fixture(scope="module")
def squeezeseg_crf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seg_crf")
    # Two mean-field iterations instead of three: the same graph pattern repeated, a third less to trace.
    ckpt = seg_checkpoint(folder / "seg.pt", "squeezeseg_kitti", crf_iterations=2)
    return ckpt, export_onnx(ckpt, folder / "seg.onnx")


def test_squeezeseg_with_crf_exports_and_matches_torch(squeezeseg_crf):
    ckpt, report = squeezeseg_crf
    assert isinstance(report, ExportReport) and report.crf and report.exporter == "dynamo" and report.opset == 18
    assert report.size_bytes == report.path.stat().st_size > 3_500_000  # 906k fp32 weights
    assert report.seconds > 0 and report.node_count == sum(report.op_counts.values())
    model = onnx.load(report.path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    assert set(report.ops) <= TENSORRT_ONNX_OPS and "Transpose" not in report.ops  # NCHW throughout
    side = read_sidecar(report.path)
    assert [(i.name, i.shape, i.dtype) for i in side.inputs] == [("range_image", (None, 5, SEG_H, SEG_W), "float32"),
                                                                  ("mask", (None, SEG_H, SEG_W), "bool")]
    assert side.output_names == ("logits",) and side.segmentation.crf
    assert_seg_parity(report.path, ckpt, crf=True)


def test_sidecar_round_trip_is_byte_exact(squeezeseg_crf):
    _, report = squeezeseg_crf
    text = report.sidecar.read_text(encoding="utf-8")
    side = Sidecar.from_json(text)
    assert side.to_json() == text and Sidecar.from_json(side.to_json()) == side
    doc = json.loads(text)
    assert doc["format"] == "squeeze-deploy-sidecar" and doc["class_names"] == ["background", "car", "pedestrian",
                                                                                "cyclist"]
    assert doc["class_colors"][1] == [66, 135, 245]  # squeeze.classes' car
    assert doc["segmentation"]["projection"]["width"] == SEG_W and doc["export"]["exporter"] == "dynamo"


HOST_CRF_TORCH_BLOCKED = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from deploy.formats import load_predictor
model, folder = sys.argv[1], sys.argv[2]
raw, mask = np.load(folder + "/raw.npy"), np.load(folder + "/mask.npy")
labels = load_predictor(model).logits(raw[None], mask[None])[0].argmax(0)
modules = sorted(m for m in sys.modules if m.split(".")[0] in ("squeezedet", "squeezeseg", "torch"))
print(json.dumps({"labels": labels.tolist(), "modules": modules}))
"""


def test_squeezeseg_with_its_crf_on_the_host(squeezeseg_crf, tmp_path):
    """--crf host: the graph stops at conv14 (no mask input, no CRF ops), the sidecar carries the CRF's settings
    and trained matrices, and the runtime's logits after the host CRF match torch's with the CRF in it."""
    from squeezeseg.predict import load_model

    ckpt, _ = squeezeseg_crf
    report = export_onnx(ckpt, tmp_path / "host.onnx", crf="host")
    assert not report.crf and report.host_crf and "CRF on the host" in report.summary()
    assert "Softmax" not in report.ops and "MatMul" not in report.ops
    side = read_sidecar(report.path)
    assert [i.name for i in side.inputs] == ["range_image"] and not side.segmentation.crf
    assert side.segmentation.host_crf == load_model(ckpt).model.crf.host_params((0, 1, 2))
    assert side.segmentation.host_crf.iterations == 2 and side.segmentation.host_crf.mode == "textbook"
    text = report.sidecar.read_text(encoding="utf-8")
    assert Sidecar.from_json(text).to_json() == text
    assert json.loads(text)["segmentation"]["host_crf"]["theta_r"] == [0.015, 0.015, 0.01, 0.01]
    # smooth scans, so that the bilateral weights are not all 0 (random_range_batch's points are metres apart)
    raw, mask = random_range_batch(7)
    raw[..., :3] = np.cumsum(raw[..., :3] * 0.002, axis=2)
    ref = torch_seg_logits(ckpt, raw, mask, crf=True)
    ours = OnnxSegmenter(report.path).logits(raw, mask)
    assert np.abs(ours - ref).max() <= 1e-4 and (ours.argmax(1) == ref.argmax(1))[mask].mean() >= 0.999
    without = torch_seg_logits(ckpt, raw, mask, crf=False)
    assert (without.argmax(1) != ref.argmax(1))[mask].sum() > 0  # the CRF changed labels, and the host did too
    # the runtime and its host CRF need no torch and no model package
    np.save(tmp_path / "raw.npy", raw[0])
    np.save(tmp_path / "mask.npy", mask[0])
    blocked = subprocess.run([sys.executable, "-c", HOST_CRF_TORCH_BLOCKED, str(report.path), str(tmp_path)],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert blocked.returncode == 0, blocked.stderr[-2000:]
    result = json.loads(blocked.stdout.strip().splitlines()[-1])
    assert result["modules"] == ["torch"]  # only the blocker
    np.testing.assert_array_equal(result["labels"], ours[0].argmax(0))
    with pytest.raises(DataError, match="crf must be one of graph, host, none, got 'gpu'"):
        export_onnx(ckpt, tmp_path / "bad.onnx", crf="gpu")


def test_squeezeseg_without_crf_takes_no_mask(tmp_path):
    ckpt = seg_checkpoint(tmp_path / "seg.pt", "squeezeseg_kitti")
    report = export_onnx(ckpt, tmp_path / "seg.onnx", crf="none", opset=17)
    # torch 2.13 writes opset 18 whatever it is asked; the export converts to the opset asked for
    assert report.opset == 17 and onnx.load(report.path).opset_import[0].version == 17
    assert not report.crf and "Softmax" not in report.ops and "MatMul" not in report.ops  # no CRF in the graph
    assert [i.name for i in read_sidecar(report.path).inputs] == ["range_image"]
    # every Fire / FireDeconv expand is rectified per branch (deploy.equalize.BranchReLUExpand): each expand conv
    # feeds its own Relu (fused by the runtimes, a [0, max] uint8 range each), no Relu reads a Concat
    model = onnx.load(report.path)
    producer = {o: n for n in model.graph.node for o in n.output}
    relu_inputs = [producer[n.input[0]].op_type for n in model.graph.node if n.op_type == "Relu"]
    # conv1 and its skip, 12 squeezes (8 Fires, 4 FireDeconvs), and two expand branches each
    assert "Concat" not in relu_inputs and relu_inputs.count("Conv") == 2 + 12 + 2 * 12
    assert_seg_parity(report.path, ckpt, crf=False)


def test_custom_backbone_segmenter_with_batch_norm_exports(tmp_path):
    """A searched SqueezeSegV2 trunk (BN in every stage, its own skips): the fold is generic, the export exact."""
    pool = {"kernel": 3, "stride": (1, 2)}
    spec = Backbone("tiny_v2", (
        Stage("conv", "conv1", (32,), kernel=3, stride=(1, 2), bn=True, skip=True),
        Stage("conv", "conv1_skip", (32,), kernel=1, from_input=True, bn=True, skip=True),
        Stage("maxpool", "pool1", **pool),
        Stage("fire", "fire2", (8, 32, 32), bn=True), Stage("fire", "fire3", (8, 32, 32), bn=True),
    ))
    ckpt = seg_checkpoint(tmp_path / "v2.pt", "squeezeseg_v2_kitti", backbone=spec, use_crf=False)
    report = export_onnx(ckpt, tmp_path / "v2.onnx")
    assert report.batch_norm_folded >= 4 and report.op_counts.get("BatchNormalization", 0) == \
        report.batch_norm_remaining
    assert_seg_parity(report.path, ckpt, crf=False)


def test_squeezesegv2_exports_with_max_squeezes_and_no_odd_channels(tmp_path):
    """The exported SqueezeSegV2 (fold_style "max", the default) keeps every squeeze at its width (16, 32, 48, 64:
    the 8- and 16-channel blocks of the CPU kernels) with one Max against a (1, C, 1, 1) constant after each of
    its 12 squeeze convs, no transposes, and matches torch (the "ones_channel" style would write 17 / 33 / 49 / 65
    wide squeezes and 12 more Relus instead)."""
    ckpt = seg_checkpoint(tmp_path / "v2.pt", "squeezeseg_v2_kitti", use_crf=False)
    report = export_onnx(ckpt, tmp_path / "v2.onnx")
    assert (report.batch_norm_folded, report.batch_norm_remaining) == (17, 9)  # random BN: some a < 0
    # Relu: 21 before each expand was rectified per branch; 5 expands here had their BN folded and were (one Relu
    # each -> two), the others keep a post-ReLU BN (random, scale < 0) and their Concat -> Relu
    assert report.op_counts["Max"] == 12 and report.op_counts["Relu"] == 26 and "Transpose" not in report.ops
    model = onnx.load(report.path)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    widths = {}
    for node in model.graph.node:
        if node.op_type == "Max":
            x, floor = node.input
            conv = producer[x]
            assert conv.op_type == "Conv" and inits[floor].shape == (1, inits[conv.input[1]].shape[0], 1, 1)
            widths[conv.input[1]] = inits[conv.input[1]].shape[0]
    assert sorted(widths.values()) == sorted(SQUEEZE_WIDTHS.values())
    weights = [inits[n.input[1]].shape for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert not {c for shape in weights for c in shape[:2]} & {17, 33, 49, 65}
    assert_seg_parity(report.path, ckpt, crf=False)
    with pytest.raises(DataError, match=r"v2_bad\.onnx: fold_style must be one of max, ones_channel, got 'relu'"):
        export_onnx(ckpt, tmp_path / "v2_bad.onnx", fold_style="relu")


def test_squeezedet_plus_exports_and_detects_like_torch(tmp_path):
    ckpt = det_checkpoint(tmp_path / "plus.pt", "squeezedet_plus_kitti")
    report = export_onnx(ckpt, tmp_path / "plus.onnx", simplify=False)
    assert report.op_counts["Transpose"] == 1  # only ConvDet's NHWC reshape, as the reference orders anchors
    side = read_sidecar(report.path)
    assert side.output_names == ("deltas", "confidence", "class_probs")
    # 320 x 96 VALID: conv1 7x7/2 -> 157 x 45, pools 3x3/2 -> 78 x 22, 38 x 10, 18 x 4
    assert side.detection.grid == (4, 18) and side.inputs[0].shape == (None, 3, 96, 320)
    det_parity(report.path, ckpt)


def test_squeezedet_with_batch_norm_folds_and_cli_reports(tmp_path, capsys):
    """`squeeze deploy export` on SqueezeDet trained with its BN aid: the BN is folded, the output the same."""
    ckpt = det_checkpoint(tmp_path / "det.pt", "squeezedet_kitti", batch_norm=True)
    from squeezedet.predict import load_model

    loaded = load_model(ckpt)
    randomise_batch_norm(loaded.model, 3)
    from squeezedet.predict import checkpoint_config

    save_checkpoint(ckpt, model_state=loaded.model.state_dict(),
                    config=checkpoint_config("squeezedet_kitti", loaded.model_config, loaded.data_config),
                    class_names=loaded.model_config.class_names)
    assert main(["deploy", "export", str(ckpt), "-o", str(tmp_path / "det.onnx"), "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert " s, " in out and " MB, opset 18 (dynamo exporter)" in out
    assert "BatchNorm folded 21, left 0" in out  # conv1 and 10 fires x 2
    side = read_sidecar(tmp_path / "det.onnx")
    assert side.inputs[0].shape == (2, 3, 96, 320)  # --batch fixes the batch axis
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(tmp_path / "det.onnx").graph.node}
    det_parity(tmp_path / "det.onnx", ckpt)


def test_anchor_grid_is_squeezedets():
    from squeezedet.anchors import KITTI_ANCHOR_SHAPES, make_anchors

    np.testing.assert_array_equal(anchor_grid(24, 78, 1248, 384, KITTI_ANCHOR_SHAPES),
                                  make_anchors(24, 78, 1248, 384, KITTI_ANCHOR_SHAPES))
    np.testing.assert_array_equal(anchor_grid(1, 2, 30, 10, [(5, 6)]), [[10, 5, 5, 6], [20, 5, 5, 6]])


# --------------------------------------------------------------------------------------------- TensorRT ops
def test_an_operator_tensorrt_lacks_fails_loudly_naming_it(tmp_path):
    from onnx import TensorProto, helper

    from deploy.export import _finish

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Unique", ["r"], ["y"])],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(DataError, match=r"model\.onnx: operator\(s\) Unique are not supported by TensorRT"):
        _finish(model, simplify=False, out_path=tmp_path / "model.onnx")
    with pytest.raises(DataError, match="NonMaxSuppressionV9, com.microsoft::FusedConv"):
        check_tensorrt_ops([("", "Conv"), ("com.microsoft", "FusedConv"), ("", "NonMaxSuppressionV9")])
    check_tensorrt_ops([("", "Conv"), ("ai.onnx", "Relu")])  # supported: no error


# ------------------------------------------------------------------------------------ formats, CLI, bad input
def test_formats_table_drives_lookup_and_the_cli(capsys):
    assert [f.name for f in FORMATS] == ["onnx", "openvino", "tensorrt"]
    assert format_of_path("a/model.onnx").runtime == "deploy.runtimes.onnxruntime" and get_format("onnx").present
    with pytest.raises(DataError, match=r"model\.pt: unknown model file type '\.pt'.*\.onnx \(onnx\)"):
        format_of_path("model.pt")
    with pytest.raises(ValueError, match="unknown format 'tflite'; choose one of onnx, openvino, tensorrt"):
        get_format("tflite")
    assert main(["deploy", "formats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["format", "file", "precisions", "runtime", "present"]
    assert lines[1].split()[:5] == ["onnx", ".onnx", "fp32,fp16,int8", "deploy.runtimes.onnxruntime", "yes"]


def test_bad_export_options_fail_loudly(tmp_path, squeezeseg_crf, capsys):
    ckpt, _ = squeezeseg_crf
    with pytest.raises(DataError, match="opset must be an integer >= 17"):
        export_onnx(ckpt, tmp_path / "m.onnx", opset=16)
    with pytest.raises(DataError, match="batch must be a positive integer"):
        export_onnx(ckpt, tmp_path / "m.onnx", batch=0)
    with pytest.raises(DataError, match="must end in .onnx"):
        export_onnx(ckpt, tmp_path / "m.bin")
    other = save_checkpoint(tmp_path / "other.pt", model_state={"w": torch.zeros(1)}, config={"task": "tracking"},
                            class_names=["a"])
    with pytest.raises(DataError, match=r"other\.pt: config.task is 'tracking'"):
        export_onnx(other, tmp_path / "m.onnx")
    assert main(["deploy", "export", str(ckpt), "-o", str(tmp_path / "m.xml")]) == 2
    assert "export writes ONNX (.onnx); the openvino format (.xml)" in capsys.readouterr().err
    assert not list(tmp_path.glob("m.*"))  # nothing half-written


def test_runtime_predictors_meet_the_protocols_and_load_by_suffix(squeezeseg_crf, tmp_path):
    _, report = squeezeseg_crf
    seg = load_predictor(report.path)
    assert isinstance(seg, OnnxSegmenter) and isinstance(seg, Segmenter) and isinstance(seg, RangeSegmenter)
    assert not isinstance(seg, Detector)
    assert seg.network.providers[-1] == "CPUExecutionProvider"
    assert seg.network.session.get_session_options().intra_op_num_threads == 2
    # A range image with one point: every empty pixel comes back 0 / 0, the point gets a class.
    image = np.zeros((SEG_H, SEG_W, 6), np.float32)
    image[3, 10, :5] = (5.0, 0.5, -1.0, 0.3, 5.12)
    out = seg.segment_range(image)
    assert out.labels.shape == (SEG_H, SEG_W) and out.scores[3, 10] > 0.25
    assert (out.labels[image[..., 4] == 0] == 0).all() and (out.scores[image[..., 4] == 0] == 0).all()
    with pytest.raises(ValueError, match=f"takes {SEG_H} x {SEG_W} range images, got 8 x 64"):
        seg.segment_range(np.zeros((8, 64, 5), np.float32))
    with pytest.raises(DataError, match="no such model file"):
        load_predictor(tmp_path / "absent.onnx")
    net = OnnxNetwork(report.path, threads=1)
    assert net.session.get_session_options().intra_op_num_threads == 1


def test_sidecar_rejects_bad_content(tmp_path, squeezeseg_crf):
    _, report = squeezeseg_crf
    doc = json.loads(report.sidecar.read_text())
    for change, message in ((lambda d: d.update(format="other"), "not a deploy sidecar"),
                            (lambda d: d.update(version=9), "sidecar version 9 is not supported"),
                            (lambda d: d.pop("class_names"), "sidecar field 'class_names' is missing"),
                            (lambda d: d.update(task="detection"), "needs exactly its own 'detection' parameters"),
                            (lambda d: d["segmentation"].update(std=[1, 1, 1, 1, 0]), "one mean and one std > 0")):
        bad = json.loads(json.dumps(doc))
        change(bad)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=message) as info:
            read_sidecar(path)
        assert str(path) in str(info.value)
    assert dataclasses.replace(Sidecar.from_json(report.sidecar.read_text()), precision="int8").precision == "int8"
