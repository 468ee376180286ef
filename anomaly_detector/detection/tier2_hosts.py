"""Tier 2's count of each source's hosts: one replica of a service going silent while the others go on.

A syslog-style prefix names a line's host (parsing/sources.py, ParsedBatch.host_id) but the source is
the program, an operator's service: CRON of six hosts is one source, and one host's cron dying is a
dip of it, never a silence. HostCounts keeps a KeyBaseline and seasons per (source, host) pair,
closed with the same kernel as sources and templates (volume_kernels.close_base); tier2_volume.py
asks it for silences when a bucket closes and holds them like its other drops.
"""
import logging

import numpy as np

from .stats_kernels import count_lower_score

log = logging.getLogger(__name__)


class HostCounts:
    """Per (source, host) line counts, at most max_per_source hosts per source (0: not counted)."""

    def __init__(self, max_per_source, base, season):
        self.max_per_source = int(max_per_source)
        self.base = base            # tier2_volume.KeyBaseline, one row per (source, host)
        self.season = season        # tier2_volume.Seasonality, likewise
        self.pairs = []             # row -> [source id, host name]
        self._index = {}            # (source id, host name) -> row
        self._per_source = {}       # source id -> hosts kept
        self.dropped_lines = 0      # lines of hosts past max_per_source (counted for their source only), this run
        self._warned = False

    @property
    def size(self):
        return len(self.pairs)

    def rows_of(self, batch):
        """Row of each line of the batch (-1: no host, or a host past the bound), admitting new pairs."""
        host_id = getattr(batch, "host_id", None)
        if host_id is None or not batch.hosts or self.max_per_source <= 0:
            return None
        named = host_id >= 0
        if not named.any():
            return None
        code = batch.source_id.astype(np.int64) * (1 << 32) + np.where(named, host_id, 0)
        uniq, inverse = np.unique(np.where(named, code, -1), return_inverse=True)
        rows = np.full(uniq.size, -1, np.int64)
        for k, c in enumerate(uniq.tolist()):
            if c >= 0:
                rows[k] = self.row(c >> 32, batch.hosts[c & 0xFFFFFFFF])
        out = rows[inverse.reshape(-1)]
        refused = int((named & (out < 0)).sum())
        if refused:
            self._refuse(refused, batch, out, named)
        return out

    def row(self, sid, host):
        """The row of (source, host), admitted while the source has fewer than max_per_source; -1 if not."""
        key = (int(sid), host)
        row = self._index.get(key)
        if row is not None:
            return row
        if self._per_source.get(key[0], 0) >= self.max_per_source:
            return -1
        row = self._index[key] = len(self.pairs)
        self.pairs.append([key[0], host])
        self._per_source[key[0]] = self._per_source.get(key[0], 0) + 1
        self.base.ensure(row + 1)
        self.season.ensure(self.base.size)
        return row

    def _refuse(self, count, batch, rows, named):
        self.dropped_lines += count
        if not self._warned:
            self._warned = True
            i = int(np.flatnonzero(named & (rows < 0))[0])
            log.warning("source %s: lines name more than tier2.max_hosts_per_source = %d hosts; lines of new ones "
                        "(such as %r) count for the source only (anomaly_detector_source_hosts_dropped_lines_total)",
                        batch.sources[int(batch.source_id[i])] if int(batch.source_id[i]) < len(batch.sources)
                        else batch.source_id[i], self.max_per_source, batch.hosts[int(batch.host_id[i])])

    def add(self, rows, weights):
        """Count lines (rows: one per line, -1 skipped) into the open bucket."""
        ok = rows >= 0
        if ok.any():
            self.base.count(rows[ok], weights[ok])

    def silences(self, steady, source_obs, disp, min_score):
        """Rows silent over a drop window at min_score or more -> [(row, window index, score)].

        steady: bool per row (not intermittent, seen long enough); disp: the rows' dispersion; source_obs[row, k]: the lines of the
        row's source over window k. A host is silent only while its source is not: a source silent on
        every host is the source's own finding (tier2_volume._drop_finding), not one per host."""
        b = self.base
        found = []
        for row in np.flatnonzero(steady).tolist():
            best, at = 0.0, -1
            for k in range(b.obs_sum.shape[1]):
                if b.obs_sum[row, k] == 0 and source_obs[row, k] > 0:
                    s = count_lower_score(0.0, b.exp_sum[row, k], disp[row], b.rel2[row])
                    if s > best:
                        best, at = s, k
            if best >= min_score:
                found.append((row, at, best))
        return found

    def still_silent(self, row, windows, spread, min_score):
        """Whether a held host is still without lines, significantly, over one of the windows."""
        b = self.base
        disp, rel2 = spread
        return max((count_lower_score(0.0, b.exp_sum[row, k], disp, rel2) if b.obs_sum[row, k] == 0 else 0.0)
                   for k in windows) >= min_score

    def state(self):
        return {"max_per_source": self.max_per_source, "pairs": self.pairs, "base": self.base.state(),
                "season": self.season.state()}

    def load_state(self, state):
        """Restore state() (absent in snapshots of older releases: hosts are learned afresh)."""
        pairs = state.get("pairs", []) if isinstance(state, dict) else []
        if not pairs:
            return
        if not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], int) and isinstance(p[1], str)
                   for p in pairs):
            raise ValueError("t2 hosts: pairs are not [source id, host] pairs")
        self.base.load_state(state.get("base", {}))
        self.season.load_state(state.get("season", {}))
        if self.base.size < len(pairs) or self.season.hod.shape[0] < len(pairs):
            raise ValueError("t2 hosts: %d pairs but %d rows" % (len(pairs), self.base.size))
        self.pairs, self._index, self._per_source = [], {}, {}
        for sid, host in pairs:
            self._index[(sid, host)] = len(self.pairs)
            self.pairs.append([sid, host])
            self._per_source[sid] = self._per_source.get(sid, 0) + 1

