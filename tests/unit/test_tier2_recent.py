"""Tier 2's drops against a template's recent level (tier2_recent.py): the running sums, a drop in a
model's first day found (and not without the test), an ordinary first day, a restart and a night job
not raised, and the state saved, loaded (old states without it too) and handed over."""
import json

import numpy as np
from tier2_traffic import poisson_lines

from anomaly_detector.detection.base import BatchContext
from anomaly_detector.detection.state_shape import check_state_arrays
from anomaly_detector.detection.tier2_recent import RECENT_WINDOWS, START_REL2, RecentLevel
from anomaly_detector.detection.tier2_volume import VolumeTier

DAY0 = 1772409600.0 + 9 * 3600.0   # 09:00: a daemon started on a running service mid-morning
SETTINGS = {"bucket_seconds": 60.0, "min_history_buckets": 120, "finding_min_score": 40.0, "spike_min_ratio": 3.0,
            "learning_rate": 0.01, "warmup_lines": 0, "input_gap_seconds": 600.0}


def tier(**overrides):
    return VolumeTier(dict(SETTINGS, **overrides))


def shop(hour):
    """Template 0 and 1 follow the day (a peak in the evening, quiet at night); template 2 is a
    heartbeat; template 3 a job that runs 01:00-03:00 only. All of source 0."""
    day = 6.0 + 24.0 * np.exp(-((hour - 20.0) ** 2) / 8.0) + 10.0 * np.exp(-((hour - 11.0) ** 2) / 6.0)
    return {(0, 0): day, (1, 0): 0.5 * day, (2, 0): 2.0, (3, 0): 20.0 if 1 <= hour < 3 else 0.0}


def lines(rates, start, minutes, rng, factor=None):
    return poisson_lines(lambda t0: rates((t0 % 86400) / 3600.0), start, minutes, rng, factor)


def feed(t2, start, minutes, rng, factor=None, chunk=30):
    """Score then learn `minutes` of shop traffic in chunks, advancing event time as the engine
    does -> the findings raised."""
    found = []
    for m in range(0, minutes, chunk):
        batch, ts = lines(shop, start + 60.0 * m, min(chunk, minutes - m), rng, factor)
        if not batch.n:
            continue
        if t2.open_bucket is not None:
            found += t2.advance(float(ts[0]))
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts)
        t2.score(batch, ctx)
        t2.learn(batch, ctx, np.ones(batch.n, np.float32))
    found += t2.advance(start + 60.0 * minutes)
    return found


def drops(found):
    return [f for f in found if "drop" in f.reason or "silent" in f.reason]


def test_running_sums_match_the_ring_after_pushes_a_gap_and_growth():
    rng = np.random.default_rng(1)
    r = RecentLevel(20, size=3)
    bucket = 1000
    for step in range(120):
        n = 3 if step < 60 else 7           # keys appear: the ring grows
        bucket += 1 if step != 80 else 5    # a jump: the ring starts again
        r.push(bucket, rng.poisson(5.0, n).astype(float), rng.uniform(0.5, 2.0, n))
        for i, width in enumerate(RECENT_WINDOWS):
            slots = (bucket - np.arange(width)) % r.ring
            assert np.allclose(r.win_obs[:, i], r.obs[:, slots].sum(axis=1))
            assert np.allclose(r.win_season[:, i], r.season[:, slots].sum(axis=1))
        slots = (bucket - np.arange(RECENT_WINDOWS[-1], r.ring)) % r.ring
        assert np.allclose(r.ref_obs, r.obs[:, slots].sum(axis=1))
        assert np.allclose(r.ref_season, r.season[:, slots].sum(axis=1))
        if step == 89:
            assert (r.filled == 10).all()   # the ring started again at the jump


def lost_upstream(start, minutes, share):
    """The day's traffic templates (0, 1) down to `share` from `start` for `minutes`."""
    return lambda t, tid: share if tid in (0, 1) and start <= t < start + 60.0 * minutes else 1.0


def test_a_drop_to_a_quarter_in_the_first_day_is_raised():
    rng = np.random.default_rng(2)
    t2 = tier()
    onset = DAY0 + 7 * 3600.0          # 16:00 on the first day: no hour of the day seen twice
    found = drops(feed(t2, DAY0, 9 * 60, rng, lost_upstream(onset, 60, 0.25)))
    recent = [f for f in found if "hour before" in f.reason]
    assert any(f.template_id in (0, 1) and onset <= f.ts <= onset + 1200 for f in recent), found
    assert all(f.ts >= onset for f in found), found


def test_drop_recent_seconds_0_turns_the_test_off():
    rng = np.random.default_rng(2)
    t2 = tier(drop_recent_seconds=0)
    onset = DAY0 + 7 * 3600.0
    found = drops(feed(t2, DAY0, 9 * 60, rng, lost_upstream(onset, 60, 0.25)))
    assert t2.recent is None and not [f for f in found if "hour before" in f.reason], found


def test_an_ordinary_first_day_and_night_raise_no_drop():
    """The evening decline, the night and the night job's first end (template 3) from a cold start:
    nothing against the recent level (the seasonal test's own first-night findings are not this
    module's)."""
    rng = np.random.default_rng(3)
    t2 = tier()
    found = feed(t2, DAY0, 30 * 60, rng)
    assert [f for f in found if "hour before" in f.reason] == []


def test_a_restart_quiet_for_minutes_is_withdrawn():
    rng = np.random.default_rng(4)
    t2 = tier()
    feed(t2, DAY0, 5 * 60, rng)
    down = DAY0 + 5 * 3600.0
    gone = lambda t, tid: 0.0 if down <= t < down + 240.0 else 1.0   # noqa: E731
    found = drops(feed(t2, down - 3600.0 + 3600.0, 60, rng, gone))
    assert found == [] and t2.drops_withdrawn >= 1


def test_state_saves_the_learned_error_and_old_states_load():
    rng = np.random.default_rng(5)
    t2 = tier()
    feed(t2, DAY0, 300, rng)
    state = json.loads(json.dumps(t2.state()))
    loaded = tier()
    loaded.load_state(state)
    check_state_arrays("t2", tier(), loaded)
    assert np.array_equal(loaded.recent.rel2[: t2.recent.size], t2.recent.rel2)
    assert loaded.recent.filled.max() == 0          # the ring fills again after the restore
    feed(loaded, DAY0 + 300 * 60 + 25.0, 120, rng)
    assert loaded.recent.filled.max() == loaded.recent.ring
    del state["recent"]                 # saved by a release without it: the error starts at its prior
    old = tier()
    old.load_state(state)
    check_state_arrays("t2", tier(), old)
    assert old.recent.filled.max() == 0 and (old.recent.rel2 == START_REL2).all()
    feed(old, DAY0 + 300 * 60, 30, rng)


def test_a_handed_over_template_keeps_its_learned_error():
    rng = np.random.default_rng(6)
    t2 = tier()
    feed(t2, DAY0, 200, rng)
    t2.recent.rel2[1] = 0.09
    exported = json.loads(json.dumps(t2.export_source(0)))
    new = tier()
    assert new.import_source(0, exported) == 3   # the night job has not run yet
    assert new.recent.rel2[1] == 0.09 and new.recent.filled[1] == 0
