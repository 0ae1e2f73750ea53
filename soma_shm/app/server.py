"""One local HTTP server for the page, image blobs, the API and server-sent events.

Routes (all on ``127.0.0.1``):

``GET  /?token=T``            the page (``index.html``)
``GET  /static/<file>``       the page's ES modules and CSS (public code, no token needed)
``GET  /blob/<id>``           a raw uint8 image; headers ``X-Width``, ``X-Height``
``POST /api/<method>``        JSON object in, ``{"ok": true, "result": ...}`` or
                              ``{"ok": false, "error": {type, message}}`` (HTTP 400) out
``POST /api/upload?name=N``   raw file bytes (a dropped or picked file) -> opened
``GET  /events``              ``text/event-stream`` of backend events

Every route but the static files needs the per-run token: header ``X-Soma-Token`` or query
``token`` (EventSource cannot set headers). The ``Host`` header must name this server, so a web
page elsewhere cannot reach it through DNS rebinding.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import queue
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ParameterError
from .backend import AppBackend, error_payload

__all__ = ["AppServer", "STATIC_DIR"]

log = logging.getLogger("soma_shm.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_JSON_BODY = 64 << 20
MAX_UPLOAD = 8 << 30
SSE_KEEPALIVE_S = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: every write goes out at once. With Nagle's algorithm the body written after
    # the headers (or an event after the last one) waits for the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet: route through logging
        log.debug("http %s " + fmt, self.client_address[0], *args)

    # ------------------------------------------------------------------------- helpers
    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        return host in (f"127.0.0.1:{port}", f"localhost:{port}")

    def _token_ok(self) -> bool:
        given = self.headers.get("X-Soma-Token") or self._query().get("token") or ""
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _deny(self) -> bool:
        if not self._host_ok():
            self._json(HTTPStatus.FORBIDDEN, {"ok": False, "error": {"type": "Forbidden", "message": "bad Host header"}})
            return True
        if not self._token_ok():
            self._json(HTTPStatus.UNAUTHORIZED, {"ok": False, "error": {
                "type": "Unauthorized", "message": "missing or wrong token; use the URL printed at start-up"}})
            return True
        return False

    # -------------------------------------------------------------------------- routes
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        route = urlsplit(self.path).path
        if route.startswith("/static/"):
            return self._static(route[len("/static/"):])
        if self._deny():
            return
        if route in ("/", "/index.html"):
            return self._static("index.html")
        if route.startswith("/blob/"):
            return self._blob(route[len("/blob/"):])
        if route == "/events":
            return self._events()
        self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": {"type": "NotFound", "message": f"no route {route}"}})

    def do_POST(self) -> None:  # noqa: N802
        route = urlsplit(self.path).path
        if self._deny():
            return
        if not route.startswith("/api/"):
            return self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": {"type": "NotFound", "message": f"no route {route}"}})
        method = route[len("/api/"):]
        backend = self.server.backend
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if method == "upload":
                if length > MAX_UPLOAD:
                    raise ParameterError(f"the file is too large to upload ({length} bytes)")
                path = backend.save_upload(self._query().get("name", "upload"), self.rfile, length)
                result = backend.open_file(path)
            else:
                if length > MAX_JSON_BODY:
                    raise ParameterError(f"request body of {length} bytes is too large")
                raw = self.rfile.read(length) if length else b""
                try:
                    params = json.loads(raw) if raw.strip() else {}
                except json.JSONDecodeError as exc:
                    raise ParameterError(f"the body of {method} is not valid JSON ({exc})") from None
                result = backend.call(method, params)
        except Exception as exc:
            self.close_connection = True  # the body may be partly unread: do not reuse the connection
            if not isinstance(exc, ParameterError) and not type(exc).__module__.startswith("soma_shm"):
                log.exception("api %s failed", method)
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": error_payload(exc)})
        self._json(HTTPStatus.OK, {"ok": True, "result": result})

    def _static(self, name: str) -> None:
        target = (STATIC_DIR / name).resolve()
        if STATIC_DIR not in target.parents or not target.is_file():
            return self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": {"type": "NotFound", "message": name}})
        ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(
            target.suffix, mimetypes.guess_type(target.name)[0] or "application/octet-stream")
        self._send(HTTPStatus.OK, target.read_bytes(), ctype + "; charset=utf-8" if ctype.startswith("text") else ctype)

    def _blob(self, key: str) -> None:
        try:
            blob = self.server.backend.blobs.get(int(key))
        except ValueError:
            blob = None
        if blob is None:
            return self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": {
                "type": "NotFound", "message": f"image {key} is gone (a newer one replaced it)"}})
        data, w, h = blob
        self._send(HTTPStatus.OK, data, "application/octet-stream",
                   {"X-Width": str(w), "X-Height": str(h), "Access-Control-Expose-Headers": "X-Width, X-Height"})

    def _events(self) -> None:
        bus = self.server.backend.events
        q = bus.subscribe()
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not self.server.stopping.is_set():
                try:
                    event = q.get(timeout=SSE_KEEPALIVE_S if not self.server.stopping.is_set() else 0)
                except queue.Empty:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                if event is None:
                    break
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            bus.unsubscribe(q)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, backend: AppBackend, token: str):
        super().__init__(addr, _Handler)
        self.backend = backend
        self.token = token
        self.stopping = threading.Event()


class AppServer:
    """The local server of one app run.

    Parameters
    ----------
    backend : AppBackend
        The backend whose API, blobs and events are served.
    port : int
        TCP port on 127.0.0.1; 0 picks a free one.
    token : str, optional
        The per-run token (a fresh random one by default).
    """

    def __init__(self, backend: AppBackend, port: int = 0, token: str | None = None) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ParameterError(f"port={port!r} must be an integer in 0..65535 (0 = any free port)")
        self.backend = backend
        self.token = token or secrets.token_urlsafe(24)
        try:
            self._server = _Server(("127.0.0.1", port), backend, self.token)
        except OSError as exc:
            raise ParameterError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port") from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The page's address, token included."""
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def start(self) -> "AppServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="soma-app-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: end event streams, close the socket. Safe twice."""
        self._server.stopping.set()
        self.backend.events.publish(None)  # type: ignore[arg-type]  # wakes every SSE stream
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "AppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
