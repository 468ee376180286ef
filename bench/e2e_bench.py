#!/usr/bin/env python3
"""End-to-end daemon benchmark: the real daemon tailing files written at rising rates.

Prints, per offered rate, the sustained scored lines/s, line-written-to-scored latency
percentiles (p50/p95/p99), the daemon's total memory (PSS of every process) and its CPU time
(user + system of every process, from ready to the last line scored) per million lines scored:
on a shared machine wall figures are noisy, CPU per line much less so. --cpu-by-process adds
the CPU seconds of each process (supervisor, input, workers, sidecar, listener). Latency is
measured from the write time stamped into each line (`wt=<ns>`) to the moment the line's
record appears in the scored-lines file, read by this script every 10 ms.

    python bench/e2e_bench.py                         # rates 10k, 25k, 50k, 100k lines/s, 20 s each
    python bench/e2e_bench.py --rates 10000 --seconds 30 --workers 2
"""
import argparse
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from anomaly_detector.metrics.scrape import read_metric  # noqa: E402

WT = re.compile(rb"wt=(\d+)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(directory, port, workers, batch_size, name="adbench", extra=""):
    """The daemon's config: one file input over <directory>/logs/*.log, scored lines kept; `extra`
    sections are appended (alert_bench adds its sink)."""
    path = os.path.join(directory, "config.ini")
    with open(path, "w") as f:
        f.write(f"""[service]
name = {name}_{port}
pid_file = ""
[paths]
state_dir = {directory}/state
log_dir = {directory}/log
[inputs]
[[bench]]
type = file
path = {directory}/logs/*.log
start_at = beginning
[processing]
workers = {workers}
{"" if batch_size is None else "batch_size = %d" % batch_size}
[http]
port = {port}
[outputs]
scored_lines = {directory}/scored.jsonl
[logging]
level = WARNING
{extra}""")
    return path


class Writer(threading.Thread):
    """Writes lines at `rate` lines/s into `files` files (round robin), in 10 ms slices."""

    def __init__(self, logs, rate, seconds, files):
        super().__init__(daemon=True)
        self.paths = [os.path.join(logs, "svc%d.log" % i) for i in range(files)]
        self.rate, self.seconds = rate, seconds
        self.written = 0

    def run(self):
        handles = [open(p, "ab", buffering=1 << 20) for p in self.paths]
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < self.seconds:
            due = int((time.monotonic() - began) * self.rate)
            now = time.time_ns()
            while self.written < due:
                f = handles[i % len(handles)]
                f.write(b"2026-03-02T10:00:00.000Z INFO svc-%d GET /item/%d 200 %dms wt=%d\n"
                        % (i % 7, i % 1013, 20 + i % 17, now))
                self.written += 1
                i += 1
            for f in handles:
                f.flush()
            time.sleep(0.01)
        for f in handles:
            f.close()


class ScoredReader:
    """Follows the scored-lines file and records each line's latency."""

    def __init__(self, path):
        self.path, self.offset = path, 0
        self.latencies = []
        self.count = 0

    def poll(self):
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        now = time.time_ns()
        stamps = [int(m) for m in WT.findall(data[:end])]
        self.count += len(stamps)
        self.latencies.extend((now - s) / 1e9 for s in stamps)


def pss_total(pid):
    total = 0
    try:
        root = psutil.Process(pid)
        for proc in [root] + root.children(recursive=True):
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
    except psutil.Error:
        pass
    return total


def pss_probe(pid, stop, peak):
    """Child process: the daemon's largest total PSS, sampled once a second until stop is set."""
    while True:
        peak.value = max(peak.value, pss_total(pid))
        if stop.wait(1.0):
            return


def cpu_by_process(pid):
    """{name: user + system CPU seconds} of the daemon and each of its children (by their title)."""
    out = {}
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return out
    for proc in procs:
        try:
            times = proc.cpu_times()
            name = "supervisor" if proc.pid == pid else proc.name()
            out["%s[%d]" % (name, proc.pid)] = times.user + times.system
        except psutil.Error:
            continue
    return out


def wait_ready(port, daemon, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            sys.exit("daemon exited with %s" % daemon.returncode)
        if read_metric(port, "logs_processed_total") is not None:
            return
        time.sleep(0.5)
    sys.exit("daemon not ready after %d s" % timeout)


def start_daemon(config):
    """The daemon of this checkout on `config` (kernels cached apart from the user's)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.setdefault("NUMBA_CACHE_DIR", os.path.join("/tmp", "anomaly-detector-bench-numba"))
    return subprocess.Popen([sys.executable, "-m", "anomaly_detector", "--config", config], cwd=ROOT, env=env)


def run_rate(rate, args):
    directory = tempfile.mkdtemp(prefix="ad-e2e-")
    os.makedirs(os.path.join(directory, "logs"))
    port = free_port()
    config = write_config(directory, port, args.workers, args.batch_size)
    daemon = start_daemon(config)
    try:
        wait_ready(port, daemon)
        writer = Writer(os.path.join(directory, "logs"), rate, args.seconds, args.files)
        reader = ScoredReader(os.path.join(directory, "scored.jsonl"))
        cpu_before = cpu_by_process(daemon.pid)
        began = time.monotonic()
        writer.start()
        # PSS is read in another process: reading every process's smaps takes 100-250 ms on a busy
        # machine, and in this loop it would hold back the reader and add that to the lines' latency.
        stop_probe, peak_out = multiprocessing.Event(), multiprocessing.Value("q", 0)
        probe = multiprocessing.Process(target=pss_probe, args=(daemon.pid, stop_probe, peak_out), daemon=True)
        probe.start()
        while writer.is_alive() or (reader.count < writer.written and time.monotonic() - began < args.seconds * 4):
            reader.poll()
            time.sleep(0.01)
        elapsed = time.monotonic() - began
        reader.poll()
        stop_probe.set()
        probe.join(30)
        peak = peak_out.value
        cpu_after = cpu_by_process(daemon.pid)
        cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        return summarise(rate, writer.written, reader, elapsed, max(peak, pss_total(daemon.pid)), cpu)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        shutil.rmtree(directory, ignore_errors=True)


def summarise(rate, written, reader, elapsed, pss, cpu):
    lat = np.array(reader.latencies) if reader.latencies else np.array([float("nan")])
    return {"offered": rate, "written": written, "scored": reader.count,
            "sustained": reader.count / elapsed, "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95),
            "p99": np.percentile(lat, 99), "pss_mib": pss / 2**20,
            "cpu_s_per_m": sum(cpu.values()) / max(reader.count, 1) * 1e6, "cpu": cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10000,25000,50000,100000")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="[processing] batch_size (default: the daemon's)")
    parser.add_argument("--files", type=int, default=4, help="files written round robin (spread over workers)")
    parser.add_argument("--cpu-by-process", action="store_true", help="print each process's CPU seconds too")
    args = parser.parse_args()
    print("%-10s %-10s %-10s %-12s %-9s %-9s %-9s %-9s %-9s" % ("offered/s", "written", "scored", "sustained/s",
                                                                "p50 ms", "p95 ms", "p99 ms", "PSS MiB", "CPU s/M"))
    for rate in [int(r) for r in args.rates.split(",")]:
        r = run_rate(rate, args)
        print("%-10d %-10d %-10d %-12.0f %-9.1f %-9.1f %-9.1f %-9.0f %-9.1f" % (
            r["offered"], r["written"], r["scored"], r["sustained"], r["p50"] * 1e3, r["p95"] * 1e3,
            r["p99"] * 1e3, r["pss_mib"], r["cpu_s_per_m"]), flush=True)
        if args.cpu_by_process:
            print("    CPU s: " + ", ".join("%s %.2f" % item for item in sorted(r["cpu"].items())), flush=True)


if __name__ == "__main__":
    main()
