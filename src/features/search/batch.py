"""Many queries in one go, as ``features search STORE QUERY...`` runs them: every query is
answered that can be, and one that cannot (no such key, an unreadable file, an image without
features: a ``QueryError``) is an item that failed with its reason; it never stops the
others. A damaged store does (``StoreError``): no query can trust it."""
from __future__ import annotations

import os
from pathlib import Path

from ..exceptions import DecodeError, QueryError, first_line
from ..sources import IMAGE_EXTENSIONS


def expand_queries(queries) -> list[str]:
    """The queries with each folder replaced by the image files below it (sorted, at any
    depth; files are taken by extension, as a folder source takes them). A folder without
    image files stays, to fail as a query with its reason."""
    out = []
    for q in queries:
        if not os.path.isdir(q):
            out.append(q)
            continue
        found = sorted(str(p) for p in Path(q).rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        out.extend(found or [q])
    return out


def search_each(searcher, queries, **search_options):
    """For each query (in order), ``{"query": q, "results": [...]}``, or with ``"error"``
    (one line, starting with the query) and no results when it cannot be answered.
    ``search_options`` go to :meth:`Searcher.search`; check them before: a bad option
    would fail every query."""
    for q in queries:
        try:
            if os.path.isdir(q):
                raise QueryError(f"{q}: a folder without image files")
            query = searcher.query(q)
            yield {"query": q, "results": searcher.search(query, **search_options)}
        except (QueryError, DecodeError) as e:
            text = first_line(e, None)
            yield {"query": q, "error": text if text.startswith(q) else f"{q}: {text}",
                   "results": []}
