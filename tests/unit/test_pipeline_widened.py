"""Lines of a template widened during their batch lose their parameters for that batch (their positions were
cut by the old text), and a categorical field merged from sibling templates is learned cleanly."""
import json

import numpy as np

from anomaly_detector.config.loader import default_config
from anomaly_detector.parsing.miner import MinedBatch
from anomaly_detector.pipeline import Pipeline, without_params_of


def test_params_of_widened_templates_are_dropped_and_the_rest_kept():
    mined = MinedBatch(np.array([1, 2, 1, 3], np.int32), np.array([0, 2, 3, 5, 6], np.int64),
                       np.array([0, 1, 0, 0, 1, 0], np.int16), np.arange(6, dtype=np.uint64),
                       np.arange(6, dtype=np.float64), np.arange(6, dtype=np.int64), np.arange(6, dtype=np.int64) + 1)
    got = without_params_of(mined, [1])
    assert got.param_ptr.tolist() == [0, 0, 1, 1, 2]
    assert got.param_hash.tolist() == [2, 5]
    assert got.param_start.tolist() == [2, 5] and got.param_end.tolist() == [3, 6]
    assert without_params_of(mined, [7]) is mined


def test_a_field_merged_from_siblings_holds_only_its_own_values():
    # five providers, one template each, until the fifth merges them: the provider's statistics must not
    # hold the request ids that sat at its position in the old text
    providers = ["stripe", "adyen", "paypal", "klarna", "mollie"]
    lines = []
    for i in range(6000):   # two hours, one line every 1.2 s: past the engine's warm-up
        t = 36000 + int(i * 1.2)
        lines.append("2026-03-02T%02d:%02d:%02d.000Z INFO payment authorised for the order via provider=%s req=%08x"
                     % (t // 3600, t // 60 % 60, t % 60, providers[i // 10] if i < 50 else providers[i % 5], 7919 * i))
    pipeline = Pipeline(default_config(), chunk_bytes=1 << 14)   # many batches: the merge happens in one
    for _ in pipeline.process_buffer(("\n".join(lines) + "\n").encode(), "pay"):
        pass
    t3 = pipeline.engine.tiers["t3"]
    slots = [slot for key, slot in t3.roles.items() if key.endswith("provider=<*>\x000")]
    assert slots, list(t3.roles)
    assert t3.cat_nd[slots[0]] == 5 and not t3.cat_full[slots[0]]


def test_records_name_the_text_a_template_has_when_the_batch_is_scored():
    # the records' template texts are kept per id between batches (Pipeline._escaped_text): a template
    # widened in a later batch must be written with its new text from then on
    cfg = default_config()
    cfg["processing"]["batch_size"] = 50
    text = "".join("2026-03-02T10:00:%02d.000Z INFO session opened for user=%s\n" % (i % 60, "" if i < 50 else "u%d" % i)
                   for i in range(100))
    records = [json.loads(line) for chunk in Pipeline(cfg).process_buffer(text.encode(), "auth") for line in chunk.splitlines()]
    assert records[0]["template"] == "session opened for user="
    assert records[99]["template"] == "session opened for user=<*>"
