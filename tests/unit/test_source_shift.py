"""The source-level shift test (source_shift_kernels.py): several series of one source shifting the same way
at once combine their evidence, judged once against the source's budget; kernel and twin alike."""
from types import SimpleNamespace

import numpy as np
import pytest

from anomaly_detector.detection import series_kernels as K
from anomaly_detector.detection import source_shift_kernels as SSK
from anomaly_detector.detection import source_shift_twins as T
from anomaly_detector.detection.series import SeriesBook


def _u_values(seed, series=6, sources=2, points=4000, shift_at=3000, shifted=(0, 1, 2, 3), level=3.0):
    """(per value: its row, its series' shift evidence after it, its time): `series` series per source whose
    evidence is an AR(1) beyond 1.5 (0 mostly, now and then a decade or two), one value every 10 s by turns;
    from shift_at on the `shifted` series of source 0 stand `level` decades higher."""
    rng = np.random.default_rng(seed)
    n_rows = series * sources
    u = np.zeros(n_rows)
    rows, us, ts = [], [], []
    for k in range(points * n_rows):
        r = int(rng.integers(0, n_rows))
        u[r] = 0.95 * u[r] + rng.normal(0.0, 0.3)
        step = k // n_rows >= shift_at and r < series and r in shifted
        rows.append(r)
        us.append(np.copysign(max(abs(u[r]) - 1.5, 0.0), u[r]) + (level if step else 0.0))
        ts.append(1.77e9 + 10.0 * k / n_rows)
    return np.array(rows, np.int64), np.array(us), np.array(ts), series, n_rows


def _kernel(rows, us, ts, series, n_rows, eligible=None):
    src = np.zeros((2, SSK.COLS))
    eligible = np.ones(n_rows, np.bool_) if eligible is None else eligible
    source_of = (np.arange(n_rows) // series).astype(np.int64)
    src[:, SSK.COUNT] = np.bincount(source_of, weights=eligible, minlength=2)
    ptr = np.arange(rows.size + 1, dtype=np.int64)
    st = np.zeros((n_rows, K.COLS))
    season = np.zeros((n_rows, K.SEASON_ROWS, K.SEASON_BUCKETS))
    out = SSK.score_sources(ptr, rows, us, ts, source_of, eligible, np.zeros(n_rows), src, st, season, 70.0, 40.0,
                            K.SHIFT_FLAGS_PER_DAY)
    return out, src


def _twin(rows, us, ts, series, n_rows):
    sources = [T.Source(), T.Source()]
    for r in range(n_rows):      # every eligible series counts from the start, at u 0
        sources[r // series].series_u[r] = 0.0
    return [sources[int(r) // series].value(int(r), u, t) for r, u, t in zip(rows, us, ts)], sources


@pytest.mark.parametrize("seed", [1, 2])
def test_kernel_matches_the_twin(seed):
    values = _u_values(seed)
    (best, which, kind, _, _, _), src = _kernel(*values)
    twin, sources = _twin(*values)
    assert np.allclose(best, [s for s, _ in twin], atol=1e-6)
    assert list(kind) == [k for _, k in twin]
    for s, source in enumerate(sources):
        assert src[s, SSK.EXC_N] == pytest.approx(source.n, rel=1e-9)
        assert src[s, SSK.TOTAL] == pytest.approx(source.total, rel=1e-9)
        assert src[s, SSK.GAP] == pytest.approx(source.gap, rel=1e-9)
    assert (best >= 70.0).any()                        # the test did fire in this run


def test_several_series_moving_together_fire_once_and_one_series_alone_does_not():
    rows, us, ts, series, n_rows = _u_values(3)
    (best, which, kind, _, _, together), _ = _kernel(rows, us, ts, series, n_rows)
    fired = np.flatnonzero(best >= 70.0)
    assert fired.size == 1                                   # one excursion, one loud line
    assert fired[0] >= 3000 * n_rows and kind[fired[0]] == SSK.KIND_SOURCE_UP
    assert rows[fired[0]] < series                           # source 0's
    assert together[fired[0]] >= 3
    assert ((best >= 40.0) & (best < 70.0)).sum() >= 2       # its evidence keeps the incident open
    # the same step in one series alone: each series' own test is there for it
    lone = _u_values(3, shifted=(0,))
    (best, _, _, _, _, _), _ = _kernel(*lone)
    assert not (best >= 70.0).any()


def test_a_source_of_one_judged_series_is_left_to_that_series():
    rows, us, ts, series, n_rows = _u_values(4, shifted=(0, 1, 2, 3, 4, 5))
    eligible = np.zeros(n_rows, np.bool_)
    eligible[0] = True
    (best, _, _, _, _, _), src = _kernel(rows, us, ts, series, n_rows, eligible)
    assert not best.any() and src[0, SSK.VALUES] == 0.0


def _batches(points=2600, series=6, shift_at=2000, factor=1.6, seed=7):
    """Lines of one source with one value each of `series` query-time series (slots), a line every 5 s by
    turns; from point shift_at on every series' values are `factor` times slower."""
    rng = np.random.default_rng(seed)
    for start in range(0, points * series, 1200):
        k = np.arange(start, min(start + 1200, points * series))
        slots = (k % series).astype(np.int64)
        num = rng.lognormal(np.log(40.0 + 10.0 * slots), 0.5)
        num = np.where(k // series >= shift_at, num * factor, num)
        batch = SimpleNamespace(n=k.size, param_ptr=np.arange(k.size + 1, dtype=np.int64), param_num=num,
                                source_id=np.zeros(k.size, np.int32))
        yield batch, slots, 1.77e9 + 5.0 * k


def _run_book(book, **shape):
    out = []
    for batch, slots, ts in _batches(**shape):
        rows = book.rows_of(batch, slots)
        best, which, kind, expected, level, together = book.score(batch, rows, ts)
        book.learn(batch, rows, ts, np.ones(batch.n, np.float32))
        out.append((best, kind))
    return np.concatenate([b for b, _ in out]), np.concatenate([k for _, k in out])


def test_a_source_whose_series_all_slow_down_a_little_is_flagged_by_the_source_test():
    best, kind = _run_book(SeriesBook(100, 16))
    fired = np.flatnonzero(best >= 70.0)
    assert fired.size and fired[0] >= 2000 * 6
    assert kind[fired[0]] in (SSK.KIND_SOURCE_UP, K.KIND_SHIFT_UP)
    assert (kind[fired] == SSK.KIND_SOURCE_UP).any()


def _learned_but_the_last(**kw):
    """A SeriesBook that scored and learned every batch of _batches(**kw) but the last; the batches."""
    book = SeriesBook(100, 16)
    batches = list(_batches(**kw))
    for batch, slots, ts in batches[:-1]:
        rows = book.rows_of(batch, slots)
        book.score(batch, rows, ts)
        book.learn(batch, rows, ts, np.ones(batch.n, np.float32))
    return book, batches


def test_the_source_test_is_saved_and_restored():
    book, batches = _learned_but_the_last(points=1500)
    saved = book.state_dict()
    assert np.asarray(saved["sources"]).shape[1] == SSK.COLS
    again = SeriesBook(100, 16)
    again.load(saved)
    assert np.array_equal(again.sources, book.sources)
    old = dict(saved)
    del old["sources"]                 # a snapshot from before the source test loads, its test anew
    older = SeriesBook(100, 16)
    older.load(old)
    assert not older.sources[:, SSK.VALUES].any()
    batch, slots, ts = batches[-1]
    outs = []
    for b in (book, again):
        rows = b.rows_of(batch, slots)
        outs.append(b.score(batch, rows, ts)[0])
    assert np.array_equal(outs[0], outs[1])


def test_a_score_that_no_learn_follows_leaves_the_source_test_as_it_was():
    book, batches = _learned_but_the_last(points=1500)
    before = book.sources.copy()
    batch, slots, ts = batches[-1]
    book.score(batch, book.rows_of(batch, slots), ts)
    book._settle()
    assert np.array_equal(book.sources[:, SSK.VALUES:], before[:, SSK.VALUES:])


def test_the_sources_rows_leave_the_series_arrays_checked_for_one_length():
    """state_shape checks a book's series arrays for one first dimension while a fresh book's share it: the
    sources' rows (one per source id) are an object of their own, so the check still holds."""
    from anomaly_detector.detection.state_shape import check_state_arrays
    from anomaly_detector.storage.atomic import StateShapeError
    book = SeriesBook(100, 16)
    book.sources = np.zeros((3, SSK.COLS))
    check_state_arrays("t3-series", SeriesBook(100, 16), book)
    book.labels = book.labels[:4]
    with pytest.raises(StateShapeError):
        check_state_arrays("t3-series", SeriesBook(100, 16), book)


def test_a_split_series_drop_counts_nothing_in_the_sum():
    """A split series' own test judges no drop (a load change drops many values' times at once): nor does
    its source's sum count one; a rise, and any move of a plain series, count up to SERIES_CLIP."""
    st = np.zeros((2, K.COLS))
    st[1, K.SPLIT_ONLY] = K.SPLIT_JUDGED
    assert SSK.clipped(st, 0, -5.0) == -SSK.SERIES_CLIP
    assert SSK.clipped(st, 1, -5.0) == 0.0
    assert SSK.clipped(st, 1, 5.0) == SSK.SERIES_CLIP


def _together_values(seed, series=6, points=4000, shift_at=3000, level=3.0):
    """As _u_values, one source whose series wander together (a shared AR(1): a daily load its young
    offsets do not yet remove moves them all), now and then a decade or two out together; from shift_at
    on every series stands `level` decades higher."""
    rng = np.random.default_rng(seed)
    shared = 0.0
    own = np.zeros(series)
    rows, us, ts = [], [], []
    for k in range(points * series):
        r = int(rng.integers(0, series))
        shared = 0.995 * shared + rng.normal(0.0, 0.1)
        own[r] = 0.95 * own[r] + rng.normal(0.0, 0.1)
        u = shared + own[r]
        rows.append(r)
        us.append(np.copysign(max(abs(u) - 1.5, 0.0), u) + (level if k // series >= shift_at else 0.0))
        ts.append(1.77e9 + 10.0 * k / series)
    return np.array(rows, np.int64), np.array(us), np.array(ts), series, series


def test_series_far_out_together_outweigh_a_source_whose_series_wander_together():
    """Series wandering together a decade or two out make the source's sum wander near as far as a clip
    of two decades allows; a shift of each three decades must still stand out from that (at that clip
    the shift summed little more than the wander, and scored below the threshold: shop postgres' five
    query series, each 2-4.6 decades out in a x3.4 drift, after nights of 1.3-2.1 together)."""
    values = _together_values(3)
    rows, us, ts, series, n_rows = values
    assert np.quantile(np.abs(us[: 3000 * series]), 0.99) > 0.8     # the wander: a decade out, together
    (best, _, kind, _, _, _), _ = _kernel(*values)
    fired = np.flatnonzero(best >= 70.0)
    assert fired.size and fired[0] >= 3000 * series and kind[fired[0]] == SSK.KIND_SOURCE_UP


def test_the_source_fires_and_shows_evidence_on_values_of_series_that_moved():
    """A shift of four of six series is reported on their values: a value of a series that did not move
    (a database's port numbers) stepping the sum over the threshold names nothing that moved."""
    for seed in (3, 6, 8):
        rows, us, ts, series, n_rows = _u_values(seed)
        (best, _, _, _, _, _), _ = _kernel(rows, us, ts, series, n_rows)
        loud = np.flatnonzero(best >= 40.0)
        assert loud.size and (best[loud] >= 70.0).any()
        assert np.isin(rows[loud], (0, 1, 2, 3)).all()


def test_a_stale_series_leaves_its_sources_sum_until_it_logs_again():
    """A series with no value for an hour (and its fast mean's span) no longer counts in its source's sum:
    its evidence tells of values hours old (a series logged only at night held postgres' sum down all
    afternoon). A value of it in the batch being scored brings it back."""
    book = SeriesBook(100, 16)
    _run_book(book, points=800)
    used = len(book.rows)
    now = float(book.state[:used, K.LAST_T].max())
    idle = np.zeros(used + 1, np.bool_)
    eligible, _ = book._source_sums(now, idle)
    assert eligible[:used].sum() == 6
    book.state[0, K.LAST_T] = now - 2.0 * 3600.0
    eligible, _ = book._source_sums(now, idle)
    assert not eligible[0] and eligible[1:used].all() and book.sources[0, SSK.COUNT] == 5
    idle[0] = True
    eligible, _ = book._source_sums(now, idle)
    assert eligible[0] and book.sources[0, SSK.COUNT] == 6


def test_series_moving_down_together_are_learned_but_not_raised():
    """Series of a source all faster, smaller or shorter together, none remarkable alone, are what a falling
    load does to a busy source (shop-api's took=, items=, hits= at night): the source test raises shifts up
    only. The sum's excursions below are still learned (a window is one chance for either side), by the
    kernel and the twin alike."""
    for seed in (3, 6):
        values = _u_values(seed, level=-3.0)
        (best, _, kind, _, _, _), src = _kernel(*values)
        assert not (best > 0.0).any() and not (kind == SSK.KIND_SOURCE_DOWN).any()
        assert src[0, SSK.PEAK] > K.U_START                   # the excursion under way, learned at its end
        twin, sources = _twin(*values)
        assert not any(s for s, _ in twin)
        assert src[0, SSK.PEAK] == pytest.approx(sources[0].peak, rel=1e-9)
        assert src[0, SSK.EXC_N] == pytest.approx(sources[0].n, rel=1e-9)
    # the same step up is raised
    (best, _, kind, _, _, _), _ = _kernel(*_u_values(3, level=3.0))
    assert (best >= 70.0).any() and (kind[best >= 70.0] == SSK.KIND_SOURCE_UP).all()
