"""Command-line pieces every `... train` command shares: the trainer's options and named-config overrides.

`squeeze seg train` and `squeeze det train` differ in their data and models, not in how they train; their
trainer options come from `add_train_arguments` and become a TrainConfig through `train_config_from_args`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from squeeze.config import config_help, typed_overrides
from squeeze.errors import DataError

if TYPE_CHECKING:  # the trainer imports torch: only train_config_from_args needs it, so --help stays instant
    from squeeze.train import TrainConfig


def parse_overrides(items: list[str], config: Any) -> dict[str, Any]:
    """`--set` items read as the fields of `config`, the chosen named config (squeeze.config.typed_overrides):
    ["use_crf=off", "class_weights=[1,1,5,5]"] -> {"use_crf": False, "class_weights": (1.0, 1.0, 5.0, 5.0)}.

    `--set help` prints every field with its type, default and comment, and exits 0. ValueError naming the field,
    the value and the expected type otherwise.
    """
    if any(item.strip().lower() == "help" for item in items):
        print(config_help(config))
        raise SystemExit(0)
    try:
        return typed_overrides(config, items)
    except ValueError as e:
        raise ValueError(f"--set {e} (`--set help` lists the fields)") from None


def model_overrides(args: argparse.Namespace, config: Any) -> dict[str, Any]:
    """The model-config fields a train command sets: its `--set` items and `--backbone SPEC.json` (the same as
    `--set backbone=SPEC.json`), read as the fields of `config` (`parse_overrides`)."""
    items = list(args.overrides)
    if getattr(args, "backbone", None) is not None:
        items.append(f"backbone={args.backbone}")
    return parse_overrides(items, config)


def check_batch_size(frames: int, batch_size: int, source: str | Path) -> None:
    """Refuse a training set smaller than one batch, saying which flag to change (small folders failed on the
    default --batch-size with the trainer's error, which names neither the folder nor the flag).

    frames: the training set's length; source: its folder, named in the DataError.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if frames == 0:
        raise DataError(source, "no training frames")
    if frames < batch_size:
        raise DataError(source, f"{frames} frames < --batch-size {batch_size}; pass --batch-size {frames} or fewer")


def add_train_arguments(p: argparse.ArgumentParser, *, steps: int, batch_size: int, lr: float = 0.01,
                        lr_step: int = 10_000, val_frames: int = 200) -> None:
    """The trainer's options, with a model family's defaults for steps, batch, lr and the step schedule."""
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, metrics, pictures)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the model's config, read as the field's type (e.g. --set use_crf=off, "
                        "--set class_weights=[1,1,5,5]); repeatable; `--set help` lists the fields")
    p.add_argument("--backbone", type=Path, default=None, metavar="SPEC.json",
                   help="trunk architecture spec (JSON: a list of conv / maxpool / fire stages, as DNAS writes) "
                        "instead of the model's paper trunk (default: the paper's)")
    p.add_argument("--steps", type=int, default=steps, help=f"optimiser updates (default: {steps})")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly (evaluate, checkpoint) once training has run this long; resumable")
    p.add_argument("--schedule-by-time", action="store_true",
                   help="with --time-limit: run the lr schedule over the time budget instead of --steps, so it "
                        "ends its decay inside the budget on a busy machine (not bitwise reproducible)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"global batch (default: {batch_size})")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="default: sgd (the reference)")
    p.add_argument("--lr", type=float, default=lr, help=f"base learning rate (default: {lr})")
    p.add_argument("--schedule", choices=["step", "cosine", "constant"], default="step", help="lr schedule")
    p.add_argument("--lr-step", type=int, default=lr_step, help="step schedule: halve every so many steps")
    p.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="on kernels only (default: 1e-4)")
    p.add_argument("--clip", type=float, default=1.0, help="gradient clip norm (default: 1.0)")
    p.add_argument("--clip-mode", choices=["per_parameter", "global"], default="per_parameter",
                   help="clip each tensor (the reference) or the global norm")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (about 2x faster on CPUs with AVX512-BF16)")
    p.add_argument("--eval-every", type=int, default=1000, help="steps between evaluations")
    p.add_argument("--val-frames", type=_at_least_one, default=val_frames,
                   help=f"validation frames per evaluation (default: {val_frames}); leave out --val to train without")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="seed (sample order, augmentation, init)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def _at_least_one(text: str) -> int:
    # 0 validation frames measure nothing (a NaN metric that once became best.pt): no evaluation is "no --val".
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} frames: must be at least 1 (leave out --val to skip evaluation)")
    return value


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    from squeeze.train import TrainConfig

    return TrainConfig(optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                       lr_step_size=args.lr_step, warmup_steps=args.warmup, max_steps=args.steps,
                       batch_size=args.batch_size, grad_clip_norm=args.clip, grad_clip_mode=args.clip_mode,
                       eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, seed=args.seed,
                       num_workers=args.workers, bf16=args.bf16,
                       time_limit_s=None if args.time_limit is None else 60 * args.time_limit,
                       schedule_clock="time" if args.schedule_by_time else "steps")

