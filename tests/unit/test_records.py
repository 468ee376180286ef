"""RecordParser per line and parse_columns on whole buffers (equal results, every sample)."""
import datetime as dt
import math
import zoneinfo
from pathlib import Path

import numpy as np
import pytest

from anomaly_detector.parsing.batch import (
    LEVEL_CRITICAL,
    LEVEL_DEBUG,
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_UNKNOWN,
    LEVEL_WARNING,
)
from anomaly_detector.parsing.framing import LineFramer
from anomaly_detector.parsing.headers import LOGHUB_FORMATS
from anomaly_detector.parsing.records import Columns, Record, RecordParser, json_level, parse_columns


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def _data_dir():
    here = Path(__file__).resolve()
    for cand in (here.parents[3] / "shared" / "data" / "loghub-2k", Path("/work/shared/data/loghub-2k")):
        if cand.is_dir():
            return cand
    return None


DATA = _data_dir()
SAMPLED = ["HDFS", "Hadoop", "Spark", "Zookeeper", "OpenStack", "Apache", "Linux", "Mac", "Android", "HealthApp"]


def test_plain_line_with_stamp_and_level():
    r = RecordParser().parse(b"2026-03-02T10:00:00.000Z ERROR web-1 GET /x 200 20ms")
    assert (r.ts, r.level, r.content, r.fields) == (utc(2026, 3, 2, 10), LEVEL_ERROR, "web-1 GET /x 200 20ms", {})


@pytest.mark.parametrize("line,ts,level,content", [
    (b"[2026-03-02 10:00:00] WARN: disk low", utc(2026, 3, 2, 10), LEVEL_WARNING, "disk low"),
    (b"ERROR something broke", None, LEVEL_ERROR, "something broke"),
    (b"I think therefore", None, LEVEL_UNKNOWN, "I think therefore"),
    (b"  just text  ", None, LEVEL_UNKNOWN, "just text  "),
    (b"2026-03-02 10:00:00,123 [DEBUG] x", utc(2026, 3, 2, 10, 0, 0, 123000), LEVEL_DEBUG, "x"),
])
def test_plain_variants(line, ts, level, content):
    r = RecordParser(format="plain").parse(line)
    assert (r.ts, r.level, r.content) == (ts, level, content)


def test_jsonl_records_and_malformed():
    p = RecordParser(format="jsonl", source="in")
    r = p.parse(b'{"message":"hi\\u0000","timestamp":1717171717123,"level":50,"source":"web"}')
    assert (r.ts, r.level, r.content, r.source) == (1717171717.123, LEVEL_ERROR, "hi\ufffd", "web")
    bad = p.parse(b'{"message": oops')
    assert bad.content == '{"message": oops' and bad.ts == 1717171717.123 and bad.source == "in"
    assert p.stats["malformed_json"] == 1 and p.stats["no_timestamp"] == 1
    r = p.parse(b'{"msg":"no message key"}')
    assert r.content == '{"msg":"no message key"}'


def test_jsonl_custom_keys():
    p = RecordParser(format="jsonl", message_key="log.msg", timestamp_key="ts", level_key="sev", source_key="svc")
    r = p.parse(b'{"log":{"msg":"x"},"ts":"2026-03-02T10:00:00Z","sev":"fatal","svc":"api"}')
    assert (r.content, r.ts, r.level, r.source) == ("x", utc(2026, 3, 2, 10), LEVEL_CRITICAL, "api")


def test_json_levels():
    assert json_level("warn") == LEVEL_WARNING
    assert json_level(30) == LEVEL_INFO and json_level(60) == LEVEL_CRITICAL
    assert json_level(3) == LEVEL_ERROR
    assert json_level(True) == LEVEL_UNKNOWN and json_level(float("nan")) == LEVEL_UNKNOWN
    assert json_level({"a": 1}) == LEVEL_UNKNOWN


def test_auto_routes_per_line():
    p = RecordParser(format="auto", log_format=LOGHUB_FORMATS["HDFS"])
    j = p.parse(b'{"message":"json line","timestamp":"2026-03-02T10:00:00Z"}')
    s = p.parse(b"<11>Mar  2 10:00:01 host app[1]: syslog line")
    h = p.parse(b"081109 203615 148 INFO dfs.DataNode: header line")
    m = p.parse(b"not a header line")
    assert [r.content for r in (j, s, h, m)] == ["json line", "syslog line", "header line", "not a header line"]
    assert h.level == LEVEL_INFO and h.fields["Component"] == "dfs.DataNode"
    assert s.level == LEVEL_ERROR and s.source == "host"
    assert m.ts == h.ts == utc(2008, 11, 9, 20, 36, 15)
    assert p.stats["header_mismatch"] == 1 and p.stats["lines"] == 4


def test_timestamp_carry_and_arrival():
    p = RecordParser(format="plain")
    assert p.parse(b"no stamp", arrival_ts=5.0).ts == 5.0
    assert p.parse(b"2026-03-02T10:00:00Z x", arrival_ts=6.0).ts == utc(2026, 3, 2, 10)
    assert p.parse(b"  at Foo.bar()", arrival_ts=7.0).ts == utc(2026, 3, 2, 10)
    assert p.stats["no_timestamp"] == 2


def test_hostile_bytes_and_truncation():
    p = RecordParser(max_line_bytes=10)
    r = p.parse(b"ab\x00c\xff\xfe" + b"z" * 20)
    assert r.content == "ab\ufffdc\ufffd\ufffdzzzz"
    assert p.stats["truncated"] == 1 and p.stats["decode_errors"] == 1
    assert p.parse(b"line\r\n").content == "line"
    for raw in (None, 12, "text", bytearray(b"x"), b"{" * 100, b"<1" + b"\xff" * 10, "\ud800"):
        assert isinstance(p.parse(raw), Record)
    assert p.parse(12).content == "12"


def test_bad_format_is_config_error():
    with pytest.raises(ValueError):
        RecordParser(format="xml")


def test_record_equality_and_slots():
    a = Record(1.0, "s", LEVEL_INFO, "c", {})
    assert a == Record(1.0, "s", LEVEL_INFO, "c", {}) and a != Record(2.0, "s", LEVEL_INFO, "c", {})
    with pytest.raises(AttributeError):
        a.other = 1


# ---- parse_columns equals parse_many -----------------------------------------------------


def _compare(parser_args, data):
    framer = LineFramer(max_line_bytes=parser_args.get("max_line_bytes", 102400))
    lines = framer.feed(data) + framer.flush()
    one = RecordParser(**parser_args)
    want = one.parse_many(lines)
    many = RecordParser(**parser_args)
    cols = parse_columns(many, data)
    assert isinstance(cols, Columns) and cols.n == len(want)
    assert cols.ts.dtype == np.float64 and cols.level.dtype == np.int8 and cols.content_buf.dtype == np.uint8
    for i, rec in enumerate(want):
        ts = None if math.isnan(cols.ts[i]) else float(cols.ts[i])
        got = Record(ts, cols.sources[cols.source_id[i]], int(cols.level[i]), cols.content(i), cols.fields(i))
        assert got == rec, (i, lines[i])
    # parse_columns frames the buffer itself, so it counts the truncations the framer made here
    assert many.stats == dict(one.stats, truncated=one.stats["truncated"] + framer.truncated)
    return cols


@pytest.mark.parametrize("name", SAMPLED)
def test_parse_columns_equals_parse_many_on_samples(name):
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    data = (DATA / name / f"{name}_2k.log").read_bytes()
    _compare({"log_format": LOGHUB_FORMATS[name], "source": name, "default_year": 2024}, data)
    _compare({"format": "auto", "log_format": LOGHUB_FORMATS[name], "default_year": 2024}, data[:20000])


def test_parse_columns_mixed_and_hostile():
    data = (b"081109 203615 148 INFO dfs.A: one\r\n"
            b'{"message":"json","timestamp":1717171717}\n'
            b"<13>Mar  2 10:00:01 h app: sys\n"
            b"garbage line with \x00 and \xff\n"
            b"   081109 203616 148 WARN dfs.B: indented\n"
            b"\n"
            b"081109 203617 148 INFO dfs.C: " + b"x" * 300 + b"\n"
            b"081109 203618 148 INFO dfs.D: cut\r")
    for fmt in ("auto", "plain", "jsonl", "syslog"):
        _compare({"format": fmt, "log_format": LOGHUB_FORMATS["HDFS"], "max_line_bytes": 120,
                  "default_year": 2024}, data)
        _compare({"format": fmt, "max_line_bytes": 31}, data)


def test_parse_columns_plain_and_empty():
    cols = _compare({"format": "plain"}, b"2026-03-02T10:00:00Z ERROR a\nno stamp\n")
    assert cols.content(0) == "a" and cols.ts[1] == cols.ts[0]
    assert _compare({}, b"").n == 0


def test_parse_columns_year_rollover_and_bad_stamps_match_parse_many():
    lines = ["12-31 23:59:58.100  1  2 I A: one", "12-31 23:59:59.900  1  2 I A: two",
             "01-01 00:00:00.000  1  2 W A: new year", "02-29 10:00:00.000  1  2 E A: not a leap year",
             "02-28 25:00:00.000  1  2 E A: bad hour", "03-01 00:00:00.5  1  2 D A: spring",
             "garbage", "12-01 00:00:00.000  1  2 I A: rollover again"]
    data = "\n".join(lines).encode()
    for zone in ("UTC", "Europe/Paris"):
        cols = _compare({"log_format": LOGHUB_FORMATS["Android"], "default_year": 2023, "timezone": zone}, data)
        years = [dt.datetime.fromtimestamp(t, zoneinfo.ZoneInfo(zone)).year for t in cols.ts.tolist()]
        assert years[0] == 2023 and years[2] == 2024 and years[-1] == 2024


def test_a_lone_surrogate_escape_becomes_a_replacement_character():
    data = b'{"message":"lone \\ud800 x","source":"a\\udc00"}\n{"message":"pair \\ud83d\\ude00"}\n'
    parser = RecordParser(format="jsonl")
    first, second = parser.parse_many(data.splitlines())
    assert (first.content, first.source, second.content) == ("lone \ufffd x", "a\ufffd", "pair \U0001f600")
    cols = parse_columns(RecordParser(format="jsonl"), data)
    assert [cols.content(0), cols.content(1)] == [first.content, second.content]
    assert bytes(cols.content_buf).decode("utf-8")  # valid UTF-8 throughout
