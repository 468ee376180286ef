"""parse_syslog: RFC 5424 and RFC 3164 messages, and lines that are not syslog."""
import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_detector.parsing.batch import LEVEL_CRITICAL, LEVEL_INFO, LEVEL_NOTICE, LEVEL_WARNING
from anomaly_detector.parsing.syslog import parse_syslog
from anomaly_detector.parsing.timestamps import TimestampParser


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def test_rfc5424_full():
    m = parse_syslog('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                     '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
                     '[examplePriority@32473 class="high"] \ufeffAn application event')
    assert m["format"] == "rfc5424" and m["version"] == 1
    assert (m["priority"], m["facility"], m["severity"], m["level"]) == (165, "local4", 5, LEVEL_NOTICE)
    assert m["ts"] == utc(2003, 10, 11, 22, 14, 15, 3000)
    assert (m["host"], m["app"], m["pid"], m["msgid"]) == ("mymachine.example.com", "evntslog", None, "ID47")
    assert m["structured_data"] == {"exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"},
                                    "examplePriority@32473": {"class": "high"}}
    assert m["message"] == "An application event"


def test_rfc5424_nil_fields_and_escapes():
    m = parse_syslog('<34>1 - - - - - [id@1 k="a\\"b\\]c"]')
    assert m["timestamp"] is None and m["ts"] is None and m["host"] is None
    assert m["structured_data"] == {"id@1": {"k": 'a"b]c'}}
    assert m["message"] == ""
    m = parse_syslog("<13>1 2026-03-02T10:00:00+01:00 host app 1234 - - hello world")
    assert (m["pid"], m["message"], m["ts"]) == ("1234", "hello world", utc(2026, 3, 2, 9))


def test_rfc3164_with_host_and_tag():
    parser = TimestampParser(default_year=2025)
    m = parse_syslog("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick", parser)
    assert m["format"] == "rfc3164"
    assert (m["facility"], m["severity"], m["level"]) == ("auth", 2, LEVEL_CRITICAL)
    assert m["ts"] == utc(2025, 10, 11, 22, 14, 15)
    assert (m["host"], m["app"], m["pid"]) == ("mymachine", "su", None)
    assert m["message"] == "'su root' failed for lonvick"


def test_rfc3164_pid_no_host_and_bare():
    m = parse_syslog("<30>Jun  4 08:00:01 sshd[4242]: Accepted publickey", TimestampParser(default_year=2025))
    assert (m["host"], m["app"], m["pid"], m["message"]) == (None, "sshd", "4242", "Accepted publickey")
    assert m["level"] == LEVEL_INFO
    m = parse_syslog("<12>just some text")
    assert (m["ts"], m["host"], m["app"], m["message"]) == (None, None, None, "just some text")
    assert m["level"] == LEVEL_WARNING


def test_rfc3164_iso_stamp():
    m = parse_syslog("<14>2026-03-02T10:00:00.5Z web-1 nginx[7]: GET /")
    assert m["ts"] == utc(2026, 3, 2, 10, 0, 0, 500000)
    assert (m["host"], m["app"], m["pid"], m["message"]) == ("web-1", "nginx", "7", "GET /")


def test_not_syslog():
    for line in ["", "hello", "<>x", "<192>1 - - - - - -", "<abc>x", "< 1>x", None, b"<1>x"]:
        assert parse_syslog(line) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120).map(lambda s: "<13>" + s) | st.text(max_size=120))
def test_never_raises(line):
    m = parse_syslog(line)
    assert m is None or isinstance(m["message"], str)
