"""loghub_csv: the span writer (numba kernels) writes byte for byte what csv.writer writes row by row.

The reference is write_loghub fed one row per line, as `parse` wrote before the kernels: the header
fields from Columns.fields(i), the content, the template and repr() of the parameters.
"""
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.commands import parse as parse_cmd
from anomaly_detector.parsing import loghub_csv
from anomaly_detector.parsing import loghub_kernels as lk
from anomaly_detector.parsing import loghub_twins as lk_twins
from anomaly_detector.parsing.headers import LOGHUB_FORMATS
from anomaly_detector.parsing.loghub_csv import write_loghub
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.parsing.records import RecordParser
from tests.unit.test_headers import DATA  # the loghub-2k folder, found once

HDFS = LOGHUB_FORMATS["HDFS"]


SAMPLES = ["Android", "Apache", "HDFS", "Hadoop", "HealthApp", "Linux", "Mac", "OpenStack", "Spark", "Zookeeper"]


def _reference(out_dir, name, header_fields, columns, mined, miner):
    """The files as the row-by-row writer makes them, from the same parsed and mined lines."""
    final = miner.extract(columns.content_buf, columns.content_start, columns.content_end, mined.template_id)
    templates = {tid: text for tid, text, _ in miner.templates()}
    tids = final.template_id.tolist()
    for tid in set(tids):
        templates.setdefault(tid, miner.template(tid))
    buf = columns.content_buf

    def rows():
        for i, tid in enumerate(tids):
            lo, hi = final.param_ptr[i], final.param_ptr[i + 1]
            params = [bytes(buf[a:b]).decode("utf-8", "replace")
                      for a, b in zip(final.param_start[lo:hi].tolist(), final.param_end[lo:hi].tolist())]
            yield i + 1, columns.fields(i) or {}, columns.content(i), tid, templates[tid], params

    table = [(tid, templates[tid], tids.count(tid)) for tid in sorted(set(tids))]
    return write_loghub(str(out_dir), name, header_fields, rows(), table)


def _both(tmp_path, paths, log_format="", fmt="auto", **parser_kw):
    """Parse paths with one miner as `parse` does; (new files, reference files) per path."""
    header_fields = [f for f in RecordParser(log_format=log_format).header.fields if f != "Content"] \
        if log_format else []
    miner = TemplateMiner()
    parsed = [parse_cmd._parse_file(str(p), miner, RecordParser(format=fmt, log_format=log_format, **parser_kw))
              for p in paths]
    got = []
    for path, parser, columns, split, mined in parsed:
        structured, _ = parse_cmd._write(path, parser, columns, split, mined, miner, header_fields,
                                         str(tmp_path / "new"))
        name = os.path.basename(path)
        ref = _reference(tmp_path / "ref", name, header_fields, columns, mined, miner)
        got.append(((structured, str(tmp_path / "new" / (name + loghub_csv.TEMPLATES_SUFFIX))), ref))
    return got


def _assert_same(pairs):
    for new, ref in pairs:
        for a, b in zip(new, ref):
            assert Path(a).read_bytes() == Path(b).read_bytes(), (a, b)


@pytest.mark.parametrize("name", SAMPLES)
def test_same_bytes_on_loghub_samples(tmp_path, name):
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    path = DATA / name / f"{name}_2k.log"
    _assert_same(_both(tmp_path, [path], LOGHUB_FORMATS[name]))
    _assert_same(_both(tmp_path / "plain", [path]))  # no header format: LineId, Content, ...


NASTY = [
    "081109 203615 148 INFO dfs.A: plain words here 12",
    '081109 203615 149 INFO dfs.A: quoted "value" and, a comma 13',
    "081109 203615 150 INFO dfs.A: it's user 'bob' with \\path\\x 14",
    "081109 203615 151 INFO dfs.A: caf\u00e9 na\u00efve \u00a0nbsp \u2028sep 15 \u00e9t\u00e9",
    '081109 203615 152 INFO "dfs,B": field with comma and quote 16',
    "081109 203615 153 INFO dfs.A: tab\there 17 and\tend",
    "081109 203615 154 INFO dfs.A: ",
    "081109 203615  INFO dfs.A: empty pid 18",
    "not a header line at all, with \"quotes\"",
    "   081109 203615 155 WARN dfs.B: indented 19",
    '{"message": "json \\"line\\" 20, with comma", "count": 3, "ok": true}',
    "<13>Mar  2 10:00:01 host app: syslog line 21",
    "081109 203615 156 INFO dfs.A: lone\rCR 22 and \x00 nul \x7f del",
    "081109 203615 157 INFO dfs.A: mixed 'single' and \"double\" 23",
    "081109 203615 158 INFO dfs.A: emoji \U0001f600 and \ud7ff edge 24",
    "081109 203615 159 INFO dfs.A: " + "long " * 60 + "25",
    "",
    "081109 203615 160 INFO dfs.A: value=\"a,b\" next='c\"d' 26",
    "081109 203615 162 INFO dfs.V: user {v} logged in from {v}",
    "081109 203615 163 INFO dfs.V: user {v} logged in from {v}",
    "081109 203615 164 {v} dfs.W: level field varies, value {v}",
]


# values that vary in one position, so that they become parameters: repr() escapes some of them
VALUES = ["a'b", 'c"d', "e\\f", "g,h", "caf\u00e9", "\u00a0", "x", "'", "q\"r's", "7", "\u2028", "t\tu"]


def _nasty_file(path, lines, tail=b"\n"):
    lines = [line.replace("{v}", VALUES[k % len(VALUES)] + str(k)) for k, line in enumerate(lines)]
    raw = "\n".join(lines).encode("utf-8", "surrogatepass") + tail
    raw += b"081109 203615 161 INFO dfs.A: bad utf8 \xff\xfe here 27\n"
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("fmt", ["auto", "plain", "jsonl", "syslog"])
def test_same_bytes_on_nasty_lines(tmp_path, fmt):
    src = _nasty_file(tmp_path / "nasty.log", NASTY * 13)
    _assert_same(_both(tmp_path, [src], HDFS, fmt=fmt))
    _assert_same(_both(tmp_path / "noheader", [src], fmt=fmt))


def test_same_bytes_truncated_lines_and_no_final_newline(tmp_path):
    src = _nasty_file(tmp_path / "cut.log", NASTY, tail=b"")
    with open(src, "ab") as f:
        f.write(b'{"message": "last, unterminated json line"}')
    _assert_same(_both(tmp_path, [src], HDFS, max_line_bytes=60))
    _assert_same(_both(tmp_path / "b", [src], HDFS, fmt="auto"))


def test_same_bytes_across_files_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(loghub_csv, "CHUNK_LINES", 7)
    a = _nasty_file(tmp_path / "a.log", NASTY * 2)
    b = tmp_path / "b.log"  # a later file widens templates of the first; both are written at the end
    b.write_text("".join(f"081109 20361{i % 10} {i} INFO dfs.A: plain words there {i} x{i}\n" for i in range(40)))
    _assert_same(_both(tmp_path, [a, b], HDFS))


@pytest.mark.parametrize("name", ["HDFS", "Linux", "Mac"])
def test_header_fields_come_from_the_split_parse_columns_made(name):
    """The kernels render nearly every row: the writer reuses parse_columns's header split."""
    if DATA is None:
        pytest.skip("Loghub samples not found beside the repo")
    parser = RecordParser(log_format=LOGHUB_FORMATS[name])
    _, _, columns, split, _ = parse_cmd._parse_file(str(DATA / name / f"{name}_2k.log"), TemplateMiner(), parser)
    assert split is not None and len(split[3]) == columns.n
    header_fields = [f for f in parser.header.fields if f != "Content"]
    fs, fe, cols, python_fields = parse_cmd._field_spans(parser, columns, header_fields, split)
    assert python_fields.mean() < 0.01
    for i in np.flatnonzero(~python_fields)[::97].tolist():
        fields = columns.fields(i)
        assert [bytes(columns.content_buf[fs[i, c]:fe[i, c]]).decode() for c in cols] == \
            [fields[f] for f in header_fields]


PIECES = ["a", "b1", " ", "  ", ",", '"', "'", "\\", "\t", "\u00e9", "\u00a0", "\U0001f600", "12", "0x1f",
          "=", ":", "[", "]", "x=\"1,2\"", "'q'", "\r", "\x00", "-", "10.0.0.1", "blk_-42", "\x01", "\x7f", "\n",
          "it's", "C:\\dir\\f"]
messages = st.lists(st.sampled_from(PIECES), max_size=10).map("".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["INFO", "WARN", "E,R", 'W"X', ""]), messages), min_size=1, max_size=25))
def test_same_bytes_on_random_lines(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("rand")
    src = tmp / "r.log"
    lines = [f"081109 203615 {i} {lvl} dfs.C: {msg}" for i, (lvl, msg) in enumerate(rows)]
    src.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n")
    _assert_same(_both(tmp, [src], HDFS))


# ---------------------------------------------------------------- kernels against their twins
def _spans(values):
    pool, starts, ends = b"", [], []
    for v in values:
        starts.append(len(pool))
        pool += v
        ends.append(len(pool))
    return pool, starts, ends


byte_pieces = st.lists(st.sampled_from([p.encode("utf-8", "surrogatepass") for p in PIECES]), max_size=6).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(byte_pieces, min_size=2, max_size=2), byte_pieces,
                          st.lists(byte_pieces, max_size=4), st.booleans()), min_size=1, max_size=12),
       st.integers(1, 10 ** 6))
def test_render_rows_matches_twin(lines, first_id):
    values = [v for fields, content, params, _ in lines for v in (*fields, content, *params)]
    pool, s, e = _spans(values)
    fs, fe, cs, ce, ps, pe, pptr, k = [], [], [], [], [], [], [0], 0
    for _fields, _, params, _ in lines:
        fs.append(s[k:k + 2])
        fe.append(e[k:k + 2])
        cs.append(s[k + 2])
        ce.append(e[k + 2])
        ps += s[k + 3:k + 3 + len(params)]
        pe += e[k + 3:k + 3 + len(params)]
        pptr.append(len(ps))
        k += 3 + len(params)
    tpl_pool = np.frombuffer(b'E1,"a, <*>",E22,b <*>,\0', dtype=np.uint8)
    tpl_ptr = np.array([0, 12, 22], dtype=np.int64)
    tpl_row = np.array([i % 2 for i in range(len(lines))], dtype=np.int64)
    # as in production: rows with a non-ASCII value take the Python path, and some others at random
    py_rows = [i for i, (_, _, params, py) in enumerate(lines) if py or not all(v.isascii() for v in params)]
    py_row = np.full(len(lines), -1, dtype=np.int64)
    py_row[py_rows] = np.arange(len(py_rows))
    py_pool = np.frombuffer(b"".join(b"%d,python row\r\n" % i for i in py_rows) + b"\0", dtype=np.uint8)
    py_ptr = np.array([0] + [len(b"".join(b"%d,python row\r\n" % i for i in py_rows[:j + 1]))
                             for j in range(len(py_rows))], dtype=np.int64)
    arr = dict(buf=np.frombuffer(pool + b"\0", dtype=np.uint8),
               fstart=np.array(fs, dtype=np.int64)[:, ::-1].copy(), fend=np.array(fe, dtype=np.int64)[:, ::-1].copy(),
               fcols=np.array([1, 0], dtype=np.int64),
               cstart=np.array(cs, dtype=np.int64), cend=np.array(ce, dtype=np.int64), tpl_row=tpl_row,
               tpl_pool=tpl_pool, tpl_ptr=tpl_ptr, pptr=np.array(pptr, dtype=np.int64),
               pstart=np.array(ps, dtype=np.int64), pend=np.array(pe, dtype=np.int64), py_row=py_row,
               py_pool=py_pool, py_ptr=py_ptr, first_id=first_id)
    want = lk_twins.render_rows_py(**arr)
    lengths = lk.row_lengths(*(arr[k] for k in ("buf", "fstart", "fend", "fcols", "cstart", "cend", "tpl_row", "tpl_ptr",
                                                "pptr", "pstart", "pend", "py_row", "py_ptr", "first_id")))
    out = np.full(int(lengths.sum()) + 5, 7, dtype=np.uint8)
    size = lk.render_rows(*arr.values(), out)
    assert size == lengths.sum() and out[:size].tobytes() == want.tobytes() and (out[size:] == 7).all()
    need = lk.params_need_repr(arr["buf"], arr["pptr"], arr["pstart"], arr["pend"])
    assert need.tolist() == lk_twins.params_need_repr_py(arr["buf"], arr["pptr"], arr["pstart"], arr["pend"]).tolist()


def test_kernel_rows_are_what_csv_writer_writes():
    """The twin's quoting rules, checked once against csv.writer itself on the hard cells."""
    cells = [b"plain", b"a,b", b'say "hi"', b"cr\rhere", b"", b" lead", b"tab\t", b"caf\xc3\xa9"]
    for cell in cells:
        assert lk_twins._cell_py(cell) == loghub_csv._csv_text(["x", cell.decode()])[2:-2]
    params = ["a", "b,c", 'd"e', ""]
    assert lk_twins._cell_py(b"[" + b", ".join(b"'" + p.encode() + b"'" for p in params) + b"]") \
        == loghub_csv._csv_text(["x", repr(params)])[2:-2]


@pytest.mark.parametrize("tids", [[], [3], [5, 1, 5, 0, 9, 1], [-1, 4, -1], [10 ** 12, 2, 10 ** 12]])
def test_distinct_ids_is_np_unique(tids):
    got = loghub_csv.distinct_ids(np.array(tids, dtype=np.int64))
    want = np.unique(np.array(tids, dtype=np.int64), return_inverse=True, return_counts=True)
    for a, b in zip(got, want):
        assert a.tolist() == b.reshape(-1).tolist()


@pytest.mark.parametrize("raw", [b"", b"\n", b"\n\n   \n", b"081109 203615 1 INFO dfs.A: only line"])
def test_same_bytes_on_empty_and_blank_files(tmp_path, raw):
    src = tmp_path / "e.log"
    src.write_bytes(raw)
    _assert_same(_both(tmp_path, [src], HDFS))
    _assert_same(_both(tmp_path / "p", [src]))


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    src = _nasty_file(tmp_path / "a.log", NASTY)
    out = tmp_path / "new"
    out.mkdir()
    (out / ("a.log" + loghub_csv.STRUCTURED_SUFFIX)).write_bytes(b"old complete file\r\n")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lk, "render_rows", disk_full)
    with pytest.raises(OSError):
        _both(tmp_path, [src], HDFS)
    assert sorted(p.name for p in out.iterdir()) == ["a.log" + loghub_csv.STRUCTURED_SUFFIX]
    assert (out / ("a.log" + loghub_csv.STRUCTURED_SUFFIX)).read_bytes() == b"old complete file\r\n"
