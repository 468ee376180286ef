"""Shared-memory segments across fork, ownership of unlinking, and the sweep of a dead owner's segments.

Every test uses its own instance name, so other test runs on the machine never disturb the counts.
"""
import os
import signal
import uuid

import numpy as np
import pytest

from anomaly_detector.ipc.shm import (
    SHM_DIR,
    SharedArena,
    instance_prefix,
    parse_owner,
    process_start_ticks,
    segment_names,
    sweep_stale,
)


@pytest.fixture
def instance():
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    leftovers = segment_names(instance_prefix(name))
    for leftover in leftovers:
        os.unlink(os.path.join(SHM_DIR, leftover))
    assert leftovers == [], "test leaked shared-memory segments"


def fork_and_run(body):
    """Run body() in a forked child that exits with its return value; return the child's pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = body()
        finally:
            os._exit(code)
    return pid


def exit_code(pid):
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_child_writes_through_the_inherited_mapping_and_parent_reads(instance):
    with SharedArena(instance) as arena:
        segment = arena.allocate("counts", 4096)
        counts = segment.array(np.uint64)

        def child():
            counts[:] = np.arange(counts.shape[0], dtype=np.uint64) * 3
            arena.close()  # a child's close must not unlink the supervisor's memory
            return 0

        assert exit_code(fork_and_run(child)) == 0
        assert counts[:4].tolist() == [0, 3, 6, 9] and int(counts[-1]) == 3 * 511
        assert os.path.exists(segment.path)
    assert segment_names(instance_prefix(instance)) == []


def test_names_carry_owner_pid_and_start_time(instance):
    with SharedArena(instance) as arena:
        segment = arena.allocate("ring0", 100)
        assert segment.name.startswith(instance_prefix(instance))
        assert parse_owner(segment.name) == (os.getpid(), process_start_ticks(os.getpid()))
        assert oct(os.stat(segment.path).st_mode & 0o777) == oct(0o600)
        with pytest.raises(ValueError):
            arena.allocate("ring0", 100)
        with pytest.raises(ValueError):
            arena.allocate("bad/name", 100)


def test_a_child_cannot_allocate(instance):
    with SharedArena(instance) as arena:
        pid = fork_and_run(lambda: 3 if _raises(RuntimeError, arena.allocate, "x", 10) else 4)
        assert exit_code(pid) == 3


def _raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type:
        return True
    return False


def test_sweep_after_kill_9_of_the_owner_leaves_dev_shm_as_before(instance):
    prefix = instance_prefix(instance)
    before = segment_names(prefix)
    ready_r, ready_w = os.pipe()

    def dead_supervisor():
        arena = SharedArena(instance)
        arena.allocate("ring0", 65536)
        arena.allocate("control", 4096)
        os.write(ready_w, b"1")
        signal.pause()
        return 0

    pid = fork_and_run(dead_supervisor)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"1"
        assert len(segment_names(prefix)) == 2
    finally:
        os.kill(pid, signal.SIGKILL)
        assert exit_code(pid) == -signal.SIGKILL
        os.close(ready_r)
    assert len(segment_names(prefix)) == 2         # a killed owner leaks them ...
    with SharedArena(instance) as live:
        live.allocate("ring0", 4096)
        removed = sweep_stale(prefix)              # ... and the next start removes exactly those
        assert len(removed) == 2 and all(parse_owner(n)[0] == pid for n in removed)
        assert len(segment_names(prefix)) == 1     # the live owner's segment stays
    assert segment_names(prefix) == before


def test_sweep_treats_a_recycled_pid_as_dead(instance):
    prefix = instance_prefix(instance)
    my_pid = os.getpid()
    fake = f"{prefix}{my_pid}-{process_start_ticks(my_pid) + 1}-ring0"
    foreign = f"{prefix}notours"
    for name in (fake, foreign):
        with open(os.path.join(SHM_DIR, name), "wb"):
            pass
    try:
        assert sweep_stale(prefix) == [fake]
        assert segment_names(prefix) == [foreign]   # names we did not make are never touched
    finally:
        os.unlink(os.path.join(SHM_DIR, foreign))


def test_instance_names_are_validated():
    for bad in ("", "a-b", "x" * 33, "../etc"):
        with pytest.raises(ValueError):
            instance_prefix(bad)
