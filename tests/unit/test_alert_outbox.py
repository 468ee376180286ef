"""The alert outbox (alerting/outbox.py): append-only segments per writer, checkpoints, bounds, torn tails."""
import json
import os

from anomaly_detector.alerting.outbox import (
    OutboxReader,
    OutboxWriter,
    outbox_bytes,
    read_checkpoint,
    segments,
    write_checkpoint,
)


def event(i):
    return {"id": "inc%d-0" % i, "event": "opened", "incident_id": "inc%d" % i, "rev": 0, "at": 1000.0 + i,
            "incident": {"score": 50.0, "samples": ["x" * 20]}}


def test_events_are_read_in_order_with_a_seq_per_writer_and_survive_a_new_writer(tmp_path):
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a"], 1000, 10**6)
    writer.append([event(0), event(1)])
    writer.append([event(2)])
    writer.close()
    again = OutboxWriter(str(tmp_path), "worker-0", ["a"], 1000, 10**6)   # a restarted worker
    again.append([event(3)])
    got = OutboxReader(str(tmp_path)).poll()
    assert [e["seq"] for e in got] == [1, 2, 3, 4]
    assert [e["id"] for e in got] == ["inc0-0", "inc1-0", "inc2-0", "inc3-0"]
    assert {e["writer"] for e in got} == {"worker-0"}
    assert len(segments(str(tmp_path))) == 2   # each writer life starts a segment


def test_reader_tails_new_lines_and_leaves_a_torn_tail(tmp_path):
    writer = OutboxWriter(str(tmp_path), "worker-1", ["a"], 1000, 10**6)
    reader = OutboxReader(str(tmp_path))
    writer.append([event(0)])
    assert [e["seq"] for e in reader.poll()] == [1]
    assert reader.poll() == []
    path = segments(str(tmp_path))[0][2]
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "torn')            # a crash mid-write
    assert reader.poll() == []
    writer.close()
    successor = OutboxWriter(str(tmp_path), "worker-1", ["a"], 1000, 10**6)
    successor.append([event(5)])
    got = reader.poll()
    assert [(e["seq"], e["id"]) for e in got] == [(2, "inc5-0")]


def test_delivered_segments_are_deleted_and_undelivered_counted(tmp_path):
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a", "b"], 32, 10**6)   # segments of 2 events
    writer.append([event(i) for i in range(6)])
    assert writer.undelivered() == (6, sum(os.path.getsize(p) for _w, _s, p in segments(str(tmp_path))))
    write_checkpoint(str(tmp_path), "a", {"writers": {"worker-0": 6}, "state": {}})
    assert writer.undelivered()[0] == 6                   # b has delivered nothing
    write_checkpoint(str(tmp_path), "b", {"writers": {"worker-0": 4}, "state": {}})
    assert writer.undelivered()[0] == 2
    writer.append([event(6)])
    firsts = [s for _w, s, _p in segments(str(tmp_path))]
    assert min(firsts) >= 5                               # segments every sink is past are gone
    assert read_checkpoint(str(tmp_path), "b")["writers"] == {"worker-0": 4}


def test_the_bound_drops_the_oldest_undelivered_and_counts_them(tmp_path):
    dropped = []
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a"], 32, 10**6, on_drop=dropped.append)
    for i in range(40):
        writer.append([event(i)])
        held, _ = writer.undelivered()
        assert held <= 32
    assert sum(dropped) == 8
    got = OutboxReader(str(tmp_path)).poll()
    assert [e["seq"] for e in got] == list(range(9, 41))  # the newest 32, in order


def test_the_byte_bound_holds_on_disk(tmp_path):
    size = len(json.dumps(dict(event(0), seq=1, writer="worker-0"))) + 1
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a"], 10**6, 16 * size + 100)
    for i in range(100):
        writer.append([event(i)])
        assert outbox_bytes(str(tmp_path)) <= 16 * size + 100
    assert OutboxReader(str(tmp_path)).poll()[-1]["seq"] == 100


def test_a_corrupt_checkpoint_counts_as_nothing_delivered(tmp_path):
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "a.json").write_text("{not json")
    assert read_checkpoint(str(tmp_path), "a") == {"writers": {}, "state": {}}


def test_seq_goes_on_past_what_was_delivered_even_when_no_segment_is_left(tmp_path):
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a"], 1000, 10**6)
    writer.append([event(0), event(1)])
    writer.close()
    write_checkpoint(str(tmp_path), "a", {"writers": {"worker-0": 2}, "state": {}})
    for _w, _s, path in segments(str(tmp_path)):
        os.unlink(path)                                   # an operator cleaned the directory
    again = OutboxWriter(str(tmp_path), "worker-0", ["a"], 1000, 10**6)
    again.append([event(2)])
    assert [e["seq"] for e in OutboxReader(str(tmp_path)).poll()] == [3]


def test_the_newest_segment_stays_when_everything_was_delivered(tmp_path):
    writer = OutboxWriter(str(tmp_path), "worker-0", ["a"], 32, 10**6)
    writer.append([event(i) for i in range(5)])
    writer.close()
    write_checkpoint(str(tmp_path), "a", {"writers": {"worker-0": 5}, "state": {}})
    again = OutboxWriter(str(tmp_path), "worker-0", ["a"], 32, 10**6)
    again.append([event(5)])
    assert again.undelivered()[0] == 1
    assert len(segments(str(tmp_path))) == 2              # the old newest (seq 5) and the new one
