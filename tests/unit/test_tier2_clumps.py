"""Tier 2's long drop windows for a source whose lines come in clumps (a job logging its steps within seconds):
judged by its clumps (tier2_volume._clumps) in its busy hours (VolumeTier._busy_hours), against the rest of the
site (tier2_long.LongWindows.site_scaled). By its lines such a source was too busy for the long windows, by its
jobs it is not: a drop of its jobs to a fifth for an hour and a half was missed."""
import math
from types import SimpleNamespace

import numpy as np
from test_tier2_hosts import DAY0, feed_rows, source_drops, tier


def _load(t):
    """The day's shape: a night at a fifth of the afternoon's peak."""
    h = (t % 86400.0) / 3600.0
    return 0.25 + 1.5 * math.exp(-0.5 * ((h - 14.0) / 4.0) ** 2)


def jobs(drop=None, factor=0.2, per_min=0.8, steps=8):
    """Source 1: jobs of `steps` lines within seconds (two templates, four lines each); source 0 and 2: busy
    single lines following the same day."""
    def rows_at(t0, rng):
        f = _load(t0)
        rate = per_min * f * (factor if drop and drop[0] <= t0 < drop[1] else 1.0)
        out = []
        for t in t0 + rng.uniform(0, 60, rng.poisson(rate)):
            out += [(t + 0.01 * k, 10 + k % 2, 1, -1) for k in range(steps)]
        for tid, src, r in ((0, 0, 30.0), (1, 2, 20.0)):
            out += [(t, tid, src, -1) for t in t0 + rng.uniform(0, 60, rng.poisson(r * f))]
        return out
    return rows_at


def test_a_drop_of_a_job_sources_jobs_to_a_fifth_is_raised_over_a_long_window():
    low = (DAY0 + 2 * 86400 + 14 * 3600, DAY0 + 2 * 86400 + 14 * 3600 + 90 * 60)
    found = feed_rows(tier(), DAY0, 3 * 1440, np.random.default_rng(11), jobs(drop=low))
    drops = source_drops(found, 1)
    assert drops and low[0] < drops[0].ts <= low[1] and drops[0].confirmed, [f.reason for f in found]


def test_a_job_source_on_ordinary_days_raises_no_drop():
    found = feed_rows(tier(), DAY0, 4 * 1440, np.random.default_rng(12), jobs())
    assert not source_drops(found, 1), [f.reason for f in source_drops(found, 1)]


def test_clumps_are_a_keys_dispersion_bounded_by_its_busy_buckets_count():
    from anomaly_detector.detection.tier2_volume import _clumps
    base = SimpleNamespace(clump=np.array([9.0, 9.0, 1.5, 0.5]), phi=np.array([4.0, 1.0, 6.0, 0.2]))
    assert [_clumps(base, k) for k in range(4)] == [4.0, 1.0, 1.5, 1.0]


def test_site_scaled_forecasts_follow_the_rest_of_the_site_only_down():
    from anomaly_detector.detection.tier2_long import LongWindows
    lw = LongWindows(2, size=3)
    lw.record(np.array([10.0, 50.0, 50.0]), np.array([20.0, 100.0, 100.0]))   # the rest at half its forecast
    lw.record(np.array([10.0, 300.0, 300.0]), np.array([20.0, 100.0, 100.0]))  # the rest at three times it
    got = lw.site_scaled(np.array([True, False, False]))
    assert np.allclose(got[0], [20.0 * 100.5 / 200.5, 20.0])
    assert np.array_equal(got[1:], lw.exp[1:])
    assert np.array_equal(lw.site_scaled(np.zeros(3, np.bool_)), lw.exp)
