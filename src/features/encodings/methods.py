"""The table of encoding methods: what each reads, how it is stored, which models it learns,
its options and their defaults. Every layer above asks this table instead of testing
method names.

========  ==============  ======  =====================  ==================================
method    reads           layout  models                 dimension
========  ==============  ======  =====================  ==================================
bovw      words           csr     (none)                 words (x 2 order + 1 with a kernel
                                                         map)
spm       words, frames   csr     (none)                 words x cells of the grids (idem)
vlad      descriptors     dense   kmeans-vlad            centers x descriptor dimension
fisher    descriptors     dense   pca, gmm               2 x components x (pca_dims, + 2
                                                         with ``xy_weight``) x cells
========  ==============  ======  =====================  ==================================

``xy_weight`` (fisher; :mod:`.positions`) is left out of the options when it is not set, so
the options of a Fisher vector made without it are the same as before it existed (a rerun
with ``exist_ok``, or a ``--like`` store, still finds them equal).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from ..exceptions import ParameterError
from .kernel_map import HomogeneousKernelMap
from .positions import check_xy_weight
from .spm import parse_grids, pyramid_dimension


@dataclass(frozen=True)
class Method:
    name: str
    layout: str                  # "csr" (sparse rows) or "dense" (a row matrix)
    reads: str                   # "words" (and frames) or "descriptors"
    models: tuple = ()           # names of the models it learns: models/ENCODING/MODEL
    defaults: dict = field(default_factory=dict)

    @property
    def sparse(self) -> bool:
        return self.layout == "csr"


METHODS = {m.name: m for m in (
    Method("bovw", "csr", "words",
           defaults={"normalization": "l1", "kernel_map": None, "kernel_order": 1}),
    Method("spm", "csr", "words",
           defaults={"grids": "1x1,2x2,4x4", "weights": "lazebnik", "normalization": "l1",
                     "kernel_map": None, "kernel_order": 1}),
    Method("vlad", "dense", "descriptors", ("kmeans-vlad",),
           defaults={"centers": 64, "dtype": "float32"}),
    Method("fisher", "dense", "descriptors", ("pca", "gmm"),
           defaults={"components": 256, "pca_dims": 64, "whiten": False, "grids": None,
                     "xy_weight": None, "dtype": "float16"}),
)}


def method(name) -> Method:
    """The row of ``name``; an unknown name is a :class:`ParameterError`."""
    if name not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {name!r}",
                             "method")
    return METHODS[name]


def check_options(name, options, defaults=None) -> dict:
    """The full, validated options of method ``name``: its defaults, then ``defaults``
    (those of another store's encoding), then ``options`` (None values are left out)."""
    m = method(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(m.defaults))
    if unknown:
        raise ParameterError(f"{unknown[0]} does not apply to method {name} (its options: "
                             f"{', '.join(m.defaults)})", unknown[0])
    params = {**m.defaults, **(defaults or {}), **options}
    if params.get("grids") is not None:
        params["grids"] = ",".join(f"{r}x{c}" for r, c in parse_grids(params["grids"]))
    if params.get("kernel_map") is not None:
        HomogeneousKernelMap(params["kernel_map"], params["kernel_order"])   # validates
    elif "kernel_order" in params:
        params["kernel_order"] = 1
    if "normalization" in params and params["normalization"] not in ("l1", "l2", "none"):
        raise ParameterError(f"normalization must be l1, l2 or none, got "
                             f"{params['normalization']!r}", "normalization")
    if "dtype" in params and params["dtype"] not in ("float16", "float32"):
        raise ParameterError(f"dtype must be float16 or float32, got {params['dtype']!r}",
                             "dtype")
    for key in ("centers", "components", "pca_dims"):
        value = params.get(key)
        if key in params and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                              or value < 1):
            raise ParameterError(f"{key} must be an integer >= 1, got {value!r}", key)
    if "xy_weight" in params:
        params["xy_weight"] = check_xy_weight(params["xy_weight"])
        if params["xy_weight"] is None:
            del params["xy_weight"]
    if name == "vlad" and params["centers"] < 2:
        raise ParameterError(f"centers must be >= 2, got {params['centers']}", "centers")
    return params


def dimension(name, params, n_words, desc_dim) -> int:
    """The width of an encoding's rows for these (checked) options."""
    m = method(name)
    if m.reads == "words":
        grids = parse_grids(params.get("grids", "1x1"))
        hkm = (HomogeneousKernelMap(params["kernel_map"], params["kernel_order"])
               if params["kernel_map"] else None)
        return pyramid_dimension(n_words, grids, hkm)
    if name == "vlad":
        return params["centers"] * desc_dim
    cells = sum(r * c for r, c in parse_grids(params["grids"])) if params["grids"] else 1
    return 2 * params["components"] * gmm_dims(params) * cells


def gmm_dims(params) -> int:
    """The dimensions a Fisher vector's GMM models: the PCA's, and the two of the
    descriptors' positions with ``xy_weight``."""
    return params["pca_dims"] + (2 if params.get("xy_weight") is not None else 0)
