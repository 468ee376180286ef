"""Configs that used to pass --validate-config and then did harm: each is refused, on its exact line."""
import os
import socket

import pytest

from anomaly_detector.config.loader import REPLAY, load_config, load_spec
from anomaly_detector.config.problems import ERROR


def _config(tmp_path, body, paths=True):
    """Write a config: [paths] under tmp_path (optional), then body with {d} replaced by tmp_path."""
    header = "[paths]\nstate_dir = {d}/state\nlog_dir = {d}/log\n" if paths else ""
    text = (header + body).replace("{d}", str(tmp_path))
    path = tmp_path / "config.ini"
    path.write_text(text)
    return str(path), text


def _line(text, marker):
    """Number of the first line that starts with marker."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(marker))


def _errors(path, **kwargs):
    cfg, problems = load_config(path, **kwargs)
    errors = [p for p in problems if p.severity == ERROR]
    assert (cfg is None) == bool(errors)
    return [p.render() for p in errors]


def _assert_refused(path, text, marker, *words, **kwargs):
    """Some error is on the marker's line and holds every word; every error has a line."""
    errors = _errors(path, **kwargs)
    assert errors, "accepted:\n%s" % text
    line = _line(text, marker)
    on_line = [e for e in errors if e.startswith("%s:%d: error: " % (path, line))]
    assert any(all(w in e for w in words) for e in on_line), (line, words, errors)
    assert all(e.startswith(path + ":") and e.split(":")[1].isdigit() for e in errors), errors
    return errors


FILE_INPUT = "[inputs]\n[[app]]\npath = {d}/in/*.log\n"


# ---- NaN and infinities, for every float key of the spec -----------------------------------------

def _float_keys():
    """(section path, key) of every float in spec.ini; __many__ sections get a concrete name."""
    found = []

    def walk(node, path):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, path + (key,))
            elif isinstance(value, str) and value.startswith("float("):
                found.append((path, key))

    walk(load_spec(), ())
    return found


FLOAT_KEYS = _float_keys()


def _section_text(path, key, value):
    names = {"inputs": "app", "rules": "oom", "alerting": "hook"}
    concrete = [names.get(path[i - 1], p) if p == "__many__" else p for i, p in enumerate(path)]
    needs = {"inputs": "path = {d}/in/*.log\n", "rules": "pattern = out of memory\n",
             "alerting": "type = webhook\nurl = http://127.0.0.1:9/x\n"}
    text = ""
    for depth, name in enumerate(concrete, 1):
        text += "%s%s%s\n" % ("[" * depth, name, "]" * depth)
    text += needs.get(concrete[0], "") if len(concrete) == 2 and path[-1] == "__many__" else ""
    return text + "%s = %s\n" % (key, value)


def test_spec_has_the_floats_the_operator_hit():
    keys = {k for _, k in FLOAT_KEYS}
    assert {"heartbeat_timeout_seconds", "scan_interval_seconds", "shutdown_timeout_seconds", "learning_rate",
            "anomaly_threshold"} <= keys and len(FLOAT_KEYS) > 30


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "+Infinity"])
@pytest.mark.parametrize("where", FLOAT_KEYS, ids=[".".join(p + (k,)) for p, k in FLOAT_KEYS])
def test_every_float_key_refuses_nan_and_infinities(tmp_path, where, value):
    section, key = where
    body = _section_text(section, key, value)
    if section[:1] != ("inputs",):
        body = FILE_INPUT + body
    path, text = _config(tmp_path, body)
    marker = "%s = %s" % (key, value)
    errors = _assert_refused(path, text, marker, key, "found %r" % value, environment=False)
    if value.lower() == "nan":
        assert any("NaN and infinities are refused" in e for e in errors), errors


def test_nan_is_refused_for_replay_too(tmp_path):
    path, text = _config(tmp_path, "[processing]\nheartbeat_timeout_seconds = nan\n")
    _assert_refused(path, text, "heartbeat_timeout_seconds", "heartbeat_timeout_seconds", environment=False,
                    purpose=REPLAY)


# ---- files with nothing the daemon needs ---------------------------------------------------------

@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   # and another\n"])
def test_empty_or_comment_only_file_is_refused_on_line_1(tmp_path, content):
    path = tmp_path / "config.ini"
    path.write_text(content)
    assert _errors(str(path)) == [
        "%s:1: error: the file holds no settings (empty or only comments): the daemon needs [paths] "
        "(state_dir, log_dir) and at least one [inputs] subsection" % path]


def test_config_without_paths_is_refused_on_line_1(tmp_path):
    path, text = _config(tmp_path, FILE_INPUT, paths=False)
    _assert_refused(path, text, "[inputs]", "[paths]: section is missing", "/var/lib/anomaly-detector",
                    environment=False)


def test_config_without_inputs_is_refused_at_the_inputs_header(tmp_path):
    path, text = _config(tmp_path, "[processing]\nworkers = 1\n[inputs]\n[http]\nport = 9\n")
    _assert_refused(path, text, "[inputs]", "[inputs]: expected at least one input subsection", environment=False)


def test_replay_accepts_a_config_holding_only_paths(tmp_path):
    path, _ = _config(tmp_path, "")
    assert load_config(path, environment=False, purpose=REPLAY)[0] is not None


# ---- duplicate sections and keys -----------------------------------------------------------------

def test_duplicate_section_names_both_lines_and_nothing_else(tmp_path):
    body = "[service]\nname = a\n[http]\nport = 9000\n[service]\nshutdown_timeout_seconds = 5\n" + FILE_INPUT
    path, text = _config(tmp_path, body)
    assert _errors(path, environment=False) == [
        "%s:8: error: duplicate section [service] at lines 4 and 8: merge them into one" % path]


def test_duplicate_subsection(tmp_path):
    path, text = _config(tmp_path, FILE_INPUT + "[[app]]\npath = /x\n")
    assert _errors(path, environment=False) == [
        "%s:7: error: duplicate section [inputs.app] at lines 5 and 7: merge them into one" % path]


# ---- listeners -----------------------------------------------------------------------------------

def _http_input(name, port, address="127.0.0.1"):
    return "[[%s]]\ntype = http\nlisten_address = %s\nlisten_port = %d\n" % (name, address, port)


def _syslog_input(name, port, protocol="udp", address="127.0.0.1"):
    return "[[%s]]\ntype = syslog\nlisten_address = %s\nlisten_port = %d\nprotocol = %s\n" % (
        name, address, port, protocol)


def test_ingest_port_equal_to_the_sidecar_port(tmp_path):
    path, text = _config(tmp_path, "[http]\nport = 9100\n[inputs]\n" + _http_input("ingest", 9100))
    errors = _assert_refused(path, text, "listen_port = 9100", "[inputs.ingest] listen_port",
                             "9100/tcp on 127.0.0.1 is already taken by [http] port (line 5)", environment=False)
    assert len(errors) == 1


def test_two_syslog_inputs_on_one_udp_port(tmp_path):
    path, text = _config(tmp_path, "[inputs]\n" + _syslog_input("a", 5514) + _syslog_input("b", 5514))
    second = text.index("[[b]]")
    line = _line(text, "[[b]]") + 3
    assert text[second:].splitlines()[3] == "listen_port = 5514"
    assert _errors(path, environment=False) == [
        "%s:%d: error: [inputs.b] listen_port: 5514/udp on 127.0.0.1 is already taken by [inputs.a] listen_port "
        "(line 8) on 127.0.0.1: give each listener its own port" % (path, line)]


def test_two_tcp_listeners_wildcard_overlaps_every_address(tmp_path):
    body = "[inputs]\n" + _syslog_input("a", 6000, "tcp", "0.0.0.0") + _http_input("b", 6000, "127.0.0.1")
    path, text = _config(tmp_path, body)
    assert _errors(path, environment=False) == [
        "%s:%d: error: [inputs.b] listen_port: 6000/tcp on 127.0.0.1 is already taken by [inputs.a] listen_port "
        "(line 8) on 0.0.0.0: give each listener its own port" % (path, _line(text, "[[b]]") + 3)]


def test_same_port_on_udp_and_tcp_is_fine(tmp_path):
    body = "[inputs]\n" + _syslog_input("a", 5514, "udp") + _syslog_input("b", 5514, "tcp")
    path, _ = _config(tmp_path, body)
    assert _errors(path, environment=False) == []


def test_same_port_on_two_distinct_addresses_is_fine(tmp_path):
    body = "[inputs]\n" + _syslog_input("a", 5514, "udp", "127.0.0.1") + _syslog_input("b", 5514, "udp", "127.0.0.2")
    path, _ = _config(tmp_path, body)
    assert _errors(path, environment=False) == []


def test_listen_address_with_a_port_is_refused(tmp_path):
    path, text = _config(tmp_path, "[inputs]\n" + _syslog_input("a", 5514, address="127.0.0.1:514"))
    _assert_refused(path, text, "listen_address", "[inputs.a] listen_address",
                    "expected an IP address or host name, found '127.0.0.1:514' (the port goes in its own key)",
                    environment=False)


def test_listen_address_that_is_not_an_ip(tmp_path):
    path, text = _config(tmp_path, "[http]\nbind = 10.0.0.300\n" + FILE_INPUT)
    _assert_refused(path, text, "bind", "[http] bind", "found '10.0.0.300'", environment=False)


def test_listen_address_that_does_not_resolve(tmp_path):
    path, text = _config(tmp_path, "[inputs]\n" + _http_input("h", 9200, "no-such-host.invalid"))
    _assert_refused(path, text, "listen_address", "[inputs.h] listen_address",
                    "expected an IP address or a host name that resolves, found 'no-such-host.invalid'")


def test_listen_address_of_another_machine(tmp_path):
    path, text = _config(tmp_path, "[http]\nbind = 192.0.2.1\n" + FILE_INPUT)
    _assert_refused(path, text, "bind", "[http] bind", "192.0.2.1 is not an address of this machine")


def test_a_name_that_resolves_locally_is_accepted(tmp_path):
    socket.getaddrinfo("localhost", 0)
    path, _ = _config(tmp_path, "[http]\nbind = localhost\n" + FILE_INPUT)
    assert _errors(path) == []


def test_a_name_with_only_ipv6_addresses_is_refused(tmp_path, monkeypatch):
    """The daemon listens on a host name over IPv4 (an IPv6 literal over IPv6): a name that
    resolves only to IPv6 addresses passed the check and then failed the start."""
    real = socket.getaddrinfo

    def fake(host, port, family=0, type=0, proto=0, flags=0):
        if host != "v6only.test":
            return real(host, port, family, type, proto, flags)
        if family not in (0, socket.AF_INET6):
            raise socket.gaierror(socket.EAI_ADDRFAMILY, "Address family for hostname not supported")
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    path, text = _config(tmp_path, "[inputs]\n" + _http_input("h", 9200, "v6only.test"))
    _assert_refused(path, text, "listen_address", "[inputs.h] listen_address", "'v6only.test' has no IPv4 address")


# ---- feedback loops: an output read back by an input ---------------------------------------------

@pytest.mark.parametrize("body,marker,words", [
    ("[outputs]\nscored_lines = {d}/in/scored.log\n", "scored_lines", ["[outputs] scored_lines",
                                                                         "the scored-lines file"]),
    ("[outputs]\nincidents = {d}/in/incidents.log\n", "incidents =", ["[outputs] incidents", "incidents file"]),
    ("[alerting]\n[[f]]\ntype = file\npath = {d}/in/alerts.log\n", "path = {d}/in/alerts", ["[alerting.f] path"]),
])
def test_output_file_inside_an_input_glob(tmp_path, body, marker, words):
    path, text = _config(tmp_path, FILE_INPUT + body)
    marker = marker.replace("{d}", str(tmp_path))
    _assert_refused(path, text, marker, *words, "is matched by [inputs.app] path (line 6)", "feedback loop",
                    environment=False)


def test_dead_letter_file_inside_an_input_glob(tmp_path):
    """A poison line written to the dead-letter file and read back kills a worker again, forever."""
    path, text = _config(tmp_path, FILE_INPUT + "[outputs]\ndead_letter = {d}/in/dead.log\n")
    _assert_refused(path, text, "dead_letter", "[outputs] dead_letter", "the dead-letter file", "feedback loop",
                    environment=False)


def test_default_dead_letter_file_inside_an_input_glob(tmp_path):
    path, text = _config(tmp_path, "[inputs]\n[[app]]\npath = {d}/state/dead-letter/*.jsonl\n")
    _assert_refused(path, text, "state_dir", "[paths] state_dir", "dead-letter.jsonl", "feedback loop",
                    environment=False)


def test_two_outputs_in_one_file(tmp_path):
    """Scored lines and incidents (or poison lines) mixed in one file: no reader can tell them apart."""
    path, text = _config(tmp_path, FILE_INPUT + "[outputs]\nscored_lines = {d}/out.jsonl\n"
                         "incidents = {d}/out.jsonl\n")
    _assert_refused(path, text, "incidents", "[outputs] incidents", "the incidents file",
                    "is also the scored-lines file", environment=False)


def test_log_dir_inside_an_input_glob(tmp_path):
    path, text = _config(tmp_path, "[inputs]\n[[app]]\npath = {d}/log/*.log\n")
    errors = _assert_refused(path, text, "log_dir", "[paths] log_dir", "the daemon's log", environment=False)
    assert any("the HTTP access log" in e for e in errors)


def test_access_log_off_and_log_file_off_remove_the_loop(tmp_path):
    path, _ = _config(tmp_path, "[inputs]\n[[app]]\npath = {d}/log/*.log\n[logging]\nto_file = false\n"
                      "access_log = false\n")
    assert _errors(path, environment=False) == []


def test_output_beside_the_glob_is_fine(tmp_path):
    path, _ = _config(tmp_path, FILE_INPUT + "[outputs]\nscored_lines = {d}/in/scored.jsonl\n")
    assert _errors(path, environment=False) == []


# ---- a directory as a file input -----------------------------------------------------------------

def test_directory_as_file_input_path(tmp_path):
    os.makedirs(tmp_path / "in")
    path, text = _config(tmp_path, "[inputs]\n[[app]]\npath = {d}/in\n")
    _assert_refused(path, text, "path = ", "[inputs.app] path", "found the directory", "%s/in/*.log" % tmp_path)


# ---- patterns that can stall a worker ------------------------------------------------------------

@pytest.mark.parametrize("body,marker,key", [
    ("[rules]\n[[evil]]\npattern = ^(a+)+$\n", "pattern", "[rules.evil] pattern"),
    ("[parsing]\nextra_masks = (x+x+)+y\n", "extra_masks", "[parsing] extra_masks"),
    ("[detection]\n[[tier4]]\nsession_patterns = (\\w+\\s?)+$\n", "session_patterns", "[detection.tier4] session_patterns"),
])
def test_pattern_that_backtracks_catastrophically(tmp_path, body, marker, key):
    path, text = _config(tmp_path, FILE_INPUT + body)
    _assert_refused(path, text, marker, key, "pattern can backtrack catastrophically (nested quantifier",
                    "rewrite it", environment=False)


def test_rule_message_is_exact(tmp_path):
    path, text = _config(tmp_path, FILE_INPUT + "[rules]\n[[evil]]\npattern = ^(a+)+$\n")
    assert _errors(path, environment=False) == [
        "%s:9: error: [rules.evil] pattern: pattern can backtrack catastrophically (nested quantifier '(a+)+'): "
        "rewrite it so the inner and the outer repetition cannot take the same characters, e.g. '(a+)+' -> 'a+', "
        "'(\\w+\\s?)+' -> '[\\w\\s]+', '(.*a){3}' -> '([^a]*a){3}'; found '^(a+)+$'" % path]


def test_unsafe_rule_is_refused_for_replay_too(tmp_path):
    path, text = _config(tmp_path, "[rules]\n[[evil]]\npattern = .*.*=\n")
    _assert_refused(path, text, "pattern", "compete for the same characters", environment=False, purpose=REPLAY)


def test_missing_inputs_and_a_bad_value_are_reported_together(tmp_path):
    path, text = _config(tmp_path, "[processing]\nheartbeat_timeout_seconds = nan\n")
    errors = _errors(path, environment=False)
    assert len(errors) == 2
    assert errors[0].startswith("%s:1: error: [inputs]: expected at least one input subsection" % path)
    assert errors[1].startswith("%s:5: error: [processing] heartbeat_timeout_seconds: " % path)
