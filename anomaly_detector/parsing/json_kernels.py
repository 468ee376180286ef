"""Fast path for flat JSON-lines records over a whole buffer: message, time, source and level keys.

records.parse_columns uses it for jsonl/auto inputs. It takes only flat objects (string, number,
true/false/null values) whose wanted values it reads exactly as RecordParser._parse_json does
(json.loads, TimestampParser.parse_value, json_level, clean_text); every other line is marked
not-ok and goes through the per-line Python path. With json_numeric_fields on it also writes the
numeric fields after the message (records.numeric_fields_text), rounding floats from their literal
digits as records.number_text rounds the float.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.parsing import plain_kernels as pk
from anomaly_detector.parsing.header_kernels import level_table, lookup_level

# Roles of the four configured keys, in the order of the `keys` table.
ROLE_MESSAGE, ROLE_TIMESTAMP, ROLE_SOURCE, ROLE_LEVEL = range(4)
# Kinds of a value. V_INEXACT: a valid number whose float the kernel cannot give bit for bit.
V_ABSENT, V_STRING, V_ESCAPED, V_NUMBER, V_TRUE, V_FALSE, V_NULL, V_NONFINITE, V_INEXACT = range(9)
# What parse_value makes of the time value: None (carried), a number, or an ISO text stamp.
STAMP_NONE, STAMP_NUMBER, STAMP_TEXT, STAMP_GARBAGE = range(4)  # GARBAGE: ISO shape, impossible values

MAX_LINE_BYTES = 1_048_576  # jsonl.MAX_LINE_CHARS: a line of at most this many bytes has no more chars
SIGNIFICANT = 13  # digits a numeric field's float keeps (records.number_text)
MAX_SCANNED_FIELDS = 256  # objects with more keys of numeric_fields' shape are left to Python
_MAX_NUMBER_BYTES = 64  # longer number tokens (Python's int digit limit, ...): the line is left to Python
_EXACT_POW10 = np.array([float(10 ** k) for k in range(23)], dtype=np.float64)
_TWO_53 = 2 ** 53
_TRUE = np.frombuffer(b"true", dtype=np.uint8)
_FALSE = np.frombuffer(b"false", dtype=np.uint8)
_NULL = np.frombuffer(b"null", dtype=np.uint8)
_NAN = np.frombuffer(b"NaN", dtype=np.uint8)
_INFINITY = np.frombuffer(b"Infinity", dtype=np.uint8)


@njit(cache=True, _nrt=False)
def _skip_ws(buf, p, e):
    """JSON white space of a cleaned line: only spaces and tabs are left (CR and LF are gone)."""
    while p < e and (buf[p] == 32 or buf[p] == 9):
        p += 1
    return p


@njit(cache=True, _nrt=False)
def _word_at(buf, p, e, word):
    if p + word.shape[0] > e:
        return False
    for k in range(word.shape[0]):
        if buf[p + k] != word[k]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _hex4(buf, p, e):
    """Value of the 4 hex digits at p, or -1."""
    if p + 4 > e:
        return -1
    v = 0
    for k in range(4):
        c = buf[p + k]
        if 48 <= c <= 57:
            d = c - 48
        elif 65 <= c <= 70:
            d = c - 55
        elif 97 <= c <= 102:
            d = c - 87
        else:
            return -1
        v = v * 16 + d
    return v


@njit(cache=True, _nrt=False)
def _string_end(buf, p, e):
    """(end after the closing quote, has escapes) of the string opening at p; end -1 when invalid."""
    q = p + 1
    escaped = False
    while q < e:
        c = buf[q]
        if c == 34:
            return q + 1, escaped
        if c == 92:
            escaped = True
            d = buf[q + 1] if q + 1 < e else 0
            if d == 117:
                if _hex4(buf, q + 2, e) < 0:
                    return -1, escaped
                q += 6
            elif d == 34 or d == 92 or d == 47 or d == 98 or d == 102 or d == 110 or d == 114 or d == 116:
                q += 2
            else:
                return -1, escaped
            continue
        if c < 32:  # json.loads is strict: a raw control character (TAB too) is an error
            return -1, escaped
        q += 1
    return -1, escaped


@njit(cache=True, _nrt=False)
def digits_end(buf, p, e):
    while p < e and 48 <= buf[p] <= 57:
        p += 1
    return p


@njit(cache=True, _nrt=False)
def _number(buf, p, e, pow10):
    """(end, kind, value) of the number at p; end -1 when invalid JSON.

    The value is exact (what float() of the literal gives) for mantissas up to 2**53 and powers of
    ten up to 22: one IEEE multiplication or division of two exact doubles is correctly rounded.
    """
    q = p + 1 if buf[p] == 45 else p
    if _word_at(buf, q, e, _INFINITY):
        return q + 8, V_NONFINITE, 0.0
    if q >= e or buf[q] < 48 or buf[q] > 57:
        return -1, V_ABSENT, 0.0
    int_end = q + 1 if buf[q] == 48 else digits_end(buf, q, e)
    mant = 0
    big = False
    for k in range(q, int_end):
        mant = mant * 10 + (buf[k] - 48)
        big = big or mant > _TWO_53
    q = int_end
    frac_digits = 0
    if q < e and buf[q] == 46:
        f_end = digits_end(buf, q + 1, e)
        if f_end == q + 1:
            return -1, V_ABSENT, 0.0
        for k in range(q + 1, f_end):
            if not big:
                mant = mant * 10 + (buf[k] - 48)
                big = mant > _TWO_53
        frac_digits = f_end - q - 1
        q = f_end
    exp = 0
    has_exp = q < e and (buf[q] == 101 or buf[q] == 69)
    if has_exp:
        x = q + 1
        neg_exp = x < e and buf[x] == 45
        if x < e and (buf[x] == 45 or buf[x] == 43):
            x += 1
        x_end = digits_end(buf, x, e)
        if x_end == x:
            return -1, V_ABSENT, 0.0
        if x_end - x > 4:
            big = True
        else:
            for k in range(x, x_end):
                exp = exp * 10 + (buf[k] - 48)
        if neg_exp:
            exp = -exp
        q = x_end
    if q - p > _MAX_NUMBER_BYTES:  # json.loads refuses ints past 4300 digits: Python decides
        return -1, V_ABSENT, 0.0
    if big:
        return q, V_INEXACT, 0.0
    if frac_digits == 0 and not has_exp:  # an int: json gives -0 as 0
        value = float(mant)
        return q, V_NUMBER, -value if buf[p] == 45 and mant != 0 else value
    scale = exp - frac_digits
    if mant == 0:
        value = 0.0
    elif scale == 0:
        value = float(mant)
    elif 0 < scale <= 22:
        value = float(mant) * pow10[scale]
    elif -22 <= scale < 0:
        value = float(mant) / pow10[-scale]
    else:
        return q, V_INEXACT, 0.0
    return q, V_NUMBER, -value if buf[p] == 45 else value


@njit(cache=True, _nrt=False)
def _value(buf, p, e, pow10):
    """(kind, end, number) of the value at p; kind -1 for invalid JSON or a nested value."""
    c = buf[p]
    if c == 34:
        end, escaped = _string_end(buf, p, e)
        return (V_ESCAPED if escaped else V_STRING), end, 0.0
    if c == 45 or 48 <= c <= 57:
        end, kind, value = _number(buf, p, e, pow10)
        return (kind if end >= 0 else -1), end, value
    if _word_at(buf, p, e, _TRUE):
        return V_TRUE, p + 4, 0.0
    if _word_at(buf, p, e, _FALSE):
        return V_FALSE, p + 5, 0.0
    if _word_at(buf, p, e, _NULL):
        return V_NULL, p + 4, 0.0
    if _word_at(buf, p, e, _NAN):
        return V_NONFINITE, p + 3, 0.0
    if _word_at(buf, p, e, _INFINITY):
        return V_NONFINITE, p + 8, 0.0
    return -1, p, 0.0  # objects and arrays included: Python decides


@njit(cache=True, _nrt=False)
def _same_key(buf, ks, ke, keys, key_lengths, r):
    length = key_lengths[r]
    if length != ke - ks:  # an empty configured key has length -1 and matches nothing
        return False
    for k in range(length):
        if buf[ks + k] != keys[r, k]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _safe_key(buf, ks, ke):
    """A key that may be written as `key=value` into a message: ASCII letters, digits, _ . - only."""
    if ke <= ks:
        return False
    for k in range(ks, ke):
        c = buf[k]
        if not (48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95 or c == 46 or c == 45):
            return False
    return True


@njit(cache=True, _nrt=False)
def _scan_object(buf, s, e, keys, key_lengths, kinds, vstart, vend, vnum, pow10, want_fields, fields):
    """Read the flat object on line [s, e): per role the kind, span and number of its value.

    Returns -1 when the line is not for the kernel: not an object, invalid, nested, an escaped key
    (it might equal a configured key) or a configured key given twice (json.loads keeps the last).
    Otherwise the number of other keys of numeric_fields' key shape, whose (key start, key end,
    value start, value end, is a number) rows are put in `fields` when want_fields is set; more
    such keys than `fields` has rows also gives -1.
    """
    kinds[:] = V_ABSENT
    nf = 0
    p = _skip_ws(buf, s, e)
    if p >= e or buf[p] != 123:
        return -1
    p = _skip_ws(buf, p + 1, e)
    if p < e and buf[p] == 125:
        return 0 if _skip_ws(buf, p + 1, e) == e else -1
    while True:
        if p >= e or buf[p] != 34:
            return -1
        k_end, escaped = _string_end(buf, p, e)
        if k_end < 0 or escaped:
            return -1
        ks, ke = p + 1, k_end - 1
        p = _skip_ws(buf, k_end, e)
        if p >= e or buf[p] != 58:
            return -1
        p = _skip_ws(buf, p + 1, e)
        if p >= e:
            return -1
        vs = p
        kind, p, number = _value(buf, p, e, pow10)
        if kind < 0 or p < 0:
            return -1
        role = False
        for r in range(4):
            if _same_key(buf, ks, ke, keys, key_lengths, r):
                role = True
                if kinds[r] != V_ABSENT:
                    return -1
                kinds[r], vstart[r], vend[r], vnum[r] = kind, vs, p, number
        if want_fields and not role and _safe_key(buf, ks, ke):
            if nf == fields.shape[0]:
                return -1
            fields[nf, 0], fields[nf, 1], fields[nf, 2], fields[nf, 3] = ks, ke, vs, p
            fields[nf, 4] = 1 if kind == V_NUMBER or kind == V_INEXACT else 0
            nf += 1
        p = _skip_ws(buf, p, e)
        if p >= e:
            return -1
        if buf[p] == 125:
            return nf if _skip_ws(buf, p + 1, e) == e else -1
        if buf[p] != 44:
            return -1
        p = _skip_ws(buf, p + 1, e)


@njit(cache=True, _nrt=False)
def _key_less(buf, a, b, c, d):
    """Bytes buf[a:b] sort before buf[c:d] (str order, the keys being ASCII)."""
    for k in range(min(b - a, d - c)):
        if buf[a + k] != buf[c + k]:
            return buf[a + k] < buf[c + k]
    return b - a < d - c


@njit(cache=True, _nrt=False)
def _sort_fields(buf, fields, nf):
    """Sort the first nf rows of fields by key; False when a key is given twice (json.loads keeps
    the last value, Python decides)."""
    for i in range(1, nf):
        j = i
        while j > 0 and _key_less(buf, fields[j, 0], fields[j, 1], fields[j - 1, 0], fields[j - 1, 1]):
            for c in range(5):
                fields[j, c], fields[j - 1, c] = fields[j - 1, c], fields[j, c]
            j -= 1
    for i in range(1, nf):
        if _same_bytes(buf, fields[i - 1, 0], fields[i - 1, 1], fields[i, 0], fields[i, 1]):
            return False
    return True


@njit(cache=True)
def _digit(buf, d0, d1, f0, k):
    """Digit k of the integer digits buf[d0:d1) followed by the fraction digits from f0."""
    return buf[d0 + k] if k < d1 - d0 else buf[f0 + k - (d1 - d0)]


@njit(cache=True, _nrt=False)
def _put_number(buf, a, b, out, o, dig):
    """Write the JSON number literal buf[a:b] as records.number_text writes its value; -1 when the
    kernel leaves it to Python (an exponent of more than 4 digits, a form longer than 40 bytes, or
    digits too close to a rounding half-way point).

    Integers are their digits. Other numbers are rounded to SIGNIFICANT digits and written without
    an exponent or trailing zeros, as Python's '%.13g' of the float. The float is within 2**-53 of
    the literal, relatively: for a first digit d that is under 0.000111 * (d + 1) units of the 13th
    digit, so rounding the literal's own digits gives Python's digits unless what follows the 13th
    digit is that close to one half (about 1 literal in 1000 of 17 digits goes to Python).
    dig: scratch of SIGNIFICANT + 1.
    """
    neg = buf[a] == 45
    d0 = a + 1 if neg else a
    d1 = digits_end(buf, d0, b)
    if d1 == b:  # an integer literal (json gives -0 as 0)
        if neg and not (d1 - d0 == 1 and buf[d0] == 48):
            out[o] = 45
            o += 1
        _copy(buf, d0, d1, out, o)
        return o + d1 - d0
    f0 = f1 = d1
    if buf[d1] == 46:
        f0 = d1 + 1
        f1 = digits_end(buf, f0, b)
    exp = 0
    p = f1
    if p < b:  # e or E, a sign, digits
        eneg = buf[p + 1] == 45
        p += 2 if buf[p + 1] == 45 or buf[p + 1] == 43 else 1
        if b - p > 4:
            return -1
        while p < b:
            exp = exp * 10 + (buf[p] - 48)
            p += 1
        if eneg:
            exp = -exp
    total = d1 - d0 + f1 - f0
    first = 0
    while first < total and _digit(buf, d0, d1, f0, first) == 48:
        first += 1
    if first == total:
        out[o] = 48
        return o + 1
    last = total - 1
    while _digit(buf, d0, d1, f0, last) == 48:
        last -= 1
    lead = exp - (f1 - f0) + total - 1 - first  # decimal exponent of the first significant digit
    nd = min(last - first + 1, SIGNIFICANT)
    for k in range(nd):
        dig[k] = _digit(buf, d0, d1, f0, first + k)
    if last - first + 1 > SIGNIFICANT:
        tail = 0.0
        w = 0.1
        for k in range(first + SIGNIFICANT, min(last + 1, first + SIGNIFICANT + 6)):
            tail += (_digit(buf, d0, d1, f0, k) - 48) * w
            w *= 0.1
        if abs(tail - 0.5) <= 0.000112 * (dig[0] - 47) + 2e-6:
            return -1
        if tail > 0.5:
            k = SIGNIFICANT - 1
            while k >= 0 and dig[k] == 57:
                dig[k] = 48
                k -= 1
            if k < 0:
                dig[0] = 49
                lead += 1
            else:
                dig[k] += 1
    while dig[nd - 1] == 48:
        nd -= 1
    scale = lead - nd + 1  # value = digits * 10**scale
    point = nd + scale  # digits before the decimal point
    size = point if scale >= 0 else (nd + 1 if point > 0 else nd + 2 - point)
    if size > 40:
        return -1
    if neg:
        out[o] = 45
        o += 1
    if point <= 0:
        out[o] = 48
        out[o + 1] = 46
        o += 2
        for _ in range(-point):
            out[o] = 48
            o += 1
    for k in range(nd):
        if k == point and k > 0:
            out[o] = 46
            o += 1
        out[o] = dig[k]
        o += 1
    for _ in range(scale):
        out[o] = 48
        o += 1
    return o


@njit(cache=True, _nrt=False)
def _put_fields(buf, fields, nf, max_fields, out, o, dig):
    """Append ` key=value` for the numeric fields among the sorted rows, at most max_fields of them.

    Returns (end in out or -1 when a number is left to Python, numeric fields beyond max_fields).
    """
    taken = 0
    over = 0
    for i in range(nf):
        if fields[i, 4] == 0:
            continue
        if taken == max_fields:
            over += 1
            continue
        out[o] = 32
        o += 1
        ks, ke = fields[i, 0], fields[i, 1]
        _copy(buf, ks, ke, out, o)
        o += ke - ks
        out[o] = 61
        o = _put_number(buf, fields[i, 2], fields[i, 3], out, o + 1, dig)
        if o < 0:
            return -1, 0
        taken += 1
    return o, over


@njit(cache=True)
def _grown(decoded, o, need):
    """decoded with room for `need` more bytes after o (doubled when short)."""
    if o + need <= decoded.shape[0]:
        return decoded
    bigger = np.empty(max(2 * decoded.shape[0], o + need), np.uint8)
    bigger[:o] = decoded[:o]
    return bigger


@njit(cache=True, _nrt=False)
def _put_char(out, o, cp):
    """UTF-8 of code point cp at out[o], as clean_text leaves it (C0 but TAB, and DEL -> U+FFFD)."""
    if (cp < 32 and cp != 9) or cp == 127:
        cp = 0xFFFD
    if cp < 0x80:
        out[o] = cp
        return o + 1
    if cp < 0x800:
        out[o] = 0xC0 | (cp >> 6)
        out[o + 1] = 0x80 | (cp & 0x3F)
        return o + 2
    if cp < 0x10000:
        out[o] = 0xE0 | (cp >> 12)
        out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
        out[o + 2] = 0x80 | (cp & 0x3F)
        return o + 3
    out[o] = 0xF0 | (cp >> 18)
    out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
    out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
    out[o + 3] = 0x80 | (cp & 0x3F)
    return o + 4


@njit(cache=True)
def _escape_char(d):
    """Code point of the one-letter escape d (already validated by _string_end)."""
    if d == 98:
        return 8
    if d == 102:
        return 12
    if d == 110:
        return 10
    if d == 114:
        return 13
    if d == 116:
        return 9
    return d  # " \ /


@njit(cache=True, inline="always")
def _copy(src, a, b, dst, o):
    """dst[o:o + b - a] = src[a:b], byte by byte: a slice assignment may allocate a temporary, which a
    loop compiled without reference counting (kt.loop) cannot."""
    for k in range(b - a):
        dst[o + k] = src[a + k]


@njit(cache=True, _nrt=False)
def decode_string(buf, p, q, out, o):
    """Decode the validated string body buf[p:q) into out at o, as clean_text(json.loads(...)) gives it.

    Returns the end in out, or -1 for a lone surrogate (Python keeps it; the per-line path decides).
    """
    while p < q:
        if buf[p] != 92:  # copy up to the next escape in one go
            r = p + 1
            while r < q and buf[r] != 92:
                r += 1
            _copy(buf, p, r, out, o)
            o += r - p
            p = r
            continue
        d = buf[p + 1]
        if d != 117:
            o = _put_char(out, o, _escape_char(d))
            p += 2
            continue
        cp = _hex4(buf, p + 2, q)
        p += 6
        if 0xDC00 <= cp <= 0xDFFF:
            return -1
        if 0xD800 <= cp <= 0xDBFF:
            low = _hex4(buf, p + 2, q) if p + 6 <= q and buf[p] == 92 and buf[p + 1] == 117 else -1
            if low < 0xDC00 or low > 0xDFFF:
                return -1
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            p += 6
        o = _put_char(out, o, cp)
    return o


@njit(cache=True, _nrt=False)
def _level_word(buf, a, b, names, lengths, codes):
    """batch.level_code of an unescaped string value; -1 when it is not ASCII (Python decides)."""
    for k in range(a, b):
        if buf[k] >= 128:
            return -1
    while a < b and buf[a] == 32:  # str.strip(): the only white space a raw JSON string holds
        a += 1
    while b > a and buf[b - 1] == 32:
        b -= 1
    return lookup_level(buf, a, b, names, lengths, codes)


@njit(cache=True, _nrt=False)
def _level(kind, number, buf, a, b, names, lengths, codes, numeric_levels):
    """records.json_level of the level value; -1 when the kernel cannot tell."""
    if kind == V_NUMBER:
        if -1.0 < number < numeric_levels.shape[0]:
            return numeric_levels[int(number)]  # int() truncates towards zero, as Python's does
        return 0
    if kind == V_STRING:
        return _level_word(buf, a, b, names, lengths, codes)
    if kind == V_ESCAPED or kind == V_INEXACT:
        return -1
    return 0  # absent, null, true, false, NaN, Infinity


@njit(cache=True)
def _epoch_value(v):
    """TimestampParser.parse_value of a finite number: seconds, or ms/us/ns by magnitude."""
    a = abs(v)
    if a >= 1e17:
        return v / 1e9
    if a >= 1e14:
        return v / 1e6
    if a >= 1e11:
        return v / 1e3
    return v


@njit(cache=True, _nrt=False)
def _same_bytes(buf, a, b, c, d):
    if b - a != d - c:
        return False
    for k in range(b - a):
        if buf[a + k] != buf[c + k]:
            return False
    return True


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.U8_2D, kt.I64_1D, kt.BOOL, kt.F64_1D, kt.I64_1D, kt.F64_1D, kt.U8_2D,
       kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.INT64), cache=True)
def json_lines(buf, starts, ends, keys, key_lengths, naive_ok, pow10, days_in_month, exact_pow10, names, lengths,
               codes, numeric_levels, max_fields):
    """Per line: ok, ts, stamp kind, stamp span, year, month, repeat, level, content span, in_decoded, source span;
    then the decoded bytes, and per line the numeric fields beyond max_fields.

    ts is NaN for STAMP_NONE and STAMP_GARBAGE (an ISO-shaped text with impossible values, which
    TimestampParser reads as garbage once ISO is its learned format). For STAMP_TEXT lines the stamp
    span is the string's inside, year and month what TimestampParser keeps, and repeat says the stamp
    text equals the previous text stamp.
    Content spans index buf, or the returned `decoded` bytes where in_decoded is set (messages with
    escapes, true/false, or numeric fields appended). A source start of -1 means the parser's own source.
    With max_fields > 0 a message is followed by ` key=value` for the first max_fields numeric
    fields in key order, as records.numeric_fields_text gives them.
    """
    n = starts.shape[0]
    ok = np.zeros(n, np.bool_)
    ts = np.full(n, np.nan)
    stamp = np.zeros(n, np.int8)
    stamp_start = np.zeros(n, np.int64)
    stamp_end = np.zeros(n, np.int64)
    year = np.zeros(n, np.int64)
    month = np.zeros(n, np.int64)
    repeat = np.zeros(n, np.bool_)
    level = np.zeros(n, np.int8)
    cstart = np.zeros(n, np.int64)
    cend = np.zeros(n, np.int64)
    in_decoded = np.zeros(n, np.bool_)
    src_start = np.full(n, -1, np.int64)
    src_end = np.full(n, -1, np.int64)
    decoded = np.empty(buf.shape[0] * 3 // 2 + 8, np.uint8)  # an escape grows at most 2 bytes to 3
    kinds = np.zeros(4, np.int64)
    vs = np.zeros(4, np.int64)
    ve = np.zeros(4, np.int64)
    vnum = np.zeros(4, np.float64)
    fields = np.zeros((MAX_SCANNED_FIELDS, 5), np.int64)
    over = np.zeros(n, np.int32)
    dig = np.zeros(SIGNIFICANT + 1, np.uint8)
    outs = (ok, ts, stamp, stamp_start, stamp_end, year, month, repeat, level, cstart, cend, in_decoded, src_start,
            src_end, over)
    scratch = (kinds, vs, ve, vnum, fields, dig)
    # the decoded bytes so far, the last text stamp's span, the last level word's span and its level
    carry = np.array([0, -1, -1, -1, -1, 0], np.int64)
    i = _json_loop(buf, starts, ends, keys, key_lengths, naive_ok, pow10, days_in_month, exact_pow10, names, lengths,
                   codes, numeric_levels, max_fields, 0, decoded, carry, scratch, outs)
    while i < n:     # line i may need more room in decoded than is left
        decoded = _grown(decoded, carry[0], 3 * (ends[i] - starts[i]) + 64 * max(max_fields, 0) + 16)
        i = _json_loop(buf, starts, ends, keys, key_lengths, naive_ok, pow10, days_in_month, exact_pow10, names,
                       lengths, codes, numeric_levels, max_fields, i, decoded, carry, scratch, outs)
    o = carry[0]
    return (ok, ts, stamp, stamp_start, stamp_end, year, month, repeat, level, cstart, cend, in_decoded, src_start,
            src_end, decoded[:o].copy(), over)


@njit(cache=True, inline="always")
def _keep(carry, o, prev_s, prev_e, prev_la, prev_lb, prev_level):
    """What _json_loop carries from one call to the next (see json_lines)."""
    carry[0], carry[1], carry[2], carry[3], carry[4], carry[5] = o, prev_s, prev_e, prev_la, prev_lb, prev_level


@kt.loop
def _json_loop(buf, starts, ends, keys, key_lengths, naive_ok, pow10, days_in_month, exact_pow10, names, lengths,
               codes, numeric_levels, max_fields, first, decoded, carry, scratch, outs):
    """json_lines' loop from line `first`, into its outputs (kt.loop: no reference counting) -> the line
    whose decoded text may not fit in what is left of `decoded` (json_lines grows it and calls again from
    there), or n when all are done."""
    (ok, ts, stamp, stamp_start, stamp_end, year, month, repeat, level, cstart, cend, in_decoded, src_start, src_end,
     over) = outs
    kinds, vs, ve, vnum, fields, dig = scratch
    o, prev_s, prev_e, prev_la, prev_lb, prev_level = carry[0], carry[1], carry[2], carry[3], carry[4], carry[5]
    n = starts.shape[0]
    for i in range(first, n):
        s, e = starts[i], ends[i]
        if e - s > MAX_LINE_BYTES:
            continue
        nf = _scan_object(buf, s, e, keys, key_lengths, kinds, vs, ve, vnum, exact_pow10, max_fields > 0, fields)
        if nf < 0 or not _sort_fields(buf, fields, nf):
            continue
        numeric = False
        for r in range(nf):
            numeric = numeric or fields[r, 4] == 1
        la, lb = vs[ROLE_LEVEL] + 1, ve[ROLE_LEVEL] - 1
        if kinds[ROLE_LEVEL] == V_STRING and _same_bytes(buf, prev_la, prev_lb, la, lb):
            lv = prev_level  # the same word as the last line's: no table look-up
        else:
            lv = _level(kinds[ROLE_LEVEL], vnum[ROLE_LEVEL], buf, la, lb, names, lengths, codes, numeric_levels)
            if kinds[ROLE_LEVEL] == V_STRING:
                prev_la, prev_lb, prev_level = la, lb, lv
        if lv < 0:
            continue
        sk = kinds[ROLE_SOURCE]
        if sk != V_STRING and sk != V_ABSENT and sk != V_NULL:
            continue
        tk = kinds[ROLE_TIMESTAMP]
        t, y, mo, kind = np.nan, 0, 0, STAMP_NONE
        a, b = vs[ROLE_TIMESTAMP] + 1, ve[ROLE_TIMESTAMP] - 1
        if tk == V_NUMBER:
            t, kind = _epoch_value(vnum[ROLE_TIMESTAMP]), STAMP_NUMBER
        elif tk == V_STRING and b > a:
            t, pos, y, mo = pk._stamp(buf, a, b, naive_ok, pow10, days_in_month)
            if pos == pk.GARBAGE_END and b - a <= 64:  # longer texts are no stamp to parse() at all
                t, y, mo, kind = np.nan, 0, 0, STAMP_GARBAGE
            elif pos != b:
                continue
            else:
                kind = STAMP_TEXT
        elif tk == V_ESCAPED or tk == V_INEXACT:
            continue
        mk = kinds[ROLE_MESSAGE]
        if mk == V_ABSENT or mk == V_NULL:  # no message: the whole line is the content
            c0, c1, dec = s, e, False
        elif mk == V_STRING and not numeric:
            c0, c1, dec = vs[ROLE_MESSAGE] + 1, ve[ROLE_MESSAGE] - 1, False
        elif mk == V_STRING or mk == V_ESCAPED or mk == V_TRUE or mk == V_FALSE:
            if o + 3 * (e - s) + 64 * min(nf, max_fields) + 16 > decoded.shape[0]:
                _keep(carry, o, prev_s, prev_e, prev_la, prev_lb, prev_level)
                return i
            c0, c1, dec = o, o, True
            if mk == V_STRING:
                c1 = o + ve[ROLE_MESSAGE] - vs[ROLE_MESSAGE] - 2
                _copy(buf, vs[ROLE_MESSAGE] + 1, ve[ROLE_MESSAGE] - 1, decoded, o)
            elif mk == V_ESCAPED:
                c1 = decode_string(buf, vs[ROLE_MESSAGE] + 1, ve[ROLE_MESSAGE] - 1, decoded, o)
            else:  # json.dumps of the value
                word = _TRUE if mk == V_TRUE else _FALSE
                c1 = o + word.shape[0]
                _copy(word, 0, word.shape[0], decoded, c0)
            if c1 >= 0 and numeric:
                c1, over[i] = _put_fields(buf, fields, nf, max_fields, decoded, c1, dig)
            if c1 < 0:
                over[i] = 0
                continue
        else:
            continue
        in_decoded[i] = dec
        if dec:
            o = c1
        if sk == V_STRING and ve[ROLE_SOURCE] - vs[ROLE_SOURCE] > 2:  # an empty source is the parser's
            src_start[i], src_end[i] = vs[ROLE_SOURCE] + 1, ve[ROLE_SOURCE] - 1
        if kind == STAMP_TEXT:
            repeat[i] = _same_bytes(buf, prev_s, prev_e, a, b)
            prev_s, prev_e = a, b
            stamp_start[i], stamp_end[i], year[i], month[i] = a, b, y, mo
        ok[i], ts[i], stamp[i], level[i], cstart[i], cend[i] = True, t, kind, lv, c0, c1
    _keep(carry, o, prev_s, prev_e, prev_la, prev_lb, prev_level)
    return n


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def span_ids(buf, ss, se):
    """Equal byte spans get equal ids, numbered by first appearance; -1 where ss is -1.

    Returns (ids int64[n], first line of each id). An open-addressing table compares the bytes, so
    ids never collide.
    """
    n = ss.shape[0]
    size = 16
    while size < 2 * n:
        size *= 2
    table = np.full(size, -1, np.int64)
    first = np.zeros(n, np.int64)
    ids = np.full(n, -1, np.int64)
    count = 0
    for i in range(n):
        if ss[i] < 0:
            continue
        h = 1469598103934665603
        for k in range(ss[i], se[i]):
            h = (h ^ buf[k]) * 1099511628211
        slot = h & (size - 1)
        while True:
            k = table[slot]
            if k < 0:
                table[slot] = count
                first[count] = i
                ids[i] = count
                count += 1
                break
            if _same_bytes(buf, ss[first[k]], se[first[k]], ss[i], se[i]):
                ids[i] = k
                break
            slot = (slot + 1) & (size - 1)
    return ids, first[:count].copy()


def key_table(parser):
    """(keys uint8[4, m], lengths int64[4]) of the parser's configured keys; None when the kernel cannot match them.

    Dotted keys (paths into nested objects) turn the fast path off; an empty key matches nothing,
    as jsonl.lookup has it.
    """
    names = (parser.message_key, parser.timestamp_key, parser.source_key, parser.level_key)
    try:
        raw = [(name or "").encode("utf-8") for name in names]
    except (UnicodeEncodeError, AttributeError):
        return None
    if any(b"." in key for key in raw):
        return None
    keys = np.zeros((4, max(1, max(len(k) for k in raw))), dtype=np.uint8)
    lengths = np.full(4, -1, dtype=np.int64)
    for r, key in enumerate(raw):
        if key:
            keys[r, :len(key)] = np.frombuffer(key, dtype=np.uint8)
            lengths[r] = len(key)
    return keys, lengths


def kernel_args(numeric_levels, syslog_severity):
    """The constant tables json_lines takes after naive_ok, from records' level maps."""
    names, lengths, codes = level_table()
    table = np.zeros(max(numeric_levels) + 1, dtype=np.int64)
    for number, code in numeric_levels.items():
        table[number] = code
    table[:len(syslog_severity)] = syslog_severity
    return pk._POW10, pk._DAYS_IN_MONTH, _EXACT_POW10, names, lengths, codes, table
