"""The alerter's one situation correlator: every incident event meets it before any sink's routing.

One job: group the incidents of the outbox into situations (detection/situations.py Correlator) once
for the whole alerter, so every sink names a situation by the same id, and publish what it knows for
the sidecar. Alerter.step (alerter.py) hands take() each batch of events it read from the outbox;
take() feeds the new ones (past `fed`, per writer: the outbox is read again from the start after a
restart) to the correlator and returns the events with their situation's record under SITUATION_KEY,
which each sink's policy (noise.py) reads and strips before anything is sent.

Its state (the correlator's, `fed`, the recently closed situations) is saved in situations-state.json
beside the sinks' checkpoints after each step that changed it, so a restart goes on with the same
situations. The view (situations-view.json: the open and the last [http] incidents_api_max closed
situations, each with its status) is what GET /api/situations and the page serve when sinks exist
(metrics/incidents_api.py SituationsView). Both are written atomically (outbox.write_json_atomic).
"""
import collections
import json
import logging
import os
import time

from anomaly_detector.alerting.events import OPENED, RESOLVED
from anomaly_detector.alerting.outbox import write_json_atomic
from anomaly_detector.detection.situations import Correlator

log = logging.getLogger(__name__)
SITUATION_KEY = "_situation"            # the event's situation record, for the policies only (never sent)
STATE_FILE = "situations-state.json"
VIEW_FILE = "situations-view.json"
SITUATION_LIMITS = ("max_open", "max_pairs")   # bounded reasons of situation_limits_total{sink,reason}


def view_path(directory):
    return os.path.join(directory, VIEW_FILE)


def read_published(path):
    """The situations the alerter published (newest first), or None when there is no usable file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    situations = data.get("situations") if isinstance(data, dict) else None
    return situations if isinstance(situations, list) else None


class SituationBook:
    """The correlator of the alerter process, its saved state and its published view (module docstring)."""

    def __init__(self, directory, settings, keep, on_limit=None):
        self.directory, self.keep = directory, max(1, int(keep))
        self.settings = {k: settings[k] for k in ("window_seconds", "max_open", "max_pairs", "max_tokens",
                                                  "dependencies")}
        self.correlator = self._correlator()
        self.on_limit = on_limit or (lambda reason: None)
        self.fed = {}          # writer -> last seq fed to the correlator
        self.ended = set()     # resolved incident ids among the situations listed
        self.closed = collections.deque(maxlen=self.keep)   # records of closed situations, oldest first
        self.latest = 0.0      # latest incident onset seen (event time), for closing quiet situations
        self._logged = set()
        self.changed = False
        self._restore()

    def _correlator(self):
        return Correlator(on_limit=self._hit, **self.settings)

    def _hit(self, reason):
        if reason not in self._logged:
            self._logged.add(reason)
            log.warning("alerter: [situations] %s reached; see docs/situations.md, Limits", reason)
        self.on_limit(reason)

    def take(self, events):
        """The events, each incident event with its situation's record (SITUATION_KEY) when it is in one."""
        out = []
        for event in events:
            if isinstance(event.get("incident"), dict) and "incident_id" in event:
                self._feed(event)
                situation = self.correlator.situation_of(event["incident_id"])
                if situation is not None:
                    event = dict(event, **{SITUATION_KEY: situation.record(self.correlator)})
            out.append(event)
        return out

    def _feed(self, event):
        writer, seq = str(event.get("writer")), event.get("seq")
        if isinstance(seq, int):
            if seq <= self.fed.get(writer, 0):
                return   # fed before a restart: the outbox is read again from its start
            self.fed[writer] = seq
        self.changed = True
        incident, iid = event["incident"], event["incident_id"]
        if event["event"] == RESOLVED:
            self.ended.add(iid)
            return
        if event["event"] == OPENED or self.correlator.situation_of(iid) is None:
            first = incident.get("first_seen")
            self.latest = max(self.latest, float(first) if isinstance(first, (int, float)) else self.latest)
            self._closing(self.correlator.close_quiet(self.latest))
        self.ended.discard(iid)
        try:
            self.correlator.add(dict(incident, id=iid))
        except (KeyError, TypeError, ValueError) as exc:   # a record without times: it stays alone
            log.warning("alerter: incident %s left out of situations: %s", iid, exc)
        self._closing(self.correlator.take_closed_early())

    def _closing(self, situations):
        for situation in situations:
            self.closed.append(self._listed(situation.record(self.correlator)))
        if situations:
            self._prune_ended()

    def _listed(self, record):
        record["status"] = "resolved" if all(i in self.ended for i in record["incidents"]) else "open"
        return record

    def _prune_ended(self):
        listed = {i for s in self.closed for i in s["incidents"]} | set(self.correlator.of_incident)
        self.ended &= listed

    def situations(self):
        """Open and recently closed situations (at most `keep` closed), newest onset first, with status."""
        current = [self._listed(s.record(self.correlator)) for s in self.correlator.open.values()]
        closed = [self._listed(dict(s)) for s in self.closed]
        return sorted(current + closed, key=lambda r: (-r["first_seen"], r["id"]))

    # -- persistence

    def save(self):
        """Write the state and the view when something changed since the last save."""
        if not self.changed:
            return
        self.changed = False
        state = {"correlator": self.correlator.state(), "fed": self.fed, "ended": sorted(self.ended),
                 "closed": list(self.closed), "latest": self.latest}
        try:
            write_json_atomic(os.path.join(self.directory, STATE_FILE), state)
            write_json_atomic(view_path(self.directory), {"at": time.time(), "situations": self.situations()})
        except OSError as exc:
            self.changed = True
            log.error("alerter: cannot write the situations files in %s: %s", self.directory, exc)

    def _restore(self):
        path = os.path.join(self.directory, STATE_FILE)
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("alerter: %s unreadable (%s); starting without the saved situations", path, exc)
            return
        try:
            self.correlator.restore(state["correlator"])
            self.fed = {str(w): int(s) for w, s in dict(state["fed"]).items()}
            self.ended = {str(i) for i in state["ended"]}
            self.closed.extend(s for s in state["closed"] if isinstance(s, dict) and "incidents" in s)
            self.latest = float(state["latest"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            log.warning("alerter: %s unreadable (%s); starting without the saved situations", path, exc)
            self.correlator = self._correlator()
            self.fed, self.ended, self.latest = {}, set(), 0.0
            self.closed.clear()
