"""FileTailer against hostile bytes: invalid UTF-8, NULs, ANSI, CRLF, a 10 MB line, binary files (catalogue 19-21)."""
import os
import random
import tracemalloc

import psutil
import pytest
from test_file_tail_harness import commit_all, new_tailer

MAX_LINE = 100 * 1024
PER_POLL = 1 << 20


def _poll_all(tailer, rounds=60):
    """Poll a fixed number of times: a poll that only consumed part of a long line returns nothing."""
    lines = []
    for _ in range(rounds):
        chunks = tailer.poll()
        commit_all(tailer, chunks)
        lines += [line for chunk in chunks for line in chunk.lines]
    return lines


def test_catalogue_19_invalid_utf8_nul_ansi_crlf_all_delivered_byte_exact(tmp_path):
    rng = random.Random(19)
    expected = []
    for i in range(100_000):
        body = b"line %06d ok" % i
        if rng.random() < 0.01:
            body += b" bad \xff\xfe\xc3( utf-8"
        if rng.random() < 0.01:
            body += b" nul \x00\x00 inside"
        if rng.random() < 0.01:
            body += b" \x1b[31mred\x1b[0m \xe2\x80\xa8"
        expected.append(body)
    with open(tmp_path / "hostile.log", "wb") as f:
        for i, body in enumerate(expected):
            f.write(body + (b"\r\n" if i % 7 == 0 else b"\n"))
    tailer = new_tailer(str(tmp_path / "hostile.log"), tmp_path / "cp")
    got = _poll_all(tailer)
    assert got == expected
    assert tailer.stats["lines"] == 100_000 and tailer.stats["long_lines"] == 0
    tailer.close()


def _ten_megabyte_line_then_normal(path):
    with open(path, "wb") as f:
        f.write(b"before\n")
        f.write(b"A" * (10 * 1024 * 1024))
        f.write(b"\nafter 1\nafter 2\n")


@pytest.mark.parametrize("policy", ["truncate", "skip"])
def test_catalogue_20_ten_megabyte_line_is_capped_next_line_delivered_memory_bounded(tmp_path, policy):
    log = tmp_path / "huge.log"
    _ten_megabyte_line_then_normal(log)
    tailer = new_tailer(str(log), tmp_path / "cp", max_line_bytes=MAX_LINE, on_long_line=policy,
                        max_bytes_per_poll=PER_POLL)
    tracemalloc.start()
    try:
        got = _poll_all(tailer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    head = [b"A" * MAX_LINE] if policy == "truncate" else []
    assert got == [b"before"] + head + [b"after 1", b"after 2"]
    assert tailer.stats["long_lines"] == 1
    # one poll's reads plus the framer's held line (<= max_line_bytes + 2) plus that line emitted
    assert peak < PER_POLL + 2 * MAX_LINE + 256 * 1024, peak
    tailer.close()


def test_file_without_newline_holds_at_most_one_line_and_never_commits_past_it(tmp_path):
    log = tmp_path / "endless.log"
    with open(log, "wb") as f:
        for _ in range(30):
            f.write(b"z" * (1 << 20))
    tailer = new_tailer(str(log), tmp_path / "cp", max_line_bytes=MAX_LINE, max_bytes_per_poll=PER_POLL)
    tracemalloc.start()
    try:
        got = []
        for _ in range(40):
            chunks = tailer.poll()
            commit_all(tailer, chunks)
            got += [line for chunk in chunks for line in chunk.lines]
            assert all(chunk.end_offset == 0 for chunk in chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [b"z" * MAX_LINE]
    assert peak < PER_POLL + 2 * MAX_LINE + 256 * 1024, peak
    tailer.close()


def test_catalogue_21_binary_file_matched_by_glob_no_crash_memory_bounded(tmp_path):
    with open(tmp_path / "core.bin.log", "wb") as f:
        f.write(os.urandom(24 << 20))
    with open(tmp_path / "app.log", "wb") as f:
        f.write(b"normal line\n")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    tailer = new_tailer(str(tmp_path / "*.log"), tmp_path / "cp", max_line_bytes=MAX_LINE)
    got = _poll_all(tailer)
    rss_growth = process.memory_info().rss - rss_before
    assert b"normal line" in got
    assert all(len(line) <= MAX_LINE for line in got)
    assert tailer.stats["bytes"] == (24 << 20) + 12
    assert rss_growth < 50 << 20, rss_growth
    tailer.close()
