"""The `file` sink: every event as one JSON line appended to `path`, fsynced.

JSON escapes quotes, backslashes and newlines, so a hostile log line cannot start a record of its
own; control characters were already removed from the event (alerting/escape.py). The file is
reopened when logrotate moves it (storage/appendfile.py).
"""
import json

from anomaly_detector.alerting.noise import group_payload
from anomaly_detector.alerting.sinks.base import DeliveryError, Sink
from anomaly_detector.storage.appendfile import AppendFile


class FileSink(Sink):
    type = "file"

    def __init__(self, name, path):
        self.name, self.out = name, AppendFile(path)

    def send(self, event):
        self._write(event)

    def send_group(self, events):
        """One line: {"id": "group-...", "event": "group", "count": n, "events": [...]}."""
        self._write(group_payload(events))

    def _write(self, event):
        line = json.dumps(event, separators=(",", ":"), ensure_ascii=False, sort_keys=True) + "\n"
        try:
            self.out.write(line.encode())
            self.out.sync()
        except OSError as exc:
            raise DeliveryError("io", "%s: %s" % (self.out.path, exc.strerror or exc)) from None

    def close(self):
        self.out.close()


def build(name, section):
    if not section["path"]:
        raise ValueError("type = file needs path (the JSON lines file alerts are appended to)")
    return FileSink(name, section["path"])
