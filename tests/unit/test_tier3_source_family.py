"""A source-level shift (source_shift_kernels) is one problem of its source: its lines, on whichever of the
source's templates they fall, are one incident family when their series moved by at least their spread
(tier3_novelty._wide_shifts, _about_sources)."""
from types import SimpleNamespace

import numpy as np

from anomaly_detector.detection import engine
from anomaly_detector.detection import series_kernels as SK
from anomaly_detector.detection import source_shift_kernels as SSK
from anomaly_detector.detection import tier3_novelty as T3
from anomaly_detector.detection.base import TierResult


def _tier(slow_scales):
    state = np.zeros((len(slow_scales), SK.COLS))
    state[:, SK.SLOW_SCALE] = slow_scales
    return SimpleNamespace(series=SimpleNamespace(state=state))


def _wide(kind, expected, level, slow_scales=(0.4, 0.4, 0.4)):
    n = len(kind)
    view = SimpleNamespace(rows=np.arange(n, dtype=np.int64))
    best = np.full(n, 79.0, np.float32)
    return T3.NoveltyTier._wide_shifts(_tier(slow_scales), view, best, np.arange(n, dtype=np.int64),
                                       np.array(kind, np.int8), np.array(expected), np.array(level))


def test_a_source_shift_line_whose_series_moved_beyond_its_spread_is_the_sources():
    # a query 2.9 times slower (log distance ~1) against residuals of 0.4; a GC pause 10 % shorter; a spike
    up, down = SSK.KIND_SOURCE_UP, SSK.KIND_SOURCE_DOWN
    wide = _wide([up, down, SK.KIND_SPIKE], [2.9, 150.0, 2.9], [8.4, 135.0, 8.4])
    assert wide.tolist() == [True, False, False]


def test_a_wider_series_needs_a_wider_move():
    assert _wide([SSK.KIND_SOURCE_UP], [2.9], [8.4], slow_scales=(1.5,)).tolist() == [False]


def test_wide_lines_are_about_their_source_and_the_others_about_their_template():
    batch = SimpleNamespace(template_id=np.array([5, 6, 7], np.int32))
    result = TierResult(np.array([79.0, 40.0, 90.0], np.float32))
    # line 2's tier score is another test's (90 over the source test's 40): its own template's
    T3._about_sources(result, batch, (np.array([True, True, True]), np.array([79.0, 40.0, 40.0], np.float32)))
    assert result.about.tolist() == [-1, -1, 7]


def test_no_wide_line_leaves_every_line_its_template():
    batch = SimpleNamespace(template_id=np.array([5, 6], np.int32))
    result = TierResult(np.array([79.0, 40.0], np.float32))
    T3._about_sources(result, batch, (np.array([False, False]), np.array([79.0, 40.0], np.float32)))
    assert result.about is None


def test_the_fired_line_and_its_evidence_on_other_templates_are_one_incident_family():
    # the shift fired on a line of template 5; its evidence came on lines of templates 6 and 7: one family
    # of three lines (incident_min_lines 2 is met), where per template each family held one line
    template_id = np.array([5, 6, 7], np.int32)
    tiers = np.zeros((len(engine.TIER_NAMES), 3), np.float32)
    tiers[engine.TIER_NAMES.index("t3")] = [79.0, 40.0, 40.0]
    result = TierResult(tiers[engine.TIER_NAMES.index("t3")].copy())
    T3._about_sources(result, SimpleNamespace(template_id=template_id),
                      (np.array([True, True, True]), result.scores.copy()))
    families = engine._line_families(template_id, tiers, {"t3": result}, np.arange(3))
    assert len(set(families.tolist())) == 1
    assert len(set(engine._line_families(template_id, tiers).tolist())) == 3
