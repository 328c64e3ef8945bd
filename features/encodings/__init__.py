"""Image encodings (one module each) and the models they learn."""
from .fisher import fisher_vector, fisher_vector_batch
from .vlad import vlad, vlad_batch

__all__ = ["fisher_vector", "fisher_vector_batch", "vlad", "vlad_batch"]
