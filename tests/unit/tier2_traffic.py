"""Hand-made traffic for the tier-2 tests: Poisson lines per (template, source) and minute."""
from types import SimpleNamespace

import numpy as np


def poisson_lines(rates_at, start, minutes, rng, factor=None):
    """Lines of `minutes` minutes from `start`: rates_at(minute start) -> {(template, source): lines a
    minute}, times factor(minute start, template) when given -> (batch, its times), in time order."""
    ts, tids, srcs = [], [], []
    for m in range(minutes):
        t0 = start + 60.0 * m
        for (tid, src), rate in rates_at(t0).items():
            n = rng.poisson(rate * (factor(t0, tid) if factor else 1.0))
            ts += list(t0 + rng.uniform(0, 60, n))
            tids += [tid] * n
            srcs += [src] * n
    order = np.argsort(ts, kind="stable")
    batch = SimpleNamespace(n=len(ts), template_id=np.asarray(tids, np.int32)[order],
                            source_id=np.asarray(srcs, np.int32)[order])
    return batch, np.asarray(ts, float)[order]
