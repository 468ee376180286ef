"""Cascades for generated workloads: one fault spreading to dependent sources, plus an unrelated incident.

Opt-in (generator.generate(cascades=N)): without it nothing here runs and a seed's output is unchanged.
A cascade starts in a dependency (db slow, a cache down, a queue stuck); 10-90 s later each of two
dependents fails in turn, their messages naming the dependency's host as real services do
(`timeout waiting for db-primary-1:5432`), and an unrelated incident begins in another source within a
couple of minutes of the root. Labels (labels.json "cascades") say which incidents belong together and
which one came first; bench/situation_bench.py scores `replay --situations` against them.
Neighbours: generator.py (merges these lines with the services'), incidents.py (the Incident class).
"""
import numpy as np

from anomaly_detector.workload.incidents import Incident
from anomaly_detector.workload.services import ERROR, FATAL, SOURCES, WARN, hex_ids, in_window

# kind -> (root, dependents): (source, level, message template); {n} a number, {id} a request id,
# {ip} a client address. The dependents name the root's host; the unrelated ones name nothing of them.
KINDS = {
    "db_slow": (
        ("db", ERROR, "lock wait timeout exceeded on table orders host=db-primary-1 txn={n}"),
        (("app", ERROR, "timeout waiting for db-primary-1:5432 after 3000 ms request {id}"),
         ("web", ERROR, 'upstream timed out (110: Connection timed out) while reading response header from '
                        'upstream, client: {ip}, request: "POST /api/v1/checkout HTTP/1.1", '
                        'upstream: "http://app-1:8080/api/v1/checkout"'))),
    "cache_down": (
        ("health", ERROR, "health check failed target=cache-1 latency_ms=5000.0 status=down attempt={n}"),
        (("app", ERROR, "cache unavailable: connection refused cache-1:6379 key=product:{n}"),
         ("db", WARN, "too many connections for role shop from app-1 (active={n})"))),
    "queue_stuck": (
        ("batch", ERROR, "consumer stalled on queue-1: {n} messages pending host=batch-1"),
        (("app", ERROR, "publish to queue-1 timed out after 2000 ms order {id}"),
         ("health", ERROR, "health check failed target=queue-1 latency_ms={n}.0 status=degraded"))),
}
UNRELATED = {
    "batch": (ERROR, "job report-daily failed: disk quota exceeded on /var/reports ({n} MB over)"),
    "web": (ERROR, "client intended to send too large body: {n} bytes, client: {ip}, server: shop.example.com"),
    "db": (WARN, "replication slot slot_{id} inactive, retaining {n} MB of WAL"),
    "app": (FATAL, "feature flag service returned malformed payload for flag ff_{id} (length={n})"),
    "health": (WARN, "health check flapping target=search-1 latency_ms={n}.0 status=up"),
}
DELAY_S = (10.0, 90.0)        # from one failing source to the next
BLOCK_S = 25 * 60.0           # a cascade and its unrelated incident fit in this: longest duration plus delays
DURATION_MIN = (5, 15)
PER_MINUTE = (20.0, 60.0)
UNRELATED_OFFSET_S = (-60.0, 120.0)
CLEAR_S = 600.0               # cascades keep this far from the other incidents and each other


def schedule(rng, plan, t_from, t_to, per_day, first_id):
    """Cascade incidents (root, dependents, unrelated) and their groups, placed clear of `plan`."""
    n = max(1, int(round(per_day * (t_to - t_from) / 86400.0)))
    busy = [(i.start, i.end) for i in plan]
    incidents, groups = [], []
    kinds = list(KINDS)
    for c in range(n):
        kind = kinds[c % len(kinds)] if c < len(kinds) else str(rng.choice(kinds))
        start = _free_start(rng, busy, t_from, t_to - BLOCK_S)
        if start is None:
            break
        made = _cascade(rng, kind, start, first_id + len(incidents), len(groups))
        busy.append((start - 300.0, max(i.end for i in made)))
        groups.append({"id": len(groups), "kind": kind, "root": made[0].id,
                       "members": [i.id for i in made[:-1]], "unrelated": [made[-1].id]})
        incidents += made
    return incidents, groups


def _free_start(rng, busy, lo, hi):
    for _ in range(400):
        t = 60.0 * round(float(rng.uniform(lo, hi)) / 60.0)
        if all(t + BLOCK_S + CLEAR_S <= a or t >= b + CLEAR_S for a, b in busy):
            return t
    return None


def _cascade(rng, kind, start, first_id, group):
    root, dependents = KINDS[kind]
    out, t = [], start
    duration = 60.0 * float(rng.integers(*DURATION_MIN))
    for k, (source, level, template) in enumerate((root,) + dependents):
        if k:
            t += float(rng.uniform(*DELAY_S))
        out.append(Incident(first_id + k, "new_error", source, t, t + duration,
                            {"template": template, "level": level, "per_minute": float(rng.uniform(*PER_MINUTE)),
                             "cascade": group, "role": "root" if k == 0 else "dependent", "cascade_kind": kind}))
    taken = {root[0]} | {d[0] for d in dependents}
    source = str(rng.choice(sorted(set(UNRELATED) - taken)))
    level, template = UNRELATED[source]
    u = start + float(rng.uniform(*UNRELATED_OFFSET_S))
    out.append(Incident(first_id + len(out), "new_error", source, u, u + duration,
                        {"template": template, "level": level, "per_minute": float(rng.uniform(*PER_MINUTE)),
                         "cascade": group, "role": "unrelated", "cascade_kind": kind}))
    return out


def parts(rng, incidents, t0, t1):
    """This chunk's cascade lines, as generator.Merger parts: (ts, levels, tags, messages, source index)."""
    out = []
    for inc in incidents:
        if not (inc.start < t1 and inc.end > t0):
            continue
        d = inc.detail
        n = rng.poisson(d["per_minute"] * (t1 - t0) / 60.0)
        ts = np.sort(t0 + (t1 - t0) * rng.random(n))
        ts = ts[in_window(ts, inc)]
        if t0 <= inc.start < t1:
            ts = np.append(inc.start, ts)     # the onset itself is a line
        msgs = [_fill(rng, d["template"]) for _ in range(ts.size)]
        out.append((ts, np.full(ts.size, d["level"], np.int8), np.full(ts.size, inc.id, np.int32), msgs,
                    SOURCES.index(inc.source)))
    return out


def _fill(rng, template):
    values = {}
    if "{n}" in template:
        values["n"] = int(rng.integers(10, 9999))
    if "{id}" in template:
        values["id"] = hex_ids(rng, 1)[0]
    if "{ip}" in template:
        values["ip"] = "%d.%d.%d.%d" % tuple(int(x) for x in rng.integers(1, 255, 4))
    return template.format(**values)
