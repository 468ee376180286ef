"""The email sink against a real SMTP server (aiosmtpd) on 127.0.0.1: STARTTLS with a certificate the
sink checks, AUTH inside TLS, one mail per event with a plain-text and an HTML part, log text escaped."""
import email
import email.policy
import shutil
import ssl
import subprocess

import pytest

from anomaly_detector.alerting.sinks import SinkConfigError, build_sink
from anomaly_detector.alerting.sinks.base import DeliveryError
from tests.integration.daemon_harness import free_port

aiosmtpd = pytest.importorskip("aiosmtpd", reason="aiosmtpd (the test extra) is not installed")
from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import AuthResult  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")


def certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return str(key), str(cert)


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.authenticated))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"alerts" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp(tmp_path):
    key, cert = certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), tls_context=context,
                            require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    controller.start()
    yield controller, inbox, cert
    controller.stop()


def section(tmp_path, controller, cert, **keys):
    (tmp_path / "password").write_text("s3cret\n")
    base = {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": controller.port, "smtp_security": "starttls",
            "smtp_ca_file": cert, "smtp_username": "alerts", "smtp_password_file": str(tmp_path / "password"),
            "from_address": "detector@example.com", "to_addresses": ["oncall@example.com", "team@example.com"],
            "timeout_seconds": 5.0}
    return dict(base, **keys)


def event(kind="opened"):
    return {"id": "abc-0", "event": kind, "incident_id": "abc", "rev": 0, "at": 1000.0, "seq": 1, "writer": "worker-0",
            "incident": {"source": "app\r\nBcc: victim@example.com", "kind": "rule_burst", "severity": "critical",
                         "reason": "critical rule: 6 lines", "score": 95.0, "template_id": 4,
                         "template": "disk <*> failed", "expected": "0", "observed": "6",
                         "samples": ["<script>alert(1)</script> disk sda failed"]}}


def test_a_mail_with_both_parts_over_starttls_and_auth(tmp_path, smtp):
    controller, inbox, cert = smtp
    build_sink("mail", section(tmp_path, controller, cert)).send(event())
    (mail_from, rcpts, content, authenticated) = inbox.messages[0]
    assert mail_from == "detector@example.com" and rcpts == ["oncall@example.com", "team@example.com"]
    assert authenticated
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg["Bcc"] is None and "victim" not in (msg["To"] or "")
    assert msg["Subject"].startswith("[anomaly-detector] OPENED critical: rule_burst on app")
    assert msg["Message-ID"] == "<abc-0@anomaly-detector>"
    plain = msg.get_body(("plain",)).get_content()
    rich = msg.get_body(("html",)).get_content()
    assert "critical rule: 6 lines" in plain and "<script>alert(1)</script> disk sda failed" in plain
    assert "&lt;script&gt;" in rich and "<script>" not in rich and "disk &lt;*&gt; failed" in rich


def test_wrong_password_certificate_or_no_starttls_fail_without_sending(tmp_path, smtp):
    controller, inbox, cert = smtp
    (tmp_path / "wrong").write_text("nope")
    with pytest.raises(DeliveryError) as err:
        build_sink("mail", section(tmp_path, controller, cert, smtp_password_file=str(tmp_path / "wrong"))).send(event())
    assert err.value.reason == "auth"
    with pytest.raises(DeliveryError) as err:   # the system CAs do not know the test certificate
        build_sink("mail", section(tmp_path, controller, cert, smtp_ca_file="")).send(event())
    assert err.value.reason == "connect"
    assert inbox.messages == []
    with pytest.raises(SinkConfigError, match="smtp_password_file"):
        build_sink("mail", section(tmp_path, controller, cert, smtp_password_file=str(tmp_path / "missing")))


def test_no_starttls_offered_is_a_failure_not_plain_text(tmp_path):
    inbox = Inbox()
    plain = Controller(inbox, hostname="127.0.0.1", port=free_port())
    plain.start()
    try:
        sink = build_sink("mail", dict(section(tmp_path, plain, ""), smtp_username="", smtp_password_file=""))
        with pytest.raises(DeliveryError) as err:
            sink.send(event())
        assert err.value.reason == "connect" and "STARTTLS" in str(err.value)
        assert inbox.messages == []
        build_sink("mail", dict(section(tmp_path, plain, ""), smtp_username="", smtp_password_file="",
                                smtp_security="none")).send(event("resolved"))
        assert len(inbox.messages) == 1
    finally:
        plain.stop()
