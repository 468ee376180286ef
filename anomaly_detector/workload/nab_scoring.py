"""Score per-row detections on labelled metric series the way the Numenta Anomaly Benchmark does.

bench/nab_bench.py replays the series through the product and hands the per-line scores and flags
here; tests/unit/test_nab_scoring.py checks the rules on hand-made windows. Pure Python + numpy,
no product code: the scorer must not depend on what it measures.

The rules (NAB's published scoring):
- rows before min(15% of the series, 750) are probationary: detections there are ignored;
- in a window only the first detection counts, worth tpWeight * sigma(y), y = -1 at the window's
  first row and 0 at its last; a window without one costs fnWeight;
- a detection outside every window costs fpWeight * sigma(y) (sigma < 0 there), y its distance
  after the end of the preceding window in window lengths; before the first window, the full fpWeight;
- sigma(y) = 2 / (1 + e^(5y)) - 1;
- the corpus's raw score is normalised so the null detector (never detects) scores 0 and the
  perfect one (first row of every window) 100;
- for a continuous score, the threshold is the one that maximises the corpus's score, per profile.
"""
import bisect
import json
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

PROBATION_SHARE = 0.15
PROBATION_MAX_ROWS = 750


@dataclass(frozen=True)
class Profile:
    """The weights of one application profile (NAB's profiles.json CostMatrix)."""

    name: str
    tp: float
    fn: float
    fp: float


# NAB's three application profiles; load_profiles() reads the same from a profiles.json.
PROFILES = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


def load_profiles(path):
    """Profiles from a NAB profiles.json, in the file's order."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return tuple(Profile(name, float(p["CostMatrix"]["tpWeight"]), float(p["CostMatrix"]["fnWeight"]),
                         float(p["CostMatrix"]["fpWeight"])) for name, p in raw.items())


def sigma(y):
    """NAB's scaled sigmoid: ~1 at y=-1 (a window's start), 0 at y=0 (its end), -> -1 far after it."""
    # exp overflows past y ~ 142; the limit there is exactly -1.
    return -1.0 if y > 100.0 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n):
    return min(int(math.floor(PROBATION_SHARE * n)), PROBATION_MAX_ROWS)


def parse_time(text):
    """A NAB timestamp ("2014-04-10 07:15:00" or with ".000000", or ISO with T) -> datetime."""
    return datetime.fromisoformat(text.strip().replace("T", " "))


def window_rows(times, windows):
    """[(first row, last row)] of each [start, end] window over the sorted row times (inclusive)."""
    rows = []
    for start, end in windows:
        first = bisect.bisect_left(times, start)
        last = bisect.bisect_right(times, end) - 1
        if last >= first:
            rows.append((first, last))
    return rows


class Series:
    """One labelled series: its length, window rows, and what a detection at each row is worth.

    row_window[i] is the window index of row i (-1 outside every window); row_value[i] is
    sigma(y) for the row (positive inside a window, negative outside, 0 while probationary)."""

    def __init__(self, name, n, windows):
        self.name = name
        self.n = int(n)
        self.windows = [(int(a), int(b)) for a, b in windows]
        self.probation = probation_rows(self.n)
        self.row_window = np.full(self.n, -1, np.int64)
        self.row_value = np.zeros(self.n, np.float64)
        self._fill()

    def _fill(self):
        prev_end, prev_len = None, None
        bounds = sorted(self.windows)
        k = 0
        for i in range(self.n):
            while k < len(bounds) and i > bounds[k][1]:
                prev_end, prev_len = bounds[k][1], max(bounds[k][1] - bounds[k][0], 1)
                k += 1
            if k < len(bounds) and bounds[k][0] <= i <= bounds[k][1]:
                start, end = bounds[k]
                self.row_window[i] = self.windows.index(bounds[k])
                self.row_value[i] = sigma((i - end) / max(end - start, 1))
            elif prev_end is None:
                self.row_value[i] = -1.0
            else:
                self.row_value[i] = sigma((i - prev_end) / prev_len)
        self.row_value[: self.probation] = 0.0
        self.row_window[: self.probation] = -1


@dataclass
class Tally:
    """Unweighted counts of one detector on one or more series: add them up, then weigh per profile."""

    tp_value: float = 0.0   # sum of sigma over the first detection of each detected window
    fp_value: float = 0.0   # sum of sigma (negative) over detections outside windows
    detected: int = 0       # windows with a detection
    windows: int = 0
    fp_rows: int = 0

    def add(self, other):
        return Tally(self.tp_value + other.tp_value, self.fp_value + other.fp_value,
                     self.detected + other.detected, self.windows + other.windows, self.fp_rows + other.fp_rows)

    def raw(self, profile):
        return profile.tp * self.tp_value + profile.fp * self.fp_value - profile.fn * (self.windows - self.detected)


def tally(series, detections):
    """Tally a boolean per-row detection array on one series."""
    rows = np.flatnonzero(np.asarray(detections, bool)[: series.n])
    rows = rows[rows >= series.probation]
    inside = series.row_window[rows] >= 0
    first = {}
    for r in rows[inside]:
        first.setdefault(int(series.row_window[r]), int(r))
    outside = rows[~inside]
    return Tally(tp_value=float(sum(series.row_value[r] for r in first.values())),
                 fp_value=float(series.row_value[outside].sum()), detected=len(first),
                 windows=len(series.windows), fp_rows=int(outside.size))


def null_tally(series):
    return Tally(windows=len(series.windows))


def perfect_detections(series):
    """A detection at the first row of every window (the perfect detector)."""
    det = np.zeros(series.n, bool)
    for first, _ in series.windows:
        det[first] = True
    return det


def total(tallies):
    out = Tally()
    for t in tallies:
        out = out.add(t)
    return out


def normalised(raw, null, perfect):
    """100 * (raw - null) / (perfect - null); None when the corpus has no window to score."""
    span = perfect - null
    return None if span <= 0 else 100.0 * (raw - null) / span


def corpus_score(series_list, detections_list, profile):
    """Normalised score (0 null .. 100 perfect) of per-row detections on a corpus, one profile."""
    raw = total(tally(s, d) for s, d in zip(series_list, detections_list)).raw(profile)
    null = total(null_tally(s) for s in series_list).raw(profile)
    perfect = total(tally(s, perfect_detections(s)) for s in series_list).raw(profile)
    return normalised(raw, null, perfect)


def sweep(series_list, scores_list):
    """Every threshold t (a row is a detection when score >= t) with the corpus tally at t.

    Yields (t, Tally) from the highest score down, plus t = +inf first (no detection at all).
    One pass over the rows sorted by score: O(N log N) for N rows in the corpus."""
    keys = []
    for k, (s, scores) in enumerate(zip(series_list, scores_list)):
        scores = np.asarray(scores, np.float64)[: s.n]
        for r in range(s.probation, s.n):
            keys.append((-float(scores[r]), k, r))
    keys.sort()
    current = Tally(windows=sum(len(s.windows) for s in series_list))
    yield math.inf, current
    first = {}      # (series, window) -> first detected row so far
    i = 0
    while i < len(keys):
        neg = keys[i][0]
        while i < len(keys) and keys[i][0] == neg:
            _, k, r = keys[i]
            current = _add_row(current, first, series_list[k], k, r)
            i += 1
        yield -neg, current


def _add_row(current, first, series, k, r):
    w = int(series.row_window[r])
    value = float(series.row_value[r])
    if w < 0:
        return Tally(current.tp_value, current.fp_value + value, current.detected, current.windows, current.fp_rows + 1)
    old = first.get((k, w))
    if old is None:
        first[(k, w)] = r
        return Tally(current.tp_value + value, current.fp_value, current.detected + 1, current.windows, current.fp_rows)
    if r < old:
        first[(k, w)] = r
        return Tally(current.tp_value + value - float(series.row_value[old]), current.fp_value, current.detected,
                     current.windows, current.fp_rows)
    return current


def best_thresholds(series_list, scores_list, profiles=PROFILES):
    """{profile name: (threshold, normalised score, Tally)} maximising each profile's corpus score.

    Ties go to the highest threshold (the first reached in the sweep)."""
    null = {p.name: total(null_tally(s) for s in series_list).raw(p) for p in profiles}
    perfect_t = total(tally(s, perfect_detections(s)) for s in series_list)
    best = {}
    for t, tal in sweep(series_list, scores_list):
        for p in profiles:
            score = normalised(tal.raw(p), null[p.name], perfect_t.raw(p))
            if score is not None and (p.name not in best or score > best[p.name][1]):
                best[p.name] = (t, score, tal)
    return best
