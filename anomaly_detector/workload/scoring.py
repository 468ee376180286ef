"""Score detections against a generated workload's labels: recall per kind, time to detect, false incidents.

Reads generator.py's labels.json and either the incidents file that `replay --incidents` writes or,
failing that, the flagged records of the replay output (docs/cli.md, "The replay record"); bench/detect_bench.py prints the result.

How a detection meets a label (score()):
- Sources must agree. A detection's source that is not one of the workload's but holds one as a
  word ("web-1 nginx", "checkout[2211]", "api-2/checkout" all name "nginx" or "checkout") is read
  as that source (program_source()); one that holds none (a window-level finding, or a whole
  file such as "shop" while sources are not split out of it) is matched on time alone.
- Time: the detection must BEGIN inside the label's window, at most TOLERANCE_BEFORE_S (60 s) before
  its start (timestamps are rounded to the minute) and at most TOLERANCE_AFTER_S (300 s) after its
  end (a drop or a silence is only certain once some time has passed). Overlapping the window is
  not enough: an alert that opened earlier or much later is not this label's alert.
- One to one, greedy by time: detections are taken in order of first_seen; each credits the
  earliest-starting label not yet credited whose bounds it begins in, and no other. A detection
  that falls only in already-credited labels is a repeat alert (counted, not a false incident).
- Kind: the label is "caught" only when the crediting detection names its kind (RIGHT_KINDS below:
  label kind -> the engine kinds, detection/incidents.py KIND_BY_REASON, that name it); otherwise
  it is "other kind" (the detector saw something, but told the operator something else), and
  otherwise "missed". Recall counts caught labels only. Without an incidents file, a group of
  flagged records takes the kind of the first reason of its highest-scoring record.
- False incidents: detections after the warm-up that credit no label and repeat none, including
  those that begin too early or more than TOLERANCE_AFTER_S after a label's end.

RIGHT_KINDS, label kind -> engine kinds counted as naming it:
  error_burst      rule_burst, rare_template, volume_spike (known error lines, far more of them)
  new_error        new_template, rare_template (a template first seen during the incident is
                   "rare" from its second line on)
  latency_drift    value_drift, unusual_value (latencies off their learned range)
  broken_workflow  sequence
  unusual_value    new_value, unusual_value
  volume_spike     volume_spike
  volume_drop      volume_drop, silent_source (fewer lines than usual; silent = zero in a window)
  silent_source    silent_source, volume_drop
window_structure and the catch-all "anomaly" name no labelled kind.
"""
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from anomaly_detector.detection.incidents import KIND_BY_REASON

TOLERANCE_BEFORE_S = 60.0
TOLERANCE_AFTER_S = 300.0
# Reported only (Score.near_label): a false incident overlapping a same-source label or the NEAR_AFTER_S
# after it is one the detector raised for the right trouble, too early or too late.
NEAR_AFTER_S = 900.0
RIGHT_KINDS = {
    "error_burst": ("rule_burst", "rare_template", "volume_spike"),
    "new_error": ("new_template", "rare_template"),
    "latency_drift": ("value_drift", "unusual_value"),
    "broken_workflow": ("sequence",),
    "unusual_value": ("new_value", "unusual_value"),
    "volume_spike": ("volume_spike",),
    "volume_drop": ("volume_drop", "silent_source"),
    "silent_source": ("silent_source", "volume_drop"),
}
# Flagged replay lines of one source closer than this together form one pseudo-incident.
FLAG_GAP_S = 300.0
_ANOMALY_TRUE = re.compile(rb'"anomaly"\s*:\s*true')
_SOURCE_WORDS = re.compile(r"[^\w.-]+")


@dataclass
class Detection:
    """One alert-worthy thing the detector reported: when, for which source (None = unknown), and
    the engine's kind for it (None = unknown, which names no labelled kind)."""

    first_seen: float
    last_seen: float
    source: str | None
    ident: str = ""
    kind: str | None = None


@dataclass
class KindScore:
    labelled: int = 0
    caught: int = 0           # credited by a detection of a right kind
    other_kind: int = 0       # credited by a detection of another kind
    delays: list = field(default_factory=list)      # of caught labels: first_seen - label start, >= 0
    wrong_kinds: Counter = field(default_factory=Counter)   # engine kind -> labels it took with another kind

    @property
    def missed(self):
        return self.labelled - self.caught - self.other_kind

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
    repeats: int = 0          # detections after the warm-up inside an already credited label only
    near_label: int = 0       # false incidents overlapping a same-source label or its NEAR_AFTER_S tail
    false_all: list = field(default_factory=list)   # every false incident (false_samples: the first 20)

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


def program_source(value, known):
    """The first word of a detection's source that is a known source name, or None.

    A syslog-style line names its service as `host program[pid]:`; a detector may call that source
    "web-1 nginx", "nginx" or "checkout[2211]", while labels name the program."""
    if not value:
        return None
    for word in _SOURCE_WORDS.split(str(value)):
        if word in known:
            return word
    return None


def kind_of_reason(reason):
    """The engine's incident kind for a reason text (detection/incidents.py KIND_BY_REASON)."""
    for needle, kind in KIND_BY_REASON:
        if needle in reason:
            return kind
    return "anomaly"


def load_detections(path):
    """Incidents as JSON lines; first_seen, last_seen, source and kind (or reason) are read."""
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
            kind = rec.get("kind") or (kind_of_reason(rec["reason"]) if rec.get("reason") else None)
            out.append(Detection(first, first if last is None else last, source_name(rec.get("source")),
                                 str(rec.get("id", n)), kind))
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
            reasons = rec.get("reasons") or []
            kind = kind_of_reason(reasons[0]) if reasons else None
            flagged.append((record_source(rec, jsonl_sources), ts, float(rec.get("score") or 0.0), kind))
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
    """(source, ts[, score, kind]) flags -> Detections per source, split where flags are more than gap
    apart; a group's kind is that of its highest-scoring flag."""
    out = []
    by_source = {}
    for source, ts, *rest in flagged:
        score_, kind = (rest + [0.0, None])[:2]
        by_source.setdefault(source, []).append((ts, score_, kind))
    for source in sorted(by_source, key=str):
        flags = sorted(by_source[source], key=lambda f: f[0])
        group = [flags[0]]
        for f in flags[1:]:
            if f[0] - group[-1][0] > gap:
                out.append(_flag_group(source, group))
                group = []
            group.append(f)
        out.append(_flag_group(source, group))
    out.sort(key=lambda d: d.first_seen)
    return out


def _flag_group(source, group):
    first, last = group[0][0], group[-1][0]
    kind = max(group, key=lambda f: f[1])[2]
    return Detection(first, last, source, f"{source}@{first:.0f}", kind)


def begins_in(label, det, before=TOLERANCE_BEFORE_S, after=TOLERANCE_AFTER_S):
    """Same source (or none) and first_seen within [start - before, end + after]."""
    if det.source is not None and det.source != label["source"]:
        return False
    return label["start"] - before <= det.first_seen <= label["end"] + after


def near(label, det, before=TOLERANCE_BEFORE_S):
    """Same source and overlapping the label or the NEAR_AFTER_S after it (reported, never credited)."""
    if det.source is not None and det.source != label["source"]:
        return False
    return det.first_seen <= label["end"] + NEAR_AFTER_S and det.last_seen >= label["start"] - before


def score(labels, detections, before=TOLERANCE_BEFORE_S, after=TOLERANCE_AFTER_S):
    """Credit each detection to at most one label, greedily by time, and judge its kind (module docstring)."""
    known = labels.get("sources")
    if known:
        detections = [d if d.source in known else
                      Detection(d.first_seen, d.last_seen, program_source(d.source, known), d.ident, d.kind)
                      for d in detections]
    incidents = sorted(labels["incidents"], key=lambda lb: lb["start"])
    credit = {}         # label index -> detection
    repeats = []
    unmatched = []
    for det in sorted(detections, key=lambda d: d.first_seen):
        fits = [i for i, lb in enumerate(incidents) if begins_in(lb, det, before, after)]
        free = [i for i in fits if i not in credit]
        if free:
            credit[free[0]] = det
        elif fits:
            repeats.append(det)
        else:
            unmatched.append(det)
    kinds = {}
    missed = []
    for i, label in enumerate(incidents):
        ks = kinds.setdefault(label["kind"], KindScore())
        ks.labelled += 1
        det = credit.get(i)
        if det is None:
            missed.append(label)
        elif det.kind in RIGHT_KINDS.get(label["kind"], ()):
            ks.caught += 1
            ks.delays.append(max(0.0, det.first_seen - label["start"]))
        else:
            ks.other_kind += 1
            ks.wrong_kinds[det.kind or "unknown"] += 1
    warm = labels["warmup_end"]
    false = [d for d in unmatched if d.first_seen >= warm]
    near_label = sum(1 for d in false if any(near(lb, d, before) for lb in incidents))
    return Score(kinds=kinds, false_incidents=len(false), scored_days=(labels["end"] - warm) / 86400.0,
                 warmup_detections=len(unmatched) - len(false), missed=missed, false_samples=false[:20],
                 repeats=sum(1 for d in repeats if d.first_seen >= warm), near_label=near_label, false_all=false)


def merge_scores(scores):
    """Pool several workloads' scores (e.g. one per seed) into one."""
    kinds = {}
    for s in scores:
        for kind, ks in s.kinds.items():
            agg = kinds.setdefault(kind, KindScore())
            agg.labelled += ks.labelled
            agg.caught += ks.caught
            agg.other_kind += ks.other_kind
            agg.delays.extend(ks.delays)
            agg.wrong_kinds.update(ks.wrong_kinds)
    return Score(kinds=kinds, false_incidents=sum(s.false_incidents for s in scores),
                 scored_days=sum(s.scored_days for s in scores),
                 warmup_detections=sum(s.warmup_detections for s in scores),
                 missed=[m for s in scores for m in s.missed], false_samples=[f for s in scores for f in s.false_samples],
                 repeats=sum(s.repeats for s in scores), near_label=sum(s.near_label for s in scores),
                 false_all=[f for s in scores for f in s.false_all])
