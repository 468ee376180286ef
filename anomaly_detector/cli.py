"""Command line entry point: the runbook's flags on the top-level command, subcommands beside them.

Exit codes (docs/cli.md): 0 success, 1 invalid configuration or failed check, 2 usage error,
3 runtime error. Errors are one line on stderr; --debug shows the traceback.
Subcommands are imported on first use, so the daemon can point NUMBA_CACHE_DIR at its state
directory before any numba kernel is defined (numba picks the cache location at definition).
"""
import importlib
import os
import sys

import click

from anomaly_detector import __version__
from anomaly_detector.config.loader import DEFAULT_CONFIG_PATH, load_config
from anomaly_detector.config.problems import ERROR

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3
SUBCOMMANDS = {
    "demo": "anomaly_detector.commands.demo:demo_command",
    "parse": "anomaly_detector.commands.parse:parse_command",
    "replay": "anomaly_detector.commands.replay:replay_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported when they are invoked or listed in --help."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx, name):
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="ANOMALY_DETECTOR_CONFIG", default=DEFAULT_CONFIG_PATH,
              show_default=True, metavar="PATH", help="INI config file (env: ANOMALY_DETECTOR_CONFIG).")
@click.option("--validate-config", is_flag=True, help="Check the config, print every problem, exit 0 if valid.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(__version__, "--version", prog_name="anomaly_detector", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, config_path, validate_config, debug):
    """Watch logs, learn what normal looks like, raise explained alerts.

    Without a command, runs the daemon in the foreground (what systemd runs).
    """
    ctx.obj = {"config_path": config_path, "debug": debug}
    if ctx.invoked_subcommand:
        return
    if validate_config:
        ctx.exit(validate(config_path))
    ctx.exit(run(config_path))


def validate(config_path):
    """Print every problem of the config, one per line; return the exit code."""
    _cfg, problems = load_config(config_path)
    for problem in problems:
        click.echo(problem.render(), err=problem.severity == ERROR)
    errors = sum(p.severity == ERROR for p in problems)
    if errors:
        click.echo("%s: %d error(s), %d warning(s): invalid" % (config_path, errors, len(problems) - errors), err=True)
        return EXIT_INVALID
    click.echo("%s: valid (%d warning(s))" % (config_path, len(problems)))
    return EXIT_OK


def run(config_path):
    """Run the daemon until SIGTERM; a broken config is reported like --validate-config does."""
    cfg, problems = load_config(config_path)
    for problem in problems:
        click.echo(problem.render(), err=True)
    if cfg is None:
        click.echo("%s: invalid; not starting" % config_path, err=True)
        return EXIT_INVALID
    _use_state_dir_for_numba_cache(cfg)
    from anomaly_detector.supervisor.arbiter import Arbiter

    return Arbiter(config_path, cfg).run()


def _use_state_dir_for_numba_cache(cfg):
    """NUMBA_CACHE_DIR from the config unless the environment (systemd's unit) sets it already."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = cfg["paths"]["numba_cache_dir"] or os.path.join(cfg["paths"]["state_dir"], "numba-cache")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        click.echo("anomaly_detector: warning: numba cache %s not usable (%s); kernels compile at every start"
                   % (path, exc.strerror), err=True)
        return
    os.environ["NUMBA_CACHE_DIR"] = path


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


def main(argv=None):
    """Console-script entry: run the CLI, turning unexpected errors into one line (unless --debug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    # One compute thread per process: the daemon is several processes on few cores, and a
    # threaded BLAS or numba pool busy-waits on every core (set before numpy is imported).
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    try:
        cli.main(args=args, prog_name="anomaly_detector")
    except Exception as exc:
        if "--debug" in args:
            raise
        click.echo("anomaly_detector: error: %s (run with --debug for details)" % _one_line(exc), err=True)
        sys.exit(EXIT_RUNTIME)
