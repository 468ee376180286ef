"""numba kernels of tier 3's numeric series: each numeric position of a template, per source, judged
against a forecast of its own recent past and its daily pattern, with a learned tail of the residuals.

series.py owns the state rows and the key -> row map; the tests compare step() with its plain-Python
twin in series_twins.py on the same inputs.

Forecast: the last level plus the value's usual offset at this time of day (SEASON_BUCKETS buckets;
Holt-Winters without a trend). A time of day that is always unsettled (a batch job starts, traffic
ramps up) keeps its own mean absolute residual, and its values are judged against that. The level follows each value, but by at most TAIL_START robust
deviations a step (so a lone spike barely moves it), and jumps to the new value after SHIFT_RUN
residuals beyond the tail on one side (a level shift becomes the new normal within a few points).
Residuals are divided by a scale: the larger of their recent mean absolute size and FLOOR_SHARE of
their long-run one (a series quiet for an hour does not make its next ordinary move a wild one).

Values are judged on a signed log scale (log1p of the magnitude): durations, sizes and rates are
multiplicative, and a queue depth or a CPU share loses little by it.

Surprise: each direction's tail beyond TAIL_START is fitted as a Pareto tail (Hill's estimator on
exponentially decayed sums of log excesses, shrunk towards a tail index of PRIOR_INDEX by
PRIOR_EXCESSES pseudo-excesses) times the share of residuals that reach it: peaks over threshold, as
in SPOT (Siffer et al., KDD 2017), with Hill's estimator in place of the maximum-likelihood fit. So a
heavy-tailed latency calibrates itself down, a smooth queue depth whose residuals are tiny makes a
jump of +200 stand out, and a residual far beyond anything seen is extrapolated, not capped. Real
tails are often mixtures (cache hits and disk reads): a residual is never rarer than the decayed share
of past residuals in its octave or beyond (a histogram of HIST_BINS octaves per side), so a slow query
that comes every few hours is not extrapolated from the fast ones.

Records (record_log10p): a value beyond everything the series has shown, on the side the forecast
says it moved, is also judged by how rare the series' records have been, and more so the further
beyond its range; the value scores by the rarer of the two. A spiky series' learned tail absorbs a
spike higher than any before; its record does not.

Level shifts (shift_u, shift_log10p): the forecast follows each value, so a run of values that moved
together, none of them extreme, leaves no residual to judge. The test sees values less its own
time-of-day offset (season row SHIFT_OFFSET), centred on those offsets' mean (OFFSET_SUM: a constant
common to all of them is the level's, not the time of day's). Not the forecast's offsets: a quarter
hour's first value sets its forecast offset (an outlier's, a first day's warm-up episode's) and, the
level having taken the whole residual, it never unlearns; the forecast does not suffer (its level
absorbs it), but values deseasoned by it jump there every day and the test learns a fat tail of
excursions from the jumps. The test's offsets (the visit model: _end_visit, _learn_visit) start at 0
and learn what two visits of a quarter hour in a row agree on: the mean distance of a visit's values
from a slow level (DAY_LEVEL, SEASON_LEVEL_S of memory) against the distance the last visit left
pending (season row PENDING). A one-off episode teaches them nothing; a nightly job's step is theirs
from the first values of its second night, or of its third where its first was raised as a shift (two
nights cannot tell a job from the same incident twice at the same hour: EPISODES). While an offset is wider than the series'
whole range, or jumps from the last quarter hour's by more than SEASON_STEP_LIMIT residual sizes,
the test is off (it restarts as after a recovery). A fast mean (SHIFT_WINDOW points) against
a slow baseline (SHIFT_MEMORY points), in units of the gap's own usual size, is that run's evidence;
its excursions beyond U_START are learned once each, by their peak, into a generalized Pareto tail (its
shape and scale from the peaks' moments), and a shift
scores against the flag budget with a window as one chance. Only a shift that reaches the threshold
scores (one that built up beside the alarm would be no news to reported()); the baseline then
follows the fast mean for two windows, in which its first SHIFT_EVIDENCE values past halfway to the new level are suspicious
(an incident needs more than one line). A shift back towards the level before the last one is a
recovery (is_recovery): reset to, not reported, and needing no rarity, only an excursion held as long as
a shift's. The tail learns an episode's values as little as possible: a fired excursion as what scored the
threshold (censored there), neither its recovery nor excursions that go its way within EPISODE_KEEP_S of
it (a slowdown still ramping up): when it learned them, a query 14 times slower for an hour made the same
query 6.6 times slower five hours later an ordinary excursion. Split series (SPLIT_ONLY: one categorical value's, see
series.py) are judged by this test only, and only while their value explains part of the pooled
series' spread (SPLIT_JUDGED: their own residuals at most SPLIT_EXPLAINS of the pooled ones'); a split
by a value that explains nothing (SPLIT_MIXED) only learns.

Counters and clocks (values whose changes are nearly always rises, or always falls: a minute field
repeats, steps up and wraps once an hour) are not judged: their residuals are the lag of the level, not the
process. A change is a rise or a fall against the last value of the same host (host_last): a service on
two hosts logs each one's uptime into one series, whose values alternate between two clocks (half the
changes falls) and jump when one host restarts; host by host they are clocks, and the series is not
judged. Nor are labels: a series is judged once it has shown more distinct values than `labels` keeps
(a status code is not a measurement; tier 3 judges its new values as categories), after MIN_POINTS
points of its own. One label series is judged all the same, by its records alone: one of 0 only for a
day (a count of requests waiting for a pool), whose first other value is a record (constant_broken).

The surprise is per point; what an operator pays for is false alarms per day. A series that logs a
point every five minutes meets ~300 tests a day, a latency logged 10 times a second ~900,000, so the
same tail probability is worth more on the sparse series: rate_bonus converts the per-point surprise
to a budget of FALSE_FLAGS_PER_DAY per source at the anomaly threshold, shared by the source's judged
series (an access log has one series per user agent and field: a hundred series must not raise a
hundred times the flags of one metric). The level-shift test's budget is shared half equally by them and
half by their windows a day (a weighted Bonferroni: the shares still sum to the budget): a database's
query time judged 5,000 times a day was held to the same share as each of a dozen checkpoint figures
logged 300 times, so that every query slowing 2.65 times for an hour stayed below the threshold.

What is reported (see reported()): a value at the threshold is flagged unless its series scored
within FRESH_MARGIN of it (ten times as rare) in its recent points (REFRACTORY_POINTS): one episode,
one loud line, even while the episode is still building up (NAB-style scoring counts every line
after the first as a false positive once the labelled window is over). While an episode is fresh
its values that reach the suspicious score stay suspicious (they keep its incident open), never
flagged. Outside episodes a value below the threshold is scaled below the suspicious score: its
order of surprise is kept, but a busy series' near misses (dozens a day, by its calibration)
neither open nor widen incidents.
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.detection.novelty_kernels import signed_log  # the scale series are judged on

# state columns (float64[R, COLS])
(N_OBS, LEVEL, SCALE, SLOW_SCALE, TOTAL, UP_N, UP_S, DN_N, DN_S, LAST_X, LAST_T, RISES, RUN, GAP,
 ALARM, DISTINCT, GROWTH) = range(17)
HIST_BINS = 16             # per side: excesses counted by octave of |z| / TAIL_START
UP_HIST, DN_HIST = 17, 17 + HIST_BINS
# the level-shift test (shift_u): its points, slow baseline, fast mean, the usual size of their gap; the
# tail of |u|: decayed windows, decayed excursions beyond U_START, their sum of peak excesses (peak - U_START), the
# peak of the excursion under way (0: none); points left of the settling after a fired shift (negative:
# a recovery's, with no evidence), the baseline the last shift moved from and the shifts fired; 1 for a
# split series (one categorical value's: judged by this test only)
SHIFT_N, BASE, FAST, GAP_SIZE, U_TOTAL, U_N, U_S, U_PEAK, SETTLE, FROM, SHIFTS, HELD, EVIDENCE, SPLIT_ONLY = (
    17 + 2 * HIST_BINS + k for k in range(14))
# the sum of the level-shift test's own time-of-day offsets (season[r, SHIFT_OFFSET]): the test deseasons
# by an offset less their mean, series.py recomputes it on load
OFFSET_SUM = 31 + 2 * HIST_BINS
# the visit model of those offsets (_end_visit, _learn_visit): the slow level they learn against, and the
# quarter hour being visited (its bucket + 1, 0: none), its values' weight, their summed distance from
# that level and what its offset took in this visit
DAY_LEVEL, VISIT_B, VISIT_N, VISIT_SUM, VISIT_TAKEN = (32 + 2 * HIST_BINS + k for k in range(5))
# the excursions' sum of squared peak excesses (with U_S: the moments of the excess tail, shift_log10p)
U_S2 = 37 + 2 * HIST_BINS
# when the last shift fired (0: none, or it recovered since) and whether the excursion under way goes its
# way within EPISODE_KEEP_S of it (1: that episode's, not the series' own: not learned)
SHIFT_T, U_EPISODE = 38 + 2 * HIST_BINS, 39 + 2 * HIST_BINS
# the hosts whose values the series pools (see host_last): each one's code (series.host_codes; 0: slot free)
# and its last value on the log scale, HOST_SLOTS of them
HOST_SLOTS = 8
HOSTLESS_COLS = 40 + 2 * HIST_BINS   # snapshots from before the hosts' last values (series.py pads them)
HOST_KEY, HOST_LAST = HOSTLESS_COLS, HOSTLESS_COLS + HOST_SLOTS
# whether the visit under way holds values of a fired shift's episode (1: yes; see _end_visit, EPISODES)
VISIT_EPISODE = HOSTLESS_COLS + 2 * HOST_SLOTS
# the decayed share of the series' values that were exactly 0 (see _empty_mode; 0 in snapshots from before it)
ZERO_SHARE = VISIT_EPISODE + 1
COLS = ZERO_SHARE + 1
LOG_EXCESS_COLS = 37 + 2 * HIST_BINS   # snapshots whose U_S summed log peak excesses (series.py converts them)
OLD_COLS = 17 + 2 * HIST_BINS   # snapshots from before the level-shift test (series.py pads them)
# The decayed sums (TOTAL to DN_S and the histograms) are kept multiplied by GROWTH, which grows by
# 1/keep each point instead of every sum shrinking by keep: one multiply a point, not 37.
DECAYED = (TOTAL, UP_N, UP_S, DN_N, DN_S)
MAX_GROWTH = 1e150
SEASON_BUCKETS = 96        # 15-minute offsets over the day
# season rows (float64[R, SEASON_ROWS, SEASON_BUCKETS]), per time-of-day bucket: the forecast's offset and
# mean absolute residual there, the level-shift test's own offset (learned by the visit model), the
# distance its last visit showed that this offset has not taken, and the visits in a row up to the last
# that held a fired shift's episode, agreeing on their side (1, or 2 at most: see _end_visit)
OFFSET, RESIDUAL, SHIFT_OFFSET, PENDING, EPISODES = range(5)
SEASON_ROWS = 5
OLD_SEASON_ROWS = 2        # snapshots from before the level-shift test's own offsets (series.py pads them)
EPISODE_VISITS = 2.0       # agreeing visits that held a shift's episode before the next one teaches the offset:
                           # the same incident at the same hour two days running is raised twice, a
                           # nightly job is learned from its third night

SCALE_ALPHA = 0.02         # memory of the residuals' size (about 50 points)
SLOW_ALPHA = 0.002         # memory of their long-run size and of the tails: about 500 points, or a day
                           # of points where a day holds more (tails far out need the evidence)
SEASON_ALPHA = 0.1         # weight of a new day in a time-of-day offset
SEASON_LEVEL_S = 6 * 3600.0  # memory (time) of the slow level the shift test's offsets learn against: it
                           # does not follow an hour's episode nor a nightly job, it does follow a new normal
SEASON_NOISE = 2.0         # a visit's mean distance within this many long-run residual sizes / sqrt(values)
                           # of 0 is noise, not a time-of-day pattern
FLOOR_SHARE = 0.3          # the scale is at least this share of the long-run one
TAIL_START = 2.5           # robust deviations beyond which a residual is in a tail
SHIFT_RUN = 3              # residuals in a row beyond the tail, one side: the level moved
PRIOR_INDEX = 4.0          # tail index before the series has shown its own
PRIOR_EXCESSES = 3.0       # weight of that prior, in excesses
PRIOR_RATE, PRIOR_WEIGHT = 0.02, 20.0   # tail share before the series has shown its own
# An exact 0 in a series of magnitudes (an empty body's bytes beside the sizes of full ones: a 304 on one
# response in ten) is a mode of its own, not the smallest magnitude: on the log scale it lies ten units below
# the rest, and learned with them it made their residual scale four times the bodies' own spread, in which a
# route's bodies ten times their size were ordinary. Where 0 was among the series' first distinct values (its
# labels: there from the start), zeros are ZERO_MODE_SHARE to ZERO_MODE_MAX of its values (decayed as its tails:
# about a day) and its level is above ZERO_MODE_LEVEL (values of about 9 and up), its zeros are neither judged
# nor learned (_empty_mode). Zeros that came later (a disk or a group of hosts reading 0 every other point from
# some day on: NAB's grok_asg_anomaly) are judged as before, and so are those of a series mostly of zeros.
ZERO_MODE_SHARE = 0.01
ZERO_MODE_MAX = 0.5
ZERO_MODE_LEVEL = 2.3
MIN_POINTS = 30.0          # points before a series is judged
MONOTONE_SHARE = 0.85      # its changes are rises (or falls) this often: a counter, a clock or a
                           # progress count that restarts with each run (a sawtooth), not judged
RELATIVE_FLOOR = 1e-9      # smallest scale, relative to the level (a constant series)
MIN_GAP_S = 1e-3
FALSE_FLAGS_PER_DAY = 0.05  # per source, at the anomaly threshold
MAX_BONUS, MIN_BONUS = 40.0, -40.0
REFRACTORY_POINTS = 100.0  # a fresh alarm of 100 fades over this many points
DAMPING = 0.6              # a value of a fresh episode counts this much (within suspicious..threshold)
FRESH_MARGIN = 10.0        # a value of an episode is news when ten times rarer than its strongest so far
DAY_S = 86400.0
RECORD_WEIGHT = 4.0        # default of series_record_weight (record_log10p)
SHIFT_WINDOW = 20.0        # points in the fast mean of the level-shift test
SHIFT_MEMORY = 500.0       # points in its baseline and in the usual size of the fast-baseline gap
GAP_CLIP = 8.0             # a gap counts at most this many usual sizes in the usual size
# Smallest usual gap (log scale): a series that sat at one value for days but not quite all along (a
# waiting count back at 0 after an episode) learns a gap of 1e-8, in whose units its level settling
# by a millionth is a "shift". A level that moves by less than 0.1 % is not one.
GAP_FLOOR = 1e-3
U_START = 3.0              # |u| beyond which the level-shift statistic is on an excursion
SHIFT_HOLD = 10.0          # points in a row a shift must reach the threshold before it fires: a burst
                           # that is over within half a window is the tail's business, not a new level
SHIFT_FLAGS_PER_DAY = 0.01  # the level-shift test's flag budget per source, 5 times stricter than FALSE_FLAGS_PER_DAY
SHIFT_EVIDENCE = 3.0       # values after a fired shift that may stay suspicious as its evidence (an
                           # incident needs incident_min_lines; more would only lengthen it)
U_PRIOR_INDEX = 6.0        # tail index of excursion peaks before the series has shown its own (a mean's
                           # tail is lighter than its values'): a Pareto from U_START, the prior's shape
MAX_SHAPE = 0.45           # heaviest excess tail shape the moments may show (the estimator's own bound is 0.5)
SHIFT_CLIP = 3.0           # a value moves the fast mean by at most this many residual scales
SPLIT_EXPLAINS = 0.8       # a split series is judged while its long-run residual size is at most this
                           # share of its pooled series' (its value explains part of the pooled spread)
SPLIT_JUDGED, SPLIT_MIXED = 1.0, 2.0   # SPLIT_ONLY of a split series judged / learned only (series.py)
POOLED_MIXTURE = -1.0      # SPLIT_ONLY of a pooled series some of whose split series explain its spread:
                           # its level is the mix's, its shifts are left to them (series.py)
SEASON_STEP_LIMIT = 4.0    # long-run residual sizes two neighbouring time-of-day offsets may differ by
                           # before the level-shift test distrusts its deseasoning (season_jumps)
SHIFT_WARM = 200.0         # points before a series' excursions of u are learned (the gap's size must be known)
SHIFT_JUDGE = SHIFT_WARM + PRIOR_WEIGHT * SHIFT_WINDOW   # points before its shifts are judged: its tail of
                           # excursions has then seen as many windows as the prior weighs. A series restarted
                           # by its template's re-mining (a vacuum log's page counts, a day in) judged on the
                           # prior alone raised a false shift at its 427th point
WEEK_DAYS = 7             # a series' first week: each day after its first is a day of the week it has not met
UNSEEN_DAY_WIDTH = 1.0     # on such a day a step of its time-of-day offsets, learned on other days of the
                           # week, is uncertain by this many times its size (unseen_step)
KIND_NONE, KIND_SPIKE, KIND_DROP, KIND_RECORD_HIGH, KIND_RECORD_LOW, KIND_SHIFT_UP, KIND_SHIFT_DOWN = range(7)

# record columns (float64[R, RECORD_COLS]): the series' extremes on its own scale, its points and how
# many of them were records, per side (0 points: nothing seen yet)
REC_HIGH, REC_LOW, REC_POINTS, REC_UPS, REC_DOWNS, REC_FIRST_T = range(6)
# an episode's hold on the range (learn_record): when it began (0: none open) and the range before it
# and its values beyond that range, and when the last of them came (0 in snapshots from before it: quiet)
REC_EPISODE_T, REC_PRE_HIGH, REC_PRE_LOW, REC_EPISODE_N, REC_EPISODE_LAST = range(6, 11)
RECORD_COLS = 11
OLD_RECORD_COLS = 6        # snapshots from before the episode columns (series.py pads them)
EPISODE_KEEP_S = 3600.0    # an episode still on this long after it began is a new normal: the range keeps it
EPISODE_MIN_VALUES = 3.0   # values beyond the old range an episode needs to be rolled back: a lone spike
                           # widens the range for good, as before (the next one like it is no record)
RECORD_GRAIN_S = 300.0     # points closer than this are not independent chances of a record
EPISODE_QUIET_S = RECORD_GRAIN_S   # an episode is over once no value has been beyond the old range this long:
                           # one value back inside it is not the end where the series pools two hosts (one
                           # host's GC pauses twenty times longer, the other's as usual between them)


@njit(cache=True)
def rate_bonus(gap_seconds, threshold, multiplicity):
    """Score added so that a tail probability of FALSE_FLAGS_PER_DAY / (points a day x the judged
    series of the source) scores threshold."""
    per_day = DAY_S / max(gap_seconds, MIN_GAP_S)
    bonus = threshold + 10.0 * math.log10(FALSE_FLAGS_PER_DAY / (per_day * max(multiplicity, 1.0)))
    return min(max(bonus, MIN_BONUS), MAX_BONUS)


@njit(cache=True)
def slow_alpha(st, r):
    """Weight of a point in the tails and the long-run scale: 1/500, or 1/(a day of points)."""
    return min(SLOW_ALPHA, max(st[r, GAP], MIN_GAP_S) / DAY_S)


@njit(cache=True)
def judged(st, labels, r):
    """A series is judged once it has MIN_POINTS points, more distinct values than a label has, and
    is not a counter or a clock."""
    return (st[r, N_OBS] >= MIN_POINTS and st[r, DISTINCT] > labels.shape[1]
            and 1.0 - MONOTONE_SHARE < st[r, RISES] < MONOTONE_SHARE)


@kt.entry((kt.F64_2D, kt.F64_2D, kt.INT64), cache=True)
def judged_rows(st, labels, rows):
    """bool[rows]: which of the first `rows` series are judged (judged() of each)."""
    out = np.zeros(rows, np.bool_)
    _judged_into(st, labels, out)
    return out


@kt.loop
def _judged_into(st, labels, out):
    """judged_rows' loop (kt.loop: no reference counting per row)."""
    for r in range(out.shape[0]):
        out[r] = judged(st, labels, r)


@njit(cache=True)
def host_last(st, r, host, x):
    """The value before x of series r that a rise or fall is counted against: the last one of the same
    host (host: its code, 0: the line named none), else the series' last; records x as that host's last.
    A series keeps the last values of its first HOST_SLOTS hosts; a host past them, and a line naming no
    host, count against the series' last (pooled, as a series of one host always does)."""
    if host == 0.0:
        return st[r, LAST_X]
    for k in range(HOST_SLOTS):
        if st[r, HOST_KEY + k] == host:
            last = st[r, HOST_LAST + k]
            st[r, HOST_LAST + k] = x
            return last
        if st[r, HOST_KEY + k] == 0.0:
            st[r, HOST_KEY + k] = host
            st[r, HOST_LAST + k] = x
            return st[r, LAST_X]    # a host's first value: against the series' last, as before hosts were kept
    return st[r, LAST_X]


@njit(cache=True)
def _count_distinct(st, labels, r, x):
    """Count x among the first labels.shape[1] + 1 distinct values of series r."""
    k = int(st[r, DISTINCT])
    if k > labels.shape[1]:
        return
    for q in range(k):
        if labels[r, q] == x:
            return
    if k < labels.shape[1]:
        labels[r, k] = x
    st[r, DISTINCT] = k + 1.0


@njit(cache=True)
def tail_log10p(st, r, z):
    """log10 of the chance of a residual at least |z| out on z's side (0 inside the tail's start)."""
    a = abs(z)
    if a <= TAIL_START:
        return 0.0
    g = _growth(st, r)
    n, s = (st[r, UP_N] / g, st[r, UP_S] / g) if z > 0 else (st[r, DN_N] / g, st[r, DN_S] / g)
    total = st[r, TOTAL] / g
    share = (n + PRIOR_RATE * PRIOR_WEIGHT) / (total + PRIOR_WEIGHT)
    mean_log_excess = (s + PRIOR_EXCESSES / PRIOR_INDEX) / (n + PRIOR_EXCESSES)
    pareto = math.log10(min(share, 1.0)) - math.log10(a / TAIL_START) / mean_log_excess
    hist = UP_HIST if z > 0 else DN_HIST
    k0 = octave(a)
    # the residual's own octave counts for the part of it beyond the residual (log-uniform within it)
    beyond = st[r, hist + k0] * max(1.0 - (math.log2(a / TAIL_START) - k0), 0.0)
    for k in range(k0 + 1, HIST_BINS):
        beyond += st[r, hist + k]
    if beyond <= 0.0:
        return pareto
    return max(pareto, math.log10(min(beyond / g / (total + PRIOR_WEIGHT), 1.0)))


@njit(cache=True)
def _growth(st, r):
    return st[r, GROWTH] if st[r, GROWTH] > 0.0 else 1.0


@njit(cache=True)
def octave(a):
    """Histogram bin of a residual |z| = a > TAIL_START."""
    return min(int(math.log2(a / TAIL_START)), HIST_BINS - 1)


@njit(cache=True)
def from_log(y):
    """The value whose signed log1p is y."""
    return math.copysign(math.expm1(abs(y)), y)


@njit(cache=True)
def bucket_of(t):
    return int((t % DAY_S) / DAY_S * SEASON_BUCKETS) % SEASON_BUCKETS


@njit(cache=True)
def reported(st, r, s, threshold, suspicious):
    """The score reported for a judged value of raw score s (see the module docstring), advancing the
    series' alarm: its strongest recent score, fading by 100 / REFRACTORY_POINTS a point. A value is
    fresh when it beats the alarm by FRESH_MARGIN; one that does not is damped, below the threshold
    too, so a rising run of values (an episode building up) is one detection at any threshold. While
    an episode is on, its values that reach the suspicious score stay suspicious and keep its
    incident open (an incident needs two suspicious lines: a queue that jumped thirtyfold is one
    flag and the values after it)."""
    fresh = s > st[r, ALARM] + FRESH_MARGIN
    in_episode = st[r, ALARM] >= threshold
    st[r, ALARM] = max(st[r, ALARM] - 100.0 / REFRACTORY_POINTS, s)
    if s >= threshold and fresh:
        return s
    if s >= threshold or (in_episode and s >= suspicious):
        return min(max(s * DAMPING, suspicious), threshold - 0.01)
    return (s if fresh else s * DAMPING) * 0.999 * suspicious / threshold


@njit(cache=True)
def record_log10p(rec, r, value, z, t, record_weight):
    """log10 of the chance of a new record this far beyond the series' range (0: not a record, not
    on the forecast's side, or record_weight 0). The chance of a record on that side is the records
    so far over the chances so far (1 in n for values in no order); one beyond the range by a share e
    of it counts as 1 + record_weight x e records in a row. A series that is still rising through
    its first cycle sets records every other point, so they say little however far each goes. The
    chances are the points, but at most one per RECORD_GRAIN_S of the series' life: a latency logged
    ten times a second moves with its load, and a burst of slow requests is one chance, not a
    thousand."""
    if rec[r, REC_POINTS] <= 0.0 or record_weight <= 0.0:
        return 0.0
    high, low = rec[r, REC_HIGH], rec[r, REC_LOW]
    span = max(high - low, RELATIVE_FLOOR * max(abs(high), abs(low)), 1e-300)
    if value > high and z > 0.0:
        excess, records = (value - high) / span, rec[r, REC_UPS]
    elif value < low and z < 0.0:
        excess, records = (low - value) / span, rec[r, REC_DOWNS]
    else:
        return 0.0
    chances = min(rec[r, REC_POINTS], max(t - rec[r, REC_FIRST_T], 0.0) / RECORD_GRAIN_S + 1.0)
    rate = min((records + 1.0) / (chances + 1.0), 1.0)
    return min(math.log10(rate) * (1.0 + record_weight * excess), 0.0)


@njit(cache=True)
def constant_broken(st, rec, r, value, t, record_weight):
    """Whether series r showed 0 only over a day and its first MIN_POINTS points at least, and value at
    time t is another (with the record test on: record_weight > 0). Only 0: a count of what waits or
    fails at 0 for days has begun to count, while a constant of another value is a setting or a date (a
    save interval of 3600 s that becomes 300 under load, a day of the month that turns at midnight),
    whose change is no anomaly. A day: a queue of nightly exports that fills at 01:00 was 0 all evening,
    and one evening cannot tell the job from trouble (as unseen_weekday: a first day has no pattern to
    trust)."""
    return (record_weight > 0.0 and st[r, N_OBS] >= MIN_POINTS and rec[r, REC_POINTS] > 0.0
            and rec[r, REC_HIGH] == 0.0 and rec[r, REC_LOW] == 0.0 and value != 0.0
            and t - rec[r, REC_FIRST_T] >= DAY_S)


@njit(cache=True)
def constant_score(st, rec, r, value, t, threshold, multiplicity, record_weight):
    """(score, kind) of the first value of a constant series that is another (constant_broken): a record
    after as many chances as record_log10p counts and none before it. A range of no width gives no share
    to measure how far beyond it the value went: it counts as one range beyond (1 + record_weight records
    in a row), so a day of 0 every 30 s (288 chances) makes it news."""
    chances = min(rec[r, REC_POINTS], max(t - rec[r, REC_FIRST_T], 0.0) / RECORD_GRAIN_S + 1.0)
    lp = -math.log10(chances + 1.0) * (1.0 + record_weight)
    kind = KIND_RECORD_HIGH if value > rec[r, REC_HIGH] else KIND_RECORD_LOW
    return min(max(-10.0 * lp + rate_bonus(st[r, GAP], threshold, multiplicity), 0.0), 100.0), kind


@njit(cache=True)
def beyond_episode(rec, r, value):
    """Whether an episode is open on the series' range (learn_record) and value is outside the range
    from before it."""
    return rec[r, REC_EPISODE_T] > 0.0 and not rec[r, REC_PRE_LOW] <= value <= rec[r, REC_PRE_HIGH]


@njit(cache=True)
def learn_record(rec, r, value, t, w, episode, episode_weight):
    """Widen the series' range to value, counting a record, with weight w (0: judge only). episode: the
    value belongs to an anomalous episode (see step). The range an episode widens is provisional: the
    range before it is kept (REC_PRE_HIGH, REC_PRE_LOW), and when the episode is over (a value of no
    episode) within EPISODE_KEEP_S of its start and the value is back inside that range, the range
    returns to it, keeping a share episode_weight of the widening, if at least EPISODE_MIN_VALUES of
    its values were beyond it. So a queue ten times its depth for twenty minutes yesterday is a record
    again today, while a lone spike or an episode that lasts (a new level, a value that never comes
    back) stays in the range as it does without this."""
    if w <= 0.0:
        return
    if rec[r, REC_POINTS] <= 0.0:
        rec[r, REC_HIGH] = value
        rec[r, REC_LOW] = value
        rec[r, REC_FIRST_T] = t
        rec[r, REC_POINTS] += w
        return
    open_since = rec[r, REC_EPISODE_T]
    if episode and open_since <= 0.0 and (value > rec[r, REC_HIGH] or value < rec[r, REC_LOW]):
        rec[r, REC_EPISODE_T] = max(t, 1e-9)
        rec[r, REC_PRE_HIGH] = rec[r, REC_HIGH]
        rec[r, REC_PRE_LOW] = rec[r, REC_LOW]
        rec[r, REC_EPISODE_N] = 0.0
        rec[r, REC_EPISODE_LAST] = t
    elif open_since > 0.0 and not episode:
        over = rec[r, REC_PRE_LOW] <= value <= rec[r, REC_PRE_HIGH] and t - rec[r, REC_EPISODE_LAST] >= EPISODE_QUIET_S
        if t - open_since <= EPISODE_KEEP_S and over and rec[r, REC_EPISODE_N] >= EPISODE_MIN_VALUES:
            rec[r, REC_HIGH] = rec[r, REC_PRE_HIGH] + episode_weight * (rec[r, REC_HIGH] - rec[r, REC_PRE_HIGH])
            rec[r, REC_LOW] = rec[r, REC_PRE_LOW] + episode_weight * (rec[r, REC_LOW] - rec[r, REC_PRE_LOW])
            rec[r, REC_EPISODE_T] = 0.0
        elif over or t - open_since > EPISODE_KEEP_S:
            rec[r, REC_EPISODE_T] = 0.0
    if beyond_episode(rec, r, value):
        rec[r, REC_EPISODE_N] += 1.0
        rec[r, REC_EPISODE_LAST] = t
        w = min(w, episode_weight)    # the episode's, flagged or not: one episode is not many records
    if value > rec[r, REC_HIGH]:
        rec[r, REC_HIGH] = value
        rec[r, REC_UPS] += w
    elif value < rec[r, REC_LOW]:
        rec[r, REC_LOW] = value
        rec[r, REC_DOWNS] += w
    rec[r, REC_POINTS] += w


@njit(cache=True)
def unseen_weekday(rec, r, t):
    """Whether t falls on a day of the week series r has not lived through: 1 to WEEK_DAYS - 1 calendar
    days after its first value's. Its time-of-day offsets were learned on other days of the week (a
    shop's Friday), and a Saturday's or a Sunday's load runs another course: judged against Friday's
    09:00 newsletter step with full confidence, the first Sunday's ordinary 09:00 pool figures were a
    spike and a drop. Its first day has no offsets to trust yet, and from its eighth every day of the
    week has been seen once."""
    if rec[r, REC_POINTS] <= 0.0:
        return False
    days = math.floor(t / DAY_S) - math.floor(rec[r, REC_FIRST_T] / DAY_S)
    return 1.0 <= days < WEEK_DAYS


@njit(cache=True)
def unseen_step(season, seen, rec, r, b, p, t):
    """What the forecast's offset steps by from bucket p (the last value's) to b on a day of the week the
    series has not met (0 on other days, within one bucket, or with either unseen): a step learned on
    another day (a weekday's 09:00 newsletter) is not known to come today, so a value that does not take
    it is judged with that much more room (UNSEEN_DAY_WIDTH times it)."""
    if b == p or seen[r, b] == 0 or seen[r, p] == 0 or not unseen_weekday(rec, r, t):
        return 0.0
    return UNSEEN_DAY_WIDTH * abs(season[r, OFFSET, b] - season[r, OFFSET, p])


@njit(cache=True)
def step(st, season, seen, labels, rec, r, value, t, w, threshold, suspicious, multiplicity, shift_multiplicity,
         record_weight, shift_budget, episode_weight, host=0.0):
    """Judge value x at time t of series r, then learn it with weight w -> (score 0..100, kind, expected
    and the series' recent level (its fast mean), both on the log scale: see from_log). host: the code of
    the line's host (0: none), whose last value its rise or fall is counted against (host_last). A level shift
    (shift_u) expects the baseline it moved from. multiplicity: the source's judged series, among which
    the spike test shares the flag budget; shift_multiplicity: the inverse of the level-shift test's
    share of it (series.SeriesBook.multiplicity).

    season[r, OFFSET, b] is the forecast's offset at time-of-day bucket b, season[r, RESIDUAL, b] its
    mean absolute residual there, season[r, SHIFT_OFFSET, b] the level-shift test's offset and
    season[r, PENDING, b] what its last visit left pending (_end_visit), seen[r, b] the points learned
    there (up to 100); labels[r] its first
    distinct values; rec[r] its range and records (record_log10p). A value of an anomalous episode (its
    own score at the threshold, or any value while the series' alarm is at the threshold: within about
    REFRACTORY_POINTS x (1 - threshold / 100) points of the last such value; or a value learned below
    weight 1, on a line the engine flagged by whatever tier) widens the range only
    provisionally (learn_record: an episode over within EPISODE_KEEP_S is rolled back out of it) and
    counts as a record at most at episode_weight (anomaly_learning_weight), whether reported or
    damped: reported() damps an episode's later values, and the engine would learn them into the range
    at full weight, hiding the same episode tomorrow. The forecast (level, time-of-day offsets, scale),
    the tail and the level-shift test keep the line's weight: learning an episode's tail at a lower
    weight too raised more false flags on NAB (repeats of a new level's volatility) than it caught."""
    _count_distinct(st, labels, r, value)
    if _empty_mode(st, labels, r, value, w):
        return 0.0, KIND_NONE, st[r, LEVEL], st[r, LEVEL]
    x = signed_log(value)
    if st[r, N_OBS] == 0.0:
        st[r, LEVEL] = x
        st[r, LAST_X] = x
        st[r, LAST_T] = t
        st[r, RISES] = 0.5
        st[r, N_OBS] = 1.0
        st[r, DAY_LEVEL] = x
        host_last(st, r, host, x)
        learn_record(rec, r, value, t, w, False, episode_weight)
        return 0.0, KIND_NONE, x, x
    b = bucket_of(t)
    if shift_budget > 0.0 and w > 0.0:   # the test's offsets are its own: off, they cost nothing
        _end_visit(st, season, seen, r, b)
    offset = season[r, 0, b] if seen[r, b] else 0.0
    expected = st[r, LEVEL] + offset
    scale = max(st[r, SCALE], FLOOR_SHARE * st[r, SLOW_SCALE], RELATIVE_FLOOR * abs(st[r, LEVEL]), 1e-300,
                season[r, 1, b] if seen[r, b] > 1 else 0.0)
    e = x - expected
    z = e / scale
    # judged with room for an offset step learned on another day of the week (unseen_step); learned as is
    room = unseen_step(season, seen, rec, r, b, bucket_of(st[r, LAST_T]), t)
    z_judged = e / math.hypot(scale, room) if room > 0.0 else z   # hypot: a scale of 1e-300 squares to 0
    score = 0.0
    kind = KIND_NONE
    shift_off = season[r, SHIFT_OFFSET, b] - st[r, OFFSET_SUM] / SEASON_BUCKETS
    fast = x - shift_off
    u = 0.0
    if shift_budget > 0.0:     # off (0): no level-shift state is kept either, its cost is saved
        fast = shift_fast(st, r, x - shift_off, scale)
        u = shift_u(st, r, fast)
    # an offset of 0 (a series with no time-of-day pattern learned, as every series' first day) is wider
    # than no range, and 0 > x is false for any x (NaN too): the range's two logs are not computed for it
    if shift_budget > 0.0 and ((shift_off != 0.0 and abs(shift_off) > signed_log(rec[r, REC_HIGH])
                                - signed_log(rec[r, REC_LOW])) or season_jumps(season, seen, r, b, st[r, SLOW_SCALE])):
        # an offset wider than every value's range, or one that jumps from the last quarter hour's by
        # more than a daily cycle moves (a nightly job's step learned into its quarter hours, or an
        # offset in a state saved before the test had its own): the deseasoned values jump with the
        # season model, not the series; the test starts again from the new level, as after a recovery
        st[r, SETTLE] = -2.0 * SHIFT_WINDOW
        fast = x - shift_off      # from this value, not travelling there from the season model's jump
        u = 0.0
    fired = False
    recovery = False
    u_learn = u
    evidence = False
    episode = False
    w_line = w     # the forecast, the tail and the level-shift test keep the line's weight (see above)
    if judged(st, labels, r):
        if st[r, SPLIT_ONLY] <= 0.0:
            # a split series' spikes and records are its pooled series' to judge: not computed for it
            score, kind = spike_score(st, rec, r, value, z_judged, t, threshold, multiplicity, record_weight)
        # a split series whose value does not explain the spread (SPLIT_MIXED: a referrer, not a table)
        # only learns: its level moves with the mix of whatever else its lines hold, not news. Nor is a
        # shift of a pooled series whose split series explain it (POOLED_MIXTURE): a query time pooled
        # over a fast and a slow table moves whenever the slow table's share of the queries does; each
        # table's own series tells whether that table slowed
        lp = shift_log10p(st, r, u) if st[r, SPLIT_ONLY] == 0.0 or st[r, SPLIT_ONLY] == SPLIT_JUDGED else 0.0
        shift_score = 0.0
        if lp < 0.0 and shift_budget > 0.0 and st[r, SHIFT_N] >= SHIFT_JUDGE:
            # the run's points are one chance a window, not one a point
            bonus = rate_bonus(st[r, GAP] * SHIFT_WINDOW, threshold, shift_multiplicity)
            bonus += 10.0 * math.log10(shift_budget / FALSE_FLAGS_PER_DAY)
            shift_score = min(max(-10.0 * lp + bonus, 0.0), 100.0)
            if shift_score >= threshold:
                # censored at the threshold: the tail learns such an excursion as what scores the threshold,
                # beyond it the anomaly's (a query 14 times slower taught a tail that hid the same query
                # 6.6 times slower five hours later)
                u_learn = math.copysign(min(abs(u), shift_u_at(st, r, -(threshold - bonus) / 10.0)), u)
        if st[r, SPLIT_ONLY] > 0.0 and u < 0.0:
            # a split series is there for one value's slowdown hidden in the mix; one value's drop is
            # rarely trouble, and a load change drops many of them at once
            shift_score = 0.0
        if in_episode(st, r, u, t) or is_returning(st, r, u, fast):
            # the way of a shift fired within EPISODE_KEEP_S and not recovered since: that episode going on
            # (a slowdown still ramping up), raised once; the level it began from stays FROM. Back towards
            # FROM and not past it: the episode ending, a recovery once past halfway (is_recovery), not a
            # shift the other way while on its way there
            shift_score = 0.0
        # a return from the last fired shift towards the level before it (is_recovery) is that episode's
        # end, expected, not news: it needs no rarity, only an excursion held as long as a shift's. Else
        # it waits to be rare: a query back from 14 times slower stayed an excursion for an hour, its peak
        # was learned as an ordinary one, and that tail hid the same query 6.6 times slower after
        back = abs(u) > U_START and is_recovery(st, r, fast)
        st[r, HELD] = st[r, HELD] + 1.0 if shift_score >= threshold or back else 0.0
        fired = st[r, HELD] >= SHIFT_HOLD
        recovery = fired and is_recovery(st, r, fast)
        # only a fired shift scores: its run builds up over SHIFT_WINDOW points, and a score rising
        # with it would make its crossing no news to reported(). Nor does one that fires while the
        # series' alarm is at the threshold: its values moved together because an episode its spikes
        # or records flagged goes on (GC pauses 20 times longer for half an hour: a record, then a
        # shift of the same values); one episode, one loud line, named by what flagged it, and the
        # shift's values past halfway stay its evidence
        if fired and not recovery and shift_score > score and st[r, ALARM] < threshold:
            score = shift_score
            kind = KIND_SHIFT_UP if u > 0 else KIND_SHIFT_DOWN
            expected = st[r, BASE] + shift_off
        elif st[r, SETTLE] > 0.0 and st[r, EVIDENCE] > 0.0 and score < suspicious:
            # while it settles, a value past halfway from the old level to the new one is the shift's
            # evidence too: suspicious, keeping its incident open (an incident needs more than one line)
            moved = st[r, FAST] - st[r, FROM]
            evidence = (x - shift_off - st[r, FROM]) * moved > 0.5 * moved * moved
            if evidence:
                kind = KIND_SHIFT_UP if moved > 0 else KIND_SHIFT_DOWN
                expected = st[r, FROM] + shift_off
        episode = score >= threshold or st[r, ALARM] >= threshold
        if episode:
            w = min(w, episode_weight)    # a value of an anomalous episode (see the docstring)
        score = reported(st, r, score, threshold, suspicious)
        if evidence:
            score = suspicious
            st[r, EVIDENCE] -= 1.0
        elif episode and score < suspicious and st[r, SPLIT_ONLY] <= 0.0 and beyond_episode(rec, r, value):
            # a value of the open episode still beyond the range from before it (a queue still thirty times
            # its depth): its evidence, suspicious, keeping its incident open. The tail has learned the
            # episode's first values (at episode_weight), which would call the rest ordinary at once
            score = suspicious
            if kind == KIND_NONE:
                kind = KIND_SPIKE if value > rec[r, REC_PRE_HIGH] else KIND_DROP
        if fired and not recovery:
            st[r, EVIDENCE] = SHIFT_EVIDENCE
    elif st[r, SPLIT_ONLY] <= 0.0 and (constant_broken(st, rec, r, value, t, record_weight)
                                       or (st[r, ALARM] >= threshold and beyond_episode(rec, r, value))):
        # a series that has shown 0 only (a waiting count, for days) is no measurement to judge, but
        # its first other value is a record all the same (a pool pinned at its size: the count
        # of requests waiting for it leaves 0), and the values after it beyond that one stay its evidence
        if constant_broken(st, rec, r, value, t, record_weight):
            score, kind = constant_score(st, rec, r, value, t, threshold, multiplicity, record_weight)
        episode = score >= threshold or st[r, ALARM] >= threshold
        if episode:
            w = min(w, episode_weight)
        score = reported(st, r, score, threshold, suspicious)
        if episode and score < suspicious and beyond_episode(rec, r, value):
            score = suspicious
            kind = KIND_SPIKE if value > rec[r, REC_PRE_HIGH] else KIND_DROP
    # A value on a line the engine flagged (learned below full weight: anomaly_learning_weight) is an
    # episode's for the range too, whatever this series scored: a pool pinned at its size whose lines a
    # new field value flagged, while the series was not judged yet (too few distinct values), widened the
    # range for good, and the same pool pinned the next day was no record
    learn_record(rec, r, value, t, w, episode or w_line < 1.0, episode_weight)
    if shift_budget > 0.0:
        _learn_shift(st, r, fast, w_line, fired, recovery, u_learn, t, episode_weight)
        if w_line > 0.0:
            _learn_visit(st, season, seen, r, b, x, w_line, TAIL_START * scale, t)
    _learn(st, season, seen, r, b, x, t, w_line, z, e, scale, host)
    return score, kind, expected, fast + shift_off


@njit(cache=True)
def _empty_mode(st, labels, r, value, w):
    """Whether value is an empty one of a series of magnitudes, neither judged nor learned (see
    ZERO_MODE_SHARE); learns, with weight w, how often the series' values are 0."""
    if st[r, N_OBS] == 0.0:
        return False
    zero = value == 0.0
    mode = (zero and st[r, N_OBS] >= MIN_POINTS and ZERO_MODE_SHARE <= st[r, ZERO_SHARE] <= ZERO_MODE_MAX
            and st[r, LEVEL] > ZERO_MODE_LEVEL and _zero_from_start(st, labels, r))
    if w > 0.0:
        # the mean of the values so far until the decayed one's memory is reached: a share ramping up from 0
        # over the first day would pass through the mode's range in a series mostly of zeros
        rate = min(max(slow_alpha(st, r), 1.0 / (st[r, N_OBS] + 1.0)) * w, 1.0)
        st[r, ZERO_SHARE] += rate * ((1.0 if zero else 0.0) - st[r, ZERO_SHARE])
    return mode


@njit(cache=True)
def _zero_from_start(st, labels, r):
    """Whether 0 is among the first distinct values of series r (its labels)."""
    for q in range(min(int(st[r, DISTINCT]), labels.shape[1])):
        if labels[r, q] == 0.0:
            return True
    return False


@njit(cache=True)
def spike_score(st, rec, r, value, z, t, threshold, multiplicity, record_weight):
    """(score, kind) of a value of a judged series by its residual's tail and its record (the rarer of
    the two), before reported(): KIND_NONE and 0 when neither is in a tail."""
    lp = tail_log10p(st, r, z)
    kind = KIND_SPIKE if z > 0 else KIND_DROP
    lp_record = record_log10p(rec, r, value, z, t, record_weight)
    if lp_record < lp:
        lp = lp_record
        kind = KIND_RECORD_HIGH if z > 0 else KIND_RECORD_LOW
    if lp >= 0.0:
        return 0.0, KIND_NONE
    return min(max(-10.0 * lp + rate_bonus(st[r, GAP], threshold, multiplicity), 0.0), 100.0), kind


@njit(cache=True)
def season_jumps(season, seen, r, b, size):
    """Whether the level-shift test's offsets of time-of-day bucket b and the one before it, both seen,
    differ by more than SEASON_STEP_LIMIT long-run residual sizes: a daily cycle moves by less in a
    quarter hour."""
    p = (b + SEASON_BUCKETS - 1) % SEASON_BUCKETS
    if seen[r, b] == 0 or seen[r, p] == 0:
        return False
    return abs(season[r, SHIFT_OFFSET, b] - season[r, SHIFT_OFFSET, p]) > SEASON_STEP_LIMIT * size


@njit(cache=True)
def shift_fast(st, r, d, scale):
    """The fast mean of series r after value d (deseasoned, log scale): an exponential mean over about
    SHIFT_WINDOW points, each value moving it by at most SHIFT_CLIP residual scales (a lone spike is
    the tail's business, a run of values the shift's)."""
    if st[r, SHIFT_N] <= 0.0:
        return d
    limit = SHIFT_CLIP * scale
    return st[r, FAST] + min(max(d - st[r, FAST], -limit), limit) / SHIFT_WINDOW


@njit(cache=True)
def shift_u(st, r, fast):
    """The level-shift statistic: how far the fast mean stands from the slow baseline, in units of that
    gap's usual size (0 before SHIFT_WARM points). The usual size is learned from the series itself, so
    a series whose level wanders (autocorrelated, a random walk) calibrates itself, and a steady one
    makes a sustained move of a fraction of its spread stand out (a windowed mean: no single value of
    the run need be extreme)."""
    if st[r, SHIFT_N] < SHIFT_WARM or st[r, GAP_SIZE] <= 0.0:
        return 0.0
    return (fast - st[r, BASE]) / max(st[r, GAP_SIZE], GAP_FLOOR)


@njit(cache=True)
def shift_log10p(st, r, u):
    """log10 of the chance that a window of the series holds an excursion of |u| this large, from its
    own past excursions beyond U_START: a generalized Pareto tail of their peaks' excesses, fitted by
    its moments (shrunk towards a Pareto of index U_PRIOR_INDEX), times their share of windows. The
    shape is at least 0 (exponential: a windowed mean's tail is no lighter) and the moments decide how
    much heavier: a series whose excursions all peaked within a scale or two of U_START makes one
    three times beyond them news, where a Pareto tail fitted to the same peaks (its scale tied to
    U_START) called it a few times a day. An excursion is learned once, by its peak, when it ends: a
    shift building up does not teach its own tail while it is judged. A series whose level wanders
    beyond U_START often needs a larger excursion to be news."""
    a = abs(u)
    if a <= U_START:
        return 0.0
    return excursion_log10p(st[r, U_N], st[r, U_TOTAL], st[r, U_S], st[r, U_S2], a)


@njit(cache=True)
def excursion_log10p(n, windows, s1, s2, a):
    """log10 of the chance that a window holds an excursion of |u| = a > U_START, given n learned peaks
    (their excesses' sum s1 and sum of squares s2) over `windows` windows: the excesses' tail times the
    peaks' share of windows, shrunk towards PRIOR_RATE (shift_log10p; the source test's too)."""
    share = (n + PRIOR_RATE * PRIOR_WEIGHT) / (windows + PRIOR_WEIGHT)
    return math.log10(min(share, 1.0)) + excess_log10p(n, s1, s2, a - U_START)


@njit(cache=True)
def excess_fit(n, s1, s2):
    """(shape, scale) of the generalized Pareto fitted by the moments of n excesses (sum s1, sum of
    squares s2) and PRIOR_EXCESSES of the prior's: shape 0.5 (1 - mean^2 / variance) within 0 and
    MAX_SHAPE, scale mean x (1 - shape)."""
    shape0 = 1.0 / U_PRIOR_INDEX
    scale0 = U_START * shape0          # the prior is a Pareto from U_START
    mean0 = scale0 / (1.0 - shape0)
    square0 = 2.0 * scale0 * scale0 / ((1.0 - shape0) * (1.0 - 2.0 * shape0))
    m1 = (s1 + PRIOR_EXCESSES * mean0) / (n + PRIOR_EXCESSES)
    m2 = (s2 + PRIOR_EXCESSES * square0) / (n + PRIOR_EXCESSES)
    var = max(m2 - m1 * m1, 1e-12)
    shape = min(max(0.5 * (1.0 - m1 * m1 / var), 0.0), MAX_SHAPE)
    return shape, m1 * (1.0 - shape)


@njit(cache=True)
def excess_log10p(n, s1, s2, y):
    """log10 P(excess > y) under the generalized Pareto of excess_fit."""
    shape, scale = excess_fit(n, s1, s2)
    if shape < 1e-9:
        return -y / scale / math.log(10.0)
    return -math.log10(1.0 + shape * y / scale) / shape


@njit(cache=True)
def shift_u_at(st, r, lp):
    """The |u| whose shift_log10p is lp (U_START where even that is no rarer): the inverse of the tail."""
    return excursion_u_at(st[r, U_N], st[r, U_TOTAL], st[r, U_S], st[r, U_S2], lp)


@njit(cache=True)
def excursion_u_at(n, windows, s1, s2, lp):
    """The |u| whose excursion_log10p is lp (U_START where even that is no rarer): its inverse."""
    share = (n + PRIOR_RATE * PRIOR_WEIGHT) / (windows + PRIOR_WEIGHT)
    target = lp - math.log10(min(share, 1.0))
    if target >= 0.0:
        return U_START
    shape, scale = excess_fit(n, s1, s2)
    if shape < 1e-9:
        return U_START - target * scale * math.log(10.0)
    return U_START + scale / shape * (10.0 ** (-shape * target) - 1.0)


@njit(cache=True)
def is_recovery(st, r, fast):
    """Whether a shift returns from the level of the last fired shift to at most halfway from the
    level before it: the end of an episode (a lock storm over, a restarted cache warm again), reset
    to but not reported."""
    if st[r, SHIFTS] <= 0.0:
        return False
    away = st[r, BASE] - st[r, FROM]
    return (fast - st[r, BASE]) * away < 0.0 and abs(fast - st[r, FROM]) < 0.5 * abs(away)


@njit(cache=True)
def is_returning(st, r, u, fast):
    """Whether a shift goes back from the last fired shift's level towards the level before it, not past
    that: on its way to a recovery (is_recovery), as the fast mean travels there."""
    away = st[r, BASE] - st[r, FROM]
    return st[r, SHIFTS] > 0.0 and u * away < 0.0 and (fast - st[r, FROM]) * away > 0.0


@njit(cache=True)
def in_episode(st, r, u, t):
    """Whether an excursion of u starting at t goes the way of the last fired shift, within
    EPISODE_KEEP_S of it and not recovered since: that episode going on (a slowdown still ramping up
    after its shift fired), whose peaks would teach the tail that the next such episode is ordinary."""
    return st[r, SHIFT_T] > 0.0 and t - st[r, SHIFT_T] < EPISODE_KEEP_S and u * (st[r, BASE] - st[r, FROM]) > 0.0


@njit(cache=True)
def _learn_shift(st, r, fast, w, fired, recovery, u, t, episode_weight):
    """Learn the level-shift state: a fired shift resets the baseline to the new level, following the
    fast mean for 2 x SHIFT_WINDOW points while it gets there (one detection an episode; the shifted
    level is the new normal), else the baseline and the gap's size follow
    slowly, the gap counting at most GAP_CLIP usual sizes (a past shift does not numb the test). Once the
    test is warm, the tail of |u| learns each excursion once, by its peak, when it ends or fires: a fired
    one as at most what scored the threshold (step passes u censored there) and weighing episode_weight
    (anomaly_learning_weight) of an excursion, a recovery (an episode's end) not at all, nor one that
    goes the way of a shift fired within EPISODE_KEEP_S (in_episode). At full weight, one fired shift
    among forty excursions made the tail's shape 0.35 (from 0): the same query slowing again the next
    day, u three times the censored peak, scored 70 where it scores hundreds."""
    if w <= 0.0:
        return
    if st[r, SHIFT_N] >= SHIFT_WARM:
        keep = 1.0 - slow_alpha(st, r)
        if w != 1.0:
            keep = keep ** w
        st[r, U_TOTAL] = st[r, U_TOTAL] * keep + w / SHIFT_WINDOW
        st[r, U_N] *= keep
        st[r, U_S] *= keep
        st[r, U_S2] *= keep
        if abs(u) > U_START:
            if st[r, U_PEAK] <= 0.0:
                st[r, U_EPISODE] = 1.0 if in_episode(st, r, u, t) else 0.0
            st[r, U_PEAK] = max(st[r, U_PEAK], abs(u))
        if fired and recovery:
            st[r, U_PEAK] = 0.0     # an episode's end is not one of the series' own excursions
        if (abs(u) <= U_START or fired) and st[r, U_PEAK] > 0.0:
            if st[r, U_EPISODE] <= 0.0:
                k = episode_weight if fired else 1.0
                st[r, U_N] += k
                excess = st[r, U_PEAK] - U_START
                st[r, U_S] += k * excess
                st[r, U_S2] += k * excess * excess
            st[r, U_PEAK] = 0.0
    n = st[r, SHIFT_N]
    st[r, SHIFT_N] = n + w
    if n <= 0.0:
        st[r, BASE] = fast
        st[r, FAST] = fast
        return
    st[r, FAST] = fast if w == 1.0 else st[r, FAST] + w * (fast - st[r, FAST])
    if fired:
        st[r, HELD] = 0.0
    if fired and recovery:
        st[r, SETTLE] = -2.0 * SHIFT_WINDOW
        st[r, SHIFT_T] = 0.0
    elif fired:
        st[r, SETTLE] = 2.0 * SHIFT_WINDOW
        st[r, FROM] = st[r, BASE]
        st[r, SHIFTS] += 1.0
        st[r, SHIFT_T] = t
    if st[r, SETTLE] < 0.0:
        st[r, BASE] = st[r, FAST]
        st[r, SETTLE] = min(st[r, SETTLE] + w, 0.0)
        return
    if st[r, SETTLE] > 0.0:
        # the fast mean still travels to the new level for a window or two: the baseline goes with it
        st[r, BASE] = st[r, FAST]
        st[r, SETTLE] = max(st[r, SETTLE] - w, 0.0)
        return
    rate = max(1.0 / SHIFT_MEMORY, 1.0 / n)
    gap = abs(st[r, FAST] - st[r, BASE])
    if n >= SHIFT_WARM and st[r, GAP_SIZE] > 0.0:
        gap = min(gap, GAP_CLIP * st[r, GAP_SIZE])
    if abs(u) <= U_START or n < SHIFT_JUDGE:
        # once shifts are judged the usual size is learned outside excursions: a shift being judged does
        # not widen the yardstick it is judged by (learning it, an hour at a new level halved its own u);
        # the baseline's drift towards the new level still ends an excursion that never fires
        st[r, GAP_SIZE] += w * rate * (gap - st[r, GAP_SIZE])
    st[r, BASE] += w * rate * (st[r, FAST] - st[r, BASE])


@njit(cache=True)
def _end_visit(st, season, seen, r, b):
    """When value's bucket b is another than the visit's: what the visit's values still stand from the
    level-shift test's offset (their mean distance, less what _learn_visit took) waits for the next
    visit of its quarter hour (PENDING), and a visit of b begins. If the visit that ends took a distance
    on the side that b has pending, b's offset takes as much of its pending before its first value is
    judged: a daily pattern is being learned across these hours (a nightly job's half hour), and b's
    first values would otherwise deseason off by the difference.

    A visit that held a fired shift's episode counts in EPISODES: 1, or EPISODE_VISITS when the visit
    before it held one too and they agree on the side. While a quarter hour's count is 1 its next visit
    learns nothing (offsets_learn): the same incident twice at the same hour, a query 16 times slower
    at 07:04 one day and 18 times the next, agreed as a nightly job does, and the offset learned on the
    second day hid it; a third agreeing visit (a job) is learned as before."""
    pb = int(st[r, VISIT_B]) - 1
    if pb == b:
        return
    taken = st[r, VISIT_TAKEN]
    if pb >= 0 and st[r, VISIT_N] > 0.0:
        m = st[r, VISIT_SUM] / st[r, VISIT_N]
        if st[r, VISIT_EPISODE] <= 0.0:
            season[r, EPISODES, pb] = 0.0
        elif season[r, EPISODES, pb] > 0.0 and m * season[r, PENDING, pb] > 0.0:
            season[r, EPISODES, pb] = EPISODE_VISITS
        else:
            season[r, EPISODES, pb] = 1.0
        season[r, PENDING, pb] = m
    st[r, VISIT_B] = b + 1.0
    st[r, VISIT_N] = 0.0
    st[r, VISIT_SUM] = 0.0
    st[r, VISIT_TAKEN] = 0.0
    st[r, VISIT_EPISODE] = 0.0
    p = season[r, PENDING, b]
    if offsets_learn(season, seen, r, b) and p * taken > 0.0:
        ahead = math.copysign(min(abs(p), abs(taken)), p)
        season[r, SHIFT_OFFSET, b] += ahead
        st[r, OFFSET_SUM] += ahead
        season[r, PENDING, b] -= ahead
        st[r, VISIT_TAKEN] = ahead


@njit(cache=True)
def offsets_learn(season, seen, r, b):
    """Whether a visit of quarter hour b may move its level-shift offset: b was seen before, and its
    last visit held no shift's episode or was the EPISODE_VISITS-th of such visits agreeing in a row."""
    return seen[r, b] > 0 and season[r, EPISODES, b] != 1.0


@njit(cache=True)
def _learn_visit(st, season, seen, r, b, x, w, limit, t):
    """Learn value x (weight w > 0) into the slow level and the visit of its quarter hour b, and move the
    level-shift test's offset of b by what this visit and the last one agree on (see the module
    docstring). The slow level follows the deseasoned values over SEASON_LEVEL_S of time, each value
    moving it by at most `limit` (a running mean over the first MIN_POINTS values): not the forecast's
    level nor the test's baseline, which both follow an episode within minutes, so an episode's
    distance from it is there to be compared with the next day's. A value within EPISODE_KEEP_S of a
    fired shift (SHIFT_T, at t) makes its visit one of that episode's (_end_visit)."""
    if st[r, SHIFT_T] > 0.0 and t - st[r, SHIFT_T] < EPISODE_KEEP_S:
        st[r, VISIT_EPISODE] = 1.0
    d = x - season[r, SHIFT_OFFSET, b]
    n = st[r, N_OBS]
    if n < MIN_POINTS:
        st[r, DAY_LEVEL] += w / (n + w) * (d - st[r, DAY_LEVEL])
    else:
        rate = min(1.0, max(st[r, GAP], MIN_GAP_S) / SEASON_LEVEL_S)
        st[r, DAY_LEVEL] += w * rate * min(max(d - st[r, DAY_LEVEL], -limit), limit)
    st[r, VISIT_N] += w
    # one outlier does not make a visit's mean
    st[r, VISIT_SUM] += w * min(max(d - st[r, DAY_LEVEL], -4.0 * limit), 4.0 * limit)
    if not offsets_learn(season, seen, r, b):
        return     # a first sight, or after one shift's episode: what it shows waits for the next visit
    m, p = st[r, VISIT_SUM] / st[r, VISIT_N], season[r, PENDING, b]
    if m * p <= 0.0:
        return
    # the lesser of the two distances, less what the visit's noise explains: taken as soon as the visit
    # shows it (a nightly job's step is the offset's from its second night's first values, before the
    # test could fire on it), no more than the last visit left pending, and at most `limit` a value (a
    # real step is learned within a few values; one wild value does not move it far)
    noise = SEASON_NOISE * st[r, SLOW_SCALE] / math.sqrt(st[r, VISIT_N])
    taken = math.copysign(min(max(min(abs(m), abs(p)) - noise, 0.0), limit), m)
    season[r, SHIFT_OFFSET, b] += taken
    st[r, OFFSET_SUM] += taken
    season[r, PENDING, b] -= taken
    st[r, VISIT_SUM] -= taken * st[r, VISIT_N]
    st[r, VISIT_TAKEN] += taken


@njit(cache=True)
def _learn(st, season, seen, r, b, x, t, w, z, e, scale, host):
    a = abs(z)
    # what kind of series this is (a counter? how dense?) follows every point, whatever its weight; a
    # rise or a fall is its host's own (host_last: two hosts' clocks pooled are still clocks)
    last = host_last(st, r, host, x)
    if x != last:
        # a running mean at first: a counter must be known for one before its first reset is judged
        rate = max(SCALE_ALPHA, 1.0 / st[r, N_OBS])
        st[r, RISES] += rate * ((1.0 if x > last else 0.0) - st[r, RISES])
    dt = t - st[r, LAST_T]
    if dt >= 0.0:
        st[r, GAP] += max(SCALE_ALPHA, 1.0 / st[r, N_OBS]) * (max(dt, MIN_GAP_S) - st[r, GAP])
    st[r, LAST_X] = x
    st[r, LAST_T] = max(t, st[r, LAST_T])
    if w <= 0.0:
        return
    n = st[r, N_OBS]
    warm = n >= MIN_POINTS
    st[r, N_OBS] = n + w
    keep = 1.0 - slow_alpha(st, r)
    g = _growth(st, r) / (keep if w == 1.0 else keep ** w)
    if g > MAX_GROWTH:
        for c in DECAYED:
            st[r, c] /= g
        for c in range(UP_HIST, UP_HIST + 2 * HIST_BINS):
            st[r, c] /= g
        g = 1.0
    st[r, GROWTH] = g
    st[r, TOTAL] += w * g
    if warm and a > TAIL_START:
        base = UP_N if z > 0 else DN_N
        st[r, base] += w * g
        st[r, base + 1] += w * g * math.log(a / TAIL_START)
        st[r, (UP_HIST if z > 0 else DN_HIST) + octave(a)] += w * g
    if a > TAIL_START:
        sign = 1.0 if z > 0 else -1.0
        st[r, RUN] = st[r, RUN] + sign if st[r, RUN] * sign > 0 else sign
    else:
        st[r, RUN] = 0.0
    if abs(st[r, RUN]) >= SHIFT_RUN:
        st[r, LEVEL] = x - (season[r, 0, b] if seen[r, b] else 0.0)
        st[r, RUN] = 0.0
        return
    limit = TAIL_START * scale
    size = min(a * scale, limit) if warm else abs(e)
    st[r, LEVEL] += w * (min(max(e, -limit), limit) if warm else e)
    if seen[r, b]:
        season[r, 0, b] += w * SEASON_ALPHA * min(max(x - st[r, LEVEL] - season[r, 0, b], -limit), limit)
        # a residual counts at most 4 tail starts: one wild day does not unsettle the hour for weeks
        season[r, 1, b] += w * SEASON_ALPHA * (min(abs(e), 4.0 * limit) - season[r, 1, b])
        seen[r, b] = min(seen[r, b] + 1, 100)
    else:
        season[r, 0, b] = x - st[r, LEVEL]
        season[r, 1, b] = abs(e)
        seen[r, b] = 1
    st[r, SCALE] += w * max(SCALE_ALPHA, 1.0 / (n + 1.0)) * (size - st[r, SCALE])
    st[r, SLOW_SCALE] += w * max(slow_alpha(st, r), 1.0 / (n + 1.0)) * (size - st[r, SLOW_SCALE])


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.F32_1D, kt.I64_1D, kt.F64_2D, kt.F64_3D, kt.I8_2D,
           kt.F64_2D, kt.F64_2D, kt.FLOAT64, kt.FLOAT64, kt.F64_2D, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64), cache=True)
def score_series(param_ptr, param_row, param_num, ts, weights, hosts, st, season, seen, labels, rec, threshold,
                 suspicious, multiplicity, record_weight, shift_budget, episode_weight):
    """Step every numeric parameter with a series row (param_row >= 0) through its series, in line
    order -> (best score per line float32[n], its parameter index int64[n], kind int8[n],
    expected value float64[n], the series' recent level float64[n], and per parameter the evidence of a
    level shift its series stands at after it (after_u float64[m]: shift_evidence, NaN for a value not
    stepped; source_shift_kernels combines them per source)). weights float32[n]: learning weight per line (0: judge only);
    hosts int64[n]: the code of each line's host (series.host_codes; 0: the line named none);
    threshold: the anomaly threshold the per-day calibration aims at; suspicious: the suspicious score;
    multiplicity float64[R, 2]: the judged series of each row's source, and the level-shift test's share of
    its budget (rate_bonus; see series.SeriesBook.multiplicity); rec float64[R, RECORD_COLS]:
    each row's range and records; record_weight: see record_log10p; shift_budget: false level shifts a
    source may raise a day (series_shift_budget; 0: the level-shift test is off); episode_weight
    (anomaly_learning_weight): what an episode's record counts and the share of its widening of the
    range a rollback keeps (see step, learn_record)."""
    best, which, kind, expected, level = line_outputs(param_ptr.shape[0] - 1)
    after_u = np.full(param_num.shape[0], np.nan)
    step_values(param_ptr, param_row, param_num, ts, weights, hosts, st, season, seen, labels, rec, threshold,
                suspicious, multiplicity, record_weight, shift_budget, episode_weight, best, which, kind, expected,
                level, after_u)
    return best, which, kind, expected, level, after_u


@kt.loop
def step_values(param_ptr, param_row, param_num, ts, weights, hosts, st, season, seen, labels, rec, threshold,
                suspicious, multiplicity, record_weight, shift_budget, episode_weight, best, which, kind, expected,
                level, after_u):
    """score_series' loop, into its outputs (kt.loop: no reference counting)."""
    n = param_ptr.shape[0] - 1
    for i in range(n):
        for j in range(param_ptr[i], param_ptr[i + 1]):
            r = param_row[j]
            x = param_num[j]
            if r < 0 or math.isnan(x) or math.isinf(x):
                continue
            sc, k, ex, now = step(st, season, seen, labels, rec, r, x, ts[i], weights[i], threshold, suspicious,
                                  multiplicity[r, 0], multiplicity[r, 1], record_weight, shift_budget, episode_weight,
                                  float(hosts[i]))
            after_u[j] = shift_evidence(st, r, shift_budget)
            if sc > best[i]:
                best[i], which[i], kind[i], expected[i], level[i] = sc, j, k, from_log(ex), from_log(now)


@njit(cache=True)
def line_outputs(n):
    """A kernel's per-line results before any value is judged: best score float32[n] (0), its parameter
    int64[n] (-1), kind int8[n] (none), expected value and level float64[n] (NaN)."""
    return (np.zeros(n, np.float32), np.full(n, -1, np.int64), np.zeros(n, np.int8), np.full(n, np.nan),
            np.full(n, np.nan))


@njit(cache=True)
def shift_evidence(st, r, shift_budget):
    """The evidence of a level shift series r stands at: -shift_log10p of the u of its fast mean (decades
    of rarity by its own tail), signed by the shift's side; 0 within U_START, while its shifts are not
    judged yet, or with the test off."""
    if shift_budget <= 0.0 or st[r, SHIFT_N] < SHIFT_JUDGE:
        return 0.0
    u = shift_u(st, r, st[r, FAST])
    return math.copysign(-shift_log10p(st, r, u), u) if abs(u) > U_START else 0.0


# step and every helper it calls with the state arrays, inlined into score_series' loop (see
# kt.inline_into_callers: about 30% less CPU per value, the same results). Inlined, they are compiled
# with the loop, without reference counting (kt.loop): one called would be whatever version another
# kernel compiled first (judged_rows compiles judged with counting), counting the arrays per value.
kt.inline_into_callers(step, shift_evidence, unseen_weekday, unseen_step, _empty_mode, _zero_from_start, spike_score,
                       learn_record, _learn_shift, _learn, _end_visit, _learn_visit, offsets_learn, in_episode,
                       is_returning, judged, reported, constant_broken, constant_score, host_last, _count_distinct, tail_log10p, record_log10p, beyond_episode, shift_fast, shift_u,
                       shift_log10p, season_jumps, is_recovery, slow_alpha, _growth, shift_u_at)
