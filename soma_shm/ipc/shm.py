"""POSIX shared-memory segments with one owner, attachable without a resource tracker.

Why not ``multiprocessing.shared_memory.SharedMemory`` everywhere: before Python 3.13 every
attach registers the name with the attaching process's resource tracker, which unlinks (or warns
about) a block it does not own when that process exits. Here only the owner (the main process)
creates, registers and unlinks; workers map segments by name with ``shm_open`` + ``mmap`` and
only ever close them.

Names carry a per-run prefix ``soma_<pid>_<start>_<token>_`` so that the segments of a main
process that died without cleaning up can be found and swept at the next start
(:func:`sweep_orphans`). Whether the owner is alive is not decided by its pid (a pid seen from
another PID namespace sharing ``/dev/shm`` names another process, or none): while a process owns
segments it holds an exclusive ``flock`` on its run's lock file ``<prefix>lock`` in ``/dev/shm``,
and the sweep removes a run only if it can take that lock itself (the kernel releases it when the
owner dies, in any namespace). See ``docs/design.md``, "Shared memory".
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import secrets
import threading
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


LOCK_SUFFIX = "lock"


class _OwnerLock:
    """The run's lock file, held (``flock``) while this process owns at least one segment."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._prefix = ""
        self._owned = 0

    def acquire(self) -> None:
        with self._mutex:
            prefix = run_prefix()
            if self._prefix != prefix:  # first segment, or a forked child: a lock of its own
                self._fd, self._prefix, self._owned = None, prefix, 0
            if self._fd is None:
                path = os.path.join(SHM_DIR, prefix + LOCK_SUFFIX)
                tmp = path + "_new"
                fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.rename(tmp, path)  # appears already locked: a sweep never sees it free
                self._fd = fd
            self._owned += 1

    def release(self) -> None:
        with self._mutex:
            if self._fd is None or self._prefix != run_prefix():
                return
            self._owned -= 1
            if self._owned <= 0:
                try:
                    os.unlink(os.path.join(SHM_DIR, self._prefix + LOCK_SUFFIX))
                except FileNotFoundError:
                    pass
                os.close(self._fd)
                self._fd, self._owned = None, 0


_OWNER = _OwnerLock()


class Segment:
    """A mapped shared-memory segment.

    ``Segment.create(kind, size)`` makes a new segment owned by this process (size reserved up
    front with ``posix_fallocate``, so a full ``/dev/shm`` is a clear error, not a SIGBUS on first
    touch; ``reserve=False`` leaves that to :meth:`populate` with ``strict=True``, part by part).
    ``Segment.attach(name, size, writable)`` maps an existing one without registering it
    anywhere. Views are made with :meth:`array`; every view must be dropped before
    :meth:`close` (``np.frombuffer`` holds a buffer export, so a forgotten view makes close fail
    loudly instead of leaving a dangling pointer).
    """

    def __init__(self, name: str, size: int, mm: mmap.mmap, owner: bool):
        self.name = name
        self.size = size
        self._mmap: mmap.mmap | None = mm
        self.owner = owner
        self._kind = "segment"  # what it holds, for error messages (set by create)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, size: int, reserve: bool = True) -> "Segment":
        """``reserve=False``: the pages are allocated only as :meth:`populate` (``strict=True``)
        maps them, so that allocating an hour of audio (0.2 s here) overlaps its decoding
        instead of coming before it. The caller must then write only what it has populated (the
        decoders of :func:`soma_shm.audio.decode_into` do): a write to a page that ``/dev/shm``
        has no room for would be a SIGBUS, where ``populate`` raises. Free room is
        checked here all the same, and on a kernel without ``MADV_POPULATE_WRITE`` the size is
        reserved as usual."""
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
            deferred = not reserve and _populate_allocates()
            try:
                if deferred:
                    if _free_shm_bytes() < size:
                        raise OSError(errno.ENOSPC, "no room")
                    os.ftruncate(fd, size)
                else:
                    os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
                    raise _too_small(size, kind) from None
                raise
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            _posixshmem.shm_unlink("/" + name)
            raise
        os.close(fd)
        _OWNER.acquire()
        # The owner's resource tracker is the backstop if this process dies without unlinking.
        resource_tracker.register("/" + name, "shared_memory")
        log.debug("segment create %s (%d bytes) pid=%d", name, size, os.getpid())
        seg = cls(name, size, mm, owner=True)
        seg._kind = kind
        return seg

    def populate(self, start: int = 0, stop: int | None = None, strict: bool = False) -> None:
        """Map the pages of bytes ``start:stop`` (default: all) for writing now, in one call
        (``MADV_POPULATE_WRITE``, Linux >= 5.14), without holding the GIL.

        Filling a large block page fault by page fault costs more than mapping it in one go
        (an hour of audio: no difference; three hours: 2.7 s -> 1.6 + 0.5 s). What mapping costs
        depends on the machine's memory, not on this process: pages the kernel hands out fresh
        (on a virtual machine, memory its host has taken back) cost up to ten times more than
        pages used a moment ago (an hour of audio: 0.2 s to 2.3 s here). So a block filled by a
        decoder is mapped part by part just ahead of it (:func:`soma_shm.audio.decode_into`),
        not whole before decoding starts. A kernel without it leaves the pages to be faulted in
        as they are written.

        ``strict``: for a segment made with ``reserve=False``, whose pages this allocates; raises
        :class:`SharedMemoryError` when ``/dev/shm`` has no room left for them.
        """
        stop = self.size if stop is None else min(int(stop), self.size)
        start = max(0, int(start)) // mmap.PAGESIZE * mmap.PAGESIZE
        if stop <= start:
            return
        madvise = _libc_madvise()
        if madvise is None:  # pragma: no cover - no C library: the same call, under the GIL
            try:
                self.buf.madvise(MADV_POPULATE_WRITE, start, stop - start)
            except (OSError, ValueError):
                pass
            return
        # Through ctypes, which releases the GIL for the call (mmap.madvise does not: the
        # decoding and building threads would stall for as long as it runs).
        if madvise(self._address() + start, stop - start, MADV_POPULATE_WRITE) != 0 and strict:
            # EFAULT: a page could not be allocated (it would have been a SIGBUS); EINVAL: an
            # older kernel (create() then reserved the whole size, nothing to do).
            import ctypes

            if ctypes.get_errno() in (errno.EFAULT, errno.ENOMEM, errno.ENOSPC):
                raise _too_small(self.size, self._kind)

    def _address(self) -> int:
        """The mapping's start address (no buffer export is left behind)."""
        return _address_of(self.buf)

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
        _OWNER.release()
        try:
            resource_tracker.unregister("/" + self.name, "shared_memory")
        except Exception:  # pragma: no cover - tracker already gone at interpreter exit
            pass
        self.owner = False

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {self.size} bytes, owner={self.owner}, open={self._mmap is not None})"


_MADVISE: list = []


def _libc_madvise():
    """The C library's ``madvise`` through ctypes (loaded once), or None."""
    if not _MADVISE:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
            fn.restype = ctypes.c_int
        except (OSError, AttributeError):  # pragma: no cover
            fn = None
        _MADVISE.append(fn)
    return _MADVISE[0]


def _too_small(size: int, kind: str) -> SharedMemoryError:
    free = _free_shm_bytes()
    return SharedMemoryError(
        f"shared memory is too small for {size / 2**20:.1f} MiB ({kind}): {SHM_DIR} has "
        f"{free / 2**20:.1f} MiB free; close other files or enlarge {SHM_DIR}"
    )


def _address_of(buffer) -> int:
    """A writable buffer's start address (no buffer export is left behind)."""
    import ctypes

    view = ctypes.c_char.from_buffer(buffer)
    try:
        return ctypes.addressof(view)
    finally:
        del view


_POPULATE_ALLOCATES: list[bool] = []


def _populate_allocates() -> bool:
    """True when ``MADV_POPULATE_WRITE`` works here (Linux >= 5.14): checked once on a page of
    a scratch mapping."""
    if not _POPULATE_ALLOCATES:
        madvise = _libc_madvise()
        ok = False
        if madvise is not None:
            scratch = mmap.mmap(-1, mmap.PAGESIZE)
            try:
                ok = madvise(_address_of(scratch), mmap.PAGESIZE, MADV_POPULATE_WRITE) == 0
            finally:
                scratch.close()
        _POPULATE_ALLOCATES.append(ok)
    return _POPULATE_ALLOCATES[0]


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


def _run_of(name: str) -> str | None:
    """The run prefix ``soma_<pid>_<start>_<token>_`` of a segment name, or None."""
    parts = name.split("_")
    if len(parts) < 5 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return "_".join(parts[:4]) + "_"


def _owner_gone(run: str):
    """If the run's owner is gone, its lock file's descriptor, locked by us (close it after the
    unlinks); None while the owner lives, or if the run has no lock file (not ours to judge)."""
    try:
        fd = os.open(os.path.join(SHM_DIR, run + LOCK_SUFFIX), os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def sweep_orphans() -> list[str]:
    """Unlink segments of ours whose owning process is gone (a main process that was killed).

    A run's segments go only if its lock file can be locked here (its owner is dead, in whatever
    PID namespace it ran); runs without a lock file are left alone. Returns the names removed.
    """
    runs: dict[str, list[str]] = {}
    for name in list_segments():
        run = _run_of(name)
        if run is not None and run != run_prefix():
            runs.setdefault(run, []).append(name)
    removed = []
    for run, names in runs.items():
        fd = _owner_gone(run)
        if fd is None:
            continue
        try:
            lock = run + LOCK_SUFFIX
            for name in sorted(names, key=lambda n: n == lock):  # the lock file last
                try:
                    _posixshmem.shm_unlink("/" + name)
                    if name != lock:
                        removed.append(name)
                except FileNotFoundError:
                    pass
        finally:
            os.close(fd)
    if removed:
        log.info("swept %d orphaned segment(s) of dead processes: %s", len(removed), ", ".join(removed))
    return removed
