"""Update step of Lloyd's k-means: per-cluster sums and counts, and each row's
squared distance to the centroid it was assigned to.

One thread on purpose: it is O(n d), a few percent of an iteration (the
assignment is O(n k r)), and a fixed summation order makes the centroids the
same whatever the thread count of the assignment. Sums and distances are
accumulated in float64 (exact for uint8 rows).
"""
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
