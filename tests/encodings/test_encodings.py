"""features.fisher_vector and features.vlad against plain NumPy references
(tests/encoding_reference.py), their edge cases, the batch form and input validation."""
import importlib

import numpy as np
import pytest

import features
from features.encodings import fisher_vector, fisher_vector_batch, vlad, vlad_batch
from features.encodings._common import blocks

from encoding_reference import fisher_reference, nearest_centers, vlad_reference

# the package exports the functions under the modules' names (features.encodings.vlad)
fisher_mod = importlib.import_module("features.encodings.fisher")
vlad_mod = importlib.import_module("features.encodings.vlad")


def _gmm(rng, k, d, spread=2.0):
    means = rng.normal(scale=spread, size=(k, d)).astype(np.float32)
    covariances = rng.uniform(0.2, 2.0, size=(k, d)).astype(np.float32)
    priors = rng.dirichlet(np.ones(k)).astype(np.float32)
    return means, covariances, priors


def _data(rng, means, n):
    """Points around the means (so posteriors are neither all hard nor all flat)."""
    k, d = means.shape
    if n == 0:
        return np.zeros((0, d), np.float32)
    which = rng.integers(0, k, n)
    return (means[which] + rng.normal(size=(n, d))).astype(np.float32)


def _close(ours, ref, atol=2e-6):
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=atol)


def test_exported_from_package():
    assert features.fisher_vector is fisher_vector
    assert features.vlad is vlad


@pytest.mark.parametrize("k,d", [(1, 1), (7, 13), (64, 64)])
@pytest.mark.parametrize("n", [0, 1, 257, 3000])
def test_fisher_matches_reference(k, d, n):
    rng = np.random.default_rng(k * 1000 + d * 10 + n)
    means, cov, priors = _gmm(rng, k, d)
    x = _data(rng, means, n)
    ours = fisher_vector(x, means, cov, priors)
    assert ours.shape == (2 * k * d,)
    _close(ours, fisher_reference(x, means, cov, priors))
    if n == 0:
        assert not ours.any()
    else:
        assert np.linalg.norm(ours.astype(np.float64)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("improved,normalized,square_root,fast", [
    (False, None, None, False), (True, False, None, False), (True, None, False, False),
    (False, True, None, False), (True, None, None, True), (False, None, None, True)])
def test_fisher_flags(improved, normalized, square_root, fast):
    rng = np.random.default_rng(3)
    means, cov, priors = _gmm(rng, 16, 24)
    x = _data(rng, means, 800)
    ours = fisher_vector(x, means, cov, priors, improved=improved, normalized=normalized,
                         square_root=square_root, fast=fast)
    ref = fisher_reference(x, means, cov, priors,
                           normalized=improved if normalized is None else normalized,
                           square_root=improved if square_root is None else square_root,
                           fast=fast)
    _close(ours, ref, atol=2e-6 * max(1.0, np.abs(ref).max()))


def test_fisher_layout_mean_block_then_variance_block():
    """One descriptor at a mean: the mean block is 0, the variance block is -1/sqrt(2 pi)
    / N for that component (before normalization) and 0 for the others."""
    rng = np.random.default_rng(0)
    means, cov, priors = _gmm(rng, 3, 4, spread=50.0)
    enc = fisher_vector(means[1:2], means, cov, priors, improved=False)
    u, v = enc[:12].reshape(3, 4), enc[12:].reshape(3, 4)
    np.testing.assert_allclose(u, 0, atol=1e-6)
    np.testing.assert_allclose(v[1], -1 / np.sqrt(2 * priors[1]), rtol=1e-5)
    np.testing.assert_allclose(v[[0, 2]], 0, atol=1e-6)


def test_fisher_float64_input_is_rounded_to_float32():
    rng = np.random.default_rng(1)
    means, cov, priors = _gmm(rng, 8, 16)
    x = _data(rng, means, 300).astype(np.float64) + 1e-9
    a = fisher_vector(x, means.astype(np.float64), cov.astype(np.float64),
                      priors.astype(np.float64))
    b = fisher_vector(x.astype(np.float32), means, cov, priors)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_fisher_far_data_and_large_values():
    """Raw SIFT-like values (0..255) far from small-variance means: the screening
    product loses digits to cancellation and its error bound must cover it."""
    rng = np.random.default_rng(2)
    k, d = 32, 128
    means = rng.uniform(0, 255, size=(k, d)).astype(np.float32)
    cov = rng.uniform(0.5, 30, size=(k, d)).astype(np.float32)
    priors = rng.dirichlet(np.ones(k)).astype(np.float32)
    x = np.clip(means[rng.integers(0, k, 400)] + rng.normal(scale=8, size=(400, d)),
                0, 255).astype(np.float32)
    _close(fisher_vector(x, means, cov, priors), fisher_reference(x, means, cov, priors))
    # far from every component: still the posteriors of the least unlikely ones
    far = x + 1e4
    _close(fisher_vector(far, means, cov, priors),
           fisher_reference(far, means, cov, priors))


def test_fisher_tiny_and_zero_priors_leave_zero_blocks():
    rng = np.random.default_rng(4)
    means, cov, priors = _gmm(rng, 6, 5)
    priors[[1, 4]] = [0.0, 5e-7]
    x = _data(rng, means, 500)
    ours = fisher_vector(x, means, cov, priors)
    _close(ours, fisher_reference(x, means, cov, priors))
    blocks_ = ours.reshape(2, 6, 5)
    assert not blocks_[:, [1, 4]].any()
    assert blocks_[:, [0, 2, 3, 5]].any()


def test_fisher_batch_equals_rows_and_blocks(monkeypatch):
    rng = np.random.default_rng(5)
    means, cov, priors = _gmm(rng, 12, 10)
    sizes = [0, 5, 1, 40, 0, 23, 2, 0]
    x = _data(rng, means, sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    expect = np.stack([fisher_vector(x[a:b], means, cov, priors)
                       for a, b in zip(offsets[:-1], offsets[1:])])
    out = np.full((len(sizes), 240), np.nan, np.float32)
    got = fisher_vector_batch(x, offsets, means, cov, priors, out=out)
    assert got is out
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)
    # blocks of 7 rows: images grouped, the big ones split over several blocks
    monkeypatch.setattr(fisher_mod, "BLOCK_ROWS", 7)
    np.testing.assert_allclose(fisher_vector_batch(x, offsets, means, cov, priors),
                               expect, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fisher_vector_batch(x, offsets, means, cov, priors,
                                                   n_threads=2), expect,
                               rtol=1e-5, atol=1e-7)


def test_blocks_cover_every_row_once():
    offsets = np.array([0, 0, 3, 3, 20, 21, 30, 30])
    seen, images = [], set()
    for lo, hi, segments in blocks(offsets, 5):
        assert 0 < hi - lo <= 5 or all(a == b for _, a, b, _ in segments)
        for image, a, b, last in segments:
            assert lo <= a <= b <= hi
            seen.extend(range(a, b))
            if last:
                assert b == offsets[image + 1]
                images.add(image)
    assert seen == list(range(30))
    assert images == set(range(7))


@pytest.mark.parametrize("k,d", [(1, 1), (9, 13), (64, 128)])
@pytest.mark.parametrize("n", [0, 1, 257, 3000])
def test_vlad_matches_reference(k, d, n):
    rng = np.random.default_rng(k * 1000 + d * 10 + n + 7)
    centers = rng.normal(scale=2.0, size=(k, d)).astype(np.float32)
    x = _data(rng, centers, n)
    ours = vlad(x, centers)
    assert ours.shape == (k * d,)
    _close(ours, vlad_reference(x, centers))
    if n == 0:
        assert not ours.any()


@pytest.mark.parametrize("flags", range(16))
def test_vlad_flags(flags):
    rng = np.random.default_rng(flags)
    centers = rng.normal(size=(10, 16)).astype(np.float32)
    centers[3] += 100    # a center without descriptors
    x = _data(rng, centers[[0, 1, 2, 4, 5, 6, 7, 8, 9]], 600)
    kw = dict(normalize_components=bool(flags & 1), square_root=bool(flags & 2),
              normalized=not flags & 4, normalize_mass=bool(flags & 8))
    ref = vlad_reference(x, centers, **kw)
    ours = vlad(x, centers, **kw)
    _close(ours, ref, atol=2e-6 * max(1.0, np.abs(ref).max()))
    assert not ours.reshape(10, 16)[3].any()


def test_vlad_assignment_forms():
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(12, 20)).astype(np.float32)
    x = _data(rng, centers, 700)
    hard = nearest_centers(x, centers)
    a = vlad(x, centers)
    np.testing.assert_array_equal(a, vlad(x, centers, hard.astype(np.int16)))
    onehot = np.zeros((700, 12))
    onehot[np.arange(700), hard] = 1
    np.testing.assert_allclose(vlad(x, centers, onehot), a, rtol=1e-5, atol=1e-7)
    soft = rng.uniform(-0.2, 1, size=(700, 12))     # non-positive weights are ignored
    _close(vlad(x, centers, soft), vlad_reference(x, centers, soft))


def test_vlad_uint8_and_float64_input():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, size=(500, 128), dtype=np.uint8)
    centers = rng.uniform(0, 255, size=(16, 128)).astype(np.float32)
    a = vlad(x, centers)
    np.testing.assert_array_equal(a, vlad(x.astype(np.float64), centers))
    _close(a, vlad_reference(x, centers))


def test_vlad_batch_equals_rows(monkeypatch):
    rng = np.random.default_rng(10)
    centers = rng.normal(size=(8, 6)).astype(np.float32)
    sizes = [3, 0, 17, 1, 9]
    x = _data(rng, centers, sum(sizes))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    soft = rng.uniform(size=(len(x), 8))
    for assignments in (None, soft):
        expect = np.stack([vlad(x[a:b], centers,
                                None if assignments is None else assignments[a:b])
                           for a, b in zip(offsets[:-1], offsets[1:])])
        np.testing.assert_allclose(vlad_batch(x, offsets, centers, assignments), expect,
                                   rtol=1e-5, atol=1e-7)
        monkeypatch.setattr(vlad_mod, "BLOCK_ROWS", 4)
        np.testing.assert_allclose(vlad_batch(x, offsets, centers, assignments,
                                              n_threads=2), expect, rtol=1e-5, atol=1e-7)
        monkeypatch.undo()


def _model():
    rng = np.random.default_rng(0)
    means, cov, priors = _gmm(rng, 4, 3)
    return rng.normal(size=(10, 3)).astype(np.float32), means, cov, priors


@pytest.mark.parametrize("change,match", [
    (dict(x=np.zeros((5, 4), np.float32)), r"shape \(n, 3\), got \(5, 4\)"),
    (dict(x=np.zeros(3, np.float32)), r"got \(3,\)"),
    (dict(x=np.array([[0, np.nan, 0]], np.float32)), "NaN"),
    (dict(x=np.array([["a", "b", "c"]])), "numeric"),
    (dict(means=np.zeros((0, 3))), r"non-empty \(k, d\).*\(0, 3\)"),
    (dict(covariances=np.ones((4, 2))), r"covariances must have shape \(4, 3\)"),
    (dict(covariances=-np.ones((4, 3))), "positive, got minimum -1"),
    (dict(covariances=np.full((4, 3), np.inf)), "covariances contain NaN or infinite"),
    (dict(priors=np.ones(5)), r"priors must be a real \(4,\) array, got shape \(5,\)"),
    (dict(priors=np.array([0.5, -0.1, 0.3, 0.3])), "non-negative, got minimum -0.1"),
    (dict(priors=np.full(4, 1e-9)), "at least one prior"),
    (dict(x=np.full((2, 3), 1e30, np.float32)), "values up to 1e\\+30, too large"),
    (dict(means=np.array([[0, 0, 0], [1e25, 0, 0], [0, 0, 0], [0, 0, 0]])),
     "means are too far apart"),
    (dict(improved="yes"), "improved must be True or False, got 'yes'"),
    (dict(fast=1), "fast must be True or False, got 1"),
    (dict(n_threads=0), "n_threads must be a positive integer, got 0"),
])
def test_fisher_validation(change, match):
    x, means, cov, priors = _model()
    kw = dict(x=x, means=means, covariances=cov, priors=priors)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        fisher_vector(**kw)


@pytest.mark.parametrize("offsets,match", [
    ([0, 4], "end at the number of descriptors \\(10\\), got 0 and 4"),
    ([1, 10], "start at 0"),
    ([0, 6, 4, 10], "non-decreasing, got 6 then 4 at index 1"),
    ([[0, 10]], "1-D integer array"),
    ([0.0, 10.0], "1-D integer array"),
])
def test_batch_offsets_validation(offsets, match):
    x, means, cov, priors = _model()
    with pytest.raises(ValueError, match=match):
        fisher_vector_batch(x, offsets, means, cov, priors)
    with pytest.raises(ValueError, match=match):
        vlad_batch(x, offsets, means)


def test_batch_out_validation():
    x, means, cov, priors = _model()
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 array "
                                         r"of shape \(1, 24\)"):
        fisher_vector_batch(x, [0, 10], means, cov, priors, out=np.empty((1, 24)))


@pytest.mark.parametrize("change,match", [
    (dict(assignments=np.array([0, 1, 4, 0, 0, 0, 0, 0, 0, 0])), r"\[0, 4\), got 4"),
    (dict(assignments=np.zeros(9, np.int64)), "10 entries .* got 9"),
    (dict(assignments=np.zeros((10, 3))), r"shape \(10, 4\), got \(10, 3\)"),
    (dict(assignments=np.full((10, 4), np.nan)), "assignments contain NaN"),
    (dict(assignments=np.zeros(10)), "must be None, integer indices"),
    (dict(centers=np.zeros((4, 2), np.float32)), r"shape \(n, 2\), got \(10, 3\)"),
    (dict(square_root=None), "square_root must be True or False, got None"),
    (dict(normalized="no"), "normalized must be True or False"),
])
def test_vlad_validation(change, match):
    x, means, _, _ = _model()
    kw = dict(x=x, centers=means)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        vlad(**kw)
