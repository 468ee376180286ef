"""The single-file release: bin/build-zipapp builds one executable that runs with nothing but a Python.

Slow (opt-in, `-m slow`): the build fetches or reuses the dependency wheels (about a minute), and the
daemon started from the file compiles its numba kernels once per unpacked release (minutes on a busy
host; the unpack directory and kernel cache below are kept between runs, so a re-run loads them).
The copied file runs under an interpreter that has no site-packages (a bare /usr/bin/python3 of the
same version, else this one with -S), so everything it imports must come from the file itself.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from anomaly_detector import __version__
from tests.integration.daemon_harness import NUMBA_CACHE, ROOT, Daemon

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("shiv") is None,
                                 reason="shiv is not installed (pip install '.[release]')")]
SHIV_ROOT = os.path.join("/tmp", "anomaly-detector-test-shiv")   # kept: a re-run unpacks nothing
START_TIMEOUT = 900.0   # a cold kernel compile from the unpacked release, on a loaded 2-core machine


def bare_python(tmp_path):
    """A directory whose `python3` is this Python's version without any site-packages."""
    pybin = tmp_path / "pybin"
    pybin.mkdir()
    system = "/usr/bin/python3"
    version = "%d.%d" % sys.version_info[:2]
    probe = ("import sys, importlib.util; print('%d.%d' % sys.version_info[:2], "
             "importlib.util.find_spec('numpy') is None)")
    if os.path.exists(system):
        out = subprocess.run([system, "-c", probe], capture_output=True, text=True).stdout.split()
        if out == [version, "True"]:
            os.symlink(system, pybin / "python3")
            return str(pybin)
    wrapper = pybin / "python3"
    wrapper.write_text('#!/bin/sh\nexec "%s" -S -E "$@"\n' % getattr(sys, "_base_executable", sys.executable))
    wrapper.chmod(0o755)
    return str(pybin)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "anomaly_detector"
    done = subprocess.run([os.path.join(ROOT, "bin", "build-zipapp"), str(out)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "build-zipapp: built %s" % out in done.stdout
    return str(out)


def run_env(tmp_path):
    return {"PATH": bare_python(tmp_path) + ":/usr/bin:/bin", "HOME": str(tmp_path / "home"),
            "SHIV_ROOT": SHIV_ROOT, "NUMBA_CACHE_DIR": os.path.join(NUMBA_CACHE, "zipapp-release"), "LANG": "C.UTF-8"}


def test_the_release_is_one_executable_file_that_runs_alone(release, tmp_path):
    copied = tmp_path / "install" / "anomaly_detector"
    copied.parent.mkdir()
    shutil.copy2(release, copied)
    kind = subprocess.run(["file", str(copied)], capture_output=True, text=True).stdout
    assert "executable" in kind, kind   # what an install script checks with `file X | grep executable`
    env = run_env(tmp_path)
    assert subprocess.run(["python3", "-c", "import numpy"], env=env, capture_output=True).returncode != 0

    version = subprocess.run([str(copied), "--version"], env=env, cwd=str(tmp_path), capture_output=True,
                             text=True, timeout=600)
    assert version.returncode == 0 and version.stdout.strip() == "anomaly_detector " + __version__, version.stderr

    daemon = Daemon(tmp_path / "d", workers=1)
    valid = subprocess.run([str(copied), "--config", daemon.config, "--validate-config"], env=env,
                           cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert valid.returncode == 0 and "valid" in valid.stdout, valid.stdout + valid.stderr
    broken = tmp_path / "broken.ini"
    broken.write_text("[processing]\nworkers = many\n")
    invalid = subprocess.run([str(copied), "--config", str(broken), "--validate-config"], env=env,
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert invalid.returncode == 1 and "workers" in invalid.stderr, invalid.stderr

    with open(os.path.join(daemon.logs, "app.log"), "w") as f:
        f.writelines("2026-03-02T10:00:%02dZ INFO web-1 GET /item/%d 200 12ms seq=%d\n" % (i % 60, i, i)
                     for i in range(50))
    daemon.stderr = open(os.path.join(daemon.dir, "daemon.stderr"), "ab")
    daemon.process = subprocess.Popen([str(copied), "--config", daemon.config], env=env, cwd=str(tmp_path),
                                      stdout=daemon.stderr, stderr=daemon.stderr)
    try:
        health = daemon.wait_healthy(START_TIMEOUT)
        assert health["status"] == "healthy"
        counts = daemon.wait_scored(50, 120)
        assert sorted(counts) == list(range(50))
        assert daemon.metric("logs_processed_total") >= 50
        assert daemon.stop() == 0
    finally:
        daemon.kill()
