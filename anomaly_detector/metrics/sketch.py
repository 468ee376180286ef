"""Latency sketch: log-spaced histogram rows that workers fill and the sidecar merges into quantiles.

One row per worker in shared memory (single writer, no locks); the sidecar sums rows over a
sliding window and reads p50/p95/p99 off the cumulative counts. Relative error <= 2**(1/4) - 1 (19%).
"""
import numpy as np

from anomaly_detector import kernel_types as kt

BUCKETS_PER_DOUBLING = 4
MIN_SECONDS = 1e-6
N_BUCKETS = 112                     # 1 µs .. ~2.7e2 s; slower lines land in the last bucket
_LOG_BASE = np.log(2.0) / BUCKETS_PER_DOUBLING


@kt.entry((kt.U64_1D, kt.F64_1D), cache=True)
def record_latencies(row, seconds):
    """Add each latency (float64 seconds) to the histogram row (uint64[N_BUCKETS])."""
    last = row.shape[0] - 1
    for s in seconds:
        if not s > MIN_SECONDS:          # also catches NaN
            index = 0
        else:
            index = int(np.log(s / MIN_SECONDS) / _LOG_BASE) + 1
            if index > last:
                index = last
        row[index] += 1


def bucket_upper_bounds():
    """Upper bound in seconds of each bucket (bucket 0 holds everything up to MIN_SECONDS)."""
    return MIN_SECONDS * np.exp(_LOG_BASE * np.arange(N_BUCKETS, dtype=np.float64))


def quantiles(histogram, qs=(0.5, 0.95, 0.99)):
    """{q: seconds} from a (merged) histogram; empty histogram gives NaN for every q."""
    counts = np.asarray(histogram, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return {q: float("nan") for q in qs}
    cumulative = np.cumsum(counts)
    bounds = bucket_upper_bounds()
    return {q: float(bounds[int(np.searchsorted(cumulative, q * total))]) for q in qs}
