"""Open incidents survive a restart: IncidentBook.state()/restore() through JSON, and the engine's snapshot,
so the same outage keeps its id (and its alert) across a stop, a reload or a crash."""
import json

import numpy as np

from anomaly_detector.detection.incidents import IncidentBook


def add(book, ts, template_id=7, sample="disk sda failed"):
    return book.add("app", ts, 80.0, {"t1": 80.0}, template_id, "disk <*> failed",
                    [("error rule: 2 lines", "0", "2", 80.0)], sample, opened_by=str(template_id),
                    family="lines:%d" % template_id)


def test_an_open_incident_goes_on_with_its_id_after_a_json_round_trip():
    book = IncidentBook(window_seconds=60)
    add(book, 100.0)
    add(book, 110.0)
    book.open[next(iter(book.open))].recent = np.array([100.0, 110.0])
    (before,) = [inc.record() for inc in book.open.values()]
    restored = IncidentBook(window_seconds=60)
    restored.restore(json.loads(json.dumps(book.state())))
    (after,) = [inc.record() for inc in restored.open.values()]
    assert after == before
    assert add(restored, 120.0) == []                      # joins the same incident
    (inc,) = restored.open.values()
    assert inc.id == before["id"] and inc.lines == 3
    closed = restored.close_quiet(500.0)
    assert [c.id for c in closed] == [before["id"]] and restored._route == {}


def test_a_malformed_state_raises_and_leaves_the_book_alone():
    book = IncidentBook(window_seconds=60)
    add(book, 100.0)
    for bad in ({}, {"open": [["app"]], "route": []}, {"open": [], "route": [["app", "x", 3]]}):
        try:
            book.restore(bad)
        except (KeyError, TypeError, ValueError, IndexError):
            pass
        else:
            raise AssertionError("accepted %r" % bad)
        assert len(book.open) == 1


def test_the_engine_snapshot_carries_open_incidents_to_the_next_worker(tmp_path):
    from anomaly_detector.detection.engine import DetectionEngine
    from anomaly_detector.parsing.batch import LEVEL_CRITICAL
    from tests.unit.test_engine import T0, config, make_batch

    engine = DetectionEngine(config())
    engine.process(make_batch(T0 + np.arange(5.0), [7] * 5, level=[LEVEL_CRITICAL] * 5), 8)
    (opened,) = engine.open_records()
    engine.save(str(tmp_path))
    successor = DetectionEngine(config())
    assert successor.load(str(tmp_path))
    assert [r["id"] for r in successor.open_records()] == [opened["id"]]
    successor.process(make_batch(T0 + 5 + np.arange(3.0), [7] * 3, level=[LEVEL_CRITICAL] * 3), 8)
    (closed,) = successor.finish()
    assert closed["id"] == opened["id"] and closed["lines"] == 8


def test_the_span_of_a_silence_an_incident_holds_survives_a_round_trip():
    book = IncidentBook(window_seconds=300)
    book.add("app", 400.0, 100.0, {"t2": 100.0}, -1, "", [("source silent: 0 lines in the last 300s", "", "",
             100.0)], None, opened_by="source:0", family="finding:t2", since=100.0)
    restored = IncidentBook(window_seconds=300)
    restored.restore(json.loads(json.dumps(book.state())))
    assert next(iter(restored.open.values())).absent == (100.0, 400.0)
    old = book.state()
    del old["open"][0][2]["absent"]                         # a state saved before it
    restored.restore(old)
    assert next(iter(restored.open.values())).absent is None
