"""Latency on a live daemon: a file created after start is found by its directory's change (not the
glob's hourly rescan here), small batches are cut by batch_deadline_seconds, and every scored line's
read-to-written time reaches processing_duration_seconds (count, sum, p50/p95/p99)."""
import math
import os
import time

import pytest

from tests.integration.daemon_harness import Daemon, numbered_line

LINES = 300


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, batch_size=500, inputs="[[app]]\ntype = file\npath = %s/app.log*\nstart_at = beginning\n"
               "scan_interval_seconds = 3600\n" % os.path.join(str(tmp_path), "logs"))
    yield d
    d.kill()


def test_new_file_found_on_change_and_latency_exported(daemon):
    daemon.start()
    assert daemon.metric("processing_duration_seconds_count") == 0
    with open(os.path.join(daemon.logs, "app.log"), "w") as f:
        for burst in range(3):
            f.writelines(numbered_line(i) for i in range(burst * 100, burst * 100 + 100))
            f.flush()
            time.sleep(0.3)
    counts = daemon.wait_scored(LINES, 120)
    assert sorted(counts) == list(range(LINES)), "found without a glob rescan: its directory changed"
    assert daemon.metric("files_rescans_on_change_total") >= 1
    # 100 lines a burst, batch_size 500: every batch was started by the deadline, none by a full batch
    assert daemon.metric("batch_deadline_hits_total") >= 1
    deadline = time.monotonic() + 10
    while daemon.metric("processing_duration_seconds_count") < LINES and time.monotonic() < deadline:
        time.sleep(0.2)     # the verdicts are written before the counters move
    assert daemon.metric("processing_duration_seconds_count") == LINES
    total = daemon.metric("processing_duration_seconds_sum")
    quantiles = {dict(labels)["quantile"]: value for labels, value in daemon.labelled("processing_duration_seconds").items()}
    assert set(quantiles) == {"0.5", "0.95", "0.99"}
    # generous bounds (a loaded machine): what matters is that real, finite, ordered figures are exported
    assert all(math.isfinite(v) and 0 < v < 30 for v in quantiles.values()), quantiles
    assert quantiles["0.5"] <= quantiles["0.95"] <= quantiles["0.99"]
    assert 0 < total < 30 * LINES
    assert daemon.stop() == 0
