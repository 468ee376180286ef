"""Plain-Python twins of the detection kernels, written independently, for the tests to compare.

Each twin answers the same question as its kernel in stats_kernels.py / novelty_kernels.py by
a different (slower, more obvious) route: direct sums of probability terms, loops over dicts.
"""
import math

import numpy as np


def log10_count_upper(k, mu, phi):
    """log10 P(X >= k), X ~ Poisson(mu/phi) at k/phi, by the full power series of P(a, x)."""
    if k <= 0:
        return 0.0
    if mu <= 0:
        return -20.0
    return math.log10(max(_lower_gamma_series(k / phi, mu / phi), 1e-300))


def log10_count_lower(k, mu, phi):
    if mu <= 0:
        return 0.0
    return math.log10(max(1.0 - _lower_gamma_series(k / phi + 1.0, mu / phi), 1e-300))


def _lower_gamma_series(a, x):
    # P(a, x) = e^-x x^a / Gamma(a+1) * sum_n x^n / ((a+1)...(a+n)), summed until it stops changing.
    if x <= 0:
        return 0.0
    term, total, n = 1.0, 1.0, 0
    while term > total * 1e-17 or n < x:
        n += 1
        term *= x / (a + n)
        total += term
    return math.exp(-x + a * math.log(x) - math.lgamma(a + 1.0) + math.log(total))


def log10_normal_two_sided(z):
    return math.log10(max(math.erfc(abs(z) / math.sqrt(2.0)), 1e-300))


def surprisal_score(log10_p):
    return min(100.0, max(0.0, -10.0 * log10_p))


def log10_ratio_tail(k, mu, phi, rel2, min_mean=5.0):
    if mu < min_mean:
        return -300.0
    z = abs(math.log((k + 0.5) / (mu + 0.5))) / math.sqrt(rel2 + phi / mu)
    return log10_normal_two_sided(z) - math.log10(2.0)


def count_upper_mixed_scores(counts, mus, phis, rel2s):
    """Twin of stats_kernels.count_upper_mixed_scores: the forecast's log-normal error integrated by the
    trapezoid rule over +-10 deviations, in plain probabilities (to 1e-300)."""
    out = np.zeros(len(counts), np.float32)
    z = np.linspace(-10.0, 10.0, 801)
    density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) * (z[1] - z[0])
    for i, (k, mu, phi, rel2) in enumerate(zip(counts, mus, phis, rel2s)):
        if k - mu > 2.0 * math.sqrt((phi + rel2 * mu) * mu) or mu < 1.0:
            if k <= 0:
                continue
            means = mu * np.exp(math.sqrt(rel2) * z)
            # far above the count the tail is 1 (and the series overflows)
            tails = [1.0 if m > 4.0 * k + 100.0 else 10.0 ** log10_count_upper(k, m, phi) for m in means]
            out[i] = surprisal_score(math.log10(max(float(np.dot(density, tails)), 1e-300)))
    return out


def count_lower_score(count, mu, phi, rel2):
    """Drop score: both the quasi-Poisson lower tail and the log-ratio tail must be small."""
    if mu - count <= 2.0 * math.sqrt(phi * mu):
        return 0.0
    return surprisal_score(max(log10_count_lower(count, mu, phi), log10_ratio_tail(count, mu, phi, rel2)))
