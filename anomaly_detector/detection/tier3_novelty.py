"""Tier 3, novelty: never-seen and rare templates, numeric outliers and drift, new categorical values,
and numeric series.

Template rarity uses Good-Turing estimates per severity class (how much of the stream belongs to
templates this rare); parameter statistics live in novelty_kernels.py, arrays grown here: one slot
per (template, position), and one pooled slot per role (role_key) for categorical values. A slot
holding numbers is also a series per source (series.py), judged against a forecast of its own
past from its own first points on, whatever the engine's warm-up: a series of a value an hour is
short, and its points are not the engine's lines.

A numeric position is also split by the categorical position of its template (_decide_splits): one
series per (numeric slot, categorical value, source) besides the pooled one, so one table's query
time is judged against that table's own past, not against the mix of all tables. A position whose
values overflow max_categories splits by their routes instead when they are URL paths (route_kernels:
`/search?q=shoes` is `/search`), so one route's response time is judged against its own past too.
"""
import math
from dataclasses import dataclass

import numpy as np

from ..parsing.batch import LEVEL_ERROR, LEVEL_WARNING
from . import novelty_kernels as K
from . import route_kernels as RK
from . import routes
from . import series_kernels as SK
from . import source_shift_kernels as SSK
from .base import Tier, TierResult
from .ranks import running_counts
from .series import SPLIT_BASE, SeriesBook, host_codes

MAX_POSITIONS = 16   # parameters beyond this position of a template are not modelled
FIELD_CHECKS_PER_BATCH = 32   # new templates compared with the known ones per batch (_field_change)
SPLIT_UNSET = -1     # split_pos: no categorical position chosen (yet)
SPLIT_AFTER = 50     # lines per allowed categorical value (max_categories) before a template's split is chosen
MAX_VALUES_KEY = 256  # the largest max_categories: a value's index in its slot fits below it
NEW_VALUE_EPISODE_S = 300.0   # a flagged new value's lines this close to its last are its episode
                              # (incident_window_seconds' default: lines further apart are no one incident)
MAX_NEW_VALUE_EPISODES = 4096  # new values' episodes kept before the ended ones are pruned
ROLE_UNSET, ROLE_NONE = -2, -1   # role_index: not looked at yet / no pool (template text unknown)
SERIES_KINDS = {SK.KIND_SPIKE: "unusual value (spike)", SK.KIND_DROP: "unusual value (drop)",
                SK.KIND_RECORD_HIGH: "unusual value (record high: above every earlier value)",
                SK.KIND_RECORD_LOW: "unusual value (record low: below every earlier value)"}
SHIFT_KINDS = {SK.KIND_SHIFT_UP: "drift (level shift up)", SK.KIND_SHIFT_DOWN: "drift (level shift down)"}
# a shift that several series of the source made together (source_shift_kernels): named a drift as well
SOURCE_SHIFT_KINDS = {SSK.KIND_SOURCE_UP: "up", SSK.KIND_SOURCE_DOWN: "down"}
# a source-level shift's line counts as the source's (one incident family) when its series' mean moved by
# at least this many of its long-run residual sizes (_wide_shifts): a latency twice as long moves by more
# than its values' spread, a load change moves many series by less
SOURCE_SHIFT_EFFECT = 1.0


class NoveltyTier(Tier):
    """Template counts plus per-(template, position) statistics."""

    name = "t3"

    def __init__(self, settings):
        super().__init__(settings)
        self.min_obs = float(settings["min_observations"])
        self.drift_alpha = float(settings["drift_alpha"])
        self.drift_min_shift = math.log(float(settings["drift_min_ratio"]))
        self.numeric_memory = float(settings["numeric_memory"])
        self.max_values = int(settings["max_categories"])
        self.threshold = float(settings.get("anomaly_threshold", 70.0))
        self.suspicious = float(settings.get("suspicious_score", 40.0))
        self.new_error_score = float(settings["new_error_score"])
        # A value never seen that scored the anomaly threshold: (slot, value hash) -> when its episode was
        # last seen (see _keep_new_values)
        self.new_value_episodes = {}
        self.template_count = np.zeros(64)
        self._field_changes = {}     # template id -> (text, new_field_value of it): see _field_change
        self.template_severe = np.zeros(64, np.int8)   # 1 once a template was seen at WARNING or worse
        self.template_novelty = np.zeros(64, np.float32)  # rarity score at first sight (after warm-up)
        self.template_seen_at = np.zeros(64)               # lines learned before its first sight
        self.template_open = np.zeros(64, np.int8)         # 1: its source was open-ended at first sight
        self.source_late = np.zeros(8)                     # informational templates new after warm-up
        self.slot_index = np.full((64, MAX_POSITIONS), -1, np.int32)
        self.role_index = np.full((64, MAX_POSITIONS), ROLE_UNSET, np.int32)  # (template, position) -> pool
        self.roles = {}                                    # role key -> pooled slot
        self.next_slot = 0
        self.num_stats = np.zeros((64, K.NUM_COLS))
        self.cat_hash = np.zeros((64, self.max_values), np.uint64)
        self.cat_count = np.zeros((64, self.max_values))
        self.cat_novelty = np.zeros((64, self.max_values), np.float32)  # surprise of each value at first sight
        self.cat_seen_at = np.zeros((64, self.max_values))  # the slot's count when each value was first seen
        self.cat_num = np.full((64, self.max_values), np.nan)  # each value's number (NaN: not a number)
        self.cat_last = np.zeros(64, np.uint64)            # hash of each slot's last value (a succession's test)
        self.cat_nd = np.zeros(64, np.int32)
        self.cat_full = np.zeros(64, np.int8)
        # a full slot's routes, when its values are URL paths (route_kernels): the categories it splits by
        self.route_table = np.zeros((64, self.max_values), np.uint64)
        self.route_nd = np.zeros(64, np.int32)
        self.route_full = np.zeros(64, np.int8)
        self.series = SeriesBook(settings["max_series"], self.max_values, self.threshold, self.suspicious,
                                 settings["series_record_weight"], settings["series_shift_budget"],
                                 float(settings.get("anomaly_learning_weight", 0.1)))
        self.split_pos = np.full(64, SPLIT_UNSET, np.int8)  # template -> categorical position splitting its series
        self.split_ids = {}        # (numeric slot, categorical position, value index) key -> split series slot
        self._split_sorted = (None, 0, None, None)   # split_ids sorted by key: see _split_ids_of
        self._rows_of = (None, None)   # (batch, its SeriesView)
        self._slots_of = (None, None, None)   # (batch, the slot_index it was read from, its slots)

    # -- scoring -------------------------------------------------------------------------

    def score(self, batch, ctx):
        scores = np.zeros(batch.n, np.float32)
        result = TierResult(scores)
        if batch.n == 0:
            return result
        self._grow_templates(ctx.n_templates)
        source_wide = self._score_series(batch, ctx, result)
        if not ctx.warm:
            return _about_sources(result, batch, source_wide)
        rarity, counts = self._rarity_scores(batch)
        slots = K.lookup_slots(batch.template_id, batch.param_ptr, batch.param_pos, self.slot_index)
        param_scores, which, kind = K.score_params(
            batch.param_ptr, slots, batch.param_num, batch.param_hash, self.num_stats, self.cat_hash,
            self.cat_count, self.cat_nd, self.cat_full, self.cat_novelty, self.cat_seen_at, self.cat_num,
            self.cat_last, self.min_obs, self.drift_alpha, self.drift_min_shift, True)
        self._keep_new_values(batch, ctx, param_scores, which, kind, slots)
        role_scores, role_which, role_kind, roles = self._role_scores(batch, counts)
        np.maximum(scores, rarity, out=scores)
        np.maximum(scores, param_scores, out=scores)
        self._explain_rarity(result, rarity, counts, batch, ctx)
        self._explain_params(result, param_scores, which, kind, slots, batch, ctx)
        self._explain_params(result, role_scores, role_which, role_kind, roles, batch, ctx, pooled=True)
        np.maximum(scores, role_scores, out=scores)
        return _about_sources(result, batch, source_wide)

    def _keep_new_values(self, batch, ctx, param_scores, which, kind, slots):
        """A value never seen, once it scored the anomaly threshold, keeps its later lines suspicious while it
        keeps coming (each within NEW_VALUE_EPISODE_S of the last): they are one episode, as a series'
        values are. A new payment provider on half the night's checkouts scored 100 on two lines ten
        minutes apart and 37 between them (its slot is open-ended: its recurrences prove nothing), and no
        incident formed. A value that comes once stays one flagged line."""
        young = np.flatnonzero((kind == K.KIND_NEW_VALUE) & (param_scores > 0.0))
        if not young.size:
            return
        episodes = self.new_value_episodes
        for i in young.tolist():
            j = int(which[i])
            key, t = (int(slots[j]), int(batch.param_hash[j])), float(ctx.ts[i])
            last = episodes.get(key)
            if param_scores[i] >= self.threshold:
                episodes[key] = t
            elif last is not None and 0.0 <= t - last <= NEW_VALUE_EPISODE_S:
                param_scores[i] = max(param_scores[i], self.suspicious)
                episodes[key] = t
        if len(episodes) > MAX_NEW_VALUE_EPISODES:     # the ended episodes are pruned
            now = float(ctx.ts.max())
            for key in [k for k, t in episodes.items() if now - t > NEW_VALUE_EPISODE_S]:
                del episodes[key]

    def _series_rows(self, batch, slots=None):
        """The batch's series values as a SeriesView, found once per batch (score and learn ask alike).
        Slots are given when scoring, not only when learning: a series is judged from its first batch
        on (a replayed file may be one batch); a slot is only an index."""
        if self._rows_of[0] is not batch:
            slots = self._assign_slots(batch) if slots is None else slots
            rows = self.series.rows_of(batch, slots)
            self._rows_of = (batch, self._split_view(batch, slots, rows))
        return self._rows_of[1]

    def _split_view(self, batch, slots, rows):
        """The batch's parameters with a series row, plus, after each line's own, a copy of each value
        that also belongs to a split series (its template's categorical position holds one of that
        slot's known values) with that series' row (novelty_kernels.split_view builds it)."""
        split = self._split_slots(batch, slots, rows)
        extra = np.zeros(0, np.int64)
        if split is not None:
            split_rows = self.series.rows_of(batch, split[0])
            extra = np.flatnonzero(split_rows >= 0)
        if self.series.shift_budget > 0.0:   # also unmarks the pooled series of templates no longer split
            self.series.mark_explained(split_rows[extra] if extra.size else extra, rows[extra], rows)
        hosts = host_codes(batch)
        if extra.size == 0:
            return SeriesView(batch.n, batch.param_ptr, batch.param_num, rows, None, None, hosts)
        ptr, values, view_rows, index, split_of = K.split_view(batch.param_ptr, batch.param_num, rows, split_rows,
                                                               split[1])
        return SeriesView(batch.n, ptr, values, view_rows, index, split_of, hosts)

    def _split_slots(self, batch, slots, rows):
        """(split series slot of every parameter (-1: none), the parameter holding its categorical
        value), or None when no line of the batch has a split template. Only values the categorical
        slot knows split (at most max_categories per numeric slot), and only while it is not full
        (novelty_kernels.split_keys finds them)."""
        if not (self.split_pos[batch.template_id] >= 0).any():
            return None
        buf, starts, ends = _spans(batch)
        keys, of = K.split_keys(batch.template_id, batch.param_ptr, batch.param_pos, batch.param_hash,
                                np.asarray(slots, np.int64), rows, self.split_pos, self.cat_full, self.cat_hash,
                                self.cat_nd, MAX_POSITIONS, MAX_VALUES_KEY, buf, starts, ends, self.route_table,
                                self.route_nd, self.route_full)
        cand = np.flatnonzero(keys >= 0)
        out = np.full(slots.size, -1, np.int64)
        if cand.size:
            out[cand] = self._split_ids_of(keys[cand])
        return out, of

    def _split_ids_of(self, keys):
        """Split series slot of each key (int64, -1: refused): known keys by binary search in a sorted
        copy of split_ids (rebuilt only when split series were added: a batch holds thousands of
        values of a few hundred keys), new ones through _split_id in key order."""
        if self._split_sorted[0] is not self.split_ids or self._split_sorted[1] != len(self.split_ids):
            known = np.fromiter(self.split_ids.keys(), np.int64, len(self.split_ids))
            sids = np.fromiter(self.split_ids.values(), np.int64, len(self.split_ids))
            order = np.argsort(known)
            self._split_sorted = (self.split_ids, len(self.split_ids), known[order], sids[order])
        known, sids = self._split_sorted[2], self._split_sorted[3]
        at = np.minimum(np.searchsorted(known, keys), max(known.size - 1, 0))
        hit = known[at] == keys if known.size else np.zeros(keys.size, np.bool_)
        out = np.where(hit, sids[at] if known.size else -1, -1)
        if not hit.all():
            unique, inverse = np.unique(keys[~hit], return_inverse=True)
            out[~hit] = np.array([self._split_id(int(k)) for k in unique.tolist()], np.int64)[inverse]
        return out

    def _split_id(self, key):
        """Slot of the split series of key, new ones while the book has room (max_series bounds both)."""
        sid = self.split_ids.get(key)
        if sid is None:
            if len(self.split_ids) >= self.series.max_series:
                return -1
            sid = self.split_ids[key] = SPLIT_BASE + len(self.split_ids)
        return sid

    def _split_text(self, batch, tid, cat):
        """Which category a split series' value is of: its categorical parameter's value, or its route."""
        pos = int(batch.param_pos[cat])
        slot = self.slot_index[tid, pos] if pos < MAX_POSITIONS else -1
        if slot >= 0 and self.cat_full[slot] == 1 and batch.param_start is not None:
            route = routes.shown(bytes(batch.buf[batch.param_start[cat]:batch.param_end[cat]]))
            if route is not None:
                return " where parameter %d's route is %r" % (pos, route)
        return " where parameter %d is %s" % (pos, _param_text(batch, cat))

    def _decide_splits(self, batch):
        """Choose the categorical position of templates seen SPLIT_AFTER x max_categories times: the
        position of words (no value a number) whose slot holds the most distinct values without being
        full (2 at least), or, full, the most routes without those being full, the finest grouping the
        bound allows; ties go to the first. A position whose values overflow max_categories later (ids,
        not categories) and whose routes do too (or are fewer than 2) stops splitting and the choice is
        made again."""
        if self.series.shift_budget <= 0.0:   # split series are judged by the level-shift test only
            return
        tids = np.unique(batch.template_id)
        chosen = self.split_pos[tids]
        pos_slots = self.slot_index[tids, np.maximum(chosen, 0)]
        lost = (chosen >= 0) & ((pos_slots < 0) | (self._categories(np.maximum(pos_slots, 0)) < 2))
        self.split_pos[tids[lost]] = SPLIT_UNSET
        todo = tids[(self.split_pos[tids] == SPLIT_UNSET)
                    & (self.template_count[tids] >= SPLIT_AFTER * self.max_values)]
        if todo.size:   # a template with no such position yet is looked at again with its next batch
            s = self.slot_index[todo]
            # words, not numbers: a number with few values is more often a count (rows=, retries) than a
            # category, and splitting by it makes series of a count's values
            words = np.all(np.isnan(self.cat_num[np.maximum(s, 0)]), axis=2)
            nd = np.where((s >= 0) & words, self._categories(np.maximum(s, 0)), 0)
            self.split_pos[todo] = np.where(nd.max(axis=1) >= 2, np.argmax(nd, axis=1), SPLIT_UNSET)

    def _categories(self, slots):
        """How many categories each slot splits by: its values while not full, else its routes while those
        are not (0: none)."""
        full = self.cat_full[slots] == 1
        return np.where(full, np.where(self.route_full[slots] == 0, self.route_nd[slots], 0), self.cat_nd[slots])

    def _assign_slots(self, batch):
        """Slot of every parameter, new (template, position) pairs given one. score() and learn() of a
        batch ask alike: the second time nothing is new (only this adds to slot_index; a load or a
        growth replaces the array), so the first answer stands."""
        if self._slots_of[0] is batch and self._slots_of[1] is self.slot_index:
            return self._slots_of[2]
        self._grow_slots(self.next_slot + self._new_slot_count(batch))
        slots, self.next_slot = K.assign_slots(batch.template_id, batch.param_ptr, batch.param_pos,
                                               self.slot_index, self.next_slot)
        self._slots_of = (batch, self.slot_index, slots)
        return slots

    def _score_series(self, batch, ctx, result):
        """Numeric series values against their forecasts (series_kernels.py) -> (lines whose score is the
        source-level shift test's, their scores): see _about_sources."""
        view = self._series_rows(batch)
        best, which, kind, expected, level, together = self.series.score(view, view.rows, ctx.ts)
        np.maximum(result.scores, best, out=result.scores)
        source_wide = self._wide_shifts(view, best, which, kind, expected, level)
        for i in np.flatnonzero(best >= 40.0).tolist():
            j, where = view.param(int(which[i])), ""
            tid, pos = int(batch.template_id[i]), int(batch.param_pos[j])
            cat = view.category_of(int(which[i]))
            if cat >= 0:
                where = self._split_text(batch, tid, cat)
            if int(kind[i]) in SOURCE_SHIFT_KINDS:
                result.reasons[i] = ("drift (level shift %s, with %d series of its source together) of parameter %d "
                                     "of %r%s: moved from ~%.4g to ~%.4g" % (
                                         SOURCE_SHIFT_KINDS[int(kind[i])], max(int(together[i]), 1), pos,
                                         ctx.template_text(tid), where, expected[i], level[i]))
            elif int(kind[i]) in SHIFT_KINDS:
                result.reasons[i] = "%s of parameter %d of %r%s: moved from ~%.4g to ~%.4g over its last ~%d values" % (
                    SHIFT_KINDS[int(kind[i])], pos, ctx.template_text(tid), where, expected[i], level[i],
                    SK.SHIFT_WINDOW)
            else:
                what = SERIES_KINDS.get(int(kind[i]), "unusual value")
                result.reasons[i] = "%s of parameter %d of %r%s, against its own past" % (
                    what, pos, ctx.template_text(tid), where)
            result.expected[i] = "around %.4g" % expected[i]
            result.observed[i] = "%.4g" % batch.param_num[j]
        return source_wide, best

    def _wide_shifts(self, view, best, which, kind, expected, level):
        """bool[n]: lines the source-level shift test scored whose own series moved by at least
        SOURCE_SHIFT_EFFECT of its long-run residual size (its fast mean from its baseline, log scale): what
        _about_sources counts as the source's. Series that moved together by less than their values' spread
        are what a load change does to a busy source (nginx's response times at the morning peak, a JVM's
        GC pauses 10 % shorter): those lines stay their templates', as before."""
        wide = np.isin(kind, np.fromiter(SOURCE_SHIFT_KINDS, np.int64)) & (best > 0.0)
        lines = np.flatnonzero(wide)
        if lines.size:
            rows = view.rows[which[lines]]
            moved = np.abs(_signed_log(level[lines]) - _signed_log(expected[lines]))
            wide[lines] = moved >= SOURCE_SHIFT_EFFECT * self.series.state[rows, SK.SLOW_SCALE]
        return wide

    def _role_scores(self, batch, counts):
        """New categorical values judged per role, across templates: a role is a source's
        parameter after the same template text (role_key).

        One field often lands in many templates: an access log's status code follows the same
        request line in one template per user agent. A new status spread over thirty templates
        recurs in none of them, but it recurs in the pool. A pool is closed only when every
        template pooled into it is, so pooling unrelated values makes it open (not scored), never
        more alarming. Lines of templates still young are left to their own slots."""
        roles = K.lookup_slots(batch.template_id, batch.param_ptr, batch.param_pos, self.role_index)
        scores, which, kind = K.score_params(
            batch.param_ptr, roles, batch.param_num, batch.param_hash, self.num_stats, self.cat_hash,
            self.cat_count, self.cat_nd, self.cat_full, self.cat_novelty, self.cat_seen_at, self.cat_num,
            self.cat_last, self.min_obs, self.drift_alpha, self.drift_min_shift, False)
        scores[counts < self.min_obs] = 0.0
        return scores, which, kind, roles

    def _assign_roles(self, batch, ctx):
        """Pooled slot of every parameter (-1: none), giving (template, position) pairs met for the
        first time theirs; the common batch meets none and costs one lookup."""
        roles = K.lookup_slots(batch.template_id, batch.param_ptr, batch.param_pos, self.role_index)
        todo = np.flatnonzero(roles == ROLE_UNSET)
        if todo.size == 0:
            return roles
        owners = np.searchsorted(batch.param_ptr, todo, side="right") - 1
        for j, i in zip(todo.tolist(), owners.tolist()):
            t, p = int(batch.template_id[i]), int(batch.param_pos[j])
            if self.role_index[t, p] != ROLE_UNSET:
                continue
            key = role_key(ctx.template_text(t), p, ctx.source_name(int(batch.source_id[i])))
            if key is None:
                self.role_index[t, p] = ROLE_NONE
                continue
            if key not in self.roles:
                self._grow_slots(self.next_slot + 1)
                self.roles[key] = self.next_slot
                self.next_slot += 1
            self.role_index[t, p] = self.roles[key]
        return K.lookup_slots(batch.template_id, batch.param_ptr, batch.param_pos, self.role_index)

    def _rarity_scores(self, batch):
        """Surprise of meeting a template this rare, young templates' recurrences included."""
        scores, counts, severe, total = self._first_sight_scores(batch)
        # A template stays new until it has been seen min_observations times: its surprise at
        # first sight keeps counting. A new warning or error that recurs (a new failure mode), or
        # a new message of a source whose messages were a closed set, gains evidence with each
        # recurrence (novelty_kernels.young_score).
        young = (counts < self.min_obs) & (self.template_novelty[batch.template_id] > 0)
        scores[young] = np.maximum(scores[young], self.template_novelty[batch.template_id[young]])
        self._recurrences(batch, scores, counts, (severe | self._closed(batch)) & (counts < self.min_obs),
                          total)
        self._first_errors(batch, scores, counts)
        return scores, counts

    def _first_errors(self, batch, scores, counts):
        """The first line of a never-seen ERROR-or-worse template scores at least new_error_score."""
        lines = np.flatnonzero((counts == 0) & (batch.level >= LEVEL_ERROR))
        if lines.size and self.new_error_score > 0:
            first = lines[np.unique(batch.template_id[lines], return_index=True)[1]]
            scores[first] = np.maximum(scores[first], self.new_error_score)

    def _first_sight_scores(self, batch):
        """Surprise of meeting a template this rare, from the mass of equally rare templates.

        A line's count includes the lines of its template earlier in the batch: a template new in a
        batch of 30,000 lines (a replayed file) is new once, as it would be in batches of ten."""
        counts = self.template_count[batch.template_id] + (running_counts(batch.template_id) - 1)
        # A known template keeps its class; a new one takes the class of its line's level.
        severe = np.where(counts > 0, self.template_severe[batch.template_id] == 1, batch.level >= LEVEL_WARNING)
        total = self.template_count.sum()
        scores = np.zeros(batch.n, np.float32)
        for cls in (False, True):
            lines = np.flatnonzero(severe == cls)
            if lines.size == 0:
                continue
            seen = self.template_count[(self.template_severe == 1) == cls]
            seen = np.sort(seen[seen > 0])
            mass_upto = np.concatenate([[0.0], np.cumsum(seen)])
            singletons = float(np.sum(seen < 1.5))
            c = counts[lines]
            # Templates seen at most c times carry this much of the stream; unseen ones about
            # as much as the singletons (Good-Turing).
            rare_mass = mass_upto[np.searchsorted(seen, c, side="right")] + singletons + 0.5
            p = np.minimum(rare_mass / (total + 1.0), 1.0)
            scores[lines] = np.clip(-10.0 * np.log10(p), 0.0, 100.0)
        return scores, counts, severe, total

    def _closed(self, batch):
        """Lines whose template came (or would come) from a source whose set of informational
        templates was closed: fewer than OPEN_SOURCE_TEMPLATES new ones since warm-up. An open source
        (new user agents, new jobs) brings new templates with the traffic that makes them recur."""
        self._grow_sources(batch)
        closed = self.template_open[batch.template_id] == 0
        fresh = np.flatnonzero(self.template_count[batch.template_id] == 0)
        if fresh.size:
            tids, _, _, opened = self._first_sights(batch, fresh)
            closed[fresh] = ~_lookup(tids, opened, batch.template_id[fresh])
        return closed

    def _first_sights(self, batch, lines):
        """Templates first seen at `lines` (indices of lines whose template has no count yet), in order
        of first sight -> (template ids, their sources, informational or not, open at first sight).

        A source is open from its OPEN_SOURCE_TEMPLATES-th new message on, within a batch too: a
        deploy's restart lines and the new version's messages in one batch (a replayed file, a quiet
        hour) are judged as batches of one line would judge them."""
        tids, first = np.unique(batch.template_id[lines], return_index=True)
        order = np.argsort(first, kind="stable")
        tids, at = tids[order], lines[first[order]]
        src = batch.source_id[at]
        informational = batch.level[at] < LEVEL_WARNING
        late_before = self.source_late[src] + _earlier_per_key(src, informational)
        return tids, src, informational, late_before >= K.OPEN_SOURCE_TEMPLATES

    def _recurrences(self, batch, scores, counts, candidates, total):
        """Young severe templates: add the evidence of their recurrences, this batch's included."""
        first = {}  # template -> [novelty, batch index of first sight (<0: before), lines before it, seen]
        for i in np.flatnonzero(candidates).tolist():
            t = int(batch.template_id[i])
            if t not in first:
                if counts[i] > 0:
                    before = self.template_seen_at[t]
                    first[t] = [float(self.template_novelty[t]), before - total, before, counts[i]]
                else:
                    first[t] = [float(scores[i]), float(i), total + i, 0.0]
            novelty, at, before, seen = first[t]
            scores[i] = max(scores[i], K.young_score(novelty, seen, i - at, before))
            first[t][3] = seen + 1.0

    def _explain_rarity(self, result, rarity, counts, batch, ctx):
        checks_left = FIELD_CHECKS_PER_BATCH
        for i in np.flatnonzero(rarity >= 40.0):
            i = int(i)
            tid = int(batch.template_id[i])
            seen = int(counts[i])
            text = ctx.template_text(tid)
            # An error line's news is the error, whatever word of it is new.
            severe = batch.level[i] >= LEVEL_WARNING or self.template_severe[tid]
            field = None
            if not severe:
                field, looked_up = self._field_change(tid, text, ctx, checks_left > 0)
                checks_left -= looked_up
            if field is None:
                result.reasons[i] = ("never-seen template" if seen == 0 else "rare template (seen %d times)" % seen)
                result.expected[i] = "a known template"
            else:
                key, value, known = field
                result.reasons[i] = "new field value %s=%r (a template seen %d times)" % (key, value, seen)
                result.expected[i] = "%s one of %s" % (key, ", ".join(repr(v) for v in known[:5]))
            result.observed[i] = "%r seen %d times before" % (text, seen)

    def _field_change(self, tid, text, ctx, may_look):
        """((key, value, known values) or None, whether it was looked up now): the field value this
        template's news is when it differs from known ones only in the value of one key=value word (an
        enum field the miner keeps in its templates: method=password and method=sso), not a new kind of
        message. Cached per template and text; looked up only if may_look (at most
        FIELD_CHECKS_PER_BATCH a batch: each lookup reads every known template's text, and a flood of
        new messages is news enough)."""
        cached = self._field_changes.get(tid)
        if cached is not None and cached[0] == text:
            return cached[1], 0
        if not may_look:
            return None, 0
        others = [ctx.template_text(t) for t in np.flatnonzero(self.template_count > 0).tolist() if t != tid]
        self._field_changes[tid] = (text, new_field_value(text, others))
        return self._field_changes[tid][1], 1

    def _explain_params(self, result, param_scores, which, kind, slots, batch, ctx, pooled=False):
        for i in np.flatnonzero(param_scores >= 40.0):
            i = int(i)
            # scores already hold the template slots' and rarity: a pool explains only what it adds.
            weaker = param_scores[i] <= result.scores[i] if pooled else param_scores[i] < result.scores[i]
            if weaker and i in result.reasons:
                continue
            j = int(which[i])
            s = int(slots[j])
            pos = int(batch.param_pos[j])
            tid = int(batch.template_id[i])
            value = batch.param_num[j]
            if kind[i] == K.KIND_NEW_VALUE:
                where = "%r" % ctx.template_text(tid)
                if pooled:
                    where += " (new to every template of source %r there)" % ctx.source_name(int(batch.source_id[i]))
                result.reasons[i] = "new value of parameter %d of %s: %s" % (pos, where, _param_text(batch, j))
                result.expected[i] = "one of %d known values" % int(self.cat_nd[s])
                result.observed[i] = "a value never seen there"
                continue
            center = math.copysign(math.expm1(abs(self.num_stats[s, K.CENTER])), self.num_stats[s, K.CENTER])
            what = "unusual value" if kind[i] == K.KIND_OUTLIER else "drift"
            result.reasons[i] = "%s of parameter %d of %r: %g" % (what, pos, ctx.template_text(tid), value)
            result.expected[i] = "around %.4g" % center
            result.observed[i] = "%.4g" % value

    # -- learning ------------------------------------------------------------------------

    def learn(self, batch, ctx, weights):
        if batch.n == 0:
            return
        self._grow_templates(ctx.n_templates)
        if ctx.warm:
            self._remember_novelty(batch)
        self.template_count += np.bincount(batch.template_id, weights=(weights > 0).astype(np.float64),
                                           minlength=self.template_count.size)[: self.template_count.size]
        severe_templates = batch.template_id[batch.level >= LEVEL_WARNING]
        self.template_severe[severe_templates] = 1
        slots = self._assign_slots(batch)
        roles = self._assign_roles(batch, ctx)
        weights = weights.astype(np.float32)
        view = self._series_rows(batch, slots)
        self.series.learn(view, view.rows, ctx.ts, weights)
        for which, numeric in ((slots, True), (roles, False)):
            K.learn_params(batch.param_ptr, which, batch.param_num, batch.param_hash, weights,
                           self.num_stats, self.cat_hash, self.cat_count, self.cat_nd, self.cat_full,
                           self.cat_novelty, self.cat_seen_at, self.cat_num, self.cat_last,
                           self.min_obs, self.drift_alpha, self._numeric_alpha(), numeric)
        if batch.param_start is not None and self.series.shift_budget > 0.0:   # routes only split series
            buf, starts, ends = _spans(batch)
            RK.learn_routes(buf, batch.param_ptr, starts, ends, slots, weights, self.cat_full, self.route_table,
                            self.route_nd, self.route_full)
        self._decide_splits(batch)

    def _remember_novelty(self, batch):
        new = self.template_count[batch.template_id] == 0
        if new.any():
            rarity = self._first_sight_scores(batch)[0]
            tids = batch.template_id[new]
            self.template_novelty[tids] = np.maximum(self.template_novelty[tids], rarity[new])
            self.template_seen_at[tids] = self.template_count.sum()
            self._grow_sources(batch)
            tids, src, informational, opened = self._first_sights(batch, np.flatnonzero(new))
            self.template_open[tids] = opened
            np.add.at(self.source_late, src[informational], 1.0)

    def forget_parameters(self, template_ids):
        """Reset the parameter statistics of these templates (their text changed: a position may now
        hold other values, `db-replica-1` instead of `1`, which must not count as new values)."""
        tids = np.asarray([t for t in template_ids if 0 <= t < self.slot_index.shape[0]], np.int64)
        slots = self.slot_index[tids].ravel()
        slots = slots[slots >= 0]
        for arr in (self.num_stats, self.cat_hash, self.cat_count, self.cat_nd, self.cat_full, self.cat_novelty,
                    self.cat_seen_at, self.cat_last, self.route_table, self.route_nd, self.route_full):
            arr[slots] = 0
        self.cat_num[slots] = np.nan
        self.split_pos[tids] = SPLIT_UNSET
        gone = set(slots.tolist())
        split = [sid for key, sid in self.split_ids.items()
                 if key % K.ROUTE_KEY // (MAX_POSITIONS * MAX_VALUES_KEY) in gone]
        self.series.forget_slots(np.concatenate([slots, np.asarray(split, np.int64)]))
        self._rows_of = (None, None)
        self.role_index[tids] = ROLE_UNSET   # the text before a position changed, and with it its role

    def _new_slot_count(self, batch):
        """How many (template, position) pairs of this batch have no slot yet."""
        known = K.lookup_slots(batch.template_id, batch.param_ptr, batch.param_pos, self.slot_index)
        tids = np.repeat(batch.template_id.astype(np.int64), np.diff(batch.param_ptr))
        new = (known < 0) & (batch.param_pos >= 0) & (batch.param_pos < MAX_POSITIONS)
        return int(np.unique(tids[new] * MAX_POSITIONS + batch.param_pos[new]).size)

    def _numeric_alpha(self):
        # learning_rate is "per bucket"; a numeric slot sees many values per bucket, so its
        # memory is numeric_memory values at the default rate and scales with the rate.
        return min(1.0, self.learning_rate / 0.01 / self.numeric_memory)

    def _grow_templates(self, n):
        size = self.template_count.size
        if n <= size:
            return
        new = size
        while new < n:
            new *= 2
        self.template_count = _grown(self.template_count, new, 0)
        self.template_severe = _grown(self.template_severe, new, 0)
        self.template_novelty = _grown(self.template_novelty, new, 0)
        self.template_seen_at = _grown(self.template_seen_at, new, 0)
        self.template_open = _grown(self.template_open, new, 0)
        self.slot_index = _grown(self.slot_index, new, -1)
        self.role_index = _grown(self.role_index, new, ROLE_UNSET)
        self.split_pos = _grown(self.split_pos, new, SPLIT_UNSET)

    def _grow_sources(self, batch):
        n = int(batch.source_id.max()) + 1 if batch.n else 0
        if n > self.source_late.size:
            self.source_late = _grown(self.source_late, max(n, 2 * self.source_late.size), 0)


    def _grow_slots(self, n):
        size = self.num_stats.shape[0]
        if n <= size:
            return
        new = size
        while new < n:
            new *= 2
        for name, fill in (("num_stats", 0), ("cat_hash", 0), ("cat_count", 0), ("cat_nd", 0), ("cat_full", 0),
                           ("cat_novelty", 0), ("cat_seen_at", 0), ("cat_num", np.nan), ("cat_last", 0),
                           ("route_table", 0), ("route_nd", 0), ("route_full", 0)):
            setattr(self, name, _grown(getattr(self, name), new, fill))

    def state(self):
        used = self.next_slot
        return {"template_count": self.template_count.tolist(), "template_severe": self.template_severe.tolist(),
                "template_novelty": self.template_novelty.tolist(), "template_seen_at": self.template_seen_at.tolist(),
                "template_open": self.template_open.tolist(), "source_late": self.source_late.tolist(),
                "slot_index": self.slot_index.tolist(), "role_index": self.role_index.tolist(), "roles": self.roles, "next_slot": used,
                "num_stats": self.num_stats[:used].tolist(),
                "cat_hash": [[str(h) for h in row] for row in self.cat_hash[:used]],
                "cat_count": self.cat_count[:used].tolist(), "cat_nd": self.cat_nd[:used].tolist(),
                "cat_full": self.cat_full[:used].tolist(), "cat_novelty": self.cat_novelty[:used].tolist(),
                "cat_seen_at": self.cat_seen_at[:used].tolist(),
                "cat_num": [[None if v != v else v for v in row] for row in self.cat_num[:used].tolist()],
                "cat_last": [str(h) for h in self.cat_last[:used]],
                "route_table": [[str(h) for h in row] for row in self.route_table[:used]],
                "route_nd": self.route_nd[:used].tolist(), "route_full": self.route_full[:used].tolist(),
                "series": self.series.state_dict(), "split_pos": self.split_pos.tolist(),
                "split_ids": [[int(k), int(v)] for k, v in self.split_ids.items()]}

    def load_state(self, state):
        if "slot_index" not in state:
            return
        self.template_count = np.asarray(state["template_count"], np.float64)
        self.template_severe = np.asarray(state["template_severe"], np.int8)
        self.template_novelty = np.asarray(state.get("template_novelty", np.zeros(self.template_count.size)),
                                           np.float32)
        self.slot_index = np.asarray(state["slot_index"], np.int32).reshape(-1, MAX_POSITIONS)
        self.next_slot = int(state["next_slot"])
        self.role_index = np.asarray(state.get("role_index", np.full(self.slot_index.shape, ROLE_UNSET)),
                                     np.int32).reshape(-1, MAX_POSITIONS)
        self.roles = dict(state.get("roles", {}))
        size = max(64, self.next_slot)
        self.template_seen_at = np.asarray(state.get("template_seen_at", np.zeros(self.template_count.size)),
                                           np.float64)
        self.template_open = np.asarray(state.get("template_open", np.zeros(self.template_count.size)), np.int8)
        self.source_late = np.asarray(state.get("source_late", np.zeros(8)), np.float64)
        self.num_stats = _grown(_columns(state["num_stats"], K.NUM_COLS), size, 0)
        hashes = np.array([[int(h) for h in row] for row in state["cat_hash"]], np.uint64)
        self.cat_hash = _grown(hashes.reshape(-1, self.max_values), size, 0)
        self.cat_count = _grown(np.asarray(state["cat_count"], np.float64).reshape(-1, self.max_values), size, 0)
        self.cat_nd = _grown(np.asarray(state["cat_nd"], np.int32), size, 0)
        self.cat_full = _grown(np.asarray(state["cat_full"], np.int8), size, 0)
        novelty = np.asarray(state.get("cat_novelty", np.zeros((0, self.max_values))), np.float32)
        self.cat_novelty = _grown(novelty.reshape(-1, self.max_values), size, 0)
        self.cat_seen_at = _grown(_columns(state.get("cat_seen_at", []), self.max_values), size, 0)
        nums = [[np.nan if v is None else v for v in row] for row in state.get("cat_num", [])]
        nums += [[np.nan] * self.max_values] * (self.next_slot - len(nums))
        self.cat_num = _grown(_columns(nums, self.max_values), size, np.nan)
        # Absent in states saved before it: no slot has a last value (a young value's next line is then
        # judged as one among the known values, not as a succession).
        last = [int(h) for h in state.get("cat_last", [])][: self.next_slot]
        last += [0] * (self.next_slot - len(last))
        self.cat_last = _grown(np.array(last, np.uint64), size, 0)
        self._load_routes(state, size)
        if "series" in state:
            self.series.load(state["series"])
        # absent in states saved before series were split: every template chooses again
        split_pos = np.asarray(state.get("split_pos", []), np.int8)
        self.split_pos = _grown(split_pos, max(self.slot_index.shape[0], split_pos.size), SPLIT_UNSET)
        self.split_ids = {int(k): int(v) for k, v in state.get("split_ids", [])}
        self._rows_of = (None, None)

    def _load_routes(self, state, size):
        """Absent in states saved before routes split series: the full slots learn their routes anew."""
        table = np.array([[int(h) for h in row] for row in state.get("route_table", [])], np.uint64)
        self.route_table = _grown(table.reshape(-1, self.max_values), size, 0)
        self.route_nd = _grown(np.asarray(state.get("route_nd", []), np.int32), size, 0)
        self.route_full = _grown(np.asarray(state.get("route_full", []), np.int8), size, 0)


@dataclass
class SeriesView:
    """A batch's series values as SeriesBook reads them: per line (param_ptr) the values and their
    series rows; index maps each back to the batch's parameter and split_of to the parameter holding
    its categorical value (-1: the pooled series). index None: the batch's own parameters. host_code: each
    line's host (series.host_codes), whose own last value a series value's rise or fall is counted against."""

    n: int
    param_ptr: np.ndarray
    param_num: np.ndarray
    rows: np.ndarray
    index: np.ndarray | None
    split_of: np.ndarray | None
    host_code: np.ndarray

    def param(self, k):
        return k if self.index is None else int(self.index[k])

    def category_of(self, k):
        return -1 if self.split_of is None else int(self.split_of[k])


def _signed_log(x):
    """The series' scale (novelty_kernels.signed_log) of an array."""
    return np.copysign(np.log1p(np.abs(x)), x)


def _about_sources(result, batch, source_wide):
    """result, its lines scored by the source-level shift test (source_wide: (lines, their scores) from
    _score_series) about their whole source, not their template (TierResult.about): the shift fires on one
    series' line and its evidence comes on the next lines of any of the source's series, other templates'
    as often as not; counted per template, no template had the incident_min_lines an incident needs, and a
    database whose five queries slowed together (2.9 times) raised nothing although the test fired at 79."""
    lines, best = source_wide
    wide = lines & (best >= result.scores)
    if wide.any():
        result.about = np.where(wide, -1, batch.template_id.astype(np.int64))
    return result


def _earlier_per_key(keys, flags):
    """For each position, how many earlier positions with the same key have the flag set."""
    out = np.zeros(keys.size)
    seen = {}
    for i, (k, f) in enumerate(zip(keys.tolist(), flags.tolist())):
        out[i] = seen.get(k, 0)
        if f:
            seen[k] = seen.get(k, 0) + 1
    return out


def _lookup(keys, values, wanted):
    """values[j] where keys[j] == wanted[i], for every i (each wanted key is among keys)."""
    order = np.argsort(keys, kind="stable")
    return values[order[np.searchsorted(keys[order], wanted)]]


def role_key(template, position, source):
    """What a parameter is, across templates: its source and the template's text up to it.

    `<*> - - [<*> <*>] "GET <*> HTTP/<*>" <*>` is the status code of every access-log template,
    whatever user agent follows. None when the template has no such parameter (an evicted one)."""
    seen = 0
    tokens = template.split()
    for k, token in enumerate(tokens):
        marks = token.count("<*>")
        if seen + marks > position:
            return "%s\x00%s\x00%d" % (source, " ".join(tokens[:k + 1]), position - seen)
        seen += marks
    return None


def new_field_value(text, others):
    """(key, value, sorted known values) where `text` differs from some of `others` (template texts)
    in one word only, the same key=value word with another value, none of them a parameter (<*>); the
    position with the most known values wins. None where no such word."""
    words = text.split(" ")
    found = {}
    for other in others:
        theirs = other.split(" ")
        if len(theirs) != len(words):
            continue
        diff = [p for p, (a, b) in enumerate(zip(words, theirs)) if a != b]
        if len(diff) != 1:
            continue
        key, eq, value = words[diff[0]].partition("=")
        their_key, their_eq, their_value = theirs[diff[0]].partition("=")
        if eq and their_eq and key == their_key and value and their_value and "<*>" not in value + their_value:
            found.setdefault(diff[0], (key, value, set()))[2].add(their_value)
    if not found:
        return None
    key, value, known = max(found.values(), key=lambda f: len(f[2]))
    return key, value, sorted(known)


def _spans(batch):
    """(buf, param_start, param_end) of a batch for the route kernels; empty spans when it kept none."""
    if batch.param_start is None:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return batch.buf, np.asarray(batch.param_start, np.int64), np.asarray(batch.param_end, np.int64)


def _param_text(batch, j):
    """The value as the line wrote it; without offsets, its number or its hash stands for it."""
    if batch.param_start is not None:
        text = bytes(batch.buf[batch.param_start[j]:batch.param_end[j]]).decode("utf-8", "replace")
        return repr(text[:80])
    value = batch.param_num[j]
    return "%g" % value if np.isfinite(value) else "#%x" % int(batch.param_hash[j])


def _columns(rows, cols):
    """float64[len(rows), cols] from saved rows; a state saved with fewer columns is padded with 0."""
    arr = np.asarray(rows, np.float64).reshape(len(rows), -1) if len(rows) else np.zeros((0, cols))
    out = np.zeros((arr.shape[0], cols))
    out[:, :min(cols, arr.shape[1])] = arr[:, :cols]
    return out


def _grown(arr, rows, fill):
    out = np.full((rows,) + arr.shape[1:], fill, arr.dtype)
    out[: arr.shape[0]] = arr
    return out
