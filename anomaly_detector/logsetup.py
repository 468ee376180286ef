"""Logging for every process: stderr (journald under systemd) and <log_dir>/anomaly-detector.log.

Why not multiprocessing-logging or a QueueHandler: both route child records through a thread in
the supervisor, and the supervisor forks at any time (crash restarts, SIGHUP resizes); a thread
alive at fork can leave a lock held in the child (multiprocessing-logging #26, gunicorn #3198).
Instead each process writes its own records: the file is opened O_APPEND, so concurrent
writers never overwrite each other, one record is one write() (below the 8 KiB buffer), and
WatchedFileHandler reopens the file when logrotate renames it. journald adds _PID per line.
"""
import logging
import logging.handlers
import os
import sys
import traceback

LOG_FILE_NAME = "anomaly-detector.log"
FORMAT = "%(asctime)s %(levelname)s [%(process)d %(processName)s] %(name)s: %(message)s"
_OURS = "_anomaly_detector_handler"


class _OneWriteHandler(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler whose records are one write() each, so forked writers never interleave."""

    def emit(self, record):
        try:
            self.reopenIfNeeded()
            msg = (self.format(record) + "\n").encode("utf-8", "replace")
            if self.stream is None:
                self.stream = self._open()
            os.write(self.stream.fileno(), msg)
        except Exception:
            self.handleError(record)


def setup_logging(level="INFO", log_dir=None, to_file=True, process_name=None):
    """(Re)configure the root logger; safe to call again after fork or on reload.

    Returns the log file path, or None when logging to stderr only. A log_dir that cannot
    be created is reported on stderr and logging continues there: losing the file must not stop the daemon.
    """
    if process_name:
        import multiprocessing

        multiprocessing.current_process().name = process_name
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    handlers = [stderr]
    path = None
    if to_file and log_dir:
        path = os.path.join(log_dir, LOG_FILE_NAME)
        try:
            os.makedirs(log_dir, exist_ok=True)
            handlers.append(_OneWriteHandler(path, mode="a", encoding="utf-8"))
        except OSError as exc:
            print("anomaly_detector: warning: cannot write %s (%s); logging to stderr only" % (path, exc.strerror),
                  file=sys.stderr)
            path = None
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(level)
    return path


def log_crash(message):
    """Report the exception being handled as one ERROR record with its traceback, so it lands in the
    log file as well as on stderr (journald); printed to stderr directly when our handlers are not
    installed (the record would otherwise reach only whatever handlers the embedding program set)."""
    logging.getLogger("anomaly_detector.crash").error(message, exc_info=True)
    if not any(getattr(h, _OURS, False) for h in logging.getLogger().handlers):
        traceback.print_exc()
