"""Plain-Python twins of series_kernels.py, written from its docstrings, for the tests: one series as
an object, the same constants, no numba."""
import math

from . import series_kernels as K


class Series:
    def __init__(self, max_labels, threshold=70.0, suspicious=40.0, record_weight=K.RECORD_WEIGHT,
                 shift_budget=K.SHIFT_FLAGS_PER_DAY, episode_weight=0.1):
        self.max_labels = max_labels
        self.episode_weight = episode_weight   # an episode's record count and the share of it a rollback keeps
        self.record_weight = record_weight
        self.shift_budget = shift_budget
        self.high = self.low = None   # the range of every value learned (None: none yet)
        self.points = 0.0
        self.first_t = 0.0
        self.records = {1: 0.0, -1: 0.0}  # side -> values learned beyond the range then
        self.episode = None       # an episode's hold on the range: (start, high and low before it)
        self.threshold, self.suspicious = threshold, suspicious
        self.n = 0.0
        self.level = self.scale = self.slow = self.total = 0.0
        self.tails = {1: [0.0, 0.0], -1: [0.0, 0.0]}     # side -> [decayed excesses, decayed sum of log excess]
        self.hist = {1: [0.0] * K.HIST_BINS, -1: [0.0] * K.HIST_BINS}  # side -> decayed excesses per octave
        self.last_x = self.last_t = self.gap = self.alarm = 0.0
        self.rises = 0.5          # share of rises among the changes
        self.host_last = {}       # host code -> its last value (log scale), for its first HOST_SLOTS hosts
        self.run = 0
        self.season = {}          # bucket -> [offset, mean absolute residual, points seen]
        # bucket -> [the level-shift test's offset, what its last visit left pending, its visits in a row that
        # held a shift's episode, agreeing (K.EPISODES)]
        self.shift_season = {}
        self.day_level = 0.0      # the slow level the test's offsets are learned against
        self.visit = [-1, 0.0, 0.0, 0.0]   # the quarter hour visited, its values' weight, summed distance, take
        self.visit_episode = False         # the visit holds values of a fired shift's episode
        self.labels = []
        self.distinct = 0
        self.shift_n = self.base = self.fast = self.gap_size = 0.0   # the level-shift test
        # decayed windows, excursions, their sums of peak excess and squared peak excess, the peak under way
        self.u_total = self.u_n = self.u_s = self.u_s2 = self.u_peak = 0.0
        self.split_only = 0.0     # SPLIT_ONLY: K.SPLIT_JUDGED, K.SPLIT_MIXED, K.POOLED_MIXTURE
        self.settle = self.moved_from = self.shifts = self.held = self.evidence = 0.0
        self.shift_t = 0.0        # when the last shift fired (0: none, or recovered since)
        self.u_episode = False    # the excursion under way is that shift's episode going on (not learned)
        self.zero_share = 0.0     # decayed share of values that were exactly 0 (K.ZERO_MODE_SHARE)

    def slow_alpha(self):
        """Twin of series_kernels.slow_alpha: the long-run memory's weight per value, at most a day's share."""
        return min(K.SLOW_ALPHA, max(self.gap, K.MIN_GAP_S) / K.DAY_S)

    def is_recovery(self, fast):
        if self.shifts <= 0:
            return False
        away = self.base - self.moved_from
        return (fast - self.base) * away < 0 and abs(fast - self.moved_from) < 0.5 * abs(away)

    def excess_fit(self):
        """(shape, scale): generalized Pareto by moments, the prior a Pareto of index U_PRIOR_INDEX from
        U_START."""
        xi0 = 1.0 / K.U_PRIOR_INDEX
        sigma0 = K.U_START * xi0
        weight = self.u_n + K.PRIOR_EXCESSES
        mean = (self.u_s + K.PRIOR_EXCESSES * sigma0 / (1 - xi0)) / weight
        square = (self.u_s2 + K.PRIOR_EXCESSES * 2 * sigma0 ** 2 / ((1 - xi0) * (1 - 2 * xi0))) / weight
        variance = max(square - mean ** 2, 1e-12)
        xi = min(max((1 - mean ** 2 / variance) / 2, 0.0), K.MAX_SHAPE)
        return xi, mean * (1 - xi)

    def u_share_log10(self):
        return math.log10(min((self.u_n + K.PRIOR_RATE * K.PRIOR_WEIGHT) / (self.u_total + K.PRIOR_WEIGHT), 1.0))

    def shift_log10p(self, u):
        a = abs(u)
        if a <= K.U_START:
            return 0.0
        xi, sigma = self.excess_fit()
        y = a - K.U_START
        tail = -y / sigma / math.log(10) if xi < 1e-9 else -math.log10(1 + xi * y / sigma) / xi
        return self.u_share_log10() + tail

    def shift_u_at(self, lp):
        """The |u| whose shift_log10p is lp."""
        target = lp - self.u_share_log10()
        if target >= 0:
            return K.U_START
        xi, sigma = self.excess_fit()
        if xi < 1e-9:
            return K.U_START - target * sigma * math.log(10)
        return K.U_START + sigma / xi * (10 ** (-xi * target) - 1)

    def shift_fast(self, d, scale):
        if self.shift_n <= 0:
            return d
        limit = K.SHIFT_CLIP * scale
        return self.fast + min(max(d - self.fast, -limit), limit) / K.SHIFT_WINDOW

    def shift_u(self, fast):
        if self.shift_n < K.SHIFT_WARM or self.gap_size <= 0:
            return 0.0
        return (fast - self.base) / max(self.gap_size, K.GAP_FLOOR)

    def learn_shift(self, fast, w, fired, recovery, u, t):
        if w <= 0:
            return
        if self.shift_n >= K.SHIFT_WARM:
            keep = (1.0 - self.slow_alpha()) ** w
            self.u_total = self.u_total * keep + w / K.SHIFT_WINDOW
            self.u_n *= keep
            self.u_s *= keep
            self.u_s2 *= keep
            if abs(u) > K.U_START:
                if self.u_peak <= 0:   # an excursion begins: the last fired shift's episode going on?
                    self.u_episode = self.in_episode(u, t)
                self.u_peak = max(self.u_peak, abs(u))
            if fired and recovery:
                self.u_peak = 0.0       # an episode's end is not learned
            if (abs(u) <= K.U_START or fired) and self.u_peak > 0:
                if not self.u_episode:
                    k = self.episode_weight if fired else 1.0    # a fired one: an episode's
                    self.u_n += k
                    self.u_s += k * (self.u_peak - K.U_START)
                    self.u_s2 += k * (self.u_peak - K.U_START) ** 2
                self.u_peak = 0.0
        n = self.shift_n
        self.shift_n += w
        if n <= 0:
            self.base = self.fast = fast
            return
        self.fast = fast if w == 1.0 else self.fast + w * (fast - self.fast)
        if fired:
            self.held = 0.0
        if fired and recovery:
            self.settle = -2.0 * K.SHIFT_WINDOW
            self.shift_t = 0.0
        elif fired:
            self.settle = 2.0 * K.SHIFT_WINDOW
            self.moved_from = self.base
            self.shifts += 1
            self.shift_t = t
        if self.settle < 0:
            self.base = self.fast
            self.settle = min(self.settle + w, 0.0)
            return
        if self.settle > 0:
            self.base = self.fast
            self.settle = max(self.settle - w, 0.0)
            return
        rate = max(1.0 / K.SHIFT_MEMORY, 1.0 / n)
        gap = abs(self.fast - self.base)
        if n >= K.SHIFT_WARM and self.gap_size > 0:
            gap = min(gap, K.GAP_CLIP * self.gap_size)
        if abs(u) <= K.U_START or n < K.SHIFT_JUDGE:     # not learned from an excursion judged
            self.gap_size += w * rate * (gap - self.gap_size)
        self.base += w * rate * (self.fast - self.base)

    def judged(self):
        return (self.n >= K.MIN_POINTS and self.distinct > self.max_labels
                and 1.0 - K.MONOTONE_SHARE < self.rises < K.MONOTONE_SHARE)

    def tail_log10p(self, z):
        a = abs(z)
        if a <= K.TAIL_START:
            return 0.0
        n, s = self.tails[1 if z > 0 else -1]
        share = (n + K.PRIOR_RATE * K.PRIOR_WEIGHT) / (self.total + K.PRIOR_WEIGHT)
        index = (n + K.PRIOR_EXCESSES) / (s + K.PRIOR_EXCESSES / K.PRIOR_INDEX)
        pareto = math.log10(min(share, 1.0)) - index * math.log10(a / K.TAIL_START)
        hist, k0 = self.hist[1 if z > 0 else -1], self.octave(a)
        beyond = hist[k0] * max(1.0 - (math.log2(a / K.TAIL_START) - k0), 0.0) + sum(hist[k0 + 1:])
        if beyond <= 0:
            return pareto
        return max(pareto, math.log10(min(beyond / (self.total + K.PRIOR_WEIGHT), 1.0)))

    def record_log10p(self, value, z, t):
        if self.high is None or self.record_weight <= 0:
            return 0.0
        span = max(self.high - self.low, K.RELATIVE_FLOOR * max(abs(self.high), abs(self.low)), 1e-300)
        if value > self.high and z > 0:
            excess, side = (value - self.high) / span, 1
        elif value < self.low and z < 0:
            excess, side = (self.low - value) / span, -1
        else:
            return 0.0
        chances = min(self.points, max(t - self.first_t, 0.0) / K.RECORD_GRAIN_S + 1.0)
        rate = min((self.records[side] + 1.0) / (chances + 1.0), 1.0)
        return min(math.log10(rate) * (1.0 + self.record_weight * excess), 0.0)

    def learn_record(self, value, t, w, episode=False):
        if w <= 0:
            return
        if self.high is None:
            self.high = self.low = value
            self.first_t = t
            self.points += w
            return
        if episode and self.episode is None and not self.low <= value <= self.high:
            # when it began, the range before it, its values beyond that range and when the last came
            self.episode = [t, self.high, self.low, 0, t]
        elif self.episode is not None and not episode:
            since, high, low, beyond, last = self.episode
            over = low <= value <= high and t - last >= K.EPISODE_QUIET_S    # back, and quiet a while
            if t - since <= K.EPISODE_KEEP_S and over and beyond >= K.EPISODE_MIN_VALUES:   # over: rolled back
                self.high = high + self.episode_weight * (self.high - high)
                self.low = low + self.episode_weight * (self.low - low)
                self.episode = None
            elif over or t - since > K.EPISODE_KEEP_S:     # a lone spike, or it lasted: kept
                self.episode = None
        if self.episode is not None and not self.episode[2] <= value <= self.episode[1]:
            self.episode[3] += 1
            self.episode[4] = t
            w = min(w, self.episode_weight)      # the episode's, flagged or not
        if value > self.high:
            self.high = value
            self.records[1] += w
        elif value < self.low:
            self.low = value
            self.records[-1] += w
        self.points += w

    def rate_bonus(self, gap, multiplicity):
        """Twin of series_kernels.rate_bonus."""
        per_day = K.DAY_S / max(gap, K.MIN_GAP_S)
        budget = K.FALSE_FLAGS_PER_DAY / (per_day * max(multiplicity, 1.0))
        return min(max(self.threshold + 10 * math.log10(budget), K.MIN_BONUS), K.MAX_BONUS)

    def constant_broken(self, value, t):
        """Twin of series_kernels.constant_broken."""
        return (self.record_weight > 0 and self.n >= K.MIN_POINTS and self.high is not None
                and self.high == 0.0 and self.low == 0.0 and value != 0.0 and t - self.first_t >= K.DAY_S)

    def beyond_episode(self, value):
        """Twin of series_kernels.beyond_episode."""
        return self.episode is not None and not self.episode[2] <= value <= self.episode[1]

    @staticmethod
    def octave(a):
        return min(int(math.log2(a / K.TAIL_START)), K.HIST_BINS - 1)

    def reported(self, s):
        fresh, in_episode = s > self.alarm + K.FRESH_MARGIN, self.alarm >= self.threshold
        self.alarm = max(self.alarm - 100.0 / K.REFRACTORY_POINTS, s)
        if s >= self.threshold and fresh:
            return s
        if s >= self.threshold or (in_episode and s >= self.suspicious):
            return min(max(s * K.DAMPING, self.suspicious), self.threshold - 0.01)
        return (s if fresh else s * K.DAMPING) * 0.999 * self.suspicious / self.threshold

    def step(self, value, t, w=1.0, multiplicity=1.0, shift_multiplicity=None, host=0):
        """-> (score, kind, expected and recent level on the log scale), as series_kernels.step (the
        level-shift test's multiplicity is the spike test's unless given; host: the line's host code, 0
        none)."""
        shift_multiplicity = multiplicity if shift_multiplicity is None else shift_multiplicity
        if self.distinct <= self.max_labels and value not in self.labels:
            if len(self.labels) < self.max_labels:
                self.labels.append(value)
            self.distinct += 1
        if self.empty_mode(value, w):
            return 0.0, K.KIND_NONE, self.level, self.level
        x = math.copysign(math.log1p(abs(value)), value)
        if self.n == 0:
            self.level = self.last_x = x
            self.last_t = t
            self.n = 1.0
            self.day_level = x
            self.before(host, x)
            self.learn_record(value, t, w)
            return 0.0, K.KIND_NONE, x, x
        b = int((t % K.DAY_S) / K.DAY_S * K.SEASON_BUCKETS) % K.SEASON_BUCKETS
        if self.shift_budget > 0 and w > 0:
            self.end_visit(b)
        bucket = self.season.get(b, [0.0, 0.0, 0])
        expected = self.level + bucket[0]
        scale = max(self.scale, K.FLOOR_SHARE * self.slow, K.RELATIVE_FLOOR * abs(self.level), 1e-300,
                    bucket[1] if bucket[2] > 1 else 0.0)
        e = x - expected
        z = e / scale
        room = self.unseen_step(b, t)
        z_judged = e / math.hypot(scale, room) if room > 0 else z
        score, kind = 0.0, K.KIND_NONE
        shift_off = (self.shift_season.get(b, [0.0])[0]
                     - sum(v[0] for v in self.shift_season.values()) / K.SEASON_BUCKETS)
        fast, u = x - shift_off, 0.0
        if self.shift_budget > 0:
            fast = self.shift_fast(x - shift_off, scale)
            u = self.shift_u(fast)
        span = 0.0 if self.high is None else (math.copysign(math.log1p(abs(self.high)), self.high)
                                              - math.copysign(math.log1p(abs(self.low)), self.low))
        p = (b - 1) % K.SEASON_BUCKETS
        jumps = (bucket[2] and p in self.season and abs(self.shift_season.get(b, [0.0])[0]
                                                        - self.shift_season.get(p, [0.0])[0])
                 > K.SEASON_STEP_LIMIT * self.slow)
        if self.shift_budget > 0 and (abs(shift_off) > span or jumps):
            self.settle = -2.0 * K.SHIFT_WINDOW
            fast = x - shift_off
            u = 0.0
        fired = recovery = evidence = False
        u_learn = u
        w_line, episode = w, False
        if self.judged():
            lp = self.tail_log10p(z_judged)
            kind = K.KIND_SPIKE if z > 0 else K.KIND_DROP
            if self.record_log10p(value, z, t) < lp:
                lp = self.record_log10p(value, z, t)
                kind = K.KIND_RECORD_HIGH if z > 0 else K.KIND_RECORD_LOW
            if lp < 0:
                score = min(max(-10 * lp + self.rate_bonus(self.gap, multiplicity), 0.0), 100.0)
            else:
                kind = K.KIND_NONE
            if self.split_only > 0:
                score, kind = 0.0, K.KIND_NONE
            lp = self.shift_log10p(u)
            shift_score = 0.0
            if lp < 0 and self.shift_budget > 0 and self.shift_n >= K.SHIFT_JUDGE:
                bonus = self.rate_bonus(self.gap * K.SHIFT_WINDOW, shift_multiplicity)
                bonus += 10 * math.log10(self.shift_budget / K.FALSE_FLAGS_PER_DAY)
                shift_score = min(max(-10 * lp + bonus, 0.0), 100.0)
                if shift_score >= self.threshold:    # censored: learned as what scores the threshold
                    u_learn = math.copysign(min(abs(u), self.shift_u_at(-(self.threshold - bonus) / 10)), u)
            if self.split_only > 0 and u < 0:
                shift_score = 0.0
            if self.split_only in (K.SPLIT_MIXED, K.POOLED_MIXTURE):
                shift_score = 0.0
            if self.in_episode(u, t) or self.is_returning(u, fast):   # an episode going on, or ending
                shift_score = 0.0
            back = abs(u) > K.U_START and self.is_recovery(fast)    # a return needs no rarity
            self.held = self.held + 1 if shift_score >= self.threshold or back else 0.0
            fired = self.held >= K.SHIFT_HOLD
            recovery = fired and self.is_recovery(fast)
            if fired and not recovery and shift_score > score and self.alarm < self.threshold:
                score = shift_score
                kind = K.KIND_SHIFT_UP if u > 0 else K.KIND_SHIFT_DOWN
                expected = self.base + shift_off
            elif self.settle > 0 and self.evidence > 0 and score < self.suspicious:
                moved = self.fast - self.moved_from
                evidence = (x - shift_off - self.moved_from) * moved > 0.5 * moved * moved
                if evidence:
                    kind = K.KIND_SHIFT_UP if moved > 0 else K.KIND_SHIFT_DOWN
                    expected = self.moved_from + shift_off
            episode = score >= self.threshold or self.alarm >= self.threshold
            if episode:
                w = min(w, self.episode_weight)
            score = self.reported(score)
            if evidence:
                score = self.suspicious
                self.evidence -= 1
            elif (episode and score < self.suspicious and self.split_only <= 0 and self.episode is not None
                  and not self.episode[2] <= value <= self.episode[1]):
                score = self.suspicious
                if kind == K.KIND_NONE:
                    kind = K.KIND_SPIKE if value > self.episode[1] else K.KIND_DROP
            if fired and not recovery:
                self.evidence = K.SHIFT_EVIDENCE
        elif self.split_only <= 0 and (self.constant_broken(value, t)
                                       or (self.alarm >= self.threshold and self.beyond_episode(value))):
            if self.constant_broken(value, t):    # a constant's first other value: a record (K.constant_score)
                chances = min(self.points, max(t - self.first_t, 0.0) / K.RECORD_GRAIN_S + 1.0)
                lp = -math.log10(chances + 1.0) * (1.0 + self.record_weight)
                score = min(max(-10 * lp + self.rate_bonus(self.gap, multiplicity), 0.0), 100.0)
                kind = K.KIND_RECORD_HIGH if value > self.high else K.KIND_RECORD_LOW
            episode = score >= self.threshold or self.alarm >= self.threshold
            if episode:
                w = min(w, self.episode_weight)
            score = self.reported(score)
            if episode and score < self.suspicious and self.beyond_episode(value):
                score = self.suspicious
                kind = K.KIND_SPIKE if value > self.episode[1] else K.KIND_DROP
        self.learn_record(value, t, w, episode or w_line < 1.0)   # a flagged line's value: an episode's
        if self.shift_budget > 0:
            self.learn_shift(fast, w_line, fired, recovery, u_learn, t)
            if w_line > 0:
                self.learn_visit(b, x, w_line, K.TAIL_START * scale, t)
        self._learn(b, x, t, w_line, z, e, scale, host)
        return score, kind, expected, fast + shift_off

    def empty_mode(self, value, w):
        """A 0 of a series of magnitudes once zeros are a mode of it: skipped (K.ZERO_MODE_SHARE)."""
        if self.n == 0:
            return False
        mode = (value == 0 and self.n >= K.MIN_POINTS and K.ZERO_MODE_SHARE <= self.zero_share <= K.ZERO_MODE_MAX
                and self.level > K.ZERO_MODE_LEVEL and 0.0 in self.labels)
        if w > 0:
            rate = min(max(self.slow_alpha(), 1.0 / (self.n + 1.0)) * w, 1.0)
            self.zero_share += rate * ((1.0 if value == 0 else 0.0) - self.zero_share)
        return mode

    def unseen_weekday(self, t):
        """Twin of series_kernels.unseen_weekday."""
        if self.high is None:
            return False
        return 1 <= math.floor(t / K.DAY_S) - math.floor(self.first_t / K.DAY_S) < K.WEEK_DAYS

    def unseen_step(self, b, t):
        """Twin of series_kernels.unseen_step."""
        p = int((self.last_t % K.DAY_S) / K.DAY_S * K.SEASON_BUCKETS) % K.SEASON_BUCKETS
        now, last = self.season.get(b), self.season.get(p)
        if b == p or not now or not last or not now[2] or not last[2] or not self.unseen_weekday(t):
            return 0.0
        return K.UNSEEN_DAY_WIDTH * abs(now[0] - last[0])

    def end_visit(self, b):
        """Twin of series_kernels._end_visit."""
        pb, n, total, taken = self.visit
        if pb == b:
            return
        if pb >= 0 and n > 0:
            ended = self.shift_season.setdefault(pb, [0.0, 0.0, 0.0])
            m = total / n
            if not self.visit_episode:
                ended[2] = 0.0
            else:
                ended[2] = K.EPISODE_VISITS if ended[2] > 0 and m * ended[1] > 0 else 1.0
            ended[1] = m
        self.visit = [b, 0.0, 0.0, 0.0]
        self.visit_episode = False
        mine = self.shift_season.get(b)
        if self.offsets_learn(b) and mine is not None and mine[1] * taken > 0:
            ahead = math.copysign(min(abs(mine[1]), abs(taken)), mine[1])
            mine[0] += ahead
            mine[1] -= ahead
            self.visit[3] = ahead

    def is_returning(self, u, fast):
        """Twin of series_kernels.is_returning."""
        away = self.base - self.moved_from
        return self.shifts > 0 and u * away < 0 and (fast - self.moved_from) * away > 0

    def in_episode(self, u, t):
        """Twin of series_kernels.in_episode."""
        return self.shift_t > 0 and t - self.shift_t < K.EPISODE_KEEP_S and u * (self.base - self.moved_from) > 0

    def offsets_learn(self, b):
        """Twin of series_kernels.offsets_learn."""
        return b in self.season and self.shift_season.get(b, [0.0, 0.0, 0.0])[2] != 1.0

    def learn_visit(self, b, x, w, limit, t):
        """Twin of series_kernels._learn_visit."""
        if self.shift_t > 0 and t - self.shift_t < K.EPISODE_KEEP_S:
            self.visit_episode = True
        mine = self.shift_season.setdefault(b, [0.0, 0.0, 0.0])
        d = x - mine[0]
        if self.n < K.MIN_POINTS:
            self.day_level += w / (self.n + w) * (d - self.day_level)
        else:
            rate = min(1.0, max(self.gap, K.MIN_GAP_S) / K.SEASON_LEVEL_S)
            self.day_level += w * rate * min(max(d - self.day_level, -limit), limit)
        self.visit[1] += w
        self.visit[2] += w * min(max(d - self.day_level, -4.0 * limit), 4.0 * limit)
        if not self.offsets_learn(b):
            return
        m, p = self.visit[2] / self.visit[1], mine[1]
        if m * p <= 0:
            return
        noise = K.SEASON_NOISE * self.slow / math.sqrt(self.visit[1])
        taken = math.copysign(min(max(min(abs(m), abs(p)) - noise, 0.0), limit), m)
        mine[0] += taken
        mine[1] -= taken
        self.visit[2] -= taken * self.visit[1]
        self.visit[3] += taken

    def before(self, host, x):
        """The value a rise or fall of x is counted against: the host's own last one while it is among the
        first HOST_SLOTS hosts seen (its first value: the series' last), else the series' last."""
        if host and host in self.host_last:
            last, self.host_last[host] = self.host_last[host], x
            return last
        if host and len(self.host_last) < K.HOST_SLOTS:
            self.host_last[host] = x
        return self.last_x

    def _learn(self, b, x, t, w, z, e, scale, host=0):
        a = abs(z)
        last = self.before(host, x)
        if x != last:
            self.rises += max(K.SCALE_ALPHA, 1.0 / self.n) * (float(x > last) - self.rises)
        if t >= self.last_t:
            self.gap += max(K.SCALE_ALPHA, 1.0 / self.n) * (max(t - self.last_t, K.MIN_GAP_S) - self.gap)
        self.last_x, self.last_t = x, max(t, self.last_t)
        if w <= 0:
            return
        n, warm = self.n, self.n >= K.MIN_POINTS
        self.n += w
        slow_alpha = self.slow_alpha()
        keep = (1.0 - slow_alpha) ** w
        self.total = self.total * keep + w
        for side in (1, -1):
            self.tails[side] = [v * keep for v in self.tails[side]]
            self.hist[side] = [v * keep for v in self.hist[side]]
        if warm and a > K.TAIL_START:
            tail = self.tails[1 if z > 0 else -1]
            tail[0] += w
            tail[1] += w * math.log(a / K.TAIL_START)
            self.hist[1 if z > 0 else -1][self.octave(a)] += w
        sign = 1 if z > 0 else -1
        self.run = (self.run + sign if self.run * sign > 0 else sign) if a > K.TAIL_START else 0
        if abs(self.run) >= K.SHIFT_RUN:
            self.level = x - self.season.get(b, [0.0])[0]
            self.run = 0
            return
        limit = K.TAIL_START * scale
        size = min(a * scale, limit) if warm else abs(e)
        self.level += w * (min(max(e, -limit), limit) if warm else e)
        if b in self.season:
            bucket = self.season[b]
            bucket[0] += w * K.SEASON_ALPHA * min(max(x - self.level - bucket[0], -limit), limit)
            bucket[1] += w * K.SEASON_ALPHA * (min(abs(e), 4.0 * limit) - bucket[1])
            bucket[2] = min(bucket[2] + 1, 100)
        else:
            self.season[b] = [x - self.level, abs(e), 1]
        self.scale += w * max(K.SCALE_ALPHA, 1.0 / (n + 1.0)) * (size - self.scale)
        self.slow += w * max(slow_alpha, 1.0 / (n + 1.0)) * (size - self.slow)
