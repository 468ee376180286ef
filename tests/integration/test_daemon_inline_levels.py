"""The real daemon reads a level from the message of syslog lines, whose header has none ([parsing] inline_levels).

A year-less RFC 3164 file (`Mar  5 00:00:02 db-1 postgres[4123]: [7-1] FATAL:  ...`): by default
FATAL lines are critical (flagged on sight by the critical rule) and every line with a level word
is counted in anomaly_detector_lines_inline_level_total; with inline_levels = off the same lines
stay of unknown level: not flagged, not counted.
"""
import json
import os

from tests.integration.daemon_harness import Daemon

N = 400
FATAL_EVERY = 50
ERROR_EVERY = 10


def syslog_lines(n):
    out = []
    for i in range(n):
        stamp = "Mar  5 %02d:%02d:%02d" % (i // 3600, i // 60 % 60, i % 60)
        if i % FATAL_EVERY == FATAL_EVERY - 1:
            body = "db-1 postgres[4123]: [%d-1] FATAL:  the database system is in recovery mode" % (i % 9 + 1)
        elif i % ERROR_EVERY == ERROR_EVERY - 1:
            body = "web-1 nginx: 2026/03/05 00:00:%02d [error] 12#12: *%d upstream timed out" % (i % 60, i)
        else:
            body = "db-1 postgres[4123]: [%d-1] LOG:  duration: %d.5 ms  statement: SELECT 1" % (i % 9 + 1, i % 7)
        out.append("%s %s seq=%d\n" % (stamp, body, i))
    return "".join(out)


def _run(tmp_path, extra):
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "app.log"), "w") as f:
            f.write(syslog_lines(N))
        counts = daemon.wait_scored(N, timeout=60)
        assert sorted(counts) == list(range(N)), daemon.log_tail()
        records = {}
        with open(daemon.scored) as f:
            for line in f:
                record = json.loads(line)
                records[int(record["message"].rsplit("seq=", 1)[1])] = record
        return records, daemon.metric("lines_inline_level_total")
    finally:
        daemon.stop()


FATAL = [i for i in range(N) if i % FATAL_EVERY == FATAL_EVERY - 1]


def test_fatal_lines_are_critical_by_default(tmp_path):
    records, counted = _run(tmp_path, "")
    assert counted == N    # every line states its level: LOG (info), [error], FATAL
    assert all(records[i]["anomaly"] for i in FATAL), [records[i] for i in FATAL[:2]]
    assert not any(records[i]["anomaly"] for i in range(0, N, FATAL_EVERY))


def test_inline_levels_off_leaves_them_unknown(tmp_path):
    records, counted = _run(tmp_path, "[parsing]\ninline_levels = off\n")
    assert counted == 0
    assert not any(records[i]["anomaly"] for i in FATAL)
