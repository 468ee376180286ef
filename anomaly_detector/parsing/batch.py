"""The hand-off between parsing and detection: one batch of parsed lines as numpy arrays.

Parsing fills it; detection tiers read it. Per-line Python objects stay out of the hot path:
text is kept as one byte buffer with offsets, parameters as a CSR layout (param_ptr).
"""
from dataclasses import dataclass, field

import numpy as np

# Severity codes shared by every stage (syslog-like order, higher is worse).
LEVEL_UNKNOWN, LEVEL_DEBUG, LEVEL_INFO, LEVEL_NOTICE, LEVEL_WARNING, LEVEL_ERROR, LEVEL_CRITICAL = range(7)
LEVEL_NAMES = ("", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL")
LEVEL_ALIASES = {
    "TRACE": LEVEL_DEBUG, "DEBUG": LEVEL_DEBUG, "DBG": LEVEL_DEBUG, "D": LEVEL_DEBUG, "V": LEVEL_DEBUG,
    "INFO": LEVEL_INFO, "INFORMATION": LEVEL_INFO, "I": LEVEL_INFO, "NOTICE": LEVEL_NOTICE,
    "WARN": LEVEL_WARNING, "WARNING": LEVEL_WARNING, "W": LEVEL_WARNING,
    "ERROR": LEVEL_ERROR, "ERR": LEVEL_ERROR, "E": LEVEL_ERROR, "SEVERE": LEVEL_ERROR,
    "CRITICAL": LEVEL_CRITICAL, "CRIT": LEVEL_CRITICAL, "FATAL": LEVEL_CRITICAL, "F": LEVEL_CRITICAL,
    "EMERG": LEVEL_CRITICAL, "EMERGENCY": LEVEL_CRITICAL, "ALERT": LEVEL_CRITICAL, "PANIC": LEVEL_CRITICAL,
    "FAILURE": LEVEL_CRITICAL,   # supercomputer RAS logs (BGL): a hardware or job failure
}


def level_code(name):
    """Map a level word from a log header ('WARN', 'err', 'F') to a LEVEL_* code."""
    if not name:
        return LEVEL_UNKNOWN
    return LEVEL_ALIASES.get(name.strip().upper(), LEVEL_UNKNOWN)


@dataclass
class ParsedBatch:
    """n parsed lines. Arrays of length n unless said otherwise; m = total parameters.

    ts            float64  event time, epoch seconds (NaN when the line had none and none was inferred)
    source_id     int32    index into `sources`
    level         int8     LEVEL_* code
    template_id   int32    stable id from the template miner
    buf           uint8    all contents concatenated (UTF-8, sanitised)
    content_start int64    offset of each line's content in buf
    content_end   int64
    param_ptr     int64[n+1]  params of line i are [param_ptr[i], param_ptr[i+1])
    param_pos     int16[m]    which <*> of the template the value fills (0-based)
    param_hash    uint64[m]   hash of the value's bytes (categorical tracking)
    param_num     float64[m]  numeric value when the token is a number (units stripped), else NaN
    param_start   int64[m]    offset of each value in buf (None when not kept; explanations only)
    param_end     int64[m]
    host_id       int32    index into `hosts`, -1 where the line named no host (None: no line did)
    """

    ts: np.ndarray
    source_id: np.ndarray
    level: np.ndarray
    template_id: np.ndarray
    buf: np.ndarray
    content_start: np.ndarray
    content_end: np.ndarray
    param_ptr: np.ndarray
    param_pos: np.ndarray
    param_hash: np.ndarray
    param_num: np.ndarray
    sources: list = field(default_factory=list)
    param_start: np.ndarray = None
    param_end: np.ndarray = None
    host_id: np.ndarray = None
    hosts: list = field(default_factory=list)

    @property
    def n(self):
        return len(self.template_id)

    def content(self, i):
        """The text of line i (for samples and explanations; not for hot loops)."""
        return bytes(self.buf[self.content_start[i]:self.content_end[i]]).decode("utf-8", "replace")
