"""Nearest-centroid assignment (vector quantization) of descriptors to a codebook.

:class:`Assigner` returns, for each descriptor, the index of its nearest
centroid in Euclidean distance: its visual word. Every method is exact, not
approximate: the word is the argmin of the distance to the float32 centroids,
computed in float64 (``sum((x - c)**2)``), ties going to the smallest index.
Float descriptors are rounded to float32 first.

Methods
-------
``"pruned"`` (the default for codebooks of 64 words or more)
    A lower bound of every distance from a narrow BLAS product, then true
    distances for the few centroids that the bound cannot rule out. With
    ``V`` the ``r`` leading right singular vectors of the centroids (orthonormal
    axes), write ``x = V a + p`` and ``c = V b + q`` with ``p``, ``q``
    orthogonal to ``V``. Then ``||x - c||**2 = ||a - b||**2 + ||p - q||**2 >=
    ||a - b||**2 + (||p|| - ||q||)**2``: the squared distance between the
    ``(r + 1)``-dimensional points ``(a, ||p||)`` and ``(b, ||q||)``. The bounds
    of all ``k`` centroids are one float32 product of width ``r + 2`` (instead
    of ``d``); a compiled kernel then takes, per descriptor, the centroid of
    smallest bound, computes its true distance, and verifies the others
    whose bound may not exceed the best distance so far, smallest bound first.
    Every rounding error (projection, bound product, float32 distances) is
    bounded and added to the thresholds, and near-ties are decided in float64,
    so the result is exact whatever ``r``; ``r`` only sets the speed (by
    default the fewest axes leaving 5% of the centroids' variance outside).
    On 1000-word dense SIFT (sbow) and RootSIFT codebooks this leaves about 5
    true distances to compute per descriptor instead of 1000.

    On CPUs with AVX512_BF16 (GCC builds for x86-64), :meth:`Assigner.assign`
    computes the bounds in bfloat16 instead, tile by tile (4 rows against all
    centroids, searched while in cache: the ``n x k`` bounds are never
    stored), with the same words: see "bfloat16 bounds" below.
    ``FEATURES_ASSIGN_BF16=0`` in the environment when an assigner is made
    keeps it on the float32 BLAS path. :meth:`Assigner.assign_projected`
    (k-means) always takes the float32 path.
``"brute"``
    The same kernel with ``V`` the identity (the bound is the distance
    itself): all distances from one float32 BLAS product of width ``d + 1``,
    then the near-ties verified. The reference for ``"pruned"``; 2 to 3 times
    slower on SIFT codebooks.
``"auto"``
    ``"pruned"`` for ``k >= 64`` and ``d >= 32`` when the bound is at most
    ``3 d / 4`` wide, else ``"brute"``.

Measured (``benchmarks/bench_assign.py``, results in
``benchmarks/results/assign.md``): one thread, 1000 words, 128-D, about 1.2 ms
per 780-descriptor sbow image on the float32 path, 4 to 5 times faster than
FAISS ``IndexFlatL2.search`` (3 times on RootSIFT), with 100% agreement with
exact assignment; the bfloat16 path takes about 0.7 of that time.

All-zero descriptors (dense SIFT below its contrast threshold) get the
centroid of smallest norm without a search.

bfloat16 bounds
---------------
The rows ``x~`` (float32, within ``e`` of the exact ones, as above) and the
centroids ``c~`` (float64) are rounded to bfloat16 (8 significant bits, to
nearest even; zeros and subnormals to +0, which the instruction would read
as 0 anyway): ``x^`` and ``c^``. Their distances ``e_x = ||x^ - x~||`` (per
row) and ``e_c = max ||c^ - c~||`` (over the centroids) are computed in
float64, so by the triangle inequality
``||x - c|| >= ||x~ - c~|| - e >= ||x^ - c^|| - (e + e_x + e_c)``: the
bound of the float32 path with a radius larger by ``e_x + e_c`` (about 1 on
SIFT scales, where distances are in the hundreds). ``||x^ - c^||**2 -
||x^||**2`` is computed as ``fl32(||c^||**2) + sum_t x^_t (-2 c^_t)`` by
the bfloat16 dot product instruction: the products of two bfloat16 values
are exact in float32, and the at most ``2 ceil(w / 2) <= w + 1`` float32
additions of a ``w = r + 1``-term sum are each taken to err by up to 2 units
in the last place (``2 u``, u = 2**-24: any faithful rounding, whether the
instruction rounds after each product or after each pair), plus ``u`` for
rounding ``||c^||**2`` to float32. As ``sum_t |x^_t 2 c^_t| <= ||x^||**2 +
||c^||**2``, the computed value is within ``(2 (w + 1) + 1) u (||x^||**2 +
2 max ||c^||**2)`` of the exact one (doubled as a margin: the float64 sums
of squares round far less), plus ``(2 w + 2) 2**-126`` twice for results
the instruction flushes to zero. The thresholds are the float32 path's with
these ``e``, ``||x~||**2`` and slack, so the centroids verified include
every one that may be the nearest, and the result is the same.

The two BLAS products run with the threads the BLAS library is set to use
(limit them with ``threadpoolctl`` or ``OPENBLAS_NUM_THREADS``); ``n_threads``
is the thread count of the compiled kernel, effective when it is built with
OpenMP.
"""
from __future__ import annotations

import numbers
import os
import sys

import numpy as np

from .._ext import load
from .._shared.checks import check_out
from ..exceptions import ParameterError

__all__ = ["Assigner"]

METHODS = ("auto", "pruned", "brute")

# Rows per block of the bound product: bounds the scratch memory (rows x k
# float32) for big batches; one image (~800 rows) is one block.
_BLOCK_ROWS = 1024
# 2**-24, the unit roundoff of float32.
_U32 = 2.0 ** -24


def _kernel():
    return load("_assign", "assignment")


def _bf16_enabled():
    """Whether new assigners compute their bounds in bfloat16 (see module doc)."""
    if os.environ.get("FEATURES_ASSIGN_BF16", "1") == "0" or sys.byteorder != "little":
        return False
    return _kernel().cpu_has_bf16()


def _to_bf16(a):
    """The bfloat16 bits (uint16) of ``a`` rounded to float32 then to nearest
    even; zeros and subnormals become +0 (see ``asg_bf16_bits`` in
    ext/_assign.pyx). ``a`` must be finite and below float32's overflow."""
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    bits = ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    bits[(b & np.uint32(0x7F800000)) == 0] = 0
    return bits


def _from_bf16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _Bf16Bounds:
    """The centroids' side of the bfloat16 bound product (see module doc)."""

    def __init__(self, ctilde):
        k, w = ctilde.shape
        npairs = (w + 1) // 2
        kp = -(-k // 16) * 16
        chat = _from_bf16(_to_bf16(ctilde)).astype(np.float64)
        diff = chat - ctilde
        # The float64 sums of squares round far below the 1e-9 margin.
        self.centroid_error = float(np.sqrt(np.einsum("ij,ij->i", diff, diff).max())
                                    * (1 + 1e-9))
        cnorm2 = np.einsum("ij,ij->i", chat, chat)
        self.cnorm2_max = float(cnorm2.max())
        # -2 c^ is exact in bfloat16; pairs of coordinates (2p, 2p + 1) share a
        # 32-bit word, the first in the low half (little-endian view).
        pairs = np.zeros((k, 2 * npairs), np.uint16)
        pairs[:, :w] = _to_bf16(-2.0 * chat)
        self.weights = np.zeros((npairs, kp), np.uint32)
        self.weights[:, :k] = pairs.view(np.uint32).T
        # Padding centroids (never searched) get the largest bound.
        self.bias = np.full(kp, np.finfo(np.float32).max, np.float32)
        self.bias[:k] = cnorm2
        self.bound_rtol = 2.0 * (2 * (w + 1) + 1) * _U32
        self.bound_abs = 2.0 * (2 * w + 2) * 2.0 ** -126


def _check_values(a, name):
    """Finite, and small enough that float32 squared distances cannot overflow."""
    if a.size == 0:
        return
    big = max(abs(float(a.max())), abs(float(a.min())))
    if not np.isfinite(big):
        raise ParameterError(f"{name} contain NaN or infinite values")
    limit = np.sqrt(np.finfo(np.float32).max / (8.0 * a.shape[1]))
    if big > limit:
        raise ParameterError(f"{name} have values of magnitude {big:.3g}, above {limit:.3g} "
                         f"(their squared distances would overflow float32)")


def _default_rank(centroids, outside=0.05):
    """Fewest axes leaving at most ``outside`` (5%) of the centroids' variance outside.

    The bound's slack comes from the residuals ``p`` and ``q``; the cost is
    the product of width ``r + 2`` plus the verifications. Measured on 1000-word
    codebooks (benchmarks/bench_assign.py), the fastest ``r`` was about 42 for
    dense SIFT (sbow) and about 32 for RootSIFT: both leave ~5% outside. The
    bfloat16 product costs half as much per axis: there about 51 for sbow
    (3.5% outside) was the fastest.
    """
    c = centroids - centroids.mean(axis=0)
    energy = np.linalg.svd(c, compute_uv=False) ** 2
    total = energy.sum()
    if total == 0:
        return 0
    left = 1.0 - np.cumsum(energy) / total
    return int(min(np.searchsorted(-left, -outside) + 1, centroids.shape[1]))


class Assigner:
    """Assign descriptors to their nearest centroid (exact).

    Parameters
    ----------
    centroids : array_like, (k, d)
        The codebook; converted to float32 (the distances are those to the
        float32 centroids). Must be finite.
    method : {"auto", "pruned", "brute"}
        Search method; all of them return the same words (see module doc).
    rank : int, optional
        Number of axes ``r`` of the ``"pruned"`` bound, in ``[0, d]``; by
        default the fewest principal axes that leave at most 5% of the
        centroids' variance outside (about 42 for sbow and 32 for RootSIFT
        codebooks of 1000 words; with the bfloat16 bounds, 3.5% and an odd
        count: 51 for sbow). It changes the speed only, never the words.
    n_threads : int
        Threads of the compiled kernel (effective when built with OpenMP).

    Attributes
    ----------
    centroids : float32 (k, d)
    k, d : int
    method : str, the method in use (``"auto"`` resolved)
    rank : int, the width ``r`` of the bound (``d`` for ``"brute"``)
    axes : float64 (d, r), the orthonormal axes of the bound
    zero_word : int, the word of all-zero descriptors (the centroid of smallest norm)

    Bounded search (what k-means iterates on): :meth:`project` computes the rows'
    side of the bound once for given axes, :meth:`with_axes` makes an assigner of
    new centroids on the same axes, and :meth:`assign_projected` searches the
    projected rows, or only some of them, optionally writing Hamerly's bounds.
    """

    def __init__(self, centroids, *, method="auto", rank=None, n_threads=1):
        c = np.asarray(centroids)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ParameterError(f"centroids must be a non-empty (k, d) array, "
                             f"got shape {c.shape}")
        if c.dtype.kind not in "biuf":
            raise ParameterError(f"centroids must be numeric, got dtype {c.dtype}")
        c = np.ascontiguousarray(c, dtype=np.float32)
        _check_values(c, "centroids")
        if method not in METHODS:
            raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if (isinstance(n_threads, (bool, np.bool_))
                or not isinstance(n_threads, numbers.Integral) or n_threads < 1):
            raise ParameterError(f"n_threads must be a positive integer, got {n_threads!r}")
        self.centroids = c
        self.k, self.d = c.shape
        self.n_threads = int(n_threads)
        if rank is not None and (
                isinstance(rank, (bool, np.bool_)) or not isinstance(rank, numbers.Integral)
                or not 0 <= rank <= self.d):
            raise ParameterError(f"rank must be an integer in [0, {self.d}], got {rank!r}")
        self._use_bf16 = _bf16_enabled()
        if method != "brute":
            wider = rank is None and self._use_bf16
            if rank is None:
                rank = _default_rank(c.astype(np.float64))
            if method == "auto":
                # The bound pays when it is much narrower than d and k is big
                # enough to amortise its product.
                method = ("pruned" if self.k >= 64 and self.d >= 32
                          and 4 * rank <= 3 * self.d else "brute")
            if wider and method == "pruned":
                # The bfloat16 product affords more axes; its instruction takes
                # coordinates in pairs, and an even width r + 1 leaves none unused.
                rank = min(_default_rank(c.astype(np.float64), 0.035) | 1, self.d)
        if method == "brute":
            rank = self.d
        self.method = method
        self.rank = int(rank)
        self._prepare()

    @classmethod
    def with_axes(cls, centroids, axes, n_threads=1):
        """A ``"pruned"`` assigner whose bound uses the given orthonormal (d, r)
        float64 axes (:attr:`axes` of another assigner) rather than the
        centroids' own: k-means keeps them over several iterations so that the
        rows' projections (:meth:`project`) are computed once."""
        self = cls.__new__(cls)
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.k, self.d = self.centroids.shape
        self.n_threads = int(n_threads)
        self.method, self.rank = "pruned", int(axes.shape[1])
        self._prepare(axes)
        return self

    def _prepare(self, given_axes=None):
        c64 = self.centroids.astype(np.float64)
        if given_axes is not None:
            axes = given_axes
        elif self.rank == self.d:
            # No rotation: the bound is the distance itself (residual 0) and
            # the "projection" is the descriptor, exactly.
            axes = np.eye(self.d)
        else:
            # Any orthonormal axes give a valid bound; the leading right
            # singular vectors of the centroids (not centred: as tight as
            # centred PCA on SIFT codebooks, and ||x||**2 stays exact) give a
            # tight one. QR re-orthonormalizes in float64, so that validity
            # does not rest on the SVD's accuracy.
            _, _, vt = np.linalg.svd(c64, full_matrices=False)
            axes = np.zeros((self.d, self.rank))
            m = min(self.rank, vt.shape[0])
            axes[:, :m] = vt[:m].T
            axes, _ = np.linalg.qr(axes)
        b = c64 @ axes
        q2 = np.maximum(np.einsum("ij,ij->i", c64, c64) - np.einsum("ij,ij->i", b, b), 0.0)
        ctilde = np.hstack([b, np.sqrt(q2)[:, None]])
        cnorm2 = np.einsum("ij,ij->i", ctilde, ctilde)
        # Bound product: (a, ||p||, 1) @ weights = ||c~||**2 - 2 x~ . c~.
        self._weights = np.ascontiguousarray(
            np.vstack([-2.0 * ctilde.T, cnorm2[None, :]]), dtype=np.float32)
        self.axes = axes
        self._axes = np.ascontiguousarray(axes, dtype=np.float32)
        # The bfloat16 side is made on the first assign() (k-means' assigners
        # never need it).
        self._ctilde = ctilde
        self._bf16 = None
        if not hasattr(self, "_use_bf16"):
            self._use_bf16 = _bf16_enabled()
        self._cnorm2_max = float(cnorm2.max())
        width = self.rank + 2
        # Rounding bounds, each with a margin of 2 (u = 2**-24):
        # - projection: rounding the axes to float32 and a d-term product,
        #   |error| <= (d + 2) u ||x|| per coordinate (0 if not rotated);
        # - bound product: inputs rounded, a width-term product,
        #   |error| <= (width + 4) u (||x~||**2 + 2 ||c~||**2);
        # - float32 distance (sum of squares): relative (d + 4) u.
        self._proj_rtol = 0.0 if self.rank == self.d else 2.0 * (self.d + 2) * _U32
        self._bound_rtol = 2.0 * (width + 4) * _U32
        self._dist_rtol = 2.0 * (self.d + 4) * _U32
        self.zero_word = int(np.argmin(np.einsum("ij,ij->i", c64, c64)))

    def _check(self, descriptors):
        x = np.asarray(descriptors)
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ParameterError(f"descriptors must have shape (n, {self.d}), got {x.shape}")
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        if x.dtype.kind == "f":
            x = np.ascontiguousarray(x, dtype=np.float32)
            _check_values(x, "descriptors")
            return x
        raise ParameterError(f"descriptors dtype must be uint8 or float, got {x.dtype}")

    def assign(self, descriptors, out=None):
        """Index of the nearest centroid of each row, as int32 (n,).

        ``descriptors`` is uint8 or floating point (n, d); floats are
        converted to float32. ``out``, if given, is a C-contiguous int32 (n,)
        array that receives the words and is returned.
        """
        x = self._check(descriptors)
        n = x.shape[0]
        out = check_out(out, (n,), np.int32)
        if n == 0:
            return out
        kern = _kernel()
        block = min(n, _BLOCK_ROWS)
        t = self.n_threads
        bf = None
        if self._use_bf16:
            bf = self._bf16
            if bf is None:
                # Several threads may make it at once: the same value.
                bf = self._bf16 = _Bf16Bounds(self._ctilde)
        xf = np.empty((block, self.d), np.float32)
        rows = np.empty(block, np.intp)
        bufs = None
        for start in range(0, n, block):
            xb = x[start:start + block]
            nb = xb.shape[0]
            # All-zero descriptors (dense SIFT below its contrast threshold)
            # all get the same word; leaving them out of the BLAS products
            # pays from a few percent of them on. The others, as float32.
            m = kern.compact_rows(xb, xf, rows)
            if m == 0:
                out[start:start + nb] = self.zero_word
                continue
            if bufs is None:
                bufs = self._buffers(block, t, bf)
            words, proj, aug, bounds, norm2, radius, scratch = bufs
            xs = xf[:m]
            if proj is None:
                # No rotation: the "projection" is the descriptor, exactly.
                pb = xs
            else:
                pb = np.matmul(xs, self._axes, out=proj[:m])
            dest = out[start:start + m] if m == nb else words[:m]
            if bf is not None:
                # aug holds the bfloat16 pairs, bounds one tile per thread.
                kern.augment_bf16(xs, pb, self._proj_rtol, bf.centroid_error, aug[:m],
                                  norm2[:m], radius[:m], t)
                kern.assign_bf16(xs, aug[:m], norm2[:m], radius[:m], self.centroids,
                                 bf.weights, bf.bias, bf.cnorm2_max, bf.bound_rtol,
                                 bf.bound_abs, self._dist_rtol, self.zero_word, dest,
                                 bounds, *scratch[1:], t)
            else:
                kern.augment(xs, pb, self._proj_rtol, aug[:m], norm2[:m], radius[:m], t)
                np.matmul(aug[:m], self._weights, out=bounds[:m])
                kern.assign_pruned(xs, bounds[:m], norm2[:m], radius[:m], self.centroids,
                                   self._bound_rtol, self._dist_rtol, self._cnorm2_max,
                                   self.zero_word, dest, *scratch, t)
            if m < nb:
                ob = out[start:start + nb]
                ob[:] = self.zero_word
                ob[rows[:m]] = words[:m]
        return out

    def project(self, x):
        """The rows' side of the bound, ``(aug, norm2, radius)``, for all rows of
        ``x`` (uint8 or float32, C-contiguous); valid for every assigner with
        the same axes."""
        kern = _kernel()
        n = x.shape[0]
        aug = np.empty((n, self.rank + 2), np.float32)
        norm2 = np.empty(n, np.float64)
        radius = np.empty(n, np.float64)
        for start in range(0, n, _BLOCK_ROWS):
            xb = x[start:start + _BLOCK_ROWS]
            m = xb.shape[0]
            proj = xb.astype(np.float32) @ self._axes
            kern.augment(xb, proj, self._proj_rtol, aug[start:start + m],
                         norm2[start:start + m], radius[start:start + m], self.n_threads)
        return aug, norm2, radius

    def assign_projected(self, x, projected, out, rows=None, upper=None, lower=None):
        """:meth:`assign` for rows whose :meth:`project` is given (same axes).

        With ``rows`` (sorted int indices), only those rows are searched (their
        ``out`` entries written, the others left alone). With ``upper`` and
        ``lower`` (float64 (n,)), the kernel also writes each searched row's
        upper bound on its exact distance to its centroid and lower bound on
        its distance to every other centroid (see ``ext/_assign.pyx``).
        """
        kern = _kernel()
        aug, norm2, radius = projected
        n = x.shape[0] if rows is None else len(rows)
        if n == 0:
            return out
        block = min(n, _BLOCK_ROWS)
        t = self.n_threads
        bounds = np.empty((block, self.k), np.float32)
        xbuf, bmin, cand_h, cand_j, cand_d = self._scratch(t)
        if rows is not None:
            words = np.empty(block, np.int32)
            up = np.empty(block, np.float64) if upper is not None else None
            lo = np.empty(block, np.float64) if upper is not None else None
        for start in range(0, n, block):
            m = min(block, n - start)
            if rows is None:
                sl = slice(start, start + m)
                np.matmul(aug[sl], self._weights, out=bounds[:m])
                kern.assign_pruned(x[sl], bounds[:m], norm2[sl], radius[sl], self.centroids,
                                   self._bound_rtol, self._dist_rtol, self._cnorm2_max,
                                   self.zero_word, out[sl], xbuf, bmin, cand_h, cand_j,
                                   cand_d, t, None if upper is None else upper[sl],
                                   None if lower is None else lower[sl])
                continue
            # The rows to search again are gathered block by block (bounded
            # memory), searched, and their results scattered back.
            idx = rows[start:start + m]
            np.matmul(aug[idx], self._weights, out=bounds[:m])
            kern.assign_pruned(x[idx], bounds[:m], norm2[idx], radius[idx], self.centroids,
                               self._bound_rtol, self._dist_rtol, self._cnorm2_max,
                               self.zero_word, words[:m], xbuf, bmin, cand_h, cand_j,
                               cand_d, t, None if up is None else up[:m],
                               None if lo is None else lo[:m])
            out[idx] = words[:m]
            if up is not None:
                upper[idx] = up[:m]
                lower[idx] = lo[:m]
        return out

    def _buffers(self, block, t, bf=None):
        """Work arrays of one :meth:`assign` call, for blocks of ``block`` rows.
        Allocated per call (~2 us for an image): sharing them between calls
        would need a lock, as several threads may use one assigner. With the
        bfloat16 bounds ``bf``, the rows' side is their bfloat16 pairs and the
        bounds are one tile per thread."""
        proj = np.empty((block, self.rank), np.float32) if self.rank < self.d else None
        if bf is None:
            aug = np.empty((block, self.rank + 2), np.float32)
            bounds = np.empty((block, self.k), np.float32)
        else:
            aug = np.empty((block, bf.weights.shape[0]), np.uint32)
            bounds = np.empty((t, _kernel().TILE_ROWS * bf.weights.shape[1]), np.float32)
        return (np.empty(block, np.int32), proj, aug, bounds,
                np.empty(block, np.float64), np.empty(block, np.float64), self._scratch(t))

    def _scratch(self, t):
        """Per-thread work buffers of the pruned kernel."""
        return (np.empty((t, self.d), np.float32), np.empty((t, -(-self.k // 32)), np.float32),
                np.empty((t, self.k), np.float32), np.empty((t, self.k), np.int32),
                np.empty((t, self.k), np.float32))
