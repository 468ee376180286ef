"""Incident events (alerting/events.py): opened once, updated on new evidence at most every interval,
resolved on close; ids = incident id + event number, carried over a restart; log text made safe."""
from anomaly_detector.alerting.escape import clean, one_line
from anomaly_detector.alerting.events import IncidentTracker


def record(incident_id="abc", lines=3, score=60.0, **more):
    return dict({"id": incident_id, "source": "app", "kind": "rule_burst", "reason": "error rule: 3 lines",
                 "score": score, "lines": lines, "tiers": ["t1"], "templates": [1], "first_seen": 1.0,
                 "last_seen": 2.0, "template_id": 1, "template": "disk <*> failed", "expected": "0",
                 "observed": "3", "samples": ["disk sda failed"]}, **more)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_opened_updated_resolved_with_stable_ids():
    clock = Clock()
    tracker = IncidentTracker(update_seconds=60, clock=clock)
    first = tracker.events([record()], [])
    assert [(e["event"], e["id"]) for e in first] == [("opened", "abc-0")]
    assert tracker.events([record()], []) == []                     # nothing new
    assert tracker.events([record(lines=5)], []) == []              # new evidence, too soon
    clock.now += 61
    assert [(e["event"], e["id"]) for e in tracker.events([record(lines=6)], [])] == [("updated", "abc-1")]
    clock.now += 1
    done = tracker.events([], [record(lines=7)])
    assert [(e["event"], e["id"]) for e in done] == [("resolved", "abc-2")]
    assert done[0]["incident"]["severity"] == "warning"


def test_an_incident_closed_before_it_was_announced_opens_and_resolves():
    tracker = IncidentTracker(update_seconds=60, clock=Clock())
    got = tracker.events([], [record("x", reason="critical rule: 2 lines")])
    assert [(e["event"], e["id"]) for e in got] == [("opened", "x-0"), ("resolved", "x-1")]
    assert got[0]["incident"]["severity"] == "critical"


def test_numbers_go_on_after_a_restart_and_a_reopened_id():
    tracker = IncidentTracker(update_seconds=60, clock=Clock())
    tracker.events([record()], [])
    successor = IncidentTracker(update_seconds=60, clock=Clock())
    successor.restore(tracker.state())
    assert [e["id"] for e in successor.events([], [record()])] == ["abc-1"]
    # the same incident id opened again (evidence after a restart in the same onset bucket)
    assert [e["id"] for e in successor.events([record()], [])] == ["abc-2"]


def test_log_text_loses_control_characters_and_length():
    hostile = "ok\x1b[31mred\x07\u202eevil\r\nnext" + "y" * 5000
    tracker = IncidentTracker(update_seconds=60, clock=Clock())
    event = tracker.events([record(samples=[hostile], source="a\x00b")], [])[0]
    sample = event["incident"]["samples"][0]
    assert "\x1b" not in sample and "\x07" not in sample and "\u202e" not in sample and "\r" not in sample
    assert len(sample) <= 2000 and "\n" in sample
    assert event["incident"]["source"] == "a\ufffdb"
    assert "\n" not in one_line(hostile) and clean("plain") == "plain"
