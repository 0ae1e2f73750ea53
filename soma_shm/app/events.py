"""What the backend tells the page: events fanned out to subscribers, image and points blobs kept
by id for the page to fetch, errors phrased for a person, and the JSON text of events and replies."""

from __future__ import annotations

import itertools
import json
import logging
import queue
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SomaError

try:  # optional: a much faster encoder (the standard one is the fallback)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the installation
    _orjson = None

log = logging.getLogger("soma_shm.app")

BLOBS_KEPT = 6


def error_payload(exc: BaseException, hide: str | None = None) -> dict[str, str]:
    """``{type, message}`` of an error, phrased for a person: the family's own errors keep their
    type and message; anything else becomes ``InternalError`` with a message that names no
    exception class. Paths inside ``hide`` (the app's temporary folder) show only their name."""
    if isinstance(exc, SomaError):
        kind, message = type(exc).__name__, str(exc)
    elif isinstance(exc, MemoryError):
        kind, message = "InternalError", "not enough memory for this; close other programs or use a shorter window"
    elif isinstance(exc, OSError) and exc.strerror:
        where = f" ({Path(exc.filename).name})" if isinstance(exc.filename, str) else ""
        kind, message = "InternalError", f"the system refused: {exc.strerror.lower()}{where}"
    else:
        kind, message = "InternalError", "something went wrong inside the app; the details are in its log"
    if hide:
        message = re.sub(re.escape(hide.rstrip("/")) + r"/(?:[^/'\"]+/)*", "", message)
    return {"type": kind, "message": message}


def to_json(obj: object) -> bytes:
    """UTF-8 JSON of an event or an API reply: orjson where installed (a 10,000-partial document
    is ten thousand objects; the standard encoder takes tens of milliseconds over it, holding the
    interpreter lock the other threads need), else, or for what orjson refuses (integers beyond
    64 bits), the standard encoder. Non-finite floats, which JSON cannot hold, become null with
    orjson."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj, option=_orjson.OPT_NON_STR_KEYS | _orjson.OPT_SERIALIZE_NUMPY)
        except TypeError:  # orjson.JSONEncodeError
            pass
    return json.dumps(obj).encode()


class EventBus:
    """Fan-out of events to subscribers: SSE queues and plain callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: list[queue.Queue] = []
        self._listeners: list[Callable[[dict], None]] = []

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=1000)
        with self._lock:
            self._queues.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._queues:
                self._queues.remove(q)

    def listen(self, fn: Callable[[dict], None]) -> None:
        with self._lock:
            self._listeners.append(fn)

    def publish(self, event: dict | None) -> None:
        with self._lock:
            queues, listeners = list(self._queues), list(self._listeners)
        if event is None:  # the server is stopping: wake every stream, tell no listener
            listeners = []
        for q in queues:
            try:
                q.put_nowait(event)
            except queue.Full:  # a stalled client: drop its oldest event rather than block
                try:
                    q.get_nowait()
                    q.put_nowait(event)
                except (queue.Empty, queue.Full):
                    pass
        for fn in listeners:
            try:
                fn(event)
            except Exception:  # pragma: no cover - a listener must not break publishing
                log.exception("event listener failed")

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._queues) + len(self._listeners)


class BlobStore:
    """The last few images, by id: raw uint8 bytes plus width and height."""

    def __init__(self, keep: int = BLOBS_KEPT) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._blobs: OrderedDict[int, tuple[bytes, int, int]] = OrderedDict()
        self._pins: dict[str, int] = {}  # slot -> the blob kept for it (the overview, the document)
        self._keep = keep

    def put(self, image: np.ndarray, pin: bool | str = False) -> int:
        """Keep ``image`` (2-D uint8); ``pin`` (True: the overview, or a slot name) keeps it until
        the next one of the same slot, whatever the number of other images."""
        h, w = image.shape
        data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        with self._lock:
            bid = next(self._ids)
            self._blobs[bid] = (data, w, h)
            if pin:  # the slot's previous blob is no longer pinned: evicted later like a new one
                old = self._pins.get("overview" if pin is True else pin)
                self._pins["overview" if pin is True else pin] = bid
                if old in self._blobs:
                    self._blobs.move_to_end(old)
                    self._blobs.move_to_end(bid)
            pinned = set(self._pins.values())
            while len(self._blobs) > self._keep + len(pinned):
                for old in self._blobs:
                    if old not in pinned:
                        del self._blobs[old]
                        break
                else:  # pragma: no cover
                    break
            return bid

    def get(self, bid: int) -> tuple[bytes, int, int] | None:
        with self._lock:
            return self._blobs.get(bid)
