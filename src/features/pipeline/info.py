"""What a store holds, as a plain dict (for `features info`)."""
from __future__ import annotations

from dataclasses import asdict

from ..index import INDEX_FILE, REFINE_FILE, index_header, index_paths, index_record
from ..index.inverted import INVERTED_KIND, InvertedFile
from ..store import Store
from ..store.encodings import encoding_info
from ..store.models import models_info


def store_info(path) -> dict:
    with Store(path, open_shards=True) as s:
        status = s.column("status")
        record = index_record(s.dir) or {}
        paths = index_paths(s.dir, record)
        # the main file: index.faiss, or index.inverted for an inverted file
        index_path = paths.get(INDEX_FILE) or next(iter(paths.values()))
        refine = index_path.with_name(REFINE_FILE)
        index_size, index = None, None
        if record.get("kind") == INVERTED_KIND and index_path.exists():
            inverted = InvertedFile(index_path)
            index_size = inverted.ntotal
            index = {"vectors": inverted.ntotal, "dim": inverted.d,
                     "bytes": index_path.stat().st_size, "factory": record.get("factory"),
                     "kind": INVERTED_KIND, "encoding": record.get("encoding"),
                     "params": record.get("params"), "refine_bytes": None,
                     "postings": inverted.postings}
        elif index_path.exists():
            # the header only: the index itself can be gigabytes
            header = index_header(index_path)
            index_size = header["ntotal"]
            index = {"vectors": header["ntotal"], "dim": header["dim"],
                     "bytes": index_path.stat().st_size, "factory": record.get("factory"),
                     "kind": record.get("kind"), "encoding": record.get("encoding"),
                     "params": record.get("params"),
                     "refine_bytes": refine.stat().st_size if refine.exists() else None}
        size = sum(p.stat().st_size for p in s.dir.rglob("*") if p.is_file())
        return {
            "store": str(s.dir),
            "images": s.n_images,
            "failed": int((status != 0).sum()),
            "descriptors": int(s.h5["offsets"][-1]) if s.n_images else 0,
            "words": int(s.h5["codebook/centroids"].shape[0]),
            # a vocabulary tree's branching and levels; None for flat k-means
            "tree": ({"branching": int(s.h5["codebook"].attrs.get("branching", 0)),
                      "depth": int(s.h5["codebook"].attrs.get("depth", 0)),
                      "nodes": int(s.h5["codebook/tree/child_start"].shape[0] - 1)}
                     if "codebook/tree" in s.h5 else None),
            "classes": len(s.classes),
            "encodings": sorted(s.h5["encodings"].keys()),
            # per encoding: method, layout (dense or csr), dim, dtype, bytes of its values
            "encoding_details": encoding_info(s.h5),
            # per encoding: its models, where they are and what they were learned from
            "models": models_info(s.h5),
            "has_descriptors": "descriptors" in s.h5,
            "index": index_path.exists(),
            "index_size": index_size,
            "index_info": index,
            "bytes": size,
            "config": asdict(s.config),
            "versions": s.versions,
            "created": str(s.h5.attrs["created"]),
        }
