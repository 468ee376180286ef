"""StdinInput over a real pipe: non-blocking polls, partial lines, EOF, long lines, the chunk shape."""
import os
import time

import pytest

from anomaly_detector.inputs.stdin import STDIN_KEY, StdinInput


@pytest.fixture
def pipe():
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    writer = os.fdopen(write_fd, "wb", buffering=0)
    yield reader, writer
    reader.close()
    if not writer.closed:
        writer.close()


def _lines(chunks):
    return [line for chunk in chunks for line in chunk.lines]


def test_poll_does_not_block_on_an_idle_pipe(pipe):
    reader, _ = pipe
    source = StdinInput(reader)
    started = time.monotonic()
    assert source.poll() == []
    assert time.monotonic() - started < 0.5
    assert not source.eof


def test_lines_partial_line_and_eof(pipe):
    reader, writer = pipe
    source = StdinInput(reader)
    writer.write(b"one\r\ntwo\nthr")
    [chunk] = source.poll()
    assert (chunk.key, chunk.path, chunk.lines) == (STDIN_KEY, "-", [b"one", b"two"])
    assert (chunk.start_offset, chunk.end_offset) == (0, 9)
    assert chunk.stream_id == STDIN_KEY
    writer.write(b"ee\nlast without newline")
    assert _lines(source.poll()) == [b"three"]
    writer.close()
    [chunk] = source.poll()
    assert chunk.lines == [b"last without newline"] and source.eof
    assert chunk.end_offset == len(b"one\r\ntwo\nthree\nlast without newline")
    assert source.poll() == []
    assert source.commit(STDIN_KEY, chunk.end_offset) and source.committed == chunk.end_offset


def test_long_line_truncated_and_reading_bounded_per_poll(pipe):
    reader, writer = pipe
    source = StdinInput(reader, max_line_bytes=1000, max_bytes_per_poll=4096, read_block_bytes=1024)
    writer.write(b"x" * 50_000 + b"\nafter\n")      # fits in the pipe buffer (64 KiB)
    writer.close()
    got = []
    polls = 0
    while not source.eof and polls < 1000:
        got += _lines(source.poll())
        polls += 1
    assert got == [b"x" * 1000, b"after"]
    assert polls >= 50_000 // 4096
    assert source.stats["long_lines"] == 1


def test_skip_policy_drops_the_long_line(pipe):
    reader, writer = pipe
    source = StdinInput(reader, max_line_bytes=10, on_long_line="skip")
    writer.write(b"short\n" + b"y" * 100 + b"\nok\n")
    writer.close()
    got = []
    for _ in range(100):
        got += _lines(source.poll())
    assert source.eof
    assert got == [b"short", b"ok"] and source.stats["long_lines"] == 1


def test_hostile_bytes_pass_through(pipe):
    reader, writer = pipe
    source = StdinInput(reader)
    writer.write(b"\xff\xfe\x00nul\x1b[31m\n")
    assert _lines(source.poll()) == [b"\xff\xfe\x00nul\x1b[31m"]


def test_closed_descriptor_is_reported_as_eof_not_a_crash():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    os.close(write_fd)

    class ClosedStdin:
        def fileno(self):
            return read_fd                       # what a service started with stdin closed hands over

    source = StdinInput(ClosedStdin())
    assert source.poll() == []
    assert source.eof and source.stats["read_errors"] == 1
