"""Ranks of a batch's lines among the lines that share their keys: what tiers count "so far in this batch".

Tier 2 counts a (bucket, template) up to each line; tier 3 counts a template's earlier lines in the
batch, so that a batch of 30,000 lines scores like batches of ten.
"""
import numpy as np


def running_counts(*keys):
    """1-based rank of each line among the lines of the batch with the same keys (arrays of one length)."""
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
