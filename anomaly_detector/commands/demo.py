"""`anomaly_detector demo`: the real daemon on a generated workload with a scripted incident.

Writes the workload and a config into a temporary directory, starts the daemon (supervisor,
input, workers, sidecar) as a child process, prints each incident as the workers close it,
and stops the daemon once every line is scored. Neighbours: workload/ makes the traffic,
supervisor/arbiter.py is what runs.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import click

from anomaly_detector.metrics.scrape import read_metric
from anomaly_detector.workload.generator import generate

DEMO_DAYS = 0.1
DEMO_LINES_PER_DAY = 40000
DEMO_INCIDENT = "error_burst"
POLL_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 20


def _free_port(preferred):
    """`preferred` when it can be bound on 127.0.0.1, else a free port the kernel picks."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the daemon binds: TIME_WAIT is fine
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise click.ClickException("no free TCP port on 127.0.0.1")


def _write_config(directory, port, log_files):
    """One input per generated file, so incidents name the service (web, app, db, batch, health)."""
    path = os.path.join(directory, "config.ini")
    inputs = "".join("[[%s]]\ntype = file\npath = %s\nstart_at = beginning\n"
                     % (os.path.splitext(os.path.basename(f))[0], f) for f in sorted(log_files))
    text = f"""[service]
pid_file = ""
shutdown_timeout_seconds = 15
[paths]
state_dir = {directory}/state
log_dir = {directory}/log
[inputs]
{inputs}[processing]
workers = 2
ring_size = 16384
ring_bytes = 8388608
[http]
bind = 127.0.0.1
port = {port}
[outputs]
scored_lines = {directory}/scored.jsonl
incidents = {directory}/incidents.jsonl
[logging]
level = ERROR
"""
    with open(path, "w") as f:
        f.write(text)
    return path


def _when(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def format_incident(incident):
    """A few readable lines for one incident record."""
    lines = ["INCIDENT %s  %s -> %s  source=%s  score=%s  tiers=%s" % (
        incident.get("id"), _when(incident["first_seen"]), _when(incident["last_seen"]),
        incident.get("source"), incident.get("score"), ",".join(incident.get("tiers", [])))]
    lines.append("  %s" % incident.get("reason", ""))
    if incident.get("template"):
        lines.append("  template: %s" % incident["template"])
    if incident.get("expected") or incident.get("observed"):
        lines.append("  expected: %s | observed: %s" % (incident.get("expected"), incident.get("observed")))
    for sample in incident.get("samples", [])[:3]:
        lines.append("  sample: %s" % sample)
    return "\n".join(lines)


class _IncidentFollower:
    """Reads the incidents file as the workers append to it."""

    def __init__(self, path):
        self.path, self.offset, self.count = path, 0, 0

    def print_new(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            click.echo(format_incident(json.loads(line)))
            click.echo("")
            self.count += 1


def _daemon_env():
    # A demo's state is thrown away, its compiled kernels are not: the daemon shares this command's
    # kernel cache (NUMBA_CACHE_DIR, chosen by the CLI), which the command filled before starting it.
    return dict(os.environ)


@click.command("demo")
@click.option("--port", default=8080, show_default=True, help="Port of /health and /metrics (a free one if busy).")
@click.option("--timeout", "timeout_seconds", default=110, show_default=True,
              help="Stop after this many seconds even if lines remain.")
@click.option("--keep", is_flag=True, help="Keep the demo directory (workload, config, logs, verdicts).")
def demo_command(port, timeout_seconds, keep):
    """Run the daemon on a generated workload with a scripted incident and print what it finds."""
    directory = tempfile.mkdtemp(prefix="anomaly-detector-demo-")
    try:
        code = _run_demo(directory, _free_port(port), timeout_seconds)
    finally:
        if keep:
            click.echo("demo files kept in %s" % directory)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    sys.exit(code)


def _run_demo(directory, port, timeout_seconds):
    workload = generate(os.path.join(directory, "logs"), days=DEMO_DAYS, seed=7, lines_per_day=DEMO_LINES_PER_DAY,
                        incidents=[DEMO_INCIDENT], fmt="plain")
    config = _write_config(directory, port, workload.files)
    click.echo("demo: %d log lines with a scripted %s in %s/logs" % (workload.lines, DEMO_INCIDENT, directory))
    click.echo("demo: starting the daemon; /health and /metrics on http://127.0.0.1:%d" % port)
    daemon = subprocess.Popen([sys.executable, "-m", "anomaly_detector", "--config", config], env=_daemon_env())
    follower = _IncidentFollower(os.path.join(directory, "incidents.jsonl"))
    deadline = time.monotonic() + timeout_seconds
    try:
        done = _follow(daemon, follower, port, workload.lines, deadline)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
    follower.print_new()
    click.echo("demo: %s; %d incident(s); daemon exit %s" % (
        "every line scored" if done else "stopped early", follower.count, daemon.returncode))
    return 0 if follower.count and daemon.returncode == 0 else 1


def _follow(daemon, follower, port, total, deadline):
    """Print incidents until every line is scored (True), the daemon dies or time is up (False)."""
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            click.echo("demo: the daemon exited early with %s" % daemon.returncode, err=True)
            return False
        follower.print_new()
        processed = read_metric(port, "logs_processed_total")
        if processed is not None and processed >= total:
            return True
        time.sleep(POLL_SECONDS)
    return False
