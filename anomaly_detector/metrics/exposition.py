"""Prometheus text format (version 0.0.4) written by us, so counters print as plain integers.

prometheus_client prints 123 as `123.0` and 1234567 as `1.234567e+06`, which breaks the
runbook's `[ "$NEW" -gt "$OLD" ]` and `bc` lines; integral values are written as integers here.
"""
import math

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


def _escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs):
    if not pairs:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (k, _escape_label(v)) for k, v in pairs)


def render(samples):
    """Render {metric name: value | {label tuple: value}} in the order of names.METRICS.

    A counter or gauge value is a number, or a dict {((label, value), ...): number}.
    A summary value is {"quantiles": {0.5: s, ...}, "sum": s, "count": n}.
    Metrics missing from `samples` are left out rather than shown as a misleading zero.
    """
    out = []
    for name, spec in METRICS.items():
        if name not in samples:
            continue
        full = spec.full_name
        out.append("# HELP %s %s" % (full, spec.help))
        out.append("# TYPE %s %s" % (full, spec.kind))
        value = samples[name]
        if spec.kind == SUMMARY:
            out += _render_summary(full, value)
        elif isinstance(value, dict):
            out += ["%s%s %s" % (full, _labels(k), format_value(v)) for k, v in sorted(value.items())]
        else:
            out.append("%s %s" % (full, format_value(value)))
    return "\n".join(out) + "\n"


def _render_summary(full, value):
    lines = ['%s{quantile="%s"} %s' % (full, q, format_value(v)) for q, v in sorted(value["quantiles"].items())]
    lines.append("%s_sum %s" % (full, format_value(value["sum"])))
    lines.append("%s_count %s" % (full, format_value(value["count"])))
    return lines


def counter_names():
    return [name for name, spec in METRICS.items() if spec.kind == COUNTER]
