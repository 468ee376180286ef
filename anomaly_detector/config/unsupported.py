"""Settings declared for features this release does not have yet: written in a file, they are refused.

Called by loader.py after the schema passes, beside checks.py. A key that validates but does
nothing would tell an operator that alerts go out, TLS is on or old data is cleaned when none of
it happens; so until the feature lands, setting the key is an error that says so.
"""
from anomaly_detector.config.problems import ERROR, Problem

NOT_SUPPORTED = "not supported in this release"
UNSUPPORTED_INPUT_TYPES = ()

# (section path, keys); "*" in a path stands for any subsection name, None for every key.
_UNSUPPORTED_KEYS = ()
# Whole subsections: one problem at the subsection's header.
_UNSUPPORTED_SUBSECTIONS = ()


def unsupported_problems(path, cfg, index):
    """Errors for each unsupported key, input type or subsection that the file sets (defaults are not errors)."""
    problems = []
    for (section, key), (line, _raw) in sorted(index.keys.items(), key=lambda item: item[1][0]):
        if is_unsupported(section, key):
            problems.append(Problem(ERROR, path, line, section, key, NOT_SUPPORTED))
    for name, section in cfg.get("inputs", {}).items():
        if isinstance(section, dict) and section.get("type") in UNSUPPORTED_INPUT_TYPES:
            line = index.key_line(("inputs", name), "type")
            problems.append(Problem(ERROR, path, line, ("inputs", name), "type",
                                    "type = %s is %s" % (section["type"], NOT_SUPPORTED)))
    for parent, message in _UNSUPPORTED_SUBSECTIONS:
        for section, line in sorted(index.sections.items(), key=lambda item: item[1]):
            if len(section) == len(parent) + 1 and section[:len(parent)] == parent:
                problems.append(Problem(ERROR, path, line, section, "", message))
    return problems


def is_unsupported(section, key):
    """Whether setting `key` in `section` (a path tuple) is refused in this release."""
    for pattern, keys in _UNSUPPORTED_KEYS:
        if _matches(pattern, section) and (keys is None or key in keys):
            return True
    return False


def _matches(pattern, section):
    return len(pattern) == len(section) and all(p in ("*", s) for p, s in zip(pattern, section))
