"""Learned intensity rendering (SqueezeSegV2 sec. III-B; reference/tools.md (b), step 1).

Simulated scans have no (or a made-up) intensity, and real intensity is what the segmenter leans on. A small
network trained on real scans, self-supervised, predicts each return's intensity from its geometry alone: the
channels x, y, z, range, the LiDAR mask and the laser ring (real lasers differ in gain, issue 13). Applied to a
simulated scan it fills in intensities with the real sensor's character.

The same geometry can read as different intensities (material is not in the geometry), so the paper's loss is
a hybrid: the intensity range [0, 1] is cut into BINS bins; the network classifies the bin (cross-entropy) and
regresses the offset inside the true bin (L1 on a sigmoid output). The paper reads the most likely bin plus its
offset; we read the median bin plus its offset (`decode_intensity`). Inputs are range images with rows as laser
rings: the 64 x 2048 ring image of a whole revolution for training, any crop of it (the SqueezeSeg 64 x 512 front
view included) for applying: the network is fully convolutional and sees the ring through its own channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from squeeze.range_image import RangeImage

GEOMETRY_CHANNELS = ("x", "y", "z", "range", "mask", "ring", "normal_x", "normal_y", "normal_z", "cos_incidence")
# Fixed scales (not data statistics) so a model applies to any data set as it is: metres over a typical extent.
_SCALE = np.array([50.0, 50.0, 3.0, 50.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], np.float32)


def surface_normals(image: RangeImage) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) unit surface normals (facing the sensor) and (H, W) cosine of the incidence angle, from the
    cross product of the horizontal and vertical neighbour differences; 0 where a neighbour is missing.

    The surface's orientation to the beam is what the returned energy depends on besides material and range
    (Lambert: cos incidence), and it tells a road (normal up) from a wall or a car side."""
    xyz, m = image.xyz.astype(np.float64), image.mask
    h_ok = np.zeros_like(m)
    h_ok[:, 1:-1] = m[:, :-2] & m[:, 2:]
    v_ok = np.zeros_like(m)
    v_ok[1:-1] = m[:-2] & m[2:]
    dh = np.zeros_like(xyz)
    dh[:, 1:-1] = xyz[:, 2:] - xyz[:, :-2]
    dv = np.zeros_like(xyz)
    dv[1:-1] = xyz[2:] - xyz[:-2]
    n = np.cross(dh, dv)
    norm = np.linalg.norm(n, axis=2, keepdims=True)
    ok = m & h_ok & v_ok & (norm[..., 0] > 1e-9)
    n = np.where(ok[..., None], n / np.maximum(norm, 1e-12), 0.0)
    ray = np.where(m[..., None], xyz / np.maximum(np.linalg.norm(xyz, axis=2, keepdims=True), 1e-12), 0.0)
    cos = np.sum(n * ray, axis=2)
    n = np.where((cos > 0)[..., None], -n, n)  # face the sensor
    return n.astype(np.float32), np.abs(cos).astype(np.float32)


def geometry_channels(image: RangeImage) -> np.ndarray:
    """(10, H, W) float32 network input of a ring-ordered range image: x, y, z, range (scaled), mask, the ring as
    row / (H - 1) (0 at the top laser), the surface normal and the cosine of the incidence angle. Empty pixels are
    0 in every channel but the ring's."""
    h, w = image.shape
    ring = np.broadcast_to((np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None], (h, w))
    normals, cos = surface_normals(image)
    stacked = np.stack([image.xyz[..., 0], image.xyz[..., 1], image.xyz[..., 2], image.range,
                        image.mask.astype(np.float32), ring, normals[..., 0], normals[..., 1], normals[..., 2],
                        cos]).astype(np.float32)
    return stacked / _SCALE[:, None, None]


@dataclass(frozen=True)
class IntensityNetConfig:
    width: int = 16  # channels of the first stage; the second has twice as many (what bench_da_intensity measures)
    bins: int = 10  # intensity bins over [0, 1] (the paper's 10)
    # Laser rings with a learned bias each (0: none). Every laser of an HDL-64E has its own gain (issue 13: the
    # ground's intensity jumps 0.079 from one ring to the next), a jagged function of the ring that the smooth
    # ring channel cannot express; a per-ring bias on the first features and on the head's logits can. Needs
    # images whose rows are exactly these rings.
    rings: int = 0


class IntensityNet(nn.Module):
    """A small encoder-decoder over range images: two width-halving stages (rows kept: only 64 of them), a
    skip at each scale, and a head with `bins` bin logits and `bins` offsets per pixel."""

    def __init__(self, config: IntensityNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or IntensityNetConfig()
        c, k = self.config.width, self.config.bins
        n = len(GEOMETRY_CHANNELS)

        def block(i: int, o: int, stride: tuple[int, int] = (1, 1)) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=stride, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.stem = nn.Sequential(block(n, c), block(c, c))
        self.down1 = nn.Sequential(block(c, 2 * c, (1, 2)), block(2 * c, 2 * c))
        self.down2 = nn.Sequential(block(2 * c, 2 * c, (1, 2)), block(2 * c, 2 * c))
        self.up1 = block(4 * c, 2 * c)
        self.up0 = block(3 * c, c)
        self.head = nn.Conv2d(c, 2 * k, 1)
        r = self.config.rings
        self.ring_features = nn.Parameter(torch.zeros(c, r, 1)) if r else None
        self.ring_logits = nn.Parameter(torch.zeros(2 * k, r, 1)) if r else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, 10, H, W) -> (B, 2 * bins, H, W): bin logits, then offset logits. W must be divisible by 4; H must
        equal config.rings when that is set."""
        r = self.config.rings
        if r and x.shape[-2] != r:
            raise ValueError(f"this renderer has a bias per laser ring and needs {r} rows, got {x.shape[-2]}")
        s0 = self.stem(x)
        if r:
            s0 = s0 + self.ring_features
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        u1 = self.up1(torch.cat([F.interpolate(s2, size=s1.shape[-2:], mode="nearest"), s1], dim=1))
        u0 = self.up0(torch.cat([F.interpolate(u1, size=s0.shape[-2:], mode="nearest"), s0], dim=1))
        out = self.head(u0)
        return out + self.ring_logits if r else out


def hybrid_loss(output: Tensor, intensity: Tensor, mask: Tensor, bins: int, offset_weight: float = 1.0) -> Tensor:
    """Bin cross-entropy + offset L1 inside the true bin, averaged over the valid pixels (mask True).

    output (B, 2 * bins, H, W), intensity (B, H, W) in [0, 1], mask (B, H, W) bool."""
    target = intensity.clamp(0.0, 1.0) * bins
    true_bin = target.floor().long().clamp(max=bins - 1)
    offset = target - true_bin.float()  # in [0, 1); 1 for intensity exactly 1 in the last bin
    logits, offsets = output[:, :bins], output[:, bins:]
    ce = F.cross_entropy(logits, true_bin, reduction="none")
    predicted_offset = torch.sigmoid(offsets.gather(1, true_bin[:, None]))[:, 0]
    per_pixel = ce + offset_weight * (predicted_offset - offset).abs()
    valid = mask.float()
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1.0)


def decode_intensity(output: Tensor, bins: int, mode: str = "median") -> Tensor:
    """(B, 2 * bins, H, W) -> (B, H, W) intensity.

    "mode" (the paper's reading): the most likely bin plus its predicted offset. "median" (default): the bin where
    the predicted distribution's cumulative mass reaches one half, plus its predicted offset, i.e. the median of
    the distribution with each bin's mass at its offset. The median minimises the expected absolute error, which is
    what a rendered intensity is judged by when the geometry leaves the material open (the distribution is then
    wide or two-peaked and its mode is a coin toss). Placing the mass at the offset rather than spreading it evenly
    over the bin lowered the held-out error ratio on 6 of the 7 real folds of bench/bench_da_intensity.py, by
    0.003-0.03, and raised it by 0.03 on the seventh (docs/domain_adaptation.md): real intensities crowd toward
    one end of a bin (54% of real car pixels read exactly 0)."""
    if mode not in ("median", "mode"):
        raise ValueError(f"decode mode must be 'median' or 'mode', got {mode!r}")
    return decode_bins(torch.softmax(output[:, :bins].float(), dim=1), torch.sigmoid(output[:, bins:].float()), mode)


def decode_bins(probabilities: Tensor, offsets: Tensor, mode: str = "median") -> Tensor:
    """`decode_intensity` from (B, bins, H, W) bin probabilities and in-bin offsets in [0, 1] (what averaging
    several readings of one scan gives)."""
    bins = probabilities.shape[1]
    if mode == "mode":
        chosen = probabilities.argmax(dim=1, keepdim=True)
    else:
        chosen = (probabilities.cumsum(dim=1) < 0.5).sum(dim=1, keepdim=True).clamp(max=bins - 1)
    return ((chosen.float() + offsets.gather(1, chosen)) / bins)[:, 0]


def mirror_channels(x: Tensor) -> Tensor:
    """The geometry channels (..., 10, H, W) of the scan seen in a mirror: columns reversed, y and the normal's y
    negated. A mirrored scan is still a scan: training draws it as augmentation, rendering averages over both."""
    m = x.flip(-1).clone()
    m[..., 1, :, :] = -m[..., 1, :, :]  # y
    m[..., 7, :, :] = -m[..., 7, :, :]  # the normal's y
    return m


@torch.no_grad()
def render_intensity(net: IntensityNet, image: RangeImage, mode: str = "median", mirror: bool = True) -> np.ndarray:
    """(H, W) float32 predicted intensity of a ring-ordered range image (0 at empty pixels). The width is padded
    to a multiple of 4 (circularly, for a full revolution) and cropped back.

    mirror: read the scan and its mirror image (`mirror_channels`) and decode the average of the two predicted
    distributions. The renderer learned both (training mirrors at random), and the average is a steadier
    estimate: on the seven real held-out folds of bench/bench_da_intensity.py it lowered the error ratio by
    0.002-0.013 (docs/domain_adaptation.md)."""
    net.eval()
    x = torch.from_numpy(geometry_channels(image))[None]
    w = x.shape[-1]
    pad = (-w) % 4
    if pad:
        x = torch.cat([x, x[..., :pad]], dim=-1)
    bins = net.config.bins
    outputs = [net(x)] + ([net(mirror_channels(x)).flip(-1)] if mirror else [])
    probabilities = torch.stack([torch.softmax(o[:, :bins], dim=1) for o in outputs]).mean(dim=0)
    offsets = torch.stack([torch.sigmoid(o[:, bins:]) for o in outputs]).mean(dim=0)
    out = decode_bins(probabilities, offsets, mode)[0, :, :w].numpy()
    return np.where(image.mask, out, 0.0).astype(np.float32)


def held_out_error(net: IntensityNet, train: list[RangeImage], held: RangeImage) -> dict[str, float]:
    """The renderer's mean absolute error on a scan left out of its training, and that of predicting the training
    scans' mean intensity everywhere (issue 13's bar: the first <= 0.7x the second). For scale,
    `ring_neighbour_ratio`: the error of `ring_neighbour_error`'s oracle, which reads the held-out scan's own
    intensities, over the training mean's on the same pixels (about the floor of the renderer's ratio)."""
    mean = float(np.mean(np.concatenate([im.intensity[im.mask] for im in train])))
    neighbour_mae, scored = ring_neighbour_error(held)
    return {"held_out_mae": mean_abs_error(render_intensity(net, held), held),
            "mean_baseline_mae": float(np.abs(held.intensity[held.mask] - mean).mean()),
            "ring_neighbour_ratio": neighbour_mae / max(float(np.abs(held.intensity[scored] - mean).mean()), 1e-12)}


def ring_neighbour_error(image: RangeImage) -> tuple[float, np.ndarray]:
    """How much a return's intensity differs from the surface around it: the mean absolute error of predicting each
    valid pixel by the real intensity of its left and right neighbours on the same ring (their mean, or the one that
    is valid; columns wrap around a full revolution), and the (H, W) mask of the pixels it predicts (valid, with at
    least one valid neighbour).

    An oracle, not a renderer: it reads the scan's own intensities. Speckle and edges, which it cannot predict, no
    renderer that sees only geometry can either, so its ratio to the training mean's error is about the floor of
    the held-out ratio (kitti_mini: 0.59-0.65; four scans of one drive: 0.50-0.54, docs/domain_adaptation.md)."""
    m, v = image.mask, np.where(image.mask, image.intensity, 0.0).astype(np.float64)
    ml, mr = np.roll(m, 1, axis=1), np.roll(m, -1, axis=1)
    vl, vr = np.roll(v, 1, axis=1), np.roll(v, -1, axis=1)
    count = ml.astype(np.int64) + mr
    scored = m & (count > 0)
    predicted = (vl * ml + vr * mr) / np.maximum(count, 1)
    return float(np.abs(predicted - v)[scored].mean()) if scored.any() else 0.0, scored


def checkpoint_dict(net: IntensityNet, trained_on: str, steps: int, metrics: dict) -> dict:
    """What `squeeze da intensity train` saves (weights_only-loadable: tensors and plain types)."""
    return {"kind": "intensity_renderer", "config": asdict(net.config), "state_dict": net.state_dict(),
            "channels": list(GEOMETRY_CHANNELS), "trained_on": trained_on, "steps": int(steps), "metrics": metrics}


def load_renderer(path) -> IntensityNet:
    from squeeze.errors import DataError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix, named
        raise DataError(path, f"not an intensity renderer checkpoint: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "intensity_renderer":
        raise DataError(path, "not an intensity renderer checkpoint (kind != 'intensity_renderer')")
    net = IntensityNet(IntensityNetConfig(**ckpt["config"]))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval()


def ring_images(points_and_rings, width: int = 2048) -> list[RangeImage]:
    """Whole-revolution ring images (64 x width, column 0 behind the car) of (points, rings) pairs.

    The rings come from `readers.read_scan` (KITTI's point order, or the rows of a range image), so points read
    back from a `.npy` range image, stored row by row rather than in KITTI's sweep order, project too."""
    from squeeze.range_image import full_360, project_scan

    config = full_360() if width == 2048 else None
    out = []
    for points, rings in points_and_rings:
        if config is None:
            from dataclasses import replace

            config = replace(full_360(), width=width)
        image, _ = project_scan(points, config, rings=rings)
        out.append(image)
    return out


def mean_abs_error(predicted: np.ndarray, image: RangeImage) -> float:
    """Mean absolute intensity error over the image's valid pixels."""
    return float(np.abs(predicted[image.mask] - image.intensity[image.mask]).mean())


def crop_start_range(mask: np.ndarray, crop_width: int) -> tuple[int, int]:
    """(lowest, highest) first column of the `crop_width`-wide crops of an (H, W) image that lie within the columns
    from the first to the last holding a return (the whole width for a full scan and for an image with no return;
    when the returns span fewer columns than a crop, the crops that cover them all)."""
    w = mask.shape[1]
    cols = np.flatnonzero(mask.any(axis=0))
    first, last = (int(cols[0]), int(cols[-1])) if len(cols) else (0, w - 1)
    if last - first + 1 < crop_width:  # a patch of returns narrower than a crop: the crops that cover it
        lo = max(0, last + 1 - crop_width)
        return lo, max(lo, min(first, w - crop_width))
    return first, last + 1 - crop_width


def train_renderer(images: list[RangeImage], steps: int = 400, batch: int = 8, crop_width: int = 128,
                   lr: float = 2e-3, seed: int = 0, config: IntensityNetConfig | None = None,
                   progress: bool = False) -> tuple[IntensityNet, list[float]]:
    """Train a renderer on real ring images (self-supervised: geometry in, the image's own intensity out).

    Each step takes `batch` random crops `crop_width` wide (mirrored at random: columns reversed and y negated,
    a scan seen in a mirror is still a scan), each within the columns of its image that hold returns: a front-view
    scan (the SqueezeSeg `.npy` layout, 90 of 360 degrees) fills a quarter of its ring image, and crops drawn over
    the whole width would be three quarters empty. Returns the network (eval mode) and the loss per step."""
    if not images:
        raise ValueError("intensity rendering needs at least one real scan to learn from")
    if crop_width % 4:
        raise ValueError(f"crop_width must be a multiple of 4, got {crop_width}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    inputs = [torch.from_numpy(geometry_channels(im)) for im in images]
    targets = [torch.from_numpy(im.intensity.astype(np.float32)) for im in images]
    masks = [torch.from_numpy(im.mask) for im in images]
    first_cols = [crop_start_range(im.mask, crop_width) for im in images]
    net = IntensityNet(config)
    bins = net.config.bins
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    iterator = range(steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="intensity renderer", unit="step")
    net.train()
    for _ in iterator:
        xs, ys, ms = [], [], []
        for _b in range(batch):
            i = int(rng.integers(len(images)))
            lo, hi = first_cols[i]
            c0 = int(rng.integers(lo, hi + 1))
            cols = slice(c0, c0 + crop_width)
            x, y, m = inputs[i][..., cols], targets[i][:, cols], masks[i][:, cols]
            if rng.random() < 0.5:
                x = mirror_channels(x)
                y, m = y.flip(-1), m.flip(-1)
            xs.append(x)
            ys.append(y)
            ms.append(m)
        loss = hybrid_loss(net(torch.stack(xs)), torch.stack(ys), torch.stack(ms), bins)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return net.eval(), losses
