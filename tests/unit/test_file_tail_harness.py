"""Reliability harness for the file tailer: a numbered-line writer, a scored-line ledger, and their own tests.

Used by tests/unit/test_file_tail*.py and tests/integration/test_file_tail_*.py (catalogue items 1-9).
"""
import os
import shutil
from collections import Counter

import pytest

from anomaly_detector.inputs.checkpoints import CheckpointStore
from anomaly_detector.inputs.file_tail import FileTailer

PAYLOAD = b" level=INFO msg=request served in 12ms"


def numbered_line(seq):
    return b"seq=%09d%s\n" % (seq, PAYLOAD)


def seq_of(line):
    return int(line[4:13])


class LineWriter:
    """Appends numbered lines to `path` the way a logger does (O_APPEND) and rotates it like logrotate."""

    def __init__(self, path):
        self.path = str(path)
        self.next_seq = 0

    def write(self, count):
        """Append `count` lines; returns the range of their seqs."""
        first = self.next_seq
        self.next_seq += count
        with open(self.path, "ab") as f:
            f.write(b"".join(numbered_line(seq) for seq in range(first, self.next_seq)))
        return range(first, self.next_seq)

    def _shift_generations(self, keep):
        oldest = "%s.%d" % (self.path, keep)
        if os.path.exists(oldest):
            os.unlink(oldest)
        for n in range(keep - 1, 0, -1):
            if os.path.exists("%s.%d" % (self.path, n)):
                os.replace("%s.%d" % (self.path, n), "%s.%d" % (self.path, n + 1))

    def rotate_rename(self, keep=5):
        """logrotate `create`: shift path.N -> path.N+1, drop the oldest, rename path -> path.1."""
        self._shift_generations(keep)
        if os.path.exists(self.path):
            os.replace(self.path, self.path + ".1")

    def copy_for_rotation(self, keep=5):
        """First half of logrotate `copytruncate`: shift the old copies, copy path -> path.1."""
        self._shift_generations(keep)
        shutil.copyfile(self.path, self.path + ".1")

    def truncate(self):
        """Second half of `copytruncate`; lines written between the two halves are logrotate's window."""
        os.truncate(self.path, 0)


class Ledger:
    """What the consumer scored: every seq with how many times it was scored."""

    def __init__(self):
        self.scored = Counter()

    def score(self, chunks):
        count = 0
        for chunk in chunks:
            for line in chunk.lines:
                self.scored[seq_of(line)] += 1
                count += 1
        return count

    def lost(self, expected):
        return [seq for seq in expected if self.scored[seq] == 0]

    def duplicates(self):
        return sum(n - 1 for n in self.scored.values() if n > 1)


def commit_all(tailer, chunks):
    for chunk in chunks:
        tailer.commit(chunk.key, chunk.end_offset)


def new_tailer(patterns, state_path, **overrides):
    """A tailer that rescans and saves on every poll, as fast tests need; `overrides` change any setting."""
    settings = {"start_at": "beginning", "poll_interval": 0, "rotate_wait_seconds": 0,
                "checkpoint_interval_seconds": 0}
    settings.update(overrides)
    return FileTailer(patterns, CheckpointStore(str(state_path)), **settings)


def drain(tailer, ledger, rounds=50):
    """Poll, score and commit until a poll returns nothing new."""
    total = 0
    for _ in range(rounds):
        chunks = tailer.poll()
        got = ledger.score(chunks)
        commit_all(tailer, chunks)
        total += got
        if not chunks:
            break
    return total


# ---- the harness must be able to fail -------------------------------------------------------

def test_ledger_reports_lost_and_duplicated_seqs():
    ledger = Ledger()

    class FakeChunk:
        lines = [numbered_line(0), numbered_line(2), numbered_line(2)]

    ledger.score([FakeChunk()])
    assert ledger.lost(range(3)) == [1]
    assert ledger.duplicates() == 1


def test_writer_rotation_keeps_numbered_generations(tmp_path):
    writer = LineWriter(tmp_path / "app.log")
    for _ in range(3):
        writer.write(2)
        writer.rotate_rename(keep=2)
    assert sorted(os.listdir(tmp_path)) == ["app.log.1", "app.log.2"]
    assert seq_of(open(tmp_path / "app.log.1", "rb").readline()) == 4


@pytest.mark.parametrize("line", [numbered_line(0), numbered_line(123456789)])
def test_seq_roundtrip(line):
    assert seq_of(line) == int(line[4:13].decode())
