"""Alert sinks: one module per type, each with a build(name, section) that checks its settings and
returns a Sink; SINK_TYPES is the registry the alerter (and the supervisor's start-up check) use.

A Sink delivers one event at a time: send(event) returns when the receiver accepted it and raises
DeliveryError otherwise, with a bounded `reason` (the label of alerts_failed_total) and whether trying
again can help. tick(now) runs when the sink's queue is empty (Alertmanager's re-sends); state() and
restore() carry what a sink must remember across alerter restarts (the alerts still firing).
"""
from anomaly_detector.alerting.sinks import alertmanager, email, file, redis_stream, slack, syslog, webhook

SINK_TYPES = {"file": file.build, "webhook": webhook.build, "alertmanager": alertmanager.build, "slack": slack.build,
              "syslog": syslog.build, "email": email.build, "redis": redis_stream.build}


class SinkConfigError(Exception):
    """A sink's settings cannot work (a missing secret file, a URL without a host); one line."""


def build_sink(name, section):
    """The Sink for one [alerting] subsection; SinkConfigError when its settings cannot work."""
    builder = SINK_TYPES.get(section["type"])
    if builder is None:
        raise SinkConfigError("[alerting] %s: type = %s is not supported in this release" % (name, section["type"]))
    try:
        return builder(name, section)
    except ValueError as exc:
        raise SinkConfigError("[alerting] %s: %s" % (name, exc)) from None


def sink_sections(cfg):
    """[(name, section)] of the configured sinks."""
    return [(name, section) for name, section in cfg.get("alerting", {}).items() if isinstance(section, dict)]
