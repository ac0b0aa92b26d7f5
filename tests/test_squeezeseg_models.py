"""SqueezeSeg / SqueezeSegV2: every variant builds, exact parameter counts, the forward contract, the CRF against
a hand computation and a naive loop, the shared Fire blocks (TF 'SAME', bilinear deconv), the losses, and a short
overfit run. Tiny shapes throughout; the 64 x 512 cases run one eval forward only."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.fire import (
    BILINEAR_TAPS_X2,
    BatchNormSpec,
    Fire,
    FireDeconv,
    SameConv2d,
    SameMaxPool2d,
    conv_macs,
    tf_same_pads,
)
from squeezeseg import squeezeseg as v1_module
from squeezeseg import squeezeseg_v2 as v2_module
from squeezeseg.crf import RecurrentCRF
from squeezeseg.loss import focal_loss, weighted_cross_entropy
from squeezeseg.models import MODELS
from squeezeseg.squeezeseg import SegPrediction, SqueezeSeg, SqueezeSegConfig, squeezeseg_kitti
from squeezeseg.squeezeseg_v2 import SqueezeSegV2, SqueezeSegV2Config, squeezeseg_v2_kitti

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_batch(b: int = 2, c: int = 5, h: int = 8, w: int = 32, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(b, c, h, w, generator=g)  # (B, C, H, W) normalised channels
    mask = torch.rand(b, h, w, generator=g) > 0.2  # (B, H, W) True where a point is
    labels = torch.randint(0, k, (b, h, w), generator=g) * mask  # (B, H, W) 0 where empty
    return inputs, mask, labels


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def per_class_fields(k: int) -> dict:
    """Per-class config fields for a k-class variant."""
    return {"class_names": tuple(f"class{i}" for i in range(k)), "class_weights": (0.1,) + (1.0,) * (k - 1),
            "crf_theta_a": (0.9,) * k, "crf_bilateral_theta_a": (0.9,) * k, "crf_theta_r": (0.015,) * k}


# ------------------------------------------------------------------------------------------------ builds, counts


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_named_config_builds_and_runs(name):
    make_config, model_cls = MODELS[name]
    config = make_config()
    model = model_cls(config)
    inputs, mask, labels = tiny_batch(c=config.in_channels, k=config.num_classes)
    model.train()
    losses = model(inputs, mask, labels)
    assert set(losses) == {"seg_loss"} and losses["seg_loss"].dim() == 0
    assert torch.isfinite(losses["seg_loss"])
    losses["seg_loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        preds = model(inputs, mask)
    assert len(preds) == 2 and all(isinstance(p, SegPrediction) for p in preds)
    for i, pred in enumerate(preds):
        assert pred.classes.shape == (8, 32) and pred.classes.dtype == torch.int64
        assert pred.probs.shape == (config.num_classes, 8, 32) and pred.probs.dtype == torch.float32
        assert (pred.classes[~mask[i]] == 0).all()
        assert (pred.probs[:, ~mask[i]] == 0).all()
        torch.testing.assert_close(pred.probs[:, mask[i]].sum(0), torch.ones(int(mask[i].sum())))


def fire_params(c: int, s: int, e1: int, e3: int) -> int:
    return c * s + s + s * e1 + e1 + 9 * s * e3 + e3


def fire_deconv_params(c: int, s: int, e1: int, e3: int) -> int:
    return fire_params(c, s, e1, e3) + 4 * s * s + s


def test_paper_parameter_counts_are_exact():
    # Recomputed from the layer table (reference/models.md 2.3 and 3.1), independently of the modules.
    encoder = [(64, 16, 64, 64), (128, 16, 64, 64), (128, 32, 128, 128), (256, 32, 128, 128),
               (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256)]
    decoder = [(512, 64, 128, 128), (256, 32, 64, 64), (128, 16, 32, 32), (64, 16, 32, 32)]
    v1 = (5 * 9 * 64 + 64) + (5 * 64 + 64) + sum(fire_params(*f) for f in encoder)
    v1 += sum(fire_deconv_params(*f) for f in decoder) + (64 * 9 * 4 + 4)
    assert v1 == 906_308 == v1_module.PAPER_CONV_PARAMS

    def cam(c):
        return c * (c // 16) + c // 16 + (c // 16) * c + c

    bn_channels = 64 + 64 + sum(s + e1 + e3 for _, s, e1, e3 in encoder + decoder)
    v2 = v1 + (9 * 64 + 64) + cam(64) + 2 * cam(128) + 2 * bn_channels
    assert v2 == 919_192 == v2_module.PAPER_CONV_PARAMS

    for model, conv in ((SqueezeSeg(squeezeseg_kitti()), v1), (SqueezeSegV2(squeezeseg_v2_kitti()), v2)):
        assert n_params(model.crf) == 32
        assert n_params(model) == conv + 32
        model_no_crf = type(model)(replace(model.config, use_crf=False))
        assert n_params(model_no_crf) == conv


def test_conv_macs_at_64x512():
    model = SqueezeSeg(replace(squeezeseg_kitti(), use_crf=False)).eval()
    inputs, mask, _ = tiny_batch(b=1, h=64, w=512)
    macs = conv_macs(model, lambda: model.logits(inputs, mask))
    assert 2.8e9 < macs < 3.0e9  # about 2.9 G multiply-accumulates, 5.8 GFLOPs a frame


# --------------------------------------------------------------------------------------------- forward contract


@pytest.mark.parametrize("model_cls", [SqueezeSeg, SqueezeSegV2])
def test_no_objects_and_empty_mask_do_not_give_nan(model_cls):
    config = squeezeseg_kitti() if model_cls is SqueezeSeg else squeezeseg_v2_kitti()
    model = model_cls(config).train()
    inputs, mask, _ = tiny_batch()
    background = torch.zeros_like(mask, dtype=torch.int64)
    loss = model(inputs, mask, background)["seg_loss"]
    assert torch.isfinite(loss) and loss > 0
    empty = torch.zeros_like(mask)
    loss = model(inputs, empty, background)["seg_loss"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        preds = model(inputs, empty)
    assert all((p.classes == 0).all() and (p.probs == 0).all() for p in preds)
    assert torch.isfinite(model.logits(inputs, empty)).all()


@pytest.mark.parametrize("model_cls", [SqueezeSeg, SqueezeSegV2])
@pytest.mark.parametrize("k", [2, 6])
def test_other_class_lists_work(model_cls, k):
    fields = per_class_fields(k)
    if model_cls is SqueezeSeg:
        config = SqueezeSegConfig(**fields)
    else:
        config = SqueezeSegV2Config(**fields, class_prior=(0.01,) + (0.33,) * (k - 1))
    model = model_cls(config).train()
    inputs, mask, labels = tiny_batch(k=k)
    model(inputs, mask, labels)["seg_loss"].backward()
    model.eval()
    assert model.logits(inputs, mask).shape == (2, k, 8, 32)
    assert model(inputs, mask)[0].probs.shape == (k, 8, 32)


@pytest.mark.parametrize("model_cls", [SqueezeSeg, SqueezeSegV2])
def test_other_channel_sets_and_widths(model_cls):
    config_cls = SqueezeSegConfig if model_cls is SqueezeSeg else SqueezeSegV2Config
    # 4 channels (no intensity), x, y, z not first: the CRF takes them from the configured indices.
    model = model_cls(config_cls(in_channels=4, crf_xyz_channels=(1, 2, 3), width=48)).eval()
    for width in (16, 48, 80):
        inputs, mask, _ = tiny_batch(b=1, c=4, h=3, w=width)
        assert model.logits(inputs, mask).shape == (1, 4, 3, width)


def test_bad_inputs_raise_clear_errors():
    model = SqueezeSeg(squeezeseg_kitti())
    inputs, mask, labels = tiny_batch()
    with pytest.raises(ValueError, match="multiple of 16"):
        model.logits(inputs[..., :24], mask[..., :24])
    with pytest.raises(ValueError, match="in_channels=5"):
        model.logits(inputs[:, :4], mask)
    with pytest.raises(ValueError, match="mask must be a bool"):
        model.logits(inputs, mask.float())
    model.train()
    with pytest.raises(ValueError, match="needs labels"):
        model(inputs, mask)
    with pytest.raises(ValueError, match=r"labels on valid pixels must be in \[0, 4\)"):
        model(inputs, mask, labels + 4 * mask)
    # Labels on empty pixels are ignored, whatever they hold (e.g. an ignore value).
    assert torch.isfinite(model(inputs, mask, labels.masked_fill(~mask, 255))["seg_loss"])
    with pytest.raises(ValueError, match="class_weights has 3 values"):
        SqueezeSegConfig(class_weights=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="crf_xyz_channels"):
        SqueezeSegConfig(in_channels=2)
    with pytest.raises(ValueError, match="crf_mode"):
        SqueezeSegV2Config(crf_mode="dense")
    with pytest.raises(ValueError, match="multiple of 16"):
        SqueezeSegConfig(width=500)


@pytest.mark.parametrize("model_cls", [SqueezeSeg, SqueezeSegV2])
def test_logits_deterministic_in_eval_and_contiguous(model_cls):
    config = squeezeseg_kitti() if model_cls is SqueezeSeg else squeezeseg_v2_kitti()
    model = model_cls(config).eval()
    inputs, mask, _ = tiny_batch()
    with torch.no_grad():
        a, b = model.logits(inputs, mask), model.logits(inputs, mask)
    assert torch.equal(a, b) and a.is_contiguous()


def test_configs_round_trip_through_json():
    for config in (squeezeseg_kitti(), squeezeseg_v2_kitti(), replace(squeezeseg_kitti(), fire_init_std=0.01)):
        values = json.loads(json.dumps(asdict(config)))
        assert type(config).from_dict(values) == config
    with pytest.raises(ValueError, match="unknown"):
        SqueezeSegConfig.from_dict({"num_layers": 3})


def test_param_groups_decay_kernels_only():
    model = SqueezeSegV2(squeezeseg_v2_kitti())
    decay, no_decay = model.param_groups(1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert decayed | not_decayed == set(names.values()) and not decayed & not_decayed
    assert "fire_deconv10.deconv.weight" in decayed  # bilinear kernels are decayed, as in the reference
    assert "cam1.squeeze.weight" in decayed and "conv14.weight" in decayed
    assert {"crf.angular_compat", "crf.bilateral_compat", "conv14.bias", "fire2.squeeze.bn.weight"} <= not_decayed
    assert all(n.endswith("weight") and p.dim() == 4 for n, p in model.named_parameters() if n in decayed)


# ------------------------------------------------------------------------------------------------------ V2 bits


def test_v2_focal_prior_bias_and_bn_settings():
    model = SqueezeSegV2(squeezeseg_v2_kitti())
    expected = [-math.log(0.99 / 0.01), -math.log(0.67 / 0.33), -math.log(0.67 / 0.33), -math.log(0.67 / 0.33)]
    torch.testing.assert_close(model.conv14.bias.detach(), torch.tensor(expected))
    torch.testing.assert_close(model.conv14.bias.detach(), torch.tensor([-4.5951, -0.7082, -0.7082, -0.7082]),
                               atol=1e-4, rtol=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.001 and m.eps == 1e-5 for m in bns)
    assert model.conv1.conv.in_channels == 6  # 5 channels + the mask


def test_v2_context_aggregation_is_a_7x7_max_pool_gate():
    cam = v2_module.ContextAggregation(32, 16)
    x = torch.randn(2, 32, 9, 12)
    pooled = F.max_pool2d(x, 7, stride=1, padding=3)  # TF 'SAME', stride 1
    gate = torch.sigmoid(cam.excite(torch.relu(cam.squeeze(pooled))))
    torch.testing.assert_close(cam(x), x * gate)
    assert cam.squeeze.out_channels == 2


def test_v2_bn_comes_after_relu():
    # With BN after the ReLU, a fresh BN in training mode normalises rectified outputs: per-channel mean 0.
    fire = Fire(8, 4, 6, 6, bn=BatchNormSpec())
    out = fire(torch.randn(4, 8, 5, 7)).transpose(0, 1).flatten(1)
    torch.testing.assert_close(out.mean(1), torch.zeros(12), atol=1e-5, rtol=0)
    assert (out.min(1).values < -0.1).all()  # ReLU then BN: negatives appear, which ReLU-last could not give


# ------------------------------------------------------------------------------------------------- Fire / SAME


def test_tf_same_pads():
    assert tf_same_pads(512, 3, 2) == (0, 1)
    assert tf_same_pads(513, 3, 2) == (1, 1)
    assert tf_same_pads(64, 3, 1) == (1, 1)
    assert tf_same_pads(64, 7, 1) == (3, 3)
    assert tf_same_pads(10, 2, 1) == (0, 1)
    assert tf_same_pads(5, 1, 2) == (0, 0)


@pytest.mark.parametrize("width", [16, 17, 30, 31])
def test_same_conv_and_pool_match_explicit_tf_padding(width):
    x = torch.randn(2, 3, 6, width)
    conv = SameConv2d(3, 4, 3, stride=(1, 2))
    left, right = tf_same_pads(width, 3, 2)
    expected = F.conv2d(F.pad(x, (left, right, 1, 1)), conv.weight, conv.bias, stride=(1, 2))
    torch.testing.assert_close(conv(x), expected)
    for kernel, stride in (((3, 3), (1, 2)), ((2, 2), (1, 1)), ((3, 3), (2, 2))):
        (top, bottom), (left, right) = tf_same_pads(6, kernel[0], stride[0]), tf_same_pads(width, kernel[1], stride[1])
        padded = F.pad(x, (left, right, top, bottom), value=-math.inf)
        torch.testing.assert_close(SameMaxPool2d(kernel, stride)(x), F.max_pool2d(padded, kernel, stride))


def test_model_widths_512_256_128_64_32():
    model = SqueezeSeg(replace(squeezeseg_kitti(), use_crf=False)).eval()
    widths = {}
    for name in ("conv1", "pool1", "pool3", "pool5", "fire9", "fire_deconv10", "fire_deconv13"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: widths.__setitem__(name, o.shape))
    inputs, mask, _ = tiny_batch(b=1, h=64, w=512)
    with torch.no_grad():
        assert model.logits(inputs, mask).shape == (1, 4, 64, 512)
    assert widths["conv1"] == (1, 64, 64, 256)
    assert widths["pool1"][-1] == 128 and widths["pool3"][-1] == 64 and widths["pool5"][-1] == 32
    assert widths["fire9"] == (1, 512, 64, 32)
    assert widths["fire_deconv10"] == (1, 256, 64, 64) and widths["fire_deconv13"] == (1, 64, 64, 512)


def test_fire_deconv_starts_as_bilinear_upsampler():
    block = FireDeconv(8, 3, 4, 4)
    deconv = block.deconv
    assert deconv.weight.shape == (3, 3, 1, 4)
    for i in range(3):
        for j in range(3):
            expected = torch.tensor(BILINEAR_TAPS_X2) if i == j else torch.zeros(4)
            assert torch.equal(deconv.weight[i, j, 0], expected)
    ramp = torch.arange(10, dtype=torch.float32).expand(1, 3, 2, 10)  # value = column
    with torch.no_grad():
        up = deconv(ramp)
    assert up.shape == (1, 3, 2, 20)
    # Output 2i is i - 1/4 and 2i + 1 is i + 1/4 (half-pixel centres), as F.interpolate's bilinear away from
    # the edges; at the edges the transposed conv sees zero padding.
    interior = up[..., 1:-1]
    torch.testing.assert_close(interior, F.interpolate(ramp, scale_factor=(1, 2), mode="bilinear")[..., 1:-1])
    torch.testing.assert_close(interior[0, 0, 0], torch.arange(1, 19, dtype=torch.float32) / 2 - 0.25)
    torch.testing.assert_close(up[0, 0, 0, [0, -1]], torch.tensor([0.0, 0.75 * 9]))
    assert block(torch.randn(1, 8, 2, 10)).shape == (1, 8, 2, 20)


def test_fire_shapes_and_relu():
    fire = Fire(16, 4, 8, 12)
    out = fire(torch.randn(2, 16, 3, 5))
    assert out.shape == (2, 20, 3, 5) and (out >= 0).all()


# ---------------------------------------------------------------------------------------------------------- CRF


def naive_crf(logits, xyz, mask, theta_a, bi_theta_a, theta_r, m_ang, m_bi, iterations, window, mode):
    """The TF code's formula (reference/models.md 2.4) with explicit loops over pixels and neighbours, float64."""
    b_, k_, h_, w_ = logits.shape
    kh, kw = window
    unary = logits.double().numpy()
    p = xyz.double().numpy()
    m = mask.numpy().astype(float)
    current = unary.copy()
    for _ in range(iterations):
        e = np.exp(current - current.max(1, keepdims=True))
        q = e / e.sum(1, keepdims=True)
        new = np.zeros_like(current)
        for b in range(b_):
            for i in range(h_):
                for j in range(w_):
                    ang, bi_ang, bi = np.zeros(k_), np.zeros(k_), np.zeros(k_)
                    for dr in range(-(kh // 2), kh // 2 + 1):
                        for dc in range(-(kw // 2), kw // 2 + 1):
                            y, x = i + dr, j + dc
                            if (dr, dc) == (0, 0) or not (0 <= y < h_ and 0 <= x < w_):
                                continue
                            d2 = ((p[b, :, i, j] - p[b, :, y, x]) ** 2).sum()
                            for c in range(k_):
                                ka = math.exp(-(dr * dr + dc * dc) / (2 * theta_a[c] ** 2))
                                kb = math.exp(-(dr * dr + dc * dc) / (2 * bi_theta_a[c] ** 2))
                                wr = math.exp(-d2 / (2 * theta_r[c] ** 2))
                                if mode == "reference":
                                    ang[c] += ka * q[b, c, y, x]
                                    bi_ang[c] += kb * q[b, c, y, x]
                                    bi[c] += wr * q[b, c, y, x] * m[b, y, x]
                                else:
                                    ang[c] += ka * q[b, c, y, x] * m[b, y, x]
                                    bi[c] += kb * wr * q[b, c, y, x] * m[b, y, x]
                    if mode == "reference":
                        new[b, :, i, j] = q[b, :, i, j] + ang @ m_ang + (bi * m[b, i, j] * bi_ang) @ m_bi
                    else:
                        new[b, :, i, j] = unary[b, :, i, j] - (ang @ m_ang + (bi * m[b, i, j]) @ m_bi)
        current = new
    return current


@pytest.mark.parametrize("mode", ["reference", "textbook"])
@pytest.mark.parametrize("thetas", [
    ((0.9, 0.9, 0.6, 0.6), (0.9, 0.9, 0.6, 0.6), (0.015, 0.015, 0.01, 0.01)),  # the paper's
    ((0.9, 0.7, 0.6, 1.2), (0.5, 0.9, 0.8, 0.6), (0.5, 0.3, 0.8, 0.4)),  # all different, unsorted
])
def test_crf_matches_naive_loops(mode, thetas):
    torch.manual_seed(1)
    theta_a, bi_theta_a, theta_r = thetas
    crf = RecurrentCRF(4, 3, (3, 5), theta_a, bi_theta_a, theta_r, 0.02, 0.1, mode)
    with torch.no_grad():  # non-symmetric matrices pin the [message class, target class] orientation
        crf.angular_compat.add_(0.3 * torch.randn(4, 4))
        crf.bilateral_compat.add_(0.3 * torch.randn(4, 4))
    logits = 2 * torch.randn(2, 4, 5, 9)
    xyz = 0.3 * torch.randn(2, 3, 5, 9)
    mask = torch.rand(2, 5, 9) > 0.3
    expected = naive_crf(logits, xyz, mask, theta_a, bi_theta_a, theta_r, crf.angular_compat.detach().numpy(),
                         crf.bilateral_compat.detach().numpy(), 3, (3, 5), mode)
    np.testing.assert_allclose(crf(logits, xyz, mask).detach().numpy(), expected, atol=1e-5, rtol=1e-5)


def test_crf_reference_mode_by_hand():
    # 1 x 2 image, 2 classes, one iteration, logits 0 -> Q = 1/2 everywhere; both points at the same place.
    crf = RecurrentCRF(2, 1, (3, 5), (1.0, 1.0), (1.0, 1.0), (0.5, 0.5), 0.02, 0.1, "reference")
    logits, xyz = torch.zeros(1, 2, 1, 2), torch.zeros(1, 3, 1, 2)
    # The only neighbour is one column away: k = exp(-1/2). ang = k/2, biang = k/2, bi = (1 * 1/2) * k/2, and the
    # (1 - I) compatibilities swap the classes: out = 1/2 + 0.02 * k/2 + 0.1 * k/4.
    k = math.exp(-0.5)
    out = crf(logits, xyz, torch.ones(1, 1, 2, dtype=torch.bool))
    torch.testing.assert_close(out, torch.full((1, 2, 1, 2), 0.5 + 0.02 * k / 2 + 0.1 * k / 4))
    assert abs(out[0, 0, 0, 0].item() - 0.5212285731) < 1e-6
    # Second point empty: no bilateral message either way, but the angular term still reads the empty pixel's
    # Q (the reference's quirk): out = 1/2 + 0.02 * k/2 at both pixels.
    out = crf(logits, xyz, torch.tensor([[[True, False]]]))
    torch.testing.assert_close(out, torch.full((1, 2, 1, 2), 0.5 + 0.02 * k / 2))
    # Points far apart in xyz (10 theta_r): the bilateral weight vanishes.
    far = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]], [[0.0, 0.0]]]])
    out = crf(logits, far, torch.ones(1, 1, 2, dtype=torch.bool))
    torch.testing.assert_close(out, torch.full((1, 2, 1, 2), 0.5 + 0.02 * k / 2))


def test_crf_textbook_pulls_towards_neighbours():
    # A pixel that weakly prefers class 1, surrounded by points confidently class 0 at the same place.
    crf = RecurrentCRF(2, 3, (3, 5), (0.9, 0.9), (0.9, 0.9), (0.5, 0.5), 0.5, 1.0, "textbook")
    logits = torch.zeros(1, 2, 3, 5)
    logits[0, 0] = 4.0
    logits[0, :, 1, 2] = torch.tensor([0.0, 0.3])
    out = crf(logits, torch.zeros(1, 3, 3, 5), torch.ones(1, 3, 5, dtype=torch.bool))
    assert out[0, 0, 1, 2] > out[0, 1, 1, 2]
    assert torch.isfinite(out).all()


def test_crf_gradients_are_exact():
    crf = RecurrentCRF(3, 2, (3, 5), (0.9, 0.6, 0.6), (0.9, 0.6, 0.6), (0.5, 0.4, 0.4)).double()
    logits = torch.randn(1, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    xyz = 0.3 * torch.randn(1, 3, 4, 6, dtype=torch.float64)
    mask = torch.rand(1, 4, 6) > 0.3
    assert torch.autograd.gradcheck(lambda x: crf(x, xyz, mask), (logits,))


# -------------------------------------------------------------------------------------------------------- losses


def test_weighted_cross_entropy_formula():
    logits, mask, labels = torch.randn(2, 4, 3, 5), torch.rand(2, 3, 5) > 0.3, torch.randint(0, 4, (2, 3, 5))
    weights = torch.tensor([1 / 15, 1.0, 10.0, 10.0])
    logp = torch.log_softmax(logits, 1).gather(1, labels[:, None])[:, 0]
    expected = -(logp * weights[labels] * mask).sum() / mask.sum() * 15
    torch.testing.assert_close(weighted_cross_entropy(logits, labels, mask, weights, 15.0), expected)


def test_focal_loss_formula():
    logits, mask, labels = torch.randn(2, 4, 3, 5), torch.rand(2, 3, 5) > 0.3, torch.randint(0, 4, (2, 3, 5))
    weights = torch.tensor([1 / 3, 1.0, 3.5, 3.5])
    p_t = torch.softmax(logits, 1).gather(1, labels[:, None])[:, 0] * mask + 1e-12
    expected = (weights[labels] * mask * (1 - p_t) ** 2 * -torch.log(p_t)).sum() / mask.sum() * 15
    torch.testing.assert_close(focal_loss(logits, labels, mask, weights, 2.0, 15.0), expected)
    # gamma 0 and no eps is the weighted cross-entropy.
    torch.testing.assert_close(focal_loss(logits, labels, mask, weights, 0.0, 15.0, eps=0.0),
                               weighted_cross_entropy(logits, labels, mask, weights, 15.0))


# --------------------------------------------------------------------------------------------------------- overfit


def synthetic_range_images(n: int = 2, h: int = 16, w: int = 64, seed: int = 0):
    """Normalised range images with a car, a pedestrian and a cyclist each: near, reflective patches on a floor."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    mean = torch.tensor([10.88, 0.23, -1.04, 0.21, 12.12])[:, None, None]
    std = torch.tensor([11.47, 6.91, 0.86, 0.16, 12.32])[:, None, None]
    inputs, masks, labels = [], [], []
    for _ in range(n):
        rng = 40.0 - 2.0 * rows + torch.rand(h, w, generator=g)
        intensity = 0.2 * torch.rand(h, w, generator=g)
        label = torch.zeros(h, w, dtype=torch.int64)
        for cls, (width, dist, refl) in {1: (14, 8.0, 0.6), 2: (4, 12.0, 0.3), 3: (6, 10.0, 0.9)}.items():
            c0 = int(torch.randint(0, w - width, (1,), generator=g))
            r0 = int(torch.randint(2, h // 2, (1,), generator=g))
            label[r0:r0 + 6, c0:c0 + width] = cls
            rng[r0:r0 + 6, c0:c0 + width] = dist
            intensity[r0:r0 + 6, c0:c0 + width] = refl
        azimuth = torch.linspace(0.7, -0.7, w)[None].expand(h, w)
        elevation = -0.02 * rows
        xyz = [rng * torch.cos(elevation) * torch.cos(azimuth), rng * torch.cos(elevation) * torch.sin(azimuth),
               rng * torch.sin(elevation)]
        mask = torch.rand(h, w, generator=g) > 0.1
        inputs.append((torch.stack([*xyz, intensity, rng]) * mask - mean) / std)
        masks.append(mask)
        labels.append(label * mask)
    return torch.stack(inputs), torch.stack(masks), torch.stack(labels)


def test_squeezeseg_v2_overfits_two_range_images():
    torch.manual_seed(0)
    inputs, mask, labels = synthetic_range_images()
    model = SqueezeSegV2(replace(squeezeseg_v2_kitti(), use_crf=False)).train()
    optimizer = torch.optim.Adam(model.param_groups(0.0), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = model(inputs, mask, labels)["seg_loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] / 5, losses[::10]
