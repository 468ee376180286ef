"""A worker's alerting side: incident events from its engine, appended to its own outbox file.

Built by worker/detector.py only when [alerting] has sinks. After each batch after_batch() turns the
engine's open and closed incidents into events (events.py) and appends them (outbox.py); the tracker
state is saved after each append (and with the worker's snapshot), so numbers go on after a restart; a
crash between an append and that save makes the successor write the same events again, same ids.
"""
import logging
import os

from anomaly_detector.alerting.events import STATE_KIND, STATE_VERSION, IncidentTracker
from anomaly_detector.alerting.outbox import OutboxWriter, outbox_dir
from anomaly_detector.alerting.sinks import sink_sections
from anomaly_detector.storage.atomic import restore_json_snapshot, write_json_snapshot

log = logging.getLogger(__name__)


class AlertProducer:
    def __init__(self, cfg, index, alerting_dir):
        alerting = cfg["alerting"]
        workers = max(1, cfg["processing"]["workers"])
        sinks = [name for name, _section in sink_sections(cfg)]
        self.writer = OutboxWriter(outbox_dir(cfg), "worker-%d" % index, sinks,
                                   max(1, alerting["outbox_max_alerts"] // workers),
                                   max(4096, alerting["outbox_max_mb"] * 2**20 // workers))
        self.tracker = IncidentTracker(alerting["update_interval_seconds"])
        self.path = os.path.join(alerting_dir, "tracker.json")   # storage.layout: <state_dir>/alerting/worker-<N>/
        restore_json_snapshot(self.path, STATE_KIND, STATE_VERSION, lambda _v, state: self.tracker.restore(state))

    @classmethod
    def from_config(cls, cfg, index, alerting_dir):
        return cls(cfg, index, alerting_dir) if sink_sections(cfg) else None

    def after_batch(self, open_records, closed_records):
        """Append this batch's events; returns (events generated, undelivered events dropped to make room)."""
        return self._append(self.tracker.events(open_records, closed_records))

    def resume(self, open_ids):
        """At start: resolve what the tracker announced and the restored engine does not hold."""
        return self._append(self.tracker.forget_missing(set(open_ids)))

    def _append(self, events):
        """Events to the outbox (fsynced), then the tracker state: a crash between the two makes the
        successor write the same events again, with the same ids."""
        if not events:
            return 0, 0
        dropped = self.writer.append(events)
        self.save()
        return len(events), dropped

    def save(self):
        write_json_snapshot(self.path, STATE_KIND, STATE_VERSION, self.tracker.state())

    def close(self):
        self.writer.close()
