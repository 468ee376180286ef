"""The template vocabulary shared through Redis ([parsing] vocabulary_url) with a real redis-server:
atomic ids across processes, kept across reconnects, bounded, and refused (not lost: reported under
<unclustered>) while Redis is away; two daemon instances give the same lines the same template ids."""
import json
import multiprocessing
import os

import pytest

from anomaly_detector.parsing import vocabulary as V
from anomaly_detector.parsing.miner import TemplateMiner, render_tokens
from tests.integration.daemon_harness import Daemon, wait_for
from tests.integration.redis_harness import RedisServer
from tests.integration.test_daemon_vocabulary import B, ids_by_seq, lines

TEXTS = [("service %d started on port <*>" % i).encode().split(b" ") for i in range(30)]
FIRST = [b"<unclustered>"]


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path / "redis").start()
    yield s
    s.stop()


def _open(url, limit=1000):
    return V.RedisVocabulary(url, "test:vocabulary", limit, render=render_tokens, first=FIRST)


def _assign_all(url, order, out):
    v = _open(url)
    out.put({b" ".join(t).decode(): v.assign(t) for t in order})
    v.close()


def test_processes_sharing_redis_get_one_id_per_text(server):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    orders = [TEXTS, TEXTS[::-1], TEXTS[7:] + TEXTS[:7]]
    procs = [ctx.Process(target=_assign_all, args=(server.url, order, out)) for order in orders]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert results[0] == results[1] == results[2]
    assert sorted(results[0].values()) == list(range(1, len(TEXTS) + 1))    # id 0 is the reserved template
    again = _open(server.url)
    assert again.lookup(FIRST) == 0 and again.lookup(TEXTS[5]) == results[0][b" ".join(TEXTS[5]).decode()]
    assert server.client().llen("test:vocabulary:entries") == len(TEXTS) + 1


def test_widened_texts_limit_and_an_absent_redis(server):
    v = _open(server.url, limit=5)
    a = v.assign([b"user", b"alice", b"in"])
    assert v.note_widened([b"user", b"\x00", b"in"], a) and not v.note_widened([b"user", b"\x00", b"in"], a)
    other = _open(server.url, limit=5)
    assert dict(other.take_new())[a] == (b"user", b"\x00", b"in")
    assert [v.assign([b"t%d" % i]) for i in range(4)] == [2, 3, None, None] and v.refused_new == 2
    server.stop()
    gone = _open(server.url)
    assert gone.assign([b"anything"]) is None and gone.refused_unavailable == 1
    miner = TemplateMiner(vocabulary=gone)       # its lines are kept, under the reserved template (id 0)
    tid, _ = miner.add_line("a line no one has seen")
    assert tid == 0 and miner.template(tid) == "<unclustered>"


def _daemon(tmp_path, name, url):
    return Daemon(tmp_path / name, workers=1, batch_size=200,
                  extra="[parsing]\nvocabulary_url = %s\nvocabulary_key = it:vocabulary\n" % url,
                  inputs="[[app]]\ntype = file\npath = %s/app-*.log\nstart_at = beginning\n"
                  % (tmp_path / name / "logs"))


def _feed(daemon, name, text, count):
    with open(os.path.join(daemon.logs, name), "a") as f:
        f.writelines(text)
    wait_for(lambda: sum(len(ids) for ids in ids_by_seq(daemon)) >= count, 180, daemon, "%d lines scored" % count)


def test_two_instances_agree_through_redis(tmp_path, server):
    one, two = _daemon(tmp_path, "one", server.url), _daemon(tmp_path, "two", server.url)
    try:
        one.start()
        _feed(one, "app-a.log", lines(0, 400), 400)
        two.start()
        _feed(two, "app-b.log", ["2026-03-02T09:59:00.000Z ERROR queue %s overflow seq=%d\n" % (q, B + 90000 + k)
                                 for k, q in enumerate(["mail", "sms", "push"])], 3)
        _feed(two, "app-b.log", lines(0, 400, B), 403)
        a, _ = ids_by_seq(one)
        _, b = ids_by_seq(two)
        assert [b[s] for s in range(40, 400)] == [a[s] for s in range(40, 400)]
        assert len({b[s] for s in range(400)}) >= 4
        assert {b[90000 + k] for k in range(3)}.isdisjoint(set(a.values()))   # two's own event: new ids
        entries = [json.loads(e) for e in server.client().lrange("it:vocabulary:entries", 0, -1)]
        assert entries[0][2] == "<unclustered>" and {e[0] for e in entries} >= set(a.values())
        assert not os.path.exists(os.path.join(one.dir, "state", "baselines", "vocabulary.jsonl"))
    finally:
        one.kill()
        two.kill()
