"""Incidents: suspicious lines and Findings grouped per source and problem within a quiet-gap window.

The engine (engine.py) feeds them in event time; an incident closes once nothing was added for
`window_seconds`, so one outage (errors, a spike, a drop, all in one source) is one alert. Evidence
has a family (engine._line_families for lines; engine._finding_family for Findings): an open incident takes
more of its own families, and new families only while it is young (`join_seconds` from its onset:
they started with it, one outage); a family arriving later is another problem, raised on its own.
Besides its strongest line, an incident scores its burst: how improbable it is to meet this many
suspicious lines within one window given how often the source produces them (a scan statistic).
"""
import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from .stats_kernels import log10_count_upper, surprisal_score

# Tier whose evidence dominates -> the kind of incident reported to operators.
# A template gone silent while its source goes on logging is a drop of that message, not a silent source.
# Tier 4's "session opens with a step that never opens sessions: '<template>'" (a workflow met without its
# first step) comes first: the template it quotes may hold any word below.
KIND_BY_REASON = (("session opens with a step", "sequence"), ("known problem", "known_problem"),
                  ("new field value", "new_value"),
                  ("source silent", "silent_source"), ("silent", "volume_drop"),
                  ("volume drop", "volume_drop"), ("volume spike", "volume_spike"),
                  ("never-seen", "new_template"), ("rare template", "rare_template"),
                  ("drift", "value_drift"), ("unusual value", "unusual_value"), ("new value", "new_value"),
                  ("rule", "rule_burst"), ("workflow", "sequence"), ("window", "window_structure"))
MAX_SAMPLES = 5
# A split series' reason (tier3_novelty: "... of 'template' where parameter 1 is 'x'" or "'s route is")
SPLIT_REASON = re.compile(r"['\"] where parameter \d+(?:'s route)? is ")
# The series a numeric reason is about: "... of parameter 5 of '[gc] GC(<*>) Pause ... <*>'" (tier3_novelty)
SERIES_OF = re.compile(r"of parameter \d+ of (['\"]).*?\1(?=[:,]| where|$)")
SEVERITY_RULES = ("critical rule:", "error rule:", "warning rule:")   # tier 1's level rules
NEW_MESSAGES = ("never-seen template", "rare template", "new field value")   # tier 3's new templates
HEADLINE_MARGIN = 20.0
# A severity rule names the incident only when it is about as strong as the strongest reason: a
# burst of error lines that each carry a value never seen in the source (a new HTTP status) is
# named by the value, the stronger and more specific evidence; a burst whose rule is as strong as
# anything else is named by the burst.
SEVERITY_MARGIN = 5.0
# A severity rule's lines that mostly carry a value never seen anywhere in their source (tier 3's pooled new
# value: a status no template of the web server ever logged) are that value's lines: the burst counts
# them, the value says what they are, and it names the incident however close the rule's score. A burst of
# gateway errors carries known statuses on most lines (a 502 logged now and then before), and a value new
# to the source on a few (a first 504): it stays the burst's. Judged on an even sample of each run's lines
# (VALUE_SAMPLE at most), not on the strongest ones: a line with both reasons scores above one with either.
NEW_TO_SOURCE = ("new value of parameter", "(new to every template of source ")
VALUE_SAMPLE = 32
VALUE_BORNE_SHARE = 0.5
# Numbers out of line (a record latency, a drifting duration) are what failing requests carry: timeouts
# are slow. A burst of errors is named by the burst within HEADLINE_MARGIN of such numbers, and they
# are its detail. A value never seen (a status, a provider: "new value") keeps SEVERITY_MARGIN.
NUMBER_REASONS = ("unusual value", "drift of parameter")
# Kinds of evidence a silent source itself brings about: they do not name an incident that holds its silence.
ABSENCE_SYMPTOMS = ("sequence", "volume_drop", "window_structure")
# A message that stops (or thins) while the source goes on, in one incident with sessions of a workflow
# broken within HEADLINE_MARGIN of it: that message is a step of the workflow, and the sessions that go
# on without it say what broke (an order flow whose stock reservation stopped, every other step logged
# as usual). Counting the message is the symptom; the workflow is the story (see _headline).
STEP_SYMPTOMS = ("volume_drop",)
# A volume spike of a template or of the source as strong as a value never seen (within SEVERITY_MARGIN)
# names the incident: the value is who surged (a new client hammering a login carries it on every line of
# the surge), the count is what an operator acts on. A spike of that value's own key ("volume spike of
# template '...' with <*>#7 = Go-http-client/1.1") is the value's count, not a surge, and does not.
VALUE_KEY_SPIKE = re.compile(r"^volume spike of template .+ with .+: \d+ lines in ")
MAX_EXCUSES = 16        # spans of silence an incident keeps (IncidentBook.excuse): the latest ones
REASONS_PER_RUN = 8     # strongest lines of a run of suspicious lines whose reasons are kept
# A message never seen before is one odd line; the same message again within this many windows is that
# problem recurring (a failed job's retries ten minutes apart), so an incident holding it alone stays
# open that long for its repeats (IncidentBook._awaits_repeat) instead of closing after one quiet window.
RECALL_WINDOWS = 12
NEVER_SEEN = "never-seen template"


@dataclass
class Incident:
    source: str
    first_seen: float
    last_seen: float
    window: float
    opened_by: str = ""      # template id or finding key of the first evidence: part of the id
    # The family of that evidence, part of the id too: the same template can open two incidents in one
    # window (a rule burst of its lines, later its volume spike); "" in states saved before it.
    opened_family: str = ""
    lines: int = 0
    findings: int = 0
    sessions: int = 0        # of the findings, sessions of a workflow cut short (tier 4): evidence per instance
    score: float = 0.0
    burst: float = 0.0       # best scan-statistic score of suspicious lines within one window
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0))  # times of the last window's lines
    tier_scores: dict = field(default_factory=dict)
    template_hits: dict = field(default_factory=dict)     # template id -> [count, text]
    reason_hits: dict = field(default_factory=dict)       # reason -> [best score, expected, observed]
    samples: list = field(default_factory=list)
    families: set = field(default_factory=set)            # evidence families routed to this incident
    # family -> [suspicious lines, best score] of the lines routed here (see persists); empty in states
    # saved before it
    family_lines: dict = field(default_factory=dict)
    # family -> time of its first line routed here (IncidentBook._redate); empty in states saved before it
    family_first: dict = field(default_factory=dict)
    # family -> time of its last line routed here; empty in states saved before it
    family_last: dict = field(default_factory=dict)
    # [family, since, until]: that family's lines are excused when they all fall inside the span, a
    # silence of the service its evidence blames (IncidentBook.excuse); empty in states saved before it
    excuses: list = field(default_factory=list)
    # When evidence last arrived (event time): later than last_seen for evidence judged late, such as a
    # session found unfinished a session timeout after its last line; it keeps the incident open.
    touched: float = 0.0
    # [since, judged] of a silence of the whole source it holds: evidence of the source stamped inside
    # (sessions its absence left unfinished, judged later) is the same outage. None: it holds none.
    absent: tuple = None
    # [severity rule lines sampled, of them carrying a value new to their source] (see NEW_TO_SOURCE);
    # [0, 0] in states saved before it
    rule_values: list = field(default_factory=lambda: [0, 0])

    @property
    def id(self):
        bucket = int(self.first_seen // self.window)
        key = "%s|%s|%d" % (self.source, self.opened_by, bucket)
        if self.opened_family:
            key += "|" + self.opened_family
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    @property
    def family(self):
        """The template (or source-level key) with the most evidence."""
        if not self.template_hits:
            return "source"
        return str(max(self.template_hits.items(), key=lambda kv: (kv[1][0], -kv[0]))[0])

    @property
    def quiet_since(self):
        return max(self.last_seen, self.touched)

    @property
    def evidence(self):
        return max(self.score, self.burst)

    def persists(self, min_lines, threshold):
        """Whether one problem of the incident showed in at least min_lines suspicious lines, one of them
        reaching the threshold: one family of evidence (a template's values, a rule, a workflow) seen
        again. A lone odd value and an unrelated suspicious line that came within the same minute (a
        slow request, a big order's amount) are two odd lines, not an outage."""
        if not self.family_lines:     # a state saved before families were counted: all lines as one
            return self.lines >= min_lines and self.score >= threshold
        return any(n >= min_lines and best >= threshold for family, (n, best) in self.family_lines.items()
                   if not self.excused(family))

    def excused(self, family):
        """Whether every line of `family` here fell inside one span it is excused for (see excuses)."""
        first, last = self.family_first.get(family), self.family_last.get(family)
        return first is not None and last is not None and any(
            f == family and since <= first and last <= until for f, since, until in self.excuses)

    def _count_family(self, family, n, best):
        entry = self.family_lines.setdefault(family, [0, 0.0])
        entry[0] += n
        entry[1] = max(entry[1], best)

    def add_many(self, ts, score, tiers, tids, lines, describe, family=""):
        """Add a time-ordered run of suspicious lines of one family (arrays; tiers is {tier name: scores}).

        Python work is per template and for the few strongest lines only: `describe` gives the
        texts (template(tid), reasons(line), sample(line)) for the batch line numbers in `lines`.
        """
        self.first_seen = min(self.first_seen, float(ts[0]))
        self.last_seen = max(self.last_seen, float(ts[-1]))
        self.lines += int(ts.size)
        self.score = max(self.score, float(score.max()))
        self._count_family(family, int(ts.size), float(score.max()))
        self.family_first[family] = min(self.family_first.get(family, float(ts[0])), float(ts[0]))
        self.family_last[family] = max(self.family_last.get(family, float(ts[-1])), float(ts[-1]))
        for tier, values in tiers.items():
            top = float(values.max())
            if top > 0:
                self.tier_scores[tier] = max(self.tier_scores.get(tier, 0.0), top)
        for tid, count in zip(*(a.tolist() for a in np.unique(tids, return_counts=True))):
            hit = self.template_hits.setdefault(tid, [0, describe.template(tid)])
            hit[0] += count
        for i in lines[np.argsort(-score, kind="stable")[:REASONS_PER_RUN]].tolist():
            self._add_reasons(describe.reasons(i))
        for i in lines[:max(0, MAX_SAMPLES - len(self.samples))].tolist():
            self.samples.append(describe.sample(i))
        self._count_rule_values(describe, lines[::max(1, -(-lines.size // VALUE_SAMPLE))])

    def _count_rule_values(self, describe, lines):
        """Count the severity rule lines among `lines` and those of them carrying a value new to their
        source (rule_values)."""
        for i in lines.tolist():
            reasons = [r[0] for r in describe.reasons(i)]
            if any(r.startswith(SEVERITY_RULES) for r in reasons):
                self.rule_values[0] += 1
                self.rule_values[1] += any(_new_to_source(r) for r in reasons)

    @property
    def value_borne(self):
        """Whether its severity rule's lines mostly carry a value never seen in their source (NEW_TO_SOURCE)."""
        return self.rule_values[1] > 0 and self.rule_values[1] >= VALUE_BORNE_SHARE * self.rule_values[0]

    def add_bursts(self, ts, expected_per_window):
        """Count a time-ordered run of suspicious lines towards the burst score: how improbable it is
        to meet this many within one window given the source's usual count per window (the score
        only grows with the count, so the largest count in the run decides)."""
        # Runs of several families reach one incident out of time order: sort (old counts stay valid).
        times = np.sort(np.concatenate([self.recent, ts]))
        within = np.arange(times.size) - np.searchsorted(times, times - self.window, side="right") + 1
        top = float(within.max())
        burst = surprisal_score(log10_count_upper(top, max(expected_per_window, 1e-6), 1.0))
        self.burst = max(self.burst, float(burst))
        self.recent = times[times > times[-1] - self.window]

    def _add_reasons(self, reasons):
        for reason, expected, observed, value in reasons:
            best = self.reason_hits.get(reason)
            if best is None or value > best[0]:
                self.reason_hits[reason] = [value, expected, observed]

    def add(self, ts, score, tiers, template_id, template, reasons, sample, session=False, seen_at=None,
            family=""):
        self.first_seen = min(self.first_seen, ts)
        self.last_seen = max(self.last_seen, ts)
        self.touched = max(self.touched, ts if seen_at is None else seen_at)
        self.lines += 1 if sample is not None else 0
        self.findings += 1 if sample is None else 0
        self.sessions += 1 if sample is None and session else 0
        self.score = max(self.score, score)
        if sample is not None:
            self._count_family(family, 1, score)
        for tier, value in tiers.items():
            self.tier_scores[tier] = max(self.tier_scores.get(tier, 0.0), value)
        if template_id >= 0:
            hit = self.template_hits.setdefault(template_id, [0, template])
            hit[0] += 1
        self._add_reasons(reasons)
        if sample is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)

    def state(self):
        """JSON-able state: open incidents are saved with the engine's snapshot and go on after a restart."""
        return {"source": self.source, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "window": self.window, "opened_by": self.opened_by, "opened_family": self.opened_family,
                "lines": self.lines, "findings": self.findings,
                "sessions": self.sessions,
                "score": self.score, "burst": self.burst, "recent": [float(t) for t in self.recent],
                "tier_scores": self.tier_scores, "template_hits": [[int(t), c, x] for t, (c, x) in
                                                                   self.template_hits.items()],
                "reason_hits": self.reason_hits, "samples": self.samples, "families": sorted(self.families),
                "family_lines": [[f, n, best] for f, (n, best) in self.family_lines.items()],
                "family_first": self.family_first, "family_last": self.family_last,
                "excuses": [list(e) for e in self.excuses],
                "touched": self.touched, "absent": list(self.absent) if self.absent else None,
                "rule_values": list(self.rule_values)}

    @classmethod
    def from_state(cls, state):
        """The Incident state() described; KeyError, TypeError or ValueError when it is not one."""
        incident = cls(str(state["source"]), float(state["first_seen"]), float(state["last_seen"]),
                       float(state["window"]), opened_by=str(state["opened_by"]), lines=int(state["lines"]),
                       findings=int(state["findings"]), score=float(state["score"]), burst=float(state["burst"]),
                       recent=np.asarray(state["recent"], dtype=np.float64))
        incident.tier_scores = {str(k): float(v) for k, v in dict(state["tier_scores"]).items()}
        incident.template_hits = {int(t): [int(c), str(x)] for t, c, x in state["template_hits"]}
        incident.reason_hits = {str(r): list(v) for r, v in dict(state["reason_hits"]).items()}
        incident.samples = [str(x) for x in state["samples"]]
        incident.families = {str(f) for f in state["families"]}
        incident.family_lines = {str(f): [int(n), float(best)] for f, n, best in state.get("family_lines", [])}
        incident.family_first = {str(f): float(t) for f, t in dict(state.get("family_first", {})).items()}
        incident.family_last = {str(f): float(t) for f, t in dict(state.get("family_last", {})).items()}  # likewise
        incident.excuses = [(str(f), float(a), float(b)) for f, a, b in state.get("excuses", [])]          # likewise
        incident.sessions = int(state.get("sessions", 0))   # absent in states saved before it
        incident.touched = float(state.get("touched", incident.last_seen))   # likewise
        incident.opened_family = str(state.get("opened_family", ""))         # likewise: the id stays
        absent = state.get("absent")                                           # likewise
        incident.absent = (float(absent[0]), float(absent[1])) if absent else None
        incident.rule_values = [int(n) for n in state.get("rule_values", [0, 0])][:2]   # likewise
        return incident

    def record(self):
        """The JSON-able incident: what bench/detect_bench.py and the alerter read."""
        top_reason, (_, expected, observed) = _headline(self.reason_hits, self.absent is not None, self.value_borne)
        family = self.family
        template = self.template_hits[int(family)][1] if family != "source" else ""
        return {"id": self.id, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "source": self.source, "kind": _kind(top_reason), "reason": top_reason,
                "tiers": sorted(t for t, v in self.tier_scores.items() if v > 0),
                "tier_scores": {t: round(v, 1) for t, v in sorted(self.tier_scores.items())},
                "score": round(self.evidence, 1), "line_score": round(self.score, 1),
                "burst_score": round(self.burst, 1), "lines": self.lines,
                "template_id": int(family) if family != "source" else -1, "template": template,
                "templates": sorted(self.template_hits, key=lambda t: -self.template_hits[t][0])[:10],
                "expected": expected, "observed": observed, "samples": list(self.samples),
                "reasons": sorted(self.reason_hits, key=lambda r: -self.reason_hits[r][0])[:5]}


def _headline(reason_hits, absent=False, value_borne=False):
    """_headline_of, except that a severity rule whose lines mostly carry a value new to their source
    (value_borne, see NEW_TO_SOURCE) yields to the strongest such value."""
    reason, hit = _headline_of(reason_hits, absent)
    if value_borne and reason.startswith(SEVERITY_RULES):
        values = [kv for kv in reason_hits.items() if _new_to_source(kv[0])]
        if values:
            return min(values, key=lambda kv: (-kv[1][0], kv[0]))
    return reason, hit


def _new_to_source(reason):
    """Whether a reason is tier 3's value new to every template of its source (NEW_TO_SOURCE)."""
    return reason.startswith(NEW_TO_SOURCE[0]) and NEW_TO_SOURCE[1] in reason


def _headline_of(reason_hits, absent=False):
    """(reason, [score, expected, observed]) that names the incident: in an incident holding a silence of
    its whole source (absent), the silence before what that absence makes (ABSENCE_SYMPTOMS); else a
    broken workflow within HEADLINE_MARGIN of a drop that heads it (STEP_SYMPTOMS); then among
    the reasons scoring within
    HEADLINE_MARGIN of the strongest, a new message (a never-seen or rare template) first; then, within
    SEVERITY_MARGIN of the strongest, a severity rule ("error rule: 80 matching lines"); then the
    strongest. With a fatal line counting as a burst on its own, a new failure mode is named by its
    message, not its level; a burst of errors as strong as the values its lines carry (a record
    latency in each 503) is named by the burst, its values are its detail; errors that each carry a
    value clearly more surprising than their count (a status never seen in the source) are named by
    that value. Numbers out of line (NUMBER_REASONS) name it only when the burst is HEADLINE_MARGIN
    weaker. A value never seen that heads it yields to a volume spike of its template or source within
    SEVERITY_MARGIN (VALUE_KEY_SPIKE)."""
    ranked = sorted(reason_hits.items(), key=lambda kv: (-kv[1][0], kv[0]))
    if absent and any(_kind(reason) == "silent_source" for reason, _ in ranked):
        # A source that logs nothing leaves its partners' flows without its steps (tier 4 says so at once,
        # the silence is sure a hold later) and its templates low: the cause names the outage, the
        # symptoms are its detail. Its own lines (errors before it stopped) keep their rank.
        ranked = [kv for kv in ranked if _kind(kv[0]) not in ABSENCE_SYMPTOMS]
    elif _kind(ranked[0][0]) in STEP_SYMPTOMS:
        flows = [kv for kv in ranked if _kind(kv[0]) == "sequence" and kv[1][0] >= ranked[0][1][0] - HEADLINE_MARGIN]
        if flows:
            return flows[0]
    top = ranked[0][1][0]
    severity_margin = HEADLINE_MARGIN if ranked[0][0].startswith(NUMBER_REASONS) else SEVERITY_MARGIN
    for prefixes, margin in ((NEW_MESSAGES, HEADLINE_MARGIN), (SEVERITY_RULES, severity_margin)):
        for reason, hit in ranked:
            if hit[0] >= top - margin and reason.startswith(prefixes):
                return reason, hit
    if ranked[0][0].startswith("drift"):
        # one route's (one table's) level shift beside values out of line in its pooled series: the
        # values are named, the split is where they went wrong. So is a shift of the series whose values
        # out of line opened the episode (one host's GC pauses twenty times longer: records, then the
        # pooled series' level moves with them): one episode, named by what flagged it
        split = SPLIT_REASON.search(ranked[0][0])
        for reason, hit in ranked:
            if (reason.startswith("unusual value") and hit[0] >= top - SEVERITY_MARGIN
                    and (split or _series_of(reason) == _series_of(ranked[0][0]))):
                return reason, hit
        # a route's shift beside values out of line in its own pooled series, however weaker: they are the
        # route's values, judged against the whole pool's range (a route's bodies ten times their size: a
        # record of the pool at 70, the route's shift at 100), one episode seen from both
        for reason, hit in ranked:
            if split and reason.startswith("unusual value") and _series_of(reason) == _series_of(ranked[0][0]):
                return reason, hit
    if _kind(ranked[0][0]) == "new_value":
        for reason, hit in ranked:
            surge = _kind(reason) == "volume_spike" and not VALUE_KEY_SPIKE.match(reason)
            if surge and hit[0] >= top - SEVERITY_MARGIN:
                return reason, hit
    return ranked[0]


def _began(describe, lines, first):
    """Earliest start the tiers gave for the evidence of these batch lines (TierResult.began), if
    before `first`; else None."""
    results = getattr(describe, "results", None) or {}
    began = [r.began[i] for r in results.values() if r.began for i in lines.tolist() if i in r.began]
    return min(began) if began and min(began) < first else None


def _series_of(reason):
    """'parameter N of 'template'' of a numeric reason (which series it is about), or None."""
    found = SERIES_OF.search(reason)
    return found.group(0) if found else None


def _kind(reason):
    for needle, kind in KIND_BY_REASON:
        if needle in reason:
            return kind
    return "anomaly"


def kind_of(reason):
    """The incident kind a reason names (what a finding would open: feedback rules suppress by kind)."""
    return _kind(reason)


class IncidentBook:
    """Open incidents per source and family; closes the ones that have been quiet for a window.

    Routing of evidence of family F from source S at time t (see docs/detection.md, Incidents):
    the open incident of S that already holds F, if any; else the most recent open incident of S
    that began at most `join_seconds` before t (F started with it: one outage); else a new incident
    with onset t. An incident's id hashes its source, the evidence that opened it (and its family) and
    its onset bucket, so it does not depend on what joins it later.
    """

    def __init__(self, window_seconds, join_seconds=60.0, volume_tier=None, threshold=None, min_lines=None):
        self.window = float(window_seconds)
        self.join = float(join_seconds)
        # incident_min_lines: an incident short of it whose strongest line was a never-seen message stays
        # open RECALL_WINDOWS for that message's repeats (see _awaits_repeat); None: none does
        self.min_lines = min_lines
        # anomaly_threshold: an incident first reaching it by lines of a family that joined it is dated
        # from that family's lines (see _redate); None: every incident keeps its first line's time
        self.threshold = threshold
        # (number of tiers, index of the volume tier) of the line family codes (engine._line_families):
        # a source's volume spike and a spike of one of its templates are one problem (see _one_surge)
        self.volume_tier = volume_tier
        self.open = {}        # (source, opening family) -> Incident
        self._route = {}      # (source, family) -> key in self.open
        # source -> when it went low, for a drop or silence of the whole source that a tier holds back
        # before raising it (set by the engine every batch): that source's incidents quiet since about then
        # stay open until it is raised or withdrawn, so it can join and name what its absence made (its
        # partners' workflows out of order at once, while the silence is sure only a hold later).
        self.waiting = {}

    def add(self, source, ts, score, tiers, template_id, template, reasons, sample, opened_by, family=None,
            session=False, seen_at=None, since=None):
        """Add one suspicious line or a Finding (sample None; session: about one unfinished session);
        return the incidents this closes (same source, quiet for too long). family defaults to opened_by;
        seen_at: when evidence stamped ts (its onset) was judged, if later (it keeps the incident open);
        since: start of the span of absence a finding covers (Finding.since)."""
        closed = self._close_source(source, ts)
        routed = since if since is not None else self._held_absence(source, ts, reasons)
        incident = self._incident(source, family or opened_by, ts, opened_by, since=routed)
        if since is not None:
            low, high = incident.absent or (since, ts)
            incident.absent = (min(low, since), max(high, ts))
        incident.add(ts, score, tiers, template_id, template, reasons, sample, session, seen_at, family or opened_by)
        return closed

    def _held_absence(self, source, ts, reasons):
        """Start of the drop or silence of the whole source that tier 2 holds (waiting) if a drop of one of
        its templates at ts is part of it, else None. The template's drop is sure before the source's (a
        busy template empties first) and is routed as that absence: it joins what the absence made at once
        (its partners' workflows out of order, a minute or two before) instead of opening an incident of its
        own that the source's silence, raised next, would join."""
        since = self.waiting.get(source)
        if since is None or since > ts or not reasons or _kind(reasons[0][0]) != "volume_drop":
            return None
        return since

    def add_lines(self, source, ts, score, tiers, tids, lines, describe, expected_per_window=None, families=None):
        """Add one source's suspicious lines, in time order, as add() would one by one (see
        Incident.add_many for the arguments; families: an int code per line, default its template);
        return the incidents this closes."""
        families = tids if families is None else families
        segments = []
        for fam in np.unique(families).tolist():
            mine = np.flatnonzero(families == fam)
            for run in np.split(mine, np.flatnonzero(np.diff(ts[mine]) > self.window) + 1):
                segments += [(float(ts[part[0]]), fam, part) for part in self._at_first_strong(score, run)]
        closed = []
        # In time order of their first line, so that the evidence that came first opens the incident, and the
        # family whose line first reached the threshold is the one that made it an incident (_redate).
        for first, fam, run in sorted(segments, key=lambda seg: (seg[0], seg[1])):
            closed += self._close_source(source, first)
            incident = self._incident(source, "lines:%d" % fam, first, str(int(tids[run[0]])),
                                      _began(describe, lines[run], first))
            weak = self._weak(incident)
            incident.add_many(ts[run], score[run], {k: v[run] for k, v in tiers.items()}, tids[run], lines[run],
                              describe, "lines:%d" % fam)
            if weak and not self._weak(incident):
                self._redate(incident, "lines:%d" % fam)
            if expected_per_window is not None:
                incident.add_bursts(ts[run], expected_per_window)
        return closed

    def _at_first_strong(self, score, run):
        """A family's run of lines split where its first line at the anomaly threshold comes: its suspicious
        lines before it and the rest. Added whole, a run opened by a weak line made its family the one that
        first reached the threshold even where another family's line had, earlier: the incident was dated
        from the weak line (a scanner's odd request 100 s before a 5xx storm whose first record latency
        came 15 s before this family's)."""
        if self.threshold is None:
            return [run]
        strong = np.flatnonzero(score[run] >= self.threshold)
        return [run] if strong.size == 0 or strong[0] == 0 else [run[: strong[0]], run[strong[0]:]]

    def _incident(self, source, family, ts, opened_by, began=None, since=None):
        """The open incident that evidence of `family` at `ts` belongs to, opened if there is none.
        began: when that evidence started, if well before ts (a slow burst): it joins an incident
        that opened within join_seconds of its start as well. since: the evidence is an absence
        since then (a source with no line): an incident of the source that opened inside that span
        holds evidence of the same absence, and it joins it; and evidence stamped inside the span of
        an absence an incident holds joins that incident."""
        key = self._route.get((source, family))
        if key in self.open:
            return self.open[key]
        starts = (ts,) if began is None else (ts, began)
        young = [(inc.first_seen, k) for k, inc in self.open.items()
                 if k[0] == source and (min(abs(t - inc.first_seen) for t in starts) <= self.join
                                        or since is not None and since - self.join <= inc.first_seen <= ts
                                        or inc.absent and inc.absent[0] - self.join <= ts <= inc.absent[1])]
        if not young:
            young = [(inc.first_seen, k) for k, inc in self.open.items()
                     if k[0] == source and any(self._one_surge(family, f) for f in inc.families)]
        if young:
            key = max(young)[1]
        else:
            key = (source, family)
            self.open[key] = Incident(source, ts, ts, self.window, opened_by=opened_by, opened_family=family)
        self._route[(source, family)] = key
        self.open[key].families.add(family)
        return self.open[key]

    def excuse(self, source, family, since, until):
        """Lines of `family` in open incidents of `source` that all fell between since and until are no
        evidence (Incident.persists): the engine says so for a workflow's steps skipped while the service
        that logs them wrote nothing, a silence known only once it logged again (a deploy's restart).
        Checked when the incident is judged, so lines that join it later count again."""
        for key, incident in self.open.items():
            if key[0] == source and family in incident.family_lines:
                incident.excuses = (incident.excuses + [(family, float(since), float(until))])[-MAX_EXCUSES:]

    def _weak(self, incident):
        """Whether an incident holds suspicious lines only, none at the anomaly threshold, and no finding
        (False without a threshold)."""
        return self.threshold is not None and incident.findings == 0 and incident.score < self.threshold

    def _redate(self, incident, family):
        """An incident that first reached the anomaly threshold by lines of `family` begins with that
        family's first line here, unless `family` opened it. Suspicious lines of other families that came
        before are weak evidence of when anything began: rare but routine lines (a daily job's start and
        progress, a weekly report) are suspicious on every run, and a backup's never-seen error two minutes
        into the daily report's run was an alert dated from the report's start. They stay as its context
        (lines, samples); lines of the family itself that came before its strongest are its own slow start
        and do date it. Its id (never reported while it was weak) hashes the new onset's bucket."""
        if family != incident.opened_family:
            incident.first_seen = incident.family_first.get(family, incident.first_seen)

    def _one_surge(self, family, other):
        """Whether two line families are a volume spike of a whole source and one of one of its templates:
        the template's lines are part of the source's surge (a campaign lifting every request template, a
        scraper lifting one until the source's count shows it too), one problem whichever came first.
        Spikes of two templates stay apart: two messages surging are two problems until shown otherwise."""
        if self.volume_tier is None or not (family.startswith("lines:") and other.startswith("lines:")):
            return False
        n, volume = self.volume_tier
        a, b = int(family[6:]), int(other[6:])
        return a % n == volume and b % n == volume and (a // n == -1) != (b // n == -1)

    def _close_source(self, source, ts):
        """Remove and return the incidents of `source` with nothing new for a whole window before ts."""
        return self._pop([k for k, inc in self.open.items() if k[0] == source and self._quiet(inc, ts)])

    def _quiet(self, incident, now):
        """Whether nothing came for a whole window before `now` (RECALL_WINDOWS for an incident awaiting
        a repeat) and no held silence may still join it."""
        since = self.waiting.get(incident.source)
        hold = self.window * (RECALL_WINDOWS if self._awaits_repeat(incident) else 1)
        return now - incident.quiet_since > hold and (since is None or since > incident.quiet_since + self.join)

    def _awaits_repeat(self, incident):
        """Whether an incident is short of min_lines and holds a message never seen before, or a burst of a
        rule, that reached the anomaly threshold: it is not reported yet, and that message (that rule's
        lines) coming again within the hour is the same problem, not a new one alone again: a batch job's
        failure, then its retries; a slow burst of a rare error (a deadlock every few minutes, ten times
        its usual rate), whose lines may come further apart than a window."""
        if self.min_lines is None or self.threshold is None or incident.findings:
            return False
        best = max((hit[0] for reason, hit in incident.reason_hits.items()
                    if reason == NEVER_SEEN or _kind(reason) == "rule_burst"), default=None)
        return (best is not None and best >= self.threshold
                and not incident.persists(self.min_lines, self.threshold))

    def _pop(self, keys):
        closed = []
        for key in keys:
            incident = self.open.pop(key)
            for family in incident.families:
                if self._route.get((key[0], family)) == key:
                    del self._route[(key[0], family)]
            closed.append(incident)
        return closed

    def close_quiet(self, now):
        """Remove and return the incidents with nothing new for a whole window before `now`."""
        return self._pop([k for k, inc in self.open.items() if self._quiet(inc, now)])

    def close_all(self):
        return self._pop(list(self.open))

    def state(self):
        """The open incidents and their routes, JSON-able (saved with the engine's snapshot: a restart or
        reload goes on with the same incidents, so their ids and alerts stay the same)."""
        keys = list(self.open)
        return {"open": [[k[0], k[1], self.open[k].state()] for k in keys],
                "route": [[s, f, keys.index(k)] for (s, f), k in self._route.items() if k in self.open]}

    def restore(self, state):
        """Take back what state() saved; KeyError, TypeError, ValueError or IndexError when it is not that."""
        opened = {(str(s), str(f)): Incident.from_state(inc) for s, f, inc in state["open"]}
        keys = list(opened)
        route = {(str(s), str(f)): keys[int(i)] for s, f, i in state["route"]}
        self.open, self._route = opened, route

    def find(self, incident_id):
        for incident in self.open.values():
            if incident.id == incident_id:
                return incident
        return None
