"""Tier 2's forecast of a source's quarter hours from the rest of the site's (tier2_load.py): a mail relay that
follows the site's load has a forecast from its own history that follows a drop of its mails within the hour;
the rest of the site over the same quarter hours says what load there was."""
import math

import numpy as np

from anomaly_detector.detection.tier2_load import MIN_BLOCKS, LoadFollow, rest_of_site
from anomaly_detector.detection.tier2_long import LongWindows


def _blocks(rng, n, drop_from=None, factor=0.25):
    """Quarter hours of a site whose load wanders (a day's shape and slower waves) and of a mail relay at a
    fiftieth of it, mails of five lines (factor of them from block drop_from on) -> (relay lines, rest)."""
    k = np.arange(n)
    load = 1.0 + 0.7 * np.sin(2 * math.pi * k / 96) + 0.25 * np.sin(2 * math.pi * k / 23)
    rest = rng.poisson(1000.0 * load).astype(float)
    mails = 0.02 * rest * np.where(k >= (drop_from if drop_from is not None else n), factor, 1.0)
    return 5.0 * rng.poisson(mails), rest


def _judge(obs, rest, own_rate=0.5):
    """Feed the blocks to the load forecast and to a forecast that follows the relay's own last quarters (as a
    young seasonal level does) -> (drops against the load, drops against its own forecast) of source 0."""
    load, lw, own = LoadFollow(1), LongWindows(8, size=1), LongWindows(8, size=1)
    level, disp = obs[0], np.array([5.0])
    found = ([], [])
    for o, r in zip(obs, rest):
        o, r = np.array([o]), np.array([r])
        lw.record(o, load.forecast(r))
        own.record(o, np.array([level]))
        judged = np.array([load.learned[0] >= MIN_BLOCKS])
        found[0].extend(lw.drops(judged, disp, 40.0))
        found[1].extend(own.drops(judged, disp, 40.0))
        lw.learn(disp, 0.04, slower=10.0)
        own.learn(disp, 0.04, slower=10.0)
        load.learn(o, r, 0.04)
        level += own_rate * (o[0] - level)
    return found


def test_a_mail_relay_down_to_a_quarter_is_surer_low_against_the_load_than_against_its_own_last_quarters():
    obs, rest = _blocks(np.random.default_rng(4), 300, drop_from=296)
    by_load, by_own = _judge(obs, rest)
    assert by_load and by_load[0][2] >= 40.0 and by_load[0][3] < 0.5 * by_load[0][4], by_load
    assert not by_own or by_load[0][2] > by_own[0][2] + 10.0, (by_load, by_own)


def test_a_mail_relay_following_the_load_is_not_low_against_it():
    obs, rest = _blocks(np.random.default_rng(5), 600)
    by_load, _ = _judge(obs, rest)
    assert not by_load, by_load


def test_the_rest_of_the_site_caps_one_sources_flood():
    obs = np.array([10.0, 100.0, 100.0, 900.0])
    exp = np.array([10.0, 100.0, 100.0, 100.0])   # source 3 floods at nine times its forecast
    rest = rest_of_site(obs, exp)
    assert np.allclose(rest, [400.0, 310.0, 310.0, 210.0])
    # the whole site up twice: the flood counts up to twice the site's ratio, four times its forecast
    assert np.allclose(rest_of_site(2 * obs, exp), [800.0, 620.0, 620.0, 420.0])


def test_a_share_of_the_load_is_learned_and_forecast_from_the_rest():
    lf = LoadFollow(2)
    for k in range(200):
        rest = np.full(2, 1000.0 * (1.0 + 0.8 * math.sin(k / 10.0)))
        lf.learn(np.array([0.05, 0.2]) * rest, rest, 0.05)
    got = lf.forecast(np.array([500.0, 1500.0]))
    assert np.allclose(got, [25.0, 300.0], rtol=0.05), got
    assert np.allclose(lf.slope(2), 1.0, atol=0.05)
    assert LoadFollow(2).forecast(np.array([500.0, 500.0])).tolist() == [0.0, 0.0]   # not learned yet


def test_the_load_forecast_is_saved_loaded_and_old_states_learn_it_again():
    lf = LoadFollow(2)
    for k in range(120):
        rest = np.full(2, 500.0 + 10.0 * k)
        lf.learn(np.array([0.1, 0.3]) * rest, rest, 0.05)
    again = LoadFollow(2)
    again.load_state(lf.state())
    rest = np.array([800.0, 900.0])
    assert np.allclose(again.forecast(rest), lf.forecast(rest)) and again.learned.dtype == np.int64
    old = LoadFollow(2)
    old.load_state({})   # a snapshot from before the load forecast: nothing learned yet
    assert old.forecast(rest).tolist() == [0.0, 0.0]
