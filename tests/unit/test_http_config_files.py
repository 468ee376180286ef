"""[http] tls_cert/tls_key and admin_token_file checked at load: each unusable file is one error line."""
import os

from anomaly_detector.config.loader import load_config
from anomaly_detector.metrics.admin import read_token
from anomaly_detector.metrics.tls import server_context, tls_problem
from tests.tlsfiles import make_ca, make_server_cert


def _config(tmp_path, http):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s/state\nlog_dir = %s/log\n[inputs]\n[[app]]\npath = %s/app.log\n"
                    "[http]\nport = 0\n%s" % (tmp_path, tmp_path, tmp_path, http))
    return str(path)


def _errors(path):
    _cfg, problems = load_config(path)
    return [p.render() for p in problems if p.severity == "error"]


def test_a_good_pair_loads_and_a_bad_one_is_one_line(tmp_path):
    directory = str(tmp_path)
    make_ca(directory, "ca")
    make_ca(directory, "other")
    cert, key = make_server_cert(directory, "server", "ca")
    assert tls_problem(cert, key) == ""
    assert server_context(cert, key).minimum_version.name == "TLSv1_2"
    assert _errors(_config(tmp_path, "tls_cert = %s\ntls_key = %s\n" % (cert, key))) == []
    wrong_key = os.path.join(directory, "other.key")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    for cert_path, key_path, words in [(cert, wrong_key, "does not belong to the certificate"),
                                       (str(garbage), key, "not a PEM certificate"),
                                       (cert, str(tmp_path / "missing.key"), "is not a file")]:
        errors = _errors(_config(tmp_path, "tls_cert = %s\ntls_key = %s\n" % (cert_path, key_path)))
        assert len(errors) == 1 and words in errors[0] and "[http] tls_" in errors[0], errors
        assert "\n" not in errors[0]


def test_token_file_checks(tmp_path):
    token = tmp_path / "admin.token"
    assert _errors(_config(tmp_path, "admin_token_file = %s\n" % token))[0].endswith(
        "cannot read %s: No such file or directory" % token)
    token.write_text("short\n")
    assert "must hold one token of 16 to 4096 characters" in _errors(_config(tmp_path, "admin_token_file = %s\n"
                                                                             % token))[0]
    token.write_text("  a-long-enough-token-123  \nsecond line ignored\n")
    token.chmod(0o644)
    _cfg, problems = load_config(_config(tmp_path, "admin_token_file = %s\n" % token))
    assert [p.render().split(": ", 1)[1] for p in problems if p.key == "admin_token_file"] == [
        "warning: [http] admin_token_file: %s is readable by other users: chmod 600 it" % token]
    assert read_token(str(token)) == ("a-long-enough-token-123", "")
    assert read_token("") == ("", "[http] admin_token_file is not set")


def test_a_token_over_plain_http_off_loopback_is_a_warning(tmp_path):
    token = tmp_path / "admin.token"
    token.write_text("a-long-enough-token-123\n")
    token.chmod(0o600)
    for bind, warned in (("127.0.0.1", False), ("::1", False), ("0.0.0.0", True)):
        _cfg, problems = load_config(_config(tmp_path, "bind = %s\nadmin_token_file = %s\n" % (bind, token)))
        warnings = [p.render() for p in problems if p.key == "bind"]
        assert bool(warnings) == warned and all("clear text" in w for w in warnings), (bind, warnings)
