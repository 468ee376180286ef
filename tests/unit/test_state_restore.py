"""State files with a valid checksum and the wrong shape are set aside, never crash a restore; orphaned
temporaries of interrupted writes are swept when their owner loads.

Real models: a pipeline learns a small numbered log, saves, and the tests rewrite one field of the
saved JSON under a fresh checksum (what a foreign release or a hand edit leaves behind).
"""
import json
import logging
import os
import shutil
import time

import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.storage.atomic import (
    StateShapeError,
    _decode,
    restore_json_snapshot,
    sweep_orphan_temps,
    write_json_snapshot,
    write_snapshot,
)

KINDS = {"baselines/detection.json": "detection-baselines", "statistics/detection.json": "detection-statistics",
         "baselines/templates.json": "templates"}


def _lines(n, start=0):
    out = []
    for i in range(start, start + n):
        if i % 10 == 7:
            out.append("2026-03-02T10:%02d:%02d.000Z WARN db-%d slow query took %d ms user=u%d request_id=r%05d\n"
                       % (i // 600 % 60, i // 10 % 60, i % 3, 10 + i % 400, i % 40, i // 30))
        elif i % 10 == 3:
            out.append("2026-03-02T10:%02d:%02d.000Z INFO api-%d request_id=r%05d done in %d ms\n"
                       % (i // 600 % 60, i // 10 % 60, i % 2, i // 30, 5 + i % 50))
        else:
            out.append("2026-03-02T10:%02d:%02d.000Z INFO web-%d GET /item/%d 200 %dms seq=%d\n"
                       % (i // 600 % 60, i // 10 % 60, i % 3, i % 97, 20 + i % 13, i))
    return "".join(out).encode()


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """A state directory saved twice (so each file has a previous generation)."""
    directory = str(tmp_path_factory.mktemp("state"))
    pipeline = Pipeline(default_config(), fmt="plain")
    for part in range(2):
        for _ in pipeline.process_buffer(_lines(3000, 3000 * part), "app.log"):
            pass
        pipeline.save(directory)
    return directory


@pytest.fixture
def state(saved_state, tmp_path):
    target = str(tmp_path / "state")
    shutil.copytree(saved_state, target)
    return target


def _rewrite(state, name, change, generation=""):
    """Apply change(obj) to the JSON of one state file and write it back with a valid checksum."""
    path = os.path.join(state, name) + generation
    version, payload = _decode(path, KINDS[name], 99)
    obj = json.loads(payload)
    change(obj)
    write_snapshot(path + ".tmp-rewrite", KINDS[name], version, json.dumps(obj).encode())
    os.replace(path + ".tmp-rewrite", path)


def _set_aside(state, name):
    directory, base = os.path.split(os.path.join(state, name))
    return [n for n in os.listdir(directory) if n.startswith(base + ".bad-")]


def _scores(pipeline):
    return sum(1 for _ in b"".join(pipeline.process_buffer(_lines(300, 9000), "app.log")).splitlines())


def _shorten(key):
    def change(obj):
        obj[key] = obj[key][:-1]
    return change


@pytest.mark.parametrize("name,change,what", [
    ("baselines/detection.json", lambda o: o["t2"]["templates"].__setitem__(
        "level", o["t2"]["templates"]["level"][:3]), "different lengths"),
    ("baselines/detection.json", lambda o: o.pop("t1"), "no 't1'"),
    ("baselines/detection.json", lambda o: o["t2"]["templates"].__setitem__("age", ["x"] * 5), "ValueError"),
    ("statistics/detection.json", lambda o: o["t3"].__setitem__(
        "template_count", o["t3"]["template_count"][:2]), "different lengths"),
    ("statistics/detection.json", lambda o: o["t3"].pop("num_stats"), "KeyError"),
    ("statistics/detection.json", lambda o: o["t3"]["slot_index"][0].__setitem__(0, 10 ** 6), "beyond the"),
    ("statistics/detection.json", lambda o: o["t4"].__setitem__("dur_n", [[1.0, 2.0]]), "dimensions"),
    ("statistics/detection.json", lambda o: o["t4"].__setitem__("dur_var", [1.0]), "different lengths"),
    ("statistics/detection.json", lambda o: o["t4"]["sessions"]["wf"].__setitem__(0, 10 ** 6), "store.wf holds"),
    ("baselines/templates.json", lambda o: o.pop("next_id"), "no 'next_id'"),
    ("baselines/templates.json", lambda o: o["templates"].append([1, "abc", 1, 1, []]), "tokens"),
])
def test_wrong_shape_is_set_aside_and_the_previous_generation_restored(state, caplog, name, change, what):
    _rewrite(state, name, change)
    pipeline = Pipeline(default_config(), fmt="plain")
    with caplog.at_level(logging.ERROR):
        assert pipeline.load(state) is True
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "wrong shape" in errors[0] and name.split("/")[-1] in errors[0] and what in errors[0]
    assert "trying the previous generation" in errors[0]
    assert len(_set_aside(state, name)) == 1
    assert len(pipeline.miner) > 0 and pipeline.engine.lines_seen > 0
    assert _scores(pipeline) == 300


def test_both_generations_of_the_wrong_shape_start_fresh_and_score(state, caplog):
    name = "baselines/detection.json"
    breaking = lambda o: o["t2"]["sources"].__setitem__("phi", [1.0])  # noqa: E731
    _rewrite(state, name, breaking)
    _rewrite(state, name, breaking, generation=".prev")
    pipeline = Pipeline(default_config(), fmt="plain")
    with caplog.at_level(logging.ERROR):
        assert pipeline.load(state) is False
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and "starting fresh" in errors[1]
    assert pipeline.engine.lines_seen == 0
    assert _scores(pipeline) == 300
    assert not os.path.exists(os.path.join(state, name)) and not os.path.exists(os.path.join(state, name + ".prev"))


def test_statistics_of_the_wrong_shape_leave_baselines_restored_and_tiers_fresh(state):
    name = "statistics/detection.json"
    broken = lambda o: o["t3"].__setitem__("cat_hash", [["not-a-number"]])  # noqa: E731
    _rewrite(state, name, broken)
    _rewrite(state, name, broken, generation=".prev")
    pipeline = Pipeline(default_config(), fmt="plain")
    assert pipeline.load(state) is True
    assert pipeline.engine.lines_seen > 0
    assert pipeline.engine.tiers["t3"].next_slot == Pipeline(default_config()).engine.tiers["t3"].next_slot
    assert _scores(pipeline) == 300


def test_restore_function_errors_of_other_kinds_propagate(tmp_path):
    """Only shape errors are set aside: a bug elsewhere (say MemoryError) must not eat the file."""
    path = str(tmp_path / "x.json")
    write_json_snapshot(path, "k", 1, {"a": 1})

    def restore(version, obj):
        raise MemoryError
    with pytest.raises(MemoryError):
        restore_json_snapshot(path, "k", 1, restore)
    assert os.path.exists(path)


def test_require_raises_a_shape_error(tmp_path):
    path = str(tmp_path / "x.json")
    write_json_snapshot(path, "k", 1, [])

    def restore(version, obj):
        from anomaly_detector.storage.atomic import require
        require(isinstance(obj, dict), "not an object")
    assert restore_json_snapshot(path, "k", 1, restore) is None
    with pytest.raises(StateShapeError):
        from anomaly_detector.storage.atomic import require
        require(False, "x")


def test_miner_snapshot_of_the_wrong_shape_gives_an_empty_miner(tmp_path, caplog):
    path = str(tmp_path / "templates.json")
    write_json_snapshot(path, "templates", 1, {"next_id": 3, "clock": 1, "templates": [[0, 5, 1, 1, []]]})
    with caplog.at_level(logging.ERROR):
        miner = TemplateMiner.load(path)
    assert "starting fresh" in caplog.records[-1].getMessage()     # there is no previous generation
    assert len(miner) == 0
    assert [n for n in os.listdir(tmp_path) if ".bad-" in n]


def test_orphaned_temporaries_are_swept_when_the_owner_loads(tmp_path, caplog):
    path = str(tmp_path / "detection.json")
    write_json_snapshot(path, "k", 1, {"a": 1})
    old = [tmp_path / ".detection.json.ab12cd_9", tmp_path / ".detection.json.zzzzzzzz"]
    young = tmp_path / ".detection.json.q1w2e3r4"
    others = [tmp_path / ".detection.json.toolongname", tmp_path / ".other.json.ab12cd34",
              tmp_path / "detection.json.ab12cd34"]
    for f in old + others + [young]:
        f.write_bytes(b"partial")
    stamp = time.time() - 3600
    for f in old + others:
        os.utime(f, (stamp, stamp))
    with caplog.at_level(logging.WARNING):
        assert restore_json_snapshot(path, "k", 1, lambda v, o: o) == {"a": 1}
    left = set(os.listdir(tmp_path))
    assert not any(f.name in left for f in old)
    assert young.name in left and all(f.name in left for f in others)
    assert any("removed 2 temporary file(s)" in r.getMessage() for r in caplog.records)
    assert sweep_orphan_temps(path, min_age_seconds=0) == 1   # the young one, once it is old enough


def test_checkpoint_store_sweeps_its_orphaned_temporaries(tmp_path):
    path = tmp_path / "app.json"
    orphan = tmp_path / ".app.json.k3j4h5g6"
    orphan.write_bytes(b"{")
    os.utime(orphan, (1, 1))
    CheckpointStore(str(path))
    assert not orphan.exists()


def test_pipeline_load_sweeps_a_first_write_killed_before_any_snapshot_existed(tmp_path):
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    orphan = baselines / ".templates.json.0a1b2c3d"
    orphan.write_bytes(b"ADSNAP1 partial")
    os.utime(orphan, (1, 1))
    assert Pipeline(default_config(), fmt="plain").load(str(tmp_path)) is False
    assert not orphan.exists()
