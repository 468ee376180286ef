"""Series split by a categorical value (tier 3): one table's query time judged against that table's own
past survives a save and restore, and statistics saved before splits and the level-shift test load."""
import json
from datetime import datetime, timedelta, timezone

import numpy as np
from click.testing import CliRunner

from anomaly_detector.commands.replay import replay_command
from anomaly_detector.detection import series_kernels as K
from anomaly_detector.storage.atomic import read_json_snapshot, write_json_snapshot

STATS = ("statistics", "detection.json")
START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def _queries(drifting, factor, n=24000, at=20000, seed=4):
    """A db log: seven tables' query times (medians 0.8 to 6.5 ms) in one template, 3 s apart; from
    line `at` on the queries of one table (about 9 % of the lines) take `factor` times as long."""
    rng = np.random.default_rng(seed)
    tables = ["products", "orders", "users", "sessions", "cart_items", "inventory", "audit_log"]
    medians = np.array([2.1, 6.5, 1.2, 0.8, 1.6, 3.2, 0.9])
    share = np.array([30, 12, 14, 16, 9, 4, 4.5])
    q = rng.choice(len(tables), n, p=share / share.sum())
    ms = rng.lognormal(0.0, 0.55, n) * medians[q]
    hit = (np.arange(n) >= at) & (q == tables.index(drifting))
    ms[hit] *= factor
    stamps = [(START + timedelta(seconds=3 * k)).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(n)]
    lines = [f"{s} INFO query select on {tables[t]} took {v:.1f} ms" for s, t, v in zip(stamps, q, ms)]
    return lines, hit


def _replay(tmp_path, name, lines, *options):
    """Replay lines as one file; every call writes the same file (a file is a source: its name is kept).
    The level-shift test is on (series_shift_budget 0.01, the default) unless options give a --config."""
    log = tmp_path / "db.log"
    log.write_text("".join(line + "\n" for line in lines))
    out = tmp_path / (name + ".jsonl")
    result = CliRunner().invoke(replay_command, ["--output", str(out), *options, str(log)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def _t3(state_dir):
    return read_json_snapshot(str(state_dir.joinpath(*STATS)), "detection-statistics", 2)


def test_one_tables_latency_is_judged_against_that_tables_own_past(tmp_path):
    """x16 on a table whose normal times sit inside the mix of all tables': the pooled series sees
    values it knows, the table's own series a shift (without splits nothing here is flagged)."""
    lines, hit = _queries("cart_items", 16.0)
    records = _replay(tmp_path, "all", lines)
    flagged = [k for k, r in enumerate(records) if r["anomaly"]]
    assert any(hit[k] for k in flagged), flagged
    first = next(k for k in flagged if hit[k])
    assert first < 20000 + 40 * 11        # within about 40 of the table's own lines
    assert any("where parameter" in reason and "cart_items" in reason for reason in records[first]["reasons"])
    assert sum(1 for k in flagged if not hit[k]) <= 1


def test_split_series_are_saved_and_restored(tmp_path):
    lines, hit = _queries("cart_items", 16.0)
    _replay(tmp_path, "before", lines[:19000], "--save-state", str(tmp_path / "state"))
    saved = _t3(tmp_path / "state")[1]["t3"]
    assert len(saved["split_ids"]) >= 7 and max(saved["split_pos"]) >= 0
    records = _replay(tmp_path, "after", lines[19000:], "--from-state", str(tmp_path / "state"))
    flagged = [k + 19000 for k, r in enumerate(records) if r["anomaly"]]
    assert any(hit[k] for k in flagged)
    first = next(k for k in flagged if hit[k])
    assert any("cart_items" in reason for reason in records[first - 19000]["reasons"])


def test_statistics_saved_before_splits_and_shift_columns_load(tmp_path):
    lines, _ = _queries("cart_items", 1.0, n=8000, at=8000)
    state = tmp_path / "state"
    _replay(tmp_path, "before", lines[:6000], "--save-state", str(state))
    version, stats = _t3(state)
    t3 = stats["t3"]
    del t3["split_pos"], t3["split_ids"]
    t3["series"]["state"] = [row[:K.OLD_COLS] for row in t3["series"]["state"]]
    write_json_snapshot(str(state.joinpath(*STATS)), "detection-statistics", version, stats)
    records = _replay(tmp_path, "after", lines[6000:], "--from-state", str(state), "--save-state",
                      str(tmp_path / "again"))
    assert len(records) == 2000 and not any(r["anomaly"] for r in records)
    again = _t3(tmp_path / "again")[1]["t3"]
    assert all(len(row) == K.COLS for row in again["series"]["state"]) and max(again["split_pos"]) >= 0


def test_a_zero_shift_budget_splits_no_series(tmp_path):
    """series_shift_budget = 0 turns the level-shift test off, and with it the split
    series it judges."""
    config = tmp_path / "off.ini"
    config.write_text("[detection]\n[[tier3]]\nseries_shift_budget = 0\n")
    lines, hit = _queries("cart_items", 16.0, n=22000)
    records = _replay(tmp_path, "off", lines, "--config", str(config), "--save-state", str(tmp_path / "state"))
    saved = _t3(tmp_path / "state")[1]["t3"]
    assert saved["split_ids"] == [] and max(saved["split_pos"]) < 0
    assert not any("where parameter" in reason for r in records for reason in r["reasons"])
