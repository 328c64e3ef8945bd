"""Spatial pyramids of visual-word histograms (Lazebnik, Schmid and Ponce, "Beyond bags of
features", CVPR 2006), from the words and frames a store holds.

Layout
------
A pyramid is a list of grids ``RxC``: ``R`` horizontal bands by ``C`` columns, so ``1x1`` is
the whole image, ``2x2`` its quadrants and ``3x1`` the three horizontal stripes of Chatfield
et al. 2011 ("1x1,2x2,3x1"). A descriptor at ``(x, y)`` falls in the cell of row
``floor(R y / height)`` and column ``floor(C x / width)`` (clipped to the grid, so the right
and bottom edges belong to the last cells; ``x / width`` is the frame's own coordinate when
the store keeps normalized frames). The encoding of an image with ``K`` words is the
concatenation, grid after grid in the given order and cell after cell in row-major order, of
one ``K``-bin histogram per cell: the value of word ``w`` in cell ``c`` of grid ``g`` is at
column ``offset[g] + c K + w`` with ``offset[g]`` the cells of the earlier grids times ``K``.

Normalization
-------------
Each grid's histograms are divided by the image's number of descriptors (so each grid sums
to 1, whatever the image size) and multiplied by the grid's weight. With the weights of
Lazebnik et al. (grid ``l`` of ``L + 1``, ``l = 0`` the coarsest: ``1 / 2**L`` for ``l = 0``
and ``1 / 2**(L - l + 1)`` otherwise; 1/4, 1/4, 1/2 for 1x1, 2x2, 4x4), the histogram
intersection of two such vectors is exactly their pyramid match kernel, and the weights sum
to 1 so the whole vector is L1-normalized. ``normalization`` then rescales each row: ``"l1"``
(the default: rows sum to 1, what the chi2 and intersection kernels and their maps expect),
``"l2"`` (unit Euclidean norm) or ``"none"``. An optional homogeneous kernel map
(:mod:`.kernel_map`) comes last; with it, column ``j`` expands into columns
``j (2 n + 1) .. j (2 n + 1) + 2 n``. An image without descriptors (or a failed one) has an
empty row: all zeros.

Rows are computed for a whole shard at once: a compiled kernel (``ext/_spm.pyx``) counts
each image's words per cell into a scratch row and emits the non-zeros in column order; the
weights and normalizations are NumPy on those non-zeros. Returned as a SciPy CSR matrix.
"""
from __future__ import annotations

import re

import numpy as np

from ..exceptions import ParameterError
from .._ext import load
from .kernel_map import HomogeneousKernelMap

__all__ = ["parse_grids", "level_weights", "spatial_pyramid", "spatial_pyramid_reference",
           "pyramid_dimension", "NORMALIZATIONS", "DEFAULT_GRIDS"]

DEFAULT_GRIDS = ((1, 1), (2, 2), (4, 4))
NORMALIZATIONS = ("l1", "l2", "none")


def parse_grids(spec) -> tuple[tuple[int, int], ...]:
    """``"1x1,2x2,4x4"`` (or a sequence of ``"RxC"`` strings or (R, C) pairs) -> ((1, 1), ...)."""
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        parts = list(spec)
    grids = []
    for p in parts:
        if isinstance(p, str):
            m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", p)
            if not m:
                raise ParameterError(f"grid must look like RxC (e.g. 2x2), got {p!r}")
            rows, cols = int(m.group(1)), int(m.group(2))
        else:
            rows, cols = (int(v) for v in p)
        if rows < 1 or cols < 1 or rows * cols > 4096:
            raise ParameterError(f"grid must have between 1 and 4096 cells, got {rows}x{cols}")
        grids.append((rows, cols))
    if not grids:
        raise ParameterError(f"grids must name at least one grid, got {spec!r}")
    return tuple(grids)


def level_weights(n_levels, scheme="lazebnik") -> np.ndarray:
    """Per-grid weights: ``"lazebnik"`` (1/2**L, then 1/2**(L - l + 1); they sum to 1) or
    ``"uniform"`` (1 / n_levels each)."""
    if n_levels < 1:
        raise ParameterError(f"n_levels must be >= 1, got {n_levels}")
    if scheme == "uniform":
        return np.full(n_levels, 1.0 / n_levels)
    if scheme != "lazebnik":
        raise ParameterError(f"weights must be 'lazebnik' or 'uniform', got {scheme!r}")
    top = n_levels - 1
    return np.array([0.5 ** top if lv == 0 else 0.5 ** (top - lv + 1)
                     for lv in range(n_levels)])


def pyramid_dimension(n_words, grids, kernel_map: HomogeneousKernelMap | None = None) -> int:
    dim = n_words * sum(r * c for r, c in grids)
    return dim * (kernel_map.dimension if kernel_map is not None else 1)


def _check(words, frames, offsets, widths, heights, n_words):
    words = np.asarray(words)
    frames = np.asarray(frames)
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    if n < 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(words):
        raise ParameterError(f"offsets must rise from 0 to len(words) = {len(words)}")
    if frames.ndim != 2 or frames.shape[0] != len(words) or frames.shape[1] < 2:
        raise ParameterError(f"frames must be (len(words), >= 2), got {frames.shape}")
    if len(words) and (words.min() < 0 or words.max() >= n_words):
        raise ParameterError(f"words must lie in [0, {n_words}), got {words.min()}..{words.max()}")
    widths = np.broadcast_to(np.asarray(widths, np.float64), (n,))
    heights = np.broadcast_to(np.asarray(heights, np.float64), (n,))
    return words, frames, offsets, widths, heights


def spatial_pyramid(words, frames, offsets, widths, heights, n_words, grids=DEFAULT_GRIDS, *,
                    weights="lazebnik", normalization="l1", kernel_map=None,
                    units="pixels"):
    """Spatial-pyramid rows of several images at once.

    Parameters
    ----------
    words : (M,) int
        Visual word of each descriptor, images one after the other.
    frames : (M, >= 2) float
        ``x, y`` of each descriptor (in pixels of the image, or in [0, 1] when ``units`` is
        ``"normalized"``).
    offsets : (n + 1,) int
        The descriptors of image ``i`` are ``offsets[i]:offsets[i + 1]``.
    widths, heights : (n,) or scalar
        Image sizes, in the frames' pixel units (ignored for normalized frames).
    n_words : int
    grids : grid spec (see :func:`parse_grids`)
    weights : "lazebnik", "uniform" or a sequence of one weight per grid
    normalization : "l1", "l2" or "none"
    kernel_map : HomogeneousKernelMap, optional

    Returns
    -------
    scipy.sparse.csr_matrix (n, dim): column indices sorted within each row, float32
    values.
    """
    grids = parse_grids(grids)
    if normalization not in NORMALIZATIONS:
        raise ParameterError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, "
                         f"got {normalization!r}")
    if units not in ("pixels", "normalized"):
        raise ParameterError(f"units must be 'pixels' or 'normalized', got {units!r}")
    if isinstance(weights, str):
        w = level_weights(len(grids), weights)
    else:
        w = np.asarray(weights, np.float64)
        if w.shape != (len(grids),) or np.any(w < 0):
            raise ParameterError(f"weights must be {len(grids)} non-negative values, "
                                 f"got {weights!r}")
    words, frames, offsets, widths, heights = _check(words, frames, offsets, widths, heights,
                                                     n_words)
    n = len(offsets) - 1
    counts = np.diff(offsets)
    if units == "pixels":
        sx = np.where(widths > 0, widths, 1.0).astype(np.float64)
        sy = np.where(heights > 0, heights, 1.0).astype(np.float64)
    else:
        sx = sy = np.ones(n)
    cells = np.array([r * c for r, c in grids], np.int64)
    starts = np.concatenate([[0], np.cumsum(cells)])[:-1] * n_words
    dim = int(cells.sum()) * n_words
    m = len(words)
    indptr = np.empty(n + 1, np.int64)
    cols = np.empty(m * len(grids), np.int64)
    hits = np.empty(m * len(grids), np.int32)
    load("_spm", "spatial pyramid").pyramid_counts(
        np.ascontiguousarray(words, np.int32), np.asarray(frames, np.float32),
        offsets, np.ascontiguousarray(sx), np.ascontiguousarray(sy),
        np.array([r for r, _ in grids], np.int32), np.array([c for _, c in grids], np.int32),
        int(n_words), indptr, cols, hits, np.zeros(dim, np.int32),
        np.empty(max(int(counts.max()) if n else 0, 1) * len(grids), np.int64))
    nnz = int(indptr[-1])
    col, hits = cols[:nnz], hits[:nnz]
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(n), lengths)
    grid_of = np.searchsorted(starts, col, side="right") - 1
    values = hits * w[grid_of] / counts[row]
    if normalization != "none" and len(values):
        norms = np.bincount(row, weights=values if normalization == "l1" else values ** 2,
                            minlength=n)
        if normalization == "l2":
            norms = np.sqrt(norms)
        norms[norms == 0] = 1.0
        values = values / norms[row]
    indices = col
    values = values.astype(np.float32)
    if kernel_map is not None:
        indices, values = kernel_map.transform_sparse(indices, values)
        lengths = lengths * kernel_map.dimension
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    out_dim = dim * (kernel_map.dimension if kernel_map is not None else 1)
    index_type = np.int32 if out_dim <= np.iinfo(np.int32).max else np.int64
    import scipy.sparse as sp   # SciPy's CSR: the matrix the ecosystem takes
    return sp.csr_matrix((values, indices.astype(index_type), indptr), shape=(n, out_dim))


def spatial_pyramid_reference(words, frames, width, height, n_words, grids=DEFAULT_GRIDS, *,
                              weights="lazebnik", normalization="l1", kernel_map=None,
                              units="pixels") -> np.ndarray:
    """One image's pyramid as a dense float64 vector, written plainly (the tests' reference)."""
    grids = parse_grids(grids)
    w = level_weights(len(grids), weights) if isinstance(weights, str) else np.asarray(weights)
    words = np.asarray(words, np.int64)
    frames = np.asarray(frames, np.float64)
    parts = []
    for g, (rows, cols) in enumerate(grids):
        hist = np.zeros((rows, cols, n_words))
        for word, (x, y) in zip(words, frames[:, :2]):
            u, v = (x / width, y / height) if units == "pixels" else (x, y)
            r = min(max(int(np.floor(v * rows)), 0), rows - 1)
            c = min(max(int(np.floor(u * cols)), 0), cols - 1)
            hist[r, c, word] += 1
        if len(words):
            hist *= w[g] / len(words)
        parts.append(hist.reshape(-1))
    vec = np.concatenate(parts)
    norm = {"l1": np.abs(vec).sum(), "l2": np.linalg.norm(vec), "none": 1.0}[normalization]
    if norm > 0:
        vec = vec / norm
    if kernel_map is not None:
        vec = kernel_map.reference(vec).astype(np.float64)
    return vec
