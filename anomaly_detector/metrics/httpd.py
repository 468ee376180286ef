"""The sidecar's HTTP server: GET /health, GET /metrics, GET /api/incidents and POST /admin/*, with a
combined-format access log.

Reads everything from a source object (metrics/sidecar.py builds it over shared memory), so it
never touches the workers; /admin/* goes to metrics/admin.py, which alone reads a body (bounded by
[http] max_body_bytes); /api/* to metrics/incidents_api.py, which reads the workers' published views. Threads are fine here: this process forks nothing. Request hygiene (body
framing, header deadline, connection cap) is httpcommon's; a request whose body is not read is
answered and its connection closed. With an ssl context (metrics/tls.py) every connection is TLS:
the handshake runs in the connection's thread under the header deadline; a failed one is counted
as http_rejected_total{reason="tls_handshake"}.
"""
import collections
import json
import logging
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler

from anomaly_detector.httpcommon import BodyHygieneMixin, GuardedHTTPServer, status_reason
from anomaly_detector.metrics.exposition import render
from anomaly_detector.metrics.incidents_api import encode as api_encode
from anomaly_detector.storage.appendfile import AppendFile

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
HEADER_TIMEOUT_SECONDS = 10
MAX_CONNECTIONS = 64
DEADLINE_SLACK_SECONDS = 2.0
log = logging.getLogger(__name__)


def _printable(text, limit=512):
    """Access-log fields without control bytes, so a request cannot forge log lines (CWE-150)."""
    text = str(text)[:limit]
    return "".join(c if 0x20 <= ord(c) != 0x7F else "\\x%02x" % ord(c) for c in text if ord(c) < 0x10000)


class AccessLog:
    """Appends one combined-log-format line per request; reopens after logrotate renames it."""

    def __init__(self, path):
        self._file = AppendFile(path)
        self._lock = threading.Lock()   # handler threads share one descriptor

    def write(self, client, request_line, status, size, referer, agent):
        stamp = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        line = '%s - - [%s] "%s" %d %s "%s" "%s"\n' % (
            _printable(client), stamp, _printable(request_line), status, size if size else "-",
            _printable(referer or "-"), _printable(agent or "-"))
        with self._lock:
            self._file.write(line.encode("utf-8"))


class _Handler(BodyHygieneMixin, BaseHTTPRequestHandler):
    server_version = "anomaly_detector"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        route = self.path.split("?", 1)[0]
        if route.startswith("/admin/") or route == "/admin":
            self._admin("GET")
        elif route.startswith("/api/"):
            self._api("GET")
        elif route == "/health":
            body = self._health()
            self._send(200 if body.get("status") in ("healthy", "degraded") else 503, "application/json",
                       json.dumps(body).encode())
        elif route == "/metrics":
            self._send(200, CONTENT_TYPE_METRICS, render(self.server.source.samples()).encode())
        elif route == "/" and self.server.page is not None:
            self._send(*self.server.page.response())
        else:
            self._send(404, "application/json", b'{"error": "not found"}')

    def _health(self):
        """The source's verdict; a check that fails is itself unhealthy (503 with the error), never a
        dropped connection a probe would read as a timeout."""
        try:
            return self.server.source.health()
        except Exception as exc:
            log.exception("/health check failed")
            return {"status": "unhealthy", "reasons": ["health check failed: %s: %s" % (type(exc).__name__, exc)],
                    "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def do_POST(self):
        route = self.path.split("?", 1)[0]
        if route.startswith("/admin/") or route == "/admin":
            self._admin(self.command)
            return
        if route.startswith("/api/"):
            self._api(self.command)
            return
        status = 405 if route in ("/", "/health", "/metrics") else 404
        self._send(status, "application/json", b'{"error": "%s"}' % (b"method not allowed" if status == 405
                                                                     else b"not found"))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_POST

    def _admin(self, method):
        admin = self.server.admin
        if admin is None:
            self._send(404, "application/json", b'{"error": "not found"}')
            return
        reply = admin.handle(method, self.path, self.headers, self.body_bytes, self.client_address[0],
                             self._read_body)
        self._send(reply.status, "application/json", json.dumps(reply.body).encode(), reply.headers)

    def _api(self, method):
        """/api/* (metrics/incidents_api.py); read-only, takes no body."""
        api = getattr(self.server, "incidents_api", None)
        if api is None:
            self._send(404, "application/json", b'{"error": "not found"}')
            return
        reply = api.handle(method, self.path, self.headers)
        self._send(reply.status, "application/json", api_encode(reply.body), reply.headers)

    def _read_body(self):
        """The whole body (Content-Length bytes, bounded by the caller). It gets the header deadline
        again, in total: a client dribbling a byte at a time is cut (counted as header_timeout)."""
        length, self.body_bytes = self.body_bytes, 0   # read: the connection may carry another request
        if not length:
            return b""
        timeout = self.server.header_timeout_seconds
        self.server.set_deadline(self.connection, time.monotonic() + timeout)
        self.connection.settimeout(timeout + DEADLINE_SLACK_SECONDS)   # the deadline acts (and counts) first
        try:
            data = self.rfile.read(length)
        except OSError:
            data = b""
        finally:
            self.server.set_deadline(self.connection, None)
            self.connection.settimeout(timeout)
        if len(data) < length:
            self.close_connection = True
            raise ValueError("body of %d bytes ended after %d (closed, or slower than header_timeout_seconds)"
                             % (length, len(data)))
        return data

    def refuse_request(self, status, message):
        self.server.count_rejection(status_reason(status))
        self.close_connection = True
        self._send(status, "application/json", json.dumps({"error": message}).encode())

    def _send(self, status, content_type, body, headers=()):
        if status in (404, 405):
            self.server.count_rejection(status_reason(status))
        if self.body_unread():
            self.close_connection = True  # the body was not read: its bytes must not become a request
        if self.server.draining:
            self.close_connection = True  # stopping: the client's next request goes to the next sidecar
        self.send_response_only(status)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # Logged before the body goes out, so the line exists once the client has its answer.
        self.log_request(status, len(body))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        """One access-log line per request, also for errors http.server answers itself (400, 414, ...)."""
        if self.server.access_log is None:
            return
        headers = getattr(self, "headers", None)
        self.server.access_log.write(self.client_address[0], getattr(self, "requestline", ""),
                                     int(code) if str(code).isdigit() else 0, size if size != "-" else 0,
                                     headers.get("Referer") if headers else None,
                                     headers.get("User-Agent") if headers else None)

    def log_message(self, fmt, *args):
        log.debug("http: " + fmt, *args)


class SidecarHTTPServer(GuardedHTTPServer):
    """HTTP server over a source with .health() -> dict and .samples() -> dict (see exposition.render).

    `rejected` counts refused requests and connections by reason (httpcommon.REJECT_REASONS).
    Over max_connections, the connection waiting longest for its headers is evicted, so sockets held
    open idle or slow cannot keep a /health probe out.
    """

    evict_when_full = True

    def __init__(self, bind, port, source, access_log_path=None, sock=None,
                 max_connections=MAX_CONNECTIONS, header_timeout_seconds=HEADER_TIMEOUT_SECONDS,
                 admin=None, tls_context=None, page=None):
        """`sock`: an already listening socket (the supervisor binds before forking, so a busy
        port fails the start, and a restarted sidecar takes over the same socket). `admin`: an
        AdminAPI for /admin/* (None: 404); `tls_context`: serve HTTPS with it; `page`: a metrics.page.Page
        for GET / (None: 404)."""
        self.max_connections = int(max_connections)
        self.header_timeout_seconds = float(header_timeout_seconds)
        self.rejected = collections.Counter()
        self._rejected_lock = threading.Lock()
        if ":" in bind:
            self.address_family = socket.AF_INET6    # an IPv6 literal such as ::1
        super().__init__((bind, port), _Handler, bind_and_activate=sock is None)
        if sock is not None:
            self.socket.close()
            self.socket = sock
            self.server_address = sock.getsockname()[:2]
        self.source, self.admin, self.tls_context, self.page = source, admin, tls_context, page
        self.access_log = AccessLog(access_log_path) if access_log_path else None
        self.started = time.time()

    def get_request(self):
        conn, address = super().get_request()
        if self.tls_context is not None:
            # No handshake here: this is the accepting thread, which a slow client must not hold.
            conn = self.tls_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def finish_request(self, request, client_address):
        if self.tls_context is not None:
            # The header deadline (service_actions) ends a stalled handshake, counted as header_timeout.
            request.settimeout(self.header_timeout_seconds + DEADLINE_SLACK_SECONDS)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                if not self.was_cut(request):   # one cut at its header deadline was counted then
                    self.count_rejection("tls_handshake")
                log.debug("http: TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    def count_rejection(self, reason):
        with self._rejected_lock:
            self.rejected[reason] += 1

    def rejections(self):
        """{reason: count} so far (a copy)."""
        with self._rejected_lock:
            return dict(self.rejected)

    @property
    def port(self):
        return self.server_address[1]
