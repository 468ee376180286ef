"""Where a worker's verdicts go: the scored-lines audit file and the incidents file (JSON lines).

The worker writes these bytes through storage.appendfile.AppendFile, one write() per batch, so
several workers can share a file without interleaving inside a record. scored_lines() adds each
line's message and source to the replay records (pipeline.Pipeline.score_columns) in a numba
kernel, a batch at a time; with_message_and_source is its plain-Python twin (the tests' reference).
"""
import json

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

_MESSAGE_KEY = np.frombuffer(b',"message":"', np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def with_message_and_source(records, messages, sources):
    """Add "message" and "source" to each JSON record line (the scored_lines layout, docs/cli.md).

    records: bytes of n JSON lines ending in "}\\n"; messages: n str; sources: one name for all
    lines or n names. Per-line Python: the twin of scored_lines, which the worker uses.
    """
    if isinstance(sources, str):
        sources = [sources] * len(messages)
    tails = {name: ',"source":%s}\n' % json.dumps(name, ensure_ascii=False) for name in set(sources)}
    lines = records.split(b"\n")
    out = []
    for line, message, source in zip(lines, messages, sources):
        out.append(line[:-1].decode("utf-8"))
        out.append(',"message":')
        out.append(json.dumps(message, ensure_ascii=False))
        out.append(tails[source])
    return "".join(out).encode("utf-8")


def scored_lines(records, buf, starts, ends, source_names, source_ids):
    """The bytes with_message_and_source(records, [buf[s:e] decoded], names) gives, without a Python call per line.

    buf, starts, ends: the lines as spans (ring batch layout); source_names: the names, source_ids
    one index into them per line. A line that is not valid UTF-8 (rare) is decoded with
    replacement characters in Python, exactly as the twin does; every other line is escaped in the kernel.
    """
    n = len(starts)
    invalid = _invalid_utf8_lines(buf, starts, ends)
    fb_start = np.zeros(n, np.int64)
    fb_end = np.zeros(n, np.int64)
    parts, size = [], 0
    for i in invalid.tolist():
        text = json.dumps(bytes(buf[starts[i]:ends[i]]).decode("utf-8", "replace"), ensure_ascii=False)
        piece = text[1:-1].encode("utf-8")    # the kernel writes the quotes
        fb_start[i], fb_end[i] = size, size + len(piece)
        parts.append(piece)
        size += len(piece)
    tails = [(',"source":%s}\n' % json.dumps(name, ensure_ascii=False)).encode("utf-8") for name in source_names]
    tail_end = np.cumsum([len(t) for t in tails] or [0]).astype(np.int64)
    tail_start = tail_end - np.array([len(t) for t in tails] or [0], np.int64)
    record_bytes = np.frombuffer(records, np.uint8)
    newlines = np.flatnonzero(record_bytes == 10)     # one vector compare, not a byte loop in the kernel
    out = _render(record_bytes, newlines, buf, np.asarray(starts, np.int64), np.asarray(ends, np.int64),
                  np.frombuffer(b"".join(parts) or b" ", np.uint8), fb_start, fb_end,
                  np.frombuffer(b"".join(tails) or b" ", np.uint8), tail_start, tail_end,
                  np.asarray(source_ids, np.int64), _MESSAGE_KEY, _HEX)
    return out.tobytes()


@njit(cache=True)
def _utf8_ok(buf, s, e):
    """Whether buf[s:e] is UTF-8 as Python's strict decoder takes it (no overlongs, surrogates or > U+10FFFF)."""
    i = s
    while i < e:
        b = buf[i]
        if b < 0x80:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            need, lo, hi = 1, 0x80, 0xBF
        elif b == 0xE0:
            need, lo, hi = 2, 0xA0, 0xBF
        elif b == 0xED:
            need, lo, hi = 2, 0x80, 0x9F
        elif 0xE1 <= b <= 0xEF:
            need, lo, hi = 2, 0x80, 0xBF
        elif b == 0xF0:
            need, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= b <= 0xF3:
            need, lo, hi = 3, 0x80, 0xBF
        elif b == 0xF4:
            need, lo, hi = 3, 0x80, 0x8F
        else:
            return False
        if i + need >= e:
            return False                # cut short by the end of the line
        second = buf[i + 1]
        if second < lo or second > hi:
            return False
        for k in range(2, need + 1):
            c = buf[i + k]
            if c < 0x80 or c > 0xBF:
                return False
        i += need + 1
    return True


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def _invalid_utf8_lines(buf, starts, ends):
    """Indices of the lines that are not valid UTF-8."""
    bad = np.empty(starts.shape[0], np.int64)
    k = 0
    for i in range(starts.shape[0]):
        if not _utf8_ok(buf, starts[i], ends[i]):
            bad[k] = i
            k += 1
    return bad[:k]


@njit(cache=True)
def _put_escaped(out, pos, buf, s, e, hexdigits):
    """The JSON string body of valid UTF-8 bytes as json.dumps(ensure_ascii=False) writes it."""
    plain = True
    for j in range(s, e):
        c = buf[j]
        if c < 32 or c == 34 or c == 92:
            plain = False
            break
    if plain:                           # the common line: one copy
        out[pos:pos + e - s] = buf[s:e]
        return pos + e - s
    for j in range(s, e):
        c = buf[j]
        if c == 34 or c == 92:          # " and backslash
            out[pos] = 92
            out[pos + 1] = c
            pos += 2
        elif c >= 32:
            out[pos] = c
            pos += 1
        elif c == 10 or c == 13 or c == 9 or c == 8 or c == 12:
            out[pos] = 92
            out[pos + 1] = 110 if c == 10 else (114 if c == 13 else (116 if c == 9 else (98 if c == 8 else 102)))
            pos += 2
        else:                           # other control characters: \u00XX, lower-case hex
            out[pos] = 92
            out[pos + 1] = 117
            out[pos + 2] = 48
            out[pos + 3] = 48
            out[pos + 4] = hexdigits[c >> 4]
            out[pos + 5] = hexdigits[c & 15]
            pos += 6
    return pos


@kt.entry((kt.BYTES, kt.I64_1D, kt.U8_1D, kt.I64_1D, kt.I64_1D, kt.BYTES, kt.I64_1D, kt.I64_1D, kt.BYTES, kt.I64_1D,
           kt.I64_1D, kt.I64_1D, kt.BYTES, kt.BYTES), cache=True)
def _render(records, newlines, buf, starts, ends, fb_pool, fb_start, fb_end, tail_pool, tail_start, tail_end,
            source_ids, message_key, hexdigits):
    n = starts.shape[0]
    size = records.shape[0] + fb_pool.shape[0]
    for i in range(n):
        t = source_ids[i]
        size += message_key.shape[0] + 1 + 6 * (ends[i] - starts[i]) + tail_end[t] - tail_start[t]
    out = np.empty(size, np.uint8)
    pos = 0
    r = 0
    for i in range(n):
        nl = newlines[i]
        out[pos:pos + nl - 1 - r] = records[r:nl - 1]     # the record without its closing brace
        pos += nl - 1 - r
        r = nl + 1
        for j in range(message_key.shape[0]):
            out[pos + j] = message_key[j]
        pos += message_key.shape[0]
        if fb_end[i] > fb_start[i]:     # not UTF-8: decoded with replacements in Python
            for j in range(fb_start[i], fb_end[i]):
                out[pos] = fb_pool[j]
                pos += 1
        else:
            pos = _put_escaped(out, pos, buf, starts[i], ends[i], hexdigits)
        out[pos] = 34
        pos += 1
        t = source_ids[i]
        for j in range(tail_start[t], tail_end[t]):
            out[pos] = tail_pool[j]
            pos += 1
    return out[:pos]


def incident_lines(incidents):
    """JSON lines of incident records (dicts from the detection engine)."""
    return "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in incidents).encode("utf-8")
