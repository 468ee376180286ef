"""Tier 2 on hand-made traffic: shares of a source learned per hour of day, and gaps that are not
the sources' doing (a restore from state, the whole input quiet) judged as neither drop nor silence."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from tier2_traffic import poisson_lines

from anomaly_detector.detection.base import BatchContext, Finding
from anomaly_detector.detection.state_shape import check_state_arrays
from anomaly_detector.detection.tier2_volume import (
    DROP_WINDOWS,
    WINDOW_BUSY,
    WINDOW_SPORADIC,
    VolumeTier,
    change_point,
    poisson_lower_bound,
)

DAY0 = 1772409600.0   # a midnight
SETTINGS = {"bucket_seconds": 60.0, "min_history_buckets": 120, "finding_min_score": 40.0, "spike_min_ratio": 3.0,
            "learning_rate": 0.01, "warmup_lines": 0, "input_gap_seconds": 600.0}


def tier(**overrides):
    return VolumeTier(dict(SETTINGS, **overrides))


def lines(rates, start, minutes, rng):
    """Poisson lines for `minutes` from `start`: rates(hour) -> {(template, source): per minute}."""
    return poisson_lines(lambda t0: rates(int(t0 % 86400 // 3600)), start, minutes, rng)


def feed(t2, rates, start, minutes, rng, chunk=60, anomalous=()):
    """Score then learn `minutes` of traffic an hour at a time, advancing event time to the last
    line before each batch as the engine does -> (max score, findings)."""
    top, found = 0.0, []
    for m in range(0, minutes, chunk):
        batch, ts = lines(rates, start + 60.0 * m, min(chunk, minutes - m), rng)
        if batch.n:
            if t2.open_bucket is not None:
                found += t2.advance(getattr(t2, "_test_now", ts[0]))
            ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts)
            top = max(top, float(t2.score(batch, ctx).scores.max()))
            # lines of the `anomalous` templates learned as the engine learns anomalies
            weights = np.where(np.isin(batch.template_id, anomalous), 0.1, 1.0).astype(np.float32)
            t2.learn(batch, ctx, weights)
            t2._test_now = float(ts.max())
    found += t2.advance(t2._test_now)
    found += t2.pending
    t2.pending = []
    return top, found


def day_and_night(hour):
    """Template 0 follows traffic (busy by day, rising and falling smoothly); template 1 (a
    checkpoint) does not: its share of source 0 is a tenth at 14:00 and a half at 02:00. Source 1
    logs steadily."""
    return {(0, 0): 27.5 - 22.5 * np.cos(2 * np.pi * (hour - 2) / 24), (1, 0): 5.0, (2, 1): 30.0}


def share_forecast(t2, hour, count_b=5, count_a=5):
    """The share forecast of template 1 when the source holds count_a lines of template 0."""
    ts = np.full(1, DAY0 + 4 * 86400 + hour * 3600 + 30.0)
    ctx = BatchContext(now=float(ts[0]), lines_seen=0, warm=True, n_templates=4, ts=ts)
    _, mus = t2._share_scores(np.array([1]), np.array([float(count_b)]), np.array([float(count_a + count_b)]), ctx)
    return float(mus[0])


def test_a_share_that_moves_with_the_time_of_day_is_forecast_per_hour():
    rng = np.random.default_rng(3)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 4 * 1440, rng)
    # the same 5 lines are a tenth of the source by day and half of it at night: both forecast
    assert 3.5 < share_forecast(t2, 14, count_a=50) < 7.0
    assert 3.5 < share_forecast(t2, 2, count_a=5) < 7.0
    top, found = feed(t2, day_and_night, DAY0 + 4 * 86400, 1440, rng)
    assert top < 40.0 and not found, "a normal day and night is neither spike nor drop"
    # template 1 hammered by day while the rest of its source does not move: a share spike
    surge = lambda hour: {**day_and_night(hour), (1, 0): 150.0}   # noqa: E731
    feed(t2, day_and_night, DAY0 + 5 * 86400, 14 * 60, rng)
    batch, ts = lines(surge, DAY0 + 5 * 86400 + 14 * 3600, 3, rng)
    ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts)
    buckets = t2._buckets(ts)
    t_counts = t2._counts(batch.template_id, buckets, t2.templates)
    s_counts = t2._counts(batch.source_id, buckets, t2.sources)
    shares, _ = t2._share_scores(batch.template_id, t_counts, s_counts, ctx)
    assert shares[batch.template_id == 1].max() >= 70.0 and shares[batch.template_id != 1].max() < 40.0


def test_without_seasons_the_night_share_would_be_a_spike():
    """What the per-hour share fixes: the same counts against a share with no daily pattern."""
    rng = np.random.default_rng(3)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 4 * 1440, rng)
    t2.share_season.hod[:] = 0.0
    t2.share_season.dow[:] = 0.0
    assert share_forecast(t2, 2, count_a=5) < 2.5


def test_an_old_state_without_share_seasons_loads_with_flat_factors():
    rng = np.random.default_rng(4)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 300, rng)
    state = json.loads(json.dumps(t2.state()))
    del state["share_season"]
    t2.templates.ensure(200)                            # a grown tier saved before share seasons
    state["templates"] = json.loads(json.dumps(t2.templates.state()))
    loaded = tier()
    loaded.load_state(state)
    check_state_arrays("t2", tier(), loaded)
    assert loaded.share_season.hod.shape[0] >= loaded.templates.size
    assert (loaded.share_season.factor(np.arange(4), DAY0, 60.0) == 1.0).all()
    feed(loaded, day_and_night, DAY0 + 300 * 60, 120, rng)   # and it runs on


def trained(rng, minutes=1440):
    t2 = tier()
    feed(t2, day_and_night, DAY0, minutes, rng)
    return t2


def test_the_time_a_restored_tier_was_down_is_neither_drop_nor_silence():
    rng = np.random.default_rng(5)
    t2 = trained(rng)
    state = json.loads(json.dumps(t2.state()))
    ages = t2.sources.age.copy()
    restored = tier()
    restored.load_state(state)
    # three hours down, then the same traffic: nothing found, and no bucket of the gap learned
    _, found = feed(restored, day_and_night, DAY0 + 1440 * 60 + 3 * 3600 + 25.0, 30, rng)
    assert not found
    assert (restored.sources.age[:2] - ages[:2] <= 30).all()
    # the same gap without a restore (and with gap skipping off) is judged: silences
    plain = tier(input_gap_seconds=0)
    plain.load_state(state)
    plain.resumed = False
    _, found = feed(plain, day_and_night, DAY0 + 1440 * 60 + 3 * 3600 + 25.0, 30, rng)
    assert any("silent" in f.reason for f in found)


def test_every_busy_source_quiet_together_is_a_gap_in_the_input():
    rng = np.random.default_rng(6)
    for gap_seconds, judged in ((600.0, False), (0.0, True)):
        t2 = tier(input_gap_seconds=gap_seconds)
        feed(t2, day_and_night, DAY0, 1440, rng)
        _, found = feed(t2, day_and_night, DAY0 + 1440 * 60 + 1800, 60, rng)   # 30 minutes of nothing
        assert bool(found) == judged
        assert t2.gaps_skipped == (0 if judged else 1)


def test_one_source_quiet_while_another_logs_is_still_silence():
    rng = np.random.default_rng(7)
    t2 = trained(rng)
    only_web = lambda hour: {k: v for k, v in day_and_night(hour).items() if k[1] == 1}   # noqa: E731
    _, found = feed(t2, only_web, DAY0 + 1440 * 60, 30, rng)
    assert any(f.key == "source:0" and "silent" in f.reason for f in found)
    assert t2.gaps_skipped == 0


def test_a_spike_does_not_teach_its_hour_to_expect_it():
    """Ten minutes of a template at 10x (flagged: learned at the anomaly weight) must not become
    its hour's pattern, or the quiet after it would be a drop."""
    rng = np.random.default_rng(8)
    t2 = trained(rng, 1440 + 22 * 60 + 30)
    before = t2.template_season.factor(np.arange(2), DAY0 + 22 * 3600, 60.0)[1]
    spike = lambda hour: {**day_and_night(hour), (1, 0): 300.0}   # noqa: E731
    feed(t2, spike, DAY0 + 86400 + 22 * 3600 + 1800, 10, rng, anomalous=(1,))
    _, found = feed(t2, day_and_night, DAY0 + 86400 + 22 * 3600 + 2400, 60, rng)
    assert not [f for f in found if f.key == "template:1"]
    assert t2.template_season.factor(np.arange(2), DAY0 + 22 * 3600, 60.0)[1] == pytest.approx(before, rel=0.05)



def nightly_job(factor=1.0):
    """Source 0 and 1 as day_and_night; template 3 (a batch job of source 0) logs 15 lines a minute
    from 01:00 to 04:00 (times factor), nothing the rest of the day."""
    return lambda hour: {**day_and_night(hour), **({(3, 0): 15.0 * factor} if 1 <= hour < 4 else {})}


def test_a_nightly_job_is_expected_at_its_hour_the_next_night():
    """The job's level decays through the quiet day, and its clump and long-run mean are counted
    after dividing by its hour factor (20 at night): without its usual count at that hour as a
    floor, the third night's first half hour is a spike of several times the forecast."""
    rng = np.random.default_rng(9)
    t2 = tier()
    feed(t2, nightly_job(), DAY0, 2 * 1440, rng, chunk=10)
    assert t2.templates.clump[3] < 5.0 and t2.templates.level[3] < 0.01
    before = t2.state()
    top, _ = feed(t2, nightly_job(), DAY0 + 2 * 86400 + 3600, 30, rng, chunk=10)
    assert top < 40
    # fifty times its usual count at that hour is still a spike (its learned forecast error is large:
    # a factor of three either way, from the level it had while it decayed)
    t2 = tier()
    t2.load_state(json.loads(json.dumps(before)))
    t2.resumed = False
    top, _ = feed(t2, nightly_job(50.0), DAY0 + 2 * 86400 + 3600, 10, rng, chunk=10)
    assert top >= 70


def test_a_source_quiet_for_minutes_that_comes_back_is_not_raised():
    """A restart: source 0 quiet for five minutes, then back. Its silence is held for drop_hold_seconds
    and withdrawn, since the source is no longer low by then; with no hold it is raised."""
    only_web = lambda hour: {k: v for k, v in day_and_night(hour).items() if k[1] == 1}   # noqa: E731
    for hold, raised in ((600.0, False), (0.0, True)):
        rng = np.random.default_rng(7)
        t2 = tier(drop_hold_seconds=hold)
        feed(t2, day_and_night, DAY0, 1440, rng)
        _, quiet = feed(t2, only_web, DAY0 + 1440 * 60, 5, rng, chunk=1)
        _, back = feed(t2, day_and_night, DAY0 + 1445 * 60, 30, rng, chunk=1)
        found = [f for f in quiet + back if f.key == "source:0"]
        assert bool(found) == raised, [f.reason for f in found]
        assert (t2.drops_withdrawn > 0) == (not raised)


def job_night(t2, day, rng, job, after=None):
    """One day of source 0 (template 0, 30 a minute) with a job (template 3, 300 a minute) from 01:00
    to 04:30: its end falls inside an hour, which hour-of-day factors see as an average."""
    steady = lambda hour: {(0, 0): 30.0, (2, 1): 30.0}   # noqa: E731
    with_job = lambda hour: {**steady(hour), (3, 0): 300.0}   # noqa: E731
    found = []
    for start, minutes, rates in ((0, 60, steady), (60, 210, with_job if job else steady), (270, 1170, after or steady)):
        found += feed(t2, rates, DAY0 + day * 86400 + start * 60, minutes, rng, chunk=10)[1]
    return found


def test_a_job_ending_mid_hour_is_no_drop_of_its_source_but_a_drop_of_the_rest_is():
    """The job's template goes quiet at 04:30 though its hour factor expects it until 05:00: neither
    its silence nor its source's drop is raised (an intermittent template's quiet spells follow its
    own schedule; a source is judged by its steady templates). A drop of the steady template still is."""
    rng = np.random.default_rng(11)
    t2 = tier()
    for day in range(2):
        job_night(t2, day, rng, True)
    state = json.loads(json.dumps(t2.state()))

    def raised(found, keys):
        return [(f.key, f.reason) for f in found if f.key in keys and f.score >= 70
                and f.ts < DAY0 + 2 * 86400 + 6 * 3600]
    assert not raised(job_night(t2, 2, rng, True), ("source:0", "template:3"))
    # the same night, but the steady template falls to a fifth after the job: that drop is raised
    t2 = tier()
    t2.load_state(state)
    t2.resumed = False
    assert raised(job_night(t2, 2, rng, True, after=lambda hour: {(0, 0): 6.0, (2, 1): 30.0}),
                  ("source:0", "template:0"))


def steady_quiet(hour):
    """Template 3 logs 6 lines a minute, day and night, beside template 2's 30 on source 1."""
    return {(2, 1): 30.0, (3, 1): 6.0}


def spike_minutes(t2, start, minutes, rng, chunk, per_minute=33):
    """Template 3 at `per_minute` lines a minute (33: five and a half times steady_quiet's rate; evenly
    spread: no luck of the draw) for `minutes`, scored and learned `chunk` minutes a batch -> (top
    score of its lines, the reasons of the lines that scored it)."""
    top, reasons = 0.0, set()
    for m in range(0, minutes, chunk):
        batch, ts = lines(lambda h: {(2, 1): 30.0}, start + 60.0 * m, chunk, rng)
        extra = start + 60.0 * m + np.arange(per_minute * chunk) * 60.0 / per_minute
        ts = np.concatenate([ts, extra])
        order = np.argsort(ts, kind="stable")
        batch = SimpleNamespace(n=ts.size, template_id=np.r_[batch.template_id, np.full(extra.size, 3, np.int32)][order],
                                source_id=np.r_[batch.source_id, np.full(extra.size, 1, np.int32)][order])
        ts = ts[order]
        t2.advance(ts[0])
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts,
                           template_text=lambda t: "tpl%d" % t, source_name=str)
        result = t2.score(batch, ctx)
        mine = np.flatnonzero(batch.template_id == 3)
        top = max(top, float(result.scores[mine].max()))
        reasons |= {result.reasons[i] for i in mine.tolist() if result.scores[i] == top and i in result.reasons}
        # anomalies are learned at a tenth of a line, as the engine learns them (anomaly_learning_weight)
        t2.learn(batch, ctx, np.where(result.scores >= 70.0, 0.1, 1.0).astype(np.float32))
    return top, reasons


@pytest.mark.parametrize("chunk", [1, 10])
def test_a_sustained_spike_of_a_quiet_template_is_judged_over_several_buckets(chunk, monkeypatch):
    """Template 3 at 33 lines a minute against its usual 6: the low end of one minute's count (33 - 3
    sqrt 33 = 15.8) is short of three times the forecast (18.5); over five minutes (165, low end 126,
    against 31) it is well over. The window counts the same whether the minutes come in one batch or
    in ten."""
    import anomaly_detector.detection.tier2_volume as T2
    start = DAY0 + 86400 + 14 * 3600
    judge_recent = T2.VolumeTier._recent_spike_scores
    for window, expect_spike in ((1, False), (T2.SPIKE_WINDOW, True)):
        monkeypatch.setattr(T2, "SPIKE_WINDOW", window)
        monkeypatch.setattr(T2, "LONG_SPIKE_WINDOW", window)   # no longer window either
        # nor the windows against the recent level (test_tier2_recent.py's)
        monkeypatch.setattr(T2.VolumeTier, "_recent_spike_scores",
                            judge_recent if window > 1 else lambda *args: [])
        rng = np.random.default_rng(11)
        t2 = tier()
        top, found = feed(t2, steady_quiet, DAY0, 1440 + 14 * 60, rng)
        assert top < 40.0 and not found, "a steady day is neither spike nor drop, over one bucket or several"
        top, reasons = spike_minutes(t2, start, 10, rng, chunk)
        if expect_spike:
            assert top >= 70.0 and any("in 300s" in r for r in reasons), (top, reasons)
        else:
            assert top < 40.0, "one minute at a time, the spike stays under the spike_min_ratio floor"




def firewall(hour):
    """Template 3: a firewall's blocks, 1.2 a minute day and night (a busy key: most minutes have one)."""
    return {(2, 1): 30.0, (3, 1): 1.2}


def test_a_scan_of_a_quiet_template_is_judged_over_a_quarter_of_an_hour(monkeypatch):
    """Template 3 at 10 lines a minute against its usual 1.2 (a port scan) after two days: five minutes'
    50 lines against 6 are mostly counting noise on the ratio's scale and stay under anomaly_threshold;
    fifteen minutes' 100 and more against 18 are not. Judged over five minutes only, the scan is missed."""
    import anomaly_detector.detection.tier2_volume as T2
    start = DAY0 + 2 * 86400 + 14 * 3600
    judge_recent = T2.VolumeTier._recent_spike_scores
    for long_window, expect_spike in ((T2.SPIKE_WINDOW, False), (T2.LONG_SPIKE_WINDOW, True)):
        monkeypatch.setattr(T2, "LONG_SPIKE_WINDOW", long_window)
        # nor over a quarter of an hour against the recent level (test_tier2_recent.py's)
        monkeypatch.setattr(T2.VolumeTier, "_recent_spike_scores",
                            judge_recent if expect_spike else lambda *args: [])
        rng = np.random.default_rng(11)
        t2 = tier()
        top, found = feed(t2, firewall, DAY0, 2 * 1440 + 14 * 60, rng)
        assert top < 40.0 and not found
        top, reasons = spike_minutes(t2, start, 20, rng, 1, per_minute=10)
        if expect_spike:
            assert top >= 70.0 and any("in 900s" in r for r in reasons), (top, reasons)
        else:
            assert top < 70.0, (top, reasons)


def test_a_busy_key_no_more_dispersed_than_poisson_opens_its_window_at_the_poisson_bound(monkeypatch):
    """Template 3 at 1.2 a minute (Poisson: phi about 1), then 7 a minute for five minutes, in one batch:
    35 lines against a forecast of 5.8 have a normal low end (35 - 3 sqrt 35 = 17.3) short of three times
    the forecast (17.5), and an exact Poisson lower bound (19.5) past it: the window is judged, and the
    count is a finding (before, it was never scored)."""
    import anomaly_detector.detection.tier2_volume as T2
    monkeypatch.setattr(T2, "LONG_SPIKE_WINDOW", T2.SPIKE_WINDOW)       # the five-minute window alone
    monkeypatch.setattr(T2.VolumeTier, "_recent_spike_scores", lambda *args: [])
    rng = np.random.default_rng(11)
    t2 = tier()
    top, found = feed(t2, firewall, DAY0, 2 * 1440 + 14 * 60, rng)
    assert top < 40.0 and not found
    assert t2.templates.phi[3] <= 1.0, t2.templates.phi[3]
    top, reasons = spike_minutes(t2, DAY0 + 2 * 86400 + 14 * 3600, 5, rng, 5, per_minute=7)
    assert top >= 40.0 and any("35 lines in 300s" in r for r in reasons), (top, reasons)


def sporadic(hour):
    """Template 3: a known warning, six an hour day and night (a sparse key, spread over the day)."""
    return {(2, 1): 30.0, (3, 1): 0.1}


@pytest.mark.parametrize("per_minute, minutes, at_least", [(3, 15, 70.0), (2, 6, 70.0), (1, 5, None), (1, 15, 70.0)])
def test_a_sporadic_template_bursting_is_judged_over_the_window_against_its_rate(per_minute, minutes, at_least):
    """Six an hour, then `per_minute` a minute: never more than a handful a bucket, short of any one
    bucket's floor (its clump), but over five minutes far beyond half a line expected. Thirty and twenty
    times its rate are flagged (twenty: ten lines in five minutes, which three normal deviations put at
    zero against its floor, and which its per-minute dispersion, raised by each minute of the burst, put
    under 70); ten times (five lines in five minutes) stays under spike_min_ratio's low end (the Poisson
    lower bound of its window count) for five minutes, and is found over the quarter hour (fifteen lines
    against one and a half: VolumeTier._long_window_scores judges sporadic keys too)."""
    rng = np.random.default_rng(21)
    t2 = tier()
    top, found = feed(t2, sporadic, DAY0, 1440 + 14 * 60, rng)
    assert top < 40.0 and not found
    top, _ = spike_minutes(t2, DAY0 + 86400 + 14 * 3600, minutes, rng, 1, per_minute)
    assert (top >= at_least) if at_least else (top < 40.0), top


@pytest.mark.parametrize("count, floor", [(0, 0.0), (1, 0.0), (5, 0.79), (8, 2.07), (12, 4.19), (100, 72.65)])
def test_the_poisson_lower_bound_is_the_exact_one_within_a_few_percent_and_never_above_it(count, floor):
    """Exact one-sided 3-sigma (p = 0.00135) lower limits of a Poisson mean, from its chi-square quantile."""
    low = float(poisson_lower_bound(np.array([count]))[0])
    assert floor * 0.93 <= low <= floor + 1e-3, (count, low)


def test_a_sporadic_template_is_expected_at_its_sources_busy_hour_multiple_never_below_its_rate():
    """Source 0 logs ten times more at 14:00 than at 02:00: lines that come with that traffic (a decline, a
    timeout; template 0) are expected above their long-run rate by day; at night not below it."""
    rng = np.random.default_rng(5)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 2 * 1440, rng)

    def factor(hour, base, key=0):
        buckets = t2._buckets(np.array([DAY0 + 2 * 86400 + hour * 3600 + 30.0]))
        return float(np.broadcast_to(t2._busy_hour_factor(np.array([key]), buckets, base), 1)[0])

    assert factor(14, t2.templates) > 1.3
    assert factor(2, t2.templates) == 1.0
    assert factor(14, t2.values.base) == 1.0, "value keys keep their long-run rate"


def test_a_sporadic_template_that_does_not_follow_its_source_is_not_expected_at_its_busy_hour_multiple():
    """Template 1 logs as much at 14:00 as at 02:00 while its source is ten times busier: its own hours say
    it does not follow that traffic, and it is expected at about its long-run rate by day too (at the
    source's multiple, a shard timeout's burst at fifteen times its rate never reached its forecast's floor)."""
    rng = np.random.default_rng(5)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 2 * 1440, rng)
    buckets = t2._buckets(np.array([DAY0 + 2 * 86400 + 14 * 3600 + 30.0]))
    flat = float(np.broadcast_to(t2._busy_hour_factor(np.array([1]), buckets, t2.templates), 1)[0])
    follows = float(np.broadcast_to(t2._busy_hour_factor(np.array([0]), buckets, t2.templates), 1)[0])
    assert flat < 1.15 < 1.3 < follows, (flat, follows)


def held_a_day(rng):
    """A tier that holds drops 600 s, trained a day on day_and_night -> (tier, the next minute's start)."""
    t2 = tier(drop_hold_seconds=600.0)
    feed(t2, day_and_night, DAY0, 1440, rng)
    return t2, DAY0 + 1440 * 60


def trickle(hour):
    """Source 0 at a twentieth of its day_and_night volume, source 1 as usual."""
    return {**{k: v / 20 for k, v in day_and_night(hour).items() if k[1] == 0}, (2, 1): 30.0}


def only_web(hour):
    return {(2, 1): 30.0}


def test_a_drop_that_goes_silent_is_held_as_a_silence_since_its_first_low_minute():
    """Source 0 falls to a twentieth for five minutes, then stops: the drop is first seen while it still
    logs, the silence later. Held, it is reported to the engine as low since the drop (held_sources) and
    raised as a silence of the source since no later than that (what its partners raised meanwhile
    joins it, incidents.py)."""
    rng = np.random.default_rng(3)
    t2, start = held_a_day(rng)
    _, low = feed(t2, trickle, start, 5, rng, chunk=1)
    _, quiet = feed(t2, only_web, start + 300, 4, rng, chunk=1)
    held = t2.held_sources()
    assert 0 in held and start <= held[0] <= start + 120
    _, rest = feed(t2, only_web, start + 540, 30, rng, chunk=1)
    found = [f for f in low + quiet + rest if f.key == "source:0"]
    # the first finding stands for the episode from the drop on; the silence goes on being raised
    assert found and all(f.reason.startswith("source silent") for f in found)
    assert found[0].ts == held[0] and found[0].since == held[0]


def test_a_silence_after_a_dip_the_source_came_back_from_is_dated_from_its_own_onset():
    """Source 0 falls to a twentieth for one minute, is back at its usual volume for six, then stops: the
    dip is held (a drop is held drop_hold_seconds), but the silence is an episode of its own, dated
    and held from its first empty minute, not from the dip (an alert dated at the dip sends the
    operator to minutes of normal traffic; a source that stopped mid-way through its own decline keeps
    the earlier date, test above)."""
    rng = np.random.default_rng(3)
    t2, start = held_a_day(rng)
    _, dip = feed(t2, trickle, start, 1, rng, chunk=1)
    _, back = feed(t2, day_and_night, start + 60, 6, rng, chunk=1)
    assert "source:0" in t2.held, "the dip is held"
    silent = start + 420
    _, quiet = feed(t2, only_web, silent, 4, rng, chunk=1)
    held = t2.held_sources()
    assert 0 in held and silent <= held[0] <= silent + 120, (held, silent)
    _, rest = feed(t2, only_web, silent + 240, 30, rng, chunk=1)
    found = [f for f in dip + back + quiet + rest if f.key == "source:0"]
    assert found and all(f.reason.startswith("source silent") for f in found)
    assert silent <= found[0].ts <= silent + 120 and found[0].since == silent, (found[0], silent)
    # so are its templates' silences, which went to the same incident
    mine = [f for f in dip + back + quiet + rest if f.key in ("template:0", "template:1")]
    assert mine and all(f.ts >= silent for f in mine), [(f.key, f.ts - silent) for f in mine]


def test_a_drop_held_from_a_dip_just_before_it_is_dated_from_the_fall():
    """Source 0 dips for one minute and is held (a drop is held drop_hold_seconds); it is back at its
    forecast for minutes, then falls to a fifth and is still there at the release. The outage began when
    the source fell, not at the dip: an alert dated from the dip begins before the outage (an operator's
    rule credits none that does). It is raised dated from the fall's first minute; a drop that was low
    from the dip on keeps the dip's date (never earlier than first seen)."""
    for fall_at, dated in ((6, "fall"), (None, "first seen")):
        rng = np.random.default_rng(3)
        t2, start = held_a_day(rng)
        feed(t2, trickle, start, 1, rng, chunk=1)
        feed(t2, day_and_night, start + 60, 1, rng, chunk=1)   # the dip's minute closes
        assert "source:0" in t2.held, "the dip is held"
        first = t2.held["source:0"][0].ts
        src, ring = t2.sources, t2.sources.obs_win.shape[1]
        dip = int(start // 60)
        # the ring as it is at the release: the dip, minutes at the forecast, then a fifth of it
        t2.open_bucket = dip + t2.hold_buckets
        buckets = np.arange(t2.open_bucket - ring + 1, t2.open_bucket + 1)
        exp = np.full(ring, 20.0)
        obs = np.where(buckets < dip + (fall_at or 1), 20.0, 4.0)
        obs[buckets == dip] = 1.0
        src.obs_win[0, buckets % ring], src.exp_win[0, buckets % ring] = obs, exp
        for k, width in enumerate(DROP_WINDOWS):
            src.obs_sum[0, k], src.exp_sum[0, k] = obs[-width:].sum(), exp[-width:].sum()
        t2.held = {"source:0": t2.held["source:0"]}
        t2.held["source:0"][3] = t2.open_bucket
        t2._release()
        found = [f for f in t2.pending if f.key == "source:0"]
        assert found and found[0].confirmed
        expected = (dip + fall_at) * 60.0 if dated == "fall" else first
        assert found[0].ts == expected, (dated, found[0].ts - first)


def test_change_point_finds_where_the_counts_fell_against_their_forecast():
    assert change_point([10, 10, 10, 2, 2, 2], [10] * 6) == 3
    assert change_point([10, 3, 10, 10, 2, 2, 1], [10] * 7) == 4      # a dip before the fall is not it
    assert change_point([20, 20, 10, 10], [20, 20, 20, 20]) == 2
    assert change_point([2, 2, 2], [10] * 3) == 0                      # low all along: no later start
    assert change_point([1, 1, 9, 9], [10] * 4) == 0                   # a rise is no fall
    assert change_point([10, 0, 2, 2], [10, 0, 10, 10]) == 1           # no forecast: no evidence either way


def test_a_sporadic_templates_busy_hour_multiple_is_lowered_on_a_quiet_day():
    """A Sunday at 70% of the weekdays' traffic from 10:00: at 14:00 the hour-of-day table still says the
    hour is busy, but the source's level has followed the quieter day, and the busy-hour multiple follows
    it down (a weekend scraper's lines are not expected at a weekday's rate). It is never raised on a
    busier day."""
    quiet = lambda hour: {k: (0.7 * v if k[1] == 0 else v) for k, v in day_and_night(hour).items()}  # noqa: E731
    busy = lambda hour: {k: (2.0 * v if k[1] == 0 else v) for k, v in day_and_night(hour).items()}   # noqa: E731
    factors = {}
    for name, day in (("weekday", day_and_night), ("sunday", quiet), ("busy", busy)):
        rng = np.random.default_rng(5)
        t2 = tier()
        feed(t2, day_and_night, DAY0, 2 * 1440 + 10 * 60, rng)
        feed(t2, day, DAY0 + 2 * 86400 + 10 * 3600, 4 * 60, rng)
        buckets = t2._buckets(np.array([DAY0 + 2 * 86400 + 14 * 3600 + 30.0]))
        factors[name] = float(np.broadcast_to(t2._busy_hour_factor(np.array([0]), buckets, t2.templates), 1)[0])
        factors[name + " level"] = float(t2._quiet_day_factor(np.array([0]))[0])
    assert factors["weekday"] > 1.3 and factors["weekday level"] >= 0.95, factors
    # four hours at 70% bring the level to about 0.9 of its long-run mean (it learns at learning_rate)
    assert 1.0 <= factors["sunday"] < 0.9 * factors["weekday"] and factors["sunday level"] < 0.92, factors
    assert factors["busy level"] == 1.0, factors



def test_a_sporadic_keys_window_is_scored_as_a_count_whose_forecast_is_uncertain():
    """A login form's POSTs on a Sunday morning (a sparse key: 1.6 lines a minute over the day, in clumps
    of two; its forecast often a third off): 64 lines in five minutes against 8 expected. Judged also as a
    log ratio against the forecast's error and the counting noise together, the less surprising of two
    tests, it scored 35; as a count whose forecast is uncertain, it is a spike."""
    t2 = tier()
    base = t2.templates
    base.ensure(4)
    base.clump[3], base.rel2[3], base.phi[3] = 2.08, 0.53, 1.15
    ctx = BatchContext(now=DAY0, lines_seen=0, warm=True, n_templates=4, ts=np.array([DAY0]))
    args = (np.array([3]), np.array([13.0]), np.array([int(DAY0 // 60)]), base, np.array([1.61]))
    scores, counts, mus = t2._window_scores(*args, np.array([WINDOW_SPORADIC], np.int8), ctx, earlier=np.array([51.0]))
    assert counts[0] == 64 and mus[0] == pytest.approx(8.05) and scores[0] >= 70, scores
    busy, _, _ = t2._window_scores(*args, np.array([WINDOW_BUSY], np.int8), ctx, earlier=np.array([51.0]))
    assert busy[0] < 40, "a busy key's many lines keep both tests"


def test_input_gaps_names_the_spans_every_busy_source_was_quiet_in():
    rng = np.random.default_rng(9)
    t2 = tier()
    feed(t2, day_and_night, DAY0, 1440, rng)
    after = DAY0 + 1440 * 60
    ts = np.array([after + 10.0, after + 20.0, after + 720.0, after + 730.0])
    assert t2.input_gaps(ts, after) == ((after + 20.0, after + 720.0),)
    assert t2.input_gaps(ts[:2], after) == ()                           # seconds apart: no gap
    assert tier(input_gap_seconds=0).input_gaps(ts, after) == ()       # gap skipping off
    quiet = tier()                                                      # one source logging a line an hour
    feed(quiet, lambda hour: {(2, 1): 1.0 / 60.0}, DAY0, 1440, rng)
    assert quiet.input_gaps(ts, after) == ()



def test_an_empty_minute_of_a_quiet_key_does_not_split_its_held_drop():
    """A held drop seen again, stronger, while its closing minute happens to be empty: a key at a quarter
    of a few lines a minute has many empty minutes, and the minutes in between may not be low by the
    spread its seasons forecast it with. Unless the empty run is a silence by itself, the drop goes on:
    one episode, held from its first low minute and released on time (a template's drop re-held at
    every empty minute was released only once its recent level had sunk into the drop, and withdrawn).
    An empty run that is a silence alone, after minutes back at the usual volume, is an episode of its
    own (test above)."""
    rng = np.random.default_rng(3)
    t2, start = held_a_day(rng)
    feed(t2, trickle, start, 1, rng, chunk=1)
    feed(t2, day_and_night, start + 60, 6, rng, chunk=1)
    assert "source:0" in t2.held, "the dip is held"
    first, _, _, release, _, _ = t2.held["source:0"]
    ring = t2.sources.obs_win.shape[1]
    slot = t2.open_bucket % ring
    t2.sources.obs_win[0, slot] = 0.0      # the closing minute is empty, the one before it was not
    assert t2.sources.obs_win[0, (slot - 1) % ring] > 0

    def finding(score):
        return Finding(tier=t2.name, ts=start + 420.0, key="source:0", score=score, reason="source volume drop")

    t2.sources.exp_win[0, slot] = 2.0      # two lines expected: an empty minute is no silence
    deeper = finding(first.score + 10.0)
    t2._hold(deeper, "source", 0)
    entry = t2.held["source:0"]
    assert entry[0] is deeper and entry[3] == release and deeper.ts == first.ts, "one episode, held as it was"
    t2.sources.exp_win[0, slot] = 60.0     # sixty: silent
    silence = finding(first.score + 20.0)
    t2._hold(silence, "source", 0)
    assert t2.held["source:0"][0] is silence and t2.held["source:0"][3] > release, "a silence is its own episode"


def night_and_day(hour):
    """Source 0 at 500 lines a minute at 16:00 and 50 at 04:00; template 1 is 1% of it all day (a cache
    miss: 5 a minute by day, 0.5 at night), template 0 the rest. Source 1 logs steadily."""
    traffic = 0.55 - 0.45 * np.cos(2 * np.pi * (hour - 4) / 24)
    return {(0, 0): 495.0 * traffic, (1, 0): 5.0 * traffic, (2, 1): 30.0}


def template1_top(t2, rates, start, minutes, rng, factor):
    """`minutes` of `rates` from `start`, each template's rate times factor(t0, tid), a minute a batch,
    learned as the engine learns -> (top score of template 1's lines, the reasons of those at 70)."""
    top, reasons = 0.0, set()
    for m in range(minutes):
        batch, ts = poisson_lines(rates, start + 60.0 * m, 1, rng, factor=factor)
        t2.advance(ts[0])
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts,
                           template_text=lambda t: "tpl%d" % t, source_name=str)
        result = t2.score(batch, ctx)
        mine = np.flatnonzero(batch.template_id == 1)
        if mine.size:
            top = max(top, float(result.scores[mine].max()))
            reasons |= {result.reasons[i] for i in mine.tolist() if result.scores[i] >= 70 and i in result.reasons}
        t2.learn(batch, ctx, np.where(result.scores >= 70.0, 0.1, 1.0).astype(np.float32))
    return top, reasons


def night_spike(t2, start, minutes, rng, factor):
    """template1_top of night_and_day with template 1 at `factor` times its rate."""
    return template1_top(t2, lambda t0: night_and_day(int(t0 % 86400 // 3600)), start, minutes, rng,
                         lambda t0, tid: factor if tid == 1 else 1.0)


@pytest.mark.parametrize("share_windows", [True, False])
def test_a_quiet_templates_night_spike_is_judged_against_its_share_over_a_window(share_windows, monkeypatch):
    """After a day, template 1 at ten times its night rate (5 lines a minute against 0.5) for twenty
    minutes: one minute's share never clears the floor at the low end of its sampling error, and its level
    is forecast from a night seen once; its share of its source over five minutes (about 30 lines against
    its share of the source's 250 or so) does. A night without the spike is not flagged. Without the share
    windows it is missed."""
    if not share_windows:
        monkeypatch.setattr(VolumeTier, "_share_window_scores", lambda self, *a: [])
        # the spike against its level over the hour before finds it too (test_tier2_recent.py): not here
        monkeypatch.setattr(VolumeTier, "_recent_spike_scores", lambda self, *a: [])
    rng = np.random.default_rng(7)
    t2 = tier()
    top, found = feed(t2, night_and_day, DAY0, 1440 + 3 * 60, rng)
    assert top < 40.0
    start = DAY0 + 86400 + 3 * 3600
    quiet, _ = night_spike(t2, start, 40, rng, 1.0)
    assert quiet < 40.0, "an ordinary night is no spike"
    top, reasons = night_spike(t2, start + 2400, 20, rng, 10.0)
    if share_windows:
        assert top >= 70.0 and any("against the rest of its source" in r for r in reasons), (top, reasons)
    else:
        assert top < 70.0, (top, reasons)


def test_a_share_window_needs_the_rest_of_its_source_and_the_floor_at_the_low_end_of_its_count():
    """40 lines of a template whose share is 2%: against a source of 340 lines (6.8 expected; the Poisson
    lower bound of 40, about 24, is over three times that) a spike; against 45 (five other lines, too few
    to say what the share should be) or 900 (18 expected: 40 is not three times that at its low end), none."""
    t2 = tier()
    t2.templates.ensure(4)
    keys, usable = np.array([1, 1, 1]), np.ones(3, bool)
    scores, _, mus, window = t2._share_window(keys, np.full(3, 40.0), np.array([340.0, 45.0, 900.0]),
                                              np.full(3, 0.02), usable, 5)
    assert window == 5 and mus[0] == pytest.approx(6.8)
    assert scores[0] >= 70.0 and scores[1] == 0.0 and scores[2] == 0.0, scores
    unusable, _, _, _ = t2._share_window(keys, np.full(3, 40.0), np.full(3, 340.0), np.full(3, 0.02),
                                         np.zeros(3, bool), 5)
    assert not unusable.any(), "a young or sparse template is not judged by its share"


def export_job(hour):
    """Source 0: template 0, an export job's progress lines, 40 a minute; template 1, a queue-depth line
    twice a minute, all day. Source 1 logs steadily."""
    return {(0, 0): 40.0, (1, 0): 2.0, (2, 1): 30.0}


@pytest.mark.parametrize("min_level_ratio, expect_spike", [(2.0, False), (0.0, True)])
def test_a_share_that_rises_because_the_rest_of_its_source_fell_is_no_spike(min_level_ratio, expect_spike,
                                                                            monkeypatch):
    """The export job's lines fall to a twentieth: template 1's two lines a minute become half its source
    instead of a twenty-first, ten times its share, though it logs as it always did. That is the job's
    drop, not a spike of template 1, which is not up on its own level. Without the level condition
    (SHARE_SPIKE_MIN_LEVEL_RATIO 0) its share windows raised it."""
    import anomaly_detector.detection.tier2_volume as T2
    monkeypatch.setattr(T2, "SHARE_SPIKE_MIN_LEVEL_RATIO", min_level_ratio)
    rng = np.random.default_rng(3)
    t2 = tier()
    top, _ = feed(t2, export_job, DAY0, 2 * 1440 + 14 * 60, rng)
    assert top < 40.0
    start = DAY0 + 2 * 86400 + 14 * 3600
    top, _ = template1_top(t2, lambda t0: export_job(14), start, 20, rng, lambda t0, tid: 0.05 if tid == 0 else 1.0)
    assert (top >= 70.0) if expect_spike else (top < 40.0), top


def with_a_rare_warning(rate):
    """day_and_night with template 3 of source 0, a warning at `rate` a minute whatever the traffic."""
    return lambda hour: {**day_and_night(hour), (3, 0): rate}


def test_a_rare_warnings_burst_too_slow_for_five_minutes_is_found_over_a_quarter_hour():
    """A warning that logs once in twenty minutes comes at about a line a minute for a quarter hour (svc's shard
    timeouts): five or six lines in five minutes are no certain spike of a sporadic key, but a quarter hour of
    them is (its long window, VolumeTier._long_window_scores). Before it, this draw's best line scored 49."""
    rng = np.random.default_rng(4)
    t2 = tier()
    feed(t2, with_a_rare_warning(0.05), DAY0, 2 * 1440 + 14 * 60, rng)
    top, _ = feed(t2, with_a_rare_warning(1.0), DAY0 + 2 * 86400 + 14 * 3600, 15, rng, chunk=1)
    assert top >= 70.0, top


def test_a_rare_warning_three_times_in_ten_minutes_does_not_page():
    """The same warning three times in ten minutes by chance (a line a minute for three minutes) is no spike."""
    rng = np.random.default_rng(7)
    t2 = tier()
    feed(t2, with_a_rare_warning(0.05), DAY0, 2 * 1440 + 14 * 60, rng)
    burst = {0: 1.0, 1: 1.0, 2: 1.0}
    for m in range(10):
        top, _ = feed(t2, with_a_rare_warning(burst.get(m, 0.0)), DAY0 + 2 * 86400 + 14 * 3600 + 60 * m, 1, rng,
                      chunk=1)
        assert top < 70.0, (m, top)
