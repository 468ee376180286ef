"""Tier 2 on hand-made traffic: a surge of every busy source at once is traffic (a campaign), judged
against the site's factor (tier2_site.py); one source surging alone, or with only one other, is a spike."""
import copy

import numpy as np
from test_tier2_day_shares import DAY0, feed, tier
from tier2_traffic import poisson_lines

from anomaly_detector.detection.base import BatchContext
from anomaly_detector.detection.tier2_site import SiteLoad

TRAFFIC = (0, 1, 2)   # web, app, db: their lines follow the customers; source 3 is a heartbeat


def site(hour):
    """Template i of source i; the three traffic sources follow one day curve, the heartbeat does not."""
    day = 1.0 - 0.6 * np.cos(2 * np.pi * (hour - 3) / 24)
    return {(0, 0): 40.0 * day, (1, 1): 25.0 * day, (2, 2): 30.0 * day, (3, 3): 6.0}


def surge(sources, factor=5.0):
    return lambda hour: {k: v * (factor if k[1] in sources else 1.0) for k, v in site(hour).items()}


def trained():
    rng = np.random.default_rng(3)
    t2 = tier()
    feed(t2, site, DAY0, 2 * 1440 + 14 * 60, rng)
    return t2


def source_scores(t2, rates, minutes=8):
    """Best score of each source's lines over `minutes` of `rates` at 14:00 on day 3."""
    rng = np.random.default_rng(4)
    best = np.zeros(4)
    for m in range(minutes):
        start = DAY0 + 2 * 86400 + 14 * 3600 + 60.0 * m
        batch, ts = poisson_lines(lambda t0: rates(int(t0 % 86400 // 3600)), start, 1, rng)
        t2.advance(float(ts[0]))
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=4, ts=ts)
        scores = t2.score(batch, ctx).scores
        np.maximum.at(best, batch.source_id, scores)
        t2.learn(batch, ctx, np.where(scores >= 70, 0.1, 1.0).astype(np.float32))
    return best


def test_every_traffic_source_surging_together_is_no_spike_one_alone_or_with_one_other_is():
    t2 = trained()
    assert source_scores(copy.deepcopy(t2), surge(TRAFFIC))[list(TRAFFIC)].max() < 70
    alone = source_scores(copy.deepcopy(t2), surge((0,)))
    assert alone[0] >= 70 and alone[1:].max() < 70
    two = source_scores(copy.deepcopy(t2), surge((0, 1)))
    assert two[0] >= 70 and two[1] >= 70, "a proxy and its backend surging together may be one fault spreading"
    # a source far beyond the site's surge is still a spike of its own
    beyond = source_scores(copy.deepcopy(t2), lambda hour: {**surge(TRAFFIC)(hour), (0, 0): site(hour)[(0, 0)] * 25})
    assert beyond[0] >= 70 and beyond[[1, 2]].max() < 70


def test_the_site_factor_is_the_second_busiest_other_source_and_at_least_one():
    t2 = trained()
    bucket = int((DAY0 + 2 * 86400 + 14 * 3600) // 60)
    forecast, busy = t2.source_forecasts(bucket, 1)
    assert busy[list(TRAFFIC)].all()
    # one bucket: web's lines so far are the batch's; app and db at 3 and 2 times their forecast
    n = [int(round(forecast[s] * f)) for s, f in ((1, 3.0), (2, 2.0))]
    sources = np.array([0] + [1] * n[0] + [2] * n[1] + [0], np.int32)
    load = SiteLoad(t2, sources, np.full(sources.size, bucket, np.int64))
    t2.open_bucket, t2.sources.open_raw[:] = bucket, 0.0
    f = load.factors(np.array([0, sources.size - 1]), 1)
    assert f[0] == 1.0, "before the others' lines came the site was quiet"
    assert abs(f[1] - n[1] / forecast[2]) < 1e-9, "the second busiest of app and db (the heartbeat is not up)"


def test_the_factor_needs_two_and_half_of_the_other_busy_sources_up():
    """Seven busy sources, one bucket, every line of it in the batch: with five others at 3 times their
    forecast the site is at 3; with only two others up (a flood running through its chain of services)
    it is not; a source that is not busy (young, job-like) is not counted either way."""
    from types import SimpleNamespace
    n, bucket = 8, 1000
    forecast, busy = np.full(n, 10.0), np.arange(n) < 7
    tier = SimpleNamespace(sources=SimpleNamespace(size=n, open_raw=np.zeros(n), obs_win=np.zeros((n, 15))),
                           open_bucket=bucket, source_forecasts=lambda b, w: (forecast, busy))

    def factor(up):
        sources = np.concatenate([np.full(30 if s in up else 10, s) for s in range(n)] + [[0]]).astype(np.int32)
        load = SiteLoad(tier, sources, np.full(sources.size, bucket, np.int64))
        return float(load.factors(np.array([sources.size - 1]), 1)[0])     # the last line, of source 0

    assert factor({1, 2, 3, 4, 5}) == 3.0
    assert factor({1, 2, 3}) == 3.0, "three of the six others: half"
    assert factor({1, 2}) == 1.0
    assert factor({1, 2, 7}) == 1.0, "source 7 is not busy"
