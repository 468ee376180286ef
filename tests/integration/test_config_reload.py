"""SIGHUP on a live daemon applies only a config that validates fully: an empty file, NaN, clashing
ports or a catastrophic pattern keep the running config (same children, same port, lines still
scored) and show in config_last_reload_successful and config_reloads_total; a config with
warnings only is applied."""
import os
import signal
import time

import pytest

from tests.integration.daemon_harness import Daemon, loss_and_duplicates, numbered_line


def write_lines(path, first, count):
    with open(path, "a") as f:
        f.writelines(numbered_line(i) for i in range(first, first + count))


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, workers=1)
    yield d
    d.kill()


def _log(daemon):
    path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def _reloads(daemon):
    """{result: count} of anomaly_detector_config_reloads_total, read from the live /metrics."""
    _, text = daemon.get("/metrics")
    found = {}
    for line in text.splitlines():
        if line.startswith('anomaly_detector_config_reloads_total{result="'):
            found[line.split('"')[1]] = float(line.split()[-1])
    return found


def _hup_and_wait_for(daemon, words, timeout=60):
    """Send SIGHUP and wait until the daemon's log gains one more line holding words."""
    before = _log(daemon).count(words)
    daemon.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while _log(daemon).count(words) == before:
        assert daemon.process.poll() is None, daemon.log_tail()
        assert time.monotonic() < deadline, "no %r after SIGHUP:\n%s" % (words, _log(daemon)[-3000:])
        time.sleep(0.2)


def test_reload_keeps_the_running_config_unless_the_new_one_validates(daemon):
    app = os.path.join(daemon.logs, "app.log")
    daemon.start()
    write_lines(app, 0, 1000)
    daemon.wait_scored(1000, 120, reading=False)
    good = open(daemon.config).read()
    children = daemon.children()
    broken = {
        "empty": "",
        "comments only": "# nothing here yet\n",
        "nan heartbeat": good.replace("heartbeat_timeout_seconds = 30", "heartbeat_timeout_seconds = nan"),
        "inf shutdown": good.replace("shutdown_timeout_seconds = 20", "shutdown_timeout_seconds = inf"),
        "ingest on the sidecar port": good.replace(
            "[processing]", "[[ingest]]\ntype = http\nlisten_port = %d\n[processing]" % daemon.port),
        "catastrophic rule": good + "[rules]\n[[evil]]\npattern = ^(a+)+$\n",
        "duplicate section": good + "[service]\nname = other\n",
    }
    seq = 1000
    for case, text in broken.items():
        with open(daemon.config, "w") as f:
            f.write(text)
        _hup_and_wait_for(daemon, "reload rejected")
        rejected_at = time.monotonic()
        write_lines(app, seq, 500)
        seq += 500
        counts = daemon.wait_scored(seq, 120, reading=case == list(broken)[-1])   # metrics are read after the last
        # longer than any restart the heartbeat check would make with a NaN timeout
        time.sleep(max(0.0, rejected_at + 1.5 - time.monotonic()))
        assert daemon.children() == children, case
        status, _ = daemon.get("/health")
        assert status == 200, case
        assert loss_and_duplicates(counts, seq) == ([], 0), case
    assert daemon.metric("config_last_reload_successful") == 0
    assert _reloads(daemon) == {"applied": 0, "rejected": len(broken)}
    log = _log(daemon)
    assert "reload: %s:1: error: the file holds no settings" % daemon.config in log
    assert "found 'nan' (NaN and infinities are refused)" in log
    assert "duplicate section [service] at lines 1 and" in log
    assert "pattern can backtrack catastrophically (nested quantifier '(a+)+')" in log

    # Warnings alone (a second input whose files do not exist yet) do not stop a reload.
    with open(daemon.config, "w") as f:
        f.write(good.replace("[processing]", "[[later]]\npath = %s/later/*.log\n[processing]" % daemon.dir))
    _hup_and_wait_for(daemon, "reloaded %s" % daemon.config)
    assert "reload: %s" % daemon.config in _log(daemon) and "no file matches" in _log(daemon)
    assert daemon.metric("config_last_reload_successful") == 1
    assert _reloads(daemon) == {"applied": 1, "rejected": len(broken)}
    write_lines(app, seq, 500)
    counts = daemon.wait_scored(seq + 500, 120)
    assert loss_and_duplicates(counts, seq + 500) == ([], 0)
    assert daemon.stop() == 0
