"""Opening a file (or an array) into shared blocks: decode, 0 dB level, pyramid.

Used by :meth:`soma_shm.Engine.open`. Everything is made before the engine swaps files, and
everything made is closed and unlinked if any step fails, so the open file stays intact.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import _validate
from .errors import ParameterError

log = logging.getLogger("soma_shm.engine")


@dataclass
class Opened:
    """A file in shared memory, ready to replace the open one."""

    path: str | None
    frames: int
    sample_rate: float
    channels: int
    audio_block: Any
    samples: np.ndarray
    reference: float
    pyramid_block: Any = None
    pyramid: Any = None
    pyramid_build_s: float = 0.0
    mix_block: Any = None  # the resynthesis mix (soma_shm.ipc.mix), made on first use
    stages: dict | None = None  # seconds per stage of the open (see load)

    def pyramid_stats(self) -> dict | None:
        pyr = self.pyramid
        return None if pyr is None else {
            "bytes": pyr.nbytes, "levels": len(pyr.layout.blocks), "build_s": self.pyramid_build_s,
            "frames_per_block": pyr.layout.frames_per_block,
        }

    def overview(self, width: int, height: int, fmin: float, fmax: float | None, settings, pyramid):
        """The whole file as a pooled STFT image (see :meth:`soma_shm.Engine.overview`)."""
        from . import render
        from .results import ImageResult

        duration = self.frames / self.sample_rate
        fmax = min(0.5 * self.sample_rate, 20_000.0) if fmax is None else fmax
        t = time.perf_counter()
        if pyramid is not None:
            mag = pyramid.image(0.0, duration, fmin, fmax, width, height, settings)
        else:
            mag = render.stft_image(self.samples, self.sample_rate, 0.0, duration, fmin, fmax, width, height,
                                    settings, check_finite=False)
        t_k = time.perf_counter() - t
        image = render.tone_map(mag, self.reference, settings)
        return ImageResult(image, mag, 0.0, duration, fmin, fmax, "stft", self.reference,
                           {"kernel_s": t_k, "total_s": time.perf_counter() - t, "pyramid": pyramid is not None})

    def mix(self, generation: int):
        """The resynthesis mix block of this file, made on first use."""
        if self.mix_block is None:
            from .ipc.mix import MixBlock

            self.mix_block = MixBlock.create(self.frames, self.sample_rate, generation)
        return self.mix_block

    def discard(self, background: bool = False) -> None:
        """Unlink and close the blocks (the views first).

        The names go at once; unmapping, which frees the memory (half a second for an hour of
        audio), is left to a thread when ``background`` (a file replaced by the next one:
        :func:`wait_released` waits for it).
        """
        self.samples = self.pyramid = None
        blocks = [b for b in (self.pyramid_block, self.audio_block, self.mix_block) if b is not None]
        self.audio_block = self.pyramid_block = self.mix_block = None
        for block in blocks:
            block.unlink()
        if not background:
            for block in blocks:
                block.close()
            return
        with _releasing_lock:
            _releasing[:] = [t for t in _releasing if t.is_alive()]
            thread = threading.Thread(target=lambda: [b.close() for b in blocks], name="soma-release", daemon=True)
            _releasing.append(thread)
            thread.start()


_releasing: list[threading.Thread] = []
_releasing_lock = threading.Lock()


def wait_released(timeout: float = 30.0) -> None:
    """Wait until the blocks of replaced files are unmapped (:meth:`Opened.discard`)."""
    with _releasing_lock:
        threads = list(_releasing)
    for t in threads:
        t.join(timeout)


def shutdown(supervisor, files: dict) -> None:
    """Stop the workers, then unlink every block of ``files`` and wait until they are unmapped
    (an Engine's close(), its garbage collection, or interpreter exit)."""
    supervisor.close()
    for opened in files.values():
        opened.discard()
    files.clear()
    wait_released()
    log.info("engine closed pid=%d", os.getpid())


def load(source: Any, sample_rate: float | None, settings, with_pyramid: bool, generation: int,
         progress: Callable[[str, float], None] | None,
         building: Callable[[Any], None] | None = None) -> Opened:
    """Open ``source`` into new shared blocks (:func:`_load`); whether it succeeds or fails, the
    C heap's free memory is then given back to the system (:func:`_trim_heap`)."""
    try:
        return _load(source, sample_rate, settings, with_pyramid, generation, progress, building)
    finally:
        _trim_heap()


def _load(source: Any, sample_rate: float | None, settings, with_pyramid: bool, generation: int,
          progress: Callable[[str, float], None] | None,
          building: Callable[[Any], None] | None = None) -> Opened:
    """``building(build)`` is told the :class:`soma_shm.pyramid.ProgressiveBuild` of a long
    16-bit or lossy file while it decodes (see :func:`_build_while_decoding`).

    The file's ``stages`` say where the time went, in seconds: ``blocks`` (shared blocks made,
    after the file replaced just before is unmapped; a file's audio block is mapped while it
    decodes), ``decode`` (decoding, and for a long 16-bit or lossy file the pyramid built alongside),
    ``after_decode`` (what waits for the last sample: the pyramid's last blocks, the 0 dB
    level, or the whole pyramid when it is built after decoding), ``total`` and ``cpu`` (this
    process's CPU seconds over the open, every thread).
    """
    from .ipc.blocks import AudioBlock

    stamps = {"start": time.perf_counter(), "cpu": _cpu_s()}
    # A file replaced just before is still being unmapped: done first, so that no more than two
    # files (the open one and this one) are ever in memory.
    wait_released()

    if isinstance(source, (str, os.PathLike)):
        from .audio import audio_info, decode_into

        finfo = audio_info(source)
        path, frames, fs, channels = str(source), finfo.frames, finfo.sample_rate, finfo.channels
        if sample_rate is not None and float(sample_rate) != fs:
            raise ParameterError(
                f"sample_rate={sample_rate!r} contradicts the file's own rate ({fs:g} Hz); omit it for files"
            )
        # Its pages are mapped while the file decodes, just ahead of the decoders (decode_into's
        # prefault), rather than all before the first sample is decoded.
        block = AudioBlock.create(frames, fs, generation, populate=False)
        try:
            samples = block.samples()
            on_decode = None if progress is None else (lambda f: progress("decode", f))
            if with_pyramid:
                built = _build_while_decoding(source, finfo, samples, block.prefault, settings, generation, on_decode,
                                              progress, building, stamps)
                if built is not None:
                    built.audio_block, built.path, built.channels = block, path, channels
                    built.stages = _stages(stamps)
                    return built
            stamps["blocks"] = time.perf_counter()
            decode_into(source, samples, on_decode, prefault=block.prefault)
        except BaseException:
            samples = None
            block.unlink()
            block.close()
            raise
    else:
        if sample_rate is None:
            raise ParameterError("sample_rate is required when opening an array (e.g. sample_rate=48000)")
        fs = _validate.sample_rate(sample_rate)
        arr = np.asarray(source)
        channels = arr.shape[1] if arr.ndim == 2 else 1
        data = _validate.audio_array(arr)
        path, frames = None, int(data.shape[0])
        block = AudioBlock.create(frames, fs, generation)
        samples = block.samples()
        stamps["blocks"] = time.perf_counter()
        samples[:] = data
        if progress is not None:
            progress("decode", 1.0)
    stamps["decoded"] = time.perf_counter()
    opened = Opened(path, frames, fs, channels, block, samples, 1.0)
    try:
        from . import render

        # The new file's 0 dB level is known before it replaces the old one, so no request ever
        # sees a file without it.
        opened.reference = render.reference_level(samples, fs, settings)
        if with_pyramid:
            _build_pyramid(opened, settings, generation, progress)
    except BaseException:
        opened.discard()
        raise
    opened.stages = _stages(stamps)
    return opened


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim``; 1-8 ms).

    An open's temporaries (decoder state, the reference level's pooled columns: tens of MB for
    an hour) are freed in threads whose malloc arenas keep them, and the allocator's raised
    mmap threshold keeps later ones of that size in the heap too: without this the caller's
    memory grew by 15-20 MB over a few opens of an hour-long file (perf/bench_long.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=None)
def _malloc_trim():
    import ctypes

    try:
        fn = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
    return fn


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stages(stamps: dict) -> dict:
    end = time.perf_counter()
    blocks, decoded = stamps.get("blocks", stamps["start"]), stamps.get("decoded", end)
    return {"blocks": blocks - stamps["start"], "decode": decoded - blocks, "after_decode": end - decoded,
            "total": end - stamps["start"], "cpu": _cpu_s() - stamps["cpu"]}


def _build_pyramid(opened: Opened, settings, generation: int, progress) -> None:
    """Build the file's pyramid into a new shared block (this process, all threads)."""
    from .ipc.blocks import PyramidBlock
    from .pyramid import PyramidLayout, build_pyramid

    fs, samples = opened.sample_rate, opened.samples
    layout = PyramidLayout.for_recording(samples.shape[0], fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    opened.pyramid_block = PyramidBlock.create(layout, generation)
    t = time.perf_counter()
    opened.pyramid = build_pyramid(samples, fs, settings, opened.reference, out=opened.pyramid_block.levels_buffer(),
                                   progress=None if progress is None else (lambda f: progress("pyramid", f)))
    opened.pyramid_block.mark_complete(opened.pyramid.top, opened.pyramid.scale)
    opened.pyramid_build_s = time.perf_counter() - t
    log.info("pyramid built bytes=%d levels=%d in %.3f s", layout.nbytes, len(layout.blocks), opened.pyramid_build_s)


def _build_while_decoding(source, finfo, samples, prefault, settings, generation: int, on_decode, progress,
                          building, stamps: dict) -> Opened | None:
    """Long 16-bit or lossy files: decode and build the pyramid at once, so that a partial
    overview exists while the rest decodes. Returns the file (its audio block still to be set by
    the caller), or None for files decoded first and built after."""
    from . import audio, render
    from . import pyramid as pm
    from .ipc.blocks import PyramidBlock

    full_scale = audio.full_scale(finfo)
    if full_scale is None or finfo.frames < pm.PROGRESSIVE_MIN_SAMPLES:
        return None
    fs = finfo.sample_rate
    layout = pm.PyramidLayout.for_recording(finfo.frames, fs, settings.stft_nfft(fs), settings.stft_hop(fs))
    pyramid_block = PyramidBlock.create(layout, generation)
    t = stamps["blocks"] = time.perf_counter()

    def decode(on_range):
        audio.decode_into(source, samples, on_decode, on_range=on_range, prefault=prefault)
        stamps["decoded"] = time.perf_counter()

    try:
        pyramid, reference = pm.build_while_decoding(
            decode,
            samples, fs, settings, pyramid_block.levels_buffer(), full_scale,
            lambda a: render.reference_level(a, fs, settings),
            # The pyramid's own progress runs alongside the decode's: reported once, at its end.
            None if progress is None else (lambda f: progress("pyramid", f) if f >= 1.0 else None),
            building,
        )
        pyramid_block.mark_complete(pyramid.top, pyramid.scale)
    except BaseException:
        pyramid_block.close()
        pyramid_block.unlink()
        raise
    finally:
        if building is not None:
            building(None)
    opened = Opened(None, finfo.frames, fs, finfo.channels, None, samples, reference, pyramid_block, pyramid,
                    time.perf_counter() - t)
    log.info("pyramid built while decoding bytes=%d levels=%d in %.3f s", layout.nbytes, len(layout.blocks),
             opened.pyramid_build_s)
    return opened


def partial_overview(build, width: int, height: int, fmin: float = 20.0, fmax: float | None = None):
    """The overview of what a :class:`soma_shm.pyramid.ProgressiveBuild` holds so far (blocks not
    built yet read as silence), tone-mapped against its own loudest value (the file's 0 dB level
    is not known yet; the final overview uses it): an :class:`soma_shm.results.ImageResult`, or
    None when ``build`` is None."""
    if build is None:
        return None
    from . import render
    from .results import ImageResult

    lay = build.layout
    duration = lay.samples / lay.sample_rate
    fmax = min(0.5 * lay.sample_rate, 20_000.0) if fmax is None else fmax
    t = time.perf_counter()
    mag = build.pyramid.image(0.0, duration, fmin, fmax, width, height, build.settings)
    peak = float(mag.max())
    reference = peak if peak > 0 else 1.0
    image = render.tone_map(mag, reference, build.settings)
    return ImageResult(image, mag, 0.0, duration, fmin, fmax, "stft", reference,
                       {"kernel_s": time.perf_counter() - t, "pyramid": True, "fraction": build.fraction})
