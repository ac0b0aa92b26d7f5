"""`squeeze latte`: instant help, the refusal to serve a non-loopback address without a token, and the real server
process on a free port (default simulated sequence written into a cache folder, an edit over HTTP, then
`squeeze latte export` of the same database)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HELP_IMPORTS = """
import contextlib, io, json, sys
from squeeze_suite.cli import main
helps = {}
for path in (["latte"], ["latte", "serve"], ["latte", "export"]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*path, "--help"])
        except SystemExit as e:
            assert e.code == 0, (path, e.code)
    helps[" ".join(path)] = out.getvalue()
heavy = ("torch", "fastapi", "uvicorn", "starlette", "pydantic", "numpy", "cv2", "open3d", "numba", "latte.server",
         "latte.annotator", "domain_adapt.sim")
print(json.dumps({"helps": helps, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def squeeze(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "squeeze_suite", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_help_is_instant_and_imports_no_server_or_torch():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["heavy"] == []
    helps = report["helps"]
    assert helps["latte"].startswith("usage: squeeze latte")
    assert "serve" in helps["latte"] and "export" in helps["latte"]
    assert "--token" in helps["latte serve"] and "(default: 127.0.0.1)" in helps["latte serve"]
    assert "(default: 8765)" in helps["latte serve"] and "-o DIR, --out DIR" in helps["latte export"]
    assert time.perf_counter() - t0 < 10  # an interpreter start and argparse: well under a second when idle


def test_non_loopback_without_token_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LATTE_TOKEN"}
    for host in ("0.0.0.0", "192.168.1.20", "example.org", "::"):
        out = squeeze("latte", "serve", "--host", host, "--cache", str(tmp_path), "--no-browser", env=env,
                      timeout=60)
        assert out.returncode == 2, (host, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and f"--host {host} is not a loopback address" in lines[0] and "--token" in lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_loopback_checks():
    from latte.cli import is_loopback, page_url

    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.1")
    assert not is_loopback("myhost.local")
    assert page_url("127.0.0.1", 8765, None) == "http://127.0.0.1:8765/"
    assert page_url("0.0.0.0", 80, "a b/c") == "http://127.0.0.1:80/?token=a%20b%2Fc"
    assert page_url("::1", 9, None) == "http://[::1]:9/"


def test_bad_paths_are_one_line_errors(tmp_path):
    out = squeeze("latte", "serve", str(tmp_path / "missing"), "--no-browser", "--port", "0", timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(tmp_path / "missing") in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = squeeze("latte", "export", str(tmp_path), "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "o"),
                  timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_a_missing_model_is_one_line_naming_it(sim_data, tmp_path):
    model = tmp_path / "det.onnx"
    out = squeeze("latte", "serve", str(sim_data), "--detector", str(model), "--db", str(tmp_path / "a.db"),
                  "--no-browser", "--port", "0", timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(model) in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("X-Latte-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _raw_get(port: int, path: str) -> bytes:
    """An HTTP/1.1 GET with the path sent exactly as written (no client-side '..' removal)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    from domain_adapt.sim.writer import simulate

    root = tmp_path_factory.mktemp("latte_cli") / "seq"
    simulate(root, frames=2, seed=4, sequence=True, progress=False)
    return root


class Serve:
    """`squeeze latte serve ARGS --port P --no-browser` in a subprocess; the page URL it printed."""

    def __init__(self, *args: str):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "squeeze_suite", "latte", "serve", *args, "--port", str(self.port), "--no-browser"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = None
        deadline = time.time() + 120
        while time.time() < deadline and self.url is None:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"open (http://\S+)", line)
            self.url = m.group(1) if m else None
        assert self.url is not None, self.proc.stderr.read()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_serve_answers_and_export_writes_what_was_edited(sim_data, tmp_path):
    """The real `squeeze latte serve DATA` on a free port with a token: info, 403 without it, an edit over HTTP,
    traversal refused on the wire; then the process is stopped and `squeeze latte export` writes the box."""
    token = "tok-123"
    db = tmp_path / "a.db"
    with Serve(str(sim_data), "--db", str(db), "--token", token, "--no-import") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/?token={token}"
        status, info = _request(f"{server.base}/api/info", token=token)
        assert status == 200 and info["frames"] == ["000000", "000001"] and info["name"]
        assert _request(f"{server.base}/api/info")[0] == 403
        frame = _request(f"{server.base}/api/frames/000001", token=token)[1]
        assert frame["document"]["boxes"] == []  # --no-import: the simulated truth is not imported
        box = {"id": "b1", "cls": "Car", "x": 12.0, "y": -3.0, "z": -0.9, "l": 4.2, "w": 1.8, "h": 1.5, "yaw": 0.1}
        status, body = _request(f"{server.base}/api/frames/000001/edits",
                                {"base_version": 0, "session": "s", "edit_id": "e1", "op": {"op": "add", "box": box}},
                                token)
        assert status == 200 and body["document"]["version"] == 1
        for raw in ("/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static//etc/passwd"):
            response = _raw_get(server.port, raw)
            assert response.startswith(b"HTTP/1.1 404") and b"[project]" not in response, raw
    out = squeeze("latte", "export", str(sim_data), "--db", str(db), "-o", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    label = (tmp_path / "out" / "label_2" / "000001.txt").read_text()
    rows = [r.split() for r in label.splitlines() if r.startswith("Car ")]
    assert len(rows) == 1
    # KITTI camera coordinates: the velodyne box's forward 12 m is camera z; dimensions h, w, l
    assert float(rows[0][13]) == pytest.approx(12.0, abs=0.5)
    assert [float(v) for v in rows[0][8:11]] == pytest.approx([1.5, 1.8, 4.2], abs=0.01)


@pytest.mark.slow
def test_serve_without_data_writes_and_serves_the_simulated_sequence_once(tmp_path):
    """No DATA: a simulated sequence is written into --cache on the first start, reused on the next."""
    cache = tmp_path / "cache"
    for _ in range(2):
        with Serve("--cache", str(cache), "--frames", "2", "--seed", "4") as server:
            status, info = _request(f"{server.base}/api/info")
            assert status == 200 and info["frames"] == ["000000", "000001"]
            assert _request(f"{server.base}/api/frames/000000")[1]["document"]["boxes"] == []  # truth not imported
    assert sorted(p.name for p in cache.iterdir()) == ["latte-sim-4-2", "latte-sim-4-2.latte"]
    assert (cache / "latte-sim-4-2.latte" / "annotations.db").is_file()


def test_serve_refuses_a_busy_port_naming_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        data = tmp_path / "kitti"
        (data / "training" / "velodyne").mkdir(parents=True)
        import numpy as np

        from squeeze.kitti import write_velodyne

        write_velodyne(data / "training" / "velodyne" / "000000.bin", np.zeros((3, 4), np.float32) + 5)
        out = squeeze("latte", "serve", str(data), "--port", str(port), "--no-browser", timeout=60)
    assert out.returncode == 2 and f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
    assert not Path(data / "latte" / "annotations.db").exists()
