"""Small helpers shared by the perf/ scripts: seeded test recordings, timing, memory, reports."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def recording(seconds: float, fs: int = 48_000, seed: int = 0, chunk_seconds: float = 60.0) -> np.ndarray:
    """A seeded, music-like mono recording (float32): harmonic notes with vibrato, a glide,
    background noise and clicks. Built in chunks so an hour needs only the output's memory."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    out = np.empty(n, dtype=np.float32)
    chunk = int(chunk_seconds * fs)
    notes = rng.uniform(80.0, 900.0, size=16)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        t = np.arange(start, stop, dtype=np.float64) / fs
        f0 = notes[int(t[0] // 4.0) % len(notes)]
        phase = 2 * np.pi * (f0 * t + (f0 * 0.01 / 5.0) * np.sin(2 * np.pi * 5.0 * t))
        x = np.zeros_like(t)
        for h in range(1, 9):
            if h * f0 * 1.02 < fs / 2:
                x += (0.3 / h) * np.sin(h * phase)
        x += 0.05 * np.sin(2 * np.pi * (200.0 * t + 400.0 * ((t % 7.0) ** 2) / 2))
        x += 0.003 * rng.standard_normal(len(t))
        clicks = rng.integers(0, len(t), size=max(1, len(t) // fs))
        x[clicks] += rng.uniform(-0.5, 0.5, size=len(clicks))
        out[start:stop] = x
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Run ``fn`` ``repeats`` times; return the wall times and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MiB): since :func:`reset_peak_rss` where Linux
    allows resetting it, else since the process started."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> None:
    """Reset the peak-RSS mark to the current RSS (Linux: ``5 > /proc/self/clear_refs``), so a
    later :func:`peak_rss_mb` measures only what follows (not, say, building the input)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux or not permitted
        pass


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
    """Run ``python args...`` in a fresh process; its last stdout line is a JSON object."""
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        if c != c:
            return "-"
        return f"{c:.4g}" if abs(c) < 1000 else f"{c:.0f}"
    return str(c)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
