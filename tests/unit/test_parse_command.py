"""`parse` command: Loghub CSV layout, header fields, errors as one line."""
import csv
import json

from click.testing import CliRunner

from anomaly_detector.commands.parse import parse_command

HDFS = "<Date> <Time> <Pid> <Level> <Component>: <Content>"


def _hdfs(path, n=60):
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"081109 2036{i % 60:02d} {100 + i} INFO dfs.DataNode$PacketResponder: "
                    f"PacketResponder {i % 3} for block blk_{38865049064139660 + i} terminating\n")
        f.write("081109 203700 7 WARN dfs.FSNamesystem: BLOCK* ask 10.0.0.1:50010 to delete blk_1\n")
    return path


def test_writes_loghub_layout(tmp_path):
    src = _hdfs(tmp_path / "hdfs.log")
    out = tmp_path / "out"
    res = CliRunner().invoke(parse_command, ["--log-format", HDFS, "--output-dir", str(out), str(src)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(out / "hdfs.log_structured.csv")))
    assert list(rows[0]) == ["LineId", "Date", "Time", "Pid", "Level", "Component", "Content", "EventId",
                             "EventTemplate", "ParameterList"]
    assert len(rows) == 61 and rows[0]["LineId"] == "1" and rows[0]["Pid"] == "100"
    assert rows[0]["EventTemplate"] == "PacketResponder <*> for block blk_<*> terminating"
    assert rows[0]["ParameterList"] == "['0', '38865049064139660']"
    assert rows[-1]["EventId"] != rows[0]["EventId"]
    templates = list(csv.DictReader(open(out / "hdfs.log_templates.csv")))
    assert {t["EventId"]: int(t["Occurrences"]) for t in templates} == {rows[0]["EventId"]: 60,
                                                                         rows[-1]["EventId"]: 1}
    assert "\r" not in res.output and "parsing" not in res.output  # no progress bar off a terminal


def test_jsonl_and_two_files_share_one_miner(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"message": f"user u{i} login ok"}) + "\n" for i in range(5)))
    b.write_text(json.dumps({"message": "user u99 login ok"}) + "\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(parse_command, ["--format", "jsonl", "--output-dir", str(out), str(a), str(b)])
    assert res.exit_code == 0, res.output
    ra = list(csv.DictReader(open(out / "a.jsonl_structured.csv")))
    rb = list(csv.DictReader(open(out / "b.jsonl_structured.csv")))
    assert list(ra[0])[:2] == ["LineId", "Content"]
    assert ra[0]["EventId"] == rb[0]["EventId"] and ra[0]["Content"] == "user u0 login ok"


def test_errors_are_one_line(tmp_path):
    src = _hdfs(tmp_path / "h.log", 2)
    res = CliRunner().invoke(parse_command, ["--log-format", "<Date> <Content", "--output-dir", str(tmp_path),
                                             str(src)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("parse: error:")
    res = CliRunner().invoke(parse_command, ["--output-dir", str(tmp_path), str(tmp_path / "missing.log")])
    assert res.exit_code == 1 and "cannot read" in res.output and len(res.output.strip().splitlines()) == 1


def test_unwritable_output_is_one_line(tmp_path):
    src = _hdfs(tmp_path / "h.log", 5)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the output folder should be\n")
    res = CliRunner().invoke(parse_command, ["--log-format", HDFS, "--output-dir", str(blocker), str(src)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [res.output.strip()] and "parse: error: cannot write into" in res.output
