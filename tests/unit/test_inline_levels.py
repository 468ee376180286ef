"""Levels read from a message's first words: the kernel against its twin, the conventions and the
prose it must not read, and the two parse paths (parse_columns, RecordParser.parse) giving the same levels."""
import glob
import random

import numpy as np
import pytest

from anomaly_detector.parsing.batch import (
    LEVEL_CRITICAL,
    LEVEL_DEBUG,
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_NOTICE,
    LEVEL_UNKNOWN,
    LEVEL_WARNING,
)
from anomaly_detector.parsing.inline_levels import MAX_SCAN_BYTES, level_of_text, line_levels
from anomaly_detector.parsing.inline_levels_twins import line_levels_py
from anomaly_detector.parsing.records import RecordParser, parse_columns

CONVENTIONS = [
    ("[7-1] ERROR:  deadlock detected", LEVEL_ERROR),                           # postgres
    ("[3-1] FATAL:  password authentication failed for user \"x\"", LEVEL_CRITICAL),
    ("[12-1] LOG:  checkpoint starting: time", LEVEL_INFO),
    ("PANIC:  could not write to file \"pg_wal/xlogtemp.1\"", LEVEL_CRITICAL),
    ("2026/03/05 00:00:02 [error] 123#0: *5 upstream timed out", LEVEL_ERROR),  # nginx error log
    ("2026/03/05 00:00:02 [emerg] 1#1: bind() to 0.0.0.0:80 failed", LEVEL_CRITICAL),
    ("2026/03/05 00:00:02 [warn] 12#12: *1 an upstream response is buffered", LEVEL_WARNING),
    ("[http-nio-8080-exec-3] ERROR HikariPool-1 - Connection is not available", LEVEL_ERROR),  # logback
    ("00:00:02.123 [main] WARN  c.e.Pool - slow", LEVEL_WARNING),
    ("2026-03-05 00:00:02.123 [main] INFO  c.e.App - started", LEVEL_INFO),
    ("ERROR:root:could not open file", LEVEL_ERROR),                              # python logging
    ("WARNING:urllib3.connectionpool:Retrying", LEVEL_WARNING),
    ("[Thu Mar 05 00:00:02.1 2026] [core:error] [pid 1] AH00124: too many redirects", LEVEL_ERROR),  # apache
    ("[Thu Mar 05 00:00:02 2026] [notice] Apache configured -- resuming", LEVEL_NOTICE),
    ("PHP Warning:  Undefined variable $x in /srv/a.php on line 3", LEVEL_WARNING),
    ("PHP Fatal error:  Uncaught Error: Call to undefined function", LEVEL_CRITICAL),
    ("PHP Parse error:  syntax error, unexpected end of file", LEVEL_ERROR),
    ("error: kex_exchange_identification: Connection closed by remote host", LEVEL_ERROR),  # openssh
    ("sshd[77]: error: maximum authentication attempts exceeded", LEVEL_ERROR),
    ("warning: hostname example.com does not resolve to address 10.0.0.1", LEVEL_WARNING),  # postfix
    ("time=\"2026-03-05T00:00:02Z\" level=info msg=\"ignoring event\"", LEVEL_INFO),  # logfmt
    ("ts=2026-03-05T00:00:02Z lvl=\"warn\" msg=slow", LEVEL_WARNING),
    ("severity=ERROR msg=x", LEVEL_ERROR),
    ("SEVERE: Servlet.service() threw exception", LEVEL_ERROR),                   # java.util.logging
    ("DEBUG starting worker 3", LEVEL_DEBUG),
    ("web-1 nginx: 2026/03/05 00:00:02 [crit] 1#1: *3 SSL_do_handshake() failed", LEVEL_CRITICAL),
    ("db-1 postgres[4123]: [7-1] ERROR:  deadlock detected", LEVEL_ERROR),      # a prefix not cut yet
    ("1:M 06 Dec 2026 10:00:00.123 # Background saving error", LEVEL_WARNING),    # redis 3+
    ("4017:C 06 Dec 2026 10:00:00.123 * DB saved on disk", LEVEL_NOTICE),
    ("12:S 06 Dec 2026 10:00:00.123 - Accepted 10.0.0.5:6379", LEVEL_INFO),
    ("7:X 06 Dec 2026 10:00:00.123 . Client closed connection", LEVEL_DEBUG),
    ("[4018] 14 Nov 07:01:22.119 * Background saving terminated with success", LEVEL_NOTICE),  # redis 2
    ("cache-1 redis-server[812]: 812:M 05 Mar 2026 00:00:03.000 # Background saving error", LEVEL_WARNING),
]
PROSE = [
    "connection error while reading",
    "0 errors, 3 warnings",
    "Error in a sentence",
    "Error: could not connect",
    "job finished with error: timeout",
    "the ERROR counter was reset",
    "retrying after ERROR 500",
    "ERRORS: 0",
    "ERROR_CODE=12 returned",
    "ALERT exited abnormally with [1]",
    "LOG rotated",
    "[main] starting",
    "[7-1] STATEMENT:  select 1",
    "levels=error",
    "level==error",
    "user Error logged in",
    "-ERR wrong number of arguments",
    "I/O error on device sda",
    "GET /info HTTP/1.1 200",
    "10.0.0.1 - - [05/Mar/2026:00:00:02 +0000] \"GET / HTTP/1.1\" 200",      # `-` after no redis head
    "1:Q 06 Dec 2026 10:00:00.123 # not a redis role",
    "1:M 06 Dec 2026 10:00:00.123 ## two marks",
    "[12a] 14 Nov 07:01:22.119 * not a pid",
]


def _spans(texts):
    data = [t.encode("utf-8") for t in texts]
    buf = np.frombuffer(b"\n".join(data) + b"\n", np.uint8)
    lengths = np.array([len(d) for d in data], np.int64)
    ends = np.cumsum(lengths + 1) - 1
    return buf, ends - lengths, ends.astype(np.int64)


@pytest.mark.parametrize("text,level", CONVENTIONS)
def test_conventions_are_read(text, level):
    assert level_of_text(text) == level


@pytest.mark.parametrize("text", PROSE)
def test_prose_is_not_read(text):
    assert level_of_text(text) == LEVEL_UNKNOWN


def _mutations(rng, texts, count):
    """Lines built from pieces of real conventions and prose, cut, re-cased and shuffled."""
    words = [w for t in texts for w in t.split()] + ["[error]]", "[a[error]", "[x]:warn]", "[:error]", "[]",
                                                     "level=\"warn'", "lvl=warn\"", "level=", "level=\"\"",
                                                     "PHP", "\t", "ERROR:", "error:", "Error:", "é", "ÉRROR",
                                                     "1:M", "[7]", "#", "*", "-", ".", "1:", ":M", "[]7]",
                                                     "redis-server[8]:", "06", "Dec", "10:00:00.000"]
    out = []
    for _ in range(count):
        picked = [rng.choice(words) for _ in range(rng.randint(0, 9))]
        text = " ".join(picked)
        if rng.random() < 0.2:
            text = text.upper() if rng.random() < 0.5 else text.lower()
        if rng.random() < 0.1:
            text = "x" * rng.randint(MAX_SCAN_BYTES - 20, MAX_SCAN_BYTES + 5) + " " + text
        out.append(text)
    return out


def _loghub_contents():
    import csv
    texts = []
    for path in sorted(glob.glob("/work/shared/data/loghub-2k/*/*_2k.log_structured.csv")):
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            texts += [row["Content"] for row in csv.DictReader(f)]
    return texts


def test_kernel_matches_twin():
    texts = [t for t, _ in CONVENTIONS] + PROSE
    texts += _mutations(random.Random(11), texts, 3000) + _loghub_contents()
    buf, starts, ends = _spans(texts)
    got = line_levels(buf, starts, ends)
    want = line_levels_py(buf, starts, ends)
    differ = [(texts[i], int(got[i]), int(want[i])) for i in np.flatnonzero(got != want)[:5]]
    assert differ == []
    assert (got != LEVEL_UNKNOWN).sum() > 100   # the comparison covered lines with levels


SYSLOG_LINES = [
    "Mar  5 00:00:02 db-1 postgres[4123]: [7-1] ERROR:  deadlock detected",
    "Mar  5 00:00:03 db-1 postgres[4123]: [8-1] LOG:  checkpoint starting: time",
    "Mar  5 00:00:04 web-1 nginx: 2026/03/05 00:00:04 [error] 1201#1201: *5 upstream timed out",
    "Mar  5 00:00:05 lb-1 sshd[99]: error: kex_exchange_identification: Connection closed by remote host",
    "Mar  5 00:00:06 lb-1 sshd[99]: Accepted publickey for admin from 10.0.0.1 port 5022",
    "Mar  5 00:00:07 batch-1 kernel: [ 12.345678] EXT4-fs error (device sdb1): ext4_find_entry",
    "Mar  5 00:00:08 web-2 shop-api[7]: [http-nio-8080-exec-3] ERROR HikariPool-1 - Connection is not available",
    "Mar  5 00:00:09 db-1 postgres[4124]: [9-1] FATAL:  the database system is shutting down",
    "2026-03-05T00:00:10Z WARN disk almost full",
    '{"message": "ERROR: in a JSON message without a level key", "timestamp": "2026-03-05T00:00:11Z"}',
    '{"message": "ERROR: JSON says info", "level": "info", "timestamp": "2026-03-05T00:00:12Z"}',
]
SYSLOG_LEVELS = [LEVEL_ERROR, LEVEL_INFO, LEVEL_ERROR, LEVEL_ERROR, LEVEL_UNKNOWN, LEVEL_UNKNOWN, LEVEL_ERROR,
                 LEVEL_CRITICAL, LEVEL_WARNING, LEVEL_ERROR, LEVEL_INFO]


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_both_parse_paths_give_the_same_levels(mode):
    lines = SYSLOG_LINES * 3
    buf = ("\n".join(lines) + "\n").encode()
    per_line = RecordParser(format="auto", inline_levels=mode, reference_time=1772700000.0)
    columns = parse_columns(RecordParser(format="auto", inline_levels=mode, reference_time=1772700000.0), buf)
    records = per_line.parse_many(line.encode() for line in lines)
    assert columns.level.tolist() == [r.level for r in records]
    want = SYSLOG_LEVELS * 3
    if mode == "off":   # only what the format itself says
        want = [lv if k in (8, 10) else LEVEL_UNKNOWN for k, lv in enumerate(SYSLOG_LEVELS)] * 3
    assert columns.level.tolist() == want
    assert per_line.stats["inline_levels"] == (0 if mode == "off" else 7 * 3)


def test_levels_are_read_after_a_syslog_prefix_is_cut():
    lines = [line for line in SYSLOG_LINES[:8]] * 5   # enough lines for the prefix to be trusted
    parser = RecordParser(format="auto", source_prefix="auto", reference_time=1772700000.0)
    columns = parse_columns(parser, ("\n".join(lines) + "\n").encode())
    assert columns.content(0) == "[7-1] ERROR:  deadlock detected"   # the prefix was cut
    assert columns.level.tolist() == SYSLOG_LEVELS[:8] * 5
    assert parser.stats["inline_levels"] == 6 * 5


def test_header_levels_win():
    parser = RecordParser(log_format="<Date> <Time> <Level> <Content>")
    columns = parse_columns(parser, b"2026-03-05 00:00:01 INFO ERROR: text of an info line\n"
                                    b"2026-03-05 00:00:02 - ERROR: a line whose header has no level word\n")
    assert columns.level.tolist() == [LEVEL_INFO, LEVEL_ERROR]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="inline_levels must be one of auto, off"):
        RecordParser(inline_levels="on")


def test_redis_marks_are_read_after_a_syslog_prefix_is_cut():
    """Redis's `#` (warning, also its failures) and `*` (notice) after a syslog prefix, in both parse paths."""
    lines = ["Mar  5 00:00:02 cache-1 redis-server[812]: 812:M 05 Mar 2026 00:00:02.000 * 10 changes in 300 "
             "seconds. Saving...",
             "Mar  5 00:00:03 cache-1 redis-server[812]: 812:M 05 Mar 2026 00:00:03.000 # Background saving error",
             "Mar  5 00:00:04 cache-1 redis-server[812]: 4100:C 05 Mar 2026 00:00:04.000 * DB saved on disk"] * 10
    buf = ("\n".join(lines) + "\n").encode()
    columns = parse_columns(RecordParser(format="auto", source_prefix="auto", reference_time=1772700000.0), buf)
    records = RecordParser(format="auto", source_prefix="auto", reference_time=1772700000.0).parse_many(
        line.encode() for line in lines)
    assert columns.content(1).startswith("812:M 05 Mar")      # the prefix was cut
    assert columns.level.tolist() == [LEVEL_NOTICE, LEVEL_WARNING, LEVEL_NOTICE] * 10
    assert [r.level for r in records] == columns.level.tolist()
