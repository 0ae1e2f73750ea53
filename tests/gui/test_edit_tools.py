"""The edit tools in headless Chromium against `soma-shm serve`: box select, the selection HUD
(mute, merge, delete), crop and extend by end handles, the eraser, undo past the start, the error
banner and the pencil's dashed stroke, and a layout that follows the window's size."""

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

API = """async ([method, body]) => {
  const token = new URLSearchParams(location.search).get('token');
  const r = await fetch(`/api/${method}`, { method: 'POST', headers: { 'X-Soma-Token': token }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!data.ok) throw new Error(`${data.error.type}: ${data.error.message}`);
  return data.result;
}"""


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    path = tmp_path_factory.mktemp("tools") / "tones.wav"
    sf.write(path, make_audio(5.0, FS, freqs=(440.0, 1320.0), amp=0.25, noise=0.001), FS)
    return path


@pytest.fixture(scope="module")
def page(tones):
    need_chromium()
    with served(str(tones)) as url, chromium_page() as pg:
        pg.goto(url)
        pg.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=180_000)
        yield pg
        assert pg.page_errors == []


@pytest.fixture
def fresh(page):
    """An empty document at the whole-file view, the select tool, nothing selected."""
    ids = [p["id"] for p in api(page, "state")["document"]["partials"]]
    if ids:
        api(page, "delete_partials", ids=ids)
    wait_count(page, 0)
    page.keyboard.press("Escape")
    page.keyboard.press("0")
    if not page.locator("[data-testid=error]").is_hidden():
        page.click("[data-testid=error-close]")
    return page


def api(page, method, **body):
    return page.evaluate(API, [method, body])


def wait_count(page, n):
    page.wait_for_function(f"() => document.querySelector('[data-testid=partials-layer]').dataset.partials === '{n}'"
                           f" && document.querySelector('[data-testid=partial-count]').textContent === '{n}'",
                           timeout=60_000)


def snap(page, t0, t1, f):
    """A partial snapped along [t0, t1] near f (through the API: the pencil has its own test)."""
    n = len(api(page, "state")["document"]["partials"])
    api(page, "snap", trace=[[t0, f * 1.02], [(t0 + t1) / 2, f * 0.99], [t1, f * 1.01]])
    wait_count(page, n + 1)


def partials(page):
    doc = api(page, "state")["document"]
    block = np.frombuffer(bytes(page.evaluate(
        "async (id) => { const token = new URLSearchParams(location.search).get('token');"
        " const r = await fetch(`/blob/${id}`, { headers: { 'X-Soma-Token': token } });"
        " return Array.from(new Uint8Array(await r.arrayBuffer())); }", doc["points_blob"])), dtype=np.float32)
    block = block.reshape(-1, 3)
    out, k = {}, 0
    for p in doc["partials"]:
        out[p["id"]] = {**p, "points": block[k:k + p["n"]]}
        k += p["n"]
    return out


def to_css(page, t, f):
    t0, t1, fmin, fmax = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    box = page.locator("[data-testid=canvas]").bounding_box()
    x = (t - t0) / (t1 - t0) * box["width"]
    y = math.log(fmax / f) / math.log(fmax / fmin) * (box["height"] - 1) + 0.5
    return box["x"] + x, box["y"] + y


def drag(page, a, b, steps=10, shift=False):
    page.mouse.move(*a)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(a[0] + (b[0] - a[0]) * i / steps, a[1] + (b[1] - a[1]) * i / steps)
    page.mouse.up()
    if shift:
        page.keyboard.up("Shift")


def selected(page, n):
    """Wait until the list shows n selected rows (rows are drawn on the next frame)."""
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=partial-item].selected').length === {n}")
    return True


def test_box_select_with_shift_then_hud_mute_merge_and_delete(fresh):
    page = fresh
    snap(page, 0.5, 1.5, 440.0)
    snap(page, 2.5, 3.5, 440.0)
    snap(page, 0.5, 3.5, 1320.0)
    page.click("[data-testid=tool-select]")
    # A box around the first 440 Hz partial only.
    drag(page, to_css(page, 0.3, 520.0), to_css(page, 1.7, 380.0))
    page.wait_for_function("() => !document.querySelector('[data-testid=hud]').hidden")
    assert page.inner_text("[data-testid=hud-count]") == "1 selected" and selected(page, 1)
    # Shift adds the second one; a box without shift replaces.
    drag(page, to_css(page, 2.3, 520.0), to_css(page, 3.7, 380.0), shift=True)
    page.wait_for_function("() => document.querySelector('[data-testid=hud-count]').textContent === '2 selected'")
    assert selected(page, 2)
    t0, t1 = (float(x) for x in page.inner_text("[data-testid=hud-time]").replace(" s", "").split("–"))
    assert t0 == pytest.approx(0.5, abs=0.05) and t1 == pytest.approx(3.5, abs=0.05)
    hz = page.inner_text("[data-testid=hud-freq]")
    lo, hi = (float(x.replace(" Hz", "")) for x in hz.split("–"))
    assert 420 < lo <= hi < 460
    amp = float(page.inner_text("[data-testid=hud-amp]").split()[-1])
    assert amp == pytest.approx(0.25, rel=0.15)
    # Mute from the HUD: both muted, one undoable edit.
    page.click("[data-testid=hud-mute]")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item].muted').length === 2")
    parts = partials(page)
    assert sum(p["is_muted"] for p in parts.values()) == 2
    # Merge: one partial spanning both, the gap bridged.
    page.click("[data-testid=hud-merge]")
    wait_count(page, 2)
    merged = [p for p in partials(page).values() if p["points"][0, 1] < 1000][0]
    t = merged["points"][:, 0]
    assert t[0] == pytest.approx(0.5, abs=0.05) and t[-1] == pytest.approx(3.5, abs=0.05) and np.diff(t).max() < 0.02
    assert page.inner_text("[data-testid=hud-count]") == "1 selected"
    # Undo brings both back; redo merges again; delete from the HUD.
    page.click("[data-testid=undo]")
    wait_count(page, 3)
    page.click("[data-testid=redo]")
    wait_count(page, 2)
    page.click("[data-testid=hud-delete]")
    wait_count(page, 1)
    assert page.locator("[data-testid=hud]").is_hidden()


def test_end_handles_crop_inside_and_extend_beyond(fresh):
    page = fresh
    snap(page, 1.0, 3.0, 440.0)
    (pid, p), = partials(page).items()
    page.click("[data-testid=tool-select]")
    page.mouse.click(*to_css(page, 2.0, 440.0))
    page.wait_for_function("() => document.querySelector('[data-testid=hud-count]').textContent === '1 selected'")
    end_t, end_f = float(p["points"][-1, 0]), float(p["points"][-1, 1])
    # Crop: the end handle dragged back to 2.2 s.
    drag(page, to_css(page, end_t, end_f), to_css(page, 2.2, 440.0))
    page.wait_for_function(f"() => document.querySelector('[data-testid=undo]').title.includes('crop {pid}')")
    q = partials(page)[pid]["points"]
    assert q[-1, 0] == pytest.approx(2.2, abs=0.03) and q[0, 0] == pytest.approx(p["points"][0, 0])
    # Extend: the end handle dragged beyond the end, a little off the line: it snaps onto 440 Hz.
    drag(page, to_css(page, float(q[-1, 0]), float(q[-1, 1])), to_css(page, 4.2, 455.0))
    page.wait_for_function(f"() => document.querySelector('[data-testid=undo]').title.includes('extend {pid}')",
                           timeout=60_000)
    r = partials(page)[pid]["points"]
    assert r[-1, 0] > 4.0 and np.all(np.diff(r[:, 0]) > 0)
    ext = r[r[:, 0] > 2.25]
    assert np.median(np.abs(1200 * np.log2(ext[:, 1] / 440.0))) < 15
    page.wait_for_function("() => document.querySelector('[data-testid=partials-layer]').dataset.pending === '0'")
    page.click("[data-testid=undo]")
    page.wait_for_function(f"() => document.querySelector('[data-testid=undo]').title.includes('crop {pid}')")
    assert partials(page)[pid]["points"].shape[0] == q.shape[0]


def test_eraser_splits_a_partial_and_undo_joins_it(fresh):
    page = fresh
    snap(page, 0.5, 4.0, 440.0)
    (pid, p), = partials(page).items()
    page.click("[data-testid=tool-eraser]")
    drag(page, to_css(page, 2.0, 700.0), to_css(page, 2.0, 300.0))
    wait_count(page, 2)
    parts = sorted(partials(page).values(), key=lambda q: q["points"][0, 0])
    assert parts[0]["id"] == pid and parts[0]["points"][-1, 0] < 2.0 < parts[1]["points"][0, 0]
    assert parts[1]["points"][-1, 0] == pytest.approx(p["points"][-1, 0], abs=1e-4)
    page.click("[data-testid=undo]")
    wait_count(page, 1)
    # Erasing where there is nothing says so in the banner and changes nothing.
    drag(page, to_css(page, 2.0, 5000.0), to_css(page, 2.5, 5000.0))
    page.wait_for_selector("[data-testid=error]:not([hidden])")
    assert "touched no partial" in page.inner_text("[data-testid=error]")
    wait_count(page, 1)


def test_pencil_strokes_lose_their_dashes_and_undo_stops_quietly(fresh):
    page = fresh
    page.click("[data-testid=tool-pencil]")
    for k in range(7):  # seven quick strokes along the two tones
        f = 440.0 if k % 2 == 0 else 1320.0
        t0 = 0.3 + 0.6 * k
        drag(page, to_css(page, t0, f * 1.03), to_css(page, t0 + 0.5, f * 0.98), steps=6)
    wait_count(page, 7)
    page.wait_for_function("() => document.querySelector('[data-testid=partials-layer]').dataset.pending === '0'")
    # Undo all the way, then more: no error, the button is disabled.
    # (The history holds the earlier tests' edits too: Ctrl+Z until the button is disabled.)
    for _ in range(300):
        if page.evaluate("() => document.querySelector('[data-testid=undo]').disabled"):
            break
        page.keyboard.press("Control+z")
        page.wait_for_timeout(40)
    page.wait_for_function("() => document.querySelector('[data-testid=undo]').disabled")
    page.keyboard.press("Control+z")
    api(page, "undo")  # even asked directly, undo at the start changes nothing
    page.wait_for_timeout(300)
    assert page.locator("[data-testid=error]").is_hidden()
    assert not page.locator("[data-testid=redo]").is_disabled()


def test_error_banner_overlays_and_layout_follows_the_window(fresh):
    page = fresh
    stage = page.locator("[data-testid=stage]").bounding_box()
    page.click("[data-testid=tool-pencil]")
    page.mouse.click(*to_css(page, 1.0, 440.0))  # a stroke with no extent in time
    page.wait_for_selector("[data-testid=error]:not([hidden])")
    assert page.locator("[data-testid=stage]").bounding_box() == stage  # nothing pushed down
    page.click("[data-testid=error-close]")
    assert page.locator("[data-testid=error]").is_hidden()
    for w, h in ((900, 500), (1400, 900), (1000, 620)):
        page.set_viewport_size({"width": w, "height": h})
        page.wait_for_function(
            f"() => {{ const c = document.querySelector('[data-testid=canvas]');"
            f" return c.height === Math.round(c.getBoundingClientRect().height * devicePixelRatio)"
            f" && c.getBoundingClientRect().bottom < {h} }}")
        status = page.locator("[data-testid=status]").bounding_box()
        ruler = page.locator("[data-testid=time-ruler]").bounding_box()
        canvas = page.locator("[data-testid=canvas]").bounding_box()
        assert status["y"] + status["height"] <= h + 0.5 and status["y"] >= h - 40
        assert ruler["y"] + ruler["height"] <= status["y"] + 0.5
        assert canvas["y"] + canvas["height"] <= ruler["y"] + 0.5 and canvas["height"] > h - 200
        assert page.locator("[data-testid=partials-layer]").bounding_box() == canvas
    page.set_viewport_size({"width": 1280, "height": 760})


def test_thousands_of_partials_list_only_visible_rows_and_draw_only_the_view(fresh, tones, tmp_path):
    from soma_shm.app.document import Partial, SomaDocument

    page = fresh
    rng = np.random.default_rng(7)
    doc = SomaDocument()
    doc.set_source(str(tones))
    parts = []
    for i in range(3000):
        t0 = float(rng.uniform(0.0, 4.5))
        k = int(rng.integers(5, 40))
        pts = np.column_stack([t0 + 0.01 * np.arange(k), np.full(k, float(rng.uniform(100, 5000))), np.full(k, 0.1)])
        pts.flags.writeable = False
        parts.append(Partial(f"p{i + 1}", pts))
    doc.partials = parts
    doc.save(tmp_path / "many.soma")
    api(page, "load_project", path=str(tmp_path / "many.soma"))
    wait_count(page, 3000)
    rows = page.locator("[data-testid=partial-item]")
    assert 5 < rows.count() < 100  # only the rows in view (and a few around) are in the page
    first = sorted(parts, key=lambda p: (p.points[0, 0], p.id))
    assert rows.first.get_attribute("data-id") == first[0].id
    page.locator("[data-testid=partial-scroller]").evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_function(f"() => [...document.querySelectorAll('[data-testid=partial-item]')].some("
                           f"(li) => li.dataset.id === '{first[-1].id}')")
    assert rows.count() < 100
    page.locator(f"[data-testid=partial-item][data-id={first[-1].id}]").click()
    page.wait_for_function("() => document.querySelector('[data-testid=hud-count]').textContent === '1 selected'")
    # Whole file: every partial drawn; zoomed in, only those in view.
    page.wait_for_function("() => window.somaMetrics.partialsDrawn === 3000")
    page.keyboard.press("h")
    page.mouse.move(*to_css(page, 2.5, 1000.0))
    for _ in range(6):
        page.mouse.wheel(0, -300)
    page.wait_for_function("() => window.somaMetrics.partialsDrawn > 0 && window.somaMetrics.partialsDrawn < 1500")
    page.wait_for_timeout(300)  # the last wheel tick drawn
    t0, t1, *_ = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    expected = sum(1 for p in parts if p.points[-1, 0] >= t0 and p.points[0, 0] <= t1)
    assert page.evaluate("() => window.somaMetrics.partialsDrawn") == expected


# Rows of each requested column of the partials layer that are not transparent: {x: [[y, r, g, b, a], ...]}.
LAYER_COLUMNS = """(xs) => {
  const c = document.querySelector('[data-testid=partials-layer]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const out = {};
  for (const x of xs) {
    const rows = [];
    for (let y = 0; y < c.height; y++) { const k = 4 * (y * c.width + x); if (d[k + 3]) rows.push([y, d[k], d[k + 1], d[k + 2], d[k + 3]]); }
    out[x] = rows;
  }
  return out;
}"""


def polyline_columns(t, f, t0, kx, fmax, ky):
    """{column: (lowest y, highest y)} of the line through the points (t, f) (as the page holds
    them: float32) on a layer whose x is (t - t0) * kx and y is (ln fmax - ln f) * ky + 0.5."""
    xs = (np.float32(t).astype(float) - t0) * kx
    ys = (math.log(fmax) - np.log(np.float32(f).astype(float))) * ky + 0.5
    out: dict = {}

    def add(c, *y):
        lo, hi = out.get(c, (math.inf, -math.inf))
        out[c] = (min(lo, *y), max(hi, *y))

    add(int(math.floor(xs[0])), ys[0])
    for xa, ya, xb, yb in zip(xs[:-1], ys[:-1], xs[1:], ys[1:]):
        ca, cb = int(math.floor(xa)), int(math.floor(xb))
        edges = [xa] + list(range(ca + 1, cb + 1)) + [xb]  # where the segment meets each column
        at = [ya + (yb - ya) * (x - xa) / (xb - xa) for x in edges]
        for k, c in enumerate(range(ca, cb + 1)):
            add(c, at[k], at[k + 1])
    return out


DENSE_T = np.arange(0.0, 1.0, 0.001)  # a point per millisecond: ~5 points per column at the whole 5 s
DENSE = {  # id: (start s, frequency curve, colour, muted)
    "steady": (0.3, np.full(DENSE_T.size, 440.0), "#ff0000", False),
    # +-10 % every other point: each column's extremes are points inside it, not its edges
    "zigzag": (1.6, 1000.0 * np.exp(0.1 * (-1.0) ** np.arange(DENSE_T.size)), "#00ff00", False),
    "muted": (2.9, np.full(DENSE_T.size, 2000.0), "#0000ff", True),
    "chosen": (3.9, np.full(DENSE_T.size, 300.0), "#ffff00", False),
}
DENSE_RGB = {"steady": (255, 0, 0), "zigzag": (0, 255, 0), "muted": (0, 0, 255), "chosen": (255, 255, 0)}


def load_dense(page, tones, tmp_path):
    from soma_shm.app.document import Partial, SomaDocument

    doc = SomaDocument()
    doc.set_source(str(tones))
    parts = []
    for pid, (start, f, colour, muted) in DENSE.items():
        pts = np.column_stack([start + DENSE_T, f, np.full(DENSE_T.size, 0.1)])
        pts.flags.writeable = False
        parts.append(Partial(pid, pts, colour, muted))
    doc.partials = parts
    doc.save(tmp_path / "dense.soma")
    api(page, "load_project", path=str(tmp_path / "dense.soma"))
    wait_count(page, len(DENSE))


def dense_columns(page, muted=("muted",)):
    """Checks every column of the dense partials on the partials layer at the current view (each
    shows its line's whole extent in its colour and nothing beyond; ``muted`` faint and dashed);
    returns (the expected extents by id, the layer's pixels by column, kx)."""
    t0, t1, fmin, fmax = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    w, h = (page.evaluate(f"() => document.querySelector('[data-testid=partials-layer]').{k}") for k in ("width", "height"))
    kx, ky = w / (t1 - t0), (h - 1) / math.log(fmax / fmin)
    extents = {}
    for pid, (start, f, _, _) in DENSE.items():
        cols = {c: e for c, e in polyline_columns(start + DENSE_T, f, t0, kx, fmax, ky).items()
                if 0 <= c < w and e[1] >= 0 and e[0] < h}
        if cols:
            extents[pid] = cols
    pixels = page.evaluate(LAYER_COLUMNS, sorted({c for e in extents.values() for c in e}))
    for pid, cols in extents.items():
        drawn_cols = 0
        for c, (lo, hi) in cols.items():
            mine = [row for row in pixels[str(c)] if tuple(row[1:4]) == DENSE_RGB[pid]]
            if not mine:
                continue
            drawn_cols += 1
            ys = [row[0] for row in mine]
            # The whole extent of the partial's line in this column, and nothing beyond it (the
            # line is 2 pixels thick).
            assert min(ys) <= max(0, math.ceil(lo)) and max(ys) >= min(h - 1, math.floor(hi) - 1), (pid, c, lo, hi, ys)
            assert min(ys) >= lo - 2 and max(ys) <= hi + 2, (pid, c, lo, hi, ys)
            assert {row[4] for row in mine} == ({102} if pid in muted else {255}), pid
        if pid in muted:  # dashed: about every other run of 4 columns left out
            assert 0.3 * len(cols) < drawn_cols < 0.7 * len(cols), (pid, drawn_cols, len(cols))
        else:
            assert drawn_cols >= len(cols) - 1, (pid, drawn_cols, len(cols))
    return extents, pixels, kx


def test_a_wide_window_draws_dense_partials_by_column_with_their_whole_extent(fresh, tones, tmp_path):
    """Partials with several points per pixel column are drawn decimated (the lowest to the
    highest point in each column): every column of each partial still shows its whole frequency
    extent in its colour, nothing strays from it, a muted one is faint and dashed, the selected one
    has a white halo; zoomed in, the same partials are stroked as lines."""
    page = fresh
    load_dense(page, tones, tmp_path)
    page.keyboard.press("0")
    page.locator("[data-testid=partial-item][data-id=chosen]").click()
    page.wait_for_function("() => document.querySelector('[data-testid=hud-count]').textContent === '1 selected'")
    page.wait_for_function("() => window.somaMetrics.partialsDecimated === 4")
    extents, pixels, kx = dense_columns(page)
    assert 0.001 * kx < 1 and len(extents) == 4  # several points per column: the decimated drawing
    # The zigzag's columns are tall: its whole swing (a fifth of an octave) in every column but
    # its two ends (which may hold only a point or two).
    zig = extents["zigzag"]
    assert min(zig[c][1] - zig[c][0] for c in sorted(zig)[1:-1]) > 10
    # The selected partial: white just above and below its line, the others not.
    for pid in ("chosen", "steady"):
        c = sorted(extents[pid])[len(extents[pid]) // 2]
        lo, hi = extents[pid][c]
        white = [row[0] for row in pixels[str(c)] if tuple(row[1:4]) == (255, 255, 255)]
        if pid == "chosen":
            assert any(y < lo - 0.5 for y in white) and any(y > hi + 0.5 for y in white), (lo, hi, white)
        else:
            assert white == []
    # Zoomed in to a 0.25 s window: a point every few pixels, stroked as lines.
    page.keyboard.press("h")
    page.mouse.move(*to_css(page, 0.8, 440.0))
    for _ in range(4):
        page.mouse.wheel(0, -500)
    page.wait_for_function("() => window.somaMetrics.partialsDrawn === 1 && window.somaMetrics.partialsDecimated === 0")
    page.wait_for_timeout(300)
    x, y = to_css(page, 0.8, 440.0)
    box = page.locator("[data-testid=partials-layer]").bounding_box()
    w = page.evaluate("() => document.querySelector('[data-testid=partials-layer]').width")
    col = int(round((x - box["x"]) * w / box["width"]))
    rows = page.evaluate(LAYER_COLUMNS, [col])[str(col)]
    assert any(abs(r[0] - (y - box["y"])) <= 2 and tuple(r[1:4]) == (255, 0, 0) for r in rows), rows


def test_panning_shifts_the_drawn_partials_and_an_edit_redraws_them(fresh, tones, tmp_path):
    """While panning at one scale the page copies the partials it drew (with a margin) instead of
    drawing them again: after a drag every partial is where it belongs at the new view, a
    mute while the view stands still shows at once, and so does a drag after it."""
    page = fresh
    load_dense(page, tones, tmp_path)
    page.keyboard.press("0")
    page.keyboard.press("h")
    page.mouse.move(*to_css(page, 2.5, 1000.0))
    page.mouse.wheel(0, -460)  # a 2.5 s window: still several points per column
    page.keyboard.down("Alt")
    page.mouse.wheel(0, -460)  # and five octaves around 1 kHz, so a drag moves in frequency too
    page.keyboard.up("Alt")
    page.wait_for_timeout(300)
    fmin, fmax = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(",")[2:])
    assert math.log2(fmax / fmin) < 6
    copied = page.evaluate("() => window.somaMetrics.partialsFromCache || 0")
    start = to_css(page, 2.5, 1000.0)
    drag(page, start, (start[0] - 150, start[1] + 30), steps=15)  # later in time, lower in frequency
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.somaMetrics.partialsFromCache") > copied
    t0, t1, *_ = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    assert t0 > 1.0 and t1 - t0 == pytest.approx(2.5, rel=0.05)
    extents, _, kx = dense_columns(page)
    assert 0.001 * kx < 1 and {"zigzag", "muted"} <= set(extents)
    api(page, "update_partial", id="zigzag", is_muted=True)
    page.wait_for_function("() => document.querySelector('[data-testid=partial-item][data-id=zigzag]').classList.contains('muted')")
    page.wait_for_timeout(300)
    dense_columns(page, muted=("muted", "zigzag"))
    start = to_css(page, 3.0, 1000.0)
    drag(page, start, (start[0] + 100, start[1] - 20), steps=10)
    page.wait_for_timeout(300)
    dense_columns(page, muted=("muted", "zigzag"))


def test_panning_far_draws_the_partials_met_on_the_way(fresh, tones, tmp_path):
    """Panning well beyond the margin drawn around the first view: the partials met on the way are
    drawn where they belong at every stop, and once the view rests a cache around the new place
    is ready (drawn between frames), so the next drag copies it again."""
    page = fresh
    load_dense(page, tones, tmp_path)
    page.keyboard.press("0")
    page.keyboard.press("h")
    page.mouse.move(*to_css(page, 0.0, 1000.0))
    page.mouse.wheel(0, -460)  # a 2.5 s window at the start: several points per column
    page.wait_for_timeout(300)
    t0, t1, *_ = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    assert t0 < 0.1 and t1 - t0 == pytest.approx(2.5, rel=0.05)
    box = page.locator("[data-testid=canvas]").bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    seen = set()
    for _ in range(5):  # a fifth of a view at a time, later in time, to the end of the file
        drag(page, centre, (centre[0] - box["width"] / 5, centre[1]), steps=8)
        page.wait_for_timeout(150)
        extents, _, kx = dense_columns(page)
        assert 0.001 * kx < 1
        seen |= set(extents)
    t0, t1, *_ = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
    assert t1 == pytest.approx(5.0, abs=0.01)  # a whole view from the start: beyond the first margin
    assert seen == set(DENSE)
    copied = page.evaluate("() => window.somaMetrics.partialsFromCache || 0")
    drag(page, centre, (centre[0] + 40, centre[1]), steps=4)
    page.wait_for_timeout(150)
    assert page.evaluate("() => window.somaMetrics.partialsFromCache") > copied
    dense_columns(page)
