"""Scoring a query against Hamming-embedding postings: for every query descriptor, the
postings of its word whose signature lies within a Hamming distance of the query's.

Private module: ``features.index.hamming`` holds the (memory-mapped) postings, computes the
query's signatures, allocates the buffers and normalizes the scores; this module only
computes, without the GIL.
"""

cdef extern from *:
    int popcount64 "__builtin_popcountll"(unsigned long long) nogil


def accumulate(const long long[::1] starts, const unsigned long long[::1] signatures,
               const int[::1] ids, const long long[::1] words,
               const unsigned long long[::1] query_signatures, const float[::1] query_weights,
               const float[::1] by_distance, float[::1] scores, unsigned char[::1] seen,
               int[::1] touched):
    """Add ``query_weights[j] * by_distance[h]`` to ``scores[ids[p]]`` for every posting
    ``p`` of the list of ``words[j]`` whose signature is at Hamming distance ``h`` from
    ``query_signatures[j]``, for ``h`` below the length of ``by_distance`` (the farther
    postings add nothing). The images met for the first time (``seen`` 0) are written to
    ``touched``; their count is returned, then the number of image numbers outside
    ``scores`` skipped (a damaged file). ``scores`` and ``seen`` must be zero on entry."""
    cdef Py_ssize_t n = scores.shape[0], m = 0, bad = 0, j, p, a, b
    cdef int i, h, limit = by_distance.shape[0]
    cdef unsigned long long s
    cdef float v
    with nogil:
        for j in range(words.shape[0]):
            a = starts[words[j]]
            b = starts[words[j] + 1]
            s = query_signatures[j]
            v = query_weights[j]
            for p in range(a, b):
                h = popcount64(s ^ signatures[p])
                if h >= limit:
                    continue
                i = ids[p]
                if i < 0 or i >= n:
                    bad += 1
                    continue
                if not seen[i]:
                    seen[i] = 1
                    touched[m] = i
                    m += 1
                scores[i] += v * by_distance[h]
    return m, bad
