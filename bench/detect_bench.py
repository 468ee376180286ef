"""Detection benchmark: generate labelled workloads, run `anomaly_detector replay` on them, score.

Four workload families (--family): "generated" (anomaly_detector.workload, per-source JSONL),
"shop" (bench/shopgen.py, one plain syslog-style file written apart from the first), "svc"
(bench/svcgen.py, JSON lines of seven services with numeric fields, written without reading the detector)
and "infra" (bench/infragen.py, one RFC 3164 syslog file of Linux hosts, held out: never tuned on), all
scored by anomaly_detector/workload/scoring.py; the replay command runs as a subprocess. Prints per family, for
the tuning seeds and apart for the held-out seeds, caught / caught with another kind / missed,
recall and time to detect per incident kind, false incidents per day and what they were, then
lines/s and peak RSS; with the shop family also the share of lines flagged on each Loghub sample
(bench/loghub_flags.py); with --tier4-cost the share of replay time that tier 4 (sequences, window
mix) takes. Exits non-zero only when something fails to run, never because a figure is bad.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

import psutil

# Run as `python bench/detect_bench.py` from a checkout: the package is beside bench/, maybe not installed.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.workload.generator import generate  # noqa: E402
from anomaly_detector.workload.incidents import KINDS  # noqa: E402
from anomaly_detector.workload.scoring import (  # noqa: E402
    TOLERANCE_AFTER_S,
    TOLERANCE_BEFORE_S,
    detections_from_replay,
    load_detections,
    merge_scores,
    score,
)
from bench import infragen, loghub_flags, shopgen, svcgen  # noqa: E402

TARGET_RECALL = 0.9
TARGET_FALSE_PER_DAY = 1.0
TARGET_LINES_PER_S = 100_000
FAMILIES = ("generated", "shop")          # --family both; --family all adds "svc" and "infra"
SVC_TITLES = ("svc family, tuning", "svc family, held-out")
INFRA_TITLES = ("infra family, tuning", "infra family, held-out")
_DIGITS = re.compile(r"\d+")


class BenchError(Exception):
    """Something did not run (as opposed to running and scoring badly)."""


def replay_command():
    exe = shutil.which("anomaly_detector")
    return [exe] if exe else [sys.executable, "-m", "anomaly_detector"]


def tree_rss(proc):
    """RSS of a process and its children, in bytes (0 once it has gone)."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_replay(files, out_path, inc_path, config=None, poll_s=0.05, fmt="jsonl"):
    """Run replay on files; return (seconds, peak RSS bytes, CPU seconds). Polls the whole process
    tree's RSS. fmt None leaves --format out (replay's default, as a user would run it).

    A replay without the --incidents option is run again without it (the scorer then groups
    flagged lines instead)."""
    base = replay_command() + ["replay"] + (["--format", fmt] if fmt else []) + ["--output", out_path]
    tail = (["--config", config] if config else []) + list(files)
    rc, took, peak, err, cpu = run_watched(base + ["--incidents", inc_path] + tail, poll_s)
    if rc == 2 and "--incidents" in err:
        rc, took, peak, err, cpu = run_watched(base + tail, poll_s)
    if rc != 0:
        raise BenchError(f"replay exited {rc}: {' '.join(base + tail)}\n{err[-2000:]}")
    return took, peak, cpu


def run_watched(cmd, poll_s):
    """Run cmd; return (exit code, seconds, peak RSS bytes, stderr text, CPU seconds).

    The peak is the larger of the polled RSS of the process tree and the kernel's high-water mark
    for this child (wait4), which a short-lived peak between two polls cannot escape."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    began = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env)
        watched = psutil.Process(proc.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            peak = max(peak, tree_rss(watched))
            time.sleep(poll_s)
        took = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    return proc.returncode, took, max(peak, usage.ru_maxrss * 1024), text, usage.ru_utime + usage.ru_stime


def count_lines(path):
    with open(path, "rb") as fh:
        return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))


def bench_seed(seed, args, work, family="generated"):
    """Generate one seed's workload of a family, replay it, score it."""
    out_dir = os.path.join(work, f"seed{seed}" if family == "generated" else f"{family}-seed{seed}")
    began = time.perf_counter()
    if family == "shop":
        w = shopgen.generate(out_dir, days=args.days, seed=seed, lines_per_day=args.lines_per_day)
        fmt = None          # replay's default (auto), as a user would run it on a plain file
    elif family == "svc":
        w = svcgen.generate(out_dir, days=args.days, seed=seed, lines_per_day=args.lines_per_day)
        fmt = "jsonl"
    elif family == "infra":
        w = infragen.generate(out_dir, days=args.days, seed=seed, lines_per_day=args.lines_per_day)
        fmt = None          # replay's defaults, no --format: what a new user does with a syslog file
    else:
        w = generate(out_dir, days=args.days, seed=seed, lines_per_day=args.lines_per_day, fmt="jsonl")
        fmt = "jsonl"
    gen_s = time.perf_counter() - began
    name = f"seed {seed}" if family == "generated" else f"{family} seed {seed}"
    print(f"{name}: generated {w.lines} lines ({len(w.incidents)} incidents) in {gen_s:.1f} s; "
          "replaying", flush=True)
    out_path = os.path.join(out_dir, "replay.jsonl")
    inc_path = os.path.join(out_dir, "incidents.jsonl")
    took, peak, _ = run_replay(w.files, out_path, inc_path, args.config, fmt=fmt)
    written = count_lines(out_path)
    if written != w.lines:
        raise BenchError(f"replay wrote {written} records for {w.lines} input lines (the replay record: one per line)")
    if os.path.exists(inc_path):
        detections, via = load_detections(inc_path), "incidents file"
        records = incident_records(inc_path)
    else:
        detections, via = detections_from_replay(out_path, w.files), "flagged lines"
        records = {}
    labels = {"incidents": w.incidents, "warmup_end": w.warmup_end, "end": w.end, "sources": w.sources}
    s = score(labels, detections, args.before, args.after)
    return {"seed": seed, "family": family, "lines": w.lines, "gen_s": gen_s, "replay_s": took, "rss": peak,
            "score": s, "via": via, "detections": len(detections), "dir": out_dir,
            "false_records": [records.get(d.ident, {}) for d in s.false_all],
            "after_unlabelled": after_unlabelled(s.false_all, getattr(w, "unlabelled", None))}


def after_unlabelled(false, happenings, within=900.0):
    """Of the false incidents, how many began during an unlabelled happening (the shop's deploy, daemon
    restarts, log gaps) or within `within` s after it, by its kind; None when the family has none."""
    if happenings is None:
        return None
    out = Counter()
    for d in false:
        hit = [h["kind"] for h in happenings if h["start"] - 60.0 <= d.first_seen <= h["end"] + within]
        if hit:
            out[hit[0]] += 1
    return dict(out)


def incident_records(path):
    """Incident records by id, as load_detections() names them (for what the false ones said)."""
    out = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                rec = json.loads(line)
                out[str(rec.get("id", n))] = rec
    return out


def warm_up(work):
    """Replay a small workload first, so that compiling the numba kernels (once per cache) is not
    counted in the first seed's time."""
    w = generate(os.path.join(work, "warm-up"), days=0.05, seed=0, lines_per_day=200_000, fmt="jsonl",
                 incidents="none")
    out = os.path.join(work, "warm-up", "replay.jsonl")
    run_replay(w.files, out, out + ".inc", None)


def tier4_cost(result, work):
    """(CPU seconds with tier 4, without) replaying the same workload, both runs back to back (CPU time:
    wall time on a shared machine says more about the neighbours than about tier 4)."""
    config = os.path.join(work, "tier4-off.ini")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write("[detection]\n[[tier4]]\nenabled = false\n")
    files = sorted(os.path.join(result["dir"], f) for f in os.listdir(result["dir"]) if f.startswith("workload"))
    out = os.path.join(work, "tier4-cost.jsonl")
    with_t4 = run_replay(files, out, out + ".inc", None)[2]
    without = run_replay(files, out, out + ".inc", config)[2]
    return with_t4, without


def fmt_pct(x):
    return "  n/a" if x != x else f"{100 * x:5.1f}%"


def fmt_delay(x):
    return "   n/a" if x != x else f"{x:6.0f}s"


def print_report(results, title, after=TOLERANCE_AFTER_S, kinds=KINDS):
    """Per-seed table, per-kind table and false incidents of one group of seeds."""
    if not results:
        return
    print()
    print(f"== {title}: seeds {','.join(str(r['seed']) for r in results)} ==")
    print(f"{'seed':>4} {'lines':>10} {'gen s':>7} {'replay s':>9} {'lines/s':>10} {'peak RSS':>10} "
          f"{'incidents':>9} {'false/day':>9}  source of detections")
    for r in results:
        s = r["score"]
        print(f"{r['seed']:>4} {r['lines']:>10} {r['gen_s']:>7.1f} {r['replay_s']:>9.1f} "
              f"{r['lines'] / r['replay_s']:>10,.0f} {r['rss'] / 2 ** 20:>8.0f}MB {r['detections']:>9} "
              f"{s.false_per_day:>9.2f}  {r['via']}")
    total = merge_scores([r["score"] for r in results])
    print()
    print(f"{'kind':<16} {'labelled':>8} {'caught':>6} {'other kind':>10} {'missed':>6} {'recall':>7} "
          f"{'median TTD':>10}  target recall >= {TARGET_RECALL}")
    for kind in kinds:
        ks = total.kinds.get(kind)
        if ks is None:
            continue
        mark = "ok" if ks.recall >= TARGET_RECALL else "LOW"
        said = ", ".join(f"{k} {n}" for k, n in ks.wrong_kinds.most_common())
        print(f"{kind:<16} {ks.labelled:>8} {ks.caught:>6} {ks.other_kind:>10} {ks.missed:>6} {fmt_pct(ks.recall):>7} "
              f"{fmt_delay(ks.median_delay):>10}  {mark}" + (f"  (said: {said})" if said else ""))
    print()
    print(f"false incidents after warm-up: {total.false_incidents} over {total.scored_days:.1f} days = "
          f"{total.false_per_day:.2f}/day (target <= {TARGET_FALSE_PER_DAY}); {total.near_label} of them near a "
          f"label of their source (too early, or more than {after:.0f} s after its end); "
          f"{total.repeats} repeat alerts for credited labels; {total.warmup_detections} during warm-up (not counted)")
    for m in total.missed[:20]:
        print(f"  missed #{m['id']} {m['kind']} {m['source']} {m['start_iso']}..{m['end_iso']} {m['detail']}")
    for d in total.false_samples[:10]:
        print(f"  false {d.ident} kind={d.kind} source={d.source} first_seen={d.first_seen:.0f} "
              f"last_seen={d.last_seen:.0f}")
    unlabelled = [r["after_unlabelled"] for r in results if r.get("after_unlabelled") is not None]
    if unlabelled:
        pooled = sum((Counter(u) for u in unlabelled), Counter())
        print(f"  {sum(pooled.values())} false incidents began during or up to 900 s after an unlabelled deploy, "
              f"restart or log gap ({', '.join(f'{k} {n}' for k, n in sorted(pooled.items())) or 'none'})")
    print_false_summary([rec for r in results for rec in r.get("false_records", ())])


def print_false_summary(records, top=6):
    """What the false incidents said: counts by kind, by reason (numbers masked) and by template."""
    if not records:
        return
    by_kind = Counter(r.get("kind") or "unknown" for r in records)
    by_reason = Counter(_DIGITS.sub("N", str(r.get("reason") or ""))[:110] for r in records)
    by_template = Counter(str(r.get("template") or "")[:110] for r in records)
    print(f"  false incidents by kind: {', '.join(f'{k} {n}' for k, n in by_kind.most_common())}")
    print("  top reasons:")
    for text, n in by_reason.most_common(top):
        print(f"    {n:>4}  {text}")
    print("  top templates:")
    for text, n in by_template.most_common(top):
        print(f"    {n:>4}  {text}")


def print_runtime(results):
    lines = sum(r["lines"] for r in results)
    secs = sum(r["replay_s"] for r in results)
    print()
    print(f"replay throughput (all seeds): {lines / secs:,.0f} lines/s (target >= {TARGET_LINES_PER_S:,}); "
          f"peak RSS {max(r['rss'] for r in results) / 2 ** 20:.0f} MB")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3,4,5", help="comma-separated tuning seeds (default 1,2,3,4,5)")
    p.add_argument("--heldout-seeds", default="6,7,8",
                   help="comma-separated held-out seeds, never to tune on, reported in their own table "
                        "(default 6,7,8; empty for none)")
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--lines-per-day", type=int, default=1_000_000)
    p.add_argument("--config", default=None, help="config for replay (default: its built-in defaults)")
    p.add_argument("--work", default=None, help="keep workloads and outputs here (default: a temp dir, removed)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--tier4-cost", action="store_true",
                   help="replay the first seed again with tier 4 off and print tier 4's share of the time")
    p.add_argument("--family", choices=("generated", "shop", "svc", "infra", "both", "all"), default="both",
                   help="workload family: generated (anomaly_detector.workload), shop (bench/shopgen.py), svc "
                        "(bench/svcgen.py), infra (bench/infragen.py, held out), both (generated and shop, "
                        "the default) or all four")
    p.add_argument("--no-loghub", action="store_true",
                   help="skip the share of lines flagged on the Loghub samples (printed with the shop family)")
    p.add_argument("--loghub-data", default=loghub_flags.DEFAULT_DATA,
                   help="Loghub-2k samples, <D>/<D>_2k.log (default $LOGHUB_2K or ../shared/data/loghub-2k)")
    p.add_argument("--before", type=float, default=TOLERANCE_BEFORE_S, help="earliest start before a label's start, s")
    p.add_argument("--after", type=float, default=TOLERANCE_AFTER_S, help="latest start after a label's end, s")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    seeds = seed_list(args.seeds)
    heldout = seed_list(args.heldout_seeds)
    if set(seeds) & set(heldout):
        print(f"detect_bench: seeds {sorted(set(seeds) & set(heldout))} are both tuning and held-out", file=sys.stderr)
        return 2
    families = {"both": FAMILIES, "all": FAMILIES + ("svc", "infra")}.get(args.family, (args.family,))
    work = args.work or tempfile.mkdtemp(prefix="detect_bench_")
    results = []
    tier4 = None
    loghub = None
    try:
        warm_up(work)
        for family in families:
            for seed in seeds + heldout:
                r = bench_seed(seed, args, work, family)
                name = f"seed {seed}" if family == "generated" else f"{family} seed {seed}"
                print(f"{name}: {r['lines']} lines, replay {r['replay_s']:.1f} s, "
                      f"{r['detections']} detections ({r['via']})", flush=True)
                results.append(r)
        generated = [r for r in results if r["family"] == "generated"]
        if args.tier4_cost and generated:
            tier4 = tier4_cost(generated[0], work)
        if "shop" in families and not args.no_loghub:
            loghub = loghub_flags.run(args.loghub_data, os.path.join(work, "loghub"), replay_command(), args.config)
    except (BenchError, loghub_flags.LoghubError, OSError, ValueError) as e:
        print(f"detect_bench: {e}", file=sys.stderr)
        return 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results, seeds, heldout, args.after)
    if tier4 is not None:
        with_t4, without = tier4
        print(f"tier 4 cost (seed {generated[0]['seed']}): replay {with_t4:.1f} CPU-s with it, {without:.1f} "
              f"without: {100 * max(with_t4 - without, 0.0) / with_t4:.1f}% of the time (budget 30%)")
    if loghub is not None:
        print()
        loghub_flags.print_table(loghub)
    if args.json:
        write_json(args.json, results, heldout, loghub)
    return 0


def report(results, seeds, heldout, after):
    """The generated family's tables as they always were, then the shop family's and the svc family's under
    their own titles, then the infra family's."""
    generated = [r for r in results if r["family"] == "generated"]
    print_report([r for r in generated if r["seed"] in seeds], "tuning", after)
    print_report([r for r in generated if r["seed"] in heldout], "held-out", after)
    if generated:
        print_runtime(generated)
    shop = [r for r in results if r["family"] == "shop"]
    print_report([r for r in shop if r["seed"] in seeds], "shop family, tuning", after, shopgen.KINDS)
    print_report([r for r in shop if r["seed"] in heldout], "shop family, held-out", after, shopgen.KINDS)
    if shop:
        print("shop family: an incident whose source names none of the labels' programs (a source the replay "
              "did not tell apart) is matched on time alone")
        print_runtime(shop)
    svc = [r for r in results if r["family"] == "svc"]
    print_report([r for r in svc if r["seed"] in seeds], SVC_TITLES[0], after, svcgen.KINDS)
    print_report([r for r in svc if r["seed"] in heldout], SVC_TITLES[1], after, svcgen.KINDS)
    if svc:
        print_runtime(svc)
    infra = [r for r in results if r["family"] == "infra"]
    print_report([r for r in infra if r["seed"] in seeds], INFRA_TITLES[0], after, infragen.KINDS)
    print_report([r for r in infra if r["seed"] in heldout], INFRA_TITLES[1], after, infragen.KINDS)
    if infra:
        print_runtime(infra)


def seed_list(text):
    return [int(s) for s in text.split(",") if s.strip()]


def figures(results):
    """Pooled figures of one group of seeds, JSON-able."""
    total = merge_scores([r["score"] for r in results])
    return {"seeds": [{k: r[k] for k in ("seed", "lines", "gen_s", "replay_s", "rss", "via", "detections")}
                      | {"false_per_day": r["score"].false_per_day} for r in results],
            "kinds": {k: {"labelled": v.labelled, "caught": v.caught, "other_kind": v.other_kind,
                          "missed": v.missed, "recall": v.recall, "median_ttd_s": v.median_delay,
                          "said": dict(v.wrong_kinds)} for k, v in total.kinds.items()},
            "false_incidents": total.false_incidents, "false_per_day": total.false_per_day,
            "near_label": total.near_label, "repeats": total.repeats}


def family_figures(results, heldout):
    """Tuning seeds' figures at the top level, held-out seeds' under "heldout"."""
    doc = figures([r for r in results if r["seed"] not in heldout])
    doc["heldout"] = figures([r for r in results if r["seed"] in heldout])
    doc["lines_per_s"] = sum(r["lines"] for r in results) / sum(r["replay_s"] for r in results)
    doc["peak_rss_bytes"] = max(r["rss"] for r in results)
    return doc


def write_json(path, results, heldout, loghub=None):
    """The generated family's figures at the top level (as before), the shop family's under "shop", the
    svc family's under "svc", the infra family's under "infra", the
    Loghub flag shares under "loghub"."""
    generated = [r for r in results if r["family"] == "generated"]
    shop = [r for r in results if r["family"] == "shop"]
    svc = [r for r in results if r["family"] == "svc"]
    doc = family_figures(generated, heldout) if generated else {}
    if shop:
        doc["shop"] = family_figures(shop, heldout)
    if svc:
        doc["svc"] = family_figures(svc, heldout)
    infra = [r for r in results if r["family"] == "infra"]
    if infra:
        doc["infra"] = family_figures(infra, heldout)
    if loghub is not None:
        doc["loghub"] = loghub
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
