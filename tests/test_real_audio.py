"""What a user does with real recordings, on audio rendered here (``tests/realaudio.py``): a
four-voice chorale from a MIDI score through fluidsynth, the same chorale as FLAC/Ogg/MP3 through
sox, and a sentence from espeak-ng.

Tracing a stroke near a note finds that note (its pitch within a few cents of the score, its loud
span the note's span), traced notes exported as MPE read back as the score's pitches, compressed
versions open like the WAV, a stroke along a voiced stretch of speech follows the voice, and the
resynthesis of a traced note has the original's level in that band.
"""

from __future__ import annotations

import mido
import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm import export
from soma_shm._mp3 import LAME_ENCODER_DELAY, MPEG_DECODER_DELAY
from soma_shm.synth import render_partials
from tests import realaudio as ra

# A user's stroke is rough: drawn a third of a semitone sharp.
STROKE_CENTS = 30.0


def cents(f, ref):
    return 1200.0 * np.log2(np.asarray(f) / ref)


@pytest.fixture(scope="module")
def chorale(real_audio):
    """The rendered chorale as the engine reads it: mono float32 and its rate."""
    x, fs = sf.read(real_audio.chorale_wav, dtype="float32")
    return x.mean(axis=1, dtype=np.float32), fs


def trace(x, fs, t0, t1, hz):
    """A straight stroke from ``t0`` to ``t1`` at ``hz`` drawn STROKE_CENTS sharp, snapped."""
    drawn = hz * 2 ** (STROKE_CENTS / 1200)
    return soma_shm.snap_trace(x, fs, [(t0, drawn), (t1, drawn)])


# (voice, a time inside the note, harmonic traced): the soprano's held C5 and its G5, an inner
# voice, the low bass, and the third harmonic of a bass note.
TRACED = [("soprano", 3.0, 1), ("soprano", 7.0, 1), ("alto", 1.0, 1), ("tenor", 5.0, 1),
          ("bass", 3.0, 1), ("bass", 5.0, 3)]


@pytest.mark.parametrize("voice, at, harmonic", TRACED)
def test_a_stroke_inside_a_note_snaps_to_its_pitch(chorale, voice, at, harmonic):
    x, fs = chorale
    n = ra.note(voice, at)
    p = trace(x, fs, n.on + 0.3, n.off - 0.3, harmonic * n.hz)
    off = cents(p[:, 1], harmonic * n.hz)
    # The samples are tuned within 3 cents; the stroke was 30 cents off.
    assert abs(np.median(off)) < 5.0, f"{voice} {n}: median {np.median(off):+.1f} cents"
    assert np.percentile(np.abs(off), 90) < 15.0


@pytest.mark.parametrize("at", [3.0, 7.0])
def test_a_stroke_past_a_notes_ends_is_loud_only_while_the_note_sounds(chorale, at):
    """The soprano enters after a rest and leaves by a leap: a stroke drawn half a second past
    both ends of its note gives a partial that is loud from the note-on to the note-off."""
    x, fs = chorale
    n = ra.note("soprano", at)
    p = trace(x, fs, n.on - 0.5, n.off + 0.5, n.hz)
    db = 20 * np.log10(p[:, 2])
    inside = (p[:, 0] > n.on + 0.2) & (p[:, 0] < n.off - 0.2)
    # Before the entry and after the leap the stroke finds only other voices' harmonics, at least
    # 10 dB below the note; inside it the level varies by 2 dB.
    loud = p[db > np.median(db[inside]) - 6.0, 0]
    assert abs(loud.min() - n.on) < 0.1, f"loud from {loud.min():.2f} s, the note starts at {n.on} s"
    assert abs(loud.max() - n.off) < 0.1, f"loud until {loud.max():.2f} s, the note ends at {n.off} s"
    # and contiguous: no quiet gap inside the note
    assert np.all(db[inside] > np.median(db[inside]) - 6.0)
    assert abs(np.median(cents(p[inside, 1], n.hz))) < 5.0


def read_mpe(path):
    """Notes of an MPE file: (on s, off s, note number, median sounding pitch in semitones),
    the bend range read from each channel's RPN 0."""
    mf = mido.MidiFile(path)
    tempo = 500_000
    bend_range, rpn, bend, sounding, out = {}, {}, {}, {}, []
    seconds = 0.0
    for msg in mido.merge_tracks(mf.tracks):
        seconds += mido.tick2second(msg.time, mf.ticks_per_beat, tempo)
        if msg.type == "set_tempo":
            tempo = msg.tempo
        elif msg.type == "control_change" and msg.control in (101, 100):
            rpn.setdefault(msg.channel, {})[msg.control] = msg.value
        elif msg.type == "control_change" and msg.control == 6 and rpn.get(msg.channel) == {101: 0, 100: 0}:
            bend_range[msg.channel] = msg.value
        elif msg.type == "pitchwheel":
            bend[msg.channel] = msg.pitch
            if msg.channel in sounding:
                on, number, pitches = sounding[msg.channel]
                pitches.append(number + msg.pitch / 8192 * bend_range[msg.channel])
        elif msg.type == "note_on" and msg.velocity > 0:
            sounding[msg.channel] = (seconds, msg.note, [msg.note + bend.get(msg.channel, 0) / 8192
                                                         * bend_range[msg.channel]])
        elif msg.type in ("note_off", "note_on") and msg.channel in sounding:
            on, number, pitches = sounding.pop(msg.channel)
            out.append((on, seconds, number, float(np.median(pitches))))
    return sorted(out)


def test_traced_notes_exported_as_mpe_read_back_as_the_score(chorale, tmp_path):
    """Trace every note of the chorale (inside its span), export MPE, read it back with mido:
    one note per traced note, at the score's pitch within a few cents, starting and ending
    where the partial does."""
    x, fs = chorale
    strokes = [(n, n.on + 0.25, n.off - 0.25) for n in ra.NOTES]
    partials = [trace(x, fs, t0, t1, n.hz) for n, t0, t1 in strokes]
    (path,) = export.write_mpe(partials, tmp_path / "chorale.mid")
    notes = read_mpe(path)
    assert len(notes) == len(ra.NOTES)
    want = sorted((t0, t1, n.midi) for n, t0, t1 in strokes)
    for (on, off, number, pitch), (t0, t1, midi) in zip(notes, want):
        assert number == midi
        assert abs(pitch - midi) < 0.05, f"note {midi} at {t0:.2f} s reads {pitch:.3f}"
        assert abs(on - t0) < 0.01 and abs(off - t1) < 0.01


@pytest.fixture(scope="module")
def engine():
    with soma_shm.Engine(spares=False) as eng:
        yield eng


OVERVIEW = dict(width=1024, height=256, fmin=50.0, fmax=12_000.0)
MP3_FRAME = 1152  # samples: an MP3 file holds whole frames, its last one padded


@pytest.mark.parametrize("suffix", list(ra.COMPRESSED))
def test_compressed_versions_open_like_the_wav(engine, real_audio, suffix):
    wav = engine.open(real_audio.chorale_wav)
    ref = engine.overview(**OVERVIEW).magnitude
    info = engine.open(real_audio.compressed[suffix])
    got = engine.overview(**OVERVIEW).magnitude
    assert info.sample_rate == wav.sample_rate and info.channels == wav.channels
    if suffix == "mp3":
        # sox writes no Xing/Info header: the delays are removed, the last frame's padding (after
        # the recording's end) stays (tests/test_audio_mp3.py lines the samples up).
        assert 0 <= info.frames - wav.frames <= MP3_FRAME + LAME_ENCODER_DELAY - MPEG_DECODER_DELAY
    else:
        assert info.frames == wav.frames
    ref_db = 20 * np.log10(np.maximum(ref, 1e-9))
    diff = np.abs(20 * np.log10(np.maximum(got, 1e-9)) - ref_db)
    notes = ref_db > ref_db.max() - 30.0  # the notes and their strong harmonics
    assert notes.mean() > 0.01
    if suffix == "flac":
        assert diff.max() == 0.0  # lossless: the same samples
    else:
        assert np.median(diff[notes]) < 1.0, np.median(diff[notes])
        assert np.percentile(diff[notes], 90) < 3.0, np.percentile(diff[notes], 90)


def test_a_stroke_along_speech_follows_the_voice_within_its_range(real_audio):
    """Along the sentence's longest voiced stretch (a falling glide), a flat stroke a semitone
    above the voice gives a track that stays within the speaker's range (measured over the whole
    sentence by autocorrelation) and follows the voice's own pitch."""
    x, fs = sf.read(real_audio.speech_wav, dtype="float32")
    times, f0 = ra.f0_track(x, fs)
    lo, hi = np.nanmin(f0), np.nanmax(f0)
    assert 60 < lo < hi < 200, (lo, hi)  # a low adult voice: the reference itself is sane
    t0, t1 = ra.voiced_segments(times, f0)[0]
    assert t1 - t0 > 0.3
    inside = (times >= t0) & (times <= t1)
    voice = f0[inside]
    assert cents(voice.max(), voice.min()) > 100  # the stretch is a glide, not a held pitch
    drawn = np.median(voice) * 2 ** (100 / 1200)
    p = soma_shm.snap_trace(x, fs, [(t0, drawn), (t1, drawn)])
    semitone = 2 ** (1 / 12)
    assert p[:, 1].min() > lo / semitone and p[:, 1].max() < hi * semitone, (p[:, 1].min(), p[:, 1].max(), lo, hi)
    along = np.interp(p[:, 0], times[inside], voice)
    assert np.median(np.abs(cents(p[:, 1], along))) < 30.0


def band_level_db(x, fs, hz, t0, t1, half_width=15.0):
    """RMS level (dB) of ``x`` between ``t0`` and ``t1`` s in the band ``hz`` +- ``half_width``."""
    seg = x[int(t0 * fs):int(t1 * fs)].astype(np.float64)
    spec = np.fft.rfft(seg * np.hanning(seg.size))
    f = np.fft.rfftfreq(seg.size, 1 / fs)
    band = np.abs(f - hz) <= half_width
    return 10 * np.log10(np.sum(np.abs(spec[band]) ** 2))


@pytest.mark.parametrize("voice, at", [("soprano", 3.0), ("tenor", 5.0), ("bass", 3.0)])
def test_resynthesis_of_a_traced_note_matches_its_level_in_that_band(chorale, voice, at):
    x, fs = chorale
    n = ra.note(voice, at)
    p = trace(x, fs, n.on + 0.2, n.off - 0.2, n.hz)
    y = render_partials([p], fs, frames=x.shape[0])
    hz = float(np.median(p[:, 1]))
    original = band_level_db(x, fs, hz, n.on + 0.3, n.off - 0.3)
    resynth = band_level_db(y, fs, hz, n.on + 0.3, n.off - 0.3)
    assert abs(resynth - original) < 0.5, f"{voice} {n}: {resynth - original:+.2f} dB"
    # and nothing elsewhere: an octave up, the resynthesis is silent
    assert band_level_db(y, fs, 2 * hz, n.on + 0.3, n.off - 0.3) < resynth - 60.0
