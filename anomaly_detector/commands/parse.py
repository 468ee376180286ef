"""`anomaly_detector parse`: mine templates of log files offline and write them in the Loghub layout.

Uses records.parse_columns (framing, cleaning, header split) and miner.TemplateMiner; writes with
parsing.loghub_csv, whose kernels render the rows from byte spans (no Python call per line, only
for the rare rows they leave). Registered in cli.py beside replay.
"""
import os
import sys

import click
import numpy as np

from ..parsing.headers import HeaderFormat, HeaderFormatError
from ..parsing.loghub_csv import SpanRows, distinct_ids, write_loghub_spans
from ..parsing.miner import TemplateMiner
from ..parsing.records import RecordParser, parse_columns

EXIT_UNREADABLE, EXIT_USAGE = 1, 2


def _fail(message, code):
    click.echo("parse: error: %s" % message, err=True)
    raise SystemExit(code)


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        _fail("cannot read %s: %s" % (path, exc.strerror or exc), EXIT_UNREADABLE)


class _SplitRecorder:
    """Stands in for parser.header and keeps the header split parse_columns makes with it.

    parse_columns splits the header lines of a buffer with one HeaderFormat.split_batch call and
    builds a line's fields from those spans unless it took the per-line path; the writer reuses the
    same spans instead of splitting every line a second time (a second split costs as much as the
    first: 0.4-0.9 s per million lines). Everything else is the HeaderFormat's own.
    """

    def __init__(self, header):
        self._header = header
        self.last = None

    def __getattr__(self, name):
        return getattr(self._header, name)

    def split_batch(self, buf, starts, ends):
        got = self._header.split_batch(buf, starts, ends)
        self.last = (buf, starts, ends) + tuple(got)
        return got

    @classmethod
    def attach(cls, parser):
        if parser.header is not None:
            parser.header = cls(parser.header)
        return parser.header


def _field_spans(parser, columns, header_fields, split):
    """(field starts, field ends, columns of header_fields in them, lines whose fields need Python).

    split: what _SplitRecorder kept (buffer, starts, ends, ok, field starts, field ends) or None.
    A line's spans are used where parse_columns took the kernel path for it, judged without its
    internals: the split of this very buffer succeeded, the line is of auto/plain format and does
    not start with a byte that may route it elsewhere (JSON, syslog, whitespace), and the content
    span of the split is the one parse_columns gave. Every other line gets columns.fields(i).
    """
    n, k = columns.n, len(header_fields)
    if k == 0:
        empty = np.zeros((n, 0), dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.int64), np.zeros(n, dtype=np.bool_)
    buf = columns.content_buf
    if split is None or parser.format not in ("auto", "plain") or len(split[3]) != n or not _prefix_of(split[0], buf):
        empty = np.zeros((n, 1), dtype=np.int64)
        return empty, empty, np.zeros(k, dtype=np.int64), np.ones(n, dtype=np.bool_)
    _, starts, ends, ok, fs, fe = split
    hdr = parser.header
    ci = hdr.content_index
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))]
    ok = ok & (ends > starts) & (first > 32) & (first < 127) & (first != ord("{")) & (first != ord("<"))
    ok &= (fs[:, ci] == columns.content_start) & (fe[:, ci] == columns.content_end)
    cols = np.array([hdr.fields.index(name) for name in header_fields], dtype=np.int64)
    return np.ascontiguousarray(fs), np.ascontiguousarray(fe), cols, ~ok


def _prefix_of(part, buf):
    """Whether buf begins with the bytes of part (content_buf is the cleaned buffer, then extra contents)."""
    if part is buf:
        return True
    return len(part) <= len(buf) and np.array_equal(np.asarray(part), buf[:len(part)])


def _span_rows(parser, columns, split, final, templates, header_fields):
    buf = columns.content_buf
    fs, fe, cols, python_fields = _field_spans(parser, columns, header_fields, split)

    def row(i):  # a row as write_loghub takes it, for the few lines the kernels leave
        lo, hi = final.param_ptr[i], final.param_ptr[i + 1]
        params = [bytes(buf[a:b]).decode("utf-8", "replace") for a, b in
                  zip(final.param_start[lo:hi].tolist(), final.param_end[lo:hi].tolist())]
        tid = int(final.template_id[i])
        return i + 1, columns.fields(i) or {}, columns.content(i), tid, templates[tid], params

    return SpanRows(buf, fs, fe, cols, np.asarray(columns.content_start, dtype=np.int64),
                    np.asarray(columns.content_end, dtype=np.int64), final.template_id,
                    np.asarray(final.param_ptr, dtype=np.int64), np.asarray(final.param_start, dtype=np.int64),
                    np.asarray(final.param_end, dtype=np.int64), python_fields, row)


def _parse_file(path, miner, parser):
    """(path, parser, columns, header split kept, mined) of one input."""
    recorder = _SplitRecorder.attach(parser)
    data = _read(path)
    columns = parse_columns(parser, data)
    split = recorder.last if recorder is not None else None
    mined = miner.add_batch(columns.content_buf, columns.content_start, columns.content_end)
    return path, parser, columns, split, mined


def _write(path, parser, columns, split, mined, miner, header_fields, output_dir):
    """Write the two files of one input; returns (structured path, number of templates of its lines)."""
    # extract gives each line's parameters and id against the templates as they are after every file
    final = miner.extract(columns.content_buf, columns.content_start, columns.content_end, mined.template_id)
    mined.template_id = final.template_id  # ids merged into a sibling since, as the sibling's
    templates = {tid: text for tid, text, _ in miner.templates()}
    tids, _, counts = distinct_ids(final.template_id)
    for tid in tids.tolist():
        if tid not in templates:
            templates[tid] = miner.template(tid)
    name = os.path.basename(path)
    spans = _span_rows(parser, columns, split, final, templates, header_fields)
    table = [(tid, templates[tid], count) for tid, count in zip(tids.tolist(), counts.tolist())]
    structured, _ = write_loghub_spans(output_dir, name, header_fields, spans, templates, table)
    return structured, len(tids)


@click.command("parse")
@click.option("--log-format", default="", metavar="FMT",
              help='Loghub header format, e.g. "<Date> <Time> <Level> <Component>: <Content>".')
@click.option("--format", "fmt", type=click.Choice(["plain", "jsonl", "syslog", "auto"]), default="auto",
              show_default=True, help="Line framing of the FILEs.")
@click.option("--output-dir", required=True, metavar="DIR", help="Where <name>_structured.csv and "
              "<name>_templates.csv are written.")
@click.option("--max-templates", default=10000, show_default=True, type=click.IntRange(1, 2 ** 31 - 1),
              help="Live templates kept; the least recently seen are evicted beyond it.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def parse_command(log_format, fmt, output_dir, max_templates, files):
    """Mine the templates of FILEs (one miner for all, in order) and write them Loghub-style."""
    try:
        header = HeaderFormat(log_format) if log_format else None
    except HeaderFormatError as exc:
        _fail(str(exc), EXIT_USAGE)
    header_fields = [f for f in header.fields if f != "Content"] if header else []
    miner = TemplateMiner(max_templates=max_templates)
    parsed = []
    show = sys.stderr.isatty()
    with click.progressbar(files, label="parsing", file=sys.stderr if show else open(os.devnull, "w"),
                           show_pos=True) as bar:
        for path in bar:
            parser = RecordParser(format=fmt, log_format=log_format)
            parsed.append(_parse_file(path, miner, parser))
    try:
        for path, parser, columns, split, mined in parsed:
            structured, n_templates = _write(path, parser, columns, split, mined, miner, header_fields, output_dir)
            click.echo("%s: %d lines, %d templates -> %s" % (path, columns.n, n_templates, structured))
    except OSError as exc:
        _fail("cannot write into %s: %s" % (output_dir, exc.strerror or exc), EXIT_UNREADABLE)
