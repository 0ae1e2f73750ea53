"""The README's first quick-start command: the demo renders two PNG files."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest


def test_demo_writes_overview_and_viewport_png(tmp_path, no_leaks):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "soma_shm", "demo", "--out", str(out), "--width", "400", "--height", "200"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "viewport" in res.stdout and "CWT 400x200" in res.stdout
    for name, (w, h) in {"overview.png": (400, 100), "viewport.png": (400, 200)}.items():
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (w, h)


def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "soma_shm", "demo", str(tmp_path / "missing.wav"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    assert "does not exist" in res.stderr


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory):
    import numpy as np
    import soundfile as sf

    path = tmp_path_factory.mktemp("cli") / "tone.wav"
    fs = 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * np.arange(fs) / fs)).astype(np.float32), fs)
    return path


def _cli(capsys, *argv):
    from soma_shm.cli import main

    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["render", "{wav}", "-o", "{tmp}"], "-o/--output '{tmp}' is a folder; name a file to write"),
    (["render", "{wav}", "-o", "{tmp}/missing/view.png"], "the folder '{tmp}/missing' does not exist"),
    (["render", "{wav}", "-o", "{tmp}/v.png", "--npy", "{tmp}"], "--npy '{tmp}' is a folder"),
    (["render", "{wav}", "--method", "stft", "-o", "/proc/soma_view.png"], "'/proc/soma_view.png'"),
    (["snap", "{wav}", "--trace", "{tmp}/trace.bin", "-o", "{tmp}/p.csv"], "trace file '{tmp}/trace.bin' is not text"),
    (["snap", "{wav}", "--trace", "{tmp}/trace.csv", "-o", "{tmp}"], "-o/--output '{tmp}' is a folder"),
    (["bench", "--repeats", "0"], "--repeats 0 must be at least 1"),
    (["demo", "--out", "{tmp}/trace.csv"], "--out '{tmp}/trace.csv' is a file, not a folder"),
    (["demo", "--out", "/proc/soma_demo"], "--out '/proc/soma_demo': cannot create the folder"),
])
def test_commands_name_bad_outputs_and_values_with_exit_code_2(tmp_path, capsys, short_wav, args, message):
    (tmp_path / "trace.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "trace.csv").write_text("time_s,frequency_hz\n0.2,430\n0.6,450\n")
    fill = {"wav": short_wav, "tmp": tmp_path}
    code, err = _cli(capsys, *(a.format(**fill) for a in args))
    assert code == 2, err
    assert message.format(**fill) in err and "Traceback" not in err
