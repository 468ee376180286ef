"""Checks past the schema: settings that contradict each other, and what the machine must allow.

Called by loader.py after the schema passes. Semantic problems are errors; environment
problems are warnings when the daemon may still start (a directory it will create) and
errors when it cannot (a TLS key it cannot read). With daemon=True (start-up, --validate-config,
reload) the checks that only matter to a running daemon come too: [paths] and an input present,
listeners on distinct ports, no output file read back by an input; replay skips them.
"""
import fnmatch
import glob
import ipaddress
import os
import re
import socket
import urllib.parse
import zoneinfo

from anomaly_detector.config.problems import ERROR, WARNING, Problem
from anomaly_detector.detection.regex_safety import refusal
from anomaly_detector.detection.situations import parse_dependencies
from anomaly_detector.ipc.control import MAX_INPUTS
from anomaly_detector.logsetup import LOG_FILE_NAME

MB = 1024 * 1024
_LISTENERS = ("syslog", "http")


class _Reporter:
    """Collects problems for one file, looking line numbers up in the index."""

    def __init__(self, path, index):
        self.path, self.index, self.problems = path, index, []

    def add(self, severity, section, key, message):
        section = tuple(section)
        line = self.index.key_line(section, key) if key else self.index.section_line(section)
        if not line and key:
            line = self.index.section_line(section)
        if not line and key:
            message += " (%s is not set in the file: this is its default)" % key
        self.problems.append(Problem(severity, self.path, line, section, key, message))

    def add_at(self, severity, line, section, key, message):
        self.problems.append(Problem(severity, self.path, line, tuple(section), key, message))

    def where(self, section, key):
        """'[inputs.app] path (line 12)' for messages that point at a second place."""
        line = self.index.key_line(section, key) or self.index.section_line(section)
        name = "[%s] %s" % (".".join(section), key)
        return "%s (line %d)" % (name, line) if line else "%s (its default)" % name


def semantic_problems(path, cfg, index, daemon=True):
    report = _Reporter(path, index)
    if daemon:
        _check_listeners(report, cfg)
        _check_feedback_loops(report, cfg)
        http = cfg["http"]
        if bool(http["tls_cert"]) != bool(http["tls_key"]):
            report.add(ERROR, ("http",), "tls_cert" if http["tls_cert"] else "tls_key",
                       "tls_cert and tls_key must be set together (both for HTTPS, neither for HTTP)")
    _check_processing(report, cfg["processing"])
    url = cfg["parsing"]["vocabulary_url"]
    if url and not url.startswith(_REDIS_SCHEMES):
        report.add(ERROR, ("parsing",), "vocabulary_url", "expected redis://host:port/db, rediss:// or unix://, "
                   "found %s" % url)
    if url and not cfg["parsing"]["vocabulary_key"]:
        report.add(ERROR, ("parsing",), "vocabulary_key", "expected a key prefix, found nothing")
    for name, section in cfg["inputs"].items():
        _check_input(report, ("inputs", name), section)
        if section["type"] == "redis":
            _check_redis_wait(report, ("inputs", name), section, cfg["processing"]["heartbeat_timeout_seconds"])
    if len(cfg["inputs"]) > MAX_INPUTS:  # each input has a stats row in shared memory
        report.add(ERROR, ("inputs",), None, "expected at most %d inputs, found %d: merge files into one "
                   "input with a glob" % (MAX_INPUTS, len(cfg["inputs"])))
    for name, section in _subsections(cfg["alerting"]):
        _check_sink(report, ("alerting", name), section)
    _check_fleet_reader(report, _subsections(cfg["alerting"]), cfg["processing"]["heartbeat_timeout_seconds"])
    for name, section in cfg["rules"].items():
        _check_regex(report, ("rules", name), "pattern", section["pattern"])
    _check_dependencies(report, cfg["situations"]["dependencies"])
    for pattern in cfg["parsing"]["extra_masks"]:
        _check_regex(report, ("parsing",), "extra_masks", pattern)
    for pattern in cfg["detection"]["tier4"].get("session_patterns", []):
        _check_regex(report, ("detection", "tier4"), "session_patterns", pattern)
    return report.problems


def _check_dependencies(report, items):
    try:
        parse_dependencies(items)
    except ValueError as exc:
        report.add(ERROR, ("situations",), "dependencies", str(exc))


def _subsections(section):
    return [(k, v) for k, v in section.items() if isinstance(v, dict)]


def _check_processing(report, p):
    if p["ring_size"] < 2 * p["batch_size"]:
        report.add(ERROR, ("processing",), "ring_size",
                   "expected at least 2 x batch_size = %d slots, found %d" % (2 * p["batch_size"], p["ring_size"]))
    if p["ring_bytes"] < 2 * p["max_line_bytes"]:
        report.add(ERROR, ("processing",), "ring_bytes",
                   "expected at least 2 x max_line_bytes = %d so the longest line fits, found %d"
                   % (2 * p["max_line_bytes"], p["ring_bytes"]))
    rings_mb = p["workers"] * p["ring_bytes"] / MB
    if rings_mb > p["max_memory_mb"]:
        report.add(ERROR, ("processing",), "ring_bytes",
                   "workers x ring_bytes = %d MiB of rings exceeds max_memory_mb = %d"
                   % (rings_mb, p["max_memory_mb"]))


def _check_input(report, section, i):
    kind = i["type"]
    if kind == "file" and not i["path"]:
        report.add(ERROR, section, "path", "required for type = file: expected a path or glob, found nothing")
    if kind in _LISTENERS and not i["listen_address"]:
        report.add(ERROR, section, "listen_address", "required for type = %s" % kind)
    if kind in _LISTENERS and i["listen_port"] == 0:
        report.add(ERROR, section, "listen_port", "required for type = %s: expected a port from 1 to 65535, "
                   "found 0 (senders need a fixed port)" % kind)
    if kind == "redis":
        _check_redis(report, section, i)
    else:   # a redis key set (off its default: the shipped file lists every key) on another input is ignored
        for (where, key), _line in report.index.keys.items():
            if tuple(where) == tuple(section) and key in _REDIS_KEYS and i[key] != _REDIS_KEYS[key]:
                report.add(ERROR, section, key, "used only by type = redis, not by type = %s" % kind)
    try:
        zoneinfo.ZoneInfo(i["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        report.add(ERROR, section, "timezone", "expected an IANA time zone such as UTC or Europe/Paris, found %s"
                   % i["timezone"])
    _check_header(report, section, i)


_REDIS_KEYS = {"url": "", "stream": "", "group": "", "consumer": "", "batch_count": 500, "block_ms": 0,
               "claim_idle_seconds": 60.0, "reconnect_min_seconds": 0.5, "reconnect_max_seconds": 30.0,
               "socket_timeout_seconds": 2.0}  # spec defaults
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_redis(report, section, i):
    if not i["url"].startswith(_REDIS_SCHEMES):
        report.add(ERROR, section, "url", "required for type = redis: expected redis://host:port/db, rediss:// "
                   "or unix://, found %s" % (i["url"] or "nothing"))
    for key in ("stream", "group"):
        if not i[key]:
            report.add(ERROR, section, key, "required for type = redis: expected a name, found nothing")
    if i["format"] not in ("jsonl", "auto"):
        report.add(ERROR, section, "format", "expected jsonl or auto for type = redis (each entry is read as a "
                   "JSON line of its fields), found %s" % i["format"])
    if i["reconnect_max_seconds"] < i["reconnect_min_seconds"]:
        report.add(ERROR, section, "reconnect_max_seconds", "expected at least reconnect_min_seconds (%g), found %g"
                   % (i["reconnect_min_seconds"], i["reconnect_max_seconds"]))


def _check_redis_wait(report, section, i, heartbeat):
    """The input process waits block_ms plus socket_timeout_seconds at most in one call; its heartbeat must outlast that."""
    wait = i["block_ms"] / 1000.0 + i["socket_timeout_seconds"]
    if wait >= heartbeat:
        report.add(ERROR, section, "socket_timeout_seconds", "block_ms + socket_timeout_seconds (%g s) must stay "
                   "below [processing] heartbeat_timeout_seconds (%g s): the input process would be killed "
                   "while it waits for Redis" % (wait, heartbeat))


_SINK_COMMON = ("type", "min_score", "retry_initial_seconds", "retry_max_seconds", "severities", "quiet_hours",
                "quiet_hours_timezone")
_SINK_KEYS = {
    "file": ("path",),
    "webhook": ("url", "secret_file", "allow_link_local", "timeout_seconds"),
    "alertmanager": ("url", "allow_link_local", "timeout_seconds", "resend_seconds"),
    "slack": ("url", "allow_link_local", "timeout_seconds"),
    "syslog": ("url", "timeout_seconds"),
    "redis": ("url", "timeout_seconds", "stream", "stream_max_entries", "instance", "consume", "group", "consumer",
              "claim_idle_seconds"),
    "email": ("smtp_host", "smtp_port", "from_address", "to_addresses", "smtp_security", "smtp_ca_file",
              "smtp_username", "smtp_password_file", "timeout_seconds"),
}


def _check_sink(report, section, sink):
    """The keys a sink type needs, and none it would ignore; the secret and password files are read by the
    daemon's start-up check (it builds the sinks)."""
    kind = sink["type"]
    allowed = _SINK_COMMON + _SINK_KEYS.get(kind, ())
    if kind == "redis":   # readers apply their own sinks' quiet hours; a digest is for people
        allowed = tuple(k for k in allowed if not k.startswith("quiet_hours"))
    for (where, key), _line in report.index.keys.items():
        if tuple(where) == tuple(section) and key not in allowed:
            report.add(ERROR, section, key, "not used by type = %s (its keys: %s)"
                       % (kind, ", ".join(k for k in allowed if k != "type")))
    if kind == "file" and not sink["path"]:
        report.add(ERROR, section, "path", "required for type = file: expected the JSON lines file alerts go to")
    if kind in ("alertmanager", "webhook", "slack"):
        parts = urllib.parse.urlsplit(sink["url"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            report.add(ERROR, section, "url", "required for type = %s: expected an http:// or https:// URL with a "
                       "host, found %r" % (kind, sink["url"]))
        else:
            from anomaly_detector.alerting.sinks.webhook import check_target  # see _check_noise

            try:
                check_target(sink["url"], sink["allow_link_local"])
            except ValueError as exc:
                report.add(ERROR, section, "url", str(exc))
    if kind == "syslog" and urllib.parse.urlsplit(sink["url"]).scheme not in ("udp", "tcp", "unix"):
        report.add(ERROR, section, "url", "required for type = syslog: expected udp://host:port, tcp://host:port or "
                   "unix:///dev/log, found %r" % sink["url"])
    if kind == "redis" and urllib.parse.urlsplit(sink["url"]).scheme not in ("redis", "rediss", "unix"):
        report.add(ERROR, section, "url", "required for type = redis: expected redis://host:port/db, rediss:// or "
                   "unix:///path.sock, found %r" % sink["url"])
    if kind == "email":
        for key in ("from_address", "to_addresses"):
            if not sink[key]:
                report.add(ERROR, section, key, "required for type = email")
        if sink["smtp_username"] and not sink["smtp_password_file"]:
            report.add(ERROR, section, "smtp_password_file", "required with smtp_username")
        if sink["smtp_username"] and sink["smtp_security"] == "none":
            report.add(ERROR, section, "smtp_security", "none would send smtp_username's password in clear: "
                       "expected starttls or tls")
    _check_noise(report, section, sink)
    if sink["retry_max_seconds"] < sink["retry_initial_seconds"]:
        report.add(ERROR, section, "retry_max_seconds", "expected at least retry_initial_seconds (%g), found %g"
                   % (sink["retry_initial_seconds"], sink["retry_max_seconds"]))


def _check_fleet_reader(report, sinks, heartbeat):
    """consume = true delivers through this instance's other sinks: there must be one. The reader runs in
    the alerter's main loop, which beats the heartbeat: one Redis request must not outlast it."""
    readers = [name for name, sink in sinks if sink["type"] == "redis" and sink["consume"]]
    if readers and all(sink["type"] == "redis" for _name, sink in sinks):
        report.add(ERROR, ("alerting", readers[0]), "consume", "true needs another sink in [alerting] to deliver the "
                   "stream's incidents to (webhook, slack, ...)")
    for name, sink in sinks:
        if name in readers and sink["timeout_seconds"] >= heartbeat:
            report.add(ERROR, ("alerting", name), "timeout_seconds", "with consume = true it must stay below "
                       "[processing] heartbeat_timeout_seconds (%g s): the alerter would be killed while it waits "
                       "for Redis" % heartbeat)


def _check_noise(report, section, sink):
    """severities among critical and warning; quiet_hours HH:MM-HH:MM in a known time zone."""
    # Imported here, when a sink is configured: the alerting package pulls in http.client, ssl and
    # email, which a replay (the loader without sinks) does not need at start-up.
    from anomaly_detector.alerting.noise import SEVERITIES, parse_quiet_hours
    wrong = [s for s in sink["severities"] if s not in SEVERITIES]
    if wrong or not sink["severities"]:
        report.add(ERROR, section, "severities", "expected one or more of %s, found %s"
                   % (", ".join(SEVERITIES), ", ".join(sink["severities"]) or "nothing"))
    if sink["quiet_hours"]:
        try:
            parse_quiet_hours(sink["quiet_hours"])
        except ValueError as exc:
            report.add(ERROR, section, "quiet_hours", str(exc))
    try:
        zoneinfo.ZoneInfo(sink["quiet_hours_timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        report.add(ERROR, section, "quiet_hours_timezone", "expected an IANA time zone such as UTC or "
                   "Europe/Paris, found %s" % sink["quiet_hours_timezone"])


def _check_header(report, section, i):
    """log_format must compile, and source_fields must name its header fields."""
    # Imported here: the parsing modules define numba kernels, and the daemon points the kernel
    # cache (NUMBA_CACHE_DIR) at its configured directory only after reading this config.
    from anomaly_detector.parsing.headers import HeaderFormat, HeaderFormatError
    from anomaly_detector.parsing.sources import source_fields_problem

    fields = ()
    if i["log_format"]:
        try:
            fields = HeaderFormat(i["log_format"]).fields
        except HeaderFormatError as exc:
            report.add(ERROR, section, "log_format", str(exc))
            return
    problem = source_fields_problem(list(i["source_fields"]), fields, i["log_format"])
    if problem:
        report.add(ERROR, section, "source_fields", problem)


def _check_regex(report, section, key, pattern):
    try:
        re.compile(pattern)
    except re.error as exc:
        report.add(ERROR, section, key, "not a valid regular expression (%s): %s" % (exc, pattern))
        return
    problem = refusal(pattern)
    if problem:
        report.add(ERROR, section, key, "%s; found '%s'" % (problem, pattern))


# ---- what only a running daemon needs ----------------------------------------------------------

def daemon_shape_problems(path, cfg, index):
    """[paths] and at least one input: checked even when other keys are wrong, so both show at once."""
    report = _Reporter(path, index)
    if not index.section_line(("paths",)):
        paths = cfg.get("paths", {})    # filled with the defaults by the schema layer
        report.add_at(ERROR, 1, ("paths",), "", "section is missing: the daemon needs state_dir and log_dir "
                      "(otherwise it writes under %s and %s)" % (paths.get("state_dir"), paths.get("log_dir")))
    if not _subsections(cfg.get("inputs", {})):
        line = index.section_line(("inputs",)) or 1
        report.add_at(ERROR, line, ("inputs",), "", "expected at least one input subsection such as [[app]] with "
                      "path = /var/log/app.log, found none: the daemon would read nothing")
    return report.problems


def _listeners(cfg):
    """(protocol, address, port, section, key) of every socket the daemon listens on."""
    found = []
    if cfg["http"]["port"]:
        found.append(("tcp", cfg["http"]["bind"], cfg["http"]["port"], ("http",), "port"))
    for name, i in cfg["inputs"].items():
        if i["type"] in _LISTENERS and i["listen_port"]:
            protocol = i["protocol"] if i["type"] == "syslog" else "tcp"
            found.append((protocol, i["listen_address"], i["listen_port"], ("inputs", name), "listen_port"))
    return found


def _check_listeners(report, cfg):
    addresses = [(("http",), "bind", cfg["http"]["bind"])]
    addresses += [(("inputs", n), "listen_address", i["listen_address"]) for n, i in cfg["inputs"].items()
                  if i["type"] in _LISTENERS]
    for section, key, address in addresses:
        problem = _address_syntax(address)
        if problem:
            report.add(ERROR, section, key, problem)
    taken = []
    for protocol, address, port, section, key in _listeners(cfg):
        for other in taken:
            if other[0] == protocol and other[2] == port and _addresses_overlap(address, other[1]):
                report.add(ERROR, section, key, "%s/%s on %s is already taken by %s on %s: give each listener "
                           "its own port" % (port, protocol, address, report.where(other[3], other[4]), other[1]))
                break
        else:
            taken.append((protocol, address, port, section, key))


_WILDCARDS = ("", "0.0.0.0", "::")


def _address_syntax(address):
    """None for an IP literal or a well-formed host name (or nothing: reported as required), else what is wrong."""
    if not address:
        return None
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if ":" in address:
        return "expected an IP address or host name, found %r (the port goes in its own key)" % address
    if re.fullmatch(r"[\d.]+", address) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?",
                                                              address):
        return "expected an IP address or host name, found %r" % address
    return None


def _addresses_overlap(a, b):
    if a in _WILDCARDS or b in _WILDCARDS or a == b:
        return True
    return bool(_resolved(a) & _resolved(b))


def _resolved(address):
    try:
        return {info[4][0] for info in socket.getaddrinfo(address, None)}
    except (OSError, UnicodeError):
        return {address}


def _check_feedback_loops(report, cfg):
    """An output file matched by a file input's glob is read back, scored, written again: a loop.
    Two outputs in one file mix records no reader can tell apart."""
    outputs = _output_files(cfg)
    seen = {}
    for section, key, path, what in outputs:
        other = seen.setdefault(os.path.realpath(path), (section, key, what))
        if other != (section, key, what):
            report.add(ERROR, section, key, "%s %s is also %s (%s): give each output its own file"
                       % (what, path, other[2], report.where(other[0], other[1])))
    globs = [(("inputs", n), i["path"]) for n, i in cfg["inputs"].items() if i["type"] == "file" and i["path"]]
    if not globs:
        return
    for section, key, path, what in outputs:
        for input_section, pattern in globs:
            if _glob_matches(pattern, path):
                report.add(ERROR, section, key, "%s %s is matched by %s = %s: the daemon would read its own "
                           "output back (a feedback loop); write it outside the inputs' globs"
                           % (what, path, report.where(input_section, "path"), pattern))
                break


def _output_files(cfg):
    out = []
    for key, what in (("scored_lines", "the scored-lines file"), ("incidents", "the incidents file")):
        if cfg["outputs"][key]:
            out.append((("outputs",), key, cfg["outputs"][key], what))
    # as worker.detector.dead_letter_path resolves it (not imported: it pulls in the scoring stack)
    if cfg["outputs"]["dead_letter"]:
        out.append((("outputs",), "dead_letter", cfg["outputs"]["dead_letter"], "the dead-letter file"))
    else:
        out.append((("paths",), "state_dir", os.path.join(cfg["paths"]["state_dir"], "dead-letter", "dead-letter.jsonl"),
                    "the dead-letter file"))
    log_dir = cfg["paths"]["log_dir"]
    if cfg["logging"]["to_file"]:
        out.append((("paths",), "log_dir", os.path.join(log_dir, LOG_FILE_NAME), "the daemon's log"))
    if cfg["logging"]["access_log"]:
        out.append((("paths",), "log_dir", os.path.join(log_dir, "access.log"), "the HTTP access log"))
    for name, sink in _subsections(cfg["alerting"]):
        if sink["type"] == "file" and sink["path"]:
            out.append((("alerting", name), "path", sink["path"], "the alert file"))
    return out


def _glob_matches(pattern, path):
    """Whether glob.glob(pattern) would list path (once it exists), comparing component by component."""
    pattern_parts = os.path.abspath(pattern).split(os.sep)
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        parts = candidate.split(os.sep)
        if len(parts) == len(pattern_parts) and all(
                fnmatch.fnmatchcase(p, g) and not (p.startswith(".") and not g.startswith("."))
                for p, g in zip(parts, pattern_parts)):
            return True
    return False


def environment_problems(path, cfg, index, daemon=True):
    report = _Reporter(path, index)
    if daemon:
        _check_addresses_resolve(report, cfg)
        _check_file_inputs_are_files(report, cfg)
        _check_http_files(report, cfg["http"])
    for key in ("state_dir", "log_dir"):
        _check_writable_dir(report, ("paths",), key, cfg["paths"][key])
    for name, i in cfg["inputs"].items():
        if i["type"] == "file" and i["path"] and not glob.glob(i["path"]):
            report.add(WARNING, ("inputs", name), "path",
                       "no file matches %s yet; it will be read when it appears" % i["path"])
    if cfg["outputs"]["scored_lines"]:
        _check_writable_dir(report, ("outputs",), "scored_lines", os.path.dirname(cfg["outputs"]["scored_lines"]) or ".")
    for name, sink in _subsections(cfg["alerting"]):
        for key in ("secret_file", "smtp_password_file"):
            if sink.get(key) and not os.access(sink[key], os.R_OK):
                report.add(ERROR, ("alerting", name), key, "%s cannot be read by this user (missing or not "
                           "readable): the sink cannot sign or log in" % sink[key])
    return report.problems


def _check_http_files(report, http):
    """The sidecar's certificate, key and token file: one that cannot be used refuses the start or the
    reload (a running sidecar keeps what it serves), rather than a daemon serving plain HTTP or no /admin."""
    # Imported here: only the daemon's environment checks need the sidecar's modules (see _check_noise).
    from anomaly_detector.metrics.admin import token_file_exposed, token_file_problem
    from anomaly_detector.metrics.tls import tls_problem
    if http["tls_cert"] and http["tls_key"]:
        problem = tls_problem(http["tls_cert"], http["tls_key"])
        if problem:
            report.add(ERROR, ("http",), "tls_cert" if http["tls_cert"] else "tls_key", problem)
    path = http["admin_token_file"]
    problem = token_file_problem(path)
    if problem:
        report.add(ERROR, ("http",), "admin_token_file", problem)
    elif path and token_file_exposed(path):
        report.add(WARNING, ("http",), "admin_token_file", "%s is readable by other users: chmod 600 it" % path)
    if path and not http["tls_cert"] and not _is_loopback(http["bind"]):
        report.add(WARNING, ("http",), "bind", "%s is reachable from other machines and /admin/* sends its bearer "
                   "token in clear text: set tls_cert and tls_key, or bind 127.0.0.1" % http["bind"])
    if http["incidents_api_token"] and not path:
        report.add(ERROR, ("http",), "incidents_api_token", "GET /api/incidents would need the admin token, and "
                   "admin_token_file is not set: set it, or incidents_api_token = false")
    elif not http["incidents_api_token"] and not _is_loopback(http["bind"]):
        report.add(WARNING, ("http",), "incidents_api_token", "%s is reachable from other machines and GET "
                   "/api/incidents shows log lines without a token: set incidents_api_token = true"
                   % http["bind"])


def _is_loopback(address):
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False   # a host name: it may resolve to a routable address


def _check_writable_dir(report, section, key, directory):
    """Warn when the directory neither is writable nor can be created by this user."""
    probe = os.path.abspath(directory)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        report.add(ERROR, section, key, "%s is a file, expected a directory" % probe)
    elif not os.access(probe, os.W_OK | os.X_OK):
        verb = "writable" if probe == os.path.abspath(directory) else "creatable (%s is not writable)" % probe
        report.add(WARNING, section, key, "%s is not %s by this user" % (directory, verb))


def _check_addresses_resolve(report, cfg):
    """A listen address must be one of this machine's: an IP literal or a name that resolves to one."""
    addresses = [(("http",), "bind", cfg["http"]["bind"])]
    addresses += [(("inputs", n), "listen_address", i["listen_address"]) for n, i in cfg["inputs"].items()
                  if i["type"] in _LISTENERS]
    for section, key, address in addresses:
        if _address_syntax(address) or address in _WILDCARDS:
            continue    # reported by the semantic check, or binds every address
        # the family the daemon binds with: IPv6 for an IPv6 literal, IPv4 for anything else
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            infos = socket.getaddrinfo(address, 0, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as exc:
            # asked again only when the answer was "no such address" (EAI_AGAIN, a slow or absent
            # resolver, is not worth a second wait during a reload)
            if (family == socket.AF_INET and getattr(exc, "errno", None) in _NO_ADDRESS
                    and _resolves(address)):
                report.add(ERROR, section, key, "%r has no IPv4 address: a host name is listened on over IPv4; "
                           "for IPv6 write the address itself (such as ::1)" % address)
                continue
            report.add(ERROR, section, key, "expected an IP address or a host name that resolves, found %r "
                       "(%s)" % (address, getattr(exc, "strerror", None) or exc))
            continue
        if not any(_can_bind(info) for info in infos):
            report.add(ERROR, section, key, "%s is not an address of this machine: nothing can listen on it"
                       % address)


_NO_ADDRESS = tuple(getattr(socket, name) for name in ("EAI_ADDRFAMILY", "EAI_NODATA", "EAI_NONAME")
                    if hasattr(socket, name))


def _resolves(address):
    try:
        return bool(socket.getaddrinfo(address, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE))
    except (OSError, UnicodeError):
        return False


def _can_bind(info):
    family, kind, proto, _name, sockaddr = info
    try:
        with socket.socket(family, kind, proto) as sock:
            sock.bind(sockaddr[:1] + (0,) + tuple(sockaddr[2:]))
        return True
    except OSError:
        return False


def _check_file_inputs_are_files(report, cfg):
    for name, i in cfg["inputs"].items():
        if i["type"] != "file" or not i["path"]:
            continue
        if not glob.has_magic(i["path"]) and os.path.isdir(i["path"]):
            report.add(ERROR, ("inputs", name), "path", "expected a file or a glob, found the directory %s "
                       "(it would read nothing); to read its files write e.g. %s"
                       % (i["path"], os.path.join(i["path"], "*.log")))
            continue
        matches = glob.glob(i["path"])
        if matches and all(os.path.isdir(m) for m in matches):
            report.add(WARNING, ("inputs", name), "path", "%s matches only directories (%s), which are not read"
                       % (i["path"], ", ".join(sorted(matches)[:3])))
