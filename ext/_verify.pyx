"""Geometric verification of the visual-word matches between a query and candidates.

Private module: ``features.verify`` sorts the features by word, dequantizes the stored
records, validates and allocates the outputs; this module only computes, without the GIL.

A feature is a row (x, y, log2 size, angle in radians) of a float32 array, sorted by its
visual word. For one candidate:

1. Tentative matches: one merge of the two word-sorted lists gives every pair of
   features sharing a word, except for words seen more than ``max_per_word`` times in
   either image (bursts: mostly texture, and their pairs are mostly wrong).
2. One match is enough for a hypothesis: the ratio of the two sizes and the difference of
   the two orientations give the scale and rotation of a similarity transform, the two
   positions its translation. The matches vote in a histogram of (rotation, log2 scale
   ratio) with 30-degree by 1-octave bins; hypotheses come from the matches of the most
   voted 3 x 3 block of bins, at most ``max_hypotheses`` of them, evenly spread.
3. A hypothesis is scored by the matches of that block that it maps within ``tol``
   pixels of their partner, with rotation and scale within ``angle_tol`` (radians) and
   ``scale_tol`` (octaves) of its own.
4. Local optimization of each new best: a least-squares similarity on its inliers, then
   the inliers among all matches again, repeated ``lo_iters`` times while the count grows.
5. The result counts inliers one-to-one (a feature in several inlier pairs counts once).

Transforms are (a, b, tx, ty): a candidate point is ``[[a, -b], [b, a]] @ q + t``.
"""
from cython.parallel cimport prange
from libc.math cimport cosf, exp2f, floorf, sinf
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from *:
    """
    #include <math.h>

    /* A similarity hypothesis: q -> [[a, -b], [b, a]] q + t, with the cosine and sine of
       its rotation and its log2 scale for the consistency of the frames. */
    typedef struct { float a, b, tx, ty, c, s, ls; } vf_sim;

    /* The scoring loop is the hot one: with GCC on x86-64 Linux it is compiled for AVX2
       too, picked at load time (ifunc). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
        && defined(__linux__)
    #define VF_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define VF_CLONES
    #endif

    /* Matches as structure of arrays, n long each: query x, y; candidate x, y; cosine and
       sine of the rotation between the two frames; log2 of the scale ratio. */
    typedef struct {
        float *qx, *qy, *cx, *cy, *cs, *sn, *ds;
    } vf_matches;

    /* How many of matches [0, n) agree with h: mapped within sqrt(tol2) of their partner,
       rotation within the angle whose cosine is cos_tol, scale within scale_tol octaves. */
    VF_CLONES
    static Py_ssize_t vf_count(const vf_sim *h, const vf_matches *m, Py_ssize_t n,
                               float tol2, float cos_tol, float scale_tol)
    {
        const float a = h->a, b = h->b, tx = h->tx, ty = h->ty, c = h->c, s = h->s,
                    ls = h->ls;
        const float *restrict qx = m->qx, *restrict qy = m->qy, *restrict cx = m->cx,
                    *restrict cy = m->cy, *restrict cs = m->cs, *restrict sn = m->sn,
                    *restrict ds = m->ds;
        int count = 0;
        Py_ssize_t i;
        for (i = 0; i < n; i++) {
            float ex = a * qx[i] - b * qy[i] + tx - cx[i];
            float ey = b * qx[i] + a * qy[i] + ty - cy[i];
            float dl = ds[i] - ls;
            count += (ex * ex + ey * ey <= tol2) & (c * cs[i] + s * sn[i] >= cos_tol)
                     & (fabsf(dl) <= scale_tol);
        }
        return count;
    }

    static int vf_agrees(const vf_sim *h, const vf_matches *m, Py_ssize_t i,
                         float tol2, float cos_tol, float scale_tol)
    {
        float ex = h->a * m->qx[i] - h->b * m->qy[i] + h->tx - m->cx[i];
        float ey = h->b * m->qx[i] + h->a * m->qy[i] + h->ty - m->cy[i];
        return (ex * ex + ey * ey <= tol2) && (h->c * m->cs[i] + h->s * m->sn[i] >= cos_tol)
               && (fabsf(m->ds[i] - h->ls) <= scale_tol);
    }

    /* Least-squares similarity on the matches of [0, n) that agree with h; returns their
       count, and the fit in *out when they determine one (else *out is h). Sums in double:
       pixel coordinates squared and summed over thousands of matches. */
    static Py_ssize_t vf_refit(const vf_sim *h, const vf_matches *m, Py_ssize_t n,
                               float tol2, float cos_tol, float scale_tol, vf_sim *out)
    {
        double k = 0, sqx = 0, sqy = 0, scx = 0, scy = 0, sqq = 0, sa = 0, sb = 0;
        double mqx, mqy, mcx, mcy, var, fa, fb, scale;
        Py_ssize_t i;
        *out = *h;
        for (i = 0; i < n; i++) {
            if (!vf_agrees(h, m, i, tol2, cos_tol, scale_tol))
                continue;
            double qx = m->qx[i], qy = m->qy[i], cx = m->cx[i], cy = m->cy[i];
            k += 1;
            sqx += qx; sqy += qy; scx += cx; scy += cy;
            sqq += qx * qx + qy * qy;
            sa += qx * cx + qy * cy;
            sb += qx * cy - qy * cx;
        }
        if (k < 2)
            return (Py_ssize_t)k;
        mqx = sqx / k; mqy = sqy / k; mcx = scx / k; mcy = scy / k;
        var = sqq - k * (mqx * mqx + mqy * mqy);
        if (!(var > 1e-9 * (sqq + 1.0)))
            return (Py_ssize_t)k;
        fa = (sa - k * (mqx * mcx + mqy * mcy)) / var;
        fb = (sb - k * (mqx * mcy - mqy * mcx)) / var;
        scale = sqrt(fa * fa + fb * fb);
        if (!(scale > 0))
            return (Py_ssize_t)k;
        out->a = (float)fa;
        out->b = (float)fb;
        out->tx = (float)(mcx - (fa * mqx - fb * mqy));
        out->ty = (float)(mcy - (fb * mqx + fa * mqy));
        out->c = (float)(fa / scale);
        out->s = (float)(fb / scale);
        out->ls = (float)log2(scale);
        return (Py_ssize_t)k;
    }
    """
    ctypedef struct vf_sim:
        float a, b, tx, ty, c, s, ls
    ctypedef struct vf_matches:
        float *qx
        float *qy
        float *cx
        float *cy
        float *cs
        float *sn
        float *ds
    Py_ssize_t vf_count(const vf_sim *h, const vf_matches *m, Py_ssize_t n, float tol2,
                        float cos_tol, float scale_tol) noexcept nogil
    int vf_agrees(const vf_sim *h, const vf_matches *m, Py_ssize_t i, float tol2,
                  float cos_tol, float scale_tol) noexcept nogil
    Py_ssize_t vf_refit(const vf_sim *h, const vf_matches *m, Py_ssize_t n, float tol2,
                        float cos_tol, float scale_tol, vf_sim *out) noexcept nogil

cdef enum:
    N_ANGLE = 12      # 30-degree bins of the rotation
    N_SCALE = 24      # 1-octave bins of the log2 scale ratio, from -12 to +12

cdef float _PI = 3.14159265358979
cdef float _TWO_PI = 6.28318530717959


cdef struct Params:
    float tol2            # squared pixel tolerance in the candidate
    int max_per_word
    int max_hypotheses
    int lo_iters
    float cos_tol         # cosine of the angle tolerance
    float scale_tol


cdef inline float _wrap(float x) noexcept nogil:
    """An angle in [-pi, pi)."""
    return x - _TWO_PI * floorf((x + _PI) / _TWO_PI)


cdef Py_ssize_t _tentative(const int32_t *qw, Py_ssize_t nq, const int32_t *cw, Py_ssize_t nc,
                           int max_per_word, int32_t *pq, int32_t *pc) noexcept nogil:
    """Pairs of features sharing a word (both lists sorted by word); returns their count.
    At most ``max_per_word * min(nq, nc)`` pairs."""
    cdef Py_ssize_t i = 0, j = 0, i1, j1, u, v, n = 0
    cdef int32_t w
    while i < nq and j < nc:
        if qw[i] < cw[j]:
            i += 1
        elif qw[i] > cw[j]:
            j += 1
        else:
            w = qw[i]
            i1 = i + 1
            while i1 < nq and qw[i1] == w:
                i1 += 1
            j1 = j + 1
            while j1 < nc and cw[j1] == w:
                j1 += 1
            if i1 - i <= max_per_word and j1 - j <= max_per_word:
                for u in range(i, i1):
                    for v in range(j, j1):
                        pq[n] = <int32_t>u
                        pc[n] = <int32_t>v
                        n += 1
            i = i1
            j = j1
    return n


cdef Py_ssize_t _verify_one(const int32_t *qw, const float *qg, Py_ssize_t nq,
                            const int32_t *cw, const float *cg, Py_ssize_t nc,
                            const Params *p, float *transform,
                            int32_t *out_q, int32_t *out_c) noexcept nogil:
    """Verify one candidate; returns its one-to-one inlier count (-1: out of memory).
    ``transform`` receives (a, b, tx, ty), all zero when there is none; ``out_q`` and
    ``out_c`` (NULL, or at least min(nq, nc) long) the inlier pairs."""
    cdef Py_ssize_t cap, r
    cdef int32_t *ints
    cdef float *floats
    cdef uint8_t *used
    transform[0] = transform[1] = transform[2] = transform[3] = 0
    if nq == 0 or nc == 0:
        return 0
    cap = p.max_per_word * (nq if nq < nc else nc) + 1
    ints = <int32_t *>malloc(cap * 5 * sizeof(int32_t))
    floats = <float *>malloc(cap * 9 * sizeof(float))
    used = <uint8_t *>malloc(nq + nc)
    if ints == NULL or floats == NULL or used == NULL:
        r = -1
    else:
        r = _verify_core(qw, qg, nq, cw, cg, nc, p, transform, out_q, out_c, cap,
                         ints, floats, used)
    free(ints)
    free(floats)
    free(used)
    return r


cdef Py_ssize_t _verify_core(const int32_t *qw, const float *qg, Py_ssize_t nq,
                             const int32_t *cw, const float *cg, Py_ssize_t nc,
                             const Params *p, float *transform, int32_t *out_q, int32_t *out_c,
                             Py_ssize_t cap, int32_t *ints, float *floats,
                             uint8_t *used) noexcept nogil:
    """The work of ``_verify_one`` in its scratch: ``ints`` 5 x cap, ``floats`` 9 x cap,
    ``used`` nq + nc."""
    cdef int32_t *pq = ints              # tentative pairs, in merge order
    cdef int32_t *pc = ints + cap
    cdef int32_t *bins = ints + 2 * cap
    cdef int32_t *sq = ints + 3 * cap    # the pairs again, the selected block first
    cdef int32_t *sc = ints + 4 * cap
    cdef float *da = floats + 7 * cap
    cdef float *dl = floats + 8 * cap
    cdef vf_matches m
    cdef Py_ssize_t n, k, i, h, nsel, nrest, stride, count, best = 0, lo, inl, c2, result = 0
    cdef int hist[N_ANGLE * N_SCALE]
    cdef int ai, si, pa = 0, ps = 0, votes, top = -1, dai, dsi, sj
    cdef float sc_, tol2 = p.tol2, cos_tol = p.cos_tol, scale_tol = p.scale_tol
    cdef vf_sim hyp, fit, cur, win
    m.qx = floats
    m.qy = floats + cap
    m.cx = floats + 2 * cap
    m.cy = floats + 3 * cap
    m.cs = floats + 4 * cap
    m.sn = floats + 5 * cap
    m.ds = floats + 6 * cap

    n = _tentative(qw, nq, cw, nc, p.max_per_word, pq, pc)
    if n < 2:
        return 0

    # Votes of the matches for (rotation, scale).
    memset(hist, 0, sizeof(hist))
    for k in range(n):
        da[k] = _wrap(cg[4 * pc[k] + 3] - qg[4 * pq[k] + 3])
        dl[k] = cg[4 * pc[k] + 2] - qg[4 * pq[k] + 2]
        ai = <int>floorf((da[k] + _PI) * (N_ANGLE / _TWO_PI))
        ai = (ai % N_ANGLE + N_ANGLE) % N_ANGLE
        si = <int>floorf(dl[k]) + N_SCALE // 2
        si = 0 if si < 0 else (N_SCALE - 1 if si >= N_SCALE else si)
        bins[k] = ai * N_SCALE + si
        hist[bins[k]] += 1
    for ai in range(N_ANGLE):
        for si in range(N_SCALE):
            votes = 0
            for dai in range(-1, 2):
                for dsi in range(-1, 2):
                    sj = si + dsi
                    if 0 <= sj < N_SCALE:
                        votes += hist[((ai + dai + N_ANGLE) % N_ANGLE) * N_SCALE + sj]
            if votes > top:
                top = votes
                pa = ai
                ps = si

    # The matches as structure of arrays, those of the most voted block first.
    nsel = 0
    nrest = n - 1
    for k in range(n):
        dai = bins[k] // N_SCALE - pa
        if dai > N_ANGLE // 2:
            dai -= N_ANGLE
        elif dai < -(N_ANGLE // 2):
            dai += N_ANGLE
        if -1 <= dai <= 1 and -1 <= bins[k] % N_SCALE - ps <= 1:
            i = nsel
            nsel += 1
        else:
            i = nrest
            nrest -= 1
        sq[i] = pq[k]
        sc[i] = pc[k]
        m.qx[i] = qg[4 * pq[k]]
        m.qy[i] = qg[4 * pq[k] + 1]
        m.cx[i] = cg[4 * pc[k]]
        m.cy[i] = cg[4 * pc[k] + 1]
        m.cs[i] = cosf(da[k])
        m.sn[i] = sinf(da[k])
        m.ds[i] = dl[k]

    # Hypotheses from single matches, scored on the block; each new best is refined by
    # least squares on its inliers among all matches (local optimization).
    stride = (nsel + p.max_hypotheses - 1) // p.max_hypotheses
    if stride < 1:
        stride = 1
    h = 0
    while h < nsel:
        k = h
        h += stride
        sc_ = exp2f(m.ds[k])
        hyp.c = m.cs[k]
        hyp.s = m.sn[k]
        hyp.ls = m.ds[k]
        hyp.a = sc_ * hyp.c
        hyp.b = sc_ * hyp.s
        hyp.tx = m.cx[k] - (hyp.a * m.qx[k] - hyp.b * m.qy[k])
        hyp.ty = m.cy[k] - (hyp.b * m.qx[k] + hyp.a * m.qy[k])
        count = vf_count(&hyp, &m, nsel, tol2, cos_tol, scale_tol)
        if count <= best:
            continue
        best = count
        cur = hyp
        inl = vf_refit(&cur, &m, n, tol2, cos_tol, scale_tol, &fit)
        for lo in range(p.lo_iters):
            c2 = vf_refit(&fit, &m, n, tol2, cos_tol, scale_tol, &hyp)
            if c2 <= inl:
                break
            inl = c2
            cur = fit
            fit = hyp
        if inl > result:
            result = inl
            win = cur

    if result == 0:
        return 0
    # One-to-one count under the winning transform.
    transform[0] = win.a
    transform[1] = win.b
    transform[2] = win.tx
    transform[3] = win.ty
    memset(used, 0, nq + nc)
    result = 0
    for k in range(n):
        if not vf_agrees(&win, &m, k, tol2, cos_tol, scale_tol):
            continue
        if used[sq[k]] or used[nq + sc[k]]:
            continue
        used[sq[k]] = 1
        used[nq + sc[k]] = 1
        if out_q != NULL:
            out_q[result] = sq[k]
            out_c[result] = sc[k]
        result += 1
    return result


cdef Params _params(float tol, int max_per_word, int max_hypotheses, int lo_iters,
                    float angle_tol, float scale_tol) noexcept nogil:
    cdef Params p
    p.tol2 = tol * tol
    p.max_per_word = max_per_word if max_per_word > 0 else 1
    p.max_hypotheses = max_hypotheses if max_hypotheses > 0 else 1
    p.lo_iters = lo_iters
    p.cos_tol = cosf(angle_tol) if angle_tol < _PI else -2
    p.scale_tol = scale_tol
    return p


def verify_many(const int32_t[::1] q_words, const float[:, ::1] q_geom,
                const int32_t[::1] c_words, const float[:, ::1] c_geom,
                const int64_t[::1] c_offsets, const float[::1] tol,
                int max_per_word, int max_hypotheses, int lo_iters,
                float angle_tol, float scale_tol,
                int32_t[::1] out_inliers, float[:, ::1] out_transforms, int n_threads=1):
    """Verify candidates ``c_offsets[i]:c_offsets[i + 1]`` of the concatenated candidate
    features against the query; candidate i's pixel tolerance is ``tol[i]``.
    Writes ``out_inliers`` and ``out_transforms`` (n x 4)."""
    cdef Py_ssize_t n_cand = c_offsets.shape[0] - 1, nq = q_words.shape[0], i, a, b
    cdef Params p
    cdef Py_ssize_t n_failed = 0
    if (q_geom.shape[0] != nq or q_geom.shape[1] != 4 or c_geom.shape[1] != 4
            or c_geom.shape[0] != c_words.shape[0] or n_cand < 0 or tol.shape[0] < n_cand
            or out_inliers.shape[0] < n_cand or out_transforms.shape[0] < n_cand
            or out_transforms.shape[1] != 4):
        raise ValueError("query, candidate or output arrays have the wrong shape")
    for i in range(n_cand):
        if c_offsets[i] < 0 or c_offsets[i] > c_offsets[i + 1] or c_offsets[i + 1] > c_words.shape[0]:
            raise ValueError("c_offsets must be non-decreasing within the candidate rows")
    for i in prange(n_cand, nogil=True, num_threads=n_threads, schedule="dynamic"):
        p = _params(tol[i], max_per_word, max_hypotheses, lo_iters, angle_tol, scale_tol)
        a = c_offsets[i]
        b = c_offsets[i + 1]
        if nq == 0 or b == a:
            out_inliers[i] = 0
            out_transforms[i, 0] = 0
            out_transforms[i, 1] = 0
            out_transforms[i, 2] = 0
            out_transforms[i, 3] = 0
            continue
        out_inliers[i] = <int32_t>_verify_one(&q_words[0], &q_geom[0, 0], nq, &c_words[a],
                                             &c_geom[a, 0], b - a, &p, &out_transforms[i, 0],
                                             NULL, NULL)
        if out_inliers[i] < 0:
            n_failed += 1
    if n_failed:
        raise MemoryError("out of memory in geometric verification")
    return 0


def verify_pairs(const int32_t[::1] q_words, const float[:, ::1] q_geom,
                 const int32_t[::1] c_words, const float[:, ::1] c_geom, float tol,
                 int max_per_word, int max_hypotheses, int lo_iters,
                 float angle_tol, float scale_tol,
                 int32_t[::1] out_q, int32_t[::1] out_c, float[::1] out_transform):
    """Verify one candidate and write its inlier pairs (row numbers of the query and the
    candidate, ``min(nq, nc)`` slots at least) and transform; returns the inlier count."""
    cdef Py_ssize_t nq = q_words.shape[0], nc = c_words.shape[0], r
    cdef Params p = _params(tol, max_per_word, max_hypotheses, lo_iters, angle_tol, scale_tol)
    if (q_geom.shape[0] != nq or q_geom.shape[1] != 4 or c_geom.shape[0] != nc
            or c_geom.shape[1] != 4 or out_q.shape[0] < min(nq, nc)
            or out_c.shape[0] < min(nq, nc) or out_transform.shape[0] != 4):
        raise ValueError("query, candidate or output arrays have the wrong shape")
    out_transform[0] = out_transform[1] = out_transform[2] = out_transform[3] = 0
    if nq == 0 or nc == 0:
        return 0
    with nogil:
        r = _verify_one(&q_words[0], &q_geom[0, 0], nq, &c_words[0], &c_geom[0, 0], nc, &p,
                        &out_transform[0], &out_q[0], &out_c[0])
    if r < 0:
        raise MemoryError("out of memory in geometric verification")
    return r
