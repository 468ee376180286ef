"""Request hygiene shared by the daemon's two HTTP servers: body framing, header deadlines, a connection cap.

Used by the metrics sidecar (metrics/httpd.py) and the HTTP ingest input (inputs/http_ingest.py); it sits
at the package top because inputs must not import from metrics (data flows one way).

What it guarantees, whatever the server does with a request:
- A request is handled only once all of it arrived: a client that closes before the blank line ending
  the headers gets no answer and runs no handler (counted as `incomplete`).
- Body framing is unambiguous or refused: Content-Length repeated with different values, Content-Length
  beside Transfer-Encoding, or a Content-Length that is not digits answer 400; Transfer-Encoding alone
  answers 411 (neither server reads chunked bodies). Each refusal closes the connection.
- Bytes of a body the server did not read are never parsed as a next request: a handler that leaves a
  body unread answers with `Connection: close` (see BodyHygieneMixin.body_unread).
- Request line and headers must arrive within header_timeout_seconds in total (a client dribbling a byte
  at a time never trips a plain socket timeout), and at most max_connections are open: one more is closed
  at once by the accepting thread, before it costs a thread. A server with evict_when_full (the metrics
  sidecar) closes instead the open connection that has waited longest for its headers (counted as
  `evicted`), so idle or slow sockets cannot lock a /health probe out; only when every open connection
  is being answered is the new one refused.
"""
import abc
import io
import logging
import socket
import threading
import time
from http.server import ThreadingHTTPServer

log = logging.getLogger(__name__)

# Reasons a request or connection is refused; the `reason` label values of the rejection metrics.
# Any other status the standard library answers by itself is counted as "400" (they are all bad requests).
STATUS_REASONS = ("400", "404", "405", "411", "413", "414", "431", "503", "505")
CONNECTION_REASONS = ("refused", "header_timeout", "incomplete", "evicted")
REJECT_REASONS = STATUS_REASONS + CONNECTION_REASONS
# Headers are read with a socket timeout this much past the deadline, so that the deadline always acts first.
_DEADLINE_SLACK_SECONDS = 2.0
DRAIN_POLL_SECONDS = 0.02


def status_reason(status):
    """The bounded `reason` label of an HTTP error status."""
    reason = str(int(status))
    return reason if reason in STATUS_REASONS else "400"


class FramingError(Exception):
    """The headers frame the body ambiguously (or in a way this server does not read)."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def body_length(headers):
    """Bytes of body the headers announce: 0 without framing headers, else Content-Length.

    Raises FramingError(400) for a Content-Length that is not digits, repeated with a different value,
    or sent with Transfer-Encoding (the classic request-smuggling shapes), FramingError(411) for
    Transfer-Encoding alone. Identical repeats ("5" twice, or "5, 5") are one value, as RFC 9110 allows.
    """
    lengths = headers.get_all("Content-Length") or []
    encodings = headers.get_all("Transfer-Encoding") or []
    if lengths and encodings:
        raise FramingError(400, "Content-Length and Transfer-Encoding together")
    if encodings:
        raise FramingError(411, "Transfer-Encoding is refused: send Content-Length")
    values = {part.strip() for value in lengths for part in value.split(",")}
    if not values:
        return 0
    if len(values) > 1:
        raise FramingError(400, "conflicting Content-Length values")
    value = values.pop()
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise FramingError(400, "bad Content-Length")
    return int(value)


class _CountingSocketIO(socket.SocketIO):
    """The connection's raw input, counting bytes received (to tell an idle kept-alive connection from
    a client sending its request too slowly)."""

    received = 0

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.received += n or 0
        return n


class _LineTrackingReader:
    """The request's rfile, remembering the last line read: b"" there means headers ended at EOF."""

    def __init__(self, raw):
        self._raw = raw
        self.last_line = None

    def readline(self, *args):
        self.last_line = self._raw.readline(*args)
        return self.last_line

    def __getattr__(self, name):
        return getattr(self._raw, name)


class BodyHygieneMixin(abc.ABC):
    """For a BaseHTTPRequestHandler subclass served by a GuardedHTTPServer (put it first in the bases).

    After parse_request, `self.body_bytes` holds the announced body length. The handler must reply with
    `refuse_request(status, message)` (answer with Connection: close) and decide for itself whether
    it reads the body; if it does not, `body_unread()` tells it to close the connection after replying.
    """

    body_bytes = 0
    requests_begun = 0

    def setup(self):
        self.timeout = self.server.header_timeout_seconds
        super().setup()
        self.rfile.close()  # replaced by a reader that counts what arrives and remembers the last line
        self.received = _CountingSocketIO(self.connection, "rb")
        self.rfile = _LineTrackingReader(io.BufferedReader(self.received))

    def handle_one_request(self):
        # Request line and headers together get a deadline (like Go's ReadHeaderTimeout). A kept-alive
        # connection that stays silent after its last answer is closed at the same deadline, quietly.
        self.server.set_deadline(self.connection, time.monotonic() + self.server.header_timeout_seconds,
                                 self.received, quiet_if_silent=self.requests_begun > 0)
        self.requests_begun += 1
        self.body_bytes = 0
        # The deadline, not the socket timeout, ends a silent client: the cut is counted (or not) there.
        self.connection.settimeout(self.server.header_timeout_seconds + _DEADLINE_SLACK_SECONDS)
        super().handle_one_request()

    def parse_request(self):
        try:
            parsed = super().parse_request()
        finally:
            self.server.set_deadline(self.connection, None)  # headers are in; the body has the socket timeout
            self.connection.settimeout(self.timeout)
        if not parsed:
            return False
        if self.request_version == "HTTP/0.9":
            self.send_error(400, "HTTP/0.9 is not served")
            return False
        if self.rfile.last_line == b"":
            # The peer closed before the blank line that ends the headers: half a request is no request.
            if not self.server.was_cut(self.connection):
                self.server.count_rejection("incomplete")
            self.close_connection = True
            return False
        try:
            self.body_bytes = body_length(self.headers)
        except FramingError as exc:
            self.refuse_request(exc.status, exc.message)
            return False
        return True

    def body_unread(self):
        """The handler answers without reading the body: this connection cannot carry another request."""
        return self.body_bytes > 0

    def send_error(self, code, message=None, explain=None):
        # Malformed request lines, oversized or too many headers, bad versions: the base class answers them.
        if self.server.was_cut(self.connection):
            self.close_connection = True
            return  # cut at its header deadline (counted then): what it had sent is no request
        self.server.count_rejection(status_reason(code))
        log.debug("http: %s from %s (%s)", code, self.client_address[0], message)
        self.close_connection = True
        super().send_error(code, message, explain)

    @abc.abstractmethod
    def refuse_request(self, status, message):
        """Answer `status` with `message` and close the connection (each server counts it its way)."""


class GuardedHTTPServer(ThreadingHTTPServer, metaclass=abc.ABCMeta):
    """ThreadingHTTPServer with daemon threads, a bound on open connections and header deadlines.

    Subclasses set max_connections and header_timeout_seconds (attributes) and count_rejection(reason).
    Open connections are kept with their header deadline (None while a body is read or a response
    written); service_actions() (called by serve_forever, or by the owner's own loop) cuts late ones,
    and shutdown_connections() cuts them all.
    """

    daemon_threads = True
    block_on_close = False  # shutdown_connections() cuts connections rather than waiting out their timeouts
    # socketserver's default backlog of 5 makes a burst of connections (or a few slowloris sockets
    # between two accepts) wait for SYN retries, seconds long; accepting is cheap, so keep more.
    request_queue_size = 128
    max_connections = 64
    header_timeout_seconds = 10.0
    evict_when_full = False   # True: a new connection over the bound evicts the oldest still sending headers
    draining = False          # set by drain(): answers close their connection

    def __init__(self, address, handler, bind_and_activate=True):
        self._open = {}  # socket -> _Watch
        self._open_lock = threading.Lock()
        super().__init__(address, handler, bind_and_activate)

    @abc.abstractmethod
    def count_rejection(self, reason):
        """Count a refused request or connection under `reason` (a bounded label: REJECT_REASONS)."""

    def open_connections(self):
        with self._open_lock:
            return len(self._open)

    def process_request(self, request, client_address):
        # Runs in the accepting thread: a connection over the bound is closed before it costs a thread.
        victim = None
        with self._open_lock:
            full = len(self._open) >= self.max_connections
            if full and self.evict_when_full:
                victim = self._longest_waiting()
                if victim is not None:
                    self._open[victim].deadline, self._open[victim].cut = None, True
                    full = False
            if not full:
                self._open[request] = _Watch(time.monotonic() + self.header_timeout_seconds)
        if victim is not None:
            self.count_rejection("evicted")
            log.debug("http: evicted a connection still sending its headers for one from %s", client_address[0])
            _cut(victim)
        if full:
            self.count_rejection("refused")
            log.debug("http: connection from %s refused (%d open)", client_address[0], self.max_connections)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:  # no thread could be started: the connection is closed, not left hanging
            self.count_rejection("refused")
            self.shutdown_request(request)

    def _longest_waiting(self):
        """The open connection whose header deadline comes first (it has waited longest), or None when
        every one is being answered (no deadline). Called with _open_lock held."""
        waiting = [(watch.deadline, id(conn), conn) for conn, watch in self._open.items()
                   if watch.deadline is not None and not watch.cut]
        return min(waiting)[2] if waiting else None

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client vanishing mid-response is routine on the network: a debug line, not a traceback on stderr.
        log.debug("http: connection from %s failed", client_address[0], exc_info=True)

    def set_deadline(self, conn, deadline, received=None, quiet_if_silent=False):
        """The connection must have its headers in by `deadline` (None: no deadline, a body or answer is
        under way). With quiet_if_silent, a connection that received nothing more by then is idle, not late."""
        with self._open_lock:
            watch = self._open.get(conn)
            if watch is not None:
                watch.deadline = deadline
                if received is not None:
                    watch.received, watch.mark = received, received.received
                    watch.quiet_if_silent = quiet_if_silent

    def was_cut(self, conn):
        """Whether service_actions cut this connection at its header deadline."""
        with self._open_lock:
            watch = self._open.get(conn)
            return watch is not None and watch.cut

    def service_actions(self):
        """Cut connections past their header deadline (each once); count those that had begun a request."""
        now = time.monotonic()
        with self._open_lock:
            late = [(conn, watch) for conn, watch in self._open.items()
                    if watch.deadline is not None and watch.deadline < now]
            for _conn, watch in late:
                watch.deadline, watch.cut = None, True
        for conn, watch in late:
            if not (watch.quiet_if_silent and watch.silent()):
                self.count_rejection("header_timeout")
            _cut(conn)

    def shutdown_connections(self):
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            _cut(conn)

    def drain(self, timeout, poll=DRAIN_POLL_SECONDS):
        """A graceful stop, once the owner no longer accepts: requests under way are answered, for up
        to `timeout` seconds, then every connection is cut. A kept-alive connection silent since its
        last answer is cut at once (clients retry a request whose kept-alive connection closes, RFC
        9112 9.3.1); a fresh connection is waited for until its header deadline, as its request may be
        on the wire. Answers given while draining carry Connection: close. Returns how many
        connections were still busy at the timeout (they are cut)."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while True:
            self.service_actions()   # header deadlines still hold while draining
            busy = self._cut_idle()
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(poll)
        self.shutdown_connections()
        return busy

    def _cut_idle(self):
        """Cut the kept-alive connections that sent nothing since their last answer; return how many
        others are open."""
        with self._open_lock:
            idle = [conn for conn, watch in self._open.items()
                    if watch.cut or (watch.deadline is not None and watch.quiet_if_silent and watch.silent())]
            busy = len(self._open) - len(idle)
        for conn in idle:
            _cut(conn)
        return busy


class _Watch:
    """An open connection's header deadline and how much it had received when the deadline was set."""

    __slots__ = ("deadline", "received", "mark", "quiet_if_silent", "cut")

    def __init__(self, deadline):
        self.deadline, self.received, self.mark, self.quiet_if_silent = deadline, None, 0, False
        self.cut = False

    def silent(self):
        return self.received is not None and self.received.received == self.mark


def _cut(conn):
    try:
        conn.shutdown(socket.SHUT_RDWR)  # the handler's next read returns at once and it finishes
    except OSError:
        pass  # already closed by its handler
