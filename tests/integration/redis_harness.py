"""A real redis-server for the redis input tests, on 127.0.0.1 and a free port, started and stopped by the test.

Skips (with the reason) when redis-server or the redis client is not installed; .ci/run installs both.
"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.integration.daemon_harness import free_port

redis = pytest.importorskip("redis", reason="the redis client (setup.cfg install_requires) is not installed")


class RedisServer:
    """One redis-server process; `appendonly` keeps the stream across restart() (fsync on every write)."""

    def __init__(self, directory, appendonly=False, port=None):
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
        self.dir, self.appendonly = str(directory), appendonly
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.process = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log")]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start on port %d" % self.port)

    def client(self):
        return redis.Redis.from_url(self.url, socket_timeout=10)

    def kill(self):
        """SIGKILL: with appendonly (appendfsync always) every acknowledged write survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def xadd_numbered(client, stream, first, count):
    """XADD entries with seq=<first..first+count) in the message, as a producer would (timestamp, source)."""
    pipe = client.pipeline(transaction=False)
    for i in range(first, first + count):
        pipe.xadd(stream, {"message": "GET /item/%d 200 %dms seq=%d" % (i % 97, 20 + i % 13, i),
                           "timestamp": "2026-03-02T10:%02d:%02dZ" % (i // 60 % 60, i % 60),
                           "source": "web-%d" % (i % 3), "level": "INFO"})
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()


def pending_count(client, stream, group):
    return client.xpending(stream, group)["pending"]


def redis_input(url, stream="logs", group="detectors", consumer="", extra=""):
    text = "[[bus]]\ntype = redis\nformat = jsonl\nurl = %s\nstream = %s\ngroup = %s\n" % (url, stream, group)
    if consumer:
        text += "consumer = %s\n" % consumer
    return text + extra
