"""The metrics sidecar process: reads the control block and rings (shared memory) and serves HTTP.

Forked by the supervisor like any child; it only reads shared memory, so a slow scrape or a
crash here never blocks a worker. One reader thread (SnapshotReader) takes the readings once a
second: the control block, the rings, psutil's CPU and memory of every daemon process, the state
directory; it keeps them as an immutable Snapshot under a lock, and /health and /metrics serve
that snapshot (metrics/httpd.py, rendered by metrics/exposition.py), so no request computes a
reading and no two handlers share psutil's cpu_percent state. Health rules are in metrics/health_rules.py.
"""
import collections
import dataclasses
import errno
import logging
import os
import threading
import time
import types
from datetime import datetime, timezone

import psutil

from anomaly_detector import __version__
from anomaly_detector.alerting.noise import SITUATION_LIMITS, SUPPRESS_REASONS
from anomaly_detector.alerting.outbox import STATS_FILE, outbox_bytes, outbox_dir, read_stats
from anomaly_detector.alerting.sinks import sink_sections
from anomaly_detector.alerting.sinks.base import FAILURE_REASONS
from anomaly_detector.httpcommon import REJECT_REASONS
from anomaly_detector.inputs.listener import network_inputs, spool_dir
from anomaly_detector.inputs.spool import spool_bytes
from anomaly_detector.inputs.syslog_server import FRAMING_REASONS
from anomaly_detector.metrics.admin import AdminAPI
from anomaly_detector.metrics.health_rules import ALIVE, REASON_KINDS, HealthRules, state_degraded_reasons
from anomaly_detector.metrics.httpd import SidecarHTTPServer
from anomaly_detector.metrics.incidents_api import IncidentsAPI, WorkerViews, published_path
from anomaly_detector.metrics.model_health import ModelHealth
from anomaly_detector.metrics.page import Page
from anomaly_detector.metrics.sketch import quantiles
from anomaly_detector.metrics.tls import server_context, tls_enabled
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.storage.health import LOAD_FAILURE_REASONS, load_counter_field
from anomaly_detector.supervisor.states import state_name

log = logging.getLogger(__name__)
RATE_WINDOW_SECONDS = 60.0
READ_INTERVAL_SECONDS = 1.0
# A snapshot older than this is served with a "readings_stale" reason: the reader thread is stuck.
STALE_SNAPSHOT_SECONDS = 5.0
TIERS = ("t1", "t2", "t3", "t4")   # detection.engine.TIER_NAMES (metrics/ does not import the engine)
STATE_PROBE = ".health-probe"   # created, written and removed in state_dir at each reading
# Bounded reason labels, each shown from zero for the inputs it can happen to.
_SYSLOG_TCP_REASONS = ("refused",)
_CLOSE_REASONS = ("idle_timeout", "evicted")
# It sheds no load (no 503); 413 is /admin's body bound; tls_handshake: a failed handshake (HTTPS only).
_SIDECAR_REASONS = tuple(r for r in REJECT_REASONS if r != "503") + ("tls_handshake",)
_HTTP_INPUT_REASONS = tuple(r for r in REJECT_REASONS if r != "evicted")   # the ingest refuses, never evicts


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One reading of everything /health and /metrics report; never changed once taken."""
    taken: float                           # monotonic time it was taken
    samples: types.MappingProxyType        # {metric name: value} for exposition.render
    health: types.MappingProxyType         # the /health body (its lists are not changed either)


@dataclasses.dataclass(frozen=True)
class _Reading:
    """What sample() measured for the samples and the health verdict of the same second."""
    rate: float
    latency: object                        # the latency histogram over the last RATE_WINDOW_SECONDS
    cpu: float                             # percent of one core, all daemon processes
    memory: int                            # bytes, proportional set size summed over the processes
    state_error: str                       # why state_dir cannot be written ("" when it can)
    model_health: int


class Readings:
    """What /health and /metrics report, computed from shared memory by take() (the reader thread).

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
        self.redis_sinks = [name for name, section in sink_sections(cfg) if section["type"] == "redis"]
        self.redis_sinks_reading = [name for name, section in sink_sections(cfg)
                                    if section["type"] == "redis" and section["consume"]]
        self.outbox = outbox_dir(cfg) if self.sinks else None   # without sinks no worker writes one
        self.state_dir = cfg["paths"]["state_dir"]
        self.rules = HealthRules(cfg, rings, self.processes)
        self.model_health = ModelHealth(cfg, len(self.worker_slots))
        # [detection] [[tier1]] ... [[tier4]] enabled (an older config may lack a subsection: on by default).
        self.tiers_configured = [(t, bool(cfg.get("detection", {}).get("tier" + t[1:], {}).get("enabled", True)))
                                 for t in TIERS]
        self.spool_limit = cfg["processing"]["max_spool_mb"] * 2**20 * len(self.spool_dirs)
        self.vocabulary_limit = cfg["parsing"]["vocabulary_max_entries"]
        self.outbox_limits = ((cfg["alerting"]["outbox_max_mb"] * 2**20, cfg["alerting"]["outbox_max_alerts"])
                              if self.sinks else (0, 0))
        self.inputs = [(name, section["type"], section.get("protocol")) for name, section in cfg["inputs"].items()]
        self.http_rejections = None           # the HTTP server's rejections(), set once it exists
        self.admin = None                     # the AdminAPI, set once it exists (its counts and the flags)
        self.page = None                      # the page at /, set once it exists (its skipped reads)
        self._history = collections.deque()   # (monotonic, lines_processed)
        self._latency_history = collections.deque()   # (monotonic, summed latency histogram)
        self._processes = {}
        self._reading = None                  # the last _Reading, taken by sample()

    def take(self):
        """A Snapshot of this second (the reader thread calls it every READ_INTERVAL_SECONDS)."""
        self.sample()
        reasons = self.rules.judge(self.control.child_table(), self.clock(), self._reading)   # once for both
        return Snapshot(self.clock(), types.MappingProxyType(self.samples(reasons)),
                        types.MappingProxyType(self.health(reasons)))

    def sample(self):
        """Measure once: processing_rate, the latency window, CPU and memory (psutil's cpu_percent is
        the time since its previous call, so it is called here only), the state directory. Ring
        progress and down times are tracked between readings, so /health needs no scrape history."""
        now = self.clock()
        cpu, memory = self._usage()
        self._reading = _Reading(rate=self._rate(self.control.counter_totals()["lines_processed"], now),
                                 latency=self._latency_window(now), cpu=cpu, memory=memory,
                                 state_error=self._probe_state_dir(), model_health=self.model_health.value())
        self.rules.track(self.control.child_table(), now)

    def _current(self):
        if self._reading is None:
            self.sample()
        return self._reading

    def _probe_state_dir(self):
        """Create, write and remove a file in state_dir: models, checkpoints and the outbox go there.
        (os.access would pass for root on a read-only file system.) A full disk is not this reason: the
        daemon keeps scoring and holds what it cannot write, which /health reports as "degraded"
        (state_degraded_reasons), not down."""
        path = os.path.join(self.state_dir, STATE_PROBE)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"1")
            finally:
                os.close(fd)
            os.unlink(path)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                _remove_quietly(path)
                return ""
            return "%s (%s)" % (exc.strerror or exc, type(exc).__name__)
        return ""

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

    def _latency_summary(self, totals, reading):
        return {"quantiles": {q: round(v, 6) for q, v in quantiles(reading.latency).items()},
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

    def samples(self, reasons=None):
        """Every metric of this reading; `reasons`: the rules' verdict when the caller already has it."""
        totals = self.control.counter_totals()
        reading = self._current()
        depth = sum(ring.depth() for ring in self.rings)
        table = self.control.child_table()
        if reasons is None:
            reasons = self.rules.judge(table, self.clock(), reading)
        return {
            "logs_processed_total": totals["lines_processed"],
            "processing_errors_total": totals["errors"],
            "lines_dead_lettered_total": totals["lines_dead_lettered"],
            "output_write_errors_total": totals["output_errors"],
            "models_optimized_total": totals["models_optimized"],
            "templates_merged_total": totals["templates_merged"],
            **_state_samples(totals),
            "lines_read_total": totals["lines_read"],
            "lines_dropped_total": totals["lines_dropped"],
            "input_read_errors_total": totals["read_errors"],
            "network_lines_refused_total": {(("reason", "spool_full"),): totals["spool_refused_full"],
                                            (("reason", "spool_error"),): totals["spool_refused_error"]},
            "spool_torn_records_total": totals["spool_torn_records"],
            "spool_bytes": sum(spool_bytes(d) for d in self.spool_dirs),
            "spool_limit_bytes": self.spool_limit,
            # every worker reads the whole vocabulary: the most any of them has read is its size
            "vocabulary_entries": int(self.control.counter_rows_snapshot()["vocabulary_entries"].max()),
            "vocabulary_limit_entries": self.vocabulary_limit,
            "worker_lines_processed_total": self._per_worker("lines_processed"),
            "files_deferred": totals["files_deferred"],
            "files_deferred_total": totals["files_deferrals"],
            "files_rescans_on_change_total": totals["files_change_rescans"],
            "redis_entries_acknowledged_total": totals["redis_acked"],
            "redis_entries_claimed_total": totals["redis_claimed"],
            "redis_reconnects_total": totals["redis_reconnects"],
            "redis_connect_failures_total": totals["redis_connect_failures"],
            "redis_inputs_disconnected": totals["redis_disconnected"],
            "rule_scans_cut_total": totals["rule_scans_cut"],
            "source_capped_lines_total": totals["source_capped_lines"],
            "volume_gaps_skipped_total": totals["volume_gaps_skipped"],
            "volume_drops_withdrawn_total": totals["volume_drops_withdrawn"],
            "volume_value_keys_refused_total": totals["volume_value_keys_refused"],
            "source_hosts_dropped_lines_total": totals["source_hosts_dropped_lines"],
            "json_fields_over_cap_total": totals["json_fields_over_cap"],
            "series_values_refused_total": totals["series_values_refused"],
            "lines_unclustered_total": totals["lines_unclustered"],
            "vocabulary_refused_total": {(("reason", "new_template"),): totals["vocabulary_refused_new"],
                                         (("reason", "widened_text"),): totals["vocabulary_refused_widened"],
                                         (("reason", "unavailable"),): totals["vocabulary_refused_unavailable"]},
            "batch_deadline_hits_total": totals["batch_deadline_hits"],
            "kernels_compiled_after_fork_total": totals["kernels_compiled_after_fork"],
            "timestamps_unparsed_total": totals["timestamps_unparsed"],
            "lines_inline_level_total": totals["lines_inline_level"],
            "anomalies_total": totals["anomalies"],
            "anomalies_by_tier_total": {(("tier", t),): totals["anomalies_" + t] for t in TIERS},
            "tier_enabled": self._tiers_enabled(),
            "incidents_total": totals["incidents"],
            "input_queue_size": depth,
            "processing_queue_size": sum(ring.waiting() for ring in self.rings),
            **self._alert_samples(totals),
            "processing_duration_seconds": self._latency_summary(totals, reading),
            "processing_rate": round(reading.rate, 3),
            "cpu_usage_percent": round(reading.cpu, 2),
            "memory_usage_percent": round(100.0 * reading.memory / self.rules.memory_limit, 2),
            "learning_model_health": reading.model_health,
            "workers_running": self._workers_alive(),
            "ring_capacity_lines": sum(ring.slots for ring in self.rings),
            "memory_limit_bytes": self.rules.memory_limit,
            **self._input_samples(),
            "process_up": self._per_process(table, lambda row: int(int(row["state"]) in ALIVE)),
            "process_state": self._per_process(table, lambda row: int(row["state"])),
            "process_restarts_total": self._per_process(table, lambda row: int(row["restarts"])),
            **_reload_samples(self.control.flags()),
            "batches_total": totals["batches"],
            "build_info": {(("version", __version__),): 1},
            "health_status": int(not reasons),
            "health_reasons": {(("reason", kind),): sum(k == kind for k, _ in reasons) for kind in REASON_KINDS},
            "stall_limit_seconds": self.rules.stall_seconds,
        }

    def own_samples(self):
        """The sidecar's own counts and the run-time flags, read when /metrics is asked (they change on
        requests to this process, so a client sees its own /admin request counted at once)."""
        return {**self._http_samples(), **(self.admin.samples() if self.admin is not None else {}),
                **(self.page.samples() if self.page is not None else {})}

    def _alert_samples(self, totals):
        """Generated and dropped from the workers' counters; the rest from the alerter's stats file (written
        when a figure changes) and the outbox on disk. Every configured sink shows, from zero."""
        stats = read_stats(os.path.join(self.outbox, STATS_FILE)) if self.outbox else {}
        sinks = stats.get("sinks", {})
        oldest = stats.get("oldest_at")
        delivered, failed, throttled, suppressed, held, notes = {}, {}, {}, {}, {}, {}
        joins, limits = {}, {}
        for sink in self.sinks:
            mine = sinks.get(sink, {})
            joins[(("sink", sink),)] = int(mine.get("situation_joins", 0))
            for reason in SITUATION_LIMITS:
                limits[(("sink", sink), ("reason", reason))] = int(mine.get("situation_limits", {}).get(reason, 0))
            delivered[(("sink", sink),)] = int(mine.get("delivered", 0))
            throttled[(("sink", sink),)] = int(mine.get("throttled", 0))
            held[(("sink", sink),)] = int(mine.get("held", 0))
            notes[(("sink", sink),)] = int(mine.get("notifications", 0))
            for reason in SUPPRESS_REASONS:
                suppressed[(("sink", sink), ("reason", reason))] = int(mine.get("suppressed", {}).get(reason, 0))
            for reason in FAILURE_REASONS:
                failed[(("sink", sink), ("reason", reason))] = int(mine.get("failed", {}).get(reason, 0))
        fleet = stats.get("fleet", {})
        return {**self._stream_samples(sinks, fleet), "alerts_generated_total": totals["alerts_generated"],
                "alerts_dropped_total": {(("reason", "outbox_full"),): totals["alerts_dropped"] + sum(
                                             int(f.get("dropped", 0)) for f in fleet.values()),
                                         (("reason", "write_error"),): totals["alert_write_errors"]},
                "alerts_delivered_total": delivered, "alerts_failed_total": failed, "alerts_throttled_total": throttled,
                "alerts_suppressed_total": suppressed, "alerts_held_total": held, "alert_notifications_total": notes,
                "alert_situation_joins_total": joins, "situation_limits_total": limits,
                "alert_queue_size": int(stats.get("queue", 0)) if self.sinks else 0,
                "alert_queue_limit": self.outbox_limits[1],
                "alert_outbox_bytes": outbox_bytes(self.outbox) if self.outbox else 0,
                "alert_outbox_limit_bytes": self.outbox_limits[0],
                "alert_oldest_undelivered_age_seconds":
                    round(max(0.0, time.time() - oldest), 3) if self.sinks and oldest else 0}

    def _stream_samples(self, sinks, fleet):
        """The redis sinks' figures: the writer's from its sink stats, the reader's (consume) from "fleet"."""
        redis_sinks = [name for name in self.sinks if name in self.redis_sinks]
        at_limit, read, duplicates, down = {}, {}, {}, {}
        for sink in redis_sinks:
            reader = fleet.get(sink, {})
            at_limit[(("sink", sink),)] = int(sinks.get(sink, {}).get("at_limit", 0))
            read[(("sink", sink),)] = int(reader.get("read", 0))
            duplicates[(("sink", sink),)] = int(reader.get("duplicates", 0))
            down[(("sink", sink),)] = int(reader.get("disconnected", 0)) if sink in self.redis_sinks_reading else 0
        return {"alert_stream_at_limit_total": at_limit, "alert_stream_read_total": read,
                "alert_stream_duplicates_total": duplicates, "alert_stream_reader_disconnected": down}

    def _tiers_enabled(self):
        flags = self.control.flags()
        return {(("tier", t),): int(on and (t != "t4" or flags.tier4_enabled)) for t, on in self.tiers_configured}

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

    def _workers_alive(self):
        states = self.control.child_table()["state"]
        return sum(int(states[slot]) in ALIVE for slot in self.worker_slots)

    def health(self, judged=None):
        """The /health body: "unhealthy" with the reasons (texts) when the rules find any, else "degraded" while
        state files cannot be written (scoring goes on), else "healthy". `judged`: the rules' verdict when the
        caller already has it."""
        table = self.control.child_table()
        if judged is None:
            judged = self.rules.judge(table, self.clock(), self._current())
        reasons = [text for _kind, text in judged]
        degraded = state_degraded_reasons(self.control.counter_totals())
        return {"status": "unhealthy" if reasons else "degraded" if degraded else "healthy",
                "reasons": reasons + degraded,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "workers": self._workers_alive(),
                "lines_processed": self.control.counter_totals()["lines_processed"],
                "processes": {name: {"role": role, "state": state_name(table[slot]["state"]),
                                     "pid": int(table[slot]["pid"]), "restarts": int(table[slot]["restarts"])}
                              for name, role, slot in self.processes}}

class SnapshotReader:
    """The one place readings are taken: a thread calls Readings.take() every READ_INTERVAL_SECONDS and
    keeps the Snapshot under a lock. It is the HTTP server's source: health() and samples() serve the
    last snapshot (plus the sidecar's own counts, read at request time)."""

    def __init__(self, readings, interval=READ_INTERVAL_SECONDS, clock=time.monotonic):
        self.readings, self.interval, self.clock = readings, interval, clock
        self._lock = threading.Lock()
        self._snapshot = None
        self._failed = None            # the last error of take(), logged once per kind
        self.thread = threading.Thread(target=self._run, name="readings", daemon=True)

    def start(self):
        self.refresh()                 # the first request already has a snapshot
        self.thread.start()
        return self

    def refresh(self):
        try:
            snapshot = self.readings.take()
        except Exception as exc:   # keep serving the last snapshot (it turns stale, and /health says so)
            if repr(exc) != self._failed:
                log.exception("sidecar: taking the readings failed (serving the last ones)")
            self._failed = repr(exc)
            return
        self._failed = None
        with self._lock:
            self._snapshot = snapshot

    def _run(self):
        next_at = self.clock()
        while True:
            next_at += self.interval
            time.sleep(max(0.0, next_at - self.clock()))
            self.refresh()
            if self.clock() > next_at + self.interval:
                next_at = self.clock()     # a slow reading: no burst of catching up

    def snapshot(self):
        with self._lock:
            return self._snapshot

    def health(self):
        snapshot = self.snapshot()
        if snapshot is None:
            return {"status": "unhealthy", "reasons": ["sidecar: no readings taken yet: %s" % self._failed],
                    "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        body = dict(snapshot.health, reasons=list(snapshot.health["reasons"]))
        age = self.clock() - snapshot.taken
        if age > STALE_SNAPSHOT_SECONDS:
            body["reasons"].append("sidecar readings %.0f s old: its reader thread is stuck or failing%s"
                                   % (age, ": " + self._failed if self._failed else ""))
            body["status"] = "unhealthy"
        return body

    def samples(self):
        snapshot = self.snapshot()
        samples = dict(snapshot.samples) if snapshot is not None else {}
        if snapshot is not None and self.clock() - snapshot.taken > STALE_SNAPSHOT_SECONDS:
            samples["health_status"] = 0
            reasons = dict(samples.get("health_reasons", {}))
            reasons[(("reason", "readings_stale"),)] = 1
            samples["health_reasons"] = reasons
        return {**samples, **self.readings.own_samples()}
def _state_samples(totals):
    """State files set aside on load (by reason), failed state writes, processes failing to write now."""
    return {"state_load_failures_total": {(("reason", reason),): totals[load_counter_field(reason)]
                                          for reason in LOAD_FAILURE_REASONS},
            "state_write_errors_total": totals["state_write_errors"],
            "state_writes_failing": totals["state_writes_failing"],
            "dead_letter_lines_refused_total": totals["dead_letter_refused"]}


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def run_sidecar(ctx, daemon):
    """ChildSpec target of the sidecar: serve until SIGTERM, then finish the answers under way."""
    daemon.setup_child_logging("sidecar")
    cfg = daemon.cfg
    readings = Readings(cfg, daemon.control, daemon.rings, daemon.processes, os.getppid())
    access = os.path.join(cfg["paths"]["log_dir"], "access.log") if cfg["logging"]["access_log"] else None
    http = cfg["http"]
    # Loaded here, at every sidecar start: a reload (SIGHUP) restarts the sidecar, which serves the renewed
    # certificate and reads the token file again; the config checks refused a pair that cannot load.
    tls = server_context(http["tls_cert"], http["tls_key"]) if tls_enabled(http) else None
    views = WorkerViews(cfg["paths"]["state_dir"])
    readings.admin = AdminAPI.from_config(cfg, daemon.control, views)
    reader = SnapshotReader(readings)
    readings.page = Page(cfg, readings, views, health=reader.health)
    server = SidecarHTTPServer(http["bind"], http["port"], reader, access_log_path=access,
                               sock=daemon.http_socket, max_connections=http["max_connections"],
                               header_timeout_seconds=http["header_timeout_seconds"], admin=readings.admin,
                               tls_context=tls, page=readings.page)
    readings.http_rejections = server.rejections
    server.incidents_api = IncidentsAPI(views, http["incidents_api_max"], readings.admin.authorized
                                        if http["incidents_api_token"] else None, readings.admin.disabled_reason,
                                        situations=cfg["situations"], published=published_path(cfg))
    log.info("sidecar serving %s://%s:%d (/, /health, /metrics, /api/incidents, /api/situations, /admin/*%s)",
             "https" if tls else "http",
             server.server_address[0], server.port, "" if readings.admin.disabled_reason else " with a token")
    reader.start()
    _serve(server, daemon.control, ctx.slot, ctx.stop)
    _drain(server, http["header_timeout_seconds"])
    return 0


def _serve(server, control, slot, stop):
    """Serve requests until SIGTERM; once a second beat, cut connections past their header deadline
    and run memory relief when the supervisor asked for it (SIGUSR1 bumps relief_generation). The
    readings are the reader thread's (SnapshotReader)."""
    server.timeout = 0.25
    next_beat = 0.0
    relief = ReliefWatch(control, "sidecar")
    while not stop.requested:
        now = time.monotonic()
        if now >= next_beat:
            control.beat(slot)
            relief.check()
            next_beat = now + 1.0
        server.service_actions()
        server.handle_request()


def _drain(server, timeout):
    """Stop accepting (the supervisor keeps the listening socket: connections wait in its queue for the
    next sidecar) and finish the answers under way, bounded like a slow client's headers, so a reload
    or set-workers does not cut a scrape halfway through its body."""
    busy = server.drain(timeout)
    if busy:
        log.warning("sidecar stop: cut %d connection(s) still busy after %.1f s", busy, timeout)
    else:
        log.info("sidecar stop: answers under way finished")


def _reload_samples(flags):
    """The reload metrics from the control block's flags (the supervisor sets them in handle_hup)."""
    return {"config_last_reload_successful": int(flags.reload_ok),
            "config_reloads_total": {(("result", "applied"),): flags.config_generation,
                                     (("result", "rejected"),): flags.reloads_rejected}}
