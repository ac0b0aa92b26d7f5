"""SqueezeDet / SqueezeDet+: every variant builds, exact parameter counts, grid sizes, the anchor layout against the
ConvDet channel layout, target assignment, the losses against hand computations, safe-exp decoding (torch, for the
loss; it equals squeeze.detection's, whose NMS tests are in tests/test_detection.py), the forward contract,
torchvision weight loading and the frozen conv1.

Full-size networks run on the meta device (shapes only); real forwards use tiny inputs on one thread."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze.detection import decode_boxes as numpy_decode_boxes
from squeeze.errors import DataError
from squeeze.predictor import Detections2D
from squeezedet.anchors import KITTI_ANCHOR_SHAPES, make_anchors, read_anchor_file, write_anchor_file
from squeezedet.decode import box_iou, cxcywh_to_xyxy, decode_boxes, safe_exp
from squeezedet.loss import assign_anchors, build_targets, detection_losses, encode_deltas, softmax_binary_cross_entropy
from squeezedet.model import (
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    SQUEEZEDET_KITTI_PARAMS,
    SQUEEZEDET_PLUS_KITTI_PARAMS,
    TORCHVISION_LAYERS,
    SqueezeDet,
    SqueezeDetConfig,
    at_input_size,
    fold_batch_norm,
    from_scratch,
    load_torchvision_squeezenet,
    split_convdet_output,
    squeezedet_kitti,
    squeezedet_plus_kitti,
    with_anchor_file,
)
from squeezedet.models import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_config(backbone: str = "squeezedet", **kw) -> SqueezeDetConfig:
    """A small input (grid 3 x 4 for SqueezeDet, 2 x 3 for SqueezeDet+) with anchors that fit it."""
    size = {"squeezedet": (64, 48), "squeezedet_plus": (80, 64)}[backbone]
    fields = {"image_width": size[0], "image_height": size[1], "backbone": backbone,
              "anchor_shapes": ((8.0, 8.0), (20.0, 12.0), (12.0, 24.0))} | kw
    return SqueezeDetConfig(**fields)


def tiny_targets(config: SqueezeDetConfig):
    boxes = [torch.tensor([[5.0, 6.0, 25.0, 30.0], [30.0, 10.0, 50.0, 20.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0, config.num_classes - 1]), torch.zeros(0, dtype=torch.int64)]
    return boxes, labels


def meta_model(config: SqueezeDetConfig) -> SqueezeDet:
    """Built on the CPU (random init on "meta" would import torch._dynamo, seconds), then moved: shapes only."""
    return SqueezeDet(config).to("meta")


# ------------------------------------------------------------------------------------------------ builds, counts


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_named_config_builds_with_exact_shapes(name):
    make_config, model_cls = MODELS[name]
    config = make_config()
    model = meta_model(config)
    images = torch.zeros(2, 3, config.image_height, config.image_width, device="meta")
    features = model.features(images)
    assert tuple(features.shape[2:]) == config.grid
    deltas, conf, logits = model.head(images)
    n = config.num_anchors
    assert (deltas.shape, conf.shape, logits.shape) == ((2, n, 4), (2, n), (2, n, 3))
    assert model.anchors.shape == (n, 4)


def test_parameter_counts_are_exact():
    assert n_params(meta_model(squeezedet_kitti())) == SQUEEZEDET_KITTI_PARAMS == 2_082_120
    assert n_params(meta_model(squeezedet_plus_kitti())) == SQUEEZEDET_PLUS_KITTI_PARAMS == 7_021_640
    # The split of the SqueezeDet count given in reference/models.md 1.2: backbone 1,584,384 + ConvDet 497,736.
    model = meta_model(squeezedet_kitti())
    assert n_params(model.convdet) == 497_736 and n_params(model.features) == 1_584_384


@pytest.mark.parametrize("backbone", ["squeezedet", "squeezedet_plus"])
def test_both_backbones_train_and_eval_on_a_tiny_input(backbone):
    config = tiny_config(backbone)
    torch.manual_seed(0)
    model = SqueezeDet(config)
    images = torch.randn(2, 3, config.image_height, config.image_width)
    boxes, labels = tiny_targets(config)
    model.train()
    losses = model(images, boxes, labels)
    assert set(losses) == {"bbox_loss", "conf_loss", "class_loss"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    out = model(images)
    assert len(out) == 2 and all(isinstance(d, Detections2D) for d in out)  # numpy, squeeze.detection's NMS
    for det in out:
        m = len(det)
        assert det.boxes.shape == (m, 4) and det.boxes.dtype == np.float32
        assert det.scores.shape == (m,) and det.classes.shape == (m,) and det.classes.dtype == np.int64
        assert (det.scores[:-1] >= det.scores[1:]).all()
    raw = model.raw_outputs(images)
    n = config.num_anchors
    assert raw.deltas.shape == (2, n, 4) and raw.confidence.shape == (2, n) and raw.class_probs.shape == (2, n, 3)
    assert torch.allclose(raw.class_probs.sum(-1), torch.ones(2, n))


@pytest.mark.parametrize("class_names", [("Car",), ("a", "b", "c", "d", "e")])
def test_any_class_list(class_names):
    config = tiny_config(class_names=class_names)
    model = SqueezeDet(config)
    assert model.convdet.out_channels == 3 * (len(class_names) + 5)
    images = torch.randn(1, 3, config.image_height, config.image_width)
    boxes, labels = tiny_targets(config)
    losses = model.train()(images, boxes[:1], labels[:1])
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.eval().raw_outputs(images).class_probs.shape[-1] == len(class_names)


# --------------------------------------------------------------------------------------------------------- grid


@pytest.mark.parametrize("backbone", ["squeezedet", "squeezedet_plus"])
@pytest.mark.parametrize("size", [(1248, 384), (1242, 375), (624, 192), (512, 256), (100, 37)])
def test_grid_size_matches_the_network(backbone, size):
    config = SqueezeDetConfig(image_width=size[0], image_height=size[1], backbone=backbone)
    model = meta_model(config)
    features = model.features(torch.zeros(1, 3, size[1], size[0], device="meta"))
    assert tuple(features.shape[2:]) == config.grid  # the grid the spec derives is the network's
    assert model.anchors.shape == (config.num_anchors, 4)


def test_grid_sizes_of_the_reference():
    def grid(w: int, h: int, backbone: str) -> tuple[int, int]:
        return SqueezeDetConfig(image_width=w, image_height=h, backbone=backbone).grid

    assert grid(1248, 384, "squeezedet") == (24, 78)
    assert grid(1242, 375, "squeezedet_plus") == (22, 76)
    assert grid(1242, 375, "squeezedet") == (24, 78)
    assert grid(624, 192, "squeezedet") == (12, 39)
    assert grid(512, 256, "squeezedet") == (16, 32)  # issue #15: SAME 16 x 32 ...
    assert grid(512, 256, "squeezedet_plus") == (14, 30)  # ... VALID smaller
    assert grid(35, 35, "squeezedet_plus") == (1, 1)
    with pytest.raises(ValueError, match="too small"):
        grid(34, 40, "squeezedet_plus")


def test_wrong_input_size_is_a_clear_error():
    config = tiny_config()
    model = SqueezeDet(config).eval()
    with pytest.raises(ValueError, match="built for 64 x 48"):
        model(torch.zeros(1, 3, 32, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 4, 48, 64))


# ------------------------------------------------------------------------------------------------------ anchors


def test_anchor_centres_on_a_tiny_grid():
    # 2 x 3 grid over a 80 x 30 image: cx = 80 / 4 * (1, 2, 3), cy = 30 / 3 * (1, 2).
    anchors = make_anchors(2, 3, 80, 30, [(10, 20), (5, 5)])
    assert anchors.dtype == np.float32 and anchors.shape == (2 * 3 * 2, 4)
    expected = []
    for cy in (10.0, 20.0):
        for cx in (20.0, 40.0, 60.0):
            expected += [[cx, cy, 10.0, 20.0], [cx, cy, 5.0, 5.0]]
    np.testing.assert_array_equal(anchors, np.array(expected, dtype=np.float32))


def test_kitti_anchors_follow_the_reference_construction():
    """The reference builds x by tiling then transposing (B, H, W) -> (H, W, B) and y from (B, W, H) -> (H, W, B)."""
    h, w, b = 24, 78, 9
    xs = np.arange(1, w + 1) * 1248.0 / (w + 1)
    ys = np.arange(1, h + 1) * 384.0 / (h + 1)
    center_x = np.transpose(np.reshape(np.tile(xs, h * b), (b, h, w)), (1, 2, 0))
    center_y = np.transpose(np.reshape(np.tile(ys, w * b), (b, w, h)), (2, 1, 0))
    shapes = np.broadcast_to(np.array(KITTI_ANCHOR_SHAPES), (h, w, b, 2))
    reference = np.concatenate((center_x[..., None], center_y[..., None], shapes), axis=3).reshape(-1, 4)
    ours = make_anchors(h, w, 1248, 384)
    np.testing.assert_allclose(ours, reference, rtol=1e-6)
    assert ours.shape == (16_848, 4)
    np.testing.assert_allclose(ours[0], [1248 / 79, 384 / 25, 36, 37], rtol=1e-6)


def test_anchor_order_matches_the_convdet_channel_layout():
    """A delta written into one anchor's channels of the ConvDet map comes out as that anchor's detection."""
    config = tiny_config()
    grid_h, grid_w = config.grid
    a, k = config.anchors_per_cell, config.num_classes
    row, col, slot, cls = 1, 2, 2, 1
    preds = torch.zeros(1, config.convdet_channels, grid_h, grid_w)
    preds[0, :a * k, :, :] = -5.0  # every class logit low ...
    preds[0, slot * k + cls, row, col] = 5.0  # ... but this anchor's class 1
    preds[0, a * k:a * k + a] = -8.0  # every confidence low ...
    preds[0, a * k + slot, row, col] = 8.0  # ... but this anchor's
    preds[0, a * k + a + 4 * slot + 0, row, col] = 0.25  # dx
    preds[0, a * k + a + 4 * slot + 3, row, col] = math.log(0.5)  # dh

    model = SqueezeDet(config).eval()

    class Fixed(nn.Module):
        def forward(self, x):
            return preds.contiguous(memory_format=torch.channels_last)

    model.convdet = Fixed()  # the real trunk runs, the head emits the synthetic map
    det = model(torch.zeros(1, 3, config.image_height, config.image_width))[0]
    n = (row * grid_w + col) * a + slot
    acx, acy = (col + 1) * 64 / (grid_w + 1), (row + 1) * 48 / (grid_h + 1)
    aw, ah = config.anchor_shapes[slot]
    assert torch.allclose(model.anchors[n], torch.tensor([acx, acy, aw, ah]))
    assert int(det.classes[0]) == cls and float(det.scores[0]) > 0.9
    cx, h = acx + 0.25 * aw, 0.5 * ah
    expected = torch.tensor([cx - aw / 2, acy - h / 2, cx + aw / 2, acy + h / 2]).clamp(min=0)
    expected[0::2] = expected[0::2].clamp(max=63)
    expected[1::2] = expected[1::2].clamp(max=47)
    np.testing.assert_allclose(det.boxes[0], expected.numpy(), atol=1e-5)
    deltas, conf, logits = split_convdet_output(preds, a, k)
    assert int(conf.argmax()) == n and int(logits[0, n].argmax()) == cls


def test_anchor_file_round_trip_and_errors(tmp_path):
    path = write_anchor_file(tmp_path / "anchors.json", [(30, 40), (100, 50)], (1248, 384), meta={"iou": 0.6})
    read = read_anchor_file(path)
    assert read.shapes == ((30.0, 40.0), (100.0, 50.0)) and read.image_size == (1248, 384)
    assert read.meta == {"iou": 0.6}
    assert read.scaled_to(624, 192) == ((15.0, 20.0), (50.0, 25.0))
    config = with_anchor_file(SqueezeDetConfig(image_width=624, image_height=192), path)
    assert config.anchor_shapes == ((15.0, 20.0), (50.0, 25.0)) and config.anchors_per_cell == 2
    assert SqueezeDet(replace(config, image_width=64, image_height=32)).convdet.out_channels == 2 * 8

    bad = tmp_path / "bad.json"
    for text, match in [("{", "JSON"), ('{"format": "x"}', "not a SqueezeDet anchor file"),
                        (json.dumps({"format": "squeezedet-anchors", "version": 1, "image_size": [10, 10],
                                     "shapes": [[1, -2]]}), "positive"),
                        (json.dumps({"format": "squeezedet-anchors", "version": 1, "shapes": [[1, 2]]}),
                         "image_size")]:
        bad.write_text(text)
        with pytest.raises(DataError, match=match) as info:
            read_anchor_file(bad)
        assert str(bad) in str(info.value)
    with pytest.raises(DataError, match="not found"):
        read_anchor_file(tmp_path / "missing.json")


def test_at_input_size_scales_anchors_and_keeps_the_weights():
    full = tiny_config()
    half = at_input_size(full, 32, 24)
    assert (half.image_width, half.image_height) == (32, 24)
    assert half.anchor_shapes == ((4.0, 4.0), (10.0, 6.0), (6.0, 12.0))
    assert at_input_size(full, 64, 48) == full
    small, big = SqueezeDet(half), SqueezeDet(full)
    big.load_state_dict(small.state_dict())  # one set of weights serves both sizes
    assert small.anchors.shape == (2 * 2 * 3, 4) and big.anchors.shape == (3 * 4 * 3, 4)
    # The anchors of the half-size grid are the full-size ones of a 2 x 2 grid, halved.
    np.testing.assert_allclose(small.anchors[:, 2:], big.anchors[: 2 * 2 * 3, 2:] / 2)


def test_box_shapes_leave_out_low_boxes(tmp_path):
    from squeeze.kitti import ObjectLabels, write_labels
    from squeezedet.anchors import box_shapes

    n = 3
    write_labels(tmp_path / "000000.txt", ObjectLabels(
        type=np.array(["Car", "Pedestrian", "DontCare"], "<U16"), truncated=np.zeros(n),
        occluded=np.zeros(n, np.int64), alpha=np.zeros(n), bbox=np.array([[0, 0, 50, 30], [10, 10, 20, 30],
                                                                           [0, 0, 5, 100]], float),
        dimensions=np.ones((n, 3)), location=np.ones((n, 3)), rotation_y=np.zeros(n)))
    # KITTI's 1242 x 375 images measured at 621 x 375: widths halve, heights stay.
    np.testing.assert_allclose(box_shapes(tmp_path, None, (621, 375)), [[25, 30], [5, 20]])
    np.testing.assert_allclose(box_shapes(tmp_path, None, (621, 375), min_height=25), [[25, 30]])
    with pytest.raises(DataError, match="no boxes"):
        box_shapes(tmp_path, None, (621, 375), min_height=31)


# ------------------------------------------------------------------------------------------- target assignment


def naive_assignment(anchors: np.ndarray, boxes: np.ndarray) -> list[int]:
    """The reference's data-layer loop, written plainly: full stable sorts, a taken set (float32 like ours)."""
    taken, out = set(), []
    corners_a = np.concatenate([anchors[:, :2] - 0.5 * anchors[:, 2:], anchors[:, :2] + 0.5 * anchors[:, 2:]], 1)
    area_a = (corners_a[:, 2] - corners_a[:, 0]) * (corners_a[:, 3] - corners_a[:, 1])
    for box in boxes:
        b = np.concatenate([box[:2] - 0.5 * box[2:], box[:2] + 0.5 * box[2:]])
        iw = np.clip(np.minimum(b[2], corners_a[:, 2]) - np.maximum(b[0], corners_a[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[3], corners_a[:, 3]) - np.maximum(b[1], corners_a[:, 1]), 0, None)
        inter = iw * ih
        iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + area_a - inter)
        pick = -1
        for idx in np.argsort(-iou, kind="stable"):
            if iou[idx] <= 0:
                break
            if idx not in taken:
                pick = int(idx)
                break
        if pick < 0:
            dist = ((box[None] - anchors) ** 2).sum(1)
            pick = next(int(i) for i in np.argsort(dist, kind="stable") if i not in taken)
        taken.add(pick)
        out.append(pick)
    return out


def test_target_assignment_on_hand_built_boxes():
    anchors = torch.tensor([[10.0, 10.0, 10.0, 10.0],  # 0
                            [30.0, 10.0, 10.0, 10.0],  # 1
                            [10.0, 20.0, 20.0, 20.0],  # 2
                            [30.0, 30.0, 20.0, 20.0]])  # 3
    boxes = torch.tensor([[11.0, 10.0, 10.0, 10.0],  # best: anchor 0 (IoU 0.82), then 2 (0.11), no other overlap
                          [11.0, 10.0, 10.0, 10.0],  # the same box: 0 is taken, so 2 (not the nearer 1)
                          [29.0, 31.0, 18.0, 18.0],  # anchor 3 (IoU 0.81)
                          [200.0, 12.0, 10.0, 10.0]])  # overlaps nothing: nearest free by [cx, cy, w, h] -> 1
    assert assign_anchors(anchors, boxes).tolist() == [0, 2, 3, 1]
    # A fifth box with no free anchor left (4 anchors) is left unassigned rather than doubling up.
    five = torch.cat([boxes, boxes[:1]])
    assert assign_anchors(anchors, five).tolist() == [0, 2, 3, 1, -1]


def test_target_assignment_matches_the_reference_loop_on_random_boxes():
    rng = np.random.default_rng(0)
    anchors = make_anchors(6, 10, 320, 96, [(20, 20), (60, 30), (15, 40)])
    for _ in range(20):
        g = int(rng.integers(1, 25))
        boxes = np.stack([rng.uniform(-50, 370, g), rng.uniform(-20, 116, g), rng.uniform(2, 150, g),
                          rng.uniform(2, 80, g)], 1).astype(np.float32)
        boxes[: g // 3] = boxes[0]  # duplicates force the "already taken" branch
        ours = assign_anchors(torch.from_numpy(anchors), torch.from_numpy(boxes)).tolist()
        assert ours == naive_assignment(anchors, boxes)
        assert len(set(ours)) == g


def test_targets_encode_the_box_at_its_anchor():
    anchors = torch.from_numpy(make_anchors(3, 4, 64, 48, [(8, 8), (20, 12)]))
    boxes = [torch.tensor([[10.0, 10.0, 30.0, 22.0], [40.0, 5.0, 40.2, 9.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.int64)]
    t = build_targets(anchors, boxes, labels, num_classes=2, batch_size=2)
    assert t.num_positive == 2 and t.batch_index.tolist() == [0, 0] and t.labels.tolist() == [1, 0]
    assert t.weight.tolist() == [1.0, 1.0] and t.num_boxes == 2.0  # one anchor per box: the reference's 1 / N
    # The 0.2-pixel-wide box counts as MIN_BOX_SIZE = 1 pixel wide: finite log(w / aw).
    assert torch.isfinite(t.deltas).all()
    assert torch.allclose(t.boxes[1], torch.tensor([39.6, 5.0, 40.6, 9.0]))
    decoded = decode_boxes(t.deltas, anchors[t.anchor_index], 64, 48, exp_thresh=10.0)
    assert torch.allclose(decoded, t.boxes, atol=1e-4)
    cx, cy, w, h = 20.0, 16.0, 20.0, 12.0
    a = anchors[t.anchor_index[0]]
    expected = torch.tensor([(cx - a[0]) / a[2], (cy - a[1]) / a[3], math.log(w / a[2]), math.log(h / a[3])])
    assert torch.allclose(t.deltas[0], expected, atol=1e-6)
    assert torch.allclose(encode_deltas(a[None], a[None]), torch.zeros(1, 4))


def test_extra_positives_on_hand_built_boxes():
    # Anchors [left, top, right, bottom]: [0, 0, 10, 10], [2, 0, 12, 10], [5, 0, 15, 10], [20, 0, 30, 10].
    anchors = torch.tensor([[5.0, 5.0, 10.0, 10.0], [7.0, 5.0, 10.0, 10.0], [10.0, 5.0, 10.0, 10.0],
                            [25.0, 5.0, 10.0, 10.0]])
    # Box B [1, 0, 11, 10]: IoU 90/110 with anchors 0 and 1 (the tie goes to 0), 60/140 = 0.43 with anchor 2.
    # Box C [19, 0, 29, 10]: IoU 90/110 with anchor 3 only.
    boxes = [torch.tensor([[1.0, 0.0, 11.0, 10.0], [19.0, 0.0, 29.0, 10.0]])]
    labels = [torch.tensor([1, 0])]

    def positives(threshold, boxes=boxes, labels=labels):
        t = build_targets(anchors, boxes, labels, num_classes=2, batch_size=1, extra_positive_iou=threshold)
        return t.anchor_index.tolist(), t.labels.tolist(), t

    assert positives(0.0)[:2] == ([0, 3], [1, 0])  # the reference: one anchor per box
    assert positives(0.9)[:2] == ([0, 3], [1, 0])  # nothing else reaches 0.9
    assert positives(0.5)[:2] == ([0, 3, 1], [1, 0, 1])
    anchor_index, label, t = positives(0.4)
    assert (anchor_index, label) == ([0, 3, 1, 2], [1, 0, 1, 1])
    # Every positive regresses to its own box from its own anchor.
    expected = torch.tensor([[1.0, 0.0, 11.0, 10.0], [19.0, 0.0, 29.0, 10.0]])[[0, 1, 0, 0]]
    assert torch.allclose(t.boxes, expected)
    assert torch.allclose(decode_boxes(t.deltas, anchors[t.anchor_index], 64, 48, exp_thresh=10.0), expected,
                          atol=1e-5)
    # An anchor the reference gave to one box is never a second box's extra: B twice takes anchors 0 and 1; anchor
    # 2 overlaps both equally and goes to the first.
    twice = [torch.tensor([[1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0]])]
    anchor_index, _, t = positives(0.4, twice, [torch.tensor([0, 1])])
    assert anchor_index == [0, 1, 2] and t.labels.tolist() == [0, 1, 0]
    # Each box weighs as one: the first box's two positives get 1/2 each, the second's one gets 1.
    assert t.weight.tolist() == [0.5, 1.0, 0.5] and t.num_boxes == 2.0
    assert positives(0.4, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)])[2].num_positive == 0
    with pytest.raises(ValueError, match="extra_positive_iou"):
        positives(1.5)
    with pytest.raises(ValueError, match="extra_positive_iou"):
        replace(tiny_config(), extra_positive_iou=-0.1)


def test_extra_positives_train_more_anchors_per_box():
    torch.manual_seed(0)
    config = replace(tiny_config(), extra_positive_iou=0.5)
    model = SqueezeDet(config).train()
    images = torch.randn(2, 3, config.image_height, config.image_width)
    # A 20 x 12 box halfway between the first two anchor centres (x = 12.8, 25.6; y = 12) of the 20 x 12 shape:
    # IoU 163.2 / 316.8 = 0.515 with each, below 0.5 with every other anchor.
    boxes = [torch.tensor([[9.2, 6.0, 29.2, 18.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0]), torch.zeros(0, dtype=torch.int64)]
    reference = build_targets(model.anchors, boxes, labels, config.num_classes, 2)
    extra = build_targets(model.anchors, boxes, labels, config.num_classes, 2, 0.5)
    assert reference.num_positive == 1 and extra.num_positive == 2
    assert extra.anchor_index[0] == reference.anchor_index[0]
    assert box_iou(cxcywh_to_xyxy(model.anchors[extra.anchor_index]), extra.boxes[:1]).flatten().tolist() == \
        pytest.approx([163.2 / 316.8] * 2, abs=1e-5)
    losses = model(images, boxes, labels)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    # The losses against the formula: each of the two positives weighs 1/2 of the one box.
    deltas, conf_logits, class_logits = model.head(images)
    got = detection_losses(deltas, conf_logits, class_logits, extra, model.anchors, config.image_width,
                           config.image_height)
    bi, ai = extra.batch_index, extra.anchor_index
    bbox = 5.0 * 0.5 * (deltas[bi, ai] - extra.deltas).square().sum()
    assert torch.allclose(got["bbox_loss"], bbox)
    ce = softmax_binary_cross_entropy(class_logits[bi, ai], extra.labels)
    assert torch.allclose(got["class_loss"], 0.5 * ce.sum())


def test_bad_targets_are_clear_errors():
    config = tiny_config()
    model = SqueezeDet(config).train()
    images = torch.zeros(1, 3, 48, 64)
    with pytest.raises(ValueError, match="training mode needs boxes"):
        model(images)
    with pytest.raises(ValueError, match=r"boxes\[0\] row 1"):
        model(images, [torch.tensor([[0.0, 0, 5, 5], [10, 10, 5, 20]])], [torch.tensor([0, 1])])
    with pytest.raises(ValueError, match=r"labels\[0\] must be class indices"):
        model(images, [torch.tensor([[0.0, 0, 5, 5]])], [torch.tensor([3])])
    with pytest.raises(ValueError, match="one boxes and one labels tensor per image"):
        model(images, [], [])


# ------------------------------------------------------------------------------------------------------- losses


def zero_head_model(config: SqueezeDetConfig) -> SqueezeDet:
    model = SqueezeDet(config)
    nn.init.zeros_(model.convdet.weight)
    nn.init.zeros_(model.convdet.bias)
    return model.train()


def test_losses_on_images_without_objects():
    config = tiny_config()
    model = zero_head_model(config)
    images = torch.randn(2, 3, 48, 64)
    empty = [torch.zeros(0, 4)] * 2
    losses = model(images, empty, [torch.zeros(0, dtype=torch.int64)] * 2)
    # Zero head: conf = 0.5 everywhere, every anchor negative: sum over A of 100 / A * 0.25 = 25 per image.
    assert losses["bbox_loss"].item() == 0.0 and losses["class_loss"].item() == 0.0
    assert losses["conf_loss"].item() == pytest.approx(25.0, rel=1e-6)
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_losses_with_objects_against_hand_computation():
    config = tiny_config()
    model = zero_head_model(config)
    boxes, labels = tiny_targets(config)
    losses = model(torch.randn(2, 3, 48, 64), boxes, labels)
    t = build_targets(model.anchors, boxes, labels, config.num_classes, 2)
    n, a = t.num_positive, config.num_anchors
    assert n == 2
    # Zero deltas: bbox = 5 * sum(delta_gt^2) / N.
    assert losses["bbox_loss"].item() == pytest.approx(5.0 * t.deltas.square().sum().item() / n, rel=1e-5)
    # Uniform softmax over 3 classes: -log(1/3) - 2 log(2/3) per object.
    assert losses["class_loss"].item() == pytest.approx(-math.log(1 / 3) - 2 * math.log(2 / 3), rel=1e-5)
    # Confidence: IoU of each anchor itself (zero deltas) with its box, positives weighted 75 / N, negatives
    # 100 / (A - N); image 0 has both positives, image 1 none; mean over the 2 images.
    anchor_boxes = cxcywh_to_xyxy(model.anchors[t.anchor_index])
    anchor_boxes[:, 0::2] = anchor_boxes[:, 0::2].clamp(0, 63)
    anchor_boxes[:, 1::2] = anchor_boxes[:, 1::2].clamp(0, 47)
    ious = torch.diagonal(box_iou(anchor_boxes, t.boxes))
    image0 = ((ious - 0.5) ** 2).sum() * 75 / n + (a - n) * 0.25 * 100 / (a - n)
    image1 = a * 0.25 * 100 / (a - n)
    assert losses["conf_loss"].item() == pytest.approx(((image0 + image1) / 2).item(), rel=1e-5)


def test_iou_target_carries_no_gradient():
    config = tiny_config()
    model = zero_head_model(config)
    boxes, labels = tiny_targets(config)
    conf = model(torch.randn(2, 3, 48, 64), boxes, labels)["conf_loss"]
    conf.backward()
    # Only the confidence channels receive gradient from the confidence loss, not the delta channels.
    a, k = config.anchors_per_cell, config.num_classes
    grad = model.convdet.bias.grad
    assert grad[a * k:a * k + a].abs().sum() > 0 and grad[a * k + a:].abs().sum() == 0


def test_softmax_binary_cross_entropy_matches_the_formula_and_stays_finite():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    labels = torch.tensor([2, 0])
    p = logits.softmax(-1)
    q = F.one_hot(labels, 3).float()
    expected = -(q * p.log() + (1 - q) * (1 - p).log()).sum(-1)
    assert torch.allclose(softmax_binary_cross_entropy(logits, labels), expected, atol=1e-6)
    extreme = torch.tensor([[200.0, -200.0, 0.0]], requires_grad=True)
    loss = softmax_binary_cross_entropy(extreme, torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss).all() and torch.isfinite(extreme.grad).all() and loss.item() > 300
    assert softmax_binary_cross_entropy(torch.zeros(4, 1), torch.zeros(4, dtype=torch.int64)).abs().sum() == 0


# ------------------------------------------------------------------------------------------------------- decode


def test_safe_exp():
    x = torch.tensor([-2.0, 0.0, 1.0, 2.0, 1e4], requires_grad=True)
    y = safe_exp(x, 1.0)
    assert torch.allclose(y[:3], torch.exp(x[:3]))
    assert y[3].item() == pytest.approx(2 * math.e) and y[4].item() == pytest.approx(1e4 * math.e)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([math.exp(-2), 1.0, math.e, math.e, math.e]))
    assert safe_exp(torch.tensor([1.0 + 1e-6]), 1.0).item() == pytest.approx(math.e, rel=1e-5)  # continuous
    big = decode_boxes(torch.tensor([[0.0, 0.0, 50.0, 50.0]]), torch.tensor([[10.0, 10.0, 4.0, 4.0]]), 100, 100)
    assert torch.isfinite(big).all() and big.tolist() == [[0.0, 0.0, 99.0, 99.0]]  # linear growth, then clipped


def test_decode_boxes_clips_to_the_image():
    anchors = torch.tensor([[5.0, 5.0, 20.0, 10.0], [50.0, 40.0, 10.0, 10.0]])
    boxes = decode_boxes(torch.zeros(2, 4), anchors, 64, 48)
    assert boxes.tolist() == [[0.0, 0.0, 15.0, 10.0], [45.0, 35.0, 55.0, 45.0]]
    shifted = decode_boxes(torch.tensor([[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]]), anchors, 64, 48)
    assert shifted[1].tolist() == [63.0, 45.0, 63.0, 47.0]


def test_torch_decoding_equals_the_numpy_decoding_of_inference():
    """The loss decodes in torch (gradients), inference in numpy (squeeze.detection): the same boxes."""
    g = torch.Generator().manual_seed(3)
    anchors = torch.rand(200, 4, generator=g) * torch.tensor([64.0, 48.0, 30.0, 30.0]) + torch.tensor([0, 0, 1, 1])
    deltas = torch.randn(200, 4, generator=g) * 1.5  # some above safe_exp's threshold
    ours = decode_boxes(deltas, anchors, 64, 48).numpy()
    np.testing.assert_allclose(ours, numpy_decode_boxes(deltas.numpy(), anchors.numpy(), 64, 48), atol=1e-5)


# ----------------------------------------------------------------------------------------- ImageNet weights


def torchvision_like_state_dict(version: str, squeeze_ratio: float | None = None, seed: int = 0) -> dict:
    """A state_dict with torchvision's SqueezeNet key names and shapes (features.N.*, classifier.1.*)."""
    g = torch.Generator().manual_seed(seed)
    if version == "1_1":
        conv1, fires = (64, 3), {3: (64, 64), 4: (128, 64), 6: (128, 128), 7: (256, 128), 9: (256, 192),
                                 10: (384, 192), 11: (384, 256), 12: (512, 256)}
    else:
        conv1, fires = (96, 7), {3: (96, 64), 4: (128, 64), 5: (128, 128), 7: (256, 128), 8: (256, 192),
                                 9: (384, 192), 10: (384, 256), 12: (512, 256)}
    state = {"features.0.weight": torch.randn(conv1[0], 3, conv1[1], conv1[1], generator=g) * 0.1,
             "features.0.bias": torch.randn(conv1[0], generator=g) * 0.1}
    for idx, (cin, e) in fires.items():
        s = int(squeeze_ratio * 2 * e) if squeeze_ratio else e // 4  # torchvision: squeeze = expand / 4
        for name, shape in (("squeeze", (s, cin, 1, 1)), ("expand1x1", (e, s, 1, 1)), ("expand3x3", (e, s, 3, 3))):
            state[f"features.{idx}.{name}.weight"] = torch.randn(*shape, generator=g) * 0.1
            state[f"features.{idx}.{name}.bias"] = torch.randn(shape[0], generator=g) * 0.1
    state["classifier.1.weight"] = torch.randn(1000, 512, 1, 1, generator=g)
    state["classifier.1.bias"] = torch.zeros(1000)
    return state


def test_load_torchvision_squeezenet1_1(tmp_path):
    state = torchvision_like_state_dict("1_1")
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(state, path)
    config = tiny_config(freeze_conv1=True)
    model = SqueezeDet(config)
    report = load_torchvision_squeezenet(model, path)
    assert report.skipped == () and len(report.loaded) == 1 + 8 * 3
    for ours, idx in TORCHVISION_LAYERS["squeezedet"].items():
        if ours != "conv1":
            fire = model.features.get_submodule(ours)
            assert torch.equal(fire.squeeze.conv.weight, state[f"features.{idx}.squeeze.weight"])
            assert torch.equal(fire.expand.expand3x3.bias, state[f"features.{idx}.expand3x3.bias"])
    # conv1 on our input (BGR 0-255 minus pixel_mean) equals torchvision's conv1 on its input (RGB / 255,
    # ImageNet-normalised) away from the padded border.
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(1, 3, 48, 64, generator=g) * 255
    ours_in = rgb.flip(1) - torch.tensor(config.pixel_mean).view(1, 3, 1, 1)
    theirs_in = (rgb / 255 - torch.tensor(IMAGENET_MEAN_RGB).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD_RGB).view(1, 3, 1, 1)
    ours_out = model.features.conv1.conv(ours_in)  # the conv of the conv1 stage, before its ReLU
    theirs_out = F.conv2d(theirs_in, state["features.0.weight"], state["features.0.bias"], stride=2)
    # SAME (ours) pads (0, 1) for a 3x3/2 conv on an even size, so output (i, j) starts at input (2i, 2j) in both.
    assert torch.allclose(ours_out[..., :theirs_out.shape[2], :theirs_out.shape[3]], theirs_out, atol=1e-4)
    assert not model.features.conv1.conv.weight.requires_grad
    raw = load_torchvision_squeezenet(SqueezeDet(config), path, adapt_input=False)
    assert raw.loaded == report.loaded


def test_load_torchvision_squeezenet1_0_into_squeezedet_plus(tmp_path, caplog):
    path = tmp_path / "squeezenet1_0.pth"
    torch.save(torchvision_like_state_dict("1_0"), path)
    model = SqueezeDet(tiny_config("squeezedet_plus"))
    with caplog.at_level(logging.WARNING):
        report = load_torchvision_squeezenet(model, path)
    # torchvision's v1.0 squeezes to expand / 4; SqueezeDet+ uses ratio 0.75: only conv1 fits, as the reference
    # (which checks shapes per layer) would find.
    assert report.loaded == ("conv1",) and len(report.skipped) == 8 * 3
    assert "squeeze ratio" in caplog.text
    sr75 = tmp_path / "squeezenet1_0_sr075.pth"
    torch.save(torchvision_like_state_dict("1_0", squeeze_ratio=0.75), sr75)
    assert len(load_torchvision_squeezenet(model, sr75).loaded) == 1 + 8 * 3


def test_load_torchvision_errors_name_the_file(tmp_path):
    model = SqueezeDet(tiny_config())
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torchvision_squeezenet(model, missing)
    wrong = tmp_path / "v10.pth"
    torch.save(torchvision_like_state_dict("1_0"), wrong)
    with pytest.raises(DataError, match="squeezenet1_0 weights but the squeezedet backbone") as info:
        load_torchvision_squeezenet(model, wrong)
    assert "v10.pth" in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="garbage.pth"):
        load_torchvision_squeezenet(model, garbage)
    partial = torchvision_like_state_dict("1_1")
    del partial["features.7.expand1x1.bias"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(DataError, match="fire5.expand.expand1x1"):
        load_torchvision_squeezenet(model, tmp_path / "partial.pth")


# ---------------------------------------------------------------------------------------------- frozen, decay


def test_conv1_frozen_and_param_groups():
    config = tiny_config()
    model = SqueezeDet(config)
    conv1 = model.features.conv1.conv
    assert not conv1.weight.requires_grad and not conv1.bias.requires_grad
    decay, no_decay = model.param_groups(1e-4)
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]} | {id(p) for p in no_decay["params"]}
    assert id(conv1.weight) not in ids and id(conv1.bias) not in ids
    assert all(p.ndim == 4 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) == 8 * 3 + 2 * 3 + 1  # fire2-9, fire10-11 (3 convs each), ConvDet
    boxes, labels = tiny_targets(config)
    sum(model.train()(torch.randn(2, 3, 48, 64), boxes, labels).values()).backward()
    assert conv1.weight.grad is None
    trainable = SqueezeDet(replace(config, freeze_conv1=False))
    assert trainable.features.conv1.conv.weight.requires_grad


def test_config_round_trips_through_json():
    for config in (squeezedet_kitti(), squeezedet_plus_kitti(), tiny_config(nms="reference")):
        assert SqueezeDetConfig.from_dict(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(ValueError, match="unknown SqueezeDetConfig fields"):
        SqueezeDetConfig.from_dict({"anchors": 3})
    with pytest.raises(ValueError, match="nms must be one of"):
        SqueezeDetConfig(nms="fuzzy")
    with pytest.raises(ValueError, match="soft_nms_sigma"):
        SqueezeDetConfig(nms="soft", soft_nms_sigma=0.0)
    with pytest.raises(DataError, match="anchor_shapes"):
        SqueezeDetConfig(anchor_shapes=((10.0, 0.0),))


def test_from_scratch_init_gives_unit_scale_activations():
    torch.manual_seed(0)
    cfg = replace(squeezedet_kitti(), image_width=320, image_height=96)
    images = 40.0 * torch.randn(2, 3, 96, 320)  # 0-255 pixels minus the mean: std ~40, as real images
    stds = {}

    def record(model):
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: stds.__setitem__(n, float(o.std())))
                 for n, m in model.features.named_children() if n in ("conv1", "fire9", "fire11")]
        with torch.no_grad():
            model.head(images)
        for h in hooks:
            h.remove()
        return dict(stds)

    reference_init = record(SqueezeDet(cfg).eval())
    scratch_cfg = from_scratch(cfg, pixel_std=40.0)
    assert scratch_cfg.conv1_init_scale == pytest.approx(1 / 40) and scratch_cfg.fire_init_std is None
    assert scratch_cfg.freeze_conv1  # random, and frozen as the reference freezes conv1
    scratch = record(SqueezeDet(scratch_cfg).eval())
    assert reference_init["conv1"] > 20 and reference_init["fire11"] < 0.2  # far from unit scale both ways
    for name in ("conv1", "fire9", "fire11"):
        assert 0.2 < scratch[name] < 5, (name, scratch[name])
    with pytest.raises(ValueError, match="pixel_std"):
        from_scratch(cfg, 0.0)
    with pytest.raises(ValueError, match="conv1_init_scale"):
        replace(cfg, conv1_init_scale=0.0)


def test_pixel_std_of_a_folder(tmp_path):
    from squeeze.kitti import write_image
    from squeezedet.data import DetDataConfig, DetectionDataset, pixel_std

    image_dir = tmp_path / "training" / "image_2"
    image_dir.mkdir(parents=True)
    cfg = DetDataConfig(image_width=64, image_height=32, pixel_mean_bgr=(100.0, 100.0, 100.0))
    for i, value in enumerate((70, 130)):  # every pixel 30 from the mean: std (root mean square) exactly 30
        write_image(image_dir / f"{i:06d}.png", np.full((32, 64, 3), value, np.uint8))
    assert pixel_std(DetectionDataset(tmp_path, None, cfg)) == pytest.approx(30.0)


def test_batch_norm_trains_and_folds_into_plain_squeezedet():
    torch.manual_seed(0)
    cfg = replace(squeezedet_kitti(), image_width=320, image_height=96, batch_norm=True, bn_momentum=0.5)
    model = SqueezeDet(cfg)
    images = 40.0 * torch.randn(2, 3, 96, 320)
    boxes = [torch.tensor([[10.0, 20.0, 90.0, 70.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([0]), torch.zeros(0, dtype=torch.long)]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)  # bounded steps
    for _ in range(3):  # move the BN affine parameters and running statistics off their initial values
        loss = sum(model(images, boxes, labels).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert model.features.conv1.bn.weight.detach().std() > 0  # gamma moved off its all-ones init
    plain = fold_batch_norm(model)
    assert not plain.config.batch_norm and n_params(plain) == SQUEEZEDET_KITTI_PARAMS
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    with torch.no_grad():
        for a, b in zip(model.raw_outputs(images), plain.raw_outputs(images), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert model.features.conv1.bn.training is False  # the source model is not changed
