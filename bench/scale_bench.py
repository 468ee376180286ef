#!/usr/bin/env python3
"""Scale-out benchmark: 1, 2, 3 daemons on one Redis consumer group (docs/scale-out.md), real redis-server.

The workload is fixed: the workload generator's lines (anomaly_detector.workload, web, app, db,
batch and health services, no incidents) as stream entries (timestamp, level, source, message),
XADDed once into a fresh redis-server per run. The consumer group is made at the stream's end; once
every daemon is ready the group is moved back to its first entry (XGROUP SETID 0), so all start at
once. The run ends when the group has read every entry (XINFO GROUPS lag 0) and nothing is pending:
an entry is acknowledged only once scored. No scored-lines file is written (disk); each instance's
share is its logs_processed_total.

Printed per N: lines/s (entries / wall time from the SETID to the last line scored), each instance's
share, the read-to-verdict latency p50 and p99 of each instance (its processing_duration_seconds
summary), the peak PSS of each instance (all its processes), the CPU seconds every daemon process
spent per million lines (on a shared machine the wall figures are noisy, CPU per line much less so),
the cores the daemons got on average (CPU seconds / wall seconds), the load average at the end and
the duplicates (lines scored more than once; 0 without a failure) and the CPU seconds redis-server
spent per million lines (reads, acknowledgements and claims; the XADDs of the loading are before).
A paragraph then says what the figures mean for this machine's cores and beyond.

    python bench/scale_bench.py                      # 120,000 entries, N = 1, 2, 3, one worker each
    python bench/scale_bench.py --entries 300000 --instances 1,2,3 --workers 1
"""
import argparse
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402
import redis  # noqa: E402

from anomaly_detector.metrics.scrape import read_metric  # noqa: E402
from anomaly_detector.workload import generate  # noqa: E402
from bench.e2e_bench import cpu_by_process, free_port, pss_total, wait_ready  # noqa: E402

STREAM, GROUP = "logs", "detectors"
LINE = re.compile(r"^(\S+) (\S+) (.*)$")


def workload_entries(count, seed=0):
    """`count` entries from the generator's services, in event-time order."""
    directory = tempfile.mkdtemp(prefix="ad-scale-wl-")
    try:
        work = generate(directory, days=1, seed=seed, lines_per_day=int(count * 0.8), incidents="none")
        rows = []
        for path in work.files:
            source = os.path.basename(path)[:-4]
            with open(path) as f:
                for line in f:
                    m = LINE.match(line.rstrip("\n"))
                    if m:
                        rows.append((m.group(1), m.group(2), source, m.group(3)))
        rows.sort()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    while len(rows) < count:      # the generator's volume is approximate: repeat its start if short
        rows += rows[:count - len(rows)]
    return [{"timestamp": t, "level": lv, "source": s, "message": msg} for t, lv, s, msg in rows[:count]]


class Redis:
    def __init__(self, directory):
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(directory, "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.client = redis.Redis.from_url(self.url, socket_timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    sys.exit("redis-server did not start")
                time.sleep(0.05)

    def load(self, entries):
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(STREAM, entry)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
        self.client.xgroup_create(STREAM, GROUP, id="$")   # at the end: nothing to read until the start

    def drained(self):
        """Every entry read by the group (lag 0) and acknowledged, so scored (an entry is XACKed once scored)."""
        group = next(g for g in self.client.xinfo_groups(STREAM) if g["name"] in (GROUP, GROUP.encode()))
        return group["lag"] == 0 and group["pending"] == 0

    def cpu(self):
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system

    def stop(self):
        self.process.terminate()
        self.process.wait(30)


def write_config(directory, port, workers, url, consumer):
    path = os.path.join(directory, "config.ini")
    with open(path, "w") as f:
        f.write(f"""[service]
name = adscale_{port}
pid_file = ""
[paths]
state_dir = {directory}/state
log_dir = {directory}/log
[inputs]
[[bus]]
type = redis
format = jsonl
url = {url}
stream = {STREAM}
group = {GROUP}
consumer = {consumer}
[processing]
workers = {workers}
[http]
port = {port}
[logging]
level = WARNING
""")
    return path


class Instance:
    def __init__(self, root, index, workers, url):
        self.dir = os.path.join(root, "n%d" % index)
        os.makedirs(self.dir)
        self.port = free_port()
        config = write_config(self.dir, self.port, workers, url, "n%d" % index)
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.setdefault("NUMBA_CACHE_DIR", os.path.join("/tmp", "anomaly-detector-bench-numba"))
        with open(os.path.join(self.dir, "daemon.log"), "wb") as log:   # its incidents are logged, not printed
            self.process = subprocess.Popen([sys.executable, "-m", "anomaly_detector", "--config", config], cwd=ROOT,
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def processed(self):
        """Lines this instance scored, from its /metrics (a reading the sidecar takes once a second)."""
        return read_metric(self.port, "logs_processed_total") or 0

    def quantile(self, q):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return float("nan")
        m = re.search(r'^anomaly_detector_processing_duration_seconds\{quantile="%s"\} (\S+)$' % q, text, re.M)
        return float(m.group(1)) if m else float("nan")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def pss_probe(pids, stop, peaks):
    """Child process: each daemon's largest total PSS, sampled once a second until stop is set."""
    while True:
        for i, pid in enumerate(pids):
            peaks[i] = max(peaks[i], pss_total(pid))
        if stop.wait(1.0):
            return


def run(n, entries, args):
    root = tempfile.mkdtemp(prefix="ad-scale-")
    server = Redis(root)
    instances = []
    try:
        server.load(entries)
        instances = [Instance(root, i, args.workers, server.url) for i in range(n)]
        for inst in instances:
            wait_ready(inst.port, inst.process)
        cpu_before = [cpu_by_process(inst.process.pid) for inst in instances]
        redis_before = server.cpu()
        stop, peaks = multiprocessing.Event(), multiprocessing.Array("q", n)
        probe = multiprocessing.Process(target=pss_probe, args=([i.process.pid for i in instances], stop, peaks),
                                        daemon=True)
        probe.start()
        began = time.monotonic()
        server.client.xgroup_setid(STREAM, GROUP, id="0")
        while not server.drained():
            if time.monotonic() - began > args.timeout:
                sys.exit("N=%d: not every entry scored after %d s" % (n, args.timeout))
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        time.sleep(1.5)   # the sidecars' next reading holds the last batches' latencies
        stop.set()
        probe.join(30)
        redis_cpu = server.cpu() - redis_before
        cpu = 0.0
        for inst, before in zip(instances, cpu_before):
            after = cpu_by_process(inst.process.pid)
            cpu += sum(after[k] - before.get(k, 0.0) for k in after)
        scored = [inst.processed() for inst in instances]
        return {"n": n, "elapsed": elapsed, "rate": len(entries) / elapsed, "scored": scored,
                "p50": [inst.quantile("0.5") for inst in instances], "p99": [inst.quantile("0.99") for inst in instances],
                "pss": [p / 2**20 for p in peaks[:]], "cpu_per_m": cpu / sum(scored) * 1e6, "cores": cpu / elapsed,
                "redis_per_m": redis_cpu / sum(scored) * 1e6,
                "load": os.getloadavg()[0],
                "duplicates": sum(scored) - len(entries)}
    finally:
        for inst in instances:
            inst.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def interpret(results, cores, workers):
    """A paragraph on what the figures mean, with this run's numbers."""
    one = results[0]
    per_core = 1e6 / one["cpu_per_m"]
    lines = ["",
             "What the figures mean. CPU s/M is what every process of every daemon spent per million lines: "
             "the figure to size from, little affected by other tenants. N=%d: %.1f CPU s/M, so a core the daemon "
             "has to itself scores about %.0f lines/s (input, %d worker(s), sidecar and supervisor together)."
             % (one["n"], one["cpu_per_m"], per_core, workers)]
    for r in results[1:]:
        lines.append("N=%d: %.1f CPU s/M (%+.0f%% per line: each instance adds its own input, sidecar and Redis "
                     "round trips), %.0f lines/s on %.2f cores against %.0f lines/s on %.2f cores for N=%d."
                     % (r["n"], r["cpu_per_m"], 100.0 * (r["cpu_per_m"] / one["cpu_per_m"] - 1), r["rate"],
                        r["cores"], one["rate"], one["cores"], one["n"]))
    worst = max(r["cpu_per_m"] for r in results)
    lines.append("Wall lines/s follows the cores the daemons got (cores = CPU s / wall s). On %d cores, once one "
                 "instance's worker has a core, more instances than cores cannot add capacity: they share the "
                 "same cores and pay the per-instance overhead above. On a shared machine they may get more or "
                 "less than their share (the scheduler shares by process, the other tenants decide), which is why "
                 "lines/s moves with the load, not with N, here. On machines with free cores, expect about N x "
                 "%.0f lines/s (at the highest CPU s/M above) for N instances of %d worker(s) on N free cores, "
                 "until redis-server (one thread: about %.0f lines/s per Redis core at %.1f redis CPU s/M) or the "
                 "network is the limit."
                 % (cores, 1e6 / worst, workers, 1e6 / max(r["redis_per_m"] for r in results),
                    max(r["redis_per_m"] for r in results)))
    return "\n".join(textwrap.fill(line, 104) for line in lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=120000)
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--workers", type=int, default=1, help="[processing] workers of each instance")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    entries = workload_entries(args.entries)
    cores = os.cpu_count()
    print("%d entries (workload generator, no incidents), %d worker(s) per instance, %d cores, load %.1f"
          % (len(entries), args.workers, cores, os.getloadavg()[0]))
    print("%-3s %-7s %-8s %-10s %-16s %-16s %-16s %-8s %-6s %-5s %-5s %s" % (
        "N", "wall s", "lines/s", "share %", "p50 ms", "p99 ms", "peak PSS MiB", "CPU s/M", "cores", "load", "dups", "redis CPU s/M"))
    results = []
    for n in [int(x) for x in args.instances.split(",")]:
        r = run(n, entries, args)
        results.append(r)
        share = "/".join("%.0f" % (100.0 * s / sum(r["scored"])) for s in r["scored"])
        print("%-3d %-7.1f %-8.0f %-10s %-16s %-16s %-16s %-8.1f %-6.2f %-5.1f %-5d %.1f" % (
            n, r["elapsed"], r["rate"], share, "/".join("%.0f" % (q * 1e3) for q in r["p50"]),
            "/".join("%.0f" % (q * 1e3) for q in r["p99"]), "/".join("%.0f" % p for p in r["pss"]),
            r["cpu_per_m"], r["cores"], r["load"], r["duplicates"], r["redis_per_m"]), flush=True)
    print(interpret(results, cores, args.workers))


if __name__ == "__main__":
    main()
