"""learning_model_health: whether every detector worker's models are warmed up and being persisted.

Read by the sidecar's reader thread (metrics/sidecar.py) from the model snapshots the workers write
(worker/detector.py snapshot() every [service] snapshot_interval_seconds, detection/engine.py save():
<state_dir>/baselines/worker-<i>/detection.json, replaced atomically). A snapshot is parsed again
only when its mtime changes, so the once-a-second reading costs one stat() per worker.
"""
import os
import time

from anomaly_detector.storage.atomic import SnapshotError, peek_json_snapshot
from anomaly_detector.storage.layout import worker_paths

# A snapshot older than this many intervals (plus the slack of a busy batch) is "not persisting".
STALE_INTERVALS = 2
STALE_SLACK_SECONDS = 30.0
WARM, IDLE, LEARNING, STALE = "warm", "idle", "learning", "stale"


def past_warm_up(meta, warmup_lines, warmup_seconds):
    """Whether an engine snapshot's meta is past warm-up as the engine judges it (detection/engine.py):
    warmup_lines lines seen and warmup_seconds of event time since its first line."""
    first, last = meta.get("first_time"), meta.get("now")
    return (int(meta.get("lines_seen") or 0) >= warmup_lines and first is not None and last is not None
            and float(last) - float(first) >= warmup_seconds)


class ModelHealth:
    """value() is 1 when each worker's snapshot is fresh, at least one worker is past its warm-up and
    none is in it (a worker that has seen no line yet, its ring idle, holds no model to judge), else 0.

    Warm-up as the engine judges it (detection/engine.py): [detection] warmup_lines lines seen and
    warmup_seconds of event time since its first line.
    """

    def __init__(self, cfg, workers):
        self.paths = [worker_paths(cfg["paths"]["state_dir"], i).detection_baselines for i in range(workers)]
        self.max_age = STALE_INTERVALS * cfg["service"]["snapshot_interval_seconds"] + STALE_SLACK_SECONDS
        self.warmup_lines = cfg["detection"]["warmup_lines"]
        self.warmup_seconds = cfg["detection"]["warmup_seconds"]
        self._seen = {}   # path -> (mtime, state)

    def value(self, now=None):
        now = time.time() if now is None else now
        states = [self._state(path, now) for path in self.paths]
        return int(WARM in states and all(state in (WARM, IDLE) for state in states))

    def _state(self, path, now):
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return STALE          # no snapshot yet (a first start) or the state directory is gone
        if now - mtime > self.max_age:
            return STALE
        seen = self._seen.get(path)
        if seen is None or seen[0] != mtime:
            seen = self._seen[path] = (mtime, self._read_state(path))
        return seen[1]

    def _read_state(self, path):
        """WARM, IDLE or LEARNING from the snapshot's engine meta (a file that cannot be read: LEARNING)."""
        try:
            meta = peek_json_snapshot(path, "detection-baselines")["meta"]
            if int(meta.get("lines_seen", 0)) == 0:
                return IDLE
            warm = past_warm_up(meta, self.warmup_lines, self.warmup_seconds)
        except (OSError, SnapshotError, KeyError, TypeError, ValueError):
            return LEARNING
        return WARM if warm else LEARNING
