"""The fleet side of the `redis` sink: this instance's alerter reads the fleet's incident stream and
delivers the other instances' events through its own sinks (`consume = true`).

Built by the alerter (alerting/alerter.py) for a redis sink with consume = true; step() runs in the
alerter's main loop before it reads the outbox. It reads the stream through a consumer group (`group`,
`consumer`): first the entries still pending on this consumer name (a restart), then, every claim
interval, entries idle claim_idle_seconds on another consumer of the group (XAUTOCLAIM: a dead
reader's), then new ones. Each entry of another instance, unless its `key` (instance/event id) was
read before, is appended to the local outbox as writer "fleet" (fsynced; outbox.py), so the alerter
delivers it to every sink but the redis ones with their retries, checkpoints and bounds; then the
keys read are saved and the entries acknowledged (XACK). A crash between the append and the save
makes the entries come back, and be delivered again with the same ids (at least once).

This instance's own entries are acknowledged and skipped: its sinks got them from its own outbox.
The keys remembered are bounded by [alerting] outbox_max_alerts (the oldest forgotten first): a
duplicate is an XADD retried by its sender, written moments after the first.
Neighbours: alerting/sinks/redis_stream.py (the writing side), inputs/redis_stream.py (the same
reading scheme for log lines).
"""
import json
import logging
import os
import time
from collections import OrderedDict

from anomaly_detector.alerting.outbox import OutboxWriter, write_json_atomic
from anomaly_detector.alerting.sinks.redis_stream import FLEET_WRITER, default_instance
from anomaly_detector.redis_link import Backoff, close_quietly, connect, ensure_group, first_line

log = logging.getLogger(__name__)
SEEN_FILE = "fleet-seen.json"
FLEET_COUNTERS = ("read", "duplicates", "own", "unreadable", "claimed", "dropped", "connect_failures")
READ_COUNT = 200                  # entries per XREADGROUP / XAUTOCLAIM
RECONNECT_MIN, RECONNECT_MAX = 0.5, 30.0
CLAIM_INTERVAL_MAX_SECONDS = 5.0


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


class FleetReader:
    def __init__(self, directory, name, section, delivering_sinks, max_events, max_bytes, connect_fn=None):
        self.name, self.url, self.stream = name, section["url"], section["stream"]
        self.group = section["group"]
        self.instance = section["instance"] or default_instance()
        self.consumer = section["consumer"] or self.instance
        self.timeout = section["timeout_seconds"]
        self.claim_idle_ms = int(section["claim_idle_seconds"] * 1000)
        self.claim_interval = max(0.05, min(section["claim_idle_seconds"] / 4.0, CLAIM_INTERVAL_MAX_SECONDS))
        self.max_seen = max(1, int(max_events))
        self.writer = OutboxWriter(directory, FLEET_WRITER, delivering_sinks, max_events, max_bytes,
                                   on_drop=self._dropped)
        self.seen_path = os.path.join(directory, SEEN_FILE)
        self.seen = OrderedDict((k, None) for k in _read_seen(self.seen_path)[-self.max_seen:])
        self._connect = connect_fn or (lambda: connect(self.url, self.timeout))
        self._client = None
        self._own_cursor = "0"
        self._claim_at, self._claim_cursor = 0.0, "0-0"
        self._backoff = Backoff(RECONNECT_MIN, RECONNECT_MAX)
        self.stats = {"read": 0, "duplicates": 0, "own": 0, "unreadable": 0, "claimed": 0, "dropped": 0,
                      "connect_failures": 0, "disconnected": 1}

    def step(self):
        """Read what is there (at most READ_COUNT entries), queue it in the outbox, acknowledge it."""
        client = self._connected()
        if client is None:
            return 0
        try:
            entries = self._read(client)
            if entries:
                self._take(entries)
                client.xack(self.stream, self.group, *[eid for eid, _f in entries])
        except Exception as exc:   # noqa: BLE001 - redis-py and socket errors alike: reconnect with back-off
            self._failed(exc)
            return 0
        return len(entries)

    def _take(self, entries):
        events, keys = [], []
        for _eid, fields in entries:
            fields = {_text(k): _text(v) for k, v in fields.items()}
            key = fields.get("key", "")
            if fields.get("instance") == self.instance:
                self.stats["own"] += 1
                continue
            if key in self.seen or key in keys:
                self.stats["duplicates"] += 1
                continue
            try:
                event = json.loads(fields["json"])
                if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not key:
                    raise ValueError("not an incident event")
            except (KeyError, ValueError) as exc:
                self.stats["unreadable"] += 1
                log.error("alert sink %s: skipped an entry of stream %s that is not an incident event (%s)",
                          self.name, self.stream, exc)
                continue
            events.append(event)
            keys.append(key)
        if events:
            self.writer.append(events)
            self.stats["read"] += len(events)
        if keys:
            for key in keys:
                self.seen[key] = None
            while len(self.seen) > self.max_seen:
                self.seen.popitem(last=False)
            write_json_atomic(self.seen_path, list(self.seen))

    def _read(self, client):
        if self._own_cursor is not None:
            entries = self._xreadgroup(client, self._own_cursor)
            if entries:
                self._own_cursor = _text(entries[-1][0])
                return entries
            self._own_cursor = None
        now = time.monotonic()
        if now >= self._claim_at:
            cursor, claimed = client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                                start_id=self._claim_cursor, count=READ_COUNT)[:2]
            self._claim_cursor = cursor
            if _text(cursor) == "0-0":
                self._claim_at = now + self.claim_interval
            claimed = [(eid, f) for eid, f in claimed if f]
            if claimed:
                self.stats["claimed"] += len(claimed)
                log.warning("alert sink %s: claimed %d incident events idle over %.0f s on another reader of group "
                            "%s (claim_idle_seconds)", self.name, len(claimed), self.claim_idle_ms / 1000.0,
                            self.group)
                return claimed
        return self._xreadgroup(client, ">")

    def _xreadgroup(self, client, start):
        reply = client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=READ_COUNT)
        if not reply:
            return []
        _stream, entries = reply[0] if isinstance(reply, list) else next(iter(reply.items()))
        return [(eid, f) for eid, f in entries if f]

    def _connected(self):
        if self._client is not None:
            return self._client
        if not self._backoff.due():
            return None
        try:
            client = self._connect()
            ensure_group(client, self.stream, self.group)   # incidents written before the first reader came are read too
        except Exception as exc:   # noqa: BLE001 - retried after the back-off
            self._failed(exc)
            return None
        lasted = self._backoff.succeeded()
        if lasted is not None:
            log.warning("alert sink %s: reading stream %s again after %.1f s", self.name, self.stream, lasted)
        else:
            log.info("alert sink %s: reading the fleet's incidents from stream %s as consumer %s of group %s",
                     self.name, self.stream, self.consumer, self.group)
        self._client = client
        self.stats["disconnected"] = 0
        return client

    def _failed(self, exc):
        self.close()
        self.stats["disconnected"] = 1
        self.stats["connect_failures"] += 1
        self._own_cursor = "0"   # what was read and not acknowledged comes back first
        if self._backoff.failed()[0]:
            log.warning("alert sink %s: cannot read stream %s at %s (%s); retrying every %.1f s to %.0f s", self.name,
                        self.stream, self.url, first_line(exc), RECONNECT_MIN,
                        RECONNECT_MAX)

    def _dropped(self, count):
        self.stats["dropped"] += count

    def close(self):
        close_quietly(self._client)
        self._client = None


def _read_seen(path):
    try:
        with open(path) as f:
            keys = json.load(f)
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.error("%s unreadable (%s): incident events read before may be delivered again", path, exc)
        return []
