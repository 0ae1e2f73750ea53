"""FLAC decoding of a range of samples with the reference decoder, libFLAC, through ctypes.

Why not soundfile for FLAC: libsndfile decodes each frame with libFLAC, copies it into its own
buffer, interleaves and converts it, and soundfile then hands Python an interleaved integer
array to mix down: half as much CPU again as the decoding itself (an hour of 16-bit stereo,
into memory already mapped: 4.7 CPU s against 3.2 s here; tests/test_audio_flac.py checks the
samples are identical). Here
libFLAC calls a compiled callback (:mod:`soma_shm.kernels.flac`) that mixes each frame straight
into the destination, without the GIL, so parallel ranges run in parallel.

libFLAC ships with libsndfile on every Linux distribution (Debian: libflac12); where it cannot
be loaded, :func:`available` is False and FLAC files are read through soundfile as every other
format.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Callable

import numpy as np

from .errors import AudioFormatError

MAX_BLOCK = 65535  # the most samples a FLAC frame holds (per channel)

# FLAC__StreamDecoderState values the loop looks at.
_END_OF_STREAM = 4
_ERRORS = {0: "lost sync", 1: "bad frame header", 2: "frame CRC mismatch", 3: "unparseable stream",
           4: "bad metadata"}
_INIT_ERRORS = {1: "unsupported container", 2: "invalid callbacks", 3: "memory allocation error",
                4: "cannot open the file", 5: "decoder already initialised"}


@functools.lru_cache(maxsize=None)
def _library():
    names = [ctypes.util.find_library("FLAC"), "libFLAC.so.14", "libFLAC.so.12", "libFLAC.so.8", "libFLAC.dylib"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)  # a CDLL call releases the GIL while libFLAC runs
        except OSError:
            continue
        p, b, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64
        lib.FLAC__stream_decoder_new.restype = p
        lib.FLAC__stream_decoder_new.argtypes = []
        lib.FLAC__stream_decoder_init_file.restype = b
        lib.FLAC__stream_decoder_init_file.argtypes = [p, ctypes.c_char_p, p, p, p, p]
        for fn in ("process_single", "process_until_end_of_metadata", "finish", "get_state"):
            getattr(lib, f"FLAC__stream_decoder_{fn}").restype = b
            getattr(lib, f"FLAC__stream_decoder_{fn}").argtypes = [p]
        lib.FLAC__stream_decoder_seek_absolute.restype = b
        lib.FLAC__stream_decoder_seek_absolute.argtypes = [p, u64]
        lib.FLAC__stream_decoder_delete.restype = None
        lib.FLAC__stream_decoder_delete.argtypes = [p]
        return lib
    return None


def available() -> bool:
    """True when libFLAC can be loaded (FLAC files are then decoded by :func:`decode_range`)."""
    return _library() is not None


def decode_range(path: str | os.PathLike, out: np.ndarray, start: int, stop: int,
                 report: Callable[[int], None], every: int) -> int:
    """Decode samples ``start:stop`` of the FLAC file ``path``, mixed to mono, into
    ``out[start:stop]`` (float32, C-contiguous, indexed by the file's sample number).

    ``report(done)`` is called with the end of what is written each time at least ``every`` more
    samples are, and at the end. Returns that end: less than ``stop`` when the stream ends early
    (a truncated file; the caller says so).

    Raises
    ------
    AudioFormatError
        The file cannot be opened as FLAC, or a frame is corrupt (with the sample it stops at).
    """
    from .kernels import flac as k

    lib = _library()
    if lib is None:
        raise AudioFormatError(f"cannot read {str(path)!r} as FLAC here: libFLAC is not installed (Debian: libflac12)")
    if out.dtype != np.float32 or not out.flags.c_contiguous or not out.flags.writeable or out.shape[0] < stop:
        raise ValueError("out must be a writable C-contiguous float32 array covering the range")
    state = np.zeros(k.ST_SIZE, np.int64)
    state[[k.ST_OUT, k.ST_START, k.ST_STOP, k.ST_DONE]] = (out.ctypes.data, start, stop, start)
    address = state.ctypes.data
    decoder = lib.FLAC__stream_decoder_new()
    if not decoder:
        raise MemoryError("libFLAC could not allocate a decoder")
    try:
        status = lib.FLAC__stream_decoder_init_file(
            decoder, os.fsencode(path), k.write_frame.address, None, k.count_error.address, address)
        if status:
            raise AudioFormatError(f"cannot read {str(path)!r} as FLAC: {_INIT_ERRORS.get(status, status)}")
        if start:
            # The frame holding ``start`` is written from ``start`` on while seeking.
            lib.FLAC__stream_decoder_seek_absolute(decoder, start)
        # One call per frame (4096 samples, typically): the loop reads the state through a
        # memoryview (plain ints) and asks for the decoder's state only when a call wrote nothing.
        view = memoryview(state)
        process, get_state = lib.FLAC__stream_decoder_process_single, lib.FLAC__stream_decoder_get_state
        reported, done = start, view[k.ST_DONE]
        while done < stop and not view[k.ST_ERRORS]:
            if not process(decoder):
                break  # the range is complete (the callback stopped it), or a seek failed
            before, done = done, view[k.ST_DONE]
            if done == before and get_state(decoder) == _END_OF_STREAM:
                break
            if done - reported >= every:
                reported = done
                report(done)
        if state[k.ST_ERRORS]:
            raise AudioFormatError(
                f"{str(path)!r} is corrupt at frame {int(state[k.ST_DONE])} "
                f"({_ERRORS.get(int(state[k.ST_STATUS]), int(state[k.ST_STATUS]))}); repair or re-encode the file")
        done = int(state[k.ST_DONE])
        if done != reported:
            report(done)
        return done
    finally:
        lib.FLAC__stream_decoder_finish(decoder)
        lib.FLAC__stream_decoder_delete(decoder)
