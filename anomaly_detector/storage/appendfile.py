"""A file appended to by several processes, reopened when logrotate renames or deletes it.

Used for the workers' scored-lines and incidents files and the sidecar's access log. Each write()
goes to an O_APPEND descriptor, so concurrent writers never overwrite or tear each other's records.
"""
import os


class AppendFile:
    """A file appended to by several processes; reopened after rename or deletion."""

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
                fd, self._fd = self._fd, None   # closed even if the open below fails (EISDIR, ENOSPC)
                os.close(fd)
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

    def sync(self):
        """fsync what was written (alert sinks: a delivered alert must survive a power cut)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
