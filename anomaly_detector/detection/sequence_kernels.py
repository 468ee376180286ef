"""numba kernels of tier 4 (sequence): session ids from line bytes, session walk, transition scores.

tier4_sequence.SequenceTier owns the arrays and calls these per batch; each kernel has a plain-Python
twin (suffix _py, dicts instead of hash tables, in sequence_twins.py) that tests/unit/test_sequence_kernels.py
compares with it.
Functions suffixed _slow are Python the tier runs itself on rare lines (ids found by a user regex).
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

# Transition keys pack (workflow, previous, next) codes of 21 bits each into one int64.
CODE_BITS = 21
CODE_MASK = (1 << CODE_BITS) - 1
START = CODE_MASK          # "previous" of a session's first line
END = CODE_MASK - 1        # "next" after a session's last line
ANY = CODE_MASK - 2        # "next" of the row total of a (workflow, previous) context
IN = CODE_MASK - 3         # "previous" of composition rows: (workflow, IN, t) = sessions holding t
GLOBAL = CODE_MASK - 4     # "workflow" of the session-start rows
MAX_TEMPLATE = CODE_MASK - 8   # template ids (and workflow ids) at or above this take no part in sessions

# Why a line scored (TierResult reasons are built from these codes).
WHY_NONE, WHY_UNKNOWN_START, WHY_UNKNOWN_STEP, WHY_UNKNOWN_TRANSITION, WHY_RARE_TRANSITION = range(5)
# Verdicts on a closed session.
CLOSED_OK, CLOSED_UNFINISHED, CLOSED_MISSING_STEP, CLOSED_OVERDUE, CLOSED_NEW_ENDING = range(5)
# A step every learned run of a workflow held, when its composition count is at least this share of
# the runs (counts are decayed floats: exact equality is not to be had).
ALL_RUNS_SHARE = 0.99
# Runs are decayed counts (two runs a while ago count 1.98): a count this far below min_runs still makes it.
RUN_ROUNDING = 0.5
# Session flags: more distinct templates than a session keeps (its composition is partial); opened
# so soon after the tier started watching that it may have begun unseen (judge and learn nothing of it).
FLAG_OVERFLOW, FLAG_PARTIAL = 1, 2
# Counter slots of the int64 counters array the kernels update.
C_OPENED, C_DROPPED, C_TRANS_DROPPED, C_TRANS_SIZE, C_CLOSED, C_EVICTED = range(6)
N_COUNTERS = 6

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_KEY_MASK = 0x3FFFFFFFFFFFFFFF
_FAMILY_MIX = 0x9E3779B97F4A7C15   # spreads a learned id's family over the key bits (keys_at_params)
_U64 = 0xFFFFFFFFFFFFFFFF
_WS = (32, 9, 10, 11, 12, 13)


def pack(wf, prev, nxt):
    return (int(wf) << (2 * CODE_BITS)) | (int(prev) << CODE_BITS) | int(nxt)


@njit(cache=True)
def pack_nb(wf, prev, nxt):
    return (np.int64(wf) << np.int64(2 * CODE_BITS)) | (np.int64(prev) << np.int64(CODE_BITS)) | np.int64(nxt)


# ---------------------------------------------------------------- hashing and hash tables

@njit(cache=True)
def _mix(key):
    """splitmix64 finaliser: spreads packed keys (whose low bits are similar) over the table."""
    x = np.uint64(key)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@kt.entry((kt.I64_1D, kt.INT64), cache=True, _nrt=False)
def ht_find(hkeys, key):
    """Linear probing over int64 keys (-1 = empty): slot of key, or -1 - (slot to insert it)."""
    mask = len(hkeys) - 1
    i = np.int64(_mix(key) & np.uint64(mask))
    while True:
        k = hkeys[i]
        if k == key:
            return i
        if k == -1:
            return -1 - i
        i = (i + 1) & mask


@njit(cache=True, _nrt=False)
def ht_delete(hkeys, hvals, i):
    """Remove slot i by backward shift, so lookups never need tombstones."""
    mask = len(hkeys) - 1
    j = i
    while True:
        j = (j + 1) & mask
        if hkeys[j] == -1:
            break
        home = np.int64(_mix(hkeys[j]) & np.uint64(mask))
        stays = (i < home <= j) if i <= j else (home > i or home <= j)
        if not stays:
            hkeys[i] = hkeys[j]
            hvals[i] = hvals[j]
            i = j
    hkeys[i] = -1


@njit(cache=True, _nrt=False)
def ht_get(hkeys, hvals, key):
    i = ht_find(hkeys, key)
    return hvals[i] if i >= 0 else 0.0


@kt.entry((kt.I64_1D, kt.F64_1D, kt.INT64), cache=True)
def ht_rebuild(keys, vals, capacity):
    """A fresh table of `capacity` (a power of two) holding keys/vals (after pruning)."""
    hkeys = np.full(capacity, -1, np.int64)
    hvals = np.zeros(capacity, np.float64)
    for j in range(len(keys)):
        i = -1 - ht_find(hkeys, keys[j])
        hkeys[i] = keys[j]
        hvals[i] = vals[j]
    return hkeys, hvals


@njit(cache=True, _nrt=False)
def _add(hkeys, hvals, key, w, counters, max_size):
    i = ht_find(hkeys, key)
    if i >= 0:
        hvals[i] += w
        return
    if counters[C_TRANS_SIZE] >= max_size:
        counters[C_TRANS_DROPPED] += 1
        return
    i = -1 - i
    hkeys[i] = key
    hvals[i] = w
    counters[C_TRANS_SIZE] += 1


def id_hash_slow_path(data):
    """Session key of id bytes (non-negative, never -1), as the kernels' _id_hash gives it. Which pattern found the id does not count:
    "request 3fa2" and "req=3fa2" are one session."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h & _KEY_MASK


@njit(cache=True)
def _id_hash(buf, s, e):
    h = np.uint64(_FNV_OFFSET)
    for p in range(s, e):
        h = (h ^ np.uint64(buf[p])) * np.uint64(_FNV_PRIME)
    return np.int64(h & np.uint64(_KEY_MASK))


# ---------------------------------------------------------------- session ids from line bytes

@njit(cache=True)
def _is_ws(b):
    return b == 32 or (9 <= b <= 13)


@njit(cache=True)
def _token_from_start(buf, s, e, k):
    """Byte span of the k-th (0-based) whitespace-separated token of [s, e), or (-1, -1)."""
    p = s
    seen = 0
    while p < e:
        while p < e and _is_ws(buf[p]):
            p += 1
        if p >= e:
            break
        q = p
        while q < e and not _is_ws(buf[q]):
            q += 1
        if seen == k:
            return p, q
        seen += 1
        p = q
    return -1, -1


@njit(cache=True)
def _token_from_end(buf, s, e, k):
    """Byte span of the k-th token counted from the end (1 = last), or (-1, -1)."""
    q = e
    seen = 0
    while q > s:
        while q > s and _is_ws(buf[q - 1]):
            q -= 1
        if q <= s:
            break
        p = q
        while p > s and not _is_ws(buf[p - 1]):
            p -= 1
        seen += 1
        if seen == k:
            return p, q
        q = p
    return -1, -1


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I32_1D, kt.I8_1D, kt.I32_1D, kt.I32_1D, kt.I32_1D), cache=True)
def extract_keys(buf, cstart, cend, tids, loc_mode, loc_tok, loc_pre, loc_suf):
    """Session key per line (-1: none) and the id's byte span, from each template's learned locator.

    loc_* are indexed by template id. Mode 1: the id is in token loc_tok counted from the start,
    mode 2: counted from the end (1 = last); loc_pre/loc_suf bytes of that token are not the id.
    Other modes yield no key here (no id, undecided, or left to the regex path).
    """
    n = len(tids)
    keys = np.full(n, -1, np.int64)
    ks = np.zeros(n, np.int64)
    ke = np.zeros(n, np.int64)
    m = len(loc_mode)
    for i in range(n):
        t = tids[i]
        if t < 0 or t >= m:
            continue
        mode = loc_mode[t]
        if mode == 1:
            p, q = _token_from_start(buf, cstart[i], cend[i], loc_tok[t])
        elif mode == 2:
            p, q = _token_from_end(buf, cstart[i], cend[i], loc_tok[t])
        else:
            continue
        if p < 0:
            continue
        a = p + loc_pre[t]
        b = q - loc_suf[t]
        if b <= a:
            continue
        keys[i] = _id_hash(buf, a, b)
        ks[i] = a
        ke[i] = b
    return keys, ks, ke


def token_spans_slow_path(data):
    """(start, end) of each whitespace-separated token of `data` (bytes)."""
    spans = []
    p, e = 0, len(data)
    while p < e:
        while p < e and data[p] in _WS:
            p += 1
        if p >= e:
            break
        q = p
        while q < e and data[q] not in _WS:
            q += 1
        spans.append((p, q))
        p = q
    return spans


@kt.entry((kt.I64_1D, kt.I16_1D, kt.U64_1D, kt.I64_1D, kt.I64_1D), cache=True)
def param_hash_at(param_ptr, param_pos, param_hash, rows, want):
    """Hash of parameter number want[j] of line rows[j] (ParsedBatch CSR layout); found[j] says if present."""
    out = np.zeros(len(rows), np.uint64)
    found = np.zeros(len(rows), np.bool_)
    for j in range(len(rows)):
        i = rows[j]
        for q in range(param_ptr[i], param_ptr[i + 1]):
            if param_pos[q] == want[j]:
                out[j] = param_hash[q]
                found[j] = True
                break
    return out, found


@kt.entry((kt.BYTES, kt.I64_1D, kt.I16_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D,
           kt.I64_1D, kt.I64_1D), cache=True)
def keys_at_params(buf, param_ptr, param_pos, param_start, param_end, rows, want, family, keys, ks, ke):
    """Session key and id span of lines rows[j] from their parameter number want[j] (a learned id
    position, session_ids.py): the id's bytes hashed as extract_keys hashes them, mixed with the
    position's family, so that equal values of unrelated families are different sessions. Lines
    without that parameter, or with an empty one, keep their key."""
    for j in range(len(rows)):
        i = rows[j]
        for q in range(param_ptr[i], param_ptr[i + 1]):
            if param_pos[q] == want[j]:
                a, b = param_start[q], param_end[q]
                if b > a:
                    mixed = np.uint64(_id_hash(buf, a, b)) ^ (np.uint64(family[j] + 1) * np.uint64(_FAMILY_MIX))
                    keys[i] = np.int64(mixed & np.uint64(_KEY_MASK))
                    ks[i] = a
                    ke[i] = b
                break


# Status bits of a (template, position) key in learner_params' table (session_ids.SessionIdLearner).
POSITION_DONE, POSITION_NAMED = 1, 2


@kt.entry((kt.I64_1D, kt.I16_1D, kt.I32_1D, kt.F64_1D, kt.BOOL_1D, kt.I8_1D, kt.INT64, kt.INT64, kt.I16_1D),
          cache=True)
def learner_params(param_ptr, param_pos, tids, ts, candidate, status, max_position, per_key, taken):
    """The parameters session_ids.SessionIdLearner looks at in a batch, in order: those of a line with a
    template below candidate's size and a finite time, at a position below max_position, whose key
    (template * max_position + position; status holds a byte per key, at least candidate's size times
    max_position) is a candidate template's not decided yet (judged) or one named an id; of each key
    the first per_key only -> (parameter indexes, their lines, their keys, whether named, how many
    were judged before the per_key limit). taken (zeros, one per key like status; per_key below 2**15) counts each key's
    parameters and is left zeroed. One pass over the batch's parameters, most of them at positions
    decided long ago, instead of a dozen numpy passes and two set lookups over every one."""
    total = param_ptr[param_ptr.shape[0] - 1]
    sel, line, key = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.int64)
    named = np.empty(total, np.bool_)
    k = 0
    judged = 0
    for i in range(tids.shape[0]):
        t = np.int64(tids[i])
        if t < 0 or t >= candidate.shape[0] or not np.isfinite(ts[i]):
            continue
        for q in range(param_ptr[i], param_ptr[i + 1]):
            pos = np.int64(param_pos[q])
            if pos >= max_position:
                continue
            at = t * max_position + pos
            state = status[at]
            if candidate[t] and state & POSITION_DONE == 0:
                judged += 1
            elif state & POSITION_NAMED == 0:
                continue
            if taken[at] >= per_key:
                continue
            taken[at] += 1
            sel[k], line[k], key[k], named[k] = q, i, at, state & POSITION_NAMED != 0
            k += 1
    for j in range(k):
        taken[key[j]] = 0
    return sel[:k], line[:k], key[:k], named[:k], judged


# ---------------------------------------------------------------- where each line stands in its session

@kt.entry((kt.I64_1D, kt.I32_1D, kt.I32_1D, kt.I64_1D, kt.I32_1D, kt.I32_1D, kt.I32_1D), cache=True)
def walk_sessions(keys, tids, open_wf, ix_key, ix_slot, sd_wf, sd_last):
    """Per line: its session's workflow and previous template (START when the line opens a session).

    open_wf is the workflow a line would open. Read-only: earlier lines of the same session in this
    batch count as if already learned.
    """
    n = len(keys)
    wf = np.full(n, -1, np.int32)
    prev = np.full(n, -1, np.int32)
    cap = 16
    while cap < 2 * n:
        cap *= 2
    lkey = np.full(cap, -1, np.int64)
    lwf = np.zeros(cap, np.int32)
    llast = np.zeros(cap, np.int32)
    for i in range(n):
        k = keys[i]
        t = tids[i]
        if k < 0 or t < 0 or t >= MAX_TEMPLATE:
            continue
        j = ht_find(lkey, k)
        if j >= 0:
            wf[i] = lwf[j]
            prev[i] = llast[j]
            llast[j] = t
            continue
        j = -1 - j
        lkey[j] = k
        g = ht_find(ix_key, k)
        if g >= 0:
            s = ix_slot[g]
            wf[i] = sd_wf[s]
            prev[i] = sd_last[s]
        else:
            wf[i] = open_wf[i]
            prev[i] = START
        lwf[j] = wf[i]
        llast[j] = t
    return wf, prev


# ---------------------------------------------------------------- scoring transitions

SIGNIFICANT_LOG10 = 4.0   # a step this unlikely (1e-4) under "it follows anything alike" scores in full
# A step seen before in its context scores at most this share of `top`: the workflow has done it
# before, so one session doing it again is worth a look (suspicious), not an alert by itself.
SEEN_SHARE = 0.75
MAX_TAIL_TERMS = 2000


@njit(cache=True)
def poisson_log10_cdf(k, mean):
    """log10 P(X <= k) for X ~ Poisson(mean): how unlikely so few sightings are."""
    if mean <= 0.0:
        return 0.0
    term = -mean
    acc = term
    for j in range(1, min(k, MAX_TAIL_TERMS) + 1):
        term += math.log(mean / j)
        hi, lo = max(acc, term), min(acc, term)
        acc = hi + math.log1p(math.exp(lo - hi))
    return min(0.0, acc / math.log(10.0))


@njit(cache=True)
def surprise(c, out, share, min_support, rare_p, top):
    """0..top: how unexpected a step seen c times out of `out` in its context is.

    Two conditions, both needed: the step is rare in its context (probability under rare_p; never
    seen counts in full), and that rarity is significant given how common the step is elsewhere
    (`share`): a step that is rare everywhere (a slow-request line) is not out of order because
    one context has not met it yet. Nothing before min_support; a step seen before is capped at
    SEEN_SHARE of top.
    """
    if out < min_support:
        return 0.0
    if c < 0.5:
        rarity = 1.0
        k = 0
    else:
        p = c / out
        if p >= rare_p:
            return 0.0
        rarity = SEEN_SHARE * min(1.0, math.log(rare_p / p) / math.log(rare_p * out / 0.5))
        k = np.int64(c)
    significance = min(1.0, -poisson_log10_cdf(k, out * share) / SIGNIFICANT_LOG10)
    return top * min(rarity, significance)


@njit(cache=True)
def _share(tkeys, tcnt, wf, t):
    total = ht_get(tkeys, tcnt, pack_nb(wf, ANY, ANY))
    return ht_get(tkeys, tcnt, pack_nb(wf, ANY, t)) / total if total > 0 else 0.0


@kt.entry((kt.I32_1D, kt.I32_1D, kt.I32_1D, kt.F64_1D, kt.FLOAT64, kt.I64_1D, kt.F64_1D, kt.FLOAT64, kt.FLOAT64,
       kt.FLOAT64), cache=True)
def score_transitions(wf, prev, tids, ts, grace_until, tkeys, tcnt, min_support, rare_p, top):
    """Score every line from its (workflow, previous, template) against learned counts.

    Sessions opening before grace_until may have begun before the tier was watching: not judged.
    """
    n = len(tids)
    scores = np.zeros(n, np.float32)
    why = np.zeros(n, np.int8)
    for i in range(n):
        w = wf[i]
        if w < 0:
            continue
        t = tids[i]
        if prev[i] == START:
            if ts[i] < grace_until:
                continue
            out = ht_get(tkeys, tcnt, pack_nb(GLOBAL, START, ANY))
            c = ht_get(tkeys, tcnt, pack_nb(GLOBAL, START, t))
            s = surprise(c, out, _share(tkeys, tcnt, GLOBAL, t), min_support, rare_p, top)
            if s > 0:
                scores[i] = s
                why[i] = WHY_UNKNOWN_START
            continue
        sessions = ht_get(tkeys, tcnt, pack_nb(w, IN, ANY))
        if sessions >= min_support and ht_get(tkeys, tcnt, pack_nb(w, IN, t)) < 0.5:
            # Never part of this workflow: expected sightings if it were as common here as everywhere.
            s = surprise(0.0, ht_get(tkeys, tcnt, pack_nb(w, ANY, ANY)), _share(tkeys, tcnt, GLOBAL, t),
                         min_support, rare_p, top)
            if s > 0:
                scores[i] = s
                why[i] = WHY_UNKNOWN_STEP
                continue
        out = ht_get(tkeys, tcnt, pack_nb(w, prev[i], ANY))
        c = ht_get(tkeys, tcnt, pack_nb(w, prev[i], t))
        s = surprise(c, out, _share(tkeys, tcnt, w, t), min_support, rare_p, top)
        if s > 0:
            scores[i] = s
            why[i] = WHY_UNKNOWN_TRANSITION if c < 0.5 else WHY_RARE_TRANSITION
    return scores, why


# ---------------------------------------------------------------- learning: open and extend sessions

@kt.entry((kt.I64_1D, kt.I32_1D, kt.I32_1D, kt.F64_1D, kt.F32_1D, kt.F32_1D, kt.I32_1D, kt.BYTES, kt.I64_1D, kt.I64_1D,
       kt.I64_1D, kt.I32_1D, kt.I64_1D, kt.I32_1D, kt.I32_1D, kt.F64_1D, kt.F64_1D, kt.I32_1D, kt.I32_1D, kt.I32_2D,
       kt.I32_1D, kt.F32_1D, kt.F32_1D, kt.I32_1D, kt.U8_2D, kt.I32_1D, kt.I32_1D, kt.I64_1D, kt.F64_1D, kt.I64_1D,
       kt.INT64, kt.FLOAT64), cache=True, _nrt=False)
def learn_lines(keys, tids, open_wf, ts, weights, line_scores, src, buf, ks, ke,
                ix_key, ix_slot, sd_key, sd_wf, sd_last, sd_start, sd_lastts, sd_steps,
                sd_ntpl, sd_tpl, sd_flags, sd_minw, sd_maxscore, sd_src, sd_id, sd_idlen,
                free, tkeys, tcnt, counters, max_trans, grace_until):
    """Extend (or open) the session of every keyed line and count its transition when weight > 0.

    free[0] is the number of free session slots, free[1:] the stack of them. A line whose
    session cannot be opened (no free slot) is counted as dropped. sd_minw keeps the smallest
    weight of a session's lines: what its ending and composition are learned with.
    """
    n_tpl_max = sd_tpl.shape[1]
    id_max = sd_id.shape[1]
    for i in range(len(keys)):
        k = keys[i]
        t = tids[i]
        if k < 0 or t < 0 or t >= MAX_TEMPLATE:
            continue
        w = weights[i]
        g = ht_find(ix_key, k)
        if w > 0:
            # How common each template is among session lines: what order surprises are judged against.
            _add(tkeys, tcnt, pack_nb(GLOBAL, ANY, t), w, counters, max_trans)
            _add(tkeys, tcnt, pack_nb(GLOBAL, ANY, ANY), w, counters, max_trans)
        if g >= 0:
            s = ix_slot[g]
            if w > 0:
                _add(tkeys, tcnt, pack_nb(sd_wf[s], sd_last[s], t), w, counters, max_trans)
                _add(tkeys, tcnt, pack_nb(sd_wf[s], sd_last[s], ANY), w, counters, max_trans)
                _add(tkeys, tcnt, pack_nb(sd_wf[s], ANY, t), w, counters, max_trans)
                _add(tkeys, tcnt, pack_nb(sd_wf[s], ANY, ANY), w, counters, max_trans)
        else:
            if free[0] == 0:
                counters[C_DROPPED] += 1
                continue
            s = free[free[0]]
            free[0] -= 1
            g = -1 - g
            ix_key[g] = k
            ix_slot[g] = s
            sd_key[s] = k
            sd_wf[s] = open_wf[i]
            sd_start[s] = ts[i]
            sd_lastts[s] = ts[i]
            sd_steps[s] = 0
            sd_ntpl[s] = 0
            sd_flags[s] = FLAG_PARTIAL if ts[i] < grace_until else 0
            sd_minw[s] = w
            sd_maxscore[s] = 0.0
            sd_src[s] = src[i]
            m = min(id_max, ke[i] - ks[i])
            for j in range(m):
                sd_id[s, j] = buf[ks[i] + j]
            sd_idlen[s] = m
            counters[C_OPENED] += 1
            if w > 0 and sd_flags[s] == 0:
                _add(tkeys, tcnt, pack_nb(GLOBAL, START, t), w, counters, max_trans)
                _add(tkeys, tcnt, pack_nb(GLOBAL, START, ANY), w, counters, max_trans)
        sd_minw[s] = min(sd_minw[s], w)
        sd_maxscore[s] = max(sd_maxscore[s], line_scores[i])
        found = False
        for j in range(sd_ntpl[s]):
            if sd_tpl[s, j] == t:
                found = True
                break
        if not found:
            if sd_ntpl[s] < n_tpl_max:
                sd_tpl[s, sd_ntpl[s]] = t
                sd_ntpl[s] += 1
            else:
                sd_flags[s] |= FLAG_OVERFLOW
        sd_last[s] = t
        sd_lastts[s] = max(sd_lastts[s], ts[i])
        sd_steps[s] += 1


# ---------------------------------------------------------------- closing sessions

@kt.entry((kt.FLOAT64, kt.FLOAT64, kt.FLOAT64), cache=True)
def duration_limit(mean, var, sigmas):
    """Seconds beyond which a session of a workflow is overdue (stats of log1p(duration))."""
    return math.expm1(mean + sigmas * math.sqrt(max(var, 0.0))) * 1.5 + 1.0


@njit(cache=True, _nrt=False)
def _judge(s, sd_wf, sd_last, sd_ntpl, sd_tpl, sd_flags, tkeys, tcnt, core_ptr, core_tid, min_support, min_runs):
    """(verdict, missing template) for a session that has ended."""
    w = sd_wf[s]
    last = sd_last[s]
    out = ht_get(tkeys, tcnt, pack_nb(w, last, ANY))
    never_ended = ht_get(tkeys, tcnt, pack_nb(w, last, END)) < 0.5
    if out >= min_support and never_ended:
        return CLOSED_UNFINISHED, -1
    if never_ended and out >= min_runs - RUN_ROUNDING and _all_runs_held(w, last, tkeys, tcnt, min_runs):
        return CLOSED_NEW_ENDING, -1
    if (sd_flags[s] & FLAG_OVERFLOW) == 0 and w + 1 < len(core_ptr):
        for j in range(core_ptr[w], core_ptr[w + 1]):
            c = core_tid[j]
            found = False
            for q in range(sd_ntpl[s]):
                if sd_tpl[s, q] == c:
                    found = True
                    break
            if not found:
                return CLOSED_MISSING_STEP, c
    return CLOSED_OK, -1


@njit(cache=True, _nrt=False)
def _all_runs_held(w, t, tkeys, tcnt, min_runs):
    """Whether workflow w has at least min_runs learned runs and every one of them held step t."""
    runs = ht_get(tkeys, tcnt, pack_nb(w, IN, ANY))
    return runs >= min_runs - RUN_ROUNDING and ht_get(tkeys, tcnt, pack_nb(w, IN, t)) >= ALL_RUNS_SHARE * runs


@kt.entry((kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.FLOAT64, kt.I64_1D, kt.I32_1D, kt.I64_1D,
       kt.I32_1D, kt.I32_1D, kt.F64_1D, kt.F64_1D, kt.I32_1D, kt.I32_2D, kt.I32_1D, kt.F32_1D, kt.F32_1D, kt.I32_1D,
       kt.I64_1D, kt.F64_1D, kt.I64_1D, kt.INT64, kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.I64_1D, kt.I32_1D), cache=True)
def close_sessions(now, timeout, learn_rate, report_score, min_support, min_runs, sigmas,
                   ix_key, ix_slot, sd_key, sd_wf, sd_last, sd_start, sd_lastts,
                   sd_ntpl, sd_tpl, sd_flags, sd_minw, sd_maxscore, free,
                   tkeys, tcnt, counters, max_trans, dur_n, dur_mean, dur_var, core_ptr, core_tid):
    """End sessions idle longer than `timeout` or open longer than learned for their workflow.

    Ended sessions judged fine or missing a core step (not unfinished, not overdue) teach the END
    transition and the composition with the smallest weight of their lines, and the duration when that weight is 1 (learn_rate > 0). Returns (slots, verdicts, missing) of the
    sessions worth a Finding: their slot data stays readable until the next learn_lines.

    A workflow seen too few times for min_support (a nightly job) is still judged once it has
    min_runs learned runs: a session ending at a step that every run so far held and none ended at
    is CLOSED_NEW_ENDING. It is reported and learned: after so few runs a new ending is as likely a
    branch not seen yet as a failure, so it is reported once, not every time it recurs.
    """
    n = len(sd_key)
    out_slots = np.empty(n, np.int32)
    out_verdict = np.empty(n, np.int8)
    out_missing = np.empty(n, np.int32)
    n_out = _close_into(now, timeout, learn_rate, report_score, min_support, min_runs, sigmas, ix_key, ix_slot, sd_key,
                        sd_wf, sd_last, sd_start, sd_lastts, sd_ntpl, sd_tpl, sd_flags, sd_minw, sd_maxscore, free,
                        tkeys, tcnt, counters, max_trans, dur_n, dur_mean, dur_var, core_ptr, core_tid, out_slots,
                        out_verdict, out_missing)
    return out_slots[:n_out].copy(), out_verdict[:n_out].copy(), out_missing[:n_out].copy()


@kt.loop
def _close_into(now, timeout, learn_rate, report_score, min_support, min_runs, sigmas, ix_key, ix_slot, sd_key, sd_wf,
                sd_last, sd_start, sd_lastts, sd_ntpl, sd_tpl, sd_flags, sd_minw, sd_maxscore, free, tkeys, tcnt,
                counters, max_trans, dur_n, dur_mean, dur_var, core_ptr, core_tid, out_slots, out_verdict, out_missing):
    """close_sessions' loop, into its outputs (kt.loop: no reference counting) -> the sessions reported."""
    n_out = 0
    for s in range(len(sd_key)):
        if sd_key[s] < 0:
            continue
        w = sd_wf[s]
        idle = now - sd_lastts[s] > timeout
        overdue = False
        if w < len(dur_n) and dur_n[w] >= min_support:
            overdue = now - sd_start[s] > duration_limit(dur_mean[w], dur_var[w], sigmas)
        if not idle and not overdue:
            continue
        if sd_flags[s] & FLAG_PARTIAL:
            verdict, missing = CLOSED_OK, -1
        else:
            verdict, missing = _judge(s, sd_wf, sd_last, sd_ntpl, sd_tpl, sd_flags, tkeys, tcnt,
                                      core_ptr, core_tid, min_support, min_runs)
        if not idle:
            if verdict != CLOSED_UNFINISHED:
                continue   # overdue but at a step sessions end with: wait until it goes idle
            verdict = CLOSED_OVERDUE
        if verdict != CLOSED_OK and sd_maxscore[s] < report_score:
            out_slots[n_out] = s
            out_verdict[n_out] = verdict
            out_missing[n_out] = missing
            n_out += 1
        # A session that lacks a core step but ended where sessions end still teaches its ending and
        # composition: otherwise a core step decided early is never seen missing again, and a branch
        # that legitimately skips it (a payment declined) is reported for ever.
        learnable = verdict == CLOSED_OK or verdict == CLOSED_MISSING_STEP or verdict == CLOSED_NEW_ENDING
        if learnable and sd_minw[s] > 0 and learn_rate > 0 and not sd_flags[s] & FLAG_PARTIAL:
            _learn_ending(s, learn_rate, sd_minw[s], sd_wf, sd_last, sd_start, sd_lastts, sd_ntpl, sd_tpl,
                          sd_flags, tkeys, tcnt, counters, max_trans, dur_n, dur_mean, dur_var)
        g = ht_find(ix_key, sd_key[s])
        ht_delete(ix_key, ix_slot, g)
        sd_key[s] = -1
        free[0] += 1
        free[free[0]] = s
        counters[C_CLOSED] += 1
    return n_out


@njit(cache=True, _nrt=False)
def _learn_ending(s, learn_rate, weight, sd_wf, sd_last, sd_start, sd_lastts, sd_ntpl, sd_tpl, sd_flags,
                  tkeys, tcnt, counters, max_trans, dur_n, dur_mean, dur_var):
    w = sd_wf[s]
    _add(tkeys, tcnt, pack_nb(w, sd_last[s], END), weight, counters, max_trans)
    _add(tkeys, tcnt, pack_nb(w, sd_last[s], ANY), weight, counters, max_trans)
    if sd_flags[s] & FLAG_OVERFLOW:
        return   # composition unknown beyond the kept templates: do not teach a partial one
    _add(tkeys, tcnt, pack_nb(w, IN, ANY), weight, counters, max_trans)
    for q in range(sd_ntpl[s]):
        _add(tkeys, tcnt, pack_nb(w, IN, sd_tpl[s, q]), weight, counters, max_trans)
    if w < len(dur_n) and weight >= 1.0:
        # Mean of the first sessions, then an exponential average at the learning rate.
        d = math.log1p(max(0.0, sd_lastts[s] - sd_start[s]))
        a = max(1.0 / (dur_n[w] + 1.0), learn_rate)
        delta = d - dur_mean[w]
        dur_mean[w] += a * delta
        dur_var[w] = (1.0 - a) * (dur_var[w] + a * delta * delta)
        dur_n[w] += 1


@kt.entry((kt.I64_1D, kt.F64_1D, kt.F64_1D, kt.FLOAT64), cache=True)
def decay_counts(tkeys, tcnt, wf_factor, other_factor):
    """Shrink each used count by its workflow's factor (wf_factor[wf]); rows of other workflows
    (GLOBAL, or beyond the array) by other_factor. One pass over the table, nothing allocated."""
    n_wf = len(wf_factor)
    for i in range(len(tkeys)):
        k = tkeys[i]
        if k < 0:
            continue
        w = k >> (2 * CODE_BITS)
        tcnt[i] *= wf_factor[w] if w < n_wf else other_factor


@kt.entry((kt.I32_1D, kt.I64_1D, kt.I32_1D, kt.I64_1D, kt.I32_1D, kt.I64_1D), cache=True)
def evict_slots(slots, ix_key, ix_slot, sd_key, free, counters):
    """Forget sessions (oldest first, chosen by the caller) to make room; nothing is learned."""
    for s in slots:
        if sd_key[s] < 0:
            continue
        g = ht_find(ix_key, sd_key[s])
        ht_delete(ix_key, ix_slot, g)
        sd_key[s] = -1
        free[0] += 1
        free[free[0]] = s
        counters[C_EVICTED] += 1


# ---------------------------------------------------------------- window structure: the normal subspace

@kt.entry((kt.F64_2D, kt.F64_2D, kt.INT64), cache=True)
def subspace_step(cov, basis, iters):
    """Orthogonal iteration: `iters` rounds of basis <- orthonormalise(cov @ basis).

    Tracks the leading eigenvectors of a slowly changing covariance one cheap step per window, with
    no LAPACK call (a threaded eigh on a shared machine costs milliseconds). Returns the new basis,
    sorted by Rayleigh quotient, and those quotients (eigenvalue estimates).
    """
    d, k = basis.shape
    b = basis.copy()
    m = np.zeros((d, k))
    for _ in range(iters):
        for j in range(k):
            for r in range(d):
                acc = 0.0
                for c in range(d):
                    acc += cov[r, c] * b[c, j]
                m[r, j] = acc
        _orthonormalise(m)
        b[:, :] = m
    lam = np.zeros(k)
    for j in range(k):
        acc = 0.0
        for r in range(d):
            row = 0.0
            for c in range(d):
                row += cov[r, c] * b[c, j]
            acc += b[r, j] * row
        lam[j] = acc
    order = np.argsort(-lam)
    return b[:, order].copy(), lam[order].copy()


@njit(cache=True)
def _orthonormalise(m):
    """Modified Gram-Schmidt, twice; a column that vanishes becomes the next unit vector that fits."""
    d, k = m.shape
    spare = 0
    for j in range(k):
        for _ in range(2):
            for q in range(j):
                dot = 0.0
                for r in range(d):
                    dot += m[r, q] * m[r, j]
                for r in range(d):
                    m[r, j] -= dot * m[r, q]
        norm = math.sqrt(np.sum(m[:, j] * m[:, j]))
        while norm < 1e-12 and spare < d:
            m[:, j] = 0.0
            m[spare, j] = 1.0
            spare += 1
            for q in range(j):
                dot = m[spare - 1, q]
                for r in range(d):
                    m[r, j] -= dot * m[r, q]
            norm = math.sqrt(np.sum(m[:, j] * m[:, j]))
        m[:, j] /= norm

