"""Child lifecycle for the supervisor: explicit fork, own reaping, back-off restarts, hung-child kills, stop.

The arbiter loop owns one ChildSet: it calls reap() on SIGCHLD, tick() every loop turn (restarts,
heartbeat checks, kill escalation) and stop_all() on SIGTERM. Heartbeats and the child table live
in ipc.control; signal dispositions of the children come from supervisor.signals.

Intended use (arbiter):

    children = ChildSet(RestartPolicy(heartbeat_timeout=cfg.heartbeat_timeout_seconds), control, sigq)
    children.add(ChildSpec("worker-0", run_worker, slot=0))
    children.start()
    while running:
        for event in sigq.wait(children.tick()):     # tick() returns how long the loop may sleep
            if event == signal.SIGCHLD: children.reap()
            ...
    children.stop_all(timeout=STOP_TIMEOUT_SECONDS)

A child target is f(ctx: ChildContext) -> exit code; it runs in the forked child, which always ends
in os._exit, so no exception or return ever unwinds into the supervisor's stack (pytest's, in tests).
The supervisor must run no other subprocess: reap() collects any child with waitpid(-1), which would
steal the exit status of a subprocess.Popen (and multiprocessing's is_alive() would stay True).
"""
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable, Optional

from anomaly_detector.logsetup import log_crash
from anomaly_detector.supervisor import proctitle, signals
from anomaly_detector.supervisor.states import ALIVE_STATES, DOWN_STATES, ProcessState

log = logging.getLogger(__name__)

START_SECONDS = 5.0                 # alive this long = started; an earlier exit is a quick failure
BACKOFF_INITIAL_SECONDS = 0.5       # delay before the first restart
BACKOFF_MAX_SECONDS = 30.0          # delays double per quick failure up to this
CRASH_LOOP_LIMIT = 5                # quick failures in a row before the child is FATAL
HEARTBEAT_TIMEOUT_SECONDS = 30.0    # no heartbeat this long = hung: SIGABRT (faulthandler dumps its stack)
KILL_GRACE_SECONDS = 5.0            # then SIGKILL if it is still there
STOP_TIMEOUT_SECONDS = 10.0         # graceful stop: SIGTERM, then SIGKILL after this
EXIT_CHILD_CRASHED = 70             # EX_SOFTWARE: the target raised
EXIT_PARENT_GONE = 75               # EX_TEMPFAIL: the supervisor died before the child was set up
_PR_SET_PDEATHSIG = 1
# Logged at ERROR (journalctl -p err shows them): a child that ended without being asked to (a crash, a
# kill -9, the OOM killer, a hung child killed), one that could not be forked, one given up on.
ERROR_EVENTS = ("exited", "fork-failed", "hung", "fatal")


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    start_seconds: float = START_SECONDS
    backoff_initial: float = BACKOFF_INITIAL_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    crash_loop_limit: int = CRASH_LOOP_LIMIT
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT_SECONDS
    kill_grace: float = KILL_GRACE_SECONDS

    def backoff(self, failures):
        """Restart delay after the given number of quick failures in a row (>= 1)."""
        return min(self.backoff_max, self.backoff_initial * 2 ** max(0, failures - 1))


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    name: str
    target: Callable
    slot: Optional[int] = None   # row in the control block (heartbeat, counters); None: no heartbeat check
    role: str = "worker"         # signal dispositions, see signals.CHILD_ROLES
    # A count that grows while the child does useful work (a worker's scored and set-aside lines).
    # A child that died young but moved it was not crash-looping: a worker isolating a poison line
    # dies once per bad line, each time a little further on, and must not be made FATAL for it.
    progress: Optional[Callable[[], int]] = None


@dataclasses.dataclass
class ChildContext:
    """What a target gets in the child."""

    name: str
    slot: Optional[int]
    role: str
    stop: signals.StopRequest
    supervisor_pid: int


@dataclasses.dataclass
class Child:
    """The supervisor's record of one child slot across its restarts."""

    spec: ChildSpec
    state: ProcessState = ProcessState.STOPPED
    pid: int = 0
    started_at: float = 0.0
    spawns: int = 0
    failures: int = 0            # quick failures in a row
    restart_at: float = 0.0
    backoff_delay: float = 0.0   # the delay chosen at the last unexpected exit
    last_exit: Optional[int] = None   # os.waitstatus_to_exitcode: negative = killed by that signal
    stop_requested: bool = False
    hung: bool = False
    kill_at: Optional[float] = None   # SIGKILL when still alive at this time
    killed: bool = False
    progress_at_spawn: Optional[int] = None

    @property
    def restarts(self):
        return max(0, self.spawns - 1)


class ChildSet:
    """All children of the supervisor, keyed by name; single-threaded, driven by the arbiter loop."""

    def __init__(self, policy=None, control=None, signal_queue=None, clock=time.monotonic, on_event=None):
        self.policy = policy or RestartPolicy()
        self.control = control
        self.signal_queue = signal_queue
        self.clock = clock
        self.on_event = on_event
        self.children = {}
        self._by_pid = {}
        self._warned_threads = False

    def add(self, spec):
        if spec.name in self.children:
            raise ValueError(f"child {spec.name!r} exists already")
        if spec.role not in signals.CHILD_ROLES:
            raise ValueError(f"unknown child role {spec.role!r}; known: {', '.join(signals.CHILD_ROLES)}")
        child = Child(spec)
        self.children[spec.name] = child
        return child

    def remove(self, name):
        """Forget a child that is down (after stop(name) and reap), e.g. when scaling workers in."""
        if self.children[name].state not in DOWN_STATES:
            raise RuntimeError(f"child {name!r} is {self.children[name].state.name}; stop it first")
        del self.children[name]

    def start(self, name=None):
        """Fork the named child, or every child that is STOPPED."""
        for child in self._select(name):
            if child.state == ProcessState.STOPPED:
                child.stop_requested = False
                self._spawn(child)

    def alive(self):
        return [c for c in self.children.values() if c.state in ALIVE_STATES]

    def summary(self):
        """{name: {...}} with state, pid, restarts, failures and pending back-off, for logs and metrics."""
        now = self.clock()
        return {name: {"state": c.state.name, "pid": c.pid, "restarts": c.restarts, "failures": c.failures,
                       "last_exit": c.last_exit, "backoff": c.backoff_delay,
                       "restart_in": max(0.0, c.restart_at - now) if c.state == ProcessState.BACKOFF else None}
                for name, c in self.children.items()}

    # -- reaping -------------------------------------------------------------------------------------

    def reap(self):
        """Collect every exited child (waitpid(-1, WNOHANG)); returns the Child records that exited."""
        exited = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self._by_pid.pop(pid, None)
            if child is None:
                log.warning("reaped pid %d that is not one of our children (status %d)", pid, status)
                continue
            self._exited(child, os.waitstatus_to_exitcode(status))
            exited.append(child)
        return exited

    def _exited(self, child, code, how=None):
        """Record an exit; `how` overrides the exit's description (a fork that failed has no status)."""
        now = self.clock()
        quick = now - child.started_at < self.policy.start_seconds and not self._progressed(child)
        child.pid, child.last_exit, child.kill_at, child.killed = 0, code, None, False
        if self.control is not None and child.spec.slot is not None:
            # Only here, at the reaping: a later state change (a back-off cancelled by a stop) must
            # not restamp how and when the process ended (a worker's successor reads it, poison.py).
            self.control.record_exit(child.spec.slot, code, ProcessState.EXITED,
                                     stopped=child.stop_requested and not child.hung)
        if child.stop_requested:
            self._set_state(child, ProcessState.STOPPED, "stopped", how or describe_exit(code))
            return
        cause = "hung, killed" if child.hung else "crashed"
        child.failures = child.failures + 1 if quick else 1
        self._set_state(child, ProcessState.EXITED, "exited", f"{cause}, {how or describe_exit(code)}")
        if quick and child.failures >= self.policy.crash_loop_limit:
            self._set_state(child, ProcessState.FATAL, "fatal",
                            f"{child.failures} quick failures in a row; not restarting")
            return
        child.backoff_delay = self.policy.backoff(child.failures)
        child.restart_at = now + child.backoff_delay
        self._set_state(child, ProcessState.BACKOFF, "backoff", f"restart in {child.backoff_delay:.2f}s")

    @staticmethod
    def _progressed(child):
        """Whether the child's progress count moved during its life (see ChildSpec.progress)."""
        if child.spec.progress is None or child.progress_at_spawn is None:
            return False
        return child.spec.progress() != child.progress_at_spawn

    # -- the periodic duties -------------------------------------------------------------------------

    def tick(self):
        """Promote started children, kill hung ones, escalate kills, restart after back-off.

        Returns seconds until the next duty is due, for the loop's sleep.
        """
        now = self.clock()
        due = [self.policy.start_seconds]
        for child in list(self.children.values()):
            due.append(self._tick_child(child, now))
        return max(0.0, min(d for d in due if d is not None))

    def _tick_child(self, child, now):
        if child.state == ProcessState.BACKOFF:
            if now >= child.restart_at:
                self._spawn(child)
                return None
            return child.restart_at - now
        if child.state not in ALIVE_STATES:
            return None
        if child.state == ProcessState.STARTING and now - child.started_at >= self.policy.start_seconds:
            child.failures = 0
            self._set_state(child, ProcessState.RUNNING, "running")
        if child.kill_at is not None:
            if now >= child.kill_at and not child.killed:
                self._send(child, signal.SIGKILL)
                child.killed = True
            return None if child.killed else child.kill_at - now
        return self._check_heartbeat(child, now)

    def _check_heartbeat(self, child, now):
        if self.control is None or child.spec.slot is None:
            return None
        age = self.control.heartbeat_age(child.spec.slot, now)
        if age <= self.policy.heartbeat_timeout:
            return self.policy.heartbeat_timeout - age
        child.hung = True
        child.kill_at = now + self.policy.kill_grace
        self._set_state(child, ProcessState.STOPPING, "hung", f"no heartbeat for {age:.1f}s; SIGABRT")
        self._send(child, signal.SIGABRT)
        return self.policy.kill_grace

    # -- stopping ------------------------------------------------------------------------------------

    def stop(self, name=None, timeout=STOP_TIMEOUT_SECONDS):
        """Ask the named child (or all) to stop: SIGTERM now, SIGKILL from tick() after timeout."""
        now = self.clock()
        for child in self._select(name):
            child.stop_requested = True
            if child.state in ALIVE_STATES:
                if child.kill_at is None or child.kill_at > now + timeout:
                    child.kill_at = now + timeout
                if child.state != ProcessState.STOPPING:
                    self._set_state(child, ProcessState.STOPPING, "stopping")
                self._send(child, signal.SIGTERM)
            elif child.state in (ProcessState.BACKOFF, ProcessState.EXITED):
                self._set_state(child, ProcessState.STOPPED, "stopped", "restart cancelled")

    def stop_all(self, timeout=STOP_TIMEOUT_SECONDS, poll=0.01):
        """Stop every child within timeout (+ the time SIGKILL takes); True when none needed SIGKILL."""
        self.stop(timeout=timeout)
        forced = False
        hard_deadline = self.clock() + timeout + self.policy.kill_grace
        while self.alive():
            self.reap()
            self.tick()
            forced = forced or any(c.killed for c in self.alive())
            if not self.alive():
                break
            if self.clock() > hard_deadline:
                log.error("children still alive after SIGKILL: %s", [c.pid for c in self.alive()])
                return False
            time.sleep(poll)
        return not forced

    # -- forking -------------------------------------------------------------------------------------

    def _spawn(self, child):
        spec = child.spec
        now = self.clock()
        child.spawns += 1
        child.hung, child.kill_at, child.killed = False, None, False
        if self.control is not None and spec.slot is not None:
            # Before the fork: the heartbeat cell is the child's alone once it runs.
            self.control.record_child(spec.slot, 0, ProcessState.STARTING, started=now, restarts=child.restarts)
        supervisor_pid = os.getpid()
        if threading.active_count() > 1 and not self._warned_threads:
            # A thread holding a lock (logging, malloc arenas) at fork leaves it held in the child forever.
            log.warning("forking with %d threads alive; the supervisor must stay single-threaded",
                        threading.active_count())
            self._warned_threads = True
        # Before the fork: a child quick enough to progress before the parent looks must still count.
        child.progress_at_spawn = spec.progress() if spec.progress is not None else None
        mask = signals.block_all()
        try:
            pid = os.fork()
        except OSError as exc:
            signals.restore(mask)
            child.started_at = now
            self._set_state(child, ProcessState.STARTING, "fork-failed", str(exc))
            self._exited(child, -1, how="fork failed")
            return
        if pid == 0:
            _run_child(spec, mask, self.signal_queue, supervisor_pid)  # never returns
        signals.restore(mask)
        child.pid, child.started_at = pid, now
        self._by_pid[pid] = child
        self._set_state(child, ProcessState.STARTING, "spawned", f"pid {pid}")

    def _send(self, child, sig):
        try:
            os.kill(child.pid, sig)
        except ProcessLookupError:
            pass  # exited already; reap() will see it

    def _set_state(self, child, state, event, detail=""):
        child.state = state
        if self.control is not None and child.spec.slot is not None:
            self.control.record_child(child.spec.slot, child.pid, state)
        log.log(logging.ERROR if event in ERROR_EVENTS else logging.INFO,
                "child %s %s%s", child.spec.name, event, f": {detail}" if detail else "")
        if self.on_event is not None:
            self.on_event(child, event, detail)

    def _select(self, name):
        return list(self.children.values()) if name is None else [self.children[name]]


def describe_exit(code):
    """`exit 70`, or `killed by SIGKILL (exit -9)` for a child a signal ended (waitstatus_to_exitcode < 0)."""
    if code is not None and code < 0:
        try:
            return "killed by %s (exit %d)" % (signal.Signals(-code).name, code)
        except ValueError:
            return "killed by signal %d (exit %d)" % (-code, code)
    return "exit %s" % code


def _run_child(spec, mask, signal_queue, supervisor_pid):
    """Body of a forked child: set up signals, run the target, and always leave through os._exit."""
    code = EXIT_CHILD_CRASHED
    try:
        stop = signals.setup_child(spec.role, mask, signal_queue)
        proctitle.name_child(spec.name)   # ad-worker-0 in ps -o comm, `anomaly-detector: worker-0` in ps -o args
        if not _die_with_parent(supervisor_pid):
            code = EXIT_PARENT_GONE
        else:
            result = spec.target(ChildContext(spec.name, spec.slot, spec.role, stop, supervisor_pid))
            code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        try:
            log_crash("child %s crashed with an uncaught exception (exit %d)" % (spec.name, code))
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _die_with_parent(supervisor_pid):
    """Have the kernel SIGKILL this child when the supervisor dies (kill -9 must not leave orphans).

    SIGKILL rather than SIGTERM: a worker stuck in a compiled loop, or one ignoring SIGTERM, would
    otherwise outlive a dead supervisor with nobody left to kill it. Nothing is lost by it: lines
    not yet acknowledged are re-read from the inputs' checkpoints by the next supervisor.
    Returns False when the supervisor is already gone (it died between fork and this call).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the child notices through its own checks of os.getppid()
    return os.getppid() == supervisor_pid
