"""Decoding audio files to mono float32, straight into a caller's buffer.

libsndfile (through soundfile) reads WAV (incl. RF64/W64), FLAC, OGG/Vorbis, Opus, MP3, AIFF and
more; FLAC is decoded by libFLAC directly when it can be loaded (:mod:`soma_shm._flac`), and an
MP3's encoder and decoder delay and padding are located by :mod:`soma_shm._mp3` and skipped. Files
are decoded in chunks and mixed down to mono into the destination (for the engine, a
shared-memory block), so peak memory stays near one float32 copy of the audio.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import _flac, _validate
from ._mp3 import mpeg_layout
from .errors import AudioFormatError

__all__ = ["AudioInfo", "audio_info", "decode_into", "load_audio"]

CHUNK_FRAMES = 1 << 18  # 262144 frames per read: ~1 MiB of float32 per channel
PARALLEL_MIN_FRAMES = 1 << 22  # ~1.5 min at 48 kHz: longer files are decoded in parallel ranges
DECODE_THREADS = min(8, os.cpu_count() or 1)
"""Threads that decode a long file, each its own range: libsndfile (FLAC, Vorbis, Opus, MP3
decoders included) and numpy release the GIL. libsndfile seeks every one of these formats to the
exact sample (Vorbis and Opus decode their pre-roll, MP3 its bit reservoir), so the ranges meet
without a seam: the samples equal one sequential pass bit for bit (tests/test_audio.py checks
each format)."""

# libsndfile subtypes whose samples are integers: read dtype and the scale to [-1, 1) (the scale
# libsndfile itself uses for float reads, so both paths give the same samples).
_INTEGER_READS = {
    **{s: ("int16", 1.0 / 32768.0) for s in ("PCM_S8", "PCM_U8", "PCM_16", "ALAC_16", "DWVW_12", "DWVW_16")},
    **{s: ("int32", 1.0 / 2147483648.0) for s in ("PCM_24", "PCM_32", "ALAC_20", "ALAC_24", "ALAC_32", "DWVW_24")},
}


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header."""

    path: str
    frames: int
    sample_rate: float
    channels: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _open(path: str | os.PathLike):
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioFormatError(f"audio file {str(p)!r} does not exist")
    if p.is_dir():
        raise AudioFormatError(f"{str(p)!r} is a folder, not an audio file")
    if not p.is_file():  # a FIFO, socket or device: reading it could block forever
        raise AudioFormatError(f"{str(p)!r} is not a regular file (a pipe, socket or device); save the audio to a file first")
    try:
        return sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFormatError(
            f"cannot read {str(p)!r} as audio ({exc}); supported: WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF"
        ) from None


def _riff_header_frames(path: str | os.PathLike) -> int | None:
    """Frames a RIFF/RF64 WAV header promises (its data chunk size over the frame size), or None
    when the header does not say (a streamed WAV writes 0 or 0xFFFFFFFF) or cannot be parsed.

    libsndfile reads what the file holds, so a file cut short (a copy or a recording interrupted)
    would otherwise open as a shorter recording without a word.
    """
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
                return None
            rf64 = head[:4] == b"RF64"
            ds64_data = block_align = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"ds64":
                    body = f.read(size)
                    if len(body) >= 16:
                        ds64_data = struct.unpack("<Q", body[8:16])[0]
                    f.seek(size & 1, 1)
                    continue
                if cid == b"fmt ":
                    body = f.read(size)
                    if len(body) >= 14:
                        block_align = struct.unpack("<H", body[12:14])[0]
                    f.seek(size & 1, 1)
                    continue
                if cid == b"data":
                    if rf64 and size == 0xFFFFFFFF:
                        size = ds64_data
                    if not size or size == 0xFFFFFFFF or not block_align:
                        return None
                    return int(size) // block_align
                f.seek(size + (size & 1), 1)
    except OSError:
        return None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header information of an audio file.

    An MP3's frames are those of the recording it was encoded from: the encoder's delay, the
    decoder's and the padding of its last frame are not counted (see :func:`decode_into`).

    Raises
    ------
    AudioFormatError
        Missing, unreadable, empty or not a regular file (a pipe would block), a WAV whose data
        stops before the frames its header promises (a file cut short: an error rather than a
        silently shorter recording), or a sample rate outside 8 kHz .. 384 kHz.
    """
    return _probe(path)[0]


def _probe(path: str | os.PathLike) -> tuple[AudioInfo, int]:
    """:func:`audio_info` and the decoder's frames to skip before the recording's first one."""
    lead = 0
    with _open(path) as f:
        info = AudioInfo(str(path), int(f.frames), float(f.samplerate), int(f.channels), f.format, f.subtype)
    promised = _riff_header_frames(path) if info.format in ("WAV", "WAVEX", "RF64") else None
    if promised is not None and promised > info.frames:
        raise AudioFormatError(
            f"{str(path)!r} is truncated: its header promises {promised} frames "
            f"({promised / info.sample_rate:.3f} s) but the file holds only {info.frames} "
            f"({info.frames / info.sample_rate:.3f} s); rewrite the file (e.g. `sox cut.wav fixed.wav`) "
            "to open the part that is there"
        )
    if info.format == "MP3":
        layout = mpeg_layout(path, info.frames)
        if layout is not None:
            lead = layout[0]
            info = dataclasses.replace(info, frames=layout[1])
    if info.frames <= 0:
        raise AudioFormatError(f"audio file {str(path)!r} holds no samples (0 frames)")
    try:
        _validate.sample_rate(info.sample_rate)
    except AudioFormatError as exc:
        raise AudioFormatError(f"{str(path)!r}: {exc}") from None
    return info, lead


_UNMAPPED, _MAPPING, _MAPPED = 0, 1, 2


class _AheadMapper:
    """Prefaults a destination's chunks (``CHUNK_FRAMES`` each, per decoder's range ``edges[k]:
    edges[k + 1]``) from a thread of its own, just ahead of the decoders that fill them.

    A decoder calls :meth:`wait` before writing: a chunk the thread has not reached yet it
    prefaults itself (so on memory slow to hand out, every core maps, none waits idle), one
    being prefaulted it waits for. The thread stops at its first error; the decoder that reaches
    that chunk prefaults it again and raises the error.
    """

    def __init__(self, prefault: Callable[[int, int], None], edges: list[int], chunk: int):
        self._prefault, self._edges, self._chunk = prefault, edges, chunk
        self._state = [bytearray(-(-(b - a) // chunk)) for a, b in zip(edges[:-1], edges[1:])]
        self._ready = [0] * len(self._state)  # chunks known mapped, per part (its decoder's own)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soma-decode-map", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and wait for it: no chunk is prefaulted after this returns."""
        self._stop.set()
        self._thread.join()

    def _map(self, part: int, c: int) -> bool:
        """Claim chunk ``c`` of ``part`` and prefault it (True), or False when another thread has."""
        state = self._state[part]
        with self._cond:
            if state[c] != _UNMAPPED:
                return False
            state[c] = _MAPPING
        start = self._edges[part] + c * self._chunk
        try:
            self._prefault(start, min(start + self._chunk, self._edges[part + 1]))
        except BaseException:
            with self._cond:
                state[c] = _UNMAPPED
                self._cond.notify_all()
            raise
        with self._cond:
            state[c] = _MAPPED
            self._cond.notify_all()
        return True

    def _run(self) -> None:
        # Chunk k of every part, then chunk k + 1: the order the decoders reach them.
        k = 0
        try:
            while not self._stop.is_set():
                pending = False
                for part, state in enumerate(self._state):
                    if k < len(state):
                        pending = True
                        self._map(part, k)
                if not pending:
                    return
                k += 1
        except BaseException:
            return  # the decoders prefault the rest themselves (and raise what it raised)

    def wait(self, part: int, upto: int) -> None:
        """Return once samples ``edges[part]:upto`` are prefaulted (from the decoder of ``part``)."""
        state = self._state[part]
        last = min(len(state), -(-(upto - self._edges[part]) // self._chunk))
        for c in range(self._ready[part], last):
            while state[c] != _MAPPED:
                if not self._map(part, c):
                    with self._cond:
                        while state[c] == _MAPPING:
                            self._cond.wait()
        self._ready[part] = max(self._ready[part], last)


def decode_into(
    path: str | os.PathLike,
    out: np.ndarray,
    progress: Callable[[float], None] | None = None,
    check_finite: bool = True,
    on_range: Callable[[int, int, int], None] | None = None,
    prefault: Callable[[int, int], None] | None = None,
) -> AudioInfo:
    """Decode ``path`` into ``out`` (float32, at least ``frames`` long), mixing to mono.

    ``progress`` is called with the fraction decoded (0..1) after each chunk, ``on_range(part,
    start, stop)`` with the samples ``start:stop`` that decoder ``part`` has completed (each
    decoder's range only grows; calls come from the decoding threads). ``prefault(start,
    stop)``, if given, is called from one more thread with the chunks of ``out`` in the order the
    decoders write them, ahead of them, so that ``out``'s memory is allocated and mapped (a
    shared block's :meth:`~soma_shm.ipc.blocks.AudioBlock.prefault`) while they decode, not
    before they start; a decoder writes only what has been prefaulted, waiting if it catches up
    (and an error of ``prefault`` stops the decoding). Returns the file's :class:`AudioInfo`.

    An MP3's sample ``k`` is sample ``k`` of the recording it was encoded from, to a sample: the
    decoder's output before the recording starts (encoder and decoder delay) and after it ends
    (the last frame's padding) is skipped, as the file's Xing/Info header says, or for a file
    without one as measured for LAME (docs/design.md, "Numerical contract").

    Raises
    ------
    AudioFormatError
        Unreadable, truncated or corrupt file; NaN/Inf samples (with the first bad frame).
    """
    info, lead = _probe(path)
    if out.dtype != np.float32 or out.ndim != 1 or out.shape[0] < info.frames:
        raise _validate.ParameterError(
            f"decode buffer must be float32 with at least {info.frames} frames, got {out.dtype} {out.shape}"
        )
    # Integer PCM is read as integers and scaled here: libsndfile's own float conversion is
    # several times slower, and integers need no NaN/Inf check. Lossy and float formats are read
    # as float32 and checked.
    read_dtype, scale = _INTEGER_READS.get(info.subtype, ("float32", None))
    # Long files are decoded in ranges by a few threads, each seeking to its own start.
    parts = 1
    if info.frames >= PARALLEL_MIN_FRAMES:
        parts = max(1, DECODE_THREADS)
    edges = [info.frames * k // parts for k in range(parts + 1)]
    counts = [0] * parts
    lock = threading.Lock()

    def report(part: int, n: int) -> None:
        with lock:
            counts[part] = n
            total = sum(counts)
        if progress is not None:
            progress(total / info.frames)

    def progressed(part: int, start: int, done: int) -> None:
        report(part, done - start)
        if on_range is not None:
            on_range(part, start, done)

    # FLAC: libFLAC straight into ``out`` (soma_shm._flac says why), each range its own decoder.
    flac_direct = info.format == "FLAC" and out.flags.c_contiguous and out.flags.writeable and _flac.available()

    # The decoders write only chunks ``prefault`` has done (a shared block's pages are allocated
    # as they are prefaulted, soma_shm.ipc.blocks.AudioBlock.create).
    mapper = None if prefault is None else _AheadMapper(prefault, edges, CHUNK_FRAMES)

    def wait_mapped(part: int, upto: int) -> None:
        if mapper is not None:
            mapper.wait(part, upto)

    def decode_part(part: int) -> None:
        start, stop = edges[part], edges[part + 1]
        if flac_direct:
            # libFLAC writes whole frames (at most MAX_BLOCK samples) between two reports, which
            # come every CHUNK_FRAMES: what it may write before the next one is mapped first.
            ahead = CHUNK_FRAMES + _flac.MAX_BLOCK

            def reached(done: int) -> None:
                progressed(part, start, done)
                wait_mapped(part, done + ahead)

            wait_mapped(part, start + ahead)
            _flac.decode_range(path, out, start, stop, reached, CHUNK_FRAMES)
            return
        done = start
        with _open(path) as f:
            if start + lead:
                try:
                    f.seek(start + lead)
                except Exception:  # a part beyond the data actually present: truncated
                    return
            block = np.empty((min(CHUNK_FRAMES, stop - start), info.channels), dtype=read_dtype)
            mixing = read_dtype == "int16" and info.channels in (2, 4, 8)
            floats = np.empty(block.shape, dtype=np.float32) if mixing else None
            while done < stop:
                wait_mapped(part, done + min(len(block), stop - done))
                try:
                    n = len(f.read(min(len(block), stop - done), dtype=read_dtype, always_2d=True,
                                   out=block[: min(len(block), stop - done)]))
                except Exception as exc:  # libsndfile reports corrupt data while reading
                    raise AudioFormatError(f"{str(path)!r} is corrupt at frame {done}: {exc}") from None
                if n == 0:
                    break
                dest = out[done : done + n]
                if scale is not None and info.channels == 1:
                    np.multiply(block[:n, 0], scale, out=dest, casting="unsafe")
                elif mixing:
                    # A float32 sum of int16 samples is exact, and so is the power-of-two scale:
                    # the same samples as the int64 sum below, in a fraction of its time (the
                    # contiguous conversion first: half the time of adding strided int16 columns).
                    fl = floats[:n]
                    fl[:] = block[:n]
                    np.add(fl[:, 0], fl[:, 1], out=dest)
                    for c in range(2, info.channels):
                        np.add(dest, fl[:, c], out=dest)
                    dest *= np.float32(scale / info.channels)
                elif scale is not None:
                    src = block[:n].sum(axis=1, dtype=np.int64)
                    np.multiply(src, scale / info.channels, out=dest, casting="unsafe")
                else:
                    if info.channels == 1:
                        dest[:] = block[:n, 0]
                    else:
                        np.mean(block[:n], axis=1, out=dest)
                    # A float64 sum of float32 values cannot overflow: finite iff every sample is.
                    if check_finite and not np.isfinite(np.sum(dest, dtype=np.float64)):
                        bad = done + int(np.flatnonzero(~np.isfinite(dest))[0])
                        raise AudioFormatError(
                            f"{str(path)!r} holds NaN or Inf samples (first at frame {bad}); repair the file"
                        )
                done += n
                progressed(part, start, done)

    if mapper is not None:
        mapper.start()
    try:
        if parts == 1:
            decode_part(0)
        else:
            errors: list[BaseException] = []

            def run(part: int) -> None:
                try:
                    decode_part(part)
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(k,), name=f"soma-decode-{k}") for k in range(1, parts)]
            for t in threads:
                t.start()
            run(0)
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
    finally:
        if mapper is not None:
            mapper.close()  # before the caller may close the block it maps
    done = sum(counts)
    if done < info.frames:
        raise AudioFormatError(
            f"{str(path)!r} is truncated: its header promises {info.frames} frames but only {done} could be read"
        )
    return info


# Subtypes whose samples never leave [-1, 1) (integers of at most 16 bits) and lossy codecs
# (whose decoders may overshoot a little): the largest calibrated STFT magnitude their file can
# hold, so its pyramid can be built while it decodes (soma_shm.pyramid.ProgressiveBuild). Wider
# integers and float files keep their whole dynamic range: their pyramid is built afterwards.
_FULL_SCALE = {
    **{s: 2.0 for s in ("PCM_S8", "PCM_U8", "PCM_16", "ALAC_16", "DWVW_12", "DWVW_16")},
    **{s: 4.0 for s in ("VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III")},
}


def prepare_decoders() -> None:
    """Load the compiled FLAC callbacks (:mod:`soma_shm.kernels.flac`) now: about 0.25 s from the
    kernel cache, otherwise paid inside the first FLAC open of the process (the app does this at
    start, while nothing is open yet)."""
    if _flac.available():
        from .kernels import flac  # noqa: F401


def full_scale(info: AudioInfo) -> float | None:
    """The largest calibrated STFT magnitude a file of ``info``'s subtype can hold, or None when
    its samples are not bounded (float files) or finer than 16 bits."""
    return _FULL_SCALE.get(info.subtype)


def load_audio(path: str | os.PathLike, progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, float]:
    """Decode a file to a mono float32 array; returns ``(samples, sample_rate)``.

    Examples
    --------
    >>> import soma_shm
    >>> x, fs = soma_shm.load_audio("take1.flac")  # doctest: +SKIP
    """
    info = audio_info(path)
    out = np.empty(info.frames, dtype=np.float32)
    decode_into(path, out, progress)
    return out, info.sample_rate
