"""Model compaction (--optimize-models): the request file, and applying it to one worker's models.

Why a request and not a rewrite of the files: a running worker holds its models in memory and
overwrites its snapshot every snapshot_interval_seconds, so a compacted file written beside it would be
lost at the next snapshot (or would lose what the worker learned since). Instead commands/optimize.py
writes `<state_dir>/optimize/request.json`; each running worker looks at it once per loop (one stat,
like the feedback rules file), applies it in-process at a batch boundary, snapshots at once and writes
`<state_dir>/optimize/worker-N.json` with its before/after figures, which the command waits for.
A worker holds a shared flock on `<state_dir>/locks/worker-N.lock` for its life (storage/locks.py): a
worker the command can lock exclusively is not running, and the command compacts its files itself
while holding that lock (a worker starting meanwhile waits for it). Neighbours: worker/detector.py
(calls OptimizeRequests.poll and compact), parsing/miner.py (merge_near_duplicates, rebuild_indexes).
"""
import json
import logging
import os

from anomaly_detector.alerting.outbox import write_json_atomic

log = logging.getLogger(__name__)
REQUEST_FILE = "request.json"


def optimize_dir(state_dir):
    return os.path.join(state_dir, "optimize")


def result_path(state_dir, index):
    return os.path.join(optimize_dir(state_dir), "worker-%d.json" % index)


def read_json(path):
    """The object in `path`, or None when absent or not a JSON object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_request(state_dir, request_id, merge_min_values):
    os.makedirs(optimize_dir(state_dir), exist_ok=True)
    write_json_atomic(os.path.join(optimize_dir(state_dir), REQUEST_FILE),
                      {"id": request_id, "merge_min_values": int(merge_min_values)})


def withdraw_request(state_dir):
    """Remove the request once every running worker applied it."""
    try:
        os.unlink(os.path.join(optimize_dir(state_dir), REQUEST_FILE))
    except FileNotFoundError:
        pass


def file_bytes(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def compact(pipeline, merge_min_values):
    """Compact a Pipeline's models in memory: merge near-duplicate templates, drop what the engine
    learned of the merged ids' parameters, rebuild the miner's indexes. Returns (before, after, merged,
    shapes forgotten) with before/after as miner.counts()."""
    miner = pipeline.miner
    before = miner.counts()
    merged = miner.merge_near_duplicates(merge_min_values)
    widened = miner.take_widened()
    if widened:
        pipeline.engine.templates_widened(widened)   # the baselines of merged ids are stale now
    forgotten = miner.rebuild_indexes()
    return before, miner.counts(), merged, forgotten


class OptimizeRequests:
    """A worker's view of the request file: poll() costs one stat, returns a request not yet applied."""

    def __init__(self, state_dir, index):
        self.path = os.path.join(optimize_dir(state_dir), REQUEST_FILE)
        self.result = result_path(state_dir, index)
        self._seen = None
        done = read_json(self.result)
        self._applied = done.get("id") if done else None   # a restarted worker does not apply it twice

    def poll(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return None
        self._seen = seen
        request = read_json(self.path)
        if not request or request.get("id") == self._applied:
            return None
        try:
            int(request["merge_min_values"])
        except (KeyError, TypeError, ValueError):
            log.error("optimize request %s unusable (no merge_min_values); ignored", self.path)
            return None
        return request

    def done(self, request, figures):
        """Record that `request` was applied, with its figures, for the command waiting on it."""
        self._applied = request["id"]
        write_json_atomic(self.result, dict(figures, id=request["id"]))
