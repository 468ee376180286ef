"""One HTTP POST for the webhook and Alertmanager sinks: timeouts, no redirects, no link-local targets.

The host is resolved here and every address checked before connecting; the connection goes to the
checked address (the Host header and TLS name stay the host's), so a DNS answer that changes between
the check and the connect cannot point a request at a cloud metadata service. http.client follows no
redirect: a 3xx is a failure (reason "redirect"), since a receiver that moved must be configured anew.
"""
import http.client
import ipaddress
import socket
import ssl
import urllib.parse

from anomaly_detector.alerting.sinks.base import DeliveryError

# Cloud metadata services outside 169.254.0.0/16 and fe80::/10 (AWS IPv6, Alibaba).
_METADATA = (ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_network("100.100.100.200/32"))
MAX_RESPONSE_BYTES = 65536


def check_url(url):
    """(scheme, host, port, path) of an http(s) URL; ValueError with the reason otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("url = %r is not an http:// or https:// URL with a host" % url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError("url = %r has a bad port" % url) from None
    return parts.scheme, parts.hostname, port, (parts.path or "/") + ("?" + parts.query if parts.query else "")


def forbidden(address):
    """Why `address` may not be sent to without allow_link_local ("" when it may)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if ip.is_link_local:
        return "link-local address %s (cloud metadata services live there)" % ip
    if any(ip in net for net in _METADATA):
        return "cloud metadata address %s" % ip
    return ""


def resolve(host, port, allow_link_local):
    """The addresses to try for host:port; DeliveryError when none is allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DeliveryError("connect", "cannot resolve %s: %s" % (host, exc.strerror)) from None
    allowed, refused = [], []
    for family, _type, _proto, _name, sockaddr in infos:
        why = "" if allow_link_local else forbidden(sockaddr[0])
        (refused if why else allowed).append(why or (family, sockaddr))
    if not allowed:
        raise DeliveryError("refused_address", "%s: %s; set allow_link_local = true to allow it"
                            % (host, refused[0]))
    return allowed


class _PinnedConnection(http.client.HTTPConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        family, sockaddr = self._address
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(sockaddr)


class _PinnedTLSConnection(_PinnedConnection):
    def __init__(self, host, port, address, timeout, context):
        super().__init__(host, port, address, timeout)
        self._context = context

    def connect(self):
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def post(url, body, headers, timeout, allow_link_local=False):
    """POST `body` (bytes); returns (status, response bytes) for a 2xx, raises DeliveryError otherwise."""
    scheme, host, port, path = check_url(url)
    last = None
    for address in resolve(host, port, allow_link_local):
        if scheme == "https":
            conn = _PinnedTLSConnection(host, port, address, timeout, ssl.create_default_context())
        else:
            conn = _PinnedConnection(host, port, address, timeout)
        try:
            conn.request("POST", path, body=body, headers=dict(headers, **{"Content-Length": str(len(body))}))
            response = conn.getresponse()
            data = response.read(MAX_RESPONSE_BYTES)
        except socket.timeout:
            last = DeliveryError("timeout", "%s: no answer within %.0f s" % (url, timeout))
            continue
        except (OSError, http.client.HTTPException) as exc:
            last = DeliveryError("connect", "%s: %s" % (url, getattr(exc, "strerror", None) or exc))
            continue
        finally:
            conn.close()
        return _judge(url, response.status, data)
    raise last


def _judge(url, status, data):
    if 200 <= status < 300:
        return status, data
    detail = data[:200].decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        raise DeliveryError("redirect", "%s answered %d (redirects are not followed)" % (url, status))
    if status >= 500 or status in (408, 429):
        raise DeliveryError("http_5xx" if status >= 500 else "http_4xx", "%s answered %d %s" % (url, status, detail))
    raise DeliveryError("rejected", "%s refused the alert: %d %s" % (url, status, detail), retry=False)
