"""Sinks (alerting/sinks/) against real local HTTP servers: file, webhook (Standard Webhooks signature,
no redirects, timeouts, link-local refused), alertmanager (v2 payload, re-send, resolve); the alerter's
per-sink delivery order across failures and its back-off."""
import base64
import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from anomaly_detector.alerting.alerter import SinkRunner, backoff
from anomaly_detector.alerting.outbox import read_checkpoint
from anomaly_detector.alerting.sinks import SinkConfigError, build_sink
from anomaly_detector.alerting.sinks.alertmanager import AlertmanagerSink
from anomaly_detector.alerting.sinks.base import DeliveryError, Sink
from anomaly_detector.alerting.sinks.email import compose
from anomaly_detector.alerting.sinks.webhook import WebhookSink


def event(n, kind="opened", incident="abc", writer="worker-0"):
    return {"id": "%s-%d" % (incident, n), "event": kind, "incident_id": incident, "rev": n, "at": 1000.0 + n,
            "seq": n + 1, "writer": writer,
            "incident": {"source": "app", "kind": "rule_burst", "reason": "error rule: 3 lines", "score": 70.0,
                         "severity": "warning", "template_id": 4, "template": "disk <*> failed",
                         "expected": "0 per window", "observed": "3", "samples": ["disk sda failed"],
                         "first_seen": 990.0}}


def section(**keys):
    base = {"type": "webhook", "url": "", "path": "", "secret_file": "", "timeout_seconds": 2.0, "min_score": 0.0,
            "retry_initial_seconds": 0.1, "retry_max_seconds": 0.2, "allow_link_local": False, "resend_seconds": 60.0}
    return dict(base, **keys)


class Receiver:
    """A real HTTP server on 127.0.0.1; `answers` is a list of statuses to give (then 200)."""

    def __init__(self, answers=(), delay=0.0, location=None):
        self.requests, self.answers, self.delay = [], list(answers), delay
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), body))
                time.sleep(outer.delay)
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(*args, **kwargs):
        made.append(Receiver(*args, **kwargs))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_file_sink_appends_json_lines(tmp_path):
    sink = build_sink("f", section(type="file", path=str(tmp_path / "a" / "alerts.jsonl")))
    sink.send(event(0))
    sink.send(event(1, "resolved"))
    lines = [json.loads(x) for x in open(tmp_path / "a" / "alerts.jsonl")]
    assert [x["id"] for x in lines] == ["abc-0", "abc-1"]
    with pytest.raises(SinkConfigError, match="type = file needs path"):
        build_sink("f", section(type="file"))


def test_webhook_signs_standard_webhooks_and_keeps_the_id_on_retries(tmp_path, receiver):
    secret = b"0123456789abcdef0123456789abcdef"
    (tmp_path / "secret").write_text("whsec_" + base64.b64encode(secret).decode() + "\n")
    r = receiver(answers=[503])
    sink = build_sink("w", section(url=r.url + "/hook", secret_file=str(tmp_path / "secret")))
    with pytest.raises(DeliveryError) as failed:
        sink.send(event(0))
    assert failed.value.reason == "http_5xx" and failed.value.retry
    sink.send(event(0))
    assert [req[2] for req in r.requests][0] == r.requests[1][2]
    for path, headers, body in r.requests:
        assert path == "/hook" and headers["webhook-id"] == "abc-0"
        signed = b"%s.%s.%s" % (headers["webhook-id"].encode(), headers["webhook-timestamp"].encode(), body)
        expected = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
        assert headers["webhook-signature"] == "v1," + expected
        assert json.loads(body)["event"] == "opened"


def test_webhook_refuses_redirects_4xx_link_local_and_times_out(tmp_path, receiver):
    moved = receiver(answers=[302], location="http://169.254.169.254/")
    with pytest.raises(DeliveryError) as err:
        WebhookSink("w", moved.url, None, 2.0, False).send(event(0))
    assert err.value.reason == "redirect" and len(moved.requests) == 1
    refused = receiver(answers=[400])
    with pytest.raises(DeliveryError) as err:
        WebhookSink("w", refused.url, None, 2.0, False).send(event(0))
    assert err.value.reason == "rejected" and not err.value.retry
    slow = receiver(delay=1.5)
    with pytest.raises(DeliveryError) as err:
        WebhookSink("w", slow.url, None, 1.0, False).send(event(0))
    assert err.value.reason == "timeout"
    for url in ("http://169.254.169.254/latest", "http://[fe80::1]/x", "http://100.100.100.200/"):
        with pytest.raises(SinkConfigError, match="allow_link_local"):
            build_sink("w", section(url=url))
    with pytest.raises(SinkConfigError, match="secret_file"):
        build_sink("w", section(url=moved.url, secret_file=str(tmp_path / "missing")))


def test_alertmanager_payload_resend_and_resolve(receiver):
    r = receiver()
    clock = [5000.0]
    sink = AlertmanagerSink("am", r.url + "/", 2.0, False, 60.0, clock=lambda: clock[0])
    sink.send(event(0))
    path, _headers, body = r.requests[-1]
    assert path == "/api/v2/alerts"
    (alert,) = json.loads(body)
    assert alert["labels"] == {"alertname": "LogAnomalyIncident", "severity": "warning", "source": "app",
                               "template_id": "4", "kind": "rule_burst", "incident_id": "abc"}
    assert alert["annotations"]["expected"] == "0 per window" and alert["annotations"]["samples"] == "disk sda failed"
    assert alert["startsAt"] == "1970-01-01T00:16:30.000Z" and alert["endsAt"] == "1970-01-01T01:27:20.000Z"
    assert sink.tick(5030.0) == 5060.0 and len(r.requests) == 1      # not yet due
    sink.tick(5061.0)
    assert len(r.requests) == 2 and json.loads(r.requests[-1][2])[0]["endsAt"] == "1970-01-01T01:28:21.000Z"
    restored = AlertmanagerSink("am", r.url, 2.0, False, 60.0, clock=lambda: clock[0])
    restored.restore(sink.state())
    restored.tick(5062.0)                                            # a restarted alerter re-sends at once
    assert len(r.requests) == 3
    clock[0] = 5100.0
    restored.send(event(1, "resolved"))
    assert json.loads(r.requests[-1][2])[0]["endsAt"] == "1970-01-01T01:25:00.000Z"
    assert restored.tick(5200.0) is None and len(r.requests) == 4


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half():
    assert backoff(1, 1.0, 300.0, rng=lambda: 0.0) == 0.5
    assert backoff(4, 1.0, 300.0, rng=lambda: 1.0) == 8.0
    assert backoff(20, 1.0, 300.0, rng=lambda: 0.5) == 225.0


class Flaky(Sink):
    """A sink that fails its first `failures` sends (tick, state, restore and close: the base's)."""
    name, type = "flaky", "test"

    def __init__(self, failures):
        self.failures, self.got = failures, []

    def send(self, event):
        if self.failures:
            self.failures -= 1
            raise DeliveryError("connect", "down")
        self.got.append(event["id"])

    def send_group(self, events):
        if self.failures:
            self.failures -= 1
            raise DeliveryError("connect", "down")
        self.got.append([e["id"] for e in events])


def test_a_runner_delivers_in_order_across_failures_and_checkpoints(tmp_path):
    sink = Flaky(failures=3)
    stats = {"delivered": 0, "failed": {}}
    runner = SinkRunner(sink, str(tmp_path), section(retry_initial_seconds=0.1, retry_max_seconds=0.2), stats)
    runner.thread.start()
    runner.add([event(i, incident="i%d" % i) for i in range(5)])
    deadline = time.monotonic() + 20
    while len(sink.got) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    runner.thread.join(5)
    assert sink.got == ["i%d-%d" % (i, i) for i in range(5)]
    assert stats == {"delivered": 5, "failed": {"connect": 3}, "notifications": 5}
    assert read_checkpoint(str(tmp_path), "flaky")["writers"] == {"worker-0": 5}
    again = SinkRunner(Flaky(0), str(tmp_path), section(), {"delivered": 0, "failed": {}})
    again.add([event(i, incident="i%d" % i) for i in range(6)])
    assert [e["seq"] for e in again.queue] == [6]                 # past the checkpoint only


def test_slack_blocks_escape_log_text(receiver):
    r = receiver()
    hostile = event(0)
    hostile["incident"]["samples"] = ["<!channel> *bold* ```x``` <http://evil|click> & done"]
    hostile["incident"]["reason"] = "error rule: `rm -rf` <@U123>"
    build_sink("chat", section(type="slack", url=r.url + "/services/T/B/X")).send(hostile)
    path, _headers, body = r.requests[-1]
    payload = json.loads(body)
    assert path == "/services/T/B/X"
    assert payload["blocks"][0]["type"] == "header" and payload["blocks"][0]["text"]["type"] == "plain_text"
    text = json.dumps(payload)
    assert "<!channel>" not in text and "<http" not in text and "<@U123>" not in text
    samples = payload["blocks"][2]["text"]["text"]
    assert samples.startswith("```") and samples.endswith("```") and samples.count("```") == 2
    assert "&lt;!channel&gt; *bold*" in samples and "&amp; done" in samples
    reason = payload["blocks"][1]["fields"][0]["text"]
    assert reason.count("`") == 2 and "&lt;@U123&gt;" in reason
    assert len(payload["blocks"][0]["text"]["text"]) <= 150


def test_syslog_sends_one_rfc5424_line_per_event_over_udp_and_tcp(tmp_path):
    import socket as sk
    udp = sk.socket(sk.AF_INET, sk.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    hostile = event(0)
    hostile["incident"]["severity"] = "critical"
    hostile["incident"]["samples"] = ['evil"] line\n<13>1 - forged - - - - second message\x1b[2J']
    hostile["incident"]["source"] = 'app"]x'
    sink = build_sink("log", section(type="syslog", url="udp://127.0.0.1:%d" % udp.getsockname()[1]))
    sink.send(hostile)
    data = udp.recv(4096).decode()
    assert data.startswith("<130>1 ") and "\n" not in data and "\x1b" not in data
    assert 'source="app\\"\\]x"' in data and 'event_id="abc-0"' in data
    resolved = event(1, "resolved")
    sink.send(resolved)
    assert udp.recv(4096).decode().startswith("<133>1 ")
    udp.close()
    server = sk.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    tcp = build_sink("log", section(type="syslog", url="tcp://127.0.0.1:%d" % server.getsockname()[1]))
    tcp.send(event(0))
    tcp.send(event(1, "resolved"))
    conn, _ = server.accept()
    conn.settimeout(5)
    received = b""
    while received.count(b"<1") < 2:
        received += conn.recv(65536)
    length, rest = received.split(b" ", 1)
    assert rest[:int(length)].startswith(b"<132>1 ") and rest[int(length):].split(b" ", 1)[1].startswith(b"<133>1 ")
    conn.close()
    server.close()
    with pytest.raises(DeliveryError) as err:
        tcp.send(event(2))
        tcp.send(event(3))
        tcp.send(event(4))
    assert err.value.reason == "connect"
    with pytest.raises(SinkConfigError, match="udp://host:port"):
        build_sink("log", section(type="syslog", url="http://x"))


def test_token_bucket_allows_a_minutes_worth_then_the_rate():
    from anomaly_detector.alerting.alerter import TokenBucket
    bucket = TokenBucket(6, now=0.0)
    assert all(bucket.take(0.0) for _ in range(6)) and not bucket.take(0.0)
    assert bucket.wait() == pytest.approx(10.0)
    assert not bucket.take(9.0) and bucket.take(10.0) and not bucket.take(10.0)
    assert bucket.take(1000.0) and bucket.tokens == pytest.approx(5.0)     # capped at a minute's worth


def test_a_rate_limited_sink_holds_the_rest_in_order_and_counts_them(tmp_path):
    sink = Flaky(failures=0)
    stats = {"delivered": 0, "failed": {}, "throttled": 0}
    runner = SinkRunner(sink, str(tmp_path), section(), stats, rate_limit_per_minute=2)
    runner.thread.start()
    runner.add([event(i, incident="i%d" % i) for i in range(4)])
    deadline = time.monotonic() + 10
    while len(sink.got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    runner.stop()
    runner.thread.join(5)
    assert sink.got == ["i0-0", "i1-1"]                  # the next waits ~30 s for its token
    # i2 was taken from the outbox and waits in the sink's checkpoint (its policy state), i3 in the outbox
    assert stats["throttled"] == 1 and [e["id"] for e in runner.queue] == ["i3-3"]
    assert [[e["id"] for e in note] for note in runner.policy.outgoing] == [["i2-2"]]
    checkpoint = read_checkpoint(str(tmp_path), "flaky")
    # for the outbox's bound i2 is not delivered yet (seq 3); it is not read twice either (taken: 3)
    assert checkpoint["writers"] == {"worker-0": 2} and checkpoint["state"]["taken"] == {"worker-0": 3}
    assert checkpoint["state"]["noise"]["outgoing"][0][0]["id"] == "i2-2"
    again = SinkRunner(Flaky(0), str(tmp_path), section(), {"delivered": 0, "failed": {}})
    assert [e["id"] for e in again.policy.due(time.time())] == ["i2-2"]      # restarted: it goes first
    again.add([event(i, incident="i%d" % i) for i in range(5)])
    assert [e["seq"] for e in again.queue] == [4, 5]


def test_a_runner_sends_incidents_opened_together_as_one_group_and_checkpoints_the_wait(tmp_path):
    from anomaly_detector.alerting.noise import SinkPolicy
    sink = Flaky(failures=1)
    stats = {"delivered": 0, "failed": {}}
    now = time.time()
    runner = SinkRunner(sink, str(tmp_path), section(), stats, policy=SinkPolicy(stats, group_wait=1.0))
    opened = [dict(event(i, incident="i%d" % i), at=now + i * 0.1) for i in range(3)]
    resolved = dict(event(3, "resolved", incident="i0"), at=now + 0.4)
    runner.add(opened + [resolved])
    runner._take(time.time())                   # what the thread does first: the three wait for the group
    assert [e["id"] for e in runner.policy.group] == ["i0-0", "i1-1", "i2-2"]
    assert read_checkpoint(str(tmp_path), "flaky")["state"]["noise"]["group"][2]["id"] == "i2-2"
    runner.thread.start()
    deadline = time.monotonic() + 20
    while len(sink.got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    runner.thread.join(5)
    assert sink.got == [["i0-0", "i1-1", "i2-2"], "i0-3"]       # after one failed attempt, then in order
    assert stats["delivered"] == 4 and stats["notifications"] == 2 and stats["failed"] == {"connect": 1}
    assert read_checkpoint(str(tmp_path), "flaky")["writers"] == {"worker-0": 4}


def test_a_webhook_group_is_one_signed_post_whose_id_is_the_groups(receiver):
    from anomaly_detector.alerting.noise import group_id
    r = receiver()
    events = [event(0, incident="a"), event(1, incident="b")]
    WebhookSink("hook", r.url + "/h", b"k", 2.0, False).send_group(events)
    _path, headers, body = r.requests[-1]
    payload = json.loads(body)
    assert headers["webhook-id"] == payload["id"] == group_id(events)
    assert payload["event"] == "group" and payload["count"] == 2 and [e["id"] for e in payload["events"]] == ["a-0", "b-1"]
    digest = hmac.new(b"k", b"%s.%s.%s" % (payload["id"].encode(), headers["webhook-timestamp"].encode(), body),
                      hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


STORY = {"id": "s-1", "sources": ["app", "db"], "incidents": ["abc", "def"], "confidence": 0.95,
         "first_cause": {"source": "db", "template": "lock wait timeout on <*>", "onset": 990.0},
         "evidence": ["db: critical rule from 00:16:30", "app: never-seen template from 00:17:00", "app -> db: names db"]}


def joined(n, kind="updated"):
    """An event of incident "def" (app) folded into the situation alert of "abc" (alerting/noise.py)."""
    e = event(n, kind, incident="abc")
    e["incident"] = dict(e["incident"], source="db-client", kind="new_template", template_id=9)
    return dict(e, folded_from="def", situation=STORY)


def test_alertmanager_keeps_a_situation_one_alert_as_incidents_join_and_resolve(receiver):
    r = receiver()
    sink = AlertmanagerSink("am", r.url, 2.0, False, 60.0, clock=lambda: 5000.0)
    sink.send(event(0))
    lead = json.loads(r.requests[-1][2])[0]
    sink.send(joined(1))
    update = json.loads(r.requests[-1][2])[0]
    assert update["labels"] == lead["labels"] and update["startsAt"] == lead["startsAt"]
    assert update["annotations"]["situation"].startswith("situation s-1: first cause db (95% sure); db: critical")
    sink.send(joined(2, "resolved"))
    done = json.loads(r.requests[-1][2])[0]
    assert done["labels"] == lead["labels"] and not sink.active


def test_slack_and_email_tell_the_situation(receiver):
    r = receiver()
    build_sink("chat", section(type="slack", url=r.url + "/services/T/B/X")).send(joined(1))
    blocks = json.loads(r.requests[-1][2])["blocks"]
    assert any("*Situation*" in b.get("text", {}).get("text", "") and "first cause db" in b["text"]["text"]
               for b in blocks)
    msg = compose(joined(1), "ad@example.com", ["ops@example.com"])
    assert "situation s-1: first cause db (95% sure)" in msg.get_body(("plain",)).get_content()
    assert "first cause db" in msg.get_body(("html",)).get_content()
    assert "situation" not in compose(event(0), "ad@example.com", ["ops@example.com"]).get_body(("plain",)).get_content()
