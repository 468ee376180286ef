"""Feedback rules: the engine's use of them (per source, normal and problem, findings, widening, snapshot),
the rules file the workers poll, the checks of POST /admin/feedback over real worker views, and the
query and encoding of GET /api/incidents."""
import json
import os
import re

import numpy as np
import pytest

from anomaly_detector.detection.engine import DetectionEngine
from anomaly_detector.detection.feedback import (
    NONE,
    NORMAL,
    PROBLEM,
    FeedbackMatcher,
    RulesFile,
    load_rules,
    make_rule,
    rules_path,
    save_rules,
)
from anomaly_detector.metrics.admin import AdminAPI
from anomaly_detector.metrics.feedback_api import FeedbackDesk, FeedbackError
from anomaly_detector.metrics.incidents_api import IncidentsAPI, WorkerViews, encode, parse_query, public
from anomaly_detector.parsing.batch import LEVEL_CRITICAL
from anomaly_detector.storage.layout import worker_paths
from anomaly_detector.worker.incident_view import IncidentView, read_view
from tests.unit.test_engine import T0, config, make_batch


def texts(tid):
    return {7: "db down at <*>", 8: "cache miss <*>"}.get(int(tid), "line %d" % tid)


def critical_burst(engine, start, tid=7, source=0, sources=("web", "api")):
    batch = make_batch(start + np.arange(5.0), [tid] * 5, level=[LEVEL_CRITICAL] * 5,
                       source_id=np.full(5, source, np.int32), sources=sources)
    return engine.process(batch, 9, texts)


def test_normal_rule_silences_its_template_for_its_source_only():
    engine = DetectionEngine(config())
    engine.source_id("web"), engine.source_id("api")
    engine.feedback.set_rules([make_rule("normal", "web", ["db down at <*>"])])
    quiet = critical_burst(engine, T0, source=0)
    assert not quiet.anomaly.any() and quiet.score.max() == 0.0
    loud = critical_burst(engine, T0 + 10, source=1)              # the same template from another source
    assert loud.anomaly.all()
    incidents = engine.finish()
    assert [i["source"] for i in incidents] == ["api"]
    assert engine.feedback.suppressed == 5


def test_problem_rule_flags_every_line_of_its_template_as_a_known_problem():
    engine = DetectionEngine(config(incident_min_lines=3))
    engine.source_id("web")
    engine.feedback.set_rules([make_rule("problem", "web", ["cache miss <*>"])])
    batch = make_batch(T0 + np.arange(4.0), [8, 1, 8, 8], sources=("web",))
    got = engine.process(batch, 9, texts)
    assert got.anomaly.tolist() == [True, False, True, True]
    assert got.score[0] >= engine.threshold
    assert any("known problem" in r[1] for r in got.reasons[0])
    (incident,) = engine.finish()
    assert incident["kind"] == "known_problem" and incident["lines"] == 3
    assert engine.feedback.flagged == 3


def test_a_rule_keeps_its_template_when_the_miner_widens_it_and_across_a_snapshot(tmp_path):
    matcher = FeedbackMatcher()
    rule = make_rule("normal", "web", ["db down at <*>"])
    matcher.set_rules([rule])
    names = ["web"].__getitem__
    assert matcher.verdicts(np.zeros(2, np.int32), np.array([7, 1]), names, texts).tolist() == [NORMAL, NONE]
    matcher.templates_changed()                                   # template 7 widened: its text is another now
    widened = {7: "db down at <*> <*>"}.get
    assert matcher.verdicts(np.zeros(1, np.int32), np.array([7]), names, widened).tolist() == [NORMAL]
    engine = DetectionEngine(config())
    engine.feedback.set_rules([rule])
    engine.feedback.restore(matcher.state())
    engine.save(str(tmp_path))
    again = DetectionEngine(config())
    assert again.load(str(tmp_path))
    again.feedback.set_rules([rule])
    assert again.feedback.code("web", 7, widened) == NORMAL
    again.feedback.set_rules([])                                  # cleared: the binding goes with the rule
    assert again.feedback.code("web", 7, texts) == NONE and again.feedback.state() == []


def test_findings_are_suppressed_by_template_or_by_kind_for_a_whole_source():
    matcher = FeedbackMatcher()
    matcher.set_rules([make_rule("normal", "web", ["db down at <*>"], ["silent_source"]),
                       make_rule("problem", "api", ["cache miss <*>"])])
    assert matcher.finding_suppressed("web", 7, "volume_drop", texts)
    assert matcher.finding_suppressed("web", -1, "silent_source", texts)
    assert not matcher.finding_suppressed("web", -1, "volume_drop", texts)
    assert not matcher.finding_suppressed("api", -1, "silent_source", texts)
    assert not matcher.finding_suppressed("api", 8, "volume_drop", texts)   # problem rules never hide anything
    assert matcher.verdicts(np.zeros(1, np.int32), np.array([8]), ["api"].__getitem__, texts).tolist() == [PROBLEM]


def test_rules_file_round_trip_and_poll_reads_only_a_change(tmp_path):
    path = rules_path(str(tmp_path))
    watch = RulesFile(path, "worker 0")
    assert watch.poll() == [] and watch.poll() is None            # no file: no rules, once
    rules = [make_rule("normal", "web", ["a <*>"], incident="0123456789abcdef")]
    save_rules(path, rules)
    assert load_rules(path) == rules and watch.poll() == rules and watch.poll() is None
    with open(path, "w") as f:
        f.write('{"version": 1, "rules": [{"verdict": "maybe"}]}')
    assert watch.poll() is None                                   # unusable: the rules applied stay
    os.unlink(path)
    assert watch.poll() == []


def seen(engine, pairs, template_text=texts):
    """The engine's matcher sees lines of these (source name, template id) pairs, as in a batch."""
    sids = np.array([engine.source_id(source) for source, _tid in pairs], np.int32)
    tids = np.array([tid for _source, tid in pairs], np.int32)
    engine.feedback.verdicts(sids, tids, lambda i: engine.sources[i], template_text)


def worker_views(tmp_path, records=(), pairs=(), index=0, template_text=texts):
    """A real view file written by the worker's IncidentView, from an engine holding these closed records
    and having seen these (source, template id) pairs."""
    view = IncidentView(worker_paths(str(tmp_path), index).alerting, index, keep=5)
    view.note_closed(list(records), texts)
    engine = DetectionEngine(config())
    seen(engine, pairs, template_text)
    view.publish_if_due(engine, template_text, force=True)
    return WorkerViews(str(tmp_path))


def record(incident_id, source="web", templates=(7,), template_id=7, kind="rule_burst", last=T0 + 60):
    return {"id": incident_id, "source": source, "kind": kind, "templates": list(templates),
            "template_id": template_id, "template": texts(template_id) if template_id >= 0 else "",
            "first_seen": T0, "last_seen": last, "score": 95.0, "reason": "critical rule: 5 lines",
            "samples": ["<script>alert(1)</script> & \u2028 " + "x" * 2000], "lines": 5, "tiers": ["t1"],
            "expected": "0", "observed": "5", "reasons": ["critical rule: 5 lines"]}


def test_feedback_on_an_incident_makes_a_rule_of_its_templates_and_refuses_what_is_unknown(tmp_path):
    views = worker_views(tmp_path, [record("a" * 16), record("b" * 16, templates=(), template_id=-1,
                                                              kind="silent_source")],
                         [("web", 8), ("api", 8)])
    desk = FeedbackDesk(str(tmp_path), views, max_rules=3)
    _result, fields = desk.apply({"incident": "a" * 16, "verdict": "normal"}, "127.0.0.1")
    assert fields["rule"]["templates"] == ["db down at <*>"] and fields["rule"]["kinds"] == []
    _result, fields = desk.apply({"incident": "b" * 16, "verdict": "normal"}, "127.0.0.1")
    assert fields["rule"]["templates"] == [] and fields["rule"]["kinds"] == ["silent_source"]
    _result, fields = desk.apply({"template": 8, "source": "api", "verdict": "problem"}, "127.0.0.1")
    assert fields["rule"]["templates"] == ["cache miss <*>"] and fields["rule"]["verdict"] == "problem"
    assert [r["verdict"] for r in load_rules(rules_path(str(tmp_path)))] == ["normal", "normal", "problem"]
    for body, reason in (
            ({"incident": "c" * 16, "verdict": "normal"}, "unknown incident"),
            ({"template": "no such <*>", "source": "web", "verdict": "normal"}, "unknown template"),
            ({"template": 99, "source": "web", "verdict": "normal"}, "unknown template"),
            ({"template": 8, "source": "nowhere", "verdict": "normal"}, "unknown source"),
            ({"template": 8, "verdict": "normal"}, "missing field"),
            ({"incident": "a" * 16, "verdict": "fine"}, "verdict must be one of"),
            ({"incident": "a" * 16, "template": 8, "source": "web", "verdict": "normal"}, "not both"),
            ({"incident": "a" * 16, "verdict": "normal", "why": "x"}, "unknown field(s) why"),
            ({"template": True, "source": "web", "verdict": "normal"}, "template must be"),
            ({"template": 8, "source": "web", "verdict": "normal"}, "the most [detection] feedback_max_rules"),
            ({"rule": "nope", "verdict": "clear"}, "no feedback rule to clear"),
            ({"rule": "x", "verdict": "normal"}, "goes with verdict clear")):
        with pytest.raises(FeedbackError, match=re.escape(reason)):
            desk.apply(body, "127.0.0.1")
    # the same target again replaces its rule (verdict changed), not one more
    desk.apply({"template": "cache miss <*>", "source": "api", "verdict": "normal"}, "127.0.0.1")
    assert desk.rule_counts() == {"normal": 3, "problem": 0}
    _result, fields = desk.apply({"template": "cache miss <*>", "source": "api", "verdict": "clear"}, "x")
    assert len(fields["cleared"]) == 1 and desk.rule_counts() == {"normal": 2, "problem": 0}
    desk.apply({"incident": "a" * 16, "verdict": "clear"}, "x")
    assert desk.counts == {"normal": 3, "problem": 1, "clear": 2}
    assert desk.refused == {"invalid": 6, "unknown_incident": 1, "unknown_source": 1, "unknown_template": 2,
                            "ambiguous_template": 0, "max_rules": 1, "nothing_to_clear": 1}
    assert FeedbackDesk(str(tmp_path), views, 3).rules == desk.rules       # a restarted sidecar reads the file


def test_one_template_id_naming_two_texts_over_workers_is_refused_as_ambiguous(tmp_path):
    worker_views(tmp_path, pairs=[("web", 8)], index=0)
    views = worker_views(tmp_path, pairs=[("web", 8)], index=1, template_text=lambda tid: "other <*>")
    with pytest.raises(FeedbackError, match="names 2 different templates"):
        FeedbackDesk(str(tmp_path), views, 3).apply({"template": 8, "source": "web", "verdict": "normal"}, "x")


def test_a_corrupt_rules_file_is_set_aside_and_no_rule_applies(tmp_path):
    with open(rules_path(str(tmp_path)), "w") as f:
        f.write("{not json")
    desk = FeedbackDesk(str(tmp_path), worker_views(tmp_path), 3)
    assert desk.rules == [] and any(".corrupt-" in n for n in os.listdir(str(tmp_path)))


def test_incidents_query_checks_and_answer(tmp_path):
    assert parse_query("", 200) == (50, None, None)
    assert parse_query("limit=7&status=open&since=2026-03-02T10:00:00Z", 200) == (7, T0, "open")
    for query, reason in (("limit=0", "limit must be"), ("limit=201", "limit must be"), ("limit=x", "limit must be"),
                          ("status=closed", "status must be"), ("since=yesterday", "ISO 8601"),
                          ("page=2", "unknown query parameter"), ("limit=1&limit=2", "twice")):
        with pytest.raises(ValueError, match=reason):
            parse_query(query, 200)
    views = worker_views(tmp_path, [record("a" * 16), record("b" * 16, last=T0 + 9000)])
    api = IncidentsAPI(views, 200)
    got = api.handle("GET", "/api/incidents?limit=1", {})
    assert got.status == 200 and got.body["count"] == 1 and got.body["more"]
    assert api.handle("GET", "/api/incidents?since=2026-03-02T11:00:00Z", {}).body["count"] == 1
    assert api.handle("GET", "/api/incidents?status=open", {}).body["count"] == 0
    assert api.handle("POST", "/api/incidents", {}).status == 405
    assert api.handle("GET", "/api/incident", {}).status == 404
    assert api.handle("GET", "/api/incidents?limit=x", {}).status == 400
    item = public(views.find("a" * 16))
    assert item["status"] == "resolved" and item["start"] == "2026-03-02T10:00:00.000Z"
    assert item["end"] == "2026-03-02T10:01:00.000Z" and item["severity"] == "critical"
    assert item["templates"] == [{"id": 7, "text": "db down at <*>"}]
    assert item["explanation"]["expected"] == "0" and len(item["samples"][0]) == 1003
    body = encode({"incidents": [item]})
    assert b"<" not in body and b">" not in body and b"&" not in body and body.isascii()
    assert json.loads(body)["incidents"][0]["samples"][0].startswith("<script>alert(1)</script> & \u2028")


def test_incidents_api_with_the_token_switched_on(tmp_path):
    views = worker_views(tmp_path)
    admin = AdminAPI(None, "a-token-of-sixteen-chars-or-more")
    api = IncidentsAPI(views, 10, admin.authorized, admin.disabled_reason)
    assert api.handle("GET", "/api/incidents", {}).status == 401
    assert api.handle("GET", "/api/incidents", {"Authorization": "Bearer a-token-of-sixteen-chars-or-more"}).status \
        == 200
    off = AdminAPI(None, "", "[http] admin_token_file is not set")
    assert IncidentsAPI(views, 10, off.authorized, off.disabled_reason).handle("GET", "/api/incidents", {}).status \
        == 403


def test_the_view_keeps_closed_incidents_across_a_worker_restart(tmp_path):
    worker_views(tmp_path, [record("a" * 16)])
    directory = worker_paths(str(tmp_path), 0).alerting
    again = IncidentView(directory, 0, keep=5)
    assert [r["id"] for r in again.closed] == ["a" * 16]
    assert read_view(os.path.join(directory, "incidents-view.json"))["closed"][0]["status"] == "resolved"


def test_the_view_is_rewritten_only_when_its_incidents_or_templates_change(tmp_path):
    directory = worker_paths(str(tmp_path), 0).alerting
    view = IncidentView(directory, 0, keep=2)
    engine = DetectionEngine(config())
    path = os.path.join(directory, "incidents-view.json")
    view.publish_if_due(engine, texts, force=True)
    before = os.stat(path).st_ino
    view.note_batch()
    view._next = 0.0
    view.publish_if_due(engine, texts)
    assert os.stat(path).st_ino == before                         # scored lines, nothing new: not written
    view.note_closed([record("a" * 16), record("b" * 16), record("c" * 16)], texts)
    view._next = 0.0
    view.publish_if_due(engine, texts)
    written = read_view(path)
    assert os.stat(path).st_ino != before and [r["id"] for r in written["closed"]] == ["b" * 16, "c" * 16]
    assert len(written["closed"][0]["samples"][0]) == 1003       # cut at 1000 characters: lines can be 64 KB
    long = {3: "x" * 5000}                                      # too long to be named: left out
    seen(engine, [("web", 3), ("web", 4)], lambda tid: long.get(tid, texts(tid)))
    view.note_batch()
    view._next = 0.0
    view.publish_if_due(engine, lambda tid: long.get(tid, texts(tid)))
    assert read_view(path)["templates"] == {"web": [[4, "line 4"]]}


def test_recent_pairs_keep_the_latest_seen_up_to_their_cap():
    matcher = FeedbackMatcher(recent_templates=3)
    names = ["web", "api"]
    for sids, tids in (([0, 0, 1], [1, 2, 1]), ([0, 1, 1], [5, 1, 1]), ([0], [2])):
        matcher.verdicts(np.array(sids, np.int32), np.array(tids, np.int32), names.__getitem__, texts)
    # four pairs and more seen: the three seen latest stay ((web, 1) was seen in the first batch only)
    assert matcher.recent.texts(names, texts) == {"web": [[2, "line 2"], [5, "line 5"]], "api": [[1, "line 1"]]}


def test_incidents_api_token_needs_a_token_file_and_an_open_bind_without_it_is_a_warning(tmp_path):
    from anomaly_detector.config.loader import load_config
    from tests.unit.test_http_config_files import _config

    _cfg, problems = load_config(_config(tmp_path, "incidents_api_token = true\n"))
    assert [(p.severity, "admin_token_file is not set" in p.render()) for p in problems
            if p.key == "incidents_api_token"] == [("error", True)]
    _cfg, problems = load_config(_config(tmp_path, "bind = 0.0.0.0\n"))
    assert [(p.severity, "without a token" in p.render()) for p in problems
            if p.key == "incidents_api_token"] == [("warning", True)]
    _cfg, problems = load_config(_config(tmp_path, ""))
    assert [p for p in problems if p.key == "incidents_api_token"] == []
