"""Numeric fields of JSON lines become parameters of their line's template: they reach the batch
as param_num in key order (parse_columns and the per-line path alike), the json_numeric_fields cap
is honoured and counted, and a numbers-only incident in a JSON log is flagged through replay."""
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from click.testing import CliRunner

from anomaly_detector.commands.replay import replay_command
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.parsing.records import RecordParser, number_text, parse_columns

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


def stamp(k, step):
    return (START + timedelta(seconds=k * step)).strftime("%Y-%m-%dT%H:%M:%SZ")


def order_lines(n):
    # keys in no particular order; true, a number in a string and a nested object are not fields
    return [json.dumps({"timestamp": stamp(k, 60), "queue_depth": 17 + k, "source": "api", "level": "INFO",
                        "message": "order placed", "user": "u42", "duration_ms": 400.5 + k, "ok": True,
                        "code": "500", "mem": {"rss": 7}, "level_num": -3}).encode() for k in range(n)]


def mined(parser, lines, per_line):
    """(template texts, param_num per line) of lines parsed by parse_columns or line by line."""
    miner = TemplateMiner()
    if per_line:
        contents = [parser.parse(line).content for line in lines]
        data = "".join(contents).encode()
        ends = np.cumsum([len(c.encode()) for c in contents])
        got = miner.add_batch(np.frombuffer(data, np.uint8), ends - [len(c.encode()) for c in contents], ends)
    else:
        cols = parse_columns(parser, b"\n".join(lines) + b"\n")
        got = miner.add_batch(cols.content_buf, cols.content_start, cols.content_end)
    nums = [got.param_num[got.param_ptr[i]:got.param_ptr[i + 1]].tolist() for i in range(len(lines))]
    return [miner.template(int(t)) for t in got.template_id], nums


@pytest.mark.parametrize("per_line", [False, True])
def test_numeric_fields_are_numeric_parameters_in_key_order(per_line):
    parser = RecordParser(format="jsonl")
    templates, nums = mined(parser, order_lines(5), per_line)
    # the minus sign is the number's: one template whatever the sign, the value negative
    assert set(templates) == {"order placed duration_ms=<*> level_num=<*> queue_depth=<*>"}
    assert nums == [[400.5 + k, -3.0, 17.0 + k] for k in range(5)]
    assert parser.stats["json_fields_over_cap"] == 0


@pytest.mark.parametrize("per_line", [False, True])
def test_fields_past_the_cap_are_left_out_and_counted(per_line):
    parser = RecordParser(format="jsonl", json_numeric_fields=1)
    templates, nums = mined(parser, order_lines(4), per_line)
    assert set(templates) == {"order placed duration_ms=<*>"}
    assert nums == [[400.5 + k] for k in range(4)]
    assert parser.stats["json_fields_over_cap"] == 4 * 2


def test_zero_turns_it_off():
    parser = RecordParser(format="jsonl", json_numeric_fields=0)
    cols = parse_columns(parser, b"\n".join(order_lines(3)) + b"\n")
    assert [cols.content(i) for i in range(3)] == ["order placed"] * 3
    assert parser.stats["json_fields_over_cap"] == 0
    with pytest.raises(ValueError, match="json_numeric_fields"):
        RecordParser(json_numeric_fields=65)


def test_both_paths_give_the_same_lines():
    lines = order_lines(3) + [b'{"message":"m","b":2.50,"a":1e-5,"c":-0,"d":1E21,"e":NaN,"x y":1,"f":12345678901234567}',
                              b'{"message":"no numbers","user":"u1"}', b'{"n":5}',
                              b'{"message":"esc \\u0041","a":"1","a":2}']
    want = [r.content for r in RecordParser(format="jsonl").parse_many(lines)]
    cols = parse_columns(RecordParser(format="jsonl"), b"\n".join(lines) + b"\n")
    assert [cols.content(i) for i in range(cols.n)] == want
    assert want[3] == "m a=0.00001 b=2.5 c=0 d=1000000000000000000000 f=12345678901234567"
    assert want[4:] == ["no numbers", '{"n":5}', "esc A a=2"]


def test_number_text():
    assert [number_text(v) for v in (412, -3, 0.25, -0.0, 1e22, 2.5e-05, 100.0, 10 ** 30, 1 / 3, 0.1 + 0.2)] == [
        "412", "-3", "0.25", "0", "10000000000000000000000", "0.000025", "100", "1" + "0" * 30,
        "0.3333333333333", "0.3"]
    assert all(float(number_text(v)) == v for v in (0.1, 123456.789, 1e-7, 5e-324, 1.797693134862e308))


def test_an_unusual_duration_in_a_json_log_is_flagged(tmp_path):
    rng = np.random.default_rng(4)
    ms = np.round(rng.lognormal(np.log(100), 0.25, 3000)).astype(int)
    ms[2500] = 5000
    log = tmp_path / "in.jsonl"
    log.write_text("".join(json.dumps({"timestamp": stamp(k, 60), "source": "api", "level": "INFO",
                                       "message": "order placed", "duration_ms": int(v), "user": f"u{k % 50}"}) + "\n"
                           for k, v in enumerate(ms)))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(replay_command, ["--format", "jsonl", "--output", str(out), str(log)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[2500]["template"] == "order placed duration_ms=<*>"
    assert records[2500]["anomaly"]
    assert any("unusual value" in r for r in records[2500]["reasons"]), records[2500]["reasons"]
    assert sum(r["anomaly"] for r in records) <= 3
