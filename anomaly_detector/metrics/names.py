"""Every exported metric declared once: name, type, help, labels.

The sidecar (metrics/sidecar.py) renders values under these names; docs/metrics.md and the
runbook's greps depend on them (SPEC §5), so a name here is a contract.
"""
from dataclasses import dataclass

PREFIX = "anomaly_detector_"
COUNTER, GAUGE, SUMMARY, HISTOGRAM = "counter", "gauge", "summary", "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str           # without PREFIX
    kind: str
    help: str
    labels: tuple = ()

    @property
    def full_name(self):
        return PREFIX + self.name


METRICS = {m.name: m for m in (
    MetricSpec("logs_processed_total", COUNTER, "Log lines scored by the detector workers."),
    MetricSpec("processing_errors_total", COUNTER, "Lines that could not be processed (counted, never retried)."),
    MetricSpec("lines_read_total", COUNTER, "Lines read by the inputs and handed to the rings."),
    MetricSpec("lines_dropped_total", COUNTER, "Lines dropped because the rings were full (when_full = drop_newest)."),
    MetricSpec("input_read_errors_total", COUNTER, "Failed reads of input files (permissions, I/O errors)."),
    MetricSpec("files_deferred", GAUGE, "Matching files waiting for a descriptor because max_open_files are open."),
    MetricSpec("files_deferred_total", COUNTER, "Times a matching file had to wait for a descriptor (max_open_files)."),
    MetricSpec("anomalies_total", COUNTER, "Lines flagged as anomalous."),
    MetricSpec("incidents_total", COUNTER, "Incidents closed by the detection engine."),
    MetricSpec("alerts_generated_total", COUNTER, "Alerts raised by the detection engine."),
    MetricSpec("alerts_delivered_total", COUNTER, "Alerts accepted by a sink.", ("sink",)),
    MetricSpec("alerts_failed_total", COUNTER, "Alert deliveries that failed (retried from the outbox).", ("sink",)),
    MetricSpec("input_queue_size", GAUGE, "Lines read by inputs and waiting in the rings."),
    MetricSpec("processing_queue_size", GAUGE, "Lines handed to workers and not yet acknowledged."),
    MetricSpec("alert_queue_size", GAUGE, "Alerts waiting in the outbox."),
    MetricSpec("processing_duration_seconds", SUMMARY,
               "Time from a line being read to it being scored, over a sliding window."),
    MetricSpec("processing_rate", GAUGE, "Lines scored per second over the last minute."),
    MetricSpec("cpu_usage_percent", GAUGE, "CPU used by all daemon processes, percent of one core."),
    MetricSpec("memory_usage_percent", GAUGE, "Memory used by all daemon processes, percent of max_memory_mb."),
    MetricSpec("learning_model_health", GAUGE, "1 when models are warmed up and persisting, else 0."),
    MetricSpec("workers_running", GAUGE, "Detector workers in the RUNNING or STARTING state."),
    MetricSpec("ring_capacity_lines", GAUGE, "Slots of all rings together: the bound of input_queue_size."),
    MetricSpec("memory_limit_bytes", GAUGE, "max_memory_mb as bytes: the bound of memory_usage_percent."),
)}
