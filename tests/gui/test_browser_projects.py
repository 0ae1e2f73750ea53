"""Projects in headless Debian Chromium against `soma-shm serve`: Save (Ctrl+S) and Save As with
`.soma` added, consent before replacing a file, the recent list, the warning on leaving with
unsaved changes, and the offer to restore unsaved work after the server was stopped."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from ..conftest import make_audio
from ._browser import chromium_page, need_chromium, served

pytestmark = pytest.mark.gui
FS = 48_000

SNAP = """async ([t0, t1, f]) => {
  const token = new URLSearchParams(location.search).get('token');
  const r = await fetch('/api/snap', {method: 'POST', headers: {'X-Soma-Token': token},
                                      body: JSON.stringify({trace: [[t0, f], [t1, f + 10]]})});
  return (await r.json()).ok;
}"""


def items(page) -> int:
    return page.locator("[data-testid=partial-item]").count()


def draw(page, n: int) -> None:
    """Add a partial (a stroke sent as the pencil sends it) and wait until the list shows ``n``."""
    assert page.evaluate(SNAP, [0.5, 2.5, 435.0])
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=partial-item]').length === {n}",
                           timeout=60_000)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("gui_projects") / "tone.wav"
    sf.write(path, make_audio(3.0, FS, freqs=(440.0,), amp=0.3), FS)
    return path


def test_save_save_as_overwrite_consent_and_recent(recording, tmp_path):
    need_chromium()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    with served(str(recording), env=env) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
        assert page.locator("[data-testid=unsaved]").is_hidden()
        draw(page, 1)
        page.wait_for_selector("[data-testid=unsaved]", state="visible")
        assert page.title().startswith("●")

        # Ctrl+S with no project yet asks for a name; ".soma" is added.
        page.locator("[data-testid=canvas]").click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        page.wait_for_selector("[data-testid=path-dialog][open]")
        page.fill("[data-testid=path-input]", str(tmp_path / "take"))
        page.click("[data-testid=path-ok]")
        page.wait_for_selector("[data-testid=unsaved]", state="hidden", timeout=10_000)
        project = tmp_path / "take.soma"
        assert len(json.loads(project.read_text())["data"]["partials"]) == 1
        assert not page.title().startswith("●")

        # Ctrl+S again writes the same project without asking.
        draw(page, 2)
        page.keyboard.press("Control+s")
        page.wait_for_selector("[data-testid=unsaved]", state="hidden", timeout=10_000)
        assert len(json.loads(project.read_text())["data"]["partials"]) == 2
        assert page.locator("[data-testid=path-dialog][open]").count() == 0

        # Save As onto an existing file asks first; "Cancel" leaves it as it was.
        draw(page, 3)
        before = project.read_bytes()
        page.click("[data-testid=save-as]")
        page.fill("[data-testid=path-input]", str(project))
        page.click("[data-testid=path-ok]")
        page.wait_for_selector("[data-testid=confirm-dialog][open]")
        assert "already exists" in page.inner_text("[data-testid=confirm-message]")
        page.click("[data-testid=confirm-cancel]")
        page.wait_for_timeout(300)
        assert project.read_bytes() == before and page.locator("[data-testid=unsaved]").is_visible()
        page.click("[data-testid=save-as]")
        page.fill("[data-testid=path-input]", str(project))
        page.click("[data-testid=path-ok]")
        page.click("[data-testid=confirm-ok]")
        page.wait_for_selector("[data-testid=unsaved]", state="hidden", timeout=10_000)
        assert len(json.loads(project.read_text())["data"]["partials"]) == 3

        # The project is in the recent list (kept in the config folder).
        page.wait_for_function("() => [...document.querySelectorAll('[data-testid=recent] option')]"
                               ".some(o => o.value.endsWith('take.soma'))")
        recent = json.loads((tmp_path / "config" / "soma_shm" / "recent.json").read_text())
        assert recent["projects"][0]["path"] == str(project)
        assert page.page_errors == []


def test_leaving_with_unsaved_changes_warns(recording, tmp_path):
    need_chromium()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    with served(str(recording), env=env) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
        page.locator("[data-testid=canvas]").click(position={"x": 5, "y": 5})  # the page was used
        draw(page, 1)
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.type), d.dismiss()))  # always "stay on the page"
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        with pytest.raises(PlaywrightTimeout):
            page.reload(timeout=5_000)  # the reload waits for an answer that said no
        assert asked == ["beforeunload"] and items(page) == 1
        # Saved: leaving asks nothing.
        page.evaluate("""async () => { const token = new URLSearchParams(location.search).get('token');
          await fetch('/api/save_project', {method: 'POST', headers: {'X-Soma-Token': token},
                                              body: JSON.stringify({path: %s})}); }""" % json.dumps(str(tmp_path / "w.soma")))
        page.wait_for_selector("[data-testid=unsaved]", state="hidden", timeout=10_000)
        page.reload()  # no dialog now (one would have stopped it)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 1",
                               timeout=60_000)
        assert asked == ["beforeunload"]


def test_unsaved_work_is_offered_after_the_server_was_stopped(recording, tmp_path):
    need_chromium()
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_STATE_HOME": str(tmp_path / "state")}
    with served(str(recording), env=env) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
        draw(page, 1)
    # served() sent SIGTERM: the unsaved partial went to the recovery file.
    assert list((tmp_path / "state" / "soma_shm").glob("recovery-*.soma"))
    with served(env=env) as url, chromium_page() as page:
        page.goto(url)
        page.wait_for_selector("[data-testid=confirm-dialog][open]", timeout=30_000)
        assert "Restore it?" in page.inner_text("[data-testid=confirm-message]")
        page.click("[data-testid=confirm-ok]")
        page.wait_for_function("() => document.querySelectorAll('[data-testid=partial-item]').length === 1",
                               timeout=60_000)
        page.wait_for_selector("[data-testid=canvas][data-overview=drawn]", state="attached", timeout=60_000)
        assert page.locator("[data-testid=unsaved]").is_visible()
        assert page.page_errors == []
