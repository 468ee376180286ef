"""GET /api/incidents and POST /admin/feedback on the real daemon: a FATAL burst in two files (two sources)
raises an incident each; the API lists them with their fields; "normal" on one source's incident keeps the
same burst from raising an incident there again (the other source, the control, still raises one), also
after a restart; "problem" on a routine template makes its lines raise a known_problem incident; and
every refusal of the two endpoints answers its status."""
import json
import os
import re
import signal
import time

import pytest

from tests.integration import daemon_harness as harness
from tests.integration.daemon_harness import Daemon

TOKEN = "feedback-token-0123456789abcdef"
MAX_BODY = 512


def request(daemon, method, path, body=None, token=TOKEN, headers=None):
    """The harness's http_request with this module's token."""
    return harness.http_request(daemon, method, path, body, token, headers)


def feedback(daemon, body, **kwargs):
    return request(daemon, "POST", "/admin/feedback", body, **kwargs)


def incidents(daemon, query=""):
    status, body, _ = request(daemon, "GET", "/api/incidents" + query, token=None)
    assert status == 200, body
    return body["incidents"]


def write_phase(daemon, name, minute, first_seq, fatal=True, seconds=120):
    """Lines one second apart from `minute` of the day: routine INFO lines, and six FATAL lines of their own
    template at seconds 60..65 when `fatal`. Returns the seqs written."""
    with open(os.path.join(daemon.logs, name + ".log"), "a") as f:
        for i in range(seconds):
            t = minute * 60 + i
            stamp = "2026-03-02T%02d:%02d:%02d.000Z" % (t // 3600, t // 60 % 60, t % 60)
            if fatal and 60 <= i < 66:
                f.write("%s FATAL payment gateway timeout after %d ms seq=%d\n" % (stamp, 3000 + i, first_seq + i))
            else:
                f.write("%s INFO worker-%d took %d ms seq=%d\n" % (stamp, i % 3, 20 + i % 7, first_seq + i))
    return set(range(first_seq, first_seq + seconds))


def wait_for(condition, timeout, what, daemon):
    """The harness's wait_for, `what` first."""
    return harness.wait_for(condition, timeout, daemon, what)


def scored_all(daemon, seqs, timeout=180):
    wait_for(lambda: seqs <= set(daemon.scored_seqs()), timeout, "every line scored", daemon)


def burst_incidents(daemon, source, minute):
    """Incidents of `source` whose onset is in the phase starting at `minute` (its FATAL lines at +60 s)."""
    start = "2026-03-02T%02d:%02d" % (minute // 60, minute % 60 + 1)
    return [i for i in incidents(daemon) if i["source"] == source and i["start"].startswith(start)]


@pytest.fixture
def daemon(tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    logs = tmp_path / "logs"
    inputs = "".join("[[%s]]\ntype = file\npath = %s/%s.log\nstart_at = beginning\n" % (name, logs, name)
                     for name in ("app", "other"))
    d = Daemon(tmp_path, workers=2, inputs=inputs, extra="[detection]\nincident_window_seconds = 30\n",
               http="admin_token_file = %s\nmax_body_bytes = %d\nadmin_rate_limit_per_minute = 10000\n"
               % (token_file, MAX_BODY))
    yield d
    d.stop()


def test_incidents_listed_and_feedback_normal_then_problem_change_what_is_raised(daemon):
    daemon.start()
    seqs = write_phase(daemon, "app", 0, 0) | write_phase(daemon, "other", 0, 100000)
    scored_all(daemon, seqs)
    # GET /api/incidents: each source's burst, resolved (the lines went on for a window), with its fields
    first = wait_for(lambda: len(burst_incidents(daemon, "app", 0)) == 1 and burst_incidents(daemon, "other", 0)
                     and burst_incidents(daemon, "app", 0)[0]["status"] == "resolved", 30, "the bursts' incidents",
                     daemon)
    (app,) = burst_incidents(daemon, "app", 0)
    assert first
    assert re.fullmatch(r"[0-9a-f]{16}", app["id"]) and app["kind"] and app["severity"] == "critical"
    assert app["score"] >= 70 and app["start"].startswith("2026-03-02T00:01:0") and app["end"]
    assert any("payment gateway timeout" in t["text"] for t in app["templates"])
    assert app["explanation"]["reason"] and "expected" in app["explanation"] and "observed" in app["explanation"]
    assert app["samples"] and any("seq=60" in s for s in app["samples"])
    assert incidents(daemon, "?limit=1") == incidents(daemon)[:1]
    assert all(i["status"] == "resolved" for i in incidents(daemon, "?status=resolved"))
    assert incidents(daemon, "?since=2030-01-01T00:00:00Z") == []

    # normal on app's incident: the same burst again raises nothing in app; other (no feedback) raises again
    status, body, _ = feedback(daemon, {"incident": app["id"], "verdict": "normal"})
    assert status == 200, body
    rule = body["rule"]
    assert rule["source"] == "app" and any("payment gateway timeout" in t for t in rule["templates"])
    seqs = write_phase(daemon, "app", 7, 1000) | write_phase(daemon, "other", 7, 101000)
    scored_all(daemon, seqs)
    wait_for(lambda: burst_incidents(daemon, "other", 7), 30, "the control source's second incident", daemon)
    time.sleep(2)    # the views are at most a second behind
    assert burst_incidents(daemon, "app", 7) == []
    suppressed = daemon.labelled("feedback_lines_total")[(("effect", "suppressed"),)]
    assert suppressed >= 6
    assert daemon.labelled("feedback_total")[(("verdict", "normal"),)] == 1
    assert daemon.labelled("feedback_rules")[(("verdict", "normal"),)] == 1

    # a restart keeps the rule (the rules file, the workers' snapshots) and the incidents listed
    assert daemon.stop() == 0
    daemon.start()
    assert any(i["id"] == app["id"] for i in incidents(daemon))
    status, listed, _ = request(daemon, "GET", "/admin/feedback")
    assert status == 200 and [r["id"] for r in listed["rules"]] == [rule["id"]]
    seqs = write_phase(daemon, "app", 14, 2000) | write_phase(daemon, "other", 14, 102000)
    scored_all(daemon, seqs)
    wait_for(lambda: burst_incidents(daemon, "other", 14), 30, "the control source's third incident", daemon)
    time.sleep(2)
    assert burst_incidents(daemon, "app", 14) == []

    # problem on other's routine template: its INFO lines now raise a known_problem incident
    routine = [json.loads(line)["template"] for line in open(daemon.scored, "rb")   # its text now: the last
               if b'"source":"other"' in line and b" INFO worker-" in line][-1]
    status, body, _ = feedback(daemon, {"template": routine, "source": "other", "verdict": "problem"})
    assert status == 200, body
    problem = body["rule"]
    seqs = write_phase(daemon, "other", 21, 103000, fatal=False, seconds=20)
    scored_all(daemon, seqs)
    known = wait_for(lambda: [i for i in incidents(daemon) if i["source"] == "other" and i["kind"] == "known_problem"],
                     30, "a known_problem incident", daemon)
    assert "known problem" in known[0]["explanation"]["reason"]
    assert daemon.labelled("feedback_lines_total")[(("effect", "flagged"),)] >= 2
    # listed, then cleared by its rule id
    status, listed, _ = request(daemon, "GET", "/admin/feedback")
    assert {r["id"]: r["verdict"] for r in listed["rules"]} == {rule["id"]: "normal", problem["id"]: "problem"}
    status, body, _ = feedback(daemon, {"rule": problem["id"], "verdict": "clear"})
    assert status == 200 and body["cleared"] == [problem["id"]]
    assert daemon.labelled("feedback_rules") == {(("verdict", "normal"),): 1, (("verdict", "problem"),): 0}
    assert daemon.labelled("feedback_total")[(("verdict", "clear"),)] == 1
    log = open(os.path.join(daemon.dir, "log", "anomaly-detector.log"), errors="replace").read()
    assert "feedback rules applied: 1 normal, 1 problem" in log and TOKEN not in log

    # a reload (SIGHUP) restarts the sidecar and the workers: the normal rule still holds
    os.kill(daemon.process.pid, signal.SIGHUP)
    wait_for(lambda: "reloaded" in daemon.log_tail(400), 60, "the reload", daemon)
    daemon.wait_healthy(60)
    status, listed, _ = wait_for(lambda: _listed(daemon), 30, "the admin API after the reload", daemon)
    assert [r["id"] for r in listed["rules"]] == [rule["id"]]
    seqs = write_phase(daemon, "app", 28, 3000) | write_phase(daemon, "other", 28, 104000)
    scored_all(daemon, seqs)
    wait_for(lambda: burst_incidents(daemon, "other", 28), 30, "the control source's incident after the reload",
             daemon)
    time.sleep(2)
    assert burst_incidents(daemon, "app", 28) == []


def _listed(daemon):
    try:
        answer = request(daemon, "GET", "/admin/feedback")
    except OSError:      # the sidecar restarting
        return None
    return answer if answer[0] == 200 else None


def test_every_refusal_of_the_two_endpoints(daemon):
    daemon.start()
    seqs = write_phase(daemon, "app", 0, 0)
    scored_all(daemon, seqs)
    (app,) = wait_for(lambda: burst_incidents(daemon, "app", 0), 30, "the burst's incident", daemon)
    status, raw = daemon.get("/api/incidents")                  # log text escaped for a page: no < > & as is
    assert status == 200 and "\\u003c*\\u003e" in raw and not set("<>&") & set(raw)
    refusals = [
        (("POST", "/admin/feedback", {"incident": app["id"], "verdict": "normal"}, None), 401, "bearer token"),
        (("POST", "/admin/feedback", {"incident": app["id"], "verdict": "normal"}, "wrong-token-0123456789"), 401,
         "bearer token"),
        (("POST", "/admin/feedback", {"incident": "0" * 16, "verdict": "normal"}, TOKEN), 400, "unknown incident"),
        (("POST", "/admin/feedback", {"template": "no such template <*>", "source": "app", "verdict": "normal"},
          TOKEN), 400, "unknown template"),
        (("POST", "/admin/feedback", {"incident": app["id"], "verdict": "maybe"}, TOKEN), 400, "verdict must be"),
        (("POST", "/admin/feedback", "not json", TOKEN), 400, "not JSON"),
        (("POST", "/admin/feedback", {"incident": app["id"], "verdict": "normal", "note": "x" * MAX_BODY}, TOKEN),
         413, "max_body_bytes"),
        (("PUT", "/admin/feedback", {"incident": app["id"], "verdict": "normal"}, TOKEN), 405, "takes GET or POST"),
        (("GET", "/api/incidents?limit=0", None, None), 400, "limit must be"),
        (("GET", "/api/incidents?since=soon", None, None), 400, "ISO 8601"),
        (("GET", "/api/incidents?status=closed", None, None), 400, "status must be"),
        (("GET", "/api/incidents?page=2", None, None), 400, "unknown query parameter"),
        (("GET", "/api/incidentz", None, None), 404, "not found"),
        (("POST", "/api/incidents", None, None), 405, "takes GET"),
        (("DELETE", "/api/incidents", None, None), 405, "takes GET"),
    ]
    for (method, path, body, token), status, reason in refusals:
        got, answer, headers = request(daemon, method, path, body, token=token)
        assert (got, reason in answer["error"]) == (status, True), (method, path, answer)
        if status == 405:
            assert headers["Allow"] in ("GET", "GET, POST")
    status, listed, _ = request(daemon, "GET", "/admin/feedback")
    assert status == 200 and listed["rules"] == []            # nothing was changed by a refusal
    requests = daemon.labelled("admin_requests_total")
    assert requests[(("action", "feedback"), ("status", "401"))] == 2
    assert requests[(("action", "feedback"), ("status", "400"))] == 4
    assert requests[(("action", "feedback"), ("status", "413"))] == 1
    assert daemon.labelled("feedback_total") == {(("verdict", v),): 0 for v in ("normal", "problem", "clear")}
    refused = daemon.labelled("feedback_refused_total")
    assert {r[0][1]: n for r, n in refused.items() if n} == {"unknown_incident": 1, "unknown_template": 1,
                                                             "invalid": 1}
