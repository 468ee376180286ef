"""Tier 2, site load: how busy the other sources are at a line's time, each against its own forecast.

A campaign, a newsletter or a link on a big site lifts every source that serves traffic at once: the
web tier, the application, the database, each about as much. Each of them judged against its own
forecast alone is a volume spike, and one surge of customers became an incident per source. A spike of
a source, or of a template, is therefore judged against its forecast times the site's factor at that
moment: how far above their own forecasts the other busy sources are, measured the same way as the
spike itself (the same window, the lines so far in the line's bucket and the window's earlier buckets,
against the same forecast). The factor is what at least two, and at least half, of the other busy
sources reach (SITE_QUORUM), and at least 1: one other rising with the key may be its own fault
spreading (a retry storm from a proxy to its backend), and a flood of one endpoint runs through its
chain of services only. A source that does not follow traffic (a heartbeat) counts as one not up, and
a job-like or young one not at all; a single source's log has no other source, and nothing changes. The share of a template in its source (VolumeTier._share_scores)
already is relative; this is the same idea one level up.
"""
import numpy as np

# A key's spike is judged against the site only when at least this many other busy sources, and at
# least half of them, are up with it: the factor is the k-th largest of their ratios, k the larger of
# the two. A flood of one endpoint runs through its chain (a gateway, a service, its database) and
# leaves the site's other services as they were; a surge of customers lifts most of them.
SITE_QUORUM = 2


class SiteLoad:
    """The site's factor for lines of one batch (VolumeTier.score), worked out only for the lines whose
    own spike score is above zero (few: a spike's lines), per bucket and window once."""

    def __init__(self, tier, sources, buckets, forecasts=None):
        self.tier = tier
        # (bucket, window) -> every source's forecast per bucket and which are busy: their seasonal one
        # (VolumeTier.source_forecasts) unless given
        self.forecasts = forecasts or tier.source_forecasts
        self.sources = sources        # each batch line's source id
        self.buckets = buckets        # each batch line's bucket
        self._per_bucket = {}         # (bucket, window) -> (earlier counts, forecast per source, busy)
        self._running = {}            # bucket -> (lines of the bucket in the batch, running counts per source)

    def adjust(self, scores, window, rescore, lines=None, among=None):
        """Rescore the lines with a score above 0 whose site factor is above 1 (among: only where True):
        rescore(selected positions, their factors) gives their scores against the forecast times the
        factor. Returns the factor of every line (1 where not adjusted); scores is changed in place."""
        factor = np.ones(scores.size)
        cand = np.flatnonzero(scores > 0 if among is None else (scores > 0) & among)
        if cand.size == 0:
            return factor
        at = cand if lines is None else lines[cand]
        f = self.factors(at, window)
        up = f > 1.0
        if up.any():
            factor[cand[up]] = f[up]
            scores[cand[up]] = rescore(cand[up], f[up])
        return factor

    def factors(self, lines, window):
        """The site's factor (>= 1) at each of these batch lines, for a window of `window` buckets."""
        out = np.ones(lines.size)
        for bucket in np.unique(self.buckets[lines]).tolist():
            mine = np.flatnonzero(self.buckets[lines] == bucket)
            earlier, forecast, busy = self._bucket(bucket, window)
            if busy.sum() <= SITE_QUORUM - 1:
                continue
            counts = self._counts_at(bucket, lines[mine]) + earlier
            ratio = np.where(busy, counts / (window * np.where(busy, forecast, 1.0)), -np.inf)
            own = self.sources[lines[mine]]
            ratio[np.arange(mine.size), own] = -np.inf      # the line's own source is not the site
            others = np.isfinite(ratio).sum(axis=1)
            k = np.maximum(SITE_QUORUM, (others + 1) // 2)
            ranked = -np.sort(-ratio, axis=1)                # busiest first
            kth = ranked[np.arange(mine.size), np.minimum(k, ratio.shape[1]) - 1]
            out[mine] = np.where(others >= k, np.maximum(kth, 1.0), 1.0)
        return out

    def _bucket(self, bucket, window):
        """(lines of each source in the window - 1 buckets before `bucket`, each source's forecast per
        bucket there, which sources are busy), as the source's own spike test sees them."""
        key = (bucket, window)
        if key not in self._per_bucket:
            n = self.tier.sources.size
            forecast, busy = self.forecasts(bucket, window)
            self._per_bucket[key] = (self._earlier(bucket, window, n), forecast, busy)
        return self._per_bucket[key]

    def _earlier(self, bucket, window, n):
        """Lines of each source in the window - 1 buckets before `bucket`: the batch's, the open bucket's
        count so far and the closed buckets' ring (as VolumeTier's _earlier_counts for one key)."""
        base, open_bucket = self.tier.sources, self.tier.open_bucket
        ring = base.obs_win.shape[1]
        back = bucket - self.buckets          # how many buckets before `bucket` each batch line is
        out = np.bincount(self.sources[(back >= 1) & (back < window)], minlength=n)[:n].astype(np.float64)
        for b in range(bucket - window + 1, bucket):
            if b == open_bucket:
                out += base.open_raw[:n]
            elif open_bucket - ring <= b < open_bucket:
                out += base.obs_win[:n, b % ring]
        return out

    def _counts_at(self, bucket, lines):
        """Lines of each source in `bucket` up to and including each of these batch lines (rows), with
        the open bucket's count so far when it is that bucket."""
        if bucket not in self._running:
            n = self.tier.sources.size
            mine = np.flatnonzero(self.buckets == bucket)
            running = np.zeros((mine.size, n))
            running[np.arange(mine.size), self.sources[mine]] = 1.0
            np.cumsum(running, axis=0, out=running)
            if bucket == self.tier.open_bucket:
                running += self.tier.sources.open_raw[:n]
            self._running[bucket] = (mine, running)
        mine, running = self._running[bucket]
        return running[np.searchsorted(mine, lines)]
