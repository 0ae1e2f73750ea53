"""Exports read back: MPE/multi-track/monophonic MIDI through mido (pitch within 1 cent of each
partial's frequency track, timing within one CC step), sine audio and CV audio through
soundfile, atomic writes, and the ``soma-shm export`` command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from scipy.interpolate import PchipInterpolator

import soma_shm
from soma_shm import ParameterError
from soma_shm import export as ex
from soma_shm.synth import render_partials

CC_RATE = 100.0
TPS = 1920.0  # ticks per second at 960 per beat, 120 bpm


def glide(t0, seconds, f0, cents_per_s=300.0, vib=30.0, amp=0.2, step=0.01):
    t = t0 + np.arange(0.0, seconds + 1e-9, step)
    cents = cents_per_s * (t - t0) + vib * np.sin(2 * np.pi * 5 * (t - t0))
    return np.stack([t, f0 * 2 ** (cents / 1200), amp * (0.5 + 0.5 * np.sin(np.pi * (t - t0) / seconds))], axis=1)


def track_pitch(points, times):
    return 69 + 12 * np.log2(PchipInterpolator(points[:, 0], points[:, 1])(times) / 440.0)


def notes_of(path, bend_range):
    """Per note (channel, note-on time): the pitch-bend events (time s, pitch in MIDI units)
    between its note-on and note-off, the amplitude events, and the on/off times."""
    mf = mido.MidiFile(path)
    assert mf.ticks_per_beat == 960
    notes, active, bend = [], {}, {}
    pending_amp = {}
    for msg in mido.merge_tracks(mf.tracks):
        pass
    tick = 0
    for msg in mido.merge_tracks(mf.tracks):
        tick += msg.time
        t = tick / TPS
        if msg.type == "pitchwheel":
            bend[msg.channel] = msg.pitch
            if msg.channel in active:
                n = active[msg.channel]
                n["bends"].append((t, n["note"] + msg.pitch / 8192 * bend_range))
        elif msg.type in ("aftertouch", "control_change") and not (msg.type == "control_change" and msg.control in (100, 101, 6, 38)):
            val = msg.value
            if msg.channel in active:
                active[msg.channel]["amps"].append((t, val))
            else:
                pending_amp[msg.channel] = (t, val)
        elif msg.type == "note_on" and msg.velocity > 0:
            assert msg.channel not in active, "a channel holds one note at a time"
            n = {"channel": msg.channel, "note": msg.note, "on": t, "velocity": msg.velocity,
                 "bends": [(t, msg.note + bend.get(msg.channel, 0) / 8192 * bend_range)],
                 "amps": [pending_amp.pop(msg.channel)] if msg.channel in pending_amp else []}
            active[msg.channel] = n
        elif msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0):
            n = active.pop(msg.channel)
            n["off"] = t
            notes.append(n)
    assert not active, "every note is released"
    return notes, mf


def check_pitch_and_timing(partials, notes, bend_range):
    assert len(notes) == len(partials)
    by_start = sorted(notes, key=lambda n: (n["on"], n["channel"]))
    for p, n in zip(sorted(partials, key=lambda p: p[0, 0]), by_start):
        assert abs(n["on"] - p[0, 0]) <= 1 / TPS and abs(n["off"] - p[-1, 0]) <= 1 / TPS
        times = np.array([b[0] for b in n["bends"]])
        pitch = np.array([b[1] for b in n["bends"]])
        # every bend within 1 cent of the frequency track at its time
        err_cents = 100 * np.abs(pitch - track_pitch(p, np.clip(times, p[0, 0], p[-1, 0])))
        assert err_cents.max() < 1.0, err_cents.max()
        # and within one CC step a bend follows: the pitch held between messages is the track's
        # value at most one step earlier (repeated values are not re-sent)
        grid = np.arange(p[0, 0], p[-1, 0], 1 / CC_RATE)
        held = pitch[np.searchsorted(times, grid + 0.5 / TPS, side="right") - 1]
        assert (100 * np.abs(held - track_pitch(p, grid))).max() < 1.0
        assert np.diff(times).max() <= 1 / CC_RATE + 1 / TPS


def test_mpe_pitch_within_a_cent_and_timing_within_a_step(tmp_path):
    partials = [glide(0.5, 2.0, 220.0), glide(0.8, 1.5, 331.0, cents_per_s=-500), glide(2.7, 1.0, 1000.0, vib=80)]
    files = ex.write_mpe(partials, tmp_path / "take.mid")
    assert files == [(tmp_path / "take.mid").resolve()]
    notes, mf = notes_of(files[0], 48)
    check_pitch_and_timing(partials, notes, 48)
    # zone set-up: MPE Configuration Message (RPN 6 = 15) on channel 1, RPN 0 = 48 on 2..16
    setup = [m for m in mf.tracks[0] if m.type == "control_change"]
    rpns = {}
    cur = {}
    for m in setup:
        cur.setdefault(m.channel, {})[m.control] = m.value
        if m.control == 6:
            rpns[(m.channel, cur[m.channel][101], cur[m.channel][100])] = m.value
    assert rpns[(0, 0, 6)] == 15
    assert all(rpns[(ch, 0, 0)] == 48 for ch in range(1, 16))
    assert {n["channel"] for n in notes} <= set(range(1, 16))
    # pressure by default, the loudest point of the export is 127
    amps = [v for n in notes for _, v in n["amps"]]
    assert max(amps) == 127 and min(amps) >= 0
    assert all(m.type != "control_change" or m.control not in (1, 74) for m in mf.tracks[1])


@pytest.mark.parametrize("target, control", [("cc74", 74), ("cc1", 1)])
def test_amplitude_to_cc_with_db_curve(tmp_path, target, control):
    p = glide(0.1, 1.0, 440.0, amp=0.5)
    u = (p[:, 0] - p[0, 0]) / (p[-1, 0] - p[0, 0])
    p[:, 2] = 0.5 * 10 ** (-3 * u)  # 0 dB down to -60 dB, straight in dB
    files = ex.write_mpe([p], tmp_path / "x.mid", amplitude=target, curve="db")
    mf = mido.MidiFile(files[0])
    tick, ccs = 0, []
    for m in mf.tracks[1]:
        tick += m.time
        if m.type == "control_change":
            ccs.append((tick / TPS, m.control, m.value))
    assert ccs and all(c == control for _, c, _ in ccs)
    assert not [m for m in mf.tracks[1] if m.type == "aftertouch"]
    t, vals = np.array([c[0] for c in ccs]), np.array([c[2] for c in ccs])
    assert vals[0] == 127 and vals[-1] == 0 and (np.diff(vals) < 0).all()
    # straight in dB is straight in value: 127 at 0 dB, 0 at -60 dB
    expect = 127 * (1 - (t - p[0, 0]) / (p[-1, 0] - p[0, 0]))
    assert np.abs(vals - expect).max() <= 1.5


def test_more_than_15_voices_split_into_numbered_files(tmp_path):
    partials = [glide(0.1 + 0.01 * i, 1.0, 200.0 * 1.05**i) for i in range(20)]
    partials += [glide(2.0, 0.5, 300.0)]
    files = ex.write_mpe(partials, tmp_path / "dense.mid")
    assert [f.name for f in files] == ["dense_01.mid", "dense_02.mid"]
    assert not (tmp_path / "dense.mid").exists()
    total = 0
    for f in files:
        notes, _ = notes_of(f, 48)
        total += len(notes)
        # never more than 15 at once in a file
        edges = sorted([(n["on"], 1) for n in notes] + [(n["off"], -1) for n in notes])
        assert max(np.cumsum([d for _, d in edges])) <= 15
    assert total == len(partials)


def test_a_new_export_leaves_no_file_of_an_older_series_under_its_name(tmp_path):
    dense = [glide(0.1 + 0.01 * i, 1.0, 200.0 * 1.05**i) for i in range(40)]  # 40 at once: 3 files
    assert len(ex.write_mpe(dense, tmp_path / "take.mid")) == 3
    (tmp_path / "take_07.mid").write_bytes(b"not part of the series")  # a gap: not ours to touch
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "take_04.mid").symlink_to(tmp_path / "elsewhere")
    files = ex.write_mpe(dense[:20], tmp_path / "take.mid")
    assert [f.name for f in files] == ["take_01.mid", "take_02.mid"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["elsewhere", "take_01.mid", "take_02.mid", "take_04.mid", "take_07.mid"]
    (tmp_path / "take_04.mid").unlink()
    (f,) = ex.write_mpe(dense[:3], tmp_path / "take.mid")  # one file now: the numbered ones go
    assert f.name == "take.mid" and len(notes_of(f, 48)[0]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "take.mid", "take_07.mid"]
    files = ex.write_mpe(dense[:20], tmp_path / "take.mid")  # numbered again: take.mid goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "take_01.mid", "take_02.mid", "take_07.mid"]
    poly = ex.write_cv([glide(0.1, 1.0, 220.0), glide(0.2, 1.0, 330.0)], tmp_path / "cv.wav", mode="poly")
    assert len(poly) == 2
    ex.write_cv([glide(0.1, 1.0, 220.0)], tmp_path / "cv.wav", mode="poly")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("cv")) == ["cv.wav"]


def test_multitrack_one_track_per_voice_on_one_channel(tmp_path):
    partials = [glide(0.1, 1.0, 220.0), glide(0.5, 1.0, 330.0), glide(1.2, 0.5, 440.0)]
    (f,) = ex.write_multitrack(partials, tmp_path / "m.mid")
    mf = mido.MidiFile(f)
    assert len(mf.tracks) == 2  # the first and third partials share a voice
    chans = {m.channel for t in mf.tracks for m in t if not m.is_meta}
    assert chans == {0}
    for tr in mf.tracks:  # each track on its own reads back as a monophonic line
        sub = mido.MidiFile(type=1, ticks_per_beat=960)
        sub.tracks.append(tr)
        sub.save(tmp_path / "one.mid")
        notes, _ = notes_of(tmp_path / "one.mid", 12)
        check_pitch_and_timing([p for p in partials if any(abs(n["on"] - p[0, 0]) < 1e-3 for n in notes)], notes, 12)


def test_mono_controls_follow_the_latest_partial(tmp_path):
    a = glide(0.1, 2.0, 220.0, cents_per_s=0, vib=0)
    b = glide(0.8, 0.5, 440.0, cents_per_s=0, vib=0)
    (f,) = ex.write_mono([a, b], tmp_path / "mono.mid")
    mf = mido.MidiFile(f)
    assert len(mf.tracks) == 1
    tick, bends, ons = 0, [], []
    for m in mf.tracks[0]:
        tick += m.time
        if m.type == "pitchwheel":
            bends.append((tick / TPS, m.pitch))
        if m.type == "note_on":
            ons.append((tick / TPS, m.note))
    assert [n for _, n in ons] == [57, 69]  # A3 then A4: notes overlap
    # no bend messages from the first partial while the second sounds
    assert not [t for t, _ in bends if 0.8 + 1 / TPS < t < 1.3 - 1 / TPS]


def test_mido_messages_write_the_same_bytes(tmp_path):
    partials = [glide(0.1 * i, 0.7, 100.0 * (i + 1)) for i in range(18)]
    for fn in (ex.write_mpe, ex.write_multitrack, ex.write_mono):
        fast = fn(partials, tmp_path / "fast.mid", amplitude="cc74")
        slow = fn(partials, tmp_path / "slow.mid", amplitude="cc74", via_mido=True)
        assert [a.read_bytes() for a in fast] == [b.read_bytes() for b in slow]


def test_wider_than_the_bend_range_is_restruck(tmp_path):
    p = glide(0.1, 1.0, 100.0, cents_per_s=3000, vib=0)  # 30 semitones
    (f,) = ex.write_mpe([p], tmp_path / "wide.mid", pitch_bend_range=12)
    notes, _ = notes_of(f, 12)
    assert len(notes) >= 2
    for n in notes:
        times = np.array([b[0] for b in n["bends"]])
        pitch = np.array([b[1] for b in n["bends"]])
        assert (100 * np.abs(pitch - track_pitch(p, np.clip(times, p[0, 0], p[-1, 0])))).max() < 1.0


@pytest.mark.parametrize("suffix, depth, subtype", [(".wav", 16, "PCM_16"), (".flac", 24, "PCM_24"), (".wav", 32, "FLOAT")])
def test_audio_export_is_the_resynthesis(tmp_path, suffix, depth, subtype):
    partials = [glide(0.1, 1.0, 440.0), glide(0.3, 0.5, 660.0)]
    info = ex.write_audio(partials, tmp_path / f"s{suffix}", 44_100, depth, duration=1.5)
    y, fs = sf.read(info["path"], dtype="float64")
    assert fs == 44_100 and sf.info(info["path"]).subtype == subtype and y.shape == (int(np.ceil(1.5 * 44_100)),)
    ref = render_partials(partials, 44_100, y.shape[0])
    assert np.abs(y - ref).max() < 2.0 ** -(depth - 1) * 2 + 1e-7
    assert info["gain_db"] == 0.0


def test_audio_export_scales_down_instead_of_clipping(tmp_path):
    loud = [glide(0.1, 0.5, 440.0, amp=1.0), glide(0.1, 0.5, 441.0, amp=1.0)]
    info = ex.write_audio(loud, tmp_path / "loud.wav", 48_000, 16, normalize=False)
    y, _ = sf.read(info["path"])
    assert info["gain_db"] < 0 and np.abs(y).max() <= 1.0
    info = ex.write_audio(loud[:1], tmp_path / "norm.wav", 48_000, 24, normalize=True)
    assert abs(20 * np.log10(np.abs(sf.read(info["path"])[0]).max()) + 1.0) < 0.01


def test_cv_pitch_and_amplitude(tmp_path):
    a = glide(0.1, 0.5, 440.0, cents_per_s=1200, vib=0, amp=0.4)
    b = glide(1.0, 0.5, 110.0, cents_per_s=0, vib=0, amp=0.2)
    (f,) = ex.write_cv([a, b], tmp_path / "cv.wav", 8000, 32, mode="mono")
    y, fs = sf.read(f)
    assert y.shape[1] == 2
    n = np.arange(y.shape[0]) / fs
    inside = (n > 0.11) & (n < 0.59)
    volts = 10.0 * y[inside, 0]
    expect = track_pitch(a, n[inside]) / 12 - 69 / 12  # octaves from 440 Hz at 1 V/octave
    assert np.abs(volts - expect).max() < 1e-4
    # b is two octaves below A440 at half the loudest amplitude
    mid_b = (n > 1.1) & (n < 1.4)
    assert np.allclose(10 * y[mid_b, 0], -2.0, atol=1e-4)
    assert np.allclose(y[mid_b, 1], PchipInterpolator(b[:, 0], b[:, 2])(n[mid_b]) / a[:, 2].max(), atol=1e-4)
    # between notes the pitch holds, the amplitude is 0
    gap = (n > 0.7) & (n < 0.9)
    held = track_pitch(a, a[-1:, 0])[0] / 12 - 69 / 12
    assert np.allclose(10 * y[gap, 0], held, atol=1e-4) and not y[gap, 1].any()
    files = ex.write_cv([a, glide(0.2, 0.5, 300.0), b], tmp_path / "poly.flac", 8000, 16, mode="poly")
    assert [p.name for p in files] == ["poly_01.flac", "poly_02.flac"]


def test_bad_exports_raise_and_write_nothing(tmp_path):
    p = [glide(0.1, 0.5, 440.0)]
    with pytest.raises(ParameterError, match="pitch_bend_range=0 must be"):
        ex.write_mpe(p, tmp_path / "x.mid", pitch_bend_range=0)
    with pytest.raises(ParameterError, match="amplitude='velocity' must be one of pressure, cc74, cc1"):
        ex.write_mpe(p, tmp_path / "x.mid", amplitude="velocity")
    with pytest.raises(ParameterError, match="cc_rate=0.5 must be"):
        ex.write_mpe(p, tmp_path / "x.mid", cc_rate=0.5)
    with pytest.raises(ParameterError, match="must end in .mid"):
        ex.write_mpe(p, tmp_path / "x.wav")
    with pytest.raises(ParameterError, match="does not exist; choose an existing folder"):
        ex.write_mpe(p, tmp_path / "nope" / "x.mid")
    with pytest.raises(ParameterError, match="FLAC holds 16- or 24-bit"):
        ex.write_audio(p, tmp_path / "x.flac", 48_000, 32)
    with pytest.raises(ParameterError, match="at or above Nyquist"):
        ex.write_audio([glide(0.1, 0.5, 5000.0)], tmp_path / "x.wav", 8000, 16)
    with pytest.raises(ParameterError, match=r"partial #1: point 1 \(time"):
        ex.write_mpe([p[0], [(0.2, 100, 1), (0.1, 100, 1)]], tmp_path / "x.mid")
    assert sorted(x.name for x in tmp_path.iterdir()) == []
    assert ex.write_mpe([], tmp_path / "empty.mid") == []


def test_a_failed_export_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.wav"
    target.write_bytes(b"old")
    with pytest.raises(ParameterError, match="at or above Nyquist"):
        ex.write_audio([glide(0.1, 0.5, 5000.0)], target, 8000, 16)
    assert target.read_bytes() == b"old"
    ex.write_audio([glide(0.1, 0.5, 440.0)], target, 8000, 16)
    assert sf.info(target).samplerate == 8000 and [x.name for x in tmp_path.iterdir()] == ["keep.wav"]


def test_command_line_export(tmp_path):
    from soma_shm.app.document import SomaDocument

    audio = tmp_path / "take.wav"
    sf.write(audio, np.zeros(3 * 44_100, np.float32), 44_100)
    doc = SomaDocument()
    doc.set_source(str(audio))
    doc.add_partial(glide(0.5, 1.0, 440.0))
    doc.add_partial(glide(1.0, 1.0, 550.0))
    muted = doc.add_partial(glide(0.2, 0.5, 880.0))
    doc.update_partial(muted.id, is_muted=True)
    project = doc.save(tmp_path / "take.soma")
    out = subprocess.run([sys.executable, "-m", "soma_shm", "export", project, "--mpe", str(tmp_path / "o.mid"),
                          "--midi", str(tmp_path / "m.mid"), "--mono", str(tmp_path / "n.mid"),
                          "--audio", str(tmp_path / "s.flac"), "--cv", str(tmp_path / "cv.wav"), "--cv-mode", "poly",
                          "--amplitude", "cc74"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    notes, _ = notes_of(tmp_path / "o.mid", 48)
    assert len(notes) == 2  # the muted partial stays out
    info = sf.info(tmp_path / "s.flac")
    assert info.samplerate == 44_100 and info.frames == int(np.ceil(3.0 * 44_100))  # the source's rate and length
    assert (tmp_path / "cv_01.wav").exists() and (tmp_path / "cv_02.wav").exists()
    # a project SOMA wrote: amplitudes 0-1 relative to the recording, no stored reference
    tone = tmp_path / "tone.wav"
    sf.write(tone, (0.25 * np.sin(2 * np.pi * 440 * np.arange(2 * 44_100) / 44_100)).astype(np.float32), 44_100)
    p = glide(0.3, 1.2, 440.0, cents_per_s=0, vib=0)
    p[:, 2] = 1.0
    soma = {"meta": {"format_version": "1.0.0", "app_name": "SOMA"},
            "source": {"file_path": str(tone), "sample_rate": 44_100, "duration_sec": 2.0},
            "analysis_settings": {}, "data": {"partials": [{"id": "p1", "is_muted": False, "color": "#ffffff",
                                                              "points": p.tolist()}]}}
    (tmp_path / "soma.soma").write_text(json.dumps(soma))
    out = subprocess.run([sys.executable, "-m", "soma_shm", "export", str(tmp_path / "soma.soma"), "--audio",
                          str(tmp_path / "soma.wav"), "--bit-depth", "32"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    y, fs = sf.read(tmp_path / "soma.wav")
    mid = y[int(0.5 * fs):int(1.3 * fs)]
    assert fs == 44_100 and abs(20 * np.log10(np.sqrt(2 * np.mean(mid**2)) / 0.25)) < 0.5
    bad = subprocess.run([sys.executable, "-m", "soma_shm", "export", str(tmp_path / "missing.soma"), "--mpe",
                          str(tmp_path / "z.mid")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    none = subprocess.run([sys.executable, "-m", "soma_shm", "export", project], capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "nothing to export" in none.stderr


def test_an_export_from_a_headerless_mp3_spans_the_recording_as_opened(tmp_path):
    # sox writes MP3s without a Xing/Info header: libsndfile's length for them is an estimate from
    # the file size that includes the encoder's and decoder's delay. A rendering of the partials
    # traced on such a file lasts as long as the recording soma_shm opened, like a WAV source's.
    if shutil.which("sox") is None:
        pytest.skip("missing sox; `make setup` installs it")
    from soma_shm.app.document import SomaDocument
    from soma_shm.cli import main

    wav, mp3 = tmp_path / "take.wav", tmp_path / "take.mp3"
    t = np.arange(int(1.5 * 44_100)) / 44_100
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44_100)
    done = subprocess.run(["sox", str(wav), "-C", "192", str(mp3)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    opened = soma_shm.audio_info(mp3)
    assert opened.frames != sf.info(str(mp3)).frames  # what this checks: the two lengths differ
    doc = SomaDocument()
    doc.set_source(str(mp3))
    doc.add_partial(glide(0.2, 0.8, 440.0))
    project = doc.save(tmp_path / "take.soma")
    assert main(["export", str(project), "--audio", str(tmp_path / "s.wav"), "--cv", str(tmp_path / "cv.wav")]) == 0
    for out in ("s.wav", "cv.wav"):
        info = sf.info(str(tmp_path / out))
        assert (info.samplerate, info.frames) == (44_100, opened.frames), out


def test_a_recording_that_cannot_be_read_is_named_when_the_amplitudes_need_it(tmp_path, capsys):
    # A project SOMA wrote holds amplitudes relative to its recording: an export needs to read it,
    # and the error says why it could not (not that the file is missing).
    from soma_shm.cli import main

    take = tmp_path / "take.wav"
    take.write_bytes(b"not audio at all" * 64)
    p = glide(0.3, 1.2, 440.0)
    soma = {"meta": {"format_version": "1.0.0", "app_name": "SOMA"},
            "source": {"file_path": str(take), "sample_rate": 44_100, "duration_sec": 2.0},
            "analysis_settings": {}, "data": {"partials": [{"id": "p1", "is_muted": False, "color": "#ffffff",
                                                              "points": p.tolist()}]}}
    (tmp_path / "take.soma").write_text(json.dumps(soma))
    assert main(["export", str(tmp_path / "take.soma"), "--audio", str(tmp_path / "s.wav")]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {str(take)!r} as audio" in err and "not found" not in err
    assert not (tmp_path / "s.wav").exists()
