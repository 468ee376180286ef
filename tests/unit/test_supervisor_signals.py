"""The supervisor's signal queue (handlers only enqueue, select wakes) and the children's dispositions.
"""
import os
import signal
import time

import pytest

from anomaly_detector.supervisor import signals


@pytest.fixture
def signal_queue():
    queue = signals.SignalQueue()
    queue.install()
    try:
        yield queue
    finally:
        queue.uninstall()


def test_signals_are_queued_in_order_and_wake_the_loop(signal_queue):
    assert signal_queue.wait(0) == []
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGHUP)
    assert signal_queue.wait(1.0) == [signal.SIGUSR1, signal.SIGHUP]
    assert signals.SIGNAL_NAMES[signal.SIGHUP] == "hup" and signals.SIGNAL_NAMES[signal.SIGTTIN] == "ttin"


def test_wait_sleeps_until_a_signal_from_another_process(signal_queue):
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(0.2)
            os.kill(parent, signal.SIGTERM)
        finally:
            os._exit(0)
    try:
        began = time.monotonic()
        events = signal_queue.wait(5.0)
        waited = time.monotonic() - began
    finally:
        os.waitpid(pid, 0)
    assert signal.SIGTERM in events and 0.1 < waited < 2.0
    assert signal_queue.wait(0.5) in ([], [signal.SIGCHLD])  # the child's exit, nothing else


def test_wakeup_request_and_timeout(signal_queue):
    signal_queue.wakeup()
    assert signal_queue.wait(1.0) == [signals.WAKEUP_REQUEST]
    began = time.monotonic()
    assert signal_queue.wait(0.05) == []
    assert time.monotonic() - began >= 0.04


def test_uninstall_restores_previous_handlers():
    before = signal.getsignal(signal.SIGHUP)
    queue = signals.SignalQueue()
    queue.install()
    assert signal.getsignal(signal.SIGHUP) != before
    queue.uninstall()
    assert signal.getsignal(signal.SIGHUP) == before
    assert signal.set_wakeup_fd(-1) == -1


def run_child_with_role(role, signal_queue, body):
    """Fork like ChildSet does (signals blocked, then setup_child); body(stop) gives the exit code."""
    mask = signals.block_all()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            stop = signals.setup_child(role, mask, signal_queue)
            code = body(stop)
        finally:
            os._exit(code)
    signals.restore(mask)
    return pid


def test_worker_ignores_hup_usr1_and_int_and_stops_on_term(signal_queue):
    ready_r, ready_w = os.pipe()

    def body(stop):
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGINT):
            os.kill(os.getpid(), sig)  # what `pkill -HUP anomaly_detector` or Ctrl-C does to a worker
        os.write(ready_w, b"r")
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        return 0 if stop.signum == signal.SIGTERM else 4

    pid = run_child_with_role("worker", signal_queue, body)
    try:
        assert os.read(ready_r, 1) == b"r"
        os.kill(pid, signal.SIGTERM)
        status = os.waitpid(pid, 0)[1]
    finally:
        os.close(ready_r)
        os.close(ready_w)
    assert os.waitstatus_to_exitcode(status) == 0
    assert signal_queue.wait(0) in ([], [signal.SIGCHLD])  # the child's signals never reached our queue


def test_sidecar_stops_on_term_by_itself(signal_queue):
    """The sidecar's SIGTERM asks it to stop (it finishes the answers under way), never kills it."""
    def body(stop):
        deadline = time.monotonic() + 5
        while not stop.requested and time.monotonic() < deadline:
            time.sleep(0.01)
        return 0 if stop.signum == signal.SIGTERM else 4

    pid = run_child_with_role("sidecar", signal_queue, body)
    time.sleep(0.05)
    os.kill(pid, signal.SIGTERM)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_unknown_role_is_refused():
    with pytest.raises(ValueError):
        signals.setup_child("painter", signal.pthread_sigmask(signal.SIG_BLOCK, []))
