"""The input interface every input implements, and the registry runner.py builds inputs from.

Neighbours: inputs/runner.py (the input process) builds one reader per [inputs] subsection with
`build_input()`, polls it for Chunks, pushes their lines to the rings and calls `commit()` with a
chunk's `end_offset` once the workers acknowledged every line up to it (in push order per input).
What an offset is belongs to the input: a file offset (file_tail), a spool offset (spool), a tuple
of Redis Stream entry ids to XACK (redis_stream). Each input module declares its class with
`build(name, section, cfg)`, which reads its own keys of the subsection.
"""
from abc import ABC, abstractmethod
from typing import NamedTuple


class Chunk(NamedTuple):
    """Lines read from one input in one poll; commit `end_offset` once they are scored.

    `lines` may be empty when only a skipped too-long line was consumed: commit it all the same.
    `end_offset` None means "nothing to commit" (a part of a chunk split over rings: only the last
    part carries it).
    """

    key: object
    path: str
    lines: list
    start_offset: object
    end_offset: object

    @property
    def stream_id(self):
        """Stable for one file's whole life, whatever its path (rotation) or generation (truncation).

        Route by this, not by path: commits of one file must come back in order, and a rotated
        file changes path while its lines may still be in flight. Keys without an inode (stdin,
        spools, streams) are their own id.
        """
        key = self.key
        return (key.device, key.inode) if hasattr(key, "inode") and hasattr(key, "device") else key


class Input(ABC):
    """What runner.InputRunner needs of a reader.

    Each reader is made by a builder of the input's type (runner.BUILDERS: a class's `build(name,
    section, cfg)`, or listener.build_spool_input for the network types, whose reader is the spool's).
    poll(): the chunks read now (never blocks longer than the input's own bound); commit(key, offset):
    the lines up to offset are scored; close(): save and release. `stats`: plain counters the runner
    and stats.InputStatsPublisher ship as metrics. `spread`: chunks may go to any ring (by
    `origin(line)`), else all lines of one chunk stream go to one ring.
    """

    type_name = ""
    spread = False
    stats = {}

    @abstractmethod
    def poll(self):
        """The chunks read now."""

    @abstractmethod
    def commit(self, key, offset):
        """The lines of `key` up to `offset` are scored: make that durable (a checkpoint, an XACK)."""

    def close(self):  # noqa: B027 - a hook: a reader with nothing open keeps it
        """Nothing to release by default."""
