"""Write mined lines in the Loghub layout: <name>_structured.csv and <name>_templates.csv.

Used by commands/parse.py; the files are what Loghub's benchmark tools (and bench/loghub_metrics.py)
read. write_structured renders the rows from byte spans with the loghub_kernels numba kernels, a
million lines in a second or two; write_loghub writes the same bytes row by row with csv.writer
(the reference the tests compare with, and the renderer of the few rows the kernels leave).
"""
import csv
import io
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import loghub_kernels as lk

STRUCTURED_SUFFIX = "_structured.csv"
TEMPLATES_SUFFIX = "_templates.csv"
# Rows rendered per kernel call into one reused buffer: bounds the output held in memory (some
# 20 MB for lines of 300 bytes) without a Python call per line.
CHUNK_LINES = 1 << 16


def event_id(tid):
    """The EventId text of a template id."""
    return "E%d" % tid


def structured_header(header_fields):
    return ["LineId", *header_fields, "Content", "EventId", "EventTemplate", "ParameterList"]


def row_cells(header_fields, line_id, fields, content, tid, template, params):
    """The cells of one _structured.csv row, as csv.writer is given them."""
    return [line_id, *(fields.get(k, "") for k in header_fields), content, event_id(tid), template,
            repr(list(params))]


def write_loghub(output_dir, name, header_fields, rows, templates):
    """Write both files for input `name` (its basename) into output_dir, row by row; return their paths.

    header_fields: the log format's field names other than Content, in order.
    rows: iterable of (line_id, {field: value}, content, tid, template, [param, ...]).
    templates: iterable of (tid, template, occurrences).
    Each file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    os.makedirs(output_dir, exist_ok=True)
    structured = os.path.join(output_dir, name + STRUCTURED_SUFFIX)
    with _atomic(structured) as f:
        out = csv.writer(f)
        out.writerow(structured_header(header_fields))
        for row in rows:
            out.writerow(row_cells(header_fields, *row))
    return structured, write_templates(output_dir, name, templates)


def write_templates(output_dir, name, templates):
    """<name>_templates.csv: EventId, EventTemplate, Occurrences per (tid, template, occurrences)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name + TEMPLATES_SUFFIX)
    with _atomic(path) as f:
        out = csv.writer(f)
        out.writerow(["EventId", "EventTemplate", "Occurrences"])
        for tid, template, count in templates:
            out.writerow([event_id(tid), template, count])
    return path


@dataclass
class SpanRows:
    """Lines of one file as byte spans of `buf` (uint8), for write_structured.

    field_start/field_end (n, m) and field_cols (k): the header fields of line i, in header order,
    are the spans [field_start[i, c], field_end[i, c]) for c in field_cols, where python_fields[i]
    is False; content_start/end: Content; tids: template id per line; param_ptr
    (n + 1), param_start, param_end: the parameter spans of line i are ptr[i]..ptr[i + 1].
    row(i) gives the (line_id, fields, content, tid, template, params) tuple write_loghub takes;
    it is asked only for rows the kernels cannot render (python_fields, or parameters that
    repr() escapes).
    """

    buf: np.ndarray
    field_start: np.ndarray
    field_end: np.ndarray
    field_cols: np.ndarray
    content_start: np.ndarray
    content_end: np.ndarray
    tids: np.ndarray
    param_ptr: np.ndarray
    param_start: np.ndarray
    param_end: np.ndarray
    python_fields: np.ndarray
    row: Callable

    @property
    def n(self):
        return len(self.tids)


def distinct_ids(tids):
    """(distinct ids sorted, index of each line's id in them, lines per id) of an id per line.

    np.unique's sort costs 0.1-0.2 s per million lines; ids are small non-negative counters, so a
    bincount and a look-up table do it in one pass (np.unique for ids that are not).
    """
    tids = np.asarray(tids, dtype=np.int64)
    if len(tids) == 0 or tids.min() < 0 or tids.max() > 4 * len(tids) + 1024:
        uniq, inverse, counts = np.unique(tids, return_inverse=True, return_counts=True)
        return uniq, inverse.reshape(-1), counts
    counts = np.bincount(tids)
    uniq = np.flatnonzero(counts)
    lookup = np.zeros(len(counts), dtype=np.int64)
    lookup[uniq] = np.arange(len(uniq))
    return uniq, lookup[tids], counts[uniq]


def write_structured(output_dir, name, header_fields, spans, templates):
    """<name>_structured.csv from SpanRows, byte for byte what write_loghub writes; returns its path.

    templates: {tid: template text} for every tid of the lines.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, name + STRUCTURED_SUFFIX)
    uniq, tpl_row, _ = distinct_ids(spans.tids)
    tpl_pool, tpl_ptr = _pool([_template_piece(int(t), templates[int(t)]) for t in uniq.tolist()])
    py_row, py_pool, py_ptr = _python_rows(header_fields, spans, templates)
    buf = _read_only(spans.buf)
    fields = (spans.field_start, spans.field_end, spans.field_cols)
    lengths = lk.row_lengths(buf, *fields, spans.content_start, spans.content_end, tpl_row, tpl_ptr, spans.param_ptr,
                             spans.param_start, spans.param_end, py_row, py_ptr, 1)
    bounds = list(range(0, spans.n, CHUNK_LINES)) + [spans.n]
    row_end = np.concatenate([[0], np.cumsum(lengths)])
    sizes = row_end[bounds[1:]] - row_end[bounds[:-1]]
    out = np.empty(int(sizes.max()) if len(sizes) else 0, dtype=np.uint8)
    with _atomic(path) as f:
        csv.writer(f).writerow(structured_header(header_fields))
        f.flush()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            size = lk.render_rows(buf, *(a[lo:hi] for a in fields[:2]), spans.field_cols, spans.content_start[lo:hi],
                                  spans.content_end[lo:hi], tpl_row[lo:hi], tpl_pool, tpl_ptr,
                                  spans.param_ptr[lo:hi + 1], spans.param_start, spans.param_end, py_row[lo:hi],
                                  py_pool, py_ptr, lo + 1, out)
            f.buffer.write(memoryview(out)[:size])
    return path


def write_loghub_spans(output_dir, name, header_fields, spans, templates, table):
    """Both files from SpanRows (see write_structured) and (tid, template, occurrences) rows."""
    return write_structured(output_dir, name, header_fields, spans, templates), write_templates(output_dir, name, table)


def _csv_text(cells):
    text = io.StringIO(newline="")
    csv.writer(text).writerow(cells)
    return text.getvalue().encode("utf-8")


def _template_piece(tid, template):
    """`E<tid>,<template cell>,`: the cells every line of the template shares."""
    return _csv_text([event_id(tid), template])[:-2] + b","


def _python_rows(header_fields, spans, templates):
    """Rows the kernels leave, rendered by csv.writer: (row index per line or -1, pool, ptr)."""
    need = np.asarray(spans.python_fields, dtype=np.bool_) | lk.params_need_repr(
        _read_only(spans.buf), spans.param_ptr, spans.param_start, spans.param_end)
    rows = np.flatnonzero(need)
    py_row = np.full(spans.n, -1, dtype=np.int64)
    py_row[rows] = np.arange(len(rows))
    texts = []
    out = csv.writer(_Appender(texts))  # one writer; writerow hands it each whole row in one write()
    for i in rows.tolist():
        out.writerow(row_cells(header_fields, *spans.row(i)))
    if len(texts) != len(rows):
        raise RuntimeError("csv.writer wrote %d pieces for %d rows" % (len(texts), len(rows)))
    return (py_row, *_pool([t.encode("utf-8") for t in texts]))


class _Appender:
    """A file for csv.writer that keeps each write (one whole row) as one string."""

    def __init__(self, texts):
        self.write = texts.append


def _pool(pieces):
    ptr = np.zeros(len(pieces) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    return np.frombuffer(b"".join(pieces) + b"\0", dtype=np.uint8), ptr


def _read_only(a):
    """A read-only view: buffers from bytes are read-only, and one array type means one compiled kernel."""
    view = np.ascontiguousarray(a, dtype=np.uint8).view()
    view.flags.writeable = False
    return view


class _atomic:
    def __init__(self, path):
        self.path = path
        self.tmp = "%s.tmp-%d" % (path, os.getpid())

    def __enter__(self):
        self.f = open(self.tmp, "w", newline="", encoding="utf-8")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            os.unlink(self.tmp)
        return False
