"""Command-line pieces that `squeeze seg` and `squeeze det` share around a trained model: export, the bundled
weights as the default checkpoint, and the list of pictures a demo wrote.

The two model packages differ in what they load, not in how these commands behave; each passes its own
`load_model` and bundled-weights path. Nothing here imports torch, so building the parsers stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def add_export_parser(subparsers, task: str, checkpoints: str, run: Callable[[argparse.Namespace], int]) -> None:
    """Register `export` for one task ("detection", "segmentation"); `checkpoints` names the files it takes."""
    p = subparsers.add_parser(
        "export", help="write a slim deployable checkpoint (fp16 weights, no training state)",
        description=f"Write a {task} checkpoint's weights (float16 unless --fp32) and configs without the training "
                    f"state, for deployment; loads it as a {task} model first and refuses anything else.")
    p.add_argument("checkpoint", type=Path, help=f"{task} checkpoint ({checkpoints})")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.set_defaults(run=run)


def export_checkpoint(args: argparse.Namespace, load_model: Callable[[Path], Any]) -> int:
    """`... export`: refuse a checkpoint that does not load as this task's model, then write the slim copy."""
    from squeeze.checkpoint import export_weights

    load_model(args.checkpoint)  # CheckpointError naming the file: another task's, or a config that cannot build
    path = export_weights(args.checkpoint, args.out, half=not args.fp32)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def checkpoint_or_bundled(checkpoint: Path | None, bundled: Path, what: str = "") -> Path:
    """The checkpoint a command runs: the one given, else the bundled weights (FileNotFoundError when absent, as
    in a source checkout whose weights were not fetched). Falling back says so on stderr, with `what` the weights
    are good for: a user who gave no checkpoint should not mistake a demonstration model for a trained one."""
    if checkpoint is not None:
        return checkpoint
    if not bundled.exists():
        raise FileNotFoundError(f"no checkpoint given and the bundled weights {bundled} are absent")
    print(f"no checkpoint given: running the bundled {bundled.name}" + (f" ({what})" if what else ""), file=sys.stderr)
    return bundled


def model_and_inputs(first: Path | None, rest: Sequence[Path], model: Path | None,
                     input_suffixes: tuple[str, ...]) -> tuple[Path | None, list[Path]]:
    """(the model file, None for the bundled weights; the inputs) of a predict command whose positional arguments
    are [CHECKPOINT] INPUT...: with --model every positional is an input; without it the first positional is the
    checkpoint unless it is a folder or a file of the inputs' kind (`input_suffixes`), which makes it the first
    input, so that `squeeze det predict image.png` and `squeeze seg predict scan.bin` run the bundled weights."""
    given = [first] if first is not None else []
    if model is not None:
        return model, given + list(rest)
    if first is not None and (first.is_dir() or first.suffix.lower() in input_suffixes):
        return None, given + list(rest)
    return first, list(rest)


def print_pictures(pictures: Sequence[Path], out: Path) -> None:
    """List the pictures a demo wrote under the full folder (a default such as outputs/seg_demo is relative to
    wherever the command was run, so the relative path alone does not say where to look)."""
    print(f"\nwrote {len(pictures)} picture(s) into {Path(out).resolve()}:")
    for p in pictures:
        print(f"  {p.name}")
