"""Share of lines flagged (`anomaly` true) by `anomaly_detector replay` on each Loghub-2k sample.

Logs nobody here wrote, without labels: a detector that flags more than WARN_SHARE of an ordinary
log's lines would page an operator all day. Each sample is replayed as a user would, default config
(or --config) and the dataset's header format from parsing/headers.py LOGHUB_FORMATS (as
bench/parse_bench.py picks it). bench/detect_bench.py prints the same table with its shop family.

    python bench/loghub_flags.py [--data DIR] [--work DIR] [--config CFG]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.parsing.headers import LOGHUB_FORMATS  # noqa: E402

DATASETS = ("Android", "Apache", "HDFS", "Hadoop", "HealthApp", "Linux", "Mac", "OpenStack", "Spark", "Zookeeper")
DEFAULT_DATA = os.environ.get("LOGHUB_2K") or os.path.join(os.path.dirname(REPO), "shared", "data", "loghub-2k")
WARN_SHARE = 0.01
_ANOMALY_TRUE = re.compile(rb'"anomaly"\s*:\s*true')
_DIGITS = re.compile(r"\d+")


class LoghubError(Exception):
    """The samples are missing or a replay failed."""


def replay_command():
    exe = shutil.which("anomaly_detector")
    return [exe] if exe else [sys.executable, "-m", "anomaly_detector"]


def sample_path(data, name):
    return os.path.join(data, name, f"{name}_2k.log")


def run(data, work, command=None, config=None):
    """Replay every sample; return one row per dataset (lines, flagged, share, incidents, top reason)."""
    missing = [n for n in DATASETS if not os.path.isfile(sample_path(data, n))]
    if missing:
        raise LoghubError(f"Loghub samples not found under {data} ({', '.join(missing)}): use --loghub-data DIR "
                          "or $LOGHUB_2K, or skip them")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    return [replay_sample(data, name, work, command or replay_command(), config, env) for name in DATASETS]


def replay_sample(data, name, work, command, config, env):
    out = os.path.join(work, f"{name}.jsonl")
    inc = os.path.join(work, f"{name}.incidents.jsonl")
    cmd = command + ["replay", "--log-format", LOGHUB_FORMATS[name], "--output", out, "--incidents", inc]
    cmd += (["--config", config] if config else []) + [sample_path(data, name)]
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    if proc.returncode != 0:
        raise LoghubError(f"replay of {name} exited {proc.returncode}: {proc.stderr.decode('utf-8', 'replace')[-1000:]}")
    lines = flagged = 0
    reasons = Counter()
    with open(out, "rb") as fh:
        for line in fh:
            lines += 1
            if _ANOMALY_TRUE.search(line):
                flagged += 1
                rec = json.loads(line)
                reasons[_DIGITS.sub("N", (rec.get("reasons") or ["?"])[0])[:60]] += 1
    with open(inc, encoding="utf-8") as fh:
        kinds = Counter(json.loads(line).get("kind") or "?" for line in fh if line.strip())
    top = reasons.most_common(1)
    return {"dataset": name, "lines": lines, "flagged": flagged, "share": flagged / lines if lines else 0.0,
            "incidents": sum(kinds.values()), "incident_kinds": dict(kinds.most_common()),
            "top_reason": f"{top[0][0]} ({top[0][1]})" if top else ""}


def print_table(rows):
    print(f"== Loghub-2k: share of lines flagged (warning mark above {100 * WARN_SHARE:.0f}%) ==")
    print(f"{'dataset':<10} {'lines':>6} {'flagged':>7} {'share':>7} {'incidents':>9}  "
          "incident kinds; top reason of flagged lines")
    for r in rows:
        mark = "!" if r["share"] > WARN_SHARE else " "
        kinds = ", ".join(f"{k} {n}" for k, n in r["incident_kinds"].items())
        print(f"{r['dataset']:<10} {r['lines']:>6} {r['flagged']:>7} {100 * r['share']:>6.2f}%{mark} "
              f"{r['incidents']:>9}  {kinds}{'; ' if kinds and r['top_reason'] else ''}{r['top_reason']}")
    lines = sum(r["lines"] for r in rows)
    flagged = sum(r["flagged"] for r in rows)
    print(f"{'all':<10} {lines:>6} {flagged:>7} {100 * flagged / max(lines, 1):>6.2f}%  "
          f"{sum(r['incidents'] for r in rows):>9}  ({sum(r['share'] > WARN_SHARE for r in rows)} of {len(rows)} "
          f"datasets above {100 * WARN_SHARE:.0f}%)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="Loghub-2k samples (default $LOGHUB_2K or ../shared/data/loghub-2k)")
    p.add_argument("--work", default=None, help="keep the replay outputs here (default: a temp dir, removed)")
    p.add_argument("--config", default=None, help="config for replay (default: its built-in defaults)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="loghub_flags_")
    try:
        rows = run(args.data, work, config=args.config)
    except (LoghubError, OSError) as e:
        print(f"loghub_flags: {e}", file=sys.stderr)
        return 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
