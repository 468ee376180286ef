"""The input process: reads every configured input and feeds the workers' rings; commits checkpoints.

Forked by the supervisor with the rings inherited. Lines of one file always go to the same ring, in
order: a file seen for the first time goes to the ring that received the fewest lines lately (so a
few busy files spread over the workers), and keeps it through rotation and truncation, and across
restarts (its checkpoint remembers the ring, so its worker's models keep seeing it). Network inputs are
read from their spools (inputs/spool.py, written by the listener process, inputs/listener.py) and
spread over all rings by origin (inputs/origin.py: syslog host and app, a JSON line's source), one
origin's lines to one ring in order; so are a Redis Stream's entries (inputs/redis_stream.py). Every
reader is an inputs.base.Input built by its type's build() (BUILDERS). Either way an input's offset
(for redis: the entry ids, XACKed) is committed only once the workers acknowledged every line before
it, on whichever ring (at-least-once, never loss).
A full ring stops reading from that input until there is room: backpressure, not memory. The
control block's backpressure flag (POST /admin/enable-backpressure) stops reading from every input.
"""
import collections
import hashlib
import logging
import time

from anomaly_detector.inputs.base import Chunk
from anomaly_detector.inputs.file_tail import FileKey, FileTailer
from anomaly_detector.inputs.listener import NETWORK_TYPES, build_spool_input, warn_orphan_spools
from anomaly_detector.inputs.redis_stream import RedisStreamInput
from anomaly_detector.inputs.stats import InputStatsPublisher
from anomaly_detector.inputs.stdin import StdinInput
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.storage.health import STATE_HEALTH

log = logging.getLogger(__name__)
DRAIN_POLL_SECONDS = 0.01
MAX_ORIGINS_CACHED = 100_000   # distinct syslog hosts/apps or JSON sources remembered; then the cache restarts
MAX_STREAMS_CACHED = 100_000   # files (and stdin) whose ring is remembered in memory; then the cache restarts
LOAD_HALF_LIFE_SECONDS = 10.0  # lines routed to a ring count half as much as load this much later


# type -> build(name, section, cfg) of the input class (inputs/base.py Input); one entry per input type.
BUILDERS = {"file": FileTailer.build, "stdin": StdinInput.build, "syslog": build_spool_input,
            "http": build_spool_input, "redis": RedisStreamInput.build}
SUPPORTED_TYPES = tuple(BUILDERS)


class UnsupportedInput(ValueError):
    """An input type the config accepts but this release cannot run yet."""


def require_supported(name, section):
    """Raise UnsupportedInput for an input type the config accepts but this release cannot run."""
    if section["type"] not in BUILDERS:
        raise UnsupportedInput("[inputs.%s] type = %s is not available in this release (supported: %s)"
                               % (name, section["type"], ", ".join(SUPPORTED_TYPES)))


def build_input(name, section, cfg):
    """The reader object (an inputs.base.Input) for one [inputs] subsection."""
    require_supported(name, section)
    return BUILDERS[section["type"]](name, section, cfg)


class _Pending:
    """Lines of one chunk still to push (a full ring left them over)."""

    __slots__ = ("chunk", "ring", "index", "pushed", "read_ns")

    def __init__(self, chunk, ring, index, read_ns=None):
        self.chunk, self.ring, self.index, self.pushed = chunk, ring, index, 0
        self.read_ns = time.monotonic_ns() if read_ns is None else read_ns   # when the input read the lines


class _Ticket:
    """A pushed chunk waiting for its ring's acknowledgement; commits go in push order per input."""

    __slots__ = ("seq_end", "index", "key", "offset", "acked")

    def __init__(self, seq_end, index, key, offset):
        self.seq_end, self.index, self.key, self.offset, self.acked = seq_end, index, key, offset, False


class InputRunner:
    """Polls inputs, pushes their lines to rings, commits offsets the workers acknowledged."""

    _counts = None   # input index -> its reader's stats already added to the counters (_reader_counts)

    def __init__(self, cfg, rings, control, slot, counter_row):
        self.cfg, self.control, self.slot = cfg, control, slot
        self.rings = rings
        self.writers = [ring.writer() for ring in rings]
        self.counters = control.counters(counter_row)
        self.names = list(cfg["inputs"])
        self.readers = [build_input(name, cfg["inputs"][name], cfg) for name in self.names]
        self.drop_when_full = cfg["processing"]["when_full"] == "drop_newest"
        self.backlog = [collections.deque() for _ in self.readers]  # _Pending chunks per input, in order
        self.inflight = [collections.deque() for _ in rings]  # _Tickets per ring, in push order
        self.uncommitted = [collections.deque() for _ in self.readers]  # _Tickets per input, in push order
        self._next_ring = [0 for _ in self.readers]
        self._origin_rings = {}   # origin key -> ring (a cache of _ring_of_origin)
        self._stream_rings = {}   # (input index, stream id) -> ring of a file or stdin (_ring_of_stream)
        self._ring_load = [0.0] * len(rings)   # lines routed to each ring, decaying (LOAD_HALF_LIFE_SECONDS)
        self._load_decayed = time.monotonic()
        self.relief = ReliefWatch(control, "input")
        self._was_paused = False
        # The listener process publishes the network inputs' stats (their receivers live there).
        self.stats = InputStatsPublisher(control, [(index, name, reader) for index, (name, reader)
                                                   in enumerate(zip(self.names, self.readers))
                                                   if cfg["inputs"][name]["type"] not in NETWORK_TYPES])

    def run(self, stop, drain_timeout):
        # A line written to a quiet file waits at most idle_poll_seconds. Not shorter sleeps after
        # activity: a round over the inputs costs some 100 us of Python, and writers flush in bursts.
        idle_poll = self.cfg["processing"]["idle_poll_seconds"]
        log.info("input: inputs read again every %.3f s when nothing moved (idle_poll_seconds)", idle_poll)
        while not stop.requested:
            self.control.beat(self.slot)
            moved = self.pump()
            self.commit_acknowledged()
            self.relief.check()
            self.stats.publish()
            STATE_HEALTH.publish(self.counters)   # checkpoints set aside on load, failed saves (a full disk)
            if not moved:
                time.sleep(idle_poll)
        self.drain(drain_timeout)
        self.close()
        return 0

    def pump(self):
        """One round over the inputs; returns the number of lines pushed."""
        moved = 0
        paused = self._paused()
        if self._counts is None:
            self._counts = {}
        for index, reader in enumerate(self.readers):
            backlog = self.backlog[index]
            if index not in self._counts:
                self._counts[index] = _reader_counts(reader)
            if not backlog and not paused:  # read more only once everything read before is in a ring
                chunks = reader.poll()
                read_ns = time.monotonic_ns()   # the lines' latency (processing_duration_seconds) starts here
                for chunk in chunks:
                    backlog.extend(self._route(index, chunk, read_ns))
            # Since the last round, not around poll() only: commit() counts too (a Redis XACK, a lost connection).
            before, after = self._counts[index], _reader_counts(reader)
            self._counts[index] = after
            self.counters.add(**{name: max(0, after[name] - before[name]) for name in after})
            while backlog:
                pushed, done = self._push(backlog[0])
                moved += pushed
                if not done:
                    break  # that ring is full: keep the rest, in order, for the next round
                backlog.popleft()
        self.counters.set(files_deferred=sum(reader.stats.get("files_deferred", 0) for reader in self.readers),
                          redis_disconnected=sum(reader.stats.get("redis_disconnected", 0) for reader in self.readers))
        return moved

    def _paused(self):
        """The backpressure flag (POST /admin/enable-backpressure): read nothing new while it is set.

        Lines already read still go to the rings and are committed as they are acknowledged; the
        unread ones wait where they are (files on disk, the stdin pipe, the network spools), so
        pausing loses nothing. The change is logged once each way."""
        paused = self.control.flags().backpressure
        if paused != self._was_paused:
            self._was_paused = paused
            if paused:
                log.warning("input: backpressure on: reading paused (lines wait in their files, pipe and spools)")
            else:
                log.warning("input: backpressure off: reading resumed")
        return paused

    def _route(self, index, chunk, read_ns=None):
        """The chunk as _Pending pushes: whole to its file's ring, or a network chunk split by origin."""
        reader = self.readers[index]
        if not getattr(reader, "spread", False):
            ring = self._ring_of_stream(index, reader, chunk)
            self._ring_load[ring] += len(chunk.lines)
            return [_Pending(chunk, ring, index, read_ns)]
        # A network input is one stream however many hosts send to it: spread it, or one worker
        # carries it all. Lines of one origin (syslog host and app, a JSON line's source) go to one
        # ring, in order; lines without one go with the chunk's round-robin ring.
        fallback = self._next_ring[index]
        self._next_ring[index] = (fallback + 1) % len(self.rings)
        groups = {}
        origin, rings = reader.origin, self._origin_rings
        for line in chunk.lines:
            key = origin(line)
            if key is None:
                ring = fallback
            else:
                ring = rings.get(key)
                if ring is None:
                    ring = rings[key] = self._ring_of_origin(key)
            groups.setdefault(ring, []).append(line)
        if len(groups) <= 1:
            return [_Pending(chunk, next(iter(groups), fallback), index, read_ns)]
        # Only the last part carries the chunk's end offset: the commit waits for every part (in push order).
        parts = sorted(groups.items())
        return [_Pending(Chunk(chunk.key, chunk.path, lines, chunk.start_offset,
                               chunk.end_offset if i == len(parts) - 1 else None), ring, index, read_ns)
                for i, (ring, lines) in enumerate(parts)]

    def _ring_of_stream(self, index, reader, chunk):
        """The ring of a file (by its stream id, not its path: a rotated file changes path while its
        lines are in flight) or of stdin: the one it had, here or in its checkpoint, else the least loaded."""
        sid = (index, chunk.stream_id)
        ring = self._stream_rings.get(sid)
        if ring is not None:
            return ring
        store, key = getattr(reader, "checkpoints", None), chunk.key
        persistent = store is not None and isinstance(key, FileKey)
        ring = store.ring_of(key.device, key.inode) if persistent else None
        if ring is None or ring >= len(self.rings):   # new, or the number of workers changed
            self._decay_load()
            ring = min(range(len(self.rings)), key=lambda r: (self._ring_load[r], r))
            if persistent:
                store.set_ring(key.device, key.inode, ring)
        if len(self._stream_rings) >= MAX_STREAMS_CACHED:
            self._stream_rings.clear()    # files keep their ring through their checkpoints
        self._stream_rings[sid] = ring
        return ring

    def _decay_load(self):
        now = time.monotonic()
        factor = 0.5 ** ((now - self._load_decayed) / LOAD_HALF_LIFE_SECONDS)
        self._ring_load = [load * factor for load in self._ring_load]
        self._load_decayed = now

    def _ring_of_origin(self, key):
        # blake2b, not crc32: CRC is linear, so names differing in one character ("web1", "web2")
        # land on the same ring far too often. Stable across restarts: an origin keeps its worker.
        if len(self._origin_rings) >= MAX_ORIGINS_CACHED:
            self._origin_rings.clear()
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") % len(self.rings)

    def _push(self, pending):
        """Push what fits of one chunk; returns (lines pushed, whether the chunk is done)."""
        lines = pending.chunk.lines
        writer = self.writers[pending.ring]
        n = (writer.push_batch(lines[pending.pushed:], source_id=pending.index, read_ns=pending.read_ns)
             if pending.pushed < len(lines) else 0)
        pending.pushed += n
        done = pending.pushed >= len(lines)
        if not done and self.drop_when_full:
            self.counters.add(lines_dropped=len(lines) - pending.pushed)
            done = True
        self.counters.add(lines_read=n)
        if done:
            ticket = _Ticket(writer.next_seq, pending.index, pending.chunk.key, pending.chunk.end_offset)
            self.inflight[pending.ring].append(ticket)
            self.uncommitted[pending.index].append(ticket)
        return n, done

    def commit_acknowledged(self):
        """Commit the end offset of every chunk whose lines, and every line pushed before them, are acknowledged.

        Chunks of one input may sit on several rings (network inputs) that acknowledge at their own
        pace: a chunk is committed only when every earlier chunk of its input is acknowledged too.
        """
        touched = set()
        for ring, queue in zip(self.rings, self.inflight):
            acked = ring.acknowledged()
            while queue and queue[0].seq_end <= acked:
                ticket = queue.popleft()
                ticket.acked = True
                touched.add(ticket.index)
        for index in touched:
            pending = self.uncommitted[index]
            while pending and pending[0].acked:
                ticket = pending.popleft()
                if ticket.offset is not None:
                    self.readers[index].commit(ticket.key, ticket.offset)

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
        """Publish the last stats, save file checkpoints and spool offsets, close files."""
        self.stats.publish(force=True)
        for reader in self.readers:
            close = getattr(reader, "close", None)
            if close is not None:
                close()


def _reader_counts(reader):
    # A spool's torn records are counted where they are met: at the writer's restart or here, when reading.
    return {"read_errors": reader.stats.get("read_errors", 0),
            "spool_torn_records": reader.stats.get("torn_records", 0),
            "files_deferrals": reader.stats.get("deferrals", 0),
            "files_change_rescans": reader.stats.get("change_rescans", 0),
            "redis_reconnects": reader.stats.get("redis_reconnects", 0),
            "redis_claimed": reader.stats.get("redis_claimed", 0),
            "redis_acked": reader.stats.get("redis_acked", 0),
            "redis_connect_failures": reader.stats.get("redis_connect_failures", 0)}


def run_inputs(ctx, daemon):
    """ChildSpec target of the input process."""
    daemon.setup_child_logging("input")
    warn_orphan_spools(daemon.cfg)
    runner = InputRunner(daemon.cfg, daemon.rings, daemon.control, ctx.slot, daemon.input_counter_row)
    return runner.run(ctx.stop, daemon.cfg["service"]["shutdown_timeout_seconds"] / 2)
