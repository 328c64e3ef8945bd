"""Plain NumPy references of the Fisher vector and VLAD encodings, in float64.

Written from the definitions (Perronnin, Sanchez and Mensink 2010; Jegou et al. 2010;
Arandjelovic and Zisserman 2013) with the conventions VLFeat 0.9.21 documents for
``vl_fisher`` and ``vl_vlad``, one component at a time, for readability rather than
speed. The tests check ``features.fisher_vector`` and ``features.vlad`` against these,
and ``benchmarks/bench_encode.py`` times them as the "plain NumPy" row.
"""
import numpy as np

MIN_PRIOR = 1e-6        # components of smaller prior are left out (their block is 0)
MIN_POSTERIOR = 1e-6    # posteriors below this do not contribute


def gmm_posteriors(x, means, covariances, priors):
    """(N, K) posterior probabilities of the diagonal GMM components, float64."""
    x = np.asarray(x, np.float64)
    n, k = len(x), len(means)
    logp = np.full((n, k), -np.inf)
    for j in range(k):
        if priors[j] < MIN_PRIOR:
            continue
        var = np.asarray(covariances[j], np.float64)
        mahal = (((x - means[j]) ** 2) / var).sum(axis=1)
        logp[:, j] = np.log(priors[j]) - 0.5 * np.log(var).sum() - 0.5 * mahal
    if n == 0:
        return logp
    logp -= logp.max(axis=1, keepdims=True)
    q = np.exp(logp)
    return q / q.sum(axis=1, keepdims=True)


def fisher_reference(x, means, covariances, priors, *, square_root=True,
                     normalized=True, fast=False):
    """2 K D float64: the mean-gradient block, then the variance-gradient block."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(means)[1])
    means = np.asarray(means, np.float64)
    covariances = np.asarray(covariances, np.float64)
    priors = np.asarray(priors, np.float64)
    n, (k, d) = len(x), means.shape
    u = np.zeros((k, d))
    v = np.zeros((k, d))
    if n:
        q = gmm_posteriors(x, means, covariances, priors)
        if fast:
            hard = np.zeros_like(q)
            hard[np.arange(n), q.argmax(axis=1)] = 1.0
            q = hard
        q[q < MIN_POSTERIOR] = 0.0
        for j in range(k):
            if priors[j] < MIN_PRIOR:
                continue
            z = (x - means[j]) / np.sqrt(covariances[j])
            u[j] = (q[:, j, None] * z).sum(axis=0) / (n * np.sqrt(priors[j]))
            v[j] = (q[:, j, None] * (z * z - 1.0)).sum(axis=0) / (n * np.sqrt(2.0 * priors[j]))
    enc = np.concatenate([u.ravel(), v.ravel()])
    if square_root:
        enc = np.sign(enc) * np.sqrt(np.abs(enc))
    if normalized:
        enc /= max(np.linalg.norm(enc), 1e-12)
    return enc


def nearest_centers(x, centers):
    """Index of the nearest center of each row (float64, ties to the smallest index)."""
    x = np.asarray(x, np.float64)
    c = np.asarray(centers, np.float64)
    dist = np.stack([((x - cj) ** 2).sum(axis=1) for cj in c], axis=1)
    return dist.argmin(axis=1) if len(x) else np.zeros(0, np.int64)


def vlad_reference(x, centers, assignments=None, *, normalize_components=True,
                   square_root=True, normalize_mass=False, normalized=True):
    """K D float64 VLAD; ``assignments`` None (nearest center), (N,) indices or (N, K)."""
    x = np.asarray(x, np.float64).reshape(-1, np.shape(centers)[1])
    centers = np.asarray(centers, np.float64)
    n, (k, d) = len(x), centers.shape
    if assignments is None:
        assignments = nearest_centers(x, centers)
    a = np.asarray(assignments)
    if a.ndim == 1:
        q = np.zeros((n, k))
        q[np.arange(n), a] = 1.0
    else:
        q = np.where(a > 0, a, 0.0).astype(np.float64)
    enc = np.zeros((k, d))
    for j in range(k):
        mass = q[:, j].sum()
        if mass > 0:
            enc[j] = (q[:, j, None] * (x - centers[j])).sum(axis=0)
            if normalize_mass:
                enc[j] /= mass
        if square_root:
            enc[j] = np.sign(enc[j]) * np.sqrt(np.abs(enc[j]))
        if normalize_components:
            enc[j] /= max(np.linalg.norm(enc[j]), 1e-12)
    enc = enc.ravel()
    if normalized:
        enc /= max(np.linalg.norm(enc), 1e-12)
    return enc


def pca_fit(x, dims):
    """(mean, components (dims, D)) of plain PCA, for the tests' and benchmark's models
    (the store's PCA is features.encodings.pca)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[:dims]


def gmm_from_kmeans(x, k, seed=0):
    """A diagonal GMM (means, variances, priors; float32) from k-means clusters: one
    maximization step from the hard assignment. Enough of a model for the agreement
    tests and benchmarks (the store's GMM is trained by EM: features.encodings.gmm)."""
    from features.codebook import kmeans
    x = np.asarray(x, np.float32)
    centers = kmeans(x, k, seed=seed, iters=10)
    labels = nearest_centers(x, centers)
    floor = 1e-3 * x.var(axis=0).mean()
    means = np.empty_like(centers)
    variances = np.empty_like(centers)
    priors = np.empty(k, np.float32)
    for j in range(k):
        members = x[labels == j]
        if len(members) == 0:
            means[j], variances[j], priors[j] = centers[j], x.var(axis=0), 0.0
            continue
        means[j] = members.mean(axis=0)
        variances[j] = members.var(axis=0) + floor
        priors[j] = len(members) / len(x)
    return means, variances, priors
