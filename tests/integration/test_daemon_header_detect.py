"""The real daemon finds a known header format on an input's first lines when none is configured.

BGL-style lines carry their level deep in a header the plain parser does not read: with
detect_log_format (the default) the daemon reads them with the BGL format, so templates are the
messages alone and FATAL lines are flagged; with detect_log_format = false under an input, its lines
stay whole text.
"""
import json
import os

from tests.integration.daemon_harness import Daemon

N = 400
FATAL_EVERY = 50


def bgl_lines(n):
    out = []
    for i in range(n):
        fatal = i % FATAL_EVERY == FATAL_EVERY - 1
        label, level, text = ("KERNDTLB", "FATAL", "data TLB error interrupt") if fatal else \
            ("-", "INFO", "instruction cache parity error corrected")
        node = "R%02d-M1-N%d-C:J12-U11" % (i % 8, i % 10)
        out.append("%s %d 2005.06.03 %s 2005-06-03-15.%02d.%02d.%06d %s RAS KERNEL %s %s seq=%d\n"
                   % (label, 1117838570 + i, node, (42 + i // 60) % 60, i % 60, i * 7, node, level, text, i))
    return "".join(out)


INPUTS = ("[[bgl]]\ntype = file\npath = %(logs)s/bgl.log\nstart_at = beginning\n"
          "[[raw]]\ntype = file\npath = %(logs)s/raw.log\nstart_at = beginning\ndetect_log_format = false\n")


def test_bgl_header_is_found_by_default_and_not_when_turned_off(tmp_path):
    daemon = Daemon(tmp_path, workers=1, inputs=INPUTS % {"logs": str(tmp_path / "logs")})
    try:
        daemon.start()
        for name in ("bgl.log", "raw.log"):
            with open(os.path.join(daemon.logs, name), "w") as f:
                f.write(bgl_lines(N))
        counts = daemon.wait_scored(N, timeout=60)
        assert sorted(counts) == list(range(N)) and set(counts.values()) == {2}, daemon.log_tail()
        by_source = {"bgl": {}, "raw": {}}
        with open(daemon.scored) as f:
            for line in f:
                record = json.loads(line)
                by_source[record["source"]][int(record["message"].rsplit("seq=", 1)[1])] = record
        found, whole = by_source["bgl"], by_source["raw"]
        assert found[0]["template"] == "instruction cache parity error corrected seq=<*>"
        assert whole[0]["template"].startswith("- <*>")        # the header mined into the template
        fatal = [i for i in range(N) if i % FATAL_EVERY == FATAL_EVERY - 1]
        assert all(found[i]["anomaly"] for i in fatal)
        assert not any(whole[i]["anomaly"] for i in fatal)
        assert "fit the BGL header format" in daemon.log_tail(300)
    finally:
        daemon.stop()
