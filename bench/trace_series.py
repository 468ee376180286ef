"""Why did a numeric series (tier 3) score what it scored? Steps one series of a log through the series
kernel and prints, per value in a time window, its score and the level-shift test's state.

The values are the first group of `--value REGEX` on each matching line (one series: narrow the regex to
one source and template, e.g. `'api-1 checkout.*payment authorized.*took ([0-9]+) ms'`), stepped
through series_kernels.step as the replay does (anomaly threshold 70, suspicious 40, default
series_record_weight and series_shift_budget), one series alone: `--multiplicity` is the number of
judged series of its source in a real replay (the flag budget is shared by them: more series, a
stricter bonus), 1 by default; the level-shift test is given the same (the engine gives it a share of
the budget by the series' windows a day: see series.SeriesBook.multiplicity). Timestamps: ISO 8601 at
the line's start, else RFC 3164 (`Mar  5 00:04:39`, in `--year`), or a JSON line's `timestamp` (`@timestamp`, `time`, `ts`) field: the generated
workload's seed 10 `select on users` query time, whose x9 drift scored 61 when the test deseasoned by the
forecast's offsets:

    python bench/trace_series.py /tmp/work/seed10/workload.jsonl --value 'select on users took ([0-9.]+) ms' \
        --start 2026-03-04T10:05:00Z --end 2026-03-04T10:20:00Z --every 20

    python bench/trace_series.py LOG --value REGEX --start 2026-03-07T09:50:14Z --end 2026-03-07T11:23:00Z

Columns: seconds from --start, the value, its score and kind, the level-shift statistic u (the fast
mean's distance from the baseline in usual gap sizes), the score the test gives it (`shift`, fired
only after 10 values in a row at the threshold: `held`), the gap's usual size, the residual scale,
and the excursions of u beyond U_START learned so far (`exc`) against the windows seen (`windows`).
Then the series' largest excursions of u over the whole log, those overlapping the window marked.
Neighbours: explain_labels.py (which labels were missed), anomaly_detector/detection/series_kernels.py.
"""
import argparse
import datetime
import json
import math
import os
import re
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.detection import series_kernels as K  # noqa: E402

KIND_NAMES = {K.KIND_NONE: "-", K.KIND_SPIKE: "spike", K.KIND_DROP: "drop", K.KIND_RECORD_HIGH: "record-high",
              K.KIND_RECORD_LOW: "record-low", K.KIND_SHIFT_UP: "shift-up", K.KIND_SHIFT_DOWN: "shift-down"}
THRESHOLD, SUSPICIOUS = 70.0, 40.0
JSON_TIME_KEYS = ("timestamp", "@timestamp", "time", "ts")   # a JSON line's time field, the first present


def iso_seconds(text):
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)).timestamp()


def line_seconds(line, year):
    """Epoch seconds of a line's ISO 8601 or RFC 3164 timestamp, or of a JSON line's ISO 8601 time
    field (None: none of these)."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        stamp = next((record[k] for k in JSON_TIME_KEYS if isinstance(record.get(k), str)), None)
        return iso_seconds(stamp) if stamp else None
    head = line[:32].split(" ", 1)[0].replace("Z", "+00:00")
    try:
        t = datetime.datetime.fromisoformat(head)
        return (t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)).timestamp()
    except ValueError:
        pass
    try:
        t = datetime.datetime.strptime("%d %s" % (year, line[:15]), "%Y %b %d %H:%M:%S")
    except ValueError:
        return None
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def read_values(path, pattern, year):
    rx = re.compile(pattern)
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            m = rx.search(line)
            t = line_seconds(line, year) if m else None
            if t is not None:
                try:
                    out.append((t, float(m.group(1))))
                except (IndexError, ValueError):
                    continue
    return out


def shift_score(st, u, multiplicity):
    """The level-shift test's score of u, as step() computes it (0 below U_START)."""
    lp = K.shift_log10p(st, 0, u)
    if lp >= 0.0:
        return 0.0
    bonus = K.rate_bonus(st[0, K.GAP] * K.SHIFT_WINDOW, THRESHOLD, multiplicity)
    bonus += 10.0 * math.log10(K.SHIFT_FLAGS_PER_DAY / K.FALSE_FLAGS_PER_DAY)
    return min(max(-10.0 * lp + bonus, 0.0), 100.0)


def trace(values, start, end, multiplicity, every, out=sys.stdout):
    st, season = np.zeros((1, K.COLS)), np.zeros((1, K.SEASON_ROWS, K.SEASON_BUCKETS))
    seen, labels, rec = np.zeros((1, K.SEASON_BUCKETS), np.int8), np.zeros((1, 16)), np.zeros((1, K.RECORD_COLS))
    excursions, current = [], None      # [sign, first t, last t, values, peak |u|]
    print("%8s %12s %6s %-11s %7s %6s %4s %8s %7s %6s %7s" % (
        "s", "value", "score", "kind", "u", "shift", "held", "gap", "scale", "exc", "windows"), file=out)
    for k, (t, v) in enumerate(values):
        score, kind, _, _ = K.step(st, season, seen, labels, rec, 0, v, t, 1.0, THRESHOLD, SUSPICIOUS,
                                   multiplicity, multiplicity, K.RECORD_WEIGHT, K.SHIFT_FLAGS_PER_DAY, 0.1)
        u = K.shift_u(st, 0, st[0, K.FAST])
        if abs(u) > K.U_START and (current is None or current[0] * u > 0):
            current = current or [math.copysign(1.0, u), t, t, 0, 0.0]
            current[2], current[3], current[4] = t, current[3] + 1, max(current[4], abs(u))
        elif current is not None:
            excursions.append(current)
            current = None
        if start <= t <= end and (k % every == 0 or score >= SUSPICIOUS):
            print("%8.0f %12.6g %6.1f %-11s %7.2f %6.1f %4d %8.4f %7.3f %6.2f %7.1f" % (
                t - start, v, score, KIND_NAMES.get(int(kind), "?"), u, shift_score(st, u, multiplicity),
                st[0, K.HELD], st[0, K.GAP_SIZE], st[0, K.SCALE], st[0, K.U_N], st[0, K.U_TOTAL]), file=out)
    if current is not None:
        excursions.append(current)
    print("\n%d values, %d excursions of u beyond %.1f; the largest:" % (len(values), len(excursions), K.U_START),
          file=out)
    for sign, first, last, n, peak in sorted(excursions, key=lambda x: -x[4])[:10]:
        mark = "  <- in the window" if first <= end and last >= start else ""
        print("  %s %s for %d values, peak %.2f%s" % ("up  " if sign > 0 else "down",
              datetime.datetime.fromtimestamp(first, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              n, peak, mark), file=out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("--value", required=True, help="regex whose first group is the series' value")
    p.add_argument("--start", help="ISO time the window starts (default: the first value)")
    p.add_argument("--end", help="ISO time the window ends (default: the last value)")
    p.add_argument("--multiplicity", type=float, default=1.0, help="judged series of the source (default 1)")
    p.add_argument("--every", type=int, default=1, help="print every Nth value (and every suspicious one)")
    p.add_argument("--year", type=int, default=datetime.datetime.now(datetime.timezone.utc).year,
                   help="year of RFC 3164 timestamps")
    args = p.parse_args(argv)
    values = read_values(args.log, args.value, args.year)
    if not values:
        print("no line of %s matches --value with a timestamp" % args.log, file=sys.stderr)
        return 2
    start = iso_seconds(args.start) if args.start else values[0][0]
    end = iso_seconds(args.end) if args.end else values[-1][0]
    trace(values, start, end, args.multiplicity, max(args.every, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
