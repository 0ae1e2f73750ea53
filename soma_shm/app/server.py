"""One local HTTP server for the page, image blobs, the API and server-sent events.

Routes (all on ``127.0.0.1``):

``GET  /?token=T``            the page (``index.html``)
``GET  /static/<file>``       the page's ES modules and CSS (public code, no token needed);
                              ``colormap.js`` is made from :mod:`soma_shm.imageio`'s table
``GET  /blob/<id>``           a raw uint8 image; headers ``X-Width``, ``X-Height``
``GET  /audio?start&frames&speed[&origin]``  a chunk of audio: original then resynthesis, planar float32
                              (see :mod:`soma_shm.app.playback`); headers ``X-Sample-Rate``, ...
``POST /api/<method>``        JSON object in, ``{"ok": true, "result": ...}`` or
                              ``{"ok": false, "error": {type, message}}`` (HTTP 400) out
``POST /api/upload?name=N``   raw file bytes (a dropped or picked file) -> opened
``GET  /events``              ``text/event-stream`` of backend events

Every route but the static files needs the per-run token: header ``X-Soma-Token`` or query
``token`` (EventSource cannot set headers). The ``Host`` header must name this server, so a web
page elsewhere cannot reach it through DNS rebinding.

Connections: an accepted connection holds no thread until it has sent something; one thread of
a bounded pool (:data:`MAX_HANDLERS`) then serves one request and gives the connection back to
the watcher, which closes it after :data:`IDLE_TIMEOUT_S` without a request (at most
:data:`MAX_IDLE` wait; the oldest go first). A request must arrive whole within
:data:`REQUEST_TIMEOUT_S`. Event streams hold a thread each (at most :data:`MAX_STREAMS`). Any
path answers: unknown or malformed ones with 404/400 and a JSON message, never a crash.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
import queue
import re
import secrets
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import ParameterError
from .backend import AppBackend, error_payload
from .events import to_json

__all__ = ["AppServer", "STATIC_DIR"]

log = logging.getLogger("soma_shm.app")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_JSON_BODY = 64 << 20
MAX_UPLOAD = 8 << 30
SSE_KEEPALIVE_S = 10.0
MAX_HANDLERS = 32  # threads serving requests (event streams included)
MAX_STREAMS = 8  # event streams at once (each holds a thread)
MAX_IDLE = 512  # connections waiting for a request; beyond, the oldest are closed
IDLE_TIMEOUT_S = 30.0  # a connection without a request for this long is closed
REQUEST_TIMEOUT_S = 10.0  # a started request must arrive whole within this (per read)
STATIC_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: every write goes out at once. With Nagle's algorithm the body written after
    # the headers (or an event after the last one) waits for the client's delayed ACK.
    disable_nagle_algorithm = True
    timeout = REQUEST_TIMEOUT_S
    default_request_version = "HTTP/1.1"  # answer malformed requests with a status line, never HTTP/0.9

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors http.server detects itself (bad request line, headers, method): JSON like ours."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        reasons = {400: "the request could not be read", 404: "nothing is here",
                   414: "the address is too long", 431: "the request's headers are too large",
                   501: "this server answers GET, HEAD and POST only"}
        body = json.dumps({"ok": False, "error": {"type": phrase.title().replace(" ", ""),
                                                   "message": reasons.get(code, phrase.lower())}}).encode()
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def handle(self) -> None:
        # One request per turn: a kept-alive connection goes back to the server's watcher and
        # holds no thread while idle.
        self.close_connection = True
        self.handle_one_request()
        # Requests the client sent back to back (pipelining) may already sit in this handler's
        # read buffer, where the watcher cannot see them: serve them before giving the socket back.
        while not self.close_connection and self._buffered():
            self.handle_one_request()

    def _buffered(self) -> bool:
        """True if the next request has (partly) arrived already; never waits for one."""
        self.connection.setblocking(False)
        try:
            return bool(self.rfile.peek(1))
        except (BlockingIOError, OSError, ValueError):
            return False
        finally:
            self.connection.settimeout(self.timeout)

    def _safely(self, route) -> None:
        try:
            route()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("http %s %r failed", self.command, self.path[:200])
            self.close_connection = True
            try:
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"ok": False, "error": {
                    "type": "InternalError", "message": "the app could not answer this request; details are in its log"}})
            except OSError:
                pass

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
        self._send(status, to_json(obj), "application/json")

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
    def _not_found(self, what: str) -> None:
        shown = what if len(what) <= 80 and what.isprintable() else what[:60].encode("unicode_escape").decode() + "…"
        self._json(HTTPStatus.NOT_FOUND, {"ok": False, "error": {"type": "NotFound", "message": f"nothing at {shown}"}})

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._safely(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._safely(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._safely(self._post)

    def _get(self) -> None:
        route = urlsplit(self.path).path
        if route.startswith("/static/"):
            return self._static(route[len("/static/"):])
        if self._deny():
            return
        if route in ("/", "/index.html"):
            return self._static("index.html")
        if route.startswith("/blob/"):
            return self._blob(route[len("/blob/"):])
        if route == "/audio":
            return self._audio()
        if route == "/events":
            return self._events()
        self._not_found(route)

    def _post(self) -> None:
        route = urlsplit(self.path).path
        if self._deny():
            return
        if not route.startswith("/api/"):
            self.close_connection = True
            return self._not_found(route)
        method = route[len("/api/"):]
        backend = self.server.backend
        try:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ParameterError("the request's Content-Length is not a number") from None
            if length < 0:
                raise ParameterError("the request's Content-Length is negative")
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
                log.exception("api %s failed", method[:60])
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": backend.describe_error(exc, method)})
        self._json(HTTPStatus.OK, {"ok": True, "result": result})

    def _static(self, name: str) -> None:
        if name == "colormap.js":  # the PNG files' own table, so the page cannot drift from it
            from ..imageio import colormap_module

            return self._send(HTTPStatus.OK, colormap_module().encode(), "text/javascript; charset=utf-8")
        # Only the page's own files, by plain name: no decoding, no folders, no links followed.
        target = STATIC_DIR / name if STATIC_NAME.fullmatch(name) else None
        if target is None or name not in self.server.static_files:
            return self._not_found(f"/static/{name}")
        ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(
            target.suffix, mimetypes.guess_type(target.name)[0] or "application/octet-stream")
        self._send(HTTPStatus.OK, target.read_bytes(), ctype + "; charset=utf-8" if ctype.startswith("text") else ctype)

    def _blob(self, key: str) -> None:
        try:
            blob = self.server.backend.blobs.get(int(key))
        except ValueError:
            blob = None
        if blob is None:
            return self._not_found(f"image {key} (a newer one replaced it)")
        data, w, h = blob
        self._send(HTTPStatus.OK, data, "application/octet-stream",
                   {"X-Width": str(w), "X-Height": str(h), "Access-Control-Expose-Headers": "X-Width, X-Height"})

    def _audio(self) -> None:
        q = self._query()
        try:
            try:
                start, frames = int(q.get("start", "0")), int(q.get("frames", "0"))
                speed = float(q.get("speed", "1"))
                origin = int(q["origin"]) if "origin" in q else None
            except ValueError:
                raise ParameterError(f"start={q.get('start')!r}, frames={q.get('frames')!r} and speed={q.get('speed')!r} "
                                     "must be numbers") from None
            data, headers = self.server.backend.playback.chunk(start, frames, speed, origin)
        except Exception as exc:
            if not type(exc).__module__.startswith("soma_shm"):
                log.exception("audio chunk failed")
            return self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "error": error_payload(exc)})
        headers["Access-Control-Expose-Headers"] = ", ".join(headers)
        self._send(HTTPStatus.OK, data, "application/octet-stream", headers)

    def _events(self) -> None:
        if not self.server.streams.acquire(blocking=False):
            self.close_connection = True
            return self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False, "error": {
                "type": "Busy", "message": f"at most {MAX_STREAMS} event streams at once; close another page"}})
        bus = self.server.backend.events
        # Subscribed before the answer: a page that fetches the state once its stream is open
        # (static/api.js) misses no event published in between.
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
                self.wfile.write(b"data: " + to_json(event) + b"\n\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        finally:
            bus.unsubscribe(q)
            self.server.streams.release()


class _Server(HTTPServer):
    """HTTPServer whose accepted connections wait in a selector (no thread) until they send a
    request; requests are served by a bounded thread pool; idle connections time out."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, backend: AppBackend, token: str):
        super().__init__(addr, _Handler)
        self.backend = backend
        self.token = token
        self.stopping = threading.Event()
        self.streams = threading.BoundedSemaphore(MAX_STREAMS)
        self.static_files = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())
        self._pool = ThreadPoolExecutor(MAX_HANDLERS, thread_name_prefix="soma-app-http")
        self._incoming: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._watcher = threading.Thread(target=self._watch, name="soma-app-conns", daemon=True)
        self._watcher.start()

    # Called by serve_forever for each accepted connection: park it until it has data.
    def process_request(self, request, client_address) -> None:
        self._park(request, client_address)

    def _park(self, sock, addr) -> None:
        self._incoming.put((sock, addr))
        try:
            self._wake_w.send(b"x")
        except OSError:  # stopping
            pass

    def _watch(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ)
        waiting: dict = {}  # socket -> (address, parked at)
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.fileobj is self._wake_r:
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                        continue
                    sock = key.fileobj
                    sel.unregister(sock)
                    addr, _ = waiting.pop(sock)
                    self._pool.submit(self._serve, sock, addr)
                while True:
                    try:
                        sock, addr = self._incoming.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        sel.register(sock, selectors.EVENT_READ)
                    except (ValueError, OSError):  # closed meanwhile
                        self.shutdown_request(sock)
                        continue
                    waiting[sock] = (addr, time.monotonic())
                now = time.monotonic()
                stale = [s for s, (_, t) in waiting.items() if now - t > IDLE_TIMEOUT_S]
                if len(waiting) - len(stale) > MAX_IDLE:
                    rest = sorted((t, id(s), s) for s, (_, t) in waiting.items() if s not in stale)
                    stale += [s for _, _, s in rest[: len(rest) - MAX_IDLE]]
                for s in stale:
                    sel.unregister(s)
                    del waiting[s]
                    self.shutdown_request(s)
        finally:
            for s in list(waiting):
                self.shutdown_request(s)
            sel.close()

    def _serve(self, sock, addr) -> None:
        keep = False
        try:
            handler = self.RequestHandlerClass(sock, addr, self)
            keep = not handler.close_connection and not self.stopping.is_set()
        except Exception:
            log.debug("connection from %s failed", addr, exc_info=True)
        if keep:
            self._park(sock, addr)
        else:
            self.shutdown_request(sock)

    def server_close(self) -> None:
        if not hasattr(self, "_watcher"):  # binding failed inside HTTPServer.__init__
            return super().server_close()
        self.stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._watcher.join(timeout=5)
        super().server_close()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for s in (self._wake_r, self._wake_w):
            s.close()


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
