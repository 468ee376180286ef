"""The workload generator (anomaly_detector.workload): determinism, realism, and labels that tell the truth.

One small two-day workload with every incident kind twice is generated per module and checked line by line.
"""
import json
import re
from collections import defaultdict

import numpy as np
import pytest

from anomaly_detector.workload.generator import generate, load_labels, parse_time, source_volumes, traffic_rates
from anomaly_detector.workload.incidents import KINDS

DAY = 86400.0
LINE = re.compile(r"^(\S+) (\w+) (.*)$")


def read_plain(path):
    rows = []
    with open(path, encoding="utf-8") as fh:
        for text in fh:
            stamp, level, msg = LINE.match(text.rstrip("\n")).groups()
            rows.append((parse_time(stamp), level, msg))
    return rows


@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    out = tmp_path_factory.mktemp("wl")
    w = generate(str(out), days=2, seed=11, lines_per_day=120000, incidents=list(KINDS) * 2)
    rows = {f.rsplit("/", 1)[-1]: read_plain(f) for f in w.files}
    return w, load_labels(w.labels_path), rows


def labelled(rows, label):
    out = []
    for name, lines in label["lines"].items():
        out.extend(rows[name][n - 1] for n in lines)
    return out


def in_window(rows, a, b, text="", level=None):
    return [r for r in rows if a <= r[0] < b and text in r[2] and level in (None, r[1])]


def by_kind(labels, kind):
    return [i for i in labels["incidents"] if i["kind"] == kind]


def test_every_kind_is_labelled_after_warmup_without_overlap(wl):
    w, labels, rows = wl
    assert sorted(i["kind"] for i in labels["incidents"]) == sorted(list(KINDS) * 2)
    spans = sorted((i["start"], i["end"]) for i in labels["incidents"])
    assert spans[0][0] >= labels["warmup_end"]
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert labels["lines_per_file"] == {name: len(r) for name, r in rows.items()}
    for inc in labels["incidents"]:
        assert set(inc["lines"]) <= {inc["source"] + ".log"}
        assert (inc["n_lines"] == 0) == (inc["kind"] == "silent_source"), inc
        for ts, _level, _msg in labelled(rows, inc):
            assert inc["start"] - 1 <= ts < inc["end"] + 60, inc


def test_files_are_in_event_time_order(wl):
    for lines in wl[2].values():
        ts = np.array([r[0] for r in lines])
        assert np.all(np.diff(ts) >= 0)


def test_error_burst_is_many_errors(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "error_burst"):
        lines = labelled(rows, inc)
        assert {r[1] for r in lines} == {"ERROR"}
        minutes = (inc["end"] - inc["start"]) / 60
        warm = rows[inc["source"] + ".log"]
        normal = len(in_window(warm, 0, labels["warmup_end"], level="ERROR")) / 1440
        assert len(lines) / minutes > 10 * normal


def test_new_error_template_is_never_seen_elsewhere(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "new_error"):
        lines = labelled(rows, inc)
        assert lines and {r[1] for r in lines} <= {"ERROR", "FATAL"}
        head = inc["detail"]["template"].split("{")[0]
        assert sum(head in r[2] for r in rows[inc["source"] + ".log"]) == len(lines)


def took(msg):
    return float(re.search(r"took ([\d.]+) ms", msg).group(1))


def test_latency_drift_shifts_the_field(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "latency_drift"):
        lines = labelled(rows, inc)
        if inc["source"] == "db":
            op, table = inc["detail"]["query"].split(":")
            key = f"query {op} on {table} took"
        else:
            key = "search query"
        assert len(lines) >= 3 and all(key in r[2] for r in lines)
        # Latency follows load, so compare with the same hours of the day before.
        before = [took(r[2]) for r in in_window(rows[inc["source"] + ".log"], inc["start"] - DAY - 3600,
                                                 inc["end"] - DAY + 3600, key)]
        assert np.median([took(r[2]) for r in lines]) > 4 * np.median(before)


STEP_TEXT = {"payment": "payment ", "cart": "cart loaded", "auth": "auth ok", "login": "login attempt",
             "catalog": "catalog query"}
RID = re.compile(r"(?:request |req=)([0-9a-f]{12})\b")


def sessions(lines):
    out = defaultdict(list)
    for r in lines:
        m = RID.search(r[2])
        if m:
            out[m.group(1)].append(r[2])
    return out


def test_broken_workflow_sessions_really_are_broken(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "broken_workflow"):
        got = sessions(labelled(rows, inc))
        assert got, inc
        mode = inc["detail"]["mode"]
        for rid, msgs in got.items():
            assert "received" in msgs[0]
            done = [i for i, m in enumerate(msgs) if " completed in " in m]
            if mode == "unfinished":
                assert not done, (rid, msgs)
            step = [i for i, m in enumerate(msgs) if STEP_TEXT.get(inc["detail"].get("step"), "\0") in m]
            if mode == "skip":
                assert done and not step, (rid, msgs)
            if mode == "order":
                assert done and step and step[0] > done[0], (rid, msgs)


def test_normal_sessions_are_complete_and_ordered(wl):
    _, labels, rows = wl
    warm = in_window(rows["app.log"], 600, labels["warmup_end"] - 600)
    got = sessions(warm)
    complete = [m for m in got.values() if "received" in m[0] and " completed in " in m[-1]]
    assert len(got) > 1000
    assert len(complete) >= 0.97 * len(got)  # the rest straddle the window's edges


def test_unusual_value_appears_only_in_its_incident(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "unusual_value"):
        d = inc["detail"]
        pattern = f'HTTP/1.1" {d["value"]} ' if d["field"] == "status" else f'{d["field"]}={d["value"]} '
        hits = [r for r in rows[inc["source"] + ".log"] if pattern in r[2] + " "]
        lines = labelled(rows, inc)
        assert lines and all(pattern in r[2] + " " for r in lines)
        assert len(hits) == len(lines), inc


SPIKE_KEY = {"web": '"POST /api/v1/login ', "app": "cache miss key=", "db": "query select on sessions took"}


def test_volume_spike_multiplies_a_template(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "volume_spike"):
        src = rows[inc["source"] + ".log"]
        key = SPIKE_KEY[inc["source"]]
        now = len(in_window(src, inc["start"], inc["end"], key))
        before = len(in_window(src, inc["start"] - DAY, inc["end"] - DAY, key))
        assert now > 3 * max(before, 5), inc
        assert all(key in r[2] for r in labelled(rows, inc))


# The traffic-driven lines of each source (its periodic housekeeping lines keep coming in a drop).
TRAFFIC_KEY = {"web": "HTTP/1.1", "app": "request ", "db": "query "}


def test_volume_drop_lowers_a_source_without_silencing_it(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "volume_drop"):
        src = rows[inc["source"] + ".log"]
        key = TRAFFIC_KEY[inc["source"]]
        now = in_window(src, inc["start"], inc["end"], key)
        before = in_window(src, inc["start"] - DAY, inc["end"] - DAY, key)
        assert 0 < len(now) < 0.4 * len(before), inc
        assert len(labelled(rows, inc)) == len(in_window(src, inc["start"], inc["end"]))


def test_silent_source_writes_nothing_in_its_window(wl):
    _, labels, rows = wl
    for inc in by_kind(labels, "silent_source"):
        src = rows[inc["source"] + ".log"]
        assert not in_window(src, inc["start"], inc["end"])
        assert in_window(src, inc["start"] - 900, inc["start"])
        assert in_window(src, inc["end"], inc["end"] + 900)


def test_day_night_and_weekend_seasonality(wl):
    web, t = wl[2]["web.log"], wl[1]["start"]
    night = len(in_window(web, t + 2 * 3600, t + 5 * 3600))
    day = len(in_window(web, t + 10 * 3600, t + 13 * 3600))
    assert day > 3 * night > 0
    t0 = parse_time("2026-03-02T00:00:00Z")  # a Monday
    volumes = source_volumes(100000)
    rates = traffic_rates(np.random.default_rng(0), t0, 7 * 1440, volumes)["web"].reshape(7, 1440).sum(axis=1)
    assert 0.4 < rates[5:].mean() / rates[:5].mean() < 0.8
    assert 0.75 < rates[:5].mean() / (100000 * 0.40) < 1.25


def test_realistic_variety_and_rare_normal_events(wl):
    _, labels, rows = wl
    web = rows["web.log"]
    assert len({r[2].split(" ", 1)[0] for r in web}) > 1000
    assert len({re.search(r'"\w+ (\S+) ', r[2]).group(1) for r in web}) > 1000
    users = {m.group(1) for r in rows["app.log"] if (m := re.search(r"user=(\S+)", r[2]))}
    assert len(users) > 1000
    warm = lambda name: in_window(rows[name], 0, labels["warmup_end"])  # noqa: E731
    assert any(r[1] == "WARN" and "retrying call" in r[2] for r in warm("app.log"))
    assert any(r[1] == "ERROR" for r in warm("db.log"))
    batch = rows["batch.log"]
    assert any("weekly-reindex started" in r[2] for r in warm("batch.log"))
    assert not any("weekly-reindex" in r[2] for r in batch if r[0] >= labels["warmup_end"])
    assert sum("nightly-backup started" in r[2] for r in batch) == 2


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kw = dict(days=0.25, lines_per_day=20000, incidents=["error_burst", "broken_workflow"])
    a = generate(str(tmp_path / "a"), seed=3, fmt="jsonl", **kw)
    b = generate(str(tmp_path / "b"), seed=3, fmt="jsonl", **kw)
    c = generate(str(tmp_path / "c"), seed=4, fmt="jsonl", **kw)
    read = lambda p: open(p, "rb").read()  # noqa: E731
    assert read(a.files[0]) == read(b.files[0])
    assert load_labels(a.labels_path)["incidents"] == load_labels(b.labels_path)["incidents"]
    assert read(a.files[0]) != read(c.files[0])


def test_jsonl_is_one_merged_time_ordered_file(tmp_path):
    w = generate(str(tmp_path), days=0.2, seed=8, lines_per_day=30000, fmt="jsonl", incidents=["new_error"])
    recs = [json.loads(line) for line in open(w.files[0], encoding="utf-8")]
    assert len(recs) == w.lines
    assert {"web", "app", "db", "health"} <= {r["source"] for r in recs}
    ts = [parse_time(r["timestamp"]) for r in recs]
    assert ts == sorted(ts)
    inc = w.incidents[0]
    for n in inc["lines"]["workload.jsonl"]:
        assert recs[n - 1]["source"] == inc["source"] and recs[n - 1]["level"] in ("ERROR", "FATAL")


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown incident kind"):
        generate(str(tmp_path), days=0.1, incidents=["meteor"])
    with pytest.raises(ValueError, match="format"):
        generate(str(tmp_path), days=0.1, fmt="xml")
    with pytest.raises(ValueError, match="warm-up"):
        generate(str(tmp_path), days=1, warmup_days=1, incidents=["new_error"])


def test_demo_sized_workload_and_cli(tmp_path, capsys):
    from anomaly_detector.workload.__main__ import main

    rc = main(["--out", str(tmp_path), "--days", "0.05", "--seed", "2", "--lines-per-day", "50000",
               "--incidents", "error_burst"])
    out = capsys.readouterr().out
    assert rc == 0
    labels = load_labels(tmp_path / "labels.json")
    (inc,) = labels["incidents"]
    assert inc["kind"] == "error_burst" and inc["n_lines"] > 0
    assert labels["warmup_end"] == labels["start"] + 0.025 * DAY <= inc["start"] < inc["end"] <= labels["end"]
    assert "1 incidents" in out and f"{sum(labels['lines_per_file'].values())} lines in" in out
    assert main(["--out", str(tmp_path), "--days", "0.05", "--incidents", "meteor"]) == 2
    assert main(["--out", str(tmp_path), "--days", "0.05", "--source-lines-per-day", "db"]) == 2
    assert "SRC=N" in capsys.readouterr().err


def test_volume_per_source_can_be_set(tmp_path):
    w = generate(str(tmp_path), days=0.5, seed=1, lines_per_day=40000, incidents="none",
                 source_lines_per_day={"web": 4000, "health": 11520})
    n = w.lines_per_file
    # Half a day from midnight holds ~37% of a day's traffic (the evening peak is missing).
    assert 0.25 * 4000 < n["web.log"] < 0.5 * 4000
    assert 0.25 * 0.36 * 40000 < n["app.log"] < 0.5 * 0.36 * 40000
    assert n["health.log"] == 8 * 43200 / 60  # 8 targets every 60 s
    with pytest.raises(ValueError, match="no such source"):
        generate(str(tmp_path), days=0.1, source_lines_per_day={"mail": 5})
