"""The input interface (inputs/base.py): every input type is built through its class's build(), and the
redis input's pieces that need no server (entry to line, back-off against a port nobody listens on)."""
import io
import json
import os
import sys

import pytest

from anomaly_detector.config.loader import load_config
from anomaly_detector.inputs import base, file_tail, runner
from anomaly_detector.inputs.redis_stream import RedisStreamInput, entry_line
from tests.integration.daemon_harness import free_port

INPUTS = {
    "file": "type = file\npath = {dir}/x.log\n",
    "stdin": "type = stdin\n",
    "syslog": "type = syslog\nlisten_port = 5514\n",
    "http": "type = http\nlisten_port = 8088\n",
    "redis": "type = redis\nurl = redis://127.0.0.1:1/0\nstream = s\ngroup = g\n",
}


def _cfg(tmp_path, kind):
    path = tmp_path / "config.ini"
    path.write_text("[paths]\nstate_dir = %s/state\nlog_dir = %s/log\n[inputs]\n[[one]]\n%s"
                    % (tmp_path, tmp_path, INPUTS[kind].format(dir=tmp_path)))
    cfg, problems = load_config(str(path), environment=False)
    assert cfg is not None, [p.render() for p in problems]
    return cfg


def test_every_input_type_of_the_spec_has_a_builder():
    assert set(runner.BUILDERS) == set(INPUTS)


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_each_type_builds_an_input(tmp_path, monkeypatch, kind):
    cfg = _cfg(tmp_path, kind)
    read_end, write_end = os.pipe()
    os.close(write_end)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read_end, "rb")))
    reader = runner.build_input("one", cfg["inputs"]["one"], cfg)
    try:
        assert isinstance(reader, base.Input)
        assert isinstance(reader.stats, dict)
        assert reader.spread == (kind in ("syslog", "http", "redis"))
    finally:
        reader.close()


def test_an_unknown_type_is_refused_by_name():
    with pytest.raises(runner.UnsupportedInput, match=r"\[inputs.x\] type = kafka is not available"):
        runner.build_input("x", {"type": "kafka"}, {})


def test_chunk_is_one_class_for_every_input():
    assert file_tail.Chunk is base.Chunk
    assert base.Chunk(file_tail.FileKey(1, 2, 0), "p", [], 0, 1).stream_id == (1, 2)
    assert base.Chunk("redis:bus", "redis:s", [], "1-0", ("1-0",)).stream_id == "redis:bus"


def test_an_entry_becomes_one_json_line_of_its_fields():
    line, too_long = entry_line({b"message": b"disk full\non /var", b"source": b"web-1"}, 1024, "truncate")
    assert not too_long and b"\n" not in line
    assert json.loads(line) == {"message": "disk full\non /var", "source": "web-1"}


def test_a_too_long_entry_keeps_its_json_shape_or_is_skipped():
    fields = {b"message": b"x" * 5000, b"source": b"web-1", b"timestamp": b"2026-03-02T10:00:00Z"}
    line, too_long = entry_line(fields, 1000, "truncate")
    assert too_long and len(line) <= 1000
    parsed = json.loads(line)
    assert parsed["source"] == "web-1" and parsed["message"].startswith("xxx")
    assert entry_line(fields, 1000, "skip") == (None, True)


def test_a_refused_connection_waits_the_back_off_doubling_to_its_bound():
    reader = RedisStreamInput("bus", "redis://127.0.0.1:%d/0" % free_port(), "s", "g", "c",
                              reconnect_min_seconds=60, reconnect_max_seconds=100)
    assert reader.poll() == []
    assert reader.stats["redis_connect_failures"] == 1 and reader.stats["redis_disconnected"] == 1
    assert reader.poll() == []          # inside the back-off: no second attempt
    assert reader.stats["redis_connect_failures"] == 1
    assert reader._backoff.delay == 100   # 60 doubled, capped by reconnect_max_seconds
    reader._backoff.retry_at = 0
    reader.poll()
    assert reader.stats["redis_connect_failures"] == 2 and reader._backoff.delay == 100


def test_acknowledgements_made_while_redis_is_away_are_kept_for_the_reconnection():
    reader = RedisStreamInput("bus", "redis://127.0.0.1:%d/0" % free_port(), "s", "g", "c")
    reader._inflight.update({"1-0", "2-0"})
    assert reader.commit("redis:bus", ("1-0", "2-0")) is False
    assert reader._unsent_acks == ["1-0", "2-0"] and not reader._inflight
    assert reader.commit("spool:other", ("3-0",)) is False and reader._unsent_acks == ["1-0", "2-0"]


def test_the_redis_keys_checked_on_other_inputs_are_those_of_the_spec_at_their_defaults(tmp_path):
    from anomaly_detector.config.checks import _REDIS_KEYS

    cfg = _cfg(tmp_path, "file")
    assert {key: cfg["inputs"]["one"][key] for key in _REDIS_KEYS} == _REDIS_KEYS
    spec = open(os.path.join(os.path.dirname(base.__file__), "..", "config", "spec.ini")).read()
    block = spec[spec.index("# For type=redis"):spec.index("\n[processing]")]
    redis_keys = {line.split("=")[0].strip() for line in block.splitlines() if "=" in line and not line.startswith("#")}
    assert set(_REDIS_KEYS) == redis_keys
