"""The /metrics text written by prometheus_client from names.METRICS: parseable, integers as integers, runbook greps work."""
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


def _sample_for(spec):
    if spec.kind == "summary":
        return {"quantiles": {0.5: 0.5, 0.95: 1.5, 0.99: 2.5}, "sum": 3.25, "count": 7}
    if spec.labels:
        return {tuple((label, "v %s" % label) for label in spec.labels): 3}
    return 3


def test_every_declared_metric_keeps_its_name_type_help_and_labels():
    """What prometheus_client writes for each MetricSpec: the contract of docs/metrics.md and alerts.yml."""
    text = render({name: _sample_for(spec) for name, spec in METRICS.items()})
    for name, spec in METRICS.items():
        full = PREFIX + name
        assert "# HELP %s %s\n" % (full, spec.help) in text
        assert "# TYPE %s %s\n" % (full, spec.kind) in text
        lines = [line for line in text.splitlines() if re.match(r"%s[ {]" % full, line)]
        if spec.kind == "summary":
            assert [line.split()[1] for line in lines] == ["0.5", "1.5", "2.5"]
        elif spec.labels:
            labels = ",".join('%s="v %s"' % (label, label) for label in sorted(spec.labels))
            assert lines == ["%s{%s} 3" % (full, labels)]
        else:
            assert lines == ["%s 3" % full]
    assert text.count("# TYPE ") == len(METRICS)


def test_counters_end_in_total_as_prometheus_client_writes_them():
    assert [name for name, spec in METRICS.items() if spec.kind == "counter" and not name.endswith("_total")] == []


def test_big_and_fractional_values_are_written_for_shell_arithmetic():
    text = render({"logs_processed_total": 2 ** 40, "processing_rate": 1234567.5, "cpu_usage_percent": 12.25})
    assert "anomaly_detector_logs_processed_total 1099511627776\n" in text        # not 1.099511627776e+12
    assert "anomaly_detector_processing_rate 1234567.5\n" in text                  # not 1.2345675e+06
    assert "anomaly_detector_cpu_usage_percent 12.25\n" in text


def test_a_label_value_with_spaces_keeps_its_value_field():
    text = render({"alerts_delivered_total": {(("sink", "my sink 2"),): 5.0}})
    assert 'anomaly_detector_alerts_delivered_total{sink="my sink 2"} 5\n' in text
