"""State files: each kind of damage is named, set aside as .bad-<time> and counted; a write that fails
(a full disk) leaves both generations intact and is reported until a write succeeds; the old
workers/<N>/ layout moves to the top-level one; the dead-letter file is bounded."""
import json
import os
import pickle
import subprocess
import uuid

import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.shm import SharedArena
from anomaly_detector.storage import atomic
from anomaly_detector.storage.health import LOAD_FAILURE_REASONS, STATE_HEALTH, StateHealth
from anomaly_detector.storage.layout import migrate_layout, replay_paths, worker_paths
from anomaly_detector.worker.poison import DeadLetterFile


def _two_generations(path):
    atomic.write_json_snapshot(path, "baselines", 2, {"gen": 1})
    atomic.write_json_snapshot(path, "baselines", 2, {"gen": 2})


DAMAGE = {
    "checksum": lambda data: data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:],    # one flipped bit
    "truncated": lambda data: data[: len(data) // 2],
    "zero_filled": lambda data: b"\0" * len(data),
    "foreign": lambda data: pickle.dumps({"gen": 666}),                          # another format
    "version": lambda data: data.replace(b" baselines 2 ", b" baselines 7 ", 1),
}


@pytest.mark.parametrize("reason", sorted(DAMAGE))
def test_each_damage_is_named_set_aside_counted_and_the_previous_generation_read(tmp_path, reason, caplog):
    path = str(tmp_path / "detection.json")
    _two_generations(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(DAMAGE[reason](data))
    before = STATE_HEALTH.load_failures[reason]
    assert atomic.read_json_snapshot(path, "baselines", 2) == (2, {"gen": 1})
    assert STATE_HEALTH.load_failures[reason] == before + 1
    bad = [n for n in os.listdir(tmp_path) if n.startswith("detection.json.bad-")]
    assert len(bad) == 1 and not os.path.exists(path)
    with open(tmp_path / bad[0], "rb") as f:
        assert f.read() == DAMAGE[reason](data)        # kept as found, for a look
    [error] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "(%s)" % reason in error and "trying the previous generation" in error


def test_a_pickle_payload_behind_a_valid_header_is_not_json_and_never_unpickled(tmp_path, monkeypatch):
    """A checksummed file whose payload is a pickle: json.loads refuses it; pickle is never called."""
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    path = str(tmp_path / "t.json")
    atomic.write_snapshot(path, "templates", 1, pickle.dumps({"x": 1}))
    before = STATE_HEALTH.load_failures["shape"]
    assert atomic.read_json_snapshot(path, "templates", 1) is None
    assert STATE_HEALTH.load_failures["shape"] == before + 1


def test_two_bad_files_in_one_second_get_distinct_names(tmp_path):
    path = str(tmp_path / "t.json")
    for _ in range(2):
        with open(path, "wb") as f:
            f.write(b"\0" * 10)
        assert atomic.read_json_snapshot(path, "templates", 1) is None
    assert len([n for n in os.listdir(tmp_path) if ".bad-" in n]) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (root only); the test is skipped where it cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.decode().strip())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_keeps_both_generations_and_is_reported_until_a_write_succeeds(small_disk):
    path = str(small_disk / "detection.json")
    _two_generations(path)
    errors = STATE_HEALTH.write_errors
    with pytest.raises(OSError):
        atomic.write_json_snapshot(path, "baselines", 2, {"gen": 3, "pad": "x" * 200_000})
    assert STATE_HEALTH.write_errors == errors + 1 and path in STATE_HEALTH.failing
    assert sorted(os.listdir(small_disk)) == ["detection.json", "detection.json.prev"]   # no temporary left
    assert atomic.read_json_snapshot(path, "baselines", 2) == (2, {"gen": 2})
    atomic.write_json_snapshot(path, "baselines", 2, {"gen": 4})                       # space is back
    assert path not in STATE_HEALTH.failing
    assert atomic.read_json_snapshot(path, "baselines", 2) == (2, {"gen": 4})


def test_publish_moves_what_grew_to_a_counter_row_and_sets_the_failing_gauge():
    health = StateHealth()
    with SharedArena("s" + uuid.uuid4().hex[:12]) as arena:
        control = ControlBlock.create(arena.allocate("control", control_bytes(2, 2)).buf, 2, 2)
        row = control.counters(0)
        health.load_failed("zero_filled")
        health.write_failed("/x")
        health.publish(row)
        health.publish(row)        # nothing new: nothing added twice
        totals = control.counter_totals()
        assert totals["state_load_zero_filled"] == 1 and totals["state_write_errors"] == 1
        assert totals["state_writes_failing"] == 1
        health.write_ok("/x")
        health.publish(row)
        assert control.counter_totals()["state_writes_failing"] == 0
        assert sum(control.counter_totals()["state_load_" + r] for r in LOAD_FAILURE_REASONS) == 1


def _touch(path, text="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def test_the_old_per_worker_layout_moves_to_the_top_level_once(tmp_path):
    state = str(tmp_path)
    for n in ("0", "1"):
        _touch(os.path.join(state, "workers", n, "baselines", "templates.json"), "t" + n)
        _touch(os.path.join(state, "workers", n, "baselines", "detection.json.prev"), "p" + n)
        _touch(os.path.join(state, "workers", n, "statistics", "detection.json"), "s" + n)
        _touch(os.path.join(state, "workers", n, "alerting", "tracker.json"), "a" + n)
    _touch(os.path.join(state, "dead-letter.jsonl"), "d")
    assert migrate_layout(state) == 7
    assert open(os.path.join(state, "dead-letter", "dead-letter.jsonl")).read() == "d"
    for n in (0, 1):
        paths = worker_paths(state, n)
        assert open(paths.templates).read() == "t%d" % n
        assert open(paths.detection_baselines + ".prev").read() == "p%d" % n
        assert open(paths.detection_statistics).read() == "s%d" % n
        assert open(os.path.join(paths.alerting, "tracker.json")).read() == "a%d" % n
    assert not os.path.exists(os.path.join(state, "workers"))
    assert migrate_layout(state) == 0
    assert replay_paths(state) == worker_paths(state, 0)     # replay --from-state <state_dir>


def test_a_migration_never_overwrites_the_new_layout(tmp_path, caplog):
    state = str(tmp_path)
    _touch(os.path.join(state, "workers", "0", "baselines", "templates.json"), "old")
    _touch(worker_paths(state, 0).templates, "new")
    assert migrate_layout(state) == 0
    assert open(worker_paths(state, 0).templates).read() == "new"
    assert os.path.exists(os.path.join(state, "workers", "0", "baselines", "templates.json"))
    assert "both exist" in caplog.text


def test_the_dead_letter_file_refuses_records_past_its_bound(tmp_path):
    path = str(tmp_path / "dead-letter" / "dead-letter.jsonl")
    record = json.dumps({"line": "x" * 80}).encode() + b"\n"
    letters = DeadLetterFile(path, max_bytes=10 * len(record))
    assert letters.write(record * 7) == 0
    assert letters.write(record * 7) == 4          # three fit, four refused
    assert os.path.getsize(path) == 10 * len(record) and letters.refused == 4
    letters.close()


def test_a_write_cut_short_by_a_full_disk_is_finished_without_a_torn_or_doubled_record(small_disk):
    from anomaly_detector.storage.appendfile import AppendFile
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            f.write(b"f" * 60_000)
        except OSError:
            pass
    out = AppendFile(str(small_disk / "scored.jsonl"))
    data = b"".join(b'{"seq": %d}\n' % i for i in range(2000))
    with pytest.raises(OSError) as caught:
        out.write(data)
    written = caught.value.written
    assert 0 <= written < len(data) and os.path.getsize(small_disk / "scored.jsonl") == written
    os.unlink(filler)                             # space is back: the rest goes on where it stopped
    out.write(data[written:])
    out.close()
    assert (small_disk / "scored.jsonl").read_bytes() == data


def test_snapshot_generations_are_kept_and_tried_newest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_generations", 3)     # [retention] snapshot_generations = 3
    path = str(tmp_path / "templates.json")
    for gen in range(1, 5):
        atomic.write_json_snapshot(path, "templates", 1, {"gen": gen})
    assert sorted(os.listdir(tmp_path)) == ["templates.json", "templates.json.prev", "templates.json.prev2"]
    assert [atomic.read_json_snapshot(p, "templates", 1)[1]["gen"] for p in atomic.generation_paths(path)] == [4, 3, 2]
    for damaged in (path, path + ".prev"):
        with open(damaged, "wb") as f:
            f.write(b"\0" * 64)
    assert atomic.read_json_snapshot(path, "templates", 1) == (1, {"gen": 2})
    assert len([n for n in os.listdir(tmp_path) if ".bad-" in n]) == 2


def test_the_generations_key_is_supported_and_at_least_two(tmp_path):
    from anomaly_detector.config.loader import load_config
    for value, ok in (("5", True), ("1", False)):
        path = tmp_path / "config.ini"
        path.write_text("[paths]\nstate_dir = %s\nlog_dir = %s\n[inputs]\n[[app]]\npath = %s\n[retention]\n"
                        "snapshot_generations = %s\n" % (tmp_path / "s", tmp_path / "l", tmp_path / "a.log", value))
        cfg, problems = load_config(str(path), environment=False)
        assert (cfg is not None) == ok, problems
        if ok:
            assert cfg["retention"]["snapshot_generations"] == 5


def test_no_loader_that_can_run_code_is_used_anywhere_in_the_package():
    """State is JSON behind a checksummed header; pickle, marshal, shelve, numpy's pickle-capable load
    and yaml.load are not used by any module (a state file must never be able to run code)."""
    import re
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "anomaly_detector")
    banned = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|marshal|shelve|dill)\b|np\.load\(|numpy\.load\(|"
                        r"allow_pickle\s*=\s*True|yaml\.(unsafe_)?load\(", re.M)
    found = []
    for directory, _dirs, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(directory, name)) as f:
                    found += ["%s: %s" % (name, m.group(0).strip()) for m in banned.finditer(f.read())]
    assert found == []


def test_a_series_book_with_no_series_survives_its_own_snapshot():
    """Before: a worker that never saw a numeric parameter (an idle worker) saved statistics its next
    start set aside as the wrong shape (labels.reshape(0, -1) raises), with an ERROR at every restart."""
    from anomaly_detector.detection.series import SeriesBook
    book = SeriesBook(max_series=10, max_labels=4)
    saved = json.loads(json.dumps(book.state_dict()))
    again = SeriesBook(max_series=10, max_labels=4)
    again.load(saved)
    assert again.state_dict() == book.state_dict()
