"""The listener process: owns the network inputs (syslog UDP/TCP, HTTP ingest) and writes what they receive to spools.

Forked by the supervisor (supervisor/arbiter.py) next to the input process, and restarted by a reload
(SIGHUP) only when its own settings change, so sockets, TCP connections and HTTP clients see nothing of
an ordinary reload. An HTTP request is answered 202 only once its lines are in the spool on disk
(inputs/spool.py); a syslog read is appended and synced before the next read. The input process
(inputs/runner.py) reads the spools back like files and commits their offsets only once the workers
acknowledged the lines, so neither a reload nor a stop loses an acknowledged line.

A full spool (max_spool_mb) refuses: HTTP answers 503 with Retry-After, UDP datagrams are dropped, and
both are counted by reason (`network_lines_refused_total`) and logged; TCP is not dropped but paused: the
lines already read wait in memory (one read's worth) and the connections are not read until there is
room, so peers wait on the TCP window. At a stop those held lines are spooled past the bound (one read's
worth per TCP input), since their peers will not send them again.
"""
import logging
import os
import threading
import time

from anomaly_detector.inputs.http_ingest import HttpIngestInput, bind_ingest_socket
from anomaly_detector.inputs.origin import json_origin, syslog_origin
from anomaly_detector.inputs.spool import SpoolError, SpoolFull, SpoolReader, SpoolWriter, unread_bytes
from anomaly_detector.inputs.stats import InputStatsPublisher
from anomaly_detector.inputs.syslog_server import SyslogInput, bind_syslog_socket
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.storage.health import STATE_HEALTH

log = logging.getLogger(__name__)

NETWORK_TYPES = ("syslog", "http")
IDLE_SLEEP_SECONDS = 0.01
# At stop, sockets are read until empty, but never longer than this: a peer that keeps sending must not
# hold the stop forever (what it sends later is refused by the closed socket, so the peer sees it).
DRAIN_SECONDS = 2.0
# A refusal is logged at most this often per input (with the count since the last line).
REFUSAL_LOG_SECONDS = 10.0
# The settings whose change restarts the listener at a reload (besides the network inputs' own sections).
_PROCESSING_KEYS = ("max_line_bytes", "on_long_line", "max_spool_mb")


def network_inputs(cfg):
    """Names of the inputs the listener serves, in config order."""
    return [name for name, section in cfg["inputs"].items() if section["type"] in NETWORK_TYPES]


def network_address(section):
    """(kind, host, port) of a network input: the supervisor keeps one bound socket per address."""
    kind = "http" if section["type"] == "http" else section["protocol"]
    return kind, section["listen_address"], section["listen_port"]


def bind_network_socket(address):
    """Bind (and for TCP, listen on) one network input's address; raises OSError (busy port, bad address)."""
    kind, host, port = address
    return bind_ingest_socket(host, port) if kind == "http" else bind_syslog_socket(host, port, kind)


def spool_dir(cfg, name):
    return os.path.join(cfg["paths"]["state_dir"], "spool", name)


def build_spool_input(name, section, cfg):
    """The input process's reader of a network input: its spool (this module's listener owns the sockets)."""
    reader = SpoolReader(spool_dir(cfg, name), "spool:" + name)
    reader.origin = syslog_origin if section["type"] == "syslog" else json_origin(section["source_key"])
    return reader


def warn_orphan_spools(cfg):
    """Log spools of inputs no longer configured that still hold unscored lines (removed by a reload or an edit)."""
    root = os.path.join(cfg["paths"]["state_dir"], "spool")
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    configured = set(network_inputs(cfg))
    orphans = [(name, unread_bytes(os.path.join(root, name))) for name in names if name not in configured]
    orphans = [(name, left) for name, left in orphans if left > 0]
    for name, left in orphans:
        log.warning("spool of input %r (no longer configured) holds %d bytes of unscored lines in %s; "
                    "configure the input again to score them, or delete the directory", name, left,
                    os.path.join(root, name))
    return orphans


def spool_max_bytes(cfg):
    return cfg["processing"]["max_spool_mb"] << 20


def listener_settings(cfg):
    """Everything the listener is built from: a reload restarts it only when this changes.

    Each network input's place among all inputs is part of it: the listener publishes the input's
    stats to the control-block row of that place, which a reordered config gives to another input.
    """
    places = {name: index for index, name in enumerate(cfg["inputs"])}
    sections = tuple((places[name], name, tuple(sorted(cfg["inputs"][name].items())))
                     for name in network_inputs(cfg))
    processing = tuple(cfg["processing"][key] for key in _PROCESSING_KEYS)
    return sections, processing, cfg["paths"]["state_dir"]


class _Syslog:
    """One syslog input with its spool and the lines a full spool left over (TCP only)."""

    def __init__(self, name, source, spool):
        self.name, self.source, self.spool = name, source, spool
        self.held = []


class Listener:
    """Serves the network inputs; every line it acknowledges is in its input's spool."""

    def __init__(self, cfg, counters=None, sockets=None, control=None):
        self.counters = counters
        sockets = sockets or {}   # input name -> socket bound by the supervisor (None: bind here)
        processing = cfg["processing"]
        self.spools, self.http, self.syslog = {}, [], []
        self._refusals = {}   # input name -> [count since last log line, time of last log line]
        self._spool_errors = {}   # the same, for failed appends
        self._refusal_lock = threading.Lock()   # refused() runs in the HTTP handler threads and the syslog loop
        for name in network_inputs(cfg):
            section = cfg["inputs"][name]
            spool = self.spools[name] = SpoolWriter(spool_dir(cfg, name), spool_max_bytes(cfg))
            if section["type"] == "http":
                self.http.append((name, HttpIngestInput(
                    section["listen_address"], section["listen_port"], max_body_bytes=section["max_body_bytes"],
                    max_line_bytes=processing["max_line_bytes"], max_queue_lines=section["max_queue_lines"],
                    on_long_line=processing["on_long_line"], max_connections=section["max_connections"],
                    header_timeout_seconds=section["header_timeout_seconds"], spool=spool, on_refused=self._refused_callback(name), sock=sockets.get(name))))
            else:
                self.syslog.append(_Syslog(name, SyslogInput(
                    section["listen_address"], section["listen_port"], section["protocol"],
                    max_line_bytes=processing["max_line_bytes"], on_long_line=processing["on_long_line"],
                    max_connections=section["max_connections"], idle_timeout_seconds=section["idle_timeout_seconds"],
                    sock=sockets.get(name)), spool))
        self._published = {}
        self.stats = None if control is None else InputStatsPublisher(control, self._stat_entries(cfg))

    def _stat_entries(self, cfg):
        receivers = dict(self.http)
        receivers.update((entry.name, entry.source) for entry in self.syslog)
        return [(index, name, receivers[name]) for index, name in enumerate(cfg["inputs"]) if name in receivers]

    def run(self, stop, beat, relief=None):
        while not stop.requested:
            beat()
            if relief is not None:
                relief.check()
            moved = sum(self.pump_syslog(entry) for entry in self.syslog)
            self.publish()
            if not moved:
                time.sleep(IDLE_SLEEP_SECONDS)
        self.close()
        self.publish(force=True)
        return 0

    def pump_syslog(self, entry, budget=1):
        """Spool what the held lines and `budget` reads of the socket(s) bring; returns the lines spooled."""
        spooled = 0
        if entry.held:
            if not self._append(entry, entry.held):
                return 0  # still full: the TCP connections stay unread (backpressure)
            spooled, entry.held = len(entry.held), []
        for _ in range(budget):
            lines = [line for chunk in entry.source.poll() for line in chunk.lines]
            if not lines:
                break
            if self._append(entry, lines):
                spooled += len(lines)
            elif entry.source.protocol == "tcp":
                entry.held = lines
                break
        return spooled

    def _append(self, entry, lines):
        """Spool lines; False when refused (UDP: dropped and counted; TCP: the caller holds them)."""
        try:
            entry.spool.append(lines)
            return True
        except SpoolFull:
            reason = "spool_full"
        except SpoolError as exc:
            self._spool_failed(entry.name, exc)
            reason = "spool_error"
        if entry.source.protocol == "udp":
            self.refused(entry.name, reason, len(lines))
        return False

    def _spool_failed(self, name, exc):
        """Log a failing spool at most every REFUSAL_LOG_SECONDS: held TCP lines are retried every round."""
        seen = self._spool_errors.setdefault(name, [0, float("-inf")])
        seen[0] += 1
        now = time.monotonic()
        if now - seen[1] >= REFUSAL_LOG_SECONDS:
            log.error("listener: %s: %s (%d failed appends since the last such line)", name, exc, seen[0])
            seen[0], seen[1] = 0, now

    def _refused_callback(self, name):
        return lambda reason, lines: self.refused(name, reason, lines)

    def refused(self, name, reason, lines):
        """Count and (rate-limited) log lines refused by a full or failing spool."""
        with self._refusal_lock:   # a counter's add is a read and a write: concurrent ones would lose counts
            if self.counters is not None:
                self.counters.add(**{"spool_refused_full" if reason == "spool_full" else "spool_refused_error": lines})
            seen = self._refusals.setdefault(name, [0, float("-inf")])
            seen[0] += lines
            now = time.monotonic()
            due, count = now - seen[1] >= REFUSAL_LOG_SECONDS, seen[0]
            if due:
                seen[0], seen[1] = 0, now
        if due:
            log.warning("listener: %s: %d lines refused (%s, max_spool_mb = %d)", name, count, reason,
                        self.spools[name].max_bytes >> 20)

    def publish(self, force=False):
        """Move the spools' torn-record counts and the receivers' stats to the control block (counters only grow)."""
        if self.stats is not None:
            self.stats.publish(force)
        if self.counters is None:
            return
        STATE_HEALTH.publish(self.counters)   # spool offsets set aside on load, failed writes (a full disk)
        torn = sum(spool.stats["torn_records"] for spool in self.spools.values())
        delta = torn - self._published.get("torn", 0)
        if delta:
            self.counters.add(spool_torn_records=delta)
            self._published["torn"] = torn

    def close(self):
        """Finish or cut HTTP requests, read the syslog sockets dry into the spools, close everything."""
        for _, source in self.http:
            source.close()   # in-flight requests finish (spooled, then 202) or get no 202
        deadline = time.monotonic() + DRAIN_SECONDS
        for entry in self.syslog:
            while time.monotonic() < deadline and self.pump_syslog(entry, budget=8):
                pass
            if entry.held:
                self._spool_held_at_stop(entry)
            entry.source.close()
        for spool in self.spools.values():
            spool.close()


    @staticmethod
    def _spool_held_at_stop(entry):
        """Lines read from a TCP peer are acknowledged: at a stop they go to the spool even past its bound."""
        try:
            entry.spool.append(entry.held, bounded=False)
            log.warning("listener: %s: %d lines read while the spool was full spooled at stop, past max_spool_mb",
                        entry.name, len(entry.held))
        except SpoolError as exc:
            log.error("listener: %s: %d lines read but not spooled at stop: %s", entry.name, len(entry.held), exc)
        entry.held = []


def run_listener(ctx, daemon):
    """ChildSpec target of the listener process."""
    daemon.setup_child_logging("listener")
    counters = daemon.control.counters(daemon.listener_counter_row)
    listener = Listener(daemon.cfg, counters, daemon.network_sockets, control=daemon.control)
    log.info("listener: %s", ", ".join("%s -> %s" % (name, spool.directory) for name, spool in listener.spools.items()))
    return listener.run(ctx.stop, lambda: daemon.control.beat(ctx.slot), ReliefWatch(daemon.control, "listener"))
