"""The vocabulary: seeded descriptor sampling (:mod:`.sample`), k-means (:mod:`.kmeans`) and
exact nearest-centroid assignment (:mod:`.assign`). Arrays in, arrays out."""
from .assign import Assigner
from .kmeans import (INITS, KMEANS_ALGORITHM, KMEANS_TOL, KMeansResult, kmeans, kmeans_fit,
                     quantization_error)
from .sample import bottom_k, sample_priority, subsample_rows

__all__ = ["Assigner", "kmeans", "kmeans_fit", "KMeansResult", "quantization_error",
           "KMEANS_TOL", "KMEANS_ALGORITHM", "INITS", "sample_priority", "subsample_rows",
           "bottom_k"]
