"""LineFramer (incremental, bounded) and the numba split_lines with its Python twin."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing.framing import LineFramer, split_lines
from anomaly_detector.parsing.parsing_twins import split_lines_py


def _feed_all(framer, chunks):
    out = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.flush()


def test_lf_and_crlf_and_last_line():
    f = LineFramer()
    assert f.feed(b"a\r\nb\nc") == [b"a", b"b"]
    assert f.feed(b"d\n\n") == [b"cd", b""]
    assert f.feed(b"tail") == []
    assert f.flush() == [b"tail"]
    assert f.flush() == []
    assert f.lines == 5


def test_crlf_split_across_chunks():
    assert _feed_all(LineFramer(), [b"abc\r", b"\nxyz\r", b"\n"]) == [b"abc", b"xyz"]


def test_lone_cr_is_content():
    assert _feed_all(LineFramer(), [b"a\rb\n", b"c\r"]) == [b"a\rb", b"c\r"]


def test_long_line_truncated_once_then_discarded():
    f = LineFramer(max_line_bytes=10)
    out = _feed_all(f, [b"0123456789ABCDEF", b"GHIJ", b"KL\nok\n"])
    assert out == [b"0123456789", b"ok"]
    assert f.truncated == 1 and f.skipped == 0 and f.lines == 2


def test_long_line_within_one_chunk():
    f = LineFramer(max_line_bytes=4)
    assert f.feed(b"abcdefgh\nxy\n") == [b"abcd", b"xy"]
    assert f.truncated == 1


def test_long_line_skipped():
    f = LineFramer(max_line_bytes=4, on_long_line="skip")
    assert _feed_all(f, [b"abcdefgh\nxy\nabc", b"defg"]) == [b"xy"]
    assert f.skipped == 2 and f.truncated == 0


def test_exact_limit_with_crlf_is_not_too_long():
    f = LineFramer(max_line_bytes=4)
    assert _feed_all(f, [b"abcd\r", b"\n", b"abcd\r"]) == [b"abcd", b"abcd"]
    assert f.truncated == 1  # the last one is 5 bytes of content at EOF (CR without LF)


def test_memory_bound_on_huge_line_without_newline():
    f = LineFramer(max_line_bytes=1000)
    chunk = b"x" * 65536
    emitted = []
    for _ in range(200):  # 13 MB, checked after every chunk
        emitted += f.feed(chunk)
        assert len(f._held) <= 2 * f.max_line_bytes
    emitted += f.feed(b"\nnext\n")
    assert emitted == [b"x" * 1000, b"next"]
    big = b"y" * (50 * 1024 * 1024)  # one 50 MB chunk
    assert f.feed(big) == [b"y" * 1000]
    assert len(f._held) == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        LineFramer(on_long_line="drop")
    with pytest.raises(ValueError):
        LineFramer(max_line_bytes=0)


_pieces = st.lists(st.sampled_from([b"\n", b"\r", b"\r\n", b"a", b"bc", b"\xff", b" "]), max_size=60).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_pieces, st.binary(max_size=300)), st.data())
def test_framer_reproduces_input(data, draw):
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    f = LineFramer(max_line_bytes=10_000)
    lines = _feed_all(f, chunks)
    normal = data.replace(b"\r\n", b"\n")
    if normal.endswith(b"\n"):
        normal = normal[:-1]
    assert b"\n".join(lines) == normal or (not data and lines == [])
    assert f.lines == len(lines) and f.truncated == 0
    starts, ends = split_lines(np.frombuffer(data, dtype=np.uint8))
    assert [data[s:e] for s, e in zip(starts, ends)] == lines


@settings(max_examples=200, deadline=None)
@given(st.one_of(_pieces, st.binary(max_size=300)), st.integers(1, 12), st.sampled_from(["truncate", "skip"]),
       st.data())
def test_framer_bounded_lines(data, limit, mode, draw):
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=6)))
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    f = LineFramer(max_line_bytes=limit, on_long_line=mode)
    lines = _feed_all(f, chunks)
    assert all(len(line) <= limit for line in lines)
    whole = LineFramer(max_line_bytes=limit, on_long_line=mode)
    assert _feed_all(whole, [data]) == lines  # chunking never changes the result
    assert (f.truncated, f.skipped) == (whole.truncated, whole.skipped)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_pieces, st.binary(max_size=300)))
def test_split_lines_matches_python_twin(data):
    buf = np.frombuffer(data, dtype=np.uint8)
    s1, e1 = split_lines(buf)
    s2, e2 = split_lines_py(buf)
    assert s1.dtype == np.int64 and e1.dtype == np.int64
    assert s1.tolist() == s2.tolist() and e1.tolist() == e2.tolist()


def test_split_lines_examples():
    buf = np.frombuffer(b"a\r\n\nbc\r", dtype=np.uint8)
    s, e = split_lines(buf)
    assert list(zip(s.tolist(), e.tolist())) == [(0, 1), (3, 3), (4, 7)]
    assert split_lines(np.zeros(0, dtype=np.uint8))[0].shape == (0,)
