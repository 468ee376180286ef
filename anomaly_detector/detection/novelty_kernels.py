"""numba kernels of tier 3: per-(template, parameter position) numeric and categorical statistics.

tier3_novelty.py owns the arrays and grows them between batches; the tests compare every kernel
with its plain-Python twin in novelty_twins.py on random inputs.

Numeric values are compared on a signed log scale (latencies and sizes are multiplicative), with a
streaming Huber location/scale per slot. A value's surprise is its two-sided normal tail, inflated
by how often the slot has really produced values beyond CAL_Z (so id-like or heavy-tailed
positions calibrate themselves down). Drift is an exponentially weighted mean of recent z values.
The drift mean is standardised by the larger of its iid spread and its own learned spread, so a
latency that wanders with load is judged against how far it usually wanders. A drift must also be
large and upward: the recent mean (YBAR, on the log scale) must have grown by at least
`drift_min_shift` (log of the configured ratio), since a latency 30 % up under load is significant
but not an incident, and values falling (304s with no body, cache hits) are seldom one; single
values far below the usual are still outliers.
A value first seen after warm-up stays young until seen min_obs times; its recurrences are tested
against the highest rate it could have had and still gone unseen before (young_score), so a new
status code or host that keeps coming back outweighs one odd line, and a rare one coming round
again does not, nor does a count one step past its known values (waiting=3 after 2).
Categorical values are up to K hashes per slot; a slot with more distinct values stops counting
and becomes a measurement: only then are its numbers scored (401 is not "twice" 200). Values that
follow each other closely (the minutes of a time stamp) are a clock, not a measurement: a slot
whose von Neumann ratio is below MIN_VON_NEUMANN, or that mostly repeats its previous value, is
not scored either.
"""
import math

import numpy as np
from numba import njit, types
from numba.typed import Dict

from anomaly_detector import kernel_types as kt

from .route_kernels import known_route, route_hash
from .stats_kernels import log10_count_upper, log10_normal_two_sided, surprisal_score

# numeric stats columns (float64[S, NUM_COLS])
N_OBS, CENTER, SCALE, ZBAR, EXC_HI, EXC_LO, EXC_DRIFT, N_DRIFT, IN_DRIFT, ZVAR, LAST, DIFF2, REPEAT, YBAR = range(14)
NUM_COLS = 14
# A measurement rarely repeats its previous value exactly; a slot that does so this often is a
# clock or a counter ticking slower than the lines arrive.
MAX_REPEAT_SHARE = 0.5
# von Neumann ratio (mean squared successive difference / twice the variance) below which a
# slot's values follow each other (a clock, a counter) instead of scattering: not judged.
MIN_VON_NEUMANN = 0.2
CAL_Z = 4.0                     # z beyond which a value counts as an exceedance for calibration
CAL_P = 3.167124183311998e-05   # one-sided normal tail at CAL_Z
CAL_SIGNIFICANT = -3.0         # log10 p below which a slot's exceedance count rejects the normal tail
# A slot exceeding CAL_Z this many times more often than a normal would is not stationary
# (a clock, a counter, an id): the normal model is rejected there and it is not scored.
GATE_INFLATION = 30.0
SCALE_FLOOR = 0.05              # smallest spread on the log scale (about 5 %)
HUBER_C = 3.0
Z_CLIP = 3.0                    # Huber clip of z in the drift mean: a few extreme values do not make a drift
OPEN_SLOT_VALUES = 8            # a slot with this many values new after warm-up is open-ended,
CLOSED_SLOT_NOVELTY = 50.0      # unless a new value there was this surprising (p < 1e-5) at first sight
# A new number this share of its slot's known span beyond every known number (and more than 1 beyond) is
# not the open slot's next value: a count grows into new values a step at a time (13, then 14), a pool
# pinned at its size (20 where 14 was the most ever seen) jumps past them.
BEYOND_SPAN_SHARE = 0.25
OPEN_SOURCE_TEMPLATES = 3       # a source with this many messages new after warm-up is open-ended
SUCCESSION_SHARE = 0.5          # a young value this much of its slot's lines replaces the old ones
NEW_RATE_BOUND = 3.0            # a value unseen in N lines has a rate below 3/N (95 %)
DEV_CLIP = 8.0                  # clip (in robust deviations) of the values in the drift's size estimate
QUIET_Z = 2.5                   # below this |z| a tail is not worth computing (score < 20)
# While a slot's drift mean is beyond QUIET_Z of its spread (a shift may be under way), its values
# teach the centre, the scale and the drift spread this many times slower: a latency that doubles for
# an hour must not become its usual level (nor widen the spread) before the drift test has judged it.
DRIFT_SLOWER = 10.0
KIND_NONE, KIND_OUTLIER, KIND_DRIFT, KIND_NEW_VALUE = 0, 1, 2, 3
NEAR_SHARE = 0.1    # a never-seen value with a fraction this close to a known one is no new value
RUN_LOOKBACK = 16   # first sights of a slot's latest values a run of new values may start at
ROW_NEW = -2        # series_rows: a value of a series the book does not know yet
SERIES_MEMO = 4096   # series_rows' table of keys met in the call (a power of 2: buckets by the key's low bits)
MEMO_EMPTY = -3      # a bucket of that table with no key yet (neither a row, -1, nor ROW_NEW)
ROUTE_KEY = 1 << 60  # added to the split key of a value split by its route (split_keys), apart from its own


@njit(cache=True)
def signed_log(x):
    return math.copysign(math.log1p(abs(x)), x)


@kt.entry((kt.I32_1D, kt.I64_1D, kt.I16_1D, kt.I32_2D), cache=True)
def lookup_slots(template_id, param_ptr, param_pos, slot_index):
    """Slot of every parameter, -1 when its (template, position) has none yet."""
    m = param_pos.shape[0]
    out = np.full(m, -1, np.int64)
    max_pos = slot_index.shape[1]
    for i in range(template_id.shape[0]):
        t = template_id[i]
        if t < 0 or t >= slot_index.shape[0]:
            continue
        for j in range(param_ptr[i], param_ptr[i + 1]):
            p = param_pos[j]
            if 0 <= p < max_pos:
                out[j] = slot_index[t, p]
    return out


@kt.entry((kt.I32_1D, kt.I64_1D, kt.I16_1D, kt.I32_2D, kt.INT64), cache=True)
def assign_slots(template_id, param_ptr, param_pos, slot_index, next_slot):
    """Like lookup_slots, giving new slots to unseen (template, position) pairs; returns next_slot."""
    m = param_pos.shape[0]
    out = np.full(m, -1, np.int64)
    max_pos = slot_index.shape[1]
    for i in range(template_id.shape[0]):
        t = template_id[i]
        if t < 0 or t >= slot_index.shape[0]:
            continue
        for j in range(param_ptr[i], param_ptr[i + 1]):
            p = param_pos[j]
            if 0 <= p < max_pos:
                if slot_index[t, p] < 0:
                    slot_index[t, p] = next_slot
                    next_slot += 1
                out[j] = slot_index[t, p]
    return out, next_slot


@njit(cache=True, _nrt=False)
def _robust_z(stats, s, y):
    scale = max(stats[s, SCALE], SCALE_FLOOR)
    return (y - stats[s, CENTER]) / (1.2533 * scale)


@njit(cache=True)
def _calibrated_log10p(log10p_nominal, exceedances, n, gate):
    """The nominal tail, inflated by how much more often than nominal the slot exceeded CAL_Z.

    Inflation only applies once the excess is itself significant (a Poisson test), so one past
    episode does not blunt a slot; with `gate`, a slot far off the normal model is not scored at
    all (single values of clocks and ids; drift keeps its inflated tail instead).
    """
    expected = n * CAL_P
    inflation = 1.0
    if exceedances > expected and log10_count_upper(exceedances, expected, 1.0) < CAL_SIGNIFICANT:
        inflation = exceedances / expected
    if gate and inflation > GATE_INFLATION:
        return 0.0
    return min(log10p_nominal + math.log10(inflation), 0.0)


@njit(cache=True)
def _scatters(st, s):
    var = (1.2533 * max(st[s, SCALE], SCALE_FLOOR)) ** 2
    return st[s, DIFF2] >= MIN_VON_NEUMANN * 2.0 * var and st[s, REPEAT] <= MAX_REPEAT_SHARE


@njit(cache=True, _nrt=False)
def _drift_spread(st, s, drift_sd):
    return math.sqrt(max(st[s, ZVAR], drift_sd * drift_sd))


@njit(cache=True, _nrt=False)
def _clipped_dev(st, s, y):
    """y's distance from the slot's centre, clipped so that one wild value does not make a drift."""
    limit = DEV_CLIP * 1.2533 * max(st[s, SCALE], SCALE_FLOOR)
    return min(max(y - st[s, CENTER], -limit), limit)


@njit(cache=True, _nrt=False)
def _slot_total(cat_count, cat_nd, s):
    total = 0.0
    for q in range(cat_nd[s]):
        total += cat_count[s, q]
    return total


@kt.entry((kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64), cache=True)
def young_score(novelty, seen, lines_since, lines_before):
    """Surprise of a young value (or template) seen `seen` times before this line, `lines_since`
    lines after its first sight, which came after `lines_before` lines without it.

    The larger of its surprise at first sight and that of its recurrences: a value that was
    there all along at rate r would have shown up in lines_before lines unless r is below about
    NEW_RATE_BOUND / lines_before (95 %); recurring much faster than that rate means something
    new is happening, not that a rare value came round again. A value that takes most of its
    position's lines since it appeared has replaced the old ones (a run id, a date, a version
    after a deploy): a succession, judged at first sight only.
    """
    if seen >= SUCCESSION_SHARE * lines_since:
        return novelty
    return _recurrence_score(novelty, seen, lines_since, lines_before)


@njit(cache=True)
def _recurrence_score(novelty, seen, lines_since, lines_before):
    """young_score without the succession rule: the surprise of a young value's recurrences."""
    if novelty <= 0.0 or seen < 1.0:
        return novelty
    return max(novelty, again_score(seen, lines_since, lines_before))


@njit(cache=True, inline="always")
def again_score(seen, lines_since, lines_before):
    """Surprise of `seen` sightings in the `lines_since` lines after something first appeared, which
    `lines_before` lines without it bound to a rate below NEW_RATE_BOUND / lines_before (95 %)."""
    rate = NEW_RATE_BOUND / max(lines_before, 1.0)
    return surprisal_score(log10_count_upper(seen, max(lines_since, 1.0) * rate, 1.0))


@njit(cache=True, _nrt=False)
def _category_index(cat_hash, cat_nd, s, h):
    for k in range(cat_nd[s]):
        if cat_hash[s, k] == h:
            return k
    return -1


@njit(cache=True)
def _known_mature(cat_hash, cat_count, cat_nd, s, h, min_obs):
    """Whether h is a value of slot s seen min_obs times or more: most values are, and _value_score scores
    them 0 and only counts them (such a value is never young: its table takes new values and known ones
    under min_obs, and the counts do not change in a batch). Asked before calling it: a call of
    _value_score, inlined or not, costs about ten times this test (its many array arguments)."""
    k = _category_index(cat_hash, cat_nd, s, h)
    return k >= 0 and cat_count[s, k] >= min_obs


@njit(cache=True, _nrt=False)
def _new_value_log10p(cat_count, cat_nd, s):
    # Good-Turing: the chance that the next value is unseen is about (values seen once) / total.
    total = 0.0
    once = 0.0
    for k in range(cat_nd[s]):
        total += cat_count[s, k]
        if cat_count[s, k] < 1.5:
            once += 1.0
    return math.log10((once + 0.5) / (total + 1.0))


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.U64_1D, kt.F64_2D, kt.U64_2D, kt.F64_2D, kt.I32_1D, kt.I8_1D, kt.F32_2D,
       kt.F64_2D, kt.F64_2D, kt.U64_1D, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.BOOL), cache=True)
def score_params(param_ptr, param_slot, param_num, param_hash, num_stats, cat_hash, cat_count, cat_nd,
                 cat_full, cat_novelty, cat_seen_at, cat_num, cat_last, min_obs, drift_alpha, drift_min_shift,
                 numeric):
    """Best parameter surprise per line -> (score float32[n], param index int64[n], kind int8[n]).

    numeric=False judges categorical values only (slots pooling several templates' parameters,
    whose numbers are not one measurement). State is read, not changed; the drift means and each
    slot's last value (cat_last) are advanced on private copies so that lines later in the batch see
    the earlier ones.
    """
    n = param_ptr.shape[0] - 1
    best = np.zeros(n, np.float32)
    which = np.full(n, -1, np.int64)
    kind = np.zeros(n, np.int8)
    zbar = num_stats[:, ZBAR].copy()
    ybar = num_stats[:, YBAR].copy()
    last = cat_last.copy()
    # Sightings within this batch count too: an outbreak often fits in one batch.
    extra = np.zeros(cat_nd.shape[0])      # lines of each categorical slot so far in the batch
    batch_new = np.zeros(cat_nd.shape[0])  # values new to each slot met so far in the batch
    batch_first = np.zeros(cat_nd.shape[0])  # the slot's count at the first of them
    young = Dict.empty(key_type=types.uint64, value_type=types.float64[:])  # (slot, value) -> state
    drift_sd = math.sqrt(drift_alpha / (2.0 - drift_alpha))
    for i in range(n):
        for j in range(param_ptr[i], param_ptr[i + 1]):
            s = param_slot[j]
            if s < 0:
                continue
            x = param_num[j]
            nobs = num_stats[s, N_OBS]
            # A parameter with a handful of values is a label (a status, a day), not a
            # measurement: only slots past max_categories distinct values are judged as numbers.
            if numeric and not math.isnan(x) and nobs >= min_obs and cat_full[s] == 1 and _scatters(num_stats, s):
                z = _robust_z(num_stats, s, signed_log(x))
                if abs(z) > QUIET_Z:
                    exc = num_stats[s, EXC_HI] if z > 0 else num_stats[s, EXC_LO]
                    # One value cannot be rarer than one in the values seen so far.
                    lp = max(_calibrated_log10p(log10_normal_two_sided(z), exc, nobs, True), -math.log10(nobs + 1.0))
                    sc = surprisal_score(lp)
                    if sc > best[i]:
                        best[i], which[i], kind[i] = sc, j, KIND_OUTLIER
                zbar[s] += drift_alpha * (min(max(z, -Z_CLIP), Z_CLIP) - zbar[s])
                ybar[s] += drift_alpha * (_clipped_dev(num_stats, s, signed_log(x)) - ybar[s])
                nd = num_stats[s, N_DRIFT]
                spread = _drift_spread(num_stats, s, drift_sd)
                large = ybar[s] >= drift_min_shift and zbar[s] > 0.0
                if nd >= 2.0 / drift_alpha and large and abs(zbar[s]) > QUIET_Z * spread:
                    zd = zbar[s] / spread
                    # Drift exceedances are counted per episode, against the number of
                    # roughly independent drift means (one per 2/alpha values).
                    sc = surprisal_score(_calibrated_log10p(log10_normal_two_sided(zd), num_stats[s, EXC_DRIFT],
                                                            nd * drift_alpha / 2.0, False))
                    if sc > best[i]:
                        best[i], which[i], kind[i] = sc, j, KIND_DRIFT
            if cat_full[s] == 0 and cat_nd[s] > 0:
                if _known_mature(cat_hash, cat_count, cat_nd, s, param_hash[j], min_obs):
                    extra[s] += 1.0   # all _value_score does for it (see _known_mature)
                else:
                    sc = _value_score(young, s, param_hash[j], x, cat_hash, cat_count, cat_nd, cat_novelty,
                                      cat_seen_at, cat_num, extra, min_obs, last[s] == param_hash[j], batch_new,
                                      batch_first)
                    if sc > best[i]:
                        best[i], which[i], kind[i] = sc, j, KIND_NEW_VALUE
            if cat_full[s] == 0:
                last[s] = param_hash[j]
    return best, which, kind


@njit(cache=True)
def _value_score(young, s, h, x, cat_hash, cat_count, cat_nd, cat_novelty, cat_seen_at, cat_num, extra, min_obs,
                 after_itself, batch_new, batch_first):
    """Surprise of a categorical value: unseen, or young (and how often it came back), or known.

    `young` holds [novelty, slot lines before first sight, sightings, judged at first sight only] of the
    young values met in this batch; extra[s] counts the batch's lines of slot s so far; batch_new[s] and
    batch_first[s] count the batch's values new to slot s and where the first came (run_score). All are
    advanced here.
    after_itself: the slot's previous line held this value too. A succession (young_score) is only
    possible then: a value that took over has no old value between its lines, while one that came
    beside the known ones (a new payment provider on half the orders) keeps meeting them.
    """
    before = extra[s]
    extra[s] += 1.0
    key = h ^ np.uint64((s + 1) * 0x9E3779B97F4A7C15)
    # Most values are known and mature (scored 0): the young table is empty in most batches and the
    # slot's total is only needed past that test, so neither is paid for them.
    state = young.get(key) if len(young) else None
    k = -1
    if state is None:
        k = _category_index(cat_hash, cat_nd, s, h)
        if k >= 0 and cat_count[s, k] >= min_obs:
            return 0.0
    learned = _slot_total(cat_count, cat_nd, s)
    total = learned + before
    if state is None:
        if k >= 0:
            state = np.array([cat_novelty[s, k], cat_seen_at[s, k], cat_count[s, k], _late_values(cat_novelty, s, k)])
        elif _near_known_fraction(cat_num, cat_nd, s, x):
            return 0.0
        elif learned >= min_obs:
            state = np.array([surprisal_score(_new_value_log10p(cat_count, cat_nd, s)), total, 0.0,
                              _late_values(cat_novelty, s, cat_nd[s])])
            if not _next_to_known(cat_num, cat_nd, s, x, -1):
                state[0] = max(state[0], run_score(cat_novelty, cat_seen_at, cat_nd, s, batch_new[s],
                                                   batch_first[s], total))
            if batch_new[s] == 0.0:
                batch_first[s] = total
            batch_new[s] += 1.0
        else:
            return 0.0
        # A count going one further (waiting=3 after 2) is not a new kind of value. A slot that
        # took new values after warm-up before is open (a count, a growing set): its new values
        # come back with the load that brought them, so their recurrences prove nothing, unless
        # new values there are so rare that this one was a surprise at first sight (a status
        # code pool gathers a few new codes over weeks; a user id slot gains them every hour).
        # A number far beyond all the slot's known ones is judged by its recurrences even there.
        state[3] = 1.0 if (_next_to_known(cat_num, cat_nd, s, x, k)
                           or (state[3] >= OPEN_SLOT_VALUES and state[0] < CLOSED_SLOT_NOVELTY
                               and not _far_beyond_known(cat_num, cat_nd, s, x, k))) else 0.0
        young[key] = state
    if state[3] > 0.0:
        sc = state[0]
    elif after_itself:
        sc = young_score(state[0], state[2], total - state[1], state[1])
    else:
        sc = _recurrence_score(state[0], state[2], total - state[1], state[1])
    state[2] += 1.0
    return sc


@njit(cache=True, _nrt=False)
def _near_known_fraction(cat_num, cat_nd, s, x):
    """True when x has a fractional part and lies within NEAR_SHARE of a known value of slot s: a
    measurement that moved a little (a disk 41.3% used after 41.2%), not a new kind of value, neither
    at first sight nor when it comes back (it is learned with no novelty)."""
    if math.isnan(x) or x == math.floor(x):
        return False
    for q in range(cat_nd[s]):
        v = cat_num[s, q]
        if not math.isnan(v) and abs(v - x) <= NEAR_SHARE * max(abs(v), abs(x)):
            return True
    return False


@njit(cache=True)
def _next_to_known(cat_num, cat_nd, s, x, k):
    """True when x is an integer one step from another known integer value of slot s (not index k)."""
    if math.isnan(x) or x != math.floor(x):
        return False
    for q in range(cat_nd[s]):
        if q != k and abs(cat_num[s, q] - x) <= 1.0:
            return True
    return False


@njit(cache=True)
def _far_beyond_known(cat_num, cat_nd, s, x, k):
    """True when x lies beyond every known number of slot s (not index k) by more than BEYOND_SPAN_SHARE
    of their span and by more than 1 (see BEYOND_SPAN_SHARE)."""
    if math.isnan(x):
        return False
    lo = math.inf
    hi = -math.inf
    for q in range(cat_nd[s]):
        v = cat_num[s, q]
        if q != k and not math.isnan(v):
            lo = min(lo, v)
            hi = max(hi, v)
    if lo > hi:
        return False
    reach = max(1.0, BEYOND_SPAN_SHARE * (hi - lo))
    return x > hi + reach or x < lo - reach


@njit(cache=True)
def _late_values(cat_novelty, s, k):
    """How many of slot s's values before index k were first seen after it had matured."""
    late = 0.0
    for q in range(k):
        if cat_novelty[s, q] > 0.0:
            late += 1.0
    return late


@njit(cache=True)
def run_score(cat_novelty, cat_seen_at, cat_nd, s, batch_new, batch_first, total):
    """Surprise of the values new to slot s that came just before this new one, as a run.

    Each new value alone is judged at first sight (about 47 after a few thousand lines of one
    value), but several in a row after a long quiet span are rarer together: a pool's waiting
    count that read 0 for days and now reads 35, 44, 38 is an exhausted pool, not three mild
    surprises. A run starting at a value first seen after `gap` slot lines without a new value
    would have a rate of new values below about NEW_RATE_BOUND / gap (95 %) if nothing had
    changed; `count` new values in the `since` lines after its start are tested against it. A
    slot that gains new values all the time (an open set) has short gaps, so its runs prove
    nothing. Runs start at one of the last RUN_LOOKBACK values first seen after warm-up, or at
    this batch's first new value (batch_new of them so far, the first at slot count batch_first).
    """
    nd = cat_nd[s]
    count = batch_new
    best = 0.0
    if count > 0.0:
        best = again_score(count, total - batch_first, batch_first - cat_seen_at[s, nd - 1])
    for q in range(nd - 1, max(1, nd - RUN_LOOKBACK) - 1, -1):
        count += 1.0
        if cat_novelty[s, q] > 0.0:
            best = max(best, again_score(count, total - cat_seen_at[s, q], cat_seen_at[s, q] - cat_seen_at[s, q - 1]))
    return best


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.U64_1D, kt.F32_1D, kt.F64_2D, kt.U64_2D, kt.F64_2D, kt.I32_1D, kt.I8_1D,
       kt.F32_2D, kt.F64_2D, kt.F64_2D, kt.U64_1D, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.BOOL), cache=True, _nrt=False)
def learn_params(param_ptr, param_slot, param_num, param_hash, weights, num_stats, cat_hash, cat_count,
                 cat_nd, cat_full, cat_novelty, cat_seen_at, cat_num, cat_last, min_obs, drift_alpha, base_alpha,
                 numeric):
    """Fold one batch into the per-slot statistics (in place). weights float32[n] per line;
    numeric=False learns categorical values only (see score_params). cat_last[s] ends as the slot's
    last value (of any weight)."""
    drift_sd = math.sqrt(drift_alpha / (2.0 - drift_alpha))
    max_cat = cat_hash.shape[1]
    for i in range(param_ptr.shape[0] - 1):
        w = weights[i]
        for j in range(param_ptr[i], param_ptr[i + 1]):
            s = param_slot[j]
            if s < 0:
                continue
            x = param_num[j]
            if numeric and not math.isnan(x):
                _learn_number(num_stats, s, signed_log(x), w, min_obs, drift_alpha, drift_sd, base_alpha)
            if cat_full[s] == 0:
                cat_last[s] = param_hash[j]
            if cat_full[s] == 0 and w > 0.0:
                k = _category_index(cat_hash, cat_nd, s, param_hash[j])
                if k >= 0:
                    cat_count[s, k] += w
                elif cat_nd[s] < max_cat:
                    total = _slot_total(cat_count, cat_nd, s)
                    novelty = 0.0
                    if total >= min_obs and not _near_known_fraction(cat_num, cat_nd, s, x):
                        novelty = surprisal_score(_new_value_log10p(cat_count, cat_nd, s))
                    cat_novelty[s, cat_nd[s]] = novelty
                    cat_seen_at[s, cat_nd[s]] = total
                    cat_num[s, cat_nd[s]] = x
                    cat_hash[s, cat_nd[s]] = param_hash[j]
                    cat_count[s, cat_nd[s]] = w
                    cat_nd[s] += 1
                else:
                    cat_full[s] = 1


@njit(cache=True, _nrt=False)
def _learn_number(st, s, y, w, min_obs, drift_alpha, drift_sd, base_alpha):
    nobs = st[s, N_OBS]
    drifting = False
    if nobs >= min_obs:
        z = _robust_z(st, s, y)
        # The short-term drift means follow every value, whatever its learning weight.
        st[s, ZBAR] += drift_alpha * (min(max(z, -Z_CLIP), Z_CLIP) - st[s, ZBAR])
        st[s, YBAR] += drift_alpha * (_clipped_dev(st, s, y) - st[s, YBAR])
        st[s, N_DRIFT] += 1.0
        spread = _drift_spread(st, s, drift_sd)
        exceeding = st[s, N_DRIFT] >= 2.0 / drift_alpha and abs(st[s, ZBAR] / spread) > CAL_Z
        if exceeding and st[s, IN_DRIFT] == 0.0:
            st[s, EXC_DRIFT] += 1.0
        st[s, IN_DRIFT] = 1.0 if exceeding else 0.0
        drifting = abs(st[s, ZBAR] / spread) > QUIET_Z
        if z > CAL_Z:
            st[s, EXC_HI] += w
        elif z < -CAL_Z:
            st[s, EXC_LO] += w
    if nobs > 0.0:
        rate_d = max(base_alpha, 1.0 / (nobs + 1.0))
        st[s, DIFF2] += rate_d * (min((y - st[s, LAST]) ** 2, 100.0) - st[s, DIFF2])
        st[s, REPEAT] += rate_d * ((1.0 if y == st[s, LAST] else 0.0) - st[s, REPEAT])
    st[s, LAST] = y
    if w <= 0.0:
        return
    slow = 1.0 / DRIFT_SLOWER if drifting else 1.0
    if nobs >= min_obs:
        # Running mean at first, then exponential memory: the spread must be known early.
        rate = slow * max(base_alpha, 1.0 / max(st[s, N_DRIFT], 1.0))
        st[s, ZVAR] += w * rate * (min(st[s, ZBAR] ** 2, Z_CLIP ** 2) - st[s, ZVAR])
    if nobs == 0.0:
        st[s, CENTER] = y
    st[s, N_OBS] = nobs + w
    alpha = slow * w * max(base_alpha, 1.0 / (nobs + w))
    # Until min_obs values are in, take them as they come: the scale is not known yet.
    limit = HUBER_C * max(st[s, SCALE], SCALE_FLOOR) if nobs >= min_obs else np.inf
    dev = y - st[s, CENTER]
    st[s, CENTER] += alpha * min(max(dev, -limit), limit)
    st[s, SCALE] += alpha * (min(abs(dev), limit) - st[s, SCALE])


@kt.entry((kt.I32_1D, kt.I64_1D, kt.I16_1D, kt.U64_1D, kt.I64_1D, kt.I64_1D, kt.I8_1D, kt.I8_1D, kt.U64_2D,
           kt.I32_1D, kt.INT64, kt.INT64, kt.BYTES, kt.I64_1D, kt.I64_1D, kt.U64_2D, kt.I32_1D, kt.I8_1D), cache=True)
def split_keys(template_id, param_ptr, param_pos, param_hash, slots, rows, split_pos, cat_full, cat_hash, cat_nd,
               positions, values_key, buf, param_start, param_end, route_table, route_nd, route_full):
    """(split key of every parameter int64[m] (-1: none), the parameter holding its categorical value
    int64[m] (-1: none)) for tier3_novelty._split_slots: a numeric value with a series row (rows >= 0)
    of a line whose template splits at position p (split_pos, -1: none) gets key (slot x positions + p)
    x values_key + v when the line's parameter at p (its last, should two stand there) has a slot that
    is not full and whose known values (cat_hash[slot, :cat_nd]) hold its hash, v the first such; when
    that slot is full, v is its value's route among the slot's routes (route_kernels: routes not full,
    param_start given) and the key has ROUTE_KEY added. One pass over the lines instead of a (values x
    max_categories) comparison matrix per batch."""
    m = param_pos.shape[0]
    keys = np.full(m, -1, np.int64)
    cat = np.full(m, -1, np.int64)
    spans = param_start.shape[0] == m
    for i in range(template_id.shape[0]):
        t = template_id[i]
        if t < 0:     # numpy's indexing from the end, as the vectorised form it replaces read it
            t += split_pos.shape[0]
        p = split_pos[t]
        if p < 0:
            continue
        c = -1
        for j in range(param_ptr[i], param_ptr[i + 1]):
            if param_pos[j] == p:
                c = j
        if c < 0 or slots[c] < 0:
            continue
        s = slots[c]
        v = -1
        route = 0
        if cat_full[s] == 0:
            for q in range(min(cat_nd[s], cat_hash.shape[1])):
                if cat_hash[s, q] == param_hash[c]:
                    v = q
                    break
        elif spans and route_full[s] == 0:
            h = route_hash(buf, param_start[c], param_end[c])
            v = known_route(route_table, route_nd, s, h) if h != 0 else -1
            route = ROUTE_KEY
        if v < 0:
            continue
        for j in range(param_ptr[i], param_ptr[i + 1]):
            if rows[j] >= 0 and param_pos[j] != p:
                keys[j] = (slots[j] * positions + p) * values_key + v + route
                cat[j] = c
    return keys, cat


@kt.entry((kt.I64_1D, kt.F64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D), cache=True)
def split_view(param_ptr, param_num, rows, split_rows, split_of):
    """A batch's series values with its split copies (tier3_novelty._split_view): per line its own
    parameters (series row rows[j]), then each with a split series (split_rows[j] >= 0) again with
    that row, its categorical parameter split_of[j] -> (ptr int64[n+1], values float64[k], rows
    int64[k], index int64[k]: the batch parameter of each, category int64[k]: -1 for own values)."""
    n = param_ptr.shape[0] - 1
    m = rows.shape[0]
    extra = 0
    for j in range(m):
        if split_rows[j] >= 0:
            extra += 1
    ptr = np.zeros(n + 1, np.int64)
    values = np.empty(m + extra, np.float64)
    view_rows = np.empty(m + extra, np.int64)
    index = np.empty(m + extra, np.int64)
    category = np.full(m + extra, -1, np.int64)
    k = 0
    for i in range(n):
        for j in range(param_ptr[i], param_ptr[i + 1]):
            values[k], view_rows[k], index[k] = param_num[j], rows[j], j
            k += 1
        for j in range(param_ptr[i], param_ptr[i + 1]):
            if split_rows[j] >= 0:
                values[k], view_rows[k], index[k], category[k] = param_num[j], split_rows[j], j, split_of[j]
                k += 1
        ptr[i + 1] = k
    return ptr, values, view_rows, index, category


@kt.entry((kt.I64_1D, kt.I32_1D, kt.I64_1D, kt.F64_1D, kt.I64_1D, kt.I64_1D, kt.INT64), cache=True)
def series_rows(param_ptr, source_id, slots, param_num, known_keys, known_rows, source_bits):
    """Series row of every parameter for series.SeriesBook.rows_of -> (row int64[m]: -1 for a value with
    no series (no slot, not a finite number), ROW_NEW for one whose key (slot << source_bits | the
    line's source) is not among known_keys (sorted, their rows known_rows); key int64[m]). A binary
    search per value in one pass, instead of a dozen numpy passes over the batch's parameters; a key
    met again finds its answer in a small table of the last key seen per SERIES_MEMO bucket (a batch
    holds thousands of values of a few hundred series: most values skip the search)."""
    m = slots.shape[0]
    rows = np.full(m, -1, np.int64)
    keys = np.zeros(m, np.int64)
    size = known_keys.shape[0]
    memo_key = np.zeros(SERIES_MEMO, np.int64)
    memo_row = np.full(SERIES_MEMO, MEMO_EMPTY, np.int64)
    for i in range(param_ptr.shape[0] - 1):
        source = np.int64(source_id[i])
        for j in range(param_ptr[i], param_ptr[i + 1]):
            x = param_num[j]
            if slots[j] < 0 or math.isnan(x) or math.isinf(x):
                continue
            key = (np.int64(slots[j]) << source_bits) | source
            keys[j] = key
            h = (key ^ (key >> source_bits)) & (SERIES_MEMO - 1)   # the slot's low bits mixed with the source
            if memo_row[h] != MEMO_EMPTY and memo_key[h] == key:
                rows[j] = memo_row[h]
                continue
            at = np.searchsorted(known_keys, key)
            rows[j] = known_rows[at] if at < size and known_keys[at] == key else ROW_NEW
            memo_key[h] = key
            memo_row[h] = rows[j]
    return rows, keys


# the categorical judgement, called once per categorical value of score_params, inlined into it (see
# kt.inline_into_callers: about 20% less CPU for score_params, the same results)
kt.inline_into_callers(_value_score)
