"""Single-producer single-consumer ring of log lines in shared memory, handed off by batch.

An input pushes lines (RingWriter.push_batch/push_arrays); one detector worker pops them as numpy
arrays shaped like parsing.framing.split_lines output (RingReader.pop_batch) and acknowledges them
after scoring (RingReader.ack). The supervisor creates the ring in a shm.Segment before forking.

Layout of one ring (all offsets 64-byte aligned):

    line 0   header words: magic, version, slots, data_bytes, max_line_bytes, slots_offset, data_offset
    line 1   head: lines ever published by the producer (monotonic uint64)
    line 2   tail: lines ever acknowledged by the consumer (monotonic uint64); then taken: lines ever
             popped by the consumer (its read cursor, published for the metrics; same writer, same line)
    slots    SLOT_DTYPE[slots]: byte position (monotonic), input position, read time (CLOCK_MONOTONIC ns,
             the same clock in every process), length, source id per line
    data     uint8[data_bytes]: line bytes, a circular stream addressed by position % data_bytes

Head and tail sit on their own cache lines so producer and consumer never write the same line.
Counters only grow, so head - tail is the depth and no "full vs empty" ambiguity exists. A line
may straddle the end of the data area; the consumer copies each batch out in at most two pieces.

Crash semantics: the consumer keeps a private read cursor and moves the shared tail only in ack(),
after the batch was processed. A worker killed mid-batch is replaced by one whose RingReader starts
at the shared tail, so it re-reads the unacknowledged lines (at least once; duplicates bounded by
what was popped but not acknowledged, one batch in the worker loop). The producer likewise derives
its cursor from shared memory, so a restarted input continues where the dead one published.

Intended use:

    supervisor: ring = Ring.create(arena.allocate("ring0", ring_bytes(slots, data)).buf, slots, data, max_line)
    input:      w = ring.writer();  n = w.push_batch(lines, source_id, positions)
                if n < len(lines): w.wait_for_space(0.1, len(lines[n]))   # backpressure: read the file later
    worker:     r = ring.reader();  r.wait_for_data(0.5); buf, starts, ends, meta = r.pop_batch(batch_size)
                ... parse and score ...; r.ack()
    sidecar:    ring.depth(); ring.waiting()
"""
import time

import numpy as np

RING_MAGIC = 0x61645F72696E6731  # "ad_ring1": tells a ring from any other mapping
RING_VERSION = 2   # 2: slots carry the time the input read the line
CACHE_LINE = 64
_HEADER_WORDS = 8
_HEAD_OFFSET = CACHE_LINE
_TAIL_OFFSET = 2 * CACHE_LINE
_TAKEN_OFFSET = _TAIL_OFFSET + 8   # in the tail's cache line: the consumer writes both, nobody else
HEADER_BYTES = 3 * CACHE_LINE

SLOT_DTYPE = np.dtype([("pos", "<u8"), ("input_pos", "<i8"), ("read_ns", "<u8"), ("length", "<u4"),
                       ("source_id", "<u4")])
META_DTYPE = np.dtype([("seq", "<u8"), ("source_id", "<u4"), ("input_pos", "<i8"), ("read_ns", "<u8")])

# Polling waits: a few hundred wake-ups per second at most while idle, at most 5 ms added latency
# (the worker passes [processing] idle_poll_seconds as the longest sleep instead).
# Chosen over an eventfd doorbell: no lost-wakeup race to fence against, and no descriptor that
# every restarted child must inherit.
POLL_SLEEP_MIN = 0.0002
POLL_SLEEP_MAX = 0.005


def ring_bytes(slots, data_bytes):
    """Size of the shared memory a ring with this many slots and payload bytes needs."""
    return _data_offset(slots) + data_bytes


def wrap_spans(start, n, size):
    """Split n cells starting at monotonic position start of a circular array of size cells.

    Returns ((offset, count), ...) with one piece, or two when the run crosses the end. n <= size.
    """
    first = start % size
    head_count = min(n, size - first)
    if head_count == n:
        return ((first, n),)
    return ((first, head_count), (0, n - head_count))


def _publish(cell, value):
    """Make everything written before this call visible to the other process, then the counter.

    This is the ring's one memory-ordering point: the producer writes payload and slots, then
    publishes head here; the consumer copies a batch out, then publishes tail here. The other side
    reads the counter with a plain load (_observe) before touching what it guards.
    On x86-64 (TSO) stores are not reordered with older stores and loads not with older loads, so
    an aligned 8-byte store (what numpy does for one uint64 element) is a release store and a plain
    load an acquire load; the numpy calls around it are opaque C calls the compiler cannot move it
    across. On a weakly ordered CPU (ARM, POWER) this function must issue a release store and
    _observe an acquire load (e.g. via the `atomics` package) before the ring is used there.
    """
    cell[0] = value


def _observe(cell):
    """Acquire-side partner of _publish (a plain load on x86-64): read a counter the other side publishes."""
    return int(cell[0])


def _data_offset(slots):
    slots_end = HEADER_BYTES + slots * SLOT_DTYPE.itemsize
    return -(-slots_end // CACHE_LINE) * CACHE_LINE


def _gather(circular, start, n):
    """Copy n cells from monotonic position start of a circular numpy array."""
    pieces = [circular[off:off + count] for off, count in wrap_spans(start, n, circular.shape[0])]
    return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)


def _scatter(circular, start, values):
    """Write values into a circular numpy array from monotonic position start."""
    done = 0
    for off, count in wrap_spans(start, values.shape[0], circular.shape[0]):
        circular[off:off + count] = values[done:done + count]
        done += count


def _wait_until(ready, timeout, max_sleep=POLL_SLEEP_MAX, min_sleep=POLL_SLEEP_MIN):
    deadline = time.monotonic() + timeout
    delay = min(min_sleep, max_sleep)
    while not ready():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, max_sleep)
    return True


class Ring:
    """Views of one ring in a shared buffer; safe to create before fork and inherit.

    Cursors live in RingWriter/RingReader, which a process creates after it starts (writer(),
    reader()), so a restarted child resumes from the shared counters, not a stale inherited copy.
    """

    def __init__(self, buffer):
        header = np.frombuffer(buffer, np.uint64, count=_HEADER_WORDS)
        if int(header[0]) != RING_MAGIC or int(header[1]) != RING_VERSION:
            raise ValueError("buffer does not hold an initialised ring (wrong magic or version)")
        self.slots, self.data_bytes, self.max_line_bytes, slots_offset, data_offset = (int(x) for x in header[2:7])
        self._head = np.frombuffer(buffer, np.uint64, count=1, offset=_HEAD_OFFSET)
        self._tail = np.frombuffer(buffer, np.uint64, count=1, offset=_TAIL_OFFSET)
        self._taken = np.frombuffer(buffer, np.uint64, count=1, offset=_TAKEN_OFFSET)
        self._slots = np.frombuffer(buffer, SLOT_DTYPE, count=self.slots, offset=slots_offset)
        self._data = np.frombuffer(buffer, np.uint8, count=self.data_bytes, offset=data_offset)

    @classmethod
    def create(cls, buffer, slots, data_bytes, max_line_bytes=None):
        """Lay out an empty ring in buffer (at least ring_bytes(slots, data_bytes) long) and attach to it."""
        max_line_bytes = data_bytes if max_line_bytes is None else max_line_bytes
        if slots < 2 or not 1 <= max_line_bytes <= data_bytes:
            raise ValueError("a ring needs >= 2 slots and 1 <= max_line_bytes <= data_bytes")
        if len(memoryview(buffer)) < ring_bytes(slots, data_bytes):
            raise ValueError(f"buffer too small: a ring of {slots} slots and {data_bytes} bytes needs "
                             f"{ring_bytes(slots, data_bytes)} bytes")
        header = np.frombuffer(buffer, np.uint64, count=HEADER_BYTES // 8)
        header[:] = 0
        header[2:7] = (slots, data_bytes, max_line_bytes, HEADER_BYTES, _data_offset(slots))
        header[1] = RING_VERSION
        header[0] = RING_MAGIC  # last: a half-initialised ring is never attached to
        return cls(buffer)

    def depth(self):
        """Lines published and not yet acknowledged (the processing queue size for metrics)."""
        return _observe(self._head) - _observe(self._tail)

    def waiting(self):
        """Lines published and not yet taken (popped) by the consumer: the processing queue for metrics.

        The consumer publishes its read cursor at each pop; a reader that died leaves its last cursor
        until its successor attaches (which publishes the tail again), so the count is clamped to depth.
        """
        head, tail, taken = _observe(self._head), _observe(self._tail), _observe(self._taken)
        return head - min(max(taken, tail), head)

    def acknowledged(self):
        """Lines ever acknowledged by the consumer; an input checkpoints the positions of seq below this."""
        return _observe(self._tail)

    def writer(self):
        """The producer's side; create it in the producing process after it starts."""
        return RingWriter(self)

    def reader(self):
        """The consumer's side; create it in the worker after it starts (resumes at the shared tail)."""
        return RingReader(self)


class RingWriter:
    """Producer cursor: push lines without ever blocking; returns how many fit."""

    def __init__(self, ring):
        self.ring = ring
        self.next_seq = _observe(ring._head)
        self._byte_head = self._end_of_last_line()

    def _end_of_last_line(self):
        if self.next_seq == 0:
            return 0
        last = self.ring._slots[(self.next_seq - 1) % self.ring.slots]
        return int(last["pos"]) + int(last["length"])

    def free(self):
        """(free slots, free payload bytes) as seen now; only grows until this writer pushes again."""
        ring = self.ring
        tail = _observe(ring._tail)
        used_bytes = 0
        if tail != self.next_seq:
            used_bytes = self._byte_head - int(ring._slots[tail % ring.slots]["pos"])
        return ring.slots - (self.next_seq - tail), ring.data_bytes - used_bytes

    def push_batch(self, lines, source_id=0, input_pos=None, read_ns=None):
        """Append the longest prefix of lines (bytes objects, no newline) that fits; return its length.

        source_id and input_pos are scalars or one value per line; input_pos is where the input
        will resume after that line (e.g. the file offset after its newline), for checkpoints.
        read_ns: when the input read the lines (time.monotonic_ns(); default: now), scalar or per line.
        """
        if len(lines) == 0:
            return 0
        lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        self._check_lengths(lengths)
        n = self._fit(starts, ends)
        if n:
            payload = np.frombuffer(b"".join(lines[:n]), dtype=np.uint8)
            self._commit(payload, starts[:n], lengths[:n], source_id, input_pos, read_ns, n)
        return n

    def push_arrays(self, buf, starts, ends, source_id=0, input_pos=None, read_ns=None):
        """Like push_batch for lines given as spans of one buffer (uint8 array or bytes-like, e.g. split_lines output).

        Spans must be in order and not overlap; the bytes between them (newlines) are copied along
        and cost ring space, so keep separators short.
        """
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if starts.shape[0] == 0:
            return 0
        lengths = ends - starts
        self._check_lengths(lengths)
        if np.any(starts[1:] < ends[:-1]):
            raise ValueError("line spans must be in order and must not overlap")
        n = self._fit(starts, ends)
        if n:
            if not isinstance(buf, np.ndarray):
                buf = np.frombuffer(buf, dtype=np.uint8)  # bytes, bytearray, memoryview, mmap
            payload = buf[starts[0]:ends[n - 1]]
            self._commit(payload, starts[:n] - starts[0], lengths[:n], source_id, input_pos, read_ns, n)
        return n

    def wait_for_space(self, timeout, nbytes=0):
        """Sleep until one slot and nbytes of payload are free (True) or timeout seconds pass (False)."""
        def fits():
            slots, free_bytes = self.free()
            return slots >= 1 and free_bytes >= nbytes
        return _wait_until(fits, timeout)

    def _check_lengths(self, lengths):
        if lengths.min() < 0 or lengths.max() > self.ring.max_line_bytes:
            raise ValueError(f"line length must be 0..{self.ring.max_line_bytes} bytes (frame lines first)")

    def _fit(self, starts, ends):
        free_slots, free_bytes = self.free()
        fit_bytes = int(np.searchsorted(ends - starts[0], free_bytes, side="right"))
        return min(starts.shape[0], free_slots, fit_bytes)

    def _commit(self, payload, rel_starts, lengths, source_id, input_pos, read_ns, n):
        ring = self.ring
        _scatter(ring._data, self._byte_head, payload)
        slots = np.empty(n, dtype=SLOT_DTYPE)
        slots["pos"] = self._byte_head + rel_starts
        slots["length"] = lengths
        slots["source_id"] = _per_line(source_id, n)
        slots["input_pos"] = -1 if input_pos is None else _per_line(input_pos, n)
        slots["read_ns"] = time.monotonic_ns() if read_ns is None else _per_line(read_ns, n)
        _scatter(ring._slots, self.next_seq, slots)
        self.next_seq += n
        self._byte_head += int(payload.shape[0])
        _publish(ring._head, self.next_seq)


class RingReader:
    """Consumer cursor: pop batches, acknowledge them once processed."""

    def __init__(self, ring):
        self.ring = ring
        self._read = _observe(ring._tail)
        ring._taken[0] = self._read   # what a dead predecessor had taken is back in the queue

    def pending(self):
        """Lines popped but not acknowledged yet (re-read by a successor if this process dies now)."""
        return self._read - _observe(self.ring._tail)

    def available(self):
        """Lines published and not popped yet."""
        return _observe(self.ring._head) - self._read

    def pop_batch(self, max_n):
        """Up to max_n lines as (buf, starts, ends, meta); copies, valid after ack.

        buf uint8, starts/ends int64 offsets into buf (end exclusive, like split_lines),
        meta META_DTYPE: seq (ring sequence number), source_id, input_pos, read_ns.
        """
        ring = self.ring
        n = min(int(max_n), _observe(ring._head) - self._read)
        if n <= 0:
            return _empty_batch()
        slots = _gather(ring._slots, self._read, n)
        first = int(slots["pos"][0])
        stop = int(slots["pos"][-1]) + int(slots["length"][-1])
        buf = _gather(ring._data, first, stop - first)
        starts = (slots["pos"] - np.uint64(first)).astype(np.int64)
        ends = starts + slots["length"]
        meta = np.empty(n, dtype=META_DTYPE)
        meta["seq"] = np.arange(self._read, self._read + n, dtype=np.uint64)
        meta["source_id"] = slots["source_id"]
        meta["input_pos"] = slots["input_pos"]
        meta["read_ns"] = slots["read_ns"]
        self._read += n
        self.ring._taken[0] = self._read
        return buf, starts, ends, meta

    def oldest_read_ns(self):
        """When the input read the oldest line not popped yet (time.monotonic_ns()), None when there is none."""
        if self.available() <= 0:
            return None
        return int(self.ring._slots[self._read % self.ring.slots]["read_ns"])

    def ack(self):
        """Release every popped line to the producer; call only after they were processed. Returns how many."""
        released = self.pending()
        if released:
            _publish(self.ring._tail, self._read)
        return released

    def rewind(self):
        """Forget popped-but-unacknowledged lines so the next pop_batch returns them again."""
        self._read = _observe(self.ring._tail)
        self.ring._taken[0] = self._read

    def wait_for_data(self, timeout, max_sleep=POLL_SLEEP_MAX, min_sleep=POLL_SLEEP_MIN):
        """Sleep until a line is available (True) or timeout seconds pass (False).

        Looks after min_sleep, then twice as long each time up to max_sleep: on a shared machine each
        wake-up costs a cold cache, so a caller that tolerates max_sleep of latency passes it as both."""
        return _wait_until(lambda: self.available() > 0, timeout, max_sleep, min_sleep)


def _per_line(value, n):
    values = np.asarray(value)
    return values if values.ndim == 0 else values[:n]


def _empty_batch():
    return (np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, META_DTYPE))
