"""VLAD accumulation (hard assignments) and normalization.

Private module: ``features.encodings.vlad`` validates the input, assigns the
descriptors, runs the BLAS product of soft assignments and allocates every array; this
module only computes, without the GIL.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt


cdef void _rows(const float[:, ::1] x, const int[::1] labels, Py_ssize_t lo,
                Py_ssize_t hi, double[:, ::1] acc, double[::1] mass) noexcept nogil:
    cdef Py_ssize_t d = x.shape[1], i, e
    cdef int j
    for i in range(lo, hi):
        j = labels[i]
        mass[j] += 1.0
        for e in range(d):
            acc[j, e] += x[i, e]


def vlad_accumulate(const float[:, ::1] x, const int[::1] labels, Py_ssize_t lo,
                    Py_ssize_t hi, double[:, :, ::1] acc, double[:, ::1] mass,
                    int n_threads):
    """Add rows ``lo:hi`` of ``x`` to the sums ``acc[t, labels[i]]`` (threads, k, d) and
    count them in ``mass`` (threads, k); thread ``t`` takes its share of the rows.
    ``labels`` must be in ``[0, k)`` (checked by the caller)."""
    cdef Py_ssize_t t, n = hi - lo, a, b
    cdef int nt = n_threads
    if nt > n:
        nt = <int>n if n > 0 else 1
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        a = lo + n * t // nt
        b = lo + n * (t + 1) // nt
        _rows(x, labels, a, b, acc[t], mass[t])


ctypedef fused weight:
    float
    double


def vlad_accumulate_soft(const float[:, ::1] x, const weight[:, ::1] w, Py_ssize_t lo,
                         Py_ssize_t hi, double[:, ::1] acc, double[::1] mass):
    """Add ``w[i, k] * x[i]`` to ``acc[k]`` and ``w[i, k]`` to ``mass[k]`` for rows
    ``lo:hi`` and every positive weight (others are skipped, as VLFeat does): sparse
    weights (hard assignments as a matrix) cost little more than their non-zeros."""
    cdef Py_ssize_t k = w.shape[1], d = x.shape[1], i, j, e
    cdef double q
    with nogil:
        for i in range(lo, hi):
            for j in range(k):
                if w[i, j] > 0:
                    q = w[i, j]
                    mass[j] += q
                    for e in range(d):
                        acc[j, e] += q * x[i, e]


def vlad_finalize(const double[:, :, ::1] acc, const double[:, ::1] mass,
                  const float[:, ::1] centers, bint normalize_mass, bint square_root,
                  bint normalize_components, bint normalized, float[::1] out):
    """Residual sums ``sum_i q_ik (x_i - c_k)`` from the summed accumulators, then, in
    vl_vlad's order: division by the mass, signed square root, L2 normalization of each
    component, global L2 normalization; into ``out`` (k d)."""
    cdef Py_ssize_t nt = acc.shape[0], k = acc.shape[1], d = acc.shape[2]
    cdef Py_ssize_t t, j, e
    cdef double s, m, z, cn2, scale, norm2 = 0.0
    with nogil:
        for j in range(k):
            m = 0.0
            for t in range(nt):
                m = m + mass[t, j]
            cn2 = 0.0
            for e in range(d):
                s = 0.0
                for t in range(nt):
                    s = s + acc[t, j, e]
                if m > 0:
                    if normalize_mass:
                        s = s / m - centers[j, e]
                    else:
                        s = s - m * centers[j, e]
                else:
                    s = 0.0
                z = <float>s
                if square_root:
                    z = sqrt(z) if z >= 0 else -sqrt(-z)
                out[j * d + e] = <float>z
                cn2 = cn2 + z * z
            if normalize_components:
                scale = sqrt(cn2)
                if scale < 1e-12:
                    scale = 1e-12
                scale = 1.0 / scale
                cn2 = 0.0
                for e in range(d):
                    z = <float>(out[j * d + e] * scale)
                    out[j * d + e] = <float>z
                    cn2 = cn2 + z * z
            norm2 = norm2 + cn2
        if normalized:
            scale = sqrt(norm2)
            if scale < 1e-12:
                scale = 1e-12
            scale = 1.0 / scale
            for e in range(k * d):
                out[e] = <float>(out[e] * scale)
