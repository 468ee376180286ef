"""Model-based test (after Vector's file_watcher QuickCheck): random writes, rotations, copytruncates, polls, crashes.

Invariant: every written line is scored; without crashes nothing twice; with crashes (and no copytruncate
in flight) duplicates never exceed the lines that were scored but not committed when the process died.
"""
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_file_tail_harness import Ledger, LineWriter, commit_all, drain, new_tailer

OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 60)),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("copytruncate")),
    st.tuples(st.just("copy_poll_truncate")),
    st.tuples(st.just("poll")),
    st.tuples(st.just("poll_then_crash")),
)


def _run(ops, directory, fingerprint_bytes):
    writer = LineWriter(os.path.join(directory, "app.log"))
    pattern = os.path.join(directory, "app.log*")
    state = os.path.join(directory, "state", "checkpoints")
    settings_ = {"max_bytes_per_poll": 2048, "read_block_bytes": 512, "fingerprint_bytes": fingerprint_bytes}
    tailer = new_tailer(pattern, state, **settings_)
    ledger = Ledger()
    in_flight_at_crashes = 0
    crashed = copied = False

    def poll_and_commit():
        chunks = tailer.poll()
        ledger.score(chunks)
        commit_all(tailer, chunks)

    for op in ops:
        if op[0] == "write":
            writer.write(op[1])
        elif op[0] == "rotate":
            writer.rotate_rename(keep=100)
        elif op[0] in ("copytruncate", "copy_poll_truncate") and os.path.exists(writer.path):
            copied = True
            writer.copy_for_rotation(keep=100)
            if op[0] == "copy_poll_truncate":
                poll_and_commit()
            writer.truncate()
        elif op[0] == "poll":
            poll_and_commit()
        elif op[0] == "poll_then_crash":
            in_flight_at_crashes += ledger.score(tailer.poll())
            tailer.close(save_checkpoints=False)
            tailer = new_tailer(pattern, state, **settings_)
            crashed = True
    drain(tailer, ledger, rounds=500)
    tailer.close()
    assert ledger.lost(range(writer.next_seq)) == []
    if not crashed:
        assert ledger.duplicates() == 0
    elif not copied:
        assert ledger.duplicates() <= in_flight_at_crashes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=1, max_size=30), st.sampled_from([64, 1024]))
def test_random_rotation_truncation_and_crash_sequences_lose_nothing(ops, fingerprint_bytes):
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None   # thousands of checkpoint fsyncs otherwise
    with tempfile.TemporaryDirectory(prefix="ad-tail-model-", dir=base) as directory:
        os.mkdir(os.path.join(directory, "state"))
        _run(ops, directory, fingerprint_bytes)


EXACT_OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 60)),
    st.tuples(st.just("rotate")),
    st.tuples(st.just("delete_read_rotated")),
    st.tuples(st.just("poll")),
    st.tuples(st.just("poll_then_crash")),
)


def _run_exact_glob(ops, log_dir, state_dir):
    """Rotated files leave the glob; fully read ones are deleted, so the filesystem reuses their inodes."""
    writer = LineWriter(os.path.join(log_dir, "app.log"))
    state = os.path.join(state_dir, "checkpoints")
    tailer = new_tailer(writer.path, state, max_bytes_per_poll=2048, read_block_bytes=512)
    ledger = Ledger()
    rotated = []                 # [(path, seqs)] oldest first
    current_first_seq = 0
    live_file_seen = False       # a file born and rotated away between two polls is out of reach
    in_flight_at_crashes = 0
    crashed_since_birth = False

    for op in ops:
        if op[0] == "write":
            if not os.path.exists(writer.path):
                current_first_seq, live_file_seen, crashed_since_birth = writer.next_seq, False, False
            writer.write(op[1])
        elif op[0] == "rotate" and os.path.exists(writer.path) and (live_file_seen or crashed_since_birth):
            name = "%s.%d" % (writer.path, writer.next_seq)
            os.replace(writer.path, name)
            rotated.append((name, range(current_first_seq, writer.next_seq)))
        elif op[0] == "delete_read_rotated" and rotated and all(ledger.scored[s] for s in rotated[0][1]):
            os.unlink(rotated.pop(0)[0])
        elif op[0] == "poll":
            chunks = tailer.poll()
            ledger.score(chunks)
            commit_all(tailer, chunks)
            live_file_seen = live_file_seen or os.path.exists(writer.path)
        elif op[0] == "poll_then_crash":
            in_flight_at_crashes += ledger.score(tailer.poll())
            tailer.close(save_checkpoints=False)
            tailer = new_tailer(writer.path, state, max_bytes_per_poll=2048, read_block_bytes=512)
            crashed_since_birth = True
    drain(tailer, ledger, rounds=500)
    tailer.close()
    assert ledger.lost(range(writer.next_seq)) == []
    assert ledger.duplicates() <= in_flight_at_crashes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EXACT_OPS, min_size=1, max_size=30))
def test_random_sequences_with_rotation_out_of_the_glob_and_inode_reuse_lose_nothing(ops):
    state_base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="ad-tail-logs-") as log_dir, \
            tempfile.TemporaryDirectory(prefix="ad-tail-state-", dir=state_base) as state_dir:
        _run_exact_glob(ops, log_dir, state_dir)
