"""``soma-shm app`` (pywebview window) and ``soma-shm serve`` (browser mode) sub-commands.

GUI toolkits are imported only inside :func:`run_app`: workers re-import soma_shm and must never
load them.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="open the desktop app (pywebview window) on FILE")
    p.add_argument("file", nargs="?", help="audio file or .soma project to open")
    p.add_argument("--self-test", type=float, default=None, metavar="SECONDS",
                   help="open FILE (or the demo recording), wait until the overview is on screen, "
                        "play a second of it (Space), print a JSON report and quit (fails after SECONDS)")
    p.set_defaults(func=run_app)
    s = sub.add_parser("serve", help="serve the app to a browser on 127.0.0.1 (URL with token printed first)")
    s.add_argument("file", nargs="?", help="audio file or .soma project to open")
    s.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    s.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from .backend import AppBackend
    from .initial import open_initial
    from .server import AppServer

    stop = threading.Event()
    # Before anything can be seen from outside: a SIGTERM right after the URL is printed must stop
    # the server cleanly, not kill it half-started.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    backend = AppBackend(freeze_heap=True)
    try:
        server = AppServer(backend, port=args.port).start()
        try:
            print(server.url, flush=True)
            open_initial(backend, args.file)
            print("serving on 127.0.0.1 only; press Ctrl+C to stop", file=sys.stderr, flush=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            server.stop()
    finally:
        backend.close()
    # Everything is closed and the process is about to exit: the garbage collector need not walk
    # the compiled kernels and numba's caches at interpreter exit (seconds of CPU after SIGTERM).
    gc.freeze()
    return 0


def run_app(args: argparse.Namespace) -> int:
    from .window import run_window

    return run_window(args.file, self_test=args.self_test)
