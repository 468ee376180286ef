"""`anomaly_detector --optimize-models`: compact every worker's models, running or not; print the figures.

Called by cli.py. The design (why a request, not a file rewrite) is in worker/optimize.py. Here:
1. take `<state_dir>/locks/optimize.lock` (storage/locks.py); held: another run is going, refuse;
2. for each worker directory (the configured workers and any worker-N with models on disk): take its
   `locks/worker-N.lock` exclusively. Got it: no worker N runs, so load its models, compact, save a
   new generation (the previous one kept as .prev) and release. Busy: worker N runs, so write the
   request once and wait ([retention] optimize_wait_seconds) for its worker-N.json result; once every
   running worker answered, the request is removed (a worker started later is not asked again);
3. print one line per worker (before -> after: templates, archived, aliases, bytes of templates.json)
   and a total; on a terminal a progress bar while waiting. A worker that does not answer in time is a
   failure (exit 3) that says so; it applies the request when it gets to it.
"""
import glob
import os
import sys
import time
import uuid

import click

from anomaly_detector.pipeline import Pipeline
from anomaly_detector.storage import locks
from anomaly_detector.storage.layout import WORKER_PREFIX, every_worker_pattern, worker_paths
from anomaly_detector.worker import optimize as requests

POLL_SECONDS = 0.2


def worker_indexes(state_dir, workers):
    """The configured workers and any other worker-N holding models under baselines/."""
    found = set(range(workers))
    for path in glob.glob(every_worker_pattern(state_dir, "baselines")):
        number = os.path.basename(path)[len(WORKER_PREFIX):]
        if number.isdigit():
            found.add(int(number))
    return sorted(found)


def compact_offline(cfg, index, request):
    """Compact worker `index`'s models on disk (its lock held by the caller); the figures."""
    paths = worker_paths(cfg["paths"]["state_dir"], index)
    pipeline = Pipeline(cfg)
    if not pipeline.load(paths) and not os.path.exists(paths.templates):
        return None
    size = requests.file_bytes(paths.templates)
    figures = requests.compact(pipeline, request)
    pipeline.save(paths)
    figures["before"]["bytes"], figures["after"]["bytes"] = size, requests.file_bytes(paths.templates)
    return figures


def _line(index, how, figures):
    b, a = figures["before"], figures["after"]
    return ("worker %d (%s): templates %d -> %d (%d near-duplicates merged), archived %d -> %d, aliases %d -> %d, "
            "templates.json %d -> %d bytes, %d stale archived templates pruned, %d stale shapes dropped"
            % (index, how, b["templates"], a["templates"], figures["merged"], b["archived"], a["archived"],
               b["aliases"], a["aliases"], b["bytes"], a["bytes"], figures["pruned"], figures["shapes_dropped"]))


class _Progress:
    """A bar on a terminal, plain lines otherwise."""

    def __init__(self, total):
        self.bar = click.progressbar(length=total, label="optimizing", file=sys.stderr) \
            if sys.stderr.isatty() else None
        if self.bar is not None:
            self.bar.__enter__()

    def step(self):
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def run_optimize(cfg):
    """The command: see the module docstring; returns the exit code."""
    state_dir, retention = cfg["paths"]["state_dir"], cfg["retention"]
    try:
        own = locks.take(locks.lock_path(state_dir, "optimize"))
    except locks.LockBusy as busy:
        click.echo("anomaly_detector: error: another --optimize-models is running (it holds %s); not started" % busy,
                   err=True)
        return 3
    try:
        return _optimize(cfg, state_dir, retention["optimize_wait_seconds"])
    finally:
        locks.release(own)


def _optimize(cfg, state_dir, wait_seconds):
    indexes = worker_indexes(state_dir, cfg["processing"]["workers"])
    request = requests.make_request(uuid.uuid4().hex, cfg["retention"])
    running, results, failed = [], {}, 0
    progress = _Progress(len(indexes))
    try:
        for index in indexes:
            try:
                fd = locks.take(locks.lock_path(state_dir, "worker-%d" % index))
            except locks.LockBusy:
                running.append(index)
                continue
            try:
                figures = compact_offline(cfg, index, request)
            finally:
                locks.release(fd)
            results[index] = ("on disk", figures)
            progress.step()
        if running:
            requests.write_request(state_dir, request)
            deadline = time.monotonic() + wait_seconds
            waiting = list(running)
            while waiting and time.monotonic() < deadline:
                for index in list(waiting):
                    done = requests.read_json(requests.result_path(state_dir, index))
                    if done and done.get("id") == request["id"]:
                        results[index] = ("running worker", done)
                        waiting.remove(index)
                        progress.step()
                if waiting:
                    time.sleep(POLL_SECONDS)
            if not waiting:     # every worker applied it: a worker started later must not apply it again
                requests.withdraw_request(state_dir)
    finally:
        progress.close()
    totals = [0, 0]
    for index in indexes:
        how, figures = results.get(index, (None, None))
        if how is None:
            failed += 1
            click.echo("anomaly_detector: error: worker %d did not apply the optimization within %g s "
                       "([retention] optimize_wait_seconds); it applies it when it gets to it" % (index, wait_seconds),
                       err=True)
        elif figures is None:
            click.echo("worker %d: no models yet; nothing to optimize" % index)
        else:
            click.echo(_line(index, how, figures))
            totals[0] += figures["before"]["templates"]
            totals[1] += figures["after"]["templates"]
    click.echo("optimize: templates %d -> %d over %d worker(s)%s" % (
        totals[0], totals[1], len(indexes) - failed, ", %d not answered" % failed if failed else ""))
    return 3 if failed else 0
