"""Noise rules per sink (alerting/noise.py): severity routing, the dedup window, grouping, quiet hours
(across midnight, in a time zone), and their state across a restart; plus the group messages of the
sinks that list several alerts in one."""
import itertools
import json
import os
from datetime import datetime, timezone

import pytest

from anomaly_detector.alerting.events import severity
from anomaly_detector.alerting.noise import (
    GROUP,
    QuietHours,
    SinkPolicy,
    build_policy,
    group_id,
    identity,
    parse_quiet_hours,
)
from anomaly_detector.alerting.sinks import build_sink
from anomaly_detector.alerting.sinks.email import compose_group
from anomaly_detector.alerting.sinks.slack import group_message
from anomaly_detector.alerting.sinks.syslog import MAX_MESSAGE_BYTES, format_group
from anomaly_detector.alerting.situation_book import SITUATION_KEY, SituationBook, read_published

NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc).timestamp()    # a Monday, 12:00 UTC


def ev(incident, kind="opened", rev=0, at=NOON, first=None, last=None, sev="warning", score=70.0, source="app",
       template=4, seq=None):
    first = at - 60 if first is None else first
    return {"id": "%s-%d" % (incident, rev), "event": kind, "incident_id": incident, "rev": rev, "at": at,
            "writer": "worker-0", "seq": seq if seq is not None else rev + 1,
            "incident": {"id": incident, "source": source, "kind": "rule_burst", "severity": sev, "score": score,
                         "template_id": template, "first_seen": first, "last_seen": last if last is not None else at,
                         "reason": "error rule", "samples": ["db down seq=%s" % incident]}}


def run(policy, events, now=None):
    """Offer each event at its own `at` (or `now`) and drain what is due then; returns the notifications."""
    out = []
    for e in events:
        t = e["at"] if now is None else now
        while not policy.can_accept(e, t):
            out += drain(policy, t if policy.outgoing else policy.next_time(t))
        policy.offer(e, t)
    return out + drain(policy, t)


def drain(policy, now):
    out = []
    while True:
        note = policy.due(now)
        if note is None:
            return out
        out.append(note)
        policy.sent()


def kinds(notes):
    return [[(e["incident_id"], e["event"]) for e in note] for note in notes]


def fresh(**kw):
    stats = {}
    policy = SinkPolicy(stats, **kw)
    policy.since = 0.0     # every test event is written after the policy began
    return policy, stats


# -- severity: defined once, routed per sink

def test_severity_is_critical_for_a_critical_rule_or_a_score_of_90():
    assert severity({"reason": "critical rule: disk", "score": 10}) == "critical"
    assert severity({"reason": "error rule", "score": 90.0}) == "critical"
    assert severity({"reason": "error rule", "score": 89.9}) == "warning"


def test_a_critical_only_sink_gets_critical_incidents_and_all_their_later_events():
    policy, stats = fresh(severities=("critical",))
    notes = run(policy, [ev("w"), ev("c", sev="critical"), ev("c", "updated", 1, at=NOON + 400),
                         ev("w", "resolved", 1, at=NOON + 500), ev("c", "resolved", 2, at=NOON + 600, sev="warning")])
    notes += drain(policy, NOON + 700)
    # c's resolved is sent although it is a warning by then: the sink announced c, so it hears its end
    assert kinds(notes) == [[("c", "opened")], [("c", "updated")], [("c", "resolved")]]
    assert stats["suppressed"] == {"severity": 2}


def test_min_score_suppresses_and_counts():
    policy, stats = fresh(min_score=80)
    notes = run(policy, [ev("low", score=50), ev("high", score=85)]) + drain(policy, NOON)
    assert kinds(notes) == [[("high", "opened")]] and stats["suppressed"] == {"min_score": 1}


# -- dedup

def test_identity_is_source_kind_and_template():
    assert identity(ev("a")["incident"]) == identity(ev("b", sev="critical")["incident"])
    assert identity(ev("a")["incident"]) != identity(ev("a", template=5)["incident"])
    assert identity(ev("a")["incident"]) != identity(ev("a", source="db")["incident"])


def test_a_reopened_incident_inside_the_window_is_folded_into_the_first():
    policy, stats = fresh(dedup_window=300, update_interval=300)
    t = NOON
    notes = run(policy, [
        ev("a", at=t, first=t - 30, last=t),
        ev("a", "resolved", 1, at=t + 40, first=t - 30, last=t + 10),
        ev("b", at=t + 100, first=t + 100, last=t + 100),                 # 90 s after a's last line: folded
        ev("b", "resolved", 1, at=t + 140, first=t + 100, last=t + 110),
        ev("c", at=t + 300, first=t + 300, last=t + 300),                 # folded again (190 s after b)
        ev("c", "updated", 1, at=t + 560, first=t + 300, last=t + 560),   # 520 s since a's resolved was sent
        ev("c", "resolved", 2, at=t + 600, first=t + 300, last=t + 570),
        ev("d", at=t + 900, first=t + 900, last=t + 900),                 # 330 s after c's last line: a new page
    ])
    notes += drain(policy, t + 700)
    assert kinds(notes) == [[("a", "opened")], [("a", "resolved")], [("a", "updated")], [("a", "resolved")],
                            [("d", "opened")]]
    assert notes[2][0]["folded_from"] == "c" and notes[2][0]["id"] == "c-1"      # its own event id, a's incident
    assert notes[3][0]["folded_from"] == "c"
    assert stats["suppressed"] == {"dedup": 3}     # b opened (too soon after a's resolved), b resolved, c opened


def test_overlapping_incidents_of_one_identity_page_once_and_resolve_with_the_last():
    policy, stats = fresh(dedup_window=300, update_interval=300)
    t = NOON
    notes = run(policy, [ev("a", at=t), ev("b", at=t + 5, first=t - 10), ev("a", "resolved", 1, at=t + 50),
                         ev("b", "resolved", 1, at=t + 60)])
    notes += drain(policy, t + 100)
    assert kinds(notes) == [[("a", "opened")], [("a", "resolved")]]
    assert notes[1][0]["folded_from"] == "b" and stats["suppressed"] == {"dedup": 2}


def test_a_folded_incident_that_escalates_to_critical_is_told_at_once():
    policy, stats = fresh(dedup_window=300, update_interval=300)
    notes = run(policy, [ev("a", at=NOON), ev("b", at=NOON + 5, sev="critical"), ev("c", at=NOON + 6, sev="critical")])
    assert kinds(notes) == [[("a", "opened")], [("a", "updated")]]
    assert notes[1][0]["incident"]["severity"] == "critical" and stats["suppressed"] == {"dedup": 1}


def test_a_flapping_outage_stays_firing_its_resolved_waits_resolve_wait_and_a_reopen_voids_it():
    policy, stats = fresh(dedup_window=300, update_interval=300, resolve_wait=30)
    t = NOON
    notes = run(policy, [
        ev("a", at=t, first=t - 30, last=t), ev("a", "resolved", 1, at=t + 40, first=t - 30, last=t + 10),
        ev("b", at=t + 55, first=t + 50, last=t + 55),              # 15 s after a's resolved: it is void
        ev("b", "resolved", 1, at=t + 100, first=t + 50, last=t + 70)])
    assert kinds(notes) == [[("a", "opened")]]
    assert policy.due(t + 129) is None and policy.next_time(t + 129) == t + 130
    (last,) = drain(policy, t + 130)
    assert kinds([last]) == [[("a", "resolved")]] and last[0]["folded_from"] == "b"
    assert stats["suppressed"] == {"dedup": 2}      # a's resolved (voided) and b's opened (an update too soon)
    # the episode is resolved for the receiver: a later reopen inside the window is an update
    notes = run(policy, [ev("c", at=t + 500, first=t + 300, last=t + 300)])
    assert kinds(notes) == [[("a", "updated")]]


def test_outside_the_window_or_with_dedup_off_a_new_incident_pages_again():
    for window, first_b in ((300, NOON + 400), (0, NOON + 20)):
        policy, stats = fresh(dedup_window=window)
        notes = run(policy, [ev("a", at=NOON, first=NOON - 10, last=NOON), ev("a", "resolved", 1, at=NOON + 15),
                             ev("b", at=first_b + 1, first=first_b, last=first_b)])
        notes += drain(policy, NOON + 1000)
        assert kinds(notes) == [[("a", "opened")], [("a", "resolved")], [("b", "opened")]]
        assert "suppressed" not in stats


# -- grouping

def test_incidents_opened_within_group_wait_go_out_as_one_notification_after_the_wait():
    policy, _ = fresh(group_wait=10)
    for e in (ev("a", at=NOON), ev("b", at=NOON + 3, source="db"), ev("c", at=NOON + 9, source="web")):
        assert policy.can_accept(e, NOON + 9)
        policy.offer(e, NOON + 9)
    assert policy.due(NOON + 9.5) is None and policy.next_time(NOON + 9.5) == NOON + 10
    late = ev("d", at=NOON + 11, source="cache")
    assert not policy.can_accept(late, NOON + 11)           # past the wait: the group goes first
    (note,) = drain(policy, NOON + 11)
    assert [e["incident_id"] for e in note] == ["a", "b", "c"]
    policy.offer(late, NOON + 11)
    assert kinds(drain(policy, NOON + 21)) == [[("d", "opened")]]


def test_other_events_follow_a_pending_group_and_order_per_incident_holds():
    policy, _ = fresh(group_wait=10)
    notes = run(policy, [ev("a", at=NOON), ev("b", at=NOON + 2, source="db"),
                         ev("a", "resolved", 1, at=NOON + 4), ev("c", at=NOON + 5, source="web"),
                         ev("d", at=NOON + 12, source="cache")])
    notes += drain(policy, NOON + 30)
    assert kinds(notes) == [[("a", "opened"), ("b", "opened"), ("c", "opened")], [("a", "resolved")],
                            [("d", "opened")]]


def test_without_grouping_each_opened_goes_at_once():
    policy, _ = fresh(group_wait=0)
    policy.offer(ev("a"), NOON)
    assert kinds([policy.due(NOON)]) == [[("a", "opened")]]


# -- quiet hours

def test_quiet_hours_parse_and_contain_across_midnight_and_in_a_time_zone():
    assert parse_quiet_hours("22:00-07:00") == (1320, 420)
    for bad in ("22-07", "25:00-07:00", "22:00-22:00", "22:0-07:00", ""):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)
    night = QuietHours("22:00-07:00")
    at = lambda h, m=0: datetime(2026, 3, 2, h, m, tzinfo=timezone.utc).timestamp()  # noqa: E731
    assert night.contains(at(23)) and night.contains(at(0, 30)) and night.contains(at(6, 59))
    assert not night.contains(at(7)) and not night.contains(at(12)) and not night.contains(at(21, 59))
    assert night.ends_after(at(23)) == at(7) + 86400 and night.ends_after(at(3)) == at(7)
    paris = QuietHours("22:00-07:00", "Europe/Paris")    # UTC+1 in March before the DST switch
    assert paris.contains(at(21, 30)) and not paris.contains(at(6, 30)) and paris.ends_after(at(3)) == at(6)
    lunch = QuietHours("12:00-13:00")
    assert lunch.contains(at(12, 30)) and not lunch.contains(at(13))


def test_in_quiet_hours_warnings_are_held_and_sent_as_one_digest_at_their_end():
    policy, stats = fresh(quiet=QuietHours("22:00-07:00"))
    night = datetime(2026, 3, 2, 23, 0, tzinfo=timezone.utc).timestamp()
    morning = datetime(2026, 3, 3, 7, 0, tzinfo=timezone.utc).timestamp()
    notes = run(policy, [ev("a", at=night), ev("b", at=night + 60, source="db"),
                         ev("b", "updated", 1, at=night + 400, source="db"),
                         ev("b", "updated", 2, at=night + 800, source="db"),
                         ev("gone", at=night + 900, source="web"),
                         ev("gone", "resolved", 1, at=night + 1000, source="web"),
                         ev("c", at=night + 1100, source="cache", sev="critical")], now=night + 1100)
    assert kinds(notes) == [[("c", "opened")]]                    # critical goes at once
    assert policy.due(morning - 1) is None and policy.next_time(morning - 1) == morning
    (digest,) = drain(policy, morning)
    assert [(e["incident_id"], e["event"], e["rev"]) for e in digest] == [("a", "opened", 0), ("b", "opened", 0),
                                                                         ("b", "updated", 2)]
    assert stats["held"] == 5                                      # the resolved one was never held
    assert stats["suppressed"] == {"superseded_in_quiet_hours": 1, "resolved_in_quiet_hours": 2}


def test_a_critical_event_in_quiet_hours_takes_its_incidents_held_events_along():
    policy, _ = fresh(quiet=QuietHours("00:00-23:59"))
    notes = run(policy, [ev("a"), ev("a", "updated", 1, at=NOON + 400, sev="critical")], now=NOON)
    assert kinds(notes) == [[("a", "opened"), ("a", "updated")]]


def test_the_held_bound_drops_the_oldest_and_counts_it():
    policy, stats = fresh(quiet=QuietHours("00:00-23:59"), held_max=2)
    run(policy, [ev("a"), ev("b", source="db"), ev("c", source="web")], now=NOON)
    assert [e["incident_id"] for e in policy.held] == ["b", "c"] and stats["suppressed"] == {"held_overflow": 1}


# -- state across a restart

def test_after_an_upgrade_the_incidents_announced_before_the_policy_still_end():
    policy = SinkPolicy({}, severities=("critical",), dedup_window=300)   # no state: since = now
    notes = run(policy, [ev("old", "resolved", 3, at=policy.since - 60),
                         ev("new", "resolved", 1, at=policy.since + 1)])
    assert kinds(notes) == [[("old", "resolved")]]


def test_the_policy_state_round_trips_through_json():
    policy, _ = fresh(dedup_window=300, group_wait=10, quiet=QuietHours("22:00-07:00"))
    run(policy, [ev("a", at=NOON), ev("b", at=NOON + 1, source="db")], now=NOON + 1)
    again, _ = fresh(dedup_window=300, group_wait=10, quiet=QuietHours("22:00-07:00"))
    again.restore(json.loads(json.dumps(policy.state())))
    assert again.state() == policy.state()
    notes = run(again, [ev("c", at=NOON + 400, first=NOON + 30)], now=NOON + 400)   # a's identity: folded
    assert kinds(notes) == [[("a", "opened"), ("b", "opened")], [("a", "updated")]]


# -- group messages

def test_group_messages_list_every_alert_once(tmp_path):
    events = [ev("a"), ev("b", source="db"), ev("c", source="<!channel>")]
    payload = json.loads(json.dumps(group_message(events)))
    assert payload["blocks"][0]["text"]["text"].startswith("3 alerts")
    assert "<!channel>" not in json.dumps(payload) and len(payload["blocks"]) == 5
    mail = compose_group(events, "d@example.com", ["o@example.com"])
    assert mail["Subject"].startswith("[anomaly-detector] 3 alerts: OPENED warning")
    assert mail["Message-ID"] == "<%s@anomaly-detector>" % group_id(events)
    assert all("seq=%s" % i in mail.get_body(("plain",)).get_content() for i in "abc")
    line = format_group(events * 40, "host").decode()
    assert line.startswith("<132>1 ") and "120 alerts: opened" in line and len(line) <= MAX_MESSAGE_BYTES
    sink = build_sink("archive", {"type": "file", "path": str(tmp_path / "a.jsonl")})
    sink.send_group(events)
    (written,) = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert written["event"] == GROUP and written["count"] == 3 and written["id"] == group_id(events)
    assert [e["id"] for e in written["events"]] == ["a-0", "b-0", "c-0"]


def test_a_group_and_what_follows_it_are_bounded_and_the_bound_is_logged(caplog):
    policy, _ = fresh(group_wait=10, held_max=3)
    for e in (ev("a"), ev("b", source="db"), ev("a", "resolved", 1, at=NOON + 1)):
        assert policy.can_accept(e, NOON + 1)
        policy.offer(e, NOON + 1)
    assert not policy.can_accept(ev("c", at=NOON + 2, source="web"), NOON + 2)
    assert "3 alerts wait in a group" in caplog.text
    assert kinds(drain(policy, NOON + 10)) == [[("a", "opened"), ("b", "opened")], [("a", "resolved")]]
    assert policy.can_accept(ev("c", at=NOON + 12, source="web"), NOON + 12)


# -- situations: one notification per situation, updated as incidents join

def linked(incident, kind="opened", rev=0, at=NOON, source="db", sample="", **kw):
    event = ev(incident, kind, rev, at=at, source=source, template={"db": 1, "app": 2, "batch": 3}[source], **kw)
    event["incident"]["samples"] = [sample]
    return event


DB = "lock wait timeout exceeded on table orders host=db-primary-1 txn=77"
APP = "timeout waiting for db-primary-1:5432 after 3000 ms request 0a1b2c3d4e5f"
BATCH = "job report-daily failed: disk quota exceeded on /var/reports (912 MB over)"


SETTINGS = {"window_seconds": 300, "max_open": 10, "max_pairs": 100, "max_tokens": 1000, "dependencies": []}
SEQ = itertools.count(1)


def situation_policy(min_score=0, name="hook"):
    stats = {}
    policy = build_policy(stats, {"dedup_window_seconds": 300, "update_interval_seconds": 300,
                                  "group_wait_seconds": 0, "outbox_max_alerts": 100, "resolve_wait_seconds": 0},
                          {"min_score": min_score}, True, name, True)
    policy.since = 0.0
    return policy, stats


def through(book, events):
    """The events as the alerter hands them to the sinks: numbered in the outbox, put in situations."""
    return book.take([dict(e, seq=next(SEQ)) for e in events])


def cascade(t=NOON):
    return [
        linked("db", at=t, first=t - 40, sample=DB),
        linked("batch", at=t + 5, first=t - 30, source="batch", sample=BATCH),     # same minute, nothing shared
        linked("app", at=t + 20, first=t - 10, source="app", sample=APP, score=95.0),   # calls db-primary-1: joins
        linked("app", "updated", 1, at=t + 30, first=t - 10, source="app", sample=APP),  # within update_interval
        linked("db", "resolved", 1, at=t + 60, first=t - 40, sample=DB),             # app still fires
        linked("batch", "resolved", 1, at=t + 61, first=t - 30, source="batch", sample=BATCH),
        linked("app", "resolved", 2, at=t + 90, first=t - 10, source="app", sample=APP),
    ]


def test_an_incident_joining_a_situation_goes_out_as_its_update_and_it_resolves_with_the_last(tmp_path):
    policy, stats = situation_policy()
    notes = run(policy, through(SituationBook(str(tmp_path), SETTINGS, 10), cascade()))
    assert kinds(notes) == [[("db", "opened")], [("batch", "opened")], [("db", "updated")], [("batch", "resolved")],
                            [("db", "resolved")]]
    join = notes[2][0]
    assert join["folded_from"] == "app" and join["situation"]["sources"] == ["app", "db"]
    assert join["situation"]["first_cause"]["source"] == "db" and "situation" not in notes[1][0]
    assert stats["situation_joins"] == 1 and stats["suppressed"] == {"dedup": 2}   # app's update, db's resolved
    assert not any(SITUATION_KEY in e for note in notes for e in note)   # the alerter's mark is never sent


def test_every_sink_names_a_situation_by_the_alerters_one_id(tmp_path):
    book = SituationBook(str(tmp_path), SETTINGS, 10)
    everything, _ = situation_policy()
    pager, _ = situation_policy(min_score=90, name="pager")   # takes app (95), never db (70)
    events = through(book, cascade())
    told = run(everything, events)
    paged = run(pager, events)
    assert kinds(paged) == [[("app", "opened")], [("app", "updated")], [("app", "resolved")]]
    mine, theirs = paged[0][0]["situation"], told[2][0]["situation"]
    assert mine["id"] == theirs["id"] and mine["incidents"] == theirs["incidents"] == ["db", "app"]
    assert mine["first_cause"] == theirs["first_cause"] and mine["first_cause"]["source"] == "db"
    book.save()
    listed = read_published(os.path.join(str(tmp_path), "situations-view.json"))
    by_id = {s["id"]: s for s in listed}
    assert by_id[mine["id"]]["incidents"] == ["db", "app"] and by_id[mine["id"]]["status"] == "resolved"
    assert [s["sources"] for s in listed if s["id"] != mine["id"]] == [["batch"]]


def test_situations_survive_a_restart_in_the_alerters_state(tmp_path):
    policy, _ = situation_policy()
    t = NOON
    book = SituationBook(str(tmp_path), SETTINGS, 10)
    first = through(book, [linked("db", at=t, first=t - 40, sample=DB)])
    run(policy, first)
    book.save()
    saved = json.loads(json.dumps(policy.state()))
    again, stats = situation_policy()
    again.restore(saved)
    book = SituationBook(str(tmp_path), SETTINGS, 10)
    assert book.take(first)[0][SITUATION_KEY]["incidents"] == ["db"]   # read again after the restart: not fed twice
    notes = run(again, through(book, [linked("app", at=t + 20, first=t - 10, source="app", sample=APP)]))
    assert kinds(notes) == [[("db", "updated")]] and notes[0][0]["situation"]["incidents"] == ["db", "app"]
    assert stats["situation_joins"] == 1


def test_the_published_situations_are_bounded_and_closed_ones_stay_listed(tmp_path):
    book = SituationBook(str(tmp_path), dict(SETTINGS, window_seconds=60), 2)
    t = NOON
    events = []
    for i in range(5):   # five lone incidents, each 10 minutes after the last: each closes the one before
        start = t + 600 * i
        events += [linked("db%d" % i, at=start, first=start - 5, sample=DB),
                   linked("db%d" % i, "resolved", 1, at=start + 30, first=start - 5, sample=DB)]
    through(book, events)
    book.save()
    listed = read_published(os.path.join(str(tmp_path), "situations-view.json"))
    assert [s["incidents"] for s in listed] == [["db4"], ["db3"], ["db2"]]   # open one + the last 2 closed
    assert all(s["status"] == "resolved" for s in listed)


def test_without_situations_linked_incidents_page_on_their_own():
    policy, stats = fresh(dedup_window=300, update_interval=300)
    t = NOON
    notes = run(policy, [linked("db", at=t, first=t - 40, sample=DB),
                         linked("app", at=t + 20, first=t - 10, source="app", sample=APP)])
    assert kinds(notes) == [[("db", "opened")], [("app", "opened")]] and "situation_joins" not in stats


def test_a_bound_reached_is_reported_and_the_situation_closed_early_stays_listed(tmp_path):
    hits = []
    book = SituationBook(str(tmp_path), SETTINGS, 5, on_limit=hits.append)   # max_open 10
    through(book, [linked("db%d" % i, at=NOON + i, first=NOON + i, sample="host=db-%d" % i) for i in range(11)])
    assert hits == ["max_open"]
    listed = book.situations()
    assert len(listed) == 11 and listed[-1]["incidents"] == ["db0"] and listed[-1]["status"] == "open"


def test_an_unreadable_state_is_logged_and_the_alerter_starts_without_it(tmp_path, caplog):
    (tmp_path / "situations-state.json").write_text('{"correlator": {"open": 3}}')
    book = SituationBook(str(tmp_path), SETTINGS, 5)
    assert "unreadable" in caplog.text and book.correlator.open == {} and book.fed == {}
    assert through(book, [linked("db", sample=DB)])[0][SITUATION_KEY]["incidents"] == ["db"]


def test_the_api_serves_the_alerters_situations_when_it_published_them(tmp_path):
    from anomaly_detector.metrics.incidents_api import SituationsView

    class NoViews:
        def incidents(self):
            return []
    book = SituationBook(str(tmp_path), SETTINGS, 10)
    path = os.path.join(str(tmp_path), "situations-view.json")
    view = SituationsView(NoViews(), SETTINGS, path)
    assert view.situations() == []   # not published yet: computed from the (empty) incident views
    events = through(book, cascade())
    book.save()
    listing = view.listing(10)
    story = run(situation_policy()[0], events)[2][0]["situation"]
    same = [s for s in listing["situations"] if s["id"] == story["id"]]
    assert len(same) == 1 and same[0]["incidents"] == story["incidents"] and same[0]["status"] == "resolved"
    assert same[0]["first_cause"]["onset_iso"] and listing["count"] == 2
