"""NAB benchmark: replay the labelled metric series of the NAB development set through the product, score.

Each series becomes a log file of `<ISO time> metric <name> value <v>` lines, replayed with the
Pipeline that `anomaly_detector replay` uses (commands/replay.py, pipeline.py), default config,
a fresh Pipeline per series (NAB scores each file on its own). Each line's `score` / 100 and its
`anomaly` flag are the detector's outputs; anomaly_detector/workload/nab_scoring.py scores them.
Prints profile x {score at the best threshold, flag}, per-category figures, lines/s and peak RSS.

--cv VALUES replays the corpus once per value of [detection][[tier3]] series_record_weight and
cross-validates by category: for each category held out, the value and the score threshold that
maximise the standard profile on the other three are chosen, then the held-out category is scored
with them (its score, its flag, its false-positive lines), apart from the tuned-on figures.
Exits non-zero only when something fails to run, never because a figure is bad.
"""
import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time

# Run as `python bench/nab_bench.py` from a checkout: the package is beside bench/, maybe not installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.config.loader import default_config  # noqa: E402
from anomaly_detector.pipeline import Pipeline  # noqa: E402
from anomaly_detector.workload import nab_scoring as nab  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "nab-dev")


class BenchError(Exception):
    """Something did not run (as opposed to running and scoring badly)."""


def load_corpus(data):
    """[(category, name, times, values)] for every labelled file, in label order."""
    labels_path = os.path.join(data, "labels", "combined_windows.json")
    if not os.path.isfile(labels_path):
        raise BenchError(f"nab_bench: no NAB data at {data} (expected labels/combined_windows.json); pass --data DIR")
    with open(labels_path, encoding="utf-8") as f:
        labels = json.load(f)
    corpus = []
    for rel, windows in labels.items():
        path = os.path.join(data, "data", rel)
        if not os.path.isfile(path):
            raise BenchError(f"nab_bench: {path} is labelled but missing")
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        times = [nab.parse_time(r["timestamp"]) for r in rows]
        wins = [(nab.parse_time(a), nab.parse_time(b)) for a, b in windows]
        corpus.append((rel.split("/")[0], os.path.splitext(os.path.basename(rel))[0], times,
                       [r["value"] for r in rows], wins))
    return corpus


def write_log(path, name, times, values):
    with open(path, "w", encoding="utf-8") as f:
        for t, v in zip(times, values):
            f.write(f"{t.isoformat()} metric {name} value {v}\n")


def config_with(record_weight=None):
    cfg = default_config()
    if record_weight is not None:
        cfg["detection"]["tier3"]["series_record_weight"] = float(record_weight)
    return cfg


def replay(path, n, cfg):
    """Scores (0..1) and flags of every line of a log file, through a fresh replay Pipeline."""
    pipeline = Pipeline(cfg)
    scores, flags = [], []
    for chunk in pipeline.process_file(path):
        for line in chunk.splitlines():
            record = json.loads(line)
            scores.append(record["score"] / 100.0)
            flags.append(bool(record["anomaly"]))
    pipeline.finish()
    if len(scores) != n:
        raise BenchError(f"nab_bench: {path}: {n} lines in, {len(scores)} records out")
    return scores, flags


def run(corpus, work, cfg=None):
    """Replay every series; return (series, scores, flags, replay seconds)."""
    cfg = default_config() if cfg is None else cfg
    series, scores, flags, seconds = [], [], [], 0.0
    for category, name, times, values, windows in corpus:
        path = os.path.join(work, f"{name}.log")
        write_log(path, name, times, values)
        began = time.perf_counter()
        s, f = replay(path, len(values), cfg)
        seconds += time.perf_counter() - began
        series.append(nab.Series(f"{category}/{name}", len(values), nab.window_rows(times, windows)))
        scores.append(s)
        flags.append(f)
    return series, scores, flags, seconds


def fmt(x):
    return "   n/a" if x is None else f"{x:6.1f}"


def report(corpus, series, scores, flags, seconds, profiles):
    best = nab.best_thresholds(series, scores, profiles)
    n_lines = sum(s.n for s in series)
    print(f"NAB development set: {len(series)} series, {n_lines} lines, "
          f"{sum(len(s.windows) for s in series)} windows")
    print(f"{'profile':<20} {'score':>6} {'thr':>6} {'flag':>6}   flag TP/windows, FP lines")
    flag_t = nab.total(nab.tally(s, f) for s, f in zip(series, flags))
    for p in profiles:
        flag_score = nab.corpus_score(series, flags, p)
        t, sc, _ = best.get(p.name, (None, None, None))
        thr = "  none" if t is None or t == float("inf") else f"{t:6.3f}"
        print(f"{p.name:<20} {fmt(sc)} {thr} {fmt(flag_score)}   {flag_t.detected}/{flag_t.windows}, {flag_t.fp_rows}")
    print()
    print("per category (score at the corpus's best threshold / flag; n/a: no window to score)")
    print(f"{'category':<22} {'files':>5} {'win':>4} " + " ".join(f"{p.name[:18]:>18}" for p in profiles)
          + "   flag TP, FP")
    for category in dict.fromkeys(c[0] for c in corpus):
        idx = [i for i, c in enumerate(corpus) if c[0] == category]
        ss = [series[i] for i in idx]
        cells = []
        for p in profiles:
            t = best[p.name][0] if p.name in best else float("inf")
            det = [[v >= t for v in scores[i]] for i in idx]
            cells.append(f"{fmt(nab.corpus_score(ss, det, p))} /{fmt(nab.corpus_score(ss, [flags[i] for i in idx], p))}")
        ft = nab.total(nab.tally(series[i], flags[i]) for i in idx)
        print(f"{category:<22} {len(idx):>5} {ft.windows:>4} " + " ".join(f"{c:>18}" for c in cells)
              + f"   {ft.detected}, {ft.fp_rows}")
    print()
    top = max((max(s) if s else 0.0) for s in scores) * 100.0
    scored = sum(sum(1 for v in s if v > 0) for s in scores)
    print(f"lines with score > 0: {scored} of {n_lines} (max score {top:.1f}); flagged: "
          f"{sum(sum(f) for f in flags)}")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    rate = n_lines / seconds if seconds > 0 else 0.0
    print(f"replay: {n_lines} lines in {seconds:.1f} s ({rate:.0f} lines/s, includes each series' "
          f"Pipeline start); peak RSS {peak_mib:.0f} MiB")


def standard(profiles):
    return next(p for p in profiles if p.name == "standard")


def cross_validate(corpus, runs, profiles):
    """Leave one category out over runs {record weight: (series, scores, flags, seconds)}: print the
    held-out and tuned-on figures of each fold and return the weight chosen most often."""
    prof = standard(profiles)
    categories = list(dict.fromkeys(c[0] for c in corpus))
    print("whole corpus per series_record_weight (standard profile): score at its best threshold / flag")
    for weight, (series, scores, flags, _) in sorted(runs.items()):
        t, sc, _ = nab.best_thresholds(series, scores, [prof])[prof.name]
        print(f"  {weight:>6g}: {fmt(sc)} (thr {t:.3f}) / {fmt(nab.corpus_score(series, flags, prof))}")
    print()
    print(f"cross-validation by category over series_record_weight in {sorted(runs)} (standard profile)")
    print(f"{'held out':<22} {'weight':>6} {'thr':>6} {'tuned-on':>8} {'held-out':>8} {'flag':>6}   held-out TP/win, FP rows")
    chosen, held_scores, held_flags = [], [], []
    for held in categories:
        train = [i for i, c in enumerate(corpus) if c[0] != held]
        test = [i for i, c in enumerate(corpus) if c[0] == held]
        best = None
        for weight, (series, scores, _flags, _) in sorted(runs.items()):
            t, sc, _ = nab.best_thresholds([series[i] for i in train], [scores[i] for i in train], [prof])[prof.name]
            if best is None or sc > best[2]:
                best = (weight, t, sc)
        weight, t, tuned = best
        series, scores, flags, _ = runs[weight]
        ss = [series[i] for i in test]
        det = [[v >= t for v in scores[i]] for i in test]
        held_out = nab.corpus_score(ss, det, prof)
        flag = nab.corpus_score(ss, [flags[i] for i in test], prof)
        tal = nab.total(nab.tally(series[i], d) for i, d in zip(test, det))
        print(f"{held:<22} {weight:>6g} {t:6.3f} {fmt(tuned):>8} {fmt(held_out):>8} {fmt(flag)}   "
              f"{tal.detected}/{tal.windows}, {tal.fp_rows}")
        chosen.append(weight)
        if held_out is not None:
            held_scores.append((held_out, sum(len(series[i].windows) for i in test)))
            held_flags.append((flag, sum(len(series[i].windows) for i in test)))
    if held_scores:
        wins = sum(w for _, w in held_scores)
        print(f"held-out mean, weighted by windows: score {sum(s * w for s, w in held_scores) / wins:.1f}, "
              f"flag {sum(s * w for s, w in held_flags) / wins:.1f}")
    return max(set(chosen), key=chosen.count)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="NAB development set (default: %(default)s)")
    ap.add_argument("--work", default=None, help="keep the generated log files here (default: a temp dir)")
    ap.add_argument("--cv", default=None, metavar="VALUES",
                    help="comma-separated series_record_weight values to cross-validate by category")
    args = ap.parse_args(argv)
    try:
        weights = [float(v) for v in args.cv.split(",")] if args.cv else [None]
    except ValueError:
        print(f"nab_bench: --cv takes comma-separated numbers, got {args.cv!r}", file=sys.stderr)
        return 2
    try:
        corpus = load_corpus(args.data)
        profiles_path = os.path.join(args.data, "profiles.json")
        profiles = nab.load_profiles(profiles_path) if os.path.isfile(profiles_path) else nab.PROFILES
        if args.work:
            os.makedirs(args.work, exist_ok=True)
            runs = {w: run(corpus, args.work, config_with(w)) for w in weights}
        else:
            with tempfile.TemporaryDirectory(prefix="nab-bench-") as work:
                runs = {w: run(corpus, work, config_with(w)) for w in weights}
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.cv:
        chosen = cross_validate(corpus, runs, profiles)
        print(f"\nweight chosen most often: {chosen:g}; its whole-corpus figures:\n")
        report(corpus, *runs[chosen], profiles)
    else:
        report(corpus, *runs[None], profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
