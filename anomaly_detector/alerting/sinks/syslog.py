"""The `syslog` sink: each event as one RFC 5424 message to a syslog server (`url`).

`url` is udp://host:port, tcp://host:port (RFC 6587 octet counting, one connection kept open and
opened again after an error) or unix:///dev/log (a datagram socket). Facility local0; severity
crit for critical incidents, warning for the others, notice for resolved. The message is one line:
event, source, kind, reason, score and the first sample; log text has no control characters or
newlines (escape.one_line), and the structured data's values escape `"`, `\\` and `]` as RFC 5424
asks, so a hostile line cannot forge fields or a second message. Syslog has no acknowledgement: delivered
means handed to the socket (UDP may drop it; TCP loses what the kernel buffered when the
connection breaks), so use webhook or alertmanager where every alert must be confirmed.
"""
import os
import socket
import time
import urllib.parse
from datetime import datetime, timezone

from anomaly_detector.alerting.escape import one_line
from anomaly_detector.alerting.sinks.base import DeliveryError, Sink

FACILITY_LOCAL0 = 16
SEVERITY = {"critical": 2, "warning": 4}
NOTICE = 5
MAX_MESSAGE_BYTES = 2048       # RFC 5424 receivers must take 480 bytes and should take 2048
SD_ID = "anomaly@32473"        # the private enterprise number of RFC 5424's examples


def sd_value(text):
    return one_line(text, 200).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def format_message(event, hostname, clock=time.time):
    """The RFC 5424 message of an event, as bytes (cut to MAX_MESSAGE_BYTES)."""
    inc = event["incident"]
    samples = inc.get("samples") or [""]
    text = "%s %s incident on %s: %s (score %s) sample: %s" % (
        event["event"], inc.get("kind", "anomaly"), inc.get("source", ""), inc.get("reason", ""),
        inc.get("score", ""), samples[0])
    return (header(event, hostname, clock) + one_line(text, MAX_MESSAGE_BYTES)).encode()[:MAX_MESSAGE_BYTES]


def header(event, hostname, clock=time.time):
    """PRI, version, time, host, app, pid, msgid and structured data of an event's message, and a space."""
    inc = event["incident"]
    severity = NOTICE if event["event"] == "resolved" else SEVERITY.get(inc.get("severity"), 4)
    stamp = datetime.fromtimestamp(clock(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sd = '[%s event_id="%s" incident_id="%s" event="%s" source="%s" template_id="%s"]' % (
        SD_ID, sd_value(event["id"]), sd_value(event["incident_id"]), sd_value(event["event"]),
        sd_value(inc.get("source", "")), sd_value(inc.get("template_id", "")))
    return "<%d>1 %s %s anomaly-detector %d alert %s " % (FACILITY_LOCAL0 * 8 + severity, stamp,
                                                           one_line(hostname, 255).replace(" ", "-") or "-",
                                                           os.getpid(), sd)


def format_group(events, hostname, clock=time.time):
    """One RFC 5424 message listing several events: the first event's header and structured data, and a
    text naming each event (cut to MAX_MESSAGE_BYTES)."""
    first = events[0]
    critical = any(e["incident"].get("severity") == "critical" and e["event"] != "resolved" for e in events)
    lead = dict(first, incident=dict(first["incident"], severity="critical" if critical else "warning"),
                event="opened" if critical or any(e["event"] != "resolved" for e in events) else "resolved")
    head = header(lead, hostname, clock)
    text = "%d alerts: " % len(events) + "; ".join(
        "%s %s on %s (score %s, %s)" % (e["event"], e["incident"].get("kind", "anomaly"), e["incident"].get("source", ""),
                                        e["incident"].get("score", ""), e["id"]) for e in events)
    return (head + one_line(text, MAX_MESSAGE_BYTES)).encode()[:MAX_MESSAGE_BYTES]


class SyslogSink(Sink):
    type = "syslog"

    def __init__(self, name, url, timeout):
        self.name, self.timeout = name, timeout
        self.scheme, self.address = parse_url(url)
        self.hostname = socket.gethostname()
        self.sock = None

    def send(self, event):
        self._send(format_message(event, self.hostname))

    def send_group(self, events):
        self._send(format_group(events, self.hostname))

    def _send(self, data):
        try:
            if self.sock is None:
                self.sock = self._connect()
            if self.scheme == "tcp":
                self.sock.sendall(b"%d %s" % (len(data), data))
            else:
                self.sock.send(data)
        except socket.timeout:
            self.close()
            raise DeliveryError("timeout", "syslog %s: no progress within %.0f s"
                                % (self.address, self.timeout)) from None
        except OSError as exc:
            self.close()
            raise DeliveryError("connect", "syslog %s: %s" % (self.address, exc.strerror or exc)) from None

    def _connect(self):
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(self.timeout)
            sock.connect(self.address)
            return sock
        kind = socket.SOCK_STREAM if self.scheme == "tcp" else socket.SOCK_DGRAM
        family, _t, _p, _n, sockaddr = socket.getaddrinfo(*self.address, type=kind)[0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.timeout)
        sock.connect(sockaddr)
        return sock

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def parse_url(url):
    """(scheme, address) of udp://host:port, tcp://host:port or unix:///path; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return "unix", parts.path
    if parts.scheme in ("udp", "tcp") and parts.hostname:
        try:
            port = parts.port or 514
        except ValueError:
            raise ValueError("url = %r has a bad port" % url) from None
        return parts.scheme, (parts.hostname, port)
    raise ValueError("type = syslog needs url = udp://host:port, tcp://host:port or unix:///dev/log, found %r" % url)


def build(name, section):
    return SyslogSink(name, section["url"], section["timeout_seconds"])
