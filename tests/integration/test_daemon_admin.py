"""POST /admin/* on the real daemon: every refusal status, the token never logged, and each action's
effect where it acts (workers' batch size and tier 4, the input pausing without loss, the supervisor
forking and retiring workers), plus the runbook's admin commands run as written with curl."""
import http.client
import json
import os
import re
import socket
import subprocess
import time

import pytest

from tests.integration import daemon_harness as harness
from tests.integration.daemon_harness import Daemon, loss_and_duplicates, numbered_line

TOKEN = "t0ken-for-the-admin-api-1234567890"
MAX_BODY = 256


def request(daemon, method, path, body=None, token=TOKEN, headers=None):
    """The harness's http_request with this module's token."""
    return harness.http_request(daemon, method, path, body, token, headers)


def admin(daemon, action, body=None, **kwargs):
    return request(daemon, "POST", "/admin/" + action, body, **kwargs)


def runtime(daemon):
    return {name: daemon.metric("runtime_" + name)
            for name in ("workers_wanted", "batch_size", "tier4_enabled", "learning_rate_factor", "backpressure")}


def log_text(daemon):
    path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def wait_for(condition, timeout, what, daemon):
    """The harness's wait_for, `what` first. While set-workers restarts the sidecar, /metrics is briefly
    unavailable (docs/http.md): refused (OSError), or an answer cut when the old sidecar stops
    (http.client.HTTPException)."""
    return harness.wait_for(condition, timeout, daemon, what, interval=0.25,
                            tolerate=(OSError, http.client.HTTPException))


def write_lines(daemon, first, count):
    with open(os.path.join(daemon.logs, "app.log"), "a") as f:
        f.write("".join(numbered_line(i) for i in range(first, first + count)))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("admin")
    token_file = tmp / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    d = Daemon(tmp, http="admin_token_file = %s\nmax_body_bytes = %d\nadmin_rate_limit_per_minute = 10000\n"
               "header_timeout_seconds = 2\n" % (token_file, MAX_BODY))
    with open(d.config) as f:   # room for the runbook's set-batch-size 5000 (a batch is at most half a ring)
        text = f.read().replace("ring_size = 8192", "ring_size = 16384")
    with open(d.config, "w") as f:
        f.write(text)
    d.start()
    yield d
    d.kill()


def test_refusals_answer_their_status_and_change_nothing(daemon):
    before = runtime(daemon)
    assert before == {"workers_wanted": 2, "batch_size": 500, "tier4_enabled": 1, "learning_rate_factor": 1,
                      "backpressure": 0}
    status, body, headers = admin(daemon, "disable-tier4", token=None)
    assert status == 401 and "token" in body["error"] and headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert admin(daemon, "disable-tier4", token="wrong-" + TOKEN)[0] == 401
    assert admin(daemon, "disable-tier4", token=TOKEN[:-1])[0] == 401
    assert request(daemon, "POST", "/admin/disable-tier4", headers={"Authorization": "Basic " + TOKEN},
                   token=None)[0] == 401
    for path in ("/admin/../metrics", "/admin/%2e%2e/metrics", "/admin/%2E%2E/disable-tier4", "/admin/./disable-tier4",
                 "/admin//disable-tier4", "/admin/disable-tier4/../set-workers", "/admin/%64isable-tier4",
                 "/admin/nope", "/admin", "/admin/"):
        status, body, _ = request(daemon, "POST", path)
        assert status == 404, (path, status, body)
    status, body, headers = request(daemon, "GET", "/admin/disable-tier4")
    assert status == 405 and headers.get("Allow") == "POST", body
    assert request(daemon, "PUT", "/admin/set-workers", {"count": 3})[0] == 405
    bad = [("set-workers", {"count": "3"}, "whole number"), ("set-workers", {"count": 0}, "between 1 and 64"),
           ("set-workers", {"count": 65}, "between 1 and 64"), ("set-workers", {}, "missing field"),
           ("set-workers", {"count": 2, "x": 1}, "unknown field"), ("set-workers", {"count": True}, "whole number"),
           ("set-batch-size", {"size": 8193}, "half of [processing] ring_size"), ("set-batch-size", [1], "JSON object"),
           ("set-batch-size", "{size: 3", "not JSON"), ("set-batch-size", b"\xff\xfe", "not UTF-8"),
           ("disable-tier4", {"now": True}, "takes no fields")]
    for action, body, reason in bad:
        status, answer, _ = admin(daemon, action, body)
        assert status == 400 and reason in answer["error"], (action, body, status, answer)
    status, body, headers = admin(daemon, "set-workers", '{"count": 3}' + " " * MAX_BODY)
    assert status == 413 and "max_body_bytes" in body["error"] and headers.get("Connection") == "close"
    assert runtime(daemon) == before
    counts = daemon.labelled("admin_requests_total")
    assert counts[(("action", "disable-tier4"), ("status", "401"))] == 4
    assert counts[(("action", "unknown"), ("status", "404"))] == 10
    assert counts[(("action", "set-workers"), ("status", "400"))] == 6
    assert counts[(("action", "set-workers"), ("status", "413"))] == 1
    assert counts[(("action", "set-workers"), ("status", "405"))] == 1
    assert daemon.metric("admin_api_enabled") == 1


def test_a_body_slower_than_the_deadline_is_cut(daemon):
    before = daemon.labelled("http_rejected_total")[(("reason", "header_timeout"),)]
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as sock:
        sock.sendall(b"POST /admin/set-workers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Length: 20\r\n\r\n{\"count\"" % TOKEN.encode())
        started = time.monotonic()
        answer = b""
        while True:   # the sidecar cuts the connection at header_timeout_seconds (2 s) after the headers
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert time.monotonic() - started < 25
    assert b"HTTP/1.1 200" not in answer and b"HTTP/1.1 202" not in answer
    assert daemon.labelled("http_rejected_total")[(("reason", "header_timeout"),)] == before + 1
    assert daemon.metric("runtime_workers_wanted") == 2


def test_batch_size_and_backpressure_take_effect_without_loss(daemon):
    status, body, _ = admin(daemon, "set-batch-size", {"size": 7})
    assert status == 200 and body["settings"]["batch_size"] == 7, body
    wait_for(lambda: all("worker %d: run-time flags applied: tier 4 on, learning rate factor 1, batch size 7" % i
                         in log_text(daemon) for i in (0, 1)), 30, "both workers on batch size 7", daemon)
    assert admin(daemon, "enable-backpressure")[0] == 200
    wait_for(lambda: "backpressure on: reading paused" in log_text(daemon), 30, "the input pausing", daemon)
    read_before = daemon.metric("lines_read_total")
    write_lines(daemon, 0, 700)
    time.sleep(3)   # the input polls files several times a second: paused, it reads none of them
    assert daemon.metric("lines_read_total") == read_before and daemon.metric("runtime_backpressure") == 1
    batches_before = daemon.metric("batches_total")
    assert admin(daemon, "disable-backpressure")[0] == 200
    counts = daemon.wait_scored(700, 120)
    assert loss_and_duplicates(counts, 700) == ([], 0)
    # 700 lines from one file go to one ring, popped at most 7 at a time.
    assert daemon.metric("batches_total") - batches_before >= 100


def test_tier4_and_learning_rate_reach_every_worker(daemon):
    assert admin(daemon, "disable-tier4")[0] == 200
    wait_for(lambda: all("worker %d: run-time flags applied: tier 4 off" % i in log_text(daemon) for i in (0, 1)),
             30, "tier 4 off in both workers", daemon)
    assert admin(daemon, "reduce-learning-rate")[0] == 200
    status, body, _ = admin(daemon, "reduce-learning-rate")
    assert status == 200 and body["settings"]["learning_rate_factor"] == 0.25, body
    wait_for(lambda: all("worker %d: run-time flags applied: tier 4 off, learning rate factor 0.25" % i
                         in log_text(daemon) for i in (0, 1)), 30, "factor 0.25 in both workers", daemon)
    assert runtime(daemon)["learning_rate_factor"] == 0.25 and runtime(daemon)["tier4_enabled"] == 0
    assert admin(daemon, "enable-tier4")[0] == 200
    assert daemon.metric("runtime_tier4_enabled") == 1


def test_set_workers_forks_and_retires_workers_without_loss(daemon):
    batch_size = runtime(daemon)["batch_size"]   # whatever earlier tests of the module left
    status, body, _ = admin(daemon, "set-workers", {"count": 3})
    assert status == 202, body
    wait_for(lambda: daemon.metric("workers_running") == 3 and "ad-worker-2" in daemon.children(), 120,
             "three workers", daemon)
    assert runtime(daemon)["workers_wanted"] == 3 and runtime(daemon)["batch_size"] == batch_size  # other settings kept
    first = len(daemon.scored_seqs())   # lines earlier tests of the module wrote (all scored), if they ran
    write_lines(daemon, first, 300)
    counts = daemon.wait_scored(first + 300, 120)
    assert loss_and_duplicates(counts, first + 300) == ([], 0)
    assert admin(daemon, "set-workers", {"count": 1})[0] == 202
    wait_for(lambda: daemon.metric("workers_running") == 1 and not {"ad-worker-1", "ad-worker-2"} & set(daemon.children()),
             120, "one worker", daemon)
    write_lines(daemon, first + 300, 200)
    counts = daemon.wait_scored(first + 500, 120)
    assert loss_and_duplicates(counts, first + 500) == ([], 0)
    assert "admin set-workers: 3 -> 1 workers" in log_text(daemon)


# The runbook's admin commands, verbatim ("Memory Exhaustion Recovery" and "High CPU Usage Mitigation");
# an operator's ~/.curlrc carries the token (docs/http.md), the test only points them at its own port.
RUNBOOK_COMMANDS = [
    "curl -X POST http://localhost:8080/admin/enable-backpressure",
    "curl -X POST http://localhost:8080/admin/set-workers -d '{\"count\": 4}'",
    "curl -X POST http://localhost:8080/admin/disable-tier4",
    "curl -X POST http://localhost:8080/admin/reduce-learning-rate",
    "curl -X POST http://localhost:8080/admin/set-batch-size -d '{\"size\": 5000}'",
]


def test_runbook_admin_commands_work_as_written(daemon, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".curlrc").write_text('header = "Authorization: Bearer %s"\nsilent\n' % TOKEN)
    factor = daemon.metric("runtime_learning_rate_factor")
    for command in RUNBOOK_COMMANDS:
        command = command.replace("localhost:8080", "localhost:%d" % daemon.port)
        out = subprocess.run(["bash", "-c", command], env=dict(os.environ, HOME=str(home)), capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, (command, out.stderr)
        assert "result" in json.loads(out.stdout), (command, out.stdout)
    wait_for(lambda: daemon.metric("workers_running") == 4, 120, "four workers", daemon)
    assert runtime(daemon) == {"workers_wanted": 4, "batch_size": 5000, "tier4_enabled": 0,
                               "learning_rate_factor": factor / 2, "backpressure": 1}


def test_the_token_is_never_logged(daemon):
    found = []
    for root, _dirs, files in os.walk(daemon.dir):
        for name in files:
            path = os.path.join(root, name)
            if name in ("admin.token", ".curlrc") or "/state/" in path:
                continue
            with open(path, "rb") as f:
                if TOKEN.encode() in f.read():
                    found.append(path)
    assert found == []
    access = open(os.path.join(daemon.dir, "log", "access.log")).read()
    assert re.search(r'"POST /admin/disable-tier4 HTTP/1.1" 401 ', access), access[-500:]
