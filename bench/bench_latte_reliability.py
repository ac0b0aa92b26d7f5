"""LATTE reliability over HTTP: concurrent annotators lose and duplicate nothing, kill -9 loses no acknowledged edit.

Bars (issue 12): 8 concurrent clients x 200 edits on loopback lose and duplicate nothing (p99 latency reported);
`kill -9` during a burst of edits loses no acknowledged edit; path traversal (`..`, encoded, absolute, symlink)
refused; a non-loopback bind without a token refuses to start.

Everything runs against a real server process, `squeeze latte serve DATA --port 0 --db DB --no-browser`, on a small
simulated sequence (`squeeze sim --sequence`), as a user would start it:

- burst: each client (a thread with its own httpx connection and the session id /api/info gave it) makes `--edits`
  edits on random frames: adds of new boxes (60%), full updates (30%) and deletes (10%) of its own boxes, every
  one with a unique edit_id; on 409 it retries the same edit on the version the answer carries. Every 10th edit is
  sent a second time after its answer (a client that lost the answer): it must not be applied twice.
  Checked afterwards: each frame's final document holds exactly the boxes the clients' acknowledged edits leave
  (box by box, every field), the boxes nobody touched are unchanged, and the frame's version grew by exactly the
  number of acknowledged edits (an edit applied twice, even an update, would show); the database (read with
  latte.store once the server has stopped) holds every acknowledged edit_id once.
  Latency: from the first send of an edit to its 200 (409 retries included), and of each 200 request alone.
- kill -9: clients add boxes as fast as they can; once `--kill-after` edits are acknowledged the server gets
  SIGKILL. Restarted on the same database, it must show every acknowledged box (an edit in flight at the kill may
  or may not be there: it was never acknowledged).
- public bind without a token: `--host 0.0.0.0` must exit non-zero with a one-line error, and not serve.
- traversal: frame ids and static paths with '..', %2e%2e, %2f, backslashes, absolute paths, NUL and double
  encoding, sent verbatim (http.client, no client-side normalisation), and a symlink in the data root pointing
  outside: no answer may carry the content of the file outside the roots.

Prints one JSON object per line; exits 1 when anything is lost or duplicated, or a refusal fails.
Usage: .venv/bin/python bench/bench_latte_reliability.py [--clients 8] [--edits 200] [--frames 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from latte.boxes import Box
from latte.store import StaleWrite, Store

SERVER_START_S = 120.0  # a cold start imports the suite and opens the source; generous for a loaded CI machine


# ------------------------------------------------------------------------------------------------ processes
def squeeze_command(*args: str) -> list[str]:
    """The `squeeze` command of this interpreter's environment."""
    return [sys.executable, "-m", "squeeze_suite.cli", *args]


def clean_env() -> dict[str, str]:
    """The environment without $LATTE_TOKEN (the serve command reads it as --token's default)."""
    env = dict(os.environ)
    env.pop("LATTE_TOKEN", None)
    return env


def simulate(out: Path, frames: int = 3, seed: int = 1) -> Path:
    """A small simulated sequence (KITTI object layout with poses), written by `squeeze sim --sequence`."""
    subprocess.run(squeeze_command("sim", "--out", str(out), "--frames", str(frames), "--seed", str(seed),
                                   "--sequence"), check=True, capture_output=True, env=clean_env())
    return out


@dataclass
class Server:
    """A running `squeeze latte serve` process on a free loopback port."""

    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT (no trailing slash, no token)
    token: str | None
    log: Path  # its stderr

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Latte-Token": self.token} if self.token else {}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host.strip("[]"), int(port)

    def kill(self) -> None:
        """SIGKILL: no handler runs, no buffer is flushed, no transaction is finished."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(data: Path, db: Path, *extra: str, token: str | None = None, log_dir: Path | None = None) -> Server:
    """Start `squeeze latte serve DATA --port 0 --db DB --no-browser [--token T] EXTRA` and wait for its URL."""
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="latte-log-"))
    log = log_dir / f"serve-{uuid.uuid4().hex[:8]}.log"
    args = ["latte", "serve", str(data), "--port", "0", "--db", str(db), "--no-browser", *extra]
    if token:
        args += ["--token", token]
    with open(log, "wb") as err:
        proc = subprocess.Popen(squeeze_command(*args), stdout=subprocess.PIPE, stderr=err, text=True,
                                env=clean_env(), start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:  # drains stdout for the server's whole life so it never blocks on a full pipe
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        if line.startswith("open http"):
            url = line.split()[1].split("?")[0].rstrip("/")
            return Server(proc, url, token, log)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    raise RuntimeError(f"latte serve did not start (exit {proc.returncode}): {log.read_text()[-2000:]}")


# ------------------------------------------------------------------------------------------------ the burst
@dataclass(frozen=True)
class Ack:
    client: int
    frame_id: str
    edit_id: str
    op: dict


@dataclass
class ClientResult:
    client: int
    prefix: str  # box and edit ids of the burst start with it: {prefix}{client}-{edit}
    acked: list[Ack] = field(default_factory=list)
    in_flight: Ack | None = None  # sent, never answered (the server died)
    own: dict[str, dict[str, dict]] = field(default_factory=dict)  # frame -> box id -> expected box
    edit_ms: list[float] = field(default_factory=list)  # first send -> 200, 409 retries included
    request_ms: list[float] = field(default_factory=list)  # each 200 request alone
    stale: int = 0
    resent: int = 0
    error: str | None = None


def _box(prefix: str, client: int, i: int, rng: random.Random) -> dict:
    cls = rng.choice(("Car", "Pedestrian", "Cyclist", "Van"))
    return Box(id=f"{prefix}{client}-{i}", cls=cls, x=rng.uniform(-40, 40), y=rng.uniform(-20, 20),
               z=rng.uniform(-1.5, 0.5), l=rng.uniform(0.5, 5), w=rng.uniform(0.5, 2.5), h=rng.uniform(1, 2.5),
               yaw=rng.uniform(-3.1, 3.1), track_id=client * 10000 + i, source="manual", accepted=True).to_dict()


def client_run(server: Server, frames: list[str], res: ClientResult, edits: int, mixed: bool,
               stop: threading.Event, seed: int) -> None:
    """One annotator: `edits` edits (or until `stop`), each retried on 409 with the returned version; what it
    did goes into `res` as it goes (the kill -9 run counts acknowledged edits while the clients run)."""
    client = res.client
    rng = random.Random(seed * 1000 + client)
    res.own.update({f: {} for f in frames})
    versions = dict.fromkeys(frames, 0)  # learnt from the first 409 on each frame, as a client that never loaded it
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60.0) as http:
        try:
            session = http.get("/api/info").raise_for_status().json()["session"]
        except httpx.HTTPError as e:
            res.error = f"client {client}: set-up failed: {e!r}"
            return
        for i in range(edits):
            if stop.is_set():
                break
            fid = rng.choice(frames)
            own = res.own[fid]
            r = rng.random()
            if not mixed or not own or r < 0.6:
                op = {"op": "add", "box": _box(res.prefix, client, i, rng)}
            elif r < 0.9:
                old = own[rng.choice(sorted(own))]
                moved = dict(old, x=min(max(old["x"] + rng.uniform(-1, 1), -40.0), 40.0),
                             yaw=Box.from_dict(dict(old, yaw=old["yaw"] + 0.1)).yaw, accepted=not old["accepted"])
                op = {"op": "update", "box": moved}
            else:
                op = {"op": "delete", "id": rng.choice(sorted(own))}
            edit_id = f"{res.prefix}{client}-{i}-{uuid.uuid4().hex[:12]}"
            ack = Ack(client, fid, edit_id, op)
            t_first = time.perf_counter()
            while True:
                body = {"base_version": versions[fid], "session": session, "edit_id": edit_id, "op": op}
                t0 = time.perf_counter()
                try:
                    resp = http.post(f"/api/frames/{fid}/edits", json=body)
                except httpx.TransportError as e:
                    res.in_flight = ack
                    res.error = f"client {client}: {type(e).__name__} on edit {i}"
                    return
                if resp.status_code == 409:
                    res.stale += 1
                    versions[fid] = resp.json()["document"]["version"]
                    continue
                if resp.status_code != 200:
                    res.in_flight = ack
                    res.error = f"client {client}: HTTP {resp.status_code} on edit {i}: {resp.text[:300]}"
                    return
                t1 = time.perf_counter()
                res.request_ms.append((t1 - t0) * 1000)
                res.edit_ms.append((t1 - t_first) * 1000)
                versions[fid] = resp.json()["document"]["version"]
                break
            res.acked.append(ack)
            if op["op"] == "delete":
                del own[op["id"]]
            else:
                own[op["box"]["id"]] = Box.from_dict(op["box"]).to_dict()
            if i % 10 == 9:  # the answer "was lost": the same request again must not apply the edit twice
                try:
                    again = http.post(f"/api/frames/{fid}/edits", json=body)
                except httpx.TransportError:
                    return
                if again.status_code != 200:
                    res.error = f"client {client}: a resent edit got HTTP {again.status_code}: {again.text[:300]}"
                    return
                res.resent += 1


@dataclass
class Burst:
    results: list[ClientResult]
    seconds: float
    prefix: str

    @property
    def acked(self) -> list[Ack]:
        return [a for r in self.results for a in r.acked]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error]


def burst(server: Server, frames: list[str], clients: int, edits: int, mixed: bool = True, seed: int = 0,
          kill_after: int | None = None, prefix: str = "c") -> Burst:
    """`clients` threads of `client_run`; with `kill_after`, the server is SIGKILLed once that many edits are
    acknowledged (counted while the clients run). Box and edit ids start with `prefix` (unique per burst on one
    database); boxes without it were there before."""
    stop = threading.Event()
    results = [ClientResult(k, prefix) for k in range(clients)]
    threads = [threading.Thread(target=client_run, args=(server, frames, r, edits, mixed, stop, seed))
               for r in results]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    if kill_after is not None:
        while any(t.is_alive() for t in threads):
            if sum(len(r.acked) for r in results) >= kill_after:
                server.kill()
                break
            time.sleep(0.001)
    for t in threads:
        t.join()
    return Burst(results, time.perf_counter() - t0, prefix)


def documents(server: Server, frames: list[str]) -> dict[str, dict]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60.0) as http:
        return {f: http.get(f"/api/frames/{f}").raise_for_status().json()["document"] for f in frames}


def check_burst(before: dict[str, dict], after: dict[str, dict], run: Burst, db: Path | None = None) -> dict:
    """Lost / duplicated / wrong edits of a finished burst (see the module docstring). `db`: also read the
    database (the server must have stopped) for every acknowledged edit_id."""
    lost, duplicated, wrong = [], [], []
    for fid, doc in after.items():
        mine = {b["id"]: b for b in doc["boxes"] if b["id"].startswith(run.prefix)}
        others = [b for b in doc["boxes"] if not b["id"].startswith(run.prefix)]
        if others != [b for b in before[fid]["boxes"] if not b["id"].startswith(run.prefix)]:
            wrong.append(f"{fid}: boxes that were there before the burst changed")
        expected = {bid: box for r in run.results for bid, box in r.own[fid].items()}
        lost += [f"{fid}/{bid}" for bid in expected if bid not in mine]
        wrong += [f"{fid}/{bid}" for bid in expected if bid in mine and mine[bid] != expected[bid]]
        duplicated += [f"{fid}/{bid}: not acknowledged" for bid in mine if bid not in expected]
        ids = [b["id"] for b in doc["boxes"]]
        duplicated += [f"{fid}/{bid}: twice" for bid in set(ids) if ids.count(bid) > 1]
        n_acked = sum(1 for a in run.acked if a.frame_id == fid)
        extra = doc["version"] - before[fid]["version"] - n_acked
        if extra > 0:
            duplicated.append(f"{fid}: version grew by {extra} more than the {n_acked} acknowledged edits")
        elif extra < 0:
            lost.append(f"{fid}: version grew by {-extra} less than the {n_acked} acknowledged edits")
    if db is not None:
        with Store(db) as store:
            stored = [e["edit_id"] for e in store.edits() if e["edit_id"].startswith(run.prefix)]
        counts: dict[str, int] = {}
        for e in stored:
            counts[e] = counts.get(e, 0) + 1
        lost += [f"edit {a.edit_id} not in the database" for a in run.acked if a.edit_id not in counts]
        duplicated += [f"edit {e} stored {n} times" for e, n in counts.items() if n > 1]
        acked_ids = {a.edit_id for a in run.acked}
        duplicated += [f"edit {e} stored but never acknowledged" for e in counts if e not in acked_ids]
    return {"lost": lost, "duplicated": duplicated, "wrong": wrong}


def check_after_kill(after: dict[str, dict], run: Burst) -> dict:
    """Adds only: every acknowledged box is there; any other burst box is an edit that was in flight."""
    in_flight = {r.in_flight.op["box"]["id"] for r in run.results if r.in_flight is not None}
    present = {b["id"]: (fid, b) for fid, doc in after.items() for b in doc["boxes"]
               if b["id"].startswith(run.prefix)}
    lost, wrong, surplus = [], [], []
    for a in run.acked:
        box = Box.from_dict(a.op["box"]).to_dict()
        got = present.get(box["id"])
        if got is None:
            lost.append(f"{a.frame_id}/{box['id']}")
        elif got != (a.frame_id, box):
            wrong.append(f"{a.frame_id}/{box['id']}")
    acked_ids = {a.op["box"]["id"] for a in run.acked}
    surplus = [bid for bid in present if bid not in acked_ids and bid not in in_flight]
    committed_in_flight = sum(1 for bid in present if bid in in_flight)
    return {"lost": lost, "wrong": wrong, "duplicated": surplus, "in_flight": len(in_flight),
            "in_flight_committed": committed_in_flight}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100, linear interpolation); nan for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def store_baseline(db: Path, frames: list[str], clients: int, edits: int, seed: int) -> list[float]:
    """Milliseconds of each successful Store.apply when `clients` threads make the burst's edits in-process (the
    store's own share of an HTTP edit's latency)."""
    store = Store(db)
    times: list[list[float]] = [[] for _ in range(clients)]

    def run(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        own: dict[str, dict[str, dict]] = {f: {} for f in frames}
        versions = dict.fromkeys(frames, 0)
        for i in range(edits):
            fid = rng.choice(frames)
            r = rng.random()
            if not own[fid] or r < 0.6:
                op = {"op": "add", "box": _box("b", k, i, rng)}
            elif r < 0.9:
                op = {"op": "update", "box": dict(own[fid][rng.choice(sorted(own[fid]))], x=rng.uniform(-40, 40))}
            else:
                op = {"op": "delete", "id": rng.choice(sorted(own[fid]))}
            while True:
                t0 = time.perf_counter()
                try:
                    doc = store.apply(fid, versions[fid], op, f"s{k}", f"b{k}-{i}")
                except StaleWrite as e:
                    versions[fid] = e.current["version"]
                    continue
                times[k].append((time.perf_counter() - t0) * 1000)
                versions[fid] = doc["version"]
                break
            if op["op"] == "delete":
                del own[fid][op["id"]]
            else:
                own[fid][op["box"]["id"]] = op["box"]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    return [v for ts in times for v in ts]


# ------------------------------------------------------------------------------------------------ refusals
def public_bind_without_token(data: Path, db: Path) -> tuple[int, str, bool]:
    """(exit code, stderr, whether it served) of `squeeze latte serve --host 0.0.0.0` without a token."""
    args = ["latte", "serve", str(data), "--host", "0.0.0.0", "--port", "0", "--db", str(db), "--no-browser"]
    proc = subprocess.run(squeeze_command(*args), capture_output=True, text=True, timeout=SERVER_START_S,
                          env=clean_env())
    return proc.returncode, proc.stderr, "open http" in proc.stdout


def raw_get(server: Server, path: str) -> tuple[int, bytes]:
    """GET `path` sent verbatim (no dot-segment removal, no re-encoding), as an attacker's client would."""
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for k, v in server.headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def traversal_paths(frame: str, outside: Path) -> list[str]:
    """Request paths that try to leave the static and data roots towards `outside` (an absolute file path)."""
    rel = "../" * 12 + str(outside).lstrip("/")
    enc = rel.replace("/", "%2f")
    dots = rel.replace("..", "%2e%2e")
    dbl = rel.replace("..", "%252e%252e").replace("/", "%252f")
    back = rel.replace("/", "\\").replace("\\", "%5c")
    absolute = str(outside)
    paths = []
    for prefix in ("/static/", "/api/frames/"):
        suffixes = ("/points", "/image", "") if prefix == "/api/frames/" else ("",)
        for p in (rel, enc, dots, dbl, back, absolute.lstrip("/"), "/" + absolute.lstrip("/"),
                  absolute.replace("/", "%2f"), "..", "%2e%2e", "%2e%2e%2f", f"{frame}/../../{rel}",
                  f"{frame}%00/../{rel}", "~/.bashrc", "....//....//" + str(outside).lstrip("/")):
            for s in suffixes:
                paths.append(prefix + p + s)
    paths += ["/" + rel, "/%2e%2e/%2e%2e" + absolute, f"/static/{'%2e%2e%2f' * 12}{absolute.lstrip('/')}",
              "/static/..%2f..%2flatte%2fstore.py", "/static/../store.py", "/static/%2e%2e/store.py",
              "/static/%2e%2e%2fstore.py", "/static/./index.html/../../store.py", "/static/../server.py",
              "/static/%2e%2e/server.py", "/static/..%5cserver.py", "/static/%252e%252e/server.py"]
    return paths


PACKAGE_MARKERS = (b"class StaleWrite", b"def create_app")  # latte/store.py, latte/server.py: beside static/


def probe_traversal(server: Server, frame: str, outside: Path, marker: bytes) -> list[dict]:
    """Every traversal path with its status; `leaked` when the answer holds `marker` (the outside file) or a
    source file of the package (latte/store.py or server.py, beside the static root)."""
    rows = []
    for path in traversal_paths(frame, outside):
        try:
            status, body = raw_get(server, path)
        except http.client.InvalidURL as e:  # refused by our own client (a control character): nothing sent
            rows.append({"path": path, "status": None, "leaked": False, "note": str(e)})
            continue
        rows.append({"path": path, "status": status,
                     "leaked": marker in body or any(m in body for m in PACKAGE_MARKERS)})
    return rows


LINKED_FRAME = "000001"  # the frame whose files symlinked_source turns into links out of the root
OUTSIDE_DIMS = (1.234, 2.345, 3.456)  # h, w, l of the outside label's box: no real box has them
OUTSIDE_P2 = 777.777  # fx of the outside calibration


def symlinked_source(data: Path, out: Path, outside: Path) -> dict[str, Path]:
    """A copy of the sequence `data` at `out` whose frame LINKED_FRAME's files (scan, image, label, calib) are
    symlinks to valid files in `outside` (a folder outside the root): a scan shifted by 0.25 m with intensity
    0.777, the image, a label with a box of OUTSIDE_DIMS, a calibration with fx = OUTSIDE_P2. A server that follows
    the links would serve them like any frame; returns {relative link: target}."""
    shutil.copytree(data, out, symlinks=True)
    outside.mkdir(parents=True, exist_ok=True)
    training = out / "training"
    scan = np.fromfile(training / "velodyne" / f"{LINKED_FRAME}.bin", dtype="<f4").reshape(-1, 4).copy()
    scan[:, 0] += 0.25
    scan[:, 3] = 0.777
    made = {"velodyne": ("scan.bin", scan.tobytes()),
            "image_2": ("image.png", (training / "image_2" / f"{LINKED_FRAME}.png").read_bytes()),
            "label_2": ("label.txt", "Car 0.00 0 -1.71 696.39 174.51 791.13 248.27 {:.3f} {:.3f} {:.3f} 3.14 1.65 "
                                     "17.93 -1.54\n".format(*OUTSIDE_DIMS).encode()),
            "calib": ("calib.txt", (training / "calib" / f"{LINKED_FRAME}.txt").read_text()
                      .replace("P2: 7.215377000000e+02", f"P2: {OUTSIDE_P2:.12e}").encode())}
    links = {}
    for sub, (name, content) in made.items():
        ext = Path(name).suffix
        link = training / sub / f"{LINKED_FRAME}{ext}"
        if not link.exists():
            continue
        target = outside / name
        target.write_bytes(content)
        link.unlink()
        link.symlink_to(target)
        links[f"training/{sub}/{LINKED_FRAME}{ext}"] = target
    labels = training / "velodyne" / f"{LINKED_FRAME}.label"
    if labels.exists():  # per-point labels of a scan that is no longer there
        labels.unlink()
    return links


def probe_symlinks(server: Server) -> list[dict]:
    """The linked frame's routes: `leaked` when an answer carries what only the outside files hold (any points or
    image of the frame, the outside label's box, the outside calibration)."""
    rows = []
    for sub in ("/points", "/point_labels", "/image"):
        status, body = raw_get(server, f"/api/frames/{LINKED_FRAME}{sub}")
        rows.append({"path": f"/api/frames/{LINKED_FRAME}{sub}", "status": status, "leaked": status == 200})
    status, body = raw_get(server, f"/api/frames/{LINKED_FRAME}")
    leaked = False
    if status == 200:
        frame = json.loads(body)
        dims = {tuple(round(b[k], 3) for k in ("h", "w", "l")) for b in frame["document"]["boxes"]}
        calib = frame.get("calib") or {}
        leaked = OUTSIDE_DIMS in dims or any(abs(v - OUTSIDE_P2) < 1e-3 for v in (calib.get("P2") or [[0]])[0])
    rows.append({"path": f"/api/frames/{LINKED_FRAME}", "status": status, "leaked": leaked})
    return rows


# ------------------------------------------------------------------------------------------------ the bench
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--edits", type=int, default=200, help="edits per client")
    parser.add_argument("--frames", type=int, default=3, help="frames of the simulated sequence")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-after", type=int, default=400, help="acknowledged edits before the kill -9")
    parser.add_argument("--data", type=Path, default=None, help="a KITTI folder instead of a simulated sequence")
    args = parser.parse_args(argv)
    failed = False

    def emit(name: str, value: float | int | bool, unit: str, **extra: object) -> None:
        print(json.dumps({"name": name, "value": value, "unit": unit, **extra}), flush=True)

    with tempfile.TemporaryDirectory(prefix="latte-rel-") as tmp:
        tmp = Path(tmp)
        data = args.data or simulate(tmp / "sim", args.frames, args.seed)
        with serve(data, tmp / "burst.db", log_dir=tmp) as server:
            frames = httpx.get(server.url + "/api/info").json()["frames"]
            before = documents(server, frames)
            run = burst(server, frames, args.clients, args.edits, mixed=True, seed=args.seed)
            after = documents(server, frames)
            # the same edits from one client alone (no contention, no 409): what one annotator waits for
            alone = burst(server, frames, 1, args.edits, mixed=True, seed=args.seed, prefix="alone")
        check = check_burst(before, after, run, db=tmp / "burst.db")
        edit_ms = [v for r in run.results for v in r.edit_ms]
        request_ms = [v for r in run.results for v in r.request_ms]
        n = len(run.acked)
        bad = bool(check["lost"] or check["duplicated"] or check["wrong"] or run.errors
                   or n != args.clients * args.edits)
        failed |= bad
        common = {"clients": args.clients, "edits_per_client": args.edits, "frames": len(frames)}
        emit("latte_burst_acknowledged", n, "edits", expected=args.clients * args.edits, errors=run.errors[:5],
             **common)
        emit("latte_burst_lost", len(check["lost"]), "edits", examples=check["lost"][:5], **common)
        emit("latte_burst_duplicated", len(check["duplicated"]), "edits", examples=check["duplicated"][:5],
             resent=sum(r.resent for r in run.results), **common)
        emit("latte_burst_wrong", len(check["wrong"]), "boxes", examples=check["wrong"][:5], **common)
        emit("latte_edit_latency_p50", round(percentile(edit_ms, 50), 2), "ms", note="first send to 200, 409 "
             "retries included", **common)
        emit("latte_edit_latency_p99", round(percentile(edit_ms, 99), 2), "ms", **common)
        emit("latte_request_latency_p50", round(percentile(request_ms, 50), 2), "ms", note="one 200 request",
             **common)
        emit("latte_request_latency_p99", round(percentile(request_ms, 99), 2), "ms", **common)
        emit("latte_burst_throughput", round(n / run.seconds, 1), "edits/s",
             stale_retries=sum(r.stale for r in run.results), **common)
        alone_ms = alone.results[0].request_ms
        emit("latte_single_client_request_latency_p50", round(percentile(alone_ms, 50), 2), "ms",
             edits=len(alone_ms), note="one client alone on the same server, after the burst")
        emit("latte_single_client_request_latency_p99", round(percentile(alone_ms, 99), 2), "ms", edits=len(alone_ms))
        store_ms = store_baseline(tmp / "baseline.db", frames, args.clients, args.edits, args.seed)
        emit("latte_store_apply_latency_p50", round(percentile(store_ms, 50), 3), "ms",
             note="Store.apply in-process, same clients and op mix, no HTTP", **common)
        emit("latte_store_apply_latency_p99", round(percentile(store_ms, 99), 3), "ms", **common)

        # kill -9 during a burst of adds, restart on the same database
        db = tmp / "kill.db"
        server = serve(data, db, log_dir=tmp)
        try:
            run = burst(server, frames, args.clients, 100_000, mixed=False, seed=args.seed + 1,
                        kill_after=args.kill_after)
        finally:
            server.kill()
        with serve(data, db, log_dir=tmp) as again:
            after = documents(again, frames)
        check = check_after_kill(after, run)
        bad = bool(check["lost"] or check["wrong"] or check["duplicated"])
        failed |= bad
        emit("latte_kill9_acknowledged_lost", len(check["lost"]), "edits", acknowledged=len(run.acked),
             wrong=len(check["wrong"]), unexplained=len(check["duplicated"]), in_flight=check["in_flight"],
             in_flight_committed=check["in_flight_committed"], examples=check["lost"][:5])

        # a public address without a token
        rc, err, served = public_bind_without_token(data, tmp / "public.db")
        refused = rc != 0 and not served and len(err.strip().splitlines()) == 1
        failed |= not refused
        emit("latte_public_bind_without_token_refused", refused, "bool", exit_code=rc, stderr=err.strip()[:300])

        # traversal: request paths, then frame files symlinked out of the data root
        outside = tmp / "outside"
        outside.mkdir()
        marker = f"LATTE-OUTSIDE-{uuid.uuid4().hex}".encode()
        (outside / "secret.txt").write_bytes(marker)
        with serve(data, tmp / "paths.db", log_dir=tmp) as server:
            rows = probe_traversal(server, frames[0], outside / "secret.txt", marker)
        links = symlinked_source(data, tmp / "linked", tmp / "outside-files")
        try:
            with serve(tmp / "linked", tmp / "linked.db", log_dir=tmp) as server:
                rows += probe_symlinks(server)
        except RuntimeError as e:  # refusing to open a source with links out of its root is a refusal too
            rows.append({"path": "serve (linked source)", "status": None, "leaked": False, "note": str(e)[-200:]})
        leaked = [r for r in rows if r["leaked"]]
        served = [r for r in rows if r["status"] == 200 and not r["path"].startswith(f"/api/frames/{LINKED_FRAME}")]
        failed |= bool(leaked or served)
        emit("latte_traversal_leaks", len(leaked), "requests", probed=len(rows), answered_200=len(served),
             links=sorted(links), statuses=sorted({str(r["status"]) for r in rows}),
             examples=[r["path"] for r in leaked + served][:5])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
