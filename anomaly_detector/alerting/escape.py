"""Make text that came from a log line safe to put in an alert.

Every sink serialises with json.dumps, which escapes quotes, backslashes and newlines; what JSON lets
through and still harms a reader is removed here: terminal escape sequences and other control
characters (a `tail -f` of the file sink, a chat client rendering a webhook), Unicode bidi overrides
that reorder what an operator reads, and unbounded length. Used by events.py when an event is built,
so every sink gets the cleaned text.
"""
import re

# C0 and C1 controls but tab and newline, DEL, and the bidi embedding/override/isolate characters.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_FIELD_CHARS = 2000


def clean(text, limit=MAX_FIELD_CHARS):
    """`text` without control characters (each becomes U+FFFD) and cut to `limit` characters."""
    text = _UNSAFE.sub("\ufffd", str(text))
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def one_line(text, limit=MAX_FIELD_CHARS):
    """clean() and newlines and tabs as spaces: for labels and headers, which must stay one line."""
    return clean(text, limit).replace("\n", " ").replace("\t", " ").replace("\r", " ")
