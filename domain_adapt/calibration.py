"""Progressive domain calibration (SqueezeSegV2 sec. III-E).

A network trained on simulated scans normalises its layers with the simulator's statistics. After training,
re-estimate every BatchNorm's mean and variance on target (real) data, one layer at a time from the input up:
layer k's statistics are computed with layers 1..k-1 already calibrated, so each layer sees the inputs it will
see at test time. (AdaBN re-estimates all layers in one pass, where every layer's statistics come from upstream
layers still normalised with the source's.) No labels, no gradient steps, no weight changes: only the BN
buffers `running_mean`, `running_var` and `num_batches_tracked` move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

Batches = Callable[[], Iterable[Tensor]]  # a fresh iterator over target input batches, called once per layer


def batchnorm_layers_in_order(model: nn.Module, example: Tensor) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """The model's BatchNorm layers in the order a forward pass of `example` runs them (each once)."""
    names = {module: name for name, module in model.named_modules()}
    order: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod) if mod not in order else None)
             for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [(names[m], m) for m in order]


class _Recorded(Exception):
    """Raised by the recording hook to cut the forward pass short: nothing after the layer is needed."""


def _channel_moments(x: Tensor) -> tuple[int, Tensor, Tensor]:
    """(N, C, ...) -> (count per channel, sum, sum of squares) in float64 (float32 sums lose digits at 10^6 px)."""
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)
    return flat.shape[1], flat.sum(dim=1), (flat * flat).sum(dim=1)


def _mean_and_var(n: int, s1: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance (what BatchNorm keeps in running_var) from the moments."""
    mean = s1 / n
    var = ((s2 - n * mean * mean) / max(n - 1, 1)).clamp_min(0.0)
    return mean, var


def progressive_domain_calibration(model: nn.Module, batches: Batches, progress: bool = False) -> list[str]:
    """Re-estimate every BatchNorm's statistics on the target batches, layer by layer from the input up.

    `batches()` must yield the same target input tensors each time it is called (one pass per BN layer, cut
    short right after that layer). Each layer's new statistics are the exact mean and unbiased variance of its
    inputs over all target batches, computed with the layers before it already calibrated. Returns the
    calibrated layers' names in order; the model is left in eval mode.
    """
    first = next(iter(batches()), None)
    if first is None:
        raise ValueError("progressive domain calibration needs at least one target batch")
    layers = batchnorm_layers_in_order(model, first)
    model.eval()
    names = []
    iterator = layers
    if progress:
        from tqdm import tqdm

        iterator = tqdm(layers, desc="domain calibration", unit="layer")
    for name, bn in iterator:
        moments = [0, 0.0, 0.0]

        def record(_module: nn.Module, inputs: tuple[Tensor, ...], moments: list = moments) -> None:
            n, s1, s2 = _channel_moments(inputs[0])
            moments[0] += n
            moments[1] = moments[1] + s1
            moments[2] = moments[2] + s2
            raise _Recorded

        hook = bn.register_forward_pre_hook(record)
        try:
            with torch.no_grad():
                for batch in batches():
                    try:
                        model(batch)
                    except _Recorded:
                        pass
        finally:
            hook.remove()
        if moments[0] == 0:
            raise ValueError(f"BatchNorm layer {name} saw no target data")
        mean, var = _mean_and_var(*moments)
        bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
        bn.running_var.copy_(var.to(bn.running_var.dtype))
        bn.num_batches_tracked.zero_()
        names.append(name)
    return names
