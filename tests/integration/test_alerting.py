"""Alerting end to end on the real daemon: FATAL bursts in a tailed file become incidents, the workers
append their events to the outbox and the alerter delivers them to a real local webhook receiver
(which checks the Standard Webhooks signature) and to a real Alertmanager (Debian's
prometheus-alertmanager), both on 127.0.0.1 and free ports."""
import base64
import glob
import hashlib
import hmac
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.integration.daemon_harness import Daemon, free_port, wait_for

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
SECRET = b"integration-secret-0123456789"
FAST_RETRY = "retry_initial_seconds = 0.2\nretry_max_seconds = 2\n"   # a one-minute outage


def write_phase(path, start, first_seq, fatal=True, seconds=400):
    """`seconds` lines one second apart from minute `start` of the day, six of them FATAL at 300..305 when
    `fatal`; returns the next seq."""
    with open(path, "a") as f:
        for i in range(seconds):
            t = start * 60 + i
            level = "FATAL" if fatal and 300 <= i < 306 else "INFO"
            f.write("2026-03-02T%02d:%02d:%02d.000Z %s worker-%d took %d ms seq=%d\n"
                    % (t // 3600, t // 60 % 60, t % 60, level, i % 3, 20 + i % 7, first_seq + i))
    return first_seq + seconds


class Receiver:
    """A webhook receiver on a fixed port that verifies every request's signature."""

    def __init__(self, port):
        self.events, self.bad = [], []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                msg_id, stamp = self.headers["webhook-id"], self.headers["webhook-timestamp"]
                digest = hmac.new(SECRET, b"%s.%s.%s" % (msg_id.encode(), stamp.encode(), body), hashlib.sha256)
                if self.headers["webhook-signature"] != "v1," + base64.b64encode(digest.digest()).decode():
                    outer.bad.append(msg_id)
                event = json.loads(body)
                if event["id"] != msg_id:
                    outer.bad.append(msg_id)
                outer.events.append(event)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Collector:
    """Any JSON POST, answered 200 "ok" as Slack does (a webhook receiver too: any 2xx is delivered)."""

    def __init__(self):
        self.bodies = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def outbox_events(daemon):
    found = []
    for path in glob.glob(os.path.join(daemon.dir, "state", "outbox", "*.jsonl")):
        found += [json.loads(line) for line in open(path, "rb") if line.endswith(b"\n")]
    return sorted(found, key=lambda e: (e["at"], e["writer"], e["seq"]))   # the alerter's order


def hook_down_config(tmp_path, port, chat_url, retry=FAST_RETRY, outbox="outbox_max_alerts = 1000\n"):
    """[detection] and [alerting] for a signed webhook sink on `port` (down until a Receiver starts there), a
    file archive and a Slack stand-in at `chat_url`; the secret is written to tmp_path/secret. Every event is
    its own notification, as written: noise control is covered by test_alerting_noise.py."""
    (tmp_path / "secret").write_bytes(SECRET)
    return """[detection]
incident_window_seconds = 30
[alerting]
%sdedup_window_seconds = 0
group_wait_seconds = 0
[[hook]]
type = webhook
url = http://127.0.0.1:%d/hook
secret_file = %s
timeout_seconds = 2
%s[[archive]]
type = file
path = %s
[[chat]]
type = slack
url = %s/services/T0/B0/x
""" % (outbox, port, tmp_path / "secret", retry, tmp_path / "alerts.jsonl", chat_url)


def check_received(receiver, written):
    """Assert the receiver got every event `written` (outbox_events), all signed, at most 1% (or one) twice,
    each incident's events in order: opened first, revs without gaps. Returns the unique events in their
    order of first arrival and the number of duplicates."""
    got = [e["id"] for e in receiver.events]
    duplicates = len(got) - len(set(got))
    assert not receiver.bad
    assert set(got) == {e["id"] for e in written}
    assert duplicates <= max(1, len(got) // 100)
    per_incident = {}
    for e in receiver.events:
        per_incident.setdefault(e["incident_id"], []).append(e["rev"])
    for revs in per_incident.values():
        assert sorted(set(revs)) == list(range(len(set(revs))))
        assert [r for i, r in enumerate(revs) if r not in revs[:i]] == sorted(set(revs))
    return list({e["id"]: e for e in receiver.events}.values()), duplicates


def test_webhook_down_through_incidents_and_a_restart_gets_every_alert_in_order_signed(tmp_path):
    port = free_port()   # nobody listens there until the receiver starts
    chat = Collector()   # a Slack stand-in that is up all along: the webhook being down must not hold it back
    extra = hook_down_config(tmp_path, port, chat.url)
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")
    receiver = None
    try:
        daemon.start()
        seq = write_phase(app, 0, 0)
        daemon.wait_scored(seq, 120)
        wait_for(lambda: any(e["event"] == "resolved" for e in outbox_events(daemon)), 60, daemon)
        seq = write_phase(app, 7, seq, seconds=310)   # the second burst's incident is still open at the restart
        daemon.wait_scored(seq, 120)
        wait_for(lambda: any("seq=700" in str(e["incident"]["samples"]) for e in outbox_events(daemon)), 60, daemon)
        assert daemon.stop() == 0
        restarted = time.time()
        daemon.start()
        seq = write_phase(app, 14, seq)
        daemon.wait_scored(seq, 120)
        wait_for(lambda: daemon.labelled("alerts_failed_total").get((("reason", "connect"), ("sink", "hook"))), 30,
                 daemon)
        written = outbox_events(daemon)
        archive = tmp_path / "alerts.jsonl"
        # the other sinks delivered everything meanwhile, in order
        wait_for(lambda: archive.exists() and len(archive.read_text().splitlines()) >= len(written)
                 and len(chat.bodies) >= len(written), 30, daemon)
        written = outbox_events(daemon)
        assert [json.loads(x)["id"] for x in archive.read_text().splitlines()] == [e["id"] for e in written]
        assert len(chat.bodies) == len(written)
        assert all(b["blocks"][0]["type"] == "header" for b in chat.bodies)
        assert daemon.metric("alert_queue_size") >= 1
        assert daemon.metric("alert_oldest_undelivered_age_seconds") > 0
        assert daemon.metric("alert_outbox_bytes") > 0
        receiver = Receiver(port)
        wait_for(lambda: len({e["id"] for e in receiver.events}) >= len({e["id"] for e in written}), 60, daemon)
        written = outbox_events(daemon)
        unique, _ = check_received(receiver, written)
        got = [e["id"] for e in receiver.events]
        opened = [e["incident_id"] for e in unique if e["event"] == "opened"]
        resolved = [e["incident_id"] for e in unique if e["event"] == "resolved"]
        assert len(opened) == len(set(opened)) >= 3 and len(resolved) == len(set(resolved)) >= 3
        # the incident open across the restart kept its id: opened before, resolved after, never twice
        (second,) = {e["incident_id"] for e in unique if "seq=700" in str(e["incident"]["samples"])}
        events = [e for e in unique if e["incident_id"] == second]
        assert events[0]["event"] == "opened" and events[0]["at"] < restarted
        assert events[-1]["event"] == "resolved" and events[-1]["at"] > restarted
        assert all(e["incident"]["source"] == "app" for e in receiver.events)
        wait_for(lambda: daemon.metric("alert_queue_size") == 0, 30, daemon)
        assert daemon.labelled("alerts_delivered_total")[(("sink", "hook"),)] >= len(set(got))
        assert daemon.metric("alerts_generated_total") >= 1
        assert daemon.metric("alert_oldest_undelivered_age_seconds") == 0
    finally:
        daemon.stop()
        chat.close()
        if receiver is not None:
            receiver.close()


@pytest.mark.skipif(not os.path.exists(ALERTMANAGER),
                    reason="%s not installed (Debian package prometheus-alertmanager)" % ALERTMANAGER)
def test_a_fatal_burst_fires_in_alertmanager_and_resolves_after(tmp_path):
    am_port = free_port()
    (tmp_path / "am.yml").write_text("route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n")
    am = subprocess.Popen([ALERTMANAGER, "--config.file=%s" % (tmp_path / "am.yml"),
                           "--storage.path=%s" % (tmp_path / "am-data"),
                           "--web.listen-address=127.0.0.1:%d" % am_port, "--cluster.listen-address="],
                          stdout=open(tmp_path / "am.log", "wb"), stderr=subprocess.STDOUT)
    # resolve_wait_seconds (30 s by default; test_alerting_noise.py covers it) would hold the resolved back
    extra = """[detection]
incident_window_seconds = 30
[alerting]
resolve_wait_seconds = 1
[[am]]
type = alertmanager
url = http://127.0.0.1:%d
resend_seconds = 10
retry_initial_seconds = 0.2
retry_max_seconds = 2
""" % am_port
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")

    def ours():
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/api/v2/alerts" % am_port, timeout=5) as resp:
                alerts = json.loads(resp.read())
        except OSError:
            return None
        return [a for a in alerts if a["labels"].get("alertname") == "LogAnomalyIncident"]

    try:
        daemon.start()
        seq = write_phase(app, 0, 0, seconds=310)          # the burst, and no line for a window after it
        daemon.wait_scored(seq, 120)
        firing = wait_for(ours, 60, daemon)
        alert = firing[0]
        assert alert["status"]["state"] == "active"
        assert alert["labels"]["severity"] in ("critical", "warning") and alert["labels"]["source"] == "app"
        assert "template_id" in alert["labels"] and "seq=300" in alert["annotations"]["samples"]
        assert {"expected", "observed", "summary"} <= set(alert["annotations"])
        os.kill(daemon.process.pid, signal.SIGHUP)          # a reload keeps the incident and its alert
        daemon.wait_healthy(60)
        wait_for(lambda: "reloaded" in daemon.log_tail(200), 30, daemon, "the reload")
        ends = ours()[0]["endsAt"]
        # re-sent after the reload (within resend_seconds): Alertmanager holds a later endsAt, still firing
        again = wait_for(lambda: (lambda now: now if now and now[0]["endsAt"] != ends else None)(ours()), 30, daemon,
                         "a re-send after the reload")
        assert [a["labels"]["incident_id"] for a in again] == [alert["labels"]["incident_id"]]
        assert again[0]["status"]["state"] == "active"
        assert daemon.labelled("alerts_delivered_total")[(("sink", "am"),)] >= 1
        assert "reloaded" in daemon.log_tail(200)
        write_phase(app, 7, seq, fatal=False, seconds=60)    # event time moves on: the incident closes
        wait_for(lambda: ours() == [], 60, daemon)
        wait_for(lambda: daemon.metric("alert_queue_size") == 0, 10, daemon)   # the stats file, within 0.2 s
    finally:
        daemon.stop()
        am.terminate()
        am.wait(10)
        shutil.rmtree(tmp_path / "am-data", ignore_errors=True)


def test_an_incident_reaches_a_real_smtp_server_as_mail_with_both_parts_within_the_rate_limit(tmp_path):
    pytest.importorskip("aiosmtpd", reason="aiosmtpd (the test extra) is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    import email
    import email.policy
    import ssl

    from aiosmtpd.controller import Controller

    from tests.unit.test_alert_email import Inbox, authenticator, certificate

    key, cert = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
                      authenticator=authenticator, auth_require_tls=True)
    smtp.start()
    (tmp_path / "password").write_text("s3cret\n")
    # Two incidents (four events, each its own mail: no grouping, no dedup) against three mails a minute: three
    # go at once, the fourth waits 20 s for its token (one mail a minute would make that wait 60 s).
    extra = """[detection]
incident_window_seconds = 30
[alerting]
rate_limit_per_minute = 3
dedup_window_seconds = 0
group_wait_seconds = 0
[[mail]]
type = email
smtp_host = 127.0.0.1
smtp_port = %d
smtp_ca_file = %s
smtp_username = alerts
smtp_password_file = %s
from_address = detector@example.com
to_addresses = oncall@example.com,
""" % (smtp.port, cert, tmp_path / "password")
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")
    try:
        daemon.start()
        seq = write_phase(app, 0, 0)
        seq = write_phase(app, 7, seq)
        daemon.wait_scored(seq, 120)
        # three mails at once, the fourth (the second resolved) waits for its token
        wait_for(lambda: len(inbox.messages) >= 3, 60, daemon)
        wait_for(lambda: daemon.labelled("alerts_throttled_total").get((("sink", "mail"),)) == 1, 30, daemon)
        assert daemon.metric("alert_queue_size") == 1 and len(inbox.messages) == 3
        assert "rate_limit_per_minute = 3 reached; 1 alerts wait in the outbox" in daemon.log_tail(200)
        wait_for(lambda: len(inbox.messages) >= 4, 60, daemon)
        mails = [email.message_from_bytes(m[2], policy=email.policy.default) for m in inbox.messages]
        assert [m["Subject"].split()[1] for m in mails] == ["OPENED", "RESOLVED", "OPENED", "RESOLVED"]
        assert all(m[3] and m[1] == ["oncall@example.com"] for m in inbox.messages)
        for mail, burst in zip(mails, ("seq=300", "seq=300", "seq=700", "seq=700")):
            assert burst in mail.get_body(("plain",)).get_content()
            assert burst in mail.get_body(("html",)).get_content()
        # the counters reach /metrics through the alerter's stats file, rewritten within 0.2 s
        wait_for(lambda: daemon.labelled("alerts_delivered_total")[(("sink", "mail"),)] == 4, 10, daemon)
    finally:
        daemon.stop()
        smtp.stop()


def test_the_outbox_holds_its_bound_while_the_sink_is_down(tmp_path):
    extra = """[detection]
incident_window_seconds = 30
[alerting]
outbox_max_alerts = 16
[[hook]]
type = webhook
url = http://127.0.0.1:%d/never
retry_initial_seconds = 0.2
retry_max_seconds = 1
""" % free_port()
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")
    try:
        daemon.start()
        seq = 0
        for phase in range(12):                    # twelve incidents, opened and resolved: 24 events
            seq = write_phase(app, 7 * phase, seq)
        daemon.wait_scored(seq, 180)
        wait_for(lambda: (daemon.labelled("alerts_dropped_total") or {}).get((("reason", "outbox_full"),), 0) >= 8,
                 60, daemon)
        held = outbox_events(daemon)
        assert len(held) <= 16
        assert daemon.metric("alerts_generated_total") >= 24
        assert "outbox full" in daemon.log_tail(400)
        # what is left is the newest, numbered on from what was dropped
        seqs = [e["seq"] for e in held]
        assert seqs == sorted(seqs) and seqs[-1] == daemon.metric("alerts_generated_total")
    finally:
        daemon.stop()
