"""Whole buffers of lines into columns (time, level, content span, source) with numba kernels.

parse_columns gives, field by field, what records.RecordParser.parse_many gives for the same lines.
The bytes are cleaned and split by kernels; header lines are split by header_kernels and their
stamps read by timestamps.parse_stamps with the recipe the parser learned; plain `<ISO stamp>
<LEVEL> text` lines by plain_kernels, year-less syslog file lines by syslog_plain, flat JSON objects
by json_kernels. Lines no kernel takes go
through the RecordParser, in input order (carried times and year inference depend on the order);
each kernel run leaves the parser's state (TimestampParser's learned format, year, last stamp) as
parse() would after those lines. Used by replay, parse (commands/) and the workers.
"""
import numpy as np

from anomaly_detector.parsing import header_kernels as hk
from anomaly_detector.parsing import json_kernels as jk
from anomaly_detector.parsing import plain_kernels as pk
from anomaly_detector.parsing.batch import level_code
from anomaly_detector.parsing.framing import split_lines
from anomaly_detector.parsing.header_sniff import SNIFF_LINES_PER_BATCH
from anomaly_detector.parsing.inline_levels import fill_unknown
from anomaly_detector.parsing.jsonl import parse_json_line_reason
from anomaly_detector.parsing.records import _NUMERIC_LEVELS, _SYSLOG_SEVERITY, RecordParser
from anomaly_detector.parsing.sanitize import clean_buffer, clean_text
from anomaly_detector.parsing.syslog_plain import SyslogPlainLines, put_run, run_end
from anomaly_detector.parsing.timestamps import (
    EPOCH_LAYOUT,
    infer_years,
    layout_arrays,
    layout_has_year,
    parse_stamps,
)


class Columns:
    """A whole file parsed into arrays: ts float64 (NaN: none), level int8, contents in one buffer.

    content_buf holds sanitised UTF-8 (lone surrogates from JSON escapes are U+FFFD by then; the
    surrogatepass codecs below are a second guard); line i's content is content_buf[content_start[i]:content_end[i]].
    source_id indexes `sources`. fields(i) builds the header/JSON/syslog fields of line i on demand.
    host_id indexes `hosts` (-1: the line named no host): the host a syslog-style prefix names, so
    that detection can tell the replicas of one source apart (parsing/sources.py).
    """

    def __init__(self, ts, level, content_buf, content_start, content_end, source_id, sources, field_getter,
                 host_id=None, hosts=()):
        self.ts = ts
        self.level = level
        self.content_buf = content_buf
        self.content_start = content_start
        self.content_end = content_end
        self.source_id = source_id
        self.sources = sources
        self._field_getter = field_getter
        self.host_id = np.full(len(ts), -1, np.int32) if host_id is None else host_id
        self.hosts = hosts

    @property
    def n(self):
        return len(self.ts)

    def __len__(self):
        return self.n

    def content(self, i):
        return bytes(self.content_buf[self.content_start[i]:self.content_end[i]]).decode("utf-8", "surrogatepass")

    def fields(self, i):
        return self._field_getter(i)

    def lines(self, first, stop):
        """Columns of lines first..stop-1 (views; the content buffer is shared)."""
        getter = self._field_getter
        return Columns(self.ts[first:stop], self.level[first:stop], self.content_buf, self.content_start[first:stop],
                       self.content_end[first:stop], self.source_id[first:stop], self.sources,
                       lambda i: getter(first + i), self.host_id[first:stop], self.hosts)


class _ColumnBuilder:
    """Collects per-line results; contents that are not a span of the cleaned buffer go to an extra area."""

    def __init__(self, n, base_len):
        self.start = np.zeros(n, dtype=np.int64)
        self.end = np.zeros(n, dtype=np.int64)
        self.source_id = np.zeros(n, dtype=np.int32)
        self.sources = []
        self._source_index = {}
        self.host_id = np.full(n, -1, dtype=np.int32)   # see Columns
        self.hosts = []
        self._host_index = {}
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

    def host_index(self, name):
        hid = self._host_index.get(name)
        if hid is None:
            hid = self._host_index[name] = len(self.hosts)
            self.hosts.append(name)
        return hid

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
    if parser.wants_sniff:      # after the compose prefixes are cut: the header follows them
        head = slice(0, SNIFF_LINES_PER_BATCH)
        parser.sniff([clean_bytes[s:e].decode("utf-8", "replace") for s, e in zip(starts[head].tolist(), ends[head].tolist())])
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
    syslog = SyslogPlainLines.for_buffer(parser, clean, starts, ends) if hdr is None else None
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
            run_end = plain.take_run(i, out, ts_arr, level_arr, ends)
            if run_end > i:
                i = run_end
                continue
        if syslog is not None and syslog.ok[i] and syslog.usable():
            run_end = syslog.take_run(i, out, ts_arr, level_arr, ends)
            if run_end > i:
                i = run_end
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
        record = parser.parse_text(text)
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
    if parser.inline_levels == "auto" and n:   # after the prefixes are cut: the message's own first words
        parser.stats["inline_levels"] += fill_unknown(level_arr, content_buf, out.start, out.end)

    def field_getter(i):
        if i in slow:
            return slow[i]
        if jsonl is not None and jsonl.ok[i]:
            return jsonl.fields(i)
        if hdr is None:
            return {}
        return {name: clean_bytes[fs[i, j]:fe[i, j]].decode("utf-8") for j, name in enumerate(hdr.fields)}

    return Columns(ts_arr, level_arr, content_buf, out.start, out.end, out.source_id, out.sources, field_getter,
                   out.host_id, out.hosts)


class _PlainLines:
    """Lines that plain_kernels.plain_lines parsed (`<ISO stamp> <LEVEL> message`), taken in runs.

    Used only while the parser's learned stamp format is ISO (or none yet) and no strptime override
    is set, so that the kernel's reading is the one _parse_plain would make. Garbage stamps (ISO
    shape, impossible values) are taken only once ISO is learned: before, Python decides which
    format the file has. After each run the parser's state (learned format, year, month, last
    time, counters) is what it would be after those lines.
    """

    _TABLES = None

    @classmethod
    def for_buffer(cls, parser, clean, starts, ends):
        stamps = parser.timestamps
        if parser.format not in ("plain", "auto") or stamps.strptime or stamps.learned_format not in (None, "iso"):
            return None
        if cls._TABLES is None:
            cls._TABLES = pk.kernel_args()
        got = pk.plain_lines(clean, starts, ends, stamps.zone_is_utc, *cls._TABLES)
        return cls(parser, *got) if got[0].any() else None

    def __init__(self, parser, ok, garbage, ts, level, cstart, year, month):
        self.parser, self.ok, self.garbage, self.ts, self.level, self.cstart = parser, ok, garbage, ts, level, cstart
        self.year, self.month = year, month
        self._bad = np.append(np.flatnonzero(~ok), len(ok))
        self._garbage_rows = np.flatnonzero(garbage)

    def usable(self):
        """Whether the parser would still read these stamps as ISO; a line read since may have cached
        another format (iso_date, say, which wins over ISO for `2026-03-02T...`)."""
        return self.parser.timestamps.learned_format in (None, "iso")

    def take_run(self, i, out, ts_arr, level_arr, ends):
        """Fill lines i.. up to the next line the kernel did not take; returns that index (i when
        line i itself must take the per-line path)."""
        stamps = self.parser.timestamps
        j = run_end(self._bad, self._garbage_rows, stamps, i)
        if j == i:
            return i
        garbage = self.garbage[i:j]
        put_run(self.parser, out, i, j, self.ts[i:j], self.level[i:j], self.cstart[i:j], ts_arr, level_arr, ends)
        n_garbage = int(garbage.sum())
        if n_garbage:
            self.parser.stats["unparsed_timestamps"] += n_garbage
            stamps.took_garbage(n_garbage)
        if n_garbage < j - i:
            last = i + len(garbage) - 1 - int(np.argmin(garbage[::-1]))
            stamps.took_stamps(self.year[last], self.month[last], fmt="iso")
        return j


class _JsonLines:
    """Lines that json_kernels.json_lines read (flat JSON objects), taken in runs.

    Number stamps do not depend on the parser's state; ISO text stamps are the kernel's while the
    learned stamp format is ISO or none, as for _PlainLines. TimestampParser.parse returns its last
    value without side effects when a text equals the previous one, which take_run reproduces.
    After each run the parser's state (learned format, year, month, last text, last times) and its
    counters are what parse() leaves after those lines.
    """

    _TABLES = None

    @classmethod
    def for_buffer(cls, parser, clean, clean_bytes, starts, ends, out):
        stamps = parser.timestamps
        if stamps.strptime or not (parser.format == "jsonl" or (parser.format == "auto" and parser.header is None)):
            return None
        keys = jk.key_table(parser)
        if keys is None or len(starts) == 0 or not _may_hold_objects(clean, starts, ends):
            return None
        if cls._TABLES is None:
            cls._TABLES = jk.kernel_args(_NUMERIC_LEVELS, _SYSLOG_SEVERITY)
        got = jk.json_lines(clean, starts, ends, *keys, stamps.zone_is_utc, *cls._TABLES, parser.json_numeric_fields)
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
        self._garbage = np.flatnonzero(self.stamp == jk.STAMP_GARBAGE)
        self.src_id, first = jk.span_ids(clean, src_start, src_end)
        self._src_span = (src_start[first], src_end[first])
        self.src_id[self.src_id < 0] = len(first)  # the parser's own source
        self._sid = np.full(len(first) + 1, -1, dtype=np.int64)

    def take_run(self, i, out, ts_arr, level_arr):
        """Fill lines i.. up to the next line the kernel did not take; returns that index.

        A run stops before the first text stamp when the parser has learned another format since;
        i is returned when line i itself must take the per-line path.
        """
        j = int(self._bad[np.searchsorted(self._bad, i)])
        texts = self._texts[np.searchsorted(self._texts, i):np.searchsorted(self._texts, j)]
        garbage = self._garbage[np.searchsorted(self._garbage, i):np.searchsorted(self._garbage, j)]
        learned = self.parser.timestamps.learned_format
        if learned not in (None, "iso"):  # the parser tries another shape first: Python decides
            cut = min(int(texts[0]) if len(texts) else j, int(garbage[0]) if len(garbage) else j)
            j, texts, garbage = cut, texts[:0], garbage[:0]
        elif learned is None and len(garbage) and not (len(texts) and texts[0] < garbage[0]):
            j = int(garbage[0])  # garbage before any stamp taught the shape: Python learns it
            texts, garbage = texts[texts < j], garbage[:0]
        if j == i:
            return i
        ts = self.ts[i:j].copy()
        if len(texts):
            self._text_stamps(texts, ts, i)
        ts_arr[i:j] = self.parser.carry_column(ts)
        level_arr[i:j] = self.level[i:j]
        out.start[i:j] = self.cstart[i:j]
        out.end[i:j] = self.cend[i:j]
        out.source_id[i:j] = self._source_ids(i, j, out)
        self.parser.stats["json_fields_over_cap"] += int(self.over_cap[i:j].sum())
        if len(garbage):
            self.parser.stats["unparsed_timestamps"] += len(garbage)
            self.parser.timestamps.took_garbage(len(garbage))
        return j

    def _text(self, k):
        return self.clean_bytes[self.stamp_start[k]:self.stamp_end[k]].decode("utf-8")

    def _text_stamps(self, texts, ts, i):
        """Side effects of TimestampParser.parse for the text stamps of a run, and its cache hits."""
        stamps = self.parser.timestamps
        hits = 0
        if stamps.last_text is not None and self._text(texts[0]) == stamps.last_text:
            # parse() gives its last value again, without side effects, while the text repeats
            fresh = np.flatnonzero(~self.repeat[texts[1:]])
            hits = 1 + int(fresh[0]) if len(fresh) else len(texts)
            ts[texts[:hits] - i] = stamps.last_ts
        if hits == len(texts):
            return
        last = int(texts[-1])
        stamps.took_stamps(self.year[last], self.month[last], fmt="iso")
        stamps.remember_text(self._text(last), float(self.ts[last]))

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


def _may_hold_objects(clean, starts, ends):
    """Whether some line starts with '{' or white space: else no line is a JSON object, and the JSON
    kernel (whose lines are a subset of those) need not scan a plain file's buffer."""
    if len(clean) == 0:
        return False
    first = clean[np.minimum(starts, len(clean) - 1)][ends > starts]
    return bool(np.isin(first, _OBJECT_OR_SPACE_LEADS).any())


_OBJECT_OR_SPACE_LEADS = np.array([123, 9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0xC2, 0xE1, 0xE2, 0xE3], dtype=np.uint8)


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
    """Time and level of lines the header kernel split.

    Stamps come from the numba stamp kernel (timestamps.parse_stamps) with the recipe and format the
    parser has learned, wherever the parser would use the same header fields and the same format
    first (so the value is provably what parse() computes): valid stamps once a valid one taught
    the recipe, garbage stamps (the learned shape, impossible values: no time, counted) as soon as
    a recipe is learned, even from garbage. Other lines go through TimestampParser.from_fields.
    sync_state() brings the parser's year state up to date before it parses anything itself, as if
    it had seen every kernel-parsed stamp.
    """

    _MAX_KERNEL_RUNS = 4  # a file that keeps switching stamp shapes is left to the Python path

    def __init__(self, parser, hdr, clean, data, fs, fe, header_ok):
        self.parser, self.hdr, self.clean, self.data, self.fs, self.fe = parser, hdr, clean, data, fs, fe
        self.header_ok = header_ok
        self.index = {name: j for j, name in enumerate(hdr.fields)}
        self.levels = {}
        self.recipe = None
        self.kernel_key = None
        self.kernel_key_check = None
        self.kernel_runs = 0
        self.layout = None
        self.yearless = False
        self.k_ok = self.k_garbage = self.k_ts = self.k_year = self.k_month = None
        self.take_ok = self.take_garbage = self.run_ends = None
        self.pending = -1  # last row whose stamp the kernel gave but the parser has not seen
        li = hdr.level_index
        self.level_cols = self._column(li) if li >= 0 else None
        if li >= 0:
            names, lengths, codes = hk.level_table()
            self.level_arr = hk.level_codes(clean, np.ascontiguousarray(fs[:, li]), np.ascontiguousarray(fe[:, li]),
                                            names, lengths, codes)
        else:
            self.level_arr = np.zeros(len(fs), dtype=np.int64)

    def _column(self, j):
        return self.fs[:, j], self.fe[:, j]

    def line(self, i):
        """(time, level) of line i alone: the kernel's stamp when it may give it, else Python's."""
        if self._ready(i) and not self.yearless:
            if self.k_garbage[i]:
                self._took_garbage(1)
                ts = None
            else:
                if self.layout != EPOCH_LAYOUT:
                    self.pending = i
                ts = float(self.k_ts[i])
        else:
            self.sync_state()
            ts = self._python_stamp(i)
        return self.parser.carry_one(ts), self._level(i)

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
            garbage = self.take_garbage[i:j]
            if self.layout != EPOCH_LAYOUT and not garbage.all():
                self.pending = i + len(garbage) - 1 - int(np.argmin(garbage[::-1]))
        garbage = self.take_garbage[i:j]
        n_garbage = int(garbage.sum())
        if n_garbage:
            self._took_garbage(n_garbage)
        ts_arr[i:j] = self.parser.carry_column(ts_arr[i:j])
        levels = self.level_arr[i:j]
        level_arr[i:j] = levels
        for k in np.flatnonzero(levels < 0).tolist():  # non-ASCII level words: Python decides
            level_arr[i + k] = self._level(i + k)
        return j

    def _took_garbage(self, count):
        self.parser.stats["unparsed_timestamps"] += count
        self.parser.timestamps.took_garbage(count)

    def _yearless_run(self, i, ts_arr):
        """Stamps without a year: the kernel infers years in order from the parser's state."""
        stamps = self.parser.timestamps
        self.sync_state()
        first = i + int(np.argmax(self.take_ok[i:]))  # the first valid stamp picks the year when none is known
        year0, last0 = stamps.year_context(int(self.k_month[first]), int(self.k_day[first]))
        j, year_after, last_after = infer_years(self.take_ok, self.take_garbage, self.k_month, self.k_day,
                                                self.k_sod, self.k_fnum, self.k_fdig, i, year0, last0,
                                                self.y_ts, self.y_years)
        if j == i:
            return i
        ts = self.y_ts[i:j]
        if not stamps.zone_is_utc:
            valid = ~self.take_garbage[i:j]
            ts = ts.copy()
            ts[valid] -= self._offsets(self.y_years[i:j][valid], self.k_month[i:j][valid],
                                       self.k_day[i:j][valid], self.k_hour[i:j][valid])
        ts_arr[i:j] = ts
        if not self.take_garbage[i:j].all():  # garbage leaves the year state alone
            stamps.took_stamps(year_after, last_after, fmt=self._format())
            stamps.forget_text()
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
        ts = stamps.from_fields(_LazyFields(self.index, self.data, self.fs[i], self.fe[i]))
        if ts is None and self.parser.header_has_stamp:
            self.parser.stats["unparsed_timestamps"] += 1
        self.recipe = stamps.learned_recipe
        return ts

    def _ready(self, i):
        """Whether row i's stamp can come from the kernel: same fields and format parse() would use."""
        stamps = self.parser.timestamps
        recipe = stamps.learned_recipe
        if recipe is None or recipe is not self.recipe:
            return False
        valid = stamps.field_recipe is not None  # else only garbage taught the recipe: Python learns from valid
        key = (recipe, stamps.learned_format, stamps.strptime, valid)
        if key != self.kernel_key_check:
            layout = stamps.layout()
            if layout is None:
                return False
            if (layout,) + key[:3] != self.kernel_key:
                if self.kernel_runs >= self._MAX_KERNEL_RUNS:
                    return False
                self._run_kernel(layout, recipe)
                self.kernel_key = (layout,) + key[:3]
                self.kernel_runs += 1
            self._takes(valid)
            self.kernel_key_check = key
        return bool(self.take_ok[i] or self.take_garbage[i])

    def _takes(self, valid):
        """The rows the kernel gives: valid stamps (when a valid one taught the recipe) and garbage."""
        self.take_ok = self.k_ok & self.header_ok if valid else np.zeros(len(self.k_ok), dtype=np.bool_)
        self.take_garbage = self.k_garbage & self.header_ok
        good = self.take_ok | self.take_garbage
        # run_ends[i]: end of the stretch of rows from i that the header and stamp kernels both took
        bad = np.flatnonzero(~good)
        self.run_ends = np.append(bad, len(good))[np.searchsorted(bad, np.arange(len(good)))]

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
            offsets[u] = stamps.local_offset(y, m, d, h)
        return offsets[inverse]

    def _run_kernel(self, layout, recipe):
        self.sync_state()  # pending refers to the arrays about to be replaced
        cols = [self.index[name] for name in recipe]
        ps = np.ascontiguousarray(self.fs[:, cols])
        pe = np.ascontiguousarray(self.fe[:, cols])
        template, seps = layout_arrays(layout)
        ok, garbage, ts, year, month, day, hour, sod, fnum, fdig = parse_stamps(self.clean, ps, pe, len(cols),
                                                                                template, seps)
        hour = np.minimum(hour, 23)  # what TimestampParser.local_offset looks up
        self.layout = layout
        self.yearless = not layout_has_year(layout)
        stamps = self.parser.timestamps
        if not self.yearless and layout != EPOCH_LAYOUT and not stamps.zone_is_utc and ok.any():
            ts[ok] = ts[ok] - self._offsets(year[ok], month[ok], day[ok], hour[ok])
        ts[garbage] = np.nan
        self.k_ok, self.k_garbage, self.k_year, self.k_month, self.k_day, self.k_hour = ok, garbage, year, month, day, hour
        self.k_sod, self.k_fnum, self.k_fdig = sod, fnum, fdig
        self.k_ts = ts
        if self.yearless:
            self.y_ts = np.zeros(len(ok))
            self.y_years = np.zeros(len(ok), dtype=np.int64)

    def _format(self):
        """The format name of the kernel's layout (the epoch layout is no cached format)."""
        return None if self.layout == EPOCH_LAYOUT else self.layout

    def sync_state(self):
        """Give the parser the year/month of the last kernel-parsed stamp, as parse() would have."""
        if self.pending < 0:
            return
        stamps = self.parser.timestamps
        stamps.took_stamps(self.k_year[self.pending], self.k_month[self.pending], fmt=self._format())
        stamps.forget_text()
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
