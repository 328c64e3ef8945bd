import numpy as np
import pytest

from features.assign import Assigner
from features.codebook import kmeans, sample_priority, subsample_rows
from features.jobs import bottom_k
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


@pytest.mark.parametrize("n, k, match", [(0, 4, "non-empty"), (3, 4, "cannot learn 4 words"),
                                         (10, 1, "k must be")])
def test_kmeans_rejects_bad_input(n, k, match):
    with pytest.raises(ValueError, match=match):
        kmeans(np.zeros((n, 8), np.float32), k)


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
