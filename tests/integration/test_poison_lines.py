"""The real daemon meets lines that kill its worker: they end in the dead-letter file, the rest is scored.

Poison lines come by file and by HTTP ingest POST; the worker is made to hang on them (killed by
the heartbeat check) or to crash (os.abort) through the documented test facility
ANOMALY_DETECTOR_FAULT_LINE (worker/faults.py). And the line that used to stall workers for real
(deep brackets and escaped quotes, 100 KB) is scored promptly with nothing set aside.
"""
import json
import os
import time
import urllib.request

import pytest

from tests.integration.daemon_harness import Daemon, free_port, loss_and_duplicates, numbered_line
from tests.integration.test_daemon_network_inputs import _wait_listening

MARKER = "FAULT-7f3a"
SCORED_WITHIN = 90.0


def _dead_letters(daemon):
    path = os.path.join(daemon.dir, "state", "dead-letter", "dead-letter.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def _wait_dead_letters(daemon, count, deadline):
    while time.monotonic() < deadline:
        found = _dead_letters(daemon)
        if len(found) >= count:
            return found
        time.sleep(0.5)
    return _dead_letters(daemon)


def _append(daemon, lines):
    with open(os.path.join(daemon.logs, "app.log"), "a") as f:
        f.write("".join(lines))


def _post(port, records):
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    request = urllib.request.Request("http://127.0.0.1:%d/ingest" % port, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 202


@pytest.mark.parametrize("action", ["hang", "abort"])
def test_poison_lines_by_file_and_http_are_set_aside_and_the_rest_scored(tmp_path, monkeypatch, action):
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_LINE", MARKER)
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_ACTION", action)
    http = free_port()
    inputs = ("[[app]]\ntype = file\npath = %s/app.log*\nstart_at = beginning\n"
              "[[ingest]]\ntype = http\nformat = jsonl\nlisten_port = %d\n" % (str(tmp_path / "logs"), http))
    daemon = Daemon(tmp_path, workers=1, inputs=inputs, heartbeat=3)
    try:
        daemon.start()
        _wait_listening(http, "tcp")
        # By file: 50 lines, the poison, the next 200.
        began = time.monotonic()
        _append(daemon, [numbered_line(i) for i in range(50)] + ["this line kills the worker %s\n" % MARKER]
                + [numbered_line(i) for i in range(50, 250)])
        counts = daemon.wait_scored(250, SCORED_WITHIN)
        assert loss_and_duplicates(counts, 250)[0] == [], daemon.log_tail()
        assert time.monotonic() - began < SCORED_WITHIN
        # By HTTP: the poison first in a POST, then the next 200 lines.
        began = time.monotonic()
        _post(http, [{"message": "a posted line that kills the worker %s" % MARKER, "level": "INFO"}]
              + [{"message": numbered_line(i).strip(), "level": "INFO"} for i in range(250, 450)])
        counts = daemon.wait_scored(450, SCORED_WITHIN)
        assert loss_and_duplicates(counts, 450)[0] == [], daemon.log_tail()
        assert time.monotonic() - began < SCORED_WITHIN
        dead = _wait_dead_letters(daemon, 2, time.monotonic() + 10)
        assert [d["input"] for d in dead] == ["app", "ingest"]
        assert dead[0]["line"] == "this line kills the worker %s" % MARKER
        assert MARKER in dead[1]["line"] and json.loads(dead[1]["line"])["message"].startswith("a posted line")
        expected = "worker killed while scoring (hung 3 s)" if action == "hang" else "crashed: signal 6 (SIGABRT)"
        assert {d["reason"] for d in dead} == {expected}
        assert daemon.metric("lines_dead_lettered_total") == 2
        scored_messages = open(daemon.scored).read()
        assert MARKER not in scored_messages
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert "set aside in" in open(os.path.join(daemon.dir, "daemon.stderr"), errors="replace").read()


def test_the_line_that_used_to_stall_workers_is_scored_promptly(tmp_path):
    daemon = Daemon(tmp_path, workers=1)
    with open(daemon.config) as f:
        text = f.read().replace("max_line_bytes = 65536", "max_line_bytes = 262144")
    with open(daemon.config, "w") as f:
        f.write(text)
    stalling = '{"message":' + "[" * 100 + '"' + '\\"' * 50000 + "\n"   # ~100 KB; the old check took ~20 s
    assert len(stalling) > 100000
    try:
        daemon.start()
        began = time.monotonic()
        _append(daemon, [stalling] + [numbered_line(i) for i in range(200)])
        counts = daemon.wait_scored(200, 15)
        assert loss_and_duplicates(counts, 200) == ([], 0), daemon.log_tail()
        assert time.monotonic() - began < 15
        with open(daemon.scored) as f:
            records = [json.loads(line) for line in f]
        assert len(records) == 201
        assert _dead_letters(daemon) == []
        assert daemon.metric("lines_dead_lettered_total") == 0
        assert "hung" not in open(os.path.join(daemon.dir, "daemon.stderr"), errors="replace").read()
        assert daemon.stop() == 0
    finally:
        daemon.kill()
