"""Read lines from standard input (or any pipe) without blocking, in the same chunk shape as file_tail.

Neighbours: parsing.framing.LineFramer cuts bounded lines; file_tail.Chunk is the shape the input
process hands on. A pipe cannot be re-read, so `commit()` only records progress.
"""
import os
import select
import sys

from anomaly_detector.inputs.base import Chunk, Input
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES, LineFramer

STDIN_KEY = "stdin"


class StdinInput(Input):
    """`poll()` returns at most one Chunk of complete lines; `.eof` turns True once the writer closed.

    The input owns the stream's file descriptor and reads it with os.read, so nothing may read the
    stream's Python-level buffer beside it. At EOF a last line without newline is delivered.
    """

    def __init__(self, stream=None, max_line_bytes=DEFAULT_MAX_LINE_BYTES, on_long_line="truncate",
                 max_bytes_per_poll=1 << 20, read_block_bytes=64 << 10, path="-"):
        self.stream = sys.stdin.buffer if stream is None else stream
        self.fd = self.stream.fileno()
        self.path = path
        self.framer = LineFramer(max_line_bytes, on_long_line)
        self.max_bytes_per_poll = int(max_bytes_per_poll)
        self.read_block_bytes = int(read_block_bytes)
        self.eof = False
        self.offset = 0        # bytes read so far
        self.line_end = 0      # just after the last newline read
        self.committed = 0
        self.stats = {"lines": 0, "bytes": 0, "long_lines": 0, "read_errors": 0}

    @classmethod
    def build(cls, name, section, cfg):
        processing = cfg["processing"]
        return cls(max_line_bytes=processing["max_line_bytes"], on_long_line=processing["on_long_line"])

    def _readable(self):
        try:
            ready, _, _ = select.select([self.fd], [], [], 0)
        except (OSError, ValueError):
            # stdin closed under us (a service started with it closed): nothing will ever come
            self.stats["read_errors"] += 1
            self.eof = True
            return False
        return bool(ready)

    def poll(self):
        """Read what is available now (up to max_bytes_per_poll) and return [Chunk] or []."""
        if self.eof:
            return []
        start = self.line_end
        lines = []
        used = 0
        long_before = self.framer.truncated + self.framer.skipped
        while used < self.max_bytes_per_poll and self._readable():
            try:
                block = os.read(self.fd, min(self.read_block_bytes, self.max_bytes_per_poll - used))
            except BlockingIOError:
                break
            except OSError:
                self.stats["read_errors"] += 1
                break
            if not block:
                self.eof = True
                lines.extend(self.framer.flush())
                self.line_end = self.offset
                break
            used += len(block)
            lines.extend(self.framer.feed(block))
            last_nl = block.rfind(b"\n")
            if last_nl >= 0:
                self.line_end = self.offset + last_nl + 1
            self.offset += len(block)
        self.stats["bytes"] += used
        self.stats["lines"] += len(lines)
        self.stats["long_lines"] += self.framer.truncated + self.framer.skipped - long_before
        if not lines and self.line_end == start:
            return []
        return [Chunk(STDIN_KEY, self.path, lines, start, self.line_end)]

    def commit(self, key, offset):
        """Record scored progress; a pipe cannot be rewound, so this is bookkeeping only."""
        if key != STDIN_KEY or offset <= self.committed:
            return False
        self.committed = min(int(offset), self.line_end)
        return True
