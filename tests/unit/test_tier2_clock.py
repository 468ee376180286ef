"""Tier 2's clock silences (tier2_clock.py): a source whose lines come on a clock (a stats line every minute,
five lines of a save every five minutes) is raised silent once a quarter hour holds none of its ticks; a
source of random lines at the same rate, one empty in most quarter hours, and a clock at its usual ticks
raise nothing."""
import numpy as np
from test_tier2_hosts import DAY0, score_and_learn, source_drops, tier

from anomaly_detector.detection.incidents import kind_of
from anomaly_detector.detection.stats_kernels import count_lower_score
from anomaly_detector.detection.tier2_clock import CLOCK_MIN_TICKS, ClockSilence, clock_like, tick_dispersion

SOURCES = ["pgbouncer", "app", "redis-server"]


def test_a_clock_is_a_source_of_lines_in_every_block_scattering_well_below_a_poisson_count_of_its_ticks():
    bdisp = np.array([0.01, 0.3, 1.0, 0.0001, 0.2])
    learned = np.array([100, 100, 100, 100, 10])
    nonzero = np.array([1.0, 1.0, 1.0, 0.05, 1.0])
    clump = np.array([1.0, 4.5, 1.6, 1.1, 1.0])
    # a stats line a minute, Redis saves of five lines, not: random lines, a source empty in most blocks,
    # one learned from too few blocks
    assert clock_like(bdisp, learned, nonzero, clump).tolist() == [True, True, False, False, False]


def test_an_empty_window_of_the_least_ticks_judged_scores_the_finding_floor():
    for clump in (1.0, 5.0):
        disp = float(tick_dispersion(np.array([clump]), np.array([0.0]), 40.0)[0])
        assert abs(count_lower_score(0.0, CLOCK_MIN_TICKS * clump, disp, 0.0) - 40.0) < 0.5
        assert count_lower_score(0.0, 2.0 * clump, disp, 0.0) < 40.0


def test_a_silence_is_raised_once_and_again_after_a_line():
    c = ClockSilence()
    args = (np.array([1.0, 1.0]), np.array([0.01, 0.01]), np.array([0.01, 0.01]), 40.0)
    judged = np.array([True, True])
    assert c.silences(np.array([0.0, 15.0]), np.array([15.0, 15.0]), judged, *args) == [(0, 100.0)]
    assert c.silences(np.array([0.0, 15.0]), np.array([15.0, 15.0]), judged, *args) == []
    assert c.silences(np.array([1.0, 15.0]), np.array([15.0, 15.0]), judged, *args) == []
    assert [s for s, _ in c.silences(np.array([0.0, 15.0]), np.array([15.0, 15.0]), judged, *args)] == [0]
    # too few ticks forecast (two of a clump of five), or not judged: nothing
    assert ClockSilence().silences(np.array([0.0]), np.array([10.0]), np.array([True]), np.array([5.0]),
                                   *args[1:]) == []
    assert ClockSilence().silences(np.array([0.0]), np.array([15.0]), np.array([False]), *args) == []


def clock_feed(t2, minutes, rng, silent=None, random_source=False, hours=(0, 24)):
    """Source 0: a line every minute at :31 (random_source: Poisson, a line a minute); source 2: five lines
    every five minutes; source 1: thirty random lines a minute. silent=(source, start, end); the clocks
    tick only in `hours` of the day."""
    found = []
    for m in range(0, minutes, 30):
        rows = []
        for k in range(m, min(m + 30, minutes)):
            t0 = DAY0 + 60.0 * k
            awake = hours[0] <= t0 % 86400 // 3600 < hours[1]
            off = silent is not None and silent[1] <= t0 < silent[2]
            n0 = rng.poisson(1.0) if random_source else 1
            if awake and not (off and silent[0] == 0):
                rows += [(t, 0, 0, -1) for t in (t0 + rng.uniform(0, 60, n0) if random_source else [t0 + 31.0])]
            if awake and k % 5 == 0 and not (off and silent[0] == 2):
                rows += [(t0 + 3.0 + 0.1 * i, 2, 2, -1) for i in range(5)]
            rows += [(t, 1, 1, -1) for t in t0 + rng.uniform(0, 60, rng.poisson(30.0))]
        found += score_and_learn(t2, sorted(rows), SOURCES, False)
    return found + t2.advance(DAY0 + 60.0 * minutes)


def test_a_clock_silent_for_eighteen_minutes_is_raised_and_a_random_source_so_silent_is_not():
    """pgbouncer (infra seed 82) was stuck for 18 min: its quarter hour of none of its fifteen lines was held
    as a drop (e^-15) and withdrawn when it came back before the hold ended."""
    start = DAY0 + 86400 + 15 * 3600
    silent = (0, start, start + 18 * 60)
    found = source_drops(clock_feed(tier(), 2 * 1440, np.random.default_rng(3), silent), 0)
    assert found and start < found[0].ts <= silent[2] and found[0].confirmed, [f.reason for f in found]
    assert kind_of(found[0].reason) == "silent_source" and start <= found[0].since < found[0].ts
    calm = source_drops(clock_feed(tier(), 2 * 1440, np.random.default_rng(3)), 0)
    assert not calm, [f.reason for f in calm]
    poisson = clock_feed(tier(), 2 * 1440, np.random.default_rng(3), silent, random_source=True)
    assert not source_drops(poisson, 0), [f.reason for f in source_drops(poisson, 0)]


def test_saves_every_five_minutes_missing_three_are_raised():
    """redis-server (infra seed 84) hung for 16 min: three saves of five lines missed, judged by its clumps
    a quarter hour of none was e^-3."""
    start = DAY0 + 86400 + 18 * 3600 + 30
    silent = (2, start, start + 16 * 60)
    found = source_drops(clock_feed(tier(), 2 * 1440, np.random.default_rng(4), silent), 2)
    assert found and start < found[0].ts <= start + 20 * 60, [f.reason for f in found]
    assert kind_of(found[0].reason) == "silent_source"


def test_clocks_that_tick_in_working_hours_only_raise_nothing_when_they_stop_at_night():
    """A clock quiet every night (a job of the working day) has a line in few of its quarter hours: its
    evening stop is its usual day, not a silence."""
    found = clock_feed(tier(), 3 * 1440, np.random.default_rng(5), hours=(8, 18))
    clocks = [f for f in found if f.key in ("source:0", "source:2") and "clock" in f.reason]
    assert not clocks, [(f.ts, f.reason) for f in clocks]
