"""Diagonal Gaussian mixtures learned with EM (the model of Fisher vectors).

:func:`fit_gmm` returns a :class:`GMM` with VLFeat's conventions (``vl_gmm``):
``means`` (K, D), ``covariances`` the diagonal variances (K, D), ``priors``
(K,) summing to one, all float32.

The algorithm:

- Initialization from k-means (:func:`features.codebook.kmeans_fit`, the same
  exact Lloyd iterations as the codebook, seeded): each component starts as a
  cluster's mean, per-dimension variance and share of the rows (as
  ``vl_gmm`` with ``Initialization kmeans``); an empty cluster starts with the
  variance of the whole data and prior 0, and is restarted as below.
- EM in float64 on the rows centred by their mean, block by block (memory is
  O(block x K) beyond the input). The E step computes the log-likelihood of
  the current model, ``sum_i log sum_k prior_k N(x_i; mean_k, diag(var_k))``,
  then the M step re-estimates priors, means and variances (the exact EM
  update: variances around the new means).
- Variance floor, as ``vl_gmm``: every variance is kept at or above
  ``variance_floor`` (a scalar or one value per dimension; default 1e-4, the
  default lower bound of libvl 0.9.21's ``vl_gmm_new``), before the first E
  step and after every M step.
- Components whose prior falls below 1e-5 / K are restarted as ``vl_gmm``
  does: the component with the largest variances (L2 norm) is split in two
  along its dimension of largest variance (means at +- one variance, both
  halves with half that variance).
- Stopping: after ``iters`` EM iterations, or when the relative change of the
  log-likelihood falls below ``tol`` (1e-5, VLFeat's criterion).

Without floor clamps or restarts EM never decreases the log-likelihood; the
returned ``history`` lets callers check it. Same data and seed, same model.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from ..exceptions import ParameterError
from .._shared.checks import check_int
from ..codebook import kmeans_fit

__all__ = ["GMM", "fit_gmm", "gmm_log_likelihood", "gmm_posteriors"]

_BLOCK_ROWS = 8192
# libvl 0.9.21: vl_gmm_new sets every covariance lower bound to 1e-4.
VARIANCE_FLOOR = 1e-4


class GMM(NamedTuple):
    """A learned diagonal Gaussian mixture (VLFeat layout)."""
    means: np.ndarray        # float32 (K, D)
    covariances: np.ndarray  # float32 (K, D): diagonal variances
    priors: np.ndarray       # float32 (K,), sum 1
    log_likelihood: float    # total log-likelihood at the last E step
    iterations: int          # EM iterations run
    history: tuple           # log-likelihood at each E step


def _rows(x):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ParameterError(f"x must be a non-empty (n, d) array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"x must be numeric, got dtype {x.dtype}")
    return x


def fit_gmm(x, k, *, iters=100, seed=0, tol=1e-5, variance_floor=VARIANCE_FLOOR,
            kmeans_iters=25, n_threads=1, verbose=False) -> GMM:
    """EM for a K-component diagonal GMM on the rows of ``x`` (n, d); see the module doc.

    Parameters
    ----------
    k : int
        Number of components, 1 <= k <= n.
    iters : int
        Maximum EM iterations.
    seed : int
        Seed of the k-means initialization.
    tol : float
        Stop when ``|LL - LL_previous| / |LL|`` falls below it (0: run ``iters``).
    variance_floor : float or array (d,)
        Lower bound of every variance (> 0).
    kmeans_iters : int
        Lloyd iterations of the initialization.
    n_threads : int
        Threads of the k-means assignment kernel (never changes the result).
    """
    x = _rows(x)
    n, d = x.shape
    k = check_int(k, "k", 1)
    iters = check_int(iters, "iters", 1)
    kmeans_iters = check_int(kmeans_iters, "kmeans_iters", 1)
    if k > n:
        raise ParameterError(f"cannot learn {k} components from {n} rows")
    if not (isinstance(tol, numbers.Real) and tol >= 0):
        raise ParameterError(f"tol must be a number >= 0, got {tol!r}")
    floor = np.asarray(variance_floor, dtype=np.float64)
    if floor.ndim > 1 or (floor.ndim == 1 and floor.shape != (d,)):
        raise ParameterError(f"variance_floor must be a number or an array of {d} values, "
                         f"got shape {floor.shape}")
    if not (np.isfinite(floor).all() and (floor > 0).all()):
        raise ParameterError(f"variance_floor must be > 0 and finite, got {variance_floor!r}")
    floor = np.broadcast_to(floor, (d,))

    center = np.zeros(d)
    for start in range(0, n, _BLOCK_ROWS):
        center += x[start:start + _BLOCK_ROWS].sum(axis=0, dtype=np.float64)
    if not np.isfinite(center).all():
        raise ParameterError("x contains NaN or infinite values")
    center /= n

    means, variances, priors = _init_from_kmeans(x, k, center, floor, seed, kmeans_iters,
                                                 n_threads)
    history = []
    for it in range(iters):
        ll, nk, sx, sxx = _e_step(x, center, means, variances, priors)
        history.append(ll)
        if verbose:
            print(f"GMM EM iteration {it + 1}: log-likelihood {ll:.8g}", flush=True)
        means, variances, priors = _m_step(nk, sx, sxx, n, floor)
        _restart_empty(means, variances, priors)
        if tol > 0 and it > 0 and abs(ll - history[-2]) < tol * abs(ll):
            break
    return GMM((means + center).astype(np.float32), variances.astype(np.float32),
               priors.astype(np.float32), float(history[-1]), len(history), tuple(history))


def _init_from_kmeans(x, k, center, floor, seed, kmeans_iters, n_threads):
    n, d = x.shape
    if k == 1:
        labels = np.zeros(n, np.int64)
    else:
        labels = kmeans_fit(x, k, iters=kmeans_iters, seed=seed, n_threads=n_threads).labels
    import scipy.sparse  # only here: `import features` stays light
    onehot = scipy.sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
    counts = np.asarray(onehot.sum(axis=1)).ravel()
    sx = np.zeros((k, d))
    sxx = np.zeros((k, d))
    for start in range(0, n, _BLOCK_ROWS):
        b = x[start:start + _BLOCK_ROWS].astype(np.float64) - center
        part = onehot[:, start:start + _BLOCK_ROWS]
        sx += part @ b
        sxx += part @ (b * b)
    full = counts > 0
    means = np.zeros((k, d))
    variances = np.empty((k, d))
    means[full] = sx[full] / counts[full, None]
    variances[full] = sxx[full] / counts[full, None] - means[full] ** 2
    # An empty cluster: the variance of the whole data (vl_gmm does the same); its
    # prior 0 gets it restarted after the first iteration.
    variances[~full] = sxx.sum(axis=0) / n
    np.maximum(variances, floor, out=variances)
    return means, variances, counts / n


def _log_gaussians(b, means, variances, priors):
    """log(prior_k N(b_i; mean_k, diag(var_k))) for a block of centred rows: (m, K)."""
    d = b.shape[1]
    inv = 1.0 / variances
    const = (np.log(np.where(priors > 0, priors, 1.0)) - 0.5 * d * np.log(2 * np.pi)
             - 0.5 * np.log(variances).sum(axis=1) - 0.5 * (means * means * inv).sum(axis=1))
    out = (b * b) @ (-0.5 * inv.T)
    out += b @ (means * inv).T
    out += const
    # A component with prior 0 explains nothing.
    out[:, priors <= 0] = -np.inf
    return out


def _e_step(x, center, means, variances, priors):
    k, d = means.shape
    ll = 0.0
    nk = np.zeros(k)
    sx = np.zeros((k, d))
    sxx = np.zeros((k, d))
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        b = x[start:start + _BLOCK_ROWS].astype(np.float64) - center
        logp = _log_gaussians(b, means, variances, priors)
        top = logp.max(axis=1, keepdims=True)
        r = np.exp(logp - top)
        s = r.sum(axis=1, keepdims=True)
        ll += float((np.log(s) + top).sum())
        r /= s
        nk += r.sum(axis=0)
        sx += r.T @ b
        sxx += r.T @ (b * b)
    return ll, nk, sx, sxx


def _m_step(nk, sx, sxx, n, floor):
    k, d = sx.shape
    priors = nk / n
    means = np.zeros((k, d))
    variances = np.empty((k, d))
    alive = nk > 0
    means[alive] = sx[alive] / nk[alive, None]
    variances[alive] = sxx[alive] / nk[alive, None] - means[alive] ** 2
    variances[~alive] = floor
    np.maximum(variances, floor, out=variances)
    return means, variances, priors


def _restart_empty(means, variances, priors):
    """Split the widest component in two for each component of (near) zero prior."""
    k = len(priors)
    if k < 2:
        return
    for j in np.flatnonzero(priors < 1e-5 / k):
        norms = np.einsum("ij,ij->i", variances, variances)
        norms[j] = -1
        wide = int(np.argmax(norms))
        dim = int(np.argmax(variances[wide]))
        v = variances[wide, dim]
        means[j] = means[wide]
        variances[j] = variances[wide]
        means[j, dim] = means[wide, dim] - v
        means[wide, dim] += v
        variances[j, dim] = variances[wide, dim] = v / 2
        priors[j] = priors[wide] = priors[wide] / 2


def gmm_log_likelihood(x, model: GMM) -> float:
    """Total log-likelihood of the rows of ``x`` under ``model``."""
    x = _rows(x)
    means = model.means.astype(np.float64)
    variances = model.covariances.astype(np.float64)
    priors = model.priors.astype(np.float64)
    ll = 0.0
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        logp = _log_gaussians(x[start:start + _BLOCK_ROWS].astype(np.float64), means,
                              variances, priors)
        top = logp.max(axis=1, keepdims=True)
        ll += float((np.log(np.exp(logp - top).sum(axis=1)) + top[:, 0]).sum())
    return ll


def gmm_posteriors(x, model: GMM) -> np.ndarray:
    """Posterior probability of each component for each row: float64 (n, K)."""
    x = _rows(x)
    means = model.means.astype(np.float64)
    variances = model.covariances.astype(np.float64)
    priors = model.priors.astype(np.float64)
    out = np.empty((x.shape[0], len(priors)))
    for start in range(0, x.shape[0], _BLOCK_ROWS):
        logp = _log_gaussians(x[start:start + _BLOCK_ROWS].astype(np.float64), means,
                              variances, priors)
        r = np.exp(logp - logp.max(axis=1, keepdims=True))
        out[start:start + _BLOCK_ROWS] = r / r.sum(axis=1, keepdims=True)
    return out
