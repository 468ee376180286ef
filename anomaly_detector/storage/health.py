"""How this process's state files fare: loads set aside (by reason) and writes failing (a full disk).

storage/atomic.py records into the process-wide STATE_HEALTH; the owner of a control-block counter
row (a detector worker, the input process) copies it there with publish() after it loads or saves,
and the metrics sidecar reports the sums (state_load_failures_total{reason}, state_write_errors_total,
state_writes_failing) and a degraded /health while any process's last write of some file failed.
"""

# Why a state file was set aside on load; a bounded label set (metric `reason` label).
LOAD_FAILURE_REASONS = ("truncated", "zero_filled", "checksum", "foreign", "version", "shape", "unreadable")


def load_counter_field(reason):
    """The control-block counter column of one load-failure reason."""
    return "state_load_" + reason


class StateHealth:
    """Counts of one process; publish() hands what is new to a counter row (whose counters only grow)."""

    def __init__(self):
        self.load_failures = dict.fromkeys(LOAD_FAILURE_REASONS, 0)
        self.write_errors = 0
        self.failing = set()        # paths whose last write failed
        self._published = {}

    def load_failed(self, reason):
        self.load_failures[reason if reason in self.load_failures else "unreadable"] += 1

    def write_failed(self, path):
        self.write_errors += 1
        self.failing.add(path)

    def write_ok(self, path):
        self.failing.discard(path)

    def totals(self):
        out = {load_counter_field(r): n for r, n in self.load_failures.items()}
        out["state_write_errors"] = self.write_errors
        return out

    def publish(self, counters):
        """Add what grew since the last publish to `counters` (ipc.control.WorkerCounters) and set the
        gauge of failing writes (1 while any state file of this process cannot be written)."""
        totals = self.totals()
        grown = {name: value - self._published.get(name, 0) for name, value in totals.items()}
        grown = {name: n for name, n in grown.items() if n > 0}
        if grown:
            counters.add(**grown)
        self._published = totals
        counters.set(state_writes_failing=int(bool(self.failing)))


STATE_HEALTH = StateHealth()
