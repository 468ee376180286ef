"""`replay` (SPEC §8) end to end through click: one record per line, in order, deterministic, state flags."""
import io
import json

from click.testing import CliRunner

from anomaly_detector.commands.replay import replay_command
from anomaly_detector.pipeline import Pipeline, _chunks, _file_chunks

KEYS = {"file", "line", "ts", "template_id", "template", "score", "anomaly", "tiers", "reasons"}


def write_log(path, n=400):
    with open(path, "w") as f:
        for i in range(n):
            level = "FATAL" if 300 <= i < 306 else "INFO"
            f.write("2026-03-02T10:%02d:%02d.000Z %s worker-%d took %d ms\n" % (i // 60, i % 60, level, i % 3, 20 + i % 7))
        f.write("\n")
        f.write("no timestamp here\n")
    with open(path, "ab") as f:
        f.write(b"\xff\xfe binary \x00 junk")      # last line without a newline
    return n + 3


def run(args):
    result = CliRunner().invoke(replay_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_one_record_per_line_in_order_with_the_contract_keys(tmp_path):
    log = tmp_path / "app.log"
    lines = write_log(log)
    out, incidents = tmp_path / "out.jsonl", tmp_path / "inc.jsonl"
    run(["--format", "plain", "--output", str(out), "--incidents", str(incidents), str(log)])
    records = [json.loads(line) for line in open(out)]
    assert len(records) == lines
    assert [r["line"] for r in records] == list(range(1, lines + 1))
    for r in records:
        assert KEYS <= set(r) and set(r["tiers"]) == {"t1", "t2", "t3", "t4"} and 0 <= r["score"] <= 100
    assert records[0]["ts"] == 1772445600.0
    assert all(r["ts"] is None or isinstance(r["ts"], float) for r in records)
    assert "<*>" in records[0]["template"]
    assert any(r["anomaly"] for r in records[300:306]), "a FATAL burst alerts on a fresh install"
    flagged = [r for r in records if r["anomaly"]]
    assert all(r["reasons"] for r in flagged)
    found = [json.loads(line) for line in open(incidents)]
    assert found and {"id", "first_seen", "last_seen", "source", "tiers", "kind", "reason", "template",
                      "samples", "expected", "observed"} <= set(found[0])
    assert found[0]["source"] == "app"


def test_deterministic_and_state_only_with_save_state(tmp_path):
    log = tmp_path / "app.log"
    write_log(log)
    state = tmp_path / "state"
    cfg = tmp_path / "only-paths.ini"
    cfg.write_text("[paths]\nstate_dir = %s\n" % state)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    run(["--config", str(cfg), "--output", str(a), str(log)])
    run(["--config", str(cfg), "--output", str(b), str(log)])
    assert a.read_bytes() == b.read_bytes()
    assert not state.exists(), "replay writes nothing into state_dir unless --save-state"
    saved = tmp_path / "saved"
    run(["--output", str(a), "--save-state", str(saved), str(log)])
    assert (saved / "baselines" / "detection.json").exists() and (saved / "statistics" / "detection.json").exists()
    assert (saved / "baselines" / "templates.json").exists()
    run(["--output", str(b), "--from-state", str(saved), str(log)])
    first, again = [json.loads(x) for x in open(a)], [json.loads(x) for x in open(b)]
    assert [r["template_id"] for r in first] == [r["template_id"] for r in again]


def test_jsonl_and_bad_config(tmp_path):
    js = tmp_path / "svc.jsonl"
    js.write_text("".join(json.dumps({"timestamp": 1772445600 + i, "message": "user u%d login" % (i % 4),
                                      "source": "auth"}) + "\n" for i in range(50)) + "{not json\n")
    out = tmp_path / "out.jsonl"
    run(["--format", "jsonl", "--output", str(out), str(js)])
    records = [json.loads(x) for x in open(out)]
    assert len(records) == 51 and records[0]["ts"] == 1772445600.0
    bad = tmp_path / "bad.ini"
    bad.write_text("[detection]\nanomaly_threshold = 300\n")
    result = CliRunner().invoke(replay_command, ["--config", str(bad), "--output", str(out), str(js)])
    assert result.exit_code == 1 and "anomaly_threshold" in result.output


def test_chunks_split_at_newlines_and_keep_every_byte():
    data = b"".join(b"line %d\n" % i for i in range(1000)) + b"tail"
    pieces = list(_chunks(data, 100))
    assert b"".join(pieces) == data
    assert all(p.endswith(b"\n") for p in pieces[:-1])


def test_file_chunks_stream_whole_lines():
    data = b"".join(b"x" * (i % 50) + b"\n" for i in range(500)) + b"no newline at the end"
    pieces = list(_file_chunks(io.BytesIO(data), 64))
    assert b"".join(pieces) == data and all(p.endswith(b"\n") for p in pieces[:-1])
    assert list(_file_chunks(io.BytesIO(b""), 64)) == []


class _Pipe(io.RawIOBase):
    """A stream that cannot seek, as stdin or a FIFO."""

    def __init__(self, data):
        self.data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, b):
        got = self.data.read(len(b))
        b[:len(got)] = got
        return len(got)


def test_file_chunks_of_a_file_are_those_of_a_stream():
    # a file reads its partial last line again with the next piece, a stream carries it: the pieces
    # (and so the batches cut from them) must be the same, with lines longer than a piece too
    lines = [b"y" * (i * 37 % 150) + b"\n" for i in range(400)]
    for data in (b"".join(lines), b"".join(lines) + b"tail", b"z" * 300, b"\n" * 70, b"a\n" + b"b" * 200 + b"\n"):
        stream = list(_file_chunks(io.BufferedReader(_Pipe(data), 16), 64))
        assert not io.BufferedReader(_Pipe(b""), 16).seekable()
        assert list(_file_chunks(io.BytesIO(data), 64)) == stream
        assert b"".join(stream) == data


def test_pipeline_counts_lines_across_buffers():
    from anomaly_detector.config.loader import default_config
    pipeline = Pipeline(default_config(), fmt="plain", chunk_bytes=64)
    text = b"".join(b"2026-03-02T10:00:%02d.000Z INFO job %d done\n" % (i, i) for i in range(40))
    out = b"".join(pipeline.process_buffer(text, "x.log"))
    records = [json.loads(x) for x in out.splitlines()]
    assert [r["line"] for r in records] == list(range(1, 41)) and pipeline.lines == 40


def test_process_file_buffers_are_its_bytes(tmp_path):
    # replay writes the rendered arrays as they are (buffers=True): the same bytes as the chunks
    from anomaly_detector.config.loader import default_config
    path = tmp_path / "x.log"
    write_log(path)
    chunks = list(Pipeline(default_config(), fmt="plain", chunk_bytes=256).process_file(str(path)))
    arrays = list(Pipeline(default_config(), fmt="plain", chunk_bytes=256).process_file(str(path), buffers=True))
    assert len(chunks) > 1 and all(isinstance(c, bytes) for c in chunks)
    assert [a.tobytes() for a in arrays] == chunks


def write_shop_log(path, n=1800):
    """Three services interleaved in one file, as docker compose, journald or syslog files have them;
    each service has a burst of fatal lines of its own at its own time."""
    services = [("web-1", "nginx"), ("api-1", "checkout[31]"), ("db-1", "postgres")]
    with open(path, "w") as f:
        for i in range(n):
            k = i % 3
            host, prog = services[k]
            level, msg = "INFO", "request %d served in %d ms" % (i, 20 + i % 7)
            if 600 + 300 * k <= i < 612 + 300 * k:
                level, msg = "FATAL", "%s lost its disk %d" % (prog.split("[")[0], i)
            f.write("2026-03-02T10:%02d:%02d.000Z %s %s %s: %s\n" % (i // 60, i % 60, level, host, prog, msg))


def incident_sources(tmp_path, *extra):
    log = tmp_path / "shop.log"
    write_shop_log(log)
    out, incidents = tmp_path / "out.jsonl", tmp_path / "inc.jsonl"
    run(["--output", str(out), "--incidents", str(incidents), *extra, str(log)])
    records = [json.loads(line) for line in open(out)]
    assert len(records) == 1800 and all(KEYS == set(r) for r in records)
    return {json.loads(line)["source"] for line in open(incidents)}, records


def test_interleaved_services_in_one_file_are_three_sources_by_default(tmp_path):
    sources, records = incident_sources(tmp_path)
    assert sources == {"nginx", "checkout", "postgres"}
    assert records[0]["template"] == "request <*> served in <*> ms"   # the prefix is not mined


def test_source_prefix_off_keeps_the_file_as_one_source(tmp_path):
    sources, records = incident_sources(tmp_path, "--source-prefix", "off")
    assert sources == {"shop"}
    assert "nginx: request" in records[0]["template"]


def test_source_fields_name_sources_from_header_fields(tmp_path):
    sources, _ = incident_sources(tmp_path, "--log-format", "<Timestamp> <Level> <Host> <Program>: <Content>",
                                  "--source-fields", "Host, Program")
    assert sources == {"web-1/nginx", "api-1/checkout[31]", "db-1/postgres"}


def test_source_fields_outside_the_log_format_is_one_line_error(tmp_path):
    log = tmp_path / "shop.log"
    write_shop_log(log, 3)
    result = CliRunner().invoke(replay_command, ["--output", str(tmp_path / "o.jsonl"), "--log-format",
                                                 "<Timestamp> <Level> <Content>", "--source-fields", "Host", str(log)])
    assert result.exit_code == 1
    assert "Host is not a field of log_format" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def write_steady(path, start_minute, minutes, per_minute=20):
    with open(path, "w") as f:
        for m in range(start_minute, start_minute + minutes):
            for k in range(per_minute):
                f.write("2026-03-02T%02d:%02d:%02d.000Z INFO worker-%d took %d ms\n"
                        % (m // 60, m % 60, k * 60 // per_minute, k % 3, 20 + k % 7))


def test_from_state_the_time_the_daemon_was_down_is_no_silence(tmp_path):
    """Replay 00:00-04:00, save; replay 07:00-08:00 from that state: the three hours between are
    downtime. The same gap inside one replay is a silence (one source: not an input gap). Later
    files are whole batches, so what the gap's buckets found is reported with the next one."""
    logs = []
    for k, (start, minutes) in enumerate(((0, 240), (420, 30), (450, 30))):
        (tmp_path / str(k)).mkdir()
        logs.append(tmp_path / str(k) / "app.log")
        write_steady(logs[-1], start, minutes)
    saved, out = tmp_path / "saved", tmp_path / "out.jsonl"
    run(["--output", str(out), "--save-state", str(saved), str(logs[0])])
    kinds = {}
    for name, args in (("restored", ["--from-state", str(saved)] + logs[1:]), ("one run", logs)):
        incidents = tmp_path / ("%s.jsonl" % name.replace(" ", "-"))
        run(["--output", str(out), "--incidents", str(incidents)] + [str(a) for a in args])
        kinds[name] = {json.loads(line)["kind"] for line in open(incidents)}
    assert not kinds["restored"] & {"silent_source", "volume_drop"}
    assert kinds["one run"] & {"silent_source", "volume_drop"}
