"""End to end in headless Debian Chromium against `soma-shm serve`: open, overview pixels, zoom to a
CWT viewport, draw a stroke that snaps into a partial, select/delete, undo/redo, save, reload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from ..conftest import make_audio
from ._browser import chromium_page, need_chromium, served

pytestmark = pytest.mark.gui
FS = 48_000

PIXEL_AT = """([x, y, r, layer]) => {
  const c = document.querySelector(`[data-testid=${layer || 'canvas'}]`);
  const d = c.getContext('2d').getImageData(Math.round(x) - r, Math.round(y) - r, 2 * r + 1, 2 * r + 1).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push([d[i], d[i + 1], d[i + 2]]);
  return out;
}"""


def view_of(page):
    t0, t1, fmin, fmax = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    box = page.locator("[data-testid=canvas]").bounding_box()
    return t0, t1, fmin, fmax, box


def to_css(page, t, f):
    """Page coordinates of (t s, f Hz) on the canvas (device pixel ratio 1)."""
    t0, t1, fmin, fmax, box = view_of(page)
    x = (t - t0) / (t1 - t0) * box["width"]
    y = math.log(fmax / f) / math.log(fmax / fmin) * (box["height"] - 1) + 0.5
    return box["x"] + x, box["y"] + y


def brightness(page, t, f, r=1):
    t0, t1, fmin, fmax, box = view_of(page)
    x, y = to_css(page, t, f)
    px = page.evaluate(PIXEL_AT, [x - box["x"], y - box["y"], r])
    return float(np.mean([sum(p) for p in px]))


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    path = folder / "long tones.wav"
    sf.write(path, make_audio(40.0, FS, freqs=(440.0, 1320.0), amp=0.25, noise=0.001), FS)
    return path


def test_open_zoom_draw_undo_save_reload(recording, tmp_path):
    need_chromium()
    with served(str(recording)) as url, chromium_page() as page:
        page.goto(url)
        canvas = "[data-testid=canvas]"
        page.wait_for_selector(f"{canvas}[data-overview=drawn]", state="attached", timeout=60_000)
        # Overview pixels: the 440 Hz line is bright, 6 kHz is dark.
        assert brightness(page, 20.0, 440.0) > 300
        assert brightness(page, 20.0, 6000.0) < 150
        # The first viewport covers the whole 40 s: STFT.
        page.wait_for_selector(f"{canvas}[data-viewport-method=stft]", state="attached", timeout=60_000)
        first = int(page.get_attribute(canvas, "data-viewport-request"))

        # Zoom in (wheel, X) around 20 s down to a few seconds: the viewport is replaced by a CWT image.
        x, y = to_css(page, 20.0, 440.0)
        page.mouse.move(x, y)
        for _ in range(8):
            page.mouse.wheel(0, -300)
        page.wait_for_selector(f"{canvas}[data-viewport-method=cwt]", state="attached", timeout=60_000)
        t0, t1, *_ = view_of(page)
        assert t1 - t0 < 5.0 and t0 < 20.0 < t1
        assert int(page.get_attribute(canvas, "data-viewport-request")) > first
        # Wait for the image of the final view (latest wins), then check its pixels.
        page.wait_for_function("() => { const m = window.somaMetrics.viewports; const c = document.querySelector('[data-testid=canvas]');"
                               " return m.length && m[m.length - 1].key && c.dataset.view && m[m.length - 1].window_s < 5 }",
                               timeout=60_000)
        tc = (t0 + t1) / 2
        assert brightness(page, tc, 440.0) > 300 and brightness(page, tc, 1320.0) > 300
        assert brightness(page, tc, 800.0) < 0.5 * brightness(page, tc, 440.0)
        ruler = page.locator("[data-testid=time-ruler]").screenshot()
        assert len(ruler) > 0

        # Zoom frequency (wheel with a modifier) changes only the frequency range.
        _, _, fmin0, fmax0, _ = view_of(page)
        page.keyboard.down("Control")
        page.mouse.wheel(0, -200)
        page.keyboard.up("Control")
        t0b, t1b, fmin1, fmax1, _ = view_of(page)
        assert (t0b, t1b) == (t0, t1) and math.log(fmax1 / fmin1) < math.log(fmax0 / fmin0)

        # Pencil: a rough stroke near 440 Hz snaps into a partial on the ridge.
        page.click("[data-testid=tool-pencil]")
        ta, tb = t0 + 0.2 * (t1 - t0), t0 + 0.8 * (t1 - t0)
        steps = 12
        page.mouse.move(*to_css(page, ta, 455.0))
        page.mouse.down()
        for i in range(1, steps + 1):
            t = ta + (tb - ta) * i / steps
            page.mouse.move(*to_css(page, t, 455.0 - 25.0 * i / steps))
        page.mouse.up()
        items = page.locator("[data-testid=partial-item]")
        items.first.wait_for(timeout=60_000)
        assert items.count() == 1
        assert "440" in items.first.inner_text() or "439" in items.first.inner_text()
        # The partial is drawn on the partials layer: its colour appears on the 440 Hz row.
        px = page.evaluate(PIXEL_AT, [to_css(page, tc, 440.0)[0] - view_of(page)[4]["x"],
                                      to_css(page, tc, 440.0)[1] - view_of(page)[4]["y"], 3, "partials-layer"])
        assert any(abs(r - 0x4F) < 40 and abs(g - 0xC3) < 40 and abs(b - 0xF7) < 40 for r, g, b in px), px

        # Undo / redo are kept by the backend.
        page.click("[data-testid=undo]")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 0")
        page.click("[data-testid=redo]")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 1")

        # A stroke with no extent in time is refused with a message; the document stays.
        page.mouse.move(*to_css(page, tc, 300.0))
        page.mouse.down()
        page.mouse.up()
        assert "at least two points" in page.inner_text("[data-testid=error]")
        assert items.count() == 1

        # Save the project through the in-page path dialog.
        project = tmp_path / "session.soma"
        page.click("[data-testid=save]")
        page.fill("[data-testid=path-input]", str(project))
        page.click("[data-testid=path-ok]")
        page.wait_for_function("() => !document.querySelector('[data-testid=undo]').disabled")
        page.wait_for_timeout(200)
        saved = json.loads(project.read_text())
        assert len(saved["data"]["partials"]) == 1 and saved["source"]["file_path"].endswith("long tones.wav")

        # Select and delete, then load the project back.
        page.click("[data-testid=tool-select]")
        page.mouse.click(*to_css(page, tc, saved["data"]["partials"][0]["points"][len(saved["data"]["partials"][0]["points"]) // 2][1]))
        page.wait_for_selector("[data-testid=partial-item].selected", timeout=10_000)
        page.keyboard.press("Delete")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 0")
        page.click("[data-testid=load]")
        page.fill("[data-testid=path-input]", str(project))
        page.click("[data-testid=path-ok]")
        # The delete is unsaved: opening a project asks before dropping it.
        page.wait_for_selector("[data-testid=confirm-dialog][open]")
        assert "unsaved changes" in page.inner_text("[data-testid=confirm-message]")
        page.click("[data-testid=confirm-ok]")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 1")

        # Reloading the page restores everything from the backend.
        page.reload()
        page.wait_for_selector(f"{canvas}[data-overview=drawn]", state="attached", timeout=60_000)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 1")
        assert page.get_attribute("[data-testid=status]", "data-state") in ("ready", "computing", "error")
        assert page.page_errors == []
