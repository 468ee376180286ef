"""The supervisor's main loop (after gunicorn's arbiter): one thread, signals through a queue.

Owns the config, the shared memory (control block and one ring per worker, allocated before any
fork and unlinked only here) and the children: the input process, the detector workers and the
metrics sidecar. docs/signals.md is the operator-facing contract of the handle_* methods.
"""
import logging
import os
import re
import signal
import socket
import time

from anomaly_detector.config.loader import DAEMON, load_config
from anomaly_detector.config.problems import ERROR
from anomaly_detector.inputs.runner import UnsupportedInput, require_supported, run_inputs
from anomaly_detector.ipc.control import ControlBlock, control_bytes
from anomaly_detector.ipc.ring import Ring, ring_bytes
from anomaly_detector.ipc.shm import SharedArena, instance_prefix, sweep_stale
from anomaly_detector.logsetup import setup_logging
from anomaly_detector.metrics.sidecar import run_sidecar
from anomaly_detector.relief import relieve_memory
from anomaly_detector.supervisor import systemd
from anomaly_detector.supervisor.children import ChildSet, ChildSpec, RestartPolicy
from anomaly_detector.supervisor.signals import SIGNAL_NAMES, WAKEUP_REQUEST, SignalQueue
from anomaly_detector.worker.detector import run_detector
from anomaly_detector.worker.warmup import warm_up

log = logging.getLogger(__name__)

MAX_WORKERS = 64                 # the configspec's bound on [processing] workers
INPUT_SLOT, SIDECAR_SLOT, FIRST_WORKER_SLOT = 0, 1, 2
INPUT_COUNTER_ROW = MAX_WORKERS  # worker i writes counter row i; the input process the row after them
EXIT_OK, EXIT_CONFIG, EXIT_START = 0, 1, 3


class StartError(Exception):
    """The daemon cannot start (a busy port, an input type not available); one line for the operator."""


class Daemon:
    """What every child inherits from the supervisor: config and the shared-memory objects."""

    def __init__(self, cfg, control, rings, http_socket):
        self.cfg, self.control, self.rings, self.http_socket = cfg, control, rings, http_socket
        self.worker_slots = [FIRST_WORKER_SLOT + i for i in range(len(rings))]
        self.input_counter_row = INPUT_COUNTER_ROW

    def setup_child_logging(self, name):
        logging_cfg = self.cfg["logging"]
        setup_logging(logging_cfg["level"], self.cfg["paths"]["log_dir"], logging_cfg["to_file"], process_name=name)


class Arbiter:
    """Start, supervise, reload and stop the daemon's processes."""

    def __init__(self, config_path, cfg):
        self.config_path, self.cfg = config_path, cfg
        self.instance = re.sub(r"[^A-Za-z0-9_]", "_", cfg["service"]["name"])[:32]
        self.running = True
        self.arena = self.control = self.children = self.sigq = self.http_socket = None
        self.rings, self._ring_names = [], []
        self._ring_generation = 0
        self._watchdog = systemd.watchdog_interval()

    # -- start ----------------------------------------------------------------------------------

    def run(self):
        """The daemon's life; returns the process exit code."""
        self._setup_logging()
        try:
            self._start()
        except StartError as exc:
            log.error("cannot start: %s", exc)
            self._release()
            return EXIT_START
        try:
            self._loop()
        finally:
            self._shutdown()
        return EXIT_OK

    def _setup_logging(self):
        logging_cfg = self.cfg["logging"]
        setup_logging(logging_cfg["level"], self.cfg["paths"]["log_dir"], logging_cfg["to_file"],
                      process_name="supervisor")

    def _start(self):
        _check_inputs(self.cfg)
        for key in ("state_dir", "log_dir"):
            os.makedirs(self.cfg["paths"][key], exist_ok=True)
        warm_up(self.cfg)
        self.http_socket = _listen(self.cfg["http"])
        removed = sweep_stale(instance_prefix(self.instance))
        if removed:
            log.warning("removed %d shared-memory segments left by a dead supervisor", len(removed))
        self.arena = SharedArena(self.instance)
        self.control = ControlBlock.create(
            self.arena.allocate("control", control_bytes(FIRST_WORKER_SLOT + MAX_WORKERS, MAX_WORKERS + 1)).buf,
            FIRST_WORKER_SLOT + MAX_WORKERS, MAX_WORKERS + 1, **_flags(self.cfg))
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
        daemon = Daemon(self.cfg, self.control, self.rings, self.http_socket)
        specs = [ChildSpec("input", lambda ctx: run_inputs(ctx, daemon), slot=INPUT_SLOT, role="input")]
        specs += [ChildSpec("worker-%d" % i, _worker_target(daemon, i), slot=FIRST_WORKER_SLOT + i)
                  for i in range(len(self.rings))]
        specs.append(ChildSpec("sidecar", lambda ctx: run_sidecar(ctx, daemon), slot=SIDECAR_SLOT, role="sidecar"))
        for spec in specs:
            self.children.add(spec)
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
        next_ping = time.monotonic()
        while self.running:
            timeout = self.children.tick()
            if self._watchdog:
                timeout = min(timeout, max(0.0, next_ping - time.monotonic()))
            for event in self.sigq.wait(min(timeout, 1.0)):
                self._dispatch(event)
            if self._watchdog and time.monotonic() >= next_ping:
                systemd.watchdog()
                next_ping = time.monotonic() + self._watchdog / 2

    def _dispatch(self, event):
        if event == WAKEUP_REQUEST:
            return
        handler = getattr(self, "handle_%s" % SIGNAL_NAMES.get(event, ""), None)
        if handler is None:
            log.info("ignoring signal %s", signal.Signals(event).name)
            return
        handler()

    def handle_chld(self):
        """A child exited: reap it; ChildSet restarts it after its back-off."""
        self.children.reap()

    def handle_term(self):
        """Graceful stop: inputs first, then workers drain their rings and snapshot, then the sidecar."""
        self.running = False

    handle_int = handle_term
    handle_quit = handle_term

    def handle_usr1(self):
        """Memory relief in every process: here now, in the children at their next batch."""
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
            except StartError as exc:
                log.error("reload rejected: %s; still running the previous configuration", exc)
                self._reload_rejected()
            else:
                self._apply(cfg)
                self.control.set_flags(reload_ok=1)
        systemd.ready("processing with %d workers" % len(self.rings))

    def _reload_rejected(self):
        self.control.set_flags(reload_ok=0)
        self.control.bump("reloads_rejected")

    def _apply(self, cfg):
        """Restart the children on the new config through the start-up path, losing no line:
        the input stops and waits until its lines are acknowledged, the workers drain and snapshot."""
        self._stop_children()
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
        self._setup_logging()
        self.control.set_flags(**_flags(cfg))
        policy = RestartPolicy(heartbeat_timeout=cfg["processing"]["heartbeat_timeout_seconds"])
        self.children = ChildSet(policy, self.control, self.sigq)
        self._start_children()
        self.control.bump("config_generation")
        log.info("reloaded %s: %d workers", self.config_path, len(self.rings))

    def _rebind_http(self, http):
        if (http["bind"], http["port"]) == (self.cfg["http"]["bind"], self.cfg["http"]["port"]):
            return
        try:
            sock = _listen(http)
        except StartError as exc:
            log.error("reload: %s; the sidecar stays on %s:%d", exc, *self.http_socket.getsockname()[:2])
            http["bind"], http["port"] = self.cfg["http"]["bind"], self.cfg["http"]["port"]
            return
        self.http_socket.close()
        self.http_socket = sock

    # -- stop -----------------------------------------------------------------------------------

    def _stop_children(self):
        timeout = self.cfg["service"]["shutdown_timeout_seconds"]
        deadline = time.monotonic() + timeout
        for group in (["input"], [n for n in self.children.children if n.startswith("worker-")], ["sidecar"]):
            for name in group:
                self.children.stop(name, timeout=max(0.5, deadline - time.monotonic()))
            self._wait_down(group, deadline + self.children.policy.kill_grace)

    def _wait_down(self, names, deadline):
        while time.monotonic() < deadline:
            self.children.reap()
            self.children.tick()
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


def _flags(cfg):
    return {"tier4_enabled": cfg["detection"]["tier4"]["enabled"], "batch_size": cfg["processing"]["batch_size"],
            "workers_wanted": cfg["processing"]["workers"]}


def _ring_shape(cfg):
    p = cfg["processing"]
    return p["workers"], p["ring_size"], p["ring_bytes"], p["max_line_bytes"]


def _check_inputs(cfg):
    for name, section in cfg["inputs"].items():
        try:
            require_supported(name, section)
        except UnsupportedInput as exc:
            raise StartError(str(exc)) from None


def _listen(http):
    """Bind the sidecar's socket here, before forking: a busy port fails the start with one line."""
    try:
        sock = socket.create_server((http["bind"], http["port"]), reuse_port=False)
    except OSError as exc:
        raise StartError("cannot listen on %s:%d: %s" % (http["bind"], http["port"], exc.strerror)) from None
    sock.set_inheritable(True)
    return sock

