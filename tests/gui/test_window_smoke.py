"""The real pywebview window (Qt backend) under Xvfb, in a subprocess with a timeout.

`soma-shm app --self-test` opens a recording, waits until the page (fed by events pushed from
Python through evaluate_js) has the overview on screen, prints a JSON report and quits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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


def test_window_shows_the_overview_under_xvfb(tmp_path):
    need_xvfb()
    try:
        import PySide6.QtWebEngineWidgets  # noqa: F401
        import webview  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"pywebview's Qt backend is not installed ({exc}); `make setup` installs the app extra")
    wav = tmp_path / "tone.wav"
    sf.write(wav, make_audio(3.0, 48_000, freqs=(440.0,)), 48_000)
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
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "app", "--self-test", "60", str(wav)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the window did not close within 120 s; stderr: {err[-2000:]}")
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"no report; stderr: {err[-3000:]}"
    report = json.loads(lines[-1])
    assert proc.returncode == 0 and report["ok"], (report, err[-3000:])
    assert report["title"] == "soma_shm \u2014 tone.wav"
    assert report["push"] >= 3  # progress and opened arrived through evaluate_js, not polling
    assert not [s for s in list_segments() if s.startswith(f"soma_{proc.pid}_")]
