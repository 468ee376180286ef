"""Numeric series through replay, as a user meets them: a latency in a request log, a queue depth,
a metric logged every five minutes (shorter than the engine's warm-up)."""
import json
from datetime import datetime, timedelta, timezone

import numpy as np
from click.testing import CliRunner

from anomaly_detector.commands.replay import replay_command

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def replay(tmp_path, lines):
    log = tmp_path / "in.log"
    log.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(replay_command, ["--output", str(out), str(log)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def stamp(k, step):
    return (START + timedelta(seconds=k * step)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_slow_request_among_20000_is_flagged_by_its_series(tmp_path):
    rng = np.random.default_rng(1)
    ms = np.round(rng.lognormal(np.log(150), 0.24, 20000)).astype(int)
    ms[15000] = 3000
    lines = [f"{stamp(k, 30)} INFO request r{rng.integers(0, 16**6):06x} completed in {v} ms status=200"
             for k, v in enumerate(ms)]
    records = replay(tmp_path, lines)
    assert records[15000]["tiers"]["t3"] >= 70 and records[15000]["anomaly"]
    assert any("unusual value" in r for r in records[15000]["reasons"])
    assert sum(r["anomaly"] for r in records) <= 3


def test_a_jump_of_a_smooth_queue_depth_is_flagged(tmp_path):
    n = 3000
    depth = 500 + 100 * np.sin(2 * np.pi * np.arange(n) / 600.0) + np.random.default_rng(2).normal(0, 3, n)
    depth[2500:2510] += 200
    records = replay(tmp_path, [f"{stamp(k, 60)} INFO queue depth {d:.0f} items" for k, d in enumerate(depth)])
    assert records[2500]["anomaly"]
    assert not any(r["anomaly"] for r in records[:2490])


def test_a_short_metric_series_is_judged_before_the_engine_warm_up(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.normal(40, 4, 600)
    values[500] = 140
    records = replay(tmp_path, [f"{stamp(k, 300)} metric cpu value {v:.2f}" for k, v in enumerate(values)])
    assert records[500]["anomaly"]
    assert sum(r["anomaly"] for r in records) == 1


def query_log(rng, n=12000, slow_from=10000, factor=15.0):
    """Queries on six tables of very different latencies in one template (five words at one position
    make it one template with a parameter: parsing/miner.py); from line slow_from on, the fastest
    table is `factor` times slower (still faster than the slowest table's normal)."""
    medians = {"sessions": 1.0, "users": 2.0, "carts": 3.0, "items": 5.0, "orders": 8.0, "reports": 30.0}
    tables = rng.choice(list(medians), n)
    ms = np.array([medians[t] for t in tables]) * rng.lognormal(0.0, 0.4, n)
    slow = (np.arange(n) >= slow_from) & (tables == "sessions")
    ms[slow] *= factor
    rows = rng.poisson(5, n)
    hosts = rng.choice(["replica-1", "replica-2", "replica-3"], n)
    lines = [f"{stamp(k, 20)} INFO query select on {t} took {v:.2f} ms rows={r} host=db-{h}"
             for k, (t, v, r, h) in enumerate(zip(tables, ms, rows, hosts))]
    return lines, slow


def test_a_table_ten_times_slower_is_seen_in_its_own_series_not_lost_among_the_others(tmp_path, monkeypatch):
    """The table is the lines' context: each table's latency is a series of its own (series.py)."""
    import anomaly_detector.detection.tier3_novelty as T3
    lines, slow = query_log(np.random.default_rng(4))
    records = replay(tmp_path, lines)
    score = np.array([r["score"] for r in records])
    # an incident's worth: two suspicious lines (40), the strongest an anomaly (70)
    assert (score[slow] >= 70).sum() >= 1 and (score[slow] >= 40).sum() >= 2, score[slow][:20]
    assert any("unusual value" in r for r in records[np.flatnonzero(slow)[0]]["reasons"])
    assert sum(r["anomaly"] for r in records[:10000]) <= 3, "six tables, each steady: no false alarm before"
    monkeypatch.setattr(T3, "CONTEXT_MAX_VALUES", 0)    # one series for every table, as before contexts
    mixed = np.array([r["score"] for r in replay(tmp_path, lines)])
    assert (mixed[slow] >= 40).sum() == 0, "mixed with the slower tables, it hides"


def test_series_of_contexts_are_saved_restored_and_forgotten_with_their_slot():
    from types import SimpleNamespace

    from anomaly_detector.detection.series import SeriesBook
    book = SeriesBook(100, 16)
    batch = SimpleNamespace(n=3, param_ptr=np.array([0, 1, 2, 3]), param_num=np.array([1.0, 2.0, 3.0]),
                            source_id=np.array([0, 0, 1], np.int32))
    slots = np.array([5, 5, 5])
    rows = book.rows_of(batch, slots, np.array([0, 77, 77], np.int64))
    assert len(set(rows.tolist())) == 3, "no context, a context, the same context of another source"
    again = SeriesBook(100, 16)
    again.load(json.loads(json.dumps(book.state_dict())))
    assert again.rows == book.rows
    assert again.rows_of(batch, slots, np.array([0, 77, 77], np.int64)).tolist() == rows.tolist()
    again.state[:3] = 1.0
    again.forget_slots([5])
    assert not again.state[:3].any()
