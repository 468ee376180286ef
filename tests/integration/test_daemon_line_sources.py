"""The real daemon splits one file that interleaves services into sources (a detected prefix, source_fields).

The scored-lines file carries each line's own source; [processing] max_sources caps how many one input
may have, and lines past the cap are counted in /metrics and logged.
"""
import json
import os

from tests.integration.daemon_harness import Daemon

SERVICES = [("web-1", "nginx"), ("api-1", "checkout[31]"), ("db-1", "postgres"), ("cache-1", "redis")]


def shop_lines(n):
    out = []
    for i in range(n):
        host, prog = SERVICES[i % len(SERVICES)]
        out.append("2026-03-02T10:%02d:%02d.%03dZ INFO %s %s: request %d done seq=%d\n"
                   % (i // 6000, (i // 100) % 60, i % 1000, host, prog, i % 50, i))
    return "".join(out)


def scored_sources(daemon):
    found = {}
    with open(daemon.scored) as f:
        for line in f:
            record = json.loads(line)
            seq = int(record["message"].rsplit("seq=", 1)[1])
            found[seq] = (record["source"], record["template"])
    return found


def run(tmp_path, inputs, max_sources=None, n=400):
    daemon = Daemon(tmp_path, workers=1, inputs=inputs % {"logs": str(tmp_path / "logs")})
    if max_sources is not None:   # the harness writes [processing] itself
        with open(daemon.config) as f:
            text = f.read().replace("[processing]\n", "[processing]\nmax_sources = %d\n" % max_sources)
        with open(daemon.config, "w") as f:
            f.write(text)
    try:
        daemon.start()
        with open(os.path.join(daemon.logs, "shop.log"), "a") as f:
            f.write(shop_lines(n))
        counts = daemon.wait_scored(n, timeout=60)
        assert sorted(counts) == list(range(n)), daemon.log_tail()
        return scored_sources(daemon), daemon.metric("source_capped_lines_total"), daemon.log_tail(200)
    finally:
        daemon.stop()


FILE = "[[shop]]\ntype = file\npath = %(logs)s/shop.log\nstart_at = beginning\n"
HEADER = "log_format = \"<Timestamp> <Level> <Host> <Program>: <Content>\"\n"


def test_a_prefix_in_an_interleaved_file_names_each_line_source(tmp_path):
    found, capped, _ = run(tmp_path, FILE)
    assert {found[i][0] for i in range(100, 400)} == {"nginx", "checkout", "postgres", "redis"}
    assert found[101] == ("checkout", "request <*> done seq=<*>")   # the prefix is not mined
    assert capped == 0


def test_source_fields_join_header_fields(tmp_path):
    found, capped, _ = run(tmp_path, FILE + HEADER + "source_fields = Host, Program\n")
    assert {s for s, _ in found.values()} == {"web-1/nginx", "api-1/checkout[31]", "db-1/postgres", "cache-1/redis"}
    assert capped == 0


def test_max_sources_keeps_further_lines_on_the_input_source_counted_and_logged(tmp_path):
    found, capped, log = run(tmp_path, FILE, max_sources=2)
    assert {found[i][0] for i in range(100, 400)} == {"nginx", "checkout", "shop"}
    on_input = sum(1 for s, _ in found.values() if s == "shop")
    assert capped is not None and 150 <= capped <= on_input
    assert "lines name more than max_sources = 2 sources" in log
