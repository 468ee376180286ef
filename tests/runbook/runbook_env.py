"""What the runbook tests share: a live daemon laid out like an install in a temporary root (its
config in <root>/etc, its state, logs and pid file beside it), realistic log lines stamped near the
wall clock, and the bin/ scripts run with the environment variables that point them there.

systemd is emulated honestly: the scripts find the supervisor by its pid file (what `systemctl`
would report as MainPID), stop it with TERM (what `systemctl stop` sends under KillMode=mixed) and
start it with START_CMD, a detached `python -m anomaly_detector` of this checkout.
"""
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from tests.integration.daemon_harness import NUMBA_CACHE, ROOT, Daemon

BIN = os.path.join(ROOT, "bin")
TEMPLATES = ("INFO web-%d GET /item/%d 200 %dms", "INFO web-%d POST /cart/%d 201 %dms",
             "WARN web-%d slow query on table t%d took %dms", "INFO web-%d login user u%d ok in %dms")
WEIGHTS = (0.6, 0.25, 0.05, 0.1)
FILES = ("app.log", "db.log")


def log_lines(rng, t_from, t_to, rate):
    """Steady traffic of a web service between two epoch times, `rate` lines per second, as bytes."""
    n = int((t_to - t_from) * rate)
    out = []
    for t, k in zip(np.sort(rng.uniform(t_from, t_to, n)).tolist(), rng.choice(len(TEMPLATES), n, p=WEIGHTS).tolist()):
        stamp = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        out.append("%sZ %s\n" % (stamp, TEMPLATES[k] % (rng.integers(3), rng.integers(97), 20 + rng.integers(13))))
    return "".join(out).encode()


class Installed:
    """A daemon under a temporary root, with the bin/ scripts' environment pointing at it."""

    def __init__(self, root, http="", workers=2):
        self.root = str(root)
        self.etc = os.path.join(self.root, "etc")
        os.makedirs(self.etc)
        self.token_file = os.path.join(self.etc, "admin.token")
        with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("runbook-test-token-%d\n" % os.getpid())
        self.daemon = Daemon(os.path.join(self.root, "var"), workers=workers,
                             http="admin_token_file = %s\n%s" % (self.token_file, http))
        d = self.daemon
        with open(d.config) as f:
            text = f.read().replace("path = %s/app.log*" % d.logs, "path = %s/*.log" % d.logs)
        self.config = os.path.join(self.etc, "config.ini")
        with open(self.config, "w") as f:
            f.write(text)
        os.remove(d.config)
        d.config = self.config
        self.state = os.path.join(d.dir, "state")
        self.pid_file = os.path.join(d.dir, "daemon.pid")
        self.lines_written = 0

    def env(self, **extra):
        venv_bin = os.path.dirname(sys.executable)
        start = ("cd %s && NUMBA_CACHE_DIR=%s PYTHONPATH=%s nohup %s -m anomaly_detector --config %s "
                 ">> %s/daemon.stderr 2>&1 < /dev/null &" % (ROOT, NUMBA_CACHE, ROOT, sys.executable, self.config,
                                                             self.daemon.dir))
        env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=ROOT,
                   NUMBA_CACHE_DIR=NUMBA_CACHE, BASE_URL="http://127.0.0.1:%d" % self.daemon.port,
                   PID_FILE=self.pid_file, CONFIG=self.config, CONFIG_DIR=self.etc, STATE_DIR=self.state,
                   LOG_DIR=os.path.join(self.daemon.dir, "log"), TOKEN_FILE=self.token_file,
                   ANOMALY_DETECTOR=os.path.join(BIN, "anomaly_detector"), OWNER="", GROUP="no-such-group-here",
                   BACKUP_ROOT=os.path.join(self.root, "backups"), START_CMD=start, SERVICE="anomaly-detector-test")
        env.update(extra)
        return env

    def run(self, script, *args, timeout=600, **extra):
        """Run bin/<script> -> CompletedProcess (text)."""
        return subprocess.run([os.path.join(BIN, script), *args], env=self.env(**extra), capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)

    def write(self, rng, t_from, t_to, rate=3.0):
        for name in FILES:
            data = log_lines(rng, t_from, t_to, rate)
            with open(os.path.join(self.daemon.logs, name), "ab") as f:
                f.write(data)
            self.lines_written += data.count(b"\n")

    def wait_processed(self, expected, timeout=300):
        """Wait until /metrics counts `expected` lines scored and the rings are empty; returns the count."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.daemon.metric("logs_processed_total")
            if value is not None and value >= expected and self.daemon.metric("input_queue_size") == 0:
                return value
            time.sleep(0.25)
        raise AssertionError("%s of %d lines scored after %d s:\n%s" % (value, expected, timeout,
                                                                       self.daemon.log_tail()))

    def incidents(self):
        """Incident records the workers closed (the [outputs] incidents file)."""
        path = os.path.join(self.daemon.dir, "incidents.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def open_incidents(self):
        status, body = self.daemon.get("/api/incidents?status=open")
        assert status == 200, body
        return json.loads(body)["incidents"]

    def supervisor_pid(self):
        try:
            with open(self.pid_file) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        """Stop whichever supervisor the pid file names (the harness's or one START_CMD started)."""
        self.daemon.stop()
        pid = self.supervisor_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
