"""IPC benchmark: the Engine side by side with the seed's per-request process and a thread design.

Designs (all compute the same ``cwt2`` image with the same kernels, so the differences are the
process architecture's):

- ``engine``: soma_shm.Engine (audio in shared memory once, persistent forkserver workers,
  results in shared slots, latest-wins by terminate-and-respawn with a warm spare);
- ``seed``: one spawned ``multiprocessing.Process`` per request with the audio pickled into its
  arguments and the image sent back through a ``Queue``; a newer request terminates the older
  process (the design of the original note);
- ``thread``: one ``threading.Thread`` per request computing in the caller's process; a thread
  cannot be stopped, so superseded threads run to the end.

Per design and file length (16-bit WAV files of 60 s and 1 h at 48 kHz; the engine decodes it
straight into shared memory, the other designs read it into an array as the seed app did):
submit -> result latency (median of
``--repeats``), the engine's overhead (latency minus kernel time), bytes through pipes per
request, the caller's main-thread stall (gaps of a 1 ms ticker thread: p99 and max; beside it the
same ticker in a separate process, the machine's own scheduling delay; for the engine, how long
its supervisor thread works per wake-up (wall and CPU time), how long the locks callers take are held, how long
worker starts take), zoom-storm
latency (20 viewport requests 50 ms apart: last request -> its result), peak RSS of the caller
and peak unique memory (USS) of its worker processes. Then the respawn latency per start method
(strict mode: terminate -> replacement ready; with a spare: cancel -> replacement computing), and
recovery: ``--kills`` SIGKILLs of the idle worker the next request goes to, each followed at once
by that request (how many succeed), and SIGSTOPped workers (time until replaced).

Usage::

    python perf/bench_ipc.py            # 60 s and 1 h files
    python perf/bench_ipc.py --quick    # 60 s and 5 min files, 3 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _util  # noqa: E402

FS = 48_000
VIEW = dict(fmin=20.0, fmax=20_000.0, width=1600, height=600)


# ------------------------------------------------------------------------------ seed design
def _seed_worker(request_id, audio, fs, t0, t1, queue):
    """The seed's worker function: the whole recording arrives pickled in the arguments."""
    import soma_shm

    t = time.perf_counter()
    mag = soma_shm.cwt_image(audio, fs, t0, t1, VIEW["fmin"], VIEW["fmax"], VIEW["width"], VIEW["height"], check_finite=False)
    image = soma_shm.tone_map(mag, 1.0)
    queue.put({"request_id": request_id, "image": image, "magnitude": mag, "kernel_s": time.perf_counter() - t})


class SeedDesign:
    def __init__(self, audio):
        self.audio = audio
        self.ctx = mp.get_context("spawn")
        self.queue = self.ctx.Queue()
        self.proc = None
        self.current = None

    def submit(self, rid, t0, t1):
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=1)
        self.current = rid
        self.proc = self.ctx.Process(target=_seed_worker, args=(rid, self.audio, FS, t0, t1, self.queue))
        self.proc.start()

    def wait(self, rid, timeout=600):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.queue.get(timeout=timeout)
            if msg["request_id"] == rid:
                return msg
        raise TimeoutError

    def worker_pids(self):
        return [self.proc.pid] if self.proc is not None and self.proc.is_alive() else []

    def close(self):
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


# ---------------------------------------------------------------------------- thread design
class ThreadDesign:
    def __init__(self, audio):
        self.audio = audio
        self.results = {}
        self.cv = threading.Condition()
        self.threads = []

    def _run(self, rid, t0, t1):
        import soma_shm

        t = time.perf_counter()
        mag = soma_shm.cwt_image(self.audio, FS, t0, t1, VIEW["fmin"], VIEW["fmax"], VIEW["width"], VIEW["height"], check_finite=False)
        image = soma_shm.tone_map(mag, 1.0)
        with self.cv:
            self.results[rid] = {"image": image, "kernel_s": time.perf_counter() - t}
            self.cv.notify_all()

    def submit(self, rid, t0, t1):
        th = threading.Thread(target=self._run, args=(rid, t0, t1), daemon=True)
        self.threads.append(th)
        th.start()

    def wait(self, rid, timeout=600):
        with self.cv:
            self.cv.wait_for(lambda: rid in self.results, timeout)
            return self.results.pop(rid)

    def worker_pids(self):
        return []

    def close(self):
        for th in self.threads:
            th.join()


# ---------------------------------------------------------------------------- engine design
class EngineDesign:
    def __init__(self, audio):
        import soma_shm

        # The designs are compared on the same work: none of the others builds a file's STFT
        # pyramid (about 1/7 of the audio, in the caller), so the engine does not either here;
        # perf/bench_long.py measures the engine with it against issue 6's memory budget.
        self.engine = soma_shm.Engine(pyramid=False)
        self.engine.open(audio)
        self.engine.wait_ready(120)
        self.handles = {}

    def submit(self, rid, t0, t1):
        self.handles[rid] = self.engine.submit_viewport(t0, t1, method="cwt", **VIEW)

    def wait(self, rid, timeout=600):
        handle = self.handles.pop(rid)
        res = handle.result(timeout)
        out = {"image": res.image, "kernel_s": res.timings["kernel_s"], "overhead_s": res.timings["overhead_s"]}
        res.release()
        return out

    def worker_pids(self):
        return self.engine.worker_pids()

    def mark(self):
        self._mark = self.engine.stats()["viewport"]

    def bytes_per_request(self):
        """Bytes both ways per request since :meth:`mark` (the one-by-one requests: no respawn
        or superseded request in between)."""
        s, m = self.engine.stats()["viewport"], self._mark
        sent = s["messages_sent"] - m["messages_sent"]
        return (s["bytes_sent"] + s["bytes_received"] - m["bytes_sent"] - m["bytes_received"]) / max(1, sent)

    def close(self):
        self.engine.close()


DESIGNS = {"engine": EngineDesign, "seed": SeedDesign, "thread": ThreadDesign}


# ------------------------------------------------------------------------------ measuring
_REF_TICKER = """
import json, select, sys, time
print("ready", flush=True)
gaps, last = [], time.perf_counter()
while not select.select([sys.stdin], [], [], 0)[0]:
    time.sleep(0.001)
    now = time.perf_counter()
    gaps.append(now - last - 0.001)
    last = now
print(json.dumps(gaps))
"""


class Ticker:
    """A thread that sleeps 1 ms in a loop and records how late it wakes (the caller's stall).

    Beside it, over the same interval, the same loop runs in a separate process (``ref_gaps``):
    how late the machine's scheduler alone wakes a thread that shares no interpreter with the
    design. On a loaded machine that is the floor no design can go below; the caller's stall
    above it is what the design itself costs (the GIL held by its threads).
    """

    def __init__(self):
        import subprocess

        self.gaps = []
        self.ref_gaps = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._ref = subprocess.Popen([sys.executable, "-c", _REF_TICKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self._ref.stdout.readline()  # ticking

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            self.gaps.append(now - last - 0.001)
            last = now

    def __enter__(self):
        self._th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._th.join()
        out, _ = self._ref.communicate("stop\n", timeout=60)
        self.ref_gaps = json.loads(out)

    def figures(self, prefix: str = "stall") -> dict:
        """p99 and max of the caller's gaps and of the reference's, in ms."""
        out = {}
        for name, gaps in ((prefix, self.gaps), (f"{prefix}_ref", self.ref_gaps)):
            g = np.array(gaps) * 1000
            out[f"{name}_p99_ms"] = float(np.percentile(g, 99)) if len(g) else float("nan")
            out[f"{name}_max_ms"] = float(g.max()) if len(g) else float("nan")
        return out


class _TimedLock:
    """A lock that records how long each holder kept it."""

    def __init__(self, holds: list):
        self._lock, self._holds = threading.Lock(), holds

    def __enter__(self):
        self._lock.acquire()
        self._t = time.perf_counter()

    def __exit__(self, *exc):
        self._holds.append(time.perf_counter() - self._t)
        self._lock.release()


class SupervisorProbe:
    """Engine only: where the caller's stall could come from inside the caller's process.

    Records, while active, how long the supervisor thread works per wake-up (from the return of
    its wait to its next wait: the only stretches in which it holds the GIL), how long each of
    the two locks callers take (inbox, snapshot) is held, and how long starting a worker takes
    (``Worker.start``, on the supervisor's launcher thread: the supervisor goes on meanwhile).
    """

    def __init__(self, engine):
        import multiprocessing.connection as mpc

        from soma_shm.ipc import workers

        self.busy, self.busy_cpu, self.lock_holds, self.starts = [], [], [], []
        self.active = False
        sup = engine._sup
        sup._lock, sup._snap_lock = _TimedLock(self.lock_holds), _TimedLock(self.lock_holds)
        wait, start = mpc.wait, workers.Worker.start
        probe, woke = self, [None, 0.0]

        def timed_wait(objects, timeout=None):
            mine = threading.current_thread() is sup._thread
            if mine and probe.active and woke[0] is not None:
                probe.busy.append(time.perf_counter() - woke[0])
                probe.busy_cpu.append(time.thread_time() - woke[1])
            try:
                return wait(objects, timeout)
            finally:
                if mine:
                    woke[0], woke[1] = time.perf_counter(), time.thread_time()

        def timed_start(role, ctx, options):
            t = time.perf_counter()
            try:
                return start(role, ctx, options)
            finally:
                if probe.active:
                    probe.starts.append(time.perf_counter() - t)

        mpc.wait = timed_wait
        workers.Worker.start = staticmethod(timed_start)

    def __enter__(self):
        self.busy.clear()
        self.busy_cpu.clear()
        self.lock_holds.clear()
        self.starts.clear()
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False

    def figures(self, prefix: str) -> dict:
        def ms(values, q):
            return float(np.percentile(np.array(values) * 1000, q)) if values else 0.0

        return {f"{prefix}_supervisor_busy_p99_ms": ms(self.busy, 99),
                f"{prefix}_supervisor_busy_max_ms": ms(self.busy, 100),
                f"{prefix}_supervisor_cpu_p99_ms": ms(self.busy_cpu, 99),
                f"{prefix}_supervisor_cpu_max_ms": ms(self.busy_cpu, 100),
                f"{prefix}_supervisor_wakeups": len(self.busy),
                f"{prefix}_lock_hold_max_ms": ms(self.lock_holds, 100),
                f"{prefix}_worker_starts": len(self.starts),
                f"{prefix}_worker_start_median_ms": ms(self.starts, 50)}


_SAMPLER = """
import os, sys, time, psutil
root = psutil.Process(int(sys.argv[1]))
peak = 0.0
import select
while not select.select([sys.stdin], [], [], 0.02)[0]:
    for p in root.children(recursive=True):
        if p.pid == os.getpid():  # this sampler
            continue
        try:
            cmd = " ".join(p.cmdline())
            # Skip the forkserver itself (a direct child) but not the workers it forks: they
            # inherit its command line.
            if "resource_tracker" in cmd or ("forkserver" in cmd and p.ppid() == root.pid):
                continue
            peak = max(peak, p.memory_full_info().uss / 2**20)
        except (psutil.Error, OSError):
            pass
print(peak)
"""


class MemorySampler:
    """Peak USS of the caller's worker processes, sampled every 20 ms by a separate process
    (reading /proc/<pid>/smaps of a process that maps a large block takes tens of ms; doing it
    in the caller would show up as the caller's own stall)."""

    def __init__(self):
        self.peak_uss = 0.0

    def __enter__(self):
        import subprocess

        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SAMPLER, str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return self

    def __exit__(self, *exc):
        out, _ = self._proc.communicate("stop\n", timeout=60)
        self.peak_uss = float(out.strip() or 0.0)


def child(design: str, audio_path: str, repeats: int) -> dict:
    """Measure one design on one file (a 16-bit WAV, opened the way each design would)."""
    base_rss = _util.rss_mb()
    if design == "engine":
        d = EngineDesign(audio_path)  # decoded straight into shared memory
        audio = d.engine.audio
    else:
        import soundfile as sf

        audio = sf.read(audio_path, dtype="float32")[0]  # the seed app's own copy of the file
        d = DESIGNS[design](audio)
    duration = len(audio) / FS
    out: dict = {"design": design, "seconds": duration}
    rid = 0
    try:
        with MemorySampler() as mem:
            # Warm-up (the seed pays this on every request; the others once).
            rid += 1
            d.submit(rid, 10.0, 12.0)
            d.wait(rid)
            lat, kernel, overhead = [], [], []
            probe = SupervisorProbe(d.engine) if isinstance(d, EngineDesign) else None
            if isinstance(d, EngineDesign):
                d.mark()
            with Ticker() as tick, (probe or contextlib.nullcontext()):
                for i in range(repeats):
                    rid += 1
                    t0 = 10.0 + 0.37 * i
                    t = time.perf_counter()
                    d.submit(rid, t0, t0 + 2.0)
                    res = d.wait(rid)
                    lat.append(time.perf_counter() - t)
                    kernel.append(res["kernel_s"])
                    if "overhead_s" in res:
                        overhead.append(res["overhead_s"])
            if isinstance(d, EngineDesign):
                out["pipe_bytes_per_request"] = d.bytes_per_request()
            out.update(
                latency_s=_util.median(lat),
                kernel_s=_util.median(kernel),
                overhead_ms=_util.median(overhead) * 1000 if overhead else _util.median(lat) * 1000 - _util.median(kernel) * 1000,
                **tick.figures("stall"),
            )
            if probe is not None:
                out.update(probe.figures("requests"))
            # Zoom storm: 20 requests 50 ms apart; time from the last one to its result.
            with Ticker() as tick, (probe or contextlib.nullcontext()):
                ids = []
                for i in range(20):
                    rid += 1
                    ids.append(rid)
                    t0 = 5.0 + 0.05 * i
                    d.submit(rid, t0, t0 + 2.0)
                    last_submit = time.perf_counter()
                    time.sleep(0.05)
                res = d.wait(ids[-1])
                out["storm_last_s"] = time.perf_counter() - last_submit
                out["storm_kernel_s"] = res["kernel_s"]
            out.update(tick.figures("storm_stall"))
            if probe is not None:
                out.update(probe.figures("storm"))
            if isinstance(d, EngineDesign):
                pass  # measured over the one-by-one requests above
            elif isinstance(d, SeedDesign):
                out["pipe_bytes_per_request"] = float(audio.nbytes + 5 * VIEW["width"] * VIEW["height"])
            else:
                out["pipe_bytes_per_request"] = 0.0
            out["audio_mb"] = audio.nbytes / 2**20
        out["worker_peak_uss_mb"] = mem.peak_uss
    finally:
        d.close()
    out["parent_peak_rss_mb"] = _util.peak_rss_mb()
    out["parent_peak_extra_mb"] = _util.peak_rss_mb() - base_rss
    return out


def child_respawn(method: str, repeats: int) -> dict:
    """Strict mode: terminate the busy worker, time until the replacement is ready; and with a
    spare: time from cancelling a computing request to the replacement computing."""
    import soma_shm
    from tests import worker_tasks

    audio = _util.recording(20.0, FS, seed=2)
    res = {"method": method}
    with soma_shm.Engine(start_method=method, spares=False) as eng:
        eng.open(audio, sample_rate=FS)
        eng.wait_ready(120)
        times = []
        for _ in range(repeats):
            h = worker_tasks.submit(eng, "viewport", "sleep", seconds=10.0)
            while not eng.stats()["viewport"]["busy"]:
                time.sleep(0.001)
            busy = eng.stats()["viewport"]["busy_pid"]
            t = time.perf_counter()
            h.cancel()  # ends the handle at once; the supervisor then terminates its worker
            while True:
                st = eng.stats()["viewport"]
                if busy not in st["workers"] and st["ready"] >= 1:
                    break
                time.sleep(0.0005)
            times.append(time.perf_counter() - t)
        res["strict_cancel_to_ready_s"] = _util.median(times)
    with soma_shm.Engine(start_method=method, spares=True) as eng:
        eng.open(audio, sample_rate=FS)
        eng.wait_ready(120)
        times = []
        for _ in range(repeats):
            h = worker_tasks.submit(eng, "viewport", "sleep", seconds=10.0)
            while not eng.stats()["viewport"]["busy"]:
                time.sleep(0.001)
            t = time.perf_counter()
            h2 = worker_tasks.submit(eng, "viewport", "sleep", seconds=0.0)  # supersedes h; the spare takes it
            h2.result(60)
            times.append(time.perf_counter() - t)
            eng.wait_ready(120)
        res["spare_takeover_s"] = _util.median(times)
    return res


def child_recovery(kills: int, stops: int) -> dict:
    """Kill an idle worker (the one the next request goes to) and submit at once, ``kills`` times
    (half with spares, half strict; viewport and snap in turn): how many requests succeed. Then
    SIGSTOP an idle worker ``stops`` times: time until it is gone and the role has its ready
    workers again."""
    import signal

    import soma_shm

    audio = _util.recording(20.0, FS, seed=3)
    res: dict = {"kills": 0, "succeeded": 0, "failures": []}
    for spares in (True, False):
        with soma_shm.Engine(spares=spares) as eng:
            eng.open(audio, sample_rate=FS)
            for i in range(kills // 2):
                role = ("viewport", "snap")[i % 2]
                if not eng.wait_ready(60):
                    raise RuntimeError("workers did not come back")
                os.kill(eng.stats()[role]["idle_pids"][0], signal.SIGKILL)
                res["kills"] += 1
                try:
                    if role == "viewport":
                        eng.submit_viewport(1.0, 1.5, 100, 5_000, 200, 100).result(timeout=60)
                    else:
                        eng.submit_snap([(1.0, 440.0), (1.5, 440.0)]).result(timeout=60)
                    res["succeeded"] += 1
                except Exception as exc:  # counted, not raised: the figure is the success rate
                    res["failures"].append(f"{type(exc).__name__}: {exc}")
            res.setdefault("retries", 0)
            res["retries"] += sum(eng.stats()[r]["retries"] for r in ("viewport", "snap"))
    replaced = []
    with soma_shm.Engine(spares=False) as eng:
        eng.open(audio, sample_rate=FS)
        for _ in range(stops):
            if not eng.wait_ready(60):
                raise RuntimeError("workers did not come back")
            victim = eng.stats()["viewport"]["idle_pids"][0]
            t = time.perf_counter()
            os.kill(victim, signal.SIGSTOP)
            while victim in eng.worker_pids() or not eng.wait_ready(0.0005):
                time.sleep(0.001)
            replaced.append(time.perf_counter() - t)
    res["stopped_replaced_s"] = _util.median(replaced)
    res["stopped_replaced_max_s"] = max(replaced)
    return res


def check_targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """The engine's figures against the targets of issue 3: (target, measured, met or None
    for a reference figure that is not a target)."""
    runs = [r for r in results["runs"] if r["design"] == "engine"]
    longest = max(runs, key=lambda r: r["seconds"])
    out = []
    pipe = [r["pipe_bytes_per_request"] for r in runs]
    out.append(("pipe bytes per request < 4096, independent of file length",
                " / ".join(f"{b:.0f} B ({r['seconds']:.0f} s)" for b, r in zip(pipe, runs)),
                max(pipe) < 4096 and max(pipe) - min(pipe) < 64))
    for r in runs:
        out.append((f"engine overhead <= 2 ms median ({r['seconds']:.0f} s file)", f"{r['overhead_ms']:.2f} ms",
                    r["overhead_ms"] <= 2.0))
    for r in runs:
        worst = max(r["stall_max_ms"], r["storm_stall_max_ms"])
        out.append((f"caller stall p99 <= 5 ms, max <= 20 ms ({r['seconds']:.0f} s file)",
                    f"p99 {r['stall_p99_ms']:.1f} ms, max {worst:.1f} ms (a separate process on this machine "
                    f"at the same time: p99 {r['stall_ref_p99_ms']:.1f} ms, max "
                    f"{max(r['stall_ref_max_ms'], r['storm_stall_ref_max_ms']):.1f} ms)",
                    r["stall_p99_ms"] <= 5 and worst <= 20))
    for r in runs:
        excess = (r["storm_last_s"] - r["storm_kernel_s"]) * 1000
        out.append((f"zoom storm: last result within kernel + 100 ms ({r['seconds']:.0f} s file)",
                    f"kernel + {excess:.0f} ms", excess <= 100))
    for r in results.get("respawn", []):
        # Plain spawn re-imports numpy/numba/kernels in every new worker: without a spare it is
        # the slow reference the forkserver exists for, not a target.
        ok = r["strict_cancel_to_ready_s"] <= 0.1 if r["method"] == "forkserver" else None
        out.append((f"cancel -> replacement ready <= 100 ms ({r['method']}, no spare)",
                     f"{r['strict_cancel_to_ready_s'] * 1000:.0f} ms", ok))
        out.append((f"cancel -> replacement done <= 100 ms ({r['method']}, warm spare)",
                     f"{r['spare_takeover_s'] * 1000:.0f} ms", r["spare_takeover_s"] <= 0.1))
    rec = results.get("recovery")
    if rec:
        out.append((f"request right after a worker death succeeds: 100 % over {rec['kills']} kills",
                    f"{100 * rec['succeeded'] / rec['kills']:.1f} % ({rec['succeeded']}/{rec['kills']})",
                    rec["succeeded"] == rec["kills"] and rec["kills"] >= 200))
        out.append(("stopped (SIGSTOP) worker replaced <= 1 s",
                    f"median {rec['stopped_replaced_s'] * 1000:.0f} ms, max {rec['stopped_replaced_max_s'] * 1000:.0f} ms",
                    rec["stopped_replaced_s"] <= 1.0))
    budget = longest["audio_mb"] + 250
    out.append((f"caller peak RSS <= audio + 250 MB ({longest['seconds']:.0f} s file: {budget:.0f} MB)",
                f"{longest['parent_peak_rss_mb']:.0f} MB", longest["parent_peak_rss_mb"] <= budget))
    uss = max(r["worker_peak_uss_mb"] for r in runs)
    out.append(("each worker's USS <= 200 MB regardless of file length",
                " / ".join(f"{r['worker_peak_uss_mb']:.0f} MB ({r['seconds']:.0f} s)" for r in runs), uss <= 200))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", nargs=2, metavar=("DESIGN", "AUDIO"), help=argparse.SUPPRESS)
    p.add_argument("--child-respawn", metavar="METHOD", help=argparse.SUPPRESS)
    p.add_argument("--child-recovery", nargs=2, type=int, metavar=("KILLS", "STOPS"), help=argparse.SUPPRESS)
    p.add_argument("--kills", type=int, default=200, help="worker kills for the recovery figure (default 200)")
    args = p.parse_args(argv)
    if args.child_recovery:
        print(json.dumps(child_recovery(*args.child_recovery)))
        return 0
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.repeats)))
        return 0
    if args.child_respawn:
        print(json.dumps(child_respawn(args.child_respawn, args.repeats)))
        return 0

    repeats = 3 if args.quick else args.repeats
    lengths = [60.0, 300.0] if args.quick else [60.0, 3600.0]
    results = {"machine": _util.machine(), "repeats": repeats, "runs": []}
    rows = []
    with tempfile.TemporaryDirectory(prefix="soma_ipc_") as tmp:
        for seconds in lengths:
            import soundfile as sf

            path = Path(tmp) / f"audio_{int(seconds)}.wav"
            with sf.SoundFile(path, "w", FS, 1, subtype="PCM_16") as f:
                for start in range(0, int(seconds), 600):
                    f.write(_util.recording(min(600.0, seconds - start), FS, seed=start))
            for design in ("engine", "seed", "thread"):
                print(f"  {design:7s} {seconds:6.0f} s ...", file=sys.stderr, flush=True)
                r = _util.run_json([__file__, "--child", design, str(path), "--repeats", str(repeats)], timeout=5400)
                results["runs"].append(r)
                rows.append([
                    design, int(seconds), r["latency_s"] * 1000, r["overhead_ms"], r["pipe_bytes_per_request"],
                    r["stall_p99_ms"], r["stall_ref_p99_ms"], r["stall_max_ms"], r["storm_last_s"] * 1000, r["storm_kernel_s"] * 1000,
                    r["parent_peak_rss_mb"], r["worker_peak_uss_mb"],
                ])
            path.unlink()
    print()
    print(_util.table(rows, [
        "design", "file s", "latency ms", "overhead ms", "pipe B/request", "stall p99 ms", "machine's own p99 ms", "stall max ms",
        "storm last->result ms", "its kernel ms", "caller peak RSS MB", "worker peak USS MB",
    ]))
    print()
    print(_util.table([[int(r["seconds"]), phase, r[f"{key}_p99_ms"], r[f"{key}_ref_p99_ms"], r[f"{phase}_supervisor_busy_p99_ms"],
                        r[f"{phase}_supervisor_busy_max_ms"], r[f"{phase}_supervisor_cpu_p99_ms"],
                        r[f"{phase}_supervisor_cpu_max_ms"], r[f"{phase}_lock_hold_max_ms"], r[f"{phase}_worker_starts"],
                        r[f"{phase}_worker_start_median_ms"]]
                       for r in results["runs"] if r["design"] == "engine"
                       for phase, key in (("requests", "stall"), ("storm", "storm_stall"))],
                      ["engine: file s", "phase", "caller stall p99 ms", "separate process p99 ms",
                       "supervisor work per wake-up p99 ms", "max ms", "its CPU p99 ms", "CPU max ms", "lock held max ms", "worker starts",
                       "worker start median ms (launcher)"]))
    resp_rows = []
    for method in ("forkserver", "spawn"):
        r = _util.run_json([__file__, "--child-respawn", method, "--repeats", str(repeats)])
        results.setdefault("respawn", []).append(r)
        resp_rows.append([method, r["strict_cancel_to_ready_s"] * 1000, r["spare_takeover_s"] * 1000])
    print()
    print(_util.table(resp_rows, ["start method", "strict: cancel -> new worker ready ms", "spare: cancel -> replacement done ms"]))
    rec = results["recovery"] = _util.run_json([__file__, "--child-recovery", str(args.kills), str(max(5, repeats * 2))])
    print()
    print(_util.table([[rec["kills"], rec["succeeded"], rec["retries"], rec["stopped_replaced_s"] * 1000,
                        rec["stopped_replaced_max_s"] * 1000]],
                      ["idle worker kills", "next request ok", "requests retried", "stopped -> replaced ms (median)",
                       "max ms"]))
    checks = check_targets(results)
    results["targets"] = [dict(zip(("target", "measured", "ok"), c)) for c in checks]
    print()
    print(_util.table([[t, m, {True: "yes", False: "NO", None: "(reference)"}[ok]] for t, m, ok in checks], ["target (issues 3, 11)", "measured", "met"]))
    path = _util.write_json("bench_ipc.json", results)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
