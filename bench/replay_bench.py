"""Replay throughput per CPU second on fixed plain workloads, with and without numeric series.

Generates (once per --work directory) the generated family (anomaly_detector.workload, one merged
JSONL file), the shop family (bench/shopgen.py, one plain file) and the infra family (bench/infragen.py,
one rsyslog file of year-less RFC 3164 lines; not in the default --families), no cascades, then replays each
file with the default config and with numeric series off (`[detection] [[tier3]] max_series = 0`),
back to back, --repeat times each, and prints per family and setting the best lines per CPU second
of the whole `replay` process (user + system CPU of the child from wait4: robust to a loaded
machine; start-up included) and replay's own wall-clock lines/s (from its stderr summary), then
what the series cost: CPU seconds per million lines with minus without, and the share of the run.

--package-root DIR replays through another checkout (a tree before a change) on the same files, so
two trees can be measured back to back; --compare DIR does both in one go, interleaved.

    python bench/replay_bench.py                                  # 2 days x 300k lines/day, best of 2
    python bench/replay_bench.py --families shop --repeat 3
    python bench/replay_bench.py --families infra,generated,shop --repeat 3
    python bench/replay_bench.py --compare /tmp/old-checkout      # old tree and this one, interleaved

Neighbours: bench/detect_bench.py (run_watched, replay_command), bench/shopgen.py, bench/infragen.py;
bench/README.md.
"""
import argparse
import compileall
import os
import re
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.workload.generator import generate  # noqa: E402
from bench import infragen, shopgen  # noqa: E402
from bench.detect_bench import BenchError, run_watched  # noqa: E402

SETTINGS = {"series on": "", "series off": "[detection]\n[[tier3]]\nmax_series = 0\n"}
OWN_RATE = re.compile(r"replay: (\d+) lines, .*\(([\d.]+) lines/s\)")


def make_inputs(work, days, lines_per_day, families):
    """{family: (file, --format or None)}, generated once per work directory."""
    inputs = {}
    if "generated" in families:
        path = os.path.join(work, "generated", "workload.jsonl")
        if not os.path.exists(path):
            generate(os.path.dirname(path), days=days, seed=1, lines_per_day=lines_per_day, fmt="jsonl")
        inputs["generated"] = (path, "jsonl")
    if "shop" in families:
        path = os.path.join(work, "shop", "shop.log")
        if not os.path.exists(path):
            shopgen.generate(os.path.dirname(path), days=days, seed=1, lines_per_day=lines_per_day)
        inputs["shop"] = (path, None)
    if "infra" in families:
        path = os.path.join(work, "infra", infragen.LOG_FILE)
        if not os.path.exists(path):
            infragen.generate(os.path.dirname(path), days=days, seed=1, lines_per_day=lines_per_day)
        inputs["infra"] = (path, None)     # replay's default format (auto), as detect_bench runs it
    return inputs


def replay_once(root, path, fmt, config, out):
    """(lines, CPU seconds, replay's own lines/s) of one replay through the package under root."""
    cmd = ["nice", sys.executable, "-m", "anomaly_detector", "replay", "--output", out]
    cmd += (["--config", config] if config else []) + (["--format", fmt] if fmt else []) + [path]
    rc, _took, _peak, err, cpu = _watched(cmd, root)
    found = OWN_RATE.search(err)
    if rc != 0 or not found:
        raise BenchError("replay exited %d: %s\n%s" % (rc, " ".join(cmd), err[-2000:]))
    return int(found.group(1)), cpu, float(found.group(2))


def _watched(cmd, root):
    # `python -m` imports the package from the working directory first, and run_watched prepends this
    # repository to PYTHONPATH: run in the tree's own directory with only it on the path.
    return run_watched(["env", "-C", root, "PYTHONPATH=" + root] + cmd, 0.5)


def measure(roots, inputs, repeat, work):
    """{(root, family, setting): (lines, best CPU s, best own lines/s)}, settings and roots interleaved."""
    configs = {}
    for name, text in SETTINGS.items():
        if text:
            configs[name] = os.path.join(work, name.replace(" ", "-") + ".ini")
            with open(configs[name], "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            configs[name] = None
    best = {}
    one_line = os.path.join(work, "one-line.log")
    with open(one_line, "w", encoding="utf-8") as fh:
        fh.write("2026-03-02T00:00:00Z INFO start-up only\n")
    for _ in range(repeat):     # start-up alone (imports, config, loading the kernels): subtracted below
        for root in roots:
            cpu = replay_once(root, one_line, None, None, one_line + ".out")[1]
            best[(root, "start-up")] = min(cpu, best.get((root, "start-up"), cpu))
    for family, (path, fmt) in inputs.items():
        for _ in range(repeat):
            for root in roots:
                for name in SETTINGS:
                    out = os.path.join(work, "out-%s.jsonl" % family)
                    lines, cpu, own = replay_once(root, path, fmt, configs[name], out)
                    key = (root, family, name)
                    old = best.get(key)
                    best[key] = (lines, min(cpu, old[1]) if old else cpu, max(own, old[2]) if old else own)
    return best


def report(best, roots, inputs):
    print("lines/CPU s: whole process; after start-up: its CPU less a one-line replay's (the scoring path)")
    print("%-10s %-12s %-10s %9s %8s %14s %20s %14s" % ("tree", "family", "setting", "lines", "CPU s",
                                                         "lines/CPU s", "after start-up", "own lines/s"))
    for root in roots:
        tag = "this" if root == REPO else os.path.basename(root.rstrip("/"))
        start = best[(root, "start-up")]
        print("%-10s start-up CPU s: %.2f" % (tag, start))
        for family in inputs:
            for name in SETTINGS:
                lines, cpu, own = best[(root, family, name)]
                print("%-10s %-12s %-10s %9d %8.2f %14s %20s %14s"
                      % (tag, family, name, lines, cpu, f"{lines / cpu:,.0f}",
                         f"{lines / max(cpu - start, 1e-9):,.0f}", f"{own:,.0f}"))
            (lines, on, _), (_, off, _) = best[(root, family, "series on")], best[(root, family, "series off")]
            print("%-10s %-12s series cost: %.2f CPU s per million lines (%.0f%% of the run)"
                  % (tag, family, (on - off) / lines * 1e6, 100.0 * (on - off) / on))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=None, help="keep inputs here (default: a temporary directory)")
    ap.add_argument("--families", default="generated,shop")
    ap.add_argument("--days", type=float, default=2)
    ap.add_argument("--lines-per-day", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2, help="runs per family and setting; the best counts")
    ap.add_argument("--package-root", default=None, help="replay through the package of this checkout")
    ap.add_argument("--compare", default=None, metavar="DIR", help="also replay through DIR, interleaved")
    args = ap.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="replay-bench-"))
    os.makedirs(work, exist_ok=True)
    roots = [os.path.abspath(args.package_root or REPO)]
    if args.compare:
        roots.insert(0, os.path.abspath(args.compare))
    try:
        inputs = make_inputs(work, args.days, args.lines_per_day, families)
        for root in roots:    # the numba cache is loaded (or filled) before anything is timed
            # and the package's bytecode written, as pip writes it when it installs the package: a
            # shell with PYTHONDONTWRITEBYTECODE would otherwise compile ~90 modules in every replay
            compileall.compile_dir(os.path.join(root, "anomaly_detector"), quiet=1)
            for family, (path, fmt) in inputs.items():
                small = os.path.join(work, "warm-" + family)
                with open(path, "rb") as src, open(small, "wb") as dst:
                    dst.writelines(line for _, line in zip(range(20000), src))
                replay_once(root, small, fmt, None, small + ".out")
        report(measure(roots, inputs, args.repeat, work), roots, inputs)
    except BenchError as exc:
        print("replay_bench: %s" % exc, file=sys.stderr)
        return 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
