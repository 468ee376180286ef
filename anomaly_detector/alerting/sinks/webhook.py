"""The `webhook` sink: each event as a JSON POST signed the Standard Webhooks way.

Headers: `webhook-id` (the event id: the same on every retry and after a crash, so the receiver
drops duplicates), `webhook-timestamp` (seconds since the epoch, of this attempt) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`. The secret is read from
`secret_file` at start and reload; a `whsec_` prefix marks a base64 secret (as Standard Webhooks
libraries generate them), anything else is used as raw bytes. No redirects, a timeout per request,
and no link-local or metadata addresses unless allow_link_local (alerting/httpsend.py).
"""
import base64
import hashlib
import hmac
import ipaddress
import json
import time

from anomaly_detector.alerting import httpsend
from anomaly_detector.alerting.noise import group_payload
from anomaly_detector.alerting.sinks.base import Sink


def load_secret(path):
    """The signing key in `path`; ValueError (one line) when it cannot be read or is empty."""
    try:
        with open(path, "rb") as f:
            raw = f.read().strip()
    except OSError as exc:
        raise ValueError("secret_file %s: %s" % (path, exc.strerror or exc)) from None
    if not raw:
        raise ValueError("secret_file %s is empty" % path)
    if raw.startswith(b"whsec_"):
        try:
            return base64.b64decode(raw[6:], validate=True)
        except ValueError:
            raise ValueError("secret_file %s: a whsec_ secret must be base64 after the prefix" % path) from None
    return raw


def signature(secret, event_id, timestamp, body):
    """The webhook-signature header value for one attempt."""
    digest = hmac.new(secret, b"%s.%d.%s" % (event_id.encode(), timestamp, body), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSink(Sink):
    type = "webhook"

    def __init__(self, name, url, secret, timeout, allow_link_local, clock=time.time):
        self.name, self.url, self.secret, self.timeout = name, url, secret, timeout
        self.allow_link_local, self.clock = allow_link_local, clock

    def send(self, event):
        self._post(event)

    def send_group(self, events):
        """One POST of {"id": "group-...", "event": "group", "count": n, "events": [...]}, webhook-id its id."""
        self._post(group_payload(events))

    def _post(self, event):
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        timestamp = int(self.clock())
        headers = {"Content-Type": "application/json", "User-Agent": "anomaly-detector",
                   "webhook-id": event["id"], "webhook-timestamp": str(timestamp)}
        if self.secret is not None:
            headers["webhook-signature"] = signature(self.secret, event["id"], timestamp, body)
        httpsend.post(self.url, body, headers, self.timeout, self.allow_link_local)


def check_target(url, allow_link_local):
    """ValueError for a URL that can never be sent to: not http(s), or a literal forbidden address."""
    _scheme, host, _port, _path = httpsend.check_url(url)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return   # a name: checked at every send, since its addresses may change
    why = "" if allow_link_local else httpsend.forbidden(host)
    if why:
        raise ValueError("url %s points at a %s; set allow_link_local = true to allow it" % (url, why))


def build(name, section):
    check_target(section["url"], section["allow_link_local"])
    secret = load_secret(section["secret_file"]) if section["secret_file"] else None
    return WebhookSink(name, section["url"], secret, section["timeout_seconds"], section["allow_link_local"])
