"""numba kernels that render rows of a Loghub _structured.csv from byte spans, as csv.writer would.

loghub_csv.write_structured feeds them spans of the parsed buffer (header fields, content, the
parameters) and per-template pieces it renders once in Python. The rules are those of Python's
csv.writer with QUOTE_MINIMAL and "\\r\\n" line ends: a cell holding a comma, a double quote, CR
or LF is wrapped in double quotes and its double quotes are doubled. The ParameterList cell is
repr() of a list of str, which the kernels write for ASCII values (CPython's unicode_repr: the
quote is ' unless the text holds ' and no ", which then gives "; the quote and backslash are
escaped, tab, LF and CR written \\t \\n \\r, other control bytes \\xhh). Whether a non-ASCII
character is printable is Unicode's business, so params_need_repr marks rows with a non-ASCII
value; the caller renders those in Python and passes them in whole (`py_row`).
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

COMMA, QUOTE, APOS, BACKSLASH, CR, LF = 44, 34, 39, 92, 13, 10
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8).copy()


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I64_1D), cache=True)
def params_need_repr(buf, pptr, pstart, pend):
    """Per line: whether a parameter holds a non-ASCII byte (repr() of it is left to Python)."""
    n = pptr.shape[0] - 1
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        for j in range(pptr[i], pptr[i + 1]):
            for p in range(pstart[j], pend[j]):
                if buf[p] >= 128:
                    out[i] = True
                    break
            if out[i]:
                break
    return out


@njit(cache=True, inline="always")
def _scan(buf, s, e):
    """(needs quoting, number of double quotes) of the bytes buf[s:e]; branch-free so LLVM vectorises it."""
    quotes = 0
    special = 0
    for p in range(s, e):
        b = buf[p]
        quotes += b == QUOTE
        special += (b == COMMA) | (b == LF) | (b == CR)
    return quotes + special > 0, quotes


@njit(cache=True, inline="always")
def _cell_len(buf, s, e):
    need, quotes = _scan(buf, s, e)
    return e - s + quotes + (2 if need else 0)


@njit(cache=True, inline="always")
def _put_bytes(buf, s, e, out, o, quotes):
    """Copy buf[s:e] to out at o, doubling its `quotes` double quotes; returns the new offset."""
    if quotes == 0 and e - s > 32:  # the common long case: one block copy
        out[o:o + e - s] = buf[s:e]
        return o + e - s
    if quotes == 0:
        for p in range(s, e):
            out[o] = buf[p]
            o += 1
        return o
    for p in range(s, e):
        b = buf[p]
        out[o] = b
        o += 1
        if b == QUOTE:
            out[o] = QUOTE
            o += 1
    return o


@njit(cache=True, inline="always")
def _put_cell(buf, s, e, out, o):
    need, quotes = _scan(buf, s, e)
    if need:
        out[o] = QUOTE
        o += 1
    o = _put_bytes(buf, s, e, out, o, quotes)
    if need:
        out[o] = QUOTE
        o += 1
    return o


@njit(cache=True, inline="always")
def _digits(v):
    d = 1
    while v >= 10:
        v //= 10
        d += 1
    return d


@njit(cache=True, inline="always")
def _repr_quote(buf, s, e):
    """The quote repr() puts around an ASCII text: ' unless the text holds ' and no "."""
    apos = False
    dquote = False
    for p in range(s, e):
        apos = apos or buf[p] == APOS
        dquote = dquote or buf[p] == QUOTE
    return QUOTE if apos and not dquote else APOS


@njit(cache=True, inline="always")
def _repr_scan(buf, s, e, quote):
    """(bytes of repr(text), its double quotes, its commas) of the ASCII text buf[s:e]."""
    n = 2
    dquotes = 2 if quote == QUOTE else 0
    commas = 0
    for p in range(s, e):
        b = buf[p]
        if b == quote or b == BACKSLASH or b == 9 or b == LF or b == CR:
            n += 2
        elif b < 32 or b == 127:
            n += 4
        else:
            n += 1
            dquotes += b == QUOTE
            commas += b == COMMA
    return n, dquotes, commas


@njit(cache=True, inline="always")
def _params_cell(buf, lo, hi, pstart, pend):
    """(whether the ParameterList cell is quoted, its length) for parameters lo..hi."""
    raw = 2 + 2 * max(hi - lo - 1, 0)  # [ ] and the ", " between values
    dquotes = 0
    commas = 0
    for j in range(lo, hi):
        n, d, c = _repr_scan(buf, pstart[j], pend[j], _repr_quote(buf, pstart[j], pend[j]))
        raw += n
        dquotes += d
        commas += c
    need = hi - lo >= 2 or dquotes > 0 or commas > 0
    return need, raw + dquotes + (2 if need else 0)


@njit(cache=True, inline="always")
def _put_repr(buf, s, e, out, o):
    """repr() of the ASCII text buf[s:e] at o, its double quotes doubled (the cell is then quoted)."""
    quote = _repr_quote(buf, s, e)
    out[o] = quote
    o += 1
    if quote == QUOTE:
        out[o] = QUOTE
        o += 1
    for p in range(s, e):
        b = buf[p]
        if b == quote or b == BACKSLASH:
            out[o] = BACKSLASH
            out[o + 1] = b
            o += 2
        elif b == 9 or b == LF or b == CR:
            out[o] = BACKSLASH
            out[o + 1] = 116 if b == 9 else (110 if b == LF else 114)  # t n r
            o += 2
        elif b < 32 or b == 127:
            out[o] = BACKSLASH
            out[o + 1] = 120  # x
            out[o + 2] = _HEX[b >> 4]
            out[o + 3] = _HEX[b & 15]
            o += 4
        else:
            out[o] = b
            o += 1
            if b == QUOTE:
                out[o] = QUOTE
                o += 1
    out[o] = quote
    o += 1
    if quote == QUOTE:
        out[o] = QUOTE
        o += 1
    return o


@njit(cache=True, inline="always")
def _put_params(buf, lo, hi, pstart, pend, out, o):
    need, _ = _params_cell(buf, lo, hi, pstart, pend)
    if need:
        out[o] = QUOTE
        o += 1
    out[o] = 91  # [
    o += 1
    for j in range(lo, hi):
        if j > lo:
            out[o] = COMMA
            out[o + 1] = 32
            o += 2
        o = _put_repr(buf, pstart[j], pend[j], out, o)
    out[o] = 93  # ]
    o += 1
    if need:
        out[o] = QUOTE
        o += 1
    return o


@kt.entry((kt.BYTES, kt.I64_2D, kt.I64_2D) + (kt.I64_1D,) * 10 + (kt.INT64,), cache=True)
def row_lengths(buf, fstart, fend, fcols, cstart, cend, tpl_row, tpl_ptr, pptr, pstart, pend, py_row, py_ptr, first_id):
    """Byte length of each rendered row (line i gets LineId first_id + i).

    The header fields of line i are the spans fstart[i, c]..fend[i, c] for c in fcols, in order.
    """
    n = cstart.shape[0]
    k = fcols.shape[0]
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        r = py_row[i]
        if r >= 0:
            out[i] = py_ptr[r + 1] - py_ptr[r]
            continue
        total = _digits(first_id + i) + 1 + k  # LineId, and a comma after it and after each field
        for j in range(k):
            total += _cell_len(buf, fstart[i, fcols[j]], fend[i, fcols[j]])
        total += _cell_len(buf, cstart[i], cend[i]) + 1
        t = tpl_row[i]
        total += tpl_ptr[t + 1] - tpl_ptr[t]
        total += _params_cell(buf, pptr[i], pptr[i + 1], pstart, pend)[1] + 2
        out[i] = total
    return out


@kt.entry((kt.BYTES, kt.I64_2D, kt.I64_2D) + (kt.I64_1D,) * 4 + (kt.BYTES,) + (kt.I64_1D,) * 5
          + (kt.BYTES, kt.I64_1D, kt.INT64, kt.U8_1D), cache=True)
def render_rows(buf, fstart, fend, fcols, cstart, cend, tpl_row, tpl_pool, tpl_ptr, pptr, pstart, pend, py_row, py_pool,
                py_ptr, first_id, out):
    """Write the rows of lines 0..n into out (at least row_lengths' sum long); returns the bytes written.

    Row: LineId, the header fields, Content, then the template piece (`E<id>,<template>,`, already
    a csv text), the ParameterList cell and CRLF. A line with py_row >= 0 copies its row whole
    from py_pool instead.
    """
    n = cstart.shape[0]
    k = fcols.shape[0]
    o = 0
    for i in range(n):
        r = py_row[i]
        if r >= 0:
            for p in range(py_ptr[r], py_ptr[r + 1]):
                out[o] = py_pool[p]
                o += 1
            continue
        v = first_id + i
        d = _digits(v)
        for q in range(d):
            out[o + d - 1 - q] = 48 + v % 10
            v //= 10
        o += d
        out[o] = COMMA
        o += 1
        for j in range(k):
            o = _put_cell(buf, fstart[i, fcols[j]], fend[i, fcols[j]], out, o)
            out[o] = COMMA
            o += 1
        o = _put_cell(buf, cstart[i], cend[i], out, o)
        out[o] = COMMA
        o += 1
        t = tpl_row[i]
        for p in range(tpl_ptr[t], tpl_ptr[t + 1]):
            out[o] = tpl_pool[p]
            o += 1
        o = _put_params(buf, pptr[i], pptr[i + 1], pstart, pend, out, o)
        out[o] = CR
        out[o + 1] = LF
        o += 2
    return o
