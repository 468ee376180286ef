"""HttpIngestInput over real sockets on 127.0.0.1: statuses, the spool behind a 202, slowloris, bytes passed through."""
import http.client
import json
import socket
import threading
import time

import pytest

from anomaly_detector.inputs.http_ingest import HttpIngestInput
from anomaly_detector.inputs.spool import SpoolReader, SpoolWriter, encode_record
from tests.rawsocket import read_until_closed

ADDR = "127.0.0.1"


@pytest.fixture
def make_ingest(closing, tmp_path):
    """An ingest server writing a real spool in tmp_path; `.reader` reads it back as the input process does."""
    def make(max_spool_bytes=64 << 20, segment_bytes=None, **kwargs):
        kwargs.setdefault("header_timeout_seconds", 2)
        directory = str(tmp_path / ("spool%d" % len(made)))
        spool = closing(SpoolWriter(directory, max_spool_bytes, segment_bytes))
        source = closing(HttpIngestInput(ADDR, 0, spool=spool, **kwargs))
        source.reader = closing(SpoolReader(directory, "spool:ingest", save_interval=0))
        made.append(source)
        return source
    made = []
    return make


@pytest.fixture
def raw(closing):
    return lambda port: closing(socket.create_connection((ADDR, port), timeout=5))


def post(port, body, path="/ingest", method="POST", headers=None):
    conn = http.client.HTTPConnection(ADDR, port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {"Content-Type": "application/x-ndjson"})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def lines_of(source, commit=True):
    """Every line spooled since the last call (committed, as the input process does once workers ack)."""
    lines = []
    while True:
        chunks = source.reader.poll()
        if not chunks:
            return lines
        for chunk in chunks:
            lines.extend(chunk.lines)
            if commit:
                source.reader.commit(chunk.key, chunk.end_offset)


def test_ten_thousand_lines_accepted_and_polled_in_order(make_ingest):
    source = make_ingest()
    records = [json.dumps({"message": "event %d" % i, "n": i}).encode() for i in range(10000)]
    body = b"\n".join(records[:5000]) + b"\n\n\r\n" + b"\r\n".join(records[5000:])  # no final newline
    status, headers, reply = post(source.port, body)
    assert status == 202 and json.loads(reply) == {"accepted": 10000}
    assert headers["Content-Type"] == "application/json"
    source.reader.chunk_lines = 10**6
    [chunk] = source.reader.poll()   # on disk before the 202: no waiting needed
    assert chunk.lines == records
    assert (chunk.start_offset, chunk.end_offset) == (0, len(encode_record(records)))
    assert source.reader.poll() == []
    assert source.stats["requests"] == 1 and source.stats["lines"] == 10000 and source.stats["bytes"] == len(body)


def test_root_path_and_any_content_type_are_accepted(make_ingest):
    source = make_ingest()
    status, _, reply = post(source.port, b'{"a":1}\n', path="/", headers={"Content-Type": "text/plain"})
    assert status == 202 and json.loads(reply) == {"accepted": 1}
    status, _, reply = post(source.port, b"", path="/ingest?x=1")
    assert status == 202 and json.loads(reply) == {"accepted": 0}
    assert lines_of(source) == [b'{"a":1}']


def test_big_content_length_gets_413_at_once_and_the_server_answers_the_next(make_ingest, raw):
    source = make_ingest(max_body_bytes=4096)
    sock = raw(source.port)
    started = time.monotonic()
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n" + b"x" * 1000)
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413 ") and time.monotonic() - started < 1.5
    assert b"Connection: close" in reply
    assert source.stats["rejected_413"] == 1
    status, _, _ = post(source.port, b'{"ok":true}\n')
    assert status == 202 and lines_of(source) == [b'{"ok":true}']


def test_expect_100_continue_gets_413_instead_of_an_invitation(make_ingest, raw):
    source = make_ingest(max_body_bytes=4096)
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in reply


def test_chunked_and_lengthless_bodies_are_refused(make_ingest, raw):
    source = make_ingest()
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 411 ")
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 411 ")
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n")
    assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    assert (source.stats["rejected_411"], source.stats["rejected_400"]) == (2, 1) and lines_of(source) == []


def test_wrong_method_405_and_unknown_path_404(make_ingest):
    source = make_ingest()
    status, headers, _ = post(source.port, None, method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    assert post(source.port, b"x\n", method="PUT")[0] == 405
    assert post(source.port, b"x\n", path="/admin/../ingest")[0] == 404
    assert post(source.port, None, path="/metrics", method="GET")[0] == 404
    assert post(source.port, b"x\n", path="/ingest/more")[0] == 404
    assert (source.stats["rejected_405"], source.stats["rejected_404"]) == (2, 3) and lines_of(source) == []


def test_full_spool_answers_503_then_accepts_once_the_lines_are_committed(make_ingest):
    batch = b"".join(b'{"i":%d}\n' % i for i in range(60))
    record = len(encode_record(batch.split(b"\n")[:-1]))
    refused = []
    source = make_ingest(max_spool_bytes=record + record // 2, segment_bytes=record,
                         on_refused=lambda reason, n: refused.append((reason, n)))
    assert post(source.port, batch)[0] == 202
    status, headers, _ = post(source.port, batch)
    assert status == 503 and headers["Retry-After"] == "1"
    assert source.stats["rejected_503"] == 1 and refused == [("spool_full", 60)]
    # The refused request left nothing behind; reading commits the first, which sealed its segment when
    # full, so the reader deletes it.
    assert len(lines_of(source)) == 60
    status, _, reply = post(source.port, batch)
    assert status == 202 and json.loads(reply) == {"accepted": 60}
    assert len(lines_of(source)) == 60


def test_a_request_with_more_lines_than_max_queue_lines_is_413_not_503(make_ingest):
    source = make_ingest(max_queue_lines=10)
    status, _, _ = post(source.port, b"x\n" * 11)
    assert status == 413 and source.stats["rejected_413"] == 1 and lines_of(source) == []


def test_slowloris_sockets_do_not_block_other_requests(make_ingest, raw):
    source = make_ingest(header_timeout_seconds=0.5)
    silent = [raw(source.port) for _ in range(20)]
    dribbling = raw(source.port)
    dribbling.sendall(b"POST /ingest HTTP/1.1\r\nHo")
    started = time.monotonic()
    status, _, _ = post(source.port, b'{"m":"through"}\n')
    assert status == 202 and time.monotonic() - started < 0.5
    for sock in silent + [dribbling]:  # the server hangs up on them after header_timeout_seconds
        sock.settimeout(3)  # a server that never hangs up makes recv raise a timeout here
        assert read_until_closed(sock) == b""
    assert time.monotonic() - started < 3
    assert lines_of(source) == [b'{"m":"through"}']


def test_a_client_dribbling_its_headers_is_cut_at_the_header_deadline(make_ingest, raw):
    source = make_ingest(header_timeout_seconds=0.4)
    sock = raw(source.port)
    request = b"POST /ingest HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100
    started = time.monotonic()
    cut_after = None
    for byte in request:  # one byte every 20 ms: each read is well within the socket timeout
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            cut_after = time.monotonic() - started
            break
        sock.settimeout(0.02)
        try:
            if sock.recv(1) == b"":
                cut_after = time.monotonic() - started
                break
        except socket.timeout:
            pass
    assert cut_after is not None and cut_after < 1.5
    assert source.stats["header_timeouts"] == 1


def test_connections_over_the_bound_are_refused_and_counted(make_ingest, raw):
    source = make_ingest(max_connections=3)
    idle = [raw(source.port) for _ in range(3)]
    time.sleep(0.1)
    extra = raw(source.port)
    assert read_until_closed(extra) == b""
    assert source.stats["refused"] == 1
    for sock in idle:
        sock.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # the freed places take new clients again
        try:
            if post(source.port, b"x\n")[0] == 202:
                break
        except OSError:
            time.sleep(0.05)
    assert lines_of(source) == [b"x"]


def test_control_bytes_and_invalid_utf8_pass_through_as_bytes(make_ingest):
    source = make_ingest()
    lines = [b'{"m":"nul\x00 esc\x1b[31m cr\r bell\x07"}', b"\x7f\x01\x02", b"\xff\xfe not utf-8",
             b'{"m":"u2028 \xe2\x80\xa8"}', b"not json at all"]
    status, _, reply = post(source.port, b"\n".join(lines) + b"\r\n")
    assert status == 202 and json.loads(reply) == {"accepted": 5}
    assert lines_of(source) == lines


def test_long_lines_are_truncated_and_counted(make_ingest):
    source = make_ingest(max_line_bytes=256)
    status, _, reply = post(source.port, b"a" * 1000 + b"\n" + b"b" * 10 + b"\n")
    assert status == 202 and json.loads(reply) == {"accepted": 2}
    assert lines_of(source) == [b"a" * 256, b"b" * 10]
    assert source.stats["truncated"] == 1


def test_keep_alive_connection_carries_several_requests(make_ingest):
    source = make_ingest()
    conn = http.client.HTTPConnection(ADDR, source.port, timeout=5)
    try:
        for i in range(3):
            conn.request("POST", "/ingest", body=b'{"i":%d}\n' % i)
            response = conn.getresponse()
            assert response.status == 202
            response.read()
    finally:
        conn.close()
    assert lines_of(source) == [b'{"i":0}', b'{"i":1}', b'{"i":2}']


def test_a_body_cut_short_is_a_bad_request_and_queues_nothing(make_ingest, raw):
    source = make_ingest()
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"half\":")
    sock.shutdown(socket.SHUT_WR)
    read_until_closed(sock)
    deadline = time.monotonic() + 3
    while source.stats["rejected_400"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.stats["rejected_400"] == 1 and lines_of(source) == []


def test_concurrent_posts_are_all_queued(make_ingest):
    source = make_ingest()
    results = []

    def client(n):
        results.append(post(source.port, b"".join(b'{"c":%d,"i":%d}\n' % (n, i) for i in range(100)))[0])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [202] * 8
    assert len(lines_of(source)) == 800


def test_close_stops_the_server_even_with_a_silent_client(raw, closing, tmp_path):
    source = HttpIngestInput(ADDR, 0, header_timeout_seconds=30, spool=closing(SpoolWriter(str(tmp_path), 1 << 20)))
    raw(source.port)
    time.sleep(0.05)
    thread = source._thread
    started = time.monotonic()
    source.close()
    source.close()
    assert time.monotonic() - started < 2 and not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ADDR, source.port), timeout=2).close()


def test_an_unread_body_is_never_parsed_as_the_next_request(make_ingest, raw):
    source = make_ingest()
    smuggled = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nsmuggled\n"
    sock = raw(source.port)
    sock.sendall(b"GET /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 405 ") and reply.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in reply
    assert source.stats["rejected_405"] == 1 and source.stats["requests"] == 0 and lines_of(source) == []


@pytest.mark.parametrize("headers", [
    b"Content-Length: 9\r\nContent-Length: 4\r\n",
    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 4 4\r\n",
])
def test_ambiguous_content_length_is_400_closes_and_queues_nothing(make_ingest, raw, headers):
    source = make_ingest()
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\nabc\nPOST /ingest HTTP/1.1\r\n\r\n")
    reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 400 ") and reply.count(b"HTTP/1.1 ") == 1
    assert source.stats["rejected_400"] == 1 and lines_of(source) == []


def test_a_request_cut_before_its_blank_line_is_not_handled(make_ingest, raw):
    source = make_ingest()
    sock = raw(source.port)
    sock.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n")
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == b""
    deadline = time.monotonic() + 3
    while source.stats["incomplete"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.stats["incomplete"] == 1 and source.stats["requests"] == 0


def test_a_request_whose_record_is_larger_than_the_whole_spool_is_413_not_503(make_ingest):
    """The bound is on the record (lines, their separators and the header), not on the line bytes alone:
    a request that can never fit, even in an empty spool, must not be told to retry (503) forever."""
    body = b"x\n" * 600                      # 600 line bytes, a record of 600 + 599 + header bytes
    source = make_ingest(max_spool_bytes=1000)
    status, _, _ = post(source.port, body)
    assert status == 413 and source.stats["rejected_413"] == 1 and lines_of(source) == []
    fits = b"x\n" * 400                      # a record of 811 bytes
    assert post(source.port, fits)[0] == 202 and len(lines_of(source)) == 400
