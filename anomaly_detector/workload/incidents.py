"""Scripted, labelled incidents for generated workloads: what goes wrong, where, when and how badly.

schedule() places them after the warm-up without overlap; services.py applies them while
generating lines and generator.py writes which output lines belong to each one.
"""
from dataclasses import dataclass, field

from anomaly_detector.workload.services import (
    ERROR,
    FATAL,
    NEW_AUTH_METHODS,
    NEW_DB_HOSTS,
    NEW_HTTP_STATUSES,
    NEW_PAYMENT_PROVIDERS,
)

KINDS = ("error_burst", "new_error", "latency_drift", "broken_workflow", "unusual_value",
         "volume_spike", "volume_drop", "silent_source")

# Minutes each kind lasts (min, max): long enough to be an incident an operator would care about.
DURATION_MIN = {
    "error_burst": (4, 15), "new_error": (2, 20), "latency_drift": (30, 120), "broken_workflow": (15, 60),
    "unusual_value": (10, 40), "volume_spike": (10, 30), "volume_drop": (30, 120), "silent_source": (15, 90),
}
SOURCES = {
    "error_burst": ("app", "db", "web"), "new_error": ("app", "db", "batch"), "latency_drift": ("db", "db", "app"),
    "broken_workflow": ("app",), "unusual_value": ("web", "db", "app"), "volume_spike": ("web", "app", "db"),
    "volume_drop": ("web", "app", "db"), "silent_source": ("web", "app", "db", "health"),
}
NEW_ERRORS = {
    "app": (("unhandled exception in OrderService.apply_discount: KeyError 'coupon_code' request {id}", ERROR),
            ("circuit breaker opened for payment-gateway after {n} consecutive failures", ERROR),
            ("serializer failed for field shipping_address: value too long (length={n}) request {id}", ERROR),
            ("worker {n} killed: out of memory (rss above limit)", FATAL)),
    "db": (("could not extend file base/16384/{n}: No space left on device", FATAL),
           ("index idx_orders_created is corrupted: unexpected zero page at block {n}", ERROR),
           ("could not serialize access due to read/write dependencies among transactions txn={n}", ERROR),
           ("archive command failed with exit code {n} for segment {id}", ERROR)),
    "batch": (("job etl-orders failed: checksum mismatch in part {n} of export {id}", ERROR),
              ("job nightly-backup aborted: remote storage returned 403 Forbidden for object {id}", ERROR),
              ("cannot acquire lock /var/lock/batch/{id}.lock held by pid {n}", ERROR)),
}
DRIFT_QUERIES = ("select:products", "select:orders", "select:users", "select:sessions", "select:cart_items",
                 "update:sessions")
BROKEN_STEPS = {"checkout": ("payment", "cart", "auth"), "login": ("login",), "browse": ("catalog",)}


@dataclass
class Incident:
    id: int
    kind: str
    source: str
    start: float
    end: float
    detail: dict = field(default_factory=dict)

    def overlaps(self, t0, t1):
        return self.start < t1 and self.end > t0


def expand_kinds(incidents, post_warmup_days):
    """'all' means every kind once per post-warm-up day (at least once); a list is taken as given."""
    if incidents in (None, "none", ()):
        return []
    if incidents == "all":
        per_kind = max(1, int(round(post_warmup_days)))
        return [k for k in KINDS for _ in range(per_kind)]
    kinds = [incidents] if isinstance(incidents, str) else list(incidents)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown incident kind(s) {unknown}; choose from {', '.join(KINDS)}")
    return kinds


def schedule(kinds, rng, t_from, t_to):
    """Give each incident its own slot of [t_from, t_to) in random order, at a random time inside it."""
    kinds = list(kinds)
    rng.shuffle(kinds)
    if not kinds:
        return []
    slot = (t_to - t_from) / len(kinds)
    gap = min(1800.0, 0.25 * slot)
    out = []
    used = set()
    for i, kind in enumerate(kinds):
        lo, hi = DURATION_MIN[kind]
        duration = min(60.0 * rng.uniform(lo, hi), slot - gap)
        duration = max(60.0, 60.0 * round(duration / 60.0))
        slack = max(0.0, slot - gap - duration)
        start = t_from + i * slot + 60.0 * round(rng.uniform(0, slack) / 60.0)
        source = str(rng.choice(SOURCES[kind]))
        out.append(Incident(i, kind, source, start, start + duration, details(kind, source, rng, used)))
    out.sort(key=lambda inc: inc.start)
    for i, inc in enumerate(out):
        inc.id = i
    return out


def details(kind, source, rng, used):
    """How the incident shows itself; services.py reads these fields. `used` keeps new errors new."""
    if kind == "error_burst":
        if source == "web":
            return {"fraction": float(rng.uniform(0.3, 0.7)), "statuses": [502, 503, 504]}
        d = {"per_minute": float(rng.uniform(15, 80))}
        if source == "app":
            d["upstream"] = str(rng.choice(["payment-gateway", "inventory-service"], p=[0.7, 0.3]))
        return d
    if kind == "new_error":
        template, level = fresh(rng, NEW_ERRORS[source], used)
        return {"template": template, "level": level, "per_minute": float(rng.uniform(0.5, 3.0)),
                "count": int(rng.integers(3, 15))}
    if kind == "latency_drift":
        if source == "db":
            return {"query": str(rng.choice(DRIFT_QUERIES)), "factor": float(rng.uniform(6, 20))}
        return {"template": "search query", "factor": float(rng.uniform(6, 15))}
    if kind == "broken_workflow":
        workflow = str(rng.choice(list(BROKEN_STEPS)))
        d = {"workflow": workflow, "mode": str(rng.choice(["skip", "order", "unfinished"])),
             "fraction": float(rng.uniform(0.3, 0.7))}
        step = str(rng.choice(BROKEN_STEPS[workflow]))
        if d["mode"] != "unfinished":
            d["step"] = step  # drawn either way so the random stream does not depend on the mode
        return d
    if kind == "unusual_value":
        if source == "web":
            return {"field": "status", "value": int(fresh(rng, NEW_HTTP_STATUSES, used)),
                    "fraction": float(rng.uniform(0.02, 0.08))}
        if source == "db":
            return {"field": "host", "value": str(fresh(rng, NEW_DB_HOSTS, used)),
                    "fraction": float(rng.uniform(0.05, 0.3))}
        if rng.random() < 0.5:
            return {"field": "provider", "value": str(fresh(rng, NEW_PAYMENT_PROVIDERS, used)),
                    "workflows": ["checkout"], "fraction": float(rng.uniform(0.3, 0.7))}
        return {"field": "method", "value": str(fresh(rng, NEW_AUTH_METHODS, used)),
                "workflows": ["checkout", "browse", "profile"], "fraction": float(rng.uniform(0.1, 0.4))}
    if kind == "volume_spike":
        d = {"factor": float(rng.uniform(5, 15))}
        if source == "web":
            d["ips"] = [f"{int(rng.integers(100, 200))}.{int(rng.integers(0, 255))}.{int(rng.integers(0, 255))}."
                        f"{int(rng.integers(1, 255))}" for _ in range(int(rng.integers(3, 12)))]
            d["agent"] = str(rng.choice(["python-requests/2.31.0", "Go-http-client/1.1", "curl/8.5.0"]))
        return d
    if kind == "volume_drop":
        return {"factor": float(rng.uniform(0.05, 0.2))}
    return {}


def fresh(rng, pool, used):
    """Pick from pool, avoiding what this workload already used: a second outbreak of the same new
    error or value is not new any more. Repeats only once the pool is exhausted."""
    left = [x for x in pool if x not in used] or list(pool)
    pick = left[int(rng.integers(len(left)))]
    used.add(pick)
    return pick
