"""LATTE over HTTP against a real `squeeze latte serve` process: concurrent clients lose and duplicate nothing,
kill -9 loses no acknowledged edit, a public bind needs a token, traversal is refused.

The harness (server process, clients, checks) is bench/bench_latte_reliability.py's; the bench runs the full
8 x 200 burst, these tests a small one (8 x 25) to keep CI fast.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from latte.store import Store

_BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_latte_reliability.py"
_spec = importlib.util.spec_from_file_location("bench_latte_reliability", _BENCH)
rel = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rel  # dataclasses look their module up by name
_spec.loader.exec_module(rel)


@pytest.fixture(scope="session")
def sim_sequence(tmp_path_factory) -> Path:
    """3 frames of a simulated sequence (seed 1), shared by the tests of this file."""
    return rel.simulate(tmp_path_factory.mktemp("latte_rel") / "sim", frames=3, seed=1)


@pytest.fixture(scope="session")
def frames(sim_sequence) -> list[str]:
    return ["000000", "000001", "000002"]


@pytest.fixture(scope="module")
def server(sim_sequence, tmp_path_factory):
    """One server on the sequence for the tests that do not kill it (each burst has its own id prefix)."""
    tmp = tmp_path_factory.mktemp("latte_rel_server")
    with rel.serve(sim_sequence, tmp / "shared.db", log_dir=tmp) as running:
        running.db = tmp / "shared.db"
        yield running


def test_concurrent_clients_lose_and_duplicate_nothing(server, frames):
    assert httpx.get(server.url + "/api/info").json()["frames"] == frames
    before = rel.documents(server, frames)
    run = rel.burst(server, frames, clients=8, edits=25, mixed=True, seed=3, prefix="p")
    after = rel.documents(server, frames)
    assert run.errors == []
    assert len(run.acked) == 200 and len({a.edit_id for a in run.acked}) == 200
    assert sum(r.resent for r in run.results) == 16  # every 10th edit sent twice
    kinds = {a.op["op"] for a in run.acked}
    assert kinds == {"add", "update", "delete"}
    assert sum(r.stale for r in run.results) > 0  # the clients did collide
    check = rel.check_burst(before, after, run)
    assert check == {"lost": [], "duplicated": [], "wrong": []}
    # the documents hold what the clients' own models say, and the versions count the acknowledged edits
    total_boxes = sum(len(r.own[f]) for r in run.results for f in frames)
    assert sum(len(d["boxes"]) - len(before[d["frame_id"]]["boxes"]) for d in after.values()) == total_boxes
    assert sum(d["version"] - before[d["frame_id"]]["version"] for d in after.values()) == 200
    # the database holds each acknowledged edit once (read beside the running server: WAL readers don't block)
    with Store(server.db) as store:
        stored = [e["edit_id"] for e in store.edits() if e["edit_id"].startswith("p")]
    assert sorted(stored) == sorted(a.edit_id for a in run.acked)


def test_the_checks_catch_a_lost_and_a_duplicated_edit(server, frames):
    """The burst check itself: an acknowledged box removed behind the clients' back is lost, an edit applied a
    second time (a replayed update under a new edit id) is a duplicate."""
    before = rel.documents(server, frames)
    run = rel.burst(server, frames, clients=2, edits=10, mixed=False, seed=5, prefix="q")
    victim, again = run.acked[0], run.acked[1]
    with httpx.Client(base_url=server.url) as http:
        for ack, op, edit_id in ((victim, {"op": "delete", "id": victim.op["box"]["id"]}, "x1"),
                                 (again, {"op": "update", "box": again.op["box"]}, "x2")):
            doc = http.get(f"/api/frames/{ack.frame_id}").json()["document"]
            r = http.post(f"/api/frames/{ack.frame_id}/edits",
                          json={"base_version": doc["version"], "session": "intruder", "edit_id": edit_id, "op": op})
            assert r.status_code == 200
    after = rel.documents(server, frames)
    check = rel.check_burst(before, after, run)
    assert f"{victim.frame_id}/{victim.op['box']['id']}" in check["lost"]
    assert any("more than" in d for d in check["duplicated"])


def test_kill_9_during_a_burst_loses_no_acknowledged_edit(sim_sequence, frames, tmp_path):
    db = tmp_path / "k.db"
    server = rel.serve(sim_sequence, db, log_dir=tmp_path)
    try:
        run = rel.burst(server, frames, clients=8, edits=100_000, mixed=False, seed=7, kill_after=60)
    finally:
        server.kill()
    assert server.proc.returncode == -signal.SIGKILL
    assert len(run.acked) >= 60
    assert sum(r.in_flight is not None for r in run.results) >= 1  # it died under load, with edits in flight
    with rel.serve(sim_sequence, db, log_dir=tmp_path) as again:
        after = rel.documents(again, frames)
        # the restarted server goes on from the stored versions
        with httpx.Client(base_url=again.url) as http:
            doc = after[frames[0]]
            r = http.post(f"/api/frames/{frames[0]}/edits",
                          json={"base_version": doc["version"], "session": "s", "edit_id": "after-restart",
                                "op": {"op": "status", "status": "done"}})
            assert r.status_code == 200 and r.json()["document"]["version"] == doc["version"] + 1
    check = rel.check_after_kill(after, run)
    assert check["lost"] == [] and check["wrong"] == [] and check["duplicated"] == []
    with Store(db) as store:
        stored = {e["edit_id"] for e in store.edits()}
    assert {a.edit_id for a in run.acked} <= stored


def test_public_bind_without_token_refuses_to_start(sim_sequence, tmp_path):
    rc, err, served = rel.public_bind_without_token(sim_sequence, tmp_path / "p.db")
    assert rc != 0 and not served
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "token" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "p.db").exists()  # refused before anything was opened


def test_public_bind_with_token_needs_it_on_every_api_call(sim_sequence, tmp_path):
    token = uuid.uuid4().hex
    with rel.serve(sim_sequence, tmp_path / "t.db", "--host", "0.0.0.0", token=token, log_dir=tmp_path) as server:
        assert httpx.get(server.url + "/api/info").status_code == 403
        assert httpx.get(server.url + "/api/info", headers={"X-Latte-Token": "wrong"}).status_code == 403
        assert httpx.get(server.url + "/api/info", headers=server.headers).status_code == 200
        assert httpx.get(server.url + "/").status_code == 200  # the page itself holds no data


def test_traversal_in_request_paths_is_refused(server, frames, tmp_path):
    outside = tmp_path / "secret.txt"
    marker = f"LATTE-OUTSIDE-{uuid.uuid4().hex}".encode()
    outside.write_bytes(marker)
    rows = rel.probe_traversal(server, frames[0], outside, marker)
    assert len(rows) > 60
    assert [r["path"] for r in rows if r["leaked"]] == []
    assert [(r["path"], r["status"]) for r in rows if r["status"] == 200] == []
    # plain requests still work
    assert rel.raw_get(server, f"/api/frames/{frames[0]}")[0] == 200
    assert rel.raw_get(server, "/static/index.html")[0] == 200


def test_frame_files_symlinked_out_of_the_data_root_are_not_served(sim_sequence, tmp_path):
    links = rel.symlinked_source(sim_sequence, tmp_path / "linked", tmp_path / "outside")
    assert sorted(links) == [f"training/{sub}/000001{ext}" for sub, ext in
                             (("calib", ".txt"), ("image_2", ".png"), ("label_2", ".txt"), ("velodyne", ".bin"))]
    try:
        server = rel.serve(tmp_path / "linked", tmp_path / "l.db", log_dir=tmp_path)
    except RuntimeError:
        return  # refusing the whole source is a refusal too
    with server:
        rows = rel.probe_symlinks(server)
        assert [r["path"] for r in rows if r["leaked"]] == []
        assert rel.raw_get(server, "/api/frames/000000/points")[0] == 200  # the frames inside the root are served


def test_static_symlink_out_of_the_root_is_refused(tmp_path):
    """A symlink inside the static root (the package's client files) is never followed."""
    from fastapi.testclient import TestClient

    from latte.server import create_app

    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<html>ok</html>")
    secret = tmp_path / "secret.txt"
    secret.write_text("LATTE-SECRET")
    (root / "leak.txt").symlink_to(secret)
    (root / "js" / "dir").symlink_to(tmp_path)
    client = TestClient(create_app(None, static_root=root), base_url="http://127.0.0.1")  # a loopback Host
    assert client.get("/static/index.html").text == "<html>ok</html>"
    for path in ("/static/leak.txt", "/static/js/dir/secret.txt", "/static/js/dir/static/index.html"):
        r = client.get(path)
        assert r.status_code == 404 and "LATTE-SECRET" not in r.text, path
