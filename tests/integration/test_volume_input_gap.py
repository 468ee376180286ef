"""The real daemon meets a gap in its input: two busy sources quiet together for longer than
[detection][[tier2]] input_gap_seconds. Tier 2 skips it as an input outage (no silence incident for
either source), logs it and counts it in /metrics."""
import json
import os

from tests.integration.daemon_harness import Daemon

INPUTS = "".join("[[%s]]\ntype = file\npath = %s/%s.log\nstart_at = beginning\n" % (name, "{logs}", name)
                 for name in ("app", "web"))


def line(minute, second, name, seq):
    return "2026-03-02T%02d:%02d:%02d.000Z INFO %s-1 GET /item/%d 200 %dms seq=%d\n" % (
        minute // 60, minute % 60, second, name, seq % 7, 20 + seq % 13, seq)


def test_every_busy_source_quiet_together_is_counted_as_an_input_gap_not_silence(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS.replace("{logs}", str(tmp_path / "logs")))
    try:
        daemon.start()
        seq = 0
        # 150 minutes of both sources at 4 lines a minute each, then 20 minutes of nothing, then 10
        # more; written ten minutes at a time, each scored before the next (the input reads one
        # file's backlog before the other's: a bigger backlog would not interleave the sources).
        for start in list(range(0, 150, 10)) + [170]:
            files = {name: open(os.path.join(daemon.logs, "%s.log" % name), "a") for name in ("app", "web")}
            for minute in range(start, start + 10):
                for second in (0, 15, 30, 45):
                    for name, f in files.items():
                        f.write(line(minute, second, name, seq))
                        seq += 1
            for f in files.values():
                f.close()
            counts = daemon.wait_scored(seq, timeout=120, reading=start == 170)   # metrics read after the last
            assert len(counts) == seq, daemon.log_tail()
        assert daemon.metric("volume_gaps_skipped_total") == 1, daemon.log_tail()
        assert "worker 0: no line from any source for 1260 s: a gap in the input" in daemon.log_tail(400)
        incidents = os.path.join(daemon.dir, "incidents.jsonl")
        kinds = {json.loads(x)["kind"] for x in open(incidents)} if os.path.exists(incidents) else set()
        assert not kinds & {"silent_source", "volume_drop"}
    finally:
        daemon.stop()
