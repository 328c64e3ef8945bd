"""Search: new images encoded as the store's (:mod:`.encoder`), queries (:mod:`.query`), the searcher (:mod:`.searcher`), spatial
verification (:mod:`.spatial`), re-ranking (:mod:`.rerank`) and retrieval metrics
(:mod:`.metrics`)."""
from ..exceptions import QueryError
from .encoder import Encoder, ImageFeatures
from .metrics import average_precision, retrieval_map
from .query import Query
from .rerank import MIN_INLIERS
from .searcher import Searcher
from .spatial import VerifyParams, inlier_count, verified_matches

__all__ = ["Searcher", "Encoder", "ImageFeatures", "Query", "QueryError", "MIN_INLIERS", "VerifyParams", "inlier_count",
           "verified_matches", "average_precision", "retrieval_map"]
