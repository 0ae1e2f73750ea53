"""The resynthesis mix of the open file: a shared float32 block the synth worker writes into.

One block per open file (per :class:`soma_shm.Engine` generation), created and unlinked by the
main process like the audio block; the synth worker maps it writable and adds or subtracts
partials in place, so an edit moves only the samples of the partials it touched and nothing but
descriptors and points crosses the pipe. The main process reads it (playback) without copying.

Layout::

    0   magic "SOMAMIX1" | version u32 | reserved u32 | sample_rate f64 | frames u64 |
        generation u64 | reserved                                         (64-byte header)
    64  float32 samples, frames of them
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SharedMemoryError
from .shm import Segment

__all__ = ["MixDesc", "MixBlock"]

_MAGIC = b"SOMAMIX1"
_VERSION = 1
HEADER = 64


@dataclass(frozen=True)
class MixDesc:
    """What the synth worker needs to map the mix."""

    name: str
    size: int
    frames: int
    sample_rate: float
    generation: int


class MixBlock:
    """A file's resynthesis mix in shared memory (main process: owner; the synth worker: writer)."""

    def __init__(self, segment: Segment, frames: int, sample_rate: float, generation: int):
        self.segment = segment
        self.frames = frames
        self.sample_rate = sample_rate
        self.generation = generation

    @classmethod
    def create(cls, frames: int, sample_rate: float, generation: int) -> "MixBlock":
        if frames <= 0:
            raise SharedMemoryError(f"a mix block needs at least one frame, got {frames}")
        seg = Segment.create("mix", HEADER + 4 * frames)
        buf = seg.buf
        buf[0:8] = _MAGIC
        np.frombuffer(buf, dtype=np.uint32, count=2, offset=8)[:] = (_VERSION, 0)
        np.frombuffer(buf, dtype=np.float64, count=1, offset=16)[0] = sample_rate
        np.frombuffer(buf, dtype=np.uint64, count=2, offset=24)[:] = (frames, generation)
        return cls(seg, frames, sample_rate, generation)

    @classmethod
    def attach(cls, desc: MixDesc) -> "MixBlock":
        seg = Segment.attach(desc.name, desc.size, writable=True)
        buf = seg.buf
        frames, gen = (int(v) for v in np.frombuffer(buf, dtype=np.uint64, count=2, offset=24))
        if bytes(buf[0:8]) != _MAGIC or (frames, gen) != (desc.frames, desc.generation):
            seg.close()
            raise SharedMemoryError(f"segment {desc.name!r} is not the mix of generation {desc.generation}")
        return cls(seg, frames, float(np.frombuffer(buf, dtype=np.float64, count=1, offset=16)[0]), gen)

    def samples(self, writable: bool = True) -> np.ndarray:
        return self.segment.array(np.float32, (self.frames,), offset=HEADER, writable=writable)

    def desc(self) -> MixDesc:
        return MixDesc(self.segment.name, self.segment.size, self.frames, self.sample_rate, self.generation)

    def close(self) -> None:
        self.segment.close()

    def unlink(self) -> None:
        self.segment.unlink()
