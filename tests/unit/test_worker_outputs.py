"""scored_lines (the worker's scored-lines kernel) against its plain-Python twin with_message_and_source."""
import json

import numpy as np

from anomaly_detector.worker.outputs import scored_lines, with_message_and_source

# Pieces that exercise every escape and every UTF-8 rule of the strict decoder: quotes, backslashes,
# control characters, DEL, 2-4 byte characters, and invalid bytes (lone continuation, cut sequences,
# overlongs, surrogates, code points past U+10FFFF).
PIECES = [b"a", b"Z", b" ", b'"', b"\\", b"\x00", b"\x01", b"\x1f", b"\t", b"\r", b"\x08", b"\x0c", b"\x7f", b"/",
          "é".encode(), "€".encode(), "😀".encode(), b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80",
          b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xf0\x9f\x98", b"\x80", b"\xe0\x80\x80", b"\xf5\x80\x80\x80"]


def _spans(lines):
    lengths = np.array([len(line) for line in lines], np.int64)
    ends = np.cumsum(lengths)
    # writable, as a ring batch is and as the kernel is declared: another kind would compile it again here
    return np.frombuffer(bytearray(b"".join(lines) or b" "), np.uint8), ends - lengths, ends


def _records(n):
    return b"".join(b'{"file": "x", "line": %d, "reasons": []}\n' % i for i in range(n))


def test_kernel_equals_twin_on_random_hostile_lines():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        lines = [b"".join(PIECES[k] for k in rng.integers(0, len(PIECES), int(rng.integers(0, 30)))) for _ in range(n)]
        names = ["bench", 'we"ird', "ünï"][: int(rng.integers(1, 4))]
        ids = rng.integers(0, len(names), n)
        buf, starts, ends = _spans(lines)
        want = with_message_and_source(_records(n), [line.decode("utf-8", "replace") for line in lines],
                                       [names[k] for k in ids])
        assert scored_lines(_records(n), buf, starts, ends, names, ids) == want


def test_lines_as_spans_of_a_larger_buffer_and_valid_json():
    data = b'xx{"a": 1}\xff\xfeyy\tz"w\\v'
    starts, ends = np.array([2, 10, 15]), np.array([10, 12, 20])
    out = scored_lines(_records(3), np.frombuffer(bytearray(data), np.uint8), starts, ends, ["s"], np.zeros(3, np.int64))
    rows = [json.loads(line) for line in out.decode("utf-8").splitlines()]
    assert [r["message"] for r in rows] == ['{"a": 1}', "\ufffd\ufffd", 'z"w\\v']
    assert [r["source"] for r in rows] == ["s", "s", "s"] and [r["line"] for r in rows] == [0, 1, 2]
