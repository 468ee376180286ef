"""The detection engine: runs tiers 1-4 over ParsedBatches in event time, combines and calibrates
their scores, groups anomalies into incidents, takes feedback and persists the models.

Used by pipeline.py (replay and the daemon's workers); tiers live beside it (tier*_*.py).

Calibration. Every tier reports a surprise score: 10 x -log10(p) of what it saw under its learned
model (60 = a one-in-a-million event), capped at 100. A line's score is its strongest tier plus
`corroboration_weight` x the other tiers (independent evidence adds up, discounted because the
tiers are not independent). The default `anomaly_threshold` of 70 (p ~ 1e-7 per test) is chosen
for the design target: at most one false incident per day on a steady service logging up to
about a million lines a day, where each line meets a handful of tests; grouping flagged lines
into incidents per source and problem (incidents.py) turns residual false flags that cluster into
one alert.
"""
import logging
import time

import numpy as np

from ..storage.atomic import SHAPE_ERRORS, require, restore_json_snapshot, write_json_snapshot
from ..storage.layout import as_paths
from .base import BatchContext
from .feedback import KNOWN_PROBLEM, NORMAL, PROBLEM, FeedbackMatcher
from .incidents import NEVER_SEEN, IncidentBook, kind_of
from .state_shape import check_state_arrays
from .tier1_rules import RulesTier
from .tier2_volume import VolumeTier
from .tier3_novelty import NoveltyTier
from .tier4_sequence import SequenceTier

log = logging.getLogger(__name__)
TIER_NAMES = ("t1", "t2", "t3", "t4")
STATE_VERSION = 1
# Statistics (tiers 3 and 4) keyed on value hashes: 2 hashes a token's only value with the whole
# token (miner_kernels.extract_params). Older statistics would see every such value as new.
STATISTICS_VERSION = 2
EXPLAIN_MIN_SCORE = 20.0
FUTURE_SKEW_SECONDS = 86400.0   # clock skew tolerated before a stamp counts as bogus
SESSION_KEY = "session:"        # key prefix of tier 4's Findings about one unfinished session
# (a run of a job whose runs come alone, "run:<id>", stands for its workflow: not counted as a session)


class BatchScores:
    """What the engine hands back for one batch: arrays per line, Python objects only for anomalies."""

    def __init__(self, score, anomaly, tiers, reasons, incidents):
        self.score = score          # float32[n] 0..100
        self.anomaly = anomaly      # bool[n]
        self.tiers = tiers          # float32[4, n] in TIER_NAMES order
        self.reasons = reasons      # {line index: [(tier score, reason, expected, observed)]}, anomalies only
        self.incidents = incidents  # incident records closed while scoring this batch


class DetectionEngine:
    """Owns the tiers and the incident book; one per worker (or per replay)."""

    def __init__(self, config):
        detection = config["detection"]
        self.threshold = float(detection["anomaly_threshold"])
        self.corroboration = float(detection["corroboration_weight"])
        self.anomaly_weight = float(detection["anomaly_learning_weight"])
        self.warmup_lines = int(detection["warmup_lines"])
        self.warmup_seconds = float(detection["warmup_seconds"])
        self.learning_rate = float(detection["learning_rate"])
        self._tier_settings = (detection, config.get("rules", {}))   # to start a tier afresh on a bad restore
        self.tiers = self._build_tiers(*self._tier_settings)
        self.incident_min_lines = int(detection["incident_min_lines"])
        self.book = IncidentBook(detection["incident_window_seconds"], detection["incident_join_seconds"],
                                 volume_tier=(len(TIER_NAMES), TIER_NAMES.index("t2")), threshold=self.threshold,
                                 min_lines=self.incident_min_lines)
        self.suspicious_score = float(detection["suspicious_score"])
        self.suspicious_seen = {}        # source -> [decayed suspicious lines, decayed seconds]
        self.lines_seen = 0
        self.first_time = None
        self.now = None
        self.sources = []                # source id -> name, stable across restarts
        # Called with (source id, name) when a source is first seen here (worker/handover.py takes
        # over what another worker learned of it); None: nothing to take over.
        self.source_added = None
        # "deployment": template ids are the deployment's vocabulary's (parsing/vocabulary.py), the same
        # in every worker, so per-template rows can move with their source; "local": this engine's own.
        self.template_ids = "local"
        self.source_names = self.sources  # the names the last batch used
        self.template_weight = {}        # template id -> score multiplier from feedback
        self.feedback = FeedbackMatcher(detection["feedback_templates_known"])   # POST /admin/feedback's rules
        self.closed = []                 # incident records not yet collected
        self.recent_incidents = []       # the last closed ones, for feedback by id

    def _build_tiers(self, detection, rules):
        def settings(name):
            return dict(detection[name], learning_rate=self.learning_rate, warmup_lines=self.warmup_lines)
        tiers = {"t1": RulesTier(settings("tier1"), rules), "t2": VolumeTier(settings("tier2")),
                 "t3": NoveltyTier(dict(settings("tier3"), anomaly_threshold=self.threshold,
                                        suspicious_score=float(detection["suspicious_score"]),
                                        anomaly_learning_weight=self.anomaly_weight)),
                 "t4": SequenceTier(dict(detection["tier4"], learning_rate=self.learning_rate))}
        for name, tier in tiers.items():
            tier.enabled = bool(detection["tier" + name[1:]]["enabled"])
        return tiers

    # -- run-time controls -------------------------------------------------------------------

    def set_tier_enabled(self, name, enabled):
        """Switch one tier on or off; the others keep working. Unknown or absent tier: ValueError."""
        if name not in self.tiers:
            raise ValueError("no tier %r here (have %s)" % (name, ", ".join(sorted(self.tiers))))
        self.tiers[name].enabled = bool(enabled)

    def set_learning_rate(self, rate):
        if not 0.0 < rate <= 1.0:
            raise ValueError("learning rate must be in (0, 1], got %r" % rate)
        self.learning_rate = float(rate)
        for tier in self.tiers.values():
            tier.set_learning_rate(rate)

    def reduce_learning_rate(self, factor=0.5):
        self.set_learning_rate(max(self.learning_rate * float(factor), 1e-6))
        return self.learning_rate

    def set_warmup(self, lines=None, seconds=None):
        if lines is not None:
            self.warmup_lines = int(lines)
        if seconds is not None:
            self.warmup_seconds = float(seconds)

    def mark_template_normal(self, template_id, weight=0.0):
        """Feedback: scores of this template are multiplied by `weight` (0 suppresses it)."""
        self.template_weight[int(template_id)] = float(weight)

    def mark_incident_normal(self, incident_id, weight=0.0):
        """Feedback on an open or recently closed incident: its templates become normal."""
        candidates = [inc.record() for inc in self.book.open.values()] + self.closed + self.recent_incidents
        for record in candidates:
            if record["id"] == incident_id:
                for tid in record["templates"]:
                    self.mark_template_normal(tid, weight)
                return True
        return False

    def templates_widened(self, template_ids):
        """The miner widened these templates: what was learned about their parameters starts again."""
        self.tiers["t3"].forget_parameters(template_ids)
        self.tiers["t2"].forget_parameters(template_ids)
        self.feedback.templates_changed()

    # -- scoring -----------------------------------------------------------------------------

    def source_id(self, name):
        """Stable id of a source name (ids index per-source model arrays)."""
        try:
            return self.sources.index(name)
        except ValueError:
            self.sources.append(name)
            sid = len(self.sources) - 1
            if self.source_added is not None:
                self.source_added(sid, name)
            return sid

    def import_source_volume(self, sid, saved_t2, saved_sid, with_templates):
        """Take over the volume baseline of a source another engine saved (saved_t2: its tier 2 state;
        saved_sid: the source's id there) as source `sid` here; its templates' rows too when both
        engines share the deployment's template ids. Returns how many templates were taken."""
        other = VolumeTier(dict(self._tier_settings[0]["tier2"], learning_rate=self.learning_rate,
                                warmup_lines=self.warmup_lines))
        other.load_state(saved_t2)
        exported = other.export_source(saved_sid)
        if exported is None:
            return 0
        if not with_templates:
            exported["templates"] = {}
        return self.tiers["t2"].import_source(sid, exported)

    def process(self, batch, n_templates, template_text=str, samples=True):
        """Score one batch, learn from it and update incidents -> BatchScores."""
        ctx = self._context(batch, n_templates, template_text)
        findings = []
        for tier in self._enabled():
            findings += tier.advance(self.now if self.now is not None else ctx.now)
        tiers = np.zeros((4, batch.n), np.float32)
        results = {}
        for name, tier in self._enabled_items():
            results[name] = tier.score(batch, ctx)
            tiers[TIER_NAMES.index(name)] = results[name].scores
        tiers *= self._feedback_weights(batch)
        verdict = self.feedback.verdicts(batch.source_id, batch.template_id, ctx.source_name, ctx.template_text)
        if self.feedback:
            tiers[:, verdict == NORMAL] = 0.0       # a template marked normal: no tier flags it
        score = self._combine(tiers)
        known = verdict == PROBLEM
        if known.any():                            # a known problem: each of its lines reaches the threshold
            score = np.where(known, np.maximum(score, np.float32(self.threshold)), score).astype(np.float32)
        anomaly = score >= self.threshold
        weights = np.where(anomaly, self.anomaly_weight, 1.0).astype(np.float32)
        for tier in self._enabled():
            tier.learn(batch, ctx, weights)
        self.lines_seen += batch.n
        self.now = ctx.now
        suspicious = score >= self.suspicious_score
        describe = _Describer(batch, ctx, score, tiers, results, samples, known, self.threshold)
        self._record_incidents(batch, ctx, suspicious, score, tiers, describe, findings)
        reasons = {i: describe.explained(i) for i in np.flatnonzero(anomaly).tolist()}
        return BatchScores(score, anomaly, tiers, reasons, self.collect_incidents())

    def _enabled_items(self):
        return [(n, t) for n, t in sorted(self.tiers.items()) if t.enabled]

    def _enabled(self):
        return [t for _, t in self._enabled_items()]

    def _context(self, batch, n_templates, template_text):
        ts = _forward_filled(_without_future(batch.ts), self.now)
        finite_max = float(ts.max()) if batch.n else np.nan
        now = finite_max if self.now is None else max(self.now, finite_max if np.isfinite(finite_max) else self.now)
        if self.first_time is None and np.isfinite(now):
            self.first_time = now
        warm = (self.lines_seen >= self.warmup_lines
                and self.first_time is not None and now - self.first_time >= self.warmup_seconds)
        names = self.source_names = batch.sources or self.sources
        return BatchContext(now=now, lines_seen=self.lines_seen, warm=warm, n_templates=int(n_templates),
                            ts=ts, template_text=template_text,
                            source_name=lambda i: names[i] if 0 <= i < len(names) else str(i),
                            gaps=self._input_gaps(ts))

    def _input_gaps(self, ts):
        volume = self.tiers.get("t2")
        if volume is None or not volume.enabled:
            return ()
        return volume.input_gaps(ts, self.now)

    def _feedback_weights(self, batch):
        if not self.template_weight:
            return 1.0
        ids = np.array(sorted(self.template_weight), np.int64)
        vals = np.array([self.template_weight[t] for t in ids], np.float32)
        weights = np.ones(batch.n, np.float32)
        hit = np.isin(batch.template_id, ids)
        weights[hit] = vals[np.searchsorted(ids, batch.template_id[hit])]
        return weights

    def _combine(self, tiers):
        strongest = tiers.max(axis=0)
        return np.minimum(strongest + self.corroboration * (tiers.sum(axis=0) - strongest), 100.0).astype(np.float32)

    # -- incidents ---------------------------------------------------------------------------

    def _record_incidents(self, batch, ctx, suspicious, score, tiers, describe, findings):
        expected = self._learn_suspicious_rate(batch, ctx, suspicious)
        # A drop or silence of a whole source that tier 2 holds back (or raised, recorded below or in the
        # next batch) keeps that source's incidents open meanwhile (IncidentBook.waiting): what its absence
        # made at once (its partners' workflows out of order) joins the outage instead of closing alone.
        t2 = self.tiers["t2"]
        self.book.waiting = {ctx.source_name(sid): since for sid, since in t2.held_sources(findings).items()} \
            if t2.enabled else {}
        lines = np.flatnonzero(suspicious)
        if lines.size:
            src = _evidence_sources(batch.source_id, tiers, describe.results, lines)
            order = np.lexsort((ctx.ts[lines], src))
            lines, src = lines[order], src[order]
            for run in np.split(np.arange(lines.size), np.flatnonzero(np.diff(src)) + 1):
                part = lines[run]
                source = ctx.source_name(int(src[run[0]]))
                tier_scores = {name: tiers[k, part] for k, name in enumerate(TIER_NAMES)}
                families = _line_families(batch.template_id[part], tiers[:, part], describe.results, part)
                self._report(self.book.add_lines(source, ctx.ts[part], score[part], tier_scores,
                                                 batch.template_id[part], part, describe, expected.get(source),
                                                 families))
        for f in findings:
            # A confirmed finding (a drop still low after drop_hold_seconds) passed its tier's minimum
            # twice, ten minutes apart: a service at a third of its traffic for an hour scores 50-65
            # against a forecast that is never better than 20% a minute, and is no less an outage.
            if (f.score < self.threshold and not f.confirmed) or self.template_weight.get(f.template_id, 1.0) < 1.0:
                continue
            source = self._finding_source(f)
            if self.feedback.finding_suppressed(source, f.template_id, kind_of(f.reason), ctx.template_text):
                continue
            template = ctx.template_text(f.template_id) if f.template_id >= 0 else ""
            self._report(self.book.add(
                source, f.ts, f.score, {f.tier: f.score}, f.template_id, template,
                [(f.reason, f.expected, f.observed, f.score)], None, opened_by=f.key, family=_finding_family(f),
                session=f.key.startswith(SESSION_KEY), seen_at=ctx.now, since=f.since))
        self._excuse_silences(ctx)
        self._report(self.book.close_quiet(ctx.now))

    def _excuse_silences(self, ctx):
        """Workflow steps skipped only while the service that logs them wrote nothing (tier 4 finds such
        a silence once the service logs again: a deploy's restart) are that service's outage, which tier 2
        judges: its incident does not stand on them (IncidentBook.excuse)."""
        t4 = self.tiers.get("t4")
        if t4 is None or not t4.enabled:
            return
        family = "lines:%d" % _family_code(-1, TIER_NAMES.index("t4"))   # tier 4's lines: about the whole source
        for sid, since, until in t4.take_silences():
            self.book.excuse(ctx.source_name(sid), family, since, until)

    def _learn_suspicious_rate(self, batch, ctx, suspicious):
        """Update each source's long-run rate of suspicious lines; return {source: expected per window}.

        Before warm-up nothing is known, so a burst cannot be judged (None)."""
        span = max(float(ctx.ts.max() - ctx.ts.min()), 1.0) if batch.n else 0.0
        keep = (1.0 - self.learning_rate) ** (span / self.book.window)
        counts = np.bincount(batch.source_id, weights=suspicious.astype(np.float64),
                             minlength=int(batch.source_id.max()) + 1 if batch.n else 1)
        expected = {}
        for sid in np.unique(batch.source_id).tolist():
            name = ctx.source_name(sid)
            entry = self.suspicious_seen.setdefault(name, [0.0, 0.0])
            # entry[1] > 0: with warmup_seconds = 0 a source's first batch has no span to take a rate from
            if ctx.warm and entry[1] > 0 and entry[1] >= self.warmup_seconds:
                expected[name] = (entry[0] + 1.0) / entry[1] * self.book.window
            entry[0] = entry[0] * keep + counts[sid]
            entry[1] = entry[1] * keep + span
        return expected

    def _report(self, closed):
        """Keep closed incidents with enough evidence: a Finding about a whole key (a drop, a silence, an
        unusual window), incident_min_lines unfinished sessions, or incident_min_lines suspicious lines
        of one family of evidence of which the strongest reaches the anomaly threshold (Incident.persists).

        One odd line is not an outage; like an alert rule's `for:`, an incident must persist. The
        burst score is reported but does not open an incident by itself: suspicious lines are not
        independent (one slow minute makes many), so a count of them overstates the evidence.
        """
        self.closed += [c.record() for c in closed if self._reportable(c)]

    def _reportable(self, incident):
        # A session cut short is evidence about one instance, as a line is: one unfinished order (its
        # worker restarted mid-request, a weekly task slower than any before) is not a broken workflow.
        # A message never seen before that reached the threshold is news alone (the flag says so; the first
        # line of a never-seen ERROR template scores new_error_score): an unhandled exception a new release
        # throws once is what an operator wants to read, with or without its retries.
        aggregate = incident.findings > incident.sessions
        first_error = incident.reason_hits.get(NEVER_SEEN, (0.0,))[0] >= self.threshold
        return (aggregate or first_error or incident.sessions >= self.incident_min_lines
                or incident.persists(self.incident_min_lines, self.threshold))

    def open_records(self):
        """Records of the open incidents that would be reported if they closed now (alerting's "opened")."""
        return [incident.record() for incident in self.book.open.values() if self._reportable(incident)]

    def _finding_source(self, finding):
        if finding.source.isdigit() and int(finding.source) < len(self.source_names):
            return self.source_names[int(finding.source)]
        # A finding about no source ("window:<t>") groups under its key's kind, so that
        # consecutive windows of one episode make one incident.
        return finding.source or finding.key.split(":")[0]

    def collect_incidents(self):
        """Incident records closed since the last call."""
        closed, self.closed = self.closed, []
        self.recent_incidents = (self.recent_incidents + closed)[-100:]
        return closed

    def finish(self):
        """End of input (replay): close every open incident and return all uncollected ones."""
        self._report(self.book.close_all())
        return self.collect_incidents()

    # -- persistence -------------------------------------------------------------------------

    def save(self, where):
        """Write baselines (t1, t2, engine meta) and statistics (t3, t4) atomically (where: a
        storage.layout.StatePaths or a directory of the flat layout)."""
        paths = as_paths(where)
        meta = {"lines_seen": self.lines_seen, "first_time": self.first_time, "now": self.now,
                "sources": self.sources, "learning_rate": self.learning_rate, "template_ids": self.template_ids,
                "template_weight": {str(k): v for k, v in self.template_weight.items()},
                "feedback_bindings": self.feedback.state()}
        baselines = {"meta": meta, "t1": self.tiers["t1"].state(), "t2": self.tiers["t2"].state(),
                     "incidents": self.book.state()}
        statistics = {name: self.tiers[name].state() for name in ("t3", "t4") if name in self.tiers}
        write_json_snapshot(paths.detection_baselines, "detection-baselines",
                            STATE_VERSION, baselines)
        write_json_snapshot(paths.detection_statistics, "detection-statistics",
                            STATISTICS_VERSION, statistics)

    def load(self, where, started_at=None):
        """Restore what save() wrote; missing or unusable files mean a cold start. Returns True if restored.

        A file of the wrong shape (checksum valid, content not what these tiers need) is set aside
        like a corrupt one and the previous generation tried (storage.atomic); its tiers start fresh.
        started_at (epoch seconds, default now): when the models start running again. The restored
        models may be older than the lines read next (a backup, a snapshot before a kill -9): those
        are read, then comes the time nothing was read, which spans this moment and is not judged.
        """
        paths = as_paths(where)
        restored = restore_json_snapshot(paths.detection_baselines,
                                         "detection-baselines", STATE_VERSION, self._restore_baselines)
        if restored is None:
            self._fresh_tiers(("t1", "t2"))
            self._restore_meta({})
            return False
        statistics = restore_json_snapshot(paths.detection_statistics,
                                           "detection-statistics", STATISTICS_VERSION, self._restore_statistics)
        if statistics is None:
            self._fresh_tiers(("t3", "t4"))
        elif statistics < STATISTICS_VERSION:
            log.warning("%s: statistics saved by an older release key values differently; parameter statistics "
                        "and workflows start again (volume baselines kept)", paths.statistics)
        self.tiers["t2"].restarted(time.time() if started_at is None else float(started_at))
        return True

    def _restore_baselines(self, _version, state):
        require(isinstance(state, dict), "not an object")
        for name in ("meta", "t1", "t2"):
            require(isinstance(state.get(name), dict), "no %r object" % name)
        self._restore_meta(state["meta"])
        self._restore_tiers(state, ("t1", "t2"))
        self._restore_incidents(state.get("incidents"))
        return True

    def _restore_incidents(self, state):
        """The open incidents of the last snapshot (absent in files of older releases): they go on, same ids.
        Unusable ones are dropped alone: they are not worth the baselines."""
        if state is None:
            return
        try:
            self.book.restore(state)
        except SHAPE_ERRORS as exc:
            log.warning("open incidents of the snapshot unusable (%s: %s); incidents start afresh",
                        type(exc).__name__, exc)

    def _restore_statistics(self, version, state):
        require(isinstance(state, dict), "not an object")
        if version < STATISTICS_VERSION:
            self._fresh_tiers(("t3", "t4"))
            return version
        for name in ("t3", "t4"):
            require(isinstance(state.get(name, {}), dict), "%r is not an object" % name)
        self._restore_tiers(state, ("t3", "t4"))
        return version

    def _restore_meta(self, meta):
        lines_seen = int(meta.get("lines_seen", 0))
        first_time, now = meta.get("first_time"), meta.get("now")
        for stamp in (first_time, now):
            require(stamp is None or isinstance(stamp, (int, float)), "meta time %r is not a number" % (stamp,))
        sources = meta.get("sources", [])
        require(isinstance(sources, list) and all(isinstance(x, str) for x in sources), "meta sources not names")
        weights = {int(k): float(v) for k, v in meta.get("template_weight", {}).items()}
        rate = float(meta["learning_rate"]) if "learning_rate" in meta else None
        bindings = meta.get("feedback_bindings", [])
        require(isinstance(bindings, list) and all(isinstance(b, list) and len(b) == 3 for b in bindings),
                "meta feedback_bindings not [source, template id, rule id] triples")
        self.feedback.restore(bindings)
        self.lines_seen, self.first_time, self.now = lines_seen, first_time, now
        if meta and meta.get("template_ids", "local") != self.template_ids:
            self.template_ids = "local"   # saved under ids of its own (an older release): rows stay here
        self.sources = list(sources)
        self.template_weight = weights
        if rate is not None:
            self.set_learning_rate(rate)

    def _restore_tiers(self, state, names):
        """Each named tier built afresh then loaded, and its arrays checked against a fresh one's."""
        self._fresh_tiers(names)
        reference = self._build_tiers(*self._tier_settings)   # once for all names, not once per name
        for name in names:
            if name in self.tiers:
                self.tiers[name].load_state(state.get(name, {}))
                check_state_arrays(name, reference[name], self.tiers[name])

    def _fresh_tiers(self, names):
        built = self._build_tiers(*self._tier_settings)
        for name in names:
            if name in self.tiers:
                built[name].enabled = self.tiers[name].enabled
                self.tiers[name] = built[name]


# Tiers whose evidence is about the whole source, not one template: rule bursts (t1 counts a
# source's matching lines) and workflows (t4 follows sessions across templates).
_SOURCE_WIDE_TIERS = np.array([TIER_NAMES.index("t1"), TIER_NAMES.index("t4")])


def _finding_family(finding):
    """Incident family of a Finding (see IncidentBook): its tier, and for tier 2 what it is about (a
    template, the whole source, a host). A template that went quiet as the night thinned it opened an
    incident an hour before its source went silent; in the same family, the source's silence joined that
    incident and the outage was dated by the message's night. A dip of the source that turns into its
    silence stays one incident (both are the source's), and a drop of a template that starts with it
    joins it while young (join_seconds) or inside the silence's span (IncidentBook._incident)."""
    if finding.tier == "t2":
        return "finding:t2:" + finding.key.split(":", 1)[0]
    return "finding:" + finding.tier


def _line_families(template_id, tiers, results=None, lines=None):
    """Incident family code of each line (see IncidentBook): the tier that scored it most and what
    about: for per-template tiers (volume, novelty), the template (or what the tier's TierResult.about
    says: -1 for a spike of the whole source); rules and workflows are about the whole source.
    results: {tier name: TierResult} of the batch, lines: the batch line numbers of template_id."""
    strongest = tiers.argmax(axis=0)
    about = template_id.astype(np.int64)
    for name, result in (results or {}).items():
        if result.about is not None:
            mine = strongest == TIER_NAMES.index(name)
            about[mine] = result.about[lines[mine]]
    about[np.isin(strongest, _SOURCE_WIDE_TIERS)] = -1
    return _family_code(about, strongest)


def _family_code(about, tier):
    """Incident family code of lines about a template (-1: the whole source) that a tier scored most."""
    return about * len(TIER_NAMES) + tier


def _evidence_sources(source_id, tiers, results, lines):
    """Source whose incident each of these batch lines is evidence for: its own, unless the tier that
    scored it most says the evidence is about another (TierResult.blame: a workflow step that another
    service should have logged was skipped)."""
    src = source_id[lines].copy()
    strongest = tiers[:, lines].argmax(axis=0)
    for name, result in (results or {}).items():
        if result.blame:
            blamed = np.fromiter(result.blame, np.int64, len(result.blame))
            order = np.argsort(blamed)
            blamed, whom = blamed[order], np.fromiter(result.blame.values(), np.int64, len(blamed))[order]
            at = np.minimum(np.searchsorted(blamed, lines), blamed.size - 1)
            mine = (blamed[at] == lines) & (strongest == TIER_NAMES.index(name))
            src[mine] = whom[at[mine]]
    return src


def _without_future(ts):
    """ts with stamps beyond FUTURE_SKEW_SECONDS of the wall clock as NaN: a line cannot come from
    the future, and one bogus stamp (binary junk read as year 2999) must not move event time."""
    ts = np.asarray(ts, np.float64)
    future = ts > time.time() + FUTURE_SKEW_SECONDS
    if future.any():
        ts = np.where(future, np.nan, ts)
    return ts


def _forward_filled(ts, before):
    """Copy of ts with NaN replaced by the previous finite value (or `before`, or the next one)."""
    ts = np.asarray(ts, np.float64)
    good = np.isfinite(ts)
    if good.all():
        return ts.copy()
    if not good.any():
        return np.full(ts.size, before if before is not None else 0.0)
    idx = np.where(good, np.arange(ts.size), -1)
    np.maximum.accumulate(idx, out=idx)
    first = before if before is not None else ts[good][0]
    return np.where(idx >= 0, ts[np.maximum(idx, 0)], first)


class _Describer:
    """Texts about one batch's lines for incidents and output, made only for the lines asked about."""

    def __init__(self, batch, ctx, score, tiers, results, samples, known=None, threshold=0.0):
        self.batch, self.ctx, self.score, self.tiers, self.results = batch, ctx, score, tiers, results
        self.samples = samples
        self.known, self.threshold = known, threshold   # lines of templates marked a problem by feedback

    def explained(self, i):
        """[(tier score, reason, expected, observed)] of line i, strongest first."""
        found = []
        for name, result in self.results.items():
            k = TIER_NAMES.index(name)
            if self.tiers[k, i] >= EXPLAIN_MIN_SCORE and i in result.reasons:
                found.append((float(self.tiers[k, i]), result.reasons[i], result.expected.get(i, ""),
                              result.observed.get(i, "")))
        if self.known is not None and self.known[i]:
            found.append((float(self.threshold), KNOWN_PROBLEM, "no line of this template (marked a problem)",
                          "a line of it"))
        return sorted(found, key=lambda r: -r[0])

    def reasons(self, i):
        """(reason, expected, observed, score) of line i for an incident."""
        found = [(r, e, o, s) for s, r, e, o in self.explained(i)]
        return found or [("combined score %.0f" % self.score[i], "", "", float(self.score[i]))]

    def template(self, tid):
        return self.ctx.template_text(tid)

    def sample(self, i):
        return self.batch.content(i) if self.samples else ""
