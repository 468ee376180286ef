"""GET /api/incidents: the open and recently closed incidents of every worker, newest first, as plain JSON.

Served by the sidecar (metrics/httpd.py routes /api/* here). The data are the views the workers
publish (worker/incident_view.py: <state_dir>/alerting/worker-<n>/incidents-view.json, at most a second old,
each bounded by [http] incidents_api_max); WorkerViews re-reads a file only when it changed, so a
request costs at most workers x (2 x incidents_api_max) records. POST /admin/feedback
(metrics/feedback_api.py) resolves incident ids and template ids through the same views.

Checks, in order: route (404: exactly /api/incidents), method (405: GET), token when [http]
incidents_api_token is on (403 without a token file, 401), query (400: limit, since, status, nothing
else). Log text (sample lines, templates) is JSON-escaped with <, > and & written as \\u escapes, so
the body is safe to embed in a page as it is. docs/http.md is the operator's page.
"""
import glob
import json
import logging
import os
import urllib.parse
from datetime import datetime, timezone

from anomaly_detector.alerting.events import severity
from anomaly_detector.alerting.outbox import outbox_dir
from anomaly_detector.alerting.sinks import sink_sections
from anomaly_detector.alerting.situation_book import read_published, view_path
from anomaly_detector.detection.situations import situations_of
from anomaly_detector.storage.layout import every_worker_pattern
from anomaly_detector.worker.incident_view import MAX_SAMPLE_CHARS, VIEW_FILE, read_view

log = logging.getLogger(__name__)
ROUTE = "/api/incidents"
SITUATIONS_ROUTE = "/api/situations"
STATUSES = ("open", "resolved")
DEFAULT_LIMIT = 50
QUERY_KEYS = ("limit", "since", "status")


class ApiReply:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body, headers=()):
        self.status, self.body, self.headers = status, body, tuple(headers)


class ChangedFile:
    """A file another process replaces atomically, parsed by `read` again only when its inode, mtime or
    size changed; a read that fails (raises OSError or ValueError) is logged and the last good content
    kept. get() is None while the file is missing."""

    def __init__(self, path, read, what):
        self.path, self.read, self.what = path, read, what
        self._seen = (None, None)   # ((inode, mtime_ns, size), content)

    def get(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen[0]:
            try:
                content = self.read(self.path)
            except (OSError, ValueError) as exc:
                log.warning("%s %s unusable (%s); serving the last one read", self.what, self.path, exc)
                content = self._seen[1]
            self._seen = (key, content)
        return self._seen[1]


class WorkerViews:
    """Every worker's published view, each file parsed again only when it changed."""

    def __init__(self, state_dir):
        self.pattern = os.path.join(every_worker_pattern(state_dir, "alerting"), VIEW_FILE)
        self._files = {}     # path -> ChangedFile

    def views(self):
        self._files = {path: self._files.get(path) or ChangedFile(path, read_view, "incidents view")
                       for path in sorted(glob.glob(self.pattern))}
        return [view for view in (f.get() for f in self._files.values()) if view]

    def incidents(self):
        """Every incident listed, one per id (the latest seen), newest onset first."""
        by_id = {}
        for view in self.views():
            for record in view["open"] + view["closed"]:
                rid = record.get("id")
                best = by_id.get(rid)
                if best is None or _last(record) > _last(best) or (
                        _last(record) == _last(best) and record.get("status") == "resolved"):
                    by_id[rid] = record
        return sorted(by_id.values(), key=lambda r: (-float(r.get("first_seen", 0.0)), str(r.get("id"))))

    def find(self, incident_id):
        for record in self.incidents():
            if record.get("id") == incident_id:
                return record
        return None

    def template_texts(self, source, template):
        """The texts a template id (int) or text (str) stands for in `source`, over every worker's recently seen
        templates and its incidents' templates (one id may name several texts where workers widened it
        differently)."""
        texts = set()
        for view in self.views():
            pairs = list(view["templates"].get(source, []))
            for record in view["open"] + view["closed"]:
                if record.get("source") == source:
                    pairs += record.get("template_texts", [])
            for tid, text in pairs:
                if (tid == template if isinstance(template, int) else text == template):
                    texts.add(text)
        return texts

    def source_known(self, source):
        return any(source in view["templates"] or any(r.get("source") == source for r in view["open"] + view["closed"])
                   for view in self.views())


class IncidentsAPI:
    def __init__(self, views, max_limit, authorize=None, disabled_reason="", situations=None, published=None):
        """authorize(Authorization header) -> bool when [http] incidents_api_token is on, else None;
        situations: the [situations] section for GET /api/situations (default settings when None);
        published: the alerter's situations file to serve (published_path), None to compute them."""
        self.views, self.max_limit = views, int(max_limit)
        self.authorize, self.disabled_reason = authorize, disabled_reason
        self.situations = SituationsView(views, situations, published)

    def handle(self, method, path, headers):
        route, _, query = path.partition("?")
        if route not in (ROUTE, SITUATIONS_ROUTE):
            return _error(404, "not found: GET %s or GET %s" % (ROUTE, SITUATIONS_ROUTE))
        if method != "GET":
            return _error(405, "method not allowed: %s takes GET" % route, [("Allow", "GET")])
        if self.authorize is not None:
            if self.disabled_reason:
                return _error(403, "%s needs the admin token ([http] incidents_api_token) but %s"
                              % (route, self.disabled_reason))
            if not self.authorize(headers.get("Authorization")):
                return _error(401, "missing or wrong bearer token", [("WWW-Authenticate", 'Bearer realm="admin"')])
        try:
            limit, since, status = parse_query(query, self.max_limit)
        except ValueError as exc:
            return _error(400, str(exc))
        if route == SITUATIONS_ROUTE:
            return ApiReply(200, self.situations.listing(limit, since, status))
        return ApiReply(200, self.listing(limit, since, status))

    def listing(self, limit, since=None, status=None):
        chosen = [r for r in self.views.incidents()
                  if (status is None or r.get("status") == status) and (since is None or _last(r) >= since)]
        return {"incidents": [public(r) for r in chosen[:limit]], "count": min(limit, len(chosen)),
                "limit": limit, "more": len(chosen) > limit}


def published_path(cfg):
    """The alerter's situations file when the alerter groups them (sinks exist and [situations] is on):
    GET /api/situations and the page then serve the situations as notified; None otherwise."""
    if cfg["situations"]["enabled"] and sink_sections(cfg):
        return view_path(outbox_dir(cfg))
    return None


def _read_situations(path):
    """The published situations that look like one (alerting/situation_book.py); ValueError when unusable
    (it is replaced atomically, so only a bad disk or a hand edit gets here)."""
    found = read_published(path)
    if found is None:
        raise ValueError("no list of situations")
    return [r for r in found if _a_situation(r)]


class SituationsView:
    """GET /api/situations, newest first. With sinks, the situations the alerter published
    (alerting/situation_book.py: the ids, incidents and first causes of the notifications), re-read only
    when the file changed; until its first write, and without sinks, the incidents GET /api/incidents
    lists grouped into situations (detection/situations.py) with the [situations] settings, computed
    again only when a worker's view changed. A situation is open while one of its incidents is."""

    def __init__(self, views, settings=None, published=None):
        self.views, self.published = views, published
        keys = ("window_seconds", "max_open", "max_pairs", "max_tokens", "dependencies")
        self.settings = {k: settings[k] for k in keys} if settings else {}
        self._cached = (None, [])
        self._file = ChangedFile(published, _read_situations, "situations file") if published else None

    def situations(self):
        found = self._file.get() if self._file else None   # None: the alerter has not published yet
        return found if found is not None else self._computed()

    def _computed(self):
        incidents = self.views.incidents()
        key = tuple((r.get("id"), r.get("status"), _last(r)) for r in incidents)
        if key != self._cached[0]:
            status = {r.get("id"): r.get("status") for r in incidents}
            found = situations_of([r for r in incidents if isinstance(r.get("first_seen"), (int, float))],
                                  **self.settings)
            for record in found:
                record["status"] = "open" if any(status.get(i) == "open" for i in record["incidents"]) else "resolved"
            self._cached = (key, sorted(found, key=lambda r: (-r["first_seen"], r["id"])))
        return self._cached[1]

    def listing(self, limit, since=None, status=None):
        chosen = [r for r in self.situations()
                  if (status is None or r["status"] == status) and (since is None or r["last_seen"] >= since)]
        return {"situations": [situation_public(r) for r in chosen[:limit]], "count": min(limit, len(chosen)),
                "limit": limit, "more": len(chosen) > limit}


def _a_situation(record):
    return (isinstance(record, dict) and isinstance(record.get("first_cause"), dict)
            and isinstance(record.get("first_seen"), (int, float)) and isinstance(record.get("last_seen"), (int, float))
            and isinstance(record.get("incidents"), list) and record.get("status") in STATUSES)


def situation_public(record):
    """One situation as the API shows it (docs/http.md): the replay record, with times also as ISO text."""
    cause = dict(record["first_cause"], onset_iso=iso(record["first_cause"]["onset"]))
    return dict(record, first_cause=cause, start=iso(record["first_seen"]), last=iso(record["last_seen"]))


def parse_query(query, max_limit):
    """(limit, since as epoch seconds or None, status or None) from a raw query string; ValueError with the reason."""
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query),
                                       max_num_fields=len(QUERY_KEYS) + 1)
    except ValueError as exc:
        raise ValueError("bad query string: %s" % exc) from None
    seen = {}
    for key, value in pairs:
        if key not in QUERY_KEYS:
            raise ValueError("unknown query parameter %r: expected %s" % (key[:40], ", ".join(QUERY_KEYS)))
        if key in seen:
            raise ValueError("query parameter %r given twice" % key)
        seen[key] = value
    limit = min(DEFAULT_LIMIT, max_limit)
    if "limit" in seen:
        text = seen["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= max_limit:
            raise ValueError("limit must be a whole number from 1 to %d ([http] incidents_api_max), got %r"
                             % (max_limit, text[:40]))
        limit = int(text)
    since = parse_time(seen["since"]) if "since" in seen else None
    status = seen.get("status")
    if status is not None and status not in STATUSES:
        raise ValueError("status must be open or resolved, got %r" % status[:40])
    return limit, since, status


def parse_time(text):
    """Epoch seconds of an ISO 8601 time (2026-03-02T10:00:00Z, with an offset, or UTC when it has none)."""
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("since must be an ISO 8601 time such as 2026-03-02T10:00:00Z, got %r" % text[:40]) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def public(record):
    """One incident as the API shows it (docs/http.md lists the fields)."""
    texts = record.get("template_texts", [])
    open_ = record.get("status") == "open"
    return {"id": record.get("id"), "status": record.get("status"), "source": record.get("source"),
            "kind": record.get("kind"), "tiers": record.get("tiers", []), "score": record.get("score"),
            "severity": severity(record), "start": iso(record.get("first_seen")),
            "end": None if open_ else iso(record.get("last_seen")), "last_seen": iso(record.get("last_seen")),
            "lines": record.get("lines"), "template_id": record.get("template_id"),
            "template": record.get("template"), "templates": [{"id": t, "text": x} for t, x in texts],
            "explanation": {"reason": record.get("reason"), "expected": record.get("expected"),
                            "observed": record.get("observed"), "reasons": record.get("reasons", [])},
            "samples": [_cut(s) for s in record.get("samples", [])], "worker": record.get("worker")}


def iso(seconds):
    if not isinstance(seconds, (int, float)):
        return None
    try:
        stamp = datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode(body):
    """JSON bytes, ASCII only, with <, > and & escaped too: log text in it cannot close a <script> or open a tag."""
    text = json.dumps(body, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode("ascii")


def _cut(sample):
    sample = str(sample)
    return sample if len(sample) <= MAX_SAMPLE_CHARS else sample[:MAX_SAMPLE_CHARS] + "..."


def _last(record):
    value = record.get("last_seen", 0.0)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _error(status, message, headers=()):
    return ApiReply(status, {"error": message}, headers)
