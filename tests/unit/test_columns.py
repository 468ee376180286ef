"""parse_columns on garbage stamps: equal to parse_many line by line and in its counters, and the
garbage is read by the stamp kernels (a stamp that does not parse costs no Python per line)."""
import numpy as np
import pytest

from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.framing import split_lines
from anomaly_detector.parsing.headers import LOGHUB_FORMATS, HeaderFormat
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.parsing.timestamps import STAMP_FIELDS, TimestampParser
from tests.unit.test_records import DATA, _compare

STYLES = ["HDFS", "Hadoop", "Spark", "Zookeeper", "Apache", "Linux", "Mac", "Android", "HealthApp"]


def _stamp_digits(data, log_format):
    """Positions of the digits inside the stamp fields of each line."""
    buf = np.frombuffer(data, dtype=np.uint8)
    header = HeaderFormat(log_format)
    starts, ends = split_lines(buf.copy())
    ok, fs, fe = header.split_batch(buf.copy(), starts, ends)
    mask = np.zeros(len(buf), dtype=np.bool_)
    for i in np.flatnonzero(ok).tolist():
        for j, name in enumerate(header.fields):
            if name in STAMP_FIELDS:
                mask[fs[i, j]:fe[i, j]] = True
    return np.flatnonzero(mask & (buf >= 48) & (buf <= 57))


def _redrawn(data, positions, seed):
    out = np.frombuffer(data, dtype=np.uint8).copy()
    out[positions] = np.random.default_rng(seed).integers(48, 58, size=len(positions), dtype=np.uint8)
    return out.tobytes()


@pytest.mark.parametrize("name", STYLES)
@pytest.mark.parametrize("garbage_from", ["start", "middle"])
def test_garbage_stamps_equal_parse_many_and_are_counted(name, garbage_from):
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    data = b"".join((DATA / name / f"{name}_2k.log").read_bytes().splitlines(keepends=True)[:400])
    digits = _stamp_digits(data, LOGHUB_FORMATS[name])
    if garbage_from == "middle":  # a valid first half teaches the recipe, then digits go random
        digits = digits[digits >= len(data) // 2]
    bad = _redrawn(data, digits, seed=len(name))
    for default_year in (2024, None):
        args = {"log_format": LOGHUB_FORMATS[name], "default_year": default_year}
        cols = _compare(args, bad)  # line by line and every counter, unparsed_timestamps included
        parser = RecordParser(**args)
        parse_columns(parser, bad)
        assert parser.stats["unparsed_timestamps"] > 0
        assert parser.stats["unparsed_timestamps"] <= parser.stats["no_timestamp"]
        assert np.isnan(cols.ts).sum() <= parser.stats["no_timestamp"]


@pytest.mark.parametrize("name", STYLES)
def test_garbage_stamps_take_the_kernel_not_python(name, monkeypatch):
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    data = (DATA / name / f"{name}_2k.log").read_bytes()
    bad = _redrawn(data, _stamp_digits(data, LOGHUB_FORMATS[name]), seed=1)
    calls = []
    real = TimestampParser.from_fields
    monkeypatch.setattr(TimestampParser, "from_fields", lambda self, fields: calls.append(1) or real(self, fields))
    for payload in (data, bad):
        calls.clear()
        parser = RecordParser(log_format=LOGHUB_FORMATS[name], default_year=2024)
        parse_columns(parser, payload)
        # the first lines teach the recipe; after that valid and garbage stamps are the kernel's (a
        # few lines the header or stamp kernel does not take, such as a stamp of another shape, remain)
        assert len(calls) <= 60, (name, payload is bad, len(calls))


def test_plain_iso_garbage_takes_the_kernel_and_equals_parse_many(monkeypatch):
    lines = []
    rng = np.random.default_rng(3)
    for i in range(3000):
        if i % 2:
            stamp = "%04d-%02d-%02d %02d:%02d:%02d,%03d" % tuple(rng.integers(0, 100, size=7) * [99, 1, 1, 1, 1, 1, 9])
        else:
            stamp = "2026-03-02 10:%02d:%02d,000" % (i // 60 % 60, i % 60)
        lines.append("%s INFO request %d served" % (stamp, i))
    data = ("\n".join(lines) + "\n").encode()
    _compare({"format": "plain"}, data)
    calls = []
    real = TimestampParser.parse_prefix
    monkeypatch.setattr(TimestampParser, "parse_prefix", lambda self, text: calls.append(1) or real(self, text))
    parser = RecordParser(format="plain")
    parse_columns(parser, data)
    assert len(calls) <= 10
    assert parser.stats["unparsed_timestamps"] >= 1000
