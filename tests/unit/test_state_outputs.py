"""A real DetectorWorker whose outputs cannot be written: the batch is not acknowledged, the write is
retried with a pause that doubles up to [outputs] write_retry_max_seconds, incidents and dead-letter
records are held with it, and once the files can be written every line arrives exactly once."""
import json
import os
import uuid

import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena
from anomaly_detector.worker import detector
from anomaly_detector.worker.detector import DetectorWorker


@pytest.fixture
def shared():
    with SharedArena("o" + uuid.uuid4().hex[:12]) as arena:
        control = ControlBlock.create(arena.allocate("control", control_bytes(2, 2)).buf, 2, 2, batch_size=100)
        ring = Ring.create(arena.allocate("ring0", ring_bytes(4096, 1 << 20)).buf, 4096, 1 << 20, 65536)
        yield control, ring


def _config(tmp_path, extra=""):
    from anomaly_detector.config.loader import load_config
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s\nlog_dir = %s\n[outputs]\nscored_lines = %s\n%s"
                    "[inputs]\n[[app]]\ntype = file\npath = %s\nformat = plain\n"
                    % (tmp_path / "state", tmp_path / "log", tmp_path / "scored.jsonl", extra, tmp_path / "app.log"))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, problems
    return cfg


def _lines(n, poison_at=()):
    return [(b"POISON line %d" % i) if i in poison_at else (b"user %d logged in from host-%d" % (i, i % 7))
            for i in range(n)]


def test_retries_back_off_doubling_up_to_the_bound(shared, tmp_path, monkeypatch):
    control, ring = shared
    cfg = _config(tmp_path, "write_retry_max_seconds = 3\n")
    os.mkdir(tmp_path / "scored.jsonl")          # opening the scored-lines file fails (EISDIR)
    clock = [1000.0]
    monkeypatch.setattr(detector.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(detector.time, "sleep", lambda seconds: clock.__setitem__(0, clock[0] + seconds))
    ring.writer().push_batch(_lines(100))
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    assert worker.step(100)
    pauses = []
    for _ in range(4):
        began = clock[0]
        while not worker._batch_due(100):      # the loop beats meanwhile; the batch waits its pause
            pass
        pauses.append(clock[0] - began)
        assert worker.step(100)
    assert pauses == [1.0, 2.0, 3.0, 3.0]
    assert control.counter_totals()["output_errors"] == 5 and ring.depth() == 100
    os.rmdir(tmp_path / "scored.jsonl")
    clock[0] += 3.0
    assert worker._batch_due(100) and worker.step(100)
    assert ring.depth() == 0 and control.counter_totals()["lines_processed"] == 100
    assert worker._retry_delay == detector.OUTPUT_RETRY_SECONDS   # the next failure starts at 1 s again


def test_a_dead_letter_record_that_cannot_be_written_holds_its_batch(shared, tmp_path, monkeypatch):
    """Before: a failed dead-letter write was logged and the batch acknowledged: the line was gone."""
    control, ring = shared
    cfg = _config(tmp_path)
    monkeypatch.setattr(detector, "OUTPUT_RETRY_SECONDS", 0.0)
    dead_dir = tmp_path / "state" / "dead-letter"
    os.makedirs(dead_dir / "dead-letter.jsonl")   # a directory where the file should be
    ring.writer().push_batch(_lines(50, poison_at={20}))
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_LINE", "POISON")
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_ACTION", "raise")
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    assert worker.step(100)
    assert ring.depth() == 50 and control.counter_totals()["output_errors"] == 1
    assert not (tmp_path / "scored.jsonl").exists()     # nothing of the batch written before the dead letter
    os.rmdir(dead_dir / "dead-letter.jsonl")
    assert worker.step(100)
    assert ring.depth() == 0
    [dead] = [json.loads(line) for line in (dead_dir / "dead-letter.jsonl").read_text().splitlines()]
    assert dead["line"] == "POISON line 20"
    assert len((tmp_path / "scored.jsonl").read_text().splitlines()) == 49
    totals = control.counter_totals()
    assert totals["lines_processed"] == 49 and totals["lines_dead_lettered"] == 1


def test_closed_incidents_that_cannot_be_written_hold_their_batch_and_are_written_once(shared, tmp_path, monkeypatch):
    """Before: a failed incidents write was logged and the batch acknowledged: the incident was lost."""
    control, ring = shared
    cfg = _config(tmp_path, "incidents = %s\n" % (tmp_path / "incidents.jsonl"))
    monkeypatch.setattr(detector, "OUTPUT_RETRY_SECONDS", 0.0)
    os.mkdir(tmp_path / "incidents.jsonl")
    ring.writer().push_batch(_lines(100))
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    closed = {"id": "inc-1", "source": "app", "reason": "volume spike"}
    real = worker.pipeline.take_incidents
    monkeypatch.setattr(worker.pipeline, "take_incidents", lambda: real() + [closed])   # one closes in this batch
    assert worker.step(100) and worker.step(100)
    assert ring.depth() == 100 and control.counter_totals()["output_errors"] == 2
    assert len((tmp_path / "scored.jsonl").read_text().splitlines()) == 100   # written once, not again
    os.rmdir(tmp_path / "incidents.jsonl")
    assert worker.step(100)
    assert ring.depth() == 0
    assert [json.loads(line) for line in (tmp_path / "incidents.jsonl").read_text().splitlines()] == [closed]
    assert len((tmp_path / "scored.jsonl").read_text().splitlines()) == 100
