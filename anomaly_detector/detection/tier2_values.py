"""Tier 2, value keys: the volume of one parameter value inside a template (a table, a method, a path).

An operator reads `query <*> on <*> took ...` with `<*>#2 = sessions`, or an access line with
`POST /login`, as one kind of event. A surge of such a value that is a few percent of a busy
template barely moves the template's count, so tier 2 (tier2_volume.py, which owns the counting,
the baselines and the spike tests) also counts the heavy values of each template position, per source.

Which values: a bounded heavy-hitter table per (source, template, position), kept with decayed counts
over about an hour (CANDIDATE_HOURS) of lines. A value becomes a key when it is at least
VALUE_MIN_SHARE of its position's lines, at least VALUE_MIN_RATE lines per bucket, and not nearly
all of them (VALUE_MAX_SHARE: it would say no more than its template). Heavy hitters rather than
"positions with few distinct values": a path position holds thousands of product pages and a
handful of busy endpoints; only the busy ones are worth a baseline, and a position's long tail must
not keep its heavy values out. At most max_value_keys keys ([detection] [[tier2]]); values that
qualify beyond it are refused, counted (refused) and logged once.

Keys are rows of their own KeyBaseline and Seasonality (given by tier2_volume.VolumeTier, which
judges their spikes like templates'). Value drops are not judged: a value a few percent of its
template moves with the traffic mix (a search campaign, a crawler) far more than a template does,
and an outage shows as a drop of its template and source.
"""
import logging

import numpy as np

log = logging.getLogger(__name__)

MAX_POSITIONS = 16          # parameters beyond this position of a template are not counted
VALUE_MIN_SHARE = 0.02      # a key's value is at least this share of its position's lines
VALUE_MAX_SHARE = 0.9       # and less than this share (else it is its template)
VALUE_MIN_RATE = 0.5        # and at least this many lines per bucket (quieter values are clumps)
CANDIDATE_HOURS = 1.0       # heavy-hitter counts decay over about this long (in event time)
CANDIDATES_PER_KEY = 4      # candidate values tracked per allowed key (at least MIN_CANDIDATES)
MIN_CANDIDATES = 4096
_MIX = np.uint64(0x9E3779B97F4A7C15)   # spreads (source, template, position) over the hash bits


class ValueTable:
    """The value keys: code (sorted, for lookups) -> key id, and per key id what it is."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)       # sorted value codes of the keys
        self.key = np.zeros(0, np.int64)         # key id of each code
        self.template = np.zeros(0, np.int64)    # by key id: its template, position and source
        self.position = np.zeros(0, np.int64)
        self.source = np.zeros(0, np.int64)

    def add(self, codes, templates, positions, sources):
        """New keys, in the rows of forgotten ones first; returns their ids."""
        free = np.flatnonzero(self.template < 0)[: codes.size]
        grow = codes.size - free.size
        first = self.template.size
        for name in ("template", "position", "source"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(grow, np.int64)]))
        ids = np.concatenate([free, np.arange(first, first + grow)])
        self.template[ids], self.position[ids], self.source[ids] = templates, positions, sources
        code = np.concatenate([self.code, codes])
        key = np.concatenate([self.key, ids])
        order = np.argsort(code, kind="stable")
        self.code, self.key = code[order], key[order]
        return ids

    def forget(self, template_ids):
        """Drop the keys of these templates (their rows are free for new keys); returns their ids."""
        gone = np.flatnonzero(np.isin(self.template, template_ids))
        keep = ~np.isin(self.key, gone)
        self.code, self.key = self.code[keep], self.key[keep]
        self.template[gone] = -1
        return gone

    @property
    def live(self):
        return int(self.code.size)

    def lookup(self, codes):
        """Key id of each code, -1 where it is not a key."""
        if not self.code.size:
            return np.full(codes.size, -1, np.int64)
        at = np.minimum(np.searchsorted(self.code, codes), self.code.size - 1)
        return np.where(self.code[at] == codes, self.key[at], -1)


class Candidates:
    """Decayed counts of values (by code) with their position (slot code); refused: qualified for a key
    when there was no room (counted once each)."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)    # sorted
        self.slot = np.zeros(0, np.uint64)
        self.count = np.zeros(0)
        self.refused = np.zeros(0, np.bool_)

    def add(self, codes, slots, counts):
        at = np.minimum(np.searchsorted(self.code, codes), max(self.code.size - 1, 0))
        known = (self.code[at] == codes) if self.code.size else np.zeros(codes.size, np.bool_)
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
    """Decayed line counts per (source, template, position) code, sorted."""

    def __init__(self):
        self.code = np.zeros(0, np.uint64)
        self.count = np.zeros(0)

    def add(self, codes, counts):
        at = np.minimum(np.searchsorted(self.code, codes), max(self.code.size - 1, 0))
        known = (self.code[at] == codes) if self.code.size else np.zeros(codes.size, np.bool_)
        np.add.at(self.count, at[known], counts[known])
        if (~known).any():
            code = np.concatenate([self.code, codes[~known]])
            order = np.argsort(code, kind="stable")
            self.code = code[order]
            self.count = np.concatenate([self.count, counts[~known].astype(np.float64)])[order]

    def of(self, codes):
        at = np.minimum(np.searchsorted(self.code, codes), max(self.code.size - 1, 0))
        return np.where(self.code[at] == codes, self.count[at], 0.0) if self.code.size else np.zeros(codes.size)

    def prune(self, keep_codes):
        keep = np.isin(self.code, keep_codes)
        self.code, self.count = self.code[keep], self.count[keep]


class ValueKeys:
    """Finds the heavy values of template positions and maps a batch's parameters to their keys.

    base (a tier2_volume.KeyBaseline) and season (a tier2_volume.Seasonality) hold one row per key;
    VolumeTier counts, judges, closes and saves them like its templates'.
    """

    def __init__(self, max_keys, base, season, bucket_seconds):
        self.max_keys = int(max_keys)
        self.base = base
        self.season = season
        self.keys = ValueTable()
        self.candidates = Candidates()
        self.slots = SlotTotals()
        self.horizon = max(CANDIDATE_HOURS * 3600.0 / bucket_seconds, 1.0)   # buckets
        self.last_bucket = None      # event-time bucket the candidate counts were last decayed to
        self.refused = 0             # values that qualified for a key beyond max_keys
        self._cached = (None, None)

    @property
    def size(self):
        """Rows in use or free (forgotten keys' rows are taken first by new keys)."""
        return self.keys.template.size

    def params(self, batch):
        """(key id, line index, parameter index) of the batch's parameters that are value keys (cached for
        the batch between score and learn)."""
        if self._cached[0] is batch:
            return self._cached[1]
        found = None
        if self.max_keys and self.size and _has_params(batch):
            line, code, _, within = self._codes(batch)
            keys = self.keys.lookup(code)
            hit = np.flatnonzero(keys >= 0)
            found = (keys[hit], line[hit], within[hit])
        if found is None:
            empty = np.zeros(0, np.int64)
            found = (empty, empty, empty)
        self._cached = (batch, found)
        return found

    def describe(self, batch, j):
        """`<*>#k = value` of the batch's parameter j (k counts a template's parameters from 1); the value
        as the line wrote it, or without offsets its number or hash."""
        if batch.param_start is not None:
            value = bytes(batch.buf[batch.param_start[j]:batch.param_end[j]]).decode("utf-8", "replace")[:80]
        elif np.isfinite(batch.param_num[j]):
            value = "%g" % batch.param_num[j]
        else:
            value = "#%x" % int(batch.param_hash[j])
        return "<*>#%d = %s" % (int(batch.param_pos[j]) + 1, value)

    def _codes(self, batch):
        """Line index, value code, slot code and index of each word parameter within MAX_POSITIONS.
        Numbers are measurements (a pool's in_use, a queue's depth, a size): a surge of `in_use=5` is
        the gauge moving, which tier 3 judges as a number, not a kind of event."""
        counts = np.diff(batch.param_ptr)
        line = np.repeat(np.arange(batch.n, dtype=np.int64), counts)
        within = np.flatnonzero((batch.param_pos < MAX_POSITIONS) & np.isnan(batch.param_num))
        line = line[within]
        slot = ((batch.source_id[line].astype(np.uint64) << np.uint64(44))
                | (batch.template_id[line].astype(np.uint64) << np.uint64(4))
                | batch.param_pos[within].astype(np.uint64))
        code = batch.param_hash[within] ^ (slot * _MIX)
        return line, code, slot, within

    def learn(self, batch, bucket):
        """Count the batch's values into the heavy-hitter tables (decayed to event-time bucket
        `bucket`) and make keys of the values that now qualify. Returns the number of new keys."""
        self._cached = (None, None)   # the batch is learned: its key ids are not wanted again
        if not self.max_keys or not _has_params(batch):
            return 0
        self._decay(bucket)
        _, code, slot, _ = self._codes(batch)
        if not code.size:
            return 0
        uniq, first, counts = np.unique(code, return_index=True, return_counts=True)
        self.candidates.add(uniq, slot[first], counts)
        slots, slot_counts = np.unique(slot, return_counts=True)
        self.slots.add(slots, slot_counts)
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
        qualify = ((share >= VALUE_MIN_SHARE) & (share < VALUE_MAX_SHARE) & (c.count >= VALUE_MIN_RATE * self.horizon)
                   & ~c.refused)
        qualify &= self.keys.lookup(c.code) < 0
        new = np.flatnonzero(qualify)
        if not new.size:
            return 0
        room = max(self.max_keys - self.keys.live, 0)
        if new.size > room:
            # the heaviest first; the rest are refused, each counted once
            new = new[np.argsort(-c.count[new], kind="stable")]
            refused = new[room:]
            c.refused[refused] = True
            if not self.refused:
                log.warning("tier 2: %d template parameter values qualify for their own volume baseline beyond "
                            "[detection] [[tier2]] max_value_keys = %d; their surges are judged only through their "
                            "templates (counted in anomaly_detector_volume_value_keys_refused_total)",
                            refused.size, self.max_keys)
            self.refused += int(refused.size)
            new = np.sort(new[:room])
        if not new.size:
            return 0
        slot = c.slot[new]
        ids = self.keys.add(c.code[new], (slot >> np.uint64(4)).astype(np.int64) & 0xFFFFFFFFFF,
                            (slot & np.uint64(15)).astype(np.int64), (slot >> np.uint64(44)).astype(np.int64))
        self.base.ensure(self.size)
        self.season.ensure(self.base.size)
        self._fresh_rows(ids)
        return int(new.size)

    def forget(self, template_ids):
        """The miner widened these templates: their positions mean other fields now. Their keys and
        candidate values go (rows free for new keys); what they are now is found again."""
        if not self.size and not self.candidates.code.size:
            return
        self._fresh_rows(self.keys.forget(np.asarray(template_ids, np.int64)))
        c = self.candidates
        keep = ~np.isin((c.slot >> np.uint64(4)).astype(np.int64) & 0xFFFFFFFFFF, np.asarray(template_ids, np.int64))
        for name in ("code", "slot", "count", "refused"):
            setattr(c, name, getattr(c, name)[keep])
        self.slots.prune(c.slot)
        self._cached = (None, None)

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
        return {"keys": _table_state(self.keys), "candidates": _table_state(self.candidates),
                "slots": _table_state(self.slots), "base": self.base.state(), "season": self.season.state(),
                "last_bucket": self.last_bucket, "refused": self.refused}

    def load_state(self, state):
        """Restore state(); a state without value keys (older releases) starts them afresh."""
        if not state:
            return
        for name in ("keys", "candidates", "slots"):
            _load_table(getattr(self, name), state.get(name, {}))
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
    return {name: (arr.view(np.int64) if arr.dtype == np.uint64 else arr).tolist() for name, arr in vars(table).items()}


def _load_table(table, state):
    for name, arr in vars(table).copy().items():
        if name in state:
            loaded = np.asarray(state[name], np.int64 if arr.dtype == np.uint64 else arr.dtype)
            setattr(table, name, loaded.view(np.uint64) if arr.dtype == np.uint64 else loaded)
