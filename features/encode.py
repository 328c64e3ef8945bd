"""Moved to :mod:`features.encodings.bovw` (one module per encoding); kept so that
``from features.encode import ...`` goes on working."""
from .encodings.bovw import (CSR, counts_csr, document_frequency, encode_words, idf_weights,
                             weight_rows, word_counts)

__all__ = ["CSR", "counts_csr", "document_frequency", "encode_words", "idf_weights",
           "weight_rows", "word_counts"]
