"""What the page at `/` shows, read from the files the workers and the input persist: one function per data set.

metrics/page.py renders it and owns one SnapshotCache and the skip counts (Skips). Every
read is bounded: a state snapshot whose header announces more than max_bytes is not read at all, and at
most max_rows entries are kept per list. (Incidents are not read here: the page takes them from the
views the workers publish, metrics/incidents_api.WorkerViews.)
Nothing here writes or moves a file: a snapshot that does not check out is skipped (a worker may be
renaming it right now), unlike storage.atomic's readers, which set a corrupt file aside for its owner.
"""
import collections
import heapq
import logging
import os
import threading

from anomaly_detector.inputs.listener import network_inputs, spool_dir
from anomaly_detector.inputs.spool import spool_bytes
from anomaly_detector.metrics.model_health import past_warm_up
from anomaly_detector.parsing.masking import WILDCARD
from anomaly_detector.parsing.miner import M as MASK_TOKEN
from anomaly_detector.parsing.miner import S as SPAN_TOKEN
from anomaly_detector.storage.atomic import SnapshotError, peek_json_snapshot

SKIP_REASONS = ("too_large", "unreadable")    # page_reads_skipped_total{reason}
TIERS = (("t1", "rules", "tier1"), ("t2", "volume", "tier2"), ("t3", "novelty", "tier3"),
         ("t4", "sequence", "tier4"))
_LOGGED_NOTES = 256  # a note is logged once; a changed one (another file, another reason) again
log = logging.getLogger(__name__)


class Skips:
    """Reads the page gave up, by reason (exported as page_reads_skipped_total); each new note logged once.

    The readers below call `skip(reason, note)`: the page passes a function that also lists the note on
    the page it is making.
    """

    def __init__(self):
        self.counts = {reason: 0 for reason in SKIP_REASONS}
        self._logged = collections.OrderedDict()   # the last notes logged (a bounded memory of them)
        self._lock = threading.Lock()

    def add(self, reason, note):
        with self._lock:
            self.counts[reason] += 1
            if note in self._logged:
                return
            self._logged[note] = True
            if len(self._logged) > _LOGGED_NOTES:
                self._logged.popitem(last=False)
        log.warning("page: %s skipped (%s)", note, reason)

    def totals(self):
        with self._lock:
            return dict(self.counts)


class SnapshotCache:
    """What the page needs of each state snapshot, by path, decoded again only when the file changed.

    Only a digest is kept (digest_detection, digest_templates, digest_checkpoints: a few rows each), never
    the decoded file, so the sidecar's memory does not grow with the models. The previous digest of a
    path is kept too: template counts of two snapshots give rates.
    """

    def __init__(self, max_bytes, max_rows):
        self.max_bytes = int(max_bytes)
        self.digests = {"detection-baselines": lambda state, skip: digest_detection(state),
                        "templates": lambda state, skip: digest_templates(state, max_rows),
                        "file_checkpoints": lambda state, skip: digest_checkpoints(state, max_rows)}
        self._entries = {}    # path -> (stamp, digest, previous digest)
        self._lock = threading.Lock()

    def get(self, path, kind, skip):
        """(current, previous) digests of the snapshot of `kind` at path (previous: the one before it
        changed); (None, None) when there is none yet; the last good ones when it cannot be read now."""
        try:
            st = os.stat(path)
        except OSError:
            return None, None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry[0] == stamp:
                return entry[1], entry[2]
        state = read_snapshot_payload(path, kind, self.max_bytes, skip)
        digest = None
        if isinstance(state, dict):
            try:
                digest = self.digests[kind](state, skip)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                skip("unreadable", "%s: %s: %s" % (path, type(exc).__name__, exc))
        elif state is not None:
            skip("unreadable", "%s: not a JSON object" % path)
        if digest is None:
            return (entry[1], entry[2]) if entry else (None, None)
        with self._lock:
            self._entries[path] = (stamp, digest, entry[1] if entry else None)
        return digest, (entry[1] if entry else None)


def digest_detection(state):
    """{meta}: the engine's meta (lines seen, first and last time), what the tiers' warm-up is judged by."""
    meta = state.get("meta")
    return {"meta": meta if isinstance(meta, dict) else {}}


def digest_templates(state, max_rows):
    """{saved_at, top: [(template id, text, count)]} of the max_rows most frequent live templates."""
    rows = heapq.nlargest(max_rows, state["templates"], key=lambda row: int(row[2]))
    return {"saved_at": float(state.get("saved_at", 0)),
            "top": [(int(tid), render_template(tokens), int(count)) for tid, tokens, count, *_ in rows]}


def digest_checkpoints(state, max_rows):
    """{known, entries}: how many files have a checkpoint, and the first max_rows of them."""
    entries = state.get("entries", [])
    return {"known": len(entries), "entries": entries[:max_rows]}


def read_snapshot_payload(path, kind, max_bytes, skip):
    """The JSON payload of a storage.atomic snapshot, or None (missing, or skipped with its reason:
    "too_large" over max_bytes, unread; "unreadable" a bad header, kind or checksum)."""
    try:
        return peek_json_snapshot(path, kind, max_bytes)
    except FileNotFoundError:
        return None
    except SnapshotError as exc:
        note = str(exc) + (" (over [http] page_max_read_mb)" if exc.reason == "too_large" else "")
        skip(exc.reason, note)
        return None


def render_template(tokens):
    """A template's text as the miner shows it (masked values as <*>), from its snapshot tokens."""
    raw = [t.encode("latin-1") for t in tokens]
    return (b" ".join(MASK_TOKEN if t == SPAN_TOKEN else t for t in raw)
            .replace(MASK_TOKEN, WILDCARD.encode()).decode("utf-8", "replace"))


def top_templates(workers, cache, max_rows, skip):
    """[{template, count, rate}] of the most frequent live templates over all workers; rate (lines per
    second) from the counts of a worker's last two snapshots, None until it has two."""
    merged = {}
    for paths in workers:
        digest, previous = cache.get(paths.templates, "templates", skip)
        if digest is None:
            continue
        # Each worker's top rows only: a template frequent in two workers adds up where both have it
        # among theirs; one new in the top has its rate once it was in the top at two snapshots.
        before = {tid: count for tid, _text, count in previous["top"]} if previous else {}
        elapsed = digest["saved_at"] - previous["saved_at"] if previous else 0.0
        for tid, text, count in digest["top"]:
            row = merged.setdefault(text, {"template": text, "count": 0, "rate": None})
            row["count"] += count
            if elapsed > 0 and tid in before:
                row["rate"] = (row["rate"] or 0.0) + max(0, count - before[tid]) / elapsed
    return sorted(merged.values(), key=lambda r: (-r["count"], r["template"]))[:max_rows]


def tier_status(cfg, flags, workers, cache, skip):
    """[{tier, name, enabled, warm, lines_seen}] per tier: configured and run-time switches, and whether the
    workers are past warm-up (warm when every worker with a snapshot is)."""
    detection = cfg["detection"]
    metas = []
    for paths in workers:
        digest, _ = cache.get(paths.detection_baselines, "detection-baselines", skip)
        if digest is not None:
            metas.append(digest["meta"])
    lines_seen = sum(int(m.get("lines_seen") or 0) for m in metas)
    warm = bool(metas) and all(past_warm_up(m, int(detection["warmup_lines"]), float(detection["warmup_seconds"]))
                                    for m in metas)
    rows = []
    for tier, name, section in TIERS:
        enabled = bool(detection[section]["enabled"]) and (tier != "t4" or bool(flags.tier4_enabled))
        switched_off = bool(detection[section]["enabled"]) and not enabled
        rows.append({"tier": tier, "name": name, "enabled": enabled, "switched_off": switched_off,
                     "warm": warm, "lines_seen": lines_seen})
    return rows


def input_lag(cfg, cache, max_rows, skip):
    """[{input, type, lag_bytes, files, known}] per input: file inputs lag by the bytes of their files past
    the committed checkpoints (files: how many were measured, of `known` checkpoints; at most max_rows are
    looked at), network inputs by their spool's bytes."""
    rows = []
    network = set(network_inputs(cfg))
    for name, section in cfg["inputs"].items():
        row = {"input": name, "type": section["type"], "lag_bytes": None, "files": None, "known": None}
        if name in network:
            row["lag_bytes"] = spool_bytes(spool_dir(cfg, name))
        elif section["type"] == "file":
            path = os.path.join(cfg["paths"]["state_dir"], "checkpoints", "%s.json" % name)
            digest, _ = cache.get(path, "file_checkpoints", skip)
            if digest is not None:
                row["lag_bytes"], row["files"] = _file_lag(digest["entries"][:max_rows])
                row["known"] = digest["known"]
        rows.append(row)
    return rows


def _file_lag(entries):
    """(bytes past the committed offsets of the files still there, how many files)."""
    lag, files = 0, 0
    for entry in entries:
        try:
            st = os.stat(entry["path"])
        except (OSError, KeyError, TypeError):
            continue
        if st.st_ino == entry.get("inode") and st.st_dev == entry.get("device"):
            lag += max(0, st.st_size - int(entry.get("offset", 0)))
            files += 1
    return lag, files
