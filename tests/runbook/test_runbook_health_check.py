"""bin/anomaly-detector-health-check fails on a real stall: the only worker stopped (SIGSTOP) while lines
wait in its ring, and /health answering 503; it passes again once the worker goes on (SIGCONT)."""
import os
import signal
import time

import numpy as np

from tests.runbook.runbook_env import Installed

BULK_WRITES = {"P95_WARN_SECONDS": "60", "P99_WARN_SECONDS": "60"}


def test_the_health_check_fails_on_a_stopped_worker_and_passes_when_it_goes_on(tmp_path):
    site = Installed(tmp_path, http="stall_seconds = 2", workers=1)
    rng = np.random.default_rng(5)
    now = time.time()
    try:
        site.daemon.start()
        site.write(rng, now - 1800, now - 900)
        site.wait_processed(site.lines_written)
        worker = site.daemon.children()["ad-worker-0"]
        os.kill(worker, signal.SIGSTOP)
        try:
            site.write(rng, now - 900, now)
            deadline = time.monotonic() + 30         # [http] stall_seconds = 2: /health says so soon
            while time.monotonic() < deadline and site.daemon.get("/health")[0] != 503:
                time.sleep(0.5)
            check = site.run("anomaly-detector-health-check", SAMPLE_SECONDS="4", **BULK_WRITES)
        finally:
            os.kill(worker, signal.SIGCONT)
        assert check.returncode == 1, check.stdout
        assert "FAIL: /health answered 503" in check.stdout and "stalled" in check.stdout, check.stdout
        assert "FAIL: processing stalled: no line scored in 4 s while" in check.stdout, check.stdout

        site.wait_processed(site.lines_written)
        site.daemon.wait_healthy(60)
        check = site.run("anomaly-detector-health-check", SAMPLE_SECONDS="2", **BULK_WRITES)
        assert check.returncode == 0, check.stdout
    finally:
        site.stop()
