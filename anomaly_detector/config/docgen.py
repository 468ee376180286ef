"""Generate docs/configuration.md and etc/anomaly-detector/config.ini from spec.ini.

Both files are outputs: edit spec.ini, then run `python -m anomaly_detector.config.docgen`.
tests/unit/test_config_docs.py fails when either is stale.
"""
import os
import sys

from configobj.validate import Validator

from anomaly_detector.config.loader import MANY, describe_check, load_spec
from anomaly_detector.config.unsupported import is_unsupported

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC_PATH = os.path.join(ROOT, "docs", "configuration.md")
INI_PATH = os.path.join(ROOT, "etc", "anomaly-detector", "config.ini")

# The example subsection shipped for each "one subsection per ..." section: (name, values, commented out).
EXAMPLES = {
    ("inputs",): ("app", {"type": "file", "path": "/var/log/app/*.log", "format": "auto"}, False),
    ("rules",): ("out_of_memory", {"pattern": r"(?i)out of memory|oom-killer|OutOfMemoryError"}, False),
    ("alerting",): ("am", {"type": "alertmanager", "url": "http://127.0.0.1:9093"}, True),
}


def _parse_check(check):
    name, args, kwargs, default = Validator()._parse_with_caching(check)
    return name, default


def _format_value(check, value):
    name, _ = _parse_check(check)
    if value is None:
        return ""
    if name in ("force_list", "list", "string_list"):
        return ", ".join(_quote(v) for v in value) if value else ","
    if name == "boolean":
        return "true" if str(value).lower() in ("true", "1", "yes", "on") else "false"
    if name == "string":
        return _quote(value)
    return str(value)


def _quote(text):
    text = str(text)
    if text == "" or any(c in text for c in ',#"\'') or text != text.strip():
        return '"%s"' % text if '"' not in text else "'%s'" % text
    return text


def _help(section, key):
    return [c.lstrip("#").strip() for c in section.comments.get(key, []) if c.strip("# ")]


def _walk(section, path):
    """Yield (path, key, check, help) in file order; keys without a comment share the one above."""
    last_help = []
    for key in section.scalars:
        help_lines = _help(section, key) or last_help
        last_help = help_lines
        yield path, key, section[key], help_lines
    for name in section.sections:
        yield from _walk(section[name], path + (name,))


def render_markdown():
    spec = load_spec()
    out = ["# Configuration reference", "",
           "Generated from `anomaly_detector/config/spec.ini` by `python -m anomaly_detector.config.docgen`;",
           "do not edit by hand. Unknown keys and sections are errors. `<name>` stands for a subsection",
           "you name yourself (one per input, rule or sink).", ""]
    current = None
    for path, key, check, help_lines in _walk(spec, ()):
        shown = tuple("<name>" if p == MANY else p for p in path)
        if shown != current:
            if current is not None:
                out.append("")
            current = shown
            header = "".join("[" * (i + 1) + p + "]" * (i + 1) + " " for i, p in enumerate(shown)).strip()
            section_help = _help(_parent(spec, path), path[-1]) if path else []
            out += ["## `%s`" % header, ""] + ([" ".join(section_help), ""] if section_help else [])
            out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        _name, default = _parse_check(check)
        default_text = "(required)" if default is None else "`%s`" % (_format_value(check, default) or '""')
        out.append("| `%s` | %s | %s | %s |" % (key, describe_check(check), default_text, " ".join(help_lines)))
    return "\n".join(out) + "\n"


def _parent(spec, path):
    node = spec
    for p in path[:-1]:
        node = node[p]
    return node


def render_ini():
    spec = load_spec()
    out = ["# anomaly_detector configuration.",
           "# Every setting is listed with its default; see docs/configuration.md.",
           "# Generated from the configspec by `python -m anomaly_detector.config.docgen`.", ""]
    for name in spec.sections:
        _render_section(spec, spec[name], (name,), out)
    return "\n".join(out).rstrip() + "\n"


def _render_section(parent, section, path, out):
    depth = len(path)
    comments = [c for c in parent.comments.get(path[-1], []) if c.strip()]
    out += comments
    out.append("    " * (depth - 1) + "[" * depth + path[-1] + "]" * depth)
    indent = "    " * (depth - 1)
    for key in section.scalars:
        out += [indent + c.strip() for c in section.comments.get(key, []) if c.strip()]
        _name, default = _parse_check(section[key])
        off = "# " if is_unsupported(path, key) else ""  # the shipped file must validate
        out.append("%s%s%s = %s" % (indent, off, key, _format_value(section[key], default)))
    for name in section.sections:
        if name != MANY:
            _render_section(section, section[name], path + (name,), out)
            continue
        _render_example(section, path, out)
    out.append("")


def _render_example(section, path, out):
    example = EXAMPLES.get(path)
    depth = len(path) + 1
    indent = "    " * (depth - 1)
    out += ["    " * (depth - 2) + c.strip() for c in section.comments.get(MANY, []) if c.strip()]
    name, values, commented = example
    off = "# " if commented else ""
    out.append("    " * (depth - 2) + off + "[" * depth + name + "]" * depth)
    many = section[MANY]
    for key in many.scalars:
        out += [indent + c.strip() for c in many.comments.get(key, []) if c.strip()]
        _name, default = _parse_check(many[key])
        value = values.get(key, default)
        key_off = "# " if commented or is_unsupported(path + (name,), key) else ""
        out.append("%s%s%s = %s" % (indent, key_off, key, _format_value(many[key], value)))


def main():
    for path, text in ((DOC_PATH, render_markdown()), (INI_PATH, render_ini())):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print("wrote %s" % os.path.relpath(path, ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
