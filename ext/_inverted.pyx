"""Scoring a query against an inverted file: the sum, per image, of the query's weight times
the image's weight over the words they share.

Private module: ``features.index.inverted`` holds the (memory-mapped) lists, validates the
query and allocates the buffers; this module only computes, without the GIL.
"""


def accumulate(const int[::1] ids, const float[::1] weights, const long long[::1] starts,
               const long long[::1] words, const float[::1] query_weights,
               float[::1] scores, unsigned char[::1] seen, int[::1] touched):
    """Add ``query_weights[j] * weights[p]`` to ``scores[ids[p]]`` for every posting ``p``
    of the list of ``words[j]``; the images met for the first time (``seen`` 0) are
    written to ``touched``, and their count is returned. ``scores`` and ``seen`` (one
    per image) must be zero for every image on entry; the caller resets the touched ones.
    An image number outside ``scores`` (a damaged file) is skipped and counted in the
    second value returned."""
    cdef Py_ssize_t n = scores.shape[0], m = 0, bad = 0, j, p, a, b
    cdef int i
    cdef float v
    with nogil:
        for j in range(words.shape[0]):
            a = starts[words[j]]
            b = starts[words[j] + 1]
            v = query_weights[j]
            for p in range(a, b):
                i = ids[p]
                if i < 0 or i >= n:
                    bad += 1
                    continue
                if not seen[i]:
                    seen[i] = 1
                    touched[m] = i
                    m += 1
                scores[i] += v * weights[p]
    return m, bad
