"""Update step of Lloyd's k-means: per-cluster sums and counts, and each row's
squared distance to the centroid it was assigned to.

One thread on purpose: it is O(n d), a few percent of an iteration (the
assignment is O(n k r)), and a fixed summation order makes the centroids the
same whatever the thread count of the assignment. Sums and distances are
accumulated in float64 (exact for uint8 rows).
"""
from cython.parallel cimport prange

ctypedef unsigned char uint8
ctypedef long long int64

ctypedef fused real_in:
    uint8
    float


def accumulate(const real_in[:, ::1] x, const int[::1] labels,
               const float[:, ::1] centroids, double[:, ::1] sums,
               int64[::1] counts, double[::1] dist2):
    """``sums[j] += x[i]``, ``counts[j] += 1`` for ``j = labels[i]``, and
    ``dist2[i] = ||x[i] - centroids[j]||**2`` in float64.

    ``sums`` and ``counts`` are added to (zero them first); labels must be in
    ``[0, k)``. Returns the sum of ``dist2``.
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], k = centroids.shape[0]
    cdef Py_ssize_t i, t, j
    cdef double v, diff, s, total = 0
    if (labels.shape[0] != n or dist2.shape[0] != n or centroids.shape[1] != d
            or sums.shape[0] != k or sums.shape[1] != d or counts.shape[0] != k):
        raise ValueError("labels, centroids, sums, counts or dist2 have the wrong shape")
    with nogil:
        for i in range(n):
            j = labels[i]
            if j < 0 or j >= k:
                with gil:
                    raise ValueError(f"label {j} of row {i} is outside [0, {k})")
            counts[j] += 1
            s = 0
            for t in range(d):
                v = <double>x[i, t]
                sums[j, t] += v
                diff = v - <double>centroids[j, t]
                s += diff * diff
            dist2[i] = s
            total += s
    return total


cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define KM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define KM_CLONES
    #endif

    /* Squared Euclidean distance in float32, summed in 32 lanes (vectorized
       by the compiler; compiled for AVX-512 and AVX2 too where GCC can pick
       at load time). */
    KM_CLONES
    static float km_dist_f32(const float *x, const float *c, Py_ssize_t d)
    {
        float acc[32] = {0};
        Py_ssize_t t, l, dmain = d - d % 32;
        for (t = 0; t < dmain; t += 32)
            for (l = 0; l < 32; l++) {
                float diff = x[t + l] - c[t + l];
                acc[l] += diff * diff;
            }
        for (t = dmain; t < d; t++) {
            float diff = x[t] - c[t];
            acc[t - dmain] += diff * diff;
        }
        for (l = 16; l > 0; l /= 2)
            for (t = 0; t < l; t++)
                acc[t] += acc[t + l];
        return acc[0];
    }
    """
    float km_dist_f32(const float *x, const float *c, Py_ssize_t d) noexcept nogil


def kmeanspp(const float[:, ::1] s, const double[:, ::1] u, Py_ssize_t first,
             int[::1] chosen, float[::1] closest, int[::1] owner, double[::1] cum,
             int[::1] cand, float[:, ::1] cand_d, float[:, ::1] cc, int n_threads=1):
    """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007, with several
    trials per step as scikit-learn does): ``chosen`` (k) receives the
    indices of k rows of ``s`` (m, d).

    Row ``first`` is the first center. At step ``t``, one candidate is drawn
    for each uniform number of ``u[t]`` (shape (k, trials)) with probability
    proportional to the squared distance of a row to its closest center, and
    the candidate that leaves the smallest sum of those squared distances is
    taken (the first of equal ones). Scratch: ``closest``, ``owner`` (m; on
    return, each row's squared distance to its closest center and that
    center's position in ``chosen``), ``cum`` (m), ``cand`` (trials),
    ``cand_d`` (trials, m), ``cc`` (trials, k).

    A row is compared with a candidate only if the triangle inequality lets
    the candidate be nearer than the row's center (``||cand - center||**2 <
    4 closest``, with a margin for rounding). Sums are made in one fixed
    order, so the choice does not depend on ``n_threads``. Returns the number
    of centers chosen: less than k when fewer than k rows are distinct.
    """
    cdef Py_ssize_t m = s.shape[0], d = s.shape[1], k = chosen.shape[0]
    cdef Py_ssize_t trials = u.shape[1], t, l, i, a, lo, hi, mid, lbest, o, done = k
    cdef double total, target, pot, potbest
    cdef float v, near
    cdef const float *xrow
    if (u.shape[0] < k or closest.shape[0] != m or owner.shape[0] != m
            or cum.shape[0] != m or cand.shape[0] < trials or cand_d.shape[0] < trials
            or cand_d.shape[1] != m or cc.shape[0] < trials or cc.shape[1] < k
            or not 0 <= first < m or trials < 1):
        raise ValueError("u, first or scratch arrays have the wrong shape")
    if k == 0:
        return 0
    with nogil:
        chosen[0] = <int>first
        for i in prange(m, num_threads=n_threads, schedule="static"):
            closest[i] = km_dist_f32(&s[i, 0], &s[first, 0], d)
            owner[i] = 0
        for t in range(1, k):
            total = 0
            for i in range(m):
                total += closest[i]
                cum[i] = total
            if not total > 0:
                done = t   # every row is at distance 0 of a center
                break
            for l in range(trials):
                # The first row whose cumulative sum exceeds the target: rows
                # at distance 0 (the centers and their duplicates) never are.
                target = u[t, l] * total
                lo = 0
                hi = m - 1
                while lo < hi:
                    mid = (lo + hi) // 2
                    if cum[mid] > target:
                        hi = mid
                    else:
                        lo = mid + 1
                cand[l] = <int>lo
                for a in range(t):
                    cc[l, a] = km_dist_f32(&s[lo, 0], &s[chosen[a], 0], d)
            for i in prange(m, num_threads=n_threads, schedule="static"):
                xrow = &s[i, 0]
                o = owner[i]
                for l in range(trials):
                    near = closest[i]
                    if cc[l, o] < 4 * near * (1 + 1e-5):
                        v = km_dist_f32(xrow, &s[cand[l], 0], d)
                        if v < near:
                            near = v
                    cand_d[l, i] = near
            potbest = -1
            lbest = 0
            for l in range(trials):
                pot = 0
                for i in range(m):
                    pot += cand_d[l, i]
                if potbest < 0 or pot < potbest:
                    potbest = pot
                    lbest = l
            chosen[t] = cand[lbest]
            for i in prange(m, num_threads=n_threads, schedule="static"):
                if cand_d[lbest, i] < closest[i]:
                    closest[i] = cand_d[lbest, i]
                    owner[i] = <int>t
    return done
