"""Inter-process machinery: shared audio blocks, output slot rings, the worker loop.

- ``shm``      : POSIX segments with one owner (create/reserve/unlink) that workers map without a
                 resource tracker; per-run name prefixes and the start-up sweep of orphans.
- ``blocks``   : the audio block (header + float32 mono samples) and the per-role slot rings
                 (header with state/generation/request id per slot + fixed-capacity payload);
                 the small descriptors that cross the pipes.
- ``worker``   : the worker process main loop (warm once, attach read-only, compute into the
                 leased slot, answer with a descriptor); test operations for the crash matrix.
- ``_preload`` : what the forkserver imports and warms before it forks any worker.
- ``_log``     : lifecycle logging for the engine and the workers (quiet unless asked).

The supervisor that starts, feeds, cancels and replaces workers lives in
:class:`soma_shm.engine.Engine`. Only the main process creates and unlinks segments; workers
attach and only close.
"""
