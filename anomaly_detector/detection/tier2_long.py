"""Tier 2's long drop windows of sources: a source of a line a minute cannot show a drop in 15 minutes.

tier2_volume.py judges drops over DROP_WINDOWS buckets (up to a quarter of an hour); a source of about
a line a minute down to a fifth of its lines expects 15 there and sees 3, which is not significant at
the tiers' scores. LongWindows keeps the sum of each source's lines and forecast over every block of
DROP_WINDOWS[-1] buckets (read from the source's own 15-bucket window when a block closes, so nothing
is counted twice), a ring of drop_long_seconds of blocks, and judges windows of 2, 4, 8 ... blocks.

The forecast error of a window is learned per block, not taken from the per-bucket one: a bucket of a
sparse source holds a line or none, whose log ratio says little, and a young model's error over an
hour (its seasons' misfit, an evening forecast too high for every minute of it) does not average out
over the buckets of the window.

The sampling error of a block is its own too: the per-bucket dispersion of a source whose lines come in
clumps (a Redis save writes five lines every five minutes) says how a minute scatters, not a quarter hour:
five clumps a quarter of a periodic source are as many as a clock makes, not a Poisson count of clumps.
So each source's dispersion over a block (variance / mean of its count about the forecast) is learned
from the blocks too, and judges them where it is well below the per-bucket one (see block_dispersion).

The same blocks also feed a one-sided sequential test (CUSUM, see sequential): a drop of any length is
raised once the evidence of its low blocks adds up, not only when it fills one of the fixed windows.
"""
import math
from statistics import NormalDist

import numpy as np

from .stats_kernels import count_lower_score, log10_count_lower
from .volume_kernels import USUAL_SIGMAS

# A block's forecast is trusted to this squared relative error before any block was learned.
START_REL2 = 0.25
# A source is judged over long windows once at least this share of its quarter hours had a line.
STEADY_SHARE = 0.5
# The sequential test (LongWindows.sequential) adds each block's evidence less this many normal deviations:
# a block at its forecast takes evidence away, so only a run of blocks each about one deviation low (a
# drop, not the forecast's usual misfit) builds up.
CUSUM_REFERENCE = 0.5
# Evidence of one block is capped at this many deviations: a quarter hour with no line of a sparse source
# (a restart, a stall) says at most this much, so a drop needs several low quarters to be raised.
CUSUM_BLOCK_CAP = 4.0
# A run is raised only once its lines are at most this share of its forecast: a drop is a source well
# below its forecast. A forecast a quarter too high for hours (its level still learning down after a
# burst, a quiet holiday evening) adds up evidence too, and is no outage.
DROP_MAX_RATIO = 0.5
# A source's learned block dispersion replaces its per-bucket one only below this share of it: well below
# (a clock-like source), not by the noise of an average of squares.
CLOCK_SHARE = 0.5
# One block's squared deviation teaches the block dispersion at most this many times the per-bucket one:
# an outage's block (already taught ten times slower) must not set it alone.
BDISP_SAMPLE_CAP = 16.0
# A source is clock-like over a block only where its learned block dispersion is at most this (Poisson):
# a clock's quarter hours are as regular as a clock, not merely less clumpy than its minutes.
CLOCK_MAX_DISPERSION = 1.0
# The least squared relative error a block is judged with (tier2_volume's MIN_RELATIVE_ERROR squared): the
# learned mean may go below it, or below zero (see learn).
REL2_FLOOR = 0.01
# Blocks since a source's last long-window raise, for one never raised.
NEVER = 1 << 30
_NORMAL = NormalDist()


def cusum_threshold(days, block_seconds):
    """The one-sided CUSUM threshold h (in normal deviations, reference CUSUM_REFERENCE) whose mean run
    between false alarms, on blocks that are at their forecast, is `days` (Siegmund's approximation
    ARL = (exp(2kb) - 2kb - 1) / 2k^2 with b = h + 1.166, solved by bisection)."""
    arl = max(days * 86400.0 / block_seconds, 2.0)
    k = CUSUM_REFERENCE
    lo, hi = 0.0, 50.0
    for _ in range(60):
        h = 0.5 * (lo + hi)
        b = 2.0 * k * (h + 1.166)
        if (math.exp(b) - b - 1.0) / (2.0 * k * k) < arl:
            lo = h
        else:
            hi = h
    return 0.5 * (lo + hi)


def block_evidence(obs, exp, disp, rel2):
    """How low one block is, in normal deviations (positive: below its forecast): the lower tail of its
    count as a quasi-Poisson count (dispersion disp) and as a log ratio with the block's learned forecast
    error rel2, the less surprising of both (as count_lower_score), as a normal quantile; a block above
    its forecast gives its (negative) log-ratio deviation."""
    z = math.log((obs + 0.5) / (exp + 0.5)) / math.sqrt(rel2 + disp / max(exp, 0.5))
    if obs >= exp:
        return max(-z, -CUSUM_BLOCK_CAP)
    ratio = math.log10(max(_NORMAL.cdf(z), 1e-300))
    lp = max(log10_count_lower(obs, exp, disp), ratio)
    p = min(max(10.0 ** lp, 1e-15), 0.5)
    return min(-_NORMAL.inv_cdf(p), CUSUM_BLOCK_CAP)


class LongWindows:
    """Per source: lines and forecast per block of `block` buckets, over the last `blocks` blocks."""

    def __init__(self, blocks, size=8):
        self.blocks = int(blocks)
        self.obs = np.zeros((size, max(self.blocks, 1)))
        self.exp = np.zeros((size, max(self.blocks, 1)))
        self.filled = np.zeros(size, np.int64)     # blocks recorded since the source's ring was cleared
        self.rel2 = np.full(size, START_REL2)      # squared relative error of a block's forecast (raw mean, see learn)
        self.bdisp = np.zeros(size)                # dispersion of a block's count, 0 until learned (block_dispersion)
        self.learned = np.zeros(size, np.int64)    # blocks it was learned from
        self.nonzero = np.zeros(size)              # share of blocks with any line
        self.pos = 0                               # ring slot the next block goes to (all sources alike)
        self.cusum = np.zeros(size)                # evidence of a drop so far (sequential), in deviations
        self.run = np.zeros(size, np.int64)        # blocks since the evidence was last zero
        self.raised = np.zeros(size, bool)         # this run was raised already
        self.since = np.full(size, NEVER, np.int64)  # blocks recorded since the source's last window raised

    @property
    def widths(self):
        """Window widths judged, in blocks: 2, 4, 8, ... up to the ring (and the whole ring)."""
        out, w = [], 2
        while w < self.blocks:
            out.append(w)
            w *= 2
        return out + [self.blocks] if self.blocks >= 2 else []

    def ensure(self, n):
        if n <= self.obs.shape[0]:
            return
        new = max(n, 2 * self.obs.shape[0])
        start = {"rel2": START_REL2, "since": NEVER}
        for name in ("obs", "exp", "filled", "rel2", "bdisp", "learned", "nonzero", "cusum", "run", "raised", "since"):
            arr = getattr(self, name)
            grown = np.full((new,) + arr.shape[1:], start.get(name, 0), arr.dtype)
            grown[: arr.shape[0]] = arr
            setattr(self, name, grown)

    def record(self, obs, exp):
        """A block closed: each source's lines and forecast over it (arrays of the sources' size)."""
        self.ensure(obs.shape[0])
        n = obs.shape[0]
        self.obs[:n, self.pos] = obs
        self.exp[:n, self.pos] = exp
        self.obs[n:, self.pos] = 0.0
        self.exp[n:, self.pos] = 0.0
        self.filled += 1
        self.since = np.minimum(self.since + 1, NEVER)
        self.pos = (self.pos + 1) % self.blocks

    def block_dispersion(self, disp):
        """Each source's dispersion over a block: the learned one (at least Poisson) where it is below
        CLOCK_SHARE of the per-bucket disp, else disp itself (and until a block was learned). A
        clock-like source (a save every five minutes, a cron job each minute) is nearly exact over a
        quarter hour, and a quarter without its lines says far more than its per-minute clumps would
        allow; a source of random clumps (jobs of four lines) scatters over a block as per minute, and
        a learned value near that is only the noise of a few squares. A clock's quarters are also no
        more scattered than a Poisson count (at most CLOCK_MAX_DISPERSION): a source of random flows of
        three lines (failed ssh logins) learns a block spread well below its per-minute one (about 2
        against 4: its forecast follows its own last hours), and judged so, an ordinary half hour of
        few flows read as a drop."""
        n = min(disp.shape[0], self.bdisp.shape[0])
        out = np.array(disp, float, copy=True)
        clock = ((self.bdisp[:n] > 0) & (self.bdisp[:n] < CLOCK_SHARE * out[:n])
                 & (self.bdisp[:n] <= CLOCK_MAX_DISPERSION))
        out[:n] = np.where(clock, np.maximum(self.bdisp[:n], 1.0), out[:n])
        return out

    def clear(self):
        """A gap not the sources' doing (tier2_volume._skip_gap): every window starts again."""
        self.filled[:] = 0
        self.cusum[:] = 0.0
        self.run[:] = 0
        self.raised[:] = False

    def site_scaled(self, rows):
        """The blocks' forecasts, those of the sources in `rows` (bool per source) scaled by the rest of the
        site's ratio to its forecast over each block where below 1 (the other sources' lines over their
        forecasts, this one's left out). A source judged over long windows for its few clumps (tier2_volume's
        _clumps) is judged by whole events against a forecast whose young seasons may be off by more than
        its learned block error allows (first nights forecast at three times the jobs that came): the rest of
        the site, forecast by the same young seasons, falls short alike, and a drop of its own is one against
        the rest."""
        exp = self.exp.copy()
        rows = np.flatnonzero(rows[: exp.shape[0]])
        if rows.size:
            rest_obs = self.obs.sum(axis=0)[None, :] - self.obs[rows]
            rest_exp = self.exp.sum(axis=0)[None, :] - self.exp[rows]
            exp[rows] *= np.minimum(1.0, (rest_obs + 0.5) / (rest_exp + 0.5))
        return exp

    def sequential(self, judged, disp, threshold, forecast=None, max_ratio=DROP_MAX_RATIO):
        """A one-sided CUSUM of each judged source's blocks against their forecasts -> [(source, blocks,
        evidence, lines, forecast)] for the runs whose evidence reaches threshold (each run raised once).
        A drop of a sparse source lasting an unknown time (an hour, an afternoon) is found once the evidence
        of its blocks adds up, however long it lasts, instead of only when it fills one of the fixed windows
        of drops(); a block at or above its forecast takes evidence away, so the forecast's usual misfit
        (evening too high for one quarter, too low for the next) does not build up. The evidence of a block
        uses its learned error (see learn), so a source whose forecast is often off needs a longer drop; and
        the run's lines must be at most max_ratio of its forecast. forecast: the blocks' forecasts to
        judge against (site_scaled), else the recorded ones."""
        found = []
        forecast = self.exp if forecast is None else forecast
        newest = (self.pos - 1) % self.blocks
        n = min(judged.shape[0], self.obs.shape[0])
        disp = self.block_dispersion(disp)
        for src in range(n):
            exp = forecast[src, newest]
            if not judged[src] or exp <= 0 or self.filled[src] < 1:
                self.cusum[src], self.run[src], self.raised[src] = 0.0, 0, False
                continue
            obs = self.obs[src, newest]
            step = block_evidence(obs, exp, disp[src], self.error(src)) - CUSUM_REFERENCE
            self.cusum[src] = max(0.0, self.cusum[src] + step)
            if self.cusum[src] == 0.0:
                self.run[src], self.raised[src] = 0, False
                continue
            self.run[src] += 1
            if self.cusum[src] < threshold or self.raised[src]:
                continue
            width = int(min(self.run[src], self.blocks, self.filled[src]))
            slots = (self.pos - 1 - np.arange(width)) % self.blocks
            lines, expected = float(self.obs[src, slots].sum()), float(forecast[src, slots].sum())
            if lines <= max_ratio * expected:
                self.raised[src] = True
                self.since[src] = 0
                found.append((src, width, float(self.cusum[src]), lines, expected))
        return found

    def drops(self, judged, disp, min_score, forecast=None):
        """Sources low over a long window -> [(source, width in blocks, score, lines, forecast)], the best
        window of each, where every block of the window was below its forecast. judged: bool per source
        (steady and old enough); disp: per source. The window's forecast error is the block's, learned
        (see learn): errors of consecutive blocks are alike more often than not, so it is not divided.
        A window reaching back into the blocks of one raised before is that outage again, not a new one
        (a half hour silent, raised, then the hour over it and the source's return read as a drop): only
        windows of the blocks since are judged. forecast: as sequential's."""
        found = []
        forecast = self.exp if forecast is None else forecast
        disp = self.block_dispersion(disp)
        # a source empty in most quarter hours (bursts hours apart) says nothing by a few more empty ones
        steady = judged[: self.obs.shape[0]] & (self.nonzero[: judged.shape[0]] >= STEADY_SHARE)
        for src in np.flatnonzero(steady).tolist():
            best = None
            for width in self.widths:
                if min(self.filled[src], self.since[src]) < width:
                    break
                slots = (self.pos - 1 - np.arange(width)) % self.blocks
                if (self.obs[src, slots] >= forecast[src, slots]).any():
                    continue    # a drop lasting the whole window: a short outage in it (a restart) is not one
                obs, exp = float(self.obs[src, slots].sum()), float(forecast[src, slots].sum())
                score = count_lower_score(obs, exp, disp[src], self.error(src)) if exp > 0 else 0.0
                if score >= min_score and (best is None or score > best[2]):
                    best = (src, width, score, obs, exp)
            if best is not None:
                self.since[src] = 0
                found.append(best)
        return found

    def error(self, src):
        """A source's block error as judged: the learned mean, at least REL2_FLOOR."""
        return max(float(self.rel2[src]), REL2_FLOOR)

    def errors(self, n):
        """The first n sources' block errors as judged (error, as an array)."""
        return np.maximum(self.rel2[:n], REL2_FLOOR)

    def unusual(self, disp, n):
        """bool[n]: whether each of the first n sources' newest block is USUAL_SIGMAS off its forecast, against
        its block error as judged and the sampling error disp / forecast (learn teaches such a block slower)."""
        newest = (self.pos - 1) % self.blocks
        out = np.zeros(n, np.bool_)
        for src in np.flatnonzero(self.exp[:n, newest] > 0).tolist():
            exp = self.exp[src, newest]
            ratio2 = math.log((self.obs[src, newest] + 0.5) / (exp + 0.5)) ** 2
            out[src] = ratio2 > USUAL_SIGMAS ** 2 * (self.error(src) + disp[src] / max(exp, 0.5))
        return out

    def learn(self, disp, rate, skip=(), slower=10.0):
        """Learn each source's block error from the newest block (not from sources in skip: a drop raised
        must not teach that drops are usual): its squared log ratio less what sampling explains
        (disp / forecast), averaged over the first blocks, then at `rate`, and judged at least REL2_FLOOR
        (error). Averaged as it is, not clipped at the floor block by block: a sparse source's blocks
        (ten lines each) scatter by sampling alone, and clipping each block's share of that below
        at the floor learned about half the sampling variance as forecast error (0.06 for ten lines a
        block at an exact forecast), counted twice with disp / forecast, and a drop of such a source to
        a third over an hour stayed below finding_min_score. An unusual block (USUAL_SIGMAS off its
        forecast: the start of a drop not yet significant over a window) teaches `slower` times
        slower, as an unusual bucket does (volume_kernels._learn_key)."""
        newest = (self.pos - 1) % self.blocks
        n = min(disp.shape[0], self.obs.shape[0])
        skip = set(skip)
        unusual = self.unusual(disp, n)
        for src in range(n):
            exp = self.exp[src, newest]
            if exp <= 0 or src in skip:
                continue
            obs = self.obs[src, newest]
            ratio2 = math.log((obs + 0.5) / (exp + 0.5)) ** 2
            target = ratio2 - disp[src] / max(exp, 0.5)
            rel2 = self.error(src)
            alpha = max(rate, 1.0 / (self.learned[src] + 1.0))
            self.nonzero[src] += alpha * ((obs > 0) - self.nonzero[src])
            if unusual[src]:
                alpha = rate / slower
            # the block's squared deviation from the block before, per line and halved (a Poisson count's is
            # 1, a clock's 0, random flows' their size): against the forecast instead, a clock that young
            # seasons forecast at 10 a quarter while it logs 15 learned 4.6 and was no clock any more (its
            # silence judged at the per-minute clumps); averaged as it is (clipped only where it is used:
            # clipping each block at disp would bias the mean of a skewed square low), bounded far out
            # against a drop's block; the first block against its forecast sets it
            before = self.obs[src, (newest - 1) % self.blocks] if self.filled[src] >= 2 else exp
            spread = min(max((obs - before) ** 2 / max(obs + before, 1.0), 1e-6), BDISP_SAMPLE_CAP * max(disp[src], 1.0))
            self.bdisp[src] = spread if self.bdisp[src] <= 0 else self.bdisp[src] + alpha * (spread - self.bdisp[src])
            self.rel2[src] += alpha * (min(target, 16.0 * rel2) - self.rel2[src])
            self.learned[src] += 1

    def state(self):
        return {"blocks": self.blocks, "obs": self.obs.tolist(), "exp": self.exp.tolist(),
                "filled": self.filled.tolist(), "pos": self.pos, "rel2": self.rel2.tolist(), "bdisp": self.bdisp.tolist(),
                "learned": self.learned.tolist(), "nonzero": self.nonzero.tolist(),
                "cusum": self.cusum.tolist(), "run": self.run.tolist(), "raised": self.raised.tolist(),
                "since": self.since.tolist()}

    def load_state(self, state):
        """Restore state(); absent (older snapshots) or saved with another ring length: start empty."""
        if not isinstance(state, dict) or state.get("blocks") != self.blocks:
            return
        obs = np.asarray(state["obs"], float).reshape(-1, self.blocks)
        exp = np.asarray(state["exp"], float).reshape(-1, self.blocks)
        filled = np.asarray(state["filled"], np.int64).reshape(-1)
        rel2 = np.asarray(state["rel2"], float).reshape(-1)
        learned = np.asarray(state["learned"], np.int64).reshape(-1)
        nonzero = np.asarray(state["nonzero"], float).reshape(-1)
        if (not obs.shape[0] == exp.shape[0] == filled.shape[0] == rel2.shape[0] == learned.shape[0] == nonzero.shape[0]
                or not 0 <= int(state["pos"]) < self.blocks):
            raise ValueError("t2 long windows: rows or ring position do not match")
        self.obs, self.exp, self.filled, self.pos = obs, exp, filled, int(state["pos"])
        self.rel2, self.learned, self.nonzero = rel2, learned, nonzero
        # the sequential test's evidence (absent in older snapshots: it starts again from none)
        rows = obs.shape[0]
        self.cusum = _row(state.get("cusum"), rows, float)
        # the blocks' dispersion (absent in older snapshots: learned again from the next block on)
        self.bdisp = _row(state.get("bdisp"), rows, float)
        self.run = _row(state.get("run"), rows, np.int64)
        self.raised = _row(state.get("raised"), rows, bool)
        # blocks since the last raise (absent in older snapshots: as never raised)
        self.since = _row(state.get("since"), rows, np.int64) if "since" in state else np.full(rows, NEVER, np.int64)


def _row(values, rows, dtype):
    """A saved per-source array, or zeros where it is absent or of another length."""
    arr = np.asarray(values if values is not None else [], dtype).reshape(-1)
    return arr if arr.shape[0] == rows else np.zeros(rows, dtype)
