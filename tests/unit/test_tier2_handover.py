"""A source's volume baseline moves between workers: VolumeTier.export_source / import_source, and
worker/handover.py taking it from another worker's saved models when the source first shows up."""
import json

import numpy as np
from tier2_traffic import poisson_lines

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.base import BatchContext
from anomaly_detector.detection.engine import DetectionEngine
from anomaly_detector.detection.tier2_volume import VolumeTier
from anomaly_detector.storage.layout import worker_paths
from anomaly_detector.worker.handover import SourceHandover

T0 = 1772409600.0
SETTINGS = {"bucket_seconds": 60.0, "min_history_buckets": 5, "finding_min_score": 40.0, "spike_min_ratio": 3.0,
            "learning_rate": 0.05, "warmup_lines": 0, "input_gap_seconds": 600.0}
# (template, source): lines a minute
RATES = {(0, 0): 30, (1, 0): 5, (2, 1): 12}


def feed(t2, minutes, rng, start=T0, rates=RATES):
    for m in range(minutes):
        batch, ts = poisson_lines(lambda t0: rates, start + 60.0 * m, 1, rng)
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=8, ts=ts)
        t2.score(batch, ctx)
        t2.learn(batch, ctx, np.ones(batch.n, np.float32))


def test_export_import_moves_the_source_and_its_templates():
    old = VolumeTier(SETTINGS)
    feed(old, 240, np.random.default_rng(1))
    exported = json.loads(json.dumps(old.export_source(0)))       # as it travels: through a saved state
    assert sorted(exported["templates"]) == ["0", "1"]

    new = VolumeTier(SETTINGS)
    feed(new, 30, np.random.default_rng(2), rates={(1, 0): 50})   # template 1 is learned here already
    own_t1 = new.templates.level[1]
    assert new.import_source(3, exported) == 1
    for name in ("level", "phi", "rel2", "age", "total", "nonzero", "obs_win"):
        np.testing.assert_array_equal(getattr(new.sources, name)[3], getattr(old.sources, name)[0], err_msg=name)
        np.testing.assert_array_equal(getattr(new.templates, name)[0], getattr(old.templates, name)[0], err_msg=name)
    np.testing.assert_array_equal(new.season.hod[3], old.season.hod[0])
    np.testing.assert_array_equal(new.share_season.dow[0], old.share_season.dow[0])
    assert new.sources.open_raw[3] == 0 and new.template_source[0] == 3
    assert new.templates.level[1] == own_t1 and new.template_source[1] == 0     # kept its own
    assert old.sources.level[0] > 25 and old.sources.age[0] >= 200


def _config(state_dir):
    cfg = default_config()
    cfg["paths"]["state_dir"] = str(state_dir)
    cfg["detection"]["tier2"]["bucket_seconds"] = 60.0
    return cfg


def _learn(engine, name, minutes, rng):
    sid = engine.source_id(name)
    feed(engine.tiers["t2"], minutes, rng, rates={(0, sid): 20})
    return sid


def test_a_worker_takes_over_a_source_a_retired_worker_saved(tmp_path, caplog):
    cfg = _config(tmp_path)
    other = DetectionEngine(cfg)
    other.template_ids = "deployment"
    _learn(other, "web", 10, np.random.default_rng(3))
    gamma = _learn(other, "gamma", 120, np.random.default_rng(4))
    other.save(worker_paths(str(tmp_path), 2))
    stale = DetectionEngine(cfg)      # worker 1 once learned a little of gamma: the bigger copy wins
    stale.template_ids = "deployment"
    _learn(stale, "gamma", 3, np.random.default_rng(5))
    stale.save(worker_paths(str(tmp_path), 1))

    engine = DetectionEngine(cfg)
    engine.template_ids = "deployment"
    engine.source_id("api")
    handover = SourceHandover(str(tmp_path), engine, "worker 0", 1)
    engine.source_added = handover.source_added
    assert handover.sources()["gamma"] == other.tiers["t2"].sources.total[gamma]
    with caplog.at_level("INFO"):
        sid = engine.source_id("gamma")
    t2 = engine.tiers["t2"]
    assert sid == 1 and t2.sources.age[1] == other.tiers["t2"].sources.age[gamma] >= 100
    assert t2.sources.level[1] == other.tiers["t2"].sources.level[gamma]
    assert t2.template_source[0] == 1 and t2.templates.age[0] > 0
    assert "took over the volume baseline of source 'gamma' (and 1 of its templates)" in caplog.text
    assert handover.taken == 1 and "gamma" not in handover.sources()
    engine.source_id("unknown")
    assert handover.taken == 1


def test_running_workers_keep_their_sources(tmp_path):
    """Worker 1 of two runs on with its share of source "app": worker 0 meeting "app" learns its own."""
    cfg = _config(tmp_path)
    other = DetectionEngine(cfg)
    _learn(other, "app", 30, np.random.default_rng(7))
    other.save(worker_paths(str(tmp_path), 1))
    engine = DetectionEngine(cfg)
    handover = SourceHandover(str(tmp_path), engine, "worker 0", 2)
    engine.source_added = handover.source_added
    engine.source_id("app")
    assert handover.sources() == {} and engine.tiers["t2"].sources.size == 8
    assert engine.tiers["t2"].sources.age[0] == 0


def test_template_rows_stay_when_the_saved_ids_were_a_workers_own(tmp_path):
    cfg = _config(tmp_path)
    other = DetectionEngine(cfg)      # template_ids "local": saved by a release without the vocabulary
    _learn(other, "gamma", 60, np.random.default_rng(6))
    other.save(worker_paths(str(tmp_path), 1))
    engine = DetectionEngine(cfg)
    engine.template_ids = "deployment"
    handover = SourceHandover(str(tmp_path), engine, "worker 0", 1)
    engine.source_added = handover.source_added
    engine.source_id("gamma")
    t2 = engine.tiers["t2"]
    assert t2.sources.age[0] >= 50 and t2.templates.age[0] == 0
