"""`anomaly_detector replay`: the offline backtest; its record (docs/cli.md) is a fixed contract.

Reads FILEs in order through pipeline.Pipeline (the daemon's parsing and models) and writes one
JSON record per input line; optionally the incidents as JSON lines and the learned state.
"""
import json
import os
import resource
import sys
import time
from collections import Counter

import click

from ..config.loader import REPLAY, default_config, load_config
from ..config.problems import ERROR
from ..detection.situations import situations_of
from ..parsing.headers import HeaderFormat, HeaderFormatError
from ..parsing.sources import SourceFieldsError
from ..pipeline import Pipeline
from ..storage.atomic import set_generations
from ..storage.layout import replay_paths

EXIT_INVALID, EXIT_RUNTIME = 1, 3


def _config(path):
    if not path:
        return default_config()
    cfg, problems = load_config(path, environment=False, purpose=REPLAY)
    if cfg is None:
        for problem in problems:
            if problem.severity == ERROR:
                click.echo(problem.render(), err=True)
        raise SystemExit(EXIT_INVALID)
    return cfg


@click.command("replay")
@click.option("--config", "config_path", default=None, metavar="CFG",
              help="INI config (optional; built-in defaults without it; [inputs] is ignored).")
@click.option("--format", "fmt", type=click.Choice(["plain", "jsonl", "auto"]), default="auto", show_default=True,
              help="Line framing of the FILEs.")
@click.option("--log-format", default="", metavar="FMT", help='Loghub header format, e.g. "<Date> <Time> <Level>: <Content>".')
@click.option("--output", "output_path", required=True, metavar="OUT.jsonl", help="One scored record per input line.")
@click.option("--incidents", "incidents_path", default=None, metavar="FILE", help="Write incidents as JSON lines.")
@click.option("--situations", "situations_path", default=None, metavar="FILE",
              help="Write situations (linked incidents of several sources, with a probable first cause) as JSON "
                   "lines, in order of first_seen.")
@click.option("--from-state", default=None, metavar="DIR", help="Start from the models saved in DIR (by --save-state, or a daemon's state_dir: worker 0's).")
@click.option("--save-state", default=None, metavar="DIR", help="Save the learned models into DIR at the end.")
@click.option("--source-fields", default="", metavar="A,B",
              help="Header fields of --log-format whose values name each line's source, joined with '/' "
                   "(e.g. Host,Program).")
@click.option("--source-prefix", type=click.Choice(["auto", "off"]), default="auto", show_default=True,
              help="auto: a `host program[pid]: ` or docker compose `name-1  | ` prefix held by most lines names "
                   "their source; off: each file is one source.")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def replay_command(config_path, fmt, log_format, output_path, incidents_path, situations_path, from_state, save_state,
                   source_fields, source_prefix, files):
    """Score FILEs offline in event time, exactly as the daemon would: one JSON record per input line, in order."""
    cfg = _config(config_path)
    set_generations(cfg["retention"]["snapshot_generations"])
    pipeline = _pipeline(cfg, fmt, log_format, source_fields, source_prefix)
    if from_state and not pipeline.load(replay_paths(from_state)):
        click.echo("replay: nothing to restore in %s; starting from empty models" % from_state, err=True)
    began = time.perf_counter()
    incidents = []
    with open(output_path, "wb") as out:
        for path in files:
            with _progress(path) as advance:
                for chunk in pipeline.process_file(path, progress=advance, buffers=True):
                    out.write(chunk)
            incidents += pipeline.take_incidents()
    incidents += pipeline.finish()
    if incidents_path:
        _write_incidents(incidents_path, incidents)
    if situations_path:
        _write_situations(situations_path, incidents, cfg["situations"])
    if save_state:
        pipeline.save(save_state)
    _summary(pipeline, len(incidents), time.perf_counter() - began)


def _pipeline(cfg, fmt, log_format, source_fields, source_prefix):
    """The Pipeline, or a one-line error (exit 1) when --log-format or --source-fields cannot work."""
    fields = [f.strip() for f in source_fields.split(",") if f.strip()]
    try:
        HeaderFormat(log_format) if log_format else None
        pipeline = Pipeline(cfg, fmt=fmt, log_format=log_format, source_fields=fields, source_prefix=source_prefix)
        pipeline.parser_for("")  # checks --source-fields against --log-format before anything is read
    except (HeaderFormatError, SourceFieldsError) as exc:
        click.echo("replay: %s" % exc, err=True)
        raise SystemExit(EXIT_INVALID) from None
    return pipeline


def _progress(path):
    """A progress bar over the file's bytes on a terminal; a no-op elsewhere."""
    if not sys.stderr.isatty():
        return _NoProgress()
    bar = click.progressbar(length=os.path.getsize(path), label=os.path.basename(path), file=sys.stderr)
    return _BarProgress(bar)


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _BarProgress:
    def __init__(self, bar):
        self.bar = bar

    def __enter__(self):
        self.bar.__enter__()
        return self.bar.update

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)


def _write_incidents(path, incidents):
    incidents = sorted(incidents, key=lambda r: (r["first_seen"], r["id"]))
    with open(path, "w", encoding="utf-8") as f:
        for record in incidents:
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def _write_situations(path, incidents, settings):
    """Every incident in exactly one situation, one JSON line per situation by first_seen (docs/cli.md)."""
    hits = Counter()
    situations = situations_of(incidents, window_seconds=settings["window_seconds"], max_open=settings["max_open"],
                               max_pairs=settings["max_pairs"], max_tokens=settings["max_tokens"],
                               dependencies=settings["dependencies"], on_limit=lambda reason: hits.update([reason]))
    with open(path, "w", encoding="utf-8") as f:
        for record in situations:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    for reason, n in sorted(hits.items()):
        click.echo("replay: [situations] %s reached %d times (see docs/situations.md, Limits)" % (reason, n), err=True)
    click.echo("replay: %d situations of %d incidents" % (len(situations), len(incidents)), err=True)


def _summary(pipeline, n_incidents, seconds):
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rate = pipeline.lines / seconds if seconds > 0 else 0.0
    click.echo("replay: %d lines, %d anomalous, %d incidents in %.1fs (%.0f lines/s), peak RSS %.0f MiB"
               % (pipeline.lines, pipeline.anomalies, n_incidents, seconds, rate, peak_mib), err=True)
