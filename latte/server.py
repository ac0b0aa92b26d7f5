"""The HTTP layer of LATTE: FastAPI routes that parse a request, call latte.annotator.Annotator, map its errors.

No route builds a path from a request except the static files, which resolve through `static_file` (plain name
components only, no symlinks, inside latte/static/); frame ids only ever index the source's own list of frames.
Nothing here runs a shell command. The HTTP API is listed in docs/latte.md.

Errors are JSON {"detail": "..."}: 404 unknown frame or nothing to undo, 409 stale write (with the current document),
422 a malformed body (naming the field) or an edit that does not apply, 403 a missing or wrong token.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from latte.annotator import Annotator, NothingToDo, UnknownFrame
from latte.boxes import EditError
from latte.store import StaleWrite
from squeeze.errors import DataError

log = logging.getLogger("latte.server")

STATIC_ROOT = Path(__file__).resolve().parent / "static"
TOKEN_HEADER = "X-Latte-Token"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # one plain file-name component; no leading dot
_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
                ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".ico": "image/x-icon"}
_NAME = r"^[A-Za-z0-9_-]{1,64}$"


# ------------------------------------------------------------------------------------------------ static files
def static_file(rel: str, root: Path = STATIC_ROOT) -> Path | None:
    """The file `rel` names under `root`, or None when it is not a plain relative path to a regular file there.

    `rel` arrives URL-decoded once. Refused: empty or absolute paths, backslashes, NUL, '.' / '..' or any
    component that is not a plain name (so "%2e%2e" decoded twice is refused too), hidden files, and any
    symlink on the way (a link inside the package could point anywhere). The resolved path is checked to be
    under the resolved root as a last guard.
    """
    if not rel or len(rel) > 512 or rel.startswith("/") or "\\" in rel or "\0" in rel:
        return None
    parts = rel.split("/")
    if not all(_PART.match(p) for p in parts):
        return None
    path = root
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    if not stat.S_ISREG(mode):
        return None
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        return None
    return path


# ------------------------------------------------------------------------------------------------ request bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EditRequest(_Body):
    base_version: int = Field(ge=0)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)
    op: dict[str, Any]


class OneClickRequest(_Body):
    x: float
    y: float
    z: float
    cls: str | None = None
    base_version: int = Field(ge=0)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)


class TrackRequest(_Body):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    from_: str = Field(alias="from", min_length=1, max_length=256)
    base_version: int = Field(ge=0)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)


class FusionRequest(_Body):
    base_version: int = Field(ge=0)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)


class CopyRequest(_Body):
    box_id: str = Field(pattern=_NAME)
    count: int = Field(ge=1, le=1000)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)


class InterpolateRequest(_Body):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    track_id: int = Field(ge=0)
    from_: str = Field(alias="from", min_length=1, max_length=256)
    to: str = Field(min_length=1, max_length=256)
    session: str = Field(pattern=_NAME)
    edit_id: str = Field(pattern=_NAME)


class LogRequest(_Body):
    frame_id: str = Field(min_length=1, max_length=256)
    session: str = Field(pattern=_NAME)
    events: list[dict[str, Any]] = Field(max_length=10000)


def _validation_detail(exc: RequestValidationError) -> str:
    """'body.base_version: Input should be a valid integer; ...' — the fields at fault, one clause each."""
    clauses = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        clauses.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(clauses) or "invalid request"


# ------------------------------------------------------------------------------------------------ middleware
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _host_name(value: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'Example.org' -> 'example.org'."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Guard:
    """Pure ASGI middleware in front of every route.

    - With a token, /api/* needs the X-Latte-Token header (hmac.compare_digest: no timing leak).
    - Without one (a loopback server), the Host header must name a loopback address: a web page whose domain is
      re-bound to 127.0.0.1 (DNS rebinding) cannot read or edit the annotations through the visitor's browser.
    - /api/* requests from another origin (an Origin header naming another host) are refused, and POST bodies
      must be application/json: a cross-site page cannot submit an edit as a "simple" request that skips CORS.
    - Every response carries Server-Timing (the server's own time, ms), so clients and benches can tell server
      work from transfer.
    """

    def __init__(self, app: Any, token: str | None, allowed_hosts: frozenset[str] = LOOPBACK_HOSTS):
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts

    @staticmethod
    async def _refuse(send: Any, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _problem(self, scope: dict) -> tuple[int, str] | None:
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        host = _host_name(headers.get(b"host", b"").decode("latin-1"))
        if self.token is None and host not in self.allowed_hosts and not _is_loopback_ip(host):
            return 403, f"host {host[:80]!r} refused: this server answers loopback addresses only"
        if not scope["path"].startswith("/api/"):
            return None
        if self.token is not None and not hmac.compare_digest(headers.get(b"x-latte-token", b""), self.token):
            return 403, f"missing or wrong {TOKEN_HEADER} header"
        origin = headers.get(b"origin")
        authority = headers.get(b"host", b"").strip().lower()
        if origin is not None and origin.split(b"://", 1)[-1].rstrip(b"/").lower() != authority:
            return 403, "cross-origin request refused"
        if scope["method"] == "POST":
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                return 415, "expected a JSON body (Content-Type: application/json)"
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._problem(scope)
        if problem is not None:
            await self._refuse(send, *problem)
            return
        t0 = time.perf_counter()

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        await self.app(scope, receive, timed_send)


# ------------------------------------------------------------------------------------------------ the app
def create_app(annotator: Annotator, token: str | None = None, static_root: Path = STATIC_ROOT,
               allowed_hosts: frozenset[str] = LOOPBACK_HOSTS) -> FastAPI:
    """The FastAPI app over `annotator`. With `token`, every /api/* request needs the X-Latte-Token header; without
    one, only requests whose Host is one of `allowed_hosts` (loopback names) are answered (see _Guard)."""
    app = FastAPI(title="LATTE", docs_url=None, redoc_url=None, openapi_url=None)
    ann = annotator

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    @app.exception_handler(UnknownFrame)
    async def _unknown(request: Request, exc: UnknownFrame) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(EditError)
    async def _edit(request: Request, exc: EditError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NothingToDo)
    async def _nothing(request: Request, exc: NothingToDo) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(StaleWrite)
    async def _stale(request: Request, exc: StaleWrite) -> JSONResponse:
        return JSONResponse({"detail": "stale", "document": exc.current}, status_code=409)

    @app.exception_handler(DataError)
    async def _data(request: Request, exc: DataError) -> JSONResponse:
        log.error("data error: %s", exc)  # the data on the server is at fault, not the request
        return JSONResponse({"detail": str(exc)}, status_code=500)

    def not_found(detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=404)

    # ---- the client
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return static("index.html")

    @app.get("/static/{rel:path}", include_in_schema=False)
    def static(rel: str) -> Response:
        path = static_file(rel, static_root)
        if path is None:
            return not_found("no such file")
        media = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    # ---- frames (JSONResponse directly: FastAPI's jsonable_encoder walks every box of a document, ~10x slower
    # than json.dumps for a few hundred boxes; every value here is plain JSON already)
    @app.get("/api/info")
    def info() -> Response:
        return JSONResponse(ann.info())

    @app.get("/api/frames/{fid}")
    def frame(fid: str) -> Response:
        return JSONResponse(ann.frame(fid))

    @app.get("/api/frames/{fid}/points")
    def points(fid: str) -> Response:
        n, data = ann.points_bytes(fid)
        return Response(data, media_type="application/octet-stream", headers={"X-Point-Count": str(n)})

    @app.get("/api/frames/{fid}/point_labels")
    def point_labels(fid: str) -> Response:
        labels = ann.point_labels(fid)
        return Response(labels.tobytes(), media_type="application/octet-stream",
                        headers={"X-Point-Count": str(len(labels))})

    @app.get("/api/frames/{fid}/image")
    def image(fid: str) -> Response:
        try:
            return Response(ann.image_jpeg(fid), media_type="image/jpeg")
        except NothingToDo as e:
            return not_found(str(e))

    # ---- edits
    @app.post("/api/frames/{fid}/edits")
    def edit(fid: str, body: EditRequest) -> Response:
        return JSONResponse({"document": ann.edit(fid, body.base_version, body.op, body.session, body.edit_id)})

    @app.post("/api/frames/{fid}/one_click")
    def one_click(fid: str, body: OneClickRequest) -> Response:
        doc, box, n = ann.one_click(fid, (body.x, body.y, body.z), body.cls, body.base_version, body.session,
                                    body.edit_id)
        return JSONResponse({"document": doc, "box": box, "n_points": n})

    @app.post("/api/frames/{fid}/track")
    def track(fid: str, body: TrackRequest) -> Response:
        doc, boxes = ann.track(fid, body.from_, body.base_version, body.session, body.edit_id)
        return JSONResponse({"document": doc, "boxes": boxes})

    @app.post("/api/frames/{fid}/fusion")
    def fusion(fid: str, body: FusionRequest) -> Response:
        doc, boxes = ann.fusion(fid, body.base_version, body.session, body.edit_id)
        return JSONResponse({"document": doc, "boxes": boxes})

    @app.post("/api/frames/{fid}/copy_next")
    def copy_next(fid: str, body: CopyRequest) -> Response:
        return JSONResponse({"documents": ann.copy_next(fid, body.box_id, body.count, body.session, body.edit_id)})

    @app.post("/api/interpolate")
    def interpolate(body: InterpolateRequest) -> Response:
        docs = ann.interpolate(body.track_id, body.from_, body.to, body.session, body.edit_id)
        return JSONResponse({"documents": docs})

    @app.post("/api/sessions/{session}/undo")
    def undo(session: str) -> Response:
        try:
            return JSONResponse({"document": ann.undo(session)})
        except NothingToDo as e:
            return not_found(str(e))

    @app.post("/api/sessions/{session}/redo")
    def redo(session: str) -> Response:
        try:
            return JSONResponse({"document": ann.redo(session)})
        except NothingToDo as e:
            return not_found(str(e))

    @app.post("/api/log")
    def log_events(body: LogRequest) -> Response:
        ann.log(body.frame_id, body.session, body.events)
        return JSONResponse({"ok": True})

    @app.post("/api/export")
    def export(body: dict[str, Any] | None = Body(default=None)) -> Response:  # noqa: B008 - FastAPI's idiom
        if body:
            raise EditError("export takes no parameters: the export folder is fixed when the server starts")
        return JSONResponse(ann.export())

    app.add_middleware(_Guard, token=token, allowed_hosts=frozenset(allowed_hosts))
    return app
