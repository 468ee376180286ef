"""Scoring of detections against workload labels (anomaly_detector.workload.scoring) and the bench harness.

Hand-made labels and detections with known answers; the harness runs against a fake replay command.
"""
import importlib.util
import json
import os
import sys

import pytest

from anomaly_detector.detection.incidents import KIND_BY_REASON
from anomaly_detector.workload.incidents import KINDS
from anomaly_detector.workload.scoring import (
    RIGHT_KINDS,
    Detection,
    detections_from_replay,
    group_flags,
    kind_of_reason,
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
        Detection(DAY + 1120, DAY + 1500, "app", kind="rule_burst"),     # catches #0, 120 s late
        Detection(DAY + 20300, DAY + 20400, "app", kind="rule_burst"),   # right time, wrong source: false
        Detection(2 * DAY + 3600 + 200, 2 * DAY + 3600 + 700, "web", kind="silent_source"),  # 200 s after: #2
        Detection(DAY - 500, DAY - 100, "db", kind="rule_burst"),        # in warm-up: not counted either way
        Detection(2.5 * DAY, 2.5 * DAY + 10, "batch", kind="rare_template"),  # nowhere near a label: false
    ]
    s = score(LABELS, dets)
    assert s.kinds["error_burst"].labelled == 2
    assert s.kinds["error_burst"].caught == 1
    assert s.kinds["error_burst"].recall == 0.5
    assert s.kinds["error_burst"].median_delay == 120.0
    assert s.kinds["silent_source"].recall == 1.0
    assert s.kinds["silent_source"].median_delay == 3800.0
    assert s.false_incidents == 2
    assert s.scored_days == 2.0
    assert s.false_per_day == 1.0
    assert s.warmup_detections == 1
    assert [m["id"] for m in s.missed] == [1]


def test_a_detection_must_begin_at_most_300_s_after_the_label_end():
    # Under the old rule (overlap, 900 s late allowed) both of these caught #0.
    late = [Detection(DAY + 1600 + 301, DAY + 1700 + 301, "app", kind="rule_burst")]
    s = score(LABELS, late)
    assert s.kinds["error_burst"].caught == 0
    assert s.false_incidents == 1 and s.near_label == 1
    on_time = [Detection(DAY + 1600 + 300, DAY + 1700 + 300, "app", kind="rule_burst")]
    assert score(LABELS, on_time).kinds["error_burst"].caught == 1
    assert score(LABELS, late, after=400).kinds["error_burst"].caught == 1


def test_a_detection_that_began_before_the_window_does_not_count():
    # Overlaps #0, but opened 10 minutes before it: the old overlap rule credited it.
    early = [Detection(DAY + 400, DAY + 1500, "app", kind="rule_burst")]
    s = score(LABELS, early)
    assert s.kinds["error_burst"].caught == 0 and s.false_incidents == 1
    assert score(LABELS, [Detection(DAY + 940, DAY + 1500, "app", kind="rule_burst")]).kinds["error_burst"].caught == 1


def test_one_detection_credits_one_label_the_earliest():
    labels = dict(LABELS, incidents=[
        {"id": 0, "kind": "error_burst", "source": "app", "start": DAY + 1000, "end": DAY + 1600},
        {"id": 1, "kind": "new_error", "source": "app", "start": DAY + 1200, "end": DAY + 1400},
    ])
    # Under the old rule one detection caught both overlapping labels.
    s = score(labels, [Detection(DAY + 1250, DAY + 1300, "app", kind="rare_template")])
    assert (s.kinds["error_burst"].caught, s.kinds["new_error"].caught) == (1, 0)
    assert [m["id"] for m in s.missed] == [1]
    two = [Detection(DAY + 1250, DAY + 1300, "app", kind="rule_burst"),
           Detection(DAY + 1260, DAY + 1300, "app", kind="new_template")]
    s = score(labels, two)
    assert (s.kinds["error_burst"].caught, s.kinds["new_error"].caught) == (1, 1)
    assert s.false_incidents == 0 and s.repeats == 0


def test_more_detections_of_one_label_are_repeats_not_catches_of_others():
    dets = [Detection(DAY + 1100, DAY + 1200, "app", kind="rule_burst"),
            Detection(DAY + 1300, DAY + 1400, "app", kind="rule_burst")]
    s = score(LABELS, dets)
    assert s.kinds["error_burst"].caught == 1
    assert s.repeats == 1 and s.false_incidents == 0


def test_the_kind_is_compared():
    # Under the old rule any kind caught the label.
    s = score(LABELS, [Detection(DAY + 1100, DAY + 1200, "app", kind="window_structure"),
                       Detection(2 * DAY + 100, 2 * DAY + 200, "web", kind="volume_spike")])
    eb, ss = s.kinds["error_burst"], s.kinds["silent_source"]
    assert (eb.labelled, eb.caught, eb.other_kind, eb.missed) == (2, 0, 1, 1)
    assert (ss.caught, ss.other_kind, ss.missed) == (0, 1, 0)
    assert eb.recall == 0.0 and eb.delays == []
    assert dict(eb.wrong_kinds) == {"window_structure": 1} and dict(ss.wrong_kinds) == {"volume_spike": 1}
    assert s.false_incidents == 0
    unknown = score(LABELS, [Detection(DAY + 1100, DAY + 1200, "app")])
    assert unknown.kinds["error_burst"].other_kind == 1 and dict(unknown.kinds["error_burst"].wrong_kinds) == {
        "unknown": 1}


def test_every_labelled_kind_has_right_engine_kinds():
    engine_kinds = {kind for _, kind in KIND_BY_REASON}
    assert set(RIGHT_KINDS) == set(KINDS)
    for label_kind, said in RIGHT_KINDS.items():
        assert said and set(said) <= engine_kinds, label_kind
    assert kind_of_reason("never-seen template") == "new_template"
    assert kind_of_reason("session of workflow 'checkout' never finished: stopped after 'x'") == "sequence"


def test_detection_without_source_matches_on_time_only():
    s = score(LABELS, [Detection(DAY + 20100, DAY + 20200, None, kind="rule_burst")])
    assert s.kinds["error_burst"].caught == 1
    assert s.false_incidents == 0


def test_detection_from_an_unknown_source_matches_on_time_only():
    labels = dict(LABELS, sources=["app", "db", "web"])
    s = score(labels, [Detection(DAY + 20100, DAY + 20200, "window", kind="rule_burst"),
                       Detection(2.5 * DAY, 2.5 * DAY, "window", kind="rule_burst")])
    assert s.kinds["error_burst"].caught == 1
    assert s.false_incidents == 1
    assert score(labels, [Detection(DAY + 20100, DAY + 20200, "app")]).kinds["error_burst"].caught == 0


def test_merge_pools_seeds():
    a = score(LABELS, [Detection(DAY + 1100, DAY + 1200, "app", kind="rule_burst")])
    b = score(LABELS, [Detection(DAY + 20000, DAY + 20100, "db", kind="sequence"),
                       Detection(2.2 * DAY, 2.2 * DAY, "db")])
    m = merge_scores([a, b])
    eb = m.kinds["error_burst"]
    assert (eb.labelled, eb.caught, eb.other_kind, eb.missed) == (4, 1, 1, 2)
    assert dict(eb.wrong_kinds) == {"sequence": 1}
    assert m.false_incidents == 1
    assert m.false_per_day == 0.25


def test_load_detections_reads_epoch_and_iso(tmp_path):
    p = tmp_path / "inc.jsonl"
    p.write_text(json.dumps({"id": "a", "first_seen": 100.5, "last_seen": 200, "source": "/x/app.log",
                             "tiers": ["t3"], "kind": "new_template"}) + "\n\n"
                 + json.dumps({"id": "b", "first_seen": "1970-01-01T00:01:40Z", "source": "db",
                              "reason": "source volume drop: 3 lines in the last 600s"}) + "\n")
    d = load_detections(p)
    assert [(x.ident, x.first_seen, x.last_seen, x.source, x.kind) for x in d] == [
        ("a", 100.5, 200.0, "app", "new_template"), ("b", 100.0, 100.0, "db", "volume_drop")]


def test_source_names():
    assert source_name("/var/log/app.log") == "app"
    assert source_name("web") == "web"
    assert source_name("") is None


def test_group_flags_splits_on_gap_and_source():
    flags = [("app", 10.0), ("app", 200.0), ("app", 900.0), ("db", 205.0)]
    got = [(d.source, d.first_seen, d.last_seen) for d in group_flags(flags, gap=300)]
    assert got == [("app", 10.0, 200.0), ("db", 205.0, 205.0), ("app", 900.0, 900.0)]
    scored = [("app", 10.0, 50.0, "rule_burst"), ("app", 20.0, 90.0, "sequence"), ("app", 30.0, 70.0, None)]
    assert [d.kind for d in group_flags(scored)] == ["sequence"]


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
                              replay_record(str(wl), 4, 5000.0, True, source="web",
                                            reasons=["new value of parameter 1 of x: 418"])]) + "\n")
    got = [(d.source, d.first_seen, d.kind) for d in detections_from_replay(out, [str(wl)])]
    assert got == [("app", 100.0, None), ("db", 101.0, None), ("web", 5000.0, "new_value")]


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
    # Catch the first labelled incident only (with a right kind), and add one false alarm on day 2.
    RIGHT = %RIGHT%
    first = labels["incidents"][0]
    fh.write(json.dumps({"id": 1, "first_seen": first["start"] + 30, "last_seen": first["end"], "source": first["source"],
                         "kind": RIGHT[first["kind"]]}) + "\n")
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
    fake.write_text(FAKE_REPLAY.replace("%RIGHT%", repr({k: v[0] for k, v in RIGHT_KINDS.items()})))
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    figures = tmp_path / "figures.json"
    rc = bench.main(["--family", "generated", "--seeds", "5", "--heldout-seeds", "7", "--days", "1", "--lines-per-day", "4000",
                     "--work", str(tmp_path / "w"), "--json", str(figures)])
    out = capsys.readouterr().out
    assert rc == 0
    tuning, heldout = out.split("== tuning: seeds 5 ==")[1].split("== held-out: seeds 7 ==")
    for table in (tuning, heldout):
        assert "false incidents after warm-up: 1 over 0.5 days = 2.00/day" in table
        assert "incidents file" in table and "other kind" in table
    doc = json.loads(figures.read_text())
    assert doc["false_per_day"] == 2.0 and doc["heldout"]["false_per_day"] == 2.0
    assert [s["seed"] for s in doc["seeds"]] == [5] and [s["seed"] for s in doc["heldout"]["seeds"]] == [7]
    assert sum(k["caught"] for k in doc["kinds"].values()) == 1
    assert sum(k["caught"] for k in doc["heldout"]["kinds"].values()) == 1
    assert doc["seeds"][0]["lines"] > 1000 and doc["peak_rss_bytes"] > 0


def test_bench_refuses_a_seed_both_tuning_and_held_out(bench, capsys):
    assert bench.main(["--seeds", "1,6", "--heldout-seeds", "6,7"]) == 2
    assert "seeds [6] are both tuning and held-out" in capsys.readouterr().err


def test_bench_reports_a_failing_replay_as_an_error(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, "-c", "import sys; sys.exit(3)"])
    rc = bench.main(["--family", "generated", "--seeds", "1", "--heldout-seeds", "", "--days", "0.2", "--lines-per-day", "2000",
                     "--work", str(tmp_path / "w")])
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
    rc = bench.main(["--family", "generated", "--seeds", "5", "--heldout-seeds", "", "--days", "1", "--lines-per-day", "4000",
                     "--work", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 detections (flagged lines)" in out
    assert "false incidents after warm-up: 0 " in out
