"""Fisher vector accumulation from screened GMM log-likelihoods.

Private module: ``features.encodings.fisher`` validates the input, prepares the model,
runs the BLAS product that screens the components and allocates every array; this module
only computes, without the GIL.

Per descriptor ``x`` (a row of ``x``), ``h[k] + c[k]`` approximates the component
log-likelihood ``logc[k] - 0.5 sum_d ((x_d - mu_kd) / sigma_kd)**2`` (float32 product),
within ``err`` (a bound per row). :func:`fisher_accumulate` keeps the components whose
approximation is within ``margin + 2 err`` of the best of the row: the others have
posteriors below ``exp(-margin)`` of the best, which changes nothing in float32. Of the
kept ones, those within ``exact_margin + err`` (``exact_margin`` > ln 1e6) of the direct
log-likelihood of the best screened component get their log-likelihood computed
directly: they alone may reach the posterior 1e-6 from which
VLFeat accumulates; the others only add their (approximate) probability to the
normalizer of the posteriors, each less than 1e-6 of it. For every posterior
``q >= 1e-6``, ``q z`` and ``q (z**2 - 1)`` with ``z = (x - mu_k) / sigma_k`` are added to
the accumulators of component ``k``. With ``fast``, only the most probable component
(compared directly among those within the error of the best) gets ``q = 1``.
:func:`fisher_finalize` scales, square-roots and normalizes.
"""
from cython.parallel cimport prange
from libc.math cimport sqrt

cdef extern from *:
    """
    #include <math.h>

    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define FV_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define FV_CLONES
    #endif
    #define FV_LANES 16

    /* max over j of h[j] + c[j] (c is -inf for left-out components) */
    FV_CLONES
    static float fv_row_max(const float *h, const float *c, Py_ssize_t k)
    {
        float m[FV_LANES];
        Py_ssize_t j, l, kmain = k - k % FV_LANES;
        float best = -INFINITY;
        for (l = 0; l < FV_LANES; l++)
            m[l] = -INFINITY;
        for (j = 0; j < kmain; j += FV_LANES)
            for (l = 0; l < FV_LANES; l++) {
                float v = h[j + l] + c[j + l];
                m[l] = v > m[l] ? v : m[l];
            }
        for (l = 0; l < FV_LANES; l++)
            best = m[l] > best ? m[l] : best;
        for (j = kmain; j < k; j++) {
            float v = h[j] + c[j];
            best = v > best ? v : best;
        }
        return best;
    }

    /* indices j (increasing) with h[j] + c[j] >= thr into cj (room for k); returns
       their count. Branchless: a few of the k pass, at unpredictable places. */
    FV_CLONES
    static Py_ssize_t fv_collect(const float *h, const float *c, Py_ssize_t k,
                                 float thr, int *cj)
    {
        Py_ssize_t j, m = 0;
        for (j = 0; j < k; j++) {
            cj[m] = (int)j;
            m += (h[j] + c[j] >= thr);
        }
        return m;
    }

    /* sum_d ((x_d - mu_d) * is_d)**2 in float32, in FV_LANES partial sums */
    FV_CLONES
    static float fv_mahal(const float *x, const float *mu, const float *is, Py_ssize_t d)
    {
        float a[FV_LANES];
        Py_ssize_t t, l, dmain = d - d % FV_LANES;
        float s = 0.0f;
        for (l = 0; l < FV_LANES; l++)
            a[l] = 0.0f;
        for (t = 0; t < dmain; t += FV_LANES)
            for (l = 0; l < FV_LANES; l++) {
                float z = (x[t + l] - mu[t + l]) * is[t + l];
                a[l] += z * z;
            }
        for (t = dmain; t < d; t++) {
            float z = (x[t] - mu[t]) * is[t];
            s += z * z;
        }
        for (l = 0; l < FV_LANES; l++)
            s += a[l];
        return s;
    }

    /* exp(v) for v <= 0 as 2**n 2**f (n integer, f in [0, 1)), 2**f by a degree-5
       polynomial: relative error below 3e-7 on [-87, 0] (checked against libm's
       exp in double); 0 below 2**-126. Cheaper than libm's exp, and the loop over the kept
       components of a row vectorizes. */
    static inline float fv_exp(float v)
    {
        double t = (double)v * 1.4426950408889634;
        float f, p;
        int n;
        union { float f; int i; } u;
        if (t < -126.0)
            return 0.0f;
        n = (int)t;             /* truncation: t <= 0 so n = ceil(t) */
        n = (double)n > t ? n - 1 : n;
        f = (float)(t - (double)n);
        p = 1.8775767e-3f;
        p = p * f + 8.9893397e-3f;
        p = p * f + 5.5826318e-2f;
        p = p * f + 2.4015361e-1f;
        p = p * f + 6.9315308e-1f;
        p = p * f + 9.9999994e-1f;
        u.i = (n + 127) << 23;
        return p * u.f;
    }

    /* w[a] = exp(p[a] - pmax) for a < m; returns their sum */
    FV_CLONES
    static double fv_softmax(const double *p, Py_ssize_t m, double pmax, float *w)
    {
        Py_ssize_t a;
        double total = 0.0;
        for (a = 0; a < m; a++)
            w[a] = fv_exp((float)(p[a] - pmax));
        for (a = 0; a < m; a++)
            total += w[a];
        return total;
    }

    /* u += q z, v += q (z*z - 1) with z = (x - mu) * is */
    FV_CLONES
    static void fv_add(const float *x, const float *mu, const float *is, Py_ssize_t d,
                       double q, double *u, double *v)
    {
        Py_ssize_t t;
        for (t = 0; t < d; t++) {
            double z = (double)((x[t] - mu[t]) * is[t]);
            u[t] += q * z;
            v[t] += q * (z * z - 1.0);
        }
    }
    """
    float fv_row_max(const float *h, const float *c, Py_ssize_t k) noexcept nogil
    Py_ssize_t fv_collect(const float *h, const float *c, Py_ssize_t k, float thr,
                          int *cj) noexcept nogil
    float fv_mahal(const float *x, const float *mu, const float *isig,
                   Py_ssize_t d) noexcept nogil
    void fv_add(const float *x, const float *mu, const float *isig, Py_ssize_t d,
                double q, double *u, double *v) noexcept nogil
    double fv_softmax(const double *p, Py_ssize_t m, double pmax, float *w) noexcept nogil

# Posteriors below this are not accumulated (as vl_fisher).
cdef double _MIN_POSTERIOR = 1e-6


cdef void _rows(const float[:, ::1] x, const float[:, ::1] h, const float[::1] c,
                const double[::1] logc, const float[::1] err,
                const float[:, ::1] means, const float[:, ::1] isig, double margin,
                double exact_margin, bint fast, Py_ssize_t lo, Py_ssize_t hi,
                double[:, :, ::1] acc, int[::1] cand, double[::1] cand_p,
                float[::1] cand_w) noexcept nogil:
    cdef Py_ssize_t k = means.shape[0], d = means.shape[1]
    cdef Py_ssize_t i, a, m, best
    cdef int j
    cdef float top, hv, exact_from
    cdef double p, pmax, total, q
    for i in range(lo, hi):
        top = fv_row_max(&h[i, 0], &c[0], k)
        if fast:
            # only the most probable component counts: those within the error of the
            # best are compared directly
            m = fv_collect(&h[i, 0], &c[0], k, <float>(top - 2.0 * err[i] - 0.5),
                           &cand[0])
        else:
            m = fv_collect(&h[i, 0], &c[0], k, <float>(top - margin - 2.0 * err[i]),
                           &cand[0])
        if m == 0:
            continue
        # Components that may reach a posterior of 1e-6 get their log-likelihood
        # directly (the 1e-6 cut and the accumulation use it); the others only add
        # their (screening) probability to the normalizer, where each weighs less
        # than 1e-6. The direct value of the best screened component anchors the
        # test: the largest log-likelihood is at least that value, and a screened
        # value is at most err above its direct one.
        exact_from = <float>(top - exact_margin - 2.0 * err[i])
        if not fast:
            for a in range(m):
                j = cand[a]
                if h[i, j] + c[j] == top:
                    p = logc[j] - 0.5 * fv_mahal(&x[i, 0], &means[j, 0], &isig[j, 0], d)
                    exact_from = <float>(p - exact_margin - err[i])
                    break
        pmax = -1e300
        best = 0
        for a in range(m):
            j = cand[a]
            hv = h[i, j] + c[j]
            if fast or hv >= exact_from:
                p = logc[j] - 0.5 * fv_mahal(&x[i, 0], &means[j, 0], &isig[j, 0], d)
                if p > pmax:
                    pmax = p
                    best = a
            else:
                p = hv
                cand[a] = -1 - j
            cand_p[a] = p
        if fast:
            # hard assignment to the most probable component (the first of equals)
            j = cand[best]
            fv_add(&x[i, 0], &means[j, 0], &isig[j, 0], d, 1.0, &acc[0, j, 0],
                   &acc[1, j, 0])
            continue
        # the screening values approximate the same log-likelihoods (same constant)
        total = fv_softmax(&cand_p[0], m, pmax, &cand_w[0])
        for a in range(m):
            j = cand[a]
            if j < 0:
                continue
            q = cand_w[a] / total
            if q < _MIN_POSTERIOR:
                continue
            fv_add(&x[i, 0], &means[j, 0], &isig[j, 0], d, q, &acc[0, j, 0],
                   &acc[1, j, 0])


def fisher_accumulate(const float[:, ::1] x, const float[:, ::1] h, const float[::1] c,
                      const double[::1] logc, const float[::1] err,
                      const float[:, ::1] means, const float[:, ::1] isig, double margin,
                      double exact_margin, bint fast, Py_ssize_t lo, Py_ssize_t hi,
                      double[:, :, :, ::1] acc, int[:, ::1] cand, double[:, ::1] cand_p,
                      float[:, ::1] cand_w, int n_threads):
    """Add rows ``lo:hi`` of ``x`` to the accumulators ``acc`` (threads, 2, k, d).

    ``h`` (rows, k): the screening log-likelihoods (without ``c``), ``c`` (k,): their
    per-component constant (-inf for left-out components), ``logc`` (k,): the constant
    of the direct log-likelihood, ``err`` (rows,): the error bound of ``h + c`` per row.
    Thread ``t`` adds its share of the rows to ``acc[t]``; ``cand``, ``cand_p`` and
    ``cand_w`` (threads, k) are scratch.
    """
    cdef Py_ssize_t t, n = hi - lo, a, b
    cdef int nt = n_threads
    if nt > n:
        nt = <int>n if n > 0 else 1
    for t in prange(nt, nogil=True, num_threads=nt, schedule="static"):
        a = lo + n * t // nt
        b = lo + n * (t + 1) // nt
        _rows(x, h, c, logc, err, means, isig, margin, exact_margin, fast, a, b, acc[t],
              cand[t], cand_p[t], cand_w[t])


def fisher_finalize(const double[:, :, :, ::1] acc, Py_ssize_t n,
                    const double[::1] uscale, const double[::1] vscale,
                    bint square_root, bint normalized, float[::1] out):
    """Sum the threads' accumulators, scale (``uscale / n``, ``vscale / n`` per
    component), signed square root, L2 normalization, into ``out`` (2 k d).
    An image without descriptors (``n == 0``) gives zeros."""
    cdef Py_ssize_t nt = acc.shape[0], k = acc.shape[2], d = acc.shape[3]
    cdef Py_ssize_t t, j, e, o
    cdef double s, z, norm2 = 0.0, scale
    with nogil:
        for j in range(k):
            for e in range(d):
                o = j * d + e
                s = 0.0
                z = 0.0
                for t in range(nt):
                    s = s + acc[t, 0, j, e]
                    z = z + acc[t, 1, j, e]
                if n == 0:
                    s = 0.0
                    z = 0.0
                else:
                    s = <float>(s * (uscale[j] / n))
                    z = <float>(z * (vscale[j] / n))
                if square_root:
                    s = sqrt(s) if s >= 0 else -sqrt(-s)
                    z = sqrt(z) if z >= 0 else -sqrt(-z)
                out[o] = <float>s
                out[k * d + o] = <float>z
                norm2 = norm2 + s * s + z * z
        if normalized:
            scale = sqrt(norm2)
            if scale < 1e-12:
                scale = 1e-12
            scale = 1.0 / scale
            for o in range(2 * k * d):
                out[o] = <float>(out[o] * scale)
