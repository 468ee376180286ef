"""bin/anomaly-detector-weekly-report against a real Prometheus (Debian `prometheus`) scraping a live
daemon: every section has data, and the scoring rate is positive. Skipped when prometheus is absent."""
import shutil
import subprocess
import time

import numpy as np
import pytest

from tests.integration.daemon_harness import free_port
from tests.integration.test_prometheus_scrape import api
from tests.runbook.runbook_env import Installed

PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")
def test_weekly_report_from_prometheus_scraping_a_live_daemon(tmp_path):
    site = Installed(tmp_path / "site")
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: anomaly-detector\n"
                      "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % site.daemon.port)
    rng = np.random.default_rng(11)
    prometheus = None
    try:
        site.daemon.start()
        with open(tmp_path / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen([PROMETHEUS, "--config.file=%s" % config,
                                           "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                                           "--web.listen-address=127.0.0.1:%d" % prom_port],
                                          stdout=log, stderr=log)
        t, deadline, rate = time.time() - 600, time.monotonic() + 180, 0.0
        while time.monotonic() < deadline and rate <= 0:
            site.write(rng, t, t + 10, rate=5.0)      # keep the counter growing
            t += 10
            time.sleep(1)
            try:
                result = api(prom_port, "query", query="rate(anomaly_detector_logs_processed_total[5m])")["result"]
            except OSError:
                continue
            rate = float(result[0]["value"][1]) if result else 0.0
        assert rate > 0, open(tmp_path / "prometheus.log", errors="replace").read()[-2000:]
        report = str(tmp_path / "report.txt")
        # a range query is evaluated every STEP seconds: rate() and increase() show once two scrapes fall
        # inside a step's window, which may take a step or two after the first positive instant rate
        deadline = time.monotonic() + 90
        while True:
            site.write(rng, t, t + 10, rate=5.0)
            t += 10
            done = site.run("anomaly-detector-weekly-report", report, PROM_URL="http://127.0.0.1:%d" % prom_port,
                            STEP="15", DAYS="1")
            assert done.returncode == 0, done.stdout + done.stderr
            text = open(report).read()
            if "no data" not in text or time.monotonic() > deadline:
                break
            time.sleep(5)
        assert text.count("\n== ") == 6 and "no data" not in text, text
        rate_line = text.split("== lines scored per second")[1].splitlines()[1]
        assert float(rate_line.rsplit("max=", 1)[1]) > 0, text

        done = site.run("anomaly-detector-weekly-report", report, PROM_URL="http://127.0.0.1:%d" % prom_port,
                        STEP="5", DAYS="1")           # 17280 points a series: Prometheus refuses, says why
        assert done.returncode == 1 and "exceeded maximum resolution" in done.stderr, done.stderr
        done = site.run("anomaly-detector-weekly-report", report, PROM_URL="http://127.0.0.1:%d" % free_port())
        assert done.returncode == 1 and "did not answer" in done.stderr, done.stderr
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        site.stop()
