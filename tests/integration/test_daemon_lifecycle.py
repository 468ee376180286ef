"""The real daemon end to end: every line scored, clean stop, reload, relief, crashes, hostile input."""
import os
import signal
import time

import pytest

from tests.integration.daemon_harness import Daemon, loss_and_duplicates, numbered_line


def write_lines(path, first, count, mode="a"):
    with open(path, mode) as f:
        f.writelines(numbered_line(i) for i in range(first, first + count))


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.kill()


def test_scores_every_line_and_stops_cleanly(daemon):
    write_lines(os.path.join(daemon.logs, "app.log"), 0, 20000)
    daemon.start()
    health = daemon.wait_healthy(10)
    assert health["status"] == "healthy" and "timestamp" in health
    counts = daemon.wait_scored(20000, 180)
    assert loss_and_duplicates(counts, 20000) == ([], 0)
    assert daemon.metric("logs_processed_total") == 20000
    assert daemon.metric("workers_running") == 2
    assert sorted(daemon.children()) == ["ad-input", "ad-sidecar", "ad-worker-0", "ad-worker-1"]
    assert daemon.segments(), "rings and control block live in /dev/shm while running"
    assert daemon.stop() == 0
    assert daemon.segments() == []
    assert not os.path.exists(os.path.join(daemon.dir, "daemon.pid"))


def test_restart_neither_loses_nor_rereads(daemon):
    path = os.path.join(daemon.logs, "app.log")
    write_lines(path, 0, 5000)
    daemon.start()
    daemon.wait_scored(5000, 180)
    assert daemon.stop() == 0
    write_lines(path, 5000, 5000)          # written while the daemon is down
    daemon.start()
    counts = daemon.wait_scored(10000, 180)
    assert loss_and_duplicates(counts, 10000) == ([], 0)
    assert daemon.stop() == 0


def test_broken_config_on_sighup_keeps_running_then_valid_reload_applies(daemon):
    path = os.path.join(daemon.logs, "app.log")
    daemon.start()
    write_lines(path, 0, 3000)
    daemon.wait_scored(3000, 120)
    good = open(daemon.config).read()
    with open(daemon.config, "w") as f:
        f.write(good.replace("workers = 2", "wrokers = 2"))
    daemon.process.send_signal(signal.SIGHUP)
    time.sleep(2)
    assert daemon.process.poll() is None
    write_lines(path, 3000, 3000)
    daemon.wait_scored(6000, 120)
    assert "reload rejected" in open(os.path.join(daemon.dir, "log", "anomaly-detector.log")).read()
    with open(daemon.config, "w") as f:
        f.write(good.replace("workers = 2", "workers = 1"))
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 60
    while daemon.metric("workers_running") != 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert daemon.metric("workers_running") == 1
    write_lines(path, 6000, 3000)
    counts = daemon.wait_scored(9000, 120)
    assert loss_and_duplicates(counts, 9000) == ([], 0)
    assert daemon.stop() == 0
    assert daemon.segments() == []


def test_sigusr1_relief_in_every_process_and_children_ignore_hup(daemon):
    daemon.start()
    children = daemon.children()
    os.kill(children["ad-worker-0"], signal.SIGHUP)     # what `pkill -HUP -f anomaly_detector` does
    os.kill(children["ad-input"], signal.SIGUSR1)
    daemon.process.send_signal(signal.SIGUSR1)
    log_path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline and text.count("memory relief in") < 5:
        time.sleep(0.5)
        text = open(log_path).read()
    for who in ("supervisor", "worker 0", "worker 1", "input", "sidecar"):
        assert "memory relief in %s: RSS" % who in text
    assert daemon.children() == children, "children must survive signals sent to them directly"
    assert daemon.stop() == 0


def test_supervisor_kill9_then_restart_loses_nothing_and_sweeps_shm(daemon):
    path = os.path.join(daemon.logs, "app.log")
    write_lines(path, 0, 20000)
    daemon.start()
    time.sleep(1)
    children = daemon.children()
    os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists("/proc/%d" % p) for p in children.values()):
        time.sleep(0.1)
    assert not any(os.path.exists("/proc/%d/comm" % p) for p in children.values()), "children outlived kill -9"
    left = daemon.segments()
    write_lines(path, 20000, 5000)
    daemon.start()
    assert not set(left) & set(daemon.segments()), "stale segments were not swept"
    counts = daemon.wait_scored(25000, 180)
    lost, _duplicates = loss_and_duplicates(counts, 25000)
    assert lost == []
    assert daemon.stop() == 0
    assert daemon.segments() == []


def test_hostile_input_leaves_daemon_healthy_and_later_lines_scored(daemon):
    path = os.path.join(daemon.logs, "app.log")
    with open(path, "wb") as f:
        f.write(b"\xff\xfe\xfd invalid utf-8 \x00\x00 nul bytes\n")
        f.write(b"\x1b[31mansi red\x1b[0m\r\n")
        f.write(b"x" * (10 * 1024 * 1024) + b"\n")                 # a 10 MB line
        f.write(b"CRLF injection\r\nfake: line\r\n")
    with open(os.path.join(daemon.logs, "app.log.bin"), "wb") as f:
        f.write(os.urandom(2 * 1024 * 1024))                        # a binary file matched by the glob
    daemon.start()
    write_lines(path, 0, 2000)
    counts = daemon.wait_scored(2000, 180)
    assert loss_and_duplicates(counts, 2000)[0] == []
    assert daemon.wait_healthy(5)["status"] == "healthy"
    assert daemon.metric("processing_errors_total") == 0
    with open(daemon.scored, "rb") as f:
        assert not any(b"\x1b" in line or b"\x00" in line for line in f)
    assert daemon.stop() == 0


def test_systemd_notify_ready_reloading_stopping(daemon, tmp_path):
    import socket

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(1)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        daemon.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    messages = []

    def collect(until, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(until in m for m in messages):
            try:
                messages.append(sock.recv(4096).decode())
            except socket.timeout:
                pass

    collect("READY=1")
    daemon.process.send_signal(signal.SIGHUP)
    collect("RELOADING=1")
    assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in messages)
    assert daemon.stop() == 0
    collect("STOPPING=1")
    sock.close()
    order = [next(i for i, m in enumerate(messages) if key in m) for key in ("READY=1", "RELOADING=1", "STOPPING=1")]
    assert order == sorted(order)
