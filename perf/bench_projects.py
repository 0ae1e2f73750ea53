"""Project files at SOMA's scale: saving, reading and writing the recovery file of a document of
``--partials`` partials (default 10,000, ``--points`` points each, seeded), with the point arrays
written straight from numpy (orjson) beside the standard JSON encoder on the same document.

- ``save``: :func:`soma_shm.app.persistence.write_project` (atomic write included);
- ``save (standard json)``: the same with the standard encoder (orjson hidden);
- ``read``: :func:`soma_shm.app.document.read_project` of the saved file;
- ``recovery``: :meth:`soma_shm.app.persistence.Recovery.write` (snapshot + write), what the
  autosaver does in the background after an edit.

Every figure is a median of ``--repeats`` runs; the file size is printed too.

Usage::

    python perf/bench_projects.py [--repeats 5] [--partials 10000] [--points 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _util import machine, median, table, timed, write_json  # noqa: E402


def document(n: int, k: int, seed: int = 0):
    from soma_shm.app.document import PALETTE, Partial, SomaDocument

    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        t0 = rng.uniform(0, 600)
        t = t0 + np.arange(k) * 0.01
        f = rng.uniform(50, 5000) * 2 ** (rng.normal(0, 0.01, k).cumsum() / 12)
        a = rng.uniform(0.01, 0.4) * np.hanning(k + 2)[1:-1]
        pts = np.column_stack([t, f, a])
        pts.flags.writeable = False
        parts.append(Partial(f"p{i + 1}", pts, PALETTE[i % len(PALETTE)], False))
    doc = SomaDocument()
    doc.partials = parts
    doc.set_recording(48_000, 610.0, amp_reference=0.42)
    doc.dirty = True
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--partials", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=100)
    args = ap.parse_args()

    from soma_shm.app import persistence
    from soma_shm.app.document import read_project

    doc = document(args.partials, args.points)
    rows, results = [], {"machine": machine(), "partials": args.partials, "points": args.points,
                         "orjson": persistence._orjson is not None}
    with tempfile.TemporaryDirectory() as tmp:
        fast = Path(tmp) / "fast.soma"
        save_s, _ = timed(lambda: persistence.write_project(doc, fast), args.repeats)
        read_s, loaded = timed(lambda: read_project(fast), args.repeats)
        rec = persistence.Recovery(Path(tmp) / "state")
        rec_s, _ = timed(lambda: rec.write(doc), args.repeats)
        orjson = persistence._orjson
        persistence._orjson = None
        try:
            plain = Path(tmp) / "plain.soma"
            plain_s, _ = timed(lambda: persistence.write_project(doc, plain), max(1, min(args.repeats, 3)))
        finally:
            persistence._orjson = orjson
        same = all(np.allclose(a.points, b.points, rtol=1e-15, atol=0)
                   for a, b in zip(loaded.document.partials, doc.partials))
        sizes = {"fast_mb": os.path.getsize(fast) / 1e6, "plain_mb": os.path.getsize(plain) / 1e6}
    results.update(save_s=median(save_s), read_s=median(read_s), recovery_s=median(rec_s),
                   save_standard_json_s=median(plain_s), ratio=median(plain_s) / median(save_s),
                   read_back_equal=same, **sizes)
    rows.append(["save", median(save_s), sizes["fast_mb"]])
    rows.append(["save (standard json)", median(plain_s), sizes["plain_mb"]])
    rows.append(["read", median(read_s), sizes["fast_mb"]])
    rows.append(["recovery write", median(rec_s), float("nan")])
    print(table(rows, ["step", "median s", "file MB"]))
    print(f"\n{args.partials} partials x {args.points} points: save {results['save_s']:.3f} s vs "
          f"{results['save_standard_json_s']:.3f} s with the standard encoder = {results['ratio']:.1f}x; "
          f"read {results['read_s']:.3f} s; points read back equal: {same}")
    print("wrote", write_json("bench_projects.json", results))


if __name__ == "__main__":
    main()
