"""inputs/listener.py over real sockets and spools: what is read is spooled; a full spool drops UDP (counted), holds TCP."""
import socket
import time

import pytest

from anomaly_detector.inputs.listener import Listener, listener_settings, network_inputs, spool_dir
from anomaly_detector.inputs.spool import HEADER_BYTES, SpoolError, SpoolReader
from anomaly_detector.ipc.control import ControlBlock, control_bytes

ADDR = "127.0.0.1"


def _cfg(tmp_path, max_spool_mb=64, **inputs):
    section = {"listen_address": ADDR, "listen_port": 0, "max_connections": 16, "idle_timeout_seconds": 60, "max_body_bytes": 1 << 20,
               "max_queue_lines": 1000, "header_timeout_seconds": 10.0}
    return {"paths": {"state_dir": str(tmp_path)},
            "processing": {"max_line_bytes": 4096, "on_long_line": "truncate", "max_spool_mb": max_spool_mb},
            "inputs": {name: dict(section, **kind) for name, kind in inputs.items()}}


@pytest.fixture
def counters():
    buf = bytearray(control_bytes(1, 1))
    return ControlBlock.create(buf, 1, 1).counters(0)


def _spooled(cfg, name):
    reader = SpoolReader(spool_dir(cfg, name), "k")
    lines = [line for chunk in reader.poll() for line in chunk.lines]
    reader.close()
    return lines


def _pump_until(listener, entry, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    total = 0
    while total < count and time.monotonic() < deadline:
        total += listener.pump_syslog(entry)
        time.sleep(0.005)
    return total


def test_udp_and_tcp_messages_are_spooled_and_drained_at_close(tmp_path, counters):
    cfg = _cfg(tmp_path, udp={"type": "syslog", "protocol": "udp"}, tcp={"type": "syslog", "protocol": "tcp"})
    listener = Listener(cfg, counters)
    udp, tcp = listener.syslog
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(50):
        sender.sendto(b"<14>udp message %d" % i, (ADDR, udp.source.port))
    conn = socket.create_connection((ADDR, tcp.source.port))
    assert _pump_until(listener, udp, 50) == 50
    conn.sendall(b"".join(b"<14>tcp message %d\n" % i for i in range(30)))
    for i in range(50, 60):
        sender.sendto(b"<14>udp message %d" % i, (ADDR, udp.source.port))
    time.sleep(0.2)
    listener.close()   # reads both sockets dry into the spools before closing them
    conn.close()
    sender.close()
    assert _spooled(cfg, "udp") == [b"<14>udp message %d" % i for i in range(60)]
    assert _spooled(cfg, "tcp") == [b"<14>tcp message %d" % i for i in range(30)]


def test_full_spool_drops_udp_counted_and_holds_tcp_until_there_is_room(tmp_path, counters):
    cfg = _cfg(tmp_path, max_spool_mb=1, udp={"type": "syslog", "protocol": "udp"},
               tcp={"type": "syslog", "protocol": "tcp"})
    listener = Listener(cfg, counters)
    udp, tcp = listener.syslog
    filler = [b"x" * ((1 << 20) - HEADER_BYTES - 5)]
    for entry in (udp, tcp):
        entry.spool.append(filler)          # 1 MB less 5 bytes: the next record does not fit
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"<14>dropped", (ADDR, udp.source.port))
    deadline = time.monotonic() + 5
    while counters.value("spool_refused_full") == 0 and time.monotonic() < deadline:
        listener.pump_syslog(udp)
    assert counters.value("spool_refused_full") == 1
    conn = socket.create_connection((ADDR, tcp.source.port))
    conn.sendall(b"<14>held 1\n<14>held 2\n")
    deadline = time.monotonic() + 5
    while not tcp.held and time.monotonic() < deadline:
        listener.pump_syslog(tcp)
    assert tcp.held == [b"<14>held 1", b"<14>held 2"] and counters.value("spool_refused_full") == 1
    reader = SpoolReader(spool_dir(cfg, "tcp"), "k", save_interval=0)
    chunk = reader.poll()[0]
    reader.commit(chunk.key, chunk.end_offset)
    reader.poll()   # saves; the writer sealed the full segment, so it is deleted now
    assert listener.pump_syslog(tcp) == 2 and tcp.held == []
    assert [line for c in reader.poll() for line in c.lines] == [b"<14>held 1", b"<14>held 2"]
    reader.close()
    conn.close()
    sender.close()
    listener.close()


def test_reload_keeps_the_listener_only_when_its_settings_stay(tmp_path):
    cfg = _cfg(tmp_path, ingest={"type": "http"}, app={"type": "file"})
    same = _cfg(tmp_path, ingest={"type": "http"}, app={"type": "file", "path": "/elsewhere"})
    assert network_inputs(cfg) == ["ingest"]
    assert listener_settings(cfg) == listener_settings(same)   # a file input's change is not the listener's
    same["inputs"]["ingest"]["max_connections"] = 17
    assert listener_settings(cfg) != listener_settings(same)
    spool = _cfg(tmp_path, max_spool_mb=65, ingest={"type": "http"})
    assert listener_settings(cfg) != listener_settings(spool)


def test_spool_of_a_removed_input_with_unscored_lines_is_reported(tmp_path):
    from anomaly_detector.inputs.listener import warn_orphan_spools
    from anomaly_detector.inputs.spool import SpoolWriter
    old = _cfg(tmp_path, gone={"type": "http"}, done={"type": "http"})
    for name in ("gone", "done"):
        writer = SpoolWriter(spool_dir(old, name), 1 << 20)
        writer.append([b"a line"])
        writer.close()
    reader = SpoolReader(spool_dir(old, "done"), "k")
    chunk = reader.poll()[0]
    reader.commit(chunk.key, chunk.end_offset)
    reader.close()
    now = _cfg(tmp_path, kept={"type": "http"})
    assert [name for name, _ in warn_orphan_spools(now)] == ["gone"]


def test_a_reload_that_moves_a_network_input_to_another_stats_row_restarts_the_listener(tmp_path):
    """The listener publishes its inputs' stats to the control-block row of each input's place in the
    config: a kept listener would go on writing the row that now belongs to another input."""
    cfg = _cfg(tmp_path, ingest={"type": "http"})
    moved = _cfg(tmp_path, app={"type": "file"}, ingest={"type": "http"})   # ingest is now the second row
    assert list(moved["inputs"]) == ["app", "ingest"]
    assert listener_settings(cfg) != listener_settings(moved)
    after = _cfg(tmp_path, ingest={"type": "http"}, app={"type": "file"})   # an input added after it: same row
    assert listener_settings(cfg) == listener_settings(after)


def test_tcp_lines_held_by_a_full_spool_are_spooled_at_stop_not_lost(tmp_path, counters):
    """Lines read from a TCP peer are acknowledged (the peer cannot send them again): a stop while the
    spool is full writes them past the bound rather than dropping them."""
    cfg = _cfg(tmp_path, max_spool_mb=1, tcp={"type": "syslog", "protocol": "tcp"})
    listener = Listener(cfg, counters)
    (tcp,) = listener.syslog
    tcp.spool.append([b"x" * ((1 << 20) - HEADER_BYTES - 5)])
    conn = socket.create_connection((ADDR, tcp.source.port))
    conn.sendall(b"<14>held 1\n<14>held 2\n")
    deadline = time.monotonic() + 5
    while not tcp.held and time.monotonic() < deadline:
        listener.pump_syslog(tcp)
    assert tcp.held == [b"<14>held 1", b"<14>held 2"]
    listener.close()
    conn.close()
    reader = SpoolReader(spool_dir(cfg, "tcp"), "k")
    lines = [line for _ in range(3) for chunk in reader.poll() for line in chunk.lines]
    reader.close()
    assert lines[1:] == [b"<14>held 1", b"<14>held 2"]


def test_a_failing_spool_under_tcp_is_logged_once_per_interval_not_per_retry(tmp_path, counters, caplog, monkeypatch):
    cfg = _cfg(tmp_path, tcp={"type": "syslog", "protocol": "tcp"})
    listener = Listener(cfg, counters)
    (tcp,) = listener.syslog
    conn = socket.create_connection((ADDR, tcp.source.port))
    conn.sendall(b"<14>held\n")

    def failing(lines):
        raise SpoolError("spool: write failed: [Errno 5] Input/output error")
    monkeypatch.setattr(tcp.spool, "append", failing)
    deadline = time.monotonic() + 5
    while not tcp.held and time.monotonic() < deadline:
        listener.pump_syslog(tcp)
    for _ in range(200):        # the listener's loop retries held lines every round
        listener.pump_syslog(tcp)
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "WARNING") and "Input/output" in r.getMessage()]
    assert tcp.held == [b"<14>held"] and len(errors) == 1
    monkeypatch.undo()
    assert listener.pump_syslog(tcp) == 1
    listener.close()
    conn.close()


def test_refusals_counted_from_concurrent_http_threads_are_all_counted(tmp_path, counters):
    """HTTP handler threads (and the syslog loop) count refused lines at the same time: the shared
    counter's read-add-write must not lose any."""
    import sys
    import threading
    listener = Listener(_cfg(tmp_path, ingest={"type": "http"}), counters)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)     # switch threads as often as possible, so an unguarded add races
    try:
        threads = [threading.Thread(target=lambda: [listener.refused("ingest", "spool_full", 1) for _ in range(5000)])
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
        listener.close()
    assert counters.value("spool_refused_full") == 8 * 5000
