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


HEAVY = ("torch", "numba", "open3d", "matplotlib", "cv2")  # each costs 0.1-1 s to import
HELP_EVERYWHERE = """
import argparse, contextlib, io, json, sys
from squeeze_suite.cli import build_parser, main

def commands(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*path, name])

helps = {}
for path in commands(build_parser(), []):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*path, "--help"])
        except SystemExit as e:
            assert e.code == 0, (path, e.code)
    helps[" ".join(path)] = out.getvalue()
print(json.dumps({"helps": helps, "heavy": [m for m in %r if m in sys.modules]}))
"""


def test_every_help_prints_without_importing_torch():
    """`squeeze --help`, `squeeze X --help` and `squeeze X Y --help` for every command of the real parser tree,
    in one fresh interpreter: none may import torch (1.1 s), numba, open3d, matplotlib or cv2."""
    import json

    out = subprocess.run([sys.executable, "-c", HELP_EVERYWHERE % (HEAVY,)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["heavy"] == []
    helps = report["helps"]
    for command in ("", "sim", "show", "demo", "seg", "seg train", "seg predict", "det", "det train", "det eval"):
        assert helps[command].startswith(f"usage: squeeze {command}".rstrip()), command
    assert "squeezedet_plus_kitti" in helps["det train"] and "squeezeseg_v2_kitti_360" in helps["seg train"]


def test_the_cli_model_names_are_the_model_tables_keys():
    """Each cli.py spells out its model names (so that --help needs no torch); they must be the MODELS keys."""
    from squeezedet.cli import MODEL_NAMES as DET_NAMES
    from squeezedet.models import MODELS as DET_MODELS
    from squeezeseg.cli import MODEL_NAMES as SEG_NAMES
    from squeezeseg.models import MODELS as SEG_MODELS

    assert DET_NAMES == tuple(DET_MODELS) == ("squeezedet_kitti", "squeezedet_plus_kitti")
    assert SEG_NAMES == tuple(SEG_MODELS)
    assert set(SEG_NAMES) == {"squeezeseg_kitti", "squeezeseg_kitti_360", "squeezeseg_v2_kitti",
                              "squeezeseg_v2_kitti_360"}


def test_show_library_returns_exactly_the_pictures_it_wrote(tmp_path):
    """squeeze.show.write_folder_pictures: per frame _range and _bev from the scan, _camera only with an image."""
    import pytest

    from squeeze.kitti import write_calib, write_labels, write_velodyne
    from squeeze.show import write_folder_pictures
    from tests.conftest import kitti_like_calibration, synthetic_labels

    root = tmp_path / "kitti"
    points = np.array([[10.0, 0.0, -1.0, 0.5], [12.0, 1.0, -1.2, 0.2], [8.0, -2.0, -1.5, 0.9]], np.float32)
    for fid in ("000000", "000001"):
        write_velodyne(root / "training" / "velodyne" / f"{fid}.bin", points)
        write_calib(root / "training" / "calib" / f"{fid}.txt", kitti_like_calibration())
        write_labels(root / "training" / "label_2" / f"{fid}.txt", synthetic_labels())
    from squeeze.kitti import write_image

    write_image(root / "training" / "image_2" / "000001.png", np.full((375, 1242, 3), 90, np.uint8))
    written = write_folder_pictures(root, tmp_path / "out", projection="front-uniform", progress=False)  # no rings
    assert [p.name for p in written] == ["000000_range.png", "000000_bev.png", "000001_range.png", "000001_bev.png",
                                         "000001_camera.png"]
    assert all(p.parent == tmp_path / "out" and p.stat().st_size > 0 for p in written)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    assert write_folder_pictures(root, tmp_path / "none", frame_ids=[], progress=False) == []
    with pytest.raises(ValueError, match="unknown projection 'fisheye'"):
        write_folder_pictures(root, tmp_path / "out", projection="fisheye")
