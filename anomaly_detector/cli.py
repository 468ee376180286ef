"""Command line entry point: the runbook's flags on the top-level command, subcommands beside them.

Exit codes (docs/cli.md): 0 success, 1 invalid configuration or failed check, 2 usage error,
3 runtime error. Errors are one line on stderr; --debug shows the traceback.
Subcommands are imported on first use, after the kernel cache is chosen (kernel_cache.py): numba
picks a kernel's cache location when the kernel is defined, so NUMBA_CACHE_DIR is set first. A
command compiles (or loads) its kernels before it runs, with progress on stderr when compiling.
The cyclic garbage collector waits out the start-up (see _start_up_without_gc).
"""
import atexit
import gc
import importlib
import os
import sys

import click

from anomaly_detector import __version__, kernel_cache
from anomaly_detector.config.loader import DEFAULT_CONFIG_PATH, load_config
from anomaly_detector.config.problems import ERROR

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
SUBCOMMANDS = {
    "demo": "anomaly_detector.commands.demo:demo_command",
    "parse": "anomaly_detector.commands.parse:parse_command",
    "replay": "anomaly_detector.commands.replay:replay_command",
}
# Kernels a command needs beyond those its module imports: demo's daemon loads them from the cache
# the command fills, with progress on the user's terminal rather than in a hidden daemon log.
KERNEL_MODULES = {"demo": ("anomaly_detector.worker.warmup",)}
# Commands that run in one process: with a warm cache they load each kernel at its first call.
# demo forks a daemon, whose workers must find their kernels loaded.
LOAD_ON_FIRST_CALL = ("parse", "replay")


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked or listed in --help."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx, name):
        if name in SUBCOMMANDS:
            _use_kernel_cache()
            module, attr = SUBCOMMANDS[name].split(":")
            command = getattr(importlib.import_module(module), attr)
            if not getattr(command, "_kernels_first", False):
                command.callback = _kernels_first(command.callback, KERNEL_MODULES.get(name, ()),
                                                  lazy=name in LOAD_ON_FIRST_CALL)
                command._kernels_first = True
            return command
        return super().get_command(ctx, name)


def _use_kernel_cache(numba_cache_dir="", state_dir="", echo=True):
    """Choose the kernel cache before any kernel module is imported; a problem is one warning line
    (the daemon logs it at warm-up instead)."""
    if kernel_cache.CHOSEN:
        return
    _path, warning = kernel_cache.use_cache_dir(numba_cache_dir, state_dir)
    if warning and echo:
        click.echo("anomaly_detector: warning: %s" % warning, err=True)


def _kernels_first(callback, modules, lazy=False):
    """The command's callback, after its kernels are compiled or loaded (progress on stderr)."""
    def run_command(*args, **kwargs):
        for module in modules:
            importlib.import_module(module)
        kernel_cache.prepare_kernels(kernel_cache.TerminalProgress(), lazy=lazy)
        _start_up_done()
        return callback(*args, **kwargs)
    run_command.__name__, run_command.__doc__ = callback.__name__, callback.__doc__
    return run_command


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="ANOMALY_DETECTOR_CONFIG", default=DEFAULT_CONFIG_PATH,
              show_default=True, metavar="PATH", help="INI config file (env: ANOMALY_DETECTOR_CONFIG).")
@click.option("--validate-config", is_flag=True, help="Check the config, print every problem, exit 0 if valid.")
@click.option("--cleanup-old-data", "cleanup", is_flag=True,
              help="Remove data older than [retention] allows (safe while the daemon runs); print what went.")
@click.option("--optimize-models", "optimize", is_flag=True,
              help="Compact the learned models (merge near-duplicate templates); a running daemon applies it.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(__version__, "--version", prog_name="anomaly_detector", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, config_path, validate_config, cleanup, optimize, debug):
    """Watch logs, learn what normal looks like, raise explained alerts.

    Without a command, runs the daemon in the foreground (what systemd runs).
    """
    ctx.obj = {"config_path": config_path, "debug": debug}
    if ctx.invoked_subcommand:
        return
    gc.enable()   # the daemon and the maintenance flags: collected as usual from here (_start_up_without_gc)
    if sum((validate_config, cleanup, optimize)) > 1:
        raise click.UsageError("--validate-config, --cleanup-old-data and --optimize-models: one at a time")
    if validate_config:
        ctx.exit(validate(config_path))
    if cleanup or optimize:
        ctx.exit(maintain(config_path, "cleanup" if cleanup else "optimize"))
    ctx.exit(run(config_path))


def validate(config_path):
    """Print every problem of the config, one per line; return the exit code."""
    _use_kernel_cache(*kernel_cache.configured_paths(config_path))
    _cfg, problems = load_config(config_path)
    for problem in problems:
        click.echo(problem.render(), err=problem.severity == ERROR)
    errors = sum(p.severity == ERROR for p in problems)
    if errors:
        click.echo("%s: %d error(s), %d warning(s): invalid" % (config_path, errors, len(problems) - errors), err=True)
        return EXIT_INVALID
    click.echo("%s: valid (%d warning(s))" % (config_path, len(problems)))
    return EXIT_OK


def maintain(config_path, what):
    """--cleanup-old-data or --optimize-models on the config's state_dir; return the exit code."""
    _use_kernel_cache(*kernel_cache.configured_paths(config_path), echo=False)
    cfg, problems = load_config(config_path)
    if cfg is None:
        for problem in problems:
            click.echo(problem.render(), err=True)
        click.echo("%s: invalid; nothing done" % config_path, err=True)
        return EXIT_INVALID
    if what == "cleanup":
        from anomaly_detector.commands.cleanup import run_cleanup
        return run_cleanup(cfg)
    from anomaly_detector.commands.optimize import run_optimize
    # Compile progress on a terminal only: from cron, anything on stderr is mailed as if it failed.
    kernel_cache.prepare_kernels(kernel_cache.TerminalProgress() if sys.stderr.isatty() else None)
    return run_optimize(cfg)


def run(config_path):
    """Run the daemon until SIGTERM; a broken config is reported like --validate-config does."""
    # Before the config is validated: its checks import parsing modules, which define kernels.
    _use_kernel_cache(*kernel_cache.configured_paths(config_path), echo=False)
    cfg, problems = load_config(config_path)
    for problem in problems:
        click.echo(problem.render(), err=True)
    if cfg is None:
        click.echo("%s: invalid; not starting" % config_path, err=True)
        return EXIT_INVALID
    from anomaly_detector.supervisor.arbiter import Arbiter

    return Arbiter(config_path, cfg).run()


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


def _start_up_without_gc():
    """No cyclic garbage collection while the command starts, and none of the start-up's objects at exit.

    Importing numba and loading the cached kernels makes ~100k objects that live as long as the process,
    and hardly any garbage: the collections the allocations trigger meanwhile only walk them (about
    0.1 CPU s of a command's ~1 s start), and so does the interpreter's last collection at exit (about
    0.2 CPU s more) unless they are frozen first. A replay's or a parse's lines are counted per CPU
    second, start and exit included. _start_up_done (once the kernels are ready) freezes what is there and
    collects as usual from then on; main() unfreezes on its way out, for a caller that goes on (tests)."""
    gc.disable()


# At exit every object goes with the process: the interpreter's last collection need not walk them.
atexit.register(gc.freeze)


def _start_up_done():
    gc.freeze()
    gc.enable()


def main(argv=None):
    """Console-script entry: run the CLI, turning unexpected errors into one line (unless --debug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    # One compute thread per process: the daemon is several processes on few cores, and a
    # threaded BLAS or numba pool busy-waits on every core (set before numpy is imported).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    _start_up_without_gc()
    try:
        cli.main(args=args, prog_name="anomaly_detector")
    except Exception as exc:
        if "--debug" in args:
            raise
        click.echo("anomaly_detector: error: %s (run with --debug for details)" % _one_line(exc), err=True)
        sys.exit(EXIT_RUNTIME)
    finally:
        gc.unfreeze()
        gc.enable()
