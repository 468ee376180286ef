"""etc/logrotate.d/anomaly-detector run by the real logrotate against a live daemon's log_dir.

The shipped file is used as it is but for its path and its su/create owner (this test's user): after
each forced rotation the daemon's processes go on writing into the new anomaly-detector.log and
access.log, without any signal, and the older generations are kept (the second one compressed).
"""
import grp
import os
import pwd
import shutil
import signal
import subprocess
import time

import pytest

from tests.integration.daemon_harness import ROOT, Daemon

SHIPPED = os.path.join(ROOT, "etc", "logrotate.d", "anomaly-detector")
pytestmark = pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")


def local_config(path, log_dir):
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    with open(SHIPPED) as f:
        text = f.read()
    assert text.count("/var/log/anomaly-detector/") == 1 and text.count("anomaly-detector anomaly-detector") == 2
    text = text.replace("/var/log/anomaly-detector/", log_dir + "/").replace(
        "anomaly-detector anomaly-detector", "%s %s" % (user, group))
    with open(path, "w") as f:
        f.write(text)
    return path


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % what)


def test_forced_rotation_of_a_live_daemons_logs(tmp_path):
    daemon = Daemon(tmp_path / "d", workers=1).start()
    try:
        log_dir = os.path.join(daemon.dir, "log")
        main_log, access_log = (os.path.join(log_dir, n) for n in ("anomaly-detector.log", "access.log"))
        conf = local_config(str(tmp_path / "logrotate.conf"), log_dir)
        state = str(tmp_path / "logrotate.state")
        daemon.get("/health?before-rotation")

        dry = subprocess.run(["logrotate", "-d", "-s", state, conf], capture_output=True, text=True)
        assert dry.returncode == 0 and "error" not in dry.stdout + dry.stderr, dry.stdout + dry.stderr

        for generation in (1, 2):
            done = subprocess.run(["logrotate", "-f", "-s", state, conf], capture_output=True, text=True)
            assert done.returncode == 0, done.stdout + done.stderr
            assert os.path.exists(main_log + ".1") and os.path.exists(access_log + ".1")
            marker = "after-rotation-%d" % generation
            daemon.get("/health?" + marker)
            os.kill(daemon.process.pid, signal.SIGUSR1)   # every process logs its memory relief
            wait_for(lambda: "memory relief in supervisor" in read(main_log)
                     and "memory relief in sidecar" in read(main_log), 30, "the relief lines in the new log")
            wait_for(lambda m=marker: m in read(access_log), 10, "the request in the new access.log")
            assert marker not in read(access_log + ".1")
            assert "memory relief" not in read(main_log + ".1") or generation == 2
        # delaycompress: the first generation is compressed at the second rotation, the newest is not.
        assert os.path.exists(main_log + ".2.gz") and os.path.exists(access_log + ".2.gz")
        assert "started:" in subprocess.run(["zcat", main_log + ".2.gz"], capture_output=True, text=True).stdout
        assert daemon.process.poll() is None
        daemon.wait_healthy(30)
    finally:
        daemon.stop()
        daemon.kill()
