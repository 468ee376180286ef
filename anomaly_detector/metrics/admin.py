"""POST /admin/*: run-time controls of the running daemon, behind a bearer token.

Served by the sidecar's HTTP server (metrics/httpd.py hands every /admin request here); the
changes are stores into the control block's run-time flags (ipc/control.py), which the workers
read each batch (tier 4, learning rate, batch size), the input process each round (backpressure)
and the supervisor each loop turn (workers_wanted: it forks or retires workers). A reload or a
restart sets every flag from the configuration again. docs/http.md is the operator's page.

Order of the checks, each answering at once: rate limit (429), route (404: the path must be exactly
/admin/<action>, so /admin/../x and %2e%2e never reach an action), method (405), API disabled (403:
no [http] admin_token_file), body size (413, from Content-Length, before a byte is read), token
(401; hmac.compare_digest), body (400 with the reason), then the change (200, or 202 for set-workers,
which the supervisor carries out within a second or so). The token is never logged or exported.
/admin/feedback (metrics/feedback_api.py) also takes GET, which lists the rules; its changes go to a
rules file the workers read (detection/feedback.py), not to the control block.
"""
import collections
import hashlib
import hmac
import json
import logging
import os
import threading
import time

from anomaly_detector.metrics.feedback_api import FEEDBACK_VERDICTS, REFUSAL_REASONS, FeedbackDesk

log = logging.getLogger(__name__)

ACTIONS = ("enable-backpressure", "disable-backpressure", "set-workers", "disable-tier4", "enable-tier4",
           "reduce-learning-rate", "set-batch-size", "feedback")
METHODS = {"feedback": ("GET", "POST")}     # the others take POST only
UNKNOWN_ACTION = "unknown"      # the action label of a request whose path names no action
STATUSES = ("200", "202", "400", "401", "403", "404", "405", "413", "429", "500")
RATE_WINDOW_SECONDS = 60.0
MAX_WORKERS = 64                # [processing] workers' bound in spec.ini (the supervisor's MAX_WORKERS)
LEARNING_RATE_FLOOR = 1e-6      # the control block's lower bound of learning_rate_factor


class AdminReply:
    """What the HTTP layer sends back: status, JSON body, extra headers."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body, headers=()):
        self.status, self.body, self.headers = status, body, tuple(headers)


class AdminAPI:
    """The /admin/* endpoints over one control block. Thread-safe: handler threads call handle()."""

    def __init__(self, control, token, disabled_reason="", max_body_bytes=4096, rate_per_minute=60,
                 max_batch_size=100000, max_workers=MAX_WORKERS, clock=time.monotonic, feedback=None):
        self.control, self.clock = control, clock
        self._token = token.encode("utf-8") if token else b""
        self.disabled_reason = "" if token else (disabled_reason or "no admin token")
        self.max_body_bytes, self.rate_per_minute = int(max_body_bytes), int(rate_per_minute)
        self.max_batch_size, self.max_workers = int(max_batch_size), int(max_workers)
        self._lock = threading.Lock()     # one change at a time: reduce-learning-rate reads, then writes
        self._recent = collections.deque()  # monotonic times of the requests in the rate window
        self._limited_logged = float("-inf")
        self.requests = collections.Counter()   # (action, status) -> count
        self.feedback = feedback                 # a FeedbackDesk (POST /admin/feedback), None: 400 there

    @classmethod
    def from_config(cls, cfg, control, views=None):
        """Read the token file once (the sidecar restarts at every reload, which reads it again).
        views: the workers' incident views (metrics/incidents_api.WorkerViews) feedback resolves ids with."""
        http = cfg["http"]
        token, reason = read_token(http["admin_token_file"])
        if reason:
            # not set is the default (the API off, as documented): INFO; a file that is set and unusable
            # refuses the start or the reload before this point, so a WARNING here would only be noise
            (log.info if not http["admin_token_file"] else log.warning)("admin API disabled: %s", reason)
        # Workers pop at most half a ring at once ([processing] ring_size >= 2 x batch_size).
        feedback = FeedbackDesk(cfg["paths"]["state_dir"], views, cfg["detection"]["feedback_max_rules"]) \
            if views is not None else None
        return cls(control, token, reason, http["max_body_bytes"], http["admin_rate_limit_per_minute"],
                   max_batch_size=min(100000, cfg["processing"]["ring_size"] // 2), feedback=feedback)

    # -- the request -------------------------------------------------------------------------------

    def handle(self, method, path, headers, length, client, read_body):
        """Answer one request to a path under /admin. length: the body's (already validated)
        Content-Length; read_body() reads it, called only once the request passed every check
        before the body."""
        action = _action(path)
        reply = self._checked(method, action, headers, length, read_body, client)
        with self._lock:
            self.requests[(action, str(reply.status))] += 1
        if reply.status < 300 and method == "GET":     # a listing changes nothing
            log.info("admin %s from %s: listed", action, client)
        elif reply.status < 300:
            log.warning("admin %s from %s: %s", action, client, reply.body.get("result", ""))
        elif reply.status != 429:
            log.info("admin %s from %s refused: %d %s", action, client, reply.status, reply.body.get("error"))
        return reply

    def _checked(self, method, action, headers, length, read_body, client=""):
        if not self._admit():
            return _error(429, "too many /admin requests: at most %d a minute ([http] admin_rate_limit_per_minute)"
                          % self.rate_per_minute, [("Retry-After", "60")])
        if action == UNKNOWN_ACTION:
            return _error(404, "not found: POST /admin/<action> with one of %s" % ", ".join(ACTIONS))
        methods = METHODS.get(action, ("POST",))
        if method not in methods:
            allowed = " or ".join(methods)
            return _error(405, "method not allowed: /admin/%s takes %s" % (action, allowed),
                          [("Allow", ", ".join(methods))])
        if self.disabled_reason:
            return _error(403, "admin API disabled: %s" % self.disabled_reason)
        if length > self.max_body_bytes:
            return _error(413, "body of %d bytes over [http] max_body_bytes = %d" % (length, self.max_body_bytes))
        if not self._authorized(headers.get("Authorization")):
            return _error(401, "missing or wrong bearer token", [("WWW-Authenticate", 'Bearer realm="admin"')])
        try:
            body = _parse_body(read_body())
            with self._lock:
                if action == "feedback":
                    return self._feedback(method, body, client)
                return getattr(self, "_" + action.replace("-", "_"))(body)
        except ValueError as exc:   # BadRequest, or a value the control block itself refuses
            return _error(400, str(exc))
        except OSError as exc:      # the feedback rules file cannot be written (a full disk): nothing changed
            log.error("admin %s: %s", action, exc)
            return _error(500, str(exc))

    def _admit(self):
        """Sliding one-minute window over every /admin request, refused ones included (a token guesser too)."""
        now = self.clock()
        with self._lock:
            while self._recent and now - self._recent[0] >= RATE_WINDOW_SECONDS:
                self._recent.popleft()
            if len(self._recent) < self.rate_per_minute:
                self._recent.append(now)
                return True
            log_now = now - self._limited_logged >= RATE_WINDOW_SECONDS
            if log_now:
                self._limited_logged = now
        if log_now:
            log.warning("admin: requests over admin_rate_limit_per_minute = %d answered 429 (logged once a minute)",
                        self.rate_per_minute)
        return False

    def _authorized(self, header):
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Constant time (over digests, so not even the token's length shows in how long a refusal takes).
        given = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        return bool(self._token) and hmac.compare_digest(given, hashlib.sha256(self._token).digest())

    # -- the actions (called with the lock held) -----------------------------------------------------

    def _enable_backpressure(self, body):
        return self._set("backpressure", True, body, "inputs paused: nothing new is read until disable-backpressure")

    def _disable_backpressure(self, body):
        return self._set("backpressure", False, body, "inputs reading again")

    def _disable_tier4(self, body):
        return self._set("tier4_enabled", False, body, "tier 4 off in every worker from its next batch")

    def _enable_tier4(self, body):
        return self._set("tier4_enabled", True, body, "tier 4 on in every worker from its next batch")

    def _reduce_learning_rate(self, body):
        _no_fields(body)
        factor = self.control.flags().learning_rate_factor / 2
        if factor < LEARNING_RATE_FLOOR:
            raise BadRequest("learning-rate factor is at its floor (%g); a reload sets it back to 1"
                             % LEARNING_RATE_FLOOR)
        return self._set("learning_rate_factor", factor, body, "learning-rate factor halved to %g" % factor)

    def _set_batch_size(self, body):
        size = _whole(body, "size", 1, self.max_batch_size, "at most half of [processing] ring_size")
        return self._set("batch_size", size, {}, "batch size %d from each worker's next batch" % size)

    def _set_workers(self, body):
        count = _whole(body, "count", 1, self.max_workers, "")
        reply = self._set("workers_wanted", count, {}, "the supervisor restarts the children with %d workers "
                          "(inputs drain first; no line is lost)" % count)
        reply.status = 202
        return reply

    def _set(self, flag, value, body, result):
        _no_fields(body)
        before = getattr(self.control.flags(), flag)
        self.control.set_flags(**{flag: value})
        return AdminReply(200, {"result": "%s (%s: %s -> %s)" % (result, flag, _show(before), _show(value)),
                                "settings": self.settings()})

    def _feedback(self, method, body, client):
        if self.feedback is None:
            raise BadRequest("feedback is not served by this admin API")
        if method == "GET":
            _no_fields(body)
            return AdminReply(200, self.feedback.listing())
        result, fields = self.feedback.apply(body, client)
        return AdminReply(200, {"result": result, **fields, **self.feedback.rule_counts()})

    def authorized(self, header):
        """Whether an Authorization header carries the token (GET /api/incidents with incidents_api_token)."""
        return self._authorized(header)

    # -- what /metrics and replies show ------------------------------------------------------------

    def settings(self):
        flags = self.control.flags()
        return {"workers_wanted": flags.workers_wanted, "batch_size": flags.batch_size,
                "tier4_enabled": bool(flags.tier4_enabled), "learning_rate_factor": flags.learning_rate_factor,
                "backpressure": bool(flags.backpressure)}

    def samples(self):
        """admin_requests_total{action,status} (every action and status from zero) and the flags' gauges."""
        with self._lock:
            counts = dict(self.requests)
        requests = {(("action", a), ("status", s)): counts.get((a, s), 0)
                    for a in ACTIONS + (UNKNOWN_ACTION,) for s in STATUSES}
        settings = self.settings()
        desk = self.feedback
        with self._lock:
            feedback = {(("verdict", v),): desk.counts[v] if desk else 0 for v in FEEDBACK_VERDICTS}
            rules = desk.rule_counts() if desk else {"normal": 0, "problem": 0}
            refused = {(("reason", r),): desk.refused[r] if desk else 0 for r in REFUSAL_REASONS}
        totals = self.control.counter_totals()
        return {"feedback_total": feedback,
                "feedback_rules": {(("verdict", v),): n for v, n in rules.items()},
                "feedback_refused_total": refused,
                "feedback_lines_total": {(("effect", "suppressed"),): totals["feedback_suppressed"],
                                         (("effect", "flagged"),): totals["feedback_flagged"]},
                "admin_requests_total": requests,
                "admin_api_enabled": int(not self.disabled_reason),
                "runtime_workers_wanted": settings["workers_wanted"],
                "runtime_batch_size": settings["batch_size"],
                "runtime_tier4_enabled": int(settings["tier4_enabled"]),
                "runtime_learning_rate_factor": settings["learning_rate_factor"],
                "runtime_backpressure": int(settings["backpressure"])}


class BadRequest(ValueError):
    """A body the action cannot take; the message is the 400's reason."""


def read_token(path):
    """(token, "") or ("", why there is none). The token is the file's first line, stripped."""
    if not path:
        return "", "[http] admin_token_file is not set"
    try:
        with open(path, "rb") as f:
            text = f.read(4097)
    except OSError as exc:
        return "", "cannot read [http] admin_token_file %s: %s" % (path, exc.strerror or exc)
    lines = text.decode("utf-8", "replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS or len(text) > 4096:
        return "", "[http] admin_token_file %s must hold one token of %d to 4096 characters" % (path, MIN_TOKEN_CHARS)
    return token, ""


MIN_TOKEN_CHARS = 16


def token_file_problem(path):
    """One line on what is wrong with a configured token file, or "" (config/checks.py)."""
    if not path:
        return ""
    _token, reason = read_token(path)
    if reason:
        return reason.replace("[http] admin_token_file ", "")
    return ""


def token_file_exposed(path):
    """Whether users other than the owner may read the token file (a warning, not an error)."""
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False


def _action(path):
    """The action named by a raw request path, or UNKNOWN_ACTION. Exact match only, on the raw path
    (no decoding, no normalising): /admin/../metrics, /admin/%2e%2e/x, /admin//x name no action."""
    route = path.split("?", 1)[0]
    name = route[len("/admin/"):] if route.startswith("/admin/") else ""
    return name if name in ACTIONS else UNKNOWN_ACTION


def _parse_body(raw):
    """{} for an empty body, else a JSON object (any Content-Type: curl -d sends a form type)."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("body is not UTF-8") from None
    except ValueError as exc:
        raise BadRequest("body is not JSON: %s" % exc) from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object, got %s" % type(body).__name__)
    return body


def _no_fields(body):
    if body:
        raise BadRequest("this action takes no fields, got %s" % ", ".join(sorted(map(str, body))))


def _whole(body, field, low, high, why):
    """body[field] as a whole number in [low, high], the only field of the body."""
    extra = sorted(str(k) for k in body if k != field)
    if extra:
        raise BadRequest("unknown field(s) %s: expected {\"%s\": N}" % (", ".join(extra), field))
    if field not in body:
        raise BadRequest("missing field %r: expected {\"%s\": N}" % (field, field))
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("%s must be a whole number, got %s" % (field, json.dumps(value)[:40]))
    if not low <= value <= high:
        raise BadRequest("%s must be between %d and %d%s, got %d" % (field, low, high,
                                                                    " (%s)" % why if why else "", value))
    return value


def _show(value):
    return ("on" if value else "off") if isinstance(value, bool) else "%g" % value


def _error(status, message, headers=()):
    return AdminReply(status, {"error": message}, headers)
