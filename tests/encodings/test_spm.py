"""Spatial pyramids against the plain per-image NumPy reference."""
import numpy as np
import pytest

from features.encodings.kernel_map import HomogeneousKernelMap
from features.encodings.spm import (level_weights, parse_grids, pyramid_dimension,
                                    spatial_pyramid, spatial_pyramid_reference)


def _images(seed, n=7, k=13, units="pixels"):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 60, n)
    counts[2 % n] = 0 if n > 2 else counts[2 % n] + 1  # image 2: no descriptors
    offsets = np.concatenate([[0], np.cumsum(counts)])
    widths = rng.integers(20, 300, n)
    heights = rng.integers(20, 300, n)
    m = offsets[-1]
    image = np.repeat(np.arange(n), counts)
    frames = np.zeros((m, 4), np.float32)
    frames[:, 0] = rng.random(m) * widths[image]
    frames[:, 1] = rng.random(m) * heights[image]
    frames[:5, 0] = widths[image[:5]]          # on the right edge: the last column
    frames[5:8, 1] = 0                         # on the top edge
    if units == "normalized":
        frames[:, 0] /= widths[image]
        frames[:, 1] /= heights[image]
    words = rng.integers(0, k, m).astype(np.int16)
    return words, frames, offsets, widths, heights, k


@pytest.mark.parametrize("grids", ["1x1", "1x1,2x2,4x4", "1x1,2x2,3x1", "3x1,1x3"])
@pytest.mark.parametrize("normalization", ["l1", "l2", "none"])
@pytest.mark.parametrize("units", ["pixels", "normalized"])
def test_matches_reference(grids, normalization, units):
    words, frames, offsets, widths, heights, k = _images(len(grids), units=units)
    csr = spatial_pyramid(words, frames, offsets, widths, heights, k, grids,
                          normalization=normalization, units=units)
    dense = csr.toarray()
    assert dense.shape == (len(widths), pyramid_dimension(k, parse_grids(grids)))
    assert csr.indices.dtype == np.int32 and csr.data.dtype == np.float32
    for i in range(len(widths)):
        a, b = offsets[i], offsets[i + 1]
        ref = spatial_pyramid_reference(words[a:b], frames[a:b], widths[i], heights[i], k,
                                        grids, normalization=normalization, units=units)
        np.testing.assert_allclose(dense[i], ref, rtol=1e-6, atol=1e-7)
        cols = csr.indices[csr.indptr[i]:csr.indptr[i + 1]]
        assert np.all(np.diff(cols) > 0)            # sorted, no duplicates
    assert not dense[2].any()                       # no descriptors: an all-zero row
    if normalization == "l1":
        np.testing.assert_allclose(dense[[0, 1, 3]].sum(1), 1, rtol=1e-5)


def test_lazebnik_weights_and_pyramid_match():
    np.testing.assert_allclose(level_weights(3), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(level_weights(2), [0.5, 0.5])
    np.testing.assert_allclose(level_weights(1), [1.0])
    assert level_weights(5).sum() == pytest.approx(1)
    # Histogram intersection of the weighted vectors is the pyramid match kernel of
    # Lazebnik et al. on normalized histograms: I_L / 2**L + sum_l (I_l - I_l+1) / 2**(L-l)
    words, frames, offsets, widths, heights, k = _images(5, n=2)
    widths[:] = 100
    heights[:] = 100
    x = spatial_pyramid(words, frames, offsets, widths, heights, k, "1x1,2x2,4x4",
                        normalization="none").toarray()
    inter = []
    for grid in ("1x1", "2x2", "4x4"):
        h = spatial_pyramid(words, frames, offsets, widths, heights, k, grid,
                            normalization="l1").toarray()
        inter.append(np.minimum(h[0], h[1]).sum())
    pmk = inter[2] + sum((inter[lv] - inter[lv + 1]) / 2 ** (2 - lv) for lv in range(2))
    assert np.minimum(x[0], x[1]).sum() == pytest.approx(pmk, rel=1e-5)


def test_kernel_map_on_the_pyramid():
    words, frames, offsets, widths, heights, k = _images(3)
    hkm = HomogeneousKernelMap("chi2", 1)
    csr = spatial_pyramid(words, frames, offsets, widths, heights, k, "1x1,2x2",
                          kernel_map=hkm)
    assert csr.shape[1] == pyramid_dimension(k, parse_grids("1x1,2x2"), hkm) == k * 5 * 3
    dense = csr.toarray()
    for i in (0, 1, 2):
        a, b = offsets[i], offsets[i + 1]
        ref = spatial_pyramid_reference(words[a:b], frames[a:b], widths[i], heights[i], k,
                                        "1x1,2x2", kernel_map=hkm)
        np.testing.assert_allclose(dense[i], ref, rtol=2e-5, atol=1e-6)
    # chi2 map of an L1-normalized vector: squared norm close to K(x, x) = sum(x) = 1
    assert np.abs((dense[[0, 1, 3]] ** 2).sum(1) - 1).max() < 0.02


@pytest.mark.parametrize("spec", ["", "2y2", "0x3", "1x1,a", "100x100"])
def test_bad_grids(spec):
    with pytest.raises(ValueError, match="grid"):
        parse_grids(spec)


def test_bad_input():
    words, frames, offsets, widths, heights, k = _images(0)
    with pytest.raises(ValueError, match="words"):
        spatial_pyramid(words, frames, offsets, widths, heights, 3)
    with pytest.raises(ValueError, match="offsets"):
        spatial_pyramid(words, frames, offsets[:-1], widths[:-1], heights[:-1], k)
    with pytest.raises(ValueError, match="normalization"):
        spatial_pyramid(words, frames, offsets, widths, heights, k, normalization="l3")
    with pytest.raises(ValueError, match="weights"):
        spatial_pyramid(words, frames, offsets, widths, heights, k, "1x1,2x2", weights=[1])


def test_no_images():
    csr = spatial_pyramid(np.zeros(0, np.int32), np.zeros((0, 4)), [0], [], [], 5)
    assert csr.shape[0] == 0 and csr.shape[1] == 5 * 21
