"""deploy.equalize: SqueezeDet's exact float rewrites for per-tensor int8 activations (per-branch ReLU in the Fires,
ConvDet output-channel scaling behind a float Mul), the export that applies them and the quantiser's int8 range for
the head. Tiny SqueezeDets (320 x 96) with random weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from deploy.equalize import (  # noqa: E402
    BranchReLUExpand,
    HeadRanges,
    ScaledConv,
    convdet_output_ranges,
    equalize_convdet_outputs,
    equalize_detector,
    power_of_two,
    rectify_branches_,
)
from deploy.export import export_onnx  # noqa: E402
from deploy.quantize import (  # noqa: E402
    HEAD_INPUT_FRACTIONS,
    HEAD_INPUT_TOLERANCE,
    OUTPUT_RANGE,
    equalized_head_outputs,
    head_input_tensors,
    quantize_model,
    resolve_layers,
)
from deploy.sidecar import read_sidecar  # noqa: E402


def tiny_detector(seed: int = 0, **overrides) -> nn.Module:
    """A plain (BN-free) SqueezeDet at 320 x 96 whose head and trunk channels differ in range like a trained one's:
    ConvDet weights and fire11's expand channels scaled per channel by factors of 1/16 .. 16."""
    from squeezedet.predict import build_model

    torch.manual_seed(seed)
    model, _ = build_model("squeezedet_kitti", image_width=320, image_height=96, **overrides)
    model = model.eval().to(memory_format=torch.contiguous_format)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nn.init.normal_(model.convdet.weight, std=0.02, generator=gen)
        model.convdet.weight.mul_(torch.exp2(torch.randint(-4, 5, (72, 1, 1, 1), generator=gen).float()))
        model.convdet.bias.copy_(torch.randn(72, generator=gen))
        for conv in (model.features.fire11.expand.expand1x1, model.features.fire11.expand.expand3x3):
            conv.weight.mul_(torch.exp2(torch.randint(-4, 5, (conv.out_channels, 1, 1, 1), generator=gen).float()))
    return model


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    """(n, 3, 96, 320) float32, pixel-like values (0-255 minus a mean)."""
    return torch.rand(n, 3, 96, 320, generator=torch.Generator().manual_seed(seed)) * 255 - 120


# ---------------------------------------------------------------------------------------------------- exactness
def test_equalised_detector_computes_the_same_outputs_bit_for_bit(one_thread):
    model = tiny_detector()
    x = images()
    equalised, report = equalize_detector(model)
    assert (report.output_channels, report.rectified) == (72, 10)
    assert isinstance(equalised.convdet, ScaledConv) and isinstance(model.convdet, nn.Conv2d)  # original untouched
    assert isinstance(equalised.features.fire5.expand, BranchReLUExpand)
    with torch.no_grad():
        ref, got = model.raw_outputs(x), equalised.raw_outputs(x)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g.numpy(), r.numpy())  # powers of two: exact, not "close"
    assert float(ref.confidence.std()) > 0.01  # the outputs are not a constant that anything would reproduce
    before, after = model.convdet.weight, equalised.convdet.conv.weight
    assert not torch.equal(before, after)  # it really rewrote the weights


def test_convdet_outputs_are_scaled_to_the_int8_range_per_channel(one_thread):
    """Channel order of squeezedet.model: 27 class logits (range 8), 9 confidence logits (8), 36 deltas (2); the
    conv part's output is the original divided by those, so the head's relevant values land in +-OUTPUT_RANGE."""
    r = convdet_output_ranges(9, 3)
    assert r[:27].tolist() == [8.0] * 27 and r[27:36].tolist() == [8.0] * 9 and r[36:].tolist() == [2.0] * 36
    assert convdet_output_ranges(2, 1, HeadRanges(class_logit=5.0, confidence_logit=3.0, delta=0.3)).tolist() == \
        [4.0, 4.0, 4.0, 4.0, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25]  # rounded to powers of two
    model = tiny_detector()
    scaled = equalize_convdet_outputs(model.convdet, r)
    x = torch.rand(1, 768, 3, 5, generator=torch.Generator().manual_seed(0)) * 4
    with torch.no_grad():
        ref = model.convdet(x)
        inner = scaled.conv(x)
        np.testing.assert_array_equal((inner * r.view(1, -1, 1, 1)).numpy(), ref.numpy())
        np.testing.assert_array_equal(scaled(x).numpy(), ref.numpy())
        # a delta of 1.5 and a logit of 6 both sit at 0.75 of the int8 range
        probe = torch.zeros(1, 72, 1, 1)
        probe[0, :36], probe[0, 36:] = 6.0, 1.5
        assert torch.all((probe / r.view(1, -1, 1, 1)).abs() == 0.75 * OUTPUT_RANGE)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="positive finite"):
        power_of_two(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"HeadRanges\.delta must be a positive finite number"):
        HeadRanges(delta=0.0)
    with pytest.raises(ValueError, match="one scale per output channel"):
        ScaledConv(nn.Conv2d(4, 2, 1), torch.ones(3))
    from squeezedet.predict import build_model

    with_bn, _ = build_model("squeezedet_kitti", image_width=320, image_height=96, batch_norm=True)
    with pytest.raises(ValueError, match="fold it first"):
        equalize_detector(with_bn)
    with pytest.raises(ValueError, match="fold it first"):
        rectify_branches_(with_bn.features)


# ------------------------------------------------------------------------------------------- export and int8
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny detector as a checkpoint and its ONNX export (which equalises it)."""
    from squeeze.checkpoint import save_checkpoint
    from squeezedet.predict import build_model, checkpoint_config, data_config_for

    folder = tmp_path_factory.mktemp("det")
    _, config = build_model("squeezedet_kitti", image_width=320, image_height=96)
    model = tiny_detector()
    ckpt = folder / "det.pt"
    save_checkpoint(ckpt, model_state=model.state_dict(), config=checkpoint_config("squeezedet_kitti", config,
                    data_config_for(config)), class_names=config.class_names)
    return ckpt, model, export_onnx(ckpt, folder / "det.onnx").path


def test_export_keeps_the_float_mul_and_matches_torch(exported):
    import onnxruntime as ort

    _, model, path = exported
    graph = onnx.load(str(path))
    muls = [n for n in graph.graph.node if n.op_type == "Mul"]
    assert len(muls) == 1 and muls[0].input[1].endswith("convdet.output_scale")  # not folded into the conv
    scale = next(onnx.numpy_helper.to_array(t) for t in graph.graph.initializer if t.name == muls[0].input[1])
    np.testing.assert_array_equal(scale, convdet_output_ranges(9, 3).numpy())
    assert equalized_head_outputs(graph) == [muls[0].input[0], _conv_output(graph)]  # Transpose's in and out
    x = images(1, seed=5)
    with torch.no_grad():
        ref = [t.numpy() for t in model.raw_outputs(x)]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(r).max())))
    # keep_float still takes the head's short name (its conv now sits inside ScaledConv)
    assert len(resolve_layers(graph, ["convdet"], path)) == 1


def _conv_output(graph) -> str:
    return next(n.output[0] for n in graph.graph.node if n.op_type == "Conv" and "convdet" in n.input[1])


def test_int8_head_gets_the_equalised_range_and_the_mul_stays_float(exported, tmp_path):
    _, _, path = exported
    gen = np.random.default_rng(0)
    feeds = [{"image": (gen.random((1, 3, 96, 320)) * 255 - 120).astype(np.float32)} for _ in range(2)]
    result = quantize_model(path, tmp_path / "det_int8.onnx", feeds, sidecar=read_sidecar(path))
    q = onnx.load(str(result.path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in q.graph.initializer}
    head = _conv_output(onnx.load(str(path)))
    quant = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == head)
    assert float(inits[quant.input[1]]) == pytest.approx(2 * OUTPUT_RANGE / 255) and int(inits[quant.input[2]]) == 128
    mul = next(n for n in q.graph.node if n.op_type == "Mul")
    assert mul.input[1].endswith("convdet.output_scale")  # float constant, no DequantizeLinear in front
    assert inits[mul.input[1]].dtype == np.float32
    assert result.quantized_layers == 32  # conv1 + 10 Fires x 3 + ConvDet: every conv int8
    # every trunk conv's ReLU folds into its uint8 range [0, max] (zero point 0): the expands are rectified per
    # branch (BranchReLUExpand); before, the expand outputs were quantised before the ReLU, negative half included
    graph = onnx.load(str(path))
    producer = {o: n for n in graph.graph.node for o in n.output}
    relu_inputs = {n.input[0] for n in graph.graph.node if n.op_type == "Relu"}
    assert sum(producer[t].op_type == "Conv" for t in relu_inputs) == 31  # conv1, 10 squeezes, 20 expands
    trunk_points = [int(inits[n.input[2]]) for n in q.graph.node if n.op_type == "QuantizeLinear"
                    and n.input[0] != head and n.input[0] != "image"]
    assert len(trunk_points) >= 31 and set(trunk_points) == {0}
    # the head's input range: the widest fraction of its calibrated max within HEAD_INPUT_TOLERANCE of the least
    # score error, on every tensor the head reads (the Concat and both expands' rectified outputs)
    record = json.loads(result.sidecar.read_text())["export"]["head_input_range"]
    tried = dict(map(tuple, record["tried"]))
    assert tuple(tried) == HEAD_INPUT_FRACTIONS and all(e >= 0 for e in tried.values())
    chosen = max(f for f, e in tried.items() if e <= HEAD_INPUT_TOLERANCE * min(tried.values()))
    assert sorted(record["tensors"]) == sorted(head_input_tensors(graph)) and len(record["tensors"]) == 3
    assert record["fraction"] == chosen and record["calibrated_max"] > 0
    quant = {n.input[0]: n for n in q.graph.node if n.op_type == "QuantizeLinear"}
    for name, (low, high) in record["tensors"].items():  # each got uint8 scale = chosen range / 255, zero point 0
        assert low == 0 and high == pytest.approx(chosen * record["calibrated_max"])
        assert float(inits[quant[name].input[1]]) == pytest.approx(high / 255, rel=1e-6)
