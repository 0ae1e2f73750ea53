"""The ``soma-shm`` command line: a thin dispatcher.

Each sub-command lives in its own module, which defines ``register(subparsers)``; registering
adds its parser and sets ``func`` (called with the parsed namespace, returns an exit code).
Modules are imported only to build the parser, and heavy imports stay inside each ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SomaError

# (module, ...) in the order they appear in --help.
COMMAND_MODULES = (
    "soma_shm.demo",
    "soma_shm.app.cli",
    "soma_shm.pipeline.cli",
    "soma_shm.export",
    "soma_shm.warmup",
)
# The command line must not start an Engine at import: workers re-import soma_shm.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soma-shm",
        description="Shared-memory CWT/STFT spectrogram and partial-snapping engine for audio.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SomaError as exc:
        print(f"soma-shm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the command reads or writes (checked up front where possible)
        name = exc.filename if exc.filename is not None else ""
        print(f"soma-shm {args.command}: error: cannot use {str(name)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"soma-shm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
