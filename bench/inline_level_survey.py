"""What parsing/inline_levels.py reads from messages of logs nobody here wrote (the Loghub 2k samples).

For each sample, the reader runs on the Content column alone (the message after the header). On
samples whose header has a level (Level column of real level words), it should rarely claim one
and, when it does, agree with the header; on the others, every distinct claim is listed with an
example so a person can check it by eye.

    python bench/inline_level_survey.py [--data /path/to/loghub-2k] [--examples 3]

Neighbours: bench/loghub_flags.py (flag rates on the same samples), parsing/inline_levels.py.
"""
import argparse
import csv
import glob
import os
from collections import Counter, defaultdict

import numpy as np

from anomaly_detector.parsing.batch import LEVEL_NAMES, LEVEL_UNKNOWN, level_code
from anomaly_detector.parsing.inline_levels import line_levels

DEFAULT_DATA = "/work/shared/data/loghub-2k"


def read_sample(path):
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return list(csv.DictReader(f))


def survey(rows):
    """(header levels, inline levels) as LEVEL_* arrays for the rows' Level and Content."""
    data = [r["Content"].encode("utf-8") for r in rows]
    buf = np.frombuffer(b"".join(data) or b"\0", np.uint8)
    ends = np.cumsum([len(d) for d in data]).astype(np.int64)
    starts = ends - np.array([len(d) for d in data], np.int64)
    header = np.array([level_code(r.get("Level", "")) for r in rows], np.int8)
    return header, line_levels(buf, starts, ends)


def report(name, rows, examples):
    header, inline = survey(rows)
    has_header = (header != LEVEL_UNKNOWN).mean() > 0.5
    claimed = inline != LEVEL_UNKNOWN
    line = "%-10s %5d lines  header level: %-3s  inline claims: %4d" % (
        name, len(rows), "yes" if has_header else "no", int(claimed.sum()))
    if has_header:
        agree = int((claimed & (inline == header)).sum())
        line += "  agree with header: %d/%d" % (agree, int(claimed.sum()))
    print(line)
    shown = defaultdict(list)
    for i in np.flatnonzero(claimed).tolist():
        key = (LEVEL_NAMES[inline[i]], LEVEL_NAMES[header[i]] if has_header else "-")
        if len(shown[key]) < examples:
            shown[key].append(rows[i]["Content"][:110])
    counts = Counter((LEVEL_NAMES[inline[i]], LEVEL_NAMES[header[i]] if has_header else "-")
                     for i in np.flatnonzero(claimed).tolist())
    for key, count in counts.most_common():
        print("    inline %-8s header %-8s x%-4d e.g. %s" % (key[0], key[1] or "?", count, " | ".join(shown[key])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--examples", type=int, default=2)
    args = ap.parse_args()
    for path in sorted(glob.glob(os.path.join(args.data, "*", "*_2k.log_structured.csv"))):
        report(os.path.basename(os.path.dirname(path)), read_sample(path), args.examples)


if __name__ == "__main__":
    main()
