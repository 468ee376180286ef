"""Content fingerprints of a file's first bytes, so a reused inode is not mistaken for the old file.

Used by file_tail (identity = device + inode + fingerprint) and stored by checkpoints.CheckpointStore.
"""
import hashlib
import os
from typing import NamedTuple

DEFAULT_FINGERPRINT_BYTES = 1024


class Fingerprint(NamedTuple):
    """Hash of the first `length` bytes; `length` < the configured size only while the file is short."""

    length: int
    digest: str

    def to_json(self):
        return [self.length, self.digest]

    @classmethod
    def from_json(cls, value):
        length, digest = value
        return cls(int(length), str(digest))


def _digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_range(fd, start, end):
    """Bytes [start, end) of an open file (fewer if it is shorter), without moving its offset."""
    parts = []
    pos = start
    while pos < end:
        part = os.pread(fd, end - pos, pos)
        if not part:
            break
        parts.append(part)
        pos += len(part)
    return b"".join(parts)


def read_prefix(fd, length):
    """The first `length` bytes of an open file (fewer if it is shorter)."""
    return read_range(fd, 0, length)


def fingerprint_fd(fd, max_bytes=DEFAULT_FINGERPRINT_BYTES):
    """Fingerprint of an open file's first min(size, max_bytes) bytes."""
    prefix = read_prefix(fd, max_bytes)
    return Fingerprint(len(prefix), _digest(prefix))


def fingerprint_matches(fd, fingerprint):
    """True when the file still starts with the bytes `fingerprint` was taken from.

    A file shorter than the recorded length cannot be the same file grown further: it was
    truncated or replaced, so it does not match.
    """
    prefix = read_prefix(fd, fingerprint.length)
    return len(prefix) == fingerprint.length and _digest(prefix) == fingerprint.digest


def tail_digest(fd, end, max_bytes=DEFAULT_FINGERPRINT_BYTES):
    """Hash of the up to max_bytes bytes that end at offset `end`: evidence that a copy holds the same lines."""
    start = max(0, end - max_bytes)
    data = os.pread(fd, end - start, start)
    return _digest(data) if len(data) == end - start else None
