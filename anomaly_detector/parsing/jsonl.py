"""Parse one JSON-lines record with hard bounds on size, nesting, numbers and keys.

records.RecordParser and the HTTP ingest call it; keys can be dotted paths (`log.msg`) into
nested objects. A rejected line gives None and a short reason for the counters.
"""
import json
import re

import numpy as np

MAX_LINE_CHARS = 1_048_576
MAX_DEPTH = 64
# A string runs to its closing quote or, unterminated, to the end of the line. Every match succeeds
# once started, so sub() scans each character once: linear. (The old pattern without the end-of-line
# alternative failed on an unterminated string and was retried from every later quote: quadratic, a
# 100 KB line of escaped quotes took 20 s and stalled a worker past its heartbeat.)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_DEPTH_STEP = np.zeros(256, np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


def _too_deep(line):
    """True when arrays/objects nest deeper than MAX_DEPTH (checked before json.loads recurses). O(n)."""
    if line.count("[") + line.count("{") <= MAX_DEPTH:
        return False
    outside = _STRINGS.sub("", line).encode("utf-8", "surrogatepass")
    steps = _DEPTH_STEP[np.frombuffer(outside, np.uint8)].astype(np.int32)
    return bool(steps.size) and int(np.cumsum(steps).max()) > MAX_DEPTH


def lookup(obj, key):
    """obj[key], or the dotted path key (`log.msg`) into nested objects; None when absent."""
    if not key:
        return None
    if key in obj:
        return obj[key]
    if "." not in key:
        return None
    value = obj
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _as_text(value):
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return str(value)


def parse_json_line_reason(line, message_key="message", timestamp_key="timestamp", source_key="source",
                           level_key="level", max_chars=MAX_LINE_CHARS):
    """(record, None) on success, (None, reason) when the line is rejected. Never raises.

    record = {"message": str|None, "timestamp": raw value, "source": str|None, "level": raw value,
    "fields": the whole object}. Reasons: too_long, too_deep, not_json, not_object.
    """
    if isinstance(line, (bytes, bytearray)):
        line = bytes(line).decode("utf-8", "replace")
    if not isinstance(line, str):
        return None, "not_json"
    if len(line) > max_chars:
        return None, "too_long"
    if _too_deep(line):
        return None, "too_deep"
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError, OverflowError, TypeError):
        # ValueError covers bad syntax and integers beyond Python's digit limit
        return None, "not_json"
    if not isinstance(obj, dict):
        return None, "not_object"
    source = lookup(obj, source_key)
    return {
        "message": _as_text(lookup(obj, message_key)),
        "timestamp": lookup(obj, timestamp_key),
        "source": _as_text(source) if source is not None else None,
        "level": lookup(obj, level_key),
        "fields": obj,
    }, None


def parse_json_line(line, message_key="message", timestamp_key="timestamp", source_key="source",
                    level_key="level"):
    """The record dict of parse_json_line_reason, or None when the line is rejected."""
    record, _ = parse_json_line_reason(line, message_key, timestamp_key, source_key, level_key)
    return record
