"""join_lines (the worker's ring batch -> LF-separated text kernel) against its plain-Python twin."""
import numpy as np

from anomaly_detector.worker.joining import join_lines, source_runs
from anomaly_detector.worker.worker_twins import join_lines_py


def test_kernel_equals_twin_on_spans_with_gaps_and_empty_lines():
    rng = np.random.default_rng(3)
    for _ in range(200):
        # read-only, as join_lines is declared (kernel_types.BYTES): a writable array would compile a
        # second version of the kernel here, ~4 s on a cold kernel cache
        buf = np.frombuffer(rng.integers(0, 256, int(rng.integers(1, 400))).astype(np.uint8).tobytes(), np.uint8)
        cuts = np.sort(rng.integers(0, len(buf) + 1, 2 * int(rng.integers(0, 20))))
        starts, ends = cuts[0::2].astype(np.int64), cuts[1::2].astype(np.int64)
        assert join_lines(buf, starts, ends).tobytes() == join_lines_py(buf, starts, ends).tobytes()


def test_source_runs_split_where_the_source_changes():
    assert source_runs(np.array([0, 0, 1, 1, 1, 0], np.uint32)) == [(0, 2, 0), (2, 5, 1), (5, 6, 0)]
    assert source_runs(np.array([], np.uint32)) == []
