"""The runbook's backup: `tar` of baselines/ and statistics/ at the top of a RUNNING daemon's state_dir
(it snapshots every second meanwhile). Every archive restores to a state each worker loads whole: no
file set aside, nothing half-written, because every state file is replaced by a rename and keeps its
older generations beside it."""
import os
import subprocess
import time

from anomaly_detector.config.loader import default_config
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.storage.health import STATE_HEALTH
from anomaly_detector.storage.layout import worker_paths
from tests.integration.daemon_harness import Daemon, numbered_line

BACKUPS = 12


def test_a_live_tar_of_baselines_and_statistics_restores_to_whole_models(tmp_path):
    daemon = Daemon(tmp_path / "daemon", workers=2)
    with open(daemon.config) as f:
        text = f.read()
    with open(daemon.config, "w") as f:
        f.write(text.replace("snapshot_interval_seconds = 5", "snapshot_interval_seconds = 1"))
    state = os.path.join(daemon.dir, "state")
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "app.log"), "a") as f:
            f.write("".join(numbered_line(i) for i in range(20000)))
        assert len(daemon.wait_scored(20000, 180)) == 20000, daemon.log_tail()
        deadline = time.monotonic() + 30       # an established daemon: every file has older generations
        while time.monotonic() < deadline and not all(
                os.path.exists(worker_paths(state, w).templates + ".prev2") for w in (0, 1)):
            time.sleep(0.2)
        archives = []
        for k in range(BACKUPS):       # while the workers rewrite their snapshots every second
            archive = str(tmp_path / ("backup-%d.tgz" % k))
            done = subprocess.run(["tar", "-czf", archive, "-C", state, "baselines", "statistics"],
                                  capture_output=True)
            assert done.returncode in (0, 1), done.stderr   # 1: a file changed or went while it was read
            archives.append(archive)
            time.sleep(0.27)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    failures = dict(STATE_HEALTH.load_failures)
    for k, archive in enumerate(archives):
        restored = tmp_path / ("restored-%d" % k)
        restored.mkdir()
        subprocess.run(["tar", "-xzf", archive, "-C", str(restored)], check=True)
        for worker in (0, 1):
            assert Pipeline(default_config()).load(worker_paths(str(restored), worker)), (archive, worker)
        assert not [name for _d, _s, names in os.walk(restored) for name in names if ".bad-" in name], archive
    assert STATE_HEALTH.load_failures == failures      # nothing set aside: every newest file was whole
