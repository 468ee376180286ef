"""The real daemon: more files than max_open_files, files that leave and come back, an unreadable
directory, and model snapshots of the wrong shape or with orphaned temporaries.

Lines carry `seq=<n>` (unique over all files), so the scored-lines file tells loss and duplicates exactly.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from anomaly_detector.storage.atomic import _decode, write_snapshot
from tests.integration.daemon_harness import NUMBA_CACHE, ROOT, Daemon, loss_and_duplicates, numbered_line, wait_for


def _file_input(logs, pattern="*.log", **keys):
    settings = {"type": "file", "path": os.path.join(logs, pattern), "start_at": "beginning",
                "scan_interval_seconds": 0.2, "rotate_wait_seconds": 1}
    settings.update(keys)
    return "[[app]]\n" + "".join("%s = %s\n" % item for item in settings.items())


def _write(path, seqs):
    with open(path, "a") as f:
        f.writelines(numbered_line(i) for i in seqs)


def _log_text(daemon):
    """The daemon's log (its stderr; the log file under log_dir holds the same lines)."""
    with open(os.path.join(daemon.dir, "daemon.stderr"), errors="replace") as f:
        return f.read()


def _input_holds(daemon, path):
    """True while the input process has `path` open (a descriptor in /proc/PID/fd names it)."""
    pid = daemon.children()["ad-input"]
    fds = os.path.join("/proc", str(pid), "fd")
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == os.path.realpath(path):
                return True
        except OSError:   # closed meanwhile
            pass
    return False


def _settle(daemon, expected, timeout=240):
    counts = daemon.wait_scored(expected, timeout)
    time.sleep(2.0)          # anything read twice would show up now
    return daemon.scored_seqs() if counts else counts


def test_thirty_files_under_max_open_files_eight_all_scored_and_nothing_read_twice_after_restart(tmp_path):
    daemon = Daemon(tmp_path, workers=2)
    daemon.write_config(inputs=_file_input(daemon.logs, max_open_files=8))
    for k in range(30):
        _write(os.path.join(daemon.logs, "f%02d.log" % k), range(k * 1000, (k + 1) * 1000))
    try:
        daemon.start()
        counts = _settle(daemon, 30_000)
        lost, duplicates = loss_and_duplicates(counts, 30_000)
        assert (len(lost), duplicates) == (0, 0)
        assert daemon.metric("files_deferred_total") >= 22
        assert daemon.metric("files_deferred") == 0
        assert "max_open_files = 8 is the bottleneck" in _log_text(daemon)
        assert daemon.stop() == 0
        # every file grows while the daemon is down; a restart reads the new lines once, nothing before them
        for k in range(30):
            _write(os.path.join(daemon.logs, "f%02d.log" % k), range(30_000 + k * 100, 30_000 + (k + 1) * 100))
        daemon.start()
        counts = _settle(daemon, 33_000)
        lost, duplicates = loss_and_duplicates(counts, 33_000)
        print("30 files x 1000 + 100 lines, max_open_files 8: %d lost, %d duplicates" % (len(lost), duplicates))
        assert (len(lost), duplicates) == (0, 0)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_file_moved_out_of_the_glob_longer_than_rotate_wait_and_back_is_not_read_again(tmp_path):
    daemon = Daemon(tmp_path, workers=1)
    daemon.write_config(workers=1, inputs=_file_input(daemon.logs))
    away = os.path.join(daemon.dir, "away")
    os.makedirs(away)
    path = os.path.join(daemon.logs, "app.log")
    _write(path, range(2000))
    _write(os.path.join(daemon.logs, "other.log"), range(100_000, 100_100))
    try:
        daemon.start()
        _settle(daemon, 2100)
        assert _input_holds(daemon, path)                 # open now: the wait below watches the right name
        os.rename(path, os.path.join(away, "app.log"))
        # rotate_wait_seconds = 1: the input closes it (polled in /proc rather than slept on for 4 s)
        wait_for(lambda: not _input_holds(daemon, os.path.join(away, "app.log")), 30, daemon,
                 "the input closing the file moved out of the glob", interval=0.2)
        _write(os.path.join(away, "app.log"), range(2000, 2500))   # written while away
        os.rename(os.path.join(away, "app.log"), path)
        _write(path, range(2500, 3000))
        counts = _settle(daemon, 3100)
        expected = set(range(3000)) | set(range(100_000, 100_100))
        lost = sorted(expected - set(counts))
        duplicates = sum(c - 1 for c in counts.values())
        print("moved away and back: %d lost, %d duplicates" % (len(lost), duplicates))
        assert (lost, duplicates) == ([], 0)
        assert "is a file read before: resuming at offset" in _log_text(daemon)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


class _RefusingDaemon(Daemon):
    """As root chmod 000 does not stop reads: the daemon runs with the directory refused (EACCES)."""

    def __init__(self, tmp_path, blocked, **kwargs):
        super().__init__(tmp_path, **kwargs)
        self.blocked = blocked

    def start(self):
        env = dict(os.environ, NUMBA_CACHE_DIR=NUMBA_CACHE, PYTHONPATH=ROOT, AD_TEST_REFUSE_DIR=self.blocked)
        self.stderr = open(os.path.join(self.dir, "daemon.stderr"), "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "tests.integration.refusing_directory",
                                         "--config", self.config], cwd=ROOT, env=env,
                                        stdout=self.stderr, stderr=self.stderr)
        self.wait_healthy(300)
        return self


def _block(directory, as_root):
    if as_root:
        open(directory + ".refuse", "w").close()
    else:
        os.chmod(directory, 0)


def _unblock(directory, as_root):
    if as_root:
        os.unlink(directory + ".refuse")
    else:
        os.chmod(directory, 0o755)


def test_directory_unreadable_for_ten_seconds_loses_and_repeats_nothing(tmp_path):
    as_root = os.geteuid() == 0
    logs = os.path.join(str(tmp_path), "logs")
    daemon = (_RefusingDaemon(tmp_path, logs, workers=1) if as_root else Daemon(tmp_path, workers=1))
    daemon.write_config(workers=1, inputs=_file_input(daemon.logs, max_open_files=2))
    paths = [os.path.join(logs, "f%d.log" % k) for k in range(4)]
    for k, path in enumerate(paths):
        _write(path, range(k * 10_000, k * 10_000 + 500))
    next_seq = [k * 10_000 + 500 for k in range(4)]
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            for k, path in enumerate(paths[:2]):     # the open ones keep growing (their fds still read)
                try:
                    _write(path, range(next_seq[k], next_seq[k] + 20))
                    next_seq[k] += 20
                except PermissionError:
                    pass
            time.sleep(0.2)

    try:
        daemon.start()
        _settle(daemon, 2000)
        before_errors = daemon.metric("input_read_errors_total")
        thread = threading.Thread(target=writer, daemon=True)
        _block(logs, as_root)
        thread.start()
        time.sleep(10.0)
        _unblock(logs, as_root)
        stop.set()
        thread.join()
        for k, path in enumerate(paths):
            _write(path, range(next_seq[k], next_seq[k] + 100))
            next_seq[k] += 100
        expected = set()
        for k in range(4):
            expected |= set(range(k * 10_000, next_seq[k]))
        counts = _settle(daemon, len(expected))
        lost = sorted(expected - set(counts))
        duplicates = sum(c - 1 for c in counts.values())
        print("directory unreadable 10 s (%s): %d lines, %d lost, %d duplicates"
              % ("refused as root" if as_root else "chmod 000", len(expected), len(lost), duplicates))
        assert (lost, duplicates) == ([], 0)
        assert daemon.metric("input_read_errors_total") > before_errors
        assert _log_text(daemon).count("cannot list directory %s" % logs) == 1
        assert daemon.stop() == 0
    finally:
        if not as_root and os.path.exists(logs):
            os.chmod(logs, 0o755)
        daemon.kill()


def _rewrite_snapshot(path, kind, change):
    version, payload = _decode(path, kind, 99)
    obj = json.loads(payload)
    change(obj)
    write_snapshot(path + ".rewrite", kind, version, json.dumps(obj).encode())
    os.replace(path + ".rewrite", path)


def test_model_snapshot_of_the_wrong_shape_is_set_aside_and_the_worker_scores(tmp_path):
    daemon = Daemon(tmp_path, workers=1)
    daemon.write_config(workers=1, inputs=_file_input(daemon.logs))
    path = os.path.join(daemon.logs, "app.log")
    _write(path, range(3000))
    baselines = os.path.join(daemon.dir, "state", "baselines", "worker-0")
    try:
        daemon.start()
        _settle(daemon, 3000)
        daemon.wait_snapshot(time.time())   # a periodic snapshot (every 5 s) and the one at stop: two generations
        assert daemon.stop() == 0
        snapshot = os.path.join(baselines, "detection.json")
        statistics = os.path.join(daemon.dir, "state", "statistics", "worker-0", "detection.json")
        # valid checksums, wrong shapes: one per-template array shorter than the others (the newest
        # baselines: the previous generation is restored), a required key missing (every generation of
        # statistics: a KeyError that crash-looped workers; tiers 3 and 4 start fresh)
        _rewrite_snapshot(snapshot, "detection-baselines", lambda o: o["t2"]["templates"].__setitem__("level", [0.5]))
        for generation in ("", ".prev", ".prev2"):   # [retention] snapshot_generations = 3
            if os.path.exists(statistics + generation):
                _rewrite_snapshot(statistics + generation, "detection-statistics", lambda o: o["t3"].pop("num_stats"))
        orphans = [os.path.join(baselines, ".detection.json.k2j3h4g5"), os.path.join(baselines, ".templates.json.a1b2c3d4")]
        for orphan in orphans:
            with open(orphan, "wb") as f:
                f.write(b"ADSNAP1 partial write")
            os.utime(orphan, (time.time() - 600, time.time() - 600))
        _write(path, range(3000, 4000))
        daemon.start()
        worker_pid = daemon.children().get("ad-worker-0")
        counts = _settle(daemon, 4000)
        lost, duplicates = loss_and_duplicates(counts, 4000)
        assert (len(lost), duplicates) == (0, 0)
        text = _log_text(daemon)
        assert "detection.json has the wrong shape" in text and "different lengths" in text
        assert "KeyError: 'num_stats'" in text and "models restored" in text
        assert glob.glob(os.path.join(baselines, "detection.json.bad-*"))
        assert glob.glob(statistics + ".bad-*")
        assert not any(os.path.exists(orphan) for orphan in orphans)
        assert "removed 1 temporary file(s)" in text
        _, body = daemon.get("/health")
        assert json.loads(body)["status"] == "healthy"
        assert worker_pid is not None and daemon.children().get("ad-worker-0") == worker_pid   # never restarted
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        shutil.rmtree(os.path.join(daemon.dir, "state"), ignore_errors=True)
