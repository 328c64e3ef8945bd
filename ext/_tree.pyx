"""Vocabulary-tree descent: each descriptor's word in a hierarchical k-means tree.

Private module: ``features.codebook.tree`` validates the tree and the input and allocates
the outputs; this module only computes, without the GIL.

The tree is three arrays (see ``features/codebook/tree.py``): ``centers`` (m, d) float32,
one row per node other than the root; ``child_start`` (i + 1,) int32, the children of
internal node ``j`` being the rows ``child_start[j]:child_start[j + 1]`` of ``centers``
(the root is internal node 0); ``child_next`` (m,) int32, for each node its internal
node number when it has children, else ``-1 - word`` (a leaf).

A descriptor starts at the root and moves to the child of nearest center until it
reaches a leaf. The distance is the float64 sum of squared differences to the float32
center, ties going to the first child: the rule of the exact assignment
(``ext/_assign.pyx``) applied at each node.
"""
from cython.parallel cimport prange

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

    /* Squared distance, float64, of a row (uint8 or float32) to a float32 center; four
       independent accumulators so that the compiler vectorizes the loop. */
    TREE_CLONES
    static double tree_dist_u8(const unsigned char *x, const float *c, Py_ssize_t d)
    {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0, t;
        Py_ssize_t j = 0;
        for (; j + 4 <= d; j += 4) {
            t = (double)x[j] - (double)c[j]; s0 += t * t;
            t = (double)x[j + 1] - (double)c[j + 1]; s1 += t * t;
            t = (double)x[j + 2] - (double)c[j + 2]; s2 += t * t;
            t = (double)x[j + 3] - (double)c[j + 3]; s3 += t * t;
        }
        for (; j < d; j++) { t = (double)x[j] - (double)c[j]; s0 += t * t; }
        return (s0 + s1) + (s2 + s3);
    }

    TREE_CLONES
    static double tree_dist_f32(const float *x, const float *c, Py_ssize_t d)
    {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0, t;
        Py_ssize_t j = 0;
        for (; j + 4 <= d; j += 4) {
            t = (double)x[j] - (double)c[j]; s0 += t * t;
            t = (double)x[j + 1] - (double)c[j + 1]; s1 += t * t;
            t = (double)x[j + 2] - (double)c[j + 2]; s2 += t * t;
            t = (double)x[j + 3] - (double)c[j + 3]; s3 += t * t;
        }
        for (; j < d; j++) { t = (double)x[j] - (double)c[j]; s0 += t * t; }
        return (s0 + s1) + (s2 + s3);
    }
    """
    double tree_dist_u8(const uint8 *x, const float *c, Py_ssize_t d) noexcept nogil
    double tree_dist_f32(const float *x, const float *c, Py_ssize_t d) noexcept nogil


def descend(const real_in[:, ::1] x, const float[:, ::1] centers, const int[::1] child_start,
            const int[::1] child_next, int[::1] out, Py_ssize_t max_depth, int n_threads=1):
    """Writes the word of each row of ``x`` into ``out`` (caller-allocated, int32 (n,)).

    A row that does not reach a leaf within ``max_depth`` steps, or meets an internal
    node without children (a malformed tree), gets -1."""
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1], i, s, lo, hi, best, steps
    cdef int node, nxt
    cdef double dist, near
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            node = 0
            out[i] = -1
            for steps in range(max_depth):
                lo = child_start[node]
                hi = child_start[node + 1]
                if hi <= lo:
                    break
                best = lo
                near = 1e308
                for s in range(lo, hi):
                    if real_in is uint8:
                        dist = tree_dist_u8(&x[i, 0], &centers[s, 0], d)
                    else:
                        dist = tree_dist_f32(&x[i, 0], &centers[s, 0], d)
                    if dist < near:
                        near = dist
                        best = s
                nxt = child_next[best]
                if nxt < 0:
                    out[i] = -1 - nxt
                    break
                node = nxt
