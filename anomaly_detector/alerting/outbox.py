"""The outbox: incident events on disk between the workers that write them and the alerter that sends them.

Layout under `<state_dir>/outbox/`:
  <writer>.<first seq, 12 digits>.jsonl   segments of one writer (a worker: "worker-0"), append-only
  checkpoints/<sink>.json                 per sink: the last seq delivered of each writer (+ sink state)
  alerter-stats.json                      the alerter's counters and queue figures, read by the sidecar

One writer per file: a worker appends its events (one JSON object a line, each with the writer's own
increasing `seq`) and fsyncs once per batch; it never waits for the alerter. The alerter tails every
segment and advances a checkpoint per sink after each delivery. Segments every sink is past are
deleted by their writer. Bounds ([alerting] outbox_max_alerts, outbox_max_mb, shared evenly by the
workers) cover the events on disk: when new events would pass them, the writer deletes its oldest
segment (a sixteenth of the bound), counts its undelivered events as dropped and logs it.
A crash mid-write leaves a line without its newline at the end of a segment; a writer always starts
a new segment, and readers skip such a tail (and any line that is not JSON) with one log line.
"""
import json
import logging
import os
import re

from anomaly_detector.storage.atomic import fsync_dir

log = logging.getLogger(__name__)

STATS_FILE = "alerter-stats.json"
SEGMENT_SHARE = 16          # a segment holds at most 1/16 of the bound: a drop costs no more than that
_SEGMENT = re.compile(r"^(?P<writer>[A-Za-z0-9_-]+)\.(?P<seq>\d{12})\.jsonl$")


def outbox_dir(cfg):
    return os.path.join(cfg["paths"]["state_dir"], "outbox")


def sink_file_name(sink):
    """A file name for a sink's checkpoint: configobj section names may hold any character."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sink) + ".json"


def segments(directory, writer=None):
    """[(writer, first seq, path)] of the segments in `directory`, oldest first per writer."""
    found = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        m = _SEGMENT.match(name)
        if m and (writer is None or m.group("writer") == writer):
            found.append((m.group("writer"), int(m.group("seq")), os.path.join(directory, name)))
    return sorted(found)


def outbox_bytes(directory):
    """Disk bytes of every segment (what the bound limits)."""
    total = 0
    for _writer, _seq, path in segments(directory):
        try:
            total += os.path.getsize(path)
        except OSError:
            pass
    return total


def read_stats(path):
    """The alerter's stats file as a dict ({} when absent or unreadable: the sidecar shows zeros)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_json_atomic(path, obj):
    """Replace `path` with `obj` as JSON: written to a temporary file, fsynced, renamed."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(obj, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(directory, sink):
    """{"writers": {writer: last seq delivered}, "state": {...}} of a sink; empty when absent or unreadable."""
    path = os.path.join(directory, "checkpoints", sink_file_name(sink))
    try:
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict) and isinstance(data.get("writers"), dict):
            return data
        raise ValueError("not a checkpoint object")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.error("alert checkpoint %s unreadable (%s): the sink starts from the oldest event in the outbox", path,
                  exc)
    return {"writers": {}, "state": {}}


def write_checkpoint(directory, sink, checkpoint):
    os.makedirs(os.path.join(directory, "checkpoints"), exist_ok=True)
    write_json_atomic(os.path.join(directory, "checkpoints", sink_file_name(sink)), checkpoint)


def read_lines(path, offset):
    """(records, new offset) of the complete lines of `path` past `offset`; a line that is not JSON is
    skipped and logged (a torn write), a last line without its newline is left for later."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("seq"), int):
                raise ValueError("no seq")
            records.append(record)
        except ValueError:
            log.error("outbox %s: skipped a corrupt record at about byte %d", path, offset)
    return records, offset + end


class OutboxWriter:
    """A worker's side: append a batch's events durably, within the bounds; never blocks on the alerter."""

    def __init__(self, directory, writer, sinks, max_events, max_bytes, on_drop=None):
        self.directory, self.writer, self.sinks = directory, writer, list(sinks)
        self.max_events, self.max_bytes = max(1, int(max_events)), max(1, int(max_bytes))
        self.segment_events = max(1, self.max_events // SEGMENT_SHARE)
        self.segment_bytes = max(1, self.max_bytes // SEGMENT_SHARE)
        self.on_drop = on_drop
        os.makedirs(directory, exist_ok=True)
        self.segments = []   # [[first seq, last seq, bytes, path]] oldest first; the last one is written to
        for _w, first, path in segments(directory, writer):
            last, size = _last_seq(path, first), os.path.getsize(path)
            self.segments.append([first, last, size, path])
        # Past every seq a sink has delivered too: should the segments be gone, a seq used again would be
        # taken for delivered and never sent.
        delivered = max([int(read_checkpoint(directory, s)["writers"].get(writer, 0)) for s in self.sinks] + [0])
        self.next_seq = max((self.segments[-1][1] + 1) if self.segments else 1, delivered + 1)
        self._fd = None   # a new segment on the first append: a torn tail of a dead writer stays its last line

    def append(self, events):
        """Write `events` (dicts; seq and writer are set here) and fsync; returns how many were dropped."""
        if not events:
            return 0
        lines = []
        for event in events:
            event = dict(event, seq=self.next_seq, writer=self.writer)
            self.next_seq += 1
            lines.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
        dropped = 0
        if len(lines) > self.max_events:   # one batch over the whole bound: keep its newest events
            dropped, lines = len(lines) - self.max_events, lines[-self.max_events:]
        dropped += self._make_room(len(lines), sum(map(len, lines)))
        for line in lines:
            self._write(line)
        os.fsync(self._fd)
        if dropped and self.on_drop is not None:
            self.on_drop(dropped)
        return dropped

    def _write(self, line):
        seq = json.loads(line)["seq"]
        current = self.segments[-1] if self.segments and self._fd is not None else None
        if current is None or current[1] - current[0] + 1 >= self.segment_events or \
                current[2] + len(line) > self.segment_bytes:
            self._open_segment(seq)
            current = self.segments[-1]
        os.write(self._fd, line)
        current[1], current[2] = seq, current[2] + len(line)

    def _open_segment(self, seq):
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
        path = os.path.join(self.directory, "%s.%012d.jsonl" % (self.writer, seq))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        fsync_dir(self.directory)
        self.segments.append([seq, seq - 1, 0, path])

    def delivered(self):
        """The last seq of this writer every configured sink delivered (0 before any)."""
        if not self.sinks:
            return self.next_seq - 1
        return min(int(read_checkpoint(self.directory, s)["writers"].get(self.writer, 0)) for s in self.sinks)

    def undelivered(self, delivered=None):
        """(events, bytes) on disk not yet delivered to every sink (bytes: of the segments holding them)."""
        delivered = self.delivered() if delivered is None else delivered
        events = sum(max(0, last - max(first - 1, delivered)) for first, last, _size, _path in self.segments)
        size = sum(size for first, last, size, _path in self.segments if last > delivered)
        return events, size

    def _make_room(self, events, size):
        """Delete delivered segments, then the oldest undelivered ones while the new events would not fit."""
        delivered = self.delivered()
        for segment in list(self.segments[:-1]):   # the newest stays: the next writer's seq goes on from it
            if segment[1] <= delivered:
                self._delete(segment)
        dropped = 0
        while self.segments:
            held = sum(max(0, last - max(first - 1, delivered)) for first, last, _s, _p in self.segments)
            disk = sum(s[2] for s in self.segments)
            if held + events <= self.max_events and disk + size <= self.max_bytes:
                break
            oldest = self.segments[0]
            lost = max(0, oldest[1] - max(oldest[0] - 1, delivered))
            if oldest is self.segments[-1] and self._fd is not None:
                os.close(self._fd)   # the segment being written: the next write opens a new one
                self._fd = None
            self._delete(oldest)
            dropped += lost
            log.warning("%s: outbox full (%d alerts, %d bytes held; [alerting] outbox_max_alerts and "
                        "outbox_max_mb, shared by the workers, allow %d alerts and %d bytes here): dropped the %d "
                        "oldest undelivered alerts", self.writer, held, disk, self.max_events, self.max_bytes, lost)
        return dropped

    def _delete(self, segment):
        try:
            os.unlink(segment[3])
        except FileNotFoundError:
            pass
        self.segments.remove(segment)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _last_seq(path, first):
    """The seq of the last complete record of a segment (first - 1 when it has none)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return first - 1
    for line in reversed(tail[:tail.rfind(b"\n") + 1].splitlines()):
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return first - 1


class OutboxReader:
    """The alerter's side: tail every writer's segments and hand out the new events in order of writing."""

    def __init__(self, directory):
        self.directory = directory
        self.offsets = {}   # path -> bytes read

    def poll(self):
        """New events since the last call, sorted by (time written, writer, seq)."""
        found = []
        present = set()
        for _writer, _first, path in segments(self.directory):
            present.add(path)
            try:
                records, self.offsets[path] = read_lines(path, self.offsets.get(path, 0))
            except OSError:
                continue
            found += records
        self.offsets = {p: o for p, o in self.offsets.items() if p in present}
        return sorted(found, key=lambda e: (e.get("at", 0), str(e.get("writer")), e["seq"]))
