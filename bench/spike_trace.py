"""Why was a volume spike missed? Replays a kept workload and traces tier 2's spike tests of its lines.

Reads a seed directory that `detect_bench.py --work DIR` kept (labels.json and the workload), replays it
in-process through pipeline.Pipeline (replay's code path, default config) and, for every minute from
`--before` seconds before each volume_spike label to `--after` seconds after its end, prints the line of the
label's program that got the highest tier-2 score (the minute's last line when none scored), with, for its
template (T) and its source (S): lines so far / forecast = score over one bucket, over the spike window
(SPIKE_WINDOW buckets) and over the long spike window (LONG_SPIKE_WINDOW, judged only for busy keys whose
spike window is spike_min_ratio times its forecast), the gate each window must pass before it is scored
at all (`low` = the count's low end, three deviations below it, against spike_min_ratio times the
forecast: `low 13<19` is shut; `-`: not judged; a sporadic key's window floor is the Poisson lower bound, as
tier 2's), how the key's windows are judged (`busy`, `sporadic`, `none`: young, job-like or unsettled) and its
learned error and dispersion (rel2, phi). An incident needs incident_min_lines lines at anomaly_threshold: one
line that scored 100 when its window opened for a moment raises none. With --template TEXT every line of the
label's program whose template contains TEXT is printed instead (a rare message's burst is never the minute's
best line of a busy source).

    python bench/spike_trace.py /tmp/work/infra-seed16 [--kind volume_spike] [--before 600] [--after 300]
    python bench/spike_trace.py /tmp/work/svc-seed93 --kind error_burst --template "shard query timed out"

Neighbours: drop_trace.py (the same for drops), explain_labels.py (which incidents a label had),
anomaly_detector/detection/tier2_volume.py (the spike tests traced here).
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
from drop_trace import workload_files  # noqa: E402

from anomaly_detector.config.loader import default_config  # noqa: E402
from anomaly_detector.detection import tier2_volume as T2  # noqa: E402
from anomaly_detector.pipeline import Pipeline  # noqa: E402
from anomaly_detector.workload.scoring import epoch, program_source  # noqa: E402


def trace(seed_dir, kinds, before_s, after_s, template=None):
    """-> (labels, {label index: {minute: (t2, row text)}}; with template, {(minute, line): ...} of every line
    whose template text contains it)."""
    with open(os.path.join(seed_dir, "labels.json"), encoding="utf-8") as fh:
        labels = json.load(fh)
    labels = labels.get("incidents", labels) if isinstance(labels, dict) else labels
    labels = [lb for lb in labels if lb.get("kind") in kinds]
    spans = [(epoch(lb["start"]) - before_s, epoch(lb["end"]) + after_s, epoch(lb["start"]), lb) for lb in labels]
    files, fmt = workload_files(seed_dir)
    pipe = Pipeline(default_config(), fmt=fmt)
    calls, best = [], {k: {} for k in range(len(labels))}
    V = T2.VolumeTier
    originals = {name: getattr(V, name) for name in ("_spike_scores", "_window_scores", "_long_window_scores", "score")}

    def spike(tier, keys, counts, buckets, base, ctx, seasons=None, site=None, lines=None):
        out = originals["_spike_scores"](tier, keys, counts, buckets, base, ctx, seasons, site, lines)
        if keys.shape[0] == ctx.ts.shape[0]:      # the batch's lines, not a rescored subset
            calls.append(("1", base is tier.templates, keys, counts, out[0], out[1], out[2]))
        return out

    def window(tier, keys, counts, buckets, base, mus, windowed, ctx, earlier=None, window=None, site=None,
               lines=None, **kw):
        out = originals["_window_scores"](tier, keys, counts, buckets, base, mus, windowed, ctx, earlier, window,
                                          site, lines, **kw)
        if keys.shape[0] == ctx.ts.shape[0] and window is None:
            calls.append(("w", base is tier.templates, keys, out[1], out[0], out[2]))
        return out

    def long_window(tier, *args, **kw):
        out = originals["_long_window_scores"](tier, *args, **kw)
        calls.append(("l", args[3] is tier.templates, args[0], out[1], out[0], out[2]))
        return out

    def score(tier, batch, ctx):
        calls.clear()
        result = originals["score"](tier, batch, ctx)
        for k, (lo, hi, start, lb) in enumerate(spans):
            inside = np.flatnonzero((ctx.ts >= lo) & (ctx.ts < hi))
            names = pipe.engine.sources
            mine = [i for i in inside.tolist() if program_source(names[batch.source_id[i]], {lb["source"]})]
            if template is not None:
                mine = [i for i in mine if template in pipe.template_text(int(batch.template_id[i]))]
            for i in mine:
                minute = int((ctx.ts[i] - start) // 60)
                t2 = float(result.scores[i])
                if template is not None:
                    best[k][(minute, len(best[k]))] = (t2, _row(tier, batch, ctx, calls, i, start, names, t2))
                elif t2 >= best[k].get(minute, (-1.0,))[0]:
                    best[k][minute] = (t2, _row(tier, batch, ctx, calls, i, start, names, t2))
        return result

    V._spike_scores, V._window_scores, V._long_window_scores, V.score = spike, window, long_window, score
    try:
        for path in files:
            for _ in pipe.process_file(path):
                pass
    finally:
        for name, fn in originals.items():
            setattr(V, name, fn)
    return labels, best


def _row(tier, batch, ctx, calls, i, start, names, t2):
    """One traced line: its offset from the label's start, source, template, tier-2 score and tests."""
    parts = []
    for kind, is_template in (("T", True), ("S", False)):
        base = tier.templates if is_template else tier.sources
        key = int((batch.template_id if is_template else batch.source_id)[i])
        wins, short_mu = [], None
        spikes = [c for c in calls if c[0] == "1" and c[1] == is_template]
        windowed = int(spikes[-1][6][i]) if spikes else T2.WINDOW_NONE
        for tag, width in (("1", 1), ("w", T2.SPIKE_WINDOW), ("l", T2.LONG_SPIKE_WINDOW)):
            found = [c for c in calls if c[0] == tag and c[1] == is_template]
            if not found:
                continue
            counts, scores, mus = found[-1][3:6]
            n, mu = float(counts[i]), float(mus[i])
            if tag == "w":
                short_mu = mu
            elif tag == "l" and mu == short_mu:      # not a candidate: the spike window's numbers came back
                wins.append("%dm -" % width)
                continue
            # tier 2's floor (VolumeTier._window_scores): a sporadic key's windows at the Poisson lower bound
            # and a busy key no more dispersed than Poisson counts (phi <= 1) at that bound too
            poisson = tag != "1" and (windowed == T2.WINDOW_SPORADIC or (windowed == T2.WINDOW_BUSY
                                                                          and base.phi[key] <= 1.0))
            low = float(T2.poisson_lower_bound(np.array([n]))[0]) if poisson else n - 3.0 * np.sqrt(n)
            gate = "open" if low >= tier.spike_min_ratio * mu else "low %.0f<%.0f" % (low, tier.spike_min_ratio * mu)
            wins.append("%dm %.0f/%.1f=%.0f %s" % (width, n, mu, scores[i], gate))
        mode = {T2.WINDOW_BUSY: "busy", T2.WINDOW_SPORADIC: "sporadic"}.get(windowed, "none")
        parts.append("%s %s (%s rel2 %.3f phi %.2f)" % (kind, " | ".join(wins), mode, base.rel2[key], base.phi[key]))
    return "%+6.1fm %-10s t%-4d t2=%5.1f  %s" % ((ctx.ts[i] - start) / 60.0, names[batch.source_id[i]][:10],
                                                 batch.template_id[i], t2, "  ".join(parts))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("seed_dirs", nargs="+")
    p.add_argument("--kind", action="append", default=None, help="label kinds traced (default volume_spike)")
    p.add_argument("--before", type=float, default=600.0, help="seconds traced before a label's start")
    p.add_argument("--after", type=float, default=300.0, help="seconds traced after a label's end")
    p.add_argument("--template", default=None, help="trace every line whose template contains this text")
    args = p.parse_args(argv)
    for seed_dir in args.seed_dirs:
        labels, best = trace(seed_dir, set(args.kind or ["volume_spike"]), args.before, args.after, args.template)
        print(f"== {seed_dir}: {len(labels)} labels")
        for k, lb in enumerate(labels):
            print(f"-- #{lb.get('id')} {lb['kind']} {lb['source']} {lb['start']}..{lb['end']} {lb.get('detail')}")
            for minute in sorted(best[k]):
                print("  " + best[k][minute][1])


if __name__ == "__main__":
    main()
