"""The outage soak on the real daemon: one source's 10-minute outage (error bursts that stop and start
again, so the engine raises several incidents of one identity) reaches a file sink and a webhook
receiver as one incident in at most three notifications each.

The default test compresses time: the lines carry event timestamps (the engine runs in event time) and
are written in three chunks a few seconds apart (resolve_wait_seconds = 5 then suffices). The slow one
writes the same lines in real time, one a second, for the whole ten minutes, with the default
resolve_wait_seconds (`pytest -m slow`)."""
import glob
import json
import os
import time

import pytest

from tests.integration.daemon_harness import Daemon
from tests.integration.test_alerting import Collector

BASELINE, OUTAGE, AFTER = 1800, 600, 120     # seconds of event time: normal, outage, normal again
BURST, GAP = 50, 40                          # the outage: 50 s of errors, 40 s of normal lines, over and over


def line(t, seq):
    """The line at second `t` of the day: INFO, or during the outage's bursts an error (FATAL every 10th)."""
    stamp = "2026-03-02T%02d:%02d:%02d.000Z" % (t // 3600, t // 60 % 60, t % 60)
    into = t - BASELINE
    if 0 <= into < OUTAGE and into % (BURST + GAP) < BURST:
        if into % 10 == 0:
            return "%s FATAL db connection lost host=db-1 seq=%d\n" % (stamp, seq)
        return "%s ERROR request failed: upstream db unavailable retry=%d seq=%d\n" % (stamp, into % 5, seq)
    return "%s INFO worker-%d took %d ms seq=%d\n" % (stamp, t % 3, 20 + t % 7, seq)


def incidents_of(notifications):
    """Incident ids a receiver was told about, groups unpacked."""
    found = []
    for n in notifications:
        for e in n.get("events", [n]):
            found.append(e["incident_id"])
    return found


def outbox_incidents(daemon):
    ids = set()
    for path in glob.glob(os.path.join(daemon.dir, "state", "outbox", "*.jsonl")):
        ids |= {json.loads(x)["incident_id"] for x in open(path, "rb") if x.endswith(b"\n")}
    return ids


def soak(tmp_path, pace, resolve_wait=30):
    """Run the outage; `pace(t)` is called before writing second t of event time (to sleep in real time)."""
    hook = Collector()
    archive = tmp_path / "alerts.jsonl"
    extra = """[detection]
incident_window_seconds = 30
[alerting]
resolve_wait_seconds = %s
[[hook]]
type = webhook
url = %s
retry_initial_seconds = 0.2
[[archive]]
type = file
path = %s
""" % (resolve_wait, hook.url, archive)
    daemon = Daemon(tmp_path, workers=1, extra=extra)
    app = os.path.join(daemon.logs, "app.log")
    try:
        with open(app, "w") as f:
            f.writelines(line(t, t) for t in range(BASELINE))
        daemon.start()
        daemon.wait_scored(BASELINE, 120)
        with open(app, "a") as f:
            for t in range(BASELINE, BASELINE + OUTAGE + AFTER):
                pace(t)
                f.write(line(t, t))
                f.flush()
        total = BASELINE + OUTAGE + AFTER
        daemon.wait_scored(total, 180)

        def settled():
            done = daemon.metric("alert_queue_size") == 0 and archive.exists()
            return done and any(n["event"] == "resolved" for n in hook.bodies)
        deadline = time.monotonic() + 90 + resolve_wait
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)     # nothing else comes
        written = [json.loads(x) for x in archive.read_text().splitlines()]
        raised = outbox_incidents(daemon)
        counters = {"notifications": daemon.labelled("alert_notifications_total"),
                    "suppressed": daemon.labelled("alerts_suppressed_total")}
        return written, list(hook.bodies), raised, counters
    finally:
        daemon.stop()
        hook.close()


def check(written, posted, raised, counters):
    # without noise control each of these incidents would page: the bursts really split the outage
    assert len(raised) >= 2, raised
    for name, notes in (("archive", written), ("hook", posted)):
        assert 1 <= len(notes) <= 3, (name, notes)
        assert len(set(incidents_of(notes))) == 1, (name, incidents_of(notes))
        assert notes[0]["event"] in ("opened", "group") and notes[-1]["event"] == "resolved", (name, notes)
        assert counters["notifications"][(("sink", name),)] == len(notes)
        assert counters["suppressed"][(("reason", "dedup"), ("sink", name))] >= 1
    assert len({n["id"] for n in written}) == len(written)


def test_a_compressed_10_minute_outage_is_one_incident_and_at_most_three_notifications_per_sink(tmp_path):
    chunks = {BASELINE + OUTAGE // 3, BASELINE + 2 * OUTAGE // 3, BASELINE + OUTAGE}

    def pace(t):
        if t in chunks:
            time.sleep(3)
    # written in three chunks, a burst's resolved and the next burst's opened are seconds apart at most
    check(*soak(tmp_path, pace, resolve_wait=5))


@pytest.mark.slow
def test_a_real_time_10_minute_outage_is_one_incident_and_at_most_three_notifications_per_sink(tmp_path):
    start = time.monotonic()

    def pace(t):
        delay = start + (t - BASELINE) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    check(*soak(tmp_path, pace))
