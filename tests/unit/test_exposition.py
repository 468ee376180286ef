"""Our Prometheus text exposition: parseable by prometheus_client, integers as integers, runbook greps work."""
import math
import re

from prometheus_client.parser import text_string_to_metric_families

from anomaly_detector.metrics.exposition import format_value, render
from anomaly_detector.metrics.names import METRICS, PREFIX

SAMPLES = {
    "logs_processed_total": 12345678,
    "processing_errors_total": {(("reason", "decode"),): 3, (("reason", "too_long"),): 0},
    "input_queue_size": 17,
    "processing_rate": 10234.5,
    "processing_duration_seconds": {"quantiles": {0.5: 0.004, 0.95: 0.02, 0.99: 0.1}, "sum": 41.5, "count": 12345678},
}


def test_values_are_plain_integers_when_integral():
    assert format_value(12345678.0) == "12345678"
    assert format_value(0) == "0"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf" and format_value(math.nan) == "NaN"


def test_prometheus_parser_reads_every_sample():
    text = render(SAMPLES)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families[PREFIX + "logs_processed"].samples[0].value == 12345678
    reasons = {s.labels["reason"]: s.value for s in families[PREFIX + "processing_errors"].samples}
    assert reasons == {"decode": 3, "too_long": 0}
    quantiles = {s.labels.get("quantile"): s.value for s in families[PREFIX + "processing_duration_seconds"].samples}
    assert quantiles["0.99"] == 0.1


def test_runbook_grep_awk_gets_an_integer_with_an_anchored_grep():
    text = render(SAMPLES)
    lines = [line for line in text.splitlines() if re.match(r"^anomaly_detector_logs_processed_total ", line)]
    assert len(lines) == 1 and lines[0].split()[1] == "12345678"


def test_quantile_lines_exist_for_the_runbook():
    text = render(SAMPLES)
    quantile_lines = [line for line in text.splitlines() if "processing_duration" in line and "quantile" in line]
    assert len(quantile_lines) == 3


def test_missing_metrics_are_not_invented():
    text = render({"logs_processed_total": 1})
    assert "alerts_generated_total" not in text


def test_label_values_are_escaped():
    text = render({"processing_errors_total": {(("reason", 'a"b\nc'),): 1}})
    assert 'reason="a\\"b\\nc"' in text


def test_declared_names_follow_the_spec():
    for name in ("logs_processed_total", "processing_errors_total", "alerts_generated_total",
                 "alerts_delivered_total", "alerts_failed_total", "input_queue_size", "processing_queue_size",
                 "alert_queue_size", "processing_duration_seconds", "processing_rate", "cpu_usage_percent",
                 "memory_usage_percent", "learning_model_health"):
        assert name in METRICS
