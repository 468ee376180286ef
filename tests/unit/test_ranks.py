"""ranks.py: the table paths (cell_ranks kernel, np.bincount) against the sorting paths, on the same keys."""
import numpy as np
import pytest

from anomaly_detector.detection import ranks


def _keys(rng, n, high, dtype=np.int64, low=0):
    return rng.integers(low, high, n).astype(dtype)


@pytest.mark.parametrize("seed", range(6))
def test_running_counts_table_matches_the_sort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    buckets = _keys(rng, n, 3) + 29_000_000        # a batch spans a minute or two of event time
    keys = _keys(rng, n, 300, np.int32, low=-2)
    assert ranks.key_cells((buckets, keys)) is not None
    np.testing.assert_array_equal(ranks.running_counts(buckets, keys),
                                  ranks.running_counts_slow_path(buckets, keys))
    np.testing.assert_array_equal(ranks.running_counts(keys), ranks.running_counts_slow_path(keys))


def test_wide_keys_take_the_sort():
    keys = np.array([0, 10**9, 0, 5, 10**9], np.int64)
    assert ranks.key_cells((keys,)) is None
    assert ranks.running_counts(keys).tolist() == [1, 1, 2, 1, 2]
    assert ranks.key_cells((np.zeros(0, np.int64),)) is None
    assert ranks.running_counts(np.zeros(0, np.int64)).tolist() == []
    assert ranks.key_cells((np.array([1.0, 2.0]),)) is None


@pytest.mark.parametrize("seed", range(6))
def test_unique_lines_matches_np_unique(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    keys, buckets = _keys(rng, n, 200), _keys(rng, n, 4) + 29_000_000
    for code, parts in ((keys * (1 << 40) + buckets, (keys, buckets)), (keys, (keys,)),
                        (keys * (1 << 40) + buckets * 10**6, (keys, buckets * 10**6))):   # the last one too wide
        want = np.unique(code, return_inverse=True, return_counts=True)
        got = ranks.unique_lines(code, *parts)
        for w, g in zip(want, got):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w.reshape(-1))
