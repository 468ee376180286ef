"""Tier 1 pattern rules from [rules] and incident grouping per source."""
import time

import numpy as np
import pytest

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.base import BatchContext
from anomaly_detector.detection.incidents import IncidentBook
from anomaly_detector.detection.tier1_rules import RulesTier
from anomaly_detector.parsing.batch import LEVEL_ERROR, LEVEL_INFO, ParsedBatch


def text_batch(lines, levels=None, t0=1000.0, step=1.0):
    data = [line.encode() for line in lines]
    ends = np.cumsum([len(d) for d in data]).astype(np.int64)
    n = len(lines)
    return ParsedBatch(ts=t0 + step * np.arange(n), source_id=np.zeros(n, np.int32),
                       level=np.full(n, LEVEL_INFO, np.int8) if levels is None else np.asarray(levels, np.int8),
                       template_id=np.zeros(n, np.int32), buf=np.frombuffer(b"".join(data), np.uint8),
                       content_start=ends - np.array([len(d) for d in data]), content_end=ends,
                       param_ptr=np.zeros(n + 1, np.int64), param_pos=np.zeros(0, np.int16),
                       param_hash=np.zeros(0, np.uint64), param_num=np.zeros(0), sources=["app"])


def ctx_for(batch):
    return BatchContext(now=float(batch.ts.max()), lines_seen=0, warm=False, n_templates=1, ts=batch.ts)


def learned(t, rate):
    """Give the error rule of source 0 a learned [matches, seconds], per window and per span alike."""
    t.learned[("error", 0)] = list(rate)
    t.span_learned[("error", 0)] = list(rate)


def tier(rules):
    settings = dict(default_config()["detection"]["tier1"], learning_rate=0.01)
    return RulesTier(settings, rules)


def test_pattern_rule_counts_matches_in_its_window_and_never_across_lines():
    t = tier({"oom": {"pattern": "out of memory", "threshold": 3, "window_seconds": 60, "level": ""}})
    lines = ["worker out of memory", "ok", "out of", "memory", "out of memory again", "fine", "out of memory"]
    batch = text_batch(lines)
    scores = t.score(batch, ctx_for(batch)).scores
    assert scores[6] >= 70 and scores[4] < 70 and scores[1] == 0
    assert scores[2] == 0 and scores[3] == 0, "a match must not span two lines"
    spread = text_batch(["out of memory"] * 3, step=100.0)
    assert t.score(spread, ctx_for(spread)).scores.max() < 70, "matches outside the window do not add up"


def test_rule_level_filter_and_carry_over_between_batches():
    t = tier({"db": {"pattern": "timeout", "threshold": 2, "window_seconds": 60, "level": "ERROR"}})
    first = text_batch(["db timeout", "db timeout"], levels=[LEVEL_INFO, LEVEL_ERROR])
    ctx = ctx_for(first)
    assert t.score(first, ctx).scores.max() < 70
    t.learn(first, ctx, np.ones(2, np.float32))
    second = text_batch(["db timeout"], levels=[LEVEL_ERROR], t0=1010.0)
    assert t.score(second, ctx_for(second)).scores[0] >= 70, "the earlier ERROR match still counts"


def test_incident_book_groups_per_source_and_closes_after_a_quiet_window():
    book = IncidentBook(300)
    args = ({"t1": 80.0}, 4, "tpl <*>", [("reason", "exp", "obs", 80.0)], "sample")
    assert book.add("web", 0.0, 80.0, *args, opened_by="4") == []
    assert book.add("web", 200.0, 80.0, *args, opened_by="4") == []
    book.add("db", 250.0, 80.0, *args, opened_by="4")
    closed = book.add("web", 900.0, 80.0, *args, opened_by="4")
    assert len(closed) == 1 and closed[0].lines == 2 and closed[0].last_seen == 200.0
    assert [i.source for i in book.close_quiet(1100.0)] == ["db"]
    record = book.close_all()[0].record()
    assert record["source"] == "web" and record["template"] == "tpl <*>" and record["samples"] == ["sample"]


def test_a_pattern_that_can_backtrack_catastrophically_is_refused_at_compile():
    from anomaly_detector.detection.tier1_rules import UnsafePattern

    with pytest.raises(UnsafePattern, match=r"\[rules.evil\] pattern: pattern can backtrack catastrophically "
                                            r"\(nested quantifier '\(a\+\)\+'\)"):
        tier({"evil": {"pattern": "^(a+)+$", "threshold": 1, "window_seconds": 60, "level": ""}})


def test_anchors_in_a_rule_pattern_apply_to_each_line():
    """'^' and '$' mean the line's start and end, as in the masks: the pattern searched the whole
    batch buffer, so '^x' matched only the batch's first line and 'x$' only its last."""
    t = tier({"oom": {"pattern": "^out of memory$", "threshold": 1, "window_seconds": 60, "level": ""}})
    rule = next(r for r in t.rules if r.name == "oom")
    batch = text_batch(["out of memory", "out of memory", "x out of memory", "out of memory y", "out of memory"])
    assert rule.matches(batch).tolist() == [True, True, False, False, True]


def test_a_rule_match_cannot_swallow_the_next_line():
    """A greedy match running past its line must not hide the match in the line after it."""
    t = tier({"db": {"pattern": "db.*down", "threshold": 1, "window_seconds": 60, "level": ""}})
    rule = next(r for r in t.rules if r.name == "db")
    batch = text_batch(["db ok", "db is down", "all fine"])
    assert rule.matches(batch).tolist() == [False, True, False]


def test_a_rule_searches_at_most_max_scan_bytes_of_a_line_and_counts_the_cut():
    t = tier({"oom": {"pattern": "out of memory", "threshold": 1, "window_seconds": 60, "level": "",
                      "max_scan_bytes": 64}})
    lines = ["x" * 40 + " out of memory", "x" * 70 + " out of memory", "short line"]
    batch = text_batch(lines)
    scores = t.score(batch, ctx_for(batch)).scores
    assert scores[0] >= 70 and scores[1] == 0 and scores[2] == 0   # the second's match is past byte 64
    assert t.scans_cut() == 1


def test_the_costliest_accepted_pattern_on_a_long_adversarial_line_is_bounded_by_the_cap():
    """The validator accepts patterns that are at worst quadratic; the cap bounds what one line costs."""
    pattern = r"(?:\s+\w+)*\s*\w+="
    t = tier({"kv": {"pattern": pattern, "threshold": 1, "window_seconds": 60, "level": ""}})
    batch = text_batch([" a" * 50_000])   # 100 KB: unbounded, this search takes over a minute
    began = time.process_time()
    t.score(batch, ctx_for(batch))
    assert time.process_time() - began < 10 and t.scans_cut() == 1   # ~0.2 s at the 4096-byte default


def test_a_burst_is_flagged_where_it_forms_and_doubles_not_on_every_line():
    t = tier({})
    batch = text_batch(["disk error"] * 100, levels=[LEVEL_ERROR] * 100, step=0.5)
    scores = t.score(batch, ctx_for(batch)).scores
    flagged = np.flatnonzero(scores >= 70).tolist()
    assert flagged == [19, 39, 79], "the 20th, 40th and 80th error within the minute (error_threshold 20)"
    assert scores[20:].min() >= 40, "the burst's other lines stay suspicious (they keep its incident open)"


def test_past_warm_up_a_burst_far_beyond_the_learned_rate_fires_below_the_threshold():
    t = tier({})
    batch = text_batch(["upstream timed out"] * 12, levels=[LEVEL_ERROR] * 12, step=5.0)
    cold = t.score(batch, ctx_for(batch)).scores
    assert cold.max() < 40, "before warm-up 12 errors a minute are below the error threshold of 20"
    learned(t, [3.0 * 24, 86400.0])        # three errors an hour, learned over a day
    warm = BatchContext(now=float(batch.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=batch.ts)
    scores = t.score(batch, warm).scores
    # the 10th error (learned_burst_min) is the window's flag; the 7th already the slow test's, whose least count
    # at three an hour is SLOW_MIN_LINES and whose flag budget makes 7 in 600 s (p about 1e-6) improbable
    assert np.flatnonzero(scores >= 70).tolist() == [6, 9]
    assert scores[10:].min() >= 40
    learned(t, [12.0 * 60 * 24, 86400.0])   # a service that always logs twelve a minute
    assert t.score(batch, warm).scores.max() < 40


def test_past_warm_up_a_slow_burst_is_counted_over_learned_burst_windows():
    t = tier({})
    learned(t, [3.0 * 24, 86400.0])        # three errors an hour, learned over a day
    # four errors a minute for five minutes: never learned_burst_min (10) within one 60 s window
    batch = text_batch(["upstream timed out"] * 20, levels=[LEVEL_ERROR] * 20, step=15.0)
    warm = BatchContext(now=float(batch.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=batch.ts)
    result = t.score(batch, warm)
    assert np.flatnonzero(result.scores >= 70).tolist() == [6, 13], "flagged where it reaches 7 and doubles"
    assert result.scores[7:].min() >= 40, "its other lines stay suspicious"
    assert result.reasons[6].startswith("error rule: 7 matching lines in 600s from ")
    learned(t, [4.0 * 60 * 24, 86400.0])    # a service that always logs four a minute
    assert t.score(batch, warm).scores.max() < 40
    one = tier({})
    one.learned_burst_windows = 1                          # [[tier1]] learned_burst_windows = 1: off
    learned(one, [3.0 * 24, 86400.0])
    assert one.score(batch, warm).scores.max() < 40


def test_the_slow_burst_span_carries_over_between_batches():
    t = tier({})
    first = text_batch(["upstream timed out"] * 5, levels=[LEVEL_ERROR] * 5, step=15.0)
    t.learn(first, ctx_for(first), np.ones(5))
    learned(t, [3.0 * 24 + 5, 86400.0])     # three an hour, and the five kept lines learned
    second = text_batch(["upstream timed out"] * 4, levels=[LEVEL_ERROR] * 4, t0=1120.0, step=15.0)
    warm = BatchContext(now=float(second.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=second.ts)
    assert np.flatnonzero(t.score(second, warm).scores >= 70).tolist() == [1], "5 kept + 2 = the 7th"


def test_a_slow_burst_still_probable_at_learned_burst_min_is_flagged_where_it_becomes_improbable():
    t = tier({})
    learned(t, [40.0 * 24, 86400.0])       # forty errors an hour: 10 in 600 s is not yet rare
    # eight a minute: never learned_burst_min (10) in a 60 s window, improbable only over 600 s
    batch = text_batch(["pool timeout"] * 100, levels=[LEVEL_ERROR] * 100, step=7.5)
    warm = BatchContext(now=float(batch.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=batch.ts)
    first = int(t._first_improbable(40.0 / 6.0, t._slow_least(40.0 / 6.0), t._slow_fire(40.0 / 60.0, 60.0))[0])
    assert first > t.learned_burst_min
    result = t.score(batch, warm)
    flagged = np.flatnonzero(result.scores >= 70).tolist()
    assert flagged and flagged[0] == first - 1, "flagged at the count that first scores LEARNED_FIRE"
    assert result.scores[first:].min() >= 40, "its other lines stay suspicious"


def test_a_rare_rules_slow_burst_needs_fewer_lines_than_learned_burst_min_at_its_flag_budget():
    """Infra seed 83's deadlocks: three an hour, seven within ten minutes (x20). At p < 1e-7 and ten lines they
    were never flagged; a rule tested a hundred times a day is judged at SLOW_FLAGS_PER_DAY."""
    t = tier({})
    learned(t, [3.0 * 24, 86400.0])        # three errors an hour, learned over a day
    burst = text_batch(["ERROR:  deadlock detected"] * 7, levels=[LEVEL_ERROR] * 7, step=80.0)
    warm = BatchContext(now=float(burst.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=burst.ts)
    assert np.flatnonzero(t.score(burst, warm).scores >= 70).tolist() == [6]
    assert t._slow_least(0.5) == 6 and t._slow_fire(0.05, 60.0) == 50.0
    clumps = text_batch(["ERROR:  deadlock detected"] * 5, levels=[LEVEL_ERROR] * 5, step=1.0)
    warm = BatchContext(now=float(clumps.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=clumps.ts)
    assert t.score(clumps, warm).scores.max() < 70, "a retry storm of five lines stays below SLOW_MIN_LINES"
    busy = tier({})
    learned(busy, [10.0 * 60 * 24, 86400.0])   # ten a minute: tested 14,400 times a day
    assert busy._slow_fire(10.0, 60.0) == 70.0 and busy._slow_least(100.0) == busy.learned_burst_min


def test_a_slow_burst_is_dated_where_its_excess_began_not_at_the_spans_first_line():
    """Generated seed 96: a web 5xx storm was dated 101 s before it began, at a background error inside its
    ten-minute span; the incident began before the outage an operator knows of."""
    t = tier({})
    background = text_batch(["upstream timed out"] * 2, levels=[LEVEL_ERROR] * 2, t0=1000.0, step=200.0)
    t.learn(background, ctx_for(background), np.ones(2))
    learned(t, [3.0 * 24 + 2, 86400.0])     # three an hour, and the two kept lines learned
    burst = text_batch(["upstream timed out"] * 20, levels=[LEVEL_ERROR] * 20, t0=1500.0, step=15.0)
    warm = BatchContext(now=float(burst.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=burst.ts)
    result = t.score(burst, warm)
    flagged = np.flatnonzero(result.scores >= 70)
    assert flagged.size and result.reasons[int(flagged[0])].startswith("error rule: 7 matching lines in 600s")
    assert result.began[int(flagged[0])] == 1500.0, "the burst's first line, not the background one at 1000 s"


def test_the_excess_onset_is_the_burst_start_whatever_the_background_before_it():
    from anomaly_detector.detection.tier1_rules import excess_onset
    for seed in range(20):
        rng = np.random.default_rng(seed)
        background, burst = np.sort(rng.uniform(0, 500, 10)), np.sort(rng.uniform(500, 600, 100))
        onset = excess_onset(np.concatenate([background, burst]), 10 / 500)   # background at its rate
        assert burst[0] - 60.0 <= onset <= burst[5], seed     # not the span's first line, minutes before
    assert excess_onset(np.array([5.0]), 0.01) == 5.0
    assert excess_onset(np.array([-400.0, -250.0, -101.0, 0.0, 1.0, 2.0, 3.0, 5.0, 6.0, 7.6]), 2 / 600) == 0.0


def test_a_slow_burst_spread_over_batches_is_judged_against_the_rate_before_it():
    """Infra seed 83: seven deadlocks learned from one batch doubled the rule's rate, and the eighth, in the next
    batch, scored 2: the incident never had its second line. The lines of the span already learned are not
    part of the rate it is judged against."""
    t = tier({})
    first = text_batch(["ERROR:  deadlock detected"] * 7, levels=[LEVEL_ERROR] * 7, step=70.0)
    t.learn(first, ctx_for(first), np.ones(7))
    learned(t, [0.05 * 100 + 7, 6000.0])     # three an hour over the memory, plus the seven
    second = text_batch(["ERROR:  deadlock detected"], levels=[LEVEL_ERROR], t0=1000.0 + 7 * 70.0)
    warm = BatchContext(now=float(second.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=second.ts)
    result = t.score(second, warm)
    assert result.scores[0] >= 40 and result.reasons[0].startswith("error rule: 8 matching lines in 600s")


def test_the_first_improbable_count_is_what_a_scan_from_the_least_count_finds():
    """_first_improbable bisects every line's count at once; a scan of each line's counts from its least
    up (64 x least where none scores) finds the same."""
    from anomaly_detector.detection.stats_kernels import count_upper_scores
    rng = np.random.default_rng(5)
    means = rng.uniform(0.01, 60.0, 300)
    least = rng.integers(1, 12, 300)
    fire = rng.uniform(40.0, 100.0, 300)
    fire[:5] = 1e9                                     # never reached: the scan's last candidate
    got = RulesTier._first_improbable(means, least, fire)
    for m, k, f, g in zip(means, least, fire, got):
        candidates = np.arange(k, 64 * k + 1, dtype=np.float64)
        surprise = count_upper_scores(candidates, np.full(candidates.size, m), np.ones(candidates.size),
                                      np.zeros(candidates.size))
        reached = np.flatnonzero(surprise >= f)
        assert g == (candidates[reached[0]] if reached.size else candidates[-1])


def test_a_rare_rules_recent_rate_is_shrunk_toward_its_long_run_rate():
    """Infra seed 108: shop-api's pool timeouts, about five an hour, ten within ten minutes (x10) at noon. Per
    60 s window the rule remembered a hundred minutes, a dozen matches of a busier hour, and judged the ten
    against 1.8 (p about 1e-5, below its flag budget): never flagged. The slow test shrinks that recent rate
    toward the one learned per span."""
    t = tier({})
    step = 1200.0                                          # three errors an hour for a day
    for k in range(72):
        line = text_batch(["pool timeout"], levels=[LEVEL_ERROR], t0=1000.0 + k * step)
        t.learn(line, ctx_for(line), np.ones(1))
    t0 = 1000.0 + 72 * step
    for k in range(18):                                    # then a busier hour: eighteen, one at a time
        one = text_batch(["pool timeout"], levels=[LEVEL_ERROR], t0=t0 + k * 200.0)
        t.learn(one, ctx_for(one), np.ones(1))
    burst = text_batch(["pool timeout"] * 10, levels=[LEVEL_ERROR] * 10, t0=t0 + 17 * 200.0 + 300.0, step=60.0)
    warm = BatchContext(now=float(burst.ts.max()), lines_seen=10**6, warm=True, n_templates=1, ts=burst.ts)
    result = t.score(burst, warm)
    assert result.scores.max() >= 70, "ten within ten minutes against three an hour"
    assert result.reasons[int(np.argmax(result.scores))].endswith("matching lines in 600s from 0")
    per_window = t.learned[("error", 0)]
    assert per_window[0] / per_window[1] * 600.0 > 1.5, "per window: a hundred minutes' memory, the busy hour's"


def test_the_per_span_rates_are_saved_and_an_older_state_starts_them_from_the_per_window_ones():
    t = tier({})
    learned(t, [72.0, 86400.0])
    t.span_learned[("error", 0)] = [80.0, 90000.0]
    again = tier({})
    again.load_state(t.state())
    assert again.span_learned == {("error", 0): [80.0, 90000.0]} and again.learned == {("error", 0): [72.0, 86400.0]}
    older = tier({})
    older.load_state({"learned": [["error", 0, 72.0, 86400.0]], "last_now": None})
    assert older.span_learned == {("error", 0): [72.0, 86400.0]}


def test_the_shrunk_rate_is_the_recent_one_for_a_busy_rule_and_the_long_run_one_for_a_silent_recent_past():
    from anomaly_detector.detection.tier1_rules import RATE_PRIOR_MATCHES, _shrunk_rate
    busy = float(_shrunk_rate(600.0, 6000.0, 0.05))            # 600 recent matches: 0.1 a second
    assert abs(busy - 0.1) / 0.1 < 0.02
    assert float(_shrunk_rate(0.0, 0.0, 0.002)) == 0.002       # nothing recent: the long-run rate
    quiet = float(_shrunk_rate(1.0, 6000.0, 0.002))            # one match in 100 min against 0.12 a minute
    assert 1.0 / 6000.0 < quiet < 0.002 and RATE_PRIOR_MATCHES == 10.0
