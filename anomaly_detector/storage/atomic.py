"""Atomic, checksummed snapshot files with one previous generation kept.

Used by every stage that persists state (templates, baselines, statistics, checkpoints).
A snapshot is a small text header line followed by the payload:

    ADSNAP1 <kind> <schema_version> <payload_len> <sha256-hex>\n<payload>

The payload is JSON or raw numpy bytes, never pickle: a state file must not be able to run code.
Writing goes to a temporary file in the same directory, is fsynced, then renamed over the target;
the old target is kept as `<name>.prev` so a corrupt newest file falls back one generation.
"""
import hashlib
import json
import logging
import os
import tempfile
import time

MAGIC = b"ADSNAP1"
log = logging.getLogger(__name__)


class SnapshotError(Exception):
    """A snapshot file exists but cannot be trusted (truncated, flipped bytes, wrong kind)."""


def _header(kind, version, payload):
    digest = hashlib.sha256(payload).hexdigest()
    return b"%s %s %d %d %s\n" % (MAGIC, kind.encode(), version, len(payload), digest.encode())


def write_snapshot(path, kind, version, payload):
    """Atomically replace `path` with `payload`, keeping the old file as `<path>.prev`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_header(kind, version, payload))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.replace(path, path + ".prev")
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(directory):
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
    if not sep or len(parts) != 5 or parts[0] != MAGIC:
        raise SnapshotError("%s: not a snapshot file (bad header)" % path)
    if parts[1].decode("ascii", "replace") != kind:
        raise SnapshotError("%s: holds %r, expected %r" % (path, parts[1].decode("ascii", "replace"), kind))
    try:
        version, length = int(parts[2]), int(parts[3])
    except ValueError:
        raise SnapshotError("%s: bad header numbers" % path) from None
    if version > max_version:
        raise SnapshotError("%s: schema version %d is newer than this release reads (%d)" % (path, version, max_version))
    if len(payload) != length or hashlib.sha256(payload).hexdigest().encode() != parts[4]:
        raise SnapshotError("%s: checksum mismatch (truncated or corrupted)" % path)
    return version, payload


def _quarantine(path):
    target = "%s.corrupt-%d" % (path, int(time.time()))
    try:
        os.replace(path, target)
    except OSError:
        return None
    return target


def read_snapshot(path, kind, max_version):
    """Return (version, payload) from `path` or its previous generation; None when neither exists.

    A corrupt file is moved aside as `<path>.corrupt-<epoch>` and logged, then the previous
    generation is tried, so a crash mid-write or a damaged disk never stops a start.
    """
    for candidate in (path, path + ".prev"):
        if not os.path.exists(candidate):
            continue
        try:
            return _decode(candidate, kind, max_version)
        except (SnapshotError, OSError) as exc:
            moved = _quarantine(candidate)
            log.error("state file unusable, set aside as %s: %s", moved, exc)
    return None


def write_json_snapshot(path, kind, version, obj):
    """write_snapshot for a JSON-serialisable object."""
    payload = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    write_snapshot(path, kind, version, payload)


def read_json_snapshot(path, kind, max_version):
    """Return (version, obj) or None; a payload that is not valid JSON counts as corrupt."""
    for _ in range(2):
        got = read_snapshot(path, kind, max_version)
        if got is None:
            return None
        version, payload = got
        try:
            return version, json.loads(payload)
        except ValueError as exc:
            moved = _quarantine(path if os.path.exists(path) else path + ".prev")
            log.error("state file is not valid JSON, set aside as %s: %s", moved, exc)
    return None
