"""Test-only plain-Python twins of the kernels in miner_kernels.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import math
import re

import numpy as np

from anomaly_detector.parsing.miner_kernels import (
    _DURATION_UNITS,
    _KIND_FLAG,
    _LONE_DURATION_WORDS,
    _LONE_SIZE_WORDS,
    _MASK64,
    _NAMES,
    _SIZE_UNITS,
    F_DATETIME,
    F_IDS,
    F_PATH,
    F_SIZE,
    F_UUID,
    K_DURATION,
    K_HEX,
    K_ID,
    K_IP,
    K_LITERAL,
    K_NUMBER,
    K_SIZE,
    MARK,
    NAME_MAX,
    SEP,
    glob_capture_slow_path,
    pool_token,
)


# helpers of the twins
def _space(c):
    return c == 32 or 9 <= c <= 13


def _digit(c):
    return 48 <= c <= 57


def _alnum(c):
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122


def _hexc(c):
    return 48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102


_NAME_SET = {bytes(_NAMES[i:i + 3]) for i in range(0, 57, 3)}
_DUR_SET = set(int(x) for x in _DURATION_UNITS)
_SIZE_SET = set(int(x) for x in _SIZE_UNITS)


# The date/time grammar of _datetime_end and _zone_end, written as regexes (an independent twin).
_ZONE_RX = rb"[+-](?:0\d|1[0-4]):?[0-5]\d"
_CLOCK_RX = rb"(?:[01]?\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:[.,]\d+)?(?:Z|" + _ZONE_RX + rb")?"
_YEAR_RX = rb"(?:19|20)\d\d"
_MONTH_RX = b"|".join(bytes(_NAMES[i:i + 3]) for i in range(0, 36, 3))
_STANDS_ALONE = rb"(?![A-Za-z0-9_]|[.:\-/,+][A-Za-z0-9])"
_DATETIME_RE = re.compile(b"(?:" + b"|".join([
    _YEAR_RX + rb"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:T" + _CLOCK_RX + rb")?",
    _YEAR_RX + rb"/(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])",
    rb"(?:0?[1-9]|[12]\d|3[01])/(?:" + _MONTH_RX + b")/" + _YEAR_RX + rb"(?::" + _CLOCK_RX + rb")?",
    rb"(?:0[1-9]|[12]\d|3[01])\.(?:0[1-9]|1[0-2])\." + _YEAR_RX,
    _CLOCK_RX,
]) + b")" + _STANDS_ALONE)
_ZONE_RE = re.compile(_ZONE_RX + _STANDS_ALONE)
_OPENERS = b"\"'([<{"
_INSTANCE_RE = re.compile(rb"(?<![A-Za-z0-9_.\-])[a-z]+(?:-[a-z0-9]+)*-[0-9]+(?![A-Za-z0-9_]|[.\-][A-Za-z0-9])")
_IDENTIFIER_WORD = re.compile(rb"(?=[A-Za-z][A-Za-z.]*[0-9][A-Za-z.]*_)[A-Za-z0-9.]{1,%d}_[A-Za-z]" % NAME_MAX)
_JOINED_VALUES = re.compile(rb"\xff(?:_(?:[A-Za-z]_)?\xff)+")


def _run_kind_py(run):
    has_digit = any(_digit(c) for c in run)
    all_num = all(_digit(c) or c == 46 for c in run)
    all_hex = all(_hexc(c) or (c == 120 and i == 1 and run[0] == 48) for i, c in enumerate(run))
    if not has_digit:
        return K_HEX if all_hex and len(run) >= 8 else K_LITERAL
    if all_num:
        parts = run.split(b".")
        ip = len(parts) == 4 and all(1 <= len(p) <= 3 for p in parts)
        return K_IP if ip else K_NUMBER
    i = 0
    while i < len(run) and (_digit(run[i]) or run[i] == 46):
        i += 1
    unit = run[i:]
    if i > 0 and _digit(run[0]) and len(unit) <= 5 and unit.isalpha() and unit.isascii():
        code = 0
        for c in unit:
            code = code * 32 + ((c | 32) - 96)
        if code in _DUR_SET:
            return K_DURATION
        if code in _SIZE_SET:
            return K_SIZE
    return K_HEX if all_hex else K_ID


def _masks_whole_py(tok, flags, forced):
    if forced:
        return True
    if flags & F_DATETIME and (len(tok) == 3 or (len(tok) == 4 and tok[3] == 44)) and tok[:3] in _NAME_SET:
        return True
    return False


def _has_uuid_py(tok):
    for i in range(len(tok) - 35):
        if i > 0 and _alnum(tok[i - 1]):
            continue
        seg = tok[i:i + 36]
        if all((c == 45) if j in (8, 13, 18, 23) else _hexc(c) for j, c in enumerate(seg)):
            return True
    return False


def _is_path_py(tok):
    if len(tok) < 3:
        return False
    first = 0 if tok[0] == 47 else (1 if tok[1] == 47 and tok[0] in b"\"'(=[<" else -1)
    return first >= 0 and b"/" in tok[first + 1:]


def _wrapped_py(tok):
    """Twin of _write_wrapped."""
    a, b = 0, len(tok)
    while a < b - 1 and tok[a] in b"\"'(=[<{":
        a += 1
    while b > a + 1 and tok[b - 1] in b"\"')]>},;:.!?":
        b -= 1
    return tok[:a] + bytes([MARK]) + tok[b:]


def _is_url_at_py(tok, p):
    """Twin of _is_url_at, relative to the token."""
    if tok[p:p + 3] != b"://" or b"/" not in tok[p + 3:]:
        return False
    scheme = re.search(rb"[A-Za-z0-9+.\-]*\Z", tok[:p]).group()
    return bool(scheme) and scheme[:1].isalpha()


def _date_may_start_py(tok, i):
    return i == 0 or tok[i - 1] == 61 or (tok[i - 1] in _OPENERS and (i == 1 or tok[i - 2] == 61))


def mask_token_py(tok, flags, forced=False, after_value=False):
    """Twin of _mask_token for one token (bytes) -> masked bytes."""
    return _mask_token_py(tok, flags, forced, after_value, False)[0]


def _mask_token_py(tok, flags, forced, after_value, after_date):
    """Twin of _mask_token: (masked bytes, ends in a date/time)."""
    if _masks_whole_py(tok, flags, forced):
        return bytes([MARK]), False
    if (flags & F_UUID and len(tok) >= 36 and _has_uuid_py(tok)) or (flags & F_PATH and _is_path_py(tok)):
        return _wrapped_py(tok), False
    out = bytearray()
    i, e = 0, len(tok)
    dated = False
    zone = _ZONE_RE.match(tok) if after_date and flags & F_DATETIME else None
    if zone:
        out.append(MARK)
        i = zone.end()
    while i < e:
        c = tok[i]
        date = _DATETIME_RE.match(tok, i) if _digit(c) and flags & F_DATETIME and _date_may_start_py(tok, i) else None
        if date:
            out.append(MARK)
            i = date.end()
            dated = True
            continue
        instance = _INSTANCE_RE.match(tok, i) if flags & F_IDS else None
        if instance:
            dated = False
            out.append(MARK)
            i = instance.end()
            continue
        sign = c == 45 and i + 1 < e and _digit(tok[i + 1]) and (i == 0 or not _alnum(tok[i - 1]))
        if _alnum(c) or sign:
            dated = False
            a = i + 1 if sign else i
            b = a
            while b < e and (_alnum(tok[b]) or (tok[b] == 46 and b + 1 < e and _alnum(tok[b + 1]))):
                b += 1
            kind = _run_kind_py(tok[a:b])
            if kind in (K_ID, K_HEX) and _IDENTIFIER_WORD.fullmatch(tok[a:b + 2]):
                kind = K_LITERAL
            if i == 0 and after_value and flags & F_SIZE and tok[i:b] in _LONE_SIZE_WORDS:
                kind = K_SIZE

            if kind != K_LITERAL and flags & int(_KIND_FLAG[kind]):
                out.append(MARK)
            else:
                out += tok[i:b]
            i = b
        elif c == 58 and flags & F_PATH and _is_url_at_py(tok, i):
            out += b"://" + _wrapped_py(tok[i + 3:])
            dated = False
            break
        else:
            out.append(c)
            i += 1
    # values glued by "_" (with at most one letter between) are one compound id
    return _JOINED_VALUES.sub(bytes([MARK]), bytes(out)), dated


def tokens_py(line):
    """Whitespace tokens of a line (bytes) with their offsets: [(start, end), ...]."""
    spans, i, e = [], 0, len(line)
    while i < e:
        while i < e and _space(line[i]):
            i += 1
        if i >= e:
            break
        j = i
        while j < e and not _space(line[j]):
            j += 1
        spans.append((i, j))
        i = j
    return spans


def mask_line_py(line, flags, force=b""):
    """Twin of mask_line: masked bytes of one line (bytes); force holds one flag byte per line byte."""
    parts, dated = [], False
    for a, b in tokens_py(line):
        after = bool(parts) and parts[-1][-1:] == bytes([MARK])
        masked, dated = _mask_token_py(line[a:b], flags, bool(force) and any(force[a:b]), after, dated)
        parts.append(masked)
    return bytes([SEP]).join(parts)


def fnv_py(data):
    h = 14695981039346656037
    for c in data:
        h = ((h ^ c) * 1099511628211) & _MASK64
    return h


def hash_words_py(data):
    """Twin of _hash_words."""
    h = 14695981039346656037 ^ len(data)
    i = 0
    while i + 8 <= len(data):
        h = ((h ^ int.from_bytes(data[i:i + 8], "little")) * 1099511628211) & _MASK64
        h ^= h >> 29
        i += 8
    for c in data[i:]:
        h = ((h ^ c) * 1099511628211) & _MASK64
    return h


def shape_hashes_py(buf, starts, ends, flags, force):
    data = bytes(buf)
    fb = bytes(force) if len(force) else b""
    return np.array([hash_words_py(mask_line_py(data[s:e], flags, fb[s:e] if fb else b""))
                     for s, e in zip(starts, ends)], dtype=np.uint64)


def assign_slots_py(hashes, first, table, counts, last_seen, clock, out):
    """Twin of assign_slots over a dict {hash: slot}."""
    for k in range(first, len(hashes)):
        slot = table.get(int(hashes[k]), -1)
        if slot < 0:
            return k
        out[k] = slot
        counts[slot] += 1
        last_seen[slot] = clock + k
    return len(hashes)


def equal_tokens_py(tpl_hashes, line_hashes):
    return np.array([sum(int(a == b) for a, b in zip(row, line_hashes)) for row in tpl_hashes], dtype=np.int64)


def parse_number_py(data):
    """Twin of parse_number on bytes."""
    i, neg = 0, False
    if data[:1] in (b"-", b"+"):
        neg, i = data[:1] == b"-", 1
    whole, digits = 0.0, 0
    while i < len(data) and _digit(data[i]):
        whole = whole * 10.0 + (data[i] - 48)
        digits += 1
        i += 1
    if i < len(data) and data[i] == 46:
        i += 1
        scale = 0.1
        while i < len(data) and _digit(data[i]):
            whole += (data[i] - 48) * scale
            scale *= 0.1
            digits += 1
            i += 1
    if i + 1 < len(data) and data[i] == 32 and (65 <= data[i + 1] <= 90 or 97 <= data[i + 1] <= 122):
        i += 1
    rest = data[i:]
    if digits == 0 or len(rest) > 5 or not all(65 <= c <= 90 or 97 <= c <= 122 for c in rest):
        return math.nan
    return -whole if neg else whole


def _value_only_py(masked):
    return bytes([MARK]) in masked and not any(_alnum(c) for c in masked)


def span_tokens_py(line, spans, k, prev, flags, force=b""):
    """Twin of span_tokens over the token spans of line from index k, prev the (start, end) of the
    token before (None when none): (number of tokens, start, end)."""
    after_value = dated = False
    if prev is not None:
        a, b = prev
        masked, dated = _mask_token_py(line[a:b], flags, bool(force) and any(force[a:b]), False, False)
        after_value = masked[-1:] == bytes([MARK])
    n = 0
    while k + n < len(spans):
        a, b = spans[k + n]
        masked, d = _mask_token_py(line[a:b], flags, bool(force) and any(force[a:b]), after_value, dated)
        if _value_only_py(masked):
            after_value, dated = masked[-1:] == bytes([MARK]), d
        elif n and after_value and line[a:b] in _LONE_DURATION_WORDS:
            after_value = dated = False
        else:
            break
        n += 1
    if n == 0:
        return 0, None, None
    return n, spans[k][0], spans[k + n - 1][1]


def _walk_py(line, template_tokens, flags, force):
    """[(ordinal, start, end, key start, key end)] of line against template_tokens (extract_params' walk)."""
    out, ordinal = [], 0
    spans = tokens_py(line)
    nscan = max([k + 1 for k, t in enumerate(template_tokens) if pool_token(t)[1]] + [0])
    li, prev = 0, None
    for tmpl in template_tokens[:nscan]:
        body, nw = pool_token(tmpl)
        if nw < 0:
            n, a, b = span_tokens_py(line, spans, li, prev, flags, force)
            if n == 0:
                a = b = spans[li][0] if li < len(spans) else len(line)
            out.append((ordinal, a, b, a, b))
            ordinal += 1
            li += n
            prev = None
            continue
        a, b = spans[li] if li < len(spans) else (len(line), len(line))
        li += 1
        prev = (a, b)
        if nw == 0:
            continue
        caps = glob_capture_slow_path(line[a:b], body)
        if caps is None:
            caps = [(0, b - a)] + [(b - a, b - a)] * (nw - 1)
        for s, e in caps:
            key = (a, b) if nw == 1 else (a + s, a + e)
            out.append((ordinal, a + s, a + e) + key)
            ordinal += 1
    return out


def line_params_py(line, template_tokens, flags=(1 << 9) - 1, force=b""):
    """Twin of extract_params for one line (bytes) and its template tokens (list of bytes, SPAN for
    a span). Returns [(ordinal, start, end), ...] with offsets into
    line; param_key_spans_py gives the spans their hashes cover."""
    return [w[:3] for w in _walk_py(line, template_tokens, flags, force)]


def param_key_spans_py(line, template_tokens, flags=(1 << 9) - 1, force=b""):
    """Twin of extract_params' hashes: the span each parameter's hash covers (the whole line
    token for a template token with one wildcard, a span's value, else the value), in
    line_params_py's order."""
    return [w[3:] for w in _walk_py(line, template_tokens, flags, force)]
