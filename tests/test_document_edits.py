"""Edit operations of SomaDocument (merge, crop, extend, erase, mute, settings) and their
undo/redo, including at 10,000 partials (SOMA's scale)."""

from __future__ import annotations

import numpy as np
import pytest

from soma_shm import AnalysisSettings, ParameterError
from soma_shm.app.document import Partial, SomaDocument


def line(t0, t1, f, step=0.01, f1=None, amp=0.2):
    t = np.arange(t0, t1 + 1e-9, step)
    fr = np.full(t.shape, f) if f1 is None else np.geomspace(f, f1, t.shape[0])
    return np.column_stack([t, fr, np.full(t.shape, amp)])


def snapshot(doc):
    return [(p.id, p.color, p.is_muted, p.points.tobytes()) for p in doc.partials]


def test_undo_and_redo_past_the_ends_are_no_ops():
    doc = SomaDocument()
    assert doc.undo() is None and doc.redo() is None and not doc.dirty
    a = doc.add_partial(line(0, 1, 440))
    assert doc.redo() is None and doc.history()["undo_label"] == f"add {a.id}"
    assert doc.undo().delta()["removed"] == [a.id]
    assert doc.undo() is None and len(doc) == 0
    assert doc.history() == {"can_undo": False, "can_redo": True, "undo_label": None,
                             "redo_label": f"add {a.id}", "dirty": True}


def test_merge_bridges_the_gap_and_undo_restores_both_in_place():
    doc = SomaDocument(settings=AnalysisSettings(time_resolution_ms=10.0))
    z = doc.add_partial(line(0, 0.5, 200))
    b = doc.add_partial(line(1.2, 1.5, 880, amp=0.4))
    a = doc.add_partial(line(0.5, 1.0, 440, amp=0.2))
    before = snapshot(doc)
    merged = doc.merge_partials([b.id, a.id])
    assert merged.id == a.id and merged.color == a.color  # the earliest keeps its id and colour
    p = merged.points
    assert p[0, 0] == pytest.approx(0.5) and p[-1, 0] == pytest.approx(1.5)
    assert np.all(np.diff(p[:, 0]) > 0) and np.diff(p[:, 0]).max() <= 0.01 + 1e-9  # gap filled every 10 ms
    gap = p[(p[:, 0] > 1.0 + 1e-9) & (p[:, 0] < 1.2 - 1e-9)]
    assert gap.shape[0] == 19
    assert np.all(np.diff(gap[:, 1]) > 0) and gap[9, 1] == pytest.approx(np.sqrt(440 * 880), rel=0.01)
    assert gap[9, 2] == pytest.approx(0.3, abs=0.01)
    assert [q.id for q in doc.partials] == [z.id, a.id]
    edit = doc.undo()
    assert snapshot(doc) == before and [q.id for q in edit.delta()["added"]] == [b.id]
    doc.redo()
    np.testing.assert_array_equal(doc.partial(a.id).points, p)
    assert b.id not in {q.id for q in doc.partials}


def test_merge_of_overlapping_partials_keeps_time_order():
    doc = SomaDocument()
    a = doc.add_partial(line(0.0, 1.0, 440))
    b = doc.add_partial(line(0.5, 2.0, 450))
    c = doc.add_partial(line(0.2, 0.4, 300))  # inside a: nothing of it continues past a's end
    merged = doc.merge_partials([a.id, b.id, c.id])
    t = merged.points[:, 0]
    assert np.all(np.diff(t) > 0) and t[0] == 0.0 and t[-1] == pytest.approx(2.0)
    assert np.all(merged.points[t <= 1.0, 1] == 440) and np.all(merged.points[t > 1.0, 1] == 450)
    assert len(doc) == 1
    with pytest.raises(ParameterError, match="merge needs at least 2 partials"):
        doc.merge_partials([a.id])
    with pytest.raises(ParameterError, match="no partial with id='nope'"):
        doc.merge_partials([a.id, "nope"])


def test_crop_trims_points_and_refuses_empty_or_no_op_crops():
    doc = SomaDocument()
    a = doc.add_partial(line(0.0, 1.0, 440))
    cropped = doc.crop_partial(a.id, 0.25, 0.755)
    assert cropped.points[0, 0] == pytest.approx(0.25) and cropped.points[-1, 0] == pytest.approx(0.75)
    depth = len(doc._undo)
    with pytest.raises(ParameterError, match="keeps all of partial"):
        doc.crop_partial(a.id, 0.0, 2.0)
    with pytest.raises(ParameterError, match="fewer than 2 points; delete it instead"):
        doc.crop_partial(a.id, 0.5, 0.505)
    with pytest.raises(ParameterError, match="finite t0 < t1"):
        doc.crop_partial(a.id, 0.6, 0.3)
    assert len(doc._undo) == depth
    doc.undo()
    assert doc.partial(a.id).points.shape[0] == 101


def test_extend_puts_snapped_points_before_or_after():
    doc = SomaDocument()
    a = doc.add_partial(line(1.0, 2.0, 440))
    after = doc.extend_partial(a.id, line(1.9, 2.5, 445))  # overlap is ignored
    assert after.points[-1, 0] == pytest.approx(2.5) and np.all(np.diff(after.points[:, 0]) > 0)
    assert after.points.shape[0] == 101 + 50
    before = doc.extend_partial(a.id, line(0.5, 1.0, 430)[::-1])  # any order
    assert before.points[0, 0] == pytest.approx(0.5) and np.all(np.diff(before.points[:, 0]) > 0)
    with pytest.raises(ParameterError, match="lies inside partial"):
        doc.extend_partial(a.id, line(1.2, 1.4, 440))
    doc.undo()
    doc.undo()
    np.testing.assert_array_equal(doc.partial(a.id).points, line(1.0, 2.0, 440))


def test_erase_splits_interior_cuts_ends_and_removes_whole_partials():
    doc = SomaDocument()
    a = doc.add_partial(line(0.0, 2.0, 440))
    b = doc.add_partial(line(0.0, 2.0, 880))
    c = doc.add_partial(line(3.0, 3.02, 440))  # 3 points, erased entirely
    keep = doc.add_partial(line(0.0, 2.0, 1760))
    before = snapshot(doc)
    # A vertical stroke at 1 s through 440 and 880 Hz (not 1760), and one over c.
    out = doc.erase([[1.0, 400.0], [1.0, 1000.0]], radius_t=0.05, radius_octaves=0.1)
    assert out["changed"] == [a.id, b.id] and len(out["added"]) == 2 and out["removed"] == []
    pa = doc.partial(a.id).points
    assert pa[-1, 0] < 0.951 and pa[0, 0] == 0.0
    second = doc.partial(out["added"][0]).points
    assert second[0, 0] > 1.049 and second[-1, 0] == pytest.approx(2.0) and second[0, 1] == 440
    assert doc.partial(out["added"][0]).color == a.color
    np.testing.assert_array_equal(doc.partial(keep.id).points, line(0.0, 2.0, 1760))
    out2 = doc.erase([[2.9, 440.0], [3.1, 440.0]], radius_t=0.05, radius_octaves=0.1)
    assert out2 == {"changed": [], "added": [], "removed": [c.id]}
    # An end: only the last points go.
    out3 = doc.erase([[2.0, 1700.0], [2.0, 1800.0]], radius_t=0.1, radius_octaves=0.1)
    assert out3["changed"] == [keep.id] and doc.partial(keep.id).points[-1, 0] < 1.91
    depth = len(doc._undo)
    with pytest.raises(ParameterError, match="touched no partial"):
        doc.erase([[5.0, 100.0], [5.5, 100.0]], radius_t=0.05, radius_octaves=0.1)
    with pytest.raises(ParameterError, match="must be positive"):
        doc.erase([[1.0, 440.0]], radius_t=0.0, radius_octaves=0.1)
    assert len(doc._undo) == depth
    doc.undo(); doc.undo(); doc.undo()
    assert snapshot(doc) == before


def test_set_muted_and_settings_changes_are_undoable():
    doc = SomaDocument()
    a = doc.add_partial(line(0, 1, 440))
    b = doc.add_partial(line(0, 1, 880))
    assert doc.set_muted([a.id, b.id], True) == 2
    assert doc.set_muted([a.id], True) == 0  # already muted: no edit
    assert doc.history()["undo_label"] == f"mute {a.id}, {b.id}"
    new = doc.settings.replace(gamma=0.5, min_db=-60.0)
    assert doc.change_settings(new) and doc.settings == new
    assert doc.change_settings(new) is False
    assert "gamma" in doc.history()["undo_label"]
    edit = doc.undo()
    assert doc.settings == AnalysisSettings() and edit.settings == (new, AnalysisSettings())
    doc.undo()
    assert not doc.partial(a.id).is_muted and not doc.partial(b.id).is_muted
    doc.redo(); doc.redo()
    assert doc.settings == new and doc.partial(b.id).is_muted


def test_ten_thousand_partials_every_edit_undoes_and_redoes_exactly():
    rng = np.random.default_rng(3)
    doc = SomaDocument()
    parts = []
    for i in range(10_000):
        t0 = float(rng.uniform(0, 590))
        n = int(rng.integers(5, 60))
        f = float(rng.uniform(60, 8000))
        pts = np.column_stack([t0 + 0.01 * np.arange(n), f * np.exp(0.001 * rng.standard_normal(n)),
                               rng.uniform(0.01, 1.0, n)])
        pts.flags.writeable = False
        parts.append(Partial(f"p{i + 1}", pts))
    doc.partials = parts
    doc._next_id = 10_001
    states = [snapshot(doc)]
    ids = [p.id for p in doc.partials]
    doc.add_partial(line(10, 11, 500)); states.append(snapshot(doc))
    doc.delete_partials(ids[100:150]); states.append(snapshot(doc))
    doc.set_muted(ids[200:300], True); states.append(snapshot(doc))
    doc.merge_partials(ids[400:402]); states.append(snapshot(doc))
    p = doc.partial(ids[500]).points
    doc.crop_partial(ids[500], p[1, 0], p[-2, 0]); states.append(snapshot(doc))
    p = doc.partial(ids[600]).points
    doc.extend_partial(ids[600], line(p[-1, 0] + 0.01, p[-1, 0] + 0.2, p[-1, 1])); states.append(snapshot(doc))
    p = doc.partial(ids[700]).points
    mid = p[len(p) // 2]
    cut = doc.erase([[mid[0], mid[1] * 0.99], [mid[0], mid[1] * 1.01]], radius_t=0.015, radius_octaves=0.01)
    assert ids[700] in cut["changed"] and len(cut["added"]) >= 1  # split in two (or more, if others cross)
    states.append(snapshot(doc))
    doc.change_settings(doc.settings.replace(gamma=0.7)); states.append(snapshot(doc))
    doc.update_partial(ids[800], color="#ff0000"); states.append(snapshot(doc))
    # Each edit keeps only what it touched, not the document.
    assert max(len(e.removed) + len(e.added) for e in doc._undo) <= 100 * 2
    for k in range(len(states) - 1, 0, -1):
        assert snapshot(doc) == states[k]
        doc.undo()
    assert snapshot(doc) == states[0] and doc.undo() is None
    for k in range(1, len(states)):
        doc.redo()
        assert snapshot(doc) == states[k]
    assert len(doc) == 10_000 + 1 - 50 - 1 + len(cut["added"]) - len(cut["removed"])


def test_projects_read_the_same_with_or_without_the_fast_json_parser(tmp_path, monkeypatch):
    from soma_shm.app import persistence

    doc = SomaDocument()
    for i in range(50):
        doc.add_partial(line(0.1 * i, 0.1 * i + 0.5, 100.0 + 37.0 * i, amp=0.01 * (i + 1)))
    doc.set_muted([doc.partials[3].id], True)
    doc.save(tmp_path / "x.soma")
    fast = SomaDocument.load(tmp_path / "x.soma")
    monkeypatch.setattr(persistence, "_orjson", None)
    slow = SomaDocument.load(tmp_path / "x.soma")
    assert snapshot(fast) == snapshot(slow) == snapshot(doc)
    # What the fast parser refuses still gets the standard parser's reading and errors.
    monkeypatch.undo()
    (tmp_path / "nan.soma").write_text('{"data": {"partials": [{"id": "x", "points": [[0.1, NaN, 0.2]]}]}}')
    with pytest.raises(ParameterError, match="partial x: point 0 is not finite"):
        SomaDocument.load(tmp_path / "nan.soma")
    (tmp_path / "bad.soma").write_text('{"data": [1, 2,')
    with pytest.raises(ParameterError, match="invalid JSON at line 1"):
        SomaDocument.load(tmp_path / "bad.soma")
