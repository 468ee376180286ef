"""The services workload family of bench/detect_bench.py: JSON lines of seven services with numeric fields.

Written as an operator who runs such services would, without reading the detector, its parsers or the
other two generators (its tuning seeds now serve diagnosis, its held-out seeds do not; bench/README.md).
Only the label layout (that of
bench/shopgen.py) is shared, so anomaly_detector/workload/scoring.py scores it.

One file `services.jsonl`, one JSON object a line, in time order: `timestamp` (ISO 8601 UTC, ms),
`source` (gateway, orders, payments, inventory, search, users, mailer), `seq` (a per-process line
counter, reset when the service restarts), `level` (gateway and search are Go/JVM-style lower case,
the others Python-style upper case), `message`, then the fields the line's code logs: measurements
(duration_ms, status, bytes, queue_depth, pool_in_use/pool_size, rows, retries, heap_mb, cpu_pct,
hit_rate ...), identifiers that are not measurements (request_id, trace_id, user_id, order_id, sku) and
clocks that only grow (uptime_s). Not every line has every field.

Normal behaviour: load follows the hour (night trough, lunch and evening peaks) and the weekday
(weekends lower and later); each service has its own template mix whose shares move over the day;
latency rises with load; runtime stats every 30 s (heap growing until a GC drops it), cache stats and
a warehouse sync every 5 min, a load-balancer health check every 10 s; a nightly report job (orders,
02:00) and session cleanup (users, 03:30); a few normal warnings and errors a day per service.
An order is a flow across services sharing order_id: order created (orders) -> stock reserved
(inventory) -> payment authorised or declined (payments) -> order confirmed (orders) -> confirmation
email queued and sent (mailer), with the gateway's POST /api/orders.

Unlabelled happenings (labels.json "unlabelled"): one deploy a day of one service (its lines stop for
20-60 s, it logs its start-up, seq and uptime_s restart) and one log gap (no line from anyone for 2-8
min). Labelled incidents: after a warm-up day, one of each of KINDS a post-warm-up day (between 06:30
and 23:30), at least SEPARATION_S from each other and from the happenings. Each label's n_lines is the
number of lines the incident added or changed (0 for a silence, a drop or a missing workflow step: the
lines they took are in detail.lines_removed).

    python bench/svcgen.py OUT_DIR [--days 3] [--seed 0] [--lines-per-day 300000]

Neighbours: bench/detect_bench.py (`--family svc`), bench/explain_labels.py, workload/scoring.py.
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

DEFAULT_LINES_PER_DAY = 300_000
START = "2026-03-05T00:00:00Z"      # a Thursday: warm-up on a weekday, then Friday and a Saturday
LOG_FILE = "services.jsonl"
LABELS_FILE = "labels.json"
SOURCES = ("gateway", "orders", "payments", "inventory", "search", "users", "mailer")
KINDS = ("error_burst", "new_error", "latency_drift", "broken_workflow", "unusual_value", "volume_spike",
         "volume_drop", "silent_source")
REMOVING = ("silent_source", "volume_drop", "broken_workflow")     # n_lines 0, detail.lines_removed
SEPARATION_S = 1800.0
INCIDENT_HOURS = (6.5, 23.5)
CHUNK_S = 3600.0
LOWER_LEVELS = ("gateway", "search")        # Go / JVM loggers: info, warn, error
SRC = {name: i for i, name in enumerate(SOURCES)}


@dataclass
class Event:
    """A labelled incident (id >= 0), or (kind "deploy", "log_gap") an unlabelled happening."""

    kind: str
    source: str
    start: float
    end: float
    detail: dict = field(default_factory=dict)
    id: int = -1

    def inside(self, ts):
        return (ts >= self.start) & (ts < self.end)


@dataclass
class SvcWorkload:
    """What generate() wrote (the fields bench/detect_bench.py reads)."""

    out_dir: str
    files: list
    labels_path: str
    lines: int
    seed: int
    start: float
    end: float
    warmup_end: float
    incidents: list
    sources: tuple = SOURCES
    unlabelled: list = field(default_factory=list)


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- load

def bump(hour, centre, width):
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def day_curve(hour, weekend):
    """Relative load by hour of day: about 1.0 at a weekday's evening peak, 0.1-0.2 at night."""
    if weekend:
        return 0.10 + 0.40 * bump(hour, 13.0, 3.0) + 0.50 * bump(hour, 20.0, 2.5)
    return 0.10 + 0.60 * bump(hour, 11.5, 2.5) + 0.35 * bump(hour, 15.5, 2.0) + 0.85 * bump(hour, 20.5, 2.0)


def load_curve(rng, t_start, n_min):
    """Load per minute: the day's curve, a factor per day and a slow random walk around it."""
    t = t_start + 60.0 * np.arange(n_min)
    days = np.floor((t - t_start) / 86400.0).astype(int)
    hour = (t % 86400.0) / 3600.0
    weekday = ((t // 86400.0).astype(np.int64) + 3) % 7          # 1970-01-01 was a Thursday; Monday = 0
    weekend = weekday >= 5
    curve = np.where(weekend, day_curve(hour, True), day_curve(hour, False))
    per_day = rng.uniform(0.92, 1.08, days.max() + 1)[days]
    walk = np.zeros(n_min)
    eps = rng.normal(0.0, 0.02, n_min)
    for i in range(1, n_min):
        walk[i] = 0.98 * walk[i - 1] + eps[i]
    return curve * per_day * np.exp(walk)


# ---------------------------------------------------------------- what services log

# Gateway endpoints: method, route, share of gateway requests, median ms, median bytes, upstream.
ENDPOINTS = (
    ("GET", "/api/products", 0.26, 35.0, 18000, "inventory"),
    ("GET", "/api/products/{id}", 0.21, 22.0, 6000, "inventory"),
    ("GET", "/api/search", 0.16, 60.0, 9000, "search"),
    ("POST", "/api/cart", 0.08, 40.0, 900, "orders"),
    ("GET", "/api/orders/{id}", 0.05, 30.0, 2500, "orders"),
    ("POST", "/api/login", 0.04, 110.0, 600, "users"),
    ("GET", "/api/users/me", 0.11, 15.0, 1200, "users"),
)
ORDER_SHARE = 0.04       # orders created per gateway request
DECLINE_P = 0.04
# Request-driven lines per gateway request, by (source, operation), and the hour shape of their share.
WEIGHTS = {
    ("orders", "cart updated"): 0.08, ("orders", "order status read"): 0.05,
    ("payments", "webhook received"): 0.015, ("payments", "refund issued"): 0.001,
    ("inventory", "stock checked"): 0.24, ("inventory", "replenishment queued"): 0.004,
    ("search", "search served"): 0.16, ("search", "suggest served"): 0.22,
    ("users", "login succeeded"): 0.035, ("users", "login failed"): 0.003, ("users", "session refreshed"): 0.07,
    ("users", "profile read"): 0.10,
    ("mailer", "password reset email queued"): 0.002, ("mailer", "bounce received"): 0.0015,
}
EVENING_OPS = {"search served", "suggest served", "cart updated"}
MORNING_OPS = {"login succeeded", "login failed", "session refreshed"}
# Median ms of request-driven operations (log-normal, rising with load).
OP_MS = {"cart updated": 18.0, "order status read": 9.0, "webhook received": 12.0, "refund issued": 240.0,
         "stock checked": 4.0, "search served": 38.0, "suggest served": 7.0, "login succeeded": 95.0,
         "login failed": 90.0, "session refreshed": 3.0, "profile read": 6.0, "order created": 24.0,
         "stock reserved": 11.0, "payment authorised": 320.0, "payment declined": 290.0, "order confirmed": 8.0,
         "email sent": 450.0}
# Known errors and warnings of normal days: (source, operation, level, message, per hour at load 1).
KNOWN_ERRORS = (
    ("gateway", "upstream error", "error", "upstream connect error or disconnect/reset before headers", 6.0),
    ("payments", "provider timeout", "warn", "provider timeout, retrying", 6.0),
    ("orders", "deadlock", "warn", "deadlock detected, transaction retried", 0.4),
    ("orders", "slow query", "warn", "slow query", 1.0),
    ("inventory", "warehouse error", "error", "warehouse API returned 503", 1.0),
    ("search", "shard timeout", "warn", "shard query timed out", 4.0),
    ("users", "token expired", "warn", "token validation failed: token expired", 10.0),
    ("mailer", "smtp deferred", "warn", "smtp deferred, will retry", 2.0),
)
# Errors never logged on a normal day (new_error): (source, message).
NEW_ERRORS = (
    ("orders", "unhandled exception in checkout handler: KeyError: 'shipping_address'"),
    ("payments", "TLS handshake with provider failed: certificate has expired"),
    ("inventory", "failed to decode warehouse response: unexpected end of JSON input"),
    ("search", "circuit breaker open for index products_v7"),
    ("users", "password check failed: unsupported hash prefix"),
    ("mailer", "template render failed: missing variable first_name in order_confirmation"),
)
POOLS = {"orders": 20, "payments": 10, "users": 15}
HEAP_MB = {"gateway": (60, 180), "orders": (140, 420), "payments": (120, 300), "inventory": (150, 380),
           "search": (900, 2600), "users": (110, 260), "mailer": (80, 200)}       # after GC, GC threshold
CACHED = ("orders", "inventory", "search", "users")
VERSIONS = {s: (1 + i % 3, 4 + 3 * i) for i, s in enumerate(SOURCES)}
WORKFLOW = ("order created", "stock reserved", "payment authorised", "order confirmed", "confirmation email")
# Lines of the order flow: a volume_drop of a service leaves them (fewer orders would show in every service).
FLOW_OPS = frozenset(("order created", "stock reserved", "payment authorised", "payment declined", "order confirmed",
                      "confirmation email", "POST /api/orders"))
FLOW_STEPS = {"stock reserved": "inventory", "order confirmed": "orders", "confirmation email": "mailer"}
SPIKE_OPS = (("gateway", "GET /api/products/{id}"), ("gateway", "GET /api/search"), ("search", "suggest served"),
             ("inventory", "stock checked"))
DRIFT_OPS = (("gateway", "GET /api/search"), ("payments", "payment authorised"), ("search", "search served"),
             ("inventory", "stock checked"), ("users", "login succeeded"), ("orders", "cart updated"))
UNUSUAL = (("orders", "pool_in_use"), ("payments", "pool_in_use"), ("mailer", "queue_depth"),
           ("inventory", "queue_depth"), ("gateway", "bytes"))
DROP_SOURCES = ("search", "users", "inventory", "orders")
SILENT_SOURCES = ("orders", "payments", "inventory", "search", "users", "mailer")
DURATION_MIN = {"error_burst": (10, 30), "new_error": (10, 30), "latency_drift": (30, 90),
                "broken_workflow": (20, 60), "unusual_value": (10, 40), "volume_spike": (10, 30),
                "volume_drop": (30, 120), "silent_source": (15, 90)}


def lines_per_request():
    """Expected request-driven lines per gateway request (for scaling to lines_per_day)."""
    gateway = 1.0
    flow = ORDER_SHARE * (1 + 1 + 1 + 1 + (1 - DECLINE_P) * 3)    # gateway, created, reserved, payment, 3 after
    errors = sum(k[4] for k in KNOWN_ERRORS) / 60.0
    return gateway + flow + sum(WEIGHTS.values()), errors


def housekeeping_per_day():
    stats = len(SOURCES) * 2880 + 8640 + 2880 + 288 * (len(CACHED) + 1)
    return stats + 700 + 400            # report job, session cleanup


# ---------------------------------------------------------------- the schedule

def schedule(rng, t_start, t_end, t_warm):
    """Deploys, the log gap and the labelled incidents, as Events sorted by start (labels numbered in order)."""
    busy = []
    events = []

    def place(kind, source, lo, hi, dur_s, detail):
        for _ in range(3000):
            if hi - lo <= dur_s:
                return None
            s = float(rng.uniform(lo, hi - dur_s))
            if all(s + dur_s + SEPARATION_S <= b0 or s >= b1 + SEPARATION_S for b0, b1 in busy):
                busy.append((s, s + dur_s))
                events.append(Event(kind, source, s, s + dur_s, detail))
                return events[-1]
        return None

    n_days = int(np.ceil((t_end - t_start) / 86400.0 - 1e-9))
    for d in range(n_days):
        day = t_start + 86400.0 * d
        src = str(rng.choice(SOURCES))
        major, minor = VERSIONS[src]
        place("deploy", src, day + 9.5 * 3600, min(day + 17.5 * 3600, t_end - 600), float(rng.uniform(20, 60)),
              {"version": f"{major}.{minor + d + 1}.0"})
    place("log_gap", "all", t_warm + 3600.0, t_end - 3600.0, float(rng.uniform(120, 480)), {})
    post = [d for d in range(n_days) if t_start + 86400.0 * d >= t_warm - 1.0
            and min(t_start + 86400.0 * d + INCIDENT_HOURS[1] * 3600, t_end - 600) - (
                t_start + 86400.0 * d + INCIDENT_HOURS[0] * 3600) >= 8 * 3600]
    op_day = int(rng.choice(post)) if post else -1
    used = set()        # new errors already used: the next day's must be new too
    for d in post:
        day = t_start + 86400.0 * d
        lo, hi = day + INCIDENT_HOURS[0] * 3600, min(day + INCIDENT_HOURS[1] * 3600, t_end - 600)
        order = sorted(KINDS, key=lambda k: -DURATION_MIN[k][1])
        for kind in order:
            source, detail = incident_detail(rng, kind, d == op_day, used)
            lo_m, hi_m = DURATION_MIN[kind]
            for dur_min in (rng.uniform(lo_m, hi_m), lo_m):
                if place(kind, source, lo, hi, 60.0 * float(dur_min), detail) is not None:
                    break
            else:
                raise RuntimeError(f"svcgen: no room for a {kind} on day {d}")
    events.sort(key=lambda e: e.start)
    n = 0
    for e in events:
        if e.kind in KINDS:
            n += 1
            e.id = n
    return events


def incident_detail(rng, kind, op_day, used):
    """(source, detail) of one incident of a kind; op_day: the latency drift is one operation only; used:
    the new errors of earlier days (added to)."""
    if kind == "latency_drift":
        factor = round(float(rng.uniform(2.0, 4.0)), 2)
        if op_day:
            source, op = DRIFT_OPS[rng.integers(len(DRIFT_OPS))]
            return source, {"field": "duration_ms", "factor": factor, "operation": op}
        return str(rng.choice(("orders", "payments", "inventory", "search", "users", "gateway"))), {
            "field": "duration_ms", "factor": factor, "operation": None}
    if kind == "unusual_value":
        source, fld = UNUSUAL[rng.integers(len(UNUSUAL))]
        if fld == "pool_in_use":
            return source, {"field": fld, "value": "pool_size", "pool_size": POOLS[source]}
        if fld == "bytes":
            return source, {"field": fld, "factor": 10.0, "operation": "GET /api/products"}
        return source, {"field": fld, "factor": 10.0}
    if kind == "error_burst":
        usual = [e for e in KNOWN_ERRORS if e[4] >= 4.0]      # bursts of the rarest ones would be a few lines
        k = usual[rng.integers(len(usual))]
        return k[0], {"operation": k[1], "message": k[3], "factor": round(float(rng.uniform(10, 30)), 1)}
    if kind == "new_error":
        fresh = [e for e in NEW_ERRORS if e[1] not in used] or list(NEW_ERRORS)
        source, msg = fresh[rng.integers(len(fresh))]
        used.add(msg)
        return source, {"message": msg, "per_min": round(float(rng.uniform(0.6, 3.0)), 2)}
    if kind == "volume_spike":
        source, op = SPIKE_OPS[rng.integers(len(SPIKE_OPS))]
        return source, {"operation": op, "factor": round(float(rng.uniform(5, 15)), 1)}
    if kind == "volume_drop":
        return str(rng.choice(DROP_SOURCES)), {"factor": round(float(rng.uniform(0.15, 0.4)), 2)}
    if kind == "silent_source":
        return str(rng.choice(SILENT_SOURCES)), {}
    step = str(rng.choice(tuple(FLOW_STEPS)))
    return FLOW_STEPS[step], {"flow": "order", "steps": list(WORKFLOW), "missing_step": step}


# ---------------------------------------------------------------- one hour of lines

class Plan:
    """The events, looked up by what a generator asks about."""

    def __init__(self, events):
        self.events = events
        self.counts = {e.id: 0 for e in events if e.id >= 0}        # lines added or changed
        self.removed = {e.id: 0 for e in events if e.id >= 0}       # lines a silence, drop or lost step took

    def active(self, kind, source, t0, t1):
        return [e for e in self.events if e.kind == kind and e.source == source and e.start < t1 and e.end > t0]


class State:
    """What carries from one hour to the next: counters, heaps, boot times, lines due later."""

    def __init__(self, rng, t_start):
        self.seq = {s: int(rng.integers(100_000, 5_000_000)) for s in SOURCES}      # running for days
        self.heap = {s: float(rng.uniform(*HEAP_MB[s])) for s in SOURCES}
        self.boot = {s: t_start - float(rng.uniform(2, 20)) * 86400.0 for s in SOURCES}
        self.version = {s: f"{VERSIONS[s][0]}.{VERSIONS[s][1]}.{int(rng.integers(0, 9))}" for s in SOURCES}
        self.entries = {s: float(rng.uniform(20000, 60000)) for s in CACHED}
        self.order_id = int(rng.integers(4_100_000, 4_900_000))
        self.carry = []         # (ts, source index, body) due after the chunk that made them
        self.phase = {s: float(rng.uniform(0, 30)) for s in SOURCES}


class Chunk:
    """Lines of one hour: generators add blocks; finish() drops, sorts, numbers and formats them."""

    def __init__(self, rng, plan, state, load, t_start, t0, t1, base):
        self.rng, self.plan, self.state = rng, plan, state
        self.t0, self.t1 = t0, t1
        self.horizon = t1 + 600.0           # lines of this hour's requests may be logged a little later
        i0 = int((t0 - t_start) // 60)
        self.load = load[i0:i0 + int(round((t1 - t0) / 60))]
        self.req = base * self.load                 # gateway requests per minute
        self.hour = ((t0 + 60.0 * np.arange(len(self.load))) % 86400.0) / 3600.0
        self.blocks = []

    def lv(self, source, level):
        if source in LOWER_LEVELS:
            return level.lower()
        return {"warn": "WARNING"}.get(level, level.upper())

    def minute_load(self, ts):
        return self.load[np.clip(((ts - self.t0) // 60).astype(int), 0, len(self.load) - 1)]

    def arrivals(self, per_min, source, op, usual=None):
        """Poisson times in the hour at per_min (an array a minute); a volume_spike or error_burst of
        (source, op) multiplies the rate (usual: the rate its factor multiplies, default per_min), and each
        extra line is counted as the incident's."""
        mult = np.ones(len(per_min))
        marks = []
        for kind in ("volume_spike", "error_burst"):
            for e in self.plan.active(kind, source, self.t0, self.t1):
                if e.detail.get("operation") == op:
                    marks.append(e)
        mins = self.t0 + 60.0 * np.arange(len(per_min))
        for e in marks:
            share = np.clip((np.minimum(mins + 60, e.end) - np.maximum(mins, e.start)) / 60.0, 0, 1)
            ratio = 1.0 if usual is None else usual / np.maximum(per_min, 1e-9)
            mult = mult + share * np.maximum(e.detail["factor"] * ratio - 1.0, 0.0)
        n = self.rng.poisson(per_min * mult)
        ts = np.sort(np.repeat(mins, n) + self.rng.random(n.sum()) * 60.0)
        for e in marks:
            inside = e.inside(ts)
            m = mult[((ts[inside] - self.t0) // 60).astype(int)]
            self.plan.counts[e.id] += int((self.rng.random(inside.sum()) < (m - 1.0) / m).sum())
        return ts

    def ticks(self, every_s, source):
        ph = self.state.phase[source] % every_s
        first = self.t0 + ((ph - self.t0) % every_s)
        ts = np.arange(first, self.t1, every_s)
        return ts + self.rng.random(len(ts)) * 0.2

    def duration(self, ts, median_ms, source, op, sigma=0.35):
        """Log-normal ms rising with load; a latency_drift of the source (or of this op) multiplies it."""
        load = self.minute_load(ts)
        ms = median_ms * np.exp(self.rng.normal(0.0, sigma, len(ts))) * (0.75 + 0.45 * load ** 2)
        ops = np.broadcast_to(np.asarray(op, dtype=object), ts.shape)
        for e in self.plan.active("latency_drift", source, self.t0, self.horizon):
            hit = e.inside(ts) & ((ops == e.detail["operation"]) if e.detail["operation"] else True)
            ms = np.where(hit, ms * e.detail["factor"], ms)
            self.plan.counts[e.id] += int(hit.sum())
        return np.round(ms, 1)

    def unusual(self, source, fld, ts, values, op=None):
        """values with an unusual_value of (source, field[, op]) applied inside its window."""
        for e in self.plan.active("unusual_value", source, self.t0, self.horizon):
            if e.detail["field"] != fld or (e.detail.get("operation") and e.detail["operation"] != op):
                continue
            hit = e.inside(ts)
            if e.detail.get("value") == "pool_size":
                values = np.where(hit, e.detail["pool_size"], values)
            else:
                values = np.where(hit, np.round(values * e.detail["factor"] + self.rng.integers(1, 9, len(ts))),
                                  values)
            self.plan.counts[e.id] += int(hit.sum())
        return values

    def add(self, ts, source, op, bodies, house=False):
        if len(bodies):
            self.blocks.append((np.asarray(ts, dtype=float), SRC[source], op, house, bodies))

    def ids(self, n, width=16):
        """Random hex identifiers (request_id: 16 digits, trace_id: 32)."""
        halves = self.rng.integers(0, 1 << 63, (width // 16, n), dtype=np.int64).tolist()
        return ["".join(f"{x:016x}" for x in parts) for parts in zip(*halves)]

    def finish(self):
        """Apply the silences, drops and gaps, keep lines due after the hour for the next one, number
        each source's lines (seq restarts with the process) and format them."""
        ts_all, src_all, body_all = [], [], []
        for ts, si, op, house, bodies in self.blocks:
            keep = self.keep(ts, SOURCES[si], op, house)
            ts_all.append(ts[keep])
            src_all.append(np.full(int(keep.sum()), si))
            body_all.extend(b for b, k in zip(bodies, keep.tolist()) if k)
        for ts, si, body in self.state.carry:
            ts_all.append(np.array([ts]))
            src_all.append(np.array([si]))
            body_all.append(body)
        ts = np.concatenate(ts_all) if ts_all else np.zeros(0)
        src = np.concatenate(src_all).astype(int) if src_all else np.zeros(0, int)
        order = np.argsort(ts, kind="stable")
        later = ts[order] >= self.t1
        self.state.carry = [(float(ts[i]), int(src[i]), body_all[i]) for i in order[later]]
        now = order[~later]
        stamps = np.datetime_as_string((ts[now] * 1000).astype(np.int64).astype("datetime64[ms]"), unit="ms")
        restarts = {e.source: boot_time(e) for e in self.plan.events
                    if e.kind == "deploy" and self.t0 <= boot_time(e) < self.t1}
        seq = self.state.seq
        out = []
        for stamp, i, t in zip(stamps.tolist(), now.tolist(), ts[now].tolist()):
            name = SOURCES[src[i]]
            if name in restarts and t >= restarts[name]:
                seq[name] = 0
                del restarts[name]
            seq[name] += 1
            out.append(f'{{"timestamp":"{stamp}Z","source":"{name}","seq":{seq[name]},{body_all[i]}}}')
        for name in restarts:      # a restart with no line after it in this hour
            seq[name] = 0
        return out

    def keep(self, ts, source, op, house):
        keep = np.ones(len(ts), bool)
        ops = np.broadcast_to(np.asarray(op, dtype=object), ts.shape)
        for e in self.plan.events:
            if e.end <= self.t0 or e.start >= self.horizon:
                continue
            if e.kind == "log_gap" or (e.kind == "deploy" and e.source == source and not (isinstance(op, str) and op == "startup")):
                keep &= ~e.inside(ts)
            elif e.source != source:
                continue
            elif e.kind == "silent_source" or (e.kind == "volume_drop" and not house):
                gone = e.inside(ts) & keep
                if e.kind == "volume_drop":
                    gone &= self.rng.random(len(ts)) >= e.detail["factor"]
                    gone &= ~np.isin(ops, tuple(FLOW_OPS))
                self.plan.removed[e.id] += int(gone.sum())
                keep &= ~gone
            elif e.kind == "broken_workflow":
                gone = e.inside(ts) & (ops == e.detail["missing_step"]) & keep
                self.plan.removed[e.id] += int(gone.sum())
                keep &= ~gone
        return keep


def boot_time(e):
    """When a deployed service's new process logs its first line: its start-up lines end the deploy's gap."""
    return e.end - 0.5


def j(text):
    return json.dumps(text)


# ---------------------------------------------------------------- generators (one hour each)

def gateway_lines(ch):
    rng = ch.rng
    for method, route, share, ms, size, upstream in ENDPOINTS:
        op = f"{method} {route}"
        ts = ch.arrivals(ch.req * share, "gateway", op)
        n = len(ts)
        dur = ch.duration(ts, ms, "gateway", op).tolist()
        size_ = np.round(size * np.exp(rng.normal(0, 0.4, n)))
        size_ = ch.unusual("gateway", "bytes", ts, size_, op).astype(int)
        status = np.full(n, 200)
        r = rng.random(n)
        if route == "/api/products":
            status[r < 0.10] = 304
        elif route == "/api/products/{id}":
            status[r < 0.012] = 404
        elif route == "/api/users/me":
            status[r < 0.015] = 401
        elif route == "/api/login":
            status[r < 0.06] = 401
        ids = ((ch.state.order_id - rng.integers(1, 40000, n)) if route.startswith("/api/orders")
               else rng.integers(1000, 99999, n)).tolist()       # orders of the last weeks; product ids
        users = rng.integers(10_000, 2_000_000, n).tolist()
        has_user = (rng.random(n) < (0.35 if route in ("/api/products", "/api/search", "/api/products/{id}")
                                     else 0.97)).tolist()
        rid, tid = ch.ids(n), ch.ids(n, 32)
        bodies = []
        for k in range(n):
            path = route.replace("{id}", str(ids[k]))
            user = f',"user_id":{users[k]}' if has_user[k] else ""
            st = int(status[k])
            size_k = int(size_[k]) if st < 300 else (0 if st == 304 else 96)     # an error body is short
            bodies.append(f'"level":"info","message":"{method} {path} {st}","status":{st},'
                          f'"duration_ms":{dur[k]},"bytes":{size_k},"upstream":"{upstream}",'
                          f'"request_id":"{rid[k]}","trace_id":"{tid[k]}"{user}')
        ch.add(ts, "gateway", op, bodies)
    ts = ch.ticks(10.0, "gateway") + 3.0
    dur = np.round(0.2 + rng.random(len(ts)) * 0.6, 2)
    ch.add(ts, "gateway", "GET /healthz", [f'"level":"info","message":"GET /healthz 200","status":200,'
                                           f'"duration_ms":{d},"bytes":2,"client_ip":"10.0.0.2"'
                                           for d in dur.tolist()], house=True)


def hour_mod(ch, op):
    if op in EVENING_OPS:
        return 0.8 + 0.5 * bump(ch.hour, 20.5, 2.5)
    if op in MORNING_OPS:
        return 0.75 + 0.7 * bump(ch.hour, 8.5, 2.0)
    return 1.0


class Req:
    """One operation's requests of the hour: times, the fields every such line may use, its line head."""

    def __init__(self, ch, source, op, ts):
        self.ch, self.rng, self.source, self.op, self.ts, self.n = ch, ch.rng, source, op, ts, len(ts)
        self.users = ch.rng.integers(10_000, 2_000_000, self.n).tolist()
        level = ch.lv(source, "warn" if op in ("login failed", "bounce received") else "info")
        self.head = f'"level":"{level}","message":"{op}"'
        self.rid = ch.ids(self.n)
        self.dur = ch.duration(ts, OP_MS[op], source, op).tolist() if op in OP_MS else None


def request_lines(ch):
    """The request-driven lines of WEIGHTS (not the order flow); REQUEST_BODIES writes each op's fields."""
    for (source, op), w in WEIGHTS.items():
        ts = ch.arrivals(ch.req * w * hour_mod(ch, op), source, op)
        if len(ts):
            ch.add(ts, source, op, REQUEST_BODIES[op](Req(ch, source, op, ts)))


def cart_body(q):
    items = q.rng.integers(1, 9, q.n).tolist()
    return [f'{q.head},"user_id":{u},"items":{i},"duration_ms":{d},"request_id":"{r}"'
            for u, i, d, r in zip(q.users, items, q.dur, q.rid)]


def order_read_body(q):
    oid = (q.ch.state.order_id - q.rng.integers(1, 40000, q.n)).tolist()
    return [f'{q.head},"order_id":{o},"rows":1,"duration_ms":{d},"request_id":"{r}"' for o, d, r in zip(oid, q.dur, q.rid)]


def webhook_body(q):
    ev = q.rng.choice(("charge.succeeded", "charge.refunded", "payout.paid", "dispute.created"), q.n,
                      p=(0.8, 0.1, 0.08, 0.02)).tolist()
    return [f'{q.head},"event":"{e}","provider":"stripe","duration_ms":{d}' for e, d in zip(ev, q.dur)]


def refund_body(q):
    oid = (q.ch.state.order_id - q.rng.integers(100, 200000, q.n)).tolist()      # orders of the last weeks
    amt = q.rng.integers(500, 40000, q.n).tolist()
    return [f'{q.head},"order_id":{o},"amount_cents":{a},"duration_ms":{d}' for o, a, d in zip(oid, amt, q.dur)]


def stock_body(q):
    sku = q.rng.integers(10000, 99999, q.n).tolist()
    avail = q.rng.integers(0, 400, q.n).tolist()
    return [f'{q.head},"sku":"SKU-{s}","available":{a},"duration_ms":{d},"request_id":"{r}"'
            for s, a, d, r in zip(sku, avail, q.dur, q.rid)]


def replenish_body(q):
    depth = np.round(3 + 25 * q.ch.minute_load(q.ts) + q.rng.integers(0, 6, q.n))
    depth = q.ch.unusual("inventory", "queue_depth", q.ts, depth).astype(int).tolist()
    sku = q.rng.integers(10000, 99999, q.n).tolist()
    qty = (q.rng.integers(1, 20, q.n) * 12).tolist()
    return [f'{q.head},"sku":"SKU-{s}","qty":{n},"queue_depth":{d}' for s, n, d in zip(sku, qty, depth)]


def search_body(q):
    hits = np.floor(q.rng.pareto(1.2, q.n) * 40).astype(int).tolist()
    qlen = q.rng.integers(2 if q.op == "suggest served" else 3, 30, q.n).tolist()
    cached = (q.rng.random(q.n) < 0.9 - 0.25 * q.ch.minute_load(q.ts)).tolist()     # fewer hits when busy
    return [f'{q.head},"query_len":{n},"hits":{h},"cache_hit":{str(c).lower()},"duration_ms":{d},"trace_id":"{r}"'
            for n, h, c, d, r in zip(qlen, hits, cached, q.dur, q.ch.ids(q.n, 32))]


def login_body(q):
    return [f'{q.head},"user_id":{u},"mfa":false,"duration_ms":{d},"request_id":"{r}"'
            for u, d, r in zip(q.users, q.dur, q.rid)]


def login_failed_body(q):
    reason = q.rng.choice(("bad_password", "unknown_user", "locked"), q.n, p=(0.7, 0.25, 0.05)).tolist()
    att = q.rng.integers(1, 4, q.n).tolist()
    return [f'{q.head},"reason":"{x}","attempts":{a},"duration_ms":{d},"request_id":"{r}"'
            for x, a, d, r in zip(reason, att, q.dur, q.rid)]


def session_body(q):
    return [f'{q.head},"user_id":{u},"ttl_s":3600,"duration_ms":{d}' for u, d in zip(q.users, q.dur)]


def profile_body(q):
    return [f'{q.head},"user_id":{u},"rows":1,"duration_ms":{d},"request_id":"{r}"'
            for u, d, r in zip(q.users, q.dur, q.rid)]


def reset_email_body(q):
    depth = np.round(2 + 12 * q.ch.minute_load(q.ts) + q.rng.integers(0, 5, q.n))
    depth = q.ch.unusual("mailer", "queue_depth", q.ts, depth).astype(int).tolist()
    return [f'"level":"INFO","message":"email queued","template":"password_reset","user_id":{u},"queue_depth":{d}'
            for u, d in zip(q.users, depth)]


def bounce_body(q):
    return [f'{q.head},"smtp_code":550,"template":"order_confirmation","user_id":{u}' for u in q.users]


REQUEST_BODIES = {"cart updated": cart_body, "order status read": order_read_body, "webhook received": webhook_body,
                  "refund issued": refund_body, "stock checked": stock_body, "replenishment queued": replenish_body,
                  "search served": search_body, "suggest served": search_body, "login succeeded": login_body,
                  "login failed": login_failed_body, "session refreshed": session_body, "profile read": profile_body,
                  "password reset email queued": reset_email_body, "bounce received": bounce_body}


def order_flow(ch):
    """Orders across services sharing order_id: created -> reserved -> paid -> confirmed -> emailed."""
    rng = ch.rng
    ts = ch.arrivals(ch.req * ORDER_SHARE * (0.85 + 0.35 * bump(ch.hour, 20.5, 2.5)), "orders", "order created")
    n = len(ts)
    oid = np.arange(ch.state.order_id + 1, ch.state.order_id + 1 + n)
    ch.state.order_id += n
    users = rng.integers(10_000, 2_000_000, n)
    items = rng.integers(1, 7, n)
    total = (items * rng.integers(900, 9000, n)).tolist()
    tid = ch.ids(n, 32)
    oid_l, users_l, items_l = oid.tolist(), users.tolist(), items.tolist()
    d_created = ch.duration(ts, OP_MS["order created"], "orders", "order created").tolist()
    ch.add(ts, "orders", "order created",
           [f'"level":"INFO","message":"order created","order_id":{o},"user_id":{u},"items":{i},'
            f'"total_cents":{t},"duration_ms":{d},"trace_id":"{r}"'
            for o, u, i, t, d, r in zip(oid_l, users_l, items_l, total, d_created, tid)])
    t_res = ts + 0.03 + rng.random(n) * 0.2
    d_res = ch.duration(t_res, OP_MS["stock reserved"], "inventory", "stock reserved").tolist()
    sku = rng.integers(10000, 99999, n).tolist()
    left = rng.integers(0, 300, n).tolist()
    ch.add(t_res, "inventory", "stock reserved",
           [f'"level":"INFO","message":"stock reserved","order_id":{o},"sku":"SKU-{s}","qty":{i},"remaining":{x},'
            f'"duration_ms":{d},"trace_id":"{r}"' for o, s, i, x, d, r in zip(oid_l, sku, items_l, left, d_res, tid)])
    declined = rng.random(n) < DECLINE_P
    t_pay = t_res + 0.05 + rng.random(n) * 0.1
    op_pay = np.where(declined, "payment declined", "payment authorised").astype(object)
    d_pay = ch.duration(t_pay, OP_MS["payment authorised"], "payments", op_pay, sigma=0.5)
    d_pay_l = d_pay.tolist()
    provider = rng.choice(("stripe", "adyen"), n, p=(0.7, 0.3)).tolist()
    code = rng.choice(("card_declined", "insufficient_funds", "expired_card", "3ds_failed"), n).tolist()
    bodies = []
    for k in range(n):
        if declined[k]:
            bodies.append(f'"level":"WARNING","message":"payment declined","order_id":{oid_l[k]},'
                          f'"provider":"{provider[k]}","decline_code":"{code[k]}","amount_cents":{total[k]},'
                          f'"duration_ms":{d_pay_l[k]},"trace_id":"{tid[k]}"')
        else:
            bodies.append(f'"level":"INFO","message":"payment authorised","order_id":{oid_l[k]},'
                          f'"provider":"{provider[k]}","amount_cents":{total[k]},"duration_ms":{d_pay_l[k]},'
                          f'"trace_id":"{tid[k]}"')
    ch.add(t_pay + d_pay / 1000.0, "payments", op_pay, bodies)       # logged when the provider answers
    t_gw = t_pay + d_pay / 1000.0 + 0.01 + rng.random(n) * 0.05
    gw_ms = np.round((t_gw - ts) * 1000.0, 1).tolist()
    rid = ch.ids(n)
    status = np.where(declined, 402, 201).tolist()
    ch.add(t_gw, "gateway", "POST /api/orders",
           [f'"level":"info","message":"POST /api/orders {s}","status":{s},"duration_ms":{d},"bytes":{380 + 40 * i},'
            f'"upstream":"orders","request_id":"{r}","trace_id":"{t}","user_id":{u}'
            for s, d, i, r, t, u in zip(status, gw_ms, items_l, rid, tid, users_l)])
    ok = ~declined
    t_conf = t_pay[ok] + d_pay[ok] / 1000.0 + 0.002 + rng.random(ok.sum()) * 0.01
    d_conf = ch.duration(t_conf, OP_MS["order confirmed"], "orders", "order confirmed").tolist()
    oid_ok, tid_ok = oid[ok].tolist(), [t for t, k in zip(tid, ok.tolist()) if k]
    ch.add(t_conf, "orders", "order confirmed",
           [f'"level":"INFO","message":"order confirmed","order_id":{o},"duration_ms":{d},"trace_id":"{r}"'
            for o, d, r in zip(oid_ok, d_conf, tid_ok)])
    t_q = t_conf + 0.05 + rng.random(len(t_conf)) * 0.5
    depth = np.round(2 + 12 * ch.minute_load(t_q) + rng.integers(0, 5, len(t_q)))
    depth = ch.unusual("mailer", "queue_depth", t_q, depth).astype(int).tolist()
    ch.add(t_q, "mailer", "confirmation email",
           [f'"level":"INFO","message":"email queued","template":"order_confirmation","order_id":{o},'
            f'"queue_depth":{q},"trace_id":"{r}"' for o, q, r in zip(oid_ok, depth, tid_ok)])
    t_sent = t_q + 1.0 + rng.exponential(6.0, len(t_q)) * (0.5 + ch.minute_load(t_q))
    d_sent = ch.duration(t_sent, OP_MS["email sent"], "mailer", "confirmation email").tolist()
    size = rng.integers(14000, 22000, len(t_q)).tolist()
    ch.add(t_sent, "mailer", "confirmation email",
           [f'"level":"INFO","message":"email sent","template":"order_confirmation","order_id":{o},'
            f'"smtp_code":250,"bytes":{b},"duration_ms":{d},"trace_id":"{r}"'
            for o, b, d, r in zip(oid_ok, size, d_sent, tid_ok)])


def error_lines(ch):
    """The known warnings and errors of normal days (and their bursts), and new errors."""
    rng = ch.rng
    for source, op, level, msg, per_hour in KNOWN_ERRORS:
        # A burst is factor x the error's usual rate at a busy hour (load 1), whatever the hour.
        ts = ch.arrivals(per_hour / 60.0 * np.maximum(ch.load, 0.2), source, op, usual=per_hour / 60.0)
        n = len(ts)
        if not n:
            continue
        head = f'"level":"{ch.lv(source, level)}","message":{j(msg)}'
        rid = ch.ids(n)
        r = rng.integers(1, 4, n).tolist()
        if op == "upstream error":
            up = rng.choice(("orders", "inventory", "search", "users"), n).tolist()
            b = [f'{head},"status":502,"upstream":"{u}","retries":{x},"duration_ms":{d},"request_id":"{i}"'
                 for u, x, d, i in zip(up, r, np.round(rng.uniform(1000, 5000, n), 1).tolist(), rid)]
        elif op == "provider timeout":
            b = [f'{head},"provider":"stripe","timeout_ms":3000,"retries":{x},"trace_id":"{i}"'
                 for x, i in zip(r, ch.ids(n, 32))]
        elif op == "slow query":
            table = rng.choice(("orders", "order_items", "carts"), n).tolist()
            b = [f'{head},"table":"{t}","rows":{w},"duration_ms":{d}' for t, w, d in
                 zip(table, rng.integers(1000, 90000, n).tolist(), np.round(rng.uniform(1000, 4000, n), 1).tolist())]
        elif op == "warehouse error":
            b = [f'{head},"status":503,"retries":{x},"duration_ms":{d}'
                 for x, d in zip(r, np.round(rng.uniform(200, 2000, n), 1).tolist())]
        elif op == "shard timeout":
            b = [f'{head},"shard":{s},"timeout_ms":500,"trace_id":"{i}"'
                 for s, i in zip(rng.integers(0, 12, n).tolist(), ch.ids(n, 32))]
        elif op == "token expired":
            b = [f'{head},"user_id":{u},"request_id":"{i}"'
                 for u, i in zip(rng.integers(10_000, 2_000_000, n).tolist(), rid)]
        elif op == "smtp deferred":
            b = [f'{head},"smtp_code":421,"retries":{x}' for x in r]
        else:
            b = [f'{head},"retries":{x},"duration_ms":{d}'
                 for x, d in zip(r, np.round(rng.uniform(50, 900, n), 1).tolist())]
        ch.add(ts, source, op, b)
    for source, msg in NEW_ERRORS:
        for e in ch.plan.active("new_error", source, ch.t0, ch.t1):
            if e.detail["message"] != msg:
                continue
            per_min = np.full(len(ch.load), 0.0)
            mins = ch.t0 + 60.0 * np.arange(len(ch.load))
            per_min[(mins + 60 > e.start) & (mins < e.end)] = e.detail["per_min"]
            ts = ch.arrivals(per_min, source, "new:" + msg)
            ts = ts[e.inside(ts)]
            ch.plan.counts[e.id] += len(ts)
            rid = ch.ids(len(ts), 32)
            ch.add(ts, source, "new:" + msg, [f'"level":"{ch.lv(source, "error")}","message":{j(msg)},'
                                              f'"trace_id":"{r}"' for r in rid])


def runtime_lines(ch):
    """Every 30 s per service: uptime, heap (grows, dropped by GC), cpu, pools, queues; search's GC pauses."""
    rng = ch.rng
    st = ch.state
    for source in SOURCES:
        ts = ch.ticks(30.0, source)
        n = len(ts)
        load = ch.minute_load(ts)
        restart = [boot_time(e) for e in ch.plan.events if e.kind == "deploy" and e.source == source
                   and ch.t0 <= boot_time(e) < ch.t1]
        boot = np.where(ts >= restart[0], restart[0], st.boot[source]) if restart else np.full(n, st.boot[source])
        lo, hi = HEAP_MB[source]
        heap = np.zeros(n)
        gc = []
        reset_at = restart[0] if restart else None
        for k in range(n):
            if reset_at is not None and ts[k] >= reset_at:     # a fresh process starts with a small heap
                st.heap[source] = lo * 0.6
                reset_at = None
            st.heap[source] += (hi - lo) / 240.0 * (0.3 + load[k]) * rng.uniform(0.5, 1.5)
            if st.heap[source] > hi:
                before = st.heap[source]
                st.heap[source] = lo * rng.uniform(0.9, 1.1)
                gc.append((ts[k] + 0.01, before, st.heap[source]))
            heap[k] = st.heap[source]
        if restart:
            st.boot[source] = restart[0]
        uptime = (ts - boot).astype(int).tolist()
        cpu = np.round(np.clip(3 + 70 * load * rng.uniform(0.8, 1.2, n), 1, 99), 1).tolist()
        extra = [""] * n
        if source in POOLS:
            size = POOLS[source]
            use = np.clip(np.round(size * (0.1 + 0.45 * load) + rng.normal(0, 1.2, n)), 0, size - 2)
            use = ch.unusual(source, "pool_in_use", ts, use).astype(int)
            waiting = np.where(use >= size, rng.integers(8, 60, n), 0)
            extra = [f',"pool_in_use":{u},"pool_size":{size},"pool_waiting":{w}'
                     for u, w in zip(use.tolist(), waiting.tolist())]
        elif source in ("mailer", "inventory"):       # the send queue; the replenishment queue
            depth = np.round(1 + (10 if source == "mailer" else 25) * load + rng.integers(0, 4, n))
            depth = ch.unusual(source, "queue_depth", ts, depth).astype(int)
            extra = [f',"queue_depth":{q},"workers":4' for q in depth.tolist()]
        elif source == "gateway":
            conns = np.round(20 + 400 * load * rng.uniform(0.9, 1.1, n)).astype(int)
            extra = [f',"open_conns":{c},"goroutines":{c + 35}' for c in conns.tolist()]
        level = ch.lv(source, "info")
        ch.add(ts, source, "runtime stats",
               [f'"level":"{level}","message":"runtime stats","uptime_s":{u},"heap_mb":{h},"cpu_pct":{c}{x}'
                for u, h, c, x in zip(uptime, np.round(heap, 1).tolist(), cpu, extra)], house=True)
        if source == "search" and gc:
            t_gc = np.array([g[0] for g in gc])
            pause = np.round(rng.uniform(15, 120, len(gc)), 1).tolist()
            ch.add(t_gc, source, "gc pause",
                   [f'"level":"info","message":"gc pause","pause_ms":{p},"heap_before_mb":{b:.1f},'
                    f'"heap_after_mb":{a:.1f}' for p, (_, b, a) in zip(pause, gc)], house=True)


def periodic_lines(ch):
    """Every 5 min: cache stats, the warehouse sync; every 30 s: search's index refresh."""
    rng = ch.rng
    st = ch.state
    for source in CACHED:
        ts = ch.ticks(300.0, source) + 7.0
        load = ch.minute_load(ts)
        hit = np.round(np.clip(0.97 - 0.14 * load + rng.normal(0, 0.01, len(ts)), 0.5, 0.995), 3).tolist()
        ev = np.round(load * rng.uniform(50, 400, len(ts))).astype(int).tolist()
        rows = []
        for e in ev:
            st.entries[source] = max(1000.0, st.entries[source] + rng.normal(30, 200) - e * 0.1)
            rows.append(int(st.entries[source]))
        ch.add(ts, source, "cache stats", [f'"level":"{ch.lv(source, "info")}","message":"cache stats",'
                                           f'"hit_rate":{h},"entries":{n},"evictions":{e}'
                                           for h, n, e in zip(hit, rows, ev)], house=True)
    ts = ch.ticks(300.0, "inventory") + 120.0
    ts = ts[ts < ch.t1]
    changed = np.round(ch.minute_load(ts) * rng.uniform(20, 300, len(ts))).astype(int).tolist()
    dur = np.round(rng.uniform(800, 2500, len(ts)), 1).tolist()
    ch.add(ts, "inventory", "warehouse sync", [f'"level":"INFO","message":"warehouse sync finished","rows":48210,'
                                               f'"changed":{c},"duration_ms":{d}' for c, d in zip(changed, dur)],
           house=True)
    ts = ch.ticks(30.0, "search") + 11.0
    ts = ts[ts < ch.t1]
    docs = (1_250_000 + np.floor((ts - 1.7e9) / 60.0)).astype(int).tolist()
    dur = np.round(rng.uniform(20, 90, len(ts)) * (0.8 + ch.minute_load(ts)), 1).tolist()
    segs = rng.integers(18, 40, len(ts)).tolist()
    ch.add(ts, "search", "index refreshed", [f'"level":"info","message":"index refreshed","docs":{d},'
                                             f'"segments":{s},"duration_ms":{m}' for d, s, m in zip(docs, segs, dur)],
           house=True)


def batch_lines(ch):
    """The nightly report job (orders, 02:00) and session cleanup (users, 03:30)."""
    rng = ch.rng
    day = np.floor(ch.t0 / 86400.0) * 86400.0
    hour = (ch.t0 - day) / 3600.0
    if hour == 2.0:
        t = day + 2 * 3600 + 1.0 + rng.random()
        n = int(rng.integers(500, 700))
        ts = t + np.cumsum(rng.uniform(2.0, 4.0, n))
        rows = rng.integers(800, 1200, n)
        dur = np.round(rng.uniform(1500, 3500, n), 1).tolist()
        b = ['"level":"INFO","message":"report job started","job":"daily_sales"']
        b += [f'"level":"INFO","message":"report chunk written","job":"daily_sales","chunk":{k + 1},'
              f'"rows":{r},"duration_ms":{d}' for k, (r, d) in enumerate(zip(rows.tolist(), dur))]
        b.append(f'"level":"INFO","message":"report job finished","job":"daily_sales","rows":{int(rows.sum())},'
                 f'"duration_s":{ts[-1] - t:.1f}')
        ch.add(np.concatenate([[t], ts, [ts[-1] + 0.5]]), "orders", "report job", b, house=True)
    if hour == 3.0:
        t = day + 3.5 * 3600 + rng.random()
        n = int(rng.integers(250, 400))
        ts = t + np.cumsum(rng.uniform(1.0, 3.0, n))
        rows = rng.integers(2000, 10001, n)
        dur = np.round(rng.uniform(300, 1500, n), 1).tolist()
        b = [f'"level":"INFO","message":"expired sessions purged","rows":{r},"duration_ms":{d}'
             for r, d in zip(rows.tolist(), dur)]
        b.append(f'"level":"INFO","message":"session cleanup finished","rows":{int(rows.sum())},'
                 f'"duration_s":{ts[-1] - t:.1f}')
        ch.add(np.concatenate([ts, [ts[-1] + 0.3]]), "users", "session cleanup", b, house=True)


def startup_lines(ch):
    """A deployed service's start-up lines, once its lines have stopped for the deploy's gap."""
    rng = ch.rng
    for e in ch.plan.events:
        if e.kind != "deploy" or not ch.t0 <= boot_time(e) < ch.t1:
            continue
        s = e.source
        ch.state.version[s] = e.detail["version"]
        t = boot_time(e) + np.cumsum(rng.uniform(0.02, 0.09, 5))
        lv = ch.lv(s, "info")
        b = [f'"level":"{lv}","message":"starting {s}","version":"{e.detail["version"]}","pid":{rng.integers(2, 60000)}',
             f'"level":"{lv}","message":"config loaded","keys":{rng.integers(40, 90)}',
             f'"level":"{lv}","message":"connected to database","pool_size":{POOLS.get(s, 5)},'
             f'"duration_ms":{rng.uniform(20, 200):.1f}',
             f'"level":"{lv}","message":"listening","port":8080',
             f'"level":"{lv}","message":"ready","startup_ms":{(t[-1] - boot_time(e)) * 1000:.0f}']
        ch.add(t, s, "startup", b, house=True)


GENERATORS = (gateway_lines, request_lines, order_flow, error_lines, runtime_lines, periodic_lines, batch_lines,
              startup_lines)


# ---------------------------------------------------------------- the file and its labels

def generate(out_dir, days=3.0, seed=0, lines_per_day=DEFAULT_LINES_PER_DAY, start=START, warmup_days=1.0):
    """Write services.jsonl and labels.json into out_dir; lines_per_day is about a weekday's volume
    (weekends are lower)."""
    os.makedirs(out_dir, exist_ok=True)
    t_start = parse_time(start)
    t_end = t_start + days * 86400.0
    t_warm = t_start + min(warmup_days, days) * 86400.0
    events = schedule(np.random.default_rng([seed, 1]), t_start, t_end, t_warm)
    rng = np.random.default_rng([seed, 2])
    n_min = int(np.ceil(days * 1440)) + 1
    load = load_curve(rng, t_start, n_min)
    per_req, errors = lines_per_request()
    weekday = day_curve(np.arange(1440) / 60.0, False).sum()
    budget = max(lines_per_day - housekeeping_per_day() - errors * weekday, 0.1 * lines_per_day)
    base = budget / (per_req * weekday)
    plan = Plan(events)
    state = State(rng, t_start)
    path = os.path.join(out_dir, LOG_FILE)
    lines = 0
    with open(path, "w", encoding="utf-8") as fh:
        t0 = t_start
        while t0 < t_end:
            t1 = min(t0 + CHUNK_S, t_end)
            ch = Chunk(rng, plan, state, load, t_start, t0, t1, base)
            for gen in GENERATORS:
                gen(ch)
            out = ch.finish()
            if out:
                fh.write("\n".join(out) + "\n")
            lines += len(out)
            t0 = t1
    return write_labels(out_dir, path, plan, seed, days, lines_per_day, lines, t_start, t_end, t_warm)


def write_labels(out_dir, path, plan, seed, days, lines_per_day, lines, t_start, t_end, t_warm):
    def rec(e):
        detail = e.detail | ({"lines_removed": plan.removed[e.id]} if e.kind in REMOVING else {})
        return {"kind": e.kind, "source": e.source, "start": e.start, "end": e.end, "start_iso": iso(e.start),
                "end_iso": iso(e.end), "detail": detail}
    incidents = [{"id": e.id} | rec(e) | {"n_lines": plan.counts[e.id]} for e in plan.events if e.id >= 0]
    unlabelled = [rec(e) for e in plan.events if e.id < 0]
    doc = {"version": 1, "family": "svc", "seed": seed, "days": days, "lines_per_day": lines_per_day, "fmt": "jsonl",
           "start": t_start, "end": t_end, "warmup_end": t_warm, "start_iso": iso(t_start), "end_iso": iso(t_end),
           "sources": list(SOURCES), "files": [LOG_FILE], "lines_per_file": {LOG_FILE: lines},
           "incidents": incidents, "unlabelled": unlabelled}
    labels_path = os.path.join(out_dir, LABELS_FILE)
    with open(labels_path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return SvcWorkload(out_dir=out_dir, files=[path], labels_path=labels_path, lines=lines, seed=seed,
                       start=t_start, end=t_end, warmup_end=t_warm, incidents=incidents, unlabelled=unlabelled)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines-per-day", type=int, default=DEFAULT_LINES_PER_DAY)
    args = p.parse_args(argv)
    w = generate(args.out_dir, args.days, args.seed, args.lines_per_day)
    print(f"{w.files[0]}: {w.lines} lines, {len(w.incidents)} labelled incidents, {len(w.unlabelled)} unlabelled "
          f"happenings; labels in {w.labels_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
