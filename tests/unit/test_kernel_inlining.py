"""kernel_types.inline_into_callers: which hot helpers are inlined into their kernels, and that an
inlined helper computes what it computes as a call (the kernels' own twin tests cover the rest)."""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.detection import novelty_kernels, output_kernels, series_kernels, volume_kernels


@njit
def _scaled(values, i, factor):
    values[i] = values[i] * factor + 1.0
    return values[i] > 2.0


@njit
def _loop(values, factor):
    above = 0
    for i in range(values.shape[0]):
        above += _scaled(values, i, factor)
    return above


def test_inlined_helper_gives_what_its_call_gives():
    values = np.linspace(-3.0, 3.0, 101)
    called = values.copy()
    expected = _loop(called, 1.7)        # compiled with _scaled as a call
    assert "_scaled" in "".join(_loop.inspect_llvm().values())
    kt.inline_into_callers(_scaled)
    assert _scaled.targetoptions["inline"] == "always"
    inlined = values.copy()
    fresh = njit(_loop.py_func)          # a caller compiled from now on inlines _scaled
    assert fresh(inlined, 1.7) == expected
    np.testing.assert_array_equal(inlined, called)
    assert "_scaled" not in "".join(fresh.inspect_llvm().values())   # no call left (compiled as a call, it is)
    assert _scaled(np.array([1.0]), 0, 2.0)   # still callable from Python


def test_hot_helpers_are_inlined():
    for helper in (series_kernels.step, series_kernels.spike_score, series_kernels.learn_record,
                   series_kernels._empty_mode, series_kernels.unseen_step,
                   series_kernels._learn_shift, series_kernels._learn, novelty_kernels._value_score,
                   volume_kernels._learn_key, output_kernels._put, output_kernels._put_int,
                   output_kernels._put_fixed):
        assert helper.targetoptions.get("inline") == "always", helper.py_func.__name__
