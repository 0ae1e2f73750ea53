"""SOMA's outputs: partials as MPE MIDI, multi-track MIDI, monophonic MIDI, sine-resynthesis audio
and CV audio. One partial is one note; nothing is muted, merged or split behind the user's back.

Every writer takes partials as ``(K, 3)`` arrays of (time s, frequency Hz, amplitude) rows (leave
muted partials out before calling) and writes atomically
(:func:`soma_shm.app.persistence.atomic_write`: a temporary file in the same folder, fsynced,
renamed over the target), so a failed export never leaves a half-written file. Files that would
hold more voices than a format allows are numbered ``name_01.mid``, ``name_02.mid``, ...; a single
file keeps the given name. Once a series is written, the rest of an earlier series under the same
name (``name.mid``, or numbered files past the new last one) is removed, so the folder holds one
export's files only.

MIDI (Standard MIDI File type 1, 960 ticks per beat at 120 bpm, so a tick is 1/1920 s):

- **pitch**: a note number per partial (the middle of its pitch range) plus pitch bend sampled
  every ``1 / cc_rate`` seconds from the partial's start (and at its end) on the same monotone
  cubic frequency curve the resynthesis plays; a partial wider than the bend range is re-struck
  where it leaves the range. Bend = round(8192 x semitones / range), so with the MPE default of
  +-48 semitones a step is 0.59 cent.
- **amplitude**: to channel pressure, CC74 or CC1 at the same times, ``linear`` (amplitude /
  loudest amplitude of the export, 0..127) or ``db`` (-60..0 dB onto 0..127); the note-on
  velocity is the partial's loudest point on the same scale (at least 1). Repeated values are
  not re-sent.
- **MPE** (:func:`write_mpe`): lower zone, manager channel 1 and member channels 2-16. The first
  track holds the tempo, the MPE Configuration Message (RPN 6 = 15 member channels on channel 1)
  and the pitch-bend range (RPN 0) on every member channel; the second holds the notes, one
  member channel per sounding partial. More than 15 partials at once: numbered files, each a
  complete MPE file with at most 15 voices (a partial goes to the first file with a free channel).
- **multi-track** (:func:`write_multitrack`): one track per voice (partials that never overlap
  share one), every track on channel 1, the bend range (RPN 0) set once.
- **monophonic** (:func:`write_mono`): one track on channel 1; notes may overlap (a mono synth's
  legato), and pitch bend and amplitude follow the partial that started last among those sounding.

Audio: :func:`write_audio` renders the partials' sines (WAV or FLAC by suffix; 16/24-bit PCM or,
WAV only, 32-bit float) at their calibrated level, scaled down only if they would clip (the gain
is returned). :func:`write_cv` writes control voltages as audio, stereo per voice: channel 1 pitch
(``volts_per_octave`` x octaves from ``base_hz``, as a fraction of ``full_scale_volts``; it holds
its last value after a note ends), channel 2 amplitude (0 .. full scale, linear or dB as above;
0 between notes). ``mode="mono"`` follows the partial that started last, one file;
``mode="poly"`` writes one numbered file per voice.

The MIDI writers build every message as numpy arrays and encode the tracks in one pass: one
``mido.Message`` object per event (``via_mido=True``, kept for comparison) writes identical
bytes but costs about 9 us per message, 36 s for 10,000 two-second partials at 100 Hz.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from .errors import AudioFormatError, ParameterError, SomaError

__all__ = ["write_mpe", "write_multitrack", "write_mono", "write_audio", "write_cv", "MidiOptions",
           "AMPLITUDE_TARGETS", "CURVES"]

Amplitude = Literal["pressure", "cc74", "cc1"]
Curve = Literal["linear", "db"]
AMPLITUDE_TARGETS: tuple[str, ...] = ("pressure", "cc74", "cc1")
CURVES: tuple[str, ...] = ("linear", "db")
TICKS_PER_BEAT = 960
BPM = 120.0
TICKS_PER_SECOND = TICKS_PER_BEAT * BPM / 60.0
DB_FLOOR = -60.0
MPE_VOICES = 15
MIN_SPEED, MAX_SPEED = 0.125, 8.0

# Message kinds in the event arrays, in the order they sort within one tick: a partial's last
# controls, then its note-off, then the next note's controls on that channel, its note-on, and
# the controls that follow a note-on.
_END_BEND, _END_AMP, _OFF, _PREP_BEND, _PREP_AMP, _ON, _BEND, _AMP = range(8)


# --------------------------------------------------------------------------------- atomic writes
def _write_bytes(path: Path, data: bytes) -> Path:
    """Write through :func:`soma_shm.app.persistence.atomic_write` (temporary file in the same
    folder, fsynced, renamed; nothing left behind on failure)."""
    from .app.persistence import atomic_write

    return Path(atomic_write(path, data))


def _numbered(path: Path, count: int) -> list[Path]:
    if count <= 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i:02d}{path.suffix}") for i in range(1, count + 1)]


def _retire_stale(path: Path, written: list[Path]) -> None:
    """After a series is written, remove what is left of an earlier export to the same name that
    this one did not replace: ``name.mid`` when it is now numbered, numbered files past the new
    last one (a DAW importing ``name_*.mid`` must not get voices of an older export). Only regular
    files of exactly that pattern are removed, never a symlink or a folder."""
    stale = [path] if len(written) > 1 else []
    i = max(len(written), 1) + 1
    while True:
        nxt = path.with_name(f"{path.stem}_{i:02d}{path.suffix}")
        if not nxt.is_file() or nxt.is_symlink():
            break
        stale.append(nxt)
        i += 1
    if len(written) <= 1:
        stale.insert(0, path.with_name(f"{path.stem}_01{path.suffix}"))
    for old in stale:
        if old.is_file() and not old.is_symlink():
            old.unlink()


# ------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class MidiOptions:
    """How partials become MIDI (see the module notes).

    ``pitch_bend_range`` semitones (1..96), ``amplitude`` target, amplitude ``curve``, ``cc_rate``
    (pitch bend and amplitude messages per second while a note sounds, 1..1000; 0 sends them at
    the partial's own points), ``bpm`` and ``ticks_per_beat`` of the file.
    """

    pitch_bend_range: int = 48
    amplitude: Amplitude = "pressure"
    curve: Curve = "linear"
    cc_rate: float = 100.0
    bpm: float = BPM
    ticks_per_beat: int = TICKS_PER_BEAT

    def __post_init__(self) -> None:
        r = self.pitch_bend_range
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= 96:
            raise ParameterError(f"pitch_bend_range={r!r} must be a whole number of semitones from 1 to 96")
        if self.amplitude not in AMPLITUDE_TARGETS:
            raise ParameterError(f"amplitude={self.amplitude!r} must be one of {', '.join(AMPLITUDE_TARGETS)}")
        if self.curve not in CURVES:
            raise ParameterError(f"curve={self.curve!r} must be 'linear' or 'db'")
        c = self.cc_rate
        if isinstance(c, bool) or not isinstance(c, (int, float, np.integer, np.floating)) or not (c == 0 or 1 <= c <= 1000):
            raise ParameterError(f"cc_rate={c!r} must be 0 (at the partials' points) or from 1 to 1000 messages per second")
        if isinstance(self.bpm, bool) or not isinstance(self.bpm, (int, float)) or not 10 <= self.bpm <= 1000:
            raise ParameterError(f"bpm={self.bpm!r} must be from 10 to 1000")
        tpb = self.ticks_per_beat
        if isinstance(tpb, bool) or not isinstance(tpb, (int, np.integer)) or not 24 <= tpb <= 32767:
            raise ParameterError(f"ticks_per_beat={tpb!r} must be from 24 to 32767")

    @property
    def ticks_per_second(self) -> float:
        return self.ticks_per_beat * self.bpm / 60.0


def _options(options: MidiOptions | None, overrides: dict, default_range: int) -> MidiOptions:
    if options is None:
        overrides.setdefault("pitch_bend_range", default_range)
        return MidiOptions(**overrides)
    if overrides:
        from dataclasses import replace

        return replace(options, **overrides)
    return options


# ------------------------------------------------------------------------------- partial curves
@dataclass
class _Sampled:
    """Per partial: control times, frequency and amplitude on the synthesis curves."""

    start: np.ndarray  # (P,) first point time
    end: np.ndarray  # (P,)
    offsets: np.ndarray  # (P+1,) into the flat arrays below
    times: np.ndarray
    freq: np.ndarray
    amp: np.ndarray
    peak: np.ndarray  # (P,) loudest point


def _sample(partials: Sequence[Any], cc_rate: float) -> _Sampled:
    from .kernels import synth as k
    from .synth import pack_partials

    packed = pack_partials(partials)
    P = packed.count
    lo, hi = packed.offsets[:-1], packed.offsets[1:]
    start, end = packed.t[lo], packed.t[hi - 1]
    if cc_rate > 0:
        steps = np.floor((end - start) * cc_rate + 1e-9).astype(np.int64)
        # the steps, and the end point unless a step lands on it
        on_end = np.isclose(start + steps / cc_rate, end, rtol=0, atol=1e-9)
        counts = steps + 1 + (~on_end)
        offsets = np.zeros(P + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        idx = np.arange(offsets[-1]) - np.repeat(offsets[:-1], counts)
        times = np.repeat(start, counts) + idx / cc_rate
        last = offsets[1:] - 1
        times[last] = end
    else:
        offsets = packed.offsets.copy()
        times = packed.t.copy()
    freq = np.empty_like(times)
    amp = np.empty_like(times)
    for p in range(P):
        a, b = offsets[p], offsets[p + 1]
        k.sample_curves(packed.t, packed.f, packed.a, packed.mf, packed.ma, int(lo[p]), int(hi[p]),
                        times[a:b], freq[a:b], amp[a:b])
    peak = np.maximum.reduceat(packed.a, lo) if P else np.zeros(0)
    return _Sampled(start, end, offsets, times, freq, amp, peak)


def _amp_values(amp: np.ndarray, loudest: float, curve: str) -> np.ndarray:
    """0..127 from amplitudes, relative to the loudest amplitude of the export."""
    rel = amp / loudest if loudest > 0 else np.zeros_like(amp)
    if curve == "db":
        with np.errstate(divide="ignore"):
            db = 20.0 * np.log10(np.maximum(rel, 1e-12))
        rel = np.clip((db - DB_FLOOR) / -DB_FLOOR, 0.0, 1.0)
    return np.clip(np.rint(rel * 127.0), 0, 127).astype(np.int64)


# --------------------------------------------------------------------------------- voices
def _allocate(start: np.ndarray, end: np.ndarray, voices: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(group, voice) per partial: first-fit in order of start; a voice is free once its last
    partial ended (at or before the new start). ``voices`` per group (None: one group, any number)."""
    import heapq

    P = start.shape[0]
    order = np.lexsort((end, start))
    group = np.zeros(P, np.int64)
    voice = np.zeros(P, np.int64)
    free: list[list[int]] = []  # per group: heap of free voice numbers
    busy: list[list[tuple[float, int]]] = []  # per group: heap of (end, voice)
    used: list[int] = []
    for p in order:
        s = start[p]
        placed = False
        for g in range(len(free)):
            while busy[g] and busy[g][0][0] <= s:
                heapq.heappush(free[g], heapq.heappop(busy[g])[1])
            if free[g]:
                v = heapq.heappop(free[g])
            elif voices is None or used[g] < voices:
                v = used[g]
                used[g] += 1
            else:
                continue
            heapq.heappush(busy[g], (end[p], v))
            group[p], voice[p] = g, v
            placed = True
            break
        if not placed:
            free.append([])
            busy.append([(end[p], 0)])
            used.append(1)
            group[p], voice[p] = len(free) - 1, 0
    return group, voice


# --------------------------------------------------------------------------------- events
@dataclass
class _Events:
    """Channel messages as arrays: tick, kind (sort order within a tick), status, data bytes."""

    tick: np.ndarray
    kind: np.ndarray
    status: np.ndarray
    d1: np.ndarray
    d2: np.ndarray
    size: np.ndarray  # 2 or 3 bytes

    @staticmethod
    def concat(parts: list["_Events"]) -> "_Events":
        if not parts:
            z = np.zeros(0, np.int64)
            return _Events(z, z, z, z, z, z)
        return _Events(*(np.concatenate([getattr(e, f) for e in parts]) for f in ("tick", "kind", "status", "d1", "d2", "size")))

    def take(self, mask: np.ndarray) -> "_Events":
        return _Events(self.tick[mask], self.kind[mask], self.status[mask], self.d1[mask], self.d2[mask], self.size[mask])

    def sorted(self) -> "_Events":
        order = np.lexsort((np.arange(self.tick.shape[0]), self.kind, self.tick))
        return self.take(order)


def _note_events(s: _Sampled, sel: np.ndarray, channel: np.ndarray, opts: MidiOptions, loudest: float,
                 mono_mask: np.ndarray | None = None) -> _Events:
    """Notes, pitch bend and amplitude of partials ``sel`` (channel per partial, 0-based)."""
    rng = float(opts.pitch_bend_range)
    tps = opts.ticks_per_second
    cc = {"pressure": None, "cc74": 74, "cc1": 1}[opts.amplitude]
    parts: list[_Events] = []
    # Flat arrays of the selected partials' samples.
    counts = s.offsets[sel + 1] - s.offsets[sel]
    idx = np.concatenate([np.arange(s.offsets[p], s.offsets[p + 1]) for p in sel]) if sel.size else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(sel.size), counts)
    t = s.times[idx]
    pitch = 69.0 + 12.0 * np.log2(s.freq[idx] / 440.0)
    # one note per partial, in the middle of its pitch range
    seg_lo = np.zeros(sel.size + 1, np.int64)
    np.cumsum(counts, out=seg_lo[1:])
    pmin = np.minimum.reduceat(pitch, seg_lo[:-1]) if sel.size else np.zeros(0)
    pmax = np.maximum.reduceat(pitch, seg_lo[:-1]) if sel.size else np.zeros(0)
    note_of = np.clip(np.rint(0.5 * (pmin + pmax)), 0, 127).astype(np.int64)
    note = note_of[owner]
    # Partials wider than the bend range: re-strike where the pitch leaves it (rare: a loop).
    restrike = np.zeros(t.shape[0], bool)
    for j in np.flatnonzero(pmax - pmin > 2 * rng - 1):
        a, b = seg_lo[j], seg_lo[j + 1]
        cur = int(np.clip(np.rint(pitch[a]), 0, 127))
        for i in range(a, b):
            if abs(pitch[i] - cur) > rng:
                cur = int(np.clip(np.rint(pitch[i]), 0, 127))
                restrike[i] = True
            note[i] = cur
    bend = np.clip(np.rint((pitch - note) / rng * 8192.0), -8192, 8191).astype(np.int64) + 8192
    amp = _amp_values(s.amp[idx], loudest, opts.curve)
    vel = np.maximum(_amp_values(s.peak[sel], loudest, opts.curve), 1)
    tick = np.rint(t * tps).astype(np.int64)
    ch = channel[owner]
    first = np.zeros(t.shape[0], bool)
    first[seg_lo[:-1][counts > 0]] = True
    last = np.zeros(t.shape[0], bool)
    last[seg_lo[1:][counts > 0] - 1] = True
    # drop repeated values within a partial (never the first sample or a re-strike)
    keep_bend = first | restrike | np.r_[True, (bend[1:] != bend[:-1]) | (owner[1:] != owner[:-1])]
    keep_amp = first | restrike | np.r_[True, (amp[1:] != amp[:-1]) | (owner[1:] != owner[:-1])]
    ctrl_ok = np.ones(t.shape[0], bool) if mono_mask is None else mono_mask[idx]
    prep = first | restrike
    starts_note = prep
    n = t.shape[0]
    ones = np.ones(n, np.int64)
    def kinds(m: np.ndarray, prep_kind: int, end_kind: int, cont_kind: int) -> np.ndarray:
        return np.where(prep[m], prep_kind, np.where(last[m], end_kind, cont_kind))

    # bend
    mb = keep_bend & (ctrl_ok | prep)
    parts.append(_Events(tick[mb], kinds(mb, _PREP_BEND, _END_BEND, _BEND), 0xE0 | ch[mb], bend[mb] & 0x7F,
                         bend[mb] >> 7, 3 * ones[mb]))
    # amplitude
    ma = keep_amp & (ctrl_ok | prep)
    if cc is None:
        parts.append(_Events(tick[ma], kinds(ma, _PREP_AMP, _END_AMP, _AMP), 0xD0 | ch[ma], amp[ma],
                             np.zeros(int(ma.sum()), np.int64), 2 * ones[ma]))
    else:
        parts.append(_Events(tick[ma], kinds(ma, _PREP_AMP, _END_AMP, _AMP), 0xB0 | ch[ma],
                             np.full(int(ma.sum()), cc, np.int64), amp[ma], 3 * ones[ma]))
    # note on at the first sample and every re-strike; note off before a re-strike and at the end
    on = starts_note
    parts.append(_Events(tick[on], np.full(int(on.sum()), _ON), 0x90 | ch[on], note[on], vel[owner[on]], 3 * ones[on]))
    off_idx = np.flatnonzero(restrike)
    off_note = note[off_idx - 1]
    parts.append(_Events(tick[off_idx], np.full(off_idx.size, _OFF), 0x80 | ch[off_idx], off_note,
                         np.zeros(off_idx.size, np.int64), 3 * np.ones(off_idx.size, np.int64)))
    # a note lasts at least one tick (a one-point partial too)
    end_tick = np.maximum(tick[last], tick[first] + 1)
    parts.append(_Events(end_tick, np.full(int(last.sum()), _OFF), 0x80 | ch[last], note[last],
                         np.zeros(int(last.sum()), np.int64), 3 * ones[last]))
    return _Events.concat(parts)


def _rpn(channel: int, msb_param: int, lsb_param: int, value: int) -> list[tuple[int, int, int]]:
    """An RPN set and its closing RPN null, as (status, d1, d2) control changes."""
    st = 0xB0 | channel
    return [(st, 101, msb_param), (st, 100, lsb_param), (st, 6, value), (st, 38, 0), (st, 101, 127), (st, 100, 127)]


def _setup_events(setup: list[tuple[int, int, int]]) -> _Events:
    n = len(setup)
    arr = np.array(setup, dtype=np.int64).reshape(n, 3)
    z = np.zeros(n, np.int64)
    return _Events(z, z - 1, arr[:, 0], arr[:, 1], arr[:, 2], np.full(n, 3, np.int64))


# -------------------------------------------------------------------------------- SMF encoding
def _vlq_sizes(d: np.ndarray) -> np.ndarray:
    return 1 + (d >= 1 << 7) + (d >= 1 << 14) + (d >= 1 << 21)


def _encode_track(ev: _Events, meta: bytes = b"") -> bytes:
    """MTrk chunk: ``meta`` (already encoded, delta 0 each) then the sorted events with running
    status (a status byte equal to the previous one is left out, as mido writes it), then the end."""
    ev = ev.sorted()
    n = ev.tick.shape[0]
    delta = np.diff(ev.tick, prepend=0)
    nb = _vlq_sizes(delta)
    show = np.ones(n, bool)
    show[1:] = ev.status[1:] != ev.status[:-1]
    rec = nb + ev.size - (~show)
    off = np.zeros(n + 1, np.int64)
    np.cumsum(rec, out=off[1:])
    buf = np.zeros(int(off[-1]), np.uint8)
    for k in range(4):  # variable-length delta: big-endian 7-bit groups, continuation bit set
        m = nb > k
        shift = 7 * (nb[m] - 1 - k)
        byte = (delta[m] >> shift) & 0x7F
        byte |= np.where(nb[m] - 1 - k > 0, 0x80, 0)
        buf[off[:-1][m] + k] = byte
    at = off[:-1] + nb
    buf[at[show]] = ev.status[show]
    at = at + show
    buf[at] = ev.d1
    three = ev.size == 3
    buf[at[three] + 1] = ev.d2[three]
    body = meta + buf.tobytes() + b"\x00\xff\x2f\x00"
    return b"MTrk" + len(body).to_bytes(4, "big") + body


def _meta_bytes(opts: MidiOptions, name: str | None = None) -> bytes:
    import mido

    msgs = [mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(opts.bpm))]
    if name:
        msgs.insert(0, mido.MetaMessage("track_name", name=name))
    return b"".join(b"\x00" + bytes(m.bytes()) for m in msgs)


def _smf(tracks: list[bytes], opts: MidiOptions) -> bytes:
    head = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big") + len(tracks).to_bytes(2, "big") \
        + int(opts.ticks_per_beat).to_bytes(2, "big")
    return head + b"".join(tracks)


def _mido_file(track_events: list[tuple[_Events, str | None, bool]], opts: MidiOptions):
    """The same file as a ``mido.MidiFile`` built one Message at a time (the slow path)."""
    import mido

    mf = mido.MidiFile(type=1, ticks_per_beat=opts.ticks_per_beat)
    for ev, name, tempo in track_events:
        tr = mido.MidiTrack()
        if name:
            tr.append(mido.MetaMessage("track_name", name=name, time=0))
        if tempo:
            tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(opts.bpm), time=0))
        ev = ev.sorted()
        last = 0
        for tick, st, d1, d2, size in zip(ev.tick.tolist(), ev.status.tolist(), ev.d1.tolist(), ev.d2.tolist(), ev.size.tolist()):
            data = [st, d1, d2] if size == 3 else [st, d1]
            tr.append(mido.Message.from_bytes(data, time=tick - last))
            last = tick
        mf.tracks.append(tr)
    return mf


def _write_midi(path: Path, track_events: list[tuple[_Events, str | None, bool]], opts: MidiOptions,
                via_mido: bool) -> Path:
    if via_mido:
        import io

        buf = io.BytesIO()
        _mido_file(track_events, opts).save(file=buf)
        return _write_bytes(path, buf.getvalue())
    tracks = [_encode_track(ev, _meta_bytes(opts, name) if tempo else _meta_bytes_name(name))
              for ev, name, tempo in track_events]
    return _write_bytes(path, _smf(tracks, opts))


def _meta_bytes_name(name: str | None) -> bytes:
    if not name:
        return b""
    import mido

    return b"\x00" + bytes(mido.MetaMessage("track_name", name=name).bytes())


def _check_path(path: Any, suffixes: tuple[str, ...], what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ParameterError(f"path={path!r} must be a file path ending in {' or '.join(suffixes)}")
    p = Path(path).expanduser()
    if p.suffix.lower() not in suffixes:
        raise ParameterError(f"{what} path {str(p)!r} must end in {' or '.join(suffixes)}")
    if not p.parent.is_dir():
        raise ParameterError(f"folder {str(p.parent)!r} does not exist; choose an existing folder")
    return p


def _loudest(s: _Sampled) -> float:
    return float(s.peak.max()) if s.peak.size else 0.0


# -------------------------------------------------------------------------------- MIDI writers
def write_mpe(partials: Sequence[Any], path: str | os.PathLike, options: MidiOptions | None = None, *,
              via_mido: bool = False, **overrides: Any) -> list[Path]:
    """Write partials as MPE MIDI: one member channel per sounding partial, numbered files when
    more than 15 sound at once.

    Parameters
    ----------
    partials : sequence of array_like
        ``(K, 3)`` rows of (time s, frequency Hz, amplitude), times increasing.
    path : path
        ``.mid`` target; with more than 15 simultaneous partials ``stem_01.mid``, ``stem_02.mid``...
    options : MidiOptions, optional
        Bend range (default 48 semitones for MPE), amplitude target and curve, CC rate, tempo;
        keyword ``overrides`` (e.g. ``amplitude="cc74"``) replace single fields.
    via_mido : bool
        Build one ``mido.Message`` per event (identical bytes, far slower).

    Returns
    -------
    list of Path
        The files written (none when ``partials`` is empty).

    Raises
    ------
    ParameterError
        Bad options, a malformed partial (named), a missing folder or a wrong suffix.
    """
    p = _check_path(path, (".mid", ".midi"), "MIDI")
    opts = _options(options, dict(overrides), 48)
    s = _sample(list(partials), opts.cc_rate)
    P = s.start.shape[0]
    if P == 0:
        return []
    group, voice = _allocate(s.start, s.end, MPE_VOICES)
    loudest = _loudest(s)
    setup = _rpn(0, 0, 6, MPE_VOICES)  # MPE Configuration Message: lower zone, 15 member channels
    for ch in range(1, MPE_VOICES + 1):
        setup += _rpn(ch, 0, 0, opts.pitch_bend_range)
    files = _numbered(p, int(group.max()) + 1)
    written = []
    for g, target in enumerate(files):
        sel = np.flatnonzero(group == g)
        notes = _note_events(s, sel, voice + 1, opts, loudest)
        written.append(_write_midi(target, [(_setup_events(setup), "MPE setup", True), (notes, "partials", False)],
                                   opts, via_mido))
    _retire_stale(p, written)
    return written


def write_multitrack(partials: Sequence[Any], path: str | os.PathLike, options: MidiOptions | None = None, *,
                     via_mido: bool = False, **overrides: Any) -> list[Path]:
    """Write partials as multi-track MIDI: one track per voice, all on channel 1 (bend range
    default 12 semitones). See :func:`write_mpe` for the parameters."""
    p = _check_path(path, (".mid", ".midi"), "MIDI")
    opts = _options(options, dict(overrides), 12)
    s = _sample(list(partials), opts.cc_rate)
    if s.start.shape[0] == 0:
        return []
    _, voice = _allocate(s.start, s.end, None)
    loudest = _loudest(s)
    zeros = np.zeros(s.start.shape[0], np.int64)
    tracks = []
    for v in range(int(voice.max()) + 1):
        sel = np.flatnonzero(voice == v)
        ev = _note_events(s, sel, zeros, opts, loudest)
        if v == 0:
            ev = _Events.concat([_setup_events(_rpn(0, 0, 0, opts.pitch_bend_range)), ev])
        tracks.append((ev, f"voice {v + 1}", v == 0))
    return [_write_midi(p, tracks, opts, via_mido)]


def write_mono(partials: Sequence[Any], path: str | os.PathLike, options: MidiOptions | None = None, *,
               via_mido: bool = False, **overrides: Any) -> list[Path]:
    """Write partials as monophonic MIDI: one track on channel 1, overlapping notes allowed,
    controls from the partial that started last (bend range default 12 semitones). See
    :func:`write_mpe` for the parameters."""
    from .kernels import synth as k

    p = _check_path(path, (".mid", ".midi"), "MIDI")
    opts = _options(options, dict(overrides), 12)
    s = _sample(list(partials), opts.cc_rate)
    P = s.start.shape[0]
    if P == 0:
        return []
    order = np.lexsort((s.end, s.start))
    rank = np.empty(P, np.int64)
    rank[order] = np.arange(P)
    owner_all = np.repeat(np.arange(P), np.diff(s.offsets))
    by_time = np.lexsort((rank[owner_all], s.times))
    mask_sorted = np.zeros(by_time.shape[0], np.bool_)
    k.latest_active(s.start[order], s.end[order], s.times[by_time], rank[owner_all][by_time], mask_sorted)
    mono_mask = np.empty_like(mask_sorted)
    mono_mask[by_time] = mask_sorted
    ev = _note_events(s, np.arange(P), np.zeros(P, np.int64), opts, _loudest(s), mono_mask)
    ev = _Events.concat([_setup_events(_rpn(0, 0, 0, opts.pitch_bend_range)), ev])
    return [_write_midi(p, [(ev, "monophonic", True)], opts, via_mido)]


# ------------------------------------------------------------------------------- audio writers
_SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


def _check_audio(path: Any, sample_rate: Any, bit_depth: Any) -> tuple[Path, int, str]:
    p = _check_path(path, (".wav", ".flac"), "audio")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 384000:
        raise ParameterError(f"sample_rate={sample_rate!r} must be a whole number of Hz from 8000 to 384000")
    if bit_depth not in _SUBTYPES or isinstance(bit_depth, bool):
        raise ParameterError(f"bit_depth={bit_depth!r} must be 16, 24 or 32 (32 = float, WAV only)")
    if bit_depth == 32 and p.suffix.lower() == ".flac":
        raise ParameterError("FLAC holds 16- or 24-bit integers only; use bit_depth=16 or 24, or a .wav file for 32-bit float")
    return p, int(sample_rate), _SUBTYPES[bit_depth]


def _write_sound(p: Path, data: np.ndarray, sample_rate: int, subtype: str) -> Path:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, data, sample_rate, subtype=subtype, format="FLAC" if p.suffix.lower() == ".flac" else "WAV")
    return _write_bytes(p, buf.getvalue())


def write_audio(partials: Sequence[Any], path: str | os.PathLike, sample_rate: int = 48_000, bit_depth: int = 24, *,
                duration: float | None = None, stretch: float = 1.0, normalize: bool = False) -> dict:
    """Render the partials' sines to a WAV or FLAC file.

    ``duration`` (s of source time; default: to the end of the last partial) sets the length,
    ``stretch`` plays it slower (> 1) or faster (< 1) at the same pitch. Levels are calibrated
    (a partial of amplitude A peaks at A) unless they would clip, or ``normalize`` asks for a
    peak of -1 dBFS. Returns ``{"path", "frames", "gain_db", "peak"}``.
    """
    from .synth import render_partials

    p, fs, subtype = _check_audio(path, sample_rate, bit_depth)
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 86_400):
        raise ParameterError(f"duration={duration!r} must be a number of seconds > 0")
    parts = list(partials)
    if duration is None:
        duration = max((float(np.asarray(x, dtype=np.float64)[-1, 0]) for x in parts), default=0.0) + 0.01
    frames = int(math.ceil(duration * fs * stretch))
    y = render_partials(parts, fs, frames, stretch=stretch)
    peak = float(np.abs(y).max()) if y.size else 0.0
    gain = 1.0
    if peak > 0 and (normalize or (peak > 1.0 and subtype != "FLOAT")):
        gain = (10 ** (-1 / 20) if normalize else 1.0) / peak
        y *= np.float32(gain)
    written = _write_sound(p, y, fs, subtype)
    return {"path": written, "frames": frames, "gain_db": 20 * math.log10(gain), "peak": peak * gain}


def write_cv(partials: Sequence[Any], path: str | os.PathLike, sample_rate: int = 48_000, bit_depth: int = 24, *,
             mode: Literal["mono", "poly"] = "mono", base_hz: float = 440.0, volts_per_octave: float = 1.0,
             full_scale_volts: float = 10.0, curve: Curve = "linear", duration: float | None = None) -> list[Path]:
    """Write pitch and amplitude control voltages as stereo audio (see the module notes).

    A sample value of 1.0 stands for ``full_scale_volts``: pitch ``f`` is
    ``volts_per_octave * log2(f / base_hz) / full_scale_volts`` (clipped to +-1), amplitude is
    0..1 (linear to the loudest partial, or -60..0 dB). ``mode="poly"``: one numbered file per
    voice. Returns the files written.
    """
    from .kernels import synth as k
    from .synth import pack_partials

    p, fs, subtype = _check_audio(path, sample_rate, bit_depth)
    if mode not in ("mono", "poly"):
        raise ParameterError(f"mode={mode!r} must be 'mono' (one voice) or 'poly' (a file per voice)")
    if curve not in CURVES:
        raise ParameterError(f"curve={curve!r} must be 'linear' or 'db'")
    for name, v in (("base_hz", base_hz), ("volts_per_octave", volts_per_octave), ("full_scale_volts", full_scale_volts)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
            raise ParameterError(f"{name}={v!r} must be a positive number")
    packed = pack_partials(list(partials))
    P = packed.count
    lo, hi = packed.offsets[:-1], packed.offsets[1:]
    start, end = packed.t[lo] if P else np.zeros(0), packed.t[hi - 1] if P else np.zeros(0)
    if duration is None:
        duration = float(end.max()) + 0.01 if P else 0.01
    frames = max(1, int(math.ceil(duration * fs)))
    loudest = float(packed.a.max()) if P else 0.0
    if mode == "poly" and P:
        _, voice = _allocate(start, end, None)
        voices = [np.flatnonzero(voice == v) for v in range(int(voice.max()) + 1)]
    else:
        voices = [np.arange(P)]
    files = _numbered(p, len(voices))
    written = []
    for members, target in zip(voices, files):
        owner = np.full(frames, -1, np.int64)
        # the partial that started last owns each sample (later starts overwrite)
        for q in members[np.lexsort((end[members], start[members]))]:
            n0 = max(0, int(math.ceil(start[q] * fs)))
            n1 = min(frames - 1, int(math.floor(end[q] * fs)))
            if n1 >= n0:
                owner[n0:n1 + 1] = q
        freq = np.zeros(frames)
        amp = np.zeros(frames)
        for q in members:
            n0 = max(0, int(math.ceil(start[q] * fs)))
            n1 = min(frames - 1, int(math.floor(end[q] * fs)))
            if n1 < n0:
                continue
            seg = np.arange(n0, n1 + 1)[owner[n0:n1 + 1] == q]
            if not seg.size:
                continue
            ts = seg / fs
            fq, aq = np.empty_like(ts), np.empty_like(ts)
            k.sample_curves(packed.t, packed.f, packed.a, packed.mf, packed.ma, int(lo[q]), int(hi[q]), ts, fq, aq)
            freq[seg] = fq
            amp[seg] = aq
        # pitch holds its last value between notes (and the first note's pitch before it)
        sounding = owner >= 0
        if sounding.any():
            last = np.maximum.accumulate(np.where(sounding, np.arange(frames), -1))
            first = int(np.argmax(sounding))
            last[last < 0] = first
            freq = freq[last]
        else:
            freq[:] = base_hz
        pitch = np.clip(volts_per_octave * np.log2(freq / base_hz) / full_scale_volts, -1.0, 1.0)
        rel = amp / loudest if loudest > 0 else amp
        if curve == "db":
            with np.errstate(divide="ignore"):
                rel = np.where(rel > 0, np.clip((20 * np.log10(np.maximum(rel, 1e-12)) - DB_FLOOR) / -DB_FLOOR, 0, 1), 0.0)
        data = np.stack([pitch, np.clip(rel, 0.0, 1.0)], axis=1).astype(np.float32)
        written.append(_write_sound(target, data, fs, subtype))
    _retire_stale(p, written)
    return written


# ---------------------------------------------------------------------------------- command line
def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="export a .soma project's partials as MPE/MIDI, sine audio or CV audio")
    e.add_argument("project", help=".soma project")
    e.add_argument("--mpe", metavar="OUT.mid", help="MPE MIDI (numbered files past 15 simultaneous partials)")
    e.add_argument("--midi", metavar="OUT.mid", help="multi-track MIDI (one track per voice, channel 1)")
    e.add_argument("--mono", metavar="OUT.mid", help="monophonic MIDI (one track, channel 1)")
    e.add_argument("--audio", metavar="OUT.wav|flac", help="sine resynthesis")
    e.add_argument("--cv", metavar="OUT.wav|flac", help="CV audio: pitch and amplitude per voice")
    e.add_argument("--pitch-bend-range", type=int, default=None, help="semitones (default: 48 MPE, 12 otherwise)")
    e.add_argument("--amplitude", choices=AMPLITUDE_TARGETS, default="pressure", help="amplitude target (MIDI)")
    e.add_argument("--curve", choices=CURVES, default="linear", help="amplitude curve (MIDI and CV)")
    e.add_argument("--cc-rate", type=float, default=100.0, help="bend/amplitude messages per second (0: at points)")
    e.add_argument("--rate", type=int, default=None, help="audio sample rate (default: the source's, else 48000)")
    e.add_argument("--bit-depth", type=int, choices=(16, 24, 32), default=24, help="audio bit depth (32 = float)")
    e.add_argument("--cv-mode", choices=("mono", "poly"), default="mono")
    e.add_argument("--speed", type=float, default=1.0, help="sine audio speed, 1/8..8 (pitch kept)")
    e.add_argument("--normalize", action="store_true", help="sine audio peak at -1 dBFS")
    e.add_argument("--include-muted", action="store_true", help="export muted partials too")
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .app.document import read_project

    targets = [args.mpe, args.midi, args.mono, args.audio, args.cv]
    if not any(targets):
        raise ParameterError("nothing to export: give at least one of --mpe, --midi, --mono, --audio, --cv")
    project = read_project(args.project)
    doc = project.document
    rate, duration = args.rate, None
    source = None
    if doc.source_path:
        from .app.persistence import locate_audio

        try:
            source = locate_audio(doc.source_path, doc.source_md5, args.project)
        except SomaError:  # moved and not found: MIDI needs no audio
            source = None
    unreadable: AudioFormatError | None = None
    if source:
        from .audio import audio_info

        try:  # the length the app opens (an MP3's is its recording's, not libsndfile's estimate)
            info = audio_info(source)
            rate = rate or int(info.sample_rate)
            duration = info.duration
        except AudioFormatError as exc:  # MIDI needs no audio; sine and CV audio take their defaults
            source, unreadable = None, exc
    if project.amplitudes_need_reference:  # SOMA's 0-1 amplitudes: scale by their recording's level
        if unreadable is not None:
            raise unreadable
        if source is None:
            raise ParameterError(f"the project's amplitudes are relative to its recording {doc.source_path!r}, "
                                 "which was not found; put the audio back or open and save the project in the app")
        from .audio import load_audio
        from .render import reference_level

        x, fs = load_audio(source)
        doc.scale_amplitudes(reference_level(x, fs))
    parts = [p.points for p in doc.partials if args.include_muted or not p.is_muted]
    rate = rate or 48_000
    if duration is not None and parts:
        duration = max(duration, max(float(p[-1, 0]) for p in parts) + 0.01)
    overrides = dict(amplitude=args.amplitude, curve=args.curve, cc_rate=args.cc_rate)
    if args.pitch_bend_range is not None:
        overrides["pitch_bend_range"] = args.pitch_bend_range
    out: list[str] = []
    if args.mpe:
        out += [str(x) for x in write_mpe(parts, args.mpe, **overrides)]
    if args.midi:
        out += [str(x) for x in write_multitrack(parts, args.midi, **overrides)]
    if args.mono:
        out += [str(x) for x in write_mono(parts, args.mono, **overrides)]
    if args.audio:
        if not MIN_SPEED <= args.speed <= MAX_SPEED:
            raise ParameterError(f"--speed {args.speed} must be from 1/8 to 8")
        out.append(str(write_audio(parts, args.audio, rate, args.bit_depth, duration=duration,
                                   stretch=1.0 / args.speed, normalize=args.normalize)["path"]))
    if args.cv:
        out += [str(x) for x in write_cv(parts, args.cv, rate, args.bit_depth, mode=args.cv_mode, curve=args.curve,
                                         duration=duration)]
    print(f"{len(parts)} partials ->")
    for line in out:
        print(f"  {line}")
    return 0

