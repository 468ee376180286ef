"""The real daemon counts lines whose time stamp reads as no time (a stamp field holding garbage) in
/metrics, logs it once, and gives such lines the previous line's time."""
import json
import os

from tests.integration.daemon_harness import Daemon

INPUT = "[[app]]\ntype = file\npath = %(logs)s/app.log\nstart_at = beginning\nformat = plain\n"


def app_lines(n):
    """Every third line has an ISO-shaped stamp with impossible values (month 47, hour 93)."""
    lines = []
    for i in range(n):
        if i % 3 == 2:
            lines.append("2026-47-%02d 93:%02d:00,000 INFO request seq=%d served\n" % (i % 28 + 1, i % 60, i))
        else:
            lines.append("2026-03-02 10:%02d:%02d,000 INFO request seq=%d served\n" % (i // 60, i % 60, i))
    return "".join(lines)


def test_unparsed_stamps_are_counted_logged_and_carry_the_previous_time(tmp_path):
    n = 300
    daemon = Daemon(tmp_path, workers=1, inputs=INPUT % {"logs": str(tmp_path / "logs")})
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "app.log"), "a") as f:
            f.write(app_lines(n))
        counts = daemon.wait_scored(n, timeout=60)
        assert sorted(counts) == list(range(n)), daemon.log_tail()
        assert daemon.metric("timestamps_unparsed_total") == n // 3
        assert "anomaly_detector_timestamps_unparsed_total" in daemon.log_tail(200)
        with open(daemon.scored) as f:
            records = [json.loads(line) for line in f]
        assert len(records) == n
        assert all(r["ts"] is not None for r in records), "a garbage line carries the previous line's time"
    finally:
        daemon.stop()
