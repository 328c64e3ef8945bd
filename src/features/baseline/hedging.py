"""Hedging your bets (Deng, Krause, Berg, Fei-Fei, CVPR 2012): the DARTS algorithm.

When unsure, predict an ancestor: "dog" rather than a wrong breed.  A prediction is a node
``v`` of the class hierarchy; it is correct when the true class is ``v`` or below it, and
its reward is its information gain ``r(v) = log2 C - log2 |classes below v|`` (uniform prior:
a leaf earns ``log2 C``, the root 0).  Given class posteriors ``p(c | x)``, the posterior of
a node is the sum over the classes below it, and DARTS predicts

    argmax_v  (r(v) + lambda) * p(v | x)

with the smallest ``lambda >= 0`` whose accuracy reaches the target ``1 - epsilon`` on
held-out data (found by bisection: accuracy grows with lambda, to 1 at the root).  Sweeping
``lambda`` gives the curve of accuracy against mean information gain (gain 0 when wrong).
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError


def node_posteriors(proba, hierarchy):
    """p(v | x) for every node: the sum of the class posteriors below it (N x V)."""
    return np.asarray(proba, dtype=np.float64) @ hierarchy.below.T.astype(np.float64)


def predict(proba, hierarchy, lam):
    """DARTS predictions (node indices) for one ``lambda``."""
    if lam < 0:
        raise ParameterError(f"lambda must be >= 0, got {lam}")
    return _predict(node_posteriors(proba, hierarchy), hierarchy, lam)


def _predict(post, hierarchy, lam):
    # lambda -> infinity: the most probable node (the root, or a node above every class)
    if np.isfinite(lam):
        score = (hierarchy.info_gain + lam)[None, :] * post
    else:  # a posterior of 1.0 ties with the root's: the limit of (r + lambda) p picks the root
        score = post - 1e-7 * hierarchy.info_gain[None, :]
    # nodes above the same classes tie exactly (dog, canine, carnivore above three breeds):
    # name the most specific one
    score -= 1e-9 * hierarchy.height[None, :]
    return np.argmax(score, 1)


def evaluate(proba, y, hierarchy, lam):
    """(accuracy, mean information gain) of DARTS predictions at ``lambda``."""
    return _evaluate(node_posteriors(proba, hierarchy), np.asarray(y), hierarchy, lam)


def _evaluate(post, y, hierarchy, lam):
    pred = _predict(post, hierarchy, lam)
    correct = hierarchy.below[pred, y]
    gain = np.where(correct, hierarchy.info_gain[pred], 0.0)
    return float(correct.mean()), float(gain.mean())


def curve(proba, y, hierarchy, n=40):
    """Accuracy against information gain over a sweep of ``lambda`` (dict of lists).

    The sweep ends at lambda = infinity (listed as None): the most probable node, i.e. a
    node above every class when there is one (accuracy 1, gain 0).
    """
    post, y = node_posteriors(proba, hierarchy), np.asarray(y)
    top = float(hierarchy.info_gain.max()) or 1.0
    lambdas = np.concatenate([[0.0], top * np.logspace(-3, 3, n - 2), [np.inf]])
    acc, gain = zip(*(_evaluate(post, y, hierarchy, lam) for lam in lambdas))
    return {"lambda": [float(v) if np.isfinite(v) else None for v in lambdas],
            "accuracy": list(acc), "info_gain": list(gain)}


def darts_lambda(proba, y, hierarchy, target, iters=40):
    """The smallest ``lambda`` whose DARTS accuracy on (proba, y) reaches ``target``."""
    if not 0 < target <= 1:
        raise ParameterError(f"target accuracy must be in (0, 1], got {target}")
    post, y = node_posteriors(proba, hierarchy), np.asarray(y)
    if _evaluate(post, y, hierarchy, 0.0)[0] >= target:
        return 0.0
    if _evaluate(post, y, hierarchy, np.inf)[0] < target:
        return float("inf")  # not even the most probable node reaches it: no root
    lo, hi = 0.0, float(hierarchy.info_gain.max()) or 1.0
    while _evaluate(post, y, hierarchy, hi)[0] < target:
        if hi > 1e12:
            return float("inf")
        lo, hi = hi, hi * 4
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _evaluate(post, y, hierarchy, mid)[0] >= target:
            hi = mid
        else:
            lo = mid
    return hi


def softmax(scores, temperature=1.0):
    z = np.asarray(scores, dtype=np.float64) / temperature
    z -= z.max(1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(1, keepdims=True)
    return z


def fit_temperature(scores, y):
    """The softmax temperature minimizing the negative log-likelihood of held-out labels.

    Turns SVM scores (or logits) into calibrated class posteriors for DARTS.
    """
    y = np.asarray(y)

    def nll(t):
        p = softmax(scores, t)[np.arange(len(y)), y]
        return -np.mean(np.log(np.maximum(p, 1e-300)))
    grid = np.logspace(-3, 2, 26)
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.logspace(-0.2, 0.2, 9)
    return float(fine[int(np.argmin([nll(t) for t in fine]))])
