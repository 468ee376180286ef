"""Tier 2's clock silences: a source whose lines come on a clock is silent once it misses a few of its ticks.

tier2_volume.py judges a source's empty window as a quasi-Poisson count at its per-bucket dispersion (at
least Poisson): fifteen empty minutes of a source of a line a minute is e^-15, short of finding_min_score,
and a source of five lines every five minutes (a Redis save) is judged by its clumps, e^-3. But a source on
a clock (stats every 60 s, a save every 5 min) has quarter hours as exact as its clock: its count over a
window scatters far less than a Poisson count of its ticks. tier2_long.py learns that scatter from block to
block (LongWindows.bdisp: a Poisson count 1, a clock about 0, random flows their size); here a source whose
learned block dispersion is well below a Poisson count of its ticks (its clump: lines per non-empty bucket)
and whose last DROP_WINDOWS[-1] buckets were empty while its forecast held at least CLOCK_MIN_TICKS ticks is
raised silent at once: the window is longer than drop_hold_seconds already (as tier2_long's drops).

What is not a clock is judged as before: a bursty source's night lull, an hourly batch job (an empty quarter
between runs is its usual block), a source logging on demand scatter from block to block at least as a
Poisson count of their clumps.
"""
import math

import numpy as np

from .stats_kernels import count_lower_score

# A source is on a clock where its learned block dispersion is at most this share of a Poisson count of its
# ticks (its clump): a Poisson source's is about 1 / clump (0.6 at a line a minute), random flows' about 1,
# a clock's near 0 (pgbouncer's stats 0.01, Redis saves 0.05-0.1 of their five-line clumps).
CLOCK_MAX_SHARE = 0.25
# A clock's empty window is judged once its forecast holds at least this many ticks: a window holds whole
# ticks of a clock, and the forecast is a little off (14 lines for a clock of 15); finding_min_score is
# reached at this many ticks (see tick_dispersion), so a clock of a tick every five minutes is raised for
# a quarter hour with none of its three ticks, one of a tick every ten minutes is not.
CLOCK_MIN_TICKS = 2.5
# A clock ticks in every quarter hour: a source is one only where at least this share of its blocks had a
# line (LongWindows.nonzero). A source empty in most blocks (logins in working hours) learns a block
# dispersion near 0 from one empty block to the next, and is no clock.
CLOCK_MIN_NONZERO = 0.9
# Blocks the block dispersion must have been learned from before a source counts as a clock: a Poisson
# source's average of 32 squares is below CLOCK_MAX_SHARE of its mean about once in ten thousand.
CLOCK_MIN_BLOCKS = 32


def tick_dispersion(clump, bdisp, min_score):
    """The dispersion a clock's window is judged with: per tick (clump lines) such that an empty window of
    CLOCK_MIN_TICKS expected ticks scores min_score (score = 10 log10(e) ticks / share), and at least
    its learned block dispersion."""
    share = 10.0 * math.log10(math.e) * CLOCK_MIN_TICKS / max(min_score, 1.0)
    return np.maximum(share * np.maximum(clump, 1.0), bdisp)


def clock_like(bdisp, learned, nonzero, clump):
    """Per source: whether its lines come on a clock (see CLOCK_MAX_SHARE, CLOCK_MIN_NONZERO, CLOCK_MIN_BLOCKS)."""
    return ((learned >= CLOCK_MIN_BLOCKS) & (nonzero >= CLOCK_MIN_NONZERO) & (bdisp > 0)
            & (bdisp <= CLOCK_MAX_SHARE * np.maximum(clump, 1.0)))


class ClockSilence:
    """Which sources' clock silences were raised (once per silence: until a line comes back)."""

    def __init__(self):
        self.raised = np.zeros(0, bool)

    def silences(self, obs, exp, judged, clump, bdisp, rel2, min_score):
        """Sources newly silent on their clock -> [(source, score)]. obs, exp: each source's lines and
        forecast over its last DROP_WINDOWS[-1] buckets; judged: bool per source (on a clock, old enough,
        its hour of day seen); clump, bdisp, rel2: per source (rel2: its block's forecast error)."""
        n = obs.shape[0]
        if self.raised.shape[0] < n:
            self.raised = np.concatenate([self.raised, np.zeros(n - self.raised.shape[0], bool)])
        self.raised[:n] &= obs <= 0            # a line came back: the next silence is a new one
        cand = judged & (obs <= 0) & (exp > 0) & ~self.raised[:n]
        if not cand.any():
            return []
        disp = tick_dispersion(clump, bdisp, min_score)
        found = []
        for src in np.flatnonzero(cand).tolist():
            if exp[src] < CLOCK_MIN_TICKS * max(float(clump[src]), 1.0):
                continue
            score = count_lower_score(0.0, float(exp[src]), float(disp[src]), float(rel2[src]))
            if score >= min_score:
                self.raised[src] = True
                found.append((src, float(score)))
        return found

    def clear(self):
        """A gap not the sources' doing: a silence raised before it is not continued by it."""
        self.raised[:] = False
