"""Issue 14's done-when on the real daemon, in wall-clock time: the webhook receiver is down for ten minutes
while incidents fire (a FATAL burst a minute, event time moving on so each is its own incident) and the
daemon is stopped and started once halfway; the sink keeps its default retry settings. Once the receiver is
back every event arrives, in order, signed, at most 1% twice, and the outbox stayed within its bound all
along (sampled every few seconds from /metrics).

Opt-in, it takes 12 to 17 minutes: `pytest -m slow -s tests/integration/test_alerting_soak.py` (-s shows the
figures it prints). The one-minute version, with fast retries, is test_alerting.py's
test_webhook_down_through_incidents_and_a_restart_gets_every_alert_in_order_signed; the helpers are its."""
import os
import threading
import time

import pytest

from tests.integration.daemon_harness import Daemon, free_port, wait_for
from tests.integration.test_alerting import (
    Collector,
    Receiver,
    check_received,
    hook_down_config,
    outbox_events,
    write_phase,
)

OUTAGE_SECONDS = 600          # the receiver is down this long, counted from the first burst
BURST_EVERY_SECONDS = 60      # wall time between bursts; each phase also moves event time on by 7 minutes
RESTART_BURST = 5             # the daemon is stopped and started just before this burst (about 300 s in)
# The sink's defaults (spec.ini): retry_initial_seconds 1 doubling up to retry_max_seconds 300, each delay
# drawn from its upper half. Ten minutes down (five since the restart reset the back-off) puts the pending
# delay at up to 300 s when the receiver returns, so the first delivery comes at most 300 s later; a success
# clears the back-off and the rest follow at once. 60 s more for a loaded 2-core machine.
RETRY_MAX_SECONDS = 300
DRAIN_TIMEOUT = RETRY_MAX_SECONDS + 60
OUTBOX_MAX_ALERTS, OUTBOX_MAX_MB = 1000, 1
SAMPLE_SECONDS = 3


class OutboxSampler:
    """Reads alert_outbox_bytes and alert_queue_size from /metrics every SAMPLE_SECONDS in a thread. While
    the daemon restarts nothing answers; those samples are skipped."""

    def __init__(self, daemon):
        self.daemon, self.bytes, self.queue = daemon, [], []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped.wait(SAMPLE_SECONDS):
            try:
                size, queue = self.daemon.metric("alert_outbox_bytes"), self.daemon.metric("alert_queue_size")
            except (OSError, ValueError):
                continue
            if size is not None and queue is not None:
                self.bytes.append(size)
                self.queue.append(queue)

    def stop(self):
        self.stopped.set()
        self.thread.join(30)


def sleep_until(moment):
    time.sleep(max(0.0, moment - time.monotonic()))


def fatal_seq(first_seq):
    """The first FATAL line's seq of a phase written from `first_seq` (write_phase puts them at 300..305)."""
    return "seq=%d" % (first_seq + 300)


@pytest.mark.slow
def test_a_10_minute_webhook_outage_with_a_restart_delivers_every_alert_in_order_signed_within_bound(tmp_path):
    port = free_port()   # nobody listens there for OUTAGE_SECONDS
    chat = Collector()   # a Slack stand-in that is up all along
    outbox = "outbox_max_alerts = %d\noutbox_max_mb = %d\n" % (OUTBOX_MAX_ALERTS, OUTBOX_MAX_MB)
    extra = hook_down_config(tmp_path, port, chat.url, retry="", outbox=outbox)   # default retry settings
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")
    receiver = sampler = None
    bursts = OUTAGE_SECONDS // BURST_EVERY_SECONDS
    try:
        daemon.start()           # a cold numba cache compiles here, before the outage clock starts
        sampler = OutboxSampler(daemon)
        down_since = time.monotonic()
        seq, spanning = 0, None
        for burst in range(bursts):
            sleep_until(down_since + burst * BURST_EVERY_SECONDS)
            if burst == RESTART_BURST:
                # the previous burst's incident is still open: it must keep its id over the restart
                wait_for(lambda s=spanning: any(s in str(e["incident"]["samples"]) for e in outbox_events(daemon)),
                         60, daemon, "the open incident's opened event")
                assert daemon.stop() == 0
                restarted = time.time()
                daemon.start()
            # the burst before the restart stops 4 s after its FATAL lines, so its incident stays open
            lines = 310 if burst == RESTART_BURST - 1 else 400
            if burst == RESTART_BURST - 1:
                spanning = fatal_seq(seq)
            seq = write_phase(app, 7 * burst, seq, seconds=lines)
            daemon.wait_scored(seq, 120)
        # every incident opened and resolved (the last phase's normal lines close its own)
        wait_for(lambda: sum(e["event"] == "resolved" for e in outbox_events(daemon)) >= bursts, 60, daemon,
                 "a resolved event per burst")
        written = outbox_events(daemon)
        assert len({e["incident_id"] for e in written}) >= bursts
        # the other sinks were not held back: the Slack stand-in already has every event
        wait_for(lambda: len(chat.bodies) >= len(written), 60, daemon, "every event at the Slack stand-in")
        assert daemon.labelled("alerts_failed_total").get((("reason", "connect"), ("sink", "hook")))
        wait_for(lambda: (daemon.metric("alert_queue_size") or 0) >= len(written), 30, daemon, "the queue")
        sleep_until(down_since + OUTAGE_SECONDS)
        outage = time.monotonic() - down_since
        receiver = Receiver(port)
        back = time.monotonic()
        wanted = {e["id"] for e in written}
        wait_for(lambda: wanted <= {e["id"] for e in receiver.events}, DRAIN_TIMEOUT, daemon,
                 "every event at the webhook receiver", interval=1)
        drained = time.monotonic() - back
        time.sleep(5)        # late duplicates, if any, arrive now
        sampler.stop()
        unique, duplicates = check_results(daemon, receiver, written, sampler, outage, drained)
        # the incident open across the restart kept its id: opened before, resolved after, never twice
        (kept,) = {e["incident_id"] for e in unique if spanning in str(e["incident"]["samples"])}
        events = [e for e in unique if e["incident_id"] == kept]
        assert events[0]["event"] == "opened" and events[0]["at"] < restarted
        assert events[-1]["event"] == "resolved" and events[-1]["at"] > restarted
        wait_for(lambda: daemon.metric("alert_queue_size") == 0, 30, daemon, "an empty queue")
        assert daemon.metric("alert_oldest_undelivered_age_seconds") == 0
        assert daemon.labelled("alerts_delivered_total")[(("sink", "hook"),)] >= len(unique)
    finally:
        if sampler is not None:
            sampler.stop()
        daemon.stop()
        chat.close()
        if receiver is not None:
            receiver.close()


def check_results(daemon, receiver, written, sampler, outage, drained):
    """Print the figures, then assert delivery (check_received), the order of first arrival (the outbox's
    order: one worker) and the outbox bound. Returns check_received's result."""
    written = {e["id"]: e for e in written + outbox_events(daemon)}
    got = [e["id"] for e in receiver.events]
    first_arrivals = list(dict.fromkeys(got))
    max_bytes, max_queue = max(sampler.bytes, default=0), max(sampler.queue, default=0)
    print("\nsoak: receiver down %.0f s; %d events of %d incidents written, %d received (%d duplicates, %d bad "
          "signatures); max outbox %d bytes (bound %d) and %d queued (bound %d) over %d samples; every event "
          "delivered %.0f s after the receiver came back"
          % (outage, len(written), len({e["incident_id"] for e in written.values()}), len(got),
             len(got) - len(set(got)), len(receiver.bad), max_bytes, OUTBOX_MAX_MB << 20, max_queue,
             OUTBOX_MAX_ALERTS, len(sampler.bytes), drained))
    result = check_received(receiver, list(written.values()))
    assert (len(got) - len(set(got))) * 100 <= len(set(got))    # strictly 1%: none while there are < 100
    assert first_arrivals == list(written)
    assert len(sampler.bytes) >= outage / SAMPLE_SECONDS / 2      # sampled all along, the restart aside
    assert 0 < max_bytes <= OUTBOX_MAX_MB << 20 and max_queue <= OUTBOX_MAX_ALERTS
    assert not (daemon.labelled("alerts_dropped_total") or {}).get((("reason", "outbox_full"),))
    return result
