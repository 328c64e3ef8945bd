"""Inner products of dense queries with sparse stored rows, for re-scoring a shortlist.

Private module: ``features.refine`` opens the rows, validates and allocates the outputs;
this module only computes, without the GIL.

A stored row is a run of (column, value) pairs: columns as uint16, values as IEEE half
precision bit patterns (uint16), finite (``SparsePart`` refuses others). With GCC on
x86-64 a row is scored eight pairs at a time (AVX2 gathers of the query, F16C
conversions, FMA) when the CPU has them, else one pair at a time.
"""
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint16_t

cdef extern from *:
    """
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    /* A finite half to float: the half's exponent and mantissa shifted into a float's,
       then rescaled by 2**112 (which also makes subnormal halves exact), then the sign. */
    static inline float rf_half(uint16_t h)
    {
        uint32_t bits = (uint32_t)(h & 0x7fff) << 13;
        float f;
        memcpy(&f, &bits, 4);
        f *= 5.192296858534828e+33f;
        memcpy(&bits, &f, 4);
        bits |= (uint32_t)(h & 0x8000) << 16;
        memcpy(&f, &bits, 4);
        return f;
    }

    /* Columns at or beyond dim (only in a damaged file) count as zeros: a query is never
       read out of bounds, whatever the file holds. */
    static float rf_dot_scalar(const float *q, int dim, const uint16_t *cols,
                               const uint16_t *vals, int64_t n)
    {
        float s = 0;
        for (int64_t p = 0; p < n; p++)
            s += (cols[p] < dim ? q[cols[p]] : 0.0f) * rf_half(vals[p]);
        return s;
    }

    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    __attribute__((target("avx2,f16c,fma")))
    static float rf_dot_avx2(const float *q, int dim, const uint16_t *cols,
                             const uint16_t *vals, int64_t n)
    {
        __m256 acc = _mm256_setzero_ps();
        const __m256i limit = _mm256_set1_epi32(dim);
        int64_t p = 0;
        for (; p + 8 <= n; p += 8) {
            __m256i c = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(cols + p)));
            __m256 in = _mm256_castsi256_ps(_mm256_cmpgt_epi32(limit, c));
            __m256 x = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), q, c, in, 4);
            __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(vals + p)));
            acc = _mm256_fmadd_ps(x, v, acc);
        }
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        return _mm_cvtss_f32(h) + rf_dot_scalar(q, dim, cols + p, vals + p, n - p);
    }

    static int rf_have_simd(void)
    {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")
               && __builtin_cpu_supports("fma");
    }
    #else
    static float rf_dot_avx2(const float *q, int dim, const uint16_t *cols,
                             const uint16_t *vals, int64_t n)
    {
        return rf_dot_scalar(q, dim, cols, vals, n);
    }
    static int rf_have_simd(void) { return 0; }
    #endif

    /* One query against its m candidates. The rows are scattered over a file of
       gigabytes: the start of the row a few candidates ahead is prefetched while this one
       is scored (and its row pointer further ahead), so the loads overlap. */
    #define RF_AHEAD 4
    static void rf_score_query(const float *q, int dim, const int64_t *indptr,
                               const uint16_t *cols, const uint16_t *vals,
                               const int64_t *ids, float *out, int64_t m, int vector)
    {
        for (int64_t j = 0; j < m; j++) {
    #if defined(__GNUC__)
            if (j + 2 * RF_AHEAD < m && ids[j + 2 * RF_AHEAD] >= 0)
                __builtin_prefetch(indptr + ids[j + 2 * RF_AHEAD]);
            if (j + RF_AHEAD < m && ids[j + RF_AHEAD] >= 0) {
                int64_t next = indptr[ids[j + RF_AHEAD]];
                __builtin_prefetch(cols + next);
                __builtin_prefetch(vals + next);
            }
    #endif
            int64_t row = ids[j];
            if (row < 0) {
                out[j] = -INFINITY;
                continue;
            }
            int64_t a = indptr[row], b = indptr[row + 1];
            out[j] = b == a ? 0.0f
                     : vector ? rf_dot_avx2(q, dim, cols + a, vals + a, b - a)
                     : rf_dot_scalar(q, dim, cols + a, vals + a, b - a);
        }
    }
    """
    void rf_score_query(const float *q, int dim, const int64_t *indptr,
                        const uint16_t *cols, const uint16_t *vals, const int64_t *ids,
                        float *out, int64_t m, int vector) noexcept nogil
    float rf_dot_scalar(const float *q, const uint16_t *cols, const uint16_t *vals,
                        int64_t n) noexcept nogil
    float rf_dot_avx2(const float *q, const uint16_t *cols, const uint16_t *vals,
                      int64_t n) noexcept nogil
    int rf_have_simd() noexcept nogil


def have_simd() -> bool:
    """Whether this CPU runs the eight-pairs-at-a-time path."""
    return bool(rf_have_simd())


def sparse_scores(const float[:, ::1] queries, const int64_t[::1] indptr,
                  const uint16_t[::1] columns, const uint16_t[::1] values,
                  const int64_t[:, ::1] ids, float[:, ::1] out, int n_threads=1,
                  bint simd=True):
    """out[i, j] = queries[i] . row ids[i, j]; -inf where ids[i, j] < 0 (no candidate).
    ``indptr`` must be non-decreasing within ``columns`` (the caller checks it); columns
    beyond the queries' width count as zeros. ``simd``: the vector path where the CPU has
    it."""
    cdef Py_ssize_t n = ids.shape[0], m = ids.shape[1], i
    cdef int dim = <int>queries.shape[1]
    cdef int vector = simd and rf_have_simd()
    if m == 0 or n == 0:
        return
    for i in prange(n, nogil=True, num_threads=n_threads, schedule="static"):
        rf_score_query(&queries[i, 0], dim, &indptr[0],
                       &columns[0] if columns.shape[0] else NULL,
                       &values[0] if values.shape[0] else NULL, &ids[i, 0], &out[i, 0], m,
                       vector)
