"""Generate a realistic multi-service log workload with labelled incidents, in event time.

Builds traffic rates (diurnal, weekly, noisy, with legitimate bursts), asks services.py for each
hour's lines, applies incidents.py's plan, and writes plain per-source files or one merged JSONL
file plus a labels JSON; bench/detect_bench.py, the demo command and tests consume the result.
"""
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from anomaly_detector.workload.cascades import parts as cascade_parts
from anomaly_detector.workload.cascades import schedule as cascade_schedule
from anomaly_detector.workload.incidents import expand_kinds, schedule
from anomaly_detector.workload.services import LEVELS, NO_TAG, SERVICES, SOURCES, HealthService, Vocabulary

DEFAULT_LINES_PER_DAY = 1_000_000
# Share of a weekday's lines per traffic-driven source; health and batch add a few percent on top.
SHARES = {"web": 0.40, "app": 0.36, "db": 0.21}
HEALTH_SHARE = 0.03
WEEKEND_FACTOR = 0.6
CHUNK_S = 3600
HEARTBEAT_INTERVALS = (5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
LABELS_FILE = "labels.json"
MERGED_FILE = "workload.jsonl"


@dataclass
class Workload:
    """What generate() wrote: the log files, the labels file, and a summary of both."""

    out_dir: str
    files: list
    labels_path: str
    lines: int
    fmt: str
    seed: int
    start: float
    end: float
    warmup_end: float
    incidents: list = field(default_factory=list)
    lines_per_file: dict = field(default_factory=dict)
    sources: tuple = SOURCES
    cascades: list = field(default_factory=list)     # labels.json "cascades" (generate(cascades=N))


def parse_time(text):
    """ISO 8601 (a trailing Z allowed) to epoch seconds, UTC when no zone is given."""
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def raw_day_curve(hour):
    """Relative traffic by hour of day: quiet night, a morning peak, an afternoon lull, an evening peak."""
    def bump(centre, width):
        d = (hour - centre + 12.0) % 24.0 - 12.0
        return np.exp(-0.5 * (d / width) ** 2)
    return 0.10 + 0.95 * bump(11.0, 2.8) + 0.45 * bump(15.5, 2.0) + 0.75 * bump(20.5, 2.2)


def day_curve(hour):
    """The day curve scaled so that a weekday averages 1."""
    return raw_day_curve(hour) / raw_day_curve(np.arange(1440) / 60.0).mean()


def ar1_lognormal(rng, n, phi, sigma):
    """Slowly wandering multiplicative noise (mean ~1): traffic is never exactly the daily curve."""
    eps = rng.standard_normal(n) * sigma * np.sqrt(1.0 - phi * phi)
    x = np.empty(n)
    prev = rng.standard_normal() * sigma
    for i in range(n):
        prev = phi * prev + eps[i]
        x[i] = prev
    return np.exp(x - 0.5 * sigma * sigma)


def legit_bursts(rng, n_min, per_day=3.0):
    """Campaigns, newsletters, a link on a big site: whole-site traffic rising 1.3-2.5x for a while."""
    factor = np.ones(n_min)
    for _ in range(rng.poisson(per_day * n_min / 1440.0)):
        centre = rng.uniform(0, n_min)
        half = rng.uniform(3, 20)
        amp = rng.uniform(0.3, 1.5)
        m = np.arange(max(0, int(centre - half)), min(n_min, int(centre + half) + 1))
        factor[m] *= 1.0 + amp * 0.5 * (1.0 + np.cos(np.pi * (m - centre) / half))
    return factor


def source_volumes(lines_per_day, source_lines_per_day=None):
    """Weekday lines per day of each source: shares of lines_per_day unless given per source."""
    volumes = {name: lines_per_day * share for name, share in SHARES.items()}
    volumes["health"] = HEALTH_SHARE * lines_per_day
    unknown = set(source_lines_per_day or ()) - set(volumes)
    if unknown:
        raise ValueError(f"source_lines_per_day: no such source(s) {sorted(unknown)}; use {sorted(volumes)}")
    volumes.update({k: float(v) for k, v in (source_lines_per_day or {}).items()})
    if min(volumes.values()) < 0:
        raise ValueError("lines per day cannot be negative")
    return volumes


def traffic_rates(rng, t_start, n_min, volumes):
    """Expected lines per minute for each traffic-driven source, from source_volumes()."""
    t = t_start + 60.0 * (np.arange(n_min) + 0.5)
    hour = (t % 86400.0) / 3600.0
    weekday = ((t // 86400.0) + 3) % 7
    shared = day_curve(hour) * np.where(weekday >= 5, WEEKEND_FACTOR, 1.0)
    shared = shared * ar1_lognormal(rng, n_min, 0.985, 0.15) * legit_bursts(rng, n_min)
    return {name: volumes[name] / 1440.0 * shared * ar1_lognormal(rng, n_min, 0.9, 0.06) for name in SHARES}


def heartbeat_interval(health_lines_per_day):
    """The check interval an operator would configure that comes closest to the wanted volume."""
    want = 86400.0 * len(HealthService.TARGETS) / max(health_lines_per_day, 1.0)
    return min(HEARTBEAT_INTERVALS, key=lambda x: abs(np.log(x / want)))


class Output:
    """Writes merged, time-ordered events and remembers which output lines belong to which incident."""

    def __init__(self, out_dir, fmt):
        self.fmt = fmt
        if fmt == "jsonl":
            self.names = {s: MERGED_FILE for s in SOURCES}
        elif fmt == "plain":
            self.names = {s: f"{s}.log" for s in SOURCES}
        else:
            raise ValueError(f"unknown format {fmt!r}; use plain or jsonl")
        self.handles = {n: open(os.path.join(out_dir, n), "w", encoding="utf-8", buffering=1 << 20)
                        for n in dict.fromkeys(self.names.values())}
        self.count = {n: 0 for n in self.handles}
        self.refs = {}

    def write(self, ms, src, lvl, tag, msgs):
        stamps = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()
        if self.fmt == "jsonl":
            # Only web access lines hold quotes (and never a backslash); escaping just those is fast.
            for i in np.flatnonzero(src == SOURCES.index("web")).tolist():
                msgs[i] = msgs[i].replace('"', '\\"')
            middle = [JSON_MIDDLE[k] for k in (src.astype(np.int64) * len(LEVELS) + lvl).tolist()]
            self.write_lines(MERGED_FILE, np.arange(len(msgs)), tag, [
                f'{{"timestamp":"{t}Z{mid}{m}"}}\n' for t, mid, m in zip(stamps, middle, msgs)])
            return
        for k, source in enumerate(SOURCES):
            idx = np.flatnonzero(src == k)
            if idx.size:
                text = [f"{stamps[i]}Z {LEVELS[lvl[i]]} {msgs[i]}\n" for i in idx.tolist()]
                self.write_lines(self.names[source], idx, tag, text)

    def write_lines(self, name, idx, tag, text):
        first = self.count[name] + 1
        self.handles[name].write("".join(text))
        self.count[name] += len(text)
        tags = tag[idx]
        hit = np.flatnonzero(tags != NO_TAG)
        for inc_id in np.unique(tags[hit]).tolist():
            lines = first + hit[tags[hit] == inc_id]
            self.refs.setdefault(inc_id, {}).setdefault(name, []).append(lines)

    def close(self):
        for h in self.handles.values():
            h.close()

    def line_refs(self, inc_id):
        return {name: np.concatenate(parts).tolist() for name, parts in sorted(self.refs.get(inc_id, {}).items())}


JSON_MIDDLE = [f'","source":"{s}","level":"{v}","message":"' for s in SOURCES for v in LEVELS]


class Merger:
    """Collects each chunk's events, holds back those that belong to later chunks, writes in order."""

    def __init__(self, output, plan):
        self.output = output
        self.silent = [(SOURCES.index(i.source), i.start, i.end) for i in plan if i.kind == "silent_source"]
        self.dropped = [(SOURCES.index(i.source), i.start, i.end, i.id) for i in plan if i.kind == "volume_drop"]
        self.carry = (np.empty(0), np.empty(0, np.int8), np.empty(0, np.int8), np.empty(0, np.int32), [])

    def add(self, parts, until):
        ts = np.concatenate([self.carry[0]] + [p[0] for p in parts])
        src = np.concatenate([self.carry[1]] + [np.full(p[0].size, p[4], np.int8) for p in parts])
        lvl = np.concatenate([self.carry[2]] + [p[1] for p in parts])
        tag = np.concatenate([self.carry[3]] + [p[2] for p in parts])
        msgs = self.carry[4] + [m for p in parts for m in p[3]]
        keep = np.ones(ts.size, bool)
        for s, a, b in self.silent:
            # A source that is down writes nothing, not even the tail of requests already in flight.
            keep &= ~((src == s) & (ts >= a) & (ts < b))
        for s, a, b, inc_id in self.dropped:
            tag[(src == s) & (ts >= a) & (ts < b) & (tag == NO_TAG)] = inc_id
        ms = np.floor(ts * 1000.0).astype(np.int64)
        order = np.flatnonzero(keep)
        order = order[np.argsort(ms[order], kind="stable")]
        cut = order.size if until is None else int(np.searchsorted(ms[order], int(until * 1000), "left"))
        now, later = order[:cut], order[cut:]
        self.output.write(ms[now], src[now], lvl[now], tag[now], [msgs[i] for i in now.tolist()])
        self.carry = (ts[later], src[later], lvl[later], tag[later], [msgs[i] for i in later.tolist()])


def build_services(seed_seqs, volumes):
    vocab = Vocabulary(np.random.default_rng(seed_seqs[0]))
    out = []
    for cls, ss in zip(SERVICES, seed_seqs[1:]):
        rng = np.random.default_rng(ss)
        mean = volumes.get(cls.name, 0.0) / 1440.0
        if cls is HealthService:
            out.append(cls(rng, vocab, mean, interval=heartbeat_interval(volumes["health"])))
        else:
            out.append(cls(rng, vocab, mean))
    return out


def generate(out_dir, days=3, seed=0, lines_per_day=DEFAULT_LINES_PER_DAY, incidents="all",
             start="2026-03-02T00:00:00Z", fmt="plain", warmup_days=None, source_lines_per_day=None, cascades=0):
    """Write a workload of `days` of event time into out_dir and return what was written.

    lines_per_day is the weekday volume of web+app+db (weekends are lower; health and batch add a
    few percent). incidents: "all" (every kind, once per post-warm-up day), a list of kinds, or
    "none". Incidents fall after the warm-up (default: the first day, or half of a shorter run).
    source_lines_per_day overrides the weekday volume of single sources, e.g. {"db": 50000};
    "health" sets the heartbeat interval; batch jobs keep their schedule.
    cascades: per post-warm-up day, faults spreading from a dependency to two dependents plus an
    unrelated incident (cascades.py; labelled under "cascades"); 0 (default) leaves the output as it was.
    """
    if days <= 0 or lines_per_day <= 0:
        raise ValueError("days and lines_per_day must be positive")
    os.makedirs(out_dir, exist_ok=True)
    t_start = parse_time(start) if isinstance(start, str) else float(start)
    n_min = max(1, int(round(days * 1440)))
    t_end = t_start + 60.0 * n_min
    warm = min(1.0, days / 2.0) if warmup_days is None else float(warmup_days)
    t_warm = t_start + 86400.0 * warm
    ss = np.random.SeedSequence(seed).spawn(3 + len(SERVICES))
    volumes = source_volumes(lines_per_day, source_lines_per_day)
    rates = traffic_rates(np.random.default_rng(ss[0]), t_start, n_min, volumes)
    kinds = expand_kinds(incidents, (t_end - t_warm) / 86400.0)
    if kinds and t_warm >= t_end:
        raise ValueError(f"a warm-up of {warm} days leaves no time for incidents in {days} days")
    plan = schedule(kinds, np.random.default_rng(ss[1]), t_warm, t_end)
    apply_rate_incidents(rates, plan, t_start, n_min)
    services = build_services(ss[2:], volumes)
    extra, groups = [], []
    if cascades:
        # A stream of its own: the services' and the schedule's draws stay those of the seed without cascades.
        crng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
        extra, groups = cascade_schedule(crng, plan, t_warm, t_end, cascades, len(plan))
    output = Output(out_dir, fmt)
    merger = Merger(output, plan)
    try:
        for m0 in range(0, n_min, CHUNK_S // 60):
            m1 = min(n_min, m0 + CHUNK_S // 60)
            t0, t1 = t_start + 60.0 * m0, t_start + 60.0 * m1
            parts = []
            for k, svc in enumerate(services):
                r = rates.get(svc.name, np.zeros(n_min))[m0:m1]
                active = [i for i in plan if i.source == svc.name and i.overlaps(t0 - 600.0, t1)]
                parts.append(svc.generate(t0, r, active).arrays() + (k,))
            if extra:
                parts += cascade_parts(crng, extra, t0, t1)
            merger.add(parts, t1)
        merger.add([], None)
    finally:
        output.close()
    return write_labels(out_dir, output, plan + extra, seed, fmt, t_start, t_end, t_warm, lines_per_day, days,
                        groups)


def apply_rate_incidents(rates, plan, t_start, n_min):
    """Source-wide drops and outages change how much traffic a source logs in the first place."""
    for inc in plan:
        if inc.kind in ("volume_drop", "silent_source") and inc.source in rates:
            m0 = max(0, int((inc.start - t_start) // 60))
            m1 = min(n_min, int(np.ceil((inc.end - t_start) / 60)))
            rates[inc.source][m0:m1] *= inc.detail.get("factor", 0.0)


def write_labels(out_dir, output, plan, seed, fmt, t_start, t_end, t_warm, lines_per_day, days, cascades=()):
    files = list(output.handles)
    labels = []
    for inc in plan:
        refs = output.line_refs(inc.id)
        labels.append({"id": inc.id, "kind": inc.kind, "source": inc.source, "start": inc.start, "end": inc.end,
                       "start_iso": iso(inc.start), "end_iso": iso(inc.end), "detail": inc.detail,
                       "n_lines": sum(len(v) for v in refs.values()), "lines": refs})
    doc = {"version": 1, "seed": seed, "days": days, "lines_per_day": lines_per_day, "fmt": fmt,
           "start": t_start, "end": t_end, "warmup_end": t_warm, "start_iso": iso(t_start), "end_iso": iso(t_end),
           "sources": list(SOURCES), "files": files, "lines_per_file": dict(output.count), "incidents": labels}
    if cascades:
        doc["cascades"] = list(cascades)
    path = os.path.join(out_dir, LABELS_FILE)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return Workload(out_dir=out_dir, files=[os.path.join(out_dir, f) for f in files], labels_path=path,
                    lines=sum(output.count.values()), fmt=fmt, seed=seed, start=t_start, end=t_end,
                    warmup_end=t_warm, incidents=labels, lines_per_file=dict(output.count), cascades=list(cascades))


def load_labels(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)

