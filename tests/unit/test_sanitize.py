"""clean_text and its numba batch twin clean_buffer."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing.parsing_twins import clean_buffer_py
from anomaly_detector.parsing.sanitize import clean_buffer, clean_text


def test_valid_text_passes_through():
    assert clean_text("héllo wörld\tok".encode()) == "héllo wörld\tok"


def test_invalid_utf8_becomes_replacement():
    assert clean_text(b"a\xffb") == "a\ufffdb"
    assert clean_text(b"\xe2\x82") == "\ufffd"          # truncated sequence: one replacement
    assert clean_text(b"\xed\xa0\x80") == "\ufffd" * 3  # encoded surrogate is invalid


def test_control_characters_replaced_except_tab():
    assert clean_text(b"a\x00b\x1bc\x7fd\te\rf\ng") == "a\ufffdb\ufffdc\ufffdd\te\ufffdf\ufffdg"
    for c in range(32):
        expect = "\t" if c == 9 else "\ufffd"
        assert clean_text(bytes([c])) == expect


def test_clean_text_never_raises_on_odd_input():
    assert isinstance(clean_text(None), str)
    assert clean_text("already\x00text") == "already\ufffdtext"
    assert clean_text(bytearray(b"x\x00")) == "x\ufffd"
    assert clean_text(memoryview(b"ok")) == "ok"


def _arr(data):
    return np.frombuffer(data, dtype=np.uint8)


def test_clean_buffer_keeps_line_terminators():
    data = b"one\r\ntw\x00o\nthree\rx\n\xff"
    got = clean_buffer(_arr(data)).tobytes()
    assert got == "one\r\ntw\ufffdo\nthree\ufffdx\n\ufffd".encode()
    assert got == clean_buffer_py(_arr(data)).tobytes()


def test_clean_buffer_empty():
    assert clean_buffer(_arr(b"")).shape == (0,)   # read-only, as declared: no second compile of the kernel


_interesting = st.sampled_from([b"\n", b"\r", b"\r\n", b"\x00", b"\x7f", b"\t", b"\xc3\xa9", b"\xe2\x82\xac",
                                b"\xf0\x9f\x98\x80", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                b"\xc0\xaf", b"\xf0\x9f", b"a", b" "])
_mixed = st.lists(st.one_of(st.binary(max_size=6), _interesting), max_size=40).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(_mixed)
def test_clean_buffer_equals_clean_text_per_line(data):
    got = clean_buffer(_arr(data)).tobytes()
    assert got == clean_buffer_py(_arr(data)).tobytes()
    got.decode("utf-8")  # always valid UTF-8


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_clean_text_output_is_safe(data):
    text = clean_text(data)
    assert all(ch == "\t" or (ord(ch) >= 32 and ord(ch) != 127) for ch in text)
    if b"\n" not in data and b"\r" not in data:
        assert clean_buffer(_arr(data)).tobytes() == text.encode("utf-8")


def test_clean_buffer_every_byte_value_as_its_twin():
    # the plain-ASCII fast path must hand back the buffer itself exactly when no byte needs replacing
    for b in range(256):
        raw = _arr(b"ab" + bytes([b]) + b"cd\n")
        got = clean_buffer(raw)
        assert got.tobytes() == clean_buffer_py(raw).tobytes(), b
        assert np.shares_memory(got, raw) == (32 <= b < 127 or b in (9, 10)), b
