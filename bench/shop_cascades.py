"""Cascades for the web-shop family (bench/shopgen.py): a dependency's fault spreading to its dependents.

Opt-in (shopgen.generate(cascades=N)); without it nothing here runs and a seed's shop.log is unchanged
(its own random stream). A cascade starts in one program (postgres slow, redis gone for celery, the
celery queue stuck, the search node full); 10-90 s later each of two dependents fails in turn, their
messages naming the dependency's host (`database db-1:5432 timed out`, `upstream: "http://api-1:8000"`);
an unrelated incident begins in another program within a couple of minutes. Written apart from
anomaly_detector/workload/cascades.py (other programs, other words), labelled the same way.
"""
import numpy as np

# kind -> (root, dependents): (program, host, level, tag, template). {n} {k} {ms} numbers, {ip} a client,
# {hex} an id, {q} a search term.
KINDS = {
    "db_slow": (
        ("postgres", "db-1", "ERROR", "postgres[1187]",
         "ERROR:  canceling statement due to lock timeout on relation orders (waited {ms} ms) on db-1"),
        (("checkout", "api-1", "ERROR", "checkout[2211]",
          "database db-1:5432 timed out after {ms} ms acquiring a connection order=SO-{n}"),
         ("nginx", "web-1", "ERROR", "nginx",
          '[error] 31#31: *{n} upstream prematurely closed connection while reading response header from upstream, '
          'client: {ip}, server: shop.example.com, request: "POST /checkout HTTP/1.1", '
          'upstream: "http://api-1:8000/checkout"'))),
    "cache_down": (
        ("celery", "worker-1", "ERROR", "celery",
         "consumer: Cannot connect to redis://redis-1:6379/0: Error 111 connecting to redis-1:6379. "
         "Connection refused. Trying again in {k}.00 seconds..."),
        (("checkout", "api-2", "ERROR", "checkout[2214]",
          "cart cache redis-1:6379 unreachable, session {hex} served without cache"),
         ("catalog", "api-2", "WARNING", "catalog[2307]",
          "cache redis-1:6379 down: product sku={k} rendered uncached in {ms} ms"))),
    "queue_stuck": (
        ("celery", "worker-1", "ERROR", "celery",
         "Task shop.tasks.reserve_inventory[{hex}] stuck: queue inventory backlog {n} messages on worker-1"),
        (("checkout", "api-1", "ERROR", "checkout[2211]",
          "inventory reservation for order=SO-{n} timed out waiting for worker-1 after 30 s"),
         ("nginx", "web-2", "ERROR", "nginx",
          '[error] 31#31: *{n} upstream timed out (110: Connection timed out) while reading response header from '
          'upstream, client: {ip}, server: shop.example.com, request: "POST /checkout HTTP/1.1", '
          'upstream: "http://api-1:8000/checkout"'))),
    "search_full": (
        ("search", "search-1", "ERROR", "search",
         "[ERROR][o.e.c.r.a.DiskThresholdMonitor] [search-1] flood stage disk watermark exceeded, "
         "index products set read-only ({k}% used)"),
        (("catalog", "api-1", "ERROR", "catalog[2301]",
          "search backend search-1:9200 timed out after {ms} ms q={q}"),
         ("nginx", "web-1", "ERROR", "nginx",
          '[error] 31#31: *{n} upstream timed out (110: Connection timed out) while reading response header from '
          'upstream, client: {ip}, server: shop.example.com, request: "GET /search?q={q} HTTP/1.1", '
          'upstream: "http://api-1:8000/search"'))),
}
UNRELATED = {
    "backup": ("cron-1", "ERROR", "backup", "upload of /var/backups/shop-{n}.dump failed: 403 Forbidden"),
    "search": ("search-1", "WARNING", "search",
               "[WARN ][o.e.m.j.JvmGcMonitorService] [search-1] [gc][{n}] overhead, spent [{k}s] collecting"),
    "postgres": ("db-1", "WARNING", "postgres[1187]", "WARNING:  oldest xmin is far in the past, xid {n}"),
    "catalog": ("api-2", "ERROR", "catalog[2307]", "price feed import rejected {k} rows: currency XAF unknown"),
    "celery": ("worker-1", "ERROR", "celery",
               "Task shop.tasks.send_newsletter[{hex}] raised unexpected: TemplateSyntaxError('unclosed tag')"),
}
DELAY_S = (10.0, 90.0)
BLOCK_S = 25 * 60.0
DURATION_MIN = (5, 15)
PER_MINUTE = (15.0, 45.0)
UNRELATED_OFFSET_S = (-60.0, 120.0)
CLEAR_S = 600.0
HOURS = (7.0, 23.0)


def schedule(rng, events, t_start, t_end, t_warm, per_day, event_class):
    """Cascade events (labelled ids after the others') and their groups, placed clear of `events`."""
    busy = [(e.start, e.end) for e in events]
    first_id = 1 + max([e.id for e in events] + [-1])
    n = max(1, int(round(per_day * (t_end - t_warm) / 86400.0)))
    out, groups, kinds = [], [], list(KINDS)
    for c in range(n):
        kind = kinds[c % len(kinds)] if c < len(kinds) else str(rng.choice(kinds))
        start = _free_start(rng, busy, t_start, t_end, t_warm)
        if start is None:
            break
        made = _cascade(rng, kind, start, first_id + len(out), len(groups), event_class)
        busy.append((start - 300.0, max(e.end for e in made)))
        groups.append({"id": len(groups), "kind": kind, "root": made[0].id,
                       "members": [e.id for e in made[:-1]], "unrelated": [made[-1].id]})
        out += made
    return out, groups


def _free_start(rng, busy, t_start, t_end, t_warm):
    for _ in range(1000):
        t = 60.0 * round(float(rng.uniform(t_warm, t_end - BLOCK_S)) / 60.0)
        hour = (t - t_start) % 86400.0 / 3600.0
        if HOURS[0] <= hour <= HOURS[1] and all(t + BLOCK_S + CLEAR_S <= a or t >= b + CLEAR_S for a, b in busy):
            return t
    return None


def _cascade(rng, kind, start, first_id, group, event_class):
    root, dependents = KINDS[kind]
    out, t = [], start
    duration = 60.0 * float(rng.integers(*DURATION_MIN))
    for k, (program, host, level, tag, template) in enumerate((root,) + dependents):
        if k:
            t += float(rng.uniform(*DELAY_S))
        out.append(event_class("new_error", program, t, t + duration, _detail(
            rng, host, level, tag, template, group, "root" if k == 0 else "dependent", kind), first_id + k))
    taken = {root[0]} | {d[0] for d in dependents}
    program = str(rng.choice(sorted(set(UNRELATED) - taken)))
    host, level, tag, template = UNRELATED[program]
    u = start + float(rng.uniform(*UNRELATED_OFFSET_S))
    out.append(event_class("new_error", program, u, u + duration,
                           _detail(rng, host, level, tag, template, group, "unrelated", kind), first_id + len(out)))
    return out


def _detail(rng, host, level, tag, template, group, role, kind):
    return {"what": "a cascade's %s" % role, "host": host, "level": level, "tag": tag, "template": template,
            "per_minute": float(rng.uniform(*PER_MINUTE)), "cascade": group, "role": role, "cascade_kind": kind}


def add_lines(rng, chunk, cascade_events, ips):
    """This chunk's cascade lines, added to a shopgen Chunk (its add() draws nothing from its random stream)."""
    for e in cascade_events:
        if not (e.start < chunk.t1 and e.end > chunk.t0):
            continue
        d = e.detail
        n = rng.poisson(d["per_minute"] * (chunk.t1 - chunk.t0) / 60.0)
        ts = np.sort(chunk.t0 + (chunk.t1 - chunk.t0) * rng.random(n))
        ts = ts[e.inside(ts)]
        if chunk.t0 <= e.start < chunk.t1:
            ts = np.append(e.start, ts)       # the onset itself is a line
        msgs = [_fill(rng, d["template"], ips) for _ in range(ts.size)]
        chunk.add(ts, e.source, d["host"], d["level"], d["tag"], msgs)


def _fill(rng, template, ips):
    return template.format(n=int(rng.integers(1000, 9_999_999)), k=int(rng.integers(2, 99)),
                           ms=int(rng.integers(5000, 30000)), ip=ips[int(rng.integers(len(ips)))],
                           hex=rng.bytes(8).hex(), q=("shoes", "boots", "socks", "sale")[int(rng.integers(4))])
