"""FileTailer through rename rotation, copytruncate, inode reuse and look-alike files (catalogue 1-4, small)."""
import os

from test_file_tail_harness import Ledger, LineWriter, commit_all, drain, new_tailer, numbered_line

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer


def test_rename_rotation_reads_old_file_to_eof_then_new_from_zero(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp")
    ledger = Ledger()
    writer.write(10)
    ledger.score(tailer.poll())
    writer.write(5)                 # unread when the rotation happens
    writer.rotate_rename()
    writer.write(3)
    drain(tailer, ledger)
    assert ledger.lost(range(18)) == [] and ledger.duplicates() == 0
    assert tailer.stats["rotations"] == 1
    assert tailer.open_paths() == [writer.path]
    tailer.close()


def test_rotated_file_kept_open_for_rotate_wait(tmp_path):
    now = [0.0]
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp", rotate_wait_seconds=5, clock=lambda: now[0])
    writer.write(1)
    ledger = Ledger()
    ledger.score(tailer.poll())
    late_writer = open(writer.path, "ab")   # an application still holding the old file
    writer.rotate_rename()
    ledger.score(tailer.poll())
    late_writer.write(numbered_line(1))
    late_writer.close()
    now[0] = 4.0
    ledger.score(tailer.poll())
    assert ledger.scored[1] == 1 and tailer.stats["files_open"] == 1
    now[0] = 5.0
    ledger.score(tailer.poll())
    assert tailer.stats["files_open"] == 0
    tailer.close()


def test_restart_finds_a_file_rotated_out_of_the_glob_and_drains_it(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp")
    ledger = Ledger()
    writer.write(10)
    chunks = tailer.poll()
    ledger.score(chunks)
    commit_all(tailer, chunks)
    writer.write(5)
    tailer.poll()                   # delivered, never scored: the process dies here
    tailer.close(save_checkpoints=False)
    writer.rotate_rename()
    writer.rotate_rename()          # and once more, so the file is now app.log.2
    writer.write(3)
    tailer = new_tailer(writer.path, tmp_path / "cp")
    drain(tailer, ledger)
    assert ledger.lost(range(18)) == [] and ledger.duplicates() == 0
    assert tailer.stats["resumed"] == 1
    tailer.close()


def test_glob_matching_rotated_names_does_not_reread_them(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    ledger = Ledger()
    for _ in range(6):
        writer.write(7)
        writer.rotate_rename(keep=3)
        writer.write(2)
        drain(tailer, ledger)
    assert ledger.lost(range(writer.next_seq)) == [] and ledger.duplicates() == 0
    tailer.close()


def _copytruncate_cycles(tmp_path, cycles, poll_between_copy_and_truncate):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    ledger = Ledger()
    window = set()
    for cycle in range(cycles):
        writer.write(300)
        drain(tailer, ledger, rounds=1)
        writer.write(200)               # unread when the copy is made: must come from app.log.1
        writer.copy_for_rotation()
        if poll_between_copy_and_truncate(cycle):
            drain(tailer, ledger, rounds=1)
        else:
            window.update(writer.write(cycle % 3))  # after the copy, before the truncate, never read
        writer.truncate()
        writer.write(50)
        drain(tailer, ledger, rounds=1)
    drain(tailer, ledger)
    tailer.close()
    return writer, ledger, window, tailer.stats


def test_catalogue_2_copytruncate_with_copy_tailed_loses_only_the_window_no_duplicates(tmp_path):
    writer, ledger, window, stats = _copytruncate_cycles(tmp_path, 20, lambda cycle: cycle % 2 == 0)
    lost = ledger.lost(range(writer.next_seq))
    assert set(lost) == window and len(window) == 10
    assert ledger.duplicates() == 0
    assert stats["truncations"] == 20 and stats["copies"] == 20


def test_copytruncate_of_only_the_live_file_duplicates_nothing(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp")
    ledger = Ledger()
    for _ in range(10):
        writer.write(300)
        drain(tailer, ledger, rounds=1)
        writer.copy_for_rotation()
        writer.truncate()
        writer.write(20)
        drain(tailer, ledger, rounds=1)
    assert ledger.lost(range(writer.next_seq)) == [] and ledger.duplicates() == 0
    tailer.close()


def test_catalogue_3_inode_reuse_reads_every_new_file_from_zero(tmp_path):
    """Create, read, delete: ext4 hands the same inode to the next file; each is read whole, once."""
    path = tmp_path / "cycle.log"
    tailer = new_tailer(str(path), tmp_path / "cp", checkpoint_interval_seconds=3600)
    inodes = []
    got = []
    for cycle in range(300):
        path.write_bytes(b"cycle %05d line a\ncycle %05d line b\n" % (cycle, cycle))
        inodes.append(os.stat(path).st_ino)
        got += [line for chunk in tailer.poll() for line in chunk.lines]
        os.unlink(path)
        tailer.poll()
    assert len(set(inodes)) < len(inodes), "the filesystem did not reuse inodes: the test proves nothing"
    expected = [b"cycle %05d line %s" % (c, x) for c in range(300) for x in (b"a", b"b")]
    assert got == expected
    tailer.close()


def test_inode_reused_while_stopped_is_a_new_file(tmp_path):
    path = tmp_path / "a.log"
    path.write_bytes(b"old file first line\n" * 20)
    tailer = new_tailer(str(path), tmp_path / "cp")
    chunks = tailer.poll()
    commit_all(tailer, chunks)
    tailer.close()
    old_inode = os.stat(path).st_ino
    os.unlink(path)
    path.write_bytes(b"a different file, shorter than the old offset\n")
    assert os.stat(path).st_ino == old_inode, "inode not reused on this filesystem"
    tailer = new_tailer(str(path), tmp_path / "cp")
    lines = [line for chunk in tailer.poll() for line in chunk.lines]
    assert lines == [b"a different file, shorter than the old offset"]
    tailer.close()


def test_catalogue_4_hundred_files_with_identical_header(tmp_path):
    header = b"#" * 1023 + b"\n"
    for i in range(100):
        (tmp_path / ("f%03d.log" % i)).write_bytes(header + b"file %03d line 0\n" % i)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp")
    first = []
    for _ in range(3):
        chunks = tailer.poll()
        commit_all(tailer, chunks)
        first += chunks
    assert len({chunk.key[:2] for chunk in first}) == 100
    assert sum(len(c.lines) for c in first) == 200
    tailer.close()
    for i in range(100):
        with open(tmp_path / ("f%03d.log" % i), "ab") as f:
            f.write(b"file %03d line 1\n" % i)
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp")
    after = sorted(line for chunk in tailer.poll() for line in chunk.lines)
    assert after == [b"file %03d line 1" % i for i in range(100)]
    assert len(CheckpointStore(str(tmp_path / "cp"))) == 100
    tailer.close()


def test_restart_reads_files_born_and_rotated_while_down_but_not_unrelated_or_compressed(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp")
    ledger = Ledger()
    writer.write(10)
    drain(tailer, ledger)
    tailer.close()
    old_stamp = os.stat(tmp_path / "cp").st_mtime - 10
    os.utime(tmp_path / "cp", (old_stamp, old_stamp))     # the previous run's last save, 10 s ago
    (tmp_path / "application.log").write_bytes(b"another program's log\n")
    (tmp_path / "app.log.9.gz").write_bytes(b"\x1f\x8b compressed\n")
    for _ in range(3):                                  # three generations born and rotated while down
        writer.write(5)
        writer.rotate_rename()
    writer.write(2)
    tailer = new_tailer(writer.path, tmp_path / "cp")
    drain(tailer, ledger)
    assert ledger.lost(range(writer.next_seq)) == [] and ledger.duplicates() == 0
    assert tailer.open_paths() == [writer.path]
    tailer.close()


def test_files_named_like_a_rotation():
    from anomaly_detector.inputs.file_tail import _named_like_rotation
    yes = ["/l/app.log.1", "/l/app.log-20260101", "/l/app-20260101.log", "/l/app.1.log", "/l/app_old.log"]
    no = ["/l/application.log", "/l/app.log.2.gz", "/other/app.log.1", "/l/app.log", "/l/web.log"]
    assert [_named_like_rotation(p, "/l/app.log") for p in yes] == [True] * len(yes)
    assert [_named_like_rotation(p, "/l/app.log") for p in no] == [False] * len(no)


def test_a_look_alike_that_diverges_from_its_origin_is_read_as_its_own_file(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    writer.write(100)
    drain(tailer, Ledger())
    writer.copy_for_rotation()                  # same bytes, named like a rotation: taken for a copy
    assert tailer.poll() == [] and tailer.stats["copies"] == 1
    with open(writer.path + ".1", "ab") as f:
        f.write(b"only in the look-alike\n")       # a real copy never grows past its origin
    writer.write(1)
    with open(writer.path + ".1", "r+b") as f:
        f.seek(100 * len(b"seq=000000000") + 5)
        f.write(b"#")                           # and a real copy never differs from it
    lines = [line for chunk in tailer.poll() + tailer.poll() for line in chunk.lines]
    from_copy = [line for line in lines if b"#" in line or b"look-alike" in line]
    assert len(from_copy) == 2
    assert len(lines) == 101 + 1    # the look-alike read whole from 0, plus the origin's new line
    tailer.close()


def test_a_dormant_copy_that_is_deleted_is_closed(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    writer.write(50)
    drain(tailer, Ledger())
    writer.copy_for_rotation()
    tailer.poll()
    assert tailer.stats["files_open"] == 2
    os.unlink(writer.path + ".1")
    assert [c for c in tailer.poll() + tailer.poll() if c.lines] == []
    assert tailer.open_paths() == [writer.path]
    tailer.close()


def test_rotated_files_keep_checkpoints_for_the_retention_period_then_are_swept(tmp_path):
    """A rotated file's checkpoint outlives its descriptor (it may come back) until retention sweeps it."""
    now = [1_000_000.0]
    writer = LineWriter(tmp_path / "app.log")
    store = CheckpointStore(str(tmp_path / "cp"), max_age_seconds=3600, clock=lambda: now[0])
    tailer = FileTailer(writer.path, store, start_at="beginning", poll_interval=0, rotate_wait_seconds=0,
                        checkpoint_interval_seconds=0)
    for _ in range(20):
        writer.write(3)
        drain(tailer, Ledger())
        writer.rotate_rename(keep=30)
    drain(tailer, Ledger())
    assert len(tailer.checkpoints) == 20         # every rotated file (app.log itself was renamed last)
    now[0] += 3601
    writer.write(1)
    drain(tailer, Ledger())
    assert store.save()
    assert len(tailer.checkpoints) == 1          # only the live file, however many rotations
    assert store.pruned == 20
    tailer.close()


def test_rotated_file_with_pending_bytes_is_never_abandoned_after_rotate_wait(tmp_path):
    """Fluent Bit #10414: the rotated file was closed after Rotate_Wait with bytes still unread."""
    now = [0.0]
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(writer.path, tmp_path / "cp", rotate_wait_seconds=5, clock=lambda: now[0],
                        max_bytes_per_poll=4096, read_block_bytes=1024)
    ledger = Ledger()
    writer.write(1)
    ledger.score(tailer.poll())
    writer.write(3000)                  # ~150 KiB: dozens of polls at 4 KiB each
    writer.rotate_rename()
    for _ in range(200):
        now[0] += 1.0                   # rotate_wait passes long before the backlog is read
        ledger.score(tailer.poll())
    assert ledger.lost(range(writer.next_seq)) == [] and tailer.stats["files_open"] == 0
    tailer.close()


def test_stream_id_survives_rename_and_truncation(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    writer.write(5)
    [before] = tailer.poll()
    writer.write(5)
    writer.rotate_rename()
    [renamed] = [c for c in tailer.poll() if c.lines]
    os.truncate(renamed.path, 0)
    with open(renamed.path, "ab") as f:
        f.write(b"new\n")
    [truncated] = tailer.poll()
    assert renamed.path != before.path and truncated.key != before.key
    assert before.stream_id == renamed.stream_id == truncated.stream_id
    tailer.close()


def test_a_copy_found_while_logrotate_is_still_writing_it_is_recognised(tmp_path):
    """The scan can see the copy empty or shorter than a fingerprint: it waits dormant, it is not new."""
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    ledger = Ledger()
    for partial in (0, 300, 0, 700):
        writer.write(300)
        drain(tailer, ledger)
        writer._shift_generations(5)
        data = open(writer.path, "rb").read()
        with open(writer.path + ".1", "wb") as copy:
            copy.write(data[:partial])
            copy.flush()
            drain(tailer, ledger, rounds=2)      # the copy is seen mid-write
            copy.write(data[partial:])
        writer.truncate()
        writer.write(20)
        drain(tailer, ledger)
    assert ledger.lost(range(writer.next_seq)) == [] and ledger.duplicates() == 0
    assert tailer.stats["copies"] == 4
    tailer.close()


def test_a_copy_found_after_its_origin_was_truncated_unnoticed_is_recognised(tmp_path):
    """Truncation between the poll's truncation check and the copy's opening (a loaded machine)."""
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), tmp_path / "cp")
    ledger = Ledger()
    check = tailer._detect_truncations
    rotate_now = []

    def check_then_rotate():
        check()
        if rotate_now:
            rotate_now.clear()
            writer.write(100)             # unread: only the copy holds these once truncated
            writer.copy_for_rotation()
            writer.truncate()
            writer.write(30)

    tailer._detect_truncations = check_then_rotate
    for _ in range(3):
        writer.write(300)
        drain(tailer, ledger)
        rotate_now.append(True)
        drain(tailer, ledger)
    assert ledger.lost(range(writer.next_seq)) == [] and ledger.duplicates() == 0
    assert tailer.stats["copies"] == 3
    tailer.close()
