"""Tier 2 value keys (detection/tier2_values.py): the heavy values of a template position get their own
volume baseline, bounded by max_value_keys, saved and restored, and a surge of one of them is a spike
that names the template and the value."""
import logging
import zlib

import numpy as np

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.engine import DetectionEngine
from anomaly_detector.detection.tier2_values import ValueKeys
from anomaly_detector.detection.tier2_volume import KeyBaseline, Seasonality, VolumeTier
from anomaly_detector.parsing.batch import LEVEL_INFO, ParsedBatch

T0 = 1772445600.0
WORDS = [b"select", b"update", b"insert", b"delete", b"vacuum"]
SHARES = np.array([0.4, 0.3, 0.16, 0.1, 0.04])   # of the position's lines


def make_batch(ts, words, ids, template=0, vocab=WORDS):
    """Lines `op <word> id <n>` of one template: position 0 a word of vocab (b"%d" in it: the line's id
    too), position 1 a number."""
    n = len(ts)
    firsts = [vocab[w] % i if b"%d" in vocab[w] else vocab[w] for w, i in zip(words.tolist(), ids.tolist())]
    texts = [b"op %s id %d" % (f, i) for f, i in zip(firsts, ids.tolist())]
    ends = np.cumsum([len(t) for t in texts]).astype(np.int64)
    starts = ends - np.array([len(t) for t in texts], np.int64)
    p_start = np.empty(2 * n, np.int64)
    p_start[0::2] = starts + 3
    p_start[1::2] = starts + 3 + np.array([len(f) for f in firsts], np.int64) + 4
    p_end = p_start.copy()
    p_end[0::2] += [len(f) for f in firsts]
    p_end[1::2] = ends
    p_hash = np.empty(2 * n, np.uint64)
    p_hash[0::2] = [zlib.crc32(f) + 11 for f in firsts]
    p_hash[1::2] = ids.astype(np.uint64) + np.uint64(1 << 20)
    p_num = np.full(2 * n, np.nan)
    p_num[1::2] = ids
    return ParsedBatch(ts=np.asarray(ts, float), source_id=np.zeros(n, np.int32), level=np.full(n, LEVEL_INFO, np.int8),
                       template_id=np.full(n, template, np.int32), buf=np.frombuffer(b"".join(texts), np.uint8),
                       content_start=starts, content_end=ends, param_ptr=np.arange(0, 2 * n + 1, 2, dtype=np.int64),
                       param_pos=np.tile(np.array([0, 1], np.int16), n), param_hash=p_hash, param_num=p_num,
                       param_start=p_start, param_end=p_end, sources=["db"])


def config(**tier2):
    cfg = default_config()
    cfg["detection"].update(warmup_lines=100, warmup_seconds=600)
    cfg["detection"]["tier4"]["enabled"] = False
    cfg["detection"]["tier2"].update(tier2)
    return cfg


def traffic(engine, rng, start, minutes, per_minute=60, surge=None, vocab=WORDS):
    """`minutes` of the template in 10-minute batches; surge=(word, factor) multiplies one word's lines.
    Returns the scored batches."""
    out = []
    for m in range(0, minutes, 10):
        n = rng.poisson(per_minute * 10)
        words = rng.choice(len(WORDS), n, p=SHARES)
        if surge is not None:
            word, factor = surge
            extra = rng.poisson(per_minute * 10 * SHARES[word] * (factor - 1.0))
            words = np.concatenate([words, np.full(extra, word)])
        ts = start + 60.0 * m + rng.uniform(0, 600, words.size)
        order = np.argsort(ts)
        ids = rng.integers(0, 10 ** 6, words.size)
        batch = make_batch(ts[order], words[order], ids[order], vocab=vocab)
        out.append((batch, engine.process(batch, 10)))
    return out


def test_the_heavy_values_of_a_position_become_keys_and_the_long_tail_and_the_whole_do_not():
    rng = np.random.default_rng(1)
    engine = DetectionEngine(config())
    traffic(engine, rng, T0, 120)
    values = engine.tiers["t2"].values
    # the five words are >= 2% of position 0 each (a row each, and one for the position's total); the ids
    # of position 1 are numbers, never keys
    assert values.keys.values == 5 and values.size == 6 and values.keys.total.sum() == 1
    assert len(set(values.keys.slot.tolist())) == 1
    assert values.refused == 0


def test_a_value_that_is_nearly_all_of_its_position_is_no_key():
    keys = ValueKeys(16, KeyBaseline(), Seasonality(64), 60.0)
    rng = np.random.default_rng(3)
    for m in range(0, 120, 10):
        n = 600
        words = np.where(rng.random(n) < 0.95, 0, 1)
        batch = make_batch(T0 + 60.0 * m + np.sort(rng.uniform(0, 600, n)), words, rng.integers(0, 10 ** 6, n))
        keys.learn(batch, int((T0 + 60.0 * m) // 60), None)
    # word 0 is 95% of the position (its template says as much), word 1 is 5%: only word 1
    assert keys.keys.values == 1


def test_max_value_keys_bounds_the_keys_and_counts_and_logs_the_refused_once(caplog):
    rng = np.random.default_rng(2)
    engine = DetectionEngine(config(max_value_keys=3))
    with caplog.at_level(logging.WARNING, logger="anomaly_detector.detection.tier2_values"):
        traffic(engine, rng, T0, 180)
    values = engine.tiers["t2"].values
    # three rows: the position's total and its two heaviest values; the other three are refused
    assert values.size == 3 and values.keys.values == 2 and values.refused == 3
    values_codes = values.keys.code[~values.keys.total[values.keys.key]]
    assert sorted(values_codes.tolist()) == sorted(values.candidates.code[
        np.argsort(-values.candidates.count)[:2]].tolist())
    warned = [r for r in caplog.records if "max_value_keys" in r.getMessage()]
    assert len(warned) == 1


def test_max_value_keys_zero_counts_no_values():
    rng = np.random.default_rng(2)
    engine = DetectionEngine(config(max_value_keys=0))
    traffic(engine, rng, T0, 120)
    assert engine.tiers["t2"].values.size == 0 and engine.tiers["t2"].values.candidates.code.size == 0


def test_a_surge_of_one_value_is_a_spike_naming_the_template_and_the_value():
    rng = np.random.default_rng(4)
    engine = DetectionEngine(config())
    # a day and four hours: the surge comes at an hour of the day the value keys learned (windows are judged only then)
    steady = traffic(engine, rng, T0, 28 * 60)
    assert max(got.tiers[1].max() for _, got in steady[-12:]) < 40
    # 'insert' (16% of the lines) x8 for 10 minutes: the template only doubles, below spike_min_ratio 3
    (batch, got), = traffic(engine, rng, T0 + 28 * 3600, 10, surge=(2, 8.0))
    inserts = np.array([batch.content(i).startswith("op insert") for i in range(batch.n)])
    assert np.median(got.tiers[1][inserts]) >= 70
    assert got.tiers[1][~inserts].max() < 40
    reasons = [r[1] for rs in got.reasons.values() for r in rs if "volume spike" in r[1]]
    assert reasons and all("with <*>#1 = insert" in r for r in reasons)

    # the same surge without value keys: the template alone does not see it
    rng = np.random.default_rng(4)
    plain = DetectionEngine(config(max_value_keys=0))
    traffic(plain, rng, T0, 28 * 60)
    (batch, got), = traffic(plain, rng, T0 + 28 * 3600, 10, surge=(2, 8.0))
    assert got.tiers[1].max() < 40


def test_a_value_falling_silent_is_no_finding():
    rng = np.random.default_rng(5)
    engine = DetectionEngine(config())
    traffic(engine, rng, T0, 8 * 60)
    global SHARES
    saved = SHARES
    try:
        SHARES = np.array([0.45, 0.35, 0.0, 0.15, 0.05])   # 'insert' gone for an hour
        out = traffic(engine, rng, T0 + 8 * 3600, 60)
    finally:
        SHARES = saved
    assert engine.tiers["t2"].values.base.age[:6].min() > 300   # the value keys were judged all along
    assert not any(got.tiers[1].max() >= 40 for _, got in out)
    assert not [i for i in engine.finish() if "t2" in str(i.get("tiers", i))]


def test_value_keys_are_saved_and_restored_and_an_older_state_without_them_loads(tmp_path):
    rng = np.random.default_rng(6)
    engine = DetectionEngine(config())
    traffic(engine, rng, T0, 180)
    t2 = engine.tiers["t2"]
    state = t2.state()
    again = VolumeTier(dict(config()["detection"]["tier2"], learning_rate=0.01, warmup_lines=100))
    again.load_state(state)
    assert again.values.size == t2.values.size == 6
    for name in ("level", "phi", "age", "obs_win", "share_num"):
        assert np.array_equal(getattr(again.values.base, name)[:6], getattr(t2.values.base, name)[:6])
    assert np.array_equal(again.values.keys.code, t2.values.keys.code)
    assert np.array_equal(again.values.candidates.count, t2.values.candidates.count)
    engine.save(tmp_path)
    restored = DetectionEngine(config())
    assert restored.load(tmp_path) and restored.tiers["t2"].values.size == 6
    # a row waiting for reuse (its value gone quiet) leaves fewer codes than rows: still a valid state
    t2.values.keys.drop(np.array([t2.values.keys.key[~t2.values.keys.total[t2.values.keys.key]][0]]))
    engine.save(tmp_path)
    restored = DetectionEngine(config())
    assert restored.load(tmp_path)
    assert restored.tiers["t2"].values.size == 6 and restored.tiers["t2"].values.keys.values == 4
    old = {k: v for k, v in state.items() if k != "values"}
    older = VolumeTier(dict(config()["detection"]["tier2"], learning_rate=0.01, warmup_lines=100))
    older.load_state(old)
    assert older.values.size == 0


def test_a_role_pools_a_value_across_the_templates_a_later_field_splits():
    """Access lines split by user agent into templates: `POST <*>` is one role, so one key per path."""
    rng = np.random.default_rng(7)
    engine = DetectionEngine(config())
    texts = {0: "op <*> id <*> ua=firefox", 1: "op <*> id <*> ua=safari"}
    for m in range(0, 180, 10):
        for template in (0, 1):
            n = 300
            words = rng.choice(len(WORDS), n, p=SHARES)
            batch = make_batch(T0 + 60.0 * m + np.sort(rng.uniform(0, 600, n)), words, rng.integers(0, 10 ** 6, n),
                               template)
            engine.process(batch, 10, template_text=texts.get)
    values = engine.tiers["t2"].values
    assert values.keys.values == 5 and values.keys.total.sum() == 1
    assert list(values.roles) == ["\x00op <*>\x000"]
    # widened: the template's roles are worked out again from its text, the keys stay
    engine.templates_widened([1])
    assert (values.role_index[1] == -1).all() and values.keys.values == 5


def test_a_surge_at_an_hour_not_seen_yet_is_judged_against_the_rest_of_its_template():
    rng = np.random.default_rng(8)
    engine = DetectionEngine(config())
    steady = traffic(engine, rng, T0, 8 * 60)
    assert max(got.tiers[1].max() for _, got in steady[-24:]) < 40
    # hour 18 was never seen: the value's level is judged per minute only, its share of the template
    # over five minutes
    (batch, got), = traffic(engine, rng, T0 + 8 * 3600, 10, surge=(2, 8.0))
    inserts = np.array([batch.content(i).startswith("op insert") for i in range(batch.n)])
    assert np.median(got.tiers[1][inserts]) >= 70
    assert got.tiers[1][~inserts].max() < 40


def test_rows_of_values_gone_quiet_are_reused_for_new_ones():
    rng = np.random.default_rng(9)
    engine = DetectionEngine(config(max_value_keys=4))
    traffic(engine, rng, T0, 180)
    values = engine.tiers["t2"].values
    assert values.size == 4 and values.refused == 2   # the total and the three heaviest words
    kept = set(values.keys.code.tolist())
    global SHARES
    saved = SHARES
    try:
        # 'select' (the heaviest) stops; 'vacuum' grows to take its lines
        SHARES = np.array([0.0, 0.3, 0.16, 0.1, 0.44])
        traffic(engine, rng, T0 + 3 * 3600, 12 * 60)
    finally:
        SHARES = saved
    assert values.size == 4   # no row more: the quiet word's row was reused
    assert len(kept - set(values.keys.code.tolist())) == 1


def test_the_pair_gate_drops_no_line_that_would_score(monkeypatch):
    """Lines are scored one by one only for (key, bucket) pairs whose end-of-batch counts can pass a
    spike gate: the same scores as scoring every line."""
    def run():
        rng = np.random.default_rng(4)
        engine = DetectionEngine(config())
        traffic(engine, rng, T0, 8 * 60)
        return [got.tiers[1] for _, got in traffic(engine, rng, T0 + 8 * 3600, 30, surge=(2, 6.0))]

    original = VolumeTier._value_pairs_worth_scoring
    kept = []

    def counting(self, found, v_buckets, t_buckets):
        keep, *earlier = original(self, found, v_buckets, t_buckets)
        kept.append(keep.mean())
        return (keep, *earlier)

    monkeypatch.setattr(VolumeTier, "_value_pairs_worth_scoring", counting)
    gated = run()
    assert min(kept) < 0.1   # most batches: (almost) no line scored one by one

    def keep_all(self, found, v_buckets, t_buckets):
        keep, *earlier = original(self, found, v_buckets, t_buckets)
        return (np.ones_like(keep), *earlier)

    monkeypatch.setattr(VolumeTier, "_value_pairs_worth_scoring", keep_all)
    every = run()
    assert max(s.max() for s in every) >= 70
    for a, b in zip(gated, every):
        assert np.array_equal(a, b)


def test_value_table_lookup_finds_every_key_and_only_keys_through_its_filter():
    """ValueTable.lookup reads its low-bit flags before searching: the same rows as a plain dictionary,
    also for codes that share a key's low bits, after keys are added and dropped and after a state load."""
    from anomaly_detector.detection.tier2_values import _LOW_BITS, ValueTable, _load_table, _table_state
    rng = np.random.default_rng(5)
    table = ValueTable()
    assert (table.lookup(rng.integers(0, 2**63, 10, dtype=np.uint64)) == -1).all()

    def check(t):
        keys = dict(zip(t.code.tolist(), t.key.tolist()))
        twins = (t.code ^ np.uint64(1 << 40)) | (t.code & _LOW_BITS)   # other codes with a key's low bits
        probe = np.concatenate([t.code, twins, rng.integers(0, 2**63, 500, dtype=np.uint64)])
        assert t.lookup(probe).tolist() == [keys.get(c, -1) for c in probe.tolist()]

    codes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    table.add(codes, codes % np.uint64(7), np.zeros(300, np.bool_), np.zeros(0, np.int64))
    check(table)
    table.drop(table.key[:100])
    check(table)
    more = rng.integers(0, 2**63, 50, dtype=np.uint64)    # keys added after the flags were made
    table.add(more, more % np.uint64(7), np.zeros(50, np.bool_), np.zeros(0, np.int64))
    check(table)
    loaded = ValueTable()
    _load_table(loaded, _table_state(table))
    _load_table(loaded.index, _table_state(table.index))
    assert "_filter" not in _table_state(loaded) | _table_state(loaded.index)   # the flags are not saved
    check(loaded)


def quieter_rest(engine, rng, start, minutes, rest_factor, steady_word=3, per_minute=60):
    """`minutes` of the template in 10-minute batches: `steady_word` at its usual count (a health check, a
    poller), every other word at rest_factor of theirs (the night). Returns the scored batches."""
    out = []
    rest_p = np.delete(SHARES, steady_word) / np.delete(SHARES, steady_word).sum()
    rest_words = np.delete(np.arange(len(WORDS)), steady_word)
    for m in range(0, minutes, 10):
        rest = rest_words[rng.choice(len(rest_p), rng.poisson(per_minute * 10 * (1 - SHARES[steady_word])
                                                               * rest_factor), p=rest_p)]
        words = np.concatenate([rest, np.full(rng.poisson(per_minute * 10 * SHARES[steady_word]), steady_word)])
        ts = start + 60.0 * m + rng.uniform(0, 600, words.size)
        order = np.argsort(ts)
        batch = make_batch(ts[order], words[order], rng.integers(0, 10 ** 6, words.size)[order])
        out.append((batch, engine.process(batch, 10)))
    return out


def test_a_value_as_busy_as_ever_while_the_rest_of_its_role_sleeps_is_no_spike():
    """A load balancer's health checks, the same count every minute, become most of a web server's client
    addresses at night: their share of the role quadruples, their own count does not move. No spike, at
    an hour of the day not seen yet (held to its level times the young hour factor) or at one seen the
    day before; the same value at eight times its count is one (the share test still judges)."""
    for hours in (8, 28):
        rng = np.random.default_rng(11)
        engine = DetectionEngine(config())
        traffic(engine, rng, T0, hours * 60)
        night = quieter_rest(engine, rng, T0 + hours * 3600, 30, rest_factor=0.15)
        assert max(got.tiers[1].max() for _, got in night) < 40, hours
    rng = np.random.default_rng(11)
    engine = DetectionEngine(config())
    traffic(engine, rng, T0, 8 * 60)
    (batch, got), = traffic(engine, rng, T0 + 8 * 3600, 10, surge=(3, 8.0))
    deletes = np.array([batch.content(i).startswith("op delete") for i in range(batch.n)])
    assert np.median(got.tiers[1][deletes]) >= 70


def test_a_surge_of_pages_of_one_route_is_a_spike_of_the_route():
    """Product pages each come once (/product/<id>): no page is a heavy value, their route is. A scraper
    walking them (x8 for ten minutes) is a spike named by the route."""
    paths = [b"/search", b"/cart", b"/product/%d", b"/login", b"/checkout"]
    rng = np.random.default_rng(4)
    engine = DetectionEngine(config())
    steady = traffic(engine, rng, T0, 28 * 60, vocab=paths)
    assert max(got.tiers[1].max() for _, got in steady[-12:]) < 40
    (batch, got), = traffic(engine, rng, T0 + 28 * 3600, 10, surge=(2, 8.0), vocab=paths)
    pages = np.array([batch.content(i).startswith("op /product/") for i in range(batch.n)])
    assert np.median(got.tiers[1][pages]) >= 70
    reasons = [r[1] for rs in got.reasons.values() for r in rs if "volume spike" in r[1]]
    assert reasons and all("with <*>#1 = /product/<*>" in r for r in reasons)
