"""Where each section and key of an INI file stands, by line number.

configobj keeps no line numbers for values; loader.py and checks.py use this index to point
every problem at its line.
"""
import re

_SECTION = re.compile(r"^\s*(\[+)\s*([^\]]*?)\s*(\]+)\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[^=\[#\s][^=]*?)\s*=\s*(.*?)\s*$""")


class LineIndex:
    """Maps (section path tuple) -> line of its header, and (section path, key) -> (line, raw value)."""

    def __init__(self, text):
        self.sections = {(): 0}
        self.keys = {}
        self.headers = {}       # section path -> every line with its header (duplicates included)
        self.key_lines = {}     # (section path, key) -> every line setting it
        self.line_count = len(text.splitlines())
        self._scan(text.splitlines())

    def _scan(self, lines):
        path = []
        in_triple = None
        for number, line in enumerate(lines, 1):
            if in_triple:
                if in_triple in line:
                    in_triple = None
                continue
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            section = _SECTION.match(line)
            if section:
                depth = len(section.group(1))
                path = path[: depth - 1] + [section.group(2).strip("'\"")]
                self.sections.setdefault(tuple(path), number)
                self.headers.setdefault(tuple(path), []).append(number)
                continue
            key = _KEY.match(line)
            if key:
                name, value = key.group(1).strip("'\""), key.group(2)
                self.keys.setdefault((tuple(path), name), (number, value))
                self.key_lines.setdefault((tuple(path), name), []).append(number)
                in_triple = _opens_triple_quote(value)

    def key_line(self, section, key):
        return self.keys.get((tuple(section), key), (0, None))[0]

    def raw_value(self, section, key):
        return self.keys.get((tuple(section), key), (0, None))[1]

    def section_line(self, section):
        return self.sections.get(tuple(section), 0)

    def holds_settings(self):
        """False for an empty or comment-only file."""
        return bool(self.keys) or len(self.sections) > 1

    def header_at(self, line):
        """The section path whose header is on this line, or None."""
        return next((path for path, lines in self.headers.items() if line in lines), None)

    def key_at(self, line):
        """(section path, key) set on this line, or None."""
        return next((where for where, lines in self.key_lines.items() if line in lines), None)


def _opens_triple_quote(value):
    for quote in ('"""', "'''"):
        if value.startswith(quote) and value.count(quote) == 1:
            return quote
    return None
