"""redis_link.Backoff: at once at first, then minimum doubling to maximum; the outage's start and length."""
from anomaly_detector.redis_link import Backoff


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_attempts_wait_minimum_doubling_to_maximum_and_a_connection_starts_over():
    clock = Clock()
    backoff = Backoff(1.0, 5.0, clock=clock)
    assert backoff.due() and backoff.down_since is None
    assert backoff.failed() == (True, False)           # the outage begins: retry in 1 s
    assert not backoff.due()
    delays = []
    for _ in range(4):
        clock.now = backoff.retry_at
        assert backoff.due()
        before = clock.now
        first, at_max = backoff.failed()
        assert not first
        delays.append((backoff.retry_at - before, at_max))
    assert delays == [(2.0, False), (4.0, True), (5.0, False), (5.0, False)]   # told once when it reaches 5 s
    clock.now += 3.0
    assert backoff.succeeded() == clock.now - 100.0    # the outage lasted since the first failure
    assert backoff.down_since is None and backoff.delay == 1.0
    assert backoff.succeeded() is None                 # no outage: nothing to tell
