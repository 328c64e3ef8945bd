"""How many descriptors each model is learned from.

A model fitted on too few descriptors still encodes every image, silently badly: a
256-component GMM of 64 dimensions learned from 296 descriptors stops EM after two
iterations with most of its variances at the floor. Each model's training set is therefore
sized from what that model estimates, not from what the codebook's sample happens to hold:

============  ==================  =================================  ==============================
model         floor (warn below)  wanted                             why
============  ==================  =================================  ==============================
kmeans-vlad   39 x centers        256 x centers                      FAISS's k-means: it warns
                                                                     below 39 points per centroid
                                                                     and subsamples above 256
pca           10 x input dims     1000 x input dims                  a d x d covariance: about 10
                                                                     rows per dimension at least;
                                                                     more is cheap
gmm           100 x components    500 x components, at most          a mean and a variance per
                                  1,000,000                          dimension per component, from
                                                                     its share of the rows; EM's
                                                                     time grows with the rows (256
                                                                     components x 64 dims: about
                                                                     10 s per iteration at 256,000)
============  ==================  =================================  ==============================

:func:`rows_needed` gives (floor, wanted) for one model. The pipeline draws ``wanted`` rows
when the data holds them (the codebook's sample first, then the store's descriptors), and
warns with one line when a model gets fewer than its floor; every model records ``rows``
(what it was learned from), ``rows_wanted`` and ``rows_floor`` as attributes.
"""
from __future__ import annotations

from ..exceptions import ParameterError
from .methods import gmm_dims

__all__ = ["rows_needed", "model_spec", "shape_problem", "ROWS"]

# model -> (floor per unit, wanted per unit, unit, cap of wanted)
ROWS = {
    "kmeans-vlad": (39, 256, "centers", None),
    "pca": (10, 1000, "dim", None),
    "gmm": (100, 500, "components", 1_000_000),
}


def rows_needed(model, spec) -> tuple:
    """(floor, wanted): the rows below which ``model`` is poorly estimated, and the rows
    it is learned from when the data holds them. ``spec``: the model's sizes (``centers``
    for ``kmeans-vlad``, ``dim`` the input dimensions for ``pca``, ``components`` for
    ``gmm``)."""
    if model not in ROWS:
        raise ParameterError(f"model must be one of {', '.join(ROWS)}, got {model!r}", "model")
    floor, wanted, unit, cap = ROWS[model]
    n = int(spec[unit])
    floor, wanted = floor * n, wanted * n
    if cap is not None:
        wanted = max(floor, min(wanted, cap))
    return floor, wanted


def model_spec(method, params, desc_dim, seed) -> dict:
    """model -> its sizes (and seed) for an encoding of ``method`` with (checked)
    ``params`` over descriptors of ``desc_dim`` dimensions; {} for a method without models."""
    if method == "vlad":
        return {"kmeans-vlad": {"centers": params["centers"], "dim": desc_dim, "seed": seed}}
    if method == "fisher":
        # a GMM of descriptors and their positions (xy_weight) models two more dimensions
        xy = {} if params.get("xy_weight") is None else {"xy_weight": params["xy_weight"]}
        return {"pca": {"dims": params["pca_dims"], "dim": desc_dim, "whiten": params["whiten"],
                        "seed": seed},
                "gmm": {"components": params["components"], "dim": gmm_dims(params),
                        "seed": seed, **xy}}
    return {}


def shape_problem(model, arrays, spec) -> str | None:
    """Why a model's ``arrays`` do not fit ``spec`` (:func:`model_spec`), or None."""
    if model == "kmeans-vlad":
        label, want = "centers", (spec["centers"], spec["dim"])
    elif model == "pca":
        label, want = "components", (spec["dims"], spec["dim"])
    else:
        label, want = "means", (spec["components"], spec["dim"])
        shape = arrays["means"].shape
        if arrays["covariances"].shape != shape or arrays["priors"].shape != (shape[0],):
            return (f"has covariances {arrays['covariances'].shape} and priors "
                    f"{arrays['priors'].shape} for means {shape}")
    shape = arrays[label].shape
    if shape != want:
        return (f"{label} is {shape[0]} x {shape[1]}, the options need {want[0]} x {want[1]}")
    return None
