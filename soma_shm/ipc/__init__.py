"""Inter-process machinery: shared blocks, the pipe protocol, the supervisor, the worker loop.

- ``shm``        : POSIX segments with one owner (create/reserve/unlink) that workers map without
                   a resource tracker; per-run name prefixes and the start-up sweep of orphans.
- ``blocks``     : the audio block, the pyramid block and the per-role slot rings (header with
                   state/generation/request id per slot + fixed-capacity payload); the small
                   descriptors that cross the pipes.
- ``mix``        : the open file's resynthesis mix block (written by the synth worker).
- ``protocol``   : the messages (frozen dataclasses) and the table of roles, ``ROLES``: adding a
                   role is one entry there plus its task function (see its docstring).
- ``supervisor`` : the one thread that owns workers, queues, slots and deadlines; the inbox,
                   the pending table and the snapshot callers read; the launcher thread
                   that starts workers for it.
- ``roles``      : one role's queue, slots and workers, and what the supervisor does to them
                   (policy, dispatch, answers, timers, reaping).
- ``workers``    : one worker process as the supervisor sees it (start, signals, pipe).
- ``launch``     : starting workers that never import the caller's ``__main__``; process state.
- ``worker``     : the worker process main loop and the ``Job`` a task function receives.
- ``tasks``      : the task functions of the roles (viewport, snap, synth) and the kernels' warm-up.
- ``_preload``   : what the forkserver imports and warms before it forks any worker.
- ``_log``       : lifecycle logging for the engine and the workers (quiet unless asked).

Only the main process creates and unlinks segments; workers attach and only close. The design
(protocol, lock order, message types) is written down in ``docs/design.md``.
"""
