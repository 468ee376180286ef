"""Where the daemon keeps its state under state_dir, and the move from the layout of older releases.

    <state_dir>/baselines/worker-<N>/templates.json, detection.json   templates, volume baselines, open incidents
    <state_dir>/baselines/vocabulary.jsonl                             template ids shared by every worker
    <state_dir>/statistics/worker-<N>/detection.json                   parameter statistics, workflows
    <state_dir>/alerting/worker-<N>/tracker.json                       incident numbering of the alert events
    <state_dir>/checkpoints/, spool/, outbox/, dead-letter/            inputs, alerter, poison lines

Each snapshot file has its older generations beside it (`.prev`, `.prev2`, ...: storage/atomic.py). baselines/
and statistics/ are at the top so a backup can archive them by name; older releases kept them under
`<state_dir>/workers/<N>/`, which migrate_layout() moves once, at the supervisor's start (before any
worker runs), a directory rename at a time, so a start interrupted half-way finishes on the next.
`replay --save-state DIR` writes the flat layout (DIR/baselines/, DIR/statistics/) of one model
set; `replay --from-state` reads either that or a daemon's state_dir (worker 0's models).
"""
import logging
import os
from dataclasses import dataclass

from anomaly_detector.storage.atomic import fsync_dir, generation_paths

log = logging.getLogger(__name__)
KINDS = ("baselines", "statistics", "alerting")   # the per-worker directories, each under its own top
OLD_WORKERS_DIR = "workers"
OLD_DEAD_LETTER = "dead-letter.jsonl"                        # the default dead-letter file of older releases
DEAD_LETTER = os.path.join("dead-letter", "dead-letter.jsonl")   # ... and now (worker.detector.dead_letter_path)


@dataclass(frozen=True)
class StatePaths:
    """The directories one model set (a worker's, or a replay's) is saved in."""
    baselines: str
    statistics: str
    alerting: str

    @property
    def templates(self):
        return os.path.join(self.baselines, "templates.json")

    @property
    def detection_baselines(self):
        return os.path.join(self.baselines, "detection.json")

    @property
    def detection_statistics(self):
        return os.path.join(self.statistics, "detection.json")


WORKER_PREFIX = "worker-"


def worker_dir_name(index):
    return "%s%d" % (WORKER_PREFIX, index)


def every_worker_pattern(state_dir, kind):
    """A glob pattern matching every worker's directory of `kind` (one of KINDS) under state_dir."""
    return os.path.join(state_dir, kind, WORKER_PREFIX + "*")


def vocabulary_path(state_dir):
    """The deployment's template vocabulary (parsing/vocabulary.py), shared by every worker."""
    return os.path.join(state_dir, "baselines", "vocabulary.jsonl")


def worker_paths(state_dir, index):
    """Worker `index`'s directories under the daemon's state_dir."""
    name = worker_dir_name(index)
    return StatePaths(*(os.path.join(state_dir, kind, name) for kind in KINDS))


def flat_paths(directory):
    """One model set directly under `directory` (replay --save-state / --from-state)."""
    return StatePaths(*(os.path.join(directory, kind) for kind in KINDS))


def as_paths(where):
    """StatePaths as given, or the flat layout of a directory path."""
    return where if isinstance(where, StatePaths) else flat_paths(where)


def replay_paths(directory):
    """What replay --from-state reads: the flat layout when DIR/baselines holds models, else worker 0's
    models of a daemon's state_dir."""
    flat = flat_paths(directory)
    if any(os.path.exists(g) for g in generation_paths(flat.templates) + generation_paths(flat.detection_baselines)):
        return flat
    return worker_paths(directory, 0)


def migrate_layout(state_dir):
    """Move `<state_dir>/workers/<N>/<kind>/` to `<state_dir>/<kind>/worker-<N>/`, and the old default
    dead-letter file into `dead-letter/`; returns how many moved.

    A target that already exists is left alone (the new layout wins) and the old directory kept, with a
    WARNING naming both; nothing is ever overwritten or deleted."""
    moved = _move(os.path.join(state_dir, OLD_DEAD_LETTER), os.path.join(state_dir, DEAD_LETTER), os.path.isfile)
    old_root = os.path.join(state_dir, OLD_WORKERS_DIR)
    try:
        workers = sorted(name for name in os.listdir(old_root) if name.isdigit())
    except FileNotFoundError:
        workers = []
    for name in workers:
        for kind in KINDS:
            moved += _move(os.path.join(old_root, name, kind), os.path.join(state_dir, kind, worker_dir_name(int(name))))
        _remove_if_empty(os.path.join(old_root, name))
    _remove_if_empty(old_root)
    if moved:
        log.info("state layout: moved %d item%s of the old layout (%s/<N>/<kind>/ to %s/<kind>/worker-<N>/, "
                 "%s to %s)", moved, "" if moved == 1 else "s", old_root, state_dir, OLD_DEAD_LETTER, DEAD_LETTER)
    return moved


def _move(source, target, present=os.path.isdir):
    if not present(source):
        return 0
    if os.path.exists(target):
        log.warning("state layout: %s and %s both exist; keeping %s, the old one is left where it is", source,
                    target, target)
        return 0
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(source, target)
    fsync_dir(os.path.dirname(target))
    fsync_dir(os.path.dirname(source))
    return 1


def _remove_if_empty(directory):
    try:
        os.rmdir(directory)
    except OSError:
        pass
