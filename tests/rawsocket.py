"""Raw-socket helpers shared by the HTTP and syslog tests (unit and integration)."""


def read_until_closed(sock):
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    data = b""
    while True:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not part:
            return data
        data += part
