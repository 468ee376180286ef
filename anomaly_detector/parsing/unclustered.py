"""Which sources are free text: lines that mostly join no template are reported unclustered, not one template each.

Used by miner.TemplateMiner (and its kernel unclustered_kernels.free_text_run). User-typed messages,
SQL with literals or stack traces with generated names rarely share a template: mined as usual,
each would open a template of its own, so ids, memory and the cost of matching the next line
would grow without end. Per source the gate counts, over windows of `window` of its lines, those
that joined no live or archived template. A source is judged free text as soon as `share` of a
window's lines joined none, and stays so until a window has fewer than half that share.
A free-text source's lines still join the templates that fit them; a line that fits none is
reported under the one reserved template UNCLUSTERED_TEXT, unless its shape (its masked form)
was reported so recently: a message that comes back opens a real template as in any other source.
"""
import numpy as np

UNCLUSTERED_TEXT = "<unclustered>"
SEEN_SLOTS = 1 << 16     # recent unclustered shapes (direct-mapped: a collision forgets the older one)


class FreeTextGate:
    """Per-source windows of lines and unmatched lines, and the free-text verdict they give."""

    def __init__(self, window=1000, share=0.5):
        if window < 1 or not 0.0 < share <= 1.0:
            raise ValueError("free-text window must be >= 1 and share within (0, 1]")
        self.window = int(window)
        self.share = float(share)
        self.lines = np.zeros(8, np.int64)
        self.unmatched = np.zeros(8, np.int64)
        self.free = np.zeros(8, np.bool_)
        self.seen = np.zeros(SEEN_SLOTS, np.uint64)

    def fit(self, sources):
        """Grow the per-source arrays to hold every id in sources."""
        need = int(sources.max()) + 1 if len(sources) else 0
        if need > len(self.free):
            size = max(need, 2 * len(self.free))
            for name in ("lines", "unmatched", "free"):
                old = getattr(self, name)
                grown = np.zeros(size, old.dtype)
                grown[:len(old)] = old
                setattr(self, name, grown)

    def any_free(self):
        return bool(self.free.any())

    def is_free(self, source):
        return bool(self.free[source])

    def seen_before(self, shape):
        """True when shape was reported unclustered recently; remembers it otherwise."""
        at = shape & (SEEN_SLOTS - 1)
        if self.seen[at] == np.uint64(shape):
            return True
        self.seen[at] = np.uint64(shape)
        return False

    def unmatched_line(self, source):
        """A line of source joined no template; a source past share of a window turns free text at once."""
        self.unmatched[source] += 1
        if not self.free[source] and self.unmatched[source] >= self.share * self.window:
            self.free[source] = True

    def count(self, sources):
        """Count a mined batch's lines per source and judge the sources whose window is full."""
        if not len(sources):
            return
        self.lines += np.bincount(sources, minlength=len(self.lines))   # fit() made room for every id
        full = self.lines >= self.window
        if full.any():
            ratio = self.unmatched[full] / self.lines[full]
            self.free[full] = np.where(self.free[full], ratio >= self.share / 2, ratio >= self.share)
            self.lines[full] = 0
            self.unmatched[full] = 0

    def free_sources(self):
        """Ids of the sources judged free text now."""
        return np.flatnonzero(self.free).tolist()

    def restore(self, sources):
        """Judge these source ids free text again (the verdicts a saved miner held; the windows under
        way and the recent shapes start afresh)."""
        ids = np.array([int(s) for s in sources if int(s) >= 0], np.int32)
        self.fit(ids)
        self.free[ids] = True


def warm_kernels():
    """Type the free-text kernel through the miner's own call (warm-up before fork: a worker meets it only
    when a source turns free text, whatever the configured window)."""
    from anomaly_detector.parsing.miner import TemplateMiner  # the miner imports this module
    rng = np.random.default_rng(0)
    words = [bytes(rng.integers(97, 123, 6).astype(np.uint8)) for _ in range(400)]
    lines = [b" ".join(words[k:k + 4]) for k in range(0, 400, 4)]
    lengths = np.array([len(line) for line in lines], np.int64)
    ends = np.cumsum(lengths)
    miner = TemplateMiner(free_text_window=50)
    miner.add_batch(np.frombuffer(b"".join(lines), np.uint8), ends - lengths, ends, np.zeros(len(lines), np.int32))
    return miner.stats.unclustered
