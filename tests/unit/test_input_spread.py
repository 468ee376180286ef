"""The input process spreads a network input over every ring by origin and commits its spool offset in order."""
import collections

from anomaly_detector.inputs.file_tail import Chunk
from anomaly_detector.inputs.origin import json_origin, syslog_origin
from anomaly_detector.inputs.runner import InputRunner
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes


def test_syslog_origin_is_host_and_app_in_both_formats():
    assert syslog_origin(b"<14>Mar  2 10:00:01 web1 app[12]: request ok") == b"web1 app"
    assert syslog_origin(b"<14>Mar  2 10:00:01 web1 sshd: accepted") == b"web1 sshd"
    assert syslog_origin(b"<13>1 2026-03-02T10:00:00Z web2 app 13 - - request ok") == b"web2 app"
    assert syslog_origin(b"no header at all") is None
    assert syslog_origin(b"<13>short") is None


def test_json_origin_reads_a_top_level_string_field():
    origin = json_origin("source")
    assert origin(b'{"message": "x", "source": "db-1"}') == b"db-1"
    assert origin(b'{"source":"a\\"b"}') == b'a\\"b'
    assert origin(b'{"message": "no source"}') is None
    assert json_origin("a.b")(b'{"a": {"b": "x"}}') is None


class _Reader:
    """A spool reader double: hands out the chunks given, records commits (what the runner relies on)."""

    spread = True
    stats = {}

    def __init__(self, chunks):
        self.chunks, self.commits, self.origin = collections.deque(chunks), [], syslog_origin

    def poll(self):
        return [self.chunks.popleft()] if self.chunks else []

    def commit(self, key, offset):
        self.commits.append(offset)


def _runner(reader, rings):
    buf = bytearray(control_bytes(1, 1))
    runner = InputRunner.__new__(InputRunner)
    runner.rings, runner.writers = rings, [ring.writer() for ring in rings]
    runner.control = ControlBlock.create(buf, 1, 1)
    runner.counters = runner.control.counters(0)
    runner._was_paused = False
    runner.readers, runner.drop_when_full = [reader], False
    runner.backlog, runner.uncommitted = [collections.deque()], [collections.deque()]
    runner.inflight = [collections.deque() for _ in rings]
    runner._next_ring = [0]
    runner._origin_rings = {}
    return runner


def test_origins_spread_over_rings_and_commits_wait_for_every_earlier_part():
    rings = [Ring.create(bytearray(ring_bytes(64, 1 << 16)), 64, 1 << 16) for _ in range(3)]
    hosts = [b"<14>Mar  2 10:00:01 web%d app[1]: line %d" % (i % 7, i) for i in range(40)]
    reader = _Reader([Chunk("k", "spool", hosts[:20], 0, 100), Chunk("k", "spool", hosts[20:], 100, 200)])
    runner = _runner(reader, rings)
    runner.pump()
    runner.pump()
    readers = [ring.reader() for ring in rings]
    got = [readers[i].pop_batch(100) for i in range(3)]
    assert all(len(batch[1]) for batch in got), "every ring got lines"
    by_ring = [[bytes(buf[s:e]) for s, e in zip(starts, ends)] for buf, starts, ends, _ in got]
    for lines in by_ring:   # one origin on one ring, in order
        for host in range(7):
            mine = [line for line in lines if b"web%d " % host in line]
            assert mine == [line for line in hosts if b"web%d " % host in line] or not mine
    # Ring 0 and 2 acknowledge; ring 1 holds a part of the first chunk: nothing may be committed.
    readers[0].ack()
    readers[2].ack()
    runner.commit_acknowledged()
    assert reader.commits == []
    readers[1].ack()
    runner.commit_acknowledged()
    assert reader.commits == [100, 200]


def test_backpressure_flag_pauses_reading_and_loses_nothing():
    rings = [Ring.create(bytearray(ring_bytes(64, 1 << 16)), 64, 1 << 16) for _ in range(2)]
    lines = [b"<14>Mar  2 10:00:01 web%d app[1]: line %d" % (i % 5, i) for i in range(30)]
    reader = _Reader([Chunk("k", "spool", lines[:10], 0, 50), Chunk("k", "spool", lines[10:], 50, 150)])
    runner = _runner(reader, rings)
    runner.control.set_flags(backpressure=True)
    assert runner.pump() == 0 and len(reader.chunks) == 2          # nothing polled while paused
    runner.control.set_flags(backpressure=False)
    assert runner.pump() == 10 and runner.pump() == 20              # then every line, in order
    assert sum(ring.depth() for ring in rings) == 30
