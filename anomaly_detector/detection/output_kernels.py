"""Scored-line records (the replay record, docs/cli.md) written as JSON bytes by a numba kernel, a whole batch at a time.

pipeline.py hands it arrays from the engine plus pre-escaped template and reason texts; the
plain-Python twin `records_py` (output_twins.py) is what the tests compare it with (and what it must equal).
"""
import json
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

_NULL = np.frombuffer(b"null", np.uint8)
_EMPTY_LIST = np.frombuffer(b"[]", np.uint8)


def escaped(text):
    """JSON string literal (with quotes) of text, as bytes."""
    return json.dumps(text, ensure_ascii=False).encode("utf-8")


@njit(cache=True)
def _put(out, pos, src):
    for k in range(src.shape[0]):    # not a slice assignment: that may allocate, which kt.loop cannot
        out[pos + k] = src[k]
    return pos + src.shape[0]


@njit(cache=True)
def _put_int(out, pos, value):
    if value < 0:
        out[pos] = 45  # '-'
        pos += 1
        value = -value
    k = 1
    rest = value // 10
    while rest > 0:
        k += 1
        rest //= 10
    for j in range(k - 1, -1, -1):
        out[pos + j] = 48 + value % 10
        value //= 10
    return pos + k


@njit(cache=True)
def _put_fixed(out, pos, value, decimals):
    """value rounded to `decimals` places, trailing zeros dropped but one decimal kept: 12.5, 3.0."""
    scale = 10 ** decimals
    scaled = int(round(abs(value) * scale))
    if value < 0 and scaled > 0:
        out[pos] = 45
        pos += 1
    pos = _put_int(out, pos, scaled // scale)
    frac = scaled % scale
    out[pos] = 46  # '.'
    pos += 1
    keep = decimals
    while keep > 1 and frac % 10 == 0:
        frac //= 10
        keep -= 1
    for j in range(keep - 1, -1, -1):
        out[pos + j] = 48 + frac % 10
        frac //= 10
    return pos + keep


@kt.entry((kt.BYTES, kt.INT64, kt.F64_1D, kt.I32_1D, kt.BYTES, kt.I64_1D, kt.I64_1D, kt.F64_1D, kt.BOOL_1D, kt.F64_2D,
       kt.BYTES, kt.I64_1D, kt.I64_1D, kt.tuple_of(kt.BYTES, 12)), cache=True)
def write_records(prefix, first_line, ts, template_id, tpl_pool, tpl_start, tpl_end, score, anomaly, tiers,
                  reason_pool, reason_start, reason_end, keys):
    """One JSON object per line, newline-terminated, into a uint8 array (returned trimmed).

    keys: the constant pieces between values, in order (see KEYS below), as one uint8 array each.
    """
    n = ts.shape[0]
    size = 0
    for i in range(n):
        t = template_id[i]
        size += 260 + prefix.shape[0] + (tpl_end[t] - tpl_start[t]) + (reason_end[i] - reason_start[i])
    out = np.empty(size, np.uint8)
    return out[:_write_lines(prefix, first_line, ts, template_id, tpl_pool, tpl_start, tpl_end, score, anomaly, tiers,
                             reason_pool, reason_start, reason_end, keys, out)]


@kt.loop
def _write_lines(prefix, first_line, ts, template_id, tpl_pool, tpl_start, tpl_end, score, anomaly, tiers,
                 reason_pool, reason_start, reason_end, keys, out):
    """write_records' loop, into out (kt.loop: no reference counting) -> the bytes written."""
    pos = 0
    for i in range(ts.shape[0]):
        pos = _put(out, pos, prefix)
        pos = _put_int(out, pos, first_line + i)
        pos = _put(out, pos, keys[0])
        if math.isnan(ts[i]):
            pos = _put(out, pos, _NULL)
        else:
            pos = _put_fixed(out, pos, ts[i], 6)
        pos = _put(out, pos, keys[1])
        t = template_id[i]
        pos = _put_int(out, pos, t)
        pos = _put(out, pos, keys[2])
        pos = _put(out, pos, tpl_pool[tpl_start[t]:tpl_end[t]])
        pos = _put(out, pos, keys[3])
        pos = _put_fixed(out, pos, score[i], 2)
        pos = _put(out, pos, keys[4] if anomaly[i] else keys[5])
        for k in range(4):
            pos = _put(out, pos, keys[6 + k])
            pos = _put_fixed(out, pos, tiers[k, i], 2)
        pos = _put(out, pos, keys[10])
        if reason_end[i] > reason_start[i]:
            pos = _put(out, pos, reason_pool[reason_start[i]:reason_end[i]])
        else:
            pos = _put(out, pos, _EMPTY_LIST)
        pos = _put(out, pos, keys[11])
    return pos


KEYS = (', "ts": ', ', "template_id": ', ', "template": ', ', "score": ', ', "anomaly": true',
        ', "anomaly": false', ', "tiers": {"t1": ', ', "t2": ', ', "t3": ', ', "t4": ', '}, "reasons": ', '}\n')
KEY_ARRAYS = tuple(np.frombuffer(k.encode(), np.uint8) for k in KEYS)


def record_prefix(file_name):
    return np.frombuffer(b'{"file": ' + escaped(file_name) + b', "line": ', np.uint8)


# the byte writers, called several times per record by write_records, inlined into it (see
# kt.inline_into_callers: about 12% less CPU for write_records, the same bytes)
kt.inline_into_callers(_put, _put_int, _put_fixed)
