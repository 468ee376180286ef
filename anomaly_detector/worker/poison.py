"""Poison lines: find the line a worker died on, set it aside, score the rest.

Used by worker/detector.py. Before scoring a ring range a worker records it in the control block
(ipc/control.py begin_scoring), which outlives the worker. A successor that finds such a record
knows its predecessor died (killed as hung, or crashed) on that range, and the ring hands it the
same unacknowledged lines again. Without this, one line that kills a worker kills every successor
too, and nothing behind it on that ring is ever scored.

Splitting: a range of up to SINGLE_LINE_LIMIT lines is then scored one line at a time (each line
recorded first); a larger one in SPLIT_WAYS pieces. When a worker dies on a range of one line, its
successor writes that line to the dead-letter file instead of scoring it. A poison line in a batch
of the default 1000 lines therefore costs two worker deaths (the batch, then the line); every other
line of the batch is scored. A Python exception costs no death: the worker retries the batch line by
line at once and dead-letters the lines that raise (worker/detector.py).
"""
import base64
import datetime
import json
import os
import signal
from dataclasses import dataclass

from anomaly_detector.storage.appendfile import AppendFile

SINGLE_LINE_LIMIT = 1024   # one line at a time below this: ~1 ms a line, and the fewest deaths
SPLIT_WAYS = 16            # above it: 16 pieces, so a 100,000-line batch needs 4 deaths, not 17 halvings
HUNG_SIGNALS = (signal.SIGABRT, signal.SIGKILL)   # what the supervisor sends a hung worker


@dataclass(frozen=True)
class Death:
    """A predecessor died while scoring ring lines [first, first + count)."""

    first: int
    count: int
    reason: str


def death_reason(exit_status, seconds_scoring, heartbeat_timeout):
    """The dead-letter reason for a worker that died this way (exit_status as os.waitstatus_to_exitcode)."""
    if exit_status < 0 and -exit_status in HUNG_SIGNALS and seconds_scoring >= heartbeat_timeout:
        return "worker killed while scoring (hung %g s)" % heartbeat_timeout
    if exit_status < 0:
        try:
            name = signal.Signals(-exit_status).name
        except ValueError:
            name = "unknown"
        return "crashed: signal %d (%s)" % (-exit_status, name)
    return "crashed: exit status %d" % exit_status


def inherited_death(control, row, slot, tail, pid, heartbeat_timeout):
    """The Death this worker inherits in counter row `row` / child slot `slot`, or None.

    tail: the ring's acknowledged count (where this worker's reader starts); a record wholly below it
    was acknowledged before the predecessor could clear it.
    """
    first, count, started, owner = control.scoring(row)
    if count == 0 or owner == pid or first + count <= tail:
        return None
    child = control.child_table()[slot]
    if child["stopped"] and int(child["exit_status"]) == -signal.SIGKILL:
        return None   # killed by the stop timeout (a long drain), not by a line: score the range as usual
    took = float(child["exited"]) - started   # from the range's start to the predecessor's reaping
    reason = death_reason(int(child["exit_status"]), took, heartbeat_timeout)
    start = max(first, tail)
    return Death(start, first + count - start, reason)


class SuspectRange:
    """Where the worker stands after an inherited death: how many lines to pop next, and whether
    the next line is to be dead-lettered instead of scored."""

    def __init__(self, death=None):
        self.poison = -1        # ring seq of a line a worker died on alone
        self.end = 0            # lines before this seq are scored in pieces of `piece`
        self.piece = 0
        self.reason = ""
        if death is not None:
            self.reason = death.reason
            if death.count == 1:
                self.poison = death.first
            else:
                self.end = death.first + death.count
                self.piece = split_size(death.count)

    def plan(self, seq, batch_size):
        """(lines to pop from ring seq `seq`, dead-letter them) for the next step."""
        if seq == self.poison:
            return 1, True
        if seq < self.end:
            return min(self.piece, self.end - seq), False
        return batch_size, False

    @property
    def active(self):
        return self.poison >= 0 or self.end > 0


def split_size(count):
    """Lines per piece when re-scoring a range of `count` lines a worker died on."""
    if count <= SINGLE_LINE_LIMIT:
        return 1
    return -(-count // SPLIT_WAYS)


def dead_letter_record(line, worker, input_name, source, seq, input_pos, reason, now=None):
    """One dead-letter JSON line (bytes). The line is kept whole: as text, and as base64 as well
    when it is not valid UTF-8 (the text then shows the bad bytes as \\xNN escapes)."""
    raw = bytes(line)
    try:
        text, exact = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        text, exact = raw.decode("utf-8", "backslashreplace"), False
    stamp = datetime.datetime.fromtimestamp(now, datetime.timezone.utc) if now is not None \
        else datetime.datetime.now(datetime.timezone.utc)
    record = {"time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "worker": worker,
              "input": input_name, "source": source, "ring_seq": seq, "input_pos": input_pos,
              "reason": reason, "line": text}
    if not exact:
        record["line_base64"] = base64.b64encode(raw).decode("ascii")
    return (json.dumps(record, ensure_ascii=True) + "\n").encode("ascii")


class DeadLetterFile:
    """The dead-letter file, bounded: a record that would take it past max_bytes is refused (counted in
    `refused`, the metric dead_letter_lines_refused_total, and logged by the worker), so a flood of poison
    lines cannot fill the disk the state lives on. An I/O error (a full disk) propagates with `remaining`,
    the bytes still to write: the worker keeps the batch unacknowledged and writes them later."""

    def __init__(self, path, max_bytes):
        self.file = AppendFile(path)
        self.path, self.max_bytes = path, max_bytes
        self.refused = 0

    def write(self, data):
        """Append these records (JSON lines) as far as the bound allows; returns how many were refused."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        kept, refused = [], 0
        for record in data.splitlines(keepends=True):
            if size + len(record) > self.max_bytes:
                refused += 1
                continue
            kept.append(record)
            size += len(record)
        self.refused += refused
        data = b"".join(kept)
        try:
            self.file.write(data)
        except OSError as exc:   # what is left to write: the records kept, less what reached the file
            exc.remaining = data[getattr(exc, "written", 0):]
            raise
        return refused

    def close(self):
        self.file.close()
