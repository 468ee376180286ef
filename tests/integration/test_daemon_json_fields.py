"""The real daemon mines numeric JSON fields as parameters of their line's template; an input's
json_numeric_fields caps them, and fields past the cap are counted in /metrics and logged."""
import json
import os

from tests.integration.daemon_harness import Daemon

INPUT = ("[[shop]]\ntype = file\npath = %(logs)s/shop.jsonl\nstart_at = beginning\nformat = jsonl\n"
         "json_numeric_fields = 1\n")


def order_lines(n):
    return "".join(json.dumps({"timestamp": "2026-03-02T10:%02d:%02dZ" % (i // 60, i % 60), "level": "INFO",
                               "message": "order placed seq=%d" % i, "queue_depth": i % 7, "duration_ms": 100 + i,
                               "bytes": 512, "user": "u%d" % i}) + "\n" for i in range(n))


def test_numeric_fields_past_the_cap_are_counted_and_logged(tmp_path):
    n = 300
    daemon = Daemon(tmp_path, workers=1, inputs=INPUT % {"logs": str(tmp_path / "logs")})
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "shop.jsonl"), "a") as f:
            f.write(order_lines(n))
        counts = daemon.wait_scored(n, timeout=60)
        assert sorted(counts) == list(range(n)), daemon.log_tail()
        with open(daemon.scored) as f:
            records = [json.loads(line) for line in f]
        # in key order bytes, duration_ms, queue_depth: only the first is mined
        assert {r["template"] for r in records} == {"order placed seq=<*> bytes=<*>"}
        assert daemon.metric("json_fields_over_cap_total") == 2 * n
        assert "json_numeric_fields = 1" in daemon.log_tail(200)
    finally:
        daemon.stop()
