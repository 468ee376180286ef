"""Read, validate and type the INI config against spec.ini; report every problem at once.

Layers, as `vector validate` does them: syntax (configobj) -> schema (validate, unknown keys)
-> semantics and environment (checks.py). The CLI, the supervisor's reload and replay call load_config.
"""
import difflib
import math
import os

from configobj import ConfigObj, ConfigObjError, DuplicateError, flatten_errors, get_extra_values
from configobj.validate import ValidateError, Validator, VdtValueError, is_float

from anomaly_detector.config import checks
from anomaly_detector.config.lineindex import LineIndex
from anomaly_detector.config.problems import ERROR, Problem, has_errors
from anomaly_detector.config.unsupported import unsupported_problems

SPEC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spec.ini")
DEFAULT_CONFIG_PATH = "/etc/anomaly-detector/config.ini"
MANY = "__many__"
# What the config is loaded for: the daemon (start-up, --validate-config, reload) needs [paths] and
# an input; replay reads FILE arguments and ignores [inputs], [http] and [outputs].
DAEMON, REPLAY = "daemon", "replay"


class NotFinite(VdtValueError):
    """nan, inf and -inf parse as floats but would poison every comparison made with them."""


def finite_float(value, min=None, max=None):  # noqa: A002 - the names configobj passes
    number = is_float(value, min=None, max=None)
    if not math.isfinite(number):
        raise NotFinite(value)
    return is_float(number, min=min, max=max)


def validator():
    """The schema's Validator: configobj's checks, with every float refusing NaN and infinities."""
    return Validator({"float": finite_float})


class ConfigError(Exception):
    """The config cannot be used; .problems holds every reason."""

    def __init__(self, problems):
        self.problems = problems
        errors = [p for p in problems if p.severity == ERROR]
        super().__init__(errors[0].render() if errors else "invalid configuration")


def load_spec():
    """The configspec as a ConfigObj (list_values off: checks are kept as written)."""
    return ConfigObj(SPEC_PATH, _inspec=True, list_values=False, interpolation=False, encoding="utf-8")


def default_config():
    """Every setting at its default, as a plain dict (what replay uses without --config)."""
    cfg = ConfigObj([], configspec=load_spec(), interpolation=False)
    cfg.validate(validator(), copy=True)
    return cfg.dict()


def load_config(path, environment=True, purpose=DAEMON):
    """Return (config dict or None, [Problem]). The dict is None when any problem is an error.

    `environment=False` skips checks of the machine (readable files, writable dirs, names that
    resolve). `purpose=REPLAY` skips what only a running daemon needs (paths, inputs, listeners).
    """
    text, problem = _read_text(path)
    if problem:
        return None, [problem]
    index = LineIndex(text)
    if purpose == DAEMON and not index.holds_settings():
        return None, [Problem(ERROR, path, 1, (), "", "the file holds no settings (empty or only comments): "
                              "the daemon needs [paths] (state_dir, log_dir) and at least one [inputs] subsection")]
    cfg, problems = _parse(path, text, index)
    schema = _schema_problems(path, cfg, index)
    if problems:
        # After a syntax error the parsed sections are partial or merged: keep what has a line.
        schema = [p for p in schema if p.line]
    problems += schema
    typed = not has_errors(problems)    # the later checks need typed values
    # read from the file's lines, not typed values: reported beside wrong values, all problems at once
    problems += unsupported_problems(path, cfg, index)
    if typed:
        problems += checks.semantic_problems(path, cfg, index, daemon=purpose == DAEMON)
        if environment:
            problems += checks.environment_problems(path, cfg, index, daemon=purpose == DAEMON)
    if purpose == DAEMON:
        problems += checks.daemon_shape_problems(path, cfg, index)
    problems.sort(key=lambda p: (p.line or 10**9, p.key))
    return (None if has_errors(problems) else cfg.dict()), problems


def require_config(path, environment=True, purpose=DAEMON):
    """load_config that raises ConfigError instead of returning problems with errors."""
    cfg, problems = load_config(path, environment, purpose)
    if cfg is None:
        raise ConfigError(problems)
    return cfg, problems


def _read_text(path):
    def fail(message):
        return None, Problem(ERROR, path, 0, (), "", message)

    if os.path.isdir(path):
        return fail("is a directory, expected a config file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return fail("config file not found (set --config or ANOMALY_DETECTOR_CONFIG)")
    except PermissionError:
        return fail("config file not readable by this user (check its permissions)")
    except OSError as exc:
        return fail("cannot read config file: %s" % exc.strerror)
    try:
        return raw.decode("utf-8-sig"), None     # a BOM (editors on Windows) is not text
    except UnicodeDecodeError as exc:
        text = exc.object       # after the BOM, which exc.start counts from
        line = text[: exc.start].count(b"\n") + 1
        return None, Problem(ERROR, path, line, (), "", "not valid UTF-8 text (byte 0x%02x)" % text[exc.start])


def _parse(path, text, index):
    spec = load_spec()
    lines = text.splitlines()
    try:
        return ConfigObj(lines, configspec=spec, interpolation=False, raise_errors=False), []
    except ConfigObjError as exc:
        problems = [_syntax_problem(path, err, index) for err in getattr(exc, "errors", [exc])]
        problems = [p for p in problems if p is not None]
        partial = exc.config.dict() if getattr(exc, "config", None) is not None else {}
        return ConfigObj(partial, configspec=spec, interpolation=False), problems


def _syntax_problem(path, err, index):
    message = str(err).split(" at line ")[0].rstrip(".")
    line = getattr(err, "line_number", 0) or 0
    found = (getattr(err, "line", "") or "").strip()
    if isinstance(err, DuplicateError):
        duplicate = _duplicate_problem(path, line, index)
        if duplicate is _NOT_AGAIN:
            return None
        if duplicate:
            return duplicate
    return Problem(ERROR, path, line, (), "", "%s: %r" % (message.lower(), found))


_NOT_AGAIN = object()


def _duplicate_problem(path, line, index):
    """'duplicate section [service] at lines 4 and 8' (configobj only names the second line)."""
    section = index.header_at(line)
    if section is not None:
        lines = index.headers[section]
        return Problem(ERROR, path, line, (), "", "duplicate section [%s] at lines %s: merge them into one"
                       % (".".join(section), _and(lines)))
    where = index.key_at(line)
    if where is not None:
        headers = index.headers.get(where[0], [])
        if len(headers) > 1 and line > headers[1]:
            return _NOT_AGAIN      # a key repeated under a repeated section: that section is the mistake
        lines = index.key_lines[where]
        return Problem(ERROR, path, line, where[0], where[1], "duplicate key at lines %s: keep one" % _and(lines))
    return None


def _and(numbers):
    numbers = [str(n) for n in numbers]
    return ", ".join(numbers[:-1]) + " and " + numbers[-1] if len(numbers) > 1 else numbers[0]


def _schema_problems(path, cfg, index):
    spec = load_spec()
    result = cfg.validate(validator(), preserve_errors=True, copy=True)
    problems = []
    for section, key, error in flatten_errors(cfg, result):
        problems.append(_value_problem(path, spec, index, section, key, error))
    for section, name in get_extra_values(cfg):
        problems.append(_unknown_problem(path, spec, cfg, index, section, name))
    return problems


def _spec_section(spec, section):
    node = spec
    for name in section:
        if name in node:
            node = node[name]
        elif MANY in node:
            node = node[MANY]
        else:
            return None
    return node


def _value_problem(path, spec, index, section, key, error):
    section = tuple(section)
    if key is None:
        return Problem(ERROR, path, index.section_line(section), section, "", "required section is missing")
    check = (_spec_section(spec, section) or {}).get(key, "")
    expected = describe_check(check)
    if error is False:
        return Problem(ERROR, path, index.section_line(section), section, key,
                       "required key is missing: expected %s" % expected)
    raw = index.raw_value(section, key)
    found = raw if raw is not None else "?"
    message = "expected %s, found %r" % (expected, found)
    if isinstance(error, NotFinite):
        message += " (NaN and infinities are refused)"
    if isinstance(error, ValidateError) and "," in str(found) and "list" not in check:
        message += " (a comma makes a list; put the value in quotes)"
    return Problem(ERROR, path, index.key_line(section, key), section, key, message)


def _unknown_problem(path, spec, cfg, index, section, name):
    section = tuple(section)
    known = _spec_section(spec, section)
    candidates = [k for k in (known or {}) if k != MANY]
    value = cfg
    for part in section:
        value = value[part]
    is_section = isinstance(value.get(name), dict)
    hint = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    suggestion = " (did you mean %r?)" % hint[0] if hint else ""
    if is_section:
        return Problem(ERROR, path, index.section_line(section + (name,)), section + (name,), "",
                       "unknown section%s" % suggestion)
    return Problem(ERROR, path, index.key_line(section, name), section, name, "unknown key%s" % suggestion)


_KINDS = {
    "integer": "an integer", "float": "a number", "boolean": "true or false",
    "string": "a string", "force_list": "a comma-separated list", "list": "a list",
    "string_list": "a list of strings", "ip_addr": "an IP address",
}


def describe_check(check):
    """Human text for a spec check such as "integer(min=1, max=64, default=2)"."""
    if not check:
        return "a value"
    try:
        name, args, kwargs, _default = Validator()._parse_with_caching(check)
    except Exception:  # the spec is ours; a check we cannot read still gets a message
        return check
    if name == "option":
        return "one of " + ", ".join(repr(a) for a in args)
    text = _KINDS.get(name, name)
    low, high = kwargs.get("min"), kwargs.get("max")
    unit = " characters long" if name == "string" else ""
    if name == "string" and low is not None and high is None:
        return "a non-empty string" if str(low) == "1" else text
    if low is not None and high is not None:
        return "%s from %s to %s%s" % (text, low, high, unit)
    if low is not None:
        return "%s of at least %s%s" % (text, low, unit)
    if high is not None:
        return "%s of at most %s%s" % (text, high, unit)
    return text
