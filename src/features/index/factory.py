"""Which FAISS index for a store's encoding, and how it is made, trained and parametrized.

Exact (``Flat``) for fewer than ``EXACT_BELOW`` indexable images of 1000 dimensions (as many
values in all for other dimensions), where an exhaustive scan still answers a query in a
few milliseconds; above it, an inverted file with product-quantized codes whose shortlist
of 100 k is re-scored: tf-idf scores near rank 10 lie within 0.001 of each other, which PQ
codes alone cannot order. For an encoding stored as sparse rows the re-scoring is
``Refine(Sparse)`` (:mod:`.refine`); for dense encodings it is FAISS's ``Refine(SQfp16)``.
"""
from __future__ import annotations

import math
import re

import faiss

from ..exceptions import StoreError
from .refine import MAX_DIM

# Below this many indexable images the index is exact: a flat scan of 1000-d float32 rows
# still answers in a few ms on one thread (benchmarks/results/search.md), and an inverted
# file would have too few points per list to train well.
EXACT_BELOW = 50_000
_EXACT_DIM = 1000         # the dimension EXACT_BELOW was measured at (1000-word tf-idf)
AUTO = "auto"
SPARSE_REFINE = "Refine(Sparse)"  # our refine stage (features.index.refine), after a FAISS factory
_TRAIN_PER_LIST = 48      # training points per inverted list (FAISS asks for >= 39)
_TRAIN_DEFAULT = 50_000   # training points when the factory string has no IVF
# which part of an index file FAISS maps (recorded in the manifest as io_flag)
IO_FLAGS = {"mmap": faiss.IO_FLAG_MMAP, "mmap_ifc": faiss.IO_FLAG_MMAP_IFC, "none": 0}


def auto_factory(n: int, dim: int, exact_below: int = EXACT_BELOW,
                 density: float = 1.0) -> tuple[str, dict]:
    """The factory string and search parameters for ``n`` vectors of ``dim`` dimensions,
    ``density`` of them nonzero when the encoding is stored as sparse rows (1: dense)."""
    # the threshold is for 1000-d rows: a scan costs as many values, so wider rows (a Fisher
    # vector of 32k dimensions) switch at fewer images
    if n < exact_below and n * dim < exact_below * _EXACT_DIM:
        return "Flat", {}
    nlist = max(64, 2 ** round(math.log2(math.sqrt(n))))
    m = _pq_subquantizers(dim)
    if m is None:
        return f"IVF{nlist},SQ8", {"nprobe": max(1, nlist // 16)}
    # a stored value takes 4 bytes in the sparse refine stage, 2 in FAISS's SQfp16
    if density <= 0.5 and dim <= MAX_DIM:
        return (f"IVF{nlist},PQ{m},{SPARSE_REFINE}",
                {"nprobe": max(1, nlist // 32), "k_factor": 100})
    return f"IVF{nlist},PQ{m},Refine(SQfp16)", {"nprobe": max(1, nlist // 16), "k_factor": 100}


def default_params(factory: str) -> dict:
    """Search parameters for a factory string given by the user: FAISS's own defaults
    (one inverted list probed, a shortlist of k re-scored) trade most of the recall away,
    so an IVF probes 1/16 of its lists, at least 8 (all of them when it has fewer), and a
    refine stage re-scores 100 k, as the automatic choice does."""
    params = {}
    ivf = re.search(r"IVF(\d+)", factory)
    if ivf:
        nlist = int(ivf.group(1))
        params["nprobe"] = min(nlist, max(8, nlist // 16))
    if "Refine(" in factory:
        params["k_factor"] = 100
    return params


def split_factory(factory: str) -> tuple[str, bool]:
    """(FAISS factory string, whether a sparse refine stage follows it)."""
    if factory == SPARSE_REFINE or factory.endswith("," + SPARSE_REFINE):
        base = factory[:-len(SPARSE_REFINE)].rstrip(",")
        if not base:
            raise StoreError(f"{SPARSE_REFINE} refines an index: give one before it, "
                             f"for example IVF1024,PQ40,{SPARSE_REFINE}")
        return base, True
    return factory, False


def _pq_subquantizers(dim) -> int | None:
    """About 25 dimensions per PQ sub-quantizer (40 for 1000 words), 8 to 64 of them,
    dividing ``dim``."""
    want = min(64, max(8, dim / 25))
    divisors = [m for m in range(8, 65) if dim % m == 0]
    return min(divisors, key=lambda m: (abs(m - want), m)) if divisors else None


def make_index(factory: str, dim: int):
    try:
        inner = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise StoreError(f"FAISS refuses the index {factory!r}: {faiss_message(e)}") from None
    index = faiss.IndexIDMap(inner)
    index.referenced_objects = [inner]  # keep the wrapped index alive with its wrapper
    return index


def faiss_message(e) -> str:
    text = str(e).strip().splitlines()
    msg = next((line for line in text if "Error" in line), text[0] if text else "")
    return msg.split("Error in", 1)[-1].split(":", 1)[-1].strip() or str(e).strip()


def train_size(factory: str, n: int) -> int:
    m = re.search(r"IVF(\d+)", factory)
    want = _TRAIN_PER_LIST * int(m.group(1)) if m else _TRAIN_DEFAULT
    return min(n, max(want, 1))


def set_params(index, params: dict):
    """Search-time parameters (they are saved with the index)."""
    for sub in walk(index):
        if "nprobe" in params and isinstance(sub, faiss.IndexIVF):
            sub.nprobe = int(params["nprobe"])
        if "k_factor" in params and isinstance(sub, faiss.IndexRefine):
            sub.k_factor = float(params["k_factor"])


def walk(index):
    """The index and the indexes it wraps, downcast (nothing for an index that is not
    FAISS's: an inverted file has no FAISS parameters)."""
    if not isinstance(index, faiss.Index):
        return
    index = faiss.downcast_index(index)
    yield index
    for attr in ("index", "base_index", "refine_index"):
        inner = getattr(index, attr, None)
        if isinstance(inner, faiss.Index):
            yield from walk(inner)
    if isinstance(index, faiss.IndexIVF):
        yield from walk(index.quantizer)


def io_flag(index) -> str:
    """Which part to memory-map: flat codes (exact vectors, refine codes) when the index has
    them, else the inverted lists. FAISS maps one or the other, not both."""
    kinds = list(walk(index))
    outer_ivf = [k for k in kinds if isinstance(k, faiss.IndexIVF)]
    refined = any(isinstance(k, faiss.IndexRefine) for k in kinds)
    if outer_ivf and not refined:
        return "mmap"
    return "mmap_ifc"
