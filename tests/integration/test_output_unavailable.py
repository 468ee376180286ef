"""The real daemon cannot write its scored-lines file for a while: lines wait in the ring, none is lost.

A write failure is not the lines' fault, so the batch is not acknowledged (nor dead-lettered):
the worker retries it, counts the failures in /metrics, and once the file can be written again
every line arrives.
"""
import os
import time

from tests.integration.daemon_harness import SEQ, Daemon, numbered_line


def _seqs(paths):
    seen = set()
    for path in paths:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                seen.update(int(m.group(1)) for m in map(SEQ.search, f) if m)
    return seen


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


def test_a_scored_lines_file_that_cannot_be_written_holds_lines_until_it_can(tmp_path):
    daemon = Daemon(tmp_path, workers=1, batch_size=50)
    moved = daemon.scored + ".1"
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "app.log"), "a") as f:
            f.write("".join(numbered_line(i) for i in range(200)))
        assert _wait(lambda: len(_seqs([daemon.scored])) == 200, 120), daemon.log_tail()
        os.rename(daemon.scored, moved)
        os.mkdir(daemon.scored)                 # the worker's next open of the path fails (EISDIR)
        with open(os.path.join(daemon.logs, "app.log"), "a") as f:
            f.write("".join(numbered_line(i) for i in range(200, 400)))
        assert _wait(lambda: (daemon.metric("output_write_errors_total") or 0) >= 2, 60), daemon.log_tail()
        assert len(_seqs([moved])) == 200        # nothing of the second part was acknowledged meanwhile
        assert not os.path.exists(os.path.join(daemon.dir, "state", "dead-letter", "dead-letter.jsonl"))
        os.rmdir(daemon.scored)
        assert _wait(lambda: _seqs([moved, daemon.scored]) == set(range(400)), 60), daemon.log_tail()
        assert "cannot write its outputs" in daemon.log_tail(200)
    finally:
        if os.path.isdir(daemon.scored):
            os.rmdir(daemon.scored)
        daemon.stop()
