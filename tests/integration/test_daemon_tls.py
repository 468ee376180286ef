"""HTTPS on the real daemon: curl --cacert against a CA the test makes, plain HTTP refused and counted,
the certificate renewed in place and served after SIGHUP, a broken key refusing the reload (the running
certificate stays), and /admin without a token file: 403 with the reason, then 429 past the rate limit."""
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from tests.integration import daemon_harness as harness
from tests.integration.daemon_harness import Daemon
from tests.tlsfiles import make_ca, make_server_cert

RATE = 3


def curl(daemon, path, cafile, method="GET"):
    """(curl exit status, HTTP status, body) of a request verified against cafile only."""
    out = subprocess.run(["curl", "-sS", "--cacert", cafile, "-X", method, "-o", "-", "-w", "\n%{http_code}",
                          "https://127.0.0.1:%d%s" % (daemon.port, path)], capture_output=True, text=True, timeout=60)
    body, _, code = out.stdout.rpartition("\n")
    return out.returncode, int(code or 0), body


def wait_for(condition, timeout, what, daemon):
    """The harness's wait_for, `what` first."""
    return harness.wait_for(condition, timeout, daemon, what)


@pytest.fixture
def certs(tmp_path):
    directory = str(tmp_path / "tls")
    os.makedirs(directory)
    make_ca(directory, "ca1")
    make_ca(directory, "ca2")
    first = make_server_cert(directory, "server1", "ca1")
    second = make_server_cert(directory, "server2", "ca2")
    return directory, first, second


def test_https_served_renewed_on_sighup_and_a_bad_key_refused(tmp_path, certs):
    directory, (cert1, key1), (cert2, key2) = certs
    cert, key = os.path.join(directory, "served.pem"), os.path.join(directory, "served.key")
    shutil.copy(cert1, cert)
    shutil.copy(key1, key)
    ca1, ca2 = os.path.join(directory, "ca1.pem"), os.path.join(directory, "ca2.pem")
    daemon = Daemon(tmp_path / "d", http="tls_cert = %s\ntls_key = %s\nadmin_rate_limit_per_minute = %d\n"
                    "header_timeout_seconds = 2\n" % (cert, key, RATE))
    daemon.ssl_context = ssl.create_default_context(cafile=ca1)
    try:
        daemon.start()
        exit_code, status, body = curl(daemon, "/health", ca1)
        assert (exit_code, status) == (0, 200) and json.loads(body)["status"] == "healthy"
        assert curl(daemon, "/health", ca2)[0] == 60   # curl: peer certificate cannot be authenticated
        # Plain HTTP to the HTTPS port gets no answer, and is counted.
        plain = subprocess.run(["curl", "-sS", "http://127.0.0.1:%d/health" % daemon.port], capture_output=True,
                               timeout=60)
        assert plain.returncode != 0
        wait_for(lambda: daemon.labelled("http_rejected_total")[(("reason", "tls_handshake"),)] >= 1, 10,
                 "the failed handshake counted", daemon)

        # A client that never starts its handshake holds no more than its connection, until the deadline.
        cut_before = daemon.labelled("http_rejected_total")[(("reason", "header_timeout"),)]
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as idle:
            assert curl(daemon, "/health", ca1)[:2] == (0, 200)
            started = time.monotonic()
            assert idle.recv(100) == b"" and time.monotonic() - started < 25
        assert daemon.labelled("http_rejected_total")[(("reason", "header_timeout"),)] == cut_before + 1

        # No admin_token_file: /admin answers 403 with the reason, and the rate limit still counts.
        for _ in range(RATE):
            _, status, body = curl(daemon, "/admin/disable-tier4", ca1, method="POST")
            assert status == 403 and "admin_token_file is not set" in json.loads(body)["error"], body
        _, status, body = curl(daemon, "/admin/disable-tier4", ca1, method="POST")
        assert status == 429 and "admin_rate_limit_per_minute" in json.loads(body)["error"], body
        assert daemon.metric("admin_api_enabled") == 0 and daemon.metric("runtime_tier4_enabled") == 1
        counts = daemon.labelled("admin_requests_total")
        assert counts[(("action", "disable-tier4"), ("status", "403"))] == RATE
        assert counts[(("action", "disable-tier4"), ("status", "429"))] == 1

        # Renewed in place (as certbot does), then SIGHUP: the new chain is served, the old one no more.
        shutil.copy(cert2, cert)
        shutil.copy(key2, key)
        daemon.process.send_signal(signal.SIGHUP)
        wait_for(lambda: curl(daemon, "/health", ca2)[1] == 200, 60, "the renewed certificate", daemon)
        assert curl(daemon, "/health", ca1)[0] == 60
        daemon.ssl_context = ssl.create_default_context(cafile=ca2)
        assert daemon.metric("config_last_reload_successful") == 1

        # A key that is not PEM refuses the reload with one line; the sidecar keeps its certificate.
        with open(key, "w") as f:
            f.write("not a key\n")
        daemon.process.send_signal(signal.SIGHUP)
        log_path = os.path.join(daemon.dir, "log", "anomaly-detector.log")
        wait_for(lambda: "reload rejected" in open(log_path).read(), 60, "the reload refused", daemon)
        refusal = [line for line in open(log_path) if "reload: " in line and "tls_" in line]
        assert len(refusal) == 1 and "not a PEM certificate and private key" in refusal[0], refusal
        # /metrics serves the sidecar's once-a-second reading
        wait_for(lambda: daemon.metric("config_last_reload_successful") == 0, 10, "the failed reload's gauge", daemon)
        assert curl(daemon, "/health", ca2)[:2] == (0, 200)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
