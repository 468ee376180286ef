"""The deployment's template vocabulary: template text -> id, assigned once and shared by every worker.

Used by parsing/miner.py (a TemplateMiner given a vocabulary takes its new ids from it and registers
the texts its templates widen to) and by pipeline.py (opens it for the daemon's workers; replay
keeps its own, per-run ids). Without it each worker numbered its templates itself, so the same line
had a different id in each worker and models could not move between workers.

An entry is `[id, tokens, text]` (tokens as the miner keeps them, latin-1 strings; text as operators
read it). An id has one entry for its first text and one for each text it later widened to; its last
entry is its current text. Ids are dense from 0. Two stores:

- Vocabulary: one machine. An append-only file, `<state_dir>/baselines/vocabulary.jsonl`, one entry a
  line. Assignment is atomic across the worker processes: an exclusive flock on the file around
  "read what others appended, append mine". Readers take no lock and read only whole lines, so a
  line half-written by a writer killed mid-append is ignored (and cut off by the next writer).
  Appends are not fsynced one by one (a burst of new templates at start would cost a disk flush
  each); flush() does it, and the miner's snapshot calls it first, so a saved model never names an
  id the vocabulary could lose in a power cut.
- RedisVocabulary: several machines ([parsing] vocabulary_url). A hash text -> id, a counter and a
  list of the entries in order, under one key prefix; a Lua script assigns (HGET, else INCR + HSET +
  RPUSH) atomically; readers read the list from where they stopped (LRANGE). While Redis cannot be
  reached, a new template gets no id (its lines are reported under <unclustered>) and a wider text is
  not registered: counted as refused_unavailable, logged, retried every RETRY_SECONDS. Ids outlive a
  Redis restart only if Redis persists its data (appendonly yes): a vocabulary lost while the
  daemons' models are kept would give known ids to new texts.

`first`: tokens registered before anything else by every process that opens the store (at each
connection for Redis), so the first entry of a store, id 0, is always theirs (pipeline.py: the
reserved <unclustered> template, which a miner can then name even while Redis is away).

Bounded: at most `max_entries` entries ([parsing] vocabulary_max_entries). When full, a new template
gets no id (the miner reports its lines under <unclustered>) and a widened text is not registered
(the template keeps its id, other workers just cannot adopt its wider text); both are counted
(refused_new, refused_widened) and logged once.
"""
import fcntl
import json
import logging
import os

from anomaly_detector.redis_link import Backoff, close_quietly, connect

log = logging.getLogger(__name__)

FILE_NAME = "vocabulary.jsonl"
RETRY_SECONDS = 5.0   # RedisVocabulary: how long an unreachable Redis is not asked again


def key_of(tokens):
    """The vocabulary key of a miner template: its tokens (bytes) as a tuple."""
    return tuple(tokens)


def _encode(tokens):
    return [t.decode("latin-1") for t in tokens]


def _decode(tokens):
    return tuple(t.encode("latin-1") for t in tokens)


class _Entries:
    """What both stores share: the entries read so far, assignment on top of the store's atomic
    steps (_assign_new, _register), the limit and its counts."""

    def __init__(self, where, max_entries, render, first=None):
        self.path = where
        self.first = None if first is None else list(first)
        self.max_entries = int(max_entries)
        self._render = render or (lambda tokens: b" ".join(tokens).decode("utf-8", "replace"))
        self._ids = {}          # key -> id (the first id a text was given)
        self._latest = {}       # id -> key of its last entry (None: an id reserved without a text)
        self._next = 0          # the id the next new text gets
        self._entries = 0
        self._fresh = {}        # id -> key: entries read since take_new()
        self._bad_lines = 0
        self.refused_new = 0
        self.refused_widened = 0
        self.refused_unavailable = 0   # RedisVocabulary: Redis could not be reached
        self._full_logged = False

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
        """The id of this template text, given now if it has none; None when the vocabulary is full
        (or cannot be reached).

        taken: ids the caller already uses for other texts (a container; its `floor`, when it has one, is
        above all of them); a text registered under one of them gets a new id reserved without a text
        instead, at least `floor` (two workers widened one cluster two ways, or the caller's models were
        saved with ids of their own by an older release)."""
        key = key_of(tokens)
        tid = self._ids.get(key)
        if tid is not None and tid not in taken:
            return tid
        if self.full:   # for good (append-only): a refused line's repeats ask no one
            return self._refuse_new()
        floor = int(getattr(taken, "floor", 0))
        tid = self._assign_new(key, reserve=tid is not None, floor=floor)
        if tid is not None and tid in taken:    # a new id the caller already uses, or a race: above them all
            tid = self._assign_new(key, reserve=True, floor=floor)
        return None if tid in taken else tid

    def note_widened(self, tokens, tid):
        """Register the text a template widened to under its id (kept by the template: one id per
        cluster); a text already registered keeps its first id. Returns whether it was written."""
        key = key_of(tokens)
        if key in self._ids:
            return False
        if self.full:
            self.refused_widened += 1
            return False
        return self._register(key, int(tid))

    def take_new(self):
        """[(id, tokens)] of the ids whose text is new since the last call (own entries included),
        after a refresh(); ids reserved without a text are left out."""
        self.refresh()
        fresh, self._fresh = self._fresh, {}
        return [(tid, key) for tid, key in sorted(fresh.items()) if key is not None]

    def _entry(self, tid, key):
        """The entry line of id tid and text key (None: reserved), as stored."""
        tokens = None if key is None else _encode(key)
        text = None if key is None else self._render(key)
        return json.dumps([tid, tokens, text])

    def _take_line(self, line):
        try:
            tid, tokens = json.loads(line)[:2]
            tid = int(tid)
            key = None if tokens is None else _decode(tokens)
        except (ValueError, TypeError):
            self._bad_lines += 1
            if self._bad_lines == 1:
                log.warning("vocabulary %s: an unreadable entry skipped (others are read on)", self.path)
            return
        if key is not None:
            self._ids.setdefault(key, tid)
        self._latest[tid] = key if key is not None else self._latest.get(tid)
        self._fresh[tid] = self._latest[tid]
        self._next = max(self._next, tid + 1)
        self._entries += 1

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


class Vocabulary(_Entries):
    """The vocabulary file at `path` (one machine), read incrementally."""

    def __init__(self, path, max_entries, render=None, first=None):
        super().__init__(path, max_entries, render, first)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._offset = 0        # bytes of the file read so far (always at a line end)
        self._dirty = False     # appended since the last flush()
        self.refresh()
        if self.first is not None:
            self.assign(self.first)

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

    def _assign_new(self, key, reserve, floor=0):
        with _Lock(self):
            tid = self._ids.get(key)
            if tid is not None and not reserve:
                return tid
            if self.full:
                return self._refuse_new()
            tid = max(self._next, floor) if reserve else self._next
            self._append(tid, None if reserve else key)
            return tid

    def _register(self, key, tid):
        with _Lock(self):
            if key in self._ids:
                return False
            if self.full:
                self.refused_widened += 1
                self._log_full()
                return False
            self._append(tid, key)
            return True

    def _append(self, tid, key):
        os.write(self._fd, (self._entry(tid, key) + "\n").encode("ascii"))
        self._dirty = True
        self.refresh()


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


# KEYS: the hash (text -> id), the list of entries, the id counter. ARGV: the text's key, max_entries,
# "1" to reserve an id without a text, the entry's tail after "[id," (tokens and text, JSON), the
# id to register the text under ("" for a new id), and the least id a reserved one may have. Returns the id, -1 when full, -2 when the text was
# registered already (a widened text: nothing written).
_SCRIPT = """
local key, limit, reserve, tail, given = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local floor = tonumber(ARGV[6])
local known = redis.call('HGET', KEYS[1], key)
if known and given ~= '' then return -2 end
if known and reserve ~= '1' then return tonumber(known) end
if redis.call('LLEN', KEYS[2]) >= limit then return -1 end
local id
if given ~= '' then id = tonumber(given) else id = redis.call('INCR', KEYS[3]) - 1 end
if reserve == '1' and id < floor then
  id = floor
  redis.call('SET', KEYS[3], floor + 1)
end
if reserve == '1' then
  redis.call('RPUSH', KEYS[2], '[' .. id .. ',null,null]')
else
  if not known then redis.call('HSET', KEYS[1], key, id) end
  redis.call('RPUSH', KEYS[2], '[' .. id .. ',' .. tail .. ']')
end
return id
"""


class RedisVocabulary(_Entries):
    """The vocabulary in Redis at `url` under `prefix` (every daemon of a deployment), read incrementally."""

    def __init__(self, url, prefix, max_entries, render=None, first=None, socket_timeout=5.0):
        super().__init__("%s (%s)" % (prefix, _without_password(url)), max_entries, render, first)
        self.url, self.prefix = url, prefix
        self.keys = [prefix + ":ids", prefix + ":entries", prefix + ":next"]
        self._timeout = float(socket_timeout)
        self._client = None
        self._script = None
        self._offset = 0        # entries of the list read so far
        self._backoff = Backoff(RETRY_SECONDS, RETRY_SECONDS)
        self.refresh()

    def refresh(self):
        client = self._connected()
        if client is None:
            return
        try:
            rows = client.lrange(self.keys[1], self._offset, -1)
        except Exception as exc:   # redis.RedisError and socket errors alike: Redis is away
            self._lost(exc)
            return
        for row in rows:
            self._take_line(row)
        self._offset += len(rows)

    def flush(self):
        """Nothing to do: Redis keeps what it acknowledged (as durably as it is configured to)."""

    def close(self):
        close_quietly(self._client)
        self._client = None

    def _assign_new(self, key, reserve, floor=0):
        tid = self._run(key, reserve, "", floor)
        if tid is None or tid == -2:
            return None
        if tid == -1:
            self.refresh()
            return self._refuse_new()
        return tid

    def _register(self, key, tid):
        got = self._run(key, False, str(tid), 0)
        if got == -1:
            self.refused_widened += 1
            self._log_full()
        return got is not None and got >= 0

    def _run(self, key, reserve, given, floor):
        """The script's answer, after reading what it (and others) appended; None while Redis is away."""
        client = self._connected()
        if client is None:
            self._unavailable()
            return None
        tail = self._entry(0, key)[len("[0, "):-1]
        try:
            args = [json.dumps(_encode(key)), self.max_entries, "1" if reserve else "0", tail, given, floor]
            got = int(self._script(keys=self.keys, args=args, client=client))
        except Exception as exc:
            self._lost(exc)
            self._unavailable()
            return None
        self.refresh()
        return got

    def _connected(self):
        if self._client is not None:
            return self._client
        if not self._backoff.due():
            return None
        try:
            client = connect(self.url, self._timeout)
            client.ping()
            self._script = client.register_script(_SCRIPT)
        except Exception as exc:
            self._lost(exc)
            return None
        if self._backoff.succeeded() is not None:
            log.info("vocabulary %s: reachable again", self.path)
        self._client = client
        if self.first is not None and self.lookup(self.first) is None:
            self.assign(self.first)
        return self._client

    def _lost(self, exc):
        close_quietly(self._client)
        self._client = None
        if self._backoff.failed()[0]:
            log.error("vocabulary %s cannot be reached (%s: %s): new templates are reported under <unclustered> "
                      "until it is (counted in anomaly_detector_vocabulary_refused_total, reason unavailable); "
                      "retried every %.0f s", self.path, type(exc).__name__, exc, RETRY_SECONDS)

    def _unavailable(self):
        self.refused_unavailable += 1


def _without_password(url):
    """The URL as logged: a password in it is not."""
    head, at, tail = url.rpartition("@")
    if not at:
        return url
    scheme, _, _credentials = head.partition("://")
    return "%s://***@%s" % (scheme, tail)
