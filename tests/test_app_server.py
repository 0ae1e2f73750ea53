"""The app's HTTP server under abuse, on a real socket on 127.0.0.1: half-open and idle
connections, slow requests, malformed paths, and every API method given bad input."""

from __future__ import annotations

import http.client
import inspect
import json
import math
import socket
import time

import pytest
import soundfile as sf

from soma_shm.app import server as server_module
from soma_shm.app.backend import API_METHODS, AppBackend
from soma_shm.app.server import AppServer

from .conftest import make_audio

FS = 48_000
CLASS_NAMES = ("TypeError", "ValueError", "KeyError", "AttributeError", "IndexError", "Traceback", "internal error",
               "NoneType", "soma_shm_app_")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    wav = folder / "tone.wav"
    sf.write(wav, make_audio(3.0, FS, freqs=(440.0,), amp=0.3), FS)
    backend = AppBackend(engine_options={"spares": False}, autosave=False)
    server = AppServer(backend).start()
    got = []
    backend.events.listen(got.append)
    backend.open_file(str(wav))
    deadline = time.monotonic() + 120
    while not any(e["type"] == "opened" for e in got) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.state()["file"] is not None
    yield backend, server, folder
    server.stop()
    backend.close()


def get(server, path: str, timeout: float = 10.0, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def raw(server, request: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
        return out


def test_half_open_connections_hold_no_thread(served):
    _, server, _ = served
    idle = []
    try:
        for _ in range(200):  # connect, send nothing
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        # A normal request is still answered at once (a bounded wait, not a timing claim).
        status, body = get(server, "/static/style.css", timeout=5)
        assert status == 200 and body
        slow = []
        for _ in range(20):  # started requests that never finish hold a thread each, until their timeout
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)
        status, _ = get(server, "/static/main.js", timeout=5)
        assert status == 200
        for s in slow:
            s.close()
    finally:
        for s in idle:
            s.close()
    status, _ = get(server, "/static/api.js", timeout=5)
    assert status == 200


def test_idle_connections_are_closed(served, monkeypatch):
    _, server, _ = served
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT_S", 0.5)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        assert s.recv(10) == b""  # the server closed it
    finally:
        s.close()


def test_keep_alive_serves_several_requests_on_one_connection(served):
    backend, server, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for name in ("style.css", "api.js", "view.js"):
            conn.request("GET", f"/static/{name}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        conn.request("POST", "/api/status", body=b"{}", headers={"X-Soma-Token": server.token})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["ok"]
    finally:
        conn.close()


def test_pipelined_requests_are_all_answered(served):
    """Requests sent back to back before the first answer (HTTP/1.1 pipelining) are answered in
    order, none left in a buffer while the connection waits for more."""
    _, server, _ = served
    names = ("style.css", "api.js", "view.js")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"".join(f"GET /static/{n} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
                           for n in names))
        f = s.makefile("rb")
        for name in names:  # the responses one after the other from one stream
            status = f.readline().split()[1]
            headers = dict(line.decode().split(":", 1) for line in iter(f.readline, b"\r\n"))
            body = f.read(int({k.lower(): v for k, v in headers.items()}["content-length"]))
            assert status == b"200" and body == (server_module.STATIC_DIR / name).read_bytes(), name


@pytest.mark.parametrize("path", [
    "/static/" + "a" * 300,
    "/static/../server.py",
    "/static/..%2fserver.py",
    "/static/%zz",
    "/static/%00",
    "/static/",
    "/static/.hidden",
    "/%ff%fe",
    "/blob/abc",
    "/blob/99999999999999999999999",
    "/blob/-1",
    "/nothing/here",
])
def test_any_path_gets_a_clean_answer(served, path):
    _, server, _ = served
    status, body = get(server, path + ("&" if "?" in path else "?") + f"token={server.token}")
    assert status in (400, 404)
    err = json.loads(body)["error"]
    assert err["type"] == "NotFound" and len(err["message"]) < 200
    assert not any(c in err["message"] for c in CLASS_NAMES)


@pytest.mark.parametrize("line", [
    b"GET /static/a\x00b HTTP/1.1",
    b"GET /static/" + b"\xff" * 300 + b" HTTP/1.1",
    b"POST /api/st\x00ate HTTP/1.1",
    b"GET /blob/%zz%00?token=%zz%00 HTTP/1.1",
    b"BREW /coffee HTTP/1.1",
    b"GET",
])
def test_malformed_request_lines_get_400_or_404(served, line):
    backend, server, _ = served
    host = f"Host: 127.0.0.1:{server.port}\r\nX-Soma-Token: {server.token}\r\nContent-Length: 2\r\n".encode()
    out = raw(server, line + b"\r\n" + host + b"\r\n{}")
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/") else None
    assert status in (400, 404, 501), out[:200]
    assert b"Traceback" not in out
    assert get(server, "/static/style.css")[0] == 200  # still serving


def api(server, method: str, body: bytes):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", f"/api/{method}", body=body, headers={"X-Soma-Token": server.token})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


BAD_VALUES = [None, True, -1, 1e308, math.nan, "", "\x00", [], {}, [[math.nan, 1.0]], "no such thing"]


def bad_calls():
    calls = []
    for method in API_METHODS:
        if method in ("state", "status", "recent_projects", "recovery_offers", "undo", "redo"):
            calls.append((method, {"unexpected": 1}))
            continue
        fn = getattr(AppBackend, method)
        params = [n for n, p in inspect.signature(fn).parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
        calls.append((method, {"zzz": 1}))
        if any(p.default is p.empty for n, p in inspect.signature(fn).parameters.items() if n in params):
            calls.append((method, {}))
        for name in params or ["wavelet_bandwidth", "bins_per_octave"]:
            for v in BAD_VALUES:
                if method in ("save_project", "export") and name == "path" and v == "no such thing":
                    continue  # a plain name is a valid path (it would be written)
                base = {"t0": 0.5, "t1": 1.0, "fmin": 100.0, "fmax": 2000.0, "width": 64, "height": 32} if method == "view" else {}
                calls.append((method, {**base, name: v}))
    return calls


def test_every_api_method_names_bad_input_for_a_person(served, tmp_path, monkeypatch):
    backend, server, _ = served
    monkeypatch.chdir(tmp_path)  # a relative path some call accepts lands here, not in the repository
    failures = []
    for method, params in bad_calls():
        status, data = api(server, method, json.dumps(params).encode())
        if data["ok"]:
            continue  # a value that is valid for this parameter
        err = data["error"]
        if status != 400 or err["type"] == "InternalError" or any(c in err["message"] for c in CLASS_NAMES):
            failures.append((method, params, err))
    for body in (b"[1, 2]", b"{not json", b"\xff\xfe", b'"text"', b"null"):
        status, data = api(server, "snap", body)
        if status != 400 or data["error"]["type"] == "InternalError":
            failures.append(("snap", body, data))
    assert failures == []
    # The open file and document came through all of it.
    assert backend.state()["file"] is not None
