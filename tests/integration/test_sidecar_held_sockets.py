"""300 idle or slow sockets held open against the live sidecar ([http] max_connections = 64) do not keep
/health out: a new connection evicts the one that has waited longest for its headers, and /health
answers at once. The probe's time is measured (the issue's bound is 100 ms; asserted with room for a
loaded machine, and printed)."""
import http.client
import socket
import statistics
import time

import pytest

from tests.integration.daemon_harness import Daemon

HELD = 300


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    d.kill()


def test_health_answers_with_300_idle_and_slow_sockets_open(daemon):
    daemon.start()
    held = []
    try:
        for i in range(HELD):
            sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
            if i % 2:   # half slowloris: a request line and a header begun, never finished
                sock.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
            held.append(sock)
        time.sleep(1)   # let the sidecar accept (and evict) them all
        timings = []
        for _ in range(7):
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
            started = time.perf_counter()
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            timings.append(time.perf_counter() - started)
            conn.close()
            assert response.status == 200
        print("/health with %d sockets held: median %.1f ms, max %.1f ms"
              % (HELD, 1000 * statistics.median(timings), 1000 * max(timings)))
        assert statistics.median(timings) < 0.1 and max(timings) < 1.0, timings
        evicted = daemon.labelled("http_rejected_total")[(("reason", "evicted"),)]
        assert evicted >= HELD - 64
        assert daemon.labelled("http_rejected_total")[(("reason", "refused"),)] == 0
    finally:
        for sock in held:
            sock.close()
