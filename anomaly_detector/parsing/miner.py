"""Online template miner: groups log messages into templates with stable ids and typed parameters.

Fed by the parsing stage (framing/headers give byte spans); its ids and parameters fill
batch.ParsedBatch for the detection tiers. Hot loops are in miner_kernels.py (numba).

How a line finds its template
  1. A numba pass masks every token's values (masking.py) and hashes the masked line:
     its "shape". A numpy hash table maps known shapes to templates; hits never touch Python.
  2. A miss (a shape not seen before) is matched in Python against the live templates with
     the same number of tokens. A template token is a glob (literal text and <*>); a line
     token joins it when the glob matches, or when the two differ only where one side holds
     a value (a masked run, an empty slot between delimiters, or a dotted/slashed name),
     in which case the template widens there. Differences between plain words
     ("VM Started" / "VM Paused") never widen. Of the templates that accept the line, the one
     with most literally equal tokens wins; at least one token must be equal and equal
     tokens must be at least `similarity` of equal + widened ones. Otherwise a new template
     is opened.

Free text (unclustered.py)
  A source whose lines mostly join no template is judged free text; its lines that join no
  live or archived template are given the reserved template <unclustered> instead of a new
  one each (a shape that comes back opens a template as usual). Shape-cache hits and such
  lines are resolved by one kernel (unclustered_kernels.free_text_run) without Python.

Ids are non-negative int32, given in creation order and never reused. A template that widens
keeps its id; the shape cache and a reload (save/load) give the same line the same id.

Eviction policy
  At most `max_templates` templates are live. Opening one more evicts the least recently
  seen sixteenth of them at once (one table rebuild per chunk rather than per template).
  Evicted templates go to an archive of up to `archive_size` (default 4 x max_templates)
  entries, together with the shapes that led to them; a line that comes back with such a
  shape, or that matches an archived template, revives it under its OLD id. Only templates
  pushed out of the archive too (oldest eviction first) lose their id for good.
  The shape cache holds at most `max_shapes` shapes; when full it is cleared and relearned
  through step 2, which maps lines to the same live templates, so ids do not change.
"""
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from anomaly_detector.parsing import miner_kernels as mk
from anomaly_detector.parsing import unclustered_kernels as uk
from anomaly_detector.parsing.masking import WILDCARD, MaskingConfig
from anomaly_detector.parsing.unclustered import UNCLUSTERED_TEXT, FreeTextGate
from anomaly_detector.storage.atomic import require, restore_json_snapshot, write_json_snapshot

M = bytes([mk.MARK])
SNAPSHOT_KIND = "templates"
SNAPSHOT_VERSION = 1
_DELIMS = b"./"
MATCH_TRIES = 16    # most candidate templates a new line is tried against (see _best_rows)


@dataclass
class MinedBatch:
    """Ids and parameters of n lines in the CSR layout of batch.ParsedBatch (m parameters)."""

    template_id: np.ndarray  # int32[n]
    param_ptr: np.ndarray    # int64[n+1]
    param_pos: np.ndarray    # int16[m]  which <*> of the template
    param_hash: np.ndarray   # uint64[m]
    param_num: np.ndarray    # float64[m] NaN when not numeric
    param_start: np.ndarray  # int64[m]  value offsets in the input buffer
    param_end: np.ndarray    # int64[m]


@dataclass
class MinerStats:
    lines: int = 0
    templates: int = 0
    evictions: int = 0
    revivals: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    unclustered: int = 0


# ---------------------------------------------------------------- token generalisation
def _alnum(c):
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122


def _split_common(a, b):
    n = min(len(a), len(b))
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    s = 0
    while s < n - p and a[-1 - s] == b[-1 - s]:
        s += 1
    return a[:p], a[p:len(a) - s], b[p:len(b) - s], a[len(a) - s:]


def _absorb_marks(pre, ma, mb, suf):
    # A differing part next to a value (over at most one delimiter) belongs to that value:
    # "blk_<*>" vs "blk_-<*>" differ by "-", which joins the <*>.
    if suf[:1] == M:
        ma, mb, suf = ma + M, mb + M, suf[1:]
    elif len(suf) >= 2 and not _alnum(suf[0]) and suf[1:2] == M:
        ma, mb, suf = ma + suf[:2], mb + suf[:2], suf[2:]
    if pre[-1:] == M:
        ma, mb, pre = M + ma, M + mb, pre[:-1]
    elif len(pre) >= 2 and not _alnum(pre[-1]) and pre[-2:-1] == M:
        ma, mb, pre = pre[-2:] + ma, pre[-2:] + mb, pre[:-2]
    return pre, ma, mb, suf


def _dotted_name(tok):
    return sum(tok.count(d) for d in _DELIMS) >= 2


def generalise(a, b):
    """Join template token a and masked line token b: (token, widened) or (None, False).

    Tokens are bytes with MARK for each value. See the module docstring for the rules.
    """
    if a == b:
        return a, False
    if M in a and mk.glob_capture_py(b, a) is not None:
        return a, False
    if a == M or b == M:
        return M, True
    pre, ma, mb, suf = _absorb_marks(*_split_common(a, b))
    if (M in ma and M in mb) or ma == M or mb == M:
        return pre + M + suf, True
    if not ma or not mb:
        # an empty slot is a value only between delimiters: "user=" / "user=root", "()" / "(x)"
        if (not pre or not _alnum(pre[-1])) and (not suf or not _alnum(suf[0])):
            return pre + M + suf, True
        return None, False
    if _dotted_name(a) and _dotted_name(b) and any(d in ma or d in mb for d in (b".", b"/")):
        # package, host and class names: com.apple.<*>: / system.<*>
        while pre and _alnum(pre[-1]):
            pre = pre[:-1]
        while suf and _alnum(suf[0]):
            suf = suf[1:]
        return pre + M + suf, True
    return None, False


def join_template(template, tokens, similarity):
    """The template widened to take tokens, with its count of equal tokens; (None, 0) if it does not fit."""
    new, exact, widened = [], 0, 0
    for a, b in zip(template, tokens):
        g, w = generalise(a, b)
        if g is None:
            return None, 0
        if a == b and a != M:
            exact += 1
        widened += w
        new.append(g)
    if exact == 0 or exact < similarity * (exact + widened):
        return None, 0
    return new, exact


def _keeps_values(old, new):
    """True when widening template tokens old to new leaves every parameter's position and value."""
    if len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if a != b and (a.count(M) != b.count(M) or b.count(M) > 1):
            return False
    return True


def _token_hashes(tokens, line_side):
    """Hashes of template or line tokens, by one kernel call (a per-byte Python loop was the miner's
    cost on long new lines). A bare value never counts as an equal token: it gets a hash no literal
    token has."""
    lengths = np.fromiter((len(t) for t in tokens), np.int64, len(tokens))
    ends = np.cumsum(lengths)
    hashes = mk.fnv_spans(np.frombuffer(b"".join(tokens), np.uint8), ends - lengths, ends)
    bare = np.fromiter((t == M for t in tokens), np.bool_, len(tokens))
    hashes[bare] = 1 if line_side else 0
    return hashes


def _masked(line, flags, force):
    """The masked form of one new line by the mask_line kernel (its Python twin took ~3 us a byte)."""
    buf = np.frombuffer(line, np.uint8)
    out = np.empty(len(line) + 1, np.uint8)
    forced = np.frombuffer(force, np.uint8) if force else np.zeros(0, np.uint8)
    return out[:mk.mask_line(buf, 0, len(line), flags, forced, out)].tobytes()


class _LengthIndex:
    """Templates with the same token count (live ones by slot, archived ones by id): their token hashes
    for the similarity kernel."""

    def __init__(self, length):
        self.slots = []
        self.row = {}
        self.hashes = np.zeros((4, length), dtype=np.uint64)

    def __contains__(self, slot):
        return slot in self.row

    def put(self, slot, tokens):
        row = self.row.get(slot)
        if row is None:
            row = self.row[slot] = len(self.slots)
            self.slots.append(slot)
            if row >= self.hashes.shape[0]:
                self.hashes = np.concatenate([self.hashes, np.zeros_like(self.hashes)])
        self.hashes[row] = _token_hashes(tokens, False)

    def drop(self, slot):
        row = self.row.pop(slot)
        last = len(self.slots) - 1
        if row != last:
            self.hashes[row] = self.hashes[last]
            self.slots[row] = self.slots[last]
            self.row[self.slots[row]] = row
        self.slots.pop()

    def candidates(self, line_hashes, order_key):
        """Keys (slots or ids) to try for a line, best first (see _best_rows); order_key maps keys to
        the tie-break (template ids)."""
        rows = len(self.slots)
        if not rows:
            return []
        equal = mk.equal_tokens(self.hashes[:rows], line_hashes)
        keys = np.array(self.slots)
        return keys[_best_rows(equal, order_key(keys))].tolist()


# ---------------------------------------------------------------- the miner
class TemplateMiner:
    """See the module docstring. Not thread-safe: one miner per worker."""

    def __init__(self, max_templates=10000, masking=None, similarity=0.5, max_shapes=None, archive_size=None,
                 free_text_window=1000, free_text_share=0.5):
        if max_templates < 1:
            raise ValueError("max_templates must be at least 1")
        if not 0.0 <= similarity <= 1.0:
            raise ValueError("similarity must be within 0..1")
        self.max_templates = int(max_templates)
        self.masking = masking if masking is not None else MaskingConfig()
        self.similarity = float(similarity)
        self.max_shapes = int(max_shapes or max(65536, 16 * self.max_templates))
        self.archive_size = int(archive_size if archive_size is not None else 4 * self.max_templates)
        self.stats = MinerStats()
        self._flags = self.masking.flags
        self._next_id = 0
        self._clock = 0
        cap = self.max_templates
        self._slot_tid = np.full(cap, -1, dtype=np.int32)
        self._counts = np.zeros(cap, dtype=np.int64)
        self._last_seen = np.zeros(cap, dtype=np.int64)
        self._nwild = np.zeros(cap, dtype=np.int64)
        self._tpl_first = np.zeros(cap, dtype=np.int64)
        self._tpl_nscan = np.zeros(cap, dtype=np.int64)
        self._free = list(range(cap - 1, -1, -1))
        self._tokens = {}          # slot -> list of template tokens (bytes)
        self._tid_slot = {}        # tid -> slot
        self._by_len = {}          # token count -> _LengthIndex
        self._shapes = {}          # shape hash -> slot
        self._slot_shapes = {}     # slot -> [shape hash]
        self._archive = OrderedDict()          # tid -> (tokens, count, last_seen), oldest eviction first
        self._widened = set()                  # tids whose text changed since take_widened()
        self._archived_shapes = {}             # shape hash -> tid
        self._archive_by_len = {}              # token count -> _LengthIndex of archived ids
        self._pool = np.zeros(1 << 16, dtype=np.uint8)
        self._pool_used = 0
        self._tt_start = np.zeros(1 << 12, dtype=np.int64)
        self._tt_end = np.zeros(1 << 12, dtype=np.int64)
        self._tt_marks = np.zeros(1 << 12, dtype=np.int64)
        self._tt_used = 0
        self._max_marks = 1
        self._keys = np.zeros(1 << 12, dtype=np.uint64)
        self._vals = np.full(1 << 12, -1, dtype=np.int32)
        # the free-text path (unclustered.py): per-token hash and rigidity beside the token pool,
        # live slots grouped by token count for the kernel
        self._gate = FreeTextGate(free_text_window, free_text_share)
        self._unclustered_tid = None
        self._ntok = np.zeros(cap, dtype=np.int64)
        self._tt_hash = np.zeros(1 << 12, dtype=np.uint64)
        self._tt_rigid = np.zeros(1 << 12, dtype=np.bool_)
        self._live_ptr = np.zeros(2, dtype=np.int64)
        self._live_slots = np.zeros(0, dtype=np.int64)
        self._live_dirty = True

    # ------------------------------------------------------------ public API
    def __len__(self):
        return len(self._tid_slot)

    def template(self, tid):
        """The template text of id tid (live or archived), values written <*>."""
        slot = self._tid_slot.get(tid)
        if slot is not None:
            return _render(self._tokens[slot])
        if tid in self._archive:
            return _render(self._archive[tid][0])
        raise KeyError(tid)

    def templates(self):
        """[(tid, template, count)] of the live templates, by id."""
        return sorted((int(self._slot_tid[s]), _render(t), int(self._counts[s])) for s, t in self._tokens.items())

    def add_line(self, content):
        """Mine one message: (template_id, [(position, value), ...])."""
        line = content.encode("utf-8", "surrogateescape")
        buf = np.frombuffer(line, dtype=np.uint8)
        got = self.add_batch(buf, np.zeros(1, dtype=np.int64), np.array([len(line)], dtype=np.int64))
        values = [(int(p), line[a:b].decode("utf-8", "surrogateescape"))
                  for p, a, b in zip(got.param_pos, got.param_start, got.param_end)]
        return int(got.template_id[0]), values

    def add_batch(self, buf, starts, ends, sources=None):
        """Mine lines buf[starts[i]:ends[i]]; same ids and parameters as add_line line by line.

        sources: the source id of each line (int32, small non-negative ids), for the free-text
        judgement of unclustered.py; None is one source for all."""
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        n = len(starts)
        sources = np.zeros(n, np.int32) if sources is None else np.ascontiguousarray(sources, dtype=np.int32)
        self._gate.fit(sources)
        force = self.masking.force_mask(buf, starts, ends)
        hashes = mk.shape_hashes(buf, starts, ends, self._flags, force)
        slots = np.zeros(n, dtype=np.int32)
        tids = np.empty(n, dtype=np.int32)
        parts = []
        done = 0
        while done < n:
            miss = self._run(buf, starts, ends, force, hashes, sources, done, slots)
            self.stats.cache_hits += miss - done
            if miss > done:
                # params of the hits before a miss that may widen or evict their template
                parts.append(self._flush(buf, starts, ends, slots, tids, done, miss))
            if miss == n:
                break
            slots[miss] = self._resolve_miss(buf, starts[miss], ends[miss], int(hashes[miss]), force,
                                             self._clock + miss, int(sources[miss]))
            parts.append(self._flush(buf, starts, ends, slots, tids, miss, miss + 1))
            done = miss + 1
        self._gate.count(sources)
        self._clock += n
        self.stats.lines += n
        self.stats.templates = len(self._tid_slot)
        return _concat(tids, parts)

    def free_text_sources(self):
        """Source ids whose lines are judged free text now (see unclustered.py)."""
        return self._gate.free_sources()

    def extract(self, buf, starts, ends, template_ids):
        """Parameters of lines already mined, against the templates as they are now (no learning).

        For output written after a whole file (Loghub's ParameterList). Lines whose template
        has been evicted get no parameters.
        """
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
        tids = np.asarray(template_ids, dtype=np.int32)
        live = np.array([t in self._tid_slot for t in tids.tolist()], dtype=np.bool_)
        slots = np.array([self._tid_slot[t] for t in tids[live].tolist()], dtype=np.int32)
        counts = np.zeros(len(tids), dtype=np.int64)
        counts[live] = self._nwild[slots]
        ptr = np.zeros(len(tids) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        live_ptr = np.concatenate([[0], np.cumsum(self._nwild[slots])]).astype(np.int64)
        got = mk.extract_params(buf, np.asarray(starts, dtype=np.int64)[live], np.asarray(ends, dtype=np.int64)[live],
                                slots, self._tpl_first, self._tpl_nscan, self._tt_start, self._tt_end,
                                self._tt_marks, self._pool, self._max_marks, live_ptr)
        return MinedBatch(tids, ptr, *got)

    # ------------------------------------------------------------ batch internals
    def _flush(self, buf, starts, ends, slots, tids, lo, hi):
        seg = slots[lo:hi]
        tids[lo:hi] = self._slot_tid[seg]
        ptr = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(self._nwild[seg], out=ptr[1:])
        got = mk.extract_params(buf, starts[lo:hi], ends[lo:hi], seg, self._tpl_first, self._tpl_nscan,
                                self._tt_start, self._tt_end, self._tt_marks, self._pool, self._max_marks, ptr)
        return ptr, got

    def _run(self, buf, starts, ends, force, hashes, sources, first, slots):
        """Resolve lines from first on until one needs Python; return its index (n if none).

        Cache hits only, unless a source is free text: then the free-text kernel also reports the
        lines that no template could take as unclustered (the cache hits before them are counted as
        hits too, the unclustered ones as misses)."""
        if not self._gate.any_free():
            return mk.assign_slots(hashes, first, self._keys, self._vals, self._counts, self._last_seen,
                                   self._clock, slots)
        unclustered = self._unclustered_slot()
        if self._live_dirty:
            self._group_live()
        gate = self._gate
        stop, made = uk.free_text_run((buf, starts, ends, force, hashes, sources), self._flags, first,
                                      (self._keys, self._vals, self._counts, self._last_seen),
                                      (self._live_ptr, self._live_slots, self._tpl_first, self._tt_hash,
                                       self._tt_rigid), (gate.free, gate.seen, gate.unmatched),
                                      unclustered, self._clock, slots)
        self.stats.unclustered += made
        self.stats.cache_hits -= made
        self.stats.cache_misses += made
        return stop

    def _group_live(self):
        """Live slots (the unclustered one apart) ordered by token count, with offsets per count."""
        live = np.array(sorted(s for s in self._tokens if self._slot_tid[s] != self._unclustered_tid), np.int64)
        ntok = self._ntok[live]
        order = np.argsort(ntok, kind="stable")
        width = int(ntok.max()) if len(live) else 0
        self._live_slots = live[order]
        self._live_ptr = np.searchsorted(ntok[order], np.arange(width + 2)).astype(np.int64)
        self._live_dirty = False

    def _resolve_miss(self, buf, start, end, shape, force, now, source=0):
        self.stats.cache_misses += 1
        slot = self._shapes.get(shape)
        if slot is None:
            slot = self._place(bytes(buf[start:end]), bytes(force[start:end]) if len(force) else b"", shape, source)
        self._counts[slot] += 1
        self._last_seen[slot] = now
        return slot

    def _unclustered_slot(self):
        """The slot of the reserved unclustered template, opened (or revived) when first needed."""
        tid = self._unclustered_tid
        if tid is not None and tid in self._tid_slot:
            return self._tid_slot[tid]
        if tid is not None and tid in self._archive:
            return self._revive(tid)
        self._unclustered_tid = self._next_id
        self._next_id += 1
        return self._open([UNCLUSTERED_TEXT.encode()], self._unclustered_tid, 0)

    def _place(self, line, force, shape, source=0):
        masked = _masked(line, self._flags, force)
        tokens = masked.split(bytes([mk.SEP])) if masked else []
        tid = self._archived_shapes.get(shape)
        if tid is not None and tid in self._archive:
            slot = self._revive(tid)
            widened, _ = join_template(self._tokens[slot], tokens, 0.0)
            if widened is not None and widened != self._tokens[slot]:
                self._widen(slot, widened)
        else:
            slot = self._match_live(tokens)
            if slot is None:
                slot = self._match_archive(tokens)
            if slot is None:
                self._gate.unmatched_line(source)
                if self._gate.is_free(source) and not self._gate.seen_before(shape):
                    self.stats.unclustered += 1
                    return self._unclustered_slot()    # its shape is not cached: a repeat must come back here
                slot = self._open(tokens, self._next_id, 0)
                self._next_id += 1
        self._remember_shape(shape, slot)
        return slot

    def _match_live(self, tokens):
        index = self._by_len.get(len(tokens))
        if index is None or not index.slots:
            return None
        for slot in index.candidates(_token_hashes(tokens, True), lambda slots: self._slot_tid[slots]):
            widened, _ = join_template(self._tokens[slot], tokens, self.similarity)
            if widened is not None:
                if widened != self._tokens[slot]:
                    self._widen(slot, widened)
                return slot
        return None

    def _match_archive(self, tokens):
        """The archived template that takes the line (most equal tokens, then oldest), revived; or None."""
        index = self._archive_by_len.get(len(tokens))
        if index is None or not index.slots:
            return None
        for tid in index.candidates(_token_hashes(tokens, True), lambda tids: tids):
            widened, _ = join_template(self._archive[tid][0], tokens, self.similarity)
            if widened is not None:
                slot = self._revive(tid)
                if widened != self._tokens[slot]:
                    self._widen(slot, widened)
                return slot
        return None

    # ------------------------------------------------------------ template store
    def _open(self, tokens, tid, count, last_seen=None):
        if not self._free:
            self._evict()
        slot = self._free.pop()
        self._slot_tid[slot] = tid
        self._counts[slot] = count
        self._last_seen[slot] = self._clock if last_seen is None else last_seen
        self._tid_slot[tid] = slot
        self._slot_shapes[slot] = []
        self._set_tokens(slot, list(tokens))
        return slot

    def _widen(self, slot, tokens):
        if not _keeps_values(self._tokens[slot], tokens):
            self._widened.add(int(self._slot_tid[slot]))
        self._set_tokens(slot, tokens)

    def take_widened(self):
        """Ids of templates whose parameters changed meaning since the last call (a constant became
        a value, shifting the positions after it, or a token with several values changed): what
        was learned about their parameters starts again. Widening a token's one value
        (`host=db-replica-<*>` to `host=db-<*>`) keeps positions and values (a value is known by
        its whole token, see miner_kernels.extract_params) and is not reported."""
        widened, self._widened = sorted(self._widened), set()
        return widened

    def _set_tokens(self, slot, tokens):
        self._tokens[slot] = tokens
        if self._slot_tid[slot] != self._unclustered_tid:
            self._by_len.setdefault(len(tokens), _LengthIndex(len(tokens))).put(slot, tokens)
        self._ntok[slot] = len(tokens)
        self._live_dirty = True
        self._nwild[slot] = sum(t.count(mk.MARK) for t in tokens)
        self._max_marks = max([self._max_marks] + [t.count(mk.MARK) for t in tokens])
        need = sum(len(t) for t in tokens)
        if self._pool_used + need > len(self._pool) or self._tt_used + len(tokens) > len(self._tt_start):
            self._compact(need, len(tokens))
        self._write_tokens(slot, tokens)

    def _write_tokens(self, slot, tokens):
        marks = [t.count(mk.MARK) for t in tokens]
        # parameter extraction walks tokens only up to the last one holding a wildcard
        self._tpl_nscan[slot] = max([k + 1 for k, c in enumerate(marks) if c] + [0])
        self._tpl_first[slot] = self._tt_used
        if tokens:
            self._tt_hash[self._tt_used:self._tt_used + len(tokens)] = _token_hashes(tokens, False)
            self._tt_rigid[self._tt_used:self._tt_used + len(tokens)] = [t.isalnum() and t.isascii() for t in tokens]
        for t, c in zip(tokens, marks):
            self._pool[self._pool_used:self._pool_used + len(t)] = np.frombuffer(t, dtype=np.uint8)
            self._tt_start[self._tt_used] = self._pool_used
            self._tt_end[self._tt_used] = self._pool_used + len(t)
            self._tt_marks[self._tt_used] = c
            self._pool_used += len(t)
            self._tt_used += 1

    def _compact(self, need, ntok):
        # Widening leaves old token bytes behind; rewrite the live ones, doubling room as needed.
        live = sum(len(t) for s, toks in self._tokens.items() for t in toks) + need
        live_tok = sum(len(toks) for toks in self._tokens.values()) + ntok
        self._pool = np.zeros(max(1 << 16, 2 * live), dtype=np.uint8)
        self._tt_start = np.zeros(max(1 << 12, 2 * live_tok), dtype=np.int64)
        self._tt_end = np.zeros_like(self._tt_start)
        self._tt_marks = np.zeros_like(self._tt_start)
        self._tt_hash = np.zeros(len(self._tt_start), dtype=np.uint64)
        self._tt_rigid = np.zeros(len(self._tt_start), dtype=np.bool_)
        self._pool_used = self._tt_used = 0
        for slot, toks in list(self._tokens.items()):
            self._write_tokens(slot, toks)

    def _evict(self):
        live = np.array(sorted(self._tokens), dtype=np.int64)
        chunk = max(1, self.max_templates // 16)
        victims = live[np.argsort(self._last_seen[live], kind="stable")[:chunk]]
        for slot in victims.tolist():
            self._archive_one(slot)
        self._rebuild_table()

    def _archive_one(self, slot):
        tid = int(self._slot_tid[slot])
        tokens = self._tokens.pop(slot)
        self._live_dirty = True
        self._archive[tid] = (tokens, int(self._counts[slot]), int(self._last_seen[slot]))
        if tid != self._unclustered_tid:
            self._by_len[len(tokens)].drop(slot)
            self._archive_by_len.setdefault(len(tokens), _LengthIndex(len(tokens))).put(tid, tokens)
        for shape in self._slot_shapes.pop(slot, []):
            self._shapes.pop(shape, None)
            self._archived_shapes[shape] = tid
        del self._tid_slot[tid]
        self._slot_tid[slot] = -1
        self._free.append(slot)
        self.stats.evictions += 1
        while len(self._archive) > self.archive_size:
            old_tid, (old_tokens, _, _) = self._archive.popitem(last=False)
            self._unarchive(old_tid, old_tokens)
        if len(self._archived_shapes) > self.max_shapes:
            self._archived_shapes = {h: t for h, t in self._archived_shapes.items() if t in self._archive}

    def _unarchive(self, tid, tokens):
        index = self._archive_by_len.get(len(tokens))
        if index is not None and tid in index:
            index.drop(tid)

    def _revive(self, tid):
        tokens, count, last_seen = self._archive.pop(tid)
        self._unarchive(tid, tokens)
        self.stats.revivals += 1
        return self._open(tokens, tid, count, last_seen)

    # ------------------------------------------------------------ shape cache
    def _remember_shape(self, shape, slot):
        if len(self._shapes) >= self.max_shapes:
            self._shapes.clear()
            for shapes in self._slot_shapes.values():
                shapes.clear()
            self._rebuild_table()
        self._shapes[shape] = slot
        self._slot_shapes[slot].append(shape)
        self._archived_shapes.pop(shape, None)
        if 2 * len(self._shapes) > len(self._keys):
            self._rebuild_table()
        else:
            mk.table_put(self._keys, self._vals, np.uint64(shape), np.int32(slot))

    def _rebuild_table(self):
        cap = 1 << 12
        while cap < 2 * len(self._shapes) + 2:
            cap *= 2
        self._keys = np.zeros(cap, dtype=np.uint64)
        self._vals = np.full(cap, -1, dtype=np.int32)
        for shape, slot in self._shapes.items():
            mk.table_put(self._keys, self._vals, np.uint64(shape), np.int32(slot))

    # ------------------------------------------------------------ persistence
    def to_state(self):
        """A JSON-ready dict of everything needed to give the same lines the same ids later."""
        def enc(tokens):
            return [t.decode("latin-1") for t in tokens]
        live = []
        for slot, toks in self._tokens.items():
            live.append([int(self._slot_tid[slot]), enc(toks), int(self._counts[slot]),
                         int(self._last_seen[slot]), [str(h) for h in self._slot_shapes.get(slot, [])]])
        live.sort(key=lambda row: row[3])
        return {
            "next_id": self._next_id, "clock": self._clock, "saved_at": time.time(),
            "unclustered_id": self._unclustered_tid,
            "masking": self.masking.to_dict(), "similarity": self.similarity,
            "templates": live,
            "archive": [[tid, enc(t), c, ls] for tid, (t, c, ls) in self._archive.items()],
            "archived_shapes": [[str(h), tid] for h, tid in self._archived_shapes.items()],
            "stats": vars(self.stats),
        }

    @classmethod
    def from_state(cls, state, **settings):
        settings.setdefault("similarity", state.get("similarity", 0.5))
        if "masking" not in settings and "masking" in state:
            settings["masking"] = MaskingConfig.from_dict(state["masking"])
        miner = cls(**settings)
        miner._next_id = int(state["next_id"])
        miner._clock = int(state["clock"])
        if state.get("unclustered_id") is not None:
            miner._unclustered_tid = int(state["unclustered_id"])
        for tid, toks, count, last_seen in state.get("archive", []):
            tokens = [t.encode("latin-1") for t in toks]
            miner._archive[int(tid)] = (tokens, int(count), int(last_seen))
            if int(tid) != miner._unclustered_tid:
                miner._archive_by_len.setdefault(len(tokens), _LengthIndex(len(tokens))).put(int(tid), tokens)
        for shape, tid in state.get("archived_shapes", []):
            miner._archived_shapes[int(shape)] = int(tid)
        # oldest first, so that a smaller max_templates archives the least recent ones
        for tid, toks, count, last_seen, shapes in state["templates"]:
            slot = miner._open([t.encode("latin-1") for t in toks], int(tid), int(count), int(last_seen))
            for shape in shapes:
                miner._remember_shape(int(shape), slot)
        for key, value in state.get("stats", {}).items():
            if hasattr(miner.stats, key):
                setattr(miner.stats, key, value)
        miner.stats.templates = len(miner)
        return miner

    def save(self, path):
        """Write the miner atomically (checksummed JSON snapshot, previous one kept as .prev)."""
        write_json_snapshot(path, SNAPSHOT_KIND, SNAPSHOT_VERSION, self.to_state())

    @classmethod
    def load(cls, path, **settings):
        """A miner from a snapshot at path (or its .prev); a new empty one when neither exists or
        neither has the shape of a miner's state (set aside and logged by storage.atomic)."""
        def restore(_version, state):
            require(isinstance(state, dict), "not an object")
            for key in ("next_id", "clock", "templates"):
                require(key in state, "no %r" % key)
            require(isinstance(state["templates"], list), "'templates' is not a list")
            for row in state["templates"]:
                require(isinstance(row, list) and len(row) == 5 and isinstance(row[1], list),
                        "a template row is not [id, tokens, count, last_seen, shapes]")
            return cls.from_state(state, **settings)
        miner = restore_json_snapshot(path, SNAPSHOT_KIND, SNAPSHOT_VERSION, restore)
        return cls(**settings) if miner is None else miner


def _best_rows(equal, tids, limit=MATCH_TRIES):
    """Rows with some equal token, most equal first (then oldest id), at most limit of them: a line
    that fits none of the best few fits none of the rest often enough that trying them all (the cost
    of a line growing with the templates) is not worth it."""
    rows = np.flatnonzero(equal)
    if len(rows) > limit:
        cut = np.partition(equal[rows], len(rows) - limit)[len(rows) - limit]    # the limit-th most equal
        above, tied = rows[equal[rows] > cut], rows[equal[rows] == cut]
        room = limit - len(above)
        if len(tied) > room:
            tied = tied[np.argpartition(tids[tied], room - 1)[:room]]
        rows = np.concatenate([above, tied])
    return rows[np.lexsort((tids[rows], -equal[rows]))]


def _render(tokens):
    return b" ".join(tokens).replace(M, WILDCARD.encode()).decode("utf-8", "replace")


def _concat(tids, parts):
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return MinedBatch(tids, np.zeros(len(tids) + 1, dtype=np.int64), np.zeros(0, dtype=np.int16),
                          np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.float64), empty, empty.copy())
    ptrs, offset = [np.zeros(1, dtype=np.int64)], 0
    for ptr, _ in parts:
        ptrs.append(ptr[1:] + offset)
        offset += int(ptr[-1])
    cols = list(zip(*(got for _, got in parts)))
    return MinedBatch(tids, np.concatenate(ptrs), *(np.concatenate(c) for c in cols))
