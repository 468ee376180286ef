"""The plain-line fast path equals RecordParser._parse_plain on every line it takes."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing import parsing_twins as twins
from anomaly_detector.parsing import plain_kernels as pk
from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.parsing.sanitize import clean_text

STAMPS = ["2026-03-02T10:00:00Z", "2026-03-02T10:00:00.123Z", "2026-03-02 10:00:00,5", "2024-02-29T23:59:60Z",
          "2023-02-29T10:00:00Z", "2026-13-02T10:00:00Z", "2026-03-02T24:00:00", "2026-03-02T10:00:00.1234567890Z",
          "2026-03-02T10:00:00 Z", "2026-03-02T10:00:00+01:00", "2026-03-02T10:00:00ZZ", "2026-3-2T10:00:00Z",
          "2026-03-02T10:00:00:042", "0000-01-01T00:00:00Z", "[2026-03-02T10:00:00Z]", " 2026-03-02T10:00:00Z",
          "3578-89-06 18:85:97,027", "6469-01-21 62:41:53,810", "2026-04-31T10:00:00Z", "2026-03-02T10:61:00Z"]
WORDS = ["INFO", "[ERROR]", "warn:", "E", "Fatal", "notice", "GET", "", "INFO\tx", "caf\u00e9", "(crit)", "INFO\u00a0"]
TAILS = ["GET /x 200 20ms", "", "  padded", "\tTabbed", "\u00a0nbsp", "user=u1 ok"]

lines = st.builds(lambda a, sep1, b, sep2, c: a + sep1 + b + sep2 + c, st.sampled_from(STAMPS),
                  st.sampled_from([" ", "  ", "\t", ""]), st.sampled_from(WORDS), st.sampled_from([" ", "  ", ""]),
                  st.sampled_from(TAILS))


def _spans(texts):
    data = "\n".join(texts).encode()
    buf = np.frombuffer(data, np.uint8)
    lengths = np.array([len(t.encode()) for t in texts], np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64)
    return buf, starts, starts + lengths


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, min_size=1, max_size=20), st.sampled_from(["UTC", "Europe/Paris"]))
def test_kernel_equals_parse_plain_where_it_applies(texts, zone):
    buf, starts, ends = _spans(texts)
    ok, garbage, ts, level, cstart, _year, _month = pk.plain_lines(buf, starts, ends, zone == "UTC",
                                                                    *pk.kernel_args())
    for i, text in enumerate(texts):
        if not ok[i]:
            continue
        parser = RecordParser(format="plain", timezone=zone)
        parser.timestamps.parse("2026-01-01T00:00:00Z")  # the kernel's lines are read once ISO is learned
        record = twins.plain_lines_py(parser, [clean_text(text.encode())])[0]
        if garbage[i]:  # ISO shape, impossible values: no time, counted
            assert record.ts is None and np.isnan(ts[i]), text
            assert parser.stats["unparsed_timestamps"] == 1, text
        else:
            assert record.ts == ts[i], text
        assert record.level == level[i], text
        assert record.content == bytes(buf[cstart[i]:ends[i]]).decode(), text


def test_common_lines_take_the_fast_path():
    texts = ["2026-03-02T10:00:%02d.%03dZ INFO web-1 GET /item/%d 200 20ms" % (i % 60, i, i) for i in range(100)]
    buf, starts, ends = _spans(texts)
    ok, garbage = pk.plain_lines(buf, starts, ends, True, *pk.kernel_args())[:2]
    assert ok.all() and not garbage.any()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(lines, st.sampled_from(["Jun 14 15:16:01 host app: x", "no stamp", "{\"message\": 1}",
                                                  "081109 203615 INFO x"])), min_size=1, max_size=30))
def test_parse_columns_with_fast_path_equals_parse_many(texts):
    data = ("\n".join(texts) + "\n").encode()
    columns = parse_columns(RecordParser(format="auto", default_year=2026), data)
    records = RecordParser(format="auto", default_year=2026).parse_many([t.encode() for t in texts])
    for i, record in enumerate(records):
        expected_ts = np.nan if record.ts is None else record.ts
        assert np.isnan(columns.ts[i]) and np.isnan(expected_ts) or columns.ts[i] == expected_ts, texts[i]
        assert columns.level[i] == record.level, texts[i]
        assert columns.content(i) == record.content, texts[i]
        assert columns.fields(i) == record.fields, texts[i]
    assert columns_parser_stats(data) == parse_many_stats(texts)


def columns_parser_stats(data):
    parser = RecordParser(format="auto", default_year=2026)
    parse_columns(parser, data)
    return parser.stats


def parse_many_stats(texts):
    parser = RecordParser(format="auto", default_year=2026)
    parser.parse_many([t.encode() for t in texts])
    return parser.stats
