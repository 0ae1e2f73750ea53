"""The two kinds of shared blocks: the audio of the open file, and per-role rings of output slots.

Audio block (one per open file; created, filled and unlinked by the main process)::

    0   magic "SOMAAUD1" | version u32 | reserved u32 | sample_rate f64 | frames u64 |
        dtype u32 (1 = float32) | reserved u32 | generation u64        (64-byte header)
    64  float32 mono samples

Slot ring (one per role): ``n`` slots, each a 64-byte header of eight int64 fields
``state, generation, request_id, kind, height, width, count, flags`` followed by a payload of
fixed capacity. The main process leases a slot to a request (bumping its generation); the worker
checks the generation, writes the payload, then the header, then answers over its pipe with the
slot and generation; the main process delivers the result only if the header still matches.
After a worker is terminated its leased slots get a new generation once the process is known to
be dead, so nothing it half-wrote can ever be shown.

Pyramid block (one per open file, beside its audio block; same owner and lifetime)::

    0   magic "SOMAPYR1" | version u32 | complete u32 | generation u64 | samples u64 |
        sample_rate f64 | nfft u32 | hop u32 | top f64 | scale f64         (64-byte header)
    64  the pyramid's levels (uint8; layout from :class:`soma_shm.pyramid.PyramidLayout`)

Workers map it read-only only once ``complete`` is set and the engine names it in a request.

Descriptors (small frozen dataclasses) are what crosses the pipes: names and sizes, never data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SharedMemoryError
from .shm import Segment

__all__ = [
    "AudioDesc",
    "AudioBlock",
    "PyramidDesc",
    "PyramidBlock",
    "RingDesc",
    "SlotRing",
    "FREE",
    "LEASED",
    "WRITTEN",
    "KIND_IMAGE",
    "KIND_POINTS",
    "KIND_SAMPLES",
]

_MAGIC = b"SOMAAUD1"
_VERSION = 1
HEADER = 64

FREE, LEASED, WRITTEN = 0, 1, 2
KIND_IMAGE, KIND_POINTS, KIND_SAMPLES = 1, 2, 3
# header fields (int64 indices)
_STATE, _GEN, _REQ, _KIND, _H, _W, _COUNT, _FLAGS = range(8)
FLAG_MAGNITUDE = 1


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


# ----------------------------------------------------------------------------------- audio
@dataclass(frozen=True)
class AudioDesc:
    """What a worker needs to map the audio block."""

    name: str
    size: int
    frames: int
    sample_rate: float
    generation: int


class AudioBlock:
    """The open file's samples in shared memory (main process: owner; workers: read-only)."""

    def __init__(self, segment: Segment, frames: int, sample_rate: float, generation: int):
        self.segment = segment
        self.frames = frames
        self.sample_rate = sample_rate
        self.generation = generation

    @classmethod
    def create(cls, frames: int, sample_rate: float, generation: int, populate: bool = True) -> "AudioBlock":
        """A new block; ``populate=False`` leaves its pages to be allocated and mapped as they
        are filled (:meth:`prefault`, part by part ahead of a decoder, which must write only what
        it has prefaulted)."""
        if frames <= 0:
            raise SharedMemoryError(f"an audio block needs at least one frame, got {frames}")
        seg = Segment.create("audio", HEADER + 4 * frames, reserve=populate)
        if populate:
            seg.populate()  # about to be filled whole
        else:
            seg.populate(0, HEADER, strict=True)  # the header, written below
        buf = seg.buf
        buf[0:8] = _MAGIC
        np.frombuffer(buf, dtype=np.uint32, count=2, offset=8)[:] = (_VERSION, 0)
        np.frombuffer(buf, dtype=np.float64, count=1, offset=16)[0] = sample_rate
        np.frombuffer(buf, dtype=np.uint64, count=1, offset=24)[0] = frames
        np.frombuffer(buf, dtype=np.uint32, count=2, offset=32)[:] = (1, 0)
        np.frombuffer(buf, dtype=np.uint64, count=1, offset=40)[0] = generation
        return cls(seg, frames, sample_rate, generation)

    @classmethod
    def attach(cls, desc: AudioDesc) -> "AudioBlock":
        seg = Segment.attach(desc.name, desc.size, writable=False)
        buf = seg.buf
        if bytes(buf[0:8]) != _MAGIC:
            seg.close()
            raise SharedMemoryError(f"segment {desc.name!r} is not an audio block")
        frames = int(np.frombuffer(buf, dtype=np.uint64, count=1, offset=24)[0])
        fs = float(np.frombuffer(buf, dtype=np.float64, count=1, offset=16)[0])
        gen = int(np.frombuffer(buf, dtype=np.uint64, count=1, offset=40)[0])
        if (frames, gen) != (desc.frames, desc.generation):
            seg.close()
            raise SharedMemoryError(
                f"audio block {desc.name!r} holds generation {gen} ({frames} frames), expected "
                f"{desc.generation} ({desc.frames} frames)"
            )
        return cls(seg, frames, fs, gen)

    def samples(self) -> np.ndarray:
        """The samples: writable for the owner (to decode into), read-only for workers."""
        return self.segment.array(np.float32, (self.frames,), offset=HEADER)

    def prefault(self, start: int, stop: int) -> None:
        """Owner: allocate and map the pages of samples ``start:stop`` for writing now (see
        :meth:`Segment.populate`); raises :class:`SharedMemoryError` when ``/dev/shm`` is full."""
        self.segment.populate(HEADER + 4 * start, HEADER + 4 * stop, strict=True)

    def desc(self) -> AudioDesc:
        return AudioDesc(self.segment.name, self.segment.size, self.frames, self.sample_rate, self.generation)

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


# --------------------------------------------------------------------------------- pyramid
_PYR_MAGIC = b"SOMAPYR1"


@dataclass(frozen=True)
class PyramidDesc:
    """What a worker needs to map a file's pyramid (see :mod:`soma_shm.pyramid`)."""

    name: str
    size: int
    generation: int
    samples: int
    sample_rate: float
    nfft: int
    hop: int
    top: float
    scale: float


class PyramidBlock:
    """A file's STFT pyramid in shared memory (main process: owner and builder; workers: read-only)."""

    def __init__(self, segment: Segment, layout, generation: int):
        self.segment = segment
        self.layout = layout
        self.generation = generation

    @classmethod
    def create(cls, layout, generation: int) -> "PyramidBlock":
        seg = Segment.create("pyramid", HEADER + layout.nbytes)
        seg.populate()  # about to be filled whole by the build
        buf = seg.buf
        buf[0:8] = _PYR_MAGIC
        np.frombuffer(buf, dtype=np.uint32, count=2, offset=8)[:] = (_VERSION, 0)
        np.frombuffer(buf, dtype=np.uint64, count=2, offset=16)[:] = (generation, layout.samples)
        np.frombuffer(buf, dtype=np.float64, count=1, offset=32)[0] = layout.sample_rate
        np.frombuffer(buf, dtype=np.uint32, count=2, offset=40)[:] = (layout.nfft, layout.hop)
        return cls(seg, layout, generation)

    def levels_buffer(self) -> np.ndarray:
        """The flat uint8 buffer the pyramid's levels live in (writable for the owner)."""
        return self.segment.array(np.uint8, (self.layout.nbytes,), offset=HEADER)

    def mark_complete(self, top: float, scale: float) -> None:
        """Record the byte scale and mark the pyramid built (after every level is written)."""
        np.frombuffer(self.segment.buf, dtype=np.float64, count=2, offset=48)[:] = (top, scale)
        np.frombuffer(self.segment.buf, dtype=np.uint32, count=1, offset=12)[0] = 1

    def desc(self) -> PyramidDesc:
        top, scale = (float(v) for v in np.frombuffer(self.segment.buf, dtype=np.float64, count=2, offset=48))
        lay = self.layout
        return PyramidDesc(self.segment.name, self.segment.size, self.generation, lay.samples,
                           lay.sample_rate, lay.nfft, lay.hop, top, scale)

    @classmethod
    def attach(cls, desc: PyramidDesc):
        """Map a complete pyramid read-only; returns ``(block, Pyramid)``."""
        from ..pyramid import Pyramid, PyramidLayout

        seg = Segment.attach(desc.name, desc.size, writable=False)
        buf = seg.buf
        complete = int(np.frombuffer(buf, dtype=np.uint32, count=1, offset=12)[0])
        gen = int(np.frombuffer(buf, dtype=np.uint64, count=1, offset=16)[0])
        if bytes(buf[0:8]) != _PYR_MAGIC or gen != desc.generation or not complete:
            seg.close()
            raise SharedMemoryError(
                f"segment {desc.name!r} is not the complete pyramid of generation {desc.generation}"
            )
        layout = PyramidLayout.for_recording(desc.samples, desc.sample_rate, desc.nfft, desc.hop)
        block = cls(seg, layout, gen)
        return block, Pyramid(layout, block.levels_buffer(), desc.top, desc.scale)

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()


# ----------------------------------------------------------------------------------- slots
@dataclass(frozen=True)
class RingDesc:
    """What a worker needs to map a slot ring."""

    name: str
    size: int
    slots: int
    capacity: int  # payload bytes per slot


class SlotRing:
    """A ring of fixed-capacity output slots in one segment."""

    def __init__(self, segment: Segment, slots: int, capacity: int):
        self.segment = segment
        self.slots = slots
        self.capacity = capacity
        self.stride = HEADER + _align(capacity)

    @classmethod
    def create(cls, role: str, slots: int, capacity: int) -> "SlotRing":
        stride = HEADER + _align(capacity)
        seg = Segment.create(f"{role}slots", slots * stride)
        ring = cls(seg, slots, capacity)
        for i in range(slots):
            ring.header(i)[:] = 0
        return ring

    @classmethod
    def attach(cls, desc: RingDesc) -> "SlotRing":
        return cls(Segment.attach(desc.name, desc.size, writable=True), desc.slots, desc.capacity)

    def desc(self) -> RingDesc:
        return RingDesc(self.segment.name, self.segment.size, self.slots, self.capacity)

    # -- raw access -----------------------------------------------------------------------
    def header(self, slot: int) -> np.ndarray:
        return self.segment.array(np.int64, (8,), offset=slot * self.stride, writable=True)

    def payload(self, slot: int, dtype, shape, offset: int = 0, writable: bool = False) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if offset + nbytes > self.capacity:
            raise SharedMemoryError(
                f"{nbytes} bytes at offset {offset} exceed the slot capacity of {self.capacity} bytes"
            )
        return self.segment.array(dtype, shape, offset=slot * self.stride + HEADER + offset, writable=writable)

    # -- main-process side ----------------------------------------------------------------
    def lease(self, slot: int, request_id: int) -> int:
        """Mark ``slot`` leased to ``request_id``; returns the slot's new generation."""
        h = self.header(slot)
        h[_GEN] += 1
        h[_STATE] = LEASED
        h[_REQ] = request_id
        h[_KIND] = h[_H] = h[_W] = h[_COUNT] = h[_FLAGS] = 0
        return int(h[_GEN])

    def free(self, slot: int, bump: bool = False) -> None:
        h = self.header(slot)
        if bump:
            h[_GEN] += 1
        h[_STATE] = FREE

    def check(self, slot: int, request_id: int, generation: int) -> bool:
        """True if the slot holds a complete result for this request and generation."""
        h = self.header(slot)
        return int(h[_STATE]) == WRITTEN and int(h[_GEN]) == generation and int(h[_REQ]) == request_id

    # -- views of a written result (main process) ----------------------------------------
    def image_views(self, slot: int) -> tuple[np.ndarray, np.ndarray | None]:
        h = self.header(slot)
        height, width = int(h[_H]), int(h[_W])
        image = self.payload(slot, np.uint8, (height, width))
        mag = None
        if int(h[_FLAGS]) & FLAG_MAGNITUDE:
            mag = self.payload(slot, np.float32, (height, width), offset=_align(height * width))
        return image, mag

    def points_view(self, slot: int) -> np.ndarray:
        h = self.header(slot)
        return self.payload(slot, np.float64, (int(h[_COUNT]), 3))

    def samples_view(self, slot: int) -> np.ndarray:
        h = self.header(slot)
        return self.payload(slot, np.float32, (int(h[_COUNT]),))

    def kind(self, slot: int) -> int:
        return int(self.header(slot)[_KIND])

    # -- worker side ------------------------------------------------------------------------
    def owned(self, slot: int, request_id: int, generation: int) -> bool:
        h = self.header(slot)
        return int(h[_GEN]) == generation and int(h[_REQ]) == request_id and int(h[_STATE]) == LEASED

    def image_buffers(self, slot: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.payload(slot, np.uint8, (height, width), writable=True)
        mag = self.payload(slot, np.float32, (height, width), offset=_align(height * width), writable=True)
        return image, mag

    def publish(self, slot: int, kind: int, height: int = 0, width: int = 0, count: int = 0, flags: int = 0) -> None:
        """Worker: the payload is complete; record its shape and mark the slot written."""
        h = self.header(slot)
        h[_KIND], h[_H], h[_W], h[_COUNT], h[_FLAGS] = kind, height, width, count, flags
        h[_STATE] = WRITTEN

    @staticmethod
    def image_capacity(max_width: int, max_height: int) -> int:
        px = max_width * max_height
        return _align(px) + 4 * px

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()
