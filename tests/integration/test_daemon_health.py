"""/health and the supervisor's exit on FATAL, on the real daemon: every role reported, a FATAL input
or sidecar ends the daemon with status 4 after [service] fatal_exit_seconds, a stalled ring is named
while the other worker progresses, a stopped input, listener or alerter is named, memory over
max_memory_mb and an unwritable state directory answer 503, and memory relief reaches the sidecar."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from tests.integration.daemon_harness import Daemon, free_port, numbered_line

EXIT_FATAL_CHILD = 4   # docs/cli.md


def service_keys(daemon, **keys):
    """Add keys to the harness config's [service] section."""
    text = open(daemon.config).read()
    extra = "".join("%s = %s\n" % item for item in keys.items())
    with open(daemon.config, "w") as f:
        f.write(text.replace("[service]\n", "[service]\n" + extra, 1))


def health(daemon):
    status, body = daemon.get("/health")
    return status, json.loads(body)


def kill_until_fatal(daemon, comm, on_wait=None, limit=8):
    """SIGKILL the child named comm each time it is forked again, until the supervisor gives up on it."""
    log_path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    name = comm[len("ad-"):]
    killed = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(killed) < limit:
        if "child %s fatal" % name in open(log_path).read():
            return killed
        pid = daemon.children().get(comm)
        if pid and pid not in killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        elif on_wait is not None:
            on_wait()
        time.sleep(0.05)
    raise AssertionError("%s not FATAL after %d kills:\n%s" % (comm, len(killed), daemon.log_tail()))


def metric_lines(daemon, name):
    _, text = daemon.get("/metrics")
    return [line for line in text.splitlines() if line.startswith("anomaly_detector_%s{" % name)]


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.kill()


def test_fatal_input_gives_503_naming_it_then_the_supervisor_exits_4(daemon):
    service_keys(daemon, fatal_exit_seconds=8, health_down_seconds=1)
    daemon.start()
    assert health(daemon)[1]["processes"]["input"]["state"] in ("STARTING", "RUNNING")
    seen = []
    kill_until_fatal(daemon, "ad-input", on_wait=lambda: seen.extend(health(daemon)[1]["reasons"]))
    fatal_at = time.monotonic()
    assert any(re.match(r"input down \(BACKOFF\) for \d+ s", r) for r in seen), seen
    while time.monotonic() - fatal_at < 10:
        status, body = health(daemon)
        if status == 503 and any(r.startswith("input FATAL") for r in body["reasons"]):
            break
        time.sleep(0.2)
    assert status == 503 and body["status"] == "unhealthy", body
    assert body["processes"]["input"]["state"] == "FATAL" and body["processes"]["input"]["restarts"] >= 4
    assert body["processes"]["worker-0"]["state"] == "RUNNING"
    assert 'anomaly_detector_process_up{process="input",role="input"} 0' in metric_lines(daemon, "process_up")
    assert 'anomaly_detector_process_state{process="input",role="input"} 200' in metric_lines(daemon, "process_state")
    assert 'anomaly_detector_process_up{process="worker-1",role="worker"} 1' in metric_lines(daemon, "process_up")
    restarts = [line for line in metric_lines(daemon, "process_restarts_total") if 'process="input"' in line]
    assert int(restarts[0].split()[1]) >= 4
    assert daemon.process.wait(8 + 60) == EXIT_FATAL_CHILD
    assert time.monotonic() - fatal_at >= 7
    text = open(os.path.join(daemon.dir, "log", "anomaly-detector.log")).read()
    assert re.search(r"CRITICAL \[\d+ supervisor\] .*input FATAL for \d+ s .*exit status 4", text), text[-2000:]


def test_fatal_sidecar_closes_the_port_and_the_supervisor_exits_4(daemon):
    service_keys(daemon, fatal_exit_seconds=8)   # the port must close within 5 s of FATAL, well before the exit
    daemon.start()
    kill_until_fatal(daemon, "ad-sidecar")
    deadline = time.monotonic() + 5
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            socket.create_connection(("127.0.0.1", daemon.port), timeout=2).close()
            time.sleep(0.2)
        except ConnectionRefusedError:
            refused = True
    assert refused, "the port still accepts with no sidecar behind it"
    assert daemon.process.poll() is None, "the port must close at FATAL, before the supervisor exits"
    assert "ad-sidecar" not in daemon.children()
    assert daemon.process.wait(8 + 60) == EXIT_FATAL_CHILD
    text = open(os.path.join(daemon.dir, "log", "anomaly-detector.log")).read()
    assert "sidecar FATAL: closed the HTTP port 127.0.0.1:%d" % daemon.port in text
    assert re.search(r"CRITICAL .*sidecar FATAL for \d+ s", text)


def one_file_per_ring(logs):
    """Two files, {0: path, 1: path}: the input gives each new file the ring that received the fewest
    lines lately (inputs/runner.py _ring_of_stream), so two files fed alike land on the two rings."""
    files = {}
    for n in (0, 1):
        path = os.path.join(logs, "app.log.%d" % n)
        open(path, "w").close()
        files[n] = path
    return files


def test_one_stalled_ring_is_named_while_the_other_worker_progresses(daemon):
    daemon.write_config(heartbeat=30, http="stall_seconds = 5")
    files = one_file_per_ring(daemon.logs)
    daemon.start()
    stopped = daemon.children()["ad-worker-0"]
    os.kill(stopped, signal.SIGSTOP)           # holds ring 0: its lines stay unacknowledged
    seq = 0
    try:
        processed_before = daemon.metric("logs_processed_total")
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            for ring in (0, 1):
                with open(files[ring], "a") as f:
                    f.writelines(numbered_line(i) for i in range(seq, seq + 50))
                seq += 50
            status, body = health(daemon)
            stalled = [r for r in body["reasons"] if "stalled" in r]
            silent = [r for r in body["reasons"] if "not responding" in r]
            # Two clocks: the stall one starts at the last reading that saw ring 0 empty, which may come
            # up to a reading interval before the worker's last heartbeat; wait for both to pass.
            if stalled and silent:
                break
            time.sleep(0.25)
        assert status == 503 and stalled, body
        assert re.match(r"worker 0 stalled: \d+ lines waiting, none acknowledged for \d+ s", stalled[0]), stalled
        assert not any("worker 1" in r or "worker-1" in r for r in body["reasons"]), body
        assert any(re.match(r"worker-0 not responding: no heartbeat for \d+ s", r) for r in body["reasons"]), body
        assert daemon.labelled("health_reasons")[(("reason", "stalled"),)] == 1
        assert daemon.metric("health_status") == 0
        assert daemon.metric("logs_processed_total") > processed_before, "worker 1 kept scoring"
    finally:
        try:
            os.kill(stopped, signal.SIGCONT)
        except ProcessLookupError:
            pass                               # the supervisor killed it as hung, as it should
    daemon.wait_healthy(120)                   # its successor (or itself) drains ring 0
    counts = daemon.wait_scored(seq, 120)
    assert [i for i in range(seq) if i not in counts] == []
    assert daemon.stop() == 0


def _wait_in_log(daemon, needle, timeout):
    """The daemon's log file once it holds `needle` (or at the timeout)."""
    log_path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline and needle not in text:
        time.sleep(0.2)
        text = open(log_path).read() if os.path.exists(log_path) else ""
    return text


def test_sigusr1_relief_reaches_the_sidecar(daemon):
    daemon.start()
    daemon.process.send_signal(signal.SIGUSR1)
    text = _wait_in_log(daemon, "memory relief in sidecar: RSS", 20)
    assert re.search(r"\[\d+ sidecar\] anomaly_detector.relief: memory relief in sidecar: RSS", text), text[-2000:]
    assert daemon.stop() == 0


def test_a_crashing_child_logs_its_traceback_to_the_log_file_and_stderr(daemon, monkeypatch):
    """An uncaught exception in a worker (the fault facility's `crash`: it escapes every guard, as a
    bug would) is one ERROR record with its traceback in the log file, and on stderr; the worker
    then sets the line aside and runs again."""
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_LINE", "CRASH-c41d")
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_ACTION", "crash")
    daemon.start()
    with open(os.path.join(daemon.logs, "app.log"), "a") as f:
        f.write(numbered_line(0) + "2026-03-02T10:00:01Z INFO web-1 CRASH-c41d here\n" + numbered_line(1))
    text = _wait_in_log(daemon, "crashed with an uncaught exception", 60)
    record = re.search(r"^\S+ \S+ ERROR \[\d+ worker-\d\] anomaly_detector\.crash: child worker-\d crashed with "
                       r"an uncaught exception \(exit 70\)\nTraceback \(most recent call last\):\n(  .*\n)+"
                       r"anomaly_detector\.worker\.faults\.InjectedCrash: injected crash", text, re.M)
    assert record, text[-3000:]
    assert "InjectedCrash: injected crash" in open(os.path.join(daemon.dir, "daemon.stderr")).read()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (health(daemon)[0] == 200 and len(daemon.scored_seqs()) == 2):
        time.sleep(0.5)
    assert health(daemon)[0] == 200 and sorted(daemon.scored_seqs()) == [0, 1]
    assert daemon.stop() == 0


def wait_reason(daemon, pattern, timeout, present=True):
    """The /health body once a reason matches `pattern` (or none does, present=False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = health(daemon)
        found = any(re.search(pattern, r) for r in body["reasons"])
        if found == present:
            return status, body
        time.sleep(0.25)
    raise AssertionError("%s %s after %d s: %s\n%s" % (pattern, "never came" if present else "stayed", timeout,
                                                      body, daemon.log_tail()))


def test_a_stopped_input_listener_or_alerter_is_named_until_it_runs_again(tmp_path):
    inputs = ("[[app]]\ntype = file\npath = %s/logs/app.log*\n[[ingest]]\ntype = http\nlisten_port = %d\n"
              % (tmp_path, free_port()))
    daemon = Daemon(tmp_path, inputs=inputs, http="stall_seconds = 3",
                    extra="[alerting]\n[[audit]]\ntype = file\npath = %s/alerts.jsonl\n" % tmp_path)
    try:
        daemon.start()
        for name in ("input", "listener", "alerter"):
            pid = daemon.children()["ad-" + name]
            os.kill(pid, signal.SIGSTOP)
            try:
                status, body = wait_reason(daemon, r"^%s not responding: no heartbeat for \d+ s$" % name, 30)
                assert status == 503 and body["status"] == "unhealthy", body
                assert daemon.labelled("health_reasons")[(("reason", "not_responding"),)] >= 1
            finally:
                os.kill(pid, signal.SIGCONT)
            status, body = wait_reason(daemon, r"not responding", 30, present=False)
            assert daemon.children()["ad-" + name] == pid, "the supervisor (heartbeat_timeout 30 s) kept it"
        daemon.wait_healthy(30)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_memory_over_max_memory_mb_answers_503(daemon):
    """64 MiB for a daemon of six Python processes with numpy and numba: over the limit from the start,
    measured as their proportional set size (the shared rings counted once)."""
    daemon.write_config(extra="")
    text = open(daemon.config).read().replace("[processing]\n", "[processing]\nmax_memory_mb = 64\n", 1)
    with open(daemon.config, "w") as f:
        f.write(text)
    daemon.wait_healthy = lambda timeout: None        # it never is; wait for the reason instead
    daemon.start()
    deadline = time.monotonic() + 300
    while True:
        try:
            status, body = health(daemon)
            if any("over max_memory_mb" in r for r in body.get("reasons", [])):
                break
        except OSError:
            pass                                      # the sidecar not listening yet (kernels compiling)
        assert time.monotonic() < deadline and daemon.process.poll() is None, daemon.log_tail()
        time.sleep(0.5)
    assert status == 503, body
    assert any(re.match(r"memory \d+ MiB over max_memory_mb 64 ", r) for r in body["reasons"]), body
    assert daemon.metric("memory_usage_percent") > 100 and daemon.metric("memory_limit_bytes") == 64 * 2**20
    assert daemon.labelled("health_reasons")[(("reason", "memory"),)] == 1
    assert daemon.stop() == 0


def _read_only(path):
    """Make path read-only for everyone, root included (a read-only bind mount over itself); returns
    how to undo it, or None when this process may not mount."""
    if os.geteuid() != 0:
        os.chmod(path, 0o500)
        return lambda: os.chmod(path, 0o700)
    for command in (["mount", "--bind", path, path], ["mount", "-o", "remount,ro,bind", path]):
        if subprocess.run(command, capture_output=True).returncode != 0:
            subprocess.run(["umount", path], capture_output=True)
            return None
    return lambda: subprocess.run(["umount", path], check=True)


def test_an_unwritable_state_directory_answers_503_until_it_is_writable(daemon):
    daemon.start()
    state = os.path.join(daemon.dir, "state")
    undo = _read_only(state)
    if undo is None:
        pytest.skip("running as root without the right to mount: a read-only state directory cannot be made")
    try:
        status, body = wait_reason(daemon, r"^state directory %s not writable: " % re.escape(state), 10)
        assert status == 503, body
        assert daemon.labelled("health_reasons")[(("reason", "state_dir"),)] == 1
    finally:
        undo()
    wait_reason(daemon, r"state directory", 10, present=False)
    daemon.wait_healthy(10)
    assert daemon.stop() == 0
