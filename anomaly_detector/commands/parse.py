"""`anomaly_detector parse`: mine templates of log files offline and write them in the Loghub layout.

Uses records.parse_columns (framing, cleaning, header split) and miner.TemplateMiner; writes with
parsing.loghub_csv. Registered in cli.py beside replay.
"""
import os
import sys
from collections import Counter

import click

from ..parsing.headers import HeaderFormat, HeaderFormatError
from ..parsing.loghub_csv import write_loghub
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


def _rows(columns, mined, final, templates, buf):
    for i in range(columns.n):
        tid = int(mined.template_id[i])
        lo, hi = final.param_ptr[i], final.param_ptr[i + 1]
        params = [bytes(buf[a:b]).decode("utf-8", "replace") for a, b in
                  zip(final.param_start[lo:hi].tolist(), final.param_end[lo:hi].tolist())]
        yield i + 1, columns.fields(i) or {}, columns.content(i), tid, templates.get(tid, ""), params


def _parse_file(path, miner, parser, header_fields, output_dir):
    columns = parse_columns(parser, _read(path))
    mined = miner.add_batch(columns.content_buf, columns.content_start, columns.content_end)
    return path, columns, mined


def _write(path, columns, mined, miner, header_fields, output_dir):
    final = miner.extract(columns.content_buf, columns.content_start, columns.content_end, mined.template_id)
    mined.template_id = final.template_id  # ids merged into a sibling since, as the sibling's
    templates = {tid: text for tid, text, _ in miner.templates()}
    counts = Counter(mined.template_id.tolist())
    for tid in counts:
        if tid not in templates:
            templates[tid] = miner.template(tid)
    name = os.path.basename(path)
    rows = _rows(columns, mined, final, templates, columns.content_buf)
    table = [(tid, templates[tid], counts[tid]) for tid in sorted(counts)]
    return write_loghub(output_dir, name, header_fields, rows, table)


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
            parsed.append(_parse_file(path, miner, parser, header_fields, output_dir))
    try:
        for path, columns, mined in parsed:
            structured, templates = _write(path, columns, mined, miner, header_fields, output_dir)
            click.echo("%s: %d lines, %d templates -> %s" % (path, columns.n, len(set(mined.template_id.tolist())),
                                                              structured))
    except OSError as exc:
        _fail("cannot write into %s: %s" % (output_dir, exc.strerror or exc), EXIT_UNREADABLE)
