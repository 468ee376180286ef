"""Test-only plain-Python twins of the column kernels of parsing/ (tests compare each kernel with its twin).

The twins are the per-line reading of records.RecordParser and timestamps.TimestampParser, which
production also uses as the slow path for lines no kernel takes; these wrappers only give the
kernels' view of it. Nothing in production imports this module.

- timestamps.parse_stamps / infer_years: TimestampParser.parse with the learned format and year state
  (stamp_twin below).
- plain_kernels.plain_lines: plain_lines_py; plain_kernels.syslog_lines (with infer_years):
  syslog_lines_py; json_kernels.json_lines: json_lines_py.
- framing.split_lines: split_lines_py; sanitize.clean_buffer: clean_buffer_py.
"""
import numpy as np

from anomaly_detector.parsing.sanitize import clean_text


def plain_lines_py(parser, texts):
    """What RecordParser._parse_plain gives for each text (ts, level, content), before carrying times."""
    return [parser._parse_plain(text) for text in texts]


def syslog_lines_py(parser, texts):
    """What RecordParser._parse_plain gives for each text in order (the year of a year-less stamp
    depends on the ones before), before carrying times."""
    return [parser._parse_plain(text) for text in texts]


def json_lines_py(parser, texts):
    """What RecordParser._parse_json gives for each text, before carrying times."""
    return [parser._parse_json(text) for text in texts]


def stamp_twin(stamps, text):
    """(ts or None, garbage) of one stamp text as TimestampParser reads it with its learned state."""
    before = stamps.garbage
    ts = stamps.parse(text)
    return ts, stamps.garbage > before


def split_lines_py(buf):
    """Plain-Python twin of split_lines."""
    data = bytes(buf)
    starts, ends = [], []
    pos = 0
    pieces = data.split(b"\n")
    for idx, piece in enumerate(pieces):
        last = idx == len(pieces) - 1
        if last and not piece:
            break
        end = pos + len(piece)
        if not last and piece.endswith(b"\r"):
            end -= 1
        starts.append(pos)
        ends.append(end)
        pos += len(piece) + 1
    return np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


def clean_buffer_py(buf):
    """Plain-Python twin of clean_buffer (the reference in tests)."""
    data = bytes(buf)
    lines = data.split(b"\n")
    parts = []
    for idx, line in enumerate(lines):
        crlf = idx < len(lines) - 1 and line.endswith(b"\r")
        body = line[:-1] if crlf else line
        parts.append(clean_text(body).encode("utf-8") + (b"\r" if crlf else b""))
    return np.frombuffer(b"\n".join(parts), dtype=np.uint8).copy()
