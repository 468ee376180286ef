"""A replay chunk is scored in batches of at most [processing] batch_size lines, as a daemon's worker
takes them from its ring: each batch is scored against the models as the lines before it left them."""
import json

from anomaly_detector.config.loader import default_config
from anomaly_detector.pipeline import Pipeline


def lines(n):
    return "".join("2026-03-02T10:%02d:%02d.000Z INFO request %d served in %d ms\n" % (i // 60 % 60, i % 60, i, 5 + i % 7)
                   for i in range(n)).encode()


def test_a_chunk_is_scored_in_batches_of_batch_size_lines():
    cfg = default_config()
    cfg["processing"]["batch_size"] = 100
    pipeline = Pipeline(cfg)
    sizes = []
    process = pipeline.engine.process
    pipeline.engine.process = lambda batch, *a, **k: sizes.append(batch.n) or process(batch, *a, **k)
    out = b"".join(pipeline.process_buffer(lines(1050), "app"))
    records = [json.loads(line) for line in out.splitlines()]
    assert sizes == [100] * 10 + [50]
    assert [r["line"] for r in records] == list(range(1, 1051))
    assert records[1049]["ts"] > records[0]["ts"]


def test_batches_change_nothing_for_a_chunk_that_fits_in_one():
    def scored(batch_size):
        cfg = default_config()
        cfg["processing"]["batch_size"] = batch_size
        return b"".join(Pipeline(cfg).process_buffer(lines(300), "app"))
    assert scored(300) == scored(4000)
