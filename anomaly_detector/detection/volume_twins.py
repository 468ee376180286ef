"""Plain numpy twins of volume_kernels.py, for the tests: closing a bucket key-array by key-array.

This is how tier2_volume.py closed buckets before the kernels; the tests run both on the same
random baselines and compare every array.
"""
import numpy as np

from . import volume_kernels as VK
from .stats_twins import count_lower_score
from .tier2_volume import poisson_lower_bound  # volume_kernels.poisson_low's reference, tested on exact values


def _hour_slot(table, keys, slot):
    return table[keys, :, slot]


def shrunk_ratio(slots, buckets_per_period, prior_periods):
    observed, expected, buckets = slots[..., 0], slots[..., 1], slots[..., 2]
    ratio = np.where(expected > 0, observed / np.maximum(expected, 1e-12), 1.0)
    periods = buckets / buckets_per_period
    return np.clip((periods * ratio + prior_periods) / (periods + prior_periods), 0.05, 20.0)


def season_factors(hod, dow, n, hour, day, per_hour, per_day, prior_hour, prior_day):
    keys = np.arange(n)
    return (shrunk_ratio(_hour_slot(hod, keys, hour), per_hour, prior_hour)
            * shrunk_ratio(_hour_slot(dow, keys, day), per_day, prior_day))


def season_update(hod, dow, hour, day, observed, expected, weight, age, min_age, keep):
    seen = np.flatnonzero(age >= min_age)
    hod *= keep
    dow *= keep
    for table, slot in ((hod, hour), (dow, day)):
        table[seen, 0, slot] += weight[seen] * observed[seen]
        table[seen, 1, slot] += weight[seen] * expected[seen]
        table[seen, 2, slot] += weight[seen]


def close_keys(b, season, slot, windows, min_history, learning_rate, slow_divisor, clip, min_rel, sparse_fraction,
               min_ratio=None, hour_rate=None):
    """b: dict of the KeyBaseline arrays (changed in place) -> (best score, best window, window high) per key
    (window high: a busy key's window at least min_ratio times its forecast, and its usual count at this
    hour (hour_rate, < 0: unknown hour, never high), at the low end of its Poisson error; none without
    min_ratio)."""
    ring = b["obs_win"].shape[1]
    expected = np.where(b["age"] >= min_history, b["level"] * season, 0.0)
    for k, w in enumerate(windows):
        leaving = (slot - w) % ring
        b["obs_sum"][:, k] += b["open_raw"] - b["obs_win"][:, leaving]
        b["exp_sum"][:, k] += expected - b["exp_win"][:, leaving]
    b["obs_win"][:, slot] = b["open_raw"]
    b["exp_win"][:, slot] = expected
    best = np.zeros(b["level"].size)
    best_window = np.ones(b["level"].size, np.int64)
    disp = np.maximum(b["phi"], 1.0)
    disp = np.where(b["nonzero"] < sparse_fraction, np.maximum(disp, b["clump"]), disp)
    low = np.zeros(b["level"].size, bool)
    high = np.zeros(b["level"].size, bool)
    for i in np.flatnonzero(b["age"] >= min_history + ring):
        for k, w in enumerate(windows):
            s = count_lower_score(b["obs_sum"][i, k], b["exp_sum"][i, k], disp[i], b["rel2"][i])
            if s > best[i]:
                best[i], best_window[i] = s, w
        obs, exp = b["obs_sum"][i], b["exp_sum"][i]
        ratio2 = np.log((obs + 0.5) / (exp + 0.5)) ** 2
        low[i] = np.any((obs < exp) & (ratio2 > VK.USUAL_SIGMAS ** 2 * (b["rel2"][i] + disp[i] / np.maximum(exp, 0.5))))
        if min_ratio is not None and b["nonzero"][i] >= sparse_fraction and hour_rate[i] >= 0:
            exp = np.maximum(exp, np.asarray(windows) * hour_rate[i])
            high[i] = np.any((exp > 0) & (poisson_lower_bound(obs) >= min_ratio * exp))
    _learn(b, season, learning_rate, slow_divisor, clip, min_rel, low | high)
    return best, best_window, high


def _learn(b, season, learning_rate, slow_divisor, clip, min_rel, window_low):
    age, mu, phi = b["age"], b["level"].copy(), b["phi"]
    seen = age > 0
    new = (age == 0) & (b["open_raw"] > 0)
    s = np.maximum(season, 1e-6)
    x = b["open_learn"] / s
    sd = np.sqrt(np.maximum(mu * phi, 1.0))
    x_clipped = np.minimum(np.maximum(x, mu - clip * sd), mu + clip * sd)
    alpha = np.maximum(learning_rate, 1.0 / (age + 1.0))
    slow = np.maximum(learning_rate / slow_divisor, 1.0 / (age + 1.0))
    log_ratio2 = np.log((x + 0.5) / (mu + 0.5)) ** 2
    unusual = window_low | (log_ratio2 > VK.USUAL_SIGMAS ** 2 * (b["rel2"] + np.maximum(phi, 1.0) / np.maximum(mu, 0.5)))
    rate = np.where(unusual, slow, alpha)
    cap = np.where(unusual, VK.USUAL_SIGMAS ** 2, clip ** 2)   # see volume_kernels._learn_key
    resid2 = np.minimum((x_clipped - mu) ** 2 / np.maximum(mu, 1e-3), cap * np.maximum(phi, 1.0))
    b["phi"] = phi = np.where(seen, phi + rate * (resid2 - phi), phi)
    busy = seen & (mu >= 1.0)
    target = log_ratio2 - phi / np.maximum(mu, 0.5)
    target = np.minimum(np.maximum(target, min_rel ** 2), cap * b["rel2"])
    b["rel2"] = np.where(busy, b["rel2"] + rate * (target - b["rel2"]), b["rel2"])
    raw = b["open_raw"] / s
    hit = raw > 0
    b["nonzero"] = np.where(seen, b["nonzero"] + rate * (hit - b["nonzero"]), b["nonzero"])
    b["clump"] = np.where(seen & hit, b["clump"] + rate * (np.maximum(raw, 1.0) - b["clump"]), b["clump"])
    b["level"] = np.where(seen, mu + np.where(unusual, slow, alpha) * (x_clipped - mu), np.where(new, x, mu))
    b["total"] = b["total"] + np.where(seen | new, x, 0.0)
    b["age"] = age + (seen | new).astype(np.int64)


def share_factors(hod, dow, n, hour, day, per_hour, per_day, prior_hour, prior_day):
    """Each template's share factor: its slot's odds over its odds in all slots, shrunk towards 1."""
    factors = []
    for table, slot, per, prior in ((hod, hour, per_hour, prior_hour), (dow, day, per_day, prior_day)):
        count, others = table[:n, 0].sum(axis=1), table[:n, 1].sum(axis=1)
        known = (count > 0) & (others > 0)
        slots = table[:n, :, slot].copy()
        slots[:, 1] *= np.where(known, count / np.where(known, others, 1.0), 1.0)
        factors.append(np.where(known, shrunk_ratio(slots, per, prior), 1.0))
    return factors[0] * factors[1]


def learn_shares(b, t_learn, src_learn, template_source, share_season, learning_rate, slow_divisor, clip, min_rel):
    """b: dict with age, phi, share_num, share_den, share_rel2 (changed in place) -> the rest of each
    template's source's lines (0 for templates not seen yet)."""
    age = b["age"]
    seen = age > 0
    t = t_learn
    s = np.maximum(share_season, 1e-6)
    others = np.maximum(src_learn[template_source] - t, 0.0)
    alpha = np.maximum(learning_rate, 1.0 / (age + 1.0))
    judged = seen & (b["share_den"] > 0) & (others > 0)
    q = np.where(judged, b["share_num"] / np.where(judged, b["share_den"], 1.0), 0.0) * s
    e = q / (1.0 + q) * (t + others)
    disp = np.maximum(b["phi"], 1.0)
    log_ratio2 = np.log((t + 0.5) / (e + 0.5)) ** 2
    unusual = judged & (log_ratio2 > VK.USUAL_SIGMAS ** 2 * (b["share_rel2"] + disp / np.maximum(e, 0.5)))
    rate = np.where(unusual, np.maximum(learning_rate / slow_divisor, 1.0 / (age + 1.0)), alpha)
    target = np.minimum(np.maximum(log_ratio2 - disp / np.maximum(e, 0.5), min_rel ** 2), clip ** 2 * b["share_rel2"])
    busy = judged & (e >= 1.0)
    b["share_rel2"] = np.where(busy, b["share_rel2"] + rate * (target - b["share_rel2"]), b["share_rel2"])
    b["share_num"] = np.where(seen, b["share_num"] + rate * (t / s - b["share_num"]), b["share_num"])
    b["share_den"] = np.where(seen, b["share_den"] + rate * (others - b["share_den"]), b["share_den"])
    return np.where(seen, others, 0.0)


def recent_close(r, counts, factors, judge, disp, bucket, windows, rate, slow_rate, usual_sigmas, min_rel2,
                 min_lines):
    """r: dict of the RecentLevel arrays (obs, season, win_obs, win_season, ref_obs, ref_season, filled,
    rel2; changed in place) -> (best score, best window) per key, as volume_kernels.recent_close."""
    n, ring = r["obs"].shape
    c = np.zeros(n)
    c[: counts.size] = counts
    f = np.zeros(n)
    f[: factors.size] = factors
    slot = bucket % ring
    for k, w in enumerate(windows):
        leaving = (bucket - w) % ring
        r["win_obs"][:, k] += c - r["obs"][:, leaving]
        r["win_season"][:, k] += f - r["season"][:, leaving]
    entering = (bucket - windows[-1]) % ring
    r["ref_obs"] += r["obs"][:, entering] - r["obs"][:, slot]
    r["ref_season"] += r["season"][:, entering] - r["season"][:, slot]
    r["obs"][:, slot] = c
    r["season"][:, slot] = f
    r["filled"][:] = np.minimum(r["filled"] + 1, ring)
    d = np.ones(n)
    d[: disp.size] = np.maximum(disp, 1.0)
    j = np.zeros(n, bool)
    j[: judge.size] = judge
    lines = r["ref_obs"]
    judged = j & (r["filled"] >= ring) & (lines >= min_lines)
    level = lines / np.maximum(r["ref_season"], 1e-9)
    r2 = r["rel2"] + d / np.maximum(lines, 1.0)
    best = np.zeros(n)
    best_window = np.full(n, windows[-1], np.int64)
    for k, w in enumerate(windows):
        o, e = r["win_obs"][:, k], level * r["win_season"][:, k]
        for i in np.flatnonzero(judged & (e - o > 2.0 * np.sqrt(d * e))):
            s = count_lower_score(o[i], e[i], d[i], r2[i])
            if s > best[i]:
                best[i], best_window[i] = s, w
    on = judged & (e >= 1.0)
    log_ratio2 = np.log((o + 0.5) / (e + 0.5)) ** 2
    noise = d / np.maximum(e, 1.0) + d / np.maximum(lines, 1.0)
    unusual = log_ratio2 > usual_sigmas ** 2 * (r["rel2"] + noise)
    target = np.minimum(np.maximum(log_ratio2 - noise, min_rel2), usual_sigmas ** 2 * r["rel2"])
    r["rel2"][:] = np.where(on, r["rel2"] + np.where(unusual, slow_rate, rate) * (target - r["rel2"]), r["rel2"])
    return best, best_window


def season_weights(raw, learned, expected, min_ratio, anomalous_share):
    """0 where a bucket far above `expected` was mostly anomalies, else 1 (volume_kernels._season_weight)."""
    anomalous = learned < (1.0 - anomalous_share) * raw
    return np.where(anomalous & (raw - 3.0 * np.sqrt(raw) >= min_ratio * expected), 0.0, 1.0)


def close_base(b, hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, slot, windows, min_history,
               learning_rate, slow_divisor, clip, min_rel, sparse_fraction, min_ratio, anomalous_share, keep):
    """As volume_kernels.close_base, step by step as tier2_volume closed a key set before it: b as for
    close_keys, hod and dow changed in place -> (season, weight, best, best window)."""
    n = b["level"].size
    season = season_factors(hod, dow, n, hour, day, per_hour, per_day, prior_hour, prior_day)
    weight = season_weights(b["open_raw"], b["open_learn"], b["level"] * season, min_ratio, anomalous_share)
    seen = hod[:n, 2, hour]
    known = seen >= VK.HOUR_MIN_SHARE * per_hour
    hour_rate = np.where(known, hod[:n, 0, hour] / np.where(known, seen, 1.0), -1.0)
    best, best_window, high = close_keys(b, season, slot, windows, min_history, learning_rate, slow_divisor, clip,
                                         min_rel, sparse_fraction, min_ratio, hour_rate)
    weight = np.where(high, 0.0, weight)
    season_update(hod, dow, hour, day, b["open_learn"], b["level"], weight, b["age"], min_history, keep)
    return season, weight, best, best_window


def close_shares(b, hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, src_raw, src_learn,
                 template_source, learning_rate, slow_divisor, clip, min_rel, min_ratio, anomalous_share,
                 min_history, keep):
    """As volume_kernels.close_shares: b with open_raw, open_learn, age, phi, share_num, share_den,
    share_rel2 (changed in place), hod and dow changed in place -> (share season, weight, others)."""
    n = b["open_learn"].size
    factor = share_factors(hod, dow, n, hour, day, per_hour, per_day, prior_hour, prior_day)
    odds = b["share_num"] / np.where(b["share_den"] > 0, b["share_den"], 1.0) * factor
    lines = np.maximum(src_raw[template_source[:n]], b["open_raw"])
    weight = season_weights(b["open_raw"], b["open_learn"], odds / (1.0 + odds) * lines, min_ratio, anomalous_share)
    others = learn_shares(b, b["open_learn"], src_learn, template_source[:n], factor, learning_rate, slow_divisor,
                          clip, min_rel)
    season_update(hod, dow, hour, day, b["open_learn"], others, weight, np.where(others > 0, b["age"], 0),
                  min_history, keep)
    return factor, weight, others


def earlier_counts(codes, per_pair, obs_win, open_raw, open_bucket, window):
    """As volume_kernels.earlier_counts, with a sorted search per bucket back."""
    ring = obs_win.shape[1]
    key, bucket = codes >> 40, codes & ((1 << 40) - 1)
    earlier = np.zeros(codes.size)
    for back in range(1, window):
        before = bucket - back
        at = np.minimum(np.searchsorted(codes, codes - back), codes.size - 1)
        earlier += np.where(codes[at] == codes - back, per_pair[at], 0)
        closed = (before < open_bucket) & (before >= open_bucket - ring)
        earlier += np.where(closed, obs_win[key, before % ring], 0.0)
        earlier += np.where(before == open_bucket, open_raw[key], 0.0)
    return earlier


def count_bucket(templates, sources, weights, lo, hi, t, s, values, v_weights, v_lo, v_hi, totals, t_weights, t_lo,
                 t_hi, v):
    """As volume_kernels.count_bucket, with np.bincount per key set as KeyBaseline.count: t, s, v dicts with
    open_raw and open_learn (changed in place)."""
    for keys, w, a, b, base in ((templates, weights, lo, hi, t), (sources, weights, lo, hi, s),
                                (values, v_weights, v_lo, v_hi, v), (totals, t_weights, t_lo, t_hi, v)):
        n = base["open_raw"].size
        base["open_raw"] += np.bincount(keys[a:b], minlength=n)[:n]
        base["open_learn"] += np.bincount(keys[a:b], weights=w[a:b], minlength=n)[:n]
