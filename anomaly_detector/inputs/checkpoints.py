"""Committed read offsets of tailed files, keyed by device + inode and checked by fingerprint.

Entries outlive the file's descriptor and its absence from the glob: they go only when the file is
deleted, or when not touched for max_age_seconds (checkpoint_retention_hours; swept and logged on save).
file_tail.FileTailer records and commits through this store; storage.atomic writes it (checksummed,
previous generation kept, a corrupt file set aside), so a crash mid-save never loses checkpoints.
"""
import logging
import os
import time
from dataclasses import dataclass

from anomaly_detector.inputs.fingerprint import Fingerprint
from anomaly_detector.storage.atomic import generation_paths, read_json_snapshot, write_json_snapshot

SNAPSHOT_KIND = "file_checkpoints"
SCHEMA_VERSION = 1
DEFAULT_MAX_AGE_SECONDS = 7 * 86400
DEFAULT_MAX_ENTRIES = 100_000
TOUCH_RESOLUTION_SECONDS = 60.0

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    """Where reading resumes: the offset just after the last line the consumer committed."""

    device: int
    inode: int
    fingerprint: Fingerprint
    offset: int
    path: str
    updated: float
    ring: int = -1      # the ring (worker) the input gave the file's lines to; -1 before any

    def to_json(self):
        obj = {"device": self.device, "inode": self.inode, "fingerprint": self.fingerprint.to_json(),
               "offset": self.offset, "path": self.path, "updated": self.updated}
        if self.ring >= 0:
            obj["ring"] = self.ring
        return obj

    @classmethod
    def from_json(cls, obj):
        return cls(int(obj["device"]), int(obj["inode"]), Fingerprint.from_json(obj["fingerprint"]),
                   int(obj["offset"]), str(obj["path"]), float(obj["updated"]), int(obj.get("ring", -1)))


class CheckpointStore:
    """In-memory checkpoints, saved atomically by `save()` / `save_if_due()`.

    `is_new` is True when no checkpoint file (nor its previous generation) existed: the tailer
    applies `start_at` only then, so files created while the daemon was down are read from 0.
    Entries not touched for `max_age_seconds` are pruned on save, and beyond `max_entries` the least
    recently touched go first (counted in `.pruned`), so the file stays small whatever the rotation rate.
    """

    def __init__(self, path, max_age_seconds=DEFAULT_MAX_AGE_SECONDS, max_entries=DEFAULT_MAX_ENTRIES,
                 clock=time.time):
        self.path = path
        self.max_age_seconds = float(max_age_seconds)
        self.max_entries = int(max_entries)
        self._clock = clock
        self._entries = {}
        self._dirty = False
        self._last_save = float("-inf")
        self.save_errors = 0
        self.pruned = 0
        self.is_new = not any(os.path.exists(g) for g in generation_paths(path))
        self.loaded_mtime = self._mtime()   # when the previous run last saved: files written later are unread
        self._load()

    def _mtime(self):
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    def _load(self):
        got = read_json_snapshot(self.path, SNAPSHOT_KIND, SCHEMA_VERSION)
        if got is None:
            return
        _, obj = got
        raw_entries = obj.get("entries") if isinstance(obj, dict) else None
        if not isinstance(raw_entries, list):
            log.error("%s: checkpoint file has no entry list; starting without checkpoints", self.path)
            return
        for raw in raw_entries:
            try:
                entry = Checkpoint.from_json(raw)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("%s: dropping malformed checkpoint entry %r: %s", self.path, raw, exc)
                continue
            self._entries[(entry.device, entry.inode)] = entry

    def __len__(self):
        return len(self._entries)

    def entries(self):
        return list(self._entries.values())

    def lookup(self, device, inode):
        return self._entries.get((device, inode))

    def record(self, device, inode, fingerprint, offset, path):
        """Create or replace the entry for a file the tailer starts reading at `offset` (its ring stays)."""
        old = self._entries.get((device, inode))
        self._entries[(device, inode)] = Checkpoint(device, inode, fingerprint, int(offset), path, self._clock(),
                                                    old.ring if old is not None else -1)
        self._dirty = True

    def ring_of(self, device, inode):
        """The ring the file's lines went to before (also in an earlier run), or None."""
        entry = self._entries.get((device, inode))
        return entry.ring if entry is not None and entry.ring >= 0 else None

    def set_ring(self, device, inode, ring):
        """Remember the file's ring, so that after a restart its lines go to the same worker (its models)."""
        entry = self._entries.get((device, inode))
        if entry is not None and entry.ring != int(ring):
            entry.ring = int(ring)
            self._dirty = True

    def update_fingerprint(self, device, inode, fingerprint):
        entry = self._entries.get((device, inode))
        if entry is not None and entry.fingerprint != fingerprint:
            entry.fingerprint = fingerprint
            self._dirty = True

    def commit(self, device, inode, offset, path=None):
        """Advance the committed offset; False for an unknown file or an offset that is not ahead.

        Only `record()` moves an offset back (a truncated file starting over at 0), so a late or
        repeated commit can never make a restart re-read more than it must.
        """
        entry = self._entries.get((device, inode))
        if entry is None or int(offset) <= entry.offset:
            return False
        entry.offset = int(offset)
        if path is not None:
            entry.path = path
        entry.updated = self._clock()
        self._dirty = True
        return True

    def touch(self, device, inode, path):
        """The file is still there: keep its entry from being pruned."""
        entry = self._entries.get((device, inode))
        now = self._clock()
        # refreshed at most once a minute, so an idle tailer does not rewrite the file every interval
        if entry is not None and (entry.path != path or now - entry.updated > TOUCH_RESOLUTION_SECONDS):
            entry.path = path
            entry.updated = now
            self._dirty = True

    def forget(self, device, inode):
        if self._entries.pop((device, inode), None) is not None:
            self._dirty = True

    def prune(self):
        """Drop entries not touched for max_age_seconds, then the oldest beyond max_entries; returns how many."""
        oldest = self._clock() - self.max_age_seconds
        stale = [key for key, entry in self._entries.items() if entry.updated < oldest]
        expired = len(stale)
        excess = len(self._entries) - len(stale) - self.max_entries
        if excess > 0:
            stale_set = set(stale)
            by_age = sorted((e.updated, key) for key, e in self._entries.items() if key not in stale_set)
            stale += [key for _, key in by_age[:excess]]
        for key in stale:
            del self._entries[key]
        if stale:
            self._dirty = True
            self.pruned += len(stale)
            log.info("%s: %d checkpoints swept (%d of files not seen for %.0f h, %d beyond %d entries)",
                     self.path, len(stale), expired, self.max_age_seconds / 3600, len(stale) - expired,
                     self.max_entries)
        return len(stale)

    def save(self):
        """Prune and write atomically; an I/O error (disk full) is logged and retried on the next save."""
        self.prune()
        payload = {"entries": [entry.to_json() for entry in self._entries.values()]}
        try:
            write_json_snapshot(self.path, SNAPSHOT_KIND, SCHEMA_VERSION, payload)
        except OSError as exc:
            self.save_errors += 1
            log.error("cannot save checkpoints to %s (will retry): %s", self.path, exc)
            return False
        self._dirty = False
        self.is_new = False
        self._last_save = time.monotonic()
        return True

    def save_if_due(self, min_interval_seconds):
        """Save when something changed and min_interval_seconds passed since the last save."""
        if not self._dirty or time.monotonic() - self._last_save < min_interval_seconds:
            return False
        return self.save()
