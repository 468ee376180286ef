"""On a live daemon: the names pgrep and ps find, the pid file a runbook signals, a crashed child logged at ERROR.

The daemon is started by this test process (daemon_harness), so every pgrep is limited to its
children (-P): other daemons on the machine, of other test runs, never count.
"""
import os
import re
import subprocess
import time

import pytest

from tests.integration.daemon_harness import Daemon

SUPERVISOR_COMM = "anomaly_detect"


def pgrep(*args):
    """pids pgrep prints (none when it finds none; rc 1)."""
    done = subprocess.run(["pgrep", *args], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return sorted(int(pid) for pid in done.stdout.split())


def args_of(pid):
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def read_log(daemon):
    with open(os.path.join(daemon.dir, "log", "anomaly-detector.log"), errors="replace") as f:
        return f.read()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, workers=2).start()
    yield d
    d.stop()
    d.kill()


def test_pgrep_finds_the_supervisor_and_tells_the_children_apart(daemon):
    sup = daemon.process.pid
    with open(os.path.join(daemon.dir, "daemon.pid")) as f:
        assert int(f.read()) == sup
    with open("/proc/%d/comm" % sup) as f:
        assert f.read().strip() == SUPERVISOR_COMM
    me = str(os.getpid())
    assert pgrep("-P", me, "-x", SUPERVISOR_COMM) == [sup]
    # The runbook's pattern, with -f: the supervisor alone, the one process that takes its signals.
    assert pgrep("-P", me, "-f", "anomaly_detector") == [sup]
    assert pgrep("-P", str(sup), "-f", "anomaly_detector") == []
    children = daemon.children()
    for name in ("input", "sidecar", "worker-0", "worker-1"):
        pid = children["ad-" + name]
        assert pgrep("-P", str(sup), "-x", "ad-" + name) == [pid]
        assert pgrep("-P", str(sup), "-f", "^anomaly-detector: %s( |$)" % name) == [pid]
        assert args_of(pid) == "anomaly-detector: " + name
    assert children["ad-worker-0"] != children["ad-worker-1"]


def test_a_killed_worker_is_logged_at_error_and_restarted(daemon):
    victim = daemon.children()["ad-worker-0"]
    os.kill(victim, 9)
    pattern = re.compile(r"ERROR \[%d supervisor\] anomaly_detector\.supervisor\.children: child worker-0 exited: "
                         r"crashed, killed by SIGKILL \(exit -9\)" % daemon.process.pid)
    wait_for(lambda: pattern.search(read_log(daemon)), 30, "the ERROR line of the crash")
    successor = wait_for(lambda: daemon.children().get("ad-worker-0") not in (None, victim) and
                         daemon.children()["ad-worker-0"], 30, "a new worker-0")
    assert args_of(successor) == "anomaly-detector: worker-0"
    daemon.wait_healthy(60)


def test_hup_through_the_pid_file_reloads(daemon):
    before = daemon.children()["ad-worker-0"]
    pid_file = os.path.join(daemon.dir, "daemon.pid")
    subprocess.run(["sh", "-c", 'kill -HUP "$(cat "$1")"', "sh", pid_file], check=True)
    wait_for(lambda: "reloaded %s" % daemon.config in read_log(daemon), 120, "the reload")
    after = wait_for(lambda: daemon.children().get("ad-worker-0"), 30, "worker-0 after the reload")
    assert after != before
    assert daemon.process.poll() is None
    daemon.wait_healthy(60)
