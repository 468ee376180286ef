"""The flat JSON-lines fast path equals RecordParser._parse_json on every line it takes, and
parse_columns with it equals parse_many (values, parser state and counters) on any input."""
import datetime as dt
import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing import json_kernels as jk
from anomaly_detector.parsing import parsing_twins as twins
from anomaly_detector.parsing.framing import LineFramer, split_lines
from anomaly_detector.parsing.records import (
    _NUMERIC_LEVELS,
    _SYSLOG_SEVERITY,
    Record,
    RecordParser,
    json_level,
    parse_columns,
)
from anomaly_detector.parsing.sanitize import clean_buffer

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TABLES = jk.kernel_args(_NUMERIC_LEVELS, _SYSLOG_SEVERITY)

STAMPS = ["2026-03-02T10:00:00Z", "2026-03-02T10:00:00.067Z", "2026-03-02 10:00:00,5", "2026-03-02T10:00:00",
          "2024-02-29T23:59:60Z", "2023-02-29T10:00:00Z", "2026-03-02T24:00:00Z", "2026-03-02T10:00:00+01:00",
          "2026-03-02T10:00:00 Z", "2026-03-02T10:00:00.1234567891Z", "2026-3-2T10:00:00Z", "2026-03-02",
          "Mar  2 10:00:00", "1717171717", "", " 2026-03-02T10:00:00Z", "2026-03-02T10:00:00Z ", "12-31 23:59:59",
          "2025-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z", "2026-03-02T10:00:00:042", "garbage",
          "3578-89-06T18:85:97.027Z", "6469-01-21 62:41:53,810", "2026-04-31T10:00:00Z"]
NUMBERS = ["1717171717", "1717171717.123", "1717171717123", "1717171717123456", "1717171717123456789",
           "17171717171234567891", "-0", "-0.0", "0", "0.5", "1.7e9", "1.717171717123E12", "1e400", "-1e400",
           "123456789012345678", "9007199254740993", "3", "30", "30.9", "-0.5", "-1", "61", "60", "7.99", "1e300",
           "2.5e-3", "NaN", "Infinity", "-Infinity", "1" * 70, "0.1e-25"]
WORDS = ["INFO", "warn", " error ", "E", "Fatal", "notice", "", "\u0131nfo", "DEBUG\\t", "ERR\\u004f\\u0052", "trace",
         "information", "x"]
SOURCES = ["web", "app", "db", "", " ", "caf\u00e9", "w\\u0065b", "\u00a0"]
MESSAGES = ["GET /x 200", "say \\\"hi\\\" \\\\ ok", "tab\\there", "nl\\nx\\r\\b\\f", "\\u0000\\u007f\\u0009\\u00e9",
            "emoji \\ud83d\\ude00 ok", "lone \\ud800 x", "low \\udc00", "\\ud800\\u0041", "\\/path\\/to", "caf\u00e9",
            "\ufffd bad", ""]
LITERALS = ["true", "false", "null", "{}", "{\"a\":1}", "[]", "[1,2]", "\"\""]
BROKEN = ["01", "1.", "-", ".5", "1e", "nul", "tru", "+1", "\"\\u12\"", "\"trailing \\\"", "\"bad \\x escape\"",
          "\"raw\ttab\"", "'single'", "\"open"]
KEYS = (["msg", "ts", "other", "", "mes\\u0073age", "Message", "x"] * 3 + ["message", "timestamp", "source", "level"]
        + ["duration_ms", "cpu.user", "z-1", "a b", "k=v", "\u00e9t\u00e9", "d\\u0075r", "Zed", "_"])


def _quoted(text):
    return '"' + text + '"'


@st.composite
def _text_value(draw):
    """A JSON string with random escapes of random characters (plain text as st.text gives it)."""
    out = []
    for ch in draw(st.text(max_size=12)):
        how = draw(st.sampled_from(["raw", "raw", "json", "hex"]))
        if how == "raw" and ch not in '"\\' and ord(ch) >= 32:
            out.append(ch)
        elif how == "hex" and ord(ch) < 0x10000:
            out.append("\\u%04X" % ord(ch))
        else:  # json.dumps: short escapes, \uXXXX, surrogate pairs
            out.append(json.dumps(ch)[1:-1])
    return _quoted("".join(out))


def _values(pool, quote):
    return st.sampled_from([_quoted(v) for v in pool] if quote else pool)


VALUE = st.one_of(_values(STAMPS, True), _values(NUMBERS, False), _values(WORDS, True), _values(SOURCES, True),
                  _values(MESSAGES, True), _values(LITERALS, False), _text_value(),
                  st.integers(-10 ** 20, 10 ** 20).map(str), st.floats(allow_nan=False).map(repr))
VALUE = st.one_of(*[VALUE] * 12, st.sampled_from(BROKEN))
WS = st.sampled_from(["", "", " ", "\t", "  "])


OTHER = st.sampled_from([b"2026-03-02T10:00:00Z INFO plain line", b"2026-03-05 INFO date only",
                         b"Jun 14 15:16:01 host app: syslog", b"no stamp at all", b"", b"{\"message\": \xff\xfe}",
                         b"{\"message\":\"bad \xc3 utf8\",\"timestamp\":1717171717}", b"<13>Mar  2 10:00:01 h a: x",
                         b"{\"message\":\"x\"}\r", b"   {\"level\":\"warn\"}"])
ISO = st.builds(lambda d, sep, frac_sep, frac, zone: d.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + (frac_sep + frac if frac
                                                                                         else "") + zone,
                st.datetimes(dt.datetime(1000, 1, 1)), st.sampled_from(["T", "T", " "]), st.sampled_from([".", ".", ",", ":"]),
                st.sampled_from(["", "067", "5", "123456", "123456789"]), st.sampled_from(["Z", "Z", ""]))
EPOCHS = st.one_of(st.integers(10 ** 8, 2 * 10 ** 18).map(str), st.floats(1e8, 2e9).map(repr),
                   st.integers(0, 10 ** 15).map(lambda v: "%d.%03d" % divmod(v, 1000)))
ROLE_VALUES = {
    "message": st.one_of(_values(MESSAGES, True), _values(MESSAGES, True), _text_value(),
                         _values(["null", "true", "false", "12"], False)),
    "source": _values(SOURCES, True),
    "level": st.one_of(_values(WORDS, True), _values(["30", "50", "3", "7.5", "-0.5", "61", "null"], False)),
}


@st.composite
def json_line(draw, stamps=None):
    """A JSON-ish line: the four keys (mostly) with fitting values, extra keys, random order; sometimes broken."""
    stamp = stamps if stamps is not None else st.one_of(ISO.map(_quoted), EPOCHS)
    roles = {"timestamp": st.one_of(*[stamp] * 6, _values(STAMPS, True), _values(NUMBERS, False)), **ROLE_VALUES}
    pairs = [(key, draw(values if draw(st.integers(0, 9)) else VALUE)) for key, values in roles.items()
             if draw(st.integers(0, 5))]
    pairs += draw(st.lists(st.tuples(st.sampled_from(KEYS), VALUE), max_size=2))
    pairs = draw(st.permutations(pairs))
    ws = draw(WS)
    body = ("," + ws).join(_quoted(k) + ws + ":" + ws + v for k, v in pairs)
    line = draw(WS) + "{" + ws + body + ws + "}" + draw(st.sampled_from([""] * 12 + [" ", "x", ",", "}"]))
    if draw(st.integers(0, 15)) == 0:  # cut or splice somewhere
        pos = draw(st.integers(0, len(line)))
        line = line[:pos] + draw(st.sampled_from(["", "\"", "{", "\\", "\u00a0", "\x00"])) + line[pos + 1:]
    return line.encode("utf-8")


@st.composite
def json_lines(draw, max_size=12):
    """Lines that share a few stamps, so that repeated stamp texts and runs occur."""
    pool = draw(st.lists(st.one_of(ISO.map(_quoted), ISO.map(_quoted), EPOCHS), min_size=1, max_size=3))
    line = json_line(st.sampled_from(pool))
    return draw(st.lists(st.one_of(line, line, line, OTHER), min_size=1, max_size=max_size))


PARSERS = st.sampled_from([
    {"format": "jsonl"},
    {"format": "auto", "source": "in", "default_year": 2024},
    {"format": "jsonl", "timezone": "Europe/Paris"},
    {"format": "auto", "message_key": "msg", "timestamp_key": "ts", "source_key": "", "level_key": "level"},
    {"format": "jsonl", "message_key": "log.msg"},
    {"format": "jsonl", "json_numeric_fields": 0},
    {"format": "auto", "json_numeric_fields": 1},
])


def _state(parser):
    stamps = parser.timestamps
    return (parser._last_ts, stamps._cached, stamps._year, stamps._last_month, stamps._last_text, stamps._last_ts,
            stamps.learned_format, stamps.garbage)


def _same(value, want):
    return value == want or (isinstance(value, float) and isinstance(want, float) and math.isnan(value)
                             and math.isnan(want))


def _compare(parser_args, data, cut=None):
    """parse_columns (in two pieces when cut is given) equals parse_many, state and counters included."""
    framer = LineFramer(max_line_bytes=parser_args.get("max_line_bytes", 102400))
    lines = framer.feed(data) + framer.flush()
    one = RecordParser(**parser_args)
    want = one.parse_many(lines)
    many = RecordParser(**parser_args)
    pieces = [data]
    if cut is not None:  # two buffers, cut after the cut-th LF: the parser carries its state over
        pos = -1
        for _ in range(cut):
            pos = data.find(b"\n", pos + 1)
            if pos < 0:
                break
        pieces = [data[:pos + 1], data[pos + 1:]] if pos >= 0 else [data]
    got = []
    for piece in pieces:
        cols = parse_columns(many, piece)
        for i in range(cols.n):
            ts = None if math.isnan(cols.ts[i]) else float(cols.ts[i])
            got.append(Record(ts, cols.sources[cols.source_id[i]], int(cols.level[i]), cols.content(i),
                              cols.fields(i)))
    assert len(got) == len(want)
    for i, rec in enumerate(want):
        assert got[i] == rec, (i, lines[i])
    assert many.stats == dict(one.stats, truncated=one.stats["truncated"] + framer.truncated)
    assert all(_same(a, b) for a, b in zip(_state(many), _state(one))), (_state(many), _state(one))


def _kernel(texts, zone="UTC", **keys):
    data = b"\n".join(texts)
    buf = clean_buffer(np.frombuffer(data, np.uint8))
    starts, ends = split_lines(buf)
    parser = RecordParser(format="jsonl", timezone=zone, **keys)
    got = jk.json_lines(buf, starts, ends, *jk.key_table(parser), zone == "UTC", *TABLES, parser.json_numeric_fields)
    return buf.tobytes(), starts, ends, got


# ---- the kernel and its twin ---------------------------------------------------------------


@SETTINGS
@given(st.lists(json_line(), min_size=1, max_size=12), st.sampled_from(["UTC", "Europe/Paris"]))
def test_kernel_equals_twin_where_it_applies(texts, zone):
    raw, starts, ends, got = _kernel(texts, zone)
    ok, ts, stamp, _ss, _se, year, month, _rep, level, cstart, cend, in_dec, src_s, src_e, decoded, _over = got
    content_buf = raw + decoded.tobytes()
    for i in np.flatnonzero(ok).tolist():
        text = raw[starts[i]:ends[i]].decode()
        parser = RecordParser(format="jsonl", timezone=zone, source="own")
        want = twins.json_lines_py(parser, [text])[0]
        offset = len(raw) if in_dec[i] else 0
        assert content_buf[offset + cstart[i]:offset + cend[i]].decode() == want.content, text
        assert (math.isnan(ts[i]) and want.ts is None) or ts[i] == want.ts, text
        assert (stamp[i] in (jk.STAMP_NONE, jk.STAMP_GARBAGE)) == (want.ts is None), text
        assert level[i] == want.level, text
        source = raw[src_s[i]:src_e[i]].decode() if src_s[i] >= 0 else "own"
        assert source == want.source, text
        if stamp[i] == jk.STAMP_TEXT:
            assert (year[i], month[i]) == (parser.timestamps._year, parser.timestamps._last_month), text


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(NUMBERS), st.floats(allow_nan=False).map(repr), st.integers().map(str),
                 st.builds(lambda m, f, e: f"{m}.{f}e{e}", st.integers(-10 ** 17, 10 ** 17), st.integers(0, 10 ** 9),
                           st.integers(-30, 30))))
def test_numbers_are_read_bit_for_bit(literal):
    line = ('{"timestamp":%s,"level":%s}' % (literal, literal)).encode()
    _raw, _s, _e, got = _kernel([line])
    ok, ts, level = got[0][0], got[1][0], got[8][0]
    try:
        value = json.loads(literal)
    except ValueError:
        assert not ok
        return
    if ok:
        parser = RecordParser(format="jsonl")
        want = parser.timestamps.parse_value(value)
        assert (want is None and math.isnan(ts)) or ts == want, literal
        assert level == json_level(value), literal


def test_common_lines_take_the_fast_path():
    texts = [json.dumps({"timestamp": "2026-03-02T00:00:%02d.%03dZ" % (i % 60, i), "source": ["web", "app"][i % 2],
                         "level": "INFO", "message": 'GET "/item/%d" \\ 200 caf\u00e9 \U0001F600' % i},
                        ensure_ascii=i % 3 == 0, separators=(",", ":") if i % 2 else (", ", ": ")).encode()
             for i in range(200)]
    texts += [b'{"timestamp":1717171717123,"level":30,"message":"n"}', b'{"message":"no stamp"}', b'{}']
    _raw, _s, _e, got = _kernel(texts)
    assert got[0].all()


def test_lines_the_kernel_leaves_to_python():
    texts = [b'{"message":"x","message":"y"}', b'{"message":{"a":1}}', b'{"mes\\u0073age":"x"}',
             b'{"message":"lone \\ud800"}', b'{"message":"x","timestamp":"2026-03-02T10:00:00+01:00"}',
             b'{"message":"x","timestamp":9007199254740993}', b'{"message":"x"} x', b'{"message":"a\tb"}',
             b'{"message":"x","level":"\\u0131nfo"}', b'{"message":5}', b'{"source":1,"message":"x"}', b"[1]",
             b'{"message":"x","n":' + b"1" * 5000 + b"}"]
    _raw, _s, _e, got = _kernel(texts)
    assert not got[0].any()


def test_span_ids_give_equal_spans_equal_ids():
    buf = np.frombuffer(b"webappwebdbweb", np.uint8)
    ss = np.array([0, 3, 6, -1, 9, 11], np.int64)
    se = np.array([3, 6, 9, -1, 11, 14], np.int64)
    ids, first = jk.span_ids(buf, ss, se)
    assert ids.tolist() == [0, 1, 0, -1, 2, 0] and first.tolist() == [0, 1, 4]


# ---- parse_columns equals parse_many ---------------------------------------------------------


@SETTINGS
@given(json_lines(), PARSERS, st.integers(0, 12), st.sampled_from([b"\n", b"\r\n"]))
def test_parse_columns_equals_parse_many(lines, parser_args, cut, eol):
    data = eol.join(lines)
    _compare(parser_args, data)
    _compare(parser_args, data, cut=cut)


def test_repeated_stamp_text_is_parses_cache_hit():
    # parse() returns its last value, without side effects, when the text repeats; the plain line
    # between moves the year back, and the second JSON line must not move it forward again
    data = (b'{"message":"a","timestamp":"2026-03-02T10:00:00Z"}\n'
            b"2020-12-01T00:00:00Z INFO plain\n"
            b'{"message":"b","timestamp":"2026-03-02T10:00:00Z"}\n'
            b'{"message":"c","timestamp":"2026-03-02T10:00:00Z"}\n'
            b"Mar  2 10:00:00 host app: yearless\n")
    _compare({"format": "auto"}, data)


def test_cached_iso_date_stops_iso_runs():
    # with iso_date cached, parse() reads no full ISO stamp (the date matches, the rest is left over)
    data = (b'{"message":"a","timestamp":"2026-03-02"}\n'
            b'{"message":"b","timestamp":"2026-03-02T10:00:00Z"}\n'
            b'{"message":"c","timestamp":1717171717}\n'
            b"2026-03-05 INFO plain with a date\n"
            b"2026-03-05T10:00:00Z INFO plain with a stamp\n")
    _compare({"format": "auto"}, data)


def test_hostile_and_odd_lines():
    data = (b'{"message":"lone \\ud800","timestamp":-0.0,"level":-0.5}\n'
            b'{"message":"x","timestamp":NaN,"level":Infinity,"source":null}\n'
            b'{"message":null,"timestamp":1e400,"level":true}\n'
            b'{"message":true,"source":"caf\xc3\xa9"}\n'
            b'{"message":"bad \xff byte \x01","timestamp":"2026-03-02T10:00:00.1Z"}\n'
            b'\t {"message":"\\u0000\\n\\t\\ud83d\\ude00","level":" warn "}  \n'
            b'{"message":"x","source":""}\n'
            + b'{"message":"' + b"y" * 200 + b'"}\n'
            + b'{"message":"too many digits","n":' + b"7" * 4400 + b'}\n'
            + b'{"message":"long float","n":0.' + b"7" * 4400 + b'}\n')
    for args in ({"format": "jsonl", "source": "in"}, {"format": "auto", "max_line_bytes": 100},
                 {"format": "jsonl", "timezone": "America/New_York"}):
        _compare(args, data)


# ---- numeric fields written after the message ------------------------------------------------

# JSON number literals: integers, decimals and exponent forms, with trailing and leading zeros.
LITERAL = st.one_of(
    st.integers(-10 ** 20, 10 ** 20).map(str), st.floats(allow_nan=False).map(repr),
    st.builds(lambda sign, whole, frac, exp: sign + whole + ("." + frac if frac else "") + exp,
              st.sampled_from(["", "-"]), st.sampled_from(["0", "1", "10", "123", "900", "4503599627370496"]),
              st.sampled_from(["", "0", "5", "050", "000001", "25", "123456789012345", "1234567890123456",
                               "99999999999999951", "00000000000000051", "12345678901234549", "9999999999999951",
                               "1234567890123450000001", "123456789012345", "1234567890123456789",
                               "99999999999999949999", "30000000000000004"]),
              st.sampled_from(["", "e0", "E2", "e-3", "e+21", "e22", "e-22", "e-9", "e400", "E-0010"])))


@SETTINGS
@given(st.lists(LITERAL, min_size=1, max_size=6))
def test_numeric_fields_are_written_as_python_writes_them(literals):
    texts = [('{"message":"m","v":%s,"w%d":%s}' % (lit, k, lit)).encode() for k, lit in enumerate(literals)]
    raw, starts, ends, got = _kernel(texts)
    ok, cstart, cend, in_dec, decoded = got[0], got[9], got[10], got[11], got[14]
    content_buf = raw + decoded.tobytes()
    for i in np.flatnonzero(ok).tolist():
        want = twins.json_lines_py(RecordParser(format="jsonl"), [texts[i].decode()])[0].content
        offset = len(raw) if in_dec[i] else 0
        assert content_buf[offset + cstart[i]:offset + cend[i]].decode() == want, texts[i]
    usual = [lit for lit in literals if not set(lit) & set("eEn") and len(lit.lstrip("-0.").replace(".", "")) < 16]
    assert ok.sum() >= len(usual)  # the usual ones are the kernel's


def test_a_line_that_may_not_fit_grows_the_decoded_bytes_mid_batch():
    # a long line after short ones: what is left of the decoded bytes may not hold its text with its
    # numeric fields, so the loop stops there and goes on once they have grown (json_lines, _json_loop)
    short = ['{"message":"m%d","v":%d,"w":%d.5}' % (i, i, i) for i in range(5)]
    long = ['{"message":"%s","v":7,"w":8.25}' % ("x" * 5000)]
    texts = [t.encode() for t in short + long + short]
    raw, _s, _e, got = _kernel(texts)
    assert got[0].all() and got[11].all()
    content = raw + got[14].tobytes()
    for i, text in enumerate(texts):
        alone_raw, _s, _e, alone = _kernel([text])
        alone_content = (alone_raw + alone[14].tobytes())[len(alone_raw) + alone[9][0]:len(alone_raw) + alone[10][0]]
        assert content[len(raw) + got[9][i]:len(raw) + got[10][i]] == alone_content
    assert content[len(raw) + got[9][5]:len(raw) + got[10][5]] == b"x" * 5000 + b" v=7 w=8.25"


def test_json_lines_with_numeric_fields_take_the_fast_path():
    texts = [json.dumps({"timestamp": "2026-03-02T00:00:%02dZ" % (i % 60), "source": "api", "level": "INFO",
                         "message": "order placed", "duration_ms": 100 + i, "cpu": round(i * 0.37, 2),
                         "ratio": i / 7 if i % 2 else 2.5e-05, "user": "u%d" % i, "ok": True}).encode()
             for i in range(200)]
    _raw, _s, _e, got = _kernel(texts)
    assert got[0].mean() > 0.99  # 17-digit floats too, but those a hair from a rounding half-way point
