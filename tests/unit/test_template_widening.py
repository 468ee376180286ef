"""When the miner widens a template, what tier 3 learned about its parameters starts again."""
from anomaly_detector.config.loader import default_config
from anomaly_detector.parsing.miner import TemplateMiner
from anomaly_detector.parsing.records import parse_columns
from anomaly_detector.pipeline import Pipeline


def test_the_miner_reports_each_widened_template_once():
    miner = TemplateMiner()
    tid, _ = miner.add_line("query took 3 ms host=db-replica-1")
    assert miner.take_widened() == [] and miner.template(tid) == "query took <*> ms host=db-replica-<*>"
    again, _ = miner.add_line("query took 5 ms host=db-primary-1")
    assert again == tid and miner.template(tid) == "query took <*> ms host=db-<*>"
    assert miner.take_widened() == [tid] and miner.take_widened() == []


def test_a_widened_template_forgets_its_parameter_values():
    cfg = default_config()
    cfg["detection"]["tier4"]["enabled"] = False
    pipeline = Pipeline(cfg, fmt="plain")
    parser = pipeline.parser_for("db")
    lines = "".join("2026-03-02T10:%02d:%02dZ INFO query took %d ms host=db-replica-%d\n"
                    % (i // 60, i % 60, 3 + i % 5, 1 + i % 2) for i in range(600))
    batch = pipeline._batch(parse_columns(parser, lines.encode()))
    pipeline.engine.process(batch, pipeline.n_templates, pipeline.template_text)
    t3 = pipeline.engine.tiers["t3"]
    tid = int(batch.template_id[0])
    slots = t3.slot_index[tid][t3.slot_index[tid] >= 0]
    assert t3.cat_nd[slots].max() > 0
    widening = "2026-03-02T10:10:00Z INFO query took 4 ms host=db-primary-1\n".encode()
    again = pipeline._batch(parse_columns(parser, widening))
    assert int(again.template_id[0]) == tid and "host=db-<*>" in pipeline.template_text(tid)
    assert t3.cat_nd[slots].max() == 0 and not t3.num_stats[slots].any()
