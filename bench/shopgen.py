"""The web-shop workload family of bench/detect_bench.py: one plain file of interleaved services, labelled.

Written apart from anomaly_detector/workload (a second family nobody tuned the engine on); only its
label format is shared, so workload/scoring.py scores both. One file `shop.log`, lines
`<ISO time> <LEVEL> <host> <program>: <message>` from nginx, checkout, catalog, postgres, celery,
search (a JVM), backup and CRON on their hosts, and rsyslogd on the log host. Traffic follows the
hour and the weekday, night batch jobs run 01:00-04:30, one deploy brings a new version and new
templates, daemons restart with gaps of minutes in the log (none of these is labelled), and after
the warm-up day one incident of every kind in KINDS happens per day. labels.json holds the
incidents (source = program name), the deploys and the restarts. Deterministic per seed.

    python bench/shopgen.py OUT_DIR [--days 3] [--seed 1] [--lines-per-day 500000]
"""
import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

if __package__ in (None, ""):          # run as a script: bench/ is the script's directory
    import shop_cascades
else:
    from bench import shop_cascades

DEFAULT_LINES_PER_DAY = 500_000
START = "2026-03-06T00:00:00Z"      # a Friday: the warm-up day is a weekday, then a weekend
LOG_FILE = "shop.log"
LABELS_FILE = "labels.json"
CHUNK_MIN = 60
PROGRAMS = ("nginx", "checkout", "catalog", "postgres", "celery", "search", "backup", "CRON", "rsyslogd")
HOSTS = ("web-1", "web-2", "api-1", "api-2", "db-1", "worker-1", "search-1", "cron-1", "log-1")
# Weekday share of the lines of each traffic-driven program (periodic lines and night jobs come on top).
SHARES = {"nginx": 0.45, "checkout": 0.16, "catalog": 0.14, "postgres": 0.08, "celery": 0.07, "search": 0.07}
# Label kinds (workload/scoring.py RIGHT_KINDS) and where each may happen.
KINDS = ("error_burst", "new_error", "latency_drift", "broken_workflow", "unusual_value", "volume_spike",
         "volume_drop", "silent_source")
INCIDENT_SOURCES = {
    "error_burst": ("checkout", "postgres", "nginx"), "new_error": ("checkout", "celery", "postgres", "search"),
    "latency_drift": ("postgres", "catalog", "checkout", "search"), "broken_workflow": ("checkout",),
    "unusual_value": ("nginx", "celery", "checkout"), "volume_spike": ("nginx", "catalog"),
    "volume_drop": ("nginx", "catalog", "checkout"), "silent_source": ("celery", "search", "catalog"),
}
DURATION_MIN = {
    "error_burst": (5, 15), "new_error": (3, 20), "latency_drift": (30, 120), "broken_workflow": (15, 60),
    "unusual_value": (10, 40), "volume_spike": (10, 30), "volume_drop": (30, 120), "silent_source": (15, 90),
}
INCIDENT_HOURS = (7.0, 23.0)        # incidents happen while people shop
SEPARATION_S = 1800.0               # between incidents, deploys and restarts
OLD_VERSION, NEW_VERSION = "v2.14.3", "v2.15.0"


@dataclass
class Event:
    """A labelled incident, or (kind "deploy", "restart", "log_gap") an unlabelled happening."""

    kind: str
    source: str
    start: float
    end: float
    detail: dict = field(default_factory=dict)
    id: int = -1

    def inside(self, ts):
        return (ts >= self.start) & (ts < self.end)


def iso(ts):
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(text):
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


# ---------------------------------------------------------------- traffic over the day

def slow_walk(rng, n, sigma, phi):
    """exp of an AR(1) walk per minute with stationary deviation sigma: a level that wanders slowly."""
    eps = rng.standard_normal(n) * sigma * np.sqrt(1.0 - phi * phi)
    x = np.empty(n)
    prev = rng.standard_normal() * sigma
    for i in range(n):
        prev = phi * prev + eps[i]
        x[i] = prev
    return np.exp(x)


def bump(hour, centre, width):
    d = (hour - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def day_shape(hour, weekend):
    """Browsing by hour: weekdays peak mid-morning, at lunch and in the evening; weekends late and
    long, 0.8 of a weekday's lines. A weekday averages 1."""
    def weekday_curve(h):
        return 0.07 + 0.75 * bump(h, 10.3, 2.0) + 0.4 * bump(h, 13.0, 1.1) + 1.0 * bump(h, 20.4, 1.9)

    def weekend_curve(h):
        return 0.09 + 0.85 * bump(h, 12.8, 2.8) + 0.9 * bump(h, 20.8, 2.1)
    grid = np.arange(1440) / 60.0
    return np.where(weekend, 0.8 * weekend_curve(hour) / weekend_curve(grid).mean(),
                    weekday_curve(hour) / weekday_curve(grid).mean())


def site_bursts(rng, t, weekend):
    """Legitimate surges: a weekday newsletter at 09:00 on some days, and a few campaign spikes a day."""
    factor = np.ones(t.size)
    hour = (t % 86400.0) / 3600.0
    day = t // 86400.0
    for d in np.unique(day):
        if not weekend[day == d][0] and rng.random() < 0.5:
            after = (day == d) & (hour >= 9.0)
            factor[after] *= 1.0 + 0.8 * np.exp(-(hour[after] - 9.0) * 60.0 / 40.0)
    for _ in range(rng.poisson(2.0 * t.size / 1440.0)):
        centre, half, amp = rng.uniform(0, t.size), rng.uniform(3, 20), rng.uniform(0.3, 1.0)
        m = np.arange(max(0, int(centre - half)), min(t.size, int(centre + half) + 1))
        factor[m] *= 1.0 + amp * 0.5 * (1.0 + np.cos(np.pi * (m - centre) / half))
    return factor


class Clock:
    """Per-minute arrays of the whole run: browsing load, night batch activity, slowly drifting
    numeric levels (latencies, pool, queue, heap) and each program's rate factor (volume drops)."""

    DRIFTS = ("nginx", "payment", "catalog", "postgres", "search", "pool", "queue", "heap")

    def __init__(self, rng, t_start, n_min):
        self.t_start = t_start
        self.t = t_start + 60.0 * np.arange(n_min)
        hour = (self.t % 86400.0) / 3600.0
        weekday = ((self.t // 86400.0) + 3) % 7           # 1970-01-01 was a Thursday: 0 = Monday
        self.weekend = weekday >= 5
        self.sunday = weekday == 6
        self.hour = hour
        self.load = day_shape(hour, self.weekend) * slow_walk(rng, n_min, 0.12, 0.99) * site_bursts(
            rng, self.t, self.weekend)
        self.night = ((hour >= 1.0) & (hour < 4.5)).astype(float)
        self.drift = {name: slow_walk(rng, n_min, 0.15, 0.998) for name in self.DRIFTS}
        self.factor = {p: np.ones(n_min) for p in PROGRAMS}

    def minute(self, ts):
        return np.clip(((ts - self.t_start) // 60.0).astype(np.int64), 0, self.t.size - 1)


# ---------------------------------------------------------------- what happens when

def schedule(rng, t_start, t_end, t_warm):
    """Deploy, restarts, log gaps and incidents: none within SEPARATION_S of another."""
    busy = []
    out = []

    def place(kind, source, lo, hi, dur_s, detail):
        for _ in range(500):
            a = rng.uniform(lo, hi - dur_s)
            if hi - dur_s > lo and all(a + dur_s + SEPARATION_S <= b0 or a >= b1 + SEPARATION_S for b0, b1 in busy):
                busy.append((a, a + dur_s))
                out.append(Event(kind, source, a, a + dur_s, detail))
                return
    n_days = int(np.ceil((t_end - t_start) / 86400.0 - 1e-9))
    for d in range(n_days):
        day = t_start + 86400.0 * d
        if d == 1 or (n_days == 1 and d == 0):
            place("deploy", "checkout", day + 10 * 3600.0, min(t_end, day + 16 * 3600.0), 240.0,
                  {"from": OLD_VERSION, "to": NEW_VERSION})
        place("restart", str(rng.choice(["postgres", "celery", "search"])), day + 1800.0,
              min(t_end, day + 86400.0 - 1800.0), rng.uniform(120.0, 360.0), {})
        place("log_gap", "rsyslogd", day + 1800.0, min(t_end, day + 86400.0 - 1800.0), rng.uniform(120.0, 300.0), {})
    for d in range(n_days):
        lo = max(t_warm, t_start + 86400.0 * d + INCIDENT_HOURS[0] * 3600.0)
        hi = min(t_end, t_start + 86400.0 * d + INCIDENT_HOURS[1] * 3600.0)
        if hi - lo < 6 * 3600.0:
            continue
        for kind in rng.permutation(KINDS).tolist():
            source = str(rng.choice(INCIDENT_SOURCES[kind]))
            place(kind, source, lo, hi, 60.0 * rng.uniform(*DURATION_MIN[kind]), incident_detail(rng, kind, source))
    out.sort(key=lambda e: e.start)
    labelled = [e for e in out if e.kind in KINDS]
    for i, e in enumerate(labelled):
        e.id = i
    return out


def incident_detail(rng, kind, source):
    """What exactly goes wrong; the streams read these fields."""
    if kind == "error_burst":
        return {"what": "a known error template, about 40 times its usual rate", "factor": 40.0}
    if kind == "new_error":
        return {"what": "an error template never seen before", "variant": int(rng.integers(0, 2))}
    if kind == "latency_drift":
        return {"what": "a latency field shifts up and stays there", "factor": float(rng.uniform(2.5, 4.0))}
    if kind == "broken_workflow":
        return {"what": "orders stop after payment: no inventory reservation, no confirmation",
                "share": float(rng.uniform(0.6, 0.85))}
    if kind == "unusual_value":
        return {"nginx": {"what": "response time of /search only, in numbers", "factor": 12.0},
                "celery": {"what": "emails queue depth, in numbers", "factor": 30.0},
                "checkout": {"what": "a new payment provider value", "provider": "adyen"}}[source]
    if kind == "volume_spike":
        return {"nginx": {"what": "credential stuffing on POST /login", "factor": 15.0},
                "catalog": {"what": "a scraper walking product pages", "factor": 5.0}}[source]
    if kind == "volume_drop":
        return {"what": "most traffic of the service lost upstream", "factor": float(rng.uniform(0.15, 0.35))}
    return {"what": "the service writes nothing (hung)", "factor": 0.0}


class Plan:
    """The schedule, queried by the streams."""

    def __init__(self, events, clock):
        self.events = events
        for e in events:
            if e.kind == "volume_drop":
                m = (clock.t >= e.start - 60.0) & (clock.t < e.end)
                clock.factor[e.source][m] *= e.detail["factor"]

    def of(self, kind, source, t0, t1):
        return [e for e in self.events if e.kind == kind and e.source == source and e.start < t1 and e.end > t0]

    def multiplier(self, ts, kind, source, key="factor"):
        """Per-event multiplier: the incident's detail[key] inside its window, 1 elsewhere."""
        out = np.ones(ts.size)
        for e in self.of(kind, source, ts.min(initial=np.inf), ts.max(initial=-np.inf) + 1.0):
            out[e.inside(ts)] = e.detail[key]
        return out

    def deploy(self):
        return next((e for e in self.events if e.kind == "deploy"), None)


# ---------------------------------------------------------------- lines of one chunk

class Chunk:
    """Lines of one period from all streams, written sorted by time."""

    def __init__(self, rng, clock, plan, state, t0, t1):
        self.rng, self.clock, self.plan, self.state, self.t0, self.t1 = rng, clock, plan, state, t0, t1
        self.m = slice(clock.minute(np.array([t0]))[0], clock.minute(np.array([t1 - 1.0]))[0] + 1)
        self.ts, self.prog, self.host, self.text = [], [], [], []

    def add(self, ts, program, hosts, levels, tags, msgs):
        """hosts, levels, tags: one string or one per line."""
        n = len(msgs)
        if n == 0:
            return
        hosts = hosts if isinstance(hosts, list) else [hosts] * n
        levels = levels if isinstance(levels, list) else [levels] * n
        tags = tags if isinstance(tags, list) else [tags] * n
        self.ts.append(np.asarray(ts, float))
        self.prog.append(np.full(n, PROGRAMS.index(program), np.int8))
        self.host.append(np.array([HOSTS.index(h) for h in hosts], np.int8))
        self.text += [f" {lv} {h} {tg}: {msg}\n" for lv, h, tg, msg in zip(levels, hosts, tags, msgs)]

    def events(self, per_min):
        """Poisson event times in this chunk for expected counts per minute (one value per minute)."""
        counts = self.rng.poisson(np.maximum(per_min, 0.0))
        m = np.repeat(np.arange(per_min.size), counts)
        return np.sort(self.t0 + 60.0 * (m + self.rng.random(m.size)))

    def periodic(self, every_s, jitter_s=0.5):
        first = np.ceil(self.t0 / every_s) * every_s
        ts = np.arange(first, self.t1, every_s)
        return ts + self.rng.uniform(0, jitter_s, ts.size)

    def rate(self, program, share=1.0):
        c = self.clock
        return share * SHARES[program] * self.state.lpd / 1440.0 * c.load[self.m] * c.factor[program][self.m]

    def drift(self, name, ts):
        return self.clock.drift[name][self.clock.minute(ts)]

    def load(self, ts):
        return self.clock.load[self.clock.minute(ts)]

    def lognormal(self, n, sigma):
        return np.exp(self.rng.standard_normal(n) * sigma - 0.5 * sigma * sigma)

    def pick(self, values, n, p=None):
        return self.rng.choice(np.asarray(values, dtype=object), n, p=p).tolist()

    def hexes(self, n, width=16):
        """n random hex strings of width digits."""
        w = (width + 1) // 2
        text = self.rng.bytes(n * w).hex()
        return [text[2 * w * i:2 * w * i + width] for i in range(n)]

    def uuids(self, n):
        a, b = self.hexes(n, 15), self.hexes(n, 15)
        return [f"{x[:8]}-{x[8:12]}-4{x[12:15]}-a{y[:3]}-{y[3:15]}" for x, y in zip(a, b)]

    def ips(self, n):
        r = self.rng.integers(1, 255, (n, 4)).tolist()
        return [f"{a % 223 + 1}.{b}.{c}.{d}" for a, b, c, d in r]


@dataclass
class State:
    """What lasts across chunks: volume, order counter, pids, version."""

    lpd: float
    next_order: int = 1_000_000
    pids: dict = field(default_factory=lambda: {"api-1": 2211, "api-2": 2214, "cat-api-1": 2301, "cat-api-2": 2307})
    version: str = OLD_VERSION

    def every(self, base_s):
        """A periodic line's interval: base_s at 300k lines/day or more, longer for smaller runs."""
        return base_s * max(1.0, 300_000.0 / self.lpd)


# ---------------------------------------------------------------- the services

# method, path, share of requests, mean bytes, base response time (s)
ENDPOINTS = (
    ("GET", "/", 0.08, 18000, 0.035), ("GET", "/products/{sku}", 0.30, 24000, 0.045),
    ("GET", "/search?q={q}", 0.12, 21000, 0.080), ("GET", "/static/{asset}", 0.22, 40000, 0.002),
    ("GET", "/api/cart", 0.09, 900, 0.020), ("POST", "/api/cart/items", 0.06, 300, 0.030),
    ("GET", "/account/orders", 0.03, 9000, 0.060), ("POST", "/login", 0.03, 200, 0.090),
    ("POST", "/checkout", 0.02, 500, 0.250), ("GET", "/api/orders/{oid}", 0.05, 1200, 0.025),
)
EP_SHARES = np.array([e[2] for e in ENDPOINTS]) / sum(e[2] for e in ENDPOINTS)
EP_SEARCH, EP_STATIC, EP_PRODUCT, EP_LOGIN = 2, 3, 1, 7
SEARCH_TERMS = ("shoes", "red+dress", "rain+jacket", "socks", "backpack", "sale", "linen+shirt", "boots",
                "gift+card", "sunglasses", "wool+scarf", "sneakers")
ASSETS = ("app.3f9c1.js", "app.3f9c1.css", "logo.svg", "fonts/inter.woff2", "img/hero-spring.webp",
          "vendor.77ab2.js")
AGENTS = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X)", "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
          "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2)", "Mozilla/5.0 (Linux; Android 14; Pixel 8)")
WEB, API = ["web-1", "web-2"], ["api-1", "api-2"]


def nginx_lines(ch):
    """Access lines of both web hosts; a login attack adds POST /login lines, mostly 401."""
    base = ch.rate("nginx")
    ts = ch.events(base)
    ep = ch.rng.choice(len(ENDPOINTS), ts.size, p=EP_SHARES)
    attack = np.zeros(ts.size, bool)
    for inc in ch.plan.of("volume_spike", "nginx", ch.t0, ch.t1):
        extra = ch.events(np.maximum((inc.detail["factor"] - 1.0) * base * EP_SHARES[EP_LOGIN], 3.0))
        extra = extra[inc.inside(extra)]
        ts, ep = np.concatenate([ts, extra]), np.concatenate([ep, np.full(extra.size, EP_LOGIN)])
        attack = np.concatenate([attack, np.ones(extra.size, bool)])
    n = ts.size
    base_rt = np.array([e[4] for e in ENDPOINTS])[ep]
    rt = base_rt * ch.drift("nginx", ts) * (0.75 + 0.25 * ch.load(ts)) * ch.lognormal(n, 0.5)
    rt[ep == EP_SEARCH] *= ch.plan.multiplier(ts[ep == EP_SEARCH], "unusual_value", "nginx")
    u = ch.rng.random(n)
    status = np.full(n, 200)
    status[(ep == EP_STATIC) & (u < 0.3)] = 304
    status[(ep == EP_PRODUCT) & (u < 0.01)] = 404
    status[(ep == EP_LOGIN) & ((u < 0.12) | (attack & (u < 0.97)))] = 401
    status[u > 0.9992] = 502
    size = np.where(status == 304, 0, np.where(status == 401, 154, (np.array([e[3] for e in ENDPOINTS])[ep]
                                                                     * ch.lognormal(n, 0.3)).astype(int)))
    fill = {"sku": [str(v) for v in ch.rng.integers(1000, 99999, n).tolist()], "q": ch.pick(SEARCH_TERMS, n),
            "asset": ch.pick(ASSETS, n), "oid": [f"SO-{v}" for v in ch.rng.integers(990_000, 1_000_000, n).tolist()]}
    paths = [ENDPOINTS[e][1].format(**{k: v[i] for k, v in fill.items()}) for i, e in enumerate(ep.tolist())]
    ips, agents, rids = ch.ips(n), ch.pick(AGENTS, n), ch.hexes(n)
    msgs = [f'{ip} "{ENDPOINTS[e][0]} {p} HTTP/1.1" {s} {b} rt={r:.3f} ua="{a}" rid={d}'
            for ip, e, p, s, b, r, a, d in zip(ips, ep.tolist(), paths, status.tolist(), size.tolist(), rt.tolist(),
                                               agents, rids)]
    levels = ["WARNING" if s >= 500 else "INFO" for s in status.tolist()]
    ch.add(ts, "nginx", ch.pick(WEB, n), levels, "nginx", msgs)


PROVIDERS, PROVIDER_P = ("stripe", "paypal", "klarna"), (0.55, 0.3, 0.15)
DECLINES = ("card_declined", "insufficient_funds", "expired_card", "3ds_failed")


def checkout_tag(ch, hosts, ts):
    """checkout[pid]: each host's gunicorn master pid, a new one after the deploy restarted it."""
    dep = ch.plan.deploy()
    out = []
    for h, t in zip(hosts, ts.tolist()):
        new = dep is not None and t >= dep.start + (1.0 if h == "api-1" else 121.0)
        out.append(f"checkout[{ch.state.pids[h] + (1634 if new else 0)}]")
    return out


def version_at(ch, ts):
    dep = ch.plan.deploy()
    return [NEW_VERSION if dep is not None and t >= dep.end else OLD_VERSION for t in ts.tolist()]


def checkout_lines(ch):
    """Order workflows (created, paid, reserved, confirmed), cart updates, pool stats, heartbeats."""
    orders = ch.events(ch.rate("checkout", 0.6) / 4.0)
    n = orders.size
    oid = [f"SO-{ch.state.next_order + i}" for i in range(n)]
    ch.state.next_order += n
    hosts = ch.pick(API, n)
    amount = np.round(ch.lognormal(n, 0.6) * 64.0, 2)
    items = ch.rng.integers(1, 7, n)
    ms = (180.0 * ch.drift("payment", orders) * (0.8 + 0.2 * ch.load(orders)) * ch.lognormal(n, 0.35)
          * ch.plan.multiplier(orders, "latency_drift", "checkout"))
    prov = np.array(ch.pick(PROVIDERS, n, PROVIDER_P), dtype=object)
    for inc in ch.plan.of("unusual_value", "checkout", ch.t0, ch.t1):
        prov[inc.inside(orders) & (ch.rng.random(n) < 0.4)] = inc.detail["provider"]
    u = ch.rng.random(n)
    declined = u < 0.03
    broken = np.zeros(n, bool)
    for inc in ch.plan.of("broken_workflow", "checkout", ch.t0, ch.t1):
        broken |= inc.inside(orders) & (ch.rng.random(n) < inc.detail["share"])
    new_code = np.array([v == NEW_VERSION for v in version_at(ch, orders)], dtype=bool)
    uid, rid = ch.rng.integers(1, 250_000, n).tolist(), ch.hexes(n)
    t_pay = orders + ms / 1000.0 + 0.05
    t_res = t_pay + ch.rng.uniform(0.02, 0.1, n)
    t_conf = t_res + ch.rng.uniform(0.01, 0.05, n)
    lines = [(orders, hosts, "INFO", [f"order={o} created user={u_} items={k} total={a:.2f} EUR rid={r}"
                                      for o, u_, k, a, r in zip(oid, uid, items.tolist(), amount.tolist(), rid)])]
    sel = lambda mask: np.flatnonzero(mask).tolist()  # noqa: E731
    promo = sel(new_code & (ch.rng.random(n) < 0.5))
    lines.append((orders[promo] + 0.01, [hosts[i] for i in promo], "INFO",
                  [f"promotion engine applied {k} rules to order={oid[i]}"
                   for i, k in zip(promo, ch.rng.integers(0, 4, len(promo)).tolist())]))
    fraud = sel(new_code & (ch.rng.random(n) < 0.3))
    lines.append((orders[fraud] + 0.02, [hosts[i] for i in fraud], "INFO",
                  [f"fraud score {s:.2f} for order={oid[i]} (threshold 0.80)"
                   for i, s in zip(fraud, ch.rng.beta(1.5, 12.0, len(fraud)).tolist())]))
    dec = sel(declined)
    lines.append((t_pay[dec], [hosts[i] for i in dec], "WARNING",
                  [f"payment declined order={oid[i]} provider={prov[i]} reason={r}"
                   for i, r in zip(dec, ch.pick(DECLINES, len(dec)))]))
    ok = sel(~declined)
    lines.append((t_pay[ok], [hosts[i] for i in ok], "INFO",
                  [f"payment authorized order={oid[i]} provider={prov[i]} amount={amount[i]:.2f} took {ms[i]:.0f} ms"
                   for i in ok]))
    done = sel(~declined & ~broken)
    lines.append((t_res[done], [hosts[i] for i in done], "INFO",
                  [f"inventory reserved order={oid[i]} skus={items[i]} warehouse={w}"
                   for i, w in zip(done, ch.pick(("FRA1", "AMS2"), len(done)))]))
    lines.append((t_conf[done], [hosts[i] for i in done], "INFO",
                  [f"order={oid[i]} confirmed, confirmation email queued" for i in done]))
    lines += cart_lines(ch) + pool_lines(ch) + heartbeat_lines(ch)
    for ts, h, level, msgs in lines:
        ts = np.asarray(ts, float)
        h = h if isinstance(h, list) else [h] * ts.size
        ch.add(ts, "checkout", h, level, checkout_tag(ch, h, ts), msgs)


def cart_lines(ch):
    ts = ch.events(ch.rate("checkout", 0.4))
    n = ts.size
    msgs = [f"cart {c} updated: {k} items, subtotal {s:.2f} EUR"
            for c, k, s in zip(ch.hexes(n, 12), ch.rng.integers(1, 9, n).tolist(), (ch.lognormal(n, 0.7) * 55).tolist())]
    return [(ts, ch.pick(API, n), "INFO", msgs)]


def pool_lines(ch):
    """Each host's database pool every 15 s: in use follows load and a slow drift."""
    out = []
    for host in API:
        ts = ch.periodic(ch.state.every(15.0))
        used = np.clip(np.round(4 + 16 * ch.load(ts) * ch.drift("pool", ts) + ch.rng.normal(0, 2, ts.size)), 0, 50)
        used = used.astype(int).tolist()
        out.append((ts, host, "INFO", [f"db pool stats: in_use={u} idle={50 - u} waiting={max(0, u - 47)}"
                                      for u in used]))
    return out


def heartbeat_lines(ch):
    """Each host's checkout every 5 min: version and uptime (two days before the run, or since the deploy)."""
    dep = ch.plan.deploy()
    out = []
    for k, host in enumerate(API):
        ts = ch.periodic(ch.state.every(300.0), 2.0)
        up = ch.clock.t_start - 2 * 86400.0
        started = np.where((dep is not None) & (ts >= (dep.start if dep else 0.0) + 120.0 * k + 5.0),
                           (dep.start if dep else 0.0) + 120.0 * k + 5.0, up)
        out.append((ts, host, "INFO", [f"checkout {v} healthy: workers=4 uptime={int(t - s)}s"
                                       for v, t, s in zip(version_at(ch, ts), ts.tolist(), started.tolist())]))
    return out


def deploy_lines(ch):
    """The rolling deploy: each API host's checkout stops, is silent half a minute, starts the new version."""
    dep = ch.plan.deploy()
    if dep is None or not (ch.t0 <= dep.start < ch.t1):
        return
    for k, host in enumerate(API):
        down = dep.start + 120.0 * k
        up = down + 5.0 + dep.detail["down_s"][k]
        old, new = ch.state.pids[host], ch.state.pids[host] + 1634
        ch.add([down, down + 0.2, down + 0.4], "checkout", host, "INFO", f"checkout[{old}]",
               ["Handling signal: term", f"Worker exiting (pid: {old + 3})", "Shutting down: Master"])
        ch.add([up, up + 0.1, up + 0.3, up + 2.5], "checkout", host, "INFO", f"checkout[{new}]",
               ["Starting gunicorn 21.2.0", f"Listening at: http://0.0.0.0:8000 ({new})",
                f"Booting worker with pid: {new + 3}", f"checkout {NEW_VERSION} ready (build 9c41e07, python 3.11.8)"])


CATEGORIES = ("women/dresses", "men/shirts", "shoes", "accessories", "sale", "kids", "outdoor")


def catalog_lines(ch):
    """Product views (cache hits are cheap) and category listings; a scraper adds cache-missing views."""
    views = ch.events(ch.rate("catalog", 0.8))
    for inc in ch.plan.of("volume_spike", "catalog", ch.t0, ch.t1):
        extra = ch.events((inc.detail["factor"] - 1.0) * ch.rate("catalog", 0.8))
        views = np.sort(np.concatenate([views, extra[inc.inside(extra)]]))
    n = views.size
    hit = ch.rng.random(n) < 0.85
    ms = (np.where(hit, 4.0, 35.0) * ch.drift("catalog", views) * (0.8 + 0.2 * ch.load(views)) * ch.lognormal(n, 0.4)
          * ch.plan.multiplier(views, "latency_drift", "catalog"))
    msgs = [f"product sku={s} served in {m:.1f} ms cache={'hit' if h else 'miss'}"
            for s, m, h in zip(ch.rng.integers(1000, 99999, n).tolist(), ms.tolist(), hit.tolist())]
    hosts = ch.pick(API, n)
    ch.add(views, "catalog", hosts, "INFO", [f"catalog[{ch.state.pids['cat-' + h]}]" for h in hosts], msgs)
    lists = ch.events(ch.rate("catalog", 0.2))
    k = lists.size
    ms = 22.0 * ch.drift("catalog", lists) * ch.lognormal(k, 0.4) * ch.plan.multiplier(lists, "latency_drift", "catalog")
    msgs = [f"category {c} page {p} listed {m} products in {t:.1f} ms"
            for c, p, m, t in zip(ch.pick(CATEGORIES, k), ch.rng.integers(1, 12, k).tolist(),
                                  ch.rng.integers(10, 48, k).tolist(), ms.tolist())]
    hosts = ch.pick(API, k)
    ch.add(lists, "catalog", hosts, "INFO", [f"catalog[{ch.state.pids['cat-' + h]}]" for h in hosts], msgs)


QUERIES = (
    ("SELECT id, name, price, stock FROM products WHERE id = $1", 0.8, 0.35),
    ("SELECT * FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT 20", 3.5, 0.15),
    ("INSERT INTO orders (customer_id, total, status) VALUES ($1, $2, $3) RETURNING id", 2.0, 0.15),
    ("UPDATE inventory SET reserved = reserved + $1 WHERE sku = $2", 1.5, 0.15),
    ("SELECT sku, qty FROM cart_items WHERE cart_id = $1", 0.6, 0.20),
)
TABLES = ("orders", "order_items", "products", "inventory", "customers", "cart_items", "sessions", "payments")


def pg_tags(ch, n):
    return [f"postgres[{p}]" for p in ch.rng.integers(20000, 60000, n).tolist()]


def postgres_lines(ch):
    """Statement durations, connections, checkpoints every 5 min, autovacuum at night."""
    ts = ch.events(ch.rate("postgres", 0.7))
    n = ts.size
    q = ch.rng.choice(len(QUERIES), n, p=[x[2] for x in QUERIES])
    ms = (np.array([x[1] for x in QUERIES])[q] * ch.drift("postgres", ts) * (0.7 + 0.3 * ch.load(ts))
          * ch.lognormal(n, 0.6) * ch.plan.multiplier(ts, "latency_drift", "postgres"))
    ch.add(ts, "postgres", "db-1", "INFO", pg_tags(ch, n),
           [f"LOG:  duration: {m:.3f} ms  execute <unnamed>: {QUERIES[k][0]}" for m, k in zip(ms.tolist(), q.tolist())])
    ts = ch.events(ch.rate("postgres", 0.3))
    n = ts.size
    first = ch.rng.random(n) < 0.5
    msgs = [f"LOG:  connection authorized: user=shop database=shop application_name={a}" if f else
            f"LOG:  disconnection: session time: 0:{m:02d}:{s:06.3f} user=shop database=shop host=10.0.2.{h} port={p}"
            for f, a, m, s, h, p in zip(first.tolist(), ch.pick(("checkout", "catalog", "celery"), n),
                                        ch.rng.integers(0, 30, n).tolist(), ch.rng.uniform(0, 60, n).tolist(),
                                        ch.rng.integers(11, 40, n).tolist(), ch.rng.integers(32768, 60999, n).tolist())]
    ch.add(ts, "postgres", "db-1", "INFO", pg_tags(ch, n), msgs)
    ts = ch.periodic(ch.state.every(300.0))
    for t in ts.tolist():
        wrote = int(200 + 1800 * ch.load(np.array([t]))[0] * ch.rng.uniform(0.7, 1.3))
        w = wrote / 1000.0 * 26.9
        ch.add([t, t + w + 0.4], "postgres", "db-1", "INFO", "postgres[1187]",
               ["LOG:  checkpoint starting: time",
                f"LOG:  checkpoint complete: wrote {wrote} buffers ({wrote / 163.84:.1f}%); 0 WAL file(s) added, "
                f"0 removed, {int(ch.rng.integers(1, 4))} recycled; write={w:.3f} s, sync=0.0{int(ch.rng.integers(10, 99))} s, "
                f"total={w + 0.1:.3f} s"])
    ts = ch.events(2.0 * ch.clock.night[ch.m])
    n = ts.size
    ch.add(ts, "postgres", "db-1", "INFO", pg_tags(ch, n),
           [f'LOG:  automatic vacuum of table "shop.public.{t}": index scans: 1, pages: 0 removed, {p} remain'
            for t, p in zip(ch.pick(TABLES, n), ch.rng.integers(100, 90000, n).tolist())])


def celery_lines(ch):
    """Email tasks follow orders, beat every minute, queue depth every 30 s, exports at night, a weekly report."""
    ts = ch.events(ch.rate("celery", 0.9) / 2.0)
    n = ts.size
    ids = ch.uuids(n)
    took = 0.2 * ch.lognormal(n, 0.5)
    ch.add(ts, "celery", "worker-1", "INFO", "celery",
           [f"Task shop.tasks.send_order_email[{i}] received" for i in ids])
    ch.add(ts + took + 0.01, "celery", "worker-1", "INFO", "celery",
           [f"Task shop.tasks.send_order_email[{i}] succeeded in {t:.3f}s: None" for i, t in zip(ids, took.tolist())])
    ts = ch.periodic(ch.state.every(60.0))
    ch.add(ts, "celery", "worker-1", "INFO", "celery",
           ["Scheduler: Sending due task refresh-stock (shop.tasks.refresh_stock)"] * ts.size)
    ts = ch.periodic(ch.state.every(30.0))
    n = ts.size
    load, night = ch.load(ts), ch.clock.night[ch.clock.minute(ts)]
    emails = ch.rng.poisson(2 + 6 * load * ch.drift("queue", ts)) * ch.plan.multiplier(ts, "unusual_value", "celery")
    ch.add(ts, "celery", "worker-1", "INFO", "celery",
           [f"queue depth: default={d} emails={int(e)} exports={x}"
            for d, e, x in zip(ch.rng.poisson(3 * load).tolist(), emails.tolist(), ch.rng.poisson(40 * night).tolist())])
    per_min = 0.03 * ch.state.lpd / (3.5 * 60.0) * ch.clock.night[ch.m]
    ts = ch.events(per_min)
    n = ts.size
    export = ch.rng.random(n) < 0.6
    ch.add(ts, "celery", "worker-1", "INFO", "celery",
           [f"Task shop.tasks.export_orders_partition[{i}] succeeded in {s:.2f}s: {{'rows': {r}, 'part': {p}}}" if e else
            f"Task shop.tasks.reindex_products[{i}] succeeded in {s:.2f}s: {{'docs': {r}}}"
            for i, e, s, r, p in zip(ch.uuids(n), export.tolist(), (4 * ch.lognormal(n, 0.5)).tolist(),
                                     ch.rng.integers(500, 5000, n).tolist(), ch.rng.integers(0, 512, n).tolist())])
    weekly_report(ch)


def weekly_report(ch):
    for day in np.unique(ch.clock.t[ch.m][ch.clock.sunday[ch.m]] // 86400.0):
        t = day * 86400.0 + 5 * 3600.0
        if ch.t0 <= t < ch.t1:
            i = ch.uuids(1)[0]
            ch.add([t, t + 312.4], "celery", "worker-1", "INFO", "celery",
                   [f"Task shop.tasks.weekly_sales_report[{i}] received",
                    f"Task shop.tasks.weekly_sales_report[{i}] succeeded in 312.4s: 'reports/weekly/sales.pdf'"])


def search_lines(ch):
    """Queries, young GCs with a heap that creeps and follows load, bulk indexing at night."""
    ts = ch.events(ch.rate("search", 0.9))
    n = ts.size
    ms = (18.0 * ch.drift("search", ts) * (0.7 + 0.3 * ch.load(ts)) * ch.lognormal(n, 0.5)
          * ch.plan.multiplier(ts, "latency_drift", "search"))
    ch.add(ts, "search", "search-1", "INFO", "search",
           [f'query index=products q="{q}" took {int(m)}ms hits={h}'
            for q, m, h in zip(ch.pick(SEARCH_TERMS, n), ms.tolist(), ch.rng.integers(0, 400, n).tolist())])
    ts = ch.periodic(ch.state.every(45.0), 5.0)
    n = ts.size
    after = 700 * ch.drift("heap", ts) + 250 * ch.load(ts) + ch.rng.normal(0, 40, n)
    before = after + ch.rng.uniform(400, 900, n)
    ch.add(ts, "search", "search-1", "INFO", "search",
           [f"[gc][young][{k}] heap {int(b)}MB->{int(a)}MB/4096MB, pause {p}ms"
            for k, b, a, p in zip(ch.rng.integers(1000, 9999, n).tolist(), before.tolist(), after.tolist(),
                                  ch.rng.integers(4, 40, n).tolist())])
    ts = ch.events(3.0 * ch.clock.night[ch.m])
    n = ts.size
    ch.add(ts, "search", "search-1", "INFO", "search",
           [f"bulk index products: {d} docs in {m}ms" for d, m in zip(ch.rng.integers(200, 1000, n).tolist(),
                                                                      ch.rng.integers(300, 3000, n).tolist())])


def cron_lines(ch):
    """CRON's health check every 5 min and hourly session rotation; the nightly backup at 02:10."""
    ts = np.concatenate([ch.periodic(300.0, 0.2), ch.periodic(3600.0, 0.2) + 17 * 60])
    ts = ts[ts < ch.t1]
    hourly = np.isclose(ts % 3600.0, 17 * 60, atol=1.0)
    msgs = ["(shop) CMD (/srv/shop/bin/rotate-sessions)" if h else "(root) CMD (/usr/local/bin/shop-healthcheck --quiet)"
            for h in hourly.tolist()]
    ch.add(ts, "CRON", "cron-1", "INFO", [f"CRON[{p}]" for p in ch.rng.integers(30000, 99999, ts.size).tolist()], msgs)
    for day in np.unique(ch.clock.t[ch.m] // 86400.0):
        t = day * 86400.0 + 2 * 3600.0 + 600.0
        if ch.t0 <= t < ch.t1:
            backup_lines(ch, t)


def backup_lines(ch, t):
    ch.add([t], "CRON", "cron-1", "INFO", f"CRON[{int(ch.rng.integers(30000, 99999))}]",
           ["(backup) CMD (/usr/local/bin/pg-backup --all)"])
    took = ch.rng.uniform(5, 60, len(TABLES))
    stamps = t + 1.0 + np.cumsum(took)
    lines = [(t + 0.5, "backup started: pg_dump shop (format=custom, compress=6)")]
    lines += [(s, f"dumped table public.{tb}: {r} rows in {d:.1f} s")
              for s, tb, r, d in zip(stamps.tolist(), TABLES, ch.rng.integers(1000, 3_000_000, len(TABLES)).tolist(),
                                     took.tolist())]
    end = stamps[-1]
    size = int(ch.rng.uniform(1800, 2400))
    lines += [(end + 1, f"backup finished: {size} MB in {end - t:.0f} s"),
              (end + 40, f"upload to s3://shop-backups/{iso(t)[:10]}/shop.dump done in {ch.rng.uniform(30, 50):.1f} s"),
              (end + 41, f"pruned {int(ch.rng.integers(1, 3))} backups older than 14 days")]
    ch.add([x[0] for x in lines], "backup", "cron-1", "INFO", "backup", [x[1] for x in lines])


# ---------------------------------------------------------------- errors, incidents, restarts

PROGRAM_HOSTS = {"nginx": WEB, "checkout": API, "catalog": API, "postgres": ["db-1"], "celery": ["worker-1"],
                 "search": ["search-1"]}
# The error each service logs now and then (share of its lines); an error burst multiplies it.
KNOWN_ERRORS = {
    "nginx": ("ERROR", 0.0015, '[error] 31#31: *{n} upstream timed out (110: Connection timed out) while reading '
              'response header from upstream, client: {ip}, server: shop.example.com, request: "POST /checkout '
              'HTTP/1.1", upstream: "http://10.0.1.{k}:8000/checkout"'),
    "checkout": ("ERROR", 0.002, "payment provider {prov} timed out after {ms} ms order=SO-{n}"),
    "postgres": ("ERROR", 0.002, "ERROR:  deadlock detected (process {p} waits for ShareLock on transaction {n}; "
                 "blocked by process {p2})"),
    "celery": ("WARNING", 0.003, "Task shop.tasks.send_order_email[{uuid}] retry: Retry in 30s: "
               "SMTPServerDisconnected('Connection unexpectedly closed')"),
    "catalog": ("ERROR", 0.001, "image service returned 503 for product sku={k}, using placeholder"),
    "search": ("WARNING", 0.002, 'slow query took {ms}ms index=products q="{q}"'),
}
# Errors nobody has seen before, two per service (incident detail "variant").
NEW_ERRORS = {
    "checkout": ("unhandled exception in PromotionEngine.apply: KeyError('tier') order=SO-{n}",
                 "refund webhook rejected: signature mismatch for event evt_{hex}"),
    "celery": ("Task shop.tasks.send_order_email[{uuid}] raised unexpected: ConnectionRefusedError(111, "
               "'Connection refused')",
               "Task shop.tasks.sync_stock[{uuid}] raised unexpected: TimeoutError('ERP stock API did not answer in 30s')"),
    "postgres": ('ERROR:  could not extend file "base/16384/{n}": No space left on device',
                 'ERROR:  canceling statement due to lock timeout (relation "inventory", process {p})'),
    "search": ("circuit_breaking_exception: [parent] Data too large, data for [<http_request>] would be [{n}/3.9gb], "
               "which is larger than the limit of [4080218931/3.8gb]",
               "shard [products][{k}] failed: CorruptIndexException: checksum failed (hardware problem?)"),
}


def fill_template(ch, template, n):
    """n messages of a template with fresh values in its {fields}."""
    values = {"n": ch.rng.integers(1000, 9_999_999, n).tolist(), "k": ch.rng.integers(2, 250, n).tolist(),
              "ms": ch.rng.integers(5000, 30000, n).tolist(), "p": ch.rng.integers(20000, 60000, n).tolist(),
              "p2": ch.rng.integers(20000, 60000, n).tolist(), "ip": ch.ips(n), "uuid": ch.uuids(n),
              "hex": ch.hexes(n, 24), "prov": ch.pick(PROVIDERS, n), "q": ch.pick(SEARCH_TERMS, n)}
    return [template.format(**{k: v[i] for k, v in values.items()}) for i in range(n)]


def tags_for(ch, program, hosts):
    if program == "checkout":
        return None
    if program == "catalog":
        return [f"catalog[{ch.state.pids['cat-' + h]}]" for h in hosts]
    if program == "postgres":
        return pg_tags(ch, len(hosts))
    return program


def error_lines(ch):
    """Each service's occasional known error; error bursts and new errors of the plan."""
    for program, (level, share, template) in KNOWN_ERRORS.items():
        base = ch.rate(program, share)
        ts = ch.events(base)
        for inc in ch.plan.of("error_burst", program, ch.t0, ch.t1):
            extra = ch.events(np.maximum(base * inc.detail["factor"], 4.0))
            ts = np.sort(np.concatenate([ts, extra[inc.inside(extra)]]))
        add_service_lines(ch, program, ts, level, fill_template(ch, template, ts.size))
    for program, templates in NEW_ERRORS.items():
        for inc in ch.plan.of("new_error", program, ch.t0, ch.t1):
            ts = ch.events(np.maximum(ch.rate(program, 0.01), 1.5))
            ts = ts[inc.inside(ts)]
            add_service_lines(ch, program, ts, "ERROR", fill_template(ch, templates[inc.detail["variant"]], ts.size))


def add_service_lines(ch, program, ts, level, msgs):
    hosts = ch.pick(PROGRAM_HOSTS[program], ts.size)
    tags = tags_for(ch, program, hosts)
    ch.add(ts, program, hosts, level, checkout_tag(ch, hosts, ts) if tags is None else tags, msgs)


RESTART_LINES = {
    "postgres": (("LOG:  received fast shutdown request", "LOG:  aborting any active transactions",
                  "LOG:  database system is shut down"),
                 ("LOG:  database system was shut down at {iso}", "LOG:  database system is ready to accept connections")),
    "celery": (("worker: Warm shutdown (MainProcess)",),
               ("Connected to redis://redis-1:6379/0", "celery@worker-1 ready.")),
    "search": (("stopping ...", "stopped", "closing ..."),
               ("initializing ...", "started", "recovered [3] indices into cluster_state")),
    "rsyslogd": (('[origin software="rsyslogd" swVersion="8.2312.0" x-pid="{pid}" x-info="https://www.rsyslog.com"] '
                  'exiting on signal 15.',),
                 ('[origin software="rsyslogd" swVersion="8.2312.0" x-pid="{pid}" x-info="https://www.rsyslog.com"] '
                  'start',)),
}


def restart_lines(ch):
    """Shutdown lines, then nothing (the gap, dropped by Writer), then start-up lines."""
    for e in ch.plan.events:
        if e.kind not in ("restart", "log_gap") or not (ch.t0 <= e.start < ch.t1):
            continue
        down, up = RESTART_LINES[e.source]
        host = "log-1" if e.source == "rsyslogd" else PROGRAM_HOSTS[e.source][0]
        tag = "postgres[1187]" if e.source == "postgres" else e.source
        pid = int(ch.rng.integers(500, 3000))
        ch.add(e.start - 1.0 + 0.2 * np.arange(len(down)), e.source, host, "INFO", tag,
               [x.format(pid=pid) for x in down])
        ch.add(e.end + 0.5 + 0.3 * np.arange(len(up)), e.source, host, "INFO", tag,
               [x.format(pid=pid + 1, iso=iso(e.start)) for x in up])


STREAMS = (nginx_lines, checkout_lines, deploy_lines, catalog_lines, postgres_lines, celery_lines, search_lines,
           cron_lines, error_lines, restart_lines)


# ---------------------------------------------------------------- writing

class Writer:
    """Writes chunks in time order; drops what restarts, log gaps and outages silence; counts labelled lines."""

    def __init__(self, path, events):
        self.fh = open(path, "w", encoding="utf-8", buffering=1 << 20)
        self.lines = 0
        self.silences = []          # (program index or -1 for all, host index or -1 for all, start, end)
        for e in events:
            if e.kind in ("restart", "silent_source"):
                self.silences.append((PROGRAMS.index(e.source), -1, e.start, e.end))
            elif e.kind == "log_gap":
                self.silences.append((-1, -1, e.start, e.end))
            elif e.kind == "deploy":
                for k, host in enumerate(API):
                    down = e.start + 120.0 * k + 1.0
                    self.silences.append((PROGRAMS.index("checkout"), HOSTS.index(host), down,
                                          down + 4.0 + e.detail["down_s"][k]))
        self.labelled = [e for e in events if e.id >= 0]
        self.counts = {e.id: 0 for e in self.labelled}
        self.carry = (np.empty(0), np.empty(0, np.int8), np.empty(0, np.int8), [])

    def add(self, chunk, until):
        ts = np.concatenate([self.carry[0]] + chunk.ts)
        prog = np.concatenate([self.carry[1]] + chunk.prog)
        host = np.concatenate([self.carry[2]] + chunk.host)
        text = self.carry[3] + chunk.text
        keep = np.ones(ts.size, bool)
        for p, h, a, b in self.silences:
            keep &= ~(((prog == p) | (p < 0)) & ((host == h) | (h < 0)) & (ts >= a) & (ts < b))
        ms = np.floor(ts * 1000.0).astype(np.int64)
        order = np.flatnonzero(keep)
        order = order[np.argsort(ms[order], kind="stable")]
        cut = order.size if until is None else int(np.searchsorted(ms[order], int(until * 1000), "left"))
        now, later = order[:cut], order[cut:]
        self.write(ms[now], prog[now], ts[now], [text[i] for i in now.tolist()])
        self.carry = (ts[later], prog[later], host[later], [text[i] for i in later.tolist()])

    def write(self, ms, prog, ts, text):
        stamps = np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms").tolist()
        self.fh.write("".join(f"{s}Z{t}" for s, t in zip(stamps, text)))
        self.lines += len(text)
        for e in self.labelled:
            self.counts[e.id] += int(np.count_nonzero((prog == PROGRAMS.index(e.source)) & e.inside(ts)))

    def close(self):
        self.fh.close()


@dataclass
class ShopWorkload:
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
    cascades: list = field(default_factory=list)     # labels.json "cascades" (generate(cascades=N))


def generate(out_dir, days=3.0, seed=0, lines_per_day=DEFAULT_LINES_PER_DAY, start=START, warmup_days=None,
             cascades=0):
    """Write shop.log and labels.json into out_dir; lines_per_day is a weekday's volume (weekends are lower).
    cascades: per post-warm-up day, a dependency's fault spreading to two dependents plus an unrelated
    incident (bench/shop_cascades.py, labelled under "cascades"); 0 (default) leaves the output as it was."""
    if days <= 0 or lines_per_day <= 0:
        raise ValueError("days and lines_per_day must be positive")
    os.makedirs(out_dir, exist_ok=True)
    t_start = parse_time(start) if isinstance(start, str) else float(start)
    n_min = max(1, int(round(days * 1440)))
    t_end = t_start + 60.0 * n_min
    t_warm = t_start + 86400.0 * (min(1.0, days / 2.0) if warmup_days is None else float(warmup_days))
    seeds = np.random.SeedSequence(seed).spawn(3)
    clock = Clock(np.random.default_rng(seeds[0]), t_start, n_min)
    plan_rng = np.random.default_rng(seeds[1])
    events = schedule(plan_rng, t_start, t_end, t_warm)
    for e in events:
        if e.kind == "deploy":
            e.detail["down_s"] = plan_rng.uniform(20.0, 40.0, len(API)).tolist()
    plan, state = Plan(events, clock), State(float(lines_per_day))
    rng = np.random.default_rng(seeds[2])
    extra, groups, crng = [], [], None
    if cascades:
        # A stream of its own: the draws of the seed without cascades stay what they were.
        crng = np.random.default_rng(np.random.SeedSequence([seed, 17]))
        extra, groups = shop_cascades.schedule(crng, events, t_start, t_end, t_warm, cascades, Event)
        ips = [f"{a % 223 + 1}.{b}.{c}.{d}" for a, b, c, d in crng.integers(1, 255, (200, 4)).tolist()]
    path = os.path.join(out_dir, LOG_FILE)
    writer = Writer(path, events + extra)
    try:
        for m0 in range(0, n_min, CHUNK_MIN):
            t0, t1 = t_start + 60.0 * m0, t_start + 60.0 * min(n_min, m0 + CHUNK_MIN)
            chunk = Chunk(rng, clock, plan, state, t0, t1)
            for stream in STREAMS:
                stream(chunk)
            if extra:
                shop_cascades.add_lines(crng, chunk, extra, ips)
            writer.add(chunk, t1 if t1 < t_end else None)
    finally:
        writer.close()
    return write_labels(out_dir, path, writer, events + extra, seed, days, lines_per_day, t_start, t_end, t_warm,
                        groups)


def write_labels(out_dir, path, writer, events, seed, days, lines_per_day, t_start, t_end, t_warm, cascades=()):
    def rec(e):
        return {"kind": e.kind, "source": e.source, "start": e.start, "end": e.end, "start_iso": iso(e.start),
                "end_iso": iso(e.end), "detail": e.detail}
    incidents = [{"id": e.id} | rec(e) | {"n_lines": writer.counts[e.id]} for e in events if e.id >= 0]
    unlabelled = [rec(e) for e in events if e.id < 0]
    doc = {"version": 1, "family": "shop", "seed": seed, "days": days, "lines_per_day": lines_per_day, "fmt": "plain",
           "start": t_start, "end": t_end, "warmup_end": t_warm, "start_iso": iso(t_start), "end_iso": iso(t_end),
           "sources": list(PROGRAMS), "files": [LOG_FILE], "lines_per_file": {LOG_FILE: writer.lines},
           "incidents": incidents, "unlabelled": unlabelled}
    if cascades:
        doc["cascades"] = list(cascades)
    labels_path = os.path.join(out_dir, LABELS_FILE)
    with open(labels_path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
    return ShopWorkload(out_dir=out_dir, files=[path], labels_path=labels_path, lines=writer.lines, seed=seed,
                        start=t_start, end=t_end, warmup_end=t_warm, incidents=incidents, unlabelled=unlabelled,
                        cascades=list(cascades))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines-per-day", type=int, default=DEFAULT_LINES_PER_DAY)
    p.add_argument("--cascades", type=float, default=0,
                   help="cascades per post-warm-up day (default 0: none, a seed's output unchanged)")
    args = p.parse_args(argv)
    w = generate(args.out_dir, args.days, args.seed, args.lines_per_day, cascades=args.cascades)
    print(f"{w.files[0]}: {w.lines} lines, {len(w.incidents)} labelled incidents, {len(w.unlabelled)} unlabelled "
          f"happenings; labels in {w.labels_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
