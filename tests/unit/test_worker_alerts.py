"""A real DetectorWorker with an [alerting] sink: a FATAL burst opens an incident in the outbox; a stop
keeps it open for the next worker (same id, no resolve); a worker retired by a reload closes it."""
import json
import uuid

import pytest

from anomaly_detector.alerting.outbox import OutboxReader
from anomaly_detector.config.loader import load_config
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena
from anomaly_detector.worker.detector import DetectorWorker


@pytest.fixture
def shared():
    instance = "a" + uuid.uuid4().hex[:12]
    with SharedArena(instance) as arena:
        control = ControlBlock.create(arena.allocate("control", control_bytes(2, 2)).buf, 2, 2, batch_size=500,
                                      workers_wanted=2)
        ring = Ring.create(arena.allocate("ring0", ring_bytes(4096, 1 << 20)).buf, 4096, 1 << 20, 65536)
        yield control, ring


def config(tmp_path):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s\nlog_dir = %s\n[processing]\nworkers = 2\n"
                    "[inputs]\n[[app]]\ntype = file\npath = %s\nformat = plain\n"
                    "[detection]\nincident_window_seconds = 30\n"
                    "[alerting]\n[[archive]]\ntype = file\npath = %s\n"
                    % (tmp_path / "state", tmp_path / "log", tmp_path / "app.log", tmp_path / "alerts.jsonl"))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, problems
    return cfg


def lines(start, n, fatal=()):
    return [b"2026-03-02T10:%02d:%02d.000Z %s worker-%d took %d ms" % (
        (start + i) // 60 % 60, (start + i) % 60, b"FATAL" if i in fatal else b"INFO", i % 3, 20 + i % 7)
        for i in range(n)]


def run(worker, ring, batch):
    ring.writer().push_batch(batch)
    while worker.step(500):
        pass


def events(tmp_path):
    return [(e["event"], e["incident_id"], e["id"])
            for e in OutboxReader(str(tmp_path / "state" / "outbox")).poll()]


def test_an_open_incident_survives_a_stop_and_a_retired_worker_resolves_it(shared, tmp_path):
    control, ring = shared
    cfg = config(tmp_path)
    worker = DetectorWorker(cfg, 1, ring, control, 1)
    run(worker, ring, lines(0, 300) + lines(300, 8, fatal=range(6)))
    (opened,) = events(tmp_path)
    assert opened[0] == "opened" and opened[2] == opened[1] + "-0"
    assert control.counter_totals()["alerts_generated"] == 1
    worker.finish()                                      # a stop: workers_wanted is still 2
    assert events(tmp_path) == [opened]
    successor = DetectorWorker(cfg, 1, ring, control, 1)
    assert [inc.id for inc in successor.pipeline.engine.book.open.values()] == [opened[1]]
    assert events(tmp_path) == [opened]                  # nothing resolved at start either
    control.set_flags(workers_wanted=1)                  # a reload retires worker 1
    successor.finish()
    got = events(tmp_path)
    assert got[-1] == ("resolved", opened[1], opened[1] + "-1") and len(got) == 2
    record = json.loads(open(tmp_path / "state" / "outbox" / sorted(
        p.name for p in (tmp_path / "state" / "outbox").glob("worker-1.*"))[-1]).read().splitlines()[-1])
    assert record["incident"]["source"] == "app" and record["writer"] == "worker-1"
