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

Every error carries its 95% interval (:mod:`features.baseline.significance`): Wilson's for
the top-k rates, a bootstrap over images for the hierarchical error. With at most five
classes, five guesses name every class: top-5 and hierarchical error are 0 whatever the
classifier does, and are reported as trivial (``None``, with the reason) instead.
"""
from __future__ import annotations

import numpy as np

from ..exceptions import ParameterError
from .significance import bootstrap_interval, wilson_interval


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


def hierarchical_costs(guesses, y, lca_height, k=5):
    """Each image's hierarchical cost: the least LCA height over its first k guesses."""
    guesses, y = _check(guesses, y)
    return np.asarray(lca_height)[y[:, None], guesses[:, :k]].min(1)


def hierarchical_error(guesses, y, lca_height, k=5):
    """ILSVRC-2010 hierarchical error: mean over images of min over k guesses of LCA height."""
    return float(hierarchical_costs(guesses, y, lca_height, k).mean())


def _interval(errors, n):
    return [round(v, 6) for v in wilson_interval(int(errors), n)]


def format_error(result, name, digits=4):
    """``result[name + '_error']`` with its interval, as printed: ``0.1480 [0.1310,
    0.1670]``, or ``trivial`` when the metric is (module doc)."""
    value = result.get(f"{name}_error")
    if value is None:
        return "trivial" if result.get("trivial") else "-"
    ci = result.get(f"{name}_error_ci")
    if ci is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def best_line(best):
    """The best result, and whether the paired test separates it from the others."""
    line = (f"best: {best['encoding']} / {best['classifier']} "
            f"(top-1 error {format_error(best, 'top1')})")
    tied = best["within_noise_of"]
    if not best["compared"]:
        return line
    if not tied:
        return line + "; better than every other by the paired test (McNemar p < 0.05)"
    names = ", ".join(f"{t['encoding']} / {t['classifier']} (p = {t['p_value']:.2g})"
                      for t in tied)
    return line + f"; within the noise of {names}: not significantly better (McNemar)"


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


def summarize(guesses, y, n_classes, hierarchy=None, confused=10, seed=0):
    """Every metric of one classifier as a JSON-ready dict (module doc)."""
    guesses, y = _check(guesses, y)
    n = len(y)
    cm = confusion(y, guesses[:, 0], n_classes)
    acc = per_class_accuracy(cm)
    hits = guesses == y[:, None]
    k5 = min(5, guesses.shape[1])
    top1_wrong = int(n - np.count_nonzero(hits[:, 0]))
    top5_wrong = int(n - np.count_nonzero(hits[:, :k5].any(1)))
    trivial = (f"{k5} guesses name all {n_classes} classes" if k5 >= n_classes else None)
    out = {
        "images": int(n),
        "top1_error": top1_wrong / n,
        "top1_error_ci": _interval(top1_wrong, n),
        "top5_error": None if trivial else top5_wrong / n,
        "top5_error_ci": None if trivial else _interval(top5_wrong, n),
        "trivial": trivial,
        "hierarchical_error": None,
        "hierarchical_error_ci": None,
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in acc],
        "mean_per_class_accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "most_confused": [dict(true=t, predicted=p, count=c, fraction=f)
                          for t, p, c, f in most_confused(cm, confused)],
    }
    if hierarchy is not None and not trivial:
        costs = hierarchical_costs(guesses, y, hierarchy.lca_height)
        out["hierarchical_error"] = float(costs.mean())
        out["hierarchical_error_ci"] = [round(v, 6) for v in
                                        bootstrap_interval(costs, seed=seed)]
    return out, cm
