"""The real daemon at [detection][[tier2]] max_value_keys: parameter values that qualify for their own
volume baseline beyond it are refused, counted in /metrics and logged once."""
from tests.integration.daemon_harness import Daemon

INPUTS = "[[app]]\ntype = file\npath = {logs}/app.log\nstart_at = beginning\n"
CONFIG = "[detection]\n  [[tier2]]\n  max_value_keys = 2\n"
TABLES = ("orders", "users", "carts", "items", "stock")   # enough for the miner to make the table a <*>


def test_values_past_max_value_keys_are_counted_and_logged(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS.replace("{logs}", str(tmp_path / "logs")), extra=CONFIG)
    try:
        daemon.start()
        lines = ["2026-03-02T10:00:%02d.%03dZ INFO query on %s took %d ms seq=%d\n"
                 % (i // 10, i % 10 * 100, TABLES[i % 5], 20 + i, i) for i in range(400)]
        # the first lines make the template `query on <*> took <*> ms seq=<*>` (the batch that widens it
        # is not judged by its parameters); then five tables of a fifth each qualify (the time and seq
        # values are each one line), all within a minute, so no count decays first
        with open(daemon.logs + "/app.log", "w") as f:
            f.writelines(lines[:100])
        assert len(daemon.wait_scored(100, timeout=120)) == 100, daemon.log_tail()
        with open(daemon.logs + "/app.log", "a") as f:
            f.writelines(lines[100:])
        counts = daemon.wait_scored(400, timeout=120)
        assert len(counts) == 400, daemon.log_tail()
        # one table got the room (the other row is the position's total); the other four are refused,
        # each counted once however many lines follow
        assert daemon.metric("volume_value_keys_refused_total") == 4, daemon.log_tail()
        assert daemon.log_tail(400).count("max_value_keys = 2") == 1
        assert daemon.stop() == 0
    finally:
        daemon.kill()
