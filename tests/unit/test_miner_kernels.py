"""Each numba kernel of the template miner against its plain-Python twin, on random log-like input."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing import miner_kernels as mk
from anomaly_detector.parsing import miner_twins as mk_twins

ALL = (1 << 9) - 1
# pieces that exercise every masker: numbers, ids, hex, IPs, uuids, paths, units, dates
PIECES = ["blk_", "-", "12", "3.5", "0x1f", "ffffffff", "deadbee", "10.0.0.1", ":8080", "ms", "KB", "B", " ",
          "  ", "\t", "/var/log/x", "(", ")", "=", ",", "user", "Jul", "Sun,", "abc", ".", "..", "a1b2",
          "123e4567-e89b-12d3-a456-426614174000", "é", "\xff", "KiB", "5.4", "_", "'", "/", "x",
          "[", "]", ":", "{", "}", '"', "!", "?", "<", ">", ";", "jk2", "m", "_m_", "sa-41", "web-01",
          "://", "http", "a-B", "3", "A"]
lines = st.lists(st.sampled_from(PIECES), max_size=14).map("".join)
flag_sets = st.sampled_from([ALL, 0, mk.F_NUMBERS, mk.F_IDS | mk.F_HEX, mk.F_PATH | mk.F_UUID | mk.F_DATETIME,
                             mk.F_SIZE | mk.F_NUMBERS, mk.F_IP, mk.F_DURATION | mk.F_IDS])


def _batch(texts):
    raw = [t.encode("utf-8", "surrogateescape") for t in texts]
    starts, ends, pos = [], [], 0
    for r in raw:
        starts.append(pos)
        ends.append(pos + len(r))
        pos += len(r) + 1
    buf = np.frombuffer(b"\n".join(raw) + b"\n", dtype=np.uint8)
    return buf, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64), raw


@settings(max_examples=150, deadline=None)
@given(lines, flag_sets)
def test_mask_line_matches_twin(text, flags):
    line = text.encode("utf-8", "surrogateescape")
    buf = np.frombuffer(line + b"\n", dtype=np.uint8)
    out = np.zeros(len(line) + 1, dtype=np.uint8)
    n = mk.mask_line(buf, 0, len(line), flags, np.zeros(0, dtype=np.uint8), out)
    assert bytes(out[:n]) == mk_twins.mask_line_py(line, flags)


@settings(max_examples=60, deadline=None)
@given(st.lists(lines, min_size=1, max_size=8), flag_sets, st.integers(0, 2 ** 32))
def test_shape_hashes_match_twin_with_forced_bytes(texts, flags, seed):
    buf, starts, ends, _ = _batch(texts)
    force = (np.random.default_rng(seed).random(len(buf)) < 0.05).astype(np.uint8)
    for f in (np.zeros(0, dtype=np.uint8), force):
        assert (mk.shape_hashes(buf, starts, ends, flags, f) == mk_twins.shape_hashes_py(buf, starts, ends, flags, f)).all()


def test_masking_examples():
    def m(text):
        return mk_twins.mask_line_py(text.encode(), ALL).replace(bytes([mk.MARK]), b"<*>").decode()
    assert m("PacketResponder 1 for block blk_-6952295868487656571 terminating") == \
        "PacketResponder <*> for block blk_<*> terminating"
    assert m("connection from 10.0.0.1:22 at Sun Jul 10 03:55:15 2005") == \
        "connection from <*>:<*> at <*> <*> <*> <*> <*>"
    assert m("size 5.4 KB, took 12ms path /var/log/a.log mask=ffffffff from /10.0.0.1:80") == \
        "size <*> <*>, took <*> path <*> mask=<*> from /<*>:<*>"
    assert m("VM Started (Lifecycle Event)") == "VM Started (Lifecycle Event)"
    assert m("req-123e4567-e89b-12d3-a456-426614174000 done.") == "<*> done."



@pytest.mark.parametrize("text,masked", [
    # a short word with one digit, glued by "_" to a word after it, is part of an identifier
    ("jk2_init() utf8_decode log4j_conf", "jk2_init() utf8_decode log4j_conf"),
    # alone, at the end, with more digits or a digit first, it is an id
    ("u1 cpu0 blk_x9 t761_x jk2_ jk2_3 2x_a abcdef1_a", "<*> <*> blk_<*> <*>_x <*>_ <*> <*>_a <*>_a"),
    # a minus sign after punctuation or at a token's start is the number's; after a word it joins
    ("vCores:-1> x=-5 [-2.5] blk_-69 -7 --3", "vCores:<*>> x=<*> [<*>] blk_<*> <*> -<*>"),
    ("3-4 A-5 a5-6", "<*>-<*> A-<*> <*>-<*>"),
    # values glued by "_", a single letter between them, are one compound id
    ("attempt_1445144423722_0020_m_000000_0 rdd_42_3 container_1445_0020_01_000002", "attempt_<*> rdd_<*> container_<*>"),
    ("job_12_ab_3 x_1_y", "job_<*>_ab_<*> x_<*>_y"),
    # lowercase words joined by "-" ending in a number name an instance: the whole name is the value
    ("to msra-sa-41:9000 mesos-slave-07 web-01 ip-10-0-1-23 (redis-0)", "to <*>:<*> <*> <*> <*> (<*>)"),
    ("UTF-8 MININT-FNANLI5 web-01.corp node-1-backup x_a-1", "UTF-<*> MININT-<*> web-<*> node-<*>-backup x_a-<*>"),
    # a URL with a path is one value after its scheme; without a path, its address run by run
    ("hdfs://msra-sa-41:9000/pjhe/logs/x:0+1234 url=http://a.b/c?x=1, (https://x/y).",
     "hdfs://<*> url=http://<*>, (https://<*>)."),
    ("spark://driver@10.0.0.1:7077 hdfs://msra-sa-41:9000] 1://a/b", "spark://driver@<*>:<*> hdfs://<*>:<*>] <*>://a/b"),
    # what comes before the scheme is masked as usual
    ("xpc_ben@163.com@https://caldav.163.com/x/ s3://bucket/key", "xpc_ben@<*>@https://<*> <*>://<*>"),
    # a whole-token value keeps an opening "=" as it keeps a bracket
    ("=/var/log/x] =123e4567-e89b-12d3-a456-426614174000", "=<*>] =<*>"),
])
def test_names_signs_compound_ids_instances_and_urls(text, masked):
    assert _masked(text) == masked


def test_new_rules_follow_their_switches():
    # numbers only: no id, so "msra-sa-41" is masked as before, by its number run
    assert _masked("msra-sa-41 x=-5 a_1_2", mk.F_NUMBERS) == "msra-sa-<*> x=<*> a_<*>"
    # paths off: a URL is masked run by run
    assert _masked("hdfs://h:1/a/b", ALL & ~mk.F_PATH) == "hdfs://h:<*>/a/b"
    # nothing on: the minus sign and the underscores stay
    assert _masked("x=-5 a_1_2 web-01", 0) == "x=-5 a_1_2 web-01"

# digits, separators and letters that reach every branch of the date/time grammar and its edges
DATE_PIECES = ["0", "1", "2", "3", "5", "9", "00", "12", "14", "19", "20", "24", "31", "59", "60", "2026", "1899",
               ":", "-", "/", ".", ",", "+", "_", "=", "T", "Z", "Mar", "mar", "[", "]", "(", "'", "x", " "]
date_lines = st.lists(st.sampled_from(DATE_PIECES), max_size=24).map("".join)


def _masked(text, flags=ALL):
    """The masked form of text with <*>, after checking that kernel and twin agree on it."""
    line = text.encode()
    buf = np.frombuffer(line + b"\n", dtype=np.uint8)
    out = np.zeros(len(line) + 1, dtype=np.uint8)
    n = mk.mask_line(buf, 0, len(line), flags, np.zeros(0, dtype=np.uint8), out)
    assert bytes(out[:n]) == mk_twins.mask_line_py(line, flags)
    return bytes(out[:n]).replace(bytes([mk.MARK]), b"<*>").decode()


@settings(max_examples=400, deadline=None)
@given(date_lines, st.sampled_from([ALL, mk.F_DATETIME, ALL & ~mk.F_DATETIME]))
def test_datetime_masking_matches_twin(text, flags):
    _masked(text, flags)


@pytest.mark.parametrize("text,masked", [
    # Apache/CLF: the date-time after "[" and its zone, one value each; the brackets stay
    ('1.2.3.4 - - [02/Mar/2026:10:00:00 +0000] "GET / HTTP/1.1"', '<*> - - [<*> <*>] "GET / HTTP/<*>"'),
    ("[2/Mar/2026:10:00:00 -0700]", "[<*> <*>]"),
    ("at 02/Mar/2026", "at <*>"),
    # ISO 8601, with fraction and zone; a date then a clock token are two values
    ("at 2026-03-02T10:00:00 ok", "at <*> ok"),
    ("at 2026-03-02T10:00:00.123Z ok", "at <*> ok"),
    ("at 2026-03-02T10:00:00+01:00 ok", "at <*> ok"),
    ("at 2026-03-02 10:00:00.123 ok", "at <*> <*> ok"),
    ("at 2026-03-02 10:00:00 +0100 ok", "at <*> <*> <*> ok"),
    # clock times and dates alone
    ("t 10:00:00 10:00:00.123 10:00:00,123 7:05:03", "t <*> <*> <*> <*>"),
    ("d 2026-03-02 2026/03/02 2017/7/1 02.03.2026", "d <*> <*> <*> <*>"),
    # inside a token: after "=", an opening bracket or quote; punctuation after it stays
    ('when=2017-07-01 ts="2026-03-02T10:00:00Z" (10:00:00) 06:00:00. 19:52:56,',
     'when=<*> ts="<*>" (<*>) <*>. <*>,'),
    ("[09:21:58.929] Byte flume", "[<*>] Byte flume"),
])
def test_dates_and_times_are_one_value(text, masked):
    assert _masked(text) == masked


@pytest.mark.parametrize("text,masked", [
    ("version 1.2.3 build 10.12.1", "version <*> build <*>"),
    ("from 10.0.0.1:80 to host:8080 ratio 3/4 of 12/40", "from <*>:<*> to host:<*> ratio <*>/<*> of <*>/<*>"),
    ("mac 00:11:22:33:44:55 at 12:30", "mac <*>:<*>:<*>:<*>:<*>:<*> at <*>:<*>"),
    # out-of-range fields, glued text and a zone not after a date stay as they were
    ("bad 25:00:00 10:61:00 2026-13-02 1800-01-01 2026-03-02_13", "bad <*>:<*>:<*> <*>:<*>:<*> <*>-<*>-<*> "
     "<*>-<*>-<*> <*>-<*>-<*>"),
    ("x10:00:00 file-2026-03-02.log 10:00:00x offset +0000 count 5 -0700]",
     "<*>:<*>:<*> file-<*>-<*>-<*> <*>:<*>:<*> offset +<*> count <*> <*>]"),
])
def test_non_dates_keep_their_masking(text, masked):
    assert _masked(text) == masked


def test_datetime_switch_off_keeps_run_masking():
    flags = ALL & ~mk.F_DATETIME
    assert _masked("[02/Mar/2026:10:00:00 +0000] at 10:00:00.123", flags) == "[<*>/Mar/<*>:<*>:<*>:<*> +<*>] at <*>:<*>:<*>"


def test_masked_shape_survives_redrawn_digits():
    rng = np.random.default_rng(1)
    text = b"blk_38865049064139660 10.250.19.102:50010 took 1.5ms size 93.0 B at 0x7f3a uid=509"
    redrawn = bytes(48 + int(rng.integers(10)) if 48 <= c <= 57 else c for c in text)
    assert mk_twins.mask_line_py(text, ALL) == mk_twins.mask_line_py(redrawn, ALL)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=30), st.integers(1, 10))
def test_table_and_assign_slots_match_twin(keys_in, stop):
    keys = np.zeros(64, dtype=np.uint64)
    vals = np.full(64, -1, dtype=np.int32)
    table = {}
    for k in sorted(set(keys_in))[:stop]:
        mk.table_put(keys, vals, np.uint64(k * 7919), np.int32(k % 5))
        table[k * 7919] = k % 5
    hashes = np.array([k * 7919 for k in keys_in], dtype=np.uint64)
    got = [np.zeros(len(hashes), dtype=np.int32), np.zeros(5, dtype=np.int64), np.zeros(5, dtype=np.int64)]
    want = [np.zeros(len(hashes), dtype=np.int32), np.zeros(5, dtype=np.int64), np.zeros(5, dtype=np.int64)]
    first = 0
    while first < len(hashes):
        a = mk.assign_slots(hashes, first, keys, vals, got[1], got[2], 100, got[0])
        b = mk_twins.assign_slots_py(hashes, first, table, want[1], want[2], 100, want[0])
        assert a == b
        first = a + 1
    for g, w in zip(got, want):
        assert (g == w).all()
    for k in set(keys_in):
        assert mk.table_find(keys, vals, np.uint64(k * 7919)) == table.get(k * 7919, -1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 7), st.integers(0, 2 ** 32))
def test_equal_tokens_matches_twin(rows, width, seed):
    rng = np.random.default_rng(seed)
    tpl = rng.integers(0, 3, size=(rows, width)).astype(np.uint64)
    line = rng.integers(0, 3, size=width).astype(np.uint64)
    assert (mk.equal_tokens(tpl, line) == mk_twins.equal_tokens_py(tpl, line)).all()


glob_tokens = st.lists(st.sampled_from(["a", "=", "<*>", "_", "x1", ""]), min_size=1, max_size=5).map(
    lambda parts: "".join(parts).replace("<*>", "\xff").encode("latin-1"))
# or a span (any run of value-only tokens)
tmpl_tokens = st.one_of(glob_tokens, st.just(mk.SPAN))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(lines, st.lists(tmpl_tokens, min_size=1, max_size=4)), min_size=1, max_size=5))
def test_extract_params_matches_twin(cases):
    texts = [t for t, _ in cases]
    buf, starts, ends, raw = _batch(texts)
    pool, tt_start, tt_end, tt_marks, first, nscan, nwild = bytearray(), [], [], [], [], [], []
    for _, toks in cases:
        first.append(len(tt_start))
        marks = [mk.pool_token(t)[1] for t in toks]
        nscan.append(max([k + 1 for k, c in enumerate(marks) if c] + [0]))
        nwild.append(sum(abs(c) for c in marks))
        for t in toks:
            tt_start.append(len(pool))
            pool += mk.pool_token(t)[0]
            tt_end.append(len(pool))
            tt_marks.append(mk.pool_token(t)[1])
    slots = np.arange(len(cases), dtype=np.int32)
    ptr = np.concatenate([[0], np.cumsum(nwild)]).astype(np.int64)
    max_marks = max(mk.pool_token(t)[1] for _, toks in cases for t in toks)
    pos, hsh, num, cs, ce = mk.extract_params(
        buf, starts, ends, slots, np.array(first, dtype=np.int64), np.array(nscan, dtype=np.int64),
        np.array(tt_start, dtype=np.int64), np.array(tt_end, dtype=np.int64), np.array(tt_marks, dtype=np.int64),
        # the pool writable, as the miner's is and the kernel is declared: a read-only one would compile it again
        np.frombuffer(bytearray(bytes(pool) + b"\0"), dtype=np.uint8), max_marks, ptr, ALL, np.zeros(0, np.uint8))
    for k, (_, toks) in enumerate(cases):
        want = mk_twins.line_params_py(raw[k], toks)
        lo, hi = ptr[k], ptr[k + 1]
        assert [(o, a + starts[k], b + starts[k]) for o, a, b in want] == list(zip(pos[lo:hi], cs[lo:hi], ce[lo:hi]))
        keys = mk_twins.param_key_spans_py(raw[k], toks)
        for j, (_, a, b), (ka, kb) in zip(range(lo, hi), want, keys):
            assert hsh[j] == mk_twins.fnv_py(raw[k][ka:kb])
            w = mk_twins.parse_number_py(raw[k][a:b])
            assert (math.isnan(w) and math.isnan(num[j])) or w == num[j]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789.-+eKBms x", max_size=10))
def test_parse_number_matches_twin(text):
    data = text.encode()
    got = mk.parse_number(np.frombuffer(data + b"\0", dtype=np.uint8), 0, len(data))
    want = mk_twins.parse_number_py(data)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_parse_number_strips_units():
    def p(s):
        return mk_twins.parse_number_py(s.encode())
    assert p("12ms") == 12.0 and p("-3") == -3.0 and p("5.5KB") == 5.5
    assert math.isnan(p("0x1f")) and math.isnan(p("10.0.0.1")) and math.isnan(p("abc"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_fnv_spans_matches_twin(tokens):
    lengths = np.array([len(t) for t in tokens], np.int64)
    ends = np.cumsum(lengths)
    got = mk.fnv_spans(np.frombuffer(b"".join(tokens), np.uint8), ends - lengths, ends)
    assert got.tolist() == [mk_twins.fnv_py(t) for t in tokens]
