"""How sure a baseline's figures are: intervals on error rates, paired tests between methods.

Every classifier of one experiment is scored on the same images, so two of them are
compared image by image (paired), not by their error rates alone: two rates 0.5 points
apart on 400 images differ by 2 images, which the paired test usually calls noise.

- ``wilson_interval``: the 95% Wilson score interval of an error rate (errors out of n).
  Unlike the normal approximation it stays inside [0, 1] and is sound at 0 errors.
- ``bootstrap_interval``: a percentile bootstrap over images of the mean of a per-image
  cost (the hierarchical error, which is not a rate), seeded, so a rerun prints the same.
- ``mcnemar``: the exact (binomial) McNemar test on the images that exactly one of two
  classifiers gets right; its two-sided p-value.
- ``rank``: the best result, and which others it is *not* significantly better than.
"""
from __future__ import annotations

import math

import numpy as np

from ..exceptions import ParameterError

Z95 = 1.959963984540054   # the standard normal's 97.5% quantile
ALPHA = 0.05              # a paired difference with p below this is "significant"


def wilson_interval(errors, n, z=Z95):
    """(low, high) of the Wilson score interval of the rate ``errors / n``."""
    if n <= 0:
        raise ParameterError(f"an interval needs at least one image, got n={n}")
    if not 0 <= errors <= n:
        raise ParameterError(f"errors must be in 0..{n}, got {errors}")
    p = errors / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(costs, *, resamples=2000, seed=0, level=0.95):
    """(low, high) percentile bootstrap interval of ``costs.mean()`` over images."""
    costs = np.asarray(costs, np.float64)
    if costs.ndim != 1 or len(costs) == 0:
        raise ParameterError(f"costs must be a non-empty 1-D array, got shape {costs.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # blocks of resamples: bounded memory at ILSVRC's 50,000 val images
    block = max(1, 2_000_000 // len(costs))
    for a in range(0, resamples, block):
        b = min(a + block, resamples)
        means[a:b] = costs[rng.integers(0, len(costs), (b - a, len(costs)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar(correct_a, correct_b):
    """Two-sided p-value of the exact McNemar test of two classifiers on the same images
    (boolean arrays: image i answered right by a, by b)."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ParameterError(f"paired results must be two 1-D arrays of one length, got "
                             f"shapes {a.shape} and {b.shape}")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(b & ~a))
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy.stats import binomtest   # imported on use: SciPy costs a second at import
    return float(binomtest(min(only_a, only_b), n, 0.5).pvalue)


def rank(results, correct):
    """The best of ``results`` (least top-1 error, then top-5) and its paired comparison
    with every other: a dict with the best's index, and for each other result its McNemar
    p-value and whether the best is significantly better. ``correct[i]`` is the boolean
    top-1 correctness of result i on the shared scored images."""
    if not results:
        raise ParameterError("no results to rank")
    order = sorted(range(len(results)),
                   key=lambda i: (results[i]["top1_error"], results[i]["top5_error"] or 0.0))
    best = order[0]
    against = []
    for i in order[1:]:
        p = mcnemar(correct[best], correct[i])
        against.append({"index": i, "p_value": p, "significant": p < ALPHA})
    return {"index": best, "against": against}
