"""The ring between two real processes: a million numbered lines exactly once, and kill -9 of the consumer.

The test process plays the supervisor: it allocates the ring before forking a producer and consumers.
"""
import os
import signal
import time
import uuid

import numpy as np
import pytest

from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, segment_names

MAX_LINE = 16384
SEQ_BYTES = 8
DEADLINE_SECONDS = 60


def random_lengths(total, seed=20261128):
    """Line sizes for the whole run, drawn before forking so both sides know them: 8..400 bytes,
    one line in 2,000 exactly MAX_LINE (at a random place, so some straddle the end of the area)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(SEQ_BYTES, 401, size=total)
    lengths[rng.random(total) < 1 / 2000] = MAX_LINE
    return lengths


LENGTHS = random_lengths(1_000_000)


def line_lengths(seqs):
    return LENGTHS[seqs.astype(np.int64)]


def make_lines(first_seq, n):
    """n lines separated by b'\\n': 8-byte little-endian seq, then (seq % 251) repeated."""
    seqs = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    lengths = line_lengths(seqs)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    ends = starts + lengths
    buf = np.repeat((seqs % 251).astype(np.uint8), lengths + 1)
    buf[ends] = 10
    buf[starts[:, None] + np.arange(SEQ_BYTES)] = seqs.view(np.uint8).reshape(n, SEQ_BYTES)
    return buf, starts, ends, seqs


def decode_and_check(buf, starts, ends, meta):
    """Seq numbers of a popped batch; asserts each line's size and content match its seq."""
    seqs = buf[starts[:, None] + np.arange(SEQ_BYTES)].copy().view("<u8").ravel()
    assert np.array_equal(ends - starts, line_lengths(seqs))
    assert np.array_equal(buf[ends - 1], np.where(ends - starts > SEQ_BYTES, seqs % 251, buf[ends - 1]))
    assert np.array_equal(meta["input_pos"], seqs.astype(np.int64))
    return seqs


def produce(ring, total, chunk=20000):
    writer = ring.writer()
    deadline = time.monotonic() + DEADLINE_SECONDS
    for first in range(0, total, chunk):
        buf, starts, ends, seqs = make_lines(first, min(chunk, total - first))
        done = 0
        while done < starts.shape[0]:
            pushed = writer.push_arrays(buf, starts[done:], ends[done:], source_id=1,
                                        input_pos=seqs[done:].astype(np.int64))
            done += pushed
            if pushed == 0 and not writer.wait_for_space(1.0, int(ends[done] - starts[done])):
                if time.monotonic() > deadline:
                    return 2
    return 0


def consume(ring, total, max_n, ledger_fd=None, expect_first=0):
    """Pop until seq total-1; check order and content; log seqs to ledger_fd before each ack."""
    reader = ring.reader()
    expected = expect_first
    deadline = time.monotonic() + DEADLINE_SECONDS
    while expected < total:
        if not reader.wait_for_data(1.0):
            if time.monotonic() > deadline:
                return 2
            continue
        seqs = decode_and_check(*reader.pop_batch(max_n))
        if expected is not None and not np.array_equal(seqs, np.arange(expected, expected + seqs.shape[0])):
            return 3
        if ledger_fd is not None:
            os.write(ledger_fd, seqs.tobytes())
        reader.ack()
        expected = int(seqs[-1]) + 1
    return 0


def fork(fn, *args, **kwargs):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn(*args, **kwargs)
        finally:
            os._exit(code)
    return pid


def reap(pid, timeout=DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


@pytest.fixture
def arena():
    instance = "t" + uuid.uuid4().hex[:12]
    arena = SharedArena(instance)
    pids = []
    try:
        yield arena, pids
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass  # already reaped by the test
        arena.close()
    assert segment_names(instance_prefix(instance)) == []


def make_ring(arena, slots, data_bytes):
    segment = arena.allocate("ring0", ring_bytes(slots, data_bytes))
    return Ring.create(segment.buf, slots, data_bytes, MAX_LINE)


def test_million_lines_between_two_processes_arrive_once_in_order(arena):
    arena, pids = arena
    total = 1_000_000
    ring = make_ring(arena, 4096, 256 * 1024)
    assert int(LENGTHS[:total].sum()) > 500 * ring.data_bytes and (LENGTHS == MAX_LINE).sum() > 100
    pids.append(fork(consume, ring, total, 1000))
    pids.append(fork(produce, ring, total))
    assert reap(pids[1]) == 0, "producer failed"
    assert reap(pids[0]) == 0, "consumer saw a gap, a duplicate or corrupted bytes"
    assert ring.depth() == 0 and ring.acknowledged() == total


def test_kill_9_of_the_consumer_loses_nothing_and_duplicates_at_most_one_batch(arena, tmp_path):
    arena, pids = arena
    total, max_n = 200_000, 500
    ring = make_ring(arena, 1024, 64 * 1024)
    ledger_path = tmp_path / "ledger"
    ledger = os.open(ledger_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pids.append(fork(consume, ring, total, max_n, ledger))
        pids.append(fork(produce, ring, total))
        while ring.acknowledged() < total // 4:
            time.sleep(0.002)
        os.kill(pids[0], signal.SIGKILL)
        assert reap(pids[0]) == -signal.SIGKILL
        resume_at = ring.acknowledged()
        assert resume_at < total
        pids.append(fork(consume, ring, total, max_n, ledger, expect_first=resume_at))
        assert reap(pids[1]) == 0, "producer failed"
        assert reap(pids[2]) == 0, "restarted consumer did not resume at the shared tail"
    finally:
        os.close(ledger)
    seen = np.fromfile(ledger_path, dtype="<u8")
    counts = np.bincount(seen.astype(np.int64), minlength=total)
    assert counts.shape[0] == total and counts.min() == 1, "a line was lost"
    duplicates = int((counts - 1).sum())
    assert duplicates <= max_n
    assert np.array_equal(np.flatnonzero(counts > 1), np.arange(resume_at, resume_at + duplicates))
