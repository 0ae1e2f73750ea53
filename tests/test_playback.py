"""Audio for the page through the app server: chunks of the original and of the resynthesis at
any speed, the resynthesis following edits (latest wins), and bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soma_shm.app.backend import AppBackend
from soma_shm.app.server import AppServer
from soma_shm.synth import render_partials

from .conftest import make_audio
from .test_app_api import Client

FS = 48_000


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / "tone.wav"
    sf.write(path, make_audio(4.0, FS, freqs=(440.0,), amp=0.3), FS, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def app(wav):
    backend = AppBackend(engine_options={"spares": False})
    server = AppServer(backend).start()
    client = Client(server)
    client.call("open_file", path=str(wav))
    client.wait("opened")
    client.call("snap", trace=[[0.5, 445.0], [3.2, 436.0]])
    client.wait("snapped")
    client.wait("synth")
    yield backend, client
    client.close()
    server.stop()
    backend.close()


def chunk(client, start, frames, speed=1.0, expect=200, origin=None):
    extra = "" if origin is None else f"&origin={origin}"
    status, headers, body = client.request("GET", f"/audio?token={client.token}&start={start}&frames={frames}&speed={speed}{extra}")
    assert status == expect, body
    if expect != 200:
        return body
    assert headers["Content-Type"] == "application/octet-stream" and int(headers["X-Sample-Rate"]) == FS
    data = np.frombuffer(body, dtype=np.float32).reshape(2, frames)
    return data[0], data[1], headers


def doc_partials(backend):
    return [p.points for p in backend.document.partials if not p.is_muted]


def rms_db(a, b):
    return 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))) / np.sqrt(np.mean(np.square(b, dtype=np.float64))))


def test_chunks_hold_the_original_and_the_resynthesis(app, wav):
    backend, client = app
    x, _ = sf.read(wav, dtype="float32")
    orig, synth, headers = chunk(client, 0, 4 * FS)
    np.testing.assert_array_equal(orig, x)
    parts = doc_partials(backend)
    assert len(parts) == 1
    np.testing.assert_array_equal(synth, render_partials(parts, FS, 4 * FS))
    # the snapped tone is heard back at its level
    lo, hi = int((parts[0][0, 0] + 0.05) * FS), int((parts[0][-1, 0] - 0.05) * FS)
    assert abs(rms_db(synth[lo:hi], orig[lo:hi])) < 0.5
    # a chunk in the middle is the same slice; past the end is silence
    o2, s2, _ = chunk(client, FS + 123, 5000)
    np.testing.assert_array_equal(o2, x[FS + 123:FS + 5123])
    np.testing.assert_array_equal(s2, synth[FS + 123:FS + 5123])
    o3, s3, h3 = chunk(client, 4 * FS - 100, 1000)
    assert not o3[100:].any() and not s3[100:].any() and int(h3["X-Total-Frames"]) == 4 * FS


@pytest.mark.parametrize("speed", [0.5, 2.0])
def test_other_speeds_keep_the_pitch(app, speed):
    backend, client = app
    total = int(4 * FS / speed)
    orig, synth, headers = chunk(client, 0, total, speed)
    assert int(headers["X-Total-Frames"]) == total
    np.testing.assert_array_equal(synth, render_partials(doc_partials(backend), FS, total, stretch=1 / speed))
    # the original, stretched: same tone, same level, over the middle of the file
    mid = orig[total // 4: 3 * total // 4].astype(np.float64)
    spec = np.abs(np.fft.rfft(mid * np.hanning(mid.size), 1 << 21))
    assert abs(np.argmax(spec) * FS / (1 << 21) - 440.0) < 1.0
    assert abs(20 * np.log10(np.sqrt(np.mean(mid**2)) / (0.3 / np.sqrt(2)))) < 1.0
    # chunks of one playback (same origin) cut one signal: no jump where they meet, nor where
    # the stretched blocks behind them do (0.25 s, 0.5 s, 1 s, 2 s from the origin)
    origin = FS // 10
    n = total // 3
    a = chunk(client, origin, n, speed, origin=origin)[0]
    b = chunk(client, origin + n, n, speed, origin=origin)[0]
    whole = chunk(client, origin, 2 * n, speed, origin=origin)[0]
    np.testing.assert_array_equal(np.concatenate([a, b]), whole)
    steps = np.abs(np.diff(whole[: int(3.5 * FS)].astype(np.float64)))
    assert steps.max() < 4 * np.abs(np.diff(mid)).max()


def test_resynthesis_follows_edits_latest_wins(app):
    backend, client = app
    pid = backend.document.partials[0].id
    for muted in (True, False, True):  # three quick edits: the last one is what plays
        client.call("update_partial", id=pid, is_muted=muted)
    assert backend.playback.wait_current(30)
    _, synth, headers = chunk(client, 0, 4 * FS)
    assert not synth.any()
    client.call("undo")
    assert backend.playback.wait_current(30)
    ev = client.wait("synth", where=lambda e: e["added"] == 1)
    assert ev["timings"]["synth_s"] >= 0
    _, synth, headers = chunk(client, 0, 4 * FS)
    np.testing.assert_array_equal(synth, render_partials(doc_partials(backend), FS, 4 * FS))


def test_bad_audio_requests(app):
    backend, client = app
    assert client.request("GET", "/audio?start=0&frames=10")[0] == 401
    for query, message in (("start=0&frames=0", b"frames=0 must be from 1"),
                           ("start=0&frames=10&speed=9", b"speed=9.0 must be from 1/8 to 8"),
                           ("start=-5&frames=10", b"start=-5 must be an integer >= 0"),
                           ("start=x&frames=10", b"must be numbers")):
        status, _, body = client.request("GET", f"/audio?token={client.token}&{query}")
        assert status == 400 and message in body, body


def test_export_as_writes_somas_outputs(app, tmp_path):
    import mido

    backend, client = app
    target = tmp_path / "take.mid"
    r = client.call("export_as", path=str(target), format="mpe", amplitude="cc74", cc_rate=50)
    assert r["status"] == "written" and r["paths"] == [str(target.resolve())] and r["partials"] == 1
    mf = mido.MidiFile(target)
    assert any(m.type == "control_change" and m.control == 74 for m in mf.tracks[1])
    assert client.call("export_as", path=str(target), format="mpe")["status"] == "exists"
    assert client.call("export_as", path=str(target), format="mono", overwrite=True)["status"] == "written"
    wav = client.call("export_as", path=str(tmp_path / "s.flac"), format="audio", bit_depth=16)
    info = sf.info(wav["paths"][0])
    assert info.samplerate == FS and info.subtype == "PCM_16" and info.frames == 4 * FS  # the file's rate and length
    cv = client.call("export_as", path=str(tmp_path / "cv.wav"), format="cv", mode="poly", sample_rate=8000)
    assert len(cv["paths"]) == 1 and sf.info(cv["paths"][0]).channels == 2
    err = client.call("export_as", expect_ok=False, path=str(tmp_path / "x.mid"), format="wav")
    assert "format='wav' must be one of mpe, midi, mono, audio, cv" in err["message"]
    err = client.call("export_as", expect_ok=False, path=str(tmp_path / "x.wav"), format="mpe")
    assert "a mpe export is a .mid or .midi file" in err["message"]
    err = client.call("export_as", expect_ok=False, path=str(tmp_path / "x.mid"), format="mpe", speed=2)
    assert "mpe export options are amplitude, cc_rate, curve, pitch_bend_range; not speed" in err["message"]
