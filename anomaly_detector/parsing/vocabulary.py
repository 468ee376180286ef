"""The deployment's template vocabulary: template text -> id, assigned once and shared by every worker.

Used by parsing/miner.py (a TemplateMiner given a vocabulary takes its new ids from it and registers
the texts its templates widen to) and by pipeline.py (opens it for the daemon's workers; replay
keeps its own, per-run ids). Without it each worker numbered its templates itself, so the same line
had a different id in each worker and models could not move between workers.

One append-only file, `<state_dir>/baselines/vocabulary.jsonl`, one entry a line: `[id, tokens, text]`
(tokens as the miner keeps them, latin-1 strings; text as operators read it). An id has one entry
for its first text and one for each text it later widened to; its last entry is its current text.
Assignment is atomic across the worker processes of a machine: an exclusive flock on the file
around "read what others appended, append mine". Readers take no lock and read only whole lines,
so a line half-written by a writer killed mid-append is ignored (and cut off by the next writer).
Appends are not fsynced one by one (a burst of new templates at start would cost a disk flush
each); flush() does it, and the miner's snapshot calls it first, so a saved model never names an
id the vocabulary could lose in a power cut.

Bounded: at most `max_entries` entries ([parsing] vocabulary_max_entries). When full, a new template
gets no id (the miner reports its lines under <unclustered>) and a widened text is not registered
(the template keeps its id, other workers just cannot adopt its wider text); both are counted
(refused_new, refused_widened) and logged once.
"""
import fcntl
import json
import logging
import os

log = logging.getLogger(__name__)

FILE_NAME = "vocabulary.jsonl"


def key_of(tokens):
    """The vocabulary key of a miner template: its tokens (bytes) as a tuple."""
    return tuple(tokens)


def _encode(tokens):
    return [t.decode("latin-1") for t in tokens]


def _decode(tokens):
    return tuple(t.encode("latin-1") for t in tokens)


class Vocabulary:
    """The vocabulary file at `path`, read incrementally; ids are dense from 0."""

    def __init__(self, path, max_entries, render=None):
        self.path = path
        self.max_entries = int(max_entries)
        self._render = render or (lambda tokens: b" ".join(tokens).decode("utf-8", "replace"))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._ids = {}          # key -> id (the first id a text was given)
        self._latest = {}       # id -> key of its last entry (None: an id reserved without a text)
        self._next = 0          # the id the next new text gets
        self._entries = 0
        self._offset = 0        # bytes of the file read so far (always at a line end)
        self._fresh = {}        # id -> key: entries read since take_new()
        self._dirty = False     # appended since the last flush()
        self._bad_lines = 0
        self.refused_new = 0
        self.refused_widened = 0
        self._full_logged = False
        self.refresh()

    def __len__(self):
        return self._entries

    @property
    def full(self):
        return self._entries >= self.max_entries

    def ids(self):
        """{id: current text} of every id with a text."""
        return {tid: self._render(key) for tid, key in self._latest.items() if key is not None}

    def lookup(self, tokens):
        """The id given to these template tokens, or None (no lock: what was read so far)."""
        return self._ids.get(key_of(tokens))

    def assign(self, tokens, taken=()):
        """The id of this template text, given now if it has none; None when the vocabulary is full.

        taken: ids the caller already uses for other texts; a text registered under one of them gets a
        new id reserved without a text instead (two workers widened one cluster two ways)."""
        key = key_of(tokens)
        tid = self._ids.get(key)
        if tid is not None and tid not in taken:
            return tid
        if self.full:   # for good (append-only): a refused line's repeats take no lock
            return self._refuse_new()
        with self._locked():
            tid = self._ids.get(key)
            if tid is not None and tid not in taken:
                return tid
            if self.full:
                return self._refuse_new()
            tid = self._next
            self._append(tid, key if self._ids.get(key) is None else None)
            return tid

    def note_widened(self, tokens, tid):
        """Register the text a template widened to under its id (kept by the template: one id per
        cluster); a text already registered keeps its first id. Returns whether it was written."""
        key = key_of(tokens)
        if key in self._ids:
            return False
        if self.full:
            self.refused_widened += 1
            return False
        with self._locked():
            if key in self._ids:
                return False
            if self.full:
                self.refused_widened += 1
                self._log_full()
                return False
            self._append(int(tid), key)
            return True

    def refresh(self):
        """Read the entries other processes appended since the last read (whole lines only)."""
        size = os.fstat(self._fd).st_size
        if size <= self._offset:
            return
        data = os.pread(self._fd, size - self._offset, self._offset)
        cut = data.rfind(b"\n") + 1
        for line in data[:cut].splitlines():
            self._take_line(line)
        self._offset += cut

    def take_new(self):
        """[(id, tokens)] of the ids whose text is new since the last call (own entries included),
        after a refresh(); ids reserved without a text are left out."""
        self.refresh()
        fresh, self._fresh = self._fresh, {}
        return [(tid, key) for tid, key in sorted(fresh.items()) if key is not None]

    def flush(self):
        """Make the entries appended by this process durable (before a snapshot names their ids)."""
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self):
        if self._fd is not None:
            self.flush()
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------ internals
    def _take_line(self, line):
        try:
            tid, tokens = json.loads(line)[:2]
            tid = int(tid)
            key = None if tokens is None else _decode(tokens)
        except (ValueError, TypeError):
            self._bad_lines += 1
            if self._bad_lines == 1:
                log.warning("vocabulary %s: an unreadable entry at byte %d skipped (others are read on)",
                            self.path, self._offset)
            return
        if key is not None:
            self._ids.setdefault(key, tid)
        self._latest[tid] = key if key is not None else self._latest.get(tid)
        self._fresh[tid] = self._latest[tid]
        self._next = max(self._next, tid + 1)
        self._entries += 1

    def _append(self, tid, key):
        tokens = None if key is None else _encode(key)
        text = None if key is None else self._render(key)
        line = (json.dumps([tid, tokens, text]) + "\n").encode("ascii")
        os.write(self._fd, line)
        self._dirty = True
        self.refresh()

    def _refuse_new(self):
        self.refused_new += 1
        self._log_full()
        return None

    def _log_full(self):
        if not self._full_logged:
            self._full_logged = True
            log.warning("vocabulary %s holds %d entries ([parsing] vocabulary_max_entries): new templates are "
                        "reported under <unclustered> and wider texts are not registered (counted in "
                        "anomaly_detector_vocabulary_refused_total)", self.path, self._entries)

    def _locked(self):
        return _Lock(self)


class _Lock:
    """Exclusive flock on the file; on entry, read what others appended and cut a torn last line."""

    def __init__(self, vocabulary):
        self.v = vocabulary

    def __enter__(self):
        fcntl.flock(self.v._fd, fcntl.LOCK_EX)
        try:
            self.v.refresh()
            size = os.fstat(self.v._fd).st_size
            if size > self.v._offset:    # a writer died mid-line: no one else appends while we hold the lock
                log.warning("vocabulary %s: a torn last entry (%d bytes) cut off", self.v.path, size - self.v._offset)
                os.ftruncate(self.v._fd, self.v._offset)
        except BaseException:
            fcntl.flock(self.v._fd, fcntl.LOCK_UN)
            raise
        return self.v

    def __exit__(self, *exc):
        fcntl.flock(self.v._fd, fcntl.LOCK_UN)
        return False
