"""Descriptor positions (``features.encodings.positions``) and the Fisher vector option that
appends them to the PCA-reduced descriptors before the GMM (``xy_weight``)."""
import math

import numpy as np
import pytest

from features.encodings.fisher import fisher_vector
from features.encodings.methods import check_options, dimension
from features.encodings.positions import (append_positions, centred_positions,
                                          check_xy_weight, unit_positions)
from features.encodings.rows import encode_rows
from features.encodings.training import model_spec, shape_problem
from features.exceptions import ParameterError


def _frames(xy):
    xy = np.asarray(xy, np.float32)
    return np.column_stack([xy, np.full(len(xy), 4.0, np.float32), np.zeros(len(xy), np.float32)])


def test_pixel_positions_are_divided_by_each_images_size():
    # two images: 2 descriptors of a 100 x 50 image, 1 of a 40 x 80 one
    frames = _frames([[0, 0], [50, 25], [30, 60]])
    fx, fy = unit_positions(frames, [0, 2, 3], [100, 40], [50, 80])
    np.testing.assert_allclose(fx, [0, 0.5, 0.75])
    np.testing.assert_allclose(fy, [0, 0.5, 0.75])
    xy = centred_positions(frames, [0, 2, 3], [100, 40], [50, 80])
    assert xy.dtype == np.float32 and xy.shape == (3, 2)
    np.testing.assert_allclose(xy, [[-0.5, -0.5], [0, 0], [0.25, 0.25]])


def test_normalized_frames_are_taken_as_they_are():
    frames = _frames([[0.1, 0.9], [1.0, 0.0]])
    xy = centred_positions(frames, [0, 2], [640], [480], units="normalized")
    np.testing.assert_allclose(xy, [[-0.4, 0.4], [0.5, -0.5]], atol=1e-7)


def test_an_image_of_size_zero_counts_as_one():
    fx, fy = unit_positions(_frames([[0.5, 0.25]]), [0, 1], [0], [0])
    np.testing.assert_allclose([fx[0], fy[0]], [0.5, 0.25])


@pytest.mark.parametrize("weight", [0.5, 1, 40.0])
def test_append_positions_shape_and_values(weight):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(5, 3)).astype(np.float32)
    xy = rng.uniform(-0.5, 0.5, size=(5, 2)).astype(np.float32)
    out = append_positions(y, xy, weight)
    assert out.shape == (5, 5) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :3], y)
    np.testing.assert_allclose(out[:, 3:], weight * xy, rtol=1e-6)


def test_append_positions_refuses_positions_of_another_shape():
    with pytest.raises(ParameterError, match=r"positions must be \(4, 2\)"):
        append_positions(np.zeros((4, 3)), np.zeros((3, 2)), 1.0)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "1", [1.0]])
def test_bad_weights_are_refused_naming_the_value(bad):
    with pytest.raises(ParameterError, match="xy_weight must be a finite number > 0") as e:
        check_xy_weight(bad)
    assert repr(bad) in str(e.value)
    with pytest.raises(ParameterError, match="xy_weight"):
        check_options("fisher", {"xy_weight": bad})


@pytest.mark.parametrize("method", ["vlad", "spm", "bovw"])
def test_other_methods_do_not_take_a_weight(method):
    with pytest.raises(ParameterError, match=f"xy_weight does not apply to method {method}"):
        check_options(method, {"xy_weight": 1.0})


def test_options_record_the_weight_only_when_set():
    # a Fisher vector without it has the options it had before the option existed
    assert "xy_weight" not in check_options("fisher", {"components": 4, "pca_dims": 8})
    params = check_options("fisher", {"components": 4, "pca_dims": 8, "xy_weight": 2})
    assert params["xy_weight"] == 2.0 and isinstance(params["xy_weight"], float)


@pytest.mark.parametrize("grids,cells", [(None, 1), ("1x1,2x2", 5)])
def test_dimension_and_model_sizes_count_the_two_positions(grids, cells):
    params = check_options("fisher", {"components": 4, "pca_dims": 8, "grids": grids,
                                      "xy_weight": 1.0})
    assert dimension("fisher", params, 0, 128) == 2 * 4 * 10 * cells
    spec = model_spec("fisher", params, 128, 0)
    assert spec["pca"]["dims"] == 8 and spec["gmm"]["dim"] == 10
    assert spec["gmm"]["xy_weight"] == 1.0
    # a GMM learned without positions does not fit
    plain = {"means": np.zeros((4, 8)), "covariances": np.ones((4, 8)), "priors": np.ones(4)}
    assert "the options need 4 x 10" in shape_problem("gmm", plain, spec["gmm"])


def _models(d, k, dims, rng):
    comp = np.linalg.qr(rng.normal(size=(d, dims)))[0].T.astype(np.float32)
    pca = {"arrays": {"mean": np.zeros(d, np.float32), "components": comp,
                      "explained_variance": np.ones(dims, np.float32)}, "attrs": {}}
    gmm = {"arrays": {"means": rng.normal(size=(k, dims + 2)).astype(np.float32),
                      "covariances": rng.uniform(0.5, 2, size=(k, dims + 2)).astype(np.float32),
                      "priors": np.full(k, 1 / k, np.float32)}, "attrs": {}}
    return {"pca": pca, "gmm": gmm}


@pytest.mark.parametrize("units", ["pixels", "normalized"])
def test_encoded_rows_are_fisher_vectors_of_the_augmented_descriptors(units):
    rng = np.random.default_rng(1)
    d, k, dims, weight = 12, 3, 4, 2.5
    models = _models(d, k, dims, rng)
    offsets = np.array([0, 6, 6, 15])          # the middle image has no descriptors
    x = rng.normal(size=(15, d)).astype(np.float32)
    widths, heights = np.array([60, 10, 30]), np.array([20, 10, 90])
    xy = rng.uniform(0, 1, size=(15, 2))
    if units == "pixels":
        image = np.repeat([0, 1, 2], np.diff(offsets))
        xy = xy * np.column_stack([widths[image], heights[image]])
    frames = _frames(xy)
    params = check_options("fisher", {"components": k, "pca_dims": dims, "xy_weight": weight})
    rows = encode_rows("fisher", params, offsets=offsets, widths=widths, heights=heights,
                       descriptors=x, frames=frames, models=models, units=units)
    assert rows.shape == (3, 2 * k * (dims + 2))
    y = x @ models["pca"]["arrays"]["components"].T
    pos = centred_positions(frames, offsets, widths, heights, units)
    g = models["gmm"]["arrays"]
    for i in (0, 2):
        a, b = offsets[i], offsets[i + 1]
        want = fisher_vector(np.hstack([y[a:b], weight * pos[a:b]]), g["means"],
                             g["covariances"], g["priors"])
        np.testing.assert_allclose(rows[i], want, atol=1e-5)
    assert not rows[1].any()
    # the positions matter: the same descriptors elsewhere give another row
    moved = encode_rows("fisher", params, offsets=offsets, widths=widths, heights=heights,
                        descriptors=x, frames=frames[::-1].copy(), models=models, units=units)
    assert not np.allclose(moved[0], rows[0], atol=1e-3)
