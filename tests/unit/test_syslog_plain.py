"""The year-less syslog line fast path (plain_kernels.syslog_lines + syslog_plain) equals
RecordParser._parse_plain: per line where the kernel takes it, and over whole buffers in order
(year inference, the Dec -> Jan roll-over, stamps that go backwards, Feb 29, garbage)."""
import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing import parsing_twins as twins
from anomaly_detector.parsing import plain_kernels as pk
from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.parsing.sanitize import clean_text
from anomaly_detector.parsing.timestamps import TimestampParser
from tests.unit.test_records import _compare

STAMPS = ["Mar  5 00:00:02", "Mar 05 00:00:02", "Dec 31 23:59:59", "Jan  1 00:00:01", "March 5 10:00:00",
          "mar 5 1:02:03", "Feb 29 10:00:00", "Feb 30 10:00:00", "Foo 12 10:00:00", "Jan 32 10:00:00",
          "Jan 00 10:00:00", "Jan 12 25:00:00", "Jan 12 24:00:00", "Jan 12 10:61:00", "Jan 12 10:00:60",
          "Jan 12 10:00:00.123", "Jan 12 10:00:00,5", "Jan 12 10:00:00:042", "Jan 12 10:00:00.1234567890",
          "Jan 12 10:00:00 UTC", "Jan 12 10:00:00Z", "Jan 12 10:00:00 +01:00", "Jan 12 10:00:00 -0500",
          "Jan 12 10:00:00 GMT", "Jul 12 10:00:00", "Aug  1 10:00:00", "Jan 123 10:00:00", "Jan 12 123:00:00",
          "MAR 5 10:00:00", "Jan\t5 10:00:00", "Jan 12 10:00:00.", "Jan 12 10:00:00 +0\u0663:00", "Nov 3 10:00",
          "Jan" + " " * 60 + "5 10:00:00", "Oct 1 10:00:00" + "." + "1" * 9, "Sep \u00a05 10:00:00", "Jun 14 15:16:01"]
AFTER = [" ", "  ", "\t", "", ",", "]", "-", "\u00a0", "x", ":"]
WORDS = ["web-1 nginx[12]: GET / 200", "ERROR", "[warn]", "INFO\tx", "caf\u00e9", "", "Gateway", "Uzbek", "ZZ top",
         "+01:00 x", "-1 y"]
TAILS = ["", " kernel: UFW BLOCK", "  padded", "\u00a0nbsp"]

lines = st.builds(lambda a, b, c, d: a + b + c + d, st.sampled_from(STAMPS), st.sampled_from(AFTER),
                  st.sampled_from(WORDS), st.sampled_from(TAILS))


def _spans(texts):
    data = "\n".join(texts).encode()
    buf = np.frombuffer(data, np.uint8)
    lengths = np.array([len(t.encode()) for t in texts], np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64)
    return buf, starts, starts + lengths


def _state(stamps):
    return (stamps._year, stamps._last_month, stamps.cached_format, stamps.learned_format, stamps.garbage)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, min_size=1, max_size=20), st.sampled_from(["UTC", "Europe/Paris"]))
def test_kernel_equals_its_twin_where_it_applies(texts, zone):
    buf, starts, ends = _spans(texts)
    ok, garbage, month, day, hour, sod, fnum, fdig, level, cstart = pk.syslog_lines(buf, starts, ends,
                                                                                    *pk.syslog_kernel_args())
    for i, text in enumerate(texts):
        if not ok[i]:
            continue
        parser = RecordParser(format="plain", timezone=zone, default_year=2026)
        parser.timestamps.parse("Jun  1 00:00:00")  # learned: the year-less shape, in 2026, month 6 (no
        # month from there rolls the year on or back)
        record = twins.syslog_lines_py(parser, [clean_text(text.encode())])[0]
        if not garbage[i]:
            try:
                local = dt.datetime(2026, month[i], day[i], tzinfo=dt.timezone.utc).timestamp()
            except ValueError:  # Feb 29 of 2026: garbage to TimestampParser; infer_years leaves it to Python
                assert record.ts is None, text
                continue
        assert record.level == level[i], text
        assert record.content == bytes(buf[cstart[i]:ends[i]]).decode(), text
        if garbage[i]:
            assert record.ts is None and parser.stats["unparsed_timestamps"] == 1, text
            continue
        local += sod[i] + (fnum[i] / 10 ** fdig[i] if fdig[i] else 0)
        offset = parser.timestamps.local_offset(2026, int(month[i]), int(day[i]), min(int(hour[i]), 23))
        assert record.ts == local - offset, text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(lines, st.sampled_from(["2026-03-02T10:00:00Z INFO iso", "no stamp", "{\"message\": 1}",
                                                  "<13>Mar  2 10:00:01 h app: sys", " Mar  2 10:00:01 h x"])),
                min_size=1, max_size=30),
       st.sampled_from([{"default_year": 2026}, {"reference_time": 1767312000.0},   # 2026-01-02
                        {"reference_time": 1772884800.0, "timezone": "Europe/Paris"}, {"format": "plain"}]),
       st.integers(0, 30))
def test_parse_columns_equals_parse_many_in_order(texts, args, cut):
    """Whole buffers, and the same lines cut in two buffers: every value, counter and the year state."""
    data = ("\n".join(texts) + "\n").encode()
    _compare(dict(args), data)
    head = ("\n".join(texts[:cut]) + "\n").encode() if cut and cut < len(texts) else b""
    parser, reference = RecordParser(**args), RecordParser(**args)
    parse_columns(parser, head)
    parse_columns(parser, data[len(head):])
    reference.parse_many([t.encode() for t in texts])
    assert _state(parser.timestamps) == _state(reference.timestamps)
    assert parser.stats == reference.stats


@pytest.mark.parametrize("path", ["columns", "python"])
def test_year_is_the_nearest_at_new_year_and_not_moved_by_a_step_back(path):
    """Dec -> Jan rolls over; a late Dec line after Jan is last year's (it used to push the year on,
    a year ahead, and every later line with it); Jul after Aug keeps its year."""
    texts = ["Dec 30 23:59:58 h a: x", "Dec 31 23:59:59 h a: x", "Jan  1 00:00:01 h a: y", "Dec 31 23:59:59 h a: late",
             "Jan 02 10:00:00 h a: z", "Jul 10 10:00:00 h a: z", "Aug  1 10:00:00 h a: z", "Jul 31 10:00:00 h a: back"]
    parser = RecordParser(format="auto", reference_time=1735732800.0)  # 2025-01-01T12:00Z: Dec 30 is 2024's
    if path == "columns":
        ts = parse_columns(parser, ("\n".join(texts) + "\n").encode()).ts.tolist()
    else:
        ts = [r.ts for r in parser.parse_many([t.encode() for t in texts])]
    want = [dt.datetime(*d, tzinfo=dt.timezone.utc).timestamp() for d in
            [(2024, 12, 30, 23, 59, 58), (2024, 12, 31, 23, 59, 59), (2025, 1, 1, 0, 0, 1), (2024, 12, 31, 23, 59, 59),
             (2025, 1, 2, 10), (2025, 7, 10, 10), (2025, 8, 1, 10), (2025, 7, 31, 10)]]
    assert ts == want
    assert parser.timestamps._year == 2025 and parser.timestamps._last_month == 7


def test_feb_29_of_a_common_year_is_garbage_in_both_paths():
    data = b"Feb 28 10:00:00 h a: x\nFeb 29 10:00:00 h a: y\nMar  1 10:00:00 h a: z\n"
    cols = _compare({"default_year": 2026}, data)
    assert np.isnan(cols.ts).sum() == 0 and cols.ts[1] == cols.ts[0]  # the garbage line carries the time
    leap = _compare({"default_year": 2024}, data)
    assert leap.ts[1] == leap.ts[0] + 86400


def test_syslog_file_lines_take_the_kernel_not_python(monkeypatch):
    texts = ["Mar %2d %02d:%02d:%02d web-%d nginx[%d]: GET /item/%d 200" % (1 + i // 2000, i // 100 % 24, i % 60,
                                                                            i % 60, i % 3, 100 + i, i)
             for i in range(5000)]
    texts[10] = "Mar 99 10:00:00 web-1 a garbage stamp"
    data = ("\n".join(texts) + "\n").encode()
    _compare({"default_year": 2026}, data)
    calls = []
    real = TimestampParser.parse_prefix
    monkeypatch.setattr(TimestampParser, "parse_prefix", lambda self, text: calls.append(1) or real(self, text))
    parser = RecordParser(default_year=2026)
    parse_columns(parser, data)
    assert calls == [] and parser.stats["unparsed_timestamps"] == 1


def test_mutated_stamps_equal_parse_many_and_leave_the_same_year_state():
    """Random edits in the first 24 characters of syslog file lines (digits, white space of several
    kinds, zone letters, other scripts' digits): every line, counter and the year state agree."""
    rng = np.random.default_rng(7)
    alphabet = list("0123456789 \t:.,+-ZUGTCMaejnbrpyulgsoctvd[]();|>") + ["\u00e9", "\u00a0", "\u0663", "\u2003"]
    months = ["Nov", "Dec", "Jan", "Feb"]
    for _ in range(10):
        texts = []
        for i in range(200):
            line = list("%s %2d %02d:%02d:%02d web-%d sshd[%d]: Accepted password for u%d"
                        % (months[i // 50], 1 + i % 28, i % 24, i % 60, (7 * i) % 60, i % 3, 100 + i, i % 5))
            for _ in range(int(rng.choice([0, 0, 1, 2]))):
                pos = int(rng.integers(0, 24))
                if rng.random() < 0.6:
                    line[pos] = alphabet[int(rng.integers(len(alphabet)))]
                else:
                    line.insert(pos, alphabet[int(rng.integers(len(alphabet)))])
            texts.append("".join(line))
        data = ("\n".join(texts) + "\n").encode()
        for args in ({"default_year": 2026}, {"reference_time": 1767312000.0, "timezone": "Europe/Paris"}):
            _compare(dict(args), data)
            parser, reference = RecordParser(**args), RecordParser(**args)
            parse_columns(parser, data)
            reference.parse_many([t.encode() for t in texts])
            assert _state(parser.timestamps) == _state(reference.timestamps)
