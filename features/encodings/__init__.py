"""Image encodings (one module each), the models they learn, and the table of methods.

Arrays in, arrays out: nothing here reads a store.

- :mod:`.methods`: what each method (``bovw``, ``spm``, ``vlad``, ``fisher``) reads, how it
  is stored, its models and options;
- :mod:`.bovw` (tf-idf word histograms), :mod:`.spm` (spatial pyramids), :mod:`.vlad`,
  :mod:`.fisher` (improved Fisher vectors), :mod:`.kernel_map` (homogeneous kernel maps);
- models, learned from a store's descriptors (seeded, so reruns are identical), as many as
  each needs (:mod:`.training`: a table of rows per model):
  :func:`fit_pca` -> :class:`PCA` (``PCA.transform``); :func:`fit_gmm` -> :class:`GMM`
  (means, diagonal covariances, priors; EM initialized from k-means); :func:`fit_kmeans`
  -> float32 (k, d) centers (the VLAD codebook: the same exact Lloyd k-means as the BoVW
  codebook, :func:`features.codebook.kmeans`).
"""
from ..codebook import kmeans as fit_kmeans
from .fisher import fisher_vector, fisher_vector_batch
from .gmm import GMM, fit_gmm, gmm_log_likelihood, gmm_posteriors
from .pca import PCA, fit_pca, pca_transform
from .vlad import vlad, vlad_batch

__all__ = ["fisher_vector", "fisher_vector_batch", "vlad", "vlad_batch",
           "PCA", "fit_pca", "pca_transform", "GMM", "fit_gmm", "gmm_log_likelihood",
           "gmm_posteriors", "fit_kmeans"]
