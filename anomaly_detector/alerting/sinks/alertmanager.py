"""The `alertmanager` sink: incidents as Prometheus Alertmanager v2 alerts (POST <url>/api/v2/alerts).

Labels identify the incident (alertname, severity, source, template_id, kind, incident_id: one alert
per incident, since Alertmanager dedups by label set); annotations explain it (summary, expected,
observed, samples, template, score; the latest win). As Prometheus does, a firing alert carries
endsAt = now + 4 x resend_seconds and is re-sent every resend_seconds while the incident is open, so
Alertmanager keeps it firing across our restarts and resolves it by itself only if the daemon is gone
for good; the incident's end sends it once more with endsAt = now (resolved). The alerts still firing
are the sink's state, saved with its checkpoint, so a restarted alerter goes on re-sending them.
"""
import json
import time
from datetime import datetime, timezone

from anomaly_detector.alerting import httpsend
from anomaly_detector.alerting.escape import one_line
from anomaly_detector.alerting.sinks.base import Sink, situation_text
from anomaly_detector.alerting.sinks.webhook import check_target

ALERTNAME = "LogAnomalyIncident"
LABEL_CHARS = 200
SAMPLES_CHARS = 1500


def rfc3339(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def alert(event):
    """The postableAlert of an event, without endsAt (set per send)."""
    inc = event["incident"]
    labels = {"alertname": ALERTNAME, "severity": inc.get("severity", "warning"),
              "source": one_line(inc.get("source", ""), LABEL_CHARS),
              "template_id": str(inc.get("template_id", -1)), "kind": one_line(inc.get("kind", ""), LABEL_CHARS),
              "incident_id": event["incident_id"]}
    samples = "\n".join(one_line(s, 400) for s in inc.get("samples", []))[:SAMPLES_CHARS]
    annotations = {"summary": one_line(inc.get("reason", ""), 500), "expected": one_line(inc.get("expected", "")),
                   "observed": one_line(inc.get("observed", "")), "samples": samples,
                   "template": one_line(inc.get("template", "")), "score": str(inc.get("score", ""))}
    if situation_text(event):
        annotations["situation"] = situation_text(event)
    first = inc.get("first_seen")
    starts = min(first, event["at"]) if isinstance(first, (int, float)) else event["at"]
    return {"labels": labels, "annotations": annotations, "startsAt": rfc3339(starts)}


class AlertmanagerSink(Sink):
    type = "alertmanager"
    groups = False   # Alertmanager groups alerts itself: one alert per incident, always

    def __init__(self, name, url, timeout, allow_link_local, resend_seconds, clock=time.time):
        self.name, self.timeout, self.allow_link_local = name, timeout, allow_link_local
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.resend = float(resend_seconds)
        self.clock = clock
        self.active = {}        # incident id -> alert, firing
        self._next_resend = None

    def send(self, event):
        body = self._same_alert(event, alert(event))
        now = self.clock()
        if event["event"] == "resolved":
            self._post([dict(body, endsAt=rfc3339(now))])
            self.active.pop(event["incident_id"], None)
            return
        self._post([dict(body, endsAt=rfc3339(now + 4 * self.resend))])
        self.active[event["incident_id"]] = body
        if self._next_resend is None:
            self._next_resend = now + self.resend

    def _same_alert(self, event, body):
        """An event of an alert already firing keeps that alert's labels (Alertmanager tells alerts apart by
        them): an incident folded into it (a situation's dependent, alerting/noise.py) refreshes its
        annotations and resolves it, instead of raising an alert of its own."""
        firing = self.active.get(event["incident_id"])
        if firing is None or not event.get("folded_from"):
            return body
        return dict(body, labels=dict(firing["labels"]), startsAt=firing["startsAt"])

    def send_group(self, events):
        """A quiet-hours digest: each event as its own alert, in order."""
        for event in events:
            self.send(event)

    def tick(self, now):
        """Re-send every firing alert when resend_seconds passed (one POST); returns the next time."""
        if not self.active:
            self._next_resend = None
            return None
        if self._next_resend is None or now >= self._next_resend:
            ends = rfc3339(now + 4 * self.resend)
            self._post([dict(a, endsAt=ends) for a in self.active.values()])
            self._next_resend = now + self.resend
        return self._next_resend

    def _post(self, alerts):
        body = json.dumps(alerts, separators=(",", ":")).encode()
        httpsend.post(self.endpoint, body, {"Content-Type": "application/json", "User-Agent": "anomaly-detector"},
                      self.timeout, self.allow_link_local)

    def state(self):
        return {"active": self.active}

    def restore(self, state):
        active = state.get("active", {}) if isinstance(state, dict) else {}
        self.active = {k: v for k, v in active.items() if isinstance(v, dict) and "labels" in v}
        self._next_resend = None   # re-send at once: the alerter was down, the alerts' endsAt draw near


def build(name, section):
    check_target(section["url"], section["allow_link_local"])
    return AlertmanagerSink(name, section["url"], section["timeout_seconds"], section["allow_link_local"],
                            section["resend_seconds"])
