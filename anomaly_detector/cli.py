"""Command line entry point: the runbook's flags on the top-level command, subcommands beside them.

Exit codes (docs/cli.md): 0 success, 1 invalid configuration or failed check, 2 usage error,
3 runtime error. Errors are one line on stderr; --debug shows the traceback.
"""
import sys

import click

from anomaly_detector import __version__
from anomaly_detector.commands.parse import parse_command
from anomaly_detector.commands.replay import replay_command
from anomaly_detector.config.loader import DEFAULT_CONFIG_PATH, load_config
from anomaly_detector.config.problems import ERROR

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_RUNTIME = 0, 1, 2, 3


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", envvar="ANOMALY_DETECTOR_CONFIG", default=DEFAULT_CONFIG_PATH,
              show_default=True, metavar="PATH", help="INI config file (env: ANOMALY_DETECTOR_CONFIG).")
@click.option("--validate-config", is_flag=True, help="Check the config, print every problem, exit 0 if valid.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(__version__, "--version", prog_name="anomaly_detector", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx, config_path, validate_config, debug):
    """Watch logs, learn what normal looks like, raise explained alerts."""
    ctx.obj = {"config_path": config_path, "debug": debug}
    if ctx.invoked_subcommand:
        return
    if validate_config:
        ctx.exit(validate(config_path))
    click.echo(ctx.get_help(), err=True)
    click.echo("\nanomaly_detector: error: no action given: use --validate-config or a command", err=True)
    ctx.exit(EXIT_USAGE)


cli.add_command(parse_command)
cli.add_command(replay_command)


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


def _one_line(exc):
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


def main(argv=None):
    """Console-script entry: run the CLI, turning unexpected errors into one line (unless --debug)."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=args, prog_name="anomaly_detector")
    except Exception as exc:
        if "--debug" in args:
            raise
        click.echo("anomaly_detector: error: %s (run with --debug for details)" % _one_line(exc), err=True)
        sys.exit(EXIT_RUNTIME)
