"""The redis sink (alerting/sinks/redis_stream.py) and the fleet reader (alerting/fleet.py) against a real
redis-server on 127.0.0.1 and a free port: entries and their keys, the stream bound, failures as
DeliveryError, and the reader's skip-own, dedup, outbox hand-off, acknowledgement and claim of a dead
reader's entries. The daemons end to end: tests/integration/test_redis_fleet.py."""
import json
import time

import pytest

from anomaly_detector.alerting.fleet import FleetReader
from anomaly_detector.alerting.outbox import OutboxReader
from anomaly_detector.alerting.sinks import build_sink
from anomaly_detector.alerting.sinks.base import DeliveryError
from anomaly_detector.alerting.sinks.redis_stream import FLEET_WRITER, RedisStreamSink
from tests.integration.daemon_harness import free_port
from tests.integration.redis_harness import RedisServer
from tests.unit.test_alert_sinks import event

STREAM, GROUP = "incidents", "alerters"


@pytest.fixture
def server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def sink_section(url, **keys):
    base = {"type": "redis", "url": url, "stream": STREAM, "stream_max_entries": 1000, "instance": "a",
            "consume": False, "group": GROUP, "consumer": "", "claim_idle_seconds": 60.0, "timeout_seconds": 2.0}
    return dict(base, **keys)


def reader(tmp_path, url, instance="a", consumer="", claim=60.0, max_events=100):
    section = sink_section(url, instance=instance, consumer=consumer, claim_idle_seconds=claim, consume=True)
    return FleetReader(str(tmp_path / ("outbox-" + (consumer or instance))), "fleet", section, ["hook"], max_events,
                       1 << 20)


def test_each_event_is_one_entry_with_its_idempotency_key(server):
    sink = build_sink("fleet", sink_section(server.url))
    sink.send(event(0))
    sink.send_group([event(1, "updated"), event(2, "resolved")])   # a group: one entry per event
    entries = server.client().xrange(STREAM)
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _id, f in entries]
    assert [f["key"] for f in fields] == ["a/abc-0", "a/abc-1", "a/abc-2"]
    assert [f["event"] for f in fields] == ["opened", "updated", "resolved"]
    body = json.loads(fields[0]["json"])
    assert body["instance"] == "a" and body["id"] == "abc-0" and body["incident"]["template"] == "disk <*> failed"
    assert sink.stats["at_limit"] == 0
    assert sink.takes(event(3)) and not sink.takes(event(3, writer=FLEET_WRITER))


def test_the_stream_is_trimmed_to_about_its_bound_and_that_is_counted(server):
    sink = RedisStreamSink("fleet", server.url, STREAM, 100, "a", 2.0)
    for n in range(400):
        sink.send(event(n))
    length = server.client().xlen(STREAM)
    assert 100 <= length < 400                        # MAXLEN ~ trims whole nodes: about the bound
    assert sink.stats["at_limit"] == 301              # from the 100th on, the stream is at its bound
    again = RedisStreamSink("fleet", server.url, STREAM, 100, "a", 2.0)
    again.restore(sink.state())                       # carried over alerter restarts in the checkpoint
    assert again.stats["at_limit"] == sink.stats["at_limit"]


def test_redis_away_is_a_retried_delivery_error():
    sink = RedisStreamSink("fleet", "redis://127.0.0.1:%d/0" % free_port(), STREAM, 1000, "a", 1.0)
    with pytest.raises(DeliveryError) as err:
        sink.send(event(0))
    assert err.value.reason == "connect" and err.value.retry


def test_a_build_refuses_a_url_that_is_not_redis():
    with pytest.raises(Exception, match="redis://host:port/db"):
        build_sink("fleet", sink_section("http://127.0.0.1:1/"))


def test_the_reader_queues_other_instances_events_once_and_skips_its_own(tmp_path, server):
    mine = RedisStreamSink("fleet", server.url, STREAM, 1000, "a", 2.0)
    theirs = RedisStreamSink("fleet", server.url, STREAM, 1000, "b", 2.0)
    mine.send(event(0, incident="own"))
    theirs.send(event(0))
    theirs.send(event(0))                             # an XADD retried after a lost answer
    theirs.send(event(1, "resolved"))
    fleet = reader(tmp_path, server.url)
    while fleet.step():
        pass
    queued = OutboxReader(str(tmp_path / "outbox-a")).poll()
    assert [(e["id"], e["instance"], e["writer"]) for e in queued] == [("abc-0", "b", FLEET_WRITER),
                                                                      ("abc-1", "b", FLEET_WRITER)]
    assert fleet.stats["read"] == 2 and fleet.stats["duplicates"] == 1 and fleet.stats["own"] == 1
    assert server.client().xpending(STREAM, GROUP)["pending"] == 0
    fleet.writer.close()
    fleet.close()
    theirs.send(event(1, "resolved"))                 # the same key again, after a reader restart
    again = reader(tmp_path, server.url)
    while again.step():
        pass
    assert again.stats["duplicates"] == 1 and again.stats["read"] == 0
    assert len(OutboxReader(str(tmp_path / "outbox-a")).poll()) == 2


def test_an_entry_that_is_not_an_event_is_skipped_and_acknowledged(tmp_path, server):
    server.client().xadd(STREAM, {"key": "b/x-0", "instance": "b", "json": "{not json"})
    fleet = reader(tmp_path, server.url)
    fleet.step()
    assert fleet.stats["unreadable"] == 1 and fleet.stats["read"] == 0
    assert server.client().xpending(STREAM, GROUP)["pending"] == 0


def test_a_dead_readers_entries_are_claimed_by_the_other(tmp_path, server):
    theirs = RedisStreamSink("fleet", server.url, STREAM, 1000, "b", 2.0)
    for n in range(3):
        theirs.send(event(n))
    dead = reader(tmp_path, server.url, consumer="r1", claim=1.0)
    client = dead._connected()
    assert len(dead._read(client)) == 3               # read, then died before queueing and acknowledging
    survivor = reader(tmp_path, server.url, consumer="r2", claim=1.0)
    deadline = time.monotonic() + 10
    while survivor.stats["read"] < 3 and time.monotonic() < deadline:
        survivor.step()
        time.sleep(0.2)
    assert survivor.stats["claimed"] == 3 and survivor.stats["read"] == 3
    assert [e["id"] for e in OutboxReader(str(tmp_path / "outbox-r2")).poll()] == ["abc-0", "abc-1", "abc-2"]
    assert server.client().xpending(STREAM, GROUP)["pending"] == 0


def test_the_reader_reconnects_after_a_redis_restart(tmp_path):
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        theirs = RedisStreamSink("fleet", server.url, STREAM, 1000, "b", 2.0)
        theirs.send(event(0))
        fleet = reader(tmp_path, server.url)
        assert fleet.step() == 1
        server.kill()
        assert fleet.step() == 0 and fleet.stats["disconnected"] == 1
        server.start()
        theirs.send(event(1))
        deadline = time.monotonic() + 10
        while fleet.stats["read"] < 2 and time.monotonic() < deadline:
            fleet.step()
            time.sleep(0.1)
        assert fleet.stats["read"] == 2 and fleet.stats["disconnected"] == 0
    finally:
        server.stop()
