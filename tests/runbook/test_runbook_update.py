"""bin/anomaly-detector-update on a live daemon started through the installed file: a release that runs
and accepts the config replaces it (the old one kept for --rollback); one that is not a release, or
refuses the config, is never installed and nothing is stopped; one that does not come up healthy is
rolled back automatically. The releases are small launchers of this checkout: what the script does with
a file (check, swap by rename, restart, watch /health, roll back) does not depend on what is inside."""
import os
import stat
import sys
import time

from tests.integration.daemon_harness import ROOT
from tests.runbook.runbook_env import Installed

LAUNCHER = '#!/bin/sh\n# release %s\nexec "%s" -m anomaly_detector "$@"\n'
# Runs, says it is a release and accepts the config, but the daemon dies at once.
BROKEN = ('#!/bin/sh\ncase "$*" in\n  --version) echo "anomaly_detector 9.9.9" ;;\n'
          '  *--validate-config*) exit 0 ;;\n  *) echo "broken release" >&2; exit 3 ;;\nesac\n')
NOT_A_RELEASE = '#!/bin/sh\necho "something else 1.0"\n'


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def read(path):
    with open(path) as f:
        return f.read()


def wait_healthy(site, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if site.daemon.get("/health")[0] == 200:
                return site.supervisor_pid()
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("not healthy:\n" + site.daemon.log_tail())


def test_update_installs_a_release_refuses_bad_ones_and_rolls_back_a_failed_start(tmp_path):
    site = Installed(tmp_path)
    bin_dir = os.path.join(site.root, "usr-local-bin")
    os.makedirs(bin_dir)
    executable = write_file(os.path.join(bin_dir, "anomaly_detector"), LAUNCHER % ("1", sys.executable))
    start = ("cd %s && nohup %s --config %s >> %s/daemon.stderr 2>&1 < /dev/null &"
             % (ROOT, executable, site.config, site.daemon.dir))
    env = {"EXECUTABLE": executable, "START_CMD": start, "START_TIMEOUT": "300"}
    try:
        assert os.system(start) == 0
        first = wait_healthy(site)

        bad = write_file(os.path.join(site.root, "not-a-release"), NOT_A_RELEASE)
        done = site.run("anomaly-detector-update", bad, **env)
        assert done.returncode == 1 and "not an anomaly_detector release" in done.stderr, done.stderr
        assert read(executable) == LAUNCHER % ("1", sys.executable) and site.supervisor_pid() == first

        new = write_file(os.path.join(site.root, "anomaly_detector"), LAUNCHER % ("2", sys.executable))
        done = site.run("anomaly-detector-update", new, **env)
        assert done.returncode == 0 and "update successful" in done.stdout, done.stdout + done.stderr
        assert read(executable) == read(new) and read(executable + ".previous") == LAUNCHER % ("1", sys.executable)
        second = wait_healthy(site)
        assert second != first

        broken = write_file(os.path.join(site.root, "broken"), BROKEN)
        # START_TIMEOUT is all the broken release gets (it never answers: without systemd the script waits it
        # out) and also what the rollback's start gets: 12 s is three times a start with the kernels cached
        # on a loaded machine
        done = site.run("anomaly-detector-update", broken, **dict(env, START_TIMEOUT="12"))
        assert done.returncode == 1 and "rolled back" in done.stderr, done.stdout + done.stderr
        assert read(executable) == read(new)              # the release that ran before the failed one
        third = wait_healthy(site)
        assert third not in (first, second)

        done = site.run("anomaly-detector-update", "--rollback", **env)
        assert done.returncode == 0 and "rolled back to anomaly_detector" in done.stdout, done.stdout + done.stderr
        assert read(executable) == read(new)              # .previous is the file the failed update replaced
        wait_healthy(site)
    finally:
        site.stop()
