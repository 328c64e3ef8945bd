"""Spatial-pyramid word counts of many images, as sparse rows.

Private module: ``features.encodings.spm`` validates the input, allocates the outputs and
turns the counts into weighted, normalized values; this module only counts, without the GIL.

Per image, every descriptor is counted once per grid in a dense scratch row of the pyramid's
width (the columns touched are remembered), then the touched columns are emitted in
increasing order and the scratch is cleared: by a scan of the row when at least 1/32 of it
was touched, else by sorting the touched columns.
"""
from libc.math cimport floor
from libc.stdlib cimport qsort

ctypedef long long int64


cdef int _cmp(const void* a, const void* b) noexcept nogil:
    cdef int64 x = (<int64*>a)[0], y = (<int64*>b)[0]
    return (x > y) - (x < y)


def pyramid_counts(const int[::1] words, const float[:, :] frames, const int64[::1] offsets,
                   const double[::1] widths, const double[::1] heights,
                   const int[::1] grid_rows, const int[::1] grid_cols, int n_words,
                   int64[::1] indptr, int64[::1] indices, int[::1] counts,
                   int[::1] scratch, int64[::1] touched):
    """Fill ``indptr`` (n + 1), ``indices`` and ``counts`` (at least len(words) x grids each)
    with each image's non-zero (column, count) pairs, columns increasing. ``scratch`` (the
    pyramid's width) must be all zeros and is left so; ``touched`` holds at least the largest
    image's descriptors x grids. Returns the number of non-zeros."""
    cdef Py_ssize_t n = offsets.shape[0] - 1, n_grids = grid_rows.shape[0]
    cdef Py_ssize_t i, j, g, t, n_touched
    cdef int64 at = 0, start, col, dim = scratch.shape[0]
    cdef int r, c, rows, cols
    cdef double fx, fy
    if (indptr.shape[0] != n + 1 or widths.shape[0] != n or heights.shape[0] != n
            or grid_cols.shape[0] != n_grids or frames.shape[0] != words.shape[0]
            or indices.shape[0] < words.shape[0] * n_grids
            or counts.shape[0] < words.shape[0] * n_grids):
        raise ValueError("pyramid_counts: shapes do not match")
    with nogil:
        indptr[0] = 0
        for i in range(n):
            n_touched = 0
            for j in range(offsets[i], offsets[i + 1]):
                fx = frames[j, 0] / widths[i]
                fy = frames[j, 1] / heights[i]
                start = 0
                for g in range(n_grids):
                    rows = grid_rows[g]
                    cols = grid_cols[g]
                    r = <int>floor(fy * rows)
                    c = <int>floor(fx * cols)
                    r = 0 if r < 0 else (rows - 1 if r >= rows else r)
                    c = 0 if c < 0 else (cols - 1 if c >= cols else c)
                    col = start + (<int64>(r * cols + c)) * n_words + words[j]
                    if scratch[col] == 0:
                        touched[n_touched] = col
                        n_touched += 1
                    scratch[col] += 1
                    start += (<int64>rows) * cols * n_words
            if n_touched * 32 >= dim:
                # Dense enough: a scan of the scratch row is cheaper than sorting.
                for col in range(dim):
                    if scratch[col]:
                        indices[at] = col
                        counts[at] = scratch[col]
                        scratch[col] = 0
                        at += 1
            else:
                if n_touched > 1:
                    qsort(&touched[0], n_touched, sizeof(int64), _cmp)
                for t in range(n_touched):
                    col = touched[t]
                    indices[at] = col
                    counts[at] = scratch[col]
                    scratch[col] = 0
                    at += 1
            indptr[i + 1] = at
    return at
