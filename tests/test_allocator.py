"""squeeze.allocator: with glibc's malloc keeping freed memory, per-frame temporaries stop page-faulting.

Each case runs in a fresh interpreter (the setting is process-wide) and counts the minor page faults (ru_minflt)
of a detector-sized frame loop: allocate a 1248 x 384 x 3 float32 input, a transposed copy, a difference.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FRAME_LOOP = textwrap.dedent("""
    import resource, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    if sys.argv[1] == "suite":
        from squeeze.allocator import keep_freed_memory
        assert keep_freed_memory()
    elif sys.argv[1] == "bundle":
        from deploy.bundle_infer import keep_freed_memory
        assert keep_freed_memory()

    def frame():
        image = np.ones((384, 1248, 3), np.float32)
        planes = np.ascontiguousarray(image.transpose(2, 0, 1)) - 1.0
        return float(planes[0, 0, 0])

    frame()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        frame()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
""")


def _is_glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    except OSError:
        return False


def faults_per_frame(mode: str) -> float:
    script = FRAME_LOOP.format(root=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip())


@pytest.mark.skipif(not _is_glibc(), reason="mallopt is glibc's; other C libraries are left as they are")
def test_kept_memory_stops_the_page_faults_of_a_frame_loop():
    default = faults_per_frame("default")
    # the loop touches 3 x 5.75 MB a frame: by default most of it comes back from the system as fresh pages
    assert default > 500, default
    assert faults_per_frame("suite") < 5
    assert faults_per_frame("bundle") < 5  # the bundle's own copy (deploy/bundle_infer.py) does the same


def test_the_squeeze_command_keeps_freed_memory(monkeypatch, tmp_path):
    import squeeze.allocator
    from squeeze_suite.cli import main

    calls = []
    monkeypatch.setattr(squeeze.allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["sim", "--out", str(tmp_path / "world"), "--frames", "1", "--quiet"]) == 0
    assert calls == [1]

