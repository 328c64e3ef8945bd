"""VLAD: sums of residuals to the nearest centers, as VLFeat's ``vl_vlad``.

For descriptors ``x_i``, centers ``c_k`` (K x D) and assignments ``q_ik`` the encoding is
the concatenation of ``v_k = sum_i q_ik (x_i - c_k)`` (K blocks of D values, float32),
then, in this order (VLFeat 0.9.21's ``vl_vlad_encode``):

=========================  =======================================  ==================
parameter                  what                                     VLFeat flag
=========================  =======================================  ==================
``normalize_mass``         ``v_k / sum_i q_ik`` (False by default)  NORMALIZE_MASS
``square_root``            signed square root of every value        SQUARE_ROOT
``normalize_components``   L2 normalization of each ``v_k``         NORMALIZE_COMPONENTS
                           ("intra-normalization")
``normalized``             global L2 normalization; False is        not UNNORMALIZED
                           ``VL_VLAD_FLAG_UNNORMALIZED``
=========================  =======================================  ==================

The defaults (intra-normalization, square root, global L2) are those of Arandjelovic
and Zisserman, "All about VLAD" (2013). Every norm is floored at 1e-12, so a center
without descriptors keeps a zero block, and an image without descriptors (N = 0) is
encoded as the zero vector (what ``vl_vlad_encode`` returns for ``numData = 0``).

``assignments``:

- ``None``: hard assignment of each descriptor to its nearest center (exact Euclidean,
  ties to the smallest index: :class:`features.codebook.Assigner`);
- an integer array (N,): the index of each descriptor's center (hard assignment);
- a float array (N, K): soft assignment weights; weights <= 0 are ignored, as VLFeat
  does.

Hard assignments are accumulated by a compiled kernel (``ext/_vlad.pyx``), and so are
soft ones when at most a quarter of the weights are positive (a hard assignment given
as a matrix); denser ones by one float64 BLAS product per image. Sums are in float64,
the result float32.

:func:`vlad_batch` encodes many images from their concatenated descriptors and
``offsets`` (image i is rows ``offsets[i]:offsets[i+1]``), into an (n_images, K D)
float32 array the caller may provide: the assignment runs over blocks of several images
(at most 1024 rows), so memory is bounded by the block, not by the shard.
"""
from __future__ import annotations

import numpy as np

from .._shared.checks import check_out
from ..exceptions import ParameterError
from .._ext import load
from ..codebook import Assigner
from ._common import (BLOCK_ROWS, as_descriptors, as_matrix, blocks, check_finite,
                      check_flag, check_offsets, check_threads)

__all__ = ["vlad", "vlad_batch"]


def _kernel():
    return load("_vlad", "VLAD")


def _check_assignments(assignments, n, k):
    a = np.asarray(assignments)
    if a.ndim == 1 and a.dtype.kind in "iu":
        if a.shape[0] != n:
            raise ParameterError(f"assignments must have {n} entries (one per descriptor), "
                             f"got {a.shape[0]}")
        if n and (a.min() < 0 or a.max() >= k):
            bad = int(a.min()) if a.min() < 0 else int(a.max())
            raise ParameterError(f"assignments must be center indices in [0, {k}), got {bad}")
        return np.ascontiguousarray(a, dtype=np.int32)
    if a.ndim == 2 and a.dtype.kind in "iuf" and a.dtype != np.bool_:
        if a.shape != (n, k):
            raise ParameterError(f"soft assignments must have shape ({n}, {k}), got {a.shape}")
        if a.dtype not in (np.float32, np.float64):
            a = a.astype(np.float64)
        a = np.ascontiguousarray(a)
        check_finite(a, "assignments")
        return a
    raise ParameterError(f"assignments must be None, integer indices ({n},) or weights "
                     f"({n}, {k}), got shape {a.shape} and dtype {a.dtype}")


def _accumulate_soft(kern, x, w, start, stop, acc, mass):
    """Rows ``start:stop`` of soft weights ``w``: a loop over the positive weights when
    they are few (hard assignments given as a matrix), else one float64 BLAS product."""
    rows = w[start:stop]
    if np.count_nonzero(rows > 0) * 4 <= rows.size:
        kern.vlad_accumulate_soft(x, w, start, stop, acc, mass)
        return
    rows = np.maximum(rows, 0, dtype=np.float64)    # VLFeat ignores non-positive weights
    acc += rows.T @ x[start:stop].astype(np.float64)
    mass += rows.sum(axis=0)


def vlad_batch(x, offsets, centers, assignments=None, *, normalize_components=True,
               square_root=True, normalize_mass=False, normalized=True, n_threads=1,
               out=None):
    """VLAD of many images: (n_images, K D) float32.

    ``x`` (M, D) holds the descriptors of all images, image i being rows
    ``offsets[i]:offsets[i+1]``; ``assignments`` is None, (M,) indices or (M, K)
    weights for all rows. Other parameters as :func:`vlad`; ``out``, if given, is a
    C-contiguous float32 (n_images, K D) array that receives the rows and is returned.
    """
    c = np.asarray(centers)
    if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
        raise ParameterError(f"centers must be a non-empty (k, d) array, got shape {c.shape}")
    centers = as_matrix(c, "centers")
    k, d = centers.shape
    flags = [check_flag(v, name) for v, name in
             ((normalize_mass, "normalize_mass"), (square_root, "square_root"),
              (normalize_components, "normalize_components"), (normalized, "normalized"))]
    n_threads = check_threads(n_threads)
    raw = np.asarray(x)
    if raw.ndim == 2 and raw.dtype == np.uint8 and raw.shape[1] == d:
        x = np.ascontiguousarray(raw)      # converted per block
    else:
        x = as_descriptors(raw, d)
    offsets = check_offsets(offsets, x.shape[0])
    n_images = len(offsets) - 1
    out = check_out(out, (n_images, k * d))
    labels = soft = None
    assigner = None
    if assignments is None:
        assigner = Assigner(centers, n_threads=n_threads)
        labels = np.empty(x.shape[0], np.int32)
    else:
        a = _check_assignments(assignments, x.shape[0], k)
        if a.ndim == 1:
            labels = a
        else:
            soft = a
    kern = _kernel()
    t = n_threads if soft is None else 1
    acc = np.zeros((t, k, d))
    mass = np.zeros((t, k))
    for lo, hi, segments in blocks(offsets, BLOCK_ROWS):
        xb = x[lo:hi]
        if xb.dtype != np.float32:
            xb = xb.astype(np.float32)
        if assigner is not None and hi > lo:
            assigner.assign(xb, out=labels[lo:hi])
        for image, start, stop, last in segments:
            if stop > start:
                if soft is None:
                    kern.vlad_accumulate(xb, labels[lo:hi], start - lo, stop - lo, acc,
                                         mass, t)
                else:
                    _accumulate_soft(kern, xb, soft[lo:hi], start - lo, stop - lo, acc[0],
                                     mass[0])
            if last:
                kern.vlad_finalize(acc, mass, centers, *flags, out[image])
                acc[:] = 0.0
                mass[:] = 0.0
    return out


def vlad(x, centers, assignments=None, normalize_components=True, square_root=True,
         normalize_mass=False, normalized=True, n_threads=1):
    """VLAD of one image's descriptors, as VLFeat's ``vl_vlad``.

    Parameters
    ----------
    x : array_like, (N, D)
        Descriptors (uint8 or real; converted to float32); N may be 0 (the encoding is
        then the zero vector).
    centers : array_like, (K, D)
        The k-means centers.
    assignments : None, int array (N,) or float array (N, K)
        None: nearest center (exact); indices: hard; weights: soft (see module doc).
    normalize_components, square_root, normalize_mass, normalized : bool
        The normalizations, applied in VLFeat's order (see module doc).
    n_threads : int
        Threads of the assignment and of the compiled kernel.

    Returns
    -------
    float32 (K D,): the K residual blocks.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ParameterError(f"descriptors must have shape (n, d), got {x.shape}")
    return vlad_batch(x, [0, x.shape[0]], centers, assignments,
                      normalize_components=normalize_components, square_root=square_root,
                      normalize_mass=normalize_mass, normalized=normalized,
                      n_threads=n_threads)[0]
