"""What the app opens at start: the FILE given to ``soma-shm app`` or ``soma-shm serve``.

Shared by the browser mode (:mod:`soma_shm.app.cli`) and the window (:mod:`soma_shm.app.window`),
so neither imports the other.
"""

from __future__ import annotations

__all__ = ["open_initial"]


def open_initial(backend, path: str | None) -> None:
    """Open ``path`` in ``backend``: a ``.soma`` project is loaded, anything else opened as audio."""
    if not path:
        return
    if path.lower().endswith(".soma"):
        backend.load_project(path)
    else:
        backend.open_file(path)
