"""Tier 2 closes a sparse log's empty minutes in bulk (VolumeTier._close_quiet_run, one kernel call for
many buckets): the models, findings and held drops come out exactly as closing them one by one."""
import json

import numpy as np
from test_tier2_recent import DAY0, feed, tier


def outages(rng, days):
    """Whole-service silences of minutes to a day and a half (a sparse log, a service down): the
    traffic's factor at (minute start, template)."""
    quiet, t = [], DAY0 + 3 * 3600.0
    while t < DAY0 + days * 86400.0:
        length = 60.0 * float(rng.choice([7, 40, 180, 600, 2000]))
        quiet.append((t, t + length))
        t += length + 60.0 * float(rng.integers(30, 400))
    return lambda t0, tid: 0.0 if any(a <= t0 < b for a, b in quiet) else 1.0


def run(bulk, seed):
    t2 = tier()
    closed = {"bulk": 0}
    if bulk:
        quiet_run = t2._close_quiet_run

        def counted(stop):
            n = quiet_run(stop)
            closed["bulk"] += n
            return n
        t2._close_quiet_run = counted
    else:
        t2._close_quiet_run = lambda stop: 0
    rng = np.random.default_rng(seed)
    found = feed(t2, DAY0, 4 * 1440, rng, factor=outages(np.random.default_rng(seed + 100), 4), chunk=45)
    return t2, found, closed["bulk"]


def test_empty_minutes_closed_in_bulk_leave_the_same_models_and_findings():
    for seed in (1, 2):
        one_by_one, found_one, _ = run(False, seed)
        bulk, found_bulk, closed = run(True, seed)
        assert closed > 1000, "the silences should be closed in bulk"
        assert [(f.key, f.ts, f.score, f.reason) for f in found_bulk] == [(f.key, f.ts, f.score, f.reason)
                                                                          for f in found_one]
        assert any("drop" in f.reason or "silent" in f.reason for f in found_one), "the outages should be seen"
        assert json.dumps(bulk.state()) == json.dumps(one_by_one.state())
        for name in ("obs", "season", "win_obs", "win_season", "ref_obs", "ref_season", "filled", "rel2"):
            assert np.array_equal(getattr(bulk.recent, name), getattr(one_by_one.recent, name)), name
        assert bulk.recent.last_bucket == one_by_one.recent.last_bucket
        assert bulk.open_bucket == one_by_one.open_bucket
        assert bulk.drops_withdrawn == one_by_one.drops_withdrawn
