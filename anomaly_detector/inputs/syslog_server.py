"""Receive syslog over UDP (one datagram = one message) or TCP (RFC 6587 framing) without blocking.

Neighbours: inputs/listener.py polls it in the listener process and appends every Chunk's lines to the
input's spool (inputs/spool.py), synced before the next poll; parsing.framing.LineFramer cuts LF-framed
TCP streams; parsing.syslog parses the messages later, in the workers. This module only frames.

Delivery: what a poll returned is on disk before the socket is read again, and the input process
commits the spool only once the workers acknowledged it, so a read message survives a crash, a
reload and a stop (at-least-once). The sockets are bound by the supervisor (bind_syslog_socket) and
outlive the listener, so datagrams and connections queue in the kernel while it restarts; datagrams
arriving while the socket buffer is full are still dropped by the kernel (UDP has no backpressure; the
kernel counts them in /proc/net/udp, read by udp_socket_drops into udp_receive_drops_total). When the spool is full the listener drops UDP messages (counted)
and stops reading TCP connections, whose peers then wait on the TCP window.

Messages are single lines: a message that itself contains LF (a datagram with inner newlines, or an
octet-counted TCP frame, which RFC 6587 allows to hold any byte) is kept whole as one message, each inner
LF written as `#012` -- rsyslog's escaping of control characters on receive, familiar to operators -- and
the result is cut to max_line_bytes (counted as truncated) so it always fits a ring slot.
"""
import logging
import os
import re
import selectors
import socket
import time

from anomaly_detector.inputs.file_tail import Chunk
from anomaly_detector.parsing.framing import DEFAULT_MAX_LINE_BYTES, LineFramer

log = logging.getLogger(__name__)

PROTOCOLS = ("udp", "tcp")
# Largest UDP payload: a bigger receive buffer would never be filled.
_DATAGRAM_BYTES = 65535
_TCP_READ_BYTES = 64 << 10
# RFC 6587 MSG-LEN is NONZERO-DIGIT *DIGIT; ten digits already exceed any sane message (and max_line_bytes,
# whose config maximum has 9), so a longer digit run is not a count but text.
_MAX_COUNT_DIGITS = 10
_LISTEN_BACKLOG = 128
# Ask for a roomy kernel buffer so short bursts of datagrams survive between two polls.
_UDP_RCVBUF_BYTES = 4 << 20
_IDLE_CHECK_SECONDS = 1.0
_DROP_CHECK_SECONDS = 1.0
# A full connection table admits a newcomer by closing the longest-silent peer, if silent this long:
# a peer that sent within the last second is a working sender, and the newcomer is refused instead.
EVICT_IDLE_SECONDS = 1.0
# Empty datagrams cost no bytes of the per-poll budget; this keeps a flood of them from holding a poll.
_MAX_DATAGRAMS_PER_POLL = 8192
_LF_ESCAPE = b"#012"


def udp_socket_drops(sock):
    """Datagrams the kernel dropped for this socket (full receive buffer), or None where it cannot tell.

    Read from the `drops` column of /proc/net/udp and /proc/net/udp6 (the row whose inode is the
    socket's): it counts every drop since the socket was made, needs no change to how datagrams are
    received (SO_RXQ_OVFL would need recvmsg and ancillary data on every datagram) and is the number
    operators already compare with `ss -u -a -m` / netstat. Read once a second, never per datagram.
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as rows:
                next(rows, None)  # column titles
                for row in rows:
                    fields = row.split()
                    if len(fields) >= 13 and fields[9] == inode:
                        return int(fields[12])
        except (OSError, ValueError):
            continue
    return None


def one_line(message, max_line_bytes):
    """The message as one line (inner LF escaped, CR of a CRLF dropped) cut to max_line_bytes.

    Returns (line, cut) where cut tells whether bytes were lost to the length bound.
    """
    if b"\n" in message:
        message = message.replace(b"\r\n", b"\n").replace(b"\n", _LF_ESCAPE)
    if len(message) > max_line_bytes:
        return message[:max_line_bytes], True
    return message, False


def strip_trailer(message):
    """Drop one trailing LF or CRLF: the sender's terminator, not part of the message."""
    if message.endswith(b"\r\n"):
        return message[:-2]
    if message.endswith(b"\n"):
        return message[:-1]
    return message


FRAMING_REASONS = ("bad_count", "count_too_large", "overrun", "short_frame")
# Where a new message starts inside an octet-counted frame whose count cannot be right: an octet-count
# header followed by a PRI ("57 <13>", the digits not glued to a preceding digit), or a PRI right after an
# LF ("\n<13>", an LF-framed sender). In a frame whose count was already refused, also a PRI followed by
# what every syslog message has next: RFC 5424's version "1 " or RFC 3164's month ("<13>Mar ").
_BOUNDARY = re.compile(rb"(?<![0-9])[1-9][0-9]{0,9} <(?:[0-9]{1,2}|1[0-8][0-9]|19[01])>"
                       rb"|(?<=\n)<(?:[0-9]{1,2}|1[0-8][0-9]|19[01])>")
_LOOSE_BOUNDARY = re.compile(_BOUNDARY.pattern + rb"|<(?:[0-9]{1,2}|1[0-8][0-9]|19[01])>(?:1 |[A-Z][a-z]{2} )")
# A boundary pattern is at most 10 digits, " <191>" and one byte of context: keep that much of the bytes
# already read so a boundary split over two TCP segments is still seen.
_BOUNDARY_TAIL = _MAX_COUNT_DIGITS + 8


class SyslogStreamFramer:
    """RFC 6587 framing of one TCP connection: octet counting and LF-terminated, chosen per message.

    A message starting with a digit is octet-counted (`<len> <msg>`); anything else (syslog starts with
    `<PRI>`) runs to the next LF. Framing errors are counted in `framing` by reason and never lose the
    stream:
    - bad_count: a digit run that is not a count (leading zero, over ten digits, no space after it); the
      bytes are read as an LF-terminated message, so the stream resynchronises at the next LF.
    - count_too_large: a count over max_line_bytes. It is not waited for: the frame ends at the next
      message start (_LOOSE_BOUNDARY) or at the connection's end, what it holds is one (truncated) message.
    - overrun: a new message starts (_BOUNDARY) before the count is reached: the count was larger than
      the data, so the frame ends there and the next message is read from its own header, instead of
      the count swallowing the messages after it.
    - short_frame: the connection ended (or idled out) before the count was reached; what came is delivered.
    The cost of the boundary check: a well-formed octet-counted message whose text holds "<digits> <PRI>"
    or an LF followed by "<PRI>" (an embedded syslog line) is split there and counted as an overrun; both
    halves are still delivered. RFC 6587's own ambiguity remains: an LF-framed line that begins like a count
    ("12 x") is read as one, as every RFC 6587 receiver does; syslog messages begin with "<PRI>".
    Memory held is at most max_line_bytes + _MAX_COUNT_DIGITS + _BOUNDARY_TAIL + 3 bytes, whatever the input.
    """

    def __init__(self, max_line_bytes=DEFAULT_MAX_LINE_BYTES, on_long_line="truncate"):
        self.lines = LineFramer(max_line_bytes, on_long_line)
        self.max_line_bytes = self.lines.max_line_bytes
        self.on_long_line = on_long_line
        self.framing = dict.fromkeys(FRAMING_REASONS, 0)
        self.truncated = 0
        self.skipped = 0
        self._lf_truncated = 0    # LineFramer's own counters already folded into ours
        self._lf_skipped = 0
        self._state = "start"     # start | count | body | lf
        self._header = bytearray()  # digits of a count being read
        self._reset()

    def buffered(self):
        """Bytes currently held (for the bound checks)."""
        return len(self._header) + len(self._body) + len(self._tail) + len(self.lines._held)

    def feed(self, data):
        """Complete messages in data (bytes, no terminator); partial ones are held for the next feed."""
        out = []
        pos, n = 0, len(data)
        while pos < n:
            state = self._state
            if state == "start":
                self._state = "count" if 48 <= data[pos] <= 57 else "lf"
            elif state == "count":
                pos = self._read_count(data, pos, out)
            elif state == "body":
                pos = self._read_body(data, pos, out)
            else:
                pos = self._read_lf(data, pos, out)
        return out

    def close(self):
        """The peer closed: an LF-framed tail is delivered, so is a half octet-counted message (a short_frame)."""
        out = []
        if self._state == "lf":
            out = self._fold(self.lines.flush())
        elif self._state == "count":
            self.framing["short_frame"] += 1
        elif self._state == "body":
            if self._remaining is not None:
                self.framing["short_frame"] += 1
            if self._body:
                self._finish_counted(out)
        self._reset()
        return out

    def _reset(self):
        self._state = "start"
        self._header = bytearray()
        self._body = bytearray()  # kept bytes of an octet-counted message
        self._tail = b""          # last bytes of the frame read so far, for boundaries split over segments
        self._remaining = 0       # bytes of the octet-counted message still to come; None: count refused
        self._frame_bytes = 0     # bytes of the frame read so far
        self._cut = False         # bytes of the current octet-counted message were dropped

    def _read_count(self, data, pos, out):
        n = len(data)
        while pos < n and 48 <= data[pos] <= 57 and len(self._header) <= _MAX_COUNT_DIGITS:
            self._header.append(data[pos])
            pos += 1
        if pos == n and len(self._header) <= _MAX_COUNT_DIGITS:
            return pos  # the count goes on in the next segment
        header = bytes(self._header)
        self._header = bytearray()
        if pos < n and data[pos] == 32 and header[0] != 48 and len(header) <= _MAX_COUNT_DIGITS:
            count = int(header)
            self._state = "body"
            if count > self.max_line_bytes:
                self.framing["count_too_large"] += 1
                self._remaining = None
            else:
                self._remaining = count
            return pos + 1
        # Not a count: the digits start an LF-terminated message (a bare "42\n" is text, not a frame).
        self.framing["bad_count"] += 1
        self._state = "lf"
        out.extend(self._fold(self.lines.feed(header)))
        return pos

    def _read_body(self, data, pos, out):
        take = len(data) - pos if self._remaining is None else min(self._remaining, len(data) - pos)
        window = self._tail + data[pos:pos + take]
        pattern = _BOUNDARY if self._remaining is not None else _LOOSE_BOUNDARY
        match = pattern.search(window, 1)
        if match is not None and self._frame_bytes - len(self._tail) + match.start() > 0:
            return self._end_at_boundary(data, pos, window, match.start(), out)
        self._keep(data[pos:pos + take])
        self._tail = window[-_BOUNDARY_TAIL:]
        if self._remaining is not None:
            self._remaining -= take
            if self._remaining == 0:
                self._finish_counted(out)
        return pos + take

    def _keep(self, part):
        # Keep one byte over the limit so a frame ending in CRLF/LF right at the limit is not called cut.
        room = self.max_line_bytes + 2 - len(self._body)
        if len(part) > room:
            self._cut = True
        self._body += part[:max(0, room)]
        self._frame_bytes += len(part)

    def _end_at_boundary(self, data, pos, window, start, out):
        """A new message begins at window[start:]: the frame ends before it, the rest is read anew."""
        tail = len(self._tail)
        if self._remaining is not None:
            self.framing["overrun"] += 1
        if start >= tail:
            self._keep(data[pos:pos + start - tail])
            self._finish_counted(out)
            return pos + start - tail
        # The new message began in bytes already kept: take them back and read them again.
        frame_end = self._frame_bytes - (tail - start)
        del self._body[frame_end:]
        again = window[start:tail]
        self._finish_counted(out)
        out.extend(self.feed(again))
        return pos

    def _finish_counted(self, out):
        body = bytes(self._body)
        if self._cut:
            line, cut = one_line(body, self.max_line_bytes)
        else:
            line, cut = one_line(strip_trailer(body), self.max_line_bytes)
        if not cut:
            if line or self._frame_bytes:
                out.append(line)
        elif self.on_long_line == "truncate":
            self.truncated += 1
            out.append(line)
        else:
            self.skipped += 1
        self._reset()

    def _read_lf(self, data, pos, out):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        out.extend(self._fold(self.lines.feed(data[pos:end])))
        if nl >= 0:
            self._state = "start"  # the next message may use either framing
        return end

    def _fold(self, lines):
        # LineFramer counts cumulatively; fold its new counts in so this object reports everything.
        self.truncated += self.lines.truncated - self._lf_truncated
        self.skipped += self.lines.skipped - self._lf_skipped
        self._lf_truncated, self._lf_skipped = self.lines.truncated, self.lines.skipped
        return lines


def bind_syslog_socket(address, port, protocol):
    """A bound UDP socket or a listening TCP socket for syslog (raises OSError, e.g. the port is busy)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    try:
        if protocol == "udp":
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_RCVBUF_BYTES)
            except OSError:
                pass  # the kernel's default buffer still works, it just drops sooner under bursts
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if protocol == "tcp":
            sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class _Connection:
    """One accepted TCP peer: its socket, framer and last activity time."""

    __slots__ = ("sock", "peer", "framer", "last_seen", "closed")

    def __init__(self, sock, peer, framer, now):
        self.sock, self.peer, self.framer, self.last_seen = sock, peer, framer, now
        self.closed = False


class SyslogInput:
    """A syslog receiver polled by the listener process: `poll()` returns at most one Chunk of messages.

    Binds at construction (listen_port 0 picks a free port, see `.port`). Nothing blocks: the listening
    socket and every connection are non-blocking and polled with a zero-timeout selector. At most
    max_bytes_per_poll bytes are read per poll; TCP peers beyond max_connections are accepted and closed
    at once (counted in `refused`) so they do not sit in the backlog, unless a kept peer has been silent
    for EVICT_IDLE_SECONDS: then the longest-silent one is closed to admit the newcomer (counted in
    `evicted`), so idle connections cannot lock real senders out. A peer silent for idle_timeout_seconds
    is closed (`idle_closed`). Framing errors are counted as `framing_<reason>` (see SyslogStreamFramer).
    """

    def __init__(self, listen_address="127.0.0.1", listen_port=0, protocol="udp",
                 max_line_bytes=DEFAULT_MAX_LINE_BYTES, on_long_line="truncate", max_connections=256,
                 max_bytes_per_poll=1 << 20, idle_timeout_seconds=60, sock=None):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'udp' or 'tcp', not {protocol!r}")
        LineFramer(max_line_bytes, on_long_line)  # validates both settings before a socket is opened
        self.protocol = protocol
        self.max_line_bytes = int(max_line_bytes)
        self.on_long_line = on_long_line
        self.max_connections = int(max_connections)
        self.max_bytes_per_poll = int(max_bytes_per_poll)
        self.idle_timeout_seconds = float(idle_timeout_seconds)
        self.key = "syslog-" + protocol
        self.offset = 0        # bytes received so far, all peers together
        self.stats = {"messages": 0, "bytes": 0, "truncated": 0, "skipped": 0, "connections": 0,
                      "refused": 0, "evicted": 0, "idle_closed": 0, "read_errors": 0}
        self.stats.update(("framing_" + reason, 0) for reason in FRAMING_REASONS)
        self.stats["udp_drops"] = 0  # the kernel's count for our UDP socket (see udp_socket_drops)
        self._next_drop_check = 0.0
        self._conns = {}       # fileno -> _Connection
        self._next_idle_check = 0.0
        self._selector = selectors.DefaultSelector()
        # A socket bound by the supervisor outlives this object: it keeps queueing while the listener restarts.
        self.sock = sock if sock is not None else bind_syslog_socket(listen_address, int(listen_port), protocol)
        self.sock.setblocking(False)
        self._selector.register(self.sock, selectors.EVENT_READ, None)
        self.address, self.port = self.sock.getsockname()[:2]
        host = "[%s]" % self.address if ":" in self.address else self.address
        self.path = "%s://%s:%d" % (protocol, host, self.port)
        # The kernel counts drops over the socket's life, which spans listener restarts: count from here.
        self._udp_drops_base = (udp_socket_drops(self.sock) or 0) if protocol == "udp" else 0

    def poll(self):
        """Read what is available now (up to max_bytes_per_poll) and return [Chunk] or []."""
        if self.sock is None:
            return []
        start = self.offset
        if self.protocol == "udp":
            lines = self._poll_udp()
            self.refresh_stats()
        else:
            lines = self._poll_tcp()
        self.stats["messages"] += len(lines)
        self.stats["bytes"] += self.offset - start
        if not lines and self.offset == start:
            return []
        return [Chunk(self.key, self.path, lines, start, self.offset)]

    def close(self):
        """Close every connection and the listening socket (idempotent)."""
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self.sock is not None:
            self._selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self._selector.close()

    # UDP

    def _poll_udp(self):
        lines = []
        used = 0
        for _ in range(_MAX_DATAGRAMS_PER_POLL):
            if used >= self.max_bytes_per_poll:
                break
            try:
                datagram = self.sock.recv(_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket: the next datagram is fine
                self.stats["read_errors"] += 1
                log.debug("syslog udp recv failed: %s", exc)
                break
            used += len(datagram)
            self.offset += len(datagram)
            message = strip_trailer(datagram)
            if message:
                self._deliver_one(message, lines)
        return lines

    def refresh_stats(self):
        """Re-read the kernel's drop count (at most once a second); poll() and the stats publisher
        (inputs/stats.py, each round of the listener) call it."""
        if self.sock is None or self.protocol != "udp":
            return
        now = time.monotonic()
        if now >= self._next_drop_check:
            self._next_drop_check = now + _DROP_CHECK_SECONDS
            drops = udp_socket_drops(self.sock)
            if drops is not None:
                self.stats["udp_drops"] = max(0, drops - self._udp_drops_base)

    def _deliver_one(self, message, lines):
        line, cut = one_line(message, self.max_line_bytes)
        if not cut:
            lines.append(line)
        elif self.on_long_line == "truncate":
            self.stats["truncated"] += 1
            lines.append(line)
        else:
            self.stats["skipped"] += 1

    # TCP

    def _poll_tcp(self):
        lines = []
        used = 0
        now = time.monotonic()
        while used < self.max_bytes_per_poll:
            events = self._selector.select(0)
            if not events:
                break
            progress = False
            for key, _ in events:
                if key.data is None:
                    progress = self._accept(now, lines) > 0 or progress
                    continue
                if key.data.closed:
                    continue  # evicted by an accept earlier in this round
                got = self._read(key.data, self.max_bytes_per_poll - used, now, lines)
                used += got
                progress = progress or got > 0
                if used >= self.max_bytes_per_poll:
                    break
            if not progress:
                break  # only refusals or closes this round: nothing more to read now
        if now >= self._next_idle_check:
            self._close_idle(now, lines)
            self._next_idle_check = now + min(_IDLE_CHECK_SECONDS, self.idle_timeout_seconds)
        return lines

    def _accept(self, now, lines):
        """Accept every waiting peer; returns how many were kept."""
        kept = 0
        while True:
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return kept
            except OSError as exc:  # EMFILE and friends: the peer waits in the backlog for the next poll
                self.stats["read_errors"] += 1
                log.debug("syslog tcp accept failed: %s", exc)
                return kept
            if len(self._conns) >= self.max_connections and not self._evict_idlest(now, lines):
                self.stats["refused"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Connection(sock, peer, SyslogStreamFramer(self.max_line_bytes, self.on_long_line), now)
            self._conns[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self.stats["connections"] += 1
            kept += 1

    def _read(self, conn, budget, now, lines):
        """Read one block from a peer; returns the bytes read. A closed or broken peer is dropped."""
        try:
            data = conn.sock.recv(min(_TCP_READ_BYTES, budget))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:  # reset by peer: what was complete is delivered, the rest counted
            self.stats["read_errors"] += 1
            log.debug("syslog tcp recv from %s failed: %s", conn.peer, exc)
            data = b""
        if not data:
            self._finish(conn, lines)
            return 0
        conn.last_seen = now
        self.offset += len(data)
        lines.extend(self._fold(conn.framer, conn.framer.feed(data)))
        return len(data)

    def _evict_idlest(self, now, lines):
        """Close the longest-silent peer if it has been silent EVICT_IDLE_SECONDS; returns whether one was.
        What it had framed completely was delivered already; a half message it held is counted, not kept."""
        idlest = min(self._conns.values(), key=lambda conn: conn.last_seen, default=None)
        if idlest is None or now - idlest.last_seen < EVICT_IDLE_SECONDS:
            return False
        self.stats["evicted"] += 1
        lines.extend(self._fold(idlest.framer, idlest.framer.close()))
        self._drop(idlest)
        return True

    def _close_idle(self, now, lines):
        for conn in list(self._conns.values()):
            if now - conn.last_seen >= self.idle_timeout_seconds:
                self.stats["idle_closed"] += 1
                self._finish(conn, lines)

    def _finish(self, conn, lines):
        lines.extend(self._fold(conn.framer, conn.framer.close()))
        self._drop(conn)

    def _drop(self, conn):
        conn.closed = True
        self._conns.pop(conn.sock.fileno(), None)
        self._selector.unregister(conn.sock)
        conn.sock.close()

    def _fold(self, framer, lines):
        # Each framer counts for its own connection; move the counts to the input's stats.
        for name in ("truncated", "skipped"):
            self.stats[name] += getattr(framer, name)
            setattr(framer, name, 0)
        for reason, count in framer.framing.items():
            if count:
                self.stats["framing_" + reason] += count
                framer.framing[reason] = 0
        return lines
