"""k-means for codebooks (and for VLAD's centers).

k-means is Lloyd's algorithm with the exact nearest-centroid search of
:mod:`.assign` as its assignment step (a pruned search: about 5 true
distances per row instead of k on SIFT codebooks) and a compiled update step
(``ext/_kmeans.pyx``). Each iteration is therefore the exact Lloyd iteration, about
half the time of FAISS's, which computes the full distance matrix. The bound's axes
are kept over iterations (taken again from the centroids at iterations 1, 3 and 6),
so that the rows are projected only then.

- Initialization (``init``): by default greedy k-means++ (D^2 sampling, the best
  of 4 candidates per step) on a seeded sample of 16 rows per centroid, in
  ``ext/_kmeans.pyx``; it starts so much closer to a good solution that about 12
  iterations reach a lower held-out error than FAISS's 25 from random rows
  (``benchmarks/bench_kmeans.py``). ``init="random"``: k distinct rows drawn at
  random (as FAISS draws k random rows; distinct so that duplicated descriptors,
  such as the all-zero rows of dense SIFT, ~20% of an sbow sample, do not start
  as many identical, and so forever empty, centroids).
- Empty clusters: each is moved to a row drawn with probability proportional
  to its squared distance to its centroid (the k-means++ rule applied to the
  current solution), so it takes over part of a badly quantized region.
- Stopping: after ``iters`` iterations; earlier when no row changes cluster
  (a fixed point), or when an iteration lowers the mean squared distance by
  less than ``tol`` (0.1% by default; that iteration's update is kept).
- ``bounds=True`` skips, at each iteration, the rows whose centroid provably
  cannot change (Hamerly's bounds: an upper bound on the distance to the
  row's centroid and a lower bound on the distance to every other one, both
  exact-arithmetic bounds from the assignment kernel, moved by how far the
  centroids moved). The result is identical (tested); on 1000-word SIFT
  codebooks it is slower, measured: only 15-35% of the rows can be skipped
  (128-D nearest and second-nearest centroids are close, and the largest
  centroid move is large), and the second-nearest distance costs the search
  about 45% more.
- Determinism: a function of the data, ``k``, the options and ``seed`` alone.
  The assignment is exact (ties to the smallest index) whatever the thread
  count or BLAS, and the update sums in one fixed order in float64.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from .._ext import load
from .._shared.checks import check_int
from ..exceptions import ParameterError
from .assign import Assigner


# Recorded with the codebook (store attribute ``codebook/centroids.algorithm``).
# The default convergence test of kmeans_fit (relative decrease of the mean squared
# distance in one iteration), recorded with the codebook too.
KMEANS_TOL = 1e-3
KMEANS_ALGORITHM = "k-means (greedy k-means++ init, Lloyd, exact pruned assignment)"


class KMeansResult(NamedTuple):
    """What :func:`kmeans_fit` learned."""
    centroids: np.ndarray   # float32 (k, d)
    labels: np.ndarray      # int32 (n,): cluster of each row at the last assignment
    inertia: float          # mean squared distance of the rows to their centroid then
    iterations: int         # assignment steps run (fewer than iters if converged)
    history: tuple          # inertia after each assignment step


def quantization_error(centroids, x, block=65536) -> float:
    """Mean squared distance of the rows of ``x`` to their nearest centroid (exact), the
    measure of a codebook's quality on held-out descriptors."""
    words = Assigner(centroids).assign(x)
    err = 0.0
    for s in range(0, len(x), block):
        b = x[s:s + block].astype(np.float64) - centroids[words[s:s + block]]
        err += float(np.einsum("ij,ij->", b, b))
    return err / len(x)


def _as_rows(descriptors):
    """uint8 rows stay uint8 (the kernels read them directly); other numbers become float32."""
    x = np.asarray(descriptors)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ParameterError(f"need a non-empty (n, d) array of descriptors, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"descriptors must be numeric, got dtype {x.dtype}")
    # + 0.0 turns -0.0 into 0.0, so that equal rows have equal bytes.
    x = np.ascontiguousarray(x, dtype=np.float32) + np.float32(0)
    if not np.isfinite(x).all():
        raise ParameterError("descriptors contain NaN or infinite values")
    return x


INITS = ("k-means++", "random")


def kmeans(descriptors, k, *, iters=25, seed=0, redo=1, n_threads=1, verbose=False,
           init="k-means++", tol=KMEANS_TOL, progress=None):
    """k-means centroids of the rows of ``descriptors``: float32 (k, d).

    See :func:`kmeans_fit` (this returns its ``centroids``).
    """
    return kmeans_fit(descriptors, k, iters=iters, seed=seed, redo=redo,
                      n_threads=n_threads, verbose=verbose, init=init, tol=tol,
                      progress=progress).centroids


def kmeans_fit(descriptors, k, *, iters=25, seed=0, redo=1, n_threads=1,
               verbose=False, init="k-means++", tol=KMEANS_TOL, bounds=False,
               warm_iters=0, warm_div=4, progress=None) -> KMeansResult:
    """Lloyd's k-means on the rows of ``descriptors`` (see the module doc).

    Parameters
    ----------
    descriptors : array_like (n, d)
        uint8 (used as is) or any numeric type (converted to float32; float64
        input is rounded to float32, as FAISS does).
    k : int
        Number of centroids, 2 <= k <= number of distinct rows.
    iters : int
        Maximum number of Lloyd iterations (assignment + update).
    seed : int
        Seed of the initialization and of the re-seeding of empty clusters.
    redo : int
        Seeded restarts; the run of lowest final inertia is kept.
    n_threads : int
        Threads of the assignment kernel; never changes the result.
    init : {"k-means++", "random"}
        ``"k-means++"``: greedy k-means++ seeding on a seeded sample of 16 rows
        per centroid (4 candidates per step); ``"random"``: k distinct rows
        drawn at random, as FAISS draws k random rows.
    tol : float
        Stop after an iteration whose assignment lowered the mean squared
        distance by less than ``tol`` relative (its update is still made); 0
        runs all ``iters`` iterations (or up to a fixed point).
    bounds : bool
        Skip the rows whose centroid provably cannot change (Hamerly's bounds,
        module doc): the same result, measured slower on SIFT codebooks.
    warm_iters, warm_div : int
        If ``warm_iters`` > 0, the first ``warm_iters`` of the ``iters``
        iterations run on a seeded ``1 / warm_div`` of the rows (at least k),
        whose centroids start the remaining iterations on all rows: about
        ``warm_iters * (1 - 1 / warm_div)`` iterations' worth of time saved,
        for a slightly higher error.
    progress : callable, optional
        Called as ``progress(done, total)`` after each iteration: iterations done so far
        and at most to do (``redo * iters``; fewer when runs converge early).

    Returns a :class:`KMeansResult`; ``centroids`` are those after the last
    update, ``labels`` and ``inertia`` those of the last assignment.
    """
    x = _as_rows(descriptors)
    k = check_int(k, "k", 2)
    iters = check_int(iters, "iters", 1)
    redo = check_int(redo, "redo", 1)
    n_threads = check_int(n_threads, "n_threads", 1)
    seed = check_int(seed, "seed", 0)
    if init not in INITS:
        raise ParameterError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if (isinstance(tol, (bool, np.bool_)) or not isinstance(tol, numbers.Real)
            or not 0 <= tol < 1):
        raise ParameterError(f"tol must be a number in [0, 1), got {tol!r}")
    if x.shape[0] < k:
        raise ParameterError(f"cannot learn {k} words from {x.shape[0]} descriptors; "
                         f"use fewer words or more images")
    warm_iters = check_int(warm_iters, "warm_iters", 0)
    warm_div = check_int(warm_div, "warm_div", 1)
    if warm_iters >= iters:
        raise ParameterError(f"warm_iters must be smaller than iters ({iters}), got {warm_iters}")
    best = None
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, redo * iters)

    for attempt in range(redo):
        rng = np.random.default_rng([seed, attempt])
        start = None
        if warm_iters:
            m = max(k, x.shape[0] // warm_div)
            sub = x[np.sort(rng.choice(x.shape[0], m, replace=False))]
            start = _lloyd(sub, k, warm_iters, rng, n_threads, verbose,
                           _init(sub, k, init, rng, n_threads), tol=tol,
                           skip=bounds, step=step).centroids
            done = attempt * iters + warm_iters
        else:
            start = _init(x, k, init, rng, n_threads)
        result = _lloyd(x, k, iters - warm_iters, rng, n_threads, verbose, start, tol=tol,
                        skip=bounds, step=step)
        done = (attempt + 1) * iters if attempt + 1 < redo else done
        if best is None or result.inertia < best.inertia:
            best = result
    return best


def _init(x, k, init, rng, n_threads):
    if init == "random":
        return x[_distinct_rows(x, k, rng)].astype(np.float32)
    return _kmeanspp(x, k, rng, n_threads)


def _distinct_rows(x, k, rng):
    """Indices of k rows with pairwise different values, in a seeded random order."""
    n = x.shape[0]
    order = rng.permutation(n)
    chosen, seen = [], set()
    for start in range(0, n, 4 * k):
        for i in order[start:start + 4 * k]:
            key = x[i].tobytes()
            if key not in seen:
                seen.add(key)
                chosen.append(i)
                if len(chosen) == k:
                    return np.array(chosen)
    raise ParameterError(f"cannot learn {k} words from {n} descriptors: only {len(chosen)} "
                     f"of them are distinct; use fewer words or more images")


def _kmeanspp(x, k, rng, n_threads, per_centroid=16, trials=4):
    """Greedy k-means++ seeding (``ext/_kmeans.pyx``) on a seeded sample of
    ``per_centroid * k`` rows (on all rows if that sample has fewer than k
    distinct ones): float32 (k, d) centroids, rows of ``x``."""
    kern = load("_kmeans", "k-means update")
    n = x.shape[0]
    m = min(n, per_centroid * k)
    rows = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    s = np.ascontiguousarray(x[rows], dtype=np.float32)
    u = rng.random((k, trials))
    chosen = np.empty(k, np.int32)
    got = kern.kmeanspp(s, u, int(rng.integers(m)), chosen, np.empty(m, np.float32),
                        np.empty(m, np.int32), np.empty(m, np.float64),
                        np.empty(trials, np.int32), np.empty((trials, m), np.float32),
                        np.empty((trials, k), np.float32), n_threads)
    if got < k and m < n:
        return _kmeanspp(x, k, rng, n_threads, per_centroid=n // k + 1, trials=trials)
    if got < k:
        raise ParameterError(f"cannot learn {k} words from {n} descriptors: only {got} "
                         f"of them are distinct; use fewer words or more images")
    return s[chosen]


def _reseed(x, centroids, empty, dist2, rng):
    """Moves the empty clusters' centroids to rows drawn with probability ~ dist2."""
    cum = np.cumsum(dist2)
    total = cum[-1]
    taken = {c.tobytes() for c in centroids}
    for j in empty:
        for _ in range(64):
            i = min(int(np.searchsorted(cum, rng.random() * total, side="right")),
                    len(cum) - 1)
            row = x[i].astype(np.float32)
            if dist2[i] > 0 and row.tobytes() not in taken:
                break
        # After 64 unlucky draws the centroid is left where it is; it is
        # re-seeded again after the next assignment.
        else:
            continue
        taken.add(row.tobytes())
        centroids[j] = row


# Iterations at which the bound's axes are taken again from the centroids.
_NEW_AXES_AT = (0, 2, 5)


def _lloyd(x, k, iters, rng, n_threads, verbose, centroids=None, tol=0.0,
           skip=True, step=None) -> KMeansResult:
    """Lloyd's iterations; ``skip=False`` searches every row at every iteration (the
    reference that the tests compare the bounds with: same result). ``step()`` is called
    after each iteration."""
    state = _LloydState(x, k, n_threads)
    if centroids is None:
        centroids = x[_distinct_rows(x, k, rng)].astype(np.float32)
    history = []
    for it in range(iters):
        state.assign(centroids, it, skip)
        history.append(state.accumulate(centroids))
        if step is not None:
            step()
        if verbose:
            print(f"k-means iteration {it + 1}: inertia {history[-1]:.6g}, "
                  f"{int((state.counts == 0).sum())} empty", flush=True)
        if np.array_equal(state.labels, state.previous):
            break   # a fixed point: the update would give the same centroids
        state.previous, state.labels = state.labels, state.previous
        centroids = state.update(centroids, rng)
        if _converged(history, tol):
            break   # converged: this iteration's update is kept
    # ``state.previous`` holds the last assignment in both exits of the loop.
    return KMeansResult(centroids, state.previous, float(history[-1]), len(history),
                        tuple(history))


def _converged(history, tol) -> bool:
    """Whether the last assignment lowered the mean squared distance by less than ``tol``
    relative."""
    return len(history) > 1 and history[-2] - history[-1] < tol * history[-1]


class _LloydState:
    """What Lloyd's iterations on ``x`` keep from one to the next: buffers allocated once,
    the last two assignments, and the bounded search's axes, projected rows and bounds."""

    def __init__(self, x, k, n_threads):
        self.kern = load("_kmeans", "k-means update")
        self.kern_assign = load("_assign", "assignment")
        n, d = x.shape
        self.x, self.k, self.n_threads = x, k, n_threads
        self.labels = np.empty(n, np.int32)
        self.previous = np.full(n, -1, np.int32)
        self.dist2 = np.empty(n, np.float64)
        self.sums = np.empty((k, d), np.float64)
        self.counts = np.empty(k, np.int64)
        # The assignment's bound uses fixed axes, recomputed from the centroids at a few
        # iterations only (the first centroids are random rows, whose axes differ from
        # those of the converging codebook), so that the rows' side of the bound is
        # computed once per choice of axes instead of every iteration. All-zero rows
        # (dense SIFT below its contrast threshold) always go to the centroid of
        # smallest norm; they are left out of the search.
        self.nonzero = np.flatnonzero(x.any(axis=1))
        self.xs = x[self.nonzero] if len(self.nonzero) < n else x
        self.sub_labels = np.empty(len(self.xs), np.int32)
        # Hamerly's bounds (exact distances, see ext/_assign.pyx): per row, an upper
        # bound on the distance to its centroid and a lower bound on the distance to
        # every other one. After an update they are moved by how far the centroids
        # moved; a row whose bounds do not overlap keeps its centroid, which is then
        # strictly its nearest, so only the others are searched again and the
        # labels are those of the full search.
        self.upper = np.empty(len(self.xs), np.float64)
        self.lower = np.empty(len(self.xs), np.float64)
        self.active = np.empty(len(self.xs), np.uint8)
        self.old = None
        self.axes = self.projected = None

    def assign(self, centroids, it, skip):
        """One assignment step: ``labels`` <- the nearest centroid of every row (exact);
        with ``skip``, only the rows whose bounds overlap are searched again."""
        assigner = self._assigner(centroids, it)
        if skip:
            rows = None if self.old is None else self._active_rows(assigner)
            assigner.assign_projected(self.xs, self.projected, self.sub_labels, rows=rows,
                                      upper=self.upper, lower=self.lower)
        else:
            assigner.assign_projected(self.xs, self.projected, self.sub_labels)
        self.old = assigner.centroids.astype(np.float64)
        if len(self.xs) < len(self.x):
            self.labels.fill(assigner.zero_word)
            self.labels[self.nonzero] = self.sub_labels
        else:
            self.labels[:] = self.sub_labels

    def _assigner(self, centroids, it):
        """The search over ``centroids``; at the iterations of new axes the rows are
        projected on them again."""
        if it in _NEW_AXES_AT or self.axes is None:
            assigner = Assigner(centroids, n_threads=self.n_threads)
            self.axes = assigner.axes
            self.projected = assigner.project(self.xs)
            return assigner
        return Assigner.with_axes(centroids, self.axes, n_threads=self.n_threads)

    def _active_rows(self, assigner):
        """The rows whose bounds, moved by how far each centroid moved since the last
        assignment, overlap: those whose centroid may change."""
        drift = np.sqrt(np.einsum("ij,ij->i", *(2 * [assigner.centroids.astype(np.float64)
                                                      - self.old]))) * (1 + 1e-12)
        top = int(np.argmax(drift))
        second = float(np.max(np.delete(drift, top))) if self.k > 1 else 0.0
        self.kern_assign.bound_filter(self.xs, self.sub_labels, assigner.centroids, drift, top,
                                      float(drift[top]), second, self.upper, self.lower,
                                      self.active, self.n_threads)
        return np.flatnonzero(self.active)

    def accumulate(self, centroids) -> float:
        """The clusters' sums and counts and each row's squared distance to its centroid,
        for the assignment in ``labels``; returns the mean squared distance."""
        self.sums.fill(0)
        self.counts.fill(0)
        return self.kern.accumulate(self.x, self.labels, centroids, self.sums, self.counts,
                                    self.dist2) / len(self.x)

    def update(self, centroids, rng):
        """One update step: each cluster's mean, from the sums of :meth:`accumulate`; an
        empty cluster's centroid is re-seeded (module doc)."""
        full = self.counts > 0
        centroids = centroids.copy()
        centroids[full] = (self.sums[full] / self.counts[full, None]).astype(np.float32)
        empty = np.flatnonzero(~full)
        if len(empty):
            _reseed(self.x, centroids, empty, self.dist2, rng)
        return centroids
