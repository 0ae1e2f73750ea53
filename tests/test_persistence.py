""".soma files both ways with SOMA's layout, the amplitude convention, atomic writes, audio copied
beside the project and relinked by MD5, the recent list, recovery files and the autosaver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soma_shm import ParameterError
from soma_shm.app import persistence, somajson
from soma_shm.app.document import SomaDocument, file_md5, read_project
from soma_shm.app.persistence import (
    Autosaver,
    Recovery,
    RecentProjects,
    atomic_write,
    bundle_audio,
    ensure_soma_suffix,
    locate_audio,
)
from soma_shm.errors import ProjectAudioMissing
from soma_shm.settings import AnalysisSettings

FS = 48_000


def tone(path: Path, seconds: float = 0.5, f: float = 440.0, amp: float = 0.25) -> Path:
    t = np.arange(int(seconds * FS)) / FS
    sf.write(path, (amp * np.sin(2 * np.pi * f * t)).astype(np.float32), FS, subtype="FLOAT")
    return path


def soma_app_project(audio: Path) -> dict:
    """A project as the SOMA app writes it (its documented layout): relative source path with
    rate, length and MD5, spectrogram and snap sections with SOMA's own keys, playback settings,
    UUID ids, and amplitudes normalised to 0-1."""
    return {
        "meta": {"format_version": "1.0.0", "app_name": "SOMA", "created_at": "2025-11-03T09:30:00+00:00"},
        "source": {"file_path": f"./{audio.name}", "sample_rate": FS, "duration_sec": 0.5,
                   "md5_hash": file_md5(audio)},
        "analysis_settings": {
            "spectrogram": {"method": "multires_stft", "freq_min": 20.0, "freq_max": 20000.0,
                            "preview_freq_max": 12000.0, "multires_blend_octaves": 1.0,
                            "multires_window_size_scale": 1.0, "reassigned_ref_power": 1e-6, "gain": 1.0,
                            "min_db": -72.0, "max_db": 0.0, "gamma": 1.2},
            "snap": {"freq_min": 20.0, "freq_max": 20000.0, "bins_per_octave": 48, "time_resolution_ms": 5.0,
                     "wavelet_bandwidth": 6.0, "wavelet_center_freq": 1.25},
        },
        "playback_settings": {"master_volume": 0.8, "output_mode": "audio", "mix_ratio": 0.55,
                              "midi_mode": "mpe", "midi_bpm": 96.0},
        "data": {"partials": [
            {"id": "0f6c2f4e-8f55-4a7e-9d1c-3e9f7b8a1c20", "is_muted": False, "color": "#ff8800",
             "points": [[0.10, 440.0, 1.0], [0.11, 440.5, 0.75], [0.12, 441.0, 0.5]]},
            {"id": "5b1d9a33-2c40-4c1e-8a77-0d6e5f4b3a91", "is_muted": True, "color": "00ccff",
             "points": [[0.20, 880.0, 0.125], [0.21, 881.0, 0.25]]},
        ]},
    }


def read_as_soma_would(path: Path) -> dict:
    """What the SOMA app takes from a .soma file: source resolved against the project's folder,
    snap and spectrogram keys by SOMA's names, points as [t, f, amp] with amp in 0-1."""
    data = json.loads(path.read_text())
    src = data["source"]
    audio = Path(src["file_path"])
    if not audio.is_absolute():
        audio = (path.parent / audio).resolve()
    snap, spec = data["analysis_settings"]["snap"], data["analysis_settings"]["spectrogram"]
    parts = []
    for p in data["data"]["partials"]:
        pts = [tuple(map(float, row[:3])) for row in p["points"] if len(row) >= 3]
        parts.append({"id": p["id"], "muted": bool(p["is_muted"]), "color": p["color"], "points": pts})
    return {"audio": audio, "md5": src["md5_hash"], "rate": int(src["sample_rate"]), "duration": float(src["duration_sec"]),
            "bandwidth": float(snap["wavelet_bandwidth"]), "center": float(snap["wavelet_center_freq"]),
            "bins": int(snap["bins_per_octave"]), "min_db": float(spec["min_db"]), "partials": parts}


def test_a_soma_app_project_opens_and_round_trips(tmp_path):
    audio = tone(tmp_path / "rain.wav")
    proj = tmp_path / "rain.soma"
    proj.write_text(json.dumps(soma_app_project(audio)))

    loaded = read_project(proj)
    doc = loaded.document
    assert doc.source_path == str(audio.resolve()) and doc.source_md5 == file_md5(audio)
    assert doc.source_sample_rate == FS and doc.source_duration == 0.5
    s = doc.settings
    assert (s.wavelet_bandwidth, s.wavelet_center, s.bins_per_octave, s.time_resolution_ms) == (6.0, 1.25, 48, 5.0)
    assert (s.min_db, s.gamma) == (-72.0, 1.2)
    assert [p.id for p in doc.partials] == ["0f6c2f4e-8f55-4a7e-9d1c-3e9f7b8a1c20", "5b1d9a33-2c40-4c1e-8a77-0d6e5f4b3a91"]
    assert doc.partials[1].is_muted and doc.partials[1].color == "#00ccff"
    # SOMA stored no reference: the amplitudes wait for the recording's level.
    assert loaded.amplitudes_need_reference
    level = 0.3
    doc.scale_amplitudes(level)
    doc.set_recording(FS, 0.5, amp_reference=level)
    np.testing.assert_allclose(doc.partials[0].points[:, 2], [0.3, 0.225, 0.15])

    out = tmp_path / "again.soma"
    doc.save(out)
    written = json.loads(out.read_text())
    # Every key SOMA wrote is still there, with its value.
    original = soma_app_project(audio)
    for section in ("spectrogram", "snap"):
        for k, v in original["analysis_settings"][section].items():
            assert written["analysis_settings"][section][k] == v, (section, k)
    assert written["playback_settings"] == original["playback_settings"]
    assert written["meta"]["format_version"] == "1.0.0"
    assert written["source"]["amplitude_reference"] == pytest.approx(level)

    soma = read_as_soma_would(out)
    assert soma["audio"] == audio.resolve() and soma["md5"] == file_md5(audio)
    assert (soma["rate"], soma["duration"], soma["bandwidth"], soma["center"], soma["bins"]) == (FS, 0.5, 6.0, 1.25, 48)
    for mine, theirs in zip(soma["partials"], original["data"]["partials"]):
        assert mine["id"] == theirs["id"] and mine["muted"] == theirs["is_muted"]
        assert mine["color"].lstrip("#") == theirs["color"].lstrip("#")
        np.testing.assert_allclose(mine["points"], theirs["points"], rtol=1e-12)


def test_amplitudes_are_normalised_on_export_and_calibrated_on_import(tmp_path):
    doc = SomaDocument()
    doc.set_recording(FS, 3.0, amp_reference=0.5)
    doc.add_partial([[0.0, 300.0, 0.25], [0.1, 300.0, 0.125]])
    doc.save(tmp_path / "a.soma")
    data = json.loads((tmp_path / "a.soma").read_text())
    assert data["source"]["amplitude_reference"] == 0.5
    assert [row[2] for row in data["data"]["partials"][0]["points"]] == [0.5, 0.25]
    back = read_project(tmp_path / "a.soma")
    assert not back.amplitudes_need_reference
    np.testing.assert_array_equal(back.document.partials[0].points[:, 2], [0.25, 0.125])

    # A partial louder than the recording's level raises the reference: nothing exceeds 1.
    doc.add_partial([[1.0, 500.0, 0.8], [1.1, 500.0, 0.4]])
    doc.save(tmp_path / "b.soma")
    data = json.loads((tmp_path / "b.soma").read_text())
    amps = [row[2] for p in data["data"]["partials"] for row in p["points"]]
    assert max(amps) == 1.0 and min(amps) > 0 and data["source"]["amplitude_reference"] == 0.8
    back = read_project(tmp_path / "b.soma").document
    for p, q in zip(back.partials, doc.partials):
        np.testing.assert_allclose(p.points, q.points, rtol=1e-12)


def test_points_are_written_in_time_order_and_bad_projects_name_the_problem(tmp_path):
    doc = SomaDocument()
    doc.add_partial([[0.2, 300.0, 0.1], [0.1, 310.0, 0.2]])
    doc.save(tmp_path / "o.soma")
    rows = json.loads((tmp_path / "o.soma").read_text())["data"]["partials"][0]["points"]
    assert [r[0] for r in rows] == [0.1, 0.2]
    bad = soma_app_project(tone(tmp_path / "x.wav"))
    bad["data"]["partials"][0]["points"][1][2] = -0.5
    (tmp_path / "neg.soma").write_text(json.dumps(bad))
    with pytest.raises(ParameterError, match="point 1 has amplitude -0.5"):
        read_project(tmp_path / "neg.soma")
    bad = soma_app_project(tone(tmp_path / "x.wav"))
    bad["source"]["amplitude_reference"] = 0
    (tmp_path / "ref.soma").write_text(json.dumps(bad))
    with pytest.raises(ParameterError, match="amplitude_reference=0.0 must be positive"):
        read_project(tmp_path / "ref.soma")
    (tmp_path / "bin.soma").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ParameterError, match="not UTF-8"):
        read_project(tmp_path / "bin.soma")


def test_soma_suffix_is_added():
    assert ensure_soma_suffix("/x/take1").name == "take1.soma"
    assert ensure_soma_suffix("/x/take1.SOMA").name == "take1.SOMA"
    assert ensure_soma_suffix("/x/take.1").name == "take.1.soma"
    with pytest.raises(ParameterError, match="names no file"):
        ensure_soma_suffix("/x/..")


# ----------------------------------------------------------------------------- atomic writes
def leftovers(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith((".part", ".tmp")))


def test_atomic_write_replaces_whole_and_refuses_links(tmp_path):
    target = tmp_path / "p.soma"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two" and leftovers(tmp_path) == []
    with pytest.raises(ParameterError, match="already exists"):
        atomic_write(target, "three", overwrite=False)
    assert target.read_text() == "two"

    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("precious")
    link = tmp_path / "link.soma"
    link.symlink_to(elsewhere)
    with pytest.raises(ParameterError, match="symbolic link"):
        atomic_write(link, "payload")
    assert elsewhere.read_text() == "precious" and link.is_symlink()
    (tmp_path / "folder.soma").mkdir()
    with pytest.raises(ParameterError, match="not a regular file"):
        atomic_write(tmp_path / "folder.soma", "x")
    with pytest.raises(ParameterError, match="does not exist"):
        atomic_write(tmp_path / "missing" / "x.soma", "x")
    # The old file's permissions are kept.
    os.chmod(target, 0o640)
    atomic_write(target, "four")
    assert (os.stat(target).st_mode & 0o777) == 0o640


@pytest.mark.parametrize("step", ["_write_all", "fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, step):
    target = tmp_path / "p.soma"
    target.write_text("old content")

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    if step == "_write_all":
        monkeypatch.setattr(persistence, "_write_all", disk_full)
    else:
        monkeypatch.setattr(persistence.os, step, disk_full)
    with pytest.raises(ParameterError, match="cannot write .*the disk is full"):
        atomic_write(target, "new content " * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old content" and leftovers(tmp_path) == []


def test_saving_and_exporting_are_atomic(tmp_path, monkeypatch):
    doc = SomaDocument()
    doc.add_partial([[0.0, 300.0, 0.1], [0.1, 300.0, 0.1]])
    doc.save(tmp_path / "p.soma")
    doc.export(tmp_path / "parts.csv")
    before = (tmp_path / "p.soma").read_bytes(), (tmp_path / "parts.csv").read_bytes()
    doc.add_partial([[0.0, 500.0, 0.1], [0.1, 500.0, 0.1]])
    monkeypatch.setattr(persistence.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "full")))
    with pytest.raises(ParameterError, match="disk is full"):
        doc.save(tmp_path / "p.soma")
    with pytest.raises(ParameterError, match="disk is full"):
        doc.export(tmp_path / "parts.csv")
    monkeypatch.undo()
    assert ((tmp_path / "p.soma").read_bytes(), (tmp_path / "parts.csv").read_bytes()) == before
    assert leftovers(tmp_path) == [] and doc.dirty


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_named_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(ParameterError, match="permission denied"):
            atomic_write(ro / "p.soma", "x")
        assert os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o755)


# ---------------------------------------------------------------------- audio beside the project
def test_bundle_copies_once_and_locate_relinks_by_md5(tmp_path):
    tmp_audio = tone(tmp_path / "upload.wav")
    md5 = file_md5(tmp_audio)
    project = tmp_path / "work" / "song.soma"
    project.parent.mkdir()
    copy = bundle_audio(str(tmp_audio), project, md5, name="my take.wav")
    assert copy == str(project.parent / "song_assets" / "my take.wav") and file_md5(copy) == md5
    assert bundle_audio(str(tmp_audio), project, md5, name="my take.wav") == copy  # same content: reused
    other = tone(tmp_path / "other.wav", f=660.0)
    second = bundle_audio(str(other), project, file_md5(other), name="my take.wav")
    assert Path(second).name == "my take_1.wav"  # a different file of the same name is kept

    # The audio moved: found again by content in the assets folder, beside the project, or a chosen folder.
    gone = str(tmp_path / "nowhere" / "my take.wav")
    assert locate_audio(gone, md5, project) == copy
    moved = tmp_path / "archive"
    moved.mkdir()
    os.replace(copy, moved / "renamed.wav")
    with pytest.raises(ProjectAudioMissing, match="choose the folder that holds it") as err:
        locate_audio(gone, md5, project)
    assert str(project.parent) in str(err.value)
    assert locate_audio(gone, md5, project, search=[str(moved)]) == str(moved / "renamed.wav")
    with pytest.raises(ProjectAudioMissing):  # the size prefilter excludes it
        locate_audio(gone, md5, project, search=[str(moved)], size=12)
    with pytest.raises(ParameterError, match="does not exist"):
        locate_audio(gone, md5, project, search=[str(tmp_path / "no such folder")])


# ------------------------------------------------------------------------ recent and recovery
def test_recent_projects_newest_first_deduplicated_and_bounded(tmp_path):
    recent = RecentProjects(tmp_path / "cfg" / "recent.json", limit=3)
    assert recent.list() == []
    for name in ("a", "b", "c", "a", "d"):
        (tmp_path / f"{name}.soma").write_text("{}")
        recent.add(tmp_path / f"{name}.soma")
    assert [it["name"] for it in recent.list()] == ["d.soma", "a.soma", "c.soma"]
    (tmp_path / "c.soma").unlink()
    assert [it["exists"] for it in recent.list()] == [True, True, False]
    (tmp_path / "cfg" / "recent.json").write_text("{damaged")
    assert recent.list() == []


def test_config_and_state_follow_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "s"))
    assert persistence.config_dir() == tmp_path / "c" / "soma_shm"
    assert persistence.state_dir() == tmp_path / "s" / "soma_shm"
    assert RecentProjects().path == tmp_path / "c" / "soma_shm" / "recent.json"


def test_recovery_files_of_ended_runs_are_offered(tmp_path):
    temporary = tmp_path / "session_tmp"
    temporary.mkdir()
    audio = tone(temporary / "dropped.wav")
    doc = SomaDocument()
    doc.set_source(str(audio))
    doc.add_partial([[0.0, 300.0, 0.1], [0.1, 300.0, 0.1]])
    rec = Recovery(tmp_path / "state", temporary=str(temporary))
    written = rec.write(doc)
    assert Path(written).name == f"recovery-{os.getpid()}.soma"
    assert rec.offers() == []  # this run's own file is not offered to itself
    data = json.loads(Path(written).read_text())
    # The audio of the temporary folder was copied beside the recovery file.
    copied = Path(written).parent / data["source"]["file_path"]
    assert copied.is_file() and file_md5(copied) == file_md5(audio) and not str(copied).startswith(str(temporary))

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = Path(written).with_name(f"recovery-{pid}.soma")
    os.replace(written, left)
    offers = rec.offers()
    assert [o["path"] for o in offers] == [str(left)] and offers[0]["partials"] == 1
    restored = read_project(left).document
    assert len(restored.partials) == 1
    rec.discard(left)
    assert rec.offers() == [] and not left.exists()
    with pytest.raises(ParameterError, match="not a recovery file"):
        rec.discard(tmp_path / "other.soma")


def test_autosaver_debounces_and_bounds_the_delay():
    writes: list[float] = []
    state = {"dirty": True}
    saver = Autosaver(lambda: "doc" if state["dirty"] else None, lambda d: writes.append(time.monotonic()),
                      debounce_s=0.3, max_delay_s=1.0)
    try:
        for _ in range(5):  # a burst of edits: one write after it
            saver.poke()
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while not writes and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(writes) == 1
        # Edits that never pause are still written (max_delay_s), more than once.
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            saver.poke()
            time.sleep(0.05)
        assert len(writes) >= 2
        state["dirty"] = False
        assert saver.flush() is False  # nothing unsaved: nothing written
    finally:
        saver.stop()


def test_both_encoders_write_the_same_project(tmp_path, monkeypatch):
    """Points go out straight from numpy through orjson when it is installed, else through the
    standard encoder: the two files read back the same, to the last bit."""
    doc = SomaDocument()
    doc.set_recording(FS, 3.0, amp_reference=0.3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        t = np.sort(rng.uniform(0, 3, 40))
        doc.add_partial(np.column_stack([t, rng.uniform(50, 5000, 40), rng.uniform(0, 0.4, 40)]))
    doc.save(tmp_path / "fast.soma")
    monkeypatch.setattr(persistence, "_orjson", None)
    doc.save(tmp_path / "plain.soma")
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("fast.soma", "plain.soma"))
    a["meta"].pop("modified_at"), b["meta"].pop("modified_at")
    assert a == b
    back = read_project(tmp_path / "plain.soma").document
    for p, q in zip(back.partials, doc.partials):
        np.testing.assert_allclose(p.points, q.points, rtol=1e-15)


def test_a_project_without_audio_is_still_readable_by_soma(tmp_path):
    """SOMA converts the source fields with int(), float() and str(): nothing is written as null."""
    doc = SomaDocument()
    doc.add_partial([[0.0, 300.0, 0.1], [0.1, 300.0, 0.1]])
    doc.save(tmp_path / "bare.soma")
    src = json.loads((tmp_path / "bare.soma").read_text())["source"]
    assert (src["file_path"], src["sample_rate"], src["duration_sec"], src["md5_hash"]) == ("", 0, 0.0, "")
    back = read_project(tmp_path / "bare.soma").document
    assert (back.source_path, back.source_md5, back.source_sample_rate, back.source_duration) == (None, None, None, None)


def _read_both(path: Path, monkeypatch) -> tuple:
    """The project read with the points block (somajson) and the ordinary way (whole-file parse)."""
    fast = read_project(path)
    with monkeypatch.context() as m:
        m.setattr(persistence, "parse_with_points", lambda raw: None)
        plain = read_project(path)
    return fast, plain


def _same(a, b) -> None:
    assert [p.id for p in a.partials] == [p.id for p in b.partials]
    for p, q in zip(a.partials, b.partials):
        assert (p.color, p.is_muted) == (q.color, q.is_muted)
        np.testing.assert_array_equal(p.points, q.points)  # the same numbers, to the last bit
        assert not p.points.flags.writeable


@pytest.mark.skipif(not somajson.available(), reason="pysimdjson is not installed")
def test_points_read_as_one_block_are_the_ordinary_parse_to_the_last_bit(tmp_path, monkeypatch):
    """A project's points are read without a Python float per number: SOMA's layout (0-1
    amplitudes, a partial with no points, colours without '#'), ours (full-precision floats,
    an amplitude reference) and an earlier soma_shm one all read exactly as the ordinary parser
    reads them, and loaded partials are read-only."""
    audio = tone(tmp_path / "rain.wav")
    soma = soma_app_project(audio)
    soma["data"]["partials"].append({"id": "empty", "is_muted": False, "color": "#123456", "points": []})
    soma["data"]["partials"][1]["points"].append([0.22, 8.8e2, 1e-3])
    (tmp_path / "soma.soma").write_text(json.dumps(soma, indent=2))
    assert somajson.parse_with_points((tmp_path / "soma.soma").read_bytes()) is not None  # the fast path applies
    fast, plain = _read_both(tmp_path / "soma.soma", monkeypatch)
    assert fast.amplitudes_need_reference and plain.amplitudes_need_reference
    _same(fast.document, plain.document)
    assert [p.id for p in fast.document.partials][-1] != "empty"  # no points: nothing to draw or play
    assert fast.document.extra == plain.document.extra and fast.document.settings == plain.document.settings

    doc = SomaDocument()
    doc.set_recording(FS, 3.0, amp_reference=0.37)
    rng = np.random.default_rng(7)
    for _ in range(30):
        t = np.sort(rng.uniform(0, 3, 25))
        doc.add_partial(np.column_stack([t, rng.uniform(20, 20000, 25), rng.uniform(0, 0.5, 25)]))
    doc.save(tmp_path / "ours.soma")
    fast, plain = _read_both(tmp_path / "ours.soma", monkeypatch)
    _same(fast.document, plain.document)
    for p, q in zip(fast.document.partials, doc.partials):
        np.testing.assert_allclose(p.points, q.points, rtol=1e-15)

    old = {"meta": {"format": "soma"}, "source": {"path": str(audio), "md5": file_md5(audio)},
           "data": {"partials": [{"id": "p3", "is_muted": True, "color": "#abc", "points": [[0.1, 440, 0.2], [0.2, 441, 0.3]]}]}}
    (tmp_path / "old.soma").write_text(json.dumps(old))
    fast, plain = _read_both(tmp_path / "old.soma", monkeypatch)
    _same(fast.document, plain.document)
    assert fast.document.partials[0].points[1].tolist() == [0.2, 441.0, 0.3]


@pytest.mark.parametrize("points, message", [
    ([[0.1, 440.0], [0.2, 441.0, 0.5, 0.5]], "points must be a list|points have shape"),  # rows of 2 and 4
    ([[0.1, 440.0, 0.5], [[0.2, 441.0, 0.5]]], "points must be a list|points have shape"),  # one row nested deeper
    ([[[0.1, 440.0, 0.5]]], "points have shape"),
    ([0.1, 440.0, 0.5], "points have shape"),
    ([[0.1, 440.0, -0.5]], "point 0 has amplitude -0.5"),
    ([[0.1, 440.0, 0.5], [0.2, 0.0, 0.5]], "point 1 has frequency 0.0 Hz"),
])
def test_points_of_another_shape_are_refused_naming_the_partial(tmp_path, points, message):
    data = {"data": {"partials": [{"id": "ok", "points": [[0.0, 300.0, 0.1], [0.1, 300.0, 0.1]]},
                                  {"id": "bad", "points": points}]}}
    (tmp_path / "bad.soma").write_text(json.dumps(data))
    with pytest.raises(ParameterError, match=f"partial bad: ({message})"):
        read_project(tmp_path / "bad.soma")


def test_nan_points_and_a_points_key_elsewhere_read_as_before(tmp_path):
    (tmp_path / "nan.soma").write_text('{"data": {"partials": [{"id": "n", "points": [[0.1, NaN, 0.5]]}]}}')
    with pytest.raises(ParameterError, match="partial n: point 0 is not finite"):
        read_project(tmp_path / "nan.soma")
    # Another section with a "points" key is kept as it was and the partials read all the same.
    data = {"extra_section": {"points": [[1, 2, 3]]}, "data": {"partials": [{"id": "a", "points": [[0.1, 300.0, 0.2]]}]}}
    (tmp_path / "other.soma").write_text(json.dumps(data))
    doc = read_project(tmp_path / "other.soma").document
    assert doc.extra["extra_section"] == {"points": [[1, 2, 3]]}
    assert doc.partials[0].points.tolist() == [[0.1, 300.0, 0.2]]
