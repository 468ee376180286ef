"""Scoring of detections against workload labels (anomaly_detector.workload.scoring) and the bench harness.

Hand-made labels and detections with known answers; the harness runs against a fake replay command.
"""
import importlib.util
import json
import os
import sys

import pytest

from anomaly_detector.workload.scoring import (
    Detection,
    detections_from_replay,
    group_flags,
    load_detections,
    merge_scores,
    score,
    source_name,
)

DAY = 86400.0
LABELS = {
    "warmup_end": DAY,
    "end": 3 * DAY,
    "incidents": [
        {"id": 0, "kind": "error_burst", "source": "app", "start": DAY + 1000, "end": DAY + 1600},
        {"id": 1, "kind": "error_burst", "source": "db", "start": DAY + 20000, "end": DAY + 20600},
        {"id": 2, "kind": "silent_source", "source": "web", "start": 2 * DAY, "end": 2 * DAY + 3600},
    ],
}


def test_recall_delay_and_false_incidents():
    dets = [
        Detection(DAY + 1120, DAY + 1500, "app"),          # catches #0, 120 s late
        Detection(DAY + 20300, DAY + 20400, "app"),        # right time, wrong source: false
        Detection(2 * DAY + 3600 + 600, 2 * DAY + 3600 + 700, "web"),  # within the after-tolerance: catches #2
        Detection(DAY - 500, DAY - 100, "db"),             # in warm-up: not counted either way
        Detection(2.5 * DAY, 2.5 * DAY + 10, "batch"),     # nowhere near a label: false
    ]
    s = score(LABELS, dets)
    assert s.kinds["error_burst"].labelled == 2
    assert s.kinds["error_burst"].caught == 1
    assert s.kinds["error_burst"].recall == 0.5
    assert s.kinds["error_burst"].median_delay == 120.0
    assert s.kinds["silent_source"].recall == 1.0
    assert s.kinds["silent_source"].median_delay == 4200.0
    assert s.false_incidents == 2
    assert s.scored_days == 2.0
    assert s.false_per_day == 1.0
    assert s.warmup_detections == 1
    assert [m["id"] for m in s.missed] == [1]


def test_tolerances_bound_the_match():
    late = [Detection(DAY + 1600 + 901, DAY + 1700 + 901, "app")]
    assert score(LABELS, late).kinds["error_burst"].caught == 0
    assert score(LABELS, late, after=1000).kinds["error_burst"].caught == 1
    early = [Detection(DAY + 800, DAY + 930, "app")]
    assert score(LABELS, early).kinds["error_burst"].caught == 0
    assert score(LABELS, early, before=100).kinds["error_burst"].caught == 1


def test_detection_without_source_matches_on_time_only():
    s = score(LABELS, [Detection(DAY + 20100, DAY + 20200, None)])
    assert s.kinds["error_burst"].caught == 1
    assert s.false_incidents == 0


def test_detection_from_an_unknown_source_matches_on_time_only():
    labels = dict(LABELS, sources=["app", "db", "web"])
    s = score(labels, [Detection(DAY + 20100, DAY + 20200, "window"), Detection(2.5 * DAY, 2.5 * DAY, "window")])
    assert s.kinds["error_burst"].caught == 1
    assert s.false_incidents == 1
    assert score(labels, [Detection(DAY + 20100, DAY + 20200, "app")]).kinds["error_burst"].caught == 0


def test_merge_pools_seeds():
    a = score(LABELS, [Detection(DAY + 1100, DAY + 1200, "app")])
    b = score(LABELS, [Detection(DAY + 20000, DAY + 20100, "db"), Detection(2.2 * DAY, 2.2 * DAY, "db")])
    m = merge_scores([a, b])
    assert (m.kinds["error_burst"].labelled, m.kinds["error_burst"].caught) == (4, 2)
    assert m.false_incidents == 1
    assert m.false_per_day == 0.25


def test_load_detections_reads_epoch_and_iso(tmp_path):
    p = tmp_path / "inc.jsonl"
    p.write_text(json.dumps({"id": "a", "first_seen": 100.5, "last_seen": 200, "source": "/x/app.log",
                             "tiers": ["t3"], "kind": "new_template"}) + "\n\n"
                 + json.dumps({"id": "b", "first_seen": "1970-01-01T00:01:40Z", "source": "db"}) + "\n")
    d = load_detections(p)
    assert [(x.ident, x.first_seen, x.last_seen, x.source) for x in d] == [
        ("a", 100.5, 200.0, "app"), ("b", 100.0, 100.0, "db")]


def test_source_names():
    assert source_name("/var/log/app.log") == "app"
    assert source_name("web") == "web"
    assert source_name("") is None


def test_group_flags_splits_on_gap_and_source():
    flags = [("app", 10.0), ("app", 200.0), ("app", 900.0), ("db", 205.0)]
    got = [(d.source, d.first_seen, d.last_seen) for d in group_flags(flags, gap=300)]
    assert got == [("app", 10.0, 200.0), ("db", 205.0, 205.0), ("app", 900.0, 900.0)]


def replay_record(file, line, ts, anomaly, **extra):
    rec = {"file": file, "line": line, "ts": ts, "template_id": 1, "template": "x <*>", "score": 80.0 if anomaly else 1.0,
           "anomaly": anomaly, "tiers": {"t1": 0.0, "t2": 0.0, "t3": 0.0, "t4": 0.0}, "reasons": []}
    rec.update(extra)
    return json.dumps(rec)


def test_detections_from_replay_takes_sources_from_the_workload(tmp_path):
    wl = tmp_path / "workload.jsonl"
    wl.write_text("".join(json.dumps({"timestamp": "2026-03-02T00:00:0%d.000Z" % i, "source": s, "level": "INFO",
                                      "message": "m"}) + "\n" for i, s in enumerate(["app", "db", "app", "web"])))
    out = tmp_path / "replay.jsonl"
    out.write_text("\n".join([replay_record(str(wl), 1, 100.0, True), replay_record(str(wl), 2, 101.0, True),
                              replay_record(str(wl), 3, 102.0, False),
                              replay_record(str(wl), 4, 5000.0, True, source="web")]) + "\n")
    got = [(d.source, d.first_seen) for d in detections_from_replay(out, [str(wl)])]
    assert got == [("app", 100.0), ("db", 101.0), ("web", 5000.0)]


FAKE_REPLAY = r'''
import json, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
inc = args[args.index("--incidents") + 1]
files = [a for a in args[args.index("--incidents") + 2:]]
labels = json.load(open(files[0].rsplit("/", 1)[0] + "/labels.json"))
n = sum(1 for _ in open(files[0]))
with open(out, "w") as fh:
    for i in range(n):
        fh.write(json.dumps({"file": files[0], "line": i + 1, "ts": 0.0, "anomaly": False}) + "\n")
with open(inc, "w") as fh:
    if not labels["incidents"]:  # the bench's warm-up replay
        sys.exit(0)
    # Catch the first labelled incident only, and add one false alarm on day 2.
    first = labels["incidents"][0]
    fh.write(json.dumps({"id": 1, "first_seen": first["start"] + 30, "last_seen": first["end"], "source": first["source"]}) + "\n")
    fh.write(json.dumps({"id": 2, "first_seen": labels["warmup_end"] + 5, "last_seen": labels["warmup_end"] + 9, "source": "nosuch"}) + "\n")
'''


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "detect_bench.py")
    spec = importlib.util.spec_from_file_location("detect_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_harness_end_to_end_with_a_fake_replay(bench, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "fake_replay.py"
    fake.write_text(FAKE_REPLAY)
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    figures = tmp_path / "figures.json"
    rc = bench.main(["--seeds", "5", "--days", "1", "--lines-per-day", "4000", "--work", str(tmp_path / "w"),
                     "--json", str(figures)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "false incidents after warm-up: 1 over 0.5 days = 2.00/day" in out
    assert "incidents file" in out
    doc = json.loads(figures.read_text())
    assert doc["false_per_day"] == 2.0
    assert sum(k["caught"] for k in doc["kinds"].values()) == 1
    assert doc["seeds"][0]["lines"] > 1000 and doc["peak_rss_bytes"] > 0


def test_bench_reports_a_failing_replay_as_an_error(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    rc = bench.main(["--seeds", "1", "--days", "0.2", "--lines-per-day", "2000", "--work", str(tmp_path / "w")])
    assert rc == 1
    assert "replay exited 3" in capsys.readouterr().err


OLD_REPLAY = r'''
import json, sys
args = sys.argv[1:]
if "--incidents" in args:
    print("Error: No such option: --incidents", file=sys.stderr)
    sys.exit(2)
out = args[args.index("--output") + 1]
files = args[args.index("--output") + 2:]
labels = json.load(open(files[0].rsplit("/", 1)[0] + "/labels.json"))
first = labels["incidents"][0] if labels["incidents"] else {"start": 0.0, "source": "web"}  # warm-up: none
with open(out, "w") as fh:
    for i, line in enumerate(open(files[0])):
        rec = json.loads(line)
        ts = first["start"] + 10 if i == 0 else 0.0
        fh.write(json.dumps({"file": files[0], "line": i + 1, "ts": ts, "anomaly": i == 0,
                             "source": first["source"] if i == 0 else rec["source"]}) + "\n")
'''


def test_bench_falls_back_to_flagged_lines_without_an_incidents_option(bench, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "old_replay.py"
    fake.write_text(OLD_REPLAY)
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    rc = bench.main(["--seeds", "5", "--days", "1", "--lines-per-day", "4000", "--work", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 detections (flagged lines)" in out
    assert "false incidents after warm-up: 0 " in out
