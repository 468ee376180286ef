"""The supervisor mechanics assembled: SIGTERM stops every child within the bound, kill -9 of the
supervisor takes its workers down and the next start sweeps /dev/shm, and a worker killed mid-stream
is restarted by ChildSet and re-reads its unacknowledged batch.
"""
import json
import os
import signal
import time
import uuid

import numpy as np
import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, process_start_ticks, segment_names, sweep_stale
from anomaly_detector.supervisor.children import ChildSet, ChildSpec, RestartPolicy
from anomaly_detector.supervisor.signals import SignalQueue

STOP_TIMEOUT = 1.0
POLICY = RestartPolicy(start_seconds=0.3, backoff_initial=0.05, backoff_max=0.2, heartbeat_timeout=5, kill_grace=1)


def beating_worker(block):
    def target(ctx):
        while not ctx.stop.requested:
            block.beat(ctx.slot)
            time.sleep(0.01)
        return 0
    return target


def deaf_input(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def mini_supervisor(instance, report_fd):
    """A supervisor main loop reduced to its mechanics; reports child pids, then the stop outcome."""
    queue = SignalQueue()
    queue.install()
    arena = SharedArena(instance)
    block = ControlBlock.create(arena.allocate("control", control_bytes(3, 3)).buf, 3, 3)
    children = ChildSet(POLICY, block, queue)
    children.add(ChildSpec("worker-0", beating_worker(block), slot=0))
    children.add(ChildSpec("worker-1", beating_worker(block), slot=1))
    children.add(ChildSpec("input-0", deaf_input, slot=None, role="input"))
    children.start()
    os.write(report_fd, (json.dumps([c.pid for c in children.children.values()]) + "\n").encode())
    while True:
        for event in queue.wait(children.tick()):
            if event == signal.SIGCHLD:
                children.reap()
            elif event == signal.SIGTERM:
                graceful = children.stop_all(timeout=STOP_TIMEOUT)
                arena.close()
                exits = {name: c.last_exit for name, c in children.children.items()}
                os.write(report_fd, (json.dumps({"graceful": graceful, "exits": exits}) + "\n").encode())
                return 0


def fork(fn, *args):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn(*args)
        finally:
            os._exit(code)
    return pid


def read_line(fd, timeout=10):
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        data += os.read(fd, 4096)
    return json.loads(data)


def kill_leftovers(child_pids, supervisor):
    """Cleanup after a failed assertion: SIGKILL whatever still runs and reap the supervisor."""
    for pid in child_pids + [supervisor]:
        if process_start_ticks(pid) is not None:
            os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(supervisor, 0)
    except ChildProcessError:
        pass  # reaped by the test already


def gone_within(pids, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(process_start_ticks(pid) is None for pid in pids):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def instance():
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    leftovers = sweep_stale(instance_prefix(name))
    assert leftovers == [] and segment_names(instance_prefix(name)) == []


@pytest.fixture
def report_pipe():
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def test_sigterm_stops_every_child_within_the_bound(instance, report_pipe):
    read_fd, write_fd = report_pipe
    supervisor = fork(mini_supervisor, instance, write_fd)
    child_pids = []
    try:
        child_pids = read_line(read_fd)
        time.sleep(0.2)
        began = time.monotonic()
        os.kill(supervisor, signal.SIGTERM)
        outcome = read_line(read_fd)
        status = os.waitpid(supervisor, 0)[1]
        elapsed = time.monotonic() - began
    finally:
        kill_leftovers(child_pids, supervisor)
    assert os.waitstatus_to_exitcode(status) == 0
    assert elapsed < STOP_TIMEOUT + 1.0
    assert outcome == {"graceful": False, "exits": {"worker-0": 0, "worker-1": 0, "input-0": -signal.SIGKILL}}
    assert gone_within(child_pids, 1)


def test_kill_9_of_the_supervisor_takes_workers_down_and_the_next_start_sweeps(instance, report_pipe):
    read_fd, write_fd = report_pipe
    before = segment_names(instance_prefix(instance))
    supervisor = fork(mini_supervisor, instance, write_fd)
    child_pids = []
    try:
        child_pids = read_line(read_fd)
        os.kill(supervisor, signal.SIGKILL)
        os.waitpid(supervisor, 0)
        assert gone_within(child_pids, 5), "children outlived their supervisor"
    finally:
        kill_leftovers(child_pids, supervisor)
    assert len(segment_names(instance_prefix(instance))) == 1   # leaked by the dead supervisor
    assert len(sweep_stale(instance_prefix(instance))) == 1     # what the next start does first
    assert segment_names(instance_prefix(instance)) == before


def ledger_worker(ring, block, ledger_fd):
    def target(ctx):
        reader, counters = ring.reader(), block.counters(ctx.slot)
        while not ctx.stop.requested:
            block.beat(ctx.slot)
            if not reader.wait_for_data(0.05):
                continue
            buf, starts, ends, meta = reader.pop_batch(block.flags().batch_size)
            os.write(ledger_fd, meta["seq"].tobytes())   # "processing" the batch
            reader.ack()
            counters.add(lines_processed=int(meta.shape[0]), batches=1)
        return 0
    return target


def test_worker_killed_mid_stream_is_restarted_and_loses_nothing(instance, tmp_path):
    total, batch = 50_000, 200
    ledger_path = tmp_path / "ledger"
    ledger = os.open(ledger_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with SharedArena(instance) as arena:
        ring = Ring.create(arena.allocate("ring0", ring_bytes(512, 32768)).buf, 512, 32768, 1024)
        block = ControlBlock.create(arena.allocate("control", control_bytes(1, 1)).buf, 1, 1, batch_size=batch)
        children = ChildSet(POLICY, block)
        worker = children.add(ChildSpec("worker-0", ledger_worker(ring, block, ledger), slot=0))
        try:
            children.start()
            writer, lines, pushed, killed = ring.writer(), [b"line %d" % i for i in range(total)], 0, False
            deadline = time.monotonic() + 30
            while ring.acknowledged() < total and time.monotonic() < deadline:
                pushed += writer.push_batch(lines[pushed:pushed + 1000])
                if not killed and ring.acknowledged() > total // 3:
                    os.kill(worker.pid, signal.SIGKILL)
                    killed = True
                children.reap()
                children.tick()
                time.sleep(0.001)
            assert children.stop_all(timeout=2)
        finally:
            for child in children.alive():
                os.kill(child.pid, signal.SIGKILL)
            while children.alive():
                children.reap()
            os.close(ledger)
    assert killed and worker.spawns == 2 and worker.last_exit == 0
    seen = np.bincount(np.fromfile(ledger_path, dtype="<u8").astype(np.int64), minlength=total)
    assert seen.shape[0] == total and seen.min() == 1
    assert int((seen - 1).sum()) <= batch
    assert block.counter_totals()["lines_processed"] == int(seen.sum())  # the row survived the restart
