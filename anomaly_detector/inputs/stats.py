"""Ship each input's drop, rejection and framing counts to its stats row in the control block.

The readers (file_tail, stdin in the input process; syslog_server, http_ingest in the listener process)
keep plain `stats` dicts; runner.InputRunner and listener.Listener call InputStatsPublisher.publish() each
round for their own inputs (a row has one writer), which adds what grew since
the last call to the input's row (ipc/control.py InputStats), a few times a second at most and never
per line. The sidecar (metrics/sidecar.py) renders the rows as labelled metrics. Adding deltas, not
copying totals, keeps the shared counters growing across a restarted input process or a new UDP socket.
"""
import time

PUBLISH_INTERVAL_SECONDS = 0.25

# reader stats key -> control block field; HTTP ingest and syslog use these names (see their modules).
_STAT_FIELDS = {
    "rejected_400": "rejected_400", "rejected_404": "rejected_404", "rejected_405": "rejected_405",
    "rejected_411": "rejected_411", "rejected_413": "rejected_413", "rejected_414": "rejected_414",
    "rejected_431": "rejected_431", "rejected_503": "rejected_503", "rejected_505": "rejected_505",
    "refused": "rejected_refused", "header_timeouts": "rejected_header_timeout",
    "incomplete": "rejected_incomplete",
    "framing_bad_count": "framing_bad_count", "framing_count_too_large": "framing_count_too_large",
    "framing_overrun": "framing_overrun", "framing_short_frame": "framing_short_frame",
    "truncated": "lines_truncated", "skipped": "lines_skipped", "udp_drops": "udp_receive_drops",
    "idle_closed": "closed_idle_timeout", "evicted": "closed_evicted",
}


def exported_stats(reader):
    """{control block field: total so far} of one reader."""
    stats = getattr(reader, "stats", {})
    out = {field: stats[key] for key, field in _STAT_FIELDS.items() if key in stats}
    if "long_lines" in stats:  # file and stdin inputs count long lines as one figure: their mode says which
        field = "lines_skipped" if getattr(reader, "on_long_line", "truncate") == "skip" else "lines_truncated"
        out[field] = out.get(field, 0) + stats["long_lines"]
    return out


class InputStatsPublisher:
    """Adds each reader's stats growth to its control-block row (rows claimed by input name)."""

    def __init__(self, control, entries):
        """entries: (index of the input in the config, its name, its reader) for the inputs this process reads."""
        self._rows = [control.input_stats(index, name) for index, name, _ in entries]
        self._readers = [reader for _, _, reader in entries]
        self._last = [{} for _ in self._readers]
        self._next = 0.0

    def publish(self, force=False):
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + PUBLISH_INTERVAL_SECONDS
        for index, reader in enumerate(self._readers):
            row = self._rows[index]
            if row is None:
                continue
            refresh = getattr(reader, "refresh_stats", None)
            if refresh is not None:
                refresh()
            totals = exported_stats(reader)
            last = self._last[index]
            # A total that went down (a reader's socket was replaced) starts a new count from zero.
            grown = {field: value - last.get(field, 0) if value >= last.get(field, 0) else value
                     for field, value in totals.items()}
            row.add(**{field: amount for field, amount in grown.items() if amount > 0})
            self._last[index] = totals
