"""The app's backend through its local HTTP server: token, API, blobs, pushed events, errors."""

from __future__ import annotations

import http.client
import json
import queue
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile as sf

from soma_shm import ParameterError
from soma_shm.app.backend import AppBackend
from soma_shm.app.server import AppServer

from .conftest import make_audio

FS = 48_000


class Client:
    """Minimal client of the app server: JSON API calls, blobs, and an SSE reader thread."""

    def __init__(self, server: AppServer):
        self.port, self.token = server.port, server.token
        self.events: queue.Queue = queue.Queue()
        self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self._conn.request("GET", f"/events?token={self.token}")
        resp = self._conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
        self._thread = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self._thread.start()

    def _read(self, resp) -> None:
        try:
            for raw in resp:
                line = raw.decode().rstrip("\n")
                if line.startswith("data: "):
                    self.events.put(json.loads(line[6:]))
        except (OSError, ValueError):
            pass

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def call(self, method: str, expect_ok: bool = True, **params):
        status, _, body = self.request("POST", f"/api/{method}", json.dumps(params).encode(),
                                       {"X-Soma-Token": self.token, "Content-Type": "application/json"})
        data = json.loads(body)
        assert data["ok"] is expect_ok, data
        assert status == (200 if expect_ok else 400)
        return data["result"] if expect_ok else data["error"]

    def blob(self, bid: int) -> np.ndarray:
        status, headers, body = self.request("GET", f"/blob/{bid}", headers={"X-Soma-Token": self.token})
        assert status == 200, body
        w, h = int(headers["X-Width"]), int(headers["X-Height"])
        assert headers["Content-Type"] == "application/octet-stream" and len(body) == w * h
        return np.frombuffer(body, dtype=np.uint8).reshape(h, w)

    def wait(self, kind: str, timeout: float = 60.0, where=lambda e: True) -> dict:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(ev["type"])
            if ev["type"] == kind and where(ev):
                return ev
            if ev["type"] == "error" and kind != "error":
                raise AssertionError(f"error event while waiting for {kind}: {ev}")
        raise AssertionError(f"no {kind} event within {timeout} s; saw {seen}")

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    path = folder / "tones.wav"
    sf.write(path, make_audio(4.0, FS, freqs=(440.0, 1500.0), amp=0.3), FS)
    return path


@pytest.fixture(scope="module")
def app():
    backend = AppBackend(engine_options={"spares": False})
    server = AppServer(backend).start()
    client = Client(server)
    yield backend, server, client
    client.close()
    server.stop()
    backend.close()


@pytest.fixture(scope="module")
def opened(app, wav):
    backend, server, client = app
    client.call("open_file", path=str(wav))
    stages = []
    while True:
        ev = client.wait("progress") if not stages or stages[-1] != ("overview", 1.0) else client.wait("opened")
        if ev["type"] == "opened":
            break
        stages.append((ev["stage"], ev["fraction"]))
    return ev, stages


def test_every_route_but_static_needs_the_token_and_a_local_host(app):
    _, server, client = app
    assert client.request("GET", "/")[0] == 401
    assert client.request("GET", "/?token=wrong")[0] == 401
    assert client.request("GET", f"/?token={server.token}")[0] == 200
    assert client.request("GET", "/events")[0] == 401
    assert client.request("GET", "/blob/1")[0] == 401
    status, _, body = client.request("POST", "/api/state", b"{}", {"X-Soma-Token": "nope"})
    assert status == 401 and b"token" in body
    status, _, _ = client.request("POST", "/api/state", b"{}", {"X-Soma-Token": server.token, "Host": "evil.example:80"})
    assert status == 403
    status, headers, body = client.request("GET", "/static/main.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"import" in body
    assert client.request("GET", "/static/../server.py")[0] == 404
    assert server.url == f"http://127.0.0.1:{server.port}/?token={server.token}"
    backend = app[0]
    with pytest.raises(ParameterError, match=f"cannot listen on 127.0.0.1:{server.port}.*choose another --port"):
        AppServer(backend, port=server.port)
    with pytest.raises(ParameterError, match="port=-1"):
        AppServer(backend, port=-1)


def test_unknown_methods_and_bad_bodies_are_named_errors(app):
    _, _, client = app
    err = client.call("nope", expect_ok=False)
    assert err["type"] == "ParameterError" and "unknown API method 'nope'" in err["message"]
    status, _, body = client.request("POST", "/api/state", b"{oops", {"X-Soma-Token": client.token})
    assert status == 400 and b"not valid JSON" in body
    err = client.call("view", expect_ok=False, t0=0, t1=1, fmin=100, fmax=1000, width=10, height=10, bogus=1)
    assert err["type"] == "ParameterError" and "bogus" in err["message"]


def test_open_pushes_real_progress_then_the_overview(app, opened):
    _, _, client = app
    ev, stages = opened
    decode = [f for s, f in stages if s == "decode"]
    overview = [f for s, f in stages if s == "overview"]
    assert decode[0] == 0.0 and decode[-1] == 1.0 and decode == sorted(decode)
    assert overview[0] == 0.0 and overview[-1] == 1.0 and len(overview) >= 3 and overview == sorted(overview)
    assert ev["file"]["duration"] == pytest.approx(4.0) and ev["file"]["sample_rate"] == FS
    ov = ev["overview"]
    img = client.blob(ov["blob"])
    assert img.shape == (ov["height"], ov["width"])
    # The 440 Hz and 1500 Hz rows are bright, the top of the spectrum dark.
    rows = ov["fmax"] * (ov["fmin"] / ov["fmax"]) ** (np.arange(ov["height"]) / (ov["height"] - 1))
    r440 = int(np.argmin(abs(rows - 440)))
    mid = slice(ov["width"] // 4, 3 * ov["width"] // 4)
    assert img[r440, mid].mean() > 200 and img[5, mid].mean() < 60
    state = client.call("state")
    assert state["file"]["path"].endswith("tones.wav") and state["overview"]["blob"] == ov["blob"]
    assert state["document"]["source"]["md5"]


def test_viewport_is_pushed_as_a_cwt_blob_and_latest_wins(app, opened):
    _, _, client = app
    first = client.call("view", t0=0.5, t1=3.5, fmin=100.0, fmax=4000.0, width=300, height=120)
    last = client.call("view", t0=1.0, t1=3.0, fmin=200.0, fmax=3000.0, width=320, height=100)
    assert last["request_id"] > first["request_id"]
    ev = client.wait("viewport", where=lambda e: e["request_id"] == last["request_id"])
    assert ev["method"] == "cwt" and (ev["t0"], ev["t1"], ev["width"], ev["height"]) == (1.0, 3.0, 320, 100)
    assert ev["timings"]["total_s"] > 0
    img = client.blob(ev["blob"])
    assert img.shape == (100, 320)
    rows = 3000.0 * (200.0 / 3000.0) ** (np.arange(100) / 99)
    assert img[int(np.argmin(abs(rows - 440))), 20:-20].min() > 200
    assert img[int(np.argmin(abs(rows - 800))), 20:-20].max() < img[int(np.argmin(abs(rows - 440))), 20:-20].min()
    status = client.wait("status")["status"]
    assert status["viewport"]["last"]["method"] == "cwt"


def test_stroke_snaps_into_a_partial_with_undo_and_redo(app, opened):
    _, _, client = app
    before = len(client.call("state")["document"]["partials"])
    rid = client.call("snap", trace=[[1.0, 455.0], [2.0, 430.0], [3.0, 450.0]])["request_id"]
    edit = client.wait("edit", where=lambda e: (e["label"] or "").startswith("add"))
    snapped = client.wait("snapped", where=lambda e: e["request_id"] == rid)
    # Only the new partial travels, with the history flags.
    assert [p["id"] for p in edit["added"]] == [snapped["partial_id"]] and edit["history"]["can_undo"]
    assert edit["changed"] == [] and edit["removed"] == []
    part = edit["added"][0]
    f = np.array(part["points"])[:, 1]
    assert np.median(np.abs(1200 * np.log2(f / 440.0))) < 10  # on the 440 Hz ridge, not the stroke
    amp = np.array(part["points"])[:, 2]
    assert np.median(amp) == pytest.approx(0.3, rel=0.1)
    assert client.call("undo")["removed"] == [part["id"]]
    assert client.call("redo")["added"] == [part["id"]]
    state = client.call("state")["document"]
    ids = [p["id"] for p in state["partials"]]
    assert len(ids) == before + 1
    # The snapshot's points arrive as one float32 blob, n rows per partial in order.
    block = client.blob(state["points_blob"]).view(np.float32).reshape(-1, 3)
    assert block.shape[0] == sum(p["n"] for p in state["partials"])
    np.testing.assert_allclose(block[-state["partials"][-1]["n"]:], np.array(part["points"], dtype=np.float32))
    assert sorted(client.call("delete_partials", ids=ids)["removed"]) == sorted(ids)
    assert sorted(client.call("undo")["added"]) == sorted(ids)


def test_state_answers_while_a_snap_result_waits_for_the_backend_lock(app, opened):
    # The app's old deadlock, made deterministic: the engine's thread delivers a snap result to
    # _on_snap, which waits for the backend lock; meanwhile state() holds that lock and asks the
    # engine for its stats. The engine must answer without its supervisor thread.
    backend, _, _ = app
    entered = threading.Event()
    original = backend._on_snap

    def on_snap(*args):
        entered.set()
        original(*args)

    backend._on_snap = on_snap
    try:
        with backend._lock:
            backend.snap([[1.0, 440.0], [2.0, 440.0]])
            assert entered.wait(60)
            answer = {}
            t = threading.Thread(target=lambda: answer.setdefault("status", backend.status()))
            t.start()
            t.join(10)
            stuck = t.is_alive()
            if not stuck:
                assert backend.state()["status"]["snap"]["workers"] == 1
        t.join(60)
        assert not stuck, "state() blocked on the engine while a snap result waited for the backend lock"
        assert answer["status"]["snap"]["done"] >= 1
    finally:
        del backend._on_snap


def test_edit_tools_through_the_api(app, opened):
    """Merge, crop, erase, extend (snapped), mute: each one edit event, each undoable."""
    _, _, client = app
    old = [p["id"] for p in client.call("state")["document"]["partials"]]
    if old:
        client.call("delete_partials", ids=old)
    got = []
    for trace in ([[0.5, 1450.0], [1.2, 1550.0]], [[1.6, 1450.0], [2.4, 1550.0]]):
        rid = client.call("snap", trace=trace)["request_id"]
        got.append(client.wait("snapped", where=lambda e, r=rid: e["request_id"] == r)["partial_id"])
    a, b = got
    out = client.call("merge_partials", ids=[a, b])
    assert out["changed"] == [a] and out["removed"] == [b] and out["history"]["undo_label"].startswith("merge")
    ev = client.wait("edit", where=lambda e: e["label"] and e["label"].startswith("merge"))
    t = np.array(ev["changed"][0]["points"])[:, 0]
    assert t[0] < 0.6 and t[-1] > 2.3 and np.diff(t).max() < 0.011  # the gap is bridged
    out = client.call("crop_partial", id=a, t0=1.0, t1=2.0)
    assert out["changed"] == [a]
    t = np.array(client.wait("edit", where=lambda e: e["label"] == f"crop {a}")["changed"][0]["points"])[:, 0]
    assert t[0] >= 1.0 and t[-1] <= 2.0
    rid = client.call("extend_partial", id=a, trace=[[t[-1], 1500.0], [3.0, 1500.0]])["request_id"]
    ext = client.wait("edit", where=lambda e: e["label"] == f"extend {a}")
    client.wait("snapped", where=lambda e: e["request_id"] == rid)
    t2 = np.array(ext["changed"][0]["points"])[:, 0]
    assert t2[0] == t[0] and t2[-1] > 2.8
    out = client.call("erase", trace=[[1.5, 1200.0], [1.5, 1900.0]], radius_t=0.05, radius_octaves=0.05)
    assert out["changed"] == [a] and len(out["added"]) == 1
    out = client.call("set_muted", ids=[a] + out["added"], is_muted=True)
    assert len(out["changed"]) == 2
    err = client.call("merge_partials", expect_ok=False, ids=[a])
    assert err["type"] == "ParameterError" and "at least 2" in err["message"]
    err = client.call("erase", expect_ok=False, trace=[[3.5, 100.0], [3.9, 100.0]], radius_t=0.01, radius_octaves=0.01)
    assert "touched no partial" in err["message"]
    # Undo everything: back to the two snapped partials; undo past the start is a no-op.
    labels = []
    while True:
        r = client.call("undo")
        if r["label"] is None:
            break
        labels.append(r["label"].split()[0])
    assert labels[:5] == ["mute", "erase", "extend", "crop", "merge"]
    assert not r["history"]["can_undo"] and r["history"]["can_redo"]
    assert client.call("state")["document"]["partials"] == []


def test_settings_changes_are_undoable(app, opened):
    _, _, client = app
    before = client.call("state")["document"]["settings"]["gamma"]
    client.call("set_settings", gamma=0.6)
    ev = client.wait("edit", where=lambda e: "settings" in e)
    assert ev["settings"]["gamma"] == 0.6 and "gamma" in ev["history"]["undo_label"]
    client.call("undo")
    client.wait("overview")  # re-tone-mapped with the settings undone
    ev = client.wait("edit", where=lambda e: "settings" in e)
    assert ev["settings"]["gamma"] == before
    assert client.call("state")["document"]["settings"]["gamma"] == before


def test_bad_requests_leave_the_document_intact(app, opened, tmp_path):
    _, _, client = app
    doc_before = client.call("state")["document"]["partials"]
    err = client.call("view", expect_ok=False, t0=2.0, t1=1.0, fmin=100, fmax=1000, width=100, height=50)
    assert err["type"] == "ParameterError" and "t0=2.0 must be before t1=1.0" in err["message"]
    err = client.call("view", expect_ok=False, t0=0, t1=1, fmin=100, fmax=30000, width=100, height=50)
    assert "above Nyquist" in err["message"]
    err = client.call("snap", expect_ok=False, trace=[[1.0, 440.0]])
    assert "at least 2 points" in err["message"]
    err = client.call("open_file", expect_ok=False, path=str(tmp_path / "missing.wav"))
    assert "does not exist" in err["message"]
    err = client.call("set_settings", expect_ok=False, gamma=-2)
    assert "gamma=-2" in err["message"]
    assert client.call("state")["document"]["settings"]["gamma"] == 1.0
    # A corrupt file fails in the background: an error event, the open file and document stay.
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage" * 10)
    client.call("open_file", path=str(bad))
    ev = client.wait("error")
    assert ev["op"] == "open" and ev["error"]["type"] == "AudioFormatError" and "corrupt.wav" in ev["error"]["message"]
    state = client.call("state")
    assert state["file"]["path"].endswith("tones.wav") and state["document"]["partials"] == doc_before
    assert state["last_error"]["op"] == "open"
    assert client.call("view", t0=0.0, t1=1.0, fmin=100, fmax=1000, width=50, height=20)["request_id"]
    client.wait("viewport")


def test_settings_retone_the_overview(app, opened):
    _, _, client = app
    old = client.call("state")["overview"]
    client.call("set_settings", min_db=-40.0, gamma=0.8)
    ev = client.wait("overview")
    assert ev["overview"]["blob"] != old["blob"]
    darker = client.blob(ev["overview"]["blob"]).astype(int)
    assert darker.mean() < client.blob(old["blob"]).astype(int).mean()
    assert client.call("state")["document"]["settings"]["min_db"] == -40.0
    client.call("set_settings", min_db=-80.0, gamma=1.0)
    client.wait("overview")


def test_save_load_and_export_through_the_api(app, opened, tmp_path):
    _, _, client = app
    rid = client.call("snap", trace=[[0.5, 1450.0], [1.5, 1550.0]])["request_id"]
    client.wait("snapped", where=lambda e: e["request_id"] == rid)
    saved = client.call("save_project", path=str(tmp_path / "p.soma"))
    assert saved["history"]["dirty"] is False
    ids = [p["id"] for p in client.call("state")["document"]["partials"]]
    n = len(ids)
    data = json.loads((tmp_path / "p.soma").read_text())
    assert len(data["data"]["partials"]) == n and data["source"]["file_path"].endswith("tones.wav")
    client.call("delete_partials", ids=ids)
    loaded = client.call("load_project", path=str(tmp_path / "p.soma"))
    assert loaded["opening"] is None and loaded["source_matches"] is True
    assert [p["id"] for p in loaded["document"]["partials"]] == ids
    out = client.call("export", path=str(tmp_path / "parts.csv"))
    assert out["partials"] == n and (tmp_path / "parts.csv").read_text().startswith("partial_id,")
    err = client.call("load_project", expect_ok=False, path=str(tmp_path / "none.soma"))
    assert "does not exist" in err["message"]
    err = client.call("dialog", expect_ok=False, kind="open_audio")
    assert "only in the desktop window" in err["message"]


def test_upload_opens_the_dropped_file(app, opened, wav):
    _, _, client = app
    status, _, body = client.request("POST", "/api/upload?name=dropped%20take.wav", wav.read_bytes(),
                                     {"X-Soma-Token": client.token})
    assert status == 200, body
    ev = client.wait("opened")
    assert ev["file"]["name"] == "dropped take.wav" and ev["document"]["partials"] == []
    status, _, body = client.request("POST", "/api/upload?name=empty.wav", b"", {"X-Soma-Token": client.token})
    assert status == 400 and b"empty" in body


def test_backend_close_leaves_no_workers_or_segments(no_leaks, wav):
    with AppBackend(engine_options={"spares": False}) as backend:
        got = []
        backend.events.listen(got.append)
        backend.open_file(str(wav))
        backend._load_thread.join(60)
        assert [e["type"] for e in got if e["type"] in ("opened", "error")] == ["opened"]


def test_a_stroke_still_snapping_when_another_file_opens_is_dropped_quietly(no_leaks, wav, monkeypatch):
    """The stroke belonged to the old file: it is cancelled with it and the page is told nothing.
    The engine cancels the old file's requests before the app announces the new file; the app
    took that cancellation for a failed snap and showed it as an error."""
    from tests import worker_tasks as wt

    with AppBackend(engine_options={"spares": False}) as backend:
        got = []
        backend.events.listen(got.append)
        backend.open_file(str(wav))
        backend._load_thread.join(60)
        engine = backend.engine
        # The stroke's snap waits in the worker until the next file cancels it.
        monkeypatch.setattr(engine, "submit_snap", lambda trace, on_result=None: engine._submit(
            "snap", {"seconds": 120}, wt._build, on_result, task="tests.worker_tasks:sleep"))
        backend.snap([[1.0, 440.0], [2.0, 440.0]])
        backend.open_file(str(wav))
        backend._load_thread.join(60)
        kinds = [(e["type"], e.get("op")) for e in got]
        assert [k for k in kinds if k[0] in ("opened", "error")] == [("opened", None), ("opened", None)]
        assert backend.state()["status"]["snap"]["queued"] == 0


def test_serve_prints_the_url_first_and_stops_on_sigterm(wav):
    proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve", str(wav)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().strip()
        url = urlsplit(first)
        assert url.scheme == "http" and url.hostname == "127.0.0.1" and url.query.startswith("token=")
        conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=30)
        conn.request("GET", f"/?{url.query}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        # The SIGTERM lands while the file is still opening: the server finishes that open and
        # the start of its workers before it closes them, which on a saturated machine took
        # over 30 s. Its exit is bounded, not fast; a server that does not exit is killed.
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, err


def test_the_apps_start_up_loads_what_opening_needs_and_keeps_it_out_of_full_collections():
    # `soma-shm app` / `serve`: once the kernels are ready, what start-up made (modules, kernels,
    # the engine) is frozen out of the garbage collector's walks (a full collection over it took
    # 0.1-0.4 s and fell into project loads); a backend in someone else's interpreter leaves that
    # interpreter's collector alone.
    code = (
        "import gc, sys; from soma_shm.app.backend import AppBackend;"
        "b = AppBackend(engine_options={'spares': False}, autosave=False, freeze_heap=sys.argv[1] == '1');"
        "b._warm_thread.join(120); print('soma_shm.kernels.flac' in sys.modules, gc.get_freeze_count()); b.close()"
    )
    for flag, frozen in (("1", True), ("0", False)):
        proc = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        flac, count = proc.stdout.split()[-2:]
        assert (int(count) > 10_000) == frozen, count
        # The FLAC callbacks are loaded at start too, not inside the first FLAC open (0.25 s).
        assert flac == "True"


def test_app_modules_do_not_import_gui_toolkits():
    """Workers re-import soma_shm: building the CLI or importing the app must not load a GUI."""
    code = (
        "import sys, soma_shm.cli, soma_shm.app.window, soma_shm.app.server, soma_shm.app.backend;"
        "soma_shm.cli.build_parser();"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('webview', 'PySide6', 'qtpy', 'PyQt5', 'gi')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_long_file_shows_its_overview_while_it_decodes(tmp_path, monkeypatch):
    import soma_shm.app.backend as backend_module
    from soma_shm import _flac, audio, pyramid

    fs = 8_000
    x = (0.25 * np.sin(2 * np.pi * 440 * np.arange(60 * fs) / fs)).astype(np.float32)
    path = tmp_path / "long.flac"
    sf.write(path, x, fs, subtype="PCM_16")
    monkeypatch.setattr(pyramid, "PROGRESSIVE_MIN_SAMPLES", 1_000)  # "long"
    monkeypatch.setattr(audio, "PARALLEL_MIN_FRAMES", 1_000)
    monkeypatch.setattr(audio, "CHUNK_FRAMES", 2_048)
    monkeypatch.setattr(backend_module, "PARTIAL_EVERY_S", 0.0)
    real_open = audio._open

    def slow_open(p):  # a decoder as slow as an hour's would be, relative to this minute
        f = real_open(p)
        read = f.read

        def slow_read(*args, **kwargs):
            time.sleep(0.004)
            return read(*args, **kwargs)

        f.read = slow_read
        return f

    monkeypatch.setattr(audio, "_open", slow_open)
    real_range = _flac.decode_range

    def slow_range(path, out, start, stop, report, every):  # the same for libFLAC's ranges
        def slow_report(done):
            time.sleep(0.004)
            report(done)

        return real_range(path, out, start, stop, slow_report, every)

    monkeypatch.setattr(_flac, "decode_range", slow_range)
    backend = AppBackend(engine_options={"spares": False})
    events: queue.Queue = queue.Queue()
    backend.events.listen(events.put)
    try:
        backend.open_file(str(path))
        seen = []
        while True:
            ev = events.get(timeout=120)
            assert ev["type"] != "error", ev
            seen.append(ev)
            if ev["type"] == "opened":
                break
        partials = [e for e in seen if e["type"] == "partial_overview"]
        assert partials, [e["type"] for e in seen]
        first = partials[0]
        assert 0 < first["fraction"] < 1
        ov = first["overview"]
        assert (ov["width"], ov["height"], ov["t1"]) == (backend_module.OVERVIEW_WIDTH, backend_module.OVERVIEW_HEIGHT, 60.0)
        fractions = [e["fraction"] for e in partials]
        assert fractions == sorted(fractions)
        assert seen.index(partials[-1]) < seen.index(seen[-1])  # all before the file is announced
    finally:
        backend.close()
