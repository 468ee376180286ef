"""The infrastructure workload family of bench/detect_bench.py: one rsyslog file of a small fleet of Linux hosts.

Held out by construction: written as an operator who runs such hosts would, without reading the
detector, its parsers or the other generators; nobody tunes on it (bench/README.md). Only the label
layout of bench/svcgen.py is shared, so anomaly_detector/workload/scoring.py scores it.

One file `syslog.log` in classic RFC 3164 style as a central rsyslog writes it, in time order:
`Mar  5 00:00:02 db-1 postgres[4123]: [7-1] LOG:  duration: 152.337 ms  statement: ...` (no year, no
level field: some messages carry ERROR/FATAL/[error]/level=info in their text, as their program
writes it). Hosts and programs: lb-1 (haproxy request log, kernel UFW blocks, sshd facing the
internet), web-1/web-2 (nginx access and error log, the shop-api Java service with its GC log),
db-1 (postgres with backend pids, pgbouncer stats, a pg-conncheck cron script, pg-backup),
cache-1 (redis-server RDB saves), batch-1 (report-worker jobs, postfix relay, dockerd), log-1
(rsyslogd); everywhere sshd, CRON, systemd, systemd-logind, kernel and a disk-usage script.

Normal behaviour: requests follow the hour (night trough, late-morning and evening peaks) and the
weekday (the weekend lower and later); latencies, connections, checkpoint buffers and pgbouncer
rates follow load; haproxy health checks on the web hosts every 5 s, postgres checkpoints every 5
min, pgbouncer stats every minute, cron jobs on the minute, hourly run-parts, logrotate at 00:00, a
nightly full backup on db-1 at 02:00 (~40 min) and an incremental at :15 every hour; admins log in
by ssh in working hours; internet scanners fail ssh logins on lb-1 all day at a steady rate; a few
known errors a day (nginx upstream timeouts, postgres deadlocks, Hikari pool timeouts); disk usage
drifts up slowly.

Unlabelled happenings (labels.json "unlabelled"): one package upgrade a day restarting one program
(its lines stop 20-60 s, systemd and its start-up lines, a new pid) and one log gap of the whole file
(rsyslogd restarted: 2-8 min without any line).

Labelled incidents: after a warm-up day, one of each of KINDS a post-warm-up day between 06:30 and
23:30, at least SEPARATION_S from each other and from the happenings. Source convention (labels.json
"source_convention"): a label's source is the PROGRAM as syslog tags it, without host or pid
("postgres", "sshd", "report-worker", "postfix" for postfix/smtp and friends), as the shop family
does; its host is in detail.host. scoring.program_source() reads a detection's source "db-1
postgres[4123]" as "postgres". n_lines counts the lines the incident added or changed (0 for a
silence, a drop or a lost workflow step, whose lines are in detail.lines_removed).

    python bench/infragen.py OUT_DIR [--days 3] [--seed 0] [--lines-per-day 300000]

Neighbours: bench/detect_bench.py (`--family infra`), bench/explain_labels.py, workload/scoring.py.
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
LOG_FILE = "syslog.log"
LABELS_FILE = "labels.json"
KINDS = ("error_burst", "new_error", "latency_drift", "broken_workflow", "unusual_value", "volume_spike",
         "volume_drop", "silent_source")
REMOVING = ("silent_source", "volume_drop", "broken_workflow")
SOURCE_CONVENTION = "program"
PROGRAMS = ("haproxy", "nginx", "shop-api", "postgres", "pgbouncer", "pg-conncheck", "pg-backup", "redis-server",
            "report-worker", "postfix", "dockerd", "sshd", "CRON", "systemd", "systemd-logind", "kernel",
            "disk-usage", "rsyslogd")
HOSTS = ("lb-1", "web-1", "web-2", "db-1", "cache-1", "batch-1")
SEPARATION_S = 1800.0
INCIDENT_HOURS = (6.5, 23.5)
DURATION_MIN = {"error_burst": (10, 30), "new_error": (10, 30), "latency_drift": (30, 90),
                "broken_workflow": (20, 60), "unusual_value": (10, 40), "volume_spike": (10, 30),
                "volume_drop": (30, 120), "silent_source": (15, 90)}
# (program, host, variant) an incident of each kind may hit.
TARGETS = {
    "error_burst": (("nginx", "web-1", "upstream_timeout"), ("postgres", "db-1", "deadlock"),
                    ("shop-api", "web-2", "pool_timeout")),
    "new_error": (("kernel", "batch-1", "oom"), ("kernel", "db-1", "ext4"), ("postgres", "db-1", "no_space"),
                  ("redis-server", "cache-1", "rdb_error")),
    "latency_drift": (("postgres", "db-1", "all"), ("postgres", "db-1", "one_query"),
                      ("report-worker", "batch-1", "all"), ("report-worker", "batch-1", "one_type")),
    "broken_workflow": (("postfix", "batch-1", "delivery"), ("report-worker", "batch-1", "upload"),
                        ("pg-backup", "db-1", "upload")),
    "unusual_value": (("pg-conncheck", "db-1", "max_connections"), ("pgbouncer", "db-1", "wait"),
                      ("shop-api", "web-1", "gc_pause")),
    "volume_spike": (("sshd", "lb-1", "brute_force"), ("kernel", "lb-1", "port_scan")),
    "volume_drop": (("postfix", "batch-1", "mail"), ("report-worker", "batch-1", "jobs")),
    "silent_source": (("pgbouncer", "db-1", "stuck"), ("report-worker", "batch-1", "hung"),
                      ("CRON", "web-2", "crond_dead"), ("redis-server", "cache-1", "hung")),
}
RESTARTS = (("db-1", "postgres", "PostgreSQL Cluster 14-main"), ("cache-1", "redis-server", "Advanced key-value store"),
            ("web-1", "shop-api", "Shop API"), ("web-2", "shop-api", "Shop API"),
            ("batch-1", "report-worker", "Report worker"))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# method, path pattern, weekday share of requests, base ms, bytes, shop-api logs a line
ENDPOINTS = (
    ("GET", "/", 0.10, 9.0, 5400, None),
    ("GET", "/static/app.{h}.js", 0.13, 1.0, 182311, None),
    ("GET", "/images/p/{id}.webp", 0.09, 2.0, 34120, None),
    ("GET", "/api/products/{id}", 0.22, 25.0, 2100, None),
    ("GET", "/api/search?q={q}", 0.14, 60.0, 8200, "search"),
    ("GET", "/api/cart", 0.11, 15.0, 900, None),
    ("POST", "/api/cart/items", 0.08, 30.0, 310, "cart"),
    ("POST", "/api/orders", 0.03, 120.0, 450, "order"),
    ("GET", "/api/orders/{id}", 0.06, 20.0, 1200, None),
    ("POST", "/api/login", 0.04, 80.0, 350, "login"),
)
WORDS = ("shoes", "rain jacket", "tent", "usb cable", "coffee", "lamp", "socks", "backpack", "gloves", "kettle",
         "phone case", "desk", "chair", "headphones", "bottle")
QUERIES = (("SELECT o.* FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.user_id = $1 ORDER BY "
            "o.created_at DESC LIMIT 20", 180.0),
           ("SELECT p.id, p.name, p.price FROM products p WHERE p.search_vector @@ plainto_tsquery($1) LIMIT 50", 140.0),
           ("UPDATE stock SET reserved = reserved + $1 WHERE sku = $2", 120.0),
           ("SELECT sum(total) FROM orders WHERE created_at >= $1 AND created_at < $2 GROUP BY date_trunc('hour', "
            "created_at)", 420.0))
JOB_TYPES = (("invoice-pdf", 900.0), ("packing-slip", 400.0), ("sales-export", 2600.0))
ADMINS = (("alice", "10.0.9.5", 1001), ("bob", "10.0.9.7", 1002), ("carol", "10.0.9.12", 1003))
SCAN_USERS = ("admin", "test", "ubuntu", "oracle", "user", "git", "postgres", "ftpuser", "guest", "deploy", "pi")


@dataclass
class Event:
    """A labelled incident (id >= 0), or (kind "restart", "log_gap") an unlabelled happening."""

    kind: str
    source: str
    start: float
    end: float
    detail: dict = field(default_factory=dict)
    id: int = -1

    def inside(self, ts):
        return (ts >= self.start) & (ts < self.end)

    def hits(self, host, prog):
        return self.source == prog and self.detail.get("host") == host


@dataclass
class InfraWorkload:
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
    sources: tuple = PROGRAMS
    unlabelled: list = field(default_factory=list)


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- schedule

def schedule(rng, t_start, t_end, t_warm):
    """Unlabelled happenings first (a restart a day, one log gap), then the labelled incidents."""
    events = []
    day = t_start
    while day < t_end:
        host, prog, unit = RESTARTS[rng.integers(len(RESTARTS))]
        s = day + rng.uniform(9.0, 17.0) * 3600.0
        if s + 120 < t_end:
            events.append(Event("restart", prog, s, s + rng.uniform(20, 60), {"host": host, "unit": unit}))
        day += 86400.0
    gap_from = t_warm if t_end - t_warm > 7200 else t_start
    for _ in range(200):
        s = rng.uniform(gap_from + 3600.0, max(gap_from + 3600.0, t_end - 3600.0))
        e = Event("log_gap", "rsyslogd", s, s + rng.uniform(120, 480), {"host": "log-1"})
        if s + 600 < t_end and all(e.end + SEPARATION_S <= o.start or s >= o.end + SEPARATION_S for o in events):
            events.append(e)
            break
    n = 0
    day = t_warm
    while day + INCIDENT_HOURS[1] * 3600.0 <= t_end + 1e-6:
        for kind in rng.permutation(KINDS):
            e = place(rng, str(kind), day, events)
            if e is not None:
                e.id = n
                n += 1
                events.append(e)
        day += 86400.0
    return events


def place(rng, kind, day, events):
    targets = TARGETS[kind]
    if kind == "new_error":         # never seen before: each new error once a workload while there are unused ones
        seen = {e.detail.get("variant") for e in events if e.kind == kind}
        targets = [t for t in targets if t[2] not in seen] or targets
    prog, host, variant = targets[rng.integers(len(targets))]
    lo, hi = DURATION_MIN[kind]
    for _ in range(500):
        dur = rng.uniform(lo, hi) * 60.0
        s = day + rng.uniform(INCIDENT_HOURS[0] * 3600.0, INCIDENT_HOURS[1] * 3600.0 - dur)
        if variant == "upload" and prog == "pg-backup":
            s = np.floor(s / 3600.0) * 3600.0 + 600.0       # the hourly :15 run falls inside
            dur = max(dur, 1500.0)
        if all(s + dur + SEPARATION_S <= o.start or s >= o.end + SEPARATION_S for o in events):
            return Event(kind, prog, float(s), float(s + dur), incident_detail(rng, kind, host, variant))
    return None


def incident_detail(rng, kind, host, variant):
    d = {"host": host, "variant": variant}
    if kind == "latency_drift":
        d["factor"] = round(float(rng.uniform(2.0, 4.0)), 2)
        if variant == "one_query":
            d["query"] = int(rng.integers(3))            # one of the three frequent statements
        if variant == "one_type":
            d["job_type"] = JOB_TYPES[rng.integers(2)][0]     # one of the two frequent job types
    elif kind in ("error_burst", "volume_spike"):
        d["factor"] = round(float(rng.uniform(10, 30) if kind == "error_burst" else rng.uniform(5, 15)), 1)
        if variant == "brute_force" or variant == "port_scan":
            d["network"] = f"185.{rng.integers(100, 230)}.{rng.integers(0, 255)}.0/24"
    elif kind == "volume_drop":
        d["factor"] = round(float(rng.uniform(0.15, 0.4)), 2)
    elif kind == "unusual_value":
        d["factor"] = {"wait": 10.0, "gc_pause": 20.0}.get(variant, 1.0)
    return d


# ---------------------------------------------------------------- load

def bump(hour, centre, width):
    """A daily bump: the distance to centre wraps around midnight, so the curve has no step there."""
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def day_curve(hour, weekend):
    h = hour - (1.0 if weekend else 0.0)
    return 0.12 + 0.9 * bump(h, 11.0, 2.8) + 0.8 * bump(h, 20.5, 2.2) + 0.3 * bump(h, 15.5, 2.0)


def load_curve(rng, t_start, n_min):
    """Load per minute, 1.0 = a weekday's mean; weekends at ~0.7, slow AR noise on top."""
    t = t_start + 60.0 * np.arange(n_min)
    hour = (t % 86400.0) / 3600.0
    weekday = ((t // 86400.0).astype(np.int64) + 3) % 7          # 1970-01-01 was a Thursday (3)
    # The weekend comes in over the night (a 6-hour blend), not as a step at midnight.
    weekend = np.convolve(np.pad((weekday >= 5).astype(float), 180, mode="edge"), np.ones(360) / 360, "valid")[:n_min]
    norm = day_curve(np.arange(1440) / 60.0, False).mean()
    base = (weekend * 0.7 * day_curve(hour, True) + (1.0 - weekend) * day_curve(hour, False)) / norm
    eps = rng.normal(0.0, 0.03, n_min)
    noise = np.empty(n_min)
    acc = 0.0
    for i in range(n_min):
        acc = 0.95 * acc + eps[i]
        noise[i] = acc
    return base * np.exp(noise)


# ---------------------------------------------------------------- generation

class Gen:
    """Streams of lines (timestamps, 'host tag: message' bodies) with the incidents applied."""

    def __init__(self, rng, events, t_start, t_end, load):
        self.rng = rng
        self.events = events
        self.t_start = t_start
        self.t_end = t_end
        self.load = load
        self.n_min = len(load)
        self.counts = {e.id: 0 for e in events if e.id >= 0}
        self.removed = {e.id: 0 for e in events if e.id >= 0}
        self.parts = []
        self.pids = {}
        self.next_pid = 1000 + int(rng.integers(0, 2000))

    # ---- helpers
    def of(self, kind, prog=None, host=None):
        return [e for e in self.events if e.kind == kind and (prog is None or e.source == prog)
                and (host is None or e.detail.get("host") == host)]

    def lnorm(self, ts):
        """Load at ts, about 0..2."""
        m = np.clip(((ts - self.t_start) // 60.0).astype(np.int64), 0, self.n_min - 1)
        return self.load[m]

    def arrivals(self, per_min_at_1, follow_load=True):
        """Poisson arrivals over the whole span; per_min_at_1 lines a minute at load 1."""
        lam = per_min_at_1 * (self.load if follow_load else np.ones(self.n_min))
        counts = self.rng.poisson(lam)
        ts = np.repeat(self.t_start + 60.0 * np.arange(self.n_min), counts) + self.rng.random(counts.sum()) * 60.0
        return np.sort(ts[ts < self.t_end])

    def periodic(self, period, jitter=0.0, phase=0.0):
        ts = self.t_start + phase + np.arange(0.0, self.t_end - self.t_start - phase, period)
        if jitter:
            ts = ts + self.rng.random(len(ts)) * jitter
        return ts[ts < self.t_end]

    def uniform_in(self, e, n):
        return np.sort(e.start + self.rng.random(n) * (e.end - e.start))

    def new_pid(self):
        self.next_pid += int(self.rng.integers(1, 400))
        if self.next_pid > 4_000_000:
            self.next_pid = 1200
        return self.next_pid

    def pid(self, host, prog):
        """The main pid of a daemon, as an array function of time (a restart gives it a new one)."""
        key = (host, prog)
        if key not in self.pids:
            first = self.new_pid()
            changes = [(e.end, self.new_pid()) for e in self.of("restart", prog, host)]
            self.pids[key] = (first, changes)
        return self.pids[key]

    def pid_at(self, host, prog, ts):
        first, changes = self.pid(host, prog)
        out = np.full(len(ts), first, dtype=np.int64)
        for t, p in changes:
            out[ts >= t] = p
        return out

    def emit(self, host, tag, ts, bodies, prog=None, counted=None):
        """Add lines; the generic removals (restarts, log gaps, silences) apply here. counted: the
        incident each line belongs to (-1 none), for n_lines."""
        prog = prog or tag
        ts = np.asarray(ts, dtype=float)
        keep = np.ones(len(ts), dtype=bool)
        for e in self.events:
            if e.kind == "log_gap" or (e.kind in ("restart", "silent_source") and e.hits(host, prog)):
                gone = keep & e.inside(ts)
                if e.id >= 0:
                    self.removed[e.id] += int(gone.sum())
                keep &= ~gone
        if counted is not None:
            counted = np.asarray(counted)
            for i in np.unique(counted[keep & (counted >= 0)]):
                self.counts[int(i)] += int((keep & (counted == i)).sum())
        head = f"{host} {tag}: " if tag else f"{host} "
        self.parts.append((ts[keep], [head + b for b, k in zip(bodies, keep) if k]))

    def emit_pid(self, host, prog, ts, bodies, counted=None):
        """Lines tagged prog[pid] with the daemon's main pid."""
        pids = self.pid_at(host, prog, ts)
        self.emit(host, "", ts, [f"{prog}[{p}]: {b}" for p, b in zip(pids, bodies)], prog=prog, counted=counted)

    def drop(self, prog, host, ts):
        """Mask of the arrivals a volume_drop keeps (1 - factor of them go); counts those gone."""
        keep = np.ones(len(ts), dtype=bool)
        for e in self.of("volume_drop", prog, host):
            gone = e.inside(ts) & (self.rng.random(len(ts)) >= e.detail["factor"])
            self.removed[e.id] += int(gone.sum())
            keep &= ~gone
        return keep


def stamp_cache(t_start):
    """int second -> 'Mar  5 00:00:02' (the day part cached per day)."""
    days = {}

    def stamp(sec):
        d = sec // 86400
        if d not in days:
            t = datetime.fromtimestamp(d * 86400, timezone.utc)
            days[d] = (f"{MONTHS[t.month - 1]} {t.day:>2} ", f"{t.day:02d}/{MONTHS[t.month - 1]}/{t.year}")
        r = sec - d * 86400
        return days[d], f"{r // 3600:02d}:{r % 3600 // 60:02d}:{r % 60:02d}"
    return stamp


# ---------------------------------------------------------------- web traffic

def web_traffic(g, base_per_min):
    """haproxy on lb-1 and nginx on web-1/web-2 log every request; shop-api logs the API work."""
    rng = g.rng
    ts = g.arrivals(base_per_min)
    n = len(ts)
    shares = np.array([e[2] for e in ENDPOINTS])
    ep = rng.choice(len(ENDPOINTS), n, p=shares / shares.sum())
    srv = rng.integers(1, 3, n)
    load = g.lnorm(ts)
    base_ms = np.array([e[3] for e in ENDPOINTS])[ep]
    ms = base_ms * (0.8 + 0.35 * load) * rng.lognormal(0.0, 0.35, n)
    status = np.where(rng.random(n) < 0.012, 404, np.where(rng.random(n) < 0.004, 499, 200))
    status = np.where((np.array([e[1] for e in ENDPOINTS])[ep] == "/api/login") & (status == 200), 302, status)
    size = (np.array([e[4] for e in ENDPOINTS])[ep] * rng.uniform(0.6, 1.4, n)).astype(np.int64)
    ip = rng.integers(0, 255, (n, 2))
    port = rng.integers(32768, 61000, n)
    conns = (8 + 40 * load * rng.uniform(0.8, 1.2, n)).astype(np.int64)
    stamp = stamp_cache(g.t_start)
    h_bodies, n_bodies, a_ts, a_host, a_bodies = [], [], [], [], []
    ids = rng.integers(1, 90000, n)
    for i in range(n):
        m, path_t, _, _, _, api = ENDPOINTS[ep[i]]
        path = path_t.format(h="3f9a1c", id=ids[i], q=WORDS[ids[i] % len(WORDS)].replace(" ", "+"))
        (_, clf_day), hms = stamp(int(ts[i]))
        client = f"{'198.51.100' if ip[i, 0] < 128 else '203.0.113'}.{ip[i, 1]}"
        t_ms = int(ms[i])
        h_bodies.append(f"{client}:{port[i]} [{clf_day}:{hms}.{int(ts[i] % 1 * 1000):03d}] www~ web_back/web-{srv[i]} "
                        f"0/0/0/{t_ms}/{t_ms + 1} {status[i]} {size[i]} - - ---- {conns[i]}/{conns[i]}/"
                        f"{conns[i] - 2}/{conns[i] // 2}/0 0/0 \"{m} {path} HTTP/1.1\"")
        up = ms[i] / 1000.0
        n_bodies.append(f"{client} - - [{clf_day}:{hms} +0000] \"{m} {path} HTTP/1.1\" {status[i]} {size[i]} "
                        f"\"https://shop.example.com/\" \"Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 "
                        f"Firefox/123.0\" rt={up + 0.001:.3f} uct=0.000 uht={up:.3f} urt={up:.3f}")
        if api and status[i] != 404:
            a_ts.append(ts[i] + up)
            a_host.append(srv[i])
            a_bodies.append(api_line(api, ids[i], t_ms, rng))
    g.emit_pid("lb-1", "haproxy", ts, h_bodies)
    for s in (1, 2):
        g.emit(f"web-{s}", "nginx", ts[srv == s], [b for b, k in zip(n_bodies, srv == s) if k])
    a_ts, a_host = np.array(a_ts), np.array(a_host)
    for s in (1, 2):
        sel = a_host == s
        g.emit_pid(f"web-{s}", "shop-api", a_ts[sel], [b for b, k in zip(a_bodies, sel) if k])
    return len(a_ts)


def api_line(api, ident, t_ms, rng):
    thread = f"[http-nio-8080-exec-{ident % 40 + 1}]"
    if api == "search":
        return f"{thread} SearchController: search q=\"{WORDS[ident % len(WORDS)]}\" hits={ident % 180} took={t_ms}ms"
    if api == "cart":
        return f"{thread} CartService: cart {ident * 7 % 99991} add sku=SKU-{ident % 5000:05d} qty={ident % 3 + 1}"
    if api == "order":
        return (f"{thread} OrderService: order {400000 + ident} placed user={ident % 7919} items={ident % 5 + 1} "
                f"total={(ident % 30000) / 100 + 5:.2f} EUR took={t_ms}ms")
    if rng.random() < 0.05:
        return f"{thread} AuthController: login failed user=u{ident % 7919}: bad credentials"
    return f"{thread} AuthController: login ok user=u{ident % 7919} took={t_ms}ms"


def health_checks(g):
    """haproxy checks each web server every 5 s; nginx logs the check."""
    stamp = stamp_cache(g.t_start)
    for s, phase in ((1, 0.4), (2, 2.9)):
        ts = g.periodic(5.0, 0.05, phase)
        rt = g.rng.uniform(0.0, 0.002, len(ts))
        bodies = []
        for t, r in zip(ts, rt):
            (_, day), hms = stamp(int(t))
            bodies.append(f"10.0.0.5 - - [{day}:{hms} +0000] \"GET /healthz HTTP/1.1\" 200 2 \"-\" "
                          f"\"haproxy/2.4 check\" rt={r:.3f} uct=0.000 uht={r:.3f} urt={r:.3f}")
        g.emit(f"web-{s}", "nginx", ts, bodies)


def gc_log(g):
    """shop-api's G1 young pauses, more often under load; unusual_value: a pause x20."""
    for s in (1, 2):
        host = f"web-{s}"
        ts = g.arrivals(2.0)
        n = len(ts)
        pause = g.rng.lognormal(np.log(9.0), 0.3, n) * (0.9 + 0.2 * g.lnorm(ts))
        counted = np.full(n, -1)
        for e in g.of("unusual_value", "shop-api", host):
            inside = e.inside(ts)
            pause[inside] *= e.detail["factor"]
            counted[inside] = e.id
        before = g.rng.integers(500, 900, n)
        after = (before * g.rng.uniform(0.15, 0.3, n)).astype(np.int64)
        bodies = [f"[gc] GC({i + 1}) Pause Young (Normal) (G1 Evacuation Pause) {b}M->{a}M(1024M) {p:.3f}ms"
                  for i, (b, a, p) in enumerate(zip(before, after, pause))]
        g.emit_pid(host, "shop-api", ts, bodies, counted=counted)


def web_errors(g):
    """Known errors: nginx upstream timeouts, Hikari pool timeouts (error_burst: x10-30 their rate)."""
    rng = g.rng
    per_min = 4.0 / 60.0          # about 4 an hour at load 1
    for s in (1, 2):
        host = f"web-{s}"
        ts, counted = burst(g, g.arrivals(per_min), "nginx", host, per_min)
        stamp = stamp_cache(g.t_start)
        bodies = []
        for t in ts:
            (_, day), hms = stamp(int(t))
            w = WORDS[int(t) % len(WORDS)].replace(" ", "+")
            d = datetime.fromtimestamp(int(t), timezone.utc)
            bodies.append(f"{d:%Y/%m/%d %H:%M:%S} [error] {1200 + s}#{1200 + s}: *{int(t) % 999983} upstream timed out "
                          f"(110: Connection timed out) while reading response header from upstream, client: "
                          f"198.51.100.{int(t) % 250}, server: shop.example.com, request: \"GET /api/search?q={w} "
                          f"HTTP/1.1\", upstream: \"http://127.0.0.1:8080/api/search?q={w}\", host: \"shop.example.com\"")
        g.emit(host, "nginx", ts, bodies, counted=counted)
        ts, counted = burst(g, g.arrivals(per_min * 0.75), "shop-api", host, per_min * 0.75)
        bodies = [f"[http-nio-8080-exec-{rng.integers(1, 41)}] ERROR HikariPool-1 - Connection is not available, "
                  f"request timed out after 30000ms." for _ in ts]
        g.emit_pid(host, "shop-api", ts, bodies, counted=counted)


def burst(g, ts, prog, host, per_min):
    """Add an error_burst's extra lines (factor - 1 times the rate at load 1) to ts; (ts, counted)."""
    extra, ids = [ts], [np.full(len(ts), -1)]
    for e in g.of("error_burst", prog, host):
        n = g.rng.poisson(per_min * (e.detail["factor"] - 1.0) * (e.end - e.start) / 60.0 * 1.3)
        extra.append(g.uniform_in(e, max(n, 3)))
        ids.append(np.full(len(extra[-1]), e.id))
    ts = np.concatenate(extra)
    ids = np.concatenate(ids)
    order = np.argsort(ts, kind="stable")
    return ts[order], ids[order]


# ---------------------------------------------------------------- database host

def postgres(g, per_min_slow):
    """Slow statements (backend pids), checkpoints, autovacuum, report-worker connections, errors."""
    rng = g.rng
    ts = g.arrivals(per_min_slow)
    n = len(ts)
    q = rng.choice(len(QUERIES), n, p=[0.4, 0.3, 0.2, 0.1])
    ms = np.array([x[1] for x in QUERIES])[q] * (0.8 + 0.3 * g.lnorm(ts)) * rng.lognormal(0.0, 0.3, n)
    counted = np.full(n, -1)
    for e in g.of("latency_drift", "postgres", "db-1"):
        inside = e.inside(ts) & ((q == e.detail["query"]) if "query" in e.detail else True)
        ms[inside] *= e.detail["factor"]
        counted[inside] = e.id
    backends = backend_pids(g, ts)
    bodies = [f"postgres[{p}]: [{k % 40 + 2}-1] LOG:  duration: {d:.3f} ms  statement: {QUERIES[j][0]}"
              for k, (p, d, j) in enumerate(zip(backends, ms, q))]
    g.emit("db-1", "", ts, bodies, prog="postgres", counted=counted)
    checkpoints(g)
    pg_errors(g)


def backend_pids(g, ts):
    """Pooled connections: about 20 backends, each replaced now and then."""
    pool = np.array([g.new_pid() for _ in range(20)])
    out = np.empty(len(ts), dtype=np.int64)
    for i in range(len(ts)):
        k = g.rng.integers(20)
        if g.rng.random() < 0.01:
            pool[k] = g.new_pid()
        out[i] = pool[k]
    return out


def checkpoints(g):
    ts = g.periodic(300.0, 0.5, 17.0)
    load = g.lnorm(ts)
    buf = (200 + 2400 * load * g.rng.uniform(0.7, 1.3, len(ts))).astype(np.int64)
    pid = g.pid_at("db-1", "postgres", ts) + 3          # the checkpointer
    out_ts, bodies = [], []
    for t, b, p in zip(ts, buf, pid):
        w = min(26.9, b / 90.0)
        out_ts += [t, t + w + 0.05]
        bodies += [f"postgres[{p}]: [{int(t) % 97 + 1}-1] LOG:  checkpoint starting: time",
                   f"postgres[{p}]: [{int(t) % 97 + 2}-1] LOG:  checkpoint complete: wrote {b} buffers "
                   f"({100 * b / 16384:.1f}%); 0 WAL file(s) added, 0 removed, {b // 900} recycled; write={w:.3f} s, "
                   f"sync=0.0{b % 90:02d} s, total={w + 0.05:.3f} s; sync files={b // 40}, longest=0.004 s, "
                   f"average=0.001 s; distance={b * 8} kB, estimate={b * 9} kB"]
    g.emit("db-1", "", np.array(out_ts), bodies, prog="postgres")
    ts = g.arrivals(4.0 / 60.0)
    tables = ("orders", "order_items", "cart_items", "stock", "sessions")
    bodies = [f"postgres[{g.new_pid()}]: [1-1] LOG:  automatic analyze of table \"shop.public.{tables[i % 5]}\" "
              f"system usage: CPU: user: 0.{i % 90:02d} s, system: 0.01 s, elapsed: 0.{(i * 7) % 90 + 5:02d} s"
              for i in range(len(ts))]
    g.emit("db-1", "", ts, bodies, prog="postgres")


def pg_errors(g):
    """Deadlocks (error_burst target), duplicate keys, a rare auth failure; new_error: disk full."""
    ts, counted = burst(g, g.arrivals(2.0 / 60.0), "postgres", "db-1", 2.0 / 60.0)
    pids = backend_pids(g, ts)
    out_ts, bodies, ids = [], [], []
    for t, p, c in zip(ts, pids, counted):
        out_ts += [t, t]
        ids += [c, c]
        bodies += [f"postgres[{p}]: [{int(t) % 50 + 3}-1] ERROR:  deadlock detected",
                   f"postgres[{p}]: [{int(t) % 50 + 3}-2] DETAIL:  Process {p} waits for ShareLock on transaction "
                   f"{int(t) // 7 % 999999}; blocked by process {p + 17}."]
    g.emit("db-1", "", np.array(out_ts), bodies, prog="postgres", counted=ids)
    ts = g.arrivals(0.3 / 60.0)
    bodies = [f"postgres[{g.new_pid()}]: [9-1] ERROR:  duplicate key value violates unique constraint "
              f"\"orders_idempotency_key\"" for _ in ts]
    g.emit("db-1", "", ts, bodies, prog="postgres")
    ts = g.arrivals(0.1 / 60.0, follow_load=False)
    bodies = [f"postgres[{g.new_pid()}]: [1-1] FATAL:  password authentication failed for user \"postgres\""
              for _ in ts]
    g.emit("db-1", "", ts, bodies, prog="postgres")
    for e in g.of("new_error", "postgres", "db-1"):
        ts = new_error_times(g, e)
        bodies = [f"postgres[{g.new_pid()}]: [4-1] ERROR:  could not write to file \"base/pgsql_tmp/pgsql_tmp{k}.{k % 7}\""
                  f": No space left on device" for k in (ts * 13 % 99991).astype(np.int64)]
        g.emit("db-1", "", ts, bodies, prog="postgres", counted=np.full(len(ts), e.id))


def new_error_times(g, e):
    """A new error repeats every one to three minutes while it lasts."""
    ts = [e.start + g.rng.uniform(0, 30)]
    while True:
        nxt = ts[-1] + g.rng.uniform(60.0, 180.0)
        if nxt >= e.end:
            return np.array(ts)
        ts.append(nxt)


def pgbouncer(g):
    """pgbouncer's stats line every minute (unusual_value: wait time x10)."""
    ts = g.periodic(60.0, 0.2, 31.0)
    load = g.lnorm(ts)
    r = g.rng.uniform(0.85, 1.15, (len(ts), 3))
    xacts = (40 * load * r[:, 0]).astype(np.int64)
    wait = 15 + 30 * load * r[:, 2]
    counted = np.full(len(ts), -1)
    for e in g.of("unusual_value", "pgbouncer", "db-1"):
        inside = e.inside(ts)
        wait[inside] *= e.detail["factor"] * g.rng.uniform(1.0, 2.0, inside.sum())
        counted[inside] = e.id
    bodies = [f"stats: {x} xacts/s, {x * 6 + 3} queries/s, in {x * 900 + 210} B/s, out {x * 5200 + 830} B/s, xact "
              f"{int(1800 * r1)} us, query {int(420 * r1)} us, wait {int(w)} us"
              for x, r1, w in zip(xacts, r[:, 1], wait)]
    g.emit_pid("db-1", "pgbouncer", ts, bodies, counted=counted)


def conncheck(g):
    """A cron script counting connections each minute (unusual_value: at max_connections)."""
    ts = g.periodic(60.0, 0.9, 1.0)
    load = g.lnorm(ts)
    total = np.clip((14 + 55 * load * g.rng.uniform(0.85, 1.15, len(ts))).astype(np.int64), 5, 200)
    counted = np.full(len(ts), -1)
    for e in g.of("unusual_value", "pg-conncheck", "db-1"):
        inside = e.inside(ts)
        total[inside] = g.rng.integers(196, 201, inside.sum())
        counted[inside] = e.id
    active = (total * g.rng.uniform(0.2, 0.4, len(ts))).astype(np.int64)
    txn = (total * g.rng.uniform(0.0, 0.06, len(ts))).astype(np.int64)
    bodies = [f"connections {t}/200 (active {a}, idle {t - a - x}, idle in transaction {x})"
              for t, a, x in zip(total, active, txn)]
    g.emit("db-1", "pg-conncheck", ts, bodies, counted=counted)


def backups(g):
    """pg-backup: full at 02:00 (~40 min), incremental at :15 each other hour: started, dump, upload,
    done (broken_workflow: the upload and what follows never come)."""
    starts = g.periodic(3600.0, 2.0, 15 * 60.0)
    starts = starts[((starts - g.t_start) % 86400.0 // 3600.0) != 2]
    full = g.periodic(86400.0, 2.0, 2 * 3600.0)
    out_ts, bodies, step = [], [], []
    for t, kind in [(t, "incr") for t in starts] + [(t, "full") for t in full]:
        pid = g.new_pid()
        gb = g.rng.uniform(11.5, 12.5) if kind == "full" else g.rng.uniform(0.2, 0.9)
        dump = gb * g.rng.uniform(150, 170)
        up = gb * g.rng.uniform(40, 48)
        tag = f"{datetime.fromtimestamp(t, timezone.utc):%Y%m%d-%H%M}"
        out_ts += [t + 1, t + 1 + dump, t + 2 + dump + up, t + 2.5 + dump + up]
        bodies += [f"pg-backup[{pid}]: backup {tag} started: type={kind} database=shop",
                   f"pg-backup[{pid}]: backup {tag} dump finished: {gb:.2f} GB in {dump:.0f} s",
                   f"pg-backup[{pid}]: backup {tag} upload to s3://acme-backups/db-1/{tag}.{kind} finished: "
                   f"{gb:.2f} GB in {up:.0f} s",
                   f"pg-backup[{pid}]: backup {tag} done in {dump + up + 1.5:.0f} s"]
        step += [0, 1, 2, 3]
    out_ts, step = np.array(out_ts), np.array(step)
    keep = np.ones(len(out_ts), dtype=bool)
    for e in g.of("broken_workflow", "pg-backup", "db-1"):
        run_start = out_ts[np.flatnonzero(step == 0)]
        lost = [i for i in np.flatnonzero(step >= 2) if e.start <= run_start[i // 4] < e.end]
        keep[lost] = False
        g.removed[e.id] += len(lost)
    g.emit("db-1", "", out_ts[keep], [b for b, k in zip(bodies, keep) if k], prog="pg-backup")


# ---------------------------------------------------------------- cache, batch

def redis(g):
    """RDB snapshots: every 5 min under load (save 300 100), every 15 min at night (save 900 1)."""
    ts = g.periodic(300.0, 1.0, 3.0)
    busy = g.lnorm(ts) > 0.35
    ts = ts[busy | (np.arange(len(ts)) % 3 == 0)]
    out_ts, bodies = [], []
    pids = g.pid_at("cache-1", "redis-server", ts)
    for t, p in zip(ts, pids):
        child = g.new_pid()
        d = datetime.fromtimestamp(t, timezone.utc)
        ms = f"{d:%d %b %Y %H:%M:%S}.{int(t % 1 * 1000):03d}"
        changes = int(100 + 900 * g.lnorm(np.array([t]))[0] * g.rng.uniform(0.5, 1.5))
        took = g.rng.uniform(0.2, 0.6)
        out_ts += [t, t, t + took, t + took, t + took + 0.1]
        bodies += [f"redis-server[{p}]: {p}:M {ms} * {changes} changes in 300 seconds. Saving...",
                   f"redis-server[{p}]: {p}:M {ms} * Background saving started by pid {child}",
                   f"redis-server[{p}]: {child}:C {ms} * DB saved on disk",
                   f"redis-server[{p}]: {child}:C {ms} * Fork CoW for RDB: current {changes // 200 + 1} MB, peak "
                   f"{changes // 150 + 1} MB, average {changes // 300 + 1} MB",
                   f"redis-server[{p}]: {p}:M {ms} * Background saving terminated with success"]
    g.emit("cache-1", "", np.array(out_ts), bodies, prog="redis-server")
    for e in g.of("new_error", "redis-server", "cache-1"):
        ts = new_error_times(g, e)
        p = g.pid_at("cache-1", "redis-server", ts)
        bodies = [f"redis-server[{q}]: {q}:M {datetime.fromtimestamp(t, timezone.utc):%d %b %Y %H:%M:%S}.000 # "
                  f"Background saving error: Write error saving DB on disk: No space left on device"
                  for q, t in zip(p, ts)]
        g.emit("cache-1", "", ts, bodies, prog="redis-server", counted=np.full(len(ts), e.id))


def report_jobs(g, per_min):
    """report-worker: job received, rendered, uploaded, done (one flow per job)."""
    rng = g.rng
    ts = g.arrivals(per_min)
    keep = g.drop("report-worker", "batch-1", ts)
    g.removed.update({e.id: g.removed[e.id] * 4 for e in g.of("volume_drop", "report-worker", "batch-1")})
    ts = ts[keep]
    n = len(ts)
    jt = rng.choice(len(JOB_TYPES), n, p=[0.6, 0.3, 0.1])
    render = np.array([j[1] for j in JOB_TYPES])[jt] * rng.lognormal(0.0, 0.3, n) * (0.9 + 0.2 * g.lnorm(ts))
    counted = np.full(n, -1)
    for e in g.of("latency_drift", "report-worker", "batch-1"):
        inside = e.inside(ts)
        if "job_type" in e.detail:
            inside &= np.array([j[0] for j in JOB_TYPES])[jt] == e.detail["job_type"]
        render[inside] *= e.detail["factor"]
        counted[inside] = e.id
    upload = rng.lognormal(np.log(180.0), 0.4, n)
    out_ts, bodies, step, ids = [], [], [], []
    for k in range(n):
        t, job, name = ts[k], 880000 + int(ts[k] - g.t_start) // 7 + k % 7, JOB_TYPES[jt[k]][0]
        kb = int(render[k] / 9) + 40
        r_end = t + render[k] / 1000.0
        u_end = r_end + upload[k] / 1000.0
        out_ts += [t, r_end, u_end, u_end + 0.01]
        bodies += [f"job {job} received: type={name} order={400000 + job % 90000}",
                   f"job {job} rendered in {render[k]:.0f} ms ({kb} KB)",
                   f"job {job} uploaded to s3://acme-reports/{name}/{job}.pdf in {upload[k]:.0f} ms",
                   f"job {job} done in {u_end + 0.01 - t:.2f} s"]
        step += [0, 1, 2, 3]
        ids += [-1, counted[k], -1, -1]
    out_ts, step, ids = np.array(out_ts), np.array(step), np.array(ids)
    keep = np.ones(len(out_ts), dtype=bool)
    for e in g.of("broken_workflow", "report-worker", "batch-1"):
        lost = (step >= 2) & e.inside(np.repeat(ts, 4))
        keep &= ~lost
        g.removed[e.id] += int(lost.sum())
    order = np.argsort(out_ts[keep], kind="stable")
    b = [x for x, k in zip(bodies, keep) if k]
    g.emit_pid("batch-1", "report-worker", out_ts[keep][order], [b[i] for i in order], counted=ids[keep][order])


def postfix(g, per_min):
    """Mail relay for the shop: smtpd client -> cleanup -> qmgr queued -> smtp sent -> qmgr removed."""
    rng = g.rng
    ts = g.arrivals(per_min)
    keep = g.drop("postfix", "batch-1", ts)
    g.removed.update({e.id: g.removed[e.id] * 5 for e in g.of("volume_drop", "postfix", "batch-1")})
    ts = ts[keep]
    n = len(ts)
    delay = rng.lognormal(np.log(1.2), 0.5, n)
    qmgr = g.pid_at("batch-1", "postfix-qmgr", ts)
    out_ts, bodies, step = [], [], []
    doms = ("gmail.com", "outlook.com", "web.de", "yahoo.com", "gmx.net")
    for k in range(n):
        t = ts[k]
        qid = f"{int(t * 1000) % 0xFFFFFFFFF:09X}"
        sm, cl, sp = 3000 + k % 600, 3700 + k % 300, 4100 + k % 900
        dom = doms[k % 5]
        out_ts += [t, t + 0.01, t + 0.02, t + delay[k], t + delay[k] + 0.01]
        bodies += [f"postfix/smtpd[{sm}]: {qid}: client=web-{k % 2 + 1}[10.0.1.{11 + k % 2}]",
                   f"postfix/cleanup[{cl}]: {qid}: message-id=<{int(t * 997) % 10 ** 12:012d}@shop.example.com>",
                   f"postfix/qmgr[{qmgr[k]}]: {qid}: from=<orders@shop.example.com>, size={2800 + k % 4000}, nrcpt=1 "
                   f"(queue active)",
                   f"postfix/smtp[{sp}]: {qid}: to=<c{k % 99991}@{dom}>, relay=mx.{dom}[192.0.2.{k % 200 + 20}]:25, "
                   f"delay={delay[k] + 0.02:.1f}, delays=0.02/0/{delay[k] * 0.4:.2f}/{delay[k] * 0.6:.2f}, dsn=2.0.0, "
                   f"status=sent (250 2.0.0 OK {int(t)} queued)",
                   f"postfix/qmgr[{qmgr[k]}]: {qid}: removed"]
        step += [0, 1, 2, 3, 4]
    out_ts, step = np.array(out_ts), np.array(step)
    keep = np.ones(len(out_ts), dtype=bool)
    for e in g.of("broken_workflow", "postfix", "batch-1"):
        lost = (step >= 3) & e.inside(np.repeat(ts, 5))
        keep &= ~lost
        g.removed[e.id] += int(lost.sum())
    order = np.argsort(out_ts[keep], kind="stable")
    b = [x for x, k in zip(bodies, keep) if k]
    g.emit("batch-1", "", out_ts[keep][order], [b[i] for i in order], prog="postfix")


def dockerd(g):
    """A containerised cleanup job every 15 min on batch-1: dockerd's task events."""
    ts = g.periodic(900.0, 1.0, 5.0)
    out_ts, bodies = [], []
    for t in ts:
        cid = f"{int(t * 7919) % 16 ** 12:012x}{int(t) % 16 ** 8:08x}"
        d = datetime.fromtimestamp(t, timezone.utc)
        took = g.rng.uniform(3, 12)
        stamp = f"{d:%Y-%m-%dT%H:%M:%S}.{int(t % 1 * 1e9):09d}Z"
        out_ts += [t + took]
        bodies += [f"time=\"{stamp}\" level=info msg=\"ignoring event\" container={cid} module=libcontainerd "
                   f"namespace=moby topic=/tasks/delete type=\"*events.TaskDelete\""]
    g.emit_pid("batch-1", "dockerd", np.array(out_ts), bodies)


# ---------------------------------------------------------------- every host

def sshd_scanners(g):
    """Internet scanners try passwords on lb-1 all day (volume_spike: a brute force from one /24)."""
    rng = g.rng
    per_min = 0.6
    ts = g.arrivals(per_min, follow_load=False)
    ids = [np.full(len(ts), -1)]
    nets = [None] * len(ts)
    parts = [ts]
    for e in g.of("volume_spike", "sshd", "lb-1"):
        extra = g.uniform_in(e, rng.poisson(per_min * (e.detail["factor"] - 1) * (e.end - e.start) / 60.0))
        parts.append(extra)
        ids.append(np.full(len(extra), e.id))
        nets += [e.detail["network"]] * len(extra)
    ts, ids = np.concatenate(parts), np.concatenate(ids)
    out_ts, bodies, counted = [], [], []
    for k in np.argsort(ts, kind="stable"):
        t, net = ts[k], nets[k]
        ip = f"{net.rsplit('.', 1)[0]}.{rng.integers(1, 255)}" if net else \
            f"{rng.integers(1, 224)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        user, port, pid = SCAN_USERS[rng.integers(len(SCAN_USERS))], rng.integers(30000, 65000), g.new_pid()
        out_ts += [t, t + 1.8, t + 1.9]
        bodies += [f"sshd[{pid}]: Invalid user {user} from {ip} port {port}",
                   f"sshd[{pid}]: Failed password for invalid user {user} from {ip} port {port} ssh2",
                   f"sshd[{pid}]: Connection closed by invalid user {user} {ip} port {port} [preauth]"]
        counted += [ids[k]] * 3
    g.emit("lb-1", "", np.array(out_ts), bodies, prog="sshd", counted=counted)
    ts = g.arrivals(0.08, follow_load=False)
    bodies = [f"sshd[{g.new_pid()}]: error: kex_exchange_identification: Connection closed by remote host" for _ in ts]
    g.emit("lb-1", "", ts, bodies, prog="sshd")


def ufw(g):
    """kernel firewall blocks on lb-1 (volume_spike: a port scan from one /24)."""
    rng = g.rng
    per_min = 1.2
    ts = g.arrivals(per_min, follow_load=False)
    ids, nets, parts = [np.full(len(ts), -1)], [None] * len(ts), [ts]
    for e in g.of("volume_spike", "kernel", "lb-1"):
        extra = g.uniform_in(e, rng.poisson(per_min * (e.detail["factor"] - 1) * (e.end - e.start) / 60.0))
        parts.append(extra)
        ids.append(np.full(len(extra), e.id))
        nets += [e.detail["network"]] * len(extra)
    ts, ids = np.concatenate(parts), np.concatenate(ids)
    order = np.argsort(ts, kind="stable")
    bodies = []
    for k in order:
        t, net = ts[k], nets[k]
        src = f"{net.rsplit('.', 1)[0]}.{rng.integers(1, 255)}" if net else \
            f"{rng.integers(1, 224)}.{rng.integers(0, 256)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        port = (23, 3389, 445, 8080, 5900, 6379, 9200)[rng.integers(7)] if not net else rng.integers(1, 65535)
        bodies.append(f"kernel: [{t - g.t_start + 812345.0:12.6f}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:8e:1a:"
                      f"2b:fe:ff:ff:ff:ff:ff:08:00 SRC={src} DST=203.0.113.10 LEN=44 TOS=0x00 PREC=0x00 TTL="
                      f"{rng.integers(40, 250)} ID={rng.integers(1, 65535)} PROTO=TCP SPT={rng.integers(1024, 65535)} "
                      f"DPT={port} WINDOW=1024 RES=0x00 SYN URGP=0")
    g.emit("lb-1", "", ts[order], bodies, prog="kernel", counted=ids[order])


def kernel_new_errors(g):
    for e in g.of("new_error", "kernel"):
        ts = new_error_times(g, e)
        up = ts - g.t_start + 1_234_567.0
        if e.detail["variant"] == "oom":
            bodies = [f"kernel: [{u:12.6f}] Out of memory: Killed process {3300 + k} (java) total-vm:8123456kB, "
                      f"anon-rss:{3900000 + k * 17}kB, file-rss:0kB, shmem-rss:0kB, UID:1002 pgtables:8120kB "
                      f"oom_score_adj:0" for k, u in enumerate(up)]
        else:
            bodies = [f"kernel: [{u:12.6f}] EXT4-fs error (device sdb1): ext4_find_entry:1455: inode #{2 + k}: "
                      f"comm postgres: reading directory lblock 0" for k, u in enumerate(up)]
        g.emit(e.detail["host"], "", ts, bodies, prog="kernel", counted=np.full(len(ts), e.id))


def cron(g):
    """CRON on each host: sysstat every 10 min, hourly run-parts at :17, per-host jobs; pam lines too."""
    jobs = {"db-1": [(60.0, "postgres", "/usr/local/bin/pg-conncheck")],
            "web-1": [(300.0, "deploy", "/usr/local/bin/sitemap-refresh --quiet")],
            "web-2": [(300.0, "deploy", "/usr/local/bin/sitemap-refresh --quiet"),
                      (60.0, "www-data", "/usr/bin/php /var/www/shop/cron.php")],
            "batch-1": [(900.0, "root", "/usr/bin/docker run --rm acme/tmp-cleanup")]}
    for host in HOSTS:
        specs = [(600.0, "root", "command -v debian-sa1 > /dev/null && debian-sa1 1 1"),
                 (3600.0, "root", "cd / && run-parts --report /etc/cron.hourly")] + jobs.get(host, [])
        out_ts, bodies = [], []
        for period, user, cmd in specs:
            phase = 17 * 60.0 if "hourly" in cmd else 0.0
            for t in g.periodic(period, 0.0, phase) + g.rng.uniform(0.0, 0.9):
                pid = g.new_pid()
                uid = {"root": 0, "postgres": 113, "deploy": 1010, "www-data": 33}[user]
                out_ts += [t, t + 0.001, t + 0.3]
                bodies += [f"CRON[{pid}]: pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)",
                           f"CRON[{pid}]: ({user}) CMD ({cmd})",
                           f"CRON[{pid}]: pam_unix(cron:session): session closed for user {user}"]
        order = np.argsort(out_ts, kind="stable")
        g.emit(host, "", np.array(out_ts)[order], [bodies[i] for i in order], prog="CRON")


def systemd(g):
    """Timers (sysstat, logrotate at midnight, apt, tmpfiles) and restarts of the upgraded program."""
    rng = g.rng
    units = (("sysstat-collect", "system activity accounting tool", 600.0, 0.0),
             ("logrotate", "Rotate log files", 86400.0, 0.0),
             ("apt-daily", "Daily apt download activities", 86400.0, None),
             ("systemd-tmpfiles-clean", "Cleanup of Temporary Directories", 86400.0, None))
    for host in HOSTS:
        out_ts, bodies = [], []
        for unit, desc, period, phase in units:
            ph = rng.uniform(3600.0, 80000.0) if phase is None else phase
            for t in g.periodic(period, 0.5, ph):
                took = rng.uniform(0.05, 2.0 if unit != "logrotate" else 9.0)
                out_ts += [t, t + took, t + took + 0.001]
                bodies += [f"systemd[1]: Starting {desc}...", f"systemd[1]: {unit}.service: Deactivated successfully.",
                           f"systemd[1]: Finished {desc}."]
        for e in g.of("restart", host=host):
            out_ts += [e.start - 0.5, e.start, e.end - 0.2, e.end]
            bodies += [f"systemd[1]: Stopping {e.detail['unit']}...", f"systemd[1]: Stopped {e.detail['unit']}.",
                       f"systemd[1]: Starting {e.detail['unit']}...", f"systemd[1]: Started {e.detail['unit']}."]
        order = np.argsort(out_ts, kind="stable")
        g.emit(host, "", np.array(out_ts)[order], [bodies[i] for i in order], prog="systemd")
    restart_lines(g)


def restart_lines(g):
    """What the restarted program says on the way down and up."""
    for e in g.of("restart"):
        host, prog = e.detail["host"], e.source
        old, new = g.pid_at(host, prog, np.array([e.start - 1.0, e.end + 1.0]))
        d = datetime.fromtimestamp(e.start, timezone.utc)
        if prog == "postgres":
            down = ["LOG:  received fast shutdown request", "LOG:  database system is shut down"]
            up = ["LOG:  starting PostgreSQL 14.11 (Ubuntu 14.11-0ubuntu0.22.04.1) on x86_64-pc-linux-gnu",
                  "LOG:  listening on IPv4 address \"0.0.0.0\", port 5432",
                  f"LOG:  database system was shut down at {d:%Y-%m-%d %H:%M:%S} UTC",
                  "LOG:  database system is ready to accept connections"]
        elif prog == "redis-server":
            down = [f"{old}:M {d:%d %b %Y %H:%M:%S}.000 # User requested shutdown...",
                    f"{old}:M {d:%d %b %Y %H:%M:%S}.000 # Redis is now ready to exit, bye bye..."]
            up = [f"{new}:C {d:%d %b %Y %H:%M:%S}.000 # Redis version=6.0.16, bits=64, commit=00000000, modified=0, "
                  f"pid={new}, just started", f"{new}:M {d:%d %b %Y %H:%M:%S}.000 # Server initialized",
                  f"{new}:M {d:%d %b %Y %H:%M:%S}.000 * Ready to accept connections"]
        else:
            app = "ShopApiApplication" if prog == "shop-api" else "ReportWorkerApplication"
            down = ["Commencing graceful shutdown. Waiting for active requests to complete",
                    "Graceful shutdown complete"]
            up = [f"Starting {app} v2.14.{new % 9} using Java 17.0.10 with PID {new}",
                  "Tomcat started on port(s): 8080 (http) with context path ''",
                  f"Started {app} in {g.rng.uniform(6, 14):.3f} seconds (process running for "
                  f"{g.rng.uniform(7, 15):.3f})"]
        ts = [e.start - 0.4] * len(down) + [e.end + 0.5 + 0.1 * i for i in range(len(up))]
        pids = [old] * len(down) + [new] * len(up)
        g.parts.append((np.array(ts), [f"{host} {prog}[{p}]: {b}" for p, b in zip(pids, down + up)]))


def admins(g):
    """Admins log in by ssh in working hours on weekdays (a few on weekends)."""
    rng = g.rng
    day = g.t_start
    out = {h: ([], []) for h in HOSTS}
    session = 100
    while day < g.t_end:
        weekend = ((int(day // 86400) + 3) % 7) >= 5
        for _ in range(rng.poisson(2 if weekend else 14)):
            name, ip, uid = ADMINS[rng.integers(len(ADMINS))]
            host = HOSTS[rng.integers(len(HOSTS))]
            t = day + rng.uniform(8.5, 18.5) * 3600.0
            dur = rng.uniform(60.0, 2400.0)
            pid, port, session = g.new_pid(), rng.integers(40000, 60000), session + 1
            ts, bodies = out[host]
            ts += [t, t + 0.01, t + 0.02, t + dur, t + dur + 0.01, t + dur + 0.02]
            bodies += [(f"sshd[{pid}]", f"Accepted publickey for {name} from {ip} port {port} ssh2: ED25519 "
                                        f"SHA256:{'Qx7' if name == 'alice' else 'Lp2'}9bK1mZ4tR8wYvN3cD6hJ0sF5gA2eU7iO1"),
                       (f"sshd[{pid}]", f"pam_unix(sshd:session): session opened for user {name}(uid={uid}) by (uid=0)"),
                       ("systemd-logind[612]", f"New session {session} of user {name}."),
                       (f"sshd[{pid}]", f"Received disconnect from {ip} port {port}:11: disconnected by user"),
                       (f"sshd[{pid}]", f"pam_unix(sshd:session): session closed for user {name}"),
                       ("systemd-logind[612]", f"Session {session} logged out. Waiting for processes to exit.")]
        day += 86400.0
    for host, (ts, bodies) in out.items():
        ts = np.array(ts)
        for prog in ("sshd", "systemd-logind"):
            sel = [i for i, b in enumerate(bodies) if b[0].startswith(prog + "[")]
            sel = [sel[i] for i in np.argsort(ts[sel], kind="stable")] if sel else []
            g.emit(host, "", ts[sel], [f"{bodies[i][0]}: {bodies[i][1]}" for i in sel], prog=prog)


def disk_usage(g):
    """A cron script reports disk use every 30 min; the data disks fill slowly (and with the backup)."""
    for host, mount, size, start, per_day in (("db-1", "/var/lib/postgresql", 500, 61.0, 0.35),
                                              ("batch-1", "/srv/reports", 200, 44.0, 0.6)):
        ts = g.periodic(1800.0, 1.0, 60.0 * 23)
        pct = start + per_day * (ts - g.t_start) / 86400.0 + g.rng.normal(0.0, 0.03, len(ts))
        bodies = [f"{mount} used {p:.1f}% ({p * size / 100:.1f}G of {size}G), inodes {p * 0.4:.0f}%" for p in pct]
        g.emit(host, "disk-usage", ts, bodies)


def rsyslog_lines(g):
    for e in g.of("log_gap"):
        g.parts.append((np.array([e.start - 0.5, e.end]), [
            "log-1 rsyslogd: [origin software=\"rsyslogd\" swVersion=\"8.2112.0\" x-pid=\"702\" "
            "x-info=\"https://www.rsyslog.com\"] exiting on signal 15.",
            f"log-1 rsyslogd: [origin software=\"rsyslogd\" swVersion=\"8.2112.0\" x-pid=\"{g.new_pid()}\" "
            "x-info=\"https://www.rsyslog.com\"] start"]))


# ---------------------------------------------------------------- driver

# Lines each request brings on average (haproxy, nginx, shop-api) and per-request rates of the flows.
API_SHARE = sum(e[2] for e in ENDPOINTS if e[5]) / sum(e[2] for e in ENDPOINTS)
SLOW_PER_REQ = 0.02
JOBS_PER_REQ = 0.02
MAILS_PER_REQ = 0.012
FIXED_PER_DAY = 2 * 17280 + 1440 * 12 + 6000


def generate(out_dir, days=3.0, seed=0, lines_per_day=DEFAULT_LINES_PER_DAY, start=START, warmup_days=1.0):
    """Write syslog.log and labels.json into out_dir; lines_per_day is about a weekday's volume."""
    os.makedirs(out_dir, exist_ok=True)
    t_start = parse_time(start)
    t_end = t_start + days * 86400.0
    t_warm = t_start + min(warmup_days, days) * 86400.0
    events = schedule(np.random.default_rng([seed, 1]), t_start, t_end, t_warm)
    rng = np.random.default_rng([seed, 2])
    load = load_curve(rng, t_start, int(np.ceil(days * 1440)) + 1)
    g = Gen(rng, events, t_start, t_end, load)
    per_req = 2 + API_SHARE * 0.98 + SLOW_PER_REQ + 4 * JOBS_PER_REQ + 5 * MAILS_PER_REQ
    req_per_min = max(lines_per_day - FIXED_PER_DAY, 0.1 * lines_per_day) / per_req / 1440.0
    web_traffic(g, req_per_min)
    for step in (health_checks, gc_log, web_errors, pgbouncer, conncheck, backups, redis, dockerd, sshd_scanners,
                 ufw, kernel_new_errors, cron, systemd, admins, disk_usage, rsyslog_lines):
        step(g)
    postgres(g, max(req_per_min * SLOW_PER_REQ, 1.0))
    report_jobs(g, max(req_per_min * JOBS_PER_REQ, 1.0))        # at small volumes the flows keep a usable rate
    postfix(g, max(req_per_min * MAILS_PER_REQ, 0.6))
    path = os.path.join(out_dir, LOG_FILE)
    lines = write_log(path, g.parts, t_start, t_end)
    return write_labels(out_dir, path, g, events, seed, days, lines_per_day, lines, t_start, t_end, t_warm)


def write_log(path, parts, t_start, t_end):
    """All streams merged in time order, each line stamped `Mar  5 00:00:02`."""
    ts = np.concatenate([p[0] for p in parts])
    bodies = [b for p in parts for b in p[1]]
    keep = (ts >= t_start) & (ts < t_end)
    order = np.flatnonzero(keep)[np.argsort(ts[keep], kind="stable")]
    stamp = stamp_cache(t_start)
    secs = ts.astype(np.int64)
    with open(path, "w", encoding="utf-8") as fh:
        buf = []
        for i in order:
            (day, _), hms = stamp(int(secs[i]))
            buf.append(f"{day}{hms} {bodies[i]}\n")
            if len(buf) >= 50_000:
                fh.write("".join(buf))
                buf = []
        fh.write("".join(buf))
    return len(order)


def write_labels(out_dir, path, g, events, seed, days, lines_per_day, lines, t_start, t_end, t_warm):
    def rec(e):
        detail = e.detail | ({"lines_removed": g.removed[e.id]} if e.kind in REMOVING and e.id >= 0 else {})
        return {"kind": e.kind, "source": e.source, "start": e.start, "end": e.end, "start_iso": iso(e.start),
                "end_iso": iso(e.end), "detail": detail}
    incidents = [{"id": e.id} | rec(e) | {"n_lines": g.counts[e.id]} for e in events if e.id >= 0]
    unlabelled = [rec(e) for e in events if e.id < 0]
    doc = {"version": 1, "family": "infra", "seed": seed, "days": days, "lines_per_day": lines_per_day, "fmt": "plain",
           "start": t_start, "end": t_end, "warmup_end": t_warm, "start_iso": iso(t_start), "end_iso": iso(t_end),
           "sources": list(PROGRAMS), "source_convention": SOURCE_CONVENTION,
           "source_convention_help": "a label's source is the syslog program tag without host or pid (postfix for "
                                     "postfix/*); its host is detail.host",
           "files": [LOG_FILE], "lines_per_file": {LOG_FILE: lines}, "incidents": incidents, "unlabelled": unlabelled}
    labels_path = os.path.join(out_dir, LABELS_FILE)
    with open(labels_path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return InfraWorkload(out_dir=out_dir, files=[path], labels_path=labels_path, lines=lines, seed=seed,
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
