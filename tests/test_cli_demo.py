"""The README's first quick-start command: the demo renders two PNG files."""

from __future__ import annotations

import struct
import subprocess
import sys


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
