import numpy as np
import pytest

from features.codebook import Assigner
from features.codebook import kmeans, sample_priority, subsample_rows
from features.codebook import bottom_k
from features.sources import Item


def blobs(n_per=200, k=5, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 255, (k, d))
    x = np.concatenate([c + rng.normal(0, 3, (n_per, d)) for c in centers])
    return x.astype(np.float32), centers


def test_kmeans_finds_separated_clusters():
    x, centers = blobs()
    # Lloyd from a random start can merge two blobs; the best of restarts must not.
    c = kmeans(x, 5, seed=1, redo=8)
    assert c.shape == (5, 16) and c.dtype == np.float32
    dist = np.linalg.norm(c[:, None] - centers[None], axis=2).min(axis=0)
    assert dist.max() < 2.0


def test_kmeans_is_seeded():
    x, _ = blobs(k=20)
    np.testing.assert_array_equal(kmeans(x, 8, seed=3), kmeans(x, 8, seed=3))


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_kmeans_accepts_dtypes(dtype):
    x, _ = blobs(k=3)
    c = kmeans(np.clip(x, 0, 255).astype(dtype), 3, seed=0)
    assert c.shape == (3, 16)


@pytest.mark.parametrize("n, k, match", [(0, 4, "non-empty"),
                                         (3, 4, "cannot learn 4 words from 3 descriptors"),
                                         (10, 1, "k must be an integer >= 2, got 1")])
def test_kmeans_rejects_bad_input(n, k, match):
    with pytest.raises(ValueError, match=match):
        kmeans(np.zeros((n, 8), np.float32), k)


def _qerr(centroids, x):
    words = Assigner(centroids).assign(x)
    return float(((x.astype(np.float64) - centroids[words]) ** 2).sum(1).mean())


def sift_like(n, seed=0):
    """Descriptors with SIFT's traits: non-negative, clustered, ~20% all-zero rows."""
    rng = np.random.default_rng(seed)
    centers = rng.gamma(0.6, 40, (60, 128))
    x = centers[rng.integers(0, 60, n)] * rng.uniform(0.5, 1.5, (n, 1))
    x += rng.gamma(0.8, 12, (n, 128))
    x[rng.random(n) < 0.2] = 0
    return np.clip(x, 0, 255).astype(np.uint8)


def test_kmeans_quantization_error_matches_faiss():
    import faiss
    x, held = sift_like(12000, seed=0), sift_like(4000, seed=1)
    ours = _qerr(kmeans(x, 100, iters=15, seed=0), held)
    km = faiss.Kmeans(128, 100, niter=15, seed=0, max_points_per_centroid=1 << 30)
    km.train(x.astype(np.float32))
    theirs = _qerr(km.centroids, held)
    assert ours <= theirs * 1.01, (ours, theirs)


def test_kmeans_result_and_fixed_point():
    from features.codebook import kmeans_fit
    x, _ = blobs(k=4)
    r = kmeans_fit(x, 4, iters=50, seed=0, redo=4)
    assert r.iterations < 50                       # stopped at a fixed point
    assert r.labels.shape == (len(x),) and r.labels.dtype == np.int32
    np.testing.assert_array_equal(r.labels, Assigner(r.centroids).assign(x))
    assert list(r.history) == sorted(r.history, reverse=True)   # Lloyd never increases it
    assert r.inertia == pytest.approx(_qerr(r.centroids, x), rel=1e-5)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_kmeans_is_deterministic_whatever_the_threads(n_threads):
    x = sift_like(3000, seed=2)
    ref = kmeans(x, 40, iters=8, seed=5)
    np.testing.assert_array_equal(kmeans(x, 40, iters=8, seed=5, n_threads=n_threads), ref)
    assert not np.array_equal(kmeans(x, 40, iters=8, seed=6), ref)


def test_kmeans_duplicates_and_empty_clusters():
    # 40% of the rows are one repeated value and 30% another: starting centroids are
    # distinct rows, and no centroid ends up duplicated or empty.
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros((400, 8)), np.full((300, 8), 7.0),
                        rng.normal(50, 10, (300, 8))]).astype(np.float32)
    from features.codebook import kmeans_fit
    r = kmeans_fit(x, 30, iters=10, seed=0)
    assert len(np.unique(r.centroids, axis=0)) == 30
    assert len(np.unique(r.labels)) == 30
    with pytest.raises(ValueError, match="cannot learn 30 words from 700 descriptors: only 2 of "
                                         "them are distinct"):
        kmeans(x[:700], 30)


def test_kmeans_float64_is_rounded_to_float32():
    x, _ = blobs(k=6)
    np.testing.assert_array_equal(kmeans(x.astype(np.float64), 6, seed=0), kmeans(x, 6, seed=0))


@pytest.mark.parametrize("kwargs, match", [(dict(iters=0), "iters must be"),
                                           (dict(redo=0), "redo must be"),
                                           (dict(n_threads=0), "n_threads must be"),
                                           (dict(seed=-1), "seed must be")])
def test_kmeans_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kmeans(blobs()[0], 3, **kwargs)
    x = blobs()[0]
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans(x, 3)


def test_quantizer_matches_brute_force():
    rng = np.random.default_rng(0)
    centroids = rng.uniform(0, 255, (50, 128)).astype(np.float32)
    x = rng.uniform(0, 255, (300, 128)).astype(np.uint8)
    brute = np.argmin(((x[:, None].astype(np.float64) - centroids[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(Assigner(centroids).assign(x), brute)


def test_quantizer_empty_and_wrong_width():
    q = Assigner(np.zeros((4, 128), np.float32))
    assert q.assign(np.zeros((0, 128), np.uint8)).shape == (0,)
    with pytest.raises(ValueError, match=r"\(n, 128\)"):
        q.assign(np.zeros((3, 64), np.float32))


def test_sample_priority_is_stable_and_uniform():
    keys = [f"n{i:08d}/img_{i}.JPEG" for i in range(4000)]
    p = np.array([sample_priority(k, 0) for k in keys])
    assert p.min() >= 0 and p.max() < 1
    assert abs(p.mean() - 0.5) < 0.02
    assert sample_priority(keys[0], 0) == sample_priority(keys[0], 0)
    assert sample_priority(keys[0], 0) != sample_priority(keys[0], 1)


def test_bottom_k_ignores_stream_order():
    items = [Item(key=f"k{i}", label=-1) for i in range(500)]
    a = {it.key for it in bottom_k(items, 30, seed=5)}
    b = {it.key for it in bottom_k(list(reversed(items)), 30, seed=5)}
    assert a == b and len(a) == 30
    chosen = bottom_k(items, 30, seed=5)
    assert [it.key for it in chosen] == sorted((it.key for it in chosen), key=lambda k: int(k[1:]))
    assert len(bottom_k(items[:10], 30, seed=5)) == 10


def test_subsample_rows():
    r = subsample_rows(1000, 50, "a.jpg", 0)
    assert len(r) == 50 and len(set(r.tolist())) == 50 and (np.diff(r) > 0).all()
    np.testing.assert_array_equal(r, subsample_rows(1000, 50, "a.jpg", 0))
    assert not np.array_equal(r, subsample_rows(1000, 50, "b.jpg", 0))
    np.testing.assert_array_equal(subsample_rows(7, 50, "a.jpg", 0), np.arange(7))


def test_sample_is_sized_by_the_codebook():
    from features.presets import get_preset
    c = get_preset("sbow")
    assert c.sample_size == c.words * c.points_per_word == 128000
    assert c.images_to_sample == 640                     # 128,000 / 200 per image
    assert c.replace(words=10, points_per_word=30, sample_per_image=7).images_to_sample == 43
    assert c.replace(sample_images=5).images_to_sample == 5
    with pytest.raises(ValueError, match="points_per_word must be >= 1, got 0"):
        c.replace(points_per_word=0)


def test_sample_descriptors_size_and_independence_of_workers(tmp_path, small_set, small_config):
    from features.pipeline import sample_descriptors
    from features.sources import open_source
    config = small_config.replace(words=16, points_per_word=8, sample_per_image=50,
                                  sample_images=None)
    assert config.images_to_sample == 3
    one = np.load(sample_descriptors(config, open_source(str(small_set)), tmp_path / "a",
                                     progress=False))
    two = np.load(sample_descriptors(config, open_source(str(small_set)), tmp_path / "b",
                                     jobs=2, progress=False))
    assert one.shape == (128, 128)                       # 3 images x 50, trimmed to 16 x 8
    np.testing.assert_array_equal(one, two)
