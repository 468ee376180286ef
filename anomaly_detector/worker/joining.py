"""Rebuild newline-separated text from ring batches, so the parsing front end can take them as a file.

Ring payloads are lines without separators (ipc/ring.py); records.parse_columns splits on LF.
"""
import numpy as np

from anomaly_detector import kernel_types as kt


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def join_lines(buf, starts, ends):
    """The lines buf[starts[i]:ends[i]] joined with LF (one after each line) as a new uint8 array."""
    n = starts.shape[0]
    total = 0
    for i in range(n):
        total += ends[i] - starts[i] + 1
    out = np.empty(total, np.uint8)
    pos = 0
    for i in range(n):
        k = ends[i] - starts[i]
        out[pos:pos + k] = buf[starts[i]:ends[i]]
        out[pos + k] = 10
        pos += k + 1
    return out


def source_runs(source_ids):
    """[(first, stop, source_id)] of consecutive lines sharing a source id, in order."""
    n = len(source_ids)
    if n == 0:
        return []
    cuts = np.flatnonzero(np.diff(source_ids)) + 1
    bounds = np.concatenate(([0], cuts, [n]))
    return [(int(a), int(b), int(source_ids[a])) for a, b in zip(bounds[:-1], bounds[1:])]
