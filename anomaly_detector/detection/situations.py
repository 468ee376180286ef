"""Situations: incidents of several sources that overlap in time and are linked, told as one story.

One job: group incident records (detection/incidents.py Incident.record(), fed as they open, update
or close) into situations with a stable id, and name each situation's probable first cause with the
evidence and a confidence. Links come from the incidents' own lines: identifiers they share (hosts,
ips, ports, table names, request ids; tokens met in most incidents count for nothing), one source's
name (or a host/program part of it) in another's lines, co-occurrence learned online (ordered source
pairs whose incidents began close together before, decayed counts), and the operator's optional
`[situations] dependencies`. Time overlap alone never links: unrelated incidents at the same moment
stay apart. Memory is bounded: at most max_open open situations, max_pairs learned pairs and
max_tokens token counts; a wrong link merges two notifications, it never drops an incident.

Neighbours: commands/replay.py (`--situations`) feeds the records sorted by first_seen;
bench/situation_bench.py scores the result against the generators' cascades; docs/situations.md
is the operator's page.
"""
import hashlib
import math
import re
import time
from dataclasses import dataclass, field

# Identifier-like tokens of a line: ips (with a port), host names with a digit (db-primary-1, web-2),
# key=value identifiers, long hex or uuid request ids, and the word after "table"/"on"/"to"/"from".
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{2,5}))?\b")
_HOST = re.compile(r"\b([a-z][a-z0-9]*(?:[-_.][a-z0-9]+)+)(?::(\d{2,5}))?\b", re.I)   # with a digit: see tokens_of
_HEX = re.compile(r"\b(?=[0-9a-f-]*[a-f])(?=[0-9a-f-]*\d)[0-9a-f]{8,}(?:-[0-9a-f]{4,})*\b", re.I)
_NAMED = re.compile(r"\b(?:table|relation|on|host|upstream|target|queue|server|peer)[=: ]+(?:table\s+|relation\s+)?\"?([a-z_][a-z0-9_.-]{2,})",
                    re.I)
# A host a line calls: host:port, or after to / for / upstream / backend / target / connecting to.
_CALL = re.compile(r"(?:\b(?:to|for|upstream|backend|target|connecting to)\b[=:]?\s*\"?(?:[a-z]+://)?"
                   r"([a-z][a-z0-9]*(?:[-_.][a-z0-9]+)+))|\b([a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*):\d{2,5}\b", re.I)
_WORD = re.compile(r"[a-z][a-z0-9]+", re.I)
_STOP = {"the", "for", "and", "after", "with", "from", "to", "on", "ms", "http", "https", "null", "none", "true",
         "false", "localhost", "table", "select", "update", "insert", "delete"}
MAX_TOKENS_PER_INCIDENT = 64
COMMON_SHARE = 0.5          # a token in more than this share of recent incidents is too common to link
COMMON_MIN_SEEN = 8         # ... once this many incidents have been seen
DECAY = 0.98                # per incident seen: learned counts forget old history slowly
TIME_FMT = "%H:%M:%S"
MAX_LINKS = 200             # links kept per situation (the evidence shows 20 lines at most)

# Weights of link evidence; two incidents link when their sum reaches LINK_THRESHOLD.
W_SHARED, W_SHARED_CAP = 1.0, 2.0
W_MENTION = 1.5
W_DEPENDENCY = 1.5
W_LEARNED = 1.1             # times the pair's share: history alone links only pairs together >= 91% of the time
LINK_THRESHOLD = 1.0
DIRECTED = ("names ", "calls ", "configured")   # links that say which side depends on which
LEARN_MIN = 5.0             # decayed co-occurrences before a pair's history counts as a link


@dataclass
class Member:
    """What the correlator keeps of one incident: its record's fields and the tokens of its lines."""

    id: str
    source: str
    first_seen: float
    last_seen: float
    template: str
    reason: str
    tokens: frozenset
    words: frozenset
    calls: frozenset = frozenset()


@dataclass
class Situation:
    id: str
    first_seen: float
    last_seen: float
    members: dict = field(default_factory=dict)        # incident id -> Member
    links: list = field(default_factory=list)          # (dependent source, cause source, why)

    def record(self, correlator):
        """The situation as `replay --situations` writes it (docs/cli.md: a fixed layout)."""
        ranked, confidence = correlator.rank(self)
        first = ranked[0]
        members = sorted(self.members.values(), key=lambda m: (m.first_seen, m.id))
        return {"id": self.id, "first_seen": self.first_seen, "last_seen": self.last_seen,
                "incidents": [m.id for m in members],
                "sources": sorted({m.source for m in members}),
                "first_cause": {"source": first.source, "template": first.template, "onset": first.first_seen},
                "confidence": round(confidence, 3),
                "evidence": _evidence(members, self.links)}


def _clock(ts):
    return time.strftime(TIME_FMT, time.gmtime(ts))


def _evidence(members, links):
    """One string per incident in onset order ("db: slow query from 10:02:10"), then the links."""
    out = ["%s: %s from %s" % (m.source, m.reason or m.template or "anomaly", _clock(m.first_seen)) for m in members]
    seen = set()
    for dependent, cause, why in links:
        if (dependent, cause, why) not in seen:
            seen.add((dependent, cause, why))
            out.append("%s -> %s: %s" % (dependent, cause, why))
    return out[:20]


def tokens_of(texts):
    """Identifier tokens, plain words and called hosts of an incident's lines (samples, template)."""
    tokens, words, calls = set(), set(), set()
    for text in texts:
        calls.update((a or b).lower() for a, b in _CALL.findall(text) if any(c.isdigit() for c in a or b))
        for ip, port in _IP.findall(text):
            tokens.add(ip)
            if port:
                tokens.add("%s:%s" % (ip, port))
        for host, port in _HOST.findall(text):
            if any(c.isdigit() for c in host):
                tokens.add(host.lower())
                if port:
                    tokens.add("port:%s" % port)
        tokens.update(h.lower() for h in _HEX.findall(text))
        tokens.update(n.lower().rstrip(".,;") for n in _NAMED.findall(text) if n.lower() not in _STOP)
        words.update(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP)
    return (frozenset(sorted(tokens)[:MAX_TOKENS_PER_INCIDENT]), frozenset(words),
            frozenset(sorted(calls)[:MAX_TOKENS_PER_INCIDENT]))


def name_parts(source):
    """The parts of a source name that another source's lines would use to name it: the whole name
    and its host/program parts ("web-1/nginx" -> web-1/nginx, web-1, web, nginx)."""
    parts = {source.lower()}
    for piece in re.split(r"[/\s]+", source.lower()):
        if piece:
            parts.add(piece)
            stem = re.split(r"[-_.\d]", piece)[0]
            if len(stem) >= 2:
                parts.add(stem)
    return {p for p in parts if len(p) >= 2 and p not in _STOP}


def parse_dependencies(items):
    """'app->db' (app depends on db) items to a set of (dependent, cause); ValueError naming a bad one."""
    out = set()
    for item in items or ():
        dependent, sep, cause = str(item).partition("->")
        if not sep or not dependent.strip() or not cause.strip():
            raise ValueError("dependency %r: write it as DEPENDENT->CAUSE, e.g. app->db" % item)
        out.add((dependent.strip(), cause.strip()))
    return out


class Correlator:
    """Groups incident records into situations, online and bounded (see the module docstring).

    add(record) takes an incident as it opens, updates or closes and returns its situation;
    close_quiet(now) returns the situations quiet for a whole window (event time); finish() all.
    """

    def __init__(self, window_seconds=300.0, max_open=1000, max_pairs=10000, max_tokens=50000,
                 dependencies=(), on_limit=None):
        self.window = float(window_seconds)
        self.max_open, self.max_pairs, self.max_tokens = int(max_open), int(max_pairs), int(max_tokens)
        self.dependencies = parse_dependencies(dependencies)
        self.on_limit = on_limit or (lambda reason: None)   # called with "max_open" / "max_pairs" when hit
        self.open = {}            # situation id -> Situation
        self.of_incident = {}     # incident id -> situation id (open situations only)
        self.token_seen = {}      # token -> decayed count of incidents holding it
        self.seen = 0.0           # decayed count of incidents
        self.pairs = {}           # (earlier source, later source) -> decayed co-occurrences within a window
        self.source_seen = {}     # source -> decayed incidents
        self.recent = []          # (first_seen, source) of incidents of the last window, for co-occurrence
        self.closed_early = []    # situations closed by the max_open bound, not yet taken

    # ------------------------------------------------------------------ feeding

    def add(self, record):
        """Take one incident record (new or again, as it grows); return its Situation."""
        member = self._member(record)
        sid = self.of_incident.get(member.id)
        if sid in self.open:
            situation = self.open[sid]
            situation.members[member.id] = member
            situation.last_seen = max(situation.last_seen, member.last_seen)
            return situation
        self._learn(member)
        joined = []
        for situation in sorted(self.open.values(), key=lambda s: (s.first_seen, s.id)):
            if not self._overlaps(situation, member):
                continue
            why = self._links(situation, member)
            if why:
                joined.append(situation)
                situation.links = (situation.links + why)[-MAX_LINKS:]
        if not joined:
            situation = Situation(_situation_id(member.id), member.first_seen, member.last_seen)
            self._make_room()
            self.open[situation.id] = situation
        else:
            situation = self._merge(joined)
        situation.members[member.id] = member
        situation.first_seen = min(situation.first_seen, member.first_seen)
        situation.last_seen = max(situation.last_seen, member.last_seen)
        self.of_incident[member.id] = situation.id
        return situation

    def close_quiet(self, now):
        """Remove and return the situations with nothing new for a whole window before `now`."""
        quiet = [s for s in self.open.values() if now - s.last_seen > self.window]
        return [self._close(s) for s in sorted(quiet, key=lambda s: (s.first_seen, s.id))]

    def finish(self):
        return [self._close(s) for s in sorted(self.open.values(), key=lambda s: (s.first_seen, s.id))]

    def situation_of(self, incident_id):
        sid = self.of_incident.get(incident_id)
        return self.open.get(sid)

    def _close(self, situation):
        del self.open[situation.id]
        for iid in situation.members:
            self.of_incident.pop(iid, None)
        return situation

    def _make_room(self):
        """At max_open, the situation quiet the longest is closed early (its incidents stay listed)."""
        while len(self.open) >= self.max_open:
            oldest = min(self.open.values(), key=lambda s: (s.last_seen, s.id))
            self._close(oldest)
            self.closed_early.append(oldest)
            self.on_limit("max_open")

    def take_closed_early(self):
        taken, self.closed_early = self.closed_early, []
        return taken

    def _merge(self, joined):
        """Linked to several situations: they are one; the earliest keeps its id."""
        keep = joined[0]
        for other in joined[1:]:
            keep.members.update(other.members)
            keep.links = (keep.links + other.links)[-MAX_LINKS:]
            keep.first_seen = min(keep.first_seen, other.first_seen)
            keep.last_seen = max(keep.last_seen, other.last_seen)
            for iid in other.members:
                self.of_incident[iid] = keep.id
            del self.open[other.id]
        return keep

    def _member(self, record):
        texts = list(record.get("samples") or []) + [record.get("template") or ""]
        tokens, words, calls = tokens_of(texts)
        return Member(str(record["id"]), str(record["source"]), float(record["first_seen"]),
                      float(record["last_seen"]), str(record.get("template") or ""),
                      str(record.get("reason") or ""), tokens, words, calls)

    def _overlaps(self, situation, member):
        return situation.first_seen - self.window <= member.first_seen <= situation.last_seen + self.window

    # ------------------------------------------------------------------ links

    def _links(self, situation, member):
        """Why `member` belongs to `situation`: [(dependent, cause, why)], empty when nothing links."""
        found = []
        for other in situation.members.values():
            if other.source == member.source:
                continue
            why = self._pair_links(other, member)
            if why:
                found += why
        return found

    def _pair_links(self, a, b):
        """Links between two incidents of different sources; [] when their evidence is too weak."""
        weight, why = 0.0, []
        shared = [t for t in a.tokens & b.tokens if not self._common(t)]
        if shared:
            weight += min(W_SHARED_CAP, W_SHARED * len(shared))
            early, late = (a, b) if (a.first_seen, a.id) <= (b.first_seen, b.id) else (b, a)
            why.append((late.source, early.source, "share %s" % ", ".join(sorted(shared)[:3])))
        for dependent, cause in ((a, b), (b, a)):
            named = self._names(dependent, cause)
            if named:
                weight += W_MENTION
                why.append((dependent.source, cause.source, named if named.startswith("calls ") else "names " + named))
            if (dependent.source, cause.source) in self.dependencies:
                weight += W_DEPENDENCY
                why.append((dependent.source, cause.source, "configured dependency"))
        learned, strength = self._learned(a.source, b.source)
        if learned >= LEARN_MIN:
            weight += W_LEARNED * strength
            early, late = (a, b) if a.first_seen <= b.first_seen else (b, a)
            why.append((late.source, early.source, "followed each other %d times before (%d%% of the time)"
                        % (round(learned), 100 * strength)))
        return why if weight >= LINK_THRESHOLD else []

    def _names(self, dependent, cause):
        """What in dependent's lines names cause: a part of cause's source name, or a host of cause's
        lines that dependent calls (host:port, "to"/"waiting for"/"upstream" HOST) and cause does not."""
        for part in sorted(name_parts(cause.source) - name_parts(dependent.source)):
            # Short names ("db", "app") only as a host's stem (db-primary-1): as words they are everywhere.
            if (len(part) >= 4 and part in dependent.words) or any(t.split("-")[0] == part for t in dependent.tokens):
                return part
        called = (dependent.calls & cause.tokens) - cause.calls
        return "calls %s" % min(called) if called else ""

    def _common(self, token):
        if self.seen < COMMON_MIN_SEEN:
            return False
        return self.token_seen.get(token, 0.0) > COMMON_SHARE * self.seen

    def _learned(self, s1, s2):
        """(decayed co-occurrences of two sources' incidents, their share of the rarer source's incidents)."""
        together = self.pairs.get((s1, s2), 0.0) + self.pairs.get((s2, s1), 0.0)
        fewer = min(self.source_seen.get(s1, 0.0), self.source_seen.get(s2, 0.0))
        return together, min(1.0, together / fewer) if fewer > 0 else 0.0

    # ------------------------------------------------------------------ learning

    def _learn(self, member):
        """Decayed counts: tokens (to tell common ones), sources, co-occurring ordered source pairs."""
        self.seen = self.seen * DECAY + 1.0
        for token in member.tokens:
            self.token_seen[token] = self.token_seen.get(token, 0.0) * DECAY + 1.0
        if len(self.token_seen) > self.max_tokens:
            self._prune(self.token_seen, self.max_tokens)
        self.source_seen[member.source] = self.source_seen.get(member.source, 0.0) * DECAY + 1.0
        self.recent = [(t, s) for t, s in self.recent if member.first_seen - t <= self.window]
        for _, source in self.recent:
            if source != member.source:
                key = (source, member.source)
                self.pairs[key] = self.pairs.get(key, 0.0) + 1.0
        if len(self.pairs) > self.max_pairs:
            self._prune(self.pairs, self.max_pairs)
            self.on_limit("max_pairs")
        for key in list(self.pairs):
            self.pairs[key] *= DECAY
        self.recent.append((member.first_seen, member.source))

    @staticmethod
    def _prune(counts, bound):
        """Keep the larger half of a bounded table of decayed counts."""
        keep = sorted(counts.items(), key=lambda kv: -kv[1])[:bound // 2]
        counts.clear()
        counts.update(keep)

    # ------------------------------------------------------------------ persistence

    def state(self):
        """JSON-able state (the alerter keeps it in each sink's checkpoint): open situations and history."""
        return {"open": [_situation_state(s) for s in self.open.values()],
                "token_seen": self.token_seen, "seen": self.seen, "source_seen": self.source_seen,
                "pairs": [[a, b, n] for (a, b), n in self.pairs.items()], "recent": self.recent}

    def restore(self, state):
        """Take back what state() saved; KeyError, TypeError or ValueError when it is not that."""
        opened = [_situation_from(s) for s in state["open"]]
        self.open = {s.id: s for s in opened}
        self.of_incident = {iid: s.id for s in opened for iid in s.members}
        self.token_seen = {str(k): float(v) for k, v in dict(state["token_seen"]).items()}
        self.seen = float(state["seen"])
        self.source_seen = {str(k): float(v) for k, v in dict(state["source_seen"]).items()}
        self.pairs = {(str(a), str(b)): float(n) for a, b, n in state["pairs"]}
        self.recent = [(float(t), str(src)) for t, src in state["recent"]]

    # ------------------------------------------------------------------ first cause

    def rank(self, situation):
        """The members, probable first cause first, and how sure that is (0..1).

        Score: an earlier onset (a minute earlier is worth one point, up to three); a directed link
        (names or calls the other) costs its dependent two points and gives its cause half a point: a
        source that waits on another member is not where it began, while being waited on says little
        about who came first; lead-lag learned from history adds up to one point. Confidence: the
        logistic of the margin between the first two; a lone incident is its own first cause (1.0).
        """
        members = sorted(situation.members.values(), key=lambda m: (m.first_seen, m.id))
        if len(members) == 1:
            return members, 1.0
        start = members[0].first_seen
        directed = {(d, c) for d, c, why in situation.links if why.startswith(DIRECTED)}
        score = {}
        for m in members:
            s = max(0.0, 3.0 - (m.first_seen - start) / 60.0)
            s += 0.5 * sum(c == m.source for _, c in directed) - 2.0 * sum(d == m.source for d, _ in directed)
            for other in members:
                if other.source != m.source:
                    lead = self.pairs.get((m.source, other.source), 0.0)
                    lag = self.pairs.get((other.source, m.source), 0.0)
                    if lead + lag >= LEARN_MIN:
                        s += (lead - lag) / (lead + lag) / max(1, len(members) - 1)
            score[m.id] = s
        ranked = sorted(members, key=lambda m: (-score[m.id], m.first_seen, m.id))
        margin = score[ranked[0].id] - score[ranked[1].id]
        return ranked, 1.0 / (1.0 + math.exp(-margin))


def _situation_state(situation):
    members = [[m.id, m.source, m.first_seen, m.last_seen, m.template, m.reason, sorted(m.tokens), sorted(m.words),
                sorted(m.calls)] for m in situation.members.values()]
    return {"id": situation.id, "first_seen": situation.first_seen, "last_seen": situation.last_seen,
            "members": members, "links": [list(link) for link in situation.links[-MAX_LINKS:]]}


def _situation_from(state):
    situation = Situation(str(state["id"]), float(state["first_seen"]), float(state["last_seen"]))
    for iid, source, first, last, template, reason, tokens, words, calls in state["members"]:
        situation.members[str(iid)] = Member(str(iid), str(source), float(first), float(last), str(template),
                                             str(reason), frozenset(tokens), frozenset(words), frozenset(calls))
    situation.links = [(str(d), str(c), str(w)) for d, c, w in state["links"]]
    return situation


def _situation_id(incident_id):
    """A situation's id: from the incident that opened it, so it does not change as others join."""
    return "s-" + hashlib.sha1(incident_id.encode()).hexdigest()[:12]


def situations_of(records, **settings):
    """Every incident record grouped: the situation records sorted by first_seen (what replay writes).
    Each incident is in exactly one situation; a lone incident is a situation of one."""
    correlator = Correlator(**settings)
    done = []
    for record in sorted(records, key=lambda r: (r["first_seen"], str(r["id"]))):
        done += correlator.close_quiet(float(record["first_seen"]))
        correlator.add(record)
        done += correlator.take_closed_early()
    done += correlator.finish()
    out = [s.record(correlator) for s in done]
    return sorted(out, key=lambda r: (r["first_seen"], r["id"]))
