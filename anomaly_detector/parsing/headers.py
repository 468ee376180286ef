"""Loghub-style header formats (`<Date> <Time> <Level> <Component>: <Content>`) compiled to a regex.

Used by records.RecordParser and the template miner; header_kernels.py runs the numba fast path.
"""
import re

import numpy as np

from anomaly_detector.parsing import header_kernels as hk

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# The log_format of each Loghub dataset (logparser benchmark settings), see FORMATS.md.
LOGHUB_FORMATS = {
    "HDFS": "<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "Hadoop": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
    "Spark": "<Date> <Time> <Level> <Component>: <Content>",
    "Zookeeper": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
    "OpenStack": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
    "Apache": r"\[<Time>\] \[<Level>\] <Content>",
    "Linux": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
    "Mac": r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
    "Android": "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
    "HealthApp": r"<Time>\|<Component>\|<Pid>\|<Content>",
    "BGL": "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "HPC": "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
    "Thunderbird": (r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> "
                    r"<Component>(\[<PID>\])?: <Content>"),
    "Windows": "<Date> <Time>, <Level>                  <Component>    <Content>",
    "OpenSSH": r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
    "Proxifier": r"\[<Time>\] <Program> - <Content>",
}


class HeaderFormatError(ValueError):
    """A log_format string that cannot be compiled; the message is one line."""


def _tokenize(fmt):
    """Split a format into tokens: ('lit', ch), ('ws',), ('field', name), ('open',), ('close',).

    Follows the logparser convention: runs of spaces match one or more whitespace, `\\X`
    escapes X, `(...)?` is an optional group; every other character is literal text.
    """
    tokens = []
    i, n = 0, len(fmt)
    while i < n:
        ch = fmt[i]
        if ch == " ":
            while i < n and fmt[i] == " ":
                i += 1
            tokens.append(("ws",))
            continue
        if ch == "\\":
            if i + 1 >= n:
                raise HeaderFormatError(f"log_format {fmt!r}: ends with a lone backslash; escape it as \\\\")
            nxt = fmt[i + 1]
            if nxt.isalnum():
                raise HeaderFormatError(
                    f"log_format {fmt!r}: escape \\{nxt} is not supported; only punctuation may be escaped")
            tokens.append(("lit", nxt))
            i += 2
            continue
        if ch == "<":
            close = fmt.find(">", i + 1)
            if close < 0:
                raise HeaderFormatError(f"log_format {fmt!r}: '<' at position {i} has no closing '>'")
            name = fmt[i + 1:close]
            if not _NAME.match(name):
                raise HeaderFormatError(
                    f"log_format {fmt!r}: field name <{name}> must be letters, digits and underscores")
            tokens.append(("field", name))
            i = close + 1
            continue
        if ch == "(":
            tokens.append(("open",))
            i += 1
            continue
        if ch == ")":
            if i + 1 >= n or fmt[i + 1] != "?":
                raise HeaderFormatError(
                    f"log_format {fmt!r}: ')' at position {i} must close an optional group written (...)?")
            tokens.append(("close",))
            i += 2
            continue
        tokens.append(("lit", ch))
        i += 1
    return tokens


def _to_regex(fmt, tokens):
    """Build the regex source and the field list, checking group balance and names."""
    parts, fields, depth = [], [], 0
    optional = set()
    for tok in tokens:
        kind = tok[0]
        if kind == "ws":
            parts.append(r"\s+")
        elif kind == "lit":
            parts.append(re.escape(tok[1]))
        elif kind == "field":
            name = tok[1]
            if name in fields:
                raise HeaderFormatError(f"log_format {fmt!r}: field <{name}> appears twice")
            fields.append(name)
            if depth:
                optional.add(name)
            parts.append(f"(?P<{name}>.*?)")
        elif kind == "open":
            depth += 1
            parts.append("(?:")
        else:
            if depth == 0:
                raise HeaderFormatError(f"log_format {fmt!r}: ')?' without a matching '('")
            depth -= 1
            parts.append(")?")
    if depth:
        raise HeaderFormatError(f"log_format {fmt!r}: '(' without a closing ')?'")
    if "Content" not in fields:
        raise HeaderFormatError(f"log_format {fmt!r}: it needs a <Content> field for the message")
    return "^" + "".join(parts) + "$", fields, optional


_MAX_OPTIONAL_GROUPS = 6


def _linearize(tokens):
    """Every way of taking or skipping the optional groups: a list of token lists without groups."""
    out = [[]]
    i = 0
    while i < len(tokens):
        if tokens[i][0] != "open":
            for seq in out:
                seq.append(tokens[i])
            i += 1
            continue
        depth, j = 1, i + 1
        while depth:
            depth += {"open": 1, "close": -1}.get(tokens[j][0], 0)
            j += 1
        inner = _linearize(tokens[i + 1:j - 1])
        out = [seq + alt for seq in out for alt in inner] + [list(seq) for seq in out]
        i = j
    return out


def _separator_piece(seq, t):
    tok = seq[t]
    if tok[0] != "ws":
        return re.escape(tok[1])
    near_field = (t > 0 and seq[t - 1][0] == "field") or (t + 1 < len(seq) and seq[t + 1][0] == "field")
    return r"\s" if near_field else r"\s+"


def _feasible_alternative(seq):
    """One group-free token sequence as a linear-time regex (see _feasibility_regex)."""
    pieces = []
    field_before = False
    k = 0
    while k < len(seq):
        if seq[k][0] == "field":
            field_before = True
            k += 1
            continue
        j = k
        while j < len(seq) and seq[j][0] != "field":
            j += 1
        body = "".join(_separator_piece(seq, t) for t in range(k, j))
        if not field_before:
            pieces.append(body)
        elif j == len(seq):
            pieces.append(".*?" + body)
        else:
            pieces.append("(?>.*?" + body + ")")
        field_before = False
        k = j
    if seq and seq[-1][0] == "field":
        pieces.append(".*")
    return "".join(pieces)


def _feasibility_regex(fmt, tokens):
    """A regex that tells in linear time whether the logparser regex can match at all.

    The lazy-field regex backtracks exponentially on lines that do not fit (every field may
    swallow separators). Fields absorb any text, so a match exists iff each separator can be
    found after the previous one; an atomic group commits to the first occurrence. Whitespace
    runs next to a field shrink to one character, which the field can make up for.
    """
    if sum(1 for t in tokens if t[0] == "open") > _MAX_OPTIONAL_GROUPS:
        raise HeaderFormatError(f"log_format {fmt!r}: more than {_MAX_OPTIONAL_GROUPS} optional groups")
    alternatives = [_feasible_alternative(seq) for seq in _linearize(tokens)]
    return re.compile("^(?:" + "|".join(alternatives) + ")$")


def _program(tokens, fields):
    """Compile tokens to the kernel program (int64 array), or None when the kernel cannot run it.

    The kernel handles literal bytes, whitespace runs and fields that are followed by a
    separator (or end the line); groups, two fields in a row and whitespace runs that are not
    followed by a non-space literal, a field or the end fall back to match().
    """
    prog = []
    prev_field = False
    prev_ws = False
    for tok in tokens:
        kind = tok[0]
        if kind in ("open", "close"):
            return None
        if kind == "field":
            if prev_field:
                return None
            prog += [hk.OP_FIELD, fields.index(tok[1])]
            prev_field, prev_ws = True, False
            continue
        if kind == "ws":
            if prev_ws:
                return None  # two runs in a row (a skipped group between them) need backtracking
            prog += [hk.OP_WS, 0]
            prev_ws = True
        else:
            data = tok[1].encode("utf-8")
            if prev_ws and tok[1].isspace():
                return None  # greedy whitespace before a literal space would need backtracking
            for b in data:
                prog += [hk.OP_LIT, b]
            prev_ws = False
        prev_field = False
    prog += [hk.OP_END, 0]
    return np.array(prog, dtype=np.int64).reshape(-1, 2)


def _group_programs(tokens, fields):
    """Kernel programs for a format with one optional group: (taken, skipped, branch field) or None.

    The branch field is the last field before the group; the kernel runs both programs and
    picks by where that field ends, which is how the regex orders its attempts.
    """
    opens = [k for k, t in enumerate(tokens) if t[0] == "open"]
    if len(opens) != 1:
        return None
    before = [t for t in tokens[:opens[0]] if t[0] == "field"]
    if not before:
        return None
    taken, skipped = _linearize(tokens)
    prog_taken, prog_skipped = _program(taken, fields), _program(skipped, fields)
    if prog_taken is None or prog_skipped is None:
        return None
    return prog_taken, prog_skipped, fields.index(before[-1][1])


class HeaderFormat:
    """A compiled log_format: `.fields`, `.match(line)` and the batch fast path `.split_batch`."""

    def __init__(self, fmt: str):
        if not isinstance(fmt, str) or not fmt.strip():
            raise HeaderFormatError("log_format is empty; give one like '<Date> <Time> <Level> <Content>'")
        self.format = fmt
        tokens = _tokenize(fmt)
        source, self.fields, self.optional_fields = _to_regex(fmt, tokens)
        try:
            self._regex = re.compile(source)
            self._feasible = _feasibility_regex(fmt, tokens)
        except re.error as exc:  # defensive: the tokenizer should have caught everything
            raise HeaderFormatError(f"log_format {fmt!r}: {exc}") from None
        self.program = _program(tokens, self.fields)
        self.group_programs = None if self.program is not None else _group_programs(tokens, self.fields)
        self.content_index = self.fields.index("Content")
        self.level_index = self.fields.index("Level") if "Level" in self.fields else -1

    def __repr__(self):
        return f"HeaderFormat({self.format!r})"

    def match(self, line: str):
        """Split one line into its header fields; None when the line does not fit the format.

        Like logparser, the line is stripped first; a field of an optional group that is
        absent is ''.
        """
        line = line.strip()
        if self._feasible.match(line) is None:  # keeps a non-fitting line from backtracking for ages
            return None
        m = self._regex.match(line)
        if m is None:
            return None
        return {name: (value if value is not None else "") for name, value in m.groupdict().items()}

    def split_batch(self, buf, starts, ends):
        """Split many lines of one UTF-8 buffer at once with the numba kernel.

        Returns (ok bool[n], field_start int64[n, k], field_end int64[n, k]) with byte offsets
        into buf in the order of `.fields`. Where ok is False the caller falls back to match().
        """
        n, k = len(starts), len(self.fields)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        if n and (starts.min() < 0 or ends.max() > len(buf) or (ends < starts).any()):
            raise ValueError("split_batch: line spans must lie inside the buffer (0 <= start <= end <= len)")
        if self.program is not None:
            return hk.split_headers(buf, starts, ends, self.program, k)
        if self.group_programs is not None:
            taken, skipped, branch = self.group_programs
            return hk.split_headers_optional(buf, starts, ends, taken, skipped, k, branch)
        return (np.zeros(n, dtype=np.bool_), np.zeros((n, k), dtype=np.int64), np.zeros((n, k), dtype=np.int64))

    @property
    def has_kernel(self):
        """Whether split_batch can split lines itself (else every line gets ok=False)."""
        return self.program is not None or self.group_programs is not None
