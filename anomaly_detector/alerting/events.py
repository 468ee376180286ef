"""Incident events: what a worker appends to the outbox after each batch (opened, updated, resolved).

The detection engine groups suspicious lines into incidents (detection/incidents.py); this module
watches them from outside. An incident is announced ("opened") the first batch it is reportable (the
engine's own rule: a Finding, or incident_min_lines lines of one problem reaching the threshold), "updated" when it
gained evidence and [alerting] update_interval_seconds passed since its last event, and "resolved" when
the engine closes it. An event's id is the incident id and the event's number within the incident
("3f2a...-0" opens it), so the same event written again after a crash carries the same id, and
receivers can drop it. Open incidents survive restarts and reloads in the engine's snapshot, and the
tracker state in the worker's (alerting/producer.py), so ids and numbers go on.
"""
import time

from anomaly_detector.alerting.escape import clean

OPENED, UPDATED, RESOLVED = "opened", "updated", "resolved"
STATE_KIND, STATE_VERSION = "alert-tracker", 1
RETIRED = 1000    # resolved incident ids remembered (their last event number); saved at each append


def severity(record):
    """critical for a critical rule or a score of 90 and more, else warning (the label sinks route on)."""
    reason = record.get("reason", "")
    return "critical" if reason.startswith("critical rule") or record.get("score", 0) >= 90 else "warning"


def cleaned(value):
    """A copy of an incident record with every string made safe (escape.clean): much of it is log text."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(k): cleaned(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [cleaned(v) for v in value]
    return value


class IncidentTracker:
    """Turns the engine's open and closed incidents into events; one per worker."""

    def __init__(self, update_seconds, clock=time.time):
        self.update_seconds = float(update_seconds)
        self.clock = clock
        self.announced = {}   # incident id -> {"rev": last event number, "evidence": [...], "at": wall time}
        self.retired = {}     # incident id -> last event number, of the last RETIRED resolved incidents

    def events(self, open_records, closed_records):
        """Events for one batch: `open_records` are the records of the reportable open incidents,
        `closed_records` those the engine closed (and kept) since the last call."""
        now = self.clock()
        out = []
        for record in closed_records:
            if record["id"] not in self.announced:
                out.append(self._event(OPENED, record, now))
            out.append(self._event(RESOLVED, record, now))
            self._retire(record["id"])
        for record in open_records:
            seen = self.announced.get(record["id"])
            if seen is None:
                out.append(self._event(OPENED, record, now))
            elif _evidence(record) != seen["evidence"] and now - seen["at"] >= self.update_seconds:
                out.append(self._event(UPDATED, record, now))
        return out

    def forget_missing(self, open_ids):
        """Resolve the announced incidents the engine does not hold (a worker died after announcing them and
        before its next snapshot): no alert may stay firing forever. Returns their events."""
        now = self.clock()
        out = []
        for incident_id in [i for i in self.announced if i not in open_ids]:
            out.append(self._event(RESOLVED, dict(self.announced[incident_id]["record"]), now))
            self._retire(incident_id)
        return out

    def _retire(self, incident_id):
        """Forget a resolved incident but its last event number: the same id opened again (the engine
        closes open incidents on a stop; evidence after the restart may open one with the same id) goes
        on numbering, so no two different events share an id."""
        self.retired[incident_id] = self.announced.pop(incident_id)["rev"]
        while len(self.retired) > RETIRED:
            del self.retired[next(iter(self.retired))]

    def _event(self, kind, record, now):
        seen = self.announced.get(record["id"])
        if seen is not None:
            rev = seen["rev"] + 1
        else:
            rev = self.retired.pop(record["id"], -1) + 1
        short = {k: record[k] for k in ("id", "source", "kind", "reason", "score", "first_seen", "last_seen",
                                         "template_id", "template", "expected", "observed") if k in record}
        # a resolved one too: _retire() then keeps its number
        self.announced[record["id"]] = {"rev": rev, "evidence": _evidence(record), "at": now, "record": short}
        incident = cleaned(record)
        incident["severity"] = severity(record)
        return {"id": "%s-%d" % (record["id"], rev), "event": kind, "incident_id": record["id"], "rev": rev,
                "at": round(now, 3), "incident": incident}

    def state(self):
        return {"announced": self.announced, "retired": self.retired}

    def restore(self, state):
        announced = state.get("announced", {}) if isinstance(state, dict) else {}
        self.announced = {k: v for k, v in announced.items()
                          if isinstance(v, dict) and {"rev", "evidence", "at", "record"} <= set(v)}
        retired = state.get("retired", {}) if isinstance(state, dict) else {}
        self.retired = {k: int(v) for k, v in retired.items() if isinstance(v, int)}


def _evidence(record):
    return [record.get("lines", 0), record.get("score", 0.0), len(record.get("tiers", ())),
            len(record.get("templates", ()))]
