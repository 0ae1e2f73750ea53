"""Batch pipelines: in-process, through an Engine and on a Dask LocalCluster give identical images;
the render/snap command lines."""

from __future__ import annotations

import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import soma_shm
from soma_shm.demo_audio import demo_recording
from soma_shm.pipeline import render_file, render_files, snap_file

FS = 48_000
KW = dict(t0=1.0, t1=3.0, fmin=40.0, width=300, height=80)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    paths = []
    for i, fmt in enumerate(["wav", "flac", "ogg", "wav"]):
        p = d / f"take{i}.{fmt}"
        x = demo_recording(4.0, FS, seed=i)
        sf.write(p, np.stack([x, 0.5 * x], axis=1) if i == 3 else x, FS)
        paths.append(str(p))
    return paths


def _same(a, b):
    return all(np.array_equal(x.magnitude, y.magnitude) and np.array_equal(x.image, y.image) for x, y in zip(a, b))


def test_render_file_is_the_kernel_and_the_reference_level(files):
    r = render_file(files[0], **KW)
    audio, fs = soma_shm.load_audio(files[0])
    want = soma_shm.cwt_image(audio, fs, 1.0, 3.0, 40.0, 20_000.0, 300, 80)
    np.testing.assert_array_equal(r.magnitude, want)
    ref = soma_shm.render.reference_level(audio, fs)
    np.testing.assert_array_equal(r.image, soma_shm.tone_map(want, ref))
    assert (r.method, r.amp_reference, r.fmax) == ("cwt", ref, 20_000.0)


def test_engine_and_in_process_batches_are_identical(files, tmp_path, no_leaks):
    a = render_files(files, **KW)
    long = tmp_path / "long.wav"
    sf.write(long, demo_recording(40.0, FS, seed=9), FS)
    with soma_shm.Engine(pyramid=False) as eng:
        b = render_files(files, engine=eng, out_dir=tmp_path, png=True, npy=True, **KW)
        wide = render_files([str(long)], engine=eng, method="stft")  # 40 s: an STFT view
    assert _same(a, b)
    assert _same(render_files([str(long)], method="stft"), wide)
    for r in b:
        png, npy = r.outputs
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        np.testing.assert_array_equal(np.load(npy), r.magnitude)


def test_dask_local_cluster_matches_bit_for_bit(files, tmp_path):
    pytest.importorskip("dask.distributed")
    from soma_shm.pipeline.distributed import render_files_dask

    a = render_files(files, method="stft", **KW)
    b = render_files_dask(files, n_workers=2, method="stft", out_dir=tmp_path, png=True, **KW)
    assert _same(a, b)
    assert [r.source for r in b] == files
    assert all((tmp_path / f"take{i}.png").exists() for i in range(4))


def test_snap_many_traces_on_one_file(files):
    parts = snap_file(files[0], [[(0.3, 222.0), (0.9, 218.0)], [(0.3, 445.0), (0.9, 436.0)]])
    assert [p.shape for p in parts] == [(61, 3), (61, 3)]
    assert abs(np.median(parts[1][:, 1]) / np.median(parts[0][:, 1]) - 2.0) < 0.01  # the 2nd harmonic


def _run(*args):
    return subprocess.run([sys.executable, "-m", "soma_shm", *args], capture_output=True, text=True, timeout=300)


def test_cli_render_and_snap(files, tmp_path):
    out = tmp_path / "img.png"
    res = _run("render", files[1], "--start", "1", "--end", "2", "--width", "200", "--height", "50",
               "--method", "stft", "-o", str(out), "--npy", str(tmp_path / "m.npy"))
    assert res.returncode == 0, res.stderr
    data = out.read_bytes()
    assert struct.unpack(">II", data[16:24]) == (200, 50)
    assert np.load(tmp_path / "m.npy").shape == (50, 200)
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,frequency_hz\n0.3,225\n0.9,216\n")
    res = _run("snap", files[0], "--trace", str(trace), "-o", str(tmp_path / "p.csv"))
    assert res.returncode == 0, res.stderr
    pts = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert pts.shape == (61, 3) and abs(np.median(pts[:, 1]) - 220.0) < 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["render", "missing.wav"], "does not exist"),
        (["render", "{f}", "--start", "3", "--end", "1"], "t0=3.0 must be before t1=1.0"),
        (["render", "{f}", "--fmax", "30000"], "above Nyquist"),
        (["snap", "{f}", "--trace", "{bad}", "-o", "x.csv"], "expected 'time_s,frequency_hz'"),
        (["snap", "{f}", "--trace", "{one}", "-o", "x.csv"], "trace has 1 point"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(files, tmp_path, args, message):
    (tmp_path / "bad.csv").write_text("0.1,200\nnot,a number\n")
    (tmp_path / "one.csv").write_text("0.1,200\n")
    args = [a.format(f=files[0], bad=tmp_path / "bad.csv", one=tmp_path / "one.csv") for a in args]
    res = _run(*args)
    assert res.returncode == 2 and message in res.stderr
