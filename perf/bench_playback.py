"""Playback benchmark: the app page in headless Chromium playing a long recording with partials.

Runs `soma-shm serve` in a subprocess on a ``--seconds`` (default 600 s) 48 kHz recording, adds
``--partials`` partials through the API (so the synth worker renders the mix), and reads what the
page's player measured (``window.somaPlayback.metrics``):

- ``start``: Play pressed -> the first sample scheduled to leave the audio context (the chunk's
  start time on the context's clock plus its output latency, on the page's clock), median of
  ``--repeats`` presses at different places, at 1x and at 2x (the original is time-stretched);
- ``storm``: while playing, a zoom/pan storm like ``perf/bench_ui.py`` (wheel ticks every ~16 ms,
  pan drags) repeated ``--repeats`` times: chunks that arrived after their start time
  (underruns, counted), the largest fetch time of a chunk, and that the clock kept running;
- ``edit``: while playing, a partial is muted: the synth worker's request time and the time from
  the API call to the page's hand-over to fresh chunks (the edit heard).

Targets (issue 12): Play pressed -> sound <= 150 ms; no underrun during a zoom storm.

Usage::

    python perf/bench_playback.py [--repeats 5] [--seconds 600] [--partials 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

FS = 48_000
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

METRICS = "() => ({...window.somaPlayback.metrics, playing: window.somaPlayback.playing," \
          " clock: window.somaPlayback.ctx ? window.somaPlayback.ctx.currentTime : null})"


def api(url: str, method: str, **params):
    base, token = url.split("/?token=")
    req = urllib.request.Request(f"{base}/api/{method}", data=json.dumps(params).encode(),
                                 headers={"X-Soma-Token": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        data = json.loads(r.read())
    if not data["ok"]:
        raise RuntimeError(f"{method}: {data['error']}")
    return data["result"]


def press_play(page, at: float) -> float:
    """Set the play cursor (ruler click), press Play, wait for the first chunk: start latency (ms)."""
    page.evaluate("(t) => { window.__seek(t); }", at)
    page.click("[data-testid=play]")
    page.wait_for_function("window.somaPlayback.metrics.startLatencyMs !== null && window.somaPlayback.metrics.playChunks > 0",
                           timeout=60_000)
    ms = page.evaluate("() => window.somaPlayback.metrics.startLatencyMs")
    page.wait_for_timeout(300)
    page.click("[data-testid=play]")  # stop
    page.wait_for_timeout(200)
    return ms


def storm(page, box) -> dict:
    cx, cy = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.55
    before = page.evaluate(METRICS)
    page.mouse.move(cx, cy)
    for _ in range(30):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(16)
    for _ in range(8):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(16)
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(16)
    page.mouse.down()
    for i in range(15):
        page.mouse.move(cx - 8 * (i + 1), cy)
        page.wait_for_timeout(16)
    page.mouse.up()
    for _ in range(30):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(16)
    after = page.evaluate(METRICS)
    fetches = after["fetchMs"][-max(1, after["chunks"] - before["chunks"]):]
    return {"underruns": after["underruns"] - before["underruns"], "chunks": after["chunks"] - before["chunks"],
            "max_fetch_ms": max(fetches, default=0.0), "clock_s": after["clock"] - before["clock"],
            "playing": after["playing"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--partials", type=int, default=2000)
    args = ap.parse_args()
    import numpy as np
    import soundfile as sf
    from playwright.sync_api import sync_playwright

    results: dict = {"machine": _util.machine(), "seconds": args.seconds, "partials": args.partials}
    with tempfile.TemporaryDirectory(prefix="bench_playback_") as tmp:
        wav = Path(tmp) / "recording.wav"
        sf.write(wav, _util.recording(args.seconds, FS, seed=0), FS, subtype="PCM_16")
        # its own config and state folders: no recent list or unsaved work of another run is offered
        env = {**os.environ, "XDG_CONFIG_HOME": str(Path(tmp) / "config"), "XDG_STATE_HOME": str(Path(tmp) / "state")}
        proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve", str(wav)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        try:
            url = proc.stdout.readline().strip()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1600 + 56 + 262, "height": 600 + 24 + 80})
                page.goto(url)
                page.wait_for_function("document.querySelector('[data-testid=canvas]').dataset.overview === 'drawn'",
                                       timeout=300_000)
                # the partials: a project written here, loaded through the API (as the Load button does)
                rng = np.random.default_rng(0)
                from soma_shm.app.document import SomaDocument

                doc = SomaDocument()
                doc.set_source(str(wav))
                k = np.arange(201) * 0.01
                for _ in range(args.partials):
                    t0 = rng.uniform(0, args.seconds - 2.5)
                    f = rng.uniform(100, 4000) * 2 ** (0.01 * np.sin(2 * np.pi * 5 * k))
                    doc.add_partial(np.stack([t0 + k, f, np.full(k.size, rng.uniform(0.001, 0.01))], 1))
                project = doc.save(Path(tmp) / "bench.soma")
                page.on("dialog", lambda d: d.accept())
                t = time.perf_counter()
                api(url, "load_project", path=project)
                page.wait_for_function(f"document.querySelector('[data-testid=partial-count]').textContent == '{args.partials}'",
                                       timeout=300_000)
                results["load_s"] = time.perf_counter() - t
                # seeking: click on the time ruler at a time -> play cursor
                page.evaluate("""() => { window.__seek = (t) => {
                    const r = document.querySelector('[data-testid=time-ruler]').getBoundingClientRect();
                    const v = document.querySelector('[data-testid=canvas]').dataset.view.split(',').map(Number);
                    const x = r.left + (t - v[0]) / (v[1] - v[0]) * r.width;
                    document.querySelector('[data-testid=time-ruler]').dispatchEvent(new MouseEvent('click', {clientX: x, clientY: r.top + 5, bubbles: true}));
                }; }""")
                span = args.seconds
                starts = {}
                for speed in ("1", "2"):
                    page.select_option("[data-testid=speed]", speed)
                    press_play(page, 1.0)  # warm: first chunk of this speed
                    starts[speed] = [press_play(page, span * (i + 1) / (args.repeats + 2)) for i in range(args.repeats)]
                page.select_option("[data-testid=speed]", "1")
                box = page.locator("[data-testid=canvas]").bounding_box()
                page.keyboard.press("0")
                page.evaluate("(t) => window.__seek(t)", 5.0)
                page.click("[data-testid=play]")
                page.wait_for_function("window.somaPlayback.metrics.playChunks > 0", timeout=60_000)
                storms = [storm(page, box) for _ in range(args.repeats)]
                # an edit while playing
                state = api(url, "state")
                pid = state["document"]["partials"][0]["id"]
                edits = []
                for i in range(args.repeats):
                    h0 = page.evaluate("() => window.somaPlayback.metrics.handovers")
                    t = time.perf_counter()
                    api(url, "update_partial", id=pid, is_muted=(i % 2 == 0))
                    page.wait_for_function(f"window.somaPlayback.metrics.handovers > {h0}", timeout=30_000)
                    edits.append(time.perf_counter() - t)
                status = api(url, "state")
                page.click("[data-testid=play]")
                results["synth_status"] = status.get("status", {}).get("synth")
                browser.close()
        finally:
            proc.terminate()
            proc.communicate(timeout=60)

    med = _util.median
    results["start_ms"] = {s: {"median": med(v), "runs": v} for s, v in starts.items()}
    results["storms"] = storms
    results["edit_to_handover_s"] = {"median": med(edits), "runs": edits}
    under = sum(s["underruns"] for s in storms)
    rows = [
        ["Play -> sound, 1x (ms, median)", med(starts["1"]), "<= 150", med(starts["1"]) <= 150],
        ["Play -> sound, 2x, time-stretched (ms, median)", med(starts["2"]), "-", None],
        ["underruns during zoom storms (all runs)", under, "0", under == 0],
        ["chunks fetched during the storms", sum(s["chunks"] for s in storms), "-", None],
        ["slowest chunk fetch in a storm (ms)", max(s["max_fetch_ms"] for s in storms), "-", None],
        ["clock ran through every storm", all(s["playing"] and s["clock_s"] > 0.5 for s in storms), "-", None],
        ["mute while playing -> new chunks scheduled (s, median)", med(edits), "-", None],
    ]
    print(_util.table(rows, ["measure", "value", "target", "met"]))
    print("wrote", _util.write_json("bench_playback.json", results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
