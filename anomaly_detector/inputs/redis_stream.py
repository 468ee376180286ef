"""Input `type = redis`: read a Redis Stream through a consumer group, acknowledge entries once scored.

Neighbours: inputs/base.py (the Input interface), inputs/runner.py (pushes the chunks to the rings and
calls `commit()` with a chunk's entry ids once the workers acknowledged its lines: that is when we
XACK, so delivery is at-least-once), inputs/origin.py (lines are spread over the rings by their
`source` field). The client is redis-py, with its own retries off: this module reconnects itself,
with back-off, so a Redis restart never stalls the input process's loop.

Reading, in this order each poll: at the first connection and after each reconnection, the entries
still pending on this consumer name (a restarted daemon with the same `consumer`; a read whose reply
a lost connection swallowed), but those in flight here; then, every claim interval, entries
pending on any consumer of the group for at least claim_idle_seconds (XAUTOCLAIM: a dead instance's
entries); then new entries (XREADGROUP >). Each entry becomes one JSON line of its fields (`message`,
`timestamp`, `source`, ... as strings), parsed like any JSON line. Stream trimming is the producer's
job (XADD MAXLEN / MINID): this input never deletes entries.
"""
import json
import logging
import socket
import time

from anomaly_detector.inputs.base import Chunk, Input
from anomaly_detector.inputs.origin import json_origin
from anomaly_detector.redis_link import Backoff, close_quietly, connect, ensure_group, first_line

log = logging.getLogger(__name__)
CLAIM_INTERVAL_MAX_SECONDS = 5.0   # XAUTOCLAIM at least this often (and at least 4 times per claim_idle_seconds)


def default_consumer():
    """The consumer name when `consumer` is empty: the hostname (one daemon per host and group)."""
    return socket.gethostname() or "anomaly-detector"


def entry_line(fields, max_line_bytes, on_long_line):
    """(line bytes or None when skipped, whether it was too long) for one stream entry's fields.

    A too-long line keeps its JSON shape: the longest field value is cut (by characters) until it fits."""
    obj = {_text(k): _text(v) for k, v in fields.items()}
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if len(line) <= max_line_bytes:
        return line, False
    if on_long_line == "skip":
        return None, True
    while len(line) > max_line_bytes and obj:
        longest = max(obj, key=lambda k: len(obj[k]))
        excess = len(line) - max_line_bytes
        if not obj[longest]:
            break
        obj[longest] = obj[longest][:max(0, len(obj[longest]) - excess)]
        line = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    return line[:max_line_bytes], True


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


class RedisStreamInput(Input):
    """`poll()` returns at most one Chunk of entries; `commit(key, ids)` XACKs them."""

    type_name = "redis"
    spread = True

    def __init__(self, name, url, stream, group, consumer="", batch_count=500, block_ms=0, claim_idle_seconds=60.0,
                 reconnect_min_seconds=0.5, reconnect_max_seconds=30.0, socket_timeout_seconds=2.0,
                 max_line_bytes=65536,
                 on_long_line="truncate", source_key="source", connect=None):
        self.name, self.url, self.stream, self.group = name, url, stream, group
        self.consumer = consumer or default_consumer()
        self.batch_count, self.block_ms = int(batch_count), int(block_ms)
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self.claim_interval = max(0.05, min(claim_idle_seconds / 4.0, CLAIM_INTERVAL_MAX_SECONDS))
        self.reconnect_min, self.reconnect_max = reconnect_min_seconds, reconnect_max_seconds
        self.socket_timeout = socket_timeout_seconds
        self.max_line_bytes, self.on_long_line = max_line_bytes, on_long_line
        self.origin = json_origin(source_key)
        self.key = "redis:" + name
        self._connect = connect or self._redis_client
        self._client = None
        self._backoff = Backoff(reconnect_min_seconds, reconnect_max_seconds)
        self._ever_connected = False
        self._own_cursor = "0"         # reading this consumer's own pending entries; None once done
        self._claim_at = 0.0
        self._claim_cursor = "0-0"
        self._claimed_in_sweep = 0
        self._inflight = set()         # entry ids delivered and not yet acknowledged
        self._unsent_acks = []         # ids scored while Redis was away: XACKed after the reconnection
        self.stats = {"lines": 0, "long_lines": 0, "read_errors": 0, "redis_reconnects": 0,
                      "redis_claimed": 0, "redis_acked": 0, "redis_connect_failures": 0,
                      "redis_disconnected": 1}

    @classmethod
    def build(cls, name, section, cfg):
        processing = cfg["processing"]
        return cls(name, section["url"], section["stream"], section["group"], section["consumer"],
                   batch_count=section["batch_count"], block_ms=section["block_ms"],
                   claim_idle_seconds=section["claim_idle_seconds"],
                   reconnect_min_seconds=section["reconnect_min_seconds"],
                   reconnect_max_seconds=section["reconnect_max_seconds"],
                   socket_timeout_seconds=section["socket_timeout_seconds"],
                   max_line_bytes=processing["max_line_bytes"], on_long_line=processing["on_long_line"],
                   source_key=section["source_key"])

    def _redis_client(self):
        # A blocking read waits block_ms for entries before its reply is due.
        return connect(self.url, self.block_ms / 1000.0 + self.socket_timeout, self.socket_timeout)

    # -- connection ---------------------------------------------------------------------------------

    def _connected(self):
        """The client, connecting (at most once per back-off step) when there is none; None while Redis is away."""
        if self._client is not None:
            return self._client
        if not self._backoff.due():
            return None
        try:
            client = self._connect()
            client.ping()
            ensure_group(client, self.stream, self.group)
            if self._unsent_acks:
                client.xack(self.stream, self.group, *self._unsent_acks)
        except Exception as exc:   # noqa: BLE001 - any failure to connect is retried after the back-off
            self._failed(exc)
            return None
        self._unsent_acks = []
        self._client = client
        lasted = self._backoff.succeeded()
        if self._ever_connected:
            # A read whose reply the failure lost left entries pending on us that we never got: read our
            # pending entries again (those still in flight are skipped), not after claim_idle_seconds.
            self._own_cursor = "0"
            self.stats["redis_reconnects"] += 1
            log.warning("input %s: reconnected to Redis %s after %.1f s", self.name, self.url, lasted or 0.0)
        else:
            log.info("input %s: reading Redis stream %s as consumer %s of group %s", self.name, self.stream,
                     self.consumer, self.group)
        self._ever_connected = True
        self.stats["redis_disconnected"] = 0
        return client

    def _failed(self, exc):
        """Drop the connection; the next attempt waits the back-off, doubled each time up to reconnect_max_seconds."""
        close_quietly(self._client)
        self._client = None
        self.stats["redis_disconnected"] = 1
        self.stats["redis_connect_failures"] += 1
        first, at_max = self._backoff.failed()
        if first:
            log.warning("input %s: Redis %s unreachable (%s); retrying every %.2f s to %.0f s (reconnect_*_seconds)",
                        self.name, self.url, first_line(exc), self.reconnect_min, self.reconnect_max)
        elif at_max:
            log.warning("input %s: Redis %s still unreachable after %.0f s (%s); retrying every %.0f s "
                        "(reconnect_max_seconds)", self.name, self.url, time.monotonic() - self._backoff.down_since,
                        first_line(exc), self.reconnect_max)

    # -- reading ------------------------------------------------------------------------------------

    def poll(self):
        """Entries to score now, as [Chunk] (at most one, at most batch_count entries) or []."""
        client = self._connected()
        if client is None:
            return []
        import redis
        try:
            entries = self._read(client)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(exc)
            return []
        except redis.ResponseError as exc:
            # NOGROUP: Redis restarted without its data; the group is made again at the next connection.
            self.stats["read_errors"] += 1
            log.warning("input %s: Redis refused a read (%s)", self.name, first_line(exc))
            self._failed(exc)
            return []
        return [self._chunk(entries)] if entries else []

    def _read(self, client):
        if self._own_cursor is not None:
            entries = self._xreadgroup(client, self._own_cursor, block=False)
            if entries:
                self._own_cursor = entries[-1][0]
                return [(eid, fields) for eid, fields in entries if _text(eid) not in self._inflight]
            self._own_cursor = None
        entries = self._claim(client)
        if entries:
            return entries
        return self._xreadgroup(client, ">", block=self.block_ms > 0)

    def _xreadgroup(self, client, start, block):
        reply = client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.batch_count,
                                  block=self.block_ms if block else None)
        if not reply:
            return []
        _stream, entries = reply[0] if isinstance(reply, list) else next(iter(reply.items()))
        return entries

    def _claim(self, client):
        """Entries idle claim_idle_seconds on any consumer of the group (a dead one's), not those we hold."""
        now = time.monotonic()
        if now < self._claim_at:
            return []
        reply = client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                  start_id=self._claim_cursor, count=self.batch_count)
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = cursor
        claimed = [(eid, fields) for eid, fields in entries if fields and _text(eid) not in self._inflight]
        self.stats["redis_claimed"] += len(claimed)
        self._claimed_in_sweep += len(claimed)
        if _text(cursor) == "0-0":   # a sweep over the group's pending entries is done: one log line for it
            self._claim_at = now + self.claim_interval
            if self._claimed_in_sweep:
                log.warning("input %s: claimed %d entries idle over %.1f s on other consumers of group %s "
                            "(claim_idle_seconds; they are scored again)", self.name, self._claimed_in_sweep,
                            self.claim_idle_ms / 1000.0, self.group)
            self._claimed_in_sweep = 0
        return claimed

    def _chunk(self, entries):
        lines, ids = [], []
        for eid, fields in entries:
            ids.append(_text(eid))
            if not fields:   # deleted (trimmed) while pending on us: nothing to score, acknowledged with the rest
                continue
            line, too_long = entry_line(fields, self.max_line_bytes, self.on_long_line)
            self.stats["long_lines"] += too_long
            if line is not None:
                lines.append(line)
        self._inflight.update(ids)
        self.stats["lines"] += len(lines)
        return Chunk(self.key, "redis:" + self.stream, lines, ids[0], tuple(ids))

    # -- acknowledging ------------------------------------------------------------------------------

    def commit(self, key, offset):
        """XACK the entry ids of a scored chunk (kept for the next connection while Redis is away)."""
        if key != self.key or not offset:
            return False
        ids = list(offset)
        self._inflight.difference_update(ids)
        if self._client is None:
            self._unsent_acks.extend(ids)
            return False
        import redis
        try:
            self.stats["redis_acked"] += int(self._client.xack(self.stream, self.group, *ids))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._unsent_acks.extend(ids)
            self._failed(exc)
            return False
        return True

    def close(self):
        if self._unsent_acks:
            log.warning("input %s: %d scored entries could not be acknowledged (Redis away); they will "
                        "be claimed and scored again", self.name, len(self._unsent_acks))
        close_quietly(self._client)
        self._client = None
