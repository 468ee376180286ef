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
        self.full = False

    def z(self, y):
        return (y - self.center) / (1.2533 * max(self.scale, K.SCALE_FLOOR))


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


def score_lines(lines, slots, min_obs, drift_alpha):
    """lines: [[(slot, number or nan, hash), ...], ...] -> [(score, param index in line, kind)]."""
    zbar = {s: slot.zbar for s, slot in slots.items()}
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
            if not math.isnan(x) and slot.n >= min_obs and slot.full and scatters:
                z = slot.z(_signed_log(x))
                if abs(z) > K.QUIET_Z:
                    score = _surprise(_two_sided(z), slot.exc_hi if z > 0 else slot.exc_lo, slot.n)
                    candidates.append((min(score, 10.0 * math.log10(slot.n + 1.0)), K.KIND_OUTLIER))
                zbar[s] += drift_alpha * (max(-K.Z_CLIP, min(K.Z_CLIP, z)) - zbar[s])
                spread = math.sqrt(max(slot.zvar, sd * sd))
                if slot.n_drift >= 2.0 / drift_alpha and abs(zbar[s]) > K.QUIET_Z * spread:
                    candidates.append((_surprise(_two_sided(zbar[s] / spread), slot.exc_drift,
                                                 slot.n_drift * drift_alpha / 2.0, gate=False), K.KIND_DRIFT))
            if not slot.full and slot.values:
                if h not in slot.values and sum(slot.values.values()) >= min_obs:
                    candidates.append((_new_value_surprise(slot), K.KIND_NEW_VALUE))
                elif h in slot.values and slot.values[h] < min_obs:
                    candidates.append((slot.novelty[h], K.KIND_NEW_VALUE))
            for score, kind in candidates:
                if score > best[0]:
                    best = (score, j, kind)
        out.append(best)
    return out


def _new_value_surprise(slot):
    once = sum(1 for c in slot.values.values() if c < 1.5)
    total = sum(slot.values.values())
    return min(100.0, max(0.0, -10.0 * math.log10((once + 0.5) / (total + 1.0))))


def learn_lines(lines, weights, slots, min_obs, drift_alpha, base_alpha, max_values):
    sd = math.sqrt(drift_alpha / (2.0 - drift_alpha))
    for params, w in zip(lines, weights):
        for s, x, h in params:
            slot = slots.setdefault(s, SlotTwin())
            if not math.isnan(x):
                _learn_number(slot, _signed_log(x), w, min_obs, drift_alpha, sd, base_alpha)
            if not slot.full and w > 0:
                if h in slot.values:
                    slot.values[h] += w
                elif len(slot.values) < max_values:
                    known = slot.values and sum(slot.values.values()) >= min_obs
                    slot.novelty[h] = _new_value_surprise(slot) if known else 0.0
                    slot.values[h] = w
                else:
                    slot.full = True


def _learn_number(slot, y, w, min_obs, drift_alpha, sd, base_alpha):
    if slot.n >= min_obs:
        z = slot.z(y)
        slot.zbar += drift_alpha * (max(-K.Z_CLIP, min(K.Z_CLIP, z)) - slot.zbar)
        slot.n_drift += 1
        spread = math.sqrt(max(slot.zvar, sd * sd))
        exceeding = slot.n_drift >= 2.0 / drift_alpha and abs(slot.zbar / spread) > K.CAL_Z
        if exceeding and not slot.in_drift:
            slot.exc_drift += 1
        slot.in_drift = exceeding
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
    if slot.n >= min_obs:
        rate = max(base_alpha, 1.0 / max(slot.n_drift, 1.0))
        slot.zvar += w * rate * (min(slot.zbar ** 2, K.Z_CLIP ** 2) - slot.zvar)
    if slot.n == 0:
        slot.center = y
    before = slot.n
    slot.n += w
    alpha = w * max(base_alpha, 1.0 / (before + w))
    limit = K.HUBER_C * max(slot.scale, K.SCALE_FLOOR) if before >= min_obs else float("inf")
    dev = y - slot.center
    slot.center += alpha * max(-limit, min(limit, dev))
    slot.scale += alpha * (min(abs(dev), limit) - slot.scale)
