"""Unit tests of the SPSC ring in one process: wrap-around arithmetic against a plain-Python model.

Cross-process runs (a million lines, kill -9 of the consumer) are in tests/integration/test_ring_processes.py.
"""
import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.ipc.ring import HEADER_BYTES, Ring, ring_bytes, wrap_spans
from anomaly_detector.parsing.framing import split_lines


def make_ring(slots, data_bytes, max_line_bytes=None):
    return Ring.create(bytearray(ring_bytes(slots, data_bytes)), slots, data_bytes, max_line_bytes)


def lines_of(buf, starts, ends):
    return [bytes(buf[s:e]) for s, e in zip(starts, ends)]


@given(st.integers(0, 10**12), st.integers(1, 64), st.data())
def test_wrap_spans_cover_exactly_the_cells_of_the_run(start, size, data):
    n = data.draw(st.integers(0, size))
    cells = []
    for offset, count in wrap_spans(start, n, size):
        assert 0 <= offset and offset + count <= size
        cells.extend(range(offset, offset + count))
    assert cells == [(start + i) % size for i in range(n)]


class RingModel:
    """What the ring must do, in plain Python: a bounded FIFO counted in lines and in stream bytes.

    Each line has a position in the byte stream; a batch pushed from one buffer also occupies the
    gaps (separators) between its lines, so the bytes in use run from the oldest unacknowledged
    line's position to the end of the newest line.
    """

    def __init__(self, slots, data_bytes):
        self.slots, self.data_bytes = slots, data_bytes
        self.unacked = collections.deque()  # (position, line) published, not acknowledged
        self.popped = 0                     # how many of them the reader has taken
        self.stream_end = 0                 # end of the newest line in the byte stream

    def push(self, lines, gaps):
        """Push lines with gaps[i] separator bytes after line i; returns how many were accepted."""
        accepted, pos = 0, self.stream_end
        for line, gap in zip(lines, gaps):
            oldest = self.unacked[0][0] if self.unacked else pos
            if len(self.unacked) == self.slots or pos + len(line) - oldest > self.data_bytes:
                break
            self.unacked.append((pos, line))
            self.stream_end = pos + len(line)
            pos = self.stream_end + gap
            accepted += 1
        return accepted

    def pop(self, max_n):
        batch = [line for _, line in list(self.unacked)[self.popped:self.popped + max_n]]
        self.popped += len(batch)
        return batch

    def ack(self):
        for _ in range(self.popped):
            self.unacked.popleft()
        acked, self.popped = self.popped, 0
        return acked

    def restart_reader(self):
        self.popped = 0


def as_buffer(lines, gaps):
    """lines joined with gaps[i] b'\n' bytes after line i, plus their spans (like split_lines output)."""
    buf, starts, ends = b"", [], []
    for line, gap in zip(lines, gaps):
        starts.append(len(buf))
        buf += line
        ends.append(len(buf))
        buf += b"\n" * gap
    return buf, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


line_specs = st.lists(st.tuples(st.integers(0, 24), st.integers(0, 3)), max_size=6)  # (length, gap after)
op = st.one_of(
    st.tuples(st.just("push_batch"), line_specs),
    st.tuples(st.just("push_arrays"), line_specs),
    st.tuples(st.just("pop"), st.integers(1, 5)),
    st.tuples(st.just("ack"), st.none()),
    st.tuples(st.just("restart_reader"), st.none()),
    st.tuples(st.just("restart_writer"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 6), st.integers(1, 24), st.lists(op, max_size=60))
def test_ring_matches_model_through_wraparound_and_restarts(slots, data_bytes, ops):
    ring = make_ring(slots, data_bytes)
    model = RingModel(slots, data_bytes)
    writer, reader = ring.writer(), ring.reader()
    counter = 0
    for name, arg in ops:
        if name.startswith("push"):
            lines, gaps = [], []
            for length, gap in arg:
                lines.append(bytes((counter + i) % 251 for i in range(min(length, data_bytes))))
                gaps.append(gap if name == "push_arrays" else 0)
                counter += 1
            if name == "push_batch":
                accepted = writer.push_batch(lines)
            else:
                accepted = writer.push_arrays(*as_buffer(lines, gaps))
            assert accepted == model.push(lines, gaps)
        elif name == "pop":
            buf, starts, ends, meta = reader.pop_batch(arg)
            assert lines_of(buf, starts, ends) == model.pop(arg)
        elif name == "ack":
            assert reader.ack() == model.ack()
        elif name == "restart_reader":  # a new worker after a crash resumes at the shared tail
            reader = ring.reader()
            model.restart_reader()
        else:  # a restarted input derives its cursor from shared memory
            writer = ring.writer()
        assert ring.depth() == len(model.unacked)
        assert ring.waiting() == len(model.unacked) - model.popped   # what no reader has taken yet


def test_sequence_numbers_and_metadata_follow_the_lines():
    ring = make_ring(8, 256)
    writer, reader = ring.writer(), ring.reader()
    assert writer.push_batch([b"a", b"bb"], source_id=3, input_pos=[2, 5]) == 2
    assert writer.push_batch([b"ccc"], source_id=[7], input_pos=9) == 1
    _, _, _, meta = reader.pop_batch(10)
    assert meta["seq"].tolist() == [0, 1, 2]
    assert meta["source_id"].tolist() == [3, 3, 7]
    assert meta["input_pos"].tolist() == [2, 5, 9]
    reader.ack()
    assert writer.push_batch([b"d"]) == 1
    _, _, _, meta = reader.pop_batch(10)
    assert meta["seq"].tolist() == [3] and meta["input_pos"].tolist() == [-1]


def test_full_ring_accepts_nothing_and_overwrites_nothing():
    ring = make_ring(4, 64, 16)
    writer, reader = ring.writer(), ring.reader()
    first = [b"line-%d" % i for i in range(4)]
    assert writer.push_batch(first) == 4
    assert writer.push_batch([b"x"]) == 0          # out of slots
    assert not writer.wait_for_space(0.01)
    buf, starts, ends, _ = reader.pop_batch(2)
    assert lines_of(buf, starts, ends) == first[:2]
    assert writer.push_batch([b"y"]) == 0          # popped is not acknowledged: still not free
    reader.ack()
    assert writer.wait_for_space(0.01)
    assert writer.push_batch([b"y" * 16, b"z" * 16, b"w"]) == 2
    buf, starts, ends, _ = reader.pop_batch(10)
    assert lines_of(buf, starts, ends) == first[2:] + [b"y" * 16, b"z" * 16]


def test_byte_area_bounds_a_batch_before_the_slots_do():
    ring = make_ring(100, 32, 32)
    writer = ring.writer()
    assert writer.push_batch([b"a" * 10] * 5) == 3
    assert writer.free() == (97, 2)
    assert writer.push_batch([b"b" * 3]) == 0
    assert writer.push_batch([b"", b"cc", b"d"]) == 2  # empty lines take a slot and no bytes


def test_max_size_line_fits_an_empty_ring_at_any_offset():
    ring = make_ring(4, 16, 16)
    writer, reader = ring.writer(), ring.reader()
    for shift in range(1, 16):
        assert writer.push_batch([b"s" * shift]) == 1
        assert writer.push_batch([bytes(range(16))]) == 0   # needs the whole area
        reader.pop_batch(1)
        reader.ack()
        assert writer.push_batch([bytes(range(16))]) == 1   # straddles the end of the area
        buf, starts, ends, _ = reader.pop_batch(1)
        assert lines_of(buf, starts, ends) == [bytes(range(16))]
        reader.ack()


def test_push_arrays_takes_split_lines_output_and_keeps_spans():
    text = b"alpha\r\nbeta\n\ngamma delta\nlast"
    buf = np.frombuffer(text, dtype=np.uint8)
    starts, ends = split_lines(buf)
    ring = make_ring(16, 64)
    writer, reader = ring.writer(), ring.reader()
    assert writer.push_arrays(buf, starts, ends, source_id=1, input_pos=ends + 1) == 5
    out, out_starts, out_ends, meta = reader.pop_batch(16)
    assert lines_of(out, out_starts, out_ends) == text.replace(b"\r", b"").split(b"\n")
    assert meta["input_pos"].tolist() == (ends + 1).tolist()


def test_push_arrays_stops_at_the_byte_bound_including_separators():
    buf = np.frombuffer(b"aaaa\nbbbb\ncccc\n", dtype=np.uint8)
    starts, ends = split_lines(buf)
    writer = make_ring(8, 10).writer()
    assert writer.push_arrays(buf, starts, ends) == 2    # "aaaa\nbbbb" is 9 bytes, a third would need 14
    assert writer.push_arrays(buf, starts[2:], ends[2:]) == 0


def test_invalid_input_is_refused():
    ring = make_ring(4, 16, 8)
    writer = ring.writer()
    with pytest.raises(ValueError):
        writer.push_batch([b"x" * 9])
    with pytest.raises(ValueError):
        writer.push_arrays(np.zeros(10, np.uint8), [0, 2], [4, 6])
    with pytest.raises(ValueError):
        Ring(bytearray(ring_bytes(4, 16)))              # never formatted
    with pytest.raises(ValueError):
        Ring.create(bytearray(HEADER_BYTES), 4, 16)     # too small
    with pytest.raises(ValueError):
        Ring.create(bytearray(ring_bytes(4, 16)), 4, 16, 17)


def test_reader_rewind_returns_unacknowledged_lines_again():
    ring = make_ring(8, 64)
    writer, reader = ring.writer(), ring.reader()
    writer.push_batch([b"one", b"two", b"three"])
    reader.pop_batch(2)
    assert reader.pending() == 2 and reader.available() == 1 and ring.waiting() == 1
    reader.rewind()
    assert ring.waiting() == 3
    buf, starts, ends, _ = reader.pop_batch(3)
    assert lines_of(buf, starts, ends) == [b"one", b"two", b"three"]
    assert reader.ack() == 3 and ring.acknowledged() == 3 and ring.depth() == 0
    assert not reader.wait_for_data(0.01)


def test_read_times_travel_with_the_lines_and_the_oldest_waiting_one_is_known():
    import time
    ring = make_ring(8, 1024)
    writer, reader = ring.writer(), ring.reader()
    assert reader.oldest_read_ns() is None
    writer.push_batch([b"a", b"b"], read_ns=1000)
    before = time.monotonic_ns()
    writer.push_batch([b"c"])                         # default: the time of the push
    writer.push_batch([b"d", b"e"], read_ns=np.array([7, 8]))
    assert reader.oldest_read_ns() == 1000
    _, _, _, meta = reader.pop_batch(2)
    assert list(meta["read_ns"]) == [1000, 1000]
    assert before <= reader.oldest_read_ns() <= time.monotonic_ns()
    _, _, _, meta = reader.pop_batch(10)
    assert list(meta["read_ns"][1:]) == [7, 8] and reader.oldest_read_ns() is None
    reader.rewind()                                   # unacknowledged lines come back with their times
    assert reader.oldest_read_ns() == 1000
