"""A real daemon compiles every numba kernel in warm-up, before it forks: fed every input kind, past
the tiers' warm-up (so the warm-only kernels run) and then hostile bytes, no worker types a kernel.

Each worker compares numba's compiled versions of every kernel of the package with those it
inherited at fork (worker/detector.py) and counts the difference in
anomaly_detector_kernels_compiled_after_fork_total; tests/unit/test_kernel_cache.py shows that count
moving when a kernel is typed lazily.
"""
import json
import random
import socket
import time
import urllib.error
import urllib.request

from tests.integration.daemon_harness import Daemon, free_port

LINUX_FORMAT = r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>"
# Low warm-up: the tiers start judging within the test, so the kernels only warm tiers call run too.
DETECTION = "[detection]\nwarmup_lines = 200\nwarmup_seconds = 60\n"


def _inputs(logs, udp, http):
    return ("[[app]]\ntype = file\npath = %(logs)s/app.log\nstart_at = beginning\n"
            "[[shop]]\ntype = file\npath = %(logs)s/shop.jsonl\nstart_at = beginning\nformat = jsonl\n"
            "[[sys]]\ntype = file\npath = %(logs)s/sys.log\nstart_at = beginning\nformat = syslog\n"
            "[[linux]]\ntype = file\npath = %(logs)s/linux.log\nstart_at = beginning\nformat = plain\n"
            "log_format = \"%(fmt)s\"\nsource_fields = Component,\n"
            "[[udp]]\ntype = syslog\nprotocol = udp\nlisten_port = %(udp)d\n"
            "[[ingest]]\ntype = http\nformat = jsonl\nlisten_port = %(http)d\n"
            % {"logs": logs, "fmt": LINUX_FORMAT, "udp": udp, "http": http})


def _stamp(i):
    return 1772445600 + i * 0.5   # 2026-03-02T10:00:00Z, two lines a second: past warmup_seconds


def _normal(n):
    """Ordinary lines of each format, event time running well past the tiers' warm-up."""
    rng = random.Random(1)
    app, shop, sysl, linux = [], [], [], []
    for i in range(n):
        t = time.gmtime(_stamp(i))
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", t) + ".%03dZ" % (i % 1000)
        user, ms, code = rng.choice(["ann", "bob", "cy"]), rng.randint(1, 900), rng.choice([200, 200, 200, 404, 500])
        app.append("%s INFO web-%d GET /item/%d %d %dms user=%s\n" % (iso, i % 3, i % 97, code, ms, user))
        shop.append(json.dumps({"timestamp": _stamp(i), "level": rng.choice(["INFO", "WARN", 30]),
                                "message": "order %d placed by %s" % (i, user), "duration_ms": ms,
                                "queue_depth": i % 7}) + "\n")
        sysl.append("<14>%s web1 app[12]: session %d opened for %s\n" % (time.strftime("%b %e %H:%M:%S", t), i, user))
        linux.append("%s combo sshd(pam_unix)[%d]: authentication failure; rhost=10.0.%d.%d user=%s\n"
                     % (time.strftime("%b %e %H:%M:%S", t), 1000 + i % 50, i % 255, ms % 255, user))
    return "".join(app), "".join(shop), "".join(sysl), "".join(linux)


NUMBERS = [b"0", b"-0", b"1", b"-1", b"007", b"2147483648", b"9223372036854775807", b"9223372036854775808",
           b"-9223372036854775809", b"18446744073709551616", b"1e308", b"1e309", b"-1e-400", b"4.9e-324",
           b"3.14159", b".5", b"5.", b"1_000", b"1,000", b"0x1F", b"0b101", b"0o17", b"NaN", b"-Infinity",
           b"inf", b"1e", b"--1", b"+1", b"1.2.3", b"\xd9\xa3", b"12" * 200]


def _hostile():
    """Lines a daemon meets on bad days, as bytes (each input gets all of them)."""
    rng = random.Random(7)
    lines = [b"", b"", b"\r", b"\x00\x00\x00", b"\xff\xfe\xfd invalid utf-8 \xc3\x28 \xed\xa0\x80 surrogate",
             b"\x1b[31mansi\x1b[0m\t\x0b\x0c", b"x" * 300000, b"y " * 70000, "\u00e9\u4e2d\U0001f600 unicode".encode(),
             b"{", b"}", b"[]", b"null", b"{}", b'{"message": null}', b'{"message": "\xff\xfe"}',
             b'{"message": {"nested": [1, {"a": 2}]}, "timestamp": "not a time"}',
             b'{"timestamp": 1e400, "message": "huge stamp"}', b'{"timestamp": -5, "message": "negative stamp"}',
             b'{"message": "dup", "message": "dup2", "level": [1]}', b'{"message": "\\ud800 lone surrogate"}',
             b"<999>not syslog", b"<13>1 - - - - - -", b"<14>Feb 30 25:61:61 host app: bad date",
             b"2026-13-45T99:99:99Z ERROR impossible stamp", b"Jun 14 15:16:01 combo kernel: no year"]
    for number in NUMBERS:
        lines.append(b'{"message": "value", "n": %s, "timestamp": %s}' % (number, number))
        lines.append(b"2026-03-02T12:00:00Z INFO measured %s ms from %s" % (number, number))
        lines.append(b"Mar  2 12:00:00 combo app[%s]: took %s s" % (number, number))
    lines += [rng.randbytes(rng.randint(1, 400)).replace(b"\n", b" ") for _ in range(200)]
    return b"\n".join(lines) + b"\n"


def test_workers_compile_nothing_after_fork(tmp_path):
    udp, http = free_port(), free_port()
    logs = str(tmp_path / "logs")
    daemon = Daemon(tmp_path, workers=2, batch_size=200, extra=DETECTION, inputs=_inputs(logs, udp, http))
    try:
        daemon.start()
        assert daemon.metric("kernels_compiled_after_fork_total") == 0
        app, shop, sysl, linux = _normal(1500)
        hostile = _hostile()
        for name, text in (("app.log", app), ("shop.jsonl", shop), ("sys.log", sysl), ("linux.log", linux)):
            with open("%s/%s" % (logs, name), "ab") as f:
                f.write(text.encode() + hostile)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for k, line in enumerate(sysl.encode().splitlines()[:300] + hostile.splitlines()):
            sender.sendto(line[:60000], ("127.0.0.1", udp))
            if k % 50 == 0:
                time.sleep(0.05)   # a burst larger than the socket buffer would be dropped by the kernel
        sender.close()
        for body in (shop.encode()[:200000], hostile):
            request = urllib.request.Request("http://127.0.0.1:%d/ingest" % http, data=body, method="POST")
            try:
                urllib.request.urlopen(request, timeout=30).close()
            except urllib.error.HTTPError as err:   # a body the input refuses as a whole is still input
                assert err.code in (400, 413), err
        _wait_idle(daemon, at_least=4 * 1500)
        assert daemon.metric("kernels_compiled_after_fork_total") == 0, daemon.log_tail(80)
        assert "typed after fork" not in daemon.log_tail(100000)
        # the workers judged lines (warm tiers ran) and none of them died on a type no signature covers
        assert daemon.metric("anomalies_total") > 0, daemon.log_tail(80)
        restarts = daemon.labelled("process_restarts_total")
        assert all(v == 0 for v in restarts.values()), restarts
        assert daemon.metric("lines_dead_lettered_total") == 0, daemon.log_tail(80)
        assert daemon.get("/health")[0] == 200
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _wait_idle(daemon, at_least, timeout=240):
    """Until the workers scored at_least lines and the count stayed put for 3 s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = daemon.metric("logs_processed_total") or 0
        if done != last:
            last, since = done, time.monotonic()
        elif done >= at_least and time.monotonic() - since >= 3:
            return done
        time.sleep(0.5)
    raise AssertionError("workers not idle after %d s (%s lines scored):\n%s" % (timeout, last, daemon.log_tail()))
