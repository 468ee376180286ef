"""Tier 2, volume: per-template and per-source counts in event-time buckets against a learned baseline.

The baseline is an exponentially weighted level per key times a seasonal factor per key
(hour of day, day of week; each shrunk towards 1 until enough days are seen), with a learned
over-dispersion. Spikes score the lines that make them, when they are both significant and at
least spike_min_ratio times the expectation (against its level, and for a template against its
share of its source too, which has its own hour-of-day and day-of-week factors); drops and silence
become Findings when a bucket closes; a steady template's drop is also judged against its own level
over the hour before (tier2_recent.py), which finds drops the young seasons of a model's first days
hide. Counts are judged by quasi-Poisson tail probabilities (stats_kernels.py). Gaps that are not the sources' doing (the time a restored daemon was down, every
busy source quiet together) are skipped, not judged: see _skip_gap.
"""
import math

import numpy as np

from . import tier2_recent as TR
from . import volume_kernels as VK
from .base import Finding, Tier, TierResult
from .ranks import running_counts, unique_lines
from .stats_kernels import count_lower_score, count_upper_mixed_scores, count_upper_scores
from .tier2_clock import ClockSilence, clock_like
from .tier2_hosts import HostCounts
from .tier2_load import MAX_RATIO as LOAD_MAX_RATIO
from .tier2_load import MIN_BLOCKS as LOAD_MIN_BLOCKS
from .tier2_load import LoadFollow, rest_of_site
from .tier2_long import DROP_MAX_RATIO, LongWindows, cusum_threshold
from .tier2_recent import RecentLevel
from .tier2_site import SITE_QUORUM, SiteLoad
from .tier2_values import ValueKeys

# Windows (in buckets) over which drops are judged: fast for busy keys, longer for quiet ones.
DROP_WINDOWS = (1, 5, 15)
# Spikes are judged over one bucket and over this many (the line's bucket and the ones before it): a
# key at five times its forecast for minutes is certain over five buckets long before one bucket of a
# quiet key clears the spike_min_ratio floor at the low end of its sampling error (see _windowed).
SPIKE_WINDOW = 5
# A busy key whose short window is already spike_min_ratio times its forecast is judged over this many
# buckets too (the drop windows' ring holds them): a firewall template at a line a minute scanned at seven
# times its rate has 35-40 lines in five minutes, too few for their ratio to be certain against a forecast
# of six (and short of the floor at their low end once the level has moved), but a quarter of an hour of
# them is (see VolumeTier._long_window_scores).
LONG_SPIKE_WINDOW = 15
_WINDOWS = np.array(DROP_WINDOWS, np.int64)
# Residuals beyond this many standard deviations are clipped before they reach the baseline.
CLIP_SIGMAS = 4.0
# Weight (in days) of "no daily pattern" against the hours seen: after one day, two thirds of the
# day's shape is trusted (rush hours are the rule; a forecast that lags them learns a large error).
HOUR_PRIOR_DAYS = 0.5
DAY_PRIOR_WEEKS = 2.0   # and of "no weekly pattern" against the weekdays seen
# Longest event-time gap walked bucket by bucket (hourly past a day); beyond it time jumps.
MAX_GAP_DAYS = 8
# An unusual bucket (volume_kernels.USUAL_SIGMAS off its forecast) teaches level, dispersion and
# forecast error this many times slower than an ordinary one: a spike or a drop lasting an hour must
# not teach the model that it is normal (nor leave a baseline that the recovery then contradicts).
DISPERSION_SLOWER = 10.0
# Seasonal tables forget this many times slower than a level: at the default learning rate, over
# about a week of buckets.
SEASON_SLOWER = 100.0
# A bucket far above its forecast in which more than this share of a key's lines were anomalies does
# not teach its seasons (anomalies are learned at anomaly_learning_weight: a learned count short of
# the raw one shows them).
ANOMALOUS_SHARE = 0.1
# A volume forecast is never trusted to better than this relative error, however steady the key.
MIN_RELATIVE_ERROR = 0.1
# A value key is judged against the rest of its template (VolumeTier._value_share_scores) only where
# that rest had at least this many lines in the window: fewer say too little about the share.
VALUE_SHARE_MIN_OTHERS = 10
# A template judged by its share of its source over a window (VolumeTier._share_window_scores) must also be
# at least this many times its own level's forecast there: its share triples as well when the rest of its
# source falls to a third, which is their drop, not its spike. Twice: what a rush hour or a campaign does to
# a level (spike_min_ratio's reason) and a template that is not itself up by that is no spike of its own.
SHARE_SPIKE_MIN_LEVEL_RATIO = 2.0
# The reason of a template's spike against its share of its source (a bucket's or a window's)
SHARE_SPIKE_REASON = "volume spike of template %r against the rest of its source: %d lines in %gs"
# The reason of a template's spike against its own level over the hour before (_recent_spike_scores)
RECENT_SPIKE_REASON = "volume spike of template %r against its level over the hour before: %d lines in %gs"
# How a key's lines are judged over the spike window (_spike_scores -> _window_scores): not at all (a
# young or job-like key), as a busy key (many lines: a normal floor) or as a sporadic one (a handful).
WINDOW_NONE, WINDOW_BUSY, WINDOW_SPORADIC = 0, 1, 2
# A key non-zero in fewer buckets than this is sparse: its counts come in clumps (a job's lines).
SPARSE_FRACTION = 0.5
# A sparse key's usual count at an hour of day is trusted once that hour was seen for this share of
# an hour (summed over days, decayed).
HOUR_RATE_MIN_SHARE = VK.HOUR_MIN_SHARE
# An hour in which a key's usual count is below this share of its busiest hour's is a quiet hour; a
# key quiet in most of the hours it was seen in is intermittent (a nightly job).
QUIET_HOUR_SHARE = 0.1
# A source is judged over long drop windows (tier2_long.py) once every hour of day they span was seen for
# this many days' worth of buckets (decayed: a second day's hour brings a little under 2). An hour not
# seen in full has no shape yet (a first night lower than the day's shape says is a drop of every quarter
# of it); once seen, the first days' misfit is in the blocks' learned error (LongWindows.learn). 1.5 kept
# the second day from judging any drop in the first half of each hour, and the sequential test's evidence
# of a run of low quarters started again at every hour (postfix at a fifth of its mail for 33 min: none).
LONG_MIN_DAYS = 1.0
# A source judged over long windows by its clumps (_clumps) is judged only in hours whose usual count is at least
# this share of its long-run mean (VolumeTier._busy_hours). Quieter, a young hour-of-day factor shrunk towards 1
# (HOUR_PRIOR_DAYS) is itself a drop: at a fifth of the mean, two days seen forecast nearly twice what comes. Not
# the mean itself: a drop lowers its own hour's usual count, by a quarter over three days for a drop to a fifth.
BUSY_HOUR_SHARE = 0.5
# Said of a long window's drop found against the source's forecast from the rest of the site (tier2_load.py)
LOAD_REASON = ", against its share of the rest of the site's"
# A template is judged against its recent level (tier2_recent.py) once this many hours of the day
# have been seen for HOUR_RATE_MIN_SHARE of an hour since it settled.
RECENT_MIN_HOURS = 4


class KeyBaseline:
    """Level, dispersion and recent counts for a growing set of keys (templates or sources)."""

    def __init__(self, size=64):
        self.level = np.zeros(size)       # deseasonalised mean count per bucket
        self.phi = np.ones(size)          # variance / mean
        self.rel2 = np.full(size, MIN_RELATIVE_ERROR ** 2)  # squared relative forecast error
        self.nonzero = np.zeros(size)     # share of buckets with any line
        self.clump = np.ones(size)        # mean of x^2 / x over non-zero buckets (compound Poisson)
        self.total = np.zeros(size)       # deseasonalised lines ever learned: total / age is the long-run mean
        self.age = np.zeros(size, np.int64)  # buckets since first seen
        self.open_raw = np.zeros(size)    # counts in the open bucket, all lines
        self.open_learn = np.zeros(size)  # counts in the open bucket, weighted for learning
        self.obs_win = np.zeros((size, DROP_WINDOWS[-1]))   # ring of the last buckets
        self.exp_win = np.zeros((size, DROP_WINDOWS[-1]))
        self.obs_sum = np.zeros((size, len(DROP_WINDOWS)))  # running sums over each drop window
        self.exp_sum = np.zeros((size, len(DROP_WINDOWS)))
        # Templates only: count per bucket against the rest of the source's lines (odds num / den),
        # and the squared relative error of that forecast (see VolumeTier._share_scores).
        self.share_num = np.zeros(size)
        self.share_den = np.zeros(size)
        self.share_rel2 = np.full(size, MIN_RELATIVE_ERROR ** 2)

    @property
    def size(self):
        return self.level.size

    def ensure(self, n):
        """Grow every array (by doubling) so keys < n fit."""
        if n <= self.size:
            return
        new = self.size
        while new < n:
            new *= 2
        for name, arr in vars(self).items():
            grown = np.full((new,) + arr.shape[1:], _GROW_FILL.get(name, 0), arr.dtype)
            grown[: arr.shape[0]] = arr
            setattr(self, name, grown)

    def count(self, keys, weights):
        """Count lines (their keys, their learning weights) into the open bucket."""
        self.open_raw += np.bincount(keys, minlength=self.size)[: self.size]
        self.open_learn += np.bincount(keys, weights=weights.astype(np.float64, copy=False),
                                       minlength=self.size)[: self.size]

    def state(self):
        return {k: v.tolist() for k, v in vars(self).items()}

    def load_state(self, state):
        for name, arr in vars(self).copy().items():
            if name in state:
                setattr(self, name, np.asarray(state[name], dtype=arr.dtype).reshape((-1,) + arr.shape[1:]))
        # Arrays a state saved by an older release lacks start cold, one per key like the others.
        size = self.level.shape[0]
        for name, arr in vars(self).copy().items():
            if name not in state:
                setattr(self, name, np.full((size,) + arr.shape[1:], _GROW_FILL.get(name, 0), arr.dtype))


_GROW_FILL = {"phi": 1.0, "rel2": MIN_RELATIVE_ERROR ** 2, "share_rel2": MIN_RELATIVE_ERROR ** 2, "clump": 1.0}


class Seasonality:
    """Per-source multiplicative hour-of-day and day-of-week factors with shrinkage towards 1.

    Each slot keeps (observed count, flat expectation, buckets seen); its factor is the
    observed/expected ratio weighted by the number of periods (days, weeks) the slot has seen,
    against a prior of 1 worth `prior_periods`: one odd day does not make a season.
    """

    def __init__(self, size=8):
        self.hod = np.zeros((size, 3, 24))
        self.dow = np.zeros((size, 3, 7))

    def ensure(self, n):
        if n > self.hod.shape[0]:
            for name in ("hod", "dow"):
                arr = getattr(self, name)
                grown = np.zeros((max(n, 2 * arr.shape[0]),) + arr.shape[1:])
                grown[: arr.shape[0]] = arr
                setattr(self, name, grown)

    def factor(self, sources, when, bucket_seconds, hour_day=None):
        """Seasonal multiplier for each source (array) at epoch second(s) `when` (hour_day: _hour_and_day(when)
        when the caller has it already)."""
        sources = np.asarray(sources, np.int64)
        hour, day = _hours_and_days(when, sources.shape, hour_day)
        out = np.empty(sources.shape[0])
        VK.season_factors(self.hod, self.dow, sources, hour, day,
                          3600.0 / bucket_seconds, 86400.0 / bucket_seconds, HOUR_PRIOR_DAYS, DAY_PRIOR_WEEKS, out)
        return out

    def state(self):
        return {"hod": self.hod.tolist(), "dow": self.dow.tolist()}

    def load_state(self, state):
        if "hod" in state and "dow" in state:
            self.hod = np.asarray(state["hod"], float).reshape(-1, 3, 24)
            self.dow = np.asarray(state["dow"], float).reshape(-1, 3, 7)


class ShareSeasonality(Seasonality):
    """Per-template hour-of-day and day-of-week factors of its share of its source.

    A slot keeps (the template's count, the rest of its source's lines, buckets seen); its factor is
    the slot's odds over the odds of all slots, shrunk towards 1 like Seasonality's. The factors
    are relative to the table itself, not to a learned level that follows the day's mix within hours
    (which would hide most of the pattern it is meant to learn) or starts from the first hours seen.
    """

    def factor(self, keys, when, bucket_seconds, hour_day=None):
        keys = np.asarray(keys, np.int64)
        hour, day = _hours_and_days(when, keys.shape, hour_day)
        out = np.empty(keys.shape[0])
        VK.share_factors(self.hod, self.dow, keys, hour, day,
                         3600.0 / bucket_seconds, 86400.0 / bucket_seconds, HOUR_PRIOR_DAYS, DAY_PRIOR_WEEKS, out)
        return out


def _hour_rate(seasons, keys, hour, bucket_seconds):
    """Each key's usual learned count per bucket in the hour of day of its bucket (hour: that hour,
    _hour_and_day's): the hour-of-day table's observed sum over its buckets (both decay alike), once
    the hour has been seen for at least HOUR_RATE_MIN_SHARE of an hour; 0 before."""
    seen = seasons.hod[keys, 2, hour]
    enough = _hour_known(seasons, keys, hour, bucket_seconds)
    return np.where(enough, seasons.hod[keys, 0, hour] / np.where(enough, seen, 1.0), 0.0)


def _hour_known(seasons, keys, hour, bucket_seconds):
    """Whether each key's hour-of-day table has seen this hour for at least HOUR_RATE_MIN_SHARE of an hour."""
    return seasons.hod[keys, 2, hour] >= HOUR_RATE_MIN_SHARE * 3600.0 / bucket_seconds


def _hours_and_days(when, shape, hour_day=None):
    """Contiguous int64 hour of day and day of week of `when` (a time, or one per key) for keys of `shape`
    (hour_day: _hour_and_day(when), when worked out already)."""
    hour, day = _hour_and_day(when) if hour_day is None else hour_day
    if np.ndim(hour) == 0:
        return np.full(shape, hour, np.int64), np.full(shape, day, np.int64)
    return (np.ascontiguousarray(np.broadcast_to(hour, shape)),
            np.ascontiguousarray(np.broadcast_to(day, shape)))


def _hour_and_day(when):
    if isinstance(when, float) and math.isfinite(when):
        # One bucket's start, thousands of times a replay: plain arithmetic, the same values as numpy's.
        return np.int64(when % 86400 // 3600), np.int64((int(when // 86400) + 3) % 7)
    when = np.asarray(when, np.float64)
    if when.ndim == 1 and when.size > 64:
        # A batch's lines come in runs of one bucket: each run's hour and day worked out once (float
        # remainders of every line were a twentieth of a replay's tier 2).
        change = np.empty(when.size, np.bool_)
        change[0] = False
        np.not_equal(when[1:], when[:-1], out=change[1:])
        run = np.cumsum(change)
        if run[-1] * 8 < when.size:
            hour, day = _hour_and_day(when[np.flatnonzero(np.concatenate(([True], change[1:])))])
            return hour[run], day[run]
    hour = (when % 86400 // 3600).astype(np.int64)
    day = ((when // 86400).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    return hour, day


class VolumeTier(Tier):
    """Counts per template and per source, one event-time bucket at a time."""

    name = "t2"

    def __init__(self, settings):
        super().__init__(settings)
        self.bucket_seconds = float(settings["bucket_seconds"])
        self.min_history = int(settings["min_history_buckets"])
        self.finding_min_score = float(settings["finding_min_score"])
        self.spike_min_ratio = float(settings["spike_min_ratio"])
        self.templates = KeyBaseline()
        self.sources = KeyBaseline(8)
        self.season = Seasonality()            # per source
        self.template_season = Seasonality(64)  # per template: a nightly job has its own hour
        self.share_season = ShareSeasonality(64)  # per template, of its share: night mixes differ from day ones
        self.template_source = np.zeros(64, np.int64)
        # Heavy values of template positions, per source, counted and judged like templates (tier2_values.py)
        self.values = ValueKeys(int(settings.get("max_value_keys", 1024)), KeyBaseline(), Seasonality(64),
                                self.bucket_seconds)
        self._parts_of = self._parts = None   # a batch's value parameters in bucket order (_value_parts)
        self.open_bucket = None
        self.pending = []
        # Gaps that are not the sources' doing (see _skip_gap): after a restore from state the time
        # since the saved open bucket was downtime; a gap of at least input_gap_seconds with no line
        # from any of two or more busy sources was the input's (a collector down), not theirs.
        gap = float(settings.get("input_gap_seconds", 600.0))
        self.input_gap_buckets = int(np.ceil(gap / self.bucket_seconds)) if gap > 0 else 0
        self.resumed = False          # restored from state, no line learned since
        self.restart_bucket = None    # the bucket the restored models started running in (restarted())
        self.partial_bucket = None    # the bucket time resumed in: it began before the first line
        self.gaps_skipped = 0
        self.last_gap_seconds = 0.0
        # A drop or silence is held for drop_hold_seconds and raised only if its key is still low then
        # (see _hold): a service restarting is quiet for minutes and comes back.
        hold = float(settings.get("drop_hold_seconds", 600.0))
        self.hold_buckets = int(np.ceil(hold / self.bucket_seconds)) if hold > 0 else 0
        self.held = {}                # finding key -> [Finding, kind, key index, release bucket, (disp, rel2), recent]
        self.drops_withdrawn = 0
        # A steady template's drop is also judged against its own recent level (tier2_recent.py): the
        # seasons of a young model lag the day. 0 = off.
        recent = float(settings.get("drop_recent_seconds", 3600.0))
        self.recent = RecentLevel(int(np.ceil(recent / self.bucket_seconds)), 64) if recent > 0 else None
        self._judged, self._judged_at = None, None   # the templates the recent level judges (_close_bucket)
        # Each source's steady templates pooled against the rest of the site's (_site_reference): the error
        # of that relative forecast, learned every quarter hour (_learn_relative)
        self.relative = TR.SiteRelative(8)
        self._r_best, self._r_window = np.empty(0), np.empty(0, np.int64)   # close_bucket's recent scores
        self._spike_cache = (None, None)   # the recent level's spike reference for the open bucket (_spike_reference)
        self._outage = {}   # template -> (its level before an outage of it or its source, bucket last dated)
        # source -> the last bucket a line of it scored a spike at anomaly_threshold (_note_surges): its templates'
        # hour before holds the surge, and their return from it is no drop against that hour (_hold_recent_drops)
        self._surged = {}
        self._surged_templates = {}   # the same per template: a pool's members (_hold_relative_drops)
        self.threshold = float(settings.get("anomaly_threshold", 70.0))
        self._close_settings = (None, None)   # close_bucket's settings, worked out once (_close_kernel)
        # Each source's hosts counted apart (tier2_hosts.py): one replica silent while the others go on.
        self.hosts = HostCounts(int(settings.get("max_hosts_per_source", 64)), KeyBaseline(8), Seasonality(8))
        # Sources' drops judged over windows up to drop_long_seconds too (tier2_long.py). 0 = off.
        long_s = float(settings.get("drop_long_seconds", 7200.0))
        self._source_name = str   # source id -> name for host findings' reasons: the last batch's (learn)
        self.long = LongWindows(int(np.ceil(long_s / (DROP_WINDOWS[-1] * self.bucket_seconds))) if long_s > 0 else 0)
        # ... and over the same windows against its forecast from the rest of the site's lines (tier2_load.py), where
        # that follows the load: the blocks of that forecast and its learned error on a ring of their own
        self.load = LoadFollow()
        self.load_long = LongWindows(self.long.blocks)
        # ... and by a sequential test over their quarter hours whose false alarms per source are about one in
        # drop_sequential_days (tier2_long.LongWindows.sequential). 0 = off.
        seq_days = float(settings.get("drop_sequential_days", 30.0))
        self.sequential_h = (cusum_threshold(seq_days, DROP_WINDOWS[-1] * self.bucket_seconds)
                             if seq_days > 0 and self.long.blocks else 0.0)
        # ... and a source on a clock silent for a window of its ticks (tier2_clock.py; needs the long windows)
        self.clock = ClockSilence()

    # -- scoring -------------------------------------------------------------------------

    def score(self, batch, ctx):
        scores = np.zeros(batch.n, np.float32)
        result = TierResult(scores)
        if self.open_bucket is None or batch.n == 0:
            return result
        self._grow(ctx.n_templates, batch)
        buckets = self._buckets(ctx.ts)
        t_counts = self._counts(batch.template_id, buckets, self.templates)
        s_counts = self._counts(batch.source_id, buckets, self.sources)
        per_key, window_counts = {}, {}
        # a surge of every busy source at once is traffic, not a fault of one (tier2_site.py)
        site = SiteLoad(self, batch.source_id, buckets)
        for keys, counts, base, kind in ((batch.template_id, t_counts, self.templates, "template"),
                                         (batch.source_id, s_counts, self.sources, "source")):
            per_key[kind], mus, windowed, window_mus = self._spike_scores(keys, counts, buckets, base, ctx, site=site)
            self._explain(result, per_key[kind], counts, mus, keys, kind, ctx)
            np.maximum(scores, per_key[kind], out=scores)
            w_scores, w_counts, w_mus = self._window_scores(keys, counts, buckets, base, window_mus, windowed, ctx,
                                                            site=site)
            window_counts[kind], window_counts[kind + " forecast"] = w_counts, w_mus
            # explained by the window only where it says more than the bucket did
            self._explain(result, np.where(w_scores > scores, w_scores, 0.0), w_counts, w_mus, keys, kind, ctx,
                          span=SPIKE_WINDOW * self.bucket_seconds)
            np.maximum(per_key[kind], w_scores, out=per_key[kind])
            np.maximum(scores, w_scores, out=scores)
            l_scores, l_counts, l_mus = self._long_window_scores(keys, counts, buckets, base, window_mus, windowed,
                                                                 w_counts, w_mus, ctx, site)
            self._explain(result, np.where(l_scores > scores, l_scores, 0.0), l_counts, l_mus, keys, kind, ctx,
                          span=LONG_SPIKE_WINDOW * self.bucket_seconds)
            np.maximum(per_key[kind], l_scores, out=per_key[kind])
            np.maximum(scores, l_scores, out=scores)
        # a steady template against its own level over the hour before (young seasons hide a spike at night)
        per_key["recent"] = np.zeros(batch.n, np.float32)
        site = SiteLoad(self, batch.source_id, buckets, self._source_recent_forecasts)
        for r_scores, r_counts, r_mus, span in self._recent_spike_scores(batch.template_id, buckets, t_counts,
                                                                          window_counts["template"], ctx, site):
            self._explain(result, np.where(r_scores > scores, r_scores, 0.0), r_counts, r_mus, batch.template_id,
                          "template", ctx, RECENT_SPIKE_REASON, span=span * self.bucket_seconds)
            np.maximum(per_key["recent"], r_scores, out=per_key["recent"])
            np.maximum(scores, r_scores, out=scores)
        np.maximum(per_key["template"], per_key["recent"], out=per_key["template"])
        share = self._share_forecast(batch.template_id, buckets)
        share_scores, mus = self._share_scores(batch.template_id, t_counts, s_counts, ctx, share)
        self._explain(result, share_scores, t_counts, mus, batch.template_id, "template", ctx, SHARE_SPIKE_REASON)
        np.maximum(scores, share_scores, out=scores)
        for w_scores, w_counts, w_mus, span in self._share_window_scores(batch, buckets, t_counts, s_counts,
                                                                          window_counts, share, ctx):
            self._explain(result, np.where(w_scores > scores, w_scores, 0.0), w_counts, w_mus, batch.template_id,
                          "template", ctx, SHARE_SPIKE_REASON, span=span * self.bucket_seconds)
            np.maximum(share_scores, w_scores, out=share_scores)
            np.maximum(scores, w_scores, out=scores)
        self._value_scores(batch, buckets, result, ctx, site)
        # A spike of the whole source is one problem, whichever templates its lines have.
        source_wide = per_key["source"] > np.maximum(per_key["template"], share_scores)
        result.about = np.where(source_wide, -1, batch.template_id.astype(np.int64))
        self._note_surges(batch.source_id, buckets, scores, batch.template_id)
        return result

    def _note_surges(self, source_id, buckets, scores, template_id):
        """Keep, per source and per template, the last bucket in which a line of it scored a spike (every line
        score of this tier is one) at anomaly_threshold."""
        raised = scores >= self.threshold
        if not raised.any():
            return
        for keys, last_seen in ((source_id, self._surged), (template_id, self._surged_templates)):
            # a surge's batch holds thousands of such lines of a few keys: their last bucket per key at once
            found, at = np.unique(np.asarray(keys)[raised], return_inverse=True)
            last = np.full(found.size, np.iinfo(np.int64).min)
            np.maximum.at(last, at, np.asarray(buckets, np.int64)[raised])
            for key, bucket in zip(found.tolist(), last.tolist()):
                last_seen[key] = max(last_seen.get(key, bucket), bucket)

    def _counts(self, keys, buckets, base):
        """The count each line's (bucket, key) has reached when the line arrives."""
        counts = running_counts(buckets, keys).astype(np.float64)
        return counts + np.where(buckets == self.open_bucket, base.open_raw[keys], 0.0)

    def _spike_scores(self, keys, counts, buckets, base, ctx, seasons=None, site=None, lines=None):
        """Score each line by its key's count against the key's seasonal level (times the site's factor
        where site, a tier2_site.SiteLoad, is given; lines: the batch lines of these keys, if not all of
        them in order) -> (scores, forecasts per bucket, which lines' keys are judged over the spike window
        too, their forecast per bucket there)."""
        mus, windowed, per_bucket = self._forecast(keys, buckets, base, seasons)
        disp, rel2, young = _dispersion(base, keys), base.rel2[keys], base.age[keys] < self.min_history
        scores = self._gated(count_upper_scores(counts, mus, disp, rel2), counts, mus, young, ctx)
        if site is not None:
            def rescore(sel, f):
                return self._gated(count_upper_scores(counts[sel], mus[sel] * f, disp[sel], rel2[sel]), counts[sel],
                                   mus[sel] * f, young[sel], ctx)
            mus = mus * site.adjust(scores, 1, rescore, lines)
        return scores, mus, windowed, per_bucket

    def source_forecasts(self, bucket, window):
        """Every source's forecast per bucket at `bucket` as its spike test over `window` buckets judges
        it, and which sources are busy (judged over windows: neither young, sparse nor job-like)."""
        n = self.sources.size
        mus, windowed, per_bucket = self._forecast(np.arange(n, dtype=np.int64), np.full(n, bucket, np.int64),
                                                   self.sources, self.season)
        forecast = mus if window == 1 else per_bucket
        return forecast, (windowed == WINDOW_BUSY) & (forecast > 0)

    def _forecast(self, keys, buckets, base, seasons=None):
        """Each line's key's forecast count per bucket -> (forecasts, how each key is judged over the
        spike window: WINDOW_*, the forecast per bucket there)."""
        seasons = seasons or (self.template_season if base is self.templates else self.season)
        when = buckets * self.bucket_seconds
        hour_day = _hour_and_day(when)   # once for the four uses below (a batch's lines in runs of a bucket)
        season = seasons.factor(keys, when, self.bucket_seconds, hour_day)
        # An intermittent key (a nightly job) is not expected to be at zero just because it was
        # quiet lately: a spike is judged against at least its long-run mean and, since it comes in
        # clumps (a job's progress lines), at least its usual clump. A busy key is judged against
        # its seasonal level (its long-run mean would hide a spike at night). A key quiet in most
        # hours of the day (see _intermittent; even while its recent buckets are busy) is also
        # expected at least at its usual count per bucket at this hour of day: a job that ran at 03:00 yesterday runs at 03:00 today, though its level decayed through
        # the quiet day, and the hour's factor is relative to the level it had while running, so
        # level times factor forecasts its first hour far too low. (Not for busy keys: a weekday's
        # hour would hide a spike on a quieter Saturday.)
        sparse = base.nonzero[keys] < SPARSE_FRACTION
        long_run = base.total[keys] / np.maximum(base.age[keys], 1)
        mus = np.maximum(base.level[keys] * season, 1e-3)
        mus = np.where(sparse, np.maximum(mus, np.maximum(long_run, base.clump[keys])), mus)
        uniq, inverse, _ = unique_lines(keys, keys)
        job_like = _quiet_most_hours(seasons, uniq, self.bucket_seconds)[inverse]
        intermittent = sparse | job_like
        mus = np.where(intermittent, np.maximum(mus, _hour_rate(seasons, keys, hour_day[0], self.bucket_seconds)), mus)
        # The window is judged only where the forecast knows this hour of day (seen for half an hour,
        # see _hour_rate): a service's first morning ramp, three times its night level, is no spike,
        # and flagged it would keep its hour out of the seasons (volume_kernels._season_weight).
        hour = hour_day[0]
        hour_known = _hour_known(seasons, keys, hour, self.bucket_seconds)
        settled = hour_known & (base.age[keys] >= self.min_history + DROP_WINDOWS[-1])
        busy = ~sparse & ~intermittent & settled
        # A window is judged against the long-run mean at this season too: a key back to its usual
        # volume after a drop that its level learned is no spike.
        usual = np.where(busy, long_run * season, 0.0)
        # A sporadic key (a few lines an hour, spread over the day: a known error, a retry) bursting
        # at ten times its rate has a handful of lines per bucket, never a spike of one bucket, but
        # a window of them is: it is judged over the window against its long-run rate (not its
        # clump, the size of a bucket it shows up in; not its level or hour, which the burst's own
        # first minutes teach before the window fills), with its clumpiness as the dispersion. Keys
        # quiet in most hours (a nightly job's clumps) stay judged per bucket only.
        sporadic = sparse & ~job_like & settled
        per_bucket = np.where(busy, np.maximum(mus, usual),
                              np.where(sporadic, long_run * self._busy_hour_factor(keys, buckets, base, hour_day),
                                       0.0))
        windowed = np.where(sporadic, WINDOW_SPORADIC, np.where(busy, WINDOW_BUSY, WINDOW_NONE)).astype(np.int8)
        return mus, windowed, per_bucket

    def _busy_hour_factor(self, keys, buckets, base, hour_day=None):
        """How much busier than usual a template's source is at this hour and weekday (at least 1; 1 for
        other keys). Most sporadic lines come with traffic (a declined payment, a timeout: one in so many
        requests), so at the evening peak a sporadic template is expected at that multiple of its long-run
        rate: judged against the day's mean, ordinary clumps at the peak would read as bursts. Its source's
        factor, not its own: a busy key's is steady, and a burst does not teach it (the template's own hour
        of a few lines would learn the burst's first minutes); but no more than the template's own hours
        were seen to follow it (_own_hour_multiple). Never below 1: a warning that does not follow traffic
        is not expected to fall silent at night."""
        if base is not self.templates:
            return 1.0
        sources = self.template_source[keys]
        season = self.season.factor(sources, buckets * self.bucket_seconds, self.bucket_seconds, hour_day)
        traffic = season * self._quiet_day_factor(sources)
        return np.maximum(np.minimum(traffic, self._own_hour_multiple(keys, buckets, hour_day)), 1.0)

    def _own_hour_multiple(self, keys, buckets, hour_day=None):
        """How much above its long-run rate each template was seen at this hour of day (inf where the hour is
        not known yet: HOUR_RATE_MIN_SHARE of an hour). Not every sporadic template follows its source's traffic:
        a shard timeout at a line every twenty minutes was expected at nineteen times that at its source's
        evening peak, where its own evening hours had three, and its burst at fifteen times its rate was
        never judged. Its own hours say how far it follows."""
        hour = (hour_day or _hour_and_day(buckets * self.bucket_seconds))[0]
        base, seasons = self.templates, self.template_season
        known = _hour_known(seasons, keys, hour, self.bucket_seconds)
        long_run = base.total[keys] / np.maximum(base.age[keys], 1)
        rate = _hour_rate(seasons, keys, hour, self.bucket_seconds)
        return np.where(known & (long_run > 0), rate / np.where(long_run > 0, long_run, 1.0), np.inf)

    def _quiet_day_factor(self, sources):
        """How much quieter than its long-run mean each source's level is now (at most 1). The hour-of-day
        table learns the weekdays' busy mornings; until the day-of-week table has seen a few Sundays
        (DAY_PRIOR_WEEKS), a quiet Sunday or holiday shows only in the level, which follows the day within
        hours: a weekday's busy-hour multiple there made a weekend scraper's lines look ordinary for
        minutes. Never above 1: a source busier than usual may be the incident itself."""
        src = self.sources
        # worked out for every source (a handful) and then gathered: one gather per line, not three
        long_run = src.total / np.maximum(src.age, 1)
        quiet = np.where(long_run > 0, np.minimum(src.level / np.where(long_run > 0, long_run, 1.0), 1.0), 1.0)
        return quiet[sources]

    def _window_scores(self, keys, counts, buckets, base, mus, windowed, ctx, earlier=None, window=None, site=None,
                       lines=None):
        """Spike scores of each line's key over its last `window` buckets (SPIKE_WINDOW unless given; mus: forecast per bucket;
        earlier: the lines before the line's bucket in the window, if known) -> (scores, window counts,
        window forecasts). Only for the keys `windowed` marks (WINDOW_BUSY or WINDOW_SPORADIC: seen long
        enough for the drop windows' ring to hold their past buckets, see _spike_scores): a job-like key's
        clumps are judged per bucket only. site: a tier2_site.SiteLoad, whose factor the forecast is
        multiplied by (lines: the batch lines of these keys, if not all of them in order)."""
        window = window or SPIKE_WINDOW
        if earlier is None:
            earlier = _earlier_counts(keys, buckets, base.obs_win, base.open_raw, self.open_bucket, window)
        w_counts = counts + earlier
        w_mus = window * mus
        scores = np.zeros(keys.size, np.float32)
        # A sporadic key's window holds a handful of lines, where three normal deviations below the count
        # reach zero (nine lines or fewer can never pass, whatever was expected): a known error at ten
        # times its rate took twelve lines, minutes into its burst, to clear the floor. Its floor is the
        # Poisson lower bound at the same confidence; a busy key's many lines keep the normal one, unless the
        # key is no more dispersed than Poisson counts (phi <= 1): then the normal bound is only the Poisson
        # one's rough twin, three lines lower at a few dozen (sshd's failed logins at 6.5 times their steady
        # rate, 57 against 11.5 in a quarter hour, stayed shut at 34 < 34.5 where the Poisson bound is 37).
        poisson = (windowed == WINDOW_SPORADIC) | ((windowed == WINDOW_BUSY) & (base.phi[keys] <= 1.0))
        low = np.where(poisson, poisson_lower_bound(w_counts), w_counts - 3.0 * np.sqrt(w_counts))
        # only lines that can pass the gate (_gated) are scored: the tail probabilities cost
        judged = (windowed != WINDOW_NONE) & (low >= self.spike_min_ratio * w_mus) & bool(ctx.warm)
        if judged.any():
            k = keys[judged]
            # rel2 is learned from one bucket's residuals; the part of it that one bucket's sampling
            # noise can explain (up to dispersion / forecast: all of it for a quiet key, little for a
            # busy one, whose error is the forecast's own) averages out over the window.
            # A sporadic key's window is a sum of its clumps: its dispersion is their compound-Poisson index
            # (clump, E[x^2] / E[x] over its non-zero buckets), not phi, learned from one bucket's residual
            # against a forecast of a tenth of a line, which each minute of a burst raises by a sixth or so
            # (the burst's own minutes hid it: twenty times a known warning's rate stayed under 70).
            disp = np.where(windowed[judged] == WINDOW_SPORADIC, np.maximum(base.clump[k], 1.0), _dispersion(base, k))
            rel2 = base.rel2[k]
            noise = np.minimum(rel2, disp / np.maximum(w_mus[judged] / window, 1e-3))
            rel2 = np.maximum(rel2 - noise + noise / window, MIN_RELATIVE_ERROR ** 2)
            # A sporadic key's window holds a handful of lines, where the log ratio's normal tail (the second
            # test of count_upper_scores) is far heavier than the count's: a login burst ten times its rate
            # scored 35. Its forecast's error goes into the count's variance instead.
            sporadic = windowed[judged] == WINDOW_SPORADIC
            out, c, m = np.empty(k.size, np.float32), w_counts[judged], w_mus[judged]
            out[sporadic] = count_upper_mixed_scores(c[sporadic], m[sporadic], disp[sporadic], rel2[sporadic])
            out[~sporadic] = count_upper_scores(c[~sporadic], m[~sporadic], disp[~sporadic], rel2[~sporadic])
            scores[judged] = out
        if site is not None:
            def rescore(sel, f):
                return self._window_scores(keys[sel], counts[sel], buckets[sel], base, mus[sel] * f, windowed[sel], ctx,
                                           earlier[sel], window)[0]
            # A sporadic key's forecast is its long-run rate times its source's traffic as far as its own hours
            # follow it (_busy_hour_factor), not a seasonal level that a site-wide surge leaves behind: the site's
            # factor is not laid on it again (svc's evening, every service at 6-12 times a season that had not
            # seen it, put a shard timeout's burst at nine times its rate under the floor).
            w_mus = w_mus * site.adjust(scores, window, rescore, lines, among=windowed != WINDOW_SPORADIC)
        return scores, w_counts, w_mus

    def _long_window_scores(self, keys, counts, buckets, base, mus, windowed, w_counts, w_mus, ctx, site=None):
        """Spike scores over LONG_SPIKE_WINDOW buckets of busy keys whose short window (w_counts against
        w_mus) is itself at least spike_min_ratio times its forecast -> (scores, counts, forecasts; the
        short window's where not judged). A quiet key's few lines a minute are mostly counting noise: five
        minutes of a sustained rise are rarely certain, a quarter of an hour is. Only while the short
        window is still that high: a spike that has ended is no news for the lines after it. Every line of
        a candidate's key goes in (the window's earlier buckets are counted from the batch's lines). A sporadic
        key too: a rare warning at a line a minute has five or six in five minutes, short of a certain spike
        against a forecast under half a line, and a quarter hour of them is certain."""
        scores = np.zeros(keys.size, np.float32)
        cand = (windowed != WINDOW_NONE) & (w_counts >= self.spike_min_ratio * w_mus)
        if not (cand.any() and ctx.warm):
            return scores, w_counts, w_mus
        idx = np.flatnonzero(np.isin(keys, keys[cand]))
        l_scores, l_counts, l_mus = self._window_scores(keys[idx], counts[idx], buckets[idx], base, mus[idx],
                                                        windowed[idx], ctx, window=LONG_SPIKE_WINDOW, site=site, lines=idx)
        scores[idx] = np.where(cand[idx], l_scores, 0.0)
        counts_out, mus_out = w_counts.copy(), w_mus.copy()
        counts_out[idx], mus_out[idx] = l_counts, l_mus
        return scores, counts_out, mus_out

    def _recent_spike_scores(self, keys, buckets, counts, short_counts, ctx, site):
        """Spike scores of each line's template over its last RECENT_WINDOWS buckets against its own level over
        the hour before (RecentLevel.spike_reference; short_counts: its lines over SPIKE_WINDOW buckets) ->
        [(scores, window counts, forecasts, window in buckets)]. Only the steady templates the recent level
        judges (see _close_bucket and _spike_reference). The forecast is deseasonalised by the hour factors
        as far as they are known (a ramp they know is expected), its error the recent level's learned one,
        its dispersion the template's; a surge of the whole site is traffic (site: a tier2_site.SiteLoad of
        the sources' recent levels). The long window only for templates whose short one is already
        spike_min_ratio times its forecast, and only while it is (as _long_window_scores)."""
        if self.recent is None or self._judged is None or self.recent.last_bucket is None or not ctx.warm:
            return []
        ref = self._spike_reference()
        k = np.where(keys < ref["level"].size, keys, 0)
        usable = (keys < ref["level"].size) & (ref["level"][k] > 0)
        if not usable.any():
            return []
        factor = self._spike_factors(k, buckets, usable, ref["factors"])
        out, cand = [], usable
        for width in TR.RECENT_WINDOWS:
            lines = np.flatnonzero(cand) if width == SPIKE_WINDOW else np.flatnonzero(np.isin(keys, keys[cand]))
            if not lines.size:
                break
            w_counts = short_counts.astype(np.float64) if width == SPIKE_WINDOW else np.zeros(keys.size)
            if width != SPIKE_WINDOW:
                w_counts[lines] = counts[lines] + _earlier_counts(keys[lines], buckets[lines], self.templates.obs_win,
                                                                  self.templates.open_raw, self.open_bucket, width)
            scores, mus = self._recent_window(width, k, buckets, w_counts, lines, cand, factor, ref, ctx, site)
            out.append((scores, w_counts, mus, width))
            cand = (mus > 0) & (w_counts >= self.spike_min_ratio * mus)
        return out

    def _recent_window(self, width, keys, buckets, w_counts, lines, cand, factor, ref, ctx, site):
        """_recent_spike_scores over one window of `width` buckets -> (scores, forecasts) of every line, 0 but
        for the candidates among `lines` (w_counts: their window's lines; factor: their key's season at their
        bucket). A window reaching into buckets the ring does not hold yet (later ones of the batch) takes
        their factor as the line's."""
        k = keys[lines]
        n_closed = np.clip(width - 1 - (buckets[lines] - self.open_bucket), 0, width - 1)
        mus = np.zeros(keys.size)
        mus[lines] = ref["level"][k] * (ref["closed"][k, n_closed] + (width - n_closed) * factor[lines])
        disp, rel2 = np.ones(keys.size), np.zeros(keys.size)
        disp[lines], rel2[lines] = ref["disp"][k], ref["rel2"][k]
        unjudged = ~cand | (mus <= 0)

        def rescore(sel, f):
            return self._gated(count_upper_mixed_scores(w_counts[sel], mus[sel] * f, disp[sel], rel2[sel]),
                               w_counts[sel], mus[sel] * f, unjudged[sel], ctx)
        scores = np.zeros(keys.size, np.float32)
        # only lines that can pass the gate (_gated) are scored: the tail probabilities cost
        sel = np.flatnonzero(~unjudged & (w_counts - 3.0 * np.sqrt(w_counts) >= self.spike_min_ratio * mus))
        if sel.size:
            scores[sel] = rescore(sel, 1.0)
            ramp = self._recent_ramp(keys, lines, mus, ref["level"], width)

            def beyond_ramp(sel, f):
                return rescore(sel, np.maximum(f / ramp[sel], 1.0))
            mus = mus * np.maximum(site.adjust(scores, width, beyond_ramp) / ramp, 1.0)
        return scores, mus

    def _recent_ramp(self, keys, lines, mus, level, width):
        """Per line (1 but for `lines`), the rise over the hour before that the recent level's forecast of its
        window (mus, of `width` buckets) already carries by the hour factors: its seasons per bucket against the
        reference's, at least 1. The site's factor (SiteLoad over the sources' levels of the hour before, not
        deseasonalised) holds the morning's ramp as well: judged against both, a template would be forecast at
        the ramp twice (shop seed 60: a Sunday morning at 08:04, hour factors 1.6 times the hour before's, the
        other sources 1.4-1.6 times theirs, its five-fold scraper below three times the forecast)."""
        ramp = np.ones(keys.size)
        k = keys[lines]
        r = self.recent
        ref_season = r.ref_season[k] / r.reference
        window_season = mus[lines] / np.maximum(level[k], 1e-9) / width
        ramp[lines] = np.where(ref_season > 0, np.maximum(window_season / np.maximum(ref_season, 1e-9), 1.0), 1.0)
        return ramp

    def _spike_reference(self):
        """Per template, for _recent_spike_scores, worked out once per bucket: its spike level (0 for the ones
        not judged: not steady, sparse, young, too quiet; at least its level before an outage), its closed
        buckets' seasons summed (RecentLevel.closed_seasons), dispersion and the forecast's squared relative
        error; and a cache of factors per bucket."""
        r, t = self.recent, self.templates
        stamp = (r.last_bucket, self.open_bucket, r.size, t.size)
        if self._spike_cache[0] != stamp:
            n = min(r.size, t.size)
            judged = self._judged[:n] & (t.nonzero[: self._judged[:n].size] >= SPARSE_FRACTION)
            keys = np.flatnonzero(judged & (t.age[: judged.size] >= self.min_history + DROP_WINDOWS[-1]))
            disp = _dispersion_all(t)[:n]
            level, lines = np.zeros(n), np.zeros(n)
            level[keys], lines[keys] = r.spike_reference(keys, disp[keys])
            # carried to the open bucket no higher than the buckets since the reference say (young hour factors)
            level[keys] *= r.ramp_shortfall(keys, level[keys], disp[keys])
            self._outage_floor(level)
            closed = np.zeros((n, TR.RECENT_WINDOWS[-1]))
            closed[keys] = r.closed_seasons(keys, TR.RECENT_WINDOWS[-1])
            ref = {"level": level, "closed": closed, "disp": disp,
                   "rel2": TR.RecentLevel.spike_rel2(r.rel2[:n], disp, lines), "factors": {}}
            self._spike_cache = stamp, ref
        return self._spike_cache[1]

    def _source_recent_forecasts(self, bucket, window):
        """Every source's recent level per bucket (RecentLevel.source_reference of its templates' lines, not
        deseasonalised: a site surge is measured within the hour) and which sources are busy, for the site's
        factor of a spike against the recent level (tier2_site.SiteLoad: the other sources against theirs)."""
        ref = self._spike_reference()
        if "sources" not in ref:
            n = min(self.recent.size, self.templates.size)
            ref["sources"] = self.recent.source_reference(self.template_source[:n], self.sources.size)
        level = ref["sources"]
        return level, level > 0

    def _note_outage(self, kind, key):
        """An outage of a template or a source was raised (a silence, a drop still low against the hour before
        (_release), a source's long window or sequential test): its templates' recent levels before it (the
        reference of the hour before, which a drop raised after drop_hold_seconds has not reached yet) are kept
        until they are back (_track_outages, _outage_floor)."""
        r = self.recent
        if r is None or kind not in ("template", "source"):
            return
        n = min(r.size, self.templates.size)
        keys = [key] if kind == "template" else np.flatnonzero(self.template_source[:n] == key).tolist()
        for k in keys:
            if k in self._outage:   # still out: the level before it stands, the outage is dated again
                self._outage[k] = (self._outage[k][0], self.open_bucket)
            elif k < n and r.filled[k] >= r.ring:
                self._outage[k] = (float(r.ref_obs[k] / max(r.ref_season[k], 1e-9)), self.open_bucket)

    def _track_outages(self):
        """At each closed bucket, date again the outages whose template is coming back: its last SPIKE_BLOCK
        buckets up against its spike level (the median of the hour before, mostly the outage while it comes
        back) by 1 / DROP_BLOCK_SHARE, beyond their sampling error. Forget those dated longer than the ring ago
        whose template's spike level is back to its level before (the floor no longer raises it). Neither the
        hour before's mean against the level before (its deseasonalised level is another hour's: young hour
        factors, still learning the day, read a two-hour drop to a quarter at more than half of it) nor when
        the drop was last raised (its hour before sinks into a long drop, which is then raised no more) tells
        a template still out from one back."""
        r = self.recent
        if not self._outage or r is None or r.last_bucket is None:
            return
        keys = np.array([k for k in self._outage if k < r.size], np.int64)
        for k in set(self._outage) - set(keys.tolist()):
            del self._outage[k]
        if not keys.size:
            return
        level = np.zeros(keys.size)   # an hour before too quiet is no spike reference: not worked out
        some = r.ref_obs[keys] >= TR.MIN_REFERENCE_LINES
        level[some], _ = r.spike_reference(keys[some], _dispersion(self.templates, keys[some]))
        block = r.win_obs[keys, 0]
        back = (level > 0) & (block - 3.0 * np.sqrt(block) >= level * r.win_season[keys, 0] / TR.DROP_BLOCK_SHARE)
        for i, k in enumerate(keys.tolist()):
            before, dated = self._outage[k]
            if back[i]:
                self._outage[k] = (before, self.open_bucket)
            elif self.open_bucket - dated > r.ring and level[i] >= before:
                del self._outage[k]

    def _outage_floor(self, level):
        """Raise the spike level of each template back from an outage to the level it had before (a template
        back to its usual volume is no spike, and the hour of the outage is no level)."""
        for k, (before, _) in self._outage.items():
            if k < level.size and level[k] > 0:
                level[k] = max(level[k], before)

    def _spike_factors(self, keys, buckets, usable, cache):
        """The template hour and day factor of each usable line's key at its bucket (1 elsewhere), every
        template's worked out once per bucket (cache: {bucket: them}). An hour not seen yet has its prior's:
        the reference is deseasonalised as far as the hours are known."""
        factor = np.ones(keys.size)
        n = self._spike_cache[1]["level"].size
        lo, hi = int(buckets.min()), int(buckets.max())
        for bucket in (np.unique(buckets[usable]).tolist() if lo != hi else [lo]):
            if bucket not in cache:
                cache[bucket] = self.template_season.factor(np.arange(n), float(bucket * self.bucket_seconds),
                                                            self.bucket_seconds)
            at = np.flatnonzero(usable & (buckets == bucket)) if lo != hi else np.flatnonzero(usable)
            factor[at] = cache[bucket][keys[at]]
        return factor

    def _share_forecast(self, keys, buckets):
        """Each line's template's forecast share of its source's lines at its bucket: its learned odds
        times their seasonal factor, as a share (odds q: share q / (1 + q))."""
        den = self.templates.share_den[keys]
        odds = self.templates.share_num[keys] / np.where(den > 0, den, 1.0)
        odds = odds * self.share_season.factor(keys, buckets * self.bucket_seconds, self.bucket_seconds)
        return odds / (1.0 + odds)

    def _share_scores(self, keys, t_counts, s_counts, ctx, share=None):
        """Score each line by its template's count against the rest of its source's lines.

        A template's share of its source is steadier than its level: rush hours, surges and quiet
        nights move every template of a source together, so a forecast of the level carries their
        error, a forecast of the share does not. A busy template that jumps while the rest of its
        source does not (one endpoint hammered, one retry loop) stands out here long before it does
        against its level. Sparse templates (a job's clumps) are left to the level.

        The forecast is the template's seasonal share of the source's lines so far in the bucket
        (odds q: share q / (1 + q)), not its odds times the other lines so far: early in a bucket a
        dominant template's few companions may not have come yet, and a template that is already
        most of its source cannot be a multiple of its share."""
        base = self.templates
        den = base.share_den[keys]
        if share is None:
            share = self._share_forecast(keys, self._buckets(ctx.ts))
        mus = np.maximum(share * s_counts, 1e-3)
        scores = count_upper_scores(t_counts, mus, np.maximum(base.phi[keys], 1.0), base.share_rel2[keys])
        unjudged = (base.age[keys] < self.min_history) | (den <= 0) | (base.nonzero[keys] < SPARSE_FRACTION)
        return self._gated(scores, t_counts, mus, unjudged, ctx), mus

    def _share_window_scores(self, batch, buckets, t_counts, s_counts, window_counts, share, ctx):
        """Each line's template's count over SPIKE_WINDOW buckets (and, for a template already at
        spike_min_ratio times its share there, over LONG_SPIKE_WINDOW) against its share of its source's
        lines in the same window -> [(scores, window counts, forecasts, window in buckets)].

        A quiet template's spike at night has a handful of lines a minute: one bucket's share
        (_share_scores) never clears the floor at the low end of its sampling error, and its level's
        forecast is as high as the young hour-of-day factor makes it (a first night's hours, shrunk
        towards the day's mean, forecast twice what they see), so a cache-miss storm five times its
        rate read as 2.8 times its level. Its share of its source does not move with the hour (the
        night lowers a source's templates together) and the window gathers enough lines for the same
        floor (spike_min_ratio at the low end of the count's sampling error) to be passed honestly; an
        operator reads "three times its usual share of its service's lines for five minutes" as a real
        change, whatever the hour. Counts are small, so the forecast's error goes into the count's
        tail (count_upper_mixed_scores), not the log ratio's normal tail, which is far heavier there.
        share: each line's template's forecast share (_share_forecast)."""
        keys, sources = batch.template_id, batch.source_id
        base = self.templates
        den = base.share_den[keys]
        usable = ((base.age[keys] >= self.min_history + DROP_WINDOWS[-1]) & (den > 0)
                  & (base.nonzero[keys] >= SPARSE_FRACTION) & bool(ctx.warm))
        t_w, s_w = window_counts["template"], window_counts["source"]
        # A share also triples when the rest of its source falls to a third (a batch job's lines ending at
        # night): that is the others' drop, judged as a drop. The template itself must have risen too, to
        # SHARE_SPIKE_MIN_LEVEL_RATIO times its own level's forecast over the window (see _forecast).
        level_mu = window_counts["template forecast"] / SPIKE_WINDOW
        usable &= level_mu > 0
        risen = usable & (t_w >= SHARE_SPIKE_MIN_LEVEL_RATIO * SPIKE_WINDOW * level_mu)
        out = [self._share_window(keys, t_w, s_w, share, risen, SPIKE_WINDOW)]
        # the long window only for templates whose short window is already that high (as _long_window_scores)
        cand = risen & (t_w >= self.spike_min_ratio * share * s_w)
        if cand.any():
            idx = np.flatnonzero(np.isin(keys, keys[cand]))
            s_idx = np.flatnonzero(np.isin(sources, sources[idx]))   # every line of their sources counts
            t_l = t_counts[idx] + _earlier_counts(keys[idx], buckets[idx], base.obs_win, base.open_raw,
                                                  self.open_bucket, LONG_SPIKE_WINDOW)
            s_l = np.zeros(keys.size)
            s_l[s_idx] = s_counts[s_idx] + _earlier_counts(sources[s_idx], buckets[s_idx], self.sources.obs_win,
                                                           self.sources.open_raw, self.open_bucket, LONG_SPIKE_WINDOW)
            l_scores, l_mus = np.zeros(keys.size, np.float32), np.zeros(keys.size)
            l_counts = np.zeros(keys.size)
            l_counts[idx] = t_l
            risen_l = cand[idx] & (t_l >= SHARE_SPIKE_MIN_LEVEL_RATIO * LONG_SPIKE_WINDOW * level_mu[idx])
            sc, _, mu, _ = self._share_window(keys[idx], t_l, s_l[idx], share[idx], risen_l, LONG_SPIKE_WINDOW)
            l_scores[idx], l_mus[idx] = sc, mu
            out.append((l_scores, l_counts, l_mus, LONG_SPIKE_WINDOW))
        return out

    def _share_window(self, keys, t_w, s_w, share, usable, window):
        """Share-window scores of lines whose template had t_w lines of its source's s_w over `window`
        buckets (share: the template's forecast share of its source) -> (scores, t_w, forecasts, window)."""
        base = self.templates
        mus = np.maximum(share * s_w, 1e-3)
        others = s_w - t_w
        # The rest of the source is a sample too: a few of its lines say little about the share.
        judged = usable & (others >= VALUE_SHARE_MIN_OTHERS) & (poisson_lower_bound(t_w) >= self.spike_min_ratio * mus)
        scores = np.zeros(keys.size, np.float32)
        if judged.any():
            k = keys[judged]
            # as in _window_scores: the part of the per-bucket error that sampling noise explains averages
            # out over the window; the rest's own sampling error (dispersion / its count) adds to it
            disp, rel2 = np.maximum(base.phi[k], 1.0), base.share_rel2[k]
            noise = np.minimum(rel2, disp / np.maximum(mus[judged] / window, 1e-3))
            rel2 = np.maximum(rel2 - noise + noise / window, MIN_RELATIVE_ERROR ** 2) + disp / others[judged]
            scores[judged] = count_upper_mixed_scores(t_w[judged], mus[judged], disp, rel2)
        return scores, t_w, mus, window

    def _gated(self, scores, counts, mus, unjudged, ctx):
        scores[unjudged] = 0.0
        # Significant is not enough: a spike must also be large, even at the low end of its
        # sampling error (three Poisson deviations below the count).
        scores[counts - 3.0 * np.sqrt(counts) < self.spike_min_ratio * mus] = 0.0
        if not ctx.warm:
            scores[:] = 0.0
        return scores

    def _explain(self, result, key_scores, counts, mus, keys, kind, ctx, reason=None, span=None):
        reason = reason or "volume spike of " + kind + " %r: %d lines in %gs"
        span = span or self.bucket_seconds
        for i in np.flatnonzero(key_scores >= 40.0):
            i = int(i)
            if key_scores[i] < result.scores[i]:
                continue
            name = ctx.template_text(int(keys[i])) if kind == "template" else ctx.source_name(int(keys[i]))
            result.reasons[i] = reason % (name, counts[i], span)
            result.expected[i] = "about %.1f per %gs" % (mus[i], span)
            result.observed[i] = "%d per %gs" % (counts[i], span)

    # -- learning ------------------------------------------------------------------------

    def learn(self, batch, ctx, weights):
        if batch.n == 0:
            return
        self._grow(ctx.n_templates, batch)
        self._source_name = ctx.source_name
        self.template_source[batch.template_id] = batch.source_id
        buckets = self._buckets(ctx.ts)
        if self.open_bucket is None:
            self.open_bucket = int(buckets.min())
            buckets = np.maximum(buckets, self.open_bucket)
        order = np.argsort(buckets, kind="stable")
        bounds = np.flatnonzero(np.diff(buckets[order])) + 1
        host_rows = self.hosts.rows_of(batch)
        # the lines' templates, sources and weights in bucket order, counted a bucket at a time (_count)
        lines = (batch.template_id[order].astype(np.int64), batch.source_id[order].astype(np.int64),
                 weights[order].astype(np.float64), np.concatenate(([0], bounds, [order.size])))
        for j, part in enumerate(np.split(order, bounds)):
            bucket = int(buckets[part[0]])
            downtime = self._spans_restart(bucket)
            if downtime or self._not_the_sources_gap(bucket):
                self._skip_gap(bucket, counted=not downtime)
            self.resumed = False     # only the time before the first new line was downtime
            if self.restart_bucket is not None and bucket >= self.restart_bucket - 1:
                self.restart_bucket = None   # lines of the restart's time came: no later gap is downtime
            self._close_until(bucket, ctx)
            self._count(batch, buckets, bucket, lines, j, weights, ctx)
            if host_rows is not None:
                self.hosts.add(host_rows[part], weights[part])
        self._parts_of = self._parts = None
        self.values.learn(batch, self.open_bucket, ctx)

    def _count(self, batch, buckets, bucket, lines, j, weights, ctx):
        """Count the lines of `bucket` (the j-th of the batch's buckets; lines: their templates, sources,
        weights in bucket order and each bucket's bounds) into templates, sources, and the value keys and
        totals their parameters have: one kernel call (volume_kernels.count_bucket)."""
        (v_rows, v_weights, v_bounds), (t_rows, t_weights, t_bounds) = self._value_parts(batch, buckets, weights, ctx)
        t, src, v = self.templates, self.sources, self.values.base
        VK.count_bucket(lines[0], lines[1], lines[2], int(lines[3][j]), int(lines[3][j + 1]), t.open_raw, t.open_learn,
                        src.open_raw, src.open_learn, v_rows, v_weights, int(v_bounds[j]), int(v_bounds[j + 1]),
                        t_rows, t_weights, int(t_bounds[j]), int(t_bounds[j + 1]), v.open_raw, v.open_learn)

    def _value_parts(self, batch, buckets, weights, ctx):
        """The batch's value and total parameters (rows, their lines' weights, the bounds of each of the batch's
        buckets, in order) in bucket order, once per batch: learn counts them bucket by bucket."""
        if self._parts_of is not batch:
            found = self.values.params(batch, ctx)
            parts = []
            every = np.unique(buckets)   # the batch's buckets in order, as learn walks them
            for rows, at in ((found.v_rows, found.v_lines), (found.t_rows, found.t_lines)):
                order = np.argsort(buckets[at], kind="stable")
                sorted_buckets = buckets[at][order]
                bounds = np.concatenate((np.searchsorted(sorted_buckets, every), [sorted_buckets.size]))
                parts.append((rows[order].astype(np.int64), weights[at[order]].astype(np.float64), bounds))
            self._parts_of, self._parts = batch, parts
        return self._parts

    def _value_scores(self, batch, buckets, result, ctx, site=None):
        """Spikes of the heavy values of each role (tier2_values.py), judged like templates' (per bucket
        and over SPIKE_WINDOW buckets) and against the rest of their role: each line scores its values'
        best."""
        found = self.values.params(batch, ctx)
        if not found.v_rows.size or not ctx.warm:
            return
        base, t_b = self.values.base, buckets[found.t_lines]
        keep, earlier, t_earlier = self._value_pairs_worth_scoring(found, buckets[found.v_lines], t_b)
        if not keep.any():
            return
        keys, lines, params = found.v_rows[keep], found.v_lines[keep], found.v_params[keep]
        b = buckets[lines]
        counts = self._counts(keys, b, base)
        v_scores, mus, windowed, window_mus = self._spike_scores(keys, counts, b, base, ctx, self.values.season,
                                                                 site, lines)
        w_scores, w_counts, w_mus = self._window_scores(keys, counts, b, base, window_mus, windowed, ctx,
                                                        earlier[keep], site=site, lines=lines)
        # each value's total (every value of its role) over the same window, up to its line
        w_totals = self._counts(found.t_rows, t_b, base) + t_earlier
        # the level each value's window is held to besides its share: the window's forecast, or at an hour
        # of day not yet known, its bucket's (level times the young hour factor) over the window
        level_w = np.where(w_mus > 0, w_mus, SPIKE_WINDOW * mus)
        r_scores, r_mus = self._value_share_scores(keys, w_counts, w_totals[found.in_totals[keep]], level_w, ctx)
        w_mus = np.where(r_scores > w_scores, r_mus, w_mus)
        w_scores = np.maximum(w_scores, r_scores)
        windowed = w_scores > v_scores
        best = np.maximum(v_scores, w_scores)
        line_best = np.zeros(batch.n, np.float32)
        np.maximum.at(line_best, lines, best)
        explained = set()
        for j in np.flatnonzero((best >= 40.0) & (best >= result.scores[lines]) & (best >= line_best[lines])):
            i, span = int(lines[j]), (SPIKE_WINDOW if windowed[j] else 1) * self.bucket_seconds
            count, mu = (w_counts[j], w_mus[j]) if windowed[j] else (counts[j], mus[j])
            if i in explained:
                continue   # by another value of the line, as high
            explained.add(i)
            result.reasons[i] = "volume spike of template %r with %s: %d lines in %gs" % (
                ctx.template_text(int(batch.template_id[i])), self.values.describe(batch, int(params[j])), count, span)
            result.expected[i] = "about %.1f per %gs" % (mu, span)
            result.observed[i] = "%d per %gs" % (count, span)
        np.maximum(result.scores, line_best, out=result.scores)

    def _value_pairs_worth_scoring(self, found, v_buckets, t_buckets):
        """Which value parameters can score at all -> (mask, each one's lines in the window before its
        bucket, each total parameter's lines in the window before its bucket). Worked out per (key, bucket) from its count at the end of the batch, which no line of
        it exceeds, against forecasts no line of it is below (its level times season; its odds times
        the rest of its role before the bucket): the spike gates (count at the low end of its sampling
        error at least spike_min_ratio times the forecast) pass for few; the lines of the others are
        not scored line by line (a replay's batch spans many buckets of every key)."""
        base, r = self.values.base, self.spike_min_ratio
        v = _Pairs(found.v_rows, v_buckets, base.obs_win, base.open_raw, self.open_bucket, SPIKE_WINDOW)
        t = _Pairs(found.t_rows, t_buckets, base.obs_win, base.open_raw, self.open_bucket, SPIKE_WINDOW)
        parent = self.values.keys.parent[v.key] * (1 << 40) + v.bucket
        at = np.minimum(np.searchsorted(t.code, parent), t.code.size - 1)
        mine = t.code[at] == parent     # always: every value's parameter also counts for its total
        t_final, t_earlier = np.where(mine, t.final[at], 0.0), np.where(mine, t.earlier[at], 0.0)
        mu = base.level[v.key] * self.values.season.factor(v.key, v.bucket * self.bucket_seconds, self.bucket_seconds)
        w = v.final + v.earlier
        den = base.share_den[v.key]
        odds = base.share_num[v.key] / np.where(den > 0, den, 1.0)
        others_before = np.maximum(t_earlier - v.earlier, 0.0)
        can = ((v.final - 3.0 * np.sqrt(v.final) >= r * np.maximum(mu, 1e-3))
               | (w - 3.0 * np.sqrt(w) >= r * SPIKE_WINDOW * mu)
               | ((t_final + t_earlier - w >= VALUE_SHARE_MIN_OTHERS) & (w - 3.0 * np.sqrt(w) >= r * odds * others_before)))
        return can[v.inverse], v.earlier[v.inverse], t.earlier[t.inverse]

    def _value_share_scores(self, keys, w_counts, w_totals, level_w, ctx):
        """Score each value's count over SPIKE_WINDOW buckets against the rest of its role's lines in
        them (its learned odds times theirs) -> (scores, forecasts). A value's share of its role hardly
        moves with the hour (a rush hour lifts a role and its values together), so it is judged from its
        first hours on, where its level is judged only at hours of the day it has seen. Over the window,
        not per bucket: early in a bucket the rest of a role may not have come yet (see _share_scores,
        which is why a template's forecast is its share of its source's lines). As a template's share
        (_share_window_scores), a value's must also come with its count at SHARE_SPIKE_MIN_LEVEL_RATIO
        times its own level's forecast over the window (level_w): a load balancer's health checks, the
        same 120 lines every five minutes, are most of a web server's client addresses at night, when
        the customers sleep; their share quadruples and they are not up at all."""
        base = self.values.base
        den = base.share_den[keys]
        judged = ((base.age[keys] >= self.min_history + DROP_WINDOWS[-1]) & (den > 0)
                  & (base.nonzero[keys] >= SPARSE_FRACTION) & bool(ctx.warm))
        odds = base.share_num[keys] / np.where(den > 0, den, 1.0)
        others = np.maximum(w_totals - w_counts, 0.0)
        mus = np.maximum(odds * others, 1e-3)
        # The rest of the role is a sample too: a few lines of it say little (a value that is most of a
        # quiet role has five minutes with no other line every other day).
        judged &= (others >= VALUE_SHARE_MIN_OTHERS) & (w_counts - 3.0 * np.sqrt(w_counts) >= self.spike_min_ratio * mus)
        judged &= w_counts >= SHARE_SPIKE_MIN_LEVEL_RATIO * level_w
        scores = np.zeros(keys.size, np.float32)
        if judged.any():
            k = keys[judged]
            # as in _window_scores: the part of the per-bucket error that sampling noise explains averages
            # out; the rest's own sampling error (relative variance dispersion / count) adds to it
            disp, rel2 = _dispersion(base, k), base.share_rel2[k]
            noise = np.minimum(rel2, disp / np.maximum(mus[judged] / SPIKE_WINDOW, 1e-3))
            rel2 = np.maximum(rel2 - noise + noise / SPIKE_WINDOW, MIN_RELATIVE_ERROR ** 2) + disp / others[judged]
            scores[judged] = count_upper_scores(w_counts[judged], mus[judged], disp, rel2)
        return scores, mus

    def _value_parents(self):
        """Each value key's total row (a total's own row for the totals and unused rows)."""
        parent = np.arange(self.values.base.size, dtype=np.int64)
        parent[: self.values.size] = self.values.keys.parent
        return parent

    def advance(self, event_time):
        if self.open_bucket is not None and not self.resumed:
            self._close_until(int(event_time // self.bucket_seconds), None)
        found, self.pending = self.pending, []
        return found

    def _close_until(self, bucket, ctx):
        # A jump of more than a day closes one bucket per hour: silence is still seen, cheaply. A
        # jump of more than MAX_GAP_DAYS (a line stamped years ahead) closes that much and skips
        # the rest: bounded work whatever a stamp says.
        walk_to = min(bucket, self.open_bucket + int(MAX_GAP_DAYS * 86400 / self.bucket_seconds))
        while self.open_bucket < walk_to:
            # buckets walked one by one (the last day of a jump) that no line fell in: in bulk where it can
            if walk_to - self.open_bucket < 86400 / self.bucket_seconds and self._close_quiet_run(walk_to):
                continue
            self._close_bucket(ctx)
            step = 1 if walk_to - self.open_bucket < 86400 / self.bucket_seconds else int(3600 / self.bucket_seconds)
            self.open_bucket += max(step, 1)
        self.open_bucket = max(self.open_bucket, bucket)

    def _close_quiet_run(self, stop):
        """Close the empty buckets from the open one on (before `stop`) in one kernel call
        (volume_kernels.close_quiet_run: what _close_bucket does, bucket by bucket, in the same order),
        as far as none needs Python (a drop to hold): a sparse log's empty minutes (a day of them between
        two lines) cost a call, not one each. Returns how many buckets were closed (0: none, _close_bucket closes
        the open one)."""
        r, t, src, v = self.recent, self.templates, self.sources, self.values.base
        if t.open_raw.any():   # the usual case, a bucket that lines fell in: checked first (it is below too)
            return 0
        first = self.open_bucket
        if self.long.blocks or r is not None:   # a block that ends is recorded by _close_bucket
            # (_close_long_block, _learn_relative)
            stop = min(stop, (first // DROP_WINDOWS[-1] + 1) * DROP_WINDOWS[-1] - 1)
        if (r is None or self.held or first == self.partial_bucket or self.hosts.size or stop <= first or r.last_bucket != first - 1 or r.size < t.size
                or self.template_source.size < t.size
                or any(b.open_raw.any() or b.open_learn.any() for b in (t, src, v))):
            return 0
        best, window, status = np.empty(r.size), np.empty(r.size, np.int64), np.zeros(2, np.int64)
        rate = self.learning_rate / TR.OVERLAP_SLOWER
        known = self._judged_at is not None and self._judged_at[1] == t.size
        judged = self._judged.copy() if known else np.zeros(t.size, np.bool_)
        VK.close_quiet_run(
            first, int(stop), self.bucket_seconds, DROP_WINDOWS[-1], self._judged_at[0] if known else -1,
            HOUR_RATE_MIN_SHARE * 3600.0 / self.bucket_seconds, RECENT_MIN_HOURS, QUIET_HOUR_SHARE,
            3600.0 / self.bucket_seconds,
            86400.0 / self.bucket_seconds, HOUR_PRIOR_DAYS, DAY_PRIOR_WEEKS, self.learning_rate, DISPERSION_SLOWER,
            CLIP_SIGMAS, MIN_RELATIVE_ERROR, SPARSE_FRACTION, self.spike_min_ratio, ANOMALOUS_SHARE,
            1.0 - self.learning_rate / SEASON_SLOWER, self.finding_min_score, self.min_history, _WINDOWS,
            *_base_arrays(t), t.share_num, t.share_den, t.share_rel2, self.template_season.hod,
            self.template_season.dow, self.share_season.hod, self.share_season.dow, self.template_source,
            *_base_arrays(src), self.season.hod, self.season.dow,
            *_base_arrays(v), v.share_num, v.share_den, v.share_rel2, self.values.season.hod, self.values.season.dow,
            self._value_parents(),
            r.obs, r.season, r.win_obs, r.win_season, r.ref_obs, r.ref_season, r.filled, r.rel2, judged,
            TR.WINDOW_ARRAY, rate, rate / TR.SLOWER, TR.USUAL_SIGMAS, TR.MIN_REL2, TR.MIN_REFERENCE_LINES,
            best, window, status)
        closed = int(status[0])
        if closed:
            r.last_bucket = self.open_bucket = first + closed - 1
            self._judged, self._judged_at = judged, self._judged_epoch()
            if status[1]:     # the last bucket's recent level scored a drop: confirmed and held as _close_bucket does
                best, window = r.confirm(best, window, _dispersion_all(t), self.finding_min_score)
                self._hold_recent_drops(best, window, self.open_bucket * self.bucket_seconds)
                self._release()
            self.open_bucket += 1
        return closed

    def restarted(self, wall_time):
        """The restored models run again from wall_time. They may be older than the first lines read
        next (a backup restored with its checkpoints, a snapshot before a kill -9): the lines logged
        since they were saved are read first, and the time the daemon was down comes after them. So a
        gap in event time that spans the restart is downtime too, whatever came before it."""
        if self.open_bucket is not None:
            self.restart_bucket = int(wall_time // self.bucket_seconds)

    def _spans_restart(self, bucket):
        """Whether a gap of at least one empty bucket from the open bucket to `bucket` spans the restart
        (it ends at most one bucket before it: lines stamped just before the start were read after it)."""
        r = self.restart_bucket
        return r is not None and bucket - self.open_bucket >= 2 and self.open_bucket < r <= bucket + 1

    def _not_the_sources_gap(self, bucket):
        """Whether the time from the open bucket to `bucket` is downtime of the daemon or of its input."""
        if bucket <= self.open_bucket:
            return False
        if self.resumed:
            return True
        if not self.input_gap_buckets or bucket - self.open_bucket < self.input_gap_buckets:
            return False
        return self._busy_sources(self.open_bucket) >= 2

    def _busy_sources(self, bucket):
        """How many sources log at least a line a bucket at `bucket`'s time of day. Every source quiet
        together, though at least two of them log every bucket: the lines were lost on the way (a
        collector, a network), not by each source on its own. A quiet service whose few sources are
        often all idle is not busy, and its gaps are learned as usual."""
        src = self.sources
        season = self.season.factor(np.arange(src.size), bucket * self.bucket_seconds, self.bucket_seconds)
        busy = (src.age >= self.min_history) & (src.level * season >= 1.0)
        return int(busy.sum())

    def input_gaps(self, ts, before):
        """The input's gaps among event times `ts` (the latest line before them at `before`, or None):
        each (start, end) of at least input_gap_seconds with no line while two or more sources are busy
        (see _busy_sources). Other tiers forgive what such a gap cut: a workflow's steps lost in it."""
        gap = self.input_gap_buckets * self.bucket_seconds
        if not gap or self.open_bucket is None or ts.size == 0:
            return ()
        first = float(ts.min()) if before is None else min(float(ts.min()), before)
        if float(ts.max()) - first < gap:     # a busy stream's batch spans seconds: nothing to sort
            return ()
        times = np.sort(ts if before is None else np.append(ts, before))
        at = np.flatnonzero(np.diff(times) >= gap)
        return tuple((float(times[i]), float(times[i + 1])) for i in at
                     if self._busy_sources(int(times[i] // self.bucket_seconds)) >= 2)

    def _skip_gap(self, bucket, counted=True):
        """Resume counting at `bucket` as if the gap had not been: no bucket in it is judged (no drop,
        no silence) or learned as zero counts. The open bucket (cut short by the gap) is dropped, the
        drop windows start empty, and the new bucket, which began before its first line, is not judged
        or learned either (see _close_bucket)."""
        for base in (self.templates, self.sources, self.values.base, self.hosts.base):
            for arr in (base.open_raw, base.open_learn, base.obs_win, base.exp_win, base.obs_sum, base.exp_sum):
                arr[:] = 0.0
        if self.recent is not None:
            self.recent.clear()
        self.long.clear()
        self.clock.clear()
        if counted and not self.resumed:   # an input gap; downtime is not the input's
            self.gaps_skipped += 1          # counted and logged by the worker (worker/detector.py)
            self.last_gap_seconds = (bucket - self.open_bucket) * self.bucket_seconds
        self.open_bucket = self.partial_bucket = bucket

    def _close_bucket(self, ctx):
        if self._drop_partial_bucket():
            return
        when = self.open_bucket * self.bucket_seconds
        t, src, r = self.templates, self.sources, self.recent
        # The templates the recent level judges (steady: seen through RECENT_MIN_HOURS hours of the day and
        # not intermittent, see _intermittent; a job that has only ever run is not known to be one, its first
        # run ending is no drop) are worked out again every DROP_WINDOWS[-1] buckets, by the kernel: what is
        # steady moves by the hour. From the hour tables as they were before this bucket, the baseline after.
        rejudge = r is not None and self._judged_at != self._judged_epoch()
        judged = np.zeros(t.size if r is not None else 0, np.bool_) if rejudge or r is None else self._judged
        # a ring that starts again (after a jump) or grows is changed after the templates' drops are held
        # (a hold keeps the recent level as it was): the kernel stops after the templates then
        ring_changes = r is not None and ((r.last_bucket is not None and self.open_bucket != r.last_bucket + 1)
                                          or r.size < t.size)
        t_out, s_out, status = _close_outputs(t.size), _close_outputs(src.size), np.zeros(3, np.int64)
        self._close_kernel(1, ring_changes, rejudge, judged, t_out, s_out, status)
        if status[0]:
            self._hold_drops(t, "template", t_out, when)
            if ring_changes:
                if r.last_bucket is not None and self.open_bucket != r.last_bucket + 1:
                    r.clear()
                r.ensure(t.size)
            self._close_kernel(2, False, rejudge, judged, t_out, s_out, status)
        if r is not None:
            r.last_bucket = self.open_bucket
            if rejudge:
                self._judged, self._judged_at = judged, self._judged_epoch()
            if status[1]:   # the recent level scored a drop: confirmed against its robust level, then held
                best, window = r.confirm(self._r_best, self._r_window, _dispersion_all(t), self.finding_min_score)
                self._hold_recent_drops(best, window, when)
        if status[2]:   # a source scored a drop (value drops are not judged: tier2_values.py says why)
            self._hold_drops(src, "source", s_out, when)
        self._clock_silences(when)
        if self.hosts.size:
            hour, day = (int(v) for v in _hour_and_day(when))
            keep = 1.0 - self.learning_rate / SEASON_SLOWER
            self._close_hosts(hour, day, 3600.0 / self.bucket_seconds, 86400.0 / self.bucket_seconds, keep, when)
        self._close_long_block(when)
        self._hold_relative_drops(when)
        self._learn_relative()
        self._release()
        self._track_outages()

    def _close_kernel(self, start, stop_early, rejudge, judged, t_out, s_out, status):
        """One call of volume_kernels.close_bucket for the open bucket (see _close_bucket)."""
        t, src, v, r = self.templates, self.sources, self.values.base, self.recent
        size = r.size if r is not None else 0
        if self._r_best.size != size:   # every entry is written by the kernel: kept from bucket to bucket
            self._r_best, self._r_window = np.empty(size), np.empty(size, np.int64)
        key = (self.learning_rate, self.spike_min_ratio, self.finding_min_score, self.bucket_seconds)
        if self._close_settings[0] != key:   # worked out again only when one changes (set_learning_rate)
            rate = self.learning_rate / TR.OVERLAP_SLOWER
            self._close_settings = key, (
                (3600.0 / self.bucket_seconds, 86400.0 / self.bucket_seconds, HOUR_PRIOR_DAYS, DAY_PRIOR_WEEKS,
                 self.learning_rate, DISPERSION_SLOWER, CLIP_SIGMAS, MIN_RELATIVE_ERROR, SPARSE_FRACTION,
                 self.spike_min_ratio, ANOMALOUS_SHARE, 1.0 - self.learning_rate / SEASON_SLOWER,
                 self.finding_min_score, self.bucket_seconds, HOUR_RATE_MIN_SHARE * 3600.0 / self.bucket_seconds,
                 QUIET_HOUR_SHARE), (rate, rate / TR.SLOWER, TR.USUAL_SIGMAS, TR.MIN_REL2, TR.MIN_REFERENCE_LINES))
        settings, recent_settings = self._close_settings[1]
        recent = ((r.obs, r.season, r.win_obs, r.win_season, r.ref_obs, r.ref_season, r.filled, r.rel2)
                  if r is not None else _NO_RECENT)
        VK.close_bucket(self.open_bucket, start, stop_early, r is not None, rejudge, settings, recent_settings,
                        self.min_history, RECENT_MIN_HOURS, _WINDOWS, _base_arrays(t),
                        (t.share_num, t.share_den, t.share_rel2), (self.template_season.hod, self.template_season.dow),
                        (self.share_season.hod, self.share_season.dow), self.template_source, _base_arrays(src),
                        (self.season.hod, self.season.dow), _base_arrays(v), (v.share_num, v.share_den, v.share_rel2),
                        (self.values.season.hod, self.values.season.dow), self._value_parents(), recent, judged,
                        TR.WINDOW_ARRAY, t_out, s_out, self._r_best, self._r_window, status)

    def _hold_drops(self, base, kind, out, when):
        """Hold the drops of a key set's closing bucket (close_bucket's out: best, best_window) that scored
        finding_min_score or more."""
        best, best_window = out[2], out[3]
        if best.size and best.max() >= self.finding_min_score:
            for key in np.flatnonzero(best >= self.finding_min_score).tolist():
                self._hold(self._drop_finding(base, kind, key, int(best_window[key]), float(best[key]), when),
                           kind, key)

    def _close_hosts(self, hour, day, per_hour, per_day, keep, when):
        """Close the open bucket of every (source, host) row and hold the silences of steady ones whose
        source still logs (tier2_hosts.py)."""
        h = self.hosts
        if not h.size:
            return
        base, n = h.base, h.base.size
        season, weight = np.empty(n), np.empty(n)
        best, best_window = np.empty(n, np.float32), np.empty(n, np.int64)
        VK.close_base(h.season.hod, h.season.dow, hour, day, per_hour, per_day, HOUR_PRIOR_DAYS, DAY_PRIOR_WEEKS,
                      *_base_arrays(base), self.open_bucket % DROP_WINDOWS[-1], _WINDOWS, self.min_history,
                      self.learning_rate, DISPERSION_SLOWER, CLIP_SIGMAS, MIN_RELATIVE_ERROR, SPARSE_FRACTION,
                      self.spike_min_ratio, ANOMALOUS_SHARE, keep, season, weight, best, best_window)
        base.open_raw[:] = 0.0
        base.open_learn[:] = 0.0
        rows = np.arange(h.size)
        maybe = (best[: h.size] >= self.finding_min_score) & (base.age[: h.size] >= self.min_history + DROP_WINDOWS[-1])
        if not maybe.any():
            return
        steady = maybe & ~_intermittent(base, h.season, rows, self.bucket_seconds)
        sources = np.array([p[0] for p in h.pairs], np.int64)
        self.sources.ensure(int(sources.max()) + 1)
        source_obs = self.sources.obs_sum[sources]
        for row, k, score in h.silences(steady, source_obs, _dispersion_all(base), self.finding_min_score):
            self._hold(self._host_finding(row, DROP_WINDOWS[k], score, when), "host", row)

    def _host_finding(self, row, window, score, when):
        sid, host = self.hosts.pairs[row]
        span = window * self.bucket_seconds
        exp = self.hosts.base.exp_sum[row, DROP_WINDOWS.index(window)]
        name = self._source_name(sid)
        ts = when + self.bucket_seconds
        return Finding(tier=self.name, ts=ts, key="host:%d" % row, score=score,
                       reason="source silent on host %s: no lines from %s on %s in the last %gs, expected about %.0f"
                              % (host, name, host, span, exp),
                       expected="about %.1f per %gs from %s" % (exp, span, host),
                       observed="0 per %gs from %s" % (span, host), source=str(sid), since=ts - span)

    def _drop_partial_bucket(self):
        """Forget the open bucket's counts, unjudged and unlearned, when it is the bucket time resumed in
        (partial_bucket: it began before the first line) -> whether it was."""
        if self.open_bucket != self.partial_bucket:
            return False
        self.partial_bucket = None
        for base in (self.templates, self.sources, self.values.base, self.hosts.base):
            base.open_raw[:] = 0.0
            base.open_learn[:] = 0.0
        return True

    def _close_long_block(self, when):
        """When the closing bucket ends a block of DROP_WINDOWS[-1] buckets, record the sources' block
        (their longest drop window's sums) and raise the steady ones low over a long window (tier2_long.py).
        Such a drop has lasted longer than drop_hold_seconds already: it is raised confirmed."""
        if not self.long.blocks or (self.open_bucket + 1) % DROP_WINDOWS[-1]:
            return
        src = self.sources
        obs_b, exp_b = src.obs_sum[:, -1], src.exp_sum[:, -1]
        self.long.record(obs_b, exp_b)
        rest = rest_of_site(obs_b, exp_b)
        self.load_long.record(obs_b, self.load.forecast(rest))
        keys = np.arange(src.size)
        # a job-like source (quiet in most hours) is not judged; a sparse one is (its lines are what the long
        # windows are for, and a drop makes a steady source look sparse: most of its buckets go empty)
        judged = ((src.age >= self.min_history + DROP_WINDOWS[-1] * (self.long.blocks + 1))
                  & ~_quiet_most_hours(self.season, keys, self.bucket_seconds)
                  & self._hours_seen_twice(when, src.size))
        disp = _dispersion_all(src)
        by_clumps = np.zeros(src.size, np.bool_)
        busy = self._busy_hours(when, src.size)
        # Against the rest of the site's load (_load_drops) a busy source is judged too, in its busy hours: a
        # busy source's quarter hour has the lines to show a drop where its seasons can, but the forecast from
        # the load follows the load the site had over the very quarter and its error can be far narrower than
        # the seasonal one (a service's requests at two fifths for two hours, each quarter within its seasonal
        # error). Not in its quiet hours: the site's mix changes by hour (a night of crawlers and batch jobs),
        # and one line through the log of the load does not know a source's night share (a shop's web server at
        # night read as a drop to a third).
        load_judged = judged.copy()
        for sid in np.flatnonzero(judged).tolist():
            # Only a source whose usual quarter hour (its long-run mean) holds too few lines to show a drop
            # to half by Poisson sampling alone (the forecast taken as exact as it can be: about 45 lines
            # or fewer) is judged over long windows. A busier source's quarter hour has the lines, and
            # where it cannot show a drop (quiet hours that its seasons do not know yet, such as when a
            # night job ends), a longer window only adds more of that error. Unless its lines come in clumps
            # of one event each (_clumps): too few events then, judged in its busy hours (_busy_hours) and
            # against the rest of the site (LongWindows.site_scaled).
            quarter = DROP_WINDOWS[-1] * src.total[sid] / max(src.age[sid], 1)
            few = count_lower_score(0.5 * quarter, quarter, 1.0, MIN_RELATIVE_ERROR ** 2) < self.finding_min_score
            judged[sid] = few or (busy[sid] and count_lower_score(0.5 * quarter, quarter, _clumps(src, sid),
                                                                  MIN_RELATIVE_ERROR ** 2) < self.finding_min_score)
            by_clumps[sid] = judged[sid] and not few
            load_judged[sid] = few or busy[sid]
        forecast, judged_disp = None, disp
        if by_clumps.any():
            forecast = self.long.site_scaled(by_clumps)
            # judged by its clumps: at least as scattered as its blocks were learned to be (a job's eight lines
            # learned a per-minute dispersion of five, its quarter hours one of eight)
            n = min(disp.shape[0], self.long.bdisp.shape[0])
            judged_disp = disp.copy()
            judged_disp[:n] = np.where(by_clumps[:n], np.maximum(disp[:n], self.long.bdisp[:n]), disp[:n])
        found = self.long.drops(judged, judged_disp, self.finding_min_score, forecast) if judged.any() else []
        found += self._sequential_drops(judged, judged_disp, {f[0] for f in found}, forecast)
        followed = self._load_drops(load_judged, judged_disp, {f[0] for f in found})
        found += followed
        for sid in {f[0] for f in found}:   # an outage raised by either forecast: neither raises its blocks again
            self.long.since[sid] = self.load_long.since[sid] = 0
        # a block stands for its buckets, but consecutive ones overlap in what they say of the forecast
        # (as tier2_recent's windows do): learned at a quarter of its buckets' rate
        skip = [f[0] for f in found] + np.flatnonzero(self.long.raised).tolist()
        # a run the load test found is not learned from while it lasts, raised or set aside as another outage's
        # tail (_load_drops): its quarters are low against the site's load, whichever test said it first
        skip += np.flatnonzero(self.load_long.raised).tolist()
        skip += np.flatnonzero(self.clock.raised).tolist()   # a clock's silence must not teach it scatter
        rate = min(1.0, self.learning_rate * DROP_WINDOWS[-1] / 4.0)
        self.long.learn(disp, rate, skip, DISPERSION_SLOWER)
        self._learn_load(obs_b, rest, disp, rate, skip)
        for sid, width, score, obs, exp in found:
            span = width * DROP_WINDOWS[-1] * self.bucket_seconds
            what = "silent" if obs == 0 else "volume drop"
            self.held.pop("source:%d" % sid, None)
            self._note_outage("source", sid)   # half an hour low at least: an outage
            self.pending.append(Finding(
                tier=self.name, ts=when + self.bucket_seconds, key="source:%d" % sid, score=float(score),
                reason="source %s: %d lines in the last %gs%s" % (
                    what, obs, span, LOAD_REASON if (sid, width, score, obs, exp) in followed else ""),
                expected="about %.1f per %gs" % (exp, span), observed="%d per %gs" % (obs, span),
                source=str(sid), confirmed=True, since=when + self.bucket_seconds - span if obs == 0 else None))

    def _load_drops(self, judged, disp, already):
        """The sources judged over long windows that are low over one, or by the sequential test, against their
        forecast from the rest of the site's lines (tier2_load.py), as LongWindows.drops tuples, but not those
        in `already`. Only where that forecast's learned block error is narrower than the seasonal one's: a
        source that follows the site's load is forecast better by the load than by its own few bursty days,
        and one that does not (a heartbeat, a job on its own schedule) learns a wide error against the load."""
        lw, n = self.load_long, judged.size
        lw.ensure(n)
        # the learned means as they are, not floored (LongWindows.error): a mail relay's quarters scatter by their
        # clumps alone against either forecast, and the better fit is the lower mean, below the floor
        follow = judged & (self.load.learned[:n] >= LOAD_MIN_BLOCKS) & (lw.rel2[:n] < self.long.rel2[:n])
        found = lw.drops(follow, disp, self.finding_min_score) if follow.any() else []
        fixed = len(found)
        if self.sequential_h:   # every block: the evidence of a source no longer judged starts again
            scale = self.finding_min_score / self.sequential_h
            found += [(src, width, min(100.0, scale * evidence), obs, exp)
                      for src, width, evidence, obs, exp in lw.sequential(follow, disp, self.sequential_h,
                                                                          max_ratio=LOAD_MAX_RATIO)
                      if src not in {f[0] for f in found}]
        # still low now: its newest quarter at most DROP_MAX_RATIO of its forecast (LOAD_MAX_RATIO for a run of
        # the sequential test). A window reaching over the end of an outage (a source back within its last
        # quarter) is that outage raised again, late
        newest = (lw.pos - 1) % lw.blocks
        return [f for k, f in enumerate(found) if f[0] not in already
                and not self._outage_within(f[0], f[1] * DROP_WINDOWS[-1])
                and lw.obs[f[0], newest] <= (DROP_MAX_RATIO if k < fixed else LOAD_MAX_RATIO) * lw.exp[f[0], newest]]

    def _outage_within(self, source, buckets):
        """Whether an outage of the source or of one of its templates was raised, or dated again while coming
        back (_note_outage, _track_outages), within its last `buckets` buckets or the quarter hour before them: a
        long window over it, or one that begins where it was last raised (the blocks since a raise are judged
        again, see LongWindows.drops), is that outage and its tail, which another test raised already (a drop
        against the seasonal forecast, a silence on its clock)."""
        since = self.open_bucket + 1 - buckets - DROP_WINDOWS[-1]
        return any(dated >= since and k < self.template_source.size and self.template_source[k] == source
                   for k, (_, dated) in self._outage.items())

    def _learn_load(self, obs, rest, disp, rate, skip):
        """Learn the newest block's forecast from the rest of the site (tier2_load.py): its error on the load
        ring, and each source's line against the rest; an unusual block (USUAL_SIGMAS off that forecast: a drop
        not yet raised) teaches DISPERSION_SLOWER times slower, a raised one (skip) not at all."""
        lw, n = self.load_long, obs.size
        slow = lw.unusual(disp, n)
        lw.learn(disp, rate, skip, DISPERSION_SLOWER)
        self.load.learn(obs, rest, rate, skip, slow, DISPERSION_SLOWER)

    def _clock_silences(self, when):
        """Raise the sources on a clock whose last DROP_WINDOWS[-1] buckets were empty though their forecast
        held a few ticks (tier2_clock.py), at an hour of day seen as the long windows' (LONG_MIN_DAYS). Such a
        silence has lasted longer than drop_hold_seconds already: it is raised confirmed, from its first empty
        bucket, in place of a drop of the source held meanwhile."""
        src, lw = self.sources, self.long
        n = min(src.size, lw.bdisp.shape[0])
        if not lw.blocks or not n:
            return
        clock = clock_like(lw.bdisp[:n], lw.learned[:n], lw.nonzero[:n], src.clump[:n])
        if not clock.any():
            self.clock.silences(src.obs_sum[:n, -1], src.exp_sum[:n, -1], clock, src.clump[:n], lw.bdisp[:n],
                                lw.errors(n), self.finding_min_score)   # forgets the silences that ended
            return
        hour = int(when % 86400 // 3600)
        judged = clock & (src.age[:n] >= self.min_history + DROP_WINDOWS[-1]) & (
            self.season.hod[:n, 2, hour] >= LONG_MIN_DAYS * 3600.0 / self.bucket_seconds)
        for sid, score in self.clock.silences(src.obs_sum[:n, -1], src.exp_sum[:n, -1], judged, src.clump[:n],
                                              lw.bdisp[:n], lw.errors(n), self.finding_min_score):
            exp, span = float(src.exp_sum[sid, -1]), DROP_WINDOWS[-1] * self.bucket_seconds
            self.held.pop("source:%d" % sid, None)
            self._note_outage("source", sid)
            self.pending.append(Finding(
                tier=self.name, ts=when + self.bucket_seconds, key="source:%d" % sid, score=score,
                reason="source silent: 0 lines in the last %gs, its clock's ticks missed" % span,
                expected="about %.1f per %gs" % (exp, span), observed="0 per %gs" % span, source=str(sid),
                confirmed=True, since=self._silent_since(src, sid)))

    def _sequential_drops(self, judged, disp, already, forecast=None):
        """The long windows' sources whose sequential test (tier2_long.LongWindows.sequential) reached its
        threshold at this block, as drops() tuples, but not those a fixed window raised now. Scored
        finding_min_score at the threshold and more with the evidence: it is confirmed by construction
        (a run of low quarters, longer than drop_hold_seconds)."""
        if not self.sequential_h:
            return []
        found = self.long.sequential(judged, disp, self.sequential_h, forecast)
        scale = self.finding_min_score / self.sequential_h
        return [(src, width, min(100.0, scale * evidence), obs, exp)
                for src, width, evidence, obs, exp in found if src not in already]

    def _hours_seen_twice(self, when, n):
        """Per source: whether every hour of day the long windows span (up to `when`) was seen on at least
        LONG_MIN_DAYS days' worth of buckets. Over hours, the misfit of seasons that have not seen an
        hour in full (a first night lower than the day's shape says) is a drop of every quarter of it."""
        span = self.long.blocks * DROP_WINDOWS[-1] * self.bucket_seconds
        hours = {int(t % 86400 // 3600) for t in np.arange(when - span + self.bucket_seconds, when + 1, 3600.0)}
        hours.add(int(when % 86400 // 3600))
        seen = self.season.hod[:n, 2, sorted(hours)].min(axis=1)
        return seen >= LONG_MIN_DAYS * 3600.0 / self.bucket_seconds

    def _busy_hours(self, when, n):
        """Per source: whether every hour of day the long windows span (up to `when`), and the hour after, is
        one of its busy hours, its usual count there (_hour_rate) at least BUSY_HOUR_SHARE of its long-run mean.
        Hour-of-day factors are shrunk towards 1 while they are young, so a source's forecast in its quiet
        hours is too high: the nights of a job queue were forecast at two to five times the jobs that came,
        for hours on end, and judged by its jobs, such a night read as a drop of the source. The hour after
        too: an hour whose second half is quiet (a nightly batch that ends at half past) has a usual count
        between both, too high for the quiet half, and its end read as a drop."""
        src = self.sources
        span = self.long.blocks * DROP_WINDOWS[-1] * self.bucket_seconds
        hours = {int(t % 86400 // 3600) for t in np.arange(when - span + self.bucket_seconds, when + 1, 3600.0)}
        hours |= {int(when % 86400 // 3600), int((when + 3600.0) % 86400 // 3600)}
        keys = np.arange(n)
        mean = src.total[:n] / np.maximum(src.age[:n], 1)
        rates = np.array([_hour_rate(self.season, keys, h, self.bucket_seconds) for h in sorted(hours)])
        return (rates >= BUSY_HOUR_SHARE * mean[None, :]).all(axis=0) & (mean > 0)

    def _hold_recent_drops(self, best, window, when):
        """Hold the drops against the recent level that RecentLevel.close or confirm scored (best > 0)."""
        if not best.any():
            return
        for key in np.flatnonzero(best > 0).tolist():
            name = "template:%d" % key
            if name in self.held and self.held[name][0].score >= best[key]:
                continue
            if self._surged.get(int(self.template_source[key]), -self.recent.ring) > self.open_bucket - self.recent.ring:
                # Its source surged within the hour before (a scraper, a campaign, a retry storm: raised): that
                # hour is no level of its templates, and their return from the surge read as a drop against it
                # (a surge filling half the hour is its median too). The seasonal, site and long tests still judge.
                continue
            obs, factor = self.recent.window(self.open_bucket, key, int(window[key]))
            span = int(window[key]) * self.bucket_seconds
            self._hold(Finding(tier=self.name, ts=when + self.bucket_seconds, key=name, score=float(best[key]),
                               reason="template volume drop: %d lines in the last %gs, against its level over "
                                      "the hour before" % (obs, span),
                               expected="about %.1f per %gs" % (self.recent.robust_level(key) * factor, span),
                               observed="%d per %gs" % (obs, span), template_id=key,
                               source=str(int(self.template_source[key]))), "template", key)

    def _hold_relative_drops(self, when):
        """Hold the drop of a source whose steady templates pooled are low against their level over the hour
        before times the rest of the site's ratio to theirs (_relative_score, with the source's learned relative
        error), over 5 or 15 minutes. A quiet service (a dozen lines a minute over a few templates) that falls
        to a third is low by many of that error, while neither each of its templates against its own level
        (a few lines each, at the recent test's floor of error) nor the source against young seasons (a morning
        ramp they misfit) reaches the finding score: the pooled test confirmed such a drop but never found one.
        Not a source already held, nor one a template of whose pool surged within the hour before (the pool's
        return reads as a drop, see _hold_recent_drops; a burst of one of its errors, no member, leaves the pool's
        level as it was); a site-wide fall moves the rest with it and is no drop of any one source. Judged at the
        end of every 5 minutes (DROP_WINDOWS[1]), not every minute: every source's pool and windows cost about
        0.1 ms a source, a quarter of a replay's time more at every bucket, and an outage held a few minutes later
        is the same outage."""
        if self.recent is None or self._judged is None or (self.open_bucket + 1) % DROP_WINDOWS[1]:
            return
        pools = self._site_pools()
        if len(pools) < 3:
            return
        rate = min(1.0, self.learning_rate * DROP_WINDOWS[-1] / TR.OVERLAP_SLOWER)
        sources = list(pools)
        # every pool's windows once per width: each source's rest is the others' (as _learn_relative)
        windows = {w: self._site_windows([pools[s] for s in sources], w) for w in DROP_WINDOWS[1:]}
        for i, source in enumerate(sources):
            name = "source:%d" % source
            error = self.relative.error(source, rate)
            if error is None or name in self.held or self._pool_surged(pools[source][0]):
                continue
            lines = float(pools[source][2].sum())
            width, score = max(((w, self._relative_of(ws[i: i + 1], ws[:i] + ws[i + 1:], error, lines, True)[0])
                                for w, ws in windows.items()), key=lambda found: found[1])
            if score < self.finding_min_score:
                continue
            own, rest = windows[width][i: i + 1], windows[width][:i] + windows[width][i + 1:]
            obs, exp, _ = self._combined(own)
            r_obs, r_exp, _ = self._combined(rest)
            span = width * self.bucket_seconds
            self._hold(Finding(tier=self.name, ts=when + self.bucket_seconds, key=name, score=float(score),
                               reason="source volume drop: %d lines in the last %gs, against its level over the "
                                      "hour before times the rest of the site's" % (obs, span),
                               expected="about %.1f per %gs" % (exp * _rest_ratio(rest, r_obs, r_exp), span),
                               observed="%d per %gs" % (obs, span), source=str(source)), "source", source)

    def _pool_surged(self, members):
        """Whether a template among these surged (_note_surges) within the recent level's ring."""
        since = self.open_bucket - self.recent.ring
        return any(self._surged_templates.get(key, since) > since for key in members.tolist())

    def _hold(self, finding, kind, key):
        """Keep a drop or silence back until drop_hold_seconds after it was first seen (the earliest
        finding of its key stands for the episode, at its own time)."""
        if not self.hold_buckets:
            if finding.since is not None or "hour before" in finding.reason:
                self._note_outage(kind, key)
            self.pending.append(finding)
        elif finding.key not in self.held:
            # the key's spread as it was: the drop's own buckets, learned meanwhile, widen it
            base = {"template": self.templates, "source": self.sources, "host": self.hosts.base}[kind]
            spread = (float(_dispersion(base, np.array([key]))[0]), float(base.rel2[key]))
            self.held[finding.key] = [finding, kind, key, self.open_bucket + self.hold_buckets, spread,
                                      self._recent_reference(kind, key)]
        elif self._back_before_silence(kind, key):
            # the key came back between the held drop and this silence (a minute's dip, its usual volume
            # for minutes, then nothing): the silence is an episode of its own, dated and held from its
            # own onset; the dip is no part of it, and neither is what else the source raised around it
            del self.held[finding.key]
            self._hold(finding, kind, key)
        elif finding.score > self.held[finding.key][0].score or (
                finding.since is not None and self.held[finding.key][0].since is None
                and finding.score >= self.held[finding.key][0].score):
            # a stronger finding, or a drop that went silent: the absence is what the episode is (the
            # source logs nothing at all), and it began no later than the drop was first seen
            first = self.held[finding.key][0]
            finding.ts = first.ts
            if finding.since is not None:
                finding.since = min(finding.since, first.ts)
            self.held[finding.key][0] = finding

    def _back_before_silence(self, kind, key):
        """Whether a held key that has no line in the closing bucket went silent after being back at its
        usual volume: its run of empty buckets (_silent_since) is a silence by itself, and the buckets
        between the one after it was first seen low and that run are together not low, both by the
        key's spread as it was when held. Hosts are not judged (a host is held only when silent), nor
        buckets the ring no longer holds."""
        if kind == "host":
            return False
        base = self.templates if kind == "template" else self.sources
        ring = base.obs_win.shape[1]
        if base.obs_win[key, self.open_bucket % ring] > 0:
            return False
        first, _, _, _, spread, _ = self.held["%s:%d" % (kind, key)]
        silent_from = int(round(self._silent_since(base, key) / self.bucket_seconds))
        # An empty minute or two of a quiet key is no silence: a template of a few lines a minute at a
        # quarter of its traffic (a service that lost most of its requests upstream) has many, and were
        # each taken for one, its drop would be held afresh at every one of them and released only once
        # its recent level had sunk into the drop. The run must be significant alone, as a silence is.
        run = np.arange(silent_from, self.open_bucket + 1) % ring
        if count_lower_score(0.0, float(base.exp_win[key, run].sum()), *spread) < self.finding_min_score:
            return False
        start = max(int(round(first.ts / self.bucket_seconds)), self.open_bucket - ring + 1)
        between = np.arange(start, silent_from) % ring
        exp = float(base.exp_win[key, between].sum())
        if between.size == 0 or exp <= 0:
            return False
        obs = float(base.obs_win[key, between].sum())
        return count_lower_score(obs, exp, *spread) < self.finding_min_score

    def held_sources(self, handed=()):
        """{source id: when it went low} for the drops and silences of whole sources held back now (see
        _hold), raised and not yet handed over (advance), or among `handed` (findings handed over, not yet
        recorded): the start of a silence, else when the drop was first seen."""
        found = [f for f, kind, *_ in self.held.values() if kind == "source"]
        found += [f for f in list(self.pending) + list(handed) if f.tier == self.name and f.key.startswith("source:")]
        out = {}
        for f in found:
            start = f.ts if f.since is None else f.since
            sid = int(f.key.split(":")[1])
            out[sid] = min(out.get(sid, start), start)
        return out

    def _release(self):
        """Raise the held drops whose time has come if their key is still low over the last
        drop_hold_seconds (judged over the drop windows that fit in it); withdraw the others: the key
        came back (a restart, a deploy), the quiet spell was too short to be an outage."""
        if not self.held:
            return
        windows = [k for k, w in enumerate(DROP_WINDOWS) if w <= max(self.hold_buckets, 1)]
        for name, (finding, kind, key, release, spread, recent) in list(self.held.items()):
            if release > self.open_bucket:
                continue
            del self.held[name]
            recent_low = self._recent_still_low(kind, key, recent, windows)
            if recent_low or self._still_low(kind, key, windows, spread, recent):
                finding.confirmed = True
                onset = self._drop_onset(kind, key)
                if onset > finding.ts:   # first seen at a dip before it: no absence before it began either
                    finding.ts = onset
                    finding.since = None if finding.since is None else max(finding.since, onset)
                self.pending.append(finding)
                # an outage (a silence, or low against the hour before: not the young seasons' lag at night)
                if recent_low or finding.since is not None:
                    self._note_outage(kind, key)
            else:
                self.drops_withdrawn += 1

    def _drop_onset(self, kind, key):
        """When a held drop of a key began: the start of the bucket from which its count fell against its
        forecast (change_point over the ring of its last DROP_WINDOWS[-1] buckets). A drop is held from the
        first bucket it was seen low, and a chance dip just before a service lost its traffic is that
        bucket: an outage dated from the dip begins before it did (an operator's rule credits an alert
        only from the outage's start). _release dates a drop no earlier than it was first seen: this only
        moves it later, to the fall. Hosts (held only when silent, dated by since) are not re-dated."""
        if kind == "host":
            return -math.inf
        base = self.templates if kind == "template" else self.sources
        ring = base.obs_win.shape[1]
        first = self.open_bucket - ring + 1
        slots = np.arange(first, self.open_bucket + 1) % ring
        return (first + change_point(base.obs_win[key, slots], base.exp_win[key, slots])) * self.bucket_seconds

    def _judged_epoch(self):
        return self.open_bucket // DROP_WINDOWS[-1], self.templates.size

    def _recent_reference(self, kind, key):
        """A key's recent level as it was when its drop was first seen (its own buckets would lower it),
        for _recent_still_low: (the template's own: level, reference lines, dispersion, error; None when
        the recent test does not judge it, or for a source), and its source's pool and the rest of the
        site's (_site_reference)."""
        r = self.recent
        if r is None or kind == "host":
            return None
        own = None
        if kind == "template" and key < r.size and r.filled[key] >= r.ring and r.ref_obs[key] > 0:
            disp = float(_dispersion(self.templates, np.array([key]))[0])
            own = r.robust_level(key), float(r.ref_obs[key]), disp, float(r.rel2[key])
        source = int(self.template_source[key]) if kind == "template" else key
        site = self._site_reference(source)
        if site is not None and own is not None:
            site = site + (self._alone_in_pool(site[0], key, own[0]),)
        return own, site

    @staticmethod
    def _alone_in_pool(pool, key, robust):
        """A template's own part of its source's pool (RecentLevel.pool_reference), or None where it is no
        member, at its robust level (robust: RecentLevel.robust_level) where that is lower. A service's
        pool holds its housekeeping (status reads) beside its main flow: when only the flow falls, the
        pool falls by the flow's share of it, and the flow's fall against the rest of the site is the
        evidence. The pool's level is scaled by the pool's median minute, not the template's: a spike of
        the template alone in the hour before (a burst of cache misses) is no level of it."""
        at = np.flatnonzero(pool[0] == key)
        if not at.size:
            return None
        keys, levels, lines, disp = (part[at] for part in pool)
        return keys, np.minimum(levels, robust), lines, disp

    def _pool_members(self, n):
        """Which of the first n templates pool into their source's traffic: steady ones the recent level
        judges (see _close_bucket), of min_history buckets or more. A job's or an error's template coming
        and going is no traffic of the service (not steady), nor is a template whose count varies well
        below a Poisson count's (a pool stats line, a heartbeat per host: a timer): it would only hide
        the traffic's fall."""
        t, judged = self.templates, self._judged
        if judged is None:
            return np.zeros(0, np.bool_)
        n = min(n, judged.size)
        return judged[:n] & (t.phi[:n] >= TR.CLOCK_DISPERSION) & (t.age[:n] >= self.min_history)

    def _site_pools(self):
        """{source: its pool} for every source with one (RecentLevel.pool_reference of its _pool_members)."""
        t = self.templates
        members = self._pool_members(min(t.size, self.template_source.size))
        src = self.template_source[: members.size]
        disp = _dispersion_all(t)
        out = {}
        for source in np.unique(src[members]).tolist():
            ref = self.recent.pool_reference(np.flatnonzero(members & (src == source)), disp)
            if ref is not None:
                out[source] = ref
        return out

    def _site_reference(self, source):
        """(the source's pool, the other sources' pools) (_site_pools), or None: the rest must be at least
        two other sources (one other may be the source's own chain, a proxy in front of it)."""
        pools = self._site_pools()
        if source not in pools or len(pools) < 3:
            return None
        return pools[source], [ref for s, ref in pools.items() if s != source]

    def _site_windows(self, pools, width):
        """Per pool: (lines, forecast, deviation) over the ring's last `width` buckets (RecentLevel.pool_window;
        the deviation is the square root of its variance, which add up across pools as across the
        templates of one: all moving together, the cautious choice)."""
        out = []
        for ref in pools:
            obs, exp, disp = self.recent.pool_window(self.recent.last_bucket, ref, width)
            out.append((obs, exp, math.sqrt(disp * exp)))
        return out

    @staticmethod
    def _combined(windows):
        """(lines, forecast, dispersion) of pools' windows (_site_windows) taken together."""
        obs, exp, dev = (sum(w[i] for w in windows) for i in range(3))
        return obs, exp, max(dev * dev / exp, 1.0) if exp > 0 else 1.0

    def _learn_relative(self):
        """At the end of each quarter hour, learn every source's error of its pool's recent-level forecast
        relative to the rest of the site's (TR.SiteRelative) over that quarter hour, at the rate of a
        quarter hour's disjoint windows (as tier2_long's blocks). Not a source with a drop held (of its own or
        of one of its templates): its quarter hour holds the drop, which is not yet known to be one, and a drop
        must not widen the test that confirms it at its release (a service at a third of its traffic taught
        the error a third more from its first quarter, and was withdrawn at 38 against a minimum of 40)."""
        width = DROP_WINDOWS[-1]
        if self.recent is None or (self.open_bucket + 1) % width or self._judged is None:
            return
        pools = self._site_pools()
        if len(pools) < 3:
            return
        rate = min(1.0, self.learning_rate * width / TR.OVERLAP_SLOWER)
        sources = list(pools)
        windows = self._site_windows([pools[s] for s in sources], width)
        held = self._sources_held_low()
        for i, source in enumerate(sources):
            obs, exp, disp = self._combined(windows[i: i + 1])
            r_obs, r_exp, r_disp = self._combined(windows[:i] + windows[i + 1:])
            if exp < 1.0 or r_exp < 1.0 or source in held:
                continue
            noise = disp / exp + r_disp / r_exp + disp / max(float(pools[source][2].sum()), 1.0)
            self.relative.learn(source, TR.SiteRelative.log_ratio(obs, exp, r_obs, r_exp), noise, rate)

    def _sources_held_low(self):
        """The sources with a drop or silence held (_hold) of their own or of one of their templates."""
        return {int(self.template_source[key]) if kind == "template" else key
                for _, kind, key, *_ in self.held.values() if kind in ("template", "source")}

    def _recent_still_low(self, kind, key, reference, windows):
        """Whether a key held for a drop is still low against the recent level it had then (over the
        drop windows that fit in drop_hold_seconds, or all of it): a template against its own level
        (an intermittent one never is, see _still_low), or its source's steady templates pooled against
        theirs times the rest of the site's (how far it moved from its own), with their learned relative
        error (TR.SiteRelative): a service that lost its traffic while the site's held."""
        if reference is None or self.recent is None:
            return False
        own, site = reference
        if kind == "template" and _intermittent(self.templates, self.template_season, np.array([key]),
                                                self.bucket_seconds)[0]:
            return False
        # the whole hold too: minutes of a busy template's evidence that one short window lacks
        widths = sorted({DROP_WINDOWS[k] for k in windows} | {max(min(self.hold_buckets, self.recent.ring), 1)})
        if own is not None:
            level, lines, disp, rel2 = own
            if any(self.recent.still_low(self.open_bucket, key, level * self._site_fall(reference, w), lines, disp,
                                         rel2, [w], self.finding_min_score) for w in widths):
                return True
        source = int(self.template_source[key]) if kind == "template" else key
        error = self.relative.error(source, min(1.0, self.learning_rate * DROP_WINDOWS[-1] / TR.OVERLAP_SLOWER))
        if site is None or error is None:
            return False
        if self._relative_low(site[:2], error, widths):
            return True
        if len(site) < 3 or site[2] is None:
            return False
        # The held template alone against the rest of the site: its own shifts within its source (the mix
        # of a service's operations) are no part of the pool's learned error, so its own recent-level
        # error as it was when held (the drop widens it) bounds it from below.
        own_rel2 = own[3] if own is not None else float(self.recent.rel2[key])
        return self._relative_low((site[2], site[1]), max(error, own_rel2), widths)

    def _relative_low(self, site, error, widths):
        """Whether a pool (site: the pool and the rest of the site's pools) is low against its level times
        the rest's ratio (_relative_score) over the hold's widths, or over the longest window while its
        last minutes are below half their forecast."""
        scores = {w: self._relative_score(site, error, w) for w in set(widths) | {DROP_WINDOWS[1], DROP_WINDOWS[-1]}}
        # Over the hold, or over the longest window (the one the relative error was learned over; it reaches
        # back into the minutes before the hold, when the drop was seen) while its last minutes are still
        # below half their forecast (as tier2_long's DROP_MAX_RATIO): a key back at its usual volume is not.
        return (max(scores[w][0] for w in widths) >= self.finding_min_score
                or (scores[DROP_WINDOWS[-1]][0] >= self.finding_min_score and scores[DROP_WINDOWS[1]][1] < 0.5))

    def _relative_score(self, site, error, width):
        """Drop score of a source's pool over its last `width` buckets against its level times the rest
        of the site's ratio to theirs (see _recent_still_low), and the ratio of its lines to that; the
        site's sampling error and the pool's reference's add to the learned error -> (score, ratio)."""
        pool, rest = site
        return self._relative_of(self._site_windows([pool], width), self._site_windows(rest, width), error,
                                 float(pool[2].sum()))

    def _relative_of(self, own, rest, error, pool_lines, cautious=False):
        """_relative_score from the pool's and the rest's windows (_site_windows) and the pool's reference lines;
        cautious: the rest's ratio is its total's or its median pool's where lower (_rest_ratio), as a drop
        found by this test alone needs (_hold_relative_drops); a drop another test found is confirmed against
        the total's, as before."""
        obs, exp, disp = self._combined(own)
        r_obs, r_exp, r_disp = self._combined(rest)
        if exp <= 0 or r_exp < 1.0:
            return 0.0, 1.0
        ratio = _rest_ratio(rest, r_obs, r_exp) if cautious else (r_obs + 0.5) / (r_exp + 0.5)
        expected = exp * ratio
        score = count_lower_score(obs, expected, disp, error + r_disp / r_exp + disp / max(pool_lines, 1.0))
        return score, obs / expected

    def _site_fall(self, reference, width):
        """How far the rest of the site fell over the last `width` buckets against its level of the hour
        before (reference: _recent_reference's, its pools as they were when the drop was held), at most 1: the
        ratio that at least SITE_QUORUM, and at least half, of the other sources are down to (the k-th
        smallest). A lull of the whole site's traffic (the night after a campaign's surge) takes each
        service's templates down with it, and a template judged against its own level alone read as a drop
        of every service at once; one other service's outage is no fall of the site (tier2_site.py, for
        surges). 1 where there is no such rest."""
        if reference is None or reference[1] is None:
            return 1.0
        ratios = sorted((w[0] + 0.5) / (w[1] + 0.5) for w in self._site_windows(reference[1][1], width) if w[1] >= 1.0)
        k = max(SITE_QUORUM, -(-len(ratios) // 2))
        return min(1.0, ratios[k - 1]) if len(ratios) >= k else 1.0

    def _still_low(self, kind, key, windows, spread, reference=None):
        """Whether a key is still significantly low over the given drop windows, judged with the
        dispersion and forecast error it had when first seen low (spread). An intermittent
        template (a nightly job, see _intermittent) is quiet most of the day on its own schedule,
        which hour-of-day factors cannot pin (does it end at 04:00 or 04:30?): its drops and silences
        are not raised. A template's forecast is scaled by the rest of the site's fall (_site_fall; reference:
        _recent_reference's). A source is judged by its steady templates' lines only: a job ending is no
        drop of its source."""
        t = self.templates
        if kind == "host":   # every window: a quiet host's silence is significant over a quarter hour only
            return self.hosts.still_silent(key, range(len(DROP_WINDOWS)), spread, self.finding_min_score)
        if kind == "template":
            if _intermittent(t, self.template_season, np.array([key]), self.bucket_seconds)[0]:
                return False
            obs = t.obs_sum[key]
            exp = t.exp_sum[key] * np.array([self._site_fall(reference, w) for w in DROP_WINDOWS])
        else:
            obs, exp = self.sources.obs_sum[key], self.sources.exp_sum[key]
            mine = np.flatnonzero((self.template_source[: t.size] == key) & (t.age > 0))
            steady = mine[~_intermittent(t, self.template_season, mine, self.bucket_seconds)]
            if mine.size and steady.size < mine.size:
                obs, exp = t.obs_sum[steady].sum(axis=0), t.exp_sum[steady].sum(axis=0)
        disp, rel2 = spread
        return max(count_lower_score(obs[k], exp[k], disp, rel2) for k in windows) >= self.finding_min_score

    def _drop_finding(self, base, kind, key, window, score, when):
        obs = base.obs_sum[key, DROP_WINDOWS.index(window)]
        exp = base.exp_sum[key, DROP_WINDOWS.index(window)]
        span = window * self.bucket_seconds
        what = "silent" if obs == 0 else "volume drop"
        source = int(self.template_source[key]) if kind == "template" else key
        ts = when + self.bucket_seconds
        # A source with no line at all since then: whatever else was raised about it meanwhile (sessions
        # its absence left unfinished, its partners' steps out of order) is the same outage.
        since = self._silent_since(base, key) if kind == "source" and obs == 0 else None
        return Finding(tier=self.name, ts=ts, key="%s:%d" % (kind, key), score=score,
                       reason="%s %s: %d lines in the last %gs" % (kind, what, obs, span),
                       expected="about %.1f per %gs" % (exp, span), observed="%d per %gs" % (obs, span),
                       template_id=key if kind == "template" else -1, source=str(source), since=since)

    def _silent_since(self, base, key):
        """Start of the key's run of empty buckets that ends with the closing one (as far back as the ring
        of DROP_WINDOWS[-1] buckets holds forecast ones): a silence is found over a whole window, which
        starts up to a window after the last line; its partners' workflows broke from that last line on,
        and their evidence must fall inside the silence to join its incident (incidents.py)."""
        ring = base.obs_win.shape[1]
        start = self.open_bucket
        while (self.open_bucket - start + 1 < ring and base.obs_win[key, (start - 1) % ring] == 0
               and base.exp_win[key, (start - 1) % ring] > 0):
            start -= 1
        return start * self.bucket_seconds

    # -- helpers -------------------------------------------------------------------------

    def _buckets(self, ts):
        buckets = (ts // self.bucket_seconds).astype(np.int64)
        if self.open_bucket is not None:
            buckets = np.maximum(buckets, self.open_bucket)
        return buckets

    def _grow(self, n_templates, batch):
        self.templates.ensure(n_templates)
        self._grow_template_tables()
        n_src = int(batch.source_id.max()) + 1 if batch.n else 1
        self.sources.ensure(n_src)
        self.season.ensure(self.sources.size)

    def forget_parameters(self, template_ids):
        """The miner widened these templates: their value keys start again (tier2_values.py)."""
        self.values.forget(template_ids)

    # -- handover of one source between workers (worker/handover.py) ----------------------

    def export_source(self, sid):
        """What was learned of source `sid`: its own rows and those of the templates last seen in it,
        keyed by template id (the deployment's: parsing/vocabulary.py), JSON-ready."""
        sid = int(sid)
        if sid >= self.sources.size:
            return None
        n = min(self.templates.size, self.template_source.size, self.template_season.hod.shape[0])
        tids = [t for t in np.flatnonzero(self.template_source[:n] == sid).tolist() if self.templates.age[t] > 0]
        recent = self.recent.export_row if self.recent is not None else (lambda t: {})
        hosts = {host: _rows(self.hosts.base, row) | _season_rows(self.hosts.season, row)
                 for row, (owner, host) in enumerate(self.hosts.pairs) if owner == sid}
        return {"source": _rows(self.sources, sid) | _season_rows(self.season, sid), "hosts": hosts,
                "templates": {str(t): _rows(self.templates, t) | _season_rows(self.template_season, t)
                              | {"share_" + k: v for k, v in _season_rows(self.share_season, t).items()} | recent(t)
                              for t in tids}}

    def import_source(self, sid, exported):
        """Take over what export_source gave for a source that is now `sid` here. A template this tier
        has learned already (another of its sources logs it) keeps its own rows. The bucket the old owner
        left open is not taken (its counts went with its time). Returns how many templates were taken."""
        sid = int(sid)
        self.sources.ensure(sid + 1)
        self.season.ensure(self.sources.size)
        _set_rows(self.sources, sid, exported["source"])
        _set_season_rows(self.season, sid, exported["source"])
        for host, rows in exported.get("hosts", {}).items():   # absent from exports of older releases
            row = self.hosts.row(sid, host)
            if row >= 0 and self.hosts.base.age[row] == 0:
                _set_rows(self.hosts.base, row, rows)
                _set_season_rows(self.hosts.season, row, rows)
        taken = 0
        for key, rows in exported.get("templates", {}).items():
            t = int(key)
            self.templates.ensure(t + 1)
            self._grow_template_tables()
            if self.templates.age[t] > 0:
                continue
            _set_rows(self.templates, t, rows)
            _set_season_rows(self.template_season, t, rows)
            _set_season_rows(self.share_season, t, {k[6:]: v for k, v in rows.items() if k.startswith("share_")})
            self.template_source[t] = sid
            if self.recent is not None:
                self.recent.import_row(t, rows)
            taken += 1
        return taken

    def _grow_template_tables(self):
        if self.template_source.size < self.templates.size:
            grown = np.zeros(self.templates.size, np.int64)
            grown[: self.template_source.size] = self.template_source
            self.template_source = grown
        self.template_season.ensure(self.templates.size)
        self.share_season.ensure(self.templates.size)

    def state(self):
        return {"templates": self.templates.state(), "sources": self.sources.state(),
                "season": self.season.state(), "template_season": self.template_season.state(),
                "share_season": self.share_season.state(),
                "template_source": self.template_source.tolist(),
                "values": self.values.state(),
                "recent": self.recent.state() if self.recent is not None else {},
                "hosts": self.hosts.state(), "long": self.long.state(), "relative": self.relative.state(),
                "load": self.load.state(), "load_long": self.load_long.state(),
                "open_bucket": self.open_bucket}

    def load_state(self, state):
        self.templates.load_state(state.get("templates", {}))
        self.sources.load_state(state.get("sources", {}))
        self.season.load_state(state.get("season", {}))
        self.template_season.load_state(state.get("template_season", {}))
        # Absent in states saved before shares had seasons: the factors start at 1 (no daily pattern).
        self.share_season.load_state(state.get("share_season", {}))
        self.share_season.ensure(self.templates.size)
        self.template_source = np.asarray(state.get("template_source", [0] * 64), np.int64)
        self.values.load_state(state.get("values"))   # absent before value keys: they are learned afresh
        if self.recent is not None:   # absent in states saved before the recent level: it fills again
            self.recent.load_state(state.get("recent", {}))
        self.hosts.load_state(state.get("hosts", {}))   # absent before hosts were counted: learned afresh
        self.long.load_state(state.get("long", {}))     # likewise the long windows: they fill again
        self.relative.load_state(state.get("relative", {}))   # likewise the site-relative error: learned again
        self.load.load_state(state.get("load", {}))             # likewise the load-following forecast
        self.load_long.load_state(state.get("load_long", {}))
        self.open_bucket = state.get("open_bucket")
        self.resumed = self.open_bucket is not None


# Counts of the bucket a key's old owner had open: not handed over (see import_source).
_OPEN_BUCKET_ROWS = ("open_raw", "open_learn")


def _rows(base, key):
    return {name: arr[key].tolist() for name, arr in vars(base).items() if name not in _OPEN_BUCKET_ROWS}


def _set_rows(base, key, rows):
    for name, arr in vars(base).items():
        if name in rows and name not in _OPEN_BUCKET_ROWS:
            arr[key] = np.asarray(rows[name], arr.dtype).reshape(arr.shape[1:])


def _season_rows(season, key):
    return {"hod": season.hod[key].tolist(), "dow": season.dow[key].tolist()}


def _set_season_rows(season, key, rows):
    if "hod" in rows and "dow" in rows:
        season.hod[key] = np.asarray(rows["hod"], float).reshape(3, 24)
        season.dow[key] = np.asarray(rows["dow"], float).reshape(3, 7)


def _clumps(base, key):
    """The size of a key's clumps of lines where they are one event's lines (a job logging received, rendered,
    uploaded and done within seconds): its dispersion, bounded by its mean count in a bucket with any, at
    least 1. A quarter hour of 90 such lines is some 22 jobs, whose drop to half is no more certain than 22
    single lines'; counted by lines, such a source was too busy for the long windows, and a drop of its jobs
    to a fifth for an hour and a half, each quarter hour short of finding_min_score, was missed. A steady
    source busy every minute scatters as single lines (dispersion 1): its lines are no clumps."""
    return float(max(1.0, min(base.clump[key], base.phi[key])))


def _intermittent(base, seasons, keys, bucket_seconds):
    """Keys mostly quiet: quiet in most recent buckets, or quiet (below QUIET_HOUR_SHARE of their
    busiest hour's usual count) in most hours of the day they were seen in (a nightly job, even while
    it runs: its level and clump are learned divided by hour factors that cannot tell a job from a
    level)."""
    return (base.nonzero[keys] < SPARSE_FRACTION) | _quiet_most_hours(seasons, keys, bucket_seconds)


def _quiet_most_hours(seasons, keys, bucket_seconds):
    """Keys quiet (below QUIET_HOUR_SHARE of their busiest hour's usual count) in most hours seen."""
    hod = seasons.hod[keys]
    seen = hod[:, 2, :] >= HOUR_RATE_MIN_SHARE * 3600.0 / bucket_seconds
    rate = np.where(seen, hod[:, 0, :] / np.where(seen, hod[:, 2, :], 1.0), 0.0)
    quiet = seen & (rate < QUIET_HOUR_SHARE * rate.max(axis=1, initial=0.0)[:, None])
    return quiet.sum(axis=1) > 0.5 * seen.sum(axis=1)


def _earlier_counts(keys, buckets, obs_win, open_raw, open_bucket, window):
    """Lines of each line's key in the window - 1 buckets before the line's bucket: from the batch
    itself, the open bucket's count so far (open_raw) and the closed buckets' ring (obs_win, the last
    DROP_WINDOWS[-1] buckets; older ones count 0). Worked out once per (key, bucket) of the batch."""
    pairs = _Pairs(keys, buckets, obs_win, open_raw, open_bucket, window)
    return pairs.earlier[pairs.inverse]


class _Pairs:
    """The (key, bucket) pairs of a batch's lines: code (key << 40 | bucket, sorted), key, bucket, the
    lines of each in its bucket by the end of the batch (batch and open bucket), those in the window - 1
    buckets before (see _earlier_counts), and each line's pair (inverse)."""

    def __init__(self, keys, buckets, obs_win, open_raw, open_bucket, window):
        code = keys.astype(np.int64) * (1 << 40) + buckets
        uniq, inverse, per_pair = unique_lines(code, keys, buckets)
        self.code, self.inverse = uniq, inverse
        self.key, self.bucket = uniq >> 40, uniq & ((1 << 40) - 1)
        self.final = per_pair + np.where(self.bucket == open_bucket, open_raw[self.key], 0.0)
        self.earlier = np.empty(uniq.size)
        VK.earlier_counts(uniq, per_pair, obs_win, open_raw, open_bucket, window, self.earlier)


def change_point(obs, exp):
    """Index of the first bucket of the low stretch that ends a run of counts (obs) against their forecasts
    (exp), oldest first: the split into a higher then a lower ratio of counts to forecast that is most likely
    (Poisson, each stretch at its own ratio), 0 when no split is (all of it low alike). Buckets without a
    forecast say nothing of the ratio and are left out of both stretches."""
    obs, exp = np.asarray(obs, float), np.asarray(exp, float)
    known = exp > 0
    o, e = np.where(known, obs, 0.0), np.where(known, exp, 0.0)
    o_before, e_before = np.cumsum(o)[:-1], np.cumsum(e)[:-1]
    o_after, e_after = o.sum() - o_before, e.sum() - e_before

    def fit(o_s, e_s):   # log-likelihood of a stretch at its own ratio, up to terms that do not depend on it
        return np.where((o_s > 0) & (e_s > 0), o_s * np.log(np.maximum(o_s, 1e-300) / np.maximum(e_s, 1e-300)), 0.0)

    whole = float(fit(o.sum(), e.sum()))
    gain = fit(o_before, e_before) + fit(o_after, e_after) - whole
    falls = (e_before > 0) & (e_after > 0) & (o_after * e_before < o_before * e_after)
    gain = np.where(falls, gain, 0.0)
    return int(np.argmax(gain)) + 1 if gain.size and gain.max() > 0 else 0


def _rest_ratio(windows, r_obs, r_exp):
    """The rest of the site's ratio to its forecast (windows: its pools' _site_windows, r_obs / r_exp their
    sums): their total's, or the median pool's where lower. One other service's surge (a scraper, a
    campaign on one endpoint: ten times its traffic) lifts the total and would make every other source
    read low against it; it does not move the median. A fall of the site moves both."""
    total = (r_obs + 0.5) / (r_exp + 0.5)
    ratios = [(w[0] + 0.5) / (w[1] + 0.5) for w in windows if w[1] > 0]
    return min(total, float(np.median(ratios))) if ratios else total


def poisson_lower_bound(counts, sigmas=3.0):
    """Lower confidence bound of a Poisson mean given counts, at the one-sided confidence of `sigmas`
    normal deviations (Wilson-Hilferty's cube root of the chi-square quantile): close to count - sigmas
    x sqrt(count) for large counts, and still above zero for a handful, where that reaches zero."""
    k = np.maximum(np.asarray(counts, np.float64), 1.0)
    root = np.maximum(1.0 - 1.0 / (9.0 * k) - sigmas / (3.0 * np.sqrt(k)), 0.0)
    return np.where(np.asarray(counts) > 0, k * root ** 3, 0.0)


def _close_outputs(n):
    """close_bucket's outputs for one key set of n keys: season factor, season weight, best drop score and
    its window."""
    return np.empty(n), np.empty(n), np.empty(n, np.float32), np.empty(n, np.int64)


# close_bucket's recent level when there is none (drop_recent_seconds = 0): never read
_NO_RECENT = (np.zeros((0, 1)),) * 4 + (np.zeros(0), np.zeros(0), np.zeros(0, np.int64), np.zeros(0))


def _base_arrays(base):
    """A KeyBaseline's arrays in the order volume_kernels.close_base takes them."""
    return (base.level, base.phi, base.rel2, base.nonzero, base.clump, base.total, base.age, base.open_raw,
            base.open_learn, base.obs_win, base.exp_win, base.obs_sum, base.exp_sum)


def _dispersion_all(base):
    """_dispersion of every key (no gather of all of them by index, once per closing bucket)."""
    return _dispersion_of(base.phi, base.nonzero, base.clump)


def _dispersion(base, keys):
    """Variance/mean used in count tests: learned, at least Poisson, and for sparse keys at least
    the compound-Poisson index E[x^2]/E[x] of their non-zero buckets."""
    return _dispersion_of(base.phi[keys], base.nonzero[keys], base.clump[keys])


def _dispersion_of(phi, nonzero, clump):
    """The rule of _dispersion on arrays of phi, nonzero and clump (volume_kernels._dispersion per key)."""
    phi = np.maximum(phi, 1.0)
    return np.where(nonzero < SPARSE_FRACTION, np.maximum(phi, clump), phi)


