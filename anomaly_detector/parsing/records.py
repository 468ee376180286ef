"""Turn raw lines into Records (time, source, level, content, fields) for plain, JSON, syslog or header input.

A JSON line's content is its message followed by ` key=value` for its numeric top-level fields (at
most json_numeric_fields, in key order), so the template miner makes each field a parameter.

Inputs hand framed lines to RecordParser (one line at a time); replay, parse and the workers hand
whole buffers to columns.parse_columns, which reads them with numba kernels into the same values
as parse_many and uses this module's parser for the lines the kernels leave.
"""
import math
import re
from decimal import Decimal

import numpy as np

from anomaly_detector.parsing.batch import (
    LEVEL_CRITICAL,
    LEVEL_DEBUG,
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_NOTICE,
    LEVEL_UNKNOWN,
    LEVEL_WARNING,
    level_code,
)
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES
from anomaly_detector.parsing.header_sniff import SNIFF_LINES_PER_BATCH, HeaderSniffer
from anomaly_detector.parsing.headers import HeaderFormat
from anomaly_detector.parsing.inline_levels import INLINE_LEVEL_MODES, level_of_text
from anomaly_detector.parsing.jsonl import parse_json_line_reason
from anomaly_detector.parsing.sanitize import clean_text
from anomaly_detector.parsing.sources import LineSources, SourceFieldsError, service_of, source_fields_problem
from anomaly_detector.parsing.syslog import parse_syslog
from anomaly_detector.parsing.timestamps import GARBAGE, STAMP_FIELDS, TimestampParser

FORMATS = ("auto", "plain", "jsonl", "syslog")
# no_timestamp: lines that took the previous line's time (or the arrival time); unparsed_timestamps:
# those of them whose stamp was there but read as no time (header stamp fields, a JSON or syslog
# time, a plain line starting with a known stamp shape with impossible values).
# inline_levels: lines whose level was read from their message's first words (inline_levels.py).
_STAT_KEYS = ("lines", "decode_errors", "malformed_json", "header_mismatch", "no_timestamp", "truncated",
              "not_syslog", "json_fields_over_cap", "unparsed_timestamps", "inline_levels")
MAX_JSON_NUMERIC_FIELDS = 64  # the spec's bound of json_numeric_fields
# Keys a numeric JSON field may have to be written as `key=value` into its line's text.
_FIELD_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
# Numeric levels of JSON loggers: pino/bunyan (10..60) and syslog severities (0..7).
_NUMERIC_LEVELS = {10: LEVEL_DEBUG, 20: LEVEL_DEBUG, 30: LEVEL_INFO, 40: LEVEL_WARNING, 50: LEVEL_ERROR,
                   60: LEVEL_CRITICAL}
_SYSLOG_SEVERITY = (LEVEL_CRITICAL, LEVEL_CRITICAL, LEVEL_CRITICAL, LEVEL_ERROR, LEVEL_WARNING, LEVEL_NOTICE, LEVEL_INFO,
                    LEVEL_DEBUG)


class Record:
    """One parsed line. ts is epoch seconds or None, level a LEVEL_* code."""

    __slots__ = ("ts", "source", "level", "content", "fields")

    def __init__(self, ts, source, level, content, fields):
        self.ts = ts
        self.source = source
        self.level = level
        self.content = content
        self.fields = fields

    def __eq__(self, other):
        if not isinstance(other, Record):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None

    def __repr__(self):
        return (f"Record(ts={self.ts!r}, source={self.source!r}, level={self.level!r}, "
                f"content={self.content!r}, fields={self.fields!r})")


def json_level(value):
    """A JSON level value: a word ('warn'), a pino/bunyan number (40) or a syslog severity (4)."""
    if isinstance(value, bool) or value is None:
        return LEVEL_UNKNOWN
    if isinstance(value, (int, float)):
        if value != value or math.isinf(value):
            return LEVEL_UNKNOWN
        number = int(value)
        if 0 <= number <= 7:
            return _SYSLOG_SEVERITY[number]
        return _NUMERIC_LEVELS.get(number, LEVEL_UNKNOWN)
    if isinstance(value, str):
        return level_code(value)
    return LEVEL_UNKNOWN


def _plain_level(word):
    """Level of a leading word of a plain line; single letters are too ambiguous ('I', 'A')."""
    word = word.strip("[]():|<>")
    if len(word) < 3:
        return LEVEL_UNKNOWN
    return level_code(word)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(text):
    """text with lone surrogates (a JSON escape like \\ud800 with no pair) as U+FFFD: what is kept
    and written on must be valid UTF-8."""
    return _LONE_SURROGATE.sub("\ufffd", text) if _LONE_SURROGATE.search(text) else text


def number_text(value):
    """A JSON number as written after its key: integers as their digits, other numbers rounded to 13
    significant digits (exact for what a person or most loggers write; json_kernels.SIGNIFICANT) and
    written without an exponent or trailing zeros (1.5e-05 -> 0.000015, 100.0 -> 100), so the
    miner's number masker takes the whole value as one parameter; -0.0 is 0."""
    if type(value) is int:
        return str(value)
    if value == 0:
        return "0"
    return format(Decimal("%.13g" % value), "f")


def numeric_fields_text(obj, skip, limit):
    """(` key=value` for the first `limit` numeric fields of obj in key order, how many more there were).

    Numeric: a top-level JSON int or finite float (not true/false, not a number in a string, not a
    nested object) under a key of letters, digits, `_`, `.` and `-` that is not in `skip`.
    """
    keys = sorted(k for k, v in obj.items()
                  if (type(v) is int or (type(v) is float and math.isfinite(v))) and k not in skip
                  and _FIELD_KEY.fullmatch(k))
    return "".join(f" {k}={number_text(obj[k])}" for k in keys[:limit]), max(0, len(keys) - limit)


def _as_bytes(raw):
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raw = (raw if isinstance(raw, str) else str(raw)).encode("utf-8", "surrogatepass")
    return bytes(raw)


class RecordParser:
    """Parse raw lines of one input into Records; counts what it could not parse in `.stats`.

    reference_time (epoch seconds, None: now) is when the input was written, for the year of
    year-less stamps (TimestampParser); replay passes the file's modification time.
    """

    def __init__(self, format="auto", log_format="", source="", message_key="message",
                 timestamp_key="timestamp", source_key="source", level_key="level", timestamp_format="",
                 timezone="UTC", max_line_bytes=DEFAULT_MAX_LINE_BYTES, default_year=None, source_fields=(),
                 source_prefix="off", max_sources=256, json_numeric_fields=8, reference_time=None,
                 detect_log_format=False, inline_levels="auto"):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        if inline_levels not in INLINE_LEVEL_MODES:
            raise ValueError(f"inline_levels must be one of {', '.join(INLINE_LEVEL_MODES)}, not {inline_levels!r}")
        self.inline_levels = inline_levels
        self.format = format
        self.header = HeaderFormat(log_format) if log_format else None
        self.header_has_stamp = self.header is not None and any(f in STAMP_FIELDS for f in self.header.fields)
        problem = source_fields_problem(list(source_fields), self.header.fields if self.header else (), log_format)
        if problem:
            raise SourceFieldsError("source_fields: " + problem)
        # parse_columns only: per-line parse() keeps no votes, so it never detects prefixes
        self.line_sources = LineSources(source_fields, source_prefix, max_sources, source)
        self.source = source
        self.message_key = message_key
        self.timestamp_key = timestamp_key
        self.source_key = source_key
        self.level_key = level_key
        self.json_numeric_fields = int(json_numeric_fields)
        if not 0 <= self.json_numeric_fields <= MAX_JSON_NUMERIC_FIELDS:
            raise ValueError(f"json_numeric_fields must be 0..{MAX_JSON_NUMERIC_FIELDS}, not {json_numeric_fields!r}")
        self.max_line_bytes = int(max_line_bytes)
        self.timestamps = TimestampParser(timestamp_format, timezone, default_year, reference_time)
        self.stats = dict.fromkeys(_STAT_KEYS, 0)
        self._last_ts = None
        self.detected_log_format = ""
        self._sniffer = None
        if detect_log_format and not log_format and format in ("auto", "plain"):
            scratch = RecordParser(format="plain", timezone=timezone, inline_levels="off")   # its stamp state is not ours
            self._sniffer = HeaderSniffer(source, lambda text: scratch._parse_plain(text).level != LEVEL_UNKNOWN)

    @property
    def wants_sniff(self):
        return self._sniffer is not None

    def sniff(self, texts):
        """Offer a batch's lines (decoded text) before parsing it: the first ones may name a header format."""
        if self._sniffer is None:
            return
        found = self._sniffer.offer(texts)
        if found is None:
            return
        self._sniffer = None
        if found:
            self.header = HeaderFormat(found)
            self.header_has_stamp = any(f in STAMP_FIELDS for f in self.header.fields)
            self.detected_log_format = found

    # ---- one line -----------------------------------------------------------------------------

    def parse(self, raw, arrival_ts=None) -> Record:
        """Parse one framed line (bytes). Never raises: the worst case is the cleaned line as content."""
        try:
            text = self._decode(raw)
            return self._finish(self._parse_text(text), arrival_ts)
        except Exception:  # noqa: BLE001 - one bad line must never stop an input; keep it as text
            return self._finish(Record(None, self.source, LEVEL_UNKNOWN, clean_text(raw), {}), arrival_ts)

    def parse_many(self, raws, arrival_ts=None):
        raws = list(raws)
        if self._sniffer is not None:
            self.sniff([clean_text(_as_bytes(raw).decode("utf-8", "replace")) for raw in raws[:SNIFF_LINES_PER_BATCH]])
        return [self.parse(raw, arrival_ts) for raw in raws]

    def _decode(self, raw):
        self.stats["lines"] += 1
        raw = _as_bytes(raw)
        if raw.endswith(b"\n"):
            raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
        if len(raw) > self.max_line_bytes:
            self.stats["truncated"] += 1
            raw = raw[:self.max_line_bytes]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.stats["decode_errors"] += 1
            text = raw.decode("utf-8", "replace")
        return clean_text(text)  # control characters

    def _kind(self, text):
        if self.format != "auto":
            return self.format
        head = text.lstrip()[:1]
        if head == "{":
            return "jsonl"
        if head == "<" and text.lstrip()[1:2].isdigit():
            return "syslog"
        return "header" if self.header is not None else "plain"

    def _parse_text(self, text):
        kind = self._kind(text)
        if kind == "plain" and self.header is not None:
            kind = "header"
        if kind == "jsonl":
            return self._parse_json(text)
        if kind == "syslog":
            return self._parse_syslog(text)
        if kind == "header":
            return self._parse_header(text)
        return self._parse_plain(text)

    def _parse_json(self, text):
        obj, _ = parse_json_line_reason(text, self.message_key, self.timestamp_key, self.source_key,
                                        self.level_key)
        if obj is None:
            self.stats["malformed_json"] += 1
            return Record(None, self.source, LEVEL_UNKNOWN, text, {})
        message = obj["message"]
        content = _valid_text(clean_text(message)) if message is not None else text
        if message is not None and self.json_numeric_fields:
            # numeric fields are parameters of the message's template: `order placed duration_ms=<*>`
            suffix, over = numeric_fields_text(obj["fields"], (self.message_key, self.timestamp_key,
                                                               self.source_key, self.level_key),
                                               self.json_numeric_fields)
            content += suffix
            self.stats["json_fields_over_cap"] += over
        stamp = obj["timestamp"]
        ts = self.timestamps.parse_value(stamp)
        if ts is None and isinstance(stamp, str) and stamp:
            self.stats["unparsed_timestamps"] += 1
        source = _valid_text(clean_text(obj["source"])) if obj["source"] else self.source
        return Record(ts, source, json_level(obj["level"]), content, obj["fields"])

    def _parse_syslog(self, text):
        msg = parse_syslog(text, self.timestamps)
        if msg is None:
            self.stats["not_syslog"] += 1
            return self._parse_plain(text)
        if msg["ts"] is None and msg["timestamp"]:
            self.stats["unparsed_timestamps"] += 1
        if self.line_sources.prefix == "auto" and msg["app"]:
            source = service_of(msg["app"])   # the app-name is the program, as a syslog-style prefix would say
        else:
            source = self.source or msg["host"] or ""
        return Record(msg["ts"], source, msg["level"], msg["message"], msg)

    def _parse_header(self, text):
        fields = self.header.match(text)
        if fields is None:
            self.stats["header_mismatch"] += 1
            return Record(None, self.source, LEVEL_UNKNOWN, text, {})
        ts = self.timestamps.from_fields(fields)
        if ts is None and self.header_has_stamp:
            self.stats["unparsed_timestamps"] += 1
        return Record(ts, self.source, level_code(fields.get("Level")), fields["Content"], fields)

    def _parse_plain(self, text):
        """`<stamp> <LEVEL> rest`, `[stamp] LEVEL: rest`, `LEVEL rest` or just text."""
        body = text.lstrip()
        ts = None
        if body.startswith("["):
            ts, end = self.timestamps.parse_prefix(body[1:])
            if ts is not None and body[1 + end:2 + end] == "]":
                body = body[2 + end:].lstrip()
            else:
                ts = None
        else:
            ts, end = self.timestamps.parse_prefix(body)
            if ts is not None:
                body = body[end:].lstrip()
        if end == GARBAGE:
            self.stats["unparsed_timestamps"] += 1
        level = LEVEL_UNKNOWN
        word, _, rest = body.partition(" ")
        if word:
            level = _plain_level(word)
            if level != LEVEL_UNKNOWN:
                body = rest.lstrip()
        return Record(ts, self.source, level, body, {})

    # ---- for columns.parse_columns ------------------------------------------------------------

    def parse_text(self, text):
        """parse() of a line already decoded and cleaned (lines no column kernel took)."""
        try:
            return self._finish(self._parse_text(text), None, False)
        except Exception:  # noqa: BLE001 - same guarantee as parse()
            return self._finish(Record(None, self.source, LEVEL_UNKNOWN, text, {}), None, False)

    def carry_one(self, ts):
        """The time a line with this stamp value (None: none) gets, as parse() gives it."""
        return self._carry_ts(ts, None)

    def carry_column(self, ts):
        """carry_one over an array (NaN: no time): lines without one take the previous line's."""
        none = np.isnan(ts)
        n_none = int(none.sum())
        if n_none:
            self.stats["no_timestamp"] += n_none
            idx = np.where(none, -1, np.arange(len(ts)))
            np.maximum.accumulate(idx, out=idx)
            before = np.nan if self._last_ts is None else self._last_ts
            ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], before)
        if n_none < len(ts):
            self._last_ts = float(ts[len(ts) - 1 - int(np.argmin(none[::-1]))])
        return ts

    def _finish(self, record, arrival_ts, inline=True):
        """inline: read a level from the message (parse_columns does it for its lines itself, after
        it cut the source prefixes)."""
        record.ts = self._carry_ts(record.ts, arrival_ts)
        if inline and record.level == LEVEL_UNKNOWN and self.inline_levels == "auto" and record.content:
            record.level = level_of_text(record.content)
            self.stats["inline_levels"] += record.level != LEVEL_UNKNOWN
        return record

    def _carry_ts(self, ts, arrival_ts):
        """Carry the previous line's time to lines without one (continuations, stack traces)."""
        if ts is None:
            self.stats["no_timestamp"] += 1
            return self._last_ts if self._last_ts is not None else arrival_ts
        self._last_ts = ts
        return ts


def __getattr__(name):
    """parse_columns and Columns live in columns.py; `from records import parse_columns` still works."""
    if name in ("parse_columns", "Columns"):
        from anomaly_detector.parsing import columns
        return getattr(columns, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
