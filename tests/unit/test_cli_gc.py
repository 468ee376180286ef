"""cli.main holds the cyclic garbage collector off through a command's start-up only, freezes what the
start-up made, and leaves the collector as it found it for a caller that goes on; at exit nothing is walked."""
import gc
import os
import subprocess
import sys

import pytest

from anomaly_detector import cli


def test_a_command_runs_collected_and_main_leaves_the_collector_as_usual(tmp_path, monkeypatch):
    seen = {}
    real = cli._start_up_done

    def done():
        seen["during start-up"] = gc.isenabled()
        real()
        seen["once ready"] = (gc.isenabled(), gc.get_freeze_count() > 0)
    monkeypatch.setattr(cli, "_start_up_done", done)
    log = tmp_path / "app.log"
    log.write_text("2026-03-02T10:00:00Z INFO worker took 12 ms\n")
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay", "--output", str(tmp_path / "out.jsonl"), str(log)])
    assert exited.value.code == 0
    assert seen == {"during start-up": False, "once ready": (True, True)}
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_usage_error_leaves_the_collector_as_usual():
    with pytest.raises(SystemExit) as exited:
        cli.main(["replay"])   # neither --output nor a file
    assert exited.value.code == 2
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_everything_is_frozen_before_the_last_collection_at_exit():
    # registered before cli is imported, so it runs after cli's hook (atexit runs hooks last-in first-out)
    script = ("import atexit, gc\n"
              "atexit.register(lambda: print(gc.get_freeze_count() > 0))\n"
              "import anomaly_detector.cli\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert run.returncode == 0 and run.stdout == "True\n", run.stderr
