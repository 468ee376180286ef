"""The `slack` sink: each event as a Slack incoming-webhook message with blocks, short enough for a phone.

Slack reads `text` and `mrkdwn` fields as markup: `<!channel>` pings everyone, `<http://x|label>`
hides a link, `*`, `_`, `~` and backticks format. So every field that came from a log line is
escaped as Slack asks (`&`, `<`, `>` as entities) and shown inside code spans or a code block,
where formatting does not apply, with its backticks replaced by a look-alike (U+02CB) so it
cannot close them. The header is plain_text (never markup). Same HTTP rules as the webhook sink:
timeouts, no redirects, no link-local addresses unless allowed (alerting/httpsend.py).
"""
import json

from anomaly_detector.alerting import httpsend
from anomaly_detector.alerting.escape import one_line
from anomaly_detector.alerting.sinks.base import Sink, situation_text
from anomaly_detector.alerting.sinks.webhook import check_target

HEADER_CHARS = 150          # Slack's limit for a header block
SAMPLES_CHARS = 1500
GROUP_SECTIONS = 20         # incidents listed in a group message (Slack takes at most 50 blocks)
_ICON = {"opened": "\U0001F534", "updated": "\U0001F7E0", "resolved": "\u2705"}


def slack_escape(text):
    """Text safe inside a Slack code span or block: entities for & < >, no backtick to close it."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "\u02cb")


def code(text, limit=300):
    return "`%s`" % slack_escape(one_line(text, limit)) if str(text) else "-"


def message(event):
    """The incoming-webhook payload of an event."""
    inc = event["incident"]
    title = one_line(headline(event), HEADER_CHARS)
    samples = "\n".join(slack_escape(one_line(s, 300)) for s in inc.get("samples", []))[:SAMPLES_CHARS]
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": "*Reason*\n%s" % code(inc.get("reason", ""))},
            {"type": "mrkdwn", "text": "*Score*\n%s" % code(inc.get("score", ""))},
            {"type": "mrkdwn", "text": "*Expected*\n%s" % code(inc.get("expected", ""))},
            {"type": "mrkdwn", "text": "*Observed*\n%s" % code(inc.get("observed", ""))}]},
    ]
    if samples:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "```%s```" % samples}})
    if situation_text(event):
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "*Situation*\n%s" % code(situation_text(event), 1000)}})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": "incident %s \u00b7 event %s \u00b7 template %s" % (
            code(event["incident_id"]), code(event["id"]), code(inc.get("template_id", "")))}]})
    return {"text": slack_escape(title), "blocks": blocks}


def headline(event):
    """One line naming an event: icon, kind of event, severity, incident kind and source."""
    inc = event["incident"]
    kind = event["event"]
    return "%s %s %s: %s on %s" % (_ICON.get(kind, ""), kind.upper(), inc.get("severity", "warning"),
                                   inc.get("kind", "anomaly"), one_line(inc.get("source", ""), 60))


def group_message(events):
    """One message listing several events: a header with their count, then one section each (reason,
    score, first sample), up to GROUP_SECTIONS of them and a line saying how many more."""
    title = one_line("%d alerts: %s" % (len(events), ", ".join(sorted({e["event"] for e in events}))), HEADER_CHARS)
    blocks = [{"type": "header", "text": {"type": "plain_text", "text": title}}]
    for event in events[:GROUP_SECTIONS]:
        inc = event["incident"]
        sample = (inc.get("samples") or [""])[0]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "%s\n*Reason* %s *Score* %s\n%s" % (
            code(one_line(headline(event), HEADER_CHARS)), code(inc.get("reason", "")), code(inc.get("score", "")),
            code(sample))}})
    if len(events) > GROUP_SECTIONS:
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": "and %d more" % (len(events) - GROUP_SECTIONS)}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "events %s" % code(
        " ".join(e["id"] for e in events))}]})
    return {"text": slack_escape(title), "blocks": blocks}


class SlackSink(Sink):
    type = "slack"

    def __init__(self, name, url, timeout, allow_link_local):
        self.name, self.url, self.timeout, self.allow_link_local = name, url, timeout, allow_link_local

    def send(self, event):
        self._post(message(event))

    def send_group(self, events):
        self._post(group_message(events))

    def _post(self, payload):
        body = json.dumps(payload, separators=(",", ":")).encode()
        httpsend.post(self.url, body, {"Content-Type": "application/json", "User-Agent": "anomaly-detector"},
                      self.timeout, self.allow_link_local)


def build(name, section):
    check_target(section["url"], section["allow_link_local"])
    return SlackSink(name, section["url"], section["timeout_seconds"], section["allow_link_local"])
