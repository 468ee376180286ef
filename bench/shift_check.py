"""Level-shift check: a two-day JSON request log whose latency is three times its usual level for one hour.

Each seed writes one JSON line every --every seconds (`{"timestamp", "level", "message": "request served",
"endpoint", "status", "latency_ms"}`; latency log-normal per endpoint, a daily load cycle raising it
by up to 40 %), and from a random time on the second day the latency of every line (or, with
--endpoint, of one endpoint's lines) is multiplied by --factor for --minutes. It is replayed through
the Pipeline that `anomaly_detector replay` uses (default config, a fresh Pipeline per seed, with
[detection][[tier3]] series_shift_budget from --budget when given). Prints per seed whether a line of
the shifted hour was flagged, how long after the shift began, the first reason, and the flagged lines
before the shift or more than GRACE_S after it (false flags). Exits non-zero only when something fails to run, never because a
figure is bad.
"""
import argparse
import json
import math
import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone

import numpy as np

# Run as `python bench/shift_check.py` from a checkout: the package is beside bench/, maybe not installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.config.loader import default_config  # noqa: E402
from anomaly_detector.pipeline import Pipeline  # noqa: E402

START = datetime(2026, 4, 6, tzinfo=timezone.utc)
ENDPOINTS = {"/api/items": 45.0, "/api/cart": 80.0, "/api/search": 140.0, "/api/user": 25.0}
DAY_S = 86400
GRACE_S = 900          # flags this long after the shift ended still count as its own, not false


def write_log(path, seed, every, factor, minutes, endpoint):
    """Write the log -> (shift start, shift end) as line indices."""
    rng = np.random.default_rng(seed)
    n = 2 * DAY_S // every
    t = np.arange(n) * float(every)
    names = list(ENDPOINTS)
    ep = rng.choice(len(names), n, p=[0.4, 0.2, 0.15, 0.25])
    load = 1.0 + 0.4 * np.clip(np.sin(2 * math.pi * (t % DAY_S) / DAY_S - math.pi / 2), 0, None)
    ms = np.array([ENDPOINTS[names[k]] for k in ep]) * load * rng.lognormal(0.0, 0.45, n)
    start_s = DAY_S + rng.uniform(2 * 3600, DAY_S - minutes * 60 - 3600)
    hit = (t >= start_s) & (t < start_s + minutes * 60)
    if endpoint:
        hit &= ep == names.index(endpoint)
    ms[hit] *= factor
    status = np.where(rng.random(n) < 0.003, 500, 200)
    with open(path, "w", encoding="utf-8") as f:
        for k in range(n):
            stamp = (START + timedelta(seconds=float(t[k]))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            f.write(json.dumps({"timestamp": stamp, "level": "INFO", "message": "request served", "endpoint": names[ep[k]],
                                "status": int(status[k]), "latency_ms": round(float(ms[k]), 1)}) + "\n")
    first = int(np.searchsorted(t, start_s))
    return first, int(np.searchsorted(t, start_s + minutes * 60)), hit


def replay(path, cfg):
    """(anomaly flag, first reason) of every line, through a fresh replay Pipeline."""
    out = []
    for chunk in Pipeline(cfg).process_file(path):
        for line in chunk.splitlines():
            record = json.loads(line)
            out.append((bool(record["anomaly"]), (record.get("reasons") or [""])[0]))
    return out


def check(seed, args, work):
    path = os.path.join(work, "seed%d.jsonl" % seed)
    first, end, hit = write_log(path, seed, args.every, args.factor, args.minutes, args.endpoint)
    cfg = default_config()
    if args.budget is not None:
        cfg["detection"]["tier3"]["series_shift_budget"] = args.budget
    out = replay(path, cfg)
    inside = [k for k in range(first, end) if out[k][0] and (hit[k] or not args.endpoint)]
    tail = end + int(GRACE_S / args.every)   # a detector still settling just after the hour is its incident
    false = [k for k, (flag, _) in enumerate(out) if flag and not first <= k < tail]
    caught = inside[0] if inside else None
    late = "" if caught is None else " after %.1f min" % ((caught - first) * args.every / 60.0)
    print("seed %d: shift lines %d-%d %s%s; false flags %d (first: %s)" % (
        seed, first, end, "caught" if inside else "MISSED", late, len(false), false[:5]))
    if inside:
        print("    " + out[caught][1][:160])
    return bool(inside), len(false)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    ap.add_argument("--every", type=int, default=10, help="seconds between lines")
    ap.add_argument("--factor", type=float, default=3.0, help="latency multiplier during the shift")
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the shift")
    ap.add_argument("--endpoint", default="", choices=[""] + list(ENDPOINTS), help="shift only this endpoint")
    ap.add_argument("--budget", type=float, default=None, help="series_shift_budget (default: the config default)")
    ap.add_argument("--work", default=None, help="keep the logs here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or tmp
        os.makedirs(work, exist_ok=True)
        results = [check(int(s), args, work) for s in args.seeds.split(",")]
    print("caught %d/%d, false flags %d" % (sum(c for c, _ in results), len(results), sum(f for _, f in results)))


if __name__ == "__main__":
    main()
