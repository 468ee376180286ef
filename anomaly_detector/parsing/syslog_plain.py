"""Classic syslog file lines (`Mar  5 00:00:02 web-1 nginx[12]: ...`, no year) read as columns, in runs.

columns.parse_columns hands plain/auto buffers without a header format here; plain_kernels.syslog_lines
reads each line's stamp (month, day, time), level and content span, and timestamps.infer_years gives
the years in line order from the parser's year state, as TimestampParser._infer_year would. Neighbours:
plain_kernels (the kernel), timestamps (year inference, state), columns (the caller, _PlainLines for ISO).
"""
import numpy as np

from anomaly_detector.parsing import plain_kernels as pk
from anomaly_detector.parsing.timestamps import infer_years

FORMAT = "syslog"  # the TimestampParser format whose regex the kernel's stamp is a strict subset of


def run_end(bad, garbage_rows, stamps, i):
    """End of the kernel's run of lines from i: the next line it did not take (bad, sorted, ending
    with n) or, before any stamp format is learned, the next garbage stamp (Python decides those)."""
    j = int(bad[np.searchsorted(bad, i)])
    if stamps.learned_format is None:
        g = garbage_rows[np.searchsorted(garbage_rows, i):]
        if len(g) and g[0] < j:
            j = int(g[0])
    return j


def put_run(parser, out, i, j, ts, level, cstart, ts_arr, level_arr, ends):
    """Write a kernel's run of lines i..j (their stamps ts, levels, content starts) into the columns;
    the lines are the input's own source."""
    ts_arr[i:j] = parser.carry_column(ts)
    level_arr[i:j] = level
    out.start[i:j] = cstart
    out.end[i:j] = ends[i:j]
    out.source(i, parser.source)
    out.source_id[i:j] = out.source_id[i]


class SyslogPlainLines:
    """Lines of a buffer that plain_kernels.syslog_lines took, handed out in runs.

    Used only while the parser's learned stamp format is the year-less syslog one (or none yet) and
    no strptime override is set: then parse_prefix reads a stamp of the kernel's shape with that
    format and nothing else (no other format matches a text that starts with a month name and a
    day followed by a time). Garbage stamps (the shape, impossible values) are taken only once the
    format is learned: before, Python decides. A date that does not exist in the inferred year
    (Feb 29 of a common year) ends a run: Python reads it, moving the year state as it does. After
    each run the parser's state (learned format, year, last month, last time, counters) is what
    parse() leaves after those lines.
    """

    _TABLES = None

    @classmethod
    def for_buffer(cls, parser, clean, starts, ends):
        """The kernel's reading of a buffer, or None when no line has the shape or it cannot apply."""
        stamps = parser.timestamps
        if parser.format not in ("plain", "auto") or stamps.strptime or stamps.learned_format not in (None, FORMAT):
            return None
        if cls._TABLES is None:
            cls._TABLES = pk.syslog_kernel_args()
        got = pk.syslog_lines(clean, starts, ends, *cls._TABLES)
        return cls(parser, *got) if got[0].any() else None

    def __init__(self, parser, ok, garbage, month, day, hour, sod, fnum, fdig, level, cstart):
        self.parser, self.ok, self.garbage = parser, ok, garbage
        self.valid = ok & ~garbage
        self.month, self.day, self.hour, self.sod, self.fnum, self.fdig = month, day, hour, sod, fnum, fdig
        self.level, self.cstart = level, cstart
        self._bad = np.append(np.flatnonzero(~ok), len(ok))
        self._garbage_rows = np.flatnonzero(garbage)
        self._ts = np.zeros(len(ok))
        self._years = np.zeros(len(ok), dtype=np.int64)

    def usable(self):
        """Whether the parser would still try the year-less syslog format first (a line read since
        by Python may have taught it another one)."""
        stamps = self.parser.timestamps
        return stamps.learned_format in (None, FORMAT) and not stamps.strptime

    def take_run(self, i, out, ts_arr, level_arr, ends):
        """Fill lines i.. up to the next line the kernel did not take (or whose date the year makes
        impossible); returns that index (i when line i itself must take the per-line path)."""
        stamps = self.parser.timestamps
        j = run_end(self._bad, self._garbage_rows, stamps, i)
        if j == i:
            return i
        took_valid = bool(self.valid[i:j].any())
        if took_valid:
            first = i + int(np.argmax(self.valid[i:j]))  # the first valid stamp picks the year when none is known
            year0, last0 = stamps.year_context(int(self.month[first]), int(self.day[first]))
            run = slice(i, j)  # views: infer_years stops at the run's end
            took, year_after, last_after = infer_years(self.valid[run], self.garbage[run], self.month[run],
                                                       self.day[run], self.sod[run], self.fnum[run], self.fdig[run],
                                                       0, year0, last0, self._ts[run], self._years[run])
            if took == 0:
                return i
            j = i + took
        ts = self._ts[i:j] if took_valid else np.full(j - i, np.nan)
        garbage = self.garbage[i:j]
        if took_valid and not stamps.zone_is_utc:
            ts = ts.copy()
            good = ~garbage
            ts[good] -= _zone_offsets(stamps, self._years[i:j][good], self.month[i:j][good], self.day[i:j][good],
                                      np.minimum(self.hour[i:j][good], 23))
        put_run(self.parser, out, i, j, ts, self.level[i:j], self.cstart[i:j], ts_arr, level_arr, ends)
        n_garbage = int(garbage.sum())
        if n_garbage:
            self.parser.stats["unparsed_timestamps"] += n_garbage
            stamps.took_garbage(n_garbage, fmt=FORMAT)
        if n_garbage < j - i:
            stamps.took_stamps(year_after, last_after, fmt=FORMAT)
        return j


def _zone_offsets(stamps, year, month, day, hour):
    """UTC offsets of local wall-clock stamps, one zoneinfo look-up per distinct (date, hour)."""
    key = ((year * 13 + month) * 32 + day) * 24 + hour
    uniq, inverse = np.unique(key, return_inverse=True)
    offsets = np.empty(len(uniq))
    for u, k in enumerate(uniq.tolist()):
        y, rest = divmod(k, 13 * 32 * 24)
        m, rest = divmod(rest, 32 * 24)
        d, h = divmod(rest, 24)
        offsets[u] = stamps.local_offset(y, m, d, h)
    return offsets[inverse]
