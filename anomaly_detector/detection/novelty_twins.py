"""Plain-Python twins of novelty_kernels.py, written with dicts and per-value objects, for the tests.

They restate the same statistics (signed log scale, Huber location/scale, calibrated normal tails,
Good-Turing for unseen values) without arrays, so a slip in the kernels' indexing shows up.
"""
import math

from . import novelty_kernels as K
from .stats_twins import log10_count_upper


class SlotTwin:
    def __init__(self):
        self.n = 0.0
        self.center = 0.0
        self.scale = 0.0
        self.zbar = 0.0
        self.ybar = 0.0
        self.exc_hi = 0.0
        self.exc_lo = 0.0
        self.exc_drift = 0.0
        self.n_drift = 0.0
        self.in_drift = False
        self.zvar = 0.0
        self.last = 0.0
        self.diff2 = 0.0
        self.repeat = 0.0
        self.values = {}   # hash -> weight, insertion ordered
        self.novelty = {}  # hash -> surprise when first seen
        self.seen_at = {}  # hash -> the slot's total count when first seen
        self.nums = {}     # hash -> its number (nan when not one)
        self.last_value = 0  # hash of the slot's last value (0: none yet)
        self.full = False

    def z(self, y):
        return (y - self.center) / (1.2533 * max(self.scale, K.SCALE_FLOOR))

    def dev(self, y):
        limit = K.DEV_CLIP * 1.2533 * max(self.scale, K.SCALE_FLOOR)
        return max(-limit, min(limit, y - self.center))


def _signed_log(x):
    return math.copysign(math.log1p(abs(x)), x)


def _surprise(log10p_nominal, exceedances, n, gate=True):
    expected = n * K.CAL_P
    inflation = 1.0
    if exceedances > expected and log10_count_upper(exceedances, expected, 1.0) < K.CAL_SIGNIFICANT:
        inflation = exceedances / expected
    if gate and inflation > K.GATE_INFLATION:
        return 0.0
    log10p = min(log10p_nominal + math.log10(inflation), 0.0)
    return min(100.0, max(0.0, -10.0 * log10p))


def _two_sided(z):
    return math.log10(max(math.erfc(abs(z) / math.sqrt(2.0)), 1e-300))


def young_score(novelty, seen, lines_since, lines_before, succession=True):
    if novelty <= 0.0 or seen < 1.0 or (succession and seen >= K.SUCCESSION_SHARE * lines_since):
        return novelty
    return max(novelty, again_score_py(seen, lines_since, lines_before))


def again_score_py(seen, lines_since, lines_before):
    """Twin of novelty_kernels.again_score."""
    rate = K.NEW_RATE_BOUND / max(lines_before, 1.0)
    return min(100.0, max(0.0, -10.0 * log10_count_upper(seen, max(lines_since, 1.0) * rate, 1.0)))


def score_lines(lines, slots, min_obs, drift_alpha, drift_min_shift, numeric=True):
    """lines: [[(slot, number or nan, hash), ...], ...] -> [(score, param index in line, kind)]."""
    zbar = {s: slot.zbar for s, slot in slots.items()}
    ybar = {s: slot.ybar for s, slot in slots.items()}
    extra = {}   # slot -> its lines so far in this batch
    run = {}     # slot -> [values new to it so far in this batch, its count at the first]
    young = {}   # (slot, hash) -> [novelty, slot lines before first sight, sightings]
    last = {s: slot.last_value for s, slot in slots.items()}
    sd = math.sqrt(drift_alpha / (2.0 - drift_alpha))
    out = []
    for params in lines:
        best = (0.0, -1, K.KIND_NONE)
        for j, (s, x, h) in enumerate(params):
            slot = slots.get(s)
            if slot is None:
                continue
            candidates = []
            scatters = (slot.diff2 >= K.MIN_VON_NEUMANN * 2.0 * (1.2533 * max(slot.scale, K.SCALE_FLOOR)) ** 2
                        and slot.repeat <= K.MAX_REPEAT_SHARE)
            if numeric and not math.isnan(x) and slot.n >= min_obs and slot.full and scatters:
                z = slot.z(_signed_log(x))
                if abs(z) > K.QUIET_Z:
                    score = _surprise(_two_sided(z), slot.exc_hi if z > 0 else slot.exc_lo, slot.n)
                    candidates.append((min(score, 10.0 * math.log10(slot.n + 1.0)), K.KIND_OUTLIER))
                zbar[s] += drift_alpha * (max(-K.Z_CLIP, min(K.Z_CLIP, z)) - zbar[s])
                ybar[s] += drift_alpha * (slot.dev(_signed_log(x)) - ybar[s])
                spread = math.sqrt(max(slot.zvar, sd * sd))
                large = ybar[s] >= drift_min_shift and zbar[s] > 0
                if slot.n_drift >= 2.0 / drift_alpha and large and abs(zbar[s]) > K.QUIET_Z * spread:
                    candidates.append((_surprise(_two_sided(zbar[s] / spread), slot.exc_drift,
                                                 slot.n_drift * drift_alpha / 2.0, gate=False), K.KIND_DRIFT))
            if not slot.full and slot.values:
                candidates.append((_value_score(slot, s, h, x, extra, young, min_obs, last[s] == h, run),
                                   K.KIND_NEW_VALUE))
            if not slot.full:
                last[s] = h
            for score, kind in candidates:
                if score > best[0]:
                    best = (score, j, kind)
        out.append(best)
    return out


def _value_score(slot, s, h, x, extra, young, min_obs, after_itself, run):
    learned = sum(slot.values.values())
    total = learned + extra.get(s, 0.0)
    extra[s] = extra.get(s, 0.0) + 1.0
    state = young.get((s, h))
    if state is None:
        order = list(slot.values)
        if h in slot.values:
            if slot.values[h] >= min_obs:
                return 0.0
            earlier = order[:order.index(h)]
            state = [slot.novelty[h], slot.seen_at[h], slot.values[h]]
        elif _near_known_fraction(slot, x):
            return 0.0
        elif learned >= min_obs:
            earlier = order
            state = [_new_value_surprise(slot), total, 0.0]
            batch_new, batch_first = run.get(s, (0.0, 0.0))
            if not _next_to_any(slot, x):
                state[0] = max(state[0], run_score_py(slot, batch_new, batch_first, total))
            run[s] = (batch_new + 1.0, batch_first if batch_new else total)
        else:
            return 0.0
        late = sum(1 for v in earlier if slot.novelty[v] > 0)
        counting = (not math.isnan(x) and x == math.floor(x)
                    and any(abs(v - x) <= 1 for o, v in slot.nums.items() if o != h))
        known = [v for o, v in slot.nums.items() if o != h and not math.isnan(v)]
        reach = max(1.0, K.BEYOND_SPAN_SHARE * (max(known) - min(known))) if known else 0.0
        far = bool(known) and not math.isnan(x) and (x > max(known) + reach or x < min(known) - reach)
        state.append(counting or (late >= K.OPEN_SLOT_VALUES and state[0] < K.CLOSED_SLOT_NOVELTY and not far))
        young[(s, h)] = state
    if state[3]:
        score = state[0]
    else:
        score = young_score(state[0], state[2], total - state[1], state[1], succession=after_itself)
    state[2] += 1.0
    return score


def _next_to_any(slot, x):
    return not math.isnan(x) and x == math.floor(x) and any(abs(v - x) <= 1 for v in slot.nums.values())


def run_score_py(slot, batch_new, batch_first, total):
    """Twin of novelty_kernels.run_score over a slot's values in first-sight order."""
    seen = [slot.seen_at[v] for v in slot.values]
    late = [slot.novelty[v] > 0 for v in slot.values]
    nd = len(seen)
    best = again_score_py(batch_new, total - batch_first, batch_first - seen[-1]) if batch_new > 0 else 0.0
    count = batch_new
    for q in range(nd - 1, max(1, nd - K.RUN_LOOKBACK) - 1, -1):
        count += 1.0
        if late[q]:
            best = max(best, again_score_py(count, total - seen[q], seen[q] - seen[q - 1]))
    return best


def _near_known_fraction(slot, x):
    return (not math.isnan(x) and x != math.floor(x)
            and any(not math.isnan(v) and abs(v - x) <= K.NEAR_SHARE * max(abs(v), abs(x)) for v in slot.nums.values()))


def _new_value_surprise(slot):
    once = sum(1 for c in slot.values.values() if c < 1.5)
    total = sum(slot.values.values())
    return min(100.0, max(0.0, -10.0 * math.log10((once + 0.5) / (total + 1.0))))


def learn_lines(lines, weights, slots, min_obs, drift_alpha, base_alpha, max_values, numeric=True):
    sd = math.sqrt(drift_alpha / (2.0 - drift_alpha))
    for params, w in zip(lines, weights):
        for s, x, h in params:
            slot = slots.setdefault(s, SlotTwin())
            if numeric and not math.isnan(x):
                _learn_number(slot, _signed_log(x), w, min_obs, drift_alpha, sd, base_alpha)
            if not slot.full:
                slot.last_value = h
            if not slot.full and w > 0:
                if h in slot.values:
                    slot.values[h] += w
                elif len(slot.values) < max_values:
                    known = slot.values and sum(slot.values.values()) >= min_obs
                    slot.novelty[h] = _new_value_surprise(slot) if known and not _near_known_fraction(slot, x) else 0.0
                    slot.seen_at[h] = sum(slot.values.values())
                    slot.nums[h] = x
                    slot.values[h] = w
                else:
                    slot.full = True


def _learn_number(slot, y, w, min_obs, drift_alpha, sd, base_alpha):
    drifting = False
    if slot.n >= min_obs:
        z = slot.z(y)
        slot.zbar += drift_alpha * (max(-K.Z_CLIP, min(K.Z_CLIP, z)) - slot.zbar)
        slot.ybar += drift_alpha * (slot.dev(y) - slot.ybar)
        slot.n_drift += 1
        spread = math.sqrt(max(slot.zvar, sd * sd))
        exceeding = slot.n_drift >= 2.0 / drift_alpha and abs(slot.zbar / spread) > K.CAL_Z
        if exceeding and not slot.in_drift:
            slot.exc_drift += 1
        slot.in_drift = exceeding
        drifting = abs(slot.zbar / spread) > K.QUIET_Z
        if z > K.CAL_Z:
            slot.exc_hi += w
        elif z < -K.CAL_Z:
            slot.exc_lo += w
    if slot.n > 0:
        rate_d = max(base_alpha, 1.0 / (slot.n + 1.0))
        slot.diff2 += rate_d * (min((y - slot.last) ** 2, 100.0) - slot.diff2)
        slot.repeat += rate_d * ((1.0 if y == slot.last else 0.0) - slot.repeat)
    slot.last = y
    if w <= 0:
        return
    slow = 1.0 / K.DRIFT_SLOWER if drifting else 1.0
    if slot.n >= min_obs:
        rate = slow * max(base_alpha, 1.0 / max(slot.n_drift, 1.0))
        slot.zvar += w * rate * (min(slot.zbar ** 2, K.Z_CLIP ** 2) - slot.zvar)
    if slot.n == 0:
        slot.center = y
    before = slot.n
    slot.n += w
    alpha = slow * w * max(base_alpha, 1.0 / (before + w))
    limit = K.HUBER_C * max(slot.scale, K.SCALE_FLOOR) if before >= min_obs else float("inf")
    dev = y - slot.center
    slot.center += alpha * max(-limit, min(limit, dev))
    slot.scale += alpha * (min(abs(dev), limit) - slot.scale)


def split_keys(lines, split_pos, cat_full, known_values, positions, values_key, known_routes=None, route_full=()):
    """Twin of novelty_kernels.split_keys over lines of (template, [(position, hash, slot, row, route)]):
    per line, per parameter (split key, index in the line of its categorical parameter), (-1, -1)
    for none. known_values: slot -> list of its known hashes; known_routes (None: no value spans) slot
    -> list of its routes' hashes, route_full the slots whose routes are full; route is the value's
    route hash (routes.route_hash, 0: none)."""
    out = []
    for tid, params in lines:
        pos = split_pos[tid]
        where = [k for k, q in enumerate(params) if q[0] == pos] if pos >= 0 else []
        keyed = [(-1, -1)] * len(params)
        if where:
            c = where[-1]
            _, h, slot, _, route = params[c]
            v, offset = -1, 0
            if slot >= 0 and not cat_full[slot]:
                known = known_values.get(slot, [])
                v = known.index(h) if h in known else -1
            elif slot >= 0 and known_routes is not None and slot not in route_full:
                known = known_routes.get(slot, [])
                v, offset = (known.index(route) if route and route in known else -1), K.ROUTE_KEY
            if v >= 0:
                keyed = [((s * positions + pos) * values_key + v + offset, c) if row >= 0 and p != pos else (-1, -1)
                         for p, _, s, row, _ in params]
        out.append(keyed)
    return out


def split_view(lines):
    """Twin of novelty_kernels.split_view over lines of [(value, row, split row, category)]: per
    line, [(value, row, index in the line, category)] of its own values, then its split copies."""
    return [[(x, row, k, -1) for k, (x, row, _, _) in enumerate(params)]
            + [(x, split_row, k, cat) for k, (x, _, split_row, cat) in enumerate(params) if split_row >= 0]
            for params in lines]


def series_rows(lines, known, source_bits):
    """Twin of novelty_kernels.series_rows over lines of (source, [(slot, value)]) and known: key ->
    row: per line, per parameter, (row, key): (-1, 0) for no series, (ROW_NEW, key) for an unknown key."""
    out = []
    for source, params in lines:
        line = []
        for slot, x in params:
            if slot < 0 or not math.isfinite(x):
                line.append((-1, 0))
                continue
            key = (slot << source_bits) | source
            line.append((known.get(key, K.ROW_NEW), key))
        out.append(line)
    return out
