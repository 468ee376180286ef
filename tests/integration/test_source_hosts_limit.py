"""The real daemon at [detection][[tier2]] max_hosts_per_source: a syslog-style prefix names each line's
host; hosts of a source beyond the bound are counted for their source only, their lines counted in
/metrics and logged once."""
from tests.integration.daemon_harness import Daemon

INPUTS = "[[fleet]]\ntype = file\npath = {logs}/fleet.log\nstart_at = beginning\n"
CONFIG = "[detection]\n  [[tier2]]\n  max_hosts_per_source = 2\n"
HOSTS = ("web-1", "web-2", "web-3", "web-4")


def test_hosts_past_max_hosts_per_source_are_counted_and_logged_once(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS.replace("{logs}", str(tmp_path / "logs")), extra=CONFIG)
    try:
        daemon.start()
        # nginx on four hosts, a line each in turn: the first two hosts seen are counted apart, the
        # lines of the other two (half of them, once the prefix is trusted) are not
        lines = ["2026-03-02T10:%02d:%02d.%03dZ INFO %s nginx[%d]: GET /api/cart 200 seq=%d\n"
                 % (i // 600, i // 10 % 60, i % 10 * 100, HOSTS[i % 4], 100 + i % 4, i) for i in range(400)]
        with open(daemon.logs + "/fleet.log", "w") as f:
            f.writelines(lines)
        counts = daemon.wait_scored(400, timeout=120)
        assert len(counts) == 400, daemon.log_tail()
        dropped = daemon.metric("source_hosts_dropped_lines_total")
        assert dropped is not None and 150 <= dropped <= 200, (dropped, daemon.log_tail())
        log = daemon.log_tail(400)
        assert log.count("max_hosts_per_source = 2") == 1, log
        assert "'web-3'" in log or "'web-4'" in log
        assert daemon.stop() == 0
    finally:
        daemon.kill()
