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
import time

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


def make_request(request_id, retention):
    """What a compaction asks, from the command's [retention] section."""
    return {"id": request_id, "merge_min_values": int(retention["merge_min_values"]),
            "stale_template_days": int(retention["stale_template_days"])}


def write_request(state_dir, request):
    os.makedirs(optimize_dir(state_dir), exist_ok=True)
    write_json_atomic(os.path.join(optimize_dir(state_dir), REQUEST_FILE), request)


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


def compact(pipeline, request, now=None):
    """Compact a Pipeline's models in memory as `request` (make_request) asks: merge near-duplicate
    templates, prune archived templates evicted more than stale_template_days ago, drop what the engine
    learned of the parameters of both (stale baselines), rebuild the miner's indexes. Returns the
    figures: before/after (miner.counts()), merged, pruned, shapes_dropped."""
    miner = pipeline.miner
    now = time.time() if now is None else now
    before = miner.counts()
    merged = miner.merge_near_duplicates(request["merge_min_values"])
    pruned = miner.prune_archive(now - request["stale_template_days"] * 86400.0)
    stale = sorted(set(miner.take_widened()) | set(pruned))
    if stale:
        pipeline.engine.templates_widened(stale)   # what was learned of these ids' parameters is stale now
    forgotten = miner.rebuild_indexes()
    return {"before": before, "after": miner.counts(), "merged": merged, "pruned": len(pruned),
            "shapes_dropped": forgotten}


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
            int(request["merge_min_values"]), int(request["stale_template_days"])
        except (KeyError, TypeError, ValueError):
            log.error("optimize request %s unusable (no merge_min_values or stale_template_days); ignored",
                      self.path)
            return None
        return request

    def done(self, request, figures):
        """Record that `request` was applied, with its figures, for the command waiting on it."""
        self._applied = request["id"]
        write_json_atomic(self.result, dict(figures, id=request["id"]))
