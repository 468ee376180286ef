"""Tier 4 numba kernels against their plain-Python twins on random inputs (sequence_kernels.py)."""
import math

import numpy as np
import pytest

from anomaly_detector.detection import sequence_kernels as sk
from anomaly_detector.detection import sequence_twins as sk_twins

WORDS = [b"request", b"req=", b"blk_-12", b"a", b"completed", b"id=xyz9", b"\xc3\xa9t\xc3\xa9", b"42", b"ok,"]
SPACES = [b" ", b"  ", b"\t", b" \t "]


def _random_lines(rng, n):
    lines = []
    for _ in range(n):
        k = int(rng.integers(0, 8))
        parts = [WORDS[int(j)] + (b"%d" % int(rng.integers(0, 999)) if rng.random() < 0.5 else b"")
                 for j in rng.integers(0, len(WORDS), k)]
        text = b""
        for p in parts:
            text += SPACES[int(rng.integers(0, len(SPACES)))] if rng.random() < 0.3 or text else b""
            text += p
        lines.append(text)
    return lines


def _pack_lines(lines):
    ends = np.cumsum([len(x) for x in lines]).astype(np.int64)
    starts = ends - np.array([len(x) for x in lines], np.int64)
    buf = np.frombuffer(b"".join(lines), np.uint8).copy()
    return buf, starts, ends


def _table(counts, capacity=1024):
    keys = np.array([sk.pack(*k) for k in counts], np.int64)
    vals = np.array(list(counts.values()), np.float64)
    return sk.ht_rebuild(keys, vals, capacity)


def _as_counts(tkeys, tcnt):
    used = tkeys >= 0
    out = {}
    for k, v in zip(tkeys[used].tolist(), tcnt[used].tolist()):
        out[(k >> 42, (k >> 21) & sk.CODE_MASK, k & sk.CODE_MASK)] = v
    return out


class Store:
    """Session arrays as tier4_sequence.SessionStore lays them out, small."""

    def __init__(self, size, ntpl=4):
        self.ix_key = np.full(4 * size, -1, np.int64)
        self.ix_slot = np.zeros(4 * size, np.int32)
        self.key = np.full(size, -1, np.int64)
        self.wf, self.last, self.steps, self.ntpl, self.flags, self.src, self.idlen = (
            np.zeros(size, np.int32) for _ in range(7))
        self.start, self.lastts = np.zeros(size), np.zeros(size)
        self.minw, self.maxscore = np.zeros(size, np.float32), np.zeros(size, np.float32)
        self.tpl = np.zeros((size, ntpl), np.int32)
        self.ids = np.zeros((size, 8), np.uint8)
        self.free = np.zeros(size + 1, np.int32)
        self.free[0] = size
        self.free[1:] = np.arange(size)

    def learn(self, keys, tids, ts, w, scores, tkeys, tcnt, counters, max_trans, grace_until=-np.inf, open_wf=None):
        n = len(keys)
        buf = np.zeros(1, np.uint8)
        z = np.zeros(n, np.int64)
        open_wf = self.open_wf(tids) if open_wf is None else open_wf
        sk.learn_lines(keys, tids, open_wf, ts, w, scores, np.zeros(n, np.int32), buf, z, z,
                       self.ix_key, self.ix_slot, self.key, self.wf, self.last, self.start, self.lastts, self.steps,
                       self.ntpl, self.tpl, self.flags, self.minw, self.maxscore, self.src, self.ids, self.idlen,
                       self.free, tkeys, tcnt, counters, max_trans, grace_until)

    @staticmethod
    def open_wf(tids):
        """Workflow ids apart from template ids, as tier4_sequence.WorkflowBook makes them."""
        return (tids + 100).astype(np.int32)

    def as_dict(self):
        out = {}
        for s in np.flatnonzero(self.key >= 0).tolist():
            out[int(self.key[s])] = dict(wf=int(self.wf[s]), last=int(self.last[s]), start=float(self.start[s]),
                                         lastts=float(self.lastts[s]), steps=int(self.steps[s]),
                                         tpl=self.tpl[s, :self.ntpl[s]].tolist(), flags=int(self.flags[s]),
                                         minw=float(self.minw[s]), maxscore=float(self.maxscore[s]))
        return out


def _random_batch(rng, n, n_keys=12, n_tpl=6):
    keys = rng.integers(-1, n_keys, n).astype(np.int64) * 7919
    keys[keys < 0] = -1
    tids = rng.integers(0, n_tpl, n).astype(np.int32)
    ts = np.sort(rng.uniform(0, 100, n))
    w = rng.choice(np.array([0.0, 0.1, 1.0, 1.0, 1.0], np.float32), n)
    scores = rng.uniform(0, 100, n).astype(np.float32)
    return keys, tids, ts, w, scores


@pytest.mark.parametrize("seed", range(6))
def test_extract_keys_matches_twin(seed):
    rng = np.random.default_rng(seed)
    lines = _random_lines(rng, 60)
    buf, starts, ends = _pack_lines(lines)
    n_tpl = 5
    tids = rng.integers(-1, n_tpl + 1, len(lines)).astype(np.int32)
    mode = rng.integers(0, 5, n_tpl).astype(np.int8)
    tok = rng.integers(0, 4, n_tpl).astype(np.int32)
    tok[mode == 2] += 1
    pre = rng.integers(0, 3, n_tpl).astype(np.int32)
    suf = rng.integers(0, 3, n_tpl).astype(np.int32)
    got = sk.extract_keys(buf, starts, ends, tids, mode, tok, pre, suf)
    want = sk_twins.extract_keys_py(buf, starts, ends, tids, mode, tok, pre, suf)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert (got[0] >= 0).any() and (got[0] == -1).any()


def test_extract_keys_cuts_the_id_out_of_its_token():
    lines = [b"request abc123 received", b"done req=abc123,", b"x  y\tblk_-7"]
    buf, starts, ends = _pack_lines(lines)
    tids = np.array([0, 1, 2], np.int32)
    mode = np.array([1, 2, 2], np.int8)
    tok = np.array([1, 1, 1], np.int32)
    pre = np.array([0, 4, 0], np.int32)
    suf = np.array([0, 1, 0], np.int32)
    keys, ks, ke = sk.extract_keys(buf, starts, ends, tids, mode, tok, pre, suf)
    assert bytes(buf[ks[0]:ke[0]]) == b"abc123" and bytes(buf[ks[1]:ke[1]]) == b"abc123"
    assert keys[0] == keys[1] == sk.id_hash_slow_path(b"abc123")
    assert bytes(buf[ks[2]:ke[2]]) == b"blk_-7"


@pytest.mark.parametrize("seed", range(4))
def test_hash_table_insert_delete_matches_dict(seed):
    rng = np.random.default_rng(seed)
    hkeys = np.full(64, -1, np.int64)
    hvals = np.zeros(64, np.int32)
    ref = {}
    for step in range(400):
        k = int(rng.integers(0, 40)) * 1000003
        i = sk.ht_find(hkeys, k)
        if k in ref:
            assert i >= 0 and hvals[i] == ref[k]
            if rng.random() < 0.5:
                sk.ht_delete(hkeys, hvals, i)
                del ref[k]
        else:
            assert i < 0
            hkeys[-1 - i], hvals[-1 - i] = k, step
            ref[k] = step
        for key, val in ref.items():
            j = sk.ht_find(hkeys, key)
            assert j >= 0 and hvals[j] == val
    assert int((hkeys >= 0).sum()) == len(ref)


@pytest.mark.parametrize("seed", range(5))
def test_walk_sessions_matches_twin(seed):
    rng = np.random.default_rng(seed)
    st = Store(32)
    tkeys, tcnt = np.full(256, -1, np.int64), np.zeros(256)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    st.learn(*_random_batch(rng, 30), tkeys, tcnt, counters, 100)
    keys, tids, *_ = _random_batch(rng, 50, n_keys=40)
    got = sk.walk_sessions(keys, tids, st.open_wf(tids), st.ix_key, st.ix_slot, st.wf, st.last)
    open_ = {k: (v["wf"], v["last"]) for k, v in st.as_dict().items()}
    want = sk_twins.walk_sessions_py(keys, tids, st.open_wf(tids), open_)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert (got[1] == sk.START).any() and ((got[1] >= 0) & (got[1] != sk.START)).any()


@pytest.mark.parametrize("seed", range(5))
def test_score_transitions_matches_twin(seed):
    rng = np.random.default_rng(seed)
    counts = {}
    for _ in range(80):
        w, p, t = (int(x) for x in rng.integers(0, 5, 3))
        counts[(w, p, t)] = float(rng.choice([0.2, 1.0, 3.0, 200.0]))
    for w in range(5):
        for p in range(5):
            counts[(w, p, sk.ANY)] = sum(v for (a, b, _), v in counts.items() if (a, b) == (w, p))
        counts[(w, sk.IN, sk.ANY)] = float(rng.choice([10.0, 500.0]))
        for t in range(4):
            counts[(w, sk.IN, t)] = 100.0
        counts[(w, sk.ANY, sk.ANY)] = 1000.0
        for t in range(3):
            counts[(w, sk.ANY, t)] = float(rng.choice([1.0, 300.0]))
    counts[(sk.GLOBAL, sk.START, sk.ANY)] = 600.0
    counts[(sk.GLOBAL, sk.START, 0)] = 599.5
    counts[(sk.GLOBAL, sk.ANY, sk.ANY)] = 5000.0
    for t in range(4):
        counts[(sk.GLOBAL, sk.ANY, t)] = float(rng.choice([2.0, 1000.0]))
    tkeys, tcnt = _table(counts)
    n = 200
    wf = rng.integers(-1, 5, n).astype(np.int32)
    prev = rng.integers(0, 6, n).astype(np.int32)
    prev[prev == 5] = sk.START
    tids = rng.integers(0, 5, n).astype(np.int32)
    ts = np.arange(n, dtype=np.float64)
    got = sk.score_transitions(wf, prev, tids, ts, 20.0, tkeys, tcnt, 50.0, 0.01, 90.0)
    want = sk_twins.score_transitions_py(wf, prev, tids, ts, 20.0, counts, 50.0, 0.01, 90.0)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])
    assert len(set(got[1].tolist())) >= 4


def test_surprise_is_zero_before_support_top_when_unseen_and_falls_with_sightings():
    assert sk.surprise(0.0, 10.0, 0.5, 50.0, 0.01, 90.0) == 0.0
    assert sk.surprise(0.0, 1000.0, 0.5, 50.0, 0.01, 90.0) == 90.0
    seen = [sk.surprise(c, 10000.0, 0.5, 50.0, 0.01, 90.0) for c in (0.5, 1.0, 5.0, 20.0, 60.0, 100.0, 500.0)]
    # A transition seen before is at most suspicious (SEEN_SHARE of top), falling with sightings.
    assert seen == sorted(seen, reverse=True) and seen[0] == 90.0 * sk.SEEN_SHARE and seen[1] < seen[0]
    assert seen[-1] == 0.0
    for c, share in ((0.0, 0.0001), (0.7, 0.3), (3.0, 0.001), (40.0, 0.5)):
        assert math.isclose(sk.surprise(c, 9000.0, share, 50.0, 0.01, 90.0),
                            sk_twins.surprise_py(c, 9000.0, share, 50.0, 0.01, 90.0), rel_tol=1e-9, abs_tol=1e-9)


def test_surprise_needs_the_step_to_be_common_elsewhere():
    """Unseen after 2000 sightings of its context: telling for a step of share 0.1, not for 0.0005."""
    assert sk.surprise(0.0, 2000.0, 0.1, 50.0, 0.001, 90.0) == 90.0
    assert sk.surprise(0.0, 2000.0, 0.0005, 50.0, 0.001, 90.0) < 10.0
    assert sk.surprise(0.0, 2000.0, 0.0, 50.0, 0.001, 90.0) == 0.0


@pytest.mark.parametrize("k,mean", [(0, 0.5), (0, 30.0), (3, 2.0), (10, 40.0), (200, 500.0)])
def test_poisson_tail_matches_twin(k, mean):
    assert math.isclose(sk.poisson_log10_cdf(k, mean), sk_twins.poisson_log10_cdf_py(k, mean), rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_learn_lines_matches_twin(seed):
    rng = np.random.default_rng(seed)
    size, max_trans = 10, 60
    st = Store(size, ntpl=3)
    tkeys, tcnt = np.full(256, -1, np.int64), np.zeros(256)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    counts, sessions, free = {}, {}, size
    opened = dropped = 0
    for _ in range(3):
        batch = _random_batch(rng, 40, n_keys=14)
        st.learn(*batch, tkeys, tcnt, counters, max_trans, 30.0)
        free, o, d = sk_twins.learn_lines_py(batch[0], batch[1], st.open_wf(batch[1]), *batch[2:], counts, sessions, free,
                                       max_trans, 3, 30.0)
        opened, dropped = opened + o, dropped + d
    assert _as_counts(tkeys, tcnt) == pytest.approx(counts)
    got = st.as_dict()
    assert got.keys() == sessions.keys()
    for k, se in sessions.items():
        # pytest >= 9.2 refuses approx() over nested values: compare the list fields exactly
        assert got[k].keys() == se.keys()
        for field, value in se.items():
            if isinstance(value, (list, tuple)):
                assert list(got[k][field]) == list(value), field
            else:
                assert got[k][field] == pytest.approx(value), field
    assert counters[sk.C_OPENED] == opened and counters[sk.C_DROPPED] == dropped > 0
    assert {se["flags"] & sk.FLAG_PARTIAL for se in sessions.values()} == {0, sk.FLAG_PARTIAL}
    assert counters[sk.C_TRANS_SIZE] == len(counts) and int(st.free[0]) == free


@pytest.mark.parametrize("seed", range(6))
def test_close_sessions_matches_twin(seed):
    rng = np.random.default_rng(seed)
    size, max_trans = 40, 400
    st = Store(size, ntpl=3)
    tkeys, tcnt = np.full(1024, -1, np.int64), np.zeros(1024)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    batch = _random_batch(rng, 120, n_keys=30, n_tpl=4)
    st.learn(*batch, tkeys, tcnt, counters, max_trans, 10.0, open_wf=batch[1])   # workflows 0..3
    assert (st.flags[st.key >= 0] & sk.FLAG_PARTIAL).any()
    for w in range(4):   # some learned endings and compositions, some strong enough to judge with
        for t in range(4):
            for row, v in (((w, t, sk.END), rng.choice([0.0, 5.0])), ((w, t, sk.ANY), rng.choice([10.0, 80.0])),
                           ((w, sk.IN, t), 60.0)):
                i = sk.ht_find(tkeys, sk.pack(*row))
                if i < 0:
                    i = -1 - i
                    tkeys[i] = sk.pack(*row)
                    counters[sk.C_TRANS_SIZE] += 1
                tcnt[i] = v
        row = sk.pack(w, sk.IN, sk.ANY)   # runs: none, or enough for the few-runs judgement (min_runs 5)
        i = -1 - sk.ht_find(tkeys, row)
        tkeys[i], tcnt[i] = row, rng.choice([0.0, 60.0, 61.0])
        counters[sk.C_TRANS_SIZE] += 1
    dur_n = rng.choice([0.0, 100.0], 4)
    dur_mean = rng.uniform(0, 3, 4)
    dur_var = rng.uniform(0, 0.5, 4)
    core = {w: sorted({int(x) for x in rng.integers(0, 4, 2)}) for w in range(4)}
    core_ptr = np.zeros(5, np.int64)
    core_ptr[1:] = np.cumsum([len(core[w]) for w in range(4)])
    core_tid = np.array([t for w in range(4) for t in core[w]], np.int32)

    counts, sessions = _as_counts(tkeys, tcnt), st.as_dict()
    durations = {w: [dur_n[w], dur_mean[w], dur_var[w]] for w in range(4)}
    keys_before = st.key.copy()
    slots, verdicts, missing = sk.close_sessions(
        95.0, 20.0, 0.05, 99.5, 50.0, 5.0, 2.0, st.ix_key, st.ix_slot, st.key, st.wf, st.last, st.start, st.lastts,
        st.ntpl, st.tpl, st.flags, st.minw, st.maxscore, st.free, tkeys, tcnt, counters, max_trans,
        dur_n, dur_mean, dur_var, core_ptr, core_tid)
    reported = sk_twins.close_sessions_py(95.0, 20.0, 0.05, 99.5, 50.0, 5.0, 2.0, sessions, counts, max_trans, durations, core)
    got = sorted(zip(keys_before[slots].tolist(), verdicts.tolist(), missing.tolist()))
    assert got == sorted(reported)
    assert counters[sk.C_CLOSED] > len(got) > 0   # some ended quietly, some were worth a Finding
    assert st.as_dict().keys() == sessions.keys()
    assert _as_counts(tkeys, tcnt) == pytest.approx(counts)
    for w in range(4):
        assert [dur_n[w], dur_mean[w], dur_var[w]] == pytest.approx(durations[w])
    assert int(st.free[0]) == size - len(sessions)
    for key in sessions:
        assert sk.ht_find(st.ix_key, key) >= 0


def test_close_sessions_reports_every_verdict():
    """One workflow 0: 0 -> 1 -> 2, ending after 2; core steps 0, 1, 2."""
    st = Store(8, ntpl=4)
    counts = {(0, 0, sk.ANY): 100.0, (0, 1, sk.ANY): 100.0, (0, 2, sk.ANY): 100.0, (0, 2, sk.END): 100.0,
              (0, 0, 1): 100.0, (0, 1, 2): 100.0}
    tkeys, tcnt = _table(counts)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    counters[sk.C_TRANS_SIZE] = len(counts)
    ones = np.ones(7, np.float32)
    keys = np.array([1, 1, 1, 2, 2, 3, 3], np.int64)   # 1 complete, 2 stuck at 1, 3 skipped 1
    tids = np.array([0, 1, 2, 0, 1, 0, 2], np.int32)
    ts = np.array([0, 1, 2, 0, 1, 0, 2], np.float64)
    st.learn(keys, tids, ts, ones, np.zeros(7, np.float32), tkeys, tcnt, counters, 100, open_wf=tids * 0)
    dur = [np.array([100.0]), np.array([math.log1p(2.0)]), np.array([0.01])]
    core_ptr, core_tid = np.array([0, 3], np.int64), np.array([0, 1, 2], np.int32)
    args = (st.ix_key, st.ix_slot, st.key, st.wf, st.last, st.start, st.lastts, st.ntpl, st.tpl, st.flags, st.minw,
            st.maxscore, st.free, tkeys, tcnt, counters, 100, *dur, core_ptr, core_tid)
    keys_before = st.key.copy()
    slots, verdicts, _ = sk.close_sessions(30.0, 60.0, 0.01, 60.0, 50.0, 2.0, 4.0, *args)
    assert dict(zip(keys_before[slots].tolist(), verdicts.tolist())) == {2: sk.CLOSED_OVERDUE}
    slots, verdicts, missing = sk.close_sessions(200.0, 60.0, 0.01, 60.0, 50.0, 2.0, 4.0, *args)
    assert dict(zip(keys_before[slots].tolist(), zip(verdicts.tolist(), missing.tolist()))) == {
        3: (sk.CLOSED_MISSING_STEP, 1)}
    assert (st.key == -1).all() and st.free[0] == 8
    # Sessions 1 (complete) and 3 (missing a core step, ended where sessions end) taught their ending
    # and composition; 2 (unfinished, overdue) did not.
    learned = _as_counts(tkeys, tcnt)
    assert learned[(0, 2, sk.END)] == 102.0 and learned[(0, sk.IN, 1)] == 1.0 and learned[(0, sk.IN, 2)] == 2.0


def _few_runs_close(counts, keys, tids, min_runs, now=200.0):
    """Learn sessions of workflow 0 over the given counts, close them all; -> (reported, counts after)."""
    st = Store(8, ntpl=4)
    tkeys, tcnt = _table(counts)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    counters[sk.C_TRANS_SIZE] = len(counts)
    ones = np.ones(len(keys), np.float32)
    ts = np.arange(len(keys), dtype=np.float64)
    st.learn(keys, tids, ts, ones, np.zeros(len(keys), np.float32), tkeys, tcnt, counters, 100, open_wf=tids * 0)
    dur = [np.zeros(1), np.zeros(1), np.zeros(1)]
    keys_before = st.key.copy()
    slots, verdicts, _ = sk.close_sessions(now, 60.0, 0.01, 60.0, 50.0, min_runs, 4.0, st.ix_key, st.ix_slot, st.key,
                                           st.wf, st.last, st.start, st.lastts, st.ntpl, st.tpl, st.flags, st.minw,
                                           st.maxscore, st.free, tkeys, tcnt, counters, 100, *dur,
                                           np.zeros(2, np.int64), np.zeros(0, np.int32))
    return dict(zip(keys_before[slots].tolist(), verdicts.tolist())), _as_counts(tkeys, tcnt)


def test_close_sessions_judges_a_workflow_of_few_runs_by_its_runs():
    """Workflow 0: 0 -> 1 -> 2 run twice (a nightly job seen on two nights), far below min_support 50.
    A third run stopping after 1 ended where none of its runs did: reported once, and its ending learned."""
    two_runs = {(0, 0, 1): 2.0, (0, 0, sk.ANY): 2.0, (0, 1, 2): 2.0, (0, 1, sk.ANY): 2.0, (0, 2, sk.END): 2.0,
                (0, 2, sk.ANY): 2.0, (0, sk.IN, sk.ANY): 2.0, (0, sk.IN, 0): 2.0, (0, sk.IN, 1): 2.0,
                (0, sk.IN, 2): 2.0}
    stuck = (np.array([5, 5], np.int64), np.array([0, 1], np.int32))
    reported, learned = _few_runs_close(two_runs, *stuck, min_runs=2.0)
    assert reported == {5: sk.CLOSED_NEW_ENDING}
    assert learned[(0, 1, sk.END)] == 1.0 and learned[(0, sk.IN, sk.ANY)] == 3.0
    reported, _ = _few_runs_close(learned, *stuck, min_runs=2.0)
    assert reported == {}                          # the same ending again: learned, not reported twice
    reported, _ = _few_runs_close(two_runs, *stuck, min_runs=3.0)
    assert reported == {}                          # two runs are too few at min_runs 3
    # a step that not every run held (a branch) is no evidence: nothing reported
    branchy = {**two_runs, (0, sk.IN, 1): 1.0}
    reported, _ = _few_runs_close(branchy, *stuck, min_runs=2.0)
    assert reported == {}
    # a complete run is fine
    reported, _ = _few_runs_close(two_runs, np.array([6, 6, 6], np.int64), np.array([0, 1, 2], np.int32), 2.0)
    assert reported == {}


@pytest.mark.parametrize("seed", range(3))
def test_decay_counts_matches_twin(seed):
    rng = np.random.default_rng(seed)
    counts = {(int(w), int(p), int(t)): float(rng.uniform(0, 100)) for w, p, t in rng.integers(0, 6, (40, 3))}
    counts.update({(sk.GLOBAL, sk.START, int(t)): 50.0 for t in range(3)})
    tkeys, tcnt = _table(counts)
    wf_factor = rng.uniform(0.5, 1.0, 4)          # workflows 4 and 5 and GLOBAL take the other factor
    sk.decay_counts(tkeys, tcnt, wf_factor, 0.25)
    assert _as_counts(tkeys, tcnt) == pytest.approx(sk_twins.decay_counts_py(counts, wf_factor, 0.25))


def test_evict_slots_frees_and_counts():
    st = Store(4)
    tkeys, tcnt = np.full(64, -1, np.int64), np.zeros(64)
    counters = np.zeros(sk.N_COUNTERS, np.int64)
    keys = np.array([5, 6, 7], np.int64)
    st.learn(keys, np.zeros(3, np.int32), np.zeros(3), np.ones(3, np.float32), np.zeros(3, np.float32),
             tkeys, tcnt, counters, 10)
    slots = np.array([int(np.flatnonzero(st.key == 6)[0])], np.int32)
    sk.evict_slots(slots, st.ix_key, st.ix_slot, st.key, st.free, counters)
    assert counters[sk.C_EVICTED] == 1 and st.free[0] == 2
    assert sk.ht_find(st.ix_key, 6) < 0 and sk.ht_find(st.ix_key, 5) >= 0 and sk.ht_find(st.ix_key, 7) >= 0


@pytest.mark.parametrize("seed", range(3))
def test_subspace_step_matches_twin_and_converges_to_the_leading_eigenvectors(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(24, 24))
    cov = a @ np.diag(np.linspace(3.0, 0.0, 24) ** 4) @ a.T / 24
    start = rng.normal(size=(24, 5))
    start[:, 3] = start[:, 1]   # a dependent column must not break it
    got, want = sk.subspace_step(cov, start, 3), sk_twins.subspace_step_py(cov, start, 3)
    np.testing.assert_allclose(got[0], want[0], atol=1e-9)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-9)
    basis = start
    for _ in range(300):
        basis, lam = sk.subspace_step(cov, basis, 1)
    vals, vecs = np.linalg.eigh(cov)
    np.testing.assert_allclose(lam, vals[::-1][:5], rtol=1e-6)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-9)
    top = vecs[:, ::-1][:, :5]
    np.testing.assert_allclose(np.abs(top.T @ basis), np.eye(5), atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_param_hash_at_matches_twin(seed):
    rng = np.random.default_rng(seed)
    n = 50
    counts = rng.integers(0, 4, n)
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum(counts)
    pos = np.concatenate([rng.permutation(5)[:c] for c in counts]).astype(np.int16)
    hashes = rng.integers(0, 2**63, ptr[-1], dtype=np.uint64)
    rows = rng.integers(0, n, 30).astype(np.int64)
    want = rng.integers(0, 5, 30).astype(np.int64)
    got, twin = sk.param_hash_at(ptr, pos, hashes, rows, want), sk_twins.param_hash_at_py(ptr, pos, hashes, rows, want)
    np.testing.assert_array_equal(got[0], twin[0])
    np.testing.assert_array_equal(got[1], twin[1])
    assert got[1].any() and not got[1].all()


@pytest.mark.parametrize("seed", range(3))
def test_keys_at_params_matches_twin(seed):
    rng = np.random.default_rng(seed)
    n = 40
    buf = np.frombuffer(rng.integers(97, 123, 2000, dtype=np.uint8).tobytes(), np.uint8)
    counts = rng.integers(0, 4, n)
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum(counts)
    pos = np.concatenate([rng.permutation(5)[:c] for c in counts]).astype(np.int16)
    start = rng.integers(0, 1990, ptr[-1]).astype(np.int64)
    end = start + rng.integers(0, 9, ptr[-1])        # some empty values: no key from them
    rows = rng.permutation(n)[:25].astype(np.int64)
    want = rng.integers(0, 5, 25).astype(np.int64)
    family = rng.integers(0, 3, 25).astype(np.int64)
    outs = []
    for fn in (sk.keys_at_params, sk_twins.keys_at_params_py):
        keys, ks, ke = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
        fn(buf, ptr, pos, start, end, rows, want, family, keys, ks, ke)
        outs.append((keys, ks, ke))
    for got, twin in zip(*outs):
        np.testing.assert_array_equal(got, twin)
    assert (outs[0][0] >= 0).any() and (outs[0][0] == -1).any()


@pytest.mark.parametrize("seed", range(4))
def test_learner_params_matches_twin(seed):
    """SessionIdLearner's parameters of a batch: the kernel's one pass against the plain loop."""
    rng = np.random.default_rng(seed)
    n, positions, templates, per_key = 80, 6, 5, 4
    counts = rng.integers(0, 5, n)
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum(counts)
    pos = rng.integers(0, positions + 2, ptr[-1]).astype(np.int16)    # some past max_position
    tids = rng.integers(-1, templates + 2, n).astype(np.int32)       # -1 and ids past the candidates
    ts = rng.uniform(0, 100, n)
    ts[rng.random(n) < 0.1] = np.nan                                 # lines without a time are left out
    candidate = rng.random(templates) < 0.6
    candidate[0] = True
    status = rng.choice(np.array([0, sk.POSITION_DONE, sk.POSITION_DONE | sk.POSITION_NAMED], np.int8),
                        templates * positions)
    taken = np.zeros(status.size, np.int16)
    got = sk.learner_params(ptr, pos, tids, ts, candidate, status, positions, per_key, taken)
    twin = sk_twins.learner_params_py(ptr, pos, tids, ts, candidate, status, positions, per_key, taken.copy())
    for a, b in zip(got[:4], twin[:4]):
        np.testing.assert_array_equal(a, b)
    assert got[4] == twin[4]
    assert not taken.any()                                          # the scratch counts are left zeroed
    judged, kept = got[4], got[0].size
    assert 0 < judged and got[3].any() and kept < ptr[-1]           # judged, named and left-out parameters
    assert np.bincount(got[2]).max() == per_key                     # a busy key is cut at per_key
