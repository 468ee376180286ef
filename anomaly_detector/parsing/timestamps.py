"""Event time from log text: ISO 8601, epoch, syslog, and the stamps of the Loghub datasets.

records.RecordParser uses one TimestampParser per input (per line); columns.parse_columns runs
the numba kernels below over whole columns and keeps the parser's state as if it had read each
stamp (through the methods under "state shared with the column kernels").

The recipe of a file (which header fields hold the stamp, which format it has) is learned once:
the first format whose shape a stamp has decides it. A stamp in the learned shape whose values
are impossible (month 47, hour 93) is garbage: it reads as no time without trying any other
format, so it costs what a valid stamp costs. A file that starts with garbage learns its shape
from the garbage. Year-less stamps (syslog, Android) take their year from the file's context:
see TimestampParser.
"""
import datetime as _dt
import operator
import re
import time
import zoneinfo

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun",
                                           "jul", "aug", "sep", "oct", "nov", "dec"))}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_CACHE_LIMIT = 20000
_DIGITS_AS_ZERO = str.maketrans("123456789", "000000000")
GARBAGE = -1  # parse_prefix's end for a stamp in a known shape with impossible values

# Named groups: Y (4-digit year), y (2-digit year), M (month number), Mon (month name), D (day),
# h, m, s, f (fraction digits), z (Z or +hh:mm). Formats without Y/y get their year inferred.
_T = r"(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})"
_FRAC = r"(?:[.,:](?P<f>\d{1,9}))?"
_ZONE = r"(?:\s?(?P<z>Z|[+-]\d{2}:?\d{2}|UTC|GMT))?"
_MON = r"(?P<Mon>[A-Za-z]{3})[a-z]*"
_FORMATS = [
    ("iso", r"(?P<Y>\d{4})-(?P<M>\d{1,2})-(?P<D>\d{1,2})(?:T|\s+)" + _T + _FRAC + _ZONE),
    ("bgl", r"(?P<Y>\d{4})-(?P<M>\d{2})-(?P<D>\d{2})-(?P<h>\d{2})\.(?P<m>\d{2})\.(?P<s>\d{2})(?:\.(?P<f>\d{1,9}))?"),
    ("hdfs", r"(?P<y>\d{2})(?P<M>\d{2})(?P<D>\d{2})\s+(?P<h>\d{2})(?P<m>\d{2})(?P<s>\d{2})"),
    ("ymd_slash", r"(?P<Y>\d{4})/(?P<M>\d{1,2})/(?P<D>\d{1,2})(?:T|\s+)" + _T + _FRAC + _ZONE),
    ("ymd_dot", r"(?P<Y>\d{4})\.(?P<M>\d{1,2})\.(?P<D>\d{1,2})\s+" + _T + _FRAC),
    ("spark", r"(?P<y>\d{2})/(?P<M>\d{2})/(?P<D>\d{2})\s+" + _T + _FRAC),
    # HealthApp does not pad minutes and seconds: 20171223-22:16:0:119
    ("healthapp", r"(?P<Y>\d{4})(?P<M>\d{2})(?P<D>\d{2})-(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2})" + _FRAC),
    ("ctime", r"[A-Za-z]{3}[a-z]*,?\s+" + _MON + r"\s+(?P<D>\d{1,2})\s+" + _T + _FRAC + r"\s+(?P<Y>\d{4})"),
    ("clf", r"(?P<D>\d{1,2})/" + _MON + r"/(?P<Y>\d{4}):" + _T + _FRAC + _ZONE),
    ("syslog_year", _MON + r"\s+(?P<D>\d{1,2})\s+(?P<Y>\d{4})\s+" + _T + _FRAC + _ZONE),
    ("syslog", _MON + r"\s+(?P<D>\d{1,2})\s+" + _T + _FRAC + _ZONE),
    ("android", r"(?P<M>\d{2})-(?P<D>\d{2})\s+" + _T + _FRAC),
    ("proxifier", r"(?P<M>\d{2})\.(?P<D>\d{2})\s+" + _T + _FRAC),
    ("iso_date", r"(?P<Y>\d{4})-(?P<M>\d{2})-(?P<D>\d{2})" + _ZONE),
]
_GROUPS = ("Y", "y", "M", "Mon", "D", "h", "m", "s", "f", "z")


_POW10 = [10 ** i for i in range(12)]


def _compile(name, source):
    rx = re.compile(source)
    # positions in m.groups() of each named part (-1: absent), so no dict per match
    pos = tuple(rx.groupindex.get(g, 0) - 1 for g in _GROUPS)
    date_groups = [i for i in pos[:5] if i >= 0]
    return name, rx, pos, operator.itemgetter(*date_groups)


_COMPILED = [_compile(name, rx) for name, rx in _FORMATS]
_FORMAT_INDEX = {name: i for i, (name, *_) in enumerate(_COMPILED)}
_EPOCH = re.compile(r"(?P<n>\d{9,19})(?:\.(?P<f>\d{1,9}))?")
_BOUNDARY = re.compile(r"\s|[\]\[,;|)(>-]|$")
_ZONE_RX = re.compile(r"([+-])(\d{2}):?(\d{2})")


def _zone_offset(z):
    if z in ("Z", "UTC", "GMT"):
        return 0
    m = _ZONE_RX.fullmatch(z)
    sign = -1 if m.group(1) == "-" else 1
    return sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)


def _epoch_number(digits, frac):
    """Epoch seconds from a 9-19 digit integer: seconds, ms, us or ns by magnitude."""
    n = len(digits)
    value = int(digits)
    if n <= 11:
        scale = 1
    elif n <= 14:
        scale = 1e3
    elif n <= 17:
        scale = 1e6
    else:
        scale = 1e9
    ts = value / scale
    if frac and scale == 1:
        ts += int(frac) / 10 ** len(frac)
    return float(ts)


# A year-less month this far past the last one is a late line of last year, not a jump ahead: lines
# come late by minutes or hours around new year (several hosts forwarding), and a log quiet for
# months is written in order, so only Nov/Dec after Jan (Dec after Feb) is read as late.
LATE_MONTHS = 10


class TimestampParser:
    """Stateful parser: remembers the detected format, day epochs and the inferred year.

    Year-less stamps (syslog, Android) take their year from the file's context, in this order:
    the year of the last stamp that had one; else `default_year`; else the year of the reference
    time (`reference_time`, epoch seconds: replay gives the file's modification time, a live input
    the arrival time, None means now), or the year before when the stamp's month and day come more
    than a day after the reference (a file written last December, read in January). From there a
    month that falls back by 6 or more (Dec -> Jan) means the year rolled over; one that jumps ahead
    by LATE_MONTHS or more (Dec after Jan: a line forwarded late around new year) is last year's, and
    the next Jan rolls over again; a smaller step back (Jul after Aug: lines out of order) or ahead
    (a quiet log's next line months later) keeps the year. Zone-less stamps are read in `timezone` (IANA name).

    `garbage` counts stamps in a known shape with impossible values (see the module docstring).
    """

    def __init__(self, strptime: str = "", timezone: str = "UTC", default_year=None, reference_time=None):
        try:
            self._zone = None if timezone in ("", "UTC", "utc", "Z") else zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None
        self.strptime = strptime or ""
        self.timezone = timezone or "UTC"
        self._strptime_has_year = any(d in self.strptime for d in ("%Y", "%y", "%G"))
        self._default_year = default_year
        self.reference_time = reference_time
        self._year = None
        self._last_month = None
        self._cached = None  # index into _COMPILED of the last format that matched
        self._garbage_format = None  # the shape learned from garbage while no format has matched
        self._garbage_recipe = None  # likewise for from_fields
        self._last_garbage = None  # the format of the last garbage _parse_at_start saw
        # Shapes (digits as 0) of texts no format matched: whether a regex matches depends on the shape
        # only (digits are only ever \d), so a text of a known stranger shape costs one look-up.
        self._no_shape = set()
        self.garbage = 0
        self._days = {}
        self._dates = {}
        self._offsets = {}
        self._field_recipe = None
        self._last_text = None
        self._last_ts = None

    # ---- public API ------------------------------------------------------------------------

    def parse(self, text):
        """Epoch seconds of a whole timestamp string, or None. Never raises."""
        try:
            if not isinstance(text, str):
                return self.parse_value(text)
            text = text.strip()
            if not text or len(text) > 64:
                return None
            if text == self._last_text:  # consecutive lines often share the stamp
                return self._last_ts
            ts, end = self._parse_at_start(text)
            if end == GARBAGE:
                self._count_garbage(self._last_garbage)
            if ts is None or end != len(text):
                return None
            self._last_text, self._last_ts = text, ts
            return ts
        except (ValueError, OverflowError, TypeError, KeyError, AttributeError):
            return None

    def parse_prefix(self, text):
        """(ts, end) for a timestamp at the start of text followed by a boundary, else (None, 0);
        (None, GARBAGE) when the start has a known stamp shape with impossible values."""
        try:
            ts, end = self._parse_at_start(text[:64])
            if end == GARBAGE:
                self._count_garbage(self._last_garbage)
                return None, GARBAGE
            if ts is None or not _BOUNDARY.match(text, end):
                return None, 0
            return ts, end
        except (ValueError, OverflowError, TypeError, KeyError, AttributeError):
            return None, 0

    def parse_value(self, value):
        """A JSON value: numbers are epoch seconds (or ms/us/ns by magnitude), strings parsed."""
        try:
            if isinstance(value, bool) or value is None:
                return None
            if isinstance(value, (int, float)):
                v = float(value)
                if v != v or v in (float("inf"), float("-inf")):
                    return None
                a = abs(v)
                if a >= 1e17:
                    v /= 1e9
                elif a >= 1e14:
                    v /= 1e6
                elif a >= 1e11:
                    v /= 1e3
                return v
            if isinstance(value, str):
                return self.parse(value)
            return None
        except (ValueError, OverflowError, TypeError):
            return None

    def from_fields(self, fields):
        """Combine the header fields of a Loghub format (Date+Time, Month+Date+Time, ...) into a ts.

        The learned recipe is tried first; garbage in it is final (no time, counted once). With
        no recipe learned yet, the first recipe whose stamp has a known shape is remembered.
        """
        try:
            learned = self._field_recipe or self._garbage_recipe
            if learned is not None:
                ts, garbage = self._try_recipe(learned, fields)
                if ts is not None:
                    self._learn_recipe(learned)
                    return ts
                if garbage is not None:
                    self._count_garbage(garbage)
                    return None
            first_garbage = None
            for recipe in _FIELD_RECIPES:
                if recipe is learned:
                    continue
                ts, garbage = self._try_recipe(recipe, fields)
                if ts is not None:
                    self._learn_recipe(recipe)
                    return ts
                if garbage is not None and first_garbage is None:
                    first_garbage = recipe, garbage
            if first_garbage is not None:
                self._count_garbage(first_garbage[1])
                if self._field_recipe is None:
                    self._garbage_recipe = first_garbage[0]
            return None
        except (ValueError, OverflowError, TypeError, KeyError, AttributeError):
            return None

    # ---- state shared with the column kernels (columns.py) -------------------------------------

    @property
    def zone_is_utc(self):
        """Whether zone-less stamps are UTC (no per-date offset to look up)."""
        return self._zone is None

    @property
    def field_recipe(self):
        """The header fields the stamp was last read from: a tuple of names, or None."""
        return self._field_recipe

    @property
    def learned_recipe(self):
        """The recipe the next header line is read with: the one of the last valid stamp, else
        the one garbage stamps had, else None."""
        return self._field_recipe or self._garbage_recipe

    @property
    def cached_format(self):
        """Name of the format of the last valid stamp (a key of _LAYOUTS or of the regexes), or None."""
        return None if self._cached is None else _COMPILED[self._cached][0]

    @property
    def learned_format(self):
        """The format the next stamp is tried in first: the cached one, else the shape garbage had."""
        idx = self._cached if self._cached is not None else self._garbage_format
        return None if idx is None else _COMPILED[idx][0]

    @property
    def last_text(self):
        return self._last_text

    @property
    def last_ts(self):
        return self._last_ts

    def layout(self):
        """The kernel layout of the learned format, EPOCH_LAYOUT when none is learned, None when
        the kernel cannot read it (strptime, or a format without a fixed layout)."""
        if self.strptime:
            return None
        name = self.learned_format
        if name is None:
            return EPOCH_LAYOUT
        return name if name in _LAYOUTS else None

    def year_context(self, month, day):
        """(year, last month or -1) that a year-less stamp of this month and day read now starts from
        (before the Dec -> Jan rollover, which infer_years applies as _infer_year does)."""
        year = self._year if self._year is not None else self._first_year(month, day)
        return year, (self._last_month if self._last_month is not None else -1)

    def took_stamps(self, year, month, fmt=None):
        """State after a kernel read stamps up to a valid one with this year and month, in format
        fmt (None: the learned one), as parse() and parse_prefix() leave it."""
        if fmt is not None:
            self._cached, self._garbage_format = _FORMAT_INDEX[fmt], None
        self._year, self._last_month = int(year), int(month)

    def remember_text(self, text, ts):
        """The last whole stamp text parse() read and its value (a repeat is answered from memory)."""
        self._last_text, self._last_ts = text, ts

    def forget_text(self):
        """A stamp was read that parse() did not see: the next text is not a repeat."""
        self._last_text = None

    def took_garbage(self, count, fmt=None, recipe=None):
        """State after a kernel found `count` garbage stamps in format fmt (with this recipe)."""
        self.garbage += int(count)
        if count and fmt is not None and self._cached is None:
            self._garbage_format = _FORMAT_INDEX[fmt]
        if count and recipe is not None and self._field_recipe is None:
            self._garbage_recipe = recipe

    def local_offset(self, year, month, day, hour):
        """UTC offset in seconds of a local wall-clock hour in the parser's time zone."""
        return self._local_offset(year, month, day, hour)

    # ---- internals ---------------------------------------------------------------------------

    def _count_garbage(self, idx):
        """One garbage stamp, of format idx: the learned shape while no format has read a stamp."""
        self.garbage += 1
        if self._cached is None:
            self._garbage_format = idx

    def _learn_recipe(self, recipe):
        self._field_recipe = recipe
        self._garbage_recipe = None

    def _try_recipe(self, recipe, fields):
        """(ts or None, the index of the format whose garbage the stamp was, or None)."""
        parts = []
        for name in recipe:
            value = fields.get(name)
            if not value:
                return None, None
            parts.append(value)
        text = " ".join(parts).strip()
        if not text or len(text) > 64:
            return None, None
        if text == self._last_text:
            return self._last_ts, None
        try:
            ts, end = self._parse_at_start(text)
        except (ValueError, OverflowError, TypeError, KeyError, AttributeError):
            return None, None  # as parse(): this recipe reads no time, another may
        if end == GARBAGE:
            return None, self._last_garbage
        if ts is None or end != len(text):
            return None, None
        self._last_text, self._last_ts = text, ts
        return ts, None

    def _parse_at_start(self, text):
        """(ts, end) of the stamp at the start of text; (None, 0) when it has no known shape,
        (None, GARBAGE) when its shape is known and its values are impossible.

        The learned format is tried first, and its shape decides. Otherwise the first format
        whose shape the text has decides; garbage there tries the others (a first line may hold
        a date-only stamp) and, when none reads it, becomes the learned shape.
        """
        if self.strptime:
            return float(self._parse_strptime(text)), len(text)
        shape = text.translate(_DIGITS_AS_ZERO)
        if shape in self._no_shape:  # no format matched a text of this shape: none can match this one
            return None, 0
        learned = self._cached if self._cached is not None else self._garbage_format
        if learned is not None:
            got = self._try_format(learned, text)
            if got is not None:
                if got[0] is not None:
                    self._cached, self._garbage_format = learned, None
                else:
                    self._last_garbage = learned
                return got
        m = _EPOCH.match(text)
        if m and (m.end() == len(text) or _BOUNDARY.match(text, m.end())):
            return _epoch_number(m.group("n"), m.group("f")), m.end()
        garbage = None
        for idx in range(len(_COMPILED)):
            if idx == learned:
                continue
            got = self._try_format(idx, text)
            if got is None:
                continue
            if got[0] is not None:
                self._cached, self._garbage_format = idx, None
                return got
            if garbage is None:
                garbage = idx
        if garbage is None:
            if len(self._no_shape) > _CACHE_LIMIT:
                self._no_shape.clear()
            self._no_shape.add(shape)
            return None, 0
        self._last_garbage = garbage
        return None, GARBAGE

    def _try_format(self, idx, text):
        """None when text has not this format's shape, (None, GARBAGE) when its values are
        impossible, else (ts, end)."""
        _, rx, pos, date_key = _COMPILED[idx]
        m = rx.match(text)
        if m is None:
            return None
        g = m.groups()
        try:
            ts = self._from_groups(g, pos, (idx,) + date_key(g))
        except (ValueError, OverflowError):  # Feb 30, year 0: no such day
            ts = None
        if ts is None:
            return None, GARBAGE
        return ts, m.end()

    def _from_groups(self, g, pos, dkey):
        entry = self._dates.get(dkey)
        if entry is None:
            entry = self._date_entry(g, pos)
            if entry is None:
                return None
            if len(self._dates) > _CACHE_LIMIT:
                self._dates.clear()
            self._dates[dkey] = entry
        month, year, day, base = entry
        ih, im, i_s, i_f, iz = pos[5:]
        if ih < 0:  # a date without time of day
            hour = minute = second = 0
        else:
            hour = int(g[ih])
            minute = int(g[im])
            second = int(g[i_s])
        if hour > 24 or minute > 59 or second > 60:
            return None  # before the year state: a stamp that is not one must not move it
        if year:
            self._year = year
        else:
            year = self._infer_year(month, day)
            base = self._day_epoch(year, month, day)
        self._last_month = month
        ts = float(base + hour * 3600 + minute * 60 + second)
        frac = g[i_f] if i_f >= 0 else None
        if frac:
            ts += int(frac) / _POW10[len(frac)]
        z = g[iz] if iz >= 0 else None
        if z:
            return ts - _zone_offset(z)
        if self._zone is None:
            return ts
        return ts - self._local_offset(year, month, day, hour)

    def _date_entry(self, g, pos):
        """(month, year or 0 when it must be inferred, day, day epoch or 0); None when invalid."""
        iY, iy, iM, iMon, iD = pos[:5]
        month = _MONTHS.get(g[iMon].lower(), 0) if iMon >= 0 else int(g[iM])
        day = int(g[iD])
        if not 1 <= month <= 12 or not 1 <= day <= 31:
            return None
        if iY >= 0:
            year = int(g[iY])
        elif iy >= 0:
            yy = int(g[iy])
            year = 2000 + yy if yy < 70 else 1900 + yy
        else:
            return month, 0, day, 0
        if year < 1:
            return None
        return month, year, day, self._day_epoch(year, month, day)

    def _infer_year(self, month, day):
        if self._year is None:
            self._year = self._first_year(month, day)
        elif self._last_month is not None and self._last_month - month >= 6:
            self._year += 1  # Dec -> Jan: the year rolled over
        elif self._last_month is not None and month - self._last_month >= LATE_MONTHS:
            self._year -= 1  # Jan -> Dec: a late line of last year (hosts forwarding out of order)
        return self._year

    def _first_year(self, month, day):
        """The year of the first year-less stamp when no stamp had one (see the class docstring)."""
        if self._default_year:
            return self._default_year
        ref = self.reference_time if self.reference_time is not None else time.time()
        when = _dt.datetime.fromtimestamp(ref, self._zone or _dt.timezone.utc)
        later = (month, day) > (when.month, when.day + 1)  # Dec 31 read on Jan 2 is last year's
        return when.year - 1 if later else when.year

    def _day_epoch(self, year, month, day):
        key = (year, month, day)
        value = self._days.get(key)
        if value is None:
            if len(self._days) > _CACHE_LIMIT:
                self._days.clear()
            value = (_dt.date(year, month, day).toordinal() - _EPOCH_ORDINAL) * 86400
            self._days[key] = value
        return value

    def _local_offset(self, year, month, day, hour):
        if self._zone is None:
            return 0
        key = (year, month, day, hour)
        value = self._offsets.get(key)
        if value is None:
            if len(self._offsets) > _CACHE_LIMIT:
                self._offsets.clear()
            wall = _dt.datetime(year, month, day, min(hour, 23), tzinfo=self._zone)
            value = wall.utcoffset().total_seconds()
            self._offsets[key] = value
        return value

    def _parse_strptime(self, text):
        parsed = _dt.datetime.strptime(text, self.strptime)
        if not self._strptime_has_year:
            parsed = parsed.replace(year=self._infer_year(parsed.month, parsed.day))
            self._last_month = parsed.month
        else:
            self._year = parsed.year
        if parsed.tzinfo is not None:
            return parsed.timestamp()
        if self._zone is None:
            return parsed.replace(tzinfo=_dt.timezone.utc).timestamp()
        return parsed.replace(tzinfo=self._zone).timestamp()


# Header-field combinations of the Loghub formats, most specific first.
_FIELD_RECIPES = [
    ("Date", "Time"),                # HDFS, Hadoop, Spark, Zookeeper, OpenStack, Android, Windows
    ("Month", "Date", "Time"),       # Linux, Mac
    ("Month", "Day", "Time"),        # Thunderbird without its Date
    ("Date", "Day", "Time"),         # OpenSSH: Date holds the month name
    ("Time",),                       # Apache, HealthApp, BGL, HPC (epoch), Proxifier
    ("Timestamp",),                  # BGL and Thunderbird epoch seconds
    ("Date",),
    ("Datetime",),
]
STAMP_FIELDS = frozenset(name for recipe in _FIELD_RECIPES for name in recipe)


def now():
    """Wall-clock epoch seconds (arrival time when a record has none)."""
    return time.time()


# ---- numba batch path for the fixed-width stamps of header formats ------------------------------
# Each layout is the canonical shape of one regex above: 'Y' 4-digit year, 'y' 2-digit year, M D h m s
# two digits, H I S d hour/minute/second/day of one or two digits, N a three-letter month name,
# W three letters (a weekday, not checked, as the regex does not),
# 'T' a 'T' or one space, anything else literal; then an optional fraction after one of
# the listed separators. The kernel accepts only those exact shapes (a strict subset of what the regex
# takes), so wherever it says ok the value equals TimestampParser.parse; everything else falls back.
_LAYOUTS = {
    "iso": ("YYYY-MM-DDThh:mm:ss", ".,:"),
    "bgl": ("YYYY-MM-DD-hh.mm.ss", "."),
    "hdfs": ("yyMMDD hhmmss", ""),
    "ymd_slash": ("YYYY/MM/DDThh:mm:ss", ".,:"),
    "ymd_dot": ("YYYY.MM.DD hh:mm:ss", ".,:"),
    "spark": ("yy/MM/DD hh:mm:ss", ".,:"),
    "healthapp": ("YYYYMMDD-H:I:S", ".,:"),
    "android": ("MM-DD hh:mm:ss", ".,:"),     # no year: infer_years supplies it in order
    "proxifier": ("MM.DD hh:mm:ss", ".,:"),
    "syslog": ("N d H:mm:ss", ".,:"),         # Linux, Mac, OpenSSH header fields joined by spaces
    "ctime": ("W N d H:mm:ss YYYY", ""),      # Apache: Sun Dec 04 04:47:44 2005
}
_MONTH_NAMES = np.frombuffer(b"janfebmaraprmayjunjulaugsepoctnovdec", dtype=np.uint8).copy()
EPOCH_LAYOUT = "epoch"


def layout_arrays(name):
    """(template uint8, fraction separators uint8) for a layout name; the epoch layout is empty."""
    if name == EPOCH_LAYOUT:
        return np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.uint8)
    template, seps = _LAYOUTS[name]
    return np.frombuffer(template.encode(), dtype=np.uint8).copy(), np.frombuffer(seps.encode(), dtype=np.uint8).copy()


def layout_has_year(name):
    return name == EPOCH_LAYOUT or any(c in _LAYOUTS[name][0] for c in "Yy")


def layout_of(parser):
    """The layout of the parser's learned format, or None when the kernel cannot do it."""
    return parser.layout()


@njit(cache=True)
def _char_at(buf, ps, pe, row, nparts, j):
    """Byte j of the parts of one row joined by single spaces (-1 past the end)."""
    for p in range(nparts):
        length = pe[row, p] - ps[row, p]
        if j < length:
            return buf[ps[row, p] + j]
        j -= length
        if p + 1 < nparts:
            if j == 0:
                return 32
            j -= 1
    return -1


@njit(cache=True)
def _month_from_name(buf, ps, pe, row, nparts, pos):
    """1-12 for a case-insensitive English month abbreviation at pos, else 0."""
    letters = np.zeros(3, dtype=np.int64)
    for k in range(3):
        c = _char_at(buf, ps, pe, row, nparts, pos + k)
        if 65 <= c <= 90:
            c += 32
        if c < 97 or c > 122:
            return 0
        letters[k] = c
    for m in range(12):
        if (letters[0] == _MONTH_NAMES[3 * m] and letters[1] == _MONTH_NAMES[3 * m + 1]
                and letters[2] == _MONTH_NAMES[3 * m + 2]):
            return m + 1
    return 0


@njit(cache=True)
def _days_from_civil(y, m, d):
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True)
def _days_in_month(y, m):
    if m == 2:
        leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
        return 29 if leap else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


@njit(cache=True)
def _parse_epoch_row(buf, ps, pe, row, nparts, total):
    """9-11 digit seconds with an optional fraction, or 12-14 digit milliseconds; else NaN."""
    value = 0
    digits = 0
    j = 0
    while j < total:
        c = _char_at(buf, ps, pe, row, nparts, j)
        if c < 48 or c > 57:
            break
        value = value * 10 + (c - 48)
        digits += 1
        j += 1
    if digits < 9 or digits > 14:
        return np.nan
    if digits >= 12:
        return value / 1e3 if j == total else np.nan
    ts = float(value)
    if j == total:
        return ts
    if _char_at(buf, ps, pe, row, nparts, j) != 46 or total - j - 1 < 1 or total - j - 1 > 9:
        return np.nan
    frac = 0
    for k in range(j + 1, total):
        c = _char_at(buf, ps, pe, row, nparts, k)
        if c < 48 or c > 57:
            return np.nan
        frac = frac * 10 + (c - 48)
    return ts + frac / 10.0 ** (total - j - 1)


@kt.entry((kt.BYTES, kt.I64_2D, kt.I64_2D, kt.INT64, kt.U8_1D, kt.U8_1D), cache=True)
def parse_stamps(buf, ps, pe, nparts, template, fracseps):
    """Local-time epoch seconds of each row's stamp (parts joined by a space) in one layout.

    Returns (ok, garbage, ts, year, month, day, hour, sod, fnum, fdig). Rows that do not have the
    exact shape get ok=False; rows that have it with impossible values (month 13, hour 25, Feb 30)
    get garbage=True: TimestampParser reads them as garbage of this format. An empty template means
    the epoch layout (no garbage). For a template without a year, year and ts stay 0 and sod
    (seconds of day), fnum/fdig (fraction digits) let infer_years finish the job.
    """
    n = ps.shape[0]
    ok = np.zeros(n, dtype=np.bool_)
    garbage = np.zeros(n, dtype=np.bool_)
    ts = np.zeros(n, dtype=np.float64)
    year = np.zeros(n, dtype=np.int64)
    month = np.zeros(n, dtype=np.int64)
    day = np.zeros(n, dtype=np.int64)
    hour = np.zeros(n, dtype=np.int64)
    sod = np.zeros(n, dtype=np.int64)
    fnum = np.zeros(n, dtype=np.int64)
    fdig = np.zeros(n, dtype=np.int64)
    tl = template.shape[0]
    has_year = False
    for j in range(tl):
        if template[j] == 89 or template[j] == 121:
            has_year = True
    for row in range(n):
        total = nparts - 1
        empty = False
        for p in range(nparts):
            length = pe[row, p] - ps[row, p]
            if length <= 0:
                empty = True
            total += length
        if empty or total > 64:
            continue
        if tl == 0:
            v = _parse_epoch_row(buf, ps, pe, row, nparts, total)
            if v == v:
                ok[row] = True
                ts[row] = v
            continue
        Y = 0
        M = 0
        D = 0
        h = 0
        mi = 0
        s = 0
        good = True
        pos = 0
        for j in range(tl):
            t = template[j]
            c = _char_at(buf, ps, pe, row, nparts, pos)
            if t == 87:  # W: three letters
                for k in range(3):
                    c3 = _char_at(buf, ps, pe, row, nparts, pos + k)
                    if not (65 <= c3 <= 90 or 97 <= c3 <= 122):
                        good = False
                if not good:
                    break
                pos += 3
                continue
            if t == 78:  # N: three letters naming a month, then the next template character
                M = _month_from_name(buf, ps, pe, row, nparts, pos)
                if M == 0:
                    good = False
                    break
                pos += 3
                continue
            if t == 72 or t == 73 or t == 83 or t == 100:  # H I S d: one or two digits, greedy like \d{1,2}
                if c < 48 or c > 57:
                    good = False
                    break
                v = c - 48
                pos += 1
                c2 = _char_at(buf, ps, pe, row, nparts, pos)
                if 48 <= c2 <= 57:
                    v = v * 10 + (c2 - 48)
                    pos += 1
                if t == 72:
                    h = v
                elif t == 73:
                    mi = v
                elif t == 83:
                    s = v
                else:
                    D = v
                continue
            pos += 1
            if t == 89 or t == 121 or t == 77 or t == 68 or t == 104 or t == 109 or t == 115:  # YyMDhms
                if c < 48 or c > 57:
                    good = False
                    break
                d = c - 48
                if t == 89 or t == 121:
                    Y = Y * 10 + d
                elif t == 77:
                    M = M * 10 + d
                elif t == 68:
                    D = D * 10 + d
                elif t == 104:
                    h = h * 10 + d
                elif t == 109:
                    mi = mi * 10 + d
                else:
                    s = s * 10 + d
            elif t == 84:  # 'T': a T or one space
                if c != 84 and c != 32:
                    good = False
                    break
            elif c != t:
                good = False
                break
        if not good or pos > total:
            continue
        frac = 0
        fdigits = 0
        if total > pos:
            sep = _char_at(buf, ps, pe, row, nparts, pos)
            allowed = False
            for k in range(fracseps.shape[0]):
                if sep == fracseps[k]:
                    allowed = True
            fdigits = total - pos - 1
            if not allowed or fdigits < 1 or fdigits > 9:
                continue
            for k in range(pos + 1, total):
                c = _char_at(buf, ps, pe, row, nparts, k)
                if c < 48 or c > 57:
                    good = False
                    break
                frac = frac * 10 + (c - 48)
            if not good:
                continue
        if template[0] == 121:  # two-digit year, as TimestampParser reads it
            Y = 2000 + Y if Y < 70 else 1900 + Y
        if not has_year:
            if M < 1 or M > 12 or D < 1 or D > 31 or h > 24 or mi > 59 or s > 60:
                garbage[row] = True
                continue
            ok[row] = True
            month[row] = M
            day[row] = D
            hour[row] = h
            sod[row] = h * 3600 + mi * 60 + s
            fnum[row] = frac
            fdig[row] = fdigits
            continue
        if Y < 1 or M < 1 or M > 12 or D < 1 or D > _days_in_month(Y, M) or h > 24 or mi > 59 or s > 60:
            garbage[row] = True
            continue
        value = float(_days_from_civil(Y, M, D) * 86400 + h * 3600 + mi * 60 + s)
        if fdigits:
            value += frac / 10.0 ** fdigits
        ok[row] = True
        ts[row] = value
        year[row] = Y
        month[row] = M
        day[row] = D
        hour[row] = h
    return ok, garbage, ts, year, month, day, hour, sod, fnum, fdig


@kt.entry((kt.BOOL_1D, kt.BOOL_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.INT64, kt.INT64, kt.INT64,
           kt.F64_1D, kt.I64_1D), cache=True)
def infer_years(good, garbage, month, day, sod, fnum, fdig, start, year0, last0, ts, years):
    """Year inference of TimestampParser over rows start.. of year-less stamps, in order.

    Stops at the first row that is neither good nor garbage, or whose date does not exist in the
    inferred year (the Python path then handles it with the state returned here). Writes ts and
    years of the rows it took (NaN and 0 for garbage, which leaves the year state alone);
    returns (end, year_after, last_month_after); last0 = -1 means none.
    """
    n = good.shape[0]
    year = year0
    last = last0
    i = start
    while i < n and (good[i] or garbage[i]):
        if garbage[i]:
            ts[i] = np.nan
            years[i] = 0
            i += 1
            continue
        m = month[i]
        y = year
        if last >= 0 and last - m >= 6:  # Dec -> Jan: the year rolled over
            y = year + 1
        elif last >= 0 and m - last >= LATE_MONTHS:  # Jan -> Dec: a late line of last year
            y = year - 1
        if y < 1 or y > 9999 or day[i] > _days_in_month(y, m):
            break
        value = float(_days_from_civil(y, m, day[i]) * 86400 + sod[i])
        if fdig[i]:
            value += fnum[i] / 10.0 ** fdig[i]
        ts[i] = value
        years[i] = y
        year = y
        last = m
        i += 1
    return i, year, last
