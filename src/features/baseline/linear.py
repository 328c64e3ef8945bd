"""Linear classifiers trained with mini-batch SGD on encodings streamed from the store.

Two losses over all classes at once:

- ``svm``: one-vs-rest linear SVM (hinge loss of each class against all others);
- ``logreg``: multinomial logistic regression (softmax cross-entropy).

Why our own SGD rather than scikit-learn's ``SGDClassifier.partial_fit``: at ImageNet scale
(1000 classes x 4,096 to 65,536 dimensions, 1.28M images) scikit-learn's one-vs-rest trains
the 1000 binary problems one after the other, row by row (``n_jobs`` threads at best), with
float64 weights; it has no multinomial logistic loss at all (``log_loss`` is one-vs-rest too).
Here one mini-batch step is two GEMMs (scores ``X W``, gradient ``X^T G``) over all classes
and over several regularization strengths together, in float32, where BLAS uses every core.
``solver="sklearn"`` runs ``SGDClassifier.partial_fit`` on the same stream instead (hinge or
one-vs-rest log loss), for comparison and for small problems
(``benchmarks/bench_baseline.py`` measures both).

The features are centred and scaled (by the training mean and one global factor making the
mean squared norm 1) without ever densifying a sparse block: the centring is folded into the
bias and into one extra row of the gradient GEMM.  The regularization strength is chosen on
a seeded held-out part of the training rows: every candidate ``lambda`` is trained in the
same passes (their weights side by side in one matrix), the one with the lowest held-out
top-1 error is kept.  Memory: the weights, 4 x dims x classes x candidates bytes, plus one
block of rows (``features.store.encodings.BLOCK_BYTES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..exceptions import ParameterError

CLASSIFIERS = ("svm", "logreg")
DEFAULT_LAMBDAS = (1e-6, 1e-5, 1e-4, 1e-3)


@dataclass
class LinearModel:
    """Scores ``s * (X - mean) @ W + b``: ``W`` is dims x classes."""
    W: np.ndarray
    b: np.ndarray
    mean: np.ndarray
    scale: float
    loss: str
    lam: float
    info: dict = field(default_factory=dict)

    def decision_function(self, X):
        c = self.b - self.scale * (self.mean @ self.W)
        return np.asarray(self.scale * (X @ self.W) + c, dtype=np.float32)


def _matmul(X, W):
    return np.asarray(X @ W)


def feature_stats(reader, idx):
    """Mean (float64, dims) and the global scale of the rows ``idx``, one block at a time."""
    total = np.zeros(reader.dim)
    sq = 0.0
    for _, X in reader.blocks(idx):
        total += np.asarray(X.sum(0)).ravel()
        sq += float(X.multiply(X).sum()) if reader.sparse else float(np.einsum("ij,ij->", X, X))
    n = max(len(idx), 1)
    mean = total / n
    var = sq / n - float(mean @ mean)  # E||x - mean||^2
    scale = 1.0 / np.sqrt(var) if var > 1e-12 else 1.0
    return mean.astype(np.float32), float(scale)


def _gradient(S, y, loss, n_classes, n_models):
    """d(mean loss)/d(scores) for scores S (n x models*classes), in place."""
    n = len(y)
    S3 = S.reshape(n, n_models, n_classes)
    if loss == "svm":
        t = np.full_like(S3, -1.0)
        t[np.arange(n), :, y] = 1.0
        active = (t * S3) < 1.0
        G = np.where(active, -t, 0.0).astype(np.float32)
    else:
        S3 -= S3.max(2, keepdims=True)
        np.exp(S3, out=S3)
        S3 /= S3.sum(2, keepdims=True)
        S3[np.arange(n), :, y] -= 1.0
        G = S3
    G /= n
    return G.reshape(n, n_models * n_classes)


def train_sgd(reader, idx, y, n_classes, loss="svm", lambdas=DEFAULT_LAMBDAS, epochs=10,
              batch=128, lr=1.0, seed=0, stats=None, progress=None, average=True):
    """Train one model per ``lambda`` on the rows ``idx`` (labels ``y``) in the same passes.

    ``lr`` is the step per example: a mini-batch of ``batch`` rows (mean gradient) takes a
    step of ``lr * batch`` at first, decaying as ``1 / (1 + epoch)``.  The weight decay is
    applied as a proximal step (``W / (1 + step * lambda)``), stable for any step size.  With
    ``average`` the returned weights are the running mean of the iterates over the second
    half of the passes (averaged SGD, as in the large-scale SVMs of the ILSVRC-2010 era):
    far less sensitive to the step size than the last iterate.

    ``progress(done, total)`` is called after each block of rows: the examples seen so far
    and ``epochs * len(idx)``.

    Returns a list of :class:`LinearModel`, one per lambda.
    """
    import scipy.sparse as sp
    if loss not in CLASSIFIERS:
        raise ParameterError(f"unknown classifier {loss!r}: expected one of "
                             f"{', '.join(CLASSIFIERS)}")
    if epochs < 1 or batch < 1:
        raise ParameterError(f"epochs and batch must be >= 1, got {epochs} and {batch}")
    lambdas = np.asarray(lambdas, dtype=np.float32)
    L, D, C = len(lambdas), reader.dim, n_classes
    mean, scale = stats if stats is not None else feature_stats(reader, idx)
    rng = np.random.default_rng(seed)
    W = np.zeros((D, L * C), np.float32)
    b = np.zeros(L * C, np.float32)
    decay_cols = np.repeat(lambdas, C)
    # small problems: smaller batches, so that an epoch is still at least ~64 steps
    batch = int(min(batch, max(16, len(idx) // 64)))
    steps_per_epoch = max(1, -(-len(idx) // batch))
    step = n_avg = 0
    avg_from = epochs // 2
    W_avg = np.zeros_like(W) if average else None
    b_avg = np.zeros_like(b) if average else None
    done, total = 0, epochs * len(idx)
    for epoch in range(epochs):
        for pos, X in reader.blocks(idx, rng=rng):
            yb = y[pos]
            for a in range(0, len(yb), batch):
                Xb, ybb = X[a:a + batch], yb[a:a + batch]
                # decaying step: a stable start for every lambda, and convergence
                eta = lr * batch / (1.0 + step / steps_per_epoch)
                S = _matmul(Xb, W)
                S *= scale
                S += b - scale * (mean @ W)
                G = _gradient(S, ybb, loss, C, L)
                # X_c^T G = X^T G - mean (1^T G): one extra row instead of a dense centred X
                g_sum = G.sum(0)
                if sp.issparse(Xb):
                    Xa = sp.vstack([Xb, sp.csr_matrix(mean[None, :])], format="csr")
                else:
                    Xa = np.vstack([Xb, mean[None, :]])
                Ga = np.vstack([G, -g_sum[None, :]])
                gW = np.asarray(Xa.T @ Ga)
                W -= (eta * scale) * gW
                W /= (1.0 + eta * decay_cols)[None, :]
                b -= eta * g_sum
                step += 1
                if average and epoch >= avg_from:
                    n_avg += 1
                    W_avg += (W - W_avg) / n_avg
                    b_avg += (b - b_avg) / n_avg
            done += len(yb)
            if progress is not None:
                progress(done, total)
    if average:
        W, b = W_avg, b_avg
    return [LinearModel(np.ascontiguousarray(W[:, i * C:(i + 1) * C]), b[i * C:(i + 1) * C].copy(),
                        mean, scale, loss, float(lam)) for i, lam in enumerate(lambdas)]


def train_sklearn(reader, idx, y, n_classes, loss="svm", lam=1e-4, epochs=10, seed=0,
                  stats=None):
    """The same stream through scikit-learn's ``SGDClassifier.partial_fit`` (one lambda)."""
    from sklearn.linear_model import SGDClassifier
    import scipy.sparse as sp
    mean, scale = stats if stats is not None else feature_stats(reader, idx)
    clf = SGDClassifier(loss="hinge" if loss == "svm" else "log_loss", alpha=lam,
                        random_state=seed, learning_rate="optimal")
    classes = np.arange(n_classes)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for pos, X in reader.blocks(idx, rng=rng):
            if sp.issparse(X):  # scikit-learn cannot centre sparse rows: scale only
                X = X * scale
            else:
                X = (X - mean) * scale
            clf.partial_fit(X, y[pos], classes=classes)
    W = clf.coef_.T.astype(np.float32)
    b = clf.intercept_.astype(np.float32)
    if reader.sparse:
        return LinearModel(W, b, np.zeros_like(mean), scale, loss, lam, {"solver": "sklearn"})
    return LinearModel(W, b, mean, scale, loss, lam, {"solver": "sklearn"})


def decision_blocks(model, reader, idx):
    """Scores of the rows ``idx`` (sorted), in order: (len(idx) x classes) float32."""
    out = np.empty((len(idx), model.W.shape[1]), np.float32)
    for pos, X in reader.blocks(idx):
        out[pos] = model.decision_function(X)
    return out
