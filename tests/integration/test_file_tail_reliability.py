"""Catalogue items 1, 2, 3, 5 at full-ish scale: rotation with consumer kills, copytruncate, inode reuse.

A "kill" drops the tailer without saving (close(save_checkpoints=False)) after its last poll was
scored but not committed, then builds a new one from the checkpoint file, as a restarted process would.
"""
import os
import random
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))

from test_file_tail_harness import Ledger, LineWriter, commit_all, drain, new_tailer  # noqa: E402

TOTAL_LINES = 200_000
ROTATE_EVERY = 1_000


@pytest.fixture
def state_dir():
    """Checkpoints on tmpfs when there is one: thousands of fsyncs on a shared disk would dominate the run."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="ad-file-tail-", dir=base) as directory:
        yield directory


def _run_rotation_with_kills(tmp_path, state_dir, pattern, seed, max_burst=200, max_written_while_down=3_000):
    rng = random.Random(seed)
    writer = LineWriter(tmp_path / "app.log")
    state = os.path.join(state_dir, "checkpoints")
    tailer = new_tailer(pattern, state)
    ledger = Ledger()
    next_rotation = ROTATE_EVERY
    next_kill = rng.randint(4_000, 12_000)
    kills = in_flight_total = 0

    def write_some(count):
        nonlocal next_rotation
        while count > 0:
            step = min(count, next_rotation - writer.next_seq)
            writer.write(step)
            count -= step
            if writer.next_seq == next_rotation:
                writer.rotate_rename(keep=5)
                next_rotation += ROTATE_EVERY

    while writer.next_seq < TOTAL_LINES:
        write_some(min(rng.randint(1, max_burst), TOTAL_LINES - writer.next_seq))
        chunks = tailer.poll()
        scored = ledger.score(chunks)
        if writer.next_seq >= next_kill:
            tailer.close(save_checkpoints=False)    # scored, never committed: these come back
            kills += 1
            in_flight_total += scored
            # written (and rotated up to 3 times) while down
            write_some(min(rng.randint(0, max_written_while_down), TOTAL_LINES - writer.next_seq))
            tailer = new_tailer(pattern, state)
            next_kill = writer.next_seq + rng.randint(4_000, 12_000)
            continue
        commit_all(tailer, chunks)
    drain(tailer, ledger, rounds=200)
    tailer.close()
    return ledger, kills, in_flight_total


def _assert_no_loss_bounded_duplicates(ledger, kills, in_flight_total):
    assert ledger.lost(range(TOTAL_LINES)) == []
    assert kills >= 20
    assert ledger.duplicates() <= in_flight_total
    assert ledger.duplicates() <= 0.02 * TOTAL_LINES


def test_catalogue_1_rotate_every_1000_with_kills_glob_matches_rotated_names(tmp_path, state_dir):
    ledger, kills, in_flight = _run_rotation_with_kills(tmp_path, state_dir, str(tmp_path / "app.log*"), seed=1)
    _assert_no_loss_bounded_duplicates(ledger, kills, in_flight)


def test_catalogue_1_rotate_every_1000_with_kills_glob_matches_only_the_live_name(tmp_path, state_dir):
    """Rotated files are out of the glob: the old fd is drained; after a kill, files rotated while down are
    found by inode (checkpointed) or by name and modification time (born while down)."""
    ledger, kills, in_flight = _run_rotation_with_kills(tmp_path, state_dir, str(tmp_path / "app.log"), seed=2)
    _assert_no_loss_bounded_duplicates(ledger, kills, in_flight)


def test_catalogue_2_copytruncate_100_cycles_copy_tailed(tmp_path, state_dir):
    rng = random.Random(3)
    writer = LineWriter(tmp_path / "app.log")
    tailer = new_tailer(str(tmp_path / "app.log*"), os.path.join(state_dir, "checkpoints"))
    ledger = Ledger()
    window = set()
    for _ in range(100):
        for _ in range(4):
            writer.write(500)
            drain(tailer, ledger, rounds=1)
        writer.write(rng.randint(0, 300))         # not yet read when logrotate copies
        writer.copy_for_rotation(keep=3)
        if rng.random() < 0.5:
            drain(tailer, ledger, rounds=1)        # the tailer sees the copy before the truncate
        else:
            window.update(writer.write(rng.randint(0, 3)))
        writer.truncate()
    drain(tailer, ledger, rounds=20)
    tailer.close()
    lost = ledger.lost(range(writer.next_seq))
    assert set(lost) <= window
    assert ledger.duplicates() == 0
    assert tailer.stats["copies"] == 100 and tailer.stats["truncations"] == 100


def test_catalogue_3_thousand_create_delete_cycles_with_inode_reuse_and_restarts(tmp_path, state_dir):
    path = tmp_path / "cycle.log"
    state = os.path.join(state_dir, "checkpoints")
    tailer = new_tailer(str(path), state, max_bytes_per_poll=4096, read_block_bytes=1024)
    expected, got, inodes = [], [], []
    for cycle in range(1_000):
        body = b"".join(b"cycle %05d line %03d\n" % (cycle, n) for n in range(cycle % 400))
        path.write_bytes(body)
        inodes.append(os.stat(path).st_ino)
        expected += body.splitlines()
        for chunks in (tailer.poll(), None):
            if chunks is None:
                os.unlink(path)          # often with lines still unread: they must still arrive
                chunks = drain_collect(tailer)
            got += [line for chunk in chunks for line in chunk.lines]
            commit_all(tailer, chunks)
        if cycle % 100 == 99:
            tailer.close()
            tailer = new_tailer(str(path), state, max_bytes_per_poll=4096, read_block_bytes=1024)
    tailer.close()
    assert len(set(inodes)) < len(inodes) // 2, "inodes were not reused: the test proves nothing"
    assert got == expected


def drain_collect(tailer, rounds=100):
    chunks = []
    for _ in range(rounds):
        got = tailer.poll()
        commit_all(tailer, got)
        chunks += got
        if not got:
            break
    return chunks


def test_catalogue_5_truncate_then_one_line_thousand_times_each_within_two_seconds(tmp_path, state_dir):
    log = tmp_path / "a.log"
    tailer = new_tailer(str(log), os.path.join(state_dir, "checkpoints"), checkpoint_interval_seconds=0.1)
    delivered = 0
    slowest = 0.0
    for seq in range(1_000):
        with open(log, "wb") as f:             # `: > f` then one line
            f.write(b"only line %06d\n" % seq)
        written = time.monotonic()
        deadline = written + 2.0
        while time.monotonic() < deadline:
            chunks = tailer.poll()
            commit_all(tailer, chunks)
            lines = [line for chunk in chunks for line in chunk.lines]
            if lines:
                assert lines == [b"only line %06d" % seq]
                delivered += 1
                slowest = max(slowest, time.monotonic() - written)
                break
    tailer.close()
    assert delivered == 1_000 and slowest <= 2.0
