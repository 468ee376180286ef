"""The `redis` sink: each incident event XADDed to a Redis Stream, so a fleet's incidents land in one place.

Each entry has the fields `key` (instance + "/" + event id: the idempotency key a reader deduplicates
on; the event id is the incident id and the event's number, the same on every retry), `instance`
(whose incident), `event` (opened, updated, resolved, group) and `json` (the event as the webhook
sink posts it, with `instance` added). A group (grouping, a quiet-hours digest) goes out as one entry
per event, so a reader always gets single events. XADD trims the stream to about stream_max_entries (MAXLEN ~);
an event added while the stream is that long pushes its oldest entries out, read or not: counted in
`stats["at_limit"]` (anomaly_detector_alert_stream_at_limit_total) and logged.

A failure (Redis away, a timeout, an error reply) raises DeliveryError: the alerter retries it with
back-off, in order, and the event waits in the outbox meanwhile (alerting/alerter.py). Events the
alerter itself read from the stream (alerting/fleet.py, writer "fleet") are not written back.
Neighbours: alerting/fleet.py (the reading side), inputs/redis_stream.py (the same client settings).
"""
import json
import logging
import socket
import time

from anomaly_detector.alerting.sinks.base import DeliveryError, Sink
from anomaly_detector.redis_link import close_quietly, connect, first_line

log = logging.getLogger(__name__)
FLEET_WRITER = "fleet"            # the outbox writer of the events read back from the stream
LIMIT_LOG_SECONDS = 3600.0        # the stream at its limit is logged at most once an hour


def default_instance():
    """The instance name when `instance` is empty: the hostname (one daemon per host)."""
    return socket.gethostname() or "anomaly-detector"


def failure(exc):
    """The DeliveryError for a redis-py exception (reason: timeout, connect or io)."""
    import redis
    reason = "timeout" if isinstance(exc, redis.TimeoutError) else \
        "connect" if isinstance(exc, (redis.ConnectionError, OSError)) else "io"
    return DeliveryError(reason, "Redis: %s" % first_line(exc))


class RedisStreamSink(Sink):
    type = "redis"
    groups = False   # readers deliver each event through their own sinks' grouping

    def __init__(self, name, url, stream, max_entries, instance, timeout, client=None, clock=time.time):
        self.name, self.url, self.stream, self.max_entries = name, url, stream, int(max_entries)
        self.instance, self.timeout, self.clock = instance or default_instance(), timeout, clock
        self._client = client
        self.stats = {"at_limit": 0}
        self._limit_logged = float("-inf")

    def takes(self, event):
        """Not the events read from the stream: they are there already."""
        return event.get("writer") != FLEET_WRITER

    def send(self, event):
        self._xadd(event)

    def send_group(self, events):
        """One entry per event, in one transaction (a retry after a partial failure repeats keys: readers
        deduplicate on them)."""
        self._xadd(*events)

    def _xadd(self, *events):
        try:
            if self._client is None:
                self._client = connect(self.url, self.timeout)
            pipe = self._client.pipeline(transaction=True)
            for event in events:
                pipe.xadd(self.stream, self.fields(event), maxlen=self.max_entries, approximate=True)
            pipe.xlen(self.stream)
            length = pipe.execute()[-1]
        except Exception as exc:   # noqa: BLE001 - redis-py raises its own and socket errors alike
            self.close()
            raise failure(exc) from None
        if length >= self.max_entries:
            self.stats["at_limit"] += len(events)
            if self.clock() - self._limit_logged >= LIMIT_LOG_SECONDS:
                self._limit_logged = self.clock()
                log.warning("alert sink %s: stream %s holds %d entries, its stream_max_entries = %d: each new "
                            "incident event pushes the oldest out, read or not", self.name, self.stream, length,
                            self.max_entries)

    def fields(self, event):
        """The stream entry of one event."""
        body = dict(event, instance=self.instance)
        return {"key": "%s/%s" % (self.instance, event["id"]), "instance": self.instance,
                "event": str(event.get("event", "")),
                "json": json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=True)}

    def state(self):
        return {"at_limit": self.stats["at_limit"]}

    def restore(self, state):
        if isinstance(state, dict) and isinstance(state.get("at_limit"), int):
            self.stats["at_limit"] = state["at_limit"]

    def close(self):
        close_quietly(self._client)
        self._client = None


def build(name, section):
    if not section["url"].startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("type = redis needs url = redis://host:port/db (rediss:// for TLS, unix:///path.sock), "
                         "found %r" % section["url"])
    return RedisStreamSink(name, section["url"], section["stream"], section["stream_max_entries"],
                           section["instance"], section["timeout_seconds"])
