"""`python -m anomaly_detector.workload`: write a generated workload and say what was written.

A thin argparse front for generator.generate(); bench/detect_bench.py calls generate() directly.
"""
import argparse
import sys
import time

from anomaly_detector.workload.generator import DEFAULT_LINES_PER_DAY, generate
from anomaly_detector.workload.incidents import KINDS


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m anomaly_detector.workload",
                                description="Generate a multi-service log workload with labelled incidents.")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--days", type=float, default=3.0, help="days of event time (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines-per-day", type=int, default=DEFAULT_LINES_PER_DAY,
                   help="weekday lines of web+app+db (default %(default)s)")
    p.add_argument("--source-lines-per-day", default="", metavar="SRC=N,...",
                   help="override single sources' weekday volume, e.g. db=50000,health=11520")
    p.add_argument("--incidents", default="all",
                   help=f"'all', 'none' or a comma-separated list of: {', '.join(KINDS)}")
    p.add_argument("--start", default="2026-03-02T00:00:00Z", help="ISO 8601 start of event time")
    p.add_argument("--fmt", choices=("plain", "jsonl"), default="plain",
                   help="plain: one file per source; jsonl: one merged file with a source per line")
    p.add_argument("--cascades", type=float, default=0,
                   help="cascades per post-warm-up day: a dependency's fault spreading to two dependents, plus "
                        "an unrelated incident at the same time (default 0: none, the output of a seed unchanged)")
    p.add_argument("--warmup-days", type=float, default=None, help="no incidents before this (default 1 day)")
    return p.parse_args(argv)


def parse_volumes(text):
    """'db=50000,health=11520' -> {'db': 50000, 'health': 11520}."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, _, value = item.partition("=")
        if not value.strip().isdigit():
            raise ValueError(f"--source-lines-per-day wants SRC=N pairs, got {item!r}")
        out[name.strip()] = int(value)
    return out


def main(argv=None):
    args = parse_args(argv)
    incidents = args.incidents if args.incidents in ("all", "none") else args.incidents.split(",")
    began, cpu = time.perf_counter(), time.process_time()
    try:
        per_source = parse_volumes(args.source_lines_per_day)
        w = generate(args.out, days=args.days, seed=args.seed, lines_per_day=args.lines_per_day,
                     incidents=incidents, start=args.start, fmt=args.fmt, warmup_days=args.warmup_days,
                     source_lines_per_day=per_source, cascades=args.cascades)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    for path in w.files:
        print(f"{path}\t{w.lines_per_file[path.rsplit('/', 1)[-1]]} lines")
    print(f"{w.labels_path}\t{len(w.incidents)} incidents")
    for inc in w.incidents:
        print(f"  #{inc['id']:<3} {inc['kind']:<16} {inc['source']:<7} {inc['start_iso']} .. {inc['end_iso']}"
              f"  {inc['n_lines']} lines")
    print(f"{w.lines} lines in {took:.1f} s ({w.lines / max(took, 1e-9):,.0f} lines/s; "
          f"{w.lines / max(cpu, 1e-9):,.0f} lines per CPU second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
