"""The page's readers (metrics/page_data.py) on files written by the real writers: the engine's and the
miner's snapshots, the input's checkpoints. Reads are bounded and never
move a file the workers own."""
import os

import numpy as np

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.incidents import IncidentBook
from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.fingerprint import Fingerprint
from anomaly_detector.ipc.control import RuntimeFlags
from anomaly_detector.metrics import page_data
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.storage.atomic import write_json_snapshot
from anomaly_detector.storage.layout import flat_paths


class Notes:
    def __init__(self):
        self.got = []

    def __call__(self, reason, note):
        self.got.append((reason, note))


def add(book, source, ts, template_id, sample):
    return book.add(source, ts, 90.0, {"t1": 90.0}, template_id, "disk <*> failed",
                    [("critical rule: 1 line", "0", "1", 90.0)], sample, opened_by=str(template_id),
                    family="lines:%d" % template_id)


def engine_snapshot(directory, book, meta=None):
    """What Engine.save writes (baselines: meta, t1, t2, incidents)."""
    write_json_snapshot(os.path.join(directory, "baselines", "detection.json"), "detection-baselines", 1,
                        {"meta": meta or {}, "t1": {}, "t2": {}, "incidents": book.state()})


def test_a_snapshot_over_the_bound_is_not_read_and_a_damaged_one_is_left_where_it_is(tmp_path):
    book = IncidentBook(window_seconds=60)
    add(book, "app", 100.0, 7, "x" * 5000)
    engine_snapshot(str(tmp_path / "big"), book)
    path = tmp_path / "bad" / "baselines" / "detection.json"
    small = IncidentBook(window_seconds=60)
    add(small, "app", 100.0, 7, "disk sda failed")
    engine_snapshot(str(tmp_path / "bad"), small)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")     # checksum no longer matches
    notes = Notes()
    cache = page_data.SnapshotCache(4096, 10)
    got = [cache.get(str(tmp_path / d / "baselines" / "detection.json"), "detection-baselines", notes) for d in ("big", "bad")]
    assert got == [(None, None), (None, None)]
    assert [reason for reason, _ in notes.got] == ["too_large", "unreadable"]
    assert "over [http] page_max_read_mb" in notes.got[0][1]
    assert path.exists() and not list(path.parent.glob("*.bad-*"))   # the worker's file, not ours to move


def test_a_snapshot_is_decoded_again_only_when_it_changed(tmp_path):
    book = IncidentBook(window_seconds=60)
    add(book, "app", 100.0, 7, "first")
    engine_snapshot(str(tmp_path), book)
    path = str(tmp_path / "baselines" / "detection.json")
    cache, notes = page_data.SnapshotCache(1 << 20, 10), Notes()
    first, previous = cache.get(path, "detection-baselines", notes)
    again, _ = cache.get(path, "detection-baselines", notes)
    assert again is first and previous is None
    assert set(first) == {"meta"}          # a digest is kept, not the models (t1, t2, incidents, ...)
    add(book, "app", 101.0, 7, "second")
    engine_snapshot(str(tmp_path), book)
    newer, previous = cache.get(path, "detection-baselines", notes)
    assert newer is not first and previous is first


def test_top_templates_merge_the_workers_and_rate_from_two_snapshots(tmp_path):
    cache, notes = page_data.SnapshotCache(1 << 20, 10), Notes()
    dirs = [str(tmp_path / "w0"), str(tmp_path / "w1")]
    miners = [TemplateMiner(), TemplateMiner()]

    def save(w):
        miners[w].save(os.path.join(dirs[w], "baselines", "templates.json"))

    for i in range(30):
        miners[0].add_line("GET /item/%d 200 in %d ms" % (i, i + 10))
    for i in range(5):
        miners[0].add_line("disk sd%d failed" % i)
        miners[1].add_line("disk sd%d failed" % i)
    save(0)
    save(1)
    workers = [flat_paths(d) for d in dirs]
    first = page_data.top_templates(workers, cache, 10, notes)
    assert [(r["count"], r["rate"]) for r in first] == [(30, None), (10, None)]
    assert "<*>" in first[0]["template"] and first[1]["template"].startswith("disk")
    for i in range(20):
        miners[0].add_line("GET /item/%d 200 in %d ms" % (i, i + 10))
    save(0)
    second = page_data.top_templates(workers, cache, 10, notes)
    assert second[0]["count"] == 50 and second[0]["rate"] > 0
    assert second[1]["count"] == 10 and second[1]["rate"] == 0.0   # w0 saw no new one; w1 has one snapshot
    assert len(page_data.top_templates(workers, cache, 1, notes)) == 1 and notes.got == []


def test_input_lag_is_the_bytes_past_the_committed_checkpoint(tmp_path):
    cfg = default_config()
    cfg["paths"]["state_dir"] = str(tmp_path / "state")
    log = tmp_path / "app.log"
    log.write_bytes(b"a" * 1000)
    cfg["inputs"] = {"app": {"type": "file", "path": str(log)}, "other": {"type": "stdin"}}
    store = CheckpointStore(str(tmp_path / "state" / "checkpoints" / "app.json"))
    st = os.stat(log)
    store.record(st.st_dev, st.st_ino, Fingerprint(64, "x"), 600, str(log))
    store.save()
    notes = Notes()
    rows = page_data.input_lag(cfg, page_data.SnapshotCache(1 << 20, 10), 10, notes)
    assert rows == [{"input": "app", "type": "file", "lag_bytes": 400, "files": 1, "known": 1},
                    {"input": "other", "type": "stdin", "lag_bytes": None, "files": None, "known": None}]
    assert page_data.input_lag(cfg, page_data.SnapshotCache(1 << 20, 10), 0, notes)[0]["files"] == 0


def test_tier_status_shows_switches_and_warm_up(tmp_path):
    cfg = default_config()
    cfg["detection"]["tier3"]["enabled"] = False
    cfg["detection"]["warmup_lines"], cfg["detection"]["warmup_seconds"] = 100, 60
    book = IncidentBook(window_seconds=60)
    engine_snapshot(str(tmp_path / "w0"), book, {"lines_seen": 150, "first_time": 0.0, "now": 120.0})
    engine_snapshot(str(tmp_path / "w1"), book, {"lines_seen": 50, "first_time": 0.0, "now": 120.0})
    flags = RuntimeFlags(tier4_enabled=0, backpressure=0, batch_size=10, learning_rate_factor=1.0,
                         workers_wanted=1, config_generation=0, relief_generation=0, reload_ok=1,
                         reloads_rejected=0)
    cache, notes = page_data.SnapshotCache(1 << 20, 10), Notes()
    rows = {r["tier"]: r for r in page_data.tier_status(cfg, flags, [flat_paths(str(tmp_path / "w0"))], cache, notes)}
    assert rows["t1"]["enabled"] and rows["t1"]["warm"] and rows["t1"]["lines_seen"] == 150
    assert not rows["t3"]["enabled"] and not rows["t3"]["switched_off"]
    assert not rows["t4"]["enabled"] and rows["t4"]["switched_off"]
    both = page_data.tier_status(cfg, flags, [flat_paths(str(tmp_path / w)) for w in ("w0", "w1")], cache, notes)
    assert not both[0]["warm"] and both[0]["lines_seen"] == 200    # one worker still warming up
    assert np.all([not r["warm"] for r in page_data.tier_status(cfg, flags, [], cache, notes)])


def test_render_template_shows_masked_values_as_wildcards():
    miner = TemplateMiner()
    for i in range(3):
        miner.add_line("user %d logged in from 10.0.0.%d" % (i, i))
    (row,) = miner.to_state()["templates"]
    assert page_data.render_template(row[1]) == miner.templates()[0][1]
