"""A live daemon starts on damaged state: each of four damages of its newest templates snapshot (a
flipped byte, cut in half, zero-filled, a pickle in its place) is set aside as .bad-<time>, logged,
counted in state_load_failures_total{reason}, and the worker restores the previous generation; the
daemon is healthy within 10 s of its start and scores. A state_dir of the old workers/<N>/ layout
is moved to the top-level one at start and its models are restored."""
import glob
import os
import pickle
import shutil
import time

import pytest

from tests.integration.daemon_harness import Daemon, numbered_line

START_SECONDS = 10.0   # the reliability catalogue's bound for a start on damaged state

DAMAGES = {
    "checksum": lambda data: data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:],   # a flipped byte
    "truncated": lambda data: data[: len(data) // 2],
    "zero_filled": lambda data: b"\0" * len(data),
    "foreign": lambda data: pickle.dumps({"templates": "not ours"}),
}


def _feed(daemon, first, count):
    with open(os.path.join(daemon.logs, "app.log"), "a") as f:
        f.write("".join(numbered_line(i) for i in range(first, first + count)))


def _log_text(daemon):
    with open(os.path.join(daemon.dir, "daemon.stderr"), errors="replace") as f:
        return f.read()


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """A state_dir with two generations of every model file (a periodic snapshot and the one at stop)."""
    daemon = Daemon(tmp_path_factory.mktemp("prepare"), workers=1)
    try:
        daemon.start()
        _feed(daemon, 0, 3000)
        assert len(daemon.wait_scored(3000, 240, reading=False)) == 3000, daemon.log_tail()
        daemon.wait_snapshot(time.time())   # a periodic snapshot of all 3000 (snapshot_interval_seconds = 5)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    state = os.path.join(daemon.dir, "state")
    templates = os.path.join(state, "baselines", "worker-0", "templates.json")
    assert os.path.exists(templates) and os.path.exists(templates + ".prev")
    return state


def _timed_start(daemon, timeout=60.0):
    """Start; seconds until /health answers 200 and the worker logged its models restored."""
    began = time.monotonic()
    daemon.start()
    while "models restored" not in _log_text(daemon) and time.monotonic() - began < timeout:
        time.sleep(0.1)
    return time.monotonic() - began


@pytest.mark.parametrize("reason", sorted(DAMAGES))
def test_a_damaged_snapshot_starts_on_the_previous_generation(saved_state, tmp_path, reason):
    daemon = Daemon(tmp_path, workers=1)
    state = os.path.join(daemon.dir, "state")
    shutil.copytree(saved_state, state)
    path = os.path.join(state, "baselines", "worker-0", "templates.json")
    with open(path, "rb") as f:
        damaged = DAMAGES[reason](f.read())
    with open(path, "wb") as f:
        f.write(damaged)
    try:
        seconds = _timed_start(daemon)
        print("start on a %s templates file: %.1f s" % (reason, seconds))
        assert seconds < START_SECONDS, "started in %.1f s" % seconds
        [bad] = glob.glob(path + ".bad-*")
        with open(bad, "rb") as f:
            assert f.read() == damaged    # kept aside as found
        text = _log_text(daemon)
        assert "state file unusable (%s)" % reason in text and "trying the previous generation" in text
        assert "models restored" in text
        deadline = time.monotonic() + 10          # published by the worker right after its load
        while sum(daemon.labelled("state_load_failures_total").values()) == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        failures = daemon.labelled("state_load_failures_total")
        assert failures[(("reason", reason),)] == 1 and sum(failures.values()) == 1, failures
        _feed(daemon, 0, 200)
        assert len(daemon.wait_scored(200, 60)) == 200, daemon.log_tail()
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_an_old_per_worker_layout_is_moved_and_restored(saved_state, tmp_path):
    daemon = Daemon(tmp_path, workers=1)
    state = os.path.join(daemon.dir, "state")
    shutil.copytree(saved_state, state)
    for name in glob.glob(os.path.join(state, "baselines", "vocabulary.jsonl*")):
        os.unlink(name)   # the per-worker layout's releases had no deployment vocabulary
    for kind in ("baselines", "statistics"):
        os.makedirs(os.path.join(state, "workers", "0"), exist_ok=True)
        os.rename(os.path.join(state, kind, "worker-0"), os.path.join(state, "workers", "0", kind))
        os.rmdir(os.path.join(state, kind))
    try:
        _timed_start(daemon)
        text = _log_text(daemon)
        assert "state layout: moved 2 items" in text and "models restored" in text
        assert not os.path.exists(os.path.join(state, "workers"))
        assert os.path.exists(os.path.join(state, "baselines", "worker-0", "templates.json"))
        assert os.path.exists(os.path.join(state, "statistics", "worker-0", "detection.json"))
        assert sum(daemon.labelled("state_load_failures_total").values()) == 0
        assert daemon.stop() == 0
    finally:
        daemon.kill()
