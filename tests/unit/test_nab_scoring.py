"""NAB scorer (anomaly_detector/workload/nab_scoring.py) on hand-made windows.

Expected figures are worked out by hand from the rules (sigma(y) = 2 / (1 + e^(5y)) - 1):
sigma(-1) = 2 / 1.0067379 - 1 = 0.986614, sigma(-0.5) = 2 / 1.0820850 - 1 = 0.848284,
sigma(0) = 0, sigma(0.1) = 2 / 2.6487213 - 1 = -0.244919.
One series of 100 rows (probation: 15 rows), one window on rows 40..50 (10 row-steps long).
standard: null = -1, perfect = 0.986614, span 1.986614; reward_low_FN_rate: null = -2, span 2.986614.
"""
import json

import numpy as np
import pytest

from anomaly_detector.workload import nab_scoring as nab

STD, LOW_FP, LOW_FN = nab.PROFILES


def one_window():
    return [nab.Series("s", 100, [(40, 50)])]


def detect(*rows, n=100):
    det = np.zeros(n, bool)
    det[list(rows)] = True
    return [det]


def test_sigma_at_the_window_start_end_and_after():
    assert nab.sigma(-1.0) == pytest.approx(0.986614, abs=1e-6)
    assert nab.sigma(0.0) == 0.0
    assert nab.sigma(0.1) == pytest.approx(-0.244919, abs=1e-6)
    assert nab.sigma(1000.0) == -1.0


def test_probation_is_15_percent_capped_at_750_rows():
    assert nab.probation_rows(100) == 15
    assert nab.probation_rows(4032) == 604
    assert nab.probation_rows(20000) == 750


@pytest.mark.parametrize("profile", nab.PROFILES)
def test_perfect_detector_scores_100_and_null_detector_0(profile):
    series = one_window()
    assert nab.corpus_score(series, detect(40), profile) == pytest.approx(100.0)
    assert nab.corpus_score(series, [np.zeros(100, bool)], profile) == pytest.approx(0.0)


def test_detection_at_window_start_middle_and_end():
    series = one_window()
    assert nab.corpus_score(series, detect(40), STD) == pytest.approx(100.0)
    # middle: (0.848284 + 1) / 1.986614
    assert nab.corpus_score(series, detect(45), STD) == pytest.approx(93.037, abs=1e-3)
    # last row: sigma(0) = 0, so only the FN is saved: 1 / 1.986614
    assert nab.corpus_score(series, detect(50), STD) == pytest.approx(50.337, abs=1e-3)


def test_only_the_first_detection_in_a_window_counts():
    series = one_window()
    assert nab.corpus_score(series, detect(40, 41, 45, 50), STD) == pytest.approx(100.0)
    assert nab.corpus_score(series, detect(45, 50), STD) == pytest.approx(93.037, abs=1e-3)


def test_false_positive_before_the_first_window_costs_the_full_weight_per_profile():
    series = one_window()
    # raw = -fn - fp (window missed, one FP at full weight)
    assert nab.corpus_score(series, detect(20), STD) == pytest.approx(-5.537, abs=1e-3)     # -0.11 / 1.986614
    assert nab.corpus_score(series, detect(20), LOW_FP) == pytest.approx(-11.074, abs=1e-3)  # -0.22 / 1.986614
    assert nab.corpus_score(series, detect(20), LOW_FN) == pytest.approx(-3.683, abs=1e-3)  # -0.11 / 2.986614


def test_false_positive_right_after_a_window_costs_little_far_after_costs_fully():
    series = one_window()
    # row 51 is 0.1 window lengths after the end: 0.986614 - 0.11 * 0.244919 = 0.959673 -> 1.959673 / 1.986614
    assert nab.corpus_score(series, detect(40, 51), STD) == pytest.approx(98.644, abs=1e-3)
    # row 99 is 4.9 lengths after: sigma ~ -1, so the full 0.11: 1.876614 / 1.986614
    assert nab.corpus_score(series, detect(40, 99), STD) == pytest.approx(94.463, abs=1e-3)


def test_detections_in_the_probationary_period_are_ignored():
    series = one_window()
    assert nab.corpus_score(series, detect(0, 5, 14), STD) == pytest.approx(0.0)
    assert nab.corpus_score(series, detect(15), STD) == pytest.approx(-5.537, abs=1e-3)


def test_a_corpus_without_windows_has_no_normalised_score():
    series = [nab.Series("flat", 100, [])]
    assert nab.corpus_score(series, detect(20), STD) is None
    assert nab.tally(series[0], detect(20)[0]).fp_rows == 1


def test_sweep_picks_the_threshold_that_maximises_each_profile():
    series = one_window()
    scores = np.zeros(100)
    scores[30] = 0.5    # a false positive before the window
    scores[40] = 0.9    # the window's first row
    best = nab.best_thresholds(series, [scores])
    for p in nab.PROFILES:
        threshold, score, tal = best[p.name]
        assert threshold == 0.9 and score == pytest.approx(100.0)
        assert (tal.detected, tal.fp_rows) == (1, 0)


def test_sweep_matches_scoring_each_threshold_directly():
    rng = np.random.default_rng(7)
    series = [nab.Series("a", 200, [(60, 80), (150, 170)]), nab.Series("b", 120, [(50, 60)])]
    scores = [np.round(rng.random(s.n), 1) for s in series]
    for t, tal in nab.sweep(series, scores):
        det = [sc >= t for sc in scores]
        direct = nab.total(nab.tally(s, d) for s, d in zip(series, det))
        assert tal.raw(STD) == pytest.approx(direct.raw(STD))
        assert (tal.detected, tal.fp_rows) == (direct.detected, direct.fp_rows)


def test_load_profiles_reads_nab_profiles_json(tmp_path):
    raw = {p.name: {"CostMatrix": {"tpWeight": p.tp, "fnWeight": p.fn, "fpWeight": p.fp, "tnWeight": 1.0}}
           for p in nab.PROFILES}
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(raw))
    assert nab.load_profiles(str(path)) == nab.PROFILES


def test_window_rows_maps_timestamps_to_inclusive_rows():
    times = [nab.parse_time("2014-04-01 00:%02d:00" % m) for m in range(0, 60, 5)]
    windows = [(nab.parse_time("2014-04-01 00:10:00.000000"), nab.parse_time("2014-04-01 00:22:00.000000"))]
    assert nab.window_rows(times, windows) == [(2, 4)]
