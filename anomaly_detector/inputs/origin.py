"""Where a network line comes from (syslog host and app, or a JSON line's source field), cheaply, for routing.

Neighbours: inputs/runner.py spreads a network input's spooled lines over the rings by this key, so
one origin's lines meet one worker's models in order; the workers parse the lines properly later
(parsing/syslog.py, parsing/jsonl.py). A line whose origin is not found here returns None and goes
with the rest of its chunk to the chunk's round-robin ring.
"""
import re

# "<PRI>" then RFC 5424 ("1 TIMESTAMP HOST APP ...") or RFC 3164 ("Mmm dd hh:mm:ss HOST TAG[pid]: ...").
_PRI = re.compile(rb"<\d{1,3}>")
_TAG_END = re.compile(rb"[\[:]")
_MAX_HEAD_BYTES = 256   # the header fields sit in the first bytes; never split a 100 kB line for them


def syslog_origin(line):
    """b"host app" of a syslog line, or None when the line has no recognisable header."""
    head = _PRI.match(line)
    if head is None:
        return None
    tokens = line[head.end():head.end() + _MAX_HEAD_BYTES].split(None, 5)
    if tokens and tokens[0].isdigit() and len(tokens) >= 4:      # RFC 5424: VERSION TIMESTAMP HOST APP
        return tokens[2] + b" " + tokens[3]
    if len(tokens) >= 5:                                          # RFC 3164: Mmm dd hh:mm:ss HOST TAG
        return tokens[3] + b" " + _TAG_END.split(tokens[4], 1)[0]
    return None


def json_origin(field):
    """A function giving the string value of a top-level JSON field of a line, or None.

    A regular expression, not a JSON parse: routing needs a stable key, not a decoded value, and it
    runs on every line in the input process. A dotted (nested) field name is not looked for.
    """
    if "." in field:
        return lambda line: None
    pattern = re.compile(rb'"%s"\s*:\s*"((?:[^"\\]|\\.){0,256})"' % re.escape(field.encode()))

    def origin(line):
        found = pattern.search(line)
        return found.group(1) if found else None
    return origin
