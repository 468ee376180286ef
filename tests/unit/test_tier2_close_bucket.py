"""Tier 2 closes a bucket in one kernel call (volume_kernels.close_bucket): the models, findings and held
drops come out exactly as closing it step by step, a kernel call per key set, as the tier did before
(close_by_steps below keeps those steps as the reference), through drops, silences, time jumps and
templates that appear; and the kernel against the numpy twins of its steps on random key sets."""
import json

import numpy as np
import pytest
from test_tier2_recent import DAY0, feed, lost_upstream, tier

from anomaly_detector.detection import tier2_recent as TR
from anomaly_detector.detection import tier2_volume as T2
from anomaly_detector.detection import volume_kernels as VK
from anomaly_detector.detection import volume_twins as VT


def close_by_steps(t2, ctx):
    """VolumeTier._close_bucket as it was before close_bucket: close_shares, learn_shares of the value
    keys, close_base of templates (their drops held), the recent level (its drops held), sources (held)
    and value keys, then the clock silences, hosts, long windows and release."""
    if t2._drop_partial_bucket():
        return
    when = t2.open_bucket * t2.bucket_seconds
    keep = 1.0 - t2.learning_rate / T2.SEASON_SLOWER
    hour, day = (int(v) for v in T2._hour_and_day(when))
    per_hour, per_day = 3600.0 / t2.bucket_seconds, 86400.0 / t2.bucket_seconds
    t, n = t2.templates, t2.templates.size
    VK.close_shares(t2.share_season.hod, t2.share_season.dow, hour, day, per_hour, per_day, T2.HOUR_PRIOR_DAYS,
                    T2.DAY_PRIOR_WEEKS, t.open_raw, t.open_learn, t2.sources.open_raw, t2.sources.open_learn,
                    t2.template_source, t.age, t.phi, t.share_num, t.share_den, t.share_rel2, t2.learning_rate,
                    T2.DISPERSION_SLOWER, T2.CLIP_SIGMAS, T2.MIN_RELATIVE_ERROR, t2.spike_min_ratio, T2.ANOMALOUS_SHARE,
                    t2.min_history, keep, np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int64))
    v = t2.values.base
    VK.learn_shares(v.open_learn, v.open_learn, t2._value_parents(), v.age, v.phi, v.share_num, v.share_den,
                    v.share_rel2, np.ones(v.size), t2.learning_rate, T2.DISPERSION_SLOWER, T2.CLIP_SIGMAS,
                    T2.MIN_RELATIVE_ERROR, np.empty(v.size))
    judging = t2.recent is not None and t2._judged_at != t2._judged_epoch()
    hod_before = t2.template_season.hod.copy() if judging else None
    for base, seasons, kind in ((t2.templates, t2.template_season, "template"), (t2.sources, t2.season, "source"),
                                (t2.values.base, t2.values.season, "value")):
        n = base.size
        season, weight = np.empty(n), np.empty(n)
        best, best_window = np.empty(n, np.float32), np.empty(n, np.int64)
        VK.close_base(seasons.hod, seasons.dow, hour, day, per_hour, per_day, T2.HOUR_PRIOR_DAYS, T2.DAY_PRIOR_WEEKS,
                      *T2._base_arrays(base), t2.open_bucket % T2.DROP_WINDOWS[-1], T2._WINDOWS, t2.min_history,
                      t2.learning_rate, T2.DISPERSION_SLOWER, T2.CLIP_SIGMAS, T2.MIN_RELATIVE_ERROR,
                      T2.SPARSE_FRACTION, t2.spike_min_ratio, T2.ANOMALOUS_SHARE, keep, season, weight, best,
                      best_window)
        if kind != "value" and n and best.max() >= t2.finding_min_score:
            for key in np.flatnonzero(best >= t2.finding_min_score).tolist():
                t2._hold(t2._drop_finding(base, kind, key, int(best_window[key]), float(best[key]), when), kind, key)
        if kind == "template" and t2.recent is not None:
            best, window = t2.recent.close(t2.open_bucket, t.open_raw, season, T2._dispersion_all(t),
                                           recent_judged(t2, hod_before), t2.learning_rate, t2.finding_min_score)
            t2._hold_recent_drops(best, window, when)
        base.open_raw[:] = 0.0
        base.open_learn[:] = 0.0
    t2._clock_silences(when)
    t2._close_hosts(hour, day, per_hour, per_day, keep, when)
    t2._close_long_block(when)
    t2._release()


class _Hours:
    def __init__(self, hod):
        self.hod = hod


def recent_judged(t2, hod=None):
    """The steady templates the recent level judged, worked out again each epoch (as the tier did)."""
    t = t2.templates
    epoch = t2._judged_epoch()
    if t2._judged_at != epoch:
        seasons = t2.template_season if hod is None else _Hours(hod)
        hours = seasons.hod[: t.size, 2, :] >= T2.HOUR_RATE_MIN_SHARE * 3600.0 / t2.bucket_seconds
        t2._judged = ((hours.sum(axis=1) >= T2.RECENT_MIN_HOURS)
                      & ~T2._intermittent(t, seasons, np.arange(t.size), t2.bucket_seconds))
        t2._judged_at = epoch
    return t2._judged & (t.age >= t2.min_history)


def outages_and_losses(rng, days):
    """Whole-service silences of minutes to a day and a half (time walked by the hour through the longest)
    and hours with the day's templates at a quarter: the traffic's factor at (minute start, template)."""
    quiet, t = [], DAY0 + 3 * 3600.0
    while t < DAY0 + days * 86400.0:
        length = 60.0 * float(rng.choice([7, 40, 180, 600, 2000]))
        quiet.append((t, t + length, 0.0 if rng.random() < 0.5 else 0.25))
        t += length + 60.0 * float(rng.integers(30, 400))
    return lambda t0, tid: next((f for a, b, f in quiet if a <= t0 < b and (f == 0.0 or tid in (0, 1))), 1.0)


def run(by_steps, seed, factor=None, **settings):
    t2 = tier(**settings)
    t2._close_quiet_run = lambda stop: 0     # every bucket through _close_bucket
    if by_steps:
        t2._close_bucket = lambda ctx: close_by_steps(t2, ctx)
    rng = np.random.default_rng(seed)
    found = feed(t2, DAY0, 4 * 1440, rng, factor=factor or outages_and_losses(np.random.default_rng(seed + 100), 4),
                 chunk=45)
    return t2, found


@pytest.mark.parametrize("seed,settings", [(1, {}), (2, {}), (3, {"drop_recent_seconds": 0.0}),
                                           (4, {"drop_hold_seconds": 0.0})])
def test_closing_a_bucket_in_one_call_leaves_the_same_models_and_findings(seed, settings):
    steps, found_steps = run(True, seed, **settings)
    kernel, found_kernel = run(False, seed, **settings)
    assert [(f.key, f.ts, f.score, f.reason, f.since) for f in found_kernel] == [
        (f.key, f.ts, f.score, f.reason, f.since) for f in found_steps]
    assert any("drop" in f.reason or "silent" in f.reason for f in found_steps), "the outages should be seen"
    assert json.dumps(kernel.state()) == json.dumps(steps.state())
    if steps.recent is not None:
        for name in ("obs", "season", "win_obs", "win_season", "ref_obs", "ref_season", "filled", "rel2"):
            assert np.array_equal(getattr(kernel.recent, name), getattr(steps.recent, name)), name
        assert kernel.recent.last_bucket == steps.recent.last_bucket
        assert np.array_equal(kernel._judged, steps._judged) and kernel._judged_at == steps._judged_at
    assert kernel.drops_withdrawn == steps.drops_withdrawn
    assert list(kernel.held) == list(steps.held)


def test_a_drop_of_the_days_templates_in_the_first_day_is_held_and_raised_alike():
    factor = lost_upstream(DAY0 + 10 * 3600.0, 120, 0.25)
    steps, found_steps = run(True, 5, factor=factor)
    kernel, found_kernel = run(False, 5, factor=factor)
    assert [(f.key, f.ts, f.score, f.reason) for f in found_kernel] == [(f.key, f.ts, f.score, f.reason)
                                                                        for f in found_steps]
    assert json.dumps(kernel.state()) == json.dumps(steps.state())


BASE = ("level", "phi", "rel2", "nonzero", "clump", "total", "age", "open_raw", "open_learn", "obs_win", "exp_win",
        "obs_sum", "exp_sum")
RECENT = ("obs", "season", "win_obs", "win_season", "ref_obs", "ref_season", "filled", "rel2")
SETTINGS = (60.0, 1440.0, 0.5, 2.0, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0, 0.1, 0.9999, 40.0, 60.0, 30.0, 0.1)
RECENT_SETTINGS = (0.0025, 0.00025, 3.0, 0.0225, 30.0)


def random_keys(rng, n, bucket, shares=False):
    """A key set's arrays as a KeyBaseline holds them, with its open bucket's counts (some spikes of
    anomalies, some silences) and its seasonal tables."""
    age = rng.integers(0, 400, n).astype(np.int64)
    age[:2] = 0
    raw = rng.poisson(rng.choice([0.0, 0.5, 5.0, 50.0], n)).astype(float)
    raw[rng.random(n) < 0.1] = 0.0
    obs = rng.poisson(rng.choice([1.0, 8.0], (n, 1)), (n, 15)).astype(float)
    exp = obs * rng.uniform(0.5, 3.0, (n, 1))
    keys = {"level": rng.lognormal(1.0, 1.5, n) * (age > 0), "phi": rng.uniform(0.5, 20, n),
            "rel2": rng.uniform(0.01, 0.5, n), "nonzero": rng.uniform(0, 1, n), "clump": rng.uniform(1, 10, n),
            "total": rng.uniform(0, 1e5, n), "age": age, "open_raw": raw,
            "open_learn": raw * np.where(rng.random(n) < 0.1, 0.1, 1.0), "obs_win": obs, "exp_win": exp}
    # the running sums over the last w buckets the ring implies (bucket - 1 the last closed)
    last = [[(bucket - 1 - j) % 15 for j in range(w)] for w in (1, 5, 15)]
    keys["obs_sum"] = np.stack([obs[:, slots].sum(axis=1) for slots in last], axis=1)
    keys["exp_sum"] = np.stack([exp[:, slots].sum(axis=1) for slots in last], axis=1)
    if shares:
        keys.update(share_num=rng.uniform(0, 20, n), share_den=rng.uniform(0, 200, n) * (rng.random(n) > 0.1),
                    share_rel2=rng.uniform(0.01, 0.5, n))
    tables = (rng.uniform(0, 50, (n, 3, 24)), rng.uniform(0, 50, (n, 3, 7)))
    return keys, tables


def copy(keys, tables):
    return {k: v.copy() for k, v in keys.items()}, tuple(t.copy() for t in tables)


def steps_twin(bucket, nt, t, t_tab, sh_tab, template_source, s, s_tab, v, v_tab, v_parent, r, judged, rejudge):
    """What close_bucket does, step by step with the numpy twins -> (t_best, t_window, s_best, s_window,
    r_best, r_window)."""
    per_hour, per_day, ph, pd, rate, slow, clip, min_rel, sparse, ratio, anomalous, keep = SETTINGS[:12]
    when = bucket * 60.0
    hour, day, slot = int(when % 86400 // 3600), int((when // 86400 + 3) % 7), bucket % 15
    VT.close_shares(t, *sh_tab, hour, day, per_hour, per_day, ph, pd, s["open_raw"], s["open_learn"],
                    template_source, rate, slow, clip, min_rel, ratio, anomalous, 120, keep)
    VT.learn_shares(v, v["open_learn"], v["open_learn"], v_parent, np.ones(v["level"].size), rate, slow, clip,
                    min_rel)
    hod_before = t_tab[0].copy()
    common = (hour, day, per_hour, per_day, ph, pd, slot, T2._WINDOWS, 120, rate, slow, clip, min_rel, sparse, ratio,
              anomalous, keep)
    t_season, _w, t_best, t_window = VT.close_base(t, *t_tab, *common)
    if rejudge:
        seen = hod_before[:nt, 2, :] >= 30.0
        rates = np.where(seen, hod_before[:nt, 0, :] / np.where(seen, hod_before[:nt, 2, :], 1.0), 0.0)
        quiet = seen & (rates < 0.1 * rates.max(axis=1, initial=0.0)[:, None])
        judged[:] = ((seen.sum(axis=1) >= T2.RECENT_MIN_HOURS) & ~(quiet.sum(axis=1) > 0.5 * seen.sum(axis=1))
                     & ~(t["nonzero"] < sparse))
    disp = T2._dispersion_of(t["phi"], t["nonzero"], t["clump"])
    r_best, r_window = VT.recent_close(r, t["open_raw"], t_season, judged & (t["age"] >= 120), disp, bucket,
                                       TR.WINDOW_ARRAY, *RECENT_SETTINGS)
    _s, _w, s_best, s_window = VT.close_base(s, *s_tab, *common)
    VT.close_base(v, *v_tab, *common)
    for keys in (t, s, v):
        keys["open_raw"][:] = 0.0
        keys["open_learn"][:] = 0.0
    return t_best, t_window, s_best, s_window, r_best, r_window


def check_close_bucket(seed):
    """Random template, source and value key sets and a random recent level, through both stages (a
    template drop stops the first; the caller goes on with the second): every array and every score ->
    (stopped after the templates, the recent level scored a drop)."""
    rng = np.random.default_rng(seed)
    nt, ns, nv = 30, 5, 12
    bucket = 29_000_000 + seed * 7
    t, t_tab = random_keys(rng, nt, bucket, shares=True)
    s, s_tab = random_keys(rng, ns, bucket)
    v, v_tab = random_keys(rng, nv, bucket, shares=True)
    s["open_raw"] = np.bincount(rng.integers(0, ns, nt), weights=t["open_raw"], minlength=ns) + rng.poisson(3.0, ns)
    s["open_learn"] = s["open_raw"].copy()
    sh_tab = (rng.uniform(0, 50, (nt, 3, 24)), rng.uniform(0, 50, (nt, 3, 7)))
    template_source = rng.integers(0, ns, nt).astype(np.int64)
    v_parent = np.where(np.arange(nv) < 4, np.arange(nv), rng.integers(0, 4, nv)).astype(np.int64)
    recent = TR.RecentLevel(20, size=nt)
    for b in range(bucket - 40, bucket):   # the first ten templates down to a tenth over the last 15 minutes
        low = np.where((np.arange(nt) < 10) & (b >= bucket - 14), 0.1, 1.0)
        recent.push(b, rng.poisson(8.0 * low).astype(float), rng.uniform(0.5, 1.5, nt))
    t["open_raw"][:10] = t["open_learn"][:10] = 0.0
    if seed % 3 == 0:   # four templates silent over their drop windows: a drop, which stops the first stage
        t["age"][10:14], t["open_raw"][10:14], t["open_learn"][10:14] = 300, 0.0, 0.0
        t["obs_win"][10:14], t["obs_sum"][10:14] = 0.0, 0.0
    r = {k: getattr(recent, k).copy() for k in RECENT}
    rejudge = seed % 2 == 0
    judged = rng.random(nt) < 0.7
    judged_twin = judged.copy()
    twin = [copy(t, t_tab), copy(s, s_tab), copy(v, v_tab), tuple(x.copy() for x in sh_tab)]
    t_out, s_out = T2._close_outputs(nt), T2._close_outputs(ns)
    r_best, r_window, status = np.empty(nt), np.empty(nt, np.int64), np.zeros(3, np.int64)

    def call(start):
        VK.close_bucket(bucket, start, False, True, rejudge, SETTINGS, RECENT_SETTINGS, 120, T2.RECENT_MIN_HOURS,
                        T2._WINDOWS, tuple(t[k] for k in BASE), (t["share_num"], t["share_den"], t["share_rel2"]),
                        t_tab, sh_tab, template_source, tuple(s[k] for k in BASE), s_tab, tuple(v[k] for k in BASE),
                        (v["share_num"], v["share_den"], v["share_rel2"]), v_tab, v_parent,
                        tuple(getattr(recent, k) for k in RECENT), judged, TR.WINDOW_ARRAY, t_out, s_out, r_best,
                        r_window, status)
    call(1)
    stopped = int(status[0])
    if stopped:
        assert t_out[2].max() >= np.float32(40.0)
        call(2)
    want = steps_twin(bucket, nt, twin[0][0], twin[0][1], twin[3], template_source, twin[1][0], twin[1][1],
                      twin[2][0], twin[2][1], v_parent, r, judged_twin, rejudge)
    for got, expected in ((t, twin[0][0]), (s, twin[1][0]), (v, twin[2][0])):
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=1e-9, err_msg=name)
    for got, expected in zip(t_tab + s_tab + v_tab + sh_tab, twin[0][1] + twin[1][1] + twin[2][1] + twin[3]):
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    for name in RECENT:
        np.testing.assert_allclose(getattr(recent, name), r[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert np.array_equal(judged, judged_twin)
    np.testing.assert_allclose(t_out[2], want[0], atol=2e-3)
    np.testing.assert_allclose(s_out[2], want[2], atol=2e-3)
    np.testing.assert_allclose(r_best, want[4], rtol=1e-6, atol=1e-9)   # the twin's tail test is close, not equal
    assert status[1] == int((r_best >= 40.0).any()) and status[2] == int((s_out[2] >= np.float32(40.0)).any())
    return stopped, int(status[1])


def test_close_bucket_matches_the_numpy_twins_of_its_steps():
    """-> (stopped after the templates, recent drop) per seed: both stages and recent drops are covered."""
    seen = {check_close_bucket(seed) for seed in range(8)}
    assert {stop for stop, _ in seen} == {0, 1} and any(recent for _, recent in seen)
