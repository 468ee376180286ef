"""Signal handling: the supervisor's handlers only enqueue; each child role gets its own dispositions.

The arbiter loop sleeps in SignalQueue.wait() (or selects on its fileno()) and dispatches what it
returns to handle_<name> methods; supervisor.children calls block_all/setup_child around os.fork.

Why a queue plus a wakeup pipe (gunicorn 24, PR #3441): a handler can run between any two bytecodes
of the loop, so it must not log, allocate locks or touch loop state; SimpleQueue.put_nowait is
reentrant. signal.set_wakeup_fd makes the C-level handler write a byte to the pipe, so a signal
that lands just before select() still wakes it: no lost wake-ups, no polling.

Children (workers, inputs, alerter, sidecar) must not react to the supervisor's signals: operators'
`pkill -HUP anomaly_detector` or a terminal's Ctrl-C reach every process, and a worker that died on
SIGINT or reloaded on SIGHUP by itself would break the supervisor's orderly reload and stop. So
children ignore HUP, USR1, USR2, INT, TTIN, TTOU and WINCH (the supervisor relays USR1 and reloads
through the control block), keep default QUIT (the operator's "die now"), and SIGTERM is a graceful
stop request (stateful roles finish their batch, ack, snapshot; the sidecar its answers).
"""
import faulthandler
import os
import queue
import select
import signal

SUPERVISOR_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT,
                      signal.SIGQUIT, signal.SIGCHLD, signal.SIGTTIN, signal.SIGTTOU)
SIGNAL_NAMES = {sig: sig.name[3:].lower() for sig in SUPERVISOR_SIGNALS}  # SIGHUP -> "hup" for handle_hup
WAKEUP_REQUEST = "wakeup"  # queued by SignalQueue.wakeup() for non-signal wake-ups

CHILD_IGNORED = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
                 signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH)
# Every child role stops gracefully on SIGTERM (StopRequest): workers, inputs and the alerter finish their
# batch or delivery, the sidecar its HTTP answers (a scrape cut after its headers is a failed scrape).
CHILD_ROLES = ("worker", "input", "alerter", "sidecar")


class SignalQueue:
    """Supervisor side: install handlers that enqueue, then wait() for what arrived."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous = {}
        self._previous_wakeup_fd = None

    def install(self, signals=SUPERVISOR_SIGNALS):
        """Route signals to the queue (main thread only, before forking any child)."""
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._enqueue)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

    def _enqueue(self, signum, frame):
        self._queue.put_nowait(signum)  # the whole handler: no logging, no locks (gunicorn #3198)

    def wakeup(self):
        """Wake wait() from the loop's own code (e.g. a finished admin request)."""
        self._queue.put_nowait(WAKEUP_REQUEST)
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so wait() wakes anyway

    def fileno(self):
        """Readable when something was queued; for a loop that selects on more descriptors."""
        return self._read_fd

    def wait(self, timeout):
        """Everything queued, in arrival order; sleeps up to timeout seconds (None: forever) if nothing is."""
        events = self._drain_queue()
        if not events:
            select.select([self._read_fd], [], [], timeout)
            events = self._drain_queue()
        self._drain_pipe()
        return events

    def uninstall(self):
        """Restore the previous handlers and wakeup descriptor, close the pipe."""
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        self.close_descriptors()

    def close_descriptors(self):
        """Close the pipe without touching handlers (a forked child drops the supervisor's copy)."""
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1

    def _drain_queue(self):
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def _drain_pipe(self):
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass


class StopRequest:
    """Set by a child's SIGTERM handler; the child's loop checks .requested between batches."""

    def __init__(self):
        self.requested = False
        self.signum = None

    def _handle(self, signum, frame):
        self.requested = True
        self.signum = signum


def block_all():
    """Block every catchable signal (around fork); returns the previous mask for restore()."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def restore(mask):
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def setup_child(role, mask, supervisor_queue=None):
    """In a freshly forked child (signals blocked by block_all): give it its role's dispositions.

    Drops the supervisor's handlers and wakeup pipe, ignores CHILD_IGNORED, makes SIGTERM set a
    StopRequest, enables faulthandler so the supervisor's SIGABRT for a hung child dumps its stack,
    then unblocks signals (restore(mask)). Returns the StopRequest SIGTERM sets.
    """
    if role not in CHILD_ROLES:
        raise ValueError(f"unknown child role {role!r}; known: {', '.join(CHILD_ROLES)}")
    signal.set_wakeup_fd(-1)
    if supervisor_queue is not None:
        supervisor_queue.close_descriptors()
    for sig in SUPERVISOR_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    for sig in CHILD_IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    stop = StopRequest()
    signal.signal(signal.SIGTERM, stop._handle)
    faulthandler.enable()
    restore(mask)
    return stop
