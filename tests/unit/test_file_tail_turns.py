"""Turns under max_open_files, checkpoints that outlive a file's absence, and unlistable directories.

Uses the reliability harness (numbered lines, a ledger of what was scored): every test counts lost
and duplicated lines exactly.
"""
import os
import shutil

from test_file_tail_harness import Ledger, LineWriter, commit_all, drain, new_tailer

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer


def _poll_rounds(tailer, ledger, rounds):
    for _ in range(rounds):
        chunks = tailer.poll()
        ledger.score(chunks)
        commit_all(tailer, chunks)


def _all_lines(writers):
    return [(w, seq) for w in writers for seq in range(w.next_seq)]


def _scored_by_file(ledger_by_path, writers):
    return {w.path: sum(ledger_by_path.get(w.path, {}).values()) for w in writers}


class PathLedger(Ledger):
    """A ledger per file (the numbered lines of each file start at 0)."""

    def __init__(self):
        super().__init__()
        self.by_path = {}

    def score(self, chunks):
        for chunk in chunks:
            self.by_path.setdefault(chunk.path, Ledger()).score([chunk])
        return super().score(chunks)

    def lost_and_duplicates(self, writers):
        lost = sum(len(self.by_path.get(w.path, Ledger()).lost(range(w.next_seq))) for w in writers)
        duplicates = sum(ledger.duplicates() for ledger in self.by_path.values())
        return lost, duplicates


def test_every_file_gets_turns_under_max_open_files_and_a_restart_reads_nothing_twice(tmp_path):
    writers = [LineWriter(tmp_path / ("f%02d.log" % i)) for i in range(30)]
    for w in writers:
        w.write(100)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=8)
    ledger = PathLedger()
    _poll_rounds(tailer, ledger, 1)
    assert tailer.stats["files_open"] == 8 and tailer.stats["files_deferred"] == 22
    assert tailer.stats["deferrals"] == 22
    _poll_rounds(tailer, ledger, 40)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    assert tailer.stats["parked"] >= 22
    assert tailer.stats["files_open"] <= 8
    # every file grows again: the parked ones get turns too, and nothing is read twice
    for w in writers:
        w.write(10)
    _poll_rounds(tailer, ledger, 40)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    tailer.close()
    # a restart resumes each file at its checkpoint, whether it was open or parked
    for w in writers:
        w.write(5)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=8)
    _poll_rounds(tailer, ledger, 40)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    assert tailer.stats["resumed"] == 30
    tailer.close()


def test_waiting_files_are_served_oldest_first_and_busy_files_do_not_keep_their_descriptor(tmp_path):
    """Two files always growing cannot starve the rest: a file is parked only when idle, but the
    waiting queue is served in order, so every waiting file is opened within a bounded number of polls."""
    busy = [LineWriter(tmp_path / ("busy%d.log" % i)) for i in range(2)]
    quiet = [LineWriter(tmp_path / ("quiet%02d.log" % i)) for i in range(10)]
    for w in busy + quiet:
        w.write(20)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=4)
    ledger = PathLedger()
    for _ in range(60):
        for w in busy:
            w.write(5)
        _poll_rounds(tailer, ledger, 1)
    lost, duplicates = ledger.lost_and_duplicates(quiet)
    assert (lost, duplicates) == (0, 0)
    assert tailer.stats["files_open"] <= 4
    tailer.close()


def test_files_that_never_stop_growing_take_turns(tmp_path):
    """Six files always growing, two descriptors: after its turn a busy file stops reading, parks
    once its lines are committed and goes to the back of the queue, so every file is read."""
    now = [0.0]
    writers = [LineWriter(tmp_path / ("busy%d.log" % i)) for i in range(6)]
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=2, clock=lambda: now[0])
    ledger = PathLedger()
    progress = []
    for step in range(240):
        for w in writers:
            w.write(3)
        now[0] += 1.0
        _poll_rounds(tailer, ledger, 1)
        assert tailer.stats["files_open"] <= 2
        if step in (119, 239):
            progress.append([sum(ledger.by_path.get(w.path, Ledger()).scored.values()) for w in writers])
    assert all(count > 0 for count in progress[0])                        # every file had a turn
    assert all(b > a for a, b in zip(progress[0], progress[1]))           # and another one later
    _poll_rounds(tailer, ledger, 200)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    tailer.close()


def test_parked_file_unchanged_needs_no_turn(tmp_path):
    writers = [LineWriter(tmp_path / ("f%d.log" % i)) for i in range(4)]
    for w in writers:
        w.write(10)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=2)
    ledger = PathLedger()
    _poll_rounds(tailer, ledger, 20)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    assert tailer.stats["files_deferred"] == 0      # all read and unchanged: nobody waits
    writers[0].write(3)
    _poll_rounds(tailer, ledger, 20)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    tailer.close()


def test_start_at_end_holds_for_files_that_waited_for_their_first_turn(tmp_path):
    writers = [LineWriter(tmp_path / ("f%d.log" % i)) for i in range(6)]
    for w in writers:
        w.write(10)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=2, start_at="end")
    ledger = PathLedger()
    _poll_rounds(tailer, ledger, 20)
    assert sum(ledger.scored.values()) == 0       # present at the first start: all start at their end
    for w in writers:
        w.write(2)
    _poll_rounds(tailer, ledger, 30)
    assert sum(ledger.scored.values()) == 12
    tailer.close()


def test_file_moved_out_of_the_glob_longer_than_rotate_wait_and_back_resumes(tmp_path):
    logs, away = tmp_path / "logs", tmp_path / "away"
    logs.mkdir()
    away.mkdir()
    writer = LineWriter(logs / "app.log")
    writer.write(200)
    tailer = new_tailer(str(logs / "*.log"), tmp_path / "cp", rotate_wait_seconds=0)
    ledger = Ledger()
    drain(tailer, ledger)
    os.rename(writer.path, away / "app.log")
    _poll_rounds(tailer, ledger, 5)                 # closed after rotate_wait
    assert tailer.open_paths() == []
    os.rename(away / "app.log", writer.path)
    writer.write(50)
    drain(tailer, ledger)
    assert ledger.lost(range(250)) == [] and ledger.duplicates() == 0
    assert tailer.stats["resumed"] == 1
    tailer.close()


def test_file_that_shrank_below_its_checkpoint_while_away_is_read_from_zero(tmp_path):
    logs, away = tmp_path / "logs", tmp_path / "away"
    logs.mkdir()
    away.mkdir()
    path = logs / "app.log"
    path.write_bytes(b"first line of the file\n" * 100)
    tailer = new_tailer(str(logs / "*.log"), tmp_path / "cp", rotate_wait_seconds=0)
    got = []
    for _ in range(3):
        chunks = tailer.poll()
        got += [line for c in chunks for line in c.lines]
        commit_all(tailer, chunks)
    os.rename(path, away / "app.log")
    tailer.poll()
    tailer.poll()
    with open(away / "app.log", "r+b") as f:
        f.truncate(23 * 50)                         # same first bytes, shorter than the checkpoint
    os.rename(away / "app.log", path)
    chunks = tailer.poll() + tailer.poll()
    assert sum(len(c.lines) for c in chunks) == 50
    assert tailer.stats["truncations"] == 1
    tailer.close()


def test_unlistable_directory_is_logged_counted_and_loses_or_repeats_nothing(tmp_path, monkeypatch, caplog):
    """As root chmod 000 does not stop reads, so listing the directory is refused the way EACCES would."""
    logs = tmp_path / "logs"
    logs.mkdir()
    writers = [LineWriter(logs / ("f%d.log" % i)) for i in range(3)]
    for w in writers:
        w.write(50)
    tailer = new_tailer(str(logs / "*.log"), tmp_path / "cp", rotate_wait_seconds=0, max_open_files=2)
    ledger = PathLedger()
    _poll_rounds(tailer, ledger, 3)
    real_scandir = os.scandir

    def refusing_scandir(path="."):
        if os.fspath(path) == str(logs):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)
    before = tailer.stats["read_errors"]
    for _ in range(10):
        for w in writers:
            w.write(5)
        _poll_rounds(tailer, ledger, 1)
    assert tailer.stats["read_errors"] > before
    assert sum("cannot list directory" in r.getMessage() for r in caplog.records) == 1
    assert tailer.stats["rotations"] == 0            # open files were not taken for rotated away
    monkeypatch.setattr(os, "scandir", real_scandir)
    _poll_rounds(tailer, ledger, 30)
    assert ledger.lost_and_duplicates(writers) == (0, 0)
    tailer.close()


def test_checkpoint_retention_sweeps_only_expired_entries_and_logs_it(tmp_path, caplog):
    now = [5_000.0]
    store = CheckpointStore(str(tmp_path / "cp"), max_age_seconds=100, clock=lambda: now[0])
    from anomaly_detector.inputs.fingerprint import Fingerprint
    store.record(1, 10, Fingerprint(3, "x"), 3, "/a")
    now[0] += 60
    store.record(1, 11, Fingerprint(3, "y"), 3, "/b")
    now[0] += 50
    with caplog.at_level("INFO"):
        assert store.prune() == 1
    assert store.lookup(1, 10) is None and store.lookup(1, 11) is not None
    assert any("checkpoints swept" in r.getMessage() for r in caplog.records)


def test_directory_gone_and_back_within_retention_resumes(tmp_path):
    """A whole directory renamed away (a volume remounted) and back: files resume at their checkpoints."""
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = LineWriter(logs / "app.log")
    writer.write(100)
    store = CheckpointStore(str(tmp_path / "cp"))
    tailer = FileTailer(str(logs / "*.log"), store, start_at="beginning", poll_interval=0,
                        rotate_wait_seconds=0, checkpoint_interval_seconds=0)
    ledger = Ledger()
    drain(tailer, ledger)
    shutil.move(str(logs), str(tmp_path / "elsewhere"))
    drain(tailer, ledger)
    shutil.move(str(tmp_path / "elsewhere"), str(logs))
    writer.write(10)
    drain(tailer, ledger)
    assert ledger.lost(range(110)) == [] and ledger.duplicates() == 0
    tailer.close()


def test_busy_files_rotated_while_taking_turns_lose_and_repeat_nothing(tmp_path):
    """Rename rotation out of the glob while files wait, yield and park: each rotated file drains."""
    now = [0.0]
    writers = [LineWriter(tmp_path / ("app%d.log" % i)) for i in range(5)]
    for k, w in enumerate(writers):
        w.next_seq = k * 1_000_000
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=2, clock=lambda: now[0],
                        rotate_wait_seconds=3)
    ledger = Ledger()
    for step in range(300):
        for k, w in enumerate(writers):
            w.write(2)
            if (step + 7 * k) % 40 == 39:
                w.rotate_rename(keep=20)      # app3.log -> app3.log.1: out of the glob
        now[0] += 0.5
        _poll_rounds(tailer, ledger, 1)
    for _ in range(100):
        now[0] += 1.0
        _poll_rounds(tailer, ledger, 1)
    expected = [seq for k, w in enumerate(writers) for seq in range(k * 1_000_000, w.next_seq)]
    assert ledger.lost(expected) == [] and ledger.duplicates() == 0
    tailer.close()


def test_file_rotated_between_the_scan_and_its_turn_is_drained_not_forgotten(tmp_path):
    """A waiting file renamed out of the glob after the scan that queued it, before the poll that
    gives it a descriptor: its turn must open it (found by inode), not whatever now has its name."""
    now = [0.0]
    first, second = LineWriter(tmp_path / "a.log"), LineWriter(tmp_path / "b.log")
    second.next_seq = 1_000_000
    first.write(10)
    second.write(10)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=1, poll_interval=30,
                        clock=lambda: now[0], rotate_wait_seconds=1)
    ledger = Ledger()
    _poll_rounds(tailer, ledger, 1)                 # the scan: a.log opened, b.log waits
    assert tailer.stats["files_deferred"] == 1
    second.rotate_rename()                          # b.log -> b.log.1, out of the glob
    second.write(5)                                 # and a new b.log
    for _ in range(10):                             # polls without a scan: a.log parks, b's turn comes
        now[0] += 0.5
        _poll_rounds(tailer, ledger, 1)
    for _ in range(20):                             # scans again and drains
        now[0] += 31
        _poll_rounds(tailer, ledger, 1)
    expected = list(range(10)) + list(range(1_000_000, 1_000_015))
    assert ledger.lost(expected) == [] and ledger.duplicates() == 0
    tailer.close()
