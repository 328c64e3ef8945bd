"""The files of a store's index (``features.store.layout`` lists the store's own), and the
manifest's record of its build.

An index is one unit of files (``index.faiss``, and ``index.refine`` for a sparse refine
stage) kept in a folder of its own generation, ``index-<generation>/``, which the
manifest's record names (``generation``) with the size and SHA-256 of each file
(``files``); an inverted-file index (``features.index.inverted``) is the one file
``index.inverted``, with ``index.hamming`` when it was built with Hamming embedding
(``features.index.hamming``). A build writes a new generation beside the current one, and the manifest's
atomic rewrite switches to it: a reader sees one generation's pair or the other's, never a
mix, and the files a reader has open are never written again (the old generation is
removed after the switch; a process that has them open keeps reading them). Stores made
before generations keep their files in the store's folder, named by a record without a
``generation``.
"""
from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from ..exceptions import StoreError
from ..store import Manifest

INDEX_FILE = "index.faiss"
REFINE_FILE = "index.refine"   # the sparse refine stage (features.index.refine)
INVERTED_FILE = "index.inverted"   # an inverted file, in place of both (features.index.inverted)
HAMMING_FILE = "index.hamming"     # its Hamming embedding, an option (features.index.hamming)
GENERATION_PREFIX = "index-"
_GENERATION = re.compile(r"index-[0-9a-z]+-[0-9a-f]+")


def index_record(directory) -> dict | None:
    return Manifest(directory).data.get("steps", {}).get("index")


def new_generation() -> str:
    """A generation name no earlier build used: its time, then random digits."""
    return f"{GENERATION_PREFIX}{int(time.time()):x}-{secrets.token_hex(4)}"


def is_generation(name) -> bool:
    return bool(_GENERATION.fullmatch(str(name)))


def index_folder(directory, record) -> Path:
    """The folder of the index files ``record`` names: its generation's, or the store's own
    for a record made before generations. A generation that is not a plain folder name of
    the store (a damaged or hand-edited manifest) is refused."""
    directory = Path(directory)
    generation = (record or {}).get("generation")
    if generation is None:
        return directory
    if not is_generation(generation):
        raise StoreError(f"{directory}/manifest.json names the index generation "
                         f"{str(generation)[:80]!r}, not one of this store; run "
                         f"`features index {directory}` to rebuild it")
    return directory / generation


def current_index_paths(directory) -> dict[str, Path]:
    """``index_paths`` of the index the store's manifest records now."""
    return index_paths(directory, index_record(directory))


def index_paths(directory, record) -> dict[str, Path]:
    """``{file name: path}`` of the index files of ``record`` (the refine stage only when
    the record has one; an inverted file for an index of that kind, and its Hamming
    embedding when the record has one)."""
    folder = index_folder(directory, record)
    if (record or {}).get("kind") == "inverted":
        names = [INVERTED_FILE] + ([HAMMING_FILE] if (record or {}).get("hamming") else [])
        return {name: folder / name for name in names}
    names = [INDEX_FILE] + ([REFINE_FILE] if (record or {}).get("refine") else [])
    return {name: folder / name for name in names}
