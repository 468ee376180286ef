"""The control block across fork: heartbeats, per-worker counter rows summed by a reader, run-time flags.

Children are real forks sharing one SharedArena segment; every test checks nothing is left in /dev/shm.
"""
import os
import time
import uuid

import numpy as np
import pytest

from anomaly_detector.ipc.control import COUNTER_FIELDS, ControlBlock, RuntimeFlags, control_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, segment_names
from anomaly_detector.supervisor.states import ProcessState


@pytest.fixture
def block():
    instance = "t" + uuid.uuid4().hex[:12]
    with SharedArena(instance) as arena:
        segment = arena.allocate("control", control_bytes(4, 3))
        yield ControlBlock.create(segment.buf, 4, 3, batch_size=500)
    assert segment_names(instance_prefix(instance)) == []


def run_children(*bodies):
    """Fork one child per body, wait for all; return their exit codes."""
    pids = []
    try:
        for body in bodies:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = body()
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
    return codes


def test_children_write_their_own_rows_and_the_reader_sums_them(block):
    def worker(row):
        def body():
            counters = block.counters(row)
            for _ in range(1000):
                counters.add(lines_processed=7, batches=1)
            counters.add(errors=row)
            return 0
        return body

    assert run_children(worker(0), worker(1), worker(2)) == [0, 0, 0]
    totals = block.counter_totals()
    assert totals["lines_processed"] == 21000 and totals["batches"] == 3000 and totals["errors"] == 3
    assert set(totals) == set(COUNTER_FIELDS)
    assert block.counter_rows_snapshot()["errors"].tolist() == [0, 1, 2]


def test_a_restarted_worker_continues_its_row():
    buf = bytearray(control_bytes(1, 1))
    block = ControlBlock.create(buf, 1, 1)
    block.counters(0).add(lines_processed=5)
    again = ControlBlock(buf)  # what a process attaching later sees
    again.counters(0).add(lines_processed=2)
    assert again.counters(0).value("lines_processed") == 7
    with pytest.raises(ValueError):
        again.counters(0).add(errors=-1)


def test_heartbeats_written_by_a_child_are_seen_by_the_supervisor(block):
    now = time.monotonic()
    block.record_child(2, pid=1234, state=ProcessState.STARTING, started=now - 50, restarts=3)
    assert block.heartbeat_age(2, now) == pytest.approx(50)

    def child():
        block.beat(2)
        return 0

    assert run_children(child) == [0]
    assert block.heartbeat_age(2) < 5
    row = block.child_table()[2]
    assert (int(row["pid"]), int(row["state"]), int(row["restarts"])) == (1234, ProcessState.STARTING, 3)
    block.record_exit(2, -9, ProcessState.BACKOFF)
    row = block.child_table()[2]
    assert (int(row["pid"]), int(row["exit_status"]), int(row["state"])) == (0, -9, ProcessState.BACKOFF)


def test_flags_changed_after_fork_reach_the_child(block):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def child():
        os.write(ready_w, block.flags().batch_size.to_bytes(4, "little"))
        os.read(go_r, 1)
        flags = block.flags()
        ok = flags.batch_size == 250 and not flags.tier4_enabled and flags.relief_generation == 1
        return 0 if ok else 5

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child()
        finally:
            os._exit(code)
    try:
        assert int.from_bytes(os.read(ready_r, 4), "little") == 500
        block.set_flags(batch_size=250, tier4_enabled=False)
        assert block.bump("relief_generation") == 1
        os.write(go_w, b"g")
    finally:
        status = os.waitpid(pid, 0)[1]
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0


def test_flags_have_defaults_and_reject_bad_values():
    block = ControlBlock.create(bytearray(control_bytes(1, 1)), 1, 1)
    assert block.flags() == RuntimeFlags(tier4_enabled=True, backpressure=False, batch_size=1000,
                                         learning_rate_factor=1.0, workers_wanted=2,
                                         config_generation=0, relief_generation=0, reload_ok=True,
                                         reloads_rejected=0)
    block.set_flags(learning_rate_factor=0.5, backpressure=True, workers_wanted=np.int64(4))
    flags = block.flags()
    assert flags.learning_rate_factor == 0.5 and flags.backpressure and flags.workers_wanted == 4
    for bad in ({"batch_size": 0}, {"batch_size": 2.5}, {"learning_rate_factor": 0.0},
                {"workers_wanted": "3"}, {"nonsense": 1}, {"config_generation": 5}):
        with pytest.raises(ValueError):
            block.set_flags(**bad)
    with pytest.raises(ValueError):
        block.set_flags(batch_size=10, workers_wanted=0)
    assert block.flags().batch_size == 1000  # a rejected change applies nothing
    with pytest.raises(ValueError):
        block.bump("batch_size")


def test_attaching_to_something_else_fails():
    with pytest.raises(ValueError):
        ControlBlock(bytearray(control_bytes(1, 1)))
    with pytest.raises(ValueError):
        ControlBlock.create(bytearray(64), 1, 1)


def test_input_stats_rows_are_claimed_by_name_and_grow_across_publishers():
    from types import SimpleNamespace

    from anomaly_detector.inputs.stats import InputStatsPublisher

    block = ControlBlock.create(bytearray(control_bytes(1, 1)), 1, 1)
    web = SimpleNamespace(stats={"rejected_413": 2, "truncated": 1, "lines": 50})
    tail = SimpleNamespace(stats={"long_lines": 3}, on_long_line="skip")
    InputStatsPublisher(block, [(0, "web", web), (1, "tail", tail)]).publish()
    snap = block.input_stats_snapshot(["web", "tail"])
    assert (snap["web"]["rejected_413"], snap["web"]["lines_truncated"]) == (2, 1)
    assert (snap["tail"]["lines_skipped"], snap["tail"]["lines_truncated"]) == (3, 0)
    # a restarted input process starts its readers from zero: the shared counts keep growing
    web.stats = {"rejected_413": 1, "truncated": 0}
    publisher = InputStatsPublisher(block, [(0, "web", web), (1, "tail", tail)])
    publisher.publish()
    web.stats["rejected_413"] = 4
    publisher.publish(force=True)
    assert block.input_stats_snapshot(["web"])["web"]["rejected_413"] == 6
    # a reload that puts another input in row 0: its row starts from zero, the old counts never show under it
    assert block.input_stats_snapshot(["other"])["other"]["rejected_413"] == 0
    InputStatsPublisher(block, [(0, "other", SimpleNamespace(stats={}))]).publish()
    assert block.input_stats_snapshot(["web"])["web"]["rejected_413"] == 0
