"""Tail files matched by globs through rename rotation, copytruncate, deletion and inode reuse, losing nothing.

Neighbours: checkpoints.CheckpointStore keeps committed offsets, fingerprint tells a reused inode from the
old file, parsing.framing.LineFramer cuts bounded lines; the input process polls, scores, then commits.

Delivery is at-least-once. A chunk's `end_offset` is just after its last newline; the consumer calls
`commit(chunk.key, chunk.end_offset)` once those lines are scored, and only committed offsets reach the
checkpoint file, so after a crash the uncommitted lines are read again (never skipped).

Rotation handled: rename (the old inode is read to EOF, then closed after rotate_wait_seconds; a new
file at the path starts at 0); copytruncate (size below the read offset, or a changed first-bytes hash,
restarts the inode at 0; a copy matched by the glob and named like a rotation is recognised by its
bytes and continued after what was already read, so nothing is read twice; one found while logrotate
is still writing it waits dormant while it is a prefix of its origin, and an origin truncated between
the poll's check and the copy's opening is checked again first); deletion (read to EOF,
fd closed); inode reuse (device + inode + fingerprint). At start-up, files rotated out of the glob
while the daemon was down are drained: checkpointed ones found by inode, unknown ones by rotation
name and a modification time after the previous run's last checkpoint save.

Turns under max_open_files: matched files without a descriptor wait in a queue, oldest first. A file
read to its end and idle for two polls, or still growing after a turn of _TURN_SECONDS, is closed
("parked") when files wait and everything it delivered is committed, and reopened by identity
(device + inode + fingerprint: its checkpoint) when it grows, so every file is read in turns and
none twice. Checkpoints are kept for checkpoint retention after a
file leaves the glob (moved away, its directory unreadable): if it comes back, it resumes there.
A directory that cannot be listed is not taken for "all its files are gone".

Known windows, documented for operators:
- copytruncate: lines appended after logrotate copied the file and before it truncated it are lost
  unless read in between; open files are stat'ed and read on every poll (up to max_bytes_per_poll),
  not only on glob rescans, so that window is one poll when the tailer keeps up. If the copy is not matched by the glob, lines not yet read
  when the file is truncated are lost too (they are only in the copy): tail `app.log*`.
- a file created and then deleted (or rotated out of the glob) between two glob rescans is never seen.
- with more matching files than max_open_files, a file that waits for its turn is read late; one
  rotated out of the glob meanwhile is found again by inode in its directory and drained first, but
  one deleted (or moved to another directory) before its turn loses the lines it had not given yet.
- lines delivered from a deleted file but not committed before a crash cannot be read again.
- a reused inode whose new content begins with the same bytes as the old file's (fingerprint shorter
  than `fingerprint_bytes`) is taken for the old file; a copytruncate done while the daemon is down,
  or a crash while a copy waits for its origin's truncation, re-reads the copy (duplicates, no loss).
"""
import glob
import itertools
import logging
import os
import stat
import time
from collections import OrderedDict, deque
from typing import NamedTuple

from anomaly_detector.inputs.base import Chunk, Input
from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.fingerprint import (
    DEFAULT_FINGERPRINT_BYTES,
    fingerprint_fd,
    fingerprint_matches,
    read_range,
    tail_digest,
)
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES, LineFramer

log = logging.getLogger(__name__)

START_AT_CHOICES = ("end", "beginning")
# Closed rotated files whose late commits must still reach the checkpoint store.
_CLOSED_KEYS_KEPT = 4096
# Read positions remembered per file (with a hash of the bytes before each) to recognise a copy of it.
_MARKS_KEPT = 64
# Files truncated recently whose old content may turn up as a copy (logrotate copytruncate).
_TRUNCATED_KEPT = 16
# How much of a new file is compared with an open file to call it a copy (and per poll while it waits).
_COPY_COMPARE_BYTES = 64 << 10
# Rotated files compressed by logrotate are not text: never adopted as rotations of a tailed file.
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".lzma", ".zip", ".Z")
# Polls a file must sit at its end with nothing new before it may give its descriptor to a waiting file.
_IDLE_POLLS_BEFORE_PARK = 2
# The "max_open_files is the bottleneck" warning is repeated at most this often while files wait.
_DEFERRED_WARNING_SECONDS = 600.0
# A file that keeps growing holds its descriptor at most this long while others wait; then it stops
# reading and, once what it delivered is committed, goes to the back of the queue: busy files
# cannot starve the others, and a turn stays long enough to read a burst in few reopenings.
_TURN_SECONDS = 10.0
# A directory changed less than this before a scan may change again without its mtime moving
# (timestamps follow the kernel's clock tick): it is scanned once more.
_COARSE_MTIME_NS = 20_000_000
_generations = itertools.count(1)


class FileKey(NamedTuple):
    """Identity of one tailed file; `generation` changes when the same inode starts over from 0."""

    device: int
    inode: int
    generation: int


class _Lineage(NamedTuple):
    """What a file held before it was truncated: enough to recognise its copy and continue there."""

    key: FileKey
    path: str
    fingerprint: object
    marks: tuple
    committed: int
    line_end: int


class _Waiting:
    """A file waiting for a descriptor; `apply_start_at` when it was there at the very first start,
    `orphan` when it left the glob (rotated) with lines still unread: it is drained, then closed."""

    __slots__ = ("path", "apply_start_at", "counted", "orphan")

    def __init__(self, path, apply_start_at, orphan=False):
        self.path, self.apply_start_at, self.counted, self.orphan = path, apply_start_at, False, orphan


class _Parked:
    """A file closed at its end: it needs a turn again only once its size or mtime change."""

    __slots__ = ("path", "size", "mtime_ns")

    def __init__(self, path, size, mtime_ns):
        self.path, self.size, self.mtime_ns = path, size, mtime_ns


class _TailedFile:
    """One open file: where its next read starts, and where its last complete line ended."""

    def __init__(self, path, device, inode, fd, fingerprint, offset, framer):
        self.key = FileKey(device, inode, next(_generations))
        self.path = path
        self.fd = fd
        self.fingerprint = fingerprint
        self.checked_state = None    # (size, mtime_ns) when the prefix was last verified
        self.read_pos = offset      # bytes already handed to the framer
        self.line_end = offset      # just after the last newline read: where a restart resumes
        self.committed = offset
        self.framer = framer
        self.orphaned_at = None     # when the glob stopped finding it (renamed away or deleted)
        self.skip_to_newline = False
        self.marks = deque(maxlen=_MARKS_KEPT)   # (line_end, tail_digest) after recent reads
        self.copy_of = None         # origin FileKey while this copy waits for its origin to be truncated
        self.verified = 0           # bytes of a waiting copy found equal to its origin's
        self.known_size = 0
        self.idle_polls = 0         # consecutive reads that found nothing new at the end of the file
        self.idle_since = None      # when it was last found at its end with nothing new
        self.opened_at = 0.0        # when its turn began (clock of the tailer)
        self.yielding = False       # its turn is over: read nothing more, park once all is committed

    def lineage(self):
        return _Lineage(self.key, self.path, self.fingerprint, tuple(self.marks), self.committed, self.line_end)

    @property
    def ident(self):
        return self.key.device, self.key.inode


def _directory_stamp(directory):
    """(inode, mtime_ns) of a directory, None when it cannot be stat'ed."""
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _new_stats():
    return {"lines": 0, "bytes": 0, "rotations": 0, "truncations": 0, "read_errors": 0, "files_open": 0,
            "long_lines": 0, "deleted": 0, "files_deferred": 0, "deferrals": 0, "parked": 0, "resumed": 0,
            "copies": 0, "change_rescans": 0}


def _named_like_rotation(path, origin_path):
    """app.log -> app.log.1, app.log-20260101, app-20260101.log; not application.log nor app.log.2.gz."""
    if path == origin_path or os.path.dirname(path) != os.path.dirname(origin_path):
        return False
    name, origin_name = os.path.basename(path), os.path.basename(origin_path)
    if name.endswith(_COMPRESSED_SUFFIXES):
        return False
    stem = origin_name.split(".")[0]
    return name.startswith(origin_name) or name.startswith((stem + ".", stem + "-", stem + "_"))


class FileTailer(Input):
    """Non-blocking tailer: `poll()` returns chunks of new complete lines, `commit()` checkpoints them.

    patterns: one glob or a list of globs. start_at applies only to files present at the very first
    start (checkpoint store new) that have no checkpoint; files appearing later are read from 0.
    poll_interval: seconds between glob rescans (open files are read on every poll()).
    change_scan_seconds: when > 0, a change of a watched directory (the patterns' own directories
    and those of open files: a file created, renamed or removed there) also triggers a rescan, at
    most this often, so a new or rotated-in file is read within about a poll instead of poll_interval.
    rotate_wait_seconds: how long a file renamed out of the glob is still read after its last EOF
    check; a deleted file is closed as soon as it is read to EOF. Every bound is a parameter:
    max_open_files, max_bytes_per_poll (all files together), read_block_bytes, max_line_bytes.
    """

    @classmethod
    def build(cls, name, section, cfg):
        """The tailer of [inputs.<name>] with its checkpoints under state_dir/checkpoints/<name>.json."""
        processing = cfg["processing"]
        store = CheckpointStore(os.path.join(cfg["paths"]["state_dir"], "checkpoints", "%s.json" % name),
                                max_age_seconds=section["checkpoint_retention_hours"] * 3600.0)
        return cls(section["path"], store, max_line_bytes=processing["max_line_bytes"],
                   on_long_line=processing["on_long_line"], start_at=section["start_at"],
                   poll_interval=section["scan_interval_seconds"],
                   rotate_wait_seconds=section["rotate_wait_seconds"],
                   max_open_files=section["max_open_files"],
                   change_scan_seconds=section["change_scan_seconds"])

    def __init__(self, patterns, checkpoints, max_line_bytes=DEFAULT_MAX_LINE_BYTES, on_long_line="truncate",
                 start_at="end", poll_interval=1.0, rotate_wait_seconds=5.0, max_open_files=1024,
                 max_bytes_per_poll=1 << 20, read_block_bytes=64 << 10, fingerprint_bytes=DEFAULT_FINGERPRINT_BYTES,
                 checkpoint_interval_seconds=1.0, change_scan_seconds=0.0, clock=time.monotonic):
        if start_at not in START_AT_CHOICES:
            raise ValueError(f"start_at must be one of {START_AT_CHOICES}, not {start_at!r}")
        LineFramer(max_line_bytes, on_long_line)  # validates both before any file is opened
        for name, value in (("max_open_files", max_open_files), ("max_bytes_per_poll", max_bytes_per_poll),
                            ("read_block_bytes", read_block_bytes), ("fingerprint_bytes", fingerprint_bytes)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1")
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.checkpoints = checkpoints
        self.max_line_bytes = int(max_line_bytes)
        self.on_long_line = on_long_line
        self.start_at = start_at
        self.poll_interval = float(poll_interval)
        self.rotate_wait_seconds = float(rotate_wait_seconds)
        self.max_open_files = int(max_open_files)
        self.max_bytes_per_poll = int(max_bytes_per_poll)
        self.read_block_bytes = int(read_block_bytes)
        self.fingerprint_bytes = int(fingerprint_bytes)
        self.checkpoint_interval_seconds = float(checkpoint_interval_seconds)
        self.change_scan_seconds = float(change_scan_seconds)
        self._clock = clock
        self._dir_stamps = {}            # watched directory -> ((inode, mtime_ns) at the last scan, changed just before it)
        self._last_discovery = float("-inf")
        self._apply_start_at = checkpoints.is_new
        self._files = {}                 # (device, inode) -> _TailedFile
        self._closed = OrderedDict()     # FileKey of closed rotated files -> offset of their end
        self._truncated = deque(maxlen=_TRUNCATED_KEPT)   # _Lineage of recently truncated files
        self._copy_links = OrderedDict()  # origin FileKey -> [(device, inode)] of its copies
        self._failing_paths = set()      # paths whose open failed, logged once until they open
        self._waiting = OrderedDict()    # (device, inode) -> _Waiting: matched, not open, oldest first
        self._parked = {}                # (device, inode) -> (size, mtime_ns) when closed idle at its end
        self._unreadable_dirs = set()    # directories that could not be listed, logged once until readable
        self._last_deferred_warning = float("-inf")
        self._yielding = set()           # (device, inode) of busy files whose turn is over
        self._left = set()               # (device, inode) of files closed or dropped after leaving the glob
        self._resumed_quietly = 0
        self._next_discovery = float("-inf")
        self._discovered_once = False
        self._cursor = 0
        self.stats = _new_stats()

    # ---- public API -------------------------------------------------------------------------

    def poll(self):
        """Return a list of Chunk with the new complete lines; never blocks, bounded by max_bytes_per_poll."""
        now = self._clock()
        learned = False
        if now >= self._next_discovery or self._directories_changed(now):
            self._stamp_directories()
            learned = self._discover(now)
            self._last_discovery = now
            self._next_discovery = now + self.poll_interval
        elif self._waiting:
            learned = self._grant_turns(now)   # a file that fell idle since the last scan makes room
        if learned:
            # a new file's identity is on disk before any of its lines leave, so that after a crash
            # it is found again even if it was rotated out of the glob meanwhile
            self.checkpoints.save()
        else:
            self.checkpoints.save_if_due(self.checkpoint_interval_seconds)
        chunks = self._read_round(now)
        self.stats["files_open"] = len(self._files)
        return chunks

    def commit(self, key, offset):
        """The lines of `key` up to `offset` are scored: a restart resumes there."""
        for ident in self._copy_links.get(key, ()):
            self._commit_copy(ident, int(offset))
        tailed = self._files.get((key.device, key.inode))
        if tailed is not None:
            if tailed.key != key:
                return False     # a commit for a generation that was truncated or replaced
            offset = min(int(offset), tailed.line_end)
            if offset <= tailed.committed:
                return False
            tailed.committed = offset
            return self.checkpoints.commit(key.device, key.inode, offset, tailed.path)
        end = self._closed.get(key)
        if end is not None:
            if int(offset) >= end:
                # read and scored to its end; the checkpoint stays (retention) in case it comes back
                del self._closed[key]
            return self.checkpoints.commit(key.device, key.inode, min(int(offset), end))
        return False

    def _commit_copy(self, ident, offset):
        # The copy holds the origin's bytes up to its size: a line scored from the origin is
        # scored for the copy too, so a restart resumes the copy after it.
        copy = self._files.get(ident)
        if copy is None or offset > copy.known_size or offset <= copy.committed:
            return
        copy.committed = offset
        self.checkpoints.commit(ident[0], ident[1], offset, copy.path)

    def save_checkpoints(self):
        return self.checkpoints.save()

    def close(self, save_checkpoints=True):
        """Save committed offsets and close every file; unread and uncommitted lines are read on restart.

        save_checkpoints=False leaves the checkpoint file as the last periodic save wrote it, which
        is what a crash does (tests use it to simulate kill -9).
        """
        if save_checkpoints:
            self.checkpoints.save()
        for tailed in self._files.values():
            os.close(tailed.fd)
        self._files.clear()
        self.stats["files_open"] = 0

    def open_paths(self):
        """Paths of the files currently open (for tests and the admin status page)."""
        return sorted(tailed.path for tailed in self._files.values())

    # ---- discovery --------------------------------------------------------------------------

    def _directories_changed(self, now):
        """True when a watched directory changed since the last scan (change_scan_seconds apart at least).

        A directory's mtime moves when a file is created, renamed or removed in it; one stat per
        directory per poll. Its clock ticks coarsely (a few ms), so a directory that changed just
        before the last scan is scanned once more: a second change in the same tick leaves no trace.
        """
        if self.change_scan_seconds <= 0 or now < self._last_discovery + self.change_scan_seconds:
            return False
        for directory, (stamp, recent) in self._dir_stamps.items():
            if recent or _directory_stamp(directory) != stamp:
                self.stats["change_rescans"] += 1
                return True
        return False

    def _stamp_directories(self):
        """Remember the watched directories' state, before the scan: a change during it triggers another."""
        if self.change_scan_seconds <= 0:
            return
        directories = {os.path.dirname(p) or "." for p in self.patterns if not glob.has_magic(os.path.dirname(p))}
        directories.update(os.path.dirname(t.path) or "." for t in self._files.values())
        just_now = time.time_ns() - _COARSE_MTIME_NS
        self._dir_stamps = {}
        for directory in directories:
            stamp = _directory_stamp(directory)
            self._dir_stamps[directory] = (stamp, stamp is not None and stamp[1] >= just_now)

    def _glob(self):
        paths = set()
        for pattern in self.patterns:
            paths.update(glob.glob(pattern))
        return sorted(paths)

    def _discover(self, now):
        """Open new files, notice vanished ones; True when the checkpoints learned something new."""
        self._detect_truncations()
        learned = not self._discovered_once
        seen = set()
        unreadable = self._check_directories()
        for path in self._glob():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue     # removed between glob and stat
            except OSError as exc:
                self._note_open_failure(path, exc)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue     # a hard link or two overlapping globs
            seen.add(ident)
            tailed = self._files.get(ident)
            if tailed is None:
                self._note_matched(ident, path, st)
            else:
                tailed.path = path
                tailed.orphaned_at = None
                self.checkpoints.touch(st.st_dev, st.st_ino, path)
        for tailed in self._files.values():
            if (tailed.ident not in seen and tailed.orphaned_at is None
                    and (os.path.dirname(tailed.path) or ".") not in unreadable):
                self._mark_orphaned(tailed, now)
        # left the glob: their checkpoints stay (retention) and resume them if they come back
        self._follow_vanished(seen, unreadable)
        if not self._discovered_once:
            self._discovered_once = True
            self._recover_rotated(seen, now)
        opened = self._grant_turns(now)
        self._apply_start_at = False
        if self._resumed_quietly:
            log.info("resumed %d files at their checkpoints", self._resumed_quietly)
            self._resumed_quietly = 0
        return learned or opened

    def _note_matched(self, ident, path, st):
        """A matched file without a descriptor: it waits for a turn unless it is parked and unchanged."""
        self.checkpoints.touch(st.st_dev, st.st_ino, path)   # still matched: its checkpoint is not expired
        parked = self._parked.get(ident)
        if parked is not None:
            parked.path = path
            if (parked.size, parked.mtime_ns) == (st.st_size, st.st_mtime_ns):
                return       # closed at its end and not written since: nothing to read, no turn needed
        waiting = self._waiting.get(ident)
        if waiting is None:
            self._waiting[ident] = _Waiting(path, self._apply_start_at)
        else:
            waiting.path = path

    def _remember_left(self, ident):
        """A file gone from the glob: if it comes back and resumes, that is worth a line in the log."""
        self._left.add(ident)
        if len(self._left) > _CLOSED_KEYS_KEPT:
            self._left.pop()

    def _follow_vanished(self, seen, unreadable):
        """Waiting or parked files the glob no longer matches: follow a rotated one with unread lines.

        Found again by inode in its directory (app.log -> app.log.1), it keeps its place at the
        front of the queue as an orphan, to be drained like a rotated open file; otherwise it is
        dropped (its checkpoint stays for retention). In an unlistable directory nothing is decided.
        """
        listings = {}
        for table in (self._waiting, self._parked):
            for ident in [ident for ident in table if ident not in seen]:
                entry = table[ident]
                directory = os.path.dirname(entry.path) or "."
                if directory in unreadable:
                    continue
                del table[ident]
                self._remember_left(ident)
                if directory not in listings:
                    listings[directory] = self._inodes_in(directory)
                path = listings[directory].get(ident)
                if path is not None and self._has_unread(ident, path, entry):
                    apply_start_at = isinstance(entry, _Waiting) and entry.apply_start_at
                    self._waiting[ident] = _Waiting(path, apply_start_at, orphan=True)
                    self._waiting.move_to_end(ident, last=False)

    @staticmethod
    def _inodes_in(directory):
        found = {}
        try:
            with os.scandir(directory) as listing:
                for dirent in listing:
                    try:
                        st = dirent.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found[(st.st_dev, st.st_ino)] = dirent.path
        except OSError:
            pass
        return found

    def _has_unread(self, ident, path, entry):
        try:
            size = os.stat(path).st_size
        except OSError:
            return False
        checkpoint = self.checkpoints.lookup(*ident)
        if checkpoint is None:
            return isinstance(entry, _Waiting) and size > 0
        return size != checkpoint.offset

    def _check_directories(self):
        """Directories of the patterns and open files that cannot be listed (EACCES...): logged once, counted.

        glob() silently returns nothing for such a directory; its files are not gone, so they are
        neither orphaned nor read again from 0 when the directory can be listed again.
        """
        directories = {os.path.dirname(p) or "." for p in self.patterns if not glob.has_magic(os.path.dirname(p))}
        directories.update(os.path.dirname(t.path) or "." for t in self._files.values())
        unreadable = set()
        for directory in directories:
            try:
                with os.scandir(directory):
                    pass
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                unreadable.add(directory)
                self.stats["read_errors"] += 1
                if directory not in self._unreadable_dirs:
                    log.error("cannot list directory %s (its files keep their place; will keep retrying): %s",
                              directory, exc)
        for directory in self._unreadable_dirs - unreadable:
            log.info("directory %s can be listed again", directory)
        self._unreadable_dirs = unreadable
        return unreadable

    # ---- turns under max_open_files ---------------------------------------------------------

    def _grant_turns(self, now):
        """Open waiting files, oldest-waiting first, parking idle files so that every file gets turns.

        A file read to its end and idle for a poll or two, with all it delivered committed, gives its
        descriptor to a waiting file and joins the end of the queue when it grows; it is reopened by
        identity (device + inode + fingerprint, its checkpoint), so it resumes where it stopped.
        Returns True when a file was opened (its identity is new to the checkpoints).
        """
        if not self._waiting:
            self.stats["files_deferred"] = 0
            for ident in self._yielding:
                if ident in self._files:
                    self._files[ident].yielding = False
            self._yielding.clear()
            return False
        shortfall = len(self._waiting) - (self.max_open_files - len(self._files))
        if shortfall > 0:
            self._end_turns(shortfall, now)
        opened = False
        while self._waiting and len(self._files) < self.max_open_files:
            ident, waiting = self._waiting.popitem(last=False)
            self._parked.pop(ident, None)
            # The name was seen at the last scan; since then it may have been rotated: open the file
            # by identity, or the unread lines of the one renamed away would never be read.
            path = self._path_of(ident, waiting.path)
            if path is None:
                self._remember_left(ident)   # deleted or moved to another directory: its checkpoint stays
                continue
            tailed = self._open_new(path, apply_start_at=waiting.apply_start_at)
            opened = opened or tailed is not None
            if tailed is not None and tailed.ident != ident:
                # renamed between the stat and the open: another file has the name now; find it again
                self._waiting[ident] = _Waiting(path, waiting.apply_start_at, orphan=True)
                self._waiting.move_to_end(ident, last=False)
            elif tailed is not None and (waiting.orphan or path != waiting.path):
                tailed.orphaned_at = now     # rotated out of the glob while it waited: drain it, then close
        for waiting in self._waiting.values():
            if not waiting.counted:
                waiting.counted = True
                self.stats["deferrals"] += 1
        self.stats["files_deferred"] = len(self._waiting)
        if self._waiting and now - self._last_deferred_warning >= _DEFERRED_WARNING_SECONDS:
            self._last_deferred_warning = now
            log.warning("max_open_files = %d is the bottleneck: %d matching files wait for a descriptor "
                        "(they are read in turns; raise max_open_files to read them all at once)",
                        self.max_open_files, len(self._waiting))
        return opened

    def _path_of(self, ident, path):
        """`path` when it still names the file `ident`, else its new name in the same directory, or None."""
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == ident:
                return path
        except FileNotFoundError:
            pass
        except OSError:
            return path     # cannot tell (EACCES...): opening it reports why, and it is retried
        return self._inodes_in(os.path.dirname(path) or ".").get(ident)

    def _end_turns(self, wanted, now):
        """Free up to `wanted` descriptors: idle files first, then busy files whose turn is over."""
        idle = [t for t in self._files.values() if self._may_park(t) and t.idle_polls >= _IDLE_POLLS_BEFORE_PARK
                and t.committed >= t.line_end]
        idle.sort(key=lambda t: t.idle_since)
        freed = 0
        for tailed in idle:
            if freed == wanted:
                return
            freed += self._park(tailed)
        busy = sorted((t for t in self._files.values() if self._may_park(t) and not t.yielding
                       and now - t.opened_at >= _TURN_SECONDS), key=lambda t: t.opened_at)
        for tailed in busy[:max(0, wanted - freed - len(self._yielding))]:
            tailed.yielding = True
            self._yielding.add(tailed.ident)
        for ident in list(self._yielding):
            tailed = self._files.get(ident)
            if tailed is None or not self._may_park(tailed):
                # gone, rotated away (it must drain) or paired with a copy: it keeps its descriptor
                self._yielding.discard(ident)
                if tailed is not None:
                    tailed.yielding = False
            elif tailed.committed >= tailed.line_end:
                self._park(tailed)

    def _may_park(self, tailed):
        # rotated files drain to their end, and copies and their origins must stay paired
        return tailed.orphaned_at is None and tailed.copy_of is None and tailed.key not in self._copy_links

    def _park(self, tailed):
        """Close a file whose delivered lines are all committed; returns 1 when it was closed.

        Its checkpoint holds line_end, where it resumes. A file at its end is remembered by size and
        mtime (it needs a turn only once they change); a busy one goes straight to the back of the queue.
        """
        try:
            st = os.fstat(tailed.fd)
        except OSError:
            return 0
        if not tailed.yielding and st.st_size != tailed.read_pos:
            tailed.idle_polls = 0    # grew since its last read: read that first, or it is never read
            return 0
        os.close(tailed.fd)
        tailed.fd = None
        del self._files[tailed.ident]
        self._yielding.discard(tailed.ident)
        self.stats["parked"] += 1
        if st.st_size == tailed.read_pos:
            self._parked[tailed.ident] = _Parked(tailed.path, st.st_size, st.st_mtime_ns)
        else:
            self._waiting[tailed.ident] = _Waiting(tailed.path, False)
        return 1

    def _mark_orphaned(self, tailed, now):
        tailed.orphaned_at = now
        tailed.yielding = False      # a rotated or deleted file is read to its end, whoever waits
        self._yielding.discard(tailed.ident)
        try:
            deleted = os.fstat(tailed.fd).st_nlink == 0
        except OSError:
            deleted = False
        self.stats["deleted" if deleted else "rotations"] += 1

    def _note_open_failure(self, path, exc):
        self.stats["read_errors"] += 1
        if path not in self._failing_paths:
            self._failing_paths.add(path)
            log.error("cannot read %s (will keep retrying): %s", path, exc)

    def _open_new(self, path, resume=None, apply_start_at=False):
        if len(self._files) >= self.max_open_files:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._note_open_failure(path, exc)
            return None
        try:
            tailed = self._start_tailing(path, fd, resume, apply_start_at)
        except OSError as exc:
            os.close(fd)
            self._note_open_failure(path, exc)
            return None
        if tailed is None:
            os.close(fd)
            return None
        self._failing_paths.discard(path)
        tailed.opened_at = self._clock()
        self._files[tailed.ident] = tailed
        return tailed

    def _start_tailing(self, path, fd, resume, apply_start_at=False):
        st = os.fstat(fd)    # trust the fd: the path may have been replaced since it was stat'ed
        ident = (st.st_dev, st.st_ino)
        if ident in self._files:
            return None
        fingerprint = fingerprint_fd(fd, self.fingerprint_bytes)
        origin = None
        if resume is not None:
            offset, skip = resume, False
        else:
            offset, skip, origin = self._start_offset(ident, fd, st.st_size, path, fingerprint, apply_start_at)
        tailed = _TailedFile(path, st.st_dev, st.st_ino, fd, fingerprint, offset,
                             LineFramer(self.max_line_bytes, self.on_long_line))
        tailed.skip_to_newline = skip
        tailed.known_size = st.st_size
        if origin is not None:
            self._adopt_copy(tailed, *origin)
        else:
            self._mark(tailed)
        self.checkpoints.record(st.st_dev, st.st_ino, fingerprint, tailed.committed, path)
        return tailed

    def _start_offset(self, ident, fd, size, path, fingerprint, apply_start_at=False):
        """(offset, skip_to_newline, copy origin or None) for a file opened without a descriptor before.

        A checkpoint with the same device, inode and first bytes resumes the file: after a restart,
        after its turn under max_open_files, or when it comes back into the glob (moved away and
        back, its directory unreadable for a while) within checkpoint retention.
        """
        entry = self.checkpoints.lookup(*ident)
        if entry is not None and fingerprint_matches(fd, entry.fingerprint):
            if entry.offset <= size:
                if ident not in self._parked:
                    self.stats["resumed"] += 1
                    if ident in self._left:
                        self._left.discard(ident)
                        log.info("%s is a file read before: resuming at offset %d of %d", path, entry.offset, size)
                    else:
                        self._resumed_quietly += 1    # a restart resuming every file: one line per scan
                return entry.offset, False, None
            self.stats["truncations"] += 1
            log.warning("%s is shorter (%d) than its checkpoint (%d): truncated while not open, reading from 0",
                        path, size, entry.offset)
            return 0, False, None
        origin = self._find_copy_origin(path, fd, size, fingerprint)
        if origin is not None:
            return 0, False, origin
        if apply_start_at and self.start_at == "end":
            return (*self._last_line_boundary(fd, size), None)
        return 0, False, None

    def _last_line_boundary(self, fd, size):
        """(offset, skip_to_newline) to start at the end without cutting a line in two."""
        if size == 0:
            return 0, False
        look = min(size, self.max_line_bytes + 2)
        tail = os.pread(fd, look, size - look)
        nl = tail.rfind(b"\n")
        if nl >= 0:
            return size - look + nl + 1, False
        return size, True

    def _recover_rotated(self, seen, now):
        """At start-up, drain what rotation moved out of the glob while we were down.

        Two kinds: a file we had checkpointed, found again by inode (and fingerprint: inodes are reused)
        in its old directory or a tailed file's directory; and a file named like a rotation of a tailed
        one (same stem) with no checkpoint, written after the previous run's last save, so it was born
        and rotated away while we were down. Both are read as rotated files: to EOF, then closed.
        """
        directories = {os.path.dirname(e.path) or "." for e in self.checkpoints.entries()
                       if (e.device, e.inode) not in seen}
        # names whose rotations we look for: what is tailed now, what was tailed before, literal globs
        tailed_paths = {tailed.path for tailed in self._files.values()}
        tailed_paths.update(entry.path for entry in self.checkpoints.entries())
        tailed_paths.update(pattern for pattern in self.patterns if not glob.has_magic(pattern))
        directories.update(os.path.dirname(path) or "." for path in tailed_paths)
        for directory in sorted(directories):
            try:
                listing = sorted(os.scandir(directory), key=lambda d: d.name)
            except OSError:
                continue
            for dirent in listing:
                self._recover_one(dirent, tailed_paths, seen, now)

    def _recover_one(self, dirent, tailed_paths, seen, now):
        try:
            st = dirent.stat()
        except OSError:
            return
        ident = (st.st_dev, st.st_ino)
        if (not stat.S_ISREG(st.st_mode) or ident in self._files or ident in seen
                or os.path.abspath(dirent.path) == os.path.abspath(self.checkpoints.path)):
            return
        entry = self.checkpoints.lookup(*ident)
        if entry is not None and self._is_checkpointed_file(dirent.path, entry):
            if st.st_size > entry.offset:
                self._open_orphan(dirent.path, entry.offset, now)
                self.stats["resumed"] += 1
            return
        born_while_down = (self.checkpoints.loaded_mtime is not None
                           and st.st_mtime >= self.checkpoints.loaded_mtime)
        if born_while_down and any(_named_like_rotation(dirent.path, path) for path in tailed_paths):
            log.info("%s was written and rotated while stopped: reading it from 0", dirent.path)
            self._open_orphan(dirent.path, 0, now)

    @staticmethod
    def _is_checkpointed_file(path, entry):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            return fingerprint_matches(fd, entry.fingerprint)
        finally:
            os.close(fd)

    def _open_orphan(self, path, offset, now):
        if len(self._files) >= self.max_open_files:
            # no descriptor free: first in the queue, found again by inode if renamed meanwhile
            ident = self._ident_of(path)
            if ident is not None:
                self._waiting[ident] = _Waiting(path, False, orphan=True)
                self._waiting.move_to_end(ident, last=False)
            return
        tailed = self._open_new(path, resume=offset)
        if tailed is not None:
            tailed.orphaned_at = now

    @staticmethod
    def _ident_of(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    # ---- copies (logrotate copytruncate with the copy matched by the glob) ---------------------

    def _find_copy_origin(self, path, fd, size, fingerprint):
        """(lineage, live origin or None) when this new file holds the bytes of a file already read.

        Only a file named like a rotation of the origin (same directory, same name stem: app.log ->
        app.log.1, app.log-20260101) can be its copy, so two logs that happen to hold the same bytes
        are both read.
        """
        for tailed in list(self._files.values()):
            if tailed.copy_of is not None or not _named_like_rotation(path, tailed.path):
                continue
            # truncated since this poll's check (a busy machine): its old content is the lineage now
            self._detect_truncation(tailed)
            if self._is_copy_of_live(fd, size, fingerprint, tailed):
                return tailed.lineage(), tailed
        for lineage in reversed(self._truncated):
            if _named_like_rotation(path, lineage.path) and self._is_copy_of_truncated(fd, size, fingerprint, lineage):
                return lineage, None
        return None

    @staticmethod
    def _same_start(fd, size, fingerprint, other):
        if other.length == 0 or other.length > size:
            return False
        if other.length == fingerprint.length:
            return other.digest == fingerprint.digest    # no need to read the file again
        return fingerprint_matches(fd, other)

    def _is_copy_of_live(self, fd, size, fingerprint, origin):
        try:
            origin_size = os.fstat(origin.fd).st_size
            if origin_size < origin.read_pos:
                return False
            if size < origin.fingerprint.length:
                # logrotate is still writing the copy: a prefix of the origin waits dormant, and is
                # read as a file of its own the moment it stops matching (_check_dormant_copy)
                return read_range(fd, 0, size) == read_range(origin.fd, 0, size)
            if not self._same_start(fd, size, fingerprint, origin.fingerprint):
                return False
            length = min(size, _COPY_COMPARE_BYTES)
            if origin_size < length:
                return False
            # a look-alike sharing only a header is not a copy: the match must go past the fingerprint
            if length <= self.fingerprint_bytes and length != origin_size:
                return False
            return read_range(fd, 0, length) == read_range(origin.fd, 0, length)
        except OSError:
            return False

    def _is_copy_of_truncated(self, fd, size, fingerprint, lineage):
        fp = lineage.fingerprint
        if not self._same_start(fd, size, fingerprint, fp):
            return False
        if fp.length >= lineage.line_end:
            return True          # the fingerprint covered every byte that was read
        mark = next(((end, digest) for end, digest in reversed(lineage.marks) if fp.length < end <= size), None)
        return mark is not None and tail_digest(fd, mark[0], self.fingerprint_bytes) == mark[1]

    def _adopt_copy(self, copy, lineage, live_origin):
        self.stats["copies"] += 1
        log.info("%s is a copy of a file already read: continuing after what was read", copy.path)
        self._copy_links.setdefault(lineage.key, []).append(copy.ident)
        while len(self._copy_links) > _CLOSED_KEYS_KEPT:
            self._copy_links.popitem(last=False)
        copy.committed = min(lineage.committed, copy.known_size)
        copy.read_pos = copy.line_end = copy.committed
        if live_origin is not None:
            # dormant: the origin still holds these bytes and delivers them; wait for its truncation
            copy.copy_of = lineage.key
            copy.verified = 0
        else:
            self._resume_copy(copy, lineage.line_end)

    def _resume_copy(self, copy, origin_end):
        """Read the copy from where its origin stopped: what it holds beyond that was never read."""
        copy.copy_of = None
        start = max(copy.committed, min(origin_end, copy.known_size))
        copy.read_pos = copy.line_end = start
        copy.framer = LineFramer(self.max_line_bytes, self.on_long_line)
        copy.marks.clear()
        self._mark(copy)

    def _wake_copies(self, origin_key, origin_end):
        for ident in self._copy_links.get(origin_key, ()):
            copy = self._files.get(ident)
            if copy is not None and copy.copy_of == origin_key:
                try:
                    copy.known_size = os.fstat(copy.fd).st_size
                except OSError:
                    pass
                self._resume_copy(copy, origin_end)

    def _check_dormant_copy(self, copy, size):
        """Keep a dormant copy dormant only while its bytes equal the origin's."""
        copy.known_size = size
        key = copy.copy_of
        origin = self._files.get((key.device, key.inode))
        if origin is None or origin.key != key:
            self._resume_copy(copy, copy.committed)
            return
        if copy.orphaned_at is not None:
            self._resume_copy(copy, origin.line_end)    # deleted or rotated away: drain it and close
            return
        origin_size = os.fstat(origin.fd).st_size
        if origin_size < origin.read_pos:
            return       # the origin was truncated: its next read wakes this copy at its last position
        upto = min(size, origin_size, copy.verified + _COPY_COMPARE_BYTES)
        if read_range(copy.fd, copy.verified, upto) != read_range(origin.fd, copy.verified, upto):
            log.warning("%s stopped matching the file it copied: reading it as a file of its own", copy.path)
            copy.committed = 0
            self._resume_copy(copy, 0)
            return
        copy.verified = upto
        if size > origin_size:
            self._resume_copy(copy, origin.line_end)

    # ---- reading ----------------------------------------------------------------------------

    def _read_round(self, now):
        files = list(self._files.values())
        if not files:
            return []
        start = self._cursor % len(files)
        self._cursor += 1
        chunks = []
        budget = self.max_bytes_per_poll
        ordered = files[start:] + files[:start]
        for index, tailed in enumerate(ordered):
            if budget <= 0:
                break
            # an even share of what is left, so one busy file cannot starve the others
            allowance = max(self.read_block_bytes, budget // (len(ordered) - index))
            chunk, used = self._read_file(tailed, min(allowance, budget), now)
            budget -= used
            if chunk is not None:
                chunks.append(chunk)
        return chunks

    def _read_file(self, tailed, allowance, now):
        if tailed.yielding:
            return None, 0           # its turn is over: it parks once what it delivered is committed
        try:
            st = os.fstat(tailed.fd)
            size = st.st_size
            if tailed.copy_of is not None:
                self._check_dormant_copy(tailed, size)
                if tailed.copy_of is not None:
                    return None, 0
            if size < tailed.read_pos or not self._same_content(tailed, st):
                self._restart_from_zero(tailed)
        except OSError as exc:
            self._note_read_error(tailed, exc)
            return None, 0
        tailed.known_size = size
        start = tailed.line_end
        lines = []
        used = 0
        while used < allowance and tailed.read_pos < size:
            want = min(self.read_block_bytes, allowance - used, size - tailed.read_pos)
            try:
                block = os.pread(tailed.fd, want, tailed.read_pos)
            except OSError as exc:
                self._note_read_error(tailed, exc)
                break
            if not block:
                break
            self._frame(tailed, block, lines)
            used += len(block)
        if used or tailed.read_pos < size:
            tailed.idle_polls = 0
        else:
            tailed.idle_polls += 1
            if tailed.idle_polls == 1:
                tailed.idle_since = now
        if tailed.orphaned_at is not None and tailed.read_pos >= size:
            self._close_if_done(tailed, st, now, lines)
        self.stats["lines"] += len(lines)
        if not lines and tailed.line_end == start:
            return None, used
        if tailed.fd is not None:
            self._mark(tailed)
        return Chunk(tailed.key, tailed.path, lines, start, tailed.line_end), used

    def _note_read_error(self, tailed, exc):
        self.stats["read_errors"] += 1
        log.error("read error on %s (will retry): %s", tailed.path, exc)

    def _same_content(self, tailed, st):
        """False when the file was rewritten in place; grows the fingerprint while the file is short.

        Size alone misses `: > f` followed by a line as long as the old content, so mtime counts too.
        """
        state = (st.st_size, st.st_mtime_ns)
        if state == tailed.checked_state:
            return True
        size = st.st_size
        if not fingerprint_matches(tailed.fd, tailed.fingerprint):
            return False
        if tailed.fingerprint.length < self.fingerprint_bytes and size > tailed.fingerprint.length:
            tailed.fingerprint = fingerprint_fd(tailed.fd, self.fingerprint_bytes)
            self.checkpoints.update_fingerprint(tailed.key.device, tailed.key.inode, tailed.fingerprint)
        tailed.checked_state = state
        return True

    def _mark(self, tailed):
        """Remember a hash of the bytes before line_end, so a copy of this file can be recognised."""
        end = tailed.line_end
        if end > tailed.fingerprint.length and (not tailed.marks or tailed.marks[-1][0] != end):
            try:
                digest = tail_digest(tailed.fd, end, self.fingerprint_bytes)
            except OSError:
                return
            if digest is not None:
                tailed.marks.append((end, digest))

    def _detect_truncations(self):
        # before looking for new files, so the copy of a truncated file is matched to its old content
        for tailed in list(self._files.values()):
            self._detect_truncation(tailed)

    def _detect_truncation(self, tailed):
        if tailed.copy_of is not None:
            return
        try:
            st = os.fstat(tailed.fd)
            if st.st_size < tailed.read_pos or not self._same_content(tailed, st):
                self._restart_from_zero(tailed)
        except OSError:
            return

    def _restart_from_zero(self, tailed):
        """Truncated (copytruncate) or rewritten: the same inode is a new file, read from 0."""
        self.stats["truncations"] += 1
        log.info("%s was truncated or rewritten at offset %d: reading it from 0", tailed.path, tailed.read_pos)
        lineage = tailed.lineage()
        self._truncated.append(lineage)
        self._wake_copies(lineage.key, lineage.line_end)
        tailed.marks.clear()
        device, inode = tailed.ident
        tailed.key = FileKey(device, inode, next(_generations))
        tailed.framer = LineFramer(self.max_line_bytes, self.on_long_line)
        tailed.read_pos = tailed.line_end = tailed.committed = 0
        tailed.skip_to_newline = False
        tailed.fingerprint = fingerprint_fd(tailed.fd, self.fingerprint_bytes)
        tailed.checked_state = None
        self.checkpoints.record(device, inode, tailed.fingerprint, 0, tailed.path)

    def _frame(self, tailed, block, lines):
        base = tailed.read_pos
        tailed.read_pos += len(block)
        self.stats["bytes"] += len(block)
        if tailed.skip_to_newline:
            # started at the end of a file in the middle of a line: drop its head
            nl = block.find(b"\n")
            if nl < 0:
                return
            tailed.skip_to_newline = False
            tailed.line_end = base + nl + 1
            base += nl + 1
            block = block[nl + 1:]
        framer = tailed.framer
        long_before = framer.truncated + framer.skipped
        lines.extend(framer.feed(block))
        last_nl = block.rfind(b"\n")
        if last_nl >= 0:
            tailed.line_end = base + last_nl + 1
        self.stats["long_lines"] += framer.truncated + framer.skipped - long_before

    def _close_if_done(self, tailed, st, now, lines):
        deleted = st.st_nlink == 0
        if not deleted and now - tailed.orphaned_at < self.rotate_wait_seconds:
            return
        # nobody will complete a last line without newline any more: deliver it
        framer = tailed.framer
        long_before = framer.truncated + framer.skipped
        lines.extend(framer.flush())
        self.stats["long_lines"] += framer.truncated + framer.skipped - long_before
        tailed.line_end = tailed.read_pos
        os.close(tailed.fd)
        tailed.fd = None
        del self._files[tailed.ident]
        self._wake_copies(tailed.key, tailed.read_pos)
        self._remember_left(tailed.ident)
        if deleted:
            # the data is gone: an entry left behind could only mislead a file that reuses the inode
            self.checkpoints.forget(*tailed.ident)
            return
        if tailed.committed >= tailed.read_pos:
            return       # its checkpoint stays for checkpoint retention: if it comes back, it resumes
        self._closed[tailed.key] = tailed.read_pos
        while len(self._closed) > _CLOSED_KEYS_KEPT:
            self._closed.popitem(last=False)

