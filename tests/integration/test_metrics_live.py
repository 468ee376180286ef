"""GET /metrics of a live daemon: every name the runbook relies on is there with its type (and the
three quantile lines), per-tier and per-input detail too, the runbook's greps read integers, and
the values move: lines scored, rates, latency, CPU, the model health, and both queues, which fill
while the workers are stopped (SIGSTOP) and return to 0 once they run again."""
import os
import re
import signal
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon_harness import Daemon, numbered_line

# The names the runbook greps for (prefix anomaly_detector_) and their Prometheus types.
RUNBOOK_NAMES = {
    "logs_processed_total": "counter", "processing_errors_total": "counter", "alerts_generated_total": "counter",
    "alerts_delivered_total": "counter", "alerts_failed_total": "counter", "input_queue_size": "gauge",
    "processing_queue_size": "gauge", "alert_queue_size": "gauge", "processing_duration_seconds": "summary",
    "processing_rate": "gauge", "cpu_usage_percent": "gauge", "memory_usage_percent": "gauge",
    "learning_model_health": "gauge",
}
SINK = "[alerting]\n[[audit]]\ntype = file\npath = %s\n"
# Warm after 100 lines and one second of event time (2000 numbered lines span two seconds).
WARM_SOON = "[detection]\nwarmup_lines = 100\nwarmup_seconds = 1\n"


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, extra=WARM_SOON + SINK % (tmp_path / "alerts.jsonl"))
    yield d
    d.kill()


def scrape(daemon):
    status, text = daemon.get("/metrics")
    assert status == 200
    return text


def types_of(text):
    return dict(re.findall(r"^# TYPE anomaly_detector_(\w+) (\w+)$", text, re.M))


def value(text, name):
    """The value of an unlabelled sample, the way the runbook's anchored grep | awk reads it."""
    lines = [line for line in text.splitlines() if line.startswith("anomaly_detector_%s " % name)]
    assert len(lines) == 1, (name, lines)
    return lines[0].split()[1]


def wait_metric(daemon, name, condition, timeout, what):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = float(value(scrape(daemon), name))
        if condition(seen):
            return seen
        time.sleep(0.25)
    raise AssertionError("%s: %s stayed %s\n%s" % (what, name, seen, daemon.log_tail()))


def write_lines(daemon, first, n):
    with open(os.path.join(daemon.logs, "app.log"), "a") as f:
        f.write("".join(numbered_line(i) for i in range(first, first + n)))


def test_every_runbook_name_is_exported_with_its_type(daemon):
    daemon.start()
    text = scrape(daemon)
    families = {f.name: f for f in text_string_to_metric_families(text)}   # the official parser reads it all
    types = types_of(text)
    for name, kind in RUNBOOK_NAMES.items():
        assert types.get(name) == kind, (name, types.get(name))
    # grep "processing_duration" | grep "quantile": exactly the three quantiles
    quantiles = [line for line in text.splitlines() if "processing_duration" in line and "quantile" in line]
    assert [re.search(r'quantile="([\d.]+)"', line).group(1) for line in quantiles] == ["0.5", "0.95", "0.99"]
    # per-tier and per-input detail, every label value from zero
    tiers = {s.labels["tier"] for s in families["anomaly_detector_anomalies_by_tier"].samples}
    assert tiers == {"t1", "t2", "t3", "t4"}
    assert {s.labels["tier"]: s.value for s in families["anomaly_detector_tier_enabled"].samples} == \
        {"t1": 1, "t2": 1, "t3": 1, "t4": 1}
    assert [s.labels for s in families["anomaly_detector_lines_truncated"].samples] == [{"input": "app"}]
    assert [s.labels for s in families["anomaly_detector_alerts_delivered"].samples] == [{"sink": "audit"}]
    # the limits beside their usage, the build and the health verdict
    assert int(value(text, "memory_limit_bytes")) == 2048 * 2**20
    assert int(value(text, "ring_capacity_lines")) == 2 * 8192
    assert int(value(text, "alert_queue_limit")) == 10000
    assert int(value(text, "alert_outbox_limit_bytes")) == 50 * 2**20
    assert int(value(text, "stall_limit_seconds")) == 30
    assert re.search(r'^anomaly_detector_build_info\{version="[^"]+"\} 1$', text, re.M)
    assert value(text, "health_status") == "1" and value(text, "config_last_reload_successful") == "1"
    assert daemon.stop() == 0


def test_values_move_and_the_queues_drain(daemon):
    daemon.start()
    before = scrape(daemon)
    assert value(before, "logs_processed_total") == "0" and value(before, "processing_queue_size") == "0"
    write_lines(daemon, 0, 2000)
    daemon.wait_scored(2000, 120)
    processed = wait_metric(daemon, "logs_processed_total", lambda v: v >= 2000, 10, "the snapshot follows")
    text = scrape(daemon)
    # The runbook's lines, verbatim but for the anchored grep: integers that `[ -gt ]` and `bc` take.
    shell = ("N=$(curl -s http://127.0.0.1:%d/metrics | grep '^anomaly_detector_logs_processed_total ' | "
             "awk '{print $2}'); [ \"$N\" -gt 0 ] && echo \"scale=4; 0 / $N * 100\" | bc" % daemon.port)
    assert subprocess.run(["sh", "-c", shell], capture_output=True, text=True).stdout.strip() == "0"
    assert processed == 2000 and int(value(text, "lines_read_total")) == 2000
    assert float(value(text, "processing_rate")) > 0
    assert int(value(text, "processing_duration_seconds_count")) >= 2000
    p99 = re.search(r'^anomaly_detector_processing_duration_seconds\{quantile="0.99"\} (\S+)$', text, re.M)
    assert 0 < float(p99.group(1)) < 60
    assert float(value(text, "memory_usage_percent")) > 0
    wait_metric(daemon, "cpu_usage_percent", lambda v: v > 0, 10, "CPU is measured")
    # warm after 100 lines and a snapshot every 5 s: the models are warm and persisted
    wait_metric(daemon, "learning_model_health", lambda v: v == 1, 30, "models persisted")

    # Both workers stopped: what the input reads waits in the rings, none of it taken.
    workers = [pid for name, pid in daemon.children().items() if name.startswith("ad-worker-")]
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        write_lines(daemon, 2000, 3000)
        wait_metric(daemon, "lines_read_total", lambda v: v >= 5000, 20, "the input reads on")
        text = scrape(daemon)
        # 3000, not min(depth, batch_size x workers) = 1000: the lines counted from the rings' positions
        assert int(value(text, "processing_queue_size")) == 3000, text
        assert int(value(text, "input_queue_size")) == 3000
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    daemon.wait_scored(5000, 120)
    wait_metric(daemon, "processing_queue_size", lambda v: v == 0, 20, "the queue drains")
    wait_metric(daemon, "input_queue_size", lambda v: v == 0, 20, "the rings drain")
    assert int(value(scrape(daemon), "logs_processed_total")) == 5000
    assert daemon.stop() == 0
