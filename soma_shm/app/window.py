"""The desktop window: the same page in pywebview (Qt backend), pushed events via ``evaluate_js``.

The window loads the page from the local server (images are fetched from it as binary blobs);
backend events are pushed into the page by calling ``window.somaPush(event)`` from one pusher
thread, so the page never polls. Every GUI import happens inside these functions.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time


def _pusher(window, events: queue.Queue, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            continue
        try:
            window.evaluate_js(f"window.somaPush && window.somaPush({json.dumps(event)})")
        except Exception:  # the window is closing
            if stop.is_set():
                return


def _dialogs(window):
    import webview

    def ask(kind: str):
        if kind == "open_audio":
            res = window.create_file_dialog(webview.OPEN_DIALOG, file_types=(
                "Audio files (*.wav;*.flac;*.ogg;*.opus;*.mp3;*.aif;*.aiff)", "All files (*.*)"))
        elif kind == "open_project":
            res = window.create_file_dialog(webview.OPEN_DIALOG, file_types=("SOMA projects (*.soma)",))
        elif kind == "save_project":
            res = window.create_file_dialog(webview.SAVE_DIALOG, save_filename="project.soma")
        else:
            res = window.create_file_dialog(webview.SAVE_DIALOG, save_filename="partials.csv")
        if not res:
            return None
        return res if isinstance(res, str) else res[0]

    return ask


def _announce(url: str):
    """Write ``state_dir()/app-<pid>.json`` (mode 0600) with the page's address, token included,
    so the running window's document can also be reached from a browser or a script on this
    machine (as a notebook server does); removed when the window closes. Returns its path."""
    from .persistence import state_dir

    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"app-{os.getpid()}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "pid": os.getpid()}, f)
    return path


def _allow_audio(window) -> None:
    """Let the page start Web Audio without a user gesture in its own call stack (a browser's
    autoplay rule for web sites): here the page is the app itself and plays only when the user
    asks (Play, Space), including from paths the engine does not count as a gesture (a key
    relayed by the window, a restart after a speed change). Runs on the GUI thread before show."""
    from qtpy.QtWebEngineCore import QWebEngineSettings

    window.native.webview.page().settings().setAttribute(
        QWebEngineSettings.WebAttribute.PlaybackRequiresUserGesture, False)


_PLAYBACK_JS = ("(() => { const p = window.somaPlayback; return p && p.ctx ? {state: p.ctx.state, "
                "clock: p.ctx.currentTime, position: p.position(), chunks: p.metrics.chunks, "
                "errors: p.metrics.errors, playing: p.playing } : null })()")


def _check_playback(window, seconds: float = 1.0, timeout: float = 20.0) -> dict:
    """Self-test of playback in this window: Play starts it; the audio clock and the playhead
    must then advance together for ``seconds``; Play again stops it."""
    play = "document.querySelector('[data-testid=play]').click()"
    window.evaluate_js(play)
    pressed = time.perf_counter()
    deadline = pressed + timeout
    a = window.evaluate_js(_PLAYBACK_JS)
    while not (a and a["state"] == "running" and a["chunks"] > 0 and a["position"] is not None):
        now = time.perf_counter()
        if now > deadline:
            return {"ok": False, "error": f"playback did not start within {timeout} s", "last": a}
        if not (a and a["playing"]) and now - pressed > 3.0:
            window.evaluate_js(play)  # pressed before the page could play (or it stopped): press again
            pressed = now
        time.sleep(0.1)
        a = window.evaluate_js(_PLAYBACK_JS)
    time.sleep(seconds)
    b = window.evaluate_js(_PLAYBACK_JS)
    window.evaluate_js(play)
    clock, moved = b["clock"] - a["clock"], (b["position"] or 0.0) - a["position"]
    ok = clock > 0.5 * seconds and abs(moved - clock) < 0.1 and b["errors"] == 0
    return {"ok": ok, "clock_s": round(clock, 3), "playhead_s": round(moved, 3), "chunks": b["chunks"],
            "errors": b["errors"]}


def run_window(path: str | None = None, self_test: float | None = None) -> int:
    """Open the app window; returns when it closes (then the process exits via ``os._exit``).

    ``self_test``: open ``path`` (or the demo recording), wait until the page reports the
    overview on screen, play a second of it, print a JSON report and close; exit code 1 when either fails or after ``self_test`` seconds.
    """
    if sys.platform.startswith("linux") and os.geteuid() == 0:
        os.environ.setdefault("QTWEBENGINE_DISABLE_SANDBOX", "1")
    import webview

    from .backend import AppBackend
    from .initial import open_initial
    from .server import AppServer

    backend = AppBackend(freeze_heap=True)
    server = AppServer(backend).start()
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    backend.events.listen(events.put)
    try:
        announced = _announce(server.url)
    except OSError:  # a read-only state folder: the window works without it
        announced = None
    window = webview.create_window("soma_shm", server.url + "&push=window", width=1400, height=860,
                                   min_size=(800, 500))
    backend.dialogs = _dialogs(window)
    window.events.before_show += _allow_audio
    report: dict = {"ok": False}

    def closing() -> bool:
        # Qt's close event, on the GUI thread: unsaved edits need the user's word (they are kept
        # in the recovery file either way and offered at the next start).
        if self_test is not None or stop.is_set() or not backend.document.dirty:
            return True
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            None, "soma_shm", "The project has unsaved changes.\n\nClose anyway? They are kept in a recovery "
            "file and offered when the app starts next.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes  # False keeps the window open

    window.events.closing += closing

    def terminated(*_) -> None:
        # SIGTERM: unsaved edits go to the recovery file now, then the window closes.
        if backend.autosaver is not None:
            backend.autosaver.flush()
        stop.set()
        try:
            window.destroy()
        except Exception:  # pragma: no cover - the window is already gone
            pass

    signal.signal(signal.SIGTERM, terminated)

    def started() -> None:
        threading.Thread(target=_pusher, args=(window, events, stop), daemon=True, name="soma-app-push").start()
        if self_test is None:
            open_initial(backend, path)
            return
        t0 = time.perf_counter()
        try:
            if path:
                open_initial(backend, path)
            else:
                backend.open_demo(4.0)
            deadline = t0 + self_test
            while time.perf_counter() < deadline:
                state = window.evaluate_js(
                    "(() => { const c = document.querySelector('[data-testid=canvas]');"
                    " return c ? c.dataset.overview || '' : '' })()")
                if state == "drawn":
                    report.update(ok=True, overview_on_screen_s=round(time.perf_counter() - t0, 3),
                                  title=window.evaluate_js("document.title"),
                                  push=window.evaluate_js("window.somaPushCount || 0"))
                    report["playback"] = _check_playback(window, timeout=max(30.0, deadline - time.perf_counter()))
                    report["ok"] = report["playback"]["ok"]
                    break
                time.sleep(0.1)
            else:
                report["error"] = f"overview not on screen after {self_test} s"
        except Exception as exc:
            report["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            window.destroy()

    code = 0
    try:
        webview.start(started, gui="qt")
    finally:
        stop.set()
        server.stop()
        backend.close()
        if announced is not None:
            announced.unlink(missing_ok=True)
        if self_test is not None:
            print(json.dumps(report), flush=True)
            code = 0 if report.get("ok") else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # Qt's own teardown can hang after the window closed; everything is closed above
