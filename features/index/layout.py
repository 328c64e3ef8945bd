"""The files of a store's index (``features.store.layout`` lists the store's own)."""
INDEX_FILE = "index.faiss"
REFINE_FILE = "index.refine"   # the sparse refine stage (features.index.refine)
