"""regex_safety refuses patterns that backtrack catastrophically and accepts ordinary log patterns."""
import re
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly_detector.config.loader import default_config
from anomaly_detector.detection.regex_safety import backtracking_risk, refusal

# Known-evil patterns (ReDoS corpora: OWASP, regexlib, the classic email validators) and the kind
# of reason each must get.
EVIL = [
    (r"(a+)+", "nested"),
    (r"^(a+)+$", "nested"),
    (r"(a*)*", "nested"),
    (r"(a|aa)+", "prefix"),
    (r"(a|a)*", "prefix"),
    (r"(a|ab)*", "prefix"),
    (r"(.*a){12}", "nested"),
    (r"(\w+\s?)+$", "nested"),
    (r"^(([a-z])+.)+[A-Z]([a-z])+$", "nested"),
    (r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$",
     "nested"),
    (r"^([a-zA-Z0-9_\.\-])+\@(([a-zA-Z0-9\-])+\.)+([a-zA-Z0-9]{2,4})+$", "nested"),
    (r"^[\w.+-]+@(?:[\w.-]+)+\.\w+$", "nested"),
    (r"(\d+)+x", "nested"),
    (r"(x+x+)+y", "nested"),
    (r"([a-z]+)*$", "nested"),
    (r"(.*,)*x", "nested"),
    (r"^(\s*\w+)+$", "nested"),
    (r"(a?a)+b", "nested"),
    (r"(foo|foobar)+", "prefix"),
    (r"(\d|\d\d)+x", "prefix"),
    (r"(ab|a)+c", "prefix"),
    (r"(x|\w+)+y", "overlap"),
    (r"\d+\d+x", "compete"),
    (r".*.*x", "compete"),
    (r".*.*.*=", "compete"),
    (r".*id=.*failed", "compete"),
    (r".*\d+ ms", "compete"),
    (r"x*?.\w*+\S{2}?xx(\d)", "compete"),   # found by fuzzing: a possessive repetition still rescans
    (r".*\w++=", "compete"),
    (r"^.*a.*a.*x", "compete"),             # anchored, but three in a row: O(n**3)
    (r"(?m)^.*.*x", "compete"),             # ^ matches after every newline: not anchored
    (r"a(?=.*.*x)", "compete"),             # a lookahead's body competes too: O(n**3) for a search
    (r"a.*(?=.*x)y", "compete"),            # rescanned after each split of the '.*' before it: O(n**3)
    (r"a(?=.*.*.*x)", "compete"),
    (r" *(?>\s*\S)", "compete"),
    (r"\w{2,}=*?x*\w1++ +", "compete"),   # found by fuzzing: a repetition that can be empty joins its neighbours          # found by fuzzing: an atomic group is matched again after each split
    (r"(a+)\1", "backreference"),
    (r"(?P<w>\w+) (?P=w)", "backreference"),
    (r"(?:(?=.*x)a)+", "lookaround"),
    (r"(?=.*error)", "lookaround"),
]

# Ordinary log patterns that must pass.
SAFE = [
    r"timeout after \d+ ms",
    r"^ERROR .* failed$",
    r"(GET|POST) /api/\S+",
    r"out of memory",
    r"(?i)\bfatal\b",
    r"user=\S+ action=\S+",
    r"(\d{1,3}\.){3}\d{1,3}",
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
    r"blk_-?\d+",
    r"ERROR.*timeout",
    r"connection (refused|reset)",
    r'"status":\s*5\d\d',
    r"latency=\d+(\.\d+)?ms",
    r'^\S+ \S+ \S+ \[[^\]]+\] "[A-Z]+ [^"]*" 5\d\d',
    r"(?:\s*,\s*\w+)*",
    r"[^=]*id=\S*x",
    r"\d{2,}",
    r"(ab?)*",
    r'Exception in thread ".*"',
    r"panic: .*",
    r"a++b",
    r"(?>a+)+b",
    r"disk (\w+) full",
    r"(\w|\d)+$",     # the parser makes the alternation one character class: [\w\d]+
    r"(?i)(A|a)+b",   # likewise [Aa]+
    r"^(?=.*error)",  # anchored: the lookahead runs once
    r"kernel: \[\s*\d+\.\d+\] Out of memory: Killed process \d+",
    r"(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}",
    # a repetition whose iterations need a character the next one cannot take does not compete:
    r"^[\w.+-]+@(?:[\w-]+\.)+\w+$",
    r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$",
    r'\[([^\s=\]"]{1,32})((?:\s+[^\s=\]"]{1,32}="(?:[^"\\]|\\.)*")*)\s*\]',
    # anchored at the start, a search tries one position: two competitors cost what one costs unanchored
    r"^(\w+):\s*(.*)$",
    r"^(.*?):(\d+):(.*)$",
    r"^.*ERROR.*$",
    r"\A\s*(\S+)\s*=\s*(.*)$",
    r"^(?=.*error)(?=.*disk)",   # 'holds both words': each lookahead scans the line once
    r"^.*(?=.*x)y",
]


@pytest.mark.parametrize("pattern,kind", EVIL, ids=[p for p, _ in EVIL])
def test_evil_patterns_are_refused_with_a_reason(pattern, kind):
    reason = backtracking_risk(pattern)
    assert reason is not None, "accepted %s" % pattern
    words = {"nested": "nested quantifier", "prefix": "share a prefix", "overlap": "overlap",
             "compete": "compete", "backreference": "backreference", "lookaround": "lookaround"}[kind]
    assert words in reason, reason
    assert refusal(pattern).startswith("pattern can backtrack catastrophically (%s): " % reason)


@pytest.mark.parametrize("pattern", SAFE)
def test_ordinary_log_patterns_pass(pattern):
    assert backtracking_risk(pattern) is None


def test_default_patterns_pass():
    cfg = default_config()
    for pattern in cfg["detection"]["tier4"]["session_patterns"]:
        assert backtracking_risk(pattern) is None, pattern


def test_reason_names_the_culprit():
    assert backtracking_risk(r"^(a+)+$") == "nested quantifier '(a+)+'"
    assert backtracking_risk(r"x(\w+\s?)+$") == "nested quantifier '(\\w+\\s?)+'"
    assert backtracking_risk(r"\d+\d+x") == "quantifiers that compete for the same characters '\\d+' and '\\d+'"
    assert backtracking_risk(r"(a|ab)*") == "alternatives that share a prefix under a quantifier '(a(?:|b))*'"


def test_trailing_competitors_cannot_fail_and_pass():
    # Nothing after them can fail, so the first split found is the match.
    assert backtracking_risk(r".*\d+") is None
    assert backtracking_risk(r"id=.*.*") is None
    assert backtracking_risk(r"id=.*.*$") is not None


def test_bytes_patterns_are_analysed_too():
    assert backtracking_risk(rb"(a+)+$") == "nested quantifier '(a+)+'"
    assert backtracking_risk(rb"timeout after \d+ ms") is None


def test_an_evil_pattern_really_is_slow():
    """The analyser's premise, measured once: 24 characters already cost far more than a safe pattern's 10 KB."""
    evil = re.compile(r"^(a+)+$")
    began = time.process_time()
    evil.search("a" * 24 + "!")
    assert time.process_time() - began > 0.05


def _alphabet(pattern):
    """Characters an adversary would pick for this pattern: its literals and one of each class."""
    literals = {c for c in pattern if c.isprintable() and c not in "\\^$()[]{}?*+|"}
    return sorted(literals | set("a1 =.\"-_:x"))


@st.composite
def pattern_and_line(draw):
    pattern = draw(st.sampled_from(SAFE))
    unit = draw(st.text(alphabet=_alphabet(pattern), min_size=1, max_size=12))
    tail = draw(st.sampled_from(["", "!", "\n", " ", "x"]))
    line = (unit * (10240 // len(unit) + 1))[:10240 - len(tail)] + tail
    return pattern, line


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern_and_line())
def test_accepted_patterns_search_a_10kb_adversarial_line_quickly(case):
    """Generous bound (the machine is shared): accepted patterns are at worst quadratic in the line."""
    pattern, line = case
    compiled = re.compile(pattern)
    began = time.process_time()
    compiled.search(line)
    assert time.process_time() - began < 3.0, (pattern, line[:40])


_TOKENS = ["a", "b", "\\d", "\\w", "\\s", "\\S", ".", "[a-z]", "[^x]", "(", ")", "(?:", "(?=", "(?!", "(?<=a)",
           "(?>", "|", "*", "+", "?", "*?", "++", "{2}", "{1,3}", "{2,}", "^", "$", "\\b", "\\1", "(?i)", "(?s:",
           "(?(1)a|b)", "\\Z", "x", "-", "="]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=14))
def test_any_compilable_pattern_gets_an_answer_not_an_exception(tokens):
    pattern = "".join(tokens)
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return
    reason = backtracking_risk(pattern)
    assert reason is None or isinstance(reason, str)
    if reason:
        assert refusal(pattern).startswith("pattern can backtrack catastrophically")


_FUZZ_TOKENS = ["a", "b", "1", " ", "=", "x", "-", "\\d", "\\w", "\\s", "\\S", ".", "[a-z]", "[^x]", "(", ")", "(?:",
                "(?=", "(?!", "(?>", "|", "*", "+", "?", "*?", "++", "{2}", "{1,3}", "{2,}", "{0,100}", "^", "$", "\\b"]
_FUZZ_UNITS = ["a", "1", " ", "a1", "a ", "ab", "=a", "x", "a-", "1 a", "ax", "aaaab"]


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_FUZZ_TOKENS), min_size=3, max_size=18))
def test_fuzz_accepted_patterns_stay_fast_on_adversarial_lines(tokens):
    """Random patterns the analyser accepts search 2 KB lines of repeated pattern characters in
    well under a second each (quadratic at worst); one that takes longer is a missed refusal."""
    pattern = "".join(tokens)
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        return
    if backtracking_risk(pattern):
        return
    def too_slow(*_args):
        raise AssertionError("accepted %r runs over 1 s on a 2 KB line" % pattern)

    previous = signal.signal(signal.SIGALRM, too_slow)    # re checks signals: a stall fails, not hangs
    try:
        for unit in _FUZZ_UNITS:
            for tail in ("", "!", "\n"):
                signal.setitimer(signal.ITIMER_REAL, 1.0)
                compiled.search(unit * (2000 // len(unit)) + tail)
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
