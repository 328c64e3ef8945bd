"""The homogeneous kernel map: compiled kernel against the NumPy reference, the kernels it
approximates, and VLFeat 0.9.21's vl_homkermap values through ctypes (skipped without it)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from features.encodings.kernel_map import (HomogeneousKernelMap, default_period,
                                           homogeneous_kernel_map)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _vlfeat import homkermap as vl_homkermap, load_libvl  # noqa: E402

_LIB = load_libvl()
needs_vlfeat = pytest.mark.skipif(_LIB is None, reason="VLFeat (libvl.so) not installed")

KERNELS = ("chi2", "intersection", "js")


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("window", ("rectangular", "uniform"))
@pytest.mark.parametrize("order", (0, 1, 3))
def test_kernel_equals_numpy_reference(kernel, window, order):
    rng = np.random.default_rng(order)
    x = (rng.random((30, 17)) ** 3 - 0.2).astype(np.float32)   # includes negatives
    x[0, :5] = 0
    m = HomogeneousKernelMap(kernel, order, window=window)
    got = m.transform(x)
    assert got.shape == (30, 17 * (2 * order + 1)) and got.dtype == np.float32
    np.testing.assert_allclose(got, m.reference(x), rtol=2e-6, atol=1e-7)
    assert not got[0, :5 * (2 * order + 1)].any()
    # odd: psi(-x) = -psi(x)
    np.testing.assert_allclose(m.transform(-x), -got, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", (np.float32, np.float64, np.int32))
def test_dtypes_and_shapes(dtype):
    x = np.arange(12, dtype=dtype).reshape(3, 4)
    out = homogeneous_kernel_map(x, "intersection", 2)
    assert out.shape == (3, 20) and out.dtype == np.float32
    assert homogeneous_kernel_map(np.ones(4, dtype), order=1).shape == (12,)
    assert homogeneous_kernel_map(np.ones((2, 3, 4), dtype), order=1).shape == (2, 3, 12)


@pytest.mark.parametrize("kernel,exact,tol", [
    ("chi2", lambda x, y: 2 * x * y / (x + y), 0.02),
    # the intersection kernel is not smooth at x = y: its approximation is coarser
    ("intersection", np.minimum, 0.1),
])
def test_inner_products_approximate_the_kernel(kernel, exact, tol):
    rng = np.random.default_rng(1)
    x, y = rng.random((200, 1)) + 0.05, rng.random((200, 1)) + 0.05
    m = HomogeneousKernelMap(kernel, order=3)
    approx = (m.transform(x) * m.transform(y)).sum(1)
    k = exact(x[:, 0], y[:, 0])
    # order 3: within 0.05% (chi2) and 8% (intersection) of the largest value, measured
    assert np.abs(approx - k).max() < tol * k.max()
    assert np.abs(approx - k).mean() < tol / 2 * k.mean()


def test_sparse_transform_matches_dense():
    m = HomogeneousKernelMap("chi2", 1)
    idx = np.array([0, 3, 7], np.int32)
    val = np.array([0.5, 0.25, 0.125], np.float32)
    new_idx, new_val = m.transform_sparse(idx, val)
    dense = np.zeros(8, np.float32)
    dense[idx] = val
    full = m.transform(dense)
    expect = np.zeros_like(full)
    expect[new_idx] = new_val
    np.testing.assert_array_equal(expect, full)


@pytest.mark.parametrize("bad", [dict(kernel="rbf"), dict(order=-1), dict(order=1.5),
                                 dict(gamma=0), dict(period=-2.0), dict(window="hann")])
def test_bad_parameters_name_the_value(bad):
    with pytest.raises(ValueError, match=str(list(bad.values())[0]).replace(".", r"\.")):
        HomogeneousKernelMap(**bad)


def test_bad_input_values():
    with pytest.raises(ValueError, match="NaN"):
        homogeneous_kernel_map(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="numeric"):
        homogeneous_kernel_map(np.array([["a"]]))


@needs_vlfeat
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("window", ("rectangular", "uniform"))
@pytest.mark.parametrize("order", (1, 2, 3))
def test_agrees_with_vl_homkermap(kernel, window, order):
    m = HomogeneousKernelMap(kernel, order, window=window)
    # At VLFeat's table nodes (mantissa 1 + k / (8 + 8 order), exponent in [-19, 7]) its values
    # are the closed form itself: same period, spectrum, frequencies and layout.
    subdivisions = 8 + 8 * order
    mant = 1 + np.arange(subdivisions) / subdivisions
    nodes = np.concatenate([np.ldexp(mant, e) for e in (-15, -6, -2, -1, 0, 1, 3)])
    nodes = np.concatenate([nodes, -nodes[::7]])[None, :]
    theirs = vl_homkermap(_LIB, nodes, kernel=kernel, order=order, window=window)
    np.testing.assert_allclose(m.transform(nodes), theirs, rtol=1e-5, atol=1e-7)
    # Between the nodes VLFeat interpolates linearly; per value the expansions agree to its
    # interpolation error.
    rng = np.random.default_rng(order)
    x = rng.random((40, 25)) ** 3 + 1e-5
    ours = m.transform(x).reshape(-1, m.dimension)
    theirs = vl_homkermap(_LIB, x, kernel=kernel, order=order,
                          window=window).reshape(-1, m.dimension)
    err = np.linalg.norm(ours - theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert err.max() < 2e-3 and np.median(err) < 2e-4, (err.max(), np.median(err))


def test_default_period_of_vlfeat():
    # vl_homkermap's defaults: e.g. chi2, order 1, rectangular window
    assert default_period("chi2", 1) == pytest.approx(8.80 * np.sqrt(5.44) - 12.6)
    assert default_period("intersection", 3, "uniform") == pytest.approx(
        2.38 * np.log(3.8) + 5.6)
