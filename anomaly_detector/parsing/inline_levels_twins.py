"""Test-only plain-Python twin of inline_levels.line_levels (tests compare the kernel with it).

Nothing in production imports this module. It reads the same rules with regular expressions.
"""
import re

import numpy as np

from anomaly_detector.parsing.inline_levels import (
    LEVEL_KEYS,
    LEVEL_WORDS,
    MARKED_WORDS,
    MAX_SCAN_BYTES,
    MAX_WORDS,
    PHP_WORDS,
    REDIS_MARK_WORD,
    REDIS_MARKS,
    REDIS_ROLES,
)

_BRACKETED = re.compile(rb"\[(?:[^\[\]]*:)?([A-Za-z]+)\]:?")
_UPPER = re.compile(rb"([A-Z]+)(:.*)?", re.S)
_KEY = re.compile(rb"(?:%s)=([\"']?)([A-Za-z]+)\1?" % b"|".join(k.encode() for k in LEVEL_KEYS))
_LOWER_COLON = re.compile(rb"([a-z]+):")
_PROSE = re.compile(rb"[a-z][A-Za-z]*")
_PHP_WORD = re.compile(rb"([A-Z][A-Za-z]*).*", re.S)
_REDIS_HEAD = re.compile(rb"[0-9]+:[%s]|\[[0-9]+\]" % REDIS_ROLES.encode())


def _word_level_py(word, after_tag, after_php):
    """Level (> 0), 0 for none, -1 for a prose word (see inline_levels._word_level)."""
    if word.startswith(b"["):
        m = _BRACKETED.fullmatch(word)
        return MARKED_WORDS.get(m.group(1).decode().upper(), 0) if m else 0
    if after_php:
        m = _PHP_WORD.fullmatch(word)
        if m and PHP_WORDS.get(m.group(1).decode().upper(), 0):
            return PHP_WORDS[m.group(1).decode().upper()]
    m = _UPPER.fullmatch(word)
    if m:
        name = m.group(1).decode()
        if name == "LOG" and m.group(2) is None:
            return 0
        return LEVEL_WORDS.get(name, 0)
    if word[:1].isupper():
        return 0
    m = re.fullmatch(rb"[a-z][A-Za-z]*=.*", word, re.S)
    if m:
        m = _KEY.fullmatch(word)
        if not m:
            return 0
        return MARKED_WORDS.get(m.group(2).decode().upper(), 0)
    m = _LOWER_COLON.fullmatch(word)
    if m:
        name = m.group(1).decode().upper()
        return LEVEL_WORDS.get(name, 0) if after_tag and name != "LOG" else 0
    if _PROSE.fullmatch(word):
        return -1
    return 0


def line_level_py(data):
    """The level one message (bytes) states, as line_levels reads it."""
    head = data[:MAX_SCAN_BYTES]
    after_tag, after_php, host_first, redis, words = True, False, False, False, MAX_WORDS
    for k, word in enumerate(re.findall(rb"[^ \t]+", head)):
        if k >= words:
            break
        if host_first and not word.endswith(b":"):
            return 0
        if redis and len(word) == 1:
            return REDIS_MARKS.get(word.decode("latin-1"), 0)
        if after_tag and not redis and _REDIS_HEAD.fullmatch(word):
            redis, words = True, max(words, k + REDIS_MARK_WORD + 1)
        lv = _word_level_py(word, after_tag, after_php)
        if lv > 0:
            return lv
        if lv < 0 and k > 0:
            return 0
        after_tag, after_php, host_first = word.endswith(b":"), word == b"PHP", lv < 0
    return 0


def line_levels_py(buf, starts, ends):
    """Plain-Python twin of line_levels."""
    data = bytes(buf)
    return np.array([line_level_py(data[s:e]) for s, e in zip(starts.tolist(), ends.tolist())], np.int8)
