"""Fault injection for tests: make the worker die, hang or raise on a line that holds a marker.

Read once when a detector worker starts (worker/detector.py); off unless the environment sets it.
The parsers are linear now, so no real line stalls a worker; tests of poison-line isolation
(worker/poison.py) need a line that does. Documented in docs/architecture.md as a test facility.

    ANOMALY_DETECTOR_FAULT_LINE=<marker>      a line containing these bytes triggers the fault
    ANOMALY_DETECTOR_FAULT_ACTION=abort|hang|raise|crash   os.abort() (default), sleep without
                                    heartbeats until killed, raise RuntimeError (the worker's guards
                                    catch it), or raise an InjectedCrash that escapes them (an
                                    uncaught exception: the child dies with its traceback logged)
"""
import logging
import os
import time

log = logging.getLogger(__name__)
FAULT_LINE_ENV = "ANOMALY_DETECTOR_FAULT_LINE"
FAULT_ACTION_ENV = "ANOMALY_DETECTOR_FAULT_ACTION"
ACTIONS = ("abort", "hang", "raise", "crash")


class InjectedFault(RuntimeError):
    """What the `raise` action raises."""


class InjectedCrash(BaseException):
    """What the `crash` action raises: not an Exception, so no guard in the worker catches it; it
    stands for a bug that escapes them and ends the process through the crash logging."""


class FaultInjector:
    """Triggers the configured fault when a batch piece holds the marker."""

    def __init__(self, marker, action="abort"):
        if not marker:
            raise ValueError("%s is empty" % FAULT_LINE_ENV)
        if action not in ACTIONS:
            raise ValueError("%s must be one of %s, not %r" % (FAULT_ACTION_ENV, ", ".join(ACTIONS), action))
        self.marker = marker.encode("utf-8")
        self.action = action

    @classmethod
    def from_environment(cls, environ=None, who="worker"):
        """The injector the environment asks for, or None (the production case)."""
        environ = os.environ if environ is None else environ
        marker = environ.get(FAULT_LINE_ENV, "")
        if not marker:
            return None
        injector = cls(marker, environ.get(FAULT_ACTION_ENV, "") or "abort")
        log.warning("%s: fault injection is ON (%s=%r, action %s); a test facility, never for production",
                    who, FAULT_LINE_ENV, marker, injector.action)
        return injector

    def check(self, buf, starts, ends):
        """Trigger the fault when any of the lines buf[starts[k]:ends[k]] (contiguous) holds the marker."""
        if len(starts) == 0 or self.marker not in bytes(buf[int(starts[0]):int(ends[-1])]):
            return
        if self.action == "raise":
            raise InjectedFault("injected fault: line holds the %s marker" % FAULT_LINE_ENV)
        if self.action == "crash":
            raise InjectedCrash("injected crash: line holds the %s marker" % FAULT_LINE_ENV)
        if self.action == "hang":
            while True:   # no heartbeat from here: the supervisor kills us as hung
                time.sleep(3600)
        os.abort()
