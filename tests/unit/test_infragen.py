"""The infra workload family (bench/infragen.py): one RFC 3164 syslog file, labels in the svc layout.

One three-day workload at a small volume is generated once and read back as an operator would: by the
text of its lines (stamp, host, program[pid], message), not by the generator's internals.
"""
import importlib.util
import json
import os
import re
import sys
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import pytest

from anomaly_detector.workload.scoring import RIGHT_KINDS, program_source

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, REPO)
from bench import infragen  # noqa: E402

LINE = re.compile(r"^(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ 123]\d) (\d\d):(\d\d):(\d\d) "
                  r"([a-z]+-\d) ([A-Za-z][\w./-]*)(?:\[(\d+)\])?: (\S.*)$")
LEVEL_FIELD = re.compile(r"^(INFO|WARN|WARNING|ERROR|DEBUG|FATAL|CRITICAL)\b")
YEAR = 2026


@pytest.fixture(scope="module")
def infra(tmp_path_factory):
    out = tmp_path_factory.mktemp("infra")
    w = infragen.generate(str(out), days=3.0, seed=3, lines_per_day=120_000)
    with open(w.labels_path, encoding="utf-8") as fh:
        labels = json.load(fh)
    ts, host, prog, msg = [], [], [], []
    with open(w.files[0], encoding="utf-8") as fh:
        for line in fh:
            m = LINE.match(line.rstrip("\n"))
            assert m, f"not a syslog line: {line!r}"
            mon, day, hh, mm, ss = infragen.MONTHS.index(m[1]) + 1, int(m[2]), int(m[3]), int(m[4]), int(m[5])
            ts.append(datetime(YEAR, mon, day, hh, mm, ss, tzinfo=timezone.utc).timestamp())
            host.append(m[6])
            prog.append(m[7].split("/")[0])
            msg.append(m[9])
    return w, labels, np.array(ts), np.array(host), np.array(prog), msg


def lines_of(infra, prog, host, t0, t1, pattern=None):
    _, _, ts, hosts, progs, msg = infra
    sel = np.flatnonzero((progs == prog) & (hosts == host) & (ts >= t0) & (ts < t1))
    return [(ts[i], msg[i]) for i in sel if pattern is None or re.search(pattern, msg[i])]


def quiet(infra, items):
    """The items outside every labelled incident's window."""
    spans = [(i["start"], i["end"]) for i in infra[1]["incidents"]]
    return [(t, m) for t, m in items if not any(s <= t < e for s, e in spans)]


def numbers(items, pattern):
    return np.array([float(re.search(pattern, m)[1]) for _, m in items if re.search(pattern, m)])


def test_same_seed_same_bytes_other_seed_other_file(tmp_path):
    a = infragen.generate(str(tmp_path / "a"), days=1.5, seed=9, lines_per_day=20_000)
    b = infragen.generate(str(tmp_path / "b"), days=1.5, seed=9, lines_per_day=20_000)
    c = infragen.generate(str(tmp_path / "c"), days=1.5, seed=10, lines_per_day=20_000)
    read = lambda w, f: open(os.path.join(w.out_dir, f), "rb").read()  # noqa: E731
    assert read(a, "syslog.log") == read(b, "syslog.log")
    assert read(a, "labels.json") == read(b, "labels.json")
    assert read(a, "syslog.log") != read(c, "syslog.log")


def test_label_layout_is_the_svc_familys(infra):
    w, labels, *_ = infra
    assert labels["family"] == "infra" and labels["fmt"] == "plain" and labels["files"] == ["syslog.log"]
    assert labels["source_convention"] == "program"
    assert labels["lines_per_file"]["syslog.log"] == w.lines
    for key in ("version", "seed", "days", "lines_per_day", "start", "end", "warmup_end", "start_iso", "end_iso",
                "sources", "incidents", "unlabelled"):
        assert key in labels, key
    for inc in labels["incidents"]:
        assert set(inc) == {"id", "kind", "source", "start", "end", "start_iso", "end_iso", "detail", "n_lines"}
        assert inc["source"] in labels["sources"] and inc["detail"]["host"] in infragen.HOSTS
        assert inc["kind"] in RIGHT_KINDS
        if inc["kind"] in infragen.REMOVING:
            assert inc["n_lines"] == 0 and inc["detail"]["lines_removed"] > 0, inc
        else:
            assert inc["n_lines"] > 0, inc
    assert sorted(infragen.KINDS) == sorted(RIGHT_KINDS)
    kinds = Counter(u["kind"] for u in labels["unlabelled"])
    assert kinds["restart"] == 3 and kinds["log_gap"] == 1


def test_a_detectors_host_program_source_reads_as_the_label_source(infra):
    _, labels, *_ = infra
    known = set(labels["sources"])
    assert program_source("db-1 postgres[4123]", known) == "postgres"
    assert program_source("batch-1 postfix/smtp", known) == "postfix"
    assert program_source("web-2 CRON", known) == "CRON"


def test_every_kind_once_per_post_warm_up_day_and_apart(infra):
    _, labels, *_ = infra
    by_day = Counter((int((i["start"] - labels["start"]) // 86400), i["kind"]) for i in labels["incidents"])
    assert set(by_day.values()) == {1}
    assert sorted(by_day) == sorted((d, k) for d in (1, 2) for k in infragen.KINDS)
    spans = sorted((e["start"], e["end"]) for e in labels["incidents"] + labels["unlabelled"])
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 >= e0 + infragen.SEPARATION_S
    for i in labels["incidents"]:
        hour = (i["start"] - labels["start"]) % 86400 / 3600
        assert 6.5 <= hour and (i["end"] - labels["start"]) % 86400 / 3600 <= 23.5


def test_lines_in_time_order_without_year_or_level_field(infra):
    w, labels, ts, hosts, progs, msg = infra
    assert len(ts) == w.lines and np.all(np.diff(ts) >= 0)
    assert ts[0] >= labels["start"] and ts[-1] < labels["end"]
    assert not any(LEVEL_FIELD.match(m) for m in msg)
    assert set(hosts) >= set(infragen.HOSTS) and set(progs) <= set(infragen.PROGRAMS)
    assert len(set(progs)) >= 15


def test_load_follows_the_day_and_the_weekend_is_quieter(infra):
    _, labels, ts, _, progs, _ = infra
    hour = (ts - labels["start"]) % 86400 // 3600
    day = (ts - labels["start"]) // 86400
    web = progs == "haproxy"
    night = np.sum(web & (hour == 4) & (day == 0))
    noon = np.sum(web & (hour == 11) & (day == 0))
    assert noon > 4 * night
    assert np.sum(web & (day == 2)) < 0.85 * np.sum(web & (day == 0))      # Saturday vs Thursday
    for midnight in (labels["start"] + 86400, labels["start"] + 2 * 86400):    # no step at midnight
        before = np.sum(web & (ts >= midnight - 900) & (ts < midnight))
        after = np.sum(web & (ts >= midnight) & (ts < midnight + 900))
        assert 0.7 < after / before < 1.3, (before, after)


def test_periodic_lines_cron_on_the_minute_and_nightly_backup(infra):
    _, labels, *_ = infra
    t0 = labels["start"]
    checkpoints = lines_of(infra, "postgres", "db-1", t0, t0 + 86400, "checkpoint starting")
    assert len(checkpoints) == 288
    cron = lines_of(infra, "CRON", "db-1", t0, t0 + 3600, r"CMD \(/usr/local/bin/pg-conncheck\)")
    assert len(cron) == 60 and all(t % 60 == 0 for t, _ in cron)
    full = lines_of(infra, "pg-backup", "db-1", t0 + 7200, t0 + 7260, "type=full")
    done = [t for t, m in lines_of(infra, "pg-backup", "db-1", t0 + 7200, t0 + 4 * 3600, "done in")]
    assert len(full) == 1 and 1800 <= done[0] - full[0][0] <= 3000
    health = lines_of(infra, "nginx", "web-1", t0, t0 + 3600, "GET /healthz")
    assert len(health) == 720


def test_restarts_and_the_log_gap_leave_their_gaps(infra):
    _, labels, ts, *_ = infra
    for u in labels["unlabelled"]:
        if u["kind"] == "log_gap":
            assert not np.any((ts >= np.ceil(u["start"])) & (ts < np.floor(u["end"])))
            assert lines_of(infra, "rsyslogd", "log-1", u["end"] - 1, u["end"] + 1, "start")
        else:
            host = u["detail"]["host"]
            assert not lines_of(infra, u["source"], host, np.ceil(u["start"]), np.floor(u["end"]))
            assert lines_of(infra, "systemd", host, u["end"] - 1, u["end"] + 1, "Started ")
            after = lines_of(infra, u["source"], host, u["end"], u["end"] + 1200)
            assert after


def incidents(infra, kind):
    return [i for i in infra[1]["incidents"] if i["kind"] == kind]


def test_silent_program_writes_nothing_in_its_window(infra):
    for inc in incidents(infra, "silent_source"):
        host = inc["detail"]["host"]
        assert not lines_of(infra, inc["source"], host, inc["start"], inc["end"])
        assert lines_of(infra, inc["source"], host, inc["start"] - 3600, inc["start"])


def test_volume_drop_keeps_its_share(infra):
    for inc in incidents(infra, "volume_drop"):
        flow = "received" if inc["source"] == "report-worker" else r"client=web"
        kept = len(lines_of(infra, inc["source"], "batch-1", inc["start"], inc["end"], flow))
        per_flow = 4 if inc["source"] == "report-worker" else 5
        gone = inc["detail"]["lines_removed"] / per_flow
        f, n = inc["detail"]["factor"], kept + gone
        assert abs(kept / n - f) <= 3 * np.sqrt(f * (1 - f) / n) + 0.02, (kept, gone, f)


def test_broken_workflow_loses_its_step(infra):
    for inc in incidents(infra, "broken_workflow"):
        src, host = inc["source"], inc["detail"]["host"]
        start, step = {"postfix": (r"client=web", "status=sent"), "report-worker": ("received", "uploaded"),
                       "pg-backup": ("started", "upload")}[src]
        begun = lines_of(infra, src, host, inc["start"], inc["end"], start)
        assert begun
        # flows begun before the window may still end in its first seconds; none after that
        assert not lines_of(infra, src, host, inc["start"] + 10, inc["end"], step)


def test_latency_drift_raises_the_median_of_its_numbers(infra):
    for inc in incidents(infra, "latency_drift"):
        d = inc["detail"]
        if inc["source"] == "postgres":
            pat = r"duration: ([\d.]+) ms  statement: " + (re.escape(infragen.QUERIES[d["query"]][0][:30])
                                                            if "query" in d else "")
        else:
            pat = r"rendered in (\d+) ms"
            if "job_type" in d:
                jobs = {m.split()[1] for _, m in lines_of(infra, "report-worker", "batch-1", 0, 1e12,
                                                         f"received: type={d['job_type']} ")}
                pat = r"job (?:" + "|".join(jobs) + r") rendered in (\d+) ms"
        inside = numbers(lines_of(infra, inc["source"], d["host"], inc["start"], inc["end"]), pat)
        before = numbers(quiet(infra, lines_of(infra, inc["source"], d["host"], inc["start"] - 86400,
                                               inc["end"] - 86400)), pat)
        assert len(inside) >= 3
        assert np.median(inside) > 1.4 * np.median(before)


def test_unusual_values_jump(infra):
    pats = {"pg-conncheck": r"connections (\d+)/200", "pgbouncer": r"wait (\d+) us", "shop-api": r"\) ([\d.]+)ms$"}
    for inc in incidents(infra, "unusual_value"):
        pat, host = pats[inc["source"]], inc["detail"]["host"]
        inside = numbers(lines_of(infra, inc["source"], host, inc["start"], inc["end"]), pat)
        day = numbers(quiet(infra, lines_of(infra, inc["source"], host, inc["start"] - 86400, inc["start"] - 600)), pat)
        assert len(inside) >= 3 and np.median(inside) > np.percentile(day, 99.5)


def rate(items, t0, t1):
    return len(items) / max(t1 - t0, 1.0)


def test_bursts_spikes_and_new_errors_add_lines(infra):
    pats = {"nginx": "upstream timed out", "postgres": "deadlock detected", "shop-api": "Connection is not available",
            "sshd": "Failed password", "kernel": "UFW BLOCK"}
    for inc in incidents(infra, "error_burst") + incidents(infra, "volume_spike"):
        host, pat = inc["detail"]["host"], pats[inc["source"]]
        inside = lines_of(infra, inc["source"], host, inc["start"], inc["end"], pat)
        day = quiet(infra, lines_of(infra, inc["source"], host, inc["start"] - 86400, inc["start"] - 3600, pat))
        assert rate(inside, inc["start"], inc["end"]) > 4 * rate(day, inc["start"] - 86400, inc["start"] - 3600)
    for inc in incidents(infra, "new_error"):
        host = inc["detail"]["host"]
        inside = lines_of(infra, inc["source"], host, inc["start"], inc["end"] + 1)
        new = [m for _, m in inside if re.search("Out of memory|EXT4-fs error|No space left on device", m)]
        assert len(new) == inc["n_lines"] >= 3
        assert not lines_of(infra, inc["source"], host, 0, inc["start"], "Out of memory|EXT4-fs error|No space left")



def test_a_spikes_addresses_are_ipv4_in_its_network(infra):
    """A brute force or port scan comes from one /24: each extra line's address is a whole IPv4 address in it."""
    pats = {"sshd": r"Failed password for invalid user \S+ from (\S+) port", "kernel": r"UFW BLOCK.* SRC=(\S+) "}
    for inc in incidents(infra, "volume_spike"):
        net = inc["detail"]["network"].rsplit(".", 1)[0] + "."
        found = [re.search(pats[inc["source"]], m)[1] for _, m in
                 lines_of(infra, inc["source"], inc["detail"]["host"], inc["start"], inc["end"], pats[inc["source"]])]
        ours = [a for a in found if a.startswith(net)]
        assert ours and all(re.fullmatch(r"(\d{1,3}\.){3}\d{1,3}", a) for a in ours)

FAKE_REPLAY = r'''
import json, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
inc = args[args.index("--incidents") + 1]
files = args[args.index("--incidents") + 2:]
labels = json.load(open(files[0].rsplit("/", 1)[0] + "/labels.json"))
with open(out, "w") as fh:
    for i, _ in enumerate(open(files[0])):
        fh.write(json.dumps({"file": files[0], "line": i + 1, "ts": 0.0, "anomaly": False}) + "\n")
with open(inc, "w") as fh:
    if labels["incidents"]:      # catch the first label, named by host and program as a detector may
        first = labels["incidents"][0]
        fh.write(json.dumps({"id": 1, "first_seen": first["start"] + 30, "last_seen": first["end"],
                             "source": first["detail"]["host"] + " " + first["source"] + "[123]",
                             "kind": %RIGHT%[first["kind"]]}) + "\n")
with open(files[0].rsplit("/", 1)[0] + "/argv.json", "w") as fh:
    json.dump(args, fh)
'''


def test_detect_bench_runs_the_infra_family_with_replays_defaults(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("detect_bench_infra", os.path.join(REPO, "bench", "detect_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fake = tmp_path / "fake_replay.py"
    fake.write_text(FAKE_REPLAY.replace("%RIGHT%", repr({k: v[0] for k, v in RIGHT_KINDS.items()})))
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    figures = tmp_path / "figures.json"
    rc = bench.main(["--family", "infra", "--seeds", "5", "--heldout-seeds", "7", "--days", "2", "--lines-per-day",
                     "20000", "--no-loghub", "--work", str(tmp_path / "w"), "--json", str(figures)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("== infra family, tuning: seeds 5 ==") == 1 and out.count("== infra family, held-out: seeds 7 ==") == 1
    assert "== tuning:" not in out and "svc family" not in out
    argv = json.loads((tmp_path / "w" / "infra-seed5" / "argv.json").read_text())
    assert "--format" not in argv and "--log-format" not in argv
    doc = json.loads(figures.read_text())
    assert sum(k["caught"] for k in doc["infra"]["kinds"].values()) == 1
    assert sum(k["caught"] for k in doc["infra"]["heldout"]["kinds"].values()) == 1
    assert bench.parse_args(["--family", "all"]).family == "all"
