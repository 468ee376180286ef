"""The shop workload family (bench/shopgen.py), its scoring by program name, and its bench tables.

Small workloads (20k lines a day, 2 days: seconds); the bench runs against a fake replay command.
"""
import importlib.util
import json
import os
import re
import sys

import numpy as np
import pytest

from anomaly_detector.workload.scoring import RIGHT_KINDS, Detection, program_source, score

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from bench import loghub_flags, shopgen  # noqa: E402

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (INFO|WARNING|ERROR) ([\w-]+) ([\w-]+)(?:\[\d+\])?: \S")


def read(path):
    """(epoch seconds, program) of every line; asserts the line layout."""
    ts, progs = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            m = LINE.match(line)
            assert m, line
            ts.append(m.group(1))
            progs.append(m.group(4))
    return np.array(ts, dtype="datetime64[ms]").astype(np.int64) / 1000.0, np.array(progs)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop")
    w = shopgen.generate(str(out / "a"), days=2, seed=3, lines_per_day=20_000)
    ts, progs = read(w.files[0])
    return w, ts, progs, out


def test_same_seed_same_bytes_other_seed_other_file(shop):
    w, _, _, out = shop
    again = shopgen.generate(str(out / "b"), days=2, seed=3, lines_per_day=20_000)
    other = shopgen.generate(str(out / "c"), days=2, seed=4, lines_per_day=20_000)
    for name in (shopgen.LOG_FILE, shopgen.LABELS_FILE):
        with open(os.path.join(w.out_dir, name), "rb") as a, open(os.path.join(again.out_dir, name), "rb") as b:
            assert a.read() == b.read()
    with open(w.files[0], "rb") as a, open(other.files[0], "rb") as c:
        assert a.read() != c.read()


def test_one_time_ordered_file_of_the_shop_services(shop):
    w, ts, progs, _ = shop
    assert w.lines == ts.size and 30_000 < w.lines < 60_000
    assert np.all(np.diff(ts) >= 0)
    assert w.start <= ts[0] and ts[-1] < w.end
    assert set(progs) == set(shopgen.PROGRAMS)


def test_one_incident_of_every_kind_after_the_warm_up_inside_the_file(shop):
    w, ts, progs, _ = shop
    assert sorted(i["kind"] for i in w.incidents) == sorted(shopgen.KINDS)
    assert set(shopgen.KINDS) <= set(RIGHT_KINDS)
    for inc in w.incidents:
        assert w.warmup_end <= inc["start"] < inc["end"] <= w.end
        assert ts[0] <= inc["start"] and inc["end"] <= ts[-1]
        assert inc["source"] in set(progs)
        inside = (progs == inc["source"]) & (ts >= inc["start"]) & (ts < inc["end"])
        assert inc["n_lines"] == int(inside.sum())
        if inc["kind"] == "silent_source":
            assert inc["n_lines"] == 0
    with open(w.labels_path, encoding="utf-8") as fh:
        doc = json.load(fh)
    assert doc["incidents"] == w.incidents and doc["sources"] == list(shopgen.PROGRAMS)


def test_restart_gaps_are_in_the_log_and_not_labelled(shop):
    w, ts, progs, _ = shop
    kinds = [e["kind"] for e in w.unlabelled]
    assert kinds.count("log_gap") == 2 and kinds.count("restart") == 2 and kinds.count("deploy") == 1
    for e in w.unlabelled:
        if e["kind"] == "deploy":
            continue
        assert 120 <= e["end"] - e["start"] <= 360
        silent = (ts >= e["start"]) & (ts < e["end"])
        if e["kind"] == "restart":
            silent &= progs == e["source"]
        assert not silent.any()
        for inc in w.incidents:       # no label overlaps a restart (nor comes within the separation)
            assert inc["end"] + shopgen.SEPARATION_S <= e["start"] or inc["start"] >= e["end"] + shopgen.SEPARATION_S
    log_gaps = [e for e in w.unlabelled if e["kind"] == "log_gap"]
    biggest = np.diff(ts).max()
    assert biggest >= min(e["end"] - e["start"] for e in log_gaps)


def test_the_deploy_brings_a_new_version_and_new_templates(shop):
    w, ts, _, _ = shop
    dep = next(e for e in w.unlabelled if e["kind"] == "deploy")
    with open(w.files[0], encoding="utf-8") as fh:
        text = fh.read()
    assert f"checkout {shopgen.NEW_VERSION} ready" in text and f"checkout {shopgen.OLD_VERSION} healthy" in text
    first_promo = text.index("promotion engine applied")
    stamp = np.datetime64(text[first_promo - 200:first_promo].splitlines()[-1][:23], "ms").astype(np.int64) / 1000.0
    assert stamp >= dep["end"]


def test_program_source_reads_the_program_out_of_a_source_name():
    known = ["nginx", "checkout", "postgres"]
    assert program_source("web-1 nginx", known) == "nginx"
    assert program_source("checkout[2211]", known) == "checkout"
    assert program_source("api-2/checkout", known) == "checkout"
    assert program_source("shop", known) is None
    assert program_source(None, known) is None
    labels = {"warmup_end": 0.0, "end": 86400.0, "sources": known,
              "incidents": [{"id": 0, "kind": "error_burst", "source": "checkout", "start": 1000.0, "end": 1600.0}]}
    assert score(labels, [Detection(1100, 1200, "api-1 checkout", kind="rule_burst")]).kinds["error_burst"].caught == 1
    wrong = score(labels, [Detection(1100, 1200, "web-1 nginx", kind="rule_burst")])
    assert wrong.kinds["error_burst"].caught == 0 and wrong.false_incidents == 1
    assert score(labels, [Detection(1100, 1200, "shop", kind="rule_burst")]).kinds["error_burst"].caught == 1


FAKE_REPLAY = r'''
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
inc = args[args.index("--incidents") + 1]
path = args[-1]
assert "--format" not in args or not path.endswith("shop.log"), args   # replayed with replay's defaults
n = sum(1 for _ in open(path))
with open(out, "w") as fh:
    for i in range(n):
        fh.write(json.dumps({"file": path, "line": i + 1, "ts": 0.0, "anomaly": False}) + "\n")
labels = os.path.join(os.path.dirname(path), "labels.json")
with open(inc, "w") as fh:
    if os.path.exists(labels) and json.load(open(labels)).get("family") == "shop":
        doc = json.load(open(labels))
        first = doc["incidents"][0]
        fh.write(json.dumps({"id": 1, "first_seen": first["start"] + 30, "last_seen": first["end"],
                             "source": "shop", "kind": %RIGHT%[first["kind"]]}) + "\n")
        fh.write(json.dumps({"id": 2, "first_seen": doc["warmup_end"] + 5, "last_seen": doc["warmup_end"] + 9,
                             "source": "shop", "kind": "new_value", "reason": "new value of parameter 1",
                             "template": "api-<*> checkout[<*>]: db pool stats"}) + "\n")
'''


@pytest.fixture(scope="module")
def bench():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "detect_bench.py")
    spec = importlib.util.spec_from_file_location("detect_bench_shop", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_prints_the_shop_family_apart(bench, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "fake_replay.py"
    fake.write_text(FAKE_REPLAY.replace("%RIGHT%", repr({k: v[0] for k, v in RIGHT_KINDS.items()})))
    monkeypatch.setattr(bench, "replay_command", lambda: [sys.executable, str(fake)])
    figures = tmp_path / "figures.json"
    rc = bench.main(["--family", "shop", "--no-loghub", "--seeds", "5", "--heldout-seeds", "7", "--days", "2",
                     "--lines-per-day", "20000", "--work", str(tmp_path / "w"), "--json", str(figures)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== tuning: seeds" not in out
    tuning, heldout = out.split("== shop family, tuning: seeds 5 ==")[1].split("== shop family, held-out: seeds 7 ==")
    for table in (tuning, heldout):
        assert "false incidents after warm-up: 1 over 1.0 days = 1.00/day" in table
        assert "false incidents by kind: new_value 1" in table and "api-<*> checkout[<*>]: db pool stats" in table
        assert "broken_workflow" in table
        assert re.search(r"\d+ false incidents began during or up to 900 s after an unlabelled deploy", table)
    doc = json.loads(figures.read_text())
    assert "seeds" not in doc and doc["shop"]["false_per_day"] == 1.0
    assert sum(k["caught"] for k in doc["shop"]["kinds"].values()) == 1


LOGHUB_REPLAY = r'''
import json, sys
args = sys.argv[1:]
out = args[args.index("--output") + 1]
inc = args[args.index("--incidents") + 1]
fmt = args[args.index("--log-format") + 1]
flag_every = 50 if "Hadoop" in args[-1] else 1000        # 2% of Hadoop's lines, 0.1% of the others'
with open(out, "w") as fh:
    for i, _ in enumerate(open(args[-1])):
        bad = i % flag_every == 0
        fh.write(json.dumps({"line": i + 1, "anomaly": bad, "reasons": ["rare template 12"] if bad else []}) + "\n")
open(inc, "w").write(json.dumps({"id": 1, "kind": "rare_template", "format": fmt}) + "\n")
'''


def test_loghub_table_marks_datasets_above_one_percent(tmp_path, capsys):
    data = tmp_path / "loghub"
    for name in loghub_flags.DATASETS:
        (data / name).mkdir(parents=True)
        (data / name / f"{name}_2k.log").write_text("x\n" * 2000)
    fake = tmp_path / "replay.py"
    fake.write_text(LOGHUB_REPLAY)
    rows = loghub_flags.run(str(data), str(tmp_path / "w"), [sys.executable, str(fake)])
    by_name = {r["dataset"]: r for r in rows}
    assert by_name["Hadoop"]["flagged"] == 40 and by_name["Hadoop"]["share"] == 0.02
    assert by_name["HDFS"]["flagged"] == 2 and by_name["HDFS"]["incidents"] == 1
    loghub_flags.print_table(rows)
    out = capsys.readouterr().out
    assert re.search(r"Hadoop\s+2000\s+40\s+2\.00%!", out)
    assert re.search(r"HDFS\s+2000\s+2\s+0\.10% ", out)
    assert "rare template N (2)" in out and "(1 of 10 datasets above 1%)" in out


def test_loghub_missing_samples_are_one_error(tmp_path):
    with pytest.raises(loghub_flags.LoghubError, match="Loghub samples not found"):
        loghub_flags.run(str(tmp_path / "nowhere"), str(tmp_path / "w"))


def test_bench_counts_false_incidents_after_unlabelled_happenings(bench):
    happenings = [{"kind": "deploy", "start": 1000.0, "end": 1240.0}, {"kind": "log_gap", "start": 5000.0, "end": 5200.0}]
    false = [Detection(t, t + 10, None) for t in (950.0, 1300.0, 2200.0, 5300.0, 9000.0)]
    assert bench.after_unlabelled(false, happenings) == {"deploy": 2, "log_gap": 1}
    assert bench.after_unlabelled(false, None) is None
