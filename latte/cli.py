"""`squeeze latte serve` and `squeeze latte export`: the annotation server and the offline export.

Wiring: squeeze_suite/cli.py calls `add_latte_parser(subparsers)`. Building the parser imports only the standard
library (every `--help` is instant); fastapi, uvicorn, torch, the model packages, deploy and the simulator are
imported inside the run functions. This is the one latte module that may reach beyond squeeze
(tests/test_layering.py): it loads the predictors (squeeze_suite.predictors: a checkpoint through the model
package, an exported model through deploy) and writes the default simulated sequence (domain_adapt).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import Any

from squeeze.cli_help import int_at_least

LOOPBACK_NAMES = ("localhost",)
DEFAULT_PORT = 8765
SIM_FRAMES = 20
SIM_SEED = 0


def default_cache() -> Path:
    """~/.cache/squeeze (or $XDG_CACHE_HOME/squeeze): where the default simulated sequence is written once."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "squeeze"


def _port(text: str) -> int:
    value = int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be <= 65535, got {value}")
    return value


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", type=Path, default=None, metavar="DATA",
                   help="KITTI object folder (ROOT or ROOT/training), or a KITTI raw drive folder "
                        "DATE_drive_NNNN_sync (default: a simulated sequence, written once into --cache)")
    p.add_argument("--db", type=Path, default=None, metavar="PATH",
                   help="annotation database (SQLite; default: DATA/latte/annotations.db, or beside the "
                        "simulated sequence)")
    p.add_argument("--frames", type=int_at_least(1), default=SIM_FRAMES, metavar="N",
                   help="frames of the default simulated sequence")
    p.add_argument("--seed", type=int_at_least(0), default=SIM_SEED, metavar="S",
                   help="seed of the default simulated sequence")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="folder of the default simulated sequences (default: ~/.cache/squeeze or "
                        "$XDG_CACHE_HOME/squeeze)")


def add_latte_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `latte serve` and `latte export` and return the `latte` parser."""
    latte = subparsers.add_parser(
        "latte", help="LATTE: annotate LiDAR boxes in the browser (one-click, fusion, tracking)",
        description="LATTE, the LiDAR annotation web app (Wang, Wu et al., ITSC 2019): one-click boxes fitted to a "
                    "clicked object, camera-detector fusion proposals, boxes tracked to the next frame, undo/redo, "
                    "every edit stored at once (SQLite); KITTI label_2, per-point .label and JSON export.")
    sub = latte.add_subparsers(dest="latte_command", metavar="LATTE_COMMAND")

    p = sub.add_parser(
        "serve", help="start the annotation server and print its URL",
        description="Serve DATA (or a simulated sequence) to the browser client. Binds 127.0.0.1 by default; any "
                    "other address needs --token (the page URL printed carries it). Every edit is committed to "
                    "the database before it is acknowledged.")
    _add_data_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind; non-loopback addresses need --token")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="TCP port (0: any free port)")
    p.add_argument("--token", default=os.environ.get("LATTE_TOKEN") or None, metavar="T",
                   help="secret every API request must carry (default: $LATTE_TOKEN; none on loopback)")
    p.add_argument("--export", type=Path, default=None, metavar="DIR",
                   help="where the E key / POST /api/export writes (default: DATA/latte/export)")
    p.add_argument("--detector", type=Path, default=None, metavar="MODEL",
                   help="2D detector for fusion proposals: a SqueezeDet checkpoint (.pt) or a deploy model "
                        "(.onnx, .xml, .engine)")
    p.add_argument("--segmenter", type=Path, default=None, metavar="MODEL",
                   help="LiDAR segmenter for point pre-labels: a SqueezeSeg checkpoint (.pt) or a deploy model")
    p.add_argument("--no-import", action="store_true",
                   help="do not import KITTI label_2 boxes when a frame is first opened (the default simulated "
                        "sequence never imports: its labels are the truth)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser on the printed URL")
    p.set_defaults(run=run_serve)

    p = sub.add_parser(
        "export", help="write KITTI label_2, per-point .label and JSON from an annotation database",
        description="Export the accepted boxes of every annotated frame: OUT/label_2/ID.txt (3D boxes in camera "
                    "coordinates, 2D box from projection, truncation and occlusion estimated), "
                    "OUT/velodyne/ID.label (SemanticKITTI) and OUT/annotations.json.")
    _add_data_arguments(p)
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="export folder")
    p.set_defaults(run=run_export)
    return latte


# ------------------------------------------------------------------------------------------------ data
def open_data(args: argparse.Namespace) -> tuple[Any, Path, bool]:
    """(FrameSource, the folder LATTE keeps its database and export in, whether DATA is the default simulation).

    Without DATA a simulated sequence (moving traffic, ego poses) is written once into the cache and reused.
    """
    from latte.scene import open_source

    if args.data is not None:
        source = open_source(args.data)
        return source, Path(args.data) / "latte", False
    cache = args.cache if args.cache is not None else default_cache()
    folder = cache / f"latte-sim-{args.seed}-{args.frames}"
    if not folder.exists():
        from domain_adapt.sim.writer import simulate

        cache.mkdir(parents=True, exist_ok=True)
        print(f"writing a simulated sequence ({args.frames} frames, seed {args.seed}) to {folder}", flush=True)
        simulate(folder, frames=args.frames, seed=args.seed, sequence=True, progress=True)
    return open_source(folder), cache / f"latte-sim-{args.seed}-{args.frames}.latte", True


def is_loopback(host: str) -> bool:
    """Whether binding `host` only serves this machine (127.0.0.0/8, ::1, 'localhost')."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); OSError naming the address when it cannot be bound."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise OSError(e.errno, f"cannot resolve the host ({e.strerror})", host) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, e.strerror, f"{host}:{port}") from None
    sock.set_inheritable(True)
    return sock


def page_url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if host in ("0.0.0.0", "::"):  # reachable on every interface: print one that works from here
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    from urllib.parse import quote

    return f"http://{shown}:{port}/" + (f"?token={quote(token, safe='')}" if token else "")


def _open_browser(url: str) -> None:
    """Open the page where a graphical browser can exist (a console browser would take over the terminal)."""
    if not (sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    import threading
    import webbrowser

    threading.Timer(1.0, webbrowser.open, args=(url,)).start()


# ------------------------------------------------------------------------------------------------ commands
def run_serve(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.token:
        print(f"squeeze latte serve: error: --host {args.host} is not a loopback address: set --token T (or "
              f"$LATTE_TOKEN) so that only people given the token can read and edit the annotations",
              file=sys.stderr)
        return 2
    source, state, simulated = open_data(args)
    # One loader for checkpoints and exported models (squeeze_suite.predictors): by suffix, checking the task.
    from squeeze_suite.predictors import load_detector, load_segmenter

    detector = load_detector(args.detector) if args.detector is not None else None
    segmenter = load_segmenter(args.segmenter) if args.segmenter is not None else None

    import uvicorn

    from latte.annotator import Annotator
    from latte.server import create_app
    from latte.store import Store

    db = args.db if args.db is not None else state / "annotations.db"
    export_dir = args.export if args.export is not None else state / "export"
    sock = bind(args.host, args.port)
    store = Store(db)
    try:
        annotator = Annotator(source, store, detector=detector, segmenter=segmenter, export_dir=export_dir,
                              import_labels=not (args.no_import or simulated))
        if annotator.frame_ids:  # one-time costs (JIT, imports) and the first frame before the URL is shown
            try:
                annotator.warm(annotator.frame_ids[0])
            except (ValueError, OSError) as e:
                print(f"warning: frame {annotator.frame_ids[0]} cannot be shown: {e}", file=sys.stderr)
        app = create_app(annotator, token=args.token)
        port = sock.getsockname()[1]
        url = page_url(args.host, port, args.token)
        print(f"LATTE: {len(annotator.frame_ids)} frames of {source.name} ({source.root}); annotations in {db}; "
              f"export to {export_dir}", flush=True)
        print(f"open {url}", flush=True)
        if not args.no_browser:
            _open_browser(url)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        try:
            server.run(sockets=[sock])
        finally:
            annotator.close()
    finally:
        sock.close()
        store.close()
    return 0


def run_export(args: argparse.Namespace) -> int:
    source, state, _ = open_data(args)
    db = args.db if args.db is not None else state / "annotations.db"
    if not db.is_file():
        raise FileNotFoundError(2, "no annotation database here (give --db PATH)", str(db))

    from latte.annotator import Annotator
    from latte.store import Store

    store = Store(db)
    try:
        result = Annotator(source, store, export_dir=args.out, import_labels=False).export()
    finally:
        store.close()
    print(f"exported {len(result['label_2'])} label_2 files ({result['files']} files) to {result['out']}")
    return 0
