"""sd_notify against a real AF_UNIX datagram socket (filesystem and abstract), and the watchdog settings.
"""
import os
import socket
import time
import uuid

import pytest

from anomaly_detector.supervisor import systemd


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode()


def test_state_messages(notify_socket):
    assert systemd.ready()
    assert received(notify_socket) == "READY=1"
    assert systemd.stopping("draining\nrings")
    assert received(notify_socket) == "STOPPING=1\nSTATUS=draining rings"
    assert systemd.watchdog()
    assert received(notify_socket) == "WATCHDOG=1"
    assert systemd.status("2 workers, 0 lines behind")
    assert received(notify_socket) == "STATUS=2 workers, 0 lines behind"
    assert systemd.ready("reloaded")
    assert received(notify_socket) == "READY=1\nSTATUS=reloaded"
    assert systemd.extend_timeout(120, "compiling kernels 3/46 (first start only)")
    assert received(notify_socket) == "EXTEND_TIMEOUT_USEC=120000000\nSTATUS=compiling kernels 3/46 (first start only)"


def test_reloading_carries_the_monotonic_clock_in_microseconds(notify_socket):
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(notify_socket).split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_namespace_address(monkeypatch):
    name = "ad-test-" + uuid.uuid4().hex
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert sock.recv(100) == b"READY=1"


def test_no_socket_means_no_op_and_a_dead_socket_is_not_fatal(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False and systemd.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.stopping() is False


@pytest.mark.parametrize("usec, pid, expected", [
    ("30000000", None, 30.0),
    ("30000000", "self", 30.0),
    ("30000000", "1", None),      # meant for another process
    (None, None, None),
    ("0", None, None),
    ("soon", None, None),
])
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert systemd.watchdog_interval() == expected
