"""The service files under etc/: the systemd unit, sysusers, cron.d and logrotate.d entries.

Each is checked against the code it drives (paths, exit codes, timeouts, the user) and, where the
tool is installed, by the tool itself (systemd-analyze verify, systemd-sysusers, logrotate -d). A
cron job is run as cron would run it, against a temporary config. The live rotation of a running
daemon's logs is tests/integration/test_logrotate.py.
"""
import configparser
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from anomaly_detector import cli
from anomaly_detector.config.loader import DEFAULT_CONFIG_PATH
from anomaly_detector.kernel_cache import APP_DIR
from anomaly_detector.supervisor.children import KILL_GRACE_SECONDS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ETC = os.path.join(ROOT, "etc")
UNIT = os.path.join(ETC, "systemd", "anomaly-detector.service")
SYSUSERS = os.path.join(ETC, "sysusers.d", "anomaly-detector.conf")
CRON = os.path.join(ETC, "cron.d", "anomaly-detector")
LOGROTATE = os.path.join(ETC, "logrotate.d", "anomaly-detector")
SPEC = os.path.join(ROOT, "anomaly_detector", "config", "spec.ini")
USER = "anomaly-detector"


def read(path):
    with open(path) as f:
        return f.read()


def unit():
    """{section: {key: [values in order]}} of the unit file (a key may repeat)."""
    sections, current = {}, None
    for line in read(UNIT).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key):
    values = unit()["Service"].get(key)
    assert values, "%s= is missing from [Service]" % key
    return values[-1]


def spec_default(section, key):
    """A key's default in the config spec (what the unit must agree with)."""
    text = read(SPEC)
    body = text[text.index("[%s]" % section):]
    match = re.search(r"^%s = \w+\(.*default='?([^')]*)'?\)" % key, body, re.M)
    return match.group(1)


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, "not a plain duration: %r" % value
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


# -- systemd unit -------------------------------------------------------------------------------


def test_unit_is_a_notify_service_reloaded_by_hup_under_its_own_user():
    assert service("Type") == "notify"
    assert service("NotifyAccess") == "main"   # only the supervisor sends sd_notify
    assert service("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert service("User") == USER and service("Group") == USER
    assert service("KillMode") == "mixed"
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_runs_the_console_script_on_the_default_config():
    setup = configparser.ConfigParser()
    setup.read(os.path.join(ROOT, "setup.cfg"))
    script = setup["options.entry_points"]["console_scripts"].split("=")[0].strip()
    assert service("ExecStart") == "/usr/local/bin/%s --config %s" % (script, DEFAULT_CONFIG_PATH)


def test_unit_directories_are_those_the_daemon_uses():
    for key in ("StateDirectory", "LogsDirectory", "CacheDirectory", "RuntimeDirectory"):
        assert service(key) == APP_DIR
    assert spec_default("paths", "state_dir") == "/var/lib/" + service("StateDirectory")
    assert spec_default("paths", "log_dir") == "/var/log/" + service("LogsDirectory")
    assert os.path.dirname(spec_default("service", "pid_file")) == "/run/" + service("RuntimeDirectory")
    # kernel_cache reads $CACHE_DIRECTORY, which CacheDirectory= sets; the release unpacks beside it.
    assert 'os.environ.get("CACHE_DIRECTORY"' in read(os.path.join(ROOT, "anomaly_detector", "kernel_cache.py"))
    assert "SHIV_ROOT=%C/" + service("CacheDirectory") + "/shiv" in unit()["Service"]["Environment"]


def test_unit_timeouts_cover_the_daemons_own():
    stop = float(spec_default("service", "shutdown_timeout_seconds"))
    assert seconds(service("TimeoutStopSec")) > stop + KILL_GRACE_SECONDS
    # A reload stops the children (up to the same bound) while the supervisor keeps pinging.
    assert seconds(service("WatchdogSec")) >= 10
    # A cold kernel compile, even without EXTEND_TIMEOUT_USEC.
    assert seconds(service("TimeoutStartSec")) >= 180
    assert service("Restart") == "on-failure"
    assert service("RestartPreventExitStatus") == str(cli.EXIT_INVALID)


def test_unit_hardening_that_numba_tolerates():
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes")):
        assert service(key) == value, key
    # numba writes machine code into memory it then executes: W^X would kill the first kernel call.
    assert "MemoryDenyWriteExecute" not in unit()["Service"]
    assert re.search(r"^# .*Never MemoryDenyWriteExecute=yes: numba", read(UNIT), re.M)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    # verify insists that ExecStart= exists: point it at the checkout's launcher, the rest as shipped.
    text = read(UNIT).replace("ExecStart=/usr/local/bin/anomaly_detector",
                              "ExecStart=" + os.path.join(ROOT, "bin", "anomaly_detector"))
    path = tmp_path / "anomaly-detector.service"
    path.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    # An unknown key or a bad value is only a warning on stderr: any output fails the test.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_the_service_user(tmp_path):
    (tmp_path / "etc").mkdir()
    done = subprocess.run(["systemd-sysusers", "--root", str(tmp_path), SYSUSERS], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines()}
    assert passwd[USER][5] == "/var/lib/" + service("StateDirectory")
    assert passwd[USER][6] == "/usr/sbin/nologin"
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc" / "group").read_text().splitlines()}
    assert USER in groups and USER in groups["adm"][3].split(",")


# -- cron.d -------------------------------------------------------------------------------------

CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")


def cron_jobs():
    """[(time fields, user, command)] of the cron.d file; every other line is a comment or VAR=value."""
    jobs = []
    for number, line in enumerate(read(CRON).splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#") or ENV_LINE.match(line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, "line %d: five time fields, a user and a command expected: %r" % (number, line)
        jobs.append((fields[:5], fields[5], fields[6]))
    return jobs


def test_cron_file_follows_cron_d_rules():
    name = os.path.basename(CRON)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", name), "cron.d (run-parts) ignores names with dots: %s" % name
    text = read(CRON)
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    mode = stat.S_IMODE(os.stat(CRON).st_mode)
    assert not mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH), oct(mode)
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        staged = subprocess.run(["git", "ls-files", "-s", "etc/cron.d/anomaly-detector"], cwd=ROOT,
                                capture_output=True, text=True).stdout
        assert staged == "" or staged.startswith("100644 "), staged
    env = dict(line.split("=", 1) for line in text.splitlines() if ENV_LINE.match(line))
    assert env["SHELL"] == "/bin/sh" and "/usr/local/bin" in env["PATH"].split(":")
    jobs = cron_jobs()
    assert jobs
    for fields, user, command in jobs:
        for field, (low, high) in zip(fields, CRON_RANGES):
            assert CRON_FIELD.match(field), field
            assert all(low <= int(n) <= high for n in re.findall(r"\d+", field.split("/")[0])), field
        assert user == USER
        assert "%" not in command, "an unescaped %% ends a cron command: %r" % command
        assert command.startswith("flock -n /var/lib/%s/" % service("StateDirectory")), command


def test_cron_jobs_use_only_options_the_cli_has():
    help_text = subprocess.run([sys.executable, "-m", "anomaly_detector", "--help"], capture_output=True,
                               text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    for _fields, _user, command in cron_jobs():
        for option in re.findall(r"\s(--[a-z][a-z-]*)", command):
            assert option in help_text, "%s is not an option of anomaly_detector" % option


def run_job(command, tmp_path, config):
    """A cron job's command as cron runs it (sh -c, the file's PATH), on a temporary config and lock."""
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    launcher = shim / "anomaly_detector"
    launcher.write_text('#!/bin/sh\nexec "%s" "%s" "$@"\n' % (sys.executable, os.path.join(ROOT, "bin", "anomaly_detector")))
    launcher.chmod(0o755)
    command = command.replace(DEFAULT_CONFIG_PATH, str(config)).replace("/var/lib/anomaly-detector/", "%s/" % tmp_path)
    env = {"PATH": "%s:/usr/local/bin:/usr/bin:/bin" % shim, "HOME": str(tmp_path), "PYTHONPATH": ROOT,
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba"))}
    return subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) is not installed")
def test_cron_jobs_run_quietly_on_a_good_config_and_mail_a_broken_one(tmp_path):
    config = tmp_path / "config.ini"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("hello\n")
    good = ("[service]\npid_file = {d}/ad.pid\n[paths]\nstate_dir = {d}/state\nlog_dir = {d}/log\n"
            "[inputs]\n[[app]]\ntype = file\npath = {d}/logs/app.log\n").format(d=tmp_path)
    for _fields, _user, command in cron_jobs():
        config.write_text(good)
        done = run_job(command, tmp_path, config)
        assert done.returncode == 0 and done.stderr == "", done.stderr   # cron mails any stderr
        config.write_text(good + "[processing]\nworkers = many\n")
        done = run_job(command, tmp_path, config)
        assert done.returncode != 0 and "workers" in done.stderr, done.stderr


# -- logrotate.d --------------------------------------------------------------------------------


def test_logrotate_renames_without_signalling_the_daemon():
    text = read(LOGROTATE)
    directives = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert directives[0] == "%s/*.log {" % spec_default("paths", "log_dir") and directives[-1] == "}"
    body = directives[1:-1]
    assert "su %s %s" % (USER, USER) in body and "create 0640 %s %s" % (USER, USER) in body
    assert {"missingok", "notifempty", "compress", "delaycompress"} <= set(body)
    # The daemon reopens a renamed file by itself; HUP would reload it; copytruncate loses lines.
    assert not [d for d in body if d.split()[0] in ("copytruncate", "postrotate", "prerotate", "firstaction")]


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_debug_run_accepts_the_file(tmp_path):
    text = read(LOGROTATE).replace("/var/log/anomaly-detector/", "%s/" % tmp_path).replace(
        "%s %s" % (USER, USER), "root root")
    (tmp_path / "anomaly-detector.log").write_text("a line\n")
    conf = tmp_path / "conf"
    conf.write_text(text)
    done = subprocess.run(["logrotate", "-d", "-s", str(tmp_path / "state"), str(conf)], capture_output=True,
                          text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "error" not in output.lower(), output
    assert "considering log %s/anomaly-detector.log" % tmp_path in output
