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
        """Append all of data. An OSError (a full disk) may come after part of it was written: the
        exception's `written` attribute says how much, so a retry appends only the rest (no torn or
        doubled record)."""
        if not data:
            return
        view = memoryview(data)
        done = 0
        try:
            self._ensure_open()
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as exc:
            exc.written = done
            raise

    def sync(self):
        """fsync what was written (alert sinks: a delivered alert must survive a power cut)."""
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
