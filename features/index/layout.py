"""The files of a store's index (``features.store.layout`` lists the store's own), and the
manifest's record of its build."""
from ..store import Manifest

INDEX_FILE = "index.faiss"
REFINE_FILE = "index.refine"   # the sparse refine stage (features.index.refine)


def index_record(directory) -> dict | None:
    return Manifest(directory).data.get("steps", {}).get("index")
