"""Sidecar HTTP: /health 200/503, /metrics parseable, 404/405, access log without control bytes."""
import json
import re
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from anomaly_detector.metrics.httpd import SidecarHTTPServer
from tests.rawsocket import read_until_closed


class FakeReadings:
    """Readings the sidecar would take from shared memory, fixed for the test."""

    def __init__(self):
        self.status = "healthy"
        self.health_runs = 0

    def health(self):
        self.health_runs += 1
        return {"status": self.status, "timestamp": "2026-11-28T00:00:00Z",
                "reasons": [] if self.status == "healthy" else ["worker 1 down"]}

    def samples(self):
        return {"logs_processed_total": 42, "processing_rate": 1.5}


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(**kwargs):
        readings = FakeReadings()
        srv = SidecarHTTPServer("127.0.0.1", 0, readings, access_log_path=str(tmp_path / "access.log"), **kwargs)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv, readings
    yield make
    for srv in servers:
        srv.shutdown()
        srv.server_close()
        srv.shutdown_connections()


@pytest.fixture
def server(make_server, tmp_path):
    srv, readings = make_server()
    return srv, readings, tmp_path / "access.log"


def _raw(srv):
    return socket.create_connection(("127.0.0.1", srv.port), timeout=5)


def _one_response(sock):
    """One whole response (headers and Content-Length body), which may arrive in several segments."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return data


def _get(srv, path, method="GET", headers=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (srv.port, path), method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_reports_status_code(server):
    srv, readings, _ = server
    status, body = _get(srv, "/health")
    assert status == 200 and json.loads(body)["status"] == "healthy"
    readings.status = "unhealthy"
    status, body = _get(srv, "/health")
    assert status == 503 and json.loads(body)["reasons"] == ["worker 1 down"]


def test_metrics_has_integer_counter(server):
    srv, _, _ = server
    status, body = _get(srv, "/metrics")
    assert status == 200
    assert "anomaly_detector_logs_processed_total 42\n" in body


def test_unknown_path_and_wrong_method(server):
    srv, _, _ = server
    assert _get(srv, "/nope")[0] == 404
    assert _get(srv, "/metrics", method="POST")[0] == 405


def test_access_log_one_line_per_request_without_control_bytes(server):
    srv, _, log_path = server
    _get(srv, "/health", headers={"User-Agent": "evil\x1b[31mred\x07"})
    _get(srv, "/metrics")
    lines = log_path.read_text().splitlines()
    assert len(lines) == 2
    assert '"GET /health HTTP/1.1" 200' in lines[0] and "\\x1b[31mred\\x07" in lines[0]
    assert not any(ord(c) < 0x20 for line in lines for c in line)


def test_an_unread_body_is_never_parsed_as_the_next_request(server):
    srv, readings, _ = server
    smuggled = b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
    with _raw(srv) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 405 ") and reply.count(b"HTTP/1.1 ") == 1
    assert b"Connection: close" in reply
    assert srv.rejections() == {"405": 1}
    with _raw(srv) as sock:  # a body on a GET is not read either: answered, then closed
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.count(b"HTTP/1.1 ") == 1


def test_keep_alive_without_body_serves_several_requests(server):
    srv, _, _ = server
    with _raw(srv) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.count(b"HTTP/1.1 200 ") == 1 and reply.count(b"HTTP/1.1 404 ") == 1


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: +5\r\n",
    b"Content-Length: 0x5\r\n",
])
def test_ambiguous_content_length_is_400_and_closes(server, headers):
    srv, readings, _ = server
    with _raw(srv) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nhello" + b"GET /health HTTP/1.1\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1
    assert readings.health_runs == 0 and srv.rejections() == {"400": 1}


def test_identical_repeated_content_length_is_one_value(server):
    srv, _, _ = server
    with _raw(srv) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 ")


def test_abandoned_partial_requests_run_nothing_and_do_not_delay_a_probe(server):
    """1,000 clients send part of a /health request and leave: no /health runs for them, and a probe
    sent among them is answered at once (generous bound: the machine is shared)."""
    srv, readings, _ = server
    slowest = []

    def probe():
        for _ in range(5):
            start = time.monotonic()
            status, _ = _get(srv, "/health")
            slowest.append(time.monotonic() - start)
            assert status == 200

    prober = threading.Thread(target=probe)
    prober.start()
    for i in range(1000):
        with _raw(srv) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"GET /hea")
    prober.join(30)
    deadline = time.monotonic() + 10
    while sum(srv.rejections().values()) < 1000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert readings.health_runs == 5, "a /health ran for an abandoned request"
    assert srv.rejections().get("incomplete") == 500   # headers cut by EOF
    assert srv.rejections().get("400") == 500          # request line cut by EOF
    assert max(slowest) < 1.5


def test_connection_cap_evicts_the_longest_waiting_connection_for_a_new_one(make_server):
    srv, readings = make_server(max_connections=4)
    held = [_raw(srv) for _ in range(4)]
    try:
        deadline = time.monotonic() + 5
        while srv.open_connections() < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        with _raw(srv) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(extra).startswith(b"HTTP/1.1 200 ")
        readable, _, _ = select.select(held, [], [], 2.0)   # the evicted one was cut before the probe was served
        assert len(readable) == 1 and readable[0].recv(1) == b""
        assert srv.rejections() == {"evicted": 1} and readings.health_runs == 1
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while srv.open_connections() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _get(srv, "/health")[0] == 200


def test_header_deadline_cuts_a_dribbling_client_but_not_an_idle_kept_alive_one(make_server):
    srv, readings = make_server(header_timeout_seconds=0.5)
    with _raw(srv) as dribbler, _raw(srv) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _one_response(kept).startswith(b"HTTP/1.1 200 ")
        start = time.monotonic()
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                dribbler.sendall(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass  # cut while still sending
        assert read_until_closed(dribbler) == b"" and time.monotonic() - start < 4
        assert read_until_closed(kept) == b""   # silent after its answer: closed at the deadline, not counted
    assert srv.rejections() == {"header_timeout": 1} and readings.health_runs == 1


def test_supervisor_binds_an_ipv6_sidecar_address_the_validator_accepts():
    """`[http] bind = ::1` passes --validate-config, so the supervisor must be able to listen on it
    (it bound every address as IPv4: 'Address family for hostname not supported')."""
    from anomaly_detector.supervisor.arbiter import _listen
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    sock = _listen({"bind": "::1", "port": 0})
    srv = SidecarHTTPServer("::1", 0, FakeReadings(), sock=sock)
    _assert_health_answers_on_ipv6(srv)


def _assert_health_answers_on_ipv6(srv):
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with urllib.request.urlopen("http://[::1]:%d/health" % srv.port, timeout=5) as resp:
            assert resp.status == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_sidecar_binding_itself_listens_on_an_ipv6_address():
    """After a FATAL sidecar the supervisor's socket is closed and the next sidecar binds itself."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    srv = SidecarHTTPServer("::1", 0, FakeReadings())
    _assert_health_answers_on_ipv6(srv)
