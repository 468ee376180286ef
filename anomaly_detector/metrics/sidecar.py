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

from anomaly_detector.alerting.outbox import STATS_FILE, outbox_bytes, outbox_dir, read_stats
from anomaly_detector.alerting.sinks import sink_sections
from anomaly_detector.alerting.sinks.base import FAILURE_REASONS
from anomaly_detector.httpcommon import REJECT_REASONS
from anomaly_detector.inputs.listener import network_inputs, spool_dir
from anomaly_detector.inputs.spool import spool_bytes
from anomaly_detector.inputs.syslog_server import FRAMING_REASONS
from anomaly_detector.metrics.admin import AdminAPI
from anomaly_detector.metrics.httpd import SidecarHTTPServer
from anomaly_detector.metrics.sketch import quantiles
from anomaly_detector.metrics.tls import server_context, tls_enabled
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.supervisor.states import ProcessState, state_name

log = logging.getLogger(__name__)
RATE_WINDOW_SECONDS = 60.0
_ALIVE = (int(ProcessState.STARTING), int(ProcessState.RUNNING))
# Bounded reason labels, each shown from zero for the inputs it can happen to.
_SYSLOG_TCP_REASONS = ("refused",)
_CLOSE_REASONS = ("idle_timeout", "evicted")
# It sheds no load (no 503); 413 is /admin's body bound; tls_handshake: a failed handshake (HTTPS only).
_SIDECAR_REASONS = tuple(r for r in REJECT_REASONS if r != "503") + ("tls_handshake",)
_HTTP_INPUT_REASONS = tuple(r for r in REJECT_REASONS if r != "evicted")   # the ingest refuses, never evicts


class Readings:
    """What /health and /metrics report, computed from shared memory at request time.

    `processes` is the supervisor's child list, [(name, role, slot)], in the order it forks them;
    the n-th worker in it consumes rings[n]. Every role in it is reported, so a new role needs no
    change here.
    """

    def __init__(self, cfg, control, rings, processes, supervisor_pid, clock=time.monotonic):
        self.control, self.rings, self.clock = control, rings, clock
        self.processes = [tuple(p) for p in processes]
        self.worker_slots = [slot for _name, role, slot in self.processes if role == "worker"]
        self.supervisor_pid = supervisor_pid
        self.spool_dirs = [spool_dir(cfg, name) for name in network_inputs(cfg)]
        self.sinks = [name for name, _section in sink_sections(cfg)]
        self.outbox = outbox_dir(cfg) if self.sinks else None   # without sinks no worker writes one
        self.memory_limit = cfg["processing"]["max_memory_mb"] * 2**20
        self.stall_seconds = cfg["processing"]["heartbeat_timeout_seconds"]
        self.inputs = [(name, section["type"], section.get("protocol")) for name, section in cfg["inputs"].items()]
        self.http_rejections = None           # the HTTP server's rejections(), set once it exists
        self.admin = None                     # the AdminAPI, set once it exists (its counts and the flags)
        self.down_seconds = cfg["service"]["health_down_seconds"]
        self._history = collections.deque()   # (monotonic, lines_processed)
        self._latency_history = collections.deque()   # (monotonic, summed latency histogram)
        self._acked = {}                      # ring index -> (monotonic of the last progress, acknowledged)
        self._down_since = {}                 # slot -> monotonic when first seen down
        self._processes = {}

    def sample(self):
        """The serving loop calls it every second: processing_rate, ring progress and down times
        are tracked between requests, so /health needs no scrape history."""
        now = self.clock()
        self._rate(self.control.counter_totals()["lines_processed"], now)
        self._latency_window(now)
        self._down_reasons(self.control.child_table(), now)
        self._stall_reasons(now)

    def _rate(self, processed, now):
        self._history.append((now, processed))
        while len(self._history) > 2 and now - self._history[1][0] >= RATE_WINDOW_SECONDS:
            self._history.popleft()
        then, before = self._history[0]
        return (processed - before) / (now - then) if now > then else 0.0

    def _latency_window(self, now):
        """The workers' read-to-scored histogram over the last RATE_WINDOW_SECONDS (what the quantiles read)."""
        histogram = self.control.latency_totals()
        self._latency_history.append((now, histogram))
        while len(self._latency_history) > 2 and now - self._latency_history[1][0] >= RATE_WINDOW_SECONDS:
            self._latency_history.popleft()
        return histogram - self._latency_history[0][1] if len(self._latency_history) > 1 else histogram

    def _latency_summary(self, totals, now):
        return {"quantiles": {q: round(v, 6) for q, v in quantiles(self._latency_window(now)).items()},
                "sum": round(totals["latency_ns_sum"] / 1e9, 6), "count": totals["latency_count"]}

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
        now = self.clock()
        cpu, memory = self._usage()
        depth = sum(ring.depth() for ring in self.rings)
        table = self.control.child_table()
        return {
            "logs_processed_total": totals["lines_processed"],
            "processing_errors_total": totals["errors"],
            "lines_dead_lettered_total": totals["lines_dead_lettered"],
            "output_write_errors_total": totals["output_errors"],
            "lines_read_total": totals["lines_read"],
            "lines_dropped_total": totals["lines_dropped"],
            "input_read_errors_total": totals["read_errors"],
            "network_lines_refused_total": {(("reason", "spool_full"),): totals["spool_refused_full"],
                                            (("reason", "spool_error"),): totals["spool_refused_error"]},
            "spool_torn_records_total": totals["spool_torn_records"],
            "spool_bytes": sum(spool_bytes(d) for d in self.spool_dirs),
            "worker_lines_processed_total": self._per_worker("lines_processed"),
            "files_deferred": totals["files_deferred"],
            "files_deferred_total": totals["files_deferrals"],
            "files_rescans_on_change_total": totals["files_change_rescans"],
            "rule_scans_cut_total": totals["rule_scans_cut"],
            "source_capped_lines_total": totals["source_capped_lines"],
            "volume_gaps_skipped_total": totals["volume_gaps_skipped"],
            "volume_drops_withdrawn_total": totals["volume_drops_withdrawn"],
            "json_fields_over_cap_total": totals["json_fields_over_cap"],
            "series_values_refused_total": totals["series_values_refused"],
            "lines_unclustered_total": totals["lines_unclustered"],
            "batch_deadline_hits_total": totals["batch_deadline_hits"],
            "kernels_compiled_after_fork_total": totals["kernels_compiled_after_fork"],
            "timestamps_unparsed_total": totals["timestamps_unparsed"],
            "anomalies_total": totals["anomalies"],
            "incidents_total": totals["incidents"],
            "input_queue_size": depth,
            "processing_queue_size": min(depth, self._inflight_bound()),
            **self._alert_samples(totals),
            "processing_duration_seconds": self._latency_summary(totals, now),
            "processing_rate": round(self._rate(totals["lines_processed"], now), 3),
            "cpu_usage_percent": round(cpu, 2),
            "memory_usage_percent": round(100.0 * memory / self.memory_limit, 2),
            "workers_running": self._workers_alive(),
            "ring_capacity_lines": sum(ring.slots for ring in self.rings),
            "memory_limit_bytes": self.memory_limit,
            **self._input_samples(),
            **self._http_samples(),
            "process_up": self._per_process(table, lambda row: int(int(row["state"]) in _ALIVE)),
            "process_state": self._per_process(table, lambda row: int(row["state"])),
            "process_restarts_total": self._per_process(table, lambda row: int(row["restarts"])),
            **_reload_samples(self.control.flags()),
            "batches_total": totals["batches"],
            **(self.admin.samples() if self.admin is not None else {}),
        }

    def _alert_samples(self, totals):
        """Generated and dropped from the workers' counters; the rest from the alerter's stats file (written
        when a figure changes) and the outbox on disk. Every configured sink shows, from zero."""
        stats = read_stats(os.path.join(self.outbox, STATS_FILE)) if self.outbox else {}
        sinks = stats.get("sinks", {})
        oldest = stats.get("oldest_at")
        delivered, failed, throttled = {}, {}, {}
        for sink in self.sinks:
            mine = sinks.get(sink, {})
            delivered[(("sink", sink),)] = int(mine.get("delivered", 0))
            throttled[(("sink", sink),)] = int(mine.get("throttled", 0))
            for reason in FAILURE_REASONS:
                failed[(("sink", sink), ("reason", reason))] = int(mine.get("failed", {}).get(reason, 0))
        return {"alerts_generated_total": totals["alerts_generated"],
                "alerts_dropped_total": {(("reason", "outbox_full"),): totals["alerts_dropped"],
                                         (("reason", "write_error"),): totals["alert_write_errors"]},
                "alerts_delivered_total": delivered, "alerts_failed_total": failed, "alerts_throttled_total": throttled,
                "alert_queue_size": int(stats.get("queue", 0)) if self.sinks else 0,
                "alert_outbox_bytes": outbox_bytes(self.outbox) if self.outbox else 0,
                "alert_oldest_undelivered_age_seconds":
                    round(max(0.0, time.time() - oldest), 3) if self.sinks and oldest else 0}

    def _per_process(self, table, value):
        return {(("role", role), ("process", name)): value(table[slot]) for name, role, slot in self.processes}

    def _input_samples(self):
        """The inputs' refusals, framing errors, long lines and drops, labelled by input (and reason)."""
        stats = self.control.input_stats_snapshot([name for name, _, _ in self.inputs])
        out = {name: {} for name in ("input_rejected_total", "input_framing_errors_total", "lines_truncated_total",
                                     "lines_skipped_total", "udp_receive_drops_total",
                                     "input_connections_closed_total")}
        for name, kind, protocol in self.inputs:
            row = stats.get(name)
            if row is None:
                continue  # past the last stats row (the config check keeps this from happening)
            label = (("input", name),)
            out["lines_truncated_total"][label] = row["lines_truncated"]
            out["lines_skipped_total"][label] = row["lines_skipped"]
            tcp_syslog = kind == "syslog" and protocol == "tcp"
            if tcp_syslog:
                for reason in FRAMING_REASONS:
                    out["input_framing_errors_total"][label + (("reason", reason),)] = row["framing_" + reason]
                for reason in _CLOSE_REASONS:
                    out["input_connections_closed_total"][label + (("reason", reason),)] = row["closed_" + reason]
            elif kind == "syslog":
                out["udp_receive_drops_total"][label] = row["udp_receive_drops"]
            reasons = _HTTP_INPUT_REASONS if kind == "http" else _SYSLOG_TCP_REASONS if tcp_syslog else ()
            for reason in reasons:
                out["input_rejected_total"][label + (("reason", reason),)] = row["rejected_" + reason]
        return out

    def _http_samples(self):
        counts = self.http_rejections() if self.http_rejections is not None else {}
        return {"http_rejected_total": {(("reason", reason),): counts.get(reason, 0) for reason in _SIDECAR_REASONS}}

    def _per_worker(self, field):
        # Worker i writes counter row i (supervisor/arbiter.py): the balance of the rings, seen per worker.
        rows = self.control.counter_rows_snapshot()[field]
        return {(("worker", str(i)),): int(rows[i]) for i in range(len(self.worker_slots))}

    def _inflight_bound(self):
        return self.control.flags().batch_size * len(self.worker_slots)

    def _workers_alive(self):
        states = self.control.child_table()["state"]
        return sum(int(states[slot]) in _ALIVE for slot in self.worker_slots)

    def health(self):
        now = self.clock()
        table = self.control.child_table()
        reasons = self._down_reasons(table, now) + self._stall_reasons(now)
        _cpu, memory = self._usage()
        if memory > self.memory_limit:
            reasons.append("memory %.0f MiB over max_memory_mb %.0f" % (memory / 2**20, self.memory_limit / 2**20))
        return {"status": "unhealthy" if reasons else "healthy", "reasons": reasons,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "workers": self._workers_alive(),
                "lines_processed": self.control.counter_totals()["lines_processed"],
                "processes": {name: {"role": role, "state": state_name(table[slot]["state"]),
                                     "pid": int(table[slot]["pid"]), "restarts": int(table[slot]["restarts"])}
                              for name, role, slot in self.processes}}

    def _down_reasons(self, table, now):
        """FATAL at once; any other down state once it lasted health_down_seconds (a restart is quick).

        The sidecar is not judged here: when it answers, it is up.
        """
        reasons = []
        for name, role, slot in self.processes:
            state = int(table[slot]["state"])
            if state in _ALIVE:
                self._down_since.pop(slot, None)
                continue
            since = self._down_since.setdefault(slot, now)
            if role == "sidecar":
                continue
            if state == ProcessState.FATAL:
                reasons.append("%s FATAL: crash loop (last exit %d), not restarted; the supervisor exits after "
                               "fatal_exit_seconds"
                               % (name, int(table[slot]["exit_status"])))
            elif now - since >= self.down_seconds:
                reasons.append("%s down (%s) for %.0f s" % (name, state_name(state), now - since))
        return reasons

    def _stall_reasons(self, now):
        """Per ring: lines wait in it and its worker acknowledged none for heartbeat_timeout_seconds.

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
                reasons.append("worker %d stalled: %d lines waiting, none acknowledged for %.0f s"
                               % (index, waiting, now - since))
        return reasons


def run_sidecar(ctx, daemon):
    """ChildSpec target of the sidecar: serve until SIGTERM (default action) ends the process."""
    daemon.setup_child_logging("sidecar")
    cfg = daemon.cfg
    readings = Readings(cfg, daemon.control, daemon.rings, daemon.processes, os.getppid())
    access = os.path.join(cfg["paths"]["log_dir"], "access.log") if cfg["logging"]["access_log"] else None
    http = cfg["http"]
    # Loaded here, at every sidecar start: a reload (SIGHUP) restarts the sidecar, which serves the renewed
    # certificate and reads the token file again; the config checks refused a pair that cannot load.
    tls = server_context(http["tls_cert"], http["tls_key"]) if tls_enabled(http) else None
    readings.admin = AdminAPI.from_config(cfg, daemon.control)
    server = SidecarHTTPServer(http["bind"], http["port"], readings, access_log_path=access,
                               sock=daemon.http_socket, max_connections=http["max_connections"],
                               header_timeout_seconds=http["header_timeout_seconds"], admin=readings.admin,
                               tls_context=tls)
    readings.http_rejections = server.rejections
    log.info("sidecar serving %s://%s:%d (/health, /metrics, /admin/*%s)", "https" if tls else "http",
             server.server_address[0], server.port, "" if readings.admin.disabled_reason else " with a token")
    _serve(server, readings, daemon.control, ctx.slot)
    return 0


def _serve(server, readings, control, slot):
    """Serve requests; once a second beat, sample the counters (so the rate needs no scrape), cut
    connections past their header deadline and run memory relief when the supervisor asked for it
    (SIGUSR1 bumps relief_generation)."""
    server.timeout = 0.25
    next_sample = 0.0
    relief = ReliefWatch(control, "sidecar")
    while True:
        now = time.monotonic()
        if now >= next_sample:
            control.beat(slot)
            readings.sample()
            relief.check()
            next_sample = now + 1.0
        server.service_actions()
        server.handle_request()


def _reload_samples(flags):
    """The reload metrics from the control block's flags (the supervisor sets them in handle_hup)."""
    return {"config_last_reload_successful": int(flags.reload_ok),
            "config_reloads_total": {(("result", "applied"),): flags.config_generation,
                                     (("result", "rejected"),): flags.reloads_rejected}}
