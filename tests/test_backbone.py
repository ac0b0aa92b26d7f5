"""Backbones as data (squeeze.backbone): JSON round trips, custom trunks that build working SqueezeDet / SqueezeSeg /
SqueezeSegV2 models of hand-computed size, clear errors for bad specs, and the checkpoints saved before the spec."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from squeeze.backbone import (
    Backbone,
    SpecError,
    Stage,
    backbone_from_json,
    backbone_to_json,
    input_stages,
    read_backbone,
    stage_shapes,
    write_backbone,
)
from squeeze.checkpoint import load_checkpoint, load_named_model, save_checkpoint
from squeeze.errors import DataError
from squeezedet.model import (
    SqueezeDet,
    SqueezeDetConfig,
    load_torchvision_squeezenet,
    squeezedet_kitti,
    squeezedet_plus_kitti,
    squeezedet_plus_trunk,
    squeezedet_trunk,
)
from squeezedet.models import MODELS as DET_MODELS
from squeezeseg.squeezeseg import SqueezeSeg, SqueezeSegConfig, decoder_plan, squeezeseg_trunk, width_multiple
from squeezeseg.squeezeseg_v2 import SqueezeSegV2, SqueezeSegV2Config, squeezeseg_v2_trunk

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]

# A small detection trunk; parameters: conv1 3x3 3->8: 3*9*8 + 8 = 224; Fire(c, s, e1, e3) = (c*s + s) + (s*e1 + e1)
# + (9*s*e3 + e3): fire2 (8, 4, 8, 8) 36 + 40 + 296 = 372; fire3 (16, 4, 12, 12) 68 + 60 + 444 = 572. Trunk 1,168.
SMALL_DET_JSON = """{
  "format": "squeeze-backbone",
  "version": 1,
  "name": "tiny_det",
  "stages": [
    {"op": "conv", "name": "conv1", "channels": [8], "kernel": 3, "stride": [2, 2], "padding": "same", "bn": false, "from_input": false, "skip": false},
    {"op": "maxpool", "name": "pool1", "channels": [], "kernel": 3, "stride": [2, 2], "padding": "same", "bn": false, "from_input": false, "skip": false},
    {"op": "fire", "name": "fire2", "channels": [4, 8, 8], "kernel": 1, "stride": [1, 1], "padding": "same", "bn": false, "from_input": false, "skip": false},
    {"op": "fire", "name": "fire3", "channels": [4, 12, 12], "kernel": 1, "stride": [1, 1], "padding": "same", "bn": false, "from_input": false, "skip": false}
  ]
}
"""  # noqa: E501  (one stage a line, as backbone_to_json writes it)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_seg_trunk(v2: bool = False) -> Backbone:
    """Column stride 8 (conv1, pool1, pool2), so three FireDeconvs with skips at W/4, W/2 and W."""
    bn = {"bn": v2}
    stages = [Stage("conv", "conv1", (8,), kernel=3, stride=(1, 2), skip=not v2, **bn)]
    stages += [Stage("cam", "cam1", skip=True)] if v2 else []
    stages += [Stage("conv", "conv1_skip", (8,), kernel=1, from_input=True, skip=True, **bn),
               Stage("maxpool", "pool1", kernel=3, stride=(1, 2)),
               Stage("fire", "fire2", (4, 8, 8), skip=not v2, **bn)]
    stages += [Stage("cam", "cam2", skip=True)] if v2 else []
    stages += [Stage("maxpool", "pool2", kernel=3, stride=(1, 2)), Stage("fire", "fire3", (4, 16, 16), **bn)]
    return Backbone("tiny_seg_v2" if v2 else "tiny_seg", tuple(stages))


# ---------------------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("make", [squeezedet_trunk, squeezedet_plus_trunk, squeezeseg_trunk, squeezeseg_v2_trunk,
                                  small_seg_trunk])
def test_json_round_trip_is_byte_exact(make, tmp_path):
    spec = make()
    text = backbone_to_json(spec)
    back = backbone_from_json(text)
    assert back == spec and backbone_to_json(back) == text
    path = write_backbone(tmp_path / "spec.json", spec)
    assert path.read_text() == text and read_backbone(path) == spec


def test_json_text_of_a_small_trunk():
    spec = backbone_from_json(SMALL_DET_JSON)
    assert spec.name == "tiny_det" and [s.name for s in spec.stages] == ["conv1", "pool1", "fire2", "fire3"]
    assert spec.stages[0] == Stage("conv", "conv1", (8,), kernel=3, stride=(2, 2))
    assert spec.stages[3].channels == (4, 12, 12)
    assert backbone_to_json(spec) == SMALL_DET_JSON  # the writer's exact bytes, one stage a line


def test_reader_takes_defaults_and_a_scalar_stride():
    doc = {"name": "short", "stages": [{"op": "conv", "name": "c", "channels": [4], "kernel": 1, "stride": 2},
                                       {"op": "fire", "name": "f", "channels": [2, 3, 3]},
                                       {"op": "cam", "name": "g"}]}
    spec = backbone_from_json(json.dumps(doc))
    assert spec.stages == (Stage("conv", "c", (4,), kernel=1, stride=(2, 2)), Stage("fire", "f", (2, 3, 3)),
                           Stage("cam", "g"))


def test_paper_trunk_shapes():
    shapes = stage_shapes(squeezedet_trunk(), 3, 384, 1248)
    assert shapes["conv1"] == (64, 192, 624) and shapes["pool5"] == (256, 24, 78) and shapes["fire11"] == (768, 24, 78)
    plus = stage_shapes(squeezedet_plus_trunk(), 3, 375, 1242)
    assert plus["conv1"] == (96, 185, 618) and plus["pool4"] == (256, 45, 153) and plus["fire11"] == (512, 22, 76)
    seg = stage_shapes(squeezeseg_trunk(), 5, 64, 512)
    assert seg["conv1_skip"] == (64, 64, 512) and seg["pool1"] == (64, 64, 128) and seg["fire9"] == (512, 64, 32)
    assert input_stages(squeezeseg_trunk()) == ("conv1", "conv1_skip") and width_multiple(squeezeseg_trunk()) == 16
    assert [(d.skip, d.in_channels, d.squeeze, d.expand1x1) for d in decoder_plan(squeezeseg_v2_trunk(), 6)] == [
        ("fire5", 512, 64, 128), ("cam3", 256, 32, 64), ("cam1", 128, 16, 32), ("conv1_skip", 64, 16, 32)]


# ------------------------------------------------------------------------------------------ custom trunks


def test_custom_trunk_builds_a_working_squeezedet(tmp_path):
    spec_path = tmp_path / "tiny_det.json"
    spec_path.write_text(SMALL_DET_JSON)
    anchors = ((8.0, 8.0), (20.0, 12.0))
    config = SqueezeDetConfig(backbone=read_backbone(spec_path), image_width=64, image_height=48,
                              anchor_shapes=anchors)
    model = SqueezeDet(config)
    # ConvDet 3x3 24 -> 2 anchors * (3 classes + 5) = 16: 9*24*16 + 16 = 3,472; total 1,168 + 3,472.
    assert n_params(model.features) == 1_168 and n_params(model.convdet) == 3_472 and n_params(model) == 4_640
    assert config.grid == (12, 16)  # 48 x 64 -> conv1 /2 -> pool1 /2 (TF 'SAME' rounds up)
    assert not model.features.conv1.conv.weight.requires_grad  # the input conv is frozen, as conv1 always was
    boxes = [torch.tensor([[5.0, 6.0, 25.0, 30.0]]), torch.zeros(0, 4)]  # the second image has no objects
    labels = [torch.tensor([1]), torch.zeros(0, dtype=torch.int64)]
    images = torch.randn(2, 3, 48, 64, generator=torch.Generator().manual_seed(0)) * 40
    losses = model.train()(images, boxes, labels)
    assert set(losses) == {"bbox_loss", "conf_loss", "class_loss"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.features.fire3.expand.expand3x3.weight.grad.abs().sum() > 0
    model.eval()
    assert model.raw_outputs(images).confidence.shape == (2, 12 * 16 * 2)

    # The spec travels inside the checkpoint's config: loading needs no JSON file and gives the same network.
    ckpt = save_checkpoint(tmp_path / "tiny.pt", model_state=model.state_dict(), class_names=config.class_names,
                           config={"task": "detection", "model_name": "squeezedet_kitti", "model": asdict(config)})
    spec_path.unlink()
    loaded, _, loaded_config, _ = load_named_model(ckpt, "detection", DET_MODELS)
    assert loaded_config == config and loaded_config.backbone.name == "tiny_det"
    torch.testing.assert_close(loaded.raw_outputs(images).deltas, model.raw_outputs(images).deltas, rtol=0, atol=0)


def test_custom_trunk_builds_a_working_squeezeseg():
    config = SqueezeSegConfig(backbone=small_seg_trunk(), width=32, height=8, use_crf=False)
    torch.manual_seed(0)  # the init, like the inputs, does not depend on which tests ran before
    model = SqueezeSeg(config)
    # Trunk (5 input channels): conv1 3x3 5->8 368, conv1_skip 1x1 5->8 48, fire2 (8, 4, 8, 8) 372,
    # fire3 (16, 4, 16, 16) 68 + 80 + 592 = 740 -> 1,528. Decoder, one FireDeconv per skip, squeeze C/4, expands C/2:
    # fire_deconv10 (32 -> fire2's 16: s 4, e 8, 8) 132 + 40 + 296 + deconv 4*4*4 + 4 = 536;
    # fire_deconv11 (16 -> conv1's 8: s 2, e 4, 4) 34 + 12 + 76 + 18 = 140; fire_deconv12 (8 -> conv1_skip's 8) 124.
    # conv14 3x3 8 -> 4: 292. Total 1,528 + 800 + 292.
    assert n_params(model) == 2_620
    assert [n for n, _ in model.named_children()][:6] == ["conv1", "conv1_skip", "pool1", "fire2", "pool2", "fire3"]
    assert model.decoder_skips == (("fire_deconv10", "fire2"), ("fire_deconv11", "conv1"),
                                   ("fire_deconv12", "conv1_skip"))
    g = torch.Generator().manual_seed(0)
    inputs, mask = torch.randn(2, 5, 8, 32, generator=g), torch.rand(2, 8, 32, generator=g) > 0.2
    labels = torch.randint(0, 4, (2, 8, 32), generator=g) * mask
    loss = model.train()(inputs, mask, labels)["seg_loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.conv1.conv.weight.grad.abs().sum() > 0
    preds = model.eval()(inputs, mask)
    assert preds[0].probs.shape == (4, 8, 32)
    with pytest.raises(ValueError, match="multiple of 8"):  # this trunk's own column stride, not the paper's 16
        model(torch.zeros(1, 5, 8, 20), torch.ones(1, 8, 20, dtype=torch.bool))


def test_custom_trunk_builds_a_working_squeezeseg_v2():
    config = SqueezeSegV2Config(backbone=small_seg_trunk(v2=True), width=32, height=8, use_crf=False,
                                cam_reduction=4)
    torch.manual_seed(0)  # cam2 squeezes to 4 channels: some inits leave all four ReLUs dead on this tiny input
    model = SqueezeSegV2(config)
    # 6 input channels (the mask appended). conv1 6*9*8 + 8 = 440 + BN 16; cam1 (8, r 4) 8*2+2 + 2*8+8 = 42;
    # conv1_skip 6*8 + 8 = 56 + BN 16; fire2 372 + BN 2*(4 + 16) = 40; cam2 (16, r 4) 68 + 80 = 148;
    # fire3 740 + BN 2*(4 + 32) = 72 -> trunk 1,942. Decoder as SqueezeSeg's 800 plus BN on each FireDeconv's squeeze
    # and expands 2*(20 + 10 + 10) = 80 -> 880. conv14 292. Total 1,942 + 880 + 292.
    assert n_params(model) == 3_114
    assert model.decoder_skips == (("fire_deconv10", "cam2"), ("fire_deconv11", "cam1"),
                                   ("fire_deconv12", "conv1_skip"))
    g = torch.Generator().manual_seed(1)
    inputs, mask = torch.randn(2, 5, 8, 32, generator=g), torch.rand(2, 8, 32, generator=g) > 0.2
    labels = torch.randint(0, 4, (2, 8, 32), generator=g) * mask
    loss = model.train()(inputs, mask, labels)["seg_loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.cam2.excite.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"cam_reduction must be in \[1, 8\]"):
        replace(config, cam_reduction=9)


def test_configs_round_trip_with_a_custom_backbone():
    det = SqueezeDetConfig(backbone=backbone_from_json(SMALL_DET_JSON), image_width=64, image_height=48)
    assert SqueezeDetConfig.from_dict(json.loads(json.dumps(asdict(det)))) == det
    seg = SqueezeSegV2Config(backbone=small_seg_trunk(v2=True), width=32, cam_reduction=4)
    assert SqueezeSegV2Config.from_dict(json.loads(json.dumps(asdict(seg)))) == seg


# --------------------------------------------------------------------------------------------- bad specs


def _doc(**stage_changes) -> dict:
    doc = json.loads(SMALL_DET_JSON)
    doc["stages"][2].update(stage_changes)
    return doc


@pytest.mark.parametrize("doc, message", [
    (_doc(op="resblock"), "stages[2].op: unknown op 'resblock'; one of conv, maxpool, fire, cam"),
    (_doc(channels=[4, -8, 8]), "stages[2].channels: a fire takes 3 positive widths (squeeze, expand1x1, expand3x3), "
                                "got [4, -8, 8]"),
    (_doc(channels=[4, 8]), "stages[2].channels: a fire takes 3 positive widths (squeeze, expand1x1, expand3x3), "
                            "got [4, 8]"),
    (_doc(channels="4,8,8"), "stages[2].channels: must be a list of ints, got '4,8,8'"),
    (_doc(channels=[4, 8.0, 8]), "stages[2].channels: must be a list of ints, got (4, 8.0, 8)"),
    (_doc(stride=[1, "1"]), "stages[2].stride: must be 2 positive ints (rows, cols), got (1, '1')"),
    (_doc(stride=[2, 2]), "stages[2].stride: a fire keeps the size: stride must be (1, 1), got (2, 2)"),
    (_doc(kernel=True), "stages[2].kernel: must be a positive int, got True"),
    (_doc(bn="yes"), "stages[2].bn: must be true or false, got 'yes'"),
    (_doc(padding="reflect"), "stages[2].padding: must be one of same, valid, got 'reflect'"),
    (_doc(name="fire.2"), "stages[2].name: must be a Python identifier (it names a module), got 'fire.2'"),
    (_doc(name="conv1"), "stages[2].name: 'conv1' is also the name of stages[0]"),
    (_doc(from_input=True), "stages[2].from_input: only a conv with skip true may read the trunk input"),
    (_doc(dilation=2), "stages[2]: unknown field(s) 'dilation'; a stage has op, name, channels, kernel, stride, "
                       "padding, bn, from_input, skip"),
    ({"format": "squeeze-backbone", "version": 1, "name": "x"}, "stages: missing"),
    ({"format": "squeeze-backbone", "version": 2, "name": "x", "stages": []}, "version: this reader knows version 1"),
    ({"format": "other", "name": "x", "stages": []}, "format: expected 'squeeze-backbone', got 'other'"),
    ({"name": "", "stages": [{"op": "cam", "name": "c"}]}, "name: must be a non-empty string, got ''"),
    ({"name": "x", "stages": [{"op": "fire", "name": "f"}]}, "stages[0].channels: missing (a fire needs channels)"),
    ({"name": "x", "stages": [{"op": "conv", "name": "c", "channels": [4], "kernel": 3}]},
     "stages[0].stride: missing (a conv needs channels, kernel, stride)"),
    ({"name": "x", "stages": [{"name": "c"}]}, "stages[0].op: missing"),
    ({"name": "x", "stages": [7]}, "stages[0]: expected an object, got int"),
    ([1, 2], "backbone: expected an object, got list"),
])
def test_bad_specs_name_the_file_and_the_field(tmp_path, doc, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError) as e:
        read_backbone(path)
    assert str(e.value).startswith(f"{path}: {message}")


def test_unreadable_or_invalid_json_names_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.json: cannot read the backbone spec"):
        read_backbone(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"name": "x", "stages": [')
    with pytest.raises(DataError, match=r"broken.json: json: not valid JSON: Expecting value at line 1 column 26"):
        read_backbone(tmp_path / "broken.json")


def test_specs_a_model_cannot_use_are_refused_by_its_config():
    trunk = squeezeseg_trunk()
    no_skip = replace(trunk, stages=tuple(replace(s, skip=False) if s.name == "fire3" else s for s in trunk.stages))
    with pytest.raises(ValueError, match=r"no skip stage at column stride 4 \(width W/4\)"):
        SqueezeSegConfig(backbone=no_skip)
    rows = replace(trunk, stages=tuple(replace(s, stride=(2, 2)) if s.name == "pool1" else s for s in trunk.stages))
    with pytest.raises(ValueError, match="stage 'pool1' strides"):
        SqueezeSegConfig(backbone=rows)
    with pytest.raises(ValueError, match="SqueezeSegV2 does"):
        SqueezeSegConfig(backbone=squeezeseg_v2_trunk())  # BatchNorm stages in plain SqueezeSeg
    clash = replace(trunk, stages=(*trunk.stages, Stage("fire", "conv14", (8, 8, 8))))
    with pytest.raises(SpecError, match="'conv14' is taken"):
        SqueezeSeg(SqueezeSegConfig(backbone=clash, width=16))
    with pytest.raises(ValueError, match="backbone must be a squeeze.backbone.Backbone or one of"):
        SqueezeDetConfig(backbone="resnet")
    with pytest.raises(ValueError, match="too small for the backbone 'squeezedet_plus'"):
        SqueezeDetConfig(backbone="squeezedet_plus", image_width=34, image_height=40)
    tiny = SqueezeDetConfig(backbone=backbone_from_json(SMALL_DET_JSON), image_width=64, image_height=48)
    with pytest.raises(ValueError, match="ImageNet SqueezeNet weights fit only the paper trunks"):
        load_torchvision_squeezenet(SqueezeDet(tiny), "unused.pth")


# ---------------------------------------------------------------------------- checkpoints before the spec


def test_configs_saved_before_the_spec_get_the_paper_trunks():
    det = asdict(squeezedet_plus_kitti())
    det["backbone"] = "squeezedet_plus"  # what configs held before the spec: the trunk's name
    assert SqueezeDetConfig.from_dict(det) == squeezedet_plus_kitti()
    assert SqueezeDetConfig(backbone="squeezedet").backbone == squeezedet_trunk() == squeezedet_kitti().backbone
    seg = asdict(SqueezeSegV2Config())
    del seg["backbone"]  # segmentation configs had no backbone field
    assert SqueezeSegV2Config.from_dict(seg).backbone == squeezeseg_v2_trunk()


def test_squeezedet_state_dicts_with_the_old_conv1_keys_load():
    config = replace(squeezedet_kitti(), image_width=64, image_height=48, batch_norm=True)
    source = SqueezeDet(config)
    with torch.no_grad():
        source.features.conv1.bn.running_mean.uniform_(-1, 1)
    new = source.state_dict()
    rename = {"features.conv1.conv.weight": "features.conv1.weight", "features.conv1.conv.bias": "features.conv1.bias"}
    old = {rename.get(k, k.replace("features.conv1.bn.", "features.bn1.")): v for k, v in new.items()}
    assert "features.bn1.running_mean" in old and "features.conv1.weight" in old
    target = SqueezeDet(config)
    target.load_state_dict(old)  # strict: every old key found its place
    for key, value in new.items():
        assert torch.equal(target.state_dict()[key], value), key


def test_bundled_checkpoints_load_and_give_the_outputs_of_before_the_spec():
    from squeezedet.predict import load_model as load_detector
    from squeezeseg.predict import load_model as load_segmenter

    det_file = ROOT / "squeezedet" / "weights" / "squeezedet_sim.pt"
    seg_file = ROOT / "squeezeseg" / "weights" / "squeezeseg_v2_sim.pt"
    assert "features.conv1.weight" in load_checkpoint(det_file)["state_dict"]  # saved with the old keys
    assert "backbone" not in load_checkpoint(seg_file)["config"]["model"]
    det = load_detector(det_file).model
    assert det.config.backbone == squeezedet_trunk()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 384, 1248, generator=g) * 255 - 120
    with torch.no_grad():
        deltas, conf, probs = det.raw_outputs(images)
    # Recorded with the code before the backbone spec (git HEAD 8a2a279) on the same input.
    assert float(conf.double().sum()) == pytest.approx(1183.3110685276188, rel=1e-5)
    assert float(deltas.double().abs().sum()) == pytest.approx(13823.170166949742, rel=1e-5)
    torch.testing.assert_close(conf[0, :4], torch.tensor([0.0155414222, 0.0273517910, 0.0240597446, 0.0502052680]))
    torch.testing.assert_close(probs[0, 7], torch.tensor([0.0249882974, 0.0082433075, 0.9667684436]))
    seg = load_segmenter(seg_file).model
    assert seg.config.backbone == squeezeseg_v2_trunk()
    g = torch.Generator().manual_seed(0)
    inputs, mask = torch.randn(1, 5, 64, 512, generator=g), torch.rand(1, 64, 512, generator=g) > 0.3
    with torch.no_grad():
        logits = seg.logits(inputs, mask)
    assert float(logits.double().sum()) == pytest.approx(-280435.93017947674, rel=1e-5)
    torch.testing.assert_close(logits[0, :, 10, 100], torch.tensor([-3.2162628174, -5.1239576340, -1.6043156385,
                                                                    3.4439306259]))
