"""Tier 2's drops against the rest of the site's load (tier2_load.py, VolumeTier._load_drops), judged for busy
sources too in their busy hours, a run of the sequential test raised at up to LOAD_MAX_RATIO of that forecast: a
service at three fifths of its share for two hours, each quarter within its seasonal error, was missed."""
import numpy as np
from test_tier2_clumps import _load
from test_tier2_hosts import DAY0, feed_rows, source_drops, tier


def busy(drop=None, factor=0.6):
    """Source 1: a service's single lines, a tenth of the site's, following the day (factor of them over
    drop); sources 0 and 2: the rest of the site."""
    def rows_at(t0, rng):
        f = _load(t0)
        out = []
        for tid, src, r in ((0, 0, 40.0), (1, 2, 30.0), (2, 1, 8.0)):
            r *= factor if src == 1 and drop and drop[0] <= t0 < drop[1] else 1.0
            out += [(t, tid, src, -1) for t in t0 + rng.uniform(0, 60, rng.poisson(r * f))]
        return out
    return rows_at


def test_a_busy_source_at_three_fifths_of_its_share_for_two_hours_is_raised_against_the_load():
    # each quarter hour within the seasonal forecast's error, the busy source is not judged over the long
    # windows on its seasons; against the rest of the site's load, whose error is a few percent, it is
    low = (DAY0 + 2 * 86400 + 13 * 3600, DAY0 + 2 * 86400 + 15 * 3600)
    found = feed_rows(tier(), DAY0, 2 * 1440 + 15 * 60, np.random.default_rng(14), busy(drop=low))
    drops = source_drops(found, 1)
    assert drops and low[0] < drops[0].ts <= low[1] and drops[0].confirmed, [f.reason for f in found]


def test_a_busy_source_following_the_load_raises_no_drop():
    found = feed_rows(tier(), DAY0, 4 * 1440, np.random.default_rng(15), busy())
    assert not source_drops(found, 1), [f.reason for f in source_drops(found, 1)]
