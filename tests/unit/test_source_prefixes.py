"""Sources inside one file: prefix kernels against regex twins, the share test, source_fields, syslog app-name."""
import re

import numpy as np
import pytest

from anomaly_detector.parsing import prefix_kernels as pk
from anomaly_detector.parsing.records import RecordParser, parse_columns
from anomaly_detector.parsing.sources import MIN_EVIDENCE_LINES, SourceFieldsError

# Plain-Python twins of the kernels: the shapes the module docstring promises, as regexes.
_SYSLOG = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}) ([A-Za-z][A-Za-z0-9._/@-]{0,47})(?:\[[A-Za-z0-9]{1,10}\])?:(?: +|$)")
_COMPOSE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,63}) +\|(?: |$)")
_REPLICA = re.compile(r"(.+)[-_][0-9]+\Z")


def syslog_twin(line):
    """(service, body) of a syslog-style prefix, or None: the service is the program before its first `/`."""
    m = _SYSLOG.match(line)
    return (m.group(2).split("/", 1)[0], line[m.end():]) if m else None


def compose_twin(line):
    """(service, rest of the line) of a compose prefix, or None."""
    m = _COMPOSE.match(line)
    if not m:
        return None
    name = m.group(1)
    replica = _REPLICA.match(name)
    return (replica.group(1) if replica else name), line[m.end():]


def run_kernel(kernel, lines):
    data = "".join(line + "\n" for line in lines).encode()
    buf = np.frombuffer(data, np.uint8)
    ends = np.cumsum([len(line.encode()) + 1 for line in lines]) - 1
    starts = ends - np.array([len(line.encode()) for line in lines])
    ns, ne, body = kernel(buf, starts.astype(np.int64), ends.astype(np.int64))
    out = []
    for i in range(len(lines)):
        if ns[i] < 0:
            assert body[i] == starts[i]
            out.append(None)
        else:
            out.append((data[ns[i]:ne[i]].decode(), data[body[i]:ends[i]].decode()))
    return out


SYSLOG_POSITIVE = [
    ("web-1 nginx: 10.0.0.5 GET /cart 200 123", ("nginx", "10.0.0.5 GET /cart 200 123")),
    ("db-1.prod.example postgres[4242]: checkpoint complete", ("postgres", "checkpoint complete")),
    ("mail01 postfix/smtpd[77]: connect from x", ("postfix", "connect from x")),
    ("mail01 postfix-out/submission/smtpd[7]: x", ("postfix-out", "x")),
    ("h a@b.service/x: y", ("a@b.service", "y")),
    ("host1 systemd:", ("systemd", "")),
    ("h kernel:   spaces after", ("kernel", "spaces after")),
]
SYSLOG_NEGATIVE = [
    "Connection closed:reset",               # no space after the colon
    "ERROR db: timeout",                      # shape fits, but alone it is text (see the share tests)
    "took 12:30 ms",                          # a time, not a tag
    "10.0.0.5 GET /cart 200",                 # no colon
    "db: timeout",                            # one token: no host
    "web-1 9nginx: starts with a digit",
    "web-1 nginx[12: unclosed pid",
    "a b c: three tokens",
    "http://host x: url",
    "",
]
COMPOSE_POSITIVE = [
    ("web-1  | GET /x", ("web", "GET /x")),
    ("api-12 | 2026-03-02T10:00:01Z INFO up", ("api", "2026-03-02T10:00:01Z INFO up")),
    ("shop_db_1  |   padded", ("shop_db", "  padded")),
    ("redis |", ("redis", "")),
    ("worker-a | no replica", ("worker-a", "no replica")),
]
COMPOSE_NEGATIVE = ["a|b", "two words | x", "web-1 |x", "| lead", "web-1  ", "x" * 70 + " | long"]


@pytest.mark.parametrize("line,want", SYSLOG_POSITIVE)
def test_syslog_prefix_shapes(line, want):
    assert syslog_twin(line) == want
    assert run_kernel(pk.syslog_prefixes, [line]) == [want]


def test_syslog_prefix_negatives_equal_the_twin():
    got = run_kernel(pk.syslog_prefixes, SYSLOG_NEGATIVE)
    assert got == [syslog_twin(line) for line in SYSLOG_NEGATIVE]
    assert got[1] == ("db", "timeout") and got.count(None) == len(SYSLOG_NEGATIVE) - 1


@pytest.mark.parametrize("line,want", COMPOSE_POSITIVE)
def test_compose_prefix_shapes(line, want):
    assert compose_twin(line) == want
    assert run_kernel(pk.compose_prefixes, [line]) == [want]


def test_compose_negatives_and_random_lines_equal_the_twin():
    rng = np.random.default_rng(3)
    pieces = ["web-1", "a", "9x", "x" * 40, "y" * 30, " ", "  ", "|", ": ", ":", "[12]", "[", "]", "nginx",
              "/", "@", "_2", "-", ".", "é", "\t"]
    lines = COMPOSE_NEGATIVE + SYSLOG_NEGATIVE + [rng.choice(["", "web-1", "a-1 "]) + "".join(rng.choice(pieces, rng.integers(0, 7)))
                                                   for _ in range(20000)]
    assert run_kernel(pk.compose_prefixes, COMPOSE_NEGATIVE) == [None] * len(COMPOSE_NEGATIVE)
    compose = run_kernel(pk.compose_prefixes, lines)
    syslog = run_kernel(pk.syslog_prefixes, lines)
    assert compose == [compose_twin(line) for line in lines]
    assert syslog == [syslog_twin(line) for line in lines]
    assert sum(x is not None for x in compose) > 50 and sum(x is not None for x in syslog) > 50


def interleaved(n=90, shape="{host} {prog}: {msg}"):
    services = [("web-1", "nginx"), ("api-2", "checkout[31]"), ("db-1", "postgres")]
    out = []
    for i in range(n):
        host, prog = services[i % 3]
        msg = "request %d done in %d ms" % (i, i % 17)
        out.append("2026-03-02T10:%02d:%02d.000Z INFO %s" % (i // 60, i % 60, shape.format(host=host, prog=prog, msg=msg)))
    return "".join(line + "\n" for line in out).encode()


def sources_of(columns):
    return [columns.sources[k] for k in columns.source_id.tolist()]


def test_syslog_style_prefix_names_the_program_and_leaves_the_miner_the_message():
    cols = parse_columns(RecordParser(source="shop", source_prefix="auto"), interleaved())
    assert sources_of(cols)[:3] == ["nginx", "checkout", "postgres"]
    assert set(sources_of(cols)) == {"nginx", "checkout", "postgres"}
    assert cols.content(0) == "request 0 done in 0 ms"
    assert cols.level[0] == 2 and cols.ts[0] == 1772445600.0


def hosts_of(columns):
    return [columns.hosts[k] if k >= 0 else None for k in columns.host_id.tolist()]


def test_syslog_style_prefix_names_the_host_of_each_line_beside_its_program():
    text = interleaved(60, "{host} {prog}: {msg}").replace(b"api-2 checkout", b"web-2 nginx")
    cols = parse_columns(RecordParser(source="shop", source_prefix="auto"), text + b"2026-03-02T11:00:00.000Z INFO a line without any tag\n")
    assert sources_of(cols)[:3] == ["nginx", "nginx", "postgres"]      # replicas stay one source
    assert hosts_of(cols)[:3] == ["web-1", "web-2", "db-1"]
    assert hosts_of(cols)[-1] is None and sources_of(cols)[-1] == "shop"
    assert hosts_of(cols.lines(1, 3)) == ["web-2", "db-1"]
    off = parse_columns(RecordParser(source="shop", source_prefix="off"), text)
    assert set(off.host_id.tolist()) == {-1} and off.hosts == []


def test_a_host_field_that_source_fields_does_not_name_is_the_host():
    parser = RecordParser(source="shop", log_format=FORMAT, source_fields=["Program"])
    cols = parse_columns(parser, interleaved(30) + b"not matching the header\n")
    assert hosts_of(cols)[:3] == ["web-1", "api-2", "db-1"] and hosts_of(cols)[-1] is None
    both = parse_columns(RecordParser(source="shop", log_format=FORMAT, source_fields=["Host", "Program"]),
                         interleaved(6))
    assert set(both.host_id.tolist()) == {-1}      # the host is in the source's name already


def test_off_keeps_one_source_and_the_whole_text():
    cols = parse_columns(RecordParser(source="shop", source_prefix="off"), interleaved())
    assert set(sources_of(cols)) == {"shop"}
    assert cols.content(0) == "web-1 nginx: request 0 done in 0 ms"


def test_ordinary_messages_with_colons_are_not_a_prefix():
    words = ["Connection closed: reset by peer", "ERROR db: timeout after 3 s", "user login: ok",
             "GET /cart 200", "cache hit ratio 0.93", "queue depth 12", "worker started", "retrying in 5 s"]
    text = "".join("2026-03-02T10:00:%02dZ INFO %s\n" % (i % 60, words[i % len(words)]) for i in range(400)).encode()
    parser = RecordParser(source="app", source_prefix="auto")
    cols = parse_columns(parser, text)
    assert set(sources_of(cols)) == {"app"}
    assert cols.content(0) == "Connection closed: reset by peer"


def test_one_off_prefix_line_in_a_plain_file_is_not_trusted():
    lines = ["2026-03-02T10:00:%02dZ INFO worker took %d ms" % (i % 60, i) for i in range(200)]
    lines[50] = "2026-03-02T10:00:50Z INFO web-1 nginx: stray"
    cols = parse_columns(RecordParser(source="app", source_prefix="auto"), ("\n".join(lines) + "\n").encode())
    assert set(sources_of(cols)) == {"app"}


def test_a_single_line_batch_is_no_evidence_but_votes_carry_over():
    parser = RecordParser(source="shop", source_prefix="auto")
    lines = interleaved(MIN_EVIDENCE_LINES * 2).splitlines(keepends=True)
    first = parse_columns(parser, lines[0])
    assert sources_of(first) == ["shop"]
    for line in lines[1:MIN_EVIDENCE_LINES]:
        parse_columns(parser, line)
    later = parse_columns(parser, lines[MIN_EVIDENCE_LINES])
    assert sources_of(later) != ["shop"]
    assert later.content(0).startswith("request ")


def test_unprefixed_lines_of_a_trusted_file_keep_the_input_source():
    text = interleaved(60) + b"2026-03-02T10:05:00Z INFO plain message without prefix\n"
    cols = parse_columns(RecordParser(source="shop", source_prefix="auto"), text)
    assert sources_of(cols)[-1] == "shop"


def test_docker_compose_prefix_is_cut_before_the_stamp_is_read():
    lines = []
    for i in range(60):
        name = ["web-1", "web-2", "api-1"][i % 3]
        lines.append("%-6s | 2026-03-02T10:00:%02d.000Z WARN GET /x %d" % (name, i, i))
    cols = parse_columns(RecordParser(source="compose", source_prefix="auto"), ("\n".join(lines) + "\n").encode())
    assert set(sources_of(cols)) == {"web", "api"}
    assert cols.ts[1] == 1772445601.0 and cols.level[1] == 4
    assert cols.content(1) == "GET /x 1"


def test_compose_service_carrying_a_syslog_prefix_takes_the_program():
    lines = ["rsyslog-1  | host%d sshd[9]: accepted key %d" % (i % 2, i) for i in range(40)]
    cols = parse_columns(RecordParser(source="c", source_prefix="auto"), ("\n".join(lines) + "\n").encode())
    assert set(sources_of(cols)) == {"sshd"}
    assert cols.content(0) == "accepted key 0"


FORMAT = "<Timestamp> <Level> <Host> <Program>: <Content>"


def test_source_fields_join_header_values():
    parser = RecordParser(source="shop", log_format=FORMAT, source_fields=["Host", "Program"])
    cols = parse_columns(parser, interleaved(30) + b"not matching the header\n")
    names = sources_of(cols)
    assert names[:3] == ["web-1/nginx", "api-2/checkout[31]", "db-1/postgres"]
    assert names[-1] == "shop"
    assert cols.content(0) == "request 0 done in 0 ms"
    one = parse_columns(RecordParser(source="shop", log_format=FORMAT, source_fields=["Program"]), interleaved(6))
    assert sources_of(one)[:3] == ["nginx", "checkout[31]", "postgres"]


def test_source_fields_need_fields_of_the_log_format():
    with pytest.raises(SourceFieldsError, match="Service is not a field of log_format"):
        RecordParser(log_format=FORMAT, source_fields=["Service"])
    with pytest.raises(SourceFieldsError, match="needs a log_format"):
        RecordParser(source_fields=["Host"])
    with pytest.raises(SourceFieldsError, match="Content is the message"):
        RecordParser(log_format=FORMAT, source_fields=["Content"])


def test_max_sources_keeps_extra_names_on_the_input_source():
    lines = ["2026-03-02T10:00:%02dZ INFO h prog%d: x" % (i % 60, i % 5) for i in range(100)]
    parser = RecordParser(source="in", source_prefix="auto", max_sources=3)
    cols = parse_columns(parser, ("\n".join(lines) + "\n").encode())
    assert set(sources_of(cols)) == {"prog0", "prog1", "prog2", "in"}
    assert parser.line_sources.refused == 40


def test_syslog_messages_take_their_app_name():
    text = b"<34>1 2026-03-02T10:00:00Z web-1 nginx 12 - - GET /\n<13>Mar  2 10:00:01 db-1 postgres[5]: ok\n"
    cols = parse_columns(RecordParser(source="sys", source_prefix="auto"), text)
    assert sources_of(cols) == ["nginx", "postgres"]
    cols = parse_columns(RecordParser(source="sys", source_prefix="off"), text)
    assert sources_of(cols) == ["sys", "sys"]


def test_a_program_and_its_sub_programs_are_one_service():
    """postfix logs one mail as postfix/smtpd, postfix/cleanup, postfix/qmgr: one service, not three."""
    lines = ["2026-03-02T10:00:%02dZ INFO mail-1 postfix/%s[%d]: Q%d: step" % (i % 60, sub, 10 + i, i)
             for i in range(30) for sub in ("smtpd", "cleanup", "qmgr")]
    cols = parse_columns(RecordParser(source="in", source_prefix="auto"), ("\n".join(lines) + "\n").encode())
    assert set(sources_of(cols)) == {"postfix"}
    text = b"<22>Mar  2 10:00:01 mail-1 postfix/smtpd[5]: connect\n<22>Mar  2 10:00:02 mail-1 postfix/qmgr[6]: ok\n"
    assert sources_of(parse_columns(RecordParser(source="sys", source_prefix="auto"), text)) == ["postfix", "postfix"]


def test_json_lines_keep_their_source_key_and_a_prefix_in_the_message_names_the_rest():
    lines = ['{"timestamp": "2026-03-02T10:00:%02dZ", "source": "billing", "message": "web-1 nginx: GET /"}' % i
             for i in range(30)]
    lines += ['{"timestamp": "2026-03-02T10:01:%02dZ", "message": "web-1 nginx: GET /x"}' % i for i in range(30)]
    cols = parse_columns(RecordParser(source="http", source_prefix="auto"), ("\n".join(lines) + "\n").encode())
    names = sources_of(cols)
    assert set(names[:30]) == {"billing"} and set(names[30:]) == {"nginx"}
    assert cols.content(0) == "web-1 nginx: GET /" and cols.content(30) == "GET /x"
