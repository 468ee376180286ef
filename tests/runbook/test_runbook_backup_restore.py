"""The runbook's health check, backup and recovery, run as bin/ scripts against a live daemon.

The recovery case of issue 15: a backup taken while the daemon runs, the daemon going on (and
stopping) later, the backup restored, the daemon started and fed normal lines. The restored models
and checkpoints are of the backup's time, so the daemon first reads again the lines logged since
then, and then comes the time it was down, with no line: neither may raise an incident (it did: a
'silent' source at score 100). Lines are stamped near the wall clock, as a live service's are.
"""
import os
import tarfile
import time

import numpy as np

from tests.runbook.runbook_env import Installed

# Hours of lines written at once wait in the rings for a second or so: not the latency problem the
# health check's default limits (p95 1 s, p99 5 s) are for.
BULK_WRITES = {"P95_WARN_SECONDS": "30", "P99_WARN_SECONDS": "30"}


def test_backup_while_running_then_restore_starts_quiet_and_healthy(tmp_path):
    site = Installed(tmp_path)
    rng = np.random.default_rng(15)
    now = time.time() // 60 * 60
    try:
        site.daemon.start()
        site.write(rng, now - 4 * 3600, now - 3600)          # three hours of history: warm models
        site.wait_processed(site.lines_written)
        site.daemon.wait_snapshot(time.time())               # a snapshot of the models at this point

        check = site.run("anomaly-detector-health-check", SAMPLE_SECONDS="2", **BULK_WRITES)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "ok:   /health: healthy" in check.stdout and "error rate 0.00%" in check.stdout, check.stdout
        assert "supervisor running, pid %d" % site.supervisor_pid() in check.stdout

        backup_dir = os.path.join(site.root, "backups", "daily", "b1")
        backup = site.run("anomaly-detector-backup", backup_dir)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        assert "no model file written during the copy" in backup.stdout, backup.stdout
        with tarfile.open(os.path.join(backup_dir, "state.tar.gz")) as tar:
            names = tar.getnames()
        for wanted in ("./baselines/worker-0/detection.json", "./baselines/worker-1/templates.json",
                       "./statistics/worker-1/detection.json"):
            assert wanted in names, names
        assert any(n.startswith("./checkpoints/") for n in names), names

        backlog = site.lines_written
        site.write(rng, now - 3600, now - 600)               # the daemon runs on after the backup
        site.wait_processed(site.lines_written)
        backlog = site.lines_written - backlog
        assert site.incidents() == [] and site.open_incidents() == [], "normal traffic raised incidents"

        # Ten minutes and more without a line (the daemon down, a restore), then the restore itself.
        restore = site.run("anomaly-detector-restore", backup_dir)
        assert restore.returncode == 0, restore.stdout + restore.stderr + site.daemon.log_tail()
        assert "recovery completed" in restore.stdout
        assert [n for n in os.listdir(site.root + "/var") if n.startswith("state.before-restore-")]

        started = time.time()
        before = len(site.incidents())
        new = site.lines_written
        site.write(rng, started, started + 1800)             # normal lines again, stamped from now on
        new = site.lines_written - new
        site.wait_processed(backlog + new)                   # the backlog since the backup, read again, and the new
        time.sleep(3)
        assert site.incidents()[before:] == [] and site.open_incidents() == [], (
            [(i["kind"], i["score"], i["reason"]) for i in site.incidents()[before:]], site.open_incidents())

        check = site.run("anomaly-detector-health-check", SAMPLE_SECONDS="2", **BULK_WRITES)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        site.stop()
