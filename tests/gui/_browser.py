"""Helpers for the GUI tests: start `soma-shm serve` in a subprocess, launch Debian's Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def need_chromium():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing; `make setup` installs Debian's chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed; `make setup` installs the test extras")


def need_xvfb():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is missing; `make setup` installs xvfb")


@contextmanager
def served(*args: str, env: dict | None = None):
    """`soma-shm serve ARGS` in a subprocess (``env``: extra environment); yields its URL (the
    first line of its output). Leaving the block sends SIGTERM and expects a clean exit.

    Unless ``env`` names them, each server gets its own empty config and state folders: unsaved
    work one test leaves behind (a recovery file) is not offered to the next test's page."""
    own = None
    env = dict(env or {})
    if "XDG_STATE_HOME" not in env or "XDG_CONFIG_HOME" not in env:
        own = tempfile.mkdtemp(prefix="soma_gui_xdg_")
        env.setdefault("XDG_STATE_HOME", os.path.join(own, "state"))
        env.setdefault("XDG_CONFIG_HOME", os.path.join(own, "config"))
    proc = subprocess.Popen([sys.executable, "-m", "soma_shm", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1", **env})
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            proc.kill()
            raise AssertionError(f"serve printed {url!r} first; stderr: {proc.stderr.read()}")
        yield url
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Where it is stuck: SIGABRT makes the server's faulthandler print every thread's stack.
            proc.send_signal(signal.SIGABRT)
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            raise AssertionError(f"serve did not exit within 30 s of SIGTERM; its stderr:\n{err[-20000:]}") from None
        finally:
            if own is not None:
                shutil.rmtree(own, ignore_errors=True)
        assert proc.returncode == 0, err


@contextmanager
def chromium_page(width: int = 1280, height: int = 760):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.page_errors = errors
            yield page
        finally:
            browser.close()
