#!/usr/bin/env python3
"""Alerting benchmark: incident-to-delivery latency to a local webhook while the daemon scores a steady
stream, and detection throughput with a healthy and with a stalled sink.

The real daemon tails files written at `--rate` lines/s (lines carry the wall time they were written,
`wt=<ns>`); every `--burst-every` seconds six FATAL lines make an incident (incident_window_seconds =
2, so each burst is its own). A webhook receiver on 127.0.0.1 takes the alerts: the latency of an
incident is from the write of its first FATAL line (the earliest `wt=` among the event's samples) to
the receipt of its `opened` event. The stalled run points the sink at a socket that accepts and never
answers (timeout_seconds = 1): alerts pile up in the outbox, detection must not slow down.

Every burst repeats one template, so the dedup window would fold them all into the first incident, and
grouping would hold each `opened` for its wait: the runs set dedup_window_seconds and group_wait_seconds
to 0 (--dedup-window and --group-wait change that; a group's events count one by one). The load average
is printed before and after, since the figure depends on what else the machine runs.

    python bench/alert_bench.py                                  # 50000 lines/s, 30 s per run, both runs
    python bench/alert_bench.py --rate 20000 --seconds 60 --workers 2
"""
import argparse
import http.server
import json
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
from datetime import datetime, timezone

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from e2e_bench import ScoredReader, free_port, start_daemon, wait_ready  # noqa: E402
from e2e_bench import write_config as e2e_write_config  # noqa: E402

WT = re.compile(r"wt=(\d+)")


def write_config(directory, port, workers, sink_url, dedup_window=0.0, group_wait=0.0):
    return e2e_write_config(directory, port, workers, 1000, name="adalert", extra=f"""[detection]
incident_window_seconds = 2
[alerting]
rate_limit_per_minute = 100000
dedup_window_seconds = {dedup_window}
group_wait_seconds = {group_wait}
[[hook]]
type = webhook
url = {sink_url}
timeout_seconds = 1
retry_initial_seconds = 0.1
retry_max_seconds = 2
""")


class Receiver:
    """The webhook: records (receive time, event) of every POST."""

    def __init__(self):
        self.got = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received = time.time_ns()
                outer.got += [(received, event) for event in body.get("events", [body])]   # a group: each event
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Staller:
    """Accepts connections and never answers: a sink that hangs."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = "http://127.0.0.1:%d/hook" % self.sock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


class Writer(threading.Thread):
    """`rate` lines/s stamped with the wall time, six FATAL lines every `burst_every` seconds."""

    def __init__(self, logs, rate, seconds, burst_every, files=2):
        super().__init__(daemon=True)
        self.paths = [os.path.join(logs, "svc%d.log" % i) for i in range(files)]
        self.rate, self.seconds, self.burst_every = rate, seconds, burst_every
        self.written, self.bursts = 0, 0

    def run(self):
        handles = [open(p, "ab", buffering=1 << 20) for p in self.paths]
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < self.seconds:
            elapsed = time.monotonic() - began
            due = int(elapsed * self.rate)
            now = time.time_ns()
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b"Z"
            while self.written < due:
                handles[i % len(handles)].write(b"%s INFO svc-%d GET /item/%d 200 %dms wt=%d\n"
                                                % (stamp, i % 7, i % 1013, 20 + i % 17, now))
                self.written += 1
                i += 1
            if elapsed >= 10 + self.bursts * self.burst_every:   # after 10 s of warm traffic
                self.bursts += 1
                for k in range(6):
                    handles[0].write(b"%s FATAL svc-0 disk sda failed k=%d wt=%d\n" % (stamp, k, now))
                    self.written += 1
            for f in handles:
                f.flush()
            time.sleep(0.01)
        for f in handles:
            f.close()


def run(args, stalled):
    directory = tempfile.mkdtemp(prefix="ad-alert-")
    os.makedirs(os.path.join(directory, "logs"))
    sink = Staller() if stalled else Receiver()
    port = free_port()
    config = write_config(directory, port, args.workers, sink.url, args.dedup_window, args.group_wait)
    daemon = start_daemon(config)
    try:
        wait_ready(port, daemon)
        writer = Writer(os.path.join(directory, "logs"), args.rate, args.seconds, args.burst_every)
        reader = ScoredReader(os.path.join(directory, "scored.jsonl"))
        began = time.monotonic()
        writer.start()
        while writer.is_alive() or (reader.count < writer.written and time.monotonic() - began < args.seconds * 4):
            reader.poll()
            time.sleep(0.01)
        elapsed = time.monotonic() - began
        time.sleep(3)   # the last incidents' events
        reader.poll()
        latencies = []
        if not stalled:
            for received, event in sink.got:
                stamps = [int(m) for s in event["incident"].get("samples", []) for m in WT.findall(s)]
                if event["event"] == "opened" and stamps:
                    latencies.append((received - min(stamps)) / 1e9)
        lat = np.array(latencies) if latencies else np.array([float("nan")])
        return {"sink": "stalled" if stalled else "healthy", "written": writer.written, "scored": reader.count,
                "sustained": reader.count / elapsed, "bursts": writer.bursts, "opened": len(latencies),
                "p50": np.percentile(lat, 50), "p99": np.percentile(lat, 99)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        sink.close()
        shutil.rmtree(directory, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=50000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--burst-every", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--only", choices=("healthy", "stalled"), default=None)
    parser.add_argument("--dedup-window", type=float, default=0.0, help="[alerting] dedup_window_seconds")
    parser.add_argument("--group-wait", type=float, default=0.0, help="[alerting] group_wait_seconds")
    args = parser.parse_args()
    print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    print("%-8s %-9s %-9s %-12s %-7s %-7s %-12s %-12s" % ("sink", "written", "scored", "sustained/s", "bursts",
                                                          "opened", "p50 ms", "p99 ms"))
    for stalled in (False, True):
        if args.only and args.only != ("stalled" if stalled else "healthy"):
            continue
        r = run(args, stalled)
        print("%-8s %-9d %-9d %-12.0f %-7d %-7d %-12.1f %-12.1f" % (
            r["sink"], r["written"], r["scored"], r["sustained"], r["bursts"], r["opened"], r["p50"] * 1e3,
            r["p99"] * 1e3), flush=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg(), flush=True)


if __name__ == "__main__":
    main()
