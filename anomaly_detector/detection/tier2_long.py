"""Tier 2's long drop windows of sources: a source of a line a minute cannot show a drop in 15 minutes.

tier2_volume.py judges drops over DROP_WINDOWS buckets (up to a quarter of an hour); a source of about
a line a minute down to a fifth of its lines expects 15 there and sees 3, which is not significant at
the tiers' scores. LongWindows keeps the sum of each source's lines and forecast over every block of
DROP_WINDOWS[-1] buckets (read from the source's own 15-bucket window when a block closes, so nothing
is counted twice), a ring of drop_long_seconds of blocks, and judges windows of 2, 4, 8 ... blocks.
"""
import numpy as np

from .stats_kernels import count_lower_score


class LongWindows:
    """Per source: lines and forecast per block of `block` buckets, over the last `blocks` blocks."""

    def __init__(self, blocks, size=8):
        self.blocks = int(blocks)
        self.obs = np.zeros((size, max(self.blocks, 1)))
        self.exp = np.zeros((size, max(self.blocks, 1)))
        self.filled = np.zeros(size, np.int64)     # blocks recorded since the source's ring was cleared
        self.pos = 0                               # ring slot the next block goes to (all sources alike)

    @property
    def widths(self):
        """Window widths judged, in blocks: 2, 4, 8, ... up to the ring (and the whole ring)."""
        out, w = [], 2
        while w < self.blocks:
            out.append(w)
            w *= 2
        return out + [self.blocks] if self.blocks >= 2 else []

    def ensure(self, n):
        if n <= self.obs.shape[0]:
            return
        new = max(n, 2 * self.obs.shape[0])
        for name in ("obs", "exp", "filled"):
            arr = getattr(self, name)
            grown = np.zeros((new,) + arr.shape[1:], arr.dtype)
            grown[: arr.shape[0]] = arr
            setattr(self, name, grown)

    def record(self, obs, exp):
        """A block closed: each source's lines and forecast over it (arrays of the sources' size)."""
        self.ensure(obs.shape[0])
        n = obs.shape[0]
        self.obs[:n, self.pos] = obs
        self.exp[:n, self.pos] = exp
        self.obs[n:, self.pos] = 0.0
        self.exp[n:, self.pos] = 0.0
        self.filled += 1
        self.pos = (self.pos + 1) % self.blocks

    def clear(self):
        """A gap not the sources' doing (tier2_volume._skip_gap): every window starts again."""
        self.filled[:] = 0

    def drops(self, judged, disp, rel2, min_score, block_buckets, min_rel2):
        """Sources low over a long window -> [(source, width in blocks, score, lines, forecast)], the best
        window of each. judged: bool per source (steady and old enough); disp, rel2: per source, learned
        per bucket (block_buckets to a block). The part of rel2 one bucket's sampling noise explains (up
        to disp / forecast per bucket: most of it for a sparse source) averages out over the window, as
        in tier2_volume._window_scores; what is left, at least min_rel2, is the forecast's own error."""
        found = []
        for src in np.flatnonzero(judged[: self.obs.shape[0]]).tolist():
            best = None
            for width in self.widths:
                if self.filled[src] < width:
                    break
                slots = (self.pos - 1 - np.arange(width)) % self.blocks
                obs, exp = float(self.obs[src, slots].sum()), float(self.exp[src, slots].sum())
                buckets = width * block_buckets
                noise = min(rel2[src], disp[src] / max(exp / buckets, 1e-3))
                spread = max(rel2[src] - noise + noise / buckets, min_rel2)
                score = count_lower_score(obs, exp, disp[src], spread) if exp > 0 else 0.0
                if score >= min_score and (best is None or score > best[2]):
                    best = (src, width, score, obs, exp)
            if best is not None:
                found.append(best)
        return found

    def state(self):
        return {"blocks": self.blocks, "obs": self.obs.tolist(), "exp": self.exp.tolist(),
                "filled": self.filled.tolist(), "pos": self.pos}

    def load_state(self, state):
        """Restore state(); absent (older snapshots) or saved with another ring length: start empty."""
        if not isinstance(state, dict) or state.get("blocks") != self.blocks:
            return
        obs = np.asarray(state["obs"], float).reshape(-1, self.blocks)
        exp = np.asarray(state["exp"], float).reshape(-1, self.blocks)
        filled = np.asarray(state["filled"], np.int64).reshape(-1)
        if not obs.shape[0] == exp.shape[0] == filled.shape[0] or not 0 <= int(state["pos"]) < self.blocks:
            raise ValueError("t2 long windows: rows or ring position do not match")
        self.obs, self.exp, self.filled, self.pos = obs, exp, filled, int(state["pos"])
