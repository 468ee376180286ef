"""The control block in shared memory: child table with heartbeats, per-worker counters, run-time flags.

The supervisor creates it before forking (in a shm.Segment) and fills the child table
(supervisor.children); workers stamp heartbeats, add to their counter row and read the flags each
batch; the metrics sidecar sums the rows and reads the table for /health and /metrics.

Rules that make it lock-free: every cell is an aligned 8-byte value, so no reader ever sees a torn
value; every cell has one writer (child table: the supervisor writes pid/state/started/restarts/
exit_status, the child only its heartbeat; counter row r: only the worker in slot r, which keeps
the row across its restarts so counters never go backwards; flags: plain stores, the generation
counters are bumped by the supervisor only). Readers tolerate a row that is mid-update because
each counter only grows. Heartbeats are time.monotonic() (CLOCK_MONOTONIC, one clock for every
process on the machine), so they are comparable across processes and immune to wall-clock jumps.

Intended use:

    supervisor: block = ControlBlock.create(arena.allocate("control", control_bytes(8, 8)).buf, 8, 8)
                block.set_flags(batch_size=cfg.batch_size, tier4_enabled=True)
    worker:     counters = block.counters(slot); each batch: block.beat(slot); flags = block.flags();
                ... counters.add(lines_processed=n, batches=1, errors=e)
    sidecar:    block.counter_totals(); block.child_table(); block.set_flags(backpressure=True)
"""
import dataclasses
import numbers
import time

import numpy as np

CONTROL_MAGIC = 0x61645F6374726C31  # "ad_ctrl1": tells a control block from any other mapping
CONTROL_VERSION = 1
CACHE_LINE = 64
_HEADER_WORDS = 8

# One row per child slot; each field one 8-byte cell, the row padded to a cache line.
CHILD_DTYPE = np.dtype({
    "names": ["pid", "state", "started", "heartbeat", "restarts", "exit_status"],
    "formats": ["<i8", "<i8", "<f8", "<f8", "<u8", "<i8"],
    "offsets": [0, 8, 16, 24, 32, 40],
    "itemsize": CACHE_LINE,
})

# Columns of a counter row (uint64, only ever increased by the one process owning the row).
# Workers fill the first six and `incidents`; the input process has its own row for the read side.
# `files_deferred` is a gauge (files waiting for a descriptor now), set only by the input process.
COUNTER_FIELDS = ("lines_processed", "errors", "batches", "bytes_processed", "anomalies", "busy_ns",
                  "incidents", "lines_read", "lines_dropped", "read_errors", "files_deferrals", "files_deferred")
_COUNTER_INDEX = {name: i for i, name in enumerate(COUNTER_FIELDS)}
_ROW_WORDS = -(-len(COUNTER_FIELDS) * 8 // CACHE_LINE) * CACHE_LINE // 8

FLAGS_DTYPE = np.dtype([
    ("tier4_enabled", "<i8"),         # 0/1: workers skip tier 4 when 0 (admin disable-tier4 under load)
    ("backpressure", "<i8"),          # 0/1: inputs stop reading while rings are above their high mark
    ("batch_size", "<i8"),            # lines a worker pops at once
    ("learning_rate_factor", "<f8"),  # multiplies every tier's learning rate
    ("workers_wanted", "<i8"),        # admin set-workers; the supervisor forks or retires to match
    ("config_generation", "<u8"),     # bumped by the supervisor after a validated reload
    ("relief_generation", "<u8"),     # bumped by the supervisor on SIGUSR1: children gc and trim caches
])
GENERATION_FLAGS = ("config_generation", "relief_generation")
DEFAULT_FLAGS = {"tier4_enabled": 1, "backpressure": 0, "batch_size": 1000, "learning_rate_factor": 1.0,
                 "workers_wanted": 2, "config_generation": 0, "relief_generation": 0}
_FLAG_LIMITS = {"tier4_enabled": (0, 1), "backpressure": (0, 1), "batch_size": (1, 100000),
                "learning_rate_factor": (1e-6, 10.0), "workers_wanted": (1, 64)}


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


def _layout(max_children, counter_rows):
    """Byte offsets (children, counters, flags, end) of a block with these dimensions."""
    children = CACHE_LINE
    counters = children + max_children * CHILD_DTYPE.itemsize
    flags = counters + counter_rows * _ROW_WORDS * 8
    end = flags + -(-FLAGS_DTYPE.itemsize // CACHE_LINE) * CACHE_LINE
    return children, counters, flags, end


def control_bytes(max_children, counter_rows):
    """Size of the shared memory a control block with these dimensions needs."""
    return _layout(max_children, counter_rows)[3]


class ControlBlock:
    """Views of one control block in a shared buffer; safe to create before fork and inherit."""

    def __init__(self, buffer):
        header = np.frombuffer(buffer, np.uint64, count=_HEADER_WORDS)
        if int(header[0]) != CONTROL_MAGIC or int(header[1]) != CONTROL_VERSION:
            raise ValueError("buffer does not hold an initialised control block (wrong magic or version)")
        self.max_children, self.counter_rows = int(header[2]), int(header[3])
        children, counters, flags, _ = _layout(self.max_children, self.counter_rows)
        self._children = np.frombuffer(buffer, CHILD_DTYPE, count=self.max_children, offset=children)
        self._counters = np.frombuffer(buffer, np.uint64, count=self.counter_rows * _ROW_WORDS,
                                       offset=counters).reshape(self.counter_rows, _ROW_WORDS)
        self._flags = np.frombuffer(buffer, FLAGS_DTYPE, count=1, offset=flags)

    @classmethod
    def create(cls, buffer, max_children, counter_rows, **flags):
        """Lay out a zeroed block with default flags (overridden by keyword) and attach to it."""
        if max_children < 1 or counter_rows < 1:
            raise ValueError("a control block needs at least one child slot and one counter row")
        size = control_bytes(max_children, counter_rows)
        if len(memoryview(buffer)) < size:
            raise ValueError(f"buffer too small: this control block needs {size} bytes")
        words = np.frombuffer(buffer, np.uint64, count=size // 8)
        words[:] = 0
        words[2:4] = (max_children, counter_rows)
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

    def record_exit(self, slot, exit_status, state):
        """Supervisor: the child in slot was reaped with this status (os.waitstatus_to_exitcode)."""
        row = self._children[slot:slot + 1]
        row["exit_status"] = exit_status
        row["pid"] = 0
        row["state"] = int(state)

    def beat(self, slot, now=None):
        """Child: I am alive and making progress (call once per batch and while idle)."""
        self._children[slot:slot + 1]["heartbeat"] = time.monotonic() if now is None else now

    def heartbeat_age(self, slot, now=None):
        """Seconds since the child in slot last beat (or was forked)."""
        return (time.monotonic() if now is None else now) - float(self._children["heartbeat"][slot])

    def child_table(self):
        """A copy of the child table (pid, state, started, heartbeat, restarts, exit_status) for reporting."""
        return self._children.copy()

    # -- counters ----------------------------------------------------------------------------------

    def counters(self, row):
        """Worker: the counter row it alone writes (the row belongs to the slot, not the pid)."""
        return WorkerCounters(self._counters[row])

    def counter_totals(self):
        """Sidecar: every counter summed over all rows, {name: int}."""
        sums = self._counters.sum(axis=0, dtype=np.uint64)
        return {name: int(sums[i]) for name, i in _COUNTER_INDEX.items()}

    def counter_rows_snapshot(self):
        """Sidecar: a copy of the rows as {name: uint64[counter_rows]} for per-worker detail."""
        rows = self._counters.copy()
        return {name: rows[:, i] for name, i in _COUNTER_INDEX.items()}

    # -- flags -------------------------------------------------------------------------------------

    def flags(self):
        """A consistent-enough snapshot: each flag is read once; flags are independent of each other."""
        record = self._flags[0]
        values = {name: record[name].item() for name in FLAGS_DTYPE.names}
        for name in ("tier4_enabled", "backpressure"):
            values[name] = bool(values[name])
        return RuntimeFlags(**values)

    def set_flags(self, **values):
        """Supervisor or admin handler: change flags; raises ValueError (with the reason) on a bad value."""
        for name, value in values.items():
            _check_flag(name, value)
        for name, value in values.items():
            self._flags[name] = value

    def bump(self, generation_flag):
        """Supervisor only: increment config_generation or relief_generation; returns the new value."""
        if generation_flag not in GENERATION_FLAGS:
            raise ValueError(f"{generation_flag!r} is not one of {GENERATION_FLAGS}")
        value = int(self._flags[generation_flag][0]) + 1
        self._flags[generation_flag] = value
        return value


class WorkerCounters:
    """One worker's counter row; add() once per batch, never per line."""

    def __init__(self, row):
        self._row = row

    def add(self, **increments):
        for name, amount in increments.items():
            if amount < 0:
                raise ValueError(f"counter {name} only grows (got {amount})")
            self._row[_COUNTER_INDEX[name]] += np.uint64(amount)

    def set(self, **values):
        """Gauges kept in the row (files_deferred): the owning process sets the current value."""
        for name, value in values.items():
            if value < 0:
                raise ValueError(f"gauge {name} cannot be negative (got {value})")
            self._row[_COUNTER_INDEX[name]] = np.uint64(value)

    def value(self, name):
        return int(self._row[_COUNTER_INDEX[name]])


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
