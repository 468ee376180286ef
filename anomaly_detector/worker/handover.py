"""Baselines that move with their source: a worker that meets a source another worker learned takes
over that source's volume baseline from the other worker's saved models.

Used by worker/detector.py, which hooks SourceHandover.source_added into its engine (detection/engine.py
calls it when a source name is first seen there). Lines of one file go to one ring, remembered in the
file's checkpoint (inputs/runner.py); a reload or restart with fewer workers moves the files of the rings
that are gone to the remaining ones, and every worker snapshots its models when it stops. So at its start
a worker indexes the sources of the other workers' saved models (<state_dir>/baselines/worker-*/, its own
apart) and, when one of those sources shows up, copies its tier 2 rows (level, dispersion, seasonal
factors, recent buckets; and those of its templates, whose ids are the deployment's: parsing/vocabulary.py)
from the copy that learned the most of it. Its model is warm at once instead of relearning from zero.

Limits: only tier 2 (volume) moves; rules state, parameter statistics and workflows of the source are
relearned. The index is taken at start: a source that moves while both workers run (it cannot, files
keep their ring) would be taken from a stale copy. A source a worker already knows (it had it before)
keeps its own, older rows. The old owner's copy is not deleted: a later move back finds its own.
"""
import glob
import logging
import os

from anomaly_detector.detection.engine import STATE_VERSION
from anomaly_detector.storage.atomic import peek_json_snapshot
from anomaly_detector.storage.layout import every_worker_pattern

log = logging.getLogger(__name__)
KIND = "detection-baselines"


class SourceHandover:
    """The sources other workers saved models of, and the takeover of one when it arrives here."""

    def __init__(self, state_dir, own_baselines, engine, who):
        self.engine, self.who = engine, who
        self.taken = 0
        self._best = {}    # source name -> (lines learned, path of the saved models, their source id)
        own = os.path.abspath(own_baselines)
        for directory in sorted(glob.glob(every_worker_pattern(state_dir, "baselines"))):
            if os.path.abspath(directory) != own:
                self._index(os.path.join(directory, "detection.json"))

    def _index(self, path):
        got = peek_json_snapshot(path, KIND, STATE_VERSION)
        if got is None:
            return
        try:
            names = got[1]["meta"]["sources"]
            totals = got[1]["t2"]["sources"]["total"]
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
        got = peek_json_snapshot(path, KIND, STATE_VERSION)
        try:
            state = got[1]
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
