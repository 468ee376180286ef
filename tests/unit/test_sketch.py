"""Latency sketch: numba kernel equals its twin; quantiles within the stated relative error."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.metrics.sketch import N_BUCKETS, quantiles, record_latencies
from anomaly_detector.metrics.sketch_twins import record_latencies_py

LATENCIES = st.lists(st.one_of(st.floats(min_value=0, max_value=1e4), st.just(float("nan")), st.just(-1.0)),
                     max_size=200)


@settings(max_examples=200, deadline=None)
@given(LATENCIES)
def test_kernel_matches_twin(values):
    a = np.zeros(N_BUCKETS, np.uint64)
    b = np.zeros(N_BUCKETS, np.uint64)
    record_latencies(a, np.array(values, dtype=np.float64))
    record_latencies_py(b, values)
    assert np.array_equal(a, b)
    assert a.sum() == len(values)


def test_quantiles_within_relative_error():
    rng = np.random.default_rng(1)
    values = rng.lognormal(mean=np.log(0.01), sigma=1.0, size=100_000)
    row = np.zeros(N_BUCKETS, np.uint64)
    record_latencies(row, values)
    got = quantiles(row)
    for q, estimate in got.items():
        true = np.quantile(values, q)
        assert abs(estimate / true - 1) < 0.2, (q, estimate, true)


def test_empty_histogram_gives_nan():
    assert all(np.isnan(v) for v in quantiles(np.zeros(N_BUCKETS, np.uint64)).values())
