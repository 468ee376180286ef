"""Compile (or load from the kernel cache) every numba kernel once in the supervisor, before any fork.

Workers then inherit compiled code and never compile, which avoids the cache races of several
processes compiling at once (numba #4807, #10128) and the heartbeat timeouts of a worker busy
compiling. The entry kernels carry explicit signatures (kernel_types.py): prepare_kernels compiles
exactly those, logging progress when it has to compile, and forbids other types from then on.
Warm-up then runs the workers' own code path (score_lines) over a small generated workload, with
the tiers' warm-up shortened so their judging code runs as well, followed by hostile bytes (binary,
invalid UTF-8, junk JSON, an over-long line): a call with a type no signature covers fails here,
at start, not in a worker.
"""
import copy
import logging
import os
import tempfile
import time

import numpy as np

from anomaly_detector import kernel_cache
from anomaly_detector.detection.output_kernels import record_prefix
from anomaly_detector.metrics.sketch import N_BUCKETS, record_latencies
from anomaly_detector.parsing.sources import warm_kernels as warm_source_kernels
from anomaly_detector.parsing.unclustered import warm_kernels as warm_free_text_kernels
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.worker.detector import input_parser, score_lines
from anomaly_detector.worker.outputs import scored_lines
from anomaly_detector.workload.generator import generate

log = logging.getLogger(__name__)
WARMUP_DAYS = 0.25              # six hours of event time
WARMUP_LINES_PER_DAY = 12000    # 3,000 lines per format
# The warm-up pipelines judge lines early (not the configured warmup_lines / warmup_seconds), so the
# code only warm tiers run is exercised too, on few lines.
WARMUP_DETECTION = {"warmup_lines": 500, "warmup_seconds": 1800.0}
# Volume buckets the warm-up's event time closes per source, at most: its bucket is never shorter than
# the six hours over this (60 s). Closing a bucket is Python work, and with bucket_seconds = 1 the
# 21,600 buckets of each workload made a start take a minute; the code run is the same either way.
WARMUP_MAX_BUCKETS = 360
BATCH_LINES = 500


def _workloads(directory):
    """A small plain-text and a JSON-lines workload with incidents, as bytes (plain files concatenated)."""
    data = []
    for fmt in ("plain", "jsonl"):
        out = os.path.join(directory, fmt)
        workload = generate(out, days=WARMUP_DAYS, seed=0, lines_per_day=WARMUP_LINES_PER_DAY, fmt=fmt)
        data.append(b"".join(open(path, "rb").read() for path in workload.files))
    return data


def _hostile(max_line_bytes):
    """Bytes a daemon meets on bad days: random binary, invalid UTF-8, NULs, ANSI, CRLF, JSON-ish
    junk, an over-long line. Kernels are typed on first use, and such input takes other paths."""
    rng = np.random.default_rng(0)
    lines = [b"\xff\xfe\xfd invalid utf-8 \x00\x00 nul bytes", b"\x1b[31mansi red\x1b[0m\r",
             b'{"message": "\xff\xfe", "level": 3, "timestamp": "not a time"}', b'{"message": {"nested": [1, 2]}}',
             b"{ not json at all", b"<13>Mar  2 10:00:00 host app: syslog-ish \x00", b"x" * (max_line_bytes + 100)]
    return b"\n".join(lines) + b"\n" + rng.bytes(16 * 1024) + b"\n"


def _spans(data):
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    lengths = np.array([len(line) for line in lines], np.int64)
    ends = np.cumsum(lengths)
    # writable, as a ring batch is (RingReader.pop_batch copies): numba types a read-only array apart,
    # and a kernel first met with the other kind would compile in every worker after the fork
    return np.frombuffer(bytearray(b"".join(lines)), np.uint8), ends - lengths, ends


def _run(cfg, parser, data):
    cfg = copy.deepcopy(cfg)
    cfg["detection"].update(WARMUP_DETECTION)
    tier2 = cfg["detection"].get("tier2")
    if tier2 is not None:
        tier2["bucket_seconds"] = max(float(tier2["bucket_seconds"]), WARMUP_DAYS * 86400.0 / WARMUP_MAX_BUCKETS)
    pipeline = Pipeline(cfg)
    buf, starts, ends = _spans(data)
    prefix = record_prefix("warmup")
    for first in range(0, len(starts), BATCH_LINES):
        stop = first + BATCH_LINES
        records, names, ids = score_lines(pipeline, parser, prefix, buf, starts[first:stop], ends[first:stop],
                                          first + 1, True)
        scored_lines(records, buf, starts[first:stop], ends[first:stop], names, ids)   # the scored_lines output
    pipeline.finish()


def warm_up(cfg, status=None):
    """Compile or load every kernel, then run the workers' code; returns the seconds it took.

    status(text), when given, hears compile progress (the supervisor passes it to systemd)."""
    began = time.monotonic()
    if kernel_cache.CHOSEN.get("warning"):
        log.warning("%s", kernel_cache.CHOSEN["warning"])
    kernel_cache.prepare_kernels(kernel_cache.LogProgress(status))
    record_latencies(np.zeros(N_BUCKETS, np.uint64), np.array([0.001, 0.5]))
    max_line = cfg["processing"]["max_line_bytes"]
    sections = list(cfg["inputs"].items())
    parsers = [input_parser(name, section, max_line, cfg["processing"]["max_sources"], cfg["parsing"]["inline_levels"])
               for name, section in sections]
    warm_source_kernels()
    warm_free_text_kernels()
    if not parsers:
        parsers = [Pipeline(cfg).parser_for("warmup")]
    with tempfile.TemporaryDirectory(prefix="anomaly-detector-warmup-") as directory:
        workloads = _workloads(directory)
    hostile = _hostile(max_line)
    quiet = logging.getLogger("anomaly_detector.detection")
    level = quiet.level
    quiet.setLevel(logging.ERROR)   # what the synthetic lines trip (a limit) is no news to an operator
    try:
        for parser in parsers:
            for data in workloads:
                _run(cfg, parser, data + hostile)
    finally:
        quiet.setLevel(level)
    took = time.monotonic() - began
    log.info("warm-up done in %.1f s (kernel cache %s)", took, os.environ.get("NUMBA_CACHE_DIR", "none"))
    return took
