"""The metrics sidecar process: reads the control block and rings (shared memory) and serves HTTP.

Forked by the supervisor like any child; it only reads shared memory, so a slow scrape or a
crash here never blocks a worker. Health rules are in Readings.health().
"""
import collections
import logging
import os
import time
from datetime import datetime, timezone

import psutil

from anomaly_detector.metrics.httpd import SidecarHTTPServer
from anomaly_detector.supervisor.states import ProcessState

log = logging.getLogger(__name__)
RATE_WINDOW_SECONDS = 60.0
_ALIVE = (int(ProcessState.STARTING), int(ProcessState.RUNNING))


class Readings:
    """What /health and /metrics report, computed from shared memory at request time."""

    def __init__(self, cfg, control, rings, worker_slots, supervisor_pid):
        self.control, self.rings, self.worker_slots = control, rings, list(worker_slots)
        self.supervisor_pid = supervisor_pid
        self.memory_limit = cfg["processing"]["max_memory_mb"] * 2**20
        self.stall_seconds = cfg["processing"]["heartbeat_timeout_seconds"]
        self._history = collections.deque()   # (monotonic, lines_processed)
        self._progress = (time.monotonic(), -1)
        self._processes = {}

    def sample(self):
        """Record the processed count now (the serving loop calls it every second) for processing_rate."""
        self._rate(self.control.counter_totals()["lines_processed"], time.monotonic())

    def _rate(self, processed, now):
        self._history.append((now, processed))
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_SECONDS:
            self._history.popleft()
        then, before = self._history[0]
        return (processed - before) / (now - then) if now > then else 0.0

    def _pids(self):
        table = self.control.child_table()
        return [self.supervisor_pid] + [int(p) for p in table["pid"] if p > 0]

    def _usage(self):
        """(cpu percent of one core, proportional memory bytes) summed over the daemon's processes."""
        cpu, memory = 0.0, 0
        for pid in self._pids():
            process = self._processes.get(pid)
            try:
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                cpu += process.cpu_percent(None)
                info = process.memory_full_info()
                memory += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                self._processes.pop(pid, None)
        return cpu, memory

    def samples(self):
        totals = self.control.counter_totals()
        now = time.monotonic()
        cpu, memory = self._usage()
        depth = sum(ring.depth() for ring in self.rings)
        return {
            "logs_processed_total": totals["lines_processed"],
            "processing_errors_total": totals["errors"],
            "lines_read_total": totals["lines_read"],
            "lines_dropped_total": totals["lines_dropped"],
            "input_read_errors_total": totals["read_errors"],
            "files_deferred": totals["files_deferred"],
            "files_deferred_total": totals["files_deferrals"],
            "anomalies_total": totals["anomalies"],
            "incidents_total": totals["incidents"],
            "input_queue_size": depth,
            "processing_queue_size": min(depth, self._inflight_bound()),
            "alert_queue_size": 0,  # no alert outbox in this release: nothing can be queued
            "processing_rate": round(self._rate(totals["lines_processed"], now), 3),
            "cpu_usage_percent": round(cpu, 2),
            "memory_usage_percent": round(100.0 * memory / self.memory_limit, 2),
            "workers_running": self._workers_alive(),
            "ring_capacity_lines": sum(ring.slots for ring in self.rings),
            "memory_limit_bytes": self.memory_limit,
        }

    def _inflight_bound(self):
        return self.control.flags().batch_size * len(self.worker_slots)

    def _workers_alive(self):
        states = self.control.child_table()["state"]
        return sum(int(states[slot]) in _ALIVE for slot in self.worker_slots)

    def health(self):
        reasons = []
        table = self.control.child_table()
        for slot in self.worker_slots:
            if int(table["state"][slot]) not in _ALIVE:
                reasons.append("worker in slot %d is down" % slot)
        processed = self.control.counter_totals()["lines_processed"]
        reasons += self._stall_reasons(processed)
        _cpu, memory = self._usage()
        if memory > self.memory_limit:
            reasons.append("memory %.0f MiB over max_memory_mb %.0f" % (memory / 2**20, self.memory_limit / 2**20))
        return {"status": "unhealthy" if reasons else "healthy", "reasons": reasons,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "workers": len(self.worker_slots) - sum("worker" in r for r in reasons),
                "lines_processed": processed}

    def _stall_reasons(self, processed):
        """Stalled = lines wait in the rings and none was processed for heartbeat_timeout_seconds."""
        now = time.monotonic()
        if processed != self._progress[1]:
            self._progress = (now, processed)
        waiting = sum(ring.depth() for ring in self.rings)
        if waiting and now - self._progress[0] > self.stall_seconds:
            return ["processing stalled: %d lines waiting, none processed for %.0f s"
                    % (waiting, now - self._progress[0])]
        return []


def run_sidecar(ctx, daemon):
    """ChildSpec target of the sidecar: serve until SIGTERM (default action) ends the process."""
    daemon.setup_child_logging("sidecar")
    cfg = daemon.cfg
    readings = Readings(cfg, daemon.control, daemon.rings, daemon.worker_slots, os.getppid())
    access = os.path.join(cfg["paths"]["log_dir"], "access.log") if cfg["logging"]["access_log"] else None
    server = SidecarHTTPServer(cfg["http"]["bind"], cfg["http"]["port"], readings, access_log_path=access,
                               sock=daemon.http_socket)
    log.info("sidecar serving http://%s:%d (/health, /metrics)", server.server_address[0], server.port)
    _serve(server, readings, daemon.control, ctx.slot)
    return 0


def _serve(server, readings, control, slot):
    """Serve requests; once a second beat and sample the counters, so the rate needs no scrape."""
    server.timeout = 1.0
    next_sample = 0.0
    while True:
        now = time.monotonic()
        if now >= next_sample:
            control.beat(slot)
            readings.sample()
            next_sample = now + 1.0
        server.handle_request()
