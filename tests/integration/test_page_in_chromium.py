"""The page at / on a live daemon, opened in headless Chromium (Debian package chromium).

FATAL bursts whose lines carry hostile text (a <script> that would retitle the page, an <img> that would
call a local listener, quotes; the input already shows an escape character as U+FFFD) become one closed and one open incident; the page
must show both with their explanation and samples, draw its SVG charts, run no script, load nothing
(the listener counts requests) and never show the admin token.
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from tests.integration.daemon_harness import Daemon, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "page-test-token-0123456789abcdef"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium; "
                                                          ".ci/run installs it when run as root)")


class Listener:
    """Counts every request made to it: the page must make none (the hostile <img> points here)."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def hostile(port):
    return ("<script>document.title='pwned'</script> \"quoted\" 'single' \x1b[31m "
            "<img src=\"http://127.0.0.1:%d/leak\">" % port)


def write_phase(path, start, first_seq, text, seconds=400):
    """`seconds` lines one second apart from minute `start`, six FATAL ones carrying `text` at 300..305."""
    with open(path, "a") as f:
        for i in range(seconds):
            t = start * 60 + i
            fatal = 300 <= i < 306
            f.write("2026-03-02T%02d:%02d:%02d.000Z %s worker-%d %s took %d ms seq=%d\n"
                    % (t // 3600, t // 60 % 60, t % 60, "FATAL" if fatal else "INFO", i % 3,
                       text if fatal else "request done", 20 + i % 7, first_seq + i))
    return first_seq + seconds


def chromium(tmp_path, *args):
    """Run headless Chromium with its own profile (other runs on the machine keep theirs); its stdout."""
    profile = tmp_path / "chromium-profile"
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--user-data-dir=%s" % profile, *args], capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8", "replace")


def test_the_page_shows_incidents_escaped_with_svg_and_loads_nothing_from_elsewhere(tmp_path):
    listener = Listener()
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    daemon = Daemon(tmp_path, workers=1, extra="[detection]\nincident_window_seconds = 30\n",
                    http="admin_token_file = %s\npage_refresh_seconds = 600\n" % token_file)
    app = os.path.join(daemon.logs, "app.log")
    try:
        daemon.start()
        text = hostile(listener.port)
        seq = write_phase(app, 0, 0, text)
        daemon.wait_scored(seq, 120)
        incidents = os.path.join(daemon.dir, "incidents.jsonl")
        closed = wait_for(lambda: os.path.exists(incidents) and [json.loads(x) for x in open(incidents)], 60, daemon)
        seq = write_phase(app, 7, seq, text, seconds=310)   # its incident stays open (nothing after the burst)
        daemon.wait_scored(seq, 120)
        # incidents show within a second, templates once a worker's snapshot holds them
        wait_for(lambda: "Anomalous now: 1 open incident<" in daemon.get("/")[1]
                 and "No template learned yet" not in daemon.get("/")[1], 60, daemon)

        url = "http://127.0.0.1:%d/" % daemon.port
        with urllib.request.urlopen(url, timeout=10) as resp:
            headers, body = resp.headers, resp.read().decode()
        assert resp.status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'none'" in csp and "img-src 'none'" in csp
        assert TOKEN not in body

        dom = chromium(tmp_path, "--dump-dom", url)
        shot = tmp_path / "page.png"
        chromium(tmp_path, "--screenshot=%s" % shot, "--window-size=1280,2000", url)
        print("page screenshot: %s" % shot)
        assert shot.stat().st_size > 10000

        title = re.search(r"<title>(.*?)</title>", dom).group(1)
        assert title == "anomaly_detector: %s" % daemon.name          # no script ran
        assert "pwned" not in title and "<script>document.title" not in dom
        assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom   # shown as text
        assert "\"quoted\" 'single'" in dom                             # quotes shown as they were
        assert not re.search(r"<(?:img|script|link|iframe|object|embed)\b", dom)
        assert not re.search(r"<[a-z]+\b[^>]*\s(?:src|href|srcset|action)=", dom)
        assert dom.count("<svg") >= 2                                   # timeline and templates at least
        record = closed[0]
        assert 'id="incident-%s"' % record["id"] in dom
        assert record["reason"] and record["reason"] in dom             # its explanation
        sample = record["samples"][0]
        assert re.search(r"seq=\d+", sample) and re.search(r"seq=\d+", sample).group() in dom
        assert "Anomalous now: 1 open incident<" in dom
        assert TOKEN not in dom
        time.sleep(1)
        assert listener.requests == []                                  # nothing loaded, not even the <img>
        # a second template snapshot gives each template its rate (0 now: nothing new since the last one)
        wait_for(lambda: re.search(r"\d lines, [\d.]+/s", daemon.get("/")[1]), 60, daemon)
        assert daemon.labelled("page_reads_skipped_total") == {(("reason", "too_large"),): 0.0,
                                                               (("reason", "unreadable"),): 0.0}
    finally:
        daemon.stop()
        listener.close()
