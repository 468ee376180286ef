"""Why was a volume drop missed? Replays a kept workload and traces tier 2's drop test of its sources.

Reads a seed directory that `detect_bench.py --work DIR` kept (labels.json and the workload: shop.log
or the generated family's per-source files), replays it in-process through pipeline.Pipeline (replay's
code path, default config) and, for each closed bucket from an hour before to half an hour after
every volume_drop / silent_source label, prints per source of the label's program: the count and
forecast over each drop window, the dispersion and forecast error, and the drop score that window
gets, then the recent-level test (tier2_recent.py) of its four busiest templates, its steady templates
pooled against the rest of the site (learned error, score and ratio over 5 and 15 buckets) and the source's
long windows (tier2_long.py: block error and dispersion, sequential evidence, last blocks; and their forecasts
from the rest of the site's lines, tier2_load.py, with that forecast's error, slope and evidence). `--before`
and `--after` widen the window traced.

    python bench/drop_trace.py /tmp/work/shop-seed2 [--kind volume_drop] [--every 5]

Neighbours: explain_labels.py (which incidents a label's source had), detect_bench.py (keeps the seeds),
anomaly_detector/detection/tier2_volume.py (the drop test traced here).
"""
import argparse
import glob
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from anomaly_detector.config.loader import default_config  # noqa: E402
from anomaly_detector.detection import tier2_recent as T2R  # noqa: E402
from anomaly_detector.detection import tier2_volume as T2  # noqa: E402
from anomaly_detector.detection.stats_kernels import count_lower_score  # noqa: E402
from anomaly_detector.pipeline import Pipeline  # noqa: E402
from anomaly_detector.workload.scoring import epoch, program_source  # noqa: E402


def workload_files(seed_dir):
    for name in ("shop.log", "syslog.log"):         # the plain families: shop, infra
        if os.path.exists(os.path.join(seed_dir, name)):
            return [os.path.join(seed_dir, name)], "plain"
    return sorted(glob.glob(os.path.join(seed_dir, "*.jsonl"))), "jsonl"


def trace(seed_dir, kinds, before_s, after_s, every):
    with open(os.path.join(seed_dir, "labels.json"), encoding="utf-8") as fh:
        labels = json.load(fh)
    labels = labels.get("incidents", labels) if isinstance(labels, dict) else labels
    labels = [lb for lb in labels if lb.get("kind") in kinds]
    spans = [(epoch(lb["start"]) - before_s, epoch(lb["end"]) + after_s, lb) for lb in labels]
    files, fmt = workload_files(seed_dir)
    pipe = Pipeline(default_config(), fmt=fmt)
    rows = []
    original = T2.VolumeTier._close_bucket

    def close(tier, ctx):
        when = tier.open_bucket * tier.bucket_seconds
        original(tier, ctx)
        for lo, hi, lb in spans:
            if lo <= when < hi and (when // tier.bucket_seconds) % every == 0:
                rows.append((lb, when, tier, _source_rows(tier, lb, pipe.engine.sources)))

    T2.VolumeTier._close_bucket = close
    try:
        for path in files:
            for _ in pipe.process_file(path):
                pass
        pipe.finish()
    finally:
        T2.VolumeTier._close_bucket = original
    return labels, rows


def _source_rows(tier, label, names):
    s = tier.sources
    out = []
    for sid, name in enumerate(names):
        if sid >= s.size or program_source(name, {label["source"]}) is None:
            continue
        disp = float(T2._dispersion(s, np.array([sid]))[0])
        wins = []
        for k, w in enumerate(T2.DROP_WINDOWS):
            obs, exp = float(s.obs_sum[sid, k]), float(s.exp_sum[sid, k])
            wins.append((w, obs, exp, count_lower_score(obs, exp, disp, float(s.rel2[sid]))))
        recent = " | ".join(filter(None, [_recent(tier, sid), _relative(tier, sid), _long(tier, sid, disp)]))
        out.append((name, disp, float(s.rel2[sid]), wins, recent))
    return out


def _long(tier, sid, disp):
    """The long windows (tier2_long.py) of a source: its block error and dispersion, the sequential
    test's evidence and its last four blocks' lines / forecast."""
    lw = tier.long
    if not lw.blocks or sid >= lw.obs.shape[0] or not lw.filled[sid]:
        return ""
    bdisp = float(lw.block_dispersion(np.array([disp] * (sid + 1)))[sid])
    slots = (lw.pos - 1 - np.arange(min(4, lw.filled[sid], lw.blocks))) % lw.blocks
    blocks = " ".join(f"{lw.obs[sid, k]:.0f}/{lw.exp[sid, k]:.0f}" for k in slots)
    # the forecasts a source judged by its clumps is judged against (scaled down by the rest of the site)
    site = lw.site_scaled(np.arange(lw.obs.shape[0]) == sid)[sid]
    scaled = " ".join(f"{site[k]:.0f}" for k in slots)
    # the forecasts from the rest of the site's lines (tier2_load.py), their learned error and evidence
    ld = tier.load_long
    load = ""
    if sid < ld.obs.shape[0]:
        loads = " ".join(f"{ld.exp[sid, k]:.0f}" for k in slots)
        load = (f" | load: e{ld.rel2[sid]:.3f} n{int(tier.load.learned[sid])} slope {tier.load.slope(sid + 1)[sid]:.2f}"
                f" cusum {ld.cusum[sid]:.1f} forecasts {loads}")
    return f"long: e{lw.rel2[sid]:.3f} d{bdisp:.1f} cusum {lw.cusum[sid]:.1f} blocks {blocks} site-scaled {scaled}{load}"


def _relative(tier, sid):
    """The source's steady templates pooled against the rest of the site (tier2_volume._relative_score), at
    their levels now: the learned relative error (trusted or not), windows learned from, score over 5 and 15."""
    if tier.recent is None or sid >= tier.relative.rel2.size:
        return ""
    site = tier._site_reference(sid)
    if site is None:
        return ""
    rate = min(1.0, tier.learning_rate * T2.DROP_WINDOWS[-1] / T2R.OVERLAP_SLOWER)
    trusted = tier.relative.error(sid, rate) is not None
    err = float(tier.relative.rel2[sid])
    scores = " ".join("w%d:%.0f (x%.2f)" % ((w,) + tier._relative_score(site, err, w)) for w in (5, 15))
    return f"site: e{err:.3f}{'' if trusted else ' (untrusted)'} n{int(tier.relative.learned[sid])} {scores}"


def _recent(tier, sid):
    """The recent-level test (tier2_recent.py) of the source's busiest templates: per template,
    lines / forecast = score over each window, and its learned error."""
    r = tier.recent
    if r is None:
        return None
    t = tier.templates
    n = min(t.size, r.size, tier.template_source.size)
    mine = np.flatnonzero((tier.template_source[:n] == sid) & (r.filled[:n] >= r.ring))
    mine = mine[np.argsort(-r.ref_obs[mine])][:4]
    level = r.reference_level()[0]
    disp = T2._dispersion(t, np.arange(t.size))
    rel2 = r.rel2 + disp[: r.size] / np.maximum(r.ref_obs, 1.0)
    parts = []
    for k in mine.tolist():
        wins = []
        for i, _width in enumerate(T2R.RECENT_WINDOWS):
            obs, exp = r.win_obs[k, i], level[k] * r.win_season[k, i]
            wins.append(f"{obs:.0f}/{exp:.0f}={count_lower_score(obs, exp, max(disp[k], 1.0), rel2[k]):.0f}")
        parts.append(f"t{k}(e{r.rel2[k]:.3f} d{disp[k]:.1f}) " + " ".join(wins))
    return " | ".join(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seed_dirs", nargs="+")
    p.add_argument("--kind", action="append", default=None, help="label kinds traced (default volume_drop)")
    p.add_argument("--before", type=float, default=3600.0, help="seconds traced before a label's start")
    p.add_argument("--after", type=float, default=1800.0, help="seconds traced after a label's end")
    p.add_argument("--every", type=int, default=5, help="print every Nth bucket")
    args = p.parse_args(argv)
    for seed_dir in args.seed_dirs:
        labels, rows = trace(seed_dir, set(args.kind or ["volume_drop"]), args.before, args.after, args.every)
        print(f"== {seed_dir}: {len(labels)} labels")
        for lb in labels:
            start, end = epoch(lb["start"]), epoch(lb["end"])
            print(f"-- #{lb.get('id')} {lb['kind']} {lb['source']} {lb['start']}..{lb['end']} {lb.get('detail')}")
            for label, when, _tier, per_source in rows:
                if label is not lb:
                    continue
                rel = (when - start) / 60.0
                tag = "in " if start <= when < end else "   "
                for name, disp, rel2, wins, recent in per_source:
                    w = " ".join(f"w{w}:{o:.0f}/{e:.0f}={sc:.0f}" for w, o, e, sc in wins)
                    extra = f"\n              recent: {recent}" if recent else ""
                    print(f"  {tag}{rel:+7.1f}m {name:<22} disp={disp:5.2f} rel2={rel2:.3f} {w}{extra}")


if __name__ == "__main__":
    main()
