"""The level a line's message states in its first words, for lines whose header or format gave none.

Many programs write their level inside the message: postgres `[7-1] ERROR:  deadlock detected`,
nginx's error log `2026/03/05 00:00:02 [error] 12#0: ...`, logback `[main] WARN  c.e.Pool - ...`,
Python `ERROR:root:...`, Apache `[core:error]`, PHP `PHP Warning:`, OpenSSH and postfix `error:`
after their tag, logfmt `level=error`. columns.parse_columns (after a syslog or compose prefix is
cut) and records.RecordParser (one line) call line_levels/level_of_text on lines whose level is
still unknown; inline_levels_twins.py is the plain-Python reference the tests compare with.

What counts as a level word (among the first MAX_WORDS words, before MAX_SCAN_BYTES bytes):
- a LEVEL_NAMES name in capitals standing alone or followed by `:` (`ERROR`, `WARN:`, `ERROR:root:`);
  `LOG` (postgres's informational level) only with its `:`;
- any case between brackets, with an optional `module:` (`[error]`, `[Warning]`, `[proxy:warn]`), where
  syslog's `alert` and `emerg` count too (nginx, Apache);
- lower-case with `:` as the message's first word or right after a word ending in `:` (`sshd[7]: error:`);
- the value of a `level=`, `lvl=` or `severity=` key (quotes allowed), any case, `alert`/`emerg` too;
- the word after `PHP` (`PHP Warning:`, `PHP Fatal error:`, `PHP Parse error:`);
- Redis's one-character marker (`.` debug, `-` verbose, `*` notice, `#` warning) after its date, when
  the message starts as Redis's do (or goes on so after a `tag:`): `pid:role`
  (`1:M 06 Dec 2026 10:00:00.000 # ...`) or `[pid]`.
Prose is not read: the scan stops at an all-lower-case word without `:` (the first word may be a host
when a `program:` tag follows it); `connection error`, `0 errors` and `Error` in a sentence never
match (wrong case, no colon).
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.parsing.batch import (
    LEVEL_CRITICAL,
    LEVEL_DEBUG,
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_NOTICE,
    LEVEL_UNKNOWN,
    LEVEL_WARNING,
)
from anomaly_detector.parsing.header_kernels import lookup_level
from anomaly_detector.parsing.json_kernels import digits_end

INLINE_LEVEL_MODES = ("auto", "off")
MAX_WORDS = 6             # nginx and logback put the level after a date and a time (+ a thread)
MAX_SCAN_BYTES = 160      # a level further in is part of the text, not a header the program wrote
# The level names read in a message (upper case). LOG is postgres's informational level.
LEVEL_WORDS = {
    "TRACE": LEVEL_DEBUG, "DEBUG": LEVEL_DEBUG, "INFO": LEVEL_INFO, "LOG": LEVEL_INFO, "NOTICE": LEVEL_NOTICE,
    "WARN": LEVEL_WARNING, "WARNING": LEVEL_WARNING, "ERR": LEVEL_ERROR, "ERROR": LEVEL_ERROR,
    "SEVERE": LEVEL_ERROR, "CRIT": LEVEL_CRITICAL, "CRITICAL": LEVEL_CRITICAL, "FATAL": LEVEL_CRITICAL,
    "PANIC": LEVEL_CRITICAL,
}
# Syslog's two top severities as nginx and Apache write them (`[emerg]`, `[alert]`, `level=alert`).
# Not as a bare capital word: scripts shout `ALERT` in their text (Loghub Linux: logrotate's cron
# job logs `ALERT exited abnormally with [1]` every night), and programs leave these to syslog.
MARKED_WORDS = dict(LEVEL_WORDS, ALERT=LEVEL_CRITICAL, EMERG=LEVEL_CRITICAL)
# After `PHP` (its error log): `PHP Parse error:` stops the script like an error; deprecations are notices.
PHP_WORDS = dict(LEVEL_WORDS, PARSE=LEVEL_ERROR, DEPRECATED=LEVEL_NOTICE)
LEVEL_KEYS = ("level", "lvl", "severity")
# Redis marks its level with one character after the time; `#` (its highest, LL_WARNING) is also
# what it writes for failures ("Background saving error", "MISCONF"); `-` is its verbose level.
REDIS_MARKS = {".": LEVEL_DEBUG, "-": LEVEL_INFO, "*": LEVEL_NOTICE, "#": LEVEL_WARNING}
REDIS_ROLES = "MCSX"       # master, child (an RDB/AOF fork), replica, sentinel
REDIS_MARK_WORD = 5        # words from the head to the marker: `1:M 06 Dec 2026 10:00:00.000 #`


def _table(words):
    """(names uint8[k, width], lengths int64[k], codes int8[k]) for the kernels."""
    width = max(len(w) for w in words)
    names = np.zeros((len(words), width), np.uint8)
    for k, word in enumerate(words):
        names[k, :len(word)] = np.frombuffer(word.encode(), np.uint8)
    lengths = np.array([len(w) for w in words], np.int64)
    codes = np.array(list(words.values()), np.int8)
    return names, lengths, codes


_NAMES, _LENGTHS, _CODES = _table(LEVEL_WORDS)
_MARKED_NAMES, _MARKED_LENGTHS, _MARKED_CODES = _table(MARKED_WORDS)
_PHP_NAMES, _PHP_LENGTHS, _PHP_CODES = _table(PHP_WORDS)
_KEYS = np.zeros((len(LEVEL_KEYS), 9), np.uint8)
for _k, _key in enumerate(LEVEL_KEYS):
    _KEYS[_k, :len(_key) + 1] = np.frombuffer(_key.encode() + b"=", np.uint8)
_KEY_LENGTHS = np.array([len(k) + 1 for k in LEVEL_KEYS], np.int64)
_REDIS_LEVEL = np.zeros(256, np.int8)     # by byte: the level a Redis marker states, 0 for none
for _mark, _code in REDIS_MARKS.items():
    _REDIS_LEVEL[ord(_mark)] = _code
_REDIS_ROLE = np.zeros(256, np.uint8)
_REDIS_ROLE[np.frombuffer(REDIS_ROLES.encode(), np.uint8)] = 1


@njit(cache=True, inline="always")
def _upper(c):
    return c - 32 if 97 <= c <= 122 else c


@njit(cache=True, inline="always")
def _is_upper(c):
    return 65 <= c <= 90


@njit(cache=True, inline="always")
def _is_lower(c):
    return 97 <= c <= 122


@njit(cache=True)
def _is_log(buf, a, b):
    """buf[a:b] is LOG, postgres's informational level (any case): a level only with its colon."""
    return b - a == 3 and _upper(buf[a]) == 76 and _upper(buf[a + 1]) == 79 and _upper(buf[a + 2]) == 71


@njit(cache=True)
def _letters_end(buf, a, b):
    while a < b and (_is_upper(buf[a]) or _is_lower(buf[a])):
        a += 1
    return a


@njit(cache=True)
def _bracketed(buf, ws, we):
    """Level of `[name]`, `[module:name]` (optionally with a trailing `:`), any case; 0 if none."""
    end = we - 1 if buf[we - 1] == 58 else we
    if end - ws < 3 or buf[ws] != 91 or buf[end - 1] != 93:
        return 0
    for j in range(ws + 1, end - 1):
        if buf[j] == 91 or buf[j] == 93:
            return 0
    a = end - 1
    while a > ws + 1 and buf[a - 1] != 58:
        a -= 1
    if _letters_end(buf, a, end - 1) != end - 1:
        return 0
    return lookup_level(buf, a, end - 1, _MARKED_NAMES, _MARKED_LENGTHS, _MARKED_CODES)


@njit(cache=True)
def _key_value(buf, ws, we):
    """Level of `level=error`, `lvl="warn"`, `severity=ERROR`; 0 if none."""
    for k in range(_KEYS.shape[0]):
        n = _KEY_LENGTHS[k]
        if we - ws <= n:
            continue
        same = True
        for j in range(n):
            if buf[ws + j] != _KEYS[k, j]:
                same = False
                break
        if not same:
            continue
        a = ws + n
        b = we
        if buf[a] == 34 or buf[a] == 39:   # a quoted value
            a += 1
            if b > a and buf[b - 1] == buf[ws + n]:
                b -= 1
        if _letters_end(buf, a, b) != b:
            return 0
        return lookup_level(buf, a, b, _MARKED_NAMES, _MARKED_LENGTHS, _MARKED_CODES)
    return 0


@njit(cache=True)
def _word_level(buf, ws, we, after_tag, after_php):
    """Level a word states (> 0), 0 if it states none, -1 if it is prose and the scan stops."""
    c = buf[ws]
    if c == 91:
        return _bracketed(buf, ws, we)
    le = _letters_end(buf, ws, we)
    if after_php and le > ws and _is_upper(c):
        code = lookup_level(buf, ws, le, _PHP_NAMES, _PHP_LENGTHS, _PHP_CODES)
        if code > 0:
            return code
    if _is_upper(c):
        for j in range(ws, le):
            if not _is_upper(buf[j]):
                return 0
        if le < we and buf[le] != 58:      # ERRORS, ERROR_CODE, INFO-1: not a level word
            return 0
        if le == we and _is_log(buf, ws, le):
            return 0
        return lookup_level(buf, ws, le, _NAMES, _LENGTHS, _CODES)
    if _is_lower(c):
        if le < we and buf[le] == 61:      # key=value
            return _key_value(buf, ws, we)
        if le == we - 1 and buf[le] == 58:   # `error:`
            if not after_tag:
                return 0
            for j in range(ws, le):
                if not _is_lower(buf[j]):
                    return 0
            return 0 if _is_log(buf, ws, le) else lookup_level(buf, ws, le, _NAMES, _LENGTHS, _CODES)
        if le == we:
            return -1
    return 0


@njit(cache=True)
def _is_redis_head(buf, ws, we):
    """buf[ws:we] is how Redis starts a line: `1234:M` (pid:role, Redis 3+) or `[1234]` (older)."""
    if buf[ws] == 91:
        d = digits_end(buf, ws + 1, we)
        return d > ws + 1 and d == we - 1 and buf[d] == 93
    d = digits_end(buf, ws, we)
    if d == ws or d != we - 2 or buf[d] != 58:
        return False
    return _REDIS_ROLE[buf[d + 1]] == 1


@njit(cache=True)
def _line_level(buf, s, e):
    limit = min(e, s + MAX_SCAN_BYTES)
    pos = s
    after_tag = True
    after_php = False
    host_first = False
    redis = False
    words = MAX_WORDS
    word = -1
    while word < words - 1:
        word += 1
        while pos < limit and (buf[pos] == 32 or buf[pos] == 9):
            pos += 1
        if pos >= limit:
            return 0
        ws = pos
        while pos < limit and buf[pos] != 32 and buf[pos] != 9:
            pos += 1
        if host_first and buf[pos - 1] != 58:
            return 0
        if redis and pos - ws == 1:
            return _REDIS_LEVEL[buf[ws]]
        if after_tag and not redis and _is_redis_head(buf, ws, pos):   # first, or after `redis-server[812]:`
            redis = True
            words = max(words, word + REDIS_MARK_WORD + 1)
        lv = _word_level(buf, ws, pos, after_tag, after_php)
        if lv > 0:
            return lv
        if lv < 0 and word > 0:
            return 0
        host_first = lv < 0      # a first lower-case word is a host only when a `tag:` follows
        after_tag = buf[pos - 1] == 58
        after_php = pos - ws == 3 and buf[ws] == 80 and buf[ws + 1] == 72 and buf[ws + 2] == 80
    return 0


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D), cache=True)
def line_levels(buf, starts, ends):
    """Per line: the LEVEL_* its message's first words state (LEVEL_UNKNOWN: none), int8."""
    n = starts.shape[0]
    out = np.zeros(n, np.int8)
    for i in range(n):
        out[i] = _line_level(buf, starts[i], ends[i])
    return out


def level_of_text(text):
    """line_levels for one message (str): the per-line parser's way in."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), np.uint8)
    got = line_levels(data, np.zeros(1, np.int64), np.full(1, len(data), np.int64))
    return int(got[0]) if len(got) else LEVEL_UNKNOWN


def fill_unknown(level, buf, starts, ends):
    """Give lines whose level is LEVEL_UNKNOWN the one their message states (level is changed in place)."""
    unknown = np.flatnonzero(level == LEVEL_UNKNOWN)
    if len(unknown) == 0:
        return 0
    found = line_levels(buf, np.ascontiguousarray(starts[unknown]), np.ascontiguousarray(ends[unknown]))
    level[unknown] = found
    return int(np.count_nonzero(found))
