"""Area-averaging downscale with the arithmetic of OpenCV's ``INTER_AREA``.

Private module: the callers (``features.extract.dense``, ``features.decode``) choose the
output size and allocate it; this module only computes, without the GIL. Images are
``uint8`` or ``float32`` (the output of the same type), C-contiguous, one channel.

OpenCV's ``resize(..., INTER_AREA)`` downscales by one of two paths, chosen by the factors
``scale = 1 / (out / in)`` in double (``1 / f`` for the ``fx, fy`` form):

Fractional factors (not an integer on both axes within DBL_EPSILON)
    Every source pixel is weighed by the fraction of it that an output pixel covers (the
    table below, computed in double, stored in float as OpenCV does); each source row is
    summed horizontally, then the rows vertically, in float; ``uint8`` is rounded to the
    nearest (ties to even, as ``cvRound``) and saturated. OpenCV runs the horizontal sum
    as a scatter over the whole table (``buf[d] += S[s] * alpha``), a chain of dependent
    loads and stores; here each output column takes its entries in the same order, from
    the same zero, with the same roundings, for eight source rows at a time (the indices
    and weights loaded once for the eight), so the result is bit-identical (tested against
    ``cv2.resize``) and about twice as fast as OpenCV on one thread. A source row shared
    by two output rows is summed once. On x86-64 with AVX2 (checked at run time) the eight
    rows are one vector: the strip is transposed so that a column's eight pixels lie side
    by side, each table entry is then one 8-lane product and sum, and the vertical sums
    and the rounding to ``uint8`` run 8 lanes wide; the same operations on each pixel in
    the same order, without FMA (bit-identical again, tested), about twice as fast as the
    portable loops (uint8 500 x 375 -> 300 x 225: 70-79 against 144 us).
    With AVX-512 (F, BW, VL), the row path instead: each source row's sums are taken along
    the row, 16 (or 8) output columns at a time from a window of 32 of its pixels in two
    registers, entry e of every column one two-register permute of the window times its
    weights (columns with fewer entries add a -0.0 product, which changes no sum); the
    sums of a source row are kept in a ring of rows, and each output row is made from its
    rows in one pass. No transposes; the same products and sums per pixel, in the same
    order (bit-identical, tested); where the window is too small (a factor above about 4
    on the row) or a column has more than 8 entries, the AVX2 loops run. 500 x 375 ->
    300 x 225 uint8 about 0.72x the AVX2 loops' time, float32 300 x 225 -> 150 x 112
    about 0.8x.
Integer factors on both axes
    The block mean: the ``kx * ky`` pixels of a block summed in row-major order, four at a
    time (``sum += ((a + b) + c) + d``, OpenCV's unrolled loop; in int for ``uint8``), times
    the float ``1 / (kx * ky)``. Two exceptions that OpenCV vectorizes: ``uint8`` 2 x 2 is
    ``(a + b + c + d + 2) >> 2``, and ``float32`` 2 x 2 adds the pairs first,
    ``((a + b) + (c + d)) * 0.25``, in the columns its vector loop covers (the first
    ``FLOAT_BLOCK_LANES``-multiple of the full blocks of a row; 4 on an SSE or NEON
    baseline build). A block cut by the image border (the ``fx, fy`` form only) is the
    plain mean of what it covers.

Enlarging (a factor below 1) is refused: OpenCV emulates it with bilinear weights.
"""
from libc.float cimport DBL_EPSILON
from libc.math cimport ceil, fabs, floor, rint

import numpy as np

ctypedef fused pixel_t:
    unsigned char
    float

cdef extern from *:
    """
    #if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    #include <immintrin.h>
    #define AREA_HAVE_AVX2 1

    static int area_cpu_has_avx2(void)
    {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    }

    /* r[j] <- column j of the 8 x 8 block r (r[i] its row i). */
    __attribute__((target("avx2")))
    static inline void area_transpose8(__m256 *r)
    {
        __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
        __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
        __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
        __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
        __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
        __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
        __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
        r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
        r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
        r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
        r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
        r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
        r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
        r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
    }

    /* cols[8 x + k] <- row k of the strip at column x, as float, for x < W: rows[k]
       points to source row k (uint8 when u8, else float). */
    __attribute__((target("avx2")))
    static void area_strip_avx2(const void *const *rows, int u8, Py_ssize_t W, float *cols)
    {
        Py_ssize_t x = 0, k;
        __m256 r[8];
        for (; x + 8 <= W; x += 8) {
            for (k = 0; k < 8; k++) {
                if (u8) {
                    __m128i b = _mm_loadl_epi64((const __m128i *)((const unsigned char *)rows[k] + x));
                    r[k] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
                } else {
                    r[k] = _mm256_loadu_ps((const float *)rows[k] + x);
                }
            }
            area_transpose8(r);
            for (k = 0; k < 8; k++)
                _mm256_storeu_ps(cols + 8 * (x + k), r[k]);
        }
        for (; x < W; x++)
            for (k = 0; k < 8; k++)
                cols[8 * x + k] = u8 ? (float)((const unsigned char *)rows[k])[x]
                                     : ((const float *)rows[k])[x];
    }

    /* hsum[k * hstride + dx] <- the horizontal sum of output column dx for row k of
       the strip, its table entries in order from the first product (the arithmetic of
       the scalar loop, 8 rows per vector). */
    __attribute__((target("avx2")))
    static void area_hsum_avx2(const float *cols, const int *xsrc, const float *xalpha,
                               const int *xstart, Py_ssize_t w, float *hsum,
                               Py_ssize_t hstride)
    {
        Py_ssize_t dx = 0, j, t, k;
        __m256 s[8];
        float tail[8];
        for (; dx < w; dx += 8) {
            Py_ssize_t nb = w - dx < 8 ? w - dx : 8;
            for (j = 0; j < nb; j++) {
                t = xstart[dx + j];
                __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(cols + 8 * (Py_ssize_t)xsrc[t]),
                                           _mm256_set1_ps(xalpha[t]));
                for (t = t + 1; t < xstart[dx + j + 1]; t++)
                    acc = _mm256_add_ps(acc, _mm256_mul_ps(
                        _mm256_loadu_ps(cols + 8 * (Py_ssize_t)xsrc[t]), _mm256_set1_ps(xalpha[t])));
                s[j] = acc;
            }
            if (nb == 8) {
                area_transpose8(s);
                for (k = 0; k < 8; k++)
                    _mm256_storeu_ps(hsum + k * hstride + dx, s[k]);
            } else {
                for (j = 0; j < nb; j++) {
                    _mm256_storeu_ps(tail, s[j]);
                    for (k = 0; k < 8; k++)
                        hsum[k * hstride + dx + j] = tail[k];
                }
            }
        }
    }

    /* The row path (AVX-512 F, BW, VL): a source row's horizontal sums along the row, a
       block of `per` (16 or 8) output columns at a time from a window of 32 source pixels
       (two registers) that holds all their table entries: entry e of every column of the
       block is one two-register permute of the window (vpermt2ps), times its weight.
       Columns with fewer entries than m get a lane zeroed by the mask, times -0.0: the
       product -0.0 added changes no sum, not even a -0.0. No transposes, and each sum
       has the scalar loop's products and additions in its order: the same bits. */
    static int area_cpu_has_avx512(void)
    {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl");
    }

    /* h[0 .. w) <- the horizontal sums of a uint8 (u8) or float source row of W pixels,
       blocks as described above: base[b] the window's first pixel, then per block and
       entry 16 indices, 16 weights and a mask. The window is read from the row itself
       (past its end, masked loads read nothing), not from a converted copy: a copy just
       stored and read back at other offsets would stall on store forwarding. */
    __attribute__((target("avx512f,avx512bw,avx512vl")))
    static void area_hrow_avx512(const void *src, int u8, Py_ssize_t W, const int *base,
                                 const int *idx, const float *wt, const unsigned short *mask,
                                 int m, int per, Py_ssize_t w, float *h)
    {
        Py_ssize_t b, dx, n, x0, left;
        int e;
        __m512 lo, hi;
        for (b = 0, dx = 0; dx < w; b++, dx += per) {
            const int *ix = idx + (Py_ssize_t)b * m * 16;
            const float *wb = wt + (Py_ssize_t)b * m * 16;
            const unsigned short *mk = mask + (Py_ssize_t)b * m;
            x0 = base[b];
            left = W - x0;
            if (u8) {
                const unsigned char *p = (const unsigned char *)src + x0;
                __m256i bytes = left >= 32 ? _mm256_loadu_si256((const __m256i *)p)
                    : _mm256_maskz_loadu_epi8((__mmask32)((1ull << left) - 1ull), p);
                lo = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(bytes)));
                hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(bytes, 1)));
            } else {
                const float *p = (const float *)src + x0;
                if (left >= 32) {
                    lo = _mm512_loadu_ps(p);
                    hi = _mm512_loadu_ps(p + 16);
                } else {
                    lo = _mm512_maskz_loadu_ps(left >= 16 ? (__mmask16)0xffff
                                               : (__mmask16)((1u << left) - 1u), p);
                    hi = left > 16 ? _mm512_maskz_loadu_ps((__mmask16)((1u << (left - 16)) - 1u),
                                                           p + 16)
                                   : _mm512_setzero_ps();
                }
            }
            __m512 acc = _mm512_mul_ps(
                _mm512_maskz_permutex2var_ps(mk[0], lo, _mm512_loadu_si512(ix), hi),
                _mm512_loadu_ps(wb));
            for (e = 1; e < m; e++)
                acc = _mm512_add_ps(acc, _mm512_mul_ps(
                    _mm512_maskz_permutex2var_ps(mk[e], lo, _mm512_loadu_si512(ix + 16 * e), hi),
                    _mm512_loadu_ps(wb + 16 * e)));
            n = w - dx < per ? w - dx : per;
            _mm512_mask_storeu_ps(h + dx, (__mmask16)((1u << n) - 1u), acc);
        }
    }

    /* One output row from its n source rows' horizontal sums: a = beta0 h0, then
       a = a + beta_j h_j in order (the vertical loop's arithmetic, in one pass), stored
       as floats (fout) or rounded and saturated to uint8 as area_store_u8_avx2 (uout). */
    __attribute__((target("avx512f,avx512bw,avx512vl")))
    static void area_vrow_avx512(const float *const *hr, const float *beta, int n,
                                 Py_ssize_t w, float *fout, unsigned char *uout)
    {
        const __m512 round = _mm512_set1_ps(12582912.0f), top = _mm512_set1_ps(255.0f);
        Py_ssize_t dx;
        int j;
        for (dx = 0; dx < w; dx += 16) {
            __mmask16 k = w - dx >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (w - dx)) - 1u);
            __m512 a = _mm512_mul_ps(_mm512_set1_ps(beta[0]), _mm512_maskz_loadu_ps(k, hr[0] + dx));
            for (j = 1; j < n; j++)
                a = _mm512_add_ps(a, _mm512_mul_ps(_mm512_set1_ps(beta[j]),
                                                   _mm512_maskz_loadu_ps(k, hr[j] + dx)));
            if (fout) {
                _mm512_mask_storeu_ps(fout + dx, k, a);
            } else {
                __m512 r = _mm512_sub_ps(_mm512_add_ps(a, round), round);
                __m128i u = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(_mm512_min_ps(r, top)));
                if (k == 0xffff)
                    _mm_storeu_si128((__m128i *)(uout + dx), u);
                else
                    _mm_mask_storeu_epi8(uout + dx, k, u);
            }
        }
    }

    /* a <- beta * h (first) or a + beta * h, over w floats. */
    __attribute__((target("avx2")))
    static void area_vaxpy_avx2(float *a, const float *h, float beta, Py_ssize_t w, int first)
    {
        Py_ssize_t dx = 0;
        __m256 b = _mm256_set1_ps(beta);
        if (first) {
            for (; dx + 8 <= w; dx += 8)
                _mm256_storeu_ps(a + dx, _mm256_mul_ps(b, _mm256_loadu_ps(h + dx)));
            for (; dx < w; dx++)
                a[dx] = beta * h[dx];
        } else {
            for (; dx + 8 <= w; dx += 8)
                _mm256_storeu_ps(a + dx, _mm256_add_ps(_mm256_loadu_ps(a + dx),
                                 _mm256_mul_ps(b, _mm256_loadu_ps(h + dx))));
            for (; dx < w; dx++)
                a[dx] = a[dx] + beta * h[dx];
        }
    }

    /* out[dx] <- saturate_cast<uchar>(a[dx]) for a >= 0: to the nearest, ties to even
       (x + 1.5 * 2**23 - 1.5 * 2**23), at most 255. */
    __attribute__((target("avx2")))
    static void area_store_u8_avx2(const float *a, unsigned char *out, Py_ssize_t w)
    {
        Py_ssize_t dx = 0;
        const __m256 round = _mm256_set1_ps(12582912.0f), top = _mm256_set1_ps(255.0f);
        for (; dx + 16 <= w; dx += 16) {
            __m256 r0 = _mm256_sub_ps(_mm256_add_ps(_mm256_loadu_ps(a + dx), round), round);
            __m256 r1 = _mm256_sub_ps(_mm256_add_ps(_mm256_loadu_ps(a + dx + 8), round), round);
            __m256i i0 = _mm256_cvttps_epi32(_mm256_min_ps(r0, top));
            __m256i i1 = _mm256_cvttps_epi32(_mm256_min_ps(r1, top));
            __m256i p16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(i0, i1), 0xD8);
            __m128i p8 = _mm_packus_epi16(_mm256_castsi256_si128(p16),
                                          _mm256_extracti128_si256(p16, 1));
            _mm_storeu_si128((__m128i *)(out + dx), p8);
        }
        for (; dx < w; dx++) {
            float r = a[dx] + 12582912.0f;
            r = r - 12582912.0f;
            out[dx] = r >= 255.0f ? 255 : (unsigned char)(int)r;
        }
    }
    #else
    #define AREA_HAVE_AVX2 0
    static void area_vaxpy_avx2(float *a, const float *h, float beta, Py_ssize_t w, int first) {}
    static void area_store_u8_avx2(const float *a, unsigned char *out, Py_ssize_t w) {}
    static int area_cpu_has_avx2(void) { return 0; }
    static void area_strip_avx2(const void *const *rows, int u8, Py_ssize_t W, float *cols) {}
    static void area_hsum_avx2(const float *cols, const int *xsrc, const float *xalpha,
                               const int *xstart, Py_ssize_t w, float *hsum,
                               Py_ssize_t hstride) {}
    static int area_cpu_has_avx512(void) { return 0; }
    static void area_hrow_avx512(const void *src, int u8, Py_ssize_t W, const int *base,
                                 const int *idx, const float *wt, const unsigned short *mask,
                                 int m, int per, Py_ssize_t w, float *h) {}
    static void area_vrow_avx512(const float *const *hr, const float *beta, int n,
                                 Py_ssize_t w, float *fout, unsigned char *uout) {}
    #endif
    """
    int AREA_HAVE_AVX2
    int area_cpu_has_avx2() noexcept nogil
    void area_vaxpy_avx2(float *a, const float *h, float beta, Py_ssize_t w,
                         int first) noexcept nogil
    void area_store_u8_avx2(const float *a, unsigned char *out, Py_ssize_t w) noexcept nogil
    void area_strip_avx2(const void **rows, int u8, Py_ssize_t W, float *cols) noexcept nogil
    void area_hsum_avx2(const float *cols, const int *xsrc, const float *xalpha,
                        const int *xstart, Py_ssize_t w, float *hsum,
                        Py_ssize_t hstride) noexcept nogil
    int area_cpu_has_avx512() noexcept nogil
    void area_hrow_avx512(const void *src, int u8, Py_ssize_t W, const int *base,
                          const int *idx, const float *wt, const unsigned short *mask, int m,
                          int per, Py_ssize_t w, float *h) noexcept nogil
    void area_vrow_avx512(const float **hr, const float *beta, int n, Py_ssize_t w,
                          float *fout, unsigned char *uout) noexcept nogil

#: Whether this build and CPU run the fractional path's loops on AVX2 vectors (8 source rows
#: of a column side by side): the same products and sums in the same order, about twice as
#: fast; ``simd=False`` asks for the portable loops.
cdef bint _cpu_avx2 = AREA_HAVE_AVX2 and area_cpu_has_avx2()
HAVE_AVX2 = bool(_cpu_avx2)
#: Whether the CPU runs the row path (AVX-512 F, BW and VL): each source row summed along the
#: row from a window of 32 pixels, then each output row in one pass; the same arithmetic
#: again, in about 0.7-0.8x the AVX2 loops' time on the sizes of decoding and of the pyramid.
#: ``avx512=False`` asks for the AVX2 loops.
cdef bint _cpu_avx512 = AREA_HAVE_AVX2 and area_cpu_has_avx512()
HAVE_AVX512 = bool(_cpu_avx512)

#: Lanes of OpenCV's vector loop of the float32 2 x 2 block mean (its SSE/NEON baseline).
FLOAT_BLOCK_LANES = 4
cdef Py_ssize_t _LANES = 4

# source rows summed horizontally together: eight accumulators fit the 16 SSE registers
# (8% faster than four on 500 x 375 -> 300 x 225 uint8)
cdef enum:
    _ROWS = 8

# x + 1.5 * 2**23 - 1.5 * 2**23 in IEEE single precision (SSE, NEON) rounds 0 <= x < 2**22
# to the nearest integer, ties to even, as cvRound does, without a call to rint per pixel
cdef float _ROUND = 12582912.0


cdef inline unsigned char _saturate(float v) noexcept nogil:
    """saturate_cast<uchar> of a non-negative float."""
    cdef float r = v + _ROUND
    r = r - _ROUND
    if r >= 255:
        return 255
    return <unsigned char> <int> r


cdef Py_ssize_t _area_table(Py_ssize_t ssize, Py_ssize_t dsize, double scale,
                            int[::1] src, float[::1] alpha, int[::1] start) noexcept nogil:
    """Source index and weight of every (output, source) pair, output by output:
    output ``d`` owns entries ``start[d] .. start[d + 1] - 1``."""
    cdef Py_ssize_t k = 0, d, s, s1, s2
    cdef double f1, f2, cell
    for d in range(dsize):
        start[d] = <int> k
        f1 = d * scale
        f2 = f1 + scale
        cell = scale if scale < ssize - f1 else ssize - f1
        s1 = <Py_ssize_t> ceil(f1)
        s2 = <Py_ssize_t> floor(f2)
        if s2 > ssize - 1:
            s2 = ssize - 1
        if s1 > s2:
            s1 = s2
        if s1 - f1 > 1e-3:
            src[k] = <int> (s1 - 1)
            alpha[k] = <float> ((s1 - f1) / cell)
            k += 1
        for s in range(s1, s2):
            src[k] = <int> s
            alpha[k] = <float> (1.0 / cell)
            k += 1
        if f2 - s2 > 1e-3:
            src[k] = <int> s2
            alpha[k] = <float> (min(min(f2 - s2, 1.0), cell) / cell)
            k += 1
    start[dsize] = <int> k
    return k


cdef void _horizontal(const pixel_t[:, ::1] image, Py_ssize_t r0, Py_ssize_t n,
                      const int[::1] xsrc, const float[::1] xalpha, const int[::1] xstart,
                      float[:, ::1] rows, float[:, ::1] hsum, bint simd) noexcept nogil:
    """Horizontal sums of source rows ``r0 .. r0 + n - 1`` (n <= _ROWS) into the first n
    rows of ``hsum``: per output column, its entries in table order from the first product
    (OpenCV adds it to 0, which changes nothing). The rows past n repeat the last one."""
    cdef Py_ssize_t W = image.shape[1], w = hsum.shape[1], k, c, dx, t, t0, t_end
    cdef const float *p[_ROWS]
    cdef const void *src[_ROWS]
    cdef float *q[_ROWS]
    cdef float a, s0, s1, s2, s3, s4, s5, s6, s7
    cdef int i
    if simd:
        # the strip transposed (8 rows of a column side by side), then each output
        # column's entries as 8-lane products and sums: the scalar loop's arithmetic
        for k in range(_ROWS):
            src[k] = &image[r0 + min(k, n - 1), 0]
        area_strip_avx2(src, pixel_t is not float, W, &rows[0, 0])
        area_hsum_avx2(&rows[0, 0], &xsrc[0], &xalpha[0], &xstart[0], w, &hsum[0, 0],
                       hsum.shape[1])
        return
    for k in range(_ROWS):
        q[k] = &hsum[k, 0]
    if pixel_t is float:
        for k in range(_ROWS):
            p[k] = &image[r0 + min(k, n - 1), 0]
    else:
        # uint8 -> float once per pixel (exact), not once per table entry
        for k in range(n):
            for c in range(W):
                rows[k, c] = image[r0 + k, c]
        for k in range(_ROWS):
            p[k] = &rows[min(k, n - 1), 0]
    cdef const float *p0 = p[0]
    cdef const float *p1 = p[1]
    cdef const float *p2 = p[2]
    cdef const float *p3 = p[3]
    cdef const float *p4 = p[4]
    cdef const float *p5 = p[5]
    cdef const float *p6 = p[6]
    cdef const float *p7 = p[7]
    for dx in range(w):
        t0 = xstart[dx]
        t_end = xstart[dx + 1]
        i = xsrc[t0]
        a = xalpha[t0]
        s0 = p0[i] * a
        s1 = p1[i] * a
        s2 = p2[i] * a
        s3 = p3[i] * a
        s4 = p4[i] * a
        s5 = p5[i] * a
        s6 = p6[i] * a
        s7 = p7[i] * a
        for t in range(t0 + 1, t_end):
            i = xsrc[t]
            a = xalpha[t]
            s0 = s0 + p0[i] * a
            s1 = s1 + p1[i] * a
            s2 = s2 + p2[i] * a
            s3 = s3 + p3[i] * a
            s4 = s4 + p4[i] * a
            s5 = s5 + p5[i] * a
            s6 = s6 + p6[i] * a
            s7 = s7 + p7[i] * a
        q[0][dx] = s0
        q[1][dx] = s1
        q[2][dx] = s2
        q[3][dx] = s3
        q[4][dx] = s4
        q[5][dx] = s5
        q[6][dx] = s6
        q[7][dx] = s7


cdef void _fractional(const pixel_t[:, ::1] image, pixel_t[:, ::1] out,
                      const int[::1] xsrc, const float[::1] xalpha, const int[::1] xstart,
                      const int[::1] ysrc, const float[::1] yalpha, const int[::1] ystart,
                      float[:, ::1] rows, float[:, ::1] hsum, float[::1] acc,
                      bint simd) noexcept nogil:
    """OpenCV's fractional path: the horizontal sums of the source rows, then per output
    row ``sum = beta_0 * h_0``, ``sum += beta_j * h_j``, in float."""
    cdef Py_ssize_t H = image.shape[0], h = out.shape[0], w = out.shape[1]
    cdef Py_ssize_t dy, dx, j, r, first = 0, end = 0
    cdef float beta
    cdef float *hrow
    cdef float *a = &acc[0]
    for dy in range(h):
        for j in range(ystart[dy], ystart[dy + 1]):
            r = ysrc[j]
            if r >= end:    # the rows come in order, a row at most twice in a row
                first = r
                end = min(r + _ROWS, H)
                _horizontal(image, first, end - first, xsrc, xalpha, xstart, rows, hsum,
                            simd)
            hrow = &hsum[r - first, 0]
            beta = yalpha[j]
            if simd:
                area_vaxpy_avx2(a, hrow, beta, w, j == ystart[dy])
            elif j == ystart[dy]:
                for dx in range(w):
                    a[dx] = beta * hrow[dx]
            else:
                for dx in range(w):
                    a[dx] = a[dx] + beta * hrow[dx]
        if pixel_t is float:
            for dx in range(w):
                out[dy, dx] = a[dx]
        elif simd:
            area_store_u8_avx2(a, &out[dy, 0], w)
        else:
            for dx in range(w):
                out[dy, dx] = _saturate(a[dx])


cdef enum:
    # the row path's window of source pixels (two AVX-512 registers), the most entries of
    # an output column it takes, and the most source rows of an output row
    _WINDOW = 32
    _ROW_MAX_ENTRIES = 8
    _ROW_MAX_ROWS = 16


cdef int _row_block(const int[::1] src, const int[::1] start, Py_ssize_t w) noexcept nogil:
    """The row path's block width: 16 output columns if every 16 consecutive ones (from
    the first) have their entries within a window, else 8 if every 8 have, else 0."""
    cdef Py_ssize_t dx
    cdef int per = 16
    while per >= 8:
        dx = 0
        while dx < w and src[start[min(dx + per, w)] - 1] - src[start[dx]] < _WINDOW:
            dx += per
        if dx >= w:
            return per
        per = per // 2
    return 0


cdef int _most_entries(const int[::1] start, Py_ssize_t n) noexcept nogil:
    """The most table entries of one of the first ``n`` outputs."""
    cdef Py_ssize_t d
    cdef int most = 0
    for d in range(n):
        most = max(most, start[d + 1] - start[d])
    return most


cdef int _row_width(const int[::1] src, const int[::1] start, Py_ssize_t w) noexcept nogil:
    """The row path's block width for a table (:func:`_row_block`), 0 where a column has
    more entries than the path takes."""
    if _most_entries(start, w) > _ROW_MAX_ENTRIES:
        return 0
    return _row_block(src, start, w)


cdef void _row_tables(const int[::1] src, const float[::1] alpha, const int[::1] start,
                      Py_ssize_t w, int m, int per, int[::1] base, int[::1] idx,
                      float[::1] wt, unsigned short[::1] mask) noexcept nogil:
    """Per block of ``per`` output columns: its window's first pixel, then for each entry
    ``e < m`` the 16 lanes' window indices, weights (-0.0 where a column has no entry e,
    and in the lanes past ``per`` or ``w``) and the mask of the lanes that have one."""
    cdef Py_ssize_t b, dx, lane, t, at
    cdef int e
    cdef unsigned short bits
    for b in range((w + per - 1) // per):
        base[b] = src[start[b * per]]
        for e in range(m):
            at = (b * m + e) * 16
            bits = 0
            for lane in range(16):
                dx = b * per + lane
                t = start[dx] + e if lane < per and dx < w else -1
                if t >= 0 and t < start[dx + 1]:
                    idx[at + lane] = src[t] - base[b]
                    wt[at + lane] = alpha[t]
                    bits = bits | <unsigned short> (1 << lane)
                else:
                    idx[at + lane] = 0
                    wt[at + lane] = -0.0
            mask[b * m + e] = bits


cdef void _fractional_rows(const pixel_t[:, ::1] image, pixel_t[:, ::1] out,
                           const int[::1] ysrc, const float[::1] yalpha,
                           const int[::1] ystart, const int[::1] base, const int[::1] idx,
                           const float[::1] wt, const unsigned short[::1] mask, int m, int per,
                           float[:, ::1] ring) noexcept nogil:
    """OpenCV's fractional path by rows (AVX-512): each source row's horizontal sums once,
    into a ring of as many rows as an output row takes (its rows are consecutive), then
    each output row in one pass over them."""
    cdef Py_ssize_t W = image.shape[1], h = out.shape[0], w = out.shape[1]
    cdef Py_ssize_t nring = ring.shape[0], dy, j, r, done = 0
    cdef const float *hr[_ROW_MAX_ROWS]
    cdef float beta[_ROW_MAX_ROWS]
    cdef int n
    for dy in range(h):
        n = 0
        for j in range(ystart[dy], ystart[dy + 1]):
            r = ysrc[j]
            while done <= r:
                area_hrow_avx512(<const void *> &image[done, 0], pixel_t is not float, W,
                                 &base[0], &idx[0], &wt[0], &mask[0], m, per, w,
                                 &ring[done % nring, 0])
                done += 1
            hr[n] = &ring[r % nring, 0]
            beta[n] = yalpha[j]
            n += 1
        if pixel_t is float:
            area_vrow_avx512(hr, beta, n, w, &out[dy, 0], NULL)
        else:
            area_vrow_avx512(hr, beta, n, w, NULL, &out[dy, 0])


cdef void _block(const pixel_t[:, ::1] image, pixel_t[:, ::1] out, int kx, int ky,
                 const Py_ssize_t[::1] ofs) noexcept nogil:
    """OpenCV's integer-factor path (resizeAreaFast_): kx x ky blocks; ``ofs`` holds the
    offsets of a block's pixels from its top-left one, in row-major order."""
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1], h = out.shape[0], w = out.shape[1]
    cdef Py_ssize_t full = W // kx, area = kx * ky, dy, dx, k, sy0, sx0, sy, sx, wr, n_vec
    cdef float one = 1, scale = one / <float> area, fs, v
    cdef int isum, count
    cdef const pixel_t *S
    cdef const pixel_t *S1
    for dy in range(h):
        sy0 = dy * ky
        # a block row cut by the bottom border: every column by the plain mean
        wr = full if sy0 + ky <= H else 0
        dx = 0
        if kx == 2 and ky == 2 and wr > 0:
            S = &image[sy0, 0]
            S1 = &image[sy0 + 1, 0]
            if pixel_t is float:
                # the columns of OpenCV's vector loop add the pairs first
                n_vec = min((wr // _LANES) * _LANES, w)
                for dx in range(n_vec):
                    out[dy, dx] = ((S[2 * dx] + S[2 * dx + 1]) + (S1[2 * dx] + S1[2 * dx + 1])) * scale
                dx = n_vec
            else:
                for dx in range(min(wr, w)):
                    out[dy, dx] = <unsigned char> ((<int> S[2 * dx] + S[2 * dx + 1] + S1[2 * dx]
                                                    + S1[2 * dx + 1] + 2) >> 2)
                dx = min(wr, w)
        while dx < min(wr, w):
            S = &image[sy0, dx * kx]
            if pixel_t is float:
                fs = 0
                k = 0
                while k + 4 <= area:
                    v = S[ofs[k]] + S[ofs[k + 1]]
                    v = v + S[ofs[k + 2]]
                    v = v + S[ofs[k + 3]]
                    fs = fs + v
                    k += 4
                while k < area:
                    fs = fs + S[ofs[k]]
                    k += 1
                out[dy, dx] = fs * scale
            else:
                isum = 0
                for k in range(area):
                    isum = isum + S[ofs[k]]
                out[dy, dx] = _saturate(<float> isum * scale)
            dx += 1
        while dx < w:
            sx0 = dx * kx
            fs = 0
            isum = 0
            count = 0
            for sy in range(sy0, min(sy0 + ky, H)):
                for sx in range(sx0, min(sx0 + kx, W)):
                    if pixel_t is float:
                        fs = fs + image[sy, sx]
                    else:
                        isum = isum + image[sy, sx]
                    count += 1
            if pixel_t is float:
                out[dy, dx] = fs / <float> count
            else:
                out[dy, dx] = _saturate(<float> isum / <float> count)
            dx += 1


cdef int _integer(double scale) noexcept nogil:
    """The integer that OpenCV takes ``scale`` for (its block-mean path), else 0."""
    cdef double k = floor(scale + 0.5)
    return <int> k if fabs(scale - k) < DBL_EPSILON else 0


cdef _resize(const pixel_t[:, ::1] image, pixel_t[:, ::1] out, double sx, double sy,
             Py_ssize_t full_w, Py_ssize_t full_h, bint simd, bint avx512):
    """``out`` <- the top-left ``out.shape`` part of OpenCV's (full_h, full_w) area resize by
    the factors sx, sy (source pixels per output pixel). Tables are allocated here."""
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1], h = out.shape[0], w = out.shape[1]
    cdef int kx = _integer(sx), ky = _integer(sy)
    cdef Py_ssize_t k, nb
    cdef Py_ssize_t[::1] offsets
    cdef int[::1] base, idx
    cdef float[::1] wt
    cdef unsigned short[::1] mask
    cdef float[:, ::1] ring
    if kx and ky:
        if (w - 1) * kx >= W or (h - 1) * ky >= H:   # never for a size OpenCV computes
            raise ValueError(f"a block of the {h}x{w} output starts outside the {H}x{W} image")
        offsets = np.empty(kx * ky, np.intp)
        for k in range(kx * ky):
            offsets[k] = (k // kx) * W + k % kx
        with nogil:
            _block(image, out, kx, ky, offsets)
        return
    cdef int[::1] xsrc = np.empty(2 * W + 2, np.int32)
    cdef float[::1] xalpha = np.empty(2 * W + 2, np.float32)
    cdef int[::1] xstart = np.empty(full_w + 1, np.int32)
    cdef int[::1] ysrc = np.empty(2 * H + 2, np.int32)
    cdef float[::1] yalpha = np.empty(2 * H + 2, np.float32)
    cdef int[::1] ystart = np.empty(full_h + 1, np.int32)
    cdef int m = 0, my = 0, per = 0
    with nogil:
        _area_table(W, full_w, sx, xsrc, xalpha, xstart)
        _area_table(H, full_h, sy, ysrc, yalpha, ystart)
    if simd and avx512 and _cpu_avx512:
        my = _most_entries(ystart, h)
        if my <= _ROW_MAX_ROWS:
            per = _row_width(xsrc, xstart, w)
    if per:
        m = _most_entries(xstart, w)
        nb = (w + per - 1) // per
        base = np.empty(nb, np.int32)
        idx = np.empty(nb * m * 16, np.int32)
        wt = np.empty(nb * m * 16, np.float32)
        mask = np.empty(nb * m, np.uint16)
        ring = np.empty((my, w), np.float32)
        _row_tables(xsrc, xalpha, xstart, w, m, per, base, idx, wt, mask)
        with nogil:
            _fractional_rows(image, out, ysrc, yalpha, ystart, base, idx, wt, mask, m, per,
                             ring)
        return
    simd = simd and _cpu_avx2
    cdef float[:, ::1] rows = np.empty((_ROWS, W if pixel_t is not float or simd else 1),
                                       np.float32)
    cdef float[:, ::1] hsum = np.empty((_ROWS, w), np.float32)
    cdef float[::1] acc = np.empty(w, np.float32)
    with nogil:
        _fractional(image, out, xsrc, xalpha, xstart, ysrc, yalpha, ystart, rows, hsum, acc,
                    simd)


cdef _check(const pixel_t[:, ::1] image, pixel_t[:, ::1] out):
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"cannot area-resize an empty {image.shape[0]}x{image.shape[1]} image")
    if out.shape[0] < 1 or out.shape[1] < 1:
        raise ValueError(f"cannot area-resize to an empty {out.shape[0]}x{out.shape[1]} output")


def row_path(Py_ssize_t width, Py_ssize_t out_width):
    """The row path's block for a downscale of rows of ``width`` pixels to ``out_width``
    (OpenCV's factor ``1 / (out_width / width)``): 16 or 8 output columns, or 0 where the
    path does not apply (more than 8 entries a column, or 8 columns beyond 32 pixels) and
    the AVX2 loops run. Whether the CPU has the path at all is :data:`HAVE_AVX512`."""
    if not 1 <= out_width <= width:
        raise ValueError(f"cannot area-downscale {width} to {out_width} columns")
    cdef int[::1] src = np.empty(2 * width + 2, np.int32)
    cdef float[::1] alpha = np.empty(2 * width + 2, np.float32)
    cdef int[::1] start = np.empty(out_width + 1, np.int32)
    _area_table(width, out_width, 1.0 / (<double> out_width / <double> width), src, alpha,
                start)
    return _row_width(src, start, out_width)


def area_resize(const pixel_t[:, ::1] image, pixel_t[:, ::1] out, bint simd=True,
                bint avx512=True):
    """Downscale ``image`` into ``out`` (its shape is the output size, no larger than the
    image on either axis) as ``cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)``:
    bit-identical. ``image`` and ``out``: both uint8 or both float32, C-contiguous.
    ``simd``: the vector loops where the CPU has them (:data:`HAVE_AVX2`, :data:`HAVE_AVX512`;
    the same result); ``avx512=False`` keeps them to AVX2."""
    _check(image, out)
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1]
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1]
    if h > H or w > W:
        raise ValueError(f"cannot area-downscale {H}x{W} to {h}x{w}")
    if h == H and w == W:
        out[:, :] = image   # OpenCV copies
        return
    # OpenCV's factors: the inverse of output / input, in double
    _resize(image, out, 1.0 / (<double> w / <double> W), 1.0 / (<double> h / <double> H), w, h,
            simd, avx512)


def area_resize_by(const pixel_t[:, ::1] image, pixel_t[:, ::1] out, double fx, double fy,
                   bint simd=True, bint avx512=True):
    """``out`` <- the top-left ``out.shape`` part of
    ``cv2.resize(image, None, fx=fx, fy=fy, interpolation=cv2.INTER_AREA)`` (bit-identical),
    whose size is ``(round(W * fx), round(H * fy))`` (ties to even) and whose factors are
    ``1 / fx``, ``1 / fy``, not the ratio of the sizes. ``0 < fx, fy <= 1``. ``simd`` and ``avx512``
    as in :func:`area_resize`."""
    _check(image, out)
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1]
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1]
    if not (0 < fx <= 1 and 0 < fy <= 1):
        raise ValueError(f"area_resize_by downscales: fx and fy in (0, 1], got {fx!r}, {fy!r}")
    # saturate_cast<int>: to the nearest, ties to even
    cdef Py_ssize_t full_w = <Py_ssize_t> rint(W * fx), full_h = <Py_ssize_t> rint(H * fy)
    if full_w < 1 or full_h < 1:
        raise ValueError(f"{H}x{W} by fx={fx!r}, fy={fy!r} is an empty image")
    if h > full_h or w > full_w:
        raise ValueError(f"{H}x{W} by fx={fx!r}, fy={fy!r} is {full_h}x{full_w}, "
                         f"smaller than the {h}x{w} output")
    if full_h == H and full_w == W:
        out[:, :] = image[:h, :w]   # OpenCV copies
        return
    _resize(image, out, 1.0 / fx, 1.0 / fy, full_w, full_h, simd, avx512)
