"""Recognise a known header format on an input's first lines when none is configured.

Lines of many systems (HDFS, Hadoop, Spark, ZooKeeper, OpenStack, Apache, Android, BGL, Windows)
do not begin with a time stamp and a level that the plain parser reads, so without a log_format
their level is lost (a FATAL line looks like any other) and their header is mined into every
template. records.RecordParser offers its first lines to a HeaderSniffer; when one of the formats
below fits nearly all of them with a real level word in its Level field, that format becomes the
parser's log_format from then on. Lines whose plain parse already finds a level are left alone,
so a configured or plain `<stamp> <LEVEL> text` input never changes.
"""
import logging

import numpy as np

from anomaly_detector.parsing.batch import LEVEL_UNKNOWN, level_code
from anomaly_detector.parsing.headers import LOGHUB_FORMATS, HeaderFormat
from anomaly_detector.parsing.timestamps import TimestampParser

log = logging.getLogger(__name__)

# Lines judged before deciding, and how many are enough to decide early (more lines of a batch are
# not looked at: a first batch of SNIFF_LINES_PER_BATCH lines decides).
SAMPLE_LINES = 200
MIN_LINES = 50
SNIFF_LINES_PER_BATCH = SAMPLE_LINES * 5
# A format must fit this share of the sampled lines, each with a level word in its Level field.
MIN_FIT_SHARE = 0.9
# Below this share of lines with a level found by the plain parser, a header format is looked for.
PLAIN_LEVEL_SHARE = 0.5

_compiled = None


def candidates():
    """(name, HeaderFormat) of every known format with a Level field, the most fields first."""
    global _compiled
    if _compiled is None:
        formats = [(name, HeaderFormat(fmt)) for name, fmt in LOGHUB_FORMATS.items()]
        _compiled = sorted(((n, h) for n, h in formats if h.level_index >= 0), key=lambda nh: -len(nh[1].fields))
    return _compiled


def fit_shares(header, texts, need=0.0):
    """(share of texts that fit `header` with a known level word in its Level field, share whose
    header fields also give a time stamp).

    Once more than 1 - need of the texts cannot fit, it stops and returns shares below `need`
    (a format that cannot reach MIN_FIT_SHARE needs no more reading). Lines are split by the header
    kernel where it can (its fields equal the regex's there), else by the regex, which can take
    milliseconds on a long line that does not have the format's shape.
    """
    if not texts:
        return 0.0, 0.0
    level = header.fields[header.level_index]
    stamps = TimestampParser()
    ok, fields_of = _kernel_fields(header, texts)
    allowed = len(texts) * (1.0 - need)
    if sum(level_code(fields_of(i)[level]) == LEVEL_UNKNOWN for i in np.flatnonzero(ok).tolist()) > allowed:
        return 0.0, 0.0  # the kernel's lines alone miss too often: the regex need not run at all
    fits = stamped = misses = 0
    for i, text in enumerate(texts):
        fields = fields_of(i) if ok[i] else header.match(text)
        if fields is not None and level_code(fields[level]) != LEVEL_UNKNOWN:
            fits += 1
            stamped += stamps.from_fields(fields) is not None
        else:
            misses += 1
            if misses > allowed:
                break
    return fits / len(texts), stamped / len(texts)


def _kernel_fields(header, texts):
    """(ok per text, i -> {field: value}) from the header kernel (HeaderFormat.split_batch)."""
    encoded = [t.strip().encode("utf-8", "surrogatepass") for t in texts]  # match() strips too
    data = b"\n".join(encoded)
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])).astype(np.int64)
    ok, fs, fe = header.split_batch(np.frombuffer(data, dtype=np.uint8), starts, starts + lengths)

    def fields_of(i):
        return {name: data[fs[i, j]:fe[i, j]].decode("utf-8", "surrogatepass") for j, name in enumerate(header.fields)}

    return ok, fields_of


def best_format(texts):
    """(name, log_format) of the known format that fits `texts` best, or None when none fits enough.

    Between formats that fit alike (HDFS lines also fit the syslog-like Linux format, the digits of
    their date taken for a month), the one whose fields give time stamps wins, then the longer one.
    """
    best = None
    for name, header in candidates():
        fit, stamped = fit_shares(header, texts, MIN_FIT_SHARE)
        rank = (fit, stamped, len(header.fields))
        if fit >= MIN_FIT_SHARE and (best is None or rank > best[0]):
            best = (rank, name, header.format)
    return None if best is None else best[1:]


class HeaderSniffer:
    """Collects an input's first lines and decides once: a log_format, or none."""

    def __init__(self, source, has_level):
        self.source = source
        self.has_level = has_level      # text -> True when the plain parser finds a level in it
        self.texts = []
        self.seen = 0

    def offer(self, texts):
        """Take some lines (decoded text); returns None while undecided, then '' or the format found."""
        self.seen += len(texts)
        self.texts.extend(t for t in texts[:SAMPLE_LINES - len(self.texts)] if t.strip())
        if len(self.texts) < MIN_LINES and self.seen < SNIFF_LINES_PER_BATCH:
            return None
        return self._decide()

    def _decide(self):
        texts, self.texts = self.texts, []
        if not texts or sum(map(self.has_level, texts)) >= PLAIN_LEVEL_SHARE * len(texts):
            return ""
        found = best_format(texts)
        if found is None:
            return ""
        name, fmt = found
        log.info("input %s: its lines fit the %s header format %r: reading them with it (set log_format "
                 "to choose another, or to '<Content>' to read whole lines)", self.source, name, fmt)
        return fmt
