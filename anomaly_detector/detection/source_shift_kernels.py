"""numba kernel of tier 3's source-level shift test: several series of one source shifting the same way
at the same time, judged once against the source's flag budget.

Each series' level-shift test (series_kernels.shift_u) holds its own u to its share of the source's
budget: a database whose five query series each stood at u 7-9 together, every one held to about a
tenth of the budget, raised nothing. Here a source's evidence is combined: its statistic is the sum of
its judged series' shift evidence (series_kernels.shift_evidence: the decades of rarity of the series'
u by its own tail, signed by its side), each clipped to +-SERIES_CLIP decades (at two, postgres' five query
series 2-4.6 decades out in a x3.4 drift summed no more than their nights' wander together), so one series far out is
its own test's business and an excursion beyond U_START needs two series at least (a split series'
drops count as 0, as its own test judges none of them). It is updated as each
value steps its series (series_kernels.score_series gives every value's evidence after it). Series
moving the same way add up; opposite moves cancel. Summing raw u instead (over the root of the series'
count) let a source whose series wander together (a busy web log) or a quiet series' u swamp the sum:
postgres' drift scored no higher than other sources' ordinary nights.

It is calibrated as each series' test is, by its own past: its excursions beyond U_START are learned
once each, by their peak, into a generalized Pareto tail of excesses (series_kernels.excursion_log10p),
times their share of the source's windows (a window: SHIFT_WINDOW values of each of its series), with
a memory of a day of the source's values (or SHIFT_MEMORY windows where a day holds fewer). A
statistic held at the threshold for SHIFT_HOLD values of each series fires once an excursion, on a value
of a series that moved its way (its line is where the operator looks), scored
against the whole budget with a window as one chance; the excursion that fired is learned as what
scored the threshold (censored there), and its next SHIFT_EVIDENCE values on its side are suspicious
(an incident needs more than one line). Only shifts up are raised (see KIND_SOURCE_DOWN below). The
test judges after JUDGE_WINDOWS windows, with MIN_SERIES judged series at least.

Source state (float64[S, COLS], row = source id): SUM and COUNT are derived from the series every batch
(series.SeriesBook._source_sums); the rest is learned, by score() alone (learn() steps some rows again
with other weights, never the sources: a line's weight is the series', and stepping a source twice
would count its values twice).
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.detection import series_kernels as SK

# source columns: the clipped evidence summed over its judged series and their count (derived), its values
# and their usual gap, the decayed windows, excursions and their sums of (squared) peak excess, the
# peak under way, values in a row at the threshold, whether the excursion under way fired (1) and
# its evidence left, the windows seen (not decayed)
SUM, COUNT, VALUES, LAST_T, GAP, TOTAL, EXC_N, EXC_S, EXC_S2, PEAK, HELD, FIRED, EVIDENCE, WINDOWS = range(14)
COLS = 14
SERIES_CLIP = 3.0                 # one series' evidence counts at most this many decades
MIN_SERIES = 2.0                  # a source of one judged series is that series' test
JUDGE_WINDOWS = SK.SHIFT_JUDGE / SK.SHIFT_WINDOW   # windows before the source is judged, as a series'
KIND_SOURCE_UP, KIND_SOURCE_DOWN = 7, 8   # after series_kernels' kinds
# Series of one source moving DOWN together, none remarkable alone, are what a falling load does to a busy
# source: its requests, queries and GC pauses faster, its orders and result pages smaller, its queues
# shorter (shop-api's took=, items=, total=, hits= at night, pgbouncer's stats, mailer's queue: 11 false
# incidents on infra/svc seeds 1,2,94-109, none of them a fault). Faster, smaller, fewer together is no trouble to report; fewer lines is tier 2's
# drop test's, and one series far down its own level-shift test's. So the sum's excursions below are learned
# as ever (a window is one chance for either side: the up side's calibration stays as it was) and the
# source test raises its shifts up only (KIND_SOURCE_DOWN is kept for the kinds' numbering).
# an excursion ends once the statistic is this far back inside U_START: a sum of several series hovers
# about U_START for a while, and ending it at each crossing counted one excursion a window on postgres
END_MARGIN = 1.0


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.BOOL_1D, kt.F64_1D, kt.F64_2D, kt.F64_2D,
           kt.F64_3D, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64), cache=True)
def score_sources(param_ptr, param_row, after_u, ts, source_of, eligible, row_u, src, st, season, threshold,
                  suspicious, budget):
    """Step the source test through every value with an eligible series row (its source's judged series,
    their evidence summed in src[:, SUM], their count in src[:, COUNT] and row_u: each row's clipped
    evidence counted there), in line order -> (score per line float32[n], its parameter int64[n], kind int8[n], the firing series'
    baseline and fast mean float64[n] (not log), its source's series showing evidence on its side int64[n]).
    after_u: each value's evidence after its step (series_kernels.score_series; NaN: not stepped)."""
    n = param_ptr.shape[0] - 1
    best, which, kind, expected, level = SK.line_outputs(n)
    together = np.zeros(n, np.int64)
    for i in range(n):
        for j in range(param_ptr[i], param_ptr[i + 1]):
            r = param_row[j]
            if r < 0 or not eligible[r] or math.isnan(after_u[j]):
                continue
            s = source_of[r]
            a = clipped(st, r, after_u[j])
            src[s, SUM] += a - row_u[r]
            row_u[r] = a
            if src[s, COUNT] < MIN_SERIES:
                continue
            sc, k = step(src, s, src[s, SUM], a, ts[i], threshold, suspicious, budget)
            if sc > best[i]:
                best[i], which[i], kind[i] = sc, j, k
                off = season[r, SK.SHIFT_OFFSET, SK.bucket_of(ts[i])] - st[r, SK.OFFSET_SUM] / SK.SEASON_BUCKETS
                expected[i] = SK.from_log(st[r, SK.BASE] + off)
                level[i] = SK.from_log(st[r, SK.FAST] + off)
                together[i] = moved_with(source_of, eligible, row_u, s, sc >= threshold, k == KIND_SOURCE_UP)
    return best, which, kind, expected, level, together


@kt.entry((kt.F64_2D, kt.BOOL_1D, kt.FLOAT64), cache=True)
def row_evidence(st, eligible, shift_budget):
    """float64[rows]: the clipped shift evidence each eligible series stands at (0 for the others)."""
    out = np.zeros(eligible.shape[0])
    for r in range(eligible.shape[0]):
        if eligible[r]:
            out[r] = clipped(st, r, SK.shift_evidence(st, r, shift_budget))
    return out


@njit(cache=True, _nrt=False)
def clipped(st, r, e):
    """Series r's evidence e as the source's sum counts it: within +-SERIES_CLIP, and none of a split
    series' drop (as its own test judges none: a load change drops many values' times at once)."""
    low = 0.0 if st[r, SK.SPLIT_ONLY] > 0.0 else -SERIES_CLIP
    return min(max(e, low), SERIES_CLIP)


@njit(cache=True, _nrt=False)
def moved_with(source_of, eligible, row_u, s, counted, up):
    """How many judged series of source s show evidence on the side of the shift (0 unless counted:
    the scan is made for a firing value only)."""
    if not counted:
        return 0
    k = 0
    for r in range(row_u.shape[0]):
        if eligible[r] and source_of[r] == s and (row_u[r] if up else -row_u[r]) > 0.0:
            k += 1
    return k


@njit(cache=True, _nrt=False)
def step(src, s, u, own, t, threshold, suspicious, budget):
    """Judge the statistic u of source s at time t, then learn it -> (score, kind): the score of a shift
    that fires, suspicious for its evidence, else 0 (see the module docstring). own: the evidence of the
    series whose value this is; a shift fires, and shows its evidence, only on values of series that
    moved its way (a database's port numbers stepping its sum over the threshold named nothing that moved)."""
    values = src[s, VALUES]
    if values > 0.0 and t >= src[s, LAST_T]:
        dt = max(t - src[s, LAST_T], SK.MIN_GAP_S)
        src[s, GAP] += max(SK.SCALE_ALPHA, 1.0 / values) * (dt - src[s, GAP])
    src[s, LAST_T] = max(t, src[s, LAST_T])
    src[s, VALUES] = values + 1.0
    window = SK.SHIFT_WINDOW * src[s, COUNT]       # values of the source in one window of its series
    gap = max(src[s, GAP], SK.MIN_GAP_S)
    keep = 1.0 - min(1.0 / (SK.SHIFT_MEMORY * src[s, COUNT]), gap / SK.DAY_S)
    src[s, TOTAL] = src[s, TOTAL] * keep + 1.0 / window
    src[s, WINDOWS] += 1.0 / window
    src[s, EXC_N] *= keep
    src[s, EXC_S] *= keep
    src[s, EXC_S2] *= keep
    a = abs(u)
    if a <= SK.U_START - END_MARGIN or (a <= SK.U_START and src[s, PEAK] <= 0.0):
        if src[s, PEAK] > 0.0:
            excess = src[s, PEAK] - SK.U_START
            src[s, EXC_N] += 1.0
            src[s, EXC_S] += excess
            src[s, EXC_S2] += excess * excess
        src[s, PEAK] = 0.0
        src[s, HELD] = 0.0
        src[s, FIRED] = 0.0
        src[s, EVIDENCE] = 0.0
        return 0.0, SK.KIND_NONE
    if a <= SK.U_START:
        return 0.0, SK.KIND_NONE        # an excursion dipping back towards U_START goes on
    bonus = SK.rate_bonus(gap * window, threshold, 1.0) + 10.0 * math.log10(budget / SK.FALSE_FLAGS_PER_DAY)
    tail = (src[s, EXC_N], src[s, TOTAL], src[s, EXC_S], src[s, EXC_S2])
    lp = SK.excursion_log10p(*tail, a)
    score = min(max(-10.0 * lp + bonus, 0.0), 100.0)
    kind = KIND_SOURCE_UP if u > 0.0 else KIND_SOURCE_DOWN
    censor = SK.excursion_u_at(*tail, -(threshold - bonus) / 10.0)
    if src[s, FIRED] > 0.0:
        # the excursion that fired is learned as what scored the threshold, not as the anomaly it is
        src[s, PEAK] = max(src[s, PEAK], min(a, censor))
        if src[s, EVIDENCE] > 0.0 and own * u > 0.0 and u > 0.0:
            src[s, EVIDENCE] -= 1.0
            return suspicious, kind
        return 0.0, SK.KIND_NONE
    src[s, PEAK] = max(src[s, PEAK], a)
    src[s, HELD] = src[s, HELD] + 1.0 if score >= threshold else 0.0
    if u <= 0.0:
        return 0.0, SK.KIND_NONE        # a shift down together: learned, never raised (KIND_SOURCE_DOWN)
    if src[s, HELD] >= SK.SHIFT_HOLD * src[s, COUNT] and src[s, WINDOWS] >= JUDGE_WINDOWS and own * u > 0.0:
        src[s, FIRED] = 1.0
        src[s, EVIDENCE] = SK.SHIFT_EVIDENCE
        src[s, PEAK] = min(src[s, PEAK], censor)
        return score, kind
    return 0.0, SK.KIND_NONE
