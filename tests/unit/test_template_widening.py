"""When the miner widens a template, what tier 3 learned about its parameters follows: values are
known by their whole token, so widening one value's token keeps them; a constant turned value
shifts the positions after it, and the statistics start again."""
import numpy as np

from anomaly_detector.config.loader import default_config
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.parsing.records import parse_columns
from anomaly_detector.pipeline import Pipeline


def test_widening_one_value_keeps_positions_and_values():
    miner = TemplateMiner()
    tid, _ = miner.add_line("query took 3 ms host=db_replica_1")
    assert miner.template(tid) == "query took <*> ms host=db_replica_<*>"
    replica = miner.add_batch(*_buffer(b"query took 3 ms host=db_replica_1")).param_hash[1]
    again, _ = miner.add_line("query took 5 ms host=db_primary_1")
    assert again == tid and miner.template(tid) == "query took <*> ms host=db_<*>"
    assert miner.take_widened() == []
    assert miner.add_batch(*_buffer(b"query took 3 ms host=db_replica_1")).param_hash[1] == replica


def test_the_miner_reports_each_template_whose_positions_moved_once():
    miner = TemplateMiner()
    tid, _ = miner.add_line("loaded module com.apple.foo.Bar in 3 ms")
    assert miner.take_widened() == [] and miner.template(tid) == "loaded module com.apple.foo.Bar in <*> ms"
    again, _ = miner.add_line("loaded module com.apple.baz.Qux in 4 ms")
    assert again == tid and miner.template(tid) == "loaded module com.apple.<*> in <*> ms"
    assert miner.take_widened() == [tid] and miner.take_widened() == []


def _db_pipeline():
    cfg = default_config()
    cfg["detection"]["tier4"]["enabled"] = False
    cfg["detection"]["warmup_lines"] = 500
    cfg["detection"]["warmup_seconds"] = 0
    pipeline = Pipeline(cfg, fmt="plain")
    return pipeline, pipeline.parser_for("db")


def _process(pipeline, parser, text):
    batch = pipeline._batch(parse_columns(parser, text.encode()))
    return batch, pipeline.engine.process(batch, pipeline.n_templates, pipeline.template_text)


def _queries(minutes, host):
    return "".join("2026-03-02T%02d:%02d:%02dZ INFO query took %d ms host=%s\n"
                   % (i // 3600, i // 60 % 60, i % 60, 3 + i % 5, host(i)) for i in range(minutes * 60))


def test_a_new_host_that_widens_its_template_is_still_a_new_value():
    pipeline, parser = _db_pipeline()
    batch, _ = _process(pipeline, parser, _queries(60, lambda i: "db_replica_%d" % (1 + i % 2)))
    t3 = pipeline.engine.tiers["t3"]
    tid = int(batch.template_id[0])
    slots = t3.slot_index[tid][t3.slot_index[tid] >= 0]
    known = t3.cat_nd[slots].copy()
    assert known.tolist() == [5, 2] and "host=db_replica_<*>" in pipeline.template_text(tid)
    # From 01:00, one query in five goes to a host never seen: its first line widens the template.
    later = _queries(65, lambda i: "db_primary_9" if i % 5 == 0 else "db_replica_%d" % (1 + i % 2))
    batch, scores = _process(pipeline, parser, later[later.index("2026-03-02T01:00:00Z"):])
    assert (batch.template_id == tid).all() and "host=db_<*>" in pipeline.template_text(tid)
    assert (t3.cat_nd[slots] >= known).all(), "widening kept the known hosts"
    primary = np.array(["db_primary_9" in batch.content(i) for i in range(batch.n)])
    assert scores.anomaly[primary].any() and not scores.anomaly[~primary].any()
    flagged = int(np.flatnonzero(scores.anomaly)[0])
    assert any("new value" in reason and "'primary_9'" in reason for _, reason, _, _ in scores.reasons[flagged])


def test_a_template_whose_positions_moved_forgets_its_parameter_values():
    pipeline, parser = _db_pipeline()
    lines = "".join("2026-03-02T10:%02d:%02dZ INFO loaded module com.apple.foo.Bar in %d ms\n"
                    % (i // 60, i % 60, 3 + i % 5) for i in range(600))
    batch, _ = _process(pipeline, parser, lines)
    t3 = pipeline.engine.tiers["t3"]
    tid = int(batch.template_id[0])
    slots = t3.slot_index[tid][t3.slot_index[tid] >= 0]
    assert t3.cat_nd[slots].max() > 0
    widening = "2026-03-02T10:10:00Z INFO loaded module com.apple.baz.Qux in 4 ms\n"
    again = pipeline._batch(parse_columns(parser, widening.encode()))
    assert int(again.template_id[0]) == tid and "com.apple.<*>" in pipeline.template_text(tid)
    assert t3.cat_nd[slots].max() == 0 and not t3.num_stats[slots].any()


def _buffer(line):
    buf = np.frombuffer(line, np.uint8)
    return buf, np.array([0], np.int64), np.array([len(line)], np.int64)
