"""Dense multi-scale SIFT kernel (VLFeat ``vl_phow`` / ``vl_dsift`` fast mode).

Private module: ``features.dense`` validates the input, works out the geometry
(bounds, frame counts, Gaussian taps, window weights) and allocates the outputs;
this module only computes, without the GIL.

Same quantity as VLFeat, computed differently
---------------------------------------------
VLFeat splits the gradient into 8 full-size orientation planes, filters every
plane with a triangle of half-width ``s`` (two transposing passes per plane)
and only then samples the bin centres. Here:

* Only bin centres are computed. The bin centres of all frames of one size lie
  on a grid of spacing ``g = gcd(step, s)``. The unit-height triangle of
  half-width ``s = m g`` equals a bilinear splat at spacing ``g`` followed by
  the coarse triangle ``(m - |k|) / m``, ``|k| < m``, on the cell grid. Each
  pixel touches 2 x 2 cells and 2 orientations; the coarse triangle (two box
  sums per axis) runs on a grid ``g**2`` times smaller than the image.
* Smoothing, gradient, orientation binning and the splat run row by row: the
  gradient of a row lives in a small buffer, never in 8 image-sized planes.
* The orientation comes from an octant reduction and a polynomial arctangent
  (error below 2e-7 rad), not from ``atan2``; the loop is branch-free so that
  GCC vectorises it at the default flags.
* VLFeat pads the gradient planes by continuity before filtering; the same is
  obtained by splatting clamped rows and columns.
* The contrast and the first L2 norm of a descriptor come from per-cell sums
  shared by the descriptors that overlap.
* In the AVX2 and AVX-512 builds the orientation runs on two vectors of 8 entries
  whose steps are interleaved (``dsift_orient16``): one vector's chain is latency-bound,
  two overlap (same operations, same bits; more vectors spill registers). The
  horizontal splat of a row holds the two cells that an interval of pixels touches in
  two vectors (``dsift_splat_row``): a pixel is one 8-lane vector, its two weights put
  in their lanes by masks. The scalar loop's read-modify-writes of the same cell by
  neighbouring pixels were a chain of stores and loads; the additions are the same, in
  the same order (byte-identical, tested).

* With GCC or Clang, the end of each descriptor (the clamp at 0.2, the second norm, the
  quantisation) runs one spatial bin per 8-lane vector (``dsift_descriptor``): the scalar
  loop's operations and order of additions, without the selects GCC does not vectorise.
* ``unit_float`` makes the kernel's float input from a uint8 image in one pass (NumPy's
  ``np.multiply(..., dtype=np.float32)`` goes through cast buffers, at about three times
  the time): the same product per pixel.

The same source is built three times: ``_dsift`` for the baseline of the platform
and, on x86-64, ``_dsift_avx2`` and ``_dsift_avx512`` (``ext/_dsift_avx2.pyx`` and
``ext/_dsift_avx512.pyx`` include this file), both without FMA contraction, so that their
8- and 16-wide loops round exactly as the 4-wide ones; ``features.extract.dense`` uses the
AVX2 one where the CPU has it. The results are bit-identical (tested); on the sbow pyramid
(AMD Zen 4) AVX2 is about 1.5x faster than the baseline and AVX-512 no faster than AVX2.

Everything is float32, indexed through typed memoryviews so that a build with
``FEATURES_BOUNDSCHECK=1`` checks every access. Scratch memory is one NumPy
buffer per thread, about (1 + 18 / g**2) x H x W floats.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport fabsf, sqrtf

import numpy as np

ctypedef unsigned char uint8

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FEATURES_DSIFT_OPENMP 1
    #else
    #define FEATURES_DSIFT_OPENMP 0
    #endif
    #ifdef __AVX2__
    #define FEATURES_DSIFT_AVX2 1
    #else
    #define FEATURES_DSIFT_AVX2 0
    #endif
    #if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) \\
        && defined(__AVX512DQ__)
    #define FEATURES_DSIFT_AVX512 1
    #else
    #define FEATURES_DSIFT_AVX512 0
    #endif
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    static int features_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }
    /* the four subsets the _avx512 build is compiled for; GCC's check also asks the OS
       whether it saves the 512-bit registers */
    static int features_cpu_has_avx512(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
            && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    }
    #else
    static int features_cpu_has_avx2(void) { return 0; }
    static int features_cpu_has_avx512(void) { return 0; }
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define FEATURES_DSIFT_DESCRIPTOR_VECTORS 1
    typedef float dsift_v8sf __attribute__((vector_size(32)));
    typedef int dsift_v8si __attribute__((vector_size(32)));

    /* v where v < c, else c (a NaN gives c), lane by lane: the scalar `v if v < c else c` */
    static inline dsift_v8sf dsift_below(dsift_v8sf v, dsift_v8sf c)
    {
        dsift_v8si lt = v < c;
        return (dsift_v8sf)((lt & (dsift_v8si)v) | (~lt & (dsift_v8si)c));
    }

    /* The end of _one_size for one descriptor, one spatial bin (8 orientations) per
       vector: bin b is w[b] times the 8 floats at cells + base[b], clamped at 0.2; then the
       second L2 norm and the quantisation to out[0 .. 128). The scalar loop's operations
       per entry and its order of additions (8 lanes, then the lanes in order): the same
       bits, without its selects that GCC would not vectorise. */
    static void dsift_descriptor(const float *cells, const Py_ssize_t *base, const float *w,
                                 float eps, unsigned char *out)
    {
        const dsift_v8sf zero = {0}, cap = zero + 0.2f, top = zero + 255.0f;
        dsift_v8sf d[16], acc = zero, v;
        float ss = 0, n2, q[128];
        int b, o;
        for (b = 0; b < 16; b++) {
            __builtin_memcpy(&v, cells + base[b], 32);
            v = w[b] * v;
            d[b] = dsift_below(v, cap);
        }
        for (b = 0; b < 16; b++)
            acc = acc + d[b] * d[b];
        for (o = 0; o < 8; o++)
            ss += acc[o];
        n2 = 512.0f / (__builtin_sqrtf(ss) + eps);
        for (b = 0; b < 16; b++) {
            v = dsift_below(d[b] * n2, top);
            __builtin_memcpy(q + 8 * b, &v, 32);
        }
        /* a loop GCC vectorises with packs (a vector conversion to bytes it does not) */
        for (o = 0; o < 128; o++)
            out[o] = (unsigned char)q[o];
    }
    #else
    #define FEATURES_DSIFT_DESCRIPTOR_VECTORS 0
    static void dsift_descriptor(const float *cells, const Py_ssize_t *base, const float *w,
                                 float eps, unsigned char *out) {}
    #endif
    #if FEATURES_DSIFT_AVX2 && (defined(__GNUC__) || defined(__clang__))
    #include <immintrin.h>
    #define FEATURES_DSIFT_VECTORS 1
    /* row o: lane o set (dsift_one_hot), lane (o + 1) % 8 set (dsift_next_hot) */
    static const int dsift_one_hot[8][8] __attribute__((aligned(32))) = {
        {-1, 0, 0, 0, 0, 0, 0, 0}, {0, -1, 0, 0, 0, 0, 0, 0}, {0, 0, -1, 0, 0, 0, 0, 0},
        {0, 0, 0, -1, 0, 0, 0, 0}, {0, 0, 0, 0, -1, 0, 0, 0}, {0, 0, 0, 0, 0, -1, 0, 0},
        {0, 0, 0, 0, 0, 0, -1, 0}, {0, 0, 0, 0, 0, 0, 0, -1}};
    static const int dsift_next_hot[8][8] __attribute__((aligned(32))) = {
        {0, -1, 0, 0, 0, 0, 0, 0}, {0, 0, -1, 0, 0, 0, 0, 0}, {0, 0, 0, -1, 0, 0, 0, 0},
        {0, 0, 0, 0, -1, 0, 0, 0}, {0, 0, 0, 0, 0, -1, 0, 0}, {0, 0, 0, 0, 0, 0, -1, 0},
        {0, 0, 0, 0, 0, 0, 0, -1}, {-1, 0, 0, 0, 0, 0, 0, 0}};

    /* The horizontal splat of one row (see _one_size) with the two cells an interval of
       pixels touches held in two vectors: each pixel is an 8-lane vector holding wa in
       lane obin and wb in lane obin + 1 (masks, no lane inserts), added whole to the left
       cell and split (v - v f, v f) between the two. The same additions in the same order
       as the scalar loop, plus zeros in the other lanes, which change nothing: the same
       bits, without the scalar loop's chains of stores and loads of a cell. */
    static void dsift_splat_row(const int *obin, const float *wa, const float *wb,
                                Py_ssize_t n_int, int g, float inv_g, float *R)
    {
        __m256 left = _mm256_setzero_ps(), right, v, t, f;
        Py_ssize_t L, u;
        int k, o;
        for (L = 0; L < n_int; L++) {
            u = L * g;
            o = obin[u];
            v = _mm256_add_ps(
                _mm256_and_ps(_mm256_set1_ps(wa[u]), _mm256_load_ps((const float *)dsift_one_hot[o])),
                _mm256_and_ps(_mm256_set1_ps(wb[u]), _mm256_load_ps((const float *)dsift_next_hot[o])));
            left = _mm256_add_ps(left, v);
            right = _mm256_setzero_ps();
            for (k = 1; k < g; k++) {
                u++;
                o = obin[u];
                v = _mm256_add_ps(
                    _mm256_and_ps(_mm256_set1_ps(wa[u]), _mm256_load_ps((const float *)dsift_one_hot[o])),
                    _mm256_and_ps(_mm256_set1_ps(wb[u]), _mm256_load_ps((const float *)dsift_next_hot[o])));
                f = _mm256_set1_ps((float)k * inv_g);
                t = _mm256_mul_ps(v, f);
                left = _mm256_add_ps(left, _mm256_sub_ps(v, t));
                right = _mm256_add_ps(right, t);
            }
            _mm256_storeu_ps(R + 8 * L, left);
            left = right;
        }
        _mm256_storeu_ps(R + 8 * n_int, left);
    }

    /* _orient_row's arithmetic on 16 entries at a time, as two vectors whose steps are
       interleaved: one vector's chain (a division, two polynomials, three unfoldings) is
       about 125 cycles deep, and the core overlaps few enough of them that the loop
       waited on its latency. The same operations per entry, in the same order, without
       FMA: the same bits. ``c`` holds the arctangent's coefficients A16 .. A2, then the
       square root's S7 .. S0, then 4 / pi. The last block runs whole: up to 15 entries past
       n are read and written (the row buffers have that slack, see _geometry; the scalar
       loop took as long for the last n % 16 of a 300-pixel row as the vectors for the
       rest). Returns n. */
    static Py_ssize_t dsift_orient16(const float *gxp, const float *gyp, float *wa, float *wb,
                                     int *obin, Py_ssize_t n, const float *c)
    {
        const dsift_v8si absmask = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff,
                                    0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
        const dsift_v8si onebits = {0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000,
                                    0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000};
        const dsift_v8si seven = {7, 7, 7, 7, 7, 7, 7, 7};
        const dsift_v8sf zero = {0}, tiny = zero + 1e-30f, one = zero + 1.0f;
        const dsift_v8sf two = zero + 2.0f, four = zero + 4.0f, eight = zero + 8.0f;
        dsift_v8sf gx[2], gy[2], ax[2], ay[2], sw[2], mx[2], mn[2], t[2], t2[2], p[2], b[2];
        dsift_v8sf fr[2], q[2], mag[2], neg[2];
        dsift_v8si bi[2];
        Py_ssize_t i, done = (n + 15) / 16 * 16;
        int j, k;
        for (i = 0; i < done; i += 16) {
            for (j = 0; j < 2; j++) {
                __builtin_memcpy(&gx[j], gxp + i + 8 * j, 32);
                __builtin_memcpy(&gy[j], gyp + i + 8 * j, 32);
            }
            for (j = 0; j < 2; j++) ax[j] = (dsift_v8sf)((dsift_v8si)gx[j] & absmask);
            for (j = 0; j < 2; j++) ay[j] = (dsift_v8sf)((dsift_v8si)gy[j] & absmask);
            for (j = 0; j < 2; j++) sw[j] = (dsift_v8sf)((ax[j] < ay[j]) & onebits);
            for (j = 0; j < 2; j++) mx[j] = ax[j] + sw[j] * (ay[j] - ax[j]);
            for (j = 0; j < 2; j++) mn[j] = ay[j] + sw[j] * (ax[j] - ay[j]);
            for (j = 0; j < 2; j++) t[j] = mn[j] / (mx[j] + tiny);
            for (j = 0; j < 2; j++) t2[j] = t[j] * t[j];
            for (j = 0; j < 2; j++) p[j] = zero + c[0];
            for (k = 1; k < 8; k++)
                for (j = 0; j < 2; j++) p[j] = p[j] * t2[j] + c[k];
            for (j = 0; j < 2; j++) p[j] = p[j] * t2[j] + one;
            for (j = 0; j < 2; j++) b[j] = p[j] * t[j] * c[16];
            for (j = 0; j < 2; j++) b[j] = b[j] + sw[j] * (two - b[j] - b[j]);
            for (j = 0; j < 2; j++) neg[j] = (dsift_v8sf)((gx[j] < zero) & onebits);
            for (j = 0; j < 2; j++) b[j] = b[j] + neg[j] * (four - b[j] - b[j]);
            for (j = 0; j < 2; j++) neg[j] = (dsift_v8sf)((gy[j] < zero) & onebits);
            for (j = 0; j < 2; j++) b[j] = b[j] + neg[j] * (eight - b[j] - b[j]);
            for (j = 0; j < 2; j++) bi[j] = __builtin_convertvector(b[j], dsift_v8si);
            for (j = 0; j < 2; j++) fr[j] = b[j] - __builtin_convertvector(bi[j], dsift_v8sf);
            for (j = 0; j < 2; j++) q[j] = zero + c[8];
            for (k = 9; k < 16; k++)
                for (j = 0; j < 2; j++) q[j] = q[j] * t2[j] + c[k];
            for (j = 0; j < 2; j++) mag[j] = mx[j] * q[j];
            for (j = 0; j < 2; j++) {
                dsift_v8si o = bi[j] & seven;
                dsift_v8sf a = mag[j] - mag[j] * fr[j], w = mag[j] * fr[j];
                __builtin_memcpy(obin + i + 8 * j, &o, 32);
                __builtin_memcpy(wa + i + 8 * j, &a, 32);
                __builtin_memcpy(wb + i + 8 * j, &w, 32);
            }
        }
        return n;
    }
    #else
    #define FEATURES_DSIFT_VECTORS 0
    static Py_ssize_t dsift_orient16(const float *gxp, const float *gyp, float *wa, float *wb,
                                     int *obin, Py_ssize_t n, const float *c) { return 0; }
    static void dsift_splat_row(const int *obin, const float *wa, const float *wb,
                                Py_ssize_t n_int, int g, float inv_g, float *R) {}
    #endif
    """
    int FEATURES_DSIFT_OPENMP
    int FEATURES_DSIFT_AVX2
    int FEATURES_DSIFT_AVX512
    int features_cpu_has_avx2() noexcept nogil
    int features_cpu_has_avx512() noexcept nogil
    int FEATURES_DSIFT_VECTORS
    int FEATURES_DSIFT_DESCRIPTOR_VECTORS
    void dsift_descriptor(const float *cells, const Py_ssize_t *base, const float *w, float eps,
                          unsigned char *out) noexcept nogil
    void dsift_splat_row(const int *obin, const float *wa, const float *wb, Py_ssize_t n_int,
                         int g, float inv_g, float *R) noexcept nogil
    Py_ssize_t dsift_orient16(const float *gxp, const float *gyp, float *wa, float *wb,
                              int *obin, Py_ssize_t n, const float *c) noexcept nogil

#: True when built with OpenMP, so that ``n_threads > 1`` runs sizes in parallel.
OPENMP = bool(FEATURES_DSIFT_OPENMP)
#: True when this build was compiled for AVX2 (the ``_dsift_avx2`` module on x86-64).
AVX2 = bool(FEATURES_DSIFT_AVX2)
#: True when this build was compiled for AVX-512 F, BW, VL and DQ (``_dsift_avx512``).
AVX512 = bool(FEATURES_DSIFT_AVX512)


def cpu_has_avx2():
    """Whether the running CPU has AVX2 (False where GCC's CPU check is unavailable)."""
    return bool(features_cpu_has_avx2())


def cpu_has_avx512():
    """Whether the running CPU (and OS) has AVX-512 F, BW, VL and DQ (False where GCC's CPU
    check is unavailable)."""
    return bool(features_cpu_has_avx512())

# Abramowitz & Stegun 4.4.49: atan(t) = t * P(t**2) on [0, 1], |error| < 2e-8.
cdef float _A2 = -0.3333314528
cdef float _A4 = 0.1999355085
cdef float _A6 = -0.1420889944
cdef float _A8 = 0.1065626393
cdef float _A10 = -0.0752896400
cdef float _A12 = 0.0429096138
cdef float _A14 = -0.0161657367
cdef float _A16 = 0.0028662257
cdef float _FOUR_OVER_PI = 1.2732395447351628
# sqrt(1 + u) on [0, 1], least-squares degree 7, |error| < 2e-7; the magnitude
# is max(|gx|, |gy|) sqrt(1 + t**2) with t = min / max, already at hand, and a
# polynomial (unlike sqrtf, which may set errno) lets the loop vectorise.
cdef float _S0 = 1.00000007
cdef float _S1 = 0.499994762
cdef float _S2 = -0.124902714
cdef float _S3 = 0.0617253551
cdef float _S4 = -0.0357865541
cdef float _S5 = 0.0191217269
cdef float _S6 = -0.00730236692
cdef float _S7 = 0.00136333543
# The constants above in the order dsift_orient16 takes them.
cdef float _ORIENT_COEFFS[17]
_ORIENT_COEFFS[:] = [_A16, _A14, _A12, _A10, _A8, _A6, _A4, _A2,
                     _S7, _S6, _S5, _S4, _S3, _S2, _S1, _S0, _FOUR_OVER_PI]
# VLFeat adds FLT_EPSILON to the L2 norms it divides by.
cdef float _EPS = 1.1920928955078125e-07
# Entries past its end that a row buffer keeps for dsift_orient16's last block.
cdef enum:
    _ROW_SLACK = 16


cdef struct Geom:
    int g           # spacing of the bin-centre grid
    int m           # s // g: cells per bin
    int mstep       # step // g: cells per frame step
    Py_ssize_t Jx, Jy     # bin centres needed along x, y
    Py_ssize_t Lx, Ly     # splat cells (m extra on each side)
    Py_ssize_t ex0, ex1, ey0, ey1   # padded pixel range reaching a bin centre
    Py_ssize_t px0, px1, py0, py1   # its intersection with the image
    Py_ssize_t nu                   # row buffer length: (Lx - 1) * g
    Py_ssize_t nb                   # row buffer stride: nu and the vectors' slack
    # float workspace layout
    Py_ssize_t o_S, o_tmp, o_gx, o_gy, o_wa, o_wb, o_R, o_C, o_C2
    Py_ssize_t o_M, o_E, o_B
    Py_ssize_t n_float, n_int


cdef inline Py_ssize_t _clamp(Py_ssize_t v, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


cdef Geom _geometry(Py_ssize_t H, Py_ssize_t W, int s, int step, int r,
                    int bminx, int bminy, int nfx, int nfy) noexcept nogil:
    cdef Geom G
    cdef int a = step, b = s, t
    while b != 0:
        t = a % b
        a = b
        b = t
    G.g = a
    G.m = s // a
    G.mstep = step // a
    G.Jx = ((nfx - 1) * step + 3 * s) // a + 1
    G.Jy = ((nfy - 1) * step + 3 * s) // a + 1
    G.Lx = G.Jx + 2 * G.m
    G.Ly = G.Jy + 2 * G.m
    G.ex0 = bminx - s + 1
    G.ex1 = bminx + (G.Jx - 1) * a + s - 1
    G.ey0 = bminy - s + 1
    G.ey1 = bminy + (G.Jy - 1) * a + s - 1
    G.px0 = _clamp(G.ex0, 0, W - 1)
    G.px1 = _clamp(G.ex1, 0, W - 1)
    G.py0 = _clamp(G.ey0, 0, H - 1)
    G.py1 = _clamp(G.ey1, 0, H - 1)
    # Row buffers are indexed by u = x - ex0 + 1, the distance to the first
    # splat cell; padded pixels span u = 1 .. (Lx - 1) g - 1 and u = 0 is a
    # zero-weight entry, so the splat runs over whole cell intervals.
    G.nu = (G.Lx - 1) * a
    G.nb = G.nu + _ROW_SLACK
    G.o_S = 0
    G.o_tmp = G.o_S + H * W
    G.o_gx = G.o_tmp + W + 2 * r + 2
    G.o_gy = G.o_gx + G.nb
    G.o_wa = G.o_gy + G.nb
    G.o_wb = G.o_wa + G.nb
    G.o_R = G.o_wb + G.nb
    G.o_C = G.o_R + G.Lx * 8
    G.o_C2 = G.o_C + G.Ly * G.Lx * 8
    G.o_B = G.o_C2 + (G.Ly * G.Jx * 8 if G.m > 1 else 0)
    G.o_M = G.o_B + ((G.Jx + G.m - 1) * 8 if G.m > 1 else 0)
    G.o_E = G.o_M + G.Jy * G.Jx
    G.n_float = G.o_E + G.Jy * G.Jx
    G.n_int = G.nb
    return G


cdef int _smooth(const float[:, ::1] img, const float[::1] taps, int r,
                 Py_ssize_t y0, Py_ssize_t y1, Py_ssize_t x0, Py_ssize_t x1,
                 float[::1] ws, Py_ssize_t o_tmp, Py_ssize_t o_out) except -1 nogil:
    """Separable Gaussian, continuity padding, on rows y0..y1 and cols x0..x1.

    Writes ``ws[o_out + y * W + x]``; ``ws[o_tmp:]`` holds a padded row of
    W + 2r floats.
    """
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1]
    cdef Py_ssize_t y, x, k, cx0, cx1, yu, yd, ob, op
    cdef float t
    cx0 = _clamp(x0 - r, 0, W - 1)
    cx1 = _clamp(x1 + r, 0, W - 1)
    op = o_tmp + r - x0     # column x of the padded row
    for y in range(y0, y1 + 1):
        # vertical pass (taps folded by symmetry) into the padded row
        t = taps[0]
        for x in range(cx0, cx1 + 1):
            ws[op + x] = t * img[y, x]
        for k in range(1, r + 1):
            t = taps[k]
            yu = _clamp(y - k, 0, H - 1)
            yd = _clamp(y + k, 0, H - 1)
            for x in range(cx0, cx1 + 1):
                ws[op + x] = ws[op + x] + t * (img[yu, x] + img[yd, x])
        # continuity padding, then the horizontal pass
        for x in range(x0 - r, cx0):
            ws[op + x] = ws[op + cx0]
        for x in range(cx1 + 1, x1 + r + 1):
            ws[op + x] = ws[op + cx1]
        ob = o_out + y * W + x0
        t = taps[0]
        for x in range(x1 - x0 + 1):
            ws[ob + x] = t * ws[o_tmp + x + r]
        for k in range(1, r + 1):
            t = taps[k]
            for x in range(x1 - x0 + 1):
                ws[ob + x] = ws[ob + x] + t * (ws[o_tmp + x + r - k] +
                                               ws[o_tmp + x + r + k])
    return 0


cdef int _orient_row(float[::1] ws, Py_ssize_t o_gx, Py_ssize_t o_gy,
                     Py_ssize_t o_wa, Py_ssize_t o_wb, int[::1] obin,
                     Py_ssize_t i0, Py_ssize_t n) except -1 nogil:
    """Split the gradient magnitude between two of 8 orientation bins.

    Bin ``t`` is centred on the angle ``2 pi t / 8`` of ``atan2(gy, gx)``
    (x right, y down); the magnitude goes linearly to the two nearest bins,
    ``obin`` and ``obin + 1`` modulo 8, with weights ``wa`` and ``wb``.
    Entries ``i0 .. i0 + n - 1`` of each row buffer are processed.
    """
    cdef Py_ssize_t i, done = 0
    cdef float gx, gy, ax, ay, mx, mn, t, t2, p, q, b, fr, mag, swap
    cdef int bi
    if FEATURES_DSIFT_VECTORS:
        done = dsift_orient16(&ws[o_gx + i0], &ws[o_gy + i0], &ws[o_wa + i0], &ws[o_wb + i0],
                              &obin[i0], n, _ORIENT_COEFFS)
    for i in range(i0 + done, i0 + n):
        gx = ws[o_gx + i]
        gy = ws[o_gy + i]
        # Selects are written as arithmetic on 0/1 flags: GCC does not
        # if-convert float ternaries under the default -ftrapping-math, and a
        # loop with branches is not vectorised.
        ax = fabsf(gx)
        ay = fabsf(gy)
        swap = <float> (ax < ay)
        mx = ax + swap * (ay - ax)
        mn = ay + swap * (ax - ay)
        t = mn / (mx + <float> 1e-30)
        t2 = t * t
        p = _A16
        p = p * t2 + _A14
        p = p * t2 + _A12
        p = p * t2 + _A10
        p = p * t2 + _A8
        p = p * t2 + _A6
        p = p * t2 + _A4
        p = p * t2 + _A2
        p = p * t2 + <float> 1.0
        # angle in units of bins (pi / 4), unfolded from the first octant
        b = p * t * _FOUR_OVER_PI
        b = b + swap * (<float> 2.0 - b - b)
        b = b + <float> (gx < 0) * (<float> 4.0 - b - b)
        b = b + <float> (gy < 0) * (<float> 8.0 - b - b)
        bi = <int> b
        fr = b - <float> bi
        q = _S7
        q = q * t2 + _S6
        q = q * t2 + _S5
        q = q * t2 + _S4
        q = q * t2 + _S3
        q = q * t2 + _S2
        q = q * t2 + _S1
        q = q * t2 + _S0
        mag = mx * q
        obin[i] = bi & 7
        ws[o_wa + i] = mag - mag * fr
        ws[o_wb + i] = mag * fr
    return 0


cdef int _box(float[::1] ws, Py_ssize_t src, Py_ssize_t dst, Py_ssize_t n,
              int m, Py_ssize_t vlen) except -1 nogil:
    """Box sums of m vectors of vlen floats: ``dst[i] = sum(src[i:i + m])``.

    Running sums, restarted every 16 outputs so that round-off cannot build
    up from far away; the cost no longer grows with m.
    """
    cdef Py_ssize_t i, a, c, o, add, sub
    for i in range(n):
        o = dst + i * vlen
        if i % 16 == 0:
            for c in range(vlen):
                ws[o + c] = ws[src + i * vlen + c]
            for a in range(1, m):
                add = src + (i + a) * vlen
                for c in range(vlen):
                    ws[o + c] = ws[o + c] + ws[add + c]
        else:
            add = src + (i + m - 1) * vlen
            sub = src + (i - 1) * vlen
            for c in range(vlen):
                ws[o + c] = ws[o - vlen + c] + (ws[add + c] - ws[sub + c])
    return 0


cdef int _box8(float[::1] ws, Py_ssize_t src, Py_ssize_t dst, Py_ssize_t n,
               int m) except -1 nogil:
    """:func:`_box` for vlen = 8 (one cell), the running sum kept in registers."""
    cdef Py_ssize_t i, a, c, add, sub
    cdef float acc[8]
    for i in range(n):
        if i % 16 == 0:
            for c in range(8):
                acc[c] = ws[src + i * 8 + c]
            for a in range(1, m):
                add = src + (i + a) * 8
                for c in range(8):
                    acc[c] += ws[add + c]
        else:
            add = src + (i + m - 1) * 8
            sub = src + (i - 1) * 8
            for c in range(8):
                acc[c] += ws[add + c] - ws[sub + c]
        for c in range(8):
            ws[dst + i * 8 + c] = acc[c]
    return 0


cdef int _one_size(const float[:, ::1] img, int s, int step,
                   int bminx, int bminy, int nfx, int nfy,
                   const float[::1] taps, int r, const float[::1] wmean,
                   float contrast_threshold, Py_ssize_t f0,
                   float[:, ::1] frames, uint8[:, ::1] descr,
                   float[::1] ws, int[::1] iws) except -1 nogil:
    """Dense SIFT for one bin size into rows f0.. of frames and descr."""
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1]
    cdef Geom G
    cdef int g, m, k, o, o1, bix, by, bx
    cdef Py_ssize_t x, y, i, u, L, Lrow, cur_row, src_row, row_len, base, cb
    cdef Py_ssize_t ix, iy, jx, jy, tstride, o_T, fidx, yu, yd, oR, oC, ux
    cdef float f, fa, fb, a, bw, w, mass, ss, v, n1, n2, inv_g, norm_const
    cdef float acc[8]
    cdef float d[128]
    cdef float wbin[16]
    cdef float cw[16]
    cdef Py_ssize_t cbase[16]

    if nfx <= 0 or nfy <= 0:
        return 0
    G = _geometry(H, W, s, step, r, bminx, bminy, nfx, nfy)
    g = G.g
    m = G.m
    row_len = G.Lx * 8
    inv_g = <float> 1.0 / <float> g

    _smooth(img, taps, r, _clamp(G.py0 - 1, 0, H - 1), _clamp(G.py1 + 1, 0, H - 1),
            _clamp(G.px0 - 1, 0, W - 1), _clamp(G.px1 + 1, 0, W - 1),
            ws, G.o_tmp, G.o_S)
    for i in range(G.Ly * row_len):
        ws[G.o_C + i] = 0

    # --- gradient, orientation and bilinear splat, one padded row at a time ---
    ux = G.ex0 - 1      # row buffer index of pixel x is x - ux
    iws[0] = 0
    ws[G.o_wa] = 0
    ws[G.o_wb] = 0
    # the gradient past the last pixel, which dsift_orient16's last block reads: zeros
    for i in range(G.px1 - ux + 1, G.nb):
        ws[G.o_gx + i] = 0
        ws[G.o_gy + i] = 0
    cur_row = -1
    oR = G.o_R
    for y in range(G.ey0, G.ey1 + 1):
        src_row = _clamp(y, 0, H - 1)
        if src_row != cur_row:
            cur_row = src_row
            base = G.o_S + src_row * W
            # the wrapper guarantees a frame, so H, W >= 3 s + 1 >= 4
            if src_row == 0:
                yu = base
                yd = base + W
                f = 1
            elif src_row == H - 1:
                yu = base - W
                yd = base
                f = 1
            else:
                yu = base - W
                yd = base + W
                f = 0.5
            for x in range(G.px0, G.px1 + 1):
                ws[G.o_gy + x - ux] = f * (ws[yd + x] - ws[yu + x])
            # central differences inside, one-sided at the image border
            for x in range(_clamp(G.px0, 1, W - 2), G.px1 + 1 if G.px1 < W - 1 else W - 1):
                ws[G.o_gx + x - ux] = <float> 0.5 * (ws[base + x + 1] - ws[base + x - 1])
            if G.px0 == 0:
                ws[G.o_gx - ux] = ws[base + 1] - ws[base]
            if G.px1 == W - 1:
                ws[G.o_gx + W - 1 - ux] = ws[base + W - 1] - ws[base + W - 2]
            _orient_row(ws, G.o_gx, G.o_gy, G.o_wa, G.o_wb, iws,
                        G.px0 - ux, G.px1 - G.px0 + 1)
            # continuity padding of the gradient planes
            for x in range(G.ex0, G.px0):
                iws[x - ux] = iws[G.px0 - ux]
                ws[G.o_wa + x - ux] = ws[G.o_wa + G.px0 - ux]
                ws[G.o_wb + x - ux] = ws[G.o_wb + G.px0 - ux]
            for x in range(G.px1 + 1, G.ex1 + 1):
                iws[x - ux] = iws[G.px1 - ux]
                ws[G.o_wa + x - ux] = ws[G.o_wa + G.px1 - ux]
                ws[G.o_wb + x - ux] = ws[G.o_wb + G.px1 - ux]
            # horizontal splat into the row of cells, one cell interval at a
            # time: u = L g goes whole to cell L, L g + k splits (1 - k/g, k/g)
            if FEATURES_DSIFT_VECTORS:
                dsift_splat_row(&iws[0], &ws[G.o_wa], &ws[G.o_wb], G.Lx - 1, g, inv_g,
                                &ws[oR])
            else:
                for i in range(row_len):
                    ws[oR + i] = 0
                for L in range(G.Lx - 1):
                    u = L * g
                    cb = oR + L * 8
                    o = iws[u]
                    ws[cb + o] += ws[G.o_wa + u]
                    ws[cb + ((o + 1) & 7)] += ws[G.o_wb + u]
                    for k in range(1, g):
                        u = u + 1
                        o = iws[u]
                        o1 = (o + 1) & 7
                        a = ws[G.o_wa + u]
                        bw = ws[G.o_wb + u]
                        f = k * inv_g
                        ws[cb + o] += a - a * f
                        ws[cb + o1] += bw - bw * f
                        ws[cb + 8 + o] += a * f
                        ws[cb + 8 + o1] += bw * f
        # vertical splat of the row of cells into the cell grid
        u = y - G.ey0 + 1
        Lrow = u // g
        k = <int> (u - Lrow * g)
        oC = G.o_C + Lrow * row_len
        if k == 0:
            for i in range(row_len):
                ws[oC + i] += ws[oR + i]
        else:
            fb = k * inv_g
            fa = 1 - fb
            for i in range(row_len):
                ws[oC + i] += fa * ws[oR + i]
                ws[oC + row_len + i] += fb * ws[oR + i]

    # --- coarse triangle on the cell grid: bin centre j is splat cell j + m ---
    # (m - |k|) / m, |k| < m, is a box of m ones convolved with itself, over m:
    # two running-sum boxes per axis, whatever m. The 1 / m**2 goes into wbin.
    # Along x, C -> (row buffer B) -> C2; along y, C2 -> C -> C2, which then
    # holds the bin-centre grid T.
    if m == 1:
        o_T = G.o_C + row_len + 8
        tstride = row_len
    else:
        tstride = G.Jx * 8
        for y in range(G.Ly):
            _box8(ws, G.o_C + y * row_len + 8, G.o_B, G.Jx + m - 1, m)
            _box8(ws, G.o_B, G.o_C2 + y * tstride, G.Jx, m)
        _box(ws, G.o_C2 + tstride, G.o_C, G.Jy + m - 1, m, tstride)
        _box(ws, G.o_C, G.o_C2, G.Jy, m, tstride)
        o_T = G.o_C2

    # --- descriptors: gather, window weights, contrast, normalise, quantise ---
    # Per-cell sum and sum of squares: the contrast and the first L2 norm of a
    # descriptor are then 16 products instead of 128.
    for jy in range(G.Jy):
        for jx in range(G.Jx):
            base = o_T + jy * tstride + jx * 8
            v = 0
            w = 0
            for o in range(8):
                v += ws[base + o]
                w += ws[base + o] * ws[base + o]
            ws[G.o_M + jy * G.Jx + jx] = v
            ws[G.o_E + jy * G.Jx + jx] = w
    for by in range(4):
        for bx in range(4):
            wbin[by * 4 + bx] = wmean[by] * wmean[bx] / <float> (m * m)
    norm_const = <float> ((3 * s + 1) * (3 * s + 1))
    fidx = f0
    for iy in range(nfy):
        for ix in range(nfx):
            mass = 0
            ss = 0
            for by in range(4):
                jy = iy * G.mstep + by * m
                for bx in range(4):
                    jx = ix * G.mstep + bx * m
                    w = wbin[by * 4 + bx]
                    mass += w * ws[G.o_M + jy * G.Jx + jx]
                    ss += w * w * ws[G.o_E + jy * G.Jx + jx]
            mass = mass / norm_const
            frames[fidx, 0] = <float> (bminx + ix * step) + <float> 1.5 * s
            frames[fidx, 1] = <float> (bminy + iy * step) + <float> 1.5 * s
            frames[fidx, 2] = <float> s
            frames[fidx, 3] = mass
            if mass < contrast_threshold:
                for k in range(128):
                    descr[fidx, k] = 0
                fidx += 1
                continue
            n1 = <float> 1.0 / (sqrtf(ss) + _EPS)
            if FEATURES_DSIFT_DESCRIPTOR_VECTORS:
                for by in range(4):
                    jy = iy * G.mstep + by * m
                    for bx in range(4):
                        jx = ix * G.mstep + bx * m
                        cbase[by * 4 + bx] = jy * tstride + jx * 8
                        cw[by * 4 + bx] = wbin[by * 4 + bx] * n1
                dsift_descriptor(&ws[o_T], cbase, cw, _EPS, &descr[fidx, 0])
                fidx += 1
                continue
            # normalised and clamped at 0.2 in one go
            bix = 0
            for by in range(4):
                jy = iy * G.mstep + by * m
                for bx in range(4):
                    jx = ix * G.mstep + bx * m
                    base = o_T + jy * tstride + jx * 8
                    w = wbin[by * 4 + bx] * n1
                    for o in range(8):
                        v = w * ws[base + o]
                        d[bix + o] = v if v < <float> 0.2 else <float> 0.2
                    bix = bix + 8
            # partial sums over 8 lanes keep the reduction vectorisable
            for o in range(8):
                acc[o] = 0
            for k in range(0, 128, 8):
                for o in range(8):
                    acc[o] += d[k + o] * d[k + o]
            ss = 0
            for o in range(8):
                ss += acc[o]
            n2 = <float> 512.0 / (sqrtf(ss) + _EPS)
            for k in range(128):
                v = d[k] * n2
                v = v if v < <float> 255.0 else <float> 255.0
                descr[fidx, k] = <uint8> v
            fidx += 1
    return 0


def unit_float(const uint8[:, ::1] image, float[:, ::1] out):
    """``out`` <- ``image / 255`` in float32, as ``np.multiply(image, np.float32(1 / 255),
    dtype=np.float32)`` (the same product, each pixel rounded once): the kernel's input from a
    decoded image, in one pass (NumPy's cast goes through buffers, at about 3x the time)."""
    if image.shape[0] != out.shape[0] or image.shape[1] != out.shape[1]:
        raise ValueError(f"out must be {image.shape[0]}x{image.shape[1]}, "
                         f"got {out.shape[0]}x{out.shape[1]}")
    cdef Py_ssize_t y, x
    cdef float scale = <float> (1.0 / 255.0)
    with nogil:
        for y in range(image.shape[0]):
            for x in range(image.shape[1]):
                out[y, x] = <float> image[y, x] * scale


cdef int _check_length(Py_ssize_t n, Py_ssize_t expected, str name) except -1:
    if n != expected:
        raise ValueError(f"{name} has {n} entries, expected {expected}")
    return 0


def dsift(const float[:, ::1] image, int step, const int[::1] sizes,
          const int[::1] bmin_x, const int[::1] bmin_y,
          const int[::1] n_x, const int[::1] n_y,
          const float[:, ::1] taps, const int[::1] radius,
          const float[:, ::1] window_mean, float contrast_threshold,
          float[:, ::1] frames, uint8[:, ::1] descriptors, int n_threads=1):
    """Dense SIFT at several bin sizes into caller-allocated outputs.

    For size index ``i``: bin size ``sizes[i]``, first frame's top-left bin
    centre at (``bmin_x[i]``, ``bmin_y[i]``), ``n_x[i] x n_y[i]`` frames every
    ``step`` pixels (row-major), Gaussian taps ``taps[i, :radius[i] + 1]``
    (centre first), spatial bin weights ``window_mean[i, :4]``. Frames of
    size ``i`` start at row ``sum(n_x[:i] * n_y[:i])`` of ``frames`` (x, y,
    size, contrast) and ``descriptors`` (uint8, 128 = 4 x 4 x 8 with the
    orientation fastest, then x bins, then y bins). Descriptors whose
    contrast is below ``contrast_threshold`` are zero. ``n_threads`` threads
    share the sizes (OpenMP, when compiled with it).
    """
    cdef Py_ssize_t n_sizes = sizes.shape[0]
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1]
    cdef Py_ssize_t i, total = 0
    cdef Geom G
    if n_sizes == 0:
        return
    # lengths compared as C integers, without making Python objects of the memoryviews
    # (the call's fixed cost is paid three times an image by the sbow pyramid)
    _check_length(bmin_x.shape[0], n_sizes, "bmin_x")
    _check_length(bmin_y.shape[0], n_sizes, "bmin_y")
    _check_length(n_x.shape[0], n_sizes, "n_x")
    _check_length(n_y.shape[0], n_sizes, "n_y")
    _check_length(radius.shape[0], n_sizes, "radius")
    if taps.shape[0] != n_sizes or window_mean.shape[0] != n_sizes or window_mean.shape[1] < 4:
        raise ValueError("taps and window_mean need one row per size")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    starts = np.zeros(n_sizes + 1, dtype=np.intp)
    cdef Py_ssize_t n_float = 1, n_int = 1
    for i in range(n_sizes):
        if sizes[i] < 1 or radius[i] < 0 or radius[i] >= taps.shape[1]:
            raise ValueError(f"bad size {sizes[i]} or radius {radius[i]}")
        if n_x[i] > 0 and n_y[i] > 0:
            # every bin centre and the frames' support must be inside the image
            if (bmin_x[i] < 0 or bmin_y[i] < 0
                    or bmin_x[i] + <Py_ssize_t> (n_x[i] - 1) * step + 3 * sizes[i] > W - 1
                    or bmin_y[i] + <Py_ssize_t> (n_y[i] - 1) * step + 3 * sizes[i] > H - 1):
                raise ValueError(f"frames of size {sizes[i]} leave the image")
            total += <Py_ssize_t> n_x[i] * n_y[i]
            G = _geometry(H, W, sizes[i], step, radius[i], bmin_x[i], bmin_y[i],
                          n_x[i], n_y[i])
            n_float = max(n_float, G.n_float)
            n_int = max(n_int, G.n_int)
        starts[i + 1] = total
    if frames.shape[0] != total or frames.shape[1] != 4:
        raise ValueError(f"frames must be ({total}, 4), got ({frames.shape[0]}, {frames.shape[1]})")
    if descriptors.shape[0] != total or descriptors.shape[1] != 128:
        raise ValueError(f"descriptors must be ({total}, 128)")
    if total == 0:
        return
    n_threads = max(1, min(n_threads, n_sizes))
    # one scratch area per thread, reused from size to size
    cdef float[::1] ws = np.empty(n_threads * n_float, dtype=np.float32)
    cdef int[::1] iws = np.empty(n_threads * n_int, dtype=np.int32)
    cdef Py_ssize_t[::1] st = starts
    cdef Py_ssize_t[::1] order
    cdef Py_ssize_t j, tid
    if n_threads == 1:
        # A plain loop as well as the prange: _one_size then has two call
        # sites, so GCC does not inline it into this function, where its
        # estimated frequency is so low that its loops would not be vectorised.
        with nogil:
            for i in range(n_sizes):
                if st[i + 1] > st[i]:
                    _one_size(image, sizes[i], step, bmin_x[i], bmin_y[i], n_x[i],
                              n_y[i], taps[i], radius[i], window_mean[i],
                              contrast_threshold, st[i], frames, descriptors,
                              ws, iws)
        return
    # largest sizes first, so that dynamic scheduling balances the threads
    order = np.argsort(-np.asarray(sizes), kind="stable").astype(np.intp)
    for j in prange(n_sizes, nogil=True, num_threads=n_threads,
                    schedule="dynamic", chunksize=1):
        i = order[j]
        tid = threadid()
        if st[i + 1] > st[i]:
            _one_size(image, sizes[i], step, bmin_x[i], bmin_y[i], n_x[i], n_y[i],
                      taps[i], radius[i], window_mean[i], contrast_threshold,
                      st[i], frames, descriptors,
                      ws[tid * n_float:(tid + 1) * n_float],
                      iws[tid * n_int:(tid + 1) * n_int])
