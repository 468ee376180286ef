"""Snapshots: atomic replace, one previous generation, corrupt files set aside, never code execution."""
import os
import pickle

import pytest

from anomaly_detector.storage import atomic
from anomaly_detector.storage.atomic import read_json_snapshot, read_snapshot, write_json_snapshot, write_snapshot


def test_roundtrip_and_previous_generation(tmp_path):
    path = str(tmp_path / "templates.snap")
    write_json_snapshot(path, "templates", 1, {"gen": 1})
    write_json_snapshot(path, "templates", 1, {"gen": 2})
    assert read_json_snapshot(path, "templates", 1) == (1, {"gen": 2})
    assert read_json_snapshot(path + ".prev", "templates", 1) is None or os.path.exists(path + ".prev")


def _damage(path, how):
    data = open(path, "rb").read()
    if how == "flip":
        i = len(data) - 3
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
    elif how == "truncate":
        data = data[: len(data) // 2]
    elif how == "zero":
        data = b"\0" * len(data)
    elif how == "pickle":
        data = pickle.dumps({"gen": 666})
    open(path, "wb").write(data)


def test_each_corruption_falls_back_to_previous_and_is_quarantined(tmp_path):
    for how in ("flip", "truncate", "zero", "pickle"):
        path = str(tmp_path / ("%s.snap" % how))
        write_json_snapshot(path, "baselines", 1, {"gen": 1})
        write_json_snapshot(path, "baselines", 1, {"gen": 2})
        _damage(path, how)
        assert read_json_snapshot(path, "baselines", 1) == (1, {"gen": 1}), how
        assert any(name.startswith("%s.snap.bad-" % how) for name in os.listdir(tmp_path)), how


def test_wrong_kind_and_newer_version_are_refused(tmp_path):
    path = str(tmp_path / "x.snap")
    write_snapshot(path, "statistics", 5, b"{}")
    assert read_snapshot(path, "templates", 5) is None
    write_snapshot(path, "statistics", 9, b"{}")
    assert read_snapshot(path, "statistics", 5) is None


def test_missing_file_is_none(tmp_path):
    assert read_snapshot(str(tmp_path / "none.snap"), "templates", 1) is None


def test_no_temporary_files_left(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_generations", 2)    # the file and one previous generation
    path = str(tmp_path / "t.snap")
    for i in range(5):
        write_json_snapshot(path, "templates", 1, {"i": i})
    assert sorted(os.listdir(tmp_path)) == ["t.snap", "t.snap.prev"]


def test_every_generation_stays_in_place_while_a_write_rotates_them(tmp_path, monkeypatch):
    """A backup or cleanup looking mid-rotation finds every kept generation, each whole and in order."""
    monkeypatch.setattr(atomic, "_generations", 3)
    path = str(tmp_path / "t.snap")
    for i in range(3):
        write_json_snapshot(path, "templates", 1, {"i": i})
    generations = atomic.generation_paths(path)
    replace = os.replace
    missing = []

    def watched(src, dst):
        missing.extend(p for p in generations if not os.path.exists(p))
        replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", watched)
    write_json_snapshot(path, "templates", 1, {"i": 3})
    assert missing == []
    assert [read_json_snapshot(p, "templates", 1)[1]["i"] for p in generations] == [3, 2, 1]
    assert sorted(os.listdir(tmp_path)) == ["t.snap", "t.snap.prev", "t.snap.prev2"]


def test_a_filesystem_without_hard_links_still_rotates(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(atomic.os, "link", refuse)
    path = str(tmp_path / "t.snap")
    for i in range(3):
        write_json_snapshot(path, "templates", 1, {"i": i})
    assert [read_json_snapshot(p, "templates", 1)[1]["i"] for p in (path, path + ".prev")] == [2, 1]


def test_peek_reads_for_an_observer_and_never_moves_a_file(tmp_path):
    path = str(tmp_path / "detection.json")
    with pytest.raises(FileNotFoundError):
        atomic.peek_json_snapshot(path, "detection-baselines")
    write_json_snapshot(path, "detection-baselines", 1, {"meta": {"lines_seen": 5}, "pad": "x" * 1000})
    assert atomic.peek_json_snapshot(path, "detection-baselines")["meta"] == {"lines_seen": 5}
    with pytest.raises(atomic.SnapshotError) as big:
        atomic.peek_json_snapshot(path, "detection-baselines", max_bytes=100)
    assert big.value.reason == "too_large"
    with pytest.raises(atomic.SnapshotError) as newer:
        atomic.peek_json_snapshot(path, "detection-baselines", max_version=0)
    assert newer.value.reason == "version"
    with pytest.raises(atomic.SnapshotError) as foreign:
        atomic.peek_json_snapshot(path, "templates")
    assert foreign.value.reason == "unreadable"
    data = bytearray(open(path, "rb").read())
    data[-3] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(atomic.SnapshotError) as damaged:
        atomic.peek_json_snapshot(path, "detection-baselines")
    assert damaged.value.reason == "unreadable"
    assert sorted(os.listdir(tmp_path)) == ["detection.json"], "an observer sets nothing aside"
