"""Situations on the real daemon: a database fault spreading to the application reaches a webhook as one
alert, updated when the application's incident joins, while an unrelated batch failure at the same time
stays an alert of its own; GET /api/situations tells the same story (the alerter's situations: the same id
and first cause as the notification), and /metrics counts the join. After a restart on the same state dir,
a further incident of the cascade joins the same situation (the alerter's correlator was restored)."""
import glob
import json
import os

from tests.integration.daemon_harness import Daemon, http_request, wait_for
from tests.integration.test_alerting import Collector


def stamp(t):
    return "2026-03-02T%02d:%02d:%02d.000Z" % (t // 3600, t // 60 % 60, t % 60)


def write_sources(logs, seconds=420):
    """db: FATAL lock timeouts on db-primary-1 at 300..305; app: FATAL timeouts calling db-primary-1:5432 at
    330..335; batch: FATAL disk quota errors at 310..315 (no host, no name of the others). INFO otherwise."""
    names = ("db", "app", "batch")
    fatal = {"db": (300, "lock wait timeout exceeded on table orders host=db-primary-1 txn=%d"),
             "app": (330, "timeout waiting for db-primary-1:5432 after 3000 ms request %012x"),
             "batch": (310, "job report-daily failed: disk quota exceeded on /var/reports (%d MB over)")}
    normal = {"db": "query served in %d ms", "app": "request handled in %d ms", "batch": "job step done in %d ms"}
    files = {n: open(os.path.join(logs, n + ".log"), "w") for n in names}
    try:
        for t in range(seconds):
            for n in names:
                start, text = fatal[n]
                if start <= t < start + 6:
                    files[n].write("%s FATAL %s\n" % (stamp(t), text % (977 * t + 13)))
                else:
                    files[n].write("%s INFO %s\n" % (stamp(t), normal[n] % (3 + t % 5)))
    finally:
        for f in files.values():
            f.close()
    return len(names) * seconds


CONFIG = """[detection]
incident_window_seconds = 30
[alerting]
group_wait_seconds = 0
resolve_wait_seconds = 0
[[hook]]
type = webhook
url = %s
retry_initial_seconds = 0.2
"""
INPUTS = "".join("[[%s]]\ntype = file\npath = {d}/%s.log\nstart_at = beginning\n" % (n, n)
                 for n in ("db", "app", "batch", "web"))
WEB_FATAL = "upstream request failed: connection refused by db-primary-1:5432 after 3000 ms request %012x"


def write_web(logs, start, end):
    """web: INFO lines, FATAL calls to db-primary-1:5432 at 360..365 (a later part of the db cascade)."""
    with open(os.path.join(logs, "web.log"), "a") as f:
        for t in range(start, end):
            text = "FATAL " + WEB_FATAL % (977 * t + 13) if 360 <= t < 366 else "INFO page served in %d ms" % (3 + t % 5)
            f.write("%s %s\n" % (stamp(t), text))
    return end - start


def forget_delivered(outbox):
    """Delete the outbox segments every sink delivered, as the outbox itself does over a long run (a writer
    removes them as it rolls to new ones): after the restart only the alerter's saved state knows the
    situation's incidents, not a re-read of the outbox."""
    delivered = {}
    for name in glob.glob(os.path.join(outbox, "checkpoints", "*.json")):
        for writer, seq in json.load(open(name))["writers"].items():
            delivered[writer] = min(delivered.get(writer, seq), seq)
    gone = 0
    for path in glob.glob(os.path.join(outbox, "*.jsonl")):
        events = [json.loads(line) for line in open(path) if line.endswith("\n")]
        if events and all(e["seq"] <= delivered.get(e["writer"], 0) for e in events):
            os.unlink(path)
            gone += 1
    assert gone, "no delivered segment to forget in %s" % outbox


def test_a_cascade_is_one_alert_updated_as_incidents_join(tmp_path):
    hook = Collector()
    daemon = Daemon(tmp_path, workers=1, extra=CONFIG % hook.url, inputs=INPUTS.format(d=tmp_path / "logs"))
    try:
        total = write_sources(daemon.logs) + write_web(daemon.logs, 0, 340)
        daemon.start()
        wait_for(lambda: daemon.metric("logs_processed_total") >= total, 120, daemon, "%d lines scored" % total)
        wait_for(lambda: sum(n["event"] == "resolved" for n in hook.bodies) >= 2, 90, daemon, "two resolved alerts")
        events = [e for n in hook.bodies for e in n.get("events", [n])]
        opened = [e for e in events if e["event"] == "opened"]
        # two alerts: the db/app situation (led by whichever opened first) and batch on its own
        assert sorted(e["incident"]["source"] for e in opened) in (["batch", "db"], ["app", "batch"]), opened
        lead = next(e for e in opened if e["incident"]["source"] in ("db", "app"))
        joins = [e for e in events if e.get("folded_from") and e["event"] == "updated"]
        assert len(joins) == 1 and joins[0]["incident_id"] == lead["incident_id"], events
        story = joins[0]["situation"]
        assert story["sources"] == ["app", "db"] and story["first_cause"]["source"] == "db", story
        assert 0.5 < story["confidence"] <= 1.0 and any("db-primary-1" in e for e in story["evidence"]), story
        assert not any("batch" in e.get("situation", {}).get("sources", []) for e in events)
        # the situation's alert resolves under its lead's id (again, if the lead had closed before the join)
        resolved = [e for e in events if e["event"] == "resolved"]
        assert {e["incident_id"] for e in resolved} == {e["incident_id"] for e in opened}
        assert resolved[-1]["incident_id"] == lead["incident_id"] or resolved[-1]["incident"]["source"] == "batch"

        status, body, _ = http_request(daemon, "GET", "/api/situations?limit=10")
        assert status == 200, body
        by_sources = {tuple(s["sources"]): s for s in body["situations"]}
        assert ("app", "db") in by_sources and ("batch",) in by_sources, body
        assert by_sources[("app", "db")]["first_cause"]["source"] == "db"
        assert len(by_sources[("app", "db")]["incidents"]) == 2
        # the page's situation is the notified one: same id, same incidents, same first cause
        situation = by_sources[("app", "db")]
        assert situation["id"] == story["id"] and situation["incidents"] == story["incidents"], (situation, story)
        assert situation["first_cause"]["source"] == story["first_cause"]["source"] == "db"
        assert situation["first_cause"]["onset"] == story["first_cause"]["onset"]
        published = json.load(open(os.path.join(daemon.dir, "state", "outbox", "situations-view.json")))
        assert story["id"] in {s["id"] for s in published["situations"]}
        status, page = daemon.get("/")
        assert status == 200 and 'id="situation-%s"' % story["id"] in page
        status, body, _ = http_request(daemon, "GET", "/api/situations?status=maybe")
        assert status == 400 and "status" in body["error"]
        wait_for(lambda: daemon.labelled("alert_situation_joins_total").get((("sink", "hook"),)) == 1, 30, daemon,
                 "alert_situation_joins_total{sink=hook} = 1")

        # restart on the same state dir; web's incident of the same cascade joins the same situation
        assert daemon.stop() == 0
        forget_delivered(os.path.join(daemon.dir, "state", "outbox"))
        before = len(hook.bodies)
        write_web(daemon.logs, 340, 420)
        daemon.start()

        def web_events():
            return [e for n in hook.bodies[before:] for e in n.get("events", [n])
                    if e["incident"]["source"] == "web"]
        wait_for(lambda: any(e.get("situation") for e in web_events()), 120, daemon, "web's incident notified")
        told = next(e for e in web_events() if e.get("situation"))
        assert told["situation"]["id"] == story["id"], (told, story)
        assert told["situation"]["sources"] == ["app", "db", "web"] and told["situation"]["first_cause"]["source"] == "db"
        status, body, _ = http_request(daemon, "GET", "/api/situations?limit=10")
        same = [s for s in body["situations"] if s["id"] == story["id"]]
        assert len(same) == 1 and same[0]["sources"] == ["app", "db", "web"], body
        assert not any(s["sources"] == ["web"] for s in body["situations"]), body
    finally:
        daemon.stop()
        hook.close()
