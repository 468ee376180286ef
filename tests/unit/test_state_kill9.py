"""kill -9 at random points of snapshot writes: after every kill a load gives a valid state.

A child process writes snapshots of a growing state in a loop (sizes vary, so the kill lands in the
write, the fsync or between the renames); the parent kills it with SIGKILL after a random delay and
loads the file as the daemon does at start. Every load must return a state whose checksum holds and
which is no older than the generation before the last one the child reported done; no file may be set
aside (an atomic write never leaves a damaged target) and no temporary may outlive the sweep.
The default runs 50 kills; the @slow variant the 1,000 of the reliability catalogue."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from anomaly_detector.storage.atomic import read_json_snapshot, sweep_orphan_temps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WRITER = r"""
import os, sys
from anomaly_detector.storage.atomic import write_json_snapshot
path, start = sys.argv[1], int(sys.argv[2])
n = start
while True:
    n += 1
    write_json_snapshot(path, "baselines", 1, {"n": n, "pad": "x" * (n * 7919 % 300000)})
    os.write(1, b"%d\n" % n)
"""


def _kill_cycle(path, start, rng):
    """Start a writer from generation `start`, let it write for a random time, SIGKILL it; returns the
    last generation it reported fully written (start when none)."""
    child = subprocess.Popen([sys.executable, "-c", WRITER, path, str(start)], cwd=ROOT, stdout=subprocess.PIPE,
                             env=dict(os.environ, PYTHONPATH=ROOT))
    first = child.stdout.readline()          # at least one write done: the kill lands in a later one
    assert first, "the writer exited"
    time.sleep(rng.uniform(0, 0.05))
    child.send_signal(signal.SIGKILL)
    out = first + child.stdout.read()
    child.wait()
    child.stdout.close()
    return int(out.split()[-1])


def _run(tmp_path, kills, seed):
    rng = random.Random(seed)
    path = str(tmp_path / "detection.json")
    loaded = interrupted = 0
    for k in range(kills):
        done = _kill_cycle(path, loaded, rng)
        # The writer is dead: its temporary is an orphan (one left means the kill cut a write short).
        interrupted += sweep_orphan_temps(path, min_age_seconds=0) + (not os.path.exists(path))
        got = read_json_snapshot(path, "baselines", 1)
        assert got is not None, "kill %d: nothing loadable" % k
        n = got[1]["n"]
        # The kill may land between the two renames: then the previous generation is what loads.
        assert done - 1 <= n <= done + 1, "kill %d: loaded generation %d, the writer reported %d" % (k, n, done)
        assert len(got[1]["pad"]) == n * 7919 % 300000
        loaded = n
    print("kills inside a write: %d of %d" % (interrupted, kills))
    assert interrupted >= kills // 10, "only %d of %d kills landed inside a write" % (interrupted, kills)
    assert not [name for name in os.listdir(tmp_path) if ".bad-" in name]
    assert sorted(os.listdir(tmp_path)) in (["detection.json", "detection.json.prev"], ["detection.json.prev"])


def test_fifty_kills_during_snapshot_writes_each_leave_a_loadable_state(tmp_path):
    _run(tmp_path, 50, seed=15)


@pytest.mark.slow
def test_a_thousand_kills_during_snapshot_writes_each_leave_a_loadable_state(tmp_path):
    _run(tmp_path, 1000, seed=1000)
