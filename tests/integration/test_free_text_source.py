"""The real daemon fed free text: lines that join no template are reported as <unclustered>, counted in
/metrics and the source's change is logged, while templates stay few."""
import json

import numpy as np

from tests.integration.daemon_harness import Daemon
from tests.unit.test_unclustered import chatter

INPUTS = "[[chat]]\ntype = file\npath = {logs}/chat.log\nstart_at = beginning\n"
CONFIG = "[parsing]\nfree_text_window = 100\n"


def test_free_text_is_reported_unclustered_counted_and_logged(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS.replace("{logs}", str(tmp_path / "logs")), extra=CONFIG)
    try:
        daemon.start()
        lines = chatter(np.random.default_rng(11), 600)
        with open(daemon.logs + "/chat.log", "wb") as f:
            for i, line in enumerate(lines):
                f.write(b"2026-03-02T10:%02d:%02d.000Z INFO %s seq=%d\n" % (i // 60, i % 60, line, i))
        counts = daemon.wait_scored(600, timeout=120)
        assert len(counts) == 600, daemon.log_tail()
        with open(daemon.scored) as f:
            records = [json.loads(line) for line in f]
        unclustered = sum(r["template"] == "<unclustered>" for r in records)
        assert unclustered >= 500
        assert len({r["template_id"] for r in records}) <= 60
        assert daemon.metric("lines_unclustered_total") == unclustered, daemon.log_tail()
        assert daemon.log_tail(400).count("is free text") == 1
        assert daemon.stop() == 0
    finally:
        daemon.kill()
