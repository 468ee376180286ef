"""Test-only plain-Python twins of the kernels in sequence_kernels.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import math

import numpy as np

from anomaly_detector.detection.sequence_kernels import (
    _FAMILY_MIX,
    _KEY_MASK,
    _U64,
    ALL_RUNS_SHARE,
    ANY,
    CLOSED_MISSING_STEP,
    CLOSED_NEW_ENDING,
    CLOSED_OK,
    CLOSED_OVERDUE,
    CLOSED_UNFINISHED,
    END,
    FLAG_OVERFLOW,
    FLAG_PARTIAL,
    GLOBAL,
    IN,
    MAX_TAIL_TERMS,
    MAX_TEMPLATE,
    POSITION_DONE,
    POSITION_NAMED,
    RUN_ROUNDING,
    SEEN_SHARE,
    SIGNIFICANT_LOG10,
    START,
    WHY_NONE,
    WHY_RARE_TRANSITION,
    WHY_UNKNOWN_START,
    WHY_UNKNOWN_STEP,
    WHY_UNKNOWN_TRANSITION,
    id_hash_slow_path,
    token_spans_slow_path,
)


def extract_keys_py(buf, cstart, cend, tids, loc_mode, loc_tok, loc_pre, loc_suf):
    n = len(tids)
    keys, ks, ke = [-1] * n, [0] * n, [0] * n
    raw = bytes(buf)
    for i in range(n):
        t = int(tids[i])
        if not 0 <= t < len(loc_mode) or loc_mode[t] not in (1, 2):
            continue
        s = int(cstart[i])
        spans = token_spans_slow_path(raw[s:int(cend[i])])
        k = int(loc_tok[t])
        idx = k if loc_mode[t] == 1 else len(spans) - k
        if not 0 <= idx < len(spans):
            continue
        a, b = s + spans[idx][0] + int(loc_pre[t]), s + spans[idx][1] - int(loc_suf[t])
        if b <= a:
            continue
        keys[i], ks[i], ke[i] = id_hash_slow_path(raw[a:b]), a, b
    return np.array(keys, np.int64), np.array(ks, np.int64), np.array(ke, np.int64)


def keys_at_params_py(buf, param_ptr, param_pos, param_start, param_end, rows, want, family, keys, ks, ke):
    raw = bytes(buf)
    for j, i in enumerate(rows.tolist()):
        for q in range(int(param_ptr[i]), int(param_ptr[i + 1])):
            if int(param_pos[q]) == int(want[j]):
                a, b = int(param_start[q]), int(param_end[q])
                if b > a:
                    mixed = id_hash_slow_path(raw[a:b]) ^ (((int(family[j]) + 1) * _FAMILY_MIX) & _U64)
                    keys[i], ks[i], ke[i] = mixed & _KEY_MASK, a, b
                break


def param_hash_at_py(param_ptr, param_pos, param_hash, rows, want):
    out, found = np.zeros(len(rows), np.uint64), np.zeros(len(rows), bool)
    for j, (i, w) in enumerate(zip(rows.tolist(), want.tolist())):
        hits = [q for q in range(param_ptr[i], param_ptr[i + 1]) if param_pos[q] == w]
        if hits:
            out[j], found[j] = param_hash[hits[0]], True
    return out, found


def learner_params_py(param_ptr, param_pos, tids, ts, candidate, status, max_position, per_key, taken):
    sel, line, key, named, judged, seen = [], [], [], [], 0, {}
    for i, t in enumerate(tids.tolist()):
        if not 0 <= t < len(candidate) or not math.isfinite(ts[i]):
            continue
        for q in range(int(param_ptr[i]), int(param_ptr[i + 1])):
            pos = int(param_pos[q])
            if pos >= max_position:
                continue
            at = t * max_position + pos
            state = int(status[at])
            fresh = bool(candidate[t]) and not state & POSITION_DONE
            if fresh or state & POSITION_NAMED:
                judged += fresh
                if seen.get(at, 0) < per_key:
                    seen[at] = seen.get(at, 0) + 1
                    sel.append(q)
                    line.append(i)
                    key.append(at)
                    named.append(bool(state & POSITION_NAMED))
    return (np.array(sel, np.int64), np.array(line, np.int64), np.array(key, np.int64), np.array(named, bool),
            judged)


def walk_sessions_py(keys, tids, open_wf, sessions):
    """sessions: {key: (workflow, last template)}."""
    n = len(keys)
    wf, prev = [-1] * n, [-1] * n
    seen = {}
    for i in range(n):
        k, t = int(keys[i]), int(tids[i])
        if k < 0 or not 0 <= t < MAX_TEMPLATE:
            continue
        if k in seen:
            wf[i], prev[i] = seen[k][0], seen[k][1]
        elif k in sessions:
            wf[i], prev[i] = sessions[k]
        else:
            wf[i], prev[i] = int(open_wf[i]), START
        seen[k] = (wf[i], t)
    return np.array(wf, np.int32), np.array(prev, np.int32)


def poisson_log10_cdf_py(k, mean):
    if mean <= 0.0:
        return 0.0
    total = sum(math.exp(-mean + j * math.log(mean) - math.lgamma(j + 1)) for j in range(min(k, MAX_TAIL_TERMS) + 1))
    return min(0.0, math.log10(total)) if total > 0 else -mean / math.log(10.0)


def surprise_py(c, out, share, min_support, rare_p, top):
    if out < min_support:
        return 0.0
    if c < 0.5:
        rarity, k = 1.0, 0
    else:
        if c / out >= rare_p:
            return 0.0
        rarity, k = SEEN_SHARE * min(1.0, math.log(rare_p * out / c) / math.log(rare_p * out / 0.5)), int(c)
    return top * min(rarity, min(1.0, -poisson_log10_cdf_py(k, out * share) / SIGNIFICANT_LOG10))


def score_transitions_py(wf, prev, tids, ts, grace_until, counts, min_support, rare_p, top):
    """counts: {(workflow, previous, next): count}."""
    def share(w, t):
        total = counts.get((w, ANY, ANY), 0.0)
        return counts.get((w, ANY, t), 0.0) / total if total > 0 else 0.0

    n = len(tids)
    scores, why = np.zeros(n, np.float32), np.zeros(n, np.int8)
    for i in range(n):
        w, p, t = int(wf[i]), int(prev[i]), int(tids[i])
        if w < 0:
            continue
        if p == START:
            if ts[i] < grace_until:
                continue
            s = surprise_py(counts.get((GLOBAL, START, t), 0.0), counts.get((GLOBAL, START, ANY), 0.0),
                            share(GLOBAL, t), min_support, rare_p, top)
            scores[i], why[i] = s, (WHY_UNKNOWN_START if s > 0 else WHY_NONE)
            continue
        if counts.get((w, IN, ANY), 0.0) >= min_support and counts.get((w, IN, t), 0.0) < 0.5:
            s = surprise_py(0.0, counts.get((w, ANY, ANY), 0.0), share(GLOBAL, t), min_support, rare_p, top)
            if s > 0:
                scores[i], why[i] = s, WHY_UNKNOWN_STEP
                continue
        c = counts.get((w, p, t), 0.0)
        s = surprise_py(c, counts.get((w, p, ANY), 0.0), share(w, t), min_support, rare_p, top)
        if s > 0:
            scores[i], why[i] = s, (WHY_UNKNOWN_TRANSITION if c < 0.5 else WHY_RARE_TRANSITION)
    return scores, why


def learn_lines_py(keys, tids, open_wf, ts, weights, line_scores, counts, sessions, free_slots, max_trans,
                   n_tpl_max, grace_until):
    """Twin of learn_lines on dicts. sessions: {key: dict(wf, last, start, lastts, steps, tpl, flags,
    maxscore)}; free_slots: how many sessions may still open. Returns (free_slots, opened, dropped)."""
    opened = dropped = 0

    def add(key, w):
        if key in counts:
            counts[key] += w
        elif len(counts) < max_trans:
            counts[key] = w

    for i in range(len(keys)):
        k, t, w = int(keys[i]), int(tids[i]), float(weights[i])
        if k < 0 or not 0 <= t < MAX_TEMPLATE:
            continue
        if w > 0:
            add((GLOBAL, ANY, t), w)
            add((GLOBAL, ANY, ANY), w)
        if k in sessions:
            se = sessions[k]
            if w > 0:
                add((se["wf"], se["last"], t), w)
                add((se["wf"], se["last"], ANY), w)
                add((se["wf"], ANY, t), w)
                add((se["wf"], ANY, ANY), w)
        else:
            if free_slots == 0:
                dropped += 1
                continue
            free_slots -= 1
            opened += 1
            partial = FLAG_PARTIAL if ts[i] < grace_until else 0
            se = sessions[k] = dict(wf=int(open_wf[i]), last=t, start=float(ts[i]), lastts=float(ts[i]), steps=0,
                                    tpl=[], flags=partial, minw=w, maxscore=0.0)
            if w > 0 and not partial:
                add((GLOBAL, START, t), w)
                add((GLOBAL, START, ANY), w)
        se["minw"] = min(se["minw"], w)
        se["maxscore"] = max(se["maxscore"], float(line_scores[i]))
        if t not in se["tpl"]:
            if len(se["tpl"]) < n_tpl_max:
                se["tpl"].append(t)
            else:
                se["flags"] |= FLAG_OVERFLOW
        se["last"] = t
        se["lastts"] = max(se["lastts"], float(ts[i]))
        se["steps"] += 1
    return free_slots, opened, dropped


def decay_counts_py(counts, wf_factor, other_factor):
    """Twin of decay_counts over {(wf, prev, next): count}; returns the shrunk dict."""
    return {k: v * (wf_factor[k[0]] if k[0] < len(wf_factor) else other_factor) for k, v in counts.items()}


def close_sessions_py(now, timeout, learn_rate, report_score, min_support, min_runs, sigmas, sessions, counts,
                      max_trans, durations, core):
    """Twin of close_sessions. durations: {wf: [n, mean, var]}; core: {wf: [templates]}.
    Returns [(key, verdict, missing)] in no particular order; mutates sessions, counts, durations."""
    def get(key):
        return counts.get(key, 0.0)

    def add(key, w):
        if key in counts:
            counts[key] += w
        elif len(counts) < max_trans:
            counts[key] = w

    reported = []
    for k in list(sessions):
        se = sessions[k]
        w = se["wf"]
        idle = now - se["lastts"] > timeout
        n, mean, var = durations.get(w, [0, 0.0, 0.0])
        limit = math.expm1(mean + sigmas * math.sqrt(max(var, 0.0))) * 1.5 + 1.0
        overdue = n >= min_support and now - se["start"] > limit
        if not idle and not overdue:
            continue
        verdict, missing = CLOSED_OK, -1
        if se["flags"] & FLAG_PARTIAL:
            pass
        elif get((w, se["last"], ANY)) >= min_support and get((w, se["last"], END)) < 0.5:
            verdict = CLOSED_UNFINISHED
        elif (get((w, se["last"], END)) < 0.5 and get((w, se["last"], ANY)) >= min_runs - RUN_ROUNDING
              and get((w, IN, ANY)) >= min_runs - RUN_ROUNDING and get((w, IN, se["last"])) >= ALL_RUNS_SHARE * get((w, IN, ANY))):
            verdict = CLOSED_NEW_ENDING
        elif not se["flags"] & FLAG_OVERFLOW:
            for c in core.get(w, []):
                if c not in se["tpl"]:
                    verdict, missing = CLOSED_MISSING_STEP, c
                    break
        if not idle:
            if verdict != CLOSED_UNFINISHED:
                continue
            verdict = CLOSED_OVERDUE
        if verdict != CLOSED_OK and se["maxscore"] < report_score:
            reported.append((k, verdict, missing))
        weight = se["minw"]
        learnable = verdict in (CLOSED_OK, CLOSED_MISSING_STEP, CLOSED_NEW_ENDING)
        if learnable and weight > 0 and learn_rate > 0 and not se["flags"] & FLAG_PARTIAL:
            add((w, se["last"], END), weight)
            add((w, se["last"], ANY), weight)
            if not se["flags"] & FLAG_OVERFLOW:
                add((w, IN, ANY), weight)
                for t in se["tpl"]:
                    add((w, IN, t), weight)
            if not se["flags"] & FLAG_OVERFLOW and weight >= 1.0:
                d = math.log1p(max(0.0, se["lastts"] - se["start"]))
                a = max(1.0 / (n + 1.0), learn_rate)
                delta = d - mean
                durations[w] = [n + 1, mean + a * delta, (1.0 - a) * (var + a * delta * delta)]
        del sessions[k]
    return reported


def subspace_step_py(cov, basis, iters):
    b = np.array(basis, dtype=np.float64)
    for _ in range(iters):
        m = cov @ b
        spare = 0
        for j in range(m.shape[1]):
            for _ in range(2):
                for q in range(j):
                    m[:, j] -= (m[:, q] @ m[:, j]) * m[:, q]
            while np.linalg.norm(m[:, j]) < 1e-12 and spare < m.shape[0]:
                m[:, j] = 0.0
                m[spare, j] = 1.0
                spare += 1
                for q in range(j):
                    m[:, j] -= m[spare - 1, q] * m[:, q]
            m[:, j] /= np.linalg.norm(m[:, j])
        b = m
    lam = np.einsum("rj,rc,cj->j", b, cov, b)
    order = np.argsort(-lam, kind="stable")
    return b[:, order], lam[order]
