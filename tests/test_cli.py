"""End-to-end: the real `squeeze` command in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from squeeze.kitti import read_image


def squeeze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "squeeze_suite", *args], capture_output=True, text=True,
                          timeout=300)


def test_help_lists_every_subcommand():
    out = squeeze("--help")
    assert out.returncode == 0
    for command in ("sim", "show", "demo"):
        assert f"    {command} " in out.stdout
    for command in ("sim", "show", "demo"):
        sub = squeeze(command, "--help")
        assert sub.returncode == 0 and "usage: squeeze" in sub.stdout


def test_demo_writes_pictures(tmp_path):
    out = squeeze("demo", "--out", str(tmp_path), "--frames", "1", "--seed", "3")
    assert out.returncode == 0, out.stderr
    names = sorted(p.name for p in (tmp_path / "pictures").glob("*.png"))
    assert names == ["000000_bev.png", "000000_camera.png", "000000_range.png"]
    camera = read_image(tmp_path / "pictures" / "000000_camera.png")
    assert camera.shape == (375, 1242, 3) and camera.std() > 10
    assert "000000_camera.png" in out.stdout


def test_show_on_real_frames(kitti_mini, tmp_path):
    out = squeeze("show", str(kitti_mini), "--out", str(tmp_path), "--frames", "000002", "--projection", "360")
    assert out.returncode == 0, out.stderr
    rng = read_image(tmp_path / "000002_range.png")
    assert rng.shape[1] == 2048 and np.any(rng != 0)


def test_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "training" / "velodyne").mkdir(parents=True)
    (tmp_path / "training" / "velodyne" / "000000.bin").write_bytes(b"\0" * 20)
    out = squeeze("show", str(tmp_path), "--out", str(tmp_path / "pics"))
    assert out.returncode == 2
    assert "000000.bin: size 20 bytes is not a multiple of 16" in out.stderr
    assert "Traceback" not in out.stderr
    out = squeeze("sim", "--out", str(tmp_path / "s"), "--frames", "0")
    assert out.returncode == 2 and "must be >= 1" in out.stderr
