"""Projects through the app's backend: saving copies temporary audio beside the project, moved
audio is found again by MD5, SOMA's projects open, overwrite needs consent, state changes only
when an operation succeeds (failures injected at each step), recovery after SIGTERM."""

from __future__ import annotations

import http.client
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile as sf

from soma_shm import AudioFormatError, ParameterError
from soma_shm.app import persistence
from soma_shm.app.backend import AppBackend
from soma_shm.app.document import file_md5
from soma_shm.errors import EngineClosed, ProjectAudioMissing

from .conftest import make_audio

FS = 48_000


class Events:
    def __init__(self, backend: AppBackend):
        self.q: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        backend.events.listen(self.q.put)

    def clear(self) -> None:
        while not self.q.empty():
            self.q.get_nowait()
        self.seen.clear()

    def wait(self, *kinds: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(ev["type"])
            if ev["type"] == "error" and ev.get("op") != "open":
                continue  # another operation's error (e.g. background work cancelled by the file change)
            if ev["type"] in kinds:
                return ev
        raise AssertionError(f"no {kinds} event within {timeout} s")


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    folder = tmp_path_factory.mktemp("projects")
    a, b = folder / "first.wav", folder / "second.wav"
    sf.write(a, make_audio(2.0, FS, freqs=(440.0,), amp=0.3), FS)
    sf.write(b, make_audio(2.0, FS, freqs=(660.0,), amp=0.2), FS)
    return a, b


@pytest.fixture(scope="module")
def backend():
    with AppBackend(engine_options={"spares": False}, autosave=False) as b:
        yield b


def open_and_wait(backend: AppBackend, events: Events, path) -> dict:
    backend.open_file(str(path))
    return events.wait("opened", "error")


def add(backend: AppBackend, f: float = 440.0, amp: float = 0.3) -> None:
    with backend._lock:
        backend.document.add_partial([[0.5, f, amp], [0.6, f, amp], [0.7, f, amp]])


def test_uploaded_audio_is_copied_beside_the_project_and_overwrite_needs_consent(backend, recordings, tmp_path):
    events = Events(backend)
    data = recordings[0].read_bytes()
    up = backend.save_upload("dropped take.wav", io.BytesIO(data), len(data))
    assert up.startswith(backend._tmp)
    assert open_and_wait(backend, events, up)["type"] == "opened"
    add(backend)
    saved = backend.save_project(str(tmp_path / "song"))  # .soma added
    assert saved["status"] == "saved" and saved["path"] == str(tmp_path / "song.soma")
    copy = tmp_path / "song_assets" / "dropped take.wav"
    assert saved["copied_audio"] == str(copy) and copy.read_bytes() == data
    on_disk = json.loads((tmp_path / "song.soma").read_text())
    assert on_disk["source"]["file_path"] == "song_assets/dropped take.wav"
    assert backend.document.source_path == str(copy) and not backend.document.dirty
    assert backend.recent_projects()["projects"][0]["path"] == str(tmp_path / "song.soma")

    # Saving over an existing file needs consent; without it nothing is written.
    before = (tmp_path / "song.soma").read_bytes()
    add(backend, 880.0)
    assert backend.save_project(str(tmp_path / "song.soma")) == {"status": "exists", "path": str(tmp_path / "song.soma")}
    assert (tmp_path / "song.soma").read_bytes() == before
    again = backend.save_project(str(tmp_path / "song.soma"), overwrite=True)
    assert again["status"] == "saved" and again["copied_audio"] is None
    assert len(json.loads((tmp_path / "song.soma").read_text())["data"]["partials"]) == 2
    assert os.listdir(tmp_path / "song_assets") == ["dropped take.wav"]
    with pytest.raises(ParameterError, match="does not exist"):
        backend.save_project(str(tmp_path / "no folder" / "x.soma"))
    assert backend.export(str(tmp_path / "song.soma"))["status"] == "exists"

    # The project opens later from its own folder, the temporary copy gone.
    os.rename(tmp_path / "song_assets", tmp_path / "elsewhere")
    with pytest.raises(ProjectAudioMissing, match="choose the folder"):
        backend.load_project(str(tmp_path / "song.soma"))
    out = backend.load_project(str(tmp_path / "song.soma"), search_dir=str(tmp_path / "elsewhere"))
    assert out["relinked"] == str(tmp_path / "elsewhere" / "dropped take.wav")
    ev = events.wait("opened", "error")
    assert ev["type"] == "opened", ev
    assert backend.document.source_path == out["relinked"] and backend.document.dirty  # save to keep the new place
    assert len(backend.document.partials) == 2


def test_a_soma_app_project_gets_its_recordings_level(backend, recordings, tmp_path):
    events = Events(backend)
    audio = tmp_path / "take.wav"
    shutil.copy(recordings[1], audio)
    project = {
        "meta": {"format_version": "1.0.0", "app_name": "SOMA", "created_at": "2025-11-03T09:30:00+00:00"},
        "source": {"file_path": "./take.wav", "sample_rate": FS, "duration_sec": 2.0, "md5_hash": file_md5(audio)},
        "analysis_settings": {"spectrogram": {"method": "multires_stft", "min_db": -70.0, "max_db": 0.0, "gamma": 1.0},
                              "snap": {"bins_per_octave": 48, "time_resolution_ms": 10.0,
                                       "wavelet_bandwidth": 8.0, "wavelet_center_freq": 1.5}},
        "data": {"partials": [{"id": "3c0e8a0e-1111-4f0a-9b1b-000000000001", "is_muted": False, "color": "#ff8800",
                               "points": [[0.5, 660.0, 1.0], [0.6, 660.0, 0.5]]}]},
    }
    (tmp_path / "take.soma").write_text(json.dumps(project))
    out = backend.load_project(str(tmp_path / "take.soma"))
    assert out["opening"] == str(audio.resolve())
    ev = events.wait("opened", "error")
    assert ev["type"] == "opened"
    ref = backend.engine.amp_reference
    amps = backend.document.partials[0].points[:, 2]
    np.testing.assert_allclose(amps, [ref, 0.5 * ref])
    assert 0.1 < ref < 0.4  # the recording's 0.2 sine, as the images show it at 0 dB
    assert backend.engine.settings.bins_per_octave == 48 and backend.engine.settings.min_db == -70.0
    backend.save_project(str(tmp_path / "take.soma"), overwrite=True)
    written = json.loads((tmp_path / "take.soma").read_text())
    np.testing.assert_allclose(written["data"]["partials"][0]["points"], project["data"]["partials"][0]["points"])
    assert written["source"]["file_path"] == "take.wav"


def test_a_project_of_the_open_file_keeps_its_overview_unless_its_settings_differ(backend, recordings, tmp_path):
    """Loading a project of the file already open: with the open file's settings the overview
    stays as it is (no new image for the page to fetch and colour while the partials arrive);
    with other settings it is tone-mapped again and the engine takes them."""
    events = Events(backend)
    assert open_and_wait(backend, events, recordings[0])["type"] == "opened"
    add(backend)
    assert backend.save_project(str(tmp_path / "same.soma"))["status"] == "saved"
    with backend._lock:
        backend.document.settings = backend.engine.settings.replace(gamma=0.5)
    assert backend.save_project(str(tmp_path / "brighter.soma"))["status"] == "saved"
    overview, settings = backend._overview, backend.engine.settings
    events.clear()
    assert backend.load_project(str(tmp_path / "same.soma"))["opening"] is None
    events.wait("document")
    assert "overview" not in events.seen and backend._overview is overview
    assert backend.engine.settings == settings and len(backend.document.partials) == 1
    events.clear()
    assert backend.load_project(str(tmp_path / "brighter.soma"))["opening"] is None
    ev = events.wait("overview")
    assert ev["overview"]["blob"] != overview["blob"] and backend.engine.settings.gamma == 0.5
    events.wait("document")


# ------------------------------------------------------------------------- failure injection
def snapshot(backend: AppBackend):
    return (backend.document, backend.document.partials, backend.engine.settings, dict(backend._file or {}),
            backend.engine.info.path)


def assert_unchanged(backend: AppBackend, before) -> None:
    doc, partials, settings, file, path = before
    assert backend.document is doc and backend.document.partials is partials
    assert backend.engine.settings == settings
    assert backend._file["path"] == file["path"] and backend.engine.info.path == path
    # The app and the engine are on the same file: a stroke now snaps the file the page shows.
    assert backend._file["generation"] == backend.engine.info.generation


@pytest.fixture
def on_first(backend, recordings, tmp_path):
    events = Events(backend)
    assert open_and_wait(backend, events, recordings[0])["type"] == "opened"
    add(backend)
    project_settings = backend.engine.settings.replace(bins_per_octave=24, gamma=0.5)
    with backend._lock:
        backend.document.settings = project_settings
        backend.document.source_path = str(recordings[1])
        backend.document.source_md5 = file_md5(recordings[1])
        backend.document.source_size = None
    saved = backend.save_project(str(tmp_path / "second.soma"))
    assert saved["status"] == "saved"
    assert open_and_wait(backend, events, recordings[0])["type"] == "opened"  # a fresh document on the first file
    add(backend, 500.0)
    return events, tmp_path / "second.soma"


def test_a_project_that_is_not_json_changes_nothing(backend, on_first, monkeypatch):
    events, project = on_first
    before = snapshot(backend)

    def broken(*a, **k):
        raise json.JSONDecodeError("Expecting value", "x", 0)

    monkeypatch.setattr(persistence, "_parse_json", broken)
    with pytest.raises(ParameterError, match="not a .soma project"):
        backend.load_project(str(project))
    assert_unchanged(backend, before)


@pytest.mark.parametrize("step", ["md5", "decode", "overview"])
def test_a_failed_open_leaves_app_engine_and_document_together(backend, on_first, recordings, monkeypatch, step):
    events, project = on_first
    before = snapshot(backend)
    import soma_shm.app.document as document_module

    if step == "md5":
        monkeypatch.setattr(document_module, "file_md5", lambda p: (_ for _ in ()).throw(OSError(5, "I/O error")))
    elif step == "decode":
        real_open = backend.engine.open
        monkeypatch.setattr(backend.engine, "open", lambda src, **k: (_ for _ in ()).throw(
            AudioFormatError("cannot decode")) if str(src) == str(recordings[1].resolve()) else real_open(src, **k))
    else:  # the engine switched files, then the overview failed
        real_render = backend._render_overview
        calls = {"n": 0}

        def render_once_broken():
            calls["n"] += 1
            if calls["n"] == 1:
                raise MemoryError("no memory for the overview")
            return real_render()

        monkeypatch.setattr(backend, "_render_overview", render_once_broken)
    events.clear()
    out = backend.load_project(str(project))
    assert out["opening"] == str(recordings[1])
    ev = events.wait("error")
    assert ev["op"] == "open"
    # After the engine had switched, the first file is opened again (in the engine too).
    assert ("opened" in events.seen) == (step == "overview")
    backend._load_thread.join(30)
    monkeypatch.undo()
    assert_unchanged(backend, before)
    assert backend._pending_document is None and backend.engine.settings.bins_per_octave != 24


def test_a_snap_of_another_file_never_reaches_the_document(backend, on_first):
    with backend._lock:
        shown = dict(backend._file)
        backend._file["generation"] = shown["generation"] - 1  # the page shows a file the engine left
    try:
        with pytest.raises(EngineClosed, match="a file is being opened"):
            backend.snap([[0.5, 430.0], [0.8, 450.0]])
    finally:
        with backend._lock:
            backend._file = shown


def test_bad_api_input_is_named(backend, on_first, tmp_path):
    for call, match in [
        (lambda: backend.save_project(""), "must be the path"),
        (lambda: backend.save_project(str(tmp_path / "a.soma"), overwrite="yes"), "overwrite='yes'"),
        (lambda: backend.load_project(str(tmp_path / "a.soma"), search_dir=3), "search_dir=3"),
        (lambda: backend.restore_recovery(str(tmp_path / "x.soma")), "not an offered recovery file"),
        (lambda: backend.export(str(tmp_path / "p.csv"), include_muted="no"), "include_muted='no'"),
        (lambda: backend.open_demo(float("nan")), "seconds=nan"),
    ]:
        with pytest.raises(ParameterError, match=match):
            call()


# ----------------------------------------------------------------------------- recovery
def test_sigterm_with_unsaved_edits_writes_a_recovery_that_is_offered(recordings, tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve", str(recordings[0])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = urlsplit(proc.stdout.readline().strip())
        token = url.query.split("=", 1)[1]

        def call(method, **params):
            conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=60)
            conn.request("POST", f"/api/{method}", json.dumps(params), {"X-Soma-Token": token})
            data = json.loads(conn.getresponse().read())
            conn.close()
            return data

        deadline = time.monotonic() + 120
        while call("state")["result"]["file"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert call("snap", trace=[[0.5, 430.0], [1.5, 450.0]])["ok"]
        while not call("state")["result"]["document"]["partials"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert call("state")["result"]["document"]["dirty"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    left = list((tmp_path / "state" / "soma_shm").glob("recovery-*.soma"))
    assert [p.name for p in left] == [f"recovery-{proc.pid}.soma"]

    # The next start offers it; restoring brings the partial back, unsaved.
    os.environ_backup = None
    old = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "XDG_CONFIG_HOME")}
    os.environ.update({"XDG_STATE_HOME": env["XDG_STATE_HOME"], "XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"]})
    try:
        with AppBackend(engine_options={"spares": False}, autosave=False) as b:
            events = Events(b)
            offers = b.recovery_offers()["offers"]
            assert [o["path"] for o in offers] == [str(left[0])] and offers[0]["partials"] == 1
            out = b.restore_recovery(offers[0]["path"])
            assert out["opening"] == str(recordings[0])
            assert events.wait("opened", "error")["type"] == "opened"
            assert len(b.document.partials) == 1 and b.document.dirty
            assert b.recovery_offers()["offers"] == [] and not left[0].exists()
            b.close(keep_recovery=False)
    finally:
        for k, v in old.items():
            os.environ[k] = v


def test_serve_opens_a_project_whose_audio_was_uploaded(recordings, tmp_path):
    """`soma-shm serve X.soma` of a project saved from an upload (its temporary audio gone)."""
    with AppBackend(engine_options={"spares": False}, autosave=False) as b:
        events = Events(b)
        data = recordings[1].read_bytes()
        assert open_and_wait(b, events, b.save_upload("up.wav", io.BytesIO(data), len(data)))["type"] == "opened"
        add(b, 660.0)
        b.save_project(str(tmp_path / "up.soma"))
        tmp = b._tmp
    assert not os.path.exists(tmp)
    proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve", str(tmp_path / "up.soma")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = urlsplit(proc.stdout.readline().strip())
        assert url.port, proc.stderr.read()
        token = url.query.split("=", 1)[1]
        deadline = time.monotonic() + 120
        state = None
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", url.port, timeout=60)
            conn.request("POST", "/api/state", "{}", {"X-Soma-Token": token})
            state = json.loads(conn.getresponse().read())["result"]
            conn.close()
            if state["file"]:
                break
            time.sleep(0.2)
        assert state["file"]["path"] == str(tmp_path / "up_assets" / "up.wav")
        assert len(state["document"]["partials"]) == 1 and state["document"]["project_path"] == str(tmp_path / "up.soma")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
