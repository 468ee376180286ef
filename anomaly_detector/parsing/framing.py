"""Cut byte streams into lines (LF or CRLF) with a hard bound on line length and memory.

Inputs (file tail, stdin, TCP) feed LineFramer chunk by chunk; records.parse_columns uses the
numba split_lines on whole buffers. Lines come out as bytes; sanitize.py turns them into text.
"""
import numpy as np

from anomaly_detector import kernel_types as kt

DEFAULT_MAX_LINE_BYTES = 102400


class LineFramer:
    """Incremental line splitter: `.feed(data)` returns complete lines, `.flush()` the last one.

    A line longer than max_line_bytes is either truncated (its first max_line_bytes are returned
    once, the rest up to the next newline is dropped) or skipped; the held partial line never
    exceeds max_line_bytes + 2 bytes whatever the input.
    """

    def __init__(self, max_line_bytes=DEFAULT_MAX_LINE_BYTES, on_long_line="truncate"):
        if on_long_line not in ("truncate", "skip"):
            raise ValueError(f"on_long_line must be 'truncate' or 'skip', not {on_long_line!r}")
        if int(max_line_bytes) < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = int(max_line_bytes)
        self.on_long_line = on_long_line
        self.lines = 0
        self.truncated = 0
        self.skipped = 0
        self._held = bytearray()
        self._discarding = False  # inside the tail of a too-long line, until the next newline

    def feed(self, data: bytes) -> list:
        if not isinstance(data, (bytes, bytearray)):
            data = bytes(data)
        out, pos = [], 0
        if self._held or self._discarding:  # finish the pending line first, carefully
            nl = data.find(b"\n")
            if nl < 0:
                return self._feed_slow(data, 0, len(data))
            out = self._feed_slow(data, 0, nl + 1)
            pos = nl + 1
        fast = self._feed_whole_lines(data, pos)
        return out + (fast if fast is not None else self._feed_slow(data, pos, len(data)))

    def _feed_whole_lines(self, data, pos):
        """Common case in one bytes.split: no line over the limit (else None: the careful path)."""
        last = data.rfind(b"\n", pos)
        if last < 0:
            return None
        lines = data[pos:last].split(b"\n")
        limit = self.max_line_bytes
        if max(map(len, lines)) > limit:
            lines = [x[:-1] if x.endswith(b"\r") else x for x in lines]
            if max(map(len, lines)) > limit:
                return None  # a line to truncate or skip: the careful path counts it
        elif data.find(b"\r", pos, last) >= 0:
            lines = [x[:-1] if x.endswith(b"\r") else x for x in lines]
        self.lines += len(lines)
        if last + 1 < len(data):
            self._hold(data, last + 1, lines)
        return lines

    def _feed_slow(self, data, pos, n):
        out = []
        while pos < n:
            nl = data.find(b"\n", pos, n)
            if self._discarding:
                if nl < 0:
                    return out
                self._discarding = False
                pos = nl + 1
                continue
            if nl < 0:
                self._hold(data[:n] if n < len(data) else data, pos, out)
                return out
            self._complete(data, pos, nl, out)
            pos = nl + 1
        return out

    def flush(self) -> list:
        """Return the held last line (input ended without a newline) and reset."""
        out = []
        if self._held and not self._discarding:
            line = bytes(self._held)
            if len(line) > self.max_line_bytes:  # held one byte over, hoping for a CRLF
                self._too_long(line[:self.max_line_bytes], out)
            else:
                self._emit(line, out)
        self._held = bytearray()
        self._discarding = False
        return out

    def _hold(self, view, pos, out):
        # Copy at most what can still belong to an acceptable line (+2 for a CR before the LF).
        room = self.max_line_bytes + 2 - len(self._held)
        self._held += view[pos:pos + room]
        held = len(self._held)
        limit = self.max_line_bytes
        if held > limit + 1 or (held == limit + 1 and self._held[-1] != 13):
            self._too_long(bytes(self._held[:limit]), out)
            self._held = bytearray()
            self._discarding = True

    def _complete(self, data, pos, nl, out):
        held = self._held
        self._held = bytearray()
        if nl > pos:
            has_cr = data[nl - 1] == 13
        else:
            has_cr = bool(held) and held[-1] == 13
        length = len(held) + (nl - pos) - has_cr
        limit = self.max_line_bytes
        if length > limit:
            # slice before joining so a huge line is never copied whole
            self._too_long((bytes(held) + data[pos:pos + limit])[:limit], out)
            return
        line = bytes(held) + data[pos:nl]
        self._emit(line[:-1] if has_cr else line, out)

    def _emit(self, line, out):
        self.lines += 1
        out.append(line)

    def _too_long(self, head, out):
        if self.on_long_line == "truncate":
            self.truncated += 1
            self._emit(head, out)
        else:
            self.skipped += 1


@kt.entry((kt.BYTES,), cache=True)
def split_lines(buf):
    """Line spans of a whole buffer: (starts, ends) int64, CR of CRLF excluded, last line kept."""
    n = buf.shape[0]
    count = 0
    for i in range(n):
        if buf[i] == 10:
            count += 1
    if n > 0 and buf[n - 1] != 10:
        count += 1
    starts = np.empty(count, dtype=np.int64)
    ends = np.empty(count, dtype=np.int64)
    k = 0
    s = 0
    for i in range(n):
        if buf[i] == 10:
            e = i - 1 if i > s and buf[i - 1] == 13 else i
            starts[k] = s
            ends[k] = e
            k += 1
            s = i + 1
    if s < n:
        starts[k] = s
        ends[k] = n
    return starts, ends
