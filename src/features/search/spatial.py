"""Spatial (geometric) verification of visual-word matches, for re-ranking search results.

Images are compared through their geometry records (:mod:`features.extract.geometry`): one
row per feature, sorted by visual word, so matching two images is a merge.

Verification
------------
The algorithm is in ``ext/_verify.pyx``: tentative matches are the pairs of features
sharing a word (bursty words left out; with a vocabulary tree of more than
``match_words`` words, sharing a node of a coarser level: :func:`Searcher.match_groups`); each match proposes a whole similarity transform
(scale and rotation from the two SIFT frames, translation from the positions); a
(rotation, scale) histogram of the matches picks where hypotheses come from; a hypothesis
scores the matches it maps within ``tolerance`` (a fraction of the candidate's larger
side) with consistent rotation and scale; the best ones are refined by least squares on
their inliers (local optimization). The result is the one-to-one inlier count and the
transform (a, b, tx, ty), mapping a query point ``q`` to ``[[a, -b], [b, a]] @ q + t``.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

import numpy as np

from .._ext import load
from ..exceptions import ParameterError
from ..extract.geometry import frame_geometry


def _kernel():
    return load("_verify", "geometric verification")


@dataclass(frozen=True)
class VerifyParams:
    """Parameters of the verification (the defaults are those of ``--rerank``)."""
    tolerance: float = 0.02           # inlier distance, fraction of the candidate's larger side
    angle_tolerance: float = 0.5      # radians (about 29 degrees)
    scale_tolerance: float = 1.0      # octaves
    max_per_word: int = 4             # words more frequent than this in either image are left out
    # features match by word, and in a vocabulary tree of more words than this by their
    # node at the deepest level with at most this many (Searcher.match_groups)
    match_words: int = 10_000
    max_hypotheses: int = 64
    lo_iters: int = 4

    def __post_init__(self):
        for name in ("tolerance", "angle_tolerance", "scale_tolerance"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Real) and v > 0 and np.isfinite(v)):
                raise ParameterError(f"{name} must be a positive number, got {v!r}")
        for name, low in (("max_per_word", 1), ("max_hypotheses", 1), ("lo_iters", 0),
                          ("match_words", 2)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {v!r}")


def _features(words, geom, name):
    words = np.ascontiguousarray(words, np.int32)
    geom = np.ascontiguousarray(geom, np.float32)
    if words.ndim != 1 or geom.shape != (len(words), 4):
        raise ParameterError(f"{name}: words must be n long and features n x 4, got shapes "
                         f"{words.shape} and {geom.shape}")
    if len(words) > 1 and np.any(words[1:] < words[:-1]):
        raise ParameterError(f"{name}: features must be sorted by word")
    return words, geom


def verify_many(q_words, q_geom, c_words, c_geom, offsets, sides, params=VerifyParams(),
                n_threads=1):
    """Verify concatenated candidates (rows ``offsets[i]:offsets[i + 1]``, larger side
    ``sides[i]`` in pixels) against a query. Returns (inliers int32, transforms float32
    n x 4 as (a, b, tx, ty))."""
    q_words, q_geom = _features(q_words, q_geom, "query")
    c_words = np.ascontiguousarray(c_words, np.int32)
    c_geom = np.ascontiguousarray(c_geom, np.float32)
    offsets = np.ascontiguousarray(offsets, np.int64)
    n = len(offsets) - 1
    if n < 0 or c_geom.shape != (len(c_words), 4) or (n and offsets[-1] > len(c_words)):
        raise ParameterError(f"candidates: offsets (length {len(offsets)}) do not match "
                         f"{len(c_words)} features")
    tol = np.ascontiguousarray(np.asarray(sides, np.float32) * np.float32(params.tolerance))
    if len(tol) != n:
        raise ParameterError(f"sides must have one value per candidate ({n}), got {len(tol)}")
    if n_threads < 1:
        raise ParameterError(f"n_threads must be >= 1, got {n_threads!r}")
    inliers = np.zeros(n, np.int32)
    transforms = np.zeros((n, 4), np.float32)
    _kernel().verify_many(q_words, q_geom, c_words, c_geom, offsets, tol,
                          params.max_per_word, params.max_hypotheses, params.lo_iters,
                          params.angle_tolerance, params.scale_tolerance,
                          inliers, transforms, int(n_threads))
    return inliers, transforms


def verify_pair(q_words, q_geom, c_words, c_geom, side, params=VerifyParams()):
    """Verify one candidate. Returns (query rows, candidate rows, transform (a, b, tx, ty)) of
    the one-to-one inlier matches; rows index the word-sorted features given."""
    q_words, q_geom = _features(q_words, q_geom, "query")
    c_words, c_geom = _features(c_words, c_geom, "candidate")
    m = min(len(q_words), len(c_words))
    rows_q = np.zeros(m, np.int32)
    rows_c = np.zeros(m, np.int32)
    transform = np.zeros(4, np.float32)
    n = _kernel().verify_pairs(q_words, q_geom, c_words, c_geom,
                               float(side) * params.tolerance, params.max_per_word,
                               params.max_hypotheses, params.lo_iters, params.angle_tolerance,
                               params.scale_tolerance, rows_q, rows_c, transform)
    return rows_q[:n], rows_c[:n], transform


def transform_matrix(t) -> np.ndarray:
    """The 2 x 3 matrix of a similarity (a, b, tx, ty)."""
    a, b, tx, ty = (float(v) for v in t)
    return np.array([[a, -b, tx], [b, a, ty]])


def _extent(frames, units, width=None, height=None):
    """Width and height of an image: given, else 1 x 1 for normalized frames, else the
    extent of its frames (a dict from ``Store.image_features`` may not say)."""
    if width and height:
        return int(width), int(height)
    if units == "normalized" or not len(frames):
        return 1, 1
    return (max(int(np.ceil(float(frames[:, 0].max()))), 1),
            max(int(np.ceil(float(frames[:, 1].max()))), 1))


def verified_matches(query, candidate: dict, max_per_word=4, threshold=None):
    """The correspondences that :func:`inlier_count` counts as inliers.

    ``query`` is a :class:`features.search.query.Query` (its ``frames``, ``words``,
    ``units``, ``oriented``, ``width`` and ``height``).

    Returns ``(qi, ci)``: int arrays of equal length, rows of ``query.frames`` and of
    ``candidate["frames"]`` (a dict of ``frames``, ``words`` and optionally ``width`` and
    ``height``) that the verified similarity transform maps onto each other (what a viewer
    draws as lines between the two images). ``threshold``: the inlier distance in pixels
    of the candidate (default: 2% of its larger side). :meth:`Searcher.matches` does the
    same from the store's geometry records, and gives the transform too.
    """
    if max_per_word < 1:
        raise ParameterError(f"max_per_word must be >= 1, got {max_per_word!r}")
    cf, cw = np.asarray(candidate["frames"]), np.asarray(candidate["words"])
    qw_, qh_ = _extent(query.frames, query.units, query.width, query.height)
    cw_, ch_ = _extent(cf, query.units, candidate.get("width"), candidate.get("height"))
    order_q = np.argsort(query.words, kind="stable")
    order_c = np.argsort(cw, kind="stable")
    q_words, q_geom = frame_geometry(query.frames[order_q], query.words[order_q], qw_, qh_,
                                     units=query.units, oriented=query.oriented)
    c_words, c_geom = frame_geometry(cf[order_c], cw[order_c], cw_, ch_, units=query.units,
                                     oriented=query.oriented)
    side = max(cw_, ch_)
    params = VerifyParams(max_per_word=int(max_per_word))
    if threshold is not None:
        if not threshold > 0:
            raise ParameterError(f"threshold must be > 0, got {threshold!r}")
        params = dataclasses.replace(params, tolerance=float(threshold) / side)
    rows_q, rows_c, _ = verify_pair(q_words, q_geom, c_words, c_geom, side, params)
    return order_q[rows_q].astype(np.int64), order_c[rows_c].astype(np.int64)


def inlier_count(query, candidate: dict, max_per_word=4, threshold=None) -> int:
    """One-to-one inliers of the similarity transform verified between the query and a
    candidate (see :func:`verified_matches`)."""
    return len(verified_matches(query, candidate, max_per_word, threshold)[0])
