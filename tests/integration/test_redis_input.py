"""type = redis on a live daemon against a real redis-server: every entry scored once and acknowledged,
a Redis restart mid-run loses nothing, and a consumer killed with -9 has its pending entries claimed.

Entries carry seq=<n> in their message; the scored-lines file tells which were scored and how often.
"""
import time

from tests.integration.daemon_harness import Daemon, loss_and_duplicates, wait_for
from tests.integration.redis_harness import RedisServer, pending_count, redis_input, xadd_numbered

SETTLE_SECONDS = 240


def test_every_entry_is_scored_once_and_acknowledged(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    daemon = Daemon(tmp_path / "d", workers=2, inputs=redis_input(server.url, extra="batch_count = 300\n"))
    try:
        client = server.client()
        xadd_numbered(client, "logs", 0, 2000)     # written before the group exists: read from the first entry
        daemon.start()
        xadd_numbered(client, "logs", 2000, 2000)
        counts = daemon.wait_scored(4000, SETTLE_SECONDS)
        lost, duplicates = loss_and_duplicates(counts, 4000)
        assert not lost and duplicates == 0, (lost[:10], duplicates)
        wait_for(lambda: pending_count(client, "logs", "detectors") == 0, 30, daemon, "XPENDING empty")
        wait_for(lambda: daemon.metric("redis_entries_acknowledged_total") == 4000, 30, daemon,
                 "redis_entries_acknowledged_total = 4000")
        assert daemon.metric("redis_inputs_disconnected") == 0
        assert client.xlen("logs") == 4000    # trimming is the producer's: nothing deleted
    finally:
        daemon.stop()
        server.stop()


def test_a_redis_restart_mid_run_loses_nothing(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    inputs = redis_input(server.url, extra="reconnect_min_seconds = 0.1\nreconnect_max_seconds = 1\n")
    daemon = Daemon(tmp_path / "d", workers=2, inputs=inputs)
    try:
        xadd_numbered(server.client(), "logs", 0, 3000)
        daemon.start()
        wait_for(lambda: len(daemon.scored_seqs()) >= 500, SETTLE_SECONDS, daemon, "some entries scored")
        server.kill()                     # mid-run: entries in flight, acknowledgements not yet sent
        wait_for(lambda: daemon.metric("redis_inputs_disconnected") == 1, 30, daemon, "redis_inputs_disconnected = 1")
        time.sleep(2)                     # several failed attempts, with back-off
        assert daemon.process.poll() is None
        server.start()
        xadd_numbered(server.client(), "logs", 3000, 1000)
        counts = daemon.wait_scored(4000, SETTLE_SECONDS)
        lost, duplicates = loss_and_duplicates(counts, 4000)
        assert not lost, lost[:10]
        assert duplicates == 0, duplicates
        client = server.client()
        wait_for(lambda: pending_count(client, "logs", "detectors") == 0, 30, daemon, "XPENDING empty after restart")
        assert daemon.metric("redis_reconnects_total") >= 1
        assert daemon.metric("redis_connect_failures_total") >= 2
        assert daemon.metric("redis_inputs_disconnected") == 0
        logged = daemon.log_tail(2000)
        assert "Redis %s unreachable" % server.url in logged and "reconnected to Redis" in logged, logged[-3000:]
    finally:
        daemon.stop()
        server.stop()


def test_entries_pending_on_a_killed_consumer_are_claimed_by_the_survivor(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    claim = "claim_idle_seconds = 3\nbatch_count = 200\n"
    doomed = Daemon(tmp_path / "a", workers=1, inputs=redis_input(server.url, consumer="a", extra=claim))
    survivor = Daemon(tmp_path / "b", workers=1, inputs=redis_input(server.url, consumer="b", extra=claim))
    client = server.client()
    try:
        doomed.start()
        xadd_numbered(client, "logs", 0, 20000)
        # kill -9 once entries sit read and unacknowledged on consumer a
        wait_for(lambda: _pending_on(client, "a") > 0, SETTLE_SECONDS, doomed, "entries pending on consumer a",
                 interval=0.01)
        doomed.kill_tree()
        left_on_a = _pending_on(client, "a")
        assert left_on_a > 0
        survivor.start()
        wait_for(lambda: _pending_on(client, "a") == 0, SETTLE_SECONDS, survivor, "consumer a's entries claimed")
        wait_for(lambda: pending_count(client, "logs", "detectors") == 0
                 and survivor.metric("redis_entries_claimed_total") >= left_on_a, SETTLE_SECONDS, survivor,
                 "every entry acknowledged")
        counts = doomed.scored_seqs()
        for seq, n in survivor.scored_seqs().items():
            counts[seq] = counts.get(seq, 0) + n
        lost, duplicates = loss_and_duplicates(counts, 20000)
        assert not lost, lost[:10]
        assert duplicates <= left_on_a, (duplicates, left_on_a)   # at most what a held unacknowledged
        assert "idle over 3.0 s on other consumers" in survivor.log_tail(2000)
    finally:
        survivor.stop()
        doomed.kill()
        server.stop()


def _pending_on(client, consumer):
    """Entries read by `consumer` and not acknowledged (XINFO CONSUMERS)."""
    for row in client.xinfo_consumers("logs", "detectors"):
        if row["name"] in (consumer, consumer.encode()):
            return row["pending"]
    return 0


def test_a_consumer_restarted_under_its_name_reads_its_pending_entries_at_once(tmp_path):
    """Reader level, real server: what consumer c read and never acknowledged comes back first (an entry
    trimmed meanwhile is acknowledged without a line); what another reader holds is not claimed before
    claim_idle_seconds."""
    from anomaly_detector.inputs.redis_stream import RedisStreamInput

    server = RedisServer(tmp_path / "redis").start()
    try:
        client = server.client()
        xadd_numbered(client, "logs", 0, 5)
        first = RedisStreamInput("bus", server.url, "logs", "detectors", "c", claim_idle_seconds=3600)
        chunk, = first.poll()
        assert [b"seq=%d" % i in line for i, line in enumerate(chunk.lines)] == [True] * 5
        client.xdel("logs", chunk.end_offset[2])    # the producer trims one while it is pending
        first.close()                               # dies without acknowledging
        again = RedisStreamInput("bus", server.url, "logs", "detectors", "c", claim_idle_seconds=3600)
        chunk2, = again.poll()
        assert chunk2.end_offset == chunk.end_offset and len(chunk2.lines) == 4
        other = RedisStreamInput("bus", server.url, "logs", "detectors", "d", claim_idle_seconds=3600)
        assert other.poll() == [] and other.stats["redis_claimed"] == 0
        again.commit(chunk2.key, chunk2.end_offset)
        # the trimmed entry may already be gone from the group: XAUTOCLAIM (Redis 7) drops deleted entries it meets
        assert pending_count(client, "logs", "detectors") == 0 and again.stats["redis_acked"] >= 4
        for reader in (again, other):
            reader.close()
    finally:
        server.stop()
