"""The real daemon with `[parsing] extra_masks`: words the operator's regex matches are values.

The miner masks a new line with the regex's marks in a numba kernel; the workers may not compile after
they fork, so the marks must reach the kernel in the types it was compiled for (they once did not:
the worker exited at its first new line).
"""
import json

from tests.integration.daemon_harness import Daemon

N = 300
USERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")


def test_an_extra_mask_makes_user_names_values_in_a_live_daemon(tmp_path):
    daemon = Daemon(tmp_path, workers=1, extra="[parsing]\nextra_masks = user-[a-z]+\n")
    try:
        daemon.start()
        with open(daemon.logs + "/app.log", "w") as f:
            f.writelines("2026-03-05T10:%02d:%02dZ INFO login by user-%s ok seq=%d\n"
                         % (i // 60 % 60, i % 60, USERS[i % len(USERS)], i) for i in range(N))
        counts = daemon.wait_scored(N, timeout=60)
        assert sorted(counts) == list(range(N)), daemon.log_tail()
        with open(daemon.scored) as f:
            templates = {json.loads(line)["template"] for line in f}
        assert templates == {"login by <*> ok seq=<*>"}, templates
        assert daemon.process.poll() is None
    finally:
        daemon.stop()
