"""HTTPS for the metrics sidecar: the server context from [http] tls_cert and tls_key (stdlib ssl).

Built by the sidecar at its start (metrics/sidecar.py), so the reload path, which restarts the
sidecar, loads a renewed certificate; config/checks.py calls tls_problem() first, so a bad pair
refuses the start or the reload with one line and the running sidecar keeps its certificate.
metrics/httpd.py wraps each accepted connection and runs the handshake in the connection's own
thread, under the header deadline, so a client that never finishes one cannot hold the server.
"""
import os
import ssl


def server_context(cert, key):
    """An ssl.SSLContext serving cert/key (TLS 1.2 and later); raises ssl.SSLError or OSError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def tls_enabled(http):
    return bool(http["tls_cert"] or http["tls_key"])


def tls_problem(cert, key):
    """One line on why cert/key cannot be served, or "" when they can."""
    if not cert or not key:
        return "tls_cert and tls_key must be set together (set both for HTTPS, neither for HTTP)"
    for name, path in (("tls_cert", cert), ("tls_key", key)):
        if not os.path.isfile(path):
            return "%s %s is not a file" % (name, path)
        if not os.access(path, os.R_OK):
            return "%s %s is not readable by this user" % (name, path)
    try:
        server_context(cert, key)
    except ssl.SSLError as exc:
        return "cannot serve tls_cert %s with tls_key %s: %s" % (cert, key, _reason(exc))
    except OSError as exc:
        return "cannot read tls_cert %s or tls_key %s: %s" % (cert, key, exc.strerror or exc)
    return ""


def _reason(exc):
    # ssl's messages name the OpenSSL routine; the reason ("KEY_VALUES_MISMATCH", "PEM lib") is what helps.
    reason = getattr(exc, "reason", None)
    if reason == "KEY_VALUES_MISMATCH":
        return "the key does not belong to the certificate"
    if reason in (None, "PEM_LIB", "NO_START_LINE") or "PEM lib" in str(exc):
        return "not a PEM certificate and private key (%s)" % (reason or exc)
    return str(reason).lower().replace("_", " ")
