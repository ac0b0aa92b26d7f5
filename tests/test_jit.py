"""numba's on-disk cache never stops a kernel from loading (squeeze/jit.py).

Each case runs in a fresh interpreter whose numba cannot write beside the package nor in HOME: numba's own cache
locators are made to fail with PermissionError, as they do for a read-only install used by an account without a
writable HOME (chmod alone cannot show it: tests may run as root). With `numba.njit(cache=True)` importing
squeeze.geometry then raised "no locator available"; now the kernel caches in a private folder under TMPDIR, or
compiles without a cache when that folder is refused too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX user ids")

SCRIPT = r"""
import json, os, sys
import numba.core.caching as caching

allowed = os.environ.get("ALLOW_CACHE_UNDER")
real = caching._CacheLocator.ensure_cache_path

def refuse(self):  # the install folder and HOME cannot be written
    path = os.path.abspath(self.get_cache_path())
    if not allowed or not path.startswith(allowed):
        raise PermissionError(13, "Permission denied", path)
    return real(self)

caching._CacheLocator.ensure_cache_path = refuse
import numpy as np
import squeeze.geometry as g

corners = g._bev_ccw_corners(np.array([[10.0, 0.0, 20.0, 1.0, 2.0, 4.0, 0.0]]))
print(json.dumps({"corners": corners.tolist(), "hits": sum(g._bev_ccw_corners.stats.cache_hits.values()),
                  "cached": g._bev_ccw_corners._cache.cache_path if g._bev_ccw_corners._cache else None}))
"""


def run(tmp_path: Path, allow: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(tmp_path / "no_home"), TMPDIR=str(tmp_path / "tmp"))
    env.pop("ALLOW_CACHE_UNDER", None)
    if allow is not None:
        env["ALLOW_CACHE_UNDER"] = allow
    (tmp_path / "tmp").mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


EXPECTED = [[[12.0, 19.0], [12.0, 21.0], [8.0, 21.0], [8.0, 19.0]]]  # x +- l/2, z +- w/2, counter-clockwise


def test_kernel_loads_without_any_writable_cache_folder(tmp_path):
    """No folder at all (the temporary one refused too): the kernel compiles without a cache and runs."""
    out = run(tmp_path, allow=None)
    assert out["corners"] == EXPECTED
    assert out["cached"] is None and out["hits"] == 0


def test_kernel_caches_in_a_private_temporary_folder(tmp_path):
    """Only TMPDIR is writable: the kernel caches there (mode 0700), and the second process loads it."""
    tmp = str(tmp_path / "tmp")
    first = run(tmp_path, allow=tmp)
    folder = Path(tmp, f"squeeze-numba-cache-{os.getuid()}")
    assert first["corners"] == EXPECTED and first["cached"].startswith(str(folder))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert any(folder.rglob("*.nbi"))  # numba's cache index
    second = run(tmp_path, allow=tmp)
    assert second["corners"] == EXPECTED and second["hits"] == 1


def test_a_folder_another_user_could_write_is_not_used(tmp_path, monkeypatch):
    from squeeze import jit

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(jit.tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    folder = tmp_path / f"squeeze-numba-cache-{os.getuid()}"
    folder.mkdir(mode=0o777)
    folder.chmod(0o777)
    assert jit.fallback_cache_dir() is None
    folder.chmod(0o700)
    assert jit.fallback_cache_dir() == str(folder)
