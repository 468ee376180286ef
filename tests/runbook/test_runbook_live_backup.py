"""bin/anomaly-detector-backup while a daemon scores lines without pause and every worker snapshots its
models every 3 s: each backup succeeds, and in each archive every worker's three model files are of one
snapshot (written within a moment of each other, not a snapshot apart) and load whole."""
import os
import subprocess
import threading
import time

import numpy as np

from anomaly_detector.config.loader import default_config
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.storage.health import STATE_HEALTH
from anomaly_detector.storage.layout import worker_paths
from tests.runbook.runbook_env import Installed

SNAPSHOT_SECONDS = 3
BACKUPS = 4


def test_backups_of_a_busy_daemon_hold_one_snapshot_per_worker(tmp_path):
    site = Installed(tmp_path)
    with open(site.config) as f:
        text = f.read()
    with open(site.config, "w") as f:
        f.write(text.replace("snapshot_interval_seconds = 5", "snapshot_interval_seconds = %d" % SNAPSHOT_SECONDS))
    rng = np.random.default_rng(3)
    stop = threading.Event()

    def keep_writing():
        t = time.time() - 3600
        while not stop.is_set():
            site.write(rng, t, t + 20, rate=5.0)
            t += 20
            time.sleep(0.2)

    writer = threading.Thread(target=keep_writing)
    archives = []
    try:
        site.daemon.start()
        writer.start()
        deadline = time.monotonic() + 60          # established: older generations beside every file
        while time.monotonic() < deadline and not all(
                os.path.exists(worker_paths(site.state, w).templates + ".prev2") for w in (0, 1)):
            time.sleep(0.5)
        for k in range(BACKUPS):
            target = os.path.join(site.root, "backups", "b%d" % k)
            done = site.run("anomaly-detector-backup", target)
            assert done.returncode == 0, done.stdout + done.stderr
            archives.append(os.path.join(target, "state.tar.gz"))
        assert site.daemon.metric("logs_processed_total") > 0
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        site.stop()
    failures = dict(STATE_HEALTH.load_failures)
    for k, archive in enumerate(archives):
        restored = tmp_path / ("restored-%d" % k)
        restored.mkdir()
        subprocess.run(["tar", "-xzf", archive, "-C", str(restored)], check=True)
        for worker in (0, 1):
            paths = worker_paths(str(restored), worker)
            stamps = [os.stat(p).st_mtime for p in (paths.detection_baselines, paths.detection_statistics,
                                                    paths.templates)]
            assert max(stamps) - min(stamps) < SNAPSHOT_SECONDS - 1, (archive, worker, stamps)
            assert Pipeline(default_config()).load(paths), (archive, worker)
        assert not [n for _d, _s, names in os.walk(restored) for n in names if ".bad-" in n], archive
    assert STATE_HEALTH.load_failures == failures
