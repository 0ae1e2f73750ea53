"""Audio for the page: the original recording and the document's resynthesis, at any speed.

The page plays through Web Audio (the browser and the pywebview window alike, no native audio
here). It fetches *chunks* — ``GET /audio?start=N&frames=M&speed=S`` — each holding ``M`` output
frames from output frame ``N`` at speed ``S``: the original, then the resynthesis, as planar
float32 (``2 x M`` values). Output frame ``n`` is at source time ``n * S / fs``; a few seconds are
fetched ahead of the playhead, so an hours-long file is never sent whole.

- The original at speed 1 is a slice of the file's shared audio block; at another speed it is
  time-stretched with pitch kept (Rubber Band, via pedalboard) in blocks laid out from where
  playback started (``origin``): 0.25 s of output first, then doubling to 4 s, so sound starts
  quickly and block joins become rare; each block is stretched from its source range plus
  :data:`STRETCH_MARGIN_S` of context on each side and crossfaded into the next (a phase vocoder
  started twice does not continue its own phase), so chunks cut one continuous signal.
- The resynthesis at speed 1 is a slice of the open file's mix block, which the engine's synth
  worker writes (:class:`soma_shm.synth.EngineResynthesis`); a background thread here keeps it
  up to date: every ``edit``/``document``/``opened`` event marks it stale and the thread sends
  the difference between what the mix holds and the document as it is when it runs (latest
  edit wins; an edit re-renders only the partials it touched; a failed request makes the next
  one rebuild the mix). At another speed the resynthesis is rendered here, at the stretched time
  directly (exact pitch, no stretching artefacts), from the partials the mix holds.
- After the mix changed, a ``synth`` event ``{generation, timings}`` tells the page, which
  re-fetches what it scheduled ahead so the edit is heard at once.

Stretched renders and time-stretching run in the server's threads (numba kernels and Rubber Band
release the GIL).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import EngineClosed, ParameterError, RequestCancelled
from .events import error_payload

__all__ = ["Playback", "MAX_CHUNK_FRAMES", "SPEEDS"]

log = logging.getLogger("soma_shm.app")

MAX_CHUNK_FRAMES = 1 << 21  # ~44 s at 48 kHz per request
STRETCH_MARGIN_S = 0.2  # source context on each side of a stretched block
STRETCH_FIRST_S = 0.25  # output seconds of the first stretched block after a start
STRETCH_DOUBLINGS = 4  # blocks double this many times (0.25 s .. 4 s)
STRETCH_OVERLAP = 1024  # output frames of crossfade between stretched blocks
STRETCH_CACHE = 24  # stretched blocks kept
MIN_SPEED, MAX_SPEED = 0.125, 8.0
SPEEDS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
RETRY_S = 1.0  # after a failed mix update, wait this long before rebuilding


def _stretch(x: np.ndarray, fs: float, speed: float) -> np.ndarray:
    import pedalboard

    y = pedalboard.time_stretch(np.ascontiguousarray(x, dtype=np.float32), float(fs), stretch_factor=float(speed))
    return np.asarray(y, dtype=np.float32).reshape(-1)


class Playback:
    """Chunks of original and resynthesised audio for the page; the resynthesis kept current.

    Parameters
    ----------
    backend : AppBackend
        Gives the engine (the open file's audio) and the document (partials).
    """

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._cond = threading.Condition()
        self._stale = False
        self._busy = False
        self._stopped = False
        self._synth = None  # Resynthesis of the open file (created on the first partial)
        self._file_key: tuple | None = None
        self._last: dict[str, Any] = {}
        self._blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._thread = threading.Thread(target=self._loop, name="soma-app-synth", daemon=True)
        self._thread.start()
        backend.events.listen(self._on_event)

    # ----------------------------------------------------------------------------- life
    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    def _on_event(self, event: dict | None) -> None:
        # On whatever thread published: only mark the mix stale.
        if event and event.get("type") in ("edit", "document", "opened"):
            with self._cond:
                self._stale = True
                self._cond.notify_all()

    def wait_current(self, timeout: float = 30.0) -> bool:
        """Block until the mix reflects the document (True), or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._stale or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


    # ------------------------------------------------------------------------ synthesis
    def _snapshot(self) -> tuple[tuple | None, dict]:
        b = self._backend
        with b._lock:
            f = b._file
            key = (f["generation"], f["sample_rate"], f["frames"]) if f else None
            parts = {p.id: (p.points, bool(p.is_muted)) for p in b.document.partials}
        return key, parts

    def _loop(self) -> None:
        from ..errors import SomaError
        from ..synth import EngineResynthesis

        while True:
            with self._cond:
                while not self._stale and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                self._stale = False
                self._busy = True
            retry = False
            try:
                key, parts = self._snapshot()
                t0 = time.perf_counter()
                changed = None
                if key != self._file_key:
                    self._synth, self._file_key = None, key
                if key is not None:
                    if self._synth is None and parts:
                        self._synth = EngineResynthesis(self._backend.engine)
                        changed = self._synth.rebuild(parts)
                    elif self._synth is not None:
                        changed = self._synth.update(parts)
                if changed is not None:
                    timings = {"synth_s": time.perf_counter() - t0, **self._synth.last_timings}
                    self._last = {**changed, **timings}
                    self._backend.events.publish({"type": "synth", "generation": changed["generation"],
                                                  "added": changed["added"], "removed": changed["removed"],
                                                  "rebuilt": changed["rebuilt"], "timings": timings})
            except ParameterError as exc:  # a malformed partial: the mix stays as it was
                self._backend.events.publish({"type": "error", "op": "synth", "error": error_payload(exc)})
            except (RequestCancelled, EngineClosed):  # the file changed or the app closes: nothing to say
                retry = not self._stopped
            except SomaError as exc:  # the worker died or timed out: say so, then rebuild the mix
                self._backend.events.publish({"type": "error", "op": "synth", "error": error_payload(exc)})
                retry = True
            except Exception:  # pragma: no cover - a bug must not stop the service
                log.exception("resynthesis update failed")
            finally:
                with self._cond:
                    self._busy = False
                    if retry and not self._stopped:
                        self._cond.wait(RETRY_S)
                        self._stale = True
                    self._cond.notify_all()

    @staticmethod
    def _grid(fs: float, origin: int) -> tuple[int, int]:
        """(first block, longest block) in output frames: blocks start at ``origin`` (where the
        page started playing) and double from the first to the longest, so sound starts after a
        short stretch and crossfades become rare."""
        return int(STRETCH_FIRST_S * fs), int(STRETCH_FIRST_S * fs) << STRETCH_DOUBLINGS

    def _bounds(self, fs: float, origin: int, k: int) -> tuple[int, int]:
        """Output frames ``[lo, hi)`` of block ``k`` from ``origin``."""
        b0, bmax = self._grid(fs, origin)
        if k <= STRETCH_DOUBLINGS:
            return origin + b0 * ((1 << k) - 1), origin + b0 * ((1 << (k + 1)) - 1) if k < STRETCH_DOUBLINGS \
                else origin + b0 * ((1 << k) - 1) + bmax
        lo = origin + b0 * ((1 << STRETCH_DOUBLINGS) - 1) + (k - STRETCH_DOUBLINGS) * bmax
        return lo, lo + bmax

    def _block_of(self, fs: float, origin: int, m: int) -> int:
        b0, bmax = self._grid(fs, origin)
        d = m - origin
        ramp = b0 * ((1 << STRETCH_DOUBLINGS) - 1)
        if d >= ramp:
            return STRETCH_DOUBLINGS + (d - ramp) // bmax
        k = 0
        while origin + b0 * ((1 << (k + 1)) - 1) <= m:
            k += 1
        return k

    def _block(self, audio: np.ndarray, fs: float, speed: float, origin: int, k: int, gen: int) -> tuple[np.ndarray, int]:
        """Stretched block ``k`` from ``origin`` and its first output frame: output frames
        ``[lo, hi + X)`` (X = overlap into the next block), from the source range with
        :data:`STRETCH_MARGIN_S` of context each side; cached."""
        key = (gen, speed, origin, k)
        lo, hi = self._bounds(fs, origin, k)
        with self._cond:
            hit = self._blocks.get(key)
            if hit is not None:
                self._blocks.move_to_end(key)
                return hit, lo
        X, total = STRETCH_OVERLAP, audio.shape[0]
        margin = int(STRETCH_MARGIN_S * fs)
        s_lo = max(0, int(math.floor(lo * speed)) - margin)
        s_hi = min(total, int(math.ceil((hi + X) * speed)) + margin)
        y = _stretch(audio[s_lo:s_hi], fs, speed) if s_hi > s_lo else np.zeros(0, np.float32)
        off = int(round(lo - s_lo / speed))
        block = np.zeros(hi - lo + X, np.float32)
        piece = y[max(0, off):off + hi - lo + X]
        block[:piece.shape[0]] = piece
        with self._cond:
            self._blocks[key] = block
            while len(self._blocks) > STRETCH_CACHE:
                self._blocks.popitem(last=False)
        return block, lo

    def _stretched(self, audio: np.ndarray, fs: float, speed: float, start: int, out: np.ndarray, gen: int,
                   origin: int) -> None:
        """The original at ``speed`` from output frame ``start`` into ``out``: blocks (from
        ``origin``) stretched independently, each crossfaded (equal power,
        :data:`STRETCH_OVERLAP` frames) into the next, so any request boundary cuts the same
        continuous signal."""
        X = STRETCH_OVERLAP
        ramp = np.sin(0.5 * np.pi * (np.arange(X) + 0.5) / X).astype(np.float32)
        origin = min(origin, start)
        n, pos = out.shape[0], 0
        while pos < n:
            m = start + pos
            k = self._block_of(fs, origin, m)
            cur, lo = self._block(audio, fs, speed, origin, k, gen)
            size = cur.shape[0] - X
            j = m - lo
            take = min(n - pos, size - j)
            out[pos:pos + take] = cur[j:j + take]
            if k > 0 and j < X:  # inside the crossfade from block k - 1
                e = min(X, j + take)
                prev, plo = self._block(audio, fs, speed, origin, k - 1, gen)
                psize = prev.shape[0] - X
                w_in, w_out = ramp[j:e], ramp[::-1][j:e]
                out[pos:pos + e - j] = cur[j:e] * w_in + prev[psize + j:psize + e] * w_out
            pos += take

    @property
    def status(self) -> dict:
        return dict(self._last)

    # ---------------------------------------------------------------------------- chunks
    def chunk(self, start: Any, frames: Any, speed: Any = 1.0, origin: Any = None) -> tuple[bytes, dict[str, str]]:
        """``frames`` output frames from output frame ``start`` at ``speed``: original then
        resynthesis, planar float32 bytes, and headers describing them. ``origin``: the output
        frame where this playback started (the time-stretch blocks are laid out from it;
        default ``start``)."""
        b = self._backend
        info = b.engine.info if b._file is not None else None
        if info is None:
            raise EngineClosed("no file is open; open an audio file before playing")
        for name, v in (("start", start), ("frames", frames)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ParameterError(f"{name}={v!r} must be an integer >= 0")
        if not 1 <= frames <= MAX_CHUNK_FRAMES:
            raise ParameterError(f"frames={frames} must be from 1 to {MAX_CHUNK_FRAMES}; ask for shorter chunks")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= speed <= MAX_SPEED:
            raise ParameterError(f"speed={speed!r} must be from 1/8 to 8")
        origin = start if origin is None else origin
        if isinstance(origin, bool) or not isinstance(origin, (int, np.integer)) or origin < 0:
            raise ParameterError(f"origin={origin!r} must be an integer >= 0")
        fs, total = float(info.sample_rate), int(info.frames)
        speed = float(speed)
        out_total = int(math.floor(total / speed))
        out = np.zeros((2, frames), dtype=np.float32)
        hi = min(start + frames, out_total)
        n = max(0, hi - start)
        if n:
            audio = b.engine.audio
            if speed == 1.0:
                out[0, :n] = audio[start:start + n]
            else:
                self._stretched(audio, fs, speed, int(start), out[0, :n], b._file["generation"], int(origin))
            synth = self._synth
            if synth is not None and self._file_key is not None and self._file_key[0] == b._file["generation"]:
                out[1, :n] = synth.window(int(start), n, 1.0 / speed)
        headers = {"X-Sample-Rate": str(int(fs)), "X-Frames": str(frames), "X-Start": str(start),
                   "X-Speed": repr(speed), "X-Total-Frames": str(out_total), "X-Channels": "original,resynthesis",
                   "X-Synth-Generation": str(self._synth.generation if self._synth is not None else 0)}
        return out.tobytes(), headers
