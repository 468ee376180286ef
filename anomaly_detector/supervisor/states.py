"""Process states of the supervisor's children (after supervisord's states.py); imports nothing else.

supervisor.children moves children through these; ipc.control stores them as integers for the sidecar.
"""
import enum


class ProcessState(enum.IntEnum):
    STOPPED = 0      # not running and not meant to be (never started, or stopped on request)
    STARTING = 10    # forked, not yet alive for START_SECONDS
    RUNNING = 20     # alive for START_SECONDS: a later exit is a crash, not a start failure
    BACKOFF = 30     # exited unexpectedly; waiting for its restart delay
    STOPPING = 40    # asked to stop (or killed as hung); waiting to reap it
    EXITED = 100     # reaped after an unexpected exit; about to back off or give up
    FATAL = 200      # crash loop: too many quick failures in a row, no more restarts
    UNKNOWN = 1000   # a pid was reaped that the supervisor does not know


ALIVE_STATES = (ProcessState.STARTING, ProcessState.RUNNING, ProcessState.STOPPING)
DOWN_STATES = (ProcessState.STOPPED, ProcessState.BACKOFF, ProcessState.EXITED, ProcessState.FATAL)


def state_name(value):
    """'RUNNING' for 20; 'UNKNOWN' for anything that is not a state (e.g. a zeroed shared-memory row)."""
    try:
        return ProcessState(int(value)).name
    except ValueError:
        return ProcessState.UNKNOWN.name
