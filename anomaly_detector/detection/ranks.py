"""Ranks of a batch's lines among the lines that share their keys: what tiers count "so far in this batch".

Tier 2 counts a (bucket, template) up to each line; tier 3 counts a template's earlier lines in the
batch, so that a batch of 30,000 lines scores like batches of ten. A batch's keys are small integers
in a narrow range (template and key rows, one or two minute buckets), so both count into a table of
every combination (a kernel pass, or np.bincount) instead of sorting the lines; keys that span too
wide a range for such a table are sorted (the slow paths), with the same results.
"""
import numpy as np

from anomaly_detector import kernel_types as kt

# A table of key combinations is used while it has at most this many cells per line, plus a floor:
# counting into it is linear, and a sparse one costs no more than the sort it replaces.
CELLS_PER_LINE = 4
MIN_CELLS = 4096


def key_cells(keys):
    """(cell of each line, number of cells) of integer keys (arrays of one length), cells ordered as
    the keys are lexicographically (the first key most significant); None when the keys are not
    integers or their ranges make more cells than CELLS_PER_LINE per line (plus MIN_CELLS)."""
    n = keys[0].size
    if not n:
        return None
    cells, total = np.zeros(n, np.int64), 1
    for key in keys:
        if key.dtype.kind not in "iu":
            return None
        low = int(key.min())
        span = int(key.max()) - low + 1
        total *= span
        if total > CELLS_PER_LINE * n + MIN_CELLS:
            return None
        cells = cells * span + (key.astype(np.int64) - low)
    return cells, total


def running_counts(*keys):
    """1-based rank of each line among the lines of the batch with the same keys (arrays of one length)."""
    found = key_cells(keys)
    if found is None:
        return running_counts_slow_path(*keys)
    return cell_ranks(found[0], found[1])


@kt.entry((kt.I64_1D, kt.INT64), cache=True)
def cell_ranks(cells, size):
    """1-based rank of each line among the earlier lines of its cell (cells in 0..size-1): one pass."""
    seen = np.zeros(size, np.int64)
    ranks = np.empty(cells.shape[0], np.int64)
    for i in range(cells.shape[0]):
        seen[cells[i]] += 1
        ranks[i] = seen[cells[i]]
    return ranks


def running_counts_slow_path(*keys):
    """running_counts by a stable sort of the lines by their keys: for keys too wide for a table."""
    n = keys[0].size
    order = np.lexsort((np.arange(n),) + tuple(reversed(keys)))
    starts = np.ones(n, bool)
    if n:
        starts[1:] = False
        for key in keys:
            k = key[order]
            starts[1:] |= k[1:] != k[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    ranks = np.empty(n, np.int64)
    ranks[order] = np.arange(n) - group_start + 1
    return ranks


def unique_lines(code, *keys):
    """np.unique(code, return_inverse=True, return_counts=True) -> (unique codes, each line's index
    among them, lines of each), for a code that orders the lines as their integer keys do
    lexicographically (key << 40 | bucket for keys, buckets): counted into a table of the keys'
    combinations where they are narrow enough (key_cells), else by np.unique's sort."""
    found = key_cells(keys)
    if found is None:
        uniq, inverse, counts = np.unique(code, return_inverse=True, return_counts=True)
        return uniq, inverse.reshape(-1), counts
    cells, size = found
    per_cell = np.bincount(cells, minlength=size)
    present = per_cell > 0
    rank = np.cumsum(present) - 1
    inverse = rank[cells]
    uniq = np.empty(int(rank[-1]) + 1, code.dtype)
    uniq[inverse] = code      # every line of a cell has its cell's code
    return uniq, inverse, per_cell[present]
