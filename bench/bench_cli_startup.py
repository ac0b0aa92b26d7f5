"""Start-up time of the `squeeze` command: `squeeze --help` and every `squeeze X --help`, as a user runs them.

Issue 10's bar: each prints in < 0.4 s wall (no torch, numba, open3d, matplotlib or cv2 is imported to build the
parser; tests/test_cli.py checks that). Each command runs as its own process (the console script beside this
Python, else `python -m squeeze_suite`); medians over interleaved rounds after warm-up, with the bare interpreter
(`python -c pass`) measured in the same rounds as the baseline it cannot beat.

    python bench/bench_cli_startup.py [--rounds 9]
Prints one JSON object per line; exits 1 when a command misses the bar.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BAR_S = 0.4


def squeeze_command() -> list[str]:
    """The installed console script when present (what users run), else the module."""
    script = Path(sys.executable).with_name("squeeze")
    return [str(script)] if script.exists() else [sys.executable, "-m", "squeeze_suite"]


def top_commands() -> list[str]:
    """The names of `squeeze`'s commands, read from the real parser (in this process, not the timed ones)."""
    from squeeze_suite.cli import build_parser

    parser = build_parser()
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def wall_seconds(argv: list[str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (default: 9; at least 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default: 2)")
    args = ap.parse_args()
    squeeze = squeeze_command()
    runs = {"python_baseline": [sys.executable, "-c", "pass"], "squeeze_help": [*squeeze, "--help"]}
    runs |= {f"squeeze_{name}_help": [*squeeze, name, "--help"] for name in top_commands()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + max(7, args.rounds)):
        for name, argv in runs.items():  # interleaved: every figure sees the same machine load as the baseline
            seconds = wall_seconds(argv)
            if i >= args.warmup:
                times[name].append(seconds)
    ok = True
    for name, values in times.items():
        value = statistics.median(values)
        bar = None if name == "python_baseline" else BAR_S
        passed = None if bar is None else value < bar
        ok &= passed is not False
        command = " ".join([Path(runs[name][0]).name, *runs[name][1:]])
        print(json.dumps({"name": f"cli_startup_{name}", "value": round(value, 4), "unit": "s", "bar": bar,
                          "passed": passed, "runs": len(values), "command": command}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
