"""Several live daemons on one Redis consumer group (docs/scale-out.md), against a real redis-server.

- A group of 3 scores a stream with one instance killed -9 midway: every entry scored at least once,
  duplicates at most what was pending on the dead consumer, each live instance a real share (>= 10%).
- Redis killed and restarted under a group of 2: both reconnect, every entry scored exactly once.
- Incidents of 2 instances go to one Redis stream (sink type = redis); the alerter of one of them
  reads it (consume = true) and delivers each event once to a real HTTP receiver.

Entries carry seq=<n> in their message; each daemon's scored-lines file tells which it scored.
"""
import os
import time

from tests.integration.daemon_harness import Daemon, loss_and_duplicates, wait_for
from tests.integration.redis_harness import RedisServer, pending_count, redis_input, xadd_numbered
from tests.integration.test_alerting import Collector, outbox_events, write_phase

SETTLE_SECONDS = 600
CLAIM = "claim_idle_seconds = 5\nbatch_count = 500\n"


def pending_on(client, stream, group, consumer):
    """Entries read by `consumer` and not acknowledged (XINFO CONSUMERS)."""
    for row in client.xinfo_consumers(stream, group):
        if row["name"] in (consumer, consumer.encode()):
            return row["pending"]
    return 0


def merged(daemons):
    """({seq: times scored over the group}, [entries each daemon scored])."""
    counts, shares = {}, []
    for daemon in daemons:
        own = daemon.scored_seqs()
        shares.append(sum(own.values()))
        for seq, n in own.items():
            counts[seq] = counts.get(seq, 0) + n
    return counts, shares


def run_group_with_a_kill(tmp_path, entries):
    """3 instances, `entries` XADDed, instance 0 killed -9 once it scored some and holds some pending."""
    server = RedisServer(tmp_path / "redis").start()
    daemons = [Daemon(tmp_path / ("n%d" % i), workers=1, inputs=redis_input(server.url, consumer="n%d" % i,
                                                                           extra=CLAIM)) for i in range(3)]
    client = server.client()
    try:
        xadd_numbered(client, "logs", 0, entries)
        client.xgroup_create("logs", "detectors", id="$")   # at the end: no instance reads before all are up
        for daemon in daemons:
            daemon.start()
        started = time.monotonic()
        client.xgroup_setid("logs", "detectors", id="0")    # all three start on the whole stream at once
        victim = daemons[0]
        wait_for(lambda: len(victim.scored_seqs()) >= entries // 10 and pending_on(client, "logs", "detectors", "n0"),
                 SETTLE_SECONDS, victim, "instance n0 scored some and holds pending entries", interval=0.05)
        victim_scored = len(victim.scored_seqs())
        victim.kill_tree()
        held = pending_on(client, "logs", "detectors", "n0")
        assert held > 0
        survivors = daemons[1:]

        def done():
            counts, _ = merged(daemons)
            return len(counts) >= entries and pending_count(client, "logs", "detectors") == 0

        wait_for(done, SETTLE_SECONDS, survivors[0], "every entry scored and acknowledged", interval=2)
        elapsed = time.monotonic() - started
        counts, shares = merged(daemons)
        lost, duplicates = loss_and_duplicates(counts, entries)
        assert not lost, lost[:10]
        assert duplicates <= held, (duplicates, held)
        for daemon, share in zip(survivors, shares[1:]):
            assert share >= entries // 10, (shares, daemon.dir)
        wait_for(lambda: sum(d.metric("redis_entries_claimed_total") for d in survivors) >= held, 30, survivors[0],
                 "the survivors counting the entries they claimed")
        assert shares[0] < entries * 0.3, shares        # killed midway through its share, not at the end
        print("\n%d entries in %.1f s over 3 instances (n0 killed -9 after %d scored, %d pending); scored per "
              "instance %s, %d duplicates" % (entries, elapsed, victim_scored, held, shares, duplicates))
    finally:
        for daemon in daemons:
            daemon.stop()
            daemon.kill()
        server.stop()


def test_a_group_of_three_with_one_killed_scores_300000_entries(tmp_path):
    """About 60 s on a loaded 2-core machine (load 10: 35 s from the start to the last entry scored)."""
    run_group_with_a_kill(tmp_path, 300000)


def test_a_redis_restart_under_a_group_of_two_loses_nothing(tmp_path):
    """Redis killed (appendonly: the stream and the group survive) while two instances read: both reconnect,
    acknowledge what they scored meanwhile, and every entry is scored exactly once (claim_idle_seconds is
    far above the outage, so nobody's entries are claimed)."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    reconnect = "reconnect_min_seconds = 0.1\nreconnect_max_seconds = 1\nbatch_count = 500\n"
    daemons = [Daemon(tmp_path / ("n%d" % i), workers=1, inputs=redis_input(server.url, consumer="n%d" % i,
                                                                           extra=reconnect)) for i in range(2)]
    client = server.client()
    entries = 20000
    try:
        xadd_numbered(client, "logs", 0, entries)
        client.xgroup_create("logs", "detectors", id="$")
        for daemon in daemons:
            daemon.start()
        client.xgroup_setid("logs", "detectors", id="0")
        wait_for(lambda: sum(merged(daemons)[1]) >= entries // 4, SETTLE_SECONDS, daemons[0], "a quarter scored",
                 interval=0.1)
        server.kill()
        for daemon in daemons:
            wait_for(lambda d=daemon: d.metric("redis_inputs_disconnected") == 1, 30, daemon, "Redis seen away")
        server.start()
        client = server.client()
        wait_for(lambda: len(merged(daemons)[0]) >= entries and pending_count(client, "logs", "detectors") == 0,
                 SETTLE_SECONDS, daemons[0], "every entry scored and acknowledged", interval=1)
        counts, shares = merged(daemons)
        lost, duplicates = loss_and_duplicates(counts, entries)
        assert not lost and duplicates == 0, (lost[:10], duplicates)
        assert all(share >= entries // 10 for share in shares), shares
        for daemon in daemons:
            wait_for(lambda d=daemon: d.metric("redis_reconnects_total") >= 1
                     and d.metric("redis_inputs_disconnected") == 0, 30, daemon, "reconnected")
    finally:
        for daemon in daemons:
            daemon.stop()
        server.stop()


def fleet_alerting(url, instance, consume, hook_url=None):
    """[detection] and [alerting] of one instance: a redis sink on the fleet's stream (fast retries), and for
    the reader (consume) a webhook to `hook_url`. Every event is its own notification, as written."""
    text = """[detection]
incident_window_seconds = 30
[alerting]
dedup_window_seconds = 0
group_wait_seconds = 0
[[fleet]]
type = redis
url = %s
instance = %s
consume = %s
claim_idle_seconds = 5
retry_initial_seconds = 0.2
retry_max_seconds = 1
stream_max_entries = 100
""" % (url, instance, "true" if consume else "false")
    if hook_url:
        text += "[[hook]]\ntype = webhook\nurl = %s/hook\nretry_initial_seconds = 0.2\nretry_max_seconds = 1\n" % hook_url
    return text


def own_events(daemon):
    """The incident events the daemon's workers wrote (its outbox, without what its alerter read back)."""
    return [e for e in outbox_events(daemon) if e["writer"] != "fleet"]


def test_incidents_of_two_instances_land_in_one_stream_and_one_alerter_delivers_each_once(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    hook = Collector()
    reader = Daemon(tmp_path / "a", workers=1, extra=fleet_alerting(server.url, "a", True, hook.url))
    writer = Daemon(tmp_path / "b", workers=1, extra=fleet_alerting(server.url, "b", False))
    client = server.client()

    def delivered():
        return [(b.get("instance", "a"), b["id"]) for b in hook.bodies]

    def expected():
        return [("a", e["id"]) for e in own_events(reader)] + [("b", e["id"]) for e in own_events(writer)]

    # The stream past stream_max_entries before any incident: fillers of instance a (the reader skips them as
    # its own); XADD MAXLEN ~ trims whole nodes of 100 entries, so from the first event on it stays over 100.
    pipe = client.pipeline()
    for i in range(250):
        pipe.xadd("anomaly-detector-incidents", {"key": "a/filler-%d" % i, "instance": "a", "event": "opened",
                                                 "json": "{}"})
    pipe.execute()
    try:
        reader.start()
        writer.start()
        seq_a = write_phase(os.path.join(reader.logs, "app.log"), 0, 0)
        seq_b = write_phase(os.path.join(writer.logs, "app.log"), 20, 0)
        reader.wait_scored(seq_a, 240)
        writer.wait_scored(seq_b, 240)
        wait_for(lambda: any(e["event"] == "resolved" for e in own_events(writer))
                 and any(e["event"] == "resolved" for e in own_events(reader)), 120, writer, "incidents resolved")
        wait_for(lambda: set(delivered()) >= set(expected()), 120, reader, "every incident event at the receiver")
        # Redis away while the writer has new incidents: they wait in its outbox and go out once Redis is back
        server.kill()
        seq_b = write_phase(os.path.join(writer.logs, "app.log"), 40, seq_b)
        writer.wait_scored(seq_b, 240)
        wait_for(lambda: writer.labelled("alerts_failed_total").get((("reason", "connect"), ("sink", "fleet"))),
                 120, writer, "the redis sink failing while Redis is away")
        wait_for(lambda: reader.labelled("alert_stream_reader_disconnected").get((("sink", "fleet"),)) == 1, 60,
                 reader, "the reader seeing Redis away")
        server.start()
        wait_for(lambda: set(delivered()) >= set(expected()) and reader.metric("alert_queue_size") == 0
                 and writer.metric("alert_queue_size") == 0, 180, reader, "every event delivered after the restart")
        got = delivered()
        assert sorted(got) == sorted(set(expected())), (len(got), len(set(got)))   # each once, nothing else
        from_b = own_events(writer)
        assert len(from_b) >= 4 and {b["instance"] for b in hook.bodies if "instance" in b} == {"b"}
        # /metrics is a reading taken once a second: wait for the one after the last delivery
        wait_for(lambda: reader.labelled("alert_stream_read_total")[(("sink", "fleet"),)] == len(from_b)
                 and reader.labelled("alert_stream_reader_disconnected")[(("sink", "fleet"),)] == 0
                 and writer.labelled("alerts_delivered_total")[(("sink", "fleet"),)] >= len(from_b), 30, reader,
                 "the reader's and the writer's counters")
        assert reader.labelled("alert_stream_duplicates_total")[(("sink", "fleet"),)] == 0
        # every event each instance added found the stream at its bound: counted, and logged once
        assert writer.labelled("alert_stream_at_limit_total")[(("sink", "fleet"),)] == len(from_b)
        assert "its stream_max_entries = 100" in writer.log_tail(400)
        entries = client.xrange("anomaly-detector-incidents")
        keys = [f[b"key"].decode() for _id, f in entries]
        assert 100 <= len(entries) < 200
        assert {k for k in keys if "/filler-" not in k} == {"%s/%s" % pair for pair in expected()}
        assert client.xpending("anomaly-detector-incidents", "anomaly-detector-alerters")["pending"] == 0
        assert "reading stream anomaly-detector-incidents again" in reader.log_tail(400)
    finally:
        reader.stop()
        writer.stop()
        hook.close()
        server.stop()
