"""Playback in headless Chromium: Play starts the page's audio clock and the playhead, Space
stops, the speed control plays faster at the same clock, the mix knob moves the gains."""

from __future__ import annotations

import time

import pytest
import soundfile as sf

from ..conftest import make_audio
from ._browser import chromium_page, need_chromium, served

pytestmark = pytest.mark.gui
FS = 48_000

STATE = """() => {
  const p = window.somaPlayback, head = document.querySelector('[data-testid=playhead]');
  return {clock: p.ctx ? p.ctx.currentTime : null, state: p.ctx ? p.ctx.state : null, playing: p.playing,
          position: p.position(), chunks: p.metrics.chunks, underruns: p.metrics.underruns, errors: p.metrics.errors,
          latency: p.metrics.startLatencyMs, head: head.hidden ? null : parseFloat(head.dataset.time),
          orig: p.gOrig ? p.gOrig.gain.value : null, synth: p.gSynth ? p.gSynth.gain.value : null,
          button: document.querySelector('[data-testid=play]').textContent};
}"""


def test_play_advances_the_audio_clock_and_the_playhead(tmp_path):
    need_chromium()
    path = tmp_path / "tone.wav"
    sf.write(path, make_audio(30.0, FS, freqs=(440.0,), amp=0.2), FS)
    with served(str(path)) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_function("document.querySelector('[data-testid=canvas]').dataset.overview === 'drawn'",
                               timeout=120_000)
        page.click("[data-testid=play]")
        page.wait_for_function("window.somaPlayback.metrics.chunks > 0 && window.somaPlayback.ctx.state === 'running'",
                               timeout=30_000)
        a = page.evaluate(STATE)
        time.sleep(0.8)
        b = page.evaluate(STATE)
        assert a["playing"] and b["playing"] and b["button"].startswith("■")
        assert b["clock"] - a["clock"] > 0.4  # the audio clock runs
        assert b["position"] - a["position"] > 0.4 and abs((b["position"] - a["position"]) - (b["clock"] - a["clock"])) < 0.05
        assert b["head"] is not None and b["head"] > a["position"]
        assert b["errors"] == 0 and b["latency"] is not None
        page.keyboard.press(" ")
        page.wait_for_function("!window.somaPlayback.playing")
        stopped = page.evaluate(STATE)
        assert stopped["button"].startswith("▶")
        # 2x: the playhead moves twice as fast as the clock, pitch kept by the backend
        page.select_option("[data-testid=speed]", "2")
        page.keyboard.press(" ")
        page.wait_for_function("window.somaPlayback.playing && window.somaPlayback.metrics.playChunks > 0", timeout=30_000)
        time.sleep(0.3)
        c = page.evaluate(STATE)
        time.sleep(0.8)
        d = page.evaluate(STATE)
        ratio = (d["position"] - c["position"]) / (d["clock"] - c["clock"])
        assert abs(ratio - 2.0) < 0.1
        # the mix knob: all the way to the sines silences the original
        page.fill("[data-testid=mix]", "1")
        page.dispatch_event("[data-testid=mix]", "input")
        page.wait_for_function("window.somaPlayback.gOrig.gain.value < 0.01 && window.somaPlayback.gSynth.gain.value > 0.99")
        page.keyboard.press(" ")
        assert not page.page_errors


SNAP = """async ([trace]) => {
  const token = new URLSearchParams(location.search).get('token');
  const res = await fetch('/api/snap', {method: 'POST', headers: {'X-Soma-Token': token, 'Content-Type': 'application/json'},
                                        body: JSON.stringify({trace})});
  return (await res.json()).ok;
}"""


def test_export_dialog_writes_mpe(tmp_path):
    import mido

    need_chromium()
    path = tmp_path / "tone.wav"
    sf.write(path, make_audio(5.0, FS, freqs=(440.0,), amp=0.2), FS)
    with served(str(path)) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_function("document.querySelector('[data-testid=canvas]').dataset.overview === 'drawn'",
                               timeout=120_000)
        assert page.evaluate(SNAP, [[[0.5, 445.0], [4.0, 436.0]]])
        page.wait_for_function("document.querySelector('[data-testid=partial-count]').textContent === '1'", timeout=60_000)
        page.click("[data-testid=export]")
        page.select_option("[data-testid=export-format]", "mpe")
        page.fill("[data-testid=export-path]", str(tmp_path / "out.txt"))
        page.select_option("[data-testid=export-format]", "mono")  # the suffix follows the format
        assert page.input_value("[data-testid=export-path]") == str(tmp_path / "out.mid")
        page.select_option("[data-testid=export-format]", "mpe")
        page.select_option("[data-testid=export-amplitude]", "cc1")
        page.click("[data-testid=export-ok]")
        page.wait_for_function("document.querySelector('[data-testid=export-dialog]').dataset.written", timeout=30_000)
        mf = mido.MidiFile(tmp_path / "out.mid")
        notes = [m for m in mf.tracks[1] if m.type == "note_on"]
        assert len(notes) == 1 and notes[0].note == 69 and notes[0].channel == 1
        assert any(m.type == "control_change" and m.control == 1 for m in mf.tracks[1])
        assert not page.page_errors
