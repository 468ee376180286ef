"""Tier 1, rules: severity levels and configured regular expressions, each with a rate threshold.

Works from the first line (no warm-up); after warm-up a rule also needs its count to be improbable
under the rule's own learned rate, so a service that always logs some errors is not paged all day.
"""
import math
import re

import numpy as np

from ..parsing.batch import LEVEL_CRITICAL, LEVEL_ERROR, LEVEL_WARNING, level_code
from .base import Tier, TierResult
from .regex_safety import refusal
from .stats_kernels import count_upper_scores

# Score given when a rule just reaches its threshold; it grows to 100 at 16x the threshold.
FIRE_SCORE = 80.0
# [rules] max_scan_bytes when a rule does not say (the configspec's default).
DEFAULT_MAX_SCAN_BYTES = 4096
# A line of a burst that neither forms it nor doubles it scores at most this: the burst is flagged
# where it begins and as it grows, and its other lines keep its incident open without each being a
# line to read. A rule of threshold 1 (each line matters) flags every line.
FOLLOWER_SCORE = 60.0
# Surprise (p about 1e-7) at which a burst past warm-up fires below its rule's threshold.
LEARNED_FIRE = 70.0
# Most recent match times kept per (rule, source) for the sliding window.
MAX_TIMES_KEPT = 4096
# A slow burst (over learned_burst_windows windows) is judged at this many false flags a day per (rule, source)
# instead of a fixed p: a rule matching a few times an hour is tested a hundred times a day, not the thousands
# of a busy one, so a rarer count is already worth a look (a deadlock logged three times an hour, eight in ten
# minutes: p about 4e-7, 64). Never stricter than LEARNED_FIRE, never looser than SLOW_FIRE_FLOOR (p 1e-5).
SLOW_FLAGS_PER_DAY = 1e-3
SLOW_FIRE_FLOOR = 50.0
# ... and its count must reach SLOW_MIN_RATIO times its learned count over the span, at least SLOW_MIN_LINES
# (a retry storm of three or four lines and a usual one or two stay below it), at most learned_burst_min:
# a rare rule's burst is a handful of lines (seven deadlocks at x20 their rate never reach ten).
SLOW_MIN_RATIO = 10.0
SLOW_MIN_LINES = 6
# The rate a slow burst is judged against is the recent one (the last hundred windows: it follows the day)
# shrunk toward the long-run one (per span: most of a day), which weighs as this many matches. A rare rule's
# recent rate rests on a few matches: one busy hour, or a burst's own ramp, doubles it for two hours (a pool
# timeout burst at noon judged against 1.8 where the day's rate gave 1.0), and a quiet night takes it to a
# fraction of its usual one. A busy rule's hundreds of recent matches outweigh it.
RATE_PRIOR_MATCHES = 10.0


class Rule:
    """One counting rule: which lines match, and how many per window make a burst."""

    def __init__(self, name, threshold, window_seconds, min_level=0, pattern=None,
                 max_scan_bytes=DEFAULT_MAX_SCAN_BYTES):
        self.name = name
        self.threshold = int(threshold)
        self.window = float(window_seconds)
        self.min_level = min_level
        self.regex = compile_rule_pattern(name, pattern) if pattern else None
        self.max_scan_bytes = int(max_scan_bytes)
        self.scans_cut = 0   # lines longer than max_scan_bytes whose head alone was searched
        self._last = (None, None)   # (batch, its matches): score and learn ask for the same batch

    def matches(self, batch):
        """bool[n]: the lines this rule counts (searched once per batch)."""
        if self._last[0] is not batch:
            self._last = (batch, self._search(batch))
        return self._last[1]

    def _search(self, batch):
        hit = batch.level >= self.min_level if self.min_level else np.ones(batch.n, bool)
        if self.regex is None:
            return hit
        found = np.zeros(batch.n, bool)
        text = batch.buf.tobytes()
        search = self.regex.search
        starts, ends = batch.content_start.tolist(), batch.content_end.tolist()
        # Line by line, on a copy of its content: '^' and '$' are the line's own start and end, and
        # a greedy match cannot run into the next line and hide that line's match. At most
        # max_scan_bytes of it: an accepted pattern may be quadratic in what it reads.
        cap = self.max_scan_bytes
        for line in np.flatnonzero(hit).tolist():
            start, end = starts[line], ends[line]
            if end - start > cap:
                end = start + cap
                self.scans_cut += 1
            if search(text[start:end]):
                found[line] = True
        return hit & found


def excess_onset(times, rate):
    """When the lines ending at times[-1] began to exceed a learned rate (lines a second): the Poisson change
    point of most likelihood with the rate before it known. From each line k the m lines after it in the d
    seconds to the end fit a rate of their own against the learned one by m ln(m / (rate d)) - m + rate d;
    the best fit is the onset. A background line minutes before a burst adds a line and a long wait: it
    lowers the fit, and the span's first line is no longer the burst's start."""
    times = np.asarray(times, np.float64)
    m = (times.size - 1 - np.arange(times.size)).astype(np.float64)
    expected = max(rate, 1e-12) * np.maximum(times[-1] - times, 1e-3)
    fit = m * np.log(np.maximum(m, 1.0) / expected) - m + expected
    return float(times[int(np.argmax(np.where(m > 0, fit, 0.0)))])


def _crossing(counts, threshold):
    """True where a window count reaches threshold x 2^k (the burst forms or doubles)."""
    ratio = counts / np.asarray(threshold, np.float64)
    k = np.floor(np.log2(np.maximum(ratio, 1.0)))
    return (ratio >= 1.0) & (counts == np.ceil(threshold * 2.0 ** k))


class UnsafePattern(ValueError):
    """A [rules] pattern the config validator should have refused: it could stall a worker."""


def compile_rule_pattern(name, pattern):
    """Compile a rule's pattern for the batch buffer (bytes), refusing one that can backtrack
    catastrophically: defence in depth behind config/checks.py, which refuses it with its line."""
    problem = refusal(pattern)
    if problem:
        raise UnsafePattern("[rules.%s] pattern: %s" % (name, problem))
    return re.compile(pattern.encode())


def build_rules(tier1_settings, rules_section):
    """Severity rules from [detection][[tier1]] plus one pattern rule per [rules] subsection."""
    window = tier1_settings["window_seconds"]
    rules = []
    for level, key in ((LEVEL_CRITICAL, "critical_threshold"), (LEVEL_ERROR, "error_threshold"),
                       (LEVEL_WARNING, "warning_threshold")):
        if tier1_settings[key] > 0:
            rules.append(Rule(key.split("_")[0], tier1_settings[key], window, min_level=level))
    for name, rule in sorted((rules_section or {}).items()):
        rules.append(Rule(name, rule["threshold"], rule["window_seconds"],
                          min_level=level_code(rule.get("level", "")), pattern=rule["pattern"],
                          max_scan_bytes=rule.get("max_scan_bytes", DEFAULT_MAX_SCAN_BYTES)))
    return rules


class RulesTier(Tier):
    """Counts rule matches per (rule, source) in a sliding event-time window."""

    name = "t1"

    def __init__(self, settings, rules_section=None):
        super().__init__(settings)
        self.rules = build_rules(settings, rules_section)
        self.adaptive = bool(settings.get("adapt_to_learned_rate", True))
        self.learned_burst_min = int(settings.get("learned_burst_min", 10))
        # A slow burst (a few errors a minute for ten minutes) never packs learned_burst_min lines
        # into one window: past warm-up it is also counted over this many windows (1 = off).
        self.learned_burst_windows = int(settings.get("learned_burst_windows", 10)) if self.adaptive else 1
        self.recent = {}     # (rule name, source id) -> float64 array of recent match times
        self.learned = {}    # (rule name, source id) -> [decayed matches, decayed seconds]
        # The same, decayed per span of learned_burst_windows windows instead of per window (a memory of a
        # hundred spans): the long-run rate the slow test shrinks the recent one toward (RATE_PRIOR_MATCHES).
        self.span_learned = {}
        self.last_now = None

    def scans_cut(self):
        """Lines so far whose content was longer than their rule's max_scan_bytes (only grows)."""
        return sum(rule.scans_cut for rule in self.rules)

    def score(self, batch, ctx):
        scores = np.zeros(batch.n, np.float32)
        result = TierResult(scores)
        for rule in self.rules:
            for source, idx, counts, long_counts in self._window_counts(rule, batch, ctx):
                self._score_key(rule, source, idx, counts, ctx, result)
                if self.learned_burst_windows > 1:
                    self._score_slow_burst(rule, source, idx, long_counts, ctx, result)
        return result

    def _window_counts(self, rule, batch, ctx):
        """Yield (source, line indexes, matches within the window ending at each line, and (matches within the
        learned_burst_windows windows ending at it, the times of the recent and new matches, and the index of
        the first of those windows' matches in those times))."""
        hit = np.flatnonzero(rule.matches(batch))
        if hit.size == 0:
            return
        sources = batch.source_id[hit]
        for source in np.unique(sources):
            idx = hit[sources == source]
            times = np.maximum.accumulate(ctx.ts[idx])
            before = self.recent.get((rule.name, int(source)), np.empty(0))
            all_times = np.concatenate([before, times])
            ends = np.arange(before.size, all_times.size) + 1
            starts = np.searchsorted(all_times, times - rule.window, side="right")
            long_starts = np.searchsorted(all_times, times - rule.window * self.learned_burst_windows, side="right")
            yield int(source), idx, ends - starts, (ends - long_starts, all_times, long_starts)

    def _score_key(self, rule, source, idx, counts, ctx, result):
        mean = self._learned_mean(rule, source, ctx)
        over = counts >= rule.threshold
        surprise = None
        if mean is not None:
            surprise = count_upper_scores(counts.astype(np.float64), np.full(counts.size, mean), np.ones(counts.size),
                                          np.zeros(counts.size))
            # Past warm-up a burst far beyond the rule's own rate fires below the threshold too: a
            # service that logs three errors an hour is in trouble at twelve a minute.
            learned = (counts >= self.learned_burst_min) & (surprise >= LEARNED_FIRE) & ~over
        if not over.any() and (surprise is None or not learned.any()):
            result.scores[idx] = np.maximum(result.scores[idx], 40.0 * counts / rule.threshold)
            return
        base = np.where(over, rule.threshold, self.learned_burst_min) if mean is not None else rule.threshold
        ratio = np.maximum(counts / base, 1.0)
        fired = np.minimum(FIRE_SCORE + (100.0 - FIRE_SCORE) * np.log2(ratio) / 4.0, 100.0)
        if surprise is not None:
            # Past warm-up: the count must also be surprising given how often this rule matches.
            fired = np.where(surprise >= 40.0, fired, np.minimum(fired, surprise))
            over = over | learned
        if rule.threshold > 1:
            fired = np.where(_crossing(counts, base), fired, np.minimum(fired, FOLLOWER_SCORE))
        line_scores = np.where(over, fired, 40.0 * counts / rule.threshold).astype(np.float32)
        result.scores[idx] = np.maximum(result.scores[idx], line_scores)
        src = ctx.source_name(source)
        expected = "< %d per %gs" % (rule.threshold, rule.window)
        if mean is not None:
            expected += " (usually %.1f)" % mean
        for j in np.flatnonzero(line_scores >= 40.0):
            i = int(idx[j])
            result.reasons[i] = "%s rule: %d matching lines in %gs from %s" % (rule.name, counts[j], rule.window, src)
            result.expected[i] = expected
            result.observed[i] = "%d per %gs" % (counts[j], rule.window)

    def _score_slow_burst(self, rule, source, idx, long_window, ctx, result):
        """Past warm-up, flag a burst too slow to fill one window: over learned_burst_windows windows, a count
        of at least _slow_least lines that is improbable under the rule's rate learned before that span at its
        flag budget (_slow_fire). Flagged where it first becomes so and where it doubles; its other lines
        score FOLLOWER_SCORE (they keep its incident open)."""
        span_means = self._span_means(rule, source, idx, long_window[0], ctx)
        if span_means is None:
            return
        long_counts, all_times, long_starts = long_window
        span = rule.window * self.learned_burst_windows
        counts = long_counts.astype(np.float64)
        least = self._slow_least(span_means)
        fire = self._slow_fire(span_means / self.learned_burst_windows, rule.window)
        surprise = count_upper_scores(counts, span_means, np.ones(counts.size), np.zeros(counts.size))
        slow = (long_counts >= least) & (surprise >= fire)
        if not slow.any():
            return
        ratio = np.maximum(counts / least, 1.0)
        fired = np.minimum(FIRE_SCORE + (100.0 - FIRE_SCORE) * np.log2(ratio) / 4.0, 100.0)
        # Flagged where the burst first becomes improbable (not merely where it reaches its least count,
        # which a burst may pass while still probable) and where it doubles from there.
        improbable = self._first_improbable(span_means, least, fire)
        fired = np.where(_crossing(counts, improbable), fired, np.minimum(fired, FOLLOWER_SCORE))
        line_scores = np.where(slow, fired, 0.0).astype(np.float32)
        src = ctx.source_name(source)
        for j in np.flatnonzero(line_scores > result.scores[idx]):
            i = int(idx[j])
            result.scores[i] = line_scores[j]
            result.reasons[i] = "%s rule: %d matching lines in %gs from %s" % (rule.name, long_counts[j], span, src)
            result.expected[i] = "usually %.1f per %gs" % (span_means[j], span)
            result.observed[i] = "%d per %gs" % (long_counts[j], span)
            # One problem with what opened an incident at its start: where the excess began, not the span's
            # first line (a background error minutes before the burst is not its onset).
            span_times = all_times[long_starts[j]:long_starts[j] + long_counts[j]]
            result.began[i] = excess_onset(span_times, span_means[j] / span)

    def _span_means(self, rule, source, idx, long_counts, ctx):
        """Each line's learned count over learned_burst_windows windows, without the lines of its span that
        were learned already (earlier batches'): a burst spread over batches is judged against the rate
        before it, not one it raised itself (a rule matching three times an hour learns seven lines of a
        ten-minute burst as doubling its rate). The recent rate (per window: it follows the day) is shrunk
        toward the long-run one (per span) by RATE_PRIOR_MATCHES (_shrunk_rate). None before warm-up."""
        if self._learned_mean(rule, source, ctx) is None:   # span_learned is kept beside learned, key for key
            return None
        learned_in_span = np.maximum(long_counts - np.arange(1, idx.size + 1), 0)
        recent_m, recent_s = self.learned[(rule.name, source)]
        long_m, long_s = self.span_learned[(rule.name, source)]
        recent_m = np.maximum(recent_m - learned_in_span, 0.0)
        long_rate = np.maximum(long_m - learned_in_span, 0.0) / max(long_s, 1.0)
        before = _shrunk_rate(recent_m, recent_s, long_rate) * rule.window
        return np.maximum(before, 1e-3) * self.learned_burst_windows

    def _slow_least(self, span_means):
        """Fewest lines a slow burst needs, per span mean: SLOW_MIN_RATIO times the span's learned count,
        within [SLOW_MIN_LINES, learned_burst_min]."""
        scaled = np.maximum(SLOW_MIN_LINES, np.ceil(SLOW_MIN_RATIO * np.asarray(span_means, np.float64)))
        return np.minimum(self.learned_burst_min, scaled).astype(np.int64)

    @staticmethod
    def _slow_fire(means, window):
        """Surprise a slow burst must reach, per learned mean a window: SLOW_FLAGS_PER_DAY over the tests a
        day (one per match at the learned rate), within [SLOW_FIRE_FLOOR, LEARNED_FIRE]."""
        tests_a_day = np.maximum(np.asarray(means, np.float64) / window * 86400.0, 1.0)
        return np.clip(-10.0 * np.log10(SLOW_FLAGS_PER_DAY / tests_a_day), SLOW_FIRE_FLOOR, LEARNED_FIRE)

    @staticmethod
    def _first_improbable(means, least, fire):
        """Per line, the smallest count from least up (to 64 x least) that scores fire against its mean; 64 x
        least where none does. A bisection over every line at once (a count's surprise grows with it): a
        search per line cost 55 us, seconds a batch in an error storm, when the slow test is busiest."""
        means = np.atleast_1d(np.asarray(means, np.float64))
        lo = np.broadcast_to(np.asarray(least, np.float64), means.shape).copy()
        hi = 64.0 * lo
        fire = np.broadcast_to(np.asarray(fire, np.float64), means.shape)
        ones, zeros = np.ones(means.size), np.zeros(means.size)
        while (lo < hi).any():
            mid = np.floor((lo + hi) / 2.0)
            reached = count_upper_scores(mid, means, ones, zeros) >= fire
            hi = np.where(reached, mid, hi)
            lo = np.where(reached, lo, np.minimum(mid + 1.0, hi))
        return lo.astype(np.int64)

    def _learned_mean(self, rule, source, ctx):
        if not (self.adaptive and ctx.warm):
            return None
        matches, seconds = self.learned.get((rule.name, source), (0.0, 0.0))
        if seconds < 10 * rule.window:
            return None
        return max(matches / seconds * rule.window, 1e-3)

    def learn(self, batch, ctx, weights):
        elapsed = 0.0 if self.last_now is None else max(ctx.now - self.last_now, 0.0)
        self.last_now = ctx.now
        for rule in self.rules:
            self._decay(rule, elapsed, batch)
            kept = rule.window * self.learned_burst_windows
            for source, idx, _counts, _long in self._window_counts(rule, batch, ctx):
                key = (rule.name, source)
                times = np.concatenate([self.recent.get(key, np.empty(0)), np.maximum.accumulate(ctx.ts[idx])])
                self.recent[key] = times[times > ctx.now - kept][-MAX_TIMES_KEPT:]
                for learned in (self.learned, self.span_learned):
                    learned.setdefault(key, [0.0, 0.0])[0] += float(weights[idx].sum())

    def _decay(self, rule, elapsed, batch):
        sources = set(np.unique(batch.source_id).tolist()) | {s for (r, s) in self.learned if r == rule.name}
        for learned, per in ((self.learned, rule.window), (self.span_learned, rule.window * self.learned_burst_windows)):
            keep = (1.0 - self.learning_rate) ** (elapsed / per)
            for source in sources:
                entry = learned.setdefault((rule.name, source), [0.0, 0.0])
                entry[0] *= keep
                entry[1] = entry[1] * keep + elapsed

    def state(self):
        return {"learned": [[r, s, m, t] for (r, s), (m, t) in sorted(self.learned.items())],
                "span_learned": [[r, s, m, t] for (r, s), (m, t) in sorted(self.span_learned.items())],
                "last_now": self.last_now}

    def load_state(self, state):
        self.learned = {(r, int(s)): [float(m), float(t)] for r, s, m, t in state.get("learned", [])}
        # A state saved before rates were learned per span starts them from the per-window ones.
        spans = state.get("span_learned", state.get("learned", []))
        self.span_learned = {(r, int(s)): [float(m), float(t)] for r, s, m, t in spans}
        last = state.get("last_now")
        self.last_now = float(last) if last is not None and math.isfinite(last) else None


def _shrunk_rate(recent_matches, recent_seconds, long_rate):
    """Matches a second: the recent count over its seconds with RATE_PRIOR_MATCHES matches at the long-run
    rate added (a gamma prior's posterior mean); the long-run rate itself while nothing was learned recently."""
    long_rate = np.maximum(np.asarray(long_rate, np.float64), 1e-9)
    prior_seconds = RATE_PRIOR_MATCHES / long_rate
    return (np.asarray(recent_matches, np.float64) + RATE_PRIOR_MATCHES) / (recent_seconds + prior_seconds)
