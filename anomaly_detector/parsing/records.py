"""Turn raw lines into Records (time, source, level, content, fields) for plain, JSON, syslog or header input.

A JSON line's content is its message followed by ` key=value` for its numeric top-level fields (at
most json_numeric_fields, in key order), so the template miner makes each field a parameter.

Inputs hand framed lines to RecordParser; replay hands whole files to parse_columns, which uses the
numba kernels (clean_buffer, split_lines, header split, plain and JSON-lines fast paths) and yields
the same values as parse_many.
"""
import math
import re
from decimal import Decimal

import numpy as np

from anomaly_detector.parsing import header_kernels as hk
from anomaly_detector.parsing import json_kernels as jk
from anomaly_detector.parsing import plain_kernels as pk
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
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES, split_lines
from anomaly_detector.parsing.headers import HeaderFormat
from anomaly_detector.parsing.jsonl import parse_json_line_reason
from anomaly_detector.parsing.sanitize import clean_buffer, clean_text
from anomaly_detector.parsing.sources import LineSources, SourceFieldsError, source_fields_problem
from anomaly_detector.parsing.syslog import parse_syslog
from anomaly_detector.parsing.timestamps import (
    EPOCH_LAYOUT,
    TimestampParser,
    infer_years,
    layout_arrays,
    layout_has_year,
    layout_of,
    parse_stamps,
)

FORMATS = ("auto", "plain", "jsonl", "syslog")
_STAT_KEYS = ("lines", "decode_errors", "malformed_json", "header_mismatch", "no_timestamp", "truncated",
              "not_syslog", "json_fields_over_cap")
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


class RecordParser:
    """Parse raw lines of one input into Records; counts what it could not parse in `.stats`."""

    def __init__(self, format="auto", log_format="", source="", message_key="message",
                 timestamp_key="timestamp", source_key="source", level_key="level", timestamp_format="",
                 timezone="UTC", max_line_bytes=DEFAULT_MAX_LINE_BYTES, default_year=None, source_fields=(),
                 source_prefix="off", max_sources=256, json_numeric_fields=8):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        self.format = format
        self.header = HeaderFormat(log_format) if log_format else None
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
        self.timestamps = TimestampParser(timestamp_format, timezone, default_year)
        self.stats = dict.fromkeys(_STAT_KEYS, 0)
        self._last_ts = None

    # ---- one line -----------------------------------------------------------------------------

    def parse(self, raw, arrival_ts=None) -> Record:
        """Parse one framed line (bytes). Never raises: the worst case is the cleaned line as content."""
        try:
            text = self._decode(raw)
            return self._finish(self._parse_text(text), arrival_ts)
        except Exception:  # noqa: BLE001 - one bad line must never stop an input; keep it as text
            return self._finish(Record(None, self.source, LEVEL_UNKNOWN, clean_text(raw), {}), arrival_ts)

    def parse_many(self, raws, arrival_ts=None):
        return [self.parse(raw, arrival_ts) for raw in raws]

    def _decode(self, raw):
        self.stats["lines"] += 1
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = (raw if isinstance(raw, str) else str(raw)).encode("utf-8", "surrogatepass")
        raw = bytes(raw)
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
        ts = self.timestamps.parse_value(obj["timestamp"])
        source = _valid_text(clean_text(obj["source"])) if obj["source"] else self.source
        return Record(ts, source, json_level(obj["level"]), content, obj["fields"])

    def _parse_syslog(self, text):
        msg = parse_syslog(text, self.timestamps)
        if msg is None:
            self.stats["not_syslog"] += 1
            return self._parse_plain(text)
        if self.line_sources.prefix == "auto" and msg["app"]:
            source = msg["app"]   # the app-name is the program, as a syslog-style prefix would say
        else:
            source = self.source or msg["host"] or ""
        return Record(msg["ts"], source, msg["level"], msg["message"], msg)

    def _parse_header(self, text):
        fields = self.header.match(text)
        if fields is None:
            self.stats["header_mismatch"] += 1
            return Record(None, self.source, LEVEL_UNKNOWN, text, {})
        ts = self.timestamps.from_fields(fields)
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
        level = LEVEL_UNKNOWN
        word, _, rest = body.partition(" ")
        if word:
            level = _plain_level(word)
            if level != LEVEL_UNKNOWN:
                body = rest.lstrip()
        return Record(ts, self.source, level, body, {})

    def _finish(self, record, arrival_ts):
        record.ts = self._carry_ts(record.ts, arrival_ts)
        return record

    def _carry_ts(self, ts, arrival_ts):
        """Carry the previous line's time to lines without one (continuations, stack traces)."""
        if ts is None:
            self.stats["no_timestamp"] += 1
            return self._last_ts if self._last_ts is not None else arrival_ts
        self._last_ts = ts
        return ts


class Columns:
    """A whole file parsed into arrays: ts float64 (NaN: none), level int8, contents in one buffer.

    content_buf holds sanitised UTF-8 (lone surrogates from JSON escapes are U+FFFD by then; the
    surrogatepass codecs below are a second guard); line i's content is content_buf[content_start[i]:content_end[i]].
    source_id indexes `sources`. fields(i) builds the header/JSON/syslog fields of line i on demand.
    """

    def __init__(self, ts, level, content_buf, content_start, content_end, source_id, sources, field_getter):
        self.ts = ts
        self.level = level
        self.content_buf = content_buf
        self.content_start = content_start
        self.content_end = content_end
        self.source_id = source_id
        self.sources = sources
        self._field_getter = field_getter

    @property
    def n(self):
        return len(self.ts)

    def __len__(self):
        return self.n

    def content(self, i):
        return bytes(self.content_buf[self.content_start[i]:self.content_end[i]]).decode("utf-8", "surrogatepass")

    def fields(self, i):
        return self._field_getter(i)


class _ColumnBuilder:
    """Collects per-line results; contents that are not a span of the cleaned buffer go to an extra area."""

    def __init__(self, n, base_len):
        self.start = np.zeros(n, dtype=np.int64)
        self.end = np.zeros(n, dtype=np.int64)
        self.source_id = np.zeros(n, dtype=np.int32)
        self.sources = []
        self._source_index = {}
        self.extra = []
        self.extra_len = base_len

    def source(self, i, name):
        self.source_id[i] = self.source_index(name)

    def source_index(self, name):
        sid = self._source_index.get(name)
        if sid is None:
            sid = self._source_index[name] = len(self.sources)
            self.sources.append(name)
        return sid

    def add_extra(self, data):
        """Append bytes to the extra area; returns their offset in the final content buffer."""
        offset = self.extra_len
        if len(data):
            self.extra.append(data)
            self.extra_len += len(data)
        return offset

    def content(self, i, content, line_text, line_start, line_end):
        if line_text.endswith(content):
            nbytes = len(content.encode("utf-8"))
            self.start[i], self.end[i] = line_end - nbytes, line_end
            return
        data = content.encode("utf-8", "surrogatepass")  # see Columns.content
        self.start[i] = self.add_extra(data)
        self.end[i] = self.extra_len


def _frame_buffer(data, max_line_bytes):
    """Raw line spans like LineFramer gives; truncation is applied by rebuilding the buffer."""
    raw = np.frombuffer(data, dtype=np.uint8)
    starts, ends = split_lines(raw)
    too_long = (ends - starts) > max_line_bytes
    if not too_long.any():
        return raw, starts, ends, 0
    pieces = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        piece = data[s:min(e, s + max_line_bytes)]
        if piece.endswith(b"\r"):  # a cut that ends in CR must not become a CRLF; both clean to U+FFFD
            piece = piece[:-1] + b"\x00"
        pieces.append(piece)
    joined = b"\n".join(pieces) + b"\n"
    raw = np.frombuffer(joined, dtype=np.uint8)
    starts, ends = split_lines(raw)
    return raw, starts, ends, int(too_long.sum())


def _has_invalid_utf8(data, starts, ends):
    """Per line: whether the raw bytes were not valid UTF-8 (for the decode_errors counter)."""
    out = np.zeros(len(starts), dtype=np.bool_)
    if data.isascii():
        return out
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        try:
            data[s:e].decode("utf-8")
        except UnicodeDecodeError:
            out[i] = True
    return out


def _clean_and_split(parser, data):
    """Frame, count and sanitise a buffer: (clean uint8, clean bytes, starts, ends)."""
    raw, raw_starts, raw_ends, n_truncated = _frame_buffer(data, parser.max_line_bytes)
    raw_bytes = data if n_truncated == 0 else raw.tobytes()
    invalid = _has_invalid_utf8(raw_bytes, raw_starts, raw_ends)
    clean = clean_buffer(raw)
    if np.shares_memory(clean, raw):  # nothing was replaced: same bytes, same lines
        clean_bytes, starts, ends = raw_bytes, raw_starts, raw_ends
    else:
        clean_bytes = clean.tobytes()
        starts, ends = split_lines(clean)  # cleaning keeps every LF, so the lines correspond one to one
    parser.stats["lines"] += len(starts)
    parser.stats["truncated"] += n_truncated
    parser.stats["decode_errors"] += int(invalid.sum())
    return clean, clean_bytes, starts, ends


def parse_columns(parser: RecordParser, buf: bytes) -> Columns:
    """Parse a whole buffer of lines into Columns, equal to parser.parse_many(lines) field by field.

    The bytes are cleaned and split by numba kernels; with a header format the numba split gives
    each line's fields and content span, and stamps come from the numba stamp kernels wherever they
    provably equal TimestampParser. Without one, plain `<ISO stamp> <LEVEL> text` lines and flat
    JSON objects have kernels of their own. Other lines go through the per-line path, in input
    order, because carried times and year inference depend on the order.
    """
    clean, clean_bytes, starts, ends = _clean_and_split(parser, bytes(buf))
    starts, compose = parser.line_sources.strip_compose(clean, starts, ends)
    n = len(starts)
    hdr = parser.header
    if hdr is not None and parser.format in ("auto", "plain") and hdr.has_kernel:
        ok, fs, fe = hdr.split_batch(clean, starts, ends)
        ok &= _kernel_applies(parser, clean, starts, ends)
    else:
        ok = np.zeros(n, dtype=np.bool_)
        fs = fe = np.zeros((n, 1), dtype=np.int64)
    out = _ColumnBuilder(n, len(clean_bytes))
    plain = _PlainLines.for_buffer(parser, clean, starts, ends) if hdr is None else None
    jsonl = _JsonLines.for_buffer(parser, clean, clean_bytes, starts, ends, out)
    fast = None
    if ok.any():
        out.start[ok] = fs[ok, hdr.content_index]
        out.end[ok] = fe[ok, hdr.content_index]
        out.source(int(np.argmax(ok)), parser.source)
        fast = _KernelLines(parser, hdr, clean, clean_bytes, fs, fe, ok)
    slow = {}
    ts_arr = np.full(n, np.nan)
    level_arr = np.zeros(n, dtype=np.int8)
    ok_list = ok.tolist()
    i = 0
    while i < n:
        if plain is not None and plain.ok[i] and plain.usable():
            i = plain.take_run(i, out, ts_arr, level_arr, ends)
            continue
        if jsonl is not None and jsonl.ok[i]:
            run_end = jsonl.take_run(i, out, ts_arr, level_arr)
            if run_end > i:
                i = run_end
                continue
        if ok_list[i]:
            run_end = fast.kernel_run(i, ts_arr, level_arr)
            if run_end > i:  # a stretch of lines whose stamps the kernel gave, taken in one go
                i = run_end
                continue
            ts, level_arr[i] = fast.line(i)
            ts_arr[i] = np.nan if ts is None else ts
            i += 1
            continue
        if fast is not None:
            fast.sync_state()
        s, e = int(starts[i]), int(ends[i])
        text = clean_bytes[s:e].decode("utf-8")
        try:
            record = parser._finish(parser._parse_text(text), None)
        except Exception:  # noqa: BLE001 - same guarantee as RecordParser.parse
            record = parser._finish(Record(None, parser.source, LEVEL_UNKNOWN, text, {}), None)
        out.content(i, record.content, text, s, e)
        ts_arr[i] = np.nan if record.ts is None else record.ts
        level_arr[i] = record.level
        out.source(i, record.source)
        slow[i] = record.fields
        i += 1
    if fast is not None:
        fast.sync_state()
    content_buf = clean if not out.extra else np.frombuffer(clean_bytes + b"".join(out.extra), dtype=np.uint8)
    if parser.line_sources.active and n:
        own = out.source_id == out._source_index.get(parser.source, -1)
        header = (clean, ok, fs, fe, hdr.fields, slow) if hdr is not None else None
        parser.line_sources.assign(out, own, content_buf, header, compose)

    def field_getter(i):
        if i in slow:
            return slow[i]
        if jsonl is not None and jsonl.ok[i]:
            return jsonl.fields(i)
        if hdr is None:
            return {}
        return {name: clean_bytes[fs[i, j]:fe[i, j]].decode("utf-8") for j, name in enumerate(hdr.fields)}

    return Columns(ts_arr, level_arr, content_buf, out.start, out.end, out.source_id, out.sources, field_getter)


_ISO = 0  # index of the "iso" layout in timestamps._COMPILED


class _PlainLines:
    """Lines that plain_kernels.plain_lines parsed (`<ISO stamp> <LEVEL> message`), taken in runs.

    Used only while the parser's cached stamp format is ISO (or none yet) and no strptime override
    is set, so that the kernel's reading is the one _parse_plain would make; after each run the
    parser's state (cached format, year, month, last time) is what it would be after those lines.
    """

    _TABLES = None

    @classmethod
    def for_buffer(cls, parser, clean, starts, ends):
        stamps = parser.timestamps
        if parser.format not in ("plain", "auto") or stamps.strptime or stamps._cached not in (None, _ISO):
            return None
        if cls._TABLES is None:
            cls._TABLES = pk.kernel_args()
        got = pk.plain_lines(clean, starts, ends, stamps._zone is None, *cls._TABLES)
        return cls(parser, *got) if got[0].any() else None

    def __init__(self, parser, ok, ts, level, cstart, year, month):
        self.parser, self.ok, self.ts, self.level, self.cstart = parser, ok, ts, level, cstart
        self.year, self.month = year, month
        bad = np.flatnonzero(~ok)
        self._bad = np.append(bad, len(ok))

    def usable(self):
        """Whether the parser would still read these stamps as ISO; a line read since may have cached
        another format (iso_date, say, which wins over ISO for `2026-03-02T...`)."""
        return self.parser.timestamps._cached in (None, _ISO)

    def take_run(self, i, out, ts_arr, level_arr, ends):
        """Fill lines i.. up to the next line the kernel did not take; returns that index."""
        j = int(self._bad[np.searchsorted(self._bad, i)])
        ts_arr[i:j] = self.ts[i:j]
        level_arr[i:j] = self.level[i:j]
        out.start[i:j] = self.cstart[i:j]
        out.end[i:j] = ends[i:j]
        out.source(i, self.parser.source)
        out.source_id[i:j] = out.source_id[i]
        stamps = self.parser.timestamps
        stamps._cached, stamps._year, stamps._last_month = _ISO, int(self.year[j - 1]), int(self.month[j - 1])
        self.parser._last_ts = float(self.ts[j - 1])
        return j


class _JsonLines:
    """Lines that json_kernels.json_lines read (flat JSON objects), taken in runs.

    Number stamps do not depend on the parser's state; ISO text stamps are the kernel's while the
    cached stamp format is ISO or none, as for _PlainLines. TimestampParser.parse returns its last
    value without side effects when a text equals the previous one, which take_run reproduces.
    After each run the parser's state (cached format, year, month, last text, last times) and its
    counters are what parse() leaves after those lines.
    """

    _TABLES = None

    @classmethod
    def for_buffer(cls, parser, clean, clean_bytes, starts, ends, out):
        stamps = parser.timestamps
        if stamps.strptime or not (parser.format == "jsonl" or (parser.format == "auto" and parser.header is None)):
            return None
        keys = jk.key_table(parser)
        if keys is None or len(starts) == 0:
            return None
        if cls._TABLES is None:
            cls._TABLES = jk.kernel_args(_NUMERIC_LEVELS, _SYSLOG_SEVERITY)
        got = jk.json_lines(clean, starts, ends, *keys, stamps._zone is None, *cls._TABLES, parser.json_numeric_fields)
        return cls(parser, clean, clean_bytes, starts, ends, got, out) if got[0].any() else None

    def __init__(self, parser, clean, clean_bytes, starts, ends, got, out):
        (self.ok, self.ts, self.stamp, self.stamp_start, self.stamp_end, self.year, self.month, self.repeat,
         self.level, self.cstart, self.cend, in_decoded, src_start, src_end, decoded, self.over_cap) = got
        self.parser, self.clean_bytes, self.line_start, self.line_end = parser, clean_bytes, starts, ends
        offset = out.add_extra(decoded.tobytes())  # decoded messages live after the cleaned buffer
        self.cstart[in_decoded] += offset
        self.cend[in_decoded] += offset
        self._bad = np.append(np.flatnonzero(~self.ok), len(self.ok))
        self._texts = np.flatnonzero(self.stamp == jk.STAMP_TEXT)
        self.src_id, first = jk.span_ids(clean, src_start, src_end)
        self._src_span = (src_start[first], src_end[first])
        self.src_id[self.src_id < 0] = len(first)  # the parser's own source
        self._sid = np.full(len(first) + 1, -1, dtype=np.int64)

    def take_run(self, i, out, ts_arr, level_arr):
        """Fill lines i.. up to the next line the kernel did not take; returns that index.

        A run stops before the first text stamp when the parser has cached another format since;
        i is returned when line i itself must take the per-line path.
        """
        j = int(self._bad[np.searchsorted(self._bad, i)])
        texts = self._texts[np.searchsorted(self._texts, i):np.searchsorted(self._texts, j)]
        if len(texts) and self.parser.timestamps._cached not in (None, _ISO):
            j, texts = int(texts[0]), texts[:0]
            if j == i:
                return i
        ts = self.ts[i:j].copy()
        if len(texts):
            self._text_stamps(texts, ts, i)
        ts_arr[i:j] = self._carry(ts, self.stamp[i:j] == jk.STAMP_NONE)
        level_arr[i:j] = self.level[i:j]
        out.start[i:j] = self.cstart[i:j]
        out.end[i:j] = self.cend[i:j]
        out.source_id[i:j] = self._source_ids(i, j, out)
        self.parser.stats["json_fields_over_cap"] += int(self.over_cap[i:j].sum())
        return j

    def _text(self, k):
        return self.clean_bytes[self.stamp_start[k]:self.stamp_end[k]].decode("utf-8")

    def _text_stamps(self, texts, ts, i):
        """Side effects of TimestampParser.parse for the text stamps of a run, and its cache hits."""
        stamps = self.parser.timestamps
        hits = 0
        if stamps._last_text is not None and self._text(texts[0]) == stamps._last_text:
            # parse() gives its last value again, without side effects, while the text repeats
            fresh = np.flatnonzero(~self.repeat[texts[1:]])
            hits = 1 + int(fresh[0]) if len(fresh) else len(texts)
            ts[texts[:hits] - i] = stamps._last_ts
        if hits == len(texts):
            return
        last = int(texts[-1])
        stamps._cached, stamps._year, stamps._last_month = _ISO, int(self.year[last]), int(self.month[last])
        stamps._last_text, stamps._last_ts = self._text(last), float(self.ts[last])

    def _carry(self, ts, none):
        """RecordParser._carry_ts over a run: lines without a time take the previous line's."""
        parser = self.parser
        n_none = int(none.sum())
        if n_none:
            parser.stats["no_timestamp"] += n_none
            idx = np.where(none, -1, np.arange(len(ts)))
            np.maximum.accumulate(idx, out=idx)
            before = np.nan if parser._last_ts is None else parser._last_ts
            ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], before)
        if n_none < len(ts):
            parser._last_ts = float(ts[len(ts) - 1 - int(np.argmin(none[::-1]))])
        return ts

    def _source_ids(self, i, j, out):
        """Builder source ids of lines i..j; each distinct source span is decoded once per buffer."""
        ids = self.src_id[i:j]
        sid = self._sid
        missing = sid[ids] < 0
        if missing.any():
            for k in np.unique(ids[missing]).tolist():
                sid[k] = out.source_index(self._source_name(k))
        return sid[ids]

    def _source_name(self, k):
        starts, ends = self._src_span
        if k == len(starts):
            return self.parser.source
        return clean_text(self.clean_bytes[starts[k]:ends[k]])

    def fields(self, i):
        """The JSON object of line i, as _parse_json gives it (built on demand, for the few who ask)."""
        text = self.clean_bytes[self.line_start[i]:self.line_end[i]].decode("utf-8")
        obj, _ = parse_json_line_reason(text, self.parser.message_key, self.parser.timestamp_key,
                                        self.parser.source_key, self.parser.level_key)
        return obj["fields"]


def _kernel_applies(parser, clean, starts, ends):
    """In auto mode JSON and syslog lines are routed away from the header format, as parse() does.

    Lines starting with '{', '<' or (possibly Unicode) whitespace take the per-line path, which
    decides exactly.
    """
    n = len(starts)
    if parser.format != "auto" or n == 0 or len(clean) == 0:
        return np.ones(n, dtype=np.bool_)
    first = clean[np.minimum(starts, len(clean) - 1)]
    first = np.where(ends > starts, first, 0)
    special = np.array([123, 60, 9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0xC2, 0xE1, 0xE2, 0xE3], dtype=np.uint8)
    return ~np.isin(first, special)


class _KernelLines:
    """Time and level of lines the kernel split.

    Time stamps come from the numba stamp kernel wherever the parser would use the same header
    fields and the same cached format (so the value is provably what parse() computes); other
    lines go through TimestampParser.from_fields. sync_state() brings the parser's year state up
    to date before it parses anything itself, as if it had seen every kernel-parsed stamp.
    """

    _MAX_KERNEL_RUNS = 4  # a file that keeps switching stamp shapes is left to the Python path

    def __init__(self, parser, hdr, clean, data, fs, fe, header_ok):
        self.parser, self.hdr, self.clean, self.data, self.fs, self.fe = parser, hdr, clean, data, fs, fe
        self.header_ok = header_ok
        self.index = {name: j for j, name in enumerate(hdr.fields)}
        self.levels = {}
        self.recipe = None
        self.recipe_cols = ()
        self.kernel_key = None
        self.kernel_key_check = None
        self.kernel_runs = 0
        self.yearless = False
        self.k_ok = self.k_ts = self.k_year = self.k_month = None
        self.pending = -1  # last row whose stamp the kernel gave but the parser has not seen
        li = hdr.level_index
        self.level_cols = self._column(li) if li >= 0 else None
        if li >= 0:
            names, lengths, codes = hk.level_table()
            self.level_arr = hk.level_codes(clean, np.ascontiguousarray(fs[:, li]), np.ascontiguousarray(fe[:, li]),
                                            names, lengths, codes)
        else:
            self.level_arr = np.zeros(len(fs), dtype=np.int64)
        self.run_ends = None

    def _column(self, j):
        return self.fs[:, j], self.fe[:, j]

    def line(self, i):
        ts = self._kernel_stamp(i)
        if ts is None:
            self.sync_state()
            ts = self._python_stamp(i)
        return self.parser._carry_ts(ts, None), self._level(i)

    def kernel_run(self, i, ts_arr, level_arr):
        """Fill the run of kernel-stamped lines starting at i; return its end (i when there is none)."""
        if not self._ready(i):
            return i
        if self.yearless:
            j = self._yearless_run(i, ts_arr)
            if j == i:
                return i
        else:
            j = int(self.run_ends[i])
            ts_arr[i:j] = self.k_ts[i:j]
            if self.kernel_key[0] != EPOCH_LAYOUT:
                self.pending = j - 1
        self.parser._last_ts = float(ts_arr[j - 1])
        levels = self.level_arr[i:j]
        level_arr[i:j] = levels
        for k in np.flatnonzero(levels < 0).tolist():  # non-ASCII level words: Python decides
            level_arr[i + k] = self._level(i + k)
        return j

    def _yearless_run(self, i, ts_arr):
        """Stamps without a year: the kernel infers years in order from the parser's state."""
        stamps = self.parser.timestamps
        self.sync_state()
        year0 = stamps._year if stamps._year is not None else (stamps._default_year or stamps._now_year())
        last0 = stamps._last_month if stamps._last_month is not None else -1
        j, year_after, last_after = infer_years(self.good, self.k_month, self.k_day, self.k_sod, self.k_fnum,
                                                self.k_fdig, i, year0, last0, self.y_ts, self.y_years)
        if j == i:
            return i
        ts = self.y_ts[i:j]
        if stamps._zone is not None:
            ts = ts - self._offsets(self.y_years[i:j], self.k_month[i:j], self.k_day[i:j], self.k_hour[i:j])
        ts_arr[i:j] = ts
        stamps._year, stamps._last_month, stamps._last_text = int(year_after), int(last_after), None
        return j

    def _level(self, i):
        lv = int(self.level_arr[i])
        if lv >= 0:
            return lv
        lstart, lend = self.level_cols
        word = self.data[lstart[i]:lend[i]]
        level = self.levels.get(word)
        if level is None:
            level = self.levels[word] = level_code(word.decode("utf-8"))
        return level

    def _python_stamp(self, i):
        stamps = self.parser.timestamps
        ts = None
        if self.recipe is not None and stamps._field_recipe is self.recipe:
            # what from_fields does first: the recipe that worked last time
            parts = [self.data[fs[i]:fe[i]] for fs, fe in self.recipe_cols]
            if all(parts):
                ts = stamps.parse(b" ".join(parts).decode("utf-8"))
        if ts is None:
            ts = stamps.from_fields(_LazyFields(self.index, self.data, self.fs[i], self.fe[i]))
            self.recipe = stamps._field_recipe
            if self.recipe is not None:
                self.recipe_cols = [self._column(self.index[name]) for name in self.recipe]
        return ts

    def _ready(self, i):
        """Whether row i's stamp can come from the kernel: same fields and format parse() would use."""
        stamps = self.parser.timestamps
        recipe = stamps._field_recipe
        if recipe is None or recipe is not self.recipe:
            return False
        key = (recipe, stamps._cached, stamps.strptime)
        if key != self.kernel_key_check:
            layout = layout_of(stamps)
            if layout is None:
                return False
            if (layout,) + key != self.kernel_key:
                if self.kernel_runs >= self._MAX_KERNEL_RUNS:
                    return False
                self._run_kernel(layout, recipe)
                self.kernel_key = (layout,) + key
                self.kernel_runs += 1
            self.kernel_key_check = key
        return bool(self.k_ok[i])

    def _kernel_stamp(self, i):
        if not self._ready(i) or self.yearless:
            return None
        if self.kernel_key[0] != EPOCH_LAYOUT:
            self.pending = i
        return float(self.k_ts[i])

    def _offsets(self, year, month, day, hour):
        """Zone offsets of local stamps, one zoneinfo look-up per distinct (date, hour)."""
        stamps = self.parser.timestamps
        key = ((year * 13 + month) * 32 + day) * 24 + hour
        uniq, inverse = np.unique(key, return_inverse=True)
        offsets = np.empty(len(uniq))
        for u, k in enumerate(uniq.tolist()):
            h = k % 24
            d = (k // 24) % 32
            m = (k // (24 * 32)) % 13
            y = k // (24 * 32 * 13)
            offsets[u] = stamps._local_offset(y, m, d, h)
        return offsets[inverse]

    def _run_kernel(self, layout, recipe):
        self.sync_state()  # pending refers to the arrays about to be replaced
        cols = [self.index[name] for name in recipe]
        ps = np.ascontiguousarray(self.fs[:, cols])
        pe = np.ascontiguousarray(self.fe[:, cols])
        template, seps = layout_arrays(layout)
        ok, ts, year, month, day, hour, sod, fnum, fdig = parse_stamps(self.clean, ps, pe, len(cols), template, seps)
        hour = np.minimum(hour, 23)  # what TimestampParser._local_offset looks up
        self.yearless = not layout_has_year(layout)
        stamps = self.parser.timestamps
        if not self.yearless and layout != EPOCH_LAYOUT and stamps._zone is not None and ok.any():
            ts[ok] = ts[ok] - self._offsets(year[ok], month[ok], day[ok], hour[ok])
        self.k_ok, self.k_year, self.k_month, self.k_day, self.k_hour = ok, year, month, day, hour
        self.k_sod, self.k_fnum, self.k_fdig = sod, fnum, fdig
        self.k_ts = ts
        self.good = ok & self.header_ok
        if self.yearless:
            self.y_ts = np.zeros(len(ok))
            self.y_years = np.zeros(len(ok), dtype=np.int64)
        # run_ends[i]: end of the stretch of rows from i that the header and stamp kernels both took
        bad = np.flatnonzero(~self.good)
        self.run_ends = np.append(bad, len(self.good))[np.searchsorted(bad, np.arange(len(self.good)))]

    def sync_state(self):
        """Give the parser the year/month of the last kernel-parsed stamp, as parse() would have."""
        if self.pending < 0:
            return
        stamps = self.parser.timestamps
        stamps._year = int(self.k_year[self.pending])
        stamps._last_month = int(self.k_month[self.pending])
        stamps._last_text = None
        self.pending = -1


class _LazyFields:
    """Read-only mapping over field spans: from_fields only decodes the fields it asks for."""

    __slots__ = ("_index", "_data", "_fs", "_fe")

    def __init__(self, index, data, fs, fe):
        self._index = index
        self._data, self._fs, self._fe = data, fs, fe

    def get(self, name, default=None):
        j = self._index.get(name)
        if j is None:
            return default
        return self._data[self._fs[j]:self._fe[j]].decode("utf-8")
