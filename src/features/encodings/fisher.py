"""Fisher vectors of descriptors under a diagonal GMM, as VLFeat's ``vl_fisher``.

For descriptors ``x_i`` (i = 1..N) and a GMM of K components with means ``mu_k``,
diagonal variances ``sigma_k**2`` (the ``covariances``, not standard deviations) and
priors ``pi_k``, the encoding is the concatenation of

    u_k = 1 / (N sqrt(pi_k))   sum_i q_ik (x_i - mu_k) / sigma_k
    v_k = 1 / (N sqrt(2 pi_k)) sum_i q_ik (((x_i - mu_k) / sigma_k)**2 - 1)

laid out as VLFeat 0.9.21 does: the K mean blocks ``u_1 .. u_K`` (each D values), then
the K variance blocks ``v_1 .. v_K``: 2 K D float32 values. ``q_ik`` is the posterior
of component k given ``x_i``. VLFeat's conventions are kept:

- posteriors below 1e-6 do not contribute, and components of prior below 1e-6 are left
  out (their posterior is 0 and their blocks are 0);
- ``fast=True`` (``VL_FISHER_FLAG_FAST``) assigns each descriptor to its most probable
  component only (posterior 1);
- ``improved=True`` (``VL_FISHER_FLAG_IMPROVED``) is the signed square root of every
  value, then L2 normalization (the norm floored at 1e-12); ``square_root`` and
  ``normalized`` set the two steps one at a time;
- an image without descriptors (N = 0) is encoded as the zero vector (what
  ``vl_fisher_encode`` returns for ``numData = 0``); it stays 0 through the
  normalizations.

Descriptors and model are converted to float32 (float64 input is rounded first, as
VLFeat's float path); accumulation is in float64. Agreement with ``vl_fisher_encode``
(Debian's libvlfeat 0.9.21, improved flag) on real SIFT descriptors is tested
(``tests/test_encodings_vlfeat.py``).

How it is computed
------------------
The N x K log-likelihoods are the expensive part (VLFeat computes every one directly).
Here one float32 BLAS product of the rows ``((x - s)**2, x - s)`` with the
``(-1/(2 sigma**2), (mu - s)/sigma**2)`` columns (``s`` a shift near the data, which
keeps the values small) approximates all of them, with a bound on its rounding error
per row. A compiled kernel (``ext/_fisher.pyx``) then scans each row: components more
than ``25 + 2 error`` nats below the best are left out (posteriors below ``exp(-25)``
of the best: together less than the float32 rounding of VLFeat's own
log-likelihoods); those within ``13.9 + error`` nats, the only ones
that may reach the 1e-6 posterior from which VLFeat accumulates, get their
log-likelihood computed directly; the others in between only count in the normalizer
of the posteriors (each below 1e-6 of it). The gradients are accumulated in float64
from the direct values. So the result is VLFeat's up to float rounding, whatever the
data, for about the cost of the product (measured: ``benchmarks/bench_encode.py``; an
all-BLAS variant that also forms the gradients as products is slower).

Batch form
----------
:func:`fisher_vector_batch` encodes many images at once from their concatenated
descriptors and ``offsets`` (image i is rows ``offsets[i]:offsets[i+1]``, as the store
keeps them), into an (n_images, 2 K D) float32 array that the caller may provide
(``out``): the products run over blocks of several images (at most ``BLOCK_ROWS`` =
1024 rows, an image of more rows in several blocks), so memory is bounded by the block,
not by the shard. The model is prepared once per call: call it per shard, not per image.

``n_threads`` is the thread count of the compiled kernel (effective when it is built
with OpenMP); the BLAS product uses the threads the BLAS library is set to.
"""
from __future__ import annotations

import numpy as np

from .._shared.checks import check_out
from ..exceptions import ParameterError
from .._ext import load
from ._common import (BLOCK_ROWS, as_descriptors, as_matrix, blocks, check_finite, check_flag,
                      check_offsets, check_threads)

__all__ = ["fisher_vector", "fisher_vector_batch"]

MIN_PRIOR = 1e-6
# Components more than this many nats below the best of a row are left out of its
# posteriors (exp(-25) ~ 1e-11 of the best: together less than the float32 rounding
# of VLFeat's own log-likelihoods).
_MARGIN = 25.0
# Components within this many nats of the best get their log-likelihood directly: any
# that may reach the posterior 1e-6 from which VLFeat accumulates (ln 1e6 = 13.82).
_EXACT_MARGIN = 13.9
_U32 = 2.0 ** -24
# Squared Mahalanobis distances above this could overflow the float32 product.
_FLOAT32_LIMIT = float(np.finfo(np.float32).max) / 64


def _kernel():
    return load("_fisher", "Fisher vector")


class _Model:
    """The GMM checked, converted and prepared for the kernel (once per call)."""

    def __init__(self, means, covariances, priors):
        mu = np.asarray(means)
        if mu.ndim != 2 or mu.shape[0] < 1 or mu.shape[1] < 1:
            raise ParameterError(f"means must be a non-empty (k, d) array, got shape {mu.shape}")
        k, d = mu.shape
        self.k, self.d = k, d
        self.means = as_matrix(mu, "means")
        var = as_matrix(covariances, "covariances", rows=k, cols=d).astype(np.float64)
        if var.min() <= 0:
            raise ParameterError(f"covariances (variances) must be positive, got minimum "
                             f"{var.min():.3g}")
        pri = np.asarray(priors)
        if pri.dtype.kind not in "iuf" or pri.shape != (k,):
            raise ParameterError(f"priors must be a real ({k},) array, got shape {pri.shape} "
                             f"and dtype {pri.dtype}")
        pri = pri.astype(np.float32).astype(np.float64)
        check_finite(pri, "priors")
        if pri.min() < 0:
            raise ParameterError(f"priors must be non-negative, got minimum {pri.min():.3g}")
        active = pri >= MIN_PRIOR
        if not active.any():
            raise ParameterError(f"at least one prior must be >= {MIN_PRIOR:g}, got maximum "
                             f"{pri.max():.3g}")
        # float32 variances as VLFeat sees them; 1/sigma rounded to float32 as it does
        var = var.astype(np.float32).astype(np.float64)
        inv = 1.0 / var
        self.isig = np.ascontiguousarray(np.sqrt(inv), dtype=np.float32)
        logc = np.full(k, -np.inf)
        logc[active] = np.log(pri[active]) - 0.5 * np.log(var[active]).sum(axis=1)
        self.logc = logc
        # The screening product: shifted so the data and means are small numbers.
        shift = (pri[active, None] * self.means[active]).sum(0) / pri[active].sum()
        self.shift = shift.astype(np.float32)
        mus = self.means.astype(np.float64) - self.shift
        self.weights = np.ascontiguousarray(
            np.vstack([-0.5 * inv.T, (mus * inv).T]), dtype=np.float32)
        c = np.full(k, -np.inf)
        spread = (mus[active] ** 2 * inv[active]).sum(axis=1)
        if spread.max() > _FLOAT32_LIMIT:
            raise ParameterError(f"means are too far apart for their covariances (squared "
                             f"Mahalanobis distance {spread.max():.3g} between a mean and "
                             f"the mixture's center overflows float32)")
        c[active] = logc[active] - 0.5 * spread
        self.c = c.astype(np.float32)
        # Error bound of the screening value h + c, per row: every term of the product
        # and the constant contribute at most (2d + 8) roundings (inputs, products,
        # sums); a factor 2 of margin.
        self._amax = (0.5 * inv[active]).max(axis=0).astype(np.float32)
        self._bmax = np.abs(mus[active] * inv[active]).max(axis=0).astype(np.float32)
        self._cmax = float(np.abs(c[active]).max())
        self._gamma = 2.0 * (2 * d + 8) * _U32
        self.uscale = np.zeros(k)
        self.vscale = np.zeros(k)
        self.uscale[active] = 1.0 / np.sqrt(pri[active])
        self.vscale[active] = 1.0 / np.sqrt(2.0 * pri[active])

    def check_range(self, x):
        """Refuse descriptors whose squared Mahalanobis distances would overflow float32
        (from the per-dimension extremes: one pass over ``x``)."""
        if not x.size:
            return
        reach = np.maximum(np.abs(x.max(axis=0) - self.shift.astype(np.float64)),
                           np.abs(x.min(axis=0) - self.shift.astype(np.float64)))
        worst = float((reach ** 2 * self._amax.astype(np.float64)).sum() * 2.0)
        if worst > _FLOAT32_LIMIT:
            raise ParameterError(f"descriptors have values up to {float(np.abs(x).max()):.3g}, "
                             f"too large for the model's covariances (squared Mahalanobis "
                             f"distances up to {worst:.3g} overflow float32)")

    def error_bound(self, z, out):
        """Error bound of the screening values of the rows of ``z`` = ((x-s)**2, x-s)."""
        d = self.d
        np.matmul(z[:, :d], self._amax, out=out)
        out += np.abs(z[:, d:]) @ self._bmax
        out += self._cmax
        out *= self._gamma
        return out


def _flags(improved, normalized, square_root, fast):
    improved = check_flag(improved, "improved")
    normalized = improved if normalized is None else check_flag(normalized, "normalized")
    square_root = improved if square_root is None else check_flag(square_root,
                                                                  "square_root")
    return normalized, square_root, check_flag(fast, "fast")


def _gmm_arrays(means, covariances, priors):
    """(means, covariances, priors): given as arrays, or as one fitted model (a
    :class:`~features.encodings.gmm.GMM`, or anything with those three attributes) in
    place of ``means``."""
    if covariances is None and priors is None and hasattr(means, "covariances"):
        return means.means, means.covariances, means.priors
    if covariances is None or priors is None:
        raise ParameterError("give the GMM's means, covariances and priors, or a fitted GMM "
                             "(features.encodings.fit_gmm) as the second argument", "gmm")
    return means, covariances, priors


def fisher_vector_batch(x, offsets, means, covariances=None, priors=None, *, improved=True,
                        normalized=None, square_root=None, fast=False, n_threads=1,
                        out=None):
    """Fisher vectors of many images: (n_images, 2 K D) float32.

    ``x`` (M, D) holds the descriptors of all images, image i being rows
    ``offsets[i]:offsets[i+1]`` (``offsets``: n_images + 1 non-decreasing integers, from
    0 to M). Other parameters as :func:`fisher_vector`; ``out``, if given, is a
    C-contiguous float32 (n_images, 2 K D) array that receives the rows and is returned.
    """
    model = _Model(*_gmm_arrays(means, covariances, priors))
    normalized, square_root, fast = _flags(improved, normalized, square_root, fast)
    n_threads = check_threads(n_threads)
    x = as_descriptors(x, model.d)
    model.check_range(x)
    offsets = check_offsets(offsets, x.shape[0])
    k, d = model.k, model.d
    n_images = len(offsets) - 1
    out = check_out(out, (n_images, 2 * k * d))
    kern = _kernel()
    t = n_threads
    acc = np.zeros((t, 2, k, d))
    cand = np.empty((t, k), np.int32)
    cand_p = np.empty((t, k))
    cand_w = np.empty((t, k), np.float32)
    rows = max(1, min(x.shape[0], BLOCK_ROWS))
    z = np.empty((rows, 2 * d), np.float32)
    h = np.empty((rows, k), np.float32)
    err = np.empty(rows, np.float32)
    for lo, hi, segments in blocks(offsets, BLOCK_ROWS):
        m = hi - lo
        xb = x[lo:hi]
        if m:
            np.subtract(xb, model.shift, out=z[:m, d:])
            np.square(z[:m, d:], out=z[:m, :d])
            np.matmul(z[:m], model.weights, out=h[:m])
            model.error_bound(z[:m], err[:m])
        for image, start, stop, last in segments:
            if stop > start:
                kern.fisher_accumulate(xb, h[:m], model.c, model.logc, err[:m],
                                       model.means, model.isig, _MARGIN,
                                       _EXACT_MARGIN, fast,
                                       start - lo, stop - lo, acc, cand, cand_p,
                                       cand_w, t)
            if last:
                kern.fisher_finalize(acc, int(offsets[image + 1] - offsets[image]),
                                     model.uscale, model.vscale, square_root,
                                     normalized, out[image])
                acc[:] = 0.0
    return out


def fisher_vector(x, means, covariances=None, priors=None, improved=True, normalized=None,
                  square_root=None, fast=False, n_threads=1):
    """Fisher vector of one image's descriptors, as VLFeat's ``vl_fisher``.

    Parameters
    ----------
    x : array_like, (N, D)
        Descriptors, already projected (PCA) to the model's dimension; N may be 0
        (the encoding is then the zero vector). Converted to float32.
    means, covariances : array_like, (K, D)
        The GMM's means and diagonal covariances (variances, sigma**2, positive); or a
        fitted GMM (:func:`features.encodings.fit_gmm`) as ``means``, alone.
    priors : array_like, (K,)
        Component weights, non-negative; components below 1e-6 are left out.
    improved : bool
        The improved Fisher vector: signed square root and L2 normalization
        (``VL_FISHER_FLAG_IMPROVED``); sets the defaults of the next two.
    normalized, square_root : bool, optional
        L2 normalization (``VL_FISHER_FLAG_NORMALIZED``) and signed square root
        (``VL_FISHER_FLAG_SQUARE_ROOT``) one at a time; by default ``improved``.
    fast : bool
        Hard assignment to the most probable component (``VL_FISHER_FLAG_FAST``).
    n_threads : int
        Threads of the compiled kernel.

    Returns
    -------
    float32 (2 K D,): the K mean-gradient blocks, then the K variance-gradient blocks.
    """
    means, covariances, priors = _gmm_arrays(means, covariances, priors)
    x = np.asarray(x)
    d = np.shape(means)[1] if np.ndim(means) == 2 else None
    if x.ndim != 2:
        raise ParameterError(f"descriptors must have shape (n, {d if d else 'd'}), "
                         f"got {x.shape}")
    return fisher_vector_batch(x, [0, x.shape[0]], means, covariances, priors,
                               improved=improved, normalized=normalized,
                               square_root=square_root, fast=fast,
                               n_threads=n_threads)[0]
