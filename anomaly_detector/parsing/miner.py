"""Online template miner: groups log messages into templates with stable ids and typed parameters.

Fed by the parsing stage (framing/headers give byte spans); its ids and parameters fill
batch.ParsedBatch for the detection tiers. Hot loops are in miner_kernels.py (numba).

How a line finds its template
  1. A numba pass masks every token's values (masking.py) and hashes the masked line:
     its "shape". A numpy hash table maps known shapes to templates; hits never touch Python.
  2. A miss (a shape not seen before) is matched in Python against the live templates with
     the same number of tokens. A template token is a glob (literal text and <*>); a line
     token joins it when the glob matches, or when the two differ only where one side holds
     a value (a masked run, an empty slot after a delimiter, or a dotted/slashed name),
     in which case the template widens there. One line's differing plain words
     ("VM Started" / "VM Paused") never widen (step 5 judges words). Of the templates that
     accept the line, the one with most literally equal tokens wins; at least one token must
     be equal and equal tokens must be at least `similarity` of equal + widened ones.
  3. Then the archive (see Eviction policy).
  4. Spans: a line of another token count joins a template whose words it shares when they
     differ only in runs of value-only tokens (values and punctuation, no literal word; a
     duration unit word after a value counts with it): "IRQs 3 4" / "IRQs 3 4 5 6 7",
     "bytes (1.2 KB) sent" / "bytes sent", "lifetime 00:01" / "lifetime <1 sec". Such a run
     becomes one span token (<*>), whose value is the whole run, empty when there is none
     (miner_kernels.span_tokens). Candidates come from an inverted index of words and are
     bounded (SPAN_CANDIDATES, SPAN_POSTINGS, SPAN_STEPS), so a line's cost does not grow
     with the number of templates. Otherwise a new template is opened.
  5. Siblings: templates that agree on every token but one word (the "skeleton" index,
     _Siblings) merge into the oldest of them, widened there, once that position holds
     `sibling_values` (5) different words, or shares `shared_values` (3) of its words with
     another such position: "Failed password for root|admin|ftp|guest|oracle ..." is one
     event with a user, although "root" repeats hundreds of times; "session opened|closed
     for user cyrus|news|test" are two events with users (words compare by their value part:
     "user=root" shares "root"). Four words stay four events
     (VM Started / Paused / Resumed / Stopped). The rest of the templates must hold at least
     `sibling_literals` (3) more words. These thresholds were chosen by cross-validation over
     two halves of the Loghub samples (bench/parse_bench.py --cv).

Free text (unclustered.py)
  A source whose lines mostly join no template is judged free text; its lines that join no
  live or archived template are given the reserved template <unclustered> instead of a new
  one each (a shape that comes back opens a template as usual). Shape-cache hits and such
  lines are resolved by one kernel (unclustered_kernels.free_text_run) without Python.

Ids are non-negative int32, given in creation order and never reused. A miner given the deployment's
vocabulary (parsing/vocabulary.py; the daemon's workers) takes each new template's id from it, by
its text, and registers each text a template widens to under its id; adopt() seeds it with the
templates other workers mined, so a line gets the same id in every worker. A template that widens
(a value, or a span, where it had a word or a run) keeps its id; the shape cache and a reload
(save/load) give the same line the same id. A template merged into a sibling gives its id up:
current_id()/current_ids() map it to the survivor (as do template() and extract()), its shapes
now lead to the survivor, the alias is saved with the miner (at most max(archive_size,
max_templates) aliases, oldest dropped first), and take_widened() reports both ids.
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
import heapq
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import numpy as np

from anomaly_detector.parsing import miner_kernels as mk
from anomaly_detector.parsing import unclustered_kernels as uk
from anomaly_detector.parsing.masking import WILDCARD, MaskingConfig
from anomaly_detector.parsing.unclustered import UNCLUSTERED_TEXT, FreeTextGate
from anomaly_detector.storage.atomic import require, restore_json_snapshot, write_json_snapshot

M = bytes([mk.MARK])
S = mk.SPAN
SNAPSHOT_KIND = "templates"
SNAPSHOT_VERSION = 1
_DELIMS = b"./"
# Sibling rules (see _Siblings), chosen by cross-validation: bench/parse_bench.py --cv.
SIBLING_VALUES = 5
SHARED_VALUES = 3
SIBLING_LITERALS = 3
SPAN_CANDIDATES = 8  # templates a line of a new token count is joined against, most equal words first
SPAN_WORDS = 2       # how many more or fewer words such a template may have
SPAN_POSTINGS = 128  # index entries one line reads to rank candidates
SPAN_STEPS = 400     # bound of one such join's search (and of the token runs it takes)
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
    merges: int = 0
    adopted: int = 0        # templates taken from the deployment's vocabulary (adopt)


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
    if a == S or b == S:
        # a span takes any value-only token; it never stands for a word
        if _value_only(a if b == S else b) or (a == S and b == S):
            return S, a != S
        return None, False
    if M in a and mk.glob_capture_slow_path(b, a) is not None:
        return a, False
    if a == M or b == M:
        return M, True
    pre, ma, mb, suf = _absorb_marks(*_split_common(a, b))
    if (M in ma and M in mb) or ma == M or mb == M:
        return pre + M + suf, True
    if not ma or not mb:
        # an empty slot is a value only between delimiters: "user=" / "user=root", "()" / "(x)";
        # the token's start is none: a word glued before "(uid=0)" names a call, it is no value
        if pre and not _alnum(pre[-1]) and (not suf or not _alnum(suf[0])):
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


_NOT_ALNUM = bytes(c for c in range(256) if not _alnum(c))
_NOT_ALPHA = bytes(c for c in range(256) if not (65 <= c <= 90 or 97 <= c <= 122))


def _value_only(token):
    """Values and punctuation only, no literal letter or digit (miner_kernels._value_only); a span too."""
    return token == S or (M in token and not token.translate(None, _NOT_ALNUM))


def _runs(tokens):
    """Maximal runs of value-only tokens (each value with the duration unit word it may have, "<1
    sec") and the other tokens one by one, as [start << 1 | is a run]; a segment ends where the
    next starts (or at len(tokens)). Plain ints: a long line makes many, and tuples or lists of
    them would cost the garbage collector."""
    out = []
    run = False
    for k, t in enumerate(tokens):
        if _value_only(t) or (run and t in mk._LONE_DURATION_WORDS and tokens[k - 1][-1:] == M):
            if not run:
                out.append(k << 1 | 1)
                run = True
            continue
        out.append(k << 1)
        run = False
    return out


def _segments(tokens):
    """[(is a run, tokens)] of _runs."""
    starts = _runs(tokens)
    ends = [s >> 1 for s in starts[1:]] + [len(tokens)]
    return [(bool(s & 1), tokens[s >> 1:e]) for s, e in zip(starts, ends)]


def _join_region(a, b):
    """Join two runs of value-only tokens: ([tokens], widened). Runs of one length join token by
    token; otherwise, or when a pair does not join, the run becomes one span."""
    if len(a) == len(b) and S not in a and S not in b:
        out, widened = [], 0
        for x, y in zip(a, b):
            g, w = generalise(x, y)
            if g is None:
                break
            out.append(g)
            widened += w
        else:
            return out, widened
    if not a and not b:
        return [], 0
    return [S], int(a != [S])


def join_spans(template, tokens, similarity):
    """join_template for a line whose token count differs from the template's. Tokens pair up in
    order, except that a run of values may join a run of another length, or nothing, as one span
    ("IRQs 3 4" / "IRQs 3 4 5 6", "bytes (1.2 KB) sent" / "bytes sent"): the first such
    alignment found, searching at most SPAN_STEPS steps. (None, 0) if none fits."""
    if len(template) + len(tokens) > 2 * SPAN_STEPS:
        return None, 0
    a, b = _segments(template), _segments(tokens)
    if len(a) + len(b) > SPAN_STEPS:
        return None, 0
    got = _align(a, b, 0, 0, {}, [SPAN_STEPS])
    if got is None:
        return None, 0
    new, exact, widened = got
    if exact == 0 or exact < similarity * (exact + widened):
        return None, 0
    return settle_spans(new), exact


def _align(a, b, i, j, memo, budget):
    """(tokens, exact, widened) joining run segments a[i:] and b[j:] (see _runs), or None."""
    key = (i, j)
    if key in memo:
        return memo[key]
    budget[0] -= 1
    if budget[0] < 0:
        return None
    if i == len(a) and j == len(b):
        return [], 0, 0
    got = None
    if i < len(a) and j < len(b):
        (run_a, ta), (run_b, tb) = a[i], b[j]
        if run_a and run_b:
            joined, w = _join_region(ta, tb)
            got = _then(joined, 0, w, _align(a, b, i + 1, j + 1, memo, budget))
        elif len(ta) == 1 and len(tb) == 1 and (run_a == run_b or i == j):
            # two words pair up as join_template pairs them; a lone value and a word only where no
            # run was skipped before (else '"GET' would pair with the address before '"POST')
            g, w = generalise(ta[0], tb[0])
            if g is not None:
                exact = int(ta[0] == tb[0] and ta[0] != M and not run_a)
                got = _then([g], exact, w, _align(a, b, i + 1, j + 1, memo, budget))
    if got is None and i < len(a) and a[i][0]:
        got = _then([S], 0, int(a[i][1] != [S]), _align(a, b, i + 1, j, memo, budget))
    if got is None and j < len(b) and b[j][0]:
        got = _then([S], 0, 1, _align(a, b, i, j + 1, memo, budget))
    memo[key] = got
    return got


def _then(head, exact, widened, rest):
    if rest is None:
        return None
    return head + rest[0], exact + rest[1], widened + rest[2]


def settle_spans(tokens):
    """A value run holding a span becomes that one span, as parameter extraction reads it (a span
    takes every value-only token it meets, see miner_kernels.span_tokens)."""
    out = []
    for is_run, toks in _segments(tokens):
        out += [S] if is_run and S in toks else toks
    return out


def word_tokens(tokens):
    """The tokens outside value runs: what the span index compares."""
    return [tokens[s >> 1] for s in _runs(tokens) if not s & 1]


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
    return (settle_spans(new) if S in new else new), exact


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
    bare = np.fromiter((t == M or t == S for t in tokens), np.bool_, len(tokens))
    hashes[bare] = 1 if line_side else 0
    return hashes


def _masked(line, flags, force):
    """The masked form of one new line by the mask_line kernel (its Python twin took ~3 us a byte)."""
    buf = np.frombuffer(line, np.uint8)
    out = np.empty(len(line) + 1, np.uint8)
    # A writable copy: mask_line is compiled for a writable mark array, and workers cannot compile
    # another version after they fork (bytes would give a read-only view).
    forced = np.frombuffer(bytearray(force), np.uint8) if force else np.zeros(0, np.uint8)
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


# ---------------------------------------------------------------- sibling templates
def _word_wildcard(words):
    """One token for the different words of a position: their common prefix and suffix kept up to a
    delimiter ("user=root", "user=ftp" -> "user=<*>"; "cyrus", "news" -> "<*>")."""
    words = list(words)
    first = words[0]
    p = 0
    while p < len(first) and all(len(w) > p and w[p] == first[p] for w in words):
        p += 1
    while p and _alnum(first[p - 1]):
        p -= 1
    s = 0
    while s < len(first) - p and all(len(w) - p > s and w[-1 - s] == first[-1 - s] for w in words):
        s += 1
    while s and _alnum(first[len(first) - s]):
        s -= 1
    return first[:p] + M + first[len(first) - s:]


class _Siblings:
    """Templates that agree on every token but one plain word: the "skeleton" index.

    A key is (position, the other tokens); its group maps slot -> the word there. A position
    whose word varies across otherwise identical templates is a value when the group holds
    `min_values` different words, or when it shares `shared_values` of its words with another
    such group (user names recur across events: "session opened for user X", "... closed ...
    X"), even though each word repeats. Both counts were chosen by cross-validation over two
    halves of the Loghub samples (bench/parse_bench.py --cv).
    """

    def __init__(self, tokens_of, min_values, shared_values, min_literals):
        self.tokens_of = tokens_of  # slot -> tokens: the miner's live templates
        self.min_values = min_values
        self.shared_values = shared_values
        self.min_literals = min_literals
        # Most keys have one template: kept as a bare slot, a group dict only from the second on
        # (the index holds a key per word of every live template).
        self.single = {}        # key -> slot
        self.multi = {}         # key -> (position, {slot: word})
        self.word_keys = {}     # word -> set of multi keys holding it
        self.grown = False      # a group gained a member since the miner last looked (ripe)

    def keys(self, tokens):
        """(positions, keys) of the words of tokens, when the rest holds enough words (two lists of
        ints: no container per token for the garbage collector)."""
        literal = [k for k, t in enumerate(tokens) if _is_word(t)]
        if len(literal) <= self.min_literals:
            return [], []
        # key of position p: the tokens before and after it, by running hashes (linear in the
        # token count; a tuple of the rest per position was quadratic on long lines)
        before, h = [], 0
        for t in tokens:
            before.append(h)
            h = hash((h, t))
        after, h = [0] * len(tokens), 0
        for k in range(len(tokens) - 1, -1, -1):
            after[k] = h
            h = hash((h, tokens[k]))
        return literal, [hash((p, len(tokens), before[p], after[p])) for p in literal]

    def add(self, slot, tokens):
        for p, key in zip(*self.keys(tokens)):
            if key in self.multi:
                self.multi[key][1][slot] = tokens[p]
                self.word_keys.setdefault(_core(tokens[p]), set()).add(key)
                self.grown = True
            elif key in self.single:
                self.grown = True
                other = self.single.pop(key)
                group = {other: self.tokens_of[other][p], slot: tokens[p]}
                self.multi[key] = (p, group)
                for w in group.values():
                    self.word_keys.setdefault(_core(w), set()).add(key)
            else:
                self.single[key] = slot

    def remove(self, slot, tokens):
        for key in self.keys(tokens)[1]:
            if self.single.get(key) == slot:
                del self.single[key]
                continue
            group = self.multi[key][1]
            word = group.pop(slot)
            if len(group) == 1:
                del self.multi[key]
                other, _ = group.popitem()
                self.single[key] = other
                for w in {word, _}:
                    self._forget(_core(w), key)
            elif _core(word) not in {_core(w) for w in group.values()}:
                self._forget(_core(word), key)

    def _forget(self, core, key):
        keys = self.word_keys.get(core)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.word_keys[core]

    def ripe(self, tokens):
        """[(position, slots)] of the groups of a template (its tokens) that hold a value position,
        largest first, with the groups whose words they share (merged together, or the first merge
        would leave its partner with nothing to share)."""
        out = {}
        for key in self.keys(tokens)[1]:
            if key not in self.multi:
                continue
            group = self.multi[key][1]
            partners = self._partners(key, group)
            if len(group) >= self.min_values or partners:
                for k in [key] + partners:
                    p, members = self.multi[k]
                    out[k] = (len(members), p, sorted(members))
        return [(p, slots) for _, p, slots in sorted(out.values(), reverse=True)]

    def _partners(self, key, group):
        # words compare by their core: "user=root" holds the same value as "root"
        words = {_core(w) for w in group.values()}
        others = set()
        for w in words:
            others |= self.word_keys.get(w, set())
        others.discard(key)
        return [other for other in others
                if len(words & {_core(w) for w in self.multi[other][1].values()}) >= self.shared_values]


def _core(word):
    """The value part of a word token: after its last "=" or ":", without the punctuation around
    it ('user=root' -> 'root', 'tag="AudioMix",' -> 'AudioMix'); the word when that leaves none."""
    for d in (b"=", b":"):
        if d in word and word.rsplit(d, 1)[1].translate(None, _NOT_ALNUM):
            word = word.rsplit(d, 1)[1]
    core = word.strip(_NOT_ALNUM)
    return core or word


def _is_word(token):
    """A literal token with a letter in it (punctuation alone, values and gaps are not words)."""
    return M not in token and bool(token.translate(None, _NOT_ALPHA))


# ---------------------------------------------------------------- the miner
class TemplateMiner:
    """See the module docstring. Not thread-safe: one miner per worker."""

    def __init__(self, max_templates=10000, masking=None, similarity=0.5, max_shapes=None, archive_size=None,
                 free_text_window=1000, free_text_share=0.5, sibling_values=SIBLING_VALUES,
                 shared_values=SHARED_VALUES, sibling_literals=SIBLING_LITERALS, span_words=SPAN_WORDS,
                 vocabulary=None):
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
        # parsing/vocabulary.py: the deployment's ids (None: this miner numbers its templates itself)
        self.vocabulary = vocabulary
        self._adopted = set()   # archived ids taken from the vocabulary, not learned here
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
        self._texts = {}           # slot -> (copy of the tokens, their text): see _slot_text
        self._tid_slot = {}        # tid -> slot
        self._by_len = {}          # token count -> _LengthIndex
        self._shapes = {}          # shape hash -> slot
        self._slot_shapes = {}     # slot -> [shape hash]
        self._archive = OrderedDict()          # tid -> (tokens, count, last_seen), oldest eviction first
        self._archived_at = {}                 # tid -> wall time of its eviction (prune_archive)
        self._widened = set()                  # tids whose text changed since take_widened()
        self._archived_shapes = {}             # shape hash -> tid
        self._archive_by_len = {}              # token count -> _LengthIndex of archived ids
        self._siblings = _Siblings(self._tokens, sibling_values, shared_values, sibling_literals)
        self.span_words = int(span_words)      # -1: lines of another token count never join (no spans)
        self._alias = OrderedDict()            # tid of a template merged into a sibling -> the sibling's tid
        self._word_slots = {}                  # word token -> slots of the templates holding it
        self._word_count = {}                  # slot -> its count of word tokens (see word_tokens)
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
        """The template text of id tid (live or archived), values written <*>; for an id merged into a
        sibling, the sibling's."""
        tid = self.current_id(tid)
        slot = self._tid_slot.get(tid)
        if slot is not None:
            return self._slot_text(slot)
        if tid in self._archive:
            return _render(self._archive[tid][0])
        raise KeyError(tid)

    def _slot_text(self, slot):
        # Every batch's records name the text of each template they hold (replay renders ~100 a batch)
        # while a template changes rarely: keep the text beside a copy of the tokens it was rendered
        # from, so a widened template or a reused slot (other tokens) is rendered afresh.
        tokens = self._tokens[slot]
        kept = self._texts.get(slot)
        if kept is None or kept[0] != tokens:
            kept = (list(tokens), _render(tokens))
            self._texts[slot] = kept
        return kept[1]

    def current_id(self, tid):
        """The id that now stands for tid: its own, or that of the sibling it was merged into."""
        tid = int(tid)
        while tid in self._alias:
            tid = self._alias[tid]
        return tid

    def current_ids(self, tids):
        """current_id of each id of an array (ids given before a merge, mapped to the survivor)."""
        tids = np.asarray(tids, dtype=np.int32)
        if not self._alias or not len(tids):
            return tids
        uniq, inv = np.unique(tids, return_inverse=True)
        return np.array([self.current_id(t) for t in uniq.tolist()], dtype=np.int32)[inv].reshape(tids.shape)

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
                parts.append(self._flush(buf, starts, ends, slots, tids, done, miss, force))
            if miss == n:
                break
            slots[miss] = self._resolve_miss(buf, starts[miss], ends[miss], int(hashes[miss]), force,
                                             self._clock + miss, int(sources[miss]))
            parts.append(self._flush(buf, starts, ends, slots, tids, miss, miss + 1, force))
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

        For output written after a whole file (Loghub's ParameterList). Ids of templates merged
        into a sibling come back as the sibling's (current_ids). Lines whose template has been
        evicted get no parameters.
        """
        buf = np.ascontiguousarray(buf, dtype=np.uint8)
        tids = self.current_ids(template_ids)
        live = np.array([t in self._tid_slot for t in tids.tolist()], dtype=np.bool_)
        slots = np.array([self._tid_slot[t] for t in tids[live].tolist()], dtype=np.int32)
        counts = np.zeros(len(tids), dtype=np.int64)
        counts[live] = self._nwild[slots]
        ptr = np.zeros(len(tids) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        live_ptr = np.concatenate([[0], np.cumsum(self._nwild[slots])]).astype(np.int64)
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        force = self.masking.force_mask(buf, starts, ends)
        got = mk.extract_params(buf, starts[live], ends[live], slots, self._tpl_first, self._tpl_nscan,
                                self._tt_start, self._tt_end, self._tt_marks, self._pool, self._max_marks, live_ptr,
                                self._flags, force)
        return MinedBatch(tids, ptr, *got)

    # ------------------------------------------------------------ batch internals
    def _flush(self, buf, starts, ends, slots, tids, lo, hi, force):
        seg = slots[lo:hi]
        tids[lo:hi] = self._slot_tid[seg]
        ptr = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(self._nwild[seg], out=ptr[1:])
        got = mk.extract_params(buf, starts[lo:hi], ends[lo:hi], seg, self._tpl_first, self._tpl_nscan,
                                self._tt_start, self._tt_end, self._tt_marks, self._pool, self._max_marks, ptr,
                                self._flags, force)
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
        text = buf.view()
        text.flags.writeable = False    # the kernel's one signature types the buffer read-only
        stop, made = uk.free_text_run((text, starts, ends, force, hashes, sources), self._flags, first,
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
        self._unclustered_tid = self._new_id([UNCLUSTERED_TEXT.encode()], reserved=True)
        return self._open([UNCLUSTERED_TEXT.encode()], self._unclustered_tid, 0)

    def _new_id(self, tokens, reserved=False):
        """The id of a template opened now: the next of this miner's own, or, with a vocabulary, the
        deployment's id of its text (None when the vocabulary is full; the reserved <unclustered> then
        still gets one of the vocabulary's, registered when it was created)."""
        if self.vocabulary is None:
            self._next_id += 1
            return self._next_id - 1
        if reserved:
            tid = self.vocabulary.lookup(tokens)
            if tid is not None and not self._uses(tid):
                return tid
        tid = self.vocabulary.assign(tokens, taken=_Taken(self))
        if tid is None and reserved:    # full or away: the vocabulary's first entry is the reserved template
            tid = 0
        if tid is not None:
            self._next_id = max(self._next_id, tid + 1)
        return tid

    def _uses(self, tid):
        return tid in self._tid_slot or tid in self._archive or tid in self._alias

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
                slot = self._match_spans(tokens)
            if slot is None:
                self._gate.unmatched_line(source)
                if self._gate.is_free(source) and not self._gate.seen_before(shape):
                    self.stats.unclustered += 1
                    return self._unclustered_slot()    # its shape is not cached: a repeat must come back here
                tid = self._new_id(tokens)
                if tid is None:     # the deployment's vocabulary is full: reported as unclustered
                    self.stats.unclustered += 1
                    return self._unclustered_slot()
                slot = self._open(tokens, tid, 0)
        slot = self._settle(slot, tokens)
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
        if self.vocabulary is not None:     # keeps its id; other workers adopt the wider text under it
            self.vocabulary.note_widened(tokens, int(self._slot_tid[slot]))

    def adopt(self, entries):
        """Take templates of the deployment's vocabulary this miner does not have ([(id, tokens)], as
        Vocabulary.take_new gives them) into the archive: a line that matches one revives it under its
        id (step 3), as it would an evicted template of its own, instead of opening a template under
        another id. A later text of an adopted id replaces the earlier one. Ids this miner uses (live,
        archived, merged) are left alone: its own text wins. Adoption stops while the archive is full
        (it never pushes out templates this miner learned). Returns how many were taken."""
        taken = 0
        for tid, tokens in entries:
            tid, tokens = int(tid), list(tokens)
            if tokens == [UNCLUSTERED_TEXT.encode()]:
                continue
            if tid in self._adopted and tid in self._archive:
                self._unarchive(tid, self._archive.pop(tid)[0])
            elif self._uses(tid) or len(self._archive) >= self.archive_size:
                continue
            self._archive[tid] = (tokens, 0, 0)
            self._archived_at[tid] = time.time()
            self._archive_by_len.setdefault(len(tokens), _LengthIndex(len(tokens))).put(tid, tokens)
            self._adopted.add(tid)
            self._next_id = max(self._next_id, tid + 1)
            taken += 1
        self.stats.adopted += taken
        return taken

    def take_widened(self):
        """Ids of templates whose parameters changed meaning since the last call (a constant became
        a value, shifting the positions after it, a run of values became one span, or a token
        with several values changed), and of templates merged into a sibling (their lines carry
        the sibling's id from now on): what was learned about their parameters starts again. Widening a token's one value
        (`host=db-replica-<*>` to `host=db-<*>`) keeps positions and values (a value is known by
        its whole token, see miner_kernels.extract_params) and is not reported."""
        widened, self._widened = sorted(self._widened), set()
        return widened

    def _set_tokens(self, slot, tokens):
        indexed = self._slot_tid[slot] != self._unclustered_tid    # the reserved template takes no line
        old = self._tokens.get(slot)
        if old is not None and indexed:
            self._unindex(slot, old)
        self._tokens[slot] = tokens
        if indexed:
            self._index(slot, tokens)
        self._ntok[slot] = len(tokens)
        self._live_dirty = True
        marks = [-1 if t == S else t.count(M) for t in tokens]
        self._nwild[slot] = sum(abs(c) for c in marks)
        self._max_marks = max([self._max_marks] + marks)
        need = sum(len(t) for t in tokens)
        if self._pool_used + need > len(self._pool) or self._tt_used + len(tokens) > len(self._tt_start):
            self._compact(need, len(tokens))
        self._write_tokens(slot, tokens)

    def _write_tokens(self, slot, tokens):
        marks = [-1 if t == S else t.count(M) for t in tokens]  # as miner_kernels.pool_token
        # parameter extraction walks tokens only up to the last one holding a wildcard (or a span)
        self._tpl_nscan[slot] = max([k + 1 for k, c in enumerate(marks) if c] + [0])
        self._tpl_first[slot] = self._tt_used
        if tokens:
            self._tt_hash[self._tt_used:self._tt_used + len(tokens)] = _token_hashes(tokens, False)
            self._tt_rigid[self._tt_used:self._tt_used + len(tokens)] = [t.isalnum() and t.isascii() for t in tokens]
        for t, c in zip(tokens, marks):
            t = b"" if c < 0 else t
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
        if tid != self._unclustered_tid:
            self._unindex(slot, tokens)
        self._archive[tid] = (tokens, int(self._counts[slot]), int(self._last_seen[slot]))
        self._archived_at[tid] = time.time()
        if tid != self._unclustered_tid:
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
            self._archived_at.pop(old_tid, None)
            self._unarchive(old_tid, old_tokens)
        if len(self._archived_shapes) > self.max_shapes:
            self._archived_shapes = {h: t for h, t in self._archived_shapes.items() if t in self._archive}

    def _unarchive(self, tid, tokens):
        index = self._archive_by_len.get(len(tokens))
        if index is not None and tid in index:
            index.drop(tid)

    def _revive(self, tid):
        tokens, count, last_seen = self._archive.pop(tid)
        self._archived_at.pop(tid, None)
        self._adopted.discard(tid)
        self._unarchive(tid, tokens)
        self.stats.revivals += 1
        return self._open(tokens, tid, count, last_seen)

    # ------------------------------------------------------------ spans and sibling merges
    def _settle(self, slot, tokens):
        """After a line found or opened its template: merge the siblings that now show a value."""
        return self._merge_siblings(slot)

    def _match_spans(self, tokens):
        """A live template with the line's words and other runs of values between them (join_spans),
        widened to take it; None when there is none.

        Candidates share words with the line (an inverted index, read for at most SPAN_POSTINGS
        templates in all: a word held by more than what is left is too common to count), have up to SPAN_WORDS words more or
        fewer (a value in one line can be a word in another: an address or a host name), and are
        tried by most shared words, at most SPAN_CANDIDATES of them: the cost of a line does not
        grow with the number of templates.
        """
        if self.span_words < 0:
            return None
        words = word_tokens(tokens)
        shared, budget = Counter(), SPAN_POSTINGS
        for w in set(words):
            slots = self._word_slots.get(w)
            if slots and len(slots) <= budget:
                shared.update(slots)
                budget -= len(slots)
        # a template whose shared words cannot reach `similarity` of the words paired is not
        # worth aligning
        ranked = heapq.nsmallest(SPAN_CANDIDATES, (
            (-n, int(self._slot_tid[slot]), slot) for slot, n in shared.items()
            if abs(self._word_count[slot] - len(words)) <= self.span_words
            and n >= self.similarity * min(self._word_count[slot], len(words))))
        for _, _, slot in ranked:
            widened, _ = join_spans(self._tokens[slot], tokens, self.similarity)
            if widened is not None:
                if widened != self._tokens[slot]:
                    self._widen(slot, widened)
                return slot
        return None

    def _index(self, slot, tokens):
        """Enter a template in the token-count, word (spans) and sibling indexes."""
        self._siblings.add(slot, tokens)
        index = self._by_len.get(len(tokens))
        if index is None:
            index = self._by_len[len(tokens)] = _LengthIndex(len(tokens))
        index.put(slot, tokens)
        words = word_tokens(tokens)
        self._word_count[slot] = len(words)
        for w in set(words):
            self._word_slots.setdefault(w, set()).add(slot)

    def _unindex(self, slot, tokens):
        self._siblings.remove(slot, tokens)
        self._by_len[len(tokens)].drop(slot)
        del self._word_count[slot]
        for w in set(word_tokens(tokens)):
            slots = self._word_slots[w]
            slots.discard(slot)
            if not slots:
                del self._word_slots[w]

    def _merge_siblings(self, slot):
        """Merge the sibling groups of slot that show a value position (see _Siblings); the slot
        that now holds slot's lines."""
        # a group ripens only when it gains a member (a template opened or widened)
        if not self._siblings.grown:
            return slot
        self._siblings.grown = False
        for _ in range(8):
            ripe = self._siblings.ripe(self._tokens[slot])
            if not ripe:
                break
            done = set()
            for p, slots in ripe:
                if done.isdisjoint(slots):
                    done.update(slots)
                    keep = self._merge(p, slots)
                    if slot in slots:
                        slot = keep
        return slot

    def _merge(self, p, slots):
        keep = min(slots, key=lambda s: int(self._slot_tid[s]))
        tokens = list(self._tokens[keep])
        tokens[p] = _word_wildcard(self._tokens[s][p] for s in slots)
        for gone in slots:
            if gone != keep:
                self._absorb(keep, gone)
        self._widen(keep, tokens)
        return keep

    def _absorb(self, keep, gone):
        """Template gone joins keep: its shapes and counts move over, its id becomes an alias of keep's."""
        gone_tid, keep_tid = int(self._slot_tid[gone]), int(self._slot_tid[keep])
        self._counts[keep] += self._counts[gone]
        self._last_seen[keep] = max(self._last_seen[keep], self._last_seen[gone])
        for shape in self._slot_shapes.pop(gone, []):
            self._shapes[shape] = keep
            self._slot_shapes[keep].append(shape)
            mk.table_put(self._keys, self._vals, np.uint64(shape), np.int32(keep))
        tokens = self._tokens.pop(gone)
        self._unindex(gone, tokens)
        del self._tid_slot[gone_tid]
        self._slot_tid[gone] = -1
        self._counts[gone] = 0
        self._free.append(gone)
        self._alias[gone_tid] = keep_tid
        self._widened.add(gone_tid)
        while len(self._alias) > max(self.archive_size, self.max_templates):
            self._alias.popitem(last=False)
        self.stats.merges += 1

    def merge_near_duplicates(self, min_values):
        """Merge, at once, every sibling group (live templates that agree on every token but one word)
        holding at least `min_values` different words there, as step 5 does online at its own threshold
        (--optimize-models: an operator asks for fewer, wider templates). Returns how many templates
        were merged away; their ids become aliases of the survivors and take_widened() reports them."""
        before = len(self._tokens)
        saved = self._siblings.min_values
        self._siblings.min_values = max(2, int(min_values))
        try:
            for slot in sorted(self._tokens):
                if slot in self._tokens and int(self._slot_tid[slot]) != self._unclustered_tid:
                    self._siblings.grown = True
                    self._merge_siblings(slot)
        finally:
            self._siblings.min_values = saved
        self._live_dirty = True
        return before - len(self._tokens)

    def prune_archive(self, before):
        """Forget archived templates evicted before `before` (wall time): their ids are given up for
        good, as when the archive overflows (a line of theirs that comes back opens a new template).
        Returns the pruned ids."""
        stale = [tid for tid, at in self._archived_at.items() if at < before and tid in self._archive]
        for tid in stale:
            tokens, _count, _seen = self._archive.pop(tid)
            self._archived_at.pop(tid, None)
            self._unarchive(tid, tokens)
        if stale:
            gone = set(stale)
            self._archived_shapes = {h: t for h, t in self._archived_shapes.items() if t not in gone}
        return stale

    def rebuild_indexes(self):
        """Rebuild the shape table and forget archived shapes of ids the archive no longer holds (what
        evictions leave behind until max_shapes is reached); returns how many shapes were forgotten."""
        stale = [h for h, tid in self._archived_shapes.items() if tid not in self._archive]
        for shape in stale:
            del self._archived_shapes[shape]
        self._rebuild_table()
        self._live_dirty = True
        return len(stale)

    def counts(self):
        """{"templates": live, "archived": evicted but kept, "aliases": merged ids} (what optimize reports)."""
        return {"templates": len(self._tokens), "archived": len(self._archive), "aliases": len(self._alias)}

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
            "unclustered_id": self._unclustered_tid, "free_text_sources": self._gate.free_sources(),
            "masking": self.masking.to_dict(), "similarity": self.similarity,
            "templates": live,
            "archive": [[tid, enc(t), c, ls] for tid, (t, c, ls) in self._archive.items()],
            "archived_at": [[tid, at] for tid, at in self._archived_at.items()],
            "archived_shapes": [[str(h), tid] for h, tid in self._archived_shapes.items()],
            "aliases": [[a, b] for a, b in self._alias.items()],
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
        miner._gate.restore(state.get("free_text_sources", []))
        for tid, toks, count, last_seen in state.get("archive", []):
            tokens = [t.encode("latin-1") for t in toks]
            miner._archive[int(tid)] = (tokens, int(count), int(last_seen))
            if int(tid) != miner._unclustered_tid:
                miner._archive_by_len.setdefault(len(tokens), _LengthIndex(len(tokens))).put(int(tid), tokens)
        # when evicted; a snapshot of an older release has none: counted from this load
        archived_at = {int(tid): float(at) for tid, at in state.get("archived_at", [])}
        miner._archived_at = {tid: archived_at.get(tid, time.time()) for tid in miner._archive}
        for shape, tid in state.get("archived_shapes", []):
            miner._archived_shapes[int(shape)] = int(tid)
        for gone, keep in state.get("aliases", []):
            miner._alias[int(gone)] = int(keep)
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
        """Write the miner atomically (checksummed JSON snapshot, older generations kept as .prev, .prev2, ...)."""
        if self.vocabulary is not None:     # the ids saved here must outlive a power cut in the vocabulary too
            self.vocabulary.flush()
        write_json_snapshot(path, SNAPSHOT_KIND, SNAPSHOT_VERSION, self.to_state())

    @classmethod
    def load(cls, path, **settings):
        """A miner from a snapshot at path (or an older generation); a new empty one when none exists or
        none has the shape of a miner's state (set aside and logged by storage.atomic)."""
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


class _Taken:
    """The ids a miner uses, as a container (Vocabulary.assign's `taken`)."""

    def __init__(self, miner):
        self.miner = miner

    def __contains__(self, tid):
        return self.miner._uses(tid)

    @property
    def floor(self):
        return self.miner._next_id     # above every id the miner has used


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


def render_tokens(tokens):
    """A template's text as operators read it (values written <*>)."""
    return _render(tokens)


def _render(tokens):
    return b" ".join(M if t == S else t for t in tokens).replace(M, WILDCARD.encode()).decode("utf-8", "replace")


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
