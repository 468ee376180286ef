"""Baselines that move with their source: a worker that meets a source another worker learned takes
over that source's volume baseline from the other worker's saved models.

Used by worker/detector.py, which hooks SourceHandover.source_added into its engine (detection/engine.py
calls it when a source name is first seen there). Lines of one file go to one ring, remembered in the
file's checkpoint (inputs/runner.py); a reload or restart with fewer workers moves the files of the rings
that are gone to the remaining ones, and every worker snapshots its models when it stops. So at its start
a worker indexes the sources of the retired workers' saved models (<state_dir>/baselines/worker-<N>/ with N
at least the number of workers now: their rings are gone, so their sources moved) and, when one of those
sources shows up here, copies its tier 2 rows (level, dispersion, seasonal
factors, recent buckets; and those of its templates, whose ids are the deployment's: parsing/vocabulary.py)
from the copy that learned the most of it. Its model is warm at once instead of relearning from zero.

Only retired workers' sources: the workers still running keep theirs (files keep their ring while it
exists), and a source name several workers share (the input's name, its files spread over rings) is
each worker's share of it, which is not another worker's to take.

Limits: only tier 2 (volume) moves; rules state, parameter statistics and workflows of the source are
relearned. A source a worker already knows (it had it before) keeps its own, older rows. The retired
worker's copy is not deleted: it is what a later start with fewer workers takes again, however old
(tier 2 skips the time it was not running as downtime, not as silence).
"""
import glob
import logging
import os

from anomaly_detector.detection.engine import STATE_VERSION
from anomaly_detector.storage.atomic import SnapshotError, peek_json_snapshot
from anomaly_detector.storage.layout import WORKER_PREFIX, every_worker_pattern

log = logging.getLogger(__name__)
KIND = "detection-baselines"


class SourceHandover:
    """The sources other workers saved models of, and the takeover of one when it arrives here."""

    def __init__(self, state_dir, engine, who, workers):
        """workers: how many run now; the models of workers numbered from it on are the retired ones'."""
        self.engine, self.who = engine, who
        self.taken = 0
        self._best = {}    # source name -> (lines learned, path of the saved models, their source id)
        for directory in sorted(glob.glob(every_worker_pattern(state_dir, "baselines"))):
            number = os.path.basename(directory)[len(WORKER_PREFIX):]
            if number.isdigit() and int(number) >= workers:
                self._index(os.path.join(directory, "detection.json"))

    def _index(self, path):
        state = _saved_models(path)
        if state is None:
            return
        try:
            names = state["meta"]["sources"]
            totals = state["t2"]["sources"]["total"]
        except (KeyError, TypeError):
            return
        for sid, name in enumerate(names):
            learned = float(totals[sid]) if sid < len(totals) else 0.0
            if learned > 0 and learned > self._best.get(name, (0.0,))[0]:
                self._best[name] = (learned, path, sid)

    def sources(self):
        """{name: lines learned} of the sources that can be taken over."""
        return {name: best[0] for name, best in self._best.items()}

    def source_added(self, sid, name):
        """Engine callback: source `name` is new here as `sid`; take over its volume baseline if saved."""
        best = self._best.pop(name, None)
        if best is None:
            return
        _learned, path, saved_sid = best
        state = _saved_models(path)
        try:
            if state["meta"]["sources"][saved_sid] != name:
                raise ValueError("rewritten since indexed")
            same_ids = state["meta"].get("template_ids") == "deployment" == self.engine.template_ids
            templates = self.engine.import_source_volume(sid, state["t2"], saved_sid, same_ids)
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            log.warning("%s: the volume baseline of source %r in %s could not be taken over (%s); it is "
                        "learned again here", self.who, name, path, exc)
            return
        self.taken += 1
        log.info("%s: took over the volume baseline of source %r (and %d of its templates) from %s",
                 self.who, name, templates, os.path.dirname(path))


def _saved_models(path):
    """A retired worker's saved models (read only: the file is not this worker's), or None when missing,
    unusable or of a newer schema."""
    try:
        return peek_json_snapshot(path, KIND, max_version=STATE_VERSION)
    except (OSError, SnapshotError):
        return None
