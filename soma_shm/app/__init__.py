"""The desktop app: a pywebview window and a browser mode on one web front end.

What lives here:

- ``document.py`` - :class:`SomaDocument`: source, settings, partials, edit operations and their
  undo/redo history (each edit keeps only the partials it touched), ``.soma`` project
  save/load, CSV/JSON export.
- ``persistence.py`` - the ``.soma`` format (SOMA's layout both ways), atomic writes, audio
  copied beside a project and relinked by MD5, recent projects, recovery files, autosave.
- ``backend.py`` - :class:`AppBackend`: one Engine and one document; the API methods; events
  pushed to the page; image blobs kept for the page to fetch.
- ``server.py`` - :class:`AppServer`: the local HTTP server (page, blobs, ``POST /api/<method>``,
  server-sent events) on 127.0.0.1 with a per-run token.
- ``window.py`` - the pywebview (Qt) window; GUI imports stay inside its functions.
- ``cli.py`` - ``soma-shm app [FILE]`` and ``soma-shm serve [FILE] [--port N]``.
- ``initial.py`` - opening the FILE given on the command line (used by both modes).
- ``static/`` - the page: plain ES modules and Canvas 2D, no build step (``main.js`` wiring and
  tools, ``view.js`` geometry and rulers, ``partials.js`` the partials layer, list and edit
  tools' geometry, ``colormap.js`` the LUT (served from :mod:`soma_shm.imageio`'s table),
  ``api.js`` transport).

Nothing here is imported by ``import soma_shm``; workers never load this package.
"""

from __future__ import annotations

__all__ = ["SomaDocument", "AppBackend", "AppServer"]


def __getattr__(name: str):
    if name == "SomaDocument":
        from .document import SomaDocument

        return SomaDocument
    if name == "AppBackend":
        from .backend import AppBackend

        return AppBackend
    if name == "AppServer":
        from .server import AppServer

        return AppServer
    raise AttributeError(f"module 'soma_shm.app' has no attribute {name!r}")
