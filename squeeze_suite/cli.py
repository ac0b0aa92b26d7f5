"""The `squeeze` command: a thin root that gathers each package's own cli.py.

Every package registers its commands through an `add_*_parser(subparsers)` function in its cli.py, and those
modules import their heavy dependencies (torch, numba, open3d, cv2) only inside the run functions, so building
the whole parser (and so `squeeze --help` and every `squeeze X --help`) imports none of them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from squeeze.errors import DataError

log = logging.getLogger("squeeze")


def build_parser() -> argparse.ArgumentParser:
    from domain_adapt.cli import add_sim_parser
    from squeeze.cli import add_show_parser
    from squeeze_suite.demo import add_demo_parser
    from squeezedet.cli import add_det_parser
    from squeezeseg.cli import add_seg_parser

    parser = argparse.ArgumentParser(
        prog="squeeze",
        description="The Squeeze perception suite: LiDAR and camera perception for autonomous driving on "
                    "KITTI-format data, with a simulated world as the embedded default data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_sim_parser(sub)
    add_seg_parser(sub)
    add_det_parser(sub)
    add_show_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (DataError, ValueError, FileExistsError, NotADirectoryError, FileNotFoundError) as e:
        # Bad input is the user's to fix: one clear line, no traceback (-v shows it).
        if args.verbose:
            log.exception("failed")
        print(f"squeeze {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
