"""A change of the worker count on reload keeps what was learned, on a live daemon: workers 2 -> 3 -> 2
by SIGHUP after rewriting the config. Files keep their ring while it exists (inputs/runner.py); the
file a third worker learned moves to another one when that worker goes, and its volume baseline goes
with it (worker/handover.py): level within 10%, still warm (its age and lines learned go on from where
they were), and its lines keep their template ids (parsing/vocabulary.py)."""
import json
import os
import signal

import pytest

from anomaly_detector.detection.engine import STATE_VERSION
from anomaly_detector.storage.atomic import SnapshotError, peek_json_snapshot
from tests.integration.daemon_harness import Daemon, wait_for

SOURCES = ("alpha", "beta", "gamma")
PER_SECOND = 10
TIER2 = "[detection]\n[[tier2]]\nbucket_seconds = 1\nmin_history_buckets = 5\n"


def lines(name, first_second, seconds):
    """PER_SECOND lines a second of event time from first_second on (10:00:00 + seconds), seq=<n>."""
    out = []
    for sec in range(first_second, first_second + seconds):
        for k in range(PER_SECOND):
            n = sec * PER_SECOND + k
            ts = "2026-03-02T10:%02d:%02d.%03dZ" % (sec // 60, sec % 60, k * 100)
            what = ("%s request %d served in %dms" % (name, n % 89, 10 + n % 17) if k % 2 else
                    "%s cache refreshed with %d keys" % (name, 100 + n % 50))
            out.append("%s INFO %s seq=%d\n" % (ts, what, n))
    return out


def feed(daemon, names, first_second, seconds):
    """The same span of event time to each named source (a worker's volume clock is one for all its
    sources), then wait until all of it is scored."""
    for name in names:
        with open(os.path.join(daemon.logs, name + ".log"), "a") as f:
            f.writelines(lines(name, first_second, seconds))
    last = "seq=%d\"" % ((first_second + seconds) * PER_SECOND - 1)
    wait_for(lambda: sum(last in row for row in _scored(daemon)) >= len(names), 180, daemon,
             "the lines up to %s of %s scored" % (last, names))


def _scored(daemon):
    if not os.path.exists(daemon.scored):
        return []
    with open(daemon.scored) as f:
        return f.readlines()


def template_ids(daemon, name):
    """{kind of line: set of template ids} of the scored lines of source `name`."""
    found = {}
    for row in _scored(daemon):
        record = json.loads(row)
        if record["source"] == name:
            found.setdefault("served" if "served" in record["message"] else "cache", set()).add(record["template_id"])
    return found


def baselines(daemon):
    """{source: (worker, level, age, lines learned)} of every worker's saved models (the copy that learned
    the most of each source)."""
    found = {}
    state = os.path.join(daemon.dir, "state", "baselines")
    for worker in sorted(os.listdir(state)):
        try:
            got = peek_json_snapshot(os.path.join(state, worker, "detection.json"), "detection-baselines",
                                     max_version=STATE_VERSION)
        except (OSError, SnapshotError):
            continue
        t2 = got["t2"]["sources"]
        for sid, name in enumerate(got["meta"]["sources"]):
            row = (worker, t2["level"][sid], t2["age"][sid], t2["total"][sid])
            if name not in found or row[3] > found[name][3]:
                found[name] = row
    return found


def reload_with(daemon, workers):
    log = os.path.join(daemon.dir, "log", "anomaly-detector.log")
    words = "reloaded %s: %d workers" % (daemon.config, workers)
    before = open(log, errors="replace").read().count(words)
    daemon.write_config(workers=workers, batch_size=200, extra=TIER2, inputs=INPUTS % ((daemon.logs,) * 3))
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: open(log, errors="replace").read().count(words) > before, 120, daemon, words)
    daemon.wait_healthy(60)


INPUTS = "\n".join("[[%s]]\ntype = file\npath = %%s/%s.log\nstart_at = beginning\n" % (s, s) for s in SOURCES)


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, workers=2, batch_size=200, extra=TIER2,
               inputs=INPUTS % ((os.path.join(tmp_path, "logs"),) * 3))
    yield d
    d.kill()


def _near(a, b, share=0.10):
    return abs(a - b) <= share * abs(b)


def test_baselines_survive_2_3_2_workers(daemon):
    daemon.start()
    feed(daemon, ["alpha"], 0, 1)                # alpha on ring 0, then beta on the less loaded ring 1
    feed(daemon, ["alpha", "beta"], 1, 59)

    reload_with(daemon, 3)                       # every worker snapshots when it stops
    first = baselines(daemon)
    assert first["alpha"][0] != first["beta"][0]
    for name in ("alpha", "beta"):
        assert _near(first[name][1], PER_SECOND, 0.2) and first[name][2] >= 50, first

    feed(daemon, ["alpha", "beta"], 60, 5)
    feed(daemon, ["alpha", "beta", "gamma"], 65, 55)    # a new file: the third worker's ring (least loaded)
    reload_with(daemon, 2)
    second = baselines(daemon)
    assert second["gamma"][0] == "worker-2", second
    assert _near(second["gamma"][1], PER_SECOND, 0.2) and second["gamma"][2] >= 45, second
    for name in ("alpha", "beta"):               # 2 -> 3: they stayed, warm
        assert second[name][0] == first[name][0] and second[name][2] > first[name][2], (first, second)
        assert _near(second[name][1], first[name][1]), (first, second)
    ids_before = template_ids(daemon, "gamma")

    # gamma moved to worker 0 or 1 (alone: its new worker reads it in time order with nothing else)
    feed(daemon, ["gamma"], 120, 5)
    assert daemon.stop() == 0
    third = baselines(daemon)
    moved = third["gamma"]
    assert moved[0] in ("worker-0", "worker-1"), third
    assert _near(moved[1], second["gamma"][1]), (second, third)
    # warm: it went on from the third worker's baseline (a few more buckets), not from zero
    assert moved[2] > second["gamma"][2] and moved[3] > second["gamma"][3], (second, third)
    for name in ("alpha", "beta"):
        assert third[name][0] == first[name][0] and _near(third[name][1], first[name][1]), (first, third)
    assert template_ids(daemon, "gamma") == ids_before       # the same lines, the same template ids
    assert all(len(ids) == 1 for ids in ids_before.values()), ids_before
    log = open(os.path.join(daemon.dir, "log", "anomaly-detector.log"), errors="replace").read()
    assert "took over the volume baseline of source 'gamma'" in log
