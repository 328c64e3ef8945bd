"""Inner products of dense queries with sparse stored rows, for re-scoring a shortlist.

Private module: ``features.refine`` opens the rows, validates and allocates the outputs;
this module only computes, without the GIL.

A stored row is a run of (column, value) pairs: columns as uint16, values as IEEE half
precision bit patterns (uint16), converted here without needing F16C instructions.
"""
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport int64_t, uint16_t, uint32_t


cdef inline float _half(uint16_t h) noexcept nogil:
    cdef uint32_t sign = <uint32_t>(h & 0x8000) << 16
    cdef uint32_t exp = (h >> 10) & 0x1f
    cdef uint32_t man = h & 0x3ff
    cdef uint32_t bits
    cdef float f
    if exp == 0:
        # zero or subnormal: man * 2**-24
        f = <float>man * 5.9604644775390625e-08
        return -f if sign else f
    if exp == 31:
        bits = sign | 0x7f800000 | (man << 13)
    else:
        bits = sign | ((exp + 112) << 23) | (man << 13)
    return (<float*>&bits)[0]


def sparse_scores(const float[:, ::1] queries, const int64_t[::1] indptr,
                  const uint16_t[::1] columns, const uint16_t[::1] values,
                  const int64_t[:, ::1] ids, float[:, ::1] out, int n_threads=1):
    """out[i, j] = queries[i] . row ids[i, j]; -inf where ids[i, j] < 0 (no candidate)."""
    cdef Py_ssize_t n = ids.shape[0], m = ids.shape[1], i
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        _score_one(queries, indptr, columns, values, ids, out, i, m)


cdef void _score_one(const float[:, ::1] queries, const int64_t[::1] indptr,
                     const uint16_t[::1] columns, const uint16_t[::1] values,
                     const int64_t[:, ::1] ids, float[:, ::1] out, Py_ssize_t i,
                     Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    cdef int64_t row, a, b, p
    cdef float s
    for j in range(m):
        row = ids[i, j]
        if row < 0:
            out[i, j] = -INFINITY
            continue
        a = indptr[row]
        b = indptr[row + 1]
        s = 0
        for p in range(a, b):
            s = s + queries[i, columns[p]] * _half(values[p])
        out[i, j] = s
