"""Tail probabilities as numba kernels: Poisson/quasi-Poisson and normal tails, in log10.

Used by the volume and novelty tiers (tier2_volume.py, tier3_novelty.py) to turn counts and
robust z values into surprisal scores; each kernel has a plain-Python twin in stats_twins.py.
"""
import math

import numpy as np
from numba import njit

from anomaly_detector import kernel_types as kt

LN10 = math.log(10.0)
_EPS = 1e-15
QUIET_SIGMAS = 2.0
RATIO_MIN_MEAN = 5.0            # below this mean count the log-ratio approximation is not used


@njit(cache=True)
def _log_series_p(a, x):
    # ln P(a, x) by the power series; converges fast for x < a + 1.
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(10000):
        ap += 1.0
        term *= x / ap
        total += term
        if term < total * _EPS:
            break
    return -x + a * math.log(x) - math.lgamma(a) + math.log(total)


@njit(cache=True)
def _log_cf_q(a, x):
    # ln Q(a, x) by Lentz's continued fraction; converges fast for x >= a + 1.
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < tiny:
            d = tiny
        c = b + an / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return -x + a * math.log(x) - math.lgamma(a) + math.log(h)


@njit(cache=True)
def log_gamma_p(a, x):
    """ln of the regularised lower incomplete gamma P(a, x), a > 0, x >= 0."""
    if x <= 0.0:
        return -np.inf
    if x < a + 1.0:
        return _log_series_p(a, x)
    q = math.exp(_log_cf_q(a, x))
    return math.log1p(-min(q, 1.0 - 1e-300))


@njit(cache=True)
def log_gamma_q(a, x):
    """ln of the regularised upper incomplete gamma Q(a, x) = 1 - P(a, x)."""
    if x <= 0.0:
        return 0.0
    if x < a + 1.0:
        p = math.exp(_log_series_p(a, x))
        return math.log1p(-min(p, 1.0 - 1e-300))
    return _log_cf_q(a, x)


@njit(cache=True)
def log10_count_upper(k, mu, phi):
    """log10 P(X >= k) for a count X with mean mu and variance phi*mu (quasi-Poisson).

    The over-dispersed count is scaled by 1/phi and treated as Poisson(mu/phi), with the
    continuous extension P(X >= k) = P(k, mu) so that k/phi need not be an integer.
    """
    if k <= 0.0:
        return 0.0
    if mu <= 0.0:
        return -20.0
    return log_gamma_p(k / phi, mu / phi) / LN10


# Called from Python too (tier2_long's blocks): an entry, typed before the daemon forks its workers
@kt.entry((kt.FLOAT64,) * 3, cache=True)
def log10_count_lower(k, mu, phi):
    """log10 P(X <= k) for the same quasi-Poisson count (drops and silence)."""
    if mu <= 0.0:
        return 0.0
    return log_gamma_q(k / phi + 1.0, mu / phi) / LN10


@njit(cache=True)
def log10_normal_two_sided(z):
    """log10 P(|Z| >= |z|) for a standard normal Z."""
    az = abs(z)
    if az < 30.0:
        return math.log10(max(math.erfc(az / math.sqrt(2.0)), 1e-300))
    # Mills-ratio asymptote once erfc underflows.
    return (-0.5 * az * az - math.log(az * math.sqrt(math.pi / 2.0))) / LN10


@njit(cache=True)
def surprisal_score(log10_p):
    """Score 0..100 from a tail probability: ten times its surprisal in decimal digits."""
    s = -10.0 * log10_p
    if s < 0.0:
        return 0.0
    if s > 100.0:
        return 100.0
    return s


@njit(cache=True)
def log10_ratio_tail(k, mu, phi, rel2):
    """log10 one-sided normal tail of log((k+.5)/(mu+.5)) with variance rel2 + phi/mu.

    Traffic varies multiplicatively (campaigns, slow drifts): rel2 is the learned squared
    relative error of the forecast; phi/mu the counting noise on the log scale.
    """
    if mu < RATIO_MIN_MEAN:
        return -300.0  # too few counts for the log scale: the count test alone decides
    z = abs(math.log((k + 0.5) / (mu + 0.5))) / math.sqrt(rel2 + phi / mu)
    return log10_normal_two_sided(z) - math.log10(2.0)


@kt.entry((kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D), cache=True)
def count_upper_scores(counts, mus, phis, rel2s):
    """Spike scores: a count must be surprising both as a quasi-Poisson count and as a ratio."""
    out = np.zeros(counts.shape[0], np.float32)
    for i in range(counts.shape[0]):
        # Within QUIET_SIGMAS of the mean the score is below 20: skip the incomplete gamma.
        if counts[i] - mus[i] > QUIET_SIGMAS * math.sqrt(phis[i] * mus[i]) or mus[i] < 1.0:
            lp = max(log10_count_upper(counts[i], mus[i], phis[i]), log10_ratio_tail(counts[i], mus[i], phis[i], rel2s[i]))
            out[i] = surprisal_score(lp)
    return out


# Gauss-Hermite nodes and log weights of a standard normal: 48 reach 12.7 deviations, and resolve a
# tail that steps from 0 to 1 as the mean crosses the count to about a third of a score point.
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(48)
_GH_LOG_W = np.log(_GH_W / math.sqrt(2.0 * math.pi))


@njit(cache=True)
def log10_count_upper_mixed(k, mu, phi, rel2):
    """log10 P(X >= k) for a quasi-Poisson count (dispersion phi) whose mean is the forecast mu times a
    log-normal error of log variance rel2: the count's tail averaged over the forecast's error by
    Gauss-Hermite quadrature (a log-sum-exp of the nodes' terms)."""
    if k <= 0.0:
        return 0.0
    if mu <= 0.0:
        return -20.0
    s = math.sqrt(max(rel2, 0.0))
    top = -math.inf
    terms = np.empty(_GH_X.shape[0])
    for i in range(_GH_X.shape[0]):
        terms[i] = _GH_LOG_W[i] + log_gamma_p(k / phi, mu * math.exp(s * _GH_X[i]) / phi)
        top = max(top, terms[i])
    total = 0.0
    for i in range(terms.shape[0]):
        total += math.exp(terms[i] - top)
    return min((top + math.log(total)) / LN10, 0.0)


@kt.entry((kt.F64_1D, kt.F64_1D, kt.F64_1D, kt.F64_1D), cache=True)
def count_upper_mixed_scores(counts, mus, phis, rel2s):
    """Spike scores of small counts whose forecast is uncertain: the count's tail averaged over the
    forecast's log-normal error (log10_count_upper_mixed), one test, instead of count_upper_scores'
    count test and log-ratio test, the less surprising of both. The log ratio's normal tail is far too
    heavy for a handful of lines: 64 lines against 5.7 expected (clumps of 2, forecast within a third)
    is 3.5 deviations there, a score of 35, though such a count has a chance near 1e-9."""
    out = np.zeros(counts.shape[0], np.float32)
    for i in range(counts.shape[0]):
        # within QUIET_SIGMAS of the forecast (the count's and the error's variance) the score is low
        spread = math.sqrt((phis[i] + rel2s[i] * mus[i]) * mus[i])
        if counts[i] - mus[i] > QUIET_SIGMAS * spread or mus[i] < 1.0:
            out[i] = surprisal_score(log10_count_upper_mixed(counts[i], mus[i], phis[i], rel2s[i]))
    return out


# Called from Python too (held drops, hosts, long windows): an entry, typed before the daemon forks
@kt.entry((kt.FLOAT64,) * 4, cache=True)
def count_lower_score(count, mu, phi, rel2):
    """Drop score of one count, judged like count_upper_scores from below."""
    if mu - count > QUIET_SIGMAS * math.sqrt(phi * mu):
        return surprisal_score(max(log10_count_lower(count, mu, phi), log10_ratio_tail(count, mu, phi, rel2)))
    return 0.0

