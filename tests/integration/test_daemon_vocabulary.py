"""One template vocabulary per deployment, on a live daemon: two workers fed the same lines (two files,
one on each ring) write the same template ids in their scored lines, and a restart keeps them."""
import json
import os

import pytest

from tests.integration.daemon_harness import Daemon, wait_for

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank"]
JOBS = ["backup", "reindex", "vacuum"]


B = 100000   # file b's lines are file a's, numbered seq=B+<n>


def lines(first, count, base=0):
    """count lines of a few events (logins merge into one template once enough users are seen; jobs
    stay three templates), each marked seq=<base + n>; lines n and n + 400 have the same templates."""
    out = []
    for i in range(first, first + count):
        ts = "2026-03-02T10:%02d:%02d.%03dZ" % (i // 60000 % 60, i // 1000 % 60, i % 1000)
        kind = i % 4
        if kind == 0:
            text = "INFO user %s logged in from 10.0.%d.%d" % (USERS[i // 4 % len(USERS)], i % 7, i % 250)
        elif kind == 1:
            text = "INFO GET /item/%d 200 %dms" % (i % 97, 20 + i % 13)
        elif kind == 2:
            text = "WARN disk /dev/sda%d is %d%% full" % (i % 4, 50 + i % 40)
        else:
            text = "INFO job %s finished in %d ms" % (JOBS[i % 400 // 4 % 3], 100 + i % 50)
        out.append("%s %s seq=%d\n" % (ts, text, base + i))
    return out


def ids_by_seq(daemon):
    """({seq: template_id} of file a's scored lines, the same of file b's)."""
    a, b = {}, {}
    if not os.path.exists(daemon.scored):
        return a, b
    with open(daemon.scored) as f:
        for raw in f:
            record = json.loads(raw)
            seq = int(record["message"].rsplit("seq=", 1)[1])
            (b if seq >= B else a)[seq % B] = record["template_id"]
    return a, b


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, workers=2, batch_size=200,
               inputs="[[app]]\ntype = file\npath = %s/app-*.log\nstart_at = beginning\n" % os.path.join(tmp_path, "logs"))
    yield d
    d.kill()


def _feed(daemon, first, count, files=("a", "b")):
    for name in files:
        with open(os.path.join(daemon.logs, "app-%s.log" % name), "a") as f:
            f.writelines(lines(first, count, B if name == "b" else 0))
    wait_for(lambda: all(len(ids) >= first + count for ids, name in zip(ids_by_seq(daemon), "ab") if name in files),
             180, daemon, "%d lines of each file scored" % (first + count))


def test_two_workers_and_a_restart_share_template_ids(daemon):
    daemon.start()
    _feed(daemon, 0, 400, "a")
    with open(os.path.join(daemon.logs, "app-b.log"), "w") as f:    # file b first has events a has not
        f.writelines("2026-03-02T09:59:00.000Z ERROR queue %s overflow seq=%d\n" % (q, B + 90000 + k)
                     for k, q in enumerate(["mail", "sms", "push"]))
    _feed(daemon, 0, 400, "b")      # file b arrives later: the other ring
    _feed(daemon, 400, 400)
    per_worker = daemon.labelled("worker_lines_processed_total")
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    a, b = ids_by_seq(daemon)
    assert len(a) == len(b) - 3 == 800
    # Worker 1 met these lines after worker 0 had mined (and merged) them: every id is worker 0's.
    assert [b[s] for s in range(400, 800)] == [a[s] for s in range(400, 800)]
    assert [b[s] for s in range(400)] == [a[s] for s in range(400, 800)]    # as merged in worker 0
    assert [b[s] for s in range(40, 400)] == [a[s] for s in range(40, 400)]    # (a's first logins: before)
    before = [a[s] for s in range(400, 800)]
    assert len(set(before)) >= 4

    assert daemon.stop() == 0
    daemon.start()
    _feed(daemon, 800, 400)
    a, b = ids_by_seq(daemon)
    assert [a[s] for s in range(800, 1200)] == before
    assert [b[s] for s in range(800, 1200)] == before
    vocabulary = os.path.join(daemon.dir, "state", "baselines", "vocabulary.jsonl")
    entries = [json.loads(row) for row in open(vocabulary)]
    assert {e[0] for e in entries} >= set(before)
    wait_for(lambda: daemon.metric("vocabulary_entries") == len(entries), 30, daemon, "vocabulary_entries")
    assert daemon.metric("vocabulary_limit_entries") == 200000
    assert daemon.labelled("vocabulary_refused_total") == {(("reason", "new_template"),): 0.0,
                                                           (("reason", "widened_text"),): 0.0,
                                                           (("reason", "unavailable"),): 0.0}
