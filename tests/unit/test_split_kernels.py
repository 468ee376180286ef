"""Tier 3's series-lookup kernels (novelty_kernels.split_keys, split_view, series_rows) against their
plain-Python twins (novelty_twins), on random batches (split_keys with and without routes), and
split_keys against the vectorised form it replaced."""
import numpy as np
import pytest

from anomaly_detector.detection import novelty_kernels as K
from anomaly_detector.detection import novelty_twins as T
from anomaly_detector.detection import routes

POSITIONS, VALUES_KEY = 16, 256
PATHS = [b"/search?q=shoes", b"/search?q=hat", b"/product/12", b"/product/7", b"/", b"-", b"/cart#top", b"200"]


def _no_routes(n_slots=30, max_values=5):
    """split_keys' route arguments of a batch without value spans."""
    return (np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros((n_slots, max_values), np.uint64), np.zeros(n_slots, np.int32), np.zeros(n_slots, np.int8))


def _with_routes(rng, m, n_slots=30, max_values=5):
    """Value spans over PATHS and random route tables of the routes among them: (route hash of every
    value, split_keys' route arguments)."""
    which = rng.integers(0, len(PATHS), m)
    buf = np.frombuffer(b"".join(PATHS[k] for k in which), np.uint8)
    ends = np.cumsum([len(PATHS[k]) for k in which]).astype(np.int64)
    starts = ends - np.array([len(PATHS[k]) for k in which], np.int64)
    route = np.array([routes.route_hash(PATHS[k]) for k in which], np.uint64)
    distinct = np.array(sorted({routes.route_hash(p) for p in PATHS} - {0}), np.uint64)
    table = np.zeros((n_slots, max_values), np.uint64)
    nd = rng.integers(0, min(max_values, distinct.size) + 1, n_slots).astype(np.int32)
    for s in range(n_slots):
        table[s, :nd[s]] = distinct[rng.permutation(distinct.size)[:nd[s]]]
    full = (rng.random(n_slots) < 0.2).astype(np.int8)
    return route, (buf, starts, ends, table, nd, full)


def _batch(rng, n_lines=400, n_templates=6, n_slots=30, max_values=5):
    tids = rng.integers(-1, n_templates, n_lines).astype(np.int32)   # -1: numpy's last, as before
    per_line = rng.integers(0, 5, n_lines)
    ptr = np.concatenate([[0], np.cumsum(per_line)]).astype(np.int64)
    m = int(ptr[-1])
    # positions 0..3, sometimes repeated within a line (the last one holds the category)
    pos = rng.integers(0, 4, m).astype(np.int16)
    hashes = rng.integers(0, 8, m).astype(np.uint64)
    slots = rng.integers(-1, n_slots, m).astype(np.int64)
    rows = np.where((slots >= 0) & (rng.random(m) < 0.7), rng.integers(0, 50, m), -1).astype(np.int64)
    split_pos = rng.integers(-1, 4, n_templates).astype(np.int8)
    cat_full = (rng.random(n_slots) < 0.2).astype(np.int8)
    cat_nd = rng.integers(0, max_values + 1, n_slots).astype(np.int32)
    cat_hash = rng.integers(0, 8, (n_slots, max_values)).astype(np.uint64)
    return tids, ptr, pos, hashes, slots, rows, split_pos, cat_full, cat_hash, cat_nd


def _lines(tids, ptr, *per_param):
    return [(int(tids[i]), [tuple(a[j].item() for a in per_param) for j in range(ptr[i], ptr[i + 1])])
            for i in range(tids.size)]


@pytest.mark.parametrize("seed,spans", [(1, False), (2, False), (3, False), (1, True), (2, True), (3, True)])
def test_split_keys_match_the_twin(seed, spans):
    rng = np.random.default_rng(seed)
    tids, ptr, pos, hashes, slots, rows, split_pos, cat_full, cat_hash, cat_nd = _batch(rng)
    m = int(ptr[-1])
    route, extra = _with_routes(rng, m) if spans else (np.zeros(m, np.uint64), _no_routes())
    if spans:
        cat_full = (rng.random(cat_full.size) < 0.5).astype(np.int8)
    keys, cat = K.split_keys(tids, ptr, pos, hashes, slots, rows, split_pos, cat_full, cat_hash, cat_nd,
                             POSITIONS, VALUES_KEY, *extra)
    known = {s: [int(h) for h in cat_hash[s, :cat_nd[s]]] for s in range(cat_hash.shape[0])}
    known_routes = {s: [int(h) for h in extra[3][s, :extra[4][s]]] for s in range(cat_hash.shape[0])}
    want = T.split_keys(_lines(tids, ptr, pos, hashes, slots, rows, route), split_pos.tolist(), cat_full.tolist(),
                        known, POSITIONS, VALUES_KEY, known_routes if spans else None,
                        set(np.flatnonzero(extra[5]).tolist()))
    if spans:
        assert (keys >= K.ROUTE_KEY).sum() > 10, "the random batch should split some values by route"
    for i, line in enumerate(want):
        for k, (key, c) in enumerate(line):
            j = ptr[i] + k
            assert keys[j] == key
            assert cat[j] == (c + ptr[i] if c >= 0 else -1)
    assert (keys >= 0).sum() > 20, "the random batch should split some values"


@pytest.mark.parametrize("seed", [1, 2])
def test_split_view_matches_the_twin(seed):
    rng = np.random.default_rng(seed)
    tids, ptr, *_ = _batch(rng)
    m = int(ptr[-1])
    num = rng.normal(size=m)
    rows = rng.integers(-1, 20, m).astype(np.int64)
    split_rows = np.where(rng.random(m) < 0.4, rng.integers(20, 40, m), -1).astype(np.int64)
    split_of = np.where(split_rows >= 0, rng.integers(0, m, m), -1).astype(np.int64)
    got_ptr, values, view_rows, index, category = K.split_view(ptr, num, rows, split_rows, split_of)
    want = T.split_view([[(num[j], rows[j], split_rows[j], split_of[j]) for j in range(ptr[i], ptr[i + 1])]
                         for i in range(tids.size)])
    assert got_ptr[0] == 0 and np.all(np.diff(got_ptr) == [len(line) for line in want])
    for i, line in enumerate(want):
        for k, (x, row, at, cat) in enumerate(line):
            q = got_ptr[i] + k
            assert (values[q], view_rows[q], index[q], category[q]) == (x, row, at + ptr[i], cat)


def _split_keys_vectorised(tids, ptr, pos_of, hashes, slots, rows, split_pos, cat_full, cat_hash, cat_nd):
    """The numpy form tier3_novelty._split_slots had before split_keys (a matrix of known values)."""
    n = tids.size
    line_pos = split_pos[tids]
    owner = np.repeat(np.arange(n), np.diff(ptr))
    pos = line_pos[owner]
    is_cat = (pos >= 0) & (pos_of == pos)
    line_cat = np.full(n, -1, np.int64)
    line_cat[owner[is_cat]] = np.flatnonzero(is_cat)
    cand = np.flatnonzero((rows >= 0) & (pos >= 0) & ~is_cat)
    cand = cand[line_cat[owner[cand]] >= 0]
    cat = line_cat[owner[cand]]
    cat_slot = slots[cat]
    keep = (cat_slot >= 0) & (cat_full[np.maximum(cat_slot, 0)] == 0)
    cand, cat, cat_slot = cand[keep], cat[keep], cat_slot[keep]
    known = cat_hash[cat_slot] == hashes[cat][:, None]
    known &= np.arange(cat_hash.shape[1])[None, :] < cat_nd[cat_slot][:, None]
    found = known.any(axis=1)
    cand, cat = cand[found], cat[found]
    keys = np.full(slots.size, -1, np.int64)
    keys[cand] = (slots[cand] * POSITIONS + pos[cand]) * VALUES_KEY + known[found].argmax(axis=1)
    of = np.full(slots.size, -1, np.int64)
    of[cand] = cat
    return keys, of


@pytest.mark.parametrize("seed", [4, 5])
def test_split_keys_equal_the_vectorised_form(seed):
    args = _batch(np.random.default_rng(seed))
    keys, cat = K.split_keys(*args, POSITIONS, VALUES_KEY, *_no_routes())
    want_keys, want_cat = _split_keys_vectorised(*args)
    assert np.array_equal(keys, want_keys) and np.array_equal(cat, want_cat)


@pytest.mark.parametrize("seed", [1, 2])
def test_series_rows_match_the_twin(seed):
    rng = np.random.default_rng(seed)
    tids, ptr, _pos, _hashes, slots, *_ = _batch(rng)
    m = int(ptr[-1])
    num = rng.normal(size=m)
    num[rng.random(m) < 0.1] = np.nan
    num[rng.random(m) < 0.02] = np.inf
    source = rng.integers(0, 4, tids.size).astype(np.int32)
    known = {(int(s) << 32) | int(src): row for row, (s, src) in enumerate(
        (s, src) for s in range(0, 30, 2) for src in range(3))}
    keys = np.array(sorted(known), np.int64)
    rows, got_keys = K.series_rows(ptr, source, slots, num, keys, np.array([known[k] for k in keys.tolist()]), 32)
    want = T.series_rows([(int(source[i]), [(int(slots[j]), float(num[j])) for j in range(ptr[i], ptr[i + 1])])
                          for i in range(tids.size)], known, 32)
    for i, line in enumerate(want):
        for k, (row, key) in enumerate(line):
            assert rows[ptr[i] + k] == row
            if row != -1:
                assert got_keys[ptr[i] + k] == key
    assert (rows >= 0).any() and (rows == K.ROW_NEW).any() and (rows == -1).any()
    empty = K.series_rows(ptr, source, slots, num, np.zeros(0, np.int64), np.zeros(0, np.int64), 32)[0]
    assert np.array_equal(empty, np.where(rows == -1, -1, K.ROW_NEW))


def test_series_rows_of_keys_that_share_a_memo_bucket_match_the_twin():
    # slots SERIES_MEMO apart of one source fall in one bucket of series_rows' table of keys met: each
    # value must still get its own key's row, known or new, however the keys alternate
    rng = np.random.default_rng(3)
    n = 400
    ptr = np.arange(n + 1, dtype=np.int64)
    slots = (rng.integers(0, 3, n) * K.SERIES_MEMO + 7).astype(np.int64)
    source = rng.integers(0, 2, n).astype(np.int32)
    num = rng.normal(size=n)
    known = {(int(s) << 32) | src: row for row, (s, src) in enumerate(
        [(7, 0), (7 + K.SERIES_MEMO, 1), (7 + 2 * K.SERIES_MEMO, 0)])}
    keys = np.array(sorted(known), np.int64)
    rows, _ = K.series_rows(ptr, source, slots, num, keys, np.array([known[k] for k in keys.tolist()]), 32)
    want = T.series_rows([(int(source[i]), [(int(slots[i]), float(num[i]))]) for i in range(n)], known, 32)
    assert rows.tolist() == [line[0][0] for line in want]
    assert (rows >= 0).any() and (rows == K.ROW_NEW).any()
