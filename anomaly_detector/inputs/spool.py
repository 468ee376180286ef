"""The on-disk spool of a network input: lines are durable before the peer is answered, and read back like a file.

Neighbours: inputs/listener.py writes it (SpoolWriter: the HTTP handler threads and the syslog loop);
inputs/runner.py reads it (SpoolReader, polled and committed like file_tail.FileTailer: an offset is
committed only once the workers acknowledged every line before it); storage.atomic keeps the offset.

Layout, one directory per input (`<state_dir>/spool/<input name>/`):
    <20-digit offset>.seg   append-only segments; the name is the spool offset of the segment's first byte,
                            so one integer places any record, and segments are contiguous
    committed.json          the offset up to which the workers acknowledged (atomic, checksummed)
A record is MAGIC, payload length (u32 LE), CRC-32 of the payload (u32 LE), then the payload: the
lines of one HTTP request or one syslog read, joined by LF (lines never hold an LF: the framers cut or
escape them).

Durability (group commit): `append()` writes its record under a lock, then waits until an fdatasync
that started after the write has finished; one thread runs the fsync while the others wait for it, so
concurrent requests share one. Only then does the caller answer 202 (or go on reading its socket).

Crash consistency: after kill -9 or a power cut the last record of the last segment may be torn
(short, or its bytes not matching its CRC). The next writer validates the last segment, truncates the
torn tail (counted in `torn_records`, logged) and starts a new segment. A reader that meets a bad
record in a segment that is no longer the last (corruption on disk) skips the rest of that segment
and counts it; in the last segment it waits, since the writer's restart repairs the tail.

Bound: the segments of one spool hold at most max_bytes; an append that does not fit raises SpoolFull
and writes nothing (but the listener's last append at a stop, see append(bounded=False)). Space comes back when the reader deletes segments that are wholly committed (the
segment being written is never deleted). A segment is at most segment_bytes, so committed lines stay
on disk for at most one segment's worth.
"""
import logging
import os
import struct
import threading
import time
import zlib

from anomaly_detector.inputs.base import Chunk, Input
from anomaly_detector.storage.atomic import read_json_snapshot, write_json_snapshot

log = logging.getLogger(__name__)

MAGIC = b"ADS1"
_HEADER = struct.Struct("<4sII")
HEADER_BYTES = _HEADER.size
SEGMENT_SUFFIX = ".seg"
COMMITTED_FILE = "committed.json"
SNAPSHOT_KIND = "spool_offset"
SCHEMA_VERSION = 1
# A segment is a fraction of the bound so deleting committed segments frees space in steps,
# but not tiny (one file per few records) nor huge (committed lines kept on disk long).
SEGMENT_FRACTION = 8
MIN_SEGMENT_BYTES = 64 << 10
MAX_SEGMENT_BYTES = 64 << 20
# What one poll of the reader hands to the runner at most: chunks small enough to spread over the rings.
CHUNK_LINES = 2000
CHUNK_BYTES = 1 << 20
# The committed offset is saved (and committed segments deleted) at most this often; a crash re-reads
# at most this long of acknowledged lines (at-least-once).
SAVE_INTERVAL_SECONDS = 1.0


class SpoolFull(Exception):
    """The spool holds max_bytes already: the caller refuses the lines (HTTP 503) or drops them (UDP)."""


class SpoolError(Exception):
    """Writing or syncing the spool failed (disk full, I/O error): nothing of the record is acknowledged."""


def segment_name(offset):
    return "%020d%s" % (offset, SEGMENT_SUFFIX)


def list_segments(directory):
    """[(start offset, path)] sorted by offset; an unreadable directory is empty."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem = name[:-len(SEGMENT_SUFFIX)]
        if name.endswith(SEGMENT_SUFFIX) and stem.isdigit():
            found.append((int(stem), os.path.join(directory, name)))
    return sorted(found)


def spool_bytes(directory):
    """Bytes held by a spool's segments (the quantity max_bytes bounds)."""
    total = 0
    for _, path in list_segments(directory):
        try:
            total += os.stat(path).st_size
        except FileNotFoundError:
            pass  # deleted by the reader meanwhile
    return total


def unread_bytes(directory):
    """Bytes of a spool's segments past its committed offset (an upper bound: a torn tail counts too)."""
    segments = list_segments(directory)
    if not segments:
        return 0
    start, path = segments[-1]
    try:
        end = start + os.stat(path).st_size
    except FileNotFoundError:
        return 0
    return max(0, end - max(read_committed(directory), segments[0][0]))


def record_bytes(lines):
    """Size of the record encode_record(lines) makes: what the spool's bound counts."""
    return HEADER_BYTES + sum(map(len, lines)) + max(0, len(lines) - 1)


def encode_record(lines):
    payload = b"\n".join(lines)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_records(data, start=0):
    """Complete valid records in data from `start`: ([(end position, lines)], stop position, bad).

    Parsing stops at the first record that is incomplete (bad False: more bytes may come) or
    invalid (bad True: wrong magic or CRC, so the length cannot be trusted either).
    """
    out, pos, n = [], start, len(data)
    while pos + HEADER_BYTES <= n:
        magic, length, crc = _HEADER.unpack_from(data, pos)
        if magic != MAGIC:
            return out, pos, True
        end = pos + HEADER_BYTES + length
        if end > n:
            return out, pos, False
        payload = bytes(data[pos + HEADER_BYTES:end])
        if zlib.crc32(payload) != crc:
            return out, pos, True
        out.append((end, payload.split(b"\n") if payload else []))
        pos = end
    return out, pos, False


def read_committed(directory):
    """The committed offset saved in the spool directory, or 0."""
    got = read_json_snapshot(os.path.join(directory, COMMITTED_FILE), SNAPSHOT_KIND, SCHEMA_VERSION)
    if got is None:
        return 0
    try:
        return max(0, int(got[1]["committed"]))
    except (KeyError, TypeError, ValueError):
        log.error("%s: spool offset file has no offset; reading the spool from its first segment", directory)
        return 0


def default_segment_bytes(max_bytes):
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // SEGMENT_FRACTION))


class SpoolWriter:
    """Appends records durably (group commit), thread-safe; one writer per spool directory at a time."""

    def __init__(self, directory, max_bytes, segment_bytes=None):
        self.directory = directory
        self.max_bytes = int(max_bytes)
        self.segment_bytes = int(segment_bytes or default_segment_bytes(self.max_bytes))
        self.stats = {"records": 0, "lines": 0, "bytes": 0, "full": 0, "errors": 0, "torn_records": 0,
                      "torn_bytes": 0, "fsyncs": 0}
        self._cond = threading.Condition()
        self._syncing = False
        self._closed = False
        os.makedirs(directory, exist_ok=True)
        self.end = self._recover()        # spool offset of the next byte written
        self._durable = self.end
        # (from, to]: spool ranges a failed sync covered. A record in one is never reported durable, even
        # when a later sync succeeds (of a new segment, or one that no longer reports the lost write).
        self._unsynced = []
        self._abandoned = False   # the segment ends in half a record that could not be cut
        self._fd = None
        self._segment_start = self._segment_len = 0
        self._open_segment()
        self._used = spool_bytes(directory)

    def _recover(self):
        """Validate the last segment and cut a torn tail; returns the offset where writing goes on."""
        segments = list_segments(self.directory)
        if not segments:
            return read_committed(self.directory)  # a wiped spool must not restart below the committed offset
        start, path = segments[-1]
        with open(path, "rb") as f:
            data = f.read()
        _, valid, _ = decode_records(data)
        if valid < len(data):
            self.stats["torn_records"] += 1
            self.stats["torn_bytes"] += len(data) - valid
            log.warning("spool %s: last record of %s torn (%d bytes, a crash mid-write); cut and skipped",
                        self.directory, os.path.basename(path), len(data) - valid)
            os.truncate(path, valid)
            _fsync(path)
        committed = read_committed(self.directory)
        if committed > start + valid:
            # A power cut lost records the reader had read (and the workers scored) before they were
            # synced: write on from the committed offset, where the reader resumes (a new segment).
            log.warning("spool %s: data ends at %d, before the committed offset %d (lost by a power cut "
                        "after being scored); writing on from %d", self.directory, start + valid, committed,
                        committed)
            return committed
        return start + valid

    def _open_segment(self):
        path = os.path.join(self.directory, segment_name(self.end))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        try:
            size = os.fstat(fd).st_size
            _fsync(self.directory)  # the new name must survive a crash, or its records vanish with it
        except OSError:
            os.close(fd)
            raise
        self._fd, self._segment_start, self._segment_len = fd, self.end, size

    def _restart_segment(self):
        """Seal a segment left with half a record (the reader skips that tail), start one if there is none."""
        while self._syncing:  # the fsync in flight uses the descriptor about to be closed
            self._cond.wait()
        if self._abandoned and self._fd is not None:
            self._sync_and_close()
        self._abandoned = False
        if self._fd is None:
            self._reopen()

    def _reopen(self):
        """Start the next segment; a failure (disk full, no descriptor) refuses this append, the next retries."""
        try:
            self._open_segment()
        except OSError as exc:
            self.stats["errors"] += 1
            raise SpoolError("spool %s: cannot start a segment: %s" % (self.directory, exc)) from None

    def append(self, lines, bounded=True):
        """Write one record of lines and return once it is on disk; raises SpoolFull or SpoolError.

        bounded=False writes past max_bytes: for lines already taken from a peer that cannot send
        them again (a TCP read held by a full spool when the listener stops).
        """
        if not lines:
            return 0
        record = encode_record(lines)
        with self._cond:
            if self._closed:
                raise SpoolError("spool %s is closed" % self.directory)
            if self._fd is None or self._abandoned:
                self._restart_segment()
            if bounded:
                self._reserve(len(record))
            if self._segment_len and self._segment_len + len(record) > self.segment_bytes:
                self._roll()
            self._write(record)
            self.stats["records"] += 1
            self.stats["lines"] += len(lines)
            self.stats["bytes"] += len(record)
            self._wait_durable(self.end)
        return len(lines)

    def _reserve(self, size):
        if self._used + size > self.max_bytes:
            self._used = spool_bytes(self.directory)  # the reader deletes committed segments meanwhile
            if self._used + size > self.max_bytes:
                if self._segment_len:
                    # Seal the segment being written: once committed, the reader may delete it (it never
                    # deletes the last one), else a spool full of committed lines would stay full.
                    self._roll()
                self.stats["full"] += 1
                raise SpoolFull("spool %s full (%d of %d bytes)" % (self.directory, self._used, self.max_bytes))

    def _write(self, record):
        try:
            written = os.write(self._fd, record)
            if written != len(record):
                raise OSError(28, "short write (%d of %d bytes)" % (written, len(record)))
        except OSError as exc:
            # Cut what was written of it: a half record in the middle of a segment would hide the ones after it.
            self.stats["errors"] += 1
            try:
                os.ftruncate(self._fd, self._segment_len)
            except OSError:
                # The half record stays: no record may follow it in this segment (a reader stops at it,
                # a restarted writer cuts the tail from it), so the next append starts a new segment.
                self._abandoned = True
            raise SpoolError("spool %s: write failed: %s" % (self.directory, exc)) from None
        self._segment_len += len(record)
        self._used += len(record)
        self.end += len(record)

    def _wait_durable(self, mine):
        """Group commit: the first waiter syncs everything written so far, the others wait for it."""
        while self._durable < mine or self._sync_failed(mine):
            if self._sync_failed(mine):
                raise SpoolError("spool %s: the sync of this record failed" % self.directory)
            if self._syncing:
                self._cond.wait()
                continue
            if self._fd is None:   # closed after a failed final sync: this record's durability is unknown
                raise SpoolError("spool %s closed before the record was synced" % self.directory)
            self._syncing = True
            target, fd = self.end, self._fd
            self._cond.release()
            try:
                os.fdatasync(fd)
                ok = True
            except OSError as exc:
                ok, error = False, exc
            finally:
                self._cond.acquire()
                self._syncing = False
                self._cond.notify_all()
            if not ok:
                self.stats["errors"] += 1
                self._mark_unsynced(target)
                raise SpoolError("spool %s: fsync failed: %s" % (self.directory, error))
            self.stats["fsyncs"] += 1
            self._durable = max(self._durable, target)

    def _mark_unsynced(self, end):
        if end > self._durable:
            self._unsynced = self._unsynced[-63:] + [(self._durable, end)]

    def _sync_failed(self, mine):
        return any(start < mine <= end for start, end in self._unsynced)

    def _roll(self):
        while self._syncing:  # the fsync in flight uses the descriptor about to be closed
            self._cond.wait()
        self._sync_and_close()
        self._reopen()

    def _sync_and_close(self):
        try:
            os.fdatasync(self._fd)
            self._durable = self.end
        except OSError as exc:
            self.stats["errors"] += 1
            self._mark_unsynced(self.end)
            log.error("spool %s: fsync failed: %s", self.directory, exc)
        os.close(self._fd)
        self._fd = None

    def close(self):
        """Sync and close; appends after this raise SpoolError (idempotent)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            while self._syncing:
                self._cond.wait()
            if self._fd is not None:
                self._sync_and_close()


class SpoolReader(Input):
    """Reads a spool back for the input process: `poll()` returns Chunks, `commit()` the acknowledged offset.

    Shaped like file_tail.FileTailer for inputs/runner.py: chunks hold whole records, so every chunk
    end is a record boundary a restart can resume at; `spread` tells the runner that chunks may go to
    any ring (its commits are kept in order per input).
    """

    spread = True

    def __init__(self, directory, key, chunk_lines=CHUNK_LINES, chunk_bytes=CHUNK_BYTES,
                 save_interval=SAVE_INTERVAL_SECONDS, clock=None):
        self.directory, self.key = directory, key
        self.path = directory
        self.chunk_lines, self.chunk_bytes = int(chunk_lines), int(chunk_bytes)
        self.save_interval = float(save_interval)
        self._clock = clock or time.monotonic
        self.stats = {"lines": 0, "records": 0, "torn_records": 0, "segments_deleted": 0, "read_errors": 0}
        os.makedirs(directory, exist_ok=True)
        self.committed = self._saved = read_committed(directory)
        self._last_save = self._clock()
        self.position = self._start_position()
        self._segment = None   # (start, path, fd) of the segment being read

    def _start_position(self):
        segments = list_segments(self.directory)
        if segments and self.committed < segments[0][0]:
            log.warning("spool %s: committed offset %d is before the first segment; reading from %d",
                        self.directory, self.committed, segments[0][0])
            return segments[0][0]
        return self.committed

    def poll(self):
        """Complete records from the committed position on, as [Chunk] (at most one) or []."""
        self._save_if_due()
        segments = list_segments(self.directory)  # listed before reading: a later segment means this one is final
        for _ in range(len(segments)):
            current = self._locate(segments)
            if current is None:
                return []
            start, path = current
            later = [s for s, _ in segments if s > start]
            try:
                data = self._read(start, path)
            except OSError as exc:
                self.stats["read_errors"] += 1
                log.error("spool %s: cannot read %s: %s", self.directory, os.path.basename(path), exc)
                return []
            records, _, bad = decode_records(data)
            if records:
                return [self._chunk(records)]
            if not later:
                return []  # the last segment: a record is being written, or the writer's restart cuts the tail
            self._skip_rest(path, later[0], data, bad)
        return []

    def _locate(self, segments):
        """The segment holding self.position, moving on past finished ones."""
        holding = [(s, p) for s, p in segments if s <= self.position]
        if not holding:
            if segments and segments[0][0] > self.position:
                self.position = segments[0][0]  # a gap: only a spool cut by hand can leave one
                return segments[0]
            return None
        return holding[-1]

    def _read(self, start, path):
        if self._segment is None or self._segment[0] != start:
            self._close_segment()
            self._segment = (start, path, os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        fd = self._segment[2]
        at = self.position - start
        data = os.pread(fd, self.chunk_bytes, at)
        if len(data) >= HEADER_BYTES:
            magic, length, _ = _HEADER.unpack_from(data, 0)
            if magic == MAGIC and HEADER_BYTES + length > len(data):
                data = os.pread(fd, HEADER_BYTES + length, at)  # one record larger than a chunk
        return data

    def _skip_rest(self, path, next_start, data, bad):
        """A finished segment ends here: what is left of it is a torn or corrupt record."""
        if data:
            self.stats["torn_records"] += 1
            log.warning("spool %s: %s ends in a %s record (%d bytes); skipped",
                        self.directory, os.path.basename(path), "corrupt" if bad else "torn", len(data))
        self.position = next_start
        self._close_segment()

    def _chunk(self, records):
        # The read was bounded by chunk_bytes already; chunk_lines bounds the lines (whole records).
        lines, used = [], 0
        for record_end, record_lines in records:
            if lines and len(lines) + len(record_lines) > self.chunk_lines:
                break
            lines.extend(record_lines)
            used = record_end
            self.stats["records"] += 1
        start = self.position
        self.position += used
        self.stats["lines"] += len(lines)
        return Chunk(self.key, self.directory, lines, start, self.position)

    def commit(self, key, offset):
        """Record that the workers acknowledged everything before offset; saved at most every save_interval."""
        if key != self.key or offset <= self.committed:
            return False
        self.committed = int(offset)
        return True

    def _save_if_due(self, force=False):
        if not force and self._clock() - self._last_save < self.save_interval:
            return
        self._last_save = self._clock()
        if self.committed != self._saved:
            try:
                write_json_snapshot(os.path.join(self.directory, COMMITTED_FILE), SNAPSHOT_KIND, SCHEMA_VERSION,
                                    {"committed": self.committed})
            except OSError as exc:
                log.error("spool %s: cannot save the committed offset: %s; retrying", self.directory, exc)
                return
            self._saved = self.committed
        self._delete_committed()  # also when nothing new was committed: the writer may have sealed a segment

    def _delete_committed(self):
        """Delete segments wholly below the saved offset, never the last one (the writer's)."""
        segments = list_segments(self.directory)
        for (start, path), (next_start, _) in zip(segments, segments[1:]):
            if next_start > self._saved:
                break
            if self._segment is not None and self._segment[0] == start:
                self._close_segment()
            try:
                os.unlink(path)
                self.stats["segments_deleted"] += 1
            except FileNotFoundError:
                pass

    def _close_segment(self):
        if self._segment is not None:
            os.close(self._segment[2])
            self._segment = None

    def close(self):
        """Save the committed offset, delete what it covers, close the segment (idempotent)."""
        self._save_if_due(force=True)
        self._close_segment()


def _fsync(path):
    """fsync a file or a directory by name (a directory: so that a new entry in it survives a crash)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
