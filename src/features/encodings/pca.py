"""PCA of descriptors (the projection Fisher vectors are computed in).

:func:`fit_pca` returns a :class:`PCA`: the mean, the leading principal axes as
orthonormal rows (by decreasing variance) and their variances, optionally with
whitening. It is exact (eigendecomposition of the float64 covariance matrix,
accumulated block by block, so memory is O(d**2) beyond the input) and
deterministic: each axis' sign is fixed so that its entry of largest magnitude
is positive. Randomness only enters when ``max_rows`` subsamples the input
(seeded).

    model = fit_pca(sample, 64, whiten=True, seed=0)
    y = model.transform(descriptors)          # float32 (n, 64)

Store layout (``models/ENCODING/pca``): ``mean`` (d,), ``components`` (dims, d) and, as
attributes, ``whiten``, ``eps`` and the ``explained_variance`` the whitening
divides by (``sqrt(explained_variance + eps)``).
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._shared.checks import check_out
from ..exceptions import ParameterError
__all__ = ["PCA", "fit_pca", "pca_transform"]

# Rows per block of the covariance and of the projection: bounds the float64
# scratch to a few MB whatever the sample size.
_BLOCK_ROWS = 16384


class PCA(NamedTuple):
    """A learned PCA; ``transform`` projects (and whitens) rows."""
    mean: np.ndarray                 # float32 (d,)
    components: np.ndarray           # float32 (dims, d), orthonormal rows
    explained_variance: np.ndarray   # float32 (dims,), variance along each axis (n - 1)
    whiten: bool
    eps: float                       # added to the variances before whitening

    @property
    def dims(self) -> int:
        return self.components.shape[0]

    def transform(self, x, out=None):
        return pca_transform(x, self, out=out)


def _rows(x, name="x"):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ParameterError(f"{name} must be a (n, d) array, got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"{name} must be numeric, got dtype {x.dtype}")
    return x


def fit_pca(x, dims, *, whiten=False, eps=None, seed=0, max_rows=None) -> PCA:
    """Principal axes of the rows of ``x`` (n, d).

    Parameters
    ----------
    dims : int
        Number of axes kept, 1 <= dims <= d.
    whiten : bool
        If true, :meth:`PCA.transform` divides each coordinate by
        ``sqrt(explained_variance + eps)`` (unit variance on the training rows).
    eps : float, optional
        Regularizer of the whitening; by default 1e-6 times the largest
        variance, so that directions without variance are not blown up.
    seed, max_rows :
        If ``max_rows`` is given and smaller than n, the axes are learned from
        ``max_rows`` rows drawn at random with this seed.
    """
    x = _rows(x)
    n, d = x.shape
    if (isinstance(dims, (bool, np.bool_)) or not isinstance(dims, numbers.Integral)
            or not 1 <= dims <= d):
        raise ParameterError(f"dims must be an integer in [1, {d}], got {dims!r}")
    if n < 2:
        raise ParameterError(f"need at least 2 rows to learn a PCA, got {n}")
    if max_rows is not None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, numbers.Integral) or max_rows < 2:
            raise ParameterError(f"max_rows must be an integer >= 2, got {max_rows!r}")
        if max_rows < n:
            rng = np.random.default_rng(seed)
            x = x[np.sort(rng.choice(n, int(max_rows), replace=False))]
            n = x.shape[0]
    if eps is not None and not (np.isfinite(eps) and eps >= 0):
        raise ParameterError(f"eps must be a finite number >= 0, got {eps!r}")

    # Mean, then the scatter matrix of the centred rows, block by block in float64.
    total = np.zeros(d)
    for start in range(0, n, _BLOCK_ROWS):
        total += x[start:start + _BLOCK_ROWS].sum(axis=0, dtype=np.float64)
    if not np.isfinite(total).all():
        raise ParameterError("x contains NaN or infinite values")
    mean = total / n
    scatter = np.zeros((d, d))
    for start in range(0, n, _BLOCK_ROWS):
        b = x[start:start + _BLOCK_ROWS].astype(np.float64) - mean
        scatter += b.T @ b
    variances, axes = np.linalg.eigh(scatter / (n - 1))
    order = np.argsort(variances)[::-1][:dims]
    variances = np.maximum(variances[order], 0.0)
    axes = axes[:, order].T
    # A deterministic sign: the entry of largest magnitude of each axis is positive.
    lead = np.argmax(np.abs(axes), axis=1)
    axes *= np.where(axes[np.arange(dims), lead] < 0, -1.0, 1.0)[:, None]
    if eps is None:
        eps = 1e-6 * float(variances[0]) if variances[0] > 0 else 1e-12
    return PCA(mean.astype(np.float32), np.ascontiguousarray(axes, dtype=np.float32),
               variances.astype(np.float32), bool(whiten), float(eps))


def pca_transform(x, model: PCA, out=None):
    """``(x - mean) @ components.T``, divided by ``sqrt(variance + eps)`` if
    whitening: float32 (n, dims). ``out``, if given, is a C-contiguous float32
    (n, dims) array that receives the result."""
    x = _rows(x)
    d = model.components.shape[1]
    if x.shape[1] != d:
        raise ParameterError(f"x must have shape (n, {d}), got {x.shape}")
    n, dims = x.shape[0], model.components.shape[0]
    out = check_out(out, (n, dims))
    proj = model.components.T
    shift = model.mean @ proj
    if model.whiten:
        scale = (1.0 / np.sqrt(model.explained_variance.astype(np.float64) + model.eps))
        proj = (proj * scale).astype(np.float32)
        shift = (shift * scale).astype(np.float32)
    for start in range(0, n, _BLOCK_ROWS):
        b = out[start:start + _BLOCK_ROWS]
        np.matmul(x[start:start + _BLOCK_ROWS].astype(np.float32, copy=False), proj, out=b)
        b -= shift
    return out
