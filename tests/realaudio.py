"""Realistic test audio made on this machine, with known content.

- A four-voice chorale (clarinets, plagal cadence, ~9.5 s) written with ``mido`` and rendered to a
  48 kHz 16-bit stereo WAV by Debian's ``fluidsynth`` with ``FluidR3_GM.sf2`` (reverb and chorus
  off, so every note is a steady tone at its score pitch). :data:`NOTES` is the score.
- A spoken sentence from ``espeak-ng`` (22.05 kHz), resampled by ``sox`` to 48 kHz.
- The chorale converted by ``sox`` to FLAC, Ogg Vorbis and MP3 (``libsox-fmt-all``); sox has no
  Opus writer, so Opus is not among them.

The score is voiced so that every note the tests trace has no partial of another voice within
1.5 semitones of it (other than the same pitch exactly), and the soprano enters after a rest and
leaves by a leap of a fifth, so a stroke drawn past its ends finds nothing loud there.
:func:`f0_track` is a plain autocorrelation pitch tracker, the reference the speech test compares
the snapped track with. ``conftest.py`` renders everything once per test session.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TOOLS = ("fluidsynth", "espeak-ng", "sox")
FS = 48_000
CLARINET = 71  # General MIDI program (0-based): its FluidR3 samples are within 3 cents of pitch
START = 0.5  # s of silence before the first chord
CHORD = 2.0  # s per chord
SECONDS = 9.5  # length of the rendered file (the last chord ends at 8.5 s)
TICKS_PER_SECOND = 960  # 480 ticks per beat at 120 bpm

# One MIDI note per chord and voice (None: a rest); a repeated note is held. I I IV I in C major.
VOICES = {
    "soprano": [None, 72, 72, 79],  # rest, C5 held over two chords, a leap up to G5
    "alto": [64, 64, 65, 64],  # E4 E4 F4 E4
    "tenor": [55, 55, 57, 55],  # G3 G3 A3 G3
    "bass": [48, 36, 41, 48],  # C3 C2 F2 C3
}
VELOCITY = {"soprano": 100, "alto": 80, "tenor": 80, "bass": 85}


@dataclass(frozen=True)
class Note:
    voice: str
    midi: int
    on: float  # s
    off: float  # s

    @property
    def hz(self) -> float:
        return midi_hz(self.midi)


def midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _notes() -> list[Note]:
    out = []
    for voice, pitches in VOICES.items():
        i = 0
        while i < len(pitches):
            j = i
            while j + 1 < len(pitches) and pitches[j + 1] == pitches[i]:
                j += 1
            if pitches[i] is not None:
                out.append(Note(voice, pitches[i], START + i * CHORD, START + (j + 1) * CHORD))
            i = j + 1
    return out


NOTES = _notes()


def note(voice: str, at: float) -> Note:
    """The note ``voice`` sounds at ``at`` seconds."""
    (found,) = [n for n in NOTES if n.voice == voice and n.on <= at < n.off]
    return found


def missing_tools() -> list[str]:
    out = [t for t in TOOLS if shutil.which(t) is None]
    if not SOUNDFONT.exists():
        out.append(f"{SOUNDFONT} (fluid-soundfont-gm)")
    return out


def write_chorale_midi(path: Path) -> Path:
    """The score as a type-0 MIDI file: one channel per voice, all clarinets."""
    import mido

    events = []  # (seconds, is_on, channel, note, velocity)
    for channel, (voice, _) in enumerate(VOICES.items()):
        for n in (n for n in NOTES if n.voice == voice):
            events.append((n.on, 1, channel, n.midi, VELOCITY[voice]))
            events.append((n.off, 0, channel, n.midi, 0))
    events.sort()  # at one instant, note-offs (0) before note-ons (1)
    mf = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_SECOND // 2)
    track = mido.MidiTrack()
    mf.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    for channel in range(len(VOICES)):
        track.append(mido.Message("program_change", channel=channel, program=CLARINET, time=0))
    tick = 0
    for seconds, is_on, channel, midi, velocity in events:
        at = int(round(seconds * TICKS_PER_SECOND))
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=channel, note=midi, velocity=velocity, time=at - tick))
        tick = at
    track.append(mido.MetaMessage("end_of_track", time=int((SECONDS - 8.5) * TICKS_PER_SECOND)))
    mf.save(path)
    return path


def _run(*cmd: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")


def render_chorale(folder: Path) -> tuple[Path, Path]:
    """``chorale.mid`` and its 48 kHz rendering ``chorale.wav`` (cut to :data:`SECONDS`)."""
    mid = write_chorale_midi(folder / "chorale.mid")
    raw = folder / "chorale_fluidsynth.wav"
    _run("fluidsynth", "-q", "-n", "-i", "-R", "0", "-C", "0", "-r", str(FS), "-g", "0.6",
         "-F", str(raw), str(SOUNDFONT), str(mid))
    wav = folder / "chorale.wav"
    _run("sox", str(raw), "-b", "16", str(wav), "trim", "0", str(SECONDS))
    raw.unlink()
    return mid, wav


SENTENCE = "Remember, I will now be alone all evening."


def render_speech(folder: Path) -> Path:
    """:data:`SENTENCE` spoken by espeak-ng's default English voice, resampled to 48 kHz."""
    raw = folder / "speech_espeak.wav"
    _run("espeak-ng", "-v", "en", "-s", "140", "-w", str(raw), SENTENCE)
    wav = folder / "speech.wav"
    _run("sox", str(raw), "-r", str(FS), str(wav))
    raw.unlink()
    return wav


COMPRESSED = {"flac": ("-C", "5"), "ogg": ("-C", "5"), "mp3": ("-C", "192")}


def convert(wav: Path, suffix: str) -> Path:
    """``wav`` converted by sox to ``suffix`` (FLAC level 5, Vorbis quality 5, MP3 at 192 kbit/s)."""
    out = wav.with_suffix("." + suffix)
    _run("sox", str(wav), *COMPRESSED[suffix], str(out))
    return out


@dataclass(frozen=True)
class RealAudio:
    folder: Path
    chorale_mid: Path
    chorale_wav: Path
    compressed: dict  # suffix -> Path of the chorale in that format
    speech_wav: Path


def render_all(folder: Path) -> RealAudio:
    folder.mkdir(parents=True, exist_ok=True)
    mid, wav = render_chorale(folder)
    compressed = {suffix: convert(wav, suffix) for suffix in COMPRESSED}
    return RealAudio(folder, mid, wav, compressed, render_speech(folder))


def f0_track(x: np.ndarray, fs: float, hop_s: float = 0.01, window_s: float = 0.04,
             fmin: float = 60.0, fmax: float = 400.0, voicing: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Reference pitch track by normalised autocorrelation: ``(times, f0)``, f0 NaN where the
    best lag's correlation is below ``voicing`` or the frame is near silence. The lag is refined
    by a parabola, so the track resolves a few cents."""
    win, hop = int(round(window_s * fs)), int(round(hop_s * fs))
    lo, hi = int(fs / fmax), int(fs / fmin)
    times, f0 = [], []
    floor = 1e-4 * float(np.max(np.abs(x))) ** 2 * win
    for s in range(0, x.size - win, hop):
        seg = x[s:s + win].astype(np.float64)
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, "full")[win - 1:]
        times.append((s + win / 2) / fs)
        if ac[0] <= floor:
            f0.append(np.nan)
            continue
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] / ac[0] < voicing or not lo < k < hi - 1:
            f0.append(np.nan)
            continue
        a, b, c = ac[k - 1], ac[k], ac[k + 1]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c else 0.0
        f0.append(fs / (k + shift))
    return np.asarray(times), np.asarray(f0)


def voiced_segments(times: np.ndarray, f0: np.ndarray) -> list[tuple[float, float]]:
    """(first, last) frame times of each run of voiced frames, longest first."""
    voiced = ~np.isnan(f0)
    runs, i = [], 0
    while i < voiced.size:
        if voiced[i]:
            j = i
            while j + 1 < voiced.size and voiced[j + 1]:
                j += 1
            runs.append((float(times[i]), float(times[j])))
            i = j + 1
        else:
            i += 1
    return sorted(runs, key=lambda r: r[0] - r[1])
