"""The `email` sink: each event as an e-mail with a plain-text and an HTML part, over SMTP.

smtp_security: `starttls` (default: the session is upgraded before anything else is sent, and a
server that does not offer STARTTLS is a failure, never a fallback to plain text), `tls` (implicit
TLS, port 465) or `none` (a local relay only). The server certificate is checked against the system
CAs or `smtp_ca_file`. With `smtp_username` the password is read from `smtp_password_file` at start
and reload, and AUTH happens only inside TLS. Log text is made one line for the Subject (no header
injection; the email package refuses a newline in a header anyway) and HTML-escaped for the HTML
part. The Message-ID is made from the event id, so a re-sent event is recognisably the same mail.
"""
import html
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from anomaly_detector.alerting.escape import clean, one_line
from anomaly_detector.alerting.noise import group_id
from anomaly_detector.alerting.sinks.base import DeliveryError, Sink, situation_text

FIELDS = (("Reason", "reason"), ("Source", "source"), ("Kind", "kind"), ("Score", "score"),
          ("Expected", "expected"), ("Observed", "observed"), ("Template", "template"))


def subject(event):
    inc = event["incident"]
    return one_line("[anomaly-detector] %s %s: %s on %s" % (event["event"].upper(), inc.get("severity", "warning"),
                                                             inc.get("kind", "anomaly"), inc.get("source", "")), 180)


def compose(event, sender, recipients):
    """The EmailMessage of an event: text/plain first, then text/html (multipart/alternative)."""
    inc = event["incident"]
    rows = [(label, str(inc.get(key, ""))) for label, key in FIELDS]
    samples = [clean(s, 500) for s in inc.get("samples", [])]
    text = "\n".join("%s: %s" % (label, one_line(value, 500)) for label, value in rows)
    text += "\n\nSample lines:\n" + "\n".join("  " + one_line(s, 500) for s in samples)
    situation = situation_text(event)
    if situation:
        text += "\n\n" + one_line(situation, 1000)
    text += "\n\nIncident %s, event %s (%s)\n" % (event["incident_id"], event["id"], event["event"])
    table = "".join("<tr><th align=\"left\">%s</th><td>%s</td></tr>" % (html.escape(label), html.escape(value))
                    for label, value in rows)
    body = ("<html><body><h3>%s</h3><table>%s</table><p>Sample lines:</p><pre>%s</pre>%s"
            "<p><small>Incident %s, event %s</small></p></body></html>"
            % (html.escape(subject(event)), table, html.escape("\n".join(samples)),
               "<p>%s</p>" % html.escape(one_line(situation, 1000)) if situation else "",
               html.escape(event["incident_id"]), html.escape(event["id"])))
    msg = EmailMessage()
    msg["Subject"] = subject(event)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = "<%s@anomaly-detector>" % one_line(event["id"], 100).replace(">", "")
    msg.set_content(text)
    msg.add_alternative(body, subtype="html")
    return msg


def compose_group(events, sender, recipients):
    """One mail listing several events: a subject with their count and the first, a section per event."""
    first = events[0]
    msg_subject = one_line("[anomaly-detector] %d alerts: %s" % (len(events), subject(first)[len("[anomaly-detector] "):]
                                                                 + (" and %d more" % (len(events) - 1))), 180)
    parts = [compose(e, sender, recipients) for e in events]
    text = "\n\n".join("== %s ==\n%s" % (subject(e), p.get_body(("plain",)).get_content()) for e, p in zip(events, parts))
    body = "<html><body>%s</body></html>" % "<hr>".join(
        p.get_body(("html",)).get_content().replace("<html><body>", "").replace("</body></html>", "") for p in parts)
    msg = EmailMessage()
    msg["Subject"] = msg_subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = "<%s@anomaly-detector>" % group_id(events)
    msg.set_content(text)
    msg.add_alternative(body, subtype="html")
    return msg


class EmailSink(Sink):
    type = "email"

    def __init__(self, name, host, port, security, sender, recipients, username, password, timeout, ca_file):
        self.name, self.host, self.port, self.security = name, host, port, security
        self.sender, self.recipients, self.timeout = sender, list(recipients), timeout
        self.username, self.password = username, password
        self.context = ssl.create_default_context(cafile=ca_file or None)

    def send(self, event):
        self._send(compose(event, self.sender, self.recipients))

    def send_group(self, events):
        self._send(compose_group(events, self.sender, self.recipients))

    def _send(self, msg):
        where = "smtp %s:%d" % (self.host, self.port)
        try:
            with self._session() as smtp:
                if self.username:
                    smtp.login(self.username, self.password)
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError("auth", "%s: authentication refused: %s" % (where, exc.smtp_code)) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError("connect", "%s: %s" % (where, exc)) from None
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise DeliveryError("rejected" if permanent else "smtp_4xx",
                                "%s answered %d %s" % (where, exc.smtp_code, exc.smtp_error[:200]),
                                retry=not permanent) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError("rejected", "%s refused every recipient: %s" % (where, sorted(exc.recipients)),
                                retry=False) from None
        except (socket.timeout, TimeoutError):
            raise DeliveryError("timeout", "%s: no answer within %.0f s" % (where, self.timeout)) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError("connect", "%s: %s" % (where, getattr(exc, "strerror", None) or exc)) from None
        if refused:
            raise DeliveryError("rejected", "%s refused %s" % (where, sorted(refused)), retry=False)

    def _session(self):
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.starttls(context=self.context)   # SMTPNotSupportedError when not offered: no plain fallback
        except BaseException:
            smtp.close()
            raise
        return smtp


def read_password(path):
    try:
        with open(path) as f:
            password = f.read().strip()
    except OSError as exc:
        raise ValueError("smtp_password_file %s: %s" % (path, exc.strerror or exc)) from None
    if not password:
        raise ValueError("smtp_password_file %s is empty" % path)
    return password


def build(name, section):
    if not section["from_address"] or not section["to_addresses"]:
        raise ValueError("type = email needs from_address and to_addresses")
    if section["smtp_username"] and not section["smtp_password_file"]:
        raise ValueError("smtp_username needs smtp_password_file")
    if section["smtp_username"] and section["smtp_security"] == "none":
        raise ValueError("smtp_username with smtp_security = none would send the password in clear")
    password = read_password(section["smtp_password_file"]) if section["smtp_username"] else ""
    return EmailSink(name, section["smtp_host"], section["smtp_port"], section["smtp_security"],
                     section["from_address"], section["to_addresses"], section["smtp_username"], password,
                     section["timeout_seconds"], section["smtp_ca_file"])
