"""numba kernel of the free-text path: resolve a run of lines without Python while none could join a template.

Used by miner.TemplateMiner.add_batch when some source is judged free text (see unclustered.py). It
does what miner_kernels.assign_slots does for shape-cache hits and, for a miss from a free-text
source that no live template could take and whose shape was not seen before, reports the line
under the unclustered template. Everything else stops the run and goes to the miner's Python path.
Plain-Python twin: line_tokens_py / could_join_py in tests/unit/test_unclustered.py.
"""
import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt
from anomaly_detector.parsing.miner_kernels import MARK, SEP, _fnv, _is_alnum, mask_line, table_find

LINE_BARE_HASH = np.uint64(1)   # a bare value on the line side: equal to no template token


@njit(cache=True)
def line_tokens(masked, m, hashes, rigid):
    """Split masked[:m] at SEP like bytes.split: token hashes (a bare value hashes to 1) and whether each
    token is rigid (non-empty, ASCII letters and digits only). Returns the token count; tokens past
    len(hashes) are counted but not hashed."""
    if m == 0:
        return 0
    k = 0
    a = 0
    for i in range(m + 1):
        if i == m or masked[i] == SEP:
            if k < hashes.shape[0]:
                if i - a == 1 and masked[a] == MARK:
                    hashes[k] = LINE_BARE_HASH
                else:
                    hashes[k] = _fnv(masked, a, i)
                r = i > a
                for j in range(a, i):
                    if not _is_alnum(masked[j]):
                        r = False
                        break
                rigid[k] = r
            k += 1
            a = i + 1
    return k


@njit(cache=True)
def could_join(ntok, hashes, rigid, slots, tpl_first, tt_hash, tt_rigid):
    """True when one of the templates `slots` (all with ntok tokens) might take the line: some token is
    equal and no position holds two different rigid tokens (two different plain words never join)."""
    for s in slots:
        first = tpl_first[s]
        equal = 0
        clash = False
        for j in range(ntok):
            if tt_hash[first + j] == hashes[j]:
                equal += 1
            elif tt_rigid[first + j] and rigid[j]:
                clash = True
                break
        if equal > 0 and not clash:
            return True
    return False


@kt.entry((kt.types.Tuple((kt.BYTES, kt.I64_1D, kt.I64_1D, kt.U8_1D, kt.U64_1D, kt.I32_1D)), kt.INT64, kt.INT64,
           kt.types.Tuple((kt.U64_1D, kt.I32_1D, kt.I64_1D, kt.I64_1D)),
           kt.types.Tuple((kt.I64_1D, kt.I64_1D, kt.I64_1D, kt.U64_1D, kt.BOOL_1D)),
           kt.types.Tuple((kt.BOOL_1D, kt.U64_1D, kt.I64_1D)), kt.INT64, kt.INT64, kt.I32_1D), cache=True)
def free_text_run(lines, flags, first, table, live, gate, unclustered, clock, out):
    """From line `first` on: cache hits take their slot; a miss of a free-text source that no live template
    could take and whose shape is not in `seen` (a direct-mapped set of recent unclustered shapes) takes
    the `unclustered` slot, its shape is remembered and its source's unmatched count grows. Stops at any
    other miss. Returns (index of the line Python must resolve or n, lines made unclustered).

    lines = (buf, starts, ends, force, shapes, sources): the batch; table = (keys, vals, counts,
    last_seen): the shape cache and per-slot counters; live = (live_ptr, live_slots, tpl_first, tt_hash,
    tt_rigid): live slots by token count and their token hashes; gate = (free, seen, unmatched)."""
    buf, starts, ends, force, shapes, sources = lines
    keys, vals, counts, last_seen = table
    live_ptr, live_slots, tpl_first, tt_hash, tt_rigid = live
    free, seen, unmatched = gate
    n = shapes.shape[0]
    width = live_ptr.shape[0] - 2
    hashes = np.empty(max(width, 1), np.uint64)
    rigid = np.empty(max(width, 1), np.bool_)
    scratch = np.empty(256, np.uint8)   # grown for a longer miss: a cache hit never needs it
    mask = np.uint64(seen.shape[0] - 1)
    made = 0
    for k in range(first, n):
        slot = table_find(keys, vals, shapes[k])
        if slot < 0:
            src = sources[k]
            if not free[src] or seen[np.int64(shapes[k] & mask)] == shapes[k]:
                return k, made
            if ends[k] - starts[k] + 1 > scratch.shape[0]:
                scratch = np.empty(ends[k] - starts[k] + 1, np.uint8)
            m = mask_line(buf, starts[k], ends[k], flags, force, scratch)
            ntok = line_tokens(scratch, m, hashes, rigid)
            if ntok <= width and could_join(ntok, hashes, rigid, live_slots[live_ptr[ntok]:live_ptr[ntok + 1]],
                                            tpl_first, tt_hash, tt_rigid):
                return k, made
            seen[np.int64(shapes[k] & mask)] = shapes[k]
            unmatched[src] += 1
            made += 1
            slot = unclustered
        out[k] = slot
        counts[slot] += 1
        last_seen[slot] = clock + k
    return n, made
