"""Homogeneous kernel map, evaluated in closed form.

Private module: ``features.encodings.kernel_map`` validates the input, computes the
sampled spectrum (``kappa``) and its frequencies and allocates the output; this module
only evaluates, without the GIL.

For ``x > 0`` and ``L = 2 pi / period`` the map is

    psi_0(x)      = sqrt(L x**gamma kappa_0)
    psi_2j-1(x)   = sqrt(2 L x**gamma kappa_j) cos(freq_j L log x)
    psi_2j(x)     = sqrt(2 L x**gamma kappa_j) sin(freq_j L log x)

for ``j = 1 .. order``; ``psi(-x) = -psi(x)`` and ``psi(0) = 0``.
"""
from cython.parallel cimport prange
from libc.math cimport cos, fabs, log, pow, sin, sqrt


cdef inline void _expand(float x, const double[::1] kappa, const double[::1] freq,
                         double L, double gamma, float* out, Py_ssize_t order) noexcept nogil:
    cdef double ax = fabs(x), sign = 1.0 if x >= 0 else -1.0
    cdef double lxg, base, t
    cdef Py_ssize_t j
    if ax == 0:
        for j in range(2 * order + 1):
            out[j] = 0
        return
    lxg = L * (ax if gamma == 1.0 else pow(ax, gamma))
    t = L * log(ax)
    out[0] = <float>(sign * sqrt(lxg * kappa[0]))
    for j in range(1, order + 1):
        base = sign * sqrt(2.0 * lxg * kappa[j])
        out[2 * j - 1] = <float>(base * cos(freq[j] * t))
        out[2 * j] = <float>(base * sin(freq[j] * t))


def homkermap(const float[::1] x, const double[::1] kappa, const double[::1] freq,
              double L, double gamma, float[:, ::1] out, int n_threads=1):
    """Expand each ``x[i]`` into ``out[i, :]`` (``2 * order + 1`` values)."""
    cdef Py_ssize_t n = x.shape[0], order = kappa.shape[0] - 1, i
    if (freq.shape[0] != kappa.shape[0] or out.shape[0] != n
            or out.shape[1] != 2 * order + 1):
        raise ValueError("homkermap: shapes do not match")
    if n == 0:
        return
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        _expand(x[i], kappa, freq, L, gamma, &out[i, 0], order)
