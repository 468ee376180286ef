"""Score detections against a generated workload's labels: recall per kind, time to detect, false incidents.

Reads generator.py's labels.json and either the incidents file that `replay --incidents` writes or,
failing that, the flagged records of the replay output (docs/cli.md, "The replay record"); bench/detect_bench.py prints the result.
"""
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

# A detection may start a little before the labelled window (timestamps are rounded to the minute)
# and may close after it (a silence or a drop is only certain once time has passed).
TOLERANCE_BEFORE_S = 60.0
TOLERANCE_AFTER_S = 900.0
# Flagged replay lines of one source closer than this together form one pseudo-incident.
FLAG_GAP_S = 300.0
_ANOMALY_TRUE = re.compile(rb'"anomaly"\s*:\s*true')


@dataclass
class Detection:
    """One alert-worthy thing the detector reported: when, and for which source (None = unknown)."""

    first_seen: float
    last_seen: float
    source: str | None
    ident: str = ""


@dataclass
class KindScore:
    labelled: int = 0
    caught: int = 0
    delays: list = field(default_factory=list)

    @property
    def recall(self):
        return self.caught / self.labelled if self.labelled else float("nan")

    @property
    def median_delay(self):
        return float(np.median(self.delays)) if self.delays else float("nan")


@dataclass
class Score:
    kinds: dict
    false_incidents: int
    scored_days: float
    warmup_detections: int
    missed: list
    false_samples: list

    @property
    def false_per_day(self):
        return self.false_incidents / self.scored_days if self.scored_days > 0 else float("nan")


def epoch(value):
    """Epoch seconds from a number or an ISO 8601 string; None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def source_name(value):
    """'app', '/tmp/w/app.log' and 'app.log' all name the source 'app'."""
    if not value:
        return None
    base = os.path.basename(str(value))
    for ext in (".log", ".jsonl", ".txt"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def load_detections(path):
    """Incidents as JSON lines; only first_seen, last_seen and source are needed."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            first = epoch(rec.get("first_seen"))
            last = epoch(rec.get("last_seen"))
            if first is None:
                raise ValueError(f"{path}:{n}: incident without a readable first_seen")
            out.append(Detection(first, first if last is None else last, source_name(rec.get("source")),
                                 str(rec.get("id", n))))
    return out


def jsonl_line_sources(path):
    """Source of every line of a merged workload JSONL file, indexed by line number - 1."""
    out = []
    with open(path, "rb") as fh:
        for line in fh:
            # generator.py writes "source" right after the fixed-width timestamp; parse only if not.
            head = line[:80]
            k = head.find(b'"source":"')
            if k >= 0:
                out.append(head[k + 10:head.index(b'"', k + 10)].decode())
            else:
                out.append(source_name(json.loads(line).get("source")))
    return out


def detections_from_replay(path, workload_files=(), gap=FLAG_GAP_S):
    """Group flagged replay records into pseudo-incidents per source (when there is no incidents file)."""
    jsonl_sources = {os.path.basename(f): jsonl_line_sources(f) for f in workload_files if f.endswith(".jsonl")}
    flagged = []
    with open(path, "rb") as fh:
        for line in fh:
            if not _ANOMALY_TRUE.search(line):
                continue
            rec = json.loads(line)
            ts = epoch(rec.get("ts"))
            if ts is None:
                continue
            flagged.append((record_source(rec, jsonl_sources), ts))
    return group_flags(flagged, gap)


def record_source(rec, jsonl_sources):
    if rec.get("source"):
        return source_name(rec["source"])
    name = os.path.basename(str(rec.get("file", "")))
    lines = jsonl_sources.get(name)
    if lines is not None and 0 < int(rec.get("line", 0)) <= len(lines):
        return lines[int(rec["line"]) - 1]
    return source_name(name)


def group_flags(flagged, gap=FLAG_GAP_S):
    out = []
    by_source = {}
    for source, ts in flagged:
        by_source.setdefault(source, []).append(ts)
    for source in sorted(by_source, key=str):
        times = sorted(by_source[source])
        first = last = times[0]
        for t in times[1:]:
            if t - last > gap:
                out.append(Detection(first, last, source, f"{source}@{first:.0f}"))
                first = t
            last = t
        out.append(Detection(first, last, source, f"{source}@{first:.0f}"))
    out.sort(key=lambda d: d.first_seen)
    return out


def overlaps(label, det, before=TOLERANCE_BEFORE_S, after=TOLERANCE_AFTER_S):
    if det.source is not None and det.source != label["source"]:
        return False
    return det.first_seen <= label["end"] + after and det.last_seen >= label["start"] - before


def score(labels, detections, before=TOLERANCE_BEFORE_S, after=TOLERANCE_AFTER_S):
    """Match detections to labelled incidents by source and (tolerant) time overlap.

    A detection whose source is not one of the workload's (e.g. a window-level finding across
    all sources) is matched on time alone."""
    known = labels.get("sources")
    if known:
        detections = [d if d.source in known else Detection(d.first_seen, d.last_seen, None, d.ident)
                      for d in detections]
    kinds = {}
    used = set()
    missed = []
    for label in labels["incidents"]:
        ks = kinds.setdefault(label["kind"], KindScore())
        ks.labelled += 1
        hits = [i for i, d in enumerate(detections) if overlaps(label, d, before, after)]
        used.update(hits)
        if hits:
            ks.caught += 1
            first = min(detections[i].first_seen for i in hits)
            ks.delays.append(max(0.0, first - label["start"]))
        else:
            missed.append(label)
    warm = labels["warmup_end"]
    false = [d for i, d in enumerate(detections) if i not in used and d.first_seen >= warm]
    warmup = sum(1 for i, d in enumerate(detections) if i not in used and d.first_seen < warm)
    return Score(kinds=kinds, false_incidents=len(false), scored_days=(labels["end"] - warm) / 86400.0,
                 warmup_detections=warmup, missed=missed, false_samples=false[:20])


def merge_scores(scores):
    """Pool several workloads' scores (e.g. one per seed) into one."""
    kinds = {}
    for s in scores:
        for kind, ks in s.kinds.items():
            agg = kinds.setdefault(kind, KindScore())
            agg.labelled += ks.labelled
            agg.caught += ks.caught
            agg.delays.extend(ks.delays)
    return Score(kinds=kinds, false_incidents=sum(s.false_incidents for s in scores),
                 scored_days=sum(s.scored_days for s in scores),
                 warmup_detections=sum(s.warmup_detections for s in scores),
                 missed=[m for s in scores for m in s.missed], false_samples=[f for s in scores for f in s.false_samples])
