"""`anomaly_detector --cleanup-old-data`: apply [retention] to state_dir and log_dir, print what went.

Called by cli.py; select() is pure (a config, a clock) so the unit tests check what is chosen without
removing anything. Neighbours whose files it reads: storage/atomic.py (generations, `*.bad-<time>`),
storage/layout.py (worker directories), alerting/outbox.py (segments, per-sink checkpoints),
inputs/spool.py (segments, committed offset).

Safe while the daemon runs, because it only removes what no process of the daemon reads or writes again:
- a state file's kept generations (snapshot_generations of them) are never candidates, only `.prevK`
  with K past them (left by a lowered snapshot_generations) and files set aside as damaged;
- an outbox segment only when every sink's checkpoint is past its last event (the writer deletes such
  segments itself; this catches those left by a worker gone), never a writer's newest segment;
- a spool segment only when the next one starts at or before the committed offset (the reader deletes
  those too), never the last one;
- the directories of workers no longer configured, rotated logs and rotated dead-letter files, never
  the live files (the daemon appends to them).
Each is also age-gated by its [retention] *_days key (the file's last change). A file the daemon
removed meanwhile is skipped. Checkpoints are read without side effects (a damaged one is not set
aside here: that is the owner's job at its next load). One cleanup runs at a time (locks/cleanup.lock).
"""
import json
import os
import re
import shutil
import time
from dataclasses import dataclass

import click

from anomaly_detector.alerting import outbox
from anomaly_detector.alerting.sinks import sink_sections
from anomaly_detector.alerting.sinks.redis_stream import FLEET_WRITER
from anomaly_detector.inputs import spool
from anomaly_detector.storage import locks
from anomaly_detector.storage.atomic import SnapshotError, _decode, generation_paths
from anomaly_detector.storage.layout import DEAD_LETTER, KINDS, WORKER_PREFIX

DAY_SECONDS = 86400.0
CATEGORIES = ("state", "workers", "outbox", "spool", "logs", "dead-letter")
_BAD = re.compile(r"\.bad-\d{8}T\d{6}Z(-\d+)?$")
_EXTRA_GENERATION = re.compile(r"\.prev(\d+)$")
_ROTATED_LOG = re.compile(r"^.+\.log[.-].+$")     # anomaly-detector.log.1, access.log.2.gz, x.log-20260101


@dataclass(frozen=True)
class Candidate:
    """One file or directory to remove: its category (CATEGORIES), path, bytes and why."""
    category: str
    path: str
    size: int
    why: str


def select(cfg, now=None):
    """[Candidate] of everything [retention] says may go now, in category order."""
    now = time.time() if now is None else now
    retention, state_dir = cfg["retention"], cfg["paths"]["state_dir"]

    def cutoff(key):
        return now - retention[key] * DAY_SECONDS
    found = _state_files(state_dir, retention["snapshot_generations"], cutoff("statistics_days"))
    found += _retired_workers(state_dir, cfg["processing"]["workers"], cutoff("statistics_days"))
    found += _outbox_segments(os.path.join(state_dir, "outbox"), [n for n, _ in sink_sections(cfg)],
                              cutoff("outbox_days"), [n for n, sec in sink_sections(cfg) if sec["type"] == "redis"])
    found += _spool_segments(os.path.join(state_dir, "spool"), cutoff("spool_days"))
    found += _rotated(cfg["paths"]["log_dir"], _ROTATED_LOG.match, "logs", "rotated log", cutoff("logs_days"))
    dead = cfg["outputs"]["dead_letter"] or os.path.join(state_dir, DEAD_LETTER)
    base = os.path.basename(dead)
    found += _rotated(os.path.dirname(dead), lambda n: n != base and n.startswith((base + ".", base + "-")),
                      "dead-letter", "rotated dead-letter file", cutoff("dead_letter_days"))
    return found


def _stat(path):
    try:
        return os.stat(path, follow_symlinks=False)
    except OSError:
        return None


def _old_file(path, before):
    st = _stat(path)
    return st if st is not None and os.path.isfile(path) and not os.path.islink(path) and st.st_mtime < before \
        else None


def _state_files(state_dir, generations, before):
    """Damaged files set aside, and generations past snapshot_generations, anywhere under state_dir."""
    found = []
    for root, dirs, files in os.walk(state_dir):
        dirs[:] = [d for d in dirs if d not in ("spool", "outbox")]   # their own rules below
        for name in sorted(files):
            path = os.path.join(root, name)
            extra = _EXTRA_GENERATION.search(name)
            if _BAD.search(name):
                why = "damaged state file set aside"
            elif extra and int(extra.group(1)) >= generations:
                why = "generation past snapshot_generations = %d" % generations
            else:
                continue
            st = _old_file(path, before)
            if st is not None:
                found.append(Candidate("state", path, st.st_size, why))
    return found


def _retired_workers(state_dir, workers, before):
    """worker-N directories (N >= workers) of baselines/, statistics/, alerting/ untouched since `before`."""
    found = []
    for kind in KINDS:
        top = os.path.join(state_dir, kind)
        try:
            names = sorted(os.listdir(top))
        except OSError:
            continue
        for name in names:
            number = name[len(WORKER_PREFIX):]
            if not name.startswith(WORKER_PREFIX) or not number.isdigit() or int(number) < workers:
                continue
            path = os.path.join(top, name)
            if _running(state_dir, int(number)):
                continue
            newest, size = _tree_age_and_size(path)
            if newest is not None and newest < before:
                found.append(Candidate("workers", path, size, "state of worker %s, not configured ([processing] "
                                       "workers = %d)" % (number, workers)))
    return found


def _running(state_dir, index):
    """Whether a worker `index` runs now (it holds its lock: storage/locks.py), say a daemon not yet
    reloaded on a config file with fewer workers."""
    path = locks.lock_path(state_dir, "worker-%d" % index)
    if not os.path.exists(path):
        return False
    try:
        locks.release(locks.take(path))
    except locks.LockBusy:
        return True
    except OSError:
        return True    # cannot tell: keep it
    return False


def _tree_age_and_size(path):
    """(newest mtime, bytes) of a directory tree; (None, 0) when it is gone or not a directory."""
    st = _stat(path)
    if st is None or not os.path.isdir(path) or os.path.islink(path):
        return None, 0
    newest, size = st.st_mtime, 0
    for root, _dirs, files in os.walk(path):
        for name in files + [""]:
            fst = _stat(os.path.join(root, name) if name else root)
            if fst is not None:
                newest = max(newest, fst.st_mtime)
                size += fst.st_size if name else 0
    return newest, size


def _outbox_segments(directory, sinks, before, redis_sinks=()):
    """Segments whose every event all sinks delivered; with no sink configured, the sinks that left a
    checkpoint decide (none: nothing was delivered, nothing goes). The "fleet" writer's events (read
    from a redis sink's stream, alerting/fleet.py) are for the other sinks only."""
    if not sinks:
        try:
            sinks = [name[:-5] for name in os.listdir(os.path.join(directory, "checkpoints")) if name.endswith(".json")]
        except OSError:
            sinks = []
    if not sinks:
        return []
    checkpoints = {s: _peek_json(os.path.join(directory, "checkpoints", outbox.sink_file_name(s))) for s in sinks}
    found = []
    by_writer = {}
    for writer, first, path in outbox.segments(directory):
        by_writer.setdefault(writer, []).append((first, path))
    for writer, segs in by_writer.items():
        deciding = [c for s, c in checkpoints.items() if writer != FLEET_WRITER or s not in redis_sinks]
        delivered = min((_delivered(c, writer) for c in deciding), default=0)
        found += _passed_segments(segs, delivered + 1, before, "outbox", lambda first, end, writer=writer:
                                  "alerts %d..%d of %s delivered to every sink" % (first, end - 1, writer))
    return found


def _passed_segments(segs, limit, before, category, why):
    """Candidates of the old segments [(first, path)] wholly below `limit` (the next segment starts at
    or before it), never the newest segment; why(first, next_first) says what they held."""
    found = []
    for (first, path), (next_first, _next) in zip(segs, segs[1:]):
        if next_first > limit:
            break
        st = _old_file(path, before)
        if st is not None:
            found.append(Candidate(category, path, st.st_size, why(first, next_first)))
    return found


def _delivered(checkpoint, writer):
    try:
        return int(checkpoint["writers"].get(writer, 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return 0


def _peek_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _spool_segments(top, before):
    """Per network input: segments wholly below its committed offset, never the last one."""
    found = []
    try:
        inputs = sorted(os.listdir(top))
    except OSError:
        return found
    for name in inputs:
        directory = os.path.join(top, name)
        found += _passed_segments(spool.list_segments(directory), peek_committed(directory), before, "spool",
                                  lambda start, end, name=name: "spooled lines of input %s committed (offset "
                                  "%d..%d)" % (name, start, end))
    return found


def peek_committed(directory):
    """The spool's committed offset (0 when none is readable), like spool.read_committed but without
    setting damaged files aside or sweeping temporaries: those belong to the running reader."""
    for candidate in generation_paths(os.path.join(directory, spool.COMMITTED_FILE)):
        try:
            _version, payload = _decode(candidate, spool.SNAPSHOT_KIND, spool.SCHEMA_VERSION)
            return max(0, int(json.loads(payload)["committed"]))
        except (OSError, SnapshotError, ValueError, KeyError, TypeError):
            continue
    return 0


def _rotated(directory, matches, category, what, before):
    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return found
    for name in names:
        path = os.path.join(directory, name)
        if matches(name):
            st = _old_file(path, before)
            if st is not None:
                found.append(Candidate(category, path, st.st_size, what))
    return found


def remove(candidates):
    """Remove each candidate; returns ([(candidate, removed: bool, error or "")]) - one gone already is
    skipped silently (the daemon removed it), one that cannot be removed is reported."""
    results = []
    for c in candidates:
        try:
            if os.path.isdir(c.path) and not os.path.islink(c.path):
                shutil.rmtree(c.path)
            else:
                os.unlink(c.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            results.append((c, False, exc.strerror or str(exc)))
            continue
        results.append((c, True, ""))
    return results


def human_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def run_cleanup(cfg):
    """Take the cleanup lock, remove, print one line per item and a summary; return the exit code."""
    state_dir = cfg["paths"]["state_dir"]
    try:
        fd = locks.take(locks.lock_path(state_dir, "cleanup"))
    except locks.LockBusy as busy:
        click.echo("anomaly_detector: error: another --cleanup-old-data is running (it holds %s); not started"
                   % busy, err=True)
        return 3
    try:
        results = remove(select(cfg))
    finally:
        locks.release(fd)
    freed = failed = 0
    per = {}
    for c, ok, error in results:
        if ok:
            click.echo("removed %s (%s): %s" % (c.path, human_bytes(c.size), c.why))
            freed += c.size
            count, size = per.get(c.category, (0, 0))
            per[c.category] = (count + 1, size + c.size)
        else:
            failed += 1
            click.echo("anomaly_detector: warning: cannot remove %s: %s" % (c.path, error), err=True)
    for category in CATEGORIES:
        if category in per:
            click.echo("%s: %d removed, %s freed" % (category, per[category][0], human_bytes(per[category][1])))
    click.echo("cleanup: %d removed, %s freed%s" % (sum(c for c, _ in per.values()), human_bytes(freed),
                                                  ", %d could not be removed" % failed if failed else ""))
    return 3 if failed else 0
