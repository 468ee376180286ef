"""Run the real daemon (python -m anomaly_detector) in a temporary directory and read what it scored.

Lines written by the tests carry `seq=<n>`; the scored-lines file (the audit trail) tells which
were scored and how often, so loss and duplicates are counted exactly.
"""
import glob
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Kernels compile once per machine and test run, not once per daemon started.
NUMBA_CACHE = os.environ.get("NUMBA_CACHE_DIR") or os.path.join("/tmp", "anomaly-detector-test-numba")
START_TIMEOUT = 300.0    # a cold numba cache on a loaded 2-core machine
SEQ = re.compile(rb"seq=(\d+)")
# The sidecar takes its readings once a second (metrics/sidecar.py READ_INTERVAL_SECONDS); a worker adds
# a batch's counters just after writing its scored lines.
SNAPSHOT_WAIT_SECONDS = 1.5


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def numbered_line(i):
    return "2026-03-02T10:%02d:%02d.%03dZ INFO web-%d GET /item/%d 200 %dms seq=%d\n" % (
        (i // 1000) // 60 % 60, (i // 1000) % 60, i % 1000, i % 3, i % 97, 20 + i % 13, i)


class Daemon:
    """One daemon under test: its directory, config, process and HTTP port."""

    def __init__(self, tmp_path, workers=2, batch_size=500, extra="", inputs=None, heartbeat=30, http=""):
        self.dir = str(tmp_path)
        self.logs = os.path.join(self.dir, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.port = free_port()
        self.name = "adtest_%d_%d" % (os.getpid(), self.port)
        self.scored = os.path.join(self.dir, "scored.jsonl")
        self.unnumbered_scored = 0     # scored lines without seq=N at the last scored_seqs()
        self.config = os.path.join(self.dir, "config.ini")
        self.process = None
        self.ssl_context = None   # set to an ssl.SSLContext trusting the daemon's CA when it serves HTTPS
        self.write_config(workers, batch_size, extra, inputs, heartbeat, http)

    def write_config(self, workers=2, batch_size=500, extra="", inputs=None, heartbeat=30, http=""):
        self.workers = workers
        inputs = inputs or "[[app]]\ntype = file\npath = %s/app.log*\nstart_at = beginning\n" % self.logs
        text = f"""[service]
name = {self.name}
pid_file = {self.dir}/daemon.pid
shutdown_timeout_seconds = 20
snapshot_interval_seconds = 5
[paths]
state_dir = {self.dir}/state
log_dir = {self.dir}/log
[inputs]
{inputs}
[processing]
workers = {workers}
batch_size = {batch_size}
ring_size = 8192
ring_bytes = 4194304
max_line_bytes = 65536
heartbeat_timeout_seconds = {heartbeat}
[http]
port = {self.port}
{http}
[outputs]
scored_lines = {self.scored}
incidents = {self.dir}/incidents.jsonl
{extra}
"""
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        env = dict(os.environ, NUMBA_CACHE_DIR=NUMBA_CACHE, PYTHONPATH=ROOT)
        self.stderr = open(os.path.join(self.dir, "daemon.stderr"), "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "anomaly_detector", "--config", self.config],
                                        cwd=ROOT, env=env, stdout=self.stderr, stderr=self.stderr)
        self.wait_healthy(START_TIMEOUT)
        return self

    def get(self, path):
        try:
            scheme = "https" if self.ssl_context is not None else "http"
            with urllib.request.urlopen("%s://127.0.0.1:%d%s" % (scheme, self.port, path), timeout=5,
                                        context=self.ssl_context) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def wait_healthy(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("daemon exited with %s:\n%s" % (self.process.returncode, self.log_tail()))
            try:
                status, body = self.get("/health")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("daemon not healthy after %.0f s:\n%s" % (timeout, self.log_tail()))

    def labelled(self, name):
        """{ {label: value} as a sorted tuple of pairs: value } of one labelled metric in GET /metrics."""
        _, text = self.get("/metrics")
        found = {}
        for line in text.splitlines():
            m = re.match(r"anomaly_detector_%s\{(.*)\} (\S+)$" % re.escape(name), line)
            if m:
                found[tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(1))))] = float(m.group(2))
        return found

    def metric(self, name):
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith("anomaly_detector_%s " % name):
                return float(line.split()[1])
        return None

    def log_tail(self, n=40):
        lines = []
        for path in (os.path.join(self.dir, "daemon.stderr"),):
            if os.path.exists(path):
                lines += open(path, errors="replace").read().splitlines()
        return "\n".join(lines[-n:])

    def children(self):
        """{process name (ad-input, ad-worker-0, ...): pid} from /proc/PID/comm."""
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/comm" % pid) as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                found[comm] = int(pid)
        return found

    def stop(self, timeout=60):
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.stderr.close()

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def kill_tree(self):
        """kill -9 of the supervisor and every child at once: no drain, nothing in flight acknowledged."""
        children = self.children()
        self.process.send_signal(signal.SIGKILL)
        for pid in children.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(30)

    def segments(self):
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith("ad-%s-" % self.name))

    def scored_seqs(self):
        """{seq: times scored} read from the scored-lines file."""
        counts = {}
        if not os.path.exists(self.scored):
            return counts
        unnumbered = 0
        with open(self.scored, "rb") as f:
            for line in f:
                match = SEQ.search(line)
                if match:
                    seq = int(match.group(1))
                    counts[seq] = counts.get(seq, 0) + 1
                else:
                    unnumbered += 1
        self.unnumbered_scored = unnumbered
        return counts

    def wait_scored(self, expected, timeout, reading=True):
        """Wait until every seq in range(expected) was scored; returns the counts. Then, unless `reading` is
        false (a test that reads no metric before its next wait), wait for the sidecar's next reading, so
        /metrics (a snapshot taken once a second) counts those lines."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.scored_seqs()
            if len(counts) >= expected:
                if reading:
                    self.wait_reading(sum(counts.values()) + self.unnumbered_scored)
                return counts
            if time.monotonic() > deadline:
                if not counts and self.unnumbered_scored:
                    # not a slow daemon: the wait could never end; such a test waits on the metrics
                    raise AssertionError("%d scored lines carry no seq=N: wait on logs_processed_total "
                                         "with wait_for" % self.unnumbered_scored)
                return counts
            if self.process.poll() is not None:
                raise AssertionError("daemon died:\n%s" % self.log_tail())
            time.sleep(0.2)

    def wait_reading(self, scored):
        """Wait until /metrics counts the `scored` lines of the scored-lines file in logs_processed_total: a
        reading taken after the workers added those batches' counters (a worker adds all of a batch's
        within microseconds, right after writing its lines). At most SNAPSHOT_WAIT_SECONDS, the fixed
        wait this replaces: a daemon started again on an earlier run's file counts fewer lines than it holds."""
        deadline = time.monotonic() + SNAPSHOT_WAIT_SECONDS
        while time.monotonic() < deadline:
            try:
                if (self.metric("logs_processed_total") or 0) >= scored:
                    return
            except OSError:   # the sidecar restarting: wait out the deadline, as the fixed wait did
                pass
            time.sleep(0.1)

    def wait_snapshot(self, after, timeout=30):
        """Wait until every worker's model snapshot files (state/baselines/worker-N/*.json and
        state/statistics/worker-N/*.json) were all written after the epoch time `after`: the periodic
        snapshot (every snapshot_interval_seconds, 5 s here) that follows it."""
        state = os.path.join(self.dir, "state")

        def written():
            paths = (glob.glob(os.path.join(state, "baselines", "worker-*", "*.json"))
                     + glob.glob(os.path.join(state, "statistics", "worker-*", "*.json")))
            workers = {os.path.basename(os.path.dirname(p)) for p in paths}
            try:
                return len(workers) == self.workers and all(os.stat(p).st_mtime > after for p in paths)
            except FileNotFoundError:    # a generation being turned: not yet
                return False
        wait_for(written, timeout, self, "a model snapshot after %.1f" % after, interval=0.2)


def http_request(daemon, method, path, body=None, token=None, headers=None):
    """(status, parsed JSON body, headers) of one request to the sidecar sent as written (http.client does
    not normalise the path); `token`: a bearer token; a dict or list body is sent as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    try:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = "Bearer " + token
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, json.loads(text) if text else None, dict(resp.getheaders())
    finally:
        conn.close()


def wait_for(condition, timeout, daemon, what="the condition", interval=0.5, tolerate=()):
    """condition()'s first truthy value within `timeout` seconds, asked every `interval`; else an
    AssertionError naming `what` with the daemon's log tail. An exception of a type in `tolerate`
    (a sidecar restarting, say) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except tolerate:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("%s not seen within %.0f s:\n%s" % (what, timeout, daemon.log_tail(60)))


def loss_and_duplicates(counts, expected):
    lost = [i for i in range(expected) if i not in counts]
    duplicates = sum(c - 1 for c in counts.values())
    return lost, duplicates
