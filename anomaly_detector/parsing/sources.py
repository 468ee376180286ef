"""Which source each line of a batch belongs to: named header fields, a detected prefix, or the input's own.

records.parse_columns asks LineSources once per batch (after framing for the docker compose prefix,
after parsing for the rest); prefix_kernels.py finds the prefixes. Detection (detection/engine.py)
keeps baselines, shares, incidents and silence per source name, so one file that interleaves
several services gets one model per service instead of one moving mix.

Precedence for a line: the source the line names itself (JSON source key, syslog app-name,
`source_fields`), else a syslog-style `host program[pid]: ` prefix (the program), else a docker
compose `name-1  | ` prefix (the service), else the input's source. A syslog program's service is its
name before the first `/` (service_of): `postfix/smtpd` and `postfix/qmgr` are postfix. A syslog-style prefix also names
the line's host (Columns.host_id): the source stays the program, an operator's service, and
detection/tier2_hosts.py counts its hosts apart, so one replica going silent is seen. So does a
`<Host>` field of log_format that source_fields does not name.
"""
import logging

import numpy as np

from anomaly_detector.parsing import prefix_kernels as pk
from anomaly_detector.parsing.json_kernels import span_ids

log = logging.getLogger(__name__)

SOURCE_PREFIX_MODES = ("auto", "off")
FIELD_JOINER = "/"        # source_fields = Host, Program -> "web-1/nginx"
# A header field of this name, when source_fields does not name it, is the line's host (Columns.host_id).
HOST_FIELD = "Host"
# A shape seen on at least this share of lines is a prefix; below it, lines such as
# "Connection closed: reset" (two words and a colon) would be read as `host program:`.
TRUST_SHARE = 0.6
# Fewer lines than this are no evidence either way: a single line never makes a prefix trusted.
MIN_EVIDENCE_LINES = 20
# Votes carry from batch to batch (a daemon batch can be one line) and are halved past this many
# lines, so an input that changes shape is followed within a few window lengths.
VOTE_WINDOW_LINES = 20000


def service_of(program):
    """The service a syslog program tag names: its text before the first `/` (prefix_kernels does the same)."""
    return program.split("/", 1)[0]


class SourceFieldsError(ValueError):
    """source_fields that log_format cannot fill; the message is one line."""


def source_fields_problem(fields, header_fields, log_format):
    """None, or one line saying why `fields` cannot name sources under a log_format with `header_fields`."""
    if not fields:
        return None
    if not log_format:
        return "needs a log_format whose header fields it names, found no log_format"
    for name in fields:
        if name == "Content":
            return "Content is the message, not a source; name header fields such as Host, Program"
        if name not in header_fields:
            return ("%s is not a field of log_format %r (its fields: %s)"
                    % (name, log_format, ", ".join(f for f in header_fields if f != "Content")))
    if len(set(fields)) != len(fields):
        return "a field is named twice (%s)" % ", ".join(fields)
    return None


class PrefixVotes:
    """Lines that carried a prefix shape, out of lines looked at, over a sliding window."""

    def __init__(self):
        self.hits = 0.0
        self.lines = 0.0

    def trusted(self, hits, lines):
        """Add one batch's counts; whether the prefix holds on most lines seen lately."""
        self.hits += hits
        self.lines += lines
        ok = self.lines >= MIN_EVIDENCE_LINES and self.hits >= TRUST_SHARE * self.lines
        while self.lines > VOTE_WINDOW_LINES:
            self.hits *= 0.5
            self.lines *= 0.5
        return ok


class LineSources:
    """One input's rules for line sources and the state that carries over between its batches."""

    def __init__(self, fields=(), prefix="off", max_sources=256, input_name=""):
        if prefix not in SOURCE_PREFIX_MODES:
            raise ValueError("source_prefix must be auto or off, not %r" % (prefix,))
        self.fields = tuple(fields)
        self.prefix = prefix
        self.max_sources = int(max_sources)
        self.input_name = input_name
        self.syslog_votes = PrefixVotes()
        self.compose_votes = PrefixVotes()
        self.names = set()      # sources this input's lines were given, up to max_sources
        self.refused = 0        # lines that kept the input's source because max_sources was reached
        self._warned = False

    @property
    def active(self):
        return bool(self.fields) or self.prefix == "auto"

    def strip_compose(self, clean, starts, ends):
        """Line starts after a trusted compose prefix, and the service spans ((ss, se); ss -1: none)."""
        if self.prefix != "auto" or len(starts) == 0:
            return starts, None
        ss, se, body = pk.compose_prefixes(clean, starts, ends)
        hit = ss >= 0
        if not self.compose_votes.trusted(int(hit.sum()), len(hit)) or not hit.any():
            return starts, None
        return np.where(hit, body, starts), (ss, se)

    def assign(self, out, own, content_buf, header, compose):
        """Give lines whose source is still the input's their own; strip a syslog-style prefix.

        out: records._ColumnBuilder (source_id, start, end, source_index); own: bool per line;
        header: (clean buffer, ok, fs, fe, field order, slow fields by line) or None.
        """
        if self.fields and header is not None:
            own = own & ~self._from_fields(out, own, header)
        elif self.prefix == "auto" and own.any():
            own = own & ~self._from_syslog_prefix(out, own, content_buf)
        if compose is not None and own.any():
            ss, se = compose  # spans of the cleaned buffer, which content_buf begins with
            self._name_spans(out, own & (ss >= 0), content_buf, ss, se)

    def _from_fields(self, out, own, header):
        """Lines whose header has the named fields take their values, joined; returns the lines named."""
        clean, ok, fs, fe, order, slow = header
        cols = [order.index(name) for name in self.fields]
        take = ok & own
        given = np.zeros(len(own), dtype=np.bool_)
        if take.any():
            rows = np.flatnonzero(take)
            ids = []
            firsts = []
            for j in cols:
                got, first = span_ids(clean, np.where(take, fs[:, j], -1), np.ascontiguousarray(fe[:, j]))
                ids.append(got[rows])
                firsts.append(first)
            key = np.stack(ids, axis=1)
            uniq, inverse = np.unique(key, axis=0, return_inverse=True)
            names = []
            for row in uniq.tolist():
                parts = [_text(clean, fs[firsts[c][k], cols[c]], fe[firsts[c][k], cols[c]])
                         for c, k in enumerate(row)]
                names.append(FIELD_JOINER.join(p for p in parts if p))
            taken = self._apply(out, rows, np.asarray(inverse).reshape(-1), names)
            given[rows[taken]] = True
            if HOST_FIELD in order and HOST_FIELD not in self.fields:   # replicas of one named source
                j = order.index(HOST_FIELD)
                self._name_hosts(out, given & (fe[:, j] > fs[:, j]), clean, fs[:, j], fe[:, j])
        for i, fields in slow.items():
            if own[i] and fields and all(name in fields for name in self.fields):
                name = FIELD_JOINER.join(fields[f] for f in self.fields if fields[f])
                given[i] = bool(self._apply(out, np.array([i]), np.zeros(1, np.int64), [name])[0])
        return given

    def _from_syslog_prefix(self, out, own, content_buf):
        """Take `host program[pid]: ` off lines that carry it once the shape is trusted; returns the lines named."""
        starts = np.where(own, out.start, out.end)   # a line not looked at is empty: no prefix
        ps, pe, body = pk.syslog_prefixes(content_buf, starts, out.end)
        hit = ps >= 0
        if not self.syslog_votes.trusted(int(hit.sum()), int(own.sum())) or not hit.any():
            return np.zeros(len(own), dtype=np.bool_)
        given = self._name_spans(out, hit, content_buf, ps, pe)
        self._name_hosts(out, given, content_buf, starts, ps - 1)
        out.start[given] = body[given]
        return given

    @staticmethod
    def _name_hosts(out, lines, buf, hs, he):
        """Lines in `lines` take the text of their span as host (out.host_id): a program's replicas on
        several hosts stay one source, and detection counts each host's lines apart (tier2_hosts.py)."""
        rows = np.flatnonzero(lines)
        if len(rows) == 0:
            return
        ids, first = span_ids(buf, np.where(lines, hs, -1), np.where(lines, he, -1))
        hid = np.array([out.host_index(_text(buf, hs[k], he[k])) for k in first[:int(ids.max()) + 1].tolist()],
                       np.int32)
        out.host_id[rows] = hid[ids[rows]]

    def _name_spans(self, out, hit, buf, ss, se):
        """Lines in hit take the text of their span as source; returns the lines that did."""
        rows = np.flatnonzero(hit)
        given = np.zeros(len(hit), dtype=np.bool_)
        if len(rows) == 0:
            return given
        ids, first = span_ids(buf, np.where(hit, ss, -1), se)
        names = [_text(buf, ss[k], se[k]) for k in first[:int(ids.max()) + 1].tolist()]
        taken = self._apply(out, rows, ids[rows], names)
        given[rows[taken]] = True
        return given

    def _apply(self, out, rows, ids, names):
        """Set rows' source to names[ids]; an empty name, or a new one past max_sources, leaves a row as it
        was. Returns which rows took their name."""
        sid = np.full(len(names), -1, dtype=np.int64)
        refused = np.zeros(len(names), dtype=np.bool_)
        for k, name in enumerate(names):
            if not name:
                continue
            if self._admit(name):
                sid[k] = out.source_index(name)
            else:
                refused[k] = True
        got = sid[ids]
        taken = got >= 0
        n_refused = int(refused[ids].sum())
        if n_refused:
            self._refuse(n_refused, [n for k, n in enumerate(names) if refused[k]])
        out.source_id[rows[taken]] = got[taken]
        return taken

    def _admit(self, name):
        if name in self.names:
            return True
        if len(self.names) >= self.max_sources:
            return False
        self.names.add(name)
        return True

    def _refuse(self, count, names):
        self.refused += count
        if not self._warned:
            self._warned = True
            log.warning("input %s: lines name more than max_sources = %d sources; lines of new ones (such as %r) "
                        "keep the input's source", self.input_name or "?", self.max_sources,
                        names[0])


def warm_kernels():
    """Compile (or load) every kernel signature assign and strip_compose use: buffers arrive writable
    or read-only (np.frombuffer), and numba compiles each kind separately."""
    data = b"web-1  | h prog[1]: x\n"
    for buf in (np.frombuffer(data, np.uint8), np.frombuffer(data, np.uint8).copy()):
        starts, ends = np.zeros(1, np.int64), np.full(1, len(data) - 1, np.int64)
        pk.compose_prefixes(buf, starts, ends)
        pk.syslog_prefixes(buf, starts, ends)
        span_ids(buf, starts, ends)


def _text(buf, s, e):
    return bytes(buf[int(s):int(e)]).decode("utf-8", "replace")
