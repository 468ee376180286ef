"""Sidecar HTTP: /health 200/503, /metrics parseable, 404/405, access log without control bytes."""
import json
import threading
import urllib.error
import urllib.request

import pytest

from anomaly_detector.metrics.httpd import SidecarHTTPServer


class FakeReadings:
    """Readings the sidecar would take from shared memory, fixed for the test."""

    def __init__(self):
        self.status = "healthy"

    def health(self):
        return {"status": self.status, "timestamp": "2026-11-28T00:00:00Z",
                "reasons": [] if self.status == "healthy" else ["worker 1 down"]}

    def samples(self):
        return {"logs_processed_total": 42, "processing_rate": 1.5}


@pytest.fixture
def server(tmp_path):
    readings = FakeReadings()
    srv = SidecarHTTPServer("127.0.0.1", 0, readings, access_log_path=str(tmp_path / "access.log"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, readings, tmp_path / "access.log"
    srv.shutdown()
    srv.server_close()


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
