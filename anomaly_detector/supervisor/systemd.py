"""sd_notify for Type=notify units with the standard library only (after gunicorn's systemd.py).

Called by the supervisor alone (NotifyAccess=main): extend_timeout() while warm-up compiles kernels,
ready() after warm-up, reloading() then ready()
around a SIGHUP reload, stopping() on SIGTERM, watchdog() every watchdog_interval()/2 from its loop.
Every function is a no-op returning False when NOTIFY_SOCKET is unset (not run by systemd).
"""
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(message):
    """Send one datagram of KEY=VALUE lines to $NOTIFY_SOCKET; True when it was sent.

    A failure is logged and swallowed: losing a status message must never stop the daemon.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %s failed: %s", address.replace("\0", "@"), exc)
        return False
    return True


def ready(status=None):
    """Start-up (or a reload) is complete and the daemon is serving."""
    return notify("READY=1" + _status_line(status))


def reloading(status=None):
    """A reload started; systemd >= 253 needs MONOTONIC_USEC with it to match the following READY=1."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}" + _status_line(status))


def stopping(status=None):
    """A graceful stop started."""
    return notify("STOPPING=1" + _status_line(status))


def extend_timeout(seconds, status_text=None):
    """Still starting (compiling kernels): systemd waits `seconds` more past TimeoutStartSec."""
    return notify("EXTEND_TIMEOUT_USEC=%d" % int(seconds * 1e6) + _status_line(status_text))


def watchdog():
    """Keep-alive for WatchdogSec=; send every watchdog_interval() / 2."""
    return notify("WATCHDOG=1")


def status(text):
    """Free-form one-line status shown by systemctl status."""
    return notify("STATUS=" + _one_line(text))


def watchdog_interval():
    """The watchdog timeout in seconds when systemd expects pings from this process, else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1e6
    except ValueError:
        return None
    return seconds if seconds > 0 else None


def _status_line(text):
    return "" if text is None else "\nSTATUS=" + _one_line(text)


def _one_line(text):
    return " ".join(str(text).split())
