"""POSIX shared-memory segments with one owner, attachable without a resource tracker.

Why not ``multiprocessing.shared_memory.SharedMemory`` everywhere: before Python 3.13 every
attach registers the name with the attaching process's resource tracker, which unlinks (or warns
about) a block it does not own when that process exits. Here only the owner (the main process)
creates, registers and unlinks; workers map segments by name with ``shm_open`` + ``mmap`` and
only ever close them.

Names carry a per-run prefix ``soma_<pid>_<start>_<token>_`` so that the segments of a main
process that died without cleaning up can be found and swept at the next start
(:func:`sweep_orphans`).
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import secrets
import time
from multiprocessing import resource_tracker

import _posixshmem  # CPython's own binding of shm_open/shm_unlink (POSIX)

from ..errors import SharedMemoryError

__all__ = ["Segment", "run_prefix", "sweep_orphans", "list_segments", "SHM_DIR", "PREFIX"]

log = logging.getLogger("soma_shm.ipc")

MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux uapi value
SHM_DIR = "/dev/shm"
PREFIX = "soma_"
_RUN_PREFIX: str | None = None


def run_prefix() -> str:
    """``soma_<pid>_<start>_<token>_``, fixed for this process (recomputed after a fork)."""
    global _RUN_PREFIX
    if _RUN_PREFIX is None or not _RUN_PREFIX.startswith(f"{PREFIX}{os.getpid()}_"):
        _RUN_PREFIX = f"{PREFIX}{os.getpid()}_{int(time.time())}_{secrets.token_hex(3)}_"
    return _RUN_PREFIX


class Segment:
    """A mapped shared-memory segment.

    ``Segment.create(kind, size)`` makes a new segment owned by this process (size reserved up
    front with ``posix_fallocate``, so a full ``/dev/shm`` is a clear error, not a SIGBUS on first
    touch). ``Segment.attach(name, size, writable)`` maps an existing one without registering it
    anywhere. Views are made with :meth:`array`; every view must be dropped before
    :meth:`close` (``np.frombuffer`` holds a buffer export, so a forgotten view makes close fail
    loudly instead of leaving a dangling pointer).
    """

    def __init__(self, name: str, size: int, mm: mmap.mmap, owner: bool):
        self.name = name
        self.size = size
        self._mmap: mmap.mmap | None = mm
        self.owner = owner

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, size: int) -> "Segment":
        if size <= 0:
            raise SharedMemoryError(f"segment size must be positive, got {size}")
        for _ in range(16):
            name = run_prefix() + f"{kind}_{secrets.token_hex(3)}"
            try:
                fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 16 random collisions
            raise SharedMemoryError("could not find a free shared-memory name")
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    free = _free_shm_bytes()
                    raise SharedMemoryError(
                        f"shared memory is too small for {size / 2**20:.1f} MiB ({kind}): {SHM_DIR} has "
                        f"{free / 2**20:.1f} MiB free; close other files or enlarge {SHM_DIR}"
                    ) from None
                raise
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        os.close(fd)
        # The owner's resource tracker is the backstop if this process dies without unlinking.
        resource_tracker.register("/" + name, "shared_memory")
        log.debug("segment create %s (%d bytes) pid=%d", name, size, os.getpid())
        return cls(name, size, mm, owner=True)

    def populate(self) -> None:
        """Map every page for writing now, in one call (``MADV_POPULATE_WRITE``, Linux >= 5.14).

        Filling a large block page fault by page fault costs more than mapping it in one go
        (an hour of audio: no difference; three hours: 2.7 s -> 1.6 + 0.5 s). A kernel without it
        leaves the pages to be faulted in as they are written.
        """
        try:
            self.buf.madvise(MADV_POPULATE_WRITE, 0, self.size)
        except (OSError, ValueError):  # older kernel, or not supported for this mapping
            pass

    @classmethod
    def attach(cls, name: str, size: int, writable: bool = False) -> "Segment":
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        except FileNotFoundError:
            raise SharedMemoryError(f"shared-memory segment {name!r} does not exist (was it closed?)") from None
        try:
            actual = os.fstat(fd).st_size
            if actual < size:
                raise SharedMemoryError(f"segment {name!r} holds {actual} bytes, expected at least {size}")
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)
        finally:
            os.close(fd)
        return cls(name, size, mm, owner=False)

    # -- access ---------------------------------------------------------------------------
    @property
    def buf(self) -> mmap.mmap:
        if self._mmap is None:
            raise SharedMemoryError(f"segment {self.name!r} is closed")
        return self._mmap

    def array(self, dtype, shape, offset: int = 0, writable: bool | None = None):
        """A numpy view of part of the segment (read-only unless ``writable``)."""
        import numpy as np

        count = int(np.prod(shape))
        a = np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset).reshape(shape)
        if writable is False or (writable is None and not self.owner):
            a.flags.writeable = False
        return a

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        """Unmap. Safe to call twice.

        Views made by :meth:`array` hold the mapping (``np.frombuffer`` exports the buffer): if
        some are still alive (say, in a traceback), the mapping is released when the last of them
        goes, never under them.
        """
        if self._mmap is not None:
            mm, self._mmap = self._mmap, None
            try:
                mm.close()
            except BufferError:
                log.debug("segment %s still has views; unmapped when they are gone", self.name)

    def unlink(self) -> None:
        """Remove the name (owner only; the memory lives until every mapping is closed)."""
        if not self.owner:
            raise SharedMemoryError(f"only the owner may unlink {self.name!r}")
        try:
            _posixshmem.shm_unlink("/" + self.name)
        except FileNotFoundError:
            pass
        else:
            log.debug("segment unlink %s pid=%d", self.name, os.getpid())
        try:
            resource_tracker.unregister("/" + self.name, "shared_memory")
        except Exception:  # pragma: no cover - tracker already gone at interpreter exit
            pass
        self.owner = False

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.size} bytes, owner={self.owner}, open={self._mmap is not None})"


def _free_shm_bytes() -> int:
    try:
        st = os.statvfs(SHM_DIR)
        return st.f_bavail * st.f_frsize
    except OSError:  # pragma: no cover
        return 0


def list_segments(prefix: str = PREFIX) -> list[str]:
    """Names of the segments in /dev/shm that start with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except FileNotFoundError:  # pragma: no cover - not Linux
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's live process
        return True
    return True


def sweep_orphans() -> list[str]:
    """Unlink segments of ours whose owning process is gone (a main process that was killed).

    Returns the names removed.
    """
    removed = []
    for name in list_segments():
        parts = name.split("_")
        try:
            pid = int(parts[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            _posixshmem.shm_unlink("/" + name)
            removed.append(name)
        except FileNotFoundError:
            pass
    if removed:
        log.info("swept %d orphaned segment(s) of dead processes: %s", len(removed), ", ".join(removed))
    return removed
