"""Why was a label missed? For each label of a replayed workload, the incidents of its source around it.

Reads a seed directory that `detect_bench.py --work DIR` kept (labels.json and the incidents.jsonl
that `replay --incidents` wrote; generated, shop, svc or infra family alike) and prints, per label, how the
scorer judged it (caught, other kind, missed) and every incident of the label's source (or of no
known source) that was open during the label or began up to 900 s after it: its onset relative to
the label's start and end, kind, headline reason, the strongest reasons and the tiers' scores. That
tells the cases apart: an incident absorbed by one opened earlier (begins before the label), named
another kind, too late (> 300 s after the end), or nothing at all (the tiers never scored it).

    python bench/explain_labels.py /tmp/work/seed1 [/tmp/work/shop-seed2 ...] [--all] [--kind K]

Neighbours: detect_bench.py (runs and scores the seeds), anomaly_detector/workload/scoring.py.
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from anomaly_detector.workload.scoring import (  # noqa: E402
    RIGHT_KINDS,
    load_detections,
    program_source,
    score,
    source_name,
)

AROUND_AFTER_S = 900.0


def load(seed_dir):
    with open(os.path.join(seed_dir, "labels.json"), encoding="utf-8") as fh:
        labels = json.load(fh)
    inc_path = os.path.join(seed_dir, "incidents.jsonl")
    records = []
    with open(inc_path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    return labels, records, load_detections(inc_path)


def record_source(rec, known):
    name = source_name(rec.get("source"))
    return name if name in known else program_source(rec.get("source"), known)


def verdicts(labels, detections):
    """label id -> (verdict, crediting detection id or None), as scoring.score() judged it."""
    s = score(labels, detections)
    missed = {m["id"] for m in s.missed}
    out = {}
    # score() does not say which detection credited which label: redo its greedy pass (same rules).
    from anomaly_detector.workload.scoring import begins_in
    credit = {}
    known = labels.get("sources") or []
    for det in sorted(detections, key=lambda d: d.first_seen):
        src = det.source if det.source in known else program_source(det.source, known)
        det_ = type(det)(det.first_seen, det.last_seen, src, det.ident, det.kind)
        free = [lb["id"] for lb in sorted(labels["incidents"], key=lambda lb: lb["start"])
                if begins_in(lb, det_) and lb["id"] not in credit]
        if free:
            credit[free[0]] = det
    for lb in labels["incidents"]:
        det = credit.get(lb["id"])
        if lb["id"] in missed or det is None:
            out[lb["id"]] = ("MISSED", None)
        elif det.kind in RIGHT_KINDS.get(lb["kind"], ()):
            out[lb["id"]] = ("caught", det.ident)
        else:
            out[lb["id"]] = ("OTHER KIND", det.ident)
    return out


def explain(seed_dir, show_all=False, kind=None, out=sys.stdout):
    labels, records, detections = load(seed_dir)
    known = labels.get("sources") or []
    judged = verdicts(labels, detections)
    print(f"== {seed_dir}: {len(labels['incidents'])} labels, {len(records)} incidents", file=out)
    for lb in sorted(labels["incidents"], key=lambda x: x["start"]):
        verdict, by = judged[lb["id"]]
        if (verdict == "caught" and not show_all) or (kind and lb["kind"] != kind):
            continue
        start, end = lb["start"], lb["end"]
        print(f"label #{lb['id']} {lb['kind']} {lb['source']} {lb.get('start_iso', start)} "
              f"{(end - start) / 60:.0f} min {lb.get('detail', '')}: {verdict}", file=out)
        for rec in records:
            src = record_source(rec, known)
            if src not in (None, lb["source"]):
                continue
            first, last = float(rec["first_seen"]), float(rec["last_seen"])
            if last < start - 60.0 or first > end + AROUND_AFTER_S:
                continue
            mark = "*" if rec.get("id") == by else " "
            print(f"  {mark} {rec.get('id')} src={rec.get('source')} +{first - start:.0f}s "
                  f"(end{first - end:+.0f}s) ..+{last - start:.0f}s kind={rec.get('kind')} "
                  f"score={rec.get('score')} lines={rec.get('lines')} tiers={rec.get('tier_scores')}", file=out)
            print(f"      reason: {rec.get('reason')}", file=out)
            for r in rec.get("reasons", [])[1:4]:
                print(f"      also:   {r}", file=out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="seed directories kept by detect_bench.py --work")
    p.add_argument("--all", action="store_true", help="caught labels too")
    p.add_argument("--kind", default=None, help="only labels of this kind")
    args = p.parse_args(argv)
    for d in args.dirs:
        explain(d, args.all, args.kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
