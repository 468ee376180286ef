"""Every parser a line meets in a worker costs time linear in the line, on the worst shapes we know.

A super-linear parser lets one line stall a worker past its heartbeat: it is killed, and its
successor meets the same line again. This test times each parser on adversarial lines at 4 KB and
64 KB (deep nesting, escaped quotes, runs of separators, long tokens, binary junk, behind JSON,
syslog and header prefixes). It counts this process's CPU time, not the wall clock: on a shared machine
a busy neighbour stretches wall time, not the work a parser does. The bounds are still wide and robust:
the best of a few runs, time per KB at 64 KB within MAX_GROWTH of time per KB at 4 KB (a quadratic
parser shows 16x), and an absolute cap of CAP_MS_PER_KB. The old jsonl._too_deep failed both.
"""
import time

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.output_kernels import record_prefix
from anomaly_detector.parsing.framing import LineFramer, split_lines
from anomaly_detector.parsing.headers import HeaderFormat
from anomaly_detector.parsing.jsonl import parse_json_line_reason
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.parsing.records import RecordParser, parse_columns
from anomaly_detector.parsing.sanitize import clean_buffer, clean_text
from anomaly_detector.parsing.syslog import parse_syslog
from anomaly_detector.parsing.timestamps import TimestampParser
from anomaly_detector.pipeline import Pipeline

SMALL, LARGE = 4096, 65536
REPEATS = 3
MAX_GROWTH = 4.0          # per-KB cost may grow this much from 4 KB to 64 KB (quadratic: 16x)
CAP_MS_PER_KB = 50.0      # and never exceed this, whatever the shape
NOISE_FLOOR_SECONDS = 0.02  # a 64 KB run faster than this is linear enough; its ratio is noise
LOG_FORMAT = "<Date> <Time> <Level> <Component>: <Content>"

PREFIXES = ["", '{"message":', '{"message":"', "[" * 80, '{"a":' + "[" * 80 + '"', '{"m":' + "{" * 70,
            "<13>Jan  1 00:00:00 host app[1]: ", '<13>1 2024-01-01T00:00:00Z h a 1 m [x y="',
            "<13>1 - - - - - [a", "2024-01-01 12:00:00,123 ERROR comp: ", "Jan  1 00:00:00 ",
            "1700000000.123 "]
ALPHABET = '[]{}"\\:=,;| x0aZ.-/<>\t@%'


def _text(line):
    return line.decode("utf-8", "replace")


def _columns(fmt, log_format=""):
    parser = RecordParser(format=fmt, log_format=log_format, source="cost", max_line_bytes=1 << 20)
    return lambda line: parse_columns(parser, line + b"\n")


def _miner(line):
    buf = np.frombuffer(line, np.uint8)
    TemplateMiner().add_batch(buf, np.zeros(1, np.int64), np.array([len(line)], np.int64))


def _pipeline():
    pipeline, prefix = Pipeline(default_config()), record_prefix("cost")
    parser = RecordParser(format="auto", source="cost", max_line_bytes=1 << 20)
    count = [0]

    def score(line):
        # A new word each call: the miner meets a new line each time, not its shape cache.
        count[0] += 1
        word = "".join(chr(97 + int(d)) for d in str(count[0])).encode()
        pipeline.score_columns(parse_columns(parser, word + b" " + line + b"\n"), prefix, 1)
    return score


def _parsers():
    header = HeaderFormat(LOG_FORMAT)
    slow = RecordParser(format="auto", source="cost", max_line_bytes=1 << 20)
    return {
        "framing.LineFramer": lambda line: LineFramer(max_line_bytes=1 << 20).feed(line + b"\n"),
        "framing.split_lines": lambda line: split_lines(np.frombuffer(line + b"\n", np.uint8)),
        "sanitize.clean_text": clean_text,
        "sanitize.clean_buffer": lambda line: clean_buffer(np.frombuffer(line, np.uint8)),
        "timestamps.parse_prefix": lambda line: TimestampParser().parse_prefix(_text(line)),
        "timestamps.parse": lambda line: TimestampParser().parse(_text(line)),
        "syslog.parse_syslog": lambda line: parse_syslog(_text(line)),
        "jsonl.parse_json_line_reason": lambda line: parse_json_line_reason(_text(line)),
        "headers.match": lambda line: header.match(_text(line)),
        "records.parse (auto)": lambda line: slow.parse(line),
        "parse_columns auto": _columns("auto"),
        "parse_columns plain": _columns("plain"),
        "parse_columns jsonl": _columns("jsonl"),
        "parse_columns syslog": _columns("syslog"),
        "parse_columns log_format": _columns("plain", LOG_FORMAT),
        # (MaskingConfig.mask, the Python twin of the masking kernel, is for people and tests: no
        # worker calls it; the miner's masking is timed through miner.add_batch)
        "miner.add_batch": _miner,
        "pipeline (tiers, tier1 levels)": _pipeline(),
    }


PARSERS = _parsers()


def _shaped(prefix, unit, size):
    """prefix + unit repeated, exactly size bytes, no newline (a line as the framer hands it on)."""
    head = prefix.encode()
    body = (unit * (size // max(1, len(unit)) + 1))[: max(0, size - len(head))]
    return (head + body)[:size].replace(b"\n", b" ")


def _best(parse, line):
    best = float("inf")
    for _ in range(REPEATS):
        began = time.process_time()
        parse(line)
        best = min(best, time.process_time() - began)
        if best > CAP_MS_PER_KB * len(line) / 1024 / 1000:
            break  # already over the cap: one slow run is enough to fail, and the old bug took 20 s
    return best


def assert_linear(prefix, unit):
    small, large = _shaped(prefix, unit, SMALL), _shaped(prefix, unit, LARGE)
    for name, parse in PARSERS.items():
        t_small, t_large = _best(parse, small), _best(parse, large)
        per_kb_small, per_kb_large = t_small * 1024 / SMALL, t_large * 1024 / LARGE
        shape = f"{name} on {prefix[:24]!r} + {unit[:12]!r}*: {t_small * 1e3:.2f} ms at 4 KB, " \
                f"{t_large * 1e3:.2f} ms at 64 KB"
        assert per_kb_large * 1e3 <= CAP_MS_PER_KB, f"over {CAP_MS_PER_KB} ms per KB: {shape}"
        if t_large > NOISE_FLOOR_SECONDS:
            assert per_kb_large <= MAX_GROWTH * per_kb_small, f"super-linear: {shape}"


units = st.one_of(st.text(alphabet=ALPHABET, min_size=1, max_size=6).map(str.encode),
                  st.binary(min_size=1, max_size=6))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), unit=units)
@example(prefix='{"a":' + "[" * 80 + '"', unit=b'\\"')      # the line that stalled workers
@example(prefix="[" * 80, unit=b'"\\')
@example(prefix='{"m":', unit=b"[")
@example(prefix='<13>1 - - - - - [a', unit=b' b="\\"')
@example(prefix="", unit=b"a=")
@example(prefix="", unit=b"x")
@example(prefix="", unit=bytes(range(256)))
@example(prefix="2024-01-01 12:00:00,123 ERROR comp: ", unit=b"2024-01-01T")
def test_every_parser_costs_linear_time_per_kb(prefix, unit):
    assert_linear(prefix, unit)
