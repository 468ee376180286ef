"""Tier 2's pools of a source's steady templates against the rest of the site (tier2_recent.pool_reference,
pool_window, SiteRelative; tier2_volume._learn_relative, _relative_score): templates of one request
counted once, a spike in the hour before no level, the relative error learned from a site whose traffic
wanders together and trusted only once learned, a service that lost its traffic told from a site that
moved as one, and the state saved and loaded."""
import json
import math

import numpy as np
from tier2_traffic import poisson_lines

from anomaly_detector.detection.base import BatchContext, Finding
from anomaly_detector.detection.state_shape import check_state_arrays
from anomaly_detector.detection.tier2_recent import MIN_REL2, START_REL2, RecentLevel, SiteRelative
from anomaly_detector.detection.tier2_volume import VolumeTier, _dispersion

DAY0 = 1772409600.0
SETTINGS = {"bucket_seconds": 60.0, "min_history_buckets": 120, "finding_min_score": 40.0, "spike_min_ratio": 3.0,
            "learning_rate": 0.01, "warmup_lines": 0, "input_gap_seconds": 600.0}


def filled_ring(counts_per_bucket, reference=60):
    """A RecentLevel whose keys were pushed the given counts (keys x buckets), factors 1."""
    r = RecentLevel(reference, size=counts_per_bucket.shape[0])
    for b in range(counts_per_bucket.shape[1]):
        r.push(b, counts_per_bucket[:, b].astype(float), np.ones(counts_per_bucket.shape[0]))
    return r, counts_per_bucket.shape[1] - 1


def test_two_templates_of_one_request_are_not_twice_the_evidence():
    rng = np.random.default_rng(1)
    one = rng.poisson(4.0, 75)
    r, last = filled_ring(np.vstack([one, one]))           # a request's start and end line: the same counts
    ref = r.pool_reference([0, 1], np.ones(2))
    obs, exp, disp = r.pool_window(last, ref, 15)
    assert obs == 2 * one[-15:].sum()
    assert abs(disp - 2.0) < 1e-9                          # each Poisson: their sum varies as a count of pairs


def test_a_spike_in_the_hour_before_is_no_level_of_the_pool():
    base = np.full((2, 75), 4)
    base[:, 10:35] = 40                                    # 25 of the reference's 60 minutes at ten times
    r, _ = filled_ring(base)
    keys, levels, _, _ = r.pool_reference([0, 1], np.ones(2))
    assert list(keys) == [0, 1]
    assert np.allclose(levels, 4.0)                        # the pool's median minute, not its mean (about 19)


def test_the_relative_error_is_learned_and_trusted_only_once_learned():
    rng = np.random.default_rng(2)
    rel = SiteRelative(2)
    rate = 0.0375
    for _ in range(math.ceil(2.0 / rate) - 1):
        assert rel.error(0, rate) is None                  # it starts at the floor: too narrow to trust
        rel.learn(0, float(rng.normal(0.0, 0.3)), 0.0, rate)
    rel.learn(0, 0.0, 0.0, rate)
    assert START_REL2 < rel.error(0, rate) < 0.3 ** 2 * 1.5
    before = rel.rel2[0]
    rel.learn(0, -3.0, 0.0, rate)                          # a drop teaches ten times slower, winsorised
    assert rel.rel2[0] - before < rate / 10 * 9 * before + 1e-12
    assert rel.error(1, rate) is None and MIN_REL2 <= rel.rel2[1]


def site(t0):
    """Four services of two templates each (a request's two lines for service 0), all riding the site's
    traffic, which wanders by a third within the hour."""
    load = 1.0 + 0.35 * np.sin(2 * np.pi * t0 / 5400.0) * np.sin(2 * np.pi * t0 / 2300.0)
    out = {}
    for s in range(4):
        out[(2 * s, s)] = 6.0 * load
        out[(2 * s + 1, s)] = (6.0 if s == 0 else 3.0) * load
    return out


def feed(t2, start, minutes, rng, factor=None, chunk=30, rates=site, n_templates=8):
    """Feed `minutes` of Poisson lines of `rates` (site by default) in batches of `chunk` minutes."""
    for m in range(0, minutes, chunk):
        batch, ts = poisson_lines(rates, start + 60.0 * m, min(chunk, minutes - m), rng, factor)
        if t2.open_bucket is not None:
            t2.advance(float(ts[0]))
        ctx = BatchContext(now=float(ts.max()), lines_seen=0, warm=True, n_templates=n_templates, ts=ts)
        t2.score(batch, ctx)
        t2.learn(batch, ctx, np.ones(batch.n, np.float32))
    t2.advance(start + 60.0 * minutes)


def relative_after(t2, start, minutes, rng, factor):
    """Feed `minutes` more with factor, then source 0's relative score over the last quarter hour against
    the site as it was before them."""
    reference = t2._site_reference(0)
    feed(t2, start, minutes, rng, factor)
    return t2._relative_score(reference, t2.relative.error(0, 0.0375), 15)


def test_a_service_that_lost_its_traffic_is_low_against_the_site_and_a_site_that_fell_together_is_not():
    rng = np.random.default_rng(3)
    t2 = VolumeTier(SETTINGS)
    feed(t2, DAY0, 20 * 60, rng)
    error = t2.relative.error(0, 0.0375)
    assert error is not None and error < 0.75 * float(t2.recent.rel2[:2].mean())   # the wander cancels out
    now = DAY0 + 20 * 3600.0
    state = t2.state()
    lost = relative_after(t2, now, 15, rng, lambda t, tid: 0.3 if tid in (0, 1) else 1.0)
    assert lost[0] >= 40.0 and lost[1] < 0.5
    t2 = VolumeTier(SETTINGS)
    t2.load_state(json.loads(json.dumps(state)))
    check_state_arrays("t2", VolumeTier(SETTINGS), t2)
    assert np.array_equal(t2.relative.rel2, np.asarray(state["relative"]["rel2"]))
    assert t2.relative.error(0, 0.0375) == error
    t2 = VolumeTier(SETTINGS)
    feed(t2, DAY0, 20 * 60, np.random.default_rng(3))
    together = relative_after(t2, now, 15, rng, lambda t, tid: 0.5)
    assert together[0] < 40.0 and together[1] > 0.5


def test_old_states_without_the_relative_error_load():
    t2 = VolumeTier(SETTINGS)
    state = t2.state()
    del state["relative"]
    t2.load_state(state)
    assert t2.relative.error(0, 0.0375) is None


def test_a_source_whose_drop_is_held_does_not_teach_the_relative_error_its_quarter():
    """Service 0 loses most of its traffic for a quarter hour: its drop is held (drop_hold_seconds) before the
    quarter ends, and that quarter, which holds the drop, does not widen the relative error that is to confirm
    it at its release; the other services learn theirs as usual."""
    rng = np.random.default_rng(3)
    t2 = VolumeTier(SETTINGS)
    feed(t2, DAY0, 20 * 60, rng)
    rel2, learned = t2.relative.rel2.copy(), t2.relative.learned.copy()
    # its template 0 seen low and held (as _hold keeps it: released long after this quarter)
    seen = Finding(tier=t2.name, ts=DAY0 + 20 * 3600.0 + 120.0, key="template:0", score=45.0,
                   reason="template volume drop", template_id=0, source="0")
    t2.held["template:0"] = [seen, "template", 0, t2.open_bucket + 1000, (1.0, 0.01), None]
    assert t2._sources_held_low() == {0}
    feed(t2, DAY0 + 20 * 3600.0, 15, rng, lambda t, tid: 0.3 if tid in (0, 1) else 1.0, chunk=1)
    assert t2.relative.learned[0] == learned[0] and t2.relative.rel2[0] == rel2[0]
    assert all(t2.relative.learned[s] == learned[s] + 1 for s in (1, 2, 3))


def flow_site(t0):
    """Service 0 logs one order flow template (0) beside two status templates (1, 2) as busy as it together;
    services 1 to 3 two templates each; all ride the site's traffic, which wanders by a third."""
    load = 1.0 + 0.35 * np.sin(2 * np.pi * t0 / 5400.0) * np.sin(2 * np.pi * t0 / 2300.0)
    out = {(0, 0): 8.0 * load, (1, 0): 4.0 * load, (2, 0): 4.0 * load}
    for s in range(1, 4):
        out[(2 * s + 1, s)] = 6.0 * load
        out[(2 * s + 2, s)] = 3.0 * load
    return out


def flow_feed(t2, start, minutes, rng, factor=None):
    feed(t2, start, minutes, rng, factor, chunk=1, rates=flow_site, n_templates=9)


def flow_held_low(factor, seed=5):
    """Feed the site 20 hours, hold service 0's flow template as its drop is first seen, feed the hold's ten
    minutes with factor -> (whether it is still low at its release, service 0's pool score over them)."""
    t2 = VolumeTier(SETTINGS)
    rng = np.random.default_rng(seed)
    flow_feed(t2, DAY0, 20 * 60, rng)
    reference = t2._recent_reference("template", 0)
    assert reference[1] is not None and reference[1][2] is not None     # the template is a member of the pool
    flow_feed(t2, DAY0 + 20 * 3600.0, 10, rng, factor)
    error = t2.relative.error(0, 0.0375)
    return t2._recent_still_low("template", 0, reference, [0, 1]), t2._relative_score(reference[1][:2], error, 10)[0]


def test_a_flow_that_fell_while_its_services_status_lines_did_not_is_low_against_the_site():
    """Only service 0's order flow falls to a third: its pool (the flow and its status lines) falls by less
    than half and is not low against the site, the flow template alone is; the site falling as one, or
    the flow at its usual volume, is not."""
    low, pool_score = flow_held_low(lambda t, tid: 0.3 if tid == 0 else 1.0)
    assert low and pool_score < 40.0
    assert not flow_held_low(lambda t, tid: 0.5)[0]
    assert not flow_held_low(None)[0]


def test_a_template_back_from_a_spike_of_its_own_is_not_low_against_the_site():
    """Service 0's flow template at four times its traffic for 20 minutes of the hour before (a burst of cache
    misses) and back to its usual volume: its mean over the hour is no level of it, its median is (judged
    alone at the pool's level, scaled by the pool's median minute only, it was still low)."""
    t2 = VolumeTier(SETTINGS)
    rng = np.random.default_rng(5)
    flow_feed(t2, DAY0, 20 * 60, rng)
    now = DAY0 + 20 * 3600.0
    flow_feed(t2, now, 20, rng, lambda t, tid: 4.0 if tid == 0 else 1.0)
    flow_feed(t2, now + 20 * 60.0, 15, rng)
    reference = t2._recent_reference("template", 0)
    flow_feed(t2, now + 35 * 60.0, 10, rng)
    assert not t2._recent_still_low("template", 0, reference, [0, 1])


def surge_then(after_factor, seed=7):
    """Feed the site 20 hours, then service 0's flow template at four times its traffic for 35 minutes (more
    than half the hour before: its median minute too) and `after_factor` of it for 20 minutes -> (the
    surge's best line score, the drop keys held or raised of service 0's flow template)."""
    t2 = VolumeTier(SETTINGS)
    rng = np.random.default_rng(seed)
    flow_feed(t2, DAY0, 20 * 60, rng)
    now = DAY0 + 20 * 3600.0
    flow_feed(t2, now, 35, rng, lambda t, tid: 4.0 if tid == 0 else 1.0)
    surged = t2._surged.get(0)
    flow_feed(t2, now + 35 * 60.0, 20, rng, lambda t, tid: after_factor if tid == 0 else 1.0)
    keys = set(t2.held) | {f.key for f in t2.pending}
    return surged, {k for k in keys if k == "template:0"}


def test_a_template_back_from_a_surge_of_its_source_is_no_drop_against_the_hour_before():
    """A surge raised (its lines at anomaly_threshold) fills more than half the hour before, so its median
    minute is the surge's: the template back at its usual volume read as a drop to a quarter against it
    (held, then raised). The hour that holds its source's surge is no level: no drop against it is held,
    while the same template down to a tenth after the surge is still found by the seasonal test."""
    surged, held = surge_then(1.0)
    assert surged is not None
    assert not held
    surged, held = surge_then(0.1)
    assert surged is not None and held



def pooled_holds(factor, minutes=15, seed=3):
    """Feed the site 20 hours, then `minutes` minute by minute with factor -> the source keys the pooled test
    (_hold_relative_drops) held meanwhile."""
    t2 = VolumeTier(SETTINGS)
    rng = np.random.default_rng(seed)
    feed(t2, DAY0, 20 * 60, rng)
    held = []
    original = t2._hold

    def hold(finding, kind, key):
        if "rest of the site" in finding.reason:
            held.append(finding.key)
        original(finding, kind, key)

    t2._hold = hold
    feed(t2, DAY0 + 20 * 3600.0, minutes, rng, factor, chunk=1)
    return set(held)


def test_a_service_low_against_the_rest_of_the_site_is_held_by_its_pool():
    """Service 0 at 0.3 of its traffic, the site as usual: its pool against the rest of the site finds the drop
    (it only confirmed drops the other tests found: a quiet service's templates alone, or the source against
    young seasons, were never low enough). The site at half its traffic, or as usual, is no drop of any."""
    assert pooled_holds(lambda t, tid: 0.3 if tid in (0, 1) else 1.0) == {"source:0"}
    assert not pooled_holds(lambda t, tid: 0.5)
    assert not pooled_holds(None)


def test_one_other_service_surging_does_not_make_the_rest_of_the_site_read_low():
    """Service 3 at ten times its traffic (a scraper on one service) lifts the rest of the site's total for
    services 0 to 2 about fourfold while they are at their usual volume: against the median service of the
    rest they are not low (against the total they read as drops to a quarter)."""
    assert not pooled_holds(lambda t, tid: 10.0 if tid in (6, 7) else 1.0)


def held_template_low(factor, seed=7):
    """Feed the site 20 hours, hold service 0's template 0 as its drop is first seen, feed the hold's ten
    minutes with factor -> whether it is still low at its release, by its own recent level or its seasons."""
    t2 = VolumeTier(SETTINGS)
    rng = np.random.default_rng(seed)
    feed(t2, DAY0, 20 * 60, rng, chunk=1)
    reference = t2._recent_reference("template", 0)
    spread = (float(_dispersion(t2.templates, np.array([0]))[0]), float(t2.templates.rel2[0]))
    assert reference[0] is not None and reference[1] is not None
    feed(t2, DAY0 + 20 * 3600.0, 10, rng, factor, chunk=1)
    return t2._recent_still_low("template", 0, reference, [0, 1]) or t2._still_low("template", 0, [0, 1], spread,
                                                                                   reference)


def test_a_template_of_a_site_whose_traffic_fell_together_is_not_still_low():
    """The night after a campaign's surge: every service's traffic at a quarter of its level for ten minutes.
    A template judged against its own level (recent or seasonal) alone read as a drop of every service at
    once; against that level times the rest of the site's fall it is not low. A service that lost its
    traffic alone still is, and so is its template when one other service fell with it (no quorum of the
    rest)."""
    assert not held_template_low(lambda t, tid: 0.25)
    assert held_template_low(lambda t, tid: 0.2 if tid in (0, 1) else 1.0)
    assert held_template_low(lambda t, tid: 0.2 if tid in (0, 1, 2, 3) else 1.0)
