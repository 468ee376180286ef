"""A live daemon is provoked into every refusal, framing error, truncation and drop it counts, and each
one is read back from GET /metrics with its input and reason labels."""
import json
import os
import signal
import socket
import time

from tests.integration.daemon_harness import Daemon, free_port
from tests.rawsocket import read_until_closed

LONG = 70000  # over the harness's max_line_bytes (65536)


def _inputs(logs, udp, tcp, idle, http):
    return (f"[[app]]\ntype = file\npath = {logs}/app.log\nstart_at = beginning\n"
            f"[[sys_udp]]\ntype = syslog\nprotocol = udp\nlisten_port = {udp}\nsource_prefix = off\n"
            f"[[sys_tcp]]\ntype = syslog\nprotocol = tcp\nlisten_port = {tcp}\nmax_connections = 1\n"
            f"[[sys_idle]]\ntype = syslog\nprotocol = tcp\nlisten_port = {idle}\nidle_timeout_seconds = 1\n"
            f"[[ingest]]\ntype = http\nformat = jsonl\nlisten_port = {http}\nmax_connections = 2\nheader_timeout_seconds = 3\n"
            "max_body_bytes = 200000\n")


def _raw(port):
    return socket.create_connection(("127.0.0.1", port), timeout=15)


def _exchange(port, request):
    """Send raw bytes, return everything answered until the server closes."""
    with _raw(port) as sock:
        sock.sendall(request)
        return read_until_closed(sock)


def _wait(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for %s" % (what() if callable(what) else what))


def _value(daemon, metric, **labels):
    return daemon.labelled(metric).get(tuple(sorted(labels.items())))


def _counted(messages):
    return b"".join(b"%d %s" % (len(m), m) for m in messages)


def _provoke_ingest(daemon, http):
    post = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
    assert _exchange(http, post % (300000, b"")).startswith(b"HTTP/1.1 413 ")
    assert _exchange(http, b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nx\n").startswith(b"HTTP/1.1 404")
    assert _exchange(http, b"GET /ingest HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert _exchange(http, b"POST /ingest HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 411 ")
    assert _exchange(http, b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nx\n"
                     ).startswith(b"HTTP/1.1 400 ")
    line = json.dumps({"message": "y" * LONG}).encode() + b"\n"
    assert _exchange(http, post % (len(line), line) + b"").startswith(b"HTTP/1.1 202 ")
    with _raw(http) as half:
        half.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\n")  # leaves before the blank line: incomplete
    # Once the server saw it leave, its place is free: only then do two connections fill the table.
    _wait(lambda: _value(daemon, "input_rejected_total", input="ingest", reason="incomplete") == 1,
          what="the half request counted as incomplete")
    held = [_raw(http), _raw(http)]                             # max_connections = 2 ...
    time.sleep(0.5)
    assert _exchange(http, b"GET /ingest HTTP/1.1\r\n\r\n") == b""  # ... so this one is refused
    return held  # cut at the ingest's header_timeout_seconds = 3: header_timeout


def _provoke_syslog_tcp(tcp, idle):
    after = [b"<13>1 2026-03-02T10:00:00Z web app - - - after %d" % i for i in range(3)]
    with _raw(tcp) as sock:
        sock.sendall(b"999999999 <13>absurd count" + _counted(after) + b"300 <13>short" + _counted(after)
                     + b"0 zero\n" + b"<13>" + b"z" * LONG + b"\n")
        time.sleep(0.3)
        # max_connections = 1 and this peer just spoke: a newcomer is refused
        assert _exchange(tcp, b"<13>refused\n") == b""
        time.sleep(1.5)
        # now the peer has been silent over a second: the newcomer evicts it
        with _raw(tcp) as newcomer:
            newcomer.sendall(b"<13>newcomer\n")
            assert sock.recv(1) == b""
    with _raw(idle) as sock:
        sock.sendall(b"9 <13>")                      # half a frame, then silence: idle_timeout, short_frame
        assert sock.recv(1) == b""


def _udp_burst(daemon, udp, count):
    """Stop the listener (it reads the UDP socket), send more datagrams than the socket buffer holds,
    let it go on."""
    pid = daemon.children()["ad-listener"]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(count):
            sender.sendto(b"<14>burst seq=%d " % i + b"p" * 1000, ("127.0.0.1", udp))
    finally:
        os.kill(pid, signal.SIGCONT)
        sender.close()


def _provoke_sidecar(daemon):
    port = daemon.port
    assert _exchange(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\nGET /x HTTP/1.1").count(
        b"HTTP/1.1 ") == 1
    assert _exchange(port, b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert _exchange(port, b"GET /health HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    with _raw(port) as half:
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    _wait(lambda: _value(daemon, "http_rejected_total", reason="incomplete") == 1,
          what="the half request counted as incomplete")
    held = [_raw(port) for _ in range(3)]            # [http] max_connections = 3
    time.sleep(0.5)
    # The probe evicts the connection that waited longest for its headers, rather than being refused.
    assert _exchange(port, b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    for sock in held:                                 # one evicted, two cut at header_timeout_seconds = 2
        assert sock.recv(1) == b""
        sock.close()


def test_every_refusal_framing_error_truncation_and_drop_is_in_metrics(tmp_path):
    udp, tcp, idle, http = free_port(), free_port(), free_port(), free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"short line\n" + b"x" * LONG + b"\nanother\n")
    daemon = Daemon(tmp_path, inputs=_inputs(logs, udp, tcp, idle, http),
                    http="max_connections = 3\nheader_timeout_seconds = 2\n")
    try:
        daemon.start()
        held = _provoke_ingest(daemon, http)
        _provoke_syslog_tcp(tcp, idle)
        _udp_burst(daemon, udp, 20000)
        _provoke_sidecar(daemon)
        for sock in held:  # the ingest cuts them at its header_timeout_seconds (3 s)
            assert sock.recv(1) == b""
            sock.close()

        rejected = lambda reason: _value(daemon, "input_rejected_total", input="ingest", reason=reason)  # noqa: E731
        _wait(lambda: rejected("header_timeout") == 2,
              what=lambda: "ingest header timeouts: %s" % daemon.labelled("input_rejected_total"))
        for reason, n in {"413": 1, "404": 1, "405": 1, "411": 1, "400": 1, "refused": 1, "incomplete": 1,
                          "503": 0}.items():
            assert rejected(reason) == n, reason
        framing = {reason: _value(daemon, "input_framing_errors_total", input="sys_tcp", reason=reason)
                   for reason in ("bad_count", "count_too_large", "overrun", "short_frame")}
        assert framing == {"bad_count": 1, "count_too_large": 1, "overrun": 1, "short_frame": 0}
        assert _value(daemon, "input_framing_errors_total", input="sys_idle", reason="short_frame") == 1
        assert _value(daemon, "input_rejected_total", input="sys_tcp", reason="refused") == 1
        assert _value(daemon, "input_connections_closed_total", input="sys_tcp", reason="evicted") == 1
        assert _value(daemon, "input_connections_closed_total", input="sys_idle", reason="idle_timeout") == 1
        for name in ("app", "sys_tcp", "ingest"):
            assert _value(daemon, "lines_truncated_total", input=name) == 1, name
            assert _value(daemon, "lines_skipped_total", input=name) == 0, name
        drops = _wait(lambda: _value(daemon, "udp_receive_drops_total", input="sys_udp"), what="udp drops")
        received = _wait(lambda: _scored_from(daemon, "sys_udp") + drops >= 20000 and _scored_from(daemon, "sys_udp"),
                         timeout=120, what="udp lines scored")
        assert received + drops == 20000 and drops > 0
        sidecar = {reason: _value(daemon, "http_rejected_total", reason=reason)
                   for reason in ("405", "404", "400", "incomplete", "refused", "evicted", "header_timeout")}
        assert sidecar == {"405": 1, "404": 1, "400": 1, "incomplete": 1, "refused": 0, "evicted": 1,
                           "header_timeout": 2}
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _scored_from(daemon, source):
    if not os.path.exists(daemon.scored):
        return 0
    with open(daemon.scored) as f:
        return sum(1 for line in f if json.loads(line).get("source") == source)
