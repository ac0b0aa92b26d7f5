"""The shared trainer: step-based training with exact resume, data-parallel processes, checkpoints and logging.

Used by every model package (SqueezeSeg now, SqueezeDet later); it knows only the model contract of STYLE.md:

* **Model.** In train mode ``model(**inputs)`` returns a dict of named scalar losses, each already a *mean over
  the batch* (so that data-parallel gradient averaging equals one process with the whole batch). The trainer sums
  them for backward and logs each. In eval mode the model returns predictions; the trainer never looks at them:
  evaluation is the user's ``evaluate(model) -> {metric: float}`` callable. Optional hooks on the model:
  ``no_weight_decay() -> set[str]`` (parameter names exempt from decay) and ``param_groups(weight_decay) ->
  list[dict]`` (full control over optimiser groups; preferred when present). Parameters with
  ``requires_grad=False`` (SqueezeDet's frozen conv1) are not given to the optimiser.
* **Batches.** Dicts of tensors from a ``torch.utils.data.DataLoader`` (the trainer builds it from the dataset,
  ``collate_fn`` and ``TrainConfig``) are moved to the device, then by default *every key* is passed as a keyword
  argument: ``model(**batch)``. Pass ``batch_to_inputs(batch) -> dict`` to choose or rename keys.
* **Datasets** are map-style (``__len__``, ``__getitem__``). For augmentation that is reproducible and survives
  resume, a dataset must not draw from global random state. It takes a ``seed`` in its constructor, defines
  ``set_epoch(epoch)`` (the trainer calls it before every epoch, before any worker process starts) and draws all
  randomness of sample ``index`` from ``squeeze.rng.sample_rng(self.seed, self.epoch, index)``::

      class RangeImages(torch.utils.data.Dataset):
          def __init__(self, files, seed=0, augment=True):
              self.files, self.seed, self.augment, self.epoch = files, seed, augment, 0

          def set_epoch(self, epoch: int) -> None:
              self.epoch = epoch

          def __getitem__(self, index):
              image = load(self.files[index])
              if self.augment and sample_rng(self.seed, self.epoch, index).random() < 0.5:
                  image = flip(image)   # same flip for (seed, epoch, index) in any process, worker or resumed run
              return {"image": image, ...}

  The sample order itself comes from `StepSampler`: a permutation derived from (seed, epoch) alone.
* **Exact resume.** ``last.pt`` holds model, optimiser, step, epoch, the number of batches already consumed in that
  epoch, every RNG state (torch CPU/CUDA, numpy, python ``random``; one set per process) and the running averages of
  the current logging window. Resuming skips the consumed batches of the epoch without loading them, so N steps +
  resume for N more equals 2N steps bitwise on CPU (same world size). Evaluation runs under a saved-and-restored
  RNG state, so evaluating (or not) never changes training.
* **Data parallel.** Launch with torchrun; the trainer reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, initialises the
  process group (gloo on CPU, nccl on CUDA), wraps the model in DistributedDataParallel and gives each process
  ``batch_size / world_size`` samples of every global batch::

      torchrun --standalone --nproc_per_node 2 my_train.py ...   # my_train.py calls squeeze.train.train(...)
      torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d --rdzv_endpoint HOST:29500 my_train.py ...  # each node

  ``TrainConfig.batch_size`` is the *global* batch: the same config trains the same way with 1 or N processes
  (up to float rounding; BatchNorm statistics remain per process). Only rank 0 writes files and shows progress;
  every rank reads ``last.pt`` to resume, so across nodes ``out_dir`` must be on shared storage. Pass the same
  arguments on every rank (evaluate runs on rank 0 only).
* **Outputs** in ``out_dir``: ``config.json`` (resolved train config, model config, class names, git commit),
  ``metrics.csv`` (one row per logged or evaluated step; rows after the resumed step are dropped on resume, so no
  step appears twice), ``last.pt`` (every ``checkpoint_every`` steps and at the end), ``best.pt`` (best
  ``best_metric`` so far), ``tb/`` (TensorBoard events, when the optional ``tensorboard`` package is installed:
  ``pip install 'squeeze-suite[tb]'``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from squeeze.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    require_train_state,
    save_checkpoint,
    to_plain,
)
from squeeze.errors import DataError

logger = logging.getLogger(__name__)

Batch = dict[str, Any]
Evaluate = Callable[[nn.Module], Mapping[str, float]]

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
CONFIG = "config.json"
# Columns the trainer writes itself; a model loss may not use these names. Eval metrics are prefixed "eval/".
RESERVED_COLUMNS = ("step", "epoch", "lr", "loss", "grad_norm")
# Settings that may change on resume without breaking the continuation (everything else is warned about).
RESUME_FREE_FIELDS = ("max_steps", "time_limit_s", "eval_every", "checkpoint_every", "log_every", "num_workers",
                      "device", "progress", "tensorboard")


def _time_is_up(world: Any, cfg: TrainConfig, started: float, device: torch.device) -> bool:
    """Whether this call's training time passed cfg.time_limit_s; every rank gets rank 0's answer."""
    if cfg.time_limit_s is None:
        return False
    return _rank0_seconds(world, started, device) >= cfg.time_limit_s


def _rank0_seconds(world: Any, started: float, device: torch.device) -> float:
    """Seconds since `started` on rank 0's clock, the same number on every rank."""
    seconds = torch.tensor([time.perf_counter() - started], dtype=torch.float64, device=device)
    if world.world_size > 1:
        dist.broadcast(seconds, src=0)
    return float(seconds.item())


# ------------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained. Defaults follow SqueezeSeg (SqueezeDet differs in batch)."""

    optimizer: Literal["sgd", "adamw"] = "sgd"  # SqueezeDet/SqueezeSeg train with SGD + momentum
    lr: float = 0.01  # base learning rate (SqueezeSeg and SqueezeDet: 0.01; SqueezeSegV2: 0.05)
    momentum: float = 0.9  # SGD momentum; unused by AdamW
    adam_betas: tuple[float, float] = (0.9, 0.999)  # AdamW (beta1, beta2); unused by SGD
    weight_decay: float = 1e-4  # on kernels only (ndim >= 2); biases, norm weights, no_weight_decay() get none
    schedule: Literal["step", "cosine", "constant"] = "step"  # lr shape over steps, after warm-up
    lr_gamma: float = 0.5  # step schedule: lr *= lr_gamma every lr_step_size steps (SqueezeSeg halves)
    lr_step_size: int = 10_000  # step schedule: steps between two multiplications (SqueezeSeg: 10k, staircase)
    warmup_steps: int = 0  # linear warm-up over the first steps: update s uses lr * (s + 1) / warmup_steps
    max_steps: int = 25_000  # optimiser updates in the whole run (SqueezeSeg: 25k)
    time_limit_s: float | None = None  # stop (evaluate, checkpoint) after the step that passes this many seconds
    # "steps": the schedule runs over max_steps updates. "time": it runs over time_limit_s seconds of training
    # (summed over resumes), so a run on a busy machine still completes its decay inside its time budget; the lr
    # then depends on the clock, so such a run is not bitwise reproducible.
    schedule_clock: Literal["steps", "time"] = "steps"
    batch_size: int = 32  # GLOBAL batch per update; each of the world_size processes loads batch_size / world_size
    grad_clip_norm: float | None = 1.0  # max gradient L2 norm; None disables clipping
    grad_clip_mode: Literal["global", "per_parameter"] = "per_parameter"  # SqueezeSeg/Det clip each tensor to 1.0
    eval_every: int = 1000  # run `evaluate` every so many steps (and after the last step)
    checkpoint_every: int = 500  # write last.pt every so many steps (and after the last step)
    log_every: int = 10  # write a metrics row (losses averaged since the last row) every so many steps and at the end
    seed: int = 0  # seeds sample order, per-process RNGs, and is what datasets should pass to sample_rng
    shuffle: bool = True  # reshuffle the samples each epoch (permutation derived from (seed, epoch))
    num_workers: int = 0  # DataLoader worker processes per training process; 0 loads in the main process
    device: Literal["cpu", "cuda", "auto"] = "auto"  # "auto" takes CUDA when available
    bf16: bool = False  # mixed precision: forward under bfloat16 autocast (about 2x faster on AVX512-BF16 CPUs)
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU; CPU runs are exact anyway)
    tensorboard: bool = True  # also write out_dir/tb when the tensorboard package is installed (extra "tb")
    progress: bool = True  # tqdm progress bar (rank 0 only)

    def __post_init__(self) -> None:
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("step", "cosine", "constant"),
                   "grad_clip_mode": ("global", "per_parameter"), "device": ("cpu", "cuda", "auto")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected one of {allowed}")
        for name in ("max_steps", "batch_size", "lr_step_size", "eval_every", "checkpoint_every", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected an integer >= 1")
        for name in ("warmup_steps", "num_workers", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} = {getattr(self, name)!r}; expected an integer >= 0")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr = {self.lr!r}; expected > 0")
        if self.weight_decay < 0 or self.momentum < 0 or self.lr_gamma <= 0:
            raise ValueError("TrainConfig.weight_decay and momentum must be >= 0 and lr_gamma > 0")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"TrainConfig.time_limit_s = {self.time_limit_s!r}; expected > 0 or None")
        if self.schedule_clock not in ("steps", "time"):
            raise ValueError(f"TrainConfig.schedule_clock = {self.schedule_clock!r}; expected 'steps' or 'time'")
        if self.schedule_clock == "time" and self.time_limit_s is None:
            raise ValueError("TrainConfig.schedule_clock = 'time' needs a time_limit_s")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(f"TrainConfig.grad_clip_norm = {self.grad_clip_norm!r}; expected > 0 or None")


@dataclass(frozen=True)
class TrainResult:
    """What a finished `train` call reports (files are in `out_dir`; metrics are rank 0's view)."""

    step: int  # optimiser updates done, including those before a resume
    epoch: int  # epoch of the next batch (epochs completed if it ended on an epoch boundary)
    last_checkpoint: Path  # out_dir/last.pt
    best_checkpoint: Path | None  # out_dir/best.pt, None without evaluate + best_metric
    best_value: float | None  # best value of best_metric so far (None if never evaluated)
    losses: dict[str, float]  # the last logged losses (window averages, total under "loss")
    eval_metrics: dict[str, float]  # the last evaluation ({} if none ran in this call, or rank != 0)
    metrics_csv: Path  # out_dir/metrics.csv


# ---------------------------------------------------------------------------------------- seeds and schedules
def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from non-negative integer keys (numpy SeedSequence), e.g. (seed, epoch)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def lr_factor(cfg: TrainConfig, step: int, position: float | None = None) -> float:
    """Multiplier of the base lr for the update number `step` (0-based: the update that makes step + 1).

    step: ``lr_gamma ** (step // lr_step_size)`` (TF staircase exponential_decay, as SqueezeSeg/SqueezeDet);
    cosine: half a cosine from 1 to 0 between the end of warm-up and max_steps; constant: 1. Warm-up multiplies
    by (step + 1) / warmup_steps during the first warmup_steps updates.
    position: where the schedule (not the warm-up) stands, in steps, when it is not `step` (the time clock).
    """
    at = step if position is None else position
    if cfg.schedule == "step":
        factor = cfg.lr_gamma ** (int(at) // cfg.lr_step_size)
    elif cfg.schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = min(max((at - cfg.warmup_steps) / span, 0.0), 1.0)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    if step < cfg.warmup_steps:
        factor *= (step + 1) / cfg.warmup_steps
    return factor


# ------------------------------------------------------------------------------------------------- sampling
class StepSampler(Sampler[int]):
    """Sample indices for one process, such that N processes together see exactly what one process would.

    Each epoch draws one permutation of the dataset from (seed, epoch) (identity when not shuffling), keeps the
    first ``len // batch_size`` whole global batches (the remainder is dropped, a different one each epoch) and
    gives process `rank` the contiguous slice ``[rank * b, (rank + 1) * b)`` of every global batch, with
    ``b = batch_size / world_size``. So the union of the ranks' step-s batches, in rank order, *is* the step-s
    batch of a single process with batch_size. ``set_epoch(epoch, start_batch)`` skips the global batches already
    consumed in that epoch (resume) without loading them.
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.per_rank = batch_size // world_size
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches in one epoch."""
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and skip its first `start_batch` global batches."""
        self.epoch = epoch
        self.start_batch = min(max(start_batch, 0), self.batches_per_epoch)

    def global_batches(self) -> torch.Tensor:
        """(batches_per_epoch, batch_size) int64: the sample indices of every global batch of the current epoch."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        used = self.batches_per_epoch * self.batch_size
        return order[:used].view(self.batches_per_epoch, self.batch_size)

    def __iter__(self) -> Iterator[int]:
        mine = self.global_batches()[self.start_batch:, self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        return iter(mine.reshape(-1).tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.per_rank


# --------------------------------------------------------------------------------------- optimiser pieces
def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser parameter groups with weight decay on kernels only.

    If the model defines ``param_groups(weight_decay)``, its groups are used as they are. Otherwise trainable
    parameters with ndim >= 2 (conv/linear kernels) get `weight_decay`; biases, norm scales/shifts (all 1-D) and
    any parameter named in the model's optional ``no_weight_decay()`` get 0. Frozen parameters are left out.
    Each default group carries its ``param_names`` so that the split can be checked.
    """
    if callable(getattr(model, "param_groups", None)):
        groups = [dict(group) for group in model.param_groups(weight_decay)]
        for i, group in enumerate(groups):
            if "params" not in group:
                raise ValueError(f"{type(model).__name__}.param_groups(): group {i} has no 'params'")
            group["params"] = [p for p in group["params"] if p.requires_grad]
        return [group for group in groups if group["params"]]
    exempt = set(model.no_weight_decay()) if callable(getattr(model, "no_weight_decay", None)) else set()
    names = {name for name, _ in model.named_parameters()}
    unknown = exempt - names
    if unknown:
        raise ValueError(f"{type(model).__name__}.no_weight_decay() names unknown parameters: {sorted(unknown)}")
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and name not in exempt else no_decay)[name] = param
    groups = [
        {"params": list(decay.values()), "param_names": list(decay), "weight_decay": weight_decay},
        {"params": list(no_decay.values()), "param_names": list(no_decay), "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW over `build_param_groups`; each group remembers its ``base_lr`` for the schedule."""
    groups = build_param_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
    for group in optimizer.param_groups:
        group["base_lr"] = group["lr"]
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, cfg: TrainConfig, step: int, position: float | None = None) -> float:
    """Set every group's lr for update number `step` and return the lr of the first group."""
    factor = lr_factor(cfg, step, position)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return float(optimizer.param_groups[0]["lr"])


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float | None,
                   mode: Literal["global", "per_parameter"]) -> float:
    """Clip gradients in place and return the global L2 norm of all gradients *before* clipping.

    global: scale all gradients by ``min(1, max_norm / total_norm)`` (torch.nn.utils.clip_grad_norm_).
    per_parameter: scale each tensor's gradient by ``min(1, max_norm / its_norm)``, as TF's clip_by_norm on every
    variable in SqueezeDet/SqueezeSeg. None: no clipping (the norm is still returned). torch's 1e-6 epsilon applies.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None or mode == "global":
        if max_norm is None:
            return float(torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])))
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    norms = torch.stack([torch.nn.utils.clip_grad_norm_([p], max_norm) for p in params])
    return float(torch.linalg.vector_norm(norms))


# ----------------------------------------------------------------------------------------------- RNG states
def _capture_rng(cuda: bool) -> dict[str, Any]:
    """This process's RNG states as weights-only-loadable data."""
    # The legacy global numpy state is captured on purpose: user code (losses, old datasets) may still draw from it.
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),  # uint8 tensor
        "cuda": list(torch.cuda.get_rng_state_all()) if cuda else [],
        "numpy": {"bit_generator": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }


def _restore_rng(state: Mapping[str, Any], cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    if cuda and state["cuda"] and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    nps = state["numpy"]
    legacy = (nps["bit_generator"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
              nps["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002
    pys = state["python"]
    random.setstate((pys["version"], tuple(int(v) for v in pys["state"].tolist()), pys["gauss_next"]))


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds the legacy global state that user code may draw from)
    random.seed(seed)


@contextmanager
def _isolated_rng(cuda: bool) -> Iterator[None]:
    """Run a block (evaluation) without it changing any RNG state seen by training."""
    saved = _capture_rng(cuda)
    try:
        yield
    finally:
        _restore_rng(saved, cuda)


# ---------------------------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class _World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call initialised the process group and tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_world(use_cuda: bool) -> _World:
    """Join the process group described by torchrun's environment variables (WORLD_SIZE > 1), else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return _World()
    if "RANK" not in os.environ:
        raise RuntimeError("WORLD_SIZE > 1 but RANK is not set; launch with torchrun (it sets RANK, LOCAL_RANK, "
                           "MASTER_ADDR, MASTER_PORT)")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(minutes=30))
        owns = True
    elif dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"RANK={rank} WORLD_SIZE={world_size}")
    return _World(rank=rank, world_size=world_size, local_rank=local_rank, owns_group=owns)


def _resolve_device(cfg: TrainConfig, world: _World | None = None) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("TrainConfig.device = 'cuda' but torch sees no CUDA device")
    return torch.device("cuda", world.local_rank if world else torch.cuda.current_device())


def _gather(world: _World, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a collective: all ranks must call it)."""
    if world.world_size == 1:
        return [obj]
    out: list[Any] = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def _mean_over_ranks(world: _World, values: dict[str, float], device: torch.device) -> dict[str, float]:
    if world.world_size == 1 or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    means = {k: float(v) / world.world_size for k, v in zip(keys, packed.tolist(), strict=True)}
    return {k: means[k] for k in values}  # the caller's column order


# ---------------------------------------------------------------------------------------------------- logging
class MetricsLog:
    """``metrics.csv``: one row per logged step, columns added as they appear; every write replaces the file
    atomically (squeeze.atomic), so a kill never leaves a torn row behind (one fsynced rewrite per logged row: about
    10 ms here, every ``log_every`` steps).

    On resume from step S, rows with step > S (written after that checkpoint, before a crash) are dropped, so the
    file never holds a step twice and matches an uninterrupted run. Rows that are not whole (a file written by an
    older version that appended, cut by a kill) are dropped too: a last line without its newline, a row with fewer
    or more fields than the header, or a step that is not an integer.
    """

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            self.columns, rows = read_metrics_csv(path)
            self.rows = [row for row in rows if int(row["step"]) <= resume_step]
        self._rewrite()

    def _rewrite(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        if self.columns:
            writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())

    def write(self, row: Mapping[str, Any]) -> None:
        """Add one row (values formatted with repr, so floats round-trip exactly) and replace the file."""
        text = {key: ("" if value is None else repr(value) if isinstance(value, float) else str(value))
                for key, value in row.items()}
        self.rows.append(text)
        self.columns += [key for key in text if key not in self.columns]
        self._rewrite()


def read_metrics_csv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, whole rows) of a metrics.csv; torn rows are left out (see MetricsLog)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the last line lost its end: a write cut short
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    rows = [row for row in reader
            if None not in row and None not in row.values() and _int_or_none(row.get("step")) is not None]
    return columns, rows


@dataclasses.dataclass(frozen=True)
class WorkerDataError:
    """A DataError raised in a DataLoader worker process, sent to the main process as a batch.

    The DataLoader re-raises a worker's exception as ``type(msg)`` with the worker's whole traceback as the message,
    and falls back to a RuntimeError when that constructor does not fit (DataError takes a source and a fault):
    the CLI then showed a traceback instead of the one-line error naming the file. Carried as data, the error is
    raised in the main process as the same type with the same source and fault.
    """

    kind: type
    source: str | None
    fault: str

    def error(self) -> DataError:
        try:
            return self.kind(self.source, self.fault)
        except TypeError:  # a subclass with another constructor: the base class says the same
            return DataError(self.source, self.fault)


class _CarryDataErrors(Dataset):
    """The dataset, with a DataError of a sample returned as a WorkerDataError (see there) instead of raised."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except DataError as e:
            return WorkerDataError(type(e), e.source, e.fault)


class _CollateCarrying:
    """The collate function, passing a sample's WorkerDataError through as the batch (a class: workers pickle it)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Batch] | None):
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> Any:
        for item in items:
            if isinstance(item, WorkerDataError):
                return item
        if self.collate_fn is None:
            from torch.utils.data import default_collate

            return default_collate(items)
        return self.collate_fn(items)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _tensorboard(out_dir: Path, purge_step: int | None, enabled: bool) -> Any:
    """A SummaryWriter on out_dir/tb, or None when disabled or tensorboard is not installed."""
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed (pip install 'squeeze-suite[tb]'); metrics go to %s only", METRICS)
        return None
    except Exception as e:  # a broken install (protobuf mismatch...) must not stop training
        logger.warning("tensorboard import failed (%s); metrics go to %s only", e, METRICS)
        return None
    return SummaryWriter(log_dir=str(out_dir / "tb"), purge_step=purge_step)


def git_commit(path: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding `path` (default: this package), or None."""
    cwd = path or Path(__file__).resolve().parent
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return str(value)


# ------------------------------------------------------------------------------------------------ the loop
def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {key: _to_device(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(value, device) for value in obj)
    return obj


def _check_losses(losses: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError(f"{type(model).__name__} in train mode must return a non-empty dict of named scalar losses, "
                        f"got {type(losses).__name__}")
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise TypeError(f"{type(model).__name__} loss {name!r} must be a scalar tensor, got "
                            f"{type(value).__name__}{tuple(getattr(value, 'shape', ()))}")
        if name in RESERVED_COLUMNS and not (name == "loss" and len(losses) == 1):
            raise ValueError(f"loss name {name!r} collides with a trainer column {RESERVED_COLUMNS}; rename it")
    return dict(losses)


def _update(ddp_model: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, trainable: list[nn.Parameter],
            inputs: Mapping[str, Any], cfg: TrainConfig, step: int) -> dict[str, float]:
    """One optimiser update (the lr is already set). Returns the values to log: total loss under "loss", the
    pre-clipping gradient norm under "grad_norm", then each named loss."""
    device_type = next(model.parameters()).device.type
    # bf16 autocast: convolutions and matmuls in bfloat16, reductions and losses in float32 (torch's autocast policy).
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.bf16):
        losses = _check_losses(ddp_model(**inputs), model)
    total = sum(v.float() for v in losses.values())
    values = {"loss": float(total.detach())}
    if not math.isfinite(values["loss"]):
        detail = {k: float(v.detach()) for k, v in losses.items()}
        raise FloatingPointError(f"non-finite loss at step {step + 1}: {detail}; this update was not applied")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    values["grad_norm"] = clip_gradients(trainable, cfg.grad_clip_norm, cfg.grad_clip_mode)
    optimizer.step()
    if not (len(losses) == 1 and "loss" in losses):
        values.update({name: float(value.detach()) for name, value in losses.items()})
    return values


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    norm_saved = json.loads(json.dumps(saved, default=_json_default))
    norm_current = json.loads(json.dumps(current, default=_json_default))
    return [f"{key}: {norm_saved.get(key)!r} -> {norm_current.get(key)!r}" for key in norm_current
            if key not in RESUME_FREE_FIELDS and norm_saved.get(key) != norm_current.get(key)]


def _resume(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, world: _World,
            cuda: bool) -> dict[str, Any]:
    """Load model, optimiser and this rank's RNG states from checkpoint `path`; return its train_state."""
    payload = load_checkpoint(path)  # on CPU: RNG states must stay there; load_state_dict copies to the device
    state = require_train_state(payload, path, ("step", "epoch", "batch_in_epoch", "optimizer", "rng"))
    try:
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(path, f"does not fit this model/optimiser: {e}") from e
    changed = _config_differences(state.get("train_config", {}), dataclasses.asdict(cfg))
    if changed and world.is_main:
        logger.warning("resuming %s with changed settings (no longer an exact continuation): %s", path,
                       "; ".join(changed))
    if len(state["rng"]) == world.world_size:
        _restore_rng(state["rng"][world.rank], cuda)
    else:
        if world.is_main:
            logger.warning("%s was written by %d process(es), this run has %d: RNG streams are reseeded and the "
                           "continuation is not exact", path, len(state["rng"]), world.world_size)
        _seed_all(derive_seed(cfg.seed, int(state["step"]), world.rank, 1))
    if world.is_main:
        logger.info("resumed from %s at step %d (epoch %d, batch %d of the epoch)", path, state["step"],
                    state["epoch"], state["batch_in_epoch"])
    return state


def train(
    model: nn.Module,
    train_dataset: Dataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    model_config: Mapping[str, Any] | Any,
    class_names: Sequence[str],
    collate_fn: Callable[[list[Any]], Batch] | None = None,
    batch_to_inputs: Callable[[Batch], Mapping[str, Any]] | None = None,
    evaluate: Evaluate | None = None,
    best_metric: str | None = None,
    best_mode: Literal["max", "min"] = "max",
    resume: bool | str | Path = False,
) -> TrainResult:
    """Train `model` on `train_dataset` for ``cfg.max_steps`` optimiser updates; see the module docstring.

    model: follows the model contract (train mode: dict of mean losses). It is moved to the device and trained in
        place; after the call it holds the final weights (unwrapped, in train mode).
    train_dataset: map-style dataset; optional ``set_epoch(epoch)`` is called before each epoch.
    cfg: the training settings; ``cfg.batch_size`` is the global batch over all processes.
    out_dir: run folder (created); a fresh run refuses a folder that already holds last.pt.
    model_config: the model's config dataclass (or dict), embedded in every checkpoint and in config.json.
    class_names: the model's classes in index order, embedded in every checkpoint.
    collate_fn: the DataLoader's collate function (default: torch's, which stacks dicts of tensors).
    batch_to_inputs: maps a device batch to the model's keyword arguments; default: every key of the batch.
    evaluate: ``evaluate(model) -> {name: float}``, called on rank 0 every ``cfg.eval_every`` steps and at the end,
        with the unwrapped model in eval mode under torch.no_grad() and isolated RNG state.
    best_metric / best_mode: which evaluate() key decides best.pt, and whether higher ("max") or lower is better.
    resume: False starts fresh; True resumes from out_dir/last.pt; a path resumes from that checkpoint file.
    """
    out_dir = Path(out_dir)
    if best_metric is not None and evaluate is None:
        raise ValueError("best_metric is given but there is no evaluate callable to compute it")
    if best_mode not in ("max", "min"):
        raise ValueError(f"best_mode = {best_mode!r}; expected 'max' or 'min'")
    try:
        num_samples = len(train_dataset)  # type: ignore[arg-type]
    except TypeError as e:
        raise TypeError("train_dataset must be a map-style dataset (with __len__ and __getitem__)") from e

    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    world = _init_world(use_cuda)
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.deterministic:
            if use_cuda:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        return _run(model, train_dataset, num_samples, cfg, out_dir, world, _resolve_device(cfg, world),
                    model_config=model_config, class_names=class_names, collate_fn=collate_fn,
                    batch_to_inputs=batch_to_inputs, evaluate=evaluate, best_metric=best_metric,
                    best_mode=best_mode, resume=resume)
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
        if world.owns_group:
            dist.destroy_process_group()


def _run(model: nn.Module, dataset: Dataset, num_samples: int, cfg: TrainConfig, out_dir: Path, world: _World,
         device: torch.device, *, model_config: Any, class_names: Sequence[str],
         collate_fn: Callable[[list[Any]], Batch] | None, batch_to_inputs: Callable[[Batch], Mapping[str, Any]] | None,
         evaluate: Evaluate | None, best_metric: str | None, best_mode: str, resume: bool | str | Path) -> TrainResult:
    cuda = device.type == "cuda"
    sampler = StepSampler(num_samples, cfg.batch_size, seed=cfg.seed, shuffle=cfg.shuffle, rank=world.rank,
                          world_size=world.world_size)
    if sampler.batches_per_epoch == 0:
        raise ValueError(f"train_dataset has {num_samples} samples, fewer than one global batch of {cfg.batch_size}")
    model_config = to_plain(model_config, "model_config")
    class_names = [str(name) for name in class_names]
    train_config = dataclasses.asdict(cfg)
    last_path, best_path = out_dir / LAST, out_dir / BEST

    model.to(device)
    model.train()
    optimizer = build_optimizer(model, cfg)

    # ---- start or resume
    if resume:
        state = _resume(last_path if resume is True else Path(resume), model, optimizer, cfg, world, cuda)
    else:
        if last_path.exists():
            raise FileExistsError(f"{last_path} exists; pass resume=True to continue that run or use a new out_dir")
        _seed_all(derive_seed(cfg.seed, world.rank, 0))
        state = {}
    step, epoch, batch_in_epoch = state.get("step", 0), state.get("epoch", 0), state.get("batch_in_epoch", 0)
    best_value: float | None = state.get("best_value")
    if best_value is not None and not math.isfinite(best_value):  # written by a version that kept NaN as best
        best_value = None
    window: dict[str, float] = dict(state.get("log_window", {}))  # sums over the current logging window + "_count"
    seconds_before = float(state.get("train_seconds", 0.0))  # training time of the earlier calls (time clock)

    ddp_model: nn.Module = model
    if world.world_size > 1:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]

    # ---- outputs (rank 0)
    metrics: MetricsLog | None = None
    board = None
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_info = {"train": train_config, "model": model_config, "class_names": class_names,
                    "git_commit": git_commit(), "world_size": world.world_size, "global_batch": cfg.batch_size,
                    "per_process_batch": sampler.per_rank, "torch": torch.__version__, "device": str(device),
                    "resumed_from": str(last_path if resume is True else resume) if resume else None,
                    "start_step": step}
        atomic_write_text(out_dir / CONFIG, json.dumps(run_info, indent=2, default=_json_default) + "\n")
        metrics = MetricsLog(out_dir / METRICS, step if resume else None)
        board = _tensorboard(out_dir, step + 1 if resume else None, cfg.tensorboard)

    def checkpoint_state() -> dict[str, Any]:
        return {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "optimizer": optimizer.state_dict(), "scheduler": {"schedule": cfg.schedule, "step": step},
                "rng": _gather(world, _capture_rng(cuda)), "best_metric": best_metric, "best_mode": best_mode,
                "best_value": best_value, "log_window": dict(window), "train_config": train_config,
                "world_size": world.world_size, "train_seconds": seconds_before + time.perf_counter() - started}

    def write_checkpoint(path: Path, state: dict[str, Any]) -> None:
        if world.is_main:
            save_checkpoint(path, model_state=model.state_dict(), config=model_config, class_names=class_names,
                            train_state=state)

    def run_evaluation() -> dict[str, float]:
        if not world.is_main or evaluate is None:
            return {}
        model.eval()
        try:
            with _isolated_rng(cuda), torch.no_grad():
                result = {str(k): float(v) for k, v in evaluate(model).items()}
        finally:
            model.train()
        if best_metric is not None and best_metric not in result:
            raise ValueError(f"best_metric {best_metric!r} is not among the evaluate() results {sorted(result)}")
        return result

    last_losses: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    start_step = step
    show_progress = world.is_main and cfg.progress
    progress = tqdm(total=cfg.max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                    disable=not show_progress)
    if step >= cfg.max_steps and world.is_main:
        logger.info("%s is at step %d, max_steps is %d: nothing to train", out_dir, step, cfg.max_steps)
    started = time.perf_counter()
    # Console log lines go through tqdm.write while the bar is shown, so they do not break it.
    redirect = logging_redirect_tqdm() if show_progress else nullcontext()
    try:
        with redirect:
            done = False
            while step < cfg.max_steps and not done:
                if batch_in_epoch >= sampler.batches_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                sampler.set_epoch(epoch, batch_in_epoch)
                if callable(getattr(dataset, "set_epoch", None)):
                    dataset.set_epoch(epoch)  # type: ignore[attr-defined]
                carry = cfg.num_workers > 0  # a worker's DataError comes back as data, raised here unchanged
                loader = DataLoader(_CarryDataErrors(dataset) if carry else dataset, batch_size=sampler.per_rank,
                                    sampler=sampler, drop_last=True, num_workers=cfg.num_workers,
                                    collate_fn=_CollateCarrying(collate_fn) if carry else collate_fn,
                                    pin_memory=cuda,
                                    generator=torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 2)))
                for batch in loader:
                    if isinstance(batch, WorkerDataError):
                        raise batch.error()
                    position = None
                    if cfg.schedule_clock == "time":
                        seconds = seconds_before + _rank0_seconds(world, started, device)
                        position = cfg.max_steps * seconds / cfg.time_limit_s  # type: ignore[operator]
                    lr = set_lr(optimizer, cfg, step, position)
                    inputs = _to_device(batch, device)
                    if batch_to_inputs is not None:
                        inputs = batch_to_inputs(inputs)
                    values = _update(ddp_model, model, optimizer, trainable, inputs, cfg, step)
                    step += 1
                    batch_in_epoch += 1
                    for name, value in {"_count": 1.0, **values}.items():
                        window[name] = window.get(name, 0.0) + value

                    done = step >= cfg.max_steps or _time_is_up(world, cfg, started, device)
                    row: dict[str, Any] = {}
                    if step % cfg.log_every == 0 or done:
                        count = window.pop("_count")
                        last_losses = _mean_over_ranks(world, {k: v / count for k, v in window.items()}, device)
                        window = {}
                        row.update(last_losses)
                        progress.set_postfix(loss=f"{last_losses['loss']:.4g}", lr=f"{lr:.3g}", refresh=False)
                    # Decided from the config alone, so that every rank takes part in the same collectives below.
                    is_eval = step % cfg.eval_every == 0 or done
                    improved = False
                    if is_eval and evaluate is not None:
                        last_eval = run_evaluation()  # rank 0 only; the other ranks wait in the next collective
                        row.update({f"eval/{k}": v for k, v in last_eval.items()})
                        if last_eval and best_metric is not None:
                            value = last_eval[best_metric]
                            if not math.isfinite(value):  # NaN (nothing evaluated) is never a best model
                                logger.warning("step %d: %s is %s; best.pt is not updated", step, best_metric,
                                               value)
                            else:
                                improved = best_value is None or (value > best_value if best_mode == "max"
                                                                  else value < best_value)
                                best_value = value if improved else best_value
                        if last_eval:
                            logger.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in last_eval.items()))
                    if row and metrics is not None:
                        row = {"step": step, "epoch": epoch, "lr": lr, **row}
                        metrics.write(row)
                        if board is not None:
                            for key, value in row.items():
                                if key not in ("step", "epoch"):
                                    board.add_scalar(key if key.startswith("eval/") else f"train/{key}", value, step)
                    is_checkpoint = step % cfg.checkpoint_every == 0 or done
                    if is_eval or is_checkpoint:
                        state = checkpoint_state()  # a collective (RNG states of all ranks): every rank gets here
                        if improved:
                            write_checkpoint(best_path, state)
                        if is_checkpoint:
                            write_checkpoint(last_path, state)
                    progress.update(1)
                    if done:
                        break
    finally:
        progress.close()
        if board is not None:
            board.close()
    if batch_in_epoch >= sampler.batches_per_epoch:
        epoch, batch_in_epoch = epoch + 1, 0
    if world.is_main and step > start_step:
        elapsed = time.perf_counter() - started
        logger.info("trained steps %d-%d in %.1f s (%.2f steps/s); last checkpoint %s", start_step + 1, step,
                    elapsed, (step - start_step) / max(elapsed, 1e-9), last_path)
    return TrainResult(step=step, epoch=epoch, last_checkpoint=last_path,
                       best_checkpoint=best_path if best_metric is not None else None, best_value=best_value,
                       losses=last_losses, eval_metrics=last_eval, metrics_csv=out_dir / METRICS)
