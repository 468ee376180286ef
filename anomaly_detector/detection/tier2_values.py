"""Tier 2, value keys: the volume of one parameter value inside a template (a table, a method, a path).

An operator reads `query select on <*> took ...` with `<*>#1 = sessions`, or an access line with
`POST /login`, as one kind of event. A surge of such a value that is a few percent of a busy
template barely moves the template's count, so tier 2 (tier2_volume.py, which owns the counting,
the baselines and the spike tests) also counts the heavy values of each role, per source.

A role is a source's parameter after the same template text (tier3_novelty.role_key): `<*> "POST <*>`
is the path of every POST line, whatever user agent follows it and splits its template. Only words
are counted: numbers are measurements (a pool's in_use, a queue's depth), which tier 3 judges. A URL
path counts as its route (route_kernels.route_codes: `/product/<*>`, `/search` whatever the query):
no single product page is ever a heavy value, and a scraper walking them is a surge of one endpoint.

Which values: a bounded heavy-hitter table of (source, role, value) with counts decayed over about
an hour (CANDIDATE_HOURS) of event time. A value becomes a key when it is at least VALUE_MIN_SHARE
of its role's lines, at least VALUE_MIN_RATE lines per bucket, and not nearly all of them
(VALUE_MAX_SHARE: it would say no more than its template). Heavy hitters rather than "positions
with few distinct values": a path holds thousands of product pages and a handful of busy endpoints;
only the busy ones are worth a baseline, and a long tail must not keep them out. A role with keys
also has a total row (every value of it): a value is judged against its level and against its share
of that total (VolumeTier._value_share_scores). At most max_value_keys rows ([detection] [[tier2]]);
rows of values gone quiet (STALE_SHARE) are reused; values that qualify beyond the limit are refused,
counted (refused) and logged once.

Keys are rows of their own KeyBaseline and Seasonality (given by tier2_volume.VolumeTier, which
judges their spikes like templates'). Value drops are not judged: a value a few percent of its
template moves with the traffic mix (a search campaign, a crawler) far more than a template does,
and an outage shows as a drop of its template and source.
"""
import logging

import numpy as np

from . import routes
from .route_kernels import route_codes
from .tier3_novelty import role_key

log = logging.getLogger(__name__)

MAX_POSITIONS = 16          # parameters beyond this position of a template are not counted
VALUE_MIN_SHARE = 0.02      # a key's value is at least this share of its position's lines
VALUE_MAX_SHARE = 0.9       # and less than this share (else it is its template)
VALUE_MIN_RATE = 0.5        # and at least this many lines per bucket (quieter values are clumps)
CANDIDATE_HOURS = 1.0       # heavy-hitter counts decay over about this long (in event time)
LEARN_SAMPLE = 1024         # values counted into the heavy-hitter tables per batch, at most (a sample)
CANDIDATES_PER_KEY = 4      # candidate values tracked per allowed key (at least MIN_CANDIDATES)
MIN_CANDIDATES = 4096
_MIX = np.uint64(0x9E3779B97F4A7C15)   # spreads a slot (source, role) over the hash bits
_TOTAL = np.uint64(0x5BD1E9955BD1E995)  # the "value" of a slot's total row
ROLE_UNSET = -1
STALE_SHARE = 0.1           # a key whose value came at under this share of VALUE_MIN_RATE lately has gone
# ValueTable.lookup first asks a flag per value of a code's low FILTER_BITS bits (codes are hashes) whether
# any key has it: most of a batch's parameters are no key (a few hundred keys against tens of thousands
# of parameters), and a flag is cheaper to read than a binary search over the keys.
FILTER_BITS = 16
_LOW_BITS = np.uint64((1 << FILTER_BITS) - 1)


def _find(sorted_codes, codes):
    """(position in sorted_codes, found) of each code."""
    if not sorted_codes.size:
        return np.zeros(codes.size, np.int64), np.zeros(codes.size, np.bool_)
    at = np.minimum(np.searchsorted(sorted_codes, codes), sorted_codes.size - 1)
    return at, sorted_codes[at] == codes


class KeyIndex:
    """Codes of the rows in use (sorted, for lookups) and the row of each: fewer than the rows when
    rows of values gone quiet wait for reuse (saved apart from the per-row arrays for that reason)."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)
        self.key = np.zeros(0, np.int64)


class ValueTable:
    """The keys: code -> row (index), and per row its slot, whether it is the slot's total (every
    value of the role, the parent a value's share is judged against) and its total's row."""

    def __init__(self):
        self.index = KeyIndex()
        self.slot = np.zeros(0, np.uint64)       # by row: (source, role) code
        self.total = np.zeros(0, np.bool_)       # by row: the slot's total, not a value
        self.parent = np.zeros(0, np.int64)      # by row: the slot's total row (a total: itself)
        self._filter = (None, None)   # (the codes it was made for, the flags); a tuple: not saved with the arrays

    def add(self, codes, slots, totals, rows):
        """Keys in the given free rows, then in new rows; returns their rows."""
        grow = codes.size - rows.size
        first = self.slot.size
        self.slot = np.concatenate([self.slot, np.zeros(grow, np.uint64)])
        self.total = np.concatenate([self.total, np.zeros(grow, np.bool_)])
        self.parent = np.concatenate([self.parent, np.zeros(grow, np.int64)])
        ids = np.concatenate([rows, np.arange(first, first + grow)]).astype(np.int64)
        self.slot[ids], self.total[ids] = slots, totals
        self.parent[ids] = ids
        self._index(np.concatenate([self.code, codes]), np.concatenate([self.key, ids]))
        return ids

    def drop(self, rows):
        keep = ~np.isin(self.key, rows)
        self._index(self.code[keep], self.key[keep])

    def _index(self, code, key):
        order = np.argsort(code, kind="stable")
        self.index.code, self.index.key = code[order], key[order]

    @property
    def code(self):
        return self.index.code

    @property
    def key(self):
        return self.index.key

    def lookup(self, codes):
        """Row of each code, -1 where it is not a key."""
        rows = np.full(codes.size, -1, np.int64)
        if self.code.size:
            maybe = np.flatnonzero(self._flags()[codes & _LOW_BITS])
            at, known = _find(self.code, codes[maybe])
            rows[maybe] = np.where(known, self.key[at], -1)
        return rows

    def _flags(self):
        """Whether any key's code has each value of the low FILTER_BITS bits (made again when the codes change)."""
        if self._filter[0] is not self.code:
            flags = np.zeros(1 << FILTER_BITS, np.bool_)
            flags[self.code & _LOW_BITS] = True
            self._filter = (self.code, flags)
        return self._filter[1]

    @property
    def values(self):
        """Rows in use by values (not totals)."""
        return int(self.code.size - np.count_nonzero(self.total[self.key])) if self.code.size else 0


class Candidates:
    """Decayed counts of values (by code) with their slot; refused: qualified for a key when there was
    no room (counted once each, however often they are tried again)."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)    # sorted
        self.slot = np.zeros(0, np.uint64)
        self.count = np.zeros(0)
        self.refused = np.zeros(0, np.bool_)

    def add(self, codes, slots, counts):
        at, known = _find(self.code, codes)
        np.add.at(self.count, at[known], counts[known])
        new = ~known
        if new.any():
            code = np.concatenate([self.code, codes[new]])
            order = np.argsort(code, kind="stable")
            self.code = code[order]
            self.slot = np.concatenate([self.slot, slots[new]])[order]
            self.count = np.concatenate([self.count, counts[new].astype(np.float64)])[order]
            self.refused = np.concatenate([self.refused, np.zeros(int(new.sum()), np.bool_)])[order]

    def prune(self, cap):
        """Keep the cap heaviest values (lossy counting: a newcomer starts from its first batch)."""
        if self.code.size <= cap:
            return
        keep = np.sort(np.argpartition(-self.count, cap - 1)[:cap])
        for name in ("code", "slot", "count", "refused"):
            setattr(self, name, getattr(self, name)[keep])


class SlotTotals:
    """Decayed line counts per slot code, sorted."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)
        self.count = np.zeros(0)

    def add(self, codes, counts):
        at, known = _find(self.code, codes)
        np.add.at(self.count, at[known], counts[known])
        if (~known).any():
            code = np.concatenate([self.code, codes[~known]])
            order = np.argsort(code, kind="stable")
            self.code = code[order]
            self.count = np.concatenate([self.count, counts[~known].astype(np.float64)])[order]

    def of(self, codes):
        at, known = _find(self.code, codes)
        return np.where(known, self.count[at], 0.0) if self.code.size else np.zeros(codes.size)

    def prune(self, keep_codes):
        keep = np.isin(self.code, keep_codes)
        self.code, self.count = self.code[keep], self.count[keep]


class Found:
    """A batch's parameters that are keys: values (rows, lines, parameter indexes, their totals' rows)
    and totals (rows, lines, parameter indexes; every parameter of a slot with keys)."""

    def __init__(self, v_rows, v_lines, v_params, t_rows, t_lines, t_params, parents):
        self.v_rows, self.v_lines, self.v_params = v_rows, v_lines, v_params
        self.t_rows, self.t_lines, self.t_params = t_rows, t_lines, t_params
        self.parents = parents
        # where each value's parameter is among the totals' (a value's slot always has its total)
        self.in_totals = np.searchsorted(t_params, v_params)


class ValueKeys:
    """Finds the heavy values of each role and maps a batch's parameters to their keys.

    A role is a source's parameter after the same template text (tier3_novelty.role_key): `<*> "POST <*>`
    is the path of every POST line of an access log, whatever user agent follows and splits its
    template. base (a tier2_volume.KeyBaseline) and season (a tier2_volume.Seasonality) hold one row
    per key; VolumeTier counts, judges, closes and saves them like its templates'.
    """

    def __init__(self, max_keys, base, season, bucket_seconds):
        self.max_keys = int(max_keys)
        self.base = base
        self.season = season
        self.keys = ValueTable()
        self.candidates = Candidates()
        self.slots = SlotTotals()
        self.roles = {}              # role text -> id (slot codes hold ids: saved, so they stay)
        self.role_index = np.full((64, MAX_POSITIONS), ROLE_UNSET, np.int64)   # (template, position) -> role
        self.horizon = max(CANDIDATE_HOURS * 3600.0 / bucket_seconds, 1.0)   # buckets
        self.last_bucket = None      # event-time bucket the candidate counts were last decayed to
        self.refused = 0             # values that qualified for a key beyond max_keys
        self._cached = (None, None)
        self._coded = (None, None)
        self._rng = np.random.default_rng(0)   # the sample learn counts (fixed seed: replays repeat)

    @property
    def size(self):
        """Rows (values and totals, in use or free)."""
        return self.keys.slot.size

    def params(self, batch, ctx):
        """The batch's parameters that are keys, a Found (cached for the batch between score and learn)."""
        if self._cached[0] is batch:
            return self._cached[1]
        empty = np.zeros(0, np.int64)
        found = Found(empty, empty, empty, empty, empty, empty, empty)
        if self.max_keys and self.keys.code.size and _has_params(batch):
            line, code, slot, within = self._codes(batch, ctx)
            rows = self.keys.lookup(code)
            totals = self.keys.lookup(_TOTAL ^ (slot * _MIX))
            v, t = np.flatnonzero(rows >= 0), np.flatnonzero(totals >= 0)
            found = Found(rows[v], line[v], within[v], totals[t], line[t], within[t], self.keys.parent[rows[v]])
        self._cached = (batch, found)
        return found

    def describe(self, batch, j):
        """`<*>#k = value` of the batch's parameter j (k counts a template's parameters from 1); the value
        as the line wrote it, or without offsets its number or hash."""
        if batch.param_start is not None:
            raw = bytes(batch.buf[batch.param_start[j]:batch.param_end[j]])
            value = (routes.shown(raw) or raw.decode("utf-8", "replace"))[:80]   # a path: its route's key
        elif np.isfinite(batch.param_num[j]):
            value = "%g" % batch.param_num[j]
        else:
            value = "#%x" % int(batch.param_hash[j])
        return "<*>#%d = %s" % (int(batch.param_pos[j]) + 1, value)

    def _codes(self, batch, ctx):
        """As _codes_of, once per batch (params and learn both want them)."""
        if self._coded[0] is not batch:
            self._coded = (batch, self._codes_of(batch, ctx))
        return self._coded[1]

    def _codes_of(self, batch, ctx):
        """Line index, value code, slot code and index of each word parameter within MAX_POSITIONS.
        Numbers are measurements (a pool's in_use, a queue's depth, a size): a surge of `in_use=5` is
        the gauge moving, which tier 3 judges as a number, not a kind of event."""
        counts = np.diff(batch.param_ptr)
        line = np.repeat(np.arange(batch.n, dtype=np.int64), counts)
        within = np.flatnonzero((batch.param_pos < MAX_POSITIONS) & np.isnan(batch.param_num))
        line = line[within]
        roles = self._roles(batch.template_id[line].astype(np.int64), batch.param_pos[within].astype(np.int64), ctx)
        slot = (batch.source_id[line].astype(np.uint64) << np.uint64(44)) | roles.astype(np.uint64)
        code = _value_hashes(batch, within) ^ (slot * _MIX)
        return line, code, slot, within

    def _roles(self, templates, positions, ctx):
        """Role id of each (template, position); pairs met for the first time get theirs from the
        template's text (a template without text, an evicted one, is a role of its own)."""
        if not templates.size:
            return templates
        self._grow_roles(int(templates.max()) + 1)
        roles = self.role_index[templates, positions]
        todo = np.flatnonzero(roles == ROLE_UNSET)
        if todo.size:
            text = ctx.template_text if ctx is not None else str
            for pair in np.unique(templates[todo] * MAX_POSITIONS + positions[todo]).tolist():
                t, p = divmod(pair, MAX_POSITIONS)
                name = role_key(text(t), p, "") or "\x01%d:%d" % (t, p)
                self.role_index[t, p] = self.roles.setdefault(name, len(self.roles))
            roles = self.role_index[templates, positions]
        return roles

    def _grow_roles(self, n):
        if n > self.role_index.shape[0]:
            grown = np.full((max(n, 2 * self.role_index.shape[0]), MAX_POSITIONS), ROLE_UNSET, np.int64)
            grown[: self.role_index.shape[0]] = self.role_index
            self.role_index = grown

    def forget(self, template_ids):
        """The miner widened these templates: their positions are other fields now, and their roles
        are worked out again from their new text."""
        ids = np.asarray(template_ids, np.int64)
        ids = ids[ids < self.role_index.shape[0]]
        self.role_index[ids] = ROLE_UNSET
        self._cached = self._coded = (None, None)

    def learn(self, batch, bucket, ctx):
        """Count the batch's values into the heavy-hitter tables (decayed to event-time bucket
        `bucket`) and make keys of the values that now qualify. Returns the number of new keys."""
        self._cached = (None, None)   # the batch is learned: its key ids are not wanted again
        if not self.max_keys or not _has_params(batch):
            return 0
        self._decay(bucket)
        _, code, slot, _ = self._codes(batch, ctx)
        self._coded = (None, None)
        if not code.size:
            return 0
        if code.size > LEARN_SAMPLE:
            # heavy hitters stand out in a sample as well: counting every value of a big batch was most
            # of this module's cost; each sampled one counts for the ones it stands for
            pick = self._rng.random(code.size) < LEARN_SAMPLE / code.size
            code, slot, weight = code[pick], slot[pick], code.size / LEARN_SAMPLE
        else:
            weight = 1.0
        uniq, first, counts = np.unique(code, return_index=True, return_counts=True)
        self.candidates.add(uniq, slot[first], counts * weight)
        slots, slot_counts = np.unique(slot, return_counts=True)
        self.slots.add(slots, slot_counts * weight)
        self.candidates.prune(max(CANDIDATES_PER_KEY * self.max_keys, MIN_CANDIDATES))
        self.slots.prune(self.candidates.slot)
        return self._promote()

    def _decay(self, bucket):
        if self.last_bucket is not None and bucket > self.last_bucket:
            keep = (1.0 - 1.0 / self.horizon) ** min(bucket - self.last_bucket, 100 * self.horizon)
            self.candidates.count *= keep
            self.slots.count *= keep
        if self.last_bucket is None or bucket > self.last_bucket:
            self.last_bucket = bucket

    def _promote(self):
        c = self.candidates
        total = self.slots.of(c.slot)
        share = c.count / np.maximum(total, 1e-9)
        # a count decayed over the horizon is about rate * horizon once the value has been seen that long
        qualify = (share >= VALUE_MIN_SHARE) & (share < VALUE_MAX_SHARE) & (c.count >= VALUE_MIN_RATE * self.horizon)
        qualify &= self.keys.lookup(c.code) < 0
        new = np.flatnonzero(qualify)
        if not new.size:
            return 0
        new = new[np.argsort(-c.count[new], kind="stable")]   # the heaviest first
        take, fresh = self._fit(new, max(self.max_keys - self.keys.code.size, 0))
        free = np.setdiff1d(np.arange(self.size), self.keys.key)   # rows of keys gone, waiting for reuse
        if take < new.size:
            free = self._stale(new.size - take + len(fresh) + free.size)
            take, fresh = self._fit(new, max(self.max_keys - self.keys.code.size, 0))
        if take < new.size:
            # refused while there is no room (tried again when a value goes quiet), counted once each
            refused = new[take:][~c.refused[new[take:]]]
            c.refused[refused] = True
            if refused.size and not self.refused:
                log.warning("tier 2: %d template parameter values qualify for their own volume baseline beyond "
                            "[detection] [[tier2]] max_value_keys = %d; their surges are judged only through their "
                            "templates (counted in anomaly_detector_volume_value_keys_refused_total)",
                            refused.size, self.max_keys)
            self.refused += int(refused.size)
            new = new[:take]
        if not new.size:
            return 0
        slots = c.slot[new]
        fresh = np.array(fresh, np.uint64)
        # each slot with values has a total row: what a value's share is judged against
        totals = self.keys.add(_TOTAL ^ (fresh * _MIX), fresh, np.ones(fresh.size, np.bool_), free[: fresh.size])
        rows = self.keys.add(c.code[new], slots, np.zeros(new.size, np.bool_), free[fresh.size:][: new.size])
        self.keys.parent[rows] = self.keys.lookup(_TOTAL ^ (slots * _MIX))
        self.base.ensure(self.size)
        self.season.ensure(self.base.size)
        self._fresh_rows(np.concatenate([totals, rows]))
        return int(new.size)

    def _fit(self, new, room):
        """How many of the candidates `new` (heaviest first) fit in `room` rows, each slot's first also
        taking a row for the slot's total -> (how many, the slots needing a total row)."""
        fresh, take = [], 0
        for slot in self.candidates.slot[new].tolist():
            need = slot not in fresh and self.keys.lookup(_TOTAL ^ (np.array([slot], np.uint64) * _MIX))[0] < 0
            if take + len(fresh) + 1 + need > room:
                break
            if need:
                fresh.append(slot)
            take += 1
        return take, fresh

    def _stale(self, n):
        """Up to n free rows for new keys: rows out of the lookup already, then value rows whose values
        have gone (their lines of about the last hour under STALE_SHARE of the least a key needs, after at
        least that long as keys), taken out."""
        k = self.keys
        free = np.setdiff1d(np.arange(self.size), k.key)[:n]
        values = ~k.total[k.key]
        codes, rows = k.code[values], k.key[values]
        # its lines over about the last hour (decayed, as a candidate's), 0 once it left the table
        c = self.candidates
        at = np.minimum(np.searchsorted(c.code, codes), max(c.code.size - 1, 0))
        recent = np.where(c.code[at] == codes, c.count[at], 0.0) if c.code.size else np.zeros(codes.size)
        gone = rows[(recent < STALE_SHARE * VALUE_MIN_RATE * self.horizon)
                    & (self.base.age[rows] > self.horizon)][: n - free.size]
        if gone.size:
            k.drop(gone)
        return np.concatenate([free, gone]).astype(np.int64)

    def _fresh_rows(self, ids):
        """Rows as a key never seen has them (a reused row must not carry its old key's baseline)."""
        if not len(ids):
            return
        fresh = type(self.base)(1)
        for name, arr in vars(self.base).items():
            arr[ids] = getattr(fresh, name)[0]
        self.season.hod[ids] = 0.0
        self.season.dow[ids] = 0.0

    # -- persistence ---------------------------------------------------------------------

    def state(self):
        return {"keys": _table_state(self.keys) | _table_state(self.keys.index), "candidates": _table_state(self.candidates),
                "slots": _table_state(self.slots), "roles": sorted(self.roles, key=self.roles.get),
                "base": self.base.state(), "season": self.season.state(),
                "last_bucket": self.last_bucket, "refused": self.refused}

    def load_state(self, state):
        """Restore state(); a state without value keys (older releases) starts them afresh."""
        if not state:
            return
        for name in ("keys", "candidates", "slots"):
            _load_table(getattr(self, name), state.get(name, {}))
        _load_table(self.keys.index, state.get("keys", {}))
        self.roles = {name: i for i, name in enumerate(state.get("roles", []))}
        self.base.load_state(state.get("base", {}))
        self.season.load_state(state.get("season", {}))
        self.base.ensure(self.size)
        self.season.ensure(self.base.size)
        self.last_bucket = state.get("last_bucket")
        self.refused = int(state.get("refused", 0))


def _has_params(batch):
    pos = getattr(batch, "param_pos", None)   # batches made up of counts alone (tests, tools) have none
    return pos is not None and pos.size > 0


def _table_state(table):
    # codes are 64-bit hashes: saved as signed integers (JSON readers beyond Python lose larger ones)
    return {name: (arr.view(np.int64) if arr.dtype == np.uint64 else arr).tolist() for name, arr in vars(table).items()
            if isinstance(arr, np.ndarray)}


def _load_table(table, state):
    for name, arr in vars(table).copy().items():
        if name in state and isinstance(arr, np.ndarray):
            loaded = np.asarray(state[name], np.int64 if arr.dtype == np.uint64 else arr.dtype)
            setattr(table, name, loaded.view(np.uint64) if arr.dtype == np.uint64 else loaded)


def _value_hashes(batch, within):
    """The hash each of these parameters is counted by: a URL path's route (/product/<*> for every product
    page, /search for every query: one endpoint, as an operator reads it), else the value's own."""
    hashes = np.ascontiguousarray(batch.param_hash[within], np.uint64)
    if batch.param_start is None or not within.size:
        return hashes
    return route_codes(batch.buf, np.ascontiguousarray(batch.param_start[within], np.int64),
                       np.ascontiguousarray(batch.param_end[within], np.int64), hashes)
