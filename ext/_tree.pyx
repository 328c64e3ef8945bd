"""Vocabulary-tree descent: each descriptor's word in a hierarchical k-means tree.

Private module: ``features.codebook.tree`` validates the tree and the input and allocates
the outputs; this module only computes, without the GIL.

The tree is three arrays (see ``features/codebook/tree.py``): ``centers`` (m, d) float32,
one row per node other than the root; ``child_start`` (i + 1,) int32, the children of
internal node ``j`` being the rows ``child_start[j]:child_start[j + 1]`` of ``centers``
(the root is internal node 0); ``child_next`` (m,) int32, for each node its internal
node number when it has children, else ``-1 - word`` (a leaf).

A descriptor starts at the root and moves to the child of nearest center until it
reaches a leaf. The child is the argmin of the float64 squared distance to the float32
centers, ties going to the first: the rule of the exact assignment (``ext/_assign.pyx``)
applied at each node. The children are ranked in float32 (vectorized); the float32
distances are within ``(d + 3) 2**-24`` (relative) of the exact ones, so only the
children within twice that of the nearest can be the argmin, and those few are compared
again in float64.
"""
from cython.parallel cimport prange, threadid

ctypedef unsigned char uint8

ctypedef fused real_in:
    uint8
    float


cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define TREE_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define TREE_CLONES
    #endif
    #define TREE_LANES 16

    /* Squared distance in float32, in TREE_LANES independent accumulators (vectorized by
       the compiler); used to rank a node's children. */
    TREE_CLONES
    static float tree_dist32(const float *x, const float *c, Py_ssize_t d)
    {
        float acc[TREE_LANES] = {0}, s = 0, t;
        Py_ssize_t j = 0, l;
        for (; j + TREE_LANES <= d; j += TREE_LANES)
            for (l = 0; l < TREE_LANES; l++) {
                t = x[j + l] - c[j + l];
                acc[l] += t * t;
            }
        for (; j < d; j++) { t = x[j] - c[j]; s += t * t; }
        for (l = 0; l < TREE_LANES; l++) s += acc[l];
        return s;
    }

    /* The same in float64, in one fixed order: decides between near-ties. */
    static double tree_dist64(const float *x, const float *c, Py_ssize_t d)
    {
        double s = 0, t;
        Py_ssize_t j;
        for (j = 0; j < d; j++) { t = (double)x[j] - (double)c[j]; s += t * t; }
        return s;
    }
    """
    float tree_dist32(const float *x, const float *c, Py_ssize_t d) noexcept nogil
    double tree_dist64(const float *x, const float *c, Py_ssize_t d) noexcept nogil


def descend(const real_in[:, ::1] x, const float[:, ::1] centers, const int[::1] child_start,
            const int[::1] child_next, int[::1] out, Py_ssize_t max_depth, float[:, ::1] xbuf,
            float[:, ::1] dbuf, double rtol, int n_threads=1):
    """Writes the word of each row of ``x`` into ``out`` (caller-allocated, int32 (n,)).

    ``xbuf`` (threads, d) and ``dbuf`` (threads, most children of a node) are float32
    scratch. The children are ranked by float32 distances; those within ``rtol``
    (relative) of the nearest are compared again in float64, so the child taken is the
    float64 argmin (ties to the first) whatever the float32 rounding. A row that does not
    reach a leaf within ``max_depth`` steps gets -1."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], i, j, s, lo, hi, best, first, steps
    cdef int node, nxt, t
    cdef float near, limit, v
    cdef double exact, best64
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            t = threadid()
            for j in range(d):
                xbuf[t, j] = <float>x[i, j]
            node = 0
            out[i] = -1
            for steps in range(max_depth):
                lo = child_start[node]
                hi = child_start[node + 1]
                if hi <= lo:
                    break
                best = lo
                near = 3.4e38
                for s in range(lo, hi):
                    v = tree_dist32(&xbuf[t, 0], &centers[s, 0], d)
                    dbuf[t, s - lo] = v
                    if v < near:
                        near = v
                        best = s
                limit = <float>(near * (1.0 + rtol) + 1e-30)
                first = best
                best64 = -1.0
                for s in range(lo, hi):
                    if s != first and dbuf[t, s - lo] <= limit:
                        if best64 < 0:
                            best64 = tree_dist64(&xbuf[t, 0], &centers[first, 0], d)
                        exact = tree_dist64(&xbuf[t, 0], &centers[s, 0], d)
                        if exact < best64 or (exact == best64 and s < best):
                            best64 = exact
                            best = s
                nxt = child_next[best]
                if nxt < 0:
                    out[i] = -1 - nxt
                    break
                node = nxt
