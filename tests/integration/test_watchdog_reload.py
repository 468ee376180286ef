"""WatchdogSec= and a slow reload: the supervisor keeps pinging while it waits for its children to stop.

A reload stops every child before starting them again, and waits up to [service]
shutdown_timeout_seconds for one that does not stop (here a worker frozen with SIGSTOP, 10 s set
below). systemd would kill a supervisor silent for WatchdogSec meanwhile; the pings must go on.
"""
import os
import signal
import socket
import time

from tests.integration.daemon_harness import Daemon

WATCHDOG_SECONDS = 3.0   # pings every 1.5 s; the wait below lasts SHUTDOWN_SECONDS
SHUTDOWN_SECONDS = 10    # longer than the 7.5 s the gap between pings is allowed


def test_watchdog_pings_continue_while_a_reload_waits_for_a_frozen_worker(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_SECONDS * 1e6)))
    daemon = Daemon(tmp_path / "d", workers=1)
    with open(daemon.config) as f:
        text = f.read()
    with open(daemon.config, "w") as f:
        f.write(text.replace("shutdown_timeout_seconds = 20", "shutdown_timeout_seconds = %d" % SHUTDOWN_SECONDS))
    daemon.start()
    messages = []   # [(monotonic time, message)]

    def collect(until, after=0, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(until in m for _, m in messages[after:]):
                return
            try:
                messages.append((time.monotonic(), sock.recv(4096).decode()))
            except socket.timeout:
                pass
        raise AssertionError("no %s in %s" % (until, [m for _, m in messages[after:]]))

    frozen = None
    try:
        collect("READY=1")
        frozen = daemon.children()["ad-worker-0"]
        os.kill(frozen, signal.SIGSTOP)   # ignores SIGTERM until the supervisor's SIGKILL
        os.kill(daemon.process.pid, signal.SIGHUP)
        collect("RELOADING=1", len(messages))
        start = next(i for i, (_, m) in enumerate(messages) if "RELOADING=1" in m)
        collect("READY=1", start)
        end = next(i for i in range(start, len(messages)) if "READY=1" in messages[i][1])
        took = messages[end][0] - messages[start][0]
        assert took > SHUTDOWN_SECONDS - 2, "the reload did not wait for the frozen worker (%.1f s)" % took
        pings = [t for t, m in messages[start:end + 1] if "WATCHDOG=1" in m]
        stamps = [messages[start][0]] + pings + [messages[end][0]]
        gap = max(b - a for a, b in zip(stamps, stamps[1:]))
        # Generous bound: the pings are due every 1.5 s; without them the gap is the whole 10 s wait.
        assert gap < 2.5 * WATCHDOG_SECONDS, "no watchdog ping for %.1f s during a %.1f s reload" % (gap, took)
        assert daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        if frozen is not None:
            try:
                os.kill(frozen, signal.SIGCONT)
            except ProcessLookupError:
                pass
        daemon.kill()
        sock.close()
