"""The broken-config table: every mistake is reported with its line, section and key, never a traceback."""
import os
import subprocess
import sys
from unittest import mock

import pytest

from anomaly_detector.config.loader import REPLAY, default_config, load_config, load_spec
from anomaly_detector.config.problems import ERROR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = os.path.join(ROOT, "etc", "anomaly-detector", "config.ini")

# (case id, INI text after a valid [paths] header, marker text on the expected line, expected words)
CASES = [
    ("typo_key", "[processing]\nwrokers = 2\n", "wrokers", ["wrokers", "did you mean 'workers'"]),
    ("typo_section", "[procesing]\nworkers = 2\n", "[procesing]", ["[procesing]", "did you mean 'processing'"]),
    ("unknown_top_level_key", "foo = 1\n", "foo", ["foo", "unknown key"]),
    ("unknown_input_key", "[inputs]\n[[app]]\npath = /tmp/x.log\npathh = 1\n", "pathh", ["[inputs.app] pathh"]),
    ("wrong_type_int", "[processing]\nworkers = two\n", "workers", ["workers", "an integer from 1 to 64", "'two'"]),
    ("too_small", "[processing]\nworkers = 0\n", "workers", ["workers", "from 1 to 64", "'0'"]),
    ("too_big", "[processing]\nworkers = 1000\n", "workers", ["workers", "'1000'"]),
    ("float_for_int", "[processing]\nbatch_size = 1.5\n", "batch_size", ["batch_size", "'1.5'"]),
    ("bad_boolean", "[detection]\n[[tier1]]\nenabled = maybe\n", "enabled", ["[detection.tier1] enabled", "true or false"]),
    ("bad_option", "[inputs]\n[[app]]\npath = /tmp/x\nformat = xml\n", "format", ["format", "'plain'", "'xml'"]),
    ("bad_input_type", "[inputs]\n[[app]]\ntype = kafka\npath = /x\n", "type", ["type", "'kafka'"]),
    ("missing_input_path", "[inputs]\n[[app]]\ntype = file\n", "[[app]]", ["[inputs.app] path", "required for type = file"]),
    ("tls_cert_alone", "[http]\ntls_cert = /tmp/c.pem\n", "tls_cert", ["[http] tls_cert", "must be set together"]),
    ("email_without_from", "[alerting]\n[[mail]]\ntype = email\nto_addresses = a@example.com,\n", "[[mail]]",
     ["[alerting.mail] from_address", "required for type = email"]),
    ("email_password_in_clear", "[alerting]\n[[mail]]\ntype = email\nfrom_address = a@x\nto_addresses = b@x,\n"
     "smtp_username = u\nsmtp_password_file = /tmp/p\nsmtp_security = none\n", "smtp_security",
     ["[alerting.mail] smtp_security", "in clear"]),
    ("syslog_sink_bad_url", "[alerting]\n[[log]]\ntype = syslog\nurl = http://x\n", "url = http",
     ["[alerting.log] url", "udp://host:port"]),
    ("slack_without_url", "[alerting]\n[[chat]]\ntype = slack\n", "[[chat]]",
     ["[alerting.chat] url", "required for type = slack"]),
    ("quiet_hours_not_a_window", "[alerting]\n[[f]]\ntype = file\npath = /tmp/a.jsonl\nquiet_hours = 22h-7h\n",
     "quiet_hours", ["[alerting.f] quiet_hours", "HH:MM-HH:MM"]),
    ("quiet_hours_unknown_zone", "[alerting]\n[[f]]\ntype = file\npath = /tmp/a.jsonl\nquiet_hours = 22:00-07:00\n"
     "quiet_hours_timezone = Mars/Olympus\n", "quiet_hours_timezone",
     ["[alerting.f] quiet_hours_timezone", "IANA time zone"]),
    ("unknown_severity", "[alerting]\n[[f]]\ntype = file\npath = /tmp/a.jsonl\nseverities = critical, info\n",
     "severities", ["[alerting.f] severities", "critical, warning", "info"]),
    ("key_of_another_sink_type", "[alerting]\n[[hook]]\ntype = webhook\nurl = http://127.0.0.1:9/x\nsmtp_host = mx\n",
     "smtp_host", ["[alerting.hook] smtp_host", "not used by type = webhook"]),
    ("retry_max_below_initial", "[alerting]\n[[f]]\ntype = file\npath = /tmp/a.jsonl\nretry_initial_seconds = 10\n"
     "retry_max_seconds = 5\n", "retry_max_seconds", ["[alerting.f] retry_max_seconds", "at least retry_initial"]),
    ("redis_sink_bad_url", "[alerting]\n[[fleet]]\ntype = redis\nurl = http://x\n", "url = http",
     ["[alerting.fleet] url", "redis://host:port/db"]),
    ("redis_sink_quiet_hours", "[alerting]\n[[fleet]]\ntype = redis\nurl = redis://x/0\nquiet_hours = 22:00-07:00\n",
     "quiet_hours", ["[alerting.fleet] quiet_hours", "not used by type = redis"]),
    ("redis_reader_without_a_sink", "[alerting]\n[[fleet]]\ntype = redis\nurl = redis://x/0\nconsume = true\n",
     "consume", ["[alerting.fleet] consume", "needs another sink"]),
    ("redis_reader_timeout_over_heartbeat", "[processing]\nheartbeat_timeout_seconds = 10\n[alerting]\n[[fleet]]\n"
     "type = redis\nurl = redis://x/0\nconsume = true\ntimeout_seconds = 15\n[[f]]\ntype = file\npath = /tmp/a\n",
     "timeout_seconds = 15", ["[alerting.fleet] timeout_seconds", "heartbeat_timeout_seconds"]),
    ("redis_stream_max_entries_too_small", "[alerting]\n[[fleet]]\ntype = redis\nurl = redis://x/0\n"
     "stream_max_entries = 10\n", "stream_max_entries", ["[alerting.fleet] stream_max_entries"]),
    ("file_sink_without_path", "[alerting]\n[[f]]\ntype = file\n", "[[f]]",
     ["[alerting.f] path", "required for type = file"]),
    ("retention_days_range", "[retention]\nspool_days = 0\n", "spool_days", ["[retention] spool_days", "from 1 to 3650"]),
    ("redis_plain_format", "[inputs]\n[[bus]]\ntype = redis\nurl = redis://127.0.0.1:6379/0\nstream = s\ngroup = g\n"
     "format = plain\n", "format", ["[inputs.bus] format", "expected jsonl or auto"]),
    ("duplicate_key", "[processing]\nworkers = 2\nworkers = 3\n", "workers = 3", ["[processing] workers: duplicate key at lines 5 and 6"]),
    ("duplicate_section", "[processing]\nworkers = 2\n[processing]\nbatch_size = 10\n", "[processing]\nbatch_size",
     ["error: duplicate section [processing] at lines 4 and 6: merge them into one"]),
    ("unterminated_quote", "[service]\nname = \"abc\n", "name", ["parse error in value"]),
    ("missing_equals", "[processing]\nworkers\n", "workers", ["invalid line"]),
    ("broken_bracket", "[processing\nworkers = 2\n", "[processing", ["invalid line"]),
    ("ring_smaller_than_batches", "[processing]\nbatch_size = 5000\nring_size = 6000\n", "ring_size",
     ["ring_size", "2 x batch_size"]),
    ("ring_bytes_vs_line", "[processing]\nmax_line_bytes = 1048576\nring_bytes = 1048576\n", "ring_bytes =",
     ["ring_bytes", "2 x max_line_bytes"]),
    ("rings_exceed_memory", "[processing]\nworkers = 8\nring_bytes = 268435456\nmax_memory_mb = 1024\n",
     "ring_bytes", ["exceeds max_memory_mb"]),
    ("port_out_of_range", "[http]\nport = 70000\n", "port", ["port", "from 0 to 65535", "'70000'"]),
    ("port_not_number", "[http]\nport = http\n", "port", ["port", "'http'"]),
    ("learning_rate_zero", "[detection]\nlearning_rate = 0\n", "learning_rate", ["learning_rate", "from 0.0001 to 1"]),
    ("threshold_over_100", "[detection]\nanomaly_threshold = 150\n", "anomaly_threshold", ["anomaly_threshold"]),
    ("bad_rule_regex", "[rules]\n[[oom]]\npattern = ([a-z\n", "pattern", ["[rules.oom] pattern", "regular expression"]),
    ("rule_without_pattern", "[rules]\n[[oom]]\nthreshold = 3\n", "[[oom]]", ["[rules.oom] pattern", "required key is missing"]),
    ("sink_without_type", "[alerting]\n[[am]]\nurl = http://127.0.0.1:9093\n", "[[am]]", ["[alerting.am] type", "required"]),
    ("alertmanager_without_url", "[alerting]\n[[am]]\ntype = alertmanager\n", "[[am]]",
     ["[alerting.am] url", "required for type = alertmanager"]),
    ("webhook_bad_scheme", "[alerting]\n[[hook]]\ntype = webhook\nurl = ftp://x/y\n", "url = ftp",
     ["[alerting.hook] url", "http:// or https://"]),
    ("email_without_addresses", "[alerting]\n[[mail]]\ntype = email\n", "[[mail]]",
     ["[alerting.mail] to_addresses", "required for type = email"]),
    ("redis_missing_stream", "[inputs]\n[[bus]]\ntype = redis\nurl = redis://127.0.0.1:6379/0\ngroup = g\n", "[[bus]]",
     ["[inputs.bus] stream", "required for type = redis"]),
    ("redis_bad_url", "[inputs]\n[[bus]]\ntype = redis\nurl = http://x\nstream = s\ngroup = g\n", "url = http",
     ["[inputs.bus] url", "expected redis://host:port/db"]),
    ("redis_wait_over_heartbeat", "[inputs]\n[[bus]]\ntype = redis\nurl = redis://h:1/0\nstream = s\ngroup = g\n"
     "socket_timeout_seconds = 5\n[processing]\nheartbeat_timeout_seconds = 4\n", "socket_timeout_seconds",
     ["[inputs.bus] socket_timeout_seconds", "below [processing] heartbeat_timeout_seconds"]),
    ("redis_backoff_order", "[inputs]\n[[bus]]\ntype = redis\nurl = redis://h:1/0\nstream = s\ngroup = g\n"
     "reconnect_min_seconds = 5\nreconnect_max_seconds = 1\n", "reconnect_max_seconds",
     ["[inputs.bus] reconnect_max_seconds", "at least reconnect_min_seconds"]),
    ("listener_without_port", "[inputs]\n[[sys]]\ntype = syslog\n", "[[sys]]", ["[inputs.sys] listen_port", "fixed port"]),
    ("bad_timezone", "[inputs]\n[[app]]\npath = /x\ntimezone = Mars/Base\n", "timezone", ["timezone", "Mars/Base"]),
    ("comma_makes_list", "[inputs]\n[[app]]\npath = /x\nlog_format = <Date>, <Content>\n", "log_format",
     ["log_format", "put the value in quotes"]),
    ("bad_extra_mask", "[parsing]\nextra_masks = (unclosed,\n", "extra_masks", ["extra_masks", "regular expression"]),
    ("bad_log_level", "[logging]\nlevel = LOUD\n", "level", ["level", "'LOUD'", "'DEBUG'"]),
    ("line_limit_too_small", "[processing]\nmax_line_bytes = 10\n", "max_line_bytes", ["max_line_bytes", "from 256"]),
    ("empty_state_dir", "[service]\nname = \"\"\n", "name", ["[service] name", "from 1 to 64"]),
    ("too_many_inputs", "[inputs]\n" + "".join("[[f%d]]\npath = /x/%d\n" % (i, i) for i in range(65)), "[inputs]",
     ["[inputs]", "at most 64 inputs, found 65"]),
    ("idle_timeout_zero", "[inputs]\n[[sys]]\ntype = syslog\nlisten_port = 514\nprotocol = tcp\nidle_timeout_seconds = 0\n",
     "idle_timeout_seconds", ["idle_timeout_seconds", "from 1 to 86400"]),
    ("source_field_not_in_format",
     "[inputs]\n[[shop]]\npath = /x\nlog_format = <Timestamp> <Level> <Host> <Content>\nsource_fields = Host, Program\n",
     "source_fields", ["[inputs.shop] source_fields", "Program is not a field of log_format", "Timestamp, Level, Host"]),
    ("source_fields_without_log_format", "[inputs]\n[[shop]]\npath = /x\nsource_fields = Host\n", "source_fields",
     ["[inputs.shop] source_fields", "needs a log_format"]),
    ("source_field_is_content", "[inputs]\n[[shop]]\npath = /x\nlog_format = <Host> <Content>\nsource_fields = Content\n",
     "source_fields", ["source_fields", "Content is the message"]),
    ("bad_log_format", "[inputs]\n[[shop]]\npath = /x\nlog_format = <Host <Content>\n", "log_format",
     ["[inputs.shop] log_format", "must be letters, digits and underscores"]),
    ("bad_source_prefix", "[inputs]\n[[shop]]\npath = /x\nsource_prefix = always\n", "source_prefix",
     ["source_prefix", "'always'"]),
    ("max_sources_zero", "[processing]\nmax_sources = 0\n", "max_sources", ["max_sources", "from 1 to 100000"]),
    ("http_header_timeout_zero", "[http]\nheader_timeout_seconds = 0\n", "header_timeout_seconds",
     ["header_timeout_seconds", "from 0.1 to 300"]),
    ("situation_dependency_without_arrow", "[situations]\ndependencies = app->db, web app\n", "dependencies",
     ["[situations] dependencies", "'web app'", "DEPENDENT->CAUSE"]),
    ("situation_window_zero", "[situations]\nwindow_seconds = 0\n", "window_seconds",
     ["window_seconds", "from 10 to 86400"]),
]


def _write(tmp_path, body):
    state, logs = tmp_path / "state", tmp_path / "log"
    header = "[paths]\nstate_dir = %s\nlog_dir = %s\n" % (state, logs)
    path = tmp_path / "config.ini"
    path.write_text(header + body)
    return str(path), header + body


ONE_INPUT = "[inputs]\n[[app]]\npath = /var/log/app/*.log\n"


def _line_of(text, marker):
    before = text[: text.index(marker)]
    return before.count("\n") + 1


@pytest.mark.parametrize("case,body,marker,words", CASES, ids=[c[0] for c in CASES])
def test_broken_config_is_rejected_with_line_and_key(tmp_path, case, body, marker, words):
    path, text = _write(tmp_path, body)
    cfg, problems = load_config(path, environment=False)
    assert cfg is None, "config with %s was accepted" % case
    errors = [p for p in problems if p.severity == ERROR]
    expected_line = _line_of(text, marker)
    rendered = [p.render() for p in errors]
    matching = [r for r in rendered if all(w in r for w in words)]
    assert matching, "no error mentions %s: %s" % (words, rendered)
    assert any(r.startswith("%s:%d: error:" % (path, expected_line)) for r in matching), rendered


def test_source_fields_naming_header_fields_are_valid(tmp_path):
    body = ("[inputs]\n[[shop]]\npath = /x\nlog_format = <Timestamp> <Level> <Host> <Program>: <Content>\n"
            "source_fields = Host, Program\nsource_prefix = off\n")
    path, _ = _write(tmp_path, body)
    cfg, problems = load_config(path, environment=False)
    assert cfg is not None, [p.render() for p in problems]
    assert cfg["inputs"]["shop"]["source_fields"] == ["Host", "Program"]
    assert cfg["inputs"]["shop"]["source_prefix"] == "off"


def test_table_is_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_invalid_utf8_is_one_error_with_its_line(tmp_path):
    path = tmp_path / "config.ini"
    path.write_bytes(b"[processing]\nworkers = 2\n[service]\nname = caf\xe9\n")
    cfg, problems = load_config(str(path))
    assert cfg is None
    assert [p.render() for p in problems] == ["%s:4: error: not valid UTF-8 text (byte 0xe9)" % path]


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Editors on Windows save UTF-8 with a BOM: the file is valid and its lines keep their numbers."""
    path, text = _write(tmp_path, ONE_INPUT + "[processing]\nworkers = 0\n")
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + text.encode())
    _cfg, problems = load_config(path, environment=False)
    assert [p.render() for p in problems if p.severity == ERROR] == [
        "%s:8: error: [processing] workers: expected an integer from 1 to 64, found '0'" % path]
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf[processing]\nworkers = 2\n\xe9\n")
    assert [p.render() for p in load_config(path)[1]] == ["%s:3: error: not valid UTF-8 text (byte 0xe9)" % path]


@pytest.mark.parametrize("make,words", [
    (lambda d: str(d / "missing.ini"), "config file not found"),
    (lambda d: str(d), "is a directory"),
])
def test_missing_or_directory_is_one_clear_line(tmp_path, make, words):
    cfg, problems = load_config(make(tmp_path))
    assert cfg is None and len(problems) == 1 and words in problems[0].render()


def test_unreadable_file_is_one_clear_line(tmp_path):
    path, _ = _write(tmp_path, "")
    if os.geteuid() != 0:
        os.chmod(path, 0)
        problems = load_config(path)[1]
    else:  # root reads any file, so make open() fail the way it does for other users
        with mock.patch("builtins.open", side_effect=PermissionError(13, "Permission denied")):
            problems = load_config(path)[1]
    assert [p.message for p in problems] == ["config file not readable by this user (check its permissions)"]


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    path, _ = _write(tmp_path, "[processing]\nworkers = 0\nwrokers = 3\nbatch_size = x\n[http]\nport = -1\n" + ONE_INPUT)
    errors = [p for p in load_config(path, environment=False)[1] if p.severity == ERROR]
    assert {p.key for p in errors} == {"workers", "wrokers", "batch_size", "port"}
    assert [p.line for p in errors] == sorted(p.line for p in errors)


def test_valid_minimal_config_fills_every_default(tmp_path):
    path, _ = _write(tmp_path, ONE_INPUT)
    cfg, problems = load_config(path)
    # nothing matches the input's glob on a test machine
    assert {p.key for p in problems} <= {"path"}
    assert not [p for p in problems if p.severity == ERROR]
    assert cfg["processing"]["workers"] == 2 and cfg["http"]["port"] == 8080
    assert cfg["detection"] == default_config()["detection"]


def test_config_holding_only_paths_is_valid_for_replay_not_for_the_daemon(tmp_path):
    path, text = _write(tmp_path, "")
    assert load_config(path, purpose=REPLAY)[0] is not None
    cfg, problems = load_config(path)
    assert cfg is None
    assert [p.render() for p in problems if p.severity == ERROR] == [
        "%s:1: error: [inputs]: expected at least one input subsection such as [[app]] with path = "
        "/var/log/app.log, found none: the daemon would read nothing" % path]


def test_default_config_covers_every_spec_section():
    spec, cfg = load_spec(), default_config()
    for section in spec.sections:
        assert section in cfg


def test_shipped_config_validates():
    cfg, problems = load_config(SHIPPED)
    assert cfg is not None, [p.render() for p in problems]
    assert all(p.severity != ERROR for p in problems)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "anomaly_detector", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_cli_validate_shipped_config_exits_zero():
    result = _cli("--config", SHIPPED, "--validate-config")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_cli_reports_each_problem_on_one_line_without_traceback(tmp_path):
    path, _ = _write(tmp_path, "[processing]\nwrokers = 2\nworkers = 0\n" + ONE_INPUT)
    result = _cli("--config", path, "--validate-config")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("%s:5: error: [processing] wrokers" % path)
    assert lines[1].startswith("%s:6: error: [processing] workers" % path)
    assert lines[-1].endswith("2 error(s), 0 warning(s): invalid")


def test_cli_config_path_from_environment(tmp_path):
    path, _ = _write(tmp_path, ONE_INPUT)
    env = dict(os.environ, ANOMALY_DETECTOR_CONFIG=path)
    result = _cli("--validate-config", env=env)
    assert result.returncode == 0 and path in result.stdout


def test_cli_missing_file_is_one_line(tmp_path):
    result = _cli("--config", str(tmp_path / "nope.ini"), "--validate-config")
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].endswith("config file not found (set --config or ANOMALY_DETECTOR_CONFIG)")


def test_cli_version():
    from anomaly_detector import __version__

    result = _cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == "anomaly_detector %s" % __version__


def test_a_redis_input_is_accepted_with_its_keys(tmp_path):
    path, _text = _write(tmp_path, "[inputs]\n[[bus]]\ntype = redis\nurl = redis://127.0.0.1:6379/0\nstream = s\n"
                         "group = g\nconsumer = c1\nbatch_count = 10\nblock_ms = 50\nclaim_idle_seconds = 2\n")
    cfg, problems = load_config(path, environment=False)
    assert cfg is not None, [p.render() for p in problems]
    assert cfg["inputs"]["bus"]["claim_idle_seconds"] == 2.0 and cfg["inputs"]["bus"]["consumer"] == "c1"


def test_a_redis_key_on_another_input_type_is_refused(tmp_path):
    """A stream named on a file input would be silently ignored: say so, at its line."""
    path, text = _write(tmp_path, "[inputs]\n[[app]]\npath = /x.log\n[[bus]]\ntype = file\npath = /y.log\n"
                        "stream = s\n")
    cfg, problems = load_config(path, environment=False)
    rendered = [p.render() for p in problems]
    assert cfg is None
    assert any("[inputs.bus] stream: used only by type = redis, not by type = file" in r
               and ":%d:" % _line_of(text, "stream = s") in r for r in rendered), rendered


def test_sink_environment_and_link_local_targets_are_checked(tmp_path):
    body = ("[alerting]\n[[hook]]\ntype = webhook\nurl = http://169.254.169.254/latest\n"
            "[[signed]]\ntype = webhook\nurl = http://127.0.0.1:9/x\nsecret_file = %s\n" % (tmp_path / "missing"))
    path, _text = _write(tmp_path, ONE_INPUT + body)
    _cfg, problems = load_config(path)
    rendered = [p.render() for p in problems]
    assert any("[alerting.hook] url" in r and "allow_link_local" in r for r in rendered), rendered
    assert any("[alerting.signed] secret_file" in r and "cannot be read" in r for r in rendered), rendered
