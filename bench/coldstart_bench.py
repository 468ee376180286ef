"""Cold and warm start times: `replay` and `parse` on a small file, and the daemon until /health answers.

Cold means an empty kernel cache (a fresh NUMBA_CACHE_DIR under --cache-root), so every numba
kernel compiles; warm means the same directory again, so every kernel loads from it. A last row
starts the daemon on a cache a `replay` filled: commands and daemon share one cache. Each process
is timed from its start (wall clock) with its CPU time beside it (the machine may be busy: the
load average is printed too). Free ports, a temporary state directory, real processes.

    python bench/coldstart_bench.py [--repeat 2] [--cache-root DIR] [--log FILE --log-format FMT]
"""
import argparse
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LOG = "/work/shared/data/loghub-2k/HDFS/HDFS_2k.log"
DEFAULT_FORMAT = "<Date> <Time> <Pid> <Level> <Component>: <Content>"
HEALTH_TIMEOUT = 900.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(cache_dir):
    return dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=ROOT)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(args, cache_dir, work):
    """(wall seconds, CPU seconds) of `python -m anomaly_detector ARGS` to its exit."""
    cpu, began = _children_cpu(), time.monotonic()
    done = subprocess.run([sys.executable, "-m", "anomaly_detector"] + args, cwd=work, env=_env(cache_dir),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(args), done.returncode, done.stderr.decode()[-2000:]))
    return took, _children_cpu() - cpu


def _config(work, log_path, port):
    path = os.path.join(work, "daemon.ini")
    with open(path, "w") as f:
        f.write("[service]\nname = coldbench_%d\npid_file = %s/daemon.pid\n[paths]\nstate_dir = %s/state\n"
                "log_dir = %s/log\n[inputs]\n[[app]]\ntype = file\npath = %s\nstart_at = end\n"
                "[processing]\nworkers = 2\n[http]\nport = %d\n[outputs]\nscored_lines = %s/scored.jsonl\n"
                % (port, work, work, work, log_path, port, work))
    return path


def _healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/health" % port, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def start_daemon(cache_dir, work, log_path):
    """(wall seconds until /health answers 200, CPU seconds of the whole daemon run); the daemon is stopped."""
    port = free_port()
    config = _config(work, log_path, port)
    cpu, began = _children_cpu(), time.monotonic()
    with open(os.path.join(work, "daemon.stderr"), "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "anomaly_detector", "--config", config], cwd=work,
                                env=_env(cache_dir), stdout=err, stderr=err)
        try:
            while not _healthy(port):
                if proc.poll() is not None:
                    raise SystemExit("daemon exited %s; see %s/daemon.stderr" % (proc.returncode, work))
                if time.monotonic() - began > HEALTH_TIMEOUT:
                    raise SystemExit("daemon not healthy after %.0f s" % HEALTH_TIMEOUT)
                time.sleep(0.05)
            took = time.monotonic() - began
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    return took, _children_cpu() - cpu


def _row(what, rep, cache, took, cpu):
    print("%-34s %3d  %-5s %8.1f %8.1f   %s" % (what, rep, cache, took, cpu, "%.1f" % os.getloadavg()[0]), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-root", default=None, help="where the fresh kernel caches go (default: a temp dir)")
    ap.add_argument("--log", default=DEFAULT_LOG)
    ap.add_argument("--log-format", default=DEFAULT_FORMAT)
    ap.add_argument("--only", choices=["replay", "parse", "daemon", "shared"], action="append")
    opts = ap.parse_args()
    only = set(opts.only or ["replay", "parse", "daemon", "shared"])
    root = tempfile.mkdtemp(prefix="coldstart-", dir=opts.cache_root)
    name = os.path.basename(opts.log)
    print("kernel caches under %s; %d cores; wall and CPU seconds" % (root, os.cpu_count()))
    print("%-34s %3s  %-5s %8s %8s   %s" % ("what", "run", "cache", "wall s", "cpu s", "load"))
    try:
        for rep in range(1, opts.repeat + 1):
            work = tempfile.mkdtemp(prefix="work-", dir=root)
            replay = ["replay", "--log-format", opts.log_format, "--output", os.path.join(work, "out.jsonl"), opts.log]
            parse = ["parse", "--log-format", opts.log_format, "--output-dir", os.path.join(work, "parsed"), opts.log]
            for kind, args in (("replay", replay), ("parse", parse)):
                if kind not in only:
                    continue
                cache = os.path.join(root, "%s-%d" % (kind, rep))
                for state in ("cold", "warm"):
                    _row("%s %s" % (kind, name), rep, state, *run_command(args, cache, work))
            if "daemon" in only:
                cache = os.path.join(root, "daemon-%d" % rep)
                for state in ("cold", "warm"):
                    _row("daemon start to /health", rep, state, *start_daemon(cache, work, os.path.join(work, "x.log")))
            if "shared" in only:
                cache = os.path.join(root, "shared-%d" % rep)
                _row("replay %s (fills the cache)" % name, rep, "cold", *run_command(replay, cache, work))
                _row("daemon after that replay", rep, "warm", *start_daemon(cache, work, os.path.join(work, "x.log")))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
