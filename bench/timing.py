"""Timing helpers shared by the bench scripts (not a bench itself: `make bench` runs bench_*.py only)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch


def interleaved_medians(runs: Mapping[str, Callable[[], Any]], rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds of each callable, timed in interleaved rounds under inference_mode after `warmup` calls each.

    Interleaving puts every figure and its baseline (a matmul) under the same load on a shared, noisy machine.
    """
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            for _ in range(warmup):
                fn()
        for _ in range(rounds):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def train_step_seconds(model: torch.nn.Module, inputs: Mapping[str, Any], bf16: bool, repeats: int = 3) -> float:
    """Median wall time of one training step (forward, backward, no update) on one batch of keyword inputs."""
    model.train()
    times = []
    for i in range(repeats + 1):  # the first call warms up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = sum(model(**inputs).values())
        loss.backward()
        if i:
            times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)
