"""Poison-line isolation: the scoring record in the control block, the splitting plan, the dead-letter
record, and a real DetectorWorker whose predecessor died (forked, os.abort) on a batch."""
import base64
import faulthandler
import json
import os
import signal
import time
import uuid

import numpy as np
import pytest

from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena
from anomaly_detector.supervisor.states import ProcessState
from anomaly_detector.worker import poison
from anomaly_detector.worker.detector import DetectorWorker
from anomaly_detector.worker.faults import FaultInjector, InjectedFault
from anomaly_detector.worker.poison import Death, SuspectRange, death_reason, inherited_death, split_size


@pytest.fixture
def shared():
    instance = "p" + uuid.uuid4().hex[:12]
    with SharedArena(instance) as arena:
        control = ControlBlock.create(arena.allocate("control", control_bytes(2, 2)).buf, 2, 2, batch_size=100)
        ring = Ring.create(arena.allocate("ring0", ring_bytes(4096, 1 << 20)).buf, 4096, 1 << 20, 65536)
        yield control, ring


def test_split_size_is_one_line_up_to_the_limit_then_sixteen_pieces():
    assert split_size(2) == 1
    assert split_size(poison.SINGLE_LINE_LIMIT) == 1
    assert split_size(poison.SINGLE_LINE_LIMIT + 1) == 65
    assert split_size(100000) == 6250


def test_plan_scores_a_dead_range_in_pieces_then_returns_to_batches():
    suspect = SuspectRange(Death(first=10, count=5, reason="r"))
    assert [suspect.plan(seq, 100) for seq in range(10, 16)] == [(1, False)] * 5 + [(100, False)]
    big = SuspectRange(Death(first=0, count=5000, reason="r"))
    assert big.plan(0, 5000) == (313, False) and big.plan(4900, 5000) == (100, False)


def test_plan_dead_letters_a_line_a_worker_died_on_alone():
    suspect = SuspectRange(Death(first=7, count=1, reason="r"))
    assert suspect.plan(7, 100) == (1, True)
    assert suspect.plan(8, 100) == (100, False)
    assert not SuspectRange().active and SuspectRange().plan(0, 50) == (50, False)


def test_death_reasons():
    assert death_reason(-signal.SIGABRT, 40.0, 30.0) == "worker killed while scoring (hung 30 s)"
    assert death_reason(-signal.SIGKILL, 31.0, 30.0) == "worker killed while scoring (hung 30 s)"
    assert death_reason(-signal.SIGABRT, 0.5, 30.0) == "crashed: signal 6 (SIGABRT)"
    assert death_reason(-signal.SIGSEGV, 0.5, 30.0) == "crashed: signal 11 (SIGSEGV)"
    assert death_reason(70, 0.5, 30.0) == "crashed: exit status 70"


def _die_scoring(control, first, count, scoring_for=0.0):
    """Fork a child that records a range (begun scoring_for seconds ago) and aborts; the supervisor's
    bookkeeping follows."""
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()   # the abort is the point; no stack dump in the test output
        control.begin_scoring(0, first, count, now=time.monotonic() - scoring_for)
        os.abort()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    control.record_exit(0, code, ProcessState.EXITED)
    control.record_child(0, 0, ProcessState.STARTING, started=time.monotonic())
    return code


def test_a_successor_inherits_the_range_its_predecessor_died_on(shared):
    control, _ = shared
    assert _die_scoring(control, 5, 100) == -signal.SIGABRT
    death = inherited_death(control, 0, 0, tail=5, pid=os.getpid(), heartbeat_timeout=30)
    assert death == Death(5, 100, "crashed: signal 6 (SIGABRT)")
    # a range acknowledged before it could be cleared is no death
    assert inherited_death(control, 0, 0, tail=105, pid=os.getpid(), heartbeat_timeout=30) is None
    control.end_scoring(0)
    assert inherited_death(control, 0, 0, tail=5, pid=os.getpid(), heartbeat_timeout=30) is None


def test_a_worker_aborted_after_the_heartbeat_timeout_was_killed_as_hung(shared):
    control, _ = shared
    _die_scoring(control, 0, 1, scoring_for=40.0)
    death = inherited_death(control, 0, 0, tail=0, pid=os.getpid(), heartbeat_timeout=30)
    assert death == Death(0, 1, "worker killed while scoring (hung 30 s)")


def test_own_record_is_not_a_death(shared):
    control, _ = shared
    control.begin_scoring(1, 3, 4)
    assert control.scoring(1)[:2] == (3, 4)
    assert inherited_death(control, 1, 1, tail=3, pid=os.getpid(), heartbeat_timeout=30) is None


def test_dead_letter_record_keeps_the_line_whole_and_on_one_line():
    raw = b'bad \xff\xfe line\n with "quotes" and \x1b[31m'
    out = poison.dead_letter_record(raw, 1, "app", "app", 42, 1000, "crashed: signal 6 (SIGABRT)", now=0)
    assert out.count(b"\n") == 1 and out.endswith(b"\n")
    record = json.loads(out)
    assert record["time"] == "1970-01-01T00:00:00.000Z" and record["ring_seq"] == 42
    assert base64.b64decode(record["line_base64"]) == raw
    assert record["line"].startswith("bad \\xff\\xfe line\n")
    clean = json.loads(poison.dead_letter_record(b"plain text", 0, "a", "a", 1, 0, "r"))
    assert clean["line"] == "plain text" and "line_base64" not in clean


def test_fault_injector_reads_the_environment():
    assert FaultInjector.from_environment({}) is None
    injector = FaultInjector.from_environment({"ANOMALY_DETECTOR_FAULT_LINE": "BOOM",
                                               "ANOMALY_DETECTOR_FAULT_ACTION": "raise"})
    buf = np.frombuffer(b"fine lineBOOM here", np.uint8)
    injector.check(buf, np.array([0]), np.array([9]))   # the first line alone: no marker
    with pytest.raises(InjectedFault):
        injector.check(buf, np.array([0, 9]), np.array([9, 18]))
    with pytest.raises(ValueError):
        FaultInjector("x", "explode")


# -- a real worker ------------------------------------------------------------------------------------

def _worker_config(tmp_path):
    from anomaly_detector.config.loader import load_config
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s\nlog_dir = %s\n[outputs]\nscored_lines = %s\n"
                    "[inputs]\n[[app]]\ntype = file\npath = %s\nformat = plain\n"
                    % (tmp_path / "state", tmp_path / "log", tmp_path / "scored.jsonl", tmp_path / "app.log"))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, problems
    return cfg


def _lines(n, poison_at=()):
    return [(b"POISON line %d" % i) if i in poison_at else (b"user %d logged in from host-%d" % (i, i % 7))
            for i in range(n)]


def _scored(tmp_path):
    path = tmp_path / "scored.jsonl"
    return [json.loads(line)["message"] for line in path.read_text().splitlines()] if path.exists() else []


def _dead(tmp_path):
    path = tmp_path / "state" / "dead-letter" / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _drain(worker):
    while worker.step(100):
        pass


def test_an_exception_costs_the_line_not_the_batch(shared, tmp_path, monkeypatch):
    control, ring = shared
    cfg = _worker_config(tmp_path)
    ring.writer().push_batch(_lines(50, poison_at={20}))
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_LINE", "POISON")
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_ACTION", "raise")
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    _drain(worker)
    counters = control.counter_totals()
    assert counters["lines_processed"] == 49 and counters["errors"] == 1 and counters["lines_dead_lettered"] == 1
    assert len(_scored(tmp_path)) == 49
    [dead] = _dead(tmp_path)
    assert dead["line"] == "POISON line 20" and dead["reason"].startswith("exception: InjectedFault")
    assert control.scoring(0)[1] == 0


def test_a_line_that_kills_the_worker_is_isolated_after_two_deaths(shared, tmp_path, monkeypatch):
    control, ring = shared
    cfg = _worker_config(tmp_path)
    ring.writer().push_batch(_lines(300, poison_at={120}))
    monkeypatch.setenv("ANOMALY_DETECTOR_FAULT_LINE", "POISON")
    deaths = 0
    while True:
        pid = os.fork()
        if pid == 0:   # one worker generation: score until the ring is empty, or die on the poison
            faulthandler.disable()
            try:
                _drain(DetectorWorker(cfg, 0, ring, control, 0))
            finally:
                os._exit(0)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if code == 0:
            break
        assert code == -signal.SIGABRT
        deaths += 1
        assert deaths <= 2, "the poison line was not isolated after two deaths"
        control.record_exit(0, code, ProcessState.EXITED)
        control.record_child(0, 0, ProcessState.STARTING, started=time.monotonic())
    assert deaths == 2
    scored = _scored(tmp_path)
    assert sorted(scored) == sorted(line.decode() for line in _lines(300, poison_at={120}) if b"POISON" not in line)
    [dead] = _dead(tmp_path)
    assert dead["line"] == "POISON line 120" and dead["reason"] == "crashed: signal 6 (SIGABRT)"
    assert dead["input"] == "app" and dead["worker"] == 0
    assert control.counter_totals()["lines_dead_lettered"] == 1
    assert ring.depth() == 0


# -- a predecessor the supervisor stopped -------------------------------------------------------------

def _supervise_one(control, target, kill_from_outside):
    """Fork `target` as worker slot 0 under a ChildSet, then either stop it on request (SIGTERM, then
    SIGKILL past a short timeout) or SIGKILL it from outside and stop it while it backs off."""
    from anomaly_detector.supervisor.children import ChildSet, ChildSpec, RestartPolicy
    children = ChildSet(RestartPolicy(backoff_initial=60.0), control=control)
    children.add(ChildSpec("worker-0", target, slot=0))
    children.start()
    child = children.children["worker-0"]
    try:
        time.sleep(0.2)
        if kill_from_outside:
            os.kill(child.pid, signal.SIGKILL)
            while child.state != ProcessState.BACKOFF:
                children.reap()
                time.sleep(0.01)
        children.stop("worker-0", timeout=0.3)
        deadline = time.monotonic() + 10
        while child.state != ProcessState.STOPPED and time.monotonic() < deadline:
            children.reap()
            children.tick()
            time.sleep(0.01)
    finally:
        if child.pid:
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
    assert child.state == ProcessState.STOPPED
    control.record_child(0, 0, ProcessState.STARTING, started=time.monotonic())   # the successor's fork
    return child.last_exit


def _deaf():
    """A worker that does not stop within the stop timeout (a long drain)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)


def test_a_worker_killed_by_the_stop_timeout_left_no_poison_range(shared):
    """Killed mid-drain because the stop took too long: the line did not kill it, so its successor
    scores the range normally (before: split line by line, and a one-line range dead-lettered)."""
    control, _ = shared
    control.begin_scoring(0, 5, 1)   # as the draining worker did before it was killed
    assert _supervise_one(control, lambda ctx: _deaf(), kill_from_outside=False) == -signal.SIGKILL
    assert inherited_death(control, 0, 0, tail=5, pid=1, heartbeat_timeout=30) is None


def test_a_worker_killed_then_stopped_while_backing_off_is_still_a_death(shared):
    control, _ = shared
    control.begin_scoring(0, 5, 1)
    assert _supervise_one(control, lambda ctx: _deaf(), kill_from_outside=True) == -signal.SIGKILL
    death = inherited_death(control, 0, 0, tail=5, pid=1, heartbeat_timeout=30)
    assert death == Death(5, 1, "crashed: signal 9 (SIGKILL)")


# -- the drain at stop while the scored-lines file cannot be written ----------------------------------

class _Stopped:
    requested = True


def test_the_drain_at_stop_gives_up_at_the_first_unwritable_output(shared, tmp_path, monkeypatch):
    """Before: every remaining batch was retried once (a second each), so a full ring kept the worker
    past the stop timeout and it was SIGKILLed before its snapshot."""
    from anomaly_detector.worker import detector
    control, ring = shared
    cfg = _worker_config(tmp_path)
    os.mkdir(tmp_path / "scored.jsonl")          # opening the scored-lines file fails (EISDIR)
    monkeypatch.setattr(detector, "OUTPUT_RETRY_SECONDS", 0.0)
    ring.writer().push_batch(_lines(300))
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    assert worker.run(_Stopped()) == 0
    assert control.counter_totals()["output_errors"] == 1
    assert ring.depth() == 300 and control.scoring(0)[1] == 0   # unacknowledged, and no poison range
    assert os.path.isdir(tmp_path / "state" / "baselines" / "worker-0")   # the snapshot was taken


def test_a_batch_whose_output_failed_is_written_later_not_scored_again(shared, tmp_path, monkeypatch):
    """Before: each retry scored the batch again, so the models learned it once a second through an
    outage (and the lines before the failing run were written more than once)."""
    from anomaly_detector.worker import detector
    control, ring = shared
    cfg = _worker_config(tmp_path)
    os.mkdir(tmp_path / "scored.jsonl")
    monkeypatch.setattr(detector, "OUTPUT_RETRY_SECONDS", 0.0)
    scored = []
    real = detector.score_lines
    monkeypatch.setattr(detector, "score_lines", lambda *a: scored.append(len(a[4])) or real(*a))
    ring.writer().push_batch(_lines(100))
    worker = DetectorWorker(cfg, 0, ring, control, 0)
    for _ in range(3):
        assert worker.step(100)
    assert control.counter_totals()["output_errors"] == 3 and ring.depth() == 100
    os.rmdir(tmp_path / "scored.jsonl")
    assert worker.step(100)
    assert sum(scored) == 100
    assert sorted(_scored(tmp_path)) == sorted(line.decode() for line in _lines(100))
    assert ring.depth() == 0 and control.counter_totals()["lines_processed"] == 100
    assert control.scoring(0)[1] == 0


def test_a_worker_that_dies_writing_scored_lines_left_no_poison_range(shared, tmp_path):
    """The lines were scored; the write (a hung NFS mount, say) killed the worker: no line is to blame,
    so its successor scores the batch as usual (before: split line by line, a one-line batch dead-lettered)."""
    control, ring = shared
    cfg = _worker_config(tmp_path)
    ring.writer().push_batch(_lines(1))
    pid = os.fork()
    if pid == 0:
        faulthandler.disable()
        try:
            worker = DetectorWorker(cfg, 0, ring, control, 0)
            worker.scored.write = lambda data: os.abort()
            worker.step(100)
        finally:
            os._exit(0)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    assert code == -signal.SIGABRT
    control.record_exit(0, code, ProcessState.EXITED)
    control.record_child(0, 0, ProcessState.STARTING, started=time.monotonic())
    assert ring.depth() == 1
    assert inherited_death(control, 0, 0, tail=0, pid=os.getpid(), heartbeat_timeout=30) is None
