"""CheckpointStore: round trip, crash mid-save, corrupt files, pruning, disk errors, and the fingerprint helpers."""
import errno
import os

import pytest

from anomaly_detector.inputs import checkpoints as checkpoints_module
from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.fingerprint import Fingerprint, fingerprint_fd, fingerprint_matches, tail_digest


def _fp(text=b"abc"):
    return Fingerprint(len(text), "d" * 32)


def test_round_trip_and_is_new(tmp_path):
    path = str(tmp_path / "cp")
    store = CheckpointStore(path)
    assert store.is_new and len(store) == 0
    store.record(1, 2, _fp(), 0, "/var/log/a.log")
    assert store.commit(1, 2, 40, "/var/log/a.log")
    assert not store.commit(9, 9, 40)
    assert store.save()
    again = CheckpointStore(path)
    assert not again.is_new
    entry = again.lookup(1, 2)
    assert (entry.offset, entry.path, entry.fingerprint) == (40, "/var/log/a.log", _fp())


def test_save_if_due_only_when_dirty_and_interval_passed(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp"))
    assert not store.save_if_due(0)          # nothing changed
    store.record(1, 2, _fp(), 0, "a")
    assert store.save_if_due(60)             # never saved before
    store.commit(1, 2, 10)
    assert not store.save_if_due(60)         # too soon
    assert store.save_if_due(0)


def test_corrupt_newest_file_falls_back_to_previous_generation(tmp_path):
    path = str(tmp_path / "cp")
    store = CheckpointStore(path)
    store.record(1, 2, _fp(), 10, "a")
    store.save()
    store.commit(1, 2, 20)
    store.save()
    with open(path, "r+b") as f:             # a torn write or a flipped byte on disk
        f.seek(-3, os.SEEK_END)
        f.write(b"XYZ")
    recovered = CheckpointStore(path)
    assert recovered.lookup(1, 2).offset == 10
    assert any(name.startswith("cp.bad-") for name in os.listdir(tmp_path))


def test_crash_between_temp_write_and_rename_keeps_the_last_good_file(tmp_path, monkeypatch):
    path = str(tmp_path / "cp")
    store = CheckpointStore(path)
    store.record(1, 2, _fp(), 10, "a")
    store.save()
    store.commit(1, 2, 99)

    def die_at_rename(src, dst):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(os, "replace", die_at_rename)
    with pytest.raises(KeyboardInterrupt):
        store.save()
    monkeypatch.undo()
    assert CheckpointStore(path).lookup(1, 2).offset == 10
    assert [n for n in os.listdir(tmp_path) if n.startswith(".cp.")] == []   # temp file cleaned up


def test_disk_full_is_counted_and_retried(tmp_path, monkeypatch):
    store = CheckpointStore(str(tmp_path / "cp"))
    store.record(1, 2, _fp(), 10, "a")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints_module, "write_json_snapshot", no_space)
    assert store.save() is False and store.save_errors == 1
    monkeypatch.undo()
    assert store.save_if_due(0)
    assert CheckpointStore(str(tmp_path / "cp")).lookup(1, 2).offset == 10


def test_malformed_entries_are_dropped_not_fatal(tmp_path):
    from anomaly_detector.storage.atomic import write_json_snapshot
    path = str(tmp_path / "cp")
    good = {"device": 1, "inode": 2, "fingerprint": [3, "ab"], "offset": 5, "path": "a", "updated": 1.0}
    write_json_snapshot(path, "file_checkpoints", 1, {"entries": [good, {"device": "x"}, [1, 2]]})
    store = CheckpointStore(path)
    assert len(store) == 1 and store.lookup(1, 2).offset == 5


def test_stale_entries_pruned_after_max_age(tmp_path):
    now = [1000.0]
    store = CheckpointStore(str(tmp_path / "cp"), max_age_seconds=100, clock=lambda: now[0])
    store.record(1, 1, _fp(), 0, "old")
    now[0] = 1050.0
    store.record(1, 2, _fp(), 0, "recent")
    now[0] = 1120.0
    store.touch(1, 2, "recent")              # not yet a minute old: no rewrite needed
    assert store.save()
    assert [e.path for e in CheckpointStore(str(tmp_path / "cp")).entries()] == ["recent"]
    assert store.pruned == 1


def test_touch_keeps_a_live_file_from_being_pruned(tmp_path):
    now = [0.0]
    store = CheckpointStore(str(tmp_path / "cp"), max_age_seconds=100, clock=lambda: now[0])
    store.record(1, 1, _fp(), 0, "live")
    for step in range(1, 6):
        now[0] = step * 61.0
        store.touch(1, 1, "live")
    store.prune()
    assert store.lookup(1, 1) is not None


def test_fingerprint_grows_with_the_file_and_detects_rewrites(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        short = fingerprint_fd(fd, 1024)
        assert short.length == 6
        with open(path, "ab") as f:
            f.write(b"x" * 2000)
        assert fingerprint_matches(fd, short)              # grown, same start
        assert fingerprint_fd(fd, 1024).length == 1024
        os.truncate(path, 3)
        assert not fingerprint_matches(fd, short)          # shorter than what was hashed
        assert tail_digest(fd, 10) is None                 # beyond the end
        assert tail_digest(fd, 3) == fingerprint_fd(fd, 3).digest
    finally:
        os.close(fd)


def test_fingerprint_json_round_trip():
    fp = Fingerprint(12, "ab" * 16)
    assert Fingerprint.from_json(fp.to_json()) == fp


@pytest.mark.parametrize("payload", [[1, 2], {"entries": "nope"}, {}])
def test_wrong_shaped_payload_starts_empty(tmp_path, payload):
    from anomaly_detector.storage.atomic import write_json_snapshot
    path = str(tmp_path / "cp")
    write_json_snapshot(path, "file_checkpoints", 1, payload)
    assert len(CheckpointStore(path)) == 0


def test_commit_only_moves_forward_record_resets(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp"))
    store.record(1, 2, _fp(), 0, "a")
    assert store.commit(1, 2, 50)
    assert not store.commit(1, 2, 20)        # a late commit cannot move a restart backwards
    assert store.lookup(1, 2).offset == 50
    store.record(1, 2, _fp(), 0, "a")        # truncated: starts over
    assert store.commit(1, 2, 20) and store.lookup(1, 2).offset == 20


def test_entries_beyond_max_entries_pruned_least_recently_touched_first(tmp_path):
    now = [0.0]
    store = CheckpointStore(str(tmp_path / "cp"), max_entries=3, clock=lambda: now[0])
    for inode in range(5):
        now[0] = float(inode)
        store.record(1, inode, _fp(), 0, "f%d" % inode)
    store.save()
    assert sorted(e.inode for e in store.entries()) == [2, 3, 4] and store.pruned == 2


def test_ring_is_kept_across_a_restart_and_a_restart_from_zero(tmp_path):
    path = str(tmp_path / "cp.json")
    store = CheckpointStore(path)
    store.record(1, 2, _fp(), 0, "/x/a.log")
    store.record(1, 3, _fp(), 0, "/x/b.log")
    assert store.ring_of(1, 2) is None           # never routed yet
    store.set_ring(1, 2, 1)
    store.record(1, 2, _fp(b"new"), 0, "/x/a.log")   # truncated: starts over, same worker
    assert store.save()
    again = CheckpointStore(path)
    assert again.ring_of(1, 2) == 1 and again.ring_of(1, 3) is None and again.ring_of(9, 9) is None
