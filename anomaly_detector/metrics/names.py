"""Every exported metric declared once: name, type, help, labels.

The sidecar (metrics/sidecar.py) renders values under these names; docs/metrics.md and the
runbook's greps depend on them, so a name here is a contract.
"""
from dataclasses import dataclass

PREFIX = "anomaly_detector_"
COUNTER, GAUGE, SUMMARY, HISTOGRAM = "counter", "gauge", "summary", "histogram"


@dataclass(frozen=True)
class MetricSpec:
    name: str           # without PREFIX
    kind: str
    help: str
    labels: tuple = ()

    @property
    def full_name(self):
        return PREFIX + self.name


METRICS = {m.name: m for m in (
    MetricSpec("logs_processed_total", COUNTER, "Log lines scored by the detector workers."),
    MetricSpec("processing_errors_total", COUNTER, "Lines that could not be processed (counted, never retried)."),
    MetricSpec("lines_dead_lettered_total", COUNTER,
               "Lines a worker died or raised on, set aside in the dead-letter file instead of scored."),
    MetricSpec("output_write_errors_total", COUNTER,
               "Failed writes of [outputs] scored_lines, incidents or dead_letter; the batch stays in its ring, "
               "unacknowledged, and is written again with back-off (write_retry_max_seconds)."),
    MetricSpec("dead_letter_lines_refused_total", COUNTER,
               "Poison lines not kept because the dead-letter file reached [outputs] dead_letter_max_mb."),
    MetricSpec("models_optimized_total", COUNTER,
               "Compactions (--optimize-models) applied by running workers, one per worker and request."),
    MetricSpec("templates_merged_total", COUNTER,
               "Templates merged into a near-duplicate by --optimize-models in running workers "
               "([retention] merge_min_values)."),
    MetricSpec("state_load_failures_total", COUNTER,
               "State files set aside on load (renamed <file>.bad-<time>) by reason: truncated, zero_filled, "
               "checksum, foreign (another format), version (newer), shape (content unusable), unreadable.",
               ("reason",)),
    MetricSpec("state_write_errors_total", COUNTER,
               "Failed writes of state files (snapshots, checkpoints, spool offsets), e.g. a full disk."),
    MetricSpec("state_writes_failing", GAUGE,
               "Processes whose last write of some state file failed; /health reports degraded while above 0."),
    MetricSpec("vocabulary_refused_total", COUNTER,
               "Entries the deployment's template vocabulary refused at [parsing] vocabulary_max_entries, by "
               "reason: new_template (its lines are reported under <unclustered>), widened_text (the template "
               "keeps its id; other workers cannot adopt its wider text), unavailable ([parsing] vocabulary_url "
               "could not be reached: either of the two, logged).", ("reason",)),
    MetricSpec("vocabulary_entries", GAUGE,
               "Entries in the deployment's template vocabulary (one per template id, plus one per text a "
               "template widened to), as the workers last read it."),
    MetricSpec("vocabulary_limit_entries", GAUGE,
               "[parsing] vocabulary_max_entries: the bound of vocabulary_entries."),
    MetricSpec("lines_read_total", COUNTER, "Lines read by the inputs and handed to the rings."),
    MetricSpec("lines_dropped_total", COUNTER, "Lines dropped because the rings were full (when_full = drop_newest)."),
    MetricSpec("input_read_errors_total", COUNTER, "Failed reads of input files (permissions, I/O errors)."),
    MetricSpec("network_lines_refused_total", COUNTER,
               "Lines of network inputs not spooled, by reason (spool_full, spool_error): HTTP requests "
               "answered 503 and UDP syslog messages dropped.", ("reason",)),
    MetricSpec("spool_torn_records_total", COUNTER,
               "Spool records found torn or corrupt (a crash mid-write) and skipped."),
    MetricSpec("spool_bytes", GAUGE, "Disk bytes held by the network inputs' spools, each bounded by max_spool_mb."),
    MetricSpec("spool_limit_bytes", GAUGE,
               "[processing] max_spool_mb as bytes times the network inputs: the bound of spool_bytes."),
    MetricSpec("worker_lines_processed_total", COUNTER, "Log lines scored, per detector worker.", ("worker",)),
    MetricSpec("files_deferred", GAUGE, "Matching files waiting for a descriptor because max_open_files are open."),
    MetricSpec("files_deferred_total", COUNTER, "Times a matching file had to wait for a descriptor (max_open_files)."),
    MetricSpec("files_rescans_on_change_total", COUNTER,
               "Glob rescans of file inputs triggered by a change of a watched directory (a file created, "
               "renamed or removed), at most one per change_scan_seconds, besides those every scan_interval_seconds."),
    MetricSpec("redis_entries_acknowledged_total", COUNTER,
               "Redis Stream entries acknowledged (XACK) by redis inputs after their lines were scored."),
    MetricSpec("redis_entries_claimed_total", COUNTER,
               "Redis Stream entries claimed (XAUTOCLAIM) from other consumers of the group after "
               "claim_idle_seconds idle: a dead instance's entries, scored again here."),
    MetricSpec("redis_reconnects_total", COUNTER, "Connections to Redis made again by redis inputs after one was lost."),
    MetricSpec("redis_connect_failures_total", COUNTER,
               "Failed connection attempts and lost connections of redis inputs (retried with back-off: "
               "reconnect_min_seconds doubling to reconnect_max_seconds)."),
    MetricSpec("redis_inputs_disconnected", GAUGE, "Redis inputs without a connection to Redis now."),
    MetricSpec("rule_scans_cut_total", COUNTER,
               "Lines longer than a [rules] pattern's max_scan_bytes, searched by their head only."),
    MetricSpec("source_capped_lines_total", COUNTER,
               "Lines that kept their input's source because the input already had [processing] max_sources "
               "sources of its own (from source_fields or a detected prefix)."),
    MetricSpec("volume_gaps_skipped_total", COUNTER,
               "Gaps in event time with no line from any of two or more busy sources for at least "
               "[detection][[tier2]] input_gap_seconds, skipped by volume detection as input outages."),
    MetricSpec("volume_drops_withdrawn_total", COUNTER,
               "Volume drops and silences not raised because their template or source was no longer low "
               "[detection][[tier2]] drop_hold_seconds after they were first seen (a restart, a deploy)."),
    MetricSpec("volume_value_keys_refused_total", COUNTER,
               "Template parameter values (a table, a method, a path) that qualified for their own volume "
               "baseline beyond [detection][[tier2]] max_value_keys: their surges are judged only through "
               "their templates."),
    MetricSpec("source_hosts_dropped_lines_total", COUNTER,
               "Lines of a source's hosts beyond [detection][[tier2]] max_hosts_per_source: counted for their "
               "source but not per host, so that host's silence is not seen."),
    MetricSpec("json_fields_over_cap_total", COUNTER,
               "Numeric JSON fields not mined as template parameters because their line had more than its "
               "input's json_numeric_fields (the first ones in key order are kept)."),
    MetricSpec("lines_inline_level_total", COUNTER,
               "Lines whose header or format gave no level and whose level was read from their message's "
               "first words (`ERROR:`, `[error]`, `level=warn`; [parsing] inline_levels)."),
    MetricSpec("timestamps_unparsed_total", COUNTER,
               "Lines whose time stamp was there but read as no time (a header's stamp fields, a JSON or "
               "syslog time, a plain line starting with a known stamp shape whose values are impossible); "
               "they took the previous line's time (logged once per input and worker)."),
    MetricSpec("series_values_refused_total", COUNTER,
               "Numeric values not judged as series because [detection][[tier3]] max_series series were "
               "already tracked (logged once per worker)."),
    MetricSpec("lines_unclustered_total", COUNTER,
               "Lines of free-text sources (most of their lines join no template, see [parsing] "
               "free_text_share) that joined no template either and were reported under <unclustered>."),
    MetricSpec("batch_deadline_hits_total", COUNTER,
               "Batches a worker started with fewer than batch_size lines because the first of them had waited "
               "[processing] batch_deadline_seconds (a quiet or moderate input: latency bounded, not CPU)."),
    MetricSpec("kernels_compiled_after_fork_total", COUNTER,
               "Numba kernel versions a detector worker typed (compiled or loaded) after it was forked; warm-up "
               "compiles them all before forking, so anything but 0 names a gap in it (logged with the kernels)."),
    MetricSpec("anomalies_total", COUNTER, "Lines flagged as anomalous."),
    MetricSpec("anomalies_by_tier_total", COUNTER,
               "Lines flagged as anomalous, by the tier that scored them highest (t1 rules, t2 volume, t3 "
               "novelty and series, t4 sequences).", ("tier",)),
    MetricSpec("tier_enabled", GAUGE, "1 while the workers run the tier ([detection] [[tierN]] enabled; t4 "
               "also POST /admin/disable-tier4 and enable-tier4), else 0.", ("tier",)),
    MetricSpec("incidents_total", COUNTER, "Incidents closed by the detection engine."),
    MetricSpec("alerts_generated_total", COUNTER,
               "Incident events (opened, updated, resolved) the workers appended to the alert outbox."),
    MetricSpec("alerts_delivered_total", COUNTER, "Alerts accepted by a sink.", ("sink",)),
    MetricSpec("alerts_failed_total", COUNTER,
               "Alert deliveries that failed, by reason (timeout, connect, refused_address, redirect, http_5xx, "
               "http_4xx, smtp_4xx, auth, io: retried; rejected: refused for good by the receiver, skipped).",
               ("sink", "reason")),
    MetricSpec("alerts_dropped_total", COUNTER,
               "Alerts lost before delivery: outbox_full (oldest undelivered dropped at [alerting] "
               "outbox_max_alerts / outbox_max_mb), write_error (a batch's events could not be written).",
               ("reason",)),
    MetricSpec("alerts_throttled_total", COUNTER,
               "Alerts that waited in the outbox because their sink had sent [alerting] rate_limit_per_minute "
               "alerts in the last minute.", ("sink",)),
    MetricSpec("alerts_suppressed_total", COUNTER,
               "Alerts a sink's noise rules kept from it, by reason: severity and min_score (routing), dedup "
               "(folded into an earlier incident of the same identity, [alerting] dedup_window_seconds), "
               "resolved_in_quiet_hours and superseded_in_quiet_hours (held, then no longer worth sending), "
               "held_overflow (more held than [alerting] outbox_max_alerts).", ("sink", "reason")),
    MetricSpec("alerts_held_total", COUNTER,
               "Alerts of non-critical incidents held during a sink's quiet_hours, to go out as one digest at "
               "their end.", ("sink",)),
    MetricSpec("alert_notifications_total", COUNTER,
               "Messages a sink accepted: one per alert, or one per group of alerts sent together "
               "([alerting] group_wait_seconds, quiet-hours digests).", ("sink",)),
    MetricSpec("alert_situation_joins_total", COUNTER,
               "Incidents a sink announced as an update of a situation's notification (linked to an incident it "
               "announced that still fires; [situations], docs/situations.md) instead of as a new alert.", ("sink",)),
    MetricSpec("situation_limits_total", COUNTER,
               "Times the alerter's situation correlator (one, shared by the sinks: each sink's series counts the "
               "same hits) reached a bound, by reason: max_open (the quietest situation closed early), max_pairs "
               "(the weaker half of the learned source pairs forgotten) ([situations]).",
               ("sink", "reason")),
    MetricSpec("alert_stream_at_limit_total", COUNTER,
               "Incident events a redis sink added while its stream held stream_max_entries (each pushes the "
               "oldest entries out, read or not).", ("sink",)),
    MetricSpec("alert_stream_read_total", COUNTER,
               "Incident events of other instances this alerter read from a redis sink's stream (consume = true) "
               "and queued for its other sinks.", ("sink",)),
    MetricSpec("alert_stream_duplicates_total", COUNTER,
               "Stream entries a reader skipped because their key (instance/event id) was read already (an XADD "
               "retried by its sender).", ("sink",)),
    MetricSpec("alert_stream_reader_disconnected", GAUGE,
               "1 while a redis sink's reader (consume = true) cannot reach Redis, else 0.", ("sink",)),
    MetricSpec("alert_outbox_bytes", GAUGE, "Disk bytes of the alert outbox, bounded by [alerting] outbox_max_mb."),
    MetricSpec("alert_outbox_limit_bytes", GAUGE,
               "[alerting] outbox_max_mb as bytes: the bound of alert_outbox_bytes (0 without sinks)."),
    MetricSpec("alert_queue_limit", GAUGE,
               "[alerting] outbox_max_alerts: the bound of alert_queue_size (0 without sinks)."),
    MetricSpec("alert_oldest_undelivered_age_seconds", GAUGE,
               "Age of the oldest alert not yet delivered to every sink (0 when none waits)."),
    MetricSpec("input_queue_size", GAUGE, "Lines read by inputs and waiting in the rings."),
    MetricSpec("processing_queue_size", GAUGE,
               "Lines in the rings that no detector worker has taken yet (ring head minus each worker's read "
               "position); input_queue_size also counts the lines being scored."),
    MetricSpec("alert_queue_size", GAUGE,
               "Alerts in the outbox not yet delivered to every sink, as the alerter last counted them."),
    MetricSpec("processing_duration_seconds", SUMMARY,
               "Time from a line being read by an input to its verdict being written by a worker: p50, p95, p99 "
               "over the last minute (19% resolution), sum and count since start. [processing] "
               "batch_deadline_seconds and idle_poll_seconds bound what batching and polling add to it."),
    MetricSpec("processing_rate", GAUGE, "Lines scored per second over the last minute."),
    MetricSpec("cpu_usage_percent", GAUGE, "CPU used by all daemon processes, percent of one core."),
    MetricSpec("memory_usage_percent", GAUGE, "Memory used by all daemon processes, percent of max_memory_mb."),
    MetricSpec("learning_model_health", GAUGE, "1 when models are warmed up and persisting, else 0."),
    MetricSpec("workers_running", GAUGE, "Detector workers in the RUNNING or STARTING state."),
    MetricSpec("ring_capacity_lines", GAUGE, "Slots of all rings together: the bound of input_queue_size."),
    MetricSpec("memory_limit_bytes", GAUGE, "max_memory_mb as bytes: the bound of memory_usage_percent."),
    MetricSpec("input_rejected_total", COUNTER,
               "Requests and connections an input refused: HTTP status, refused (connection cap), "
               "header_timeout, incomplete (peer left mid-headers).", ("input", "reason")),
    MetricSpec("input_framing_errors_total", COUNTER,
               "Syslog TCP frames with a bad or too large octet count, a count larger than its data "
               "(overrun) or cut by the connection's end (short_frame); their bytes are still delivered.",
               ("input", "reason")),
    MetricSpec("input_connections_closed_total", COUNTER,
               "Syslog TCP peers closed by the input: idle_timeout, or evicted to admit a new sender.",
               ("input", "reason")),
    MetricSpec("lines_truncated_total", COUNTER, "Lines cut to max_line_bytes (on_long_line = truncate).", ("input",)),
    MetricSpec("lines_skipped_total", COUNTER, "Lines over max_line_bytes dropped (on_long_line = skip).", ("input",)),
    MetricSpec("udp_receive_drops_total", COUNTER,
               "Datagrams the kernel dropped for a UDP input's socket because its receive buffer was full.",
               ("input",)),
    MetricSpec("http_rejected_total", COUNTER,
               "Requests and connections the metrics sidecar refused: HTTP status, refused (max_connections, all "
               "being answered), evicted (waited longest for its headers when max_connections were open), "
               "header_timeout, incomplete, tls_handshake (HTTPS only).", ("reason",)),
    MetricSpec("process_up", GAUGE, "1 while the child process is STARTING or RUNNING, else 0.", ("role", "process")),
    MetricSpec("process_state", GAUGE, "Supervisor state of the child: 0 STOPPED, 10 STARTING, 20 RUNNING, "
               "30 BACKOFF, 40 STOPPING, 100 EXITED, 200 FATAL.", ("role", "process")),
    MetricSpec("process_restarts_total", COUNTER, "Times the supervisor forked the child again (crash, hung kill, "
               "reload).", ("role", "process")),
    MetricSpec("build_info", GAUGE, "Always 1; the label carries the running version (anomaly_detector "
               "--version).", ("version",)),
    MetricSpec("health_status", GAUGE, "1 while GET /health answers 200 (healthy), 0 while it answers 503.",),
    MetricSpec("health_reasons", GAUGE, "Reasons /health reports now, by kind (process_down, process_fatal, "
               "not_responding, stalled, memory, state_dir, readings_stale).", ("reason",)),
    MetricSpec("stall_limit_seconds", GAUGE, "[http] stall_seconds: how long lines may wait unscored (or a "
               "process go without a heartbeat) before /health reports a stall."),
    MetricSpec("config_last_reload_successful", GAUGE,
               "0 when the last SIGHUP reload was rejected (the previous configuration still runs), else 1."),
    MetricSpec("config_reloads_total", COUNTER, "SIGHUP reloads since start, applied or rejected.", ("result",)),
    MetricSpec("batches_total", COUNTER, "Batches the detector workers popped from their rings (lines per batch "
               "at most the batch size)."),
    MetricSpec("admin_requests_total", COUNTER, "Requests to /admin/*, by action (unknown: a path naming no "
               "action) and HTTP status (since the sidecar started).", ("action", "status")),
    MetricSpec("admin_api_enabled", GAUGE, "1 when /admin/* takes requests (an [http] admin_token_file holds a "
               "token), else 0 (every /admin request answers 403)."),
    MetricSpec("runtime_workers_wanted", GAUGE, "Detector workers the supervisor runs: [processing] workers, or "
               "the last POST /admin/set-workers."),
    MetricSpec("runtime_batch_size", GAUGE, "Lines a worker pops at once: [processing] batch_size, or the last "
               "POST /admin/set-batch-size."),
    MetricSpec("runtime_tier4_enabled", GAUGE, "1 while the workers run tier 4 (POST /admin/disable-tier4 and "
               "enable-tier4 switch it)."),
    MetricSpec("runtime_learning_rate_factor", GAUGE, "Multiplier of every tier's learning rate: 1, halved by "
               "each POST /admin/reduce-learning-rate."),
    MetricSpec("page_reads_skipped_total", COUNTER, "Files the page at / did not read, by reason: too_large "
               "(over [http] page_max_read_mb), unreadable (damaged, or not a state file); since the sidecar "
               "started.", ("reason",)),
    MetricSpec("runtime_backpressure", GAUGE, "1 while the inputs read nothing new (POST "
               "/admin/enable-backpressure); lines wait in their files, pipe and spools."),
    MetricSpec("feedback_total", COUNTER, "Verdicts taken by POST /admin/feedback (normal, problem, clear; since "
               "the sidecar started).", ("verdict",)),
    MetricSpec("feedback_refused_total", COUNTER, "POST /admin/feedback bodies refused with 400, by reason: invalid, "
               "unknown_incident, unknown_source, unknown_template, ambiguous_template, max_rules "
               "([detection] feedback_max_rules), nothing_to_clear (since the sidecar started).", ("reason",)),
    MetricSpec("feedback_rules", GAUGE, "Feedback rules in force, by verdict (normal, problem); at most [detection] "
               "feedback_max_rules.", ("verdict",)),
    MetricSpec("feedback_lines_total", COUNTER, "Lines whose score feedback rules changed: suppressed (a template "
               "marked normal, scored 0) or flagged (marked a problem, raised to anomaly_threshold).", ("effect",)),
)}
