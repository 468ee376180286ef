"""The real daemon at [detection][[tier3]] max_series: values of further series are not judged as
series, counted in /metrics and logged once."""
from tests.integration.daemon_harness import Daemon

INPUTS = "[[app]]\ntype = file\npath = {logs}/app.log\nstart_at = beginning\n"
CONFIG = "[detection]\n  [[tier3]]\n  max_series = 1\n"


def test_values_past_max_series_are_counted_and_logged(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS.replace("{logs}", str(tmp_path / "logs")), extra=CONFIG)
    try:
        daemon.start()
        with open(daemon.logs + "/app.log", "w") as f:
            for i in range(100):
                f.write("2026-03-02T10:%02d:%02d.000Z INFO request took %d ms rows=%d seq=%d\n"
                        % (i // 60, i % 60, 20 + i, i % 9, i))
        counts = daemon.wait_scored(100, timeout=120)
        assert len(counts) == 100, daemon.log_tail()
        # one series (took <*> ms, the first position) is tracked; every rows= and seq= value is refused
        assert daemon.metric("series_values_refused_total") == 200, daemon.log_tail()
        assert daemon.log_tail(400).count("the max_series limit") == 1
        assert daemon.stop() == 0
    finally:
        daemon.kill()
