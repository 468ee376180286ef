"""The input process gives each file a ring of its own choosing: the least loaded when the file is new,
the same one for the file's whole life, and the same one again after a restart (kept in its checkpoint)."""
import collections
import time

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer
from anomaly_detector.inputs.runner import InputRunner
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes


def _runner(reader, rings):
    runner = InputRunner.__new__(InputRunner)
    runner.rings, runner.writers = rings, [ring.writer() for ring in rings]
    runner.control = ControlBlock.create(bytearray(control_bytes(1, 1)), 1, 1)
    runner.counters = runner.control.counters(0)
    runner._was_paused = False
    runner.readers, runner.drop_when_full = [reader], False
    runner.backlog, runner.uncommitted = [collections.deque()], [collections.deque()]
    runner.inflight = [collections.deque() for _ in rings]
    runner._next_ring, runner._origin_rings, runner._stream_rings = [0], {}, {}
    runner._ring_load, runner._load_decayed = [0.0] * len(rings), time.monotonic()
    return runner


def _rings(n):
    return [Ring.create(bytearray(ring_bytes(4096, 1 << 20)), 4096, 1 << 20) for _ in range(n)]


def _lines_by_ring(rings):
    out = []
    for ring in rings:
        buf, starts, ends, _ = ring.reader().pop_batch(10000)
        out.append([bytes(buf[s:e]) for s, e in zip(starts, ends)])
    return out


def _write(path, tag, n):
    with open(path, "ab") as f:
        f.writelines(b"%s line %d\n" % (tag, i) for i in range(n))


def test_files_spread_over_rings_and_keep_theirs_across_a_restart(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    names = ["a", "b", "c", "d"]
    for name in names:
        _write(logs / ("%s.log" % name), name.encode(), 100)
    store_path = str(tmp_path / "checkpoints.json")
    tailer = FileTailer(str(logs / "*.log"), CheckpointStore(store_path), start_at="beginning")
    rings = _rings(2)
    runner = _runner(tailer, rings)
    runner.pump()
    first = _lines_by_ring(rings)
    assert [len(lines) for lines in first] == [200, 200], "four files alike: two on each ring"
    ring_of = {name: next(r for r in (0, 1) if any(line.startswith(name.encode()) for line in first[r]))
               for name in names}
    for name in names:    # one file, one ring, in order
        assert [line for line in first[ring_of[name]] if line.startswith(name.encode())] == \
            [b"%s line %d" % (name.encode(), i) for i in range(100)]
    tailer.close()

    # a restart: a new tailer and runner on the same checkpoints; "a" now writes far more than the others,
    # yet every file keeps the ring its worker learned it on
    for name in names:
        _write(logs / ("%s.log" % name), name.encode(), 1000 if name == "a" else 10)
    tailer = FileTailer(str(logs / "*.log"), CheckpointStore(store_path), start_at="beginning")
    rings = _rings(2)
    runner = _runner(tailer, rings)
    runner.pump()
    second = _lines_by_ring(rings)
    for name in names:
        assert all(line.startswith(name.encode()) is False for line in second[1 - ring_of[name]]), name
    assert sum(map(len, second)) == 400 + 1030   # nothing was acknowledged: the first lines are read again
    tailer.close()


def test_a_new_file_goes_to_the_ring_that_received_the_fewest_lines(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    _write(logs / "busy.log", b"busy", 500)
    tailer = FileTailer(str(logs / "*.log"), CheckpointStore(str(tmp_path / "cp.json")), start_at="beginning",
                        poll_interval=0.0)
    rings = _rings(3)
    runner = _runner(tailer, rings)
    runner.pump()
    _write(logs / "quiet1.log", b"quiet1", 5)
    runner.pump()
    _write(logs / "quiet2.log", b"quiet2", 5)
    runner.pump()
    sizes = [len(lines) for lines in _lines_by_ring(rings)]
    assert sorted(sizes) == [5, 5, 500], sizes
    tailer.close()
