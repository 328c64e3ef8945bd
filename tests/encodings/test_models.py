"""The models encodings learn from the descriptor sample: PCA and diagonal GMMs."""
import numpy as np
import pytest

from features.encodings import GMM, PCA, fit_gmm, fit_kmeans, fit_pca, gmm_log_likelihood
from features.encodings.gmm import VARIANCE_FLOOR, gmm_posteriors


def correlated(n=3000, d=12, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(3, 0.1, d)[:, None]
    return (rng.normal(size=(n, d)) @ mix + rng.uniform(-5, 5, d)).astype(dtype)


# ---------------------------------------------------------------- PCA

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_pca_matches_numpy_svd_up_to_sign(dtype):
    x = correlated(dtype=np.float64)
    if dtype == np.uint8:
        x = np.clip(x * 4 + 128, 0, 255)
    x = x.astype(dtype)
    model = fit_pca(x, 5)
    assert isinstance(model, PCA) and model.components.shape == (5, 12)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(model.mean, x.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(model.explained_variance, s[:5] ** 2 / (len(x) - 1), rtol=1e-5)
    for got, ref in zip(model.components, vt[:5]):
        assert abs(abs(float(got @ ref)) - 1) < 1e-5
    np.testing.assert_allclose(model.components @ model.components.T, np.eye(5), atol=1e-6)
    y = model.transform(x)
    np.testing.assert_allclose(np.abs(y), np.abs(xc @ vt[:5].T), rtol=1e-4, atol=1e-3)


def test_pca_whitening_gives_unit_variance_and_decorrelates():
    x = correlated()
    model = fit_pca(x, 8, whiten=True)
    y = model.transform(x).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(8), atol=1e-4)
    assert model.whiten and 0 < model.eps < 1e-4 * model.explained_variance[0]


def test_pca_is_deterministic_and_seeded_subsampling():
    x = correlated(n=5000)
    a, b = fit_pca(x, 4), fit_pca(x[::-1].copy(), 4)
    np.testing.assert_allclose(a.components, b.components, atol=1e-5)   # sign fixed
    s1 = fit_pca(x, 4, max_rows=1000, seed=3)
    s2 = fit_pca(x, 4, max_rows=1000, seed=3)
    s3 = fit_pca(x, 4, max_rows=1000, seed=4)
    np.testing.assert_array_equal(s1.components, s2.components)
    assert not np.array_equal(s1.mean, s3.mean)


def test_pca_transform_out_and_errors():
    x = correlated(n=100)
    model = fit_pca(x, 3)
    out = np.empty((100, 3), np.float32)
    assert model.transform(x, out=out) is out
    with pytest.raises(ValueError, match=r"dims must be an integer in \[1, 12\], got 13"):
        fit_pca(x, 13)
    with pytest.raises(ValueError, match="dims must be"):
        fit_pca(x, 0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_pca(x[:1], 1)
    with pytest.raises(ValueError, match=r"shape \(n, 12\)"):
        model.transform(x[:, :5])
    with pytest.raises(ValueError, match="NaN"):
        fit_pca(np.full((4, 3), np.nan), 2)


# ---------------------------------------------------------------- GMM

def mixture(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    means = np.array([[0, 0, 0, 0], [12, -3, 4, 0], [-8, 9, -6, 10]], float)
    sigmas = np.array([[1, 2, 0.5, 1], [0.7, 0.7, 3, 1.5], [2, 1, 1, 0.4]], float)
    priors = np.array([0.5, 0.3, 0.2])
    comp = rng.choice(3, size=n, p=priors)
    x = means[comp] + rng.normal(size=(n, 4)) * sigmas[comp]
    return x.astype(np.float32), means, sigmas ** 2, priors


def _match(model, means):
    return [int(np.argmin(((model.means - m) ** 2).sum(1))) for m in means]


def test_gmm_recovers_a_known_mixture():
    x, means, variances, priors = mixture()
    model = fit_gmm(x, 3, seed=0)
    assert isinstance(model, GMM)
    assert model.means.shape == (3, 4) and model.covariances.shape == (3, 4)
    assert model.priors.shape == (3,) and model.means.dtype == np.float32
    order = _match(model, means)
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(model.means[order], means, atol=0.15)
    np.testing.assert_allclose(model.covariances[order], variances, rtol=0.12)
    np.testing.assert_allclose(model.priors[order], priors, atol=0.02)
    assert abs(model.priors.sum() - 1) < 1e-6
    assert model.log_likelihood == pytest.approx(gmm_log_likelihood(x, model), rel=1e-5)
    post = gmm_posteriors(x[:10], model)
    np.testing.assert_allclose(post.sum(axis=1), 1)


def test_gmm_log_likelihood_never_decreases():
    x, *_ = mixture(n=3000, seed=1)
    model = fit_gmm(x, 5, seed=2, tol=0, iters=30)
    h = np.array(model.history)
    assert len(h) == 30
    assert (np.diff(h) >= -1e-9 * np.abs(h[1:])).all()
    assert h[-1] > h[0]


def test_gmm_is_deterministic():
    x, *_ = mixture(n=2000, seed=3)
    a = fit_gmm(x, 4, seed=7, iters=20)
    b = fit_gmm(x, 4, seed=7, iters=20)
    for f in ("means", "covariances", "priors"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.history == b.history


def test_gmm_variance_floor_and_duplicates():
    # A component sits on repeated identical rows: its variance is the floor.
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros((500, 3)), rng.normal(10, 1, (500, 3))]).astype(np.float32)
    model = fit_gmm(x, 2, seed=0)
    on_zero = int(np.argmin(np.abs(model.means).sum(1)))
    np.testing.assert_allclose(model.covariances[on_zero], VARIANCE_FLOOR, rtol=1e-6)
    floor = np.array([0.5, 0.25, 2.0])
    model = fit_gmm(x, 2, seed=0, variance_floor=floor)
    assert (model.covariances >= floor.astype(np.float32)).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=11), "cannot learn 11 components from 10 rows"),
    (dict(k=2, variance_floor=0), "variance_floor must be > 0"),
    (dict(k=2, variance_floor=[1, 2]), "variance_floor must be a number or an array of 3"),
    (dict(k=2, tol=-1), "tol must be"),
])
def test_gmm_rejects_bad_input(kwargs, match):
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match=match):
        fit_gmm(x, **kwargs)


def test_fit_kmeans_is_the_codebook_kmeans():
    x, means, *_ = mixture(n=1500)
    from features.codebook import kmeans
    np.testing.assert_array_equal(fit_kmeans(x, 3, seed=0), kmeans(x, 3, seed=0))
    c = fit_kmeans(x, 3, seed=0, redo=5)
    assert c.shape == (3, 4) and c.dtype == np.float32
    order = _match(GMM(c, None, None, 0, 0, ()), means)
    np.testing.assert_allclose(c[order], means, atol=0.3)
