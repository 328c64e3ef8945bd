"""Area-averaging downscale with the arithmetic of OpenCV's ``INTER_AREA``.

Private module: the callers (``features.extract.dense``) choose the output size and
allocate it; this module only computes, without the GIL.

OpenCV's ``resize(..., INTER_AREA)`` by a factor that is not an integer on both
axes weighs every source pixel by the fraction of it that an output pixel covers
(the table below, computed in double as OpenCV does), sums each source row
horizontally, then the rows vertically, in float. OpenCV runs the horizontal sum
as a scatter over the whole table (``buf[d] += S[s] * alpha``), a chain of
dependent loads and stores; here the entries of all output columns are added slot
by slot (the first entry of every column, then the second...), in the same order
per column and with the same roundings, so the result is bit-identical (tested
against ``cv2.resize``) and faster. A source
row shared by two output rows is summed once. Integer factors on both axes take
OpenCV's other (block-mean) path: the callers leave them to ``cv2.resize``.
"""
from libc.math cimport ceil, floor

import numpy as np


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


def area_resize(const float[:, ::1] image, float[:, ::1] out):
    """Downscale ``image`` into ``out`` (its shape is the output size, no larger than the
    image on either axis) as ``cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)``
    does when ``image`` is not an integer multiple of ``out`` on both axes."""
    cdef Py_ssize_t H = image.shape[0], W = image.shape[1]
    cdef Py_ssize_t h = out.shape[0], w = out.shape[1]
    if h < 1 or w < 1 or h > H or w > W:
        raise ValueError(f"cannot area-downscale {H}x{W} to {h}x{w}")
    # OpenCV's factors: the inverse of output / input, in double
    cdef double sx = 1.0 / (<double> w / <double> W)
    cdef double sy = 1.0 / (<double> h / <double> H)
    cdef int[::1] xsrc = np.empty(2 * W + 2, np.int32)
    cdef float[::1] xalpha = np.empty(2 * W + 2, np.float32)
    cdef int[::1] xstart = np.empty(w + 1, np.int32)
    cdef int[::1] ysrc = np.empty(2 * H + 2, np.int32)
    cdef float[::1] yalpha = np.empty(2 * H + 2, np.float32)
    cdef int[::1] ystart = np.empty(h + 1, np.int32)
    cdef float[::1] row = np.empty(w, np.float32)
    cdef float[::1] acc = np.empty(w, np.float32)
    cdef Py_ssize_t dx, dy, j, k, t, r, n_slots = 1, last = -1
    cdef float beta
    with nogil:
        _area_table(W, w, sx, xsrc, xalpha, xstart)
        _area_table(H, h, sy, ysrc, yalpha, ystart)
        for dx in range(w):
            n_slots = max(n_slots, xstart[dx + 1] - xstart[dx])
    # The horizontal table slot by slot: entry t of every output column, padded with
    # weight 0 (adding S * 0 leaves a sum of finite values unchanged), so that the sums
    # of all columns advance together instead of one dependent chain per column.
    cdef int[:, ::1] slot_src = np.zeros((n_slots, w), np.int32)
    cdef float[:, ::1] slot_alpha = np.zeros((n_slots, w), np.float32)
    with nogil:
        for dx in range(w):
            for k in range(xstart[dx], xstart[dx + 1]):
                slot_src[k - xstart[dx], dx] = xsrc[k]
                slot_alpha[k - xstart[dx], dx] = xalpha[k]
        for dy in range(h):
            for j in range(ystart[dy], ystart[dy + 1]):
                r = ysrc[j]
                if r != last:
                    # the horizontal sums of source row r (buf in OpenCV)
                    for dx in range(w):
                        row[dx] = 0
                    for t in range(n_slots):
                        for dx in range(w):
                            row[dx] = row[dx] + image[r, slot_src[t, dx]] * slot_alpha[t, dx]
                    last = r
                beta = yalpha[j]
                if j == ystart[dy]:
                    for dx in range(w):
                        acc[dx] = beta * row[dx]
                else:
                    for dx in range(w):
                        acc[dx] = acc[dx] + beta * row[dx]
            for dx in range(w):
                out[dy, dx] = acc[dx]
