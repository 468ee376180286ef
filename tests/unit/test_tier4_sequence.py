"""Tier 4 (detection/tier4_sequence.py) on synthetic ParsedBatches: ids, workflows, endings, bounds, state."""
import dataclasses
import json

import numpy as np
import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection import sequence_kernels as sk
from anomaly_detector.detection.base import BatchContext
from anomaly_detector.detection.tier4_sequence import (
    MODE_FROM_END,
    MODE_FROM_START,
    MODE_REGEX,
    MODE_UNDECIDED,
    SequenceTier,
    SourceLiveness,
    core_miss_bound,
)
from anomaly_detector.parsing.batch import ParsedBatch

# One checkout-like workflow: A B C [D] [S] E; the id sits in different places.
STEPS = {
    "A": (0, "request {id} received path={path}"),
    "B": (1, "auth ok user=u{n} req={id}"),
    "C": (2, "cart loaded items={n} req={id}"),
    "D": (3, "coupon applied code=X{n} req={id}"),
    "S": (4, "slow request {id} took {n} ms"),
    "E": (5, "request {id} completed status=200"),
    "P": (6, "payment authorised amount={n} req={id}"),
    "X": (7, "payment declined reason=card req={id}"),
}
TEXTS = {tid: text.replace("{id}", "<*>").replace("{n}", "<*>").replace("{path}", "<*>") for tid, text in STEPS.values()}
NORMAL = "ABCE"


def settings(**over):
    cfg = dict(default_config()["detection"]["tier4"], learning_rate=0.01)
    cfg.update(min_support=30.0, session_timeout_seconds=60.0, window_seconds=0.0)
    cfg.update(over)
    return cfg


def make_batch(lines, ts, tids, params=None):
    """params: per line a list of (position, value) for the CSR parameter arrays (none by default)."""
    raw = [line.encode() for line in lines]
    ends = np.cumsum([len(r) for r in raw]).astype(np.int64)
    starts = ends - np.array([len(r) for r in raw], np.int64)
    n = len(lines)
    params = params or [[] for _ in lines]
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum([len(p) for p in params])
    flat = [pv for p in params for pv in p]
    return ParsedBatch(ts=np.asarray(ts, np.float64), source_id=np.zeros(n, np.int32), level=np.zeros(n, np.int8),
                       template_id=np.asarray(tids, np.int32), buf=np.frombuffer(b"".join(raw), np.uint8).copy(),
                       content_start=starts, content_end=ends, param_ptr=ptr,
                       param_pos=np.array([p for p, _ in flat], np.int16),
                       param_hash=np.array([sk.id_hash_slow_path(v.encode()) for _, v in flat], np.uint64),
                       param_num=np.full(len(flat), np.nan), sources=["app"])


def context(batch, warm=True, n_templates=16):
    return BatchContext(now=float(batch.ts.max()), lines_seen=0, warm=warm, n_templates=n_templates, ts=batch.ts,
                        template_text=lambda t: TEXTS.get(t, "t%d" % t), source_name=lambda s: "app")


class Traffic:
    """Sessions as step strings ("ABCE"), interleaved in time like a busy service."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.ids = 0
        self.t = 1_000_000.0

    def batch(self, plans, paths=None):
        """Lines of the sessions in `plans`; paths[k] is written in session k's first line (its type)."""
        lines, ts, tids, ids, params = [], [], [], [], []
        for k, plan in enumerate(plans):
            self.ids += 1
            rid = "%012x" % (0xA00000000000 + self.ids)
            ids.append(rid)
            self.t += 0.05
            path = paths[k] if paths else "/checkout"
            for j, step in enumerate(plan):
                tid, text = STEPS[step]
                lines.append(text.format(id=rid, n=int(self.rng.integers(1, 99)), path=path))
                ts.append(self.t + 0.01 * j)
                tids.append(tid)
                params.append([(0, rid), (1, path)] if step == "A" and paths else [])
        order = np.argsort(ts, kind="stable")
        b = make_batch([lines[i] for i in order], [ts[i] for i in order], [tids[i] for i in order],
                       [params[i] for i in order])
        return b, ids

    def normal(self, n, optional=0.3):
        return ["ABC" + ("D" if self.rng.random() < optional else "") + "E" for _ in range(n)]


def step(tier, batch, warm=True, weights=None):
    """One engine round: advance, score, learn."""
    ctx = context(batch, warm)
    findings = tier.advance(float(batch.ts.min()))
    result = tier.score(batch, ctx)
    tier.learn(batch, ctx, np.ones(batch.n, np.float32) if weights is None else weights)
    return result, findings


def trained(tr, sessions=1200, per_batch=200, extra=(), **over):
    tier = SequenceTier(settings(**over))
    step(tier, tr.batch(tr.normal(5))[0], warm=False)
    tr.t += 61.0   # sessions open in the first timeout after start-up may have begun unseen: not learned
    for k in range(sessions // per_batch):
        plans = tr.normal(per_batch) + (list(extra) if k % 2 else [])
        step(tier, tr.batch(plans)[0], warm=False)
    tr.t += 1000.0   # everything open has ended
    assert tier.advance(tr.t) == []
    return tier


def line_of(batch, rid, tid):
    for i in range(batch.n):
        if batch.template_id[i] == tid and rid in batch.content(i):
            return i
    raise AssertionError("no such line")


def test_locator_cuts_ids_from_tokens_without_a_regex_per_line():
    tr = Traffic()
    tier = SequenceTier(settings())
    batch, ids = tr.batch(tr.normal(50))
    keys, ks, ke = tier.locator.keys(batch, 16)
    mode = tier.locator.mode
    assert mode[0] == mode[5] == MODE_FROM_START and mode[4] == MODE_UNDECIDED   # S did not occur
    assert mode[1] in (MODE_FROM_START, MODE_FROM_END) and tier.locator.pre[1] == len("req=")
    assert tier.locator.regex_lines == 0
    a, e = line_of(batch, ids[3], 0), line_of(batch, ids[3], 5)
    b = line_of(batch, ids[3], 1)
    assert keys[a] == keys[b] == keys[e] == sk.id_hash_slow_path(ids[3].encode())
    assert bytes(batch.buf[ks[b]:ke[b]]).decode() == ids[3]


def test_locator_uses_the_regexes_when_the_id_moves_and_rechecks_templates():
    tier = SequenceTier(settings())
    lines = ["user bob did x req=ab12cd34 now", "user bob did x y z req=ff12cd34 then later", "nothing here 1",
             "no template req=12345678"]
    batch = make_batch(lines, [1.0, 2.0, 3.0, 4.0], [7, 7, 8, -1])
    keys, _, _ = tier.locator.keys(batch, 16)
    assert tier.locator.mode[7] == MODE_REGEX and tier.locator.regex_lines == 2
    assert keys.tolist() == [sk.id_hash_slow_path(b"ab12cd34"), sk.id_hash_slow_path(b"ff12cd34"), -1, -1]
    result, _ = step(tier, batch)   # a line without a template takes no part
    assert result.scores.tolist() == [0.0] * 4 and tier.stats["sessions_open"] == 2
    # Template 8 was decided "no id"; when its lines start carrying one, the check notices.
    more = make_batch(["nothing here req=%08x" % k for k in range(600)], np.arange(600.0), np.full(600, 8))
    for _ in range(3):
        tier.locator.keys(more, 16)
    assert tier.locator.redecisions >= 1 and tier.locator.mode[8] != 0


def test_bad_session_pattern_is_one_clear_error():
    with pytest.raises(ValueError, match="session_patterns"):
        SequenceTier(settings(session_patterns=["req=(["]))


def test_skipped_step_and_wrong_order_score_high_and_optional_branches_do_not():
    tr = Traffic(1)
    tier = trained(tr)
    batch, ids = tr.batch(tr.normal(100) + ["ACE", "ACBE"])
    result, _ = step(tier, batch)
    skip, wrong = ids[-2], ids[-1]
    i = line_of(batch, skip, 2)
    assert result.scores[i] >= 80 and "never follows" in result.reasons[i]
    assert "auth ok" in result.expected[i] and "cart loaded" in result.observed[i]
    assert result.scores[line_of(batch, wrong, 2)] >= 80
    normal_lines = [k for k in range(batch.n) if not any(x in batch.content(k) for x in (skip, wrong))]
    assert result.scores[normal_lines].max() == 0.0


def test_a_rare_step_is_not_out_of_order_for_lack_of_company():
    """S (slow) appears in 1% of sessions, always before E; after C it has never been seen yet."""
    tr = Traffic(2)
    tier = trained(tr, extra=["ABDSE"] * 2)
    batch, ids = tr.batch(tr.normal(50) + ["ABCSE"])
    result, _ = step(tier, batch)
    assert result.scores.max() < 50


def test_step_foreign_to_the_workflow_is_flagged_once_common_elsewhere():
    tr = Traffic(3)
    tier = trained(tr, extra=["APE"] * 40)   # P belongs to sessions that start with A too, but never after B
    batch, ids = tr.batch(["ABPE"])
    result, _ = step(tier, batch)
    assert result.scores[line_of(batch, ids[0], 6)] >= 80


def test_unfinished_session_is_a_finding_after_the_timeout_and_finished_ones_are_not():
    tr = Traffic(4)
    tier = trained(tr)
    batch, ids = tr.batch(tr.normal(100) + ["AB"])
    step(tier, batch)
    found = tier.advance(float(batch.ts.max()) + 61.0)
    assert [f.key for f in found] == ["session:" + ids[-1]]
    f = found[0]
    assert "never finished" in f.reason and "auth ok" in f.observed and "cart loaded" in f.expected
    assert f.template_id == 0 and f.source == "app" and f.score >= 80


def test_session_open_longer_than_learned_is_overdue_before_the_timeout():
    tr = Traffic(5)
    tier = trained(tr)
    batch, ids = tr.batch(["AB"])
    step(tier, batch)
    found = tier.advance(float(batch.ts.max()) + 55.0)   # timeout is 60 s; sessions took 0.03 s
    assert [f.key for f in found] == ["session:" + ids[0]] and "learned at most" in found[0].reason


def test_missing_core_step_is_a_finding_when_no_line_looked_wrong():
    """B is in 99.75% of 4000 sessions (core with confidence), so A -> C is known (rare but above rare_probability)."""
    tr = Traffic(6)
    tier = trained(tr, sessions=4000, per_batch=400, extra=["ACE"] * 2)
    batch, ids = tr.batch(["ACE"])
    result, _ = step(tier, batch)
    assert result.scores.max() < 50
    found = tier.advance(float(batch.ts.max()) + 61.0)
    assert len(found) == 1 and "without step 'auth ok" in found[0].reason


def run(tier, tr, plans_per_batch):
    """Feed batches of plans, then let them end; every Finding of the way."""
    found = []
    for plans in plans_per_batch:
        found += step(tier, tr.batch(plans)[0])[1]
        tr.t += 20.0
    tr.t += 1000.0
    return found + tier.advance(tr.t)


def with_branch(tr, n, share, branch="ABX"):
    return [branch if tr.rng.random() < share else p for p in tr.normal(n)]


def test_a_branch_that_ends_early_is_not_a_missing_step_though_first_seen_late():
    """ABX (declined: no cart, no completion) is 3% of sessions but absent from the first 300.

    C and E were in all 300: by share alone core. The confidence bound waits for more sessions, the
    branch shows up and its sessions teach that C and E can be missing: no Finding about them.
    """
    tr = Traffic(11)
    tier = trained(tr, sessions=300, per_batch=100)
    found = run(tier, tr, [with_branch(tr, 200, 0.03) for _ in range(15)])
    assert [f.reason for f in found if "without step" in f.reason] == []
    assert (0, sk.IN, 7) in {(int(k) >> 42, (int(k) >> 21) & sk.CODE_MASK, int(k) & sk.CODE_MASK)
                             for k in tier._rows()[0]}


def test_a_core_step_that_stops_being_core_is_relearned_not_reported_for_ever():
    """B is in 99.75% of 4000 sessions (core); then 5% of sessions skip it (ACE), a new normal.

    A -> C is a known transition, so only the session verdict speaks: the first ACE sessions are
    reported; they also teach the composition, so the bound on B's miss rate rises above
    1 - core_step_fraction and, after the next refresh of the core, the last batches are quiet.
    """
    tr = Traffic(12)
    tier = trained(tr, sessions=4000, per_batch=400, extra=["ACE"] * 2)
    early = run(tier, tr, [with_branch(tr, 200, 0.05, "ACE") for _ in range(3)])
    assert any("without step 'auth ok" in f.reason for f in early)
    run(tier, tr, [with_branch(tr, 200, 0.05, "ACE") for _ in range(30)])
    late = run(tier, tr, [with_branch(tr, 200, 0.05, "ACE") for _ in range(5)])
    assert [f.reason for f in late if "without step" in f.reason] == []


def test_core_miss_bound_needs_sessions_before_a_step_is_core():
    assert core_miss_bound(0, 100) > 0.005 and core_miss_bound(0, 1000) < 0.005
    assert core_miss_bound(3, 100) > max(0.03, core_miss_bound(0, 100)) and core_miss_bound(0, 100) > 0.0
    assert np.all(np.diff(core_miss_bound(np.zeros(4), np.array([50, 200, 800, 5000]))) < 0)


def test_sessions_reported_through_their_lines_give_no_second_finding():
    tr = Traffic(7)
    tier = trained(tr)
    batch, _ = tr.batch(["AE", "ACB"])
    result, _ = step(tier, batch)
    assert result.scores.max() >= 80
    assert tier.advance(float(batch.ts.max()) + 61.0) == []


def test_lines_learned_with_weight_zero_stay_unknown():
    tr = Traffic(8)
    tier = trained(tr)
    for _ in range(5):
        batch, _ = tr.batch(["ACE"] * 40)
        step(tier, batch, weights=np.zeros(batch.n, np.float32))
    batch, ids = tr.batch(["ACE"])
    result, _ = step(tier, batch)
    assert result.scores[line_of(batch, ids[0], 2)] >= 80


def test_open_sessions_and_transitions_are_bounded_and_counted():
    tr = Traffic(9)
    tier = SequenceTier(settings(max_sessions=100, max_transitions=1000))
    step(tier, tr.batch(["AB"] * 150)[0])   # more new sessions than fit at all: the rest are dropped
    assert tier.stats["sessions_open"] == 100 and tier.stats["session_lines_dropped_total"] == 2 * 50
    for _ in range(2):
        step(tier, tr.batch(["AB"] * 80)[0])   # the least recently active make room
    assert tier.stats["sessions_open"] <= 100 and tier.stats["sessions_evicted_total"] >= 160
    rng = np.random.default_rng(0)
    n = 4000
    tids = rng.integers(0, 60, n)
    lines = ["x%d req=%08x" % (t, k) for t, k in zip(tids.tolist(), rng.integers(0, 300, n).tolist())]
    batch = make_batch(lines, np.arange(n) * 0.001 + tr.t, tids)
    for _ in range(3):
        ctx = context(batch, n_templates=64)
        tier.score(batch, ctx)
        tier.learn(batch, ctx, np.ones(n, np.float32))
    stats = tier.stats
    assert stats["transitions"] <= 1000 and stats["transitions_pruned_total"] > 0
    assert stats["sessions_open"] <= 100


def test_switched_off_it_does_nothing_and_back_on_it_forgets_stale_sessions():
    tr = Traffic(10)
    tier = trained(tr)
    step(tier, tr.batch(["AB"] * 5)[0])
    tier.enabled = False
    batch, _ = tr.batch(["ACE"])
    result, found = step(tier, batch)
    assert result.scores.max() == 0 and found == [] and tier.stats["sessions_open"] == 5
    tier.enabled = True
    tr.t += 500.0
    assert tier.advance(tr.t) == [] and tier.stats["sessions_open"] == 0


def test_state_round_trips_through_json():
    tr = Traffic(11)
    tier = trained(tr)
    step(tier, tr.batch(tr.normal(20) + ["AB"])[0])
    copy = SequenceTier(settings())
    copy.load_state(json.loads(json.dumps(tier.state())))
    assert copy.stats["sessions_open"] == tier.stats["sessions_open"] > 0
    batch, _ = tr.batch(tr.normal(30) + ["ACE", "ACBE"])
    a, b = tier.score(batch, context(batch)), copy.score(batch, context(batch))
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.scores.max() >= 80
    later = float(batch.ts.max()) + 100.0
    assert [f.key for f in tier.advance(later)] == [f.key for f in copy.advance(later)] != []


def test_learning_rate_sets_how_fast_counts_are_forgotten():
    slow, fast = (SequenceTier(settings(learning_rate=lr)) for lr in (0.001, 0.5))
    for seed, tier in ((12, slow), (12, fast)):
        tr = Traffic(seed)
        for _ in range(30):
            step(tier, tr.batch(tr.normal(300))[0], warm=False)
    assert fast.tcnt.sum() < 0.5 * slow.tcnt.sum()


def test_window_structure_flags_a_changed_template_mix_only():
    tr = Traffic(13)
    tier = SequenceTier(settings(window_seconds=10.0, window_min_lines=50, window_warmup=20))
    found = []
    rng = np.random.default_rng(0)
    for w in range(50):
        plans = tr.normal(int(rng.integers(40, 80)))
        if w == 45:
            plans = ["AB"] * 60   # requests stop completing: the mix of the window changes
        batch, _ = tr.batch(plans)
        tr.t = 1_000_000.0 + 10.0 * (w + 1)
        found += step(tier, batch, warm=w > 20)[1]
    found += tier.advance(tr.t + 30.0)
    windows = [f for f in found if f.key.startswith("window:")]
    assert len(windows) == 1 and tier.stats["windows_flagged_total"] == 1
    f = windows[0]
    assert "request <*> completed" in f.observed and "request <*> completed status=200' 0.0% of lines" in f.observed
    assert f.template_id in (2, 5) and "% of lines" in f.expected


def test_replay_of_a_second_earlier_file_does_not_end_its_sessions_at_once():
    tr = Traffic(14)
    tier = trained(tr)
    later = tr.t + 5000.0
    step(tier, make_batch(["request ffff00000001 received path=/checkout"], [later], [0]))
    tr.t += 100.0   # the next file starts before the first one ended
    batch, _ = tr.batch(tr.normal(40))
    ctx = context(batch)
    assert tier.advance(later) == []
    tier.score(batch, ctx)
    tier.learn(batch, ctx, np.ones(batch.n, np.float32))
    assert tier.advance(later) == [] and tier.stats["sessions_open"] >= 40
    batch, ids = tr.batch(["AB"])
    step(tier, batch)
    tr.t += 61.0
    step(tier, tr.batch(tr.normal(5))[0])   # lines of this file move its time on: its sessions are judged
    found = tier.advance(later)
    assert ["session:" + ids[0]] == [f.key for f in found if f.key.endswith(ids[0])]


def test_sessions_met_mid_way_after_a_restart_are_not_judged_until_the_grace_is_over():
    tr = Traffic(15)
    tier = trained(tr)
    tier.enabled = False
    tier.enabled = True
    assert tier.advance(tr.t) == []
    batch, _ = tr.batch(["CE"] * 20 + tr.normal(20))   # requests that began while the tier was off
    result, _ = step(tier, batch)
    assert result.scores.max() == 0
    tr.t += 61.0
    step(tier, tr.batch(tr.normal(5))[0])
    assert tier.advance(tr.t) == []
    batch, ids = tr.batch(["CE"] + tr.normal(20))
    result, _ = step(tier, batch)
    i = line_of(batch, ids[0], 2)
    assert result.scores[i] >= 80 and "never opens sessions" in result.reasons[i]


def test_a_parameter_of_the_first_line_with_few_values_splits_workflows():
    """Checkouts go A B C E, searches A C E: A -> C is normal, but not for a checkout."""
    def train(paths_on):
        tr = Traffic(16)
        tier = SequenceTier(settings())
        step(tier, tr.batch(tr.normal(5))[0], warm=False)
        tr.t += 61.0
        for _ in range(8):
            plans = ["ABCE"] * 100 + ["ACE"] * 100
            paths = ["/checkout"] * 100 + ["/search"] * 100
            step(tier, tr.batch(plans, paths if paths_on else None)[0], warm=False)
        tr.t += 1000.0
        assert tier.advance(tr.t) == []
        batch, ids = tr.batch(["ACE", "ACE", "ABCE"], ["/checkout", "/search", "/checkout"] if paths_on else None)
        return tier, batch, ids, step(tier, batch)[0]

    tier, batch, ids, result = train(True)
    assert tier.stats["workflows"] == 3   # the plain one watched while probing, then one per path
    i = line_of(batch, ids[0], 2)
    assert result.scores[i] >= 80 and "[path=/checkout]" in result.reasons[i]
    others = [k for k in range(batch.n) if ids[0] not in batch.content(k)]
    assert result.scores[others].max() == 0
    plain, batch, ids, result = train(False)
    assert plain.stats["workflows"] == 1 and result.scores.max() == 0


def test_workflows_are_bounded_and_overflow_is_counted(monkeypatch):
    from anomaly_detector.detection import tier4_sequence
    monkeypatch.setattr(tier4_sequence, "MAX_WORKFLOWS", 2)
    tr = Traffic(17)
    tier = SequenceTier(settings())
    for _ in range(4):   # 200 session starts to choose the parameter, then its values name workflows
        plans = ["ABCE"] * 90
        step(tier, tr.batch(plans, ["/a", "/b", "/c"] * 30)[0], warm=False)
    stats = tier.stats
    assert stats["workflows"] == 2 and stats["workflows_overflow_total"] >= 1
    assert set(tier.store.wf[tier.store.key >= 0].tolist()) <= {0, 1}


def test_sessions_evicted_for_room_do_not_come_back_as_strange_starts():
    tr = Traffic(18)
    tier = trained(tr, max_sessions=300)
    batch, old = tr.batch(["AB"] * 200)
    step(tier, batch)
    tr.t += 1.0
    step(tier, tr.batch(["AB"] * 200)[0])   # the first 200 are the least recently active: evicted
    assert tier.stats["sessions_evicted_total"] >= 100
    lines = ["cart loaded items=2 req=" + rid for rid in old]
    later = make_batch(lines, tr.t + 1.0 + np.arange(len(lines)) * 0.001, [2] * len(lines))
    result, _ = step(tier, later)
    assert result.scores.max() == 0


CROSS_SOURCES = ["app", "cart"]


def two_sources(batch):
    """A, B in source "app", C and E (templates 2, 5) in source "cart": a workflow across two services."""
    batch.source_id = np.isin(batch.template_id, [2, 5]).astype(np.int32)
    batch.sources = CROSS_SOURCES
    return batch


def cross_round(tier, batch, warm=True):
    """(findings before the batch, its scores) of one batch of the two-service workflow."""
    ctx = BatchContext(now=float(batch.ts.max()), lines_seen=0, warm=warm, n_templates=16, ts=batch.ts,
                       template_text=lambda t: TEXTS.get(t, "t%d" % t), source_name=lambda s: CROSS_SOURCES[s])
    found = tier.advance(float(batch.ts.min()))
    result = tier.score(batch, ctx)
    tier.learn(batch, ctx, np.ones(batch.n, np.float32))
    return found, result


def cross_trained(tr):
    tier = SequenceTier(settings())
    cross_round(tier, two_sources(tr.batch(tr.normal(5))[0]), warm=False)
    tr.t += 61.0
    for _ in range(6):
        cross_round(tier, two_sources(tr.batch(tr.normal(200))[0]), warm=False)
    tr.t += 1000.0
    assert tier.advance(tr.t) == []
    return tier


def test_an_unfinished_session_of_a_cross_service_workflow_is_reported_in_the_source_of_the_awaited_step():
    """When sessions stop after B, cart owes the next step."""
    tr = Traffic(9)
    tier = cross_trained(tr)
    batch, ids = tr.batch(tr.normal(50) + ["AB"])
    cross_round(tier, two_sources(batch))
    found = tier.advance(float(batch.ts.max()) + 61.0)
    assert [(f.key, f.source) for f in found] == [("session:" + ids[-1], "cart")]
    assert "never finished" in found[0].reason and "cart loaded" in found[0].expected


def test_a_step_skipped_in_another_service_blames_that_service():
    """A then C: app's B was skipped; C's line is cart's, the evidence is about app. A, B then E: cart's C
    was skipped and E is cart's own line: nobody else to blame."""
    tr = Traffic(11)
    tier = cross_trained(tr)
    batch, ids = tr.batch(tr.normal(50) + ["ACE", "ABE"])
    _, result = cross_round(tier, two_sources(batch))
    skip_b, skip_c = line_of(batch, ids[-2], 2), line_of(batch, ids[-1], 5)
    assert result.scores[skip_b] >= 80 and batch.source_id[skip_b] == 1
    assert result.blame == {skip_b: 0}, "only the line whose skipped step is another service's"
    assert result.scores[skip_c] >= 80 and "cart loaded" in result.expected[skip_c]


NIGHTLY = {8: "nightly backup started req={id}", 9: "nightly backup dumped req={id}", 10: "nightly backup done req={id}"}
TEXTS.update({tid: text.replace("{id}", "<*>") for tid, text in NIGHTLY.items()})


def nightly_run(tr, night, steps=(8, 9, 10)):
    rid = "bk%010d" % night
    tr.t += 5.0
    return make_batch([NIGHTLY[t].format(id=rid) for t in steps], [tr.t + 30.0 * j for j in range(len(steps))],
                      list(steps)), rid


def test_a_nightly_job_seen_on_two_nights_is_judged_on_the_third():
    """Busy checkouts pass between the nights (three count shrinks a day at learning rate 0.1): the nightly
    job's counts shrink per run of it, not per busy line, so its two runs still count as two, far below
    min_support; the third night's run that stops after 'dumped' is reported, once."""
    tr = Traffic(11)
    tier = SequenceTier(settings(learning_rate=0.1))
    step(tier, tr.batch(tr.normal(5))[0], warm=False)
    tr.t += 61.0
    found = {}
    for night in range(4):
        for _ in range(36):   # about 30k learned lines of checkouts: three shrinks of every busy count
            step(tier, tr.batch(tr.normal(200))[0])
        stops_early = night >= 2
        batch, rid = nightly_run(tr, night, (8, 9) if stops_early else (8, 9, 10))
        step(tier, batch)
        tr.t += 1000.0
        found[night] = [f for f in tier.advance(tr.t) if "nightly" in f.reason]
        if night == 1:
            runs = tier._runs_of(tier.workflows.ids[(8, 0)], *tier._rows())
            assert 1.85 < runs < 2.0, runs   # 0.9 + 1: the first run shrunk once, by its second (per lines: 1.73)
    assert found[0] == [] and found[1] == []
    # the job's runs come hours apart: one run cut short stands for the workflow (run:), while the
    # checkouts, many at once, stay one session of many
    assert [f.key for f in found[2]] == ["run:bk0000000002"]
    assert tier._runs_alone(tier.workflows.ids[(8, 0)]) and not tier._runs_alone(tier.workflows.ids[(0, 0)])
    assert "ended after 'nightly backup dumped req=<*>', where none of its 2 runs ended" in found[2][0].reason
    assert found[3] == []   # the same ending again: learned when reported, not reported every night


def test_the_time_between_runs_is_learned_per_workflow_across_batches():
    tier = SequenceTier(settings(learning_rate=0.01, session_timeout_seconds=300.0))
    tier._ensure_workflows(4)
    # workflow 1 every hour, one run a batch; workflow 2 every second, many a batch, in any order
    for k in range(5):
        busy = 1000.0 + 3600.0 * k + np.arange(50.0)
        wfs = np.r_[np.full(50, 2), 1].astype(np.int32)
        ts = np.r_[busy[::-1], 1000.0 + 3600.0 * k]
        tier._note_starts(wfs, ts)
    assert tier.log_gap_n[1] == 4 and np.isclose(np.expm1(tier.log_gap[1]), 3600.0)
    assert tier.log_gap_n[2] == 4 * 50 + 49 and np.expm1(tier.log_gap[2]) < 300.0
    assert tier.last_start[1] == 1000.0 + 3600.0 * 4 and tier.last_start[2] == 1000.0 + 3600.0 * 4 + 49.0
    assert tier._runs_alone(1) and not tier._runs_alone(2) and not tier._runs_alone(3)


def test_sessions_cut_by_a_gap_in_the_input_are_not_judged():
    """Lines lost on the way (a collector down: the engine names the gap in BatchContext.gaps) cut the
    sessions open across it and the ones that began in it; neither is a broken workflow."""
    tr = Traffic(21)
    tier = trained(tr)
    before, ids = tr.batch(tr.normal(20) + ["AB"] * 3)
    step(tier, before)
    gap = (float(before.ts.max()), float(before.ts.max()) + 200.0)
    tr.t = gap[1]
    after, _ = tr.batch(["CE"] * 3 + tr.normal(20))   # the cut sessions' ends come with new ids: began in the gap
    ctx = dataclasses.replace(context(after), gaps=(gap,))
    assert tier.advance(float(before.ts.max())) == []
    result = tier.score(after, ctx)
    tier.learn(after, ctx, np.ones(after.n, np.float32))
    assert result.scores.max() == 0
    assert tier.advance(float(after.ts.max()) + 61.0) == []
    # the same lines without the gap named: the three sessions are unfinished and the ends are strange
    tr = Traffic(21)
    tier = trained(tr)
    before, ids = tr.batch(tr.normal(20) + ["AB"] * 3)
    step(tier, before)
    tr.t = gap[1]
    result, found = step(tier, tr.batch(["CE"] * 3 + tr.normal(20))[0])
    assert result.scores.max() >= 80
    assert {f.key for f in found + tier.advance(tr.t + 61.0)} >= {"session:" + i for i in ids[-3:]}


def test_sessions_waiting_on_a_quiet_service_are_its_silence_not_broken_workflows():
    """cart stops logging (a deploy restarting it) while app goes on: the sessions that wait for cart's
    step, and the ones met without app's steps while app is the quiet one, are not tier 4's to report;
    tier 2 judges a service's silence and holds it a while for a restart."""
    tr = Traffic(23)
    tier = cross_trained(tr)
    found = []
    for _ in range(3):                                  # app only: every session stops after B
        batch, ids = tr.batch(["AB"] * 50)
        found += cross_round(tier, two_sources(batch))[0]
        tr.t += 20.0
    tr.t += 100.0
    found += cross_round(tier, two_sources(tr.batch(tr.normal(50))[0]))[0]
    assert found == [], [f.reason for f in found]
    tr.t += 30.0
    batch, _ = tr.batch(["CE"] * 30)                    # cart only: sessions met without app's A, B
    _, result = cross_round(tier, two_sources(batch))
    assert result.scores.max() == 0
    k, c = tier._rows()
    assert c[k == sk.pack(sk.GLOBAL, sk.START, 2)].sum() == 0, "spared: not learned as a way sessions open"
    # cart alive: a session stopping after B is still reported in cart (see the test above)
    batch, ids = tr.batch(tr.normal(50) + ["AB"] + tr.normal(50))
    cross_round(tier, two_sources(batch))
    tr.t += 100.0
    found = cross_round(tier, two_sources(tr.batch(tr.normal(50))[0]))[0]
    assert [(f.key, f.source) for f in found] == [("session:" + ids[50], "cart")]


def test_sessions_a_restart_left_behind_are_its_silence_though_they_time_out_after_it_is_back():
    """A deploy restarts cart for a few seconds (twice its QUIET_GAPS of mean gaps) while app goes on: the
    sessions of that time stop after B. They are judged once cart logs again, so cart is not quiet then;
    it was when their step was due (SourceLiveness.silent), and they are its outage, not broken
    workflows. The same sessions while cart logs as usual are."""
    def run(cart_down):
        tr = Traffic(23)
        tier = cross_trained(tr)
        cross_round(tier, two_sources(tr.batch(tr.normal(50))[0]))
        tr.t += 5.0 if cart_down else 0.1
        # cart down: app's sessions stop after B; up: they stop too, cart's lines between them
        plans = ["AB"] * 30 if cart_down else [p for pair in zip(["AB"] * 30, tr.normal(30)) for p in pair]
        batch, ids = tr.batch(plans)
        found = cross_round(tier, two_sources(batch))[0]
        tr.t += 1.0 if cart_down else 0.1
        found += cross_round(tier, two_sources(tr.batch(tr.normal(50))[0]))[0]   # cart back
        tr.t += 100.0
        return tier, found + tier.advance(tr.t), ids
    tier, found, _ = run(cart_down=True)
    assert found == [], [f.reason for f in found]
    since, until, limit = tier.liveness.silent[1][-1]     # cart: its 40 s away (the training gap before)
    assert until - since > 6.0 > 2 * limit
    _, found, ids = run(cart_down=False)
    assert sorted(f.key for f in found) == sorted("session:" + i for i in ids[0::2])


def test_source_liveness_counts_recent_lines_and_needs_the_rest_of_the_log_to_go_on():
    live = SourceLiveness()
    ts = np.arange(0.0, 3600.0, 1.0)
    live.add(np.zeros(ts.size, np.int32), ts)           # one line a second for an hour
    live.add(np.ones(1, np.int32), np.array([3600.0]))
    assert 0.9 < live.mean_gap(0) < 1.1
    assert live.quiet(0, 3606.0, np.array([3610.0]))     # 6 s without a line, another source logging
    assert not live.quiet(0, 3603.0, np.array([3601.0]))
    assert not live.quiet(0, 3700.0)                     # nothing logged after 3600: the input is quiet
    assert not live.quiet(1, 3700.0, np.array([3700.0]))  # one line: its gaps are not known


def test_steps_skipped_while_their_service_wrote_nothing_are_found_once_it_logs_again():
    """A deploy restarts a busy service: the first sessions that go on without its step come before it is
    quiet long enough to be judged so (they are flagged); its next line shows whether their steps were all
    due in one silence of QUIET_GAPS of its mean gaps (the engine then excuses them up to the last such
    skip, which may come just after it is back), decided in a later batch if that line comes later. A
    step due while it logs as usual is a broken workflow and stays."""
    tier = SequenceTier(settings())
    ts = np.arange(0.0, 3600.0, 1.0)
    tier.liveness.add(np.zeros(ts.size, np.int32), ts)     # source 0: a line a second for an hour
    src = np.zeros(3, np.int32)

    def skips(times, dues, landed=(0,)):
        return {0: (np.array(times), np.array(dues), set(landed))}
    # lines in the incidents of 0 (blamed) and of 2 (a session met without its first step); the last skip
    # comes after 0's first line back, its step due before
    tier._find_silences(skips([3601.5, 3603.0, 3610.5], [3601.4, 3602.9, 3609.9], (0, 2)), {},
                        np.array([3610.0, 3611.0, 3612.0]), src)
    assert tier.take_silences() == [(0, 3599.0, 3610.5), (2, 3599.0, 3610.5)] and tier.take_silences() == []
    tier.liveness.add(src, np.array([3610.0, 3611.0, 3612.0]))
    tier._find_silences(skips([3613.5], [3613.4]), {}, np.array([3613.0, 3614.0, 3615.0]), src)   # it logs as usual
    assert tier.take_silences() == []
    tier.liveness.add(src, np.array([3613.0, 3614.0, 3615.0]))
    tier._find_silences(skips([3617.0], [3611.0]), {}, np.array([3616.0]), src[:1])   # due while it logged
    assert tier.take_silences() == [] and tier._awaiting == {}
    tier._find_silences(skips([3617.0], [3616.5]), {}, np.array([3616.0]), src[:1])   # no line of it after yet
    assert tier.take_silences() == [] and tier._awaiting == {0: (3616.0, 3617.0, {0})}
    tier.liveness.add(src[:1], np.array([3616.0]))
    tier._find_silences({}, {}, np.array([3630.0]), src[:1])
    assert tier.take_silences() == [(0, 3616.0, 3630.0)] and tier._awaiting == {}


def test_a_skipped_step_is_due_after_the_sessions_line_before_it():
    tr = Traffic(31)
    tier = trained(tr)
    first, ids = tr.batch(["AB"])                           # session 1's A, B in one batch
    step(tier, first)
    tr.t += 5.0
    batch, more = tr.batch(["AC"])                          # session 2: A then C (B skipped)
    keys = tier.locator.keys(batch, 16, batch.ts)[0]
    c = np.array([line_of(batch, more[0], 2)])
    assert tier._previous_step_times(keys, batch.ts, c)[0] == batch.ts[line_of(batch, more[0], 0)]
    assert tier._previous_step_times(keys, batch.ts, np.array([line_of(batch, more[0], 0)]))[0] == \
        batch.ts[line_of(batch, more[0], 0)], "a session's first line: its own time"
    late, _ = tr.batch(["E"])
    late_keys = tier.locator.keys(late, 16, late.ts)[0]
    late_keys[:] = tier.locator.keys(first, 16, first.ts)[0][-1]   # session 1's E, in a later batch
    assert tier._previous_step_times(late_keys, late.ts, np.array([0]))[0] == first.ts.max()
