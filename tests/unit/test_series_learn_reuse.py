"""SeriesBook.learn keeps what score() stepped (in place, the rows' copies from before the batch set
aside) for every series none of whose values has another weight than 1 (series.py): the rows it leaves
must be exactly those of the kernel's own learning pass, the series of a line with another weight must
still be learned by the kernel, and a score that no learn of its batch follows leaves nothing behind."""
from types import SimpleNamespace

import numpy as np

from anomaly_detector.detection import series_kernels as K
from anomaly_detector.detection.series import SeriesBook, host_codes

ARRAYS = ("state", "season", "seen", "labels", "record")


def batches(n_batches=6, lines=400, seed=5, span=600.0, gap=0.0):
    """Lines of two sources on two hosts (or none) with one or two numeric parameters (slots 0-2), some not
    numbers; each batch's times spread over `span` seconds, `gap` seconds after the batch before."""
    rng = np.random.default_rng(seed)
    t = 1.77e9
    for _ in range(n_batches):
        per_line = rng.integers(1, 3, lines)
        ptr = np.concatenate([[0], np.cumsum(per_line)]).astype(np.int64)
        m = int(ptr[-1])
        num = rng.lognormal(np.log(200), 0.3, m)
        num[rng.random(m) < 0.05] = np.nan
        slots = rng.integers(0, 3, m).astype(np.int32)
        ts = t + gap + np.sort(rng.uniform(0, span, lines))
        t = float(ts[-1])
        batch = SimpleNamespace(n=lines, param_ptr=ptr, param_num=num,
                                source_id=rng.integers(0, 2, lines).astype(np.int32),
                                host_id=rng.integers(-1, 2, lines).astype(np.int32), hosts=["api-1", "api-2"])
        yield batch, slots, ts


def kernel_learn(book, batch, rows, ts, weights):
    """The learning pass as it was before the reuse: the kernel over every value, on the book's rows."""
    K.score_series(batch.param_ptr, rows, batch.param_num, ts, weights.astype(np.float32), host_codes(batch),
                   book.state, book.season, book.seen, book.labels, book.record, book.threshold, book.suspicious,
                   book.multiplicity(), book.record_weight, book.shift_budget, book.episode_weight)


def run(weight_of_batch, reuse, every=7, **shape):
    book = SeriesBook(100, 16)
    scores = []
    for k, (batch, slots, ts) in enumerate(batches(**shape)):
        rows = book.rows_of(batch, slots)
        scores.append(book.score(batch, rows, ts)[0])
        weights = np.ones(batch.n, np.float32)
        weights[::every] = weight_of_batch(k)
        if reuse:
            book.learn(batch, rows, ts, weights)
        else:
            book._settle()   # score() stepped the rows: back to before the batch
            kernel_learn(book, batch, rows, ts, weights)
    return book, scores


def test_learning_from_scores_copies_equals_the_kernels_own_pass():
    reused, reused_scores = run(lambda k: 1.0, reuse=True)
    stepped, stepped_scores = run(lambda k: 1.0, reuse=False)
    for name in ARRAYS:
        assert np.array_equal(getattr(reused, name), getattr(stepped, name)), name
    assert all(np.array_equal(a, b) for a, b in zip(reused_scores, stepped_scores))
    assert reused.state[:len(reused.rows), K.N_OBS].sum() > 1000   # the series did learn


def test_a_batch_with_a_down_weighted_line_is_learned_by_the_kernel():
    # batches 2 and 4 hold lines learned with weight 0.1 (flagged lines): score's copies are not the answer
    weight = lambda k: 0.1 if k in (2, 4) else 1.0  # noqa: E731
    reused, _ = run(weight, reuse=True)
    stepped, _ = run(weight, reuse=False)
    for name in ARRAYS:
        assert np.array_equal(getattr(reused, name), getattr(stepped, name)), name
    ones, _ = run(lambda k: 1.0, reuse=True)
    assert not np.array_equal(ones.state, reused.state)   # the weights did matter


def test_batches_hours_apart_over_many_quarter_hours_are_put_back_whole():
    # score() copies of the time-of-day rows only the quarter hours a step can write (the batch's and the
    # visit each series had open before it, hours earlier here): what the kernel's own pass learns
    weight = lambda k: 0.1 if k % 2 else 1.0  # noqa: E731
    shape = dict(n_batches=10, span=5400.0, gap=7200.0)
    reused, reused_scores = run(weight, reuse=True, **shape)
    stepped, stepped_scores = run(weight, reuse=False, **shape)
    for name in ARRAYS:
        assert np.array_equal(getattr(reused, name), getattr(stepped, name)), name
    assert all(np.array_equal(a, b) for a, b in zip(reused_scores, stepped_scores))
    used = len(reused.rows)
    assert np.count_nonzero(reused.season[:used, K.PENDING]) > 50   # the visits did leave distances pending
    assert reused.state[:used, K.N_OBS].min() > 200
    # a score that no learn follows, hours after the last batch: the visits it ended are put back too
    before = {name: getattr(reused, name).copy() for name in ARRAYS}
    batch, slots, ts = list(batches(seed=9, **shape))[-1]
    ts = ts + (reused.state[:used, K.LAST_T].max() - ts[0]) + 7200.0
    reused.score(batch, reused.rows_of(batch, slots), ts)
    assert not np.array_equal(reused.season, before["season"])    # the kernel stepped them
    reused._settle()
    for name in ARRAYS:
        assert np.array_equal(getattr(reused, name), before[name]), name


def test_only_the_series_of_down_weighted_lines_step_again():
    # one line in 150 at weight 0.1: some series of a batch hold none of them and keep score's copies
    weight = lambda k: 0.1 if k in (1, 3) else 1.0  # noqa: E731
    batch, slots, _ts = next(batches())
    book = SeriesBook(100, 16)
    rows = book.rows_of(batch, slots)
    owner = np.repeat(np.arange(batch.n), np.diff(batch.param_ptr))
    again = set(rows[(rows >= 0) & (owner % 150 == 0)].tolist())
    assert again and again != set(rows[rows >= 0].tolist())   # both paths are taken
    reused, _ = run(weight, reuse=True, every=150)
    stepped, _ = run(weight, reuse=False, every=150)
    for name in ARRAYS:
        assert np.array_equal(getattr(reused, name), getattr(stepped, name)), name
    ones, _ = run(lambda k: 1.0, reuse=True, every=150)
    assert not np.array_equal(ones.state, reused.state)


def test_a_score_that_no_learn_follows_leaves_the_learned_rows_as_they_were():
    # score() steps the book's rows in place: anything that reads the book before that batch's learn()
    # (a snapshot, the next batch's score, a learn of another batch) sees the rows from before it
    book = SeriesBook(100, 16)
    it = batches()
    for _ in range(3):
        batch, slots, ts = next(it)
        rows = book.rows_of(batch, slots)
        book.score(batch, rows, ts)
        book.learn(batch, rows, ts, np.ones(batch.n, np.float32))
    before = {name: getattr(book, name).copy() for name in ARRAYS}
    snapshot = book.state_dict()
    batch, slots, ts = next(it)
    rows = book.rows_of(batch, slots)
    first = book.score(batch, rows, ts)
    assert book.state_dict() == snapshot
    for name in ARRAYS:
        assert np.array_equal(getattr(book, name), before[name]), name
    again = book.score(batch, rows, ts)        # scored twice: the same answer, from the same rows
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(first, again))
    book.learn(batch, rows.copy(), ts, np.ones(batch.n, np.float32))   # not the rows score() saw: stepped anew
    reference = SeriesBook(100, 16)
    for batch, slots, ts in batches(n_batches=4):
        rows = reference.rows_of(batch, slots)
        reference.score(batch, rows, ts)
        reference.learn(batch, rows, ts, np.ones(batch.n, np.float32))
    for name in ARRAYS:
        assert np.array_equal(getattr(book, name), getattr(reference, name)), name
    assert not np.array_equal(book.state, before["state"])


def test_a_batch_with_no_series_value_scores_and_learns():
    # no parameter of the batch has a series row (a batch of lines with no numbers): nothing to copy
    book = SeriesBook(100, 16)
    batch, slots, ts = next(batches())
    rows = np.full(slots.size, -1, np.int64)
    best = book.score(batch, rows, ts)[0]
    assert not best.any()
    book.learn(batch, rows, ts, np.full(batch.n, 0.1, np.float32))
    assert not book.state.any()
