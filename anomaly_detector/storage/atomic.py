"""Atomic, checksummed snapshot files with one previous generation kept.

Used by every stage that persists state (templates, baselines, statistics, checkpoints).
A snapshot is a small text header line followed by the payload:

    ADSNAP1 <kind> <schema_version> <payload_len> <sha256-hex>\n<payload>

The payload is JSON or raw numpy bytes, never pickle: a state file must not be able to run code.
Writing goes to a temporary file in the same directory, is fsynced, then renamed over the target,
and the directory is fsynced; older generations are kept as `<name>.prev`, `<name>.prev2`, ... (the
file and its older generations: [retention] snapshot_generations files in all, set once per process
by set_generations, 2 until then), so a corrupt newest file falls back a generation at a time.

On load, a file that cannot be trusted is set aside as `<name>.bad-<UTC time>` (kept for a look, never
read again), logged at ERROR with why, counted by reason in storage.health.STATE_HEALTH (the metric
state_load_failures_total{reason}: truncated, zero_filled, checksum, foreign, version, shape,
unreadable), and the previous generation is tried, else the owner starts cold. A file with a valid
checksum can still hold the wrong shape (an array of another length, a missing key, a hand-edited
file): `restore_json_snapshot` hands the payload to the owner's restore function and treats any
error it raises like a checksum mismatch, so a bad state file never crash-loops a worker. A write
that fails (a full disk) leaves the target and its previous generation as they were, removes its
temporary file and is recorded in STATE_HEALTH until a write of that file succeeds again.
Temporary files left by a writer killed with -9 (`.<name>.<8 random chars>`) are swept when the
owner loads the file.
"""
import hashlib
import json
import logging
import os
import re
import tempfile
import time

from anomaly_detector.storage.health import STATE_HEALTH

MAGIC = b"ADSNAP1"
# A temporary file this old cannot belong to a live writer (a snapshot is written and renamed in well
# under a second; `replay --from-state` may read a running daemon's state while it writes).
ORPHAN_TEMP_MIN_AGE_SECONDS = 30.0
# What a restore function raises on a payload of the wrong shape: all mean "set it aside".
SHAPE_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, UnicodeError)
log = logging.getLogger(__name__)
_generations = 2   # files kept of each state file: itself and the previous ones ([retention] snapshot_generations)


def set_generations(count):
    """How many generations of each state file are kept (the file itself included, at least 2)."""
    global _generations
    _generations = max(2, int(count))


def generation_paths(path):
    """`path` and its older generations, newest first: path, path.prev, path.prev2, ..."""
    return [path, path + ".prev"] + ["%s.prev%d" % (path, k) for k in range(2, _generations)]


class SnapshotError(Exception):
    """A snapshot file exists but cannot be trusted; `reason` is one of health.LOAD_FAILURE_REASONS
    (or "too_large" from peek_json_snapshot)."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


class StateShapeError(ValueError):
    """A checksummed snapshot whose content does not have the shape its reader needs."""


def require(condition, what):
    """Raise StateShapeError(what) unless condition: for restore functions checking a payload."""
    if not condition:
        raise StateShapeError(what)


def _header(kind, version, payload):
    digest = hashlib.sha256(payload).hexdigest()
    return b"%s %s %d %d %s\n" % (MAGIC, kind.encode(), version, len(payload), digest.encode())


def write_snapshot(path, kind, version, payload):
    """Atomically replace `path` with `payload`, keeping the older generations (`<path>.prev`, ...)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        _write(path, directory, kind, version, payload)
    except OSError:
        STATE_HEALTH.write_failed(path)
        raise
    STATE_HEALTH.write_ok(path)


def _write(path, directory, kind, version, payload):
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(kind, version, payload))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        _rotate(generation_paths(path))
        os.replace(tmp, path)
        fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rotate(generations):
    """Shift path -> .prev -> .prev2 ..., oldest first, each older name taking its newer one's file by a
    hard link renamed over it: every generation is in place at every moment (a backup or a cleanup
    looking mid-rotation finds them all), where renaming the newer name over the older left it missing
    until the next step. A crash half-way leaves two names of one whole file, never a torn one."""
    for older, newer in reversed(list(zip(generations[1:], generations))):
        if os.path.exists(newer):
            _link_over(newer, older)


def _link_over(src, dst):
    """Make dst a name of src's file in one rename (src moved there where hard links are not supported).
    The link's name is fixed per dst: only the owner of a state file writes it, and a link left by a
    writer killed before its rename is replaced by the next write."""
    link = os.path.join(os.path.dirname(dst), ".%s.link" % os.path.basename(dst))
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.link(src, link)
    except OSError:
        os.replace(src, dst)
        return
    try:
        os.replace(link, dst)
    except BaseException:
        os.unlink(link)       # the write fails as a whole, leaving nothing of its own behind
        raise


def replace_file(path, data, durable=True):
    """Replace `path` with the bytes `data` in one rename (no header, no generations): a reader sees the
    old content or the new. durable: the file and its directory are fsynced, so a crash keeps one of them
    (a view rewritten every second need not be)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(directory)


def fsync_dir(directory):
    # The rename is only durable once the directory entry is on disk.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _decode(path, kind, max_version):
    with open(path, "rb") as f:
        data = f.read()
    head, sep, payload = data.partition(b"\n")
    parts = head.split(b" ")
    if not data:
        raise SnapshotError("%s: empty file (its data never reached the disk)" % path, "truncated")
    if data.count(0) == len(data):
        raise SnapshotError("%s: zero-filled (%d NUL bytes: its data never reached the disk)" % (path, len(data)),
                            "zero_filled")
    if parts[0] != MAGIC:
        raise SnapshotError("%s: not a state file of this program (no %s header)" % (path, MAGIC.decode()),
                            "foreign")
    if not sep or len(parts) != 5:
        raise SnapshotError("%s: header cut short" % path, "truncated")
    if parts[1].decode("ascii", "replace") != kind:
        raise SnapshotError("%s: holds %r, expected %r" % (path, parts[1].decode("ascii", "replace"), kind), "foreign")
    try:
        version, length = int(parts[2]), int(parts[3])
    except ValueError:
        raise SnapshotError("%s: bad header numbers" % path, "checksum") from None
    if version > max_version:
        raise SnapshotError("%s: schema version %d is newer than this release reads (%d)" % (path, version, max_version),
                            "version")
    if len(payload) < length:
        raise SnapshotError("%s: truncated (%d of %d payload bytes)" % (path, len(payload), length), "truncated")
    if len(payload) != length or hashlib.sha256(payload).hexdigest().encode() != parts[4]:
        raise SnapshotError("%s: checksum mismatch (corrupted)" % path, "checksum")
    return version, payload


def _quarantine(path):
    """Rename `path` to `<path>.bad-<UTC time>` (a suffix added if taken); None when it cannot be moved."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = "%s.bad-%s" % (path, stamp), 1
    while os.path.exists(target):
        n += 1
        target = "%s.bad-%s-%d" % (path, stamp, n)
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


def _set_aside(candidate, path, reason, why):
    """Count, move aside and log one unusable generation of `path`."""
    STATE_HEALTH.load_failed(reason)
    moved = _quarantine(candidate)
    generations = generation_paths(path)
    fallback = any(os.path.exists(g) for g in generations[generations.index(candidate) + 1:])
    log.error("state file unusable (%s): %s; set aside as %s; %s", reason, why, moved or "(cannot be moved)",
              "trying the previous generation" if fallback else "starting fresh")


def read_snapshot(path, kind, max_version):
    """Return (version, payload) from `path` or its newest usable older generation; None when none is.

    A corrupt file is set aside (`<path>.bad-<time>`), logged and counted, then the previous
    generation is tried, so a crash mid-write or a damaged disk never stops a start.
    """
    for candidate in generation_paths(path):
        if not os.path.exists(candidate):
            continue
        try:
            return _decode(candidate, kind, max_version)
        except SnapshotError as exc:
            _set_aside(candidate, path, exc.reason, exc)
        except OSError as exc:
            _set_aside(candidate, path, "unreadable", "%s: %s" % (candidate, exc))
    return None


_HEADER_MAX = 256   # a header line is about 100 bytes


def peek_json_snapshot(path, kind, max_bytes=None, max_version=None):
    """The JSON payload of the file at `path` for an observer (the sidecar, the page): nothing is moved,
    counted or logged, no older generation tried. The header is read first, so a payload over max_bytes
    (when given) is never read. Raises FileNotFoundError, or SnapshotError with reason "too_large",
    "version" (newer than max_version, when given) or "unreadable" (a bad header, kind, checksum or JSON;
    also a file replaced while read)."""
    try:
        with open(path, "rb") as f:
            parts = f.readline(_HEADER_MAX).split()
            if len(parts) != 5 or parts[0] != MAGIC or parts[1] != kind.encode():
                raise SnapshotError("%s: not a %s snapshot" % (path, kind), "unreadable")
            version, length = int(parts[2]), int(parts[3])
            if max_version is not None and version > max_version:
                raise SnapshotError("%s: schema version %d is newer than %d" % (path, version, max_version), "version")
            if max_bytes is not None and length > max_bytes:
                raise SnapshotError("%s: %d bytes, over the limit of %d" % (path, length, max_bytes),
                                    "too_large")
            payload = f.read(length + 1)
        if len(payload) != length or hashlib.sha256(payload).hexdigest().encode() != parts[4]:
            raise SnapshotError("%s: changed while read or damaged" % path, "unreadable")
        return json.loads(payload)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise SnapshotError("%s: %s" % (path, exc), "unreadable") from None


def write_json_snapshot(path, kind, version, obj):
    """write_snapshot for a JSON-serialisable object."""
    payload = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    write_snapshot(path, kind, version, payload)


def read_json_snapshot(path, kind, max_version):
    """Return (version, obj) or None; a payload that is not valid JSON counts as corrupt."""
    return restore_json_snapshot(path, kind, max_version, lambda version, obj: (version, obj))


def restore_json_snapshot(path, kind, max_version, restore):
    """restore(version, obj) on `path`, else on its older generations in turn; None when none is usable.

    A file that is corrupt, not JSON, or whose content makes `restore` raise one of SHAPE_ERRORS is
    set aside as `<file>.bad-<time>` with one ERROR line naming it and what was wrong, and counted.
    `restore` must leave its owner usable when it raises: it is called again for the previous
    generation, and the caller starts fresh when this returns None.
    """
    sweep_orphan_temps(path)
    for candidate in generation_paths(path):
        if not os.path.exists(candidate):
            continue
        try:
            version, payload = _decode(candidate, kind, max_version)
            obj = json.loads(payload)
        except SnapshotError as exc:
            _set_aside(candidate, path, exc.reason, exc)
            continue
        except OSError as exc:
            _set_aside(candidate, path, "unreadable", "%s: %s" % (candidate, exc))
            continue
        except ValueError as exc:
            _set_aside(candidate, path, "shape", "%s: not JSON (%s)" % (candidate, exc))
            continue
        try:
            return restore(version, obj)
        except SHAPE_ERRORS as exc:
            _set_aside(candidate, path, "shape", "%s has the wrong shape (%s: %s)" % (candidate, type(exc).__name__, exc))
    return None


_TEMP_SUFFIX = re.compile(r"^[a-z0-9_]{8}$")


def sweep_orphan_temps(path, min_age_seconds=ORPHAN_TEMP_MIN_AGE_SECONDS, now=None):
    """Remove `.<name>.<8 chars>` temporaries of `path` older than min_age_seconds; returns how many.

    Only write_snapshot makes such names (mkstemp), and only the owner of `path` writes it, so one
    left behind is from a write killed before its rename: it holds nothing the target does not.
    """
    directory = os.path.dirname(os.path.abspath(path))
    prefix = ".%s." % os.path.basename(path)
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(prefix) or not _TEMP_SUFFIX.match(entry.name[len(prefix):]):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat().st_mtime < min_age_seconds:
                continue
            os.unlink(entry.path)
            removed += 1
        except OSError:
            continue
    if removed:
        log.warning("removed %d temporary file(s) of %s left by an interrupted write", removed, path)
    return removed
