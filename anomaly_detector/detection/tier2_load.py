"""Tier 2, a source's quarter hours forecast from the rest of the site's over the same quarter hours.

A job queue or a mail relay does what the site's requests make it do: its lines follow the site's load
with noise of their own. Its seasonal forecast (tier2_volume's level times young hour-of-day factors)
is wide for such a source: its own history is a few bursty days, so its learned block error is as wide
as a drop to a third, and its level follows a drop within the hour. The rest of the site over the very
same quarter hour says what load there was: LoadFollow learns, per source, a line through the log of
its block counts against the log of the rest's (a slope and an intercept, online, the slope shrunk
towards 1, a constant share of the load), and forecasts each block from the rest's lines. The error of
that forecast is learned like any block forecast's (tier2_long.LongWindows.learn, on a ring of its own):
a source that does not follow the load (a heartbeat, a nightly job) learns a wide one, and is judged
this way only where it is narrower than its seasonal one (tier2_volume._close_long_block).

The rest is every other source's lines, each capped at REST_CAP times its own forecast times how far the
site as a whole is above its forecasts (the median source's ratio, at least 1): one source's flood (a
scan, a retry storm) is no load of the site, and counted in full it would make every follower look low.

Neighbours: tier2_long.py (the windows and tests judged on these forecasts), tier2_volume.py.
"""

import numpy as np

# A block of each other source counts in the rest up to this many times its forecast times the site's
# ratio (rest_of_site): a surge of customers lifts most sources alike, a flood of one does not.
REST_CAP = 2.0
# The slope of log lines against the log of the rest's is shrunk towards 1 (a constant share of the load)
# with this weight, in units of the rest's log variance: a day's ramps (a log range of about 1.5) settle
# it, a quiet stretch of nearly constant load does not swing it.
SLOPE_PRIOR = 0.05
# A slope is kept within this range: a source falls and rises with the load, not against it, nor at
# many times its pace.
SLOPE_RANGE = (0.0, 2.0)
# A run of the sequential test against this forecast is raised at most this share of it (tier2_long's
# DROP_MAX_RATIO, a half, against the seasonal forecast, and for the fixed windows here). The half guards
# against a seasonal forecast too high for hours (a level still learning down after a burst, a holiday
# evening): this one has no level to learn down nor hours to misfit, it follows the site's load over the
# very quarter. A service's requests at two fifths, its housekeeping lines as usual, leave the source at
# about three fifths of its share for as long as it lasts, and the sequential test raises it once its
# evidence has added up over the run; the fixed windows keep the half: a half hour at three fifths of a
# share is within a busy service's drift of share over a day.
MAX_RATIO = 0.7
# A source's forecast from the rest is made once this many blocks were learned (a day of quarter hours):
# before that the line has not seen the day's range of load.
MIN_BLOCKS = 96


def rest_of_site(obs, exp):
    """Per source: the lines of every other source over the block, each capped at REST_CAP times its own
    forecast times the site's ratio (the median of the ratios of the sources forecast a line or more,
    at least 1). obs, exp: every source's lines and forecast over the block."""
    busy = exp >= 1.0
    site = max(float(np.median(obs[busy] / exp[busy])), 1.0) if busy.any() else 1.0
    capped = np.where(exp > 0, np.minimum(obs, REST_CAP * site * exp), obs)
    return capped.sum() - capped


class LoadFollow:
    """Per source: exponentially weighted means and co-moments of x = log(rest + 0.5) and y = log(lines
    + 0.5) over its blocks."""

    def __init__(self, size=8):
        self.mx = np.zeros(size)
        self.my = np.zeros(size)
        self.vxx = np.zeros(size)
        self.vxy = np.zeros(size)
        self.learned = np.zeros(size, np.int64)

    def ensure(self, n):
        if n <= self.mx.shape[0]:
            return
        new = max(n, 2 * self.mx.shape[0])
        for name in ("mx", "my", "vxx", "vxy", "learned"):
            arr = getattr(self, name)
            grown = np.zeros(new, arr.dtype)
            grown[: arr.shape[0]] = arr
            setattr(self, name, grown)

    def slope(self, n):
        """The first n sources' slopes, shrunk towards 1 (SLOPE_PRIOR) and kept in SLOPE_RANGE."""
        b = (self.vxy[:n] + SLOPE_PRIOR) / (self.vxx[:n] + SLOPE_PRIOR)
        return np.clip(b, *SLOPE_RANGE)

    def forecast(self, rest):
        """Each source's forecast lines over a block whose rest of the site had `rest` lines (0 for the
        sources learned from fewer than MIN_BLOCKS blocks)."""
        n = rest.shape[0]
        self.ensure(n)
        y = self.my[:n] + self.slope(n) * (np.log(rest + 0.5) - self.mx[:n])
        return np.where(self.learned[:n] >= MIN_BLOCKS, np.maximum(np.exp(y) - 0.5, 0.0), 0.0)

    def learn(self, obs, rest, rate, skip=(), slow=None, slower=10.0):
        """Learn from a block: each source's lines and its rest's, at `rate` (faster over the first blocks,
        as an average), `slower` times slower where slow (an unusual block: a drop not yet raised must not
        teach that it is the source's share), not at all for the sources in skip (a drop raised)."""
        n = obs.shape[0]
        self.ensure(n)
        alpha = np.maximum(rate, 1.0 / (self.learned[:n] + 1.0))
        if slow is not None:
            alpha = np.where(slow[:n] & (self.learned[:n] >= MIN_BLOCKS), rate / slower, alpha)
        alpha[[s for s in skip if s < n]] = 0.0
        x, y = np.log(rest + 0.5), np.log(obs + 0.5)
        dx, dy = x - self.mx[:n], y - self.my[:n]
        # West's weighted update: the means move by alpha of the deviation, the co-moments by the
        # deviation from the old mean times the one from the new
        self.mx[:n] += alpha * dx
        self.my[:n] += alpha * dy
        self.vxx[:n] = (1.0 - alpha) * (self.vxx[:n] + alpha * dx * dx)
        self.vxy[:n] = (1.0 - alpha) * (self.vxy[:n] + alpha * dx * dy)
        self.learned[:n] += (alpha > 0).astype(np.int64)

    def state(self):
        return {name: getattr(self, name).tolist() for name in ("mx", "my", "vxx", "vxy", "learned")}

    def load_state(self, state):
        """Restore state(); absent (older snapshots) or of unequal rows: learned again."""
        if not isinstance(state, dict) or not state:
            return
        arrs = {name: np.asarray(state.get(name, []), float).reshape(-1) for name in ("mx", "my", "vxx", "vxy")}
        learned = np.asarray(state.get("learned", []), np.int64).reshape(-1)
        if len({a.shape[0] for a in arrs.values()} | {learned.shape[0]}) != 1:
            return
        for name, arr in arrs.items():
            setattr(self, name, arr)
        self.learned = learned

