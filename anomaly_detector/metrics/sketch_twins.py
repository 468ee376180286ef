"""Test-only plain-Python twins of the kernels in sketch.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import numpy as np

from anomaly_detector.metrics.sketch import (
    _LOG_BASE,
    MIN_SECONDS,
)


def record_latencies_py(row, seconds):
    """Plain-Python twin of record_latencies."""
    last = len(row) - 1
    for s in seconds:
        if not s > MIN_SECONDS:
            index = 0
        else:
            index = min(int(np.log(s / MIN_SECONDS) / _LOG_BASE) + 1, last)
        row[index] += 1
