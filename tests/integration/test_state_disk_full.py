"""The disk holding state_dir and the outputs fills up under a live daemon: it keeps running, /health
says degraded (state files cannot be written), no batch is acknowledged unwritten, and once space
returns every line fed is in the scored-lines file exactly once, with no torn record, and /health is
healthy again. The disk is a 2 MiB tmpfs (root only; skipped where it cannot be mounted)."""
import json
import os
import subprocess
import time

import pytest

from tests.integration.daemon_harness import Daemon, loss_and_duplicates, numbered_line


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return predicate()


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.decode().strip())
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path):
    """Write to `path` until the disk is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 65536)
        except OSError:
            pass
    return written


def _health(daemon):
    _, body = daemon.get("/health")
    return json.loads(body)


def test_a_full_disk_loses_no_line_and_health_says_degraded_until_space_returns(tmp_path, small_disk):
    # [outputs] write_retry_max_seconds = 1 (the extra lands in [outputs]): the worker tries its held-back
    # batch again every second, so it is written a second after space returns, not after a doubled pause
    daemon = Daemon(tmp_path / "daemon", workers=1, batch_size=200, extra="write_retry_max_seconds = 1\n")
    # models snapshot every 2 s (not the harness's 5): the failing state write, which /health waits for, comes sooner
    with open(daemon.config) as f:
        text = f.read()
    with open(daemon.config, "w") as f:
        f.write(text.replace("snapshot_interval_seconds = 5", "snapshot_interval_seconds = 2"))
    os.makedirs(small_disk / "state")
    # state_dir and both outputs live on the small disk; the config, the daemon's log and the inputs do not
    os.symlink(small_disk / "state", os.path.join(daemon.dir, "state"))
    for name in ("scored.jsonl", "incidents.jsonl"):
        os.symlink(small_disk / name, os.path.join(daemon.dir, name))
    log = os.path.join(daemon.logs, "app.log")
    try:
        daemon.start()
        with open(log, "a") as f:
            f.write("".join(numbered_line(i) for i in range(1000)))
        assert len(daemon.wait_scored(1000, 120, reading=False)) == 1000, daemon.log_tail()
        daemon.wait_snapshot(time.time())                 # a snapshot (every 2 s) on a disk with room
        _fill(small_disk / "filler")
        with open(log, "a") as f:
            f.write("".join(numbered_line(i) for i in range(1000, 3000)))
        assert _wait(lambda: (daemon.metric("output_write_errors_total") or 0) >= 2, 60), daemon.log_tail()
        assert _wait(lambda: _health(daemon)["status"] == "degraded", 20), _health(daemon)
        assert any("state files cannot be written" in r for r in _health(daemon)["reasons"])
        assert daemon.metric("state_writes_failing") >= 1 and daemon.metric("state_write_errors_total") >= 1
        stuck = len(daemon.scored_seqs())
        time.sleep(3.0)
        assert daemon.process.poll() is None                      # still running
        assert 1000 <= stuck < 3000 and len(daemon.scored_seqs()) == stuck   # nothing more acknowledged
        print("disk full: %d of 3000 lines scored, %d output write errors, health %s"
              % (stuck, daemon.metric("output_write_errors_total"), _health(daemon)["reasons"]))
        os.unlink(small_disk / "filler")                          # space returns
        counts = daemon.wait_scored(3000, 120)
        lost, duplicates = loss_and_duplicates(counts, 3000)
        assert (len(lost), duplicates) == (0, 0), (lost[:10], duplicates)
        with open(daemon.scored, "rb") as f:
            for line in f:
                json.loads(line)                                  # no torn record
        assert _wait(lambda: _health(daemon)["status"] == "healthy", 30), _health(daemon)
        assert daemon.metric("state_writes_failing") == 0
        assert "cannot write its outputs" in daemon.log_tail(400)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
