"""Parse one syslog message, RFC 5424 or RFC 3164 (BSD), into priority, time, host, app and text.

The syslog input (UDP/TCP) and records.RecordParser call parse_syslog on sanitised text;
timestamps go through timestamps.TimestampParser so year-less BSD stamps get a year.
"""
import re

from anomaly_detector.parsing.batch import (
    LEVEL_CRITICAL,
    LEVEL_DEBUG,
    LEVEL_ERROR,
    LEVEL_INFO,
    LEVEL_NOTICE,
    LEVEL_WARNING,
)
from anomaly_detector.parsing.timestamps import TimestampParser

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
              "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
SEVERITY_LEVEL = (LEVEL_CRITICAL, LEVEL_CRITICAL, LEVEL_CRITICAL, LEVEL_ERROR,
                  LEVEL_WARNING, LEVEL_NOTICE, LEVEL_INFO, LEVEL_DEBUG)

_PRI = re.compile(r"<(\d{1,3})>")
_V5424 = re.compile(r"([1-9]\d?) ")
_TOKEN = re.compile(r"(\S+)(?: |$)")
_BSD_TIME = re.compile(r"([A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}(?:\.\d+)?|"
                       r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?)(?: |$)")
_TAG = re.compile(r"([^\s\[\]:]{1,48})(?:\[([^\]\s]{0,32})\])?:(?: |$)")
_SD_ELEMENT = re.compile(r'\[([^\s=\]"]{1,32})((?:\s+[^\s=\]"]{1,32}="(?:[^"\\]|\\.)*")*)\s*\]')
_SD_PARAM = re.compile(r'([^\s=\]"]{1,32})="((?:[^"\\]|\\.)*)"')
_SD_UNESCAPE = re.compile(r'\\(["\\\]])')

_default_parser = TimestampParser()


def _nil(value):
    return None if value == "-" else value


def _parse_structured_data(text):
    """Return ({sd_id: {name: value}}, rest) or None when the SD part is malformed."""
    if text.startswith("-"):
        return {}, text[1:]
    data = {}
    pos = 0
    while pos < len(text) and text[pos] == "[":
        m = _SD_ELEMENT.match(text, pos)
        if m is None:
            return None
        params = {name: _SD_UNESCAPE.sub(r"\1", value) for name, value in _SD_PARAM.findall(m.group(2))}
        data[m.group(1)] = params
        pos = m.end()
    if not data:
        return None
    return data, text[pos:]


def _parse_5424(rest, version, ts_parser):
    fields = []
    pos = 0
    for _ in range(5):  # TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
        m = _TOKEN.match(rest, pos)
        if m is None:
            return None
        fields.append(m.group(1))
        pos = m.end()
    sd = _parse_structured_data(rest[pos:])
    if sd is None:
        return None
    structured, message = sd
    if message.startswith(" "):
        message = message[1:]
    if message.startswith("\ufeff"):  # RFC 5424 allows a BOM before UTF-8 text
        message = message[1:]
    stamp = _nil(fields[0])
    return {"format": "rfc5424", "version": version, "timestamp": stamp,
            "ts": ts_parser.parse(stamp) if stamp else None, "host": _nil(fields[1]), "app": _nil(fields[2]),
            "pid": _nil(fields[3]), "msgid": _nil(fields[4]), "structured_data": structured, "message": message}


def _parse_3164(rest, ts_parser):
    stamp = host = app = pid = None
    m = _BSD_TIME.match(rest)
    if m is not None:
        stamp = m.group(1)
        rest = rest[m.end():]
        tag = _TAG.match(rest)
        if tag is None:  # "<pri>stamp host tag: msg"; the host never ends with ':'
            h = _TOKEN.match(rest)
            if h is not None and not h.group(1).endswith(":"):
                host = h.group(1)
                rest = rest[h.end():]
    tag = _TAG.match(rest)
    if tag is not None:
        app, pid = tag.group(1), tag.group(2)
        rest = rest[tag.end():]
    return {"format": "rfc3164", "version": None, "timestamp": stamp,
            "ts": ts_parser.parse(stamp) if stamp else None, "host": host, "app": app, "pid": pid or None,
            "msgid": None, "structured_data": {}, "message": rest}


def parse_syslog(line: str, ts_parser=None):
    """Parse `<PRI>...` syslog text; None when the line is not syslog. Never raises.

    Keys: format, priority, facility (name), severity (0-7), level (LEVEL_*), version, timestamp
    (as written), ts (epoch seconds or None), host, app, pid, msgid, structured_data, message.
    """
    try:
        if not isinstance(line, str):
            return None
        m = _PRI.match(line)
        if m is None:
            return None
        priority = int(m.group(1))
        if priority > 191:
            return None
        rest = line[m.end():]
        parser = ts_parser or _default_parser
        v = _V5424.match(rest)
        result = _parse_5424(rest[v.end():], int(v.group(1)), parser) if v else None
        if result is None:
            result = _parse_3164(rest, parser)
        severity = priority & 7
        result.update(priority=priority, facility=FACILITIES[priority >> 3], severity=severity,
                      severity_name=SEVERITIES[severity], level=SEVERITY_LEVEL[severity])
        return result
    except (ValueError, TypeError, IndexError, RecursionError):
        return None
