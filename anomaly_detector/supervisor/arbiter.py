"""The supervisor's main loop (after gunicorn's arbiter): one thread, signals through a queue.

Owns the config, the shared memory (control block and one ring per worker, allocated before any
fork and unlinked only here) and the children: the input process, the detector workers and the
metrics sidecar. docs/signals.md is the operator-facing contract of the handle_* methods.
"""
import copy
import dataclasses
import logging
import os
import re
import signal
import socket
import time

from anomaly_detector.alerting.alerter import run_alerter
from anomaly_detector.alerting.sinks import SinkConfigError, build_sink, sink_sections
from anomaly_detector.config.loader import DAEMON, load_config
from anomaly_detector.config.problems import ERROR
from anomaly_detector.inputs.listener import (
    bind_network_socket,
    listener_settings,
    network_address,
    network_inputs,
    run_listener,
)
from anomaly_detector.inputs.runner import UnsupportedInput, require_supported, run_inputs
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, sweep_stale
from anomaly_detector.logsetup import log_crash, setup_logging
from anomaly_detector.metrics.sidecar import run_sidecar
from anomaly_detector.relief import relieve_memory
from anomaly_detector.storage.atomic import set_generations
from anomaly_detector.storage.layout import migrate_layout
from anomaly_detector.supervisor import proctitle, systemd
from anomaly_detector.supervisor.children import ChildSet, ChildSpec, RestartPolicy
from anomaly_detector.supervisor.signals import SIGNAL_NAMES, WAKEUP_REQUEST, SignalQueue
from anomaly_detector.supervisor.states import ALIVE_STATES, DOWN_STATES, ProcessState
from anomaly_detector.worker.detector import run_detector
from anomaly_detector.worker.warmup import warm_up

log = logging.getLogger(__name__)

MAX_WORKERS = 64                 # the configspec's bound on [processing] workers
INPUT_SLOT, SIDECAR_SLOT, FIRST_WORKER_SLOT = 0, 1, 2
INPUT_COUNTER_ROW = MAX_WORKERS  # worker i writes counter row i; the input process the row after them
LISTENER_SLOT = FIRST_WORKER_SLOT + MAX_WORKERS   # after every possible worker: worker slots stay put
LISTENER_COUNTER_ROW = INPUT_COUNTER_ROW + 1
ALERTER_SLOT = LISTENER_SLOT + 1   # heartbeat only: its counters are in its stats file (alerting/alerter.py)
CONTROL_SLOTS, COUNTER_ROWS = ALERTER_SLOT + 1, LISTENER_COUNTER_ROW + 1
EXIT_OK, EXIT_CONFIG, EXIT_START, EXIT_FATAL_CHILD = 0, 1, 3, 4
COMPILE_EXTEND_SECONDS = 120     # a first start's kernel compile may outlast TimeoutStartSec on a busy host


class StartError(Exception):
    """The daemon cannot start (a busy port, an input type not available); one line for the operator."""


class Daemon:
    """What every child inherits from the supervisor: config and the shared-memory objects."""

    def __init__(self, cfg, control, rings, http_socket, network_sockets=None):
        self.cfg, self.control, self.rings, self.http_socket = cfg, control, rings, http_socket
        self.network_sockets = network_sockets or {}   # network input name -> its bound socket
        self.worker_slots = [FIRST_WORKER_SLOT + i for i in range(len(rings))]
        self.input_counter_row = INPUT_COUNTER_ROW
        self.processes = []   # [(name, role, slot)] of every child, filled before the first fork
        self.listener_counter_row = LISTENER_COUNTER_ROW

    def setup_child_logging(self, name):
        logging_cfg = self.cfg["logging"]
        setup_logging(logging_cfg["level"], self.cfg["paths"]["log_dir"], logging_cfg["to_file"], process_name=name)


class Arbiter:
    """Start, supervise, reload and stop the daemon's processes."""

    def __init__(self, config_path, cfg):
        self.config_path, self.cfg = config_path, cfg
        self.instance = re.sub(r"[^A-Za-z0-9_]", "_", cfg["service"]["name"])[:32]
        self.running = True
        self.exit_code = EXIT_OK
        self._fatal_since = None
        self._restarts = {}    # {child name: restarts} carried over a reload
        self._restart_when_reaped = set()   # children still alive after a reload's stop: fork them once reaped
        self.arena = self.control = self.children = self.sigq = self.http_socket = None
        self.rings, self._ring_names = [], []
        self.network_sockets = {}   # (kind, host, port) -> socket bound here, kept across reloads
        self._ring_generation = 0
        self._watchdog = systemd.watchdog_interval()
        self._next_ping = 0.0
        self._workers_seen = cfg["processing"]["workers"]   # workers_wanted as last acted on

    # -- start ----------------------------------------------------------------------------------

    def run(self):
        """The daemon's life; returns the process exit code."""
        proctitle.name_supervisor()   # `pgrep -x anomaly_detect`; the children are named as they fork
        self._setup_logging()
        try:
            self._start()
        except StartError as exc:
            log.error("cannot start: %s", exc)
            self._release()
            return EXIT_START
        try:
            self._loop()
        except Exception:
            log_crash("supervisor crashed with an uncaught exception; stopping the children")
            raise
        finally:
            self._shutdown()
        return self.exit_code

    def _setup_logging(self):
        logging_cfg = self.cfg["logging"]
        setup_logging(logging_cfg["level"], self.cfg["paths"]["log_dir"], logging_cfg["to_file"],
                      process_name="supervisor")

    def _start(self):
        _check_inputs(self.cfg)
        for key in ("state_dir", "log_dir"):
            os.makedirs(self.cfg["paths"][key], exist_ok=True)
        migrate_layout(self.cfg["paths"]["state_dir"])   # workers/<N>/ of older releases -> baselines/, statistics/
        set_generations(self.cfg["retention"]["snapshot_generations"])   # inherited by every child
        warm_up(self.cfg, status=_compiling)
        self.http_socket = _listen(self.cfg["http"])
        self._bind_network(self.cfg)
        removed = sweep_stale(instance_prefix(self.instance))
        if removed:
            log.warning("removed %d shared-memory segments left by a dead supervisor", len(removed))
        self.arena = SharedArena(self.instance)
        self.control = ControlBlock.create(
            self.arena.allocate("control", control_bytes(CONTROL_SLOTS, COUNTER_ROWS)).buf,
            CONTROL_SLOTS, COUNTER_ROWS, **_flags(self.cfg))
        self._allocate_rings(self.cfg["processing"])
        self._write_pid_file()
        self.sigq = SignalQueue()
        self.sigq.install()
        policy = RestartPolicy(heartbeat_timeout=self.cfg["processing"]["heartbeat_timeout_seconds"])
        self.children = ChildSet(policy, self.control, self.sigq)
        self._start_children()
        systemd.ready("processing with %d workers" % len(self.rings))
        log.info("started: %d workers, http on %s:%d", len(self.rings), *self.http_socket.getsockname()[:2])

    def _allocate_rings(self, processing):
        slots, data = processing["ring_size"], processing["ring_bytes"]
        self._ring_generation += 1
        self._ring_names = ["ring.g%d.%d" % (self._ring_generation, i) for i in range(processing["workers"])]
        self.rings = [Ring.create(self.arena.allocate(name, ring_bytes(slots, data)).buf, slots, data,
                                  processing["max_line_bytes"]) for name in self._ring_names]

    def _release_rings(self):
        """Unlink the rings (only when empty: the reload path drained them)."""
        for name in self._ring_names:
            self.arena.release(name)
        self.rings, self._ring_names = [], []

    def _start_children(self):
        """Fork every child not running. Restart counts carry over a reload (self._restarts), so
        process_restarts_total only grows; the sidecar learns every child from daemon.processes."""
        sockets = {name: self.network_sockets[network_address(self.cfg["inputs"][name])]
                   for name in network_inputs(self.cfg)}
        daemon = Daemon(self.cfg, self.control, self.rings, self.http_socket, sockets)
        specs = [ChildSpec("input", lambda ctx: run_inputs(ctx, daemon), slot=INPUT_SLOT, role="input")]
        specs += [ChildSpec("worker-%d" % i, _worker_target(daemon, i), slot=FIRST_WORKER_SLOT + i,
                            progress=_worker_progress(self.control, i))
                  for i in range(len(self.rings))]
        specs.append(ChildSpec("sidecar", lambda ctx: run_sidecar(ctx, daemon), slot=SIDECAR_SLOT, role="sidecar"))
        if sink_sections(self.cfg):
            # Delivers the workers' incident events from the outbox; a reload restarts it on the new sinks.
            specs.append(ChildSpec("alerter", lambda ctx: run_alerter(ctx, daemon), slot=ALERTER_SLOT, role="alerter"))
        if network_inputs(self.cfg):
            # Owns the network sockets and writes the spools; a reload keeps it when its settings stay.
            specs.append(ChildSpec("listener", lambda ctx: run_listener(ctx, daemon), slot=LISTENER_SLOT,
                                   role="input"))
        for spec in specs:
            spec = dataclasses.replace(spec, target=_without_inherited_sockets(daemon, spec.role, spec.name,
                                                                               spec.target))
            running = self.children.children.get(spec.name)
            if running is not None:   # one that did not stop in time, or the kept listener: not forked now,
                running.spec = spec   # but a later restart (after a crash) runs on this config and sockets
                if running.stop_requested and running.state in ALIVE_STATES:
                    self._restart_when_reaped.add(spec.name)
                continue
            child = self.children.add(spec)
            child.spawns = self._restarts.get(spec.name, 0)
        daemon.processes = sorted(((c.spec.name, c.spec.role, c.spec.slot) for c in self.children.children.values()
                                   if c.spec.slot is not None), key=lambda p: p[2])
        self.children.start()

    def _write_pid_file(self):
        path = self.cfg["service"]["pid_file"]
        if not path:
            return
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                f.write("%d\n" % os.getpid())
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.warning("cannot write pid file %s: %s", path, exc.strerror)

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self):
        while self.running:
            timeout = self.children.tick()
            self._watch_fatal()
            if self._watchdog:
                timeout = min(timeout, max(0.0, self._next_ping - time.monotonic()))
            for event in self.sigq.wait(min(timeout, 1.0)):
                self._dispatch(event)
            self._watch_workers_wanted()
            self._ping_watchdog()

    def _ping_watchdog(self):
        """WATCHDOG=1 every half WatchdogSec, from the loop and from the waits of a reload's stop (up to
        shutdown_timeout_seconds): the supervisor is not hung while it waits for its children."""
        if self._watchdog and time.monotonic() >= self._next_ping:
            systemd.watchdog()
            self._next_ping = time.monotonic() + self._watchdog / 2

    def _watch_fatal(self):
        """A child that stays FATAL ends the daemon (exit 4) after [service] fatal_exit_seconds, so the
        service manager restarts it whole; the grace lets /health probes see the 503 first. A FATAL
        sidecar's listening socket is closed at once: no port may accept with nobody serving it."""
        fatal = [c for c in self.children.children.values() if c.state == ProcessState.FATAL]
        if any(c.spec.role == "sidecar" for c in fatal) and self.http_socket is not None:
            address = self.http_socket.getsockname()[:2]
            self.http_socket.close()
            self.http_socket = None
            log.error("sidecar FATAL: closed the HTTP port %s:%d; /health and /metrics are down", *address)
        if not fatal:
            self._fatal_since = None
            return
        names = ", ".join(c.spec.name for c in fatal)
        grace = self.cfg["service"]["fatal_exit_seconds"]
        now = time.monotonic()
        if self._fatal_since is None:
            self._fatal_since = now
            log.error("%s FATAL; the supervisor exits in %.0f s (fatal_exit_seconds) unless reloaded", names, grace)
        if now - self._fatal_since >= grace and self.running:
            log.critical("%s FATAL for %.0f s (crash loop, last exit %s): stopping the daemon with exit status %d "
                         "so the service manager restarts it", names, now - self._fatal_since,
                         ", ".join(str(c.last_exit) for c in fatal), EXIT_FATAL_CHILD)
            self.exit_code = EXIT_FATAL_CHILD
            self.running = False

    def _dispatch(self, event):
        if event == WAKEUP_REQUEST:
            return
        handler = getattr(self, "handle_%s" % SIGNAL_NAMES.get(event, ""), None)
        if handler is None:
            log.info("ignoring signal %s", signal.Signals(event).name)
            return
        handler()

    def handle_chld(self):
        """A child exited: reap it; ChildSet restarts it after its back-off. One that outlived a reload's
        stop was reaped as STOPPED (it was asked to stop): its successor is forked now."""
        self.children.reap()
        for name in list(self._restart_when_reaped):
            child = self.children.children.get(name)
            if child is None or child.state not in ALIVE_STATES:
                self._restart_when_reaped.discard(name)
                if child is not None and child.state == ProcessState.STOPPED:
                    log.warning("child %s ended after the reload; starting it on the new configuration", name)
                    self.children.start(name)

    def handle_term(self):
        """Graceful stop: inputs first, then workers drain their rings and snapshot, then the sidecar."""
        self.running = False

    handle_int = handle_term
    handle_quit = handle_term

    def handle_usr1(self):
        """Memory relief in every process: here now; the workers and the input at their next batch or
        idle turn, the sidecar within a second (each watches relief_generation in the control block)."""
        relieve_memory("supervisor")
        self.control.bump("relief_generation")

    def handle_hup(self):
        """Reload: validate the file first, with every start-up check (an empty file, NaN, clashing
        ports); any error keeps the running config, warnings alone do not."""
        systemd.reloading("reloading %s" % self.config_path)
        cfg, problems = load_config(self.config_path, purpose=DAEMON)
        for problem in problems:
            log.log(logging.ERROR if problem.severity == ERROR else logging.WARNING, "reload: %s", problem.render())
        if cfg is None:
            log.error("reload rejected: %s has %d error(s); still running the previous configuration",
                      self.config_path, sum(p.severity == ERROR for p in problems))
            self._reload_rejected()
        else:
            try:
                _check_inputs(cfg)
                self._bind_network(cfg)
            except StartError as exc:
                log.error("reload rejected: %s; still running the previous configuration", exc)
                self._reload_rejected()
            else:
                self._apply(cfg)
                self.control.set_flags(reload_ok=1)
        systemd.ready("processing with %d workers" % len(self.rings))

    def _watch_workers_wanted(self):
        """POST /admin/set-workers writes workers_wanted; fork or retire workers to match it.

        Workers own their rings, so the change takes the reload path on the running config with
        another worker count: inputs stop once their lines are acknowledged, workers drain and
        snapshot, the rings are reallocated, everything starts again. No line is lost. The other
        admin settings (batch size, tier 4, learning rate, backpressure) are kept across it."""
        wanted = self.control.flags().workers_wanted
        if wanted == self._workers_seen or not self.running:
            return
        self._workers_seen = wanted
        if wanted == len(self.rings):
            return
        log.warning("admin set-workers: %d -> %d workers; restarting the children on the running "
                    "configuration", len(self.rings), wanted)
        cfg = copy.deepcopy(self.cfg)
        cfg["processing"]["workers"] = wanted
        self._apply(cfg, keep_flags=True)
        self._workers_seen = len(self.rings)
        self.control.set_flags(workers_wanted=len(self.rings))   # what runs (a crashed worker's ring may hold lines)
        systemd.ready("processing with %d workers" % len(self.rings))

    def _reload_rejected(self):
        self.control.set_flags(reload_ok=0)
        self.control.bump("reloads_rejected")

    def _apply(self, cfg, keep_flags=False):
        """Restart the children on the new config through the start-up path, losing no line:
        the input stops and waits until its lines are acknowledged, the workers drain and snapshot.
        The listener (network sockets and spools) goes on when its settings are unchanged.
        A reload sets the run-time flags from the file (undoing POST /admin/* changes); keep_flags
        (set-workers) keeps them."""
        keep_listener = self._listener_kept(cfg)
        # Before the stop: a worker that will not come back closes its open incidents (worker/detector.py finish).
        self.control.set_flags(workers_wanted=cfg["processing"]["workers"])
        self._stop_children(keep_listener)
        resized = _ring_shape(cfg) != _ring_shape(self.cfg)
        if resized and any(ring.depth() for ring in self.rings):
            # A worker could not drain (it crashed): its lines stay in its ring for its successor.
            log.warning("rings not empty after the stop; workers and ring sizes change at the next restart")
            p = cfg["processing"]
            p["workers"], p["ring_size"], p["ring_bytes"], p["max_line_bytes"] = _ring_shape(self.cfg)
        elif resized:
            self._release_rings()
            self._allocate_rings(cfg["processing"])
        self._rebind_http(cfg["http"])
        self.cfg = cfg
        set_generations(cfg["retention"]["snapshot_generations"])
        self._setup_logging()
        if not keep_flags:
            self.control.set_flags(**_flags(cfg))
            self._workers_seen = cfg["processing"]["workers"]
        self.children.policy = RestartPolicy(heartbeat_timeout=cfg["processing"]["heartbeat_timeout_seconds"])
        # update, not replace: a worker retired by this reload and added back by a later one goes on counting
        self._restarts.update({name: child.restarts + 1 for name, child in self.children.children.items()})
        self._fatal_since = None
        self._restart_when_reaped.clear()
        for name, child in list(self.children.children.items()):
            if child.state in DOWN_STATES and not (name == "listener" and keep_listener):
                self.children.remove(name)
        self._start_children()
        if keep_flags:
            log.info("restarted with %d workers (admin set-workers)", len(self.rings))
            return
        self.control.bump("config_generation")
        log.info("reloaded %s: %d workers", self.config_path, len(self.rings))

    def _bind_network(self, cfg):
        """Bind the network inputs' sockets here, before forking, and keep them across reloads.

        While the listener restarts (new settings, a crash) the kernel goes on queueing datagrams and
        connections on them, and a busy port fails the start (or the reload) with one line.
        Sockets of addresses no longer configured are closed; unchanged addresses keep their socket.
        """
        wanted = [network_address(cfg["inputs"][name]) for name in network_inputs(cfg)]
        if len(set(wanted)) < len(wanted):
            raise StartError("two network inputs listen on the same address: %s"
                             % sorted({"%s %s:%d" % a for a in wanted if wanted.count(a) > 1}))
        fresh = {}
        for address in wanted:
            if address in self.network_sockets:
                continue
            try:
                fresh[address] = bind_network_socket(address)
            except OSError as exc:
                for sock in fresh.values():
                    sock.close()
                raise StartError("cannot listen on %s %s:%d: %s" % (address + (exc.strerror or exc,))) from None
        for address in set(self.network_sockets) - set(wanted):
            self.network_sockets.pop(address).close()
        self.network_sockets.update(fresh)

    def _listener_kept(self, cfg):
        """True when the running listener serves exactly what the new config asks (then it is not restarted)."""
        child = self.children.children.get("listener")
        return (child is not None and child.state in ALIVE_STATES + (ProcessState.BACKOFF,)
                and listener_settings(cfg) == listener_settings(self.cfg))

    def _rebind_http(self, http):
        same = (http["bind"], http["port"]) == (self.cfg["http"]["bind"], self.cfg["http"]["port"])
        if same and self.http_socket is not None:
            return
        try:
            sock = _listen(http)
        except StartError as exc:
            if self.http_socket is None:   # closed when the sidecar went FATAL; the new sidecar binds itself
                log.error("reload: %s", exc)
                return
            log.error("reload: %s; the sidecar stays on %s:%d", exc, *self.http_socket.getsockname()[:2])
            http["bind"], http["port"] = self.cfg["http"]["bind"], self.cfg["http"]["port"]
            return
        if self.http_socket is not None:
            self.http_socket.close()
        self.http_socket = sock

    # -- stop -----------------------------------------------------------------------------------

    def _stop_children(self, keep_listener=False):
        timeout = self.cfg["service"]["shutdown_timeout_seconds"]
        deadline = time.monotonic() + timeout
        # The listener first: it reads its sockets dry into the spools, which the input then pushes.
        listener = [] if keep_listener or "listener" not in self.children.children else ["listener"]
        # The alerter after the workers, so it may see the events of their last batches (the rest waits in
        # the outbox for the next start).
        alerter = ["alerter"] if "alerter" in self.children.children else []
        for group in (listener, ["input"], [n for n in self.children.children if n.startswith("worker-")], alerter,
                      ["sidecar"]):
            for name in group:
                self.children.stop(name, timeout=max(0.5, deadline - time.monotonic()))
            self._wait_down(group, deadline + self.children.policy.kill_grace)

    def _wait_down(self, names, deadline):
        while time.monotonic() < deadline:
            self.children.reap()
            self.children.tick()
            self._ping_watchdog()
            if not any(self.children.children[n].pid for n in names):
                return
            time.sleep(0.01)

    def _shutdown(self):
        systemd.stopping("stopping")
        log.info("stopping: draining rings and saving state")
        self._stop_children()
        self._release()
        log.info("stopped")

    def _release(self):
        if self.sigq is not None:
            self.sigq.uninstall()
        if self.arena is not None:
            self.arena.close()
        if self.http_socket is not None:
            self.http_socket.close()
        for sock in self.network_sockets.values():
            sock.close()
        pid_file = self.cfg["service"]["pid_file"]
        if pid_file and os.path.exists(pid_file):
            try:
                with open(pid_file) as f:
                    if f.read().strip() == str(os.getpid()):
                        os.unlink(pid_file)
            except OSError:
                pass


def _worker_target(daemon, index):
    return lambda ctx: run_detector(ctx, daemon, index)


def _worker_progress(control, index):
    """Worker `index`'s lines scored, failed or set aside so far (its counter row only grows)."""
    row = control.counters(index)
    return lambda: sum(row.value(name) for name in ("lines_processed", "errors", "lines_dead_lettered"))


def _without_inherited_sockets(daemon, role, name, target):
    """A child closes its inherited copies of the sockets that are not its own first: the HTTP socket
    (but the sidecar) and the network inputs' sockets (but the listener), so a port listens only
    while its server (or the supervisor, between its restarts) holds it."""
    def run(ctx):
        if role != "sidecar" and daemon.http_socket is not None:
            daemon.http_socket.close()
        if name != "listener":
            for sock in daemon.network_sockets.values():
                sock.close()
        return target(ctx)
    return run


def _flags(cfg):
    """The run-time flags as the file sets them (at start and at every reload: admin changes end there)."""
    return {"tier4_enabled": cfg["detection"]["tier4"]["enabled"], "batch_size": cfg["processing"]["batch_size"],
            "workers_wanted": cfg["processing"]["workers"], "backpressure": 0, "learning_rate_factor": 1.0}


def _ring_shape(cfg):
    p = cfg["processing"]
    return p["workers"], p["ring_size"], p["ring_bytes"], p["max_line_bytes"]


def _check_inputs(cfg):
    for name, section in cfg["inputs"].items():
        try:
            require_supported(name, section)
        except UnsupportedInput as exc:
            raise StartError(str(exc)) from None
    for name, section in sink_sections(cfg):   # a missing secret file fails the start (or reload), not an alert
        try:
            build_sink(name, section).close()
        except SinkConfigError as exc:
            raise StartError(str(exc)) from None


def _listen(http):
    """Bind the sidecar's socket here, before forking: a busy port fails the start with one line."""
    try:
        # an IPv6 literal needs an IPv6 socket, as the network inputs bind theirs
        family = socket.AF_INET6 if ":" in http["bind"] else socket.AF_INET
        sock = socket.create_server((http["bind"], http["port"]), family=family, reuse_port=False)
    except OSError as exc:
        raise StartError("cannot listen on %s:%d: %s" % (http["bind"], http["port"], exc.strerror)) from None
    sock.set_inheritable(True)
    return sock


def _compiling(text):
    """Kernel compile progress during a first start: systemd shows it and waits longer."""
    systemd.extend_timeout(COMPILE_EXTEND_SECONDS, text)
