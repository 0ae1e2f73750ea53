"""UI benchmark: the app page in headless Chromium over a 10-minute 48 kHz recording.

Runs `soma-shm serve` in a subprocess, drives the page with Playwright (Debian's Chromium) and
reads what the page itself measured (``window.somaMetrics``, a PerformanceObserver for long
tasks, a requestAnimationFrame loop for frame gaps):

- ``open``: from the ``open_file`` call to the overview on screen (decode + overview + blob +
  colour map + draw), median of ``--repeats`` opens of the same file;
- ``storm``: a zoom/pan storm (wheel ticks every ~16 ms zooming from the whole file to a 2 s
  window, zoom out/in pairs, pan drags), repeated ``--repeats`` times: the page's longest task,
  its longest frame gap, and the time from the last input to the viewport image of the final
  view on screen, next to that image's worker compute time and where the rest went (held for a
  computation about to end, engine queue, pipe to and from the worker, tone map, the page's
  fetch / colour / bitmap); then the same view is asked for once more when all is calm, so the
  storm's figures can be compared with a calm request in the same run.

Targets (issue 5): no long task over 50 ms during the storm; last zoom -> CWT image on screen
within kernel time + 150 ms for a 2 s window; open a 10-minute 48 kHz file -> overview on
screen <= 1.5 s.

``--edits``: the same recording with a project of ``--partials`` (10,000) partials, on this
tree's page and, side by side, on the page of ``--old-ref`` (the app before edits travelled as
deltas; ``none`` skips it): project load -> partials on screen, pencil stroke -> partial on
screen, Delete -> gone from screen, and while panning a 60 s and a 280 s window (``--edit-repeats``
pans each): the frame gaps (p50/p95/p99/max, dropped frames) and the page's drawing time of each
frame (p50/p95/p99/longest), medians over the pans and the worst of all. Targets (issue 13):
stroke <= 100 ms, delete <= 50 ms, load <= 1 s, frames <= 16 ms (every frame drawn within the
budget: the longest draw <= 16 ms, frame gaps at the 60 Hz vsync up to the 95th percentile).

Usage::

    python perf/bench_ui.py [--repeats 5] [--seconds 600]
    python perf/bench_ui.py --edits [--partials 10000] [--edit-repeats 5] [--old-repeats 2] [--old-ref REF]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402
import numpy as np  # noqa: E402

FS = 48_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

INSTRUMENT = """() => {
  window.__bench = { longtasks: [], gaps: [], recording: false, last: performance.now() };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (window.__bench.recording) window.__bench.longtasks.push(e.duration);
  }).observe({ type: 'longtask', buffered: false });
  const loop = (t) => {
    const b = window.__bench;
    if (b.recording) b.gaps.push(t - b.last);
    b.last = t;
    requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}"""

OPEN = """async (path) => {
  const token = new URLSearchParams(location.search).get('token');
  const c = document.querySelector('[data-testid=canvas]');
  const opens = window.somaMetrics.opens || 0;
  const t0 = performance.now();
  const r = await fetch('/api/open_file', { method: 'POST', headers: { 'X-Soma-Token': token },
                                            body: JSON.stringify({ path }) });
  const body = await r.json();
  if (!body.ok) throw new Error(`open failed: ${body.error.type}: ${body.error.message}`);
  while ((window.somaMetrics.opens || 0) === opens || c.dataset.overview !== 'drawn') await new Promise((res) => requestAnimationFrame(res));
  return window.somaMetrics.overviewDrawnAt - t0;
}"""

FINAL_IMAGE = """(after) => {
  const c = document.querySelector('[data-testid=canvas]');
  const v = window.somaMetrics.viewports;
  const last = v[v.length - 1];
  if (!last || last.at < after) return null;
  const [t0, t1] = c.dataset.view.split(',').map(Number);
  const key = last.key ? last.key.split(',').map(Number) : null;
  if (!key || Math.abs(key[0] - t0) > 1e-6 || Math.abs(key[1] - t1) > 1e-6) return null;
  return { at: last.at, method: last.method, window_s: last.window_s, compute_s: last.timings.compute_s ?? null,
           total_s: last.timings.total_s ?? null, timings: last.timings, page: last.page || {},
           requests: window.somaMetrics.requests };
}"""

# The final view asked for again once everything is calm (no storm, the worker warm): the same
# image's latency and kernel time without the storm's cancellations and respawns.
QUIET_REPEAT = """async () => {
  const token = new URLSearchParams(location.search).get('token');
  const c = document.querySelector('[data-testid=canvas]');
  const [t0, t1, fmin, fmax] = c.dataset.view.split(',').map(Number);
  const v = window.somaMetrics.viewports, n = v.length, started = performance.now();
  const r = await fetch('/api/view', { method: 'POST', headers: { 'X-Soma-Token': token },
                                       body: JSON.stringify({ t0, t1, fmin, fmax, width: c.width, height: c.height }) });
  const id = (await r.json()).result.request_id;
  while (!v.slice(n).some((e) => e.id === id)) await new Promise((res) => requestAnimationFrame(res));
  const e = v.slice(n).find((x) => x.id === id);
  return { latency_s: (e.at - started) / 1000, timings: e.timings, page: e.page || {} };
}"""


def _breakdown(timings: dict, page: dict) -> dict:
    """Seconds spent per stage of one image, from the backend's and the page's timings."""
    ms = lambda k: page[k] / 1000.0 if isinstance(page.get(k), (int, float)) else None  # noqa: E731
    kernel, compute = timings.get("kernel_s"), timings.get("compute_s")
    return {
        "held_s": timings.get("held_s"),
        "engine_queued_s": timings.get("queued_s"),
        "engine_to_from_worker_s": (timings["overhead_s"] - timings["queued_s"]) if "overhead_s" in timings else None,
        "tone_map_s": (compute - kernel) if kernel is not None and compute is not None else None,
        "event_to_bitmap_s": (page["imageAt"] - page["eventAt"]) / 1000.0 if "imageAt" in page else None,
        "fetch_s": ms("fetch"), "colour_s": ms("colour"), "bitmap_s": ms("bitmap"),
    }


def storm(page, box) -> dict:
    """One zoom/pan storm; returns the page's figures."""
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55
    page.keyboard.press("0")  # fit: the whole file
    page.wait_for_timeout(300)
    page.evaluate("() => { const b = window.__bench; b.longtasks = []; b.gaps = []; b.recording = true;"
                  " window.somaMetrics.longestDrawMs = 0; }")
    requests0 = page.evaluate("() => window.somaMetrics.requests")
    page.mouse.move(cx, cy)
    ticks = 0
    # Zoom in from 600 s to ~2 s: ln(300) / 0.15 = 38 ticks of deltaY = -100.
    for _ in range(38):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(16)
        ticks += 1
    for _ in range(8):  # out and back in: ends at the same span
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(16)
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(16)
        ticks += 2
    page.mouse.down()  # pan drags (pan tool)
    for i in range(15):
        page.mouse.move(cx - 8 * (i + 1), cy)
        page.wait_for_timeout(16)
    page.mouse.up()
    last_input = page.evaluate("() => window.somaMetrics.lastInputAt")
    final = None
    deadline = time.monotonic() + 60
    while final is None and time.monotonic() < deadline:
        final = page.evaluate(FINAL_IMAGE, last_input)
        if final is None:
            page.wait_for_timeout(5)
    figures = page.evaluate("() => { const b = window.__bench; b.recording = false;"
                            " return { longtasks: b.longtasks, gaps: b.gaps }; }")
    if final is None:
        raise RuntimeError("the final view's image never reached the screen")
    page.wait_for_timeout(700)
    quiet = page.evaluate(QUIET_REPEAT)
    return {
        "ticks": ticks,
        "latency_s": (final["at"] - last_input) / 1000.0,
        "compute_s": final["compute_s"],
        "worker_total_s": final["total_s"],
        "method": final["method"],
        "worker_timings": final["timings"],
        "view_requests": final["requests"] - requests0,
        "window_s": final["window_s"],
        "longest_task_ms": max(figures["longtasks"], default=0.0),
        "long_tasks": len(figures["longtasks"]),
        "longest_frame_gap_ms": max(figures["gaps"], default=0.0),
        "longest_draw_ms": page.evaluate("() => window.somaMetrics.longestDrawMs"),
        "frames": len(figures["gaps"]),
        "breakdown": _breakdown(final["timings"], final["page"]),
        "quiet": {"latency_s": quiet["latency_s"], "kernel_s": quiet["timings"].get("kernel_s"),
                  "worker_timings": quiet["timings"], "breakdown": _breakdown(quiet["timings"], quiet["page"])},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=600.0, help="recording length (default 10 minutes)")
    ap.add_argument("--edits", action="store_true", help="the editing figures at --partials partials instead")
    ap.add_argument("--partials", type=int, default=10_000)
    ap.add_argument("--edit-repeats", type=int, default=5)
    ap.add_argument("--old-repeats", type=int, default=2)
    ap.add_argument("--old-ref", default="", help="git ref of the older app to compare with; 'none' to skip")
    args = ap.parse_args()
    if args.edits:
        return main_edits(args)
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench_ui_") as tmp:
        wav = Path(tmp) / "recording.wav"
        sf.write(wav, _util.recording(args.seconds, FS, seed=0), FS, subtype="PCM_16")
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **own_folders(Path(tmp))})
        try:
            url = proc.stdout.readline().strip()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600 + 56 + 262, "height": 600 + 24 + 80})
                page.goto(url)
                page.wait_for_selector("[data-testid=status]")
                page.evaluate(INSTRUMENT)
                # Calibration: a deliberate 80 ms task must be seen by the long-task observer.
                page.evaluate("() => { window.__bench.recording = true; }")
                page.evaluate("() => new Promise((res) => setTimeout(() => { const t = performance.now();"
                              " while (performance.now() - t < 80) {} res(); }, 0))")
                page.wait_for_timeout(200)
                seen = page.evaluate("() => { const b = window.__bench; b.recording = false; return b.longtasks; }")
                if not seen or max(seen) < 70:
                    raise RuntimeError(f"the long-task observer missed a deliberate 80 ms task ({seen})")
                opens = []
                for _ in range(args.repeats):
                    opens.append(page.evaluate(OPEN, str(wav)) / 1000.0)
                    page.wait_for_timeout(300)
                box = page.locator("[data-testid=canvas]").bounding_box()
                storm(page, box)  # warm-up: first CWT compile/caches in fresh workers
                storms = [storm(page, box) for _ in range(args.repeats)]
                browser.close()
        finally:
            proc.terminate()
            proc.communicate(timeout=30)

    med = lambda key: _util.median([s[key] for s in storms])  # noqa: E731
    latency, compute = med("latency_s"), med("compute_s")
    kernel = _util.median([s["worker_timings"].get("kernel_s", float("nan")) for s in storms])
    over_kernel = _util.median([s["latency_s"] - s["worker_timings"].get("kernel_s", float("nan")) for s in storms])
    quiet_over = _util.median([s["quiet"]["latency_s"] - s["quiet"]["kernel_s"] for s in storms])
    part = lambda key: _util.median([s["breakdown"][key] or 0.0 for s in storms])  # noqa: E731
    rows = [
        ["open 10 min -> overview on screen (s)", _util.median(opens), "<= 1.5", _util.median(opens) <= 1.5],
        ["  first open (cold server process) (s)", opens[0], "-", None],
        ["storm: longest task (ms)", max(s["longest_task_ms"] for s in storms), "<= 50",
         max(s["longest_task_ms"] for s in storms) <= 50],
        ["storm: long tasks (count, all runs)", sum(s["long_tasks"] for s in storms), "0", None],
        ["storm: longest frame gap (ms, median)", med("longest_frame_gap_ms"), "-", None],
        ["storm: longest draw of all layers (ms)", max(s["longest_draw_ms"] for s in storms), "-", None],
        [f"last input -> {storms[-1]['method'].upper()} image on screen (s)", latency, "-", None],
        ["  kernel time of that image (s)", kernel, "-", None],
        ["  worker compute incl. tone map (s)", compute, "-", None],
        ["  latency - kernel (s, median of runs)", over_kernel, "<= 0.150", over_kernel <= 0.150],
        ["  latency - worker compute (s)", latency - compute, "-", None],
        ["    held for a computation about to end (s)", part("held_s"), "-", None],
        ["    engine: queued (s)", part("engine_queued_s"), "-", None],
        ["    engine: to and from the worker (s)", part("engine_to_from_worker_s"), "-", None],
        ["    worker: tone map (s)", part("tone_map_s"), "-", None],
        ["    page: event -> bitmap (s)", part("event_to_bitmap_s"), "-", None],
        ["      fetch / colour / bitmap (s)",
         "/".join(f"{part(k):.3f}" for k in ("fetch_s", "colour_s", "bitmap_s")), "-", None],
        ["  window (s)", med("window_s"), "2", None],
        ["same view again, calm: latency - kernel (s)", quiet_over, "-", None],
        ["  kernel storm / calm (ratio, median)",
         _util.median([s["worker_timings"]["kernel_s"] / s["quiet"]["kernel_s"] for s in storms]), "-", None],
    ]
    print(f"UI over a {args.seconds:.0f} s 48 kHz recording, {args.repeats} repeats (medians unless noted)")
    print(_util.table([[r[0], r[1], r[2], "" if r[3] is None else ("ok" if r[3] else "MISSED")] for r in rows],
                      ["figure", "value", "target", ""]))
    out = _util.write_json("bench_ui.json", {"machine": _util.machine(), "seconds": args.seconds, "opens_s": opens,
                                              "storms": storms})
    print(f"wrote {out}")
    return 0


# ------------------------------------------------------------------------- 10,000 partials
# Measured the same way on the page of this tree and on the page of an older tree (``--old-ref``,
# by default the commit before edits travelled as deltas), both served by this tree's engine:
# what a person sees, from the input to the frame that shows its result (``partial-count`` in the
# list and one more animation frame, so the drawing of that frame is done).
EDIT_HELPERS = """() => {
  window.__edit = { upAt: 0, keyAt: 0, recording: false, gaps: [], last: performance.now() };
  window.addEventListener('pointerup', () => { window.__edit.upAt = performance.now(); }, true);
  window.addEventListener('keydown', () => { window.__edit.keyAt = performance.now(); }, true);
  const loop = (t) => { const b = window.__edit; if (b.recording) b.gaps.push(t - b.last); b.last = t; requestAnimationFrame(loop); };
  requestAnimationFrame(loop);
  // Resolves in the animation frame after the list's count became n: that frame's drawing (the
  // app's, asked for in the same task that changed the count) has run by then.
  window.__waitCount = (n, timeoutMs) => new Promise((resolve, reject) => {
    const el = document.querySelector('[data-testid=partial-count]');
    const done = () => requestAnimationFrame(() => resolve(performance.now()));
    if (el.textContent === String(n)) { done(); return; }
    const timer = setTimeout(() => { mo.disconnect(); reject(new Error(`partial count ${el.textContent}, expected ${n}`)); }, timeoutMs);
    const mo = new MutationObserver(() => {
      if (el.textContent === String(n)) { mo.disconnect(); clearTimeout(timer); done(); }
    });
    mo.observe(el, { childList: true, characterData: true, subtree: true });
  });
}"""

LOAD = """async ([path, n]) => {
  const token = new URLSearchParams(location.search).get('token');
  const t0 = performance.now();
  const r = await fetch('/api/load_project', { method: 'POST', headers: { 'X-Soma-Token': token },
                                               body: JSON.stringify({ path }) });
  const body = await r.json();
  if (!body.ok) throw new Error(`load failed: ${body.error.type}: ${body.error.message}`);
  const drawn = await window.__waitCount(n, 120000);
  const snaps = window.somaMetrics.snapshots || [];  // this tree's page: when the snapshot event came
  const ev = snaps.length && snaps[snaps.length - 1].at > t0 ? snaps[snaps.length - 1].at - t0 : null;
  return [drawn - t0, ev];
}"""


def write_project(path: Path, wav: Path, n: int, seconds: float, seed: int) -> None:
    """A .soma of ``n`` seeded partials over the recording (0.2-1.5 s each, a point per 10 ms)."""
    import hashlib
    import json

    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        t0 = float(rng.uniform(0.0, seconds - 2.0))
        k = int(rng.integers(20, 150))
        f = float(np.exp(rng.uniform(np.log(80.0), np.log(5000.0))))
        t = t0 + 0.01 * np.arange(k)
        pts = np.column_stack([t, f * (1 + 0.003 * np.sin(2 * np.pi * 5 * t)), np.full(k, rng.uniform(0.01, 0.5))])
        parts.append({"id": f"p{i + 1}", "is_muted": False, "color": "#4fc3f7", "points": np.round(pts, 5).tolist()})
    md5 = hashlib.md5(wav.read_bytes()).hexdigest()
    path.write_text(json.dumps({"source": {"path": str(wav), "md5": md5}, "data": {"partials": parts}}))


PERCENTILES = (50, 95, 99, 100)


def _percentiles(values: list, prefix: str) -> dict:
    """``{prefix}_p50_ms`` ... ``{prefix}_max_ms`` of ``values`` (None when there are none)."""
    out = {}
    for q in PERCENTILES:
        key = f"{prefix}_max_ms" if q == 100 else f"{prefix}_p{q}_ms"
        out[key] = float(np.percentile(values, q, method="higher")) if values else None
    return out


def _pan_frames(page, box, span_ticks: int) -> dict:
    """Fit, zoom in ``span_ticks`` wheel ticks, then drag (pan) for 40 frames: frame gaps (the
    requestAnimationFrame loop) and the page's drawing time of each frame while panning
    (``somaMetrics.drawsMs``; older pages report only their longest draw)."""
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
    page.keyboard.press("h")
    page.keyboard.press("0")
    page.mouse.move(cx, cy)
    for _ in range(span_ticks):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(16)
    page.wait_for_timeout(500)
    page.evaluate("() => { window.__edit.gaps = []; window.__edit.recording = true; window.somaMetrics.longestDrawMs = 0;"
                  " if (window.somaMetrics.drawsMs) window.somaMetrics.drawsMs = []; }")
    page.mouse.down()
    for i in range(40):
        page.mouse.move(cx + 6 * ((i % 20) - 10), cy + 2 * ((i % 10) - 5))
        page.wait_for_timeout(16)
    page.mouse.up()
    got = page.evaluate("() => { const b = window.__edit; b.recording = false; const m = window.somaMetrics;"
                        " return { gaps: b.gaps, draw: m.longestDrawMs, draws: m.drawsMs ?? null,"
                        " drawn: m.partialsDrawn ?? null, decimated: m.partialsDecimated ?? null,"
                        " view: document.querySelector('[data-testid=canvas]').dataset.view }; }")
    gaps = got["gaps"]
    t0, t1 = map(float, got["view"].split(",")[:2])
    return {"frame_gap_median_ms": _util.median(gaps), **_percentiles(gaps, "frame_gap"),
            "dropped_frames": sum(1 for g in gaps if g > 20.0), "longest_draw_ms": got["draw"],
            **(_percentiles(got["draws"], "draw") if got["draws"] is not None else {}),
            "frames": len(gaps), "partials_drawn": got["drawn"], "partials_decimated": got["decimated"],
            "window_s": t1 - t0, "gaps_ms": gaps, "draws_ms": got["draws"]}


def _pan_summary(runs: list) -> dict:
    """Medians over runs of each run's figures; ``*_max_ms`` also as the maximum over all runs."""
    out = {}
    for key, v in runs[0].items():
        if isinstance(v, (int, float)) and v is not None:
            vals = [r[key] for r in runs if r.get(key) is not None]
            out[key] = _util.median(vals)
            if key.endswith("_max_ms"):
                out[key.replace("_max_ms", "_max_all_ms")] = max(vals)
        elif not isinstance(v, list):
            out[key] = v
    out["runs"] = runs
    return out


def edits(url: str, wav: Path, projects: tuple, n: int, seconds: float, repeats: int) -> dict:
    """Load, stroke -> partial, delete and panning frames at ``n`` partials on one served page."""
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(0)  # the recording's notes (perf/_util.py: one per 60 s chunk)
    notes = rng.uniform(80.0, 900.0, size=16)
    out: dict = {"load_s": [], "load_event_s": [], "stroke_s": [], "delete_s": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600 + 56 + 262, "height": 600 + 24 + 80})
        page.goto(url)
        page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=120_000)
        page.evaluate(EDIT_HELPERS)
        out["partials_layer"] = page.evaluate("() => !!document.querySelector('[data-testid=partials-layer]')")
        box = page.locator("[data-testid=canvas]").bounding_box()
        count = n
        for k in range(repeats):
            path, count = (projects[k % 2], n + k % 2)
            drawn, event = page.evaluate(LOAD, [str(path), count])
            out["load_s"].append(drawn / 1000.0)
            if event is not None:
                out["load_event_s"].append(event / 1000.0)
            page.wait_for_timeout(300)
        # A 10 s window in the middle, then strokes along the recording's fundamental there.
        page.keyboard.press("0")
        cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5
        page.mouse.move(cx, cy)
        for _ in range(27):
            page.mouse.wheel(0, -100)
            page.wait_for_timeout(16)
        page.wait_for_timeout(800)
        t0, t1, fmin, fmax = map(float, page.get_attribute("[data-testid=canvas]", "data-view").split(","))
        f0 = notes[(int(t0 // 60.0) * 15) % 16]

        def xy(t, f):
            return (box["x"] + (t - t0) / (t1 - t0) * box["width"],
                    box["y"] + np.log(fmax / f) / np.log(fmax / fmin) * (box["height"] - 1) + 0.5)

        for k in range(repeats):
            page.keyboard.press("p")
            ta = t0 + (t1 - t0) * (0.1 + 0.8 * k / max(1, repeats))
            tb = ta + 0.06 * (t1 - t0)
            page.mouse.move(*xy(ta, f0 * 1.02))
            page.mouse.down()
            for i in range(1, 9):
                page.mouse.move(*xy(ta + (tb - ta) * i / 8, f0 * (1.02 - 0.03 * i / 8)))
            page.mouse.up()
            drawn = page.evaluate("(n) => window.__waitCount(n, 120000)", count + 1)
            out["stroke_s"].append((drawn - page.evaluate("() => window.__edit.upAt")) / 1000.0)
            count += 1
            # Select what lies under the stroke's middle, then delete it.
            page.keyboard.press("v")
            page.mouse.click(*xy((ta + tb) / 2, f0))
            try:
                page.wait_for_selector("[data-testid=partial-item].selected", state="attached", timeout=60_000)
            except Exception:
                continue
            page.wait_for_timeout(200)
            page.keyboard.press("Delete")
            drawn = page.evaluate("(n) => window.__waitCount(n, 120000)", count - 1)
            out["delete_s"].append((drawn - page.evaluate("() => window.__edit.keyAt")) / 1000.0)
            count -= 1
            page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        out["pan_60s"] = _pan_summary([_pan_frames(page, box, 17) for _ in range(repeats)])   # ~60 s window
        # ~280 s window: about half the partials in view
        out["pan_300s"] = _pan_summary([_pan_frames(page, box, 5) for _ in range(repeats)])
        out["page_errors"] = []
        browser.close()
    return out


def old_tree(ref: str, into: Path) -> Path:
    """This tree with ``soma_shm/app`` as it was at ``ref`` (engine, kernels and their numba
    caches unchanged): the page and backend before edits travelled as deltas."""
    import shutil

    root = HERE.parent
    shutil.copytree(root / "soma_shm", into / "soma_shm", symlinks=True,
                    ignore=shutil.ignore_patterns("app"))
    files = subprocess.run(["git", "-C", str(root), "ls-tree", "-r", "--name-only", ref, "soma_shm/app"],
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        data = subprocess.run(["git", "-C", str(root), "show", f"{ref}:{name}"], capture_output=True, check=True).stdout
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(data)
    return into


def default_old_ref() -> str:
    root = HERE.parent
    added = subprocess.run(["git", "-C", str(root), "log", "-1", "--diff-filter=A", "--format=%H", "HEAD", "--",
                            "soma_shm/app/static/partials.js"], capture_output=True, text=True, check=True).stdout.strip()
    return f"{added}^"


def own_folders(tmp: Path) -> dict:
    """Config and state folders of this run only: no recent list or unsaved work of another run
    (a recovery file offered in a modal dialog would swallow the benchmark's input)."""
    return {"XDG_CONFIG_HOME": str(tmp / "config"), "XDG_STATE_HOME": str(tmp / "state")}


@contextlib.contextmanager
def serve(pythonpath: Path):
    # Its own config and state folders: the recovery file an earlier run left on being stopped
    # with edits would otherwise be offered in a dialog over the canvas (and this run's too).
    with tempfile.TemporaryDirectory(prefix="bench_ui_home_") as home:
        env = {**os.environ, "PYTHONPATH": str(pythonpath), "XDG_CONFIG_HOME": str(Path(home) / "config"),
               "XDG_STATE_HOME": str(Path(home) / "state")}
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=str(pythonpath))
        try:
            yield proc.stdout.readline().strip()
        finally:
            proc.terminate()
            proc.communicate(timeout=60)


def edit_rows(new: dict, old: dict | None) -> list:
    med = _util.median
    rows = []

    def row(label, key, target, sub=None):
        pick = (lambda d: d[key].get(sub)) if sub else (lambda d: med(d[key]))
        v = pick(new)
        o = pick(old) if old else None
        rows.append([label, v, o if o is not None else "-", (o / v) if o and v else "-", target,
                     "" if target == "-" else ("ok" if v <= float(target.split()[-1]) else "MISSED")])

    row("project load -> partials on screen (s)", "load_s", "<= 1.0")
    if new["load_event_s"]:
        rows.append(["  of which: call -> snapshot event (s)", med(new["load_event_s"]), "-", "-", "-", ""])
    row("stroke -> partial on screen (s)", "stroke_s", "<= 0.100")
    row("delete -> gone from screen (s)", "delete_s", "<= 0.050")
    for key, label in (("pan_60s", "60 s"), ("pan_300s", "280 s")):
        for sub, name, target in (
                ("frame_gap_p50_ms", f"pan, {label} window: frame gap p50 (ms)", "<= 16.7"),
                ("frame_gap_p95_ms", "  frame gap p95 (ms)", "<= 17"),
                ("frame_gap_p99_ms", "  frame gap p99 (ms)", "-"),
                ("frame_gap_max_ms", "  frame gap max (ms, median of runs)", "-"),
                ("frame_gap_max_all_ms", "  frame gap max (ms, all runs)", "-"),
                ("dropped_frames", "  dropped frames (gap > 20 ms, median per run)", "-"),
                ("draw_p50_ms", "  draw p50 (ms)", "-"),
                ("draw_p95_ms", "  draw p95 (ms)", "-"),
                ("draw_p99_ms", "  draw p99 (ms)", "-"),
                ("longest_draw_ms", "  longest draw (ms, median of runs)", "<= 16"),
                ("draw_max_all_ms", "  longest draw (ms, all runs)", "-")):
            if new[key].get(sub) is not None:
                row(name, key, target, sub)
        rows.append(["  partials drawn per frame (decimated)",
                     f"{new[key]['partials_drawn']} ({new[key].get('partials_decimated')})", "-", "-", "-", ""])
    return rows


def main_edits(args) -> int:
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="bench_ui_edits_") as tmp:
        tmp = Path(tmp)
        wav = tmp / "recording.wav"
        sf.write(wav, _util.recording(args.seconds, FS, seed=0), FS, subtype="PCM_16")
        projects = (tmp / "a.soma", tmp / "b.soma")
        write_project(projects[0], wav, args.partials, args.seconds, seed=1)
        write_project(projects[1], wav, args.partials + 1, args.seconds, seed=1)
        results = {}
        trees = [("new", HERE.parent)]
        if args.old_ref != "none":
            ref = args.old_ref or default_old_ref()
            trees.append(("old", old_tree(ref, tmp / "old")))
            results["old_ref"] = ref
        for name, tree in trees:
            with serve(tree) as url:
                from playwright.sync_api import sync_playwright  # noqa: F401 - fail early when missing

                # open the recording first: loads then find it open (same file: no re-decode)
                import http.client
                from urllib.parse import urlsplit

                u = urlsplit(url)
                token = dict(q.split("=") for q in u.query.split("&"))["token"]
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
                conn.request("POST", "/api/open_file", body=json_dumps({"path": str(wav)}),
                             headers={"X-Soma-Token": token})
                conn.getresponse().read()
                conn.close()
                results[name] = edits(url, wav, projects, args.partials, args.seconds,
                                      args.edit_repeats if name == "new" else args.old_repeats)
    rows = edit_rows(results["new"], results.get("old"))
    print(f"UI at {args.partials} partials over a {args.seconds:.0f} s recording: medians of "
          f"{args.edit_repeats} runs (old page: {args.old_repeats}, {results.get('old_ref', 'not run')})")
    print(_util.table(rows, ["figure", "now", "old page", "old / now", "target", ""]))
    out = _util.write_json("bench_ui_edits.json", {"machine": _util.machine(), "partials": args.partials,
                                                    "seconds": args.seconds, **results})
    print(f"wrote {out}")
    return 0


def json_dumps(obj) -> str:
    import json

    return json.dumps(obj)


if __name__ == "__main__":
    sys.exit(main())
