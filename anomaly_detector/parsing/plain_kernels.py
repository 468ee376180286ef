"""Fast paths for the commonest plain lines over a whole buffer: `<ISO 8601 stamp> <LEVEL> <message>`
(plain_lines) and the classic syslog file line `Mar  5 00:00:02 host prog[pid]: message` (syslog_lines).

columns.parse_columns uses them for plain/auto inputs without a header format. Each accepts only a
strict subset of what RecordParser._parse_plain reads (stamp `YYYY-MM-DDThh:mm:ss[.frac][Z]` or
with one space instead of T; or `Mon[th] d hh:mm:ss[.frac]` without a year or zone; then an ASCII
level word) and computes exactly the same time, level and content; a stamp of that shape with
impossible values is garbage (no time), as TimestampParser reads it once the shape is the learned
format. The year-less stamp leaves its year to timestamps.infer_years, run in line order from the
parser's state (syslog_plain.py). Every other line is marked not-ok and goes through the per-line
Python path.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.parsing.header_kernels import level_table, lookup_level, ws_len_at

_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_POW10 = np.array([10.0 ** k for k in range(10)], dtype=np.float64)
_STRIP = np.frombuffer(b"[]():|<>", dtype=np.uint8)
_ZONE_LEADS = np.frombuffer(b"Z+-UG", dtype=np.uint8)
GARBAGE_END = -2  # _stamp's end for an ISO-shaped stamp with impossible values
_BOUNDARY = np.frombuffer(b" \t][,;|)(>-", dtype=np.uint8)  # timestamps._BOUNDARY, ASCII part
_MONTH_NAMES = np.frombuffer(b"janfebmaraprmayjunjulaugsepoctnovdec", dtype=np.uint8)
# parse_prefix reads the first 64 characters, where `$` is a boundary: a stamp ending near there
# is left to Python (a zone after it might be cut, too)
_STAMP_REACH = 56


@njit(cache=True)
def _days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, _nrt=False)
def _digits(buf, pos, count, end):
    """Value of `count` ASCII digits at pos, or -1."""
    if pos + count > end:
        return -1
    value = 0
    for k in range(count):
        c = buf[pos + k]
        if c < 48 or c > 57:
            return -1
        value = value * 10 + (c - 48)
    return value


@njit(cache=True)
def _is_unicode_space_lead(c):
    # Lead bytes of the non-ASCII characters str.strip() treats as white space (U+0085, U+00A0,
    # U+1680, U+2000.., U+3000): such a line is left to Python, which decides exactly.
    return c == 0xC2 or c == 0xE1 or c == 0xE2 or c == 0xE3


@njit(cache=True, _nrt=False)
def _stamp(buf, s, e, naive_ok, pow10, days_in_month):
    """(ts, end, year, month) of a stamp at s; end = -1 when this line is not for the kernel,
    GARBAGE_END when the stamp has the shape `YYYY-MM-DD[T ]hh:mm:ss` with impossible values."""
    if s + 19 > e or buf[s + 4] != 45 or buf[s + 7] != 45 or buf[s + 13] != 58 or buf[s + 16] != 58:
        return 0.0, -1, 0, 0
    y = _digits(buf, s, 4, e)
    mo = _digits(buf, s + 5, 2, e)
    d = _digits(buf, s + 8, 2, e)
    h = _digits(buf, s + 11, 2, e)
    mi = _digits(buf, s + 14, 2, e)
    se = _digits(buf, s + 17, 2, e)
    sep = buf[s + 10]
    if y < 0 or mo < 0 or d < 0 or h < 0 or mi < 0 or se < 0 or (sep != 84 and sep != 32):
        return 0.0, -1, 0, 0
    if y < 1 or mo < 1 or mo > 12 or d < 1 or h > 24 or mi > 59 or se > 60:
        return 0.0, GARBAGE_END, 0, 0
    limit = days_in_month[mo]
    if mo == 2 and (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)):
        limit = 29
    if d > limit:
        return 0.0, GARBAGE_END, 0, 0
    ts = float(_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se)
    pos = s + 19
    if pos < e and (buf[pos] == 46 or buf[pos] == 44 or buf[pos] == 58):
        k = 0
        frac = 0
        while pos + 1 + k < e and 48 <= buf[pos + 1 + k] <= 57:
            frac = frac * 10 + (buf[pos + 1 + k] - 48)
            k += 1
        if k == 0 or k > 9:
            return 0.0, -1, 0, 0
        ts += float(frac) / pow10[k]
        pos += 1 + k
    zoned = pos < e and buf[pos] == 90
    if zoned:
        pos += 1
    elif not naive_ok:
        return 0.0, -1, 0, 0
    if pos < e and buf[pos] != 32 and buf[pos] != 9:
        return 0.0, -1, 0, 0
    if pos + 1 < e and _in(buf[pos + 1], _ZONE_LEADS):
        return 0.0, -1, 0, 0  # " Z", " +01:00", " UTC": a spaced zone, which the regex reads; Python decides
    return ts, pos, y, mo


@njit(cache=True)
def _skip_space(buf, pos, e):
    """Position after spaces and tabs, or -1 when other white space follows (Python decides)."""
    while pos < e and (buf[pos] == 32 or buf[pos] == 9):
        pos += 1
    if pos < e and _is_unicode_space_lead(buf[pos]):
        return -1
    return pos


@njit(cache=True)
def _level(buf, ws, we, strip, names, lengths, codes):
    """Level code of the word [ws, we) after stripping `[]():|<>`, 0 when none, -1 for non-ASCII."""
    for k in range(ws, we):
        if buf[k] >= 128 or buf[k] == 9:
            return -1
    a, b = ws, we
    while a < b and _in(buf[a], strip):
        a += 1
    while b > a and _in(buf[b - 1], strip):
        b -= 1
    if b - a < 3:
        return 0
    return lookup_level(buf, a, b, names, lengths, codes)


@njit(cache=True, _nrt=False)
def _in(c, chars):
    for x in chars:
        if c == x:
            return True
    return False


@njit(cache=True)
def _body(buf, pos, e, strip, names, lengths, codes):
    """(level, content start) of the text from pos as _parse_plain reads it after the stamp:
    white space stripped, a leading level word taken; (-1, -1) when Python must decide."""
    body = _skip_space(buf, pos, e)
    if body < 0:
        return -1, -1
    we = body
    while we < e and buf[we] != 32:
        we += 1
    code = _level(buf, body, we, strip, names, lengths, codes) if we > body else 0
    if code < 0:
        return -1, -1
    content = body
    if code > 0:
        content = _skip_space(buf, we + 1, e) if we < e else e
        if content < 0:
            return -1, -1
    return code, content


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.BOOL, kt.F64_1D, kt.I64_1D, kt.BYTES, kt.U8_2D, kt.I64_1D, kt.I64_1D), cache=True)
def plain_lines(buf, starts, ends, naive_ok, pow10, days_in_month, strip, names, lengths, codes):
    """Per line: ok, garbage, ts, level, content start, year, month (see the module docstring).

    A garbage line (an ISO-shaped stamp with impossible values) is ok with ts NaN and year 0: as
    _parse_plain reads it once the parser has learned the ISO shape, the whole line is the body
    and its first word (the stamp) is tried as the level.
    """
    n = starts.shape[0]
    ok = np.zeros(n, np.bool_)
    garbage = np.zeros(n, np.bool_)
    ts = np.zeros(n, np.float64)
    level = np.zeros(n, np.int8)
    cstart = np.zeros(n, np.int64)
    year = np.zeros(n, np.int64)
    month = np.zeros(n, np.int64)
    for i in range(n):
        s, e = starts[i], ends[i]
        t, pos, y, mo = _stamp(buf, s, e, naive_ok, pow10, days_in_month)
        if pos == GARBAGE_END:
            garbage[i] = True
            t, pos = np.nan, s
        if pos < 0:
            continue
        code, content = _body(buf, pos, e, strip, names, lengths, codes)
        if code < 0:
            continue
        ok[i], ts[i], level[i], cstart[i], year[i], month[i] = True, t, code, content, y, mo
    return ok, garbage, ts, level, cstart, year, month


@njit(cache=True)
def _is_letter(c):
    return 65 <= c <= 90 or 97 <= c <= 122


@njit(cache=True)
def _spaces(buf, pos, e):
    """Position after one or more spaces or tabs at pos (regex \\s+), or -1 when there are none."""
    if pos >= e or (buf[pos] != 32 and buf[pos] != 9):
        return -1
    while pos < e and (buf[pos] == 32 or buf[pos] == 9):
        pos += 1
    return pos


@njit(cache=True)
def _month_number(buf, s):
    """1-12 for the English month abbreviation at s in any case, else 0 (TimestampParser: garbage)."""
    a, b, c = buf[s] | 32, buf[s + 1] | 32, buf[s + 2] | 32
    for m in range(12):
        if a == _MONTH_NAMES[3 * m] and b == _MONTH_NAMES[3 * m + 1] and c == _MONTH_NAMES[3 * m + 2]:
            return m + 1
    return 0


@njit(cache=True)
def _zone_at(buf, p, e):
    """Whether timestamps._ZONE's zone (Z, +hh:mm, +hhmm, UTC, GMT) starts at p."""
    if p >= e:
        return False
    c = buf[p]
    if c == 90:
        return True
    if c == 43 or c == 45:
        for q in range(p + 1, min(p + 6, e)):
            if buf[q] >= 128:
                return True  # the regex's \d takes other scripts' digits: Python decides
        if _digits(buf, p + 1, 2, e) < 0:
            return False
        q = p + 4 if p + 3 < e and buf[p + 3] == 58 else p + 3
        return _digits(buf, q, 2, e) >= 0
    if p + 3 > e:
        return False
    return (c == 85 and buf[p + 1] == 84 and buf[p + 2] == 67) or (c == 71 and buf[p + 1] == 77 and buf[p + 2] == 84)


@njit(cache=True)
def _one_or_two_digits(buf, pos, e):
    """(value, position after) of \\d{1,2} at pos, or (-1, pos)."""
    if pos >= e or buf[pos] < 48 or buf[pos] > 57:
        return -1, pos
    v = buf[pos] - 48
    pos += 1
    if pos < e and 48 <= buf[pos] <= 57:
        v = v * 10 + buf[pos] - 48
        pos += 1
    return v, pos


@njit(cache=True)
def _yearless_stamp(buf, s, e):
    """(end, month, day, hour, seconds of day, fraction, fraction digits) of the stamp
    `Mon[a-z]* d h:mm:ss[.frac]` at s, read as timestamps' "syslog" regex reads it in parse_prefix.

    end = -1 when the line is not for the kernel (no such stamp, or one Python reads differently:
    with a zone, more than 9 fraction digits, near the 64-character reach); GARBAGE_END when the
    stamp has the shape with impossible values (an unknown month name, day 32, hour 25).
    """
    if s + 3 > e or not (_is_letter(buf[s]) and _is_letter(buf[s + 1]) and _is_letter(buf[s + 2])):
        return -1, 0, 0, 0, 0, 0, 0
    pos = s + 3
    while pos < e and 97 <= buf[pos] <= 122:
        pos += 1
    pos = _spaces(buf, pos, e)
    if pos < 0:
        return -1, 0, 0, 0, 0, 0, 0
    day, pos = _one_or_two_digits(buf, pos, e)
    if day < 0:
        return -1, 0, 0, 0, 0, 0, 0
    pos = _spaces(buf, pos, e)  # a third digit: the regex backtracks and fails, as this does
    if pos < 0:
        return -1, 0, 0, 0, 0, 0, 0
    hour, pos = _one_or_two_digits(buf, pos, e)
    if hour < 0 or pos >= e or buf[pos] != 58:
        return -1, 0, 0, 0, 0, 0, 0
    minute = _digits(buf, pos + 1, 2, e)
    if minute < 0 or pos + 3 >= e or buf[pos + 3] != 58:
        return -1, 0, 0, 0, 0, 0, 0
    second = _digits(buf, pos + 4, 2, e)
    if second < 0:
        return -1, 0, 0, 0, 0, 0, 0
    pos += 6
    frac = 0
    fdig = 0
    if pos + 1 < e and (buf[pos] == 46 or buf[pos] == 44 or buf[pos] == 58) and 48 <= buf[pos + 1] <= 57:
        while pos + 1 + fdig < e and 48 <= buf[pos + 1 + fdig] <= 57:
            frac = frac * 10 + (buf[pos + 1 + fdig] - 48)
            fdig += 1
        if fdig > 9:
            return -1, 0, 0, 0, 0, 0, 0
        pos += 1 + fdig
    if pos - s > _STAMP_REACH:
        return -1, 0, 0, 0, 0, 0, 0
    space = ws_len_at(buf, pos, e)
    if _zone_at(buf, pos, e) or (space == 1 and _zone_at(buf, pos + 1, e)) or space > 1:
        return -1, 0, 0, 0, 0, 0, 0
    if pos < e and not _in(buf[pos], _BOUNDARY):
        return -1, 0, 0, 0, 0, 0, 0  # no boundary (or white space other than a space or tab)
    month = _month_number(buf, s)
    if month == 0 or day < 1 or day > 31 or hour > 24 or minute > 59 or second > 60:
        return GARBAGE_END, 0, 0, 0, 0, 0, 0
    return pos, month, day, hour, hour * 3600 + minute * 60 + second, frac, fdig


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.BYTES, kt.U8_2D, kt.I64_1D, kt.I64_1D), cache=True)
def syslog_lines(buf, starts, ends, strip, names, lengths, codes):
    """Per line of `Mon d hh:mm:ss[.frac] rest` (see _yearless_stamp): ok, garbage, month, day,
    hour, seconds of day, fraction, fraction digits, level, content start.

    The year and the time are left to timestamps.infer_years (in line order, from the parser's
    year state). A garbage line is ok: as _parse_plain reads it once the year-less shape is the
    learned one, the whole line is the body and its first word is tried as the level.
    """
    n = starts.shape[0]
    ok = np.zeros(n, np.bool_)
    garbage = np.zeros(n, np.bool_)
    month = np.zeros(n, np.int64)
    day = np.zeros(n, np.int64)
    hour = np.zeros(n, np.int64)
    sod = np.zeros(n, np.int64)
    fnum = np.zeros(n, np.int64)
    fdig = np.zeros(n, np.int64)
    level = np.zeros(n, np.int8)
    cstart = np.zeros(n, np.int64)
    for i in range(n):
        s, e = starts[i], ends[i]
        pos, mo, d, h, sec, frac, k = _yearless_stamp(buf, s, e)
        if pos == GARBAGE_END:
            garbage[i] = True
            pos = s
        if pos < 0:
            continue
        code, content = _body(buf, pos, e, strip, names, lengths, codes)
        if code < 0:
            garbage[i] = False
            continue
        ok[i], month[i], day[i], hour[i], sod[i], fnum[i], fdig[i] = True, mo, d, h, sec, frac, k
        level[i], cstart[i] = code, content
    return ok, garbage, month, day, hour, sod, fnum, fdig, level, cstart


def kernel_args():
    """The constant tables plain_lines takes besides the buffer and spans."""
    names, lengths, codes = level_table()
    return _POW10, _DAYS_IN_MONTH, _STRIP, names, lengths, codes


def syslog_kernel_args():
    """The constant tables syslog_lines takes besides the buffer and spans."""
    names, lengths, codes = level_table()
    return _STRIP, names, lengths, codes
