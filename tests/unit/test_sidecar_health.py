"""Readings.health and the per-process metrics over a real control block and real rings in shared memory.

The clock is injected, so the time bounds (health_down_seconds, heartbeat_timeout_seconds) are
exercised without sleeping.
"""
import os
import uuid

import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, segment_names
from anomaly_detector.metrics.exposition import render
from anomaly_detector.metrics.sidecar import Readings
from anomaly_detector.supervisor.states import ProcessState

PROCESSES = [("input", "input", 0), ("sidecar", "sidecar", 1), ("worker-0", "worker", 2), ("worker-1", "worker", 3)]
def _config():
    """The built-in defaults with the limits these tests judge against."""
    cfg = default_config()
    cfg["processing"].update(max_memory_mb=1048576, heartbeat_timeout_seconds=30.0, max_spool_mb=1024)
    cfg["service"].update(health_down_seconds=10.0, snapshot_interval_seconds=60.0)
    cfg["http"]["stall_seconds"] = 30.0
    cfg["detection"].update(warmup_lines=0, warmup_seconds=0.0)
    cfg["inputs"] = {}
    return cfg


CFG = _config()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def beat_all(control, clock):
    """Every process beats at clock.now (as they do each second or batch): only the ring is judged."""
    for _name, _role, slot in PROCESSES:
        control.beat(slot, now=clock.now)


@pytest.fixture
def shared(tmp_path):
    CFG["paths"] = {"state_dir": str(tmp_path)}
    instance = "t" + uuid.uuid4().hex[:12]
    with SharedArena(instance) as arena:
        control = ControlBlock.create(arena.allocate("control", control_bytes(4, 3)).buf, 4, 3)
        rings = [Ring.create(arena.allocate("ring%d" % i, ring_bytes(64, 65536)).buf, 64, 65536) for i in (0, 1)]
        for _name, _role, slot in PROCESSES:
            control.record_child(slot, os.getpid(), ProcessState.RUNNING, started=1000.0, restarts=0)
        yield control, rings
    assert segment_names(instance_prefix(instance)) == []


def readings(control, rings, clock):
    return Readings(CFG, control, rings, PROCESSES, os.getpid(), clock=clock)


def test_all_running_and_rings_empty_is_healthy_and_lists_every_process(shared):
    control, rings = shared
    body = readings(control, rings, Clock()).health()
    assert body["status"] == "healthy" and body["reasons"] == []
    assert sorted(body["processes"]) == ["input", "sidecar", "worker-0", "worker-1"]
    assert body["processes"]["input"] == {"role": "input", "state": "RUNNING", "pid": os.getpid(), "restarts": 0}


def test_fatal_input_is_unhealthy_at_once_and_named(shared):
    control, rings = shared
    control.record_exit(0, -9, ProcessState.FATAL)
    body = readings(control, rings, Clock()).health()
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["input FATAL: crash loop (last exit -9), not restarted; the supervisor exits after "
                               "fatal_exit_seconds"]


def test_a_role_the_sidecar_does_not_know_by_name_is_judged_too(shared):
    control, rings = shared
    processes = PROCESSES[:2] + [("alerter", "alerter", 3)]
    control.record_exit(3, 70, ProcessState.FATAL)
    body = Readings(CFG, control, rings, processes, os.getpid(), clock=Clock()).health()
    assert body["reasons"][0].startswith("alerter FATAL")


def test_backoff_is_unhealthy_only_after_health_down_seconds(shared):
    control, rings = shared
    clock = Clock()
    reading = readings(control, rings, clock)
    control.record_exit(3, -9, ProcessState.BACKOFF)
    assert reading.health()["status"] == "healthy"          # a quick restart is not an outage
    clock.now += 9.5
    reading.sample()
    assert reading.health()["status"] == "healthy"
    clock.now += 1.0
    assert reading.health()["reasons"] == ["worker-1 down (BACKOFF) for 10 s"]
    control.record_child(3, os.getpid(), ProcessState.STARTING, started=clock.now, restarts=1)
    assert reading.health()["status"] == "healthy"
    control.record_exit(3, -9, ProcessState.BACKOFF)          # down again: the bound starts over
    assert reading.health()["status"] == "healthy"


def test_the_sidecar_down_in_the_table_is_no_reason_as_it_answers(shared):
    control, rings = shared
    clock = Clock()
    reading = readings(control, rings, clock)
    control.record_exit(1, -9, ProcessState.BACKOFF)
    clock.now += 60
    beat_all(control, clock)
    body = reading.health()
    assert body["status"] == "healthy" and body["processes"]["sidecar"]["state"] == "BACKOFF"


def test_one_stalled_ring_is_named_while_the_other_progresses(shared):
    control, rings = shared
    clock = Clock()
    reading = readings(control, rings, clock)
    writers = [ring.writer() for ring in rings]
    reader1 = rings[1].reader()
    reading.sample()
    for step in range(31):
        writers[0].push_batch([b"held %d" % step])            # ring 0: nobody acknowledges
        writers[1].push_batch([b"moving %d" % step])
        reader1.pop_batch(10)
        reader1.ack()
        writers[1].push_batch([b"waiting %d" % step])         # ring 1 is never empty, but it moves
        clock.now += 1.0
        beat_all(control, clock)
        reading.sample()
    body = reading.health()
    assert body["reasons"] == ["worker 0 stalled: 31 lines waiting, none acknowledged for 31 s"]


def test_an_idle_ring_restarts_the_stall_clock(shared):
    control, rings = shared
    clock = Clock()
    reading = readings(control, rings, clock)
    reading.sample()
    clock.now += 300                                          # idle for five minutes
    beat_all(control, clock)
    reading.sample()                                          # (the reader thread samples every second)
    rings[0].writer().push_batch([b"just arrived"])
    assert reading.health()["status"] == "healthy"
    clock.now += 29
    beat_all(control, clock)
    assert reading.health()["status"] == "healthy"
    clock.now += 2
    beat_all(control, clock)
    assert reading.health()["reasons"] == ["worker 0 stalled: 1 lines waiting, none acknowledged for 31 s"]


def test_process_metrics_render_per_role_and_process(shared):
    control, rings = shared
    control.record_exit(0, -9, ProcessState.FATAL)
    control.record_child(2, os.getpid(), ProcessState.RUNNING, restarts=3)
    text = render(readings(control, rings, Clock()).samples())
    assert 'anomaly_detector_process_up{process="input",role="input"} 0' in text
    assert 'anomaly_detector_process_up{process="worker-0",role="worker"} 1' in text
    assert 'anomaly_detector_process_state{process="input",role="input"} 200' in text
    assert 'anomaly_detector_process_restarts_total{process="worker-0",role="worker"} 3' in text
    assert "# TYPE anomaly_detector_process_restarts_total counter" in text


def test_a_failing_health_check_answers_503_with_the_error(shared):
    """The /health handler over a Readings whose shared memory is gone: 503 with the error, not a reset."""
    import json
    import threading
    import urllib.error
    import urllib.request

    from anomaly_detector.metrics.httpd import SidecarHTTPServer

    control, rings = shared
    reading = readings(control, rings, Clock())
    reading.rings = reading.rules.rings = [None]              # a ring view that cannot be read
    server = SidecarHTTPServer("127.0.0.1", 0, reading)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen("http://127.0.0.1:%d/health" % server.port, timeout=5)
        body = json.loads(err.value.read())
    finally:
        server.shutdown()
        server.server_close()
    assert err.value.code == 503
    assert body["status"] == "unhealthy" and body["reasons"][0].startswith("health check failed: AttributeError")
