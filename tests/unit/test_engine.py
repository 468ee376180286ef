"""The detection engine on small synthetic batches: bursts, novelty, volume, controls, feedback, state."""
import numpy as np
import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.engine import DetectionEngine
from anomaly_detector.parsing.batch import LEVEL_CRITICAL, LEVEL_INFO, ParsedBatch

T0 = 1772445600.0


def make_batch(ts, template_id, level=None, source_id=None, values=None, sources=("web",)):
    """One parameter per line (values, or a steady latency), text 'line <tid>'."""
    n = len(ts)
    template_id = np.asarray(template_id, np.int32)
    texts = [b"line %d" % t for t in template_id.tolist()]
    buf = np.frombuffer(b"".join(texts) or b" ", np.uint8)
    ends = np.cumsum([len(t) for t in texts]).astype(np.int64)
    starts = (ends - np.array([len(t) for t in texts], np.int64)).astype(np.int64)
    values = np.full(n, 20.0) if values is None else np.asarray(values, float)
    return ParsedBatch(ts=np.asarray(ts, float), source_id=np.zeros(n, np.int32) if source_id is None else source_id,
                       level=np.full(n, LEVEL_INFO, np.int8) if level is None else np.asarray(level, np.int8),
                       template_id=template_id, buf=buf, content_start=starts, content_end=ends,
                       param_ptr=np.arange(n + 1, dtype=np.int64), param_pos=np.zeros(n, np.int16),
                       param_hash=np.arange(n, dtype=np.uint64) + np.uint64(1000 * T0 % 1e9),
                       param_num=values, sources=list(sources))


def config(**detection):
    cfg = default_config()
    cfg["detection"].update(warmup_lines=100, warmup_seconds=600, **detection)
    cfg["detection"]["tier4"]["enabled"] = False
    return cfg


def steady(engine, minutes, rng, start=T0, per_minute=60, values=None):
    """Feed `minutes` of steady traffic of templates 0..3 in 10-minute batches; return the flags."""
    flags = 0
    for m in range(0, minutes, 10):
        n = per_minute * 10
        ts = start + 60.0 * m + np.sort(rng.uniform(0, 600, n))
        vals = rng.lognormal(3.0, 0.2, n) if values is None else values(n)
        flags += int(engine.process(make_batch(ts, rng.integers(0, 4, n), values=vals), 10).anomaly.sum())
    return flags


def test_critical_lines_alert_on_sight_on_a_fresh_engine():
    engine = DetectionEngine(config())
    ts = T0 + np.arange(5.0)
    got = engine.process(make_batch(ts, [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.anomaly.all()
    assert got.tiers[0, 4] >= 70 and any("critical rule" in r[1] for r in got.reasons[4])
    incidents = engine.finish()
    assert len(incidents) == 1 and incidents[0]["source"] == "web" and "t1" in incidents[0]["tiers"]
    assert len(incidents[0]["samples"]) >= 2 and incidents[0]["first_seen"] == T0


def test_no_warm_up_in_seconds_scores_the_first_batch_of_a_source():
    # warmup_seconds = 0 once divided by a source's empty history (its lines went to the dead-letter file)
    cfg = config()
    cfg["detection"].update(warmup_lines=0, warmup_seconds=0)
    engine = DetectionEngine(cfg)
    ts = T0 + np.arange(5.0)
    got = engine.process(make_batch(ts, [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.anomaly.all()
    got = engine.process(make_batch(ts + 60, [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.anomaly.all()


def test_steady_traffic_raises_nothing_and_outliers_and_new_templates_do():
    rng = np.random.default_rng(0)
    engine = DetectionEngine(config())
    assert steady(engine, 600, rng) == 0
    t = T0 + 600 * 60
    # a latency shift of template 1 sustained for 20 minutes, and a brand-new error template
    n = 600
    ts = t + np.sort(rng.uniform(0, 1200, n))
    tids = rng.integers(0, 4, n)
    vals = np.where(tids == 1, rng.lognormal(3.0 + 2.5, 0.2, n), rng.lognormal(3.0, 0.2, n))
    shift = engine.process(make_batch(ts, tids, values=vals), 10)
    assert shift.anomaly[tids == 1].mean() > 0.5 and not shift.anomaly[tids != 1].any()
    ts = t + 1300 + np.arange(6.0) * 20
    got = engine.process(make_batch(ts, [9] * 6, level=[5] * 6), 10)
    assert got.tiers[2].min() >= 40, "a never-seen template after warm-up is surprising"
    again = engine.process(make_batch(ts + 200, [9] * 6, level=[5] * 6), 10)
    assert again.tiers[2].min() >= 40, "a new template stays new until min_observations sightings"
    incidents = shift.incidents + got.incidents + again.incidents + engine.finish()
    # One source, two problems: the new error began long after the shift did, so it is raised on
    # its own, with its own onset, not folded into the shift's incident.
    shifted = [i for i in incidents if any("drift" in r or "unusual value" in r for r in i["reasons"])]
    new = [i for i in incidents if 9 in i["templates"]]
    assert len(shifted) == 1 and len(new) == 1 and shifted[0]["id"] != new[0]["id"]
    assert shifted[0]["first_seen"] < t + 600 and t + 1200 <= new[0]["first_seen"] <= t + 1300


def test_silent_source_is_a_finding_not_tied_to_a_line():
    rng = np.random.default_rng(1)
    engine = DetectionEngine(config())
    incidents = []
    # two sources: web keeps logging, api goes silent after 5 hours
    for m in range(0, 420, 10):
        n = 1200
        ts = T0 + 60.0 * m + np.sort(rng.uniform(0, 600, n))
        src = rng.integers(0, 2, n).astype(np.int32)
        if m >= 300:
            src[:] = 0
        got = engine.process(make_batch(ts, rng.integers(0, 4, n), source_id=src, sources=("web", "api")), 10)
        incidents += got.incidents
    incidents += engine.finish()
    silent = [i for i in incidents if i["kind"] == "silent_source"]
    assert silent and silent[0]["source"] == "api"
    assert T0 + 300 * 60 <= silent[0]["first_seen"] <= T0 + 330 * 60


def test_volume_spike_scores_the_lines_that_make_it():
    rng = np.random.default_rng(2)
    engine = DetectionEngine(config())
    steady(engine, 300, rng)
    t = T0 + 300 * 60
    ts = t + np.sort(rng.uniform(0, 120, 2000))   # ~8x the usual 60 lines a minute of template 2
    got = engine.process(make_batch(ts, np.full(2000, 2)), 10)
    assert got.tiers[1].max() >= 70
    assert any("volume spike" in r[1] for rs in got.reasons.values() for r in rs)


def test_tiers_switch_off_at_run_time_and_learning_rate_changes():
    engine = DetectionEngine(config())
    engine.set_tier_enabled("t1", False)
    got = engine.process(make_batch(T0 + np.arange(5.0), [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.tiers[0].max() == 0 and not got.anomaly.any()
    engine.set_tier_enabled("t1", True)
    got = engine.process(make_batch(T0 + 5 + np.arange(5.0), [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.anomaly.any()
    with pytest.raises(ValueError):
        engine.set_tier_enabled("t9", False)
    assert set(engine.tiers) == {"t1", "t2", "t3", "t4"} and not engine.tiers["t4"].enabled
    engine.set_tier_enabled("t4", True)
    assert engine.tiers["t4"].enabled and engine.tiers["t3"].enabled
    assert engine.reduce_learning_rate(0.5) == pytest.approx(0.005)
    assert all(t.learning_rate == pytest.approx(0.005) for t in engine.tiers.values())
    with pytest.raises(ValueError):
        engine.set_learning_rate(0.0)


def test_feedback_suppresses_a_template():
    engine = DetectionEngine(config())
    engine.mark_template_normal(7)
    got = engine.process(make_batch(T0 + np.arange(5.0), [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert not got.anomaly.any()
    engine.mark_template_normal(7, weight=1.0)
    got = engine.process(make_batch(T0 + 5 + np.arange(5.0), [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    assert got.anomaly.any()
    incident = engine.finish()[0]
    assert engine.mark_incident_normal(incident["id"]) and engine.template_weight[7] == 0.0
    assert not engine.mark_incident_normal("no-such-id")


def test_state_round_trip_scores_alike(tmp_path):
    rng = np.random.default_rng(4)
    first = DetectionEngine(config())
    steady(first, 240, rng)
    first.save(str(tmp_path))
    assert (tmp_path / "baselines" / "detection.json").exists()
    assert (tmp_path / "statistics" / "detection.json").exists()
    second = DetectionEngine(config())
    assert second.load(str(tmp_path))
    batch = make_batch(T0 + 240 * 60 + np.arange(50.0), rng.integers(0, 4, 50), values=rng.lognormal(3, 1, 50))
    a, b = first.process(batch, 10), second.process(batch, 10)
    np.testing.assert_allclose(a.tiers, b.tiers, atol=1e-4)
    assert not DetectionEngine(config()).load(str(tmp_path / "empty"))


def test_statistics_of_an_older_release_start_again_but_baselines_stay(tmp_path, caplog):
    """Statistics version 1 hashed values without their token's constant text: read as version 2
    they would make every such value new, so they are dropped (with a warning) and relearned."""
    from anomaly_detector.detection.engine import STATE_VERSION
    from anomaly_detector.storage.atomic import read_json_snapshot, write_json_snapshot
    rng = np.random.default_rng(5)
    first = DetectionEngine(config())
    steady(first, 240, rng)
    first.save(str(tmp_path))
    path = str(tmp_path / "statistics" / "detection.json")
    write_json_snapshot(path, "detection-statistics", 1, read_json_snapshot(path, "detection-statistics", 2)[1])
    second = DetectionEngine(config())
    assert second.load(str(tmp_path)) and "statistics saved by an older release" in caplog.text
    assert second.tiers["t3"].template_count.sum() == 0 and second.lines_seen == first.lines_seen
    assert (second.tiers["t2"].templates.level == first.tiers["t2"].templates.level).all()
    assert STATE_VERSION == 1, "baselines keep their version: only statistics changed"


def test_incident_ids_are_deterministic():
    def run():
        engine = DetectionEngine(config())
        engine.process(make_batch(T0 + np.arange(6.0), [7] * 6, level=[LEVEL_CRITICAL] * 6), 8)
        return [i["id"] for i in engine.finish()]
    assert run() == run() and len(run()[0]) == 16


def hosts(engine, minutes, rng, start, pick, numeric=False):
    """Steady traffic whose one parameter is categorical: pick(n, tids) gives each line's value id
    (also its number when numeric, as a count like `waiting=2` would be)."""
    last = None
    for m in range(0, minutes, 10):
        n = 600
        ts = start + 60.0 * m + np.sort(rng.uniform(0, 600, n))
        tids = rng.integers(0, 4, n)
        values = pick(n, tids)
        batch = make_batch(ts, tids, values=values.astype(float) if numeric else np.full(n, np.nan))
        batch.param_hash = values.astype(np.uint64) + np.uint64(7)
        last = engine.process(batch, 10)
    return last, tids


def test_a_new_value_that_keeps_coming_back_alerts_but_a_succession_does_not():
    rng = np.random.default_rng(5)
    usual = lambda n, tids: rng.integers(0, 3, n)   # noqa: E731 - three hosts
    outbreak = DetectionEngine(config())
    hosts(outbreak, 600, rng, T0, usual)
    # one host in five becomes a never-seen one: a new value, and it keeps coming back
    got, tids = hosts(outbreak, 10, rng, T0 + 600 * 60, lambda n, t: np.where(rng.random(n) < 0.2, 9, usual(n, t)))
    assert got.tiers[2].max() >= 70 and got.anomaly.any()
    assert any("new value" in r[1] for rs in got.reasons.values() for r in rs)
    # every line takes the new value (a run id, a date, a version after a deploy): first sight only
    succession = DetectionEngine(config())
    hosts(succession, 600, rng, T0, usual)
    got, _ = hosts(succession, 10, rng, T0 + 600 * 60, lambda n, t: np.full(n, 9))
    assert 0 < got.tiers[2].max() < 70 and not got.anomaly.any()
    # a count one step past its known values (waiting=3 when 0..2 were seen) is no new kind
    counts = DetectionEngine(config())
    hosts(counts, 600, rng, T0, usual, numeric=True)
    got, _ = hosts(counts, 10, rng, T0 + 600 * 60, lambda n, t: np.where(rng.random(n) < 0.2, 3, usual(n, t)),
                   numeric=True)
    assert 0 < got.tiers[2].max() < 70 and not got.anomaly.any()


def test_a_new_value_beside_the_known_ones_alerts_even_when_it_takes_most_lines():
    """A new payment provider taking 60 % of the lines while the old ones keep the rest joined them
    (it did not replace them as a version does): its recurrences count."""
    rng = np.random.default_rng(15)
    usual = lambda n, tids: rng.integers(0, 3, n)   # noqa: E731
    engine = DetectionEngine(config())
    hosts(engine, 600, rng, T0, usual)
    got, _ = hosts(engine, 10, rng, T0 + 600 * 60, lambda n, t: np.where(rng.random(n) < 0.6, 9, usual(n, t)))
    assert got.tiers[2].max() >= 70 and got.anomaly.any()
    assert any("new value" in r[1] for rs in got.reasons.values() for r in rs)


def restart_then_new_messages(together):
    """Warm traffic, then a source restarting into a new version: five one-off messages (templates
    10-14: shutting down, starting), then a new message (template 15) on every tenth line for ten
    minutes; `together`: all in one batch, as a replay's batch or a slow hour holds them."""
    rng = np.random.default_rng(16)
    engine = DetectionEngine(config())
    steady(engine, 600, rng)
    start = T0 + 600 * 60
    restart = make_batch(start + np.arange(5.0), np.arange(10, 15))
    n = 600
    ts = start + 10.0 + np.sort(rng.uniform(0, 600, n))
    tids = np.where(np.arange(n) % 10 == 0, 15, rng.integers(0, 4, n))
    after = make_batch(ts, tids)
    if together:
        both = make_batch(np.concatenate([restart.ts, ts]), np.concatenate([restart.template_id, tids]))
        return engine.process(both, 16).tiers[2].max()
    engine.process(restart, 16)
    return engine.process(after, 16).tiers[2].max()


def test_a_source_open_after_its_restart_is_open_within_the_batch_too():
    """A source whose set of messages was closed and that shows several new ones (a deploy) is open:
    the new version's messages recurring is no outbreak, whether or not they share a batch with the
    restart's lines."""
    apart, together = restart_then_new_messages(False), restart_then_new_messages(True)
    assert apart < 70 and together < 70


def test_a_latency_shift_fed_in_small_batches_is_a_drift_before_it_is_learned():
    """A latency that goes to 2.7 times its usual and stays there, seen a minute at a time (as a
    quiet daemon's batches hold it): the values must not teach the centre their level faster than
    the drift test sees them, or the shift is learned before it is raised."""
    rng = np.random.default_rng(17)
    engine = DetectionEngine(config())
    steady(engine, 600, rng, per_minute=6)
    top = 0.0
    drift = False
    for m in range(90):
        ts = T0 + 600 * 60 + 60.0 * m + np.sort(rng.uniform(0, 60, 6))
        got = engine.process(make_batch(ts, rng.integers(0, 4, 6), values=rng.lognormal(3.0 + np.log(2.7), 0.2, 6)), 10)
        top = max(top, float(got.tiers[2].max()))
        drift |= any("drift" in r[1] for rs in got.reasons.values() for r in rs)
    assert top >= 70 and drift


def test_a_doubling_of_traffic_is_no_spike_and_does_not_teach_the_model_spikes():
    rng = np.random.default_rng(6)
    engine = DetectionEngine(config())
    steady(engine, 300, rng)
    t2 = engine.tiers["t2"]
    phi = t2.templates.phi[2]
    # 30 minutes at twice the usual rate of every template: a rush hour, not an incident
    assert steady(engine, 30, rng, start=T0 + 300 * 60, per_minute=120) == 0
    assert t2.templates.phi[2] < 2 * max(phi, 1.0), "a short surge must not inflate the learned spread"


def test_window_scores_come_from_the_tail_of_normal_windows():
    from anomaly_detector.detection.tier4_sequence import WindowStructure
    ws = WindowStructure({"window_seconds": 60, "window_min_lines": 10, "window_warmup": 4, "window_sigmas": 10})
    ws.history[:1000] = np.random.default_rng(7).pareto(3.0, 1000) + 1.0
    top = float(np.nanmax(ws.history))
    ps = [ws.tail_log10p(x) for x in (1.0, top, 2 * top, 10 * top)]
    assert ps == sorted(ps, reverse=True) and ps[0] > -0.5
    assert -3.5 < ps[1] < -2.0, "the largest of 1000 normal windows is about one in a thousand"
    assert ps[3] < ps[2] < ps[1]


def test_a_bogus_future_stamp_neither_hangs_nor_moves_event_time():
    import time
    rng = np.random.default_rng(9)
    engine = DetectionEngine(config())
    steady(engine, 120, rng)
    now = engine.now
    ts = T0 + 120 * 60 + np.arange(10.0)
    ts[4] = 32503680000.0          # year 3000: binary junk read as a date
    began = time.process_time()     # CPU time: a loaded machine stretches the wall clock, not the work
    engine.process(make_batch(ts, np.zeros(10, int)), 10)
    assert time.process_time() - began < 5
    assert engine.now < now + 3600 and engine.tiers["t2"].open_bucket * 60 < now + 3600
    # a gap of years between genuine stamps (an old file, then today's) is walked in bounded work
    t2 = engine.tiers["t2"]
    began = time.process_time()
    t2._close_until(t2.open_bucket + 10 * 365 * 1440, None)
    assert time.process_time() - began < 5 and t2.open_bucket >= 10 * 365 * 1440


def test_the_time_a_restored_engine_was_down_raises_no_silence(tmp_path):
    """Stopped, restored, started three hours later: the gap is downtime, not a silent source. The
    same gap seen by an engine that kept running is a silence (one source: not an input gap)."""
    rng = np.random.default_rng(9)
    first = DetectionEngine(config())
    steady(first, 300, rng)
    first.save(str(tmp_path))
    restored = DetectionEngine(config())
    assert restored.load(str(tmp_path))
    after = T0 + 480 * 60
    found = {}
    for name, engine in (("restored", restored), ("running", first)):
        rng = np.random.default_rng(10)
        incidents = []
        for m in range(0, 30, 10):
            ts = after + 60.0 * m + np.sort(rng.uniform(0, 600, 600))
            incidents += engine.process(make_batch(ts, rng.integers(0, 4, 600)), 10).incidents
        found[name] = {i["kind"] for i in incidents + engine.finish()}
    assert not found["restored"] & {"silent_source", "volume_drop"}
    assert found["running"] & {"silent_source", "volume_drop"}


def test_a_backup_restored_reads_its_backlog_then_the_downtime_raises_no_silence(tmp_path):
    """A backup taken while running holds models (and checkpoints) of its time: after a restore the
    daemon reads the lines logged since then, up to when it stopped, and only then comes the time it
    was down. That gap spans the start, so it is downtime too, not a silent source. A silence the
    backlog itself holds is still judged."""
    rng = np.random.default_rng(9)
    first = DetectionEngine(config())
    steady(first, 240, rng)
    first.save(str(tmp_path))                       # the backup
    started = T0 + 480 * 60                         # restored and started at 08:00 into the run
    found = {}
    for name, silence_in_backlog in (("downtime", False), ("backlog", True)):
        restored = DetectionEngine(config())
        assert restored.load(str(tmp_path), started_at=started)
        rng = np.random.default_rng(10)
        incidents = []
        for m in range(240, 300, 10):               # the backlog: logged before the stop, read again
            if silence_in_backlog and m == 270:
                continue
            ts = T0 + 60.0 * m + np.sort(rng.uniform(0, 600, 600))
            incidents += restored.process(make_batch(ts, rng.integers(0, 4, 600)), 10).incidents
        for m in range(480, 510, 10):               # down from 05:00 to 08:00, then new lines
            ts = T0 + 60.0 * m + np.sort(rng.uniform(0, 600, 600))
            incidents += restored.process(make_batch(ts, rng.integers(0, 4, 600)), 10).incidents
        found[name] = {i["kind"] for i in incidents + restored.finish()}
    assert not found["downtime"] & {"silent_source", "volume_drop"}
    assert found["backlog"] & {"silent_source", "volume_drop"}


def test_a_drop_still_low_when_raised_opens_an_incident_below_the_anomaly_threshold():
    """A held drop confirmed after drop_hold_seconds is reported from finding_min_score; the same
    score unconfirmed (drop_hold_seconds = 0: raised at once) needs anomaly_threshold."""
    from anomaly_detector.detection.base import Finding
    rng = np.random.default_rng(3)
    opened = {}
    for confirmed in (True, False):
        engine = DetectionEngine(config())
        steady(engine, 120, rng)
        volume = engine.tiers["t2"]
        drop = Finding(tier="t2", ts=T0 + 7200.0, key="source:0", score=55.0, reason="source volume drop: 20 lines "
                       "in the last 300s", expected="about 60.0 per 300s", observed="20 per 300s", source="0",
                       confirmed=confirmed)
        volume.pending.append(drop)
        got = engine.process(make_batch(T0 + 7200.0 + np.arange(10.0), np.zeros(10, np.int32)), 10).incidents
        got += engine.finish()
        opened[confirmed] = [i for i in got if i["kind"] == "volume_drop"]
    assert len(opened[True]) == 1 and opened[True][0]["source"] == "web"
    assert opened[False] == []
