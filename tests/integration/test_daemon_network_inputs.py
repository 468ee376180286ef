"""The real daemon with network inputs: syslog over UDP and TCP, and HTTP ingest of JSON lines."""
import json
import socket
import time
import urllib.request

from tests.integration.daemon_harness import Daemon, free_port, loss_and_duplicates


def _inputs(udp, tcp, http):
    return ("[[sys_udp]]\ntype = syslog\nprotocol = udp\nlisten_port = %d\n"
            "[[sys_tcp]]\ntype = syslog\nprotocol = tcp\nlisten_port = %d\n"
            "[[ingest]]\ntype = http\nformat = jsonl\nlisten_port = %d\n" % (udp, tcp, http))


def _wait_listening(port, kind, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if kind == "tcp":
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("port %d not listening" % port)


def test_syslog_udp_tcp_and_http_ingest_are_scored(tmp_path):
    udp, tcp, http = free_port(), free_port(), free_port()
    daemon = Daemon(tmp_path, inputs=_inputs(udp, tcp, http))
    try:
        daemon.start()
        _wait_listening(tcp, "tcp")
        _wait_listening(http, "tcp")
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(0, 300):
            sender.sendto(b"<14>Mar  2 10:00:%02d web1 app[12]: request ok seq=%d" % (i % 60, i), ("127.0.0.1", udp))
            if i % 50 == 0:
                time.sleep(0.05)   # a datagram burst larger than the socket buffer would be dropped by the kernel
        sender.close()
        with socket.create_connection(("127.0.0.1", tcp)) as conn:
            for i in range(300, 600):
                msg = b"<13>1 2026-03-02T10:00:00Z web2 app 13 - - request ok seq=%d" % i
                conn.sendall(b"%d %s" % (len(msg), msg) if i % 2 else msg + b"\n")
        body = "".join(json.dumps({"timestamp": 1772445600 + i, "message": "login ok seq=%d" % i, "level": "INFO"})
                       + "\n" for i in range(600, 900)).encode()
        request = urllib.request.Request("http://127.0.0.1:%d/ingest" % http, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 202 and json.loads(resp.read())["accepted"] == 300
        counts = daemon.wait_scored(900, 120)
        assert loss_and_duplicates(counts, 900) == ([], 0)
        records = [json.loads(line) for line in open(daemon.scored)]
        # a syslog line's source is its app-name (source_prefix = auto); HTTP ingest keeps its input's name
        assert {r["source"] for r in records} == {"app", "ingest"}
        assert daemon.stop() == 0
    finally:
        daemon.kill()
