"""The control block in shared memory: child table with heartbeats, per-worker counters, run-time flags,
and per-worker scoring records (the ring range a worker is scoring, which outlives the worker).

The supervisor creates it before forking (in a shm.Segment) and fills the child table
(supervisor.children); workers stamp heartbeats, add to their counter row and read the flags each
batch; the metrics sidecar sums the rows and reads the table for /health and /metrics.

Rules that make it lock-free: every cell is an aligned 8-byte value, so no reader ever sees a torn
value; every cell has one writer (child table: the supervisor writes pid/state/started/restarts/
exit_status/exited, the child only its heartbeat; counter row r: only the worker in slot r, which keeps
the row across its restarts so counters never go backwards; flags: plain stores, the generation
counters are bumped by the supervisor only; scoring record r: only the worker in slot r).
Readers tolerate a row that is mid-update because
each counter only grows. Heartbeats are time.monotonic() (CLOCK_MONOTONIC, one clock for every
process on the machine), so they are comparable across processes and immune to wall-clock jumps.

Intended use:

    supervisor: block = ControlBlock.create(arena.allocate("control", control_bytes(8, 8)).buf, 8, 8)
                block.set_flags(batch_size=cfg.batch_size, tier4_enabled=True)
    worker:     counters = block.counters(slot); each batch: block.beat(slot); flags = block.flags();
                ... counters.add(lines_processed=n, batches=1, errors=e)
    sidecar:    block.counter_totals(); block.child_table(); block.set_flags(backpressure=True)
    input:      row = block.input_stats(i, name); per batch: row.add(rejected_413=1, lines_truncated=n)
    sidecar:    block.input_stats_snapshot(names) -> {name: {field: int}} for the inputs' labelled metrics
    worker:     block.begin_scoring(row, first_seq, n); ... score ...; ack; block.end_scoring(row)
    successor:  first, n, started, pid = block.scoring(row)   # n > 0: the predecessor died on that range

Per-input stats: one row per configured input (at most MAX_INPUTS, the bound checks.py enforces), written
by one process: the listener for network inputs, the input process for the others. Row i belongs to the i-th [inputs] subsection; its first word is a hash of the
input's name, so after a reload that renames or reorders inputs the process claiming it zeroes a row it
inherits from another input, and the sidecar reports a row only under the name it was claimed for.
"""
import dataclasses
import hashlib
import numbers
import os
import time

import numpy as np

CONTROL_MAGIC = 0x61645F6374726C31  # "ad_ctrl1": tells a control block from any other mapping
CONTROL_VERSION = 4  # 2: per-input stats rows and per-worker scoring records after the flags; 3: child "stopped";
# 4: a latency histogram per counter row after the scoring records
CACHE_LINE = 64
_HEADER_WORDS = 8

# One row per child slot; each field one 8-byte cell, the row padded to a cache line. exit_status,
# exited and stopped describe the last reaped process of the slot (stopped: 1 when it exited while
# the supervisor was stopping it, e.g. SIGKILLed past the stop timeout mid-drain).
CHILD_DTYPE = np.dtype({
    "names": ["pid", "state", "started", "heartbeat", "restarts", "exit_status", "exited", "stopped"],
    "formats": ["<i8", "<i8", "<f8", "<f8", "<u8", "<i8", "<f8", "<i8"],
    "offsets": [0, 8, 16, 24, 32, 40, 48, 56],
    "itemsize": CACHE_LINE,
})

# Columns of a counter row (uint64, only ever increased by the one process owning the row).
# Workers fill the first six and `incidents`; the input process has its own row for the read side.
# `files_deferred` is a gauge (files waiting for a descriptor now), set only by the input process.
COUNTER_FIELDS = ("lines_processed", "errors", "batches", "bytes_processed", "anomalies", "busy_ns",
                  "incidents", "lines_read", "lines_dropped", "read_errors", "lines_dead_lettered",
                  "output_errors", "spool_refused_full", "spool_refused_error", "spool_torn_records",
                  "files_deferrals", "files_deferred", "rule_scans_cut", "source_capped_lines",
                  "volume_gaps_skipped",
                  "json_fields_over_cap", "series_values_refused", "lines_unclustered",
                  "alerts_generated", "alerts_dropped", "alert_write_errors", "batch_deadline_hits",
                  "files_change_rescans", "latency_ns_sum", "latency_count",
                  "kernels_compiled_after_fork", "timestamps_unparsed", "feedback_suppressed", "feedback_flagged",
                  "anomalies_t1", "anomalies_t2", "anomalies_t3", "anomalies_t4",
                  # storage.health: state files set aside on load, by reason; failed state writes; and a
                  # gauge, 1 while the row owner's last write of some state file failed (a full disk)
                  "state_load_truncated", "state_load_zero_filled", "state_load_checksum", "state_load_foreign",
                  "state_load_version", "state_load_shape", "state_load_unreadable", "state_write_errors",
                  "state_writes_failing", "dead_letter_refused",
                  # --optimize-models applied by a running worker (worker/optimize.py)
                  "models_optimized", "templates_merged",
                  # tier 2 drops and silences withdrawn after drop_hold_seconds (the key came back)
                  "volume_drops_withdrawn",
                  # redis inputs (inputs/redis_stream.py); redis_disconnected is a gauge
                  "redis_reconnects", "redis_claimed", "redis_acked", "redis_connect_failures",
                  "redis_disconnected",
                  # parsing/vocabulary.py: new templates and widened texts refused when full; either when Redis is away
                  "vocabulary_refused_new", "vocabulary_refused_widened", "vocabulary_refused_unavailable",
                  "vocabulary_entries",   # a gauge: the vocabulary's size as this worker last read it
                  # tier 2 parameter values that qualified for a volume baseline beyond max_value_keys
                  "volume_value_keys_refused",
                  # lines whose level was read from their message (parsing/inline_levels.py)
                  "lines_inline_level",
                  # tier 2 lines of hosts past max_hosts_per_source, counted for their source only
                  "source_hosts_dropped_lines")
# Buckets of a row's read-to-scored latency histogram: metrics.sketch.N_BUCKETS (a test checks they agree;
# ipc/ does not import from metrics/).
LATENCY_BUCKETS = 112
_COUNTER_INDEX = {name: i for i, name in enumerate(COUNTER_FIELDS)}
_ROW_WORDS = -(-len(COUNTER_FIELDS) * 8 // CACHE_LINE) * CACHE_LINE // 8

# Columns of an input's stats row after its identity word (uint64, only ever increased by the process
# that reads the input; a restarted one adds to them, so they never go backwards).
INPUT_STAT_FIELDS = (
    "rejected_400", "rejected_404", "rejected_405", "rejected_411", "rejected_413", "rejected_414",
    "rejected_431", "rejected_503", "rejected_505", "rejected_refused", "rejected_header_timeout",
    "rejected_incomplete",
    "framing_bad_count", "framing_count_too_large", "framing_overrun", "framing_short_frame",
    "lines_truncated", "lines_skipped", "udp_receive_drops", "closed_idle_timeout", "closed_evicted")
MAX_INPUTS = 64
_INPUT_INDEX = {name: i + 1 for i, name in enumerate(INPUT_STAT_FIELDS)}
_INPUT_ROW_WORDS = -(-(len(INPUT_STAT_FIELDS) + 1) * 8 // CACHE_LINE) * CACHE_LINE // 8

FLAGS_DTYPE = np.dtype([
    ("tier4_enabled", "<i8"),         # 0/1: workers skip tier 4 when 0 (admin disable-tier4 under load)
    ("backpressure", "<i8"),          # 0/1: the input process reads nothing new (admin enable-backpressure)
    ("batch_size", "<i8"),            # lines a worker pops at once
    ("learning_rate_factor", "<f8"),  # multiplies every tier's learning rate
    ("workers_wanted", "<i8"),        # admin set-workers; the supervisor forks or retires to match (arbiter)
    ("config_generation", "<u8"),     # bumped by the supervisor after an applied reload (config_reloads_total)
    ("relief_generation", "<u8"),     # bumped by the supervisor on SIGUSR1: children gc and trim caches
    ("reload_ok", "<i8"),             # 0/1: the last SIGHUP reload was applied (1 until one is rejected)
    ("reloads_rejected", "<u8"),      # bumped by the supervisor when a reload is rejected
])
# One row per counter row (worker): the ring range [first, first + count) it is scoring now, written
# before scoring and cleared once the range is scored (before its lines are written and acknowledged),
# so a successor can see which lines its predecessor died on (worker/poison.py). count is written
# last: 0 means "no range".
SCORING_DTYPE = np.dtype({
    "names": ["first", "count", "started", "pid"],
    "formats": ["<u8", "<u8", "<f8", "<i8"],
    "offsets": [0, 8, 16, 24],
    "itemsize": CACHE_LINE,
})

# Flags that only grow, by bump() (config_generation also counts the reloads applied).
GENERATION_FLAGS = ("config_generation", "relief_generation", "reloads_rejected")
DEFAULT_FLAGS = {"tier4_enabled": 1, "backpressure": 0, "batch_size": 1000, "learning_rate_factor": 1.0,
                 "workers_wanted": 2, "config_generation": 0, "relief_generation": 0, "reload_ok": 1,
                 "reloads_rejected": 0}
_FLAG_LIMITS = {"tier4_enabled": (0, 1), "backpressure": (0, 1), "batch_size": (1, 100000),
                "learning_rate_factor": (1e-6, 10.0), "workers_wanted": (1, 64), "reload_ok": (0, 1)}


@dataclasses.dataclass(frozen=True)
class RuntimeFlags:
    """A snapshot of the flags, read once per batch."""

    tier4_enabled: bool
    backpressure: bool
    batch_size: int
    learning_rate_factor: float
    workers_wanted: int
    config_generation: int
    relief_generation: int
    reload_ok: bool
    reloads_rejected: int


def _layout(max_children, counter_rows, input_rows):
    """Byte offsets (children, counters, flags, inputs, scoring, latency, end) of a block with these dimensions."""
    children = CACHE_LINE
    counters = children + max_children * CHILD_DTYPE.itemsize
    flags = counters + counter_rows * _ROW_WORDS * 8
    inputs = flags + -(-FLAGS_DTYPE.itemsize // CACHE_LINE) * CACHE_LINE
    scoring = inputs + input_rows * _INPUT_ROW_WORDS * 8
    latency = scoring + counter_rows * SCORING_DTYPE.itemsize
    end = latency + counter_rows * LATENCY_BUCKETS * 8
    return children, counters, flags, inputs, scoring, latency, end


def control_bytes(max_children, counter_rows, input_rows=MAX_INPUTS):
    """Size of the shared memory a control block with these dimensions needs."""
    return _layout(max_children, counter_rows, input_rows)[-1]


def input_identity(name):
    """The identity word of an input's stats row: a non-zero 64-bit hash of its name."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little") | 1


class ControlBlock:
    """Views of one control block in a shared buffer; safe to create before fork and inherit."""

    def __init__(self, buffer):
        header = np.frombuffer(buffer, np.uint64, count=_HEADER_WORDS)
        if int(header[0]) != CONTROL_MAGIC or int(header[1]) != CONTROL_VERSION:
            raise ValueError("buffer does not hold an initialised control block (wrong magic or version)")
        self.max_children, self.counter_rows, self.input_rows = int(header[2]), int(header[3]), int(header[4])
        children, counters, flags, inputs, scoring, latency, _ = _layout(self.max_children, self.counter_rows,
                                                                         self.input_rows)
        self._children = np.frombuffer(buffer, CHILD_DTYPE, count=self.max_children, offset=children)
        self._counters = np.frombuffer(buffer, np.uint64, count=self.counter_rows * _ROW_WORDS,
                                       offset=counters).reshape(self.counter_rows, _ROW_WORDS)
        self._flags = np.frombuffer(buffer, FLAGS_DTYPE, count=1, offset=flags)
        self._inputs = np.frombuffer(buffer, np.uint64, count=self.input_rows * _INPUT_ROW_WORDS,
                                     offset=inputs).reshape(self.input_rows, _INPUT_ROW_WORDS)
        self._scoring = np.frombuffer(buffer, SCORING_DTYPE, count=self.counter_rows, offset=scoring)
        self._latency = np.frombuffer(buffer, np.uint64, count=self.counter_rows * LATENCY_BUCKETS,
                                      offset=latency).reshape(self.counter_rows, LATENCY_BUCKETS)

    @classmethod
    def create(cls, buffer, max_children, counter_rows, input_rows=MAX_INPUTS, **flags):
        """Lay out a zeroed block with default flags (overridden by keyword) and attach to it."""
        if max_children < 1 or counter_rows < 1:
            raise ValueError("a control block needs at least one child slot and one counter row")
        size = control_bytes(max_children, counter_rows, input_rows)
        if len(memoryview(buffer)) < size:
            raise ValueError(f"buffer too small: this control block needs {size} bytes")
        words = np.frombuffer(buffer, np.uint64, count=size // 8)
        words[:] = 0
        words[2:5] = (max_children, counter_rows, input_rows)
        words[1] = CONTROL_VERSION
        words[0] = CONTROL_MAGIC  # last: a half-initialised block is never attached to
        block = cls(buffer)
        block._flags[0] = tuple(DEFAULT_FLAGS[name] for name in FLAGS_DTYPE.names)
        block.set_flags(**flags)
        return block

    # -- child table -------------------------------------------------------------------------------

    def record_child(self, slot, pid, state, started=None, restarts=None):
        """Supervisor: a child was forked into slot (or its state changed). Also resets its heartbeat."""
        row = self._children[slot:slot + 1]
        if started is not None:
            row["started"] = started
            row["heartbeat"] = started  # a new child gets a full heartbeat timeout before its first beat
        if restarts is not None:
            row["restarts"] = restarts
        row["pid"] = pid
        row["state"] = int(state)

    def record_exit(self, slot, exit_status, state, stopped=False):
        """Supervisor: the child in slot was reaped with this status (os.waitstatus_to_exitcode),
        stopped: while being stopped on request. Also stamps when (monotonic), so a successor can
        tell how long its predecessor was scoring and whether the stop, not a line, ended it."""
        row = self._children[slot:slot + 1]
        row["exited"] = time.monotonic()
        row["exit_status"] = exit_status
        row["stopped"] = int(bool(stopped))
        row["pid"] = 0
        row["state"] = int(state)

    def beat(self, slot, now=None):
        """Child: I am alive and making progress (call once per batch and while idle)."""
        self._children[slot:slot + 1]["heartbeat"] = time.monotonic() if now is None else now

    def heartbeat_age(self, slot, now=None):
        """Seconds since the child in slot last beat (or was forked)."""
        return (time.monotonic() if now is None else now) - float(self._children["heartbeat"][slot])

    def child_table(self):
        """A copy of the child table (pid, state, started, heartbeat, restarts, exit_status, exited, stopped)."""
        return self._children.copy()

    # -- counters ----------------------------------------------------------------------------------

    def counters(self, row):
        """Worker: the counter row it alone writes (the row belongs to the slot, not the pid)."""
        return WorkerCounters(self._counters[row])

    def latency_row(self, row):
        """Worker: its read-to-scored latency histogram (metrics.sketch.record_latencies fills it)."""
        return self._latency[row]

    def latency_totals(self):
        """Sidecar: the latency histograms of all rows summed (a copy)."""
        return self._latency.sum(axis=0, dtype=np.uint64)

    def counter_totals(self):
        """Sidecar: every counter summed over all rows, {name: int}."""
        sums = self._counters.sum(axis=0, dtype=np.uint64)
        return {name: int(sums[i]) for name, i in _COUNTER_INDEX.items()}

    def counter_rows_snapshot(self):
        """Sidecar: a copy of the rows as {name: uint64[counter_rows]} for per-worker detail."""
        rows = self._counters.copy()
        return {name: rows[:, i] for name, i in _COUNTER_INDEX.items()}

    # -- per-input stats -----------------------------------------------------------------------------

    def input_stats(self, index, name):
        """Input process: the stats row of the index-th input, claimed for `name` (zeroed if it held
        another input's counts). None past the last row."""
        if not 0 <= index < self.input_rows:
            return None
        row = self._inputs[index]
        identity = np.uint64(input_identity(name))
        if row[0] != identity:
            row[0] = 0        # readers ignore the row while it is reset
            row[1:] = 0
            row[0] = identity
        return InputStats(row)

    def input_stats_snapshot(self, names):
        """Sidecar: {name: {field: int}} for the inputs in config order; an input whose row is not
        (yet) claimed for its name reads as zeros."""
        rows = self._inputs.copy()
        out = {}
        for index, name in enumerate(names[:self.input_rows]):
            row = rows[index]
            claimed = int(row[0]) == input_identity(name)
            out[name] = {field: int(row[i]) if claimed else 0 for field, i in _INPUT_INDEX.items()}
        return out

    # -- scoring records ---------------------------------------------------------------------------

    def begin_scoring(self, row, first, count, now=None):
        """Worker: I am about to score ring lines [first, first + count). count is stored last, so a
        worker killed between these stores leaves count 0 (no range), never a torn range."""
        record = self._scoring[row:row + 1]
        record["count"] = 0
        record["first"] = first
        record["started"] = time.monotonic() if now is None else now
        record["pid"] = os.getpid()
        record["count"] = count

    def end_scoring(self, row):
        """Worker: the range is scored (a death while writing or acknowledging it is not the lines' fault)."""
        self._scoring[row:row + 1]["count"] = 0

    def scoring(self, row):
        """(first, count, started, pid) of the range the worker in row began and did not end; count 0: none."""
        record = self._scoring[row]
        return int(record["first"]), int(record["count"]), float(record["started"]), int(record["pid"])

    # -- flags -------------------------------------------------------------------------------------

    def flags(self):
        """A consistent-enough snapshot: each flag is read once; flags are independent of each other."""
        record = self._flags[0]
        values = {name: record[name].item() for name in FLAGS_DTYPE.names}
        for name in ("tier4_enabled", "backpressure", "reload_ok"):
            values[name] = bool(values[name])
        return RuntimeFlags(**values)

    def set_flags(self, **values):
        """Supervisor or admin handler: change flags; raises ValueError (with the reason) on a bad value."""
        for name, value in values.items():
            _check_flag(name, value)
        for name, value in values.items():
            self._flags[name] = value

    def bump(self, generation_flag):
        """Supervisor only: increment a GENERATION_FLAGS flag; returns the new value."""
        if generation_flag not in GENERATION_FLAGS:
            raise ValueError(f"{generation_flag!r} is not one of {GENERATION_FLAGS}")
        value = int(self._flags[generation_flag][0]) + 1
        self._flags[generation_flag] = value
        return value


class _CountRow:
    """A row of uint64 counts in shared memory, written by one process; add() once per batch, never per line."""

    def __init__(self, row, index):
        self._row, self._index = row, index   # index: field name -> column

    def add(self, **increments):
        for name, amount in increments.items():
            if amount < 0:
                raise ValueError(f"{name} only grows (got {amount})")
            if amount:
                self._row[self._index[name]] += np.uint64(amount)

    def value(self, name):
        return int(self._row[self._index[name]])


class WorkerCounters(_CountRow):
    """One process's counter row (COUNTER_FIELDS); it also holds a few gauges, set()."""

    def __init__(self, row):
        super().__init__(row, _COUNTER_INDEX)

    def set(self, **values):
        """Gauges kept in the row (files_deferred): the owning process sets the current value."""
        for name, value in values.items():
            if value < 0:
                raise ValueError(f"gauge {name} cannot be negative (got {value})")
            self._row[_COUNTER_INDEX[name]] = np.uint64(value)


class InputStats(_CountRow):
    """One input's stats row (INPUT_STAT_FIELDS, after its identity word)."""

    def __init__(self, row):
        super().__init__(row, _INPUT_INDEX)


def _check_flag(name, value):
    if name not in FLAGS_DTYPE.names:
        raise ValueError(f"unknown flag {name!r}; known: {', '.join(FLAGS_DTYPE.names)}")
    if name in GENERATION_FLAGS:
        raise ValueError(f"{name} is only changed with bump()")
    low, high = _FLAG_LIMITS[name]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, numbers.Real) or not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value!r}")
    if FLAGS_DTYPE[name].kind == "i" and int(value) != value:
        raise ValueError(f"{name} must be a whole number, got {value!r}")
