"""Lines that share no template: does `replay` keep its speed and memory, and are they reported as unclustered?

Free text (3-12 words, half of them random letters, as user-typed messages produce) in the shop
family's header layout, replayed by the whole `replay` command at growing lengths, side by side
with an ordinary log of the same length (bench/shopgen.py). Prints lines/s, peak RSS, distinct
template ids, and how many lines were reported unclustered.

    python bench/freetext_bench.py                       # 20k, 100k, 500k lines of each
    python bench/freetext_bench.py --sizes 20000,60000 --max-templates 5000
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

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one "
         "had by word but not what all were we when your can said there use an each which she do how their "
         "if will up other about out many then them these so some her would make like him into time has look "
         "two more write go see number no way could people my than first water been call who oil its now find "
         "long down day did get come made may part order please thanks hello ok sure broken again today").split()
LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)


def free_text(path, n, seed):
    """Write n lines `<ISO time> INFO web-1 chat: <3-12 words>`, each word common or random letters."""
    rng = np.random.default_rng(seed)
    t0 = 1772755200.0
    with open(path, "w") as f:
        for i in range(n):
            words = []
            for _ in range(int(rng.integers(3, 13))):
                if rng.random() < 0.5:
                    words.append(WORDS[int(rng.integers(len(WORDS)))])
                else:
                    words.append(LETTERS[rng.integers(0, 26, int(rng.integers(2, 10)))].tobytes().decode())
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + i * 0.05))
            f.write("%sZ INFO web-1 chat: %s\n" % (stamp, " ".join(words)))


def ordinary(path, n, seed, work):
    """Write the first n lines of a shop-family log."""
    gen = os.path.join(work, "shop-%d" % seed)
    days = max(1, -(-n // 450_000))     # whole days: the generator's day plan needs them
    subprocess.run([sys.executable, os.path.join(HERE, "shopgen.py"), gen, "--days", str(days),
                    "--seed", str(seed), "--lines-per-day", "500000"], check=True, stdout=subprocess.DEVNULL)
    head(os.path.join(gen, "shop.log"), path, n)
    shutil.rmtree(gen)


def head(src, dst, n):
    """Copy the first n lines of src to dst, streaming (this process stays small: a child's peak RSS
    counts the pages of the process it was forked from)."""
    with open(src) as f, open(dst, "w") as out:
        for _, line in zip(range(n), f):
            out.write(line)


def replay(path, config, work):
    """(seconds of the whole command, its own lines/s and peak RSS MiB, template ids, unclustered lines)
    of one `replay` run.

    The RSS is the one replay reports for itself: a child's ru_maxrss also counts the pages of
    this process it was forked from."""
    out = os.path.join(work, "out.jsonl")
    cmd = [sys.executable, "-m", "anomaly_detector", "replay", "--config", config, "--output", out, path]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit("replay failed on %s (status %d): %s" % (path, done.returncode, done.stderr[-500:]))
    own = re.search(r"\(([0-9]+) lines/s\), peak RSS ([0-9]+) MiB", done.stderr)
    ids, unclustered = set(), 0
    with open(out) as f:      # streamed: this process stays small (see head())
        for line in f:
            record = json.loads(line)
            ids.add(record["template_id"])
            unclustered += record["template"] == "<unclustered>"
    os.unlink(out)
    return seconds, int(own.group(1)), int(own.group(2)), len(ids), unclustered


def row(kind, n, seconds, rate, rss, ids, unclustered):
    return "| %s | %d | %.1f | %.0f | %d | %d | %d | %d |" % (kind, n, seconds, n / seconds, rate, rss, ids, unclustered)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,100000,500000", help="comma-separated line counts")
    ap.add_argument("--max-templates", type=int, default=0, help="[parsing] max_templates (0: the default)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="freetext-bench-") as work:
        config = os.path.join(work, "config.ini")
        with open(config, "w") as f:
            f.write("[paths]\nstate_dir = %s\n" % os.path.join(work, "state"))
            if args.max_templates:
                f.write("[parsing]\nmax_templates = %d\n" % args.max_templates)
        full = {"ordinary": os.path.join(work, "ordinary.log"), "free text": os.path.join(work, "freetext.log")}
        ordinary(full["ordinary"], max(sizes), args.seed, work)
        free_text(full["free text"], max(sizes), args.seed)
        print("| input | lines | seconds (whole command) | lines/s (whole) | lines/s (replay's own) | "
              "peak RSS MiB | template ids | unclustered |")
        print("|---|---|---|---|---|---|---|---|")
        for n in sizes:
            for kind, source in full.items():
                path = os.path.join(work, "part.log")
                head(source, path, n)
                print(row(kind, n, *replay(path, config, work)), flush=True)
                os.unlink(path)

if __name__ == "__main__":
    main()
