"""IncidentBook: one problem, one incident. Evidence of a source is routed by family (template and
tier, or a Finding's key): an outage stays one incident, a later problem gets its own with its own onset."""
import json

import numpy as np

from anomaly_detector.detection.base import Finding
from anomaly_detector.detection.engine import _finding_family, _line_families
from anomaly_detector.detection.incidents import IncidentBook, _headline, _kind


class Describe:
    def template(self, tid):
        return "template %d" % tid

    def reasons(self, i):
        return [("reason of line %d" % i, "", "", 80.0)]

    def sample(self, i):
        return "line %d" % i


def add_lines(book, source, ts, tids, tier=0):
    ts = np.asarray(ts, float)
    tids = np.asarray(tids, np.int64)
    score = np.full(ts.size, 80.0, np.float32)
    tiers = {"t1": score if tier == 0 else np.zeros_like(score), "t3": score if tier == 2 else np.zeros_like(score)}
    return book.add_lines(source, ts, score, tiers, tids, np.arange(ts.size), Describe(), None, tids * 4 + tier)


def finding(book, source, ts, key):
    return book.add(source, ts, 90.0, {"t2": 90.0}, -1, "", [("source silent", "", "", 90.0)], None, opened_by=key)


def test_an_outage_that_keeps_going_stays_one_incident():
    book = IncidentBook(300, 120)
    closed = add_lines(book, "db", 1000 + np.arange(0, 1800, 60.0), [5] * 30)
    assert not closed and len(book.open) == 1
    assert book.close_all()[0].first_seen == 1000


def test_problems_that_start_together_are_one_incident():
    book = IncidentBook(300, 120)
    add_lines(book, "db", [1000, 1010, 1020], [5, 5, 5])
    add_lines(book, "db", [1060, 1070], [9, 9], tier=2)        # a new template a minute later
    finding(book, "db", 1100, "source:2")                       # and the source's volume falling
    (incident,) = book.close_all()
    assert incident.first_seen == 1000 and incident.lines == 5 and incident.findings == 1


def test_a_later_problem_of_the_same_source_is_raised_on_its_own():
    book = IncidentBook(300, 120)
    add_lines(book, "db", 1000 + np.arange(0, 1200, 30.0), [5] * 40)   # twenty minutes of trouble
    add_lines(book, "db", [1600, 1610, 1620], [9, 9, 9], tier=2)          # ten minutes in: another
    finding(book, "db", 1700, "template:9")                               # which then stops
    add_lines(book, "db", [1630], [5])                                    # the first keeps going
    incidents = sorted(book.close_all(), key=lambda i: i.first_seen)
    assert [i.first_seen for i in incidents] == [1000, 1600]
    assert incidents[0].lines == 41 and set(incidents[0].template_hits) == {5}
    assert incidents[1].lines == 3 and incidents[1].findings == 1 and set(incidents[1].template_hits) == {9}
    assert incidents[0].id != incidents[1].id


def test_the_same_template_flagged_by_another_tier_later_is_another_problem():
    book = IncidentBook(300, 120)
    add_lines(book, "web", 1000 + np.arange(0, 900, 30.0), [3] * 30)            # a rule burst of template 3
    add_lines(book, "web", [1500, 1510], [3, 3], tier=2)                         # its values go odd later
    assert sorted(i.first_seen for i in book.close_all()) == [1000, 1500]


def test_sources_never_share_an_incident_and_quiet_ones_close():
    book = IncidentBook(300, 120)
    add_lines(book, "db", [1000, 1010], [5, 5])
    add_lines(book, "web", [1005], [5])
    assert len(book.open) == 2
    closed = add_lines(book, "db", [1400], [5])          # db quiet for more than a window: a new one
    assert [c.first_seen for c in closed] == [1000]
    assert sorted(i.first_seen for i in book.close_quiet(1800)) == [1005, 1400]
    assert not book.open and not book._route


def test_ids_are_stable_and_do_not_depend_on_what_joins_later():
    def run(extra):
        book = IncidentBook(300, 120)
        add_lines(book, "db", 1000 + np.arange(0, 900, 60.0), [5] * 15)
        if extra:
            add_lines(book, "db", [1050], [7], tier=2)
        add_lines(book, "db", [1700, 1710], [9, 9], tier=2)
        return sorted(i.id for i in book.close_all())
    assert run(False) == run(False) == run(True)
    assert len(set(run(False))) == 2


def test_line_families_are_per_template_for_volume_and_novelty_and_per_source_for_rules_and_workflows():
    tids = np.array([4, 5, 4, 5, 4, 5])
    tiers = np.zeros((4, 6), np.float32)
    tiers[[0, 0, 1, 2, 3, 3], np.arange(6)] = 80.0        # t1, t1, t2, t3, t4, t4
    fam = _line_families(tids, tiers)
    assert fam[0] == fam[1] and fam[4] == fam[5]            # rules and workflows: whatever the template
    assert len(set(fam.tolist())) == 4 and fam[2] != _line_families(np.array([5]), tiers[:, 2:3])[0]


def test_a_spike_of_the_whole_source_is_one_family_whatever_the_templates():
    from anomaly_detector.detection.base import TierResult
    tids = np.array([4, 5, 6])
    tiers = np.zeros((4, 3), np.float32)
    tiers[1] = 80.0                                          # all three: tier 2
    t2 = TierResult(tiers[1].copy(), about=np.array([-1, -1, 6]))   # a source spike, a template spike
    fam = _line_families(tids, tiers, {"t2": t2}, np.arange(3))
    assert fam[0] == fam[1] != fam[2]
    assert fam[2] == _line_families(np.array([6]), tiers[:, 2:3])[0]


def test_an_incident_is_named_by_a_new_message_then_a_burst_as_strong_as_the_rest_then_its_strongest_reason():
    from anomaly_detector.detection.incidents import _headline

    def named(hits):
        return _headline({reason: [score, "", ""] for reason, score in hits.items()})[0]

    assert named({"critical rule: 3 matching lines": 100, "never-seen template": 85}) == "never-seen template"
    assert named({"unusual value (record high) of parameter 9": 100, "error rule: 160 matching lines": 100}) == \
        "error rule: 160 matching lines", "a burst as strong as the values its lines carry is named by the burst"
    assert named({"new value of parameter 5: '503'": 100, "error rule: 80 matching lines": 96}) == \
        "error rule: 80 matching lines", "within SEVERITY_MARGIN: still the burst"
    assert named({"new value of parameter 5: '508'": 100, "error rule: 40 matching lines": 90}) == \
        "new value of parameter 5: '508'", "errors each carrying a clearly stronger new value are named by it"
    assert named({"new value of parameter 5: '503'": 100, "error rule: 20 matching lines": 75}) == \
        "new value of parameter 5: '503'", "a burst far weaker than the news does not name it"
    assert named({"new value of parameter 5: '503'": 70, "error rule: 20 matching lines": 75}) == \
        "error rule: 20 matching lines", "the strongest reason, when it is the burst"
    assert named({"unusual value (record high: above every earlier value) of parameter 3": 100,
                  "error rule: 40 matching lines": 90}) == "error rule: 40 matching lines", \
        "timeouts are slow: a burst of errors carrying record latencies is named by the burst"
    assert named({"drift of parameter 1 of 'GET <*>'": 100, "error rule: 5 matching lines": 75}) == \
        "drift of parameter 1 of 'GET <*>'", "a few errors in a drift do not name it"


def test_a_split_series_drift_beside_values_out_of_line_is_named_by_the_values():
    """One route's level shift (a split series) with record values of the pooled series within
    SEVERITY_MARGIN, or of its own pooled series however weaker: the values name the incident, the route is
    where; so does a drift of the series whose own values out of line opened the episode (one host's GC pauses
    twenty times longer: records, then the pooled series' shift, both 100, had been named by the shift,
    alphabetically first). A drift of another series keeps the name, and so does a drift clearly stronger than
    the values."""
    def named(hits):
        return _headline({reason: [score, "", ""] for reason, score in hits.items()})[0]

    route = "drift (level shift up) of parameter 5 of 'GET <*> rt=<*>' where parameter 1's route is '/search': moved"
    table = "drift (level shift up) of parameter 1 of 'select on <*> took <*>' where parameter 0 is 'carts': moved"
    record = "unusual value (record high: above every earlier value) of parameter 5 of 'GET <*> rt=<*>', against"
    pooled = "drift (level shift up) of parameter 5 of 'GET <*> rt=<*>': moved from ~0.04 to ~0.4"
    assert named({route: 100, record: 100}) == record
    assert named({table: 100, record: 96}) == record
    assert named({table: 100, record: 80}) == table, "a split drift clearly stronger than the values"
    assert named({route: 100, record: 70}) == record, "its own pooled series' values: the route's values"
    assert named({route: 100, route.replace("/search", "/cart"): 100, record: 45}) == record
    other = "drift (level shift up) of parameter 2 of 'GET <*> rt=<*> bytes=<*>': moved from ~3000 to ~9000"
    assert named({pooled: 100, record: 100}) == record, "the same series: its values opened the episode"
    assert named({pooled: 100, record: 80}) == pooled, "a drift clearly stronger than the values"
    assert named({other: 100, record: 100}) == other, "another series' drift keeps the name"
    gc = "parameter 5 of '[gc] GC(<*>) Pause Young (Normal) (<*> Evacuation Pause) <*>-><*>(<*>) <*>'"
    assert named({f"drift of {gc}: 11.009": 100,
                  f"unusual value (record high: above every earlier value) of {gc}, against its own past": 100}
                 ).startswith("unusual value")


def test_one_unfinished_session_is_not_reported_two_are_and_a_silence_is_at_once():
    from anomaly_detector.config.loader import default_config
    from anomaly_detector.detection.engine import DetectionEngine
    engine = DetectionEngine(default_config())      # incident_min_lines 2
    book = IncidentBook(300.0, 120.0)

    def session(ts, n):
        return book.add("shop", ts, 90.0, {"t4": 90.0}, 7, "order created", [("never finished", "", "", 90.0)],
                        None, opened_by="session:%d" % n, family="finding:t4", session=True)
    session(1000.0, 1)
    one = book.close_quiet(2000.0)
    session(3000.0, 2)
    session(3010.0, 3)
    two = book.close_quiet(4000.0)
    finding(book, "shop", 5000.0, "source:0")
    silence = book.close_quiet(6000.0)
    assert [engine._reportable(i) for i in one + two + silence] == [False, True, True]
    assert [i.sessions for i in one + two + silence] == [1, 2, 0]

def test_one_odd_value_and_an_unrelated_suspicious_line_are_not_an_incident_two_of_one_problem_are():
    """incident_min_lines counts lines of one family of evidence: a record-high response time (100) with
    an unrelated line of another template at 45 a few seconds later (they join one young incident) is not
    reported; two suspicious lines of the record's own template and tier are, as is a state saved before
    families were counted."""
    from anomaly_detector.config.loader import default_config
    from anomaly_detector.detection.engine import DetectionEngine
    from anomaly_detector.detection.incidents import Incident
    engine = DetectionEngine(default_config())      # incident_min_lines 2, anomaly threshold 70

    def lines(ts, tids, scores, tier=2):
        book = IncidentBook(300.0, 120.0)
        ts, tids, score = np.asarray(ts, float), np.asarray(tids, np.int64), np.asarray(scores, np.float32)
        book.add_lines("web", ts, score, {"t3": score}, tids, np.arange(ts.size), Describe(), None, tids * 4 + tier)
        return book.close_all()

    (apart,) = lines([1000.0, 1030.0], [110, 64], [100.0, 45.0])
    (together,) = lines([1000.0, 1030.0], [110, 110], [100.0, 45.0])
    (weak,) = lines([1000.0, 1030.0, 1040.0], [110, 64, 64], [100.0, 45.0, 50.0])
    assert apart.lines == 2 and weak.lines == 3
    assert [engine._reportable(i) for i in (apart, together, weak)] == [False, True, False]
    state = apart.state()
    del state["family_lines"]
    assert engine._reportable(Incident.from_state(state))
    assert not engine._reportable(Incident.from_state(apart.state()))


def test_one_unfinished_run_of_a_job_whose_runs_come_alone_is_reported():
    """Tier 4 keys a run of a job (runs further apart than the session timeout) run:<id>: the engine
    counts it as a finding about the workflow, not as one session of many."""
    from anomaly_detector.config.loader import default_config
    from anomaly_detector.detection.engine import SESSION_KEY, DetectionEngine
    engine = DetectionEngine(default_config())      # incident_min_lines 2
    book = IncidentBook(300.0, 120.0)
    for source, key in (("shop", "session:17"), ("pg-backup", "run:20260305-0915")):
        book.add(source, 1000.0, 90.0, {"t4": 90.0}, 7, "backup started", [("ended after", "", "", 90.0)],
                 None, opened_by=key, family="finding:t4", session=key.startswith(SESSION_KEY))
    one_session, one_run = sorted(book.close_quiet(2000.0), key=lambda i: i.source != "shop")
    assert [engine._reportable(one_session), engine._reportable(one_run)] == [False, True]


def test_evidence_judged_late_keeps_its_incident_open_from_when_it_arrived():
    """Unfinished sessions are judged a session timeout after their last line: stamped with that line's
    time, each would find the incident it should join already closed."""
    merged, split = IncidentBook(window_seconds=300), IncidentBook(window_seconds=300)
    for book, late in ((merged, True), (split, False)):
        closed = []
        for k in range(4):
            ts = 1000.0 + 60 * k
            now = ts + 360.0                       # judged 6 minutes after the session's last line
            closed += book.add("mailer", ts, 90.0, {"t4": 90.0}, 3, "order flow", [("session never finished",
                               "", "", 90.0)], None, opened_by="session:%d" % k, family="finding:t4",
                               session=True, seen_at=now if late else None)
            closed += book.close_quiet(now)
        closed += book.close_all()
        book.closed = closed
    assert len(merged.closed) == 1 and merged.closed[0].findings == 4
    assert merged.closed[0].first_seen == 1000.0 and merged.closed[0].last_seen == 1180.0
    assert len(split.closed) == 4


def test_one_template_opening_two_incidents_in_one_window_gives_them_different_ids():
    """A rule burst of a template's lines, and three minutes later (past join_seconds) its volume spike:
    two problems by the routing rules, so two ids, though source, template and onset window agree."""
    from anomaly_detector.detection.incidents import Incident
    book = IncidentBook(window_seconds=300, join_seconds=120)
    book.add("batch", 1000.0, 80.0, {"t1": 80.0}, 7, "job failed", [("error rule", "", "", 80.0)], None,
             opened_by="7", family="lines:rule")
    book.add("batch", 1180.0, 90.0, {"t2": 90.0}, 7, "job failed", [("volume spike", "", "", 90.0)], None,
             opened_by="7", family="lines:spike")
    ids = [inc.id for inc in book.close_all()]
    assert len(ids) == 2 and len(set(ids)) == 2
    old = Incident("batch", 1000.0, 1000.0, 300.0, opened_by="7")     # restored from a state saved before
    state = old.state()
    del state["opened_family"]
    assert Incident.from_state(state).id == old.id


def test_a_silence_joins_what_its_source_raised_while_it_was_silent_and_names_it():
    """Sessions left unfinished by a source that stopped are raised at once; the silence is sure only a
    window later. Both are that source's outage: one incident, called a silent source."""
    book = IncidentBook(300, 60)

    def sessions(ts):
        book.add("mailer", ts, 90.0, {"t4": 90.0}, 7, "order flow", [("session never finished", "", "", 90.0)],
                 None, opened_by="session:%d" % ts, family="finding:t4", session=True)

    def silence(ts, since):
        book.add("mailer", ts, 100.0, {"t2": 100.0}, -1, "", [("source silent: 0 lines in the last 300s", "",
                 "", 100.0)], None, opened_by="source:3", family="finding:t2", since=since)
    sessions(1010.0)
    silence(1290.0, since=990.0)
    (one,) = book.close_all()
    assert one.first_seen == 1010.0 and one.findings == 2 and one.record()["kind"] == "silent_source"
    sessions(5000.0)                       # sessions before the silent span: another problem
    silence(5250.0, since=5100.0)
    assert len(book.close_all()) == 2
    silence(9300.0, since=9000.0)          # the silence sure first, the sessions judged a timeout later
    sessions(9020.0)
    add_lines(book, "mailer", [9400.0, 9410.0], [5, 5])     # errors once it logs again: another problem
    first, later = sorted(book.close_all(), key=lambda i: i.first_seen)
    assert first.first_seen == 9020.0 and first.findings == 2 and first.absent == (9000.0, 9300.0)
    assert later.lines == 2 and later.findings == 0


def test_a_template_gone_silent_is_a_drop_of_it_and_a_source_gone_silent_a_silent_source():
    from anomaly_detector.detection.incidents import kind_of
    assert kind_of("template silent: 0 lines in the last 900s") == "volume_drop"
    assert kind_of("source silent: 0 lines in the last 300s") == "silent_source"
    assert kind_of("template volume drop: 3 lines in the last 900s") == "volume_drop"


def test_a_session_met_without_its_first_step_is_a_workflow_problem_whatever_its_template_says():
    from anomaly_detector.detection.incidents import kind_of
    assert kind_of("session opens with a step that never opens sessions: 'stock reserved qty=<*>'") == "sequence"
    assert kind_of("session opens with a step that never opens sessions: 'rule <*> silent'") == "sequence"


def test_lines_a_workflow_blames_on_another_source_go_to_it_unless_another_tier_scored_them_more():
    from anomaly_detector.detection.base import TierResult
    from anomaly_detector.detection.engine import _evidence_sources
    tiers = np.zeros((4, 6), np.float32)
    tiers[3, [1, 2, 4]] = 90.0                 # workflow (t4) evidence on lines 1, 2, 4
    tiers[0, 2] = 95.0                         # line 2 is above all a rule's (t1)
    t4 = TierResult(tiers[3].copy(), blame={1: 5, 2: 6, 4: 7})
    src = _evidence_sources(np.zeros(6, np.int32), tiers, {"t4": t4}, np.array([1, 2, 3, 4]))
    assert src.tolist() == [5, 0, 0, 7]


def test_a_silence_names_its_incident_before_the_workflows_its_absence_broke():
    """A source that stops leaves its partners' steps out of order (tier 4, at once, strong) and its own
    templates low: with its silence in the incident, the silence names it; the source's own error lines
    keep their rank, and without a silence of the whole source the strongest reason names it."""
    from anomaly_detector.detection.incidents import _headline

    def named(hits, absent):
        return _headline({reason: [score, "", ""] for reason, score in hits.items()}, absent)[0]

    hits = {"unexpected order in workflow 'order': 'paid' never follows 'created'": 100,
            "template volume drop: 2 lines in the last 900s": 100, "source silent: 0 lines in the last 300s": 90}
    assert named(hits, True) == "source silent: 0 lines in the last 300s"
    assert named(hits, False).startswith("unexpected order"), "a step that stops: the workflow names it"
    assert named(dict(hits, **{"rare template (seen 2 times)": 60}), False).startswith("unexpected order")
    assert named({"template volume drop: 2 lines": 100, "unexpected order in workflow 'order'": 70}, False) \
        .startswith("template volume drop"), "a weak workflow finding is the drop's detail"
    assert named(dict(hits, **{"error rule: 40 matching lines": 100}), True) == "error rule: 40 matching lines"
    assert named({"unexpected order in workflow 'order'": 100, "template silent: 0 lines": 90}, True) == \
        "unexpected order in workflow 'order'", "a template silent is no silence of the source"


def test_an_incident_stays_open_while_a_silence_of_its_source_is_held_and_then_joins_it():
    """The partners' workflows break at the silence's start; the silence is raised only a hold later,
    when the incident would have closed: while the tier holds it (waiting) the incident stays open."""
    for waiting, incidents in (({"inventory": 990.0}, 1), ({}, 2)):
        book = IncidentBook(300, 120)
        book.waiting = dict(waiting)
        add_lines(book, "inventory", [1010.0, 1100.0], [5, 5], tier=0)
        closed = book.close_quiet(1800.0)          # raised at 1800, stamped 1300 (first seen low)
        assert (not closed) == bool(waiting)
        book.waiting = {}
        book.add("inventory", 1300.0, 100.0, {"t2": 100.0}, -1, "", [("source silent: 0 lines in the last 300s",
                 "", "", 100.0)], None, opened_by="source:3", family="finding:t2", since=1000.0)
        closed += book.close_all()
        assert len(closed) == incidents
        assert [i.record()["kind"] for i in closed] == ["silent_source"] if waiting else ["anomaly", "silent_source"]
    book = IncidentBook(300, 120)
    book.waiting = {"inventory": 5000.0}          # a silence that began long after the incident went quiet
    add_lines(book, "inventory", [1010.0], [5])
    assert len(book.close_quiet(1800.0)) == 1


def test_a_template_drop_while_its_source_is_held_silent_joins_what_the_silence_broke_at_once():
    """A source stops at 1000: its partners' sessions break at 1010 (tier 4, at once); its busiest template is
    sure empty at 1150, before the source's silence is raised (same batch, after it). All three are one outage,
    dated from the broken sessions and named by the silence; without a held silence of the source, a template's
    drop 140 s after an incident opened (beyond join_seconds) is its own."""
    for waiting, expect in (({"payments": 1000.0}, ["silent_source"]), ({}, ["sequence", "silent_source"])):
        book = IncidentBook(300, 120)
        book.waiting = dict(waiting)
        book.add("payments", 1010.0, 93.0, {"t4": 90.0}, 7, "order flow",
                 [("unexpected order in workflow 'order': 'confirmed' never follows 'reserved'", "", "", 90.0)],
                 None, opened_by="session:1010", family="finding:t4", session=True)
        book.add("payments", 1150.0, 100.0, {"t2": 100.0}, 3, "charge ok", [(
            "template volume drop: 0 lines in the last 300s, against its level over the hour before", "", "",
            100.0)], None, opened_by="template:3", family="finding:t2:template")
        book.add("payments", 1150.0, 100.0, {"t2": 100.0}, -1, "", [("source silent: 0 lines in the last 300s",
                 "", "", 100.0)], None, opened_by="source:2", family="finding:t2:source", since=1000.0 if waiting
                 else 1150.0)
        closed = sorted(book.close_all(), key=lambda i: i.first_seen)
        assert [i.record()["kind"] for i in closed] == expect
        assert closed[0].first_seen == 1010.0


def add_spike(book, source, ts, tids, about):
    """Volume-tier (t2) evidence: lines of templates tids about one template (about >= 0) or the whole source (-1)."""
    ts, tids = np.asarray(ts, float), np.asarray(tids, np.int64)
    score = np.full(ts.size, 80.0, np.float32)
    return book.add_lines(source, ts, score, {"t2": score}, tids, np.arange(ts.size), Describe(), None,
                          np.full(ts.size, about * 4 + 1, np.int64))


def test_a_sources_spike_and_its_templates_spike_are_one_surge_whichever_comes_first():
    # a campaign: the source's count rises first, one of its templates is certain two minutes later
    book = IncidentBook(300, 60, volume_tier=(4, 1))
    add_spike(book, "web", [1000, 1010, 1020], [3, 4, 5], -1)
    add_spike(book, "web", [1140, 1150], [4, 4], 4)
    # a scraper: its template first, the whole source a few minutes later
    add_spike(book, "db", [1000, 1010], [7, 7], 7)
    add_spike(book, "db", [1200, 1210], [7, 8], -1)
    incidents = book.close_all()
    assert sorted((i.source, i.first_seen, i.lines) for i in incidents) == [("db", 1000, 4), ("web", 1000, 5)]


def test_spikes_of_two_templates_minutes_apart_are_two_problems():
    book = IncidentBook(300, 60, volume_tier=(4, 1))
    add_spike(book, "web", [1000, 1010], [3, 3], 3)
    add_spike(book, "web", [1140, 1150], [4, 4], 4)
    add_lines(book, "web", [1300], [6], tier=2)     # nor does a new template join a spike
    assert len(book.close_all()) == 3



def test_within_one_batch_the_family_whose_line_first_reached_the_threshold_dates_the_incident():
    """Generated seed 96: a scanner's odd request (40, template A's values) opened a weak incident 100 s before
    a 5xx storm; the storm's record latencies reached the threshold on template B at +2 s and on A at +17 s,
    all in one batch. A's run was added whole first, so A seemed to reach the threshold first and the
    incident, its opener's family, kept the scanner's line as its start: 100 s before the outage."""
    book = IncidentBook(300, 120, threshold=70.0)
    ts = np.array([1000.0, 1102.0, 1117.0, 1121.0])
    score = np.array([40.0, 100.0, 100.0, 92.0], np.float32)
    families = np.array([5 * 4 + 2, 9 * 4 + 2, 5 * 4 + 2, 5 * 4 + 2], np.int64)
    tids = families // 4
    book.add_lines("web", ts, score, {"t3": score}, tids, np.arange(ts.size), Describe(), None, families)
    (incident,) = book.close_all()
    assert incident.first_seen == 1102.0 and incident.lines == 4


def test_an_incident_first_reaching_the_threshold_by_a_family_that_joined_it_begins_with_that_family():
    """A daily job's rare but routine lines are suspicious (45) every run; a backup's never-seen error (85)
    a hundred seconds into the run joins the young incident they opened (join_seconds), but the incident,
    weak until then, is dated from the error: the report's start is no part of the alert. An incident
    whose own opening family reaches the threshold later keeps its first line (its slow start)."""
    def run(book, ts, tid, value):
        ts = np.asarray(ts, float)
        score = np.full(ts.size, value, np.float32)
        tids = np.full(ts.size, tid, np.int64)
        book.add_lines("batch", ts, score, {"t3": score}, tids, np.arange(ts.size), Describe(), None, tids * 4 + 2)

    book = IncidentBook(300, 120, threshold=70.0)
    run(book, [1000, 1040], 5, 45.0)             # the report's start and progress: suspicious, not anomalies
    run(book, [1090], 9, 45.0)                   # the error's family, first seen weak
    run(book, [1104, 1207, 1337], 9, 85.0)       # then at the threshold
    run(book, [1400], 5, 45.0)                   # the report goes on
    (incident,) = book.close_all()
    assert incident.first_seen == 1090 and incident.lines == 7
    restored = type(incident).from_state(json.loads(json.dumps(incident.state())))
    assert restored.family_first == incident.family_first
    # its own family reaching the threshold: dated from its first line
    book = IncidentBook(300, 120, threshold=70.0)
    run(book, [1000, 1040], 5, 45.0)
    run(book, [1104], 5, 85.0)
    (own,) = book.close_all()
    assert own.first_seen == 1000
    # an incident that was already an anomaly keeps its onset when others join it
    book = IncidentBook(300, 120, threshold=70.0)
    run(book, [1000], 5, 85.0)
    run(book, [1050], 9, 95.0)
    (strong,) = book.close_all()
    assert strong.first_seen == 1000
    # without a threshold every incident keeps its first line's time
    book = IncidentBook(300, 120)
    run(book, [1000, 1040], 5, 45.0)
    run(book, [1104], 9, 85.0)
    (old,) = book.close_all()
    assert old.first_seen == 1000


def test_workflow_lines_that_all_fell_in_a_silence_of_the_service_they_blame_are_excused():
    """Orders confirmed without a payment while payments restarted (its next line shows it wrote nothing
    from before the first to after the last of them) are payments' outage: no incident stands on them.
    Lines of the family outside that span, or other evidence, still count."""
    from anomaly_detector.config.loader import default_config
    from anomaly_detector.detection.engine import DetectionEngine
    engine = DetectionEngine(default_config())      # incident_min_lines 2
    strongest_t4 = np.array([[0.0], [0.0], [20.0], [90.0]], np.float32)
    workflow = int(_line_families(np.array([7]), strongest_t4)[0])   # tier 4's lines: source-wide
    assert "lines:%d" % workflow == "lines:-1"     # the family the engine excuses (_excuse_silences)

    def run(excuse, more=()):
        book = IncidentBook(300.0, 60.0)
        ts = np.array([1008.0, 1020.0, 1050.0] + list(more))
        score = np.full(ts.size, 90.0, np.float32)
        book.add_lines("payments", ts, score, {"t4": score}, np.full(ts.size, 7), np.arange(ts.size), Describe(),
                       None, np.full(ts.size, workflow))
        book.excuse("payments", "lines:%d" % workflow, *excuse)
        restored = IncidentBook(300.0, 60.0)      # excuses are kept with the engine's snapshot
        restored.restore(json.loads(json.dumps(book.state())))
        closed = restored.close_quiet(5000.0)
        assert len(closed) == 1
        return engine._reportable(closed[0])

    assert not run((1000.0, 1060.0))
    assert run((1000.0, 1040.0)), "a line after the service logged again: a broken workflow"
    assert run((1000.0, 1060.0), more=(1200.0, 1210.0))
    assert run((900.0, 990.0))


def test_a_source_silent_an_hour_after_one_of_its_templates_went_quiet_is_its_own_incident():
    """Tier 2's findings are families by what they are about (engine._finding_family): a template that
    went quiet as the night thinned it (an incident from 23:46, its drop findings still coming) and its
    source silent from 01:08 are two problems, the silence dated by its own onset; a dip of the source
    that turns into its silence stays one incident."""
    book = IncidentBook(300, 120)

    closed = []

    def finding(ts, key, reason, since=None):
        f = Finding(tier="t2", ts=ts, key=key, score=100.0, reason=reason, since=since)
        closed.extend(book.add("web", ts, 100.0, {"t2": 100.0}, -1, "", [(reason, "", "", 100.0)], None,
                               opened_by=f.key, family=_finding_family(f), since=since))

    for ts in range(0, 4800, 240):        # 23:46 on: the template quiet, found again every four minutes
        finding(float(ts), "template:1", "template silent: 0 lines in the last 900s")
    finding(4980.0, "source:0", "source silent: 0 lines in the last 300s", since=4680.0)
    early, silence = sorted(closed + book.close_all(), key=lambda i: i.first_seen)
    assert early.first_seen == 0.0 and silence.first_seen == 4980.0
    assert silence.record()["kind"] == "silent_source" and early.record()["kind"] == "volume_drop"
    for ts in (9000.0, 9240.0, 9480.0):
        finding(ts, "source:0", "source volume drop: 40 lines in the last 900s")
    finding(9600.0, "source:0", "source silent: 0 lines in the last 300s", since=9300.0)
    closed.clear()
    (outage,) = closed + book.close_all()
    assert outage.first_seen == 9000.0 and outage.record()["kind"] == "silent_source"
    assert _finding_family(Finding(tier="t4", ts=0.0, key="session:7", score=90.0, reason="")) == "finding:t4"


def test_a_new_value_carried_by_a_surge_of_its_template_is_named_by_the_surge():
    """A new client hammering a login: every line of the surge carries its never-seen user agent, and the
    template's spike is as strong: a volume spike. A spike of the new value's own key (its count) and a
    surge well weaker leave the incident named by the value, as a new payment provider is."""
    value = ("new value of parameter 7 of '<*> POST <*>': 'Go-http-client/1.1'", [100.0, "", ""])
    surge = ("volume spike of template '<*> POST <*>': 14 lines in 300s", [100.0, "", ""])
    own_key = ("volume spike of template '<*> POST <*>' with <*>#7 = Go-http-client/1.1: 40 lines in 300s",
               [100.0, "", ""])
    assert _kind(_headline(dict([value, surge, own_key]))[0]) == "volume_spike"
    assert _kind(_headline(dict([value, own_key]))[0]) == "new_value"
    weaker = (surge[0], [80.0, "", ""])
    assert _kind(_headline(dict([value, weaker]))[0]) == "new_value"


class DescribeNews(Describe):
    """Lines whose strongest reason is a message never seen (score at least 85) or a rare one."""
    def __init__(self, score):
        self.score = score

    def reasons(self, i):
        reason = "never-seen template" if self.score[i] >= 85 else "rare template (seen 1 times)"
        return [(reason, "", "", float(self.score[i]))]


class DescribeRule(Describe):
    """Reasons of tier 1's slow burst: a rule's count over its span (the flagged line, then its followers)."""
    def __init__(self, score):
        self.score = score

    def reasons(self, i):
        return [("error rule: %d matching lines in 600s from postgres" % (10 + i), "", "", float(self.score[i]))]


class DescribeStatus(Describe):
    """Error lines of a web server: tier 1's burst on each, and on the lines in `new` also tier 3's status
    never seen in any template of the source (a 507), scoring just above the rule's count."""
    VALUE = ("new value of parameter 5 of 'GET <*> HTTP/<*> <*>' (new to every template of source 'web' "
             "there): '507'")
    KNOWN = "new value of parameter 5 of 'GET <*> HTTP/<*> <*>': '502'"

    def __init__(self, new, known=()):
        self.new, self.known = set(new), set(known)

    def reasons(self, i):
        found = [("error rule: %d matching lines in 600s from web" % (10 + i), "", "", 97.0)]
        if i in self.new:
            found.insert(0, (self.VALUE, "one of 10 known values", "a value never seen there", 100.0))
        elif i in self.known:
            found.append((self.KNOWN, "one of 3 known values", "a value never seen there", 60.0))
        return found


def test_errors_that_mostly_carry_a_value_new_to_their_source_are_named_by_the_value():
    """A status no template of the source ever logged, on most of a burst's error lines: the value is what
    the burst is (the rule's count at 97 beside the value's 100 had named it a rule burst). A burst of
    gateway errors whose first 504s are new to the source but whose other lines carry known statuses stays
    the burst's, and the value-borne count survives a restart."""
    def incident(describe, n=40):
        book = IncidentBook(300, 120)
        ts = 1000 + np.arange(n, dtype=float) * 5
        score = np.full(n, 97.0, np.float32)
        book.add_lines("web", ts, score, {"t1": score}, np.arange(n) % 4, np.arange(n), describe, None,
                       np.full(n, -4, np.int64))
        (closed,) = book.close_all()
        return closed

    borne = incident(DescribeStatus(new=range(0, 40, 3)))          # a third carry the 507 ...
    assert borne.record()["kind"] == "rule_burst", "a third of the lines: still the burst's"
    most = incident(DescribeStatus(new=[i for i in range(40) if i % 4]))   # ... three quarters do
    assert most.value_borne and most.record()["kind"] == "new_value"
    assert most.record()["reason"] == DescribeStatus.VALUE
    gateway = incident(DescribeStatus(new=[0, 1, 2], known=range(3, 40)))
    assert not gateway.value_borne and gateway.record()["kind"] == "rule_burst"
    from anomaly_detector.detection.incidents import Incident
    again = Incident.from_state(json.loads(json.dumps(most.state())))
    assert again.rule_values == most.rule_values and again.record()["kind"] == "new_value"
    old = most.state()
    del old["rule_values"]                                          # a state saved before it: as before
    assert Incident.from_state(old).record()["kind"] == "rule_burst"


def test_a_slow_burst_whose_next_line_comes_after_a_window_is_one_incident():
    """Deadlocks at ten times their usual rate: tier 1 flags the tenth in 30 minutes (80), the next comes
    six minutes later (a follower, 45): one problem, one incident of two lines, not two lone lines that
    incident_min_lines drops. A lone flagged line with nothing after it within the hour still closes alone."""
    def run(book, ts, value):
        ts = np.asarray(ts, float)
        score = np.asarray([value] * ts.size, np.float32)
        tids = np.full(ts.size, 3, np.int64)
        return book.add_lines("postgres", ts, score, {"t1": score}, tids, np.arange(ts.size), DescribeRule(score),
                              None, np.full(ts.size, 1, np.int64))

    book = IncidentBook(300, 120, threshold=70.0, min_lines=2)
    run(book, [1000], 80.0)
    assert run(book, [1365], 45.0) == []
    (incident,) = book.close_all()
    assert incident.first_seen == 1000 and incident.lines == 2 and incident.persists(2, 70.0)
    alone = IncidentBook(300, 120, threshold=70.0, min_lines=2)
    run(alone, [1000], 80.0)
    (closed,) = alone.close_quiet(1000 + 300 * 12 + 1)
    assert not closed.persists(2, 70.0)


def test_a_never_seen_message_that_comes_again_within_the_hour_is_one_incident_from_its_first_line():
    """A batch job fails with a message never seen (85), then its retries log it again ten minutes later
    (rare now: 45-50). Each alone is one odd line; together, within RECALL_WINDOWS, they are one problem,
    dated from the first failure. A never-seen message that does not come back closes as one line (the
    engine still reports it: see the next test); one that comes back after the hour is a new (weak)
    incident, and other evidence does not hold an incident open."""
    from anomaly_detector.detection.incidents import RECALL_WINDOWS

    def run(book, ts, value, tid=9):
        ts = np.asarray(ts, float)
        score = np.asarray(value if np.ndim(value) else [value] * ts.size, np.float32)
        tids = np.full(ts.size, tid, np.int64)
        return book.add_lines("batch", ts, score, {"t3": score}, tids, np.arange(ts.size), DescribeNews(score),
                              None, tids * 4 + 2)

    def book():
        return IncidentBook(300, 120, threshold=70.0, min_lines=2)

    retried = book()
    run(retried, [1000], 85.0)
    assert run(retried, [1600, 1740, 1835], 48.0) == []          # 600 s later: the same, still open
    (incident,) = retried.close_all()
    assert incident.first_seen == 1000 and incident.lines == 4 and incident.persists(2, 70.0)
    alone = book()
    run(alone, [1000], 85.0)
    assert alone.close_quiet(1000 + 300 * RECALL_WINDOWS - 1) == []
    (closed,) = alone.close_quiet(1000 + 300 * RECALL_WINDOWS + 1)
    assert not closed.persists(2, 70.0)
    late = book()
    run(late, [1000], 85.0)
    (first,) = run(late, [1000 + 300 * RECALL_WINDOWS + 60], 48.0)
    assert first.lines == 1 and [i.first_seen for i in late.open.values()] == [1000 + 300 * RECALL_WINDOWS + 60]
    odd_value = book()                      # a value out of line, not a new message: one window
    odd_value.add_lines("batch", np.array([1000.0]), np.array([80.0], np.float32),
                        {"t3": np.array([80.0], np.float32)}, np.array([5]), np.arange(1), Describe(), None,
                        np.array([22]))
    assert len(odd_value.close_quiet(1400)) == 1
    unheld = IncidentBook(300, 120, threshold=70.0)     # no min_lines given: nothing is held
    run(unheld, [1000], 85.0)
    assert len(unheld.close_quiet(1400)) == 1


def test_a_never_seen_error_alone_is_reported_a_rare_line_alone_is_not():
    """Generated and shop seed 98: a release's unhandled exception (`KeyError('tier')`) logged once, never seen
    before, flagged at 85.6, raised no incident (one line, and no repeat within the hour). It is what an
    operator wants to read, with or without retries; one rare (seen before) line at the threshold is not."""
    from anomaly_detector.config.loader import default_config
    from anomaly_detector.detection.engine import DetectionEngine
    engine = DetectionEngine(default_config())      # incident_min_lines 2, anomaly threshold 70

    def alone(value):
        book = IncidentBook(300, 120, threshold=70.0, min_lines=2)
        score = np.array([value], np.float32)
        book.add_lines("checkout", np.array([1000.0]), score, {"t3": score}, np.array([9]), np.arange(1),
                       DescribeNews(score), None, np.array([9 * 4 + 2]))
        (closed,) = book.close_all()
        return closed

    assert engine._reportable(alone(85.6)) and not engine._reportable(alone(80.0))
