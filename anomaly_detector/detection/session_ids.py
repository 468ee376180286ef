"""Learn where a template carries a session id that no session pattern names.

Tier 4 (tier4_sequence.py) finds session ids with regular expressions (request, trace, block, order
ids, UUIDs). Logs name their units of work in many other ways: `job 4711 received`, a mail queue id,
`conn 17`, `txn 88`. Such an id shows itself by how it behaves: the value one template's parameter
takes comes back, within a session timeout, as a parameter of other templates (`job 4711 rendered`,
`job 4711 uploaded`), and seldom twice in its own. A duration, a size or a user id does not: what
it shares with other lines it shares as often with its own. Clocks and addresses are shared by
lines written in the same millisecond or for one peer: their shape rules them out.
SessionIdLearner watches the parameters of the templates the patterns found no id in and names such
positions; SessionIdLocator then reads those templates' session keys from that parameter
(sequence_kernels.keys_at_params). Memory: the remembered values (MAX_RECENT), a status byte and two
int32 counts per (template, position) key up to the highest template id looked at (MAX_POSITION keys a
template), and the partners of positions not decided yet; bounded by the templates the miner keeps.
"""
import re

import numpy as np

from . import sequence_kernels as sk

MIN_VALUES = 200          # values of a position looked at before it may be named an id
GIVE_UP_VALUES = 1000     # values after which a position that never qualified is let go
# A position may be named sooner, from this many values, when nearly all of them (UNANIMOUS_SHARE) came
# back from one earlier position and none twice at its own: a job that runs hourly (`backup 20260305-0215
# started` ... `backup 20260305-0215 done`) shows 200 values in eight days. Values met by chance (a
# number that another busy template also writes) are spread over several partners and seldom every time.
MIN_UNANIMOUS_VALUES = 12
UNANIMOUS_SHARE = 0.9
LINKED_SHARE = 0.5        # share of a position's values met earlier at other templates' positions
PARTNER_SHARE = 0.05      # of those, the share an earlier position needs to be named with it
REPEAT_SHARE = 0.005      # at most this share met earlier at its own position: an id is used once per step
# ... unless nearly all its values (UNANIMOUS_SHARE) came back from earlier positions: then up to this share
# may come back at its own too. A job numbered by the second hands a number out again when two jobs start
# in one second (report jobs at 2-5% in their busy hours were never named, and an hour of jobs stopping
# after one step raised nothing); a measurement that one earlier line always echoes repeats at its own
# position about as often as it is echoed, far more than this.
REUSED_SHARE = 0.05
MAX_RECENT = 16384        # values remembered (the latest within the session timeout): bounds memory
PER_POSITION = 128        # values of one position looked at per batch at most: bounds the cost
MAX_POSITION = 64         # parameters past this one of a template are not looked at
SAMPLES = 3               # values of a qualifying position whose shape is checked
# Values shaped like these name a moment or a peer, not a unit of work: lines written in the same
# millisecond, or by one client, share them without being one session.
NOT_AN_ID = re.compile(rb"\d{1,2}:\d{2}|\d{4}-\d{2}-\d{2}|\d{1,2}/[A-Za-z]{3}/\d{4}|^\d{1,3}(?:\.\d{1,3}){3}$")


class SessionIdLearner:
    """Which (template, parameter position) pairs hold session ids, from the values they share."""

    def __init__(self, timeout):
        self.timeout = float(timeout)
        self.h = np.zeros(0, np.uint64)      # remembered values: hash, position key, event time
        self.key = np.zeros(0, np.int64)
        self.ts = np.zeros(0, np.float64)
        # per position key, like _status: values looked at, and those met earlier at the same position
        # (int32: a position is decided by GIVE_UP_VALUES plus a batch's PER_POSITION at the latest)
        self._seen = np.zeros(0, np.int32)
        self._repeats = np.zeros(0, np.int32)
        self.partners = {}   # position key -> {earlier position key: values first met there}
        self.done = set()    # position keys decided, either way
        self.family = {}     # position key named an id -> its family: the template id that began it
        self._status = np.zeros(0, np.int8)   # per position key: done, named (sequence_kernels.POSITION_*)
        self._taken = np.zeros(0, np.int16)   # per position key: learner_params' scratch count, zero between calls

    def observe(self, batch, ts, candidate):
        """Look at the parameters of lines whose template is a candidate (bool per template id);
        return [(template, position, family)] newly named session ids. Positions named together, or
        sharing values with one named before, are one family: an id is one session only within its
        family (a job number and an unrelated port that happen to be equal are two sessions)."""
        if batch.param_start is None:   # no value spans: a learned id could not be read anyway
            return []
        entries = self._entries(batch, ts, candidate)
        if entries is None:
            return []
        at, h, key, when, named = entries
        linked, partner, repeat = self._meet(h, key, when)
        judged = ~named
        key, at = key[judged], at[judged]
        counted = self._count(key, linked[judged], partner[judged], repeat[judged])
        return self._decide(counted, lambda k: self._values(batch, at[key == k][:SAMPLES]))

    @staticmethod
    def _values(batch, at):
        return [bytes(batch.buf[a:b]) for a, b in zip(batch.param_start[at].tolist(), batch.param_end[at].tolist())]

    def _entries(self, batch, ts, candidate):
        ptr = batch.param_ptr
        if ptr is None or ptr[-1] == 0:
            return None
        self._grow_status(candidate.size * MAX_POSITION)
        # The positions already named stay remembered (not judged again) while others are judged: a
        # step that shows up later (a retry, an error path, a step a deploy added) meets their values
        # and joins their family, also after a restart (adopt).
        # Of each position, the first values in the batch only (lines are in time order): a busy
        # position still meets its partner's values of the same moments, and is decided within a few
        # batches, after which it costs nothing; a sparse one is looked at whole.
        sel, line, key, named, judged = sk.learner_params(ptr, batch.param_pos, batch.template_id, ts, candidate,
                                                          self._status, MAX_POSITION, PER_POSITION, self._taken)
        if not judged:   # nothing left to decide here: remembering the named ids would be for nothing
            return None
        return sel, batch.param_hash[sel], key, ts[line], named

    def _grow_status(self, size):
        if self._status.size < size:
            self._status, self._seen, self._repeats = (_grown(a, size) for a in (self._status, self._seen,
                                                                                   self._repeats))
            self._taken = np.zeros(size, np.int16)

    def _meet(self, h, key, when):
        """Per new value: met earlier at another position (and which), met earlier at its own."""
        old = self.h.size
        all_h, all_k = np.concatenate([self.h, h]), np.concatenate([self.key, key])
        all_t = np.concatenate([self.ts, when])
        order = np.lexsort((all_t, all_h))   # by value, then time, then arrival (lexsort is stable)
        sh, sk_, st = all_h[order], all_k[order], all_t[order]
        starts = np.ones(sh.size, np.bool_)
        starts[1:] = sh[1:] != sh[:-1]
        first = np.maximum.accumulate(np.where(starts, np.arange(sh.size), 0))
        near = st - st[first] <= self.timeout
        crossed = ~starts & (sk_[first] != sk_) & near & (sk_[first] // MAX_POSITION != sk_ // MAX_POSITION)
        order2 = np.lexsort((all_t, all_k, all_h))
        again = np.zeros(all_h.size, np.bool_)
        same = (all_h[order2][1:] == all_h[order2][:-1]) & (all_k[order2][1:] == all_k[order2][:-1])
        same &= all_t[order2][1:] - all_t[order2][:-1] <= self.timeout
        again[order2[1:]] = same
        linked = np.zeros(all_h.size, np.bool_)
        linked[order] = crossed
        partner = np.full(all_h.size, -1, np.int64)
        partner[order] = np.where(crossed, sk_[first], -1)
        self._remember(all_h, all_k, all_t)
        return linked[old:], partner[old:], again[old:]

    def _remember(self, h, key, when):
        keep = when >= np.max(when) - self.timeout
        h, key, when = h[keep][-MAX_RECENT:], key[keep][-MAX_RECENT:], when[keep][-MAX_RECENT:]
        self.h, self.key, self.ts = h, key, when

    def _count(self, key, linked, partner, repeat):
        """Count the values of each position (key), its repeats and its partners; returns the positions
        counted, sorted."""
        keys, seen = np.unique(key, return_counts=True)
        self._seen[keys] += seen.astype(np.int32)
        self._repeats[keys] += np.bincount(np.searchsorted(keys, key[repeat]), minlength=keys.size).astype(np.int32)
        pairs, counts = np.unique((key[linked] << 32) | partner[linked], return_counts=True)
        for pair, c in zip(pairs.tolist(), counts.tolist()):
            mine = self.partners.setdefault(pair >> 32, {})
            mine[pair & 0xFFFFFFFF] = mine.get(pair & 0xFFFFFFFF, 0) + c
        return keys

    def _decide(self, keys, values_of):
        """Positions of `keys` that qualify now, with the earlier position they share values with;
        values_of(key) gives a few of its values in this batch, whose shape must not be a moment or
        an address."""
        found = []
        # most positions have too few values yet: left out in one pass (decided ones too, again in the loop:
        # a position named with an earlier key of this loop is done by the time its own turn comes)
        keys = keys[(self._seen[keys] >= min(MIN_VALUES, MIN_UNANIMOUS_VALUES))
                    & (self._status[keys] & sk.POSITION_DONE == 0)]
        for k, seen, repeats in zip(keys.tolist(), self._seen[keys].tolist(), self._repeats[keys].tolist()):
            if k in self.done:
                continue
            partners = self.partners.get(k, {})
            met = sum(partners.values())
            if seen < MIN_VALUES and not _unanimous(seen, partners, repeats):
                continue
            if met >= LINKED_SHARE * seen and repeats <= _repeats_allowed(seen, met):
                if any(NOT_AN_ID.search(v) for v in values_of(k)):
                    self._conclude(k)
                    continue
                # The steps before it that share its ids (a first step split by a word, `type=invoice`
                # and `type=slip`, is several templates); one stray value shared is not a step.
                earlier = [p for p, c in partners.items() if c >= PARTNER_SHARE * met
                           and (p not in self.done or p in self.family)]
                if not earlier:   # the positions it shares values with were judged no ids: alone, no sessions
                    self._conclude(k)
                    continue
                family = min([self.family[p] for p in earlier if p in self.family] or [k // MAX_POSITION])
                for named in [k] + earlier:
                    if named not in self.done:
                        found.append(divmod(named, MAX_POSITION) + (family,))
                        self.family[named] = family
                        self._conclude(named)
            elif seen >= GIVE_UP_VALUES:
                self._conclude(k)
        return found

    def adopt(self, named):
        """Take back positions named ids before a restart ([(template, position, family)], from the
        locator's saved state): a template learned after it that shares their values joins their
        family instead of starting one of its own."""
        for t, position, family in named:
            k = int(t) * MAX_POSITION + int(position)
            self.family[k] = int(family)
            self._conclude(k)

    def _conclude(self, k):
        self.done.add(k)
        self.partners.pop(k, None)
        self._grow_status(k + 1)
        self._status[k] = sk.POSITION_DONE | (sk.POSITION_NAMED if k in self.family else 0)


def _grown(values, size):
    """values zero-padded to size."""
    grown = np.zeros(size, values.dtype)
    grown[:values.size] = values
    return grown


def _repeats_allowed(seen, met):
    """How many of a position's values may have come back at its own position for it to be an id (met: how
    many came back from earlier positions of other templates)."""
    return (REUSED_SHARE if met >= UNANIMOUS_SHARE * seen else REPEAT_SHARE) * seen


def _unanimous(seen, partners, repeats):
    """Whether a position's few values all but came back from one earlier position, none repeated."""
    best = max(partners.values(), default=0)
    return repeats == 0 and best >= UNANIMOUS_SHARE * seen
