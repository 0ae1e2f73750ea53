"""The real pywebview window (Qt backend) under Xvfb, in a subprocess with a timeout.

`soma-shm app --self-test` opens a recording, waits until the page (fed by events pushed from
Python through evaluate_js) has the overview on screen, presses Play and checks for a second that
the audio clock and the playhead advance together (Web Audio in the window's own engine), prints
a JSON report and quits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import psutil
import pytest
import soundfile as sf

from soma_shm.ipc.shm import list_segments

from ..conftest import make_audio
from ._browser import need_xvfb

pytestmark = pytest.mark.gui


def _free_display() -> int:
    for n in range(90, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


@contextlib.contextmanager
def _xvfb():
    """A private X display for one window process; yields the environment to start it with."""
    need_xvfb()
    try:
        import PySide6.QtWebEngineWidgets  # noqa: F401
        import webview  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"pywebview's Qt backend is not installed ({exc}); `make setup` installs the app extra")
    display = _free_display()
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{display}"):
            assert xvfb.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb"}
        if os.geteuid() == 0:
            env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
        yield env
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)


def test_window_shows_the_overview_under_xvfb(tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(wav, make_audio(3.0, 48_000, freqs=(440.0,)), 48_000)
    with _xvfb() as env:
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "app", "--self-test", "150", str(wav)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the window did not close within 240 s; stderr: {err[-2000:]}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"no report; stderr: {err[-3000:]}"
    report = json.loads(lines[-1])
    assert proc.returncode == 0 and report["ok"], (report, err[-3000:])
    assert report["title"] == "soma_shm \u2014 tone.wav"
    assert report["push"] >= 3  # progress and opened arrived through evaluate_js, not polling
    played = report["playback"]  # Web Audio runs in the window: the clock and the playhead advance together
    assert played["ok"] and played["clock_s"] > 0.5 and abs(played["playhead_s"] - played["clock_s"]) < 0.1
    assert played["chunks"] > 0 and played["errors"] == 0
    assert not [s for s in list_segments() if s.startswith(f"soma_{proc.pid}_")]


def _api(url: str, method: str, params: dict | None = None) -> dict:
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["token"][0]
    base = url.split("?")[0].rstrip("/")
    req = urllib.request.Request(f"{base}/api/{method}", data=json.dumps(params or {}).encode(), method="POST",
                                 headers={"X-Soma-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = json.loads(r.read())
    assert body["ok"], body
    return body["result"]


def _until(predicate, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"the window exited ({proc.returncode}) while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_sigterm_with_unsaved_edits_keeps_them_in_the_recovery_file(tmp_path):
    """A window killed by SIGTERM (logout, shutdown, `kill`) with a traced partial not saved: the
    partial is in the recovery file offered at the next start, and nothing is left running."""
    wav = tmp_path / "chord.wav"
    sf.write(wav, make_audio(3.0, 48_000, freqs=(220.0, 660.0)), 48_000)
    state = tmp_path / "state"
    with _xvfb() as env:
        env = {**env, "XDG_STATE_HOME": str(state), "XDG_CONFIG_HOME": str(tmp_path / "config")}
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "app", str(wav)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            announced = state / "soma_shm" / f"app-{proc.pid}.json"
            _until(announced.exists, 120, "the window's address", proc)
            assert announced.stat().st_mode & 0o077 == 0  # the token is readable by this user only
            url = json.loads(announced.read_text())["url"]
            _until(lambda: _api(url, "state")["overview"], 180, "the overview", proc)
            _api(url, "snap", {"trace": [[0.5, 225.0], [2.5, 215.0]]})
            _until(lambda: _api(url, "state")["document"]["partials"], 120, "the traced partial", proc)
            children = psutil.Process(proc.pid).children(recursive=True)  # workers, forkserver, Qt's
            assert children
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                err = proc.communicate()[1]
                pytest.fail(f"the window did not exit within 60 s of SIGTERM; stderr: {err[-2000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    recovery = json.loads((state / "soma_shm" / f"recovery-{proc.pid}.soma").read_text())
    (partial,) = recovery["data"]["partials"]
    freqs = [row[1] for row in partial["points"]]
    assert 200 < min(freqs) and max(freqs) < 240  # the 220 Hz partial the stroke followed
    assert recovery["source"]["file_path"].endswith("chord.wav")
    assert not announced.exists()
    assert not [s for s in list_segments() if s.startswith(f"soma_{proc.pid}_")]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
