"""Property tests: hostile input to every parser never escapes, and the numba paths equal the Python ones."""
import math
import re

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing.framing import LineFramer, split_lines
from anomaly_detector.parsing.headers import LOGHUB_FORMATS, HeaderFormat, HeaderFormatError
from anomaly_detector.parsing.jsonl import parse_json_line_reason
from anomaly_detector.parsing.records import Record, RecordParser, parse_columns
from anomaly_detector.parsing.sanitize import clean_buffer
from anomaly_detector.parsing.syslog import parse_syslog
from anomaly_detector.parsing.timestamps import TimestampParser

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FORMATS = list(LOGHUB_FORMATS.values()) + [f.replace("<Label> ", "", 1) for f in
                                           (LOGHUB_FORMATS["BGL"], LOGHUB_FORMATS["Thunderbird"])]
# Lines that nearly fit the formats, so mutations reach deep into the matching.
SEEDS = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating",
    "2015-10-18 18:01:47,978 INFO [main] org.apache.MRAppMaster: Created MRAppMaster",
    "2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:2181:FastLeaderElection@774] - Notification",
    "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok",
    "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure;",
    "Jul  1 09:29:02 calvisitor-10 sandboxd[129] ([31211]): deny network-outbound",
    "03-17 16:13:38.811  1702  2395 D WindowManager: printFreezingDisplayLogs",
    "20171223-22:15:29:606|Step_LSC|30002312|onStandStepChanged 3579",
    "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed",
    "2016-09-28 04:30:30, Info                  CBS    Loaded Servicing Stack",
    "Dec 10 06:55:46 LabSZ sshd[24200]: Connection closed by 173.234.31.186 [preauth]",
    "[10.30 16:49:06] chrome.exe *64 - play.google.com:443 close",
    '{"message":"x","timestamp":"2026-03-02T10:00:00Z"}',
    "<13>1 2026-03-02T10:00:00Z host app - - [a@1 k=\"v\"] msg",
]
_ODD = st.sampled_from([" ", "  ", "\t", ":", "[", "]", "(", ")", "|", "-", ",", "@", "\u00a0", "\u3000", "\n",
                        "\x00", "é", "\ufffd", "0", "a", ": ", "] ", "\\"])


@st.composite
def mutated_line(draw):
    line = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(line)))
        if draw(st.booleans()):
            line = line[:pos] + draw(_ODD) + line[pos:]
        else:
            line = line[:pos] + line[pos + draw(st.integers(1, 3)):]
    return line


LINES = st.one_of(mutated_line(), st.text(max_size=80))


def _kernel_vs_regex(hf, lines):
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    buf = clean_buffer(np.frombuffer(data, dtype=np.uint8))
    starts, ends = split_lines(buf)
    raw = buf.tobytes()
    ok, fs, fe = hf.split_batch(buf, starts, ends)
    for i in range(len(starts)):
        text = raw[starts[i]:ends[i]].decode("utf-8")
        want = hf.match(text)
        if ok[i]:
            got = {f: raw[fs[i, j]:fe[i, j]].decode("utf-8") for j, f in enumerate(hf.fields)}
            assert got == want, text


@SETTINGS
@given(st.lists(LINES, min_size=1, max_size=8))
def test_all_formats_match_and_kernel_agree(lines):
    for fmt in FORMATS:
        hf = HeaderFormat(fmt)
        for line in lines:
            got = hf.match(line)
            assert got is None or set(got) == set(hf.fields)
        _kernel_vs_regex(hf, lines)


_FMT_PIECES = st.sampled_from(["<A>", "<B>", "<C>", "<Content>", " ", "  ", ":", "-", "\\[", "\\]", "\\|", ",",
                               "(", ")?", "@", "x", "<", "\\", "( \\(<D>\\))?", "(\\[<E>\\])?"])


_SEPS = st.sampled_from([" ", "  ", ": ", " - ", "\\|", " \\[", "\\] ", ":", ",", "@", "", " x ", "\\]: "])


@st.composite
def valid_format(draw):
    names = [f"F{i}" for i in range(draw(st.integers(0, 4)))]
    names.insert(draw(st.integers(0, len(names))), "Content")
    out = [draw(st.sampled_from(["", "\\[", " "]))]
    for name in names:
        piece = f"<{name}>"
        if name != "Content" and draw(st.integers(0, 5)) == 0:
            piece = f"({draw(_SEPS)}{piece})?"
        out.append(piece + draw(_SEPS))
    return "".join(out)


@SETTINGS
@given(st.one_of(valid_format(), st.lists(_FMT_PIECES, max_size=10).map("".join)), st.lists(LINES | st.text("ab :-[]|,@x", max_size=20),
                                                                   min_size=1, max_size=6), st.data())
def test_random_formats_compile_or_fail_cleanly(fmt, lines, draw):
    try:
        hf = HeaderFormat(fmt)
    except HeaderFormatError as exc:
        assert "\n" not in str(exc)
        return
    lines = lines + [_render(fmt, draw) for _ in range(4)]
    _kernel_vs_regex(hf, lines)
    oracle = _logparser_regex(fmt)
    for line in lines:
        if len(line) <= 24:  # the oracle backtracks exponentially on long lines
            m = oracle.search(line.strip())
            want = None if m is None else {k: v if v is not None else "" for k, v in m.groupdict().items()}
            assert hf.match(line) == want, (fmt, line)


def _render(fmt, draw):
    """A line written from the format: fields filled with short text, groups kept or dropped."""
    if draw.draw(st.booleans()):
        fmt = re.sub(r"\((.*?)\)\?", "", fmt)
    fmt = fmt.replace("(", "").replace(")?", "")
    filler = st.text("ab1 :-[]|@", max_size=5)
    line = re.sub(r"<[^<>]*>", lambda _: draw.draw(filler), fmt)
    return re.sub(r"\\(.)", r"\1", line).replace(" ", draw.draw(st.sampled_from([" ", "  ", "\t"])))


def _logparser_regex(fmt):
    """generate_logformat_regex of logpai/logparser: the reference for match()."""
    splitters = re.split(r"(<[^<>]+>)", fmt)
    regex = ""
    for k, part in enumerate(splitters):
        regex += re.sub(" +", "\\\\s+", part) if k % 2 == 0 else "(?P<%s>.*?)" % part.strip("<").strip(">")
    return re.compile("^" + regex + "$")


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_everywhere(data):
    f = LineFramer(max_line_bytes=50)
    lines = f.feed(data) + f.flush()
    assert all(len(x) <= 50 for x in lines)
    text = data.decode("utf-8", "replace")
    assert parse_syslog(text) is None or isinstance(parse_syslog(text), dict)
    parse_json_line_reason(text)
    TimestampParser().parse(text)
    for fmt in ("auto", "plain", "jsonl", "syslog"):
        assert isinstance(RecordParser(format=fmt).parse(data), Record)


def _same(parser_args, data):
    framer = LineFramer(max_line_bytes=parser_args.get("max_line_bytes", 102400))
    lines = framer.feed(data) + framer.flush()
    one = RecordParser(**parser_args)
    want = one.parse_many(lines)
    cols = parse_columns(RecordParser(**parser_args), data)
    assert cols.n == len(want)
    for i, rec in enumerate(want):
        ts = None if math.isnan(cols.ts[i]) else float(cols.ts[i])
        got = Record(ts, cols.sources[cols.source_id[i]], int(cols.level[i]), cols.content(i), cols.fields(i))
        assert got == rec
        assert not any(ord(c) < 32 and c != "\t" for c in got.content)


@SETTINGS
@given(st.lists(LINES.map(lambda s: s.encode("utf-8", "surrogatepass")) | st.binary(max_size=40), max_size=8),
       st.sampled_from(["\n", "\r\n"]), st.sampled_from(["auto", "plain", "jsonl", "syslog"]),
       st.sampled_from(["HDFS", "Zookeeper", "Apache", "HealthApp", "Linux", ""]), st.sampled_from([30, 102400]))
def test_parse_columns_equals_parse_many(lines, eol, fmt, dataset, limit):
    data = eol.encode().join(lines)
    log_format = LOGHUB_FORMATS[dataset] if dataset else ""
    _same({"format": fmt, "log_format": log_format, "max_line_bytes": limit, "default_year": 2024}, data)


@SETTINGS
@given(st.binary(max_size=200), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), max_size=10))
def test_split_batch_on_raw_bytes_stays_inside_the_spans(data, spans):
    buf = np.frombuffer(data, dtype=np.uint8)
    spans = [(min(a, b, len(data)), min(max(a, b), len(data))) for a, b in spans]
    starts = np.array([a for a, _ in spans], dtype=np.int64)
    ends = np.array([b for _, b in spans], dtype=np.int64)
    for fmt in FORMATS:
        hf = HeaderFormat(fmt)
        ok, fs, fe = hf.split_batch(buf, starts, ends)
        for i in np.flatnonzero(ok).tolist():
            assert (starts[i] <= fs[i]).all() and (fs[i] <= fe[i]).all() and (fe[i] <= ends[i]).all()


def test_split_batch_rejects_spans_outside_the_buffer():
    hf = HeaderFormat(LOGHUB_FORMATS["HDFS"])
    buf = np.zeros(4, dtype=np.uint8)
    for starts, ends in (([0], [5]), ([-1], [2]), ([3], [2])):
        try:
            hf.split_batch(buf, np.array(starts), np.array(ends))
        except ValueError:
            continue
        raise AssertionError("accepted a bad span")
