"""The `squeeze` command: a thin root that gathers each package's own cli.py.

Every package registers its commands through an `add_*_parser(subparsers)` function in its cli.py, and those
modules import their heavy dependencies (torch, numba, open3d, cv2) only inside the run functions, so building
the whole parser (and so `squeeze --help` and every `squeeze X --help`) imports none of them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from squeeze.cli_help import SqueezeArgumentParser
from squeeze.errors import DataError

log = logging.getLogger("squeeze")


def build_parser() -> argparse.ArgumentParser:
    from deploy.cli import add_deploy_parser
    from domain_adapt.cli import add_da_parser, add_sim_parser
    from latte.cli import add_latte_parser
    from squeeze.cli import add_show_parser
    from squeeze_suite.demo import add_demo_parser
    from squeeze_suite.predictors import load_detector, load_segmenter
    from squeezedet.cli import add_det_parser
    from squeezeseg.cli import add_seg_parser

    # Its sub-parsers take its class, so every command's help states each option's default.
    parser = SqueezeArgumentParser(
        prog="squeeze",
        description="The Squeeze perception suite: LiDAR and camera perception for autonomous driving on "
                    "KITTI-format data, with a simulated world as the embedded default data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_sim_parser(sub)
    add_da_parser(sub)
    add_seg_parser(sub, load_segmenter=load_segmenter)  # predict takes checkpoints and exported models alike
    add_det_parser(sub, load_detector=load_detector)
    add_show_parser(sub)
    add_deploy_parser(sub)
    add_demo_parser(sub)
    add_latte_parser(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """'squeeze seg predict' for the parsed `args`: the command and, where it has them, its subcommand."""
    words = ["squeeze"]
    if getattr(args, "command", None):
        words.append(args.command)
        sub = getattr(args, f"{args.command}_command", None)
        if sub:
            words.append(sub)
    return " ".join(words)


def error_line(e: BaseException) -> str:
    """One line for an error the user can fix: `PATH: reason` for an OSError about a file, else its message."""
    if isinstance(e, OSError) and e.filename is not None:
        reason = e.strerror or str(e)
        if e.filename2 is not None:  # rename, link: both paths matter
            return f"{e.filename} -> {e.filename2}: {reason}"
        return f"{e.filename}: {reason}"
    return str(e) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    from squeeze.allocator import keep_freed_memory

    keep_freed_memory()  # per-frame temporaries stop page-faulting (squeeze.allocator has the measurement)
    try:
        return int(args.run(args) or 0)
    except (DataError, ValueError, OSError) as e:
        # Bad input (DataError, ValueError) and the file system saying no (OSError: permission denied, a folder where
        # a file should be, a file where a folder should be, disk full) are the user's to fix: one clear line naming
        # the path, no traceback (-v shows it).
        if args.verbose:
            log.exception("failed")
        print(f"{command_name(args)}: error: {error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
