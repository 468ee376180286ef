"""Tier 3: a never-seen template that differs from known ones only in the value of one key=value word is
a new value of that field (kind new_value), not a new kind of message; an error line stays a new error."""
import numpy as np
from test_engine import T0, config, make_batch

from anomaly_detector.detection.engine import DetectionEngine
from anomaly_detector.detection.tier3_novelty import new_field_value
from anomaly_detector.parsing.batch import LEVEL_ERROR, LEVEL_INFO

TEXTS = {0: "auth ok user=<*> method=password req=<*>", 1: "auth ok user=<*> method=sso req=<*>",
         2: "cart loaded items=<*>", 3: "auth ok user=<*> method=legacy_token req=<*>",
         4: "auth failed user=<*> method=legacy_token req=<*>"}


def test_one_key_value_word_apart_is_a_new_value_of_that_field():
    known = [TEXTS[0], TEXTS[1], TEXTS[2]]
    assert new_field_value(TEXTS[3], known) == ("method", "legacy_token", ["password", "sso"])
    assert new_field_value(TEXTS[4], known) is None, "two words apart: another message"
    assert new_field_value("auth ok user=<*> method=<*> req=<*>", known) is None, "a parameter is no value"
    assert new_field_value("auth ok user=<*> via=sso req=<*>", known) is None, "another key"
    assert new_field_value("cart emptied items=<*>", known) is None, "a word that is no key=value"


def incident_of_template_3(level):
    """The incident of template 3's lines (a minute of them), met after ten hours of templates 0-2 (a
    never-seen informational template scores about 48 here: the threshold is set below it)."""
    engine = DetectionEngine(config(anomaly_threshold=45.0))
    rng = np.random.default_rng(3)
    for m in range(0, 600, 10):
        ts = T0 + 60.0 * m + np.sort(rng.uniform(0, 600, 600))
        engine.process(make_batch(ts, rng.integers(0, 3, 600)), 5, TEXTS.get)
    ts = T0 + 600 * 60 + np.arange(30.0) * 2
    got = engine.process(make_batch(ts, [3] * 30, level=[level] * 30), 5, TEXTS.get)
    (incident,) = [i for i in got.incidents + engine.finish() if 3 in i["templates"]]
    return incident


def test_a_new_method_is_a_new_value_and_a_new_error_line_a_new_template():
    incident = incident_of_template_3(LEVEL_INFO)
    assert incident["kind"] == "new_value"
    assert incident["reason"].startswith("new field value method='legacy_token' (a template seen ")
    assert "'password', 'sso'" in incident["expected"]
    assert incident_of_template_3(LEVEL_ERROR)["kind"] == "new_template"


def test_a_batch_is_given_its_slots_once_for_score_and_learn():
    """Tier 3 assigns a batch's slots when scoring and reuses them when learning it; another batch, or a
    slot table replaced in between (a load), is looked up again, with the same slots for the same pairs."""
    t3 = DetectionEngine(config()).tiers["t3"]
    t3._grow_templates(5)
    batch = make_batch(T0 + np.arange(50.0), np.arange(50) % 5)
    slots = t3._assign_slots(batch)
    assert t3._assign_slots(batch) is slots and t3.next_slot == 5
    t3.slot_index = t3.slot_index.copy()
    again = t3._assign_slots(batch)
    assert again is not slots and np.array_equal(again, slots)
    other = make_batch(T0 + np.arange(50.0), (np.arange(50) % 6))
    assert t3._assign_slots(other).max() == 5 and t3.next_slot == 6


def test_a_flagged_new_values_later_lines_are_its_episode_while_it_keeps_coming():
    """A new value that scored the threshold keeps its later lines, each within NEW_VALUE_EPISODE_S of the
    last, at the suspicious score (one episode: an incident of more than one line); a line after a longer
    gap, another new value's lines and values scored nothing are left as they were."""
    from types import SimpleNamespace

    from anomaly_detector.detection import novelty_kernels as K
    from anomaly_detector.detection.tier3_novelty import NEW_VALUE_EPISODE_S

    t3 = DetectionEngine(config()).tiers["t3"]
    gap = NEW_VALUE_EPISODE_S
    ts = np.array([0.0, 120.0, 120.0 + gap - 1, 60.0, 2 * gap + 200.0, 2 * gap + 210.0, 2 * gap + 220.0])
    hashes = np.array([7, 7, 7, 9, 7, 7, 5], np.uint64)      # value 7 flagged first; 9 and 5 never flagged
    scores = np.array([100.0, 37.0, 37.0, 37.0, 37.0, 37.0, 0.0], np.float32)
    kind = np.array([K.KIND_NEW_VALUE] * 6 + [0], np.int64)
    which, slots = np.arange(7), np.full(7, 3, np.int32)
    t3._keep_new_values(SimpleNamespace(param_hash=hashes), SimpleNamespace(ts=ts), scores, which, kind, slots)
    assert scores.tolist() == [100.0, 40.0, 40.0, 37.0, 37.0, 37.0, 0.0]
