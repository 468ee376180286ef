"""The /health rules: what makes the daemon unhealthy (or degraded), judged from shared memory.

The sidecar's reader thread (metrics/sidecar.py Readings) calls track() and judge() once a second
with the supervisor's child table and the rings; the verdict serves /health and the health_reasons
and health_status metrics alike, so they never disagree. Down and stall clocks are kept between
readings here, so no scrape history is needed.
"""
from anomaly_detector.supervisor.states import ProcessState, state_name

# The kinds of /health reasons, each a health_reasons{reason} series from zero.
REASON_KINDS = ("process_down", "process_fatal", "not_responding", "stalled", "memory", "state_dir",
                "readings_stale")
ALIVE = (int(ProcessState.STARTING), int(ProcessState.RUNNING))


class HealthRules:
    """`processes`: [(name, role, slot)] as the supervisor forks them; `rings`: one per worker."""

    def __init__(self, cfg, rings, processes):
        self.rings, self.processes = rings, processes
        self.memory_limit = cfg["processing"]["max_memory_mb"] * 2**20
        self.stall_seconds = cfg["http"]["stall_seconds"]
        self.down_seconds = cfg["service"]["health_down_seconds"]
        self.state_dir = cfg["paths"]["state_dir"]
        self._acked = {}                      # ring index -> (monotonic of the last progress, acknowledged)
        self._down_since = {}                 # slot -> monotonic when first seen down

    def track(self, table, now):
        """Advance the down and stall clocks without judging (every reading, served or not)."""
        self._down_reasons(table, now)
        self._stall_reasons(now)

    def judge(self, table, now, reading):
        """[(kind, text)] of everything wrong now; kind is one of REASON_KINDS."""
        reasons = self._down_reasons(table, now) + self._silent_reasons(table, now) + self._stall_reasons(now)
        if reading.memory > self.memory_limit:
            reasons.append(("memory", "memory %.0f MiB over max_memory_mb %.0f (proportional set size of every "
                                      "daemon process)" % (reading.memory / 2**20, self.memory_limit / 2**20)))
        if reading.state_error:
            reasons.append(("state_dir", "state directory %s not writable: %s" % (self.state_dir, reading.state_error)))
        return reasons

    def _down_reasons(self, table, now):
        """FATAL at once; any other down state once it lasted health_down_seconds (a restart is quick).

        The sidecar is not judged here: when it answers, it is up.
        """
        reasons = []
        for name, role, slot in self.processes:
            state = int(table[slot]["state"])
            if state in ALIVE:
                self._down_since.pop(slot, None)
                continue
            since = self._down_since.setdefault(slot, now)
            if role == "sidecar":
                continue
            if state == ProcessState.FATAL:
                reasons.append(("process_fatal", "%s FATAL: crash loop (last exit %d), not restarted; the supervisor "
                                                 "exits after fatal_exit_seconds" % (name, int(table[slot]["exit_status"]))))
            elif now - since >= self.down_seconds:
                reasons.append(("process_down", "%s down (%s) for %.0f s" % (name, state_name(state), now - since)))
        return reasons

    def _silent_reasons(self, table, now):
        """A running process (the sidecar too: its serving loop beats) without a heartbeat for stall_seconds:
        stopped (SIGSTOP), hung or stuck; the supervisor kills it after heartbeat_timeout_seconds."""
        reasons = []
        for name, _role, slot in self.processes:
            age = now - float(table[slot]["heartbeat"])
            if int(table[slot]["state"]) in ALIVE and age >= self.stall_seconds:
                reasons.append(("not_responding", "%s not responding: no heartbeat for %.0f s" % (name, age)))
        return reasons

    def _stall_reasons(self, now):
        """Per ring: lines wait in it and its worker acknowledged none for [http] stall_seconds.

        Per ring, not summed: one worker stuck on a batch (killed and restarted on it forever) must
        show while the others keep the total moving. An empty ring restarts the clock.
        """
        reasons = []
        for index, ring in enumerate(self.rings):
            acked, waiting = ring.acknowledged(), ring.depth()
            since, before = self._acked.get(index, (now, -1))
            if acked != before or not waiting:
                self._acked[index] = (now, acked)
                continue
            if now - since >= self.stall_seconds:
                reasons.append(("stalled", "worker %d stalled: %d lines waiting, none acknowledged for %.0f s"
                                           % (index, waiting, now - since)))
        return reasons


def state_degraded_reasons(totals):
    """/health: degraded (not down) while a process cannot write its state files, a full disk say;
    scoring goes on and the previous generation stays valid, and it clears at the next good write."""
    failing = totals["state_writes_failing"]
    if not failing:
        return []
    return ["state files cannot be written in %d process(es) (disk full or read-only?); %d failed writes so far"
            % (failing, totals["state_write_errors"])]
