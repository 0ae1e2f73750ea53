"""A new user's first run: ``make demo`` in a fresh clone, setup included, timed end to end.

Each run clones the repository's committed HEAD into a new folder (the numba cache lives beside
the sources, so a fresh clone has none: every kernel is compiled), makes a virtual environment
that sees this Python's installed packages (``--system-site-packages``: the packages already on
the machine count as its state, as they do for a user who has them; the project itself is
installed into the environment by ``make setup``), and runs ``make demo`` with that environment
first on ``PATH``. Reported, medians of ``--repeats``: setup (Debian package check, ``pip install
-e`` and, alongside it, the kernels' compile), the compile as ``soma-shm warmup`` reports it, the
demo (and its open step as it reports it), and the whole.

``--empty-python`` also times ``pip install -e '.[extras]'`` into an empty virtual environment
(what a machine without any of the packages adds; needs the package index).

Usage::

    python perf/bench_firstrun.py                 # 3 fresh clones, make demo in each
    python perf/bench_firstrun.py --repeats 1 --empty-python
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _util  # noqa: E402

ROOT = HERE.parent
TARGET_S, OPEN_TARGET_S = 60.0, 5.0


def _env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def first_demo(tmp: Path) -> dict:
    """Clone, make a venv over this Python's packages, ``make demo``; seconds per step."""
    clone, venv = tmp / "fresh", tmp / "venv"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    marks: dict[str, float] = {}
    lines: list[str] = []
    t = time.perf_counter()
    proc = subprocess.Popen(["make", "demo"], cwd=clone, env=_env(venv), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:  # time stamps of the steps, as make starts them
        lines.append(line.rstrip("\n"))
        now = time.perf_counter() - t
        if "-m soma_shm demo" in line:
            marks.setdefault("demo_started", now)
    proc.wait()
    total = time.perf_counter() - t
    text = "\n".join(lines)
    if proc.returncode:
        raise SystemExit(f"make demo failed ({proc.returncode}):\n{text[-3000:]}")
    compiled = re.search(r"kernels compiled in ([\d.]+) s", text)
    opened = re.search(r"^open\s*:\s*([\d.]+) ms", text, re.M)
    return {
        "total_s": total,
        "setup_s": marks.get("demo_started", float("nan")),
        "compile_s": float(compiled.group(1)) if compiled else float("nan"),
        "demo_s": total - marks.get("demo_started", float("nan")),
        "demo_open_s": float(opened.group(1)) / 1000 if opened else float("nan"),
        "load_avg_1min": os.getloadavg()[0],
    }


def empty_python(tmp: Path) -> dict:
    """``pip install -e '.[extras]'`` into an empty virtual environment."""
    extras = re.search(r"^PIP_EXTRAS\s*=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    clone, venv = tmp / "fresh", tmp / "empty"
    if not clone.exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t = time.perf_counter()
    res = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e",
                          f"{clone}[{extras}]"], capture_output=True, text=True)
    out = {"extras": extras, "pip_install_s": time.perf_counter() - t, "ok": res.returncode == 0}
    if res.returncode:
        out["error"] = res.stderr[-2000:]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--empty-python", action="store_true",
                   help="also time pip installing the project into an empty virtual environment")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: give at least 1")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="soma_firstrun_") as tmp:
            r = first_demo(Path(tmp))
        runs.append(r)
        print(f"  run {i + 1}: make demo {r['total_s']:.1f} s (load {r['load_avg_1min']:.1f})", file=sys.stderr,
              flush=True)
    keys = [k for k in runs[0] if k != "load_avg_1min"]
    med = {k: _util.median([r[k] for r in runs]) for k in keys}
    results = {"machine": _util.machine(), "commit": head, "runs": runs, "median": med}
    rows = [[k, f"{med[k]:.2f}", " ".join(f"{r[k]:.1f}" for r in runs)] for k in keys]
    if args.empty_python:
        with tempfile.TemporaryDirectory(prefix="soma_firstrun_") as tmp:
            results["empty_python"] = e = empty_python(Path(tmp))
        rows.append([f"pip install -e .[{e['extras']}] into an empty venv", f"{e['pip_install_s']:.2f}",
                     "ok" if e["ok"] else "FAILED"])
    print(_util.table(rows, ["fresh clone, cold kernel cache", "median s", "runs s"]))
    print("packages already installed in this Python count as the machine's state (the venv sees them);")
    print("make setup installs the project itself into the venv and compiles every kernel.")
    loads = ", ".join(f"{r['load_avg_1min']:.1f}" for r in runs)
    print(f"targets: make demo <= {TARGET_S:.0f} s including setup "
          f"({'met' if med['total_s'] <= TARGET_S else 'MISSED'}), its open step <= {OPEN_TARGET_S:.0f} s "
          f"({'met' if med['demo_open_s'] <= OPEN_TARGET_S else 'MISSED'}); "
          f"load average during the runs: {loads}")
    print(f"wrote {_util.write_json('bench_firstrun.json', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
