"""Tier 2, drops and spikes of a template against its own recent level (the hour before, same day).

tier2_volume.VolumeTier judges drops against a seasonal forecast: a level times hour-of-day and
day-of-week factors. That forecast is weak while the seasons are young (a daemon started mid-day on a
service, its first days): it lags the day's ramps, learns a wide error from them, and a service down
to a quarter of its traffic for an hour hides in that error. RecentLevel asks a plainer question of
each key: are its last minutes far below its own level over the hour before them? The reference is
deseasonalised by the key's hour-of-day factors as far as they are known, so an evening decline the
seasons have seen is expected; the test's width is the key's dispersion, the sampling error of both
stretches (the reference is short evidence) and a learned error of this very forecast (how far the
level usually moves within the hour), so a key whose rate wanders is judged wider. A drop must also
hold against the hour's median minute where that is lower (a spike in the hour before is no level).
Running sums over a ring of the last buckets keep the per-bucket cost to a few passes over the keys.
Spikes hide the same way at night (the young hour factors forecast the night far above what it sees,
with a wide error): tier2_volume also judges a steady template's last 5/15 minutes, its lines as they
come, against the median level of the hour before (spike_reference) with the same learned error.

Neighbours: tier2_volume.py (pushes each closing bucket's template counts, chooses the steady
templates judged, holds the drops found and confirms them with still_low), stats_kernels
(count_lower_score, the tail test), tests/unit/test_tier2_recent.py.
"""
import math

import numpy as np

from . import volume_kernels as VK
from .stats_kernels import count_lower_score

# Windows (in buckets) judged against the recent level: a quarter of an hour is enough to be sure of
# a template at a quarter of its traffic, five minutes of a busy one. Both are drop windows of
# tier2_volume.DROP_WINDOWS too.
RECENT_WINDOWS = (5, 15)
WINDOW_ARRAY = np.array(RECENT_WINDOWS, np.int64)
# The forecast's squared relative error before it is learned, and its floor: a recent level is never
# trusted to better than 15 % over the next quarter of an hour (traffic moves within an hour).
START_REL2 = 0.15 ** 2
MIN_REL2 = 0.15 ** 2
# The error is learned this many times slower than a level: the windows of consecutive buckets
# overlap (14 of 15 buckets), so at the learning rate it would rest on a handful of independent
# windows, and one campaign or one evening would set it.
OVERLAP_SLOWER = 4.0
# A window this far off its forecast (in units of its spread) teaches the error ten times slower
# still, and no window teaches more than that far: a drop must not widen the test that judges it.
USUAL_SIGMAS = 3.0
SLOWER = 10.0
# Below this many lines over the reference a key is too quiet to be judged this way.
MIN_REFERENCE_LINES = 30.0
# A spike is judged against the median of the reference's blocks of this many buckets (spike_reference),
# whose sampling variance is this many times the mean's (a normal sample's median: pi / 2).
SPIKE_BLOCK = RECENT_WINDOWS[0]
MEDIAN_VARIANCE = math.pi / 2.0
# A block of the reference below this share of its median's forecast (and beyond its sampling error) is a drop.
DROP_BLOCK_SHARE = 0.5
# A template whose per-bucket count varies less than this share of a Poisson count's (variance / mean)
# is a timer (a stats line, a heartbeat), not traffic: it joins no pool (tier2_volume._pool_members).
CLOCK_DISPERSION = 0.5


class RecentLevel:
    """Per key: a ring of the last buckets' counts and seasonal factors, running sums over the windows
    and the reference, and the learned squared relative error of the recent-level forecast over the
    longest window."""

    def __init__(self, reference_buckets, size=8):
        self.reference = int(reference_buckets)
        self.ring = self.reference + RECENT_WINDOWS[-1]
        self.obs = np.zeros((size, self.ring))
        self.season = np.zeros((size, self.ring))
        self.filled = np.zeros(size, np.int64)     # buckets pushed since the key's ring was last emptied
        self.rel2 = np.full(size, START_REL2)
        self.last_bucket = None
        self._sums()

    def _sums(self):
        """Work the running sums out from the ring (after a load, a growth, a clear); the bucket after
        last_bucket is the next pushed."""
        last = self.last_bucket if self.last_bucket is not None else -1
        self.win_obs = np.zeros((self.size, len(RECENT_WINDOWS)))
        self.win_season = np.zeros((self.size, len(RECENT_WINDOWS)))
        for i, width in enumerate(RECENT_WINDOWS):
            slots = self._slots(last, 0, width)
            self.win_obs[:, i] = self.obs[:, slots].sum(axis=1)
            self.win_season[:, i] = self.season[:, slots].sum(axis=1)
        slots = self._slots(last, RECENT_WINDOWS[-1], self.ring)
        self.ref_obs = self.obs[:, slots].sum(axis=1)
        self.ref_season = self.season[:, slots].sum(axis=1)

    def _slots(self, newest, first, stop):
        """The ring slots of the buckets first to stop - 1 before `newest` (0: newest itself), newest first."""
        return (newest - np.arange(first, stop)) % self.ring

    @property
    def size(self):
        return self.obs.shape[0]

    def ensure(self, n):
        if n <= self.size:
            return
        new = max(n, 2 * self.size)
        for name, fill in (("obs", 0.0), ("season", 0.0), ("filled", 0), ("rel2", START_REL2)):
            arr = getattr(self, name)
            grown = np.full((new,) + arr.shape[1:], fill, arr.dtype)
            grown[: arr.shape[0]] = arr
            setattr(self, name, grown)
        self._sums()

    def clear(self):
        """Forget the recent buckets (a skipped gap): the reference starts again."""
        self.obs[:] = 0.0
        self.season[:] = 0.0
        self.filled[:] = 0
        self._sums()

    def push(self, bucket, counts, season):
        """Store the closing bucket's count and seasonal factor of every key, judging none."""
        self.close(bucket, counts, season, np.ones(0), np.zeros(0, np.bool_), 0.0, 100.0)

    def close(self, bucket, counts, season, disp, judge, learning_rate, min_score):
        """Push the closing bucket (each key's count and seasonal factor), then judge the keys that
        may be judged (judge: steady ones; disp: their dispersion, variance / mean) and learn ->
        (score, window) per key, score 0 where below min_score or not judged. After a jump (time
        walked by the hour through a long silence) the ring starts again."""
        if self.last_bucket is not None and bucket != self.last_bucket + 1:
            self.clear()
        self.ensure(counts.shape[0])
        best = np.empty(self.size)
        best_window = np.empty(self.size, np.int64)
        rate = learning_rate / OVERLAP_SLOWER
        VK.recent_close(self.obs, self.season, self.win_obs, self.win_season, self.ref_obs, self.ref_season,
                        self.filled, self.rel2, np.ascontiguousarray(counts, np.float64),
                        np.ascontiguousarray(season, np.float64), np.ascontiguousarray(judge, np.bool_),
                        np.ascontiguousarray(disp, np.float64), int(bucket), WINDOW_ARRAY, rate, rate / SLOWER,
                        USUAL_SIGMAS, MIN_REL2, MIN_REFERENCE_LINES, best, best_window)
        self.last_bucket = bucket
        return self.confirm(best, best_window, disp, min_score)

    def confirm(self, best, best_window, disp, min_score):
        """The scores recent_close left (best, best_window; changed in place), those at min_score or
        more judged again against the robust level, the others 0 -> (best, best_window)."""
        if not best.size or best.max() < min_score:
            best[:] = 0.0   # the usual bucket: nothing to confirm
            return best, best_window
        # A drop is confirmed against the robust level (a median: rare, so worked out for these only).
        for key in np.flatnonzero(best >= min_score).tolist():
            best[key] = 0.0
            robust = self.robust_level(key)
            d = max(float(disp[key]), 1.0)
            rel2 = self.rel2[key] + d / max(self.ref_obs[key], 1.0)
            for i, width in enumerate(RECENT_WINDOWS):
                s = count_lower_score(self.win_obs[key, i], robust * self.win_season[key, i], d, rel2)
                if s > best[key]:
                    best[key], best_window[key] = s, width
        best[best < min_score] = 0.0
        return best, best_window

    def spike_reference(self, keys, disp):
        """(level, reference lines) per key for judging a spike: the median over the reference's blocks of
        SPIKE_BLOCK buckets of each block's deseasonalised count per bucket (0 where the ring is not full, the
        reference held fewer than MIN_REFERENCE_LINES or a drop; disp: the keys' dispersion). A median, not
        the mean: a spike in the hour before (shorter than half of it) would raise the mean and hide the next;
        of blocks, not of single buckets, so that a quiet key's median is not a whole count off its level. A
        key back from a drop in the hour before is back to its level, no spike: a reference with a block
        below DROP_BLOCK_SHARE of the median's forecast (beyond three deviations of its count) is none (a
        silence of most of the hour lowers the median itself: VolumeTier._dropped_lately keeps those out)."""
        keys = np.asarray(keys, np.int64)
        blocks = self.reference // SPIKE_BLOCK
        if self.last_bucket is None or not keys.size or not blocks:
            return np.zeros(keys.size), np.zeros(keys.size)
        slots = self._slots(self.last_bucket, RECENT_WINDOWS[-1], RECENT_WINDOWS[-1] + blocks * SPIKE_BLOCK)
        obs = self.obs[np.ix_(keys, slots)].reshape(keys.size, blocks, SPIKE_BLOCK).sum(axis=2)
        season = self.season[np.ix_(keys, slots)].reshape(keys.size, blocks, SPIKE_BLOCK).sum(axis=2)
        per_bucket = obs / np.maximum(season, 1e-9)
        level = np.median(per_bucket, axis=1)
        exp = level[:, None] * season
        low = (obs < DROP_BLOCK_SHARE * exp) & (obs + 3.0 * np.sqrt(np.asarray(disp)[:, None] * exp) < exp)
        dropped = low.any(axis=1)
        lines = self.ref_obs[keys]
        usable = (self.filled[keys] >= self.ring) & (lines >= MIN_REFERENCE_LINES) & ~dropped
        return np.where(usable, level, 0.0), np.where(usable, lines, 0.0)

    def ramp_shortfall(self, keys, level, disp):
        """Per key, the share (DROP_BLOCK_SHARE to 1) of its spike level (spike_reference's: level; disp: the
        keys' dispersion) that the buckets since the reference reached: the median over the last
        RECENT_WINDOWS[-1] closed buckets of each one's deseasonalised count, against the level, where it is
        below it beyond the median's sampling error (1 elsewhere). The level is carried to the open bucket by
        the hour factors, young ones learned from a day or two: a Saturday as flat as its afternoon, after a
        Friday whose evening doubled, would be forecast at the Friday's ramp, its five-fold spike at three
        times that, short of the test. A median, not the sum: the spike's first minutes do not raise it
        (half the buckets); never below DROP_BLOCK_SHARE: a template below half its level is in a drop, and
        its return to the level is no spike."""
        keys = np.asarray(keys, np.int64)
        width = RECENT_WINDOWS[-1]
        out = np.ones(keys.size)
        if self.last_bucket is None or not keys.size:
            return out
        slots = self._slots(self.last_bucket, 0, width)
        obs, season = self.obs[np.ix_(keys, slots)], self.season[np.ix_(keys, slots)]
        median = np.median(obs / np.maximum(season, 1e-9), axis=1)
        exp = level * season.sum(axis=1)
        noise = 3.0 * np.sqrt(MEDIAN_VARIANCE * np.asarray(disp) * exp)
        short = (level > 0) & (median * season.sum(axis=1) + noise < exp)
        out[short] = np.clip(median[short] / level[short], DROP_BLOCK_SHARE, 1.0)
        return out

    def source_reference(self, source_of, n_sources):
        """Each source's recent level per bucket: the median over the reference's blocks of SPIKE_BLOCK buckets
        of the lines of its keys (source_of: each key's source), 0 where the ring is not full or it held fewer
        than MIN_REFERENCE_LINES. Not deseasonalised: the site's surge is measured against the hour before."""
        out = np.zeros(n_sources)
        blocks = self.reference // SPIKE_BLOCK
        n = source_of.size
        if self.last_bucket is None or not n or not blocks or self.filled[:n].max(initial=0) < self.ring:
            return out
        slots = self._slots(self.last_bucket, RECENT_WINDOWS[-1], RECENT_WINDOWS[-1] + blocks * SPIKE_BLOCK)
        summed = np.zeros((n_sources, slots.size))
        np.add.at(summed, source_of, self.obs[:n][:, slots])
        level = np.median(summed.reshape(n_sources, blocks, SPIKE_BLOCK).sum(axis=2), axis=1) / SPIKE_BLOCK
        return np.where(summed.sum(axis=1) >= MIN_REFERENCE_LINES, level, 0.0)

    def closed_seasons(self, keys, width):
        """Each key's seasonal factors of the last closed buckets summed: column n is the sum over the last n
        (n < width), the part of a window of `width` buckets ending in the open bucket that the ring holds."""
        keys = np.asarray(keys, np.int64)
        out = np.zeros((keys.size, width))
        if self.last_bucket is not None and width > 1:
            slots = self._slots(self.last_bucket, 0, width - 1)
            np.cumsum(self.season[np.ix_(keys, slots)], axis=1, out=out[:, 1:])
        return out

    @staticmethod
    def spike_rel2(rel2, disp, reference_lines):
        """The squared relative error of a spike's forecast (spike_reference): the learned error of the recent
        level and the median's sampling error, MEDIAN_VARIANCE times the mean's (disp / reference lines)."""
        return rel2 + MEDIAN_VARIANCE * disp / np.maximum(reference_lines, 1.0)

    def reference_level(self):
        """Each key's deseasonalised count per bucket over the reference (the buckets before the
        longest window), and the lines the reference held."""
        return self.ref_obs / np.maximum(self.ref_season, 1e-9), self.ref_obs

    def robust_level(self, key):
        """A key's recent level for judging a drop: the reference's mean per bucket, or its median
        (deseasonalised) where that is lower. A spike in the hour before (a scraper gone, a campaign
        over) raises the mean, and the key back at its usual volume would be a drop against it; it
        moves the median only once it fills half the hour."""
        mean = self.ref_obs[key] / max(self.ref_season[key], 1e-9)
        slots = self._slots(self.last_bucket, RECENT_WINDOWS[-1], self.ring)
        factors = self.season[key, slots]
        per_bucket = self.obs[key, slots] / np.where(factors > 0, factors, 1.0)
        return min(mean, float(np.median(per_bucket)))

    def window(self, bucket, key, width):
        """(lines, summed seasonal factor) of one key over its last `width` buckets."""
        slots = self._slots(bucket, 0, width)
        return float(self.obs[key, slots].sum()), float(self.season[key, slots].sum())

    @staticmethod
    def score(obs, expected, disp, reference_lines, rel2):
        """Drop score of `obs` lines against a recent-level forecast: the level's own sampling error
        (disp / reference lines, on the log scale) adds to the learned error."""
        return count_lower_score(obs, expected, disp, rel2 + disp / max(reference_lines, 1.0))

    def still_low(self, bucket, key, level, reference_lines, disp, rel2, widths, min_score):
        """Whether a key is still low against the level it had when its drop was first seen, over any
        of the given windows (its last buckets)."""
        for width in widths:
            obs, factor = self.window(bucket, key, width)
            if self.score(obs, level * factor, disp, reference_lines, rel2) >= min_score:
                return True
        return False

    def pool_reference(self, keys, disp):
        """The recent level of a pool of keys (a source's steady templates) as it is now: (keys, level,
        reference lines, dispersion) of those with a full ring and lines in their reference, or None.
        The levels are the keys' reference means, scaled down together where the pool's median minute
        (deseasonalised) is lower than their sum: a spike in the hour before is no level (see
        robust_level). The pool's median, not each key's: a key that comes in clumps has most minutes
        below its mean, and the sum of such medians is no level of the sum."""
        keys = np.asarray(keys, np.int64)
        keys = keys[(keys < self.size)]
        keys = keys[(self.filled[keys] >= self.ring) & (self.ref_obs[keys] > 0)]
        if not keys.size or self.last_bucket is None:
            return None
        means = self.ref_obs[keys] / np.maximum(self.ref_season[keys], 1e-9)
        slots = self._slots(self.last_bucket, RECENT_WINDOWS[-1], self.ring)
        expected = (means[:, None] * self.season[np.ix_(keys, slots)]).sum(axis=0)
        seen = self.obs[np.ix_(keys, slots)].sum(axis=0)
        ratio = np.median(seen[expected > 0] / expected[expected > 0]) if (expected > 0).any() else 1.0
        disp = np.maximum(np.asarray(disp, float)[keys], 1.0)
        return keys, means * min(1.0, float(ratio)), self.ref_obs[keys].copy(), disp

    def pool_window(self, bucket, reference, width):
        """(lines, forecast, dispersion) of a pool (pool_reference) over its last `width` buckets. The
        dispersion is that of its keys' counts all moving together (the variance of the sum is the square
        of the sum of their deviations): the templates of one service are often one request's lines (its
        start and its end, the steps of an order), so two of them are not twice the evidence."""
        keys, levels, _lines, disp = reference
        slots = self._slots(bucket, 0, width)
        obs = float(self.obs[np.ix_(keys, slots)].sum())
        exp_each = levels * self.season[np.ix_(keys, slots)].sum(axis=1)
        exp = float(exp_each.sum())
        if exp <= 0:
            return obs, 0.0, 1.0
        return obs, exp, max(float(np.sqrt(disp * exp_each).sum() ** 2 / exp), 1.0)

    def state(self):
        """Only the learned error: the ring holds the last hour before the state was saved, and a
        restored tier skips the time it was down (tier2_volume._skip_gap), which empties it anyway."""
        return {"rel2": self.rel2.tolist()}

    def load_state(self, state):
        """Restore the learned error (none in a state saved by an older release); the ring fills again."""
        rel2 = np.asarray(state.get("rel2", []) if state else [], float)
        self.ensure(rel2.size)
        self.rel2[: rel2.size] = rel2

    def export_row(self, key):
        return {"recent_rel2": float(self.rel2[key])} if key < self.size else {}

    def import_row(self, key, rows):
        """A handed-over template keeps its learned error; its ring (the old owner's time) starts empty."""
        self.ensure(key + 1)
        if "recent_rel2" in rows:
            self.rel2[key] = float(rows["recent_rel2"])
        self.obs[key] = 0.0
        self.season[key] = 0.0
        self.filled[key] = 0
        self._sums()


class SiteRelative:
    """Per source: the learned squared error of its pool's recent-level forecast (RecentLevel.pool_window
    over the longest window) relative to the rest of the site's, and how many windows it was learned from.
    A shop's traffic moves by a third within an hour (a campaign, the evening, a slow afternoon), and its
    services move together: against its own recent level a service at a quarter of its traffic is a few
    such errors low, while against the rest of the site, which moved with it, it is many. Learned from
    disjoint windows (one per quarter hour) as tier2_long's blocks are."""

    def __init__(self, size=8):
        self.rel2 = np.full(size, START_REL2)
        self.learned = np.zeros(size, np.int64)

    def ensure(self, n):
        if n <= self.rel2.size:
            return
        new = max(n, 2 * self.rel2.size)
        self.rel2 = np.concatenate([self.rel2, np.full(new - self.rel2.size, START_REL2)])
        self.learned = np.concatenate([self.learned, np.zeros(new - self.learned.size, np.int64)])

    @staticmethod
    def log_ratio(obs, exp, rest_obs, rest_exp):
        """A pool's log ratio to its forecast less the rest of the site's to theirs."""
        return math.log((obs + 0.5) / (exp + 0.5)) - math.log((rest_obs + 0.5) / (rest_exp + 0.5))

    def learn(self, source, z, noise, rate):
        """Learn one window's relative log ratio z (its sampling noise, noise, taken off) at rate, ten times
        slower beyond USUAL_SIGMAS spreads and winsorised there, as RecentLevel's error is (a drop must not
        widen the test that judges it)."""
        self.ensure(source + 1)
        r2 = self.rel2[source]
        unusual = z * z > USUAL_SIGMAS ** 2 * (r2 + noise)
        target = min(max(z * z - noise, MIN_REL2), USUAL_SIGMAS ** 2 * r2)
        self.rel2[source] += (rate / SLOWER if unusual else rate) * (target - r2)
        self.learned[source] += 1

    def error(self, source, rate):
        """The source's learned relative error once learned from twice its time constant of windows (at
        rate), else None: it starts at the floor, too narrow to trust."""
        if source >= self.learned.size or self.learned[source] < 2.0 / rate:
            return None
        return float(self.rel2[source])

    def state(self):
        return {"rel2": self.rel2.tolist(), "learned": self.learned.tolist()}

    def load_state(self, state):
        state = state or {}
        rel2 = np.asarray(state.get("rel2", []), float)
        self.ensure(rel2.size)
        self.rel2[: rel2.size] = rel2
        self.learned[: rel2.size] = np.asarray(state.get("learned", [0] * rel2.size), np.int64)[: rel2.size]
