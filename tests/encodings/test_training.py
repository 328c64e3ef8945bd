"""How many descriptors each model is learned from (features.encodings.training)."""
import numpy as np
import pytest

from features.encodings.training import model_spec, rows_needed, shape_problem
from features.exceptions import ParameterError


def test_rows_needed_follow_the_table():
    assert rows_needed("kmeans-vlad", {"centers": 64}) == (39 * 64, 256 * 64)
    assert rows_needed("pca", {"dim": 128}) == (1280, 128_000)
    assert rows_needed("gmm", {"components": 256}) == (25_600, 128_000)
    # the cap bounds what is wanted, never below the floor
    assert rows_needed("gmm", {"components": 4096})[1] == 1_000_000
    assert rows_needed("gmm", {"components": 20_000}) == (2_000_000, 2_000_000)
    with pytest.raises(ParameterError):
        rows_needed("svm", {"components": 4})


def test_model_spec_and_shape_problem():
    spec = model_spec("fisher", {"pca_dims": 8, "whiten": False, "components": 4}, 128, 0)
    assert set(spec) == {"pca", "gmm"} and spec["gmm"] == {"components": 4, "dim": 8, "seed": 0}
    assert model_spec("bovw", {}, 128, 0) == {}
    gmm = {"means": np.zeros((4, 8)), "covariances": np.zeros((4, 8)), "priors": np.zeros(4)}
    assert shape_problem("gmm", gmm, spec["gmm"]) is None
    assert shape_problem("gmm", dict(gmm, priors=np.zeros(3)), spec["gmm"]).startswith(
        "has covariances")
    assert shape_problem("pca", {"components": np.zeros((16, 128))}, spec["pca"]) == \
        "components is 16 x 128, the options need 8 x 128"
