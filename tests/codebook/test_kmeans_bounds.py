"""k-means: Hamerly's bounds give exactly the full Lloyd result; k-means++ seeding; tol."""
import numpy as np
import pytest

from features._ext import load
from features.codebook import Assigner
from features.codebook import kmeans_fit
from features.codebook.kmeans import _kmeanspp, _lloyd


def clustered(n, d, n_centers, dtype, seed=0, spread=12.0, duplicates=0.0):
    """Rows around random centers; a fraction of them replaced by copies of a few rows
    (and by all-zero rows) so that ties and duplicates occur."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(20, 230, (n_centers, d))
    x = centers[rng.integers(n_centers, size=n)] + rng.normal(0, spread, (n, d))
    x = np.clip(np.rint(x), 0, 255)
    if duplicates:
        m = int(duplicates * n)
        x[rng.choice(n, m, replace=False)] = x[rng.integers(5, size=m)]
        x[:max(1, m // 4)] = 0
    return np.ascontiguousarray(x.astype(dtype))


def exact_distances(x, c):
    x64, c64 = x.astype(np.float64), c.astype(np.float64)
    return np.sqrt(((x64[:, None, :] - c64[None]) ** 2).sum(-1))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("n, k, d, method", [(500, 1, 16, "brute"), (500, 2, 16, "brute"),
                                             (800, 100, 64, "pruned"), (300, 70, 40, "pruned"),
                                             (120, 120, 32, "pruned"), (400, 90, 128, "brute")])
def test_assignment_bounds_are_valid_and_tight(dtype, n, k, d, method):
    x = clustered(n, d, 12, dtype, duplicates=0.2)
    rng = np.random.default_rng(1)
    c = x[rng.choice(n, k, replace=False)].astype(np.float32) + rng.normal(0, 2, (k, d))
    c[: k // 3] = c[k - k // 3:] if k > 3 else c[: k // 3]   # some duplicated centroids
    a = Assigner(c, method=method)
    ref = a.assign(x)
    nz = np.flatnonzero(x.any(axis=1))
    xs = x[nz]
    proj = a.project(xs)
    words = np.empty(len(xs), np.int32)
    upper = np.empty(len(xs))
    lower = np.empty(len(xs))
    a.assign_projected(xs, proj, words, upper=upper, lower=lower)
    np.testing.assert_array_equal(words, ref[nz])
    dist = exact_distances(xs, a.centroids)
    rows = np.arange(len(xs))
    assert (upper >= dist[rows, words]).all()
    assert (upper <= dist[rows, words] * (1 + 1e-5) + 1e-6).all()
    if k == 1:
        assert np.isinf(lower).all()
        return
    dist[rows, words] = np.inf
    second = dist.min(axis=1)
    assert (lower <= second).all()
    # The search verifies up to the second-nearest centroid: the bound is that distance
    # up to the rounding bounds (not merely the weak bound of the projection).
    assert (lower >= second * (1 - 1e-3)).all()
    # A subset of the rows, searched again, gives the same words and bounds.
    sub = np.sort(rng.choice(len(xs), len(xs) // 3, replace=False))
    w2, u2, l2 = np.full_like(words, -1), np.zeros_like(upper), np.zeros_like(lower)
    a.assign_projected(xs, proj, w2, rows=sub, upper=u2, lower=l2)
    np.testing.assert_array_equal(w2[sub], words[sub])
    np.testing.assert_array_equal(u2[sub], upper[sub])
    np.testing.assert_array_equal(l2[sub], lower[sub])
    assert (w2[np.setdiff1d(rows, sub)] == -1).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("n, k, d, iters, dup", [(3000, 64, 32, 15, 0.0),
                                                 (3000, 100, 128, 12, 0.3),
                                                 (600, 2, 8, 10, 0.5),
                                                 (200, 150, 16, 6, 0.0),
                                                 (150, 150, 24, 4, 0.0)])
@pytest.mark.parametrize("init", ["random", "k-means++"])
def test_lloyd_with_bounds_equals_full_lloyd(dtype, n, k, d, iters, dup, init):
    x = clustered(n, d, 20, dtype, seed=k, duplicates=dup)
    n_distinct = len(np.unique(x, axis=0))
    if n_distinct < k:
        pytest.skip("fewer distinct rows than k")
    runs = []
    for skip in (False, True):
        rng = np.random.default_rng([k, 0])
        start = (x[np.sort(rng.choice(n, k, replace=False))].astype(np.float32)
                 if init == "random" and n_distinct == n else
                 _kmeanspp(x, k, rng, 1))
        runs.append(_lloyd(x, k, iters, rng, 1, False, start, skip=skip))
    full, skipped = runs
    np.testing.assert_array_equal(skipped.labels, full.labels)
    np.testing.assert_array_equal(skipped.centroids, full.centroids)
    assert skipped.history == full.history
    assert skipped.iterations == full.iterations


def test_bounds_skip_rows_and_keep_the_result_through_the_api():
    x = clustered(4000, 64, 30, np.uint8, seed=3, spread=6.0, duplicates=0.1)
    a = kmeans_fit(x, 80, iters=20, seed=2, tol=0, bounds=False)
    b = kmeans_fit(x, 80, iters=20, seed=2, tol=0, bounds=True, n_threads=2)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.labels, b.labels)
    # Rows are really skipped: in late iterations few rows are active.
    kern = load("_assign", "assignment")
    xs = np.ascontiguousarray(x[x.any(axis=1)])
    c = a.centroids
    asg = Assigner(c)
    words, upper, lower = (np.empty(len(xs), np.int32), np.empty(len(xs)),
                           np.empty(len(xs)))
    asg.assign_projected(xs, asg.project(xs), words, upper=upper, lower=lower)
    active = np.empty(len(xs), np.uint8)
    drift = np.zeros(len(c))
    count = kern.bound_filter(xs, words, asg.centroids, drift, 0, 0.0, 0.0, upper, lower,
                              active, 1)
    # Unmoved centroids: only rows at (near) ties between two centroids stay active.
    assert count == active.sum() < len(xs) // 10
    moved = np.full(len(c), 1e6)
    assert kern.bound_filter(xs, words, asg.centroids, moved, 0, 1e6, 1e6, upper, lower,
                             active, 1) == len(xs)


def test_kmeanspp_seeding():
    x = clustered(5000, 32, 40, np.uint8, seed=4, duplicates=0.3)
    c1 = _kmeanspp(x, 60, np.random.default_rng(0), 1)
    c2 = _kmeanspp(x, 60, np.random.default_rng(0), 2)
    np.testing.assert_array_equal(c1, c2)                     # whatever the threads
    assert len(np.unique(c1, axis=0)) == 60                   # distinct rows of x
    rows = {r.tobytes() for r in x.astype(np.float32)}
    assert all(r.tobytes() in rows for r in c1)
    assert not np.array_equal(c1, _kmeanspp(x, 60, np.random.default_rng(1), 1))
    # D^2 seeding covers the 40 clusters far better than random rows do.
    err_pp = (exact_distances(x, c1).min(axis=1) ** 2).mean()
    rnd = x[np.random.default_rng(0).choice(len(x), 60, replace=False)].astype(np.float32)
    err_rnd = (exact_distances(x, rnd).min(axis=1) ** 2).mean()
    assert err_pp < err_rnd


def test_kmeanspp_falls_back_to_all_rows_and_counts_distinct_ones():
    rng = np.random.default_rng(0)
    # 5000 copies of 3 rows and 40 distinct rows: a 16-per-centroid sample of 640 rows
    # rarely holds 40 distinct ones, the whole set does.
    x = np.concatenate([np.repeat(rng.integers(0, 255, (3, 8)), 5000 // 3 + 1, axis=0),
                        rng.integers(0, 255, (40, 8))]).astype(np.uint8)
    c = _kmeanspp(x, 40, np.random.default_rng(0), 1)
    assert len(np.unique(c, axis=0)) == 40
    with pytest.raises(ValueError, match="only 43 of them are distinct"):
        _kmeanspp(x, 44, np.random.default_rng(0), 1)


def test_tol_stops_early_and_zero_runs_every_iteration():
    x = clustered(3000, 16, 50, np.float32, seed=5)
    full = kmeans_fit(x, 40, iters=30, seed=0, tol=0)
    early = kmeans_fit(x, 40, iters=30, seed=0, tol=0.05)
    assert early.iterations < full.iterations
    h = early.history
    assert h[-2] - h[-1] < 0.05 * h[-1]
    assert all(h[i - 1] - h[i] >= 0.05 * h[i] for i in range(1, len(h) - 1))
    # Stopping by tol keeps the last update: the centroids are the means of the labels.
    for j in range(40):
        np.testing.assert_allclose(early.centroids[j], x[early.labels == j].mean(axis=0),
                                   rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [(dict(init="kmeans"), "init must be one of"),
                                           (dict(tol=-0.1), "tol must be"),
                                           (dict(tol=1.0), "tol must be"),
                                           (dict(tol=True), "tol must be")])
def test_kmeans_rejects_bad_init_and_tol(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans_fit(clustered(100, 8, 3, np.float32), 3, **kwargs)
