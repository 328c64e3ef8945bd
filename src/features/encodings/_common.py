"""Input checks and the block iteration shared by the encoders (private)."""
from __future__ import annotations

import numbers

import numpy as np

from ..exceptions import ParameterError
# Rows per block of the BLAS products: bounds the scratch memory (rows x k float32,
# 1 MB for k = 256, which the kernel then reads from cache); an image of more rows is
# encoded in several blocks.
BLOCK_ROWS = 1024


def check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_threads(n_threads):
    if (isinstance(n_threads, (bool, np.bool_))
            or not isinstance(n_threads, numbers.Integral) or n_threads < 1):
        raise ParameterError(f"n_threads must be a positive integer, got {n_threads!r}")
    return int(n_threads)


def check_finite(a, name):
    """Raise if ``a`` holds NaN or infinite values (min/max: one vectorized pass each)."""
    if a.size and not (np.isfinite(a.min()) and np.isfinite(a.max())):
        raise ParameterError(f"{name} contain NaN or infinite values")


def as_matrix(a, name, *, rows=None, cols=None):
    """A real (rows, cols) array as C-contiguous float32, finite."""
    a = np.asarray(a)
    if a.dtype.kind not in "iuf":
        raise ParameterError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    want = (rows if rows is not None else "n", cols if cols is not None else "d")
    if (a.ndim != 2 or (rows is not None and a.shape[0] != rows)
            or (cols is not None and a.shape[1] != cols)):
        raise ParameterError(f"{name} must have shape ({want[0]}, {want[1]}), got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    check_finite(a, name)
    return a


def as_descriptors(x, d):
    """Descriptors as C-contiguous float32 (n, d); ``n`` may be 0."""
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[0] == 0 and x.shape[1] == d and x.dtype.kind in "iuf":
        return np.zeros((0, d), np.float32)
    return as_matrix(x, "descriptors", cols=d)


def check_offsets(offsets, n_rows):
    """int64 (n + 1,) offsets: 0 first, ``n_rows`` last, non-decreasing."""
    o = np.asarray(offsets)
    if o.ndim != 1 or o.shape[0] < 1 or o.dtype.kind not in "iu":
        raise ParameterError(f"offsets must be a 1-D integer array of n_images + 1 values, "
                         f"got shape {o.shape} and dtype {o.dtype}")
    o = o.astype(np.int64)
    if o[0] != 0 or o[-1] != n_rows:
        raise ParameterError(f"offsets must start at 0 and end at the number of descriptors "
                         f"({n_rows}), got {int(o[0])} and {int(o[-1])}")
    if o.shape[0] > 1 and np.any(np.diff(o) < 0):
        bad = int(np.flatnonzero(np.diff(o) < 0)[0])
        raise ParameterError(f"offsets must be non-decreasing, got {int(o[bad])} then "
                         f"{int(o[bad + 1])} at index {bad}")
    return o




def blocks(offsets, block_rows=BLOCK_ROWS):
    """Split the images into blocks of rows for the BLAS products.

    Yields ``(lo, hi, segments)``: rows ``lo:hi`` of the descriptors and the
    ``(image, start, stop, last)`` segments they hold (rows ``start:stop``; ``last``
    when the segment ends its image). A block holds whole images up to ``block_rows``
    rows; an image with more rows is split over several blocks of its own.
    """
    n = len(offsets) - 1
    i = 0
    while i < n:
        start = int(offsets[i])
        if offsets[i + 1] - start > block_rows:
            stop = int(offsets[i + 1])
            for a in range(start, stop, block_rows):
                b = min(a + block_rows, stop)
                yield a, b, [(i, a, b, b == stop)]
            i += 1
            continue
        j = i + 1
        while j < n and offsets[j + 1] - start <= block_rows:
            j += 1
        yield start, int(offsets[j]), [(t, int(offsets[t]), int(offsets[t + 1]), True)
                                       for t in range(i, j)]
        i = j
