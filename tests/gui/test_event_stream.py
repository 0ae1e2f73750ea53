"""The page and its event stream in headless Debian Chromium: no event is lost while the stream
connects. The page asks for the backend's state only once its stream is open; asked before, a file
that finished opening in between (its "opened" event published before the stream subscribed) was
never shown, and the page waited on its loading screen for good."""

from __future__ import annotations

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
