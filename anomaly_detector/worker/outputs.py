"""Where a worker's verdicts go: the scored-lines audit file and the incidents file (JSON lines).

Both are appended with one write() per batch on an O_APPEND descriptor, so several workers can
share a file without interleaving inside a record; each reopens the file when logrotate renames it.
"""
import json
import os


class AppendFile:
    """A JSON-lines file appended to by several processes; reopened after rename or deletion."""

    def __init__(self, path):
        self.path = path
        self._fd = None
        self._ident = None

    def _ensure_open(self):
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            current = None
        if self._fd is None or current != self._ident:
            if self._fd is not None:
                os.close(self._fd)
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            st = os.fstat(self._fd)
            self._ident = (st.st_dev, st.st_ino)

    def write(self, data):
        if not data:
            return
        self._ensure_open()
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def with_message_and_source(records, messages, source):
    """Add "message" and "source" to each JSON record line (the scored_lines layout, SPEC §4).

    records: bytes of n JSON lines ending in "}\\n"; messages: n str. Per-line Python, so only
    used when [outputs] scored_lines is set.
    """
    tail = ',"source":%s}\n' % json.dumps(source, ensure_ascii=False)
    lines = records.split(b"\n")
    out = []
    for line, message in zip(lines, messages):
        out.append(line[:-1].decode("utf-8"))
        out.append(',"message":')
        out.append(json.dumps(message, ensure_ascii=False))
        out.append(tail)
    return "".join(out).encode("utf-8")


def incident_lines(incidents):
    """JSON lines of incident records (dicts from the detection engine)."""
    return "".join(json.dumps(i, ensure_ascii=False, sort_keys=True) + "\n" for i in incidents).encode("utf-8")
