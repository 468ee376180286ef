"""The deployment's template vocabulary (parsing/vocabulary.py) and miners that share it."""
import json
import multiprocessing
import os

from anomaly_detector.parsing.miner import TemplateMiner, render_tokens
from anomaly_detector.parsing.vocabulary import Vocabulary

TEXTS = [("service %d started on port <*>" % i).encode() for i in range(40)]


def _tokens(text):
    return text.split(b" ")


def _assign_all(path, order, out):
    v = Vocabulary(path, 1000)
    got = {text.decode(): v.assign(_tokens(text)) for text in order}
    v.close()
    out.put(got)


def test_concurrent_processes_get_one_id_per_text(tmp_path):
    path = str(tmp_path / "vocabulary.jsonl")
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    orders = [TEXTS, TEXTS[::-1], TEXTS[10:] + TEXTS[:10], TEXTS[::2] + TEXTS[1::2]]
    procs = [ctx.Process(target=_assign_all, args=(path, order, out)) for order in orders]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(r == results[0] for r in results)
    assert sorted(results[0].values()) == list(range(len(TEXTS)))   # dense, each given once
    with open(path) as f:
        assert len(f.readlines()) == len(TEXTS)


def test_restart_keeps_ids_and_widened_texts(tmp_path):
    path = str(tmp_path / "vocabulary.jsonl")
    v = Vocabulary(path, 100)
    a, b = v.assign([b"user", b"alice", b"logged", b"in"]), v.assign([b"disk", b"full"])
    assert v.note_widened([b"user", b"\x00", b"logged", b"in"], a)
    assert not v.note_widened([b"disk", b"full"], a)     # a registered text keeps its first id
    v.close()
    again = Vocabulary(path, 100)
    assert again.lookup([b"user", b"alice", b"logged", b"in"]) == a
    assert again.lookup([b"user", b"\x00", b"logged", b"in"]) == a
    assert again.lookup([b"disk", b"full"]) == b
    assert again.assign([b"new", b"one"]) == 2
    assert dict(again.take_new())[a] == (b"user", b"\x00", b"logged", b"in")   # the id's latest text


def test_limit_refuses_new_texts_and_counts(tmp_path):
    v = Vocabulary(str(tmp_path / "v.jsonl"), 10)
    ids = [v.assign([b"t%d" % i]) for i in range(12)]
    assert ids[:10] == list(range(10)) and ids[10:] == [None, None]
    assert v.refused_new == 2
    assert not v.note_widened([b"wider"], 0) and v.refused_widened == 1
    assert v.assign([b"t3"]) == 3    # known texts still resolve
    assert len(Vocabulary(str(tmp_path / "v.jsonl"), 10)) == 10


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    path = str(tmp_path / "v.jsonl")
    v = Vocabulary(path, 100)
    v.assign([b"first"])
    v.close()
    with open(path, "ab") as f:
        f.write(b'[1, ["half')          # a writer killed mid-append
    w = Vocabulary(path, 100)
    assert len(w) == 1
    assert w.assign([b"second"]) == 1
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    assert [r[0] for r in rows] == [0, 1] and rows[1][2] == "second"


def test_taken_id_gets_a_reserved_one(tmp_path):
    v = Vocabulary(str(tmp_path / "v.jsonl"), 100)
    a = v.assign([b"x"])
    b = v.assign([b"x"], taken={a})
    assert b != a and v.lookup([b"x"]) == a
    assert v.assign([b"y"]) not in (a, b)


LINES_A = ["user %s logged in from 10.0.0.%d" % (u, i) for i, u in enumerate(["alice", "bob", "carol", "dave",
                                                                              "erin", "frank", "gina"] * 3)]
LINES_B = ["disk /dev/sda%d is %d%% full" % (i, 50 + i) for i in range(5)] + ["cache hit ratio %d" % i for i in range(5)]


def _ids(miner, lines):
    return [miner.add_line(line)[0] for line in lines]


def test_two_miners_sharing_a_vocabulary_agree(tmp_path):
    path = str(tmp_path / "v.jsonl")
    m0 = TemplateMiner(vocabulary=Vocabulary(path, 1000, render=render_tokens))
    m1 = TemplateMiner(vocabulary=Vocabulary(path, 1000, render=render_tokens))
    ids0 = _ids(m0, LINES_B + LINES_A)
    ids1 = _ids(m1, LINES_A[:3] + LINES_B)
    # m1 saw other lines first; every template still has m0's ids
    assert ids1[3:] == ids0[:len(LINES_B)]
    assert len(set(ids0)) < len(ids0)


def test_a_miner_adopts_what_others_mined(tmp_path):
    """Worker 0 mined the users' logins and merged them into one template; worker 1 (a new one after a
    reload) adopts it and gives a user it never saw worker 0's id."""
    path = str(tmp_path / "v.jsonl")
    m0 = TemplateMiner(vocabulary=Vocabulary(path, 1000, render=render_tokens))
    ids0 = _ids(m0, LINES_A)
    merged = ids0[-1]
    assert "<*>" in m0.template(merged).split(" ")[1]
    v1 = Vocabulary(path, 1000, render=render_tokens)
    m1 = TemplateMiner(vocabulary=v1)
    assert m1.adopt(v1.take_new()) >= 1
    assert m1.add_line("user zoe logged in from 10.0.0.99")[0] == merged


def test_restart_gives_the_same_ids(tmp_path):
    path = str(tmp_path / "v.jsonl")
    m0 = TemplateMiner(vocabulary=Vocabulary(path, 1000, render=render_tokens))
    before = _ids(m0, LINES_B + LINES_A)
    m0.save(str(tmp_path / "templates.json"))
    m0.vocabulary.close()
    again = TemplateMiner.load(str(tmp_path / "templates.json"),
                               vocabulary=Vocabulary(path, 1000, render=render_tokens))
    assert _ids(again, LINES_B + LINES_A) == [m0.current_id(t) for t in before]


def test_full_vocabulary_reports_new_templates_unclustered(tmp_path):
    v = Vocabulary(str(tmp_path / "v.jsonl"), 12, render=render_tokens)
    v.assign([b"<unclustered>"])
    m = TemplateMiner(vocabulary=v)
    ids = _ids(m, [" ".join(["alpha"] * k) for k in range(1, 40)])
    assert len(v) == 12
    assert m.template(ids[-1]) == "<unclustered>"
    assert v.refused_new > 0 and m.stats.unclustered > 0


def test_without_a_vocabulary_ids_are_the_miners_own(tmp_path):
    m = TemplateMiner()
    assert _ids(m, ["a b c", "d e f g"]) == [0, 1]
    assert not os.listdir(tmp_path)


def test_models_saved_with_their_own_ids_get_no_id_twice(tmp_path):
    """A miner saved by a release without the vocabulary numbered its templates itself; loaded with a
    vocabulary whose ids name other texts, a new template gets an id above all of its own."""
    own = TemplateMiner()
    words = [" ".join(["alpha"] * k) for k in range(1, 13)]
    local = _ids(own, words)
    assert local == list(range(12))
    own.save(str(tmp_path / "templates.json"))
    path = str(tmp_path / "v.jsonl")
    other = TemplateMiner(vocabulary=Vocabulary(path, 1000, render=render_tokens))
    assert _ids(other, ["job alpha done", "job beta done"]) == [0, 1]
    loaded = TemplateMiner.load(str(tmp_path / "templates.json"), vocabulary=Vocabulary(path, 1000, render=render_tokens))
    new = _ids(loaded, ["job alpha done", "queue full again now"])   # vocabulary ids 0 and 2: its own here
    assert new == [12, 13]
    assert _ids(loaded, words) == local
