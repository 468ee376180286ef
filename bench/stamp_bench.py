"""Replay speed by time-stamp style: valid stamps against the same file with garbage stamp digits.

Builds, from the Loghub-2k samples (bench/README.md says where), one file per stamp style with
`--lines` lines: the sample repeated, every digit outside the stamp redrawn after the first copy
("valid"), and the same file with the stamp digits redrawn too, in every copy ("garbage"; by
default redrawn until no stamp reads as a date, `--garbage redrawn` keeps the few that do). Each file is replayed by the whole command, `python -m
anomaly_detector replay`, in a subprocess; the best of `--repeat` runs is kept.

    python bench/stamp_bench.py                          # every style, 300,000 lines, best of 3
    python bench/stamp_bench.py --styles hdfs,apache --lines 100000 --repeat 1
    python bench/stamp_bench.py --package-root /tmp/old  # the same files through another checkout

Prints per style lines/s of the whole command by wall clock and per CPU second of the replay
process (start-up included; the machine may be shared: the CPU rate is the steadier one), the rate
replay reports itself (reading to writing, start-up excluded), and garbage/valid for each.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from anomaly_detector.parsing.framing import split_lines  # noqa: E402
from anomaly_detector.parsing.headers import LOGHUB_FORMATS, HeaderFormat  # noqa: E402

DEFAULT_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data", "loghub-2k")
_STAMP_FIELDS = ("Date", "Time", "Month", "Day", "Timestamp", "Datetime")


def _header_style(dataset):
    """A style replayed with the dataset's Loghub header format (stamps in its header fields)."""
    return {"dataset": dataset, "log_format": LOGHUB_FORMATS[dataset], "make": None}


def _plain_iso(lines):
    """Hadoop lines without a header format: `<ISO stamp> <LEVEL> text`, the plain-line path."""
    return lines, [(0, 23)] * len(lines)


def _rfc3164(lines):
    """Linux lines as BSD syslog: `<38>Jun 14 15:16:01 combo sshd(pam_unix)[19939]: ...`."""
    out, spans = [], []
    for line in lines:
        month, day, rest = line.split(None, 2)
        stamp = "%s %2s %s" % (month, day, rest[:8])
        out.append("<38>" + stamp + rest[8:])
        spans.append((4, 4 + len(stamp)))
    return out, spans


def _jsonl(lines):
    """Hadoop lines as JSON objects with an ISO `timestamp` field."""
    out, spans = [], []
    for line in lines:
        date, clock, level, message = line.split(" ", 3)
        stamp = "%sT%sZ" % (date, clock.replace(",", "."))
        head = '{"timestamp": "'
        out.append(head + stamp + '", "level": "%s", "message": %s}' % (level, json.dumps(message)))
        spans.append((len(head), len(head) + len(stamp)))
    return out, spans


STYLES = {
    "iso": _header_style("Hadoop"),
    "syslog": _header_style("Linux"),
    "hdfs": _header_style("HDFS"),
    "apache": _header_style("Apache"),
    "android": _header_style("Android"),
    "healthapp": _header_style("HealthApp"),
    "plain-iso": {"dataset": "Hadoop", "log_format": "", "make": _plain_iso},
    "rfc3164": {"dataset": "Linux", "log_format": "", "make": _rfc3164},
    "jsonl": {"dataset": "Hadoop", "log_format": "", "make": _jsonl},
}
DEFAULT_STYLES = "iso,syslog,hdfs,apache,android,healthapp,plain-iso,rfc3164,jsonl"


def sample_lines(data_dir, dataset):
    path = os.path.join(data_dir, dataset, f"{dataset}_2k.log")
    return open(path, "rb").read().decode("utf-8").splitlines()


def stamp_mask(style, lines):
    """(sample bytes, bool mask of the bytes that belong to a stamp)."""
    spec = STYLES[style]
    if spec["make"] is not None:
        lines, spans = spec["make"](lines)
        raw = ("\n".join(lines) + "\n").encode("utf-8")
        mask = np.zeros(len(raw), dtype=np.bool_)
        pos = 0
        for line, (s, e) in zip(lines, spans):
            head = len(line[:s].encode("utf-8"))
            mask[pos + head:pos + head + len(line[s:e].encode("utf-8"))] = True
            pos += len(line.encode("utf-8")) + 1
        return raw, mask
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    buf = np.frombuffer(raw, dtype=np.uint8)
    header = HeaderFormat(spec["log_format"])
    starts, ends = split_lines(buf)
    ok, fs, fe = header.split_batch(buf, starts, ends)
    mask = np.zeros(len(raw), dtype=np.bool_)
    cols = [j for j, name in enumerate(header.fields) if name in _STAMP_FIELDS]
    for i in np.flatnonzero(ok).tolist():
        for j in cols:
            mask[fs[i, j]:fe[i, j]] = True
    return raw, mask


def _stamp_texts(chunk, mask, line_starts, line_ends):
    """Per line, its stamp bytes (the masked runs joined by a space) as text."""
    texts = []
    for s, e in zip(line_starts.tolist(), line_ends.tolist()):
        m = mask[s:e]
        edges = np.flatnonzero(np.diff(np.concatenate(([0], m.view(np.int8), [0]))))
        runs = [bytes(chunk[s + a:s + b]).decode("utf-8", "replace") for a, b in zip(edges[::2], edges[1::2])]
        texts.append(" ".join(runs))
    return texts


def _reads_as_time(parser, text):
    """Whether any reading of the product could take a time from this stamp text: the whole text,
    a stamp at its start, or one of its fields alone (a header recipe of one field)."""
    if parser.parse(text) is not None or parser.parse_prefix(text)[0] is not None:
        return True
    return any(parser.parse(part) is not None for part in text.split(" "))


def _redraw_until_garbage(chunk, mask, is_digit, rng, line_starts, line_ends):
    """Redraw each line's stamp digits until the stamp is no date TimestampParser reads."""
    from anomaly_detector.parsing.timestamps import TimestampParser
    todo = np.arange(len(line_starts))
    for _ in range(50):
        if not len(todo):
            return
        for i in todo.tolist():
            pos = np.flatnonzero(is_digit[line_starts[i]:line_ends[i]] & mask[line_starts[i]:line_ends[i]])
            chunk[line_starts[i] + pos] = rng.integers(48, 58, size=len(pos), dtype=np.uint8)
        texts = _stamp_texts(chunk, mask, line_starts[todo], line_ends[todo])
        todo = todo[[_reads_as_time(TimestampParser(default_year=2020), t) for t in texts]]
    raise SystemExit("stamp_bench: could not draw stamps that are not dates")


def build(raw, mask, lines, garbage, seed=0):
    """>= lines lines: the sample repeated, digits redrawn after the first copy, stamp digits kept.

    garbage "redrawn": stamp digits redrawn at random in every copy (a few still read as dates, of
    any year); "invalid": redrawn until no stamp reads as a date (the file's whole stamp column is
    garbage); "": valid stamps.
    """
    per_copy = raw.count(b"\n")
    copies = -(-lines // per_copy)
    base = np.frombuffer(raw, dtype=np.uint8)
    is_digit = (base >= 48) & (base <= 57)
    values = np.flatnonzero(is_digit & ~mask)
    stamps = np.flatnonzero(is_digit & mask)
    line_starts, line_ends = split_lines(base.copy())
    rng = np.random.default_rng(seed)
    out = np.empty(len(raw) * copies, dtype=np.uint8)
    for k in range(copies):
        chunk = out[k * len(raw):(k + 1) * len(raw)]
        chunk[:] = base
        if k > 0:
            chunk[values] = rng.integers(48, 58, size=len(values), dtype=np.uint8)
        if garbage == "redrawn":
            chunk[stamps] = rng.integers(48, 58, size=len(stamps), dtype=np.uint8)
        elif garbage == "invalid":
            _redraw_until_garbage(chunk, mask, is_digit, rng, line_starts, line_ends)
    return out.tobytes(), per_copy * copies


def replay_once(path, log_format, out_path, package_root):
    env = dict(os.environ, PYTHONPATH=package_root)
    cmd = [sys.executable, "-m", "anomaly_detector", "replay", "--output", out_path]
    if log_format:
        cmd += ["--log-format", log_format]
    cmd.append(path)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # cwd: `python -m` puts the working directory first on sys.path
    done = subprocess.run(cmd, env=env, cwd=package_root, check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    own = re.search(r"\((\d+) lines/s\)", done.stderr)  # replay's own figure: reading to writing
    return wall, cpu, int(own.group(1)) if own else 0


def measure(path, n, log_format, repeat, package_root, tmp):
    """(lines/s by wall clock, per CPU second, as replay reports it), each the best of `repeat` runs."""
    out_path = os.path.join(tmp, "out.jsonl")
    runs = [replay_once(path, log_format, out_path, package_root) for _ in range(repeat)]
    return n / min(r[0] for r in runs), n / min(r[1] for r in runs), max(r[2] for r in runs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("LOGHUB_2K", DEFAULT_DATA))
    ap.add_argument("--styles", default=DEFAULT_STYLES, help="comma-separated, of: " + ", ".join(STYLES))
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per file; the best is kept")
    ap.add_argument("--package-root", default=ROOT, help="checkout whose anomaly_detector replays")
    ap.add_argument("--garbage", choices=("invalid", "redrawn"), default="invalid",
                    help="invalid: no garbage stamp reads as a date; redrawn: stamp digits at random, so "
                         "a few read as dates of any year (event time jumps: a cost of the detectors)")
    ap.add_argument("--keep", metavar="DIR", help="write the built files into DIR and keep them")
    args = ap.parse_args(argv)
    styles = [s for s in args.styles.split(",") if s]
    tmp = args.keep or tempfile.mkdtemp(prefix="stamp_bench_")
    os.makedirs(tmp, exist_ok=True)
    # warm the compiled-kernel cache so no style pays for compilation
    warm = os.path.join(tmp, "warm.log")
    open(warm, "w").write("2026-01-01 00:00:00,000 INFO x\n")
    replay_once(warm, "", os.path.join(tmp, "warm.jsonl"), args.package_root)
    print(f"replay lines/s, best of {args.repeat}, {args.lines:,} lines per file, garbage = {args.garbage} "
          f"(package: {args.package_root})")
    print(f"{'style':<10} {'dataset':<10} {'valid wall':>11} {'garbage wall':>13} {'ratio':>6} "
          f"{'valid cpu':>10} {'garbage cpu':>12} {'ratio':>6} {'valid own':>10} {'garbage own':>12} {'ratio':>6}")
    for style in styles:
        spec = STYLES[style]
        raw, mask = stamp_mask(style, sample_lines(args.data, spec["dataset"]))
        rates = []
        for garbage in ("", args.garbage):
            data, n = build(raw, mask, args.lines, garbage)
            path = os.path.join(tmp, f"{style}-{garbage or 'valid'}.log")
            with open(path, "wb") as f:
                f.write(data)
            rates.append(measure(path, n, spec["log_format"], args.repeat, args.package_root, tmp))
        (vw, vc, vo), (gw, gc, go) = rates
        print(f"{style:<10} {spec['dataset']:<10} {vw:>11,.0f} {gw:>13,.0f} {gw / vw:>6.2f} "
              f"{vc:>10,.0f} {gc:>12,.0f} {gc / vc:>6.2f} {vo:>10,} {go:>12,} {go / max(vo, 1):>6.2f}",
              flush=True)


if __name__ == "__main__":
    main()
