"""numba hot loops of the template miner, each with a plain-Python twin (miner_twins.py) that the tests compare.

Called by miner.TemplateMiner on byte buffers from framing/headers; masking.py names the flags.

A masked line is the line's tokens (split on whitespace) joined by one space, where every
value (a run of digits, an id, an IP, a hex string, a date...) is replaced by the byte MARK. Lines
with the same masked form share a "shape"; the shape hash is the key of the miner's cache.
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

MARK = 0xFF  # one masked value; 0xFF never occurs in UTF-8 text
SEP = 0x20
# A template token made of GAP alone is a span: a run of any number of value-only tokens (values
# and punctuation, no literal word), none included: a list of ids, "(1.2 KB)" present or not.
GAP = 0xFE
SPAN = bytes([GAP])
FNV_OFFSET = np.uint64(14695981039346656037)
FNV_PRIME = np.uint64(1099511628211)
_MASK64 = (1 << 64) - 1

# Masker bits (masking.MaskingConfig.flags builds them).
F_NUMBERS, F_IDS, F_HEX, F_IP, F_UUID, F_PATH, F_DURATION, F_SIZE, F_DATETIME = (1 << i for i in range(9))
# Kinds of a value run inside a token.
K_LITERAL, K_NUMBER, K_ID, K_HEX, K_IP, K_DURATION, K_SIZE = range(7)
_KIND_FLAG = np.array([0, F_NUMBERS, F_IDS, F_HEX, F_IP, F_DURATION, F_SIZE], dtype=np.int64)
# A short word holding one digit after a leading letter, glued by "_" to a word after it, is part
# of a code identifier (jk2_init, utf8_decode, log4j_conf, sha1_update), not an id: ids come last
# (blk_<*>, user_<*>). Alone, such a word stays an id (u1, t7, cpu0): a literal there would make
# a new template, and a novelty, of every new value.
NAME_MAX = 5
UNDERSCORE = 95
_NAMES = np.frombuffer(b"JanFebMarAprMayJunJulAugSepOctNovDecMonTueWedThuFriSatSun", dtype=np.uint8).copy()


def _pack(word):
    """A unit word (<= 5 letters, case-folded) as one integer, so kernels compare units by value."""
    v = 0
    for ch in word.lower().encode():
        v = v * 32 + (ch - 96)
    return v


_DURATION_UNITS = np.array(sorted({_pack(u) for u in
                                   "ns us ms s sec secs m min mins h hr hrs d".split()}), dtype=np.int64)
_SIZE_UNITS = np.array(sorted({_pack(u) for u in
                               "b k kb m mb g gb t tb kib mib gib tib bytes".split()}), dtype=np.int64)
# A size unit written as its own word after a number ("5.4 KB") is part of that value:
# the unit changes with the magnitude, so "93.0 B" and "5.4 KB" must give one shape.
_LONE_SIZE_WORDS = (b"B", b"KB", b"MB", b"GB", b"TB", b"KiB", b"MiB", b"GiB", b"TiB")
_LONE_BYTES = np.frombuffer(b" ".join(_LONE_SIZE_WORDS), dtype=np.uint8).copy()
# Duration units written as their own word stay literal ("took <*> ms"), but one right after a
# value belongs to a span there ("lifetime <1 sec" / "lifetime 00:01"; see span_tokens).
_LONE_DURATION_WORDS = (b"ns", b"us", b"ms", b"msec", b"msecs", b"sec", b"secs", b"second", b"seconds", b"min",
                        b"mins", b"minute", b"minutes", b"hr", b"hrs", b"hour", b"hours")
_LONE_DURATION_BYTES = np.frombuffer(b" ".join(_LONE_DURATION_WORDS), dtype=np.uint8).copy()


# ---------------------------------------------------------------- byte classes
def _class_table():
    t = np.zeros(256, dtype=np.uint8)
    for c in range(256):
        ch = chr(c)
        t[c] = ((1 if c == 32 or 9 <= c <= 13 else 0) | (2 if ch.isdigit() and c < 128 else 0)
                | (4 if ch.isalpha() and c < 128 else 0) | (8 if ch in "0123456789abcdefABCDEF" else 0))
    return t


_CLS = _class_table()  # bits: 1 space, 2 digit, 4 ASCII letter, 8 hex digit


@njit(cache=True, inline="always")
def _is_space(c):
    return (_CLS[c] & 1) != 0


@njit(cache=True, inline="always")
def _is_digit(c):
    return (_CLS[c] & 2) != 0


@njit(cache=True, inline="always")
def _is_alpha(c):
    return (_CLS[c] & 4) != 0


@njit(cache=True, inline="always")
def _is_alnum(c):
    return (_CLS[c] & 6) != 0


@njit(cache=True, inline="always")
def _is_hex(c):
    return (_CLS[c] & 8) != 0


# ---------------------------------------------------------------- whole-token maskers
@njit(cache=True, inline="always")
def _is_date_name(buf, s, e):
    # Month and weekday names stand for dates inside messages ("at Sun Jul 10 03:55:15 2005").
    n = e - s
    if not (n == 3 or (n == 4 and buf[s + 3] == 44)):
        return False
    return _is_name(buf, s, 19)


@njit(cache=True, inline="always")
def _is_name(buf, i, count):
    """buf[i:i+3] is one of the first `count` names of _NAMES (12 months, then 7 weekdays)."""
    for k in range(count):
        if buf[i] == _NAMES[3 * k] and buf[i + 1] == _NAMES[3 * k + 1] and buf[i + 2] == _NAMES[3 * k + 2]:
            return True
    return False


@njit(cache=True, _nrt=False)
def _has_uuid(buf, s, e):
    for i in range(s, e - 35):
        if i > s and _is_alnum(buf[i - 1]):
            continue
        ok = True
        for j in range(36):
            c = buf[i + j]
            if j == 8 or j == 13 or j == 18 or j == 23:
                if c != 45:
                    ok = False
                    break
            elif not _is_hex(c):
                ok = False
                break
        if ok:
            return True
    return False


@njit(cache=True, inline="always")
def _path_start(buf, s, e):
    """Index of the first "/" when buf[s:e] is a path ("/var/log/x", "'/etc/hosts'", "(/tmp/a)"), else -1.

    A path has a second "/" ("/10.0.0.1:80" is an address, masked run by run); it is one value.
    """
    if e - s < 3:
        return -1
    c = buf[s]
    first = -1
    if c == 47:
        first = s
    elif buf[s + 1] == 47 and (c == 34 or c == 39 or c == 40 or c == 61 or c == 91 or c == 60):
        first = s + 1
    if first < 0:
        return -1
    for i in range(first + 1, e):
        if buf[i] == 47:
            return first
    return -1


@njit(cache=True, inline="always")
def _is_scheme_char(c):
    return _is_alnum(c) or c == 43 or c == 45 or c == 46   # + - .


@njit(cache=True, _nrt=False)
def _is_url_at(buf, s, p, e):
    """buf[p:p+3] is the "://" of a URL with a path: a scheme word before it (a letter first:
    hdfs, https, akka.tcp), a "/" after it (hdfs://host:9000/logs/a, url=http://x/y).

    As a path is one value, so is what follows the scheme of a URL that has one: host, port and
    path all change from line to line; the scheme stays a word. A URL without a path
    (spark://driver@10.0.0.1:7077) keeps its address masked run by run."""
    if not (p + 2 < e and buf[p] == 58 and buf[p + 1] == 47 and buf[p + 2] == 47):
        return False
    q = p
    while q > s and _is_scheme_char(buf[q - 1]):
        q -= 1
    if q == p or not _is_alpha(buf[q]):
        return False
    for i in range(p + 3, e):
        if buf[i] == 47:
            return True
    return False


@njit(cache=True, inline="always")
def _forced(force, s, e):
    if force.shape[0] == 0:
        return False
    for i in range(s, e):
        if force[i]:
            return True
    return False


@njit(cache=True, inline="always")
def _masks_whole(buf, s, e, flags, force):
    if _forced(force, s, e):
        return True
    return (flags & F_DATETIME) != 0 and _is_date_name(buf, s, e)


@njit(cache=True, inline="always")
def _is_opener(c):
    return c == 34 or c == 39 or c == 40 or c == 61 or c == 91 or c == 60 or c == 123   # " ' ( = [ < {


@njit(cache=True, inline="always")
def _is_closer(c):
    # " ' ) ] > } , ; : . ! ?
    return (c == 34 or c == 39 or c == 41 or c == 93 or c == 62 or c == 125 or c == 44 or c == 59
            or c == 58 or c == 46 or c == 33 or c == 63)


@njit(cache=True, inline="always")
def _write_wrapped(buf, s, e, out, o):
    """A whole-token value (a path, a token holding a uuid) as one MARK, its wrapping kept literal:
    "(/var/lib/x):" -> "(<*>):", "e7f1...]" -> "<*>]". The brackets, quotes and trailing
    punctuation are the message's words, the same on every line; swallowing them made the
    template's text differ from what the program prints."""
    a = s
    while a < e - 1 and _is_opener(buf[a]):
        out[o] = buf[a]
        o += 1
        a += 1
    b = e
    while b > a + 1 and _is_closer(buf[b - 1]):
        b -= 1
    out[o] = MARK
    o += 1
    for q in range(b, e):
        out[o] = buf[q]
        o += 1
    return o


# ---------------------------------------------------------------- dates and times inside a token
# A date or time is one value, not a day, an hour and a minute: as separate numbers the
# day climbs and the hours cycle, which the detector's parameter statistics take for drift.
@njit(cache=True, inline="always")
def _num(buf, i, e, lo, hi):
    """(end, value) of the lo..hi digits at buf[i:] read greedily; end -1 when fewer than lo."""
    v = 0
    j = i
    while j < e and j - i < hi and _is_digit(buf[j]):
        v = v * 10 + (buf[j] - 48)
        j += 1
    if j - i < lo:
        return -1, 0
    return j, v


@njit(cache=True, inline="always")
def _field_end(buf, i, e, lo, hi, least, most, sep):
    """End of a date/time field of lo..hi digits worth least..most (and followed by byte sep when
    sep >= 0) at buf[i:]; -1 when there is none."""
    if i < 0:
        return -1
    j, v = _num(buf, i, e, lo, hi)
    if j < 0 or v < least or v > most or (sep >= 0 and (j >= e or buf[j] != sep)):
        return -1
    return j


@njit(cache=True, inline="always")
def _is_month_name(buf, i):
    return _is_name(buf, i, 12)


@njit(cache=True, _nrt=False)
def _zone_end(buf, i, e):
    """End of a zone offset +hh:mm / -hhmm at buf[i:], else -1."""
    if i >= e or (buf[i] != 43 and buf[i] != 45):
        return -1
    j = _field_end(buf, i + 1, e, 2, 2, 0, 14, -1)
    if j > 0 and j < e and buf[j] == 58:
        j += 1
    return _field_end(buf, j, e, 2, 2, 0, 59, -1)


@njit(cache=True, _nrt=False)
def _clock_end(buf, i, e):
    """End of hh:mm:ss[.fff|,fff][Z|zone] at buf[i:], else -1."""
    j = _field_end(buf, i, e, 1, 2, 0, 23, 58)
    if j > 0:
        j = _field_end(buf, j + 1, e, 2, 2, 0, 59, 58)
    if j > 0:
        j = _field_end(buf, j + 1, e, 2, 2, 0, 60, -1)
    if j < 0:
        return -1
    if j + 1 < e and (buf[j] == 46 or buf[j] == 44) and _is_digit(buf[j + 1]):
        j += 1
        while j < e and _is_digit(buf[j]):
            j += 1
    if j < e and buf[j] == 90:
        return j + 1
    z = _zone_end(buf, j, e)
    return z if z > 0 else j


@njit(cache=True, inline="always")
def _then_clock(buf, j, e, sep):
    # a date followed by sep and a clock is one value with it; without a clock it ends at j
    if j > 0 and j < e and buf[j] == sep:
        t = _clock_end(buf, j + 1, e)
        if t > 0:
            return t
    return j


@njit(cache=True, _nrt=False)
def _date_end(buf, i, e, width, sep):
    """End of the date at buf[i:] whose first field has width digits followed by sep, else -1.

    2026-03-02[Thh:mm:ss...], 2026/3/2, 02.03.2026 and Apache's 02/Mar/2026[:hh:mm:ss...].
    """
    if width == 4:  # year first
        j = _field_end(buf, i, e, 4, 4, 1900, 2099, sep)
        w = 2 if sep == 45 else 1
        if j > 0:
            j = _field_end(buf, j + 1, e, w, 2, 1, 12, sep)
        if j > 0:
            j = _field_end(buf, j + 1, e, w, 2, 1, 31, -1)
        return _then_clock(buf, j, e, 84) if sep == 45 else j
    if sep == 46:
        j = _field_end(buf, i, e, 2, 2, 1, 31, 46)
        if j > 0:
            j = _field_end(buf, j + 1, e, 2, 2, 1, 12, 46)
        return _field_end(buf, j + 1, e, 4, 4, 1900, 2099, -1) if j > 0 else -1
    j = _field_end(buf, i, e, 1, 2, 1, 31, 47)
    if j < 0 or j + 5 > e or buf[j + 4] != 47 or not _is_month_name(buf, j + 1):
        return -1
    return _then_clock(buf, _field_end(buf, j + 5, e, 4, 4, 1900, 2099, -1), e, 58)


@njit(cache=True, inline="always")
def _ends_value(buf, j, e):
    """A date/time ending at j stands alone: not glued to a word, nor to more of a number (10:00:00:33)."""
    if j >= e:
        return True
    c = buf[j]
    if _is_alnum(c) or c == 95:
        return False
    glue = c == 46 or c == 58 or c == 45 or c == 47 or c == 44 or c == 43
    return not (glue and j + 1 < e and _is_alnum(buf[j + 1]))


@njit(cache=True, _nrt=False)
def _datetime_end(buf, i, e):
    """End of the date or time that starts at buf[i] (a digit), or -1 when there is none."""
    j, _ = _num(buf, i, e, 1, 4)
    if j >= e:
        return -1
    width = j - i
    sep = buf[j]
    end = -1
    if width <= 2 and sep == 58:
        end = _clock_end(buf, i, e)
    elif (width == 4 and (sep == 45 or sep == 47)) or (width <= 2 and sep == 47) or (width == 2 and sep == 46):
        end = _date_end(buf, i, e, width, sep)
    if end < 0 or not _ends_value(buf, end, e):
        return -1
    return end


@njit(cache=True, inline="always")
def _is_date_opener(c):
    # not "=": that one is checked on its own (a date right after "=" or after "=" and a bracket);
    # named apart from _is_opener, which it used to shadow, dropping the "=" of "=/var/x" and "=<uuid>"
    return c == 34 or c == 39 or c == 40 or c == 91 or c == 60 or c == 123


@njit(cache=True, inline="always")
def _date_may_start(buf, s, i):
    """A date is looked for only where a value starts: the token start, after "=" or one opening bracket/quote."""
    if i == s or buf[i - 1] == 61:
        return True
    return _is_date_opener(buf[i - 1]) and (i - 1 == s or buf[i - 2] == 61)


# ---------------------------------------------------------------- value runs inside a token
@njit(cache=True, inline="always")
def _is_ipv4(buf, a, b):
    groups = 0
    width = 0
    for i in range(a, b):
        c = buf[i]
        if _is_digit(c):
            width += 1
            if width > 3:
                return False
        elif c == 46:
            if width == 0:
                return False
            groups += 1
            width = 0
        else:
            return False
    return groups == 3 and width > 0


@njit(cache=True, inline="always")
def _unit_in(code, units):
    for u in units:
        if u == code:
            return True
    return False


@njit(cache=True, inline="always")
def _run_kind(buf, a, b, has_digit, all_num, all_hex):
    """Classify the run buf[a:b] (see K_*); runs without digits are literal unless long hex."""
    if not has_digit:
        return K_HEX if (all_hex and b - a >= 8) else K_LITERAL
    if all_num:
        return K_IP if _is_ipv4(buf, a, b) else K_NUMBER
    # digits[.digits] followed by a unit word: 12ms, 5.4KB
    i = a
    while i < b and (_is_digit(buf[i]) or buf[i] == 46):
        i += 1
    if i > a and _is_digit(buf[a]) and b - i <= 5:
        code = 0
        unit = True
        for j in range(i, b):
            if not _is_alpha(buf[j]):
                unit = False
                break
            code = code * 32 + ((buf[j] | 32) - 96)
        if unit:
            if _unit_in(code, _DURATION_UNITS):
                return K_DURATION
            if _unit_in(code, _SIZE_UNITS):
                return K_SIZE
    return K_HEX if all_hex else K_ID


@njit(cache=True, inline="always")
def _is_identifier_word(buf, a, b, e):
    """buf[a:b] is a word of a code identifier (see NAME_MAX): a letter, one digit, at most NAME_MAX
    bytes, then "_" and a letter."""
    if not (_is_alpha(buf[a]) and b - a <= NAME_MAX and b + 1 < e and buf[b] == UNDERSCORE and _is_alpha(buf[b + 1])):
        return False
    n = 0
    for i in range(a, b):
        if _is_digit(buf[i]):
            n += 1
    return n == 1


@njit(cache=True, inline="always")
def _is_lone_unit(buf, a, b, words):
    # exact compare against the space-separated words of words (_LONE_BYTES, _LONE_DURATION_BYTES)
    w = 0
    n = words.shape[0]
    while w < n:
        z = w
        while z < n and words[z] != 32:
            z += 1
        if z - w == b - a:
            same = True
            for j in range(b - a):
                if buf[a + j] != words[w + j]:
                    same = False
                    break
            if same:
                return True
        w = z + 1
    return False


@njit(cache=True, inline="always")
def _zone_token_end(buf, s, e):
    # "+0000]" right after a date/time ("[02/Mar/2026:10:00:00 +0000]") is its zone, one value
    z = _zone_end(buf, s, e)
    return z if z > 0 and _ends_value(buf, z, e) else -1


@njit(cache=True, inline="always")
def _is_lower_or_digit(c):
    return (97 <= c <= 122) or (48 <= c <= 57)


@njit(cache=True, _nrt=False)
def _instance_end(buf, a, e):
    """End of an instance name starting at buf[a], or -1: lowercase words joined by "-" whose last
    part is a number, standing alone (msra-sa-41, mesos-slave-07, web-01, ip-10-0-1-23, redis-0).

    Hosts, pods and workers are named this way; the number picks one of many alike, so the whole
    name is the value, not only its number. Upper-case words (UTF-8, SHA-256, MININT-X5) and a
    dotted or further joined continuation (web-01.corp, node-1-backup) are left to the run rules."""
    j = a
    while j < e and 97 <= buf[j] <= 122:
        j += 1
    parts = 0
    last_numeric = False
    while j + 1 < e and buf[j] == 45 and _is_lower_or_digit(buf[j + 1]):
        j += 1
        last_numeric = True
        while j < e and _is_lower_or_digit(buf[j]):
            last_numeric = last_numeric and _is_digit(buf[j])
            j += 1
        parts += 1
    if parts == 0 or not last_numeric:
        return -1
    if j < e and (_is_alnum(buf[j]) or buf[j] == UNDERSCORE):
        return -1
    if j + 1 < e and (buf[j] == 46 or buf[j] == 45) and _is_alnum(buf[j + 1]):
        return -1
    return j


@njit(cache=True, inline="always")
def _may_start_instance(buf, s, a):
    # not inside a longer word, id or dotted name
    if a == s:
        return True
    c = buf[a - 1]
    return not (_is_alnum(c) or c == UNDERSCORE or c == 46 or c == 45)


@njit(cache=True, inline="always")
def _put_value(out, o, o0):
    """Write one MARK at out[o] unless the token's output since o0 ends in a value joined by "_"
    (MARK "_" or MARK "_" letter "_"): then that value grows over this one and its "_" goes.

    "_" belongs to identifiers, not prose, so values glued by it are one compound id:
    attempt_1445_0020_m_000000_0 -> attempt_<*>, rdd_42_3 -> rdd_<*>, container_1445_0020_01_000002;
    a single letter between two such values is a tag inside the id (m/r for map/reduce).
    Returns the new end."""
    if o - o0 >= 2 and out[o - 1] == UNDERSCORE and out[o - 2] == MARK:
        return o - 1
    if o - o0 >= 4 and out[o - 1] == UNDERSCORE and _is_alpha(out[o - 2]) and out[o - 3] == UNDERSCORE \
            and out[o - 4] == MARK:
        return o - 3
    out[o] = MARK
    return o + 1


@njit(cache=True, inline="always")
def _is_sign(buf, s, i, e):
    """buf[i] is a minus sign: "-" before a digit, at the token start or after punctuation
    (vCores:-1, x=-5, [-2], blk_-69); after a letter or digit it joins words (msra-sa-41, 3-4)."""
    return buf[i] == 45 and i + 1 < e and _is_digit(buf[i + 1]) and (i == s or not _is_alnum(buf[i - 1]))


@njit(cache=True, inline="always")
def _mask_token(buf, s, e, flags, force, out, o, after_value, after_date):
    """Write the masked form of token buf[s:e] to out[o:]; return (new end, ends in a date/time).

    after_value: the previous token ended in a masked value (for lone size units);
    after_date: it ended in a date or time (for a zone offset after it).
    """
    if _masks_whole(buf, s, e, flags, force):
        out[o] = MARK
        return o + 1, False
    if ((flags & F_UUID) != 0 and e - s >= 36 and _has_uuid(buf, s, e)) or \
            ((flags & F_PATH) != 0 and _path_start(buf, s, e) >= 0):
        return _write_wrapped(buf, s, e, out, o), False
    dates = (flags & F_DATETIME) != 0
    dated = False
    o0 = o
    sign = False  # a minus sign was read and waits for the run after it
    i = s
    if after_date and dates:
        z = _zone_token_end(buf, s, e)
        if z > 0:
            out[o] = MARK
            o += 1
            i = z
    while i < e:
        k = _CLS[buf[i]]
        if k & 6:
            if dates and (k & 2) and _date_may_start(buf, s, i):
                d = _datetime_end(buf, i, e)
                if d > 0:
                    o = _put_value(out, o, o0)
                    i = d
                    dated = True
                    continue
            dated = False
            # classify the run with bit accumulators (few data-dependent branches), copy it
            # only when it stays literal
            a = i
            seen = 0     # OR of classes: 2 a digit, 4 a letter
            common = 8   # AND of classes: 8 while every char is a hex digit
            while i < e:
                k = _CLS[buf[i]]
                if k & 6:
                    seen |= k
                    common &= k
                    i += 1
                elif buf[i] == 46 and i + 1 < e and (_CLS[buf[i + 1]] & 6):
                    common = 0
                    i += 1
                else:
                    break
            if (seen & 6) == 4 and i < e and buf[i] == 45 and (flags & F_IDS) != 0 and _may_start_instance(buf, s, a):
                # only a run of letters before "-" may start an instance name: the check costs no
                # call for the other words
                h = _instance_end(buf, a, e)
                if h > 0:
                    o = _put_value(out, o, o0)
                    i = h
                    continue
            has_digit = (seen & 2) != 0
            all_hex = common != 0
            if not all_hex and i - a >= 2 and buf[a] == 48 and buf[a + 1] == 120:
                all_hex = True  # 0x prefix
                for q in range(a + 2, i):
                    if not (_CLS[buf[q]] & 8):
                        all_hex = False
                        break
            kind = K_LITERAL
            if has_digit or (all_hex and i - a >= 8):
                kind = _run_kind(buf, a, i, has_digit, (seen & 4) == 0, all_hex)
                if (kind == K_ID or kind == K_HEX) and _is_identifier_word(buf, a, i, e):
                    kind = K_LITERAL
            elif a == s and after_value and (flags & F_SIZE) != 0 and _is_lone_unit(buf, a, i, _LONE_BYTES):
                kind = K_SIZE

            if kind != K_LITERAL and (flags & _KIND_FLAG[kind]) != 0:
                o = _put_value(out, o, o0)  # a waiting sign is part of the value
            else:
                for q in range(a - 1 if sign else a, i):
                    out[o] = buf[q]
                    o += 1
            sign = False
        elif _is_sign(buf, s, i, e):
            sign = True  # written with the run after it only if that run stays literal
            i += 1
        elif buf[i] == 58 and (flags & F_PATH) != 0 and _is_url_at(buf, s, i, e):
            # what came before "://" was masked as usual (user@https://...); the rest is one value
            for q in range(3):
                out[o + q] = buf[i + q]
            return _write_wrapped(buf, i + 3, e, out, o + 3), False
        else:
            out[o] = buf[i]
            o += 1
            i += 1
    return o, dated


@njit(cache=True, inline="always")
def _next_token(buf, i, e):
    """(start, end) of the first whitespace-separated token of buf[i:e]; start == e when there is none."""
    while i < e and _is_space(buf[i]):
        i += 1
    j = i
    while j < e and not _is_space(buf[j]):
        j += 1
    return i, j


@kt.entry((kt.BYTES, kt.INT64, kt.INT64, kt.INT64, kt.U8_1D, kt.U8_1D), cache=True, _nrt=False)
def mask_line(buf, s, e, flags, force, out):
    """Masked form of line buf[s:e] into out (len >= e - s); returns its length."""
    o = 0
    i = s
    dated = False
    while i < e:
        i, j = _next_token(buf, i, e)
        if i >= e:
            break
        after_value = o > 0 and out[o - 1] == MARK
        if o > 0:
            out[o] = SEP
            o += 1
        o, dated = _mask_token(buf, i, j, flags, force, out, o, after_value, dated)
        i = j
    return o


@njit(cache=True, inline="always")
def _fnv(data, a, b):
    h = FNV_OFFSET
    for i in range(a, b):
        h = (h ^ np.uint64(data[i])) * FNV_PRIME
    return h


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def fnv_spans(buf, starts, ends):
    """FNV-1a of each span buf[starts[k]:ends[k]] (twin: miner_twins.fnv_py per span)."""
    out = np.empty(starts.shape[0], np.uint64)
    for k in range(starts.shape[0]):
        out[k] = _fnv(buf, starts[k], ends[k])
    return out


@njit(cache=True, inline="always")
def _hash_words(data, a, b):
    """64-bit hash of data[a:b] eight bytes per multiply (shapes are long; FNV per byte is slower)."""
    h = FNV_OFFSET ^ np.uint64(b - a)
    i = a
    while i + 8 <= b:
        w = np.uint64(0)
        for j in range(8):
            w |= np.uint64(data[i + j]) << np.uint64(8 * j)
        h = (h ^ w) * FNV_PRIME
        h ^= h >> np.uint64(29)
        i += 8
    while i < b:
        h = (h ^ np.uint64(data[i])) * FNV_PRIME
        i += 1
    return h


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.INT64, kt.U8_1D), cache=True)
def shape_hashes(buf, starts, ends, flags, force):
    """Hash of every line's masked form: uint64[n]."""
    n = starts.shape[0]
    out = np.empty(n, dtype=np.uint64)
    longest = 1
    for k in range(n):
        if ends[k] - starts[k] + 1 > longest:
            longest = ends[k] - starts[k] + 1
    _hash_lines(buf, starts, ends, flags, force, np.empty(longest, dtype=np.uint8), out)
    return out


@kt.loop
def _hash_lines(buf, starts, ends, flags, force, scratch, out):
    """shape_hashes' loop, into out (kt.loop: no reference counting)."""
    for k in range(starts.shape[0]):
        m = mask_line(buf, starts[k], ends[k], flags, force, scratch)
        out[k] = _hash_words(scratch, 0, m)


# ---------------------------------------------------------------- shape cache (open addressing)
@njit(cache=True, inline="always")
def table_find(keys, vals, key):
    """Slot stored for key, or -1."""
    cap = keys.shape[0]
    i = np.int64(key & np.uint64(cap - 1))
    while vals[i] != -1:
        if keys[i] == key:
            return vals[i]
        i = (i + 1) & (cap - 1)
    return -1


@kt.entry((kt.U64_1D, kt.I32_1D, kt.UINT64, kt.INT32), cache=True)
def table_put(keys, vals, key, val):
    """Insert or overwrite; capacity is a power of two kept at most half full by the caller."""
    cap = keys.shape[0]
    i = np.int64(key & np.uint64(cap - 1))
    while vals[i] != -1 and keys[i] != key:
        i = (i + 1) & (cap - 1)
    keys[i] = key
    vals[i] = val


@kt.entry((kt.U64_1D, kt.INT64, kt.U64_1D, kt.I32_1D, kt.I64_1D, kt.I64_1D, kt.INT64, kt.I32_1D), cache=True, _nrt=False)
def assign_slots(hashes, first, keys, vals, counts, last_seen, clock, out):
    """Resolve lines from `first` on through the cache until the first miss; return its index (n if none).

    Counts and last-seen clocks of hit templates are updated here so that the Python side
    only runs for misses; the caller resolves the miss and calls again from the next line.
    """
    n = hashes.shape[0]
    for k in range(first, n):
        slot = table_find(keys, vals, hashes[k])
        if slot < 0:
            return k
        out[k] = slot
        counts[slot] += 1
        last_seen[slot] = clock + k
    return n


# ---------------------------------------------------------------- similarity
@kt.entry((kt.U64_2D, kt.U64_1D), cache=True)
def equal_tokens(tpl_hashes, line_hashes):
    """For each template row of token hashes, how many tokens equal the line's (int64[k]).

    The miner ranks candidate templates by this count before the exact (Python) join.
    """
    k, width = tpl_hashes.shape
    out = np.zeros(k, dtype=np.int64)
    for r in range(k):
        c = 0
        for j in range(width):
            if tpl_hashes[r, j] == line_hashes[j]:
                c += 1
        out[r] = c
    return out


# ---------------------------------------------------------------- parameters
@njit(cache=True, inline="always")
def _find(buf, p, e, pool, a, b):
    """First index >= p where pool[a:b] occurs in buf[p:e], or -1."""
    m = b - a
    for i in range(p, e - m + 1):
        ok = True
        for j in range(m):
            if buf[i + j] != pool[a + j]:
                ok = False
                break
        if ok:
            return i
    return -1


@njit(cache=True, inline="always")
def _glob_capture(buf, s, e, pool, ts, te, caps):
    """Match token buf[s:e] against template token pool[ts:te] (MARK = any text).

    Fills caps[2*w], caps[2*w+1] with the span of wildcard w, lazily (leftmost literal
    match) with the last literal anchored at the end. Returns False when it does not match;
    the caller then gives the whole token to the first wildcard.
    """
    # literal pieces between marks
    p = s
    w = 0
    i = ts
    # leading literal must be a prefix
    while i < te and pool[i] != MARK:
        if p >= e or buf[p] != pool[i]:
            return False
        p += 1
        i += 1
    while i < te:
        # pool[i] is MARK; the literal after it runs to the next MARK or the end
        i += 1
        a = i
        while i < te and pool[i] != MARK:
            i += 1
        if i == te:
            # last literal: anchored at the end of the token
            if e - p < i - a:
                return False
            q = e - (i - a)
            for j in range(i - a):
                if buf[q + j] != pool[a + j]:
                    return False
            caps[2 * w] = p
            caps[2 * w + 1] = q
            return True
        q = _find(buf, p, e, pool, a, i)
        if q < 0:
            return False
        caps[2 * w] = p
        caps[2 * w + 1] = q
        w += 1
        p = q + (i - a)
    return p == e


@njit(cache=True, _nrt=False)
def parse_number(buf, a, b):
    """Numeric value of buf[a:b] with a unit word stripped ("12ms" -> 12.0); NaN if not a number."""
    i = a
    neg = False
    if i < b and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    whole = 0.0
    digits = 0
    while i < b and _is_digit(buf[i]):
        whole = whole * 10.0 + (buf[i] - 48)
        digits += 1
        i += 1
    if i < b and buf[i] == 46:
        i += 1
        scale = 0.1
        while i < b and _is_digit(buf[i]):
            whole += (buf[i] - 48) * scale
            scale *= 0.1
            digits += 1
            i += 1
    if i + 1 < b and buf[i] == 32 and _is_alpha(buf[i + 1]):
        i += 1  # "5.4 KB": a span holding a number and its unit word
    if digits == 0 or b - i > 5:
        return math.nan
    for j in range(i, b):
        if not _is_alpha(buf[j]):
            return math.nan
    return -whole if neg else whole


@njit(cache=True, inline="always")
def _value_only(out, o):
    """The masked token out[:o] is values and punctuation only (no literal letter or digit)."""
    marked = False
    for q in range(o):
        c = out[q]
        if c == MARK:
            marked = True
        elif _is_alnum(c):
            return False
    return marked


# span_tokens masks one token at a time, twice in its body: calling one compiled copy instead of
# inlining _mask_token there halves the miner's cold compile; mask_line keeps it inlined (hot).
_mask_token_called = njit(cache=True)(_mask_token.py_func)


@njit(cache=True, _nrt=False)
def span_tokens(buf, i, e, flags, force, scratch, prev_s, prev_e):
    """(start, end) of the run of value-only tokens from buf[i] on, each with the duration unit
    word that may follow it (_LONE_DURATION_WORDS); (-1, i) when there is none.

    Tokens are masked as mask_line masks them; the token before the run, buf[prev_s:prev_e]
    (prev_s -1 when none), gives the context (a size unit after a value, a zone after a date).
    """
    after_value = False
    dated = False
    if prev_s >= 0:
        o, dated = _mask_token_called(buf, prev_s, prev_e, flags, force, scratch, 0, False, False)
        after_value = o > 0 and scratch[o - 1] == MARK
    first = -1
    end = i
    p = i
    while True:
        p, q = _next_token(buf, p, e)
        if p >= e:
            break
        o, d = _mask_token_called(buf, p, q, flags, force, scratch, 0, after_value, dated)
        if _value_only(scratch, o):
            after_value = scratch[o - 1] == MARK
            dated = d
        elif first >= 0 and after_value and _is_lone_unit(buf, p, q, _LONE_DURATION_BYTES):
            after_value = False  # "<1 sec": the unit word of the value before
            dated = False
        else:
            break
        if first < 0:
            first = p
        end = q
        p = q
    return first, end


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I32_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.U8_1D,
       kt.INT64, kt.I64_1D, kt.INT64, kt.U8_1D), cache=True)
def extract_params(buf, starts, ends, slots, tpl_first, tpl_nscan, tt_start, tt_end, tt_marks, pool, max_marks,
                   param_ptr, flags, force):
    """Values filling each template wildcard, in the CSR layout of ParsedBatch.

    Template tokens of slot s are tt_*[tpl_first[s]:...]; only the first tpl_nscan[s] of them
    are walked (those up to the last one holding a wildcard); tt_marks counts wildcards per token,
    -1 for a span (see SPAN), whose one value is the run of value-only tokens there (span_tokens,
    masking with flags and force as the shapes were), the empty string at that point when none.

    param_ptr (int64[n+1], from the wildcard count of each line's template) is given and
    max_marks bounds the wildcards of one template token; returns
    (pos int16, hash uint64, num float64, start int64, end int64), one entry per wildcard. The
    hash is of the whole line token when its template token holds one wildcard, else of the value.
    """
    n = starts.shape[0]
    m = param_ptr[n]
    pos = np.empty(m, dtype=np.int16)
    hsh = np.empty(m, dtype=np.uint64)
    num = np.empty(m, dtype=np.float64)
    cs = np.empty(m, dtype=np.int64)
    ce = np.empty(m, dtype=np.int64)
    caps = np.empty(2 * max(max_marks, 1), dtype=np.int64)
    longest = 1
    for k in range(n):
        if tpl_nscan[slots[k]] > 0 and ends[k] - starts[k] + 1 > longest:
            longest = ends[k] - starts[k] + 1
    _extract_lines(buf, starts, ends, slots, tpl_first, tpl_nscan, tt_start, tt_end, tt_marks, pool, param_ptr,
                   flags, force, np.empty(longest, dtype=np.uint8), caps, pos, hsh, num, cs, ce)
    return pos, hsh, num, cs, ce


@kt.loop
def _extract_lines(buf, starts, ends, slots, tpl_first, tpl_nscan, tt_start, tt_end, tt_marks, pool, param_ptr,
                   flags, force, scratch, caps, pos, hsh, num, cs, ce):
    """extract_params' loop, into its outputs (kt.loop: no reference counting)."""
    for k in range(starts.shape[0]):
        slot = slots[k]
        out = param_ptr[k]
        ordinal = 0
        t = tpl_first[slot]
        i = starts[k]
        e = ends[k]
        ps = -1
        pe = -1
        for _ in range(tpl_nscan[slot]):
            i, j = _next_token(buf, i, e)
            ts, te = tt_start[t], tt_end[t]
            nw = tt_marks[t]
            if nw < 0:
                a, b = span_tokens(buf, i, e, flags, force, scratch, ps, pe)
                if a < 0:
                    a = i
                pos[out] = ordinal
                hsh[out] = _fnv(buf, a, b)
                num[out] = parse_number(buf, a, b)
                cs[out] = a
                ce[out] = b
                out += 1
                ordinal += 1
                t += 1
                i = b
                ps = -1
                continue
            if nw > 0:
                if not _glob_capture(buf, i, j, pool, ts, te, caps):
                    caps[0] = i
                    caps[1] = j
                    for w in range(1, nw):
                        caps[2 * w] = j
                        caps[2 * w + 1] = j
                for w in range(nw):
                    a, b = caps[2 * w], caps[2 * w + 1]
                    pos[out] = ordinal
                    # A token's only value is known by the whole token: `host=db-replica-1` stays
                    # the same value when its template widens to `host=db-<*>`.
                    hsh[out] = _fnv(buf, i, j) if nw == 1 else _fnv(buf, a, b)
                    num[out] = parse_number(buf, a, b)
                    cs[out] = a
                    ce[out] = b
                    out += 1
                    ordinal += 1
            t += 1
            ps = i
            pe = j
            i = j


# ================================================================ Python the miner runs itself
def glob_capture_slow_path(tok, tmpl):
    """What _glob_capture does, on bytes (the miner's Python join of a new line, and the tests'
    reference): list of (start, end) per wildcard, or None."""
    pieces = tmpl.split(bytes([MARK]))
    if not tok.startswith(pieces[0]):
        return None
    p = len(pieces[0])
    caps = []
    for idx, lit in enumerate(pieces[1:], 1):
        if idx == len(pieces) - 1:
            if len(tok) - p < len(lit) or not tok.endswith(lit):
                return None
            caps.append((p, len(tok) - len(lit)))
            return caps
        q = tok.find(lit, p)
        if q < 0:
            return None
        caps.append((p, q))
        p = q + len(lit)
    return caps if p == len(tok) else None


def pool_token(token):
    """(bytes kept in the token pool, tt_marks) of a template token: a span keeps nothing and has -1."""
    if token == SPAN:
        return b"", -1
    return token, token.count(MARK)
