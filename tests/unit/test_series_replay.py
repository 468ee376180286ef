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
