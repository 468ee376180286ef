"""A real Prometheus (Debian `prometheus`) scrapes the live daemon on 127.0.0.1 with the shipped alerting
rules loaded: its API gives a positive rate(anomaly_detector_logs_processed_total[1m]), the target is up
and every rule of etc/prometheus/alerts.yml evaluates without error, and the Grafana dashboard's queries run. Skipped when prometheus is absent."""
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.integration.daemon_harness import ROOT, Daemon, free_port, numbered_line

PROMETHEUS = shutil.which("prometheus")
RULES = os.path.join(ROOT, "etc", "prometheus", "alerts.yml")


def api(port, path, **params):
    url = "http://127.0.0.1:%d/api/v1/%s?%s" % (port, path, urllib.parse.urlencode(params))
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())["data"]


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (apt-get install prometheus)")
def test_prometheus_scrapes_a_positive_processing_rate(tmp_path):
    daemon = Daemon(tmp_path / "daemon")
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\n"
                      "scrape_configs:\n  - job_name: anomaly-detector\n    static_configs:\n"
                      "      - targets: ['127.0.0.1:%d']\n" % (RULES, daemon.port))
    prometheus = None
    try:
        daemon.start()
        with open(tmp_path / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen([PROMETHEUS, "--config.file=%s" % config,
                                           "--storage.tsdb.path=%s" % (tmp_path / "tsdb"),
                                           "--web.listen-address=127.0.0.1:%d" % prom_port],
                                          stdout=log, stderr=log)
        rate, seq, deadline = None, 0, time.monotonic() + 180
        while time.monotonic() < deadline:
            with open(os.path.join(daemon.logs, "app.log"), "a") as f:   # keep the counter growing
                f.write("".join(numbered_line(i) for i in range(seq, seq + 50)))
            seq += 50
            time.sleep(1)
            try:
                result = api(prom_port, "query", query="rate(anomaly_detector_logs_processed_total[1m])")["result"]
            except OSError:
                continue   # Prometheus still starting
            if result and float(result[0]["value"][1]) > 0:
                rate = float(result[0]["value"][1])
                break
        assert rate is not None and rate > 0, open(tmp_path / "prometheus.log", errors="replace").read()[-2000:]
        up = api(prom_port, "query", query='up{job="anomaly-detector"}')["result"]
        assert [float(r["value"][1]) for r in up] == [1.0]
        rules = [rule for group in api(prom_port, "rules")["groups"] for rule in group["rules"]]
        assert len(rules) >= 18 and all(rule["health"] in ("ok", "unknown") for rule in rules), rules
        # Every query of the shipped Grafana dashboard runs against it (a PromQL error is HTTP 400).
        with open(os.path.join(ROOT, "etc", "grafana", "anomaly-detector.json")) as f:
            exprs = [t["expr"] for p in json.load(f)["panels"] if p["type"] != "row" for t in p["targets"]]
        answered = sum(1 for expr in exprs if api(prom_port, "query", query=expr.replace("$instance", ".*"))["result"])
        assert answered >= len(exprs) // 2, (answered, len(exprs))   # most panels have data on a live daemon
        print("prometheus: rate(anomaly_detector_logs_processed_total[1m]) = %.1f lines/s, %d rules, "
              "%d of %d dashboard queries with data" % (rate, len(rules), answered, len(exprs)))
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        daemon.kill()
