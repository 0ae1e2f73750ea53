"""What crosses a worker's pipe, and the table of roles the engine runs.

Messages are frozen dataclasses pickled with ``send_bytes`` (so the supervisor counts every
byte). They carry request ids, slot numbers, generations and block descriptors: never audio,
never image bytes (see ``docs/design.md``, "Protocol").

To a worker:

- :class:`Compute` - run task ``task`` for request ``request_id``; write into ``slot`` of the
  ring ``ring`` (if any) only while the slot's header still holds ``generation``;
- :class:`Stop` - finish and exit.

From a worker:

- :class:`Ready` - started and warm (``preloaded``: forked from the warmed forkserver);
- :class:`Started` - the request was read and is being computed (a worker that dies before this
  never began it, so the request is given to another worker);
- :class:`Done` - finished; ``slot`` is -1 when the task wrote nothing into its slot;
- :class:`Failed` - the task raised; ``error`` is the exception itself, with the worker's
  traceback as its ``__cause__`` (a :class:`RemoteTraceback`).

Roles
-----
:data:`ROLES` is the one place a role is defined. Each :class:`Role` names the task its worker
runs for a request, what its output slots hold (:data:`SLOT_KINDS`), how many slots and of what
capacity (functions of :class:`soma_shm.EngineOptions`), and what a new request does to older
ones (``"supersede"``: latest wins, the computing one is terminated; ``"queue"``: wait in order,
bounded by ``queue_limit``, oldest dropped with QueueFull); an ``on_demand`` role starts its
workers with its first request instead of with the engine. The supervisor
(:mod:`soma_shm.ipc.supervisor`) starts, feeds and replaces the workers of every role in the
table the same way; nothing else in the engine lists roles.

Adding a role (say ``synth``) is one entry in :data:`ROLES` plus its task function::

    Role("synth", "soma_shm.ipc.tasks:synth", "samples",
         slots=lambda o: 2, capacity=lambda o: 4 * 48_000 * 600, policy="queue",
         queue_limit=lambda o: 4)

The task is ``fn(job) -> dict`` (:class:`soma_shm.ipc.worker.Job`): it reads ``job.params``
and ``job.audio()``, writes into the buffers ``job.image_out`` / ``job.points_out`` /
``job.samples_out`` give it, calls ``job.publish_*`` and returns timings (``compute_s``...).
The public entry point (``Engine.submit_synth``) validates in the caller and calls
``Engine._submit("synth", params, make_result)``. A task function may also be named by a test
(``"tests.worker_tasks:sleep"``): workers import the module named before the colon.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .blocks import AudioDesc, RingDesc, SlotRing

__all__ = [
    "Compute",
    "Stop",
    "Ready",
    "Started",
    "Done",
    "Failed",
    "RemoteTraceback",
    "Role",
    "ROLES",
    "SLOT_KINDS",
    "encode",
    "decode",
    "failure",
]


# ------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Compute:
    request_id: int
    task: str  # "module:function" the worker runs
    slot: int  # -1: the role has no slots
    generation: int
    ring: RingDesc | None
    audio: AudioDesc | None
    params: Any


@dataclass(frozen=True)
class Stop:
    pass


@dataclass(frozen=True)
class Ready:
    pid: int
    preloaded: bool
    warm_s: float


@dataclass(frozen=True)
class Started:
    request_id: int


@dataclass(frozen=True)
class Done:
    request_id: int
    slot: int  # -1: nothing was published
    generation: int
    meta: dict = field(default_factory=dict)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (the ``__cause__`` of that exception)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


@dataclass(frozen=True)
class Failed:
    request_id: int
    error: BaseException

    def __reduce__(self):
        # Pickling an exception keeps only its args: send the traceback beside it and make it the
        # ``__cause__`` again on arrival.
        cause = self.error.__cause__
        tb = cause.tb if isinstance(cause, RemoteTraceback) else ""
        return (_failed, (self.request_id, self.error, tb))


def _failed(request_id: int, error: BaseException, tb: str) -> Failed:
    error.__cause__ = RemoteTraceback(tb)
    return Failed(request_id, error)


def failure(request_id: int, exc: BaseException) -> Failed:
    """A :class:`Failed` for ``exc`` (raised here, in the worker) that survives pickling."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    err: BaseException = exc
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # an exception that does not pickle travels as its type name and text
        err = RuntimeError(f"{type(exc).__name__}: {exc}")
    err.__traceback__ = None
    err.__cause__ = RemoteTraceback(tb)
    return Failed(request_id, err)


def encode(msg: Any) -> bytes:
    return pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Any:
    return pickle.loads(data)


# --------------------------------------------------------------------------------- roles
SLOT_KINDS: dict[str, str] = {
    "image": "uint8 image (H, W) and its float32 magnitude (H, W)",
    "points": "float64 points (K, 3): time s, frequency Hz, amplitude",
    "samples": "float32 samples (N,)",
}
"""What an output slot can hold (the ring's header names the kind and shape of each result)."""


@dataclass(frozen=True)
class Role:
    """One kind of worker: its task, its output slots and its scheduling policy."""

    name: str
    task: str  # "module:function" run by the worker for each request
    slot_kind: Literal["image", "points", "samples"]
    slots: Callable[[Any], int]  # options -> number of output slots
    capacity: Callable[[Any], int]  # options -> payload bytes per slot
    policy: Literal["supersede", "queue"]
    queue_limit: Callable[[Any], int] = lambda options: 1 << 30  # waiting requests beyond the computing one
    on_demand: bool = False  # workers start with the first request (not with the engine)

    def __post_init__(self) -> None:
        if self.slot_kind not in SLOT_KINDS:
            raise ValueError(f"slot_kind={self.slot_kind!r} must be one of {', '.join(SLOT_KINDS)}")
        if self.policy not in ("supersede", "queue"):
            raise ValueError(f"policy={self.policy!r} must be 'supersede' or 'queue'")


ROLES: dict[str, Role] = {
    r.name: r
    for r in (
        Role("viewport", "soma_shm.ipc.tasks:viewport", "image",
             slots=lambda o: o.viewport_slots,
             capacity=lambda o: SlotRing.image_capacity(o.max_width, o.max_height),
             policy="supersede"),
        Role("snap", "soma_shm.ipc.tasks:snap", "points",
             slots=lambda o: o.snap_slots,
             capacity=lambda o: 24 * o.max_snap_points,
             policy="queue", queue_limit=lambda o: o.snap_queue),
        # Edits to the open file's resynthesis mix (a shared block of its own, soma_shm.ipc.mix):
        # no output slots; requests queue (each one is a difference to the mix as the previous
        # left it, so none may be dropped); started by the first request.
        Role("synth", "soma_shm.ipc.tasks:synth", "samples",
             slots=lambda o: 0, capacity=lambda o: 0, policy="queue", on_demand=True),
    )
}
"""The engine's roles, by name. See the module docstring for how to add one."""
