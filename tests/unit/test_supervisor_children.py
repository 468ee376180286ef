"""ChildSet with real forks and short policy times: back-off growth, crash-loop limit, hung-child kill.

The test process is the supervisor; every test stops and reaps its children in a finally block.
"""
import os
import signal
import time

import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.supervisor.children import ChildSet, ChildSpec, RestartPolicy, describe_exit
from anomaly_detector.supervisor.states import ProcessState

FAST = RestartPolicy(start_seconds=0.5, backoff_initial=0.05, backoff_max=0.2, crash_loop_limit=5,
                     heartbeat_timeout=0.3, kill_grace=0.3)


class Recorder:
    def __init__(self):
        self.events = []
        self.delays = []

    def __call__(self, child, event, detail):
        self.events.append((time.monotonic(), child.spec.name, event, detail))
        if event == "backoff":
            self.delays.append(child.backoff_delay)

    def times(self, event):
        return [t for t, _, e, _ in self.events if e == event]


def drive(children, until, timeout):
    """Run the supervisor's duties (reap, tick) until until() is true; False on timeout."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        children.reap()
        children.tick()
        time.sleep(0.005)
    return True


@pytest.fixture
def make_children():
    made = []

    def make(**kwargs):
        children = ChildSet(**kwargs)
        made.append(children)
        return children

    yield make
    for children in made:
        for child in children.alive():
            os.kill(child.pid, signal.SIGKILL)
        while children.alive():
            children.reap()
            time.sleep(0.005)


def test_policy_backoff_doubles_up_to_the_cap():
    assert [FAST.backoff(n) for n in range(1, 6)] == [0.05, 0.1, 0.2, 0.2, 0.2]


def test_crashing_child_backs_off_longer_each_time_then_is_fatal(make_children):
    events = Recorder()
    children = make_children(policy=FAST, on_event=events)
    crasher = children.add(ChildSpec("crasher", lambda ctx: 3))
    children.start()
    assert drive(children, lambda: crasher.state == ProcessState.FATAL, timeout=5)
    spawns = events.times("spawned")
    gaps = [b - a for a, b in zip(spawns, spawns[1:])]
    assert len(spawns) == FAST.crash_loop_limit
    assert events.delays == [0.05, 0.1, 0.2, 0.2]                       # doubles up to the cap
    assert all(gap >= delay for gap, delay in zip(gaps, events.delays)), gaps  # and is really waited
    assert crasher.last_exit == 3 and crasher.failures == FAST.crash_loop_limit and crasher.pid == 0
    assert [e for _, _, e, _ in events.events].count("fatal") == 1
    assert children.summary()["crasher"]["state"] == "FATAL"
    children.tick()
    assert crasher.state == ProcessState.FATAL and not children.alive()  # it stays given up


def test_child_that_outlives_start_seconds_resets_its_failure_count(make_children):
    policy = RestartPolicy(start_seconds=0.1, backoff_initial=0.02, crash_loop_limit=2)
    children = make_children(policy=policy)
    slow = children.add(ChildSpec("slow", lambda ctx: time.sleep(0.25) or 4))
    children.start()
    assert drive(children, lambda: slow.spawns >= 3, timeout=5)
    assert slow.state != ProcessState.FATAL and slow.last_exit == 4 and slow.failures <= 1
    children.stop_all(timeout=1)


def test_a_child_dying_young_after_progress_is_not_a_crash_loop(make_children, tmp_path):
    """A worker isolating poison lines dies once per bad line, a little further on each time."""
    done = tmp_path / "done"
    done.write_bytes(b"")

    def one_step_then_crash(ctx):
        with open(done, "ab") as f:
            f.write(b".")
        return 3

    children = make_children(policy=FAST)
    worker = children.add(ChildSpec("worker", one_step_then_crash, progress=lambda: done.stat().st_size))
    children.start()
    assert drive(children, lambda: worker.spawns >= FAST.crash_loop_limit + 3, timeout=10)
    assert worker.state != ProcessState.FATAL and worker.failures <= 1
    children.stop_all(timeout=1)


def hangs_after_one_beat(block, ignore_abort):
    def target(ctx):
        if ignore_abort:
            signal.signal(signal.SIGABRT, signal.SIG_IGN)
        block.beat(ctx.slot)
        time.sleep(30)
    return target


@pytest.mark.parametrize("ignore_abort, expected_exit", [(False, -signal.SIGABRT), (True, -signal.SIGKILL)])
def test_child_without_heartbeat_is_killed_and_replaced(make_children, ignore_abort, expected_exit):
    block = ControlBlock.create(bytearray(control_bytes(2, 2)), 2, 2)
    events = Recorder()
    children = make_children(policy=FAST, control=block, on_event=events)
    child = children.add(ChildSpec("worker-1", hangs_after_one_beat(block, ignore_abort), slot=1))
    children.start()
    first_pid = child.pid
    assert drive(children, lambda: child.spawns == 2, timeout=5)
    assert child.last_exit == expected_exit and child.pid not in (0, first_pid)
    assert child.state == ProcessState.STARTING and not child.hung
    assert "hung" in [e for _, _, e, _ in events.events]
    row = block.child_table()[1]
    assert int(row["pid"]) == child.pid and int(row["restarts"]) == 1
    assert block.heartbeat_age(1) < FAST.heartbeat_timeout  # a replacement starts with a fresh heartbeat
    assert not children.stop_all(timeout=0.2)  # the replacement hangs too: it needed SIGKILL


def until_stopped(ctx):
    while not ctx.stop.requested:
        time.sleep(0.01)
    return 0


def test_stop_all_terminates_gracefully_and_forcibly_within_the_bound(make_children):
    def stubborn(ctx):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(30)

    children = make_children(policy=FAST)
    children.add(ChildSpec("w0", until_stopped))
    children.add(ChildSpec("w1", until_stopped))
    children.start()
    time.sleep(0.1)  # let them install their handlers
    assert children.stop_all(timeout=2.0)
    assert [c.last_exit for c in children.children.values()] == [0, 0]

    children.add(ChildSpec("stubborn", stubborn))
    children.start()
    time.sleep(0.1)
    began = time.monotonic()
    assert not children.stop_all(timeout=0.3)
    assert time.monotonic() - began < 0.3 + 1.0
    states = {name: (c.state, c.last_exit) for name, c in children.children.items()}
    assert states["stubborn"] == (ProcessState.STOPPED, -signal.SIGKILL)
    children.remove("stubborn")
    assert "stubborn" not in children.summary()


def test_target_exceptions_and_exit_codes_never_reach_the_parent(make_children):
    def raises(ctx):
        raise RuntimeError("boom")

    def exits(ctx):
        raise SystemExit(9)

    children = make_children(policy=RestartPolicy(crash_loop_limit=1))
    children.add(ChildSpec("raises", raises))
    children.add(ChildSpec("exits", exits))
    children.start()
    assert drive(children, lambda: not children.alive(), timeout=5)
    assert children.children["raises"].last_exit == 70
    assert children.children["exits"].last_exit == 9
    assert all(c.state == ProcessState.FATAL for c in children.children.values())


def test_bad_specs_and_removing_a_live_child_are_refused(make_children):
    children = make_children(policy=FAST)
    children.add(ChildSpec("a", until_stopped))
    with pytest.raises(ValueError):
        children.add(ChildSpec("a", lambda ctx: 0))
    with pytest.raises(ValueError):
        children.add(ChildSpec("b", lambda ctx: 0, role="painter"))
    children.start()
    with pytest.raises(RuntimeError):
        children.remove("a")
    children.stop_all(timeout=1)
    children.remove("a")
    assert children.summary() == {}


def test_an_unasked_exit_is_logged_at_error_a_requested_stop_at_info(make_children, caplog):
    """journalctl -p err must show a crash or a kill -9; a stop the supervisor asked for stays INFO."""
    children = make_children(policy=FAST)
    children.add(ChildSpec("sleeper", lambda ctx: time.sleep(30), role="sidecar"))   # TERM ends it at once
    children.start()
    pid = children.children["sleeper"].pid
    with caplog.at_level("INFO", logger="anomaly_detector.supervisor.children"):
        os.kill(pid, signal.SIGKILL)
        assert drive(children, lambda: children.children["sleeper"].state == ProcessState.BACKOFF, 10)
        crash = [r for r in caplog.records if "exited" in r.getMessage()]
        assert [(r.levelname, r.getMessage()) for r in crash] == [
            ("ERROR", "child sleeper exited: crashed, killed by SIGKILL (exit -9)")]
        assert drive(children, lambda: children.children["sleeper"].state == ProcessState.STARTING, 10)
        children.stop("sleeper", timeout=5)
        assert drive(children, lambda: children.children["sleeper"].state == ProcessState.STOPPED, 10)
    stopped = [r for r in caplog.records if r.getMessage().startswith("child sleeper stopped")]
    assert stopped and all(r.levelname == "INFO" for r in stopped)


def test_describe_exit_names_the_signal():
    assert describe_exit(70) == "exit 70"
    assert describe_exit(-9) == "killed by SIGKILL (exit -9)"
    assert describe_exit(-6) == "killed by SIGABRT (exit -6)"
