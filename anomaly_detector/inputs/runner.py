"""The input process: reads every configured input and feeds the workers' rings; commits checkpoints.

Forked by the supervisor with the rings inherited. Lines of one file always go to the same ring
(by a hash of its identity, which survives rotation and truncation) in order; a file offset is
committed only once the worker acknowledged every line before it (at-least-once, never loss).
A full ring stops reading from that input until there is room: backpressure, not memory.
"""
import collections
import logging
import os
import time
import zlib

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer
from anomaly_detector.inputs.http_ingest import HttpIngestInput
from anomaly_detector.inputs.stdin import StdinInput
from anomaly_detector.inputs.syslog_server import SyslogInput
from anomaly_detector.relief import relieve_memory

log = logging.getLogger(__name__)
IDLE_SLEEP_SECONDS = 0.05
DRAIN_POLL_SECONDS = 0.01
SUPPORTED_TYPES = ("file", "stdin", "syslog", "http")


class UnsupportedInput(ValueError):
    """An input type the config accepts but this release cannot run yet."""


def require_supported(name, section):
    """Raise UnsupportedInput for an input type the config accepts but this release cannot run."""
    if section["type"] not in SUPPORTED_TYPES:
        raise UnsupportedInput("[inputs.%s] type = %s is not available in this release (supported: %s)"
                               % (name, section["type"], ", ".join(SUPPORTED_TYPES)))


def build_input(name, section, cfg):
    """The reader object for one [inputs] subsection (file, stdin, syslog or http)."""
    require_supported(name, section)
    processing = cfg["processing"]
    if section["type"] == "file":
        store = CheckpointStore(os.path.join(cfg["paths"]["state_dir"], "checkpoints", "%s.json" % name),
                                max_age_seconds=section["checkpoint_retention_hours"] * 3600.0)
        return FileTailer(section["path"], store, max_line_bytes=processing["max_line_bytes"],
                          on_long_line=processing["on_long_line"], start_at=section["start_at"],
                          poll_interval=section["scan_interval_seconds"],
                          rotate_wait_seconds=section["rotate_wait_seconds"],
                          max_open_files=section["max_open_files"])
    if section["type"] == "stdin":
        return StdinInput(max_line_bytes=processing["max_line_bytes"], on_long_line=processing["on_long_line"])
    if section["type"] == "syslog":
        return SyslogInput(section["listen_address"], section["listen_port"], section["protocol"],
                           max_line_bytes=processing["max_line_bytes"], on_long_line=processing["on_long_line"],
                           max_connections=section["max_connections"])
    if section["type"] == "http":
        return HttpIngestInput(section["listen_address"], section["listen_port"],
                               max_body_bytes=section["max_body_bytes"], max_line_bytes=processing["max_line_bytes"],
                               max_queue_lines=section["max_queue_lines"], on_long_line=processing["on_long_line"],
                               max_connections=section["max_connections"])


class _Pending:
    """Lines of one chunk still to push (a full ring left them over)."""

    __slots__ = ("chunk", "ring", "index", "pushed")

    def __init__(self, chunk, ring, index):
        self.chunk, self.ring, self.index, self.pushed = chunk, ring, index, 0


class InputRunner:
    """Polls inputs, pushes their lines to rings, commits offsets the workers acknowledged."""

    def __init__(self, cfg, rings, control, slot, counter_row):
        self.cfg, self.control, self.slot = cfg, control, slot
        self.rings = rings
        self.writers = [ring.writer() for ring in rings]
        self.counters = control.counters(counter_row)
        self.names = list(cfg["inputs"])
        self.readers = [build_input(name, cfg["inputs"][name], cfg) for name in self.names]
        self.drop_when_full = cfg["processing"]["when_full"] == "drop_newest"
        self.backlog = [collections.deque() for _ in self.readers]  # _Pending chunks per input, in order
        self.inflight = [collections.deque() for _ in rings]  # (seq_end, input index, key, offset | None)
        self._relief_seen = control.flags().relief_generation

    def run(self, stop, drain_timeout):
        while not stop.requested:
            self.control.beat(self.slot)
            moved = self.pump()
            self.commit_acknowledged()
            self._relief_if_asked()
            if not moved:
                time.sleep(IDLE_SLEEP_SECONDS)
        self.drain(drain_timeout)
        self.close()
        return 0

    def pump(self):
        """One round over the inputs; returns the number of lines pushed."""
        moved = 0
        for index, reader in enumerate(self.readers):
            backlog = self.backlog[index]
            if not backlog:  # read more only once everything read before is in a ring: bounded memory
                before = _read_errors(reader), _deferrals(reader)
                backlog.extend(_Pending(chunk, self._ring_for(chunk.stream_id), index) for chunk in reader.poll())
                self.counters.add(read_errors=max(0, _read_errors(reader) - before[0]),
                                  files_deferrals=max(0, _deferrals(reader) - before[1]))
            while backlog:
                pushed, done = self._push(backlog[0])
                moved += pushed
                if not done:
                    break  # that ring is full: keep the rest, in order, for the next round
                backlog.popleft()
        self.counters.set(files_deferred=sum(reader.stats.get("files_deferred", 0) for reader in self.readers))
        return moved

    def _ring_for(self, stream_id):
        # Not the path: a rotated file changes path while its lines are in flight, and its
        # commits must come back from one ring, in order.
        return zlib.crc32(repr(stream_id).encode()) % len(self.rings)

    def _push(self, pending):
        """Push what fits of one chunk; returns (lines pushed, whether the chunk is done)."""
        lines = pending.chunk.lines
        writer = self.writers[pending.ring]
        n = writer.push_batch(lines[pending.pushed:], source_id=pending.index) if pending.pushed < len(lines) else 0
        pending.pushed += n
        done = pending.pushed >= len(lines)
        if not done and self.drop_when_full:
            self.counters.add(lines_dropped=len(lines) - pending.pushed)
            done = True
        self.counters.add(lines_read=n)
        if done:
            self.inflight[pending.ring].append((writer.next_seq, pending.index, pending.chunk.key,
                                                pending.chunk.end_offset))
        return n, done

    def commit_acknowledged(self):
        """Commit the end offset of every chunk whose lines are all acknowledged by its worker."""
        for ring, queue in zip(self.rings, self.inflight):
            acked = ring.acknowledged()
            while queue and queue[0][0] <= acked:
                _, index, key, offset = queue.popleft()
                self.readers[index].commit(key, offset)

    def drain(self, timeout):
        """Stop reading; wait (bounded) until the workers acknowledged what was pushed, commit it."""
        deadline = time.monotonic() + timeout
        while any(self.inflight) and time.monotonic() < deadline:
            self.control.beat(self.slot)
            self.commit_acknowledged()
            time.sleep(DRAIN_POLL_SECONDS)
        self.commit_acknowledged()
        left = sum(len(q) for q in self.inflight)
        if left:
            log.warning("input: %d chunks not acknowledged at stop; they will be read again on restart", left)

    def close(self):
        """Save file checkpoints, close files and listening sockets (and the HTTP ingest thread)."""
        for reader in self.readers:
            close = getattr(reader, "close", None)
            if close is not None:
                close()

    def _relief_if_asked(self):
        generation = self.control.flags().relief_generation
        if generation != self._relief_seen:
            self._relief_seen = generation
            relieve_memory("input")


def _read_errors(reader):
    return reader.stats.get("read_errors", 0)


def _deferrals(reader):
    return reader.stats.get("deferrals", 0)


def run_inputs(ctx, daemon):
    """ChildSpec target of the input process."""
    daemon.setup_child_logging("input")
    runner = InputRunner(daemon.cfg, daemon.rings, daemon.control, ctx.slot, daemon.input_counter_row)
    return runner.run(ctx.stop, daemon.cfg["service"]["shutdown_timeout_seconds"] / 2)
