"""numba kernel that splits many log lines into header fields by running a tiny compiled program.

headers.HeaderFormat compiles a log_format into the program and calls split_headers; the regex
in HeaderFormat.match is the reference the kernel must agree with wherever it reports ok.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

# Program opcodes: one (op, arg) row each.
OP_END, OP_LIT, OP_WS, OP_FIELD = 0, 1, 2, 3


@njit(cache=True)
def ws_len_at(buf, p, e):
    """Byte length of the whitespace character at p (str.isspace / regex \\s), 0 when none."""
    if p >= e:
        return 0
    b = buf[p]
    if b == 32 or (9 <= b <= 13) or (28 <= b <= 31):
        return 1
    if b < 0x80:
        return 0
    if b == 0xC2 and p + 1 < e:
        c = buf[p + 1]
        return 2 if (c == 0x85 or c == 0xA0) else 0
    if p + 2 >= e:
        return 0
    c, d = buf[p + 1], buf[p + 2]
    if b == 0xE1:
        return 3 if (c == 0x9A and d == 0x80) else 0
    if b == 0xE2:
        if c == 0x80 and (0x80 <= d <= 0x8A or d == 0xA8 or d == 0xA9 or d == 0xAF):
            return 3
        return 3 if (c == 0x81 and d == 0x9F) else 0
    if b == 0xE3:
        return 3 if (c == 0x80 and d == 0x80) else 0
    return 0


@njit(cache=True)
def ws_len_before(buf, s, e):
    """Byte length of the whitespace character ending at e (for stripping the line end)."""
    if e <= s:
        return 0
    if ws_len_at(buf, e - 1, e) == 1:
        return 1
    if e - 2 >= s and ws_len_at(buf, e - 2, e) == 2:
        return 2
    if e - 3 >= s and ws_len_at(buf, e - 3, e) == 3:
        return 3
    return 0


@njit(cache=True)
def _match_separator(buf, p, e, prog, pc):
    """Match the literal/whitespace ops from pc at p; return the end offset or -1."""
    while True:
        op = prog[pc, 0]
        if op == OP_LIT:
            if p >= e or buf[p] != prog[pc, 1]:
                return -1
            p += 1
        elif op == OP_WS:
            n = ws_len_at(buf, p, e)
            if n == 0:
                return -1
            while n > 0:  # greedy, as the regex's \s+ tries first
                p += n
                n = ws_len_at(buf, p, e)
        else:
            return p
        pc += 1


@njit(cache=True)
def _separator_end_pc(prog, pc):
    while prog[pc, 0] == OP_LIT or prog[pc, 0] == OP_WS:
        pc += 1
    return pc


@njit(cache=True)
def _split_one(buf, s, e, prog, fs, fe, row):
    """Run the program over one stripped line; fill fs/fe and return True on success.

    Fields are lazy: each ends where its separator first matches, which is the regex's first
    choice; when that choice fails later the regex would backtrack, so we report failure.
    """
    pos = s
    pc = 0
    while True:
        op = prog[pc, 0]
        if op == OP_END:
            return pos == e
        if op == OP_LIT or op == OP_WS:
            q = _match_separator(buf, pos, e, prog, pc)
            if q < 0:
                return False
            pos = q
            pc = _separator_end_pc(prog, pc)
            continue
        k = prog[pc, 1]
        sep_pc = pc + 1
        if prog[sep_pc, 0] == OP_END:
            for j in range(pos, e):  # the regex '.' does not match a newline
                if buf[j] == 10:
                    return False
            fs[row, k] = pos
            fe[row, k] = e
            pos = e
            pc = sep_pc
            continue
        after = _separator_end_pc(prog, sep_pc)
        to_end = prog[after, 0] == OP_END
        p = pos
        q = -1
        first_op = prog[sep_pc, 0]
        first_byte = prog[sep_pc, 1]
        while True:
            if p > e:
                return False
            if p < e:
                b = buf[p]
                if b == 10:
                    return False
                # cheap rejection before the full separator match
                if first_op == OP_LIT and b != first_byte:
                    p += 1
                    continue
                if first_op == OP_WS and 32 < b < 0x80:
                    p += 1
                    continue
            q = _match_separator(buf, p, e, prog, sep_pc)
            if q >= 0 and (not to_end or q == e):
                break
            p += 1
        fs[row, k] = pos
        fe[row, k] = p
        pos = q
        pc = after


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I64_2D, kt.INT64), cache=True)
def split_headers(buf, starts, ends, prog, k):
    """Split lines [starts[i], ends[i]) of buf into k fields; returns (ok, field_start, field_end)."""
    n = starts.shape[0]
    ok = np.zeros(n, dtype=np.bool_)
    fs = np.zeros((n, k), dtype=np.int64)
    fe = np.zeros((n, k), dtype=np.int64)
    for i in range(n):
        s, e = _strip(buf, starts[i], ends[i])
        ok[i] = _split_one(buf, s, e, prog, fs, fe, i)
    return ok, fs, fe


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.I64_2D, kt.I64_2D, kt.INT64, kt.INT64), cache=True)
def split_headers_optional(buf, starts, ends, taken, skipped, k, branch):
    """Like split_headers for a format with one optional group, given both linear programs.

    The regex tries, for each end of the branch field in turn, the group first and then without
    it. So the alternative whose branch field ends first wins (the group on a tie), provided
    its kernel run succeeded; otherwise the line is left to the regex (ok=False). Fields of a
    skipped group get an empty span.
    """
    ok1, fs1, fe1 = _split_tracking(buf, starts, ends, taken, k, branch)
    ok2, fs2, fe2 = _split_tracking(buf, starts, ends, skipped, k, branch)
    n = starts.shape[0]
    ok = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        p1 = fe1[i, branch]
        p2 = fe2[i, branch]
        use_taken = p1 >= 0 and (p2 < 0 or p1 <= p2)
        use_skipped = p2 >= 0 and not use_taken
        if use_taken and ok1[i]:
            ok[i] = True
        elif use_skipped and ok2[i]:
            ok[i] = True
            for j in range(k):
                if fe2[i, j] < 0:  # a field of the skipped group: ''
                    fs2[i, j] = p2
                    fe2[i, j] = p2
                fs1[i, j] = fs2[i, j]
                fe1[i, j] = fe2[i, j]
    return ok, fs1, fe1


@njit(cache=True)
def _split_tracking(buf, starts, ends, prog, k, branch):
    """split_headers with -1 in every span the run did not reach, so callers see how far it got."""
    n = starts.shape[0]
    fs = np.full((n, k), -1, dtype=np.int64)
    fe = np.full((n, k), -1, dtype=np.int64)
    ok = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        s, e = _strip(buf, starts[i], ends[i])
        ok[i] = _split_one(buf, s, e, prog, fs, fe, i)
    return ok, fs, fe


@njit(cache=True)
def _strip(buf, s, e):
    while True:  # str.strip(), as logparser does before matching
        w = ws_len_at(buf, s, e)
        if w == 0:
            break
        s += w
    while True:
        w = ws_len_before(buf, s, e)
        if w == 0:
            break
        e -= w
    return s, e


def level_table():
    """The LEVEL_ALIASES of batch.py as arrays for level_codes: (names uint8[m, 16], lengths, codes)."""
    from anomaly_detector.parsing.batch import LEVEL_ALIASES

    names = np.zeros((len(LEVEL_ALIASES), 16), dtype=np.uint8)
    lengths = np.zeros(len(LEVEL_ALIASES), dtype=np.int64)
    codes = np.zeros(len(LEVEL_ALIASES), dtype=np.int64)
    for k, (name, code) in enumerate(sorted(LEVEL_ALIASES.items())):
        raw = name.encode("ascii")
        names[k, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        lengths[k] = len(raw)
        codes[k] = code
    return names, lengths, codes


@kt.entry((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.U8_2D, kt.I64_1D, kt.I64_1D), cache=True)
def level_codes(buf, ls, le, names, lengths, codes):
    """batch.level_code of each span [ls[i], le[i]); -1 where the word is not ASCII (Python decides)."""
    n = ls.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        s, e = ls[i], le[i]
        ascii_only = True
        for j in range(s, e):
            if buf[j] >= 0x80:
                ascii_only = False
                break
        if not ascii_only:
            out[i] = -1
            continue
        while s < e and ws_len_at(buf, s, e) == 1:
            s += 1
        while e > s and ws_len_at(buf, e - 1, e) == 1:
            e -= 1
        out[i] = lookup_level(buf, s, e, names, lengths, codes)
    return out


@njit(cache=True, _nrt=False)
def lookup_level(buf, s, e, names, lengths, codes):
    """Code of the ASCII word buf[s:e], upper-cased, in the level_table; 0 when it is not a level."""
    length = e - s
    for k in range(names.shape[0]):
        if lengths[k] != length:
            continue
        same = True
        for j in range(length):
            c = buf[s + j]
            if 97 <= c <= 122:
                c -= 32
            if c != names[k, j]:
                same = False
                break
        if same:
            return codes[k]
    return 0
