"""Tier 3's numeric series: every measurement position of a template, per source, as a time series.

Every numeric value of a (template, position) slot belongs to one series per source;
series_kernels.py judges each value against a forecast of the series' own past and daily pattern,
once the series has shown itself a measurement (more distinct values than max_categories, not a
counter or a clock), and against the range of everything it has shown (a new record, weighed by
`series_record_weight`). This module owns the state rows, the (slot, source) ->
row map and the `max_series` limit (values of series beyond it are not judged; they are counted in
`stats` and the first refusal is logged; 0 turns series off). Keys of slots from SPLIT_BASE on are
split series (tier3_novelty.py gives them: one per numeric slot and categorical value); their rows
are marked SPLIT_ONLY and count in `max_series` like any other. Series are not kept per host: the
kernel counts each value's rise or fall against its own host's last value (host_codes), so the clocks
of a service's hosts pooled into one series are known for clocks.
"""
import logging
import zlib

import numpy as np

from . import novelty_kernels as NK
from . import series_kernels as K
from . import source_shift_kernels as SSK

log = logging.getLogger(__name__)
SOURCE_BITS = 32
# a series with no value for this long (and for its fast mean's span) no longer counts in its source's
# level-shift sum (SeriesBook._fresh)
STALE_S = 3600.0
SPLIT_BASE = 1 << 30   # slots from here on are split series (one categorical value's): level shifts only


_STEPPED = ("state", "seen", "labels", "record")   # per-row arrays K.score_series steps, copied whole


class _RowCopies:
    """What score() copied of the rows a batch touches, to put back (all, or some of them): the small
    per-row arrays whole, and of the time-of-day rows (3 KB a row, most of the copying when whole) only
    the buckets a step can write: the buckets of the batch's times and the visit each row had open
    before it (K.step writes season[r, :, b] for its value's bucket b and PENDING and EPISODES of the visit
    it ends, nothing else). A neighbour on each side of each bucket is kept too, so no float rounding of the
    bucket here against the kernel's can leave a written column out."""

    def __init__(self, book, touched, ts):
        self.touched = touched
        self.whole = tuple(getattr(book, name)[touched] for name in _STEPPED)
        b = np.unique(np.floor((np.asarray(ts, np.float64) % K.DAY_S) / K.DAY_S * K.SEASON_BUCKETS))
        if not np.all(np.isfinite(b)):     # a time the kernel's bucket_of cannot be foretold for: all
            b = np.arange(K.SEASON_BUCKETS, dtype=np.float64)
        b = b.astype(np.int64)
        self.buckets = np.unique(np.concatenate([b - 1, b, b + 1]) % K.SEASON_BUCKETS)
        # columns of a row's (SEASON_ROWS, SEASON_BUCKETS) block, read by take (a fraction of the cost of
        # indexing three axes at once)
        cols = (np.arange(K.SEASON_ROWS)[:, None] * K.SEASON_BUCKETS + self.buckets).ravel()
        season = book.season.reshape(book.season.shape[0], -1)
        self.season = season.take(cols, axis=1).take(touched, axis=0).reshape(touched.size, K.SEASON_ROWS,
                                                                                  self.buckets.size)
        # the open visit's bucket (VISIT_B - 1; none: -1, whose column the kernel never writes: copied anyway)
        self.visit = self.whole[0][:, K.VISIT_B].astype(np.int64) - 1
        self.pending = book.season[touched, K.PENDING, self.visit]
        self.episodes = book.season[touched, K.EPISODES, self.visit]

    def restore(self, book, sel=None):
        """Put back the rows touched[sel] (all when sel is None) as they were before the batch."""
        sel = slice(None) if sel is None else sel
        rows = self.touched[sel]
        for name, copy in zip(_STEPPED, self.whole):
            getattr(book, name)[rows] = copy[sel]
        book.season[rows, K.PENDING, self.visit[sel]] = self.pending[sel]
        book.season[rows, K.EPISODES, self.visit[sel]] = self.episodes[sel]
        book.season[np.ix_(rows, np.arange(K.SEASON_ROWS), self.buckets)] = self.season[sel]


def host_codes(batch):
    """int64[n]: the code of each line's host, the same for a host's name in every batch and process
    (its CRC-32 + 1, exact in the kernel's float state), 0 where the line named none (batch.host_id -1,
    or a batch with no host_id)."""
    host_id, hosts = getattr(batch, "host_id", None), getattr(batch, "hosts", None)
    if host_id is None or not hosts:
        return np.zeros(batch.n, np.int64)
    codes = np.array([zlib.crc32(h if isinstance(h, bytes) else str(h).encode()) + 1 for h in hosts], np.int64)
    host_id = np.asarray(host_id)
    return np.where(host_id >= 0, codes[np.maximum(host_id, 0)], 0).astype(np.int64)


def _hosts(batch):
    """Host codes of the batch's lines: its host_code where it keeps them (tier3_novelty.SeriesView), else
    host_codes of it."""
    code = getattr(batch, "host_code", None)
    return host_codes(batch) if code is None else code


def _ranges(ptr, lines):
    """Indices of the parameters of these lines (ptr: each line's first parameter, and the end)."""
    starts, ends = ptr[lines], ptr[lines + 1]
    counts = ends - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return np.arange(int(counts.sum()), dtype=np.int64) + offsets


class SourceTest:
    """The state of the sources' level-shift test (source_shift_kernels), a row per source id: an object of
    its own, as its rows are not the series' (state_shape checks a book's series arrays for one length)."""

    def __init__(self):
        self.state = np.zeros((1, SSK.COLS))


class SeriesBook:
    """Series state of one tier 3: rows of series_kernels state, grown as series appear."""

    def __init__(self, max_series, max_labels, threshold=70.0, suspicious=40.0, record_weight=K.RECORD_WEIGHT,
                 shift_budget=K.SHIFT_FLAGS_PER_DAY, episode_weight=0.1):
        self.threshold, self.suspicious = float(threshold), float(suspicious)
        self.episode_weight = float(episode_weight)   # anomaly_learning_weight: see K.step
        self.record_weight = float(record_weight)
        self.shift_budget = float(shift_budget)   # series_shift_budget (0: no level-shift test)
        self.max_series = int(max_series)
        self.max_labels = int(max_labels)
        self.rows = {}              # slot << SOURCE_BITS | source id -> row
        self.state = np.zeros((16, K.COLS))
        self.season = np.zeros((16, K.SEASON_ROWS, K.SEASON_BUCKETS))
        self.seen = np.zeros((16, K.SEASON_BUCKETS), np.int8)
        self.labels = np.zeros((16, self.max_labels))
        self.record = np.zeros((16, K.RECORD_COLS))
        self.source_of = np.zeros(16, np.int64)   # row -> source id (from its key)
        self.source_test = SourceTest()
        self.refused = 0            # parameter values of series past max_series (not judged)
        self._warned = False
        # What score() stepped, kept for learn(): (batch, rows, ts, touched rows, their copies from before
        # the batch, the multiplicity it judged with)
        self._scored = None
        self._sorted = None         # (series count, sorted keys, their rows): see _known()

    @property
    def sources(self):
        """float64[source ids, SSK.COLS]: each source's source-level shift test."""
        return self.source_test.state

    @sources.setter
    def sources(self, value):
        self.source_test.state = value

    def rows_of(self, batch, slots):
        """Series row of every parameter (int64[m], -1: none): numeric values of slots, per the line's
        source; new series get rows while max_series allows (novelty_kernels.series_rows finds the
        known ones)."""
        if self.max_series == 0:
            return np.full(slots.size, -1, np.int64)
        known_keys, known_rows = self._known()
        out, keys = NK.series_rows(batch.param_ptr, np.asarray(batch.source_id, np.int32), np.asarray(slots, np.int64),
                                   batch.param_num, known_keys, known_rows, SOURCE_BITS)
        new = np.flatnonzero(out == NK.ROW_NEW)
        if new.size:       # keys new to the book, given rows in key order (as np.unique orders them)
            unique, inverse = np.unique(keys[new], return_inverse=True)
            out[new] = np.array([self._row(int(k)) for k in unique.tolist()], np.int64)[inverse]
            self.refused += int(np.count_nonzero(out[new] < 0))
        return out

    def _known(self):
        """(sorted keys, their rows) of the book, rebuilt only when series were added: a batch's keys are
        looked up by binary search instead of sorting all of them."""
        if self._sorted is None or self._sorted[0] != len(self.rows):
            keys = np.fromiter(self.rows.keys(), np.int64, len(self.rows))
            rows = np.fromiter(self.rows.values(), np.int64, len(self.rows))
            order = np.argsort(keys)
            self._sorted = (len(self.rows), keys[order], rows[order])
        return self._sorted[1], self._sorted[2]

    def _row(self, key):
        row = self.rows.get(key)
        if row is not None:
            return row
        if len(self.rows) >= self.max_series:
            if not self._warned:
                self._warned = True
                log.warning("tier 3: %d numeric series tracked, the max_series limit; values of further "
                            "series are not judged as series", self.max_series)
            return -1
        row = self.rows[key] = len(self.rows)
        self._grow(row + 1)
        self.source_of[row] = key & ((1 << SOURCE_BITS) - 1)
        self.state[row, K.SPLIT_ONLY] = float(key >> SOURCE_BITS >= SPLIT_BASE)
        return row

    def mark_explained(self, split_rows, pooled_rows, batch_rows):
        """Mark each pooled series of the batch (batch_rows: its series rows, -1 none) a mixture while one
        of its split series there explains part of its spread (its long-run residual size at most
        SPLIT_EXPLAINS of the pooled one's: a table's query time, not a referrer's; the mix's shifts are
        left to the split series), and the split series of a mixture judged, the others (split by a
        word that explains nothing) learned only; marks follow their series' sizes batch by batch."""
        self._settle()
        s = self.state
        explained = s[split_rows, K.SLOW_SCALE] <= K.SPLIT_EXPLAINS * s[pooled_rows, K.SLOW_SCALE]
        pooled = batch_rows[batch_rows >= 0]
        mixture = np.zeros(s.shape[0], np.bool_)
        mixture[pooled_rows[explained]] = True
        # A mixture leaves its shifts to every one of its split series: the values of its word that explain
        # part of the spread and those that do not (one table whose query times spread as widely as all
        # tables' together); else a shift of that one would be judged by no series at all.
        judged = explained | mixture[pooled_rows]
        s[split_rows, K.SPLIT_ONLY] = np.where(judged, K.SPLIT_JUDGED, K.SPLIT_MIXED)
        s[pooled, K.SPLIT_ONLY] = np.where(mixture[pooled], K.POOLED_MIXTURE, 0.0)

    def _grow(self, n):
        size = self.state.shape[0]
        if n <= size:
            return
        while size < n:
            size *= 2
        for name in ("state", "season", "seen", "labels", "record", "source_of"):
            old = getattr(self, name)
            new = np.zeros((size,) + old.shape[1:], old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def score(self, batch, rows, ts):
        """Judge the batch's series values, learning each at weight 1 as it goes so that later values of
        the batch follow earlier ones -> see K.score_series. The kernel steps the book's own rows (a
        copy of what its steps can write of each touched row is kept first: _RowCopies): learn() of
        the same batch, at weight 1 for every value of a row, then has nothing left to do for it, and
        anything else that reads the book first puts the rows back (_settle), so what was learned never
        holds a score's steps."""
        self._settle()
        weights = np.ones(batch.n, np.float32)
        # the rows this batch touches, in row order (a mark per row: what np.unique would give, without
        # sorting every value), copied as they were before the batch
        mark = np.zeros(len(self.rows) + 1, np.bool_)
        mark[rows[rows >= 0]] = True
        touched = np.flatnonzero(mark)
        before = _RowCopies(self, touched, ts)
        multiplicity = self.multiplicity()    # of the rows before the batch: learn() steps again with it
        eligible, row_u = self._source_sums(float(np.min(ts)) if len(ts) else 0.0, mark)
        # pending before the kernel runs: rows a failing call left half-stepped are put back too, and the
        # sources' test (stepped by score() alone: learn() re-steps rows, not sources) as it was
        self._scored = (batch, rows, ts, touched, before, multiplicity, self.sources.copy())
        best, which, kind, expected, level, after_u = K.score_series(
            batch.param_ptr, rows, batch.param_num, ts, weights, _hosts(batch), self.state, self.season, self.seen,
            self.labels, self.record, self.threshold, self.suspicious, multiplicity, self.record_weight,
            self.shift_budget, self.episode_weight)
        together = np.zeros(batch.n, np.int64)
        if self.shift_budget > 0.0 and eligible.any():
            s_best, s_which, s_kind, s_expected, s_level, s_together = SSK.score_sources(
                batch.param_ptr, rows, after_u, np.asarray(ts, np.float64), self.source_of, eligible, row_u,
                self.sources, self.state, self.season, self.threshold, self.suspicious, self.shift_budget)
            won = s_best > best
            best[won], which[won], kind[won] = s_best[won], s_which[won], s_kind[won]
            expected[won], level[won], together[won] = s_expected[won], s_level[won], s_together[won]
        return best, which, kind, expected, level, together

    def _source_sums(self, now, in_batch):
        """(eligible bool[rows], row_u float64[rows]) for SSK.score_sources: the series whose shifts are
        judged (judged, their shift test made and warm, and not stale at time `now` unless in_batch holds a
        value of theirs: see _fresh) and each one's clipped evidence, summed per source into self.sources'
        SUM and COUNT (derived anew each batch: learn() re-steps rows, not sources)."""
        used = len(self.rows)
        size = self.state.shape[0]
        eligible = np.zeros(size, np.bool_)
        row_u = np.zeros(size)
        sources = self.source_of[:used]
        if used and int(sources.max()) >= self.sources.shape[0]:
            grown = np.zeros((int(sources.max()) + 1, SSK.COLS))
            grown[: self.sources.shape[0]] = self.sources
            self.sources = grown
        if self.shift_budget <= 0.0 or not used:
            self.sources[:, SSK.SUM] = self.sources[:, SSK.COUNT] = 0.0
            return eligible, row_u
        eligible[:used] = (self._shift_tested(used) & (self.state[:used, K.SHIFT_N] >= K.SHIFT_JUDGE)
                           & (self._fresh(used, now) | in_batch[:used]))
        row_u = SSK.row_evidence(self.state, eligible, self.shift_budget)
        size = self.sources.shape[0]
        self.sources[:, SSK.SUM] = np.bincount(sources, weights=row_u[:used], minlength=size)
        self.sources[:, SSK.COUNT] = np.bincount(sources, weights=eligible[:used], minlength=size)
        return eligible, row_u

    def _fresh(self, used, now):
        """bool[used]: series whose last value is recent at `now`: within STALE_S and the span of their fast
        mean (SHIFT_WINDOW usual gaps). A stale series' evidence tells of its last values, hours old: a
        series logged only at night held postgres' sum 1.7 decades down all the next afternoon, against
        the rise of its query series and towards false falls."""
        span = np.maximum(STALE_S, K.SHIFT_WINDOW * self.state[:used, K.GAP])
        return now - self.state[:used, K.LAST_T] <= span

    def _settle(self):
        """Put back the rows a score() stepped that no learn() of its batch took (see score)."""
        scored, self._scored = self._scored, None
        if scored is not None:
            scored[4].restore(self)
            self.sources = scored[6]

    def learn(self, batch, rows, ts, weights):
        """Learn the batch with each line's weight. score() stepped the rows it touched through exactly
        these values (in the same order, with the same multiplicity: nothing changes the rows in
        between) at weight 1, and a row's steps read and write that row alone: the rows as score() left
        them are the learned rows of every series none of whose values has another weight, and only the
        others (the series of lines with another weight: flagged lines) are put back and step through
        the kernel again, from the state before the batch."""
        weights = weights.astype(np.float32)
        scored = self._scored
        if scored is not None and scored[0] is batch and scored[1] is rows and scored[2] is ts:
            self._scored = None
            lines = np.flatnonzero(weights != 1.0)
            if lines.size == 0:
                return                 # the common case: every touched row is learned already
            values = _ranges(batch.param_ptr, lines)
            again = np.zeros(len(self.rows) + 1, np.bool_)
            again[rows[values][rows[values] >= 0]] = True
            if not again.any():
                return
            touched, before, multiplicity = scored[3], scored[4], scored[5]
            before.restore(self, np.flatnonzero(again[touched]))
            rows = np.where(again[rows], rows, -1)    # rows -1 read again[-1]: never set
        else:
            self._settle()
            multiplicity = self.multiplicity()
        K.score_series(batch.param_ptr, rows, batch.param_num, ts, weights, _hosts(batch), self.state,
                       self.season, self.seen, self.labels, self.record, self.threshold, self.suspicious,
                       multiplicity, self.record_weight, self.shift_budget, self.episode_weight)

    def multiplicity(self):
        """float64[rows, 2]: per row, how many judged series its source has (at least 1: the spike test
        shares the source's flag budget equally among them), and the inverse of the level-shift test's
        share: half the budget shared equally, half by windows a day (each series' rate of values, 1 /
        GAP, against the source's judged series' summed rates), so a busy series' windows are not each
        held to a sparse one's share."""
        self._settle()
        used = len(self.rows)
        judged = K.judged_rows(self.state, self.labels, used)
        split = self.state[:used, K.SPLIT_ONLY]
        # only the tests that are made share the budget: a split series' spikes are its pooled series' (not
        # computed for it), and shifts are not judged of a split series that explains nothing (SPLIT_MIXED)
        # nor of a pooled series that its split series explain (POOLED_MIXTURE). Counted, a search log's 30
        # split series by search term, none of them judged, held its query time to a 33rd of the budget
        spiked = judged & (split <= 0.0)
        shifted = self._shift_tested(used, judged)
        sources = self.source_of[:used]
        size = int(sources.max()) + 1 if used else 1
        counts = np.maximum(np.bincount(sources[spiked], minlength=size)[sources], 1)
        shift_counts = np.maximum(np.bincount(sources[shifted], minlength=size)[sources], 1)
        rate = 1.0 / np.maximum(self.state[:used, K.GAP], K.MIN_GAP_S)
        total = np.bincount(sources[shifted], weights=rate[shifted], minlength=size)[sources]
        share = 0.5 / shift_counts + 0.5 * np.where(shifted, rate / np.maximum(total, 1e-300), 0.0)
        out = np.ones((self.state.shape[0], 2))
        out[:used, 0] = counts
        out[:used, 1] = np.maximum(1.0 / share, 1.0)
        return out

    def _shift_tested(self, used, judged=None):
        """bool[used]: the series whose level shifts are judged (see multiplicity)."""
        judged = K.judged_rows(self.state, self.labels, used) if judged is None else judged
        split = self.state[:used, K.SPLIT_ONLY]
        return judged & ((split == 0.0) | (split == K.SPLIT_JUDGED))

    def forget_slots(self, slots):
        """Series of these slots start again (their template's positions moved)."""
        gone = set(int(s) for s in slots)
        self._settle()
        for key, row in self.rows.items():
            if key >> SOURCE_BITS in gone:
                self.state[row] = 0
                self.state[row, K.SPLIT_ONLY] = float(key >> SOURCE_BITS >= SPLIT_BASE)
                self.season[row] = 0
                self.seen[row] = 0
                self.labels[row] = 0
                self.record[row] = 0

    @property
    def stats(self):
        return {"series": len(self.rows), "series_limit": self.max_series, "series_values_refused_total": self.refused}

    def state_dict(self):
        self._settle()
        used = len(self.rows)
        return {"keys": [str(k) for k in self.rows], "rows": [int(r) for r in self.rows.values()],
                "state": self.state[:used].tolist(), "season": self.season[:used].tolist(),
                "seen": self.seen[:used].tolist(), "labels": self.labels[:used].tolist(),
                "record": self.record[:used].tolist(), "refused": self.refused, "sources": self.sources.tolist()}

    def load(self, saved):
        """Restore state_dict(); rows past max_series (a lowered limit) are dropped."""
        pairs = sorted(zip((int(k) for k in saved["keys"]), (int(r) for r in saved["rows"])), key=lambda kv: kv[1])
        state = np.asarray(saved["state"], np.float64)
        state = state.reshape(len(pairs), -1) if pairs else np.zeros((0, K.COLS))
        if state.shape[1] < K.COLS:   # a snapshot from before the level-shift test (or its own offsets): padded
            log_excess = state.shape[1] == K.LOG_EXCESS_COLS
            state = np.hstack([state, np.zeros((state.shape[0], K.COLS - state.shape[1]))])
            if log_excess:
                self._excess_moments_anew(state)
        season = np.asarray(saved["season"], np.float64)
        season = (season.reshape(len(pairs), -1, K.SEASON_BUCKETS) if pairs
                  else np.zeros((0, K.SEASON_ROWS, K.SEASON_BUCKETS)))
        seen = np.asarray(saved["seen"], np.int8).reshape(-1, K.SEASON_BUCKETS)
        if season.shape[1] < K.SEASON_ROWS:   # from before the test's own offsets, or before EPISODES: padded
            if season.shape[1] <= K.OLD_SEASON_ROWS:
                self._level_shift_test_anew(state, season, seen)
            season = np.concatenate([season, np.zeros((season.shape[0], K.SEASON_ROWS - season.shape[1],
                                                       K.SEASON_BUCKETS))], axis=1)
        labels = np.asarray(saved["labels"], np.float64)   # reshape(0, -1) is ambiguous: a book with no series
        labels = (labels.reshape(len(pairs), -1) if pairs else np.zeros((0, self.max_labels)))[:, :self.max_labels]
        # a snapshot from before records were kept: each series' range starts again from its next value
        record = np.asarray(saved.get("record", np.zeros((len(pairs), K.RECORD_COLS))), np.float64)
        record = record.reshape(len(pairs), -1) if pairs else np.zeros((0, K.RECORD_COLS))
        if record.shape[1] < K.RECORD_COLS:   # from before the episode columns: no episode open
            record = np.hstack([record, np.zeros((record.shape[0], K.RECORD_COLS - record.shape[1]))])
        self.__init__(self.max_series, self.max_labels, self.threshold, self.suspicious, self.record_weight,
                      self.shift_budget, self.episode_weight)
        self.refused = int(saved.get("refused", 0))
        # a snapshot from before the source-level test: each source's test starts anew
        sources = np.asarray(saved.get("sources", []), np.float64).reshape(-1, SSK.COLS)
        if sources.shape[0]:
            self.sources = sources
        for key, row in pairs[: self.max_series]:
            new = self._row(key)
            self.state[new], self.season[new], self.seen[new] = state[row], season[row], seen[row]
            self.labels[new, :labels.shape[1]] = labels[row]
            self.record[new] = record[row]
        # the offsets' sum is the shift test's offsets', whatever the snapshot held (none before it was kept)
        self.state[:len(self.rows), K.OFFSET_SUM] = self.season[:len(self.rows), K.SHIFT_OFFSET].sum(axis=1)

    @staticmethod
    def _excess_moments_anew(state):
        """State saved while the level-shift test's tail summed its excursions' log peak excesses (a Pareto
        from U_START): the sums of excess and squared excess that Pareto implies for the same excursions
        (its index at least 2.5: the squares need a finite variance)."""
        n = state[:, K.U_N]
        with np.errstate(divide="ignore", invalid="ignore"):
            index = np.where(state[:, K.U_S] > 0.0, n / state[:, K.U_S], K.U_PRIOR_INDEX)
        index = np.maximum(index, 2.5)
        state[:, K.U_S] = n * K.U_START / (index - 1.0)
        state[:, K.U_S2] = n * 2.0 * K.U_START ** 2 / ((index - 1.0) * (index - 2.0))

    @staticmethod
    def _level_shift_test_anew(state, season, seen):
        """State saved before the level-shift test had its own time-of-day offsets (it deseasoned by the
        forecast's): its offsets start at 0 with no visit pending, so its slow level, fast mean and
        baseline start at the forecast of the series' last value (the deseasoned values' level now; the
        old baseline may stand far from it) and the test restarts as after a recovery."""
        if not state.shape[0]:
            return
        rows = np.arange(state.shape[0])
        b = ((state[:, K.LAST_T] % K.DAY_S) / K.DAY_S * K.SEASON_BUCKETS).astype(np.int64) % K.SEASON_BUCKETS
        last = state[:, K.LEVEL] + np.where(seen[rows, b] > 0, season[rows, K.OFFSET, b], 0.0)
        state[:, K.DAY_LEVEL] = last
        state[:, K.VISIT_B] = 0.0
        warm = state[:, K.SHIFT_N] > 0.0
        state[warm, K.FAST] = last[warm]
        state[warm, K.BASE] = last[warm]
        state[warm, K.SETTLE] = -2.0 * K.SHIFT_WINDOW
