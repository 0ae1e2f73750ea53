"""Viewport images and snapped strokes: the :class:`~soma_shm.app.backend.AppBackend` methods that
submit them to the engine and push their results, and the scheduler that decides when a newer
view cancels the computing one."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from ..errors import EngineClosed, ParameterError, RequestCancelled
from .events import error_payload


SUPERSEDE_COST_S = 0.12  # a viewport computation expected to end within this is not cancelled
COST_SAMPLES = 12  # recent results per method that predict how long a request takes


class ViewsMixin:
    """Viewport and snap requests of :class:`~soma_shm.app.backend.AppBackend`."""

    # ----------------------------------------------------------------------------- views
    def view(self, t0: float, t1: float, fmin: float, fmax: float, width: int, height: int) -> dict:
        """Request a viewport image; the result is pushed as a ``viewport`` event (latest wins).

        Returns ``{"request_id": id}``: the event of this request carries the same id, and ids
        increase with every call. A request does not always reach the engine at once: while the
        computing one is expected to finish within :data:`SUPERSEDE_COST_S`, the newest request
        waits for it (and older waiting ones are dropped) instead of cancelling it, which would
        cost a worker termination and respawn; it starts the moment that computation ends.
        """
        if self._file is None:
            raise EngineClosed("no file is open; open an audio file first")
        from .. import _validate

        info, opts = self.engine.info, self.engine.options
        geometry = _validate.view(t0, t1, fmin, fmax, width, height, info.sample_rate, info.duration,
                                  opts.max_width, opts.max_height)
        return {"request_id": self._views.request(geometry, self._file["generation"])}

    def _on_view(self, result: Any, generation: int, view_id: int, held_s: float = 0.0) -> None:
        # Runs on the engine's supervisor thread: copy the image out, give the slot back, push.
        if isinstance(result, BaseException):
            if isinstance(result, RequestCancelled):
                return
            self.events.publish({"type": "error", "op": "view", "request_id": view_id, "error": self.describe_error(result)})
            self._publish_status()
            return
        try:
            if self._file is None or self._file["generation"] != generation:
                return
            bid = self.blobs.put(result.image)
            h, w = result.image.shape
            timings = {k: float(v) for k, v in result.timings.items() if isinstance(v, (int, float))}
            timings["held_s"] = held_s  # from the page's call to the engine (waiting for a computation to end)
            event = {"type": "viewport", "blob": bid, "request_id": view_id, "t0": result.t0,
                     "t1": result.t1, "fmin": result.fmin, "fmax": result.fmax, "width": w, "height": h,
                     "method": result.method, "timings": timings}
        finally:
            result.release()
        self._last["viewport"] = {"method": result.method, "request_id": view_id,
                                  "window_s": result.t1 - result.t0, **timings}
        self.events.publish(event)
        self._publish_status()

    # ------------------------------------------------------------------------------ snap
    def snap(self, trace: list, _extend: str | None = None) -> dict:
        """Snap a drawn stroke ``[[t, f], ...]``; the partial is added when the result arrives."""
        if self._file is None:
            raise EngineClosed("no file is open; open an audio file before drawing")
        generation = self._file["generation"]
        ids: dict[str, int] = {}

        def done(result: Any) -> None:
            self._on_snap(result, generation, ids.get("id"), _extend)

        # The stroke is of the file the page shows: if the engine is on another one (a file is
        # being opened), it is refused, so a snap of one file never lands in another's document.
        before = self.engine.info.generation if self.engine.info is not None else None
        if before != generation:
            raise EngineClosed("a file is being opened; draw again once it is shown")
        handle = self.engine.submit_snap(trace, on_result=done)
        if self.engine.info is None or self.engine.info.generation != generation:
            handle.cancel()
            raise EngineClosed("a file is being opened; draw again once it is shown")
        ids["id"] = handle.request_id
        self._pending_snaps.add(handle.request_id)
        self._publish_status()
        return {"request_id": handle.request_id}

    def _showing(self, generation: int) -> bool:
        """Whether the app and the engine are both still on file ``generation``. While another
        file opens, the engine switches (and cancels the old file's requests) before the app
        announces the new file."""
        info = self.engine.info
        return (self._file is not None and self._file["generation"] == generation
                and info is not None and info.generation == generation)

    def _on_snap(self, result: Any, generation: int, rid: int | None, extend: str | None = None) -> None:
        if isinstance(result, BaseException):
            self._pending_snaps.discard(rid)
            if isinstance(result, RequestCancelled) and not self._showing(generation):
                return  # the file changed: the stroke belonged to the old file
            self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": self.describe_error(result)})
            self._publish_status()
            return
        rid = result.request_id
        self._pending_snaps.discard(rid)
        points = result.points
        timings = {k: float(v) for k, v in result.timings.items() if isinstance(v, (int, float))}
        if self._file is None or self._file["generation"] != generation:
            return
        with self._lock:
            if points.shape[0] < 1:
                self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": {
                    "type": "ParameterError", "message": "the stroke found no ridge to snap to; draw over a visible partial"}})
                return
            try:
                if extend is None:
                    partial = self.document.add_partial(points)
                else:
                    partial = self.document.extend_partial(extend, points)
            except ParameterError as exc:  # the partial went meanwhile, or nothing lies beyond its end
                self.events.publish({"type": "error", "op": "snap", "request_id": rid, "error": error_payload(exc)})
                return
            self._last["snap"] = {"request_id": rid, "points": int(points.shape[0]), **timings}
            event = self._edit_event(self._last_edit())
        # The partial first, then the answer to the stroke: the page drops the stroke's dashed line
        # only once the partial is there.
        self.events.publish(event)
        self.events.publish({"type": "snapped", "request_id": rid, "partial_id": partial.id, "timings": timings})
        self._publish_status()


class _ViewScheduler:
    """Viewport requests between the page and the engine: latest wins, but a computation that is
    about to finish is not cancelled.

    Cancelling costs the engine a worker termination, a respawn and a cold worker (tens of
    milliseconds, more on a loaded machine; see ``perf/bench_ui.py``). So the newest request
    supersedes the computing one only when that one is expected to need more than
    :data:`SUPERSEDE_COST_S` still; otherwise it waits (replacing any waiting one) and starts the
    moment the computing one ends, or once that one overruns its expected time by
    ``SUPERSEDE_COST_S``. Expected durations come from the last results of the same method (time
    per pixel, linear in the window length); a window longer than any seen is never waited for.

    A request that need not wait is submitted by the caller's thread at once; a waiting one by
    the ``soma-app-views`` thread. Submissions are serialised (``_submit_lock``) so requests reach
    the engine in order. The engine reports results holding no lock of its own (docs/design.md,
    "Supervisor and lock order"), and its thread only ever takes ``_cond`` here.
    """

    def __init__(self, backend: "AppBackend") -> None:
        self._backend = backend
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._running: dict | None = None  # {id, generation, submitted, held_s, expected, span, pixels}
        self._wanted: tuple | None = None  # (id, geometry, generation, asked) not yet submitted
        self._costs: dict[str, deque] = {"cwt": deque(maxlen=COST_SAMPLES), "stft": deque(maxlen=COST_SAMPLES)}
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="soma-app-views", daemon=True)
        self._thread.start()

    def request(self, geometry: tuple, generation: int) -> int:
        """The newest view (an older one not yet submitted is dropped); returns its id."""
        with self._cond:
            vid = next(self._ids)
            self._wanted = (vid, geometry, generation, time.perf_counter())
            self._cond.notify()
        self._pump()
        return vid

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def expected(self, method: str, span: float, pixels: int) -> float:
        """Expected seconds from submit to result of a request (inf when unknown)."""
        samples = self._costs[method]
        if not samples:
            return math.inf
        xs = np.array([c[0] for c in samples])
        ys = np.array([c[1] / c[2] for c in samples])  # seconds per pixel
        if span > 1.25 * xs.max():
            return math.inf  # longer than any seen: assume long
        if len(samples) >= 3 and np.ptp(xs) > 0:
            slope, icpt = np.polyfit(xs, ys, 1)
            per_pixel = float(np.clip(icpt + slope * span, ys.min(), ys.max()))
        else:
            per_pixel = float(ys.max())
        return per_pixel * pixels

    def _wait(self) -> float | None:
        """With ``_cond``: 0.0 to submit the wanted view now, else seconds to wait (None: until told)."""
        if self._wanted is None or self._stopped:
            return None
        run = self._running
        if run is None or run["generation"] != self._wanted[2]:
            return 0.0
        # Superseding costs about SUPERSEDE_COST_S: worth it only if the computing one needs longer.
        left = run["expected"] - (time.perf_counter() - run["submitted"])
        if left > SUPERSEDE_COST_S or left < -SUPERSEDE_COST_S:
            return 0.0
        return left + SUPERSEDE_COST_S + 1e-3

    def _pump(self) -> None:
        """Submit the wanted view if it should start now."""
        with self._submit_lock:
            with self._cond:
                if self._wait() != 0.0:
                    return
                vid, geometry, generation, asked = self._wanted
                self._wanted = None
                t0, t1, _, _, width, height = geometry
                span, now = t1 - t0, time.perf_counter()
                method = "stft" if span > self._backend.engine.options.stft_above_seconds else "cwt"
                run = {"id": vid, "generation": generation, "submitted": now, "held_s": now - asked,
                       "expected": self.expected(method, span, width * height), "span": span,
                       "pixels": width * height}
                self._running = run
            self._submit(run, geometry)

    def _loop(self) -> None:
        # Starts the views that waited for a computation to end.
        while True:
            with self._cond:
                while not self._stopped and (wait := self._wait()) != 0.0:
                    self._cond.wait(wait)
                if self._stopped:
                    return
            self._pump()

    def _submit(self, run: dict, geometry: tuple) -> None:
        backend, vid, generation = self._backend, run["id"], run["generation"]

        def done(result: Any) -> None:
            self._finished(run, result)
            backend._on_view(result, generation, vid, run["held_s"])

        try:
            backend.engine.submit_viewport(*geometry, on_result=done)
        except Exception as exc:  # the file changed or the engine closed meanwhile: the page is told
            with self._cond:
                if self._running is run:
                    self._running = None
            if not self._stopped:
                backend.events.publish({"type": "error", "op": "view", "request_id": vid, "error": backend.describe_error(exc, "view")})

    def _finished(self, run: dict, result: Any) -> None:
        # On the engine's supervisor thread: learn the cost; a waiting view may start now.
        with self._cond:
            if not isinstance(result, BaseException) and result.timings.get("total_s"):
                self._costs[result.method].append((run["span"], float(result.timings["total_s"]), run["pixels"]))
            if self._running is run:
                self._running = None
                self._cond.notify()
