"""Plain-Python twin of source_shift_kernels.py, written from its docstring, for the tests: one source's
test as an object, the same constants, no numba."""
import math

from . import series_kernels as K
from . import source_shift_kernels as SSK


class Source:
    """One source's level-shift test over its judged series' u."""

    def __init__(self, threshold=70.0, suspicious=40.0, budget=K.SHIFT_FLAGS_PER_DAY):
        self.threshold, self.suspicious, self.budget = threshold, suspicious, budget
        self.series_u = {}        # judged series -> its clipped shift evidence
        self.values = 0
        self.last_t = self.gap = 0.0
        self.total = self.windows = 0.0       # decayed / all windows seen
        self.n = self.s1 = self.s2 = 0.0      # decayed excursions, sums of peak excess and its square
        self.peak = 0.0
        self.held = 0
        self.fired = False
        self.evidence = 0

    def statistic(self):
        return sum(self.series_u.values())

    def value(self, series, u, t):
        """A value of a judged series that now shows shift evidence u -> (score, kind)."""
        self.series_u[series] = min(max(u, -SSK.SERIES_CLIP), SSK.SERIES_CLIP)
        if len(self.series_u) < SSK.MIN_SERIES:
            return 0.0, K.KIND_NONE
        return self.judge(self.statistic(), t, self.series_u[series])

    def tail(self, a):
        share = min((self.n + K.PRIOR_RATE * K.PRIOR_WEIGHT) / (self.total + K.PRIOR_WEIGHT), 1.0)
        return math.log10(share), K.excess_fit(self.n, self.s1, self.s2)

    def log10p(self, a):
        log_share, (xi, sigma) = self.tail(a)
        y = a - K.U_START
        return log_share + (-y / sigma / math.log(10) if xi < 1e-9 else -math.log10(1 + xi * y / sigma) / xi)

    def u_at(self, lp):
        log_share, (xi, sigma) = self.tail(0.0)
        target = lp - log_share
        if target >= 0:
            return K.U_START
        if xi < 1e-9:
            return K.U_START - target * sigma * math.log(10)
        return K.U_START + sigma / xi * (10 ** (-xi * target) - 1)

    def judge(self, u, t, own=1.0):
        """The statistic u at time t, on a value of a series showing evidence own -> (score, kind)."""
        count = len(self.series_u)
        if self.values > 0 and t >= self.last_t:
            self.gap += max(K.SCALE_ALPHA, 1.0 / self.values) * (max(t - self.last_t, K.MIN_GAP_S) - self.gap)
        self.last_t = max(t, self.last_t)
        self.values += 1
        window = K.SHIFT_WINDOW * count
        gap = max(self.gap, K.MIN_GAP_S)
        keep = 1 - min(1 / (K.SHIFT_MEMORY * count), gap / K.DAY_S)   # a day of values, or SHIFT_MEMORY windows
        self.total = self.total * keep + 1 / window
        self.windows += 1 / window
        self.n, self.s1, self.s2 = self.n * keep, self.s1 * keep, self.s2 * keep
        a = abs(u)
        if a <= K.U_START - SSK.END_MARGIN or (a <= K.U_START and self.peak <= 0):   # none, or the one that ended
            if self.peak > 0:
                self.n += 1
                self.s1 += self.peak - K.U_START
                self.s2 += (self.peak - K.U_START) ** 2
            self.peak, self.held, self.fired, self.evidence = 0.0, 0, False, 0
            return 0.0, K.KIND_NONE
        if a <= K.U_START:          # dipping back towards U_START: the excursion goes on
            return 0.0, K.KIND_NONE
        per_day = K.DAY_S / (gap * window)
        bonus = min(max(self.threshold + 10 * math.log10(K.FALSE_FLAGS_PER_DAY / per_day), K.MIN_BONUS), K.MAX_BONUS)
        bonus += 10 * math.log10(self.budget / K.FALSE_FLAGS_PER_DAY)
        score = min(max(-10 * self.log10p(a) + bonus, 0.0), 100.0)
        kind = SSK.KIND_SOURCE_UP if u > 0 else SSK.KIND_SOURCE_DOWN
        censor = self.u_at(-(self.threshold - bonus) / 10)
        if self.fired:
            self.peak = max(self.peak, min(a, censor))
            if self.evidence > 0 and own * u > 0 and u > 0:
                self.evidence -= 1
                return self.suspicious, kind
            return 0.0, K.KIND_NONE
        self.peak = max(self.peak, a)
        self.held = self.held + 1 if score >= self.threshold else 0
        if u <= 0:                  # a shift down together is learned, never raised (SSK.KIND_SOURCE_DOWN)
            return 0.0, K.KIND_NONE
        if self.held >= K.SHIFT_HOLD * count and self.windows >= SSK.JUDGE_WINDOWS and own * u > 0:
            self.fired, self.evidence = True, int(K.SHIFT_EVIDENCE)
            self.peak = min(self.peak, censor)
            return score, kind
        return 0.0, K.KIND_NONE
