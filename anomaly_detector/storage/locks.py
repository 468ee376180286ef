"""Advisory locks (flock) on files in state_dir that the maintenance commands and the workers share.

Used by commands/cleanup.py and commands/optimize.py (one run of each at a time: a second is refused
with a message naming the lock file) and by worker/detector.py, which holds a shared lock on its
`worker-N.lock` for its whole life so that --optimize-models can tell a running worker (it cannot
take the lock exclusively: it asks the worker to compact in-process) from a stopped one (it holds
the lock exclusively while it rewrites that worker's files, and a worker starting meanwhile waits).
A lock dies with its process, so a killed command or worker never leaves a stale one behind.
"""
import fcntl
import os

LOCK_DIR = "locks"


class LockBusy(Exception):
    """The lock is held by another process."""


def lock_path(state_dir, name):
    """<state_dir>/locks/<name>.lock"""
    return os.path.join(state_dir, LOCK_DIR, name + ".lock")


def take(path, exclusive=True, wait=False):
    """An open file descriptor holding the flock on `path` (created if needed); LockBusy when another
    process holds it and wait is False. Close the descriptor (release) when done."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, mode)
    except BlockingIOError:
        os.close(fd)
        raise LockBusy(path) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd):
    if fd is not None:
        os.close(fd)
