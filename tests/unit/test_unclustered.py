"""Free-text sources: lines that join no template are reported unclustered, not one template each."""
import numpy as np
import pytest

from anomaly_detector.parsing import miner_kernels as mk
from anomaly_detector.parsing import unclustered_kernels as uk
from anomaly_detector.parsing.miner import MATCH_TRIES, TemplateMiner, _best_rows, _token_hashes
from anomaly_detector.parsing.unclustered import UNCLUSTERED_TEXT, FreeTextGate

WORDS = b"the of and to in is you that it was for on are as with his they at be this have from or".split()


def chatter(rng, n):
    """Lines of 3-12 words, half common words, half random letters: free text."""
    out = []
    for _ in range(n):
        words = []
        for _ in range(int(rng.integers(3, 13))):
            if rng.random() < 0.5:
                words.append(WORDS[int(rng.integers(len(WORDS)))])
            else:
                words.append(bytes(rng.integers(97, 123, int(rng.integers(2, 10))).astype(np.uint8)))
        out.append(b" ".join(words))
    return out


def mine(miner, lines, sources=None):
    buf = b"".join(lines)
    ends = np.cumsum([len(x) for x in lines]).astype(np.int64)
    starts = ends - np.array([len(x) for x in lines], dtype=np.int64)
    got = miner.add_batch(np.frombuffer(buf, np.uint8), starts, ends,
                          None if sources is None else np.asarray(sources, np.int32))
    return got.template_id.tolist()


def texts(miner, ids):
    return [miner.template(t) for t in ids]


# ------------------------------------------------------------------ kernels against plain Python
def line_tokens_py(masked):
    """Twin of uk.line_tokens: bytes.split at SEP, bare value -> 1, rigid = ASCII letters/digits only."""
    if not masked:
        return [], []
    tokens = masked.split(bytes([mk.SEP]))
    hashes = _token_hashes(tokens, True).tolist()
    return hashes, [bool(t) and t.isalnum() and t.isascii() for t in tokens]


def could_join_py(line_tokens, templates):
    """Twin of uk.could_join over template token lists of the line's length."""
    hashes, rigid = line_tokens
    for tokens in templates:
        t_hash = _token_hashes(tokens, False).tolist()
        t_rigid = [bool(t) and t.isalnum() and t.isascii() for t in tokens]
        equal = sum(a == b for a, b in zip(t_hash, hashes))
        clash = any(a != b and ra and rb for a, b, ra, rb in zip(t_hash, hashes, t_rigid, rigid))
        if equal and not clash:
            return True
    return False


def _kernel_tokens(masked):
    buf = np.frombuffer(masked, np.uint8) if masked else np.zeros(0, np.uint8)
    hashes, rigid = np.zeros(64, np.uint64), np.zeros(64, np.bool_)
    k = uk.line_tokens(buf, len(masked), hashes, rigid)
    return hashes[:k].tolist(), rigid[:k].tolist()


@pytest.mark.parametrize("masked", [b"", b"a", b"Failed password for root", b"x  y", b" lead", b"trail ",
                                    b"user=\xff from \xff", b"\xff", b"caf\xc3\xa9 ok", b"a.b.c / -"])
def test_line_tokens_matches_python(masked):
    assert _kernel_tokens(masked) == line_tokens_py(masked)


def test_could_join_matches_python_on_random_templates():
    rng = np.random.default_rng(3)
    vocab = [b"open", b"close", b"user=\xff", b"\xff", b"a.b.c", b"x", b"port", b"ssh2", b"id-\xff"]
    for _ in range(300):
        ntok = int(rng.integers(1, 5))
        line = [vocab[int(rng.integers(len(vocab)))] for _ in range(ntok)]
        templates = [[vocab[int(rng.integers(len(vocab)))] for _ in range(ntok)] for _ in range(int(rng.integers(1, 4)))]
        flat = [t for tpl in templates for t in tpl]
        tt_hash = _token_hashes(flat, False)
        tt_rigid = np.array([t.isalnum() and t.isascii() for t in flat], np.bool_)
        first = np.arange(len(templates), dtype=np.int64) * ntok
        hashes, rigid = _kernel_tokens(b" ".join(line))
        got = uk.could_join(ntok, np.array(hashes, np.uint64), np.array(rigid, np.bool_),
                            np.arange(len(templates), dtype=np.int64), first, tt_hash, tt_rigid)
        assert got == could_join_py(line_tokens_py(b" ".join(line)), templates), (line, templates)


def test_best_rows_is_the_head_of_the_full_order():
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(0, 60))
        equal = rng.integers(0, 4, n).astype(np.int64)
        tids = rng.permutation(1000)[:n].astype(np.int32)
        full = [r for r in np.lexsort((tids, -equal)).tolist() if equal[r] > 0][:MATCH_TRIES]
        assert _best_rows(equal, tids).tolist() == full


# ------------------------------------------------------------------ the miner on free text
def test_free_text_is_reported_unclustered_with_bounded_templates():
    rng = np.random.default_rng(1)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    ids = mine(miner, chatter(rng, 5000))
    unclustered = texts(miner, ids).count(UNCLUSTERED_TEXT)
    assert unclustered >= 4800
    assert len(set(ids)) <= 110           # the lines before the first verdict, plus the unclustered one
    assert miner.stats.unclustered == unclustered
    assert miner.free_text_sources() == [0]


def test_a_message_that_comes_back_opens_a_real_template():
    rng = np.random.default_rng(2)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    mine(miner, chatter(rng, 1000))
    again = b"please restart the flux capacitor now"
    first, _, second, third = mine(miner, [again, b"zz qq ww", again, again])
    assert miner.template(first) == UNCLUSTERED_TEXT
    assert miner.template(second) == again.decode()
    assert third == second


def test_lines_of_a_free_text_source_still_join_the_templates_that_fit():
    rng = np.random.default_rng(4)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    first = mine(miner, [b"conn from 10.0.0.1 closed by peer"])[0]
    mine(miner, chatter(rng, 1000))
    assert miner.free_text_sources() == [0]
    # a new shape (a dotted name where the template holds a value) that widens the template
    again = mine(miner, [b"conn from db.example.com closed by peer"])[0]
    assert again == first
    assert miner.template(first) == "conn from <*> closed by peer"


def test_structured_sources_are_not_touched_by_a_free_text_neighbour():
    rng = np.random.default_rng(6)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    chat = chatter(rng, 2000)
    lines, sources = [], []
    for k, line in enumerate(chat):
        lines.append(line)
        sources.append(0)
        if k % 4 == 0:
            lines.append(b"GET /api/item/%d 200 %d ms" % (k, k % 50))
            sources.append(1)
    lines.append(b"kernel: oom killer invoked for pid 4242")   # a new message of the structured source
    sources.append(1)
    ids = mine(miner, lines, sources)
    got = texts(miner, ids)
    structured = [t for t, s in zip(got, sources) if s == 1]
    assert UNCLUSTERED_TEXT not in structured
    assert got[-1] == "kernel: oom killer invoked for pid <*>"
    assert miner.free_text_sources() == [0]


def test_batch_and_line_by_line_give_the_same_ids():
    rng = np.random.default_rng(7)
    lines = chatter(rng, 1500) + [b"retry %d of 5" % k for k in range(20)] + chatter(rng, 300)
    whole = TemplateMiner(free_text_window=100, free_text_share=0.5)
    single = TemplateMiner(free_text_window=100, free_text_share=0.5)
    batch_ids = mine(whole, lines)
    # batches of one judge windows after every line, a whole batch after all of it: same verdicts here
    # because the verdict is taken at once when a window's unmatched lines reach the share
    line_ids = [mine(single, [line])[0] for line in lines]
    assert texts(whole, batch_ids) == texts(single, line_ids)


def test_a_source_that_turns_structured_leaves_free_text():
    gate = FreeTextGate(window=100, share=0.5)
    src = np.zeros(100, np.int32)
    for _ in range(60):
        gate.unmatched_line(0)
    gate.count(src)
    assert gate.is_free(0)
    for _ in range(30):         # 30% of the next window: above half the share, still free text
        gate.unmatched_line(0)
    gate.count(src)
    assert gate.is_free(0)
    for _ in range(10):
        gate.unmatched_line(0)
    gate.count(src)
    assert not gate.is_free(0)


def test_the_unclustered_template_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(8)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    ids = mine(miner, chatter(rng, 1000))
    tid = ids[-1]
    assert miner.template(tid) == UNCLUSTERED_TEXT
    miner.save(str(tmp_path / "t.json"))
    back = TemplateMiner.load(str(tmp_path / "t.json"), free_text_window=200, free_text_share=0.5)
    assert back.template(tid) == UNCLUSTERED_TEXT
    # the reserved text is no template a line can join (source 1 is not free text: it opens one)
    literal = mine(back, [UNCLUSTERED_TEXT.encode()], [1])[0]
    assert literal != tid


def test_warm_up_runs_the_free_text_kernel():
    from anomaly_detector.parsing.unclustered import warm_kernels
    assert warm_kernels() > 0
    assert uk.free_text_run.signatures       # typed before any fork


def test_the_free_text_verdict_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(9)
    miner = TemplateMiner(free_text_window=200, free_text_share=0.5)
    mine(miner, chatter(rng, 600), [3] * 600)
    assert miner.free_text_sources() == [3]
    miner.save(str(tmp_path / "t.json"))
    back = TemplateMiner.load(str(tmp_path / "t.json"), free_text_window=200, free_text_share=0.5)
    assert back.free_text_sources() == [3]
    later = chatter(rng, 50)
    assert mine(back, later, [3] * 50) == mine(miner, later, [3] * 50)
