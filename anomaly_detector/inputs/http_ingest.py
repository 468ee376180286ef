"""Accept JSON lines over HTTP (`POST /ingest`) into the input's on-disk spool; 202 only once they are on disk.

Neighbours: inputs/spool.py SpoolWriter holds the lines (group commit); inputs/listener.py runs this server
in the listener process; parsing.framing.LineFramer splits bodies into bounded lines; the workers' JSON
lines parser decodes (and counts malformed) lines later; httpcommon holds the request hygiene shared with
the sidecar (body framing, header deadline, connection cap). Refusals are counted in `stats` as
rejected_<status>, refused, header_timeouts and incomplete; inputs/stats.py ships them to /metrics
(input_rejected_total).

The server runs in threads of the listener process: that process forks nothing, so threads are safe there.
Delivery: a 202 means the lines are synced to the spool; the input process reads them back and commits
only what the workers acknowledged, so a crash, a reload or a stop never loses an answered line (a
crash may score some twice: at-least-once). A request cut by a stop before its answer got no 202 and
may be sent again. A full spool answers 503 with Retry-After and spools nothing of the request, never
drops silently. Lines are bytes as received: no JSON or UTF-8 check here.
"""
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from anomaly_detector.httpcommon import (
    STATUS_REASONS,
    BodyHygieneMixin,
    FramingError,
    GuardedHTTPServer,
    body_length,
    status_reason,
)
from anomaly_detector.inputs.spool import SpoolError, SpoolFull, record_bytes
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES, LineFramer

log = logging.getLogger(__name__)

INGEST_PATHS = ("/ingest", "/")
RETRY_AFTER_SECONDS = 1
_READ_BLOCK_BYTES = 64 << 10
# After a 413 the client may still be sending its body: read (and drop) a little of it so it sees the
# answer instead of a connection reset, but never more than this nor for longer.
_DRAIN_AFTER_REJECT_BYTES = 1 << 20
_DRAIN_AFTER_REJECT_SECONDS = 0.5
_JOIN_SECONDS = 5.0
# stats keys of connection-level refusals (request refusals are "rejected_<status>")
_STAT_OF_REASON = {"refused": "refused", "header_timeout": "header_timeouts", "incomplete": "incomplete"}
REJECTION_STATS = tuple("rejected_" + status for status in STATUS_REASONS) + tuple(_STAT_OF_REASON.values())


class _Reject(Exception):
    """A request refused with an HTTP status (and counted under a stats key)."""

    def __init__(self, status, stat, reason, headers=()):
        super().__init__(reason)
        self.status, self.stat, self.reason, self.headers = status, stat, reason, headers


class _IngestHandler(BodyHygieneMixin, BaseHTTPRequestHandler):
    """One connection. Headers must arrive within header_timeout_seconds; each body read within the same.
    Framing, deadlines and the connection cap are httpcommon's."""

    protocol_version = "HTTP/1.1"
    server_version = "anomaly-detector-ingest"
    sys_version = ""

    def log_message(self, format, *args):
        """No access log here: the sidecar keeps one; rejections are logged at debug where they happen."""

    def handle_expect_100(self):
        # Check the request before inviting the body: a 413 must not come after the client sent it.
        try:
            self._precheck()
        except _Reject as reject:
            self._refuse(reject)
            return False
        return super().handle_expect_100()

    def do_POST(self):
        try:
            body = self._read_body(self._precheck())
        except _Reject as reject:
            self._refuse(reject)
            return
        owner = self.server.owner
        owner.delivering(+1)  # from the spool append to the answer: close() waits for this span
        try:
            try:
                accepted = owner.enqueue(body)
            except _Reject as reject:
                self._refuse(reject, body_read=True)
                return
            self._reply(202, {"accepted": accepted})
        finally:
            owner.delivering(-1)

    def _reject_method(self):
        path_ok = urlsplit(self.path).path in INGEST_PATHS
        reject = _Reject(405, "rejected_405", "method not allowed", (("Allow", "POST"),)) if path_ok \
            else _Reject(404, "rejected_404", "not found")
        self._refuse(reject)

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _reject_method

    def refuse_request(self, status, message):
        self._refuse(_Reject(status, "rejected_%s" % status_reason(status), message))

    def _precheck(self):
        """Path, method, framing and size, from the headers alone; returns the body length."""
        if urlsplit(self.path).path not in INGEST_PATHS:
            raise _Reject(404, "rejected_404", "not found")
        if self.command != "POST":
            raise _Reject(405, "rejected_405", "method not allowed", (("Allow", "POST"),))
        try:
            length = body_length(self.headers)
        except FramingError as exc:
            raise _Reject(exc.status, "rejected_%d" % exc.status, exc.message) from None
        if self.headers.get("Content-Length") is None:
            raise _Reject(411, "rejected_411", "Content-Length required")
        if length > self.server.owner.max_body_bytes:
            raise _Reject(413, "rejected_413", "body over %d bytes" % self.server.owner.max_body_bytes)
        return length

    def _read_body(self, length):
        parts, left = [], length
        try:
            while left:
                part = self.rfile.read1(min(left, _READ_BLOCK_BYTES))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
        except OSError:  # socket timeout (a client stalling mid-body) or reset: `left` stays above 0
            pass
        self.body_bytes = left  # what is still unread: a short body leaves the connection out of step
        if left:
            raise _Reject(400, "rejected_400", "body shorter than Content-Length or too slow")
        return b"".join(parts)

    def _refuse(self, reject, body_read=False):
        log.debug("http ingest: %d %s %s from %s: %s", reject.status, self.command, self.path,
                  self.client_address[0], reject.reason)
        self.server.owner.count(reject.stat)
        close = not body_read and (self.body_unread() or reject.status in (400, 411))
        self._reply(reject.status, {"error": reject.reason}, reject.headers, close=close or self.close_connection)
        if reject.status == 413 and not body_read:
            self._drain_briefly()

    def _reply(self, status, payload, headers=(), close=False):
        body = json.dumps(payload).encode() + b"\n"
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if close:
            # The body (if any) was not read, so this connection cannot carry another request.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _drain_briefly(self):
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_DRAIN_AFTER_REJECT_SECONDS)
            deadline = time.monotonic() + _DRAIN_AFTER_REJECT_SECONDS
            drained = 0
            while drained < _DRAIN_AFTER_REJECT_BYTES and time.monotonic() < deadline:
                data = self.connection.recv(_READ_BLOCK_BYTES)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass  # the client went away first: nothing left to protect


def bind_ingest_socket(address, port):
    """A listening TCP socket for HTTP ingest (raises OSError, e.g. the port is busy)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return socket.create_server((address, port), family=family, backlog=_IngestServer.request_queue_size)


class _IngestServer(GuardedHTTPServer):
    """httpcommon.GuardedHTTPServer with the input's own bounds; rejections go to the input's stats."""

    allow_reuse_address = True

    def __init__(self, address, owner, sock=None):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.owner = owner
        self.max_connections = owner.max_connections
        self.header_timeout_seconds = owner.header_timeout_seconds
        super().__init__(address, _IngestHandler, bind_and_activate=sock is None)
        if sock is not None:
            # Bound and listening in the supervisor: the backlog outlives a restart of this process.
            self.socket.close()
            self.socket = sock
            self.socket.setblocking(True)
            self.server_address = sock.getsockname()

    def count_rejection(self, reason):
        self.owner.count(_STAT_OF_REASON.get(reason, "rejected_" + reason))


class HttpIngestInput:
    """HTTP ingest: a request's lines are appended to the spool, synced, and only then answered 202.

    Runs in the listener process (inputs/listener.py); the input process reads the spool back
    (inputs/spool.py SpoolReader). A request with more than max_queue_lines lines, or one larger than
    the whole spool, gets 413; one that does not fit in the spool now gets 503 with Retry-After; a spool
    write that fails gets 503 too. Nothing of a refused request is spooled, and refused lines are
    reported to on_refused(reason, lines) with reason "spool_full" or "spool_error".
    """

    def __init__(self, listen_address="127.0.0.1", listen_port=0, max_body_bytes=1048576,
                 max_line_bytes=DEFAULT_MAX_LINE_BYTES, max_queue_lines=100000, header_timeout_seconds=10,
                 on_long_line="truncate", max_connections=1024, spool=None, on_refused=None, sock=None):
        LineFramer(max_line_bytes, on_long_line)  # validates both settings before the port is bound
        if spool is None:
            raise ValueError("HttpIngestInput needs a spool: a 202 promises the lines are on disk")
        self.spool = spool
        self.on_refused = on_refused
        self.max_body_bytes = int(max_body_bytes)
        self.max_line_bytes = int(max_line_bytes)
        self.on_long_line = on_long_line
        self.max_queue_lines = int(max_queue_lines)
        self.header_timeout_seconds = float(header_timeout_seconds)
        self.max_connections = int(max_connections)
        self.stats = {"requests": 0, "lines": 0, "bytes": 0, "truncated": 0, "skipped": 0, "spool_errors": 0}
        self.stats.update(dict.fromkeys(REJECTION_STATS, 0))
        self._lock = threading.Lock()
        self._delivering = 0   # requests between their spool append and their answer
        self._server = _IngestServer((listen_address, int(listen_port)), self, sock)
        self.address, self.port = self._server.server_address[:2]
        host = "[%s]" % self.address if ":" in self.address else self.address
        self.path = "http://%s:%d/ingest" % (host, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-ingest", daemon=True)
        self._thread.start()

    def count(self, name):
        with self._lock:
            self.stats[name] += 1

    def split(self, body):
        """Body -> non-empty lines bounded by max_line_bytes, plus (truncated, skipped) counts."""
        framer = LineFramer(self.max_line_bytes, self.on_long_line)
        lines = [line for line in framer.feed(body) + framer.flush() if line]
        return lines, framer.truncated, framer.skipped

    def enqueue(self, body):
        """Spool a request's lines all or nothing and wait until they are on disk; returns how many.

        Raises _Reject: 413 for a request no spool state could take, 503 (Retry-After) when the spool
        is full or its write failed. The caller answers 202 only after this returns.
        """
        lines, truncated, skipped = self.split(body)
        if len(lines) > self.max_queue_lines or record_bytes(lines) > self.spool.max_bytes:
            raise _Reject(413, "rejected_413", "more lines than max_queue_lines or bytes than the spool holds")
        try:
            self.spool.append(lines)
        except SpoolFull:
            self._refused("spool_full", len(lines))
            raise _Reject(503, "rejected_503", "ingest spool full",
                          (("Retry-After", str(RETRY_AFTER_SECONDS)),)) from None
        except SpoolError as exc:
            log.error("http ingest: %s", exc)
            self._refused("spool_error", len(lines))
            raise _Reject(503, "rejected_503", "ingest spool write failed",
                          (("Retry-After", str(RETRY_AFTER_SECONDS)),)) from None
        with self._lock:
            self.stats["requests"] += 1
            self.stats["lines"] += len(lines)
            self.stats["bytes"] += len(body)
            self.stats["truncated"] += truncated
            self.stats["skipped"] += skipped
        return len(lines)

    def _refused(self, reason, lines):
        if reason == "spool_error":
            self.count("spool_errors")
        if self.on_refused is not None:
            self.on_refused(reason, lines)

    def delivering(self, delta):
        """A handler enters (+1) or leaves (-1) the span from spooling to answering: close() waits for it."""
        with self._lock:
            self._delivering += delta

    def _wait_delivered(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._delivering:
                    return
            time.sleep(0.01)

    def close(self):
        """Stop accepting, let spooled requests get their 202, cut the other connections, join (idempotent)."""
        if self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._wait_delivered(_JOIN_SECONDS)
        self._server.shutdown_connections()
        self._thread.join(_JOIN_SECONDS)
        self._thread = None
