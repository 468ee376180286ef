"""Noise control per sink: severity routing, the dedup window, grouping and quiet hours.

The alerter (alerter.py) gives each sink's SinkPolicy the sink's events one at a time, in outbox order
(offer), and asks it what to send (due); a notification is a list of events, sent by the sink as one
message (one event as before, several as a group: Sink.send_group). The policy never sends nor sleeps,
so every rule here is a plain function of the events and the clock, tested as such
(tests/unit/test_alert_noise.py). Its state goes into the sink's checkpoint with the outbox position,
so an event taken from the outbox is either in that state or done, across restarts.

Rules, in the order an event meets them:
1. Routing: a sink takes an incident from its first event whose severity (events.severity) is one of
   its `severities` and whose score reaches its `min_score`; from then on it gets every event of that
   incident (so a `resolved` always follows what it announced). Others: suppressed.
2. Dedup: incidents with the same identity (source, kind, template: identity()) form one
   episode while each opens within `dedup_window_seconds` (event time) of the last line of the one
   before. The first is the episode's lead; the others are folded into it: their events carry the
   lead's incident_id (and folded_from: their own), an `opened` becomes an `updated`, and updates go out
   at most every `update_interval_seconds` (an escalation to critical at once); the episode's `resolved`
   goes out when its last incident closes, and only if the receiver was told it fires, after
   `resolve_wait_seconds` (event write time) in which no incident of its identity opened again: one
   that does voids it (a flapping outage stays one firing incident).
3. Quiet hours: while the sink's quiet hours last, events of non-critical incidents are held; at the
   end they go out as one digest. An incident opened and resolved within the quiet hours is dropped;
   a held update is replaced by a newer one. A critical event goes at once, with what was held of its
   incident before it.
4. Grouping: `opened` events written within `group_wait_seconds` of the first (event `at`) go out as
   one notification, once the wait is over (not for alertmanager: it groups by itself); the other
   events taken meanwhile follow the group, in order.
Situations (detection/situations.py, docs/situations.md), with rule 2: the alerter's one correlator
(situation_book.py) puts every incident event in its situation before any sink sees it (the event's
SITUATION_KEY, stripped here), so all sinks name a situation by the same id. A newly routed incident
that is in the situation of an incident this sink announced (firing, or resolved within
the correlator's window: the situation is still open) is folded into that incident's episode like a
dedup: its `opened` goes out at once as an `updated` of the situation's lead (a join is always told,
whatever update_interval_seconds; a resolved one fires again), and the situation resolves when its
last incident closes. Every event of an incident in a situation of several carries
`situation` (id, sources, incidents, first_cause, confidence, evidence).
"""
import collections
import hashlib
import logging
import time
import zoneinfo
from datetime import datetime, timedelta

from anomaly_detector.alerting.events import OPENED, RESOLVED, UPDATED
from anomaly_detector.alerting.situation_book import SITUATION_KEY, SITUATION_LIMITS  # noqa: F401 (sidecar's)

log = logging.getLogger(__name__)
SEVERITIES = ("critical", "warning")
# Bounded reasons of alerts_suppressed_total{sink,reason}.
SUPPRESS_REASONS = ("severity", "min_score", "dedup", "resolved_in_quiet_hours", "superseded_in_quiet_hours",
                    "held_overflow")
GROUP = "group"


def identity(incident):
    """What makes two incidents "the same alert": source, kind and template. Not the severity: it grows with
    the evidence (one burst cut by a batch opens as a warning, the next as critical), and the routing
    before the dedup already keeps a sink's severities apart; an escalation to critical is always told."""
    return "%s|%s|%s" % (incident.get("source", ""), incident.get("kind", ""), incident.get("template_id", ""))


def group_id(events):
    """A group notification's id: made from its events' ids, so a retry or a re-send carries the same one."""
    return "group-" + hashlib.sha1(",".join(e["id"] for e in events).encode()).hexdigest()[:16]


def group_payload(events):
    """The JSON object of a notification listing several events (webhook body, file line)."""
    return {"id": group_id(events), "event": GROUP, "count": len(events), "at": max(e["at"] for e in events),
            "events": events}


def parse_quiet_hours(text):
    """(start minute, end minute) of the day from "HH:MM-HH:MM"; ValueError (one line) otherwise."""
    try:
        start, end = (_minute(part) for part in text.split("-"))
    except ValueError:
        raise ValueError("expected HH:MM-HH:MM such as 22:00-07:00, found %r" % text) from None
    if start == end:
        raise ValueError("quiet hours %r start and end at the same minute" % text)
    return start, end


def _minute(part):
    hours, minutes = part.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 23 and 0 <= m <= 59) or len(minutes.strip()) != 2:
        raise ValueError(part)
    return h * 60 + m


class QuietHours:
    """A daily window in a time zone; it may cross midnight (22:00-07:00)."""

    def __init__(self, text, timezone="UTC"):
        self.start, self.end = parse_quiet_hours(text)
        self.zone = zoneinfo.ZoneInfo(timezone)   # an unknown zone is refused by config/checks.py first
        self.text = text

    def contains(self, now):
        local = datetime.fromtimestamp(now, self.zone)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def ends_after(self, now):
        """The epoch time the quiet hours containing `now` end (wall clock of the zone, DST included)."""
        local = datetime.fromtimestamp(now, self.zone)
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0, microsecond=0)
        if end <= local:
            end = (end.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=self.zone)
        return end.timestamp()


class SinkPolicy:
    """One sink's noise rules and buffers (module docstring)."""

    def __init__(self, stats, severities=SEVERITIES, min_score=0.0, dedup_window=0.0, update_interval=300.0,
                 group_wait=0.0, quiet=None, held_max=10000, name="", resolve_wait=0.0, situations=None):
        self.stats = stats   # the runner's counters: "suppressed" {reason: n}, "held" n
        self.severities, self.min_score = tuple(severities), float(min_score)
        self.dedup_window, self.update_interval = float(dedup_window), float(update_interval)
        self.resolve_wait = float(resolve_wait) if self.dedup_window > 0 else 0.0
        self.group_wait, self.quiet, self.held_max, self.name = float(group_wait), quiet, int(held_max), name
        self.routed = {}       # open incident id -> the lead incident id of its episode, for those this sink takes
        self.episodes = {}     # lead incident id -> {"key", "members" (open), "last_seen", "sent_at", "firing",
        #                        "pending": its resolved while it waits resolve_wait, or None}
        self.leads = {}        # identity -> lead of its latest episode
        self.outgoing = collections.deque()   # notifications (lists of events) ready to send, in order
        self.group, self.deadline = [], None  # opened events waiting for group_wait, and when it ends
        self.after = []        # other events that came during the wait: sent one by one after the group
        self.held = []         # events held by quiet hours
        self._overflowed = self._capped = False
        self.latest = 0.0      # latest event time seen (for forgetting stale episodes)
        self.since = time.time()   # events written before it may belong to incidents announced without this state
        self.situations = bool(situations)   # whether events carry their situation (SITUATION_KEY)
        self.situation_leads = {}      # situation id -> the lead incident id of the episode announcing it
        self.joined = set()            # routed incident ids folded into a situation (not a dedup)

    # -- what the runner calls

    def can_accept(self, event, now):
        """Whether to take this event from the outbox now: not while a notification waits to be sent (the
        outbox, not this state, holds what a dead sink cannot take), and past a pending group only an
        opened event written within its wait (the others queue behind the group)."""
        if self.outgoing:
            return False
        if self.group and len(self.group) + len(self.after) >= self.held_max:
            if not self._capped:   # bounded like the outbox: the rest waits there until the group is sent
                self._capped = True
                log.warning("alert sink %s: %d alerts wait in a group ([alerting] outbox_max_alerts); the next "
                            "wait in the outbox until it is sent", self.name, self.held_max)
            return False
        return not self.group or event["event"] != OPENED or event["at"] <= self.deadline

    def offer(self, event, now):
        """Take one event: it is suppressed (counted), held, grouped or made ready."""
        situation = event.get(SITUATION_KEY) if self.situations else None
        event = {k: v for k, v in event.items() if k != SITUATION_KEY}
        ready = self._route(event)
        if ready is not None:
            ready = self._dedup(ready, situation)
        if ready is not None:
            self._quiet(ready, now)

    def due(self, now):
        """The next notification to send now (a list of events), or None; it stays due until sent()."""
        for episode in self.episodes.values():
            pending = episode.get("pending")
            if pending is not None and not self.outgoing and now >= pending["at"] + self.resolve_wait:
                episode["pending"], episode["firing"], episode["sent_at"] = None, False, pending["at"]
                self._quiet(pending, now)
        if self.group and (now >= self.deadline):
            self._flush_group()
        if self.held and not self._is_quiet(now) and not self.outgoing:
            self.outgoing.append(self.held)
            self.held, self._overflowed = [], False
        return list(self.outgoing[0]) if self.outgoing else None

    def sent(self):
        """The notification due() returned was delivered (or refused for good)."""
        self.outgoing.popleft()

    def next_time(self, now):
        """When due() may have something again without a new event (None: only a new event can)."""
        times = [ep["pending"]["at"] + self.resolve_wait for ep in self.episodes.values() if ep.get("pending")]
        if self.group:
            times.append(self.deadline)
        if self.held and self.quiet is not None:
            times.append(self.quiet.ends_after(now) if self.quiet.contains(now) else now)
        return min(times) if times else None

    def buffered(self):
        """The events taken and not yet sent (for the queue gauge), held ones apart."""
        pending = [ep["pending"] for ep in self.episodes.values() if ep.get("pending")]
        return [e for note in self.outgoing for e in note] + list(self.group) + list(self.after) + pending

    # -- rule 1: routing

    def _route(self, event):
        inc = event["incident"]
        if event["incident_id"] not in self.routed:
            if event["event"] != OPENED and event["at"] < self.since:
                return event   # its opened went out before this sink had a policy (an upgrade): let it end
            if inc.get("severity", "warning") not in self.severities:
                return self._suppress("severity", event)
            if inc.get("score", 0) < self.min_score:
                return self._suppress("min_score", event)
            if event["event"] == RESOLVED:   # never announced here: nothing to resolve
                return self._suppress("severity", event)
        return event

    # -- rule 2: dedup

    def _dedup(self, event, situation=None):
        incident_id = event["incident_id"]
        first, last = _times(event["incident"], event["at"])
        self.latest = max(self.latest, last)
        lead = self.routed.get(incident_id)
        if lead is None and event["event"] == RESOLVED:
            return event   # announced before this policy (routing let only those through): it ends as it was
        if lead is None:
            lead = self._join(incident_id, event["incident"], first, last, situation)
        event = self._with_situation(event, situation)
        episode = self.episodes[lead]
        episode["last_seen"] = max(episode["last_seen"], last)
        folded = lead != incident_id
        if event["event"] == RESOLVED:
            del self.routed[incident_id]
            self.joined.discard(incident_id)
            return self._resolve(event, episode, incident_id, lead)
        escalates = event["incident"].get("severity") == "critical" and episode.get("severity") != "critical"
        joins = folded and event["event"] == OPENED and incident_id in self.joined
        if (folded and not escalates and not joins and episode["sent_at"] is not None
                and event["at"] - episode["sent_at"] < self.update_interval):
            return self._suppress("dedup", event)
        if folded:
            event = dict(event, event=UPDATED, incident_id=lead, folded_from=incident_id)
        episode["sent_at"], episode["firing"] = event["at"], True
        episode["severity"] = event["incident"].get("severity")
        return event

    def _join(self, incident_id, incident, first, last, situation):
        """The lead of the episode a newly routed incident belongs to: the firing episode of its situation
        (the alerter's record of it, or None), else the open (or recent) episode of its identity, else a
        new one it leads."""
        sid = situation.get("id") if isinstance(situation, dict) else None
        lead = self.situation_leads.get(sid) if sid is not None else None
        if lead in self.episodes:
            # Its situation's alert, firing or resolved a moment ago (the correlator's window): the join
            # is told as its update, and a resolved still waiting for resolve_wait is void.
            episode = self.episodes[lead]
            episode["members"].append(incident_id)
            if episode.get("pending") is not None:
                self._suppress("dedup", episode["pending"])
                episode["pending"] = None
            self.routed[incident_id] = lead
            self.joined.add(incident_id)
            self.stats["situation_joins"] = self.stats.get("situation_joins", 0) + 1
            return lead
        lead = self._join_identity(incident_id, incident, first, last)
        if sid is not None:
            self.situation_leads[sid] = lead
        return lead

    @staticmethod
    def _with_situation(event, situation):
        """The event with its situation's story, when its incident is in a situation of several."""
        if not isinstance(situation, dict) or len(situation.get("incidents") or ()) < 2:
            return event
        return dict(event, situation=situation)

    def _join_identity(self, incident_id, incident, first, last):
        key = identity(incident)
        lead = self.leads.get(key)
        episode = self.episodes.get(lead)
        if self.dedup_window > 0 and episode is not None and first - episode["last_seen"] <= self.dedup_window:
            episode["members"].append(incident_id)
            if episode.get("pending") is not None:   # it flapped: the outage goes on, its resolved is void
                self._suppress("dedup", episode["pending"])
                episode["pending"] = None
        else:
            self._forget_stale()
            lead = incident_id
            self.episodes[lead] = {"key": key, "members": [incident_id], "last_seen": last, "sent_at": None,
                                   "firing": False}
            self.leads[key] = lead
        self.routed[incident_id] = lead
        return lead

    def _resolve(self, event, episode, incident_id, lead):
        if incident_id in episode["members"]:
            episode["members"].remove(incident_id)
        if episode["members"] or not episode["firing"]:
            return self._suppress("dedup", event)   # another incident of the episode still fires
        if lead != incident_id:
            event = dict(event, incident_id=lead, folded_from=incident_id)
        if self.resolve_wait > 0:   # held: an incident of the same identity opening meanwhile voids it
            episode["pending"] = event
            return None
        episode["firing"], episode["sent_at"] = False, event["at"]
        return event

    def _forget_stale(self):
        """Episodes with no open incident whose last line is older than the window (event time)."""
        for lead in [k for k, ep in self.episodes.items() if not ep["members"] and not ep.get("pending")
                     and self.latest - ep["last_seen"] > self.dedup_window]:
            if self.leads.get(self.episodes[lead]["key"]) == lead:
                del self.leads[self.episodes[lead]["key"]]
            del self.episodes[lead]
        # a situation whose episode is gone is closed for this sink: its id is not met again (bounded)
        self.situation_leads = {s: lead for s, lead in self.situation_leads.items() if lead in self.episodes}

    # -- rule 3: quiet hours

    def _quiet(self, event, now):
        critical = event["incident"].get("severity") == "critical"
        mine = [e for e in self.held if e["incident_id"] == event["incident_id"]]
        if critical or not self._is_quiet(now):
            if mine:   # what was held of this incident goes first, in the same notification
                self.held = [e for e in self.held if e["incident_id"] != event["incident_id"]]
                self._flush_group()
                self.outgoing.append(mine + [event])
                return
            self._group(event)
            return
        self._hold(event, mine)

    def _hold(self, event, mine):
        if event["event"] == RESOLVED and any(e["event"] == OPENED for e in mine):
            self.held = [e for e in self.held if e["incident_id"] != event["incident_id"]]
            for e in mine + [event]:
                self._suppress("resolved_in_quiet_hours", e)
            return
        if event["event"] == UPDATED:
            for old in [e for e in mine if e["event"] == UPDATED]:
                self.held.remove(old)
                self._suppress("superseded_in_quiet_hours", old)
        self.held.append(event)
        self.stats["held"] = self.stats.get("held", 0) + 1
        if len(self.held) > self.held_max:
            self._suppress("held_overflow", self.held.pop(0))
            if not self._overflowed:   # once per quiet spell: the counter has the rest
                self._overflowed = True
                log.warning("alert sink %s: more than %d alerts held for quiet hours ([alerting] outbox_max_alerts); "
                            "dropping the oldest held ones", self.name, self.held_max)

    def _is_quiet(self, now):
        return self.quiet is not None and self.quiet.contains(now)

    # -- rule 4: grouping

    def _group(self, event):
        if event["event"] != OPENED or self.group_wait <= 0:
            if self.group:
                self.after.append(event)   # behind the group: its incident's opened may be in it
            else:
                self.outgoing.append([event])
            return
        if self.group and event["at"] > self.deadline:
            self._flush_group()
        if not self.group:
            self.deadline = event["at"] + self.group_wait
        self.group.append(event)

    def _flush_group(self):
        if self.group:
            self.outgoing.append(self.group)
            self.outgoing.extend([e] for e in self.after)
            self.group, self.deadline, self.after, self._capped = [], None, [], False

    def _suppress(self, reason, event):
        counts = self.stats.setdefault("suppressed", {})
        counts[reason] = counts.get(reason, 0) + 1
        return None

    # -- persistence (with the sink's checkpoint)

    def state(self):
        return {"routed": self.routed, "episodes": self.episodes, "leads": self.leads, "outgoing": list(self.outgoing),
                "group": self.group, "deadline": self.deadline, "after": self.after, "held": self.held, "latest": self.latest,
                "since": self.since, "situation_leads": self.situation_leads, "joined": sorted(self.joined)}

    def restore(self, state):
        if not isinstance(state, dict):
            return
        self.routed = dict(state.get("routed") or {})
        self.episodes = {k: v for k, v in (state.get("episodes") or {}).items()
                         if isinstance(v, dict) and {"key", "members", "last_seen", "sent_at", "firing"} <= set(v)}
        self.routed = {k: v for k, v in self.routed.items() if v in self.episodes}
        self.leads = {k: v for k, v in (state.get("leads") or {}).items() if v in self.episodes}
        self.outgoing = collections.deque(n for n in state.get("outgoing") or [] if isinstance(n, list) and n)
        self.group = list(state.get("group") or [])
        self.deadline = state.get("deadline") if self.group else None
        self.after = list(state.get("after") or []) if self.group else []
        self.held = list(state.get("held") or [])
        self.latest = float(state.get("latest") or 0.0)
        self.since = float(state.get("since") or self.since)
        if self.situations:   # the situations themselves are the alerter's (situation_book.py)
            self.situation_leads = {k: v for k, v in (state.get("situation_leads") or {}).items()
                                    if v in self.episodes}
            self.joined = {i for i in state.get("joined") or [] if i in self.routed}


def _times(incident, at):
    """(first, last) line times of an incident (event time); the event's write time when absent."""
    first, last = incident.get("first_seen"), incident.get("last_seen")
    first = first if isinstance(first, (int, float)) else at
    last = last if isinstance(last, (int, float)) else first
    return float(first), float(last)


def build_policy(stats, alerting, section, groups, name="", situations=False):
    """The SinkPolicy of one [alerting] subsection; `groups` False for a sink that groups by itself;
    `situations` true when the alerter's events carry their situation ([situations] enabled)."""
    quiet = None
    if section.get("quiet_hours"):
        quiet = QuietHours(section["quiet_hours"], section.get("quiet_hours_timezone") or "UTC")
    return SinkPolicy(stats, severities=section.get("severities") or SEVERITIES, min_score=section["min_score"],
                      dedup_window=alerting["dedup_window_seconds"],
                      update_interval=alerting["update_interval_seconds"],
                      group_wait=alerting["group_wait_seconds"] if groups else 0.0, quiet=quiet,
                      held_max=alerting["outbox_max_alerts"], name=name,
                      resolve_wait=alerting["resolve_wait_seconds"],
                      situations=bool(situations))

