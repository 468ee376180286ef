"""The detector worker process: ring -> parse -> template miner -> tiers -> scored lines and incidents.

Forked by the supervisor (supervisor/arbiter.py) with its ring and the control block inherited.
A batch is acknowledged on the ring only after its verdicts are written (scored lines, closed
incidents, dead-lettered lines), so a worker killed at any point loses nothing: its successor
re-reads the unacknowledged batch (at least once). A write that fails (a full disk) keeps the batch
unacknowledged and is tried again with back-off (1 s doubling up to [outputs]
write_retry_max_seconds); the inputs keep their checkpoints meanwhile. The range
being scored is recorded in the control block first, so a successor that meets the batch its
predecessor died on splits it and sets the deadly line aside (worker/poison.py): one bad line
costs one line, not the ring.
"""
import logging
import os
import time

import numpy as np

from anomaly_detector import kernel_cache
from anomaly_detector import kernel_types as kt
from anomaly_detector.alerting.producer import AlertProducer
from anomaly_detector.detection.engine import TIER_NAMES
from anomaly_detector.detection.feedback import RulesFile, rules_path
from anomaly_detector.detection.output_kernels import record_prefix
from anomaly_detector.metrics.sketch import record_latencies
from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.pipeline import Pipeline, open_vocabulary
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.storage import locks
from anomaly_detector.storage.appendfile import AppendFile
from anomaly_detector.storage.health import STATE_HEALTH
from anomaly_detector.storage.layout import worker_paths
from anomaly_detector.worker.faults import FaultInjector
from anomaly_detector.worker.handover import SourceHandover
from anomaly_detector.worker.incident_view import IncidentView
from anomaly_detector.worker.joining import join_lines, source_runs
from anomaly_detector.worker.optimize import OptimizeRequests, compact, file_bytes
from anomaly_detector.worker.outputs import incident_lines, scored_lines
from anomaly_detector.worker.poison import DeadLetterFile, SuspectRange, dead_letter_record, inherited_death

log = logging.getLogger(__name__)
IDLE_WAIT_SECONDS = 0.2
SCANS_CUT_LOG_SECONDS = 600.0   # lines cut by a rule's max_scan_bytes are logged at most this often
OUTPUT_RETRY_SECONDS = 1.0   # first pause before a failed output write is retried; doubled up to the key's bound
DEAD_LETTER_REFUSED_LOG_SECONDS = 600.0   # dead-letter lines refused at dead_letter_max_mb: logged at most this often


def input_parser(name, section, max_line_bytes, max_sources, inline_levels="auto"):
    """The RecordParser for one [inputs] subsection; inline_levels is [parsing] inline_levels."""
    return RecordParser(format=section["format"], log_format=section["log_format"],
                        source=section["source"] or name, message_key=section["message_key"],
                        timestamp_key=section["timestamp_key"], source_key=section["source_key"],
                        level_key=section["level_key"], timestamp_format=section["timestamp_format"],
                        timezone=section["timezone"], max_line_bytes=max_line_bytes,
                        source_fields=section["source_fields"], source_prefix=section["source_prefix"],
                        max_sources=max_sources, json_numeric_fields=section["json_numeric_fields"],
                        detect_log_format=section["detect_log_format"], inline_levels=inline_levels)


def score_lines(pipeline, parser, prefix, buf, starts, ends, first_line, with_sources=False):
    """Parse and score lines given as spans of buf; returns their JSON records (bytes), and with
    with_sources also the source names and each line's index into them (a detected prefix or
    source_fields may differ per line)."""
    text = join_lines(buf, starts, ends).tobytes()
    columns = parse_columns(parser, text)
    records = pipeline.score_columns(columns, prefix, first_line)
    if not with_sources:
        return records
    return records, list(columns.sources), columns.source_id


def dead_letter_path(cfg):
    """[outputs] dead_letter, or <state_dir>/dead-letter/dead-letter.jsonl when empty."""
    return cfg["outputs"]["dead_letter"] or os.path.join(cfg["paths"]["state_dir"], "dead-letter", "dead-letter.jsonl")


class Unwritten:
    """A scored batch not yet acknowledged: the outputs still to write, in order ([(file, bytes)]; a part
    written is dropped, so a retry never writes it twice), its counts and its lines' read times."""

    def __init__(self, parts, counts, read_ns):
        self.parts = [(out, data) for out, data in parts if out is not None and data]
        self.counts, self.read_ns = counts, read_ns

    @property
    def lines(self):
        return self.counts["lines_processed"] + self.counts["errors"]


class DetectorWorker:
    """One worker's loop; `index` selects its ring, counter row and state directory."""

    def __init__(self, cfg, index, ring, control, slot, workers=None):
        self.cfg, self.index, self.control, self.slot = cfg, index, control, slot
        # Kernels typed when forked (all of them, by warm-up): one typed later compiled in this worker.
        self._kernels = kernel_cache.kernel_dispatchers()
        self._typed = kernel_cache.typed_kernels(self._kernels)
        self.ring, self.reader = ring, ring.reader()
        self.counters = control.counters(index)
        self.paths = worker_paths(cfg["paths"]["state_dir"], index)   # storage/layout.py
        self._lock = self._take_lock(cfg["paths"]["state_dir"], index)
        self.optimize = OptimizeRequests(cfg["paths"]["state_dir"], index)
        self.vocabulary = open_vocabulary(cfg)   # template ids shared with every worker (parsing/vocabulary.py)
        self.pipeline = Pipeline(cfg, vocabulary=self.vocabulary)
        if self.pipeline.load(self.paths):
            log.info("worker %d: models restored from %s and %s", index, self.paths.baselines, self.paths.statistics)
        # sources other workers learned (files moved here by a change of the worker count) bring their baselines
        self.handover = SourceHandover(cfg["paths"]["state_dir"], self.pipeline.engine, "worker %d" % index,
                                       cfg["processing"]["workers"] if workers is None else workers)
        self.pipeline.engine.source_added = self.handover.source_added
        max_line = cfg["processing"]["max_line_bytes"]
        self.inputs = list(cfg["inputs"].items())
        self.parsers = [input_parser(name, section, max_line, cfg["processing"]["max_sources"],
                                     cfg["parsing"]["inline_levels"])
                        for name, section in self.inputs]
        self.prefixes = [(section["source"] or name) for name, section in self.inputs]
        self.record_prefixes = [record_prefix(source) for source in self.prefixes]
        outputs = cfg["outputs"]
        self.scored = AppendFile(outputs["scored_lines"]) if outputs["scored_lines"] else None
        self.incidents = AppendFile(outputs["incidents"]) if outputs["incidents"] else None
        self.dead_letter = DeadLetterFile(dead_letter_path(cfg), outputs["dead_letter_max_mb"] * 2**20)
        self.alerts = AlertProducer.from_config(cfg, index, self.paths.alerting)   # None without [alerting] sinks
        STATE_HEALTH.publish(self.counters)   # state files set aside while loading
        # Resolve what a predecessor announced and the restored models lack (it died before its snapshot).
        self._alert(lambda: self.alerts.resume([inc.id for inc in self.pipeline.engine.book.open.values()]))
        self.fault = FaultInjector.from_environment(who="worker %d" % index)
        self.suspect = self._inherit_death(cfg["processing"]["heartbeat_timeout_seconds"])
        self.snapshot_every = cfg["service"]["snapshot_interval_seconds"]
        self._next_snapshot = time.monotonic() + self.snapshot_every
        self.relief = ReliefWatch(control, "worker %d" % index)
        self._base_rate = cfg["detection"]["learning_rate"]
        self._applied = None   # (tier4_enabled, learning_rate_factor, batch_size) last applied
        self._last_totals = {}  # running totals of the engine and parsers, as last counted (_since_last)
        self._scans_cut_logged = float("-inf")
        self._over_cap = [0] * len(self.parsers)  # JSON numeric fields left out at json_numeric_fields, per input
        self._free_text = set()  # source ids the miner judged free text at the last batch
        self._unparsed = [0] * len(self.parsers)  # lines whose stamp read as no time, per input
        self._unwritten = None  # an Unwritten batch: scored, its outputs not all written yet
        self._retry_max = outputs["write_retry_max_seconds"]
        self._retry_delay = OUTPUT_RETRY_SECONDS
        self._retry_at = 0.0    # monotonic time the unwritten batch is tried again
        self._refused_logged = float("-inf")
        self.latency = control.latency_row(index)   # read-to-scored histogram: processing_duration_seconds
        self.batch_deadline = cfg["processing"]["batch_deadline_seconds"]
        self.idle_poll = cfg["processing"]["idle_poll_seconds"]
        # POST /admin/feedback's rules (read at batch boundaries) and what GET /api/incidents shows of this worker
        self.feedback = RulesFile(rules_path(cfg["paths"]["state_dir"]), "worker %d" % index)
        self.view = IncidentView(self.paths.alerting, index, cfg["http"]["incidents_api_max"])

    @staticmethod
    def _take_lock(state_dir, index):
        """Held for life: --optimize-models tells a running worker by it (worker/optimize.py); it waits
        here while that command compacts this worker's files of a stopped daemon. A state directory that
        cannot hold it (read-only, a full disk) costs only that: scoring goes on (storage.health)."""
        path = locks.lock_path(state_dir, "worker-%d" % index)
        try:
            return locks.take(path, exclusive=False, wait=True)
        except OSError as exc:
            log.warning("worker %d: cannot take %s (%s): --optimize-models will not see this worker running",
                        index, path, exc)
            return None

    def run(self, stop):
        """Process batches until asked to stop; then score what is queued now, snapshot, return 0."""
        log.info("worker %d: batches of up to %d lines, started at the latest %.3f s after the oldest was read "
                 "(batch_deadline_seconds); an idle ring looked at every %.3f s (idle_poll_seconds)",
                 self.index, self.control.flags().batch_size, self.batch_deadline, self.idle_poll)
        while not stop.requested:
            self.control.beat(self.slot)
            flags = self._apply_flags()
            if self._batch_due(flags.batch_size):
                self.step(flags.batch_size)
            self._optimize_if_asked()
            self._snapshot_if_due()
            self.view.publish_if_due(self.pipeline.engine, self.pipeline.template_text)
        self._drain()
        self.finish()
        return 0

    def _batch_due(self, batch_size):
        """Wait (bounded) until a batch is worth starting: batch_size lines wait in the ring, or the
        oldest of them was read by the input batch_deadline_seconds ago. Fewer, larger batches cost less
        CPU per line; the deadline bounds the latency that adds. False when the ring stayed empty."""
        if self._unwritten is not None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:   # back-off: the loop goes on beating meanwhile
                time.sleep(min(wait, IDLE_WAIT_SECONDS))
            return wait <= 0
        if self.suspect.active:
            return True     # a range a worker died on: no filling up
        available = self.reader.available()
        if available >= batch_size:
            return True
        if available == 0 and not self.reader.wait_for_data(IDLE_WAIT_SECONDS, self.idle_poll, self.idle_poll):
            return False
        oldest = self.reader.oldest_read_ns()
        remaining = self.batch_deadline - (time.monotonic_ns() - oldest) / 1e9 if oldest is not None else 0
        if remaining > 0:
            # One sleep, not a poll: the worker is ahead of its input here, and on a shared machine
            # each wake-up costs a cold cache. Lines past batch_size wait for the next batch.
            time.sleep(remaining)
        if self.reader.available() < batch_size:
            self.counters.add(batch_deadline_hits=1)
        return True

    def _inherit_death(self, heartbeat_timeout):
        death = inherited_death(self.control, self.index, self.slot, self.ring.acknowledged(), os.getpid(),
                                heartbeat_timeout)
        if death is not None:
            log.error("worker %d: the previous worker died scoring ring lines %d..%d (%s); scoring them "
                      "again in pieces, a line it died on alone goes to %s", self.index, death.first,
                      death.first + death.count - 1, death.reason, self.dead_letter.path)
        return SuspectRange(death)

    def step(self, batch_size):
        """Pop, score, write and acknowledge one batch (or one piece of a range a worker died on);
        False when the ring was empty. The range is recorded before it is scored (worker/poison.py).
        A batch whose outputs could not be written stays popped: the next step writes them again
        (it does not score the lines again, which would teach the models the batch once a retry)."""
        if self._unwritten is not None:
            return self._write_and_ack(self._unwritten)
        seq = self.ring.acknowledged()
        size, poisoned = self.suspect.plan(seq, batch_size)
        buf, starts, ends, meta = self.reader.pop_batch(size)
        n = len(starts)
        if n == 0:
            return False
        began = time.monotonic_ns()
        lettered = []
        if poisoned:
            errors = dead = self._dead_letter(buf, starts, ends, meta, self.suspect.reason, lettered)
            output = incidents = b""
        else:
            self._apply_feedback()     # at each batch boundary: a rule posted before these lines covers them
            self.control.begin_scoring(self.index, int(meta["seq"][0]), n)
            errors, dead, output, incidents = self._score(buf, starts, ends, meta, lettered)
        counts = dict(lines_processed=n - errors, errors=errors, batches=1, lines_dead_lettered=dead,
                      bytes_processed=int((ends - starts).sum()), busy_ns=time.monotonic_ns() - began)
        parts = [(self.dead_letter, b"".join(lettered)), (self.scored, output), (self.incidents, incidents)]
        return self._write_and_ack(Unwritten(parts, counts, meta["read_ns"]))

    def _write_and_ack(self, batch):
        """Write a scored batch's outputs, then acknowledge it and count it, with each line's latency from
        its read by the input to now (its verdict written). A write that fails leaves the batch for later."""
        while batch.parts:
            out, data = batch.parts[0]
            try:
                self._write_part(out, data)
            except OSError as exc:   # only what did not reach the file is written again
                batch.parts[0] = (out, getattr(exc, "remaining", data[getattr(exc, "written", 0):]))
                self._unwritten = batch
                self._retry_later(batch.lines, "%s: %s" % (out.path, exc.strerror or exc))
                return True
            batch.parts.pop(0)
        if self._unwritten is not None:
            log.info("worker %d: outputs writable again; the %d lines held back are written and acknowledged",
                     self.index, batch.lines)
        self._unwritten, self._retry_delay = None, OUTPUT_RETRY_SECONDS
        counts, read_ns = batch.counts, batch.read_ns
        self.reader.ack()
        self.control.end_scoring(self.index)
        waited_ns = np.maximum(time.monotonic_ns() - read_ns.astype(np.int64), 0)
        record_latencies(self.latency, waited_ns / 1e9)
        self.counters.add(latency_ns_sum=int(waited_ns.sum()), latency_count=len(waited_ns), **counts)
        return True

    def _write_part(self, out, data):
        if out is not self.dead_letter:
            out.write(data)
            return
        refused = out.write(data)
        if refused:
            self.counters.add(dead_letter_refused=refused)
            now = time.monotonic()
            if now - self._refused_logged >= DEAD_LETTER_REFUSED_LOG_SECONDS:
                self._refused_logged = now
                log.warning("worker %d: dead-letter file %s is at dead_letter_max_mb (%d MiB): %d poison lines not "
                            "kept (%d so far; counted in anomaly_detector_dead_letter_lines_refused_total)",
                            self.index, out.path, out.max_bytes >> 20, refused, out.refused)

    def _score(self, buf, starts, ends, meta, lettered):
        """Score a batch run by run; returns (lines not scored, of them dead-lettered, scored-lines bytes,
        closed-incidents bytes); dead-letter records are appended to `lettered`."""
        anomalies_before = self.pipeline.anomalies
        by_tier_before = self.pipeline.anomalies_by_tier.copy()
        errors = dead = 0
        outputs = []
        for first, stop, source_id in source_runs(meta["source_id"]):
            failed, set_aside = self._score_run_guarded(buf, starts[first:stop], ends[first:stop], meta[first:stop],
                                                        source_id, outputs, lettered)
            errors, dead = errors + failed, dead + set_aside
        # Scored: a death from here on (reporting, writing the scored lines) is not these lines' fault.
        self.control.end_scoring(self.index)
        incidents, incident_bytes = [], b""
        try:
            incidents = self.pipeline.take_incidents()
            if incidents:
                incident_bytes = self._report(incidents)
        except Exception:  # the lines are scored; a fault rendering the report must not kill the worker
            log.exception("worker %d: incidents of a batch could not be reported", self.index)
        self._alert(lambda: self.alerts.after_batch(self.pipeline.engine.open_records(), incidents))
        self.counters.add(**{"anomalies_" + tier: int(n) for tier, n
                             in zip(TIER_NAMES, self.pipeline.anomalies_by_tier - by_tier_before)})
        self.counters.add(anomalies=self.pipeline.anomalies - anomalies_before, incidents=len(incidents),
                          rule_scans_cut=self._new_scans_cut(), source_capped_lines=self._new_capped(),
                          volume_gaps_skipped=self._new_gaps_skipped(),
                          volume_drops_withdrawn=self._new_drops_withdrawn(),
                          volume_value_keys_refused=self._since_last(
                              "value_keys_refused", self.pipeline.engine.tiers["t2"].values.refused),
                          source_hosts_dropped_lines=self._since_last(
                              "hosts_dropped", self.pipeline.engine.tiers["t2"].hosts.dropped_lines),
                          json_fields_over_cap=self._new_over_cap(),
                          series_values_refused=self._new_series_refused(),
                          lines_unclustered=self._new_unclustered(),
                          vocabulary_refused_new=self._since_last("vocabulary_new", self.vocabulary.refused_new),
                          vocabulary_refused_widened=self._since_last("vocabulary_widened",
                                                                      self.vocabulary.refused_widened),
                          vocabulary_refused_unavailable=self._since_last("vocabulary_unavailable",
                                                                          self.vocabulary.refused_unavailable),
                          kernels_compiled_after_fork=self._new_kernels_typed(),
                          timestamps_unparsed=self._new_unparsed(), lines_inline_level=self._new_inline_levels(),
                          **self._new_feedback())
        self.counters.set(vocabulary_entries=len(self.vocabulary))
        self.view.note_batch()
        return errors, dead, b"".join(outputs), incident_bytes

    def _new_feedback(self):
        """Lines scored 0 (normal) or raised to the threshold (problem) by feedback rules since the last batch."""
        matcher = self.pipeline.engine.feedback
        return {"feedback_suppressed": self._since_last("feedback_suppressed", matcher.suppressed),
                "feedback_flagged": self._since_last("feedback_flagged", matcher.flagged)}

    def _new_kernels_typed(self):
        """Numba kernel versions typed (compiled or loaded) since the fork, each logged: warm-up should
        have made them all, and a worker compiling stalls its ring and its heartbeat."""
        now = kernel_cache.typed_kernels(self._kernels)
        if now == self._typed:
            return 0
        new = {name: count - self._typed.get(name, 0) for name, count in now.items() if count != self._typed.get(name)}
        self._typed = now
        log.warning("worker %d: numba kernels typed after fork (warm-up missed them; the worker stalled while "
                    "compiling): %s", self.index, ", ".join(sorted(new)))
        return sum(new.values())

    def _since_last(self, name, total):
        """How much a running total grew since the last batch. A tier restored afresh (a state file set
        aside) counts from zero again: a total below the last one is all new."""
        last = self._last_totals.get(name, 0)
        self._last_totals[name] = total
        return total - last if total >= last else total

    def _new_scans_cut(self):
        """Rule scans cut at [rules] max_scan_bytes since the last batch; logged at most every 10 minutes."""
        total = self.pipeline.engine.tiers["t1"].scans_cut()
        new = self._since_last("scans_cut", total)
        now = time.monotonic()
        if new and now - self._scans_cut_logged >= SCANS_CUT_LOG_SECONDS:
            self._scans_cut_logged = now
            log.warning("worker %d: %d lines longer than a rule's max_scan_bytes were searched by their head "
                        "only (%d so far)", self.index, new, total)
        return new

    def _new_capped(self):
        """Lines kept on their input's source at max_sources since the last batch (each parser logs once)."""
        return self._since_last("capped", sum(parser.line_sources.refused for parser in self.parsers))

    def _new_gaps_skipped(self):
        """Input gaps tier 2 skipped since the last batch, logged (they are rare: an outage each)."""
        volume = self.pipeline.engine.tiers["t2"]
        new = self._since_last("gaps_skipped", volume.gaps_skipped)
        if new:
            log.info("worker %d: no line from any source for %.0f s: a gap in the input, not silence; volume "
                     "detection resumed without judging it (%d so far)", self.index, volume.last_gap_seconds,
                     volume.gaps_skipped)
        return new

    def _new_drops_withdrawn(self):
        """Volume drops and silences tier 2 withdrew since the last batch (their key came back within
        drop_hold_seconds), logged: a service that restarts shows here."""
        volume = self.pipeline.engine.tiers["t2"]
        new = self._since_last("drops_withdrawn", volume.drops_withdrawn)
        if new:
            log.info("worker %d: %d volume drop(s) or silence(s) not raised: the template or source was back "
                     "within drop_hold_seconds (%d so far)", self.index, new, volume.drops_withdrawn)
        return new

    def _new_series_refused(self):
        """Values tier 3 did not judge as series since the last batch (max_series; the tier logs once)."""
        return self._since_last("series_refused", self.pipeline.engine.tiers["t3"].series.refused)

    def _new_unclustered(self):
        """Lines reported unclustered since the last batch; a source that turns free text, or stops
        being so, is logged (it happens once per change of a source's nature)."""
        miner = self.pipeline.miner
        free = set(miner.free_text_sources())
        names = self.pipeline.engine.sources
        for sid in sorted(free ^ self._free_text):
            name = names[sid] if sid < len(names) else str(sid)
            if sid in free:
                log.warning("worker %d: source %s is free text (most of its lines join no template): lines "
                            "that fit no template are reported as <unclustered> (counted in "
                            "anomaly_detector_lines_unclustered_total)", self.index, name)
            else:
                log.info("worker %d: source %s no longer free text: its new messages open templates again",
                         self.index, name)
        self._free_text = free
        return self._since_last("unclustered", miner.stats.unclustered)

    def _new_over_cap(self):
        """Numeric JSON fields past an input's json_numeric_fields since the last batch (a WARNING the first
        time per input and worker)."""
        return self._new_per_input("json_fields_over_cap", self._over_cap, lambda name, parser: (
            "input %s: JSON lines carry more than json_numeric_fields = %d numeric fields; the fields past them "
            "in key order are not mined (counted in anomaly_detector_json_fields_over_cap_total)"
            % (name, parser.json_numeric_fields)))

    def _new_inline_levels(self):
        """Lines whose level was read from their message since the last batch (no warning: it is the
        normal reading of logs such as syslog files, whose header has no level)."""
        return self._since_last("inline_levels", sum(parser.stats["inline_levels"] for parser in self.parsers))

    def _new_unparsed(self):
        """Lines whose stamp was there but read as no time since the last batch (a WARNING the first time
        per input and worker: a stamp field that is not a date, or a format the parser does not know)."""
        return self._new_per_input("unparsed_timestamps", self._unparsed, lambda name, _parser: (
            "input %s: time stamps that read as no time (impossible values, or a format not known); such "
            "lines take the previous line's time (counted in anomaly_detector_timestamps_unparsed_total)" % name))

    def _new_per_input(self, stat, last, warning):
        """Growth of the parsers' `stat` since the last batch (last: the totals seen, per input, updated);
        warning(input name, parser) is logged the first time an input's total moves."""
        new = 0
        for k, parser in enumerate(self.parsers):
            total = parser.stats[stat]
            if total and not last[k]:
                log.warning("%s", warning(self.inputs[k][0], parser))
            new += total - last[k]
            last[k] = total
        return new

    def _score_run_guarded(self, buf, starts, ends, meta, source_id, outputs, lettered):
        """Score one run, appending its scored lines to outputs; when it raises, score its lines one by
        one so one bad line costs one line (its dead-letter record appended to lettered)."""
        try:
            outputs.append(self._score_run(buf, starts, ends, int(meta["seq"][0]), source_id))
            return 0, 0
        except Exception as exc:  # one poisoned line must not kill the worker or cost the whole batch
            if kt.is_type_mismatch(exc) and kt.allow_late_compiles():
                log.error("worker %d: %s in a kernel prepared before fork; kernels compile when needed from now "
                          "on (counted in anomaly_detector_kernels_compiled_after_fork_total); scoring the run again",
                          self.index, exc)
                return self._score_run_guarded(buf, starts, ends, meta, source_id, outputs, lettered)
            if len(starts) == 1:
                log.exception("worker %d: a line could not be processed", self.index)
                return 1, self._dead_letter(buf, starts, ends, meta, "exception: %s: %s" % (type(exc).__name__, exc),
                                            lettered)
            log.warning("worker %d: a run of %d lines raised %s: %s; scoring its lines one by one",
                        self.index, len(starts), type(exc).__name__, exc)
        errors = dead = 0
        for k in range(len(starts)):
            failed, set_aside = self._score_run_guarded(buf, starts[k:k + 1], ends[k:k + 1], meta[k:k + 1],
                                                        source_id, outputs, lettered)
            errors, dead = errors + failed, dead + set_aside
        return errors, dead

    def _score_run(self, buf, starts, ends, first_seq, source_id):
        """Score one run of one input's lines; returns its scored-lines bytes (b"" without that output)."""
        if self.fault is not None:
            self.fault.check(buf, starts, ends)
        source_id = min(source_id, len(self.parsers) - 1)
        if self.scored is None:
            score_lines(self.pipeline, self.parsers[source_id], self.record_prefixes[source_id],
                        buf, starts, ends, first_seq + 1)
            return b""
        records, names, ids = score_lines(self.pipeline, self.parsers[source_id], self.record_prefixes[source_id],
                                          buf, starts, ends, first_seq + 1, True)   # with_sources
        return scored_lines(records, buf, starts, ends, names, ids)

    def _retry_later(self, n, exc):
        """Leave the batch popped and unacknowledged (the ring holds it, the inputs feel backpressure and
        keep their checkpoints, /health reports the worker stalled) and write its outputs again after a
        pause that doubles up to write_retry_max_seconds."""
        self.counters.add(output_errors=1)
        delay = self._retry_delay
        log.error("worker %d: cannot write its outputs (%s); %d lines stay unacknowledged in the ring and are "
                  "written again in %.0f s", self.index, exc, n, delay)
        self._retry_at = time.monotonic() + delay
        self._retry_delay = min(self._retry_max, delay * 2)

    def _dead_letter(self, buf, starts, ends, meta, reason, records):
        """Set these lines aside instead of scoring them: their dead-letter records are appended to
        `records` (written with the batch's outputs, before it is acknowledged); returns how many."""
        before = len(records)
        for k in range(len(starts)):
            source_id = min(int(meta["source_id"][k]), len(self.parsers) - 1)
            name = self.inputs[source_id][0] if self.inputs else ""
            seq, position = int(meta["seq"][k]), int(meta["input_pos"][k])
            records.append(dead_letter_record(buf[starts[k]:ends[k]], self.index, name, self.prefixes[source_id],
                                              seq, position, reason))
            log.error("worker %d: a line of input %s (ring seq %d%s) set aside in %s: %s", self.index, name, seq,
                      ", input position %d" % position if position >= 0 else "", self.dead_letter.path, reason)
        return len(records) - before

    def _report(self, incidents):
        """Log closed incidents; returns their [outputs] incidents bytes (b"" without that file)."""
        for incident in incidents:
            log.warning("incident %s [%s] %s", incident.get("id"), incident.get("source"), incident.get("reason"))
        self.view.note_closed(incidents, self.pipeline.template_text)
        return incident_lines(incidents) if self.incidents is not None else b""

    def _alert(self, produce):
        """Append incident events to the outbox (produce: an AlertProducer call returning (generated, dropped));
        never blocks on the alerter. A failed write (a full disk) is logged and counted; its events are lost."""
        if self.alerts is None:
            return
        try:
            generated, dropped = produce()
        except Exception:
            log.exception("worker %d: incident events could not be written to the outbox", self.index)
            self.counters.add(alert_write_errors=1)
            return
        self.counters.add(alerts_generated=generated, alerts_dropped=dropped)

    def _close_open_incidents(self):
        """Retired by a reload (fewer workers): no successor goes on with this worker's open incidents, so they
        are closed and reported now, as at the end of a replay."""
        closed = self.pipeline.finish()
        if closed:
            data = self._report(closed)
            try:
                if data:
                    self.incidents.write(data)
            except OSError as exc:   # no batch to hold back here: the incidents are in the log above
                log.error("worker %d: cannot write closed incidents to %s: %s", self.index, self.incidents.path, exc)
            self.counters.add(incidents=len(closed))
            self._alert(lambda: self.alerts.after_batch([], closed))

    def _apply_flags(self):
        """Read the run-time flags once per batch; touch the engine only when they changed."""
        flags = self.control.flags()
        wanted = (flags.tier4_enabled, flags.learning_rate_factor, flags.batch_size)
        if wanted != self._applied:
            if self._applied is not None:   # a change at run time (POST /admin/*): say it took effect here
                log.info("worker %d: run-time flags applied: tier 4 %s, learning rate factor %g, batch size %d",
                         self.index, "on" if flags.tier4_enabled else "off", flags.learning_rate_factor,
                         flags.batch_size)
            self._applied = wanted
            engine = self.pipeline.engine
            engine.set_tier_enabled("t4", flags.tier4_enabled)
            # The factor may exceed 1 (admin flag range); a rate above 1 would make the engine refuse it.
            engine.set_learning_rate(min(1.0, self._base_rate * flags.learning_rate_factor))
        self.relief.check(flags.relief_generation)
        return flags

    def _apply_feedback(self):
        """Take the feedback rules file when it changed (one stat per batch; the sidecar rewrites it)."""
        rules = self.feedback.poll()
        if rules is not None:
            matcher = self.pipeline.engine.feedback
            had = bool(matcher)
            matcher.set_rules(rules)
            counts = matcher.counts()
            if rules or had:
                log.info("worker %d: feedback rules applied: %d normal, %d problem", self.index, counts["normal"],
                         counts["problem"])

    def _drain(self):
        """On stop: score what is in the ring now (inputs are stopped first at shutdown), bounded by it.

        Stops at the first batch the scored-lines file refuses: retrying every batch (a second each)
        would outlast the stop timeout and the SIGKILL would cost the snapshot. The lines stay
        unacknowledged: the next worker reads them from the ring, or the inputs from their checkpoints."""
        batch_size = self.control.flags().batch_size
        remaining = self.reader.pending() + self.reader.available()   # pending: a batch not yet written
        failures = self.counters.value("output_errors")
        while remaining > 0 and self.step(batch_size):
            self.control.beat(self.slot)
            if self.counters.value("output_errors") != failures:
                log.warning("worker %d: stopping with %d lines unacknowledged in the ring (scored lines cannot be "
                            "written)", self.index, self.ring.depth())
                return
            remaining -= batch_size

    def _optimize_if_asked(self):
        """--optimize-models asked for a compaction (worker/optimize.py): apply it between batches,
        snapshot at once so the files show it, and tell the command the figures."""
        request = self.optimize.poll()
        if request is None:
            return
        size = file_bytes(self.paths.templates)
        figures = compact(self.pipeline, request)
        self.counters.add(models_optimized=1, templates_merged=figures["merged"])
        self.snapshot()
        figures["before"]["bytes"], figures["after"]["bytes"] = size, file_bytes(self.paths.templates)
        log.info("worker %d: models optimized: %d templates -> %d (%d near-duplicates merged), %d stale archived "
                 "templates pruned, %d stale shapes dropped", self.index, figures["before"]["templates"],
                 figures["after"]["templates"], figures["merged"], figures["pruned"], figures["shapes_dropped"])
        try:
            self.optimize.done(request, figures)
        except OSError as exc:
            log.error("worker %d: cannot write the optimize result to %s: %s", self.index, self.optimize.result, exc)

    def _snapshot_if_due(self):
        if time.monotonic() >= self._next_snapshot:
            self.snapshot()

    def snapshot(self):
        """Save the models; a failure (a full disk) is logged, counted and reported by /health as degraded
        (storage.health) until a later snapshot succeeds; scoring goes on, the previous files stay valid."""
        failing = bool(STATE_HEALTH.failing)
        try:
            self.pipeline.save(self.paths)
            if self.alerts is not None:
                self.alerts.save()
        except OSError as exc:
            log.error("worker %d: snapshot to %s failed (retried in %.0f s; the previous snapshot stays valid): %s",
                      self.index, self.paths.baselines, self.snapshot_every, exc)
        else:
            if failing and not STATE_HEALTH.failing:
                log.info("worker %d: snapshot written again to %s", self.index, self.paths.baselines)
        STATE_HEALTH.publish(self.counters)
        self._next_snapshot = time.monotonic() + self.snapshot_every

    def finish(self):
        """On stop: snapshot. Open incidents are saved with the models and go on in the next worker (same
        ids, no alert resolved and raised again by a reload); they close there once quiet. A worker the
        reload retires (workers_wanted, set before the stop) closes them itself."""
        if self.index >= self.control.flags().workers_wanted:
            self._close_open_incidents()
        self.snapshot()
        self.view.publish_if_due(self.pipeline.engine, self.pipeline.template_text, force=True)
        if self.alerts is not None:
            self.alerts.close()
        for out in (self.scored, self.incidents, self.dead_letter):
            if out is not None:
                out.close()
        self.vocabulary.close()


def run_detector(ctx, daemon, index):
    """ChildSpec target for worker `index` (daemon: the supervisor's shared objects)."""
    daemon.setup_child_logging("worker-%d" % index)
    worker = DetectorWorker(daemon.cfg, index, daemon.rings[index], daemon.control, ctx.slot, len(daemon.rings))
    return worker.run(ctx.stop)

