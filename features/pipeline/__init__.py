"""The pipeline: resumable steps over a source and a store, their tasks and how they run.

- :mod:`.steps`: ``step(config, inputs, out) -> path`` for each step (``sample_descriptors``,
  ``train_codebook``, ``encode_images``, ``build_index``) and ``run``, all of them;
- :mod:`.tasks`: the work of a task (an image, a batch, a shard) and :mod:`.runner`, how
  tasks run: here, in worker processes (:mod:`.isolate`: a crash on one image is one failed
  image) or on a Dask cluster (:mod:`.cluster`);
- :mod:`.aggregate`: an encoding added to a finished store (``aggregate.aggregate``), its
  models learned from the rows :mod:`.model_rows` draws; :mod:`.like`: a store encoded with
  another's recipe and models;
- :mod:`.progress`, :mod:`.info`, :mod:`.verify`: progress lines, ``features info`` and
  ``features verify``.
"""
from ..store.layout import CODEBOOK_FILE, SAMPLE_FILE
from .steps import (EncodeSummary, build_index, encode_images, reuse_codebook, run,
                    sample_descriptors, train_codebook)

__all__ = ["run", "sample_descriptors", "train_codebook", "encode_images", "build_index",
           "reuse_codebook", "EncodeSummary", "SAMPLE_FILE", "CODEBOOK_FILE"]
