"""numba kernels of tier 2: closing one event-time bucket for every key of a KeyBaseline at once.

tier2_volume.py owns the arrays and calls these once per bucket (close_bucket: every key set, templates,
sources, value keys, their shares and the recent level, in one call; count_bucket counts a bucket's lines
in), or once for a run of empty buckets (close_quiet_run: the same kernels, bucket after bucket, a sparse
log's quiet minutes); volume_twins.py restates them
with numpy for the tests (tests/unit/test_tier2_quiet_run.py compares a run with closing one by one). Closing a bucket pushes it into
the drop windows, scores drops over those windows, then learns the bucket into level, dispersion,
forecast error and shape, and finally into the seasonal tables.
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

from .stats_kernels import count_lower_score

USUAL_SIGMAS = 3.0   # a bucket this far off its forecast (log ratio against its spread) is unusual
# An hour of day is known for a key once its hour table has seen it for this share of an hour's buckets
# (tier2_volume.HOUR_RATE_MIN_SHARE).
HOUR_MIN_SHARE = 0.5


@kt.entry((kt.F64_3D, kt.F64_3D, kt.I64_1D, kt.I64_1D_RO, kt.I64_1D_RO, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64,
       kt.F64_1D), cache=True, _nrt=False)
def season_factors(hod, dow, keys, hours, days, per_hour, per_day, prior_hour, prior_day, out):
    """out[i] = the hour-of-day times day-of-week factor of key keys[i] at hours[i], days[i]
    (see tier2_volume.Seasonality)."""
    for i in range(out.shape[0]):
        out[i] = _factor(hod, dow, keys[i], hours[i], days[i], per_hour, per_day, prior_hour, prior_day)


@njit(cache=True, _nrt=False)
def _factor(hod, dow, k, h, d, per_hour, per_day, prior_hour, prior_day):
    """Key k's hour-of-day factor at hour h times its day-of-week factor at day d, each shrunk towards 1."""
    return (_shrunk(hod[k, 0, h], hod[k, 1, h], hod[k, 2, h], per_hour, prior_hour)
            * _shrunk(dow[k, 0, d], dow[k, 1, d], dow[k, 2, d], per_day, prior_day))


@njit(cache=True, _nrt=False)
def _dispersion(phi, nonzero, clump, i, sparse_fraction):
    """Key i's variance/mean in count tests (tier2_volume._dispersion): at least Poisson, and for a
    sparse key at least its clump size."""
    disp = max(phi[i], 1.0)
    return max(disp, clump[i]) if nonzero[i] < sparse_fraction else disp


@njit(cache=True, _nrt=False)
def _shrunk(observed, expected, buckets, per_period, prior):
    ratio = observed / max(expected, 1e-12) if expected > 0 else 1.0
    periods = buckets / per_period
    return min(max((periods * ratio + prior) / (periods + prior), 0.05), 20.0)


@kt.entry((kt.F64_3D, kt.F64_3D, kt.INT64, kt.INT64, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.INT64, kt.FLOAT64), cache=True, _nrt=False)
def season_update(hod, dow, hour, day, observed, expected, weight, age, min_age, keep):
    """Decay both tables by keep, then add the bucket of every key seen for min_age buckets (a
    younger key's level has not settled: its ratios would teach a season that is not there), with
    weight[i] (an unusual bucket, a spike or a drop, weighs little: it must not become the hour's)."""
    for i in range(hod.shape[0]):
        for c in range(3):
            for h in range(24):
                hod[i, c, h] *= keep
            for d in range(7):
                dow[i, c, d] *= keep
        if i < age.shape[0] and age[i] >= min_age:
            w = weight[i]
            hod[i, 0, hour] += w * observed[i]
            hod[i, 1, hour] += w * expected[i]
            hod[i, 2, hour] += w
            dow[i, 0, day] += w * observed[i]
            dow[i, 1, day] += w * expected[i]
            dow[i, 2, day] += w


@kt.entry((kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.F64_2D,
       kt.F64_2D, kt.F64_2D, kt.F64_2D, kt.F64_1D, kt.INT64, kt.I64_1D, kt.INT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64,
       kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.F64_1D, kt.F64_1D, kt.F32_1D, kt.I64_1D), cache=True, _nrt=False)
def close_keys(level, phi, rel2, nonzero, clump, total, age, open_raw, open_learn, obs_win, exp_win, obs_sum,
               exp_sum, season, slot, windows, min_history, learning_rate, slow_divisor, clip, min_rel,
               sparse_fraction, min_ratio, hour_rate, weight, best, best_window):
    """Close the open bucket for every key: drop scores into best/best_window, then learn it. A busy key
    whose bucket ends a window high by a spike's size (_window_high, against at least its usual count per
    bucket at this hour, hour_rate; < 0 where the hour is not known yet) gets season weight[i] 0."""
    ring = obs_win.shape[1]
    for i in range(level.shape[0]):
        expected = level[i] * season[i] if age[i] >= min_history else 0.0
        for k in range(windows.shape[0]):
            leaving = (slot - windows[k]) % ring
            obs_sum[i, k] += open_raw[i] - obs_win[i, leaving]
            exp_sum[i, k] += expected - exp_win[i, leaving]
        obs_win[i, slot] = open_raw[i]
        exp_win[i, slot] = expected
        best[i] = 0.0
        best_window[i] = 1
        low = False
        high = False
        if age[i] >= min_history + ring:
            disp = _dispersion(phi, nonzero, clump, i, sparse_fraction)
            for k in range(windows.shape[0]):
                s = count_lower_score(obs_sum[i, k], exp_sum[i, k], disp, rel2[i])
                if s > best[i]:
                    best[i] = s
                    best_window[i] = windows[k]
                low = low or _window_low(obs_sum[i, k], exp_sum[i, k], disp, rel2[i])
                high = high or (nonzero[i] >= sparse_fraction and hour_rate[i] >= 0.0
                                and _window_high(obs_sum[i, k], max(exp_sum[i, k], windows[k] * hour_rate[i]), min_ratio))
        if high:
            weight[i] = 0.0
        _learn_key(level, phi, rel2, nonzero, clump, total, age, open_raw, open_learn, season, i, learning_rate,
                   slow_divisor, clip, min_rel, low or high)


@njit(cache=True, _nrt=False)
def _window_low(observed, expected, disp, rel2):
    """Whether a drop window is unusually low as a whole (USUAL_SIGMAS below its forecast, as for one
    bucket in _learn_key): a service down to a third of its traffic is lost in the noise of each
    minute of a quiet template, not over a quarter of an hour."""
    if observed >= expected:
        return False
    log_ratio2 = math.log((observed + 0.5) / (expected + 0.5)) ** 2
    return log_ratio2 > USUAL_SIGMAS ** 2 * (rel2 + disp / max(expected, 0.5))


@njit(cache=True, _nrt=False)
def _window_high(observed, expected, min_ratio):
    """Whether a window is high by a spike's size: its count at the low end of its Poisson sampling error
    (poisson_low) at least min_ratio times its forecast. A port scan at seven times a quiet firewall
    template's rate is lost in each minute's noise (so no bucket is unusual) but not over five: learnt at
    the usual rate, its minutes raised the level and taught the hour of day the scan, and the next scan at
    that hour, or the rest of this one, was ordinary. Only a spike's size, not any significant rise: rush
    hours and campaigns double traffic, and a level that does not follow them reads their end as a drop.
    Only at an hour of day the key's table knows, and against at least its usual count at that hour (see
    close_keys): a service's first morning, a nightly job's run, are what the hour table must learn, though
    far above a level that decayed through the quiet hours before."""
    return expected > 0.0 and poisson_low(observed) >= min_ratio * expected


@njit(cache=True, _nrt=False)
def poisson_low(count):
    """The lower 3-sigma (one-sided p 0.00135) confidence bound of a Poisson mean given a count (Wilson-
    Hilferty; tier2_volume.poisson_lower_bound on one count): a handful of lines is still above zero."""
    if count <= 0.0:
        return 0.0
    k = max(count, 1.0)
    root = max(1.0 - 1.0 / (9.0 * k) - 1.0 / math.sqrt(k), 0.0)
    return k * root ** 3


@njit(cache=True)
def _learn_key(level, phi, rel2, nonzero, clump, total, age, open_raw, open_learn, season, i, learning_rate,
               slow_divisor, clip, min_rel, window_low):
    seen = age[i] > 0
    new = age[i] == 0 and open_raw[i] > 0
    s = max(season[i], 1e-6)
    x = open_learn[i] / s
    mu = level[i]
    sd = math.sqrt(max(mu * phi[i], 1.0))
    x_clipped = min(max(x, mu - clip * sd), mu + clip * sd)
    alpha = max(learning_rate, 1.0 / (age[i] + 1.0))
    # An unusual bucket (a spike, a drop), or one of a drop window unusually low as a whole (window_low:
    # its buckets, each within its noise, would teach the spread that hides the drop; or of a window high
    # by a spike's size, see _window_high, passed in the same flag), teaches level,
    # spread and shape slowly (see tier2_volume.DISPERSION_SLOWER), an ordinary one at the learning rate.
    slow = max(learning_rate / slow_divisor, 1.0 / (age[i] + 1.0))
    if seen:
        log_ratio2 = math.log((x + 0.5) / (mu + 0.5)) ** 2
        unusual = window_low or log_ratio2 > USUAL_SIGMAS ** 2 * (rel2[i] + max(phi[i], 1.0) / max(mu, 0.5))
        rate = slow if unusual else alpha
        # An unusual bucket teaches the spread no more than one just inside USUAL_SIGMAS would: at clip^2
        # times the spread, a drop or silence lasting hours widened the spread it is judged against by a
        # few per cent a bucket, until its own buckets looked usual and taught at the full rate.
        cap = USUAL_SIGMAS ** 2 if unusual else clip * clip
        resid2 = min((x_clipped - mu) ** 2 / max(mu, 1e-3), cap * max(phi[i], 1.0))
        phi[i] += rate * (resid2 - phi[i])
        if mu >= 1.0:
            target = log_ratio2 - phi[i] / max(mu, 0.5)
            target = min(max(target, min_rel * min_rel), cap * rel2[i])
            rel2[i] += rate * (target - rel2[i])
        raw = open_raw[i] / s
        hit = 1.0 if raw > 0 else 0.0
        nonzero[i] += rate * (hit - nonzero[i])
        if raw > 0:
            clump[i] += rate * (max(raw, 1.0) - clump[i])
        level[i] = mu + (slow if unusual else alpha) * (x_clipped - mu)
    elif new:
        level[i] = x
    if seen or new:
        total[i] += x
        age[i] += 1


@kt.entry((kt.F64_3D, kt.F64_3D, kt.I64_1D, kt.I64_1D_RO, kt.I64_1D_RO, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64,
       kt.F64_1D), cache=True)
def share_factors(hod, dow, keys, hours, days, per_hour, per_day, prior_hour, prior_day, out):
    """out[i] = the hour-of-day times day-of-week factor of the share of template keys[i] at hours[i],
    days[i]: the odds of that slot (its count against the rest of its source) over the odds of all
    slots, each shrunk towards 1 like season_factors. A table row holds (count, others, buckets)."""
    for i in range(out.shape[0]):
        k, h, d = keys[i], hours[i], days[i]
        out[i] = (_relative_odds(hod, k, h, per_hour, prior_hour) * _relative_odds(dow, k, d, per_day, prior_day))


@njit(cache=True, _nrt=False)
def _relative_odds(table, k, slot, per_period, prior):
    count, others = 0.0, 0.0
    for j in range(table.shape[2]):
        count += table[k, 0, j]
        others += table[k, 1, j]
    if count <= 0.0 or others <= 0.0:
        return 1.0
    return _shrunk(table[k, 0, slot], table[k, 1, slot] * count / others, table[k, 2, slot], per_period, prior)


@kt.entry((kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.FLOAT64,
       kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.F64_1D), cache=True, _nrt=False)
def learn_shares(t_learn, src_learn, template_source, age, phi, share_num, share_den, share_rel2, share_season,
                 learning_rate, slow_divisor, clip, min_rel, others_out):
    """Learn, for every template seen before, its count against the rest of its source's lines in the
    closing bucket: the deseasonalised odds share_num / share_den (the count divided by the template's
    share season factor, share_season) and their squared relative forecast error. others_out[i] gets
    the rest of the source's lines (0 where the template is not judged) for the share season tables.
    Call before close_keys (which ages the keys). See tier2_volume.VolumeTier._share_scores."""
    for i in range(t_learn.shape[0]):
        others_out[i] = 0.0
        if age[i] == 0:
            continue
        t = t_learn[i]
        s = max(share_season[i], 1e-6)
        others = max(src_learn[template_source[i]] - t, 0.0)
        others_out[i] = others
        alpha = max(learning_rate, 1.0 / (age[i] + 1.0))
        rate = alpha
        if share_den[i] > 0 and others > 0:
            q = share_num[i] / share_den[i] * s
            e = q / (1.0 + q) * (t + others)   # its share of the bucket (see VolumeTier._share_scores)
            disp = max(phi[i], 1.0)
            log_ratio2 = math.log((t + 0.5) / (e + 0.5)) ** 2
            if log_ratio2 > USUAL_SIGMAS ** 2 * (share_rel2[i] + disp / max(e, 0.5)):
                rate = max(learning_rate / slow_divisor, 1.0 / (age[i] + 1.0))
            if e >= 1.0:
                target = min(max(log_ratio2 - disp / max(e, 0.5), min_rel * min_rel), clip * clip * share_rel2[i])
                share_rel2[i] += rate * (target - share_rel2[i])
        share_num[i] += rate * (t / s - share_num[i])
        share_den[i] += rate * (others - share_den[i])


@kt.entry((kt.F64_2D, kt.F64_2D, kt.F64_2D, kt.F64_2D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D,
           kt.F64_1D, kt.BOOL_1D, kt.F64_1D, kt.INT64, kt.I64_1D, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64,
           kt.FLOAT64, kt.F64_1D, kt.I64_1D), cache=True, _nrt=False)
def recent_close(obs, season, win_obs, win_season, ref_obs, ref_season, filled, rel2, counts, factors, judge, disp,
                 bucket, windows, rate, slow_rate, usual_sigmas, min_rel2, min_lines, best, best_window):
    """Push the closing bucket (counts, seasonal factors; keys beyond them count 0) into every key's
    ring of tier2_recent.RecentLevel, sliding the window sums (windows, the last the longest) and the
    reference's (the ring's buckets before the longest window); then, for each judged key with a full
    ring and min_lines in its reference, score each window's count against the reference's
    deseasonalised level (best, best_window: the highest count_lower_score) and learn rel2 from the
    longest window at rate (slow_rate beyond usual_sigmas spreads), winsorised at usual_sigmas spreads."""
    ring = obs.shape[1]
    slot = bucket % ring
    longest = windows[windows.shape[0] - 1]
    entering = (bucket - longest) % ring
    for i in range(obs.shape[0]):
        c = counts[i] if i < counts.shape[0] else 0.0
        f = factors[i] if i < factors.shape[0] else 0.0
        for k in range(windows.shape[0]):
            leaving = (bucket - windows[k]) % ring
            win_obs[i, k] += c - obs[i, leaving]
            win_season[i, k] += f - season[i, leaving]
        ref_obs[i] += obs[i, entering] - obs[i, slot]
        ref_season[i] += season[i, entering] - season[i, slot]
        obs[i, slot] = c
        season[i, slot] = f
        filled[i] = min(filled[i] + 1, ring)
        best[i] = 0.0
        best_window[i] = longest
        lines = ref_obs[i]
        if not (i < judge.shape[0] and judge[i] and filled[i] >= ring and lines >= min_lines):
            continue
        d = max(disp[i], 1.0) if i < disp.shape[0] else 1.0
        level = lines / max(ref_season[i], 1e-9)
        r2 = rel2[i] + d / max(lines, 1.0)
        o, e = 0.0, 0.0
        for k in range(windows.shape[0]):
            o = win_obs[i, k]
            e = level * win_season[i, k]
            # count_lower_score is 0 within QUIET_SIGMAS of the forecast
            if e - o > 2.0 * math.sqrt(d * e):
                s = count_lower_score(o, e, d, r2)
                if s > best[i]:
                    best[i] = s
                    best_window[i] = windows[k]
        if e >= 1.0:
            log_ratio2 = math.log((o + 0.5) / (e + 0.5)) ** 2
            noise = d / max(e, 1.0) + d / max(lines, 1.0)
            unusual = log_ratio2 > usual_sigmas ** 2 * (rel2[i] + noise)
            target = min(max(log_ratio2 - noise, min_rel2), usual_sigmas ** 2 * rel2[i])
            rel2[i] += (slow_rate if unusual else rate) * (target - rel2[i])


@kt.entry((kt.F64_3D, kt.F64_3D, kt.INT64, kt.INT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.F64_1D, kt.F64_1D,
           kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.F64_2D, kt.F64_2D, kt.F64_2D,
           kt.F64_2D, kt.INT64, kt.I64_1D, kt.INT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64,
           kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.F64_1D, kt.F64_1D, kt.F32_1D, kt.I64_1D), cache=True)
def close_base(hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, level, phi, rel2, nonzero, clump, total,
               age, open_raw, open_learn, obs_win, exp_win, obs_sum, exp_sum, slot, windows, min_history,
               learning_rate, slow_divisor, clip, min_rel, sparse_fraction, min_ratio, anomalous_share, keep, season,
               weight, best, best_window):
    """One key set's share of closing a bucket, in one call: each key's seasonal factor at hour, day
    (season, as season_factors), its weight in the seasonal tables (weight: 0 for a spike made of
    anomalies, see _season_weight; from the level before this bucket), close_keys, then season_update
    of hod, dow (decayed by keep) with the bucket, against the level after it."""
    _factors(hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, season)
    hour_rate = np.empty(level.shape[0])
    for i in range(level.shape[0]):
        weight[i] = _season_weight(open_raw[i], open_learn[i], level[i] * season[i], min_ratio, anomalous_share)
        seen = hod[i, 2, hour]
        hour_rate[i] = hod[i, 0, hour] / seen if seen >= HOUR_MIN_SHARE * per_hour else -1.0
    close_keys(level, phi, rel2, nonzero, clump, total, age, open_raw, open_learn, obs_win, exp_win, obs_sum, exp_sum,
               season, slot, windows, min_history, learning_rate, slow_divisor, clip, min_rel, sparse_fraction,
               min_ratio, hour_rate, weight, best, best_window)
    season_update(hod, dow, hour, day, open_learn, level, weight, age, min_history, keep)


@njit(cache=True, _nrt=False)
def _season_weight(raw, learned, expected, min_ratio, anomalous_share):
    """A key's weight in its seasonal tables for the closing bucket: 0 for a spike made of anomalies (more
    than anomalous_share of its lines were, so `learned` falls short of `raw`, and the count is at least
    min_ratio times `expected` at the low end of its sampling error, as a spike must be to score), else 1.
    A ten-minute spike at 22:30 would otherwise teach 22:00 to expect it, and the next quiet evening would
    be a drop. (Counts far off their forecast alone would also shut out the daily pattern while it is
    being learned; anomalies alone would shut out buckets whose lines were odd for other reasons, a
    drift, a new value.)"""
    if learned < (1.0 - anomalous_share) * raw and raw - 3.0 * math.sqrt(raw) >= min_ratio * expected:
        return 0.0
    return 1.0


@kt.entry((kt.F64_3D, kt.F64_3D, kt.INT64, kt.INT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.F64_1D, kt.F64_1D,
           kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.FLOAT64, kt.FLOAT64,
           kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.INT64, kt.FLOAT64, kt.F64_1D, kt.F64_1D, kt.F64_1D,
           kt.I64_1D), cache=True, _nrt=False)
def close_shares(hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, t_raw, t_learn, src_raw, src_learn,
                 template_source, age, phi, share_num, share_den, share_rel2, learning_rate, slow_divisor, clip,
                 min_rel, min_ratio, anomalous_share, min_history, keep, share_season, weight, others, judged_age):
    """Every template's share of its source in the closing bucket, in one call: its share factor at hour,
    day (share_season, as share_factors), its weight in the share tables (as close_base's, against its
    odds' share of the larger of its source's lines and its own), learn_shares, then season_update of the
    share tables with the buckets where the source had other lines (judged_age: the template's age
    there, 0 elsewhere). See tier2_volume.VolumeTier._share_scores."""
    for i in range(t_learn.shape[0]):
        share_season[i] = (_relative_odds(hod, i, hour, per_hour, prior_hour)
                           * _relative_odds(dow, i, day, per_day, prior_day))
        den = share_den[i]
        odds = share_num[i] / (den if den > 0 else 1.0) * share_season[i]
        expected = odds / (1.0 + odds) * max(src_raw[template_source[i]], t_raw[i])
        weight[i] = _season_weight(t_raw[i], t_learn[i], expected, min_ratio, anomalous_share)
    learn_shares(t_learn, src_learn, template_source, age, phi, share_num, share_den, share_rel2, share_season,
                 learning_rate, slow_divisor, clip, min_rel, others)
    for i in range(t_learn.shape[0]):
        judged_age[i] = age[i] if others[i] > 0 else 0
    season_update(hod, dow, hour, day, t_learn, others, weight, judged_age, min_history, keep)


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_2D, kt.F64_1D, kt.INT64, kt.INT64, kt.F64_1D), cache=True, _nrt=False)
def earlier_counts(codes, per_pair, obs_win, open_raw, open_bucket, window, earlier):
    """earlier[i] = the lines of pair codes[i] (key << 40 | bucket; codes sorted, distinct; per_pair[i]
    lines each in the batch) in the window - 1 buckets before its bucket: from the batch's own pairs,
    the closed buckets' ring (obs_win; older buckets count 0) and the open bucket's count (open_raw).
    See tier2_volume._Pairs; added in its order (batch, ring, open bucket; one bucket back, then two)."""
    ring = obs_win.shape[1]
    for i in range(codes.shape[0]):
        key, bucket = codes[i] >> 40, codes[i] & ((1 << 40) - 1)
        e = 0.0
        j = i - 1
        for back in range(1, window):
            target = codes[i] - back
            while j >= 0 and codes[j] > target:
                j -= 1
            e += per_pair[j] if j >= 0 and codes[j] == target else 0
            b = bucket - back
            e += obs_win[key, b % ring] if open_bucket - ring <= b < open_bucket else 0.0
            e += open_raw[key] if b == open_bucket else 0.0
        earlier[i] = e


_BASE = (kt.F64_1D,) * 6 + (kt.I64_1D, kt.F64_1D, kt.F64_1D) + (kt.F64_2D,) * 4   # a KeyBaseline's arrays
_SHARES = (kt.F64_1D,) * 3                                                         # share_num, share_den, share_rel2
_TABLES = (kt.F64_3D, kt.F64_3D)                                                  # hour-of-day, day-of-week


@njit(cache=True, _nrt=False)
def _drops_ahead(level, phi, rel2, nonzero, clump, age, open_raw, obs_win, exp_win, obs_sum, exp_sum, season, slot,
                 windows, min_history, sparse_fraction, min_score):
    """Whether close_keys of this bucket would score any key's drop at min_score or more (its best
    score is kept as float32), worked out without changing anything."""
    ring = obs_win.shape[1]
    threshold = np.float32(min_score)
    for i in range(level.shape[0]):
        if age[i] < min_history + ring:
            continue
        expected = level[i] * season[i] if age[i] >= min_history else 0.0
        disp = _dispersion(phi, nonzero, clump, i, sparse_fraction)
        for k in range(windows.shape[0]):
            leaving = (slot - windows[k]) % ring
            o = obs_sum[i, k] + (open_raw[i] - obs_win[i, leaving])
            e = exp_sum[i, k] + (expected - exp_win[i, leaving])
            if np.float32(count_lower_score(o, e, disp, rel2[i])) >= threshold:
                return True
    return False


@njit(cache=True, _nrt=False)
def _factors(hod, dow, hour, day, per_hour, per_day, prior_hour, prior_day, out):
    """out[i] = every key's season factor (_factor) at one hour and day."""
    for i in range(out.shape[0]):
        out[i] = _factor(hod, dow, i, hour, day, per_hour, per_day, prior_hour, prior_day)


@njit(cache=True, _nrt=False)
def _steady_hours(hod, i, min_seen, min_hours, quiet_share):
    """Whether key i's hour table shows a steady key (the templates tier2_volume's recent level judges): seen
    through at least min_hours hours of the day, and not quiet (below quiet_share of its busiest seen
    hour's usual count) in most hours seen (tier2_volume._quiet_most_hours)."""
    seen, busiest = 0, 0.0
    for h in range(hod.shape[2]):
        if hod[i, 2, h] >= min_seen:
            seen += 1
            busiest = max(busiest, hod[i, 0, h] / hod[i, 2, h])
    quiet = 0
    for h in range(hod.shape[2]):
        if hod[i, 2, h] >= min_seen and hod[i, 0, h] / hod[i, 2, h] < quiet_share * busiest:
            quiet += 1
    return seen >= min_hours and not quiet > 0.5 * seen


@kt.entry((kt.INT64, kt.INT64, kt.FLOAT64, kt.INT64, kt.INT64, kt.FLOAT64, kt.INT64, kt.FLOAT64)
          + (kt.FLOAT64,) * 13 + (kt.INT64, kt.I64_1D)
          + _BASE + _SHARES + _TABLES + _TABLES + (kt.I64_1D,)
          + _BASE + _TABLES
          + _BASE + _SHARES + _TABLES + (kt.I64_1D,)
          + (kt.F64_2D,) * 4 + (kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.F64_1D, kt.BOOL_1D, kt.I64_1D) + (kt.FLOAT64,) * 5
          + (kt.F64_1D, kt.I64_1D, kt.I64_1D), cache=True)
def close_quiet_run(first, stop, bucket_seconds, epoch_buckets, judged_epoch, min_seen, min_hours, quiet_share,
                    per_hour, per_day, prior_hour, prior_day, learning_rate, slow_divisor, clip, min_rel,
                    sparse_fraction, min_ratio, anomalous_share, keep, finding_min_score, min_history, windows,
                    t_level, t_phi, t_rel2, t_nonzero, t_clump, t_total, t_age, t_raw, t_learn, t_obs_win, t_exp_win,
                    t_obs_sum, t_exp_sum, t_share_num, t_share_den, t_share_rel2, t_hod, t_dow, sh_hod, sh_dow,
                    template_source,
                    s_level, s_phi, s_rel2, s_nonzero, s_clump, s_total, s_age, s_raw, s_learn, s_obs_win, s_exp_win,
                    s_obs_sum, s_exp_sum, s_hod, s_dow,
                    v_level, v_phi, v_rel2, v_nonzero, v_clump, v_total, v_age, v_raw, v_learn, v_obs_win, v_exp_win,
                    v_obs_sum, v_exp_sum, v_share_num, v_share_den, v_share_rel2, v_hod, v_dow, v_parent,
                    r_obs, r_season, r_win_obs, r_win_season, r_ref_obs, r_ref_season, r_filled, r_rel2, judged,
                    r_windows, r_rate, r_slow_rate, r_usual_sigmas, r_min_rel2, r_min_lines,
                    r_best, r_best_window, status):
    """Close the buckets first, first + 1, ... (before stop) that no line fell in, as
    tier2_volume.VolumeTier._close_bucket closes each (share tables, value shares, templates, their
    recent level, sources, values: the same kernels in the same order), while nothing needs Python:
    a bucket in which a template or source would score a drop is left open. The recent level's judged
    templates (judged, of epoch judged_epoch: worked out again in each new epoch of epoch_buckets, as
    close_bucket does, from the hour tables before the bucket and the baseline after it; min_seen,
    min_hours, quiet_share: see _steady_hours) are the judged ones of the last bucket closed. A bucket whose recent level scores a drop
    of finding_min_score or more is closed and ends the run: its scores are in r_best, r_best_window
    for the caller to confirm and hold. status = (buckets closed, 1 if the last had such a drop).
    Every open count (t_raw, t_learn, s_raw, ...) must be 0, and stays so."""
    nt, ns, nv = t_level.shape[0], s_level.shape[0], v_level.shape[0]
    t_season, s_season, v_season = np.empty(nt), np.empty(ns), np.empty(nv)
    t_weight, s_weight, v_weight = np.empty(nt), np.empty(ns), np.empty(nv)
    t_best, s_best, v_best = np.empty(nt, np.float32), np.empty(ns, np.float32), np.empty(nv, np.float32)
    t_win, s_win, v_win = np.empty(nt, np.int64), np.empty(ns, np.int64), np.empty(nv, np.int64)
    share_season, share_weight = np.empty(nt), np.empty(nt)
    others, judged_age, v_others = np.empty(nt), np.empty(nt, np.int64), np.empty(nv)
    v_ones = np.ones(nv)
    judge, disp = np.empty(nt, np.bool_), np.empty(nt)
    ring = t_obs_win.shape[1]
    status[0] = 0
    status[1] = 0
    steady = np.empty(nt, np.bool_)
    epoch = judged_epoch
    for bucket in range(first, stop):
        when = bucket * bucket_seconds
        hour = np.int64(when % 86400 // 3600)
        day = np.int64((np.int64(when // 86400) + 3) % 7)
        slot = bucket % ring
        _factors(t_hod, t_dow, hour, day, per_hour, per_day, prior_hour, prior_day, t_season)
        _factors(s_hod, s_dow, hour, day, per_hour, per_day, prior_hour, prior_day, s_season)
        if (_drops_ahead(t_level, t_phi, t_rel2, t_nonzero, t_clump, t_age, t_raw, t_obs_win, t_exp_win, t_obs_sum,
                         t_exp_sum, t_season, slot, windows, min_history, sparse_fraction, finding_min_score)
                or _drops_ahead(s_level, s_phi, s_rel2, s_nonzero, s_clump, s_age, s_raw, s_obs_win, s_exp_win,
                                s_obs_sum, s_exp_sum, s_season, slot, windows, min_history, sparse_fraction,
                                finding_min_score)):
            break
        close_shares(sh_hod, sh_dow, hour, day, per_hour, per_day, prior_hour, prior_day, t_raw, t_learn, s_raw,
                     s_learn, template_source, t_age, t_phi, t_share_num, t_share_den, t_share_rel2, learning_rate,
                     slow_divisor, clip, min_rel, min_ratio, anomalous_share, min_history, keep, share_season,
                     share_weight, others, judged_age)
        learn_shares(v_learn, v_learn, v_parent, v_age, v_phi, v_share_num, v_share_den, v_share_rel2, v_ones,
                     learning_rate, slow_divisor, clip, min_rel, v_others)
        new_epoch = bucket // epoch_buckets != epoch
        if new_epoch:
            for i in range(nt):
                steady[i] = _steady_hours(t_hod, i, min_seen, min_hours, quiet_share)
        close_base(t_hod, t_dow, hour, day, per_hour, per_day, prior_hour, prior_day, t_level, t_phi, t_rel2,
                   t_nonzero, t_clump, t_total, t_age, t_raw, t_learn, t_obs_win, t_exp_win, t_obs_sum, t_exp_sum, slot,
                   windows, min_history, learning_rate, slow_divisor, clip, min_rel, sparse_fraction, min_ratio,
                   anomalous_share, keep, t_season, t_weight, t_best, t_win)
        if new_epoch:
            epoch = bucket // epoch_buckets
            for i in range(nt):
                judged[i] = steady[i] and not t_nonzero[i] < sparse_fraction
        for i in range(nt):
            judge[i] = judged[i] and t_age[i] >= min_history
            disp[i] = _dispersion(t_phi, t_nonzero, t_clump, i, sparse_fraction)
        recent_close(r_obs, r_season, r_win_obs, r_win_season, r_ref_obs, r_ref_season, r_filled, r_rel2, t_raw,
                     t_season, judge, disp, bucket, r_windows, r_rate, r_slow_rate, r_usual_sigmas, r_min_rel2,
                     r_min_lines, r_best, r_best_window)
        close_base(s_hod, s_dow, hour, day, per_hour, per_day, prior_hour, prior_day, s_level, s_phi, s_rel2,
                   s_nonzero, s_clump, s_total, s_age, s_raw, s_learn, s_obs_win, s_exp_win, s_obs_sum, s_exp_sum, slot,
                   windows, min_history, learning_rate, slow_divisor, clip, min_rel, sparse_fraction, min_ratio,
                   anomalous_share, keep, s_season, s_weight, s_best, s_win)
        close_base(v_hod, v_dow, hour, day, per_hour, per_day, prior_hour, prior_day, v_level, v_phi, v_rel2,
                   v_nonzero, v_clump, v_total, v_age, v_raw, v_learn, v_obs_win, v_exp_win, v_obs_sum, v_exp_sum, slot,
                   windows, min_history, learning_rate, slow_divisor, clip, min_rel, sparse_fraction, min_ratio,
                   anomalous_share, keep, v_season, v_weight, v_best, v_win)
        status[0] += 1
        for i in range(r_best.shape[0]):
            if r_best[i] >= finding_min_score:
                status[1] = 1
        if status[1]:
            break


# Groups of close_bucket's arguments: a KeyBaseline (tier2_volume._base_arrays), a template's or value key's
# share odds, a set of seasonal tables, a RecentLevel's ring and sums, and one key set's per-key outputs.
BASE_TUPLE = kt.tuple_of_items(*_BASE)
SHARES_TUPLE = kt.tuple_of_items(*_SHARES)
TABLES_TUPLE = kt.tuple_of_items(*_TABLES)
RECENT_TUPLE = kt.tuple_of_items(*((kt.F64_2D,) * 4 + (kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.F64_1D)))
OUT_TUPLE = kt.tuple_of_items(kt.F64_1D, kt.F64_1D, kt.F32_1D, kt.I64_1D)
# the float settings (see close_bucket), and the recent level's
SETTINGS_TUPLE = kt.tuple_of(kt.FLOAT64, 16)
RECENT_SETTINGS_TUPLE = kt.tuple_of(kt.FLOAT64, 5)


@kt.entry((kt.INT64, kt.INT64, kt.BOOL, kt.BOOL, kt.BOOL, SETTINGS_TUPLE, RECENT_SETTINGS_TUPLE, kt.INT64, kt.INT64,
           kt.I64_1D, BASE_TUPLE, SHARES_TUPLE, TABLES_TUPLE, TABLES_TUPLE, kt.I64_1D, BASE_TUPLE, TABLES_TUPLE,
           BASE_TUPLE, SHARES_TUPLE, TABLES_TUPLE, kt.I64_1D, RECENT_TUPLE, kt.BOOL_1D, kt.I64_1D, OUT_TUPLE, OUT_TUPLE,
           kt.F64_1D, kt.I64_1D, kt.I64_1D), cache=True)
def close_bucket(bucket, start, stop_early, has_recent, rejudge, settings, recent_settings, min_history, min_hours,
                 windows, t, t_shares, t_tables, share_tables, template_source, s, s_tables, v, v_shares, v_tables,
                 v_parent, recent, judged, r_windows, t_out, s_out, r_best, r_best_window, status):
    """Close one bucket of lines for every key, as tier2_volume.VolumeTier._close_bucket did with a kernel
    call per step (tests/unit/test_tier2_close_bucket.py keeps those steps): the share tables, the value
    keys' shares, the templates (close_base; their drops in t_out), the recent level (recent_close; judged:
    the steady templates, worked out again from the hour tables before the bucket and the baseline after
    it when rejudge: steady by _steady_hours and not sparse; its scores in r_best, r_best_window), the sources (s_out)
    and the value keys, each key set's open counts zeroed once read. One call instead of a dozen numpy
    operations and calls per bucket: a replay closes a bucket every minute of its event time.

    Python holds the drops between steps where their order matters: a template's drop is held before the
    recent level takes the bucket (the hold keeps the recent level as it was). So stage 1 (start 1: the
    shares, values' shares and templates) stops when a template scores a drop of finding_min_score or more
    (or when stop_early), status[0] = 1, and the caller, having held them, calls again with start 2 for
    the rest. status[1] = 1 when the recent level scored finding_min_score or more (to confirm and hold),
    status[2] = 1 when a source did (to hold).
    settings: (per_hour, per_day, prior_hour, prior_day, learning_rate, slow_divisor, clip, min_rel,
    sparse_fraction, min_ratio, anomalous_share, keep, finding_min_score, bucket_seconds, min_seen,
    quiet_share); recent_settings: recent_close's (rate, slow_rate, usual_sigmas, min_rel2, min_lines)."""
    (per_hour, per_day, prior_hour, prior_day, learning_rate, slow_divisor, clip, min_rel, sparse_fraction,
     min_ratio, anomalous_share, keep, min_score, bucket_seconds, min_seen, quiet_share) = settings
    when = bucket * bucket_seconds
    hour = np.int64(when % 86400 // 3600)
    day = np.int64((np.int64(when // 86400) + 3) % 7)   # 1970-01-01 was a Thursday
    slot = bucket % t[9].shape[1]
    status[:] = 0
    if start <= 1:
        _close_shares_of_all(hour, day, settings, min_history, t, t_shares, share_tables, template_source, s, v,
                             v_shares, v_parent)
        steady = np.empty(t[0].shape[0], np.bool_)
        if has_recent and rejudge:
            for i in range(steady.shape[0]):
                steady[i] = _steady_hours(t_tables[0], i, min_seen, min_hours, quiet_share)
        _close_key_set(hour, day, slot, settings, min_history, windows, t, t_tables, t_out)
        if has_recent and rejudge:
            for i in range(steady.shape[0]):
                judged[i] = steady[i] and not t[3][i] < sparse_fraction
        threshold = np.float32(min_score)
        for i in range(t_out[2].shape[0]):
            stop_early = stop_early or t_out[2][i] >= threshold
        if stop_early:
            status[0] = 1
            return
    if has_recent:
        _close_recent(bucket, sparse_fraction, min_history, t, t_out[0], recent, judged, r_windows, recent_settings,
                      r_best, r_best_window)
        for i in range(r_best.shape[0]):
            if r_best[i] >= min_score:
                status[1] = 1
    _zero_open(t)
    _close_key_set(hour, day, slot, settings, min_history, windows, s, s_tables, s_out)
    _zero_open(s)
    for i in range(s_out[2].shape[0]):
        if s_out[2][i] >= np.float32(min_score):
            status[2] = 1
    n = v[0].shape[0]
    _close_key_set(hour, day, slot, settings, min_history, windows, v, v_tables,
                   (np.empty(n), np.empty(n), np.empty(n, np.float32), np.empty(n, np.int64)))
    _zero_open(v)


@njit(cache=True)
def _close_shares_of_all(hour, day, settings, min_history, t, t_shares, share_tables, template_source, s, v,
                         v_shares, v_parent):
    """close_shares of the templates against their sources, then learn_shares of the value keys against
    their totals (no seasons: see tier2_volume.VolumeTier._value_share_scores)."""
    (per_hour, per_day, prior_hour, prior_day, learning_rate, slow_divisor, clip, min_rel, _sparse,
     min_ratio, anomalous_share, keep) = settings[:12]
    nt, nv = t[0].shape[0], v[0].shape[0]
    close_shares(share_tables[0], share_tables[1], hour, day, per_hour, per_day, prior_hour, prior_day, t[7], t[8],
                 s[7], s[8], template_source, t[6], t[1], t_shares[0], t_shares[1], t_shares[2], learning_rate,
                 slow_divisor, clip, min_rel, min_ratio, anomalous_share, min_history, keep, np.empty(nt),
                 np.empty(nt), np.empty(nt), np.empty(nt, np.int64))
    learn_shares(v[8], v[8], v_parent, v[6], v[1], v_shares[0], v_shares[1], v_shares[2], np.ones(nv), learning_rate,
                 slow_divisor, clip, min_rel, np.empty(nv))


@njit(cache=True)
def _close_key_set(hour, day, slot, settings, min_history, windows, b, tables, out):
    """close_base of one key set (b: a KeyBaseline's arrays) into out (season, weight, best, best_window)."""
    (per_hour, per_day, prior_hour, prior_day, learning_rate, slow_divisor, clip, min_rel, sparse_fraction,
     min_ratio, anomalous_share, keep) = settings[:12]
    close_base(tables[0], tables[1], hour, day, per_hour, per_day, prior_hour, prior_day, b[0], b[1], b[2], b[3],
               b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], slot, windows, min_history, learning_rate,
               slow_divisor, clip, min_rel, sparse_fraction, min_ratio, anomalous_share, keep, out[0], out[1],
               out[2], out[3])


@njit(cache=True)
def _close_recent(bucket, sparse_fraction, min_history, t, t_season, recent, judged, r_windows, recent_settings,
                  r_best, r_best_window):
    """recent_close of the templates' closing bucket: the judged ones of min_history buckets or more, with
    their dispersion as tier2_volume._dispersion_all gives it."""
    nt = t[0].shape[0]
    judge, disp = np.empty(nt, np.bool_), np.empty(nt)
    for i in range(nt):
        judge[i] = judged[i] and t[6][i] >= min_history
        disp[i] = _dispersion(t[1], t[3], t[4], i, sparse_fraction)
    rate, slow_rate, usual_sigmas, min_rel2, min_lines = recent_settings
    recent_close(recent[0], recent[1], recent[2], recent[3], recent[4], recent[5], recent[6], recent[7], t[7],
                 t_season, judge, disp, bucket, r_windows, rate, slow_rate, usual_sigmas, min_rel2, min_lines, r_best,
                 r_best_window)


@njit(cache=True, _nrt=False)
def _zero_open(b):
    """Empty a key set's open bucket (its raw and learning counts) once closed."""
    for i in range(b[7].shape[0]):
        b[7][i] = 0.0
        b[8][i] = 0.0


@kt.entry((kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.INT64, kt.INT64, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D,
           kt.I64_1D, kt.F64_1D, kt.INT64, kt.INT64, kt.I64_1D, kt.F64_1D, kt.INT64, kt.INT64, kt.F64_1D, kt.F64_1D),
          cache=True)
def count_bucket(templates, sources, weights, lo, hi, t_raw, t_learn, s_raw, s_learn, values, v_weights, v_lo, v_hi,
                 totals, t_weights, t_lo, t_hi, v_raw, v_learn):
    """Count one bucket's lines into the open bucket: lines lo..hi of templates, sources and weights (a batch's
    lines in bucket order) into the templates' and sources' open counts, then value parameters v_lo..v_hi
    (value key rows, their lines' weights) and total parameters t_lo..t_hi into the value keys'. Each
    set as KeyBaseline.count adds it (its counts and weights summed first, in line order, then added to the
    open counts, so the sums are the same to the bit): one call per bucket instead of four counts."""
    _count_into(templates, weights, lo, hi, t_raw, t_learn)
    _count_into(sources, weights, lo, hi, s_raw, s_learn)
    _count_into(values, v_weights, v_lo, v_hi, v_raw, v_learn)
    _count_into(totals, t_weights, t_lo, t_hi, v_raw, v_learn)


@njit(cache=True)
def _count_into(keys, weights, lo, hi, open_raw, open_learn):
    """open_raw += the lines of each key among keys[lo:hi], open_learn += their weights, as np.bincount
    (keys past the arrays dropped) then an add of every key."""
    n = open_raw.shape[0]
    lines, learned = np.zeros(n), np.zeros(n)
    for i in range(lo, hi):
        k = keys[i]
        if 0 <= k < n:
            lines[k] += 1.0
            learned[k] += weights[i]
    for k in range(n):
        open_raw[k] += lines[k]
        open_learn[k] += learned[k]


# learning one key's bucket, called once per key and bucket by close_keys, inlined into it (see
# kt.inline_into_callers: about 20% less CPU for close_base, the same results)
kt.inline_into_callers(_learn_key)
