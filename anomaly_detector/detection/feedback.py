"""Operator feedback: rules that make a template (or a source-wide kind) of one source normal, or a known problem.

The sidecar (metrics/admin.py, POST /admin/feedback) checks a request and rewrites the rules file
<state_dir>/feedback.json (save_rules: atomic, fsynced); every detector worker stats it at batch
boundaries (RulesFile.poll) and hands the rules to its engine's FeedbackMatcher (engine.py), so a
rule reaches every worker whichever sources it reads. A rule names a source and template texts
(texts: each worker matches them against its own templates, which may have widened differently) and, for an incident about a whole source, its kind:

- normal: lines of that source and template score 0 in every tier (neither flagged nor suspicious,
  so they join no incident; they are learned as normal lines); findings of that source about one
  of its templates, or of one of its kinds about the whole source, raise nothing;
- problem: lines of that source and template score at least the anomaly threshold, with the reason
  "known problem", so incident_min_lines of them within incident_window_seconds raise an incident
  of kind known_problem.

The file outlives restarts and reloads; a worker also keeps in its snapshot which of its template
ids a rule matched (FeedbackMatcher.state), so a template the miner widens later stays covered.
docs/detection.md (Feedback) and docs/http.md are the operator's pages.
"""
import hashlib
import json
import logging
import os
import time

import numpy as np

from anomaly_detector.storage.atomic import replace_file

log = logging.getLogger(__name__)
RULES_FILE = "feedback.json"
FILE_VERSION = 1
VERDICTS = ("normal", "problem")
NONE, NORMAL, PROBLEM = 0, 1, 2
_CODE = {"normal": NORMAL, "problem": PROBLEM}
KNOWN_PROBLEM = "known problem: template marked a problem by feedback"
MAX_TEMPLATE_CHARS = 4096
MAX_SOURCE_CHARS = 512


def rules_path(state_dir):
    return os.path.join(state_dir, RULES_FILE)


def rule_id(source, templates, kinds):
    """Stable id of what a rule covers: feedback on the same source, templates and kinds replaces it."""
    key = json.dumps([source, sorted(templates), sorted(kinds)], ensure_ascii=False)
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def make_rule(verdict, source, templates, kinds=(), incident="", client="", now=None):
    templates, kinds = sorted(set(templates)), sorted(set(kinds))
    return {"id": rule_id(source, templates, kinds), "verdict": verdict, "source": source,
            "templates": templates, "kinds": kinds, "incident": incident, "from": client,
            "created": time.time() if now is None else now}


def check_rule(rule):
    """The rule as read from the file; ValueError naming what is wrong."""
    if not isinstance(rule, dict):
        raise ValueError("a rule is not an object")
    if rule.get("verdict") not in VERDICTS:
        raise ValueError("rule verdict %r is not one of %s" % (rule.get("verdict"), ", ".join(VERDICTS)))
    for key in ("id", "source", "incident", "from"):
        if not isinstance(rule.get(key), str):
            raise ValueError("rule %s is not a string" % key)
    for key in ("templates", "kinds"):
        if not isinstance(rule.get(key), list) or not all(isinstance(x, str) for x in rule[key]):
            raise ValueError("rule %s is not a list of strings" % key)
    if not isinstance(rule.get("created"), (int, float)):
        raise ValueError("rule created is not a number")
    return rule


def load_rules(path):
    """The rules in the file ([] when there is none); OSError or ValueError when it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return []
    if not isinstance(data, dict) or data.get("version") != FILE_VERSION or not isinstance(data.get("rules"), list):
        raise ValueError("%s: not a feedback rules file of version %d" % (path, FILE_VERSION))
    return [check_rule(rule) for rule in data["rules"]]


def save_rules(path, rules):
    """Replace the file atomically (temporary file fsynced, renamed, directory fsynced): a reader sees the
    old rules or the new ones, and a crash keeps one of them."""
    payload = json.dumps({"version": FILE_VERSION, "rules": rules}, ensure_ascii=False, sort_keys=True)
    replace_file(path, payload.encode("utf-8"))


class RulesFile:
    """A worker's view of the rules file: poll() costs one stat and reads the file only when it changed."""

    def __init__(self, path, who):
        self.path, self.who = path, who
        self._seen = False     # never polled: the first poll returns the rules, [] without a file
        self._failed = None

    def poll(self):
        """The rules when the file changed since the last poll (a removed file: []), else None. A file that
        cannot be read keeps the rules the worker has (logged once per change of the file)."""
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        except OSError as exc:
            return self._fail(("stat", str(exc)), exc)
        if seen == self._seen:
            return None
        try:
            rules = load_rules(self.path)
        except (OSError, ValueError) as exc:
            return self._fail(seen, exc)
        self._seen, self._failed = seen, None
        return rules

    def _fail(self, key, exc):
        if key != self._failed:
            self._failed = key
            log.error("%s: feedback rules file %s unusable (%s); the rules already applied stay", self.who,
                      self.path, exc)
        return None


class FeedbackMatcher:
    """The engine's side: which lines and findings the rules cover.

    Per batch, verdicts() looks at each distinct (source, template) pair of the batch once: a pair is
    decided by the template ids a rule already matched here (bindings, kept in the snapshot), else by
    its template text, and the answer is cached until the rules or the templates change.
    """

    def __init__(self, recent_templates=1000):
        self.rules = {}          # rule id -> rule
        # the (source, template) pairs seen last: what POST /admin/feedback may name (incident_view.py)
        self.recent = RecentPairs(recent_templates)
        self._texts = {}         # (source, template text) -> rule id
        self._kinds = {}         # (source, kind) -> rule id
        self._bound = {}         # (source, template id) -> rule id: what matched here, kept across widening
        self._cache = {}         # (source, template id) -> code
        self._code_keys = np.zeros(0, np.int64)   # the same per (source id << 32 | template id), sorted
        self._code_vals = np.zeros(0, np.int8)
        self.suppressed = 0      # lines scored 0 by a normal rule (running total)
        self.flagged = 0         # lines raised to the threshold by a problem rule (running total)
        self.findings_suppressed = 0

    def __bool__(self):
        return bool(self.rules)

    def set_rules(self, rules):
        self.rules = {rule["id"]: rule for rule in rules}
        self._texts = {(rule["source"], text): rule["id"] for rule in rules for text in rule["templates"]}
        self._kinds = {(rule["source"], kind): rule["id"] for rule in rules for kind in rule["kinds"]}
        self._bound = {pair: rid for pair, rid in self._bound.items() if rid in self.rules}
        self._forget_codes()

    def counts(self):
        return {verdict: sum(rule["verdict"] == verdict for rule in self.rules.values()) for verdict in VERDICTS}

    def templates_changed(self):
        """The miner widened or merged templates: their texts changed, so decide the pairs again."""
        self._forget_codes()
        self.recent.texts_changed()

    def _forget_codes(self):
        self._cache = {}
        self._code_keys, self._code_vals = np.zeros(0, np.int64), np.zeros(0, np.int8)

    def code(self, source, template_id, template_text):
        """NONE, NORMAL or PROBLEM for one (source name, template id) pair (template_text(id) gives its text)."""
        key = (source, int(template_id))
        code = self._cache.get(key)
        if code is None:
            rid = self._bound.get(key)
            if rid is None and template_id >= 0:
                rid = self._texts.get((source, template_text(template_id)))
                if rid is not None:
                    self._bound[key] = rid
            code = _CODE[self.rules[rid]["verdict"]] if rid is not None else NONE
            self._cache[key] = code
        return code

    def verdicts(self, source_id, template_id, source_name, template_text):
        """int8 per line: NONE, NORMAL or PROBLEM (source_name(i) gives source id i's name)."""
        n = len(template_id)
        if n == 0:
            return np.zeros(n, np.int8)
        keys = (np.asarray(source_id, np.int64) << 32) | (np.asarray(template_id, np.int64) & 0xFFFFFFFF)
        self.recent.note(keys)
        if not self.rules:
            return np.zeros(n, np.int8)
        at, hit = _lookup(self._code_keys, keys)
        if not hit.all():            # pairs not decided since the rules or templates changed: decide them once
            new = np.unique(keys[~hit])
            codes = np.array([self.code(source_name(k >> 32), _signed32(k & 0xFFFFFFFF), template_text)
                              for k in new.tolist()], np.int8)
            merged = np.concatenate([self._code_keys, new])
            order = np.argsort(merged, kind="stable")
            self._code_keys, self._code_vals = merged[order], np.concatenate([self._code_vals, codes])[order]
            at, hit = _lookup(self._code_keys, keys)
        out = self._code_vals[at]
        self.suppressed += int((out == NORMAL).sum())
        self.flagged += int((out == PROBLEM).sum())
        return out

    def finding_suppressed(self, source, template_id, kind, template_text):
        """Whether a normal rule covers a finding: one about a template of the source the rule names, or
        one about the whole source (template id -1) of a kind the rule names."""
        if not self.rules:
            return False
        if template_id >= 0:
            hit = self.code(source, template_id, template_text) == NORMAL
        else:
            rid = self._kinds.get((source, kind))
            hit = rid is not None and self.rules[rid]["verdict"] == "normal"
        self.findings_suppressed += int(hit)
        return hit

    def state(self):
        """JSON-able: the template ids rules matched here (saved with the engine's snapshot)."""
        return [[source, tid, rid] for (source, tid), rid in self._bound.items()]

    def restore(self, state):
        self._bound = {(str(source), int(tid)): str(rid) for source, tid, rid in state}
        self._forget_codes()


class RecentPairs:
    """The `cap` (source id, template id) pairs seen in the latest batches, as sorted int64 keys (source id in
    the high word) with the batch number each was last seen in: per batch one searchsorted, Python only for
    pairs never seen before (a new template, or one back after it was dropped)."""

    def __init__(self, cap):
        self.cap = int(cap)
        self.keys = np.zeros(0, np.int64)
        self.seen = np.zeros(0, np.int64)
        self.batch = 0
        self.changed = False     # a pair came or went, or texts changed, since texts() was last called
        self._texts = {}         # key -> rendered template text

    def note(self, keys):
        """keys: one per line of a batch (repeats and any order)."""
        self.batch += 1
        at, hit = _lookup(self.keys, keys)
        self.seen[at[hit]] = self.batch
        if hit.all():
            return
        pairs = np.unique(keys[~hit])
        keys = np.concatenate([self.keys, pairs])
        seen = np.concatenate([self.seen, np.full(pairs.size, self.batch, np.int64)])
        if keys.size > self.cap:     # drop the pairs seen longest ago
            keep = np.sort(np.argsort(-seen, kind="stable")[:self.cap])
            keys, seen = keys[keep], seen[keep]
        order = np.argsort(keys, kind="stable")
        self.keys, self.seen, self.changed = keys[order], seen[order], True

    def texts_changed(self):
        self._texts = {}
        self.changed = True

    def texts(self, source_names, template_text):
        """{source name: [[template id, text], ...]} (texts rendered once per template change; one longer than
        MAX_TEMPLATE_CHARS is left out: feedback cannot name it)."""
        texts, out = {}, {}
        for key in self.keys.tolist():
            text = self._texts.get(key)
            if text is None:
                text = template_text(_signed32(key & 0xFFFFFFFF))
            texts[key] = text
            sid = key >> 32
            if len(text) <= MAX_TEMPLATE_CHARS and sid < len(source_names):
                out.setdefault(source_names[sid], []).append([_signed32(key & 0xFFFFFFFF), text])
        self._texts, self.changed = texts, False
        return out


def _lookup(sorted_keys, keys):
    """(index into sorted_keys, whether found) of each key."""
    if not sorted_keys.size:
        return np.zeros(keys.size, np.int64), np.zeros(keys.size, np.bool_)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return at, sorted_keys[at] == keys


def _signed32(value):
    return value - (1 << 32) if value >= 1 << 31 else value
