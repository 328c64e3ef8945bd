"""Classification metrics as the ILSVRC papers report them.

All of them are computed from the top-5 guesses (``top_guesses``) and the true labels, so a
score matrix of N x C never has to be kept beyond one block of rows.

- flat top-k error: the fraction of images whose true class is not among the first k guesses;
- hierarchical error (ILSVRC-2010): for each image the minimum over its five guesses of the
  height of the lowest common ancestor of guess and truth (0 for a correct guess; see
  :class:`features.baseline.wordnet.ClassHierarchy` for heights and multiple inheritance),
  averaged over images;
- per-class accuracy (top-1 recall of each class) and the most confused pairs, from the
  confusion matrix.
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError


def top_guesses(scores, k=5):
    """The ``k`` highest-scoring classes of each row, best first (N x k int32)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ParameterError(f"scores must be 2-D (images x classes), got shape {scores.shape}")
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1).astype(np.int32)


def _check(guesses, y):
    guesses, y = np.asarray(guesses), np.asarray(y)
    if guesses.ndim != 2 or len(guesses) != len(y):
        raise ParameterError(f"guesses of shape {guesses.shape} do not match {len(y)} labels")
    if len(y) == 0:
        raise ParameterError("no images to score")
    return guesses, y


def topk_error(guesses, y, k):
    """Fraction of images whose label is not among their first ``k`` guesses."""
    guesses, y = _check(guesses, y)
    if not 1 <= k <= guesses.shape[1]:
        raise ParameterError(f"k must be in 1..{guesses.shape[1]}, got {k}")
    return float(1.0 - np.mean((guesses[:, :k] == y[:, None]).any(1)))


def hierarchical_error(guesses, y, lca_height, k=5):
    """ILSVRC-2010 hierarchical error: mean over images of min over k guesses of LCA height."""
    guesses, y = _check(guesses, y)
    cost = np.asarray(lca_height)[y[:, None], guesses[:, :k]]
    return float(cost.min(1).mean())


def confusion(y, pred, n_classes):
    """Counts of (true, predicted) pairs: scikit-learn's ``confusion_matrix`` (tested equal),
    as one bincount, without importing scikit-learn (seconds) for it."""
    y, pred = np.asarray(y, np.int64), np.asarray(pred, np.int64)
    return np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def per_class_accuracy(cm):
    """Top-1 accuracy of each class (NaN for a class with no test image)."""
    cm = np.asarray(cm)
    total = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.diag(cm) / np.maximum(total, 1), np.nan)


def most_confused(cm, n=10):
    """The ``n`` largest off-diagonal cells: [(true, predicted, count, fraction of true)]."""
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:n]
    rows = cm.sum(1)
    out = []
    for f in flat:
        t, p = np.unravel_index(f, cm.shape)
        if off[t, p] == 0:
            break
        out.append((int(t), int(p), int(off[t, p]), float(off[t, p] / rows[t])))
    return out


def summarize(guesses, y, n_classes, hierarchy=None, confused=10):
    """Every metric of one classifier as a JSON-ready dict."""
    guesses, y = _check(guesses, y)
    cm = confusion(y, guesses[:, 0], n_classes)
    acc = per_class_accuracy(cm)
    out = {
        "images": int(len(y)),
        "top1_error": topk_error(guesses, y, 1),
        "top5_error": topk_error(guesses, y, min(5, guesses.shape[1])),
        "hierarchical_error": None,
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in acc],
        "mean_per_class_accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "most_confused": [dict(true=t, predicted=p, count=c, fraction=f)
                          for t, p, c, f in most_confused(cm, confused)],
    }
    if hierarchy is not None:
        out["hierarchical_error"] = hierarchical_error(guesses, y, hierarchy.lca_height)
    return out, cm
