"""Tier 2's bucket-closing kernels against their numpy twins on random baselines, bucket after bucket."""
import numpy as np
import pytest

from anomaly_detector.detection import volume_kernels as VK
from anomaly_detector.detection import volume_twins as VT

WINDOWS = np.array([1, 5, 15], np.int64)
ARRAYS = ("level", "phi", "rel2", "nonzero", "clump", "total", "age", "obs_win", "exp_win", "obs_sum", "exp_sum")


def random_baseline(rng, n):
    age = rng.integers(0, 400, n)
    age[:3] = 0                                             # never seen yet
    return {"level": rng.lognormal(1.0, 1.5, n) * (age > 0), "phi": rng.uniform(0.5, 20, n),
            "rel2": rng.uniform(0.01, 0.5, n), "nonzero": rng.uniform(0, 1, n), "clump": rng.uniform(1, 10, n),
            "total": rng.uniform(0, 1e5, n), "age": age.astype(np.int64),
            **windows(rng.poisson(5.0, (n, 15)).astype(float), rng.uniform(0, 10, (n, 15)))}


def windows(obs, exp):
    """The rings and the running sums over the last w buckets that they imply (slot 0 next)."""
    sums = {"obs_sum": np.zeros((obs.shape[0], 3)), "exp_sum": np.zeros((obs.shape[0], 3))}
    for k, w in enumerate(WINDOWS):
        last = [(0 - j) % 15 for j in range(w)]
        sums["obs_sum"][:, k] = obs[:, last].sum(axis=1)
        sums["exp_sum"][:, k] = exp[:, last].sum(axis=1)
    return {"obs_win": obs, "exp_win": exp, **sums}


def test_closing_buckets_matches_the_numpy_twin():
    rng = np.random.default_rng(8)
    n = 40
    kernel = random_baseline(rng, n)
    twin = {k: v.copy() for k, v in kernel.items()}
    hod, dow = rng.uniform(0, 50, (n + 8, 3, 24)), rng.uniform(0, 50, (n + 8, 3, 7))
    hod_t, dow_t = hod.copy(), dow.copy()
    scored = highs = 0
    for bucket in range(1, 61):
        hour, day = bucket % 24, bucket % 7
        open_raw = rng.poisson(rng.choice([0.0, 0.5, 5.0, 50.0], n)).astype(float)
        open_raw[rng.random(n) < 0.1] = 0.0                 # silences
        open_learn = open_raw * np.where(rng.random(n) < 0.05, 0.1, 1.0)
        season = np.empty(n)
        VK.season_factors(hod, dow, np.arange(n), np.full(n, hour), np.full(n, day), 60.0, 1440.0, 0.5, 2.0, season)
        want = VT.season_factors(hod_t, dow_t, n, hour, day, 60.0, 1440.0, 0.5, 2.0)
        np.testing.assert_allclose(season, want, rtol=1e-12)
        best, window, weight = np.empty(n, np.float32), np.empty(n, np.int64), np.ones(n)
        hour_rate = np.where(rng.random(n) < 0.2, -1.0, rng.uniform(0.0, 2.0, n))   # some hours not known yet
        VK.close_keys(kernel["level"], kernel["phi"], kernel["rel2"], kernel["nonzero"], kernel["clump"],
                      kernel["total"], kernel["age"], open_raw, open_learn, kernel["obs_win"], kernel["exp_win"],
                      kernel["obs_sum"], kernel["exp_sum"], season, bucket % 15, WINDOWS, 120, 0.01, 10.0, 4.0, 0.1,
                      0.5, 3.0, hour_rate, weight, best, window)
        twin.update(open_raw=open_raw, open_learn=open_learn)
        best_t, window_t, high_t = VT.close_keys(twin, want, bucket % 15, WINDOWS, 120, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0,
                                                 hour_rate)
        np.testing.assert_array_equal(weight == 0.0, high_t)
        highs += int(high_t.sum())
        np.testing.assert_allclose(best, best_t, atol=2e-3)
        assert (window[best > 0] == window_t[best > 0]).all()
        scored += int((best > 0).sum())
        for name in ARRAYS:
            np.testing.assert_allclose(kernel[name], twin[name], rtol=1e-9, atol=1e-9, err_msg=name)
        weight = np.where(rng.random(n) < 0.2, 0.1, 1.0)       # unusual buckets weigh little
        VK.season_update(hod, dow, hour, day, open_learn, kernel["level"], weight, kernel["age"], 120, 0.9999)
        VT.season_update(hod_t, dow_t, hour, day, open_learn, twin["level"], weight, twin["age"], 120, 0.9999)
        np.testing.assert_allclose(hod, hod_t, rtol=1e-12)
        np.testing.assert_allclose(dow, dow_t, rtol=1e-12)
    assert scored > 20, "the random baselines should produce drops to score"
    assert highs > 5, "and windows high by a spike's size"


@pytest.mark.parametrize("count,mu", [(0.0, 50.0), (3.0, 40.0), (30.0, 40.0), (0.0, 2.0)])
def test_drop_score_of_one_count_matches_its_twin(count, mu):
    from anomaly_detector.detection.stats_kernels import count_lower_score
    from anomaly_detector.detection.stats_twins import count_lower_score as twin
    assert count_lower_score(count, mu, 2.0, 0.05) == pytest.approx(twin(count, mu, 2.0, 0.05), abs=1e-3)


def test_learning_shares_matches_the_numpy_twin():
    """Templates' odds against the rest of their source, bucket after bucket, on random counts
    with spikes (the slow path), silences, new templates and sources with no other lines."""
    rng = np.random.default_rng(11)
    n, n_src = 50, 4
    template_source = rng.integers(0, n_src, n).astype(np.int64)
    age = rng.integers(0, 300, n).astype(np.int64)
    age[:3] = 0
    kernel = {"age": age, "phi": rng.uniform(0.5, 5, n), "share_num": rng.uniform(0, 20, n),
              "share_den": rng.uniform(0, 200, n) * (rng.random(n) > 0.1), "share_rel2": rng.uniform(0.01, 0.5, n)}
    twin = {k: v.copy() for k, v in kernel.items()}
    slowed = 0
    for _ in range(60):
        t = rng.poisson(rng.choice([0.0, 1.0, 10.0, 40.0], n)).astype(float)
        spikes = rng.random(n) < 0.05
        t[spikes] *= 10
        src = np.bincount(template_source, weights=t, minlength=n_src)
        src[rng.integers(n_src)] = 0.0                      # a source whose lines were all down-weighted
        before = kernel["share_num"].copy()
        season = rng.uniform(0.2, 5.0, n)                    # the shares' hour-of-day x day-of-week factors
        season[rng.random(n) < 0.3] = 1.0
        others = np.empty(n)
        VK.learn_shares(t, src, template_source, kernel["age"], kernel["phi"], kernel["share_num"],
                        kernel["share_den"], kernel["share_rel2"], season, 0.01, 10.0, 4.0, 0.1, others)
        others_t = VT.learn_shares(twin, t, src, template_source, season, 0.01, 10.0, 4.0, 0.1)
        np.testing.assert_allclose(others, others_t, rtol=1e-9, atol=1e-12, err_msg="others")
        for name in ("share_num", "share_den", "share_rel2"):
            np.testing.assert_allclose(kernel[name], twin[name], rtol=1e-9, atol=1e-12, err_msg=name)
        grown = np.abs(kernel["share_num"] - before)
        slowed += int((spikes & (kernel["age"] > 200) & (grown < 0.01 * np.abs(t - before) * 0.5)).sum())
        kernel["age"] += t > 0
        twin["age"] = kernel["age"].copy()
    assert slowed > 0, "some spikes should be learned at the slow rate"


def test_share_factors_match_the_numpy_twin():
    """Odds of a slot over the odds of all slots, on random tables with empty rows and slots."""
    rng = np.random.default_rng(12)
    n = 30
    hod, dow = rng.uniform(0, 50, (n, 3, 24)), rng.uniform(0, 50, (n, 3, 7))
    hod[:3], dow[:3] = 0.0, 0.0                             # never taught
    dow[3:6, :, 2] = 0.0                                    # a day never seen
    for hour, day in ((0, 0), (13, 2), (23, 6)):
        got = np.empty(n)
        VK.share_factors(hod, dow, np.arange(n), np.full(n, hour), np.full(n, day), 60.0, 1440.0, 0.5, 2.0, got)
        want = VT.share_factors(hod, dow, n, hour, day, 60.0, 1440.0, 0.5, 2.0)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert (got[:3] == 1.0).all() and np.ptp(got) > 0.5


def steady_key():
    """One key long past warm-up at 9 lines a bucket, Poisson, forecast within 20%."""
    return {"level": np.full(1, 9.0), "phi": np.ones(1), "rel2": np.full(1, 0.04), "nonzero": np.ones(1),
            "clump": np.full(1, 9.0), "total": np.full(1, 9000.0), "age": np.full(1, 1000, np.int64),
            **windows(np.full((1, 15), 9.0), np.full((1, 15), 9.0))}


def test_a_drop_window_low_as_a_whole_does_not_teach_the_spread_that_hides_it():
    # A third of the traffic: each bucket (3 against 9) is within its noise, the windows are not.
    b = steady_key()
    scores = []
    for bucket in range(1, 16):
        open_raw = np.array([3.0])
        best, window = np.empty(1, np.float32), np.empty(1, np.int64)
        VK.close_keys(b["level"], b["phi"], b["rel2"], b["nonzero"], b["clump"], b["total"], b["age"], open_raw,
                      open_raw.copy(), b["obs_win"], b["exp_win"], b["obs_sum"], b["exp_sum"], np.ones(1), bucket % 15,
                      WINDOWS, 120, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0, np.full(1, 9.0), np.ones(1), best, window)
        scores.append(float(best[0]))
    # Learnt at the full rate, the drop's own buckets would double rel2 (0.14) and pull the level to
    # 8.2 in a quarter of an hour, and its score would fade from 36 to 25 while it lasts.
    assert b["rel2"][0] < 0.1 and b["level"][0] > 8.5
    assert scores[-1] >= 35 and min(scores[4:]) >= 32


def test_recent_close_matches_the_numpy_twin():
    """tier2_recent's kernel against its twin, bucket after bucket on random rings: every array, and
    the scores, with keys judged and not, quiet and busy, beyond the counts given (new keys count 0)."""
    from anomaly_detector.detection.tier2_recent import RecentLevel

    rng = np.random.default_rng(9)
    n, windows = 30, np.array([5, 15], np.int64)
    kernel = RecentLevel(20, size=n)
    kernel.rel2[:] = rng.uniform(0.01, 0.3, n)
    names = ("obs", "season", "win_obs", "win_season", "ref_obs", "ref_season", "filled", "rel2")
    twin = {k: getattr(kernel, k).copy() for k in names}
    scored = 0
    for bucket in range(100, 200):
        rates = np.where(np.arange(n) < 10, 40.0, 3.0) * (0.2 if 160 <= bucket < 175 else 1.0)
        counts = rng.poisson(rates[: n - 2]).astype(float)
        factors = rng.uniform(0.5, 1.5, n - 2)
        judge, disp = rng.random(n) < 0.8, rng.uniform(0.5, 3.0, n)
        best, best_window = np.empty(n), np.empty(n, np.int64)
        VK.recent_close(kernel.obs, kernel.season, kernel.win_obs, kernel.win_season, kernel.ref_obs,
                        kernel.ref_season, kernel.filled, kernel.rel2, counts, factors, judge, disp, bucket, windows,
                        0.0025, 0.00025, 3.0, 0.0225, 30.0, best, best_window)
        t_best, t_window = VT.recent_close(twin, counts, factors, judge, disp, bucket, windows, 0.0025, 0.00025, 3.0,
                                           0.0225, 30.0)
        for name in names:
            assert np.allclose(getattr(kernel, name), twin[name]), (bucket, name)
        assert np.allclose(best, t_best) and np.array_equal(best_window[best > 0], t_window[best > 0])
        scored += int((best >= 40).sum())
    assert scored > 0   # the drop at buckets 160-175 was judged, not only pushed


def test_closing_a_key_set_in_one_call_matches_its_steps():
    """close_base (season factors, season weights, close_keys, season_update) against the numpy twins
    of each step, bucket after bucket, with anomalous spikes that must not teach their hour."""
    rng = np.random.default_rng(21)
    n = 40
    kernel = random_baseline(rng, n)
    twin = {k: v.copy() for k, v in kernel.items()}
    hod, dow = rng.uniform(0, 50, (n + 8, 3, 24)), rng.uniform(0, 50, (n + 8, 3, 7))
    hod_t, dow_t = hod.copy(), dow.copy()
    unweighted = 0
    for bucket in range(1, 61):
        hour, day = bucket % 24, bucket % 7
        open_raw = rng.poisson(rng.choice([0.0, 0.5, 5.0, 50.0], n)).astype(float)
        spiked = rng.random(n) < 0.1
        open_raw[spiked] *= 20
        open_learn = open_raw * np.where(spiked, 0.1, 1.0)   # a spike of anomalies, learned at a tenth
        kernel.update(open_raw=open_raw, open_learn=open_learn)
        twin.update(open_raw=open_raw.copy(), open_learn=open_learn.copy())
        season, weight = np.empty(n), np.empty(n)
        best, window = np.empty(n, np.float32), np.empty(n, np.int64)
        VK.close_base(hod, dow, hour, day, 60.0, 1440.0, 0.5, 2.0, *(kernel[k] for k in BASE), bucket % 15, WINDOWS,
                      120, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0, 0.1, 0.9999, season, weight, best, window)
        season_t, weight_t, best_t, window_t = VT.close_base(twin, hod_t, dow_t, hour, day, 60.0, 1440.0, 0.5, 2.0,
                                                             bucket % 15, WINDOWS, 120, 0.01, 10.0, 4.0, 0.1, 0.5,
                                                             3.0, 0.1, 0.9999)
        np.testing.assert_allclose(season, season_t, rtol=1e-12)
        assert (weight == weight_t).all()
        np.testing.assert_allclose(best, best_t, atol=2e-3)
        for name in ARRAYS:
            np.testing.assert_allclose(kernel[name], twin[name], rtol=1e-9, atol=1e-9, err_msg=name)
        np.testing.assert_allclose(hod, hod_t, rtol=1e-12)
        np.testing.assert_allclose(dow, dow_t, rtol=1e-12)
        unweighted += int((weight == 0).sum())
    assert unweighted > 10, "spikes of anomalies should be kept out of the seasons"


BASE = ("level", "phi", "rel2", "nonzero", "clump", "total", "age", "open_raw", "open_learn", "obs_win", "exp_win",
        "obs_sum", "exp_sum")


def test_closing_shares_in_one_call_matches_its_steps():
    """close_shares (share factors, weights, learn_shares, the share tables' update) against the twins."""
    rng = np.random.default_rng(22)
    n, n_src = 50, 4
    template_source = np.concatenate([rng.integers(0, n_src, n), np.zeros(14, np.int64)]).astype(np.int64)
    age = rng.integers(0, 300, n).astype(np.int64)
    age[:3] = 0
    kernel = {"age": age, "phi": rng.uniform(0.5, 5, n), "share_num": rng.uniform(0, 20, n),
              "share_den": rng.uniform(0, 200, n) * (rng.random(n) > 0.1), "share_rel2": rng.uniform(0.01, 0.5, n)}
    twin = {k: v.copy() for k, v in kernel.items()}
    hod, dow = rng.uniform(0, 50, (n + 6, 3, 24)), rng.uniform(0, 50, (n + 6, 3, 7))
    hod_t, dow_t = hod.copy(), dow.copy()
    for bucket in range(60):
        hour, day = bucket % 24, bucket % 7
        raw = rng.poisson(rng.choice([0.0, 1.0, 10.0, 40.0], n)).astype(float)
        raw[rng.random(n) < 0.05] *= 10
        learned = raw * np.where(rng.random(n) < 0.1, 0.2, 1.0)
        src_raw = np.bincount(template_source[:n], weights=raw, minlength=n_src)
        src_learn = np.bincount(template_source[:n], weights=learned, minlength=n_src)
        kernel.update(open_raw=raw, open_learn=learned)
        twin.update(open_raw=raw, open_learn=learned)
        factor, weight, others, judged_age = np.empty(n), np.empty(n), np.empty(n), np.empty(n, np.int64)
        VK.close_shares(hod, dow, hour, day, 60.0, 1440.0, 0.5, 2.0, raw, learned, src_raw, src_learn,
                        template_source, kernel["age"], kernel["phi"], kernel["share_num"], kernel["share_den"],
                        kernel["share_rel2"], 0.01, 10.0, 4.0, 0.1, 3.0, 0.1, 120, 0.9999, factor, weight, others,
                        judged_age)
        factor_t, weight_t, others_t = VT.close_shares(twin, hod_t, dow_t, hour, day, 60.0, 1440.0, 0.5, 2.0, src_raw,
                                                       src_learn, template_source, 0.01, 10.0, 4.0, 0.1, 3.0, 0.1,
                                                       120, 0.9999)
        np.testing.assert_allclose(factor, factor_t, rtol=1e-12)
        assert (weight == weight_t).all()
        np.testing.assert_allclose(others, others_t, rtol=1e-9, atol=1e-12)
        for name in ("share_num", "share_den", "share_rel2"):
            np.testing.assert_allclose(kernel[name], twin[name], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(hod, hod_t, rtol=1e-12)
        np.testing.assert_allclose(dow, dow_t, rtol=1e-12)
        kernel["age"] += raw > 0
        twin["age"] = kernel["age"].copy()


def test_earlier_counts_match_the_numpy_twin():
    """Lines of each (key, bucket) pair in the buckets before it: from the batch, the ring of closed
    buckets (older ones count 0) and the open bucket."""
    rng = np.random.default_rng(23)
    obs_win, open_raw, open_bucket = rng.poisson(4.0, (12, 15)).astype(float), rng.poisson(3.0, 12).astype(float), 5000
    keys, buckets = rng.integers(0, 12, 3000), open_bucket + rng.integers(-20, 9, 3000)
    codes, per_pair = np.unique(keys.astype(np.int64) * (1 << 40) + buckets, return_counts=True)
    for window in (2, 5, 15):
        got = np.empty(codes.size)
        VK.earlier_counts(codes, per_pair, obs_win, open_raw, open_bucket, window, got)
        want = VT.earlier_counts(codes, per_pair, obs_win, open_raw, open_bucket, window)
        assert np.array_equal(got, want)
        assert (got > 0).mean() > 0.5


@pytest.mark.parametrize("per_bucket, hour_rate, high", [(8.0, 1.2, True), (2.5, 1.2, False), (8.0, -1.0, False),
                                                         (8.0, 7.0, False)])
def test_a_window_high_by_a_spikes_size_teaches_neither_level_nor_season(per_bucket, hour_rate, high):
    """A firewall template at 1.2 lines a minute: a port scan at 8 a minute is within each minute's noise
    (no bucket is unusual) but 40 lines in five minutes are far beyond three times 6 even at their
    Poisson low end: its buckets weigh 0 in the seasons and teach the level slowly, so the rest of the scan
    (and the next one at this hour) is still judged against 1.2. Twice the rate (a busy hour) is learnt, and
    so is any rise at an hour of day not known yet (-1) or one usually that busy (a job's hour)."""
    b = {"level": np.full(1, 1.2), "phi": np.ones(1), "rel2": np.full(1, 0.01), "nonzero": np.full(1, 0.7),
         "clump": np.full(1, 1.7), "total": np.full(1, 1200.0), "age": np.full(1, 1000, np.int64),
         **windows(np.full((1, 15), 1.2), np.full((1, 15), 1.2))}
    weights = []
    for bucket in range(1, 16):
        open_raw = np.array([per_bucket])
        best, window, weight = np.empty(1, np.float32), np.empty(1, np.int64), np.ones(1)
        VK.close_keys(b["level"], b["phi"], b["rel2"], b["nonzero"], b["clump"], b["total"], b["age"], open_raw,
                      open_raw.copy(), b["obs_win"], b["exp_win"], b["obs_sum"], b["exp_sum"], np.ones(1), bucket % 15,
                      WINDOWS, 120, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0, np.full(1, hour_rate), weight, best, window)
        weights.append(float(weight[0]))
    if high:
        # learnt at the usual rate, fifteen minutes of the scan would have raised the level to 2.2
        assert weights[4:] == [0.0] * 11 and b["level"][0] < 1.5
    else:
        assert weights == [1.0] * 15 and b["level"][0] > 1.3


def close_one(b, count, bucket):
    """Close one bucket of count lines for the steady key b (close_keys as in tier 2) -> its drop score."""
    open_raw = np.array([float(count)])
    best, window = np.empty(1, np.float32), np.empty(1, np.int64)
    VK.close_keys(b["level"], b["phi"], b["rel2"], b["nonzero"], b["clump"], b["total"], b["age"], open_raw,
                  open_raw.copy(), b["obs_win"], b["exp_win"], b["obs_sum"], b["exp_sum"], np.ones(1), bucket % 15,
                  WINDOWS, 120, 0.01, 10.0, 4.0, 0.1, 0.5, 3.0, np.full(1, 9.0), np.ones(1), best, window)
    return float(best[0])


def test_an_hour_long_silence_leaves_the_spread_that_judges_the_next_drop():
    # A service silent for 80 minutes, back for an hour, then down to a tenth for an hour. Each silent
    # bucket is unusual and teaches slowly, but at up to clip^2 times the spread each they widened it
    # from 0.04 to 0.13, and during the second drop to 0.19, its score fading from 100 to 61.
    b = steady_key()
    bucket = 0
    for count in [0] * 80 + [9] * 60:
        bucket += 1
        close_one(b, count, bucket)
    assert b["rel2"][0] < 0.1
    scores = []
    for _ in range(60):
        bucket += 1
        scores.append(close_one(b, 1, bucket))
    assert b["rel2"][0] < 0.1 and min(scores[15:]) >= 90


def test_counting_a_bucket_matches_bincounts_to_the_bit():
    """count_bucket against the bincounts KeyBaseline.count adds: the same sums to the bit (a replay's output
    is the same), over random slices of random keys with uneven weights, into counts already open."""
    rng = np.random.default_rng(31)
    for _ in range(50):
        n_lines, n_values = int(rng.integers(0, 400)), int(rng.integers(0, 300))
        templates, sources = rng.integers(0, 60, n_lines), rng.integers(0, 6, n_lines)
        weights = rng.choice([1.0, 0.3, 1e-3, 0.1 + rng.random()], n_lines)
        values, totals = rng.integers(0, 90, n_values), rng.integers(0, 20, n_values)
        v_weights, t_weights = rng.random(n_values) * 3, rng.random(n_values)
        lo, hi = sorted(rng.integers(0, n_lines + 1, 2).tolist())
        v_lo, v_hi = sorted(rng.integers(0, n_values + 1, 2).tolist())
        t_lo, t_hi = sorted(rng.integers(0, n_values + 1, 2).tolist())
        sets = [{"open_raw": rng.poisson(3.0, n).astype(float), "open_learn": rng.random(n) * 7} for n in (64, 8, 128)]
        twin = [{k: a.copy() for k, a in base.items()} for base in sets]
        VK.count_bucket(templates, sources, weights, lo, hi, sets[0]["open_raw"], sets[0]["open_learn"],
                        sets[1]["open_raw"], sets[1]["open_learn"], values, v_weights, v_lo, v_hi, totals, t_weights,
                        t_lo, t_hi, sets[2]["open_raw"], sets[2]["open_learn"])
        VT.count_bucket(templates, sources, weights, lo, hi, twin[0], twin[1], values, v_weights, v_lo, v_hi, totals,
                        t_weights, t_lo, t_hi, twin[2])
        for got, want in zip(sets, twin):
            assert np.array_equal(got["open_raw"], want["open_raw"])
            assert np.array_equal(got["open_learn"], want["open_learn"])
