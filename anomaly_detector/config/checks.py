"""Checks past the schema: settings that contradict each other, and what the machine must allow.

Called by loader.py after the schema passes. Semantic problems are errors; environment
problems are warnings when the daemon may still start (a directory it will create) and
errors when it cannot (a TLS key it cannot read).
"""
import glob
import os
import re
import zoneinfo

from anomaly_detector.config.problems import ERROR, WARNING, Problem
from anomaly_detector.ipc.control import MAX_INPUTS

MB = 1024 * 1024
_URL_SINKS = ("alertmanager", "webhook", "slack")
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
        self.problems.append(Problem(severity, self.path, line, section, key, message))


def semantic_problems(path, cfg, index):
    report = _Reporter(path, index)
    _check_processing(report, cfg["processing"])
    for name, section in cfg["inputs"].items():
        _check_input(report, ("inputs", name), section)
    if len(cfg["inputs"]) > MAX_INPUTS:  # each input has a stats row in shared memory
        report.add(ERROR, ("inputs",), None, "expected at most %d inputs, found %d: merge files into one "
                   "input with a glob" % (MAX_INPUTS, len(cfg["inputs"])))
    for name, section in _subsections(cfg["alerting"]):
        _check_sink(report, ("alerting", name), section)
    for name, section in cfg["rules"].items():
        _check_regex(report, ("rules", name), "pattern", section["pattern"])
    for pattern in cfg["parsing"]["extra_masks"]:
        _check_regex(report, ("parsing",), "extra_masks", pattern)
    for pattern in cfg["detection"]["tier4"].get("session_patterns", []):
        _check_regex(report, ("detection", "tier4"), "session_patterns", pattern)
    return report.problems


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
        for key in ("url", "stream", "group"):
            if not i[key]:
                report.add(ERROR, section, key, "required for type = redis")
        if i["url"] and not i["url"].startswith(("redis://", "rediss://", "unix://")):
            report.add(ERROR, section, "url", "expected redis://host:port/db, found %s" % i["url"])
    try:
        zoneinfo.ZoneInfo(i["timezone"])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        report.add(ERROR, section, "timezone", "expected an IANA time zone such as UTC or Europe/Paris, found %s"
                   % i["timezone"])


def _check_sink(report, section, s):
    kind = s["type"]
    if kind in _URL_SINKS and not s["url"].startswith(("http://", "https://")):
        report.add(ERROR, section, "url", "required for type = %s: expected an http(s) URL, found %r"
                   % (kind, s["url"]))
    if kind == "file" and not s["path"]:
        report.add(ERROR, section, "path", "required for type = file")
    if kind == "email" and not (s["to_addresses"] and s["from_address"]):
        report.add(ERROR, section, "to_addresses", "type = email needs from_address and to_addresses")


def _check_regex(report, section, key, pattern):
    try:
        re.compile(pattern)
    except re.error as exc:
        report.add(ERROR, section, key, "not a valid regular expression (%s): %s" % (exc, pattern))


def environment_problems(path, cfg, index):
    report = _Reporter(path, index)
    for key in ("state_dir", "log_dir"):
        _check_writable_dir(report, ("paths",), key, cfg["paths"][key])
    for name, i in cfg["inputs"].items():
        if i["type"] == "file" and i["path"] and not glob.glob(i["path"]):
            report.add(WARNING, ("inputs", name), "path",
                       "no file matches %s yet; it will be read when it appears" % i["path"])
    if cfg["outputs"]["scored_lines"]:
        _check_writable_dir(report, ("outputs",), "scored_lines", os.path.dirname(cfg["outputs"]["scored_lines"]) or ".")
    return report.problems


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
