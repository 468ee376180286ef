"""Named shared-memory segments that the supervisor allocates before it forks and alone unlinks.

Used by ring.py and control.py (which lay their structures out inside a Segment); the supervisor
calls sweep_stale() at start-up to remove what a supervisor killed with SIGKILL left in /dev/shm.

Intended use (supervisor, before the first fork):

    sweep_stale(instance_prefix(instance))          # leftovers of a dead predecessor
    arena = SharedArena(instance)
    seg = arena.allocate("ring0", ring_bytes(...))  # children inherit the mapping through fork
    ...
    arena.close()                                   # supervisor only; a no-op in a forked child

Why mmap of files we create in /dev/shm rather than multiprocessing.shared_memory.SharedMemory:
on Linux both are the same object (shm_open is an open() under /dev/shm), but SharedMemory on
Python 3.11 registers every segment with resource_tracker, which (a) unlinks a segment when any
process that touched it exits (cpython#82300; track=False only arrives in 3.13), (b) starts a
tracker helper process as a child of the supervisor, which our os.waitpid(-1) reaper would reap
behind its back, and (c) can only be undone through the private resource_tracker.unregister.
Creating the file ourselves gives the same segment with none of that machinery. Children never
open segments by name: they use the mapping inherited through fork, so nothing can re-register.

Segment names are ad-<instance>-<pid>-<start ticks>-<name>: the owner's pid plus its start time
(field 22 of /proc/<pid>/stat), so a recycled pid (a container restarting the supervisor as the
same pid) is not mistaken for the live owner.
"""
import logging
import mmap
import os
import re

import numpy as np

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
NAME_PREFIX = "ad"
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")


def instance_prefix(instance):
    """The name prefix shared by every segment of one daemon instance: 'ad-<instance>-'."""
    _check_instance(instance)
    return f"{NAME_PREFIX}-{instance}-"


def process_start_ticks(pid):
    """Start time of pid in clock ticks since boot, or None when no such (live) process exists.

    A zombie counts as dead: it holds no mappings any more and will never unlink anything.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None
    return int(fields[19])


def segment_names(prefix, directory=SHM_DIR):
    """Names of the segments in directory that start with prefix (sorted)."""
    try:
        return sorted(n for n in os.listdir(directory) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def parse_owner(name):
    """(pid, start_ticks) from a segment name made by SharedArena, or None for a foreign name."""
    parts = name.split("-", 4)
    if len(parts) != 5 or parts[0] != NAME_PREFIX or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return int(parts[2]), int(parts[3])


def sweep_stale(prefix, directory=SHM_DIR):
    """Unlink the segments under prefix whose owner process is gone; return the names removed.

    Segments of a live owner (same pid and same start time) are left alone, so two instances, or a
    second supervisor started by mistake, never lose each other's memory.
    """
    removed = []
    for name in segment_names(prefix, directory):
        owner = parse_owner(name)
        if owner is None:
            continue
        pid, ticks = owner
        if process_start_ticks(pid) == ticks:
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except FileNotFoundError:
            pass  # another sweeper got there first
        except PermissionError:
            # another user's instance with the same name (/dev/shm is sticky): not ours to remove
            log.warning("cannot remove stale shared-memory segment %s: permission denied", name)
    return removed


class Segment:
    """One shared mapping: a name in /dev/shm, a size and an mmap; hand out numpy views of it."""

    def __init__(self, name, path, size, buf):
        self.name = name
        self.path = path
        self.size = size
        self.buf = buf

    def array(self, dtype, count=-1, offset=0):
        """A numpy view of the mapping (no copy); writes are visible to every process that shares it."""
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)

    def __repr__(self):
        return f"Segment({self.name!r}, {self.size} bytes)"


class SharedArena:
    """The set of segments one owner (the supervisor) created; only that owner unlinks them."""

    def __init__(self, instance, directory=SHM_DIR):
        _check_instance(instance)
        self.instance = instance
        self.directory = directory
        self.owner_pid = os.getpid()
        ticks = process_start_ticks(self.owner_pid)
        self.prefix = f"{NAME_PREFIX}-{instance}-{self.owner_pid}-{ticks}-"
        self.segments = {}

    def allocate(self, name, size):
        """Create, size and map a new segment; fails if called in a child or if /dev/shm is full."""
        if os.getpid() != self.owner_pid:
            raise RuntimeError("shared memory is allocated by the supervisor before it forks, not in a child")
        if not _SEGMENT_RE.match(name) or name in self.segments:
            raise ValueError(f"segment name {name!r} is invalid or already used")
        if size < 1:
            raise ValueError("a segment needs at least one byte")
        full_name = self.prefix + name
        path = os.path.join(self.directory, full_name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            # Reserve the tmpfs pages now: a full /dev/shm (64 MiB in a default container) then fails
            # here with ENOSPC instead of killing a worker with SIGBUS on its first write.
            os.posix_fallocate(fd, 0, size)
            buf = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        segment = Segment(full_name, path, size, buf)
        self.segments[name] = segment
        return segment

    def release(self, name):
        """Unlink one segment (owner only), e.g. a ring replaced on reload; its pages go with the last mapping."""
        if os.getpid() != self.owner_pid:
            return
        _unlink(self.segments.pop(name))

    def close(self):
        """Unlink every segment (owner only; a forked child calling this changes nothing)."""
        if os.getpid() != self.owner_pid:
            return
        for segment in self.segments.values():
            _unlink(segment)
        self.segments.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_instance(instance):
    if not _INSTANCE_RE.match(instance):
        raise ValueError(f"instance name {instance!r} must be 1-32 characters of A-Z a-z 0-9 _")


def _unlink(segment):
    try:
        os.unlink(segment.path)
    except FileNotFoundError:
        pass
    try:
        segment.buf.close()
    except BufferError:
        pass  # numpy views still exist; the pages go when the last mapping does
