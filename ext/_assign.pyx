"""Exact nearest-centroid assignment with lower-bound pruning.

Private module: ``features.assign`` validates the input, fits the axes, runs
the two BLAS products and allocates the outputs; this module only computes,
without the GIL.

The bound
---------
Let ``V`` hold ``r`` orthonormal axes. Write ``x = V a + p`` with ``p``
orthogonal to ``V``, and ``c = V b + q`` for a centroid. Then

    ||x - c||**2 = ||a - b||**2 + ||p - q||**2
                >= ||a - b||**2 + (||p|| - ||q||)**2,

the squared distance between the ``r + 1``-dimensional points
``x~ = (a, ||p||)`` and ``c~ = (b, ||q||)``. One float32 BLAS product of
``(x~, 1)`` with ``(-2 c~, ||c~||**2)`` gives ``h = bound - ||x~||**2`` for all
centroids at once.

Per descriptor, :func:`assign_pruned` takes the centroid of smallest bound,
computes its true distance ``U``, then verifies the other centroids whose
bound may not exceed ``U``, smallest bound first, lowering ``U`` as it goes.
Rounding is accounted for, not ignored: ``a`` comes from a float32 product
whose error is bounded (:func:`augment` returns a radius ``e`` such that the
computed ``x~`` is within ``e`` of the exact one, so ``sqrt(bound)`` is off
by at most ``e``), the bound product has a relative error bound, and the
float32 distances (sums of squares, no cancellation) are within
``(d + 2) 2**-24`` of the exact ones. Candidates within that error of the best
are compared again in float64. The result is the argmin of the float64
distance, ties going to the smallest index.

:func:`assign_bf16` does the same search with bounds it computes itself,
four rows at a time against every centroid, with the AVX512_BF16 dot product
instruction on rows and centroids rounded to bfloat16 (the error analysis is
in ``features.codebook.assign``): the bounds stay in a tile of L1 per thread
instead of an ``n x k`` matrix written by BLAS and read back. Its kernels
carry their instruction set in a ``target`` attribute and run only where
:func:`cpu_has_bf16` finds it, so the module stays portable.

The Cython parts index through typed memoryviews so that a build with
``FEATURES_BOUNDSCHECK=1`` checks them; the small C helpers below (block
minima, candidate scan and heap, norms, float32 distance) take pointers and
lengths taken from the memoryviews' shapes.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport sqrt, INFINITY

ctypedef unsigned char uint8

# Twice the float32 unit roundoff.
cdef double _CAST = 2.0 ** -23
# bound_filter keeps a row only if upper * _SKIP_MARGIN < lower.
cdef double _SKIP_MARGIN = 1 + 1e-9

ctypedef fused real_in:
    uint8
    float

cdef extern from *:
    """
    #include <float.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif

    /* Bounds per block of the candidate scan: a block whose minimum is above
       the threshold is skipped whole. */
    #define ASG_BLOCK 32
    /* Independent accumulators of a float32 distance; the compiler keeps
       them in vector registers. */
    #define ASG_LANES 32

    /* The distance is the hottest loop: with GCC on x86-64 Linux it is
       compiled for AVX-512 and AVX2 too, picked at load time (ifunc). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define ASG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define ASG_CLONES
    #endif

    /* Minimum of each block of ASG_BLOCK values of h[0:k] into bmin; returns
       the minimum of the row. */
    static float asg_block_mins(const float *h, Py_ssize_t k, float *bmin)
    {
        Py_ssize_t nfull = k / ASG_BLOCK, b, j;
        float best = FLT_MAX, v;
        for (b = 0; b < nfull; b++) {
            const float *p = h + b * ASG_BLOCK;
    #if defined(__SSE2__)
            __m128 m0 = _mm_min_ps(_mm_loadu_ps(p), _mm_loadu_ps(p + 4));
            __m128 m1 = _mm_min_ps(_mm_loadu_ps(p + 8), _mm_loadu_ps(p + 12));
            __m128 m2 = _mm_min_ps(_mm_loadu_ps(p + 16), _mm_loadu_ps(p + 20));
            __m128 m3 = _mm_min_ps(_mm_loadu_ps(p + 24), _mm_loadu_ps(p + 28));
            m0 = _mm_min_ps(_mm_min_ps(m0, m1), _mm_min_ps(m2, m3));
            m0 = _mm_min_ps(m0, _mm_shuffle_ps(m0, m0, _MM_SHUFFLE(1, 0, 3, 2)));
            m0 = _mm_min_ps(m0, _mm_shuffle_ps(m0, m0, _MM_SHUFFLE(2, 3, 0, 1)));
            v = _mm_cvtss_f32(m0);
    #else
            v = p[0];
            for (j = 1; j < ASG_BLOCK; j++)
                v = p[j] < v ? p[j] : v;
    #endif
            bmin[b] = v;
            best = v < best ? v : best;
        }
        if (nfull * ASG_BLOCK < k) {
            v = h[nfull * ASG_BLOCK];
            for (j = nfull * ASG_BLOCK + 1; j < k; j++)
                v = h[j] < v ? h[j] : v;
            bmin[nfull] = v;
            best = v < best ? v : best;
        }
        return best;
    }

    /* Index of the smallest h[j], j != skip (k >= 2), from the block minima
       bmin of asg_block_mins: blocks other than skip's are looked into only
       if their minimum can beat the best so far. */
    static Py_ssize_t asg_argmin_except(const float *h, Py_ssize_t k,
                                        const float *bmin, Py_ssize_t skip)
    {
        Py_ssize_t nb = (k + ASG_BLOCK - 1) / ASG_BLOCK, sb = skip / ASG_BLOCK;
        Py_ssize_t b, j, j0, j1, best = -1;
        float v = FLT_MAX;
        for (b = 0; b < nb; b++) {
            if (b != sb && !(bmin[b] < v) && best >= 0)
                continue;
            j0 = b * ASG_BLOCK;
            j1 = j0 + ASG_BLOCK < k ? j0 + ASG_BLOCK : k;
            for (j = j0; j < j1; j++)
                if (j != skip && (best < 0 || h[j] < v)) {
                    v = h[j];
                    best = j;
                }
        }
        return best;
    }

    /* asg_collect in block b. */
    static Py_ssize_t asg_collect_block(const float *h, Py_ssize_t k, Py_ssize_t b,
                                        float thr, Py_ssize_t skip, float *ch, int *cj,
                                        Py_ssize_t m)
    {
        Py_ssize_t j, j0 = b * ASG_BLOCK;
        Py_ssize_t j1 = j0 + ASG_BLOCK < k ? j0 + ASG_BLOCK : k;
    #if defined(__SSE2__) && defined(__GNUC__)
        if (j1 - j0 == ASG_BLOCK) {
            __m128 t = _mm_set1_ps(thr);
            unsigned int mask = 0, q;
            for (q = 0; q < ASG_BLOCK / 4; q++)
                mask |= (unsigned int)_mm_movemask_ps(
                    _mm_cmple_ps(_mm_loadu_ps(h + j0 + 4 * q), t)) << (4 * q);
            while (mask) {
                j = j0 + __builtin_ctz(mask);
                mask &= mask - 1;
                if (j != skip) {
                    ch[m] = h[j];
                    cj[m] = (int)j;
                    m++;
                }
            }
            return m;
        }
    #endif
        for (j = j0; j < j1; j++)
            if (h[j] <= thr && j != skip) {
                ch[m] = h[j];
                cj[m] = (int)j;
                m++;
            }
        return m;
    }

    /* Appends to (ch, cj) the value and index of every h[j] <= thr, j != skip,
       looking only into the blocks whose minimum is <= thr; returns the
       count. The blocks to look into are found four at a time from a mask:
       a branch per block mispredicted often (which blocks pass is data). */
    static Py_ssize_t asg_collect(const float *h, Py_ssize_t k,
                                  const float *bmin, float thr, Py_ssize_t skip,
                                  float *ch, int *cj)
    {
        Py_ssize_t nb = (k + ASG_BLOCK - 1) / ASG_BLOCK, b = 0, m = 0;
    #if defined(__SSE2__) && defined(__GNUC__)
        __m128 t = _mm_set1_ps(thr);
        unsigned int mask;
        for (; b + 4 <= nb; b += 4) {
            mask = (unsigned int)_mm_movemask_ps(_mm_cmple_ps(_mm_loadu_ps(bmin + b), t));
            while (mask) {
                m = asg_collect_block(h, k, b + __builtin_ctz(mask), thr, skip, ch, cj, m);
                mask &= mask - 1;
            }
        }
    #endif
        for (; b < nb; b++)
            if (bmin[b] <= thr)
                m = asg_collect_block(h, k, b, thr, skip, ch, cj, m);
        return m;
    }

    /* A binary min-heap on (bound, index) over (ch, cj)[0:m]: candidates
       come out smallest bound first, and only as many as get verified. */
    static int asg_less(const float *ch, const int *cj, Py_ssize_t a, Py_ssize_t b)
    {
        return ch[a] < ch[b] || (ch[a] == ch[b] && cj[a] < cj[b]);
    }

    static void asg_sift_down(float *ch, int *cj, Py_ssize_t m, Py_ssize_t a)
    {
        float hv = ch[a];
        int jv = cj[a];
        for (;;) {
            Py_ssize_t c = 2 * a + 1;
            if (c >= m)
                break;
            if (c + 1 < m && asg_less(ch, cj, c + 1, c))
                c++;
            if (!(ch[c] < hv || (ch[c] == hv && cj[c] < jv)))
                break;
            ch[a] = ch[c];
            cj[a] = cj[c];
            a = c;
        }
        ch[a] = hv;
        cj[a] = jv;
    }

    static void asg_heapify(float *ch, int *cj, Py_ssize_t m)
    {
        Py_ssize_t a;
        for (a = m / 2 - 1; a >= 0; a--)
            asg_sift_down(ch, cj, m, a);
    }

    /* Removes the top of the heap of size m (> 0) into (*h, *j). */
    static void asg_pop(float *ch, int *cj, Py_ssize_t m, float *h, int *j)
    {
        *h = ch[0];
        *j = cj[0];
        ch[0] = ch[m - 1];
        cj[0] = cj[m - 1];
        asg_sift_down(ch, cj, m - 1, 0);
    }

    /* ||x||**2: exact integer arithmetic for uint8 rows, float64 in 8 lanes
       for float32 rows. */
    static double asg_norm2_u8(const unsigned char *x, Py_ssize_t d)
    {
        unsigned int a[16] = {0};
        unsigned long long s = 0;
        Py_ssize_t t, l, dmain = d - d % 16;
        for (t = 0; t < dmain; t += 16) {
            for (l = 0; l < 16; l++)
                a[l] += (unsigned int)x[t + l] * x[t + l];
            if ((t & 0xffff) == 0xfff0)   /* keep the lanes far from overflow */
                for (l = 0; l < 16; l++) {
                    s += a[l];
                    a[l] = 0;
                }
        }
        for (t = dmain; t < d; t++)
            s += (unsigned int)x[t] * x[t];
        for (l = 0; l < 16; l++)
            s += a[l];
        return (double)s;
    }

    /* Copies a[0:r] to out and returns ||a||**2 in float64, in four lanes:
       one chain of additions was most of the time of augment. The squares
       of float32 values are exact in float64, and the sum's rounding (at
       most (r / 4 + 2) 2**-53 relative) is less than one chain's
       ((r - 1) 2**-53), which augment's radius already covered. */
    static double asg_copy_norm2(const float *a, float *out, Py_ssize_t r)
    {
        double s[4] = {0};
        Py_ssize_t t, l, rmain = r - r % 4;
        for (t = 0; t < rmain; t += 4)
            for (l = 0; l < 4; l++) {
                out[t + l] = a[t + l];
                s[l] += (double)a[t + l] * (double)a[t + l];
            }
        for (t = rmain; t < r; t++) {
            out[t] = a[t];
            s[t - rmain] += (double)a[t] * (double)a[t];
        }
        return (s[0] + s[1]) + (s[2] + s[3]);
    }

    static double asg_norm2_f32(const float *x, Py_ssize_t d)
    {
        double a[8] = {0};
        Py_ssize_t t, l, dmain = d - d % 8;
        for (t = 0; t < dmain; t += 8)
            for (l = 0; l < 8; l++)
                a[l] += (double)x[t + l] * (double)x[t + l];
        for (t = dmain; t < d; t++)
            a[t - dmain] += (double)x[t] * (double)x[t];
        for (l = 1; l < 8; l++)
            a[0] += a[l];
        return a[0];
    }

    /* Squared Euclidean distance in float32, summed in ASG_LANES lanes. */
    ASG_CLONES
    static float asg_dist_f32(const float *x, const float *c, Py_ssize_t d)
    {
        float acc[ASG_LANES] = {0};
        Py_ssize_t t, l, dmain = d - d % ASG_LANES;
        for (t = 0; t < dmain; t += ASG_LANES)
            for (l = 0; l < ASG_LANES; l++) {
                float diff = x[t + l] - c[t + l];
                acc[l] += diff * diff;
            }
        for (t = dmain; t < d; t++) {
            float diff = x[t] - c[t];
            acc[t - dmain] += diff * diff;
        }
        for (l = ASG_LANES / 2; l > 0; l /= 2)
            for (t = 0; t < l; t++)
                acc[t] += acc[t + l];
        return acc[0];
    }

    /* bfloat16 bounds (assign_bf16). A bfloat16 is the upper half of a
       float32; the rounding below is to nearest even, and zeros and
       subnormals become +0, as the dot product instruction reads subnormal
       inputs as zero anyway: the values rounded are exactly those it
       multiplies. */
    #include <string.h>
    static unsigned int asg_bf16_bits(float v)
    {
        unsigned int b;
        memcpy(&b, &v, sizeof b);
        if ((b & 0x7f800000u) == 0)
            return 0;
        return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    }

    static double asg_bf16_value(unsigned int bits)
    {
        unsigned int b = bits << 16;
        float v;
        memcpy(&v, &b, sizeof v);
        return v;
    }

    /* ||a[0:r]||**2 in float64, the lanes of asg_copy_norm2 (same value). */
    static double asg_norm2_lanes(const float *a, Py_ssize_t r)
    {
        double s[4] = {0};
        Py_ssize_t t, l, rmain = r - r % 4;
        for (t = 0; t < rmain; t += 4)
            for (l = 0; l < 4; l++)
                s[l] += (double)a[t + l] * (double)a[t + l];
        for (t = rmain; t < r; t++)
            s[t - rmain] += (double)a[t] * (double)a[t];
        return (s[0] + s[1]) + (s[2] + s[3]);
    }

    /* Rounds the r + 1 values (a[0:r], p) to bfloat16 and packs them two by
       two into xp[0:(r + 2) / 2] (the first of a pair in the low half; an
       even count is padded with a zero). Returns ||x_hat||**2 and sets *err2
       to ||x_hat - (a, p)||**2, both in float64: the squares of bfloat16
       values and the differences are exact there, only the sums round. */
    static double asg_pack_bf16(const float *a, Py_ssize_t r, float p,
                                unsigned int *xp, double *err2)
    {
        Py_ssize_t t;
        double s = 0, e = 0, q0, q1;
        for (t = 0; t <= r; t += 2) {
            float v0 = t < r ? a[t] : p;
            float v1 = t + 1 < r ? a[t + 1] : (t + 1 == r ? p : 0.0f);
            unsigned int h0 = asg_bf16_bits(v0), h1 = asg_bf16_bits(v1);
            q0 = asg_bf16_value(h0);
            q1 = asg_bf16_value(h1);
            xp[t / 2] = h0 | (h1 << 16);
            s += q0 * q0 + q1 * q1;
            e += (q0 - v0) * (q0 - v0) + (q1 - v1) * (q1 - v1);
        }
        *err2 = e;
        return s;
    }

    /* Rows per tile of assign_bf16: the bounds of ASG_TR rows against every
       centroid are computed together (each centroid's weights are loaded
       once for all of them), then searched while they are in L1. */
    #define ASG_TR 4

    /* The bfloat16 dot product instruction (AVX512_BF16) is compiled for it
       alone, and used only where the running CPU has it. */
    #if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 10 \
        && defined(__x86_64__)
    #define ASG_HAVE_BF16 1
    #include <immintrin.h>

    static int asg_cpu_has_bf16(void)
    {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512bf16");
    }

    #define ASG_DP(acc, xv, wv) acc = _mm512_dpbf16_ps(acc, (__m512bh)(xv), (__m512bh)(wv))

    /* h[rr * kp + j] = bias[j] + sum_p <xp row rr pair p, w[p * kp + j]> for
       rr < ASG_TR and j < kp (a multiple of 16): rows >= rows repeat row 0
       (their results are not read). np2 is the number of pairs. */
    __attribute__((target("avx512f,avx512bw,avx512bf16")))
    static void asg_bf16_tile(const unsigned int *xp, Py_ssize_t rows, Py_ssize_t np2,
                              const unsigned int *w, const float *bias, Py_ssize_t kp,
                              float *h)
    {
        const unsigned int *x0 = xp;
        const unsigned int *x1 = rows > 1 ? xp + np2 : xp;
        const unsigned int *x2 = rows > 2 ? xp + 2 * np2 : xp;
        const unsigned int *x3 = rows > 3 ? xp + 3 * np2 : xp;
        Py_ssize_t j = 0, p;
        for (; j + 64 <= kp; j += 64) {
            __m512 b0 = _mm512_loadu_ps(bias + j), b1 = _mm512_loadu_ps(bias + j + 16);
            __m512 b2 = _mm512_loadu_ps(bias + j + 32), b3 = _mm512_loadu_ps(bias + j + 48);
            __m512 a00 = b0, a01 = b1, a02 = b2, a03 = b3, a10 = b0, a11 = b1, a12 = b2;
            __m512 a13 = b3, a20 = b0, a21 = b1, a22 = b2, a23 = b3, a30 = b0, a31 = b1;
            __m512 a32 = b2, a33 = b3;
            for (p = 0; p < np2; p++) {
                const unsigned int *wp = w + p * kp + j;
                __m512i w0 = _mm512_loadu_si512((const void *)wp);
                __m512i w1 = _mm512_loadu_si512((const void *)(wp + 16));
                __m512i w2 = _mm512_loadu_si512((const void *)(wp + 32));
                __m512i w3 = _mm512_loadu_si512((const void *)(wp + 48));
                __m512i v = _mm512_set1_epi32((int)x0[p]);
                ASG_DP(a00, v, w0); ASG_DP(a01, v, w1); ASG_DP(a02, v, w2); ASG_DP(a03, v, w3);
                v = _mm512_set1_epi32((int)x1[p]);
                ASG_DP(a10, v, w0); ASG_DP(a11, v, w1); ASG_DP(a12, v, w2); ASG_DP(a13, v, w3);
                v = _mm512_set1_epi32((int)x2[p]);
                ASG_DP(a20, v, w0); ASG_DP(a21, v, w1); ASG_DP(a22, v, w2); ASG_DP(a23, v, w3);
                v = _mm512_set1_epi32((int)x3[p]);
                ASG_DP(a30, v, w0); ASG_DP(a31, v, w1); ASG_DP(a32, v, w2); ASG_DP(a33, v, w3);
            }
            _mm512_storeu_ps(h + j, a00);
            _mm512_storeu_ps(h + j + 16, a01);
            _mm512_storeu_ps(h + j + 32, a02);
            _mm512_storeu_ps(h + j + 48, a03);
            _mm512_storeu_ps(h + kp + j, a10);
            _mm512_storeu_ps(h + kp + j + 16, a11);
            _mm512_storeu_ps(h + kp + j + 32, a12);
            _mm512_storeu_ps(h + kp + j + 48, a13);
            _mm512_storeu_ps(h + 2 * kp + j, a20);
            _mm512_storeu_ps(h + 2 * kp + j + 16, a21);
            _mm512_storeu_ps(h + 2 * kp + j + 32, a22);
            _mm512_storeu_ps(h + 2 * kp + j + 48, a23);
            _mm512_storeu_ps(h + 3 * kp + j, a30);
            _mm512_storeu_ps(h + 3 * kp + j + 16, a31);
            _mm512_storeu_ps(h + 3 * kp + j + 32, a32);
            _mm512_storeu_ps(h + 3 * kp + j + 48, a33);
        }
        for (; j < kp; j += 16) {
            __m512 a0 = _mm512_loadu_ps(bias + j), a1 = a0, a2 = a0, a3 = a0;
            for (p = 0; p < np2; p++) {
                __m512i w0 = _mm512_loadu_si512((const void *)(w + p * kp + j));
                ASG_DP(a0, _mm512_set1_epi32((int)x0[p]), w0);
                ASG_DP(a1, _mm512_set1_epi32((int)x1[p]), w0);
                ASG_DP(a2, _mm512_set1_epi32((int)x2[p]), w0);
                ASG_DP(a3, _mm512_set1_epi32((int)x3[p]), w0);
            }
            _mm512_storeu_ps(h + j, a0);
            _mm512_storeu_ps(h + kp + j, a1);
            _mm512_storeu_ps(h + 2 * kp + j, a2);
            _mm512_storeu_ps(h + 3 * kp + j, a3);
        }
    }
    /* asg_pack_bf16's rounding and sums for 32 values (v0, v1) into 16 pair
       words xp; accumulates the squares in float64 lanes. */
    __attribute__((target("avx512f,avx512bw")))
    static inline void asg_pack32_512(__m512 v0, __m512 v1, unsigned int *xp,
                                      __m512d *s, __m512d *e)
    {
        const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
        const __m512i expo = _mm512_set1_epi32(0x7f800000);
        __m512 v[2] = {v0, v1};
        int q;
        for (q = 0; q < 2; q++) {
            __m512i b = _mm512_castps_si512(v[q]);
            __m512i rnd = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, half),
                _mm512_and_si512(_mm512_srli_epi32(b, 16), one)), 16);
            __mmask16 live = _mm512_test_epi32_mask(b, expo);
            rnd = _mm512_maskz_mov_epi32(live, rnd);
            __m512 hv = _mm512_castsi512_ps(_mm512_slli_epi32(rnd, 16));
            /* Exact in float32: the two are within a factor 2 (or hv is 0). */
            __m512 dv = _mm512_sub_ps(hv, v[q]);
            __m512d h0 = _mm512_cvtps_pd(_mm512_castps512_ps256(hv));
            __m512d h1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                _mm512_castps_pd(hv), 1)));
            __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(dv));
            __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                _mm512_castps_pd(dv), 1)));
            *s = _mm512_fmadd_pd(h0, h0, *s);
            *s = _mm512_fmadd_pd(h1, h1, *s);
            *e = _mm512_fmadd_pd(d0, d0, *e);
            *e = _mm512_fmadd_pd(d1, d1, *e);
            _mm256_storeu_si256((__m256i *)(xp + 8 * q), _mm512_cvtepi32_epi16(rnd));
        }
    }

    /* asg_pack_bf16 (the same words; the float64 sums in another order) for
       the bfloat16 path, whose CPUs have AVX-512. */
    __attribute__((target("avx512f,avx512bw")))
    static double asg_pack_bf16_512(const float *a, Py_ssize_t r, float p,
                                    unsigned int *xp, double *err2)
    {
        Py_ssize_t t = 0, j, np2 = (r + 2) / 2;
        __m512d s = _mm512_setzero_pd(), e = _mm512_setzero_pd();
        float tail[32];
        unsigned int words[16];
        for (; t + 32 <= r; t += 32)
            asg_pack32_512(_mm512_loadu_ps(a + t), _mm512_loadu_ps(a + t + 16),
                           xp + t / 2, &s, &e);
        /* The rest of a, then p, then zeros. */
        for (j = 0; j < 32; j++)
            tail[j] = t + j < r ? a[t + j] : (t + j == r ? p : 0.0f);
        asg_pack32_512(_mm512_loadu_ps(tail), _mm512_loadu_ps(tail + 16), words, &s, &e);
        for (j = 0; t / 2 + j < np2; j++)
            xp[t / 2 + j] = words[j];
        *err2 = _mm512_reduce_add_pd(e);
        return _mm512_reduce_add_pd(s);
    }

    /* asg_block_mins (same values) for the bfloat16 path, whose CPUs have
       AVX-512: two loads and a min per block, then a reduction in the
       register. */
    __attribute__((target("avx512f")))
    static float asg_block_mins_512(const float *h, Py_ssize_t k, float *bmin)
    {
        Py_ssize_t nfull = k / ASG_BLOCK, b, j;
        float best = FLT_MAX, v;
        for (b = 0; b < nfull; b++) {
            const float *p = h + b * ASG_BLOCK;
            v = _mm512_reduce_min_ps(_mm512_min_ps(_mm512_loadu_ps(p),
                                                   _mm512_loadu_ps(p + 16)));
            bmin[b] = v;
            best = v < best ? v : best;
        }
        if (nfull * ASG_BLOCK < k) {
            v = h[nfull * ASG_BLOCK];
            for (j = nfull * ASG_BLOCK + 1; j < k; j++)
                v = h[j] < v ? h[j] : v;
            bmin[nfull] = v;
            best = v < best ? v : best;
        }
        return best;
    }
    #else
    static float asg_block_mins_512(const float *h, Py_ssize_t k, float *bmin)
    {
        return asg_block_mins(h, k, bmin);
    }
    static double asg_pack_bf16_512(const float *a, Py_ssize_t r, float p,
                                    unsigned int *xp, double *err2)
    {
        return asg_pack_bf16(a, r, p, xp, err2);
    }
    #define ASG_HAVE_BF16 0
    static int asg_cpu_has_bf16(void) { return 0; }
    static void asg_bf16_tile(const unsigned int *xp, Py_ssize_t rows, Py_ssize_t np2,
                              const unsigned int *w, const float *bias, Py_ssize_t kp,
                              float *h) { }
    #endif
    """
    enum: ASG_BLOCK
    float FLT_MAX
    float asg_block_mins(const float *h, Py_ssize_t k, float *bmin) noexcept nogil
    float asg_dist_f32(const float *x, const float *c, Py_ssize_t d) noexcept nogil
    Py_ssize_t asg_collect(const float *h, Py_ssize_t k, const float *bmin, float thr,
                           Py_ssize_t skip, float *ch, int *cj) noexcept nogil
    double asg_norm2_u8(const uint8 *x, Py_ssize_t d) noexcept nogil
    double asg_norm2_f32(const float *x, Py_ssize_t d) noexcept nogil
    double asg_copy_norm2(const float *a, float *out, Py_ssize_t r) noexcept nogil
    void asg_heapify(float *ch, int *cj, Py_ssize_t m) noexcept nogil
    void asg_pop(float *ch, int *cj, Py_ssize_t m, float *h, int *j) noexcept nogil
    Py_ssize_t asg_argmin_except(const float *h, Py_ssize_t k, const float *bmin,
                                 Py_ssize_t skip) noexcept nogil
    enum: ASG_TR
    float asg_block_mins_512(const float *h, Py_ssize_t k, float *bmin) noexcept nogil
    double asg_pack_bf16_512(const float *a, Py_ssize_t r, float p, unsigned int *xp,
                             double *err2) noexcept nogil
    int ASG_HAVE_BF16
    int asg_cpu_has_bf16() noexcept nogil
    double asg_norm2_lanes(const float *a, Py_ssize_t r) noexcept nogil
    double asg_pack_bf16(const float *a, Py_ssize_t r, float p, unsigned int *xp,
                         double *err2) noexcept nogil
    void asg_bf16_tile(const unsigned int *xp, Py_ssize_t rows, Py_ssize_t np2,
                       const unsigned int *w, const float *bias, Py_ssize_t kp,
                       float *h) noexcept nogil


cdef inline double _dist_f64(const real_in[:, ::1] x, Py_ssize_t i,
                             const float[:, ::1] c, Py_ssize_t j) noexcept nogil:
    cdef double s = 0, diff
    cdef Py_ssize_t t
    for t in range(x.shape[1]):
        diff = <double>x[i, t] - <double>c[j, t]
        s += diff * diff
    return s


cdef inline float _threshold(double u, double dist_rtol, double radius,
                             double norm2, double slack) noexcept nogil:
    # Largest h of a centroid that may be at distance <= u (see module doc):
    # h <= (sqrt(u (1 + dist_rtol)) + radius)**2 - ||x~||**2 + slack.
    cdef double s = sqrt(u * (1 + dist_rtol)) + radius
    return <float>(s * s - norm2 + slack)


def compact_rows(const real_in[:, ::1] x, float[:, ::1] xf, Py_ssize_t[::1] rows):
    """Copies the rows of ``x`` that are not all zero, as float32, to the first
    rows of ``xf`` (at least n rows, d columns) and their indices to ``rows``
    (length >= n); returns their count.

    One pass does what finding those rows, gathering them and converting them
    took three for: every row is converted into the next free row of ``xf``,
    which an all-zero row leaves free again. uint8 values are exact in
    float32, so the search sees the same numbers.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], i, t, m = 0
    cdef bint nonzero
    if xf.shape[0] < n or xf.shape[1] != d or rows.shape[0] < n:
        raise ValueError("xf or rows are too small for x")
    with nogil:
        for i in range(n):
            nonzero = False
            for t in range(d):
                xf[m, t] = <float>x[i, t]
                nonzero = nonzero | (x[i, t] != 0)
            if nonzero:
                rows[m] = i
                m += 1
    return m


def augment(const real_in[:, ::1] x, const float[:, ::1] proj, double proj_rtol,
            float[:, ::1] out, double[::1] norm2, double[::1] radius,
            int n_threads=1):
    """Rows ``(a, ||p||, 1)`` of the bound product from ``proj ~ x @ V``.

    ``proj_rtol`` bounds the error of each entry of ``proj`` relative to
    ``||x||`` (0 when ``proj`` is exact). ``norm2`` receives ``||x~||**2`` of
    the computed row and ``radius`` a bound on its distance to the exact
    ``x~``, or -1 for an all-zero row.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], r = proj.shape[1]
    cdef Py_ssize_t i, t
    cdef double xx, aa, p, dl, eta, e
    if (proj.shape[0] != n or out.shape[0] != n or out.shape[1] != r + 2
            or norm2.shape[0] != n or radius.shape[0] != n):
        raise ValueError("proj, out, norm2 or radius have the wrong shape")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        if d == 0:
            xx = 0
        elif real_in is uint8:
            xx = asg_norm2_u8(&x[i, 0], d)
        else:
            xx = asg_norm2_f32(&x[i, 0], d)
        if r > 0:
            aa = asg_copy_norm2(&proj[i, 0], &out[i, 0], r)
        else:
            aa = 0
        p = sqrt(xx - aa) if xx > aa else 0
        out[i, r] = <float>p
        out[i, r + 1] = 1
        norm2[i] = xx if xx > aa else aa
        # ||a_hat - a|| <= dl; then | ||a_hat||**2 - ||a||**2 | <= eta and
        # |p_hat - p| <= min(sqrt(eta), eta / p_hat).
        dl = proj_rtol * sqrt(xx) * sqrt(<double>r)
        eta = dl * (2 * sqrt(aa) + dl)
        e = sqrt(eta)
        if p > 0 and eta / p < e:
            e = eta / p
        # Storing p in float32 moves the row by at most 2**-24 ||x~||.
        radius[i] = dl + e + _CAST * sqrt(norm2[i]) if xx > 0 else -1
    return 0


cdef inline double _lower_of_bound(double hv, double radius, double norm2,
                                   double slack) noexcept nogil:
    # The inverse of _threshold: a centroid whose bound is >= hv is at exact
    # Euclidean distance >= sqrt(hv + ||x~||**2 - slack) - radius.
    cdef double v = hv + norm2 - slack
    if v <= 0:
        return 0
    v = sqrt(v) - radius
    return v if v > 0 else 0


cdef inline int _search_row(const real_in[:, ::1] x, Py_ssize_t i, const float *xrow,
                            const float *h, Py_ssize_t k, double norm2, double radius,
                            double slack, const float[:, ::1] centroids, double dist_rtol,
                            float *bmin, float *cand_h, int *cand_j, float *cand_d,
                            bint bounds, double *upper, double *lower,
                            bint wide=False) noexcept nogil:
    """The search of one row (see :func:`assign_pruned`) given its bounds ``h``
    (k values) and, for the threshold, ``||x~||**2``, the radius and the slack
    of ``h``; returns the word. ``xrow`` is the row as float32; the scratch
    pointers are ``bmin`` (ceil(k / 32)), ``cand_h``, ``cand_j``, ``cand_d``
    (k). With ``bounds``, writes the row's upper and lower bounds. ``wide``:
    the CPU has AVX-512 (the bfloat16 path)."""
    cdef Py_ssize_t d = x.shape[1], b, j, m, a, jbest, nver, j2
    cdef float hmin, thr, thr_c, dv, best, second, band, hv = 0, h_unv, d_jbest
    cdef int jv = 0
    cdef double dd, ddbest, lv, lo
    cdef bint exact
    if wide:
        hmin = asg_block_mins_512(h, k, bmin)
    else:
        hmin = asg_block_mins(h, k, bmin)
    # The smallest bound: the first one equal to hmin, in the first block
    # whose minimum is hmin.
    b = 0
    while bmin[b] != hmin:
        b = b + 1
    jbest = b * ASG_BLOCK
    while h[jbest] != hmin:
        jbest = jbest + 1
    # Verified candidates are stored from the end of cand_j / cand_d, which
    # the candidate heap (at most k - 1 entries) leaves free.
    best = asg_dist_f32(xrow, &centroids[jbest, 0], d)
    second = FLT_MAX
    cand_d[k - 1] = best
    cand_j[k - 1] = <int>jbest
    nver = 1
    thr = _threshold(best, dist_rtol, radius, norm2, slack)
    if bounds:
        # Every centroid that may be among the two nearest has a bound below
        # the threshold of the larger of the first two distances.
        if k > 1:
            j2 = asg_argmin_except(h, k, bmin, jbest)
            dv = asg_dist_f32(xrow, &centroids[j2, 0], d)
            thr = _threshold(dv if dv > best else best, dist_rtol, radius, norm2, slack)
        else:
            thr = -FLT_MAX
    thr_c = thr
    # Every other centroid whose bound may be below the best (with bounds: the
    # second-best) distance, verified smallest bound first until the bounds
    # pass the threshold.
    m = asg_collect(h, k, bmin, thr, jbest, cand_h, cand_j)
    asg_heapify(cand_h, cand_j, m)
    h_unv = thr_c
    while m > 0:
        asg_pop(cand_h, cand_j, m, &hv, &jv)
        m = m - 1
        if hv > thr:
            h_unv = hv
            break
        dv = asg_dist_f32(xrow, &centroids[jv, 0], d)
        nver = nver + 1
        cand_d[k - nver] = dv
        cand_j[k - nver] = jv
        if dv < best:
            second = best
            best = dv
            if not bounds:
                thr = _threshold(best, dist_rtol, radius, norm2, slack)
        elif dv < second:
            second = dv
        if bounds and second < FLT_MAX:
            thr = _threshold(second, dist_rtol, radius, norm2, slack)
    # Candidates within float32 rounding of the best are compared again in
    # float64; ties go to the smallest index.
    band = best * <float>(1 + 3 * dist_rtol)
    jbest = -1
    exact = False
    ddbest = 0
    d_jbest = 0
    for a in range(k - nver, k):
        if cand_d[a] > band:
            continue
        j = cand_j[a]
        if jbest < 0:
            jbest = j
            d_jbest = cand_d[a]
            continue
        if not exact:
            ddbest = _dist_f64(x, i, centroids, jbest)
            exact = True
        dd = _dist_f64(x, i, centroids, j)
        if dd < ddbest or (dd == ddbest and j < jbest):
            ddbest = dd
            jbest = j
            d_jbest = cand_d[a]
    if bounds:
        upper[0] = sqrt(d_jbest * (1 + dist_rtol))
        # Every unverified centroid has a bound >= h_unv; the verified ones
        # are at their float32 distance within dist_rtol.
        if k == 1:
            lo = INFINITY
        else:
            lo = _lower_of_bound(h_unv, radius, norm2, slack)
        for a in range(k - nver, k):
            if cand_j[a] != jbest:
                lv = sqrt(cand_d[a] / (1 + dist_rtol))
                if lv < lo:
                    lo = lv
        lower[0] = lo
    return <int>jbest


def assign_pruned(const real_in[:, ::1] x, const float[:, ::1] h,
                  const double[::1] norm2, const double[::1] radius,
                  const float[:, ::1] centroids, double bound_rtol,
                  double dist_rtol, double cnorm2_max, int zero_word,
                  int[::1] out, float[:, ::1] xbuf, float[:, ::1] bmin,
                  float[:, ::1] cand_h, int[:, ::1] cand_j,
                  float[:, ::1] cand_d, int n_threads=1,
                  double[::1] upper=None, double[::1] lower=None):
    """Nearest centroid of each row of ``x`` given its bound row ``h``.

    ``norm2`` and ``radius`` come from :func:`augment` (a negative radius
    marks an all-zero row, which gets ``zero_word``); ``bound_rtol`` bounds
    the error of ``h`` relative to ``||x~||**2 + 2 max ||c~||**2``
    (``cnorm2_max`` is that maximum); ``dist_rtol`` bounds the relative error
    of a float32 distance. Scratch arrays have one row per thread: ``xbuf``
    (d), ``bmin`` (ceil(k / 32)), ``cand_h``, ``cand_j``, ``cand_d`` (k).

    If ``upper`` and ``lower`` are given, they receive for each row an upper
    bound on its exact Euclidean distance (not squared) to its centroid and a
    lower bound on its exact distance to every other centroid (+inf when
    k = 1; for an all-zero row, +inf and 0: no information). The search then
    verifies the centroids whose bound may be below the second-nearest
    distance rather than the nearest, so that the lower bound is the
    second-nearest distance up to rounding (what k-means needs to skip rows
    in later iterations: ``bound_filter``).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], k = h.shape[1]
    cdef Py_ssize_t nb = (k + ASG_BLOCK - 1) // ASG_BLOCK
    cdef Py_ssize_t i, t, tid
    cdef double slack, up, lo
    cdef bint bounds = upper is not None or lower is not None
    cdef const float *xrow
    if (xbuf.shape[1] < d or bmin.shape[1] < nb or cand_h.shape[1] < k
            or cand_j.shape[1] < k or cand_d.shape[1] < k
            or centroids.shape[0] != k or centroids.shape[1] != d
            or xbuf.shape[0] < n_threads or bmin.shape[0] < n_threads
            or cand_h.shape[0] < n_threads or cand_j.shape[0] < n_threads
            or cand_d.shape[0] < n_threads or norm2.shape[0] < n
            or radius.shape[0] < n or out.shape[0] < n):
        raise ValueError("scratch, centroid or output arrays have the wrong shape")
    if bounds and (upper is None or lower is None or upper.shape[0] < n
                   or lower.shape[0] < n):
        raise ValueError("upper and lower must both be given, of length >= n")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        tid = threadid()
        # Assigned here so that they are thread-private: _search_row writes
        # them through pointers, which Cython does not count as assignments.
        up = 0
        lo = 0
        if radius[i] < 0:
            out[i] = zero_word
            if bounds:
                upper[i] = INFINITY
                lower[i] = 0
            continue
        if real_in is float:
            xrow = &x[i, 0]
        else:
            for t in range(d):
                xbuf[tid, t] = <float>x[i, t]
            xrow = &xbuf[tid, 0]
        slack = bound_rtol * (norm2[i] + 2 * cnorm2_max)
        out[i] = _search_row(x, i, xrow, &h[i, 0], k, norm2[i], radius[i], slack,
                             centroids, dist_rtol, &bmin[tid, 0], &cand_h[tid, 0],
                             &cand_j[tid, 0], &cand_d[tid, 0], bounds, &up, &lo)
        if bounds:
            upper[i] = up
            lower[i] = lo
    return 0


def cpu_has_bf16():
    """Whether :func:`assign_bf16` can run: built with GCC for x86-64 and the
    running CPU has AVX512_BF16."""
    return bool(ASG_HAVE_BF16 and asg_cpu_has_bf16())


#: Rows per tile of :func:`assign_bf16`.
TILE_ROWS = ASG_TR


def augment_bf16(const real_in[:, ::1] x, const float[:, ::1] proj, double proj_rtol,
                 double centroid_error, unsigned int[:, ::1] xpair, double[::1] norm2,
                 double[::1] radius, int n_threads=1):
    """:func:`augment` for :func:`assign_bf16`: the row ``x~ = (a, ||p||)``
    rounded to bfloat16, packed in pairs into ``xpair`` (n, (r + 2) // 2).

    ``norm2`` receives ``||x^||**2`` of the rounded row ``x^``, ``radius`` a
    bound on the exact distance between ``||x^ - c^||`` and ``||x~ - c~||``
    for every centroid: the radius of :func:`augment`, plus the distance
    between ``x^`` and the float32 row, plus ``centroid_error`` (a bound on
    ``||c^ - c~||`` over the centroids); -1 for an all-zero row.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], r = proj.shape[1]
    cdef Py_ssize_t i
    cdef double xx, aa, p, dl, eta, e, nn, ex2
    cdef bint wide = ASG_HAVE_BF16 and asg_cpu_has_bf16()
    if (proj.shape[0] != n or xpair.shape[0] < n or xpair.shape[1] != (r + 2) // 2
            or norm2.shape[0] < n or radius.shape[0] < n):
        raise ValueError("proj, xpair, norm2 or radius have the wrong shape")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        ex2 = 0
        if d == 0:
            xx = 0
        elif real_in is uint8:
            xx = asg_norm2_u8(&x[i, 0], d)
        else:
            xx = asg_norm2_f32(&x[i, 0], d)
        if r > 0:
            aa = asg_norm2_lanes(&proj[i, 0], r)
        else:
            aa = 0
        p = sqrt(xx - aa) if xx > aa else 0
        nn = xx if xx > aa else aa
        # The radius of augment (same arithmetic).
        dl = proj_rtol * sqrt(xx) * sqrt(<double>r)
        eta = dl * (2 * sqrt(aa) + dl)
        e = sqrt(eta)
        if p > 0 and eta / p < e:
            e = eta / p
        if wide:
            norm2[i] = asg_pack_bf16_512(&proj[i, 0] if r > 0 else NULL, r, <float>p,
                                         &xpair[i, 0], &ex2)
        elif r > 0:
            norm2[i] = asg_pack_bf16(&proj[i, 0], r, <float>p, &xpair[i, 0], &ex2)
        else:
            norm2[i] = asg_pack_bf16(NULL, 0, <float>p, &xpair[i, 0], &ex2)
        # The float64 sums of squares round by far less than the 1e-9 margin.
        if xx > 0:
            radius[i] = (dl + e + _CAST * sqrt(nn) + sqrt(ex2) + centroid_error) * (1 + 1e-9)
        else:
            radius[i] = -1
    return 0


def assign_bf16(const float[:, ::1] x, const unsigned int[:, ::1] xpair,
                const double[::1] norm2, const double[::1] radius,
                const float[:, ::1] centroids, const unsigned int[:, ::1] weights,
                const float[::1] bias, double cnorm2_max, double bound_rtol,
                double bound_abs, double dist_rtol, int zero_word, int[::1] out,
                float[:, ::1] htile, float[:, ::1] bmin, float[:, ::1] cand_h,
                int[:, ::1] cand_j, float[:, ::1] cand_d, int n_threads=1):
    """:func:`assign_pruned` with the bounds computed here, in bfloat16, by
    tiles of ``TILE_ROWS`` rows, never all at once.

    ``xpair``, ``norm2`` and ``radius`` come from :func:`augment_bf16`.
    ``weights`` (pairs, kp) holds the bfloat16 pairs of ``-2 c^`` (kp >= k, a
    multiple of 16), ``bias`` (kp) the float32 ``||c^||**2``; ``cnorm2_max``
    is the largest ``||c^||**2``. The computed bound ``h`` of a row is within
    ``bound_rtol (||x^||**2 + 2 cnorm2_max) + bound_abs`` of
    ``||x^ - c^||**2 - ||x^||**2``. Scratch arrays have one row per thread:
    ``htile`` (TILE_ROWS * kp), ``bmin`` (ceil(k / 32)), ``cand_h``,
    ``cand_j``, ``cand_d`` (k).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], k = centroids.shape[0]
    cdef Py_ssize_t np2 = weights.shape[0], kp = weights.shape[1]
    cdef Py_ssize_t nb = (k + ASG_BLOCK - 1) // ASG_BLOCK
    cdef Py_ssize_t g, i, i0, rr, nr, tid
    cdef double slack, up, lo
    if not (ASG_HAVE_BF16 and asg_cpu_has_bf16()):
        raise RuntimeError("assign_bf16 needs a CPU with AVX512_BF16 and a GCC build")
    if (centroids.shape[1] != d or kp < k or kp % 16 != 0 or bias.shape[0] != kp
            or xpair.shape[0] < n or xpair.shape[1] != np2 or norm2.shape[0] < n
            or radius.shape[0] < n or out.shape[0] < n
            or htile.shape[0] < n_threads or htile.shape[1] < ASG_TR * kp
            or bmin.shape[0] < n_threads or bmin.shape[1] < nb
            or cand_h.shape[0] < n_threads or cand_h.shape[1] < k
            or cand_j.shape[0] < n_threads or cand_j.shape[1] < k
            or cand_d.shape[0] < n_threads or cand_d.shape[1] < k):
        raise ValueError("weights, scratch, row or output arrays have the wrong shape")
    if n == 0:
        return 0
    for g in prange((n + ASG_TR - 1) // ASG_TR, nogil=True, num_threads=n_threads,
                    schedule="static"):
        tid = threadid()
        up = 0
        lo = 0
        i0 = g * ASG_TR
        nr = n - i0 if n - i0 < ASG_TR else ASG_TR
        asg_bf16_tile(&xpair[i0, 0], nr, np2, &weights[0, 0], &bias[0], kp,
                      &htile[tid, 0])
        for rr in range(nr):
            i = i0 + rr
            if radius[i] < 0:
                out[i] = zero_word
                continue
            slack = bound_rtol * (norm2[i] + 2 * cnorm2_max) + bound_abs
            out[i] = _search_row(x, i, &x[i, 0], &htile[tid, rr * kp], k, norm2[i],
                                 radius[i], slack, centroids, dist_rtol, &bmin[tid, 0],
                                 &cand_h[tid, 0], &cand_j[tid, 0], &cand_d[tid, 0],
                                 False, &up, &lo, True)
    return 0


def bound_filter(const real_in[:, ::1] x, const int[::1] labels,
                 const float[:, ::1] centroids, const double[::1] drift,
                 Py_ssize_t drift_argmax, double drift_max, double drift_max2,
                 double[::1] upper, double[::1] lower, uint8[::1] active,
                 int n_threads=1):
    """The Hamerly filter of one k-means iteration, after the centroids moved.

    ``drift[j]`` bounds how far centroid ``j`` moved (exact distance, rounded
    up); ``drift_max`` is its maximum, reached at ``drift_argmax``, and
    ``drift_max2`` the maximum over the other centroids. For each row, the
    bounds from the previous assignment (``assign_pruned``'s ``upper`` and
    ``lower``) are moved by the triangle inequality: ``upper += drift[label]``,
    ``lower -= max drift of the other centroids``. If they still overlap,
    ``upper`` is made the exact distance to the row's centroid (computed in
    float64, rounded up); ``active[i]`` is 1 if they still overlap then (the
    row's nearest centroid may have changed: search it again), else 0 (its
    label is the nearest centroid, strictly: keep it). Returns the number of
    active rows.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], k = centroids.shape[0]
    cdef Py_ssize_t i, j, count = 0
    cdef double u, lo, tol = (d + 4) * 2.0 ** -52
    if (labels.shape[0] != n or upper.shape[0] != n or lower.shape[0] != n
            or active.shape[0] != n or drift.shape[0] != k or centroids.shape[1] != d):
        raise ValueError("labels, upper, lower, active, drift or centroids have the wrong shape")
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        j = labels[i]
        u = upper[i] + drift[j]
        lo = lower[i] - (drift_max2 if j == drift_argmax else drift_max)
        lower[i] = lo
        # A relative margin far above the rounding of these sums and of the
        # float64 distances keeps "strictly nearer" strict in float64 too.
        if u * _SKIP_MARGIN >= lo:
            u = sqrt(_dist_f64(x, i, centroids, j) * (1 + tol))
        upper[i] = u
        if u * _SKIP_MARGIN >= lo:
            active[i] = 1
            count += 1
        else:
            active[i] = 0
    return count
