"""What every Redis user of the daemon shares: a client without redis-py's own retries, a quiet close,
a consumer group made once, and the back-off between connection attempts.

Users: inputs/redis_stream.py (the stream input), alerting/sinks/redis_stream.py and alerting/fleet.py
(the fleet's incident stream), parsing/vocabulary.py (the deployment's template vocabulary). Each keeps
its own logging and metrics; redis-py's retries are off so that no call blocks longer than its timeout
and every outage is seen, counted and retried by its owner (the stream input, the fleet reader and
the vocabulary through Backoff; the incident sink through the alerter's delivery back-off).
"""
import time


class Backoff:
    """When to try Redis again: at once at first, then `minimum` seconds after a failure, doubling up to
    `maximum`; `down_since` is when the current outage began (None while connected)."""

    def __init__(self, minimum, maximum, clock=time.monotonic):
        self.minimum, self.maximum, self.clock = minimum, maximum, clock
        self.delay, self.retry_at, self.down_since = minimum, 0.0, None

    def due(self):
        return self.clock() >= self.retry_at

    def failed(self):
        """Record a failed attempt; returns (first failure of this outage, the delay reaches maximum now)."""
        now = self.clock()
        first = self.down_since is None
        if first:
            self.down_since = now
        at_max = self.delay < self.maximum <= self.delay * 2
        self.retry_at = now + self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return first, at_max

    def succeeded(self):
        """Record a connection; returns how long the outage lasted (seconds), None when there was none."""
        lasted = None if self.down_since is None else self.clock() - self.down_since
        self.down_since, self.delay = None, self.minimum
        return lasted


def connect(url, timeout, connect_timeout=None):
    """A redis-py client for `url`; `timeout` bounds each reply, `connect_timeout` (default: timeout) the connect."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    return redis.Redis.from_url(url, socket_timeout=timeout,
                                socket_connect_timeout=timeout if connect_timeout is None else connect_timeout,
                                retry=Retry(NoBackoff(), 0))


def close_quietly(client):
    """Close a client whose socket may be gone already."""
    if client is None:
        return
    try:
        client.close()
    except Exception:   # noqa: BLE001 - the socket is gone already
        pass


def ensure_group(client, stream, group):
    """Create consumer group `group` of `stream` (and the stream) from its first entry, so what was written
    before the group existed is read too; a group that exists is left as it is."""
    import redis
    try:
        client.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def first_line(exc):
    """An exception as one log-safe line."""
    return (str(exc) or type(exc).__name__).splitlines()[0]
