"""The real daemon meets a long adversarial line under the costliest rule pattern the validator accepts.

Accepted patterns are at worst quadratic in what they read; `[rules] max_scan_bytes` bounds what
that is, so the line costs a fraction of a second instead of stalling its worker past the heartbeat.
The cut is counted in /metrics and logged.
"""
import os

from tests.integration.daemon_harness import Daemon, numbered_line

RULE = "[rules]\n[[kv]]\npattern = (?:\\s+\\w+)*\\s*\\w+=\nthreshold = 1000\n"


def test_a_long_adversarial_line_under_a_quadratic_rule_is_cut_counted_and_the_rest_scored(tmp_path):
    daemon = Daemon(tmp_path, workers=1, extra=RULE)
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "app.log"), "a") as f:
            f.write(numbered_line(0) + "2026-03-02T10:00:00Z INFO web-1" + " a" * 30_000 + "\n")
            f.write("".join(numbered_line(i) for i in range(1, 200)))
        counts = daemon.wait_scored(200, timeout=60)
        assert sorted(counts) == list(range(200)), daemon.log_tail()
        assert daemon.metric("rule_scans_cut_total") == 1
        assert "searched by their head only" in daemon.log_tail(200)
        assert not os.path.exists(os.path.join(daemon.dir, "state", "dead-letter", "dead-letter.jsonl"))
    finally:
        daemon.stop()
