"""Noise control on the real daemon: two sources' incidents opened together reach a webhook as one
group; a `severities = critical` sink gets only the critical one; a sink in its quiet hours sends the
critical one at once and holds the warning, which comes out as a digest once a reload lifts the
quiet hours (the held event survives the alerter's restart in the sink's checkpoint). Counters are
read from the daemon's /metrics."""
import json
import os
import signal
from datetime import datetime, timedelta, timezone

from tests.integration.daemon_harness import Daemon, wait_for
from tests.integration.test_alerting import Collector


def stamp(t):
    return "2026-03-02T%02d:%02d:%02d.000Z" % (t // 3600, t // 60 % 60, t % 60)


def write_sources(logs, seconds=400):
    """app: INFO lines with six FATAL at 300..305 (its incident closes before the end: critical); db: INFO
    lines, then ten WARN lines from 390 on (with warning_threshold = 5 the rule fires at the 5th and the
    10th line, scoring 80 and 85: a warning incident, still open at the end)."""
    with open(os.path.join(logs, "app.log"), "w") as app, open(os.path.join(logs, "db.log"), "w") as db:
        for t in range(seconds):
            level = "FATAL" if 300 <= t < 306 else "INFO"
            app.write("%s %s worker-%d took %d ms seq=%d\n" % (stamp(t), level, t % 3, 20 + t % 7, t))
            if t >= 390:
                db.write("%s WARN replica lag %d ms on db-%d seq=%d\n" % (stamp(t), 900 + t, t % 2, 100000 + t))
            else:
                db.write("%s INFO query served in %d ms seq=%d\n" % (stamp(t), 3 + t % 5, 100000 + t))
    return 2 * seconds


def quiet_now():
    """A quiet-hours window around the present minute (UTC)."""
    now = datetime.now(timezone.utc)
    return "%s-%s" % ((now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M"))


def config(hook, tmp_path, quiet):
    night = "quiet_hours = %s\n" % quiet if quiet else ""
    return """[detection]
incident_window_seconds = 30
[[tier1]]
warning_threshold = 5
[alerting]
group_wait_seconds = 3
resolve_wait_seconds = 2
[[hook]]
type = webhook
url = %s
retry_initial_seconds = 0.2
[[crit]]
type = file
path = %s/crit.jsonl
severities = critical
[[night]]
type = file
path = %s/night.jsonl
%s""" % (hook.url, tmp_path, tmp_path, night)


INPUTS = "[[app]]\ntype = file\npath = {d}/app.log\nstart_at = beginning\n" \
         "[[db]]\ntype = file\npath = {d}/db.log\nstart_at = beginning\n"


def lines(path):
    return [json.loads(x) for x in open(path)] if os.path.exists(path) else []


def unpack(notes):
    return [e for n in notes for e in n.get("events", [n])]


def test_grouping_routing_and_quiet_hours_on_a_live_daemon(tmp_path):
    hook = Collector()
    quiet = quiet_now()
    daemon = Daemon(tmp_path, workers=1, extra=config(hook, tmp_path, quiet), inputs=INPUTS.format(d=tmp_path / "logs"))
    night, crit = str(tmp_path / "night.jsonl"), str(tmp_path / "crit.jsonl")
    try:
        total = write_sources(daemon.logs)
        daemon.start()
        daemon.wait_scored(total, 120)
        wait_for(lambda: any(n["event"] == "resolved" for n in hook.bodies), 60, daemon)
        opened = [e for e in unpack(hook.bodies) if e["event"] == "opened"]
        by_source = {e["incident"]["source"]: e["incident"]["severity"] for e in opened}
        assert by_source == {"app": "critical", "db": "warning"}, by_source
        # the two incidents opened together: one notification listing both, before app's resolved
        assert hook.bodies[0]["event"] == "group" and hook.bodies[0]["count"] == 2
        assert [n["event"] for n in hook.bodies[1:]] == ["resolved"]
        # the critical-only sink: app's incident, opened and resolved, nothing of db
        wait_for(lambda: len(lines(crit)) == 2, 30, daemon)
        assert [(e["incident"]["source"], e["event"]) for e in lines(crit)] == [("app", "opened"), ("app", "resolved")]
        # in quiet hours: app (critical) went at once, db (warning) is held
        wait_for(lambda: len(lines(night)) == 2, 30, daemon)
        assert {e["incident"]["source"] for e in unpack(lines(night))} == {"app"}
        wait_for(lambda: daemon.labelled("alerts_held_total").get((("sink", "night"),)) == 1, 30, daemon)
        # /metrics serves the sidecar's last once-a-second reading of the alerter's figures: wait for it
        wait_for(lambda: (daemon.labelled("alerts_suppressed_total").get((("reason", "severity"), ("sink", "crit"))),
                          daemon.labelled("alert_notifications_total").get((("sink", "hook"),)),
                          daemon.labelled("alerts_delivered_total").get((("sink", "hook"),))) == (1, 2, 3), 30, daemon)
        # a reload lifts the quiet hours: the held warning goes out (restored from the checkpoint)
        daemon.write_config(workers=1, extra=config(hook, tmp_path, ""), inputs=INPUTS.format(d=tmp_path / "logs"))
        os.kill(daemon.process.pid, signal.SIGHUP)
        wait_for(lambda: len(lines(night)) == 3, 60, daemon)
        digest = lines(night)[-1]
        assert (digest["event"], digest["incident"]["source"]) == ("opened", "db")
        assert daemon.labelled("alerts_held_total")[(("sink", "night"),)] == 1
    finally:
        daemon.stop()
        hook.close()
