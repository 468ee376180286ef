"""Prometheus text format (version 0.0.4) of the sidecar's readings, written by prometheus_client.

A custom Collector (ReadingsCollector) turns one snapshot of the readings (metrics/sidecar.py:
{metric name: value | {label tuple: value}}) into prometheus_client metric families declared by
names.METRICS, and generate_latest() writes them from a private CollectorRegistry (no default
process or platform collectors, nothing global). One thing is changed in its output: the value of
a sample line that is a whole number is written as an integer. prometheus_client prints 123 as
`123.0` and 1234567 as `1.234567e+06`, which breaks the runbook's `awk '{print $2}'` followed by
`[ "$NEW" -gt "$OLD" ]` or `bc`; Prometheus parses either spelling alike.
"""
import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from anomaly_detector.metrics.names import COUNTER, METRICS, SUMMARY


def format_value(value):
    """Integers as integers, other floats with full precision, and Prometheus' Inf/NaN spellings."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2 ** 63:
        return str(int(value))
    return repr(value)


class ReadingsCollector(Collector):
    """Metric families of the samples `source()` returns, in the order of names.METRICS.

    A counter or gauge value is a number, or a dict {((label, value), ...): number}.
    A summary value is {"quantiles": {0.5: s, ...}, "sum": s, "count": n}.
    Metrics missing from the samples are left out rather than shown as a misleading zero.
    """

    def __init__(self, source):
        self.source = source

    def collect(self):
        samples = self.source()
        for name, spec in METRICS.items():
            if name in samples:
                yield _family(spec, samples[name])


def _family(spec, value):
    # A counter family is named without `_total` (generate_latest adds it back to its HELP and TYPE
    # lines); every counter in names.METRICS ends in `_total` (tests/unit/test_exposition.py).
    full = spec.full_name
    family = Metric(full[:-len("_total")] if spec.kind == COUNTER else full, spec.help, spec.kind)
    if spec.kind == SUMMARY:
        for q, v in sorted(value["quantiles"].items()):
            family.add_sample(full, {"quantile": str(q)}, v)
        family.add_sample(full + "_sum", {}, value["sum"])
        family.add_sample(full + "_count", {}, value["count"])
    elif isinstance(value, dict):
        for labels, v in sorted(value.items()):
            family.add_sample(full, dict(labels), v)
    else:
        family.add_sample(full, {}, value)
    return family


def render(samples):
    """The text of /metrics for these samples (see ReadingsCollector)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReadingsCollector(lambda: samples))
    return integral_values(generate_latest(registry).decode("utf-8"))


def integral_values(text):
    """Rewrite the value (last field) of each sample line with format_value; comment lines stay.

    generate_latest writes no time stamps, so a sample line ends with its value; a label value may
    hold spaces, hence the split from the right.
    """
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            line = "%s %s" % (head, format_value(value))
        out.append(line)
    return "\n".join(out) + "\n"


def counter_names():
    return [name for name, spec in METRICS.items() if spec.kind == COUNTER]
