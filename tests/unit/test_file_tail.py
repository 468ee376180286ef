"""FileTailer: partial lines, checkpoints across restarts, truncation, deletion, start_at, bounds (catalogue 5-9)."""
import os

import pytest
from test_file_tail_harness import Ledger, LineWriter, commit_all, drain, new_tailer, numbered_line

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer


def _lines(chunks):
    return [line for chunk in chunks for line in chunk.lines]


def _poll_commit(tailer):
    chunks = tailer.poll()
    commit_all(tailer, chunks)
    return _lines(chunks)


def test_complete_lines_only_and_offsets(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"one\ntwo\r\nthr")
    tailer = new_tailer(str(log), tmp_path / "cp")
    chunks = tailer.poll()
    assert _lines(chunks) == [b"one", b"two"]
    assert (chunks[0].start_offset, chunks[0].end_offset) == (0, 9)
    with open(log, "ab") as f:
        f.write(b"ee\n")
    chunks = tailer.poll()
    assert _lines(chunks) == [b"three"]
    assert (chunks[0].start_offset, chunks[0].end_offset) == (9, 15)
    tailer.close()


def test_restart_resumes_at_committed_offset_without_rereading(tmp_path):
    log = tmp_path / "a.log"
    writer = LineWriter(log)
    writer.write(10)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert len(_poll_commit(tailer)) == 10
    tailer.close()
    writer.write(3)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert _poll_commit(tailer) == [numbered_line(s)[:-1] for s in range(10, 13)]
    assert tailer.stats["resumed"] == 1
    tailer.close()


def test_uncommitted_lines_are_read_again_after_a_crash(tmp_path):
    log = tmp_path / "a.log"
    LineWriter(log).write(5)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert len(tailer.poll()) == 1      # delivered, never committed
    tailer.close(save_checkpoints=False)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert len(_poll_commit(tailer)) == 5
    tailer.close()


def test_catalogue_7_partial_line_survives_a_kill(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"abc")
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert _poll_commit(tailer) == []
    tailer.poll()                       # a checkpoint save happens at the start of every poll here
    tailer.close(save_checkpoints=False)
    with open(log, "ab") as f:
        f.write(b"def\n")
    tailer = new_tailer(str(log), tmp_path / "cp")
    ledger = []
    for _ in range(3):
        ledger += _poll_commit(tailer)
    assert ledger == [b"abcdef"]
    tailer.close()


def test_catalogue_5_truncate_then_one_line_repeatedly(tmp_path):
    """`: > f` then one line of the same length as before: every line still arrives, on the next poll."""
    log = tmp_path / "a.log"
    tailer = new_tailer(str(log), tmp_path / "cp", checkpoint_interval_seconds=3600)
    got = []
    for seq in range(150):
        with open(log, "wb") as f:
            f.write(numbered_line(seq))
        got += _poll_commit(tailer)
        assert len(got) == seq + 1, f"line {seq} not delivered on the first poll"
    assert got == [numbered_line(s)[:-1] for s in range(150)]
    assert tailer.stats["truncations"] == 149
    tailer.close()


def test_catalogue_6_truncated_while_stopped(tmp_path):
    log = tmp_path / "a.log"
    writer = LineWriter(log)
    writer.write(200)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert len(_poll_commit(tailer)) == 200
    tailer.close()
    writer.truncate()
    fresh = writer.write(5)
    tailer = new_tailer(str(log), tmp_path / "cp")
    assert _poll_commit(tailer) == [numbered_line(s)[:-1] for s in fresh]
    tailer.close()
    [entry] = CheckpointStore(str(tmp_path / "cp")).entries()
    assert entry.offset == os.path.getsize(log)


def test_truncated_while_stopped_with_same_first_bytes_is_detected_by_size(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"header\n" + b"x\n" * 100)
    tailer = new_tailer(str(log), tmp_path / "cp", fingerprint_bytes=7)
    assert len(_poll_commit(tailer)) == 101
    tailer.close()
    log.write_bytes(b"header\nnew\n")
    tailer = new_tailer(str(log), tmp_path / "cp", fingerprint_bytes=7)
    assert _poll_commit(tailer) == [b"header", b"new"]
    assert tailer.stats["truncations"] == 1
    tailer.close()


def _fds_on(path):
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


def test_catalogue_8_deleted_file_is_read_to_eof_and_closed(tmp_path):
    log = tmp_path / "a.log"
    writer = LineWriter(log)
    writer.write(10)
    tailer = new_tailer(str(log), tmp_path / "cp", max_bytes_per_poll=64 << 10, read_block_bytes=16 << 10)
    ledger = Ledger()
    ledger.score(tailer.poll())
    unread = writer.write(5000)
    os.unlink(log)
    drain(tailer, ledger)
    assert ledger.lost(range(5010)) == []
    assert ledger.duplicates() == 0
    assert tailer.stats["deleted"] == 1
    assert tailer.stats["files_open"] == 0 and _fds_on(log) == []
    assert len(unread) == 5000
    assert len(tailer.checkpoints) == 0     # its entry could only mislead a file reusing the inode
    tailer.close()


def test_catalogue_9_unreadable_file_counted_others_flow_then_resumes(tmp_path, monkeypatch):
    writers = [LineWriter(tmp_path / ("f%d.log" % i)) for i in range(10)]
    for w in writers:
        w.write(20)
    blocked = writers[3].path
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp")
    seen = Ledger()
    for _ in range(5):
        for w in writers:
            w.write(10)
        chunks = tailer.poll()
        assert blocked not in {chunk.path for chunk in chunks}
        seen.score(chunks)
        commit_all(tailer, chunks)
    assert tailer.stats["read_errors"] >= 5
    monkeypatch.setattr(os, "open", real_open)
    drain(tailer, seen)
    expected_total = sum(w.next_seq for w in writers)
    assert sum(seen.scored.values()) == expected_total   # the blocked file resumed from 0, nothing lost
    tailer.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files; the monkeypatched variant covers it")
def test_catalogue_9_chmod_000(tmp_path):
    good, bad = LineWriter(tmp_path / "good.log"), LineWriter(tmp_path / "bad.log")
    good.write(5)
    bad.write(5)
    os.chmod(bad.path, 0)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp")
    assert len(_poll_commit(tailer)) == 5
    assert tailer.stats["read_errors"] >= 1
    os.chmod(bad.path, 0o644)
    assert len(_poll_commit(tailer)) == 5
    tailer.close()


def test_start_at_end_only_for_files_present_at_first_start(tmp_path):
    old = tmp_path / "old.log"
    old.write_bytes(b"history 1\nhistory 2\npartial")
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", start_at="end")
    assert _poll_commit(tailer) == []
    with open(old, "ab") as f:
        f.write(b" line\nfresh\n")
    (tmp_path / "new.log").write_bytes(b"from zero\n")
    assert sorted(_poll_commit(tailer)) == [b"fresh", b"from zero", b"partial line"]
    tailer.close()
    (tmp_path / "later.log").write_bytes(b"created while stopped\n")
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", start_at="end")
    assert _poll_commit(tailer) == [b"created while stopped"]
    tailer.close()


def test_start_at_end_in_the_middle_of_a_long_line_drops_only_that_line(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"y" * 5000)
    tailer = new_tailer(str(log), tmp_path / "cp", start_at="end", max_line_bytes=1000)
    assert _poll_commit(tailer) == []
    with open(log, "ab") as f:
        f.write(b"yyy\nnext\n")
    assert _poll_commit(tailer) == [b"next"]
    tailer.close()


def test_one_busy_file_cannot_starve_another(tmp_path):
    big, small = LineWriter(tmp_path / "big.log"), LineWriter(tmp_path / "small.log")
    big.write(100_000)
    small.write(3)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_bytes_per_poll=256 << 10,
                        read_block_bytes=32 << 10)
    chunks = tailer.poll()
    assert sum(len(c.lines) for c in chunks if c.path == small.path) == 3
    assert sum(len(line) + 1 for c in chunks for line in c.lines) <= 256 << 10
    tailer.close()


def test_max_open_files_defers_then_reads_everything(tmp_path):
    writers = [LineWriter(tmp_path / ("f%d.log" % i)) for i in range(6)]
    for w in writers:
        w.write(4)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_open_files=2)
    delivered = _poll_commit(tailer)
    assert tailer.stats["files_open"] == 2 and tailer.stats["files_deferred"] == 4
    for _ in range(2):
        for opened in tailer.open_paths():
            os.unlink(opened)   # deleted files are drained and closed, freeing slots for the others
        delivered += _poll_commit(tailer) + _poll_commit(tailer)
        assert tailer.stats["files_open"] == 2
    delivered += _poll_commit(tailer)
    assert len(delivered) == 24
    assert tailer.stats["files_deferred"] == 0
    tailer.close()


def test_commit_of_an_old_generation_is_ignored(tmp_path):
    log = tmp_path / "a.log"
    writer = LineWriter(log)
    writer.write(100)
    tailer = new_tailer(str(log), tmp_path / "cp")
    [old] = tailer.poll()
    writer.truncate()
    writer.write(2)
    [new] = tailer.poll()
    assert new.key != old.key and new.start_offset == 0
    assert tailer.commit(old.key, old.end_offset) is False
    assert tailer.commit(new.key, new.end_offset) is True
    tailer.close()
    [entry] = CheckpointStore(str(tmp_path / "cp")).entries()
    assert entry.offset == new.end_offset


def test_invalid_settings_are_refused(tmp_path):
    store = CheckpointStore(str(tmp_path / "cp"))
    with pytest.raises(ValueError):
        new_tailer("x", tmp_path / "cp", start_at="middle")
    with pytest.raises(ValueError):
        new_tailer("x", tmp_path / "cp", on_long_line="wrap")
    with pytest.raises(ValueError):
        new_tailer("x", tmp_path / "cp", max_open_files=0)
    assert len(store) == 0


def test_start_at_end_is_not_applied_again_after_a_crash_right_after_the_first_poll(tmp_path):
    log = tmp_path / "a.log"
    log.write_bytes(b"history\n")
    tailer = new_tailer(str(log), tmp_path / "cp", start_at="end", checkpoint_interval_seconds=3600)
    assert tailer.poll() == []
    tailer.close(save_checkpoints=False)       # killed before any periodic save
    with open(log, "ab") as f:
        f.write(b"written while down\n")
    tailer = new_tailer(str(log), tmp_path / "cp", start_at="end", checkpoint_interval_seconds=3600)
    assert _poll_commit(tailer) == [b"written while down"]
    tailer.close()


def test_a_new_file_is_found_at_the_next_poll_when_its_directory_changes(tmp_path):
    """change_scan_seconds: creating (or renaming into place) a file moves its directory's mtime, which
    triggers a rescan at once instead of after scan_interval (poll_interval) seconds."""
    now = [0.0]
    (tmp_path / "a.log").write_bytes(b"one\n")
    watching = FileTailer(str(tmp_path / "*.log"), CheckpointStore(str(tmp_path / "cp1.json")), start_at="beginning",
                          poll_interval=3600, change_scan_seconds=0.05, clock=lambda: now[0])
    blind = FileTailer(str(tmp_path / "*.log"), CheckpointStore(str(tmp_path / "cp2.json")), start_at="beginning",
                       poll_interval=3600, clock=lambda: now[0])
    for tailer in (watching, blind):
        assert [line for c in tailer.poll() for line in c.lines] == [b"one"]
    (tmp_path / "b.log").write_bytes(b"two\n")
    now[0] += 0.01      # within change_scan_seconds of the last scan: not yet
    assert watching.poll() == [] and blind.poll() == []
    now[0] += 0.05
    assert [line for c in watching.poll() for line in c.lines] == [b"two"]
    assert watching.stats["change_rescans"] == 1
    assert blind.poll() == [] and blind.stats["change_rescans"] == 0   # waits for its hour
    now[0] += 1
    watching.poll()
    watching.poll()
    assert watching.stats["change_rescans"] <= 2, "an unchanged directory triggers nothing (one recheck at most)"
    watching.close()
    blind.close()
