"""The detection kernels against their plain-Python twins, on random inputs."""
import math

import numpy as np
import pytest

from anomaly_detector.detection import novelty_kernels as K
from anomaly_detector.detection import novelty_twins as T
from anomaly_detector.detection import output_kernels as O
from anomaly_detector.detection import output_twins as O_twins
from anomaly_detector.detection import stats_kernels as S
from anomaly_detector.detection import stats_twins as ST


def test_count_tails_match_the_series_twin():
    rng = np.random.default_rng(7)
    for _ in range(400):
        mu, k, phi = rng.uniform(0.05, 60), float(rng.integers(0, 120)), rng.uniform(1, 5)
        upper, lower = S.log10_count_upper(k, mu, phi), S.log10_count_lower(k, mu, phi)
        assert upper == pytest.approx(ST.log10_count_upper(k, mu, phi), rel=1e-6, abs=1e-9)
        twin_lower = ST.log10_count_lower(k, mu, phi)
        if twin_lower > -10:  # the twin's 1 - P loses precision beyond this
            assert lower == pytest.approx(twin_lower, rel=1e-5, abs=1e-9)


def test_poisson_tail_is_exact_for_integer_counts():
    exact = math.log10(sum(math.exp(-2.0 + j * math.log(2.0) - math.lgamma(j + 1)) for j in range(10, 200)))
    assert S.log10_count_upper(10.0, 2.0, 1.0) == pytest.approx(exact, rel=1e-9)


def test_normal_tail_and_score_scale():
    for z in np.linspace(-8, 8, 33):
        assert S.log10_normal_two_sided(z) == pytest.approx(ST.log10_normal_two_sided(z), rel=1e-9, abs=1e-12)
    assert S.surprisal_score(-6.0) == 60.0
    assert S.surprisal_score(1.0) == 0.0 and S.surprisal_score(-30.0) == 100.0


def _random_batches(rng, n_batches, n_lines, n_templates, measurements=True):
    for _ in range(n_batches):
        tids = rng.integers(0, n_templates, n_lines).astype(np.int32)
        per_line = rng.integers(0, 4, n_lines)
        ptr = np.concatenate([[0], np.cumsum(per_line)]).astype(np.int64)
        m = int(ptr[-1])
        pos = np.concatenate([np.arange(c) for c in per_line]).astype(np.int16) if m else np.zeros(0, np.int16)
        num = rng.lognormal(3.0, 0.4, m)
        num[rng.random(m) < 0.3] = np.nan                       # some parameters are not numbers
        num[rng.random(m) < 0.01] *= 50.0                       # a few outliers
        hashes = rng.integers(0, 6, m).astype(np.uint64)        # low-cardinality values
        numeric = ~np.isnan(num)
        if measurements:
            hashes[numeric] = rng.integers(1000, 10**9, int(numeric.sum())).astype(np.uint64)
        hashes[rng.random(m) < 0.01] = rng.integers(100, 10**6, 1).astype(np.uint64)
        counts = rng.random(m) < 0.05                           # small counts: a count one step on is no news
        num[counts] = rng.integers(0, 5, int(counts.sum()))
        hashes[counts] = num[counts].astype(np.uint64) + np.uint64(500)
        weights = np.where(rng.random(n_lines) < 0.05, 0.1, 1.0).astype(np.float32)
        yield tids, ptr, pos, num, hashes, weights


@pytest.mark.parametrize("numeric", [True, False], ids=["template-slots", "pooled-categorical-only"])
def test_param_kernels_match_the_dict_twin(numeric):
    rng = np.random.default_rng(3)
    min_obs, alpha, base, max_values, n_templates = 20.0, 0.1, 0.01, 8, 5
    min_shift = 0.2  # small enough for the random stream to meet the drift-size gate both ways
    slot_index = np.full((n_templates, 16), -1, np.int32)
    next_slot = 0
    size = n_templates * 16
    num = np.zeros((size, K.NUM_COLS))
    cat_hash = np.zeros((size, max_values), np.uint64)
    cat_count = np.zeros((size, max_values))
    cat_nd = np.zeros(size, np.int32)
    cat_full = np.zeros(size, np.int8)
    cat_novelty = np.zeros((size, max_values), np.float32)
    cat_seen_at = np.zeros((size, max_values))
    cat_num = np.full((size, max_values), np.nan)
    cat_last = np.zeros(size, np.uint64)
    twins = {}
    surprised = 0
    # Pooled slots judge labels only: give them a stream of labels (and the odd new one).
    for tids, ptr, pos, nums, hashes, weights in _random_batches(rng, 12, 300, n_templates, measurements=numeric):
        slots = K.lookup_slots(tids, ptr, pos, slot_index)
        got = K.score_params(ptr, slots, nums, hashes, num, cat_hash, cat_count, cat_nd, cat_full, cat_novelty,
                             cat_seen_at, cat_num, cat_last, min_obs, alpha, min_shift, numeric)
        lines = [[(int(slots[j]), float(nums[j]), int(hashes[j])) for j in range(ptr[i], ptr[i + 1])]
                 for i in range(len(tids))]
        want = T.score_lines(lines, twins, min_obs, alpha, min_shift, numeric)
        surprised += int((got[0] > 0).sum())
        for i, (score, j, kind) in enumerate(want):
            assert got[0][i] == pytest.approx(score, abs=1e-3)
            if score > 0:
                assert got[2][i] == kind
                assert got[1][i] - ptr[i] == j
        slots, next_slot = K.assign_slots(tids, ptr, pos, slot_index, next_slot)
        K.learn_params(ptr, slots, nums, hashes, weights, num, cat_hash, cat_count, cat_nd, cat_full, cat_novelty,
                       cat_seen_at, cat_num, cat_last, min_obs, alpha, base, numeric)
        lines = [[(int(slots[j]), float(nums[j]), int(hashes[j])) for j in range(ptr[i], ptr[i + 1])]
                 for i in range(len(tids))]
        T.learn_lines(lines, weights.tolist(), twins, min_obs, alpha, base, max_values, numeric)
    assert surprised > 0, "the random stream should produce some surprise"
    for s, twin in twins.items():
        assert num[s, K.N_OBS] == pytest.approx(twin.n)
        assert num[s, K.CENTER] == pytest.approx(twin.center, abs=1e-9)
        assert num[s, K.SCALE] == pytest.approx(twin.scale, abs=1e-9)
        assert num[s, K.YBAR] == pytest.approx(twin.ybar, abs=1e-9)
        assert bool(cat_full[s]) == twin.full


def test_record_writer_matches_json_twin():
    rng = np.random.default_rng(11)
    n = 200
    ts = rng.uniform(1.7e9, 1.8e9, n)
    ts[rng.random(n) < 0.1] = np.nan
    ts[:3] = [1772445600.0, 1772445600.125, 0.5]
    tids = rng.integers(0, 4, n).astype(np.int32)
    texts = {0: "GET <*> 200", 1: 'quote " and \\ backslash <*>', 2: "ünïcode <*> ✓", 3: ""}
    pool = b"".join(O.escaped(texts[t]) for t in range(4))
    ends = np.cumsum([len(O.escaped(texts[t])) for t in range(4)]).astype(np.int64)
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    score = np.round(rng.uniform(0, 100, n), 3)
    score[:2] = [0.0, 100.0]
    anomaly = score >= 70
    tiers = rng.uniform(0, 100, (4, n))
    reasons = {i: ["reason %d \"x\"" % i] for i in np.flatnonzero(anomaly)[:20].tolist()}
    r_parts = [O.escaped(0) for _ in range(0)]
    r_start, r_end = np.zeros(n, np.int64), np.zeros(n, np.int64)
    size = 0
    for i, rs in sorted(reasons.items()):
        text = ("[" + ", ".join('"%s"' % r.replace('"', '\\"') for r in rs) + "]").encode()
        r_start[i], r_end[i] = size, size + len(text)
        r_parts.append(text)
        size += len(text)
    out = O.write_records(O.record_prefix("dir/a.log"), 5, ts, tids, np.frombuffer(pool, np.uint8), starts, ends,
                          score, anomaly, tiers, np.frombuffer(b"".join(r_parts) or b" ", np.uint8), r_start, r_end,
                          O.KEY_ARRAYS).tobytes()
    assert out == O_twins.records_py("dir/a.log", 5, ts, tids, texts, score, anomaly, tiers, reasons)


def test_a_measurement_that_moved_a_little_is_no_new_value():
    """A percentage with a fraction (41.6 after 41.2..41.4) is a measurement, not a new label; a far
    value, or a new integer code, still is news at first sight. Kernel and twin agree."""
    min_obs, alpha, base, max_values = 5.0, 0.1, 0.01, 8
    size = 4
    state = dict(num=np.zeros((size, K.NUM_COLS)), cat_hash=np.zeros((size, max_values), np.uint64),
                 cat_count=np.zeros((size, max_values)), cat_nd=np.zeros(size, np.int32),
                 cat_full=np.zeros(size, np.int8), cat_novelty=np.zeros((size, max_values), np.float32),
                 cat_seen_at=np.zeros((size, max_values)), cat_num=np.full((size, max_values), np.nan),
                 cat_last=np.zeros(size, np.uint64))
    twins = {}
    known = [41.2, 41.3, 41.4, 200.0, 404.0]
    values = [v for v in known for _ in range(20)]
    slots = np.array([0 if v < 100 else 1 for v in values], np.int32)
    nums = np.array(values)
    hashes = np.array([int(v * 10) for v in values], np.uint64)
    ptr = np.arange(len(values) + 1, dtype=np.int64)
    order = state["num"], state["cat_hash"], state["cat_count"], state["cat_nd"], state["cat_full"], \
        state["cat_novelty"], state["cat_seen_at"], state["cat_num"], state["cat_last"]
    K.learn_params(ptr, slots, nums, hashes, np.ones(len(values), np.float32), *order, min_obs, alpha, base, True)
    T.learn_lines([[(int(s), float(x), int(h))] for s, x, h in zip(slots, nums, hashes)], [1.0] * len(values),
                  twins, min_obs, alpha, base, max_values, True)
    probe = np.array([41.6, 90.5, 503.0])
    probe_slots = np.array([0, 0, 1], np.int32)
    probe_hashes = np.array([416, 905, 5030], np.uint64)
    got = K.score_params(np.arange(4, dtype=np.int64), probe_slots, probe, probe_hashes, *order, min_obs, alpha, 0.2,
                         True)
    want = T.score_lines([[(int(s), float(x), int(h))] for s, x, h in zip(probe_slots, probe, probe_hashes)], twins,
                         min_obs, alpha, 0.2, True)
    assert [round(float(g), 3) for g in got[0]] == [round(w[0], 3) for w in want]
    assert got[0][0] == 0.0 and got[0][1] > 0 and got[0][2] > 0
    assert got[2][1] == K.KIND_NEW_VALUE and got[2][2] == K.KIND_NEW_VALUE
    # Learned once, 41.6 comes back as a known young value: still no news (learned without novelty).
    one = np.array([0, 1], np.int64)
    K.learn_params(one, probe_slots[:1], probe[:1], probe_hashes[:1], np.ones(1, np.float32), *order, min_obs, alpha,
                   base, True)
    T.learn_lines([[(0, 41.6, 416)]], [1.0], twins, min_obs, alpha, base, max_values, True)
    again = K.score_params(one, probe_slots[:1], probe[:1], probe_hashes[:1], *order, min_obs, alpha, 0.2, True)
    assert again[0][0] == 0.0
    assert T.score_lines([[(0, 41.6, 416)]], twins, min_obs, alpha, 0.2, True)[0][0] == 0.0


def _categorical_state(size, max_values):
    return (np.zeros((size, K.NUM_COLS)), np.zeros((size, max_values), np.uint64), np.zeros((size, max_values)),
            np.zeros(size, np.int32), np.zeros(size, np.int8), np.zeros((size, max_values), np.float32),
            np.zeros((size, max_values)), np.full((size, max_values), np.nan), np.zeros(size, np.uint64))


def _feed(values, state, twins, min_obs, alpha, base, max_values, batch):
    """Score then learn `values` (one slot, one per line) batch by batch; kernel and twin must agree."""
    scores = []
    for at in range(0, len(values), batch):
        part = np.array(values[at:at + batch], dtype=np.float64)
        ptr = np.arange(len(part) + 1, dtype=np.int64)
        slots = np.zeros(len(part), np.int32)
        hashes = part.astype(np.uint64) + np.uint64(7)
        got = K.score_params(ptr, slots, part, hashes, *state, min_obs, alpha, 0.2, False)[0]
        want = T.score_lines([[(0, float(x), int(h))] for x, h in zip(part, hashes)], twins, min_obs, alpha, 0.2,
                             False)
        assert [round(float(g), 3) for g in got] == [round(w[0], 3) for w in want]
        scores += got.tolist()
        K.learn_params(ptr, slots, part, hashes, np.ones(len(part), np.float32), *state, min_obs, alpha, base, False)
        T.learn_lines([[(0, float(x), int(h))] for x, h in zip(part, hashes)], [1.0] * len(part), twins, min_obs,
                      alpha, base, max_values, False)
    return scores


@pytest.mark.parametrize("batch", [1, 4, 64])
def test_a_run_of_new_values_after_a_quiet_slot_is_raised(batch):
    """A waiting count that read 0 for 5,000 lines, then 35, 44, 38, 58: each alone is a mild surprise,
    the run is news (within batches and across them). A slot taking a new value every few lines all
    along (an open set) gains nothing from it. Kernel and twin agree."""
    min_obs, alpha, base, max_values = 20.0, 0.1, 0.01, 16
    quiet = [0.0] * 5000 + [35.0, 44.0, 38.0, 58.0]
    scores = _feed(quiet, _categorical_state(1, max_values), {}, min_obs, alpha, base, max_values, batch)
    first, third = scores[5000], scores[5002]
    assert 30 < first < 50, first            # one new value after a long quiet span: a mild surprise
    assert third >= 50 > first, (first, third)
    rng = np.random.default_rng(5)
    steady = [float(v) for v in rng.choice([1, 2, 3], 420)]
    for k in range(10):                       # a new value every 40 lines, from the start
        steady[40 * k + 30] = 100.0 + 10 * k
    steady += [300.0, 310.0]
    scores = _feed(steady, _categorical_state(1, max_values), {}, min_obs, alpha, base, max_values, batch)
    assert max(scores[-2:]) < 50, scores[-2:]


def test_mixed_count_scores_match_the_twin():
    rng = np.random.default_rng(11)
    n = 60
    mus = rng.uniform(0.05, 40, n)
    counts = np.floor(mus * rng.uniform(0, 8, n))
    phis, rel2s = rng.uniform(1, 5, n), rng.uniform(0.01, 0.6, n)
    got, want = S.count_upper_mixed_scores(counts, mus, phis, rel2s), ST.count_upper_mixed_scores(counts, mus, phis, rel2s)
    assert np.allclose(got, want, atol=0.5)   # the quadrature resolves the step of the tail to this
    assert (got > 0).sum() > 15 and (got == 100).sum() < n


def test_a_handful_of_lines_ten_times_their_forecast_scores_as_a_count_not_a_ratio():
    # a login burst over five minutes: 64 lines where 5.7 were expected, in clumps of 2, forecast within a third
    args = (np.array([64.0]), np.array([5.67]), np.array([2.08]), np.array([0.106]))
    assert S.count_upper_scores(*args)[0] < 40 <= 90 <= S.count_upper_mixed_scores(*args)[0]


def test_mixed_count_scores_are_rarely_high_at_the_forecast():
    # counts drawn with the error the score assumes: a log-normal forecast error and clumps of phi lines
    rng = np.random.default_rng(5)
    for mu, phi, rel2 in ((0.5, 1.0, 0.05), (3.0, 2.0, 0.1), (8.0, 3.0, 0.3), (8.0, 1.0, 1.0), (40.0, 1.5, 0.3)):
        n = 200_000
        counts = phi * rng.poisson(mu * rng.lognormal(0.0, math.sqrt(rel2), n) / phi)
        scores = S.count_upper_mixed_scores(counts.astype(float), np.full(n, mu), np.full(n, phi), np.full(n, rel2))
        assert (scores >= 50).mean() < 5e-5, (mu, phi, rel2)


@pytest.mark.parametrize("batch", [1, 16])
def test_a_count_pinned_far_beyond_its_known_values_is_raised_in_an_open_slot(batch):
    """A pool's in-use count (0..14 over days, each of 4..14 first seen after warm-up: an open slot) pinned
    at its size, 20, every other line: the open slot's rule forgave the recurrences of its new values, so
    a pool exhausted for ten minutes stayed at its first-sight surprise. 20 is far beyond every known
    value (not the count's next step): its recurrences are judged. 15, one step past 14, stays forgiven.
    Kernel and twin agree."""
    min_obs, alpha, base, max_values = 20.0, 0.1, 0.01, 16
    rng = np.random.default_rng(3)
    values = [float(v) for v in rng.integers(0, 4, 100)]
    for top in range(4, 15):                  # the count reaches one more value now and then
        values += [float(v) for v in rng.integers(0, top + 1, 300)]
    values += [float(v) for v in rng.integers(0, 15, 3000)]

    def pinned(at):
        out = []
        for v in rng.integers(0, 15, 20):
            out += [float(v), at]
        return out

    for at, raised in ((20.0, True), (15.0, False)):
        scores = _feed(values + pinned(at), _categorical_state(1, max_values), {}, min_obs, alpha, base,
                       max_values, batch)
        first = scores[len(values) + 1]
        assert 20 < first < 50, first             # one new value in a busy slot: a mild surprise
        assert (max(scores[len(values):]) >= 70) == raised, (at, max(scores[len(values):]))
