// HTTP wrappers for the LATTE server (API listed in docs/latte.md).
// Every /api request carries the X-Latte-Token header taken from this page's own URL (?token=T).
// Edits carry (session, edit_id, base_version): a network failure is retried with the SAME edit_id (the store is
// idempotent on it, so nothing is applied twice); a 409 (stale) hands the caller the current document.

const TOKEN = new URLSearchParams(window.location.search).get("token");

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail || `HTTP ${status}`);
    this.status = status;  // 0 for a network failure
    this.detail = detail;
    this.body = body;  // the parsed JSON error body (409 holds "document")
  }
}

export function newEditId() {
  // crypto.randomUUID needs a secure context; loopback http is one, a LAN address with a token may not be.
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Api {
  constructor() {
    this.session = null;  // set from /api/info
    this.busy = 0;  // requests in flight
    this.onBusy = () => {};
  }

  /**
   * One request; JSON in and out, or with `as` = "arrayBuffer" | "blob" the body read as that and returned as
   * {data, headers}. The body is read inside the busy window, so `busy` is 0 only when nothing is on the wire.
   */
  async request(method, path, body = undefined, { as = "json", keepalive = false, retries = 2 } = {}) {
    const headers = {};
    if (TOKEN) headers["X-Latte-Token"] = TOKEN;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    this.busy += 1;
    this.onBusy(this.busy);
    try {
      for (let attempt = 0; ; attempt += 1) {
        let res;
        try {
          res = await fetch(path, { method, headers, keepalive,
                                    body: body === undefined ? undefined : JSON.stringify(body) });
        } catch (err) {  // network failure: the request may or may not have arrived; same body (edit_id) again
          if (attempt < retries) { await sleep(300 * (attempt + 1)); continue; }
          throw new ApiError(0, `network error: ${err.message}`, null);
        }
        if (res.ok) {
          if (as === "json") return res.status === 204 ? null : await res.json();
          return { data: await res[as](), headers: res.headers };
        }
        let detail = res.statusText;
        let parsed = null;
        try { parsed = await res.json(); detail = parsed.detail || detail; } catch { /* not JSON */ }
        if (res.status >= 502 && res.status <= 504 && attempt < retries) { await sleep(300 * (attempt + 1)); continue; }
        throw new ApiError(res.status, typeof detail === "string" ? detail : JSON.stringify(detail), parsed);
      }
    } finally {
      this.busy -= 1;
      this.onBusy(this.busy);
    }
  }

  get(path, opts) { return this.request("GET", path, undefined, opts); }
  post(path, body, opts) { return this.request("POST", path, body ?? {}, opts); }

  async info() {
    const info = await this.get("/api/info");
    this.session = info.session;
    return info;
  }

  frame(fid) { return this.get(`/api/frames/${encodeURIComponent(fid)}`); }

  /** The scan: {n, xyzi: Float32Array(N*4), flags: Uint8Array(N)} from N*16 bytes of float32 then N flag bytes. */
  async points(fid) {
    const { data: buf, headers } = await this.get(`/api/frames/${encodeURIComponent(fid)}/points`,
                                                  { as: "arrayBuffer" });
    const n = Number(headers.get("X-Point-Count") ?? buf.byteLength / 17);
    if (!Number.isInteger(n) || buf.byteLength !== n * 17) {
      throw new ApiError(500, `points of ${fid}: ${buf.byteLength} bytes do not hold ${n} points`, null);
    }
    return { n, xyzi: new Float32Array(buf, 0, n * 4), flags: new Uint8Array(buf, n * 16, n) };
  }

  async pointLabels(fid) {
    const { data } = await this.get(`/api/frames/${encodeURIComponent(fid)}/point_labels`, { as: "arrayBuffer" });
    return new Uint8Array(data);
  }

  /** The camera image as an ImageBitmap, or null when the frame has none (404). */
  async image(fid) {
    try {
      const { data } = await this.get(`/api/frames/${encodeURIComponent(fid)}/image`, { as: "blob" });
      return await createImageBitmap(data);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  edit(fid, baseVersion, op, editId = newEditId()) {
    return this.post(`/api/frames/${encodeURIComponent(fid)}/edits`,
                     { base_version: baseVersion, session: this.session, edit_id: editId, op });
  }

  oneClick(fid, xyz, cls, baseVersion) {
    const body = { x: xyz[0], y: xyz[1], z: xyz[2], base_version: baseVersion, session: this.session,
                   edit_id: newEditId() };
    if (cls) body.cls = cls;
    return this.post(`/api/frames/${encodeURIComponent(fid)}/one_click`, body);
  }

  track(fid, fromFid, baseVersion) {
    return this.post(`/api/frames/${encodeURIComponent(fid)}/track`,
                     { from: fromFid, base_version: baseVersion, session: this.session, edit_id: newEditId() });
  }

  fusion(fid, baseVersion) {
    return this.post(`/api/frames/${encodeURIComponent(fid)}/fusion`,
                     { base_version: baseVersion, session: this.session, edit_id: newEditId() });
  }

  copyNext(fid, boxId, count = 1) {
    return this.post(`/api/frames/${encodeURIComponent(fid)}/copy_next`,
                     { box_id: boxId, count, session: this.session, edit_id: newEditId() });
  }

  interpolate(trackId, fromFid, toFid) {
    return this.post("/api/interpolate", { track_id: trackId, from: fromFid, to: toFid, session: this.session,
                                           edit_id: newEditId() });
  }

  undo() { return this.post(`/api/sessions/${this.session}/undo`, {}, { retries: 0 }); }
  redo() { return this.post(`/api/sessions/${this.session}/redo`, {}, { retries: 0 }); }

  log(fid, events, keepalive = false) {
    return this.post("/api/log", { frame_id: fid, session: this.session, events }, { keepalive, retries: 1 });
  }

  exportAll() { return this.post("/api/export", {}, { retries: 0 }); }
}

/**
 * Apply an edit that is re-derived from the current document on a conflict.
 * makeOp(doc) -> op, or null when the edit no longer makes sense on that document (its box is gone...).
 * Returns {document} on success, {document, dropped: true} when a 409 left nothing to re-apply.
 * A 409 means the edit was NOT stored (base_version mismatch), so the re-derived op gets a new edit_id;
 * network retries inside `request` keep the same one.
 */
export async function editWithRetry(api, fid, doc, makeOp, tries = 4) {
  let current = doc;
  for (let i = 0; i < tries; i += 1) {
    const op = makeOp(current);
    if (op === null) return { document: current, dropped: true };
    try {
      return await api.edit(fid, current.version, op);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.body && err.body.document) {
        current = err.body.document;
        continue;
      }
      throw err;
    }
  }
  throw new ApiError(409, "the frame kept changing under this edit (another annotator?)", { document: current });
}
