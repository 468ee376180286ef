"""The sidecar's reader thread and what it serves: one snapshot a second, immutable, served by /health
and /metrics; a stuck or failing reader is a /health reason; learning_model_health from the workers'
real snapshot files."""
import json
import threading
import time
import urllib.request

import pytest

from anomaly_detector.metrics.httpd import SidecarHTTPServer
from anomaly_detector.metrics.model_health import ModelHealth
from anomaly_detector.metrics.sidecar import STALE_SNAPSHOT_SECONDS, Snapshot, SnapshotReader
from anomaly_detector.storage.atomic import write_json_snapshot
from anomaly_detector.storage.layout import worker_paths


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class CountingReadings:
    """take() numbers its snapshots, or raises while `fail` is set; own_samples() is request-time."""

    def __init__(self, clock):
        self.clock, self.taken, self.fail = clock, 0, None

    def take(self):
        if self.fail:
            raise self.fail
        self.taken += 1
        return Snapshot(self.clock(), {"logs_processed_total": self.taken},
                        {"status": "healthy", "reasons": [], "processes": {}})

    def own_samples(self):
        return {"admin_api_enabled": 0}


def test_requests_serve_the_snapshot_without_taking_readings():
    clock = Clock()
    readings = CountingReadings(clock)
    reader = SnapshotReader(readings, clock=clock)
    reader.refresh()
    for _ in range(5):
        assert reader.samples() == {"logs_processed_total": 1, "admin_api_enabled": 0}
        assert reader.health()["status"] == "healthy"
    assert readings.taken == 1                      # five requests, one reading
    reader.refresh()
    assert reader.samples()["logs_processed_total"] == 2


def test_served_health_is_a_copy_the_snapshot_keeps_its_reasons():
    clock = Clock()
    reader = SnapshotReader(CountingReadings(clock), clock=clock)
    reader.refresh()
    reader.health()["reasons"].append("changed by a handler")
    assert reader.snapshot().health["reasons"] == []


def test_a_failing_reader_keeps_the_last_snapshot_and_turns_unhealthy_once_it_is_stale():
    clock = Clock()
    readings = CountingReadings(clock)
    reader = SnapshotReader(readings, clock=clock)
    reader.refresh()
    readings.fail = OSError("no /proc")
    clock.now += 1
    reader.refresh()
    assert reader.health()["status"] == "healthy" and reader.samples()["logs_processed_total"] == 1
    clock.now += STALE_SNAPSHOT_SECONDS + 1
    reader.refresh()
    body = reader.health()
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["sidecar readings 7 s old: its reader thread is stuck or failing: OSError('no /proc')"]
    samples = reader.samples()
    assert samples["health_status"] == 0 and samples["health_reasons"][(("reason", "readings_stale"),)] == 1
    readings.fail = None
    reader.refresh()
    assert reader.health()["status"] == "healthy"


def test_no_snapshot_yet_is_unhealthy():
    clock = Clock()
    readings = CountingReadings(clock)
    readings.fail = RuntimeError("control block unreadable")
    reader = SnapshotReader(readings, clock=clock)
    reader.refresh()
    assert reader.health()["status"] == "unhealthy" and reader.samples() == {"admin_api_enabled": 0}


def test_the_thread_takes_a_reading_every_interval_and_http_serves_it():
    readings = CountingReadings(time.monotonic)
    reader = SnapshotReader(readings, interval=0.05).start()
    server = SidecarHTTPServer("127.0.0.1", 0, reader)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while readings.taken < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % server.port, timeout=5) as resp:
            text = resp.read().decode()
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % server.port, timeout=5) as resp:
            assert json.loads(resp.read())["status"] == "healthy"
    finally:
        server.shutdown()
        server.server_close()
    assert readings.taken >= 4
    value = int(next(line for line in text.splitlines()
                     if line.startswith("anomaly_detector_logs_processed_total ")).split()[1])
    assert 1 <= value <= readings.taken


CFG = {"service": {"snapshot_interval_seconds": 5.0}, "detection": {"warmup_lines": 100, "warmup_seconds": 60.0}}


def worker_snapshot(state_dir, index, lines_seen, first_time=1000.0, now=2000.0):
    path = worker_paths(state_dir, index).detection_baselines
    write_json_snapshot(path, "detection-baselines", 1,
                        {"meta": {"lines_seen": lines_seen, "first_time": first_time, "now": now}, "t1": {}})
    return path


@pytest.fixture
def health(tmp_path):
    return ModelHealth(dict(CFG, paths={"state_dir": str(tmp_path)}), workers=2)


def test_model_health_is_1_when_the_workers_are_warm_or_idle_and_persisting(tmp_path, health):
    assert health.value() == 0                                   # no snapshot yet
    worker_snapshot(tmp_path, 0, lines_seen=500)
    assert health.value() == 0                                   # worker 1 has written none
    worker_snapshot(tmp_path, 1, lines_seen=0, first_time=None, now=None)
    assert health.value() == 1                                   # worker 1 saw no line: nothing to warm
    worker_snapshot(tmp_path, 1, lines_seen=50)
    assert health.value() == 0                                   # worker 1 in its warm-up


def test_model_health_is_0_when_a_snapshot_is_old_or_short_of_event_time(tmp_path, health):
    worker_snapshot(tmp_path, 0, lines_seen=500)
    worker_snapshot(tmp_path, 1, lines_seen=500, first_time=1000.0, now=1030.0)    # 30 s of the 60
    assert health.value() == 0
    worker_snapshot(tmp_path, 1, lines_seen=500)
    assert health.value() == 1
    assert health.value(now=time.time() + 2 * 5.0 + 31) == 0    # not written for two intervals and the slack
