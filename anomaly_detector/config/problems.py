"""What the config layer reports: one Problem per mistake, rendered as one line.

Produced by loader.py (syntax, schema, unknown keys) and checks.py (semantics, environment).
"""
from dataclasses import dataclass

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One mistake in a config file, with everything an operator needs to find and fix it."""

    severity: str
    file: str
    line: int            # 1-based; 0 when the problem has no line (a missing key or file)
    section: tuple       # section path, e.g. ("inputs", "app"); () for the top level
    key: str             # "" when the problem is about a whole section or the file
    message: str         # what was expected and what was found

    def render(self):
        where = "%s:%d" % (self.file, self.line) if self.line else self.file
        section = "[%s]" % ".".join(self.section) if self.section else ""
        subject = " ".join(part for part in (section, self.key) if part)
        if not subject:
            return "%s: %s: %s" % (where, self.severity, self.message)
        return "%s: %s: %s: %s" % (where, self.severity, subject, self.message)


def has_errors(problems):
    return any(p.severity == ERROR for p in problems)
