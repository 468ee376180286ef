"""The services workload family (bench/svcgen.py): layout, labels, and that each incident changes what it claims.

One 3-day workload of 100,000 lines a weekday (about a second to write) is read once for all tests.
"""
import json
import os
import sys

import numpy as np
import pytest

from anomaly_detector.workload.scoring import RIGHT_KINDS

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench import svcgen  # noqa: E402

NUMERIC = ("seq", "duration_ms", "status", "bytes", "queue_depth", "pool_in_use", "pool_size", "pool_waiting", "rows",
           "retries", "heap_mb", "cpu_pct", "uptime_s", "hit_rate", "items", "hits", "total_cents", "amount_cents")
DAYS, PER_DAY, SEED = 3, 100_000, 5


class Lines:
    """The file as columns: epoch seconds, source, message, and the records themselves."""

    def __init__(self, path):
        self.recs = []
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                self.recs.append(json.loads(line))
        self.ts = np.array([r["timestamp"][:-1] for r in self.recs], dtype="datetime64[ms]").astype(np.int64) / 1000.0
        self.src = np.array([r["source"] for r in self.recs])
        self.msg = np.array([r["message"] for r in self.recs], dtype=object)

    def where(self, source=None, t0=-np.inf, t1=np.inf, message=None):
        m = (self.ts >= t0) & (self.ts < t1)
        if source is not None:
            m &= self.src == source
        if message is not None:
            m &= self.msg == message
        return np.flatnonzero(m)

    def values(self, idx, key):
        return np.array([self.recs[i][key] for i in idx if key in self.recs[i]], dtype=float)


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    out = tmp_path_factory.mktemp("svc")
    w = svcgen.generate(str(out / "a"), days=DAYS, seed=SEED, lines_per_day=PER_DAY)
    return w, Lines(w.files[0]), out


def by_kind(w, kind):
    return [i for i in w.incidents if i["kind"] == kind]


def test_same_seed_same_bytes_other_seed_other_file(svc):
    w, _, out = svc
    again = svcgen.generate(str(out / "b"), days=DAYS, seed=SEED, lines_per_day=PER_DAY)
    other = svcgen.generate(str(out / "c"), days=DAYS, seed=SEED + 1, lines_per_day=PER_DAY)
    for name in (svcgen.LOG_FILE, svcgen.LABELS_FILE):
        with open(os.path.join(w.out_dir, name), "rb") as a, open(os.path.join(again.out_dir, name), "rb") as b:
            assert a.read() == b.read()
    with open(w.files[0], "rb") as a, open(other.files[0], "rb") as c:
        assert a.read() != c.read()


def test_label_layout_is_the_shop_familys(svc):
    w, lines, _ = svc
    with open(w.labels_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    assert doc["version"] == 1 and doc["family"] == "svc" and doc["seed"] == SEED and doc["days"] == DAYS
    assert doc["start"] == w.start and doc["end"] == w.end == w.start + DAYS * 86400 and doc["warmup_end"] == w.warmup_end
    assert doc["sources"] == list(svcgen.SOURCES) and doc["files"] == [svcgen.LOG_FILE]
    assert doc["lines_per_file"] == {svcgen.LOG_FILE: w.lines} and w.lines == len(lines.recs)
    assert doc["incidents"] == w.incidents and doc["unlabelled"] == w.unlabelled
    for inc in w.incidents:
        assert set(inc) == {"id", "kind", "source", "start", "end", "start_iso", "end_iso", "detail", "n_lines"}
        assert inc["source"] in svcgen.SOURCES and isinstance(inc["detail"], dict)
    for e in w.unlabelled:
        assert set(e) == {"kind", "source", "start", "end", "start_iso", "end_iso", "detail"}
    assert [i["id"] for i in w.incidents] == list(range(1, len(w.incidents) + 1))


def test_every_kind_once_per_post_warm_up_day_and_apart(svc):
    w, _, _ = svc
    assert set(svcgen.KINDS) == set(RIGHT_KINDS)
    for d in range(1, DAYS):
        day = w.start + 86400 * d
        kinds = sorted(i["kind"] for i in w.incidents if day <= i["start"] < day + 86400)
        assert kinds == sorted(svcgen.KINDS), d
    assert all(i["start"] >= w.warmup_end for i in w.incidents)
    spans = sorted((e["start"], e["end"]) for e in w.incidents + w.unlabelled)
    for (_, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 - e0 >= svcgen.SEPARATION_S
    drifts = by_kind(w, "latency_drift")
    assert sum(1 for i in drifts if i["detail"]["operation"]) == 1         # one day: one operation only
    for inc in w.incidents:
        lo, hi = svcgen.DURATION_MIN[inc["kind"]]
        assert lo * 60 - 1 <= inc["end"] - inc["start"] <= hi * 60 + 1
        assert inc["n_lines"] > 0 or inc["detail"]["lines_removed"] > 0


def test_valid_json_in_time_order_with_numeric_fields(svc):
    w, lines, _ = svc
    assert np.all(np.diff(lines.ts) >= 0) and w.start <= lines.ts[0] and lines.ts[-1] < w.end
    assert set(lines.src) == set(svcgen.SOURCES)
    seen = set()
    for r in lines.recs:
        assert list(r)[:5] == ["timestamp", "source", "seq", "level", "message"]
        assert r["timestamp"].endswith("Z") and len(r["timestamp"]) == 24
        for key in NUMERIC:
            if key in r:
                assert isinstance(r[key], (int, float)) and not isinstance(r[key], bool), (key, r)
                seen.add(key)
        assert not isinstance(r.get("request_id", ""), (int, float)) and len(r.get("trace_id", "x" * 32)) == 32
    assert seen == set(NUMERIC)
    assert {r["level"] for r in lines.recs} == {"info", "warn", "error", "INFO", "WARNING", "ERROR"}


def test_weekday_volume_near_lines_per_day_and_nights_quieter(svc):
    w, lines, _ = svc
    first_day = lines.where(t1=w.start + 86400).size
    assert 0.75 * PER_DAY < first_day < 1.25 * PER_DAY
    hour = ((lines.ts - w.start) % 86400) // 3600
    day0 = lines.ts < w.start + 86400
    req = day0 & (lines.src == "gateway") & np.array([m.startswith(("GET /api", "POST /api")) for m in lines.msg])
    assert (req & (hour == 20)).sum() > 4 * (req & (hour == 4)).sum()
    saturday = lines.where(t0=w.start + 2 * 86400).size
    assert saturday < 0.9 * lines.where(t0=w.start + 86400, t1=w.start + 2 * 86400).size


def test_counters_and_clocks_grow_except_at_a_restart(svc):
    w, lines, _ = svc
    restarts = {}
    for e in w.unlabelled:
        if e["kind"] == "deploy":
            restarts.setdefault(e["source"], []).append(e["end"])
    for s in svcgen.SOURCES:
        idx = lines.where(s)
        seq = np.array([lines.recs[i]["seq"] for i in idx])
        drops = lines.ts[idx][1:][np.diff(seq) != 1]
        assert len(drops) == len(restarts.get(s, [])), s
        stats = lines.where(s, message="runtime stats")
        up = lines.values(stats, "uptime_s")
        assert (np.diff(up) < 0).sum() == len(restarts.get(s, []))


def test_deploys_and_the_log_gap_leave_their_gaps(svc):
    w, lines, _ = svc
    kinds = [e["kind"] for e in w.unlabelled]
    assert kinds.count("deploy") == DAYS and kinds.count("log_gap") == 1
    for e in w.unlabelled:
        source = None if e["kind"] == "log_gap" else e["source"]
        assert lines.where(source, e["start"], e["end"]).size == 0 or e["kind"] == "deploy"
        if e["kind"] == "deploy":
            assert 20 <= e["end"] - e["start"] <= 60
            assert lines.where(source, e["start"], e["end"] - 0.5).size == 0
            after = lines.where(source, e["start"], e["end"] + 5)
            assert lines.recs[after[0]]["message"] == f"starting {source}" and lines.recs[after[0]]["seq"] == 1


def test_silence_drop_and_missing_step(svc):
    w, lines, _ = svc
    for inc in by_kind(w, "silent_source"):
        assert lines.where(inc["source"], inc["start"], inc["end"]).size == 0
        assert lines.where(inc["source"], inc["start"] - 1800, inc["start"]).size > 0
    for inc in by_kind(w, "volume_drop"):
        ops = set(svcgen.FLOW_OPS) | {"runtime stats", "cache stats"}
        req = lines.where(inc["source"], inc["start"], inc["end"])
        req = [i for i in req if lines.msg[i] not in ops and "email" not in lines.msg[i]]
        before = lines.where(inc["source"], inc["start"] - 86400, inc["end"] - 86400)     # a day earlier
        before = [i for i in before if lines.msg[i] not in ops and "email" not in lines.msg[i]]
        assert len(req) < 0.6 * len(before), inc
    for inc in by_kind(w, "broken_workflow"):
        step = inc["detail"]["missing_step"]
        message = {"confirmation email": "email sent"}.get(step, step)
        assert lines.where(inc["source"], inc["start"], inc["end"], message).size == 0
        assert lines.where("orders", inc["start"], inc["end"], "order created").size > 3
        assert lines.where("payments", inc["start"], inc["end"], "payment authorised").size > 3
        assert lines.where(inc["source"], inc["start"] - 1800, inc["start"], message).size > 3


def test_latency_and_values_shift_inside_their_windows(svc):
    w, lines, _ = svc
    for inc in by_kind(w, "latency_drift"):
        op = inc["detail"]["operation"]

        def med(t0, t1, inc=inc, op=op):
            idx = [i for i in lines.where(inc["source"], t0, t1)
                   if (op is None and is_request(lines, i)) or op in (lines.msg[i], svc_op(lines, i))]
            return float(np.median(lines.values(idx, "duration_ms")))
        inside = med(inc["start"], inc["end"])
        assert inside > 1.6 * med(inc["start"] - 3600, inc["start"] - 60), inc
    for inc in by_kind(w, "unusual_value"):
        key, op = inc["detail"]["field"], inc["detail"].get("operation")

        def vals(t0, t1, inc=inc, key=key, op=op):
            return lines.values([i for i in lines.where(inc["source"], t0, t1) if op in (None, svc_op(lines, i))], key)
        inside, outside = vals(inc["start"], inc["end"]), vals(inc["start"] - 3600, inc["start"])
        assert inside.size and outside.size
        if key == "pool_in_use":
            assert np.all(inside == inc["detail"]["pool_size"]) and outside.max() < inc["detail"]["pool_size"]
        else:
            assert np.median(inside) > 5 * np.median(outside), inc


def is_request(lines, i):
    """A line logged for a request (not housekeeping, a batch job or an error line)."""
    return lines.msg[i] in svcgen.OP_MS or svc_op(lines, i).startswith(("GET /api", "POST /api"))


def svc_op(lines, i):
    """A gateway line's operation: its method and route ("GET /api/products/{id}")."""
    parts = lines.msg[i].split(" ")
    if len(parts) != 3 or not parts[1].startswith("/"):
        return lines.msg[i]
    return f"{parts[0]} " + "/".join("{id}" if p.isdigit() else p for p in parts[1].split("/"))


def test_bursts_spikes_and_new_errors_add_lines(svc):
    w, lines, _ = svc
    for inc in by_kind(w, "error_burst") + by_kind(w, "volume_spike"):
        dur = inc["end"] - inc["start"]
        if inc["kind"] == "error_burst":
            def count(t0, t1, inc=inc):
                return lines.where(inc["source"], t0, t1, inc["detail"]["message"]).size
        else:
            def count(t0, t1, inc=inc):
                idx = lines.where(inc["source"], t0, t1)
                op = inc["detail"]["operation"]
                return sum(1 for i in idx if op in (lines.msg[i], svc_op(lines, i) if inc["source"] == "gateway" else ""))
        inside, before = count(inc["start"], inc["end"]), count(inc["start"] - 3 * dur, inc["start"]) / 3
        assert inside > 3 * before + 3, (inc, inside, before)
        assert 0.4 * inside < inc["n_lines"] <= inside
    for inc in by_kind(w, "new_error"):
        msg = inc["detail"]["message"]
        every = lines.where(message=msg)
        assert every.size == inc["n_lines"] > 0
        assert np.all((lines.ts[every] >= inc["start"]) & (lines.ts[every] < inc["end"]))
        assert set(lines.src[every]) == {inc["source"]}


FAKE_REPLAY = r'''
import json, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
inc = args[args.index("--incidents") + 1]
files = args[args.index("--incidents") + 2:]
labels = json.load(open(files[0].rsplit("/", 1)[0] + "/labels.json"))
n = sum(1 for f in files for _ in open(f))
with open(out, "w") as fh:
    for i in range(n):
        fh.write(json.dumps({"file": files[0], "line": i + 1, "ts": 0.0, "anomaly": False}) + "\n")
with open(inc, "w") as fh:
    if labels["incidents"]:      # catch the first label with a right kind
        first = labels["incidents"][0]
        fh.write(json.dumps({"id": 1, "first_seen": first["start"] + 30, "last_seen": first["end"],
                             "source": first["source"], "kind": %RIGHT%[first["kind"]]}) + "\n")
'''


def test_detect_bench_runs_the_svc_family_under_its_own_held_out_titles(tmp_path, monkeypatch, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "detect_bench_svc", os.path.join(os.path.dirname(__file__), "..", "..", "bench", "detect_bench.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fake = tmp_path / "fake_replay.py"
    fake.write_text(FAKE_REPLAY.replace("%RIGHT%", repr({k: v[0] for k, v in RIGHT_KINDS.items()})))
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    figures = tmp_path / "figures.json"
    rc = bench.main(["--family", "all", "--seeds", "5", "--heldout-seeds", "7", "--days", "2", "--lines-per-day",
                     "20000", "--no-loghub", "--work", str(tmp_path / "w"), "--json", str(figures)])
    out = capsys.readouterr().out
    assert rc == 0
    for title in ("== tuning: seeds 5 ==", "== held-out: seeds 7 ==", "== shop family, tuning: seeds 5 ==",
                  "== shop family, held-out: seeds 7 ==", "== svc family, tuning: seeds 5 ==",
                  "== svc family, held-out: seeds 7 =="):
        assert out.count(title) == 1, title
    svc_tables = out.split("== svc family, tuning: seeds 5 ==")[1]
    for kind in svcgen.KINDS:
        assert f"\n{kind:<16} " in svc_tables
    assert "svc seed 5:" in out and (tmp_path / "w" / "svc-seed7" / "services.jsonl").exists()
    doc = json.loads(figures.read_text())
    assert set(doc) >= {"shop", "svc", "heldout"}
    assert sum(k["caught"] for k in doc["svc"]["kinds"].values()) == 1
    assert sum(k["caught"] for k in doc["svc"]["heldout"]["kinds"].values()) == 1
    assert bench.parse_args([]).family == "both"
