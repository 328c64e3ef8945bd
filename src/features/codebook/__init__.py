"""The vocabulary: seeded descriptor sampling (:mod:`.sample`), k-means (:mod:`.kmeans`),
exact nearest-centroid assignment (:mod:`.assign`) and, for large vocabularies, the
vocabulary tree of hierarchical k-means (:mod:`.tree`). Arrays in, arrays out."""
from .assign import Assigner
from .kmeans import (INITS, KMEANS_ALGORITHM, KMEANS_TOL, KMeansResult, kmeans, kmeans_fit,
                     quantization_error)
from .sample import bottom_k, sample_priority, subsample_rows
from .tree import TREE_ALGORITHM, VocabularyTree, hikmeans, tree_depth

__all__ = ["Assigner", "kmeans", "kmeans_fit", "KMeansResult", "quantization_error",
           "KMEANS_TOL", "KMEANS_ALGORITHM", "INITS", "sample_priority", "subsample_rows",
           "bottom_k", "VocabularyTree", "hikmeans", "tree_depth", "TREE_ALGORITHM",
           "quantizer"]


def quantizer(codebook):
    """What assigns descriptors to words: a :class:`VocabularyTree` as it is (the word the
    descent reaches), centroids (float32 (k, d)) as an exact :class:`Assigner`. Both have
    ``assign(descriptors)`` and ``k``."""
    return codebook if isinstance(codebook, VocabularyTree) else Assigner(codebook)
