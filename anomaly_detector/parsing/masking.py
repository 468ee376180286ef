"""Which parts of a message are values: the masking configuration of the template miner.

Read by miner.TemplateMiner; the byte-level maskers themselves are numba kernels in miner_kernels.py.

Maskers (all on by default), applied per whitespace token:
  numbers   runs of digits with inner dots: 42, 0.25, 1.2.3; a "-" before the digits at the
            token's start or after punctuation is the number's sign: vCores:-1 -> vCores:<*>,
            blk_-69 -> blk_<*> (after a letter or digit it joins words: a-5, 3-4 stay apart)
  ids       runs mixing letters and digits: blk_<*> (the digits part), t761, a64f992. But a
            word of up to 5 characters with one digit after a leading letter, glued by "_" to
            a word after it, is part of a code identifier and stays: jk2_init, utf8_decode.
            Lowercase words joined by "-" and ending in a number name an instance (host, pod,
            worker), one value as a whole: msra-sa-41, mesos-slave-07, web-01, ip-10-0-1-23
            (UTF-8, MININT-X5, node-1-backup are masked run by run)
  (any)     values glued by "_", with at most one letter between them, are one compound id:
            attempt_1445_0020_m_000000_0 -> attempt_<*>, rdd_42_3 -> rdd_<*>
  hex       0x1f, and hex strings of 8+ characters even without digits (ffffffff)
  ip        IPv4 addresses (10.0.0.1, with the port kept as a separate number)
  uuid      a token holding 8-4-4-4-12 hex is a value as a whole
  path      a token starting with "/" (or a quote/bracket then "/") and holding a second "/"
            is one value (a single "/" is not a path: /10.0.0.1:80 gives /<*>:<*>)
            A URL with a path is one value after its scheme, what precedes the scheme masked
            as usual: hdfs://h:9000/logs/a -> hdfs://<*>, user@https://x/y -> user@https://<*>
            (spark://driver@10.0.0.1:7077, no path, is masked run by run)
            Both keep the token's opening brackets/quotes and trailing punctuation literal:
            "(/var/lib/x):" -> "(<*>):", "'/udev/hda1'" -> "'<*>'", "6e9e...7a]" -> "<*>]"
  duration  12ms, 3.5s, 10min
  size      5KB, 12MiB, 100bytes
  datetime  dates and times written inside messages, each one value (so no day, hour or
            minute becomes a numeric parameter): month and weekday names (Jan, Sun,);
            clock times 10:00:00[.123|,123][Z|+01:00]; dates 2026-03-02, 2026/3/2, 02.03.2026;
            ISO 2026-03-02T10:00:00.123Z and Apache's 02/Mar/2026:10:00:00 as one value; and
            a zone token (+0000, -07:00) right after one as its own value. Looked for at the
            start of a token, after "=" or after an opening bracket/quote, which stay literal
            as does punctuation after the value: "[02/Mar/2026:10:00:00 +0000]" -> "[<*> <*>]".
            Fields must be in range (month 1-12, hour 0-23, year 1900-2099) and the value must
            not run on into letters or digits, so 1.2.3, 10.0.0.1:80, 3/4, host:8080 and
            00:11:22:33:44:55 are masked run by run as before.
  extra     user regexes; a token holding a match is a value as a whole (costs a Python
            regex pass per line, so the batch path slows down when they are set)
"""
import re
from dataclasses import dataclass, field

import numpy as np

from anomaly_detector.parsing import miner_kernels as mk

_FLAG_OF = {
    "numbers": mk.F_NUMBERS, "ids": mk.F_IDS, "hex": mk.F_HEX, "ip": mk.F_IP, "uuid": mk.F_UUID,
    "path": mk.F_PATH, "duration": mk.F_DURATION, "size": mk.F_SIZE, "datetime": mk.F_DATETIME,
}
WILDCARD = "<*>"


@dataclass(frozen=True)
class MaskingConfig:
    """Switches for the built-in maskers and extra regexes (see the module docstring)."""

    numbers: bool = True
    ids: bool = True
    hex: bool = True
    ip: bool = True
    uuid: bool = True
    path: bool = True
    duration: bool = True
    size: bool = True
    datetime: bool = True
    extra: tuple = field(default_factory=tuple)

    def __post_init__(self):
        for pattern in self.extra:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"masking regex {pattern!r} does not compile: {exc}") from None

    @property
    def flags(self) -> int:
        """The maskers that are on, as the bit set the kernels take."""
        return sum(bit for name, bit in _FLAG_OF.items() if getattr(self, name))

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in _FLAG_OF}
        out["extra"] = list(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "MaskingConfig":
        known = {k: v for k, v in data.items() if k in _FLAG_OF}
        return cls(**known, extra=tuple(data.get("extra", ())))

    def force_mask(self, buf, starts, ends):
        """One flag byte per buffer byte, set where an extra regex matched; empty when none are set."""
        if not self.extra:
            return np.zeros(0, dtype=np.uint8)
        force = np.zeros(len(buf), dtype=np.uint8)
        regexes = [re.compile(p.encode()) for p in self.extra]
        data = bytes(buf)
        for s, e in zip(starts.tolist(), ends.tolist()):
            line = data[s:e]
            for rx in regexes:
                for m in rx.finditer(line):
                    if m.end() > m.start():
                        force[s + m.start():s + m.end()] = 1
        return force

    def mask(self, content: str) -> str:
        """The masked form of one message, values shown as <*> (for people and tests, not hot loops: one
        kernel call per message), as the miner's mask_line kernel gives it."""
        line = content.encode("utf-8", "surrogateescape")
        buf = np.frombuffer(line, dtype=np.uint8)
        force = self.force_mask(buf, np.array([0]), np.array([len(line)]))
        out = np.empty(len(line) + 1, dtype=np.uint8)
        masked = out[:mk.mask_line(buf, 0, len(line), self.flags, force, out)].tobytes()
        return masked.replace(bytes([mk.MARK]), WILDCARD.encode()).decode("utf-8", "surrogateescape")
