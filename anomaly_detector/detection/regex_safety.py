"""Refuse user regular expressions that can backtrack catastrophically, before any line meets them.

A static analyser over Python's own parse tree (re._parser), used by config/checks.py (a refused
pattern is a config error with its line) and by tier1_rules.py when it compiles [rules] patterns.

Python's re backtracks: a pattern that can match the same text in many ways tries them all
before it gives up, and one crafted log line then holds a worker for minutes. What is refused:

- nested quantifier: a repetition inside a repeated group, where the inner one can give
  characters to what follows it in the same loop ('(a+)+', '(\\w+\\s?)+', '(.*a){12}'): the
  ways to split the text grow exponentially (or as n**k for a bound k);
- overlapping alternatives under a quantifier ('(a|a)*', '(a|ab)*', '(a|aa)+'): each
  iteration can take either branch;
- competing quantifiers: two unbounded repetitions in a row (possessive ones and those inside
  atomic groups included) where each one's iterations fit in the other's characters, with only
  characters the second could take between them, and something after them that can fail
  ('\\d+\\d+x', '.*.*x', '.*id=.*x'): O(n**3) per line for a search. The bound accepted is one
  such repetition per run, O(n**2) per line at worst ('a.*b', '^ERROR .* failed$'); two in a
  pattern anchored at its start ('^' without MULTILINE, '\\A'), which a search tries at one
  position only ('^(\\w+):\\s*(.*)$' is O(n**2) too); a lookaround's body counts as following the repetitions
  before it, since it is scanned again after each of their splits ('a.*(?=.*x)y', 'a(?=.*.*x)');
- backreferences ('(a+)\\1');
- a lookaround holding an unbounded quantifier where it is tried again and again: inside a
  repetition, or first in an unanchored pattern (it rescans the rest of the line from every
  position).

Character sets are compared by overlap (approximating Unicode classes), so the analyser errs on
the side of refusing; possessive quantifiers and atomic groups never give back, so they are exempt
from the nested and alternation checks (not from competing: they still rescan after every split).
"""
import re
import re._constants as C
import re._parser as P

MAX_CODE = 0x10FFFF
# A bounded repetition with a range wider than this counts as unbounded for competing quantifiers.
WIDE_RANGE = 64
_REPEATS = (C.MAX_REPEAT, C.MIN_REPEAT)
_BEGIN = (C.AT_BEGINNING, C.AT_BEGINNING_STRING)


class CharSet:
    """A set of code points as sorted, disjoint, inclusive (lo, hi) ranges."""

    __slots__ = ("ranges",)

    def __init__(self, ranges=()):
        merged = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ranges = tuple(merged)

    def __or__(self, other):
        return CharSet(self.ranges + other.ranges)

    def __bool__(self):
        return bool(self.ranges)

    def invert(self):
        gaps, start = [], 0
        for lo, hi in self.ranges:
            if lo > start:
                gaps.append((start, lo - 1))
            start = hi + 1
        if start <= MAX_CODE:
            gaps.append((start, MAX_CODE))
        return CharSet(gaps)

    def overlaps(self, other):
        i = j = 0
        a, b = self.ranges, other.ranges
        while i < len(a) and j < len(b):
            if a[i][1] < b[j][0]:
                i += 1
            elif b[j][1] < a[i][0]:
                j += 1
            else:
                return True
        return False

    def casefold(self):
        """Add the other ASCII case of every letter (IGNORECASE)."""
        extra = []
        for lo, hi in self.ranges:
            for base, shift in ((ord("a"), -32), (ord("A"), 32)):
                a, b = max(lo, base), min(hi, base + 25)
                if a <= b:
                    extra.append((a + shift, b + shift))
        return CharSet(self.ranges + tuple(extra))


EMPTY = CharSet()
ALL = CharSet([(0, MAX_CODE)])
_SPACE = CharSet([(9, 13), (28, 32), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
                  (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000)])
_DIGIT = CharSet([(48, 57), (0x660, 0x669), (0x6F0, 0x6F9), (0x966, 0x96F), (0xFF10, 0xFF19)])
# Unicode letters are approximated by every code point from U+00C0 that is not a space.
_WORD = CharSet([(48, 57), (65, 90), (95, 95), (97, 122), (0xAA, 0xAA), (0xB5, 0xB5), (0xBA, 0xBA)]) | (
    CharSet([(0xC0, MAX_CODE)]).invert() | _SPACE).invert()
_LINEBREAK = CharSet([(10, 13), (28, 30), (0x85, 0x85), (0x2028, 0x2029)])
_CATEGORIES = {"DIGIT": _DIGIT, "SPACE": _SPACE, "WORD": _WORD, "LINEBREAK": _LINEBREAK}


def _category(code):
    name = str(code).replace("CATEGORY_", "").replace("UNI_", "").replace("LOC_", "")
    negate = name.startswith("NOT_")
    found = _CATEGORIES[name[4:] if negate else name]
    return found.invert() if negate else found


def _class_set(items):
    """The characters of an IN node's items."""
    negate, parts = False, []
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            parts.append(CharSet([(av, av)]))
        elif op is C.RANGE:
            parts.append(CharSet([av]))
        elif op is C.CATEGORY:
            parts.append(_category(av))
    found = EMPTY
    for part in parts:
        found = found | part
    return found.invert() if negate else found


class Analysis:
    """Walks one parsed pattern; .reason is None when it is safe."""

    def __init__(self, pattern):
        self.pattern = pattern
        parsed = P.parse(pattern) if isinstance(pattern, str) else P.parse(pattern.decode("latin-1"))
        self.flags = parsed.state.flags
        self.tree = list(parsed)
        self.reason = None

    # ---- what an element can match -------------------------------------------------------------

    def atom(self, op, av, flags):
        """Characters of a one-character element, or None when the element is not one."""
        if op is C.LITERAL:
            found = CharSet([(av, av)])
        elif op is C.NOT_LITERAL:
            found = CharSet([(av, av)]).invert()
        elif op is C.ANY:
            found = ALL if flags & re.DOTALL else CharSet([(10, 10)]).invert()
        elif op is C.IN:
            found = _class_set(av)
        else:
            return None
        return found.casefold() if flags & re.IGNORECASE else found

    def first(self, seq, flags):
        """(characters a match of seq can start with, whether seq can match the empty string)."""
        found = EMPTY
        for op, av in seq:
            start, nullable = self.first_of(op, av, flags)
            found = found | start
            if not nullable:
                return found, False
        return found, True

    def first_of(self, op, av, flags):
        single = self.atom(op, av, flags)
        if single is not None:
            return single, False
        if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
            return EMPTY, True
        if op is C.SUBPATTERN:
            return self.first(av[3], _group_flags(flags, av))
        if op is C.ATOMIC_GROUP:
            return self.first(av, flags)
        if op is C.BRANCH:
            return self._union_first(av[1], flags)
        if op is C.GROUPREF_EXISTS:
            return self._union_first([av[1], av[2] or []], flags)
        if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
            start, nullable = self.first(av[2], flags)
            return start, nullable or av[0] == 0
        return ALL, True    # a backreference: any text, maybe empty

    def _union_first(self, alternatives, flags):
        found, nullable = EMPTY, False
        for alt in alternatives:
            start, empty = self.first(alt, flags)
            found, nullable = found | start, nullable or empty
        return found, nullable

    def chars(self, seq, flags):
        """Every character seq can consume anywhere (for competing quantifiers)."""
        found = EMPTY
        for op, av in seq:
            single = self.atom(op, av, flags)
            if single is not None:
                found = found | single
            elif op is C.SUBPATTERN:
                found = found | self.chars(av[3], _group_flags(flags, av))
            elif op is C.ATOMIC_GROUP:
                found = found | self.chars(av, flags)
            elif op is C.BRANCH:
                for alt in av[1]:
                    found = found | self.chars(alt, flags)
            elif op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                found = found | self.chars(av[2], flags)
            elif op in (C.GROUPREF, C.GROUPREF_EXISTS):
                found = ALL
        return found

    # ---- the checks ----------------------------------------------------------------------------

    def run(self):
        try:
            self.scan(self.tree, EMPTY, None, self.flags)
            self.competing(self.tree, self.flags, top=True)
            self.lookaround_at_start()
        except _Refused as refused:
            self.reason = str(refused)
        return self.reason

    def scan(self, seq, follow, loop, flags):
        """Walk seq right to left; `follow` is what may come next inside the innermost loop."""
        for op, av in reversed(seq):
            self.scan_one(op, av, follow, loop, flags)
            start, nullable = self.first_of(op, av, flags)
            follow = start | follow if nullable else start

    def scan_one(self, op, av, follow, loop, flags):
        if op is C.GROUPREF:
            raise _Refused("backreference '\\%d'" % av)
        if op in _REPEATS:
            self.scan_repeat(op, av, follow, loop, flags)
        elif op is C.SUBPATTERN:
            self.scan(av[3], follow, loop, _group_flags(flags, av))
        elif op is C.BRANCH:
            self.scan_branch(av[1], follow, loop, flags)
        elif op is C.GROUPREF_EXISTS:
            self.scan_branch([av[1], av[2] or []], follow, loop, flags)
        elif op in (C.ASSERT, C.ASSERT_NOT):
            if loop is not None and self.has_wide(av[1]):
                raise _Refused("lookaround with an unbounded quantifier inside a repetition '%s'"
                               % render([(op, av)]))
            self.scan(av[1], EMPTY, None, flags)
        elif op in (C.ATOMIC_GROUP, C.POSSESSIVE_REPEAT):
            # Never gives back what it matched: no split is retried, inside or around it.
            self.scan(av if op is C.ATOMIC_GROUP else av[2], EMPTY, None, flags)

    def scan_repeat(self, op, av, follow, loop, flags):
        low, high, body = av
        if loop is not None and high > low:
            start, _ = self.first(body, flags)
            if start.overlaps(follow):
                raise _Refused("nested quantifier '%s'" % render([loop]))
        if high > 1:
            start, _ = self.first(body, flags)
            inner_follow = start | follow if loop is not None else start
            self.scan(body, inner_follow, (op, av), flags)
        else:
            self.scan(body, follow, loop, flags)

    def scan_branch(self, alternatives, follow, loop, flags):
        if loop is not None and len(alternatives) > 1:
            if any(not alt for alt in alternatives):
                # The parser moves a prefix shared by every alternative out: '(a|ab)' is 'a(?:|b)'.
                raise _Refused("alternatives that share a prefix under a quantifier '%s'" % render([loop]))
            starts = []
            for alt in alternatives:
                start, nullable = self.first(alt, flags)
                starts.append(start | follow if nullable else start)
            for i, a in enumerate(starts):
                if any(a.overlaps(b) for b in starts[i + 1:]):
                    raise _Refused("alternatives that overlap under a quantifier '%s'" % render([loop]))
        for alt in alternatives:
            self.scan(alt, follow, loop, flags)

    def is_wide(self, op, av):
        # A possessive repetition gives nothing back, but it still rescans the line each time an
        # earlier repetition tries another split: it competes like the others.
        return (op in _REPEATS or op is C.POSSESSIVE_REPEAT) and (av[1] == C.MAXREPEAT or av[1] - av[0] > WIDE_RANGE)

    def has_wide(self, seq):
        for op, av in seq:
            if self.is_wide(op, av):
                return True
            if op is C.SUBPATTERN and self.has_wide(av[3]):
                return True
            if op is C.BRANCH and any(self.has_wide(alt) for alt in av[1]):
                return True
            if op in _REPEATS and self.has_wide(av[2]):
                return True
        return False

    def competing(self, seq, flags, top=False, outer=(0, None)):
        """Refuse two unbounded repetitions in a row that compete for the same characters (three in
        a pattern anchored at its start: it is tried at one position only, so two cost what one costs
        in a search, O(n**2)). `outer`: (depth, rendering) of the repetitions before a lookaround
        whose body this is: the body is scanned again after each of their splits."""
        allowed = (2 if top and self.anchored() else 1) - outer[0]
        runs = []           # open competitors: [characters, rendering, node, flags, characters since, depth]
        pending = None      # a contest found, counted once something after it can fail
        for op, av, f in _flatten(seq, flags):
            if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
                if pending:
                    raise _Refused(pending)     # an anchor or lookaround after them can fail
                if op is not C.AT and self.has_wide(av[1]):
                    # A lookaround never gives back, so only what follows in its body can fail in it.
                    self.competing(av[1], f, top=top, outer=self.before_lookaround(runs, av[1], f, outer))
                continue
            start, nullable = self.first_of(op, av, f)
            if pending and not nullable:
                raise _Refused(pending)
            wide = self.is_wide(op, av)
            taken = self.chars([(op, av)], f)
            depth = 0
            if wide:
                depth, message = self.contest(runs, (op, av), taken, f)
                if pending is None and depth > allowed:
                    pending = message or "quantifiers that compete for the same characters '%s' and '%s'" % (
                        outer[1], render([(op, av)]))
            if not nullable:
                # It takes at least one character: a run that cannot take it ends here.
                runs = [run for run in runs if start.overlaps(run[0])]
                for run in runs:
                    run[4].append(taken)
            if wide:
                runs.append([taken, render([(op, av)]), (op, av), f, [], depth])
            for inner in _bodies(op, av):
                self.competing(inner, f)
        if pending and not top:
            raise _Refused(pending)

    def before_lookaround(self, runs, body, flags, outer):
        """(depth, rendering) of the deepest open repetition whose every split re-runs the lookaround's
        scan over the same characters ('a.*(?=.*x)': O(n**3) for a search); else `outer`."""
        inner = self.chars(body, flags)
        best = outer
        for run in runs:
            if run[0].overlaps(inner) and all(inner.overlaps(b) for b in run[4]) and outer[0] + run[5] > best[0]:
                best = (outer[0] + run[5], run[1])
        return best

    def anchored(self):
        """Whether a search can only start at the beginning of the line (\\A, or ^ without MULTILINE)."""
        for op, av, flags in _flatten(self.tree, self.flags):
            if op is C.AT:
                return av is C.AT_BEGINNING_STRING or (av is C.AT_BEGINNING and not flags & re.MULTILINE)
            return False
        return False

    def contest(self, runs, node, chars, flags):
        """(how many repetitions in a row compete, ending with node; the message naming the last pair)."""
        depth, message = 1, None
        for run in runs:
            if self.contested(run, node, chars, flags) and all(chars.overlaps(b) for b in run[4]):
                if run[5] + 1 > depth:
                    depth = run[5] + 1
                    message = "quantifiers that compete for the same characters '%s' and '%s'" % (
                        run[1], render([node]))
        return depth, message

    def contested(self, earlier, node, chars, flags):
        """Whether text can be taken by either repetition: each one's iterations fit in the other's characters."""
        earlier_chars, _text, (_op, earlier_av), earlier_flags, _between, _depth = earlier
        return self.fits(earlier_av[2], chars, earlier_flags) and self.fits(node[1][2], earlier_chars, flags)

    def fits(self, seq, charset, flags):
        """Whether some match of seq could consist of characters in charset (approximately: each
        element it cannot skip shares a character with charset)."""
        for op, av in seq:
            single = self.atom(op, av, flags)
            if single is not None:
                if not single.overlaps(charset):
                    return False
            elif op is C.SUBPATTERN:
                if not self.fits(av[3], charset, _group_flags(flags, av)):
                    return False
            elif op is C.ATOMIC_GROUP:
                if not self.fits(av, charset, flags):
                    return False
            elif op is C.BRANCH:
                if not any(self.fits(alt, charset, flags) for alt in av[1]):
                    return False
            elif op in _REPEATS or op is C.POSSESSIVE_REPEAT:
                if av[0] > 0 and not self.fits(av[2], charset, flags):
                    return False
        return True

    def lookaround_at_start(self):
        for op, av in self.tree:
            if op is C.AT and av in _BEGIN:
                return
            if op in (C.ASSERT, C.ASSERT_NOT) and self.has_wide(av[1]):
                raise _Refused("lookaround with an unbounded quantifier at the start of an unanchored pattern '%s'"
                               % render([(op, av)]))
            if op is not C.AT:
                return


class _Refused(Exception):
    pass


def _group_flags(flags, av):
    return (flags | (av[1] or 0)) & ~(av[2] or 0)


def _flatten(seq, flags):
    """Elements of seq with plain (unrepeated) groups opened, each with its flags. Atomic groups
    are opened too: they keep their match, but are matched again after each earlier split."""
    for op, av in seq:
        if op is C.SUBPATTERN:
            yield from _flatten(av[3], _group_flags(flags, av))
        elif op is C.ATOMIC_GROUP:
            yield from _flatten(av, flags)
        else:
            yield op, av, flags


def _bodies(op, av):
    """Sequences inside op checked on their own (lookarounds and atomic groups never get here:
    competing() follows the first into their body, _flatten opens the second)."""
    if op is C.BRANCH:
        return av[1]
    if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
        return [av[2]]
    return []


def backtracking_risk(pattern):
    """None when the pattern is safe, else a short reason such as "nested quantifier '(a+)+'".

    The pattern must compile (check that first); str or bytes.
    """
    return Analysis(pattern).run()


_HINTS = {
    "nested": "rewrite it so the inner and the outer repetition cannot take the same characters, "
              "e.g. '(a+)+' -> 'a+', '(\\w+\\s?)+' -> '[\\w\\s]+', '(.*a){3}' -> '([^a]*a){3}'",
    "alternatives": "rewrite it so the alternatives start differently, e.g. '(a|ab)*' -> '(ab?)*', '(a|aa)+' -> 'a+'",
    "compete": "let one of them stop at what follows, e.g. '.*id=.*x' -> '.*id=\\S*x', '\\d+\\d+' -> '\\d{2,}', "
               "or drop a leading '.*' (a search finds the match anywhere in the line)",
    "backreference": "match the repeated text explicitly instead of with a backreference",
    "lookaround": "anchor the pattern or bound the quantifier, e.g. '(?=.*x)' -> '(?=.{0,64}x)'",
}


def refusal(pattern):
    """None when safe, else the one-line explanation with a rewrite hint (for config errors)."""
    reason = backtracking_risk(pattern)
    if reason is None:
        return None
    kind = next(k for k in ("nested", "alternatives", "compete", "backreference", "lookaround") if k in reason)
    return "pattern can backtrack catastrophically (%s): %s" % (reason, _HINTS[kind])


# ---- rendering a parse tree back to text (for messages) ---------------------------------------

def render(seq):
    """Pattern text of a parse tree, as the parser sees it ('(a|ab)' comes back as '(a(?:|b))')."""
    if len(seq) > 1:
        return "".join("(?:%s)" % _render_one(op, av) if op is C.BRANCH else _render_one(op, av) for op, av in seq)
    return "".join(_render_one(op, av) for op, av in seq)


def _render_char(code):
    ch = chr(code)
    return re.escape(ch) if ch.isprintable() else "\\x%02x" % code if code < 256 else "\\u%04x" % code


_CATEGORY_TEXT = {"DIGIT": "\\d", "NOT_DIGIT": "\\D", "SPACE": "\\s", "NOT_SPACE": "\\S", "WORD": "\\w",
                  "NOT_WORD": "\\W"}


def _render_class(items):
    if len(items) == 1 and items[0][0] is C.CATEGORY:
        return _render_category(items[0][1])
    text = ""
    for op, av in items:
        if op is C.NEGATE:
            text += "^"
        elif op is C.LITERAL:
            text += _render_char(av)
        elif op is C.RANGE:
            text += "%s-%s" % (_render_char(av[0]), _render_char(av[1]))
        elif op is C.CATEGORY:
            text += _render_category(av)
    return "[%s]" % text


def _render_category(code):
    name = str(code).replace("CATEGORY_", "").replace("UNI_", "").replace("LOC_", "")
    return _CATEGORY_TEXT.get(name, "\\?")


def _render_repeat(low, high):
    if (low, high) == (0, C.MAXREPEAT):
        return "*"
    if (low, high) == (1, C.MAXREPEAT):
        return "+"
    if (low, high) == (0, 1):
        return "?"
    if high == C.MAXREPEAT:
        return "{%d,}" % low
    return "{%d}" % low if low == high else "{%d,%d}" % (low, high)


def _render_one(op, av):
    if op is C.LITERAL:
        return _render_char(av)
    if op is C.NOT_LITERAL:
        return "[^%s]" % _render_char(av)
    if op is C.ANY:
        return "."
    if op is C.IN:
        return _render_class(av)
    if op is C.AT:
        return {C.AT_BEGINNING: "^", C.AT_END: "$", C.AT_BEGINNING_STRING: "\\A", C.AT_END_STRING: "\\Z",
                C.AT_BOUNDARY: "\\b", C.AT_NON_BOUNDARY: "\\B"}.get(av, "")
    if op is C.SUBPATTERN:
        return "(%s)" % render(av[3]) if av[0] else "(?:%s)" % render(av[3])
    if op is C.BRANCH:
        return "|".join(render(alt) for alt in av[1])
    if op in _REPEATS or op is C.POSSESSIVE_REPEAT:
        inner = render(av[2])
        if len(av[2]) != 1 or av[2][0][0] in (C.BRANCH,) or (av[2][0][0] is C.LITERAL and len(inner) > 1 and
                                                             not inner.startswith("\\")):
            inner = "(?:%s)" % inner
        suffix = "?" if op is C.MIN_REPEAT else "+" if op is C.POSSESSIVE_REPEAT else ""
        return inner + _render_repeat(av[0], av[1]) + suffix
    if op in (C.ASSERT, C.ASSERT_NOT):
        sign = "=" if op is C.ASSERT else "!"
        return "(?%s%s%s)" % ("<" if av[0] < 0 else "", sign, render(av[1]))
    if op is C.GROUPREF:
        return "\\%d" % av
    if op is C.ATOMIC_GROUP:
        return "(?>%s)" % render(av)
    return "..."
