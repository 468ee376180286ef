"""Process names the operator's tools see: the kernel's comm (ps -o comm, top, pgrep) and the command line.

Called by the arbiter for the supervisor, by supervisor.children for each forked child and by
kernel_cache for its compiler processes. Linux only, standard library only; every function is a
best-effort no-op elsewhere (a missing name must never stop the daemon).

Why these names: comm holds 15 bytes, so `pgrep anomaly_detector` (16) can never match a comm, and
procps warns so. The supervisor's comm is SUPERVISOR_COMM, `anomaly_detect` (`pgrep -x
anomaly_detect`), and its command line stays what it was started with (`anomaly_detector --config
...`). The children are `ad-<name>` (ad-worker-0, ad-input, ...) and their command lines are
rewritten to `anomaly-detector: <name>`, without the underscore: `pgrep -f anomaly_detector` (the
runbook's pattern with -f) finds the supervisor only, the one that takes signals, while
`pgrep -f anomaly-detector:` lists the children.
"""
import ctypes

SUPERVISOR_COMM = "anomaly_detect"
CHILD_COMM_PREFIX = "ad-"
CHILD_TITLE_PREFIX = "anomaly-detector: "
COMM_BYTES = 15
_PR_SET_NAME = 15
# Fields of /proc/self/stat after the ")" closing comm: field 3 (state) is index 0, so field N is N - 3.
_ARG_START, _ARG_END = 48 - 3, 49 - 3   # the argv strings' address range (Linux >= 3.5)


def set_comm(name):
    """PR_SET_NAME: what /proc/PID/comm, `ps -o comm`, top and pgrep without -f show (15 bytes kept)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:COMM_BYTES]), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_cmdline(title):
    """Overwrite this process's argv strings in place, so /proc/PID/cmdline (ps -o args, pgrep -f) reads
    `title`; True when done. The kernel reads the command line from the argv area of the stack, whose
    bounds /proc/self/stat gives; the title is cut to that size and the rest zeroed, keeping the final
    NUL (the kernel then shows the area as it is). CPython keeps its own copy of argv (sys.argv), so
    nothing in the interpreter reads these bytes again."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[_ARG_START]), int(fields[_ARG_END])
    except (OSError, IndexError, ValueError):
        return False
    size = end - start
    if start <= 0 or size <= 1:
        return False
    data = title.encode("utf-8", "replace")[:size - 1]
    ctypes.memmove(start, data + b"\0" * (size - len(data)), size)
    return True


def name_child(name):
    """A forked child: comm `ad-<name>`, command line `anomaly-detector: <name>`."""
    set_comm(CHILD_COMM_PREFIX + name)
    set_cmdline(CHILD_TITLE_PREFIX + name)


def name_supervisor():
    """The supervisor: comm SUPERVISOR_COMM; its command line stays as started."""
    set_comm(SUPERVISOR_COMM)
