"""inputs/spool.py: durable appends with group commit, read-back and commits, the bound, torn records after kill -9."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from anomaly_detector.inputs.spool import (
    HEADER_BYTES,
    SpoolError,
    SpoolFull,
    SpoolReader,
    SpoolWriter,
    encode_record,
    list_segments,
    spool_bytes,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_all(reader, commit=True):
    lines = []
    while True:
        chunks = reader.poll()
        if not chunks:
            return lines
        for chunk in chunks:
            lines.extend(chunk.lines)
            if commit:
                reader.commit(chunk.key, chunk.end_offset)


def test_appended_lines_come_back_in_order_and_a_new_reader_resumes_at_the_commit(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    for i in range(10):
        writer.append([b"line %d a" % i, b"line %d b" % i])
    reader = SpoolReader(str(tmp_path), "k", chunk_lines=5)
    chunk = reader.poll()[0]
    assert chunk.lines == [b"line 0 a", b"line 0 b", b"line 1 a", b"line 1 b"]  # whole records only
    assert chunk.start_offset == 0 and chunk.end_offset == 2 * len(encode_record([b"line 0 a", b"line 0 b"]))
    reader.commit("k", chunk.end_offset)
    reader.close()
    again = SpoolReader(str(tmp_path), "k")
    assert read_all(again) == [b"line %d %s" % (i, s) for i in range(2, 10) for s in (b"a", b"b")]
    writer.append([b"later"])
    assert read_all(again) == [b"later"]
    writer.close()
    with pytest.raises(SpoolError):
        writer.append([b"after close"])


def test_commit_for_another_key_or_backwards_is_ignored(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"x"])
    reader = SpoolReader(str(tmp_path), "k")
    end = reader.poll()[0].end_offset
    assert reader.commit("other", end) is False
    assert reader.commit("k", end) is True and reader.commit("k", end - 1) is False


def test_concurrent_appends_share_one_fsync(tmp_path, monkeypatch):
    """Group commit: while one fsync runs, every append that comes meanwhile waits for the next one."""
    real, release, calls = os.fdatasync, threading.Event(), []

    def slow_first_sync(fd):
        calls.append(fd)
        if len(calls) == 1:
            release.wait(10)
        real(fd)

    writer = SpoolWriter(str(tmp_path), 1 << 20)
    monkeypatch.setattr(os, "fdatasync", slow_first_sync)
    threads = [threading.Thread(target=writer.append, args=([b"request %d" % i],)) for i in range(20)]
    threads[0].start()
    while not calls:
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while writer.stats["records"] < 20:   # all written, all waiting for the fsync in flight
        time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(10)
    assert writer.stats["fsyncs"] == 2 and len(calls) == 2
    assert sorted(read_all(SpoolReader(str(tmp_path), "k"))) == sorted(b"request %d" % i for i in range(20))


def test_full_spool_refuses_and_writes_nothing_until_committed_segments_are_deleted(tmp_path):
    record = len(encode_record([b"x" * 100]))
    writer = SpoolWriter(str(tmp_path), max_bytes=4 * record, segment_bytes=2 * record)
    for _ in range(4):
        writer.append([b"x" * 100])
    with pytest.raises(SpoolFull):
        writer.append([b"x" * 100])
    assert writer.stats["full"] == 1 and spool_bytes(str(tmp_path)) == 4 * record
    reader = SpoolReader(str(tmp_path), "k", save_interval=0)
    assert len(read_all(reader)) == 4
    reader.poll()  # saves the offset and deletes wholly committed segments (never the one being written)
    assert spool_bytes(str(tmp_path)) < 4 * record
    writer.append([b"y" * 100])
    assert read_all(reader) == [b"y" * 100]


def test_the_last_segment_is_never_deleted(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20, segment_bytes=64)
    for i in range(5):
        writer.append([b"record %d with some bytes" % i])
    reader = SpoolReader(str(tmp_path), "k", save_interval=0)
    assert len(read_all(reader)) == 5
    reader.close()
    assert len(list_segments(str(tmp_path))) == 1


def test_torn_last_record_is_cut_counted_and_the_spool_goes_on(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"one"])
    writer.append([b"two"])
    writer.close()
    _, path = list_segments(str(tmp_path))[-1]
    with open(path, "ab") as f:
        f.write(encode_record([b"three, torn"])[:HEADER_BYTES + 4])   # a crash mid-write
    reader = SpoolReader(str(tmp_path), "k")
    assert read_all(reader) == [b"one", b"two"]   # waits at the torn record: it may still be completed
    again = SpoolWriter(str(tmp_path), 1 << 20)
    assert again.stats["torn_records"] == 1 and again.stats["torn_bytes"] == HEADER_BYTES + 4
    again.append([b"four"])
    assert read_all(reader) == [b"four"] and reader.stats["torn_records"] == 0


def test_corrupt_record_in_a_finished_segment_is_skipped_and_counted(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20, segment_bytes=64)
    writer.append([b"a" * 40])
    writer.append([b"b" * 40])   # rolls: a new segment
    writer.append([b"c" * 40])
    first = list_segments(str(tmp_path))[1][1]
    with open(first, "r+b") as f:
        f.seek(HEADER_BYTES + 3)
        f.write(b"X")   # flips a payload byte: the CRC no longer matches
    reader = SpoolReader(str(tmp_path), "k")
    assert read_all(reader) == [b"a" * 40, b"c" * 40]
    assert reader.stats["torn_records"] == 1


def test_a_wiped_spool_restarts_above_the_committed_offset(tmp_path):
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"old"])
    writer.close()
    reader = SpoolReader(str(tmp_path), "k")
    read_all(reader)
    reader.close()
    for _, path in list_segments(str(tmp_path)):
        os.unlink(path)
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"new"])
    assert read_all(SpoolReader(str(tmp_path), "k")) == [b"new"]


def test_a_failed_write_leaves_no_half_record(tmp_path, monkeypatch):
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"kept"])
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[:5])

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(SpoolError):
        writer.append([b"lost on a full disk"])
    monkeypatch.setattr(os, "write", real_write)
    writer.append([b"next"])
    assert read_all(SpoolReader(str(tmp_path), "k")) == [b"kept", b"next"]
    assert writer.stats["errors"] == 1


_KILL9_WRITER = r"""
import sys, threading
from anomaly_detector.inputs.spool import SpoolWriter
writer = SpoolWriter(sys.argv[1], 1 << 30, segment_bytes=1 << 16)
lock = threading.Lock()
def run(t):
    for i in range(1000000):
        line = b"t%d-%d " % (t, i) + b"x" * (i % 300)
        writer.append([line, line + b" second"])
        with lock:
            sys.stdout.write("%d %d\n" % (t, i))
            sys.stdout.flush()
for t in range(4):
    threading.Thread(target=run, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_kill9_mid_write_loses_no_acknowledged_record(tmp_path):
    """A real process appending from 4 threads is SIGKILLed: every record it had acknowledged is read back."""
    spool_dir = str(tmp_path / "spool")
    out = open(tmp_path / "acked.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-c", _KILL9_WRITER, spool_dir], stdout=out,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.monotonic() + 30
    while os.path.getsize(tmp_path / "acked.txt") < 20000 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    out.close()
    acked = set()
    for row in open(tmp_path / "acked.txt", "rb").read().splitlines():
        parts = row.split()
        if len(parts) == 2:   # the last line printed may itself be cut
            acked.add(b"t%s-%s" % (parts[0], parts[1]))
    assert len(acked) > 100
    writer = SpoolWriter(spool_dir, 1 << 30)   # recovers: a torn tail is cut and counted
    got = read_all(SpoolReader(spool_dir, "k"))
    assert got[1::2] == [line + b" second" for line in got[0::2]]   # whole records, never half of one
    seen = {line.split(b" ")[0] for line in got[0::2]}
    assert acked <= seen
    assert writer.stats["torn_records"] in (0, 1)
    writer.close()


def test_a_segment_that_cannot_be_started_is_a_spool_error_and_the_next_append_retries(tmp_path, monkeypatch):
    """Rolling to a new segment can fail (disk full, too many open files): the append is refused with
    SpoolError (HTTP 503, counted), not an OSError that kills the listener, and the writer recovers."""
    import anomaly_detector.inputs.spool as spool
    writer = SpoolWriter(str(tmp_path), 1 << 20, segment_bytes=64)
    writer.append([b"a" * 40])
    real_open = os.open

    def no_new_files(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args)
    monkeypatch.setattr(spool.os, "open", no_new_files)
    for _ in range(2):
        with pytest.raises(SpoolError):
            writer.append([b"b" * 40])      # does not fit the first segment: a new one is needed
    monkeypatch.undo()
    writer.append([b"c" * 40])
    writer.close()
    assert read_all(SpoolReader(str(tmp_path), "k")) == [b"a" * 40, b"c" * 40]


def test_a_writer_restarting_below_the_committed_offset_writes_where_the_reader_waits(tmp_path):
    """After a power cut the segment may end before the committed offset: the reader had read (and
    committed) records the writer had not synced yet. New records must go where the reader resumes,
    not at offsets it has passed already (it would wait on them forever)."""
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    for i in range(3):
        writer.append([b"record %d" % i])
    writer.close()
    reader = SpoolReader(str(tmp_path), "k")
    assert read_all(reader) == [b"record 0", b"record 1", b"record 2"]
    reader.close()
    (_, path), = list_segments(str(tmp_path))
    os.truncate(path, len(encode_record([b"record 0"])))   # the unsynced tail lost with the power
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"after the cut"])
    writer.close()
    assert read_all(SpoolReader(str(tmp_path), "k")) == [b"after the cut"]


def test_a_record_whose_segment_failed_its_last_sync_is_never_reported_durable(tmp_path, monkeypatch):
    """Thread A's record waits for a sync; thread B rolls to a new segment first and the old segment's
    final fdatasync fails. A's record must not be acknowledged by the next sync, which is of the new
    segment's descriptor. (The interleaving is played here on one thread, under the writer's lock.)"""
    import anomaly_detector.inputs.spool as spool
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"synced"])
    real = os.fdatasync
    with writer._cond:
        writer._write(encode_record([b"thread A's record"]))
        mine = writer.end
        monkeypatch.setattr(spool.os, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
        writer._roll()                       # thread B: the segment is full, its last sync fails
        monkeypatch.setattr(spool.os, "fdatasync", real)
        writer._write(encode_record([b"thread B's record"]))
        writer._wait_durable(writer.end)     # B's record, in the new segment, is synced
        with pytest.raises(SpoolError):
            writer._wait_durable(mine)       # A wakes up: its record's sync failed
    writer.close()


def test_a_half_written_record_that_cannot_be_cut_is_left_behind_in_a_sealed_segment(tmp_path, monkeypatch):
    """A short write whose ftruncate fails too leaves half a record in the segment: later records must
    not follow it there, or the reader stops at it and a restarted writer cuts them off as a torn tail."""
    import anomaly_detector.inputs.spool as spool
    writer = SpoolWriter(str(tmp_path), 1 << 20)
    writer.append([b"before"])
    real_write = os.write
    monkeypatch.setattr(spool.os, "write", lambda fd, data: real_write(fd, data[:len(data) // 2]))
    monkeypatch.setattr(spool.os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(SpoolError):
        writer.append([b"half of this is written"])
    monkeypatch.undo()
    writer.append([b"after"])
    assert read_all(SpoolReader(str(tmp_path), "k"), commit=False) == [b"before", b"after"]
    writer.close()
    SpoolWriter(str(tmp_path), 1 << 20).close()     # a restart's recovery keeps what was acknowledged
    assert read_all(SpoolReader(str(tmp_path), "k")) == [b"before", b"after"]
