"""--cleanup-old-data and --optimize-models against a LIVE daemon (daemon_harness: the real daemon on free
ports): cleanup removes what [retention] lets go while the daemon scores on, no line lost and every kept
generation of its state in place; optimize is applied by the running worker (its template count drops
for near-duplicates it learned, the lines that follow are scored under the merged template), and a
second optimize while one holds the lock is refused with a clear message."""
import fcntl
import json
import os
import re
import subprocess
import sys
import threading
import time

from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.storage.atomic import generation_paths
from anomaly_detector.storage.layout import worker_paths
from tests.integration.daemon_harness import NUMBA_CACHE, ROOT, Daemon, loss_and_duplicates, numbered_line

OLD = time.time() - 400 * 86400
JOBS = ("alpha", "bravo", "charlie")


def command(daemon, flag):
    env = dict(os.environ, NUMBA_CACHE_DIR=NUMBA_CACHE, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "anomaly_detector", "--config", daemon.config, flag],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def plant(path, size=100):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (OLD, OLD))
    return path


def set_snapshot_interval(daemon, seconds):
    with open(daemon.config) as f:
        text = f.read()
    with open(daemon.config, "w") as f:
        f.write(text.replace("snapshot_interval_seconds = 5", "snapshot_interval_seconds = %d" % seconds))


def test_cleanup_while_the_daemon_runs_removes_old_files_and_loses_no_line(tmp_path):
    daemon = Daemon(tmp_path, workers=2)
    set_snapshot_interval(daemon, 1)     # generations rotate all the time while cleanup looks at them
    state = os.path.join(daemon.dir, "state")
    log_dir = os.path.join(daemon.dir, "log")
    planted = [plant(os.path.join(log_dir, "anomaly-detector.log.3.gz")), plant(os.path.join(log_dir, "access.log.1")),
               plant(os.path.join(state, "baselines", "worker-0", "templates.json.bad-20250101T000000Z")),
               plant(os.path.join(state, "baselines", "worker-0", "templates.json.prev7")),
               plant(os.path.join(state, "dead-letter", "dead-letter.jsonl.1"))]
    retired = os.path.join(state, "statistics", "worker-6")
    plant(os.path.join(retired, "detection.json"))
    os.utime(retired, (OLD, OLD))
    total = 30000
    try:
        daemon.start()
        app = os.path.join(daemon.logs, "app.log")

        def feed():
            with open(app, "a") as f:
                for start in range(0, total, 1000):
                    f.write("".join(numbered_line(i) for i in range(start, start + 1000)))
                    f.flush()
                    time.sleep(0.2)
        writer = threading.Thread(target=feed)
        writer.start()
        runs = [command(daemon, "--cleanup-old-data") for _ in range(3)]   # while lines flow and snapshots rotate
        writer.join()
        first = runs[0]
        assert first.returncode == 0, first.stderr
        for path in planted + [retired]:
            assert "removed %s " % path in first.stdout, first.stdout
            assert not os.path.exists(path)
        assert "cleanup: 6 removed" in first.stdout, first.stdout
        assert all(r.returncode == 0 and "cleanup: 0 removed, 0 B freed" in r.stdout for r in runs[1:]), runs[1:]
        counts = daemon.wait_scored(total, 240)
        lost, _duplicates = loss_and_duplicates(counts, total)
        assert not lost, (len(lost), daemon.log_tail())
        time.sleep(3)    # a few more snapshots: each worker's kept generations are all there, whole
        for w in (0, 1):
            for path in generation_paths(worker_paths(state, w).templates)[:2]:
                assert os.path.exists(path), path
        assert not command(daemon, "--cleanup-old-data").stdout.count("removed /")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert "Traceback" not in open(os.path.join(daemon.dir, "daemon.stderr")).read()


def job_line(i, name):
    return "2026-03-02T11:%02d:%02d.%03dZ INFO sched job %s finished successfully on node %d after retry seq=%d\n" % (
        (i // 1000) // 60 % 60, (i // 1000) % 60, i % 1000, name, i % 7, i)


def test_optimize_on_a_running_daemon_is_applied_by_its_worker_and_a_second_one_is_refused(tmp_path):
    daemon = Daemon(tmp_path, workers=2, extra="[retention]\nmerge_min_values = 3\n")
    state = os.path.join(daemon.dir, "state")
    app = os.path.join(daemon.logs, "app.log")
    try:
        daemon.start()
        with open(app, "a") as f:
            f.write("".join(job_line(i, JOBS[i % 3]) for i in range(300)))
        assert len(daemon.wait_scored(300, 180)) == 300, daemon.log_tail()
        templates_before = {json.loads(line)["template"] for line in open(daemon.scored) if "sched job" in line}
        assert len(templates_before) == 3, templates_before    # three words: the miner keeps three events

        lock = os.path.join(state, "locks", "optimize.lock")   # another optimize in progress holds it
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        with open(lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            refused = command(daemon, "--optimize-models")
        assert refused.returncode == 3
        assert refused.stderr.strip() == ("anomaly_detector: error: another --optimize-models is running (it holds "
                                          "%s); not started" % lock), refused.stderr

        done = command(daemon, "--optimize-models")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split(":")[0] for line in lines[:2]] == ["worker 0 (running worker)", "worker 1 (running worker)"]
        assert "(2 near-duplicates merged)" in done.stdout and "optimize: templates " in lines[-1], done.stdout
        deadline = time.monotonic() + 10     # the sidecar reads each worker's counters once a second
        while time.monotonic() < deadline and (daemon.metric("templates_merged_total") != 2
                                               or daemon.metric("models_optimized_total") != 2):
            time.sleep(0.3)
        assert daemon.metric("templates_merged_total") == 2 and daemon.metric("models_optimized_total") == 2   # one per worker
        assert not os.path.exists(os.path.join(state, "optimize", "request.json"))   # answered: withdrawn
        texts = []     # the snapshots the workers wrote at once
        for w in (0, 1):
            if os.path.exists(worker_paths(state, w).templates):
                texts += [t for _tid, t, _n in TemplateMiner.load(worker_paths(state, w).templates).templates()]
        assert sum("sched job" in t for t in texts) == 1, texts

        with open(app, "a") as f:     # scoring goes on, under the merged template
            f.write("".join(job_line(i, JOBS[i % 3]) for i in range(300, 600)))
        counts = daemon.wait_scored(600, 180)
        assert not loss_and_duplicates(counts, 600)[0], daemon.log_tail()
        after = {json.loads(line)["template"] for line in open(daemon.scored)
                 if "sched job" in line and int(re.search(r"seq=(\d+)", line).group(1)) >= 300}
        assert len(after) == 1 and "job <*> finished" in after.pop(), after
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    # stopped: the command compacts the files itself (nothing left to merge now)
    offline = command(daemon, "--optimize-models")
    assert offline.returncode == 0 and "worker 0 (on disk): templates" in offline.stdout, offline.stdout + offline.stderr
    assert "worker 1 (on disk)" in offline.stdout or "worker 1: no models yet" in offline.stdout, offline.stdout
