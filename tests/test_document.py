"""SomaDocument: edits and their history, .soma save/load in the SOMA layout, CSV/JSON export."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from soma_shm import AnalysisSettings, ParameterError
from soma_shm.app.document import SomaDocument, file_md5


def pts(f=440.0, n=5, t0=0.5):
    t = t0 + 0.01 * np.arange(n)
    return np.column_stack([t, np.full(n, f), np.linspace(0.1, 0.2, n)])


def test_add_delete_undo_redo_restores_each_state():
    doc = SomaDocument()
    a = doc.add_partial(pts(440))
    b = doc.add_partial(pts(880))
    assert [p.id for p in doc.partials] == [a.id, b.id] and a.id != b.id
    assert doc.delete_partials([a.id]) == 1
    assert [p.id for p in doc.partials] == [b.id]
    assert doc.undo().label == f"delete {a.id}"
    assert [p.id for p in doc.partials] == [a.id, b.id]
    doc.undo()
    assert [p.id for p in doc.partials] == [a.id]
    assert doc.can_redo
    doc.redo()
    doc.redo()
    assert [p.id for p in doc.partials] == [b.id]
    assert not doc.can_redo
    # A new edit after an undo drops the redo branch.
    doc.undo()
    doc.add_partial(pts(220))
    assert not doc.can_redo
    np.testing.assert_array_equal(doc.partial(a.id).points, pts(440))


def test_update_partial_is_undoable_and_points_are_read_only():
    doc = SomaDocument()
    a = doc.add_partial(pts())
    doc.update_partial(a.id, is_muted=True, color="#FF0000")
    assert doc.partial(a.id).is_muted and doc.partial(a.id).color == "#ff0000"
    doc.undo()
    assert not doc.partial(a.id).is_muted
    with pytest.raises(ValueError):
        doc.partial(a.id).points[0, 0] = 9.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d: d.delete_partials(["nope"]), "no partial with id='nope'"),
        (lambda d: d.delete_partials([]), "ids is empty"),
        (lambda d: d.add_partial([[0.1, 440.0]]), r"expected \(K >= 1, 3\)"),
        (lambda d: d.add_partial([[0.1, float("nan"), 0.1]]), "point 0 is not finite"),
        (lambda d: d.add_partial([[0.1, -5.0, 0.1]]), "frequencies must be positive"),
        (lambda d: d.add_partial(pts(), color="red"), "color='red'"),
    ],
)
def test_bad_edits_raise_and_leave_the_document_intact(call, match):
    doc = SomaDocument()
    doc.add_partial(pts())
    before = doc.partials
    undo_depth = len(doc._undo)
    with pytest.raises(ParameterError, match=match):
        call(doc)
    assert doc.partials == before and len(doc._undo) == undo_depth


def test_save_load_round_trip_in_the_soma_layout(tmp_path):
    audio = tmp_path / "take.wav"
    audio.write_bytes(b"RIFF....fake audio bytes")
    settings = AnalysisSettings(wavelet_bandwidth=6.0, bins_per_octave=48, min_db=-70.0, gamma=0.8)
    doc = SomaDocument(settings=settings)
    doc.set_source(str(audio))
    doc.set_recording(48_000, 2.5, amp_reference=1.0)
    a = doc.add_partial(pts(440, n=7), color="#123456")
    doc.add_partial(pts(660, n=3))
    doc.update_partial(a.id, is_muted=True)
    path = doc.save(tmp_path / "proj.soma")
    data = json.loads((tmp_path / "proj.soma").read_text())
    assert set(data) == {"meta", "source", "analysis_settings", "data"}
    assert data["meta"]["format_version"] == "1.0.0" and data["meta"]["app_name"] == "soma_shm"
    src = data["source"]
    assert src["file_path"] == "take.wav" and src["md5_hash"] == file_md5(audio)  # relative to the project
    assert src["sample_rate"] == 48_000 and src["duration_sec"] == 2.5
    assert data["analysis_settings"]["snap"]["wavelet_bandwidth"] == 6.0
    assert data["analysis_settings"]["snap"]["wavelet_center_freq"] == 1.5
    assert data["analysis_settings"]["snap"]["bins_per_octave"] == 48
    assert data["analysis_settings"]["spectrogram"]["min_db"] == -70.0
    first = data["data"]["partials"][0]
    assert set(first) == {"id", "is_muted", "color", "points"}
    assert first["is_muted"] is True and first["color"] == "#123456" and len(first["points"]) == 7

    back = SomaDocument.load(path)
    assert back.settings == settings
    assert back.source_path == str(audio.resolve()) and back.source_matches() is True
    assert [(p.id, p.is_muted, p.color) for p in back.partials] == [(p.id, p.is_muted, p.color) for p in doc.partials]
    for p, q in zip(back.partials, doc.partials):
        np.testing.assert_allclose(p.points, q.points, rtol=1e-12)
    assert not back.can_undo and not back.dirty
    assert back.add_partial(pts()).id == "p3"  # new ids continue after the loaded ones
    audio.write_bytes(b"changed")
    assert back.source_matches() is False


def test_loads_a_project_of_an_earlier_soma_shm(tmp_path):
    """The layout soma_shm wrote before: wavelet given by name, source.path/md5, calibrated
    amplitudes, extra keys we do not use."""
    project = {
        "meta": {"format": "soma", "version": 1, "created": "2025-03-01T10:00:00"},
        "source": {"path": "/data/rain.wav", "md5": "abc"},
        "analysis_settings": {
            "spectrogram": {"wavelet": "cmor10.0-2.0", "min_db": -90, "colormap": "magma"},
            "snap": {"bins_per_octave": 120, "smoothing": 0.2},
        },
        "data": {"partials": [
            {"id": "a", "is_muted": False, "points": [[0.1, 500.0, 0.2], [0.2, 510.0, 0.3]]},
            {"id": "b", "is_muted": True, "color": "#abc", "points": [[1.0, 300.0, 0.1]]},
        ]},
    }
    (tmp_path / "rain.soma").write_text(json.dumps(project))
    doc = SomaDocument.load(tmp_path / "rain.soma")
    assert doc.settings.wavelet_bandwidth == 10.0 and doc.settings.wavelet_center == 2.0
    assert doc.settings.min_db == -90.0 and doc.settings.bins_per_octave == 120
    assert [p.id for p in doc.partials] == ["a", "b"] and doc.partials[1].is_muted
    assert doc.source_path == "/data/rain.wav" and doc.source_md5 == "abc"
    np.testing.assert_array_equal(doc.partials[0].points[:, 2], [0.2, 0.3])  # already calibrated
    # Unknown keys survive a save, which is in SOMA's layout now.
    doc.save(tmp_path / "again.soma")
    again = json.loads((tmp_path / "again.soma").read_text())
    assert again["analysis_settings"]["spectrogram"]["colormap"] == "magma"
    assert again["analysis_settings"]["snap"]["smoothing"] == 0.2
    assert again["source"]["file_path"] == "/data/rain.wav" and again["source"]["md5_hash"] == "abc"
    assert again["data"]["partials"][1]["color"] == "#aabbcc"  # SOMA reads six hex digits


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "is a JSON object"),
        ('{"data": {"partials": [{"id": "x", "points": [[1, 2]]}]}}', "partial x: points have shape"),
        ('{"data": {"partials": [{"id": "x", "points": [[0, 1, 1]]}, {"id": "x", "points": [[0, 1, 1]]}]}}',
         "appears twice"),
        ('{"analysis_settings": {"spectrogram": {"gamma": -1}}}', "gamma=-1"),
        ('{"analysis_settings": {"spectrogram": {"wavelet": "morl"}}}', "not a complex Morlet"),
    ],
)
def test_bad_projects_raise_named_errors(tmp_path, content, match):
    f = tmp_path / "bad.soma"
    f.write_text(content)
    with pytest.raises(ParameterError, match=match):
        SomaDocument.load(f)


def test_save_and_load_path_errors(tmp_path):
    doc = SomaDocument()
    with pytest.raises(ParameterError, match="must end in .soma"):
        doc.save(tmp_path / "x.json")
    with pytest.raises(ParameterError, match="does not exist"):
        doc.save(tmp_path / "missing" / "x.soma")
    with pytest.raises(ParameterError, match="does not exist"):
        SomaDocument.load(tmp_path / "nope.soma")


def test_export_csv_and_json(tmp_path):
    doc = SomaDocument()
    a = doc.add_partial(pts(440, n=3))
    b = doc.add_partial(pts(880, n=2))
    doc.update_partial(b.id, is_muted=True)
    rows = list(csv.reader(io.StringIO(doc.export_csv())))
    assert rows[0] == ["partial_id", "time_s", "frequency_hz", "amplitude", "is_muted"]
    assert len(rows) == 1 + 3 + 2
    assert rows[1][0] == a.id and float(rows[1][2]) == 440.0 and rows[-1][4] == "1"
    assert len(list(csv.reader(io.StringIO(doc.export_csv(include_muted=False))))) == 1 + 3
    out = json.loads(doc.export_json())
    assert [p["id"] for p in out["partials"]] == [a.id, b.id]
    assert out["partials"][0]["points"][0] == pts(440, n=3)[0].tolist()
    written = doc.export(tmp_path / "parts.csv")
    assert open(written).read() == doc.export_csv()
    doc.export(tmp_path / "parts.json", include_muted=False)
    assert len(json.loads((tmp_path / "parts.json").read_text())["partials"]) == 1
    with pytest.raises(ParameterError, match=r"must end in .csv or .json"):
        doc.export(tmp_path / "parts.txt")
