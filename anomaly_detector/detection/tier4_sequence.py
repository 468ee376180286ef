"""Tier 4, sequence: sessions keyed by an id in the line, judged against learned workflows; window mix.

Reads ParsedBatch (parsing/batch.py) and BatchContext (base.py); the hot loops are the numba kernels
of sequence_kernels.py. The engine (engine.py) calls advance/score/learn and may switch it off at run time.
"""
import math
import re

import numpy as np

from . import sequence_kernels as sk
from .base import Finding, Tier, TierResult
from .session_ids import SessionIdLearner

# How a template's lines carry their session id (SessionIdLocator.mode). MODE_PARAM: no pattern
# finds one, but the parameter numbered `tok` behaves as an id (session_ids.py); `pre` holds its family.
MODE_NONE, MODE_FROM_START, MODE_FROM_END, MODE_UNDECIDED, MODE_REGEX, MODE_PARAM = 0, 1, 2, 3, 4, 5
SAMPLES_PER_TEMPLATE = 8    # lines a locator is decided from
VERIFY_PER_BATCH = 8        # lines per batch re-checked with the regexes (drift in a template's shape)
MISSES_TO_REDECIDE = 2
MAX_DECISIONS = 3           # after this many, a template that keeps changing shape uses the regexes per line

TEMPLATES_PER_SESSION = 16  # distinct templates remembered per session (composition)
ID_BYTES = 48               # bytes of a session id kept for Findings
DECAY_LINES = 10000         # counts shrink by (1 - learning_rate) per this many learned lines (at most)
PRUNE_AT, PRUNE_TO = 0.95, 0.75   # of max_transitions
CORE_CONFIDENCE_Z = 2.0       # deviations of the bound on a step's miss rate before it counts as core
CORE_REFRESH_SESSIONS = 5000   # ended sessions between recomputations of each workflow's core steps
EXPLAIN_FRACTION = 0.3      # lines scoring at least this share of unknown_score get a reason
MAX_EXPLAINED = 20000       # lines given a reason per batch (texts are shared per case)
REPORTED_FRACTION = 0.75    # a session with a line scored this high was reported already: no Finding
MAX_WORKFLOWS = 4096        # (template, variant) workflows; beyond it a template's new variants share one
PROBE_SESSIONS = 200        # session starts of a template watched before its variant parameter is chosen
MAX_VARIANTS = 16           # a parameter with 2..this many values at session starts names variants
WF_PROBING, WF_PLAIN = -2, -1
WINDOW_DIMS = 64            # template-count vector length (template id modulo this)
WINDOW_VARIANCE = 0.95      # share of variance the normal subspace explains
WINDOW_COMPONENTS = 16      # most directions in that subspace (tracked by orthogonal iteration)
WINDOW_REFIT = 8            # after warm-up the subspace is refitted every this many learned windows
# A source whose latest line is this many of its recent mean gaps between lines old is quiet (under
# Poisson arrivals a 0.7% chance); its gaps are known once it has logged QUIET_MIN_LINES lines.
QUIET_GAPS = 5.0
QUIET_MIN_LINES = 100
SILENT_SPANS_KEPT = 4    # silences of a source remembered (SourceLiveness.silent): sessions time out minutes after
RATE_MEMORY_SECONDS = 3600.0
WINDOW_CLEAN = 0.9          # share of learnable lines a window needs to be learned
WINDOW_HISTORY = 4096       # residuals of learned windows kept to calibrate the window score (~3 days)
WINDOW_TAIL = 0.05          # share of the largest residuals the tail (Pareto) fit uses
TEXT_CHARS = 80


def _percent(share):
    pct = 100.0 * share
    return f"{pct:.0f}%" if pct >= 1 or pct == 0 else f"{pct:.1f}%"


def core_miss_bound(missing, sessions):
    """Upper confidence bound (Wilson, CORE_CONFIDENCE_Z) of the share of sessions missing a step.

    missing and sessions are (decayed) counts, arrays or scalars; a step is core when this is at
    most 1 - core_step_fraction: with none missing that takes about z^2 / (1 - fraction) sessions
    (800 at 0.995), so a rare branch that skips the step has had its chance to show.
    """
    n = np.maximum(np.asarray(sessions, np.float64), 1e-9)
    p = np.clip(np.asarray(missing, np.float64) / n, 0.0, 1.0)
    z2 = CORE_CONFIDENCE_Z * CORE_CONFIDENCE_Z
    centre = p + z2 / (2.0 * n)
    spread = CORE_CONFIDENCE_Z * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return (centre + spread) / (1.0 + z2 / n)


def _pow2_at_least(n):
    c = 16
    while c < n:
        c *= 2
    return c


class SessionIdLocator:
    """Where each template's lines hold their session id, decided once per template with the regexes.

    Per line the id is then cut out by sequence_kernels.extract_keys (token number from the start or
    the end, bytes to drop before and after), so no regex runs per line. A few lines per batch are
    re-checked with the regexes; a template whose lines disagree is decided again.
    """

    def __init__(self, patterns, learner=None):
        self.learner = learner   # a SessionIdLearner, or None: only the patterns name ids
        self.learned = 0
        self._observed = None
        self.patterns = []
        for p in patterns:
            try:
                self.patterns.append(re.compile(p.encode("utf-8")))
            except re.error as e:
                raise ValueError(f"[detection][[tier4]] session_patterns: bad regular expression {p!r}: {e}") from e
        self.mode = np.full(0, MODE_UNDECIDED, np.int8)
        self.tok = np.zeros(0, np.int32)
        self.pre = np.zeros(0, np.int32)
        self.suf = np.zeros(0, np.int32)
        self.misses = np.zeros(0, np.int32)
        self.decisions = np.zeros(0, np.int32)
        self.checked_batches = 0
        self.regex_lines = 0
        self.redecisions = 0

    def ensure(self, n):
        if n <= self.mode.size:
            return
        size = _pow2_at_least(n)
        for name in ("mode", "tok", "pre", "suf", "misses", "decisions"):
            old = getattr(self, name)
            new = np.full(size, MODE_UNDECIDED, old.dtype) if name == "mode" else np.zeros(size, old.dtype)
            new[:old.size] = old
            setattr(self, name, new)

    def find_id(self, content):
        """(start, end) of the id in content bytes by the first pattern that matches, or None."""
        for rx in self.patterns:
            m = rx.search(content)
            if m:
                return m.span(1) if rx.groups else m.span()
        return None

    def keys(self, batch, n_templates, ts=None):
        """Session key per line (-1: none) and the id's byte span in batch.buf; ts (event times)
        lets the learner look for ids no pattern names."""
        tids = batch.template_id
        known = tids[tids >= 0]   # -1: a line the miner gave no template
        self.ensure(max(n_templates, int(known.max()) + 1 if known.size else 0))
        present = np.flatnonzero(np.bincount(known, minlength=1))
        self._decide(batch, present[self.mode[present] == MODE_UNDECIDED])
        keys, ks, ke = sk.extract_keys(batch.buf, batch.content_start, batch.content_end, tids,
                                       self.mode, self.tok, self.pre, self.suf)
        regex_templates = np.flatnonzero(self.mode == MODE_REGEX)
        by_regex = np.flatnonzero(np.isin(tids, regex_templates)) if regex_templates.size else regex_templates
        for i in by_regex.tolist():
            s = int(batch.content_start[i])
            span = self.find_id(bytes(batch.buf[s:batch.content_end[i]]))
            if span and span[1] > span[0]:
                ks[i], ke[i] = s + span[0], s + span[1]
                keys[i] = sk.id_hash_slow_path(bytes(batch.buf[ks[i]:ke[i]]))
        self.regex_lines += by_regex.size
        self._verify(batch, keys)
        self._learned_keys(batch, ts, keys, ks, ke)
        return keys, ks, ke

    def _learned_keys(self, batch, ts, keys, ks, ke):
        """Keys of templates whose id is a learned parameter; first let the learner look (once a batch)."""
        if self.learner is not None and ts is not None and self._observed is not batch:
            self._observed = batch
            for t, position, family in self.learner.observe(batch, ts, self.mode == MODE_NONE):
                if self.mode[t] == MODE_NONE:   # pre holds the family: no bytes are cut from a parameter
                    self.mode[t], self.tok[t], self.pre[t] = MODE_PARAM, position, family
                    self.learned += 1
        if batch.param_start is None:
            return
        tids = batch.template_id
        rows = np.flatnonzero((tids >= 0) & (self.mode[np.maximum(tids, 0)] == MODE_PARAM)).astype(np.int64)
        if rows.size:
            at = tids[rows]
            sk.keys_at_params(batch.buf, batch.param_ptr, batch.param_pos, batch.param_start, batch.param_end,
                              rows, self.tok[at].astype(np.int64), self.pre[at].astype(np.int64), keys, ks, ke)

    def _locate(self, content):
        """(token from start, token from end, bytes before, bytes after) of the id; None; or 'split'."""
        span = self.find_id(content)
        if span is None or span[1] <= span[0]:
            return None
        spans = sk.token_spans_slow_path(content)
        for k, (p, q) in enumerate(spans):
            if p <= span[0] and span[1] <= q:
                return (k, len(spans) - k, span[0] - p, q - span[1])
        return "split"

    def _decide(self, batch, templates):
        if templates.size == 0:
            return
        tids = batch.template_id
        idx = np.flatnonzero(np.isin(tids, templates))
        idx = idx[np.argsort(tids[idx], kind="stable")]
        bounds = np.flatnonzero(np.diff(tids[idx])) + 1
        for group in np.split(idx, bounds):
            t = int(tids[group[0]])
            locs = [self._locate(bytes(batch.buf[batch.content_start[i]:batch.content_end[i]]))
                    for i in group[:SAMPLES_PER_TEMPLATE].tolist()]
            self._set(t, locs)

    def _set(self, t, locs):
        found = [loc for loc in locs if loc is not None]
        self.decisions[t] += 1
        self.misses[t] = 0
        if len(found) < len(locs) or "split" in found or self.decisions[t] > MAX_DECISIONS:
            # Some lines without an id, or an id that is not one token: let the regexes do it per line.
            self.mode[t] = MODE_REGEX if 2 * len(found) >= len(locs) else MODE_NONE
            return
        if all(loc[0] == found[0][0] and loc[2:] == found[0][2:] for loc in found):
            self.mode[t], self.tok[t] = MODE_FROM_START, found[0][0]
        elif all(loc[1:] == found[0][1:] for loc in found):
            self.mode[t], self.tok[t] = MODE_FROM_END, found[0][1]
        else:
            self.mode[t] = MODE_REGEX
            return
        self.pre[t], self.suf[t] = found[0][2], found[0][3]

    def _verify(self, batch, keys):
        """Re-check a few lines with the regexes: templates change (the miner generalises them)."""
        tids = batch.template_id
        self.checked_batches += 1
        rng = np.random.default_rng(self.checked_batches)
        pick = np.unique(rng.integers(0, tids.size, 8 * VERIFY_PER_BATCH))
        pick = pick[tids[pick] >= 0]
        eligible = pick[self.mode[tids[pick]] <= MODE_FROM_END]
        take = max(1, min(VERIFY_PER_BATCH, tids.size // 256))
        for i in eligible[:take].tolist():
            s = int(batch.content_start[i])
            content = bytes(batch.buf[s:batch.content_end[i]])
            span = self.find_id(content)
            want = sk.id_hash_slow_path(content[span[0]:span[1]]) if span and span[1] > span[0] else -1
            if want == keys[i]:
                continue
            t = int(tids[i])
            self.misses[t] += 1
            if self.misses[t] >= MISSES_TO_REDECIDE:
                self.mode[t] = MODE_UNDECIDED if self.decisions[t] < MAX_DECISIONS else MODE_REGEX
                self.redecisions += 1

    def state(self):
        return {name: getattr(self, name).tolist() for name in ("mode", "tok", "pre", "suf", "misses", "decisions")}

    def load_state(self, state):
        for name in ("mode", "tok", "pre", "suf", "misses", "decisions"):
            if name in state:
                setattr(self, name, np.asarray(state[name], getattr(self, name).dtype))
        self.ensure(self.mode.size)
        if self.learner is not None:   # the learned ids and their families (pre) are the learner's too
            learned = np.flatnonzero(self.mode == MODE_PARAM)
            self.learner.adopt(zip(learned.tolist(), self.tok[learned].tolist(), self.pre[learned].tolist()))


class SessionStore:
    """Open sessions: a hash index key -> slot over fixed arrays of session data, and a free stack."""

    FIELDS = (("key", np.int64), ("wf", np.int32), ("last", np.int32), ("start", np.float64),
              ("lastts", np.float64), ("steps", np.int32), ("ntpl", np.int32), ("flags", np.int32),
              ("minw", np.float32), ("maxscore", np.float32), ("src", np.int32), ("idlen", np.int32))

    def __init__(self, max_sessions):
        self.size = max_sessions
        self.ix_key = np.full(_pow2_at_least(2 * max_sessions), -1, np.int64)
        self.ix_slot = np.zeros(self.ix_key.size, np.int32)
        for name, dt in self.FIELDS:
            setattr(self, name, np.zeros(max_sessions, dt))
        self.key[:] = -1
        self.tpl = np.zeros((max_sessions, TEMPLATES_PER_SESSION), np.int32)
        self.ids = np.zeros((max_sessions, ID_BYTES), np.uint8)
        self.free = np.zeros(max_sessions + 1, np.int32)
        self.free[0] = max_sessions
        self.free[1:] = np.arange(max_sessions - 1, -1, -1)

    @property
    def open(self):
        return self.size - int(self.free[0])

    def id_text(self, s):
        return bytes(self.ids[s, :self.idlen[s]]).decode("utf-8", "replace")

    def state(self):
        used = np.flatnonzero(self.key >= 0)
        out = {name: getattr(self, name)[used].tolist() for name, _ in self.FIELDS}
        out["tpl"] = self.tpl[used].tolist()
        out["ids"] = [self.id_text(s) for s in used.tolist()]
        return out

    def load_state(self, state):
        n = min(len(state.get("key", [])), self.size)
        if n == 0:
            return
        for name, dt in self.FIELDS:
            getattr(self, name)[:n] = np.asarray(state[name][:n], dt)
        self.tpl[:n] = np.asarray(state["tpl"][:n], np.int32).reshape(n, TEMPLATES_PER_SESSION)
        for s, text in enumerate(state["ids"][:n]):
            raw = text.encode("utf-8")[:ID_BYTES]
            self.ids[s, :len(raw)] = np.frombuffer(raw, np.uint8)
            self.idlen[s] = len(raw)
        for s in range(n):
            g = sk.ht_find(self.ix_key, self.key[s])
            self.ix_key[-1 - g], self.ix_slot[-1 - g] = self.key[s], s
        self.free[0] = self.size - n
        self.free[1:self.size - n + 1] = np.arange(self.size - 1, n - 1, -1)


class WorkflowBook:
    """Workflow ids: a session's first template, refined by one first-line parameter with few values.

    "request <*> received path=<*>" opens checkouts, searches and logins alike; its path parameter
    tells them apart. The parameter is chosen per template from its first PROBE_SESSIONS session
    starts (2..MAX_VARIANTS distinct values). Ids are dense (they index per-workflow arrays) and stable.
    """

    def __init__(self):
        self.template = []   # workflow id -> template id
        self.variant = []    # workflow id -> parameter hash (0: all the template's sessions as one)
        self.label = []      # workflow id -> the parameter as written in a line ('' when plain)
        self.ids = {}
        self.pos = np.full(0, WF_PROBING, np.int32)   # template -> variant parameter, PLAIN or PROBING
        self.probes = {}     # template -> [starts seen, {parameter position: set of value hashes}]
        self.overflow = 0

    def __len__(self):
        return len(self.template)

    def ensure(self, n):
        if n > self.pos.size:
            grown = np.full(_pow2_at_least(n), WF_PROBING, np.int32)
            grown[:self.pos.size] = self.pos
            self.pos = grown

    def open_ids(self, batch, rows, template_text):
        """Workflow id of each line in `rows` (lines that open a session)."""
        tids = batch.template_id[rows].astype(np.int64)
        self.ensure(int(tids.max()) + 1 if tids.size else 0)
        pos = self.pos[tids]
        hashes = np.zeros(rows.size, np.uint64)
        named = np.flatnonzero(pos >= 0)
        if named.size:
            h, found = sk.param_hash_at(batch.param_ptr, batch.param_pos, batch.param_hash,
                                        rows[named].astype(np.int64), pos[named].astype(np.int64))
            hashes[named] = np.where(found, h, 0)
        # One 64-bit key per (template, value) pair: a 1-d unique is much cheaper than a row-wise one.
        pair = hashes ^ (tids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        _, first, inv = np.unique(pair, return_index=True, return_inverse=True)
        ids = np.array([self._id(int(tids[j]), int(hashes[j]), batch, int(rows[j]), template_text)
                        for j in first.tolist()], np.int32)
        return ids[inv.reshape(-1)]

    def _id(self, t, h, batch, row, template_text):
        found = self.ids.get((t, h))
        if found is not None:
            return found
        if h and len(self.template) >= MAX_WORKFLOWS:
            self.overflow += 1
            return self._id(t, 0, batch, row, template_text)
        self.ids[(t, h)] = len(self.template)
        self.template.append(t)
        self.variant.append(h)
        self.label.append(self._label(batch, row, t, template_text) if h else "")
        return self.ids[(t, h)]

    def _label(self, batch, row, t, template_text):
        """The variant parameter as the line wrote it (the token holding it), for explanations."""
        want = int(self.pos[t])
        tokens = str(template_text(t)).split()
        words = batch.content(row).split()
        if len(tokens) == len(words):
            seen = 0
            for token, word in zip(tokens, words):
                seen += token.count("<*>")
                if seen > want:
                    return word[:40]
        return "#%d" % sum(1 for x in self.template if x == t)

    def probe(self, batch, rows):
        """Watch session starts of undecided templates; choose their variant parameter."""
        tids = batch.template_id[rows]
        todo = rows[self.pos[tids] == WF_PROBING] if rows.size else rows
        for i in todo.tolist():
            t = int(batch.template_id[i])
            if self.pos[t] != WF_PROBING:
                continue
            seen = self.probes.setdefault(t, [0, {}])
            seen[0] += 1
            for q in range(int(batch.param_ptr[i]), int(batch.param_ptr[i + 1])):
                if math.isfinite(batch.param_num[q]):
                    continue   # a number measures (a latency, a count): a workflow is named by a word
                values = seen[1].setdefault(int(batch.param_pos[q]), set())
                if len(values) <= MAX_VARIANTS:
                    values.add(int(batch.param_hash[q]))
            if seen[0] >= PROBE_SESSIONS:
                fit = [(len(v), -p) for p, v in seen[1].items() if 2 <= len(v) <= MAX_VARIANTS]
                self.pos[t] = -max(fit)[1] if fit else WF_PLAIN
                del self.probes[t]

    def state(self):
        return {"template": self.template, "variant": [str(h) for h in self.variant], "label": self.label,
                "pos": self.pos.tolist(), "overflow": self.overflow}

    def load_state(self, state):
        self.template = [int(t) for t in state.get("template", [])]
        self.variant = [int(h) for h in state.get("variant", [])]
        self.label = list(state.get("label", []))
        self.ids = {(t, h): j for j, (t, h) in enumerate(zip(self.template, self.variant))}
        self.pos = np.asarray(state.get("pos", []), np.int32)
        self.overflow = int(state.get("overflow", 0))


class WindowStructure:
    """Template mix per event-time window against a learned normal subspace (PCA of sqrt shares).

    A window whose residual off that subspace is far above the learned residuals becomes a Finding
    naming the templates that moved most. One small eigh per window; nothing per line but a bincount.
    Its score is the tail probability of its residual among the residuals of recent normal windows,
    beyond the largest of them by a Pareto fit of their top WINDOW_TAIL (residuals are heavy-tailed:
    a z-score on them raises a few false alarms a day).
    """

    def __init__(self, settings):
        self.seconds = float(settings["window_seconds"])
        self.min_lines = int(settings["window_min_lines"])
        self.warmup = int(settings["window_warmup"])
        self.sigmas = float(settings["window_sigmas"])
        self.current = math.nan           # index of the open window (event time / seconds)
        self.counts = np.zeros(WINDOW_DIMS)
        self.unlearned = 0
        self.dim_tid = np.full(WINDOW_DIMS, -1, np.int64)
        self.n = 0
        self.mu = np.zeros(WINDOW_DIMS)
        self.cov = np.zeros((WINDOW_DIMS, WINDOW_DIMS))
        self.basis = np.zeros((WINDOW_DIMS, 0))
        self.vecs, _ = sk.subspace_step(np.eye(WINDOW_DIMS),
                                        np.random.default_rng(0).normal(size=(WINDOW_DIMS, WINDOW_COMPONENTS)), 1)
        self.spe_n = 0
        self.spe_mean = 0.0
        self.spe_dev = 0.0
        self.closed = 0
        self.flagged = 0
        self.history = np.full(WINDOW_HISTORY, np.nan)

    def add(self, ts, tids, weights, learning_rate):
        """Count lines into windows; return [(window start, residual info)] of windows judged unusual."""
        if self.seconds <= 0 or ts.size == 0:
            return []
        ok = np.isfinite(ts) & (tids >= 0)
        ts, tids, weights = ts[ok], tids[ok], weights[ok]
        if ts.size == 0:
            return []
        win = np.floor(ts / self.seconds)
        if math.isnan(self.current) or win[0] < self.current - 1:
            # First lines, or time went back (replay of another file): the open window is not comparable.
            self.current = float(win[0])
            self.counts[:] = 0
            self.unlearned = 0
        dims = tids % WINDOW_DIMS
        self.dim_tid[dims] = tids
        # Late lines count in the open window; later ones in theirs, one bincount for all of them.
        wins, inv = np.unique(np.maximum(win, self.current), return_inverse=True)
        counts = np.bincount(inv * WINDOW_DIMS + dims, minlength=wins.size * WINDOW_DIMS).reshape(wins.size, -1)
        unlearned = np.bincount(inv, weights=(weights <= 0), minlength=wins.size)
        unusual = []
        for j, w in enumerate(wins.tolist()):
            if w > self.current:
                unusual += self.close(learning_rate)
                self.current = w
            self.counts += counts[j]
            self.unlearned += int(unlearned[j])
        return unusual

    def close(self, learning_rate):
        """Judge and learn the open window, then empty it."""
        counts, total, unlearned = self.counts, self.counts.sum(), self.unlearned
        start = self.current * self.seconds
        self.counts = np.zeros(WINDOW_DIMS)
        self.unlearned = 0
        if total < self.min_lines:
            return []
        self.closed += 1
        x = np.sqrt(counts / total)
        d = x - self.mu
        # Element-wise, not `@`: a threaded BLAS call wakes (and spins) every core for a 64 x 16 product.
        fitted = (self.basis * (self.basis * d[:, None]).sum(axis=0)).sum(axis=1)
        r = d - fitted
        # sqrt shares have variance ~1/(4 N) per template: scaled so quiet and busy windows compare.
        spe = float((r * r).sum()) * 4.0 * total
        unusual = []
        if self.n >= self.warmup and self.spe_n >= self.warmup // 2:
            # Scaled residuals are ~1 per free template under sampling noise alone: a floor for the spread.
            z = (spe - self.spe_mean) / max(1.2533 * self.spe_dev, 1.0)
            if z > self.sigmas and spe > 2.0 * self.spe_mean:
                self.flagged += 1
                unusual.append((start, x, self.mu + fitted, r, z, self.tail_log10p(spe)))
        if not unusual and unlearned <= (1.0 - WINDOW_CLEAN) * total:
            self._learn(d, spe, learning_rate)
            self.history[self.n % WINDOW_HISTORY] = spe
        return unusual

    def tail_log10p(self, spe):
        """log10 of the share of normal windows with a residual this large (Pareto beyond the data)."""
        seen = np.sort(self.history[np.isfinite(self.history)])
        n = seen.size
        if n == 0:
            return 0.0
        k = max(10, int(n * WINDOW_TAIL))
        if n <= k:
            return math.log10((np.sum(seen >= spe) + 1.0) / (n + 1.0))
        u = max(float(seen[n - k - 1]), 1e-12)
        if spe <= u:
            return math.log10((np.sum(seen >= spe) + 1.0) / (n + 1.0))
        hill = float(np.mean(np.log(np.maximum(seen[n - k:], u) / u)))  # 1 / tail index
        if hill <= 0:
            return math.log10(1.0 / (n + 1.0))
        return math.log10(k / n) - math.log10(spe / u) / hill

    def _learn(self, d, spe, learning_rate):
        self.n += 1
        if self.n > self.warmup // 2:
            # Residuals are only comparable once the subspace has settled a little.
            self.spe_n += 1
            b = max(1.0 / self.spe_n, learning_rate)
            old = self.spe_mean
            self.spe_mean += b * (spe - old)
            self.spe_dev += b * (abs(spe - old) - self.spe_dev)
        a = max(1.0 / self.n, learning_rate)
        self.mu += a * d
        self.cov = (1.0 - a) * (self.cov + a * np.outer(d, d))
        if self.n > self.warmup and self.n % WINDOW_REFIT:
            return
        # The covariance moves slowly once settled: one iteration every few windows keeps up.
        self.vecs, lam = sk.subspace_step(self.cov, self.vecs, 3 if self.n <= self.warmup else 1)
        total = float(np.trace(self.cov))
        if total <= 0:
            self.basis = np.zeros((WINDOW_DIMS, 0))
            return
        k = int(np.searchsorted(np.cumsum(lam.clip(min=0)) / total, WINDOW_VARIANCE)) + 1
        self.basis = self.vecs[:, :min(k, WINDOW_COMPONENTS)].copy()

    def state(self):
        return {"current": None if math.isnan(self.current) else self.current, "counts": self.counts.tolist(),
                "unlearned": self.unlearned, "dim_tid": self.dim_tid.tolist(), "n": self.n, "mu": self.mu.tolist(),
                "cov": self.cov.tolist(), "basis": self.basis.tolist(), "vecs": self.vecs.tolist(), "spe_n": self.spe_n,
                "spe_mean": self.spe_mean, "spe_dev": self.spe_dev, "closed": self.closed, "flagged": self.flagged,
                "history": [None if math.isnan(v) else v for v in self.history.tolist()]}

    def load_state(self, state):
        self.current = math.nan if state.get("current") is None else float(state["current"])
        for name in ("n", "spe_n", "unlearned", "closed", "flagged"):
            setattr(self, name, int(state.get(name, 0)))
        self.spe_mean = float(state.get("spe_mean", 0.0))
        self.spe_dev = float(state.get("spe_dev", 0.0))
        history = [np.nan if v is None else v for v in state.get("history", [])][:WINDOW_HISTORY]
        self.history = np.full(WINDOW_HISTORY, np.nan)
        self.history[:len(history)] = history
        self.counts = np.asarray(state.get("counts", self.counts), np.float64).reshape(WINDOW_DIMS)
        self.dim_tid = np.asarray(state.get("dim_tid", self.dim_tid), np.int64).reshape(WINDOW_DIMS)
        self.mu = np.asarray(state.get("mu", self.mu), np.float64).reshape(WINDOW_DIMS)
        self.cov = np.asarray(state.get("cov", self.cov), np.float64).reshape(WINDOW_DIMS, WINDOW_DIMS)
        self.basis = np.asarray(state.get("basis", self.basis), np.float64).reshape(WINDOW_DIMS, -1)
        self.vecs = np.asarray(state.get("vecs", self.vecs), np.float64).reshape(WINDOW_DIMS, WINDOW_COMPONENTS)


class SourceLiveness:
    """Each source's latest line and its recent rate of lines (counted with an exponential memory of
    RATE_MEMORY_SECONDS, so the day's busy and quiet hours each have theirs), to tell a quiet service
    from one that logs as usual. Runtime only: after a restart it is learned again."""

    def __init__(self):
        self.first = np.full(0, np.nan)
        self.last = np.full(0, -np.inf)
        self.lines = np.zeros(0, np.int64)
        self.recent = np.zeros(0)      # lines, each weighted exp(-age / RATE_MEMORY_SECONDS) at self.clock
        self.clock = -np.inf
        # source -> its latest SILENT_SPANS_KEPT silences, each (its line before, its line after, the gap
        # that made it one): QUIET_GAPS of its mean gaps with no line, then lines again (a deploy)
        self.silent = {}

    def add(self, sources, ts):
        if sources.size == 0:
            return
        top = int(sources.max()) + 1
        if top > self.last.size:
            size = _pow2_at_least(top)
            for name, empty in (("first", np.nan), ("last", -np.inf), ("lines", 0), ("recent", 0.0)):
                old = getattr(self, name)
                grown = np.full(size, empty, old.dtype)
                grown[:old.size] = old
                setattr(self, name, grown)
        ok = sources >= 0
        src, t = sources[ok], ts[ok]
        self._note_silences(src, t)
        self.lines += np.bincount(src, minlength=self.lines.size)
        before = self.last.copy()
        self.last[src] = t                        # each source's last line in log order: its latest
        np.maximum(self.last, before, out=self.last)
        new = np.isnan(self.first[src])
        self.first[src[new][::-1]] = t[new][::-1]   # and its first
        now = float(self.last.max())
        if now > self.clock:
            self.recent *= math.exp(-(now - self.clock) / RATE_MEMORY_SECONDS) if math.isfinite(self.clock) else 1.0
            self.clock = now
        age = np.minimum(t - now, 0.0)
        self.recent += np.bincount(src, weights=np.exp(age / RATE_MEMORY_SECONDS), minlength=self.recent.size)

    def _note_silences(self, src, t):
        """Keep, per source of these lines, its longest gap (from its last line before them, and between
        them) when that gap was a silence by quiet()'s measure, judged with its rate before them."""
        order = np.argsort(src, kind="stable")
        src, t = src[order], t[order]
        for part in np.split(np.arange(src.size), np.flatnonzero(np.diff(src)) + 1):
            sid = int(src[part[0]])
            if sid in self.silent:    # a line inside a kept span (a replay's earlier file): it was no silence
                self.silent[sid] = [(low, high, limit) for low, high, limit in self.silent[sid]
                                    if not ((t[part] > low) & (t[part] < high)).any()]
            if self.lines[sid] < QUIET_MIN_LINES or not math.isfinite(self.last[sid]):
                continue
            times = np.maximum.accumulate(np.concatenate(([self.last[sid]], t[part])))
            gaps = np.diff(times)
            j = int(np.argmax(gaps))
            limit = QUIET_GAPS * self.mean_gap(sid)
            if gaps[j] >= limit:
                spans = self.silent.setdefault(sid, [])
                spans[:] = (spans + [(float(times[j]), float(times[j + 1]), limit)])[-SILENT_SPANS_KEPT:]

    def silent_while(self, sid, since, until):
        """Whether source sid had a silence (its kept spans) that a step due from `since` to `until` may
        have fallen in: the span starts before `until`, or within the gap that made it one after it (a
        step due a moment before its last line was lost with it), and ends after `since` (its first line
        back, if that is `since`, is no step lost)."""
        return any(low - limit <= until and since < high for low, high, limit in self.silent.get(sid, ()))

    def last_line(self, sid):
        return float(self.last[sid]) if 0 <= sid < self.last.size else -np.inf

    def mean_gap(self, sid):
        """Seconds between sid's lines lately: its recent count over the time that count covers."""
        covered = RATE_MEMORY_SECONDS * -math.expm1(-(self.clock - float(self.first[sid])) / RATE_MEMORY_SECONDS)
        return covered / max(float(self.recent[sid]), 1e-9)

    def quiet(self, sid, when, recent=None):
        """Whether source sid has logged nothing for QUIET_GAPS of its recent gaps before `when` (recent:
        the sorted times of its lines not added yet, `when` one of theirs)."""
        if not 0 <= sid < self.last.size or self.lines[sid] < QUIET_MIN_LINES:
            return False
        latest = float(self.last[sid])
        if recent is not None:
            k = int(np.searchsorted(recent, when)) - 1    # its latest line before `when`
            if k >= 0:
                latest = max(latest, float(recent[k]))
        else:
            # quiet while the rest of the log went on: past the latest line of any source, the whole
            # input is quiet (its end, or a gap of the input's), which says nothing of this source
            when = min(when, self.clock)
        return when - latest >= QUIET_GAPS * self.mean_gap(sid)


class SequenceTier(Tier):
    """Sessions keyed by an id in the line; transitions, composition, endings and durations per workflow.

    A workflow is the set of sessions that begin with the same template. Counts of (workflow,
    previous, next) transitions live in one bounded hash table (sequence_kernels), with row totals
    (next = ANY), session starts (workflow = GLOBAL) and composition (previous = IN) beside them.
    score() leaves the model alone; it may decide where a new template keeps its id (a parsing
    cache) and keeps the batch's keys for the learn() that follows.
    """

    name = "t4"

    def __init__(self, settings):
        super().__init__(settings)
        self.enabled = bool(settings["enabled"])
        self.timeout = float(settings["session_timeout_seconds"])
        self.max_sessions = int(settings["max_sessions"])
        self.max_transitions = int(settings["max_transitions"])
        self.min_support = float(settings["min_support"])
        self.min_runs = float(settings["min_runs"])
        self.rare_p = float(settings["rare_probability"])
        self.top = float(settings["unknown_score"])
        self.core_fraction = float(settings["core_step_fraction"])
        self.sigmas = float(settings["duration_sigmas"])
        self.max_findings = int(settings["max_findings_per_batch"])
        self.patterns = list(settings["session_patterns"])
        self.learn_ids = bool(settings["learn_session_ids"])
        self.locator = SessionIdLocator(self.patterns, SessionIdLearner(self.timeout) if self.learn_ids else None)
        self._cold_start()

    # The admin API flips `enabled`; sessions left open while off would all look unfinished.
    @property
    def enabled(self):
        return self._enabled

    @enabled.setter
    def enabled(self, on):
        if on and not getattr(self, "_enabled", True):
            self._resumed = True
        self._enabled = bool(on)

    def _cold_start(self):
        self.store = SessionStore(self.max_sessions)
        self.workflows = WorkflowBook()
        cap = _pow2_at_least(2 * self.max_transitions)
        self.tkeys = np.full(cap, -1, np.int64)
        self.tcnt = np.zeros(cap, np.float64)
        self.counters = np.zeros(sk.N_COUNTERS, np.int64)
        self.dur_n = np.zeros(64)
        self.dur_mean = np.zeros(64)
        self.dur_var = np.zeros(64)
        # Per workflow: its latest run's start and the mean log of the time between its runs' starts
        # (log_gap_n runs measured): a workflow whose runs come alone is a job (see _runs_alone).
        self.last_start = np.full(64, np.nan)
        self.log_gap = np.zeros(64)
        self.log_gap_n = np.zeros(64)
        self.core_ptr = np.zeros(1, np.int64)
        self.core_tid = np.zeros(0, np.int32)
        self.window = WindowStructure(self.settings)
        self.pending = []
        self._cache = None
        self._ctx = None
        # Source of each template's latest line (-1: not seen since start): a cross-service workflow's
        # unfinished session is reported in the source of the step that did not come.
        self.tpl_src = np.full(0, -1, np.int32)
        self.liveness = SourceLiveness()
        # Runtime only, like liveness: source -> (its last line before skipped steps of it were due, the
        # last such skip, sources their lines went to), until it logs again (_find_silences)
        self._awaiting = {}
        self.silences = []     # (source, since, until) its steps were skipped in: for the engine
        self._resumed = False
        self._grace_until = None   # sessions opening before this may have begun unseen
        self._gap_start = None     # the start of an input gap in the batch being scored (_after_gap)
        self._clock = None     # latest line time learned, on this tier's own timeline
        self._behind = False   # the engine's watermark belongs to an earlier, later-ending file
        self._since_decay = 0
        self._runs_since_decay = np.zeros(0, np.int64)   # learned runs per workflow since counts shrank
        self._core_closed = 0
        self.learned_lines = 0
        self.pruned = 0
        self.findings_dropped = 0

    # ------------------------------------------------------------ per batch

    def score(self, batch, ctx):
        n = batch.n
        scores = np.zeros(n, np.float32)
        if not self.enabled or n == 0:
            return TierResult(scores)
        self._ctx = ctx
        tids = np.ascontiguousarray(batch.template_id, np.int32)
        self._note_sources(tids, batch.source_id)
        keys, ks, ke = self.locator.keys(batch, ctx.n_templates, ctx.ts)
        wf, prev, open_wf = self._walk(batch, keys, tids, ctx)
        result = TierResult(scores)
        ts = np.ascontiguousarray(ctx.ts, np.float64)
        if ctx.gaps:
            self._after_gap(ctx.gaps[-1], ts)
        spared = None
        if ctx.warm:
            result.scores, why = sk.score_transitions(wf, prev, tids, ts, self._grace(ts), self.tkeys, self.tcnt,
                                                      self.min_support, self.rare_p, self.top)
            spared = self._spare_quiet_sources(result.scores, why, wf, prev, tids, ts, batch.source_id, keys)
            self._explain(result, why, wf, prev, tids, batch.source_id)
        self.liveness.add(batch.source_id, ts)
        self._cache = (batch, keys, ks, ke, prev, open_wf, result.scores, spared)
        return result

    def _spare_quiet_sources(self, scores, why, wf, prev, tids, ts, sources, keys):
        """A step skipped, or a session met without its first step, while the service that logs that step
        was quiet (a deploy restarting it, lines lost on its way) is that service's silence, which tier 2
        judges and holds a while for a restart: not a broken workflow of every session meanwhile. Returns
        the lines spared (batch line numbers), or None: they are not learned either (see learn)."""
        flagged = np.flatnonzero(scores > 0)
        if flagged.size == 0:
            if self._awaiting:
                self._find_silences({}, {}, ts, sources)
            return None
        spared = []
        k, c = self._rows()
        awaited, recent, skipped = {}, {}, {}
        for i in flagged.tolist():
            case = (int(why[i]), int(wf[i]), int(prev[i]), int(tids[i]))
            if case not in awaited:
                awaited[case] = self._awaited_source(*case, k, c)
            src = awaited[case]
            if src < 0:
                continue
            if src not in recent:
                recent[src] = np.sort(ts[sources == src])
            if self.liveness.quiet(src, float(ts[i]), recent[src]):
                scores[i] = 0.0
                spared.append(i)
            else:
                skipped.setdefault(src, []).append(i)
        if skipped:
            flagged = np.concatenate([np.asarray(v, np.int64) for v in skipped.values()])
            due = dict(zip(flagged.tolist(), self._previous_step_times(keys, ts, flagged).tolist()))
            # per source: (the skips' times, when each skipped step was due, the sources whose incidents
            # their lines went to: blamed on src, or their own for a session met without its first step)
            skipped = {src: (ts[v], np.array([due[i] for i in v]), set(sources[v].tolist()) | {src})
                       for src, v in skipped.items()}
        self._find_silences(skipped, recent, ts, sources)
        return np.asarray(spared, np.int64) if spared else None

    def _previous_step_times(self, keys, ts, lines):
        """Time of the line before each of `lines` in its session (in this batch, else the open session's
        latest), or the line's own time when it opened its session: when the step it shows skipped was due."""
        out = ts[lines].astype(np.float64)
        known = {}
        at = {i: j for j, i in enumerate(lines.tolist())}
        for i in np.flatnonzero(np.isin(keys, keys[lines])).tolist():   # batch lines in log order
            j = at.get(i)
            if j is not None:
                g = sk.ht_find(self.store.ix_key, np.int64(keys[i]))
                if keys[i] in known:
                    out[j] = known[keys[i]]
                elif g >= 0:
                    out[j] = self.store.lastts[self.store.ix_slot[g]]
            known[keys[i]] = ts[i]
        return np.minimum(out, ts[lines])

    def _find_silences(self, skipped, recent, ts, sources):
        """Spans in which a service whose steps sessions skipped logged nothing for QUIET_GAPS of its mean
        gaps while those steps were due, found once it logs again. skipped: by source, (the skips' times,
        when each skipped step was due, the sources whose incidents their lines went to). A deploy
        restarting a busy service is silent for less than that when the first sessions go on without it,
        so they were flagged; its next line shows their steps were all due in its silence, its outage
        (tier 2's to judge), and the engine excuses them (IncidentBook.excuse): from its line before
        the silence to the last such skip, which may come just after it is back (an order confirmed a
        moment after the payment service's start-up lines, its payment due while it was down).
        Causal: a span closes with a later line of the service."""
        for src in set(skipped) | set(self._awaiting):
            if src not in recent:
                recent[src] = np.sort(ts[sources == src])
            lines = recent[src]
            spans = {}     # its latest line before a skipped step was due -> [last skip, sources]
            if src in self._awaiting:
                since, last, landed = self._awaiting.pop(src)
                spans[since] = [last, set(landed)]
            if src in skipped:
                times, dues, landed = skipped[src]
                at = np.searchsorted(lines, dues) - 1          # its latest line before each step was due
                # none in the batch: its latest, unless it logged after the step was due (it was up then)
                last = self.liveness.last_line(src)
                before = np.where(at >= 0, lines[np.maximum(at, 0)], np.where(dues >= last, last, np.nan))
                for since, t in zip(before.tolist(), times.tolist()):
                    if math.isfinite(since):
                        span = spans.setdefault(since, [t, set()])
                        span[0] = max(span[0], t)
                        span[1] |= landed
            for since, (last, landed) in sorted(spans.items()):
                j = int(np.searchsorted(lines, since, side="right"))
                if j == lines.size:
                    self._awaiting[src] = (since, last, landed)   # no line of it since: a later batch decides
                elif self._silent_between(src, since, float(lines[j])):
                    until = max(last, float(lines[j]))
                    self.silences += [(sid, since, until) for sid in sorted(landed)]

    def _silent_between(self, sid, since, until):
        """Whether source sid's gap between two of its lines is QUIET_GAPS of its recent mean gaps (the
        test SourceLiveness.quiet makes at one moment, made of a whole gap)."""
        lv = self.liveness
        return 0 <= sid < lv.lines.size and lv.lines[sid] >= QUIET_MIN_LINES and \
            until - since >= QUIET_GAPS * lv.mean_gap(sid)

    def take_silences(self):
        """[(source id, since, until)] found since the last call: skipped steps that went to that source's
        incidents fell between since and until, a silence of the service that logs them (_find_silences)."""
        found, self.silences = self.silences, []
        return found

    def _awaited_source(self, code, w, p, t, k, c):
        """Source of the step a line shows missing: the skipped one, or the one that comes before t
        where t never opens a session (-1: none known)."""
        if code == sk.WHY_UNKNOWN_START:
            rows = ((k & sk.CODE_MASK) == t) & (((k >> sk.CODE_BITS) & sk.CODE_MASK) < sk.IN)
            if not rows.any():
                return -1
            before = int((k[rows] >> sk.CODE_BITS)[np.argmax(c[rows])] & sk.CODE_MASK)
            return int(self.tpl_src[before]) if 0 <= before < self.tpl_src.size else -1
        return self._skipped_source(code, w, p, t, k, c)

    def _after_gap(self, gap, ts):
        """Lines were lost in the input's gap (a collector down, see BatchContext.gaps): a session open
        across it may have lost its next steps and one opening after it its first, so neither is judged.
        The sessions not continued past the gap's start are dropped once the batch is learned."""
        self._grace_until = max(self._grace(ts), gap[1] + self.timeout)
        self._gap_start = gap[0]

    def _drop_cut_sessions(self):
        st = self.store
        cut = np.flatnonzero((st.key >= 0) & (st.lastts <= self._gap_start)).astype(np.int32)
        sk.evict_slots(cut, st.ix_key, st.ix_slot, st.key, st.free, self.counters)
        self._gap_start = None

    def _note_sources(self, tids, sources):
        top = int(tids.max()) + 1 if tids.size else 0
        if top > self.tpl_src.size:
            grown = np.full(_pow2_at_least(top), -1, np.int32)
            grown[:self.tpl_src.size] = self.tpl_src
            self.tpl_src = grown
        ok = tids >= 0
        self.tpl_src[tids[ok]] = sources[ok]     # the last line of each template wins

    def _walk(self, batch, keys, tids, ctx):
        """(workflow, previous template, workflow each line would open) per line."""
        st = self.store
        _, prev = sk.walk_sessions(keys, tids, tids, st.ix_key, st.ix_slot, st.wf, st.last)
        rows = np.flatnonzero(prev == sk.START)   # which lines open sessions; then name their workflows
        open_wf = np.full(batch.n, -1, np.int32)
        if rows.size:
            open_wf[rows] = self.workflows.open_ids(batch, rows, ctx.template_text)
        wf, prev = sk.walk_sessions(keys, tids, open_wf, st.ix_key, st.ix_slot, st.wf, st.last)
        return wf, prev, open_wf

    def learn(self, batch, ctx, weights):
        if not self.enabled or batch.n == 0:
            return
        self._ctx = ctx
        tids = np.ascontiguousarray(batch.template_id, np.int32)
        spared = None
        if self._cache is not None and self._cache[0] is batch:
            _, keys, ks, ke, prev, open_wf, scores, spared = self._cache
        else:
            keys, ks, ke = self.locator.keys(batch, ctx.n_templates, ctx.ts)
            _, prev, open_wf = self._walk(batch, keys, tids, ctx)
            scores = np.zeros(batch.n, np.float32)
        self._cache = None
        w = np.array(weights, np.float32)     # a copy: the engine's weights are every tier's
        if self.learning_rate <= 0:
            w[:] = 0.0
        if spared is not None:
            # A session that skipped a step while the step's service logged nothing (an outage, a deploy)
            # is not how the workflow goes: learned, an hour's outage taught that the step may be skipped
            # (2% of sessions), and a later loss of that step alone raised nothing. Weight 0 also keeps
            # the session's ending and composition unlearned (sd_minw).
            w[spared] = 0.0
        self._ensure_workflows(len(self.workflows))
        opening = np.flatnonzero(prev == sk.START)
        st = self.store
        ts = np.ascontiguousarray(ctx.ts, np.float64)
        grace = self._grace(ts)
        if self._make_room(opening.size) and ts.size and math.isfinite(float(ts.max())):
            # Lines of evicted sessions will look like sessions opening mid-way: not judged for a while.
            grace = self._grace_until = max(grace, float(ts.max()) + self.timeout)
        sk.learn_lines(keys, tids, open_wf, ts, w, scores,
                       np.ascontiguousarray(batch.source_id, np.int32), batch.buf, ks, ke,
                       st.ix_key, st.ix_slot, st.key, st.wf, st.last, st.start, st.lastts, st.steps,
                       st.ntpl, st.tpl, st.flags, st.minw, st.maxscore, st.src, st.ids, st.idlen,
                       st.free, self.tkeys, self.tcnt, self.counters, self.max_transitions, grace)
        if self._gap_start is not None:
            self._drop_cut_sessions()
        self.workflows.probe(batch, opening)
        learned_runs = opening[w[opening] > 0]
        self._count_runs(open_wf[learned_runs])
        self._note_starts(open_wf[learned_runs], ts[learned_runs])
        learned = int(np.count_nonzero((w > 0) & (keys >= 0)))
        latest = float(np.max(ctx.ts))
        if math.isfinite(latest):
            if self._clock is not None and latest < self._clock - self.timeout:
                self._behind = True   # time went back: a replay moved on to its next file
            self._clock = latest if self._behind or self._clock is None else max(self._clock, latest)
        self.learned_lines += learned
        self._forget(learned)
        self.pending += self._window_findings(self.window.add(ctx.ts, tids.astype(np.int64), w,
                                                              self.learning_rate))

    def advance(self, event_time):
        if not self.enabled:
            return []
        if self._resumed:
            self._drop_all_sessions()
        findings, self.pending = self.pending, []
        if event_time is None or not math.isfinite(event_time):
            return self._cap(findings)
        if self._behind:
            # Judge sessions by the time of the lines they came with: the engine's watermark, still at
            # the end of the previous file, would end every session of this one at once.
            if event_time <= self._clock:
                self._behind = False
            event_time = min(event_time, self._clock)
        if self.window.seconds > 0 and not math.isnan(self.window.current) \
                and event_time >= (self.window.current + 2) * self.window.seconds:
            # No line for a whole window: judge the open one instead of waiting for the next line.
            findings += self._window_findings(self.window.close(self.learning_rate))
            self.window.current = math.floor(event_time / self.window.seconds)
        self._refresh_core()
        st = self.store
        slots, verdicts, missing = sk.close_sessions(
            float(event_time), self.timeout, self.learning_rate, REPORTED_FRACTION * self.top, self.min_support,
            self.min_runs, self.sigmas, st.ix_key, st.ix_slot, st.key, st.wf, st.last, st.start, st.lastts, st.ntpl, st.tpl,
            st.flags, st.minw, st.maxscore, st.free, self.tkeys, self.tcnt, self.counters, self.max_transitions,
            self.dur_n, self.dur_mean, self.dur_var, self.core_ptr, self.core_tid)
        if slots.size and self._ctx is not None and self._ctx.warm:
            findings += self._session_findings(slots, verdicts, missing, float(event_time))
        return self._cap(findings)

    def _grace(self, ts):
        """Until when new sessions may have begun before the tier was watching (start, restart, re-enable)."""
        if self._grace_until is None:
            first = float(np.min(ts)) if ts.size else math.nan
            if math.isfinite(first):
                self._grace_until = first + self.timeout
        return -math.inf if self._grace_until is None else self._grace_until

    # ------------------------------------------------------------ bounds and forgetting

    def _ensure_workflows(self, n):
        if n <= self.dur_n.size:
            return
        size = _pow2_at_least(n)
        for name in ("dur_n", "dur_mean", "dur_var", "last_start", "log_gap", "log_gap_n"):
            grown = np.full(size, np.nan) if name == "last_start" else np.zeros(size)
            old = getattr(self, name)
            grown[:old.size] = old
            setattr(self, name, grown)

    def _make_room(self, needed):
        """Evict the least recently active sessions so a batch's new sessions fit; return how many."""
        st = self.store
        short = needed - int(st.free[0])
        if short <= 0:
            return 0
        used = np.flatnonzero(st.key >= 0)
        k = min(used.size, short + max(1, st.size // 100))
        if k <= 0:
            return 0
        oldest = used[np.argpartition(st.lastts[used], k - 1)[:k]] if k < used.size else used
        sk.evict_slots(oldest.astype(np.int32), st.ix_key, st.ix_slot, st.key, st.free, self.counters)
        return k

    def _drop_all_sessions(self):
        st = self.store
        sk.evict_slots(np.flatnonzero(st.key >= 0).astype(np.int32), st.ix_key, st.ix_slot, st.key, st.free,
                       self.counters)
        self.window.current = math.nan
        self.window.counts[:] = 0
        self.window.unlearned = 0
        self._resumed = False
        self._grace_until = None

    def _count_runs(self, wfs):
        """Runs (sessions opened and learned) of each workflow since the counts last shrank."""
        wfs = wfs[(wfs >= 0) & (wfs < sk.MAX_TEMPLATE)]
        top = max(len(self.workflows), int(wfs.max()) + 1 if wfs.size else 0)
        if top > self._runs_since_decay.size:
            grown = np.zeros(_pow2_at_least(top), np.int64)
            grown[:self._runs_since_decay.size] = self._runs_since_decay
            self._runs_since_decay = grown
        if wfs.size:
            self._runs_since_decay += np.bincount(wfs, minlength=self._runs_since_decay.size)

    def _note_starts(self, wfs, ts):
        """Learn the time between the starts of each workflow's runs (mean log gap, learning_rate)."""
        ok = (wfs >= 0) & (wfs < self.last_start.size) & np.isfinite(ts)
        wfs, ts = wfs[ok].astype(np.int64), ts[ok]
        if wfs.size == 0:
            return
        order = np.lexsort((ts, wfs))
        wfs, ts = wfs[order], ts[order]
        first = np.r_[True, wfs[1:] != wfs[:-1]]
        prev = np.where(first, self.last_start[wfs], np.r_[np.nan, ts[:-1]])   # nan: no run before
        measured = ~np.isnan(prev)
        gaps = np.log1p(np.maximum(ts - np.where(measured, prev, ts), 0.0))
        group = np.cumsum(first) - 1
        flows = wfs[first]
        n = np.bincount(group, weights=measured)
        total = np.bincount(group, weights=np.where(measured, gaps, 0.0))
        self.last_start[flows] = np.maximum.reduceat(ts, np.flatnonzero(first))
        got = n > 0
        flows, n, total = flows[got], n[got], total[got]
        a = np.maximum(1.0 / (self.log_gap_n[flows] + n), np.minimum(self.learning_rate * n, 1.0))
        self.log_gap[flows] += a * (total / n - self.log_gap[flows])
        self.log_gap_n[flows] += n

    def _runs_alone(self, w):
        """Whether workflow w's runs come alone: usually further apart than the session timeout (a cron
        job, a nightly backup). One run of such a job cut short is the job failing, not one instance of
        many (one order of thousands whose worker restarted): its Finding stands for the workflow."""
        return (0 <= w < self.log_gap.size and self.log_gap_n[w] >= self.min_runs
                and math.expm1(self.log_gap[w]) >= self.timeout)

    def _forget(self, learned):
        """Shrink counts at the learning rate so workflows that change are relearned; prune when full.

        A workflow's counts shrink per run of it, at most per DECAY_LINES learned lines: a nightly job's
        few runs would otherwise be forgotten by the lines of the busy workflows between two nights
        (30 shrinks a day at 300k lines), and it could never be judged. A busy workflow (more runs than
        that) shrinks per lines as before; the session starts and template shares (GLOBAL rows) are of
        all workflows and shrink per lines.
        """
        self._since_decay += learned
        if self._since_decay >= DECAY_LINES:
            keep = 1.0 - min(self.learning_rate, 1.0)
            per_lines = self._since_decay / DECAY_LINES
            wf_factor = keep ** np.minimum(self._runs_since_decay, per_lines).astype(np.float64)
            sk.decay_counts(self.tkeys, self.tcnt, wf_factor, keep ** per_lines)
            self._runs_since_decay[:] = 0
            self._since_decay = 0
        if self.counters[sk.C_TRANS_SIZE] < PRUNE_AT * self.max_transitions:
            return
        used = np.flatnonzero(self.tkeys >= 0)
        keep = int(PRUNE_TO * self.max_transitions)
        kept = used[np.argpartition(-self.tcnt[used], keep - 1)[:keep]]
        self.tkeys, self.tcnt = sk.ht_rebuild(self.tkeys[kept], self.tcnt[kept], self.tkeys.size)
        self.pruned += used.size - kept.size
        self.counters[sk.C_TRANS_SIZE] = kept.size

    def _refresh_core(self):
        """Each workflow's core steps: templates whose absence is rare with confidence (core_miss_bound).

        A step missing from 3% of sessions (a branch that ends early) looks core in the first hundred
        sessions by chance; the bound waits until enough sessions show it is missing from fewer than
        1 - core_step_fraction of them. Recomputed from the table after enough sessions ended: often early, then every CORE_REFRESH_SESSIONS.
        """
        closed = int(self.counters[sk.C_CLOSED])
        if closed - self._core_closed < min(CORE_REFRESH_SESSIONS, max(100, closed // 2)):
            return
        self._core_closed = closed
        k, c = self._rows()
        wf, prev, nxt = k >> (2 * sk.CODE_BITS), (k >> sk.CODE_BITS) & sk.CODE_MASK, k & sk.CODE_MASK
        n_wf = self.dur_n.size
        comp = (prev == sk.IN) & (wf < n_wf)
        totals = np.zeros(n_wf)
        is_total = comp & (nxt == sk.ANY)
        totals[wf[is_total]] = c[is_total]
        rows = comp & (nxt != sk.ANY)
        tot = totals[wf[rows]]
        core = (tot >= self.min_support) & (core_miss_bound(tot - c[rows], tot) <= 1.0 - self.core_fraction)
        cw, ct = wf[rows][core], nxt[rows][core]
        order = np.lexsort((ct, cw))
        self.core_tid = ct[order].astype(np.int32)
        self.core_ptr = np.zeros(n_wf + 1, np.int64)
        self.core_ptr[1:] = np.cumsum(np.bincount(cw, minlength=n_wf))

    def _rows(self):
        used = self.tkeys >= 0
        return self.tkeys[used], self.tcnt[used]

    def _cap(self, findings):
        if len(findings) > self.max_findings:
            self.findings_dropped += len(findings) - self.max_findings
            findings.sort(key=lambda f: -f.score)
            findings = findings[:self.max_findings]
        return findings

    # ------------------------------------------------------------ explanations

    def _flow_text(self, w):
        """A workflow as shown: its first template, with the parameter value that names the variant."""
        if not 0 <= w < len(self.workflows):
            return str(w)
        label = self.workflows.label[w]
        return self._text(self.workflows.template[w]) + (f" [{label}]" if label else "")

    def _text(self, tid):
        if tid == sk.START:
            return "(start)"
        if tid == sk.END:
            return "(end)"
        text = self._ctx.template_text(int(tid)) if self._ctx is not None else str(tid)
        text = str(text)
        return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 3] + "..."

    def _likely_next(self, contexts, k, c):
        """{(workflow, previous): "'A' 80%, 'B' 15%"} for the given contexts, from one pass over the table."""
        hi = k >> sk.CODE_BITS
        nxt = k & sk.CODE_MASK
        wanted = np.array([(w << sk.CODE_BITS) | p for w, p in contexts], np.int64)
        sel = np.isin(hi, wanted) & (nxt != sk.ANY)
        out = {}
        for h in np.unique(hi[sel]).tolist():
            rows = sel & (hi == h)
            total = c[rows].sum()
            best = np.argsort(-c[rows])[:3]
            parts = [f"'{self._text(t)}' {_percent(v / total)}"
                     for t, v in zip(nxt[rows][best].tolist(), c[rows][best].tolist()) if total > 0]
            out[(h >> sk.CODE_BITS, h & sk.CODE_MASK)] = ", ".join(parts)
        return out

    def _explain(self, result, why, wf, prev, tids, sources):
        lines = np.flatnonzero(result.scores >= EXPLAIN_FRACTION * self.top)[:MAX_EXPLAINED]
        if lines.size == 0:
            return
        cases = {}   # one text per (why, workflow, previous, template): a broken workflow repeats them
        for i in lines.tolist():
            cases.setdefault((int(why[i]), int(wf[i]), int(prev[i]), int(tids[i])), []).append(i)
        k, c = self._rows()
        likely = self._likely_next({(sk.GLOBAL, sk.START) if p == sk.START else (w, p) for _, w, p, _ in cases},
                                   k, c)
        for (code, w, p, t), idx in cases.items():
            reason, expected, observed = self._case_text(code, w, p, t, likely)
            skipped = self._skipped_source(code, w, p, t, k, c)
            for i in idx:
                result.reasons[i], result.expected[i], result.observed[i] = reason, expected, observed
                if 0 <= skipped != sources[i]:
                    result.blame[i] = skipped

    def _skipped_source(self, code, w, p, t, k, c):
        """Source of the step that should have come between p and t (-1: none, or not a skip): a known
        step arriving where another usually comes, in a workflow across services, means the usual one
        was skipped, and the service that should have logged it is where to look."""
        if code not in (sk.WHY_UNKNOWN_TRANSITION, sk.WHY_RARE_TRANSITION):
            return -1
        awaited = self._top_next(w, p, k, c)
        if awaited < 0 or awaited == t or awaited >= self.tpl_src.size:
            return -1
        return int(self.tpl_src[awaited])

    def _case_text(self, code, w, p, t, likely):
        observed = f"'{self._text(p)}' -> '{self._text(t)}'"
        if code == sk.WHY_UNKNOWN_START:
            return (f"session opens with a step that never opens sessions: '{self._text(t)}'",
                    "sessions open with " + likely.get((sk.GLOBAL, sk.START), "?"), observed)
        flow = self._flow_text(w)
        if code == sk.WHY_UNKNOWN_STEP:
            reason = f"step never seen in workflow '{flow}': '{self._text(t)}'"
        elif code == sk.WHY_UNKNOWN_TRANSITION:
            reason = f"unexpected order in workflow '{flow}': '{self._text(t)}' never follows '{self._text(p)}'"
        else:
            reason = f"rare order in workflow '{flow}': '{self._text(t)}' after '{self._text(p)}'"
        return reason, f"after '{self._text(p)}': " + likely.get((w, p), "?"), observed

    def _session_findings(self, slots, verdicts, missing, now):
        st = self.store
        k, c = self._rows()
        endings = {}
        likely = self._likely_next({(int(st.wf[s]), int(st.last[s])) for s in slots.tolist()}, k, c)
        out = []
        for s, verdict, miss in zip(slots.tolist(), verdicts.tolist(), missing.tolist()):
            w, last = int(st.wf[s]), int(st.last[s])
            awaited = miss if verdict == sk.CLOSED_MISSING_STEP else self._top_next(w, last, k, c)
            # a missing step was due somewhere in the session; the next one, after its last step
            due_from = float(st.start[s]) if verdict == sk.CLOSED_MISSING_STEP else float(st.lastts[s])
            if self._awaited_quiet(awaited, float(st.lastts[s]), now, due_from):
                continue     # it waits, or waited, on a quiet service: that silence is tier 2's
            if w not in endings:
                endings[w] = self._endings(w, k, c)
            then = f"after '{self._text(last)}': {likely.get((w, last), '?')}; sessions end after {endings[w]}"
            took = st.lastts[s] - st.start[s]
            observed = f"last step '{self._text(last)}' after {st.steps[s]} lines in {took:.1f} s"
            flow = self._flow_text(w)
            if verdict == sk.CLOSED_MISSING_STEP:
                reason = f"session of workflow '{flow}' ended without step '{self._text(miss)}'"
                expected = f"'{self._text(miss)}' is in at least {100 * self.core_fraction:.1f}% of its sessions"
            elif verdict == sk.CLOSED_NEW_ENDING:
                runs = self._runs_of(w, k, c) - float(st.minw[s])   # this session was learned already
                reason = f"session of workflow '{flow}' ended after '{self._text(last)}', where none of its " \
                         f"{runs:.0f} runs ended"
                expected = then
            elif verdict == sk.CLOSED_OVERDUE:
                limit = sk.duration_limit(self.dur_mean[w], self.dur_var[w], self.sigmas)
                reason = f"session of workflow '{flow}' open {now - st.start[s]:.0f} s (learned at most " \
                         f"{limit:.0f} s) and not finished"
                expected = then
            else:
                reason = f"session of workflow '{flow}' never finished: stopped after '{self._text(last)}'"
                expected = then
            kind = "run:" if self._runs_alone(w) else "session:"   # engine: a run stands for its workflow
            out.append(Finding(tier=self.name, ts=float(st.lastts[s]), key=kind + st.id_text(s),
                               score=self.top, reason=reason, expected=expected, observed=observed,
                               template_id=self.workflows.template[w], source=self._finding_source(s, awaited)))
        return out

    @staticmethod
    def _runs_of(w, k, c):
        """Learned (decayed) runs of workflow w: its composition total."""
        rows = k == sk.pack(w, sk.IN, sk.ANY)
        return float(c[rows].sum())

    @staticmethod
    def _top_next(w, last, k, c):
        """The step that most often follows `last` in workflow w (-1: none learned)."""
        rows = ((k >> sk.CODE_BITS) == ((w << sk.CODE_BITS) | last)) & ((k & sk.CODE_MASK) < sk.IN)
        return int(k[rows][np.argmax(c[rows])] & sk.CODE_MASK) if rows.any() else -1

    def _awaited_quiet(self, awaited, last_step, now, due_from):
        """Whether the service that logs the awaited step has logged nothing since the session's last step
        and is quiet now: the session waits on that service's silence (see _spare_quiet_sources); or was
        silent between due_from and the last step, when the step was due, and is back: a deploy restarted
        it, and the sessions it left behind are found only a session timeout later, when it logs again."""
        sid = int(self.tpl_src[awaited]) if 0 <= awaited < self.tpl_src.size else -1
        if sid < 0:
            return False
        return (self.liveness.last_line(sid) <= last_step and self.liveness.quiet(sid, now)
                or self.liveness.silent_while(sid, due_from, last_step))

    def _finding_source(self, s, awaited):
        """The source of the step a session awaited when it is known, else the session's own."""
        sid = int(self.tpl_src[awaited]) if 0 <= awaited < self.tpl_src.size else -1
        if sid < 0:
            sid = int(self.store.src[s])
        return str(self._ctx.source_name(sid)) if self._ctx is not None else ""

    def _endings(self, w, k, c):
        rows = ((k >> (2 * sk.CODE_BITS)) == w) & ((k & sk.CODE_MASK) == sk.END)
        prev = (k[rows] >> sk.CODE_BITS) & sk.CODE_MASK
        best = np.argsort(-c[rows])[:3]
        return ", ".join(f"'{self._text(p)}'" for p in prev[best].tolist()) or "?"

    def _window_findings(self, unusual):
        out = []
        for start, x, expected, r, z, log10p in unusual:
            dims = np.argsort(-np.abs(r))[:3].tolist()
            names = [f"'{self._text(int(self.window.dim_tid[d]))}'" for d in dims]
            out.append(Finding(tier=self.name, ts=start + self.window.seconds,
                               key=f"window:{start:.0f}", score=min(self.top, -10.0 * log10p),
                               reason=f"unusual mix of templates in a {self.window.seconds:.0f} s window "
                                      f"({z:.0f} deviations off the learned structure)",
                               expected="; ".join(f"{n} {100 * max(expected[d], 0.0) ** 2:.1f}% of lines"
                                                  for n, d in zip(names, dims)),
                               observed="; ".join(f"{n} {100 * x[d] ** 2:.1f}% of lines" for n, d in zip(names, dims)),
                               template_id=int(self.window.dim_tid[dims[0]])))
        return out

    # ------------------------------------------------------------ state and stats

    @property
    def stats(self):
        c = self.counters
        return {"sessions_open": self.store.open, "sessions_opened_total": int(c[sk.C_OPENED]),
                "sessions_closed_total": int(c[sk.C_CLOSED]), "sessions_evicted_total": int(c[sk.C_EVICTED]),
                "session_lines_dropped_total": int(c[sk.C_DROPPED]), "transitions": int(c[sk.C_TRANS_SIZE]),
                "transitions_dropped_total": int(c[sk.C_TRANS_DROPPED]), "transitions_pruned_total": self.pruned,
                "findings_dropped_total": self.findings_dropped, "regex_lines_total": self.locator.regex_lines,
                "locator_redecisions_total": self.locator.redecisions, "learned_id_templates": self.locator.learned,
                "windows_closed_total": self.window.closed,
                "windows_flagged_total": self.window.flagged, "workflows": len(self.workflows),
                "workflows_overflow_total": self.workflows.overflow, "learned_lines_total": self.learned_lines}

    def state(self):
        k, c = self._rows()
        return {"version": 2, "patterns": self.patterns, "locator": self.locator.state(),
                "workflows": self.workflows.state(),
                "sessions": self.store.state(), "transition_keys": k.tolist(), "transition_counts": c.tolist(),
                "counters": self.counters.tolist(), "dur_n": self.dur_n.tolist(), "dur_mean": self.dur_mean.tolist(),
                "dur_var": self.dur_var.tolist(),
                "last_start": [None if math.isnan(v) else v for v in self.last_start.tolist()],
                "log_gap": self.log_gap.tolist(), "log_gap_n": self.log_gap_n.tolist(), "window": self.window.state(), "learned_lines": self.learned_lines,
                "pruned": self.pruned, "findings_dropped": self.findings_dropped}

    def load_state(self, state):
        self._cold_start()
        if not state or state.get("version") != 2:
            return
        if state.get("patterns") == self.patterns:
            # Locators found with other patterns would cut out the wrong ids.
            self.locator.load_state(state.get("locator", {}))
            if not self.learn_ids:   # ids learned while learning was on are forgotten with it
                self.locator.mode[self.locator.mode == MODE_PARAM] = MODE_NONE
        k = np.asarray(state.get("transition_keys", []), np.int64)
        c = np.asarray(state.get("transition_counts", []), np.float64)
        keep = min(k.size, self.max_transitions)
        self.tkeys, self.tcnt = sk.ht_rebuild(k[:keep], c[:keep], self.tkeys.size)
        self.counters[:] = np.asarray(state.get("counters", self.counters), np.int64)[:sk.N_COUNTERS]
        self.counters[sk.C_TRANS_SIZE] = keep
        for name in ("dur_n", "dur_mean", "dur_var"):
            setattr(self, name, np.asarray(state.get(name, getattr(self, name)), np.float64))
        # the runs' gaps (absent in states saved before them: learned again); as long as dur_n
        n = self.dur_n.size
        starts = [np.nan if v is None else v for v in state.get("last_start", [])]
        for name, values, empty in (("last_start", starts, np.nan), ("log_gap", state.get("log_gap", []), 0.0),
                                    ("log_gap_n", state.get("log_gap_n", []), 0.0)):
            arr = np.full(n, empty)
            values = np.asarray(values, np.float64)[:n]
            arr[:values.size] = values
            setattr(self, name, arr)
        self.workflows.load_state(state.get("workflows", {}))
        self.store.load_state(state.get("sessions", {}))
        self.window.load_state(state.get("window", {}))
        self.learned_lines = int(state.get("learned_lines", 0))
        self.pruned = int(state.get("pruned", 0))
        self.findings_dropped = int(state.get("findings_dropped", 0))
