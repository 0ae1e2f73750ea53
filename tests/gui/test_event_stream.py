"""The page and its event stream in headless Debian Chromium: events and answers may arrive in
either order.

- No event is lost while the stream connects. The page asks for the backend's state only once its
  stream is open; asked before, a file that finished opening in between (its "opened" event
  published before the stream subscribed) was never shown, and the page waited on its loading
  screen for good.
- A save's event can arrive before the answer to the call: it carries the project's path, so a
  Ctrl+S pressed as soon as the page shows the work saved writes the same project again (it used
  to open the "Save as" dialog, the path being known only from the answer).
"""

from __future__ import annotations

import json
import threading

import pytest
import soundfile as sf

from soma_shm.app.backend import AppBackend
from soma_shm.app.server import AppServer

from ..conftest import make_audio
from ._browser import chromium_page, need_chromium

pytestmark = pytest.mark.gui
FS = 48_000


def test_a_file_opened_while_the_stream_connects_is_shown(tmp_path):
    need_chromium()
    path = tmp_path / "tone.wav"
    sf.write(path, make_audio(2.0, FS, freqs=(440.0,), amp=0.3), FS)
    backend = AppBackend(engine_options={"spares": False})
    server = AppServer(backend).start()
    arrived, opened = threading.Event(), threading.Event()
    backend.events.listen(lambda e: e.get("type") == "opened" and opened.set())
    subscribe = backend.events.subscribe

    def late_subscribe():
        # The stream's request reached the server; it subscribes only after the file is open.
        arrived.set()
        opened.wait(120)
        return subscribe()

    backend.events.subscribe = late_subscribe
    try:
        with chromium_page() as page:
            page.goto(server.url)
            assert arrived.wait(60), "the page never asked for its event stream"
            backend.open_file(str(path))
            assert opened.wait(120), "the file did not open"
            page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
            assert page.get_attribute("[data-testid=loading]", "hidden") is not None
            assert page.page_errors == []
    finally:
        server.stop()
        backend.close()


SNAP = """async ([t0, t1, f]) => {
  const token = new URLSearchParams(location.search).get('token');
  const r = await fetch('/api/snap', {method: 'POST', headers: {'X-Soma-Token': token},
                                      body: JSON.stringify({trace: [[t0, f], [t1, f + 10]]})});
  return (await r.json()).ok;
}"""


def test_ctrl_s_right_after_a_save_writes_the_same_project(tmp_path):
    need_chromium()
    path = tmp_path / "tone.wav"
    sf.write(path, make_audio(2.0, FS, freqs=(440.0,), amp=0.3), FS)
    backend = AppBackend(engine_options={"spares": False})
    server = AppServer(backend).start()
    answer_held, release = threading.Event(), threading.Event()
    add_recent = backend.recent.add

    def slow_recent(p):  # the first save's answer waits (after its event) until the test says so
        if not answer_held.is_set():
            answer_held.set()
            release.wait(120)
        return add_recent(p)

    backend.recent.add = slow_recent
    try:
        backend.open_file(str(path))
        with chromium_page() as page:
            page.goto(server.url)
            page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
            for n in (1, 2):
                assert page.evaluate(SNAP, [0.3, 1.5, 435.0])
                page.wait_for_function(f"() => document.querySelectorAll('[data-testid=partial-item]').length === {n}",
                                       timeout=60_000)
                page.wait_for_selector("[data-testid=unsaved]", state="visible", timeout=10_000)
                if n == 1:
                    page.locator("[data-testid=canvas]").click(position={"x": 5, "y": 5})
                    page.keyboard.press("Control+s")
                    page.wait_for_selector("[data-testid=path-dialog][open]")
                    page.fill("[data-testid=path-input]", str(tmp_path / "take"))
                    page.click("[data-testid=path-ok]")
                    assert answer_held.wait(60)
                else:
                    page.keyboard.press("Control+s")
                # The event says saved; the first save's answer has not arrived.
                page.wait_for_selector("[data-testid=unsaved]", state="hidden", timeout=60_000)
            release.set()
            assert page.locator("[data-testid=path-dialog][open]").count() == 0
            saved = json.loads((tmp_path / "take.soma").read_text())
            assert len(saved["data"]["partials"]) == 2
            assert page.page_errors == []
    finally:
        release.set()
        server.stop()
        backend.close()
