"""Arbiter._start_children across a reload, without forking: which socket a child closes first.

The ChildSet's start() is replaced by a no-op and run_listener by a stub, so a spec's target can be
called in this process to see what it closes (supervisor/arbiter.py _without_inherited_sockets).
"""
import os
import signal
import socket
import time
import uuid

import pytest

from anomaly_detector.config.loader import load_config
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.shm import SharedArena
from anomaly_detector.supervisor import arbiter
from anomaly_detector.supervisor.children import ChildSet
from anomaly_detector.supervisor.states import ProcessState


def _free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp_path, http_port, syslog_port, workers=2):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s\nlog_dir = %s\n[logging]\nto_file = false\n"
                    "[processing]\nworkers = %d\nbatch_size = 1000\nring_size = 4096\nring_bytes = 1048576\n"
                    "[http]\nbind = 127.0.0.1\nport = %d\n"
                    "[inputs]\n[[sys]]\ntype = syslog\nprotocol = udp\nlisten_address = 127.0.0.1\nlisten_port = %d\n"
                    % (tmp_path / "state", tmp_path / "log", workers, http_port, syslog_port))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, problems
    return cfg


@pytest.fixture
def unforked(tmp_path, monkeypatch):
    monkeypatch.setattr(ChildSet, "start", lambda self, name=None: None)
    monkeypatch.setattr(arbiter, "run_listener", lambda ctx, daemon: 0)
    syslog_port = _free_port()
    cfg = _config(tmp_path, _free_port(socket.SOCK_STREAM), syslog_port)
    a = arbiter.Arbiter(str(tmp_path / "config.ini"), cfg)
    a.control = ControlBlock.create(bytearray(control_bytes(arbiter.CONTROL_SLOTS, arbiter.COUNTER_ROWS)),
                                    arbiter.CONTROL_SLOTS, arbiter.COUNTER_ROWS)
    a.children = ChildSet(control=a.control)
    a.http_socket = arbiter._listen(cfg["http"])
    a._bind_network(cfg)
    yield a, tmp_path, syslog_port
    for sock in [a.http_socket, *a.network_sockets.values()]:
        sock.close()


def test_a_listener_kept_across_a_reload_restarts_closing_the_current_http_socket(unforked):
    """The reload moved the HTTP port and kept the listener; should the listener crash later, its
    successor must close the new HTTP socket (before: it closed the old, already closed one and held
    the sidecar's port open, so a FATAL sidecar's port still accepted into a backlog nobody served)."""
    a, tmp_path, syslog_port = unforked
    a._start_children()
    old_http = a.http_socket
    cfg = _config(tmp_path, _free_port(socket.SOCK_STREAM), syslog_port)   # what _apply does, in short
    a._rebind_http(cfg["http"])
    a.cfg = cfg
    assert a.http_socket is not old_http and old_http.fileno() == -1
    for name in [n for n in a.children.children if n != "listener"]:
        a.children.remove(name)
    a._start_children()
    listener = a.children.children["listener"]
    listener.spec.target(None)        # what its restarted process runs first
    assert a.http_socket.fileno() == -1
    assert all(sock.fileno() != -1 for sock in a.network_sockets.values())   # its own sockets stay open


def test_restart_counts_survive_a_worker_removed_and_added_back_by_reloads(unforked):
    """4 workers, reload to 2, reload to 4: worker-3's process_restarts_total goes on from where it was
    (before: the second reload forgot it, and the counter went back to 0)."""
    a, tmp_path, syslog_port = unforked
    http_port = a.http_socket.getsockname()[1]
    a.cfg = _config(tmp_path, http_port, syslog_port, workers=4)
    with SharedArena("t" + uuid.uuid4().hex[:12]) as arena:
        a.arena = arena
        a._allocate_rings(a.cfg["processing"])
        a._start_children()
        a.children.children["worker-3"].spawns = 6   # five crashes restarted
        a._apply(_config(tmp_path, http_port, syslog_port, workers=2))
        assert "worker-3" not in a.children.children
        a._apply(_config(tmp_path, http_port, syslog_port, workers=4))
        assert a.children.children["worker-3"].spawns >= 6
        a._release_rings()


def _until_term(ctx):
    while not ctx.stop.requested:
        time.sleep(0.05)
    return 0


def _deaf(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def test_a_child_that_outlived_the_reload_stop_is_restarted_once_reaped(unforked, monkeypatch):
    """A worker still alive after the reload's stop (SIGKILL not yet effective, e.g. in uninterruptible
    I/O) is kept out of the fork; once it is reaped its successor must be forked (before: it was
    reaped as STOPPED and never started again, its ring left unserved)."""
    a, _, _ = unforked
    monkeypatch.undo()   # real forks from here on, with stub targets
    for name in ("run_inputs", "run_sidecar", "run_listener"):
        monkeypatch.setattr(arbiter, name, lambda ctx, daemon: _until_term(ctx))
    monkeypatch.setattr(arbiter, "_worker_target", lambda daemon, i: _deaf if i == 0 else _until_term)
    a.rings = [None, None]
    a.sigq = None
    try:
        a._start_children()
        stuck = a.children.children["worker-0"]
        a.children.stop("worker-0", timeout=60)          # the reload's stop; it ignores SIGTERM
        for name in [n for n in a.children.children if n not in ("worker-0", "listener")]:
            a.children.stop(name)
        deadline = time.monotonic() + 10
        while any(c.pid for n, c in a.children.children.items() if n not in ("worker-0", "listener")):
            a.children.reap()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for name in [n for n in a.children.children if n not in ("worker-0", "listener")]:
            a.children.remove(name)
        a._start_children()                              # the reload forks the rest; worker-0 is still there
        assert a.children.children["worker-0"] is stuck and stuck.state == ProcessState.STOPPING
        os.kill(stuck.pid, signal.SIGKILL)
        os.waitid(os.P_PID, stuck.pid, os.WEXITED | os.WNOWAIT)
        a.handle_chld()
        assert stuck.state in (ProcessState.STARTING, ProcessState.RUNNING), stuck.state
    finally:
        for child in a.children.alive():
            os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while a.children.alive() and time.monotonic() < deadline:
            a.children.reap()
            time.sleep(0.01)
