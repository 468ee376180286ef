"""The detector worker process: ring -> parse -> template miner -> tiers -> scored lines and incidents.

Forked by the supervisor (supervisor/arbiter.py) with its ring and the control block inherited.
A batch is acknowledged on the ring only after its verdicts are written, so a worker killed at
any point loses nothing: its successor re-reads the unacknowledged batch (at least once). The range
being scored is recorded in the control block first, so a successor that meets the batch its
predecessor died on splits it and sets the deadly line aside (worker/poison.py): one bad line
costs one line, not the ring.
"""
import logging
import os
import time

from anomaly_detector.detection.output_kernels import record_prefix
from anomaly_detector.parsing.columns import parse_columns
from anomaly_detector.parsing.records import RecordParser
from anomaly_detector.pipeline import Pipeline
from anomaly_detector.relief import ReliefWatch
from anomaly_detector.storage.appendfile import AppendFile
from anomaly_detector.worker.faults import FaultInjector
from anomaly_detector.worker.joining import join_lines, source_runs
from anomaly_detector.worker.outputs import incident_lines, with_message_and_source
from anomaly_detector.worker.poison import SuspectRange, dead_letter_record, inherited_death

log = logging.getLogger(__name__)
IDLE_WAIT_SECONDS = 0.2
SCANS_CUT_LOG_SECONDS = 600.0   # lines cut by a rule's max_scan_bytes are logged at most this often
OUTPUT_RETRY_SECONDS = 1.0   # a failed scored-lines write is retried this often (the heartbeat goes on)


def input_parser(name, section, max_line_bytes, max_sources):
    """The RecordParser for one [inputs] subsection."""
    return RecordParser(format=section["format"], log_format=section["log_format"],
                        source=section["source"] or name, message_key=section["message_key"],
                        timestamp_key=section["timestamp_key"], source_key=section["source_key"],
                        level_key=section["level_key"], timestamp_format=section["timestamp_format"],
                        timezone=section["timezone"], max_line_bytes=max_line_bytes,
                        source_fields=section["source_fields"], source_prefix=section["source_prefix"],
                        max_sources=max_sources, json_numeric_fields=section["json_numeric_fields"])


def score_lines(pipeline, parser, prefix, buf, starts, ends, first_line, with_sources=False):
    """Parse and score lines given as spans of buf; returns their JSON records (bytes), and with
    with_sources also each line's source name (a detected prefix or source_fields may differ per line)."""
    text = join_lines(buf, starts, ends).tobytes()
    columns = parse_columns(parser, text)
    records = pipeline.score_columns(columns, prefix, first_line)
    if not with_sources:
        return records
    return records, [columns.sources[k] for k in columns.source_id.tolist()]


def worker_state_dir(cfg, index):
    return os.path.join(cfg["paths"]["state_dir"], "workers", str(index))


def dead_letter_path(cfg):
    """[outputs] dead_letter, or <state_dir>/dead-letter.jsonl when empty."""
    return cfg["outputs"]["dead_letter"] or os.path.join(cfg["paths"]["state_dir"], "dead-letter.jsonl")


class DetectorWorker:
    """One worker's loop; `index` selects its ring, counter row and state directory."""

    def __init__(self, cfg, index, ring, control, slot):
        self.cfg, self.index, self.control, self.slot = cfg, index, control, slot
        self.ring, self.reader = ring, ring.reader()
        self.counters = control.counters(index)
        self.state_dir = worker_state_dir(cfg, index)
        self.pipeline = Pipeline(cfg)
        if self.pipeline.load(self.state_dir):
            log.info("worker %d: models restored from %s", index, self.state_dir)
        max_line = cfg["processing"]["max_line_bytes"]
        self.inputs = list(cfg["inputs"].items())
        self.parsers = [input_parser(name, section, max_line, cfg["processing"]["max_sources"])
                        for name, section in self.inputs]
        self.prefixes = [(section["source"] or name) for name, section in self.inputs]
        self.record_prefixes = [record_prefix(source) for source in self.prefixes]
        outputs = cfg["outputs"]
        self.scored = AppendFile(outputs["scored_lines"]) if outputs["scored_lines"] else None
        self.incidents = AppendFile(outputs["incidents"]) if outputs["incidents"] else None
        self.dead_letter = AppendFile(dead_letter_path(cfg))
        self.fault = FaultInjector.from_environment(who="worker %d" % index)
        self.suspect = self._inherit_death(cfg["processing"]["heartbeat_timeout_seconds"])
        self.snapshot_every = cfg["service"]["snapshot_interval_seconds"]
        self._next_snapshot = time.monotonic() + self.snapshot_every
        self.relief = ReliefWatch(control, "worker %d" % index)
        self._base_rate = cfg["detection"]["learning_rate"]
        self._applied = None   # (tier4_enabled, learning_rate_factor) last given to the engine
        self._last_totals = {}  # running totals of the engine and parsers, as last counted (_since_last)
        self._scans_cut_logged = float("-inf")
        self._over_cap = [0] * len(self.parsers)  # JSON numeric fields left out at json_numeric_fields, per input
        self._unparsed = [0] * len(self.parsers)  # lines whose stamp read as no time, per input
        self._unwritten = None  # a scored batch whose output could not be written: (output, counts)

    def run(self, stop):
        """Process batches until asked to stop; then score what is queued now, snapshot, return 0."""
        while not stop.requested:
            self.control.beat(self.slot)
            flags = self._apply_flags()
            if not self.step(flags.batch_size):
                self.reader.wait_for_data(IDLE_WAIT_SECONDS)
            self._snapshot_if_due()
        self._drain()
        self.finish()
        return 0

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
        A batch whose scored lines could not be written stays popped: the next step writes them again
        (it does not score the lines again, which would teach the models the batch once a retry)."""
        if self._unwritten is not None:
            output, counts = self._unwritten
            return self._write_and_ack(output, counts)
        seq = self.ring.acknowledged()
        size, poisoned = self.suspect.plan(seq, batch_size)
        buf, starts, ends, meta = self.reader.pop_batch(size)
        n = len(starts)
        if n == 0:
            return False
        began = time.monotonic_ns()
        output = b""
        if poisoned:
            errors = dead = self._dead_letter(buf, starts, ends, meta, self.suspect.reason)
        else:
            self.control.begin_scoring(self.index, int(meta["seq"][0]), n)
            errors, dead, output = self._score(buf, starts, ends, meta)
        counts = dict(lines_processed=n - errors, errors=errors, batches=1, lines_dead_lettered=dead,
                      bytes_processed=int((ends - starts).sum()), busy_ns=time.monotonic_ns() - began)
        return self._write_and_ack(output, counts)

    def _write_and_ack(self, output, counts):
        """Write a scored batch's lines, then acknowledge it and count it."""
        if output and self.scored is not None:
            try:
                self.scored.write(output)
            except OSError as exc:
                self._unwritten = (output, counts)
                self._retry_later(counts["lines_processed"] + counts["errors"],
                                  "%s: %s" % (self.scored.path, exc.strerror or exc))
                return True
        self._unwritten = None
        self.reader.ack()
        self.control.end_scoring(self.index)
        self.counters.add(**counts)
        return True

    def _score(self, buf, starts, ends, meta):
        """Score a batch run by run; returns (lines not scored, of them dead-lettered, scored-lines bytes)."""
        anomalies_before = self.pipeline.anomalies
        errors = dead = 0
        outputs = []
        for first, stop, source_id in source_runs(meta["source_id"]):
            failed, lettered = self._score_run_guarded(buf, starts[first:stop], ends[first:stop], meta[first:stop],
                                                       source_id, outputs)
            errors, dead = errors + failed, dead + lettered
        # Scored: a death from here on (reporting, writing the scored lines) is not these lines' fault.
        self.control.end_scoring(self.index)
        incidents = []
        try:
            incidents = self.pipeline.take_incidents()
            if incidents:
                self._report(incidents)
        except Exception:  # the lines are scored and written; a reporting fault must not kill the worker
            log.exception("worker %d: incidents of a batch could not be reported", self.index)
        self.counters.add(anomalies=self.pipeline.anomalies - anomalies_before, incidents=len(incidents),
                          rule_scans_cut=self._new_scans_cut(), source_capped_lines=self._new_capped(),
                          volume_gaps_skipped=self._new_gaps_skipped(),
                          json_fields_over_cap=self._new_over_cap(),
                          series_values_refused=self._new_series_refused(),
                          timestamps_unparsed=self._new_unparsed())
        return errors, dead, b"".join(outputs)

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

    def _new_series_refused(self):
        """Values tier 3 did not judge as series since the last batch (max_series; the tier logs once)."""
        return self._since_last("series_refused", self.pipeline.engine.tiers["t3"].series.refused)

    def _new_over_cap(self):
        """Numeric JSON fields past an input's json_numeric_fields since the last batch (a WARNING the first
        time per input and worker)."""
        new = 0
        for k, parser in enumerate(self.parsers):
            total = parser.stats["json_fields_over_cap"]
            if total and not self._over_cap[k]:
                log.warning("input %s: JSON lines carry more than json_numeric_fields = %d numeric fields; the "
                            "fields past them in key order are not mined (counted in "
                            "anomaly_detector_json_fields_over_cap_total)", self.inputs[k][0],
                            parser.json_numeric_fields)
            new += total - self._over_cap[k]
            self._over_cap[k] = total
        return new

    def _new_unparsed(self):
        """Lines whose stamp was there but read as no time since the last batch (a WARNING the first time
        per input and worker: a stamp field that is not a date, or a format the parser does not know)."""
        new = 0
        for k, parser in enumerate(self.parsers):
            total = parser.stats["unparsed_timestamps"]
            if total and not self._unparsed[k]:
                log.warning("input %s: time stamps that read as no time (impossible values, or a format not "
                            "known); such lines take the previous line's time (counted in "
                            "anomaly_detector_timestamps_unparsed_total)", self.inputs[k][0])
            new += total - self._unparsed[k]
            self._unparsed[k] = total
        return new

    def _score_run_guarded(self, buf, starts, ends, meta, source_id, outputs):
        """Score one run, appending its scored lines to outputs; when it raises, score its lines one by
        one so one bad line costs one line."""
        try:
            outputs.append(self._score_run(buf, starts, ends, int(meta["seq"][0]), source_id))
            return 0, 0
        except Exception as exc:  # one poisoned line must not kill the worker or cost the whole batch
            if len(starts) == 1:
                log.exception("worker %d: a line could not be processed", self.index)
                return 1, self._dead_letter(buf, starts, ends, meta, "exception: %s: %s" % (type(exc).__name__, exc))
            log.warning("worker %d: a run of %d lines raised %s: %s; scoring its lines one by one",
                        self.index, len(starts), type(exc).__name__, exc)
        errors = dead = 0
        for k in range(len(starts)):
            failed, lettered = self._score_run_guarded(buf, starts[k:k + 1], ends[k:k + 1], meta[k:k + 1], source_id,
                                                       outputs)
            errors, dead = errors + failed, dead + lettered
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
        records, sources = score_lines(self.pipeline, self.parsers[source_id], self.record_prefixes[source_id],
                                       buf, starts, ends, first_seq + 1, True)   # with_sources
        messages = [bytes(buf[s:e]).decode("utf-8", "replace") for s, e in zip(starts, ends)]
        return with_message_and_source(records, messages, sources)

    def _retry_later(self, n, exc):
        """Leave the batch popped and unacknowledged (the ring holds it, the inputs feel backpressure,
        /health reports the worker stalled) and write its lines again after a pause."""
        self.counters.add(output_errors=1)
        log.error("worker %d: cannot write scored lines (%s); %d lines stay in the ring and are retried in %.0f s",
                  self.index, exc, n, OUTPUT_RETRY_SECONDS)
        time.sleep(OUTPUT_RETRY_SECONDS)

    def _dead_letter(self, buf, starts, ends, meta, reason):
        """Write these lines to the dead-letter file instead of scoring them; returns how many."""
        records = []
        for k in range(len(starts)):
            source_id = min(int(meta["source_id"][k]), len(self.parsers) - 1)
            name = self.inputs[source_id][0] if self.inputs else ""
            seq, position = int(meta["seq"][k]), int(meta["input_pos"][k])
            records.append(dead_letter_record(buf[starts[k]:ends[k]], self.index, name, self.prefixes[source_id],
                                              seq, position, reason))
            log.error("worker %d: a line of input %s (ring seq %d%s) set aside in %s: %s", self.index, name, seq,
                      ", input position %d" % position if position >= 0 else "", self.dead_letter.path, reason)
        try:
            self.dead_letter.write(b"".join(records))
        except OSError as exc:  # the line is still counted; the log above holds where it came from
            log.error("worker %d: cannot write the dead-letter file %s: %s", self.index, self.dead_letter.path, exc)
        return len(records)

    def _report(self, incidents):
        for incident in incidents:
            log.warning("incident %s [%s] %s", incident.get("id"), incident.get("source"), incident.get("reason"))
        if self.incidents is not None:
            self.incidents.write(incident_lines(incidents))

    def _apply_flags(self):
        """Read the run-time flags once per batch; touch the engine only when they changed."""
        flags = self.control.flags()
        wanted = (flags.tier4_enabled, flags.learning_rate_factor)
        if wanted != self._applied:
            self._applied = wanted
            engine = self.pipeline.engine
            engine.set_tier_enabled("t4", flags.tier4_enabled)
            # The factor may exceed 1 (admin flag range); a rate above 1 would make the engine refuse it.
            engine.set_learning_rate(min(1.0, self._base_rate * flags.learning_rate_factor))
        self.relief.check(flags.relief_generation)
        return flags

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

    def _snapshot_if_due(self):
        if time.monotonic() >= self._next_snapshot:
            self.snapshot()

    def snapshot(self):
        try:
            self.pipeline.save(self.state_dir)
        except OSError as exc:  # a full disk must not stop scoring; the previous snapshot stays valid
            log.error("worker %d: snapshot to %s failed: %s", self.index, self.state_dir, exc)
        self._next_snapshot = time.monotonic() + self.snapshot_every

    def finish(self):
        """On stop: report the incidents still open (a restart would otherwise never close them), snapshot."""
        closed = self.pipeline.finish()
        if closed:
            self._report(closed)
            self.counters.add(incidents=len(closed))
        self.snapshot()
        for out in (self.scored, self.incidents, self.dead_letter):
            if out is not None:
                out.close()


def run_detector(ctx, daemon, index):
    """ChildSpec target for worker `index` (daemon: the supervisor's shared objects)."""
    daemon.setup_child_logging("worker-%d" % index)
    worker = DetectorWorker(daemon.cfg, index, daemon.rings[index], daemon.control, ctx.slot)
    return worker.run(ctx.stop)

