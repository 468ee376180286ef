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


# -- spikes against the recent level ------------------------------------------------------------------

def night_shop(hour):
    """shop's traffic, and template 4: a steady line of every request, up from 3 a minute at night to 18 in
    the afternoon and down again by midnight."""
    rates = shop(hour)
    rates[(4, 0)] = 3.0 + (15.0 * np.sin(np.pi * (hour - 6.0) / 18.0) if hour >= 6 else 0.0)
    return rates


def morning_step(hour):
    """night_shop, but template 4 steps from 3 a minute to 18 at 06:00 and back at midnight."""
    rates = shop(hour)
    rates[(4, 0)] = 3.0 if hour < 6 else 18.0
    return rates


def feed_scores(t2, start, minutes, rng, factor=None, rates=night_shop, chunk=30):
    """Score then learn `minutes` of traffic as feed does -> [(time, template, score, reason)] of the lines
    tier 2 scored 40 or more."""
    scored = []
    for m in range(0, minutes, chunk):
        batch, ts = poisson_lines(lambda t0: rates((t0 % 86400) / 3600.0), start + 60.0 * m, min(chunk, minutes - m),
                                  rng, factor)
        if not batch.n:
            continue
        if t2.open_bucket is not None:
            t2.advance(float(ts[0]))
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=7, ts=ts)
        result = t2.score(batch, ctx)
        scored += [(float(ts[i]), int(batch.template_id[i]), float(result.scores[i]), result.reasons.get(i, ""))
                   for i in np.flatnonzero(result.scores >= 40.0)]
        t2.learn(batch, ctx, np.ones(batch.n, np.float32))
    return scored


def spiked(tid, start, minutes, times):
    return lambda t, t_id: times if t_id == tid and start <= t < start + 60.0 * minutes else 1.0


MIDNIGHT = DAY0 - 9 * 3600.0 + 86400.0   # the end of the first day


def test_a_steady_template_six_times_its_rate_at_night_on_day_two_is_raised():
    """Template 4 at six times its night rate for a quarter of an hour at 01:30 of its second night (day
    two of the hours known): the seasonal forecast of a young night lags far above it, and the recent
    level finds it (without it, no line of the spike scores even 40)."""
    rng = np.random.default_rng(7)
    t2 = tier()
    onset = MIDNIGHT + 86400.0 + 1.5 * 3600.0
    scored = feed_scores(t2, DAY0, int((onset - DAY0) / 60.0) + 30, rng, spiked(4, onset, 15, 6.0))
    spike = [s for s in scored if s[1] == 4 and onset <= s[0] < onset + 900.0]
    assert max(s[2] for s in spike) >= 70.0, scored
    assert any("hour before" in s[3] and "volume spike" in s[3] for s in spike), spike
    # nothing before it, nor once its lines have left the long window
    assert not [s for s in scored if "hour before" in s[3] and not onset <= s[0] < onset + 1800.0], scored
    off = feed_scores(tier(drop_recent_seconds=0), DAY0, int((onset - DAY0) / 60.0) + 30, np.random.default_rng(7),
                      spiked(4, onset, 15, 6.0))
    assert not [s for s in off if "hour before" in s[3]], off      # drop_recent_seconds = 0: off


def test_a_wandering_night_level_and_a_known_ramp_are_not_raised():
    """Template 4's night level wanders (by up to 1.8 times, every 20 minutes) and it steps to six times
    its night rate at 06:00 every day: once the hour factors know the step (its second morning), no spike
    against the recent level. (Its first morning, an hour never seen, is judged: six times in a minute is
    a spike against the hour before, whatever the hour.)"""
    rng = np.random.default_rng(8)
    steps = rng.choice([0.55, 1.0, 1.8], size=400)
    wander = lambda t, tid: steps[int(t // 1200) % 400] if tid == 4 and (t % 86400) < 6 * 3600 else 1.0  # noqa: E731
    t2 = tier()
    scored = feed_scores(t2, DAY0, 3 * 24 * 60, rng, wander, rates=morning_step)
    first_morning = MIDNIGHT + 6 * 3600.0
    assert [s for s in scored if "hour before" in s[3] and not first_morning <= s[0] < first_morning + 1800.0] == []


def filled_ring(per_bucket, season=1.0):
    """A RecentLevel of one key per row of per_bucket (counts of its last buckets, oldest first)."""
    per_bucket = np.atleast_2d(np.asarray(per_bucket, float))
    r = RecentLevel(60, size=per_bucket.shape[0])
    for b in range(per_bucket.shape[1]):
        r.push(1000 + b, per_bucket[:, b], np.full(per_bucket.shape[0], season))
    return r


def test_the_spike_reference_is_a_median_not_raised_by_a_spike_in_the_hour_before():
    rng = np.random.default_rng(9)
    counts = rng.poisson(10.0, 75).astype(float)
    spiked_hour = counts.copy()
    spiked_hour[20:40] *= 6.0                  # twenty minutes at six times: a third of the reference
    r = filled_ring([counts, spiked_hour], season=2.0)
    level, lines = r.spike_reference(np.array([0, 1]), np.ones(2))
    assert abs(level[0] - 5.0) < 1.0 and abs(level[1] - 5.0) < 1.0, level   # per bucket, deseasonalised
    assert lines[1] == r.ref_obs[1] > lines[0]
    mean = r.ref_obs / r.ref_season
    assert mean[1] > 1.5 * level[1]            # the mean would have hidden the next spike


def test_a_reference_with_a_drop_or_too_few_lines_is_no_spike_reference():
    rng = np.random.default_rng(10)
    counts = rng.poisson(10.0, (3, 75)).astype(float)
    counts[1, 10:50] = 0.0                     # silent for forty of the reference's minutes
    counts[2] = rng.poisson(0.3, 75)           # a handful of lines an hour
    r = filled_ring(counts)
    level, _ = r.spike_reference(np.arange(3), np.ones(3))
    assert level[0] > 8.0 and level[1] == 0.0 and level[2] == 0.0, level


def test_source_reference_sums_a_sources_keys():
    rng = np.random.default_rng(11)
    counts = rng.poisson([[4.0], [6.0], [1.0]], (3, 75)).astype(float)
    r = filled_ring(counts, season=3.0)        # not deseasonalised: lines per bucket as they came
    level = r.source_reference(np.array([0, 0, 1]), 3)
    assert abs(level[0] - 10.0) < 1.5 and abs(level[1] - 1.0) < 0.5 and level[2] == 0.0, level


def test_a_site_wide_surge_is_no_spike_against_the_recent_level():
    """Every source's traffic at four times its rate for ten minutes at night, as above (a crowd, not a
    fault): no spike against the recent level (test_a_steady_template_six_times_... is one template's)."""
    rng = np.random.default_rng(12)

    def two_sources(hour):
        rates = night_shop(hour)
        rates.update({(5, 1): 1.2 * rates[(4, 0)], (6, 2): rates[(4, 0)]})   # two more services like it
        return rates
    onset = MIDNIGHT + 86400.0 + 1.5 * 3600.0
    crowd = lambda t, tid: 4.0 if tid in (0, 1, 4, 5, 6) and onset <= t < onset + 600.0 else 1.0  # noqa: E731
    t2 = tier()
    scored = feed_scores(t2, DAY0, int((onset - DAY0) / 60.0) + 30, rng, crowd, rates=two_sources)
    assert [s for s in scored if "hour before" in s[3]] == [], scored


def test_a_template_back_from_an_outage_is_no_spike():
    """Template 4 down to a tenth for 40 minutes of its second afternoon, then back: judged against the hour
    before (mostly the outage) its return is six times that, but it is judged against its level before the
    outage (VolumeTier._outage_floor) and nothing is raised as a spike."""
    rng = np.random.default_rng(13)
    down = MIDNIGHT + 86400.0 + 14 * 3600.0
    outage = lambda t, tid: 0.1 if tid == 4 and down <= t < down + 2400.0 else 1.0  # noqa: E731
    t2 = tier()
    scored = feed_scores(t2, DAY0, int((down - DAY0) / 60.0) + 120, rng, outage)
    assert [s for s in scored if "hour before" in s[3]] == [], scored


def outage_tier(counts, before, dated_ago):
    """A tier whose template 0 has the recent ring `counts` (oldest first, seasons 1) and an outage noted with
    `before` as its level before, last dated `dated_ago` buckets ago; its buckets closed up to the last."""
    t2 = tier()
    t2.recent = filled_ring(counts)
    t2.templates.ensure(t2.recent.size)
    t2.open_bucket = t2.recent.last_bucket
    t2._outage = {0: (before, t2.open_bucket - dated_ago)}
    return t2


def test_an_outage_is_kept_until_its_template_is_back_to_its_level_before():
    """A long drop is raised only while its hour before still holds the level before it. The outage is kept
    past a ring while its template's spike level (the median of the hour before) is below its level before,
    even when that hour's mean reads more than half of it (young hour factors read a two-hour drop to a
    quarter so); dated again while the template comes back (its last five minutes at twice its hour
    before); forgotten once its spike level is back and it was last dated a ring ago."""
    rng = np.random.default_rng(14)
    out = outage_tier(rng.poisson(6.0, 75).astype(float), 10.0, 80)
    assert out.recent.ref_obs[0] / out.recent.ref_season[0] > 0.5 * 10.0   # the old rule's "back"
    out._track_outages()
    level = np.array([6.0])
    out._outage_floor(level)
    assert level[0] == 10.0 and 0 in out._outage                          # still out: its floor stands
    returning = rng.poisson(6.0, 75).astype(float)
    returning[-5:] = rng.poisson(25.0, 5)
    out = outage_tier(returning, 10.0, 80)
    out._track_outages()
    assert out._outage[0] == (10.0, out.open_bucket)                     # coming back: dated again
    back = outage_tier(rng.poisson(12.0, 75).astype(float), 10.0, 80)
    back._track_outages()
    assert back._outage == {}                                             # back, a ring after: forgotten
    recent = outage_tier(rng.poisson(12.0, 75).astype(float), 10.0, 60)
    recent._track_outages()
    assert 0 in recent._outage                                            # dated within the ring: kept


def evening_step(hour):
    """shop's traffic, and template 4: 10 lines a minute, 20 from 18:00 to midnight (a Friday's evening)."""
    rates = shop(hour)
    rates[(4, 0)] = 20.0 if hour >= 18 else 10.0
    return rates


def test_a_spike_on_a_flat_evening_after_a_day_whose_evening_doubled_is_raised():
    """Template 4's evening doubled at 18:00 on the first day (the hour factors learn the step); the second
    day stays flat at 10 a minute, and at 18:14 it runs at five times that for a quarter of an hour. Carried
    to 18:00 by the young hour factors its level would be near 17 a minute, the spike three times that, short
    of the test; the minutes since 18:00 show the ramp has not come (RecentLevel.ramp_shortfall)."""
    rng = np.random.default_rng(11)
    onset = MIDNIGHT + 18 * 3600.0 + 14 * 60.0
    flat_from = MIDNIGHT + 18 * 3600.0

    def saturday(t, tid):
        if tid != 4 or t < flat_from:
            return 1.0
        return 0.5 * (5.0 if onset <= t < onset + 900.0 else 1.0)
    scored = feed_scores(tier(), DAY0, int((onset - DAY0) / 60.0) + 30, rng, saturday, rates=evening_step)
    spike = [s for s in scored if s[1] == 4 and onset <= s[0] < onset + 900.0 and s[2] >= 70.0]
    assert spike, [s for s in scored if s[1] == 4 and s[0] >= flat_from]
    assert not [s for s in scored if s[2] >= 70.0 and not onset <= s[0] < onset + 1800.0], scored


def test_ramp_shortfall_lowers_a_level_only_where_the_buckets_since_fell_short_of_it():
    """Key 0 flat at 10 a minute while the season of its last quarter hour went from 1 to 1.6: 10 / 1.6 of
    its level reached. Key 1 followed the season (16 a minute): all of it. Key 2 at a tenth: a drop, the
    floor (DROP_BLOCK_SHARE). Key 3 flat with its last five minutes at five times: the median is not raised.
    Key 4: a handful of lines, within the median's sampling error: all of it."""
    rng = np.random.default_rng(12)
    n = 75
    counts = rng.poisson(10.0, (5, n)).astype(float)
    counts[1, -15:] = rng.poisson(16.0, 15)
    counts[2, -15:] = rng.poisson(1.0, 15)
    counts[3] = counts[0]
    counts[3, -5:] *= 5.0
    counts[4] = rng.poisson(1.0, n)
    r = RecentLevel(60, size=5)
    for b in range(n):
        r.push(1000 + b, counts[:, b], np.full(5, 1.6 if b >= n - 15 else 1.0))
    keys = np.arange(5)
    level, _ = r.spike_reference(keys, np.ones(5))
    level[4] = 1.0
    share = r.ramp_shortfall(keys, level, np.ones(5))
    assert abs(share[0] - 1.0 / 1.6) < 0.12 and share[1] == 1.0 and share[2] == 0.5, share
    assert share[0] <= share[3] < share[0] + 0.1 and share[4] == 1.0, share


def test_the_site_factor_of_a_recent_spike_is_what_the_site_rose_beyond_the_ramp_the_forecast_carries():
    """A recent level's forecast carried by the hour factors to 1.6 times the seasons of the hour before already
    holds the morning's ramp: the site's factor (measured against the sources' hour before, not deseasonalised)
    is divided by it (VolumeTier._recent_ramp). A forecast the seasons carry down is not raised by it (1)."""
    t2 = tier()
    t2.recent = filled_ring(np.full((2, 75), 10.0), season=1.0)
    level = np.array([10.0, 10.0])
    width = RECENT_WINDOWS[0]
    mus = level * width * np.array([1.6, 0.8])
    ramp = t2._recent_ramp(np.array([0, 1, 0]), np.array([0, 1]), np.append(mus, 0.0), level, width)
    assert np.allclose(ramp, [1.6, 1.0, 1.0]), ramp
