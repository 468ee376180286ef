"""The alerter process: tails the outbox and delivers every incident event to every sink, in order.

Forked by the supervisor (supervisor/arbiter.py, role "alerter") when [alerting] has sinks; a reload
(SIGHUP to the supervisor) restarts it on the new file, which rebuilds the sinks. One thread per sink,
so a slow or dead receiver holds back only its own queue; the main thread reads new events from the
outbox (alerting/outbox.py), hands each sink the ones past its checkpoint, beats the heartbeat and
writes the stats file the sidecar turns into metrics.

Situations: with [situations] enabled, the main thread first gives each batch of events to the one
SituationBook (situation_book.py), which puts every incident in its situation before any sink's routing
(so all sinks name a situation by the same id), saves its state beside the checkpoints and publishes the
situations for GET /api/situations and the page.

Per sink: each event is first handed to the sink's noise policy (noise.py: routing, dedup, quiet hours,
grouping), which says what to send; notifications (one event, or a group as one message) go out one at
a time in the order they were written; a failure is retried after an
exponential back-off with jitter (retry_initial_seconds doubling up to retry_max_seconds, each delay
drawn from its upper half), so the order holds and nothing is skipped, except an event the receiver
refuses for good (a 4xx other than 408/429), which is logged and counted (reason "rejected").
A redis sink with consume = true adds a FleetReader (alerting/fleet.py): each step it first moves the
other instances' events from the fleet's stream into the outbox (writer "fleet"), which the other
sinks then deliver like this instance's own; the redis sinks skip them (Sink.takes).
The checkpoint (outbox position and the policy's state, written together) is written after each step:
a crash between the receiver's answer and the write sends that notification again, with the same id
(at least once; receivers dedup on the id).
"""
import logging
import os
import random
import threading
import time

from anomaly_detector.alerting.fleet import FLEET_COUNTERS, FleetReader
from anomaly_detector.alerting.noise import SinkPolicy, build_policy, group_id
from anomaly_detector.alerting.outbox import (
    STATS_FILE,
    OutboxReader,
    outbox_dir,
    read_checkpoint,
    read_stats,
    write_checkpoint,
    write_json_atomic,
)
from anomaly_detector.alerting.sinks import SinkConfigError, build_sink, sink_sections
from anomaly_detector.alerting.sinks.base import DeliveryError
from anomaly_detector.alerting.situation_book import SituationBook

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
STOP_SECONDS = 5.0        # at a stop, how long the deliveries in flight may take, all sinks together
LOG_EVERY_FAILURES = 10   # a sink failing over and over logs its 1st, 2nd, 4th, ... and then every 10th failure


def backoff(attempts, initial, maximum, rng=random.random):
    """Delay before retry number `attempts` (>= 1): exponential, capped, jittered in its upper half."""
    delay = min(maximum, initial * 2 ** (attempts - 1))
    return delay / 2 + rng() * delay / 2


class TokenBucket:
    """At most `per_minute` takes a minute, up to a minute's worth at once after a quiet spell."""

    def __init__(self, per_minute, now):
        self.rate, self.capacity = per_minute / 60.0, float(per_minute)
        self.tokens, self.at = float(per_minute), now

    def take(self, now):
        """True and one token spent, or False and how long until one is there (wait())."""
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self):
        return (1.0 - self.tokens) / self.rate


class SinkRunner:
    """One sink's queue, noise policy, checkpoint and delivery thread."""

    def __init__(self, sink, directory, section, stats, rate_limit_per_minute=None, policy=None):
        self.sink, self.directory = sink, directory
        self.bucket = TokenBucket(rate_limit_per_minute, time.time()) if rate_limit_per_minute else None
        self._throttled_id, self._throttle_logged = None, float("-inf")
        self.retry_initial, self.retry_max = section["retry_initial_seconds"], section["retry_max_seconds"]
        self.stats = stats   # {"delivered": n, "failed": {reason: n}, ...} carried over restarts
        self.policy = policy if policy is not None else SinkPolicy(stats, min_score=section["min_score"])
        checkpoint = read_checkpoint(directory, sink.name)
        self.delivered = {w: int(s) for w, s in checkpoint["writers"].items()}
        state = checkpoint.get("state", {})
        taken = state.get("taken", {}) if isinstance(state, dict) else {}
        # per writer, the last seq handed to the policy: past `delivered` when it still buffers some
        self.taken = {w: max(int(s), int(taken.get(w, 0))) for w, s in self.delivered.items()}
        self.taken.update({w: int(s) for w, s in taken.items() if w not in self.taken})
        sink.restore(state)
        self.policy.restore(state.get("noise", {}) if isinstance(state, dict) else {})
        self.queue = []
        self.attempts, self.retry_at = 0, 0.0
        self.cond = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="sink-" + sink.name, daemon=True)

    def add(self, events):
        """Queue the events this sink has not taken yet (events arrive in outbox order)."""
        fresh = [e for e in events if e["seq"] > self.taken.get(e["writer"], 0) and self.sink.takes(e)]
        if fresh:
            with self.cond:
                self.queue += fresh
                self.cond.notify()

    def pending(self):
        with self.cond:
            waiting = list(self.queue) + self.policy.buffered()
        return [(e["writer"], e["seq"], e["at"]) for e in waiting if "writer" in e]

    def stop(self):
        with self.cond:
            self.stopping = True
            self.cond.notify()

    def _run(self):
        next_tick = time.time()
        while True:
            with self.cond:
                wait = self._wait_time(time.time(), next_tick)
                if wait > 0 and not self.stopping:
                    self.cond.wait(wait)
                if self.stopping:
                    return
            now = time.time()
            if now < self.retry_at:
                continue
            self._take(now)
            with self.cond:
                note = self.policy.due(now)
            if note is not None:
                self._deliver(note)
            elif not self.queue and now >= next_tick:
                next_tick = self._tick()

    def _wait_time(self, now, next_tick):
        with self.cond:
            busy = self.policy.outgoing or (self.queue and self.policy.can_accept(self.queue[0], now))
            wakes = [self.policy.next_time(now)]
        if busy:
            return max(0.0, self.retry_at - now)   # work to do, after the back-off
        if not self.queue:
            wakes.append(max(next_tick, self.retry_at))   # the sink's tick (Alertmanager's re-sends)
        wake = min((w for w in wakes if w is not None), default=now + 1.0)
        return max(0.0, min(wake - now, 1.0))

    def _take(self, now):
        """Hand the policy the queued events it accepts now; the checkpoint then moves past them (they are
        in the policy's state, saved with it, or done)."""
        taken = 0
        while True:
            with self.cond:
                head = self.queue[0] if self.queue else None
                if head is None or not self.policy.can_accept(head, now):
                    break
                self.policy.offer(head, now)
                self.queue.pop(0)
            self.taken[head["writer"]] = head["seq"]
            taken += 1
        if taken:
            self._save()

    def _deliver(self, note):
        """Send one notification: one event as itself, several as one group message."""
        if self.bucket is not None and not self.bucket.take(time.time()):
            self._throttle(note[0])
            return
        what = "alert %s (%s)" % (note[0]["id"], note[0]["event"]) if len(note) == 1 else \
            "a group of %d alerts (%s)" % (len(note), group_id(note))
        try:
            if len(note) == 1:
                self.sink.send(note[0])
            else:
                self.sink.send_group(note)
        except DeliveryError as exc:
            self._failed(exc, what)
            if exc.retry:
                return
            log.error("alert sink %s: %s skipped, the receiver refuses it for good: %s", self.sink.name, what, exc)
        else:
            self.stats["delivered"] += len(note)
            self.stats["notifications"] = self.stats.get("notifications", 0) + 1
            self._recovered()
        with self.cond:
            self.policy.sent()
        self._save()

    def _tick(self):
        try:
            wanted = self.sink.tick(time.time())
        except DeliveryError as exc:
            self._failed(exc, "re-sending the firing alerts")
            return self.retry_at
        self._recovered()
        self._save()
        return wanted if wanted is not None else time.time() + 1.0

    def _throttle(self, event):
        """The sink sent rate_limit_per_minute alerts in the last minute: the event waits (in order, not
        dropped); counted once per event, logged at most once a minute."""
        self.retry_at = time.time() + self.bucket.wait()
        if self._throttled_id != event["id"]:
            self._throttled_id = event["id"]
            self.stats["throttled"] = self.stats.get("throttled", 0) + 1
        if time.time() - self._throttle_logged >= 60.0:
            self._throttle_logged = time.time()
            waiting = len(self.pending())
            log.warning("alert sink %s: [alerting] rate_limit_per_minute = %d reached; %d alerts wait in the outbox",
                        self.sink.name, self.bucket.capacity, waiting)

    def _failed(self, exc, what):
        self.attempts += 1
        self.stats["failed"][exc.reason] = self.stats["failed"].get(exc.reason, 0) + 1
        delay = backoff(self.attempts, self.retry_initial, self.retry_max)
        self.retry_at = time.time() + delay
        if self.attempts <= 2 or self.attempts & (self.attempts - 1) == 0 or self.attempts % LOG_EVERY_FAILURES == 0:
            log.warning("alert sink %s: %s failed (attempt %d, %s): %s; retrying in %.1f s", self.sink.name, what,
                        self.attempts, exc.reason, exc, delay)

    def _recovered(self):
        if self.attempts:
            log.info("alert sink %s: delivering again after %d failed attempts", self.sink.name, self.attempts)
        self.attempts, self.retry_at = 0, 0.0

    def _delivered(self):
        """Per writer, the seq the outbox counts as delivered: the last taken, or just before the oldest the
        policy still buffers (a group, or a notification being retried). So what waits for a dead sink
        stays under the outbox's bound, whose drops count it; the buffered events are in the policy's
        state, and `taken` keeps them from being read twice."""
        oldest = {}
        for e in self.policy.buffered():
            if "writer" in e:
                oldest[e["writer"]] = min(oldest.get(e["writer"], e["seq"]), e["seq"])
        return {w: min(seq, oldest[w] - 1) if w in oldest else seq for w, seq in self.taken.items()}

    def _save(self):
        try:
            with self.cond:
                state = dict(self.sink.state(), noise=self.policy.state(), taken=dict(self.taken))
                self.delivered = self._delivered()
            write_checkpoint(self.directory, self.sink.name, {"writers": self.delivered, "state": state})
        except OSError as exc:   # delivered all the same; after a restart it is sent again, same id
            log.error("alert sink %s: cannot write its checkpoint: %s", self.sink.name, exc)


class Alerter:
    def __init__(self, cfg):
        self.directory = outbox_dir(cfg)
        os.makedirs(self.directory, exist_ok=True)
        self.stats_path = os.path.join(self.directory, STATS_FILE)
        previous = _read_stats(self.stats_path)
        self.runners = []
        for name, section in sink_sections(cfg):
            stats = previous.get(name, _fresh_stats())
            try:
                sink = build_sink(name, section)
            except SinkConfigError as exc:
                # Checked at start and reload; a secret file removed since must not stop the other sinks.
                # This sink's events wait in the outbox (its checkpoint stays) until a reload fixes it.
                log.error("alert sink %s not started: %s", name, exc)
                continue
            policy = build_policy(stats, cfg["alerting"], section, sink.groups, name, cfg["situations"]["enabled"])
            self.runners.append(SinkRunner(sink, self.directory, section, stats, cfg["alerting"]["rate_limit_per_minute"],
                                           policy))
        self.book = SituationBook(self.directory, cfg["situations"], cfg["http"]["incidents_api_max"],
                                  self._situation_limit) if cfg["situations"]["enabled"] else None
        self.reader = OutboxReader(self.directory)
        self.fleet = _fleet_readers(cfg, self.directory, [r.sink.name for r in self.runners])
        for fleet in self.fleet:   # counters only grow across alerter restarts
            carried = read_stats(self.stats_path).get("fleet", {}).get(fleet.name, {})
            for key in FLEET_COUNTERS:
                fleet.stats[key] += int(carried.get(key, 0)) if isinstance(carried, dict) else 0
        self._last_stats = None

    def run(self, stop, beat):
        for runner in self.runners:
            runner.thread.start()
        log.info("alerter delivering to %d sinks: %s", len(self.runners),
                 ", ".join("%s (%s)" % (r.sink.name, r.sink.type) for r in self.runners))
        while not stop.requested:
            beat()
            self.step()
            time.sleep(POLL_SECONDS)
        for runner in self.runners:
            runner.stop()
        deadline = time.monotonic() + STOP_SECONDS
        for runner in self.runners:   # a request in flight is not waited for long: it is sent again, same id
            runner.thread.join(timeout=max(0.0, deadline - time.monotonic()))
            runner.sink.close()
        for fleet in self.fleet:
            fleet.close()
            fleet.writer.close()
        self.write_stats()
        return 0

    def step(self):
        for fleet in self.fleet:
            fleet.step()
        events = self.reader.poll()
        if self.book is not None:
            events = self.book.take(events)
        for runner in self.runners:
            runner.add(events)
        if self.book is not None:
            self.book.save()
        self.write_stats()

    def _situation_limit(self, reason):
        """The one correlator reached a bound: every sink's situation_limits_total{reason} counts it (all
        sinks share its grouping, and the metric keeps its sink label)."""
        for runner in self.runners:
            with runner.cond:
                limits = runner.stats.setdefault("situation_limits", {})
                limits[reason] = limits.get(reason, 0) + 1

    def write_stats(self):
        """Counters per sink and the queue: events not yet delivered to every sink, and the oldest's time."""
        undelivered = {}
        sinks = {}
        for runner in self.runners:
            pending = runner.pending()
            for writer, seq, at in pending:
                undelivered[(writer, seq)] = at
            with runner.cond:
                counts = {key: dict(value) if isinstance(value, dict) else value for key, value in runner.stats.items()}
            sinks[runner.sink.name] = dict(counts, queue=len(pending), **getattr(runner.sink, "stats", {}))
        stats = {"sinks": sinks, "queue": len(undelivered), "oldest_at": min(undelivered.values(), default=None),
                 "fleet": {fleet.name: dict(fleet.stats) for fleet in self.fleet}}
        if stats == self._last_stats:
            return
        self._last_stats = stats
        try:
            write_json_atomic(self.stats_path, stats)
        except OSError as exc:
            log.error("alerter: cannot write %s: %s", self.stats_path, exc)


def _fleet_readers(cfg, directory, started):
    """A FleetReader per redis sink with consume = true: it queues the stream's events of the other
    instances for this instance's other sinks (alerting/fleet.py). Its outbox bound is a worker's share."""
    alerting, workers = cfg["alerting"], max(1, cfg["processing"]["workers"])
    sections = sink_sections(cfg)
    delivering = [name for name, section in sections if section["type"] != "redis"]
    return [FleetReader(directory, name, section, delivering, max(1, alerting["outbox_max_alerts"] // workers),
                        max(4096, alerting["outbox_max_mb"] * 2**20 // workers))
            for name, section in sections if section["type"] == "redis" and section["consume"] and name in started]


def _fresh_stats():
    return {"delivered": 0, "failed": {}, "throttled": 0, "notifications": 0, "suppressed": {}, "held": 0}


def _read_stats(path):
    """{sink: counters} of the previous alerter, so counters only grow."""
    stats = read_stats(path)
    found = {}
    for name, s in stats.get("sinks", {}).items():
        if isinstance(s, dict):
            found[name] = {"delivered": int(s.get("delivered", 0)), "failed": dict(s.get("failed", {})),
                           "throttled": int(s.get("throttled", 0)), "notifications": int(s.get("notifications", 0)),
                           "suppressed": dict(s.get("suppressed", {})), "held": int(s.get("held", 0)),
                           "situation_joins": int(s.get("situation_joins", 0)),
                           "situation_limits": dict(s.get("situation_limits", {}))}
    return found


def run_alerter(ctx, daemon):
    """ChildSpec target of the alerter (role "alerter": SIGTERM asks it to stop after the request in flight)."""
    daemon.setup_child_logging("alerter")
    alerter = Alerter(daemon.cfg)
    return alerter.run(ctx.stop, lambda: daemon.control.beat(ctx.slot))
