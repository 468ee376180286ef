"""numba kernels that find a source prefix on each line of a batch: `host program[pid]: ` and `name-1  | `.

parsing/sources.py runs them over a parsed batch and decides (by share) whether to trust what they
found; tests/unit/test_source_prefixes.py compares them with plain-Python regex twins. They only
look at shapes: a syslog-style prefix is two tokens, the second shaped like a program name, then
`:` and a space; a docker compose prefix is one name token, spaces, `|` and a space. The service a
syslog tag names is the program before its first `/`: postfix logs as `postfix/smtpd`, `postfix/qmgr`,
`postfix/cleanup` (one mail passes through each), and an operator calls that one service, postfix.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

MAX_HOST_BYTES = 64       # host names longer than this are not host names but text
MAX_PROGRAM_BYTES = 48    # syslog tags are at most 32 characters (RFC 3164); systemd units run longer
MAX_PID_BYTES = 10        # a pid or a thread/instance id between brackets
MAX_SERVICE_BYTES = 64    # compose names: project, service and replica joined


@njit(cache=True, inline="always")
def _is_alnum(c):
    return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)


@njit(cache=True, inline="always")
def _is_letter(c):
    return (65 <= c <= 90) or (97 <= c <= 122)


@njit(cache=True, inline="always")
def _is_host_byte(c):
    return _is_alnum(c) or c == 46 or c == 45 or c == 95  # . - _


@njit(cache=True, inline="always")
def _is_program_byte(c):
    return _is_alnum(c) or c == 46 or c == 45 or c == 95 or c == 47 or c == 64  # . - _ / @


@njit(cache=True)
def _syslog_prefix(buf, s, e):
    """(program start, service end, body start) of `host program[pid]: body` at s, or (-1, -1, s); the
    service ends at the program's first `/` (`postfix/smtpd` is postfix) or with the program."""
    pos = s
    while pos < e and pos - s <= MAX_HOST_BYTES and _is_host_byte(buf[pos]):
        pos += 1
    if pos == s or pos - s > MAX_HOST_BYTES or pos >= e or buf[pos] != 32 or not _is_alnum(buf[s]):
        return -1, -1, s
    ps = pos + 1
    if ps >= e or not _is_letter(buf[ps]):
        return -1, -1, s
    pos = ps
    service_end = -1
    while pos < e and pos - ps <= MAX_PROGRAM_BYTES and _is_program_byte(buf[pos]):
        if buf[pos] == 47 and service_end < 0:
            service_end = pos
        pos += 1
    pe = pos
    if pe - ps > MAX_PROGRAM_BYTES or pos >= e:
        return -1, -1, s
    if service_end < 0:
        service_end = pe
    if buf[pos] == 91:  # [pid]
        k = pos + 1
        while k < e and k - pos - 1 <= MAX_PID_BYTES and _is_alnum(buf[k]):
            k += 1
        if k == pos + 1 or k - pos - 1 > MAX_PID_BYTES or k >= e or buf[k] != 93:
            return -1, -1, s
        pos = k + 1
    if pos >= e or buf[pos] != 58:  # ':'
        return -1, -1, s
    pos += 1
    if pos < e and buf[pos] != 32:
        return -1, -1, s  # `a b:c` is text (a time, a URL, key:value), not a tag
    while pos < e and buf[pos] == 32:
        pos += 1
    return ps, service_end, pos


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def syslog_prefixes(buf, starts, ends):
    """Per line: service span (-1 where there is no prefix) and where the text after the prefix starts."""
    n = starts.shape[0]
    ps = np.full(n, -1, np.int64)
    pe = np.full(n, -1, np.int64)
    body = starts.copy()
    for i in range(n):
        ps[i], pe[i], body[i] = _syslog_prefix(buf, starts[i], ends[i])
    return ps, pe, body


@njit(cache=True)
def _compose_prefix(buf, s, e):
    """(service start, service end, body start) of `name-1  | body` at s, or (-1, -1, s)."""
    pos = s
    if pos >= e or not _is_alnum(buf[pos]):
        return -1, -1, s
    while pos < e and pos - s <= MAX_SERVICE_BYTES and _is_host_byte(buf[pos]):
        pos += 1
    name_end = pos
    if name_end - s > MAX_SERVICE_BYTES or pos >= e or buf[pos] != 32:
        return -1, -1, s
    while pos < e and buf[pos] == 32:
        pos += 1
    if pos >= e or buf[pos] != 124:  # '|'
        return -1, -1, s
    pos += 1
    if pos < e:
        if buf[pos] != 32:
            return -1, -1, s
        pos += 1
    # the replica number (`web-1`, compose v1's `web_1`) names an instance, not the service
    k = name_end
    while k > s and 48 <= buf[k - 1] <= 57:
        k -= 1
    if k < name_end and k - 1 > s and (buf[k - 1] == 45 or buf[k - 1] == 95):
        name_end = k - 1
    return s, name_end, pos


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def compose_prefixes(buf, starts, ends):
    """Per line: compose service span (-1 where there is no prefix) and where the line after it starts."""
    n = starts.shape[0]
    ns = np.full(n, -1, np.int64)
    ne = np.full(n, -1, np.int64)
    body = starts.copy()
    for i in range(n):
        ns[i], ne[i], body[i] = _compose_prefix(buf, starts[i], ends[i])
    return ns, ne, body
