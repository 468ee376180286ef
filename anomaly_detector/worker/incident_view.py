"""A worker's published view of its incidents, for GET /api/incidents and POST /admin/feedback.

The worker (worker/detector.py) notes each incident it closes and, at most once a second while it
scores (and at its stop), rewrites <state_dir>/alerting/worker-<n>/incidents-view.json: its open incidents
(those already reported as opened), its last `keep` closed ones, and the (source, template) pairs it
saw last with their texts (detection/feedback.py RecentPairs: what feedback may name).
The sidecar (metrics/incidents_api.py) reads every worker's file. The file is a view, rewritten from
the worker's memory (tmp file renamed over it, no fsync); at start the worker takes the closed
incidents back from it, so a restart keeps the recent history.
"""
import collections
import json
import logging
import os
import time

from anomaly_detector.detection.feedback import MAX_TEMPLATE_CHARS
from anomaly_detector.storage.atomic import replace_file, sweep_orphan_temps

log = logging.getLogger(__name__)
VIEW_FILE = "incidents-view.json"
VIEW_VERSION = 1
PUBLISH_SECONDS = 1.0
MAX_SAMPLE_CHARS = 1000     # a sample line is cut here ("..." appended): lines can be 64 KB


def view_path(worker_state_dir):
    return os.path.join(worker_state_dir, VIEW_FILE)


def read_view(path):
    """The view dict of one worker's file; None when missing; ValueError or OSError when unusable."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != VIEW_VERSION:
        raise ValueError("%s: not an incidents view of version %d" % (path, VIEW_VERSION))
    for key in ("open", "closed"):
        if not isinstance(data.get(key), list) or not all(isinstance(r, dict) for r in data[key]):
            raise ValueError("%s: %s is not a list of incidents" % (path, key))
    if not isinstance(data.get("templates"), dict):
        raise ValueError("%s: templates is not an object" % path)
    return data


class IncidentView:
    """What one worker publishes; publish_if_due() is called from its loop, note_closed() per closed incident."""

    def __init__(self, worker_state_dir, index, keep):
        self.path, self.index = view_path(worker_state_dir), index
        self.closed = collections.deque(maxlen=int(keep))
        self.keep = int(keep)
        self._next = 0.0
        self._dirty = True
        self._closed_total = 0
        self._written = None    # what the file holds, in short: rewritten only when it changed
        sweep_orphan_temps(self.path)   # a worker killed mid-write leaves its temporary file
        try:
            previous = read_view(self.path)
        except (OSError, ValueError) as exc:
            log.warning("worker %d: incidents view %s unusable (%s); recent closed incidents start empty",
                        index, self.path, exc)
            previous = None
        if previous:
            self.closed.extend(previous["closed"][-self.keep:])

    def note_closed(self, records, template_text):
        for record in records:
            self.closed.append(described(record, self.index, template_text, "resolved"))
        self._closed_total += len(records)
        self._dirty = self._dirty or bool(records)

    def note_batch(self):
        self._dirty = True

    def publish_if_due(self, engine, template_text, force=False):
        now = time.monotonic()
        if not force and (not self._dirty or now < self._next):
            return
        self._next = now + PUBLISH_SECONDS
        self._dirty = False
        opened = sorted(engine.open_records(), key=lambda r: -r["first_seen"])[:self.keep]
        # Scoring goes on all the time, the incidents and templates change seldom: write only a change.
        summary = (self._closed_total, engine.feedback.recent.changed,
                   tuple((r["id"], r["lines"], r["last_seen"], r["score"]) for r in opened))
        if summary == self._written and not force:
            return
        self._written = summary[:1] + (False,) + summary[2:]
        view = {"version": VIEW_VERSION, "worker": self.index, "written": time.time(),
                "open": [described(r, self.index, template_text, "open") for r in opened],
                "closed": list(self.closed),
                "templates": engine.feedback.recent.texts(engine.sources, template_text)}
        try:
            replace_file(self.path, json.dumps(view, ensure_ascii=False).encode("utf-8", "replace"), durable=False)
        except OSError as exc:   # a full disk: the view is stale, scoring goes on
            log.error("worker %d: incidents view %s not written: %s", self.index, self.path, exc)


def described(record, worker, template_text, status):
    """The incident record with what the API adds: status, worker and the text of each template."""
    out = dict(record, status=status, worker=worker)
    out["samples"] = [s if len(s) <= MAX_SAMPLE_CHARS else s[:MAX_SAMPLE_CHARS] + "..." for s in out.get("samples", [])]
    texts = [[int(t), template_text(t)] for t in record.get("templates", [])]
    # a text feedback could not name (over MAX_TEMPLATE_CHARS) is left out, which also bounds the file
    out["template_texts"] = [pair for pair in texts if len(pair[1]) <= MAX_TEMPLATE_CHARS]
    return out
