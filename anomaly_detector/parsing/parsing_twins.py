"""Test-only plain-Python twins of the column kernels of parsing/ (tests compare each kernel with its twin).

The twins are the per-line reading of records.RecordParser and timestamps.TimestampParser, which
production also uses as the slow path for lines no kernel takes; these wrappers only give the
kernels' view of it. Nothing in production imports this module.

- timestamps.parse_stamps / infer_years: TimestampParser.parse with the learned format and year state
  (stamp_twin below).
- plain_kernels.plain_lines: plain_lines_py; json_kernels.json_lines: json_lines_py.
"""


def plain_lines_py(parser, texts):
    """What RecordParser._parse_plain gives for each text (ts, level, content), before carrying times."""
    return [parser._parse_plain(text) for text in texts]


def json_lines_py(parser, texts):
    """What RecordParser._parse_json gives for each text, before carrying times."""
    return [parser._parse_json(text) for text in texts]


def stamp_twin(stamps, text):
    """(ts or None, garbage) of one stamp text as TimestampParser reads it with its learned state."""
    before = stamps.garbage
    ts = stamps.parse(text)
    return ts, stamps.garbage > before
